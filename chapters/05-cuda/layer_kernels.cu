/* layer_kernels.cu — chapter 5: the layers chapter 8's network needs beyond convolution
 * (cuda_layers.h): ReLU and add, BatchNorm and GroupNorm, max-pool, the up-samplings,
 * cross-entropy, AdamW. Each kernel follows chapter 4's CPU layer line for line where the
 * arithmetic matters (the order of the float operations, what is computed in double), so
 * that the emulator's results equal the CPU's, and a GPU's differ only where nvcc fuses a
 * multiply and an add. Reductions are a fixed tree in shared memory, never atomics: the
 * same bits on every run, whatever the schedule. */
#include <math.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cuda_layers.h"
#include "cuda_util.h"
#include "layer_util.h"
#include "upsample_taps.h"

#define LAYER_THREADS 256   /* element-wise kernels and per-channel reductions */
#define CE_SUM_THREADS 1024 /* the loss's one-block sum */

/* ---- argument checks and the scratch buffer ------------------------------------------------ */

/* Checks a shape: every size >= 1 and at most 2^31 - 1 elements; *numel receives N*C*H*W. */
cr_status cr_layer_check_dims(const char *fn, const char *what, cr_cuda_nchw d, long long *numel)
{
    if (d.n < 1 || d.c < 1 || d.h < 1 || d.w < 1)
        return cr_fail(CR_EINVAL, "%s: %s is %lldx%lldx%lldx%lld: every size must be >= 1", fn,
                       what, (long long)d.n, (long long)d.c, (long long)d.h, (long long)d.w);
    const double e = (double)d.n * (double)d.c * (double)d.h * (double)d.w;
    if (e > 2147483647.0)
        return cr_fail(CR_EINVAL, "%s: %s has %.0f elements, more than the GPU layers' 2^31 - 1",
                       fn, what, e);
    *numel = (long long)(d.n * d.c * d.h * d.w);
    return CR_OK;
}

/* Checks an element count for the element-wise kernels. */
static cr_status check_n(const char *fn, int64_t n)
{
    if (n < 0 || n > 2147483647LL)
        return cr_fail(CR_EINVAL, "%s: n = %lld: expected 0 <= n <= 2^31 - 1", fn, (long long)n);
    return CR_OK;
}

static void *scratch;         /* the layers' scratch buffer (device) */
static size_t scratch_bytes;  /* its size */

/* *p = at least bytes of device scratch (grown on demand, kept between calls). */
cr_status cr_layer_scratch(size_t bytes, void **p)
{
    if (bytes > scratch_bytes) {
        cr_cuda_free(scratch);   /* cudaFree waits for the kernels that may still read it */
        scratch = NULL;
        scratch_bytes = 0;
        CR_TRY(cr_cuda_malloc(&scratch, bytes, "layer scratch"));
        scratch_bytes = bytes;
    }
    *p = scratch;
    return CR_OK;
}

void cr_cuda_layers_release(void)
{
    cr_cuda_free(scratch);
    scratch = NULL;
    scratch_bytes = 0;
}

/* ---- element-wise ---------------------------------------------------------------------------- */

/* max(v, 0) with NaN kept, as chapter 4's cr_relu_forward. */
__device__ __forceinline__ float relu1(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }

/* y[e] = relu(x[e]) for e < n. */
__global__ void relu_kernel(long long n, const float *x, float *y)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e < n) y[e] = relu1(x[e]);
}

/* y[e] = a[e] + b[e], then relu when asked, for e < n (y may alias a or b: each thread
 * reads its element before it writes it). */
__global__ void add_kernel(long long n, const float *a, const float *b, float *y, int relu)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const float r = a[e] + b[e];
    y[e] = relu ? relu1(r) : r;
}

cr_status cr_cuda_relu(int64_t n, const float *x, float *y)
{
    CR_TRY(check_n("cr_cuda_relu", n));
    if (n == 0) return CR_OK;
    if (!x || !y) return cr_fail(CR_EINVAL, "cr_cuda_relu: x or y is NULL");
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, LAYER_THREADS, "relu_kernel", &blocks));
    relu_kernel<<<blocks, LAYER_THREADS>>>((long long)n, x, y);
    return CR_CUDA_LAUNCHED("relu_kernel");
}

