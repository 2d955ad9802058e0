/* conv_kernels.cu — chapter 5: convolution on the GPU, forward (direct, im2col + GEMM,
 * implicit GEMM, and on the tensor cores im2col + WMMA GEMM and the implicit GEMM) and
 * backward (dX, dW, db), for every nn.Conv2d option.
 *
 * All tensors are NCHW float32 in device memory, weights OIHW, as on the CPU. */
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cuda_util.h"
#include "pad_rule.h"
#include "tc_tile.h"   /* kernels 7-9's block tile (the tensor-core implicit GEMM) */

/* The sizes a kernel needs, copied from a cr_conv_shape into plain ints. */
struct ConvDims {
    int N, C, H, W;          /* input */
    int K, Ho, Wo;           /* output channels and size */
    int kh, kw, sh, sw, dh, dw;
    int pt, pl;              /* top and left padding (bottom and right follow from Ho, Wo) */
    int groups, cin_g, cout_g;
    int mode;                /* cr_pad_mode */
};

static ConvDims dims_of(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    ConvDims d;
    d.N = (int)s->batch; d.C = (int)p->in_channels; d.H = (int)s->h_in; d.W = (int)s->w_in;
    d.K = (int)p->out_channels; d.Ho = (int)s->h_out; d.Wo = (int)s->w_out;
    d.kh = (int)p->kernel_h; d.kw = (int)p->kernel_w;
    d.sh = (int)p->stride_h; d.sw = (int)p->stride_w;
    d.dh = (int)p->dilation_h; d.dw = (int)p->dilation_w;
    d.pt = (int)p->pad_top; d.pl = (int)p->pad_left;
    d.groups = (int)p->groups; d.cin_g = (int)s->cin_g; d.cout_g = (int)s->cout_g;
    d.mode = (int)p->pad_mode;
    return d;
}


/* Checks what every entry point needs: a bound shape, the pointers, sizes that fit int. */
static cr_status check_conv(const char *fn, const cr_conv_shape *s, const float *x,
                            const float *w, const float *b, const float *y, bool check_b)
{
    if (!s) return cr_fail(CR_EINVAL, "%s: shape is NULL", fn);
    if (!x || !w || !y) return cr_fail(CR_EINVAL, "%s: x, w or %s is NULL", fn, check_b ? "y" : "dy");
    if (check_b && s->p.bias != (b != NULL))
        return cr_fail(CR_EINVAL, "%s: bias is %s but b is %s", fn, s->p.bias ? "true" : "false",
                       b ? "given" : "NULL");
    const size_t lim = INT32_MAX;
    if (s->x_numel > lim || s->y_numel > lim || s->w_numel > lim)
        return cr_fail(CR_EINVAL, "%s: tensors of more than %zu elements are not supported on "
                       "the GPU (x %zu, y %zu)", fn, lim, s->x_numel, s->y_numel);
    if (s->p.groups > 65535)
        return cr_fail(CR_EINVAL, "%s: groups = %lld, at most 65535 on the GPU", fn,
                       (long long)s->p.groups);
    return CR_OK;
}

/* ---- path 1: direct ------------------------------------------------------------------------- */

// @snippet gpu_conv_direct
/* One thread per output element y[n][k][oh][ow]: the three inner loops of chapter 1
 * (input channel of the group, kernel row, kernel column). Consecutive threads compute
 * consecutive ow, so reads of x are close together and reads of w are broadcasts. */
__global__ void conv_direct_kernel(ConvDims d, const float *__restrict__ x,
                                   const float *__restrict__ w, const float *__restrict__ b,
                                   float *__restrict__ y)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)d.N * d.K * d.Ho * d.Wo) return;
    const int ow = (int)(e % d.Wo), oh = (int)(e / d.Wo % d.Ho);
    const int k = (int)(e / ((long long)d.Wo * d.Ho) % d.K);
    const int n = (int)(e / ((long long)d.Wo * d.Ho * d.K));
    const int c0 = k / d.cout_g * d.cin_g;                  /* first input channel of k's group */
    float acc = b ? b[k] : 0.0f;
    for (int c = 0; c < d.cin_g; c++) {
        const float *xc = x + ((long long)n * d.C + c0 + c) * d.H * d.W;
        const float *wc = w + ((long long)k * d.cin_g + c) * d.kh * d.kw;
        for (int r = 0; r < d.kh; r++) {
            const int ih = cr_pad_rule(oh * d.sh - d.pt + r * d.dh, d.H, d.mode);
            if (ih < 0) continue;                           /* a zero-padded row */
            for (int q = 0; q < d.kw; q++) {
                const int iw = cr_pad_rule(ow * d.sw - d.pl + q * d.dw, d.W, d.mode);
                if (iw >= 0) acc += xc[ih * d.W + iw] * wc[r * d.kw + q];
            }
        }
    }
    y[e] = acc;
}
// @end gpu_conv_direct

