# lab07_latency.gp — chapter 7: the forward pass of chapter 8's FPN at 384 x 480 against
# the batch size, our fp32, bf16 and converted int8 models measured in the same run: median
# latency per batch (left axis, log scale) and images per second (right axis).
# Called by the plot filter: gnuplot -c lab07_latency.gp DATA.csv OUT.svg
# DATA.csv is lab07-int8 fpn's CSV (batch_size, precision, latency_median_ms, images_per_s).
set datafile separator comma
set datafile columnheaders
set terminal svg size 640,480 dynamic font "DejaVu Sans,17" background rgb "white"
set output ARG2

set table $fp32_ms
plot ARG1 using "batch_size":"latency_median_ms" with table if (strcol("precision") eq "fp32")
unset table
set table $int8_ms
plot ARG1 using "batch_size":"latency_median_ms" with table if (strcol("precision") eq "int8")
unset table
set table $bf16_ms
plot ARG1 using "batch_size":"latency_median_ms" with table if (strcol("precision") eq "bf16")
unset table
set table $bf16_ips
plot ARG1 using "batch_size":"images_per_s" with table if (strcol("precision") eq "bf16")
unset table
set table $fp32_ips
plot ARG1 using "batch_size":"images_per_s" with table if (strcol("precision") eq "fp32")
unset table
set table $int8_ips
plot ARG1 using "batch_size":"images_per_s" with table if (strcol("precision") eq "int8")
unset table

set xlabel "batch size (images of 384 × 480)"
set ylabel "median latency per batch (ms)"
set y2label "images per second"
set logscale x 2
set logscale y 10
set y2range [0:*]
set ytics nomirror
set y2tics nomirror
set grid ytics lc rgb "#dddddd"
set border 11
set key below maxcols 3 samplen 2

set datafile separator whitespace
set datafile nocolumnheaders
plot $fp32_ms using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb "#1f77b4" title "fp32: latency", \
     $bf16_ms using 1:2 with linespoints lw 2 pt 9 ps 0.8 lc rgb "#ff7f0e" title "bf16: latency", \
     $int8_ms using 1:2 with linespoints lw 2 pt 5 ps 0.8 lc rgb "#2ca02c" title "int8: latency", \
     $fp32_ips using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#1f77b4" title "fp32: images/s", \
     $bf16_ips using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#ff7f0e" title "bf16: images/s", \
     $int8_ips using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#2ca02c" title "int8: images/s"