cr_status cr_cuda_add(int64_t n, const float *a, const float *b, float *y, bool relu)
{
    CR_TRY(check_n("cr_cuda_add", n));
    if (n == 0) return CR_OK;
    if (!a || !b || !y) return cr_fail(CR_EINVAL, "cr_cuda_add: a, b or y is NULL");
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, LAYER_THREADS, "add_kernel", &blocks));
    add_kernel<<<blocks, LAYER_THREADS>>>((long long)n, a, b, y, relu ? 1 : 0);
    return CR_CUDA_LAUNCHED("add_kernel");
}

/* ---- block reductions ---------------------------------------------------------------------------- */

/* The sum of every thread's v over the block (blockDim.x a power of two, part holding
 * blockDim.x doubles), returned to every thread: a tree in shared memory whose halving
 * order is fixed, so the result does not depend on the order in which the threads run.
 * Every thread of the block must call it. */
__device__ double block_sum(double v, double *part)
{
    const int t = threadIdx.x;
    part[t] = v;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) part[t] += part[t + half];
        __syncthreads();
    }
    const double s = part[0];
    __syncthreads();   /* part may be reused by the caller's next sum */
    return s;
}

/* ---- BatchNorm ---------------------------------------------------------------------------------------- */

/* The per-channel scale and shift of a batch norm from its statistics, as chapter 4:
 * invstd = 1 / sqrt(var + eps) in double, scale = g * invstd, shift = b - mean * g * invstd,
 * each rounded once to float; ss[c] = scale, ss[C + c] = shift. */
__device__ void bn_fold_channel(int c, int C, double mean, double var, double eps,
                                const float *gamma, const float *beta, float *save_mean,
                                float *save_invstd, float *ss)
{
    const double invstd = 1.0 / sqrt(var + eps);
    if (save_mean) {
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
    }
    const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
    ss[c] = (float)(g * invstd);
    ss[C + c] = (float)(b - mean * g * invstd);
}

/* Evaluation: one thread per channel folds the running statistics into ss. */
__global__ void bn_fold_kernel(int C, double eps, const float *gamma, const float *beta,
                               const float *running_mean, const float *running_var,
                               float *save_mean, float *save_invstd, float *ss)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C)
        bn_fold_channel(c, C, running_mean[c], running_var[c], eps, gamma, beta, save_mean,
                        save_invstd, ss);
}

// @snippet gpu_bn_stats
/* Training: block c computes channel c's batch mean and biased variance over the N*HW
 * values (a strided sum per thread in double, then block_sum's fixed tree; the squares
 * about the mean rounded to float first, as chapter 4 computes them), updates the running
 * statistics with the unbiased variance (when tracked), and folds scale and shift into ss. */
__global__ void __launch_bounds__(LAYER_THREADS)
bn_train_kernel(int N, int C, int HW, double eps, double momentum, const float *__restrict__ x,
                const float *gamma, const float *beta, float *running_mean, float *running_var,
                float *save_mean, float *save_invstd, float *ss)
{
    __shared__ double part[LAYER_THREADS];
    const int c = blockIdx.x;
    const long long M = (long long)N * HW;
    double s = 0.0;
    for (long long e = threadIdx.x; e < M; e += blockDim.x)
        s += x[((e / HW) * C + c) * HW + e % HW];
    const double mean = block_sum(s, part) / (double)M;
    const float meanf = (float)mean;
    double q = 0.0;
    for (long long e = threadIdx.x; e < M; e += blockDim.x) {
        const float dv = x[((e / HW) * C + c) * HW + e % HW] - meanf;
        q += (double)(dv * dv);
    }
    const double sq = block_sum(q, part);
    if (threadIdx.x != 0) return;
    if (running_mean) {                 /* PyTorch: the unbiased variance for the estimate */
        running_mean[c] = (float)((1 - momentum) * running_mean[c] + momentum * mean);
        running_var[c] = (float)((1 - momentum) * running_var[c] + momentum * sq / (double)(M - 1));
    }
    bn_fold_channel(c, C, mean, sq / (double)M, eps, gamma, beta, save_mean, save_invstd, ss);
}
// @end gpu_bn_stats