cr_status cr_cuda_conv2d_direct(const cr_conv_shape *s, const float *x, const float *w,
                                const float *b, float *y)
{
    CR_TRY(check_conv("cr_cuda_conv2d_direct", s, x, w, b, y, true));
    const ConvDims d = dims_of(s);
    conv_direct_kernel<<<cr_cuda_blocks((long long)s->y_numel, 256), 256>>>(d, x, w, b, y);
    return CR_CUDA_LAUNCHED("conv_direct_kernel");
}

/* ---- path 2: im2col + GEMM -------------------------------------------------------------------- */

// @snippet gpu_im2col
/* The patch matrix of image n, all groups: col[(c*kh + r)*kw + q][oh*Wo + ow] for every
 * input channel c (group g's rows are g*Cin_g*kh*kw onwards), padding resolved by
 * cr_pad_rule (zero where it says -1). One thread per element of col; consecutive threads
 * write consecutive columns. */
__global__ void im2col_kernel(ConvDims d, const float *__restrict__ x, int n,
                              float *__restrict__ col)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long P = (long long)d.Ho * d.Wo;
    if (e >= (long long)d.C * d.kh * d.kw * P) return;
    const int pix = (int)(e % P), row = (int)(e / P);
    const int q = row % d.kw, r = row / d.kw % d.kh, c = row / (d.kw * d.kh);
    const int oh = pix / d.Wo, ow = pix % d.Wo;
    const int ih = cr_pad_rule(oh * d.sh - d.pt + r * d.dh, d.H, d.mode);
    const int iw = cr_pad_rule(ow * d.sw - d.pl + q * d.dw, d.W, d.mode);
    col[e] = (ih < 0 || iw < 0) ? 0.0f : x[(((long long)n * d.C + c) * d.H + ih) * d.W + iw];
}
// @end gpu_im2col

/* y[n][k][pixel] = b[k] for every n and pixel (the im2col path's start, beta = 1 after). */
__global__ void fill_bias_kernel(float *y, const float *b, int K, long long P, long long total)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e < total) y[e] = b[(int)(e / P % K)];
}

static size_t im2col_bytes(const cr_conv_shape *s)
{
    return (size_t)s->p.in_channels * (size_t)(s->p.kernel_h * s->p.kernel_w) *
           (size_t)(s->h_out * s->w_out) * sizeof(float);
}

// @snippet gpu_conv_im2col
cr_status cr_cuda_conv2d_im2col(const cr_conv_shape *s, const float *x, const float *w,
                                const float *b, float *y)
{
    CR_TRY(check_conv("cr_cuda_conv2d_im2col", s, x, w, b, y, true));
    const ConvDims d = dims_of(s);
    const long long P = (long long)d.Ho * d.Wo, Kg = (long long)d.cin_g * d.kh * d.kw;
    if ((long long)d.C * d.kh * d.kw * P > INT32_MAX)
        return cr_fail(CR_EINVAL, "cr_cuda_conv2d_im2col: the patch matrix of one image has "
                       "more than %d elements", INT32_MAX);
    float *col;
    CR_TRY(cr_cuda_workspace(im2col_bytes(s), (void **)&col));
    if (b) {
        fill_bias_kernel<<<cr_cuda_blocks((long long)s->y_numel, 256), 256>>>(
            y, b, d.K, P, (long long)s->y_numel);
        CR_TRY(CR_CUDA_LAUNCHED("fill_bias_kernel"));
    }
    for (int n = 0; n < d.N; n++) {
        im2col_kernel<<<cr_cuda_blocks(d.C * d.kh * d.kw * P, 256), 256>>>(d, x, n, col);
        CR_TRY(CR_CUDA_LAUNCHED("im2col_kernel"));
        for (int g = 0; g < d.groups; g++)      /* Y_g (Cout_g x P) = W_g (Cout_g x Kg) col_g */
            CR_TRY(cr_cuda_sgemm(CR_NO_TRANS, CR_NO_TRANS, d.cout_g, P, Kg, 1.0f,
                                 w + (long long)g * d.cout_g * Kg, Kg, col + g * Kg * P, P,
                                 b ? 1.0f : 0.0f,
                                 y + ((long long)n * d.K + (long long)g * d.cout_g) * P, P));
    }
    return CR_OK;
}
// @end gpu_conv_im2col

