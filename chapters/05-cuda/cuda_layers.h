/* cuda_layers.h — chapter 5: the layers of chapter 8's network beyond convolution, on the
 * GPU (layer_kernels.cu), and the network's evaluation forward on the device
 * (model_cuda.cu).
 *
 * Each function is the device twin of chapter 4's CPU layer of the same name (layers.h,
 * loss.h, optim.h) with the same semantics: the same statistics (biased variance to
 * normalise, unbiased for the running estimate), the same source-index rules of the
 * up-samplings, the same first-maximum rule of the max-pool, the same AdamW update in
 * double. Tensors are NCHW float32 in DEVICE memory (cr_cuda_malloc), described by a
 * cr_cuda_nchw; outputs are overwritten, never accumulated into. Functions launch on the
 * default stream and return without waiting (except the loss, which returns a number).
 * Errors as in cuda_gemm.h: bad arguments CR_EINVAL naming the argument, a failed CUDA
 * call CR_EIO with CUDA's message. Tensors of more than 2^31 - 1 elements are refused.
 *
 * The layers share one small scratch buffer (per-channel scale and shift, the loss's
 * per-pixel terms), grown on demand and kept: not thread-safe, like the convolution's
 * workspace; cr_cuda_layers_release frees it. */
#ifndef CR_CUDA_LAYERS_H
#define CR_CUDA_LAYERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layers.h"   /* chapter 4: cr_bn_params, cr_pool_params, cr_upsample_params */
#include "model.h"    /* chapter 4: cr_model (the device forward) */
#include "optim.h"    /* chapter 4: cr_optim_config */
#include "cuda_gemm.h" /* cr_cuda_precision */

