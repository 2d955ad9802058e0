#!/usr/bin/python3
# Golden data for chapter 8: the FPN with a ResNeXt encoder, as segmentation_models_pytorch
# (smp) builds it, re-created here in a few dozen lines on torchvision's Bottleneck (smp is
# not packaged in Debian). Run with Debian's PyTorch 1.13 + torchvision 0.14:
#
#     /usr/bin/python3 reference/make_golden_fpn.py            # write golden/fpn_*.safetensors
#
# Two proofs in this script before anything is written:
#   1. at full size (ResNeXt-50 32x4d, 12 classes) our encoder's state dict has exactly the
#      names and shapes of torchvision's resnext50_32x4d, in the same order;
#   2. the decoder's names are smp's (decoder.p5, decoder.p4.skip_conv,
#      decoder.seg_blocks.S.block.B.block.{0,1}, segmentation_head.0), checked against a
#      list written out by hand from smp's source.
# Files written:
#   fpn_resnext50_state_dict.txt  the full-size state dict (12 classes): "name d0,d1,..."
#                                 per line, in PyTorch's order;
#   fpn_reduced_state.safetensors a width-reduced variant (same structure, fewer channels
#                                 and blocks) with random weights AND random BatchNorm
#                                 running statistics: a plain state dict;
#   fpn_reduced_io.safetensors    its input x, the output in evaluation mode (y_eval), the
#                                 output in training mode with dropout off (y_train: batch
#                                 statistics), a random upstream gradient dy, the gradient
#                                 of sum(y_train * dy) for every parameter (grad.<name>),
#                                 and the running statistics after that forward
#                                 (after.<name>).
# (the reduced state dict keeps num_batches_tracked, I64 as PyTorch stores it: loading
# must accept and skip it.)
import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import Bottleneck

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")


