#!/usr/bin/python3
# Golden data for chapter 4's training engine: the segmentation metrics and a ResNeXt
# bottleneck block's forward and backward.
#
# Needs Debian's python3-torch (PyTorch 1.13) and NumPy, for the system interpreter:
#
#     /usr/bin/python3 reference/make_golden_metrics.py          # (re)write the files
#     /usr/bin/python3 reference/make_golden_metrics.py --check  # re-read and verify
#
# reference/golden/metrics_confusion.safetensors (integers stored as float32, exact):
#   pred, truth (2 x 5 x 7, C = 6 classes; truth holds ignore_index -100 at some
#   pixels): class 4 occurs in neither; class 5 is predicted only where the truth is
#   ignored, so it is absent too. conf (C x C, row = truth, column = prediction),
#   iou (C; NaN for an absent class), miou (NaN-excluded mean), pixel_acc, computed
#   with NumPy from a bincount and checked against a second, per-class computation
#   with torch boolean masks. logits (2 x 6 x 3 x 4, distinct values) with truth_l and
#   conf_l: the confusion of torch.argmax(logits, 1) against truth_l.
# reference/golden/model_bottleneck.safetensors: a stem conv 3x3 (3 -> 8, bias) and
#   torchvision's Bottleneck written out (conv1x1-bn-relu, grouped conv3x3 stride 2
#   groups 4 -bn-relu, conv1x1-bn, downsample conv1x1 stride 2 + bn, add, relu;
#   8 -> width 8 -> 16) named as torchvision names it ("layer1.0.conv1.weight", ...),
#   in float64 autograd from float32 draws: x (2 x 3 x 7 x 7), the state dict before
#   the step (random BN affine and running statistics), dy, out (training mode),
#   "grad.NAME" for every parameter, "after.NAME" for the running statistics after the
#   step, and out_eval (evaluation mode, with those statistics).
# The safetensors writer and reader are make_golden.py's (imported, not copied).

import argparse
import math
import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (exits with a message when torch is missing)
import numpy as np  # noqa: E402

torch, F, nn = mg.torch, mg.F, mg.torch.nn
IGNORE = -100
C = 6