#ifdef __cplusplus
extern "C" {
#endif

/* The shape of an N x C x H x W tensor on the device. */
typedef struct {
    int64_t n, c, h, w;
} cr_cuda_nchw;

/* ---- element-wise ------------------------------------------------------------------------ */

/* y = max(x, 0) over n values (NaN stays NaN); y may be x. */
cr_status cr_cuda_relu(int64_t n, const float *x, float *y);
/* y = a + b over n values, then max(y, 0) when relu (the bottleneck's add + ReLU in one
 * pass); y may be a or b. */
cr_status cr_cuda_add(int64_t n, const float *a, const float *b, float *y, bool relu);

/* ---- normalisation ------------------------------------------------------------------------- */

// @snippet gpu_layers_api
/* cr_batchnorm2d_forward on the device. x, y: shape d (y may be x); gamma, beta: C or both
 * NULL; running_mean, running_var: C, both NULL only in training (not tracked);
 * save_mean, save_invstd: C or both NULL (not kept). Training: one block per channel sums
 * the batch statistics (in double, a fixed tree: the same bits on every run), updates the
 * running statistics as PyTorch does; evaluation: the running statistics. Then
 * y = x * scale[c] + shift[c] (and max(y, 0) when relu), scale = gamma * invstd,
 * shift = beta - mean * gamma * invstd, computed in double and rounded once, as chapter 4. */
cr_status cr_cuda_batchnorm_forward(const cr_bn_params *p, bool training, cr_cuda_nchw d,
                                    const float *x, const float *gamma, const float *beta,
                                    float *running_mean, float *running_var, float *y,
                                    float *save_mean, float *save_invstd, bool relu);
/* cr_groupnorm_forward on the device: one block per (image, group) computes the group's
 * mean and biased variance (double, fixed tree) and normalises it, then max(y, 0) when
 * relu. x, y: shape d (y may be x); gamma, beta: C or both NULL; save_mean, save_invstd:
 * N * groups or both NULL. */
cr_status cr_cuda_groupnorm_forward(int64_t groups, double eps, cr_cuda_nchw d, const float *x,
                                    const float *gamma, const float *beta, float *y,
                                    float *save_mean, float *save_invstd, bool relu);
// @end gpu_layers_api

/* ---- pooling and up-sampling ------------------------------------------------------------------ */

/* cr_maxpool2d_forward on the device: x of shape d, y: N x C x Ho x Wo
 * (cr_maxpool2d_out_size); argmax (device, y's numel, or NULL): the flat h*W + w of the
 * chosen input element in its plane. The first maximum of the window wins; NaN wins. */
cr_status cr_cuda_maxpool2d_forward(const cr_pool_params *p, cr_cuda_nchw d, const float *x,
                                    float *y, int64_t *argmax);
/* cr_upsample_forward on the device (nearest, or bilinear with or without align_corners):
 * x of shape d, y: N x C x Ho x Wo (cr_upsample_out_size). */
cr_status cr_cuda_upsample_forward(const cr_upsample_params *p, cr_cuda_nchw d, const float *x,
                                   float *y);

/* ---- the loss and the optimizer ------------------------------------------------------------------ */

/* cr_cross_entropy on the device: logits of shape d, target: N*H*W int32 labels (device),
 * each in 0..C-1 or ignore_index. *loss (host) = the mean over the non-ignored pixels of
 * -log softmax at the label (0 when all are ignored); dlogits (device, shape d, or NULL)
 * = (softmax - onehot) / count, 0 at ignored pixels. A bad label fails with CR_EINVAL
 * naming its image and pixel (the first one), and nothing is written. Waits for the
 * device (the loss comes back to the host). */
cr_status cr_cuda_cross_entropy(cr_cuda_nchw d, const float *logits, const int32_t *target,
                                int32_t ignore_index, double *loss, float *dlogits);
/* cr_adamw_update on the device: step t (>= 1) of c (kind CR_OPTIM_ADAMW) on n values of
 * the parameter p with gradient g and moments m, v, each value computed in double from
 * the float32 operands and rounded once, as chapter 4. */
cr_status cr_cuda_adamw_update(const cr_optim_config *c, int64_t t, int64_t n, float *p,
                               const float *g, float *m, float *v);

/* ---- backward (layer_backward.cu) ------------------------------------------------------------ */

/* The twins of chapter 4's backward functions (layers.h), with the forward's conventions
 * above: device pointers, x's shape d, outputs overwritten; dx may be dy (not for the
 * max-pool and the up-sampling, whose dx and dy differ in shape). A forward that
 * fused a ReLU is undone by passing its output y: dy is then masked by y > 0 first (NULL:
 * no ReLU was fused). Reductions as the forward's (a block per channel or per (image,
 * group), double sums, a fixed tree); the max-pool's and up-sampling's adjoints are
 * gathers (a thread per input element, the outputs that read it in chapter 4's order),
 * no atomics: the same bits on every run. */

/* cr_relu_backward: dx = dy where y > 0, else 0, over n values (y the forward's output). */
cr_status cr_cuda_relu_backward(int64_t n, const float *y, const float *dy, float *dx);
/* The backward of cr_cuda_add with relu: da = db = dy where y > 0, else 0, over n values
 * (y the add's output); da or db may be NULL (not wanted) or dy. A plain add's backward
 * is the identity: dy itself is both gradients, no kernel. */
cr_status cr_cuda_add_relu_backward(int64_t n, const float *y, const float *dy, float *da,
                                    float *db);
/* cr_batchnorm2d_backward on the device: x, dy, dx: shape d; gamma: C or NULL (1);
 * save_mean, save_invstd: C, as the forward saved them (evaluation: the running
 * statistics); y: the forward's output when it fused a ReLU, else NULL. training as in
 * the forward (evaluation: dx = dy * gamma * invstd). dx, dgamma, dbeta (C) may each be
 * NULL (not wanted). One block per channel sums and writes its dx. */
cr_status cr_cuda_batchnorm_backward(bool training, cr_cuda_nchw d, const float *x,
                                     const float *gamma, const float *save_mean,
                                     const float *save_invstd, const float *y, const float *dy,
                                     float *dx, float *dgamma, float *dbeta);
/* cr_groupnorm_backward on the device: x, dy, dx: shape d; gamma: C or NULL; save_mean,
 * save_invstd: N * groups as the forward saved them; y: the forward's output when it
 * fused a ReLU, else NULL; dx, dgamma, dbeta (C) may each be NULL. One block per (image,
 * group) for dx, one per channel for dgamma and dbeta (run first). */
cr_status cr_cuda_groupnorm_backward(int64_t groups, cr_cuda_nchw d, const float *x,
                                     const float *gamma, const float *save_mean,
                                     const float *save_invstd, const float *y, const float *dy,
                                     float *dx, float *dgamma, float *dbeta);
/* cr_maxpool2d_backward on the device: dx (shape d, the forward's input) = the sum of dy
 * (shape dyd, which must be N x C x Ho x Wo for p) over the outputs whose argmax (device,
 * dy's numel, from cr_cuda_maxpool2d_forward) chose each element; windows may overlap.
 * Every argmax must lie in its output's window, or CR_EINVAL names the first one and dx
 * is not written: this check waits for the device. */
cr_status cr_cuda_maxpool2d_backward(const cr_pool_params *p, cr_cuda_nchw d, cr_cuda_nchw dyd,
                                     const int64_t *argmax, const float *dy, float *dx);
/* cr_upsample_backward on the device: dx (shape d, the forward's input) = the adjoint of
 * the up-sampling p applied to dy (shape dyd, which must be N x C x Ho x Wo,
 * cr_upsample_out_size). */
cr_status cr_cuda_upsample_backward(const cr_upsample_params *p, cr_cuda_nchw d, cr_cuda_nchw dyd,
                                    const float *dy, float *dx);

/* Frees the layers' scratch buffer (the next call allocates it again). */
void cr_cuda_layers_release(void);

/* ---- a chapter 4 model (chapter 8's FPN) in evaluation mode on the device ------------------------ */

/* The device copy of a cr_model: its parameters (conv weights and biases, norm weights,
 * biases and running statistics) in device memory, and a pool of activation buffers
 * shared by liveness (a buffer goes back to the pool once its last reader has run;
 * element-wise modules write over their input when they are its only reader; a ReLU that
 * is the only reader of a BatchNorm, GroupNorm or add is done in the same pass). */
typedef struct cr_cuda_model cr_cuda_model;

/* CR_EINVAL naming fn and the module, unless every module of m runs on the device:
 * modules with a later chapter's hook and global average pools do not (yet). what says
 * what the caller runs ("forward", "step"). cr_cuda_model_create and
 * cr_cuda_trainer_create both ask it. */
cr_status cr_cuda_model_supported(const char *fn, const char *what, const cr_model *m);

/* Copies m's parameters to the device into *out. m must stay alive (its module list is
 * read by every forward) and in evaluation mode; modules with a later chapter's hook and
 * global average pools are refused. Call again after m's weights change. */
cr_status cr_cuda_model_create(const cr_model *m, cr_cuda_model **out);
/* The evaluation forward of the model on x (device, shape in); *y receives the device
 * output (owned by g, valid until the next forward or free) and *out_shape its shape.
 * Convolutions take chapter 5's default path at g's precision (cr_cuda_conv2d_at).
 * Waits for nothing, except while m->profile is true: then each module waits for the
 * device and its host-clock time is added to its fwd_s and fwd_calls (chapter 4's profile
 * counters, the one thing of m the device copy writes); that finds where the time goes,
 * and slows the forward. */
cr_status cr_cuda_model_forward(cr_cuda_model *g, const float *x, cr_cuda_nchw in,
                                const float **y, cr_cuda_nchw *out_shape);
/* The precision of g's convolutions: CR_CUDA_FP32 (the default, CUDA cores), or TF32,
 * FP16, BF16: convolutions with at least 64 output channels per group then run on the
 * tensor cores with their GEMM operands rounded to it (cr_cuda_conv2d_at's rule);
 * activations, sums and every other layer stay FP32. */
cr_status cr_cuda_model_set_precision(cr_cuda_model *g, cr_cuda_precision p);
/* Module i's output shape in the last forward (all zero before one; i in 0..n-1). */
cr_cuda_nchw cr_cuda_model_shape(const cr_cuda_model *g, int i);
/* Host to host: copies x (N x C x H x W) to the device, runs the forward, copies the
 * output into y (allocated here with its shape; freed by the caller). Waits. */
cr_status cr_cuda_model_forward_host(cr_cuda_model *g, const cr_tensor *x, cr_tensor *y);
/* Device bytes g holds: parameters and the activation pool (its peak so far). */
size_t cr_cuda_model_bytes(const cr_cuda_model *g);
/* Frees g and its device memory (NULL is fine). */
void cr_cuda_model_free(cr_cuda_model *g);

#ifdef __cplusplus
}
#endif

#endif
