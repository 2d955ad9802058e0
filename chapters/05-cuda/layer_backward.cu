/* layer_backward.cu — chapter 5: the backward passes of the layers in layer_kernels.cu
 * (cuda_layers.h, "backward"): ReLU and the add's fused ReLU, BatchNorm, GroupNorm,
 * max-pool, the up-samplings. Each is the device twin of chapter 4's CPU backward
 * (layers.c). Where chapter 4 scatters (the max-pool's argmax, the up-sampling's adjoint),
 * each thread here GATHERS the gradient of one input element, visiting the outputs that
 * read it in the order chapter 4 adds them: no atomics, the same float additions in the
 * same order, so the emulator's results equal the CPU's bit for bit. The reductions of
 * the norms are the forward's: a block per channel or per (image, group), sums in double,
 * a fixed tree in shared memory, the same bits on every run and schedule. */
#include <math.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cuda_layers.h"
#include "cuda_util.h"
#include "layer_util.h"
#include "upsample_taps.h"

#define BWD_THREADS 256   /* element-wise and gather kernels, per-channel reductions */

/* ---- argument checks ------------------------------------------------------------------------ */

/* CR_EINVAL naming the pointer argument `name` of fn when p is NULL. */
static cr_status bwd_need(const char *fn, const char *name, const void *p)
{
    if (!p) return cr_fail(CR_EINVAL, "%s: %s is NULL", fn, name);
    return CR_OK;
}

/* Checks dy's shape `got` against the forward's output for the input d (d.n x d.c x ho x
 * wo), then as cr_layer_check_dims does, and that dy and dx are given; *ny = dy's numel. */
static cr_status bwd_check_dy(const char *fn, cr_cuda_nchw got, cr_cuda_nchw d, int64_t ho,
                              int64_t wo, const float *dy, const float *dx, long long *ny)
{
    const cr_cuda_nchw want = {d.n, d.c, ho, wo};
    if (got.n != want.n || got.c != want.c || got.h != want.h || got.w != want.w)
        return cr_fail(CR_EINVAL, "%s: dy is %lldx%lldx%lldx%lld, expected the forward's output "
                       "shape %lldx%lldx%lldx%lld", fn, (long long)got.n, (long long)got.c,
                       (long long)got.h, (long long)got.w, (long long)want.n, (long long)want.c,
                       (long long)want.h, (long long)want.w);
    CR_TRY(cr_layer_check_dims(fn, "dy", got, ny));
    CR_TRY(bwd_need(fn, "dy", dy));
    return bwd_need(fn, "dx", dx);
}

/* ---- ReLU and the add's fused ReLU ----------------------------------------------------------- */

/* dy where the forward's output y is > 0, else 0 (chapter 4's cr_relu_backward rule: a NaN
 * y passes nothing); dy unchanged when y is NULL (no ReLU was fused). */
__device__ __forceinline__ float relu_mask(const float *y, const float *dy, long long e)
{
    const float g = dy[e];
    return (!y || y[e] > 0.0f) ? g : 0.0f;
}

/* dx[e] = dy[e] where y[e] > 0, else 0, for e < n (dx may be dy). */
__global__ void relu_backward_kernel(long long n, const float *y, const float *dy, float *dx)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e < n) dx[e] = relu_mask(y, dy, e);
}

/* da[e] = db[e] = dy[e] masked by y[e] > 0, for e < n; da or db NULL: not written (either
 * may be dy: each thread reads its element before it writes it). */
__global__ void add_relu_backward_kernel(long long n, const float *y, const float *dy, float *da,
                                         float *db)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const float g = relu_mask(y, dy, e);
    if (da) da[e] = g;
    if (db) db[e] = g;
}

cr_status cr_cuda_relu_backward(int64_t n, const float *y, const float *dy, float *dx)
{
    const char *fn = "cr_cuda_relu_backward";
    if (n < 0 || n > 2147483647LL)
        return cr_fail(CR_EINVAL, "%s: n = %lld: expected 0 <= n <= 2^31 - 1", fn, (long long)n);
    if (n == 0) return CR_OK;
    CR_TRY(bwd_need(fn, "y", y));
    CR_TRY(bwd_need(fn, "dy", dy));
    CR_TRY(bwd_need(fn, "dx", dx));
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, BWD_THREADS, "relu_backward_kernel", &blocks));
    relu_backward_kernel<<<blocks, BWD_THREADS>>>((long long)n, y, dy, dx);
    return CR_CUDA_LAUNCHED("relu_backward_kernel");
}

