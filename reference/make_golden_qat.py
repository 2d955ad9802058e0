#!/usr/bin/python3
# Golden data for chapter 7's quantization-aware training (the fake-quant half).
#
# Needs Debian's python3-torch (PyTorch 1.13), installed for the system interpreter only:
#
#     /usr/bin/python3 reference/make_golden_qat.py     # (re)write golden/qat_*
#
# Every file is reference/golden/qat_<name>.safetensors, float32 tensors only (zero
# points, masks and quantization ranges are small integers, exact in float32), with
# string metadata ("description", "torch_version"). What each holds:
#
#   qat_qparams:    pairs (min, max) -> the scale and zero point of both rules, for the
#                   activation range (quint8 0..127, affine) and the weight range (qint8
#                   -128..127, symmetric): choose_* from torch.fused_moving_avg_obs_fake_quant
#                   (ATen's ChooseQuantizationParams, what QAT trains with), calc_* from the
#                   observers' calculate_qparams (what convert uses).
#   qat_fq_tensor / qat_fq_channel: x, scale, zero point, range, dy -> y, dx of
#                   torch.fake_quantize_per_tensor_affine / _per_channel_affine (ties included).
#   qat_act_steps / qat_weight_steps: the x86 QAT qconfig's activation / weight fake
#                   quantizer (get_default_qat_qconfig('x86')) run for several steps on
#                   varying inputs (random, all equal, positive only, negative only, zeros,
#                   large): per step s the input x<s>, upstream gradient dy<s>, output y<s>,
#                   gradient dx<s>, and the buffers after it: min<s>, max<s>, scale<s>, zp<s>;
#                   at the end the converted parameters conv_scale, conv_zp. Beside them
#                   the post-training observers of the same ranges (MinMaxObserver,
#                   PerChannelMinMaxObserver) on the same inputs: mm_min<s>, mm_max<s>, and
#                   their calculate_qparams at the end: mm_scale, mm_zp.
#   qat_convbn:     torch.nn.intrinsic.qat.ConvBn2d (x86 QAT qconfig) for three training
#                   steps (BN statistics updated), then freeze_bn_stats and a fourth: per step
#                   x<s>, dy<s>, y<s> and the gradients dx<s>, dw<s>, db<s> (conv bias),
#                   dgamma<s>, dbeta<s>, the weight quantizer's scale<s>/zp<s>, the running
#                   statistics after it; initial parameters w, b, gamma, beta, rmean_init, rvar_init.
#                   Also the inference folding (torch.nn.utils.fusion.fuse_conv_bn_weights)
#                   of the final state: fold_w, fold_b.
#   qat_fx:         a ResNet-like block (Blk below) prepared by prepare_qat_fx with the x86
#                   QAT mapping: its float state dict under chapter 4's names, then three
#                   training steps: golden.x/dy/y<s>, every parameter's gradient
#                   golden.grad<s>.NAME, the 7 activation quantizers in graph order
#                   golden.q<s>.<i> = (min, max, scale, zero point), BN running variances.
# No optimizer step is taken: parameters stay as drawn, so each step's gradients are of
# the same weights under BN statistics and observers that move.

import os
import sys
import zlib

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (exits with a message when torch is missing)

torch = mg.torch
from torch.ao.quantization import get_default_qat_qconfig  # noqa: E402
from torch.ao.quantization.observer import (MinMaxObserver,  # noqa: E402
                                            MovingAverageMinMaxObserver,
                                            MovingAveragePerChannelMinMaxObserver,
                                            PerChannelMinMaxObserver)
import torch.nn.intrinsic.qat as nniqat  # noqa: E402
from torch.nn.utils.fusion import fuse_conv_bn_weights  # noqa: E402

GOLDEN_DIR = mg.GOLDEN_DIR
BASE_SEED = 20261129
QCONFIG = get_default_qat_qconfig("x86")


def gen(name):
    g = torch.Generator()
    g.manual_seed(BASE_SEED ^ zlib.crc32(name.encode()))
    return g


def f32(v):
    return torch.tensor(v, dtype=torch.float32)


def save(name, tensors, description):
    md = {"description": description, "torch_version": torch.__version__}
    path = os.path.join(GOLDEN_DIR, "qat_" + name + ".safetensors")
    n = mg.write_safetensors(path, {k: v.detach().to(torch.float32).contiguous()
                                    for k, v in tensors.items()}, md)
    print(f"wrote {path} ({n} bytes)")


# ---- scale and zero point --------------------------------------------------------------

