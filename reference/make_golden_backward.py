#!/usr/bin/python3
# Golden data for chapter 4 (convolution backward): PyTorch autograd gradients.
#
# Needs Debian's python3-torch (PyTorch 1.13), which is installed for the
# system interpreter only: run it as
#
#     /usr/bin/python3 reference/make_golden_backward.py          # (re)write golden/convgrad_*
#     /usr/bin/python3 reference/make_golden_backward.py --check  # re-read and verify
#
# Every case becomes reference/golden/convgrad_<NNN>_<name>.safetensors holding
# float32 tensors, in this order:
#
#     x  (N,Cin,H,W)   w (Cout,Cin/groups,kh,kw)   b (Cout, only when bias=True)
#     y  (N,Cout,Ho,Wo)  the forward output, as in conv_* files
#     dy (N,Cout,Ho,Wo)  the incoming gradient dL/dy, uniform in [-1, 1]
#     dx (like x)   dw (like w)   db (like b, only when bias=True)
#
# and exactly the metadata make_golden.py writes for a conv_* file. x, w, b are
# those of make_golden.py's compute_case (for a case taken from its families,
# the very same values as the conv_* file of that name); dy is drawn as float32
# from a second generator; y and the gradients are computed by autograd in
# float64 from exactly those float32 values and rounded to float32 once.
#
# The case definitions, the seeding, the padding arithmetic and the safetensors
# writer and reader are make_golden.py's, imported: this script only adds dy and
# the backward pass.

import argparse
import glob
import os
import sys
import warnings
import zlib
from dataclasses import replace
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (exits with a message when torch is missing)

torch, F = mg.torch, mg.F

PREFIX = "convgrad_"
GRAD_SALT = zlib.crc32(b"dy")         # dy's generator: case_seed(c) ^ GRAD_SALT
MAX_TOTAL_BYTES = 1536 * 1024

# Cases of make_golden.py's families, by name: every padding mode with pad 1 and a
# larger pad (the gradient of each mode with pad > 1), 'same' with even kernels
# (asymmetric pads) and dilation, 'valid', strides (larger than the kernel too),
# dilation, groups (ResNeXt-like, depthwise, depthwise multiplier), 1x1, no bias,
# kernels larger than the input, batch > 1, and combinations.
FROM_FORWARD = [
    "zeros_p1", "zeros_p3_5x5", "reflect_p1", "reflect_p3_7x7", "reflect_p_max",
    "replicate_p1", "replicate_p4", "circular_p1", "circular_p3_7x7", "circular_p_eq_size",
    "reflect_tuple_1_2", "replicate_tuple_0_3",
    "same_4x4_even", "same_2x2_reflect", "same_3x3_dil2_replicate", "same_2x3_dil3",
    "same_4x2_circular", "same_5x5_dil2_zeros", "valid_5x2",
    "stride2", "stride_2_1", "stride4_k2", "stride3_k1",
    "dil_2_3", "dil3_k2_valid", "dil2_stride2",
    "groups2_cout_lt_cin", "groups3", "resnext_16x4_s2", "groups4x4_c16",
    "depthwise_s2", "depthwise_5x5_reflect", "depthwise_mult2",
    "1x1", "1x1_s2", "1x1_groups4", "nobias_3x3",
    "resnet_stem", "kernel_gt_input_pad", "input_1x1", "prime_batch3_5x5",
    "combo_reflect_s2_d2_g2", "combo_circular_s23_d12_g4", "combo_replicate_s3_5x3_dwm2",
    "combo_zeros_s2_d2_g4_b3", "combo_same_reflect_even_d2_g2", "combo_stride_gt_k_dil_pad",
]


