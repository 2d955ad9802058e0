#!/usr/bin/python3
# Golden data for chapter 1 (direct convolution): PyTorch nn.Conv2d forward.
#
# Needs Debian's python3-torch (PyTorch 1.13), which is installed for the
# system interpreter only: run it as
#
#     /usr/bin/python3 reference/make_golden.py          # (re)write golden/
#     /usr/bin/python3 reference/make_golden.py --check  # re-read and verify
#
# (a bare `python3` may be a pyenv interpreter without torch).
#
# Every case becomes one small file reference/golden/conv_<NNN>_<name>.safetensors
# holding float32 tensors x (N,Cin,H,W), w (Cout,Cin/groups,kh,kw), b (Cout, only
# when bias=True) and y (N,Cout,Ho,Wo), plus string metadata describing the layer.
# x, w, b are drawn as float32; y is computed in float64 from exactly those
# float32 values and then rounded to float32 once. The safetensors container is
# written and read by hand with the standard library (struct + json), so this
# script is also an executable description of the format the C reader parses.
#
# Layout of this file: one small function per case family (padding_cases,
# same_valid_cases, ...) returns a list of Case; compute_case() turns a Case
# into named tensors. A later chapter can add gradient cases by extending
# compute_case (e.g. adding dy/dx/dw/db) without touching the families.

import argparse
import array
import ast
import glob
import json
import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Union

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    sys.exit("make_golden.py needs PyTorch: install Debian's python3-torch and "
             "run it with /usr/bin/python3")

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.join(HERE, "golden")
BASE_SEED = 20240601          # mixed with a CRC of the case name, see case_seed()
CHECK_RTOL = 1e-6             # --check: ||y - ref|| / ||ref|| and max-abs bound
MAX_FILE_BYTES = 100 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024

Pad = Union[int, Tuple[int, int], str]


@dataclass
class Case:
    name: str                  # short name, [a-z0-9_], used in the file name
    description: str           # one line: what the case covers
    n: int
    cin: int
    cout: int
    h: int
    w: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int] = (1, 1)
    padding: Pad = 0           # exactly what is passed to nn.Conv2d
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    extra: Dict[str, str] = field(default_factory=dict)


def pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# --------------------------------------------------------------------------
# Case families
# --------------------------------------------------------------------------

def padding_cases() -> List[Case]:
    """The four padding modes, each with padding 1 and a larger one; tuples."""
    return [
        Case("zeros_p1", "zeros padding 1, 3x3, batch 2", 2, 3, 4, 9, 9, (3, 3), padding=1),
        Case("zeros_p3_5x5", "zeros padding 3 (more than k//2), 5x5, 11x10 input",
             1, 2, 3, 11, 10, (5, 5), padding=3),
        Case("reflect_p1", "reflect padding 1, 3x3", 1, 3, 4, 8, 8, (3, 3), padding=1,
             padding_mode="reflect"),
        Case("reflect_p3_7x7", "reflect padding 3, 7x7 kernel, 8x9 input",
             1, 2, 3, 8, 9, (7, 7), padding=3, padding_mode="reflect"),
        Case("reflect_p_max", "reflect padding = H-1 / W-1 (largest legal), 4x5 input",
             2, 2, 2, 4, 5, (3, 3), padding=(3, 4), padding_mode="reflect"),
        Case("replicate_p1", "replicate padding 1, 3x3", 1, 3, 4, 8, 7, (3, 3), padding=1,
             padding_mode="replicate"),
        Case("replicate_p4", "replicate padding 4 with a 3x3 kernel (output grows)",
             1, 2, 3, 6, 6, (3, 3), padding=4, padding_mode="replicate"),
        Case("circular_p1", "circular padding 1, 3x3", 1, 3, 4, 8, 8, (3, 3), padding=1,
             padding_mode="circular"),
        Case("circular_p3_7x7", "circular padding 3, 7x7 kernel, 5x7 input",
             1, 2, 3, 5, 7, (7, 7), padding=3, padding_mode="circular"),
        Case("circular_p_eq_size", "circular padding = input size (largest legal), 3x4 input",
             1, 2, 2, 3, 4, (3, 3), padding=(3, 4), padding_mode="circular"),
        Case("zeros_tuple_1_2", "zeros padding tuple (1, 2), 3x5 kernel",
             1, 3, 4, 9, 10, (3, 5), padding=(1, 2)),
        Case("reflect_tuple_1_2", "reflect padding tuple (1, 2), 3x3",
             1, 3, 2, 7, 9, (3, 3), padding=(1, 2), padding_mode="reflect"),
        Case("replicate_tuple_0_3", "replicate padding tuple (0, 3): width only",
             1, 2, 3, 6, 5, (3, 3), padding=(0, 3), padding_mode="replicate"),
    ]