/* ---- path 3: implicit GEMM ------------------------------------------------------------------------ */

#define IG_BM 64
#define IG_BN 128
#define IG_BK 8
#define IG_TM 8
#define IG_TN 4
#define IG_THREADS (IG_BM * IG_BN / (IG_TM * IG_TN))   /* 256 */

// @snippet gpu_conv_implicit
/* One GEMM per group (blockIdx.z), the batch folded into the columns:
 *   Y_g (Cout_g x N*Ho*Wo) = W_g (Cout_g x Cin_g*kh*kw) * X_g (Cin_g*kh*kw x N*Ho*Wo)
 * with X_g the patch matrix of all images, which is never stored: a block stages its
 * 8 x 128 tile of X_g in shared memory straight from the image, as im2col would have
 * written it. Each thread gathers 4 rows of one column of the tile, so it decodes its
 * column (image, oh, ow) once per block, not once per element. Tiles: 64 x 128 of Y
 * per block, 8 x 4 per thread (the 2-D register tiling of gemm_reg2d_kernel). */
__global__ void __launch_bounds__(IG_THREADS)
conv_implicit_kernel(ConvDims d, const float *__restrict__ x, const float *__restrict__ w,
                     const float *__restrict__ b, float *__restrict__ y)
{
    __shared__ __align__(16) float As[IG_BK][IG_BM];   /* W_g tile, transposed: As[k][m] */
    __shared__ __align__(16) float Bs[IG_BK][IG_BN];   /* X_g tile */
    const int g = blockIdx.z, t = threadIdx.x;
    const int Kg = d.cin_g * d.kh * d.kw, khw = d.kh * d.kw;
    const int P = d.Ho * d.Wo, Ncols = d.N * P;
    const int row0 = blockIdx.y * IG_BM, col0 = blockIdx.x * IG_BN;
    const float *wg = w + (long long)g * d.cout_g * Kg;
    /* this thread's column of the X tile, decoded once */
    const int bcol = t % IG_BN, bk0 = t / IG_BN * (IG_BK / 2);   /* 2 x 128 threads, 4 rows each */
    const int gcol = col0 + bcol;
    const bool col_ok = gcol < Ncols;
    const int img = col_ok ? gcol / P : 0, pix = col_ok ? gcol % P : 0;
    const int ih0 = pix / d.Wo * d.sh - d.pt, iw0 = pix % d.Wo * d.sw - d.pl;
    const float *xg = x + ((long long)img * d.C + (long long)g * d.cin_g) * d.H * d.W;
    const int trow = t / (IG_BN / IG_TN), tcol = t % (IG_BN / IG_TN);
    float acc[IG_TM][IG_TN] = {{0.0f}};
    for (int k0 = 0; k0 < Kg; k0 += IG_BK) {
        for (int e = t; e < IG_BM * IG_BK; e += IG_THREADS) {   /* 2 weights per thread */
            const int m = row0 + e / IG_BK, kk = k0 + e % IG_BK;
            As[e % IG_BK][e / IG_BK] = (m < d.cout_g && kk < Kg) ? wg[(long long)m * Kg + kk] : 0.0f;
        }
        for (int i = 0; i < IG_BK / 2; i++) {                    /* 4 gathered inputs */
            const int kk = k0 + bk0 + i;
            float v = 0.0f;
            if (col_ok && kk < Kg) {
                // @solution gpu_conv_implicit: the element (row kk, this column) of the patch matrix, read from the image
                const int c = kk / khw, r = kk % khw / d.kw, q = kk % d.kw;
                const int ih = cr_pad_rule(ih0 + r * d.dh, d.H, d.mode);
                const int iw = cr_pad_rule(iw0 + q * d.dw, d.W, d.mode);
                if (ih >= 0 && iw >= 0) v = xg[((long long)c * d.H + ih) * d.W + iw];
                // @stub
                // (void)khw; (void)ih0; (void)iw0; (void)xg;
                // __trap();   /* task 'gpu_conv_implicit' is not written yet (coursework stub) */
                // @end-solution
            }
            Bs[bk0 + i][bcol] = v;
        }
        __syncthreads();
        for (int kk = 0; kk < IG_BK; kk++) {
            const float4 a0 = *reinterpret_cast<const float4 *>(&As[kk][trow * IG_TM]);
            const float4 a1 = *reinterpret_cast<const float4 *>(&As[kk][trow * IG_TM + 4]);
            const float4 b0 = *reinterpret_cast<const float4 *>(&Bs[kk][tcol * IG_TN]);
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float bv[4] = {b0.x, b0.y, b0.z, b0.w};
            for (int m = 0; m < IG_TM; m++)
                for (int n = 0; n < IG_TN; n++) acc[m][n] += a[m] * bv[n];
        }
        __syncthreads();
    }
    for (int n = 0; n < IG_TN; n++) {          /* epilogue: column -> (image, pixel) */
        const int c = col0 + tcol * IG_TN + n;
        if (c >= Ncols) continue;
        const int im = c / P, px = c % P;
        for (int m = 0; m < IG_TM; m++) {
            const int k = row0 + trow * IG_TM + m;
            if (k >= d.cout_g) continue;
            const int kout = g * d.cout_g + k;
            y[((long long)im * d.K + kout) * P + px] = acc[m][n] + (b ? b[kout] : 0.0f);
        }
    }
}
// @end gpu_conv_implicit