PAIRS = [(0.0, 0.0), (1.0, 1.0), (-2.0, -2.0), (0.5, 3.0), (-3.0, -0.5), (-1.0, 1.0),
         (-0.3, 2.7), (-2.7, 0.3), (-1e-7, 1e-7), (0.0, 1e-4), (-1e-4, 0.0), (-1e-5, 3e-5),
         (0.0, 6.1e-5 * 127), (-1e20, 1e20), (-0.0078125, 0.9921875), (-1.0, 0.7),
         (1e-30, 2e-30), (-5.5, 3.25), (0.0, 1.0), (-1.0, 0.0)]


def qparams_case():
    g = gen("qparams")
    pairs = list(PAIRS)
    for _ in range(44):
        a, b = (torch.randn(2, generator=g) * torch.exp(torch.randn(2, generator=g) * 2)).tolist()
        pairs.append((min(a, b), max(a, b)))
    for _ in range(8):   # one sign only
        a, b = sorted((torch.rand(2, generator=g) * 4).tolist())
        pairs.append((a, b) if len(pairs) % 2 else (-b, -a))
    mins = f32([p[0] for p in pairs])
    maxs = f32([p[1] for p in pairs])
    out = {"min": mins, "max": maxs}
    for kind, ctor in (("act", QCONFIG.activation), ("weight", QCONFIG.weight)):
        fq = ctor()
        obs = fq.activation_post_process
        qmin, qmax = obs.quant_min, obs.quant_max
        cs, cz = [], []
        for lo, hi in zip(mins.tolist(), maxs.tolist()):   # fused rule, one pair at a time
            rmin, rmax = f32([lo]), f32([hi])
            scale, zp = f32([1.0]), torch.tensor([0], dtype=torch.int32)
            x = torch.zeros(1, 1)
            torch.fused_moving_avg_obs_fake_quant(
                x, torch.tensor([0]), torch.tensor([1]), rmin, rmax, scale, zp,
                0.01, qmin, qmax, 0, kind == "weight", kind == "weight")
            cs.append(scale[0].item())
            cz.append(int(zp[0]))
        out["choose_" + kind + "_scale"] = f32(cs)
        out["choose_" + kind + "_zp"] = f32(cz)
        if kind == "act":
            ob = MovingAverageMinMaxObserver(quant_min=0, quant_max=255, reduce_range=True)
            ss, zz = [], []
            for lo, hi in zip(mins.tolist(), maxs.tolist()):
                ob.min_val.copy_(f32(lo))
                ob.max_val.copy_(f32(hi))
                s, z = ob.calculate_qparams()
                ss.append(s.item())
                zz.append(int(z))
            out["calc_act_scale"], out["calc_act_zp"] = f32(ss), f32(zz)
        else:
            ob = MovingAveragePerChannelMinMaxObserver(quant_min=-128, quant_max=127,
                                                       dtype=torch.qint8,
                                                       qscheme=torch.per_channel_symmetric)
            ob.min_val, ob.max_val = mins.clone(), maxs.clone()
            s, z = ob.calculate_qparams()
            out["calc_weight_scale"], out["calc_weight_zp"] = s.float(), z.float()
        out[kind + "_range"] = f32([qmin, qmax])
    save("qparams", out, "scale and zero point: the fused (ChooseQuantizationParams) and the "
         "observer (calculate_qparams) rules, x86 QAT activation and weight ranges")


# ---- fake quantization of a tensor -------------------------------------------------------

def fq_tensor_case():
    g = gen("fq_tensor")
    scale, zp, qmin, qmax = 0.05, 13, 0, 127
    ties = (torch.arange(-20, 140, dtype=torch.float32) + 0.5 - zp) * scale
    x = torch.cat([torch.randn(3000, generator=g) * 4, ties, f32([0.0, -0.0, 1e6, -1e6])])
    x = x.reshape(-1)
    dy = torch.rand(x.shape, generator=g) * 2 - 1
    xr = x.clone().requires_grad_(True)
    y = torch.fake_quantize_per_tensor_affine(xr, scale, zp, qmin, qmax)
    y.backward(dy)
    save("fq_tensor", {"x": x, "dy": dy, "y": y, "dx": xr.grad,
                       "qp": f32([scale, zp, qmin, qmax])},
         "torch.fake_quantize_per_tensor_affine forward and backward; qp = scale, zp, qmin, qmax")


def fq_channel_case():
    g = gen("fq_channel")
    C = 5
    scale = f32([0.01, 0.1, 0.0037, 1.5, 0.25])
    zp = torch.tensor([0, -7, 3, 0, 100], dtype=torch.int32)
    x = torch.randn(C, 3, 3, 3, generator=g) * torch.tensor([1.0, 10, 0.5, 200, 20]).reshape(C, 1, 1, 1)
    x[0, 0, 0, :] = (torch.arange(3) + 0.5) * 0.01          # ties
    dy = torch.rand(x.shape, generator=g) * 2 - 1
    xr = x.clone().requires_grad_(True)
    y = torch.fake_quantize_per_channel_affine(xr, scale, zp, 0, -128, 127)
    y.backward(dy)
    save("fq_channel", {"x": x, "dy": dy, "y": y, "dx": xr.grad, "scale": scale,
                        "zp": zp.float(), "range": f32([-128, 127])},
         "torch.fake_quantize_per_channel_affine (axis 0) forward and backward")


