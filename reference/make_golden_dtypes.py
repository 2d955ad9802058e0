#!/usr/bin/python3
"""Golden data for the library's dtypes (lib/dtype.h) and its safetensors reader/writer.

Needs Debian's python3-torch (PyTorch 1.13), which only /usr/bin/python3 sees. Writes:

  golden/dtype_round.safetensors    float32 values chosen to be hard (ties, subnormals,
                                    overflow, infinities, NaNs) and what torch's
                                    x.to(float16) / x.to(bfloat16) make of them; every
                                    float16 NaN and some bfloat16 NaNs with torch's
                                    .float() of them.
  golden/dtype_tensors.safetensors  one tensor of every dtype the library reads (F32, F16,
                                    BF16, F64, I8, U8, I32, I64), as a PyTorch state dict
                                    would hold them (a BatchNorm2d's buffers with its I64
                                    num_batches_tracked, per-channel and per-tensor
                                    quantized weights with their scales and zero points,
                                    a 0/1 mask, a scalar, an empty tensor), each
                                    non-I64 tensor with a float64 twin NAME.f64 holding
                                    torch's .double() of it.

    /usr/bin/python3 reference/make_golden_dtypes.py          # rewrite both files
    /usr/bin/python3 reference/make_golden_dtypes.py --check  # rebuild in memory, compare bytes

The container is written by hand (json + struct): 8-byte little-endian header length, a
compact JSON header with __metadata__ first and keys in the order dtype, shape,
data_offsets, padded with spaces to a multiple of 8, then the data in header order. That
is the layout cr_st_writer_save writes, so the C test can check that reading every tensor
typed and writing it again reproduces dtype_tensors.safetensors byte for byte. Output is
deterministic (fixed seeds).
"""
import argparse
import json
import os
import random
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")

ST_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int8: "I8", torch.uint8: "U8", torch.int32: "I32", torch.int64: "I64",
}


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw little-endian bytes of t (C order)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: move the bits as int16
        t = t.view(torch.int16)
    a = t.numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def safetensors_bytes(tensors, metadata) -> bytes:
    """A safetensors file image: tensors in dict order, __metadata__ first."""
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def f32_from_bits(bits) -> torch.Tensor:
    return torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32).copy())


def f16_from_bits(bits) -> torch.Tensor:
    return torch.from_numpy(np.array(bits, dtype=np.uint16).view(np.float16).copy())


def bits_of(t: torch.Tensor):
    """The bit patterns of a float32/float16/bfloat16 tensor as Python ints."""
    if t.dtype == torch.float32:
        return t.numpy().view(np.uint32).tolist()
    return [v & 0xFFFF for v in t.view(torch.int16).tolist()]


# --------------------------------------------------------------------------
# dtype_round: rounding float32 to float16 and bfloat16
# --------------------------------------------------------------------------

def special_values():
    """Edges of both formats, written as float32 bit patterns."""
    v = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000,            # +-0, +-inf
         0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF,  # NaNs: quiet, signalling
         0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00001, 0x7F808000, 0x7F810000,
         0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x00000001, 0x807FFFFF,  # float32 max, min normal, subnormals
         0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x7F7EFFFF,              # bfloat16 overflow edge
         0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,  # 65504, 65519.99, 65520 (tie), 65536
         0xC77FF000, 0x38800000, 0x387FFFFF, 0x387FF000, 0x387FE000,  # half min normal 2^-14 and below
         0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF, 0x33C00000,  # 2^-24, 2^-25 (tie), 3*2^-25
         0x34400000, 0x34200000, 0x34600000, 0xB3000000, 0xB3000001,  # ties among subnormals
         0x3F800000, 0x3F801000, 0x3F803000, 0x3F808000, 0x3F818000]  # 1 and ties at 1
    return v


def half_ties(rng, n):
    """Midpoints between neighbouring float16 values (exact in float32), and +-1 ulp."""
    out = []
    for _ in range(n):
        h = rng.randrange(0, 0x7BFF)  # a finite half below the largest, so h+1 is finite
        lo, hi = f16_from_bits([h, h + 1]).float().double().tolist()
        mid = torch.tensor([(lo + hi) / 2], dtype=torch.float64).float()
        b = bits_of(mid)[0] | (rng.randrange(2) << 31)
        out += [b, b + 1, b - 1 if b & 0x7FFFFFFF else b]
    return out


def bf16_ties(rng, n):
    """float32 values halfway between neighbouring bfloat16 values, and +-1 ulp."""
    out = []
    for _ in range(n):
        b = (rng.randrange(0, 0x7F7F) << 16) | 0x8000 | (rng.randrange(2) << 31)
        out += [b, b + 1, b - 1]
    return out


def round_values():
    rng = random.Random(20261129)
    v = special_values()
    v += half_ties(rng, 400)
    v += bf16_ties(rng, 400)
    v += [rng.getrandbits(32) for _ in range(800)]                        # anything
    for _ in range(900):                                                  # float16's range
        e = rng.randrange(127 - 26, 127 + 17)
        v.append(rng.getrandbits(1) << 31 | e << 23 | rng.getrandbits(23))
    v += [rng.getrandbits(1) << 31 | rng.getrandbits(23) for _ in range(100)]  # float32 subnormals
    v += [0x7F800000 | rng.getrandbits(1) << 31 | (rng.getrandbits(23) or 1) for _ in range(60)]
    return v