/* y[e] = x[e] * ss[c] + ss[C + c] for the channel c of element e, then relu when asked
 * (y may be x). */
__global__ void channel_affine_kernel(long long n, int C, int HW, const float *x,
                                      const float *__restrict__ ss, float *y, int relu)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int c = (int)(e / HW % C);
    const float v = x[e] * ss[c] + ss[C + c];
    y[e] = relu ? relu1(v) : v;
}

cr_status cr_cuda_batchnorm_forward(const cr_bn_params *p, bool training, cr_cuda_nchw d,
                                    const float *x, const float *gamma, const float *beta,
                                    float *running_mean, float *running_var, float *y,
                                    float *save_mean, float *save_invstd, bool relu)
{
    const char *fn = "cr_cuda_batchnorm_forward";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "x", d, &n));
    if (!p) return cr_fail(CR_EINVAL, "%s: p is NULL", fn);
    if (!x || !y) return cr_fail(CR_EINVAL, "%s: x or y is NULL", fn);
    if ((!gamma) != (!beta))
        return cr_fail(CR_EINVAL, "%s: gamma and beta must both be given or both NULL", fn);
    if ((!running_mean) != (!running_var))
        return cr_fail(CR_EINVAL, "%s: running_mean and running_var go together", fn);
    if ((!save_mean) != (!save_invstd))
        return cr_fail(CR_EINVAL, "%s: save_mean and save_invstd go together", fn);
    if (!training && !running_mean)
        return cr_fail(CR_EINVAL, "%s: evaluation mode needs the running statistics", fn);
    if (!(p->eps > 0)) return cr_fail(CR_EINVAL, "%s: eps must be > 0, got %g", fn, p->eps);
    const long long M = (long long)(d.n * d.h * d.w);
    if (training && M < 2)
        return cr_fail(CR_EINVAL, "%s: training needs more than 1 value per channel (got "
                       "N*H*W = %lld), as in PyTorch", fn, M);
    const int C = (int)d.c, HW = (int)(d.h * d.w);
    float *ss;
    CR_TRY(cr_layer_scratch(2 * (size_t)C * sizeof(float), (void **)&ss));
    if (training) {
        bn_train_kernel<<<C, LAYER_THREADS>>>((int)d.n, C, HW, p->eps, p->momentum, x, gamma,
                                               beta, running_mean, running_var, save_mean,
                                               save_invstd, ss);
        CR_TRY(CR_CUDA_LAUNCHED("bn_train_kernel"));
    } else {
        bn_fold_kernel<<<cr_cuda_blocks(C, LAYER_THREADS), LAYER_THREADS>>>(
            C, p->eps, gamma, beta, running_mean, running_var, save_mean, save_invstd, ss);
        CR_TRY(CR_CUDA_LAUNCHED("bn_fold_kernel"));
    }
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, LAYER_THREADS, "channel_affine_kernel", &blocks));
    channel_affine_kernel<<<blocks, LAYER_THREADS>>>(n, C, HW, x, ss, y, relu ? 1 : 0);
    return CR_CUDA_LAUNCHED("channel_affine_kernel");
}

/* ---- GroupNorm ------------------------------------------------------------------------------------------ */

// @snippet gpu_groupnorm
/* Block ng normalises group ng % G of image ng / G: its Cg channels are Cg*HW contiguous
 * values. Mean and biased variance as bn_train_kernel; then each channel's scale
 * (invstd * gamma) and shift (beta - mean * invstd * gamma) in double, rounded once, as
 * chapter 4, and the channel's values are written (y may be x: every value is read for
 * the statistics before the barriers of the second sum, then read and written by one
 * thread). */