cr_status cr_cuda_conv2d_implicit(const cr_conv_shape *s, const float *x, const float *w,
                                  const float *b, float *y)
{
    CR_TRY(check_conv("cr_cuda_conv2d_implicit", s, x, w, b, y, true));
    const ConvDims d = dims_of(s);
    const long long cols = (long long)d.N * d.Ho * d.Wo;
    const dim3 grid((unsigned)((cols + IG_BN - 1) / IG_BN),
                    (unsigned)((d.cout_g + IG_BM - 1) / IG_BM), (unsigned)d.groups);
    if (grid.y > 65535)
        return cr_fail(CR_EINVAL, "cr_cuda_conv2d_implicit: %d output channels per group is "
                       "too many for the grid", d.cout_g);
    conv_implicit_kernel<<<grid, IG_THREADS>>>(d, x, w, b, y);
    return CR_CUDA_LAUNCHED("conv_implicit_kernel");
}

/* ---- the default and the table ------------------------------------------------------------------- */

// @snippet gpu_conv_default
/* Few output channels per group (depthwise, ResNeXt's 4) leave most of a 64-row tile of
 * the implicit GEMM empty; one thread per output does no wasted work there. The threshold
 * is a first guess, not yet tuned on a GPU. */
#define DIRECT_BELOW_COUT_G 16   /* the one place the threshold lives */

const char *cr_cuda_conv2d_path(const cr_conv_shape *s)
{
    return s->cout_g < DIRECT_BELOW_COUT_G ? "direct" : "implicit";
}

cr_status cr_cuda_conv2d(const cr_conv_shape *s, const float *x, const float *w,
                         const float *b, float *y)
{
    if (!s) return cr_fail(CR_EINVAL, "cr_cuda_conv2d: shape is NULL");
    return cr_cuda_conv2d_path(s)[0] == 'd' ? cr_cuda_conv2d_direct(s, x, w, b, y)
                                            : cr_cuda_conv2d_implicit(s, x, w, b, y);
}
// @end gpu_conv_default

/* ---- tensor cores: the same recipe with a TF32, FP16 or BF16 GEMM ------------------------------ */

/* True when image n's input is already its patch matrix (Cin x H*W): a 1 x 1 kernel,
 * stride 1, no padding (dilation does not matter for a 1 x 1 kernel). */
static bool is_plain_1x1(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0;
}

