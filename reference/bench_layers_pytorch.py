#!/usr/bin/python3
# The peer timing of lab 4's `--part layers`: PyTorch's versions of chapter 4's other
# layers (batch norm, group norm, ReLU, max-pool, nearest and bilinear up-sampling, add,
# cross-entropy, AdamW), forward and backward, on this machine, in this run.
#
# Needs Debian's python3-torch (PyTorch 1.13), installed for the system interpreter
# only. Lab 4 runs it as a child process, once per OMP_WAIT_POLICY when it has two or
# more threads, with the thread count set by the environment before torch loads
# (OMP_NUM_THREADS) and again by torch.set_num_threads, exactly as bench_pytorch.py:
#
#     /usr/bin/python3 reference/bench_layers_pytorch.py --threads 2 \
#         --op batchnorm,batchnorm,8,256,48,48 [--op ...] [--budget 1.0] [--repeats 5]
#
# An op is name,kind,n,c,h,w: the input is n x c x h x w; kind is one of
#   batchnorm      F.batch_norm, training mode (batch statistics, running ones updated)
#   groupnorm      F.group_norm with 32 groups, weight and bias
#   relu           F.relu
#   maxpool        F.max_pool2d, kernel 3, stride 2, padding 1
#   nearest        F.interpolate, scale 2, mode nearest
#   bilinear       F.interpolate, scale 2, mode bilinear, align_corners=True
#   add            a + b, both n x c x h x w
#   cross_entropy  F.cross_entropy on n x c x h x w logits (c classes), ignore_index -100,
#                  every 10th pixel ignored
#   adamw          torch.optim.AdamW(lr 1e-3, weight_decay 0.01), its default (for-loop)
#                  implementation, over n blocks of one c x c x h x w weight and two
#                  vectors of c, every gradient random
# Output, one line per op and pass:
#
#     row <name> 0 <n> <threads> <pass> <median ms> <min ms>
#
# pass is forward and backward (cross_entropy: forward and forward+backward, the loss
# alone and the loss with its gradient; adamw: step). The forward runs as in training,
# recording the graph (max-pool keeps its indices); the backward is torch.autograd.grad
# of the forward's output with a random upstream gradient, into every input that
# requires one (x, and weight and bias of the norms). Timing follows lab 4's rule
# (bench_pytorch.py's time_rounds): rounds of every pass once, after a warm-up round,
# as many as fit in passes x --budget seconds (at least --repeats when a round is
# shorter, at most 100); before each timed run a 64 MiB buffer is written (the cache
# flushed, as lab 4 does before its own runs) and a 2 ms pause. A first line
# `info <torch version> threads=<n>` says what ran. Exit status 2 on a bad argument,
# 3 when torch cannot be imported.
import argparse
import os
import statistics
import sys
import time

KINDS = ("batchnorm", "groupnorm", "relu", "maxpool", "nearest", "bilinear", "add",
         "cross_entropy", "adamw")
IGNORE = -100
GROUPS = 32
FLUSH_FLOATS = 16 << 20     # 64 MiB, lab 4's cr_flush_cache


def parse_op(text):
    """name,kind,n,c,h,w -> (name, kind, (n, c, h, w))."""
    parts = text.split(",")
    if len(parts) != 6:
        raise argparse.ArgumentTypeError("--op: expected name,kind,n,c,h,w, got '%s'" % text)
    if parts[1] not in KINDS:
        raise argparse.ArgumentTypeError("--op: kind '%s' is not one of %s" % (parts[1], ", ".join(KINDS)))
    try:
        dims = tuple(int(v) for v in parts[2:])
    except ValueError:
        raise argparse.ArgumentTypeError("--op: integers expected after the kind in '%s'" % text)
    if min(dims) < 1:
        raise argparse.ArgumentTypeError("--op: sizes must be positive in '%s'" % text)
    return parts[0], parts[1], dims