__global__ void __launch_bounds__(LAYER_THREADS)
groupnorm_kernel(int G, int Cg, int HW, double eps, const float *x, const float *gamma,
                 const float *beta, float *y, float *save_mean, float *save_invstd, int relu)
{
    __shared__ double part[LAYER_THREADS];
    const int ng = blockIdx.x;
    const long long M = (long long)Cg * HW, base = (long long)ng * M;
    double s = 0.0;
    for (long long e = threadIdx.x; e < M; e += blockDim.x) s += x[base + e];
    const double mean = block_sum(s, part) / (double)M;
    const float meanf = (float)mean;
    double q = 0.0;
    for (long long e = threadIdx.x; e < M; e += blockDim.x) {
        const float dv = x[base + e] - meanf;
        q += (double)(dv * dv);
    }
    const double invstd = 1.0 / sqrt(block_sum(q, part) / (double)M + eps);
    if (save_mean && threadIdx.x == 0) {
        save_mean[ng] = (float)mean;
        save_invstd[ng] = (float)invstd;
    }
    for (int cc = 0; cc < Cg; cc++) {
        const int c = ng % G * Cg + cc;
        const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
        const float scale = (float)(invstd * g), shift = (float)(b - mean * invstd * g);
        const long long off = base + (long long)cc * HW;
        for (int i = threadIdx.x; i < HW; i += blockDim.x) {
            const float v = x[off + i] * scale + shift;
            y[off + i] = relu ? relu1(v) : v;
        }
    }
}
// @end gpu_groupnorm

cr_status cr_cuda_groupnorm_forward(int64_t groups, double eps, cr_cuda_nchw d, const float *x,
                                    const float *gamma, const float *beta, float *y,
                                    float *save_mean, float *save_invstd, bool relu)
{
    const char *fn = "cr_cuda_groupnorm_forward";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "x", d, &n));
    if (groups < 1 || d.c % groups != 0)
        return cr_fail(CR_EINVAL, "%s: %lld channels are not divisible into %lld groups", fn,
                       (long long)d.c, (long long)groups);
    if (!x || !y) return cr_fail(CR_EINVAL, "%s: x or y is NULL", fn);
    if ((!gamma) != (!beta))
        return cr_fail(CR_EINVAL, "%s: gamma and beta must both be given or both NULL", fn);
    if ((!save_mean) != (!save_invstd))
        return cr_fail(CR_EINVAL, "%s: save_mean and save_invstd go together", fn);
    if (!(eps > 0)) return cr_fail(CR_EINVAL, "%s: eps must be > 0, got %g", fn, eps);
    const int G = (int)groups;
    groupnorm_kernel<<<(unsigned)(d.n * groups), LAYER_THREADS>>>(
        G, (int)(d.c / groups), (int)(d.h * d.w), eps, x, gamma, beta, y, save_mean, save_invstd,
        relu ? 1 : 0);
    return CR_CUDA_LAUNCHED("groupnorm_kernel");
}

/* ---- max-pool --------------------------------------------------------------------------------------------- */

/* The pool's sizes for the kernel. */
struct PoolDims {
    int H, W, Ho, Wo, kh, kw, sh, sw, ph, pw;
};

// @snippet gpu_maxpool
/* One thread per output: chapter 4's scan of the window clipped to the plane (padding is
 * -infinity, never chosen), row by row, a strictly greater value replacing the best (the
 * first maximum wins), a NaN ending the scan (it propagates). */
__global__ void maxpool_kernel(long long n, PoolDims p, const float *__restrict__ x,
                               float *__restrict__ y, int64_t *argmax)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int ow = (int)(e % p.Wo), oh = (int)(e / p.Wo % p.Ho);
    const float *xp = x + e / ((long long)p.Wo * p.Ho) * p.H * p.W;
    const int h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
    const int i0 = h0 > 0 ? h0 : 0, i1 = h0 + p.kh < p.H ? h0 + p.kh : p.H;
    const int j0 = w0 > 0 ? w0 : 0, j1 = w0 + p.kw < p.W ? w0 + p.kw : p.W;
    float best = xp[i0 * p.W + j0];
    int at = i0 * p.W + j0;
    for (int i = i0; i < i1 && best == best; i++)
        for (int j = (i == i0 ? j0 + 1 : j0); j < j1; j++) {
            const float v = xp[i * p.W + j];
            if (v > best || v != v) {
                best = v;
                at = i * p.W + j;
                if (v != v) break;
            }
        }
    y[e] = best;
    if (argmax) argmax[e] = at;
}
// @end gpu_maxpool