/* CR_EINVAL naming fn unless prec is one of the tensor cores' precisions. */
static cr_status check_tc_precision(const char *fn, cr_cuda_precision prec)
{
    if (prec != CR_CUDA_TF32 && prec != CR_CUDA_FP16 && prec != CR_CUDA_BF16)
        return cr_fail(CR_EINVAL, "%s: precision %d: expected CR_CUDA_TF32, CR_CUDA_FP16 or "
                       "CR_CUDA_BF16", fn, (int)prec);
    return CR_OK;
}

static cr_cuda_gemm_fn tc_gemm(cr_cuda_precision p)
{
    return p == CR_CUDA_TF32 ? cr_cuda_gemm_tf32 : p == CR_CUDA_FP16 ? cr_cuda_gemm_fp16
                                                                     : cr_cuda_gemm_bf16;
}

// @snippet gpu_conv_tc
cr_status cr_cuda_conv2d_tc(const cr_conv_shape *s, cr_cuda_precision prec, const float *x,
                            const float *w, const float *b, float *y)
{
    CR_TRY(check_conv("cr_cuda_conv2d_tc", s, x, w, b, y, true));
    CR_TRY(check_tc_precision("cr_cuda_conv2d_tc", prec));
    const ConvDims d = dims_of(s);
    const long long P = (long long)d.Ho * d.Wo, Kg = (long long)d.cin_g * d.kh * d.kw;
    const bool plain = is_plain_1x1(s);
    if (!plain && (long long)d.C * d.kh * d.kw * P > INT32_MAX)
        return cr_fail(CR_EINVAL, "cr_cuda_conv2d_tc: the patch matrix of one image has more "
                       "than %d elements", INT32_MAX);
    const cr_cuda_gemm_fn gemm = tc_gemm(prec);
    float *col = NULL;
    if (!plain) CR_TRY(cr_cuda_workspace(im2col_bytes(s), (void **)&col));
    if (b) {
        fill_bias_kernel<<<cr_cuda_blocks((long long)s->y_numel, 256), 256>>>(
            y, b, d.K, P, (long long)s->y_numel);
        CR_TRY(CR_CUDA_LAUNCHED("fill_bias_kernel"));
    }
    for (int n = 0; n < d.N; n++) {
        const float *xn = x + (long long)n * d.C * P;   /* plain 1 x 1: H*W == P */
        if (!plain) {
            im2col_kernel<<<cr_cuda_blocks(d.C * d.kh * d.kw * P, 256), 256>>>(d, x, n, col);
            CR_TRY(CR_CUDA_LAUNCHED("im2col_kernel"));
            xn = col;
        }
        for (int g = 0; g < d.groups; g++)      /* Y_g (Cout_g x P) = W_g (Cout_g x Kg) X_g */
            CR_TRY(gemm(CR_NO_TRANS, CR_NO_TRANS, d.cout_g, P, Kg, 1.0f,
                        w + (long long)g * d.cout_g * Kg, Kg, xn + g * Kg * P, P, b ? 1.0f : 0.0f,
                        y + ((long long)n * d.K + (long long)g * d.cout_g) * P, P));
    }
    return CR_OK;
}
// @end gpu_conv_tc

// @snippet gpu_conv_implicit_tc
/* The implicit GEMM on the tensor cores: the problem of conv_implicit_kernel (one GEMM per
 * group, blockIdx.z, the batch folded into the columns)
 *   Y_g (Cout_g x N*Ho*Wo) = W_g (Cout_g x Cin_g*kh*kw) * X_g (Cin_g*kh*kw x N*Ho*Wo)
 * on the block tile of kernels 7-9 (tc_tile.h): 128 x 128 of Y_g per block, 8 warps of
 * 64 x 32, steps of 32 along K. The A tile is read from the OIHW weights, the B tile
 * gathered from the NCHW image as im2col would have written it; both are rounded to T as
 * they are staged. tc_stage gives thread t the column t % 128 of the B tile at every step,
 * so the thread decodes its column (image, oh, ow) once per block. The epilogue adds the
 * bias and stores to y in NCHW: 16 lanes on 16 consecutive columns, i.e. pixels. */
template <typename T>
__global__ void __launch_bounds__(TC_THREADS)
conv_implicit_tc_kernel(ConvDims d, const float *__restrict__ x, const float *__restrict__ w,
                        const float *__restrict__ b, float *__restrict__ y)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();   /* TF32 and BF16 fragments need sm_80; the host refuses older devices */
