#!/usr/bin/python3
# PyTorch's own version of lab 7's CamVid accuracy table (labs/lab07-int8.c camvid), run
# by the lab in the same run: the same fp32 weights (our checkpoint or state dict, loaded
# into make_golden_fpn.py's re-creation of smp's FPN + ResNeXt-50 32x4d, equal to ours by
# tests/test_ch08.c), the same CamVid frames, reduction, rendering, augmentation and
# evaluation (train_fpn_pytorch.py's), then torch.ao.quantization in FX graph mode:
#   fp32                      the weights as they are
#   int8_ptq_converted        prepare_fx with get_default_qconfig_mapping("x86")
#                             (HistogramObserver activations, per-channel symmetric
#                             weights), calibrated on the first --calib train frames,
#                             convert_fx, evaluated with the real int8 kernels
#   int8_qat_full             prepare_qat_fx with get_default_qat_qconfig_mapping("x86"),
#                             --epochs of fine-tuning (AdamW wd 1e-4, lr cosine per step
#                             without warm-up, BatchNorm statistics frozen from epoch
#                             --freeze-bn-epoch by freeze_bn_stats), evaluated
#                             fake-quantized with the observers off ...
#   int8_qat_full_converted   ... and after convert_fx (real int8 kernels)
#   int8_qat_partial(_converted)  the same with encoder.conv1 (and its BatchNorm and ReLU,
#                             which FX fuses with it) and segmentation_head in float
#                             (qconfig None)
# Every config name is printed with the prefix pytorch_, kind and columns as the lab's
# (lab,kind,config,split,miou,pixel_accuracy,model_bytes,epochs,lr,seconds,note), one row
# per line on stdout; other lines are progress. model_bytes: len(torch.save(state_dict))
# into a BytesIO (PyTorch's own file size: running statistics, scales and zero points
# included, pickle overhead too), not the lab's count of parameter bytes.
#
# The quantized engine: "x86" when this PyTorch has it, else "fbgemm", else "onednn"
# (Debian's PyTorch 1.13 is built without FBGEMM: its engines are qnnpack and onednn, so
# the x86 qconfig mappings are used with the onednn kernels). --probe prints the version
# and engine line the lab puts into its CSV header, and exits.
#
#     /usr/bin/python3 reference/qat_fpn_pytorch.py --data /work/shared/data/CamVid \
#         --weights fpn.ckpt --threads 2
#     /usr/bin/python3 reference/qat_fpn_pytorch.py --data DIR --quick   # seconds
import argparse
import copy
import io
import json
import os
import random
import struct
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_fpn import FPN, REDUCED  # noqa: E402
from train_fpn_pytorch import evaluate, load_split, lr_at, train_batch, train_step  # noqa: E402

from torch.ao.quantization import (disable_observer, get_default_qat_qconfig_mapping,  # noqa: E402
                                   get_default_qconfig_mapping)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx  # noqa: E402

try:   # torch.ao.nn.intrinsic from PyTorch 2.0 on; 1.13 keeps it in torch.nn.intrinsic
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats
except ImportError:
    from torch.nn.intrinsic.qat import freeze_bn_stats

warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")

PARTIAL_FLOAT = ("encoder.conv1", "encoder.bn1", "encoder.relu", "segmentation_head")
CONFIGS = ("fp32", "ptq", "qat_full", "qat_partial", "converted")


def engine():
    """The quantized engine to run converted models on, and why."""
    have = torch.backends.quantized.supported_engines
    for e in ("x86", "fbgemm", "onednn"):
        if e in have:
            why = "" if e == "x86" else f" (this PyTorch has no x86 engine: {', '.join(have)})"
            return e, why
    raise SystemExit(f"no x86 quantized engine in this PyTorch ({', '.join(have)})")


def probe_line():
    e, why = engine()
    return (f"torch {torch.__version__}, FX graph mode, qconfig mappings x86, "
            f"converted models on engine {e}{why}")