cr_status cr_cuda_maxpool2d_forward(const cr_pool_params *p, cr_cuda_nchw d, const float *x,
                                    float *y, int64_t *argmax)
{
    const char *fn = "cr_cuda_maxpool2d_forward";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "x", d, &n));
    if (!p) return cr_fail(CR_EINVAL, "%s: p is NULL", fn);
    if (!x || !y) return cr_fail(CR_EINVAL, "%s: x or y is NULL", fn);
    int64_t ho = 0, wo = 0;
    CR_TRY(cr_maxpool2d_out_size(p, d.h, d.w, &ho, &wo));
    const PoolDims pd = {(int)d.h, (int)d.w, (int)ho, (int)wo, (int)p->kernel_h, (int)p->kernel_w,
                         (int)p->stride_h, (int)p->stride_w, (int)p->pad_h, (int)p->pad_w};
    const long long ny = (long long)(d.n * d.c * ho * wo);
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(ny, LAYER_THREADS, "maxpool_kernel", &blocks));
    maxpool_kernel<<<blocks, LAYER_THREADS>>>(ny, pd, x, y, argmax);
    return CR_CUDA_LAUNCHED("maxpool_kernel");
}

/* ---- up-sampling --------------------------------------------------------------------------------------------- */


// @snippet gpu_upsample
/* One thread per output: both axes' taps, then chapter 4's sums in its order,
 * l0h * (l0w * x00 + l1w * x01) + l1h * (l0w * x10 + l1w * x11), in float. */
__global__ void upsample_kernel(long long n, UpDims u, const float *__restrict__ x,
                                float *__restrict__ y)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int ow = (int)(e % u.Wo), oh = (int)(e / u.Wo % u.Ho);
    const float *xp = x + e / ((long long)u.Wo * u.Ho) * u.H * u.W;
    int h0, h1, w0, w1;
    float a0, a1, b0, b1;
    up_tap(u, u.H, u.Ho, u.scale_h, oh, &h0, &h1, &a0, &a1);
    up_tap(u, u.W, u.Wo, u.scale_w, ow, &w0, &w1, &b0, &b1);
    if (!u.bilinear) {
        y[e] = xp[h0 * u.W + w0];
        return;
    }
    const float t0 = b0 * xp[h0 * u.W + w0] + b1 * xp[h0 * u.W + w1];
    const float t1 = b0 * xp[h1 * u.W + w0] + b1 * xp[h1 * u.W + w1];
    y[e] = a0 * t0 + a1 * t1;
}
// @end gpu_upsample

cr_status cr_cuda_upsample_forward(const cr_upsample_params *p, cr_cuda_nchw d, const float *x,
                                   float *y)
{
    const char *fn = "cr_cuda_upsample_forward";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "x", d, &n));
    if (!p) return cr_fail(CR_EINVAL, "%s: p is NULL", fn);
    if (!x || !y) return cr_fail(CR_EINVAL, "%s: x or y is NULL", fn);
    int64_t ho = 0, wo = 0;
    CR_TRY(cr_upsample_out_size(p, d.h, d.w, &ho, &wo));
    const double ny = (double)d.n * (double)d.c * (double)ho * (double)wo;
    if (ny > 2147483647.0)
        return cr_fail(CR_EINVAL, "%s: the output has %.0f elements, more than 2^31 - 1", fn, ny);
    const UpDims u = up_dims(p, d, ho, wo);
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d((long long)ny, LAYER_THREADS, "upsample_kernel", &blocks));
    upsample_kernel<<<blocks, LAYER_THREADS>>>((long long)ny, u, x, y);
    return CR_CUDA_LAUNCHED("upsample_kernel");
}

/* ---- cross-entropy ------------------------------------------------------------------------------------------- */

/* The largest logit of pixel i and the sum of exp(z_c - max) over the classes, in double,
 * as chapter 4's softmax_pixel. z: the image's C x HW planes. */
__device__ void softmax_stats(const float *z, int C, int HW, int i, double *mx, double *sum)
{
    double m = -INFINITY, s = 0.0;
    for (int c = 0; c < C; c++)
        if (z[(long long)c * HW + i] > m) m = z[(long long)c * HW + i];
    for (int c = 0; c < C; c++) s += exp(z[(long long)c * HW + i] - m);
    *mx = m;
    *sum = s;
}

