# lab08_latency.gp — chapter 8: the forward pass of the FPN at 384 x 480 against the
# batch size, ours and PyTorch's measured in the same run: median latency per batch
# (left axis, log scale) and images per second (right axis).
# Called by the plot filter: gnuplot -c lab08_latency.gp DATA.csv OUT.svg
# DATA.csv is lab 8's latency CSV (batch_size, latency_median_ms, images_per_s, impl).
set datafile separator comma
set datafile columnheaders
set terminal svg size 640,480 dynamic font "DejaVu Sans,17" background rgb "white"
set output ARG2

set table $ours_ms
plot ARG1 using "batch_size":"latency_median_ms" with table if (strcol("impl") eq "ours")
unset table
set table $torch_ms
plot ARG1 using "batch_size":"latency_median_ms" with table if (strcol("impl") eq "pytorch")
unset table
set table $ours_ips
plot ARG1 using "batch_size":"images_per_s" with table if (strcol("impl") eq "ours")
unset table
set table $torch_ips
plot ARG1 using "batch_size":"images_per_s" with table if (strcol("impl") eq "pytorch")
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
set key below maxcols 2 samplen 2

set datafile separator whitespace
set datafile nocolumnheaders
plot $ours_ms using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb "#1f77b4" title "ours: latency", \
     $torch_ms using 1:2 with linespoints lw 2 pt 5 ps 0.8 lc rgb "#d2691e" title "PyTorch: latency", \
     $ours_ips using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#1f77b4" title "ours: images/s", \
     $torch_ips using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#d2691e" title "PyTorch: images/s"