def extra_cases() -> List[mg.Case]:
    """Where the backward pass has its own pitfalls: padded taps landing on pixels that
    are also read directly, with stride, batch and groups at once."""
    C = mg.Case
    return [
        C("bwd_reflect_p2_s2_b2", "reflect pad 2 + stride 2 + batch 2: mirrored taps skip rows",
          2, 3, 4, 7, 8, (3, 3), stride=(2, 2), padding=2, padding_mode="reflect"),
        C("bwd_replicate_p3_2_s21", "replicate pad (3, 2) + stride (2, 1): edge pixels collect many taps",
          2, 2, 3, 5, 6, (3, 3), stride=(2, 1), padding=(3, 2), padding_mode="replicate"),
        C("bwd_circular_p2_d2_g2", "circular pad 2 + dilation 2 + groups 2, batch 2",
          2, 4, 4, 6, 7, (3, 3), padding=2, dilation=(2, 2), groups=2, padding_mode="circular"),
        C("bwd_reflect_depthwise_p3_b2", "depthwise 7x7 reflect pad 3, batch 2, no bias",
          2, 3, 3, 5, 6, (7, 7), padding=3, groups=3, bias=False, padding_mode="reflect"),
    ]


def all_cases() -> List[mg.Case]:
    forward = {c.name: c for c in mg.all_cases()}
    missing = [n for n in FROM_FORWARD if n not in forward]
    assert not missing, f"make_golden.py has no case named {missing}"
    cases = [forward[n] for n in FROM_FORWARD] + extra_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def file_name(i: int, c: mg.Case) -> str:
    return f"{PREFIX}{i:03d}_{c.name}.safetensors"


# --------------------------------------------------------------------------
# The backward pass, twice
# --------------------------------------------------------------------------

def autograd_module(c: mg.Case, x, w, b, dy):
    """y, dx, dw, db in float64 through nn.Conv2d (padding as the user passes it)."""
    conv = mg.make_module(c, c.padding, c.padding_mode)
    with torch.no_grad():
        conv.weight.copy_(w.double())
        if c.bias:
            conv.bias.copy_(b.double())
    x64 = x.double().requires_grad_(True)
    y = conv(x64)
    y.backward(dy.double())
    return y.detach(), x64.grad, conv.weight.grad, (conv.bias.grad if c.bias else None)


def autograd_explicit(c: mg.Case, x, w, b, dy, pads, mode=None):
    """The same through F.pad with the metadata's per-side pads, then conv2d with pad 0.
    mode overrides the padding mode (used to show the mode matters)."""
    cc = replace(c, padding_mode=mode) if mode else c
    xx = x.double().requires_grad_(True)
    ww = w.double().requires_grad_(True)
    bb = b.double().requires_grad_(True) if c.bias else None
    y = mg.explicit_pad_forward(cc, xx, ww, bb, pads)
    grads = torch.autograd.grad(y, [t for t in (xx, ww, bb) if t is not None], dy.double())
    return (y.detach(),) + tuple(grads) + ((None,) if not c.bias else ())


def rel_err(got, ref) -> float:
    """max(||got-ref|| / ||ref||, max|got-ref| / max|ref|), as make_golden.py --check."""
    d = got.double() - ref
    if ref.abs().max() == 0:
        return d.abs().max().item()
    return max((d.norm() / ref.norm()).item(), (d.abs().max() / ref.abs().max()).item())