// @snippet gpu_cross_entropy
/* Pass 1, one thread per pixel: nll[e] = -log softmax(z_e)[t_e], 0 where ignored; a label
 * that is neither a class nor ignore_index lowers *bad to its pixel (the first one wins
 * by atomicMin: the same answer in any order). */
__global__ void ce_nll_kernel(long long P, int C, int HW, const float *__restrict__ logits,
                              const int32_t *__restrict__ target, int ignore, double *nll, int *bad)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= P) return;
    const int t = target[e];
    nll[e] = 0.0;
    if (t == ignore) return;
    if (t < 0 || t >= C) {
        atomicMin(bad, (int)e);
        return;
    }
    const float *z = logits + e / HW * C * HW;
    double mx, sum;
    softmax_stats(z, C, HW, (int)(e % HW), &mx, &sum);
    nll[e] = -log(exp(z[(long long)t * HW + e % HW] - mx) / sum);
}

/* Pass 2, one block: out[0] = the sum of nll, out[1] = the pixels not ignored. */
__global__ void __launch_bounds__(CE_SUM_THREADS)
ce_sum_kernel(long long P, const double *nll, const int32_t *target, int ignore, double *out)
{
    __shared__ double part[CE_SUM_THREADS];
    double s = 0.0, k = 0.0;
    for (long long e = threadIdx.x; e < P; e += blockDim.x) {
        s += nll[e];
        k += target[e] != ignore ? 1.0 : 0.0;
    }
    const double total = block_sum(s, part), count = block_sum(k, part);
    if (threadIdx.x == 0) {
        out[0] = total;
        out[1] = count;
    }
}

/* Pass 3, one thread per pixel: dlogits = (softmax - onehot) / count, 0 where ignored. */
__global__ void ce_grad_kernel(long long P, int C, int HW, const float *__restrict__ logits,
                               const int32_t *__restrict__ target, int ignore,
                               const double *out, float *__restrict__ dlogits)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= P) return;
    const int t = target[e], i = (int)(e % HW);
    const long long base = e / HW * C * HW;
    if (t == ignore) {
        for (int c = 0; c < C; c++) dlogits[base + (long long)c * HW + i] = 0.0f;
        return;
    }
    double mx, sum;
    softmax_stats(logits + base, C, HW, i, &mx, &sum);
    const double count = out[1];
    for (int c = 0; c < C; c++) {
        const double pc = exp(logits[base + (long long)c * HW + i] - mx) / sum;
        dlogits[base + (long long)c * HW + i] = (float)((pc - (c == t ? 1.0 : 0.0)) / count);
    }
}
// @end gpu_cross_entropy