#else
    static_assert(TC_THREADS % TC_BN == 0, "a thread keeps one column of the B tile");
    __shared__ __align__(128) T As[TC_BM][TC_BK + 32 / sizeof(T)];   /* W_g tile */
    __shared__ __align__(128) T Bs[TC_BK][TC_BN + 32 / sizeof(T)];   /* X_g tile */
    __shared__ __align__(128) float scratch[TC_WARPS][16 * 16];
    const int g = blockIdx.z, warp = threadIdx.x / 32;
    const int Kg = d.cin_g * d.kh * d.kw, khw = d.kh * d.kw;
    const int P = d.Ho * d.Wo, Ncols = d.N * P;
    const int row0 = blockIdx.y * TC_BM, col0 = blockIdx.x * TC_BN;
    const float *wg = w + (long long)g * d.cout_g * Kg;
    /* this thread's column of the X tile, decoded once */
    const int gcol = col0 + (int)threadIdx.x % TC_BN;
    const bool col_ok = gcol < Ncols;
    const int img = col_ok ? gcol / P : 0, pix = col_ok ? gcol % P : 0;
    const int ih0 = pix / d.Wo * d.sh - d.pt, iw0 = pix % d.Wo * d.sw - d.pl;
    const float *xg = x + ((long long)img * d.C + (long long)g * d.cin_g) * d.H * d.W;
    TcAcc<T> acc;
    tc_zero(acc);
    for (int k0 = 0; k0 < Kg; k0 += TC_BK) {
        tc_stage<TC_BM, TC_BK>(&As[0][0], TC_BK + TC_PAD(T), [&](int r, int c) {
            const int m = row0 + r, kk = k0 + c;
            return (m < d.cout_g && kk < Kg) ? wg[(long long)m * Kg + kk] : 0.0f;
        });
        tc_stage<TC_BK, TC_BN>(&Bs[0][0], TC_BN + TC_PAD(T), [&](int r, int) {
            const int kk = k0 + r;   /* the column is this thread's gcol */
            if (!col_ok || kk >= Kg) return 0.0f;
            const int c = kk / khw, q = kk % d.kw;
            const int ih = cr_pad_rule(ih0 + kk % khw / d.kw * d.dh, d.H, d.mode);
            const int iw = cr_pad_rule(iw0 + q * d.dw, d.W, d.mode);
            return (ih >= 0 && iw >= 0) ? xg[((long long)c * d.H + ih) * d.W + iw] : 0.0f;
        });
        __syncthreads();
        tc_mma(acc, &As[0][0], &Bs[0][0], warp);
        __syncthreads();
    }
    tc_store(acc, scratch[warp], warp, [&](int i, int j, float v) {
        const int k = row0 + i, col = col0 + j;   /* output channel in the group, column */
        if (k >= d.cout_g || col >= Ncols) return;
        const int kout = g * d.cout_g + k;
        y[((long long)(col / P) * d.K + kout) * P + col % P] = v + (b ? b[kout] : 0.0f);
    });
#endif
}
// @end gpu_conv_implicit_tc

cr_status cr_cuda_conv2d_implicit_tc(const cr_conv_shape *s, cr_cuda_precision prec,
                                     const float *x, const float *w, const float *b, float *y)
{
    const char *fn = "cr_cuda_conv2d_implicit_tc";
    CR_TRY(check_conv(fn, s, x, w, b, y, true));
    CR_TRY(check_tc_precision(fn, prec));
    CR_TRY(cr_cuda_need_sm80(fn));
    const ConvDims d = dims_of(s);
    unsigned gx = 0;
    CR_TRY(cr_cuda_grid_1d((long long)d.N * d.Ho * d.Wo, TC_BN, "conv_implicit_tc_kernel", &gx));
    const long long gy = ((long long)d.cout_g + TC_BM - 1) / TC_BM;
    if (gy > 65535)
        return cr_fail(CR_EINVAL, "%s: %d output channels per group is too many for the grid",
                       fn, d.cout_g);
    const dim3 grid(gx, (unsigned)gy, (unsigned)d.groups);
    if (prec == CR_CUDA_TF32) conv_implicit_tc_kernel<float><<<grid, TC_THREADS>>>(d, x, w, b, y);
    else if (prec == CR_CUDA_FP16) conv_implicit_tc_kernel<__half><<<grid, TC_THREADS>>>(d, x, w, b, y);
    else conv_implicit_tc_kernel<__nv_bfloat16><<<grid, TC_THREADS>>>(d, x, w, b, y);
    return CR_CUDA_LAUNCHED("conv_implicit_tc_kernel");
}

