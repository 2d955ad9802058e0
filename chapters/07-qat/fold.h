/* fold.h — chapter 7: convolution followed by BatchNorm, folded for inference and
 * simulated during quantization-aware training as torch.ao's QAT ConvBn2d does.
 *
 * BatchNorm in evaluation is an affine map per channel, so it folds into the convolution
 * before it:  w' = w * gamma / sigma,  b' = beta + (b - mean) * gamma / sigma,  with
 * sigma = sqrt(running_var + eps). The int8 model quantizes w', so QAT must train against
 * the quantization of w' too: torch.nn.intrinsic.qat.ConvBn2d (its "approximate" forward,
 * the default) computes
 *     sf = gamma / sqrt(running_var + eps)                    (per output channel)
 *     y  = conv(x, fake_quant(w * sf)) / sf + b               (bias added after)
 * and hands y to the BatchNorm, which in training normalises with the batch statistics
 * (and updates the running ones) or, after freeze_bn_stats, with the running ones.
 * cr_qconv does that for one convolution, without a BatchNorm too (sf = 1: plain QAT conv).
 *
 * Shapes: x N x Cin x H x W, w Cout x Cin/groups x kh x kw (OIHW), y N x Cout x Ho x Wo,
 * per-channel vectors (b, gamma, beta, mean, var) Cout. */
#ifndef CR_FOLD_H
#define CR_FOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "conv_backward.h"
#include "conv_desc.h"
#include "fakequant.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Inference folding as torch.nn.utils.fusion.fuse_conv_bn_weights, float32 bit for bit:
 * r = 1 / sqrt(var + eps); w_out = w * (gamma * r); b_out = (b - mean) * r * gamma + beta.
 * b may be NULL (zero); w_out (like w) and b_out (Cout) are written; w_out may be w. */
cr_status cr_fold_conv_bn(const cr_tensor *w, const cr_tensor *b, const cr_tensor *gamma,
                          const cr_tensor *beta, const cr_tensor *mean, const cr_tensor *var,
                          double eps, cr_tensor *w_out, cr_tensor *b_out);

/* A fake-quantized convolution, optionally with a BatchNorm's scale folded in (above):
 * its weight quantizer and what forward keeps for backward. */
typedef struct {
    cr_fake_quant wfq;      /* the weight's (x86 QAT: I8 per channel, symmetric) */
    cr_tensor sf;           /* Cout: gamma / sqrt(running_var + eps) of the forward (1: no BN) */
    cr_tensor std;          /* Cout: sqrt(running_var + eps) of the forward */
    cr_tensor wq;           /* fake_quant(w * sf): the weight the convolution ran with */
    uint8_t *wmask;         /* wq's straight-through mask (numel of w) */
    cr_tensor conv;         /* conv(x, wq) without bias (kept for gamma's gradient) */
    cr_tensor dwq;          /* backward scratch: the gradient of wq */
    bool folded;            /* the last forward had a BatchNorm */
} cr_qconv;

/* Initialises q with the x86 QAT weight quantizer. */
cr_status cr_qconv_init(cr_qconv *q);
/* Frees q's buffers (safe on a zeroed struct). */
void cr_qconv_free(cr_qconv *q);

/* y = conv(x, fake_quant(w * sf)) / sf + b with sf from gamma and running_var (both NULL:
 * no BatchNorm, sf = 1 and y = conv(x, fake_quant(w)) + b), through conv (NULL: chapter 3's
 * cr_conv2d_fast). b may be NULL. y: N x Cout x Ho x Wo, allocated. */
cr_status cr_qconv_forward(cr_qconv *q, const cr_conv_params *p, cr_conv2d_fn conv,
                           const cr_tensor *x, const cr_tensor *w, const cr_tensor *b,
                           const cr_tensor *gamma, const cr_tensor *running_var, double eps,
                           cr_tensor *y);

/* Gradients of the last cr_qconv_forward from dy (like y): dx (like x, NULL: not wanted),
 * dw (like w) and db (Cout, NULL without a bias) overwritten; gamma's gradient through sf
 * ADDED into dgamma (Cout; NULL without a BatchNorm). bwd NULL: cr_conv2d_backward. */
cr_status cr_qconv_backward(cr_qconv *q, const cr_conv_params *p, cr_conv2d_backward_fn bwd,
                            const cr_tensor *x, const cr_tensor *w, const cr_tensor *dy,
                            cr_tensor *dx, cr_tensor *dw, cr_tensor *db, cr_tensor *dgamma);

#ifdef __cplusplus
}
#endif

#endif
