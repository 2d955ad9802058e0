# lab02_stack.gp — chapter 2: time of the conv + ReLU stack against the kernel size,
# chapter 1 (direct) and chapter 2 (im2col), one line per implementation and batch.
# Called by the plot filter: gnuplot -c lab02_stack.gp DATA.csv OUT.svg
# DATA.csv is lab02's CSV (provenance lines are # comments, then the header row).
set datafile separator comma
set datafile columnheaders
set terminal svg size 640,480 dynamic font "DejaVu Sans,17" background rgb "white"
set output ARG2

set xlabel "kernel size k (k×k)"
set ylabel "time per stack (ms)"
set logscale y
set grid ytics lc rgb "#dddddd"
# The key goes under the plot, where it can cover no line (and stays legible on a phone).
set key below maxcols 2 samplen 2
set border 3
set xtics 1,2 nomirror   # kernel sizes are odd
set ytics nomirror

# The batch sizes present (the --quick run measures fewer than the full lab).
stats ARG1 using "batch" nooutput
bmin = STATS_min
bmax = STATS_max
batches = (bmin == bmax) ? sprintf("%d", bmin) : sprintf("%d %d", bmin, bmax)

# One datablock per (implementation, batch) holding "k ms" rows, so that every
# series is a connected line (a NaN in a using expression would break it).
impls = "direct im2col"
keep(impl, b) = strcol("kind") eq "stack" && strcol("impl") eq impl && column("batch") == b+0
unset logscale y
do for [impl in impls] {
  do for [b in batches] {
    eval sprintf('set table $%s_%s', impl, b)
    plot ARG1 using "k":"ms" with table if (keep(impl, b))
    unset table
  }
}
set logscale y
title_of(impl, b) = sprintf("%s (ch. %s), batch %s", impl, impl eq "direct" ? "1" : "2", b)
color_of(impl) = impl eq "direct" ? "#1f77b4" : "#d2691e"
point_of(impl, b) = (impl eq "direct" ? 7 : 5) - (b+0 == bmin ? 0 : 1)

# gnuplot takes a datablock name only literally: build the plot command, then run it.
cmd = ""
do for [impl in impls] {
  do for [b in batches] {
    cmd = cmd . sprintf('%s$%s_%s using 1:2 with linespoints lw 2 pt %d ps 1.2 lc rgb "%s" title "%s"', (cmd eq "" ? "" : ", "), impl, b, point_of(impl, b), color_of(impl), title_of(impl, b))
  }
}
# The datablocks are whitespace-separated, without a header row.
set datafile separator whitespace
set datafile nocolumnheaders
eval "plot " . cmd
