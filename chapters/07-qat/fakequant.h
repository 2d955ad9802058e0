/* fakequant.h — chapter 7: fake quantization as PyTorch 1.13's x86 QAT qconfig does it.
 *
 * Quantization maps a real x to an integer q = clamp(round(x / scale) + zero_point,
 * qmin, qmax) and back to real (q - zero_point) * scale. Quantization-aware training runs
 * that round trip ("fake quantization") in float32 during training, so that the network
 * learns weights that survive it, and lets the gradient through unchanged wherever the
 * clamp did not bite (the straight-through estimator).
 *
 * What `torch.ao.quantization.get_default_qat_qconfig('x86')` (the x86 QAT qconfig
 * mapping's global qconfig) builds, and what this file reproduces bit for bit:
 *   activations: FusedMovingAvgObsFakeQuantize(MovingAverageMinMaxObserver), quint8,
 *                per-tensor affine, quant range 0..127 (reduce_range: 0..255 halved),
 *                averaging constant 0.01;
 *   weights:     FusedMovingAvgObsFakeQuantize(MovingAveragePerChannelMinMaxObserver),
 *                qint8, per-channel symmetric along dimension 0, -128..127.
 * The fused module computes scale and zero point in C++ (ATen's ChooseQuantizationParams,
 * double arithmetic: cr_qparams_choose); converting a trained model to int8 asks the
 * observer instead (Python's _calculate_qparams, float32 arithmetic with eps:
 * cr_qparams_calculate). The two rules differ (a weight channel of one sign gets zero
 * point -128 or 127 from the first, 0 from the second); both are here.
 *
 * Layouts: tensors are float32 cr_tensor; per channel means along dimension 0 (a conv
 * weight's output channels, OIHW). Masks are one byte per element, 1 where the value was
 * inside [qmin, qmax] before the clamp (PyTorch's cachemask). */
#ifndef CR_FAKEQUANT_H
#define CR_FAKEQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "dtype.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the two rules for scale and zero point --------------------------------------- */

/* ATen's ChooseQuantizationParams (what FusedMovingAvgObsFakeQuantize uses while
 * training): [min, max] widened to hold 0; symmetric (preserve_sparsity) widens a range of
 * both signs to the signed grid; scale = (max - min) / (qmax - qmin) in double, 0.1 if it
 * is 0 or its float reciprocal overflows, at least 6.1e-5 (the range stretched to match);
 * zero point from the end with the smaller rounding error, nearbyint, clamped; the scale
 * is then stored as float32. Needs min <= max and qmin < qmax (CR_EINVAL otherwise). */
cr_status cr_qparams_choose(float min, float max, int32_t qmin, int32_t qmax, bool symmetric,
                            float *scale, int32_t *zero_point);

/* PyTorch's observer rule (UniformQuantizationObserverBase._calculate_qparams, what
 * convert uses), float32 arithmetic: affine: scale = max(range / (qmax - qmin), eps),
 * zero_point = clamp(qmin - round(min_neg / scale)); symmetric: scale =
 * max(max(-min_neg, max_pos) / ((qmax - qmin) / 2), eps), zero point 0 for a signed dtype
 * (I8), (qmin + qmax) / 2 for U8. An observer that saw nothing (min = +inf, max = -inf)
 * gives scale 1, zero point 0 as PyTorch does. eps is FLT_EPSILON. */
cr_status cr_qparams_calculate(float min, float max, int32_t qmin, int32_t qmax,
                               bool symmetric, cr_dtype dtype, float *scale,
                               int32_t *zero_point);

/* ---- fake quantization of a tensor ------------------------------------------------ */

/* y = (clamp(zp + nearbyint(x * (1/scale)), qmin, qmax) - zp) * scale elementwise, float32
 * arithmetic as ATen's cachemask kernels (round half to even); mask (NULL: not written,
 * else numel bytes) = 1 where qmin <= zp + nearbyint(x / scale) <= qmax. x, y: any shape,
 * same numel (y may be x). */
