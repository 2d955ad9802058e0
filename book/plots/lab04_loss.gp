# lab04_loss.gp — chapter 4: the CamVid training run. Training loss per step (thin
# line), validation loss at the end of every epoch (points), and validation mean IoU
# on the right-hand axis.
# Called by the plot filter: gnuplot -c lab04_loss.gp DATA.csv OUT.svg
# DATA.csv is lab04's CSV (provenance lines are # comments, then the header row):
# `train` rows (step, loss) and `val` rows (step at the epoch's end, loss, iou).
set datafile separator comma
set datafile columnheaders
set terminal svg size 640,480 dynamic font "DejaVu Sans,17" background rgb "white"
set output ARG2

# Datablocks of "step value" rows per series (a NaN in a using expression would break
# the lines).
set table $train
plot ARG1 using "step":"loss" with table if (strcol("kind") eq "train")
unset table
set table $valloss
plot ARG1 using "step":"loss" with table if (strcol("kind") eq "val")
unset table
set table $valiou
plot ARG1 using "step":"iou" with table if (strcol("kind") eq "val")
unset table

set xlabel "training step (batch of 8 frames)"
set ylabel "cross-entropy loss (nats per pixel)"
set y2label "validation mean IoU (11 classes)"
set yrange [0:*]
set y2range [0:1]
set ytics nomirror
set y2tics 0, 0.2, 1 nomirror
set grid ytics lc rgb "#dddddd"
set border 11
set key below maxcols 2 samplen 2

set datafile separator whitespace
set datafile nocolumnheaders
plot $train using 1:2 with lines lw 1 lc rgb "#1f77b4" title "training loss (per step)", \
     $valloss using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb "#d2691e" title "validation loss", \
     $valiou using 1:2 axes x1y2 with linespoints lw 2 pt 5 ps 0.8 lc rgb "#2ca02c" title "validation mean IoU"