def same_valid_cases() -> List[Case]:
    """padding='same' (odd, even/asymmetric, dilated) and padding='valid'."""
    return [
        Case("same_3x3", "padding 'same', odd 3x3 kernel (symmetric pads)",
             1, 3, 4, 9, 8, (3, 3), padding="same"),
        Case("same_4x4_even", "padding 'same', even 4x4 kernel (pads 1 top/left, 2 bottom/right)",
             1, 3, 4, 9, 10, (4, 4), padding="same"),
        Case("same_2x2_reflect", "padding 'same', even 2x2 kernel, reflect (0 top/left, 1 bottom/right)",
             2, 2, 3, 7, 6, (2, 2), padding="same", padding_mode="reflect"),
        Case("same_3x3_dil2_replicate", "padding 'same', 3x3 dilation 2, replicate (pads 2)",
             1, 3, 3, 9, 9, (3, 3), padding="same", dilation=(2, 2), padding_mode="replicate"),
        Case("same_2x3_dil3", "padding 'same', 2x3 kernel dilation (3, 1): asymmetric height pads 1/2",
             1, 2, 4, 10, 8, (2, 3), padding="same", dilation=(3, 1)),
        Case("same_4x2_circular", "padding 'same', even 4x2 kernel, circular",
             1, 3, 2, 8, 7, (4, 2), padding="same", padding_mode="circular"),
        Case("same_5x5_dil2_zeros", "padding 'same', 5x5 dilation 2 (pads 4), no bias",
             1, 2, 3, 11, 12, (5, 5), padding="same", dilation=(2, 2), bias=False),
        Case("valid_3x3", "padding 'valid', 3x3", 2, 3, 4, 9, 9, (3, 3), padding="valid"),
        Case("valid_5x2", "padding 'valid', non-square 5x2 kernel",
             1, 3, 2, 8, 7, (5, 2), padding="valid"),
    ]


def stride_cases() -> List[Case]:
    """Stride 2, 3, non-square, and stride larger than the kernel."""
    return [
        Case("stride2", "stride 2, 3x3 pad 1, odd 15x15 input", 1, 3, 4, 15, 15, (3, 3),
             stride=(2, 2), padding=1),
        Case("stride3", "stride 3, 3x3 pad 1, 16x17 input", 1, 3, 4, 16, 17, (3, 3),
             stride=(3, 3), padding=1),
        Case("stride_2_1", "non-square stride (2, 1), 3x3 pad 1", 1, 3, 4, 10, 9, (3, 3),
             stride=(2, 1), padding=1),
        Case("stride_1_3_k3x2", "non-square stride (1, 3), 3x2 kernel", 1, 2, 3, 8, 14, (3, 2),
             stride=(1, 3), padding=(1, 0)),
        Case("stride4_k2", "stride 4 larger than 2x2 kernel (input rows/cols skipped)",
             1, 3, 4, 13, 15, (2, 2), stride=(4, 4)),
        Case("stride3_k1", "stride 3 larger than 1x1 kernel, padding 1", 1, 4, 5, 10, 11, (1, 1),
             stride=(3, 3), padding=1),
    ]