def load_state(path):
    """The float32 tensors of a safetensors state dict or lab checkpoint (names under
    optimizer. skipped), as a dict name -> tensor."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n].decode())
    header.pop("__metadata__", None)
    state = {}
    for name, info in header.items():
        if name.startswith("optimizer."):
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name}: dtype {info['dtype']}, expected F32")
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + e]), dtype=torch.float32)
        state[name] = t.reshape(info["shape"])
    return state


def build(a):
    """The fp32 FPN with --weights loaded (strict but for num_batches_tracked), or a
    seeded random one when there are none (--quick alone)."""
    cfg = dict(REDUCED, classes=a.classes) if a.quick else dict(classes=a.classes)
    torch.manual_seed(a.seed)
    net = FPN(**cfg)
    if a.weights:
        state = load_state(a.weights)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SystemExit(f"{a.weights}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return net


def state_bytes(net):
    """Bytes of net's state dict as torch.save writes it."""
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getbuffer().nbytes


class Table:
    """Prints progress and the rows (pytorch_ config names)."""

    def __init__(self, a, splits):
        self.a, self.splits = a, splits

    def row(self, kind, config, split, miou, acc, nbytes, epochs, lr, secs, note):
        assert "," not in note, note
        f = (lambda v, d: "" if v is None else f"{v:.{d}f}")
        print(f"lab07,{kind},pytorch_{config},{split},{f(miou, 4)},{f(acc, 4)},"
              f"{'' if nbytes is None else nbytes},{epochs},{lr:g},{secs:.1f},{note}", flush=True)

    def report(self, net, config, nbytes, epochs, lr, t0, note):
        for split in ("val", "test"):
            _, miou, acc = evaluate(net, *self.splits[split], self.a.eh, self.a.ew, self.a.classes)
            self.row("accuracy", config, split, miou, acc, nbytes, epochs, lr, time.time() - t0,
                     note)
        net.eval()   # evaluate() leaves the network in training mode


def example(a):
    return (torch.zeros(1, 3, a.eh, a.ew),)


def calibrate(net, a, rgb, lab):
    """Runs the first --calib train frames through net (observers on), in batches."""
    from train_fpn_pytorch import eval_batch
    net.eval()
    with torch.no_grad():
        for b in range(0, len(rgb), a.batch):
            idx = list(range(b, min(b + a.batch, len(rgb))))
            net(eval_batch(rgb, lab, idx, a.eh, a.ew)[0])


def run_ptq(net, t, a, eng):
    t0 = time.time()
    m = prepare_fx(copy.deepcopy(net).eval(), get_default_qconfig_mapping("x86"), example(a))
    rgb, lab = t.splits["train"]
    calibrate(m, a, rgb[:a.calib], lab[:a.calib])
    q = convert_fx(m)
    t.report(q, "int8_ptq_converted", state_bytes(q), 0, 0, t0,
             f"FX prepare_fx x86 qconfig (HistogramObserver); calibration on "
             f"{min(a.calib, len(rgb))} train frames; convert_fx; engine {eng}")


def run_qat(net, t, a, config, keep_float, eng):
    t0 = time.time()
    mapping = get_default_qat_qconfig_mapping("x86")
    for name in keep_float:
        mapping.set_module_name(name, None)
    m = prepare_qat_fx(copy.deepcopy(net).train(), mapping, example(a))
    rgb, lab = t.splits["train"]
    spe = len(rgb) // a.batch
    if spe < 1:
        raise SystemExit(f"the train split has {len(rgb)} frames, fewer than the batch {a.batch}")
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=1e-4)
    rnd = random.Random(a.seed)
    torch.manual_seed(a.seed)
    total, step, lr = spe * a.epochs, 0, a.lr
    for epoch in range(a.epochs):
        te = time.time()
        m.train()
        if epoch >= a.freeze_bn_epoch:
            m.apply(freeze_bn_stats)
        order = torch.randperm(len(rgb)).tolist()
        losses = []
        for b in range(spe):
            x, l = train_batch(rgb, lab, order[b * a.batch:(b + 1) * a.batch], a.crop, rnd)
            lr = lr_at(step, total, 0, a.lr)
            loss = train_step(m, opt, x, l, lr)
            step += 1
            losses.append(loss.item())
            print(f"  pytorch {config} step {step}/{total}: loss {losses[-1]:.4f}", flush=True)
        mean = sum(losses) / len(losses)
        t.row("qat_epoch", config, "train", None, None, None, epoch + 1, lr, time.time() - te,
              f"mean training loss {mean:.4f}")
    m.apply(disable_observer)
    m.eval()
    q = convert_fx(copy.deepcopy(m).eval())
    nbytes = state_bytes(q)
    kept = f"; float (qconfig None): {' '.join(keep_float)}" if keep_float else ""
    t.report(m, config, nbytes, a.epochs, a.lr, t0,
             f"FX prepare_qat_fx x86 qconfig{kept}; AdamW lr {a.lr:g} cosine; BN frozen from "
             f"epoch {a.freeze_bn_epoch}; fake-quantized evaluation (observers off)")
    if "converted" in a.configs:
        t.report(q, config + "_converted", nbytes, a.epochs, a.lr, time.time(),
                 f"the same model after convert_fx: real int8 kernels; engine {eng}")