cr_status cr_fake_quantize_per_tensor(const cr_tensor *x, float scale, int32_t zero_point,
                                      int32_t qmin, int32_t qmax, cr_tensor *y, uint8_t *mask);
/* The same with scale[c], zero_point[c] for every slice c of dimension 0 (x: C x ...). */
cr_status cr_fake_quantize_per_channel(const cr_tensor *x, const float *scale,
                                       const int32_t *zero_point, int32_t qmin, int32_t qmax,
                                       cr_tensor *y, uint8_t *mask);
/* The straight-through gradient: dx = dy where mask is 1, else 0 (dx may be dy). */
cr_status cr_fake_quantize_backward(const uint8_t *mask, const cr_tensor *dy, cr_tensor *dx);

/* ---- the fused observer + fake quantizer ------------------------------------------ */

/* One FusedMovingAvgObsFakeQuantize: its observer's running min/max and its scale and
 * zero point buffers, with the same names and values PyTorch's state dict holds
 * (activation_post_process.min_val/max_val, scale, zero_point). */
typedef struct {
    cr_dtype dtype;             /* CR_DT_U8 (activations) or CR_DT_I8 (weights) */
    bool per_channel;           /* along dimension 0 */
    bool symmetric;             /* per_*_symmetric (preserve_sparsity in the fused rule) */
    int32_t qmin, qmax;         /* after reduce_range */
    float averaging_constant;   /* 0.01 */
    bool observer_enabled;      /* update min/max on every forward */
    bool minmax;                /* keep the extremes of everything seen (MinMaxObserver,
                                   PyTorch's post-training observers) instead of the
                                   moving average */
    bool fake_quant_enabled;    /* quantize on forward (off: identity, PTQ calibration) */
    int64_t channels;           /* entries below: 1 per tensor; per channel 0 until first use */
    float *min_val, *max_val;   /* running; +inf / -inf before the first observation */
    float *scale;               /* current parameters (1, 0 before the first forward) */
    int32_t *zero_point;
} cr_fake_quant;

/* The x86 QAT activation fake quantizer: U8 per tensor, affine, 0..127, constant 0.01. */
cr_status cr_fake_quant_init_act(cr_fake_quant *fq);
/* The x86 QAT weight fake quantizer: I8 per channel (dimension 0), symmetric, -128..127. */
cr_status cr_fake_quant_init_weight(cr_fake_quant *fq);
/* A general one (reduce_range halves qmin and qmax as PyTorch's calculate_qmin_qmax).
 * The three initialisers overwrite *fq without freeing it. */
cr_status cr_fake_quant_init(cr_fake_quant *fq, cr_dtype dtype, bool per_channel,
                             bool symmetric, int32_t qmin, int32_t qmax, bool reduce_range,
                             float averaging_constant);
/* Frees the buffers and zeroes fq (safe on a zeroed struct). */
void cr_fake_quant_free(cr_fake_quant *fq);

/* The moving-average min/max update on x (per tensor: all of x; per channel: each slice
 * of dimension 0): the first observation is taken as is, later ones as
 * run + c * (cur - run) in float32; with fq->minmax, min(run, cur) and max(run, cur). */
cr_status cr_observer_update(cr_fake_quant *fq, const cr_tensor *x);

/* torch.fused_moving_avg_obs_fake_quant: observe x (if enabled), choose the parameters
 * from the running min/max (cr_qparams_choose) and fake-quantize x into y with mask
 * (numel bytes, NULL: not written) if enabled; else y = x and mask all 1. y may be x. */
cr_status cr_fake_quant_forward(cr_fake_quant *fq, const cr_tensor *x, cr_tensor *y,
                                uint8_t *mask);

/* The parameters a converted model uses (the observer's rule, cr_qparams_calculate, from
 * the running min/max) as the common library's description, for the int8 half of the
 * chapter; p is allocated (cr_qparams_free). */
cr_status cr_fake_quant_qparams(const cr_fake_quant *fq, cr_qparams *p);

#ifdef __cplusplus
}
#endif

#endif