cr_status cr_cuda_add_relu_backward(int64_t n, const float *y, const float *dy, float *da,
                                    float *db)
{
    const char *fn = "cr_cuda_add_relu_backward";
    if (n < 0 || n > 2147483647LL)
        return cr_fail(CR_EINVAL, "%s: n = %lld: expected 0 <= n <= 2^31 - 1", fn, (long long)n);
    if (n == 0 || (!da && !db)) return CR_OK;
    CR_TRY(bwd_need(fn, "y", y));
    CR_TRY(bwd_need(fn, "dy", dy));
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, BWD_THREADS, "add_relu_backward_kernel", &blocks));
    add_relu_backward_kernel<<<blocks, BWD_THREADS>>>((long long)n, y, dy, da, db);
    return CR_CUDA_LAUNCHED("add_relu_backward_kernel");
}

/* ---- block reductions -------------------------------------------------------------------------- */

/* The sums of every thread's *a and *b over the block (blockDim.x a power of two, part
 * holding 2 * blockDim.x doubles), written back to *a and *b in every thread: the
 * forward's block_sum for two values at once, the same fixed halving tree. Every thread
 * of the block must call it. */
__device__ void bwd_block_sum2(double *a, double *b, double *part)
{
    const int t = threadIdx.x, T = blockDim.x;
    part[t] = *a;
    part[T + t] = *b;
    __syncthreads();
    for (int half = T / 2; half > 0; half /= 2) {
        if (t < half) {
            part[t] += part[t + half];
            part[T + t] += part[T + t + half];
        }
        __syncthreads();
    }
    *a = part[0];
    *b = part[T];
    __syncthreads();   /* part may be reused by the caller's next sum */
}

/* The element of a channel's e-th value (e < N*HW): image e / HW, pixel e % HW. */
__device__ __forceinline__ long long chan_elem(long long e, int C, int c, int HW)
{
    return (e / HW * C + c) * HW + e % HW;
}

/* ---- BatchNorm ---------------------------------------------------------------------------------- */

// @snippet gpu_bn_backward
/* Block c: channel c's sums of g and g * (x - mean) over its N*HW values (g = dy masked by
 * the forward's output y when it fused a ReLU; each product rounded to float as chapter
 * 4's sums_dy_f rounds it, then a strided sum per thread in double and the fixed tree);
 * dbeta = sum g, dgamma = sum g * xhat; then dx = k * (g - a - xhat * b) written as
 * chapter 4 writes it, kf * g + kx * x + k0, with kf, kx, k0 computed in double and
 * rounded once (training: a, b the means of g and g * xhat; evaluation: 0). dx may be dy:
 * every dy is read for the sums before the barriers, then read and written by one thread. */
__global__ void __launch_bounds__(BWD_THREADS)
bn_backward_kernel(int N, int C, int HW, int training, const float *x, const float *gamma,
                   const float *save_mean, const float *save_invstd, const float *y,
                   const float *dy, float *dx, float *dgamma, float *dbeta)
{
    __shared__ double part[2 * BWD_THREADS];
    const int c = blockIdx.x;
    const long long Mi = (long long)N * HW;
    const float meanf = save_mean[c];
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    for (long long e = threadIdx.x; e < Mi; e += blockDim.x) {
        const long long i = chan_elem(e, C, c, HW);
        const float g = relu_mask(y, dy, i);
        sum_dy += g;
        sum_dy_xc += (double)(g * (x[i] - meanf));
    }
    bwd_block_sum2(&sum_dy, &sum_dy_xc, part);
    const double mean = meanf, invstd = save_invstd[c], gm = gamma ? gamma[c] : 1.0;
    const double M = (double)Mi, sum_dy_xhat = sum_dy_xc * invstd;
    if (threadIdx.x == 0) {
        if (dbeta) dbeta[c] = (float)sum_dy;
        if (dgamma) dgamma[c] = (float)sum_dy_xhat;
    }
    if (!dx) return;
    const double k = gm * invstd;
    const double a = training ? sum_dy / M : 0.0, b = training ? sum_dy_xhat / M : 0.0;
    const float kf = (float)k, kx = (float)(-k * invstd * b);
    const float k0 = (float)(-k * a + k * invstd * b * mean);
    for (long long e = threadIdx.x; e < Mi; e += blockDim.x) {
        const long long i = chan_elem(e, C, c, HW);
        dx[i] = kf * relu_mask(y, dy, i) + kx * x[i] + k0;
    }
}
// @end gpu_bn_backward