def compute_case(c: mg.Case) -> Dict[str, torch.Tensor]:
    fwd = mg.compute_case(c)                 # validates c, proves the per-side pads
    x, w, b = fwd["x"], fwd["w"], fwd.get("b")
    g = torch.Generator().manual_seed(mg.case_seed(c) ^ GRAD_SALT)
    dy = torch.rand(fwd["y"].shape, generator=g, dtype=torch.float32) * 2 - 1
    y, dx, dw, db = autograd_module(c, x, w, b, dy)
    pads = mg.per_side_pads(c)
    y2, dx2, dw2, db2 = autograd_explicit(c, x, w, b, dy, pads)
    for name, u, v in (("y", y, y2), ("dx", dx, dx2), ("dw", dw, dw2), ("db", db, db2)):
        if u is not None:
            assert torch.allclose(u, v, rtol=1e-12, atol=1e-12), \
                f"{c.name}: {name} from nn.Conv2d and from F.pad + conv2d disagree"
    if c.padding_mode != "zeros" and any(pads):
        # The padding mode must change dx (taps send gradient back into the image),
        # or this case would not test the gradient of the padding at all.
        dx0 = autograd_explicit(c, x, w, b, dy, pads, mode="zeros")[1]
        assert not torch.allclose(dx, dx0, rtol=1e-6, atol=1e-9), \
            f"{c.name}: dx with {c.padding_mode} padding equals dx with zeros padding"
    out = {"x": x, "w": w}
    if c.bias:
        out["b"] = b
    out.update({"y": y.float(), "dy": dy, "dx": dx.float(), "dw": dw.float()})
    if c.bias:
        out["db"] = db.float()
    return out


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def generate() -> None:
    os.makedirs(mg.GOLDEN_DIR, exist_ok=True)
    cases = all_cases()
    wanted = {file_name(i, c) for i, c in enumerate(cases)}
    for old in glob.glob(os.path.join(mg.GOLDEN_DIR, PREFIX + "*.safetensors")):
        if os.path.basename(old) not in wanted:
            os.remove(old)                     # stale file from a renamed case
    total = 0
    for i, c in enumerate(cases):
        size = mg.write_safetensors(os.path.join(mg.GOLDEN_DIR, file_name(i, c)),
                                    compute_case(c), mg.metadata(c))
        assert size < mg.MAX_FILE_BYTES, f"{c.name}: {size} bytes is too big"
        total += size
    assert total < MAX_TOTAL_BYTES, f"gradient golden data is {total} bytes, too big"
    print(f"wrote {len(cases)} gradient cases, {total} bytes, to {mg.GOLDEN_DIR}")


def check() -> int:
    paths = sorted(glob.glob(os.path.join(mg.GOLDEN_DIR, PREFIX + "*.safetensors")))
    expected = {file_name(i, c) for i, c in enumerate(all_cases())}
    failures, total, rows = 0, 0, []
    for p in paths:
        fname = os.path.basename(p)
        total += os.path.getsize(p)
        t, md, order = mg.read_safetensors(p)
        bias = md["bias"] == "1"
        want = (["x", "w", "b", "y", "dy", "dx", "dw", "db"] if bias
                else ["x", "w", "y", "dy", "dx", "dw"])
        assert order == want, (fname, order)
        x, w, b, dy = t["x"], t["w"], t.get("b"), t["dy"]
        n, cin, h, wd = x.shape
        c = mg.Case(fname, md["description"], n, cin, int(md["out_channels"]), h, wd,
                    (int(md["kernel_h"]), int(md["kernel_w"])),
                    (int(md["stride_h"]), int(md["stride_w"])),
                    mg.parse_padding_spec(md["padding_spec"]),
                    (int(md["dilation_h"]), int(md["dilation_w"])),
                    int(md["groups"]), bias, md["padding_mode"])
        pads = tuple(int(md[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
        assert mg.per_side_pads(c) == pads, f"{fname}: metadata pads disagree with padding_spec"
        assert set(md) == set(mg.metadata(c)), f"{fname}: metadata keys differ from make_golden.py's"
        e = 0.0
        for ref in (autograd_module(c, x, w, b, dy), autograd_explicit(c, x, w, b, dy, pads)):
            for name, r in zip(("y", "dx", "dw", "db"), ref):
                if r is not None:
                    assert tuple(t[name].shape) == tuple(r.shape), (fname, name)
                    e = max(e, rel_err(t[name], r))
        ok = e <= mg.CHECK_RTOL and fname in expected
        failures += not ok
        rows.append((fname, e, "ok" if ok else "FAIL", md["description"]))
    if not rows:
        print(f"no {PREFIX}* files in {mg.GOLDEN_DIR}: run /usr/bin/python3 {sys.argv[0]}")
        return 1
    return mg.print_check_report(rows, expected, paths, total, failures,
                                 "(worst of y, dx, dw, db; max(||g-ref||/||ref||, "
                                 "max|g-ref|/max|ref|), ref = float64 autograd through "
                                 "nn.Conv2d and through F.pad+conv2d from the metadata pads)")


def main() -> int:
    ap = argparse.ArgumentParser(description="Write PyTorch golden gradients of conv2d.")
    ap.add_argument("--check", action="store_true",
                    help="re-read every convgrad_* file and verify y, dx, dw, db (float64 autograd)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
    if args.check:
        return check()
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