// @snippet gpu_conv_at
/* Which convolutions the tensor cores take. The im2col recipe (cr_cuda_conv2d_tc) ran one
 * GEMM per image and group: grouped layers became groups x batch small launches (on an
 * H200 the whole FPN at TF32 was then 3.4x slower than FP32) and small maps a few 128-wide
 * tiles per GEMM. The implicit GEMM on the tensor cores folds the batch into the columns
 * and the groups into the grid: one launch, the same columns as the FP32 implicit GEMM.
 * What remains is the rows: a block tile has 128 of them, in two rows of warps of 64.
 * Below 64 output channels per group the second row of warps multiplies nothing but
 * zeros and the first leaves fragments empty, so at least half of the tensor cores' work
 * is wasted, where the FP32 implicit GEMM's 64-row tile wastes less (ResNeXt's grouped
 * 3 x 3 layers, 4 to 32 channels per group, would use 1/32 to 1/4 of the tile). Those
 * layers stay on the FP32 paths. The threshold follows from the tile shape; it is not
 * yet measured on a GPU. */
#define TC_FROM_COUT_G (TC_BM / 2)   /* the one place the threshold lives: 64 */

static bool takes_tensor_cores(const cr_conv_shape *s, cr_cuda_precision prec)
{
    return prec != CR_CUDA_FP32 && s->cout_g >= TC_FROM_COUT_G;
}

const char *cr_cuda_conv2d_path_at(const cr_conv_shape *s, cr_cuda_precision prec)
{
    if (!takes_tensor_cores(s, prec)) return cr_cuda_conv2d_path(s);
    switch (prec) {
    case CR_CUDA_TF32: return "tf32_implicit";
    case CR_CUDA_FP16: return "fp16_implicit";
    case CR_CUDA_BF16: return "bf16_implicit";
    default: return "?";   /* cr_cuda_conv2d_at refuses it */
    }
}

cr_status cr_cuda_conv2d_at(const cr_conv_shape *s, cr_cuda_precision prec, const float *x,
                            const float *w, const float *b, float *y)
{
    if (!s) return cr_fail(CR_EINVAL, "cr_cuda_conv2d_at: shape is NULL");
    return takes_tensor_cores(s, prec) ? cr_cuda_conv2d_implicit_tc(s, prec, x, w, b, y)
                                       : cr_cuda_conv2d(s, x, w, b, y);
}
// @end gpu_conv_at

size_t cr_cuda_conv2d_workspace_bytes(const cr_conv_shape *s, cr_cuda_conv2d_fn fn)
{
    return fn == cr_cuda_conv2d_im2col ? im2col_bytes(s) : 0;
}

static const cr_cuda_conv_path conv_paths[] = {
    {"direct", cr_cuda_conv2d_direct, "one thread per output element (chapter 1's loops)"},
    {"im2col", cr_cuda_conv2d_im2col, "im2col per image, then cr_cuda_sgemm per group"},
    {"implicit", cr_cuda_conv2d_implicit, "implicit GEMM, patches gathered into shared memory"},
    {"default", cr_cuda_conv2d, "direct for few output channels per group, else implicit"},
};

const cr_cuda_conv_path *cr_cuda_conv_paths(int *count)
{
    if (count) *count = (int)(sizeof conv_paths / sizeof *conv_paths);
    return conv_paths;
}

/* ---- backward ---------------------------------------------------------------------------------- */

// @snippet gpu_col2im
/* The adjoint of im2col_kernel for image n: every element of col adds itself to the input
 * pixel it was copied from (through the padding map; zero padding drops it). Several col
 * elements (and, with reflect, replicate or circular padding, several padded taps) land on
 * one pixel, so the adds are atomic; dx must be zeroed first. */