class Encoder(nn.Module):
    """torchvision's ResNet stem and four stages of Bottleneck blocks, with the channel
    counts as parameters (torchvision fixes planes to 64/128/256/512)."""

    def __init__(self, stem, planes, blocks, groups, width_per_group):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, (p, n) in enumerate(zip(planes, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(n):
                down = None
                if b == 0 and (stride != 1 or inplanes != p * Bottleneck.expansion):
                    down = nn.Sequential(
                        nn.Conv2d(inplanes, p * Bottleneck.expansion, 1, stride, bias=False),
                        nn.BatchNorm2d(p * Bottleneck.expansion))
                layers.append(Bottleneck(inplanes, p, stride if b == 0 else 1, down,
                                         groups=groups, base_width=width_per_group))
                inplanes = p * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = [stem] + [p * Bottleneck.expansion for p in planes]

    def forward(self, x):
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


class ConvGNReLU(nn.Module):
    """smp's Conv3x3GNReLU: conv 3x3 (no bias), GroupNorm(32), ReLU, optional x2 bilinear."""

    def __init__(self, cin, cout, upsample):
        super().__init__()
        self.upsample = upsample
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                                   nn.GroupNorm(32, cout), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.block(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True) \
            if self.upsample else x


class SegBlock(nn.Module):
    def __init__(self, cin, cout, n_up):
        super().__init__()
        blocks = [ConvGNReLU(cin, cout, bool(n_up))]
        blocks += [ConvGNReLU(cout, cout, True) for _ in range(1, n_up)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x):
        return self.block(x)


class FPNBlock(nn.Module):
    def __init__(self, pyramid, skip):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip, pyramid, 1)

    def forward(self, x, skip):
        return F.interpolate(x, scale_factor=2.0, mode="nearest") + self.skip_conv(skip)


class Decoder(nn.Module):
    def __init__(self, enc_ch, pyramid, seg, dropout):
        super().__init__()
        self.p5 = nn.Conv2d(enc_ch[-1], pyramid, 1)
        self.p4 = FPNBlock(pyramid, enc_ch[-2])
        self.p3 = FPNBlock(pyramid, enc_ch[-3])
        self.p2 = FPNBlock(pyramid, enc_ch[-4])
        self.seg_blocks = nn.ModuleList([SegBlock(pyramid, seg, n) for n in [3, 2, 1, 0]])
        self.dropout = nn.Dropout2d(p=dropout, inplace=True)

    def forward(self, c2, c3, c4, c5):
        p5 = self.p5(c5)
        p4 = self.p4(p5, c4)
        p3 = self.p3(p4, c3)
        p2 = self.p2(p3, c2)
        s = [b(p) for b, p in zip(self.seg_blocks, [p5, p4, p3, p2])]
        return self.dropout(torch.stack(s).sum(dim=0))


class FPN(nn.Module):
    def __init__(self, classes, stem=64, planes=(64, 128, 256, 512), blocks=(3, 4, 6, 3),
                 groups=32, width_per_group=4, pyramid=256, seg=128, dropout=0.2):
        super().__init__()
        self.encoder = Encoder(stem, planes, blocks, groups, width_per_group)
        self.decoder = Decoder(self.encoder.out_channels, pyramid, seg, dropout)
        self.segmentation_head = nn.Sequential(
            nn.Conv2d(seg, classes, 1),
            nn.UpsamplingBilinear2d(scale_factor=4))

    def forward(self, x):
        return self.segmentation_head(self.decoder(*self.encoder(x)))


def smp_decoder_names():
    """The decoder and head parameter names of smp's FPN, written out from its source."""
    names = ["decoder.p5.weight", "decoder.p5.bias"]
    for p in ("p4", "p3", "p2"):
        names += [f"decoder.{p}.skip_conv.weight", f"decoder.{p}.skip_conv.bias"]
    for s, n_up in enumerate([3, 2, 1, 0]):
        for b in range(max(n_up, 1)):
            pre = f"decoder.seg_blocks.{s}.block.{b}.block"
            names += [f"{pre}.0.weight", f"{pre}.1.weight", f"{pre}.1.bias"]
    return names + ["segmentation_head.0.weight", "segmentation_head.0.bias"]


def check_full_size():
    ours = FPN(12)
    tv = torchvision.models.resnext50_32x4d()
    tv_sd = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    enc = {k[len("encoder."):]: v.shape for k, v in ours.state_dict().items()
           if k.startswith("encoder.")}
    assert list(enc) == list(tv_sd), "encoder names differ from torchvision's resnext50_32x4d"
    assert all(enc[k] == tv_sd[k] for k in enc), "encoder shapes differ from torchvision's"
    dec = [k for k, _ in ours.named_parameters() if not k.startswith("encoder.")]
    assert dec == smp_decoder_names(), f"decoder names differ from smp's: {dec}"
    n = sum(p.numel() for p in ours.parameters())
    print(f"full size: encoder == torchvision resnext50_32x4d ({len(enc)} tensors), "
          f"decoder names == smp's, {n} parameters")
    return n


def write_safetensors(path, tensors, meta):
    codes = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
    os.replace(path + ".tmp", path)


REDUCED = dict(classes=5, stem=8, planes=(4, 8, 16, 32), blocks=(1, 2, 1, 1), groups=4,
               width_per_group=16, pyramid=16, seg=32)


def make_reduced():
    torch.manual_seed(20261129)
    m = FPN(dropout=0.0, **REDUCED)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 3, 32, 64) * 4 - 2
    state = {k: v.clone() for k, v in m.state_dict().items()}
    m.eval()
    with torch.no_grad():
        y_eval = m(x)
    m.train()
    y = m(x)
    dy = torch.rand_like(y) * 2 - 1
    (y * dy).sum().backward()
    out = {"x": x, "y_eval": y_eval, "y_train": y.detach(), "dy": dy}
    for k, p in m.named_parameters():
        out["grad." + k] = p.grad
    for k, v in m.state_dict().items():
        if "running" in k:
            out["after." + k] = v
    meta = {k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in REDUCED.items()}
    meta["torch_version"] = torch.__version__
    return state, out, meta


def write_names(path):
    """The full-size state dict's names and shapes, one "name d0,d1,..." line each."""
    sd = FPN(12).state_dict()
    with open(path + ".tmp", "w") as f:
        for k, v in sd.items():
            f.write(f"{k} {','.join(map(str, v.shape))}\n")
    os.replace(path + ".tmp", path)
    return len(sd)


def main():
    check_full_size()
    state, io, meta = make_reduced()
    os.makedirs(GOLDEN, exist_ok=True)
    for name, tensors in (("fpn_reduced_state", state), ("fpn_reduced_io", io)):
        path = os.path.join(GOLDEN, name + ".safetensors")
        write_safetensors(path, tensors, meta)
        print(f"wrote {path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
    path = os.path.join(GOLDEN, "fpn_resnext50_state_dict.txt")
    print(f"wrote {path}: {write_names(path)} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
