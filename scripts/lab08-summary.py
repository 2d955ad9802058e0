#!/usr/bin/python3
"""Joins lab 8's CamVid training CSV (ours) and reference/train_fpn_pytorch.py's CSV into
one committed results file, and derives the two small tables chapter 8 prints from it.

    scripts/lab08-summary.py OURS.csv PYTORCH.csv OUTDIR

writes (each atomically, with the provenance lines of both runs as `#` comments):
  OUTDIR/lab08-train.csv          every row of both runs (lab 8's columns; impl=ours|pytorch)
  OUTDIR/lab08-train-summary.csv  per implementation: epochs, median and total epoch
                                  seconds, final val mean IoU, test mean IoU and pixel
                                  accuracy, and the largest |val mIoU(ours) - val mIoU(PyTorch)|
                                  over the epochs both logged
  OUTDIR/lab08-classes.csv        per class: test IoU of ours and of PyTorch's
Nothing is typed by hand: every number is read from the two CSVs."""
import os
import statistics
import sys

from labcsv import read, write


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.split("\n\n")[1])
    ours_prov, ours = read(sys.argv[1])
    torch_prov, torch_rows = read(sys.argv[2])
    if not ours or not torch_rows:
        raise SystemExit("an input CSV has no rows")
    header = list(ours[0].keys())
    if list(torch_rows[0].keys()) != header:
        raise SystemExit("the two CSVs have different columns")
    prov = ours_prov + [f"pytorch {p}" for p in torch_prov]
    out = sys.argv[3]
    write(os.path.join(out, "lab08-train.csv"), prov, header,
          [[r[c] for c in header] for r in ours + torch_rows])

    def epochs(rows):
        return {int(r["epoch"]): r for r in rows if r["kind"] == "epoch"}

    def iou(rows, split, cls):
        m = [r for r in rows if r["kind"] == "iou" and r["split"] == split and r["class"] == cls]
        if len(m) != 1:
            raise SystemExit(f"expected one iou row for {split}/{cls}, found {len(m)}")
        return m[0]

    e_ours, e_torch = epochs(ours), epochs(torch_rows)
    both = sorted(set(e_ours) & set(e_torch))
    gap = max(abs(float(e_ours[e]["iou"]) - float(e_torch[e]["iou"])) for e in both) if both else float("nan")
    summary = []
    for impl, rows, ep in (("ours", ours, e_ours), ("pytorch", torch_rows, e_torch)):
        secs = [float(r["seconds"]) for r in ep.values()]
        last = ep[max(ep)]
        test = iou(rows, "test", "mean")
        summary.append([impl, len(ep), f"{statistics.median(secs):.1f}", f"{sum(secs):.0f}",
                        last["iou"], iou(rows, "val", "mean")["iou"], test["iou"],
                        test["pixel_accuracy"], f"{gap:.4f}"])
    write(os.path.join(out, "lab08-train-summary.csv"), prov,
          ["impl", "epochs", "epoch_seconds_median", "seconds_total", "val_miou_last_epoch",
           "val_miou", "test_miou", "test_pixel_accuracy", "max_val_miou_gap"], summary)
    classes = [r["class"] for r in ours if r["kind"] == "iou" and r["split"] == "test" and r["class"] != "mean"]
    write(os.path.join(out, "lab08-classes.csv"), prov, ["class", "ours", "pytorch"],
          [[c, iou(ours, "test", c)["iou"], iou(torch_rows, "test", c)["iou"]] for c in classes])
    return 0


if __name__ == "__main__":
    sys.exit(main())