def dilation_cases() -> List[Case]:
    return [
        Case("dil2", "dilation 2, 3x3 pad 2", 1, 3, 4, 10, 9, (3, 3), padding=2, dilation=(2, 2)),
        Case("dil_2_3", "dilation (2, 3), 3x3 pad (2, 3)", 1, 3, 4, 11, 13, (3, 3),
             padding=(2, 3), dilation=(2, 3)),
        Case("dil3_k2_valid", "dilation 3, 2x2 kernel, no padding", 1, 2, 3, 9, 8, (2, 2),
             dilation=(3, 3)),
        Case("dil2_stride2", "dilation 2 with stride 2, 3x3 pad 1", 2, 3, 3, 12, 11, (3, 3),
             stride=(2, 2), padding=1, dilation=(2, 2)),
    ]


def group_cases() -> List[Case]:
    """groups: 2, 3, ResNeXt-style, depthwise, depthwise multiplier."""
    return [
        Case("groups2", "groups 2 (Cin 4 -> Cout 6)", 1, 4, 6, 8, 9, (3, 3), padding=1, groups=2),
        Case("groups2_cout_lt_cin", "groups 2, fewer outputs than inputs per group (6 -> 4)",
             2, 6, 4, 7, 7, (3, 3), padding=1, groups=2),
        Case("groups3", "groups 3 (Cin 6 -> Cout 9), 5x5 pad 2", 1, 6, 9, 9, 8, (5, 5),
             padding=2, groups=3),
        Case("resnext_g32_c64", "ResNeXt-style: Cin=Cout=64, groups 32 (2 ch/group), 3x3 pad 1",
             1, 64, 64, 8, 8, (3, 3), padding=1, groups=32),
        Case("resnext_16x4_s2", "ResNeXt-style: 16 groups of 4 channels (64 -> 64), stride 2, no bias",
             1, 64, 64, 7, 7, (3, 3), stride=(2, 2), padding=1, groups=16, bias=False),
        Case("groups4x4_c16", "4 groups of 4 channels (16 -> 16), batch 3", 3, 16, 16, 6, 5, (3, 3),
             padding=1, groups=4),
        Case("depthwise_c8", "depthwise: groups = Cin = Cout = 8, 3x3 pad 1",
             1, 8, 8, 9, 9, (3, 3), padding=1, groups=8),
        Case("depthwise_s2", "depthwise 3x3 stride 2 (MobileNet), groups = 6",
             2, 6, 6, 11, 10, (3, 3), stride=(2, 2), padding=1, groups=6),
        Case("depthwise_5x5_reflect", "depthwise 5x5 reflect pad 2, groups = 4",
             1, 4, 4, 8, 9, (5, 5), padding=2, groups=4, padding_mode="reflect"),
        Case("depthwise_mult2", "depthwise multiplier 2: Cout = 2*Cin = 10, groups = Cin = 5",
             1, 5, 10, 8, 8, (3, 3), padding=1, groups=5),
    ]


def pointwise_bias_cases() -> List[Case]:
    """1x1 convolutions and bias-free layers."""
    return [
        Case("1x1", "1x1, stride 1 (a matrix product per pixel)", 2, 8, 12, 7, 6, (1, 1)),
        Case("1x1_s2", "1x1, stride 2 (ResNet downsample shortcut), no bias", 1, 8, 16, 9, 9, (1, 1),
             stride=(2, 2), bias=False),
        Case("1x1_groups4", "1x1 grouped (ShuffleNet-style), groups 4", 1, 8, 8, 5, 5, (1, 1),
             groups=4),
        Case("nobias_3x3", "no bias, 3x3 pad 1", 1, 3, 5, 8, 8, (3, 3), padding=1, bias=False),
    ]