def time_rounds(fns, budget, repeats, flush):
    """(median, min) seconds of each of fns, in rounds after a warm-up round: as many as
    fit in len(fns) * budget, at least repeats when a round is shorter, at most 100; the
    cache flushed and a 2 ms pause before each timed run. One untimed call of each
    first: PyTorch's first call of an op also sets it up."""
    for fn in fns:
        fn()
    t0 = time.perf_counter()
    for fn in fns:
        flush()
        fn()
    first = time.perf_counter() - t0
    total = len(fns) * budget
    n = int(total / max(first, 1e-9))
    if first <= total:
        n = max(n, repeats)
    n = max(1, min(n, 100))
    times = [[] for _ in fns]
    for _ in range(n):
        for i, fn in enumerate(fns):
            flush()
            time.sleep(0.002)
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [(statistics.median(t), min(t)) for t in times]


def make_op(torch, F, kind, dims):
    """The passes of one op: a list of (pass name, function)."""
    n, c, h, w = dims
    x = torch.empty(n, c, h, w).uniform_(-1, 1).requires_grad_()
    if kind == "adamw":
        params = []
        for _ in range(n):
            params.append(torch.empty(c, c, h, w).uniform_(-0.1, 0.1))
            params.append(torch.ones(c))
            params.append(torch.zeros(c))
        for p in params:
            p.requires_grad_()
            p.grad = torch.empty_like(p).uniform_(-1, 1)
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        return [("step", opt.step)]
    if kind == "cross_entropy":
        target = torch.randint(0, c, (n, h, w))
        target.view(-1)[::10] = IGNORE

        def loss_only():
            F.cross_entropy(x, target, ignore_index=IGNORE)

        def loss_and_grad():
            torch.autograd.grad(F.cross_entropy(x, target, ignore_index=IGNORE), (x,))
        return [("forward", loss_only), ("forward+backward", loss_and_grad)]
    inputs = [x]
    if kind == "batchnorm":
        weight = torch.empty(c).uniform_(0.5, 1.5).requires_grad_()
        bias = torch.empty(c).uniform_(-0.5, 0.5).requires_grad_()
        rm, rv = torch.zeros(c), torch.ones(c)
        inputs += [weight, bias]

        def f():
            return F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1, eps=1e-5)
    elif kind == "groupnorm":
        weight = torch.empty(c).uniform_(0.5, 1.5).requires_grad_()
        bias = torch.empty(c).uniform_(-0.5, 0.5).requires_grad_()
        inputs += [weight, bias]

        def f():
            return F.group_norm(x, GROUPS, weight, bias, 1e-5)
    elif kind == "relu":
        def f():
            return F.relu(x)
    elif kind == "maxpool":
        def f():
            return F.max_pool2d(x, 3, 2, 1)
    elif kind == "nearest":
        def f():
            return F.interpolate(x, scale_factor=2, mode="nearest")
    elif kind == "bilinear":
        def f():
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    else:   # add
        b = torch.empty(n, c, h, w).uniform_(-1, 1).requires_grad_()
        inputs.append(b)

        def f():
            return x + b
    y = f()
    dy = torch.empty_like(y).uniform_(-1, 1)

    def backward():
        torch.autograd.grad(y, inputs, dy, retain_graph=True)
    return [("forward", f), ("backward", backward)]


def main():
    ap = argparse.ArgumentParser(description="PyTorch layer forward/backward timing for lab 4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--op", type=parse_op, action="append", default=[])
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per op and pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.budget <= 0:
        ap.error("--threads, --repeats and --budget must be positive")
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print("bench_layers_pytorch.py: cannot import torch (%s)" % e, file=sys.stderr)
        return 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print("info %s threads=%d wait_policy=%s" % (
        torch.__version__, torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "default")))
    buf = torch.empty(FLUSH_FLOATS)
    count = [0]

    def flush():
        count[0] += 1
        buf.fill_(float(count[0]))
    for name, kind, dims in args.op:
        passes = make_op(torch, F, kind, dims)
        res = time_rounds([fn for _, fn in passes], args.budget, args.repeats, flush)
        for (pass_name, _), (med, low) in zip(passes, res):
            print("row %s 0 %d %d %s %.4f %.4f" % (name, dims[0], args.threads, pass_name,
                                                  1e3 * med, 1e3 * low), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