def dtype_round():
    x = f32_from_bits(round_values())
    x16, xbf = x.to(torch.float16), x.to(torch.bfloat16)
    # The scalar path (c10::Half / c10::BFloat16 from one float) must agree with the
    # tensor path except for NaN -> bfloat16 (0x7FC0 there, 0xFFFF here).
    for i in range(0, x.numel(), 37):
        xi = float(x[i])
        assert bits_of(torch.tensor([xi], dtype=torch.float16))[0] == bits_of(x16[i:i + 1])[0]
        if xi == xi:
            assert bits_of(torch.tensor([xi], dtype=torch.bfloat16))[0] == bits_of(xbf[i:i + 1])[0]
    scalar_nan_bf16 = bits_of(torch.tensor(float("nan"), dtype=torch.bfloat16).reshape(1))[0]
    h_nan = f16_from_bits([s | 0x7C00 | m for s in (0, 0x8000) for m in range(1, 0x400)])
    bf_nan = torch.from_numpy(np.array([0x7F81, 0x7FC0, 0x7FFF, 0xFF81, 0xFFC1, 0xFFFF],
                                       dtype=np.uint16).view(np.int16).copy()).view(torch.bfloat16)
    tensors = {"x": x, "x_f16": x16, "x_bf16": xbf, "h_nan": h_nan, "h_nan_f32": h_nan.float(),
               "bf_nan": bf_nan, "bf_nan_f32": bf_nan.float()}
    md = {"description": "float32 -> float16/bfloat16 by x.to(dtype) on a contiguous tensor; "
                         "float16/bfloat16 NaNs -> float32 by .float()",
          "scalar_nan_to_bf16": "0x%04X" % scalar_nan_bf16,
          "torch_version": torch.__version__}
    return tensors, md


# --------------------------------------------------------------------------
# dtype_tensors: one tensor of every dtype, as a state dict holds them
# --------------------------------------------------------------------------

def dtype_tensors():
    g = torch.Generator().manual_seed(7)
    bn = torch.nn.BatchNorm2d(4)
    for _ in range(3):  # three training steps: num_batches_tracked becomes 3
        bn(torch.randn(2, 4, 5, 5, generator=g))
    w = torch.randn(4, 3, 3, 3, generator=g)
    scales = torch.tensor([0.02, 0.015, 0.03, 0.0125], dtype=torch.float64)
    zps = torch.tensor([0, 0, 0, 0], dtype=torch.int64)
    qw = torch.quantize_per_channel(w, scales, zps, 0, torch.qint8)
    x = torch.rand(2, 3, 4, 5, generator=g) * 4 - 1
    qx = torch.quantize_per_tensor(x, 0.025, 37, torch.quint8)
    t = {
        "bn.weight": bn.weight.detach(), "bn.bias": bn.bias.detach(),
        "bn.running_mean": bn.running_mean, "bn.running_var": bn.running_var,
        "bn.num_batches_tracked": bn.num_batches_tracked,  # I64, rank 0
        "conv.weight_q": qw.int_repr(),                    # I8 [4,3,3,3]
        "conv.weight_scale": qw.q_per_channel_scales(),    # F64 [4]
        "conv.weight_zero_point": qw.q_per_channel_zero_points(),  # I64 [4]
        "act_q": qx.int_repr(),                            # U8 [2,3,4,5]
        "half": torch.randn(3, 5, generator=g).half(),
        "bfloat": (torch.randn(2, 7, generator=g) * 1000).bfloat16(),
        "double": torch.randn(5, generator=g, dtype=torch.float64) * 1e40,
        "int32": torch.tensor([-2147483648, 2147483647, -1, 0, 16777217, 123456789, -7],
                              dtype=torch.int32),
        "int64": torch.tensor([-(2 ** 63), 2 ** 63 - 1, -1, 0, 2 ** 53 + 1, 3], dtype=torch.int64),
        "mask": (torch.rand(3, 3, generator=g) > 0.5).to(torch.uint8),
        "scalar_f16": torch.tensor(-2.5, dtype=torch.float16),
        "empty": torch.zeros(0, 3),
    }
    assert t["bn.num_batches_tracked"].dtype == torch.int64 and t["bn.num_batches_tracked"].item() == 3
    assert t["conv.weight_q"].dtype == torch.int8 and t["act_q"].dtype == torch.uint8
    assert t["conv.weight_scale"].dtype == torch.float64
    tensors = {}
    for name, v in t.items():
        tensors[name] = v
        if v.dtype != torch.int64:
            tensors[name + ".f64"] = v.double()
    md = {"description": "one tensor of every dtype, each (except I64) with its float64 twin NAME.f64",
          "act_q.scale": "0.025", "act_q.zero_point": "37",
          "torch_version": torch.__version__}
    return tensors, md


FILES = {"dtype_round.safetensors": dtype_round, "dtype_tensors.safetensors": dtype_tensors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored files")
    args = ap.parse_args()
    bad = 0
    for name, make in FILES.items():
        blob = safetensors_bytes(*make())
        path = os.path.join(GOLDEN, name)
        if args.check:
            with open(path, "rb") as f:
                same = f.read() == blob
            print(f"{name}: {'identical' if same else 'DIFFERS'} ({len(blob)} bytes)")
            bad += not same
        else:
            with open(path + ".tmp", "wb") as f:
                f.write(blob)
            os.replace(path + ".tmp", path)
            print(f"wrote {path} ({len(blob)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