cr_status cr_cuda_batchnorm_backward(bool training, cr_cuda_nchw d, const float *x,
                                     const float *gamma, const float *save_mean,
                                     const float *save_invstd, const float *y, const float *dy,
                                     float *dx, float *dgamma, float *dbeta)
{
    const char *fn = "cr_cuda_batchnorm_backward";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "x", d, &n));
    CR_TRY(bwd_need(fn, "x", x));
    CR_TRY(bwd_need(fn, "save_mean", save_mean));
    CR_TRY(bwd_need(fn, "save_invstd", save_invstd));
    CR_TRY(bwd_need(fn, "dy", dy));
    if (!dx && !dgamma && !dbeta) return CR_OK;
    bn_backward_kernel<<<(unsigned)d.c, BWD_THREADS>>>((int)d.n, (int)d.c, (int)(d.h * d.w),
                                                        training ? 1 : 0, x, gamma, save_mean,
                                                        save_invstd, y, dy, dx, dgamma, dbeta);
    return CR_CUDA_LAUNCHED("bn_backward_kernel");
}

/* ---- GroupNorm ---------------------------------------------------------------------------------- */

// @snippet gpu_gn_backward
/* Block ng: group ng % G of image ng / G (its Cg channels are M = Cg*HW contiguous
 * values). With g = dy masked by y: sg = the sum of gamma * g, sgx = the sum of gamma *
 * g * (x - mean) (each product g * (x - mean) rounded to float as chapter 4's, the rest
 * in double, the fixed tree), then dx = invstd * (gamma * g - sg/M - xhat * sgx * invstd/M)
 * written as chapter 4 writes it, kd * g + kx * x + k0. dx may be dy (every value is read
 * for the sums before the barriers, then read and written by one thread). */
__global__ void __launch_bounds__(BWD_THREADS)
gn_backward_dx_kernel(int G, int Cg, int HW, const float *x, const float *gamma,
                      const float *save_mean, const float *save_invstd, const float *y,
                      const float *dy, float *dx)
{
    __shared__ double part[2 * BWD_THREADS];
    const int ng = blockIdx.x, c0 = ng % G * Cg;
    const long long M = (long long)Cg * HW, base = (long long)ng * M;
    const float meanf = save_mean[ng];
    const double mean = meanf, invstd = save_invstd[ng];
    double sg = 0.0, sgx = 0.0;
    for (long long e = threadIdx.x; e < M; e += blockDim.x) {
        const float g = relu_mask(y, dy, base + e);
        const double gm = gamma ? gamma[c0 + e / HW] : 1.0;
        sg += gm * g;
        sgx += gm * (double)(g * (x[base + e] - meanf));
    }
    bwd_block_sum2(&sg, &sgx, part);
    sg /= (double)M;
    sgx = sgx * invstd / (double)M;
    const float kx = (float)(-invstd * invstd * sgx);
    const float k0 = (float)(-invstd * sg + invstd * invstd * sgx * mean);
    for (long long e = threadIdx.x; e < M; e += blockDim.x) {
        const float kd = (float)(invstd * (gamma ? gamma[c0 + e / HW] : 1.0));
        dx[base + e] = kd * relu_mask(y, dy, base + e) + kx * x[base + e] + k0;
    }
}

/* Block c: dbeta[c] = the sum of g over channel c's N*HW values, dgamma[c] = the sum of
 * g * (x - mean) * invstd with each image's statistics (the product g * (x - mean) in
 * float as chapter 4's, the rest in double, the fixed tree). Runs before the dx kernel
 * (dx may overwrite dy). */