# ---- the x86 QAT fake quantizers over several steps -------------------------------------

def act_inputs(g):
    return [torch.randn(2, 3, 4, 5, generator=g) * 2 + 0.5,
            torch.full((2, 3, 4, 5), 0.75),                       # all equal
            torch.rand(2, 3, 4, 5, generator=g) * 6,              # positive only
            -torch.rand(2, 3, 4, 5, generator=g) * 3 - 0.1,       # negative only
            torch.zeros(2, 3, 4, 5),                              # zeros
            torch.randn(2, 3, 4, 5, generator=g) * 40,            # large
            torch.randn(1, 2, 3, 3, generator=g)]                 # another shape


def weight_inputs(g):
    out = []
    for s in range(6):
        w = torch.randn(6, 3, 3, 3, generator=g) * (0.2 + 0.3 * s)
        w[1] = w[1].abs() + 0.01          # positive channel
        w[2] = -w[2].abs() - 0.01         # negative channel
        w[3] = 0.0                        # zero channel
        w[4] = 0.3 if s % 2 == 0 else w[4]  # constant channel on even steps
        out.append(w)
    return out


def minmax_observer(weight):
    """PyTorch's post-training observers of the same ranges: MinMaxObserver (activations)
    and PerChannelMinMaxObserver (weights) keep the extremes of everything seen."""
    if weight:
        return PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, quant_min=-128,
                                        quant_max=127, qscheme=torch.per_channel_symmetric)
    return MinMaxObserver(quant_min=0, quant_max=255, reduce_range=True)


def steps_case(name, ctor, inputs, g, description):
    fq = ctor()
    mm = minmax_observer(fq.is_per_channel)
    out = {}
    for s, x in enumerate(inputs):
        mm(x)
        out[f"mm_min{s}"] = mm.min_val.reshape(-1).clone()
        out[f"mm_max{s}"] = mm.max_val.reshape(-1).clone()
        xr = x.clone().requires_grad_(True)
        y = fq(xr)
        dy = torch.rand(x.shape, generator=g) * 2 - 1
        y.backward(dy)
        obs = fq.activation_post_process
        out.update({f"x{s}": x, f"dy{s}": dy, f"y{s}": y, f"dx{s}": xr.grad,
                    f"min{s}": obs.min_val.reshape(-1).clone(), f"max{s}": obs.max_val.reshape(-1).clone(),
                    f"scale{s}": fq.scale.reshape(-1).clone(), f"zp{s}": fq.zero_point.float().reshape(-1)})
    s, z = fq.calculate_qparams()
    out["conv_scale"], out["conv_zp"] = s.reshape(-1).float(), z.reshape(-1).float()
    s, z = mm.calculate_qparams()
    out["mm_scale"], out["mm_zp"] = s.reshape(-1).float(), z.reshape(-1).float()
    out["steps"] = f32([len(inputs)])
    save(name, out, description)


# ---- Conv + BatchNorm, QAT and folded ----------------------------------------------------

def convbn_case():
    g = gen("convbn")
    torch.manual_seed(BASE_SEED)
    Cin, Cout = 3, 5
    m = nniqat.ConvBn2d(Cin, Cout, 3, stride=1, padding=1, bias=True, qconfig=QCONFIG)
    with torch.no_grad():
        m.weight.copy_(torch.randn(Cout, Cin, 3, 3, generator=g) * 0.3)
        m.bias.copy_(torch.randn(Cout, generator=g) * 0.1)
        m.bn.weight.copy_(torch.rand(Cout, generator=g) + 0.5)
        m.bn.bias.copy_(torch.randn(Cout, generator=g) * 0.2)
        m.bn.running_mean.copy_(torch.randn(Cout, generator=g) * 0.1)
        m.bn.running_var.copy_(torch.rand(Cout, generator=g) + 0.5)
    m.bn.momentum = 0.1
    out = {"w": m.weight.detach().clone(), "b": m.bias.detach().clone(),
           "gamma": m.bn.weight.detach().clone(), "beta": m.bn.bias.detach().clone(),
           "rmean_init": m.bn.running_mean.clone(), "rvar_init": m.bn.running_var.clone()}
    m.train()
    for s in range(4):
        if s == 3:
            m.freeze_bn_stats()
        x = torch.randn(2, Cin, 6, 7, generator=g) * (1 + s)
        xr = x.clone().requires_grad_(True)
        y = m(xr)
        dy = torch.rand(y.shape, generator=g) * 2 - 1
        for p in m.parameters():
            p.grad = None
        y.backward(dy)
        wfq = m.weight_fake_quant
        out.update({f"x{s}": x, f"dy{s}": dy, f"y{s}": y, f"dx{s}": xr.grad,
                    f"dw{s}": m.weight.grad, f"db{s}": m.bias.grad,
                    f"dgamma{s}": m.bn.weight.grad, f"dbeta{s}": m.bn.bias.grad,
                    f"scale{s}": wfq.scale.clone(), f"zp{s}": wfq.zero_point.float(),
                    f"wmin{s}": wfq.activation_post_process.min_val.clone(),
                    f"wmax{s}": wfq.activation_post_process.max_val.clone(),
                    f"rmean{s}": m.bn.running_mean.clone(), f"rvar{s}": m.bn.running_var.clone()})
    fw, fb = fuse_conv_bn_weights(m.weight.detach(), m.bias.detach(), m.bn.running_mean,
                                  m.bn.running_var, m.bn.eps, m.bn.weight.detach(),
                                  m.bn.bias.detach())
    out["fold_w"], out["fold_b"] = fw.detach(), fb.detach()
    out["meta"] = f32([m.bn.eps, m.bn.momentum, 3])   # eps, momentum, frozen from step 3
    save("convbn", out, "torch.nn.intrinsic.qat.ConvBn2d(3, 5, 3, padding=1, bias=True), x86 "
         "QAT qconfig: 3 training steps, freeze_bn_stats, a 4th; fuse_conv_bn_weights")


