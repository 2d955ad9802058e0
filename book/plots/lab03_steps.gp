# lab03_steps.gp — chapter 3: GFLOP/s of every GEMM step at one size, with the
# machine's FP32 FMA peak as a dashed line. ARG1: rows of one case and thread count
# (kind=gemm), ARG2: the SVG to write. The peak is recovered from gflops / pct_peak.
set datafile separator comma
set datafile columnheaders
set terminal svg size 640,480 dynamic font "DejaVu Sans,17" background rgb "white"
set output ARG2
set termoption noenhanced
stats ARG1 using (column("gflops") * 100.0 / column("pct_peak")) name "PK" nooutput
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border rgb "#333333"
set boxwidth 0.8
set ylabel "GFLOP/s (higher is better)"
set xlabel "implementation (chapter steps, default, peers)"
set xtics rotate by -35 scale 0 nomirror
set ytics nomirror
set grid ytics lc rgb "#dddddd"
set key off
set yrange [0:PK_max * 1.12]
set arrow from graph 0, first PK_max to graph 1, first PK_max nohead dt 2 lw 2 lc rgb "#b00000"
set label sprintf("FP32 FMA peak, %.0f GFLOP/s", PK_max) at graph 0.02, first PK_max * 1.04 tc rgb "#b00000"
plot ARG1 using "gflops":xtic(stringcolumn("impl")) lc rgb "#3d6fb0", \
     '' using 0:"gflops":(sprintf("%.0f", column("gflops"))) with labels offset 0,0.7 font ",14"