def shape_cases() -> List[Case]:
    """Odd/prime/non-square shapes, batches, tiny inputs, the ResNet stem."""
    return [
        Case("resnet_stem", "ResNet stem: 7x7 stride 2 pad 3, 3 -> 8, 32x32", 1, 3, 8, 32, 32, (7, 7),
             stride=(2, 2), padding=3),
        Case("k1x3", "non-square 1x3 kernel, pad (0, 1)", 1, 3, 4, 6, 9, (1, 3), padding=(0, 1)),
        Case("k3x1", "non-square 3x1 kernel, pad (1, 0)", 1, 3, 4, 9, 6, (3, 1), padding=(1, 0)),
        Case("k5x2_pad", "non-square 5x2 kernel, pad (2, 1)", 1, 2, 3, 9, 8, (5, 2), padding=(2, 1)),
        Case("input_7x13", "non-square 7x13 input, 3x3 pad 1", 1, 3, 4, 7, 13, (3, 3), padding=1),
        Case("batch1_single_channel", "batch 1, Cin = Cout = 1", 1, 1, 1, 10, 10, (3, 3), padding=1),
        Case("batch3", "batch 3, 3x3 pad 1", 3, 3, 4, 8, 8, (3, 3), padding=1),
        Case("prime_13x17", "prime sizes: 13x17 input, Cin 5 -> Cout 7, 3x3 pad 1",
             1, 5, 7, 13, 17, (3, 3), padding=1),
        Case("prime_batch3_5x5", "batch 3, prime 11x7 input, 5x5 pad 2, Cin 3 -> Cout 5",
             3, 3, 5, 11, 7, (5, 5), padding=2),
        Case("kernel_gt_input", "5x5 kernel larger than a 3x3 input, padding 1 (1x1 output)",
             1, 2, 3, 3, 3, (5, 5), padding=1),
        Case("kernel_gt_input_pad", "5x7 kernel on a 2x4 input, pad (2, 3) keeps 2x4",
             2, 3, 2, 2, 4, (5, 7), padding=(2, 3)),
        Case("input_1x1", "1x1 input, 3x3 kernel pad 1 (only the centre tap hits)",
             2, 4, 3, 1, 1, (3, 3), padding=1),
        Case("output_1x1", "valid conv whose output is 1x1 (kernel = input size)",
             2, 3, 4, 5, 5, (5, 5)),
    ]


def combination_cases() -> List[Case]:
    """Several features at once: where index arithmetic goes wrong."""
    return [
        Case("combo_reflect_s2_d2_g2", "reflect pad 2 + stride 2 + dilation 2 + groups 2",
             2, 4, 6, 11, 12, (3, 3), stride=(2, 2), padding=2, dilation=(2, 2), groups=2,
             padding_mode="reflect"),
        Case("combo_circular_s23_d12_g4", "circular pad (1, 2) + stride (2, 3) + dilation (1, 2) + groups 4, no bias",
             1, 8, 4, 9, 13, (3, 3), stride=(2, 3), padding=(1, 2), dilation=(1, 2), groups=4,
             bias=False, padding_mode="circular"),
        Case("combo_replicate_s3_5x3_dwm2", "replicate pad (2, 1) + stride 3 + 5x3 kernel + depthwise multiplier 2",
             1, 3, 6, 13, 10, (5, 3), stride=(3, 3), padding=(2, 1), groups=3,
             padding_mode="replicate"),
        Case("combo_zeros_s2_d2_g4_b3", "zeros pad 2 + stride 2 + dilation 2 + groups 4 + batch 3",
             3, 8, 8, 10, 9, (3, 3), stride=(2, 2), padding=2, dilation=(2, 2), groups=4),
        Case("combo_same_reflect_even_d2_g2", "'same' + reflect + even 4x2 kernel + dilation (1, 3) + groups 2",
             1, 4, 4, 9, 11, (4, 2), padding="same", dilation=(1, 3), groups=2,
             padding_mode="reflect"),
        Case("combo_stride_gt_k_dil_pad", "stride 3 > 2x2 kernel + dilation 2 + pad 1, 7x13 input",
             2, 3, 4, 7, 13, (2, 2), stride=(3, 3), padding=1, dilation=(2, 2)),
    ]


FAMILIES = [padding_cases, same_valid_cases, stride_cases, dilation_cases, group_cases,
            pointwise_bias_cases, shape_cases, combination_cases]


def all_cases() -> List[Case]:
    cases = [c for fam in FAMILIES for c in fam()]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