__global__ void __launch_bounds__(BWD_THREADS)
gn_backward_params_kernel(int N, int C, int G, int HW, const float *x, const float *save_mean,
                          const float *save_invstd, const float *y, const float *dy,
                          float *dgamma, float *dbeta)
{
    __shared__ double part[2 * BWD_THREADS];
    const int c = blockIdx.x, grp = c / (C / G);
    const long long Mi = (long long)N * HW;
    double bsum = 0.0, gsum = 0.0;
    for (long long e = threadIdx.x; e < Mi; e += blockDim.x) {
        const long long i = chan_elem(e, C, c, HW);
        const int st = (int)(e / HW) * G + grp;   /* the image's statistics */
        const float g = relu_mask(y, dy, i);
        bsum += g;
        gsum += (double)(g * (x[i] - save_mean[st])) * (double)save_invstd[st];
    }
    bwd_block_sum2(&bsum, &gsum, part);
    if (threadIdx.x != 0) return;
    if (dgamma) dgamma[c] = (float)gsum;
    if (dbeta) dbeta[c] = (float)bsum;
}
// @end gpu_gn_backward

cr_status cr_cuda_groupnorm_backward(int64_t groups, cr_cuda_nchw d, const float *x,
                                     const float *gamma, const float *save_mean,
                                     const float *save_invstd, const float *y, const float *dy,
                                     float *dx, float *dgamma, float *dbeta)
{
    const char *fn = "cr_cuda_groupnorm_backward";
    long long n = 0;
    CR_TRY(cr_layer_check_dims(fn, "x", d, &n));
    if (groups < 1 || d.c % groups != 0)
        return cr_fail(CR_EINVAL, "%s: %lld channels are not divisible into %lld groups", fn,
                       (long long)d.c, (long long)groups);
    CR_TRY(bwd_need(fn, "x", x));
    CR_TRY(bwd_need(fn, "save_mean", save_mean));
    CR_TRY(bwd_need(fn, "save_invstd", save_invstd));
    CR_TRY(bwd_need(fn, "dy", dy));
    const int G = (int)groups, HW = (int)(d.h * d.w);
    if (dgamma || dbeta) {
        gn_backward_params_kernel<<<(unsigned)d.c, BWD_THREADS>>>((int)d.n, (int)d.c, G, HW, x,
                                                                  save_mean, save_invstd, y, dy,
                                                                  dgamma, dbeta);
        CR_TRY(CR_CUDA_LAUNCHED("gn_backward_params_kernel"));
    }
    if (!dx) return CR_OK;
    gn_backward_dx_kernel<<<(unsigned)(d.n * groups), BWD_THREADS>>>(
        G, (int)(d.c / groups), HW, x, gamma, save_mean, save_invstd, y, dy, dx);
    return CR_CUDA_LAUNCHED("gn_backward_dx_kernel");
}

/* ---- max-pool ------------------------------------------------------------------------------------- */

/* The pool's sizes for the backward kernels. */
struct PoolBwdDims {
    int H, W, Ho, Wo, kh, kw, sh, sw, ph, pw;
};

/* The first and last output index (*lo, *hi; empty when *lo > *hi) along one axis whose
 * window (start o * s - p, k wide) covers input index i; out outputs. */
__device__ __forceinline__ void pool_cover(int i, int k, int s, int p, int out, int *lo, int *hi)
{
    const int a = i + p - k + 1;            /* o * s >= a */
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    const int b = (i + p) / s;              /* o * s <= i + p */
    *hi = b < out - 1 ? b : out - 1;
}

/* One thread per output e: argmax[e] must lie in e's window clipped to the plane (as the
 * forward chose it); otherwise the first such e (atomicMin: the same in any order) goes
 * to *bad. */
__global__ void maxpool_check_kernel(long long n, PoolBwdDims p, const int64_t *argmax, int *bad)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int ow = (int)(e % p.Wo), oh = (int)(e / p.Wo % p.Ho);
    const int64_t at = argmax[e];
    const int h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
    bool ok = at >= 0 && at < (int64_t)p.H * p.W;
    if (ok) {
        const int i = (int)(at / p.W), j = (int)(at % p.W);
        ok = i >= h0 && i < h0 + p.kh && j >= w0 && j < w0 + p.kw;
    }
    if (!ok) atomicMin(bad, (int)e);
}

