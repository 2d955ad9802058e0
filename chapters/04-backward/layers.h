/* layers.h — chapter 4: the layers a segmentation network trains with, each with its
 * forward and backward pass, as PyTorch defines them.
 *
 * Every tensor is NCHW float32 (lib/tensor.h). Outputs and gradients are
 * preallocated by the caller with the shapes stated per function, and fully
 * overwritten (never accumulated into). A backward function takes the upstream
 * gradient dy (shape of the forward output) and writes dx (shape of the forward
 * input) and the parameter gradients; what the forward pass must keep for the
 * backward pass (batch statistics, argmax indices, dropout masks) is an explicit
 * argument, so nothing is hidden in global state. Bad shapes fail with CR_EINVAL
 * and a message naming the tensor and the expected shape. */
#ifndef CR_LAYERS_H
#define CR_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "rng.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ReLU ---------------------------------------------------------------------- */

/* y = max(x, 0); x, y: any shape, the same (y may be x: in place). */
cr_status cr_relu_forward(const cr_tensor *x, cr_tensor *y);
/* dx = dy where y > 0, else 0; y is the forward OUTPUT (as PyTorch's threshold_backward);
 * y, dy, dx: the same shape (dx may be dy). */
cr_status cr_relu_backward(const cr_tensor *y, const cr_tensor *dy, cr_tensor *dx);

/* ---- element-wise add (skip connections) ----------------------------------------- */

/* y = a + b; a, b, y: the same shape (y may alias a or b). */
cr_status cr_add_forward(const cr_tensor *a, const cr_tensor *b, cr_tensor *y);
/* dst[i] = src[i] for i < n (OpenMP threads on large n). */
void cr_copy_f(float *dst, const float *src, int64_t n);
/* dst[i] += src[i] for i < n (OpenMP threads on large n): gradients summed. */
void cr_add_f(float *dst, const float *src, int64_t n);

/* da = dy, db = dy; each of da, db may be NULL; all the same shape. */
cr_status cr_add_backward(const cr_tensor *dy, cr_tensor *da, cr_tensor *db);

/* ---- BatchNorm2d ------------------------------------------------------------------ */

/* nn.BatchNorm2d's options. momentum follows PyTorch: running = (1 - momentum) *
 * running + momentum * batch_statistic. */
typedef struct {
    double eps;       /* added to the variance (1e-5) */
    double momentum;  /* 0.1 */
} cr_bn_params;

/* PyTorch's defaults: eps 1e-5, momentum 0.1. */
cr_bn_params cr_bn_params_default(void);

/* x, y: N x C x H x W; gamma, beta: C, or both NULL (affine=False: 1 and 0);
 * running_mean, running_var: C (NULL only in training mode: then they are not
 * tracked); save_mean, save_invstd: C, written for the backward pass.
 * Training: normalise with the batch mean and the BIASED batch variance
 * (divide by N*H*W), then update the running statistics with the batch mean and the
 * UNBIASED variance (divide by N*H*W - 1), as PyTorch does. Evaluation: normalise with
 * the running statistics (unchanged); save_mean/save_invstd receive them.
 * y = (x - mean) * invstd * gamma + beta, invstd = 1 / sqrt(var + eps). */
cr_status cr_batchnorm2d_forward(const cr_bn_params *p, bool training, const cr_tensor *x,
                                 const cr_tensor *gamma, const cr_tensor *beta,
                                 cr_tensor *running_mean, cr_tensor *running_var,
                                 cr_tensor *y, cr_tensor *save_mean, cr_tensor *save_invstd);
/* Gradients of cr_batchnorm2d_forward: x, dy, dx: N x C x H x W; gamma: C or NULL;
 * save_mean, save_invstd: C as the forward pass wrote them; training as in the forward
 * pass (in evaluation the statistics are constants: dx = dy * gamma * invstd);
 * dx, dgamma, dbeta (C) may each be NULL. */
cr_status cr_batchnorm2d_backward(bool training, const cr_tensor *x, const cr_tensor *gamma,
                                  const cr_tensor *save_mean, const cr_tensor *save_invstd,
                                  const cr_tensor *dy, cr_tensor *dx, cr_tensor *dgamma,
                                  cr_tensor *dbeta);

/* ---- GroupNorm -------------------------------------------------------------------- */

/* nn.GroupNorm(groups, C, eps): statistics over each (image, group of C/groups channels);
 * x, y: N x C x H x W; gamma, beta: C or both NULL; save_mean, save_invstd: N*groups
 * (rank 1 or 2), written for the backward pass. Biased variance, as PyTorch. */
cr_status cr_groupnorm_forward(int64_t groups, double eps, const cr_tensor *x,
                               const cr_tensor *gamma, const cr_tensor *beta, cr_tensor *y,
                               cr_tensor *save_mean, cr_tensor *save_invstd);
/* Gradients of cr_groupnorm_forward: x, dy, dx: N x C x H x W; gamma: C or NULL;
 * save_*: N*groups; dx, dgamma, dbeta (C) may each be NULL. */
cr_status cr_groupnorm_backward(int64_t groups, const cr_tensor *x, const cr_tensor *gamma,
                                const cr_tensor *save_mean, const cr_tensor *save_invstd,
                                const cr_tensor *dy, cr_tensor *dx, cr_tensor *dgamma,
                                cr_tensor *dbeta);

