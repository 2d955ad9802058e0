#!/usr/bin/python3
# Golden data for chapter 4's training pieces: layers, losses and optimizers.
#
# Needs Debian's python3-torch (PyTorch 1.13), installed for the system
# interpreter only: run it as
#
#     /usr/bin/python3 reference/make_golden_layers.py          # (re)write golden/layer_*
#     /usr/bin/python3 reference/make_golden_layers.py --check  # re-read and verify
#
# Every case becomes reference/golden/layer_<name>.safetensors: float32 tensors
# (inputs drawn as float32; outputs and gradients computed by float64 autograd from
# exactly those values, rounded to float32 once) and string metadata (the layer's
# options, "piece", "description", "torch_version"). Integer data (labels, argmax
# indices) is stored as float32, exact for the small values used.
#
# Tensors, by piece (dy is the upstream gradient, drawn uniform in [-1, 1)):
#   relu, add, maxpool, avgpool, upsample, batchnorm, groupnorm: x (and x2 for add),
#     parameters, dy, y, dx (dx2), parameter gradients; batchnorm also the running
#     statistics before (running_mean0/var0) and after the step; maxpool the argmax
#     (index h*W + w within the input plane, PyTorch's return_indices).
#   cross_entropy, dice: logits, target (N x H x W, ignore_index marks ignored
#     pixels), loss (shape [1]) and dlogits (gradient of the loss itself).
#   sgd, adamw: a fixed least-squares problem X (8 x 3), Y (8 x 4), initial
#     parameters w0 (4 x 3) and b0 (4); loss = mean((X w^T + b - Y)^2); the
#     parameters after every one of 20 steps: traj_w (20 x 4 x 3), traj_b (20 x 4).
# Dropout has no golden file: PyTorch's random stream is not ours (the C tests
# check its properties instead); neither has initialisation (tested by bounds and
# moments).
#
# The safetensors writer and reader are make_golden.py's (imported, not copied).

import argparse
import glob
import math
import os
import sys
import zlib

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (exits with a message when torch is missing)

torch, F = mg.torch, mg.F

GOLDEN_DIR = mg.GOLDEN_DIR
PREFIX = "layer_"
BASE_SEED = 20240604
CHECK_RTOL = 1e-6
STEPS = 20


def seed_of(name):
    return BASE_SEED ^ zlib.crc32(name.encode())


class Draw:
    """float32 uniform draws from a generator seeded by the case name."""

    def __init__(self, name):
        self.g = torch.Generator().manual_seed(seed_of(name))

    def u(self, *shape, lo=-1.0, hi=1.0):
        return torch.rand(*shape, generator=self.g, dtype=torch.float32) * (hi - lo) + lo

    def ints(self, lo, hi, *shape):
        return torch.randint(lo, hi, shape, generator=self.g)


def d64(t):
    return t.double().clone().requires_grad_(True)


def f32(t):
    return t.detach().float()


# --------------------------------------------------------------------------
# Cases: each returns (tensors, metadata)
# --------------------------------------------------------------------------

def relu_case(name):
    d = Draw(name)
    x, dy = d.u(2, 3, 5, 7), d.u(2, 3, 5, 7)
    xx = d64(x)
    y = F.relu(xx)
    y.backward(dy.double())
    return {"x": x, "dy": dy, "y": f32(y), "dx": f32(xx.grad)}, {"description": "ReLU"}


def add_case(name):
    d = Draw(name)
    x, x2, dy = d.u(2, 3, 4, 5), d.u(2, 3, 4, 5), d.u(2, 3, 4, 5)
    a, b = d64(x), d64(x2)
    y = a + b
    y.backward(dy.double())
    return ({"x": x, "x2": x2, "dy": dy, "y": f32(y), "dx": f32(a.grad), "dx2": f32(b.grad)},
            {"description": "element-wise add"})