cr_status cr_cuda_cross_entropy(cr_cuda_nchw d, const float *logits, const int32_t *target,
                                int32_t ignore_index, double *loss, float *dlogits)
{
    const char *fn = "cr_cuda_cross_entropy";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "logits", d, &n));
    if (!logits || !target) return cr_fail(CR_EINVAL, "%s: logits or target is NULL", fn);
    if (!loss) return cr_fail(CR_EINVAL, "%s: loss is NULL", fn);
    const long long P = (long long)(d.n * d.h * d.w);
    const int C = (int)d.c, HW = (int)(d.h * d.w);
    if (P >= 0x7f7f7f7fLL)   /* the "no bad label" mark below */
        return cr_fail(CR_EINVAL, "%s: %lld pixels, at most 2139062142", fn, P);
    /* scratch: nll (P doubles), the two sums, the first bad pixel */
    char *s;
    CR_TRY(cr_layer_scratch((size_t)P * sizeof(double) + 2 * sizeof(double) + sizeof(int), (void **)&s));
    double *nll = (double *)s, *out = nll + P;
    int *bad = (int *)(out + 2);
    CR_TRY(cr_cuda_check(cudaMemset(bad, 0x7f, sizeof(int)), "cudaMemset (bad label)"));
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(P, LAYER_THREADS, "ce_nll_kernel", &blocks));
    ce_nll_kernel<<<blocks, LAYER_THREADS>>>(P, C, HW, logits, target, ignore_index, nll, bad);
    CR_TRY(CR_CUDA_LAUNCHED("ce_nll_kernel"));
    int first_bad;
    CR_TRY(cr_cuda_to_host(&first_bad, bad, sizeof first_bad));
    if (first_bad < P) {
        int32_t label;
        CR_TRY(cr_cuda_to_host(&label, target + first_bad, sizeof label));
        return cr_fail(CR_EINVAL, "cross_entropy: target label %d at image %lld, pixel %lld is "
                       "not a class (0..%d) nor the ignore index %d", (int)label,
                       (long long)first_bad / HW, (long long)first_bad % HW, C - 1,
                       (int)ignore_index);
    }
    ce_sum_kernel<<<1, CE_SUM_THREADS>>>(P, nll, target, ignore_index, out);
    CR_TRY(CR_CUDA_LAUNCHED("ce_sum_kernel"));
    if (dlogits) {
        ce_grad_kernel<<<blocks, LAYER_THREADS>>>(P, C, HW, logits, target, ignore_index, out,
                                                  dlogits);
        CR_TRY(CR_CUDA_LAUNCHED("ce_grad_kernel"));
    }
    double sums[2];
    CR_TRY(cr_cuda_to_host(sums, out, sizeof sums));
    *loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    return CR_OK;
}

/* ---- AdamW ----------------------------------------------------------------------------------------------------- */

// @snippet gpu_adamw
/* One thread per value: chapter 4's AdamW step in double (decoupled decay, the two
 * moments, bias correction folded into step_size and sqrt_bc2 by the host). */
__global__ void adamw_kernel(long long n, float *__restrict__ p, const float *__restrict__ g,
                             float *__restrict__ m, float *__restrict__ v, double lr, double wd,
                             double b1, double b2, double eps, double step_size, double sqrt_bc2)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const double gi = g[e];
    double pi = p[e] * (1.0 - lr * wd);
    const double mi = b1 * m[e] + (1 - b1) * gi;
    const double vi = b2 * v[e] + (1 - b2) * gi * gi;
    m[e] = (float)mi;
    v[e] = (float)vi;
    pi -= step_size * mi / (sqrt(vi) / sqrt_bc2 + eps);
    p[e] = (float)pi;
}
// @end gpu_adamw

cr_status cr_cuda_adamw_update(const cr_optim_config *c, int64_t t, int64_t n, float *p,
                               const float *g, float *m, float *v)
{
    const char *fn = "cr_cuda_adamw_update";
    if (!c) return cr_fail(CR_EINVAL, "%s: config is NULL", fn);
    if (c->kind != CR_OPTIM_ADAMW) return cr_fail(CR_EINVAL, "%s: the config is not AdamW's", fn);
    if (!(c->lr >= 0) || !(c->weight_decay >= 0) || !(c->eps > 0) || !(c->beta1 >= 0 && c->beta1 < 1) ||
        !(c->beta2 >= 0 && c->beta2 < 1))
        return cr_fail(CR_EINVAL, "%s: lr %g, weight_decay %g, eps %g, betas (%g, %g): expected "
                       "lr >= 0, weight_decay >= 0, eps > 0, 0 <= beta < 1", fn, c->lr,
                       c->weight_decay, c->eps, c->beta1, c->beta2);
    if (t < 1) return cr_fail(CR_EINVAL, "%s: step number must be >= 1, got %lld", fn, (long long)t);
    CR_TRY(check_n(fn, n));
    if (n == 0) return CR_OK;
    if (!p || !g || !m || !v) return cr_fail(CR_EINVAL, "%s: p, g, m or v is NULL", fn);
    const double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, LAYER_THREADS, "adamw_kernel", &blocks));
    adamw_kernel<<<blocks, LAYER_THREADS>>>((long long)n, p, g, m, v, c->lr, c->weight_decay,
                                            c->beta1, c->beta2, c->eps, c->lr / bc1, sqrt(bc2));
    return CR_CUDA_LAUNCHED("adamw_kernel");
}