__global__ void col2im_kernel(ConvDims d, const float *__restrict__ col, int n, float *dx)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long P = (long long)d.Ho * d.Wo;
    if (e >= (long long)d.C * d.kh * d.kw * P) return;
    const int pix = (int)(e % P), row = (int)(e / P);
    const int q = row % d.kw, r = row / d.kw % d.kh, c = row / (d.kw * d.kh);
    const int ih = cr_pad_rule(pix / d.Wo * d.sh - d.pt + r * d.dh, d.H, d.mode);
    const int iw = cr_pad_rule(pix % d.Wo * d.sw - d.pl + q * d.dw, d.W, d.mode);
    if (ih >= 0 && iw >= 0) atomicAdd(&dx[(((long long)n * d.C + c) * d.H + ih) * d.W + iw], col[e]);
}
// @end gpu_col2im

// @snippet gpu_bias_grad
/* db[k] = sum over images and pixels of dy[n][k][.]: one block of 256 threads per channel,
 * a strided sum per thread, then a tree in shared memory. */
__global__ void bias_grad_kernel(ConvDims d, const float *__restrict__ dy, float *__restrict__ db)
{
    __shared__ float part[256];
    const int k = blockIdx.x;
    const long long P = (long long)d.Ho * d.Wo;
    float s = 0.0f;
    for (long long e = threadIdx.x; e < d.N * P; e += blockDim.x)
        s += dy[((e / P) * d.K + k) * P + e % P];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[k] = part[0];
}
// @end gpu_bias_grad

// @snippet gpu_conv_backward
cr_status cr_cuda_conv2d_backward(const cr_conv_shape *s, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *db)
{
    const char *fn = "cr_cuda_conv2d_backward";
    CR_TRY(check_conv(fn, s, x, w, NULL, dy, false));   /* x, w, dy given */
    if (db && !s->p.bias)
        return cr_fail(CR_EINVAL, "%s: db given, but the parameters say bias=false", fn);
    const ConvDims d = dims_of(s);
    const long long P = (long long)d.Ho * d.Wo, Kg = (long long)d.cin_g * d.kh * d.kw;
    const long long col_elems = (long long)d.C * d.kh * d.kw * P;
    if (col_elems > INT32_MAX)
        return cr_fail(CR_EINVAL, "%s: the patch matrix of one image has more than %d elements",
                       fn, INT32_MAX);
    if (db) {
        bias_grad_kernel<<<d.K, 256>>>(d, dy, db);
        CR_TRY(CR_CUDA_LAUNCHED("bias_grad_kernel"));
    }
    if (!dx && !dw) return CR_OK;
    float *col;
    CR_TRY(cr_cuda_workspace(im2col_bytes(s), (void **)&col));
    if (dx) CR_TRY(cr_cuda_check(cudaMemset(dx, 0, s->x_numel * sizeof(float)), "cudaMemset (dx)"));
    for (int n = 0; n < d.N; n++) {
        const float *dyn = dy + (long long)n * d.K * P;
        if (dw) {   /* dW_g (Cout_g x Kg) += dY_g (Cout_g x P) * col_g^T (P x Kg) */
            im2col_kernel<<<cr_cuda_blocks(col_elems, 256), 256>>>(d, x, n, col);
            CR_TRY(CR_CUDA_LAUNCHED("im2col_kernel"));
            for (int g = 0; g < d.groups; g++)
                CR_TRY(cr_cuda_sgemm(CR_NO_TRANS, CR_TRANS, d.cout_g, Kg, P, 1.0f,
                                     dyn + (long long)g * d.cout_g * P, P, col + g * Kg * P, P,
                                     n == 0 ? 0.0f : 1.0f, dw + (long long)g * d.cout_g * Kg, Kg));
        }
        if (dx) {   /* col_g (Kg x P) = W_g^T (Kg x Cout_g) * dY_g (Cout_g x P), then col2im */
            for (int g = 0; g < d.groups; g++)
                CR_TRY(cr_cuda_sgemm(CR_TRANS, CR_NO_TRANS, Kg, P, d.cout_g, 1.0f,
                                     w + (long long)g * d.cout_g * Kg, Kg,
                                     dyn + (long long)g * d.cout_g * P, P, 0.0f, col + g * Kg * P, P));
            col2im_kernel<<<cr_cuda_blocks(col_elems, 256), 256>>>(d, col, n, dx);
            CR_TRY(CR_CUDA_LAUNCHED("col2im_kernel"));
        }
    }
    return CR_OK;
}
// @end gpu_conv_backward