def parse(argv):
    p = argparse.ArgumentParser(description="Lab 7's CamVid accuracy table with PyTorch's QAT")
    p.add_argument("--probe", action="store_true", help="print the version/engine line, exit")
    p.add_argument("--data")
    p.add_argument("--weights", default=None, help="our state dict or checkpoint (safetensors)")
    p.add_argument("--quick", action="store_true",
                   help="reduced network; defaults 8 train and 4 val/test frames, crop 64, "
                        "eval 64x96, batch 4, calibration on 4 frames")
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--eval-size", default=None, help="HxW (192x256; --quick 64x96)")
    p.add_argument("--crop", type=int, default=None, help="QAT crop (192; --quick 64)")
    p.add_argument("--batch", type=int, default=None, help="8 (--quick 4)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--freeze-bn-epoch", type=int, default=0)
    p.add_argument("--calib", type=int, default=None, help="32 (--quick 4)")
    p.add_argument("--limit", default=None, help="T[,E]: the first T train and E val/test frames")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="comma list of " + ", ".join(CONFIGS))
    a = p.parse_args(argv)
    if a.probe:
        return a
    if not a.data:
        p.error("--data DIR is required")
    a.configs = a.configs.split(",")
    bad = [c for c in a.configs if c not in CONFIGS]
    if bad:
        p.error(f"--configs: unknown {bad[0]!r}")
    q = a.quick
    a.eval_size = a.eval_size or ("64x96" if q else "192x256")
    a.crop = a.crop or (64 if q else 192)
    a.batch = a.batch or (4 if q else 8)
    a.calib = a.calib or (4 if q else 32)
    a.eh, a.ew = map(int, a.eval_size.split("x"))
    if a.crop % 32 or a.eh % 32 or a.ew % 32:
        p.error("--crop and --eval-size must be multiples of 32")
    lim = [int(v) for v in a.limit.split(",")] if a.limit else [0, 0]
    a.lim = (lim + [0])[:2]
    if q:
        a.lim = [a.lim[0] or 8, a.lim[1] or 4]
    return a


def main(argv):
    a = parse(argv)
    if a.probe:
        print(probe_line())
        return 0
    eng, _ = engine()
    torch.backends.quantized.engine = eng
    torch.set_num_threads(a.threads)
    t0 = time.time()
    splits = {s: load_split(a.data, s, a.factor, a.lim[0] if s == "train" else a.lim[1])
              for s in ("train", "val", "test")}
    print(f"  pytorch: {probe_line()}; loaded {', '.join(f'{k} {len(v[0])}' for k, v in splits.items())} "
          f"frames in {time.time() - t0:.1f} s", flush=True)
    net = build(a).eval()
    t = Table(a, splits)
    if "fp32" in a.configs:
        t.report(net, "fp32", state_bytes(net), 0, 0, time.time(),
                 "the weights as they are (torch.save bytes of the state dict)")
    if "ptq" in a.configs:
        run_ptq(net, t, a, eng)
    if "qat_full" in a.configs:
        run_qat(net, t, a, "int8_qat_full", (), eng)
    if "qat_partial" in a.configs:
        run_qat(net, t, a, "int8_qat_partial", PARTIAL_FLOAT, eng)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