def batchnorm_case(name, training, momentum, eps, n=3, c=4, h=5, w=6):
    d = Draw(name)
    x = d.u(n, c, h, w) * 2 + 0.5            # mean and scale away from 0 and 1
    gamma, beta = d.u(c, lo=0.5, hi=1.5), d.u(c)
    rm0, rv0 = d.u(c), d.u(c, lo=0.5, hi=1.5)
    dy = d.u(n, c, h, w)
    bn = torch.nn.BatchNorm2d(c, eps=eps, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(gamma.double())
        bn.bias.copy_(beta.double())
        bn.running_mean.copy_(rm0.double())
        bn.running_var.copy_(rv0.double())
    bn.train(training)
    xx = d64(x)
    y = bn(xx)
    y.backward(dy.double())
    t = {"x": x, "weight": gamma, "bias": beta, "running_mean0": rm0, "running_var0": rv0,
         "dy": dy, "y": f32(y), "dx": f32(xx.grad), "dweight": f32(bn.weight.grad),
         "dbias": f32(bn.bias.grad), "running_mean": f32(bn.running_mean),
         "running_var": f32(bn.running_var)}
    return t, {"description": f"BatchNorm2d {'training' if training else 'evaluation'}, "
                              f"momentum {momentum}, eps {eps}",
               "training": "1" if training else "0", "momentum": repr(momentum),
               "eps": repr(eps)}


def groupnorm_case(name, groups, c, eps=1e-5, n=2, h=4, w=5):
    d = Draw(name)
    x = d.u(n, c, h, w) * 2 - 0.3
    gamma, beta = d.u(c, lo=0.5, hi=1.5), d.u(c)
    dy = d.u(n, c, h, w)
    gn = torch.nn.GroupNorm(groups, c, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        gn.weight.copy_(gamma.double())
        gn.bias.copy_(beta.double())
    xx = d64(x)
    y = gn(xx)
    y.backward(dy.double())
    return ({"x": x, "weight": gamma, "bias": beta, "dy": dy, "y": f32(y), "dx": f32(xx.grad),
             "dweight": f32(gn.weight.grad), "dbias": f32(gn.bias.grad)},
            {"description": f"GroupNorm {groups} groups of {c} channels, eps {eps}",
             "groups": str(groups), "eps": repr(eps)})


def maxpool_case(name, k, s, p, shape, ties=False):
    d = Draw(name)
    if ties:   # few distinct values: many windows hold several maxima
        x = d.ints(0, 4, *shape).float() * 0.25
    else:
        x = d.u(*shape)
    xx = d64(x)
    y, idx = F.max_pool2d(xx, k, s, p, return_indices=True)
    dy = d.u(*y.shape)
    y.backward(dy.double())
    return ({"x": x, "dy": dy, "y": f32(y), "argmax": idx.float(), "dx": f32(xx.grad)},
            {"description": f"max_pool2d kernel {k} stride {s} padding {p}"
                            + (" (ties: first maximum wins)" if ties else ""),
             "kernel": str(k), "stride": str(s), "padding": str(p)})


def avgpool_case(name):
    d = Draw(name)
    x = d.u(2, 5, 3, 7)
    xx = d64(x)
    y = F.adaptive_avg_pool2d(xx, 1)
    dy = d.u(*y.shape)
    y.backward(dy.double())
    return ({"x": x, "dy": dy, "y": f32(y), "dx": f32(xx.grad)},
            {"description": "global average pool (adaptive_avg_pool2d(x, 1))"})


def upsample_case(name, shape, mode, align_corners=None, scale=None, size=None):
    d = Draw(name)
    x = d.u(*shape)
    xx = d64(x)
    kw = {"mode": mode}
    if mode == "bilinear":
        kw["align_corners"] = align_corners
    if scale is not None:
        kw["scale_factor"] = scale
    else:
        kw["size"] = size
    y = F.interpolate(xx, **kw)
    dy = d.u(*y.shape)
    y.backward(dy.double())
    md = {"description": f"interpolate {mode}"
                         + (f" align_corners={align_corners}" if mode == "bilinear" else "")
                         + (f" scale_factor={scale}" if scale is not None else f" size={size}"),
          "mode": mode, "align_corners": "1" if align_corners else "0",
          "scale_h": repr(float(scale[0] if isinstance(scale, tuple) else scale)) if scale else "0",
          "scale_w": repr(float(scale[1] if isinstance(scale, tuple) else scale)) if scale else "0",
          "out_h": str(y.shape[2]), "out_w": str(y.shape[3])}
    return {"x": x, "dy": dy, "y": f32(y), "dx": f32(xx.grad)}, md


def ce_labels(d, n, c, h, w, ignore_frac, ignore_index):
    t = d.ints(0, c, n, h, w)
    if ignore_frac > 0:
        t[d.u(n, h, w, lo=0, hi=1) < ignore_frac] = ignore_index
    return t


def cross_entropy_case(name, n, c, h, w, ignore_frac, ignore_index=-100):
    d = Draw(name)
    z = d.u(n, c, h, w) * 3
    t = ce_labels(d, n, c, h, w, ignore_frac, ignore_index)
    zz = d64(z)
    loss = F.cross_entropy(zz, t, ignore_index=ignore_index)
    loss.backward()
    return ({"logits": z, "target": t.float(), "loss": f32(loss.reshape(1)),
             "dlogits": f32(zz.grad)},
            {"description": f"cross-entropy over pixels, {c} classes, "
                            f"{int((t == ignore_index).sum())} of {t.numel()} pixels ignored",
             "ignore_index": str(ignore_index)})


def dice_reference(z, t, ignore_index, eps=1e-7):
    """segmentation_models_pytorch's DiceLoss(mode='multiclass', from_logits=True,
    smooth=0, eps=1e-7, ignore_index), restated in plain torch."""
    n, c = z.shape[:2]
    p = z.log_softmax(dim=1).exp().reshape(n, c, -1)
    t = t.reshape(n, -1)
    mask = (t != ignore_index)
    p = p * mask.unsqueeze(1)
    onehot = F.one_hot((t * mask).long(), c).permute(0, 2, 1) * mask.unsqueeze(1)
    onehot = onehot.to(p.dtype)
    inter = (p * onehot).sum(dim=(0, 2))
    card = (p + onehot).sum(dim=(0, 2))
    dice = (2 * inter) / card.clamp_min(eps)
    loss = (1 - dice) * (onehot.sum(dim=(0, 2)) > 0).to(p.dtype)
    return loss.mean()


def dice_case(name, n, c, h, w, ignore_frac, absent=None, ignore_index=-100):
    d = Draw(name)
    z = d.u(n, c, h, w) * 3
    t = ce_labels(d, n, c, h, w, ignore_frac, ignore_index)
    if absent is not None:             # a class absent from the target contributes 0
        t[t == absent] = (absent + 1) % c
    zz = d64(z)
    loss = dice_reference(zz, t, ignore_index)
    loss.backward()
    return ({"logits": z, "target": t.float(), "loss": f32(loss.reshape(1)),
             "dlogits": f32(zz.grad)},
            {"description": f"soft Dice (smp multiclass, smooth 0, eps 1e-7), {c} classes"
                            + (f", class {absent} absent" if absent is not None else ""),
             "ignore_index": str(ignore_index), "eps": "1e-07"})


def optim_case(name, kind, **cfg):
    d = Draw("optim_problem")          # the same problem for every optimizer case
    X, Y = d.u(8, 3), d.u(8, 4)
    w0, b0 = d.u(4, 3) * 0.5, d.u(4) * 0.5
    w, b = w0.double().clone().requires_grad_(True), b0.double().clone().requires_grad_(True)
    if kind == "sgd":
        opt = torch.optim.SGD([w, b], **cfg)
    else:
        opt = torch.optim.AdamW([w, b], **cfg)
    tw, tb = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((X.double() @ w.t() + b - Y.double()) ** 2).mean()
        loss.backward()
        opt.step()
        tw.append(w.detach().clone())
        tb.append(b.detach().clone())
    md = {"description": f"{kind} {cfg}, {STEPS} steps on mean((X w^T + b - Y)^2)",
          "optimizer": kind, "steps": str(STEPS)}
    md.update({k: (repr(v) if not isinstance(v, tuple) else repr(v[0]))
               for k, v in cfg.items() if k != "betas"})
    if "betas" in cfg:
        md["beta1"], md["beta2"] = repr(cfg["betas"][0]), repr(cfg["betas"][1])
    return ({"X": X, "Y": Y, "w0": w0, "b0": b0, "traj_w": f32(torch.stack(tw)),
             "traj_b": f32(torch.stack(tb))}, md)


def cases():
    """(name, piece, builder) in file order."""
    return [
        ("relu", "relu", lambda n: relu_case(n)),
        ("add", "add", lambda n: add_case(n)),
        ("batchnorm_train", "batchnorm", lambda n: batchnorm_case(n, True, 0.1, 1e-5)),
        ("batchnorm_train_m03_eps1e-3", "batchnorm",
         lambda n: batchnorm_case(n, True, 0.3, 1e-3, n=2, c=3, h=3, w=7)),
        ("batchnorm_train_n1_1x1", "batchnorm",
         lambda n: batchnorm_case(n, True, 0.1, 1e-5, n=5, c=2, h=1, w=1)),
        ("batchnorm_eval", "batchnorm", lambda n: batchnorm_case(n, False, 0.1, 1e-5)),
        ("groupnorm_g2", "groupnorm", lambda n: groupnorm_case(n, 2, 6)),
        ("groupnorm_g1", "groupnorm", lambda n: groupnorm_case(n, 1, 4, eps=1e-3)),
        ("groupnorm_gc", "groupnorm", lambda n: groupnorm_case(n, 5, 5)),
        ("maxpool_k2s2", "maxpool", lambda n: maxpool_case(n, 2, 2, 0, (2, 3, 8, 9))),
        ("maxpool_k3s2p1", "maxpool", lambda n: maxpool_case(n, 3, 2, 1, (1, 2, 9, 7))),
        ("maxpool_k3s1p1_ties", "maxpool",
         lambda n: maxpool_case(n, 3, 1, 1, (2, 2, 6, 7), ties=True)),
        ("maxpool_k2s2_ties", "maxpool",
         lambda n: maxpool_case(n, 2, 2, 0, (1, 3, 6, 8), ties=True)),
        ("avgpool_global", "avgpool", lambda n: avgpool_case(n)),
        ("upsample_nearest_x2", "upsample",
         lambda n: upsample_case(n, (2, 3, 4, 5), "nearest", scale=2.0)),
        ("upsample_nearest_size", "upsample",
         lambda n: upsample_case(n, (1, 2, 5, 7), "nearest", size=(12, 10))),
        ("upsample_nearest_x1_5", "upsample",
         lambda n: upsample_case(n, (1, 2, 5, 6), "nearest", scale=1.5)),
        ("upsample_bilinear_x2", "upsample",
         lambda n: upsample_case(n, (2, 2, 4, 5), "bilinear", False, scale=2.0)),
        ("upsample_bilinear_x2_ac", "upsample",
         lambda n: upsample_case(n, (2, 2, 4, 5), "bilinear", True, scale=2.0)),
        ("upsample_bilinear_size", "upsample",
         lambda n: upsample_case(n, (1, 3, 5, 7), "bilinear", False, size=(11, 9))),
        ("upsample_bilinear_size_ac", "upsample",
         lambda n: upsample_case(n, (1, 3, 5, 7), "bilinear", True, size=(11, 9))),
        ("upsample_bilinear_x1_5", "upsample",
         lambda n: upsample_case(n, (1, 2, 5, 6), "bilinear", False, scale=1.5)),
        ("upsample_bilinear_down", "upsample",
         lambda n: upsample_case(n, (1, 2, 9, 8), "bilinear", False, size=(4, 3))),
        ("cross_entropy", "cross_entropy",
         lambda n: cross_entropy_case(n, 2, 5, 4, 6, 0.0)),
        ("cross_entropy_ignore", "cross_entropy",
         lambda n: cross_entropy_case(n, 2, 11, 5, 7, 0.3)),
        ("cross_entropy_ignore255", "cross_entropy",
         lambda n: cross_entropy_case(n, 1, 3, 6, 5, 0.2, ignore_index=255)),
        ("dice", "dice", lambda n: dice_case(n, 2, 4, 5, 6, 0.0)),
        ("dice_ignore_absent", "dice", lambda n: dice_case(n, 2, 5, 6, 7, 0.25, absent=2)),
        ("sgd_momentum", "sgd",
         lambda n: optim_case(n, "sgd", lr=0.05, momentum=0.9, weight_decay=1e-2)),
        ("sgd_nesterov", "sgd",
         lambda n: optim_case(n, "sgd", lr=0.05, momentum=0.9, weight_decay=1e-3,
                              nesterov=True)),
        ("sgd_dampening", "sgd",
         lambda n: optim_case(n, "sgd", lr=0.1, momentum=0.8, dampening=0.3)),
        ("sgd_plain", "sgd", lambda n: optim_case(n, "sgd", lr=0.1)),
        ("adamw", "adamw",
         lambda n: optim_case(n, "adamw", lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                              weight_decay=1e-2)),
        ("adamw_wd01_b2", "adamw",
         lambda n: optim_case(n, "adamw", lr=3e-2, betas=(0.8, 0.99), eps=1e-6,
                              weight_decay=0.1)),
    ]


def build(name, piece, fn):
    t, md = fn(name)
    md = dict(md)
    md["piece"] = piece
    md["torch_version"] = torch.__version__
    return t, {k: str(v) for k, v in md.items()}


def path_of(name):
    return os.path.join(GOLDEN_DIR, f"{PREFIX}{name}.safetensors")


def generate():
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    wanted = {path_of(n) for n, _, _ in cases()}
    for old in glob.glob(os.path.join(GOLDEN_DIR, PREFIX + "*.safetensors")):
        if old not in wanted:
            os.remove(old)
    total = 0
    for name, piece, fn in cases():
        t, md = build(name, piece, fn)
        total += mg.write_safetensors(path_of(name), t, md)
    print(f"wrote {len(cases())} layer cases, {total} bytes, to {GOLDEN_DIR}")


def check():
    """Re-reads every file and recomputes it; stored tensors must match within CHECK_RTOL."""
    fails, rows = 0, []
    for name, piece, fn in cases():
        p = path_of(name)
        if not os.path.exists(p):
            print(f"MISSING {os.path.basename(p)}")
            fails += 1
            continue
        stored, md, _ = mg.read_safetensors(p)
        fresh, md2 = build(name, piece, fn)
        err = 0.0
        for k, v in fresh.items():
            s = stored[k].double()
            r = v.double()
            assert tuple(s.shape) == tuple(r.shape), (name, k)
            den = max(r.norm().item(), 1e-30)
            err = max(err, (s - r).norm().item() / den)
        ok = err <= CHECK_RTOL and md.get("piece") == piece
        fails += not ok
        rows.append((os.path.basename(p), err, "ok" if ok else "FAIL", md["description"]))
    for r in rows:
        print(f"{r[0]:<50} {r[1]:8.1e}  {r[2]:4}  {r[3]}")
    print(f"\n{len(rows)} files, bound {CHECK_RTOL:g}: {len(rows) - fails} ok, {fails} failed")
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description="Write chapter 4's golden layer/loss/optimizer data.")
    ap.add_argument("--check", action="store_true", help="re-read and verify every file")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    return check() if a.check else (generate() or 0)


if __name__ == "__main__":
    sys.exit(main())
