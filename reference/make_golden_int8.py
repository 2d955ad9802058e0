#!/usr/bin/python3
"""Golden data for chapter 7's int8 convolution (chapters/07-qat/int8_conv.h).

Needs Debian's python3-torch (PyTorch 1.13), which only /usr/bin/python3 sees. For each
case, PyTorch's converted quantized convolution (torch.ao.nn.quantized.Conv2d, or
torch.nn.intrinsic.quantized.ConvReLU2d with ReLU fused) runs on the 'onednn'
engine, the x86 engine this Debian build has (torch.backends.quantized.supported_engines
is ['qnnpack', 'none', 'onednn']: no 'fbgemm', no 'x86'). Writes
golden/int8_<NNN>_<name>.safetensors holding

    x        U8   N x Cin x H x W       the quantized input's integers
    w        I8   Cout x Cin/g x kh x kw  the weights' integers (per channel, symmetric)
    w_scale  F64  Cout                  the weights' scales (zero points are 0)
    b        F32  Cout                  the float bias (absent without bias)
    y        U8   N x Cout x Ho x Wo    PyTorch's output integers

and in the metadata: stride, padding, dilation, groups, relu, x_scale, x_zero_point,
y_scale, y_zero_point (floats printed with repr, so they read back exactly).

    /usr/bin/python3 reference/make_golden_int8.py          # rewrite the files
    /usr/bin/python3 reference/make_golden_int8.py --check  # rebuild in memory, compare

Inputs use the full u8 range (0..255) unless the case says 7-bit (0..127, PyTorch's
reduce_range). Output is deterministic (a fixed seed per case).
"""
import argparse
import glob
import json
import os
import struct
import sys
import zlib

import torch
import torch.ao.nn.quantized  # noqa: F401 (Conv2d)
import torch.nn.intrinsic.quantized  # noqa: F401 (ConvReLU2d: 1.13 has it here, not in torch.ao)

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
ST = {torch.float32: "F32", torch.float64: "F64", torch.int8: "I8", torch.uint8: "U8"}

# name, N, Cin, Cout, H, W, k, stride, pad, dilation, groups, bias, relu, x_max
CASES = [
    ("3x3_p1",         1, 8, 16, 9, 11, 3, 1, 1, 1, 1, True, False, 255),
    ("3x3_p1_relu",    2, 8, 12, 7, 7, 3, 1, 1, 1, 1, True, True, 255),
    ("1x1",            1, 16, 24, 6, 5, 1, 1, 0, 1, 1, True, False, 255),
    ("5x5_s2_p2",      1, 3, 8, 13, 12, 5, 2, 2, 1, 1, True, True, 255),
    ("3x3_dil2",       1, 6, 10, 10, 9, 3, 1, 2, 2, 1, False, False, 255),
    ("3x3_groups4",    2, 16, 16, 8, 8, 3, 1, 1, 1, 4, True, True, 255),
    ("depthwise",      1, 12, 12, 7, 9, 3, 1, 1, 1, 12, True, False, 255),
    ("7x7_s2_p3",      1, 3, 16, 20, 18, 7, 2, 3, 1, 1, True, True, 255),
    ("3x3_wide_k",     1, 96, 20, 6, 6, 3, 1, 1, 1, 1, True, False, 255),
    ("3x3_7bit",       1, 8, 16, 9, 9, 3, 1, 1, 1, 1, True, True, 127),
]


def st_bytes(tensors, meta):
    """A safetensors image: __metadata__ first, tensors in dict order, header padded to 8."""
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def make_case(case):
    """Runs one case through PyTorch's quantized conv; returns (tensors, metadata)."""
    name, n, cin, cout, h, w, k, stride, pad, dil, groups, bias, relu, x_max = case
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    # weights: float, then per-channel symmetric s8 as PyTorch's per-channel observer does
    wf = torch.randn(cout, cin // groups, k, k, generator=g) * 0.2
    w_scale = (wf.abs().amax(dim=(1, 2, 3)) / 127.0).double()
    qw = torch.quantize_per_channel(wf, w_scale, torch.zeros(cout, dtype=torch.long), 0,
                                    torch.qint8)
    b = torch.randn(cout, generator=g) * 0.5 if bias else None
    # input: integers drawn over the range, so 0 and x_max both occur
    x_scale, x_zp = 0.02 + 0.01 * torch.rand(1, generator=g).item(), int(torch.randint(0, x_max + 1, (1,), generator=g))
    xq_int = torch.randint(0, x_max + 1, (n, cin, h, w), generator=g, dtype=torch.uint8)
    xq_int.view(-1)[0], xq_int.view(-1)[1] = 0, x_max
    qx = torch._make_per_tensor_quantized_tensor(xq_int, x_scale, x_zp)
    # output scale: the float output's range over 255 steps (as a calibrated observer)
    yf = torch.nn.functional.conv2d(qx.dequantize(), qw.dequantize(), b, stride, pad, dil, groups)
    if relu:
        yf = yf.clamp(min=0)
    lo, hi = min(yf.min().item(), 0.0), max(yf.max().item(), 0.0)
    y_scale = (hi - lo) / 255.0
    y_zp = int(min(255, max(0, round(-lo / y_scale))))
    if relu:
        mod = torch.nn.intrinsic.quantized.ConvReLU2d(cin, cout, k, stride, pad, dil, groups,
                                                      bias=bias)
    else:
        mod = torch.ao.nn.quantized.Conv2d(cin, cout, k, stride, pad, dil, groups, bias=bias)
    mod.set_weight_bias(qw, b)
    mod.scale, mod.zero_point = y_scale, y_zp
    y = mod(qx)
    tensors = {"x": xq_int, "w": qw.int_repr(), "w_scale": w_scale}
    if bias:
        tensors["b"] = b.float()
    tensors["y"] = y.int_repr()
    meta = {"stride": str(stride), "padding": str(pad), "dilation": str(dil),
            "groups": str(groups), "relu": str(int(relu)), "x_scale": repr(float(x_scale)),
            "x_zero_point": str(x_zp), "y_scale": repr(float(y.q_scale())),
            "y_zero_point": str(int(y.q_zero_point())), "engine": torch.backends.quantized.engine,
            "torch": torch.__version__}
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files, write nothing")
    args = ap.parse_args()
    if "onednn" not in torch.backends.quantized.supported_engines:
        sys.exit("make_golden_int8.py: this PyTorch has no onednn quantized engine")
    torch.backends.quantized.engine = "onednn"
    torch.set_num_threads(1)
    wanted, bad = set(), 0
    for i, case in enumerate(CASES):
        path = os.path.join(GOLDEN, f"int8_{i:03d}_{case[0]}.safetensors")
        wanted.add(path)
        data = st_bytes(*make_case(case))
        if args.check:
            same = os.path.exists(path) and open(path, "rb").read() == data
            bad += not same
            print(f"{os.path.basename(path)}: {'same' if same else 'DIFFERS'}")
        else:
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
            print(f"wrote {os.path.basename(path)} ({len(data)} bytes)")
    if not args.check:
        for old in glob.glob(os.path.join(GOLDEN, "int8_*.safetensors")):
            if old not in wanted:
                os.remove(old)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