/* ---- max-pool and global average pool ---------------------------------------------- */

/* nn.MaxPool2d(kernel, stride, padding) with dilation 1 and ceil_mode False. Padded
 * positions are -infinity (never chosen); PyTorch requires padding <= kernel / 2. */
typedef struct {
    int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
} cr_pool_params;

/* Square kernel k, stride s, padding p. */
cr_pool_params cr_pool_params_make(int64_t k, int64_t s, int64_t p);
/* Output size of the pool on an h x w input: floor((h + 2p - k) / s) + 1; fails on an
 * empty output or padding > kernel / 2. */
cr_status cr_maxpool2d_out_size(const cr_pool_params *p, int64_t h, int64_t w,
                                int64_t *h_out, int64_t *w_out);
/* x: N x C x H x W; y: N x C x Ho x Wo; argmax: y->numel indices (the flat h*W + w of
 * the chosen input element in its plane, PyTorch's return_indices; may be NULL if no
 * backward follows). The window is scanned row by row and the FIRST maximum wins; a
 * NaN wins over any number (it propagates, as in PyTorch). */
cr_status cr_maxpool2d_forward(const cr_pool_params *p, const cr_tensor *x, cr_tensor *y,
                               int64_t *argmax);
/* dx (N x C x H x W) = 0, then dy (N x C x Ho x Wo) added at the argmax positions. */
cr_status cr_maxpool2d_backward(const int64_t *argmax, const cr_tensor *dy, cr_tensor *dx);

/* y (N x C x 1 x 1) = mean of x (N x C x H x W) over H and W. */
cr_status cr_global_avgpool_forward(const cr_tensor *x, cr_tensor *y);
/* dx (N x C x H x W) = dy (N x C x 1 x 1) / (H*W), broadcast. */
cr_status cr_global_avgpool_backward(const cr_tensor *dy, cr_tensor *dx);

/* ---- up-sampling (F.interpolate) ------------------------------------------------------ */

typedef enum { CR_UPSAMPLE_NEAREST = 0, CR_UPSAMPLE_BILINEAR } cr_upsample_mode;

/* F.interpolate(x, size=(out_h, out_w)) or F.interpolate(x, scale_factor=(scale_h,
 * scale_w)): with scale_h > 0 the output size is floor(H * scale_h) and the source
 * coordinate uses 1/scale_h (PyTorch 1.13 with recompute_scale_factor unset); with
 * scale_h == 0 it is out_h and the ratio H / out_h. Likewise for the width.
 * align_corners (bilinear only): corner pixels of input and output coincide,
 * source = dst * (H - 1) / (out_h - 1). Nearest is PyTorch's legacy 'nearest':
 * src = min(floor(dst * scale), H - 1). */
typedef struct {
    cr_upsample_mode mode;
    bool align_corners;
    int64_t out_h, out_w;
    double scale_h, scale_w;
} cr_upsample_params;

/* Output size of the up-sampling of an h x w input. */
cr_status cr_upsample_out_size(const cr_upsample_params *p, int64_t h, int64_t w,
                               int64_t *h_out, int64_t *w_out);
/* x: N x C x H x W; y: N x C x Ho x Wo (cr_upsample_out_size). */
cr_status cr_upsample_forward(const cr_upsample_params *p, const cr_tensor *x, cr_tensor *y);
/* dx (N x C x H x W) = the adjoint of the forward map applied to dy (N x C x Ho x Wo). */
cr_status cr_upsample_backward(const cr_upsample_params *p, const cr_tensor *dy,
                               cr_tensor *dx);

/* ---- dropout -------------------------------------------------------------------------- */

/* nn.Dropout(p) in training mode, with our own seeded stream (not PyTorch's): each
 * element is kept with probability 1 - p (a uniform draw >= p) and scaled by 1/(1-p)
 * (inverted dropout); mask (same numel as x) receives 1/(1-p) or 0 and is reused by
 * the backward pass. x, y: any shape, the same; 0 <= p < 1; p == 0 copies x. */
cr_status cr_dropout_forward(double p, cr_rng *rng, const cr_tensor *x, cr_tensor *y,
                             cr_tensor *mask);
/* dx = dy * mask (all the same shape). */
cr_status cr_dropout_backward(const cr_tensor *mask, const cr_tensor *dy, cr_tensor *dx);

/* nn.Dropout2d(p) in training mode ("spatial" dropout, as FPN's decoder uses): whole
 * channels are kept with probability 1 - p and scaled by 1/(1-p), one draw per (image,
 * channel) in that order from our own stream. x, y: N x C x H x W; mask: N*C values
 * (1/(1-p) or 0), reused by the backward pass. p == 0 copies x. */
cr_status cr_dropout2d_forward(double p, cr_rng *rng, const cr_tensor *x, cr_tensor *y,
                               cr_tensor *mask);
/* dx (N x C x H x W) = dy * mask[n, c], plane by plane. */
cr_status cr_dropout2d_backward(const cr_tensor *mask, const cr_tensor *dy, cr_tensor *dx);

#ifdef __cplusplus
}
#endif

#endif