// @snippet gpu_maxpool_backward
/* One thread per input element (i, j) of a plane: the sum of dy over the outputs whose
 * window covers it and whose argmax chose it, row by row from 0.0f, the order in which
 * chapter 4 scatters them: a gather, no atomics, the same bits as the CPU. */
__global__ void maxpool_backward_kernel(long long n, PoolBwdDims p, const int64_t *__restrict__ argmax,
                                        const float *__restrict__ dy, float *__restrict__ dx)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int j = (int)(e % p.W), i = (int)(e / p.W % p.H);
    const long long plane = e / ((long long)p.W * p.H), obase = plane * p.Ho * p.Wo;
    int oh0, oh1, ow0, ow1;
    pool_cover(i, p.kh, p.sh, p.ph, p.Ho, &oh0, &oh1);
    pool_cover(j, p.kw, p.sw, p.pw, p.Wo, &ow0, &ow1);
    const int64_t me = (int64_t)i * p.W + j;
    float s = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++) {
            const long long o = obase + (long long)oh * p.Wo + ow;
            if (argmax[o] == me) s += dy[o];
        }
    dx[e] = s;
}
// @end gpu_maxpool_backward

cr_status cr_cuda_maxpool2d_backward(const cr_pool_params *p, cr_cuda_nchw d, cr_cuda_nchw dyd,
                                     const int64_t *argmax, const float *dy, float *dx)
{
    const char *fn = "cr_cuda_maxpool2d_backward";
    long long n = 0, ny = 0;
    CR_TRY(cr_layer_check_dims(fn, "dx", d, &n));
    CR_TRY(bwd_need(fn, "p", p));
    int64_t ho = 0, wo = 0;
    CR_TRY(cr_maxpool2d_out_size(p, d.h, d.w, &ho, &wo));
    CR_TRY(bwd_check_dy(fn, dyd, d, ho, wo, dy, dx, &ny));
    CR_TRY(bwd_need(fn, "argmax", argmax));
    const PoolBwdDims pd = {(int)d.h, (int)d.w, (int)ho, (int)wo, (int)p->kernel_h,
                            (int)p->kernel_w, (int)p->stride_h, (int)p->stride_w, (int)p->pad_h,
                            (int)p->pad_w};
    /* every argmax inside its window, or nothing is written */
    int *bad = NULL, first_bad = 0;
    CR_TRY(cr_layer_scratch(sizeof *bad, (void **)&bad));
    unsigned blocks = 1;
    cr_status st = cr_cuda_check(cudaMemset(bad, 0x7f, sizeof *bad), "cudaMemset (argmax check)");
    if (!st) st = cr_cuda_grid_1d(ny, BWD_THREADS, "maxpool_check_kernel", &blocks);
    if (!st) {
        maxpool_check_kernel<<<blocks, BWD_THREADS>>>(ny, pd, argmax, bad);
        st = CR_CUDA_LAUNCHED("maxpool_check_kernel");
    }
    if (!st) st = cr_cuda_to_host(&first_bad, bad, sizeof first_bad);
    if (st) return st;
    if (first_bad < ny) {
        int64_t at = 0;
        CR_TRY(cr_cuda_to_host(&at, argmax + first_bad, sizeof at));
        return cr_fail(CR_EINVAL, "%s: argmax[%d] = %lld is not in output %d's window of the "
                       "%lldx%lld plane (argmax must come from the forward with the same "
                       "pool and shape)", fn, first_bad, (long long)at, first_bad,
                       (long long)d.h, (long long)d.w);
    }
    CR_TRY(cr_cuda_grid_1d(n, BWD_THREADS, "maxpool_backward_kernel", &blocks));
    maxpool_backward_kernel<<<blocks, BWD_THREADS>>>(n, pd, argmax, dy, dx);
    return CR_CUDA_LAUNCHED("maxpool_backward_kernel");
}

/* ---- up-sampling ----------------------------------------------------------------------------------- */



