#!/usr/bin/python3
# Lab 8's training recipe in PyTorch, on the same CPU, so a full run can show both curves
# side by side: smp's FPN + ResNeXt-50 32x4d (make_golden_fpn.py's re-creation, equal to
# ours by tests/test_ch08.c), AdamW (weight decay 1e-4), linear warm-up then cosine decay
# per step over the run, cross-entropy ignoring void, and the augmentation of lib/augment.h
# written again in PyTorch with the same conventions (not the same random numbers):
#   zoom s ~ U(0.75, 1.5), window side round(S / s) at a random place (a window larger than
#   the frame holds the whole frame, the rest padding), flip with probability 1/2,
#   brightness beta ~ U(-0.2, 0.2) and contrast alpha ~ 1 + U(-0.2, 0.2) on v in [0, 1]
#   (clamped), ImageNet normalisation; output pixel (i, j) samples source point
#   y0 + (i + 0.5) * side / S - 0.5 (pixel centres at integers), bilinear with clamped
#   neighbours for the image, nearest (floor(y + 0.5)) for labels; outside the frame:
#   image 0 after normalisation, label ignored.
# Frames are reduced by --factor as lib/dataset.h does (block mean of RGB, rounded; block
# majority label, ties to the lower class). Evaluation renders whole frames to --eval-size
# (bilinear, align_corners=False; labels nearest-exact) and reports mean IoU over the classes
# present in truth or prediction, as chapter 4's metrics do.
#
#     /usr/bin/python3 reference/train_fpn_pytorch.py --data /work/shared/data/CamVid-q92 \
#         --epochs 25 --threads 2 --csv pytorch.csv
#     /usr/bin/python3 reference/train_fpn_pytorch.py --data DIR --quick   # seconds
# CSV: lab 8's train columns, impl=pytorch.
import argparse
import math
import os
import platform
import random
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_fpn import FPN, REDUCED  # noqa: E402

CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence",
           "car", "pedestrian", "bicyclist"]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
VOID, IGNORE = 11, -100
COLUMNS = ("lab,kind,case,impl,pass,k,batch,threads,ms,gflops,peak_bytes,epoch,step,loss,"
           "split,class,iou,lr,seconds,pixel_accuracy")


