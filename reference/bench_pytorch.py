#!/usr/bin/python3
# The peer timing of lab 4: PyTorch's F.conv2d forward, backward (dx, dw, db) and
# forward+backward on the convolutions the lab names, on this machine, in this run.
#
# Needs Debian's python3-torch (PyTorch 1.13, oneDNN inside), installed for the
# system interpreter only. Lab 4 runs it as a child process, once per thread count
# and OMP_WAIT_POLICY, with the thread count set by the environment before torch
# loads (OMP_NUM_THREADS) and again by torch.set_num_threads:
#
#     /usr/bin/python3 reference/bench_pytorch.py --threads 2 \
#         --case a_3x3_64,64,64,56,56,3,1,1,1,1 [--case ...] [--budget 1.0] [--repeats 5]
#
# A case is name,cin,cout,h,w,k,stride,pad,groups,batch (square kernel, symmetric
# padding, bias on, as lab 4's). Output, one line per case and pass:
#
#     row <name> <k> <batch> <threads> <pass> <median ms> <min ms>
#
# pass is forward, backward or forward+backward. The three passes are timed the same
# way as lab 4 times its own: in rounds (forward, backward, forward+backward, one run
# each; before each run a 64 MiB buffer is written, the cache flushed as lab 4's
# cr_flush_cache does, and a 2 ms pause), after one warm-up round, as many rounds as fit in 3 x --budget seconds (at
# least --repeats when a round takes under --budget, at most 100); median and minimum
# of each pass over the rounds, elapsed time unless --clock cpu asks for the process's
# CPU time. A first line `info <torch version> <mkldnn on/off> <threads>` says what ran. Exit status 2 on a bad argument, 3 when torch cannot be imported.
import argparse
import os
import statistics
import sys
import time


def parse_case(text):
    """name,cin,cout,h,w,k,stride,pad,groups,batch -> (name, dict of ints)."""
    parts = text.split(",")
    keys = ["cin", "cout", "h", "w", "k", "stride", "pad", "groups", "batch"]
    if len(parts) != len(keys) + 1:
        raise argparse.ArgumentTypeError(
            "--case: expected name,cin,cout,h,w,k,stride,pad,groups,batch, got '%s'" % text)
    try:
        vals = [int(v) for v in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError("--case: integers expected after the name in '%s'" % text)
    if min(vals) < 0 or min(vals[:6] + vals[7:]) < 1:
        raise argparse.ArgumentTypeError("--case: sizes must be positive in '%s'" % text)
    return parts[0], dict(zip(keys, vals))


FLUSH_FLOATS = 16 << 20     # 64 MiB, lab 4's cr_flush_cache


def time_rounds(fns, budget, repeats, flush, clock=time.perf_counter):
    """(median, min) seconds of each of fns, timed in rounds (every fn once per round)
    after a warm-up round: as many rounds as fit in 3 * budget, at least repeats when a
    round takes under budget, at most 100 (lab 4's rule); flush() and a 2 ms pause
    before each run, the warm-up's too, as lab 4 does."""
    t0 = clock()
    for fn in fns:
        flush()
        fn()
    first = clock() - t0
    n = int(3 * budget / max(first, 1e-9))
    if first <= 3 * budget:
        n = max(n, repeats)
    n = max(1, min(n, 100))
    times = [[] for _ in fns]
    for _ in range(n):
        for i, fn in enumerate(fns):
            flush()             # lab 4's flush: every run starts with cold caches
            time.sleep(0.002)   # lab 4's pause: each timed run starts on a fresh time slice
            t0 = clock()
            fn()
            times[i].append(clock() - t0)
    return [(statistics.median(t), min(t)) for t in times]


def main():
    ap = argparse.ArgumentParser(description="PyTorch conv2d forward/backward timing for lab 4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--case", type=parse_case, action="append", default=[])
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per case and pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time (what lab 4 uses); cpu: the process's CPU time, "
                         "for one thread on a busy machine")
    args = ap.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.budget <= 0:
        ap.error("--threads, --repeats and --budget must be positive")
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print("bench_pytorch.py: cannot import torch (%s)" % e, file=sys.stderr)
        return 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print("info %s mkldnn=%s threads=%d wait_policy=%s" % (
        torch.__version__, "on" if (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled) else "off",
        torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "default")))
    buf = torch.empty(FLUSH_FLOATS)
    count = [0]

    def flush():
        count[0] += 1
        buf.fill_(float(count[0]))

    for name, c in args.case:
        x = torch.empty(c["batch"], c["cin"], c["h"], c["w"]).uniform_(-1, 1).requires_grad_()
        w = torch.empty(c["cout"], c["cin"] // c["groups"], c["k"], c["k"]).uniform_(-1, 1)
        w.requires_grad_()
        b = torch.empty(c["cout"]).uniform_(-1, 1).requires_grad_()
        conv = dict(stride=c["stride"], padding=c["pad"], groups=c["groups"])
        with torch.no_grad():
            dy = torch.empty_like(F.conv2d(x, w, b, **conv)).uniform_(-1, 1)

        def forward():
            with torch.no_grad():
                F.conv2d(x, w, b, **conv)

        y = F.conv2d(x, w, b, **conv)

        def backward():
            torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)

        def both():
            torch.autograd.grad(F.conv2d(x, w, b, **conv), (x, w, b), dy)

        clock = time.perf_counter if args.clock == "wall" else time.process_time
        res = time_rounds((forward, backward, both), args.budget, args.repeats, flush, clock)
        for pass_name, (med, low) in zip(("forward", "backward", "forward+backward"), res):
            print("row %s %d %d %d %s %.4f %.4f" % (name, c["k"], c["batch"], args.threads,
                                                   pass_name, 1e3 * med, 1e3 * low), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
