#!/usr/bin/python3
# PyTorch's FPN + ResNeXt-50 32x4d inference latency on an NVIDIA GPU: the peer that
# chapter 8's GPU path is measured against (issue 18), run by scripts/gpu-check.sh on a
# lent GPU machine. Same network as reference/make_golden_fpn.py (proven equal to ours
# by tests/test_ch08.c), random initialisation, evaluation mode, torch.no_grad().
#
# Precisions: fp32 (TF32 off), tf32 (TF32 matmul and cuDNN conv on), fp16 (the model
# and input in half; autocast would keep some layers in float). Timing: CUDA events around
# each forward after 3 warm-up runs, --repeats timed runs; median, mean, p90.
# Output: CSV in lab 8's latency columns, with a provenance header of '#' lines.
#
#     python3 reference/bench_fpn_gpu.py --batches 1,8,32 --precisions fp32,fp16 --csv out.csv
import argparse
import datetime
import math
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_fpn import FPN  # noqa: E402

COLUMNS = ("batch_size,device,precision,latency_mean_ms,latency_median_ms,latency_p90_ms,"
           "images_per_s,peak_memory_mib,impl,threads")


def measure(net, b, h, w, precision, repeats):
    """One batch size in one precision: (mean, median, p90) ms and peak device MiB."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    g = torch.Generator(device="cuda").manual_seed(1)
    x = (torch.rand(b, 3, h, w, generator=g, device="cuda") * 4 - 2).to(dtype)
    net = net.to(dtype)
    torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for _ in range(3):
            net(x)
        torch.cuda.synchronize()
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            net(x)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
    times.sort()
    p90 = times[math.ceil(0.9 * len(times)) - 1]
    mib = torch.cuda.max_memory_allocated() / 2**20
    return sum(times) / len(times), statistics.median(times), p90, mib


def main():
    p = argparse.ArgumentParser(description="PyTorch FPN-ResNeXt50 latency on a GPU")
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--precisions", default="fp32,tf32,fp16")
    p.add_argument("--size", default="384x480")
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--csv", required=True, help="output file (written whole or not at all)")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_fpn_gpu: no CUDA device", file=sys.stderr)
        return 2
    h, w = map(int, a.size.split("x"))
    torch.backends.cudnn.benchmark = True
    net = FPN(classes=a.classes).cuda().eval()
    lines = [f"# bench_fpn_gpu.py: PyTorch {torch.__version__}, cuDNN "
             f"{torch.backends.cudnn.version()}, GPU {torch.cuda.get_device_name(0)}",
             f"# date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"# input {a.size}, {a.classes} classes, CUDA events, 3 warm-up, {a.repeats} runs",
             COLUMNS]
    for prec in a.precisions.split(","):
        for b in map(int, a.batches.split(",")):
            mean, med, p90, mib = measure(net, b, h, w, prec, a.repeats)
            row = (f"{b},cuda,{prec},{mean:.3f},{med:.3f},{p90:.3f},{b * 1e3 / med:.1f},"
                   f"{mib:.1f},pytorch,0")
            print(row, flush=True)
            lines.append(row)
        net = net.float()
    d = os.path.dirname(os.path.abspath(a.csv))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".bench_fpn_gpu.")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