def load_split(root, split, factor, limit):
    """uint8 RGB frames (N, 3, H, W) and labels (N, H, W) of a split, reduced by factor."""
    names = sorted(n for n in os.listdir(os.path.join(root, split))
                   if n.lower().endswith((".png", ".jpg", ".jpeg")))
    if limit:
        names = names[:limit]
    if not names:
        raise SystemExit(f"{root}/{split}: no PNG or JPEG frame")
    rgb, lab = [], []
    for n in names:
        img = torchvision.io.read_image(os.path.join(root, split, n),
                                        torchvision.io.ImageReadMode.RGB)
        stem = os.path.splitext(n)[0]
        l = torchvision.io.read_image(os.path.join(root, split + "annot", stem + ".png"))[0]
        if factor > 1:
            h, w = img.shape[1] // factor * factor, img.shape[2] // factor * factor
            img = img[:, :h, :w].to(torch.int64).view(3, h // factor, factor, w // factor, factor)
            img = ((img.sum((2, 4)) + factor * factor // 2) // (factor * factor)).to(torch.uint8)
            onehot = F.one_hot(l[:h, :w].to(torch.int64), 12).permute(2, 0, 1).float()
            counts = F.avg_pool2d(onehot[None], factor)[0]
            l = counts.argmax(0).to(torch.uint8)   # the first maximum: ties to the lower class
        rgb.append(img)
        lab.append(l)
    return torch.stack(rgb), torch.stack(lab)


def render(rgb, lab, y0, x0, sh, sw, oh, ow, flip=False, alpha=1.0, beta=0.0):
    """One view of a frame (lib/augment.h's conventions): normalised image (3, oh, ow) and
    labels (oh, ow) with void and padding as IGNORE."""
    H, W = lab.shape
    ys = y0 + (torch.arange(oh, dtype=torch.float64) + 0.5) * sh / oh - 0.5
    xs = x0 + (torch.arange(ow, dtype=torch.float64) + 0.5) * sw / ow - 0.5
    if flip:
        xs = xs.flip(0)
    inside = ((ys >= -0.5) & (ys < H - 0.5))[:, None] & ((xs >= -0.5) & (xs < W - 0.5))[None, :]
    yc, xc = ys.clamp(0, H - 1), xs.clamp(0, W - 1)
    ya, xa = yc.floor().long(), xc.floor().long()
    yb, xb = (ya + 1).clamp(max=H - 1), (xa + 1).clamp(max=W - 1)
    fy, fx = (yc - ya).float()[:, None], (xc - xa).float()[None, :]
    v = rgb.float() / 255
    top = v[:, ya][:, :, xa] * (1 - fx) + v[:, ya][:, :, xb] * fx
    bot = v[:, yb][:, :, xa] * (1 - fx) + v[:, yb][:, :, xb] * fx
    img = top * (1 - fy) + bot * fy
    img = ((alpha * img + beta).clamp(0, 1) - MEAN) / STD
    img = img * inside
    ny = (ys + 0.5).floor().long().clamp(0, H - 1)
    nx = (xs + 0.5).floor().long().clamp(0, W - 1)
    l = lab[ny][:, nx].long()
    l[(l == VOID) | ~inside] = IGNORE
    return img, l


def train_batch(rgb, lab, idx, crop, rnd):
    xs, ls = [], []
    H, W = lab.shape[1:]
    for i in idx:
        s = rnd.uniform(0.75, 1.5)
        side = max(1, round(crop / s))
        y0 = rnd.randint(min(0, H - side), max(0, H - side))
        x0 = rnd.randint(min(0, W - side), max(0, W - side))
        flip = rnd.random() < 0.5
        beta = rnd.uniform(-0.2, 0.2)
        alpha = 1 + rnd.uniform(-0.2, 0.2)
        x, l = render(rgb[i], lab[i], y0, x0, side, side, crop, crop, flip, alpha, beta)
        xs.append(x)
        ls.append(l)
    return torch.stack(xs), torch.stack(ls)


def eval_batch(rgb, lab, idx, eh, ew):
    x = F.interpolate(rgb[idx].float() / 255, size=(eh, ew), mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD
    l = F.interpolate(lab[idx][:, None].float(), size=(eh, ew), mode="nearest-exact")[:, 0].long()
    l[l == VOID] = IGNORE
    return x, l


def evaluate(net, rgb, lab, eh, ew, classes):
    net.eval()
    conf = torch.zeros(classes, classes, dtype=torch.int64)
    with torch.no_grad():
        for b in range(0, len(rgb), 8):
            idx = list(range(b, min(b + 8, len(rgb))))
            x, l = eval_batch(rgb, lab, idx, eh, ew)
            p = net(x).argmax(1)
            keep = l != IGNORE
            conf += torch.bincount(l[keep] * classes + p[keep],
                                   minlength=classes * classes).view(classes, classes)
    net.train()
    tp = conf.diag().double()
    denom = conf.sum(0).double() + conf.sum(1).double() - tp
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))
    present = denom > 0
    mean = iou[present].mean().item() if present.any() else float("nan")
    acc = (tp.sum() / conf.sum().clamp(min=1)).item()
    return iou.tolist(), mean, acc


def lr_at(step, total, warm, peak):
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    return peak * (1 + math.cos(math.pi * t)) / 2


def train_step(net, opt, x, l, lr):
    """One SGD step at learning rate lr: cross-entropy (IGNORE skipped), backward, step.
    Returns the loss tensor. qat_fpn_pytorch.py trains with it too."""
    for g in opt.param_groups:
        g["lr"] = lr
    loss = F.cross_entropy(net(x), l, ignore_index=IGNORE)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def main():
    p = argparse.ArgumentParser(description="Lab 8's FPN recipe in PyTorch")
    p.add_argument("--data", required=True)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--eval-size", default="192x256")
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", default=None, help="T[,E]: the first T train and E val/test frames")
    p.add_argument("--csv", default=None)
    p.add_argument("--quick", action="store_true",
                   help="reduced network, 16 train and 8 val/test frames, crop 64, eval 64x96, 1 epoch")
    a = p.parse_args()
    eh, ew = map(int, a.eval_size.split("x"))
    if a.crop % 32 or eh % 32 or ew % 32:
        raise SystemExit("--crop and --eval-size must be multiples of 32")
    lim = [int(v) for v in a.limit.split(",")] if a.limit else [0, 0]
    if len(lim) == 1:
        lim.append(0)
    if a.quick:
        lim = [lim[0] or 16, lim[1] or 8]
        a.crop, a.epochs = 64, 1
        if a.eval_size == "192x256":
            eh, ew = 64, 96
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rnd = random.Random(a.seed)
    t0 = time.time()
    splits = {s: load_split(a.data, s, a.factor, lim[0] if s == "train" else lim[1])
              for s in ("train", "val", "test")}
    print(f"loaded {', '.join(f'{k} {len(v[0])}' for k, v in splits.items())} frames of "
          f"{tuple(splits['train'][1].shape[1:])} in {time.time() - t0:.1f} s")
    net = FPN(**dict(REDUCED, classes=a.classes)) if a.quick else FPN(a.classes)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    rgb, lab = splits["train"]
    spe = len(rgb) // a.batch
    if spe < 1:
        raise SystemExit(f"the train split has {len(rgb)} frames, fewer than the batch {a.batch}")
    total, warm = spe * a.epochs, spe * min(a.warmup_epochs, a.epochs)
    out = open(a.csv + ".tmp", "w") if a.csv else None

    def row(s):
        if out:
            out.write(s + "\n")
            out.flush()

    if out:
        out.write(f"# program: reference/train_fpn_pytorch.py\n# machine: {platform.node()}\n"
                  f"# torch: {torch.__version__}\n# threads: {torch.get_num_threads()}\n"
                  f"# date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                  f"# training: seed {a.seed}, crop {a.crop}, eval {eh}x{ew}, factor {a.factor}, "
                  f"batch {a.batch}, AdamW lr {a.lr} wd 1e-4, warm-up {a.warmup_epochs}, "
                  f"{'reduced' if a.quick else 'full'} network\n{COLUMNS}\n")
    step, T = 0, torch.get_num_threads()
    for epoch in range(1, a.epochs + 1):
        te = time.time()
        order = torch.randperm(len(rgb)).tolist()
        losses = []
        for b in range(spe):
            ts = time.time()
            x, l = train_batch(rgb, lab, order[b * a.batch:(b + 1) * a.batch], a.crop, rnd)
            lr = lr_at(step, total, warm, a.lr)
            loss = train_step(net, opt, x, l, lr)
            step += 1
            losses.append(loss.item())
            ms = (time.time() - ts) * 1e3
            print(f"  step {step}/{total}: loss {losses[-1]:.4f}, {ms / 1e3:.2f} s", flush=True)
            row(f"lab08,train,camvid_crop{a.crop},pytorch,forward+backward,,{a.batch},{T},{ms:.3f},,,"
                f"{epoch},{step},{losses[-1]:.6f},train,,,{lr:.6g},,")
        _, miou, _ = evaluate(net, *splits["val"], eh, ew, a.classes)
        secs = time.time() - te
        mean_loss = sum(losses) / len(losses)
        print(f"epoch {epoch}: train loss {mean_loss:.4f}, val mIoU {miou:.4f}, {secs:.1f} s")
        row(f"lab08,epoch,camvid_crop{a.crop},pytorch,,,{a.batch},{T},,,,{epoch},{step},"
            f"{mean_loss:.6f},val,mean,{miou:.4f},{lr:.6g},{secs:.2f},")
    for split in ("val", "test"):
        iou, miou, acc = evaluate(net, *splits[split], eh, ew, a.classes)
        print(f"{split}: mean IoU {miou:.4f}, pixel accuracy {acc:.4f}; per class "
              + " ".join(f"{v:.3f}" for v in iou))
        for c, v in enumerate(iou):
            name = CLASSES[c] if c < len(CLASSES) else f"class_{c}"
            row(f"lab08,iou,camvid,pytorch,,,,{T},,,,{a.epochs},,,{split},{name},{v:.4f},,,")
        row(f"lab08,iou,camvid,pytorch,,,,{T},,,,{a.epochs},,,{split},mean,{miou:.4f},,,{acc:.4f}")
    if out:
        out.close()
        os.replace(a.csv + ".tmp", a.csv)
        print(f"wrote {a.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
