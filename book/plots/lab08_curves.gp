# lab08_curves.gp — chapter 8: the CamVid training runs of ours and PyTorch's, side by
# side. Validation mean IoU after every epoch (left axis, solid) and the epoch's mean
# training loss (right axis, dashed), one colour per implementation.
# Called by the plot filter: gnuplot -c lab08_curves.gp DATA.csv OUT.svg
# DATA.csv is lab 8's train CSV: `epoch` rows (epoch, loss = mean train loss, iou = val
# mean IoU, impl = ours | pytorch).
set datafile separator comma
set datafile columnheaders
set terminal svg size 640,480 dynamic font "DejaVu Sans,17" background rgb "white"
set output ARG2

set table $ours_iou
plot ARG1 using "epoch":"iou" with table if (strcol("kind") eq "epoch" && strcol("impl") eq "ours")
unset table
set table $torch_iou
plot ARG1 using "epoch":"iou" with table if (strcol("kind") eq "epoch" && strcol("impl") eq "pytorch")
unset table
set table $ours_loss
plot ARG1 using "epoch":"loss" with table if (strcol("kind") eq "epoch" && strcol("impl") eq "ours")
unset table
set table $torch_loss
plot ARG1 using "epoch":"loss" with table if (strcol("kind") eq "epoch" && strcol("impl") eq "pytorch")
unset table

set xlabel "epoch (367 frames, batch 8)"
set ylabel "validation mean IoU (11 classes)"
set y2label "mean training loss (nats per pixel)"
set yrange [0:1]
set y2range [0:*]
set ytics 0, 0.2, 1 nomirror
set y2tics nomirror
set grid ytics lc rgb "#dddddd"
set border 11
set key below maxcols 2 samplen 2

set datafile separator whitespace
set datafile nocolumnheaders
plot $ours_iou using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb "#1f77b4" title "ours: val mIoU", \
     $torch_iou using 1:2 with linespoints lw 2 pt 5 ps 0.8 lc rgb "#d2691e" title "PyTorch: val mIoU", \
     $ours_loss using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#1f77b4" title "ours: train loss", \
     $torch_loss using 1:2 axes x1y2 with lines lw 2 dt 2 lc rgb "#d2691e" title "PyTorch: train loss"