def metrics_case():
    g = torch.Generator().manual_seed(20261129)
    pred = torch.randint(0, C, (2, 5, 7), generator=g)
    truth = torch.randint(0, C, (2, 5, 7), generator=g)
    ignore = torch.rand(2, 5, 7, generator=g) < 0.15
    for t in (pred, truth):
        t[t == 4] = 0                          # class 4: in neither
    truth[truth == 5] = 1                      # class 5: not in the truth ...
    pred[pred == 5] = 2
    truth[ignore] = IGNORE
    pred[ignore & (torch.rand(2, 5, 7, generator=g) < 0.5)] = 5   # ... predicted only on void
    assert (pred == 5).any() and (truth == IGNORE).any()
    p, t = pred.numpy().ravel(), truth.numpy().ravel()
    keep = t != IGNORE
    conf = np.bincount(t[keep] * C + p[keep], minlength=C * C).reshape(C, C)
    tp = np.diag(conf).astype(np.float64)
    den = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(den > 0, tp / den, np.nan)
    miou = np.nanmean(iou)
    acc = tp.sum() / conf.sum()
    # a second way: per class, intersection and union of boolean masks (torch)
    tt, pp = truth[truth != IGNORE], pred[truth != IGNORE]
    for c in range(C):
        inter = ((tt == c) & (pp == c)).sum().item()
        union = ((tt == c) | (pp == c)).sum().item()
        want = inter / union if union else math.nan
        assert (math.isnan(want) and math.isnan(iou[c])) or abs(want - iou[c]) < 1e-15, c
    assert math.isnan(iou[4]) and math.isnan(iou[5]) and not math.isnan(miou)
    # argmax of logits (distinct values: no ties)
    logits = torch.randperm(2 * C * 3 * 4, generator=g).float().reshape(2, C, 3, 4) / 7.0
    truth_l = torch.randint(0, C, (2, 3, 4), generator=g)
    truth_l[0, 0, 0] = IGNORE
    am, tl = torch.argmax(logits, 1).numpy().ravel(), truth_l.numpy().ravel()
    k = tl != IGNORE
    conf_l = np.bincount(tl[k] * C + am[k], minlength=C * C).reshape(C, C)
    f = lambda a: torch.tensor(np.asarray(a, dtype=np.float64)).float()   # noqa: E731
    return ({"pred": pred.float(), "truth": truth.float(), "conf": f(conf), "iou": f(iou),
             "miou": f([miou]), "pixel_acc": f([acc]), "logits": logits,
             "truth_l": truth_l.float(), "conf_l": f(conf_l)},
            {"classes": str(C), "ignore_index": str(IGNORE),
             "convention": "IoU of a class absent from truth and prediction is NaN and left "
                           "out of the mean; ignored pixels are skipped whatever is predicted",
             "torch_version": torch.__version__, "numpy_version": np.__version__})


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck, written out (ResNeXt: grouped conv2)."""

    def __init__(self, cin, width, cout, groups, stride):
        super().__init__()
        k = dict(bias=False, dtype=torch.float64)
        self.conv1 = nn.Conv2d(cin, width, 1, **k)
        self.bn1 = nn.BatchNorm2d(width, dtype=torch.float64)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, **k)
        self.bn2 = nn.BatchNorm2d(width, dtype=torch.float64)
        self.conv3 = nn.Conv2d(width, cout, 1, **k)
        self.bn3 = nn.BatchNorm2d(cout, dtype=torch.float64)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, **k),
                                        nn.BatchNorm2d(cout, dtype=torch.float64))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.downsample(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, dtype=torch.float64)
        self.layer1 = nn.Sequential(Bottleneck(8, 8, 16, 4, 2))

    def forward(self, x):
        return self.layer1(self.stem(x))


def bottleneck_case():
    g = torch.Generator().manual_seed(20261130)
    u = lambda *s, lo=-1.0, hi=1.0: torch.rand(*s, generator=g) * (hi - lo) + lo   # noqa: E731
    net = Net()
    state = {}
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (name.endswith("weight") and t.dim() == 1):
                v = u(*t.shape, lo=0.5, hi=1.5)
            elif t.dim() == 4:
                v = u(*t.shape) / math.sqrt(t[0].numel())
            else:
                v = u(*t.shape) * 0.5
            state[name] = v.float()
            t.copy_(state[name].double())
    x = u(2, 3, 7, 7).float()
    net.train()
    xx = x.double().requires_grad_(True)
    out = net(xx)
    dy = u(*out.shape).float()
    out.backward(dy.double())
    tensors = {"x": x, "dy": dy, "out": out.detach().float()}
    tensors.update(state)
    for name, p in net.named_parameters():
        tensors["grad." + name] = p.grad.float()
    for name, t in net.state_dict().items():
        if "running" in name:
            tensors["after." + name] = t.float()
    net.eval()
    with torch.no_grad():
        tensors["out_eval"] = net(x.double()).float()
    return tensors, {"description": "stem conv + ResNeXt bottleneck (groups 4, stride 2, "
                     "downsample), float64 autograd", "torch_version": torch.__version__}


CASES = {"metrics_confusion": metrics_case, "model_bottleneck": bottleneck_case}


def main():
    ap = argparse.ArgumentParser(description="Write chapter 4's golden metric and bottleneck data.")
    ap.add_argument("--check", action="store_true", help="recompute and compare with the files")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    bad = 0
    for name, fn in CASES.items():
        path = os.path.join(mg.GOLDEN_DIR, name + ".safetensors")
        tensors, md = fn()
        if a.check:
            got, _, _ = mg.read_safetensors(path)
            for k, v in tensors.items():
                ok = k in got and torch.allclose(got[k], v.float(), rtol=1e-6, atol=0,
                                                 equal_nan=True)
                bad += not ok
                if not ok:
                    print(f"{path}: {k} differs")
            print(f"{path}: {len(tensors)} tensors checked")
        else:
            mg.write_safetensors(path, tensors, md)
            print(f"wrote {path}: {len(tensors)} tensors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
