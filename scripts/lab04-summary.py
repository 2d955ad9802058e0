#!/usr/bin/python3
"""Joins lab 4's full timing runs (one CSV per thread count) into one committed results
file, and derives the table of ratios against PyTorch that chapter 4 prints.

    scripts/lab04-summary.py OUTDIR RUN.csv [RUN.csv ...]

writes (each atomically, with every run's provenance lines as `#` comments, prefixed by
the run's thread count):
  OUTDIR/lab04-full.csv          every `kind=conv` row of every run (lab 4's columns)
  OUTDIR/lab04-full-ratios.csv   per layer, kernel, batch and threads: our fast and
                                 PyTorch's forward+backward (fastest and median ms), and
                                 PyTorch's time divided by ours (> 1: ours is faster), for
                                 forward+backward and for the forward alone
Nothing is typed by hand: every number is read from the runs."""
import os
import sys

from labcsv import read, write


def ratio(num, den):
    """num / den as text with 3 significant digits, or '' when either is missing."""
    try:
        a, b = float(num), float(den)
    except ValueError:
        return ""
    return f"{a / b:.3g}" if a > 0 and b > 0 else ""


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    out, runs = sys.argv[1], sys.argv[2:]
    prov, rows, header = [], [], None
    for path in runs:
        p, r = read(path)
        conv = [x for x in r if x.get("kind") == "conv"]
        if not conv:
            raise SystemExit(f"{path}: no kind=conv rows (a lab 4 timing run?)")
        if header is None:
            header = list(conv[0].keys())
        elif list(conv[0].keys()) != header:
            raise SystemExit(f"{path}: columns differ from the first run's")
        threads = conv[0]["threads"]
        prov += [f"threads {threads}: {line}" for line in p]
        rows += conv
    write(os.path.join(out, "lab04-full.csv"), prov, header, [[r[c] for c in header] for r in rows])

    by = {}
    for r in rows:
        by[(r["case"], r["k"], r["batch"], r["threads"], r["impl"], r["pass"])] = r
    keys = []
    for r in rows:
        k = (r["case"], r["k"], r["batch"], r["threads"])
        if r["impl"] == "fast" and k not in keys:
            keys.append(k)
    table = []
    for case, k, batch, threads in keys:
        f = by.get((case, k, batch, threads, "fast", "forward+backward"))
        t = by.get((case, k, batch, threads, "pytorch", "forward+backward"))
        ff = by.get((case, k, batch, threads, "fast", "forward"))
        tf = by.get((case, k, batch, threads, "pytorch", "forward"))
        if not f or not t:
            continue
        table.append([case, k, batch, threads, f["ms_min"], f["ms"], t["ms_min"], t["ms"],
                      ratio(t["ms_min"], f["ms_min"]), ratio(t["ms"], f["ms"]),
                      ratio(tf["ms_min"], ff["ms_min"]) if ff and tf else "",
                      ratio(tf["ms"], ff["ms"]) if ff and tf else ""])
    write(os.path.join(out, "lab04-full-ratios.csv"), prov,
          ["case", "k", "batch", "threads", "fast_fb_min", "fast_fb_ms", "pytorch_fb_min",
           "pytorch_fb_ms", "fb_ratio_min", "fb_ratio_median", "fwd_ratio_min",
           "fwd_ratio_median"], table)


if __name__ == "__main__":
    main()