class Blk(torch.nn.Module):
    """conv-bn-relu, max-pool, conv-bn-relu, conv-bn + skip, relu, 1x1 head: the patterns of
    a ResNet stem and block (chapter 4's module names: tests/test_ch07_qat.c builds it)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu3 = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        y = self.relu2(self.bn2(self.conv2(x)))
        z = self.bn3(self.conv3(y))
        return self.head(self.relu3(z + x))


# the prepared model's parameter names -> the float model's (chapter 4's)
FX_NAMES = {"conv1.bn.": "bn1.", "conv2.bn.": "bn2.", "conv3.bn.": "bn3."}


def fx_case():
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    g = gen("fx")
    m = Blk()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith("weight") else 0.1))
        for bn in (m.bn1, m.bn2, m.bn3):
            bn.weight.copy_(torch.rand(8, generator=g) + 0.5)
            bn.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    out = {k: v.detach().clone() for k, v in m.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    m.train()
    p = prepare_qat_fx(m, get_default_qat_qconfig_mapping("x86"),
                       example_inputs=(torch.randn(1, 3, 8, 8),))
    quantizers = [getattr(p, f"activation_post_process_{i}") for i in range(7)]
    assert quantizers[2] is quantizers[1]   # the max-pool shares relu1's quantizer
    for s in range(3):
        x = torch.randn(2, 3, 10, 12, generator=g) * (1 + s)
        for q in p.parameters():
            q.grad = None
        y = p(x)
        dy = torch.rand(y.shape, generator=g) * 2 - 1
        y.backward(dy)
        out.update({f"golden.x{s}": x, f"golden.dy{s}": dy, f"golden.y{s}": y.detach()})
        for name, q in p.named_parameters():
            for a, b in FX_NAMES.items():
                name = name.replace(a, b)
            out[f"golden.grad{s}.{name}"] = q.grad.clone()
        for i, q in enumerate(quantizers):
            o = q.activation_post_process
            out[f"golden.q{s}.{i}"] = torch.cat([o.min_val.reshape(1), o.max_val.reshape(1),
                                                 q.scale.reshape(1), q.zero_point.float().reshape(1)])
        for i in (1, 2, 3):
            bn = getattr(p, f"conv{i}").bn
            out[f"golden.rvar{s}.bn{i}"] = bn.running_var.clone()
    save("fx", out, "prepare_qat_fx(Blk, get_default_qat_qconfig_mapping('x86')): the float "
         "state dict, then 3 training steps (no optimizer step): golden.x/dy/y<s>, parameter "
         "gradients golden.grad<s>.NAME (the float model's names), the 7 activation quantizers "
         "golden.q<s>.<i> = (min, max, scale, zero point) in graph order (2 is 1: shared)")


def main():
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    qparams_case()
    fq_tensor_case()
    fq_channel_case()
    g = gen("steps")
    steps_case("act_steps", QCONFIG.activation, act_inputs(g), g,
               "x86 QAT activation FusedMovingAvgObsFakeQuantize, 7 steps")
    steps_case("weight_steps", QCONFIG.weight, weight_inputs(g), g,
               "x86 QAT weight FusedMovingAvgObsFakeQuantize (per channel, symmetric), 6 steps")
    convbn_case()
    fx_case()


if __name__ == "__main__":
    main()
