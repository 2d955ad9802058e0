#!/usr/bin/python3
# Golden data for the non-finite rule: what PyTorch's nn.Conv2d gives when a weight or
# an input is NaN or +-inf. Run with Debian's PyTorch (see make_golden.py):
#
#     /usr/bin/python3 reference/make_golden_nonfinite.py
#
# The rule these cases pin down (measured with PyTorch 1.13, float32 and float64 alike):
# a zero-padded tap is a real zero that is multiplied like any other input, so
# 0 * NaN = NaN and 0 * inf = NaN. A NaN weight therefore makes EVERY output of its
# channel NaN, borders included, and an infinite weight makes the border outputs whose
# tap falls into the zero padding NaN while the interior ones are +-inf. A NaN or inf in
# the input reaches exactly the outputs whose window covers it. The other padding modes
# copy real pixels, so no zero is involved. Every forward path of chapters 1-3 must
# follow this (tests/test_nonfinite.c).
#
# Files: reference/golden/nonfinite_<NN>_<name>.safetensors, in make_golden.py's format
# (x, w, b, y and the layer's metadata), y computed in float64 by nn.Conv2d.
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402  (Case, metadata, reference_forward, writer)

import torch  # noqa: E402

NAN, INF = float("nan"), float("inf")


def cases():
    """(Case, function that plants non-finite values into x, w) pairs."""
    C = mg.Case

    def nan_w(x, w):
        w[1, 0, 0, 0] = NAN

    def inf_w(x, w):
        w[0, 1, 2, 2] = INF
        w[2, 0, 0, 1] = -INF

    def inf_x(x, w):
        x[0, 1, 0, 0] = INF
        x[0, 0, 3, 4] = NAN

    def nan_w_group(x, w):
        w[3, 0, 1, 1] = NAN
        w[6, 1, 0, 2] = INF

    return [
        (C("zeros_nan_weight", "NaN weight, zero padding: the whole channel is NaN",
           1, 2, 3, 5, 6, (3, 3), padding=1), nan_w),
        (C("zeros_inf_weight", "+-inf weights, zero padding: NaN where the tap meets a pad",
           2, 2, 3, 6, 5, (3, 3), padding=1), inf_w),
        (C("zeros_inf_weight_stride_dil", "inf weights, stride 2, dilation 2, pad 3",
           1, 2, 3, 9, 8, (3, 3), stride=(2, 2), padding=3, dilation=(2, 2)), inf_w),
        (C("zeros_inf_input", "inf and NaN pixels, zero padding",
           1, 3, 4, 6, 7, (3, 3), padding=2), inf_x),
        (C("zeros_grouped", "NaN/inf weights in a grouped conv (groups 4)",
           1, 8, 8, 7, 7, (3, 3), padding=1, groups=4), nan_w_group),
        (C("zeros_1x1_nopad", "inf weight, 1x1 without padding: no zero is multiplied",
           1, 2, 3, 4, 5, (1, 1)), lambda x, w: w.__setitem__((0, 1, 0, 0), INF)),
        (C("reflect_inf_weight", "inf weights, reflect padding: no zeros, so +-inf stays",
           1, 2, 3, 6, 5, (3, 3), padding=1, padding_mode="reflect"), inf_w),
        (C("circular_nan_weight", "NaN weight, circular padding",
           1, 2, 3, 5, 6, (3, 3), padding=1, padding_mode="circular"), nan_w),
    ]


def compute(c, plant):
    mg.validate(c)
    g = torch.Generator().manual_seed(mg.case_seed(c))
    kh, kw = c.kernel
    x = torch.rand(c.n, c.cin, c.h, c.w, generator=g) * 2 - 1
    w = torch.rand(c.cout, c.cin // c.groups, kh, kw, generator=g) * 2 - 1
    b = torch.rand(c.cout, generator=g) * 2 - 1
    plant(x, w)
    y = mg.reference_forward(c, x, w, b)
    # The same values through F.pad + an unpadded float32 conv (any backend): the padded
    # zeros are then stored zeros, and float32 agrees with float64 on where NaN and inf are.
    xp = torch.nn.functional.pad(x, mg_pads(c), mode="constant" if c.padding_mode == "zeros"
                                 else c.padding_mode)
    y32 = torch.nn.functional.conv2d(xp, w, b, stride=c.stride, dilation=c.dilation,
                                     groups=c.groups)
    assert torch.equal(torch.isnan(y), torch.isnan(y32)), c.name
    assert torch.equal(torch.isinf(y), torch.isinf(y32)), c.name
    # nn.Conv2d in float32 may take oneDNN, which skips padded taps instead (measured:
    # batch 2 gives +-inf, not NaN, at the borders): reported, not followed.
    conv32 = torch.nn.Conv2d(c.cin, c.cout, c.kernel, stride=c.stride, padding=c.padding,
                             dilation=c.dilation, groups=c.groups, padding_mode=c.padding_mode)
    with torch.no_grad():
        conv32.weight.copy_(w)
        conv32.bias.copy_(b)
        differ = int((torch.isnan(conv32(x)) != torch.isnan(y)).sum())
    assert torch.isnan(y).any() or torch.isinf(y).any(), f"{c.name}: nothing non-finite"
    assert torch.isfinite(y).any() or c.name == "zeros_nan_weight", c.name
    return {"x": x, "w": w, "b": b, "y": y.float()}, differ


def mg_pads(c):
    """F.pad's order (left, right, top, bottom) from the per-side pads."""
    t, bo, l, r = mg.per_side_pads(c)
    return (l, r, t, bo)


def main():
    for old in glob.glob(os.path.join(mg.GOLDEN_DIR, "nonfinite_*.safetensors")):
        os.remove(old)
    for i, (c, plant) in enumerate(cases()):
        path = os.path.join(mg.GOLDEN_DIR, f"nonfinite_{i:02d}_{c.name}.safetensors")
        t, differ = compute(c, plant)
        mg.write_safetensors(path, t, mg.metadata(c))
        y = t["y"]
        print(f"{os.path.basename(path)}: {int(torch.isnan(y).sum())} NaN, "
              f"{int(torch.isinf(y).sum())} inf of {y.numel()}; nn.Conv2d float32 differs on "
              f"{differ} NaN positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