/* The outputs [*lo, *hi) along one axis that can read input index s: i0 is non-decreasing
 * in the output index, and an output reads s only when i0 is s (or s - 1, bilinear), so a
 * binary search finds the first and a scan the end. */
__device__ void up_bwd_cover(const UpDims &u, int in, int out, double scale, int s, int *lo,
                             int *hi)
{
    const int first = u.bilinear ? s - 1 : s;
    int a = 0, b = out;                     /* the first dst with i0 >= first */
    while (a < b) {
        const int m = (a + b) / 2;
        int i0, i1;
        float l0, l1;
        up_tap(u, in, out, scale, m, &i0, &i1, &l0, &l1);
        if (i0 < first) a = m + 1;
        else b = m;
    }
    int e = a;
    for (;; e++) {
        if (e >= out) break;
        int i0, i1;
        float l0, l1;
        up_tap(u, in, out, scale, e, &i0, &i1, &l0, &l1);
        if (i0 > s) break;
    }
    *lo = a;
    *hi = e;
}

// @snippet gpu_upsample_backward
/* One thread per input pixel (h, w): chapter 4's adjoint, gathered. Chapter 4 spreads
 * each output row over its source rows into t (H x Wo), t[h][ow] = 0 + the i0 and i1
 * terms l * dy[oh][ow] for oh in order, then t's rows over the source columns, dx[h][w] =
 * 0 + the terms l * t[h][ow] for ow in order (nearest: without the weights). This thread
 * computes the t[h][ow] it needs and adds them in the same order: the same bits. */
__global__ void upsample_backward_kernel(long long n, UpDims u, const float *__restrict__ dy,
                                         float *__restrict__ dx)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int w = (int)(e % u.W), h = (int)(e / u.W % u.H);
    const float *g = dy + e / ((long long)u.W * u.H) * u.Ho * u.Wo;
    int oh0, oh1, ow0, ow1;
    up_bwd_cover(u, u.H, u.Ho, u.scale_h, h, &oh0, &oh1);
    up_bwd_cover(u, u.W, u.Wo, u.scale_w, w, &ow0, &ow1);
    float acc = 0.0f;
    for (int ow = ow0; ow < ow1; ow++) {
        int j0, j1;
        float b0, b1;
        up_tap(u, u.W, u.Wo, u.scale_w, ow, &j0, &j1, &b0, &b1);
        if (j0 != w && !(u.bilinear && j1 == w)) continue;
        float t = 0.0f;                     /* t[h][ow] */
        for (int oh = oh0; oh < oh1; oh++) {
            int i0, i1;
            float a0, a1;
            up_tap(u, u.H, u.Ho, u.scale_h, oh, &i0, &i1, &a0, &a1);
            const float v = g[(long long)oh * u.Wo + ow];
            if (!u.bilinear) {
                if (i0 == h) t += v;
                continue;
            }
            if (i0 == h) t += a0 * v;
            if (i1 == h) t += a1 * v;
        }
        if (!u.bilinear) {
            acc += t;
            continue;
        }
        if (j0 == w) acc += b0 * t;
        if (j1 == w) acc += b1 * t;
    }
    dx[e] = acc;
}
// @end gpu_upsample_backward

cr_status cr_cuda_upsample_backward(const cr_upsample_params *p, cr_cuda_nchw d, cr_cuda_nchw dyd,
                                    const float *dy, float *dx)
{
    const char *fn = "cr_cuda_upsample_backward";
    long long n = 0, ny = 0;
    CR_TRY(cr_layer_check_dims(fn, "dx", d, &n));
    CR_TRY(bwd_need(fn, "p", p));
    int64_t ho = 0, wo = 0;
    CR_TRY(cr_upsample_out_size(p, d.h, d.w, &ho, &wo));
    CR_TRY(bwd_check_dy(fn, dyd, d, ho, wo, dy, dx, &ny));
    const UpDims u = up_dims(p, d, ho, wo);
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d(n, BWD_THREADS, "upsample_backward_kernel", &blocks));
    upsample_backward_kernel<<<blocks, BWD_THREADS>>>(n, u, dy, dx);
    return CR_CUDA_LAUNCHED("upsample_backward_kernel");
}