# --------------------------------------------------------------------------
# Padding arithmetic (what the C library must reproduce)
# --------------------------------------------------------------------------

def per_side_pads(c: Case) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) as PyTorch 1.13 applies them."""
    kh, kw = c.kernel
    dh, dw = c.dilation
    if c.padding == "valid":
        return (0, 0, 0, 0)
    if c.padding == "same":
        out = []
        for d, k in ((dh, kh), (dw, kw)):
            total = d * (k - 1)
            lo = total // 2
            out += [lo, total - lo]          # the extra one goes bottom/right
        return tuple(out)
    ph, pw = pair(c.padding)
    return (ph, ph, pw, pw)


def output_size(c: Case) -> Tuple[int, int]:
    t, b, l, r = per_side_pads(c)
    kh, kw = c.kernel
    sh, sw = c.stride
    dh, dw = c.dilation
    ho = (c.h + t + b - dh * (kh - 1) - 1) // sh + 1
    wo = (c.w + l + r - dw * (kw - 1) - 1) // sw + 1
    return ho, wo


def padding_spec(p: Pad) -> str:
    return p if isinstance(p, str) else str(p)


def parse_padding_spec(s: str) -> Pad:
    return s if s in ("same", "valid") else ast.literal_eval(s)


def validate(c: Case) -> None:
    assert c.cin % c.groups == 0 and c.cout % c.groups == 0, c.name
    if c.padding == "same":
        assert c.stride == (1, 1), f"{c.name}: 'same' needs stride 1"
    t, b, l, r = per_side_pads(c)
    if c.padding_mode == "reflect":
        assert max(t, b) < c.h and max(l, r) < c.w, f"{c.name}: reflect pad must be < size"
    if c.padding_mode == "circular":
        assert max(t, b) <= c.h and max(l, r) <= c.w, f"{c.name}: circular pad must be <= size"
    ho, wo = output_size(c)
    assert ho >= 1 and wo >= 1, f"{c.name}: empty output"


# --------------------------------------------------------------------------
# Computation
# --------------------------------------------------------------------------

def case_seed(c: Case) -> int:
    # Depends only on the case's name, so adding or reordering cases leaves
    # the data of every other case unchanged.
    return BASE_SEED ^ zlib.crc32(c.name.encode())


def make_module(c: Case, pad: Pad, mode: str) -> nn.Conv2d:
    return nn.Conv2d(c.cin, c.cout, c.kernel, stride=c.stride, padding=pad,
                     dilation=c.dilation, groups=c.groups, bias=c.bias,
                     padding_mode=mode, dtype=torch.float64)


def reference_forward(c: Case, x: torch.Tensor, w: torch.Tensor, b) -> torch.Tensor:
    """y in float64 from the given (float32) values, via nn.Conv2d itself."""
    conv = make_module(c, c.padding, c.padding_mode)
    with torch.no_grad():
        conv.weight.copy_(w.double())
        if c.bias:
            conv.bias.copy_(b.double())
        return conv(x.double())


def explicit_pad_forward(c: Case, x, w, b, pads) -> torch.Tensor:
    """F.pad with per-side pads (top, bottom, left, right), then conv pad 0."""
    t, bo, l, r = pads
    mode = "constant" if c.padding_mode == "zeros" else c.padding_mode
    xp = F.pad(x.double(), (l, r, t, bo), mode=mode)
    return F.conv2d(xp, w.double(), b.double() if c.bias else None,
                    stride=c.stride, padding=0, dilation=c.dilation, groups=c.groups)


def check_pads(c: Case, x, w, b, y64) -> None:
    """Prove the per-side pads in the metadata reproduce nn.Conv2d exactly."""
    pads = per_side_pads(c)
    y2 = explicit_pad_forward(c, x, w, b, pads)
    assert y2.shape == y64.shape == (c.n, c.cout) + output_size(c), (c.name, y2.shape, y64.shape)
    assert torch.allclose(y2, y64, rtol=1e-12, atol=1e-12), f"{c.name}: per-side pads disagree"
    t, bo, l, r = pads
    if (t, l) != (bo, r):
        # Asymmetric pads: the mirrored choice must NOT match, so the check has teeth.
        y3 = explicit_pad_forward(c, x, w, b, (bo, t, r, l))
        assert not torch.allclose(y3, y64, rtol=1e-6, atol=1e-9), \
            f"{c.name}: swapped asymmetric pads also match (test has no teeth)"


def compute_case(c: Case) -> Dict[str, torch.Tensor]:
    validate(c)
    g = torch.Generator().manual_seed(case_seed(c))

    def uniform(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1

    kh, kw = c.kernel
    x = uniform(c.n, c.cin, c.h, c.w)
    w = uniform(c.cout, c.cin // c.groups, kh, kw)
    b = uniform(c.cout) if c.bias else None
    y64 = reference_forward(c, x, w, b)
    check_pads(c, x, w, b, y64)
    out = {"x": x, "w": w}
    if c.bias:
        out["b"] = b
    out["y"] = y64.float()
    return out


def metadata(c: Case) -> Dict[str, str]:
    t, b, l, r = per_side_pads(c)
    kh, kw = c.kernel
    md = {
        "in_channels": c.cin, "out_channels": c.cout,
        "kernel_h": kh, "kernel_w": kw,
        "stride_h": c.stride[0], "stride_w": c.stride[1],
        "pad_top": t, "pad_bottom": b, "pad_left": l, "pad_right": r,
        "dilation_h": c.dilation[0], "dilation_w": c.dilation[1],
        "groups": c.groups, "bias": "1" if c.bias else "0",
        "padding_mode": c.padding_mode,
        "padding_spec": padding_spec(c.padding),
        "description": c.description,
        "torch_version": torch.__version__,
    }
    md.update(c.extra)
    return {k: str(v) for k, v in md.items()}


# --------------------------------------------------------------------------
# safetensors, by hand
# --------------------------------------------------------------------------

def f32_bytes(t: torch.Tensor) -> bytes:
    a = array.array("f", t.detach().contiguous().reshape(-1).tolist())
    assert a.itemsize == 4
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], md: Dict[str, str]) -> int:
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():          # dict order = header order = data order
        data = f32_bytes(t)
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = md
    hj = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    hj += b" " * (-len(hj) % 8)
    blob = struct.pack("<Q", len(hj)) + hj + b"".join(blobs)
    with open(path + ".tmp", "wb") as f:
        f.write(blob)
    os.replace(path + ".tmp", path)
    return len(blob)


def read_safetensors(path: str):
    """Strict reader: returns (tensors, metadata, header_order)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    assert hlen % 8 == 0, f"{path}: header length {hlen} not a multiple of 8"
    header = json.loads(raw[8:8 + hlen].decode())
    md = header.pop("__metadata__")
    assert all(isinstance(v, str) for v in md.values()), f"{path}: non-string metadata"
    data = raw[8 + hlen:]
    tensors, expect = {}, 0
    for name, info in header.items():
        assert info["dtype"] == "F32", (path, name)
        b, e = info["data_offsets"]
        assert b == expect, f"{path}: {name} not contiguous"
        count = 1
        for s in info["shape"]:
            count *= s
        assert e - b == 4 * count, f"{path}: {name} size mismatch"
        a = array.array("f")
        a.frombytes(data[b:e])
        if sys.byteorder != "little":
            a.byteswap()
        tensors[name] = torch.tensor(a.tolist(), dtype=torch.float32).reshape(info["shape"])
        expect = e
    assert expect == len(data), f"{path}: trailing bytes"
    return tensors, md, list(header.keys())


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def file_name(i: int, c: Case) -> str:
    return f"conv_{i:03d}_{c.name}.safetensors"


