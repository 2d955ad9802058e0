# lab06_grid.gp — chapter 6: the pruning grid on chapter 8's network, accuracy against
# latency. One point per variant (test mean IoU against the executed model's batch-1
# latency), one colour per method (baseline, magnitude, iterative), each point labelled
# with its variant.
# Called by the plot filter with group="method": gnuplot -c lab06_grid.gp DATA.csv OUT.svg
# METHODS PATTERN (ARG3: the methods present, ARG4: the per-method file pattern).
set datafile separator comma
set datafile columnheaders
set terminal svg size 720,480 dynamic font "DejaVu Sans,15" background rgb "white"
set output ARG2

set xlabel "latency of the executed model, batch 1 (ms)"
set ylabel "test mean IoU (11 classes)"
set grid lc rgb "#dddddd"
set key below maxcols 3 samplen 2
set border 3
set xtics nomirror
set ytics nomirror
set offsets graph 0.08, graph 0.08, graph 0.08, graph 0.08

color_of(g) = g eq "baseline" ? "#000000" : (g eq "magnitude" ? "#1f77b4" : "#d2691e")
plot for [g in ARG3] sprintf(ARG4, g) using "latency_b1_ms":"test_miou" \
         with points pt 7 ps 1.3 lc rgb color_of(g) title g, \
     ARG1 using "latency_b1_ms":"test_miou":(strcol("variant")) with labels offset 0,0.9 font ",11" notitle
