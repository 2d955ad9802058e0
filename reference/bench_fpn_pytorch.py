#!/usr/bin/python3
# PyTorch's side of lab 8's measurements, on the same CPU: the same FPN + ResNeXt-50 32x4d
# (reference/make_golden_fpn.py's re-creation of smp.FPN, whose state dict and outputs
# tests/test_ch08.c proves equal to ours), Debian's PyTorch 1.13, float32.
#
#   latency: forward latency in evaluation mode (torch.no_grad), random init, per batch
#            size: one warm-up, R timed runs; prints CSV rows in the lab's latency columns
#            batch_size,device,precision,latency_mean_ms,latency_median_ms,latency_p90_ms,
#            images_per_s,peak_memory_mib,impl,threads
#            peak memory as the lab counts it: the process's resident high-water mark
#            (VmHWM), reset before each batch size through /proc/self/clear_refs; after
#            each row a line "cpu_min,<batch>,<median CPU ms of the process>,<min wall ms>"
#            (CPU time: the work done, on a machine other processes share).
#   step:    seconds per training step (forward, cross-entropy ignoring void, backward,
#            AdamW step) on random crops of --crop at --batch: prints "step,<i>,<seconds>"
#            lines, "step_median,<seconds>" and "step_cpu_median,<CPU seconds>,<min seconds>"
#            (medians and minimum over the steps after the first, when there are several).
#
#     /usr/bin/python3 reference/bench_fpn_pytorch.py latency --batches 1,2 --size 384x480 --threads 2
#            --net block: torchvision's Bottleneck as resnext50_32x4d's layer2.0 (256 -> 512
#            channels, width 256 in 32 groups, stride 2, downsample conv 1x1/2 - BN) on random
#            input of --batch x 256 x crop/4 x crop/4, loss mean(output^2); --net lab4: lab 4's
#            FCN (chapter 4's cr_model_build_fcn, re-created below with its state-dict names)
#            on random --size frames (90x120) with cross-entropy. Training mode, AdamW.
#
#     /usr/bin/python3 reference/bench_fpn_pytorch.py step --crop 192 --batch 8 --steps 3 --threads 2
#     /usr/bin/python3 reference/bench_fpn_pytorch.py step --net block --crop 224 --batch 8 --threads 2
#     /usr/bin/python3 reference/bench_fpn_pytorch.py step --net lab4 --size 90x120 --batch 8 --threads 2
# lab08-fpn latency runs the first itself (with OMP_WAIT_POLICY PASSIVE and ACTIVE at 2
# threads, keeping the faster).
import argparse
import math
import os
import statistics
import sys
import time

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_fpn import FPN, REDUCED  # noqa: E402


def vm_hwm_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_net(classes, quick):
    cfg = dict(REDUCED, classes=classes) if quick else dict(classes=classes)
    return FPN(**cfg)


def latency(a):
    h, w = map(int, (a.size or "384x480").split("x"))
    net = make_net(a.classes, False).eval()
    g = torch.Generator().manual_seed(1)
    for b in map(int, a.batches.split(",")):
        ok = reset_hwm()
        x = torch.rand(b, 3, h, w, generator=g) * 4 - 2
        with torch.no_grad():
            net(x)
            t, cpu = [], []
            for _ in range(a.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                net(x)
                t.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.process_time() - c0) * 1e3)
        t.sort()
        mean = sum(t) / len(t)
        p90 = t[math.ceil(0.9 * len(t)) - 1]
        mib = vm_hwm_mib() if ok else -1.0
        print(f"{b},cpu,fp32,{mean:.3f},{statistics.median(t):.3f},{p90:.3f},"
              f"{b * 1e3 / mean:.3f},{mib:.1f},pytorch,{torch.get_num_threads()}", flush=True)
        print(f"cpu_min,{b},{statistics.median(cpu):.3f},{t[0]:.3f}", flush=True)


class Lab4FCN(nn.Module):
    """Lab 4's FCN as chapter 4's cr_model_build_fcn builds it (same state-dict names):
    enc1..enc3 (conv 3x3 pad 1 + BN + ReLU) with 2x2 max-pools between, bilinear up-sampling
    to the skip's size (align_corners=False) + skip, dec2, dec1, a 1x1 head with bias."""

    def __init__(self, classes):
        super().__init__()

        def stage(cin, cout):
            return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, 3, padding=1),
                                             bn=nn.BatchNorm2d(cout), relu=nn.ReLU()))
        self.enc1, self.enc2, self.enc3 = stage(3, 16), stage(16, 32), stage(32, 32)
        self.dec2, self.dec1 = stage(32, 16), stage(16, 16)
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        y = self.enc3(F.max_pool2d(e2, 2))
        y = F.interpolate(y, size=e2.shape[-2:], mode="bilinear", align_corners=False) + e2
        y = self.dec2(y)
        y = F.interpolate(y, size=e1.shape[-2:], mode="bilinear", align_corners=False) + e1
        return self.head(self.dec1(y))


def resnext_layer2_block():
    """resnext50_32x4d's layer2.0: torchvision's Bottleneck(256, 128, stride 2, groups 32,
    base_width 4) with its downsample."""
    from torchvision.models.resnet import Bottleneck
    down = nn.Sequential(nn.Conv2d(256, 512, 1, stride=2, bias=False), nn.BatchNorm2d(512))
    return Bottleneck(256, 128, stride=2, downsample=down, groups=32, base_width=4)


def step_case(a):
    """The network, its input and its loss (a function of the network's output) for --net."""
    if a.net == "block":
        s = a.crop // 4
        return resnext_layer2_block(), torch.rand(a.batch, 256, s, s) * 4 - 2, \
            lambda out: out.pow(2).mean()
    if a.net == "lab4":
        h, w = map(int, (a.size or "90x120").split("x"))
        net, shape = Lab4FCN(a.classes), (a.batch, h, w)
    else:
        net, shape = make_net(a.classes, a.quick), (a.batch, a.crop, a.crop)
    x = torch.rand(a.batch, 3, shape[1], shape[2]) * 4 - 2
    y = torch.randint(0, a.classes, shape)
    return net, x, lambda out: F.cross_entropy(out, y, ignore_index=-100)


def step(a):
    torch.manual_seed(a.seed)
    net, x, loss_of = step_case(a)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    times, cpu = [], []
    for i in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_of(net(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        print(f"step,{i + 1},{times[-1]:.4f},loss,{loss.item():.4f}", flush=True)
    # the lab skips the first (warm-up) step: medians over the rest when there are any
    rest_t, rest_c = (times[1:], cpu[1:]) if len(times) > 1 else (times, cpu)
    print(f"step_median,{statistics.median(rest_t):.4f}")
    print(f"step_cpu_median,{statistics.median(rest_c):.4f},{min(rest_t):.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["latency", "step"])
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--size", default=None, help="latency: 384x480; step --net lab4: 90x120")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="step: the width-reduced network")
    p.add_argument("--net", choices=["fpn", "block", "lab4"], default="fpn",
                   help="step: the whole FPN, resnext50_32x4d's layer2.0 or lab 4's FCN")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    (latency if a.mode == "latency" else step)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