def generate() -> None:
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    cases = all_cases()
    wanted = {file_name(i, c) for i, c in enumerate(cases)}
    for old in glob.glob(os.path.join(GOLDEN_DIR, "conv_*.safetensors")):
        if os.path.basename(old) not in wanted:
            os.remove(old)                     # stale file from a renamed case
    total = 0
    for i, c in enumerate(cases):
        size = write_safetensors(os.path.join(GOLDEN_DIR, file_name(i, c)),
                                 compute_case(c), metadata(c))
        assert size < MAX_FILE_BYTES, f"{c.name}: {size} bytes is too big"
        total += size
    assert total < MAX_TOTAL_BYTES, f"golden data is {total} bytes, too big"
    print(f"wrote {len(cases)} cases, {total} bytes, to {GOLDEN_DIR}")


def check() -> int:
    paths = sorted(glob.glob(os.path.join(GOLDEN_DIR, "conv_*.safetensors")))
    expected = {file_name(i, c) for i, c in enumerate(all_cases())}
    failures, total = 0, 0
    rows = []
    for p in paths:
        fname = os.path.basename(p)
        total += os.path.getsize(p)
        t, md, order = read_safetensors(p)
        bias = md["bias"] == "1"
        head = ["x", "w", "b", "y"] if bias else ["x", "w", "y"]
        assert order[:len(head)] == head, (fname, order)   # later chapters may append
        x, w, y = t["x"], t["w"], t["y"]
        b = t.get("b")
        n, cin, h, wd = x.shape
        cout = int(md["out_channels"])
        kh, kw = int(md["kernel_h"]), int(md["kernel_w"])
        groups = int(md["groups"])
        stride = (int(md["stride_h"]), int(md["stride_w"]))
        dil = (int(md["dilation_h"]), int(md["dilation_w"]))
        pads = tuple(int(md[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
        assert cin == int(md["in_channels"]) and tuple(w.shape) == (cout, cin // groups, kh, kw), fname
        c = Case(fname, md["description"], n, cin, cout, h, wd, (kh, kw), stride,
                 parse_padding_spec(md["padding_spec"]), dil, groups, bias, md["padding_mode"])
        assert per_side_pads(c) == pads, f"{fname}: metadata pads disagree with padding_spec"
        ref = reference_forward(c, x, w, b)                 # nn.Conv2d, float64
        ref2 = explicit_pad_forward(c, x, w, b, pads)      # from the metadata pads alone
        err = []
        for r in (ref, ref2):
            assert tuple(y.shape) == tuple(r.shape), (fname, y.shape, r.shape)
            d = y.double() - r
            err.append(max((d.norm() / r.norm()).item(),
                           (d.abs().max() / r.abs().max()).item()))
        e = max(err)
        ok = e <= CHECK_RTOL and fname in expected
        failures += not ok
        rows.append((fname, e, "ok" if ok else "FAIL", md["description"]))
    if not rows:
        print(f"no golden files in {GOLDEN_DIR}: run /usr/bin/python3 reference/make_golden.py")
        return 1
    return print_check_report(rows, expected, paths, total, failures,
                              "(max(||y-ref||/||ref||, max|y-ref|/max|ref|), ref = float64 "
                              "nn.Conv2d and F.pad+conv2d from metadata pads)")


def print_check_report(rows, expected, paths, total, failures, bound_text) -> int:
    """Prints --check's table (file, error, status, description), the missing files and the
    summary line; returns 1 if any file failed or is missing, else 0."""
    w0 = max(len(r[0]) for r in rows)
    print(f"{'file':<{w0}}  {'rel.err':>8}  {'':4}  description")
    for fname, e, status, desc in rows:
        print(f"{fname:<{w0}}  {e:8.1e}  {status:4}  {desc}")
    missing = expected - {os.path.basename(p) for p in paths}
    for m in sorted(missing):
        print(f"MISSING {m}")
    failures += len(missing)
    print(f"\n{len(rows)} files, {total} bytes, bound {CHECK_RTOL:g} {bound_text}: "
          f"{len(rows) - failures} ok, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__ or "Write PyTorch golden conv data.")
    ap.add_argument("--check", action="store_true",
                    help="re-read every golden file and verify y against PyTorch (float64)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    # 1.13 warns that 'same' with an even kernel makes a padded copy: expected here.
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
    if args.check:
        return check()
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
