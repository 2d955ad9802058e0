/* conv_backward.c — chapter 4: the gradients of convolution.
 *
 * The forward pass reads each input pixel into several outputs; the backward pass
 * sends each output's gradient back along the same wires. Two versions, as for the
 * forward: a plain-loops reference written straight from the chain rule, and a fast
 * one that reuses the machinery of chapters 2 and 3 — the patch matrix, its adjoint
 * (col2im), and the GEMM with its transposed variants. */
#include "conv_backward.h"

#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_gemm.h"      /* cr_conv2d_fast: chapter 3's forward, for dX */
#include "direct.h"         /* cr_pad_index: chapter 1's padding rule */
#include "gemm.h"           /* cr_sgemm: chapter 3's GEMM */
#include "gemm_internal.h"  /* cr_gemm_engine: chapter 3's five loops, for dW */
#include "grad_input_direct.h"    /* dX scattered, for small strided groups */
#include "grad_weight_direct.h"   /* dW as dot products, for small groups */
#include "im2col.h"   /* cr_im2col: chapter 2's gather */
#include "tensor.h"

// @snippet backward_bind
cr_status cr_conv_backward_bind(cr_conv_shape *s, const cr_conv_params *p,
                                const cr_tensor *x, const cr_tensor *w, const cr_tensor *dy,
                                const cr_tensor *dx, const cr_tensor *dw, const cr_tensor *db)
{
    if (!s || !p || !x || !x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "input x: expected a rank-4 N x C x H x W tensor");
    if (x->shape[1] != p->in_channels)
        return cr_fail(CR_EINVAL, "input x: has %lld channels, in_channels is %lld",
                       (long long)x->shape[1], (long long)p->in_channels);
    cr_status st = cr_conv_shape_init(s, p, x->shape[0], x->shape[2], x->shape[3]);
    if (st) return st;
    const int64_t ws[4] = {p->out_channels, s->cin_g, p->kernel_h, p->kernel_w};
    const int64_t ys[4] = {s->batch, p->out_channels, s->h_out, s->w_out};
    const int64_t bs[1] = {p->out_channels};
    if ((st = cr_tensor_expect_shape("w", w, 4, ws))) return st;
    if ((st = cr_tensor_expect_shape("dy", dy, 4, ys))) return st;                /* like y */
    if (dx && (st = cr_tensor_expect_shape("dx", dx, 4, x->shape))) return st;   /* like x */
    if (dw && (st = cr_tensor_expect_shape("dw", dw, 4, ws))) return st;         /* like w */
    if (db && !p->bias)
        return cr_fail(CR_EINVAL, "tensor db: given, but the parameters say bias=false");
    if (db && (st = cr_tensor_expect_shape("db", db, 1, bs))) return st;         /* like b */
    return CR_OK;
}
// @end backward_bind

/* ---- the reference: chapter 1's loops, backwards --------------------------------------- */

// @snippet ref_grad_input
/* dx (N x C x H x W) = every dy (N x K x Ho x Wo) scattered back through the taps of
 * w (K x C/G x R x S) that read it. Each thread owns whole (image, channel) planes of dx. */
static void ref_grad_input(const cr_conv_shape *s, const float *w, const float *dy, float *dx)
{
    const cr_conv_params *p = &s->p;
    const int64_t C = p->in_channels, K = p->out_channels;
    const int64_t H = s->h_in, W = s->w_in, Ho = s->h_out, Wo = s->w_out;
    const int64_t R = p->kernel_h, S = p->kernel_w;

#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < s->batch; n++)                 /* 1: every image          */
        for (int64_t c = 0; c < C; c++) {                  /* 2: every input channel  */
            const int64_t g = c / s->cin_g, cg = c - g * s->cin_g;
            float *dxp = dx + (n * C + c) * H * W;         /* the plane this thread owns */
            for (int64_t i = 0; i < H * W; i++) dxp[i] = 0.0f;
            for (int64_t k = g * s->cout_g; k < (g + 1) * s->cout_g; k++) /* 3: outputs reading c */
                for (int64_t oh = 0; oh < Ho; oh++)            /* 4: every output row */
                    for (int64_t ow = 0; ow < Wo; ow++) {      /* 5: every output col */
                        const float gy = dy[((n * K + k) * Ho + oh) * Wo + ow];
                        for (int64_t r = 0; r < R; r++) {      /* 6: kernel row */
                            // @snippet pad_gradient
                            const int64_t ih = cr_pad_index(
                                oh * p->stride_h - p->pad_top + r * p->dilation_h, H, p->pad_mode);
                            if (ih < 0) continue;              /* zero padding: nowhere to go */
                            for (int64_t q = 0; q < S; q++) {  /* 7: kernel col */
                                const int64_t iw = cr_pad_index(
                                    ow * p->stride_w - p->pad_left + q * p->dilation_w, W,
                                    p->pad_mode);
                                if (iw < 0) continue;
                                /* back to the pixel this tap copied: for reflect, replicate
                                 * and circular padding, often one that is also read directly */
                                dxp[ih * W + iw] += gy * w[((k * s->cin_g + cg) * R + r) * S + q];
                            }
                            // @end pad_gradient
                        }
                    }
        }
}
// @end ref_grad_input

// @snippet ref_grad_weight
/* dw (K x C/G x R x S): each weight gathers dy times the input its tap read, over every
 * image and output pixel. x: N x C x H x W; dy: N x K x Ho x Wo. Each thread owns weights. */
static void ref_grad_weight(const cr_conv_shape *s, const float *x, const float *dy, float *dw)
{
    const cr_conv_params *p = &s->p;
    const int64_t C = p->in_channels, K = p->out_channels;
    const int64_t H = s->h_in, W = s->w_in, Ho = s->h_out, Wo = s->w_out;
    const int64_t R = p->kernel_h, S = p->kernel_w;

#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < K; k++)                        /* 1: every filter         */
        for (int64_t c = 0; c < s->cin_g; c++) {           /* 2: its input channels   */
            const int64_t cx = k / s->cout_g * s->cin_g + c;   /* c's index in x      */
            for (int64_t r = 0; r < R; r++)                /* 3: kernel row           */
                for (int64_t q = 0; q < S; q++) {          /* 4: kernel col           */
                    float acc = 0.0f;
                    for (int64_t n = 0; n < s->batch; n++)         /* 5: every image  */
                        for (int64_t oh = 0; oh < Ho; oh++) {      /* 6: output row   */
                            const int64_t ih = cr_pad_index(
                                oh * p->stride_h - p->pad_top + r * p->dilation_h, H, p->pad_mode);
                            if (ih < 0) continue;                  /* read a zero     */
                            for (int64_t ow = 0; ow < Wo; ow++) {  /* 7: output col   */
                                const int64_t iw = cr_pad_index(
                                    ow * p->stride_w - p->pad_left + q * p->dilation_w, W,
                                    p->pad_mode);
                                if (iw < 0) continue;
                                acc += dy[((n * K + k) * Ho + oh) * Wo + ow] *
                                       x[((n * C + cx) * H + ih) * W + iw];
                            }
                        }
                    dw[((k * s->cin_g + c) * R + r) * S + q] = acc;
                }
        }
}
// @end ref_grad_weight

// @snippet ref_api
cr_status cr_conv2d_backward_ref(const cr_conv_params *p, const cr_tensor *x,
                                 const cr_tensor *w, const cr_tensor *dy, cr_tensor *dx,
                                 cr_tensor *dw, cr_tensor *db)
{
    cr_conv_shape s;
    cr_status st = cr_conv_backward_bind(&s, p, x, w, dy, dx, dw, db);
    if (st) return st;
    if (dx) ref_grad_input(&s, w->data, dy->data, dx->data);
    if (dw) ref_grad_weight(&s, x->data, dy->data, dw->data);
    if (db) {                                  /* each bias was added to every output pixel */
        const int64_t K = p->out_channels, plane = s.h_out * s.w_out;
        for (int64_t k = 0; k < K; k++) {
            float acc = 0.0f;
            for (int64_t n = 0; n < s.batch; n++)
                for (int64_t j = 0; j < plane; j++) acc += dy->data[(n * K + k) * plane + j];
            db->data[k] = acc;
        }
    }
    return CR_OK;
}
// @end ref_api

/* ---- the fast path: col2im and GEMMs ---------------------------------------------------- */

/* True for a 1x1, stride-1, unpadded kernel: the input itself is the patch matrix. */
static int is_pointwise(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0;
}

/* True when a loop over n independent items may start its own threads: OpenMP is on,
 * no parallel region is active already, and there is more than one item. */
static inline int may_fork(int64_t n)
{
#ifdef _OPENMP
    return n > 1 && !omp_in_parallel() && omp_get_max_threads() > 1;
#else
    (void)n;
    return 0;
#endif
}

/* Output columns whose padding map cr_col2im computes at a time (a stack array). */
#define COL2IM_CHUNK 256

/* Chapter 2's cr_im2col for one image and group, one channel at a time so that threads
 * may share the channels when the caller does not already run one pair per thread.
 * x_g: Cin_g x H x W; col: (Cin_g*kh*kw) x (Ho*Wo). */
static void im2col_channels(const cr_conv_shape *s, const float *x_g, float *col)
{
    cr_conv_shape one = *s;   /* the same layer, seen as one input channel */
    one.cin_g = 1;
    const int64_t plane = s->h_in * s->w_in, rows = cr_im2col_rows(&one) * cr_im2col_cols(s);
#pragma omp parallel for schedule(static) if (may_fork(s->cin_g))
    for (int64_t c = 0; c < s->cin_g; c++) cr_im2col(&one, x_g + c * plane, col + c * rows);
}

/* Bytes cr_conv2d_backward_gemm holds at once for shape s (dX and/or dW asked for) with
 * the current thread count: a patch matrix per thread working on (image, group) pairs
 * (none for a pointwise kernel), one partial dW per thread when several share the pairs,
 * and the packing buffers of the GEMMs each of those threads runs. */
static size_t gemm_backward_bytes(const cr_conv_shape *s, int want_dx, int want_dw)
{
    const size_t T = (size_t)cr_conv_outer_threads(s);
    const int thr = T > 1 ? 1 : cr_gemm_threads_available();   /* each GEMM's threads */
    const int64_t KK = cr_im2col_rows(s), plane = s->h_out * s->w_out, M = s->cout_g;
    const size_t col = is_pointwise(s) ? 0 : (size_t)KK * (size_t)plane * sizeof(float);
    const cr_gemm_kernel *k = cr_gemm_active_kernel();
    const size_t dw_pack = want_dw ? cr_gemm_engine_workspace(cr_gemm_kernel_for(k, M), M, KK,
                                                              plane, thr) : 0;
    const size_t dx_pack = want_dx ? cr_gemm_engine_workspace(cr_gemm_kernel_for(k, KK), KK,
                                                              plane, M, thr) : 0;
    const size_t partial = want_dw && T > 1 ? T * s->w_numel * sizeof(float) : 0;
    return partial + T * (col + (dw_pack > dx_pack ? dw_pack : dx_pack));
}

// @snippet col2im
void cr_col2im(const cr_conv_shape *s, const float *col, float *dx)
{
    // @solution col2im_scatter: add every entry of the patch matrix back onto the input pixel im2col copied it from
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, Ho = s->h_out, Wo = s->w_out;
    const int64_t R = p->kernel_h, S = p->kernel_w;
    /* Channels scatter into separate planes: threads may share them (unless the caller
     * already runs one (image, group) per thread). */
#pragma omp parallel for schedule(static) if (may_fork(s->cin_g))
    for (int64_t c = 0; c < s->cin_g; c++) {
        float *plane = dx + c * H * W;
        memset(plane, 0, (size_t)(H * W) * sizeof *plane);
        for (int64_t r = 0; r < R; r++)
            for (int64_t q = 0; q < S; q++) {
                const float *row = col + ((c * R + r) * S + q) * Ho * Wo;  /* row (c, r, q) */
                int64_t iw[COL2IM_CHUNK];  /* the padding map of this tap's columns, once */
                for (int64_t w0 = 0; w0 < Wo; w0 += COL2IM_CHUNK) {
                    const int64_t nw = Wo - w0 < COL2IM_CHUNK ? Wo - w0 : COL2IM_CHUNK;
                    for (int64_t j = 0; j < nw; j++)
                        iw[j] = cr_pad_index((w0 + j) * p->stride_w - p->pad_left +
                                             q * p->dilation_w, W, p->pad_mode);
                    for (int64_t oh = 0; oh < Ho; oh++) {
                        const int64_t ih = cr_pad_index(
                            oh * p->stride_h - p->pad_top + r * p->dilation_h, H, p->pad_mode);
                        if (ih < 0) continue;              /* a zero-padded row: dropped */
                        const float *src = row + oh * Wo + w0;
                        float *dst = plane + ih * W;
                        for (int64_t j = 0; j < nw; j++)   /* im2col's copy, reversed */
                            if (iw[j] >= 0) dst[iw[j]] += src[j];
                    }
                }
            }
    }
    // @stub
    // (void)s; (void)col; (void)dx;
    // /* TODO: dx = col2im(col); until then dx is left as it was */
    // @end-solution
}
// @end col2im

// @snippet grad_input
/* One image, one group: dX_g (Cin_g x H x W) = col2im(W_g^T dY_g), where W_g is
 * Cout_g x Cin_g*kh*kw (read transposed, never copied) and dY_g is Cout_g x Ho*Wo. */
static cr_status grad_input_group(const cr_conv_shape *s, const float *w_g, const float *dy_g,
                                  float *dx_g, float *col)
{
    const int64_t M = cr_im2col_rows(s), N = cr_im2col_cols(s), K = s->cout_g;
    if (is_pointwise(s))   /* the patch matrix is dX_g itself: no col2im */
        return cr_sgemm(CR_TRANS, CR_NO_TRANS, M, N, K, 1.0f, w_g, M, dy_g, N, 0.0f, dx_g, N);
    cr_status st = cr_sgemm(CR_TRANS, CR_NO_TRANS, M, N, K, 1.0f, w_g, M, dy_g, N, 0.0f, col, N);
    if (st == CR_OK) cr_col2im(s, col, dx_g);
    return st;
}
// @end grad_input

// @snippet grad_weight
/* One image, one group: dW_g (Cout_g x Cin_g*kh*kw) += dY_g (Cout_g x Ho*Wo) cols^T,
 * cols being the group's patch matrix (Cin_g*kh*kw x Ho*Wo) read transposed. */
static cr_status grad_weight_group(const cr_conv_shape *s, const float *x_g, const float *dy_g,
                                   float *dw_g, float *col)
{
    // @solution grad_weight: im2col (none for a pointwise kernel), then one cr_sgemm with B transposed and beta = 1
    const int64_t M = s->cout_g, N = cr_im2col_rows(s), K = cr_im2col_cols(s);
    const float *B = x_g;
    if (!is_pointwise(s)) {
        im2col_channels(s, x_g, col);
        B = col;
    }
    return cr_sgemm(CR_NO_TRANS, CR_TRANS, M, N, K, 1.0f, dy_g, K, B, K, 1.0f, dw_g, N);
    // @stub
    // (void)s; (void)x_g; (void)dy_g; (void)dw_g; (void)col; (void)im2col_channels;
    // return cr_todo("grad_weight");
    // @end-solution
}
// @end grad_weight

// @snippet grad_bias
/* db (Cout) = dy (N x Cout x Ho x Wo) summed over images and pixels: the bias was added
 * to every output pixel of its channel. One channel per thread. */
static void grad_bias(const cr_conv_shape *s, const float *dy, float *db)
{
    // @solution grad_bias: each bias receives the sum of its channel's gradient over the batch and the image
    enum { LANES = 16 };   /* independent partial sums, added in a fixed order at the end */
    const int64_t K = s->p.out_channels, plane = s->h_out * s->w_out;
    const int64_t body = plane - plane % LANES;
#pragma omp parallel for schedule(static) if (may_fork(K))
    for (int64_t k = 0; k < K; k++) {
        float lane[LANES] = {0};
        for (int64_t n = 0; n < s->batch; n++) {
            const float *dy_k = dy + (n * K + k) * plane;
            for (int64_t j = 0; j < body; j += LANES)
                for (int l = 0; l < LANES; l++) lane[l] += dy_k[j + l];
            for (int64_t j = body; j < plane; j++) lane[j - body] += dy_k[j];
        }
        float acc = 0.0f;
        for (int l = 0; l < LANES; l++) acc += lane[l];
        db[k] = acc;
    }
    // @stub
    // (void)s; (void)dy; (void)db;
    // /* TODO: db = sums of dy; until then db is left as it was */
    // @end-solution
}
// @end grad_bias

/* One (image n, group g) pair of cr_conv2d_backward_gemm: dW_g (in dw_t, NULL: not asked
 * for) += the pair's share, then dX_g (dx NULL: not asked for), through one patch matrix
 * col (KK x Ho*Wo floats; NULL for a pointwise kernel). */
static cr_status backward_pair(const cr_conv_shape *s, const cr_tensor *x, const cr_tensor *w,
                               const cr_tensor *dy, cr_tensor *dx, float *dw_t, float *col,
                               int64_t n, int64_t g)
{
    const cr_conv_params *p = &s->p;
    const int64_t HW = s->h_in * s->w_in, plane = s->h_out * s->w_out, KK = cr_im2col_rows(s);
    const float *x_g = x->data + (n * p->in_channels + g * s->cin_g) * HW;
    const float *dy_g = dy->data + (n * p->out_channels + g * s->cout_g) * plane;
    cr_status e = CR_OK;
    if (dw_t)                /* patch matrix first used for dW ... */
        e = grad_weight_group(s, x_g, dy_g, dw_t + g * s->cout_g * KK, col);
    if (e == CR_OK && dx)    /* ... then reused for dX */
        e = grad_input_group(s, w->data + g * s->cout_g * KK, dy_g,
                             dx->data + (n * p->in_channels + g * s->cin_g) * HW, col);
    return e;
}

// @snippet backward_api
cr_status cr_conv2d_backward_gemm(const cr_conv_params *p, const cr_tensor *x,
                                  const cr_tensor *w, const cr_tensor *dy, cr_tensor *dx,
                                  cr_tensor *dw, cr_tensor *db)
{
    cr_conv_shape s;
    cr_status st = cr_conv_backward_bind(&s, p, x, w, dy, dx, dw, db);
    if (st) return st;
    if (db) grad_bias(&s, dy->data, db->data);
    if (!dx && !dw) return CR_OK;

    const int64_t plane = s.h_out * s.w_out, KK = cr_im2col_rows(&s);
    const size_t ws = is_pointwise(&s) ? 0 : (size_t)KK * (size_t)plane * sizeof(float);
    const int T = cr_conv_outer_threads(&s);
    const size_t wn = s.w_numel;
    /* dW sums over images. With T threads sharing the (image, group) pairs each thread
     * sums its own images into its own partial dW; the partials are added afterwards in
     * thread order, so the result does not depend on which thread finished first. */
    float *partial = NULL;
    if (dw && T > 1) {
        partial = cr_aligned_alloc((size_t)T * wn * sizeof(float));
        if (!partial)
            return cr_fail(CR_ENOMEM, "conv backward: %zu bytes of partial dW",
                           (size_t)T * wn * sizeof(float));
        memset(partial, 0, (size_t)T * wn * sizeof(float));
    } else if (dw) {
        memset(dw->data, 0, wn * sizeof(float));
    }

    cr_status failed = CR_OK;
    if (T == 1) {   /* pairs one after the other, each GEMM on every thread */
        /* not in a parallel region of one thread: the GEMMs and copies inside would each
           start a nested team (on the lab's machine 1.7 ms against 0.18 for one GEMM) */
        float *col = ws ? cr_aligned_alloc(ws) : NULL;
        if (ws && !col) failed = cr_fail(CR_ENOMEM, "col2im: %zu bytes", ws);
        for (int64_t n = 0; n < s.batch && !failed; n++)
            for (int64_t g = 0; g < p->groups && !failed; g++)
                failed = backward_pair(&s, x, w, dy, dx, dw ? dw->data : NULL, col, n, g);
        cr_aligned_free(col);
        cr_aligned_free(partial);
        return failed;
    }
    char msg[256] = "";
#pragma omp parallel num_threads(T)
    {   /* pairs shared by the threads, each GEMM on one thread */
#ifdef _OPENMP
        const int tid = omp_get_thread_num();
#else
        const int tid = 0;
#endif
        float *col = ws ? cr_aligned_alloc(ws) : NULL;   /* one patch matrix per thread */
        float *dw_t = dw ? partial + (size_t)tid * wn : NULL;
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < s.batch; n++)
            for (int64_t g = 0; g < p->groups; g++) {
                const cr_status e = (ws && !col) ? cr_fail(CR_ENOMEM, "col2im: %zu bytes", ws)
                                                 : backward_pair(&s, x, w, dy, dx, dw_t, col, n, g);
                if (e != CR_OK) {
#pragma omp critical(cr_conv_backward_status)
                    {
                        failed = e;
                        snprintf(msg, sizeof msg, "%s", cr_last_error());
                    }
                }
            }
        cr_aligned_free(col);
    }
    if (partial && failed == CR_OK) {
#pragma omp parallel for schedule(static) num_threads(T)
        for (size_t i = 0; i < wn; i++) {
            float acc = 0.0f;
            for (int t = 0; t < T; t++) acc += partial[(size_t)t * wn + i];
            dw->data[i] = acc;
        }
    }
    cr_aligned_free(partial);
    return failed ? cr_fail(failed, "%s", msg) : CR_OK;   /* the message, on this thread */
}
// @end backward_api

/* ---- the fast backward: dW as one implicit GEMM over the batch, dX as a forward conv ---- */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* dst (8 x 8, row stride ldd) = src (8 x 8, row stride lds) transposed, in ymm registers:
 * pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped. */
__attribute__((target("avx2"))) static void transpose_8x8_avx2(const float *src, int64_t lds,
                                                               float *dst, int64_t ldd)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4)
        for (int h = 0; h < 2; h++) {
            r[i + h] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
            r[i + h + 2] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
        }
    /* r[0..3] hold columns 0, 1, 2, 3 (low half: rows 0-3, high half: 4-7 are in r[4..7]) */
    static const int col[4] = {0, 2, 1, 3};
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_ps(dst + col[c] * ldd, _mm256_permute2f128_ps(r[c], r[c + 4], 0x20));
        _mm256_storeu_ps(dst + (col[c] + 4) * ldd, _mm256_permute2f128_ps(r[c], r[c + 4], 0x31));
    }
}
#endif

/* Asks for the source rows [i0, i1) of the tile at column j0 (tb floats each) ahead of
 * their use: rows lds floats apart are so many streams that the hardware prefetchers do
 * not follow them all (a pixel-major copy of 8 x 64 x 3136 floats, in cache: 0.55-1.17 ms
 * without this, 0.45-0.58 ms with it, on the Zen 5 VM, 2026-12-02; chapter 4). */
static inline void prefetch_tile(const float *src, int64_t lds, int64_t i0, int64_t i1,
                                 int64_t j0, int64_t cols, int64_t tb)
{
#if defined(__GNUC__)
    const int64_t n = min64(tb, cols - j0);
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(src + i * lds + j0 + j, 0, 3);
#else
    (void)src, (void)lds, (void)i0, (void)i1, (void)j0, (void)cols, (void)tb;
#endif
}

/* dst (cols x rows, row stride ldd) = src (rows x cols, row stride lds) transposed, in
 * 32 x 32 tiles so that the rows read and the rows written both stay in L1, the next
 * tile's rows prefetched; whole 8 x 8 blocks in AVX2 registers where the CPU has them. */
static void transpose_tiles(int64_t rows, int64_t cols, const float *src, int64_t lds,
                            float *dst, int64_t ldd)
{
    enum { TB = 32 };
#if defined(__x86_64__) && defined(__GNUC__)
    const int simd = cr_cpu_has_avx2();
#else
    const int simd = 0;
#endif
    for (int64_t i0 = 0; i0 < rows; i0 += TB)
        for (int64_t j0 = 0; j0 < cols; j0 += TB) {
            const int64_t i1 = min64(rows, i0 + TB), j1 = min64(cols, j0 + TB);
            if (j1 < cols)   /* the next tile: this row band, next columns */
                prefetch_tile(src, lds, i0, i1, j1, cols, TB);
            else if (i1 < rows)   /* or the next row band's first */
                prefetch_tile(src, lds, i1, min64(rows, i1 + TB), 0, cols, TB);
            int64_t i8 = i0, j8 = j0;   /* the corner the 8 x 8 blocks cover */
#if defined(__x86_64__) && defined(__GNUC__)
            if (simd) {
                i8 = i0 + (i1 - i0) / 8 * 8;
                j8 = j0 + (j1 - j0) / 8 * 8;
                for (int64_t i = i0; i < i8; i += 8)
                    for (int64_t j = j0; j < j8; j += 8)
                        transpose_8x8_avx2(src + i * lds + j, lds, dst + j * ldd + i, ldd);
            }
#endif
            for (int64_t j = j0; j < j1; j++)   /* the rest: right and bottom strips */
                for (int64_t i = (j < j8 ? i8 : i0); i < i1; i++)
                    dst[j * ldd + i] = src[i * lds + j];
            (void)simd;
        }
}

/* Pixel-major copy of a batch of planes: src is N x C x P (NCHW, P = H*W), dst N x P x C
 * (NHWC). The threads of the enclosing parallel region (if any) share the (image, block
 * of 256 pixels) pairs, and do not wait for each other at the end. */
static void to_pixel_major(int64_t N, int64_t C, int64_t P, const float *src, float *dst)
{
    enum { PB = 256 };
    const int64_t blocks = (P + PB - 1) / PB;
#pragma omp for collapse(2) schedule(static) nowait
    for (int64_t n = 0; n < N; n++)
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t p0 = b * PB, np = min64(PB, P - p0);
            transpose_tiles(C, np, src + n * C * P + p0, P, dst + (n * P + p0) * C, C);
        }
}

/* Copies n floats times scale; the common run lengths as fixed-size copies. */
static inline void copy_run(float *dst, const float *src, int64_t n, float scale)
{
    if (scale != 1.0f) {
        for (int64_t i = 0; i < n; i++) dst[i] = scale * src[i];
    } else if (n == 32) {
        memcpy(dst, src, 32 * sizeof(float));
    } else if (n == 16) {
        memcpy(dst, src, 16 * sizeof(float));
    } else if (n == 8) {
        memcpy(dst, src, 8 * sizeof(float));
    } else if (n == 4) {
        memcpy(dst, src, 4 * sizeof(float));
    } else {
        for (int64_t i = 0; i < n; i++) dst[i] = src[i];
    }
}

/* The padded pixel-major copy of x that dW's packing reads: xp is N x Hp x Wp x Cin with
 * Hp = pt + H + pb, Wp = pl + W + pr, padded pixel (i, j) holding input pixel
 * (pad_index(i - pt), pad_index(j - pl)) (zeros where the padding map says so). Every
 * padding mode becomes plain indexing. The threads of the enclosing parallel region (if
 * any) share the rows, and do not wait for each other at the end. */
static void pad_pixel_major(const cr_conv_shape *s, const float *x, float *xp)
{
    const cr_conv_params *p = &s->p;
    const int64_t C = p->in_channels, H = s->h_in, W = s->w_in;
    const int64_t Hp = H + p->pad_top + p->pad_bottom, Wp = W + p->pad_left + p->pad_right;
#pragma omp for collapse(2) schedule(static) nowait
    for (int64_t n = 0; n < s->batch; n++)
        for (int64_t i = 0; i < Hp; i++) {
            float *row = xp + (n * Hp + i) * Wp * C;
            const int64_t ih = cr_pad_index(i - p->pad_top, H, p->pad_mode);
            if (ih < 0) {
                memset(row, 0, (size_t)(Wp * C) * sizeof(float));
                continue;
            }
            /* the input row, transposed into the middle of the padded row */
            transpose_tiles(C, W, x + n * C * H * W + ih * W, H * W, row + p->pad_left * C, C);
            for (int64_t j = 0; j < Wp; j++) {   /* the padded columns */
                if (j >= p->pad_left && j < p->pad_left + W) continue;
                const int64_t iw = cr_pad_index(j - p->pad_left, W, p->pad_mode);
                if (iw < 0)
                    memset(row + j * C, 0, (size_t)C * sizeof(float));
                else
                    memcpy(row + j * C, row + (p->pad_left + iw) * C, (size_t)C * sizeof(float));
            }
        }
}

/* The patch matrix of dW's GEMM, never built: row n = (r*kw + q)*Cin_g + c (tap-major,
 * channel fastest), column k = (image, oh, ow) over the whole batch. Entry (n, k) is
 * padded pixel (oh*sh + r*dh, ow*sw + q*dw) of channel c0 + c in xp (pad_pixel_major):
 * a panel's rows are runs of consecutive channels of one tap, each run one contiguous
 * copy per column, at a fixed offset from the column's first pixel. */
typedef struct {
    const cr_conv_shape *s;
    const float *xp;   /* x padded, pixel-major: N x Hp x Wp x Cin */
    int64_t c0;        /* the group's first input channel */
    int64_t k_base;    /* the GEMM's depth 0 is pixel k_base of the batch */
} dw_patches;

/* A run of consecutive channels of one tap inside a B panel. */
typedef struct {
    int64_t i, len, off;   /* first panel row, length, offset in xp from the column's base */
} patch_run;

/* cr_pack_fn of dw_patches: rows [r0, r0+rows) (patch rows n), depth [k0, k0+kc) (pixels). */
static void pack_patches(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                         int panel, float scale, float *dst)
{
    const dw_patches *d = ctx;
    const cr_conv_shape *s = d->s;
    const cr_conv_params *p = &s->p;
    const int64_t Cin = p->in_channels, cg = s->cin_g, Ho = s->h_out, Wo = s->w_out, P = Ho * Wo;
    const int64_t Hp = s->h_in + p->pad_top + p->pad_bottom;
    const int64_t Wp = s->w_in + p->pad_left + p->pad_right;
    for (int64_t q0 = 0; q0 < rows; q0 += panel) {
        const int64_t h = min64(panel, rows - q0);
        float *dp = dst + q0 * kc;
        patch_run run[CR_MAX_NR];
        int nruns = 0;
        for (int64_t i = 0; i < h; nruns++) {   /* the panel's rows as runs, once */
            const int64_t n = r0 + q0 + i, tap = n / cg, c = n % cg, len = min64(h - i, cg - c);
            const int64_t r = tap / p->kernel_w, q = tap % p->kernel_w;
            run[nruns] = (patch_run){i, len,
                                     (r * p->dilation_h * Wp + q * p->dilation_w) * Cin + d->c0 + c};
            i += len;
        }
        const int64_t kb = d->k_base + k0;
        int64_t img = kb / P, oh = kb % P / Wo, ow = kb % P % Wo;
        for (int64_t k = 0; k < kc; k++) {
            float *col = dp + k * panel;
            const float *base = d->xp + ((img * Hp + oh * p->stride_h) * Wp + ow * p->stride_w) * Cin;
            for (int u = 0; u < nruns; u++)
                copy_run(col + run[u].i, base + run[u].off, run[u].len, scale);
            for (int64_t i = h; i < panel; i++) col[i] = 0.0f;   /* the edge panel */
            if (++ow == Wo) {
                ow = 0;
                if (++oh == Ho) { oh = 0; img++; }
            }
        }
    }
}

/* A pixel-major matrix (row k of stride ld holds the values of one depth index side by
 * side), seen by the GEMM as rows c0.. of its transpose. */
typedef struct {
    const float *p;
    int64_t ld;
} pixel_major;

/* cr_pack_fn of a pixel_major operand: panel q, depth k is a copy of `panel` values. */
static void pack_pixel_major(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                             int panel, float scale, float *dst)
{
    const pixel_major *a = ctx;
    for (int64_t q0 = 0; q0 < rows; q0 += panel) {
        const int64_t h = min64(panel, rows - q0);
        const float *src = a->p + k0 * a->ld + r0 + q0;
        float *d = dst + q0 * kc;
        for (int64_t k = 0; k < kc; k++) {
            copy_run(d + k * panel, src + k * a->ld, h, scale);
            for (int64_t i = h; i < panel; i++) d[k * panel + i] = 0.0f;
        }
    }
}

// @snippet pack_dy_planes
/* Ab (Mg x kc as MR-row panels: panel q holds depth k's MR values side by side at
 * q*MR*kc + k*MR) = rows [0, Mg) of an image's dY_g (Mg planes of P pixels, channel-major
 * as NCHW holds them, at dy) over pixels [p0, p0 + kc): each panel an MR x kc block
 * transposed. Mg is a multiple of MR. Reading dY where it lies spares the pixel-major copy
 * of all of it: MR planes are MR sequential streams, which the prefetchers follow. */
static void pack_dy_planes(const float *dy, int64_t P, int64_t Mg, int64_t p0, int64_t kc,
                           int64_t MR, float *Ab)
{
    for (int64_t q0 = 0; q0 < Mg; q0 += MR)
        transpose_tiles(MR, kc, dy + q0 * P + p0, P, Ab + q0 * kc, MR);
}
// @end pack_dy_planes

/* How dW's GEMMs share the threads (see grad_weight_implicit): 1 when the groups are
 * shared (one GEMM per thread at a time), else the number of depth ranges (one partial dW
 * per thread, added in thread order), or 0 when the GEMM's own loops take the threads. */
typedef struct {
    int per_group;   /* groups shared by the threads */
    int parts;       /* depth ranges with their own partial dWt (0: none) */
} dw_split;

/* The split of dW's work for shape s on the threads available now. */
static dw_split plan_dw(const cr_conv_shape *s)
{
    const int64_t Mg = s->cout_g, K = s->batch * s->h_out * s->w_out;
    const cr_gemm_kernel *kd = cr_gemm_kernel_for(cr_gemm_active_kernel(), Mg);
    const int T = cr_gemm_threads_available();
    dw_split d = {T > 1 && s->p.groups >= T, 0};
    /* with a long depth, each thread takes a range of it (of the batch's pixels) into its
     * own partial dW, added afterwards in thread order: no barrier inside the GEMMs, and
     * the same thread count gives the same bits */
    if (T > 1 && !d.per_group && K >= 4 * (int64_t)T * kd->kc) d.parts = T;
    return d;
}

// @snippet dw_in_place
/* True when dW's GEMM on one thread reads the patch matrix in place (dw_in_place): the
 * kernel reads B in segments, each NR-panel of B is NR channels of one tap, and the
 * output channels fill whole MR tiles. */
static int dw_in_place_fits(const cr_conv_shape *s, const cr_gemm_kernel *kd)
{
    return kd->kernel_seg && s->cin_g % kd->nr == 0 && s->cout_g % kd->mr == 0;
}

/* dWt_g (Cout_g x kh*kw*Cin_g, tap-major, at out + g*Cout_g*Ng) = dY_g times the patch
 * matrix transposed over the batch's pixels [k0, k1), on this thread, the patch matrix
 * never packed: patch row n = tap*Cin_g + c at pixel (img, oh, ow) is the float of xp
 * (padded, pixel-major: pad_pixel_major) at the pixel's place, plus the tap's (r*dh,
 * q*dw) offset, plus channel g*Cin_g + c. An NR-panel of B (NR channels of one tap) is
 * thus NR consecutive floats per pixel; the pixels of an output row are stride_w*Cin
 * apart, and the kernel skips (stride_h*Wp - Wo*stride_w)*Cin floats more from one output
 * row to the next (its segments). A (dY_g, read from dy as NCHW holds it) is packed per
 * depth block into Ab (Cout_g x kc, pack_dy_planes); a depth block stays within one image.
 * Only columns [n0, n1) of dWt_g (multiples of NR) are computed. */
static void dw_in_place(const cr_conv_shape *s, const cr_gemm_kernel *kd, const float *xp,
                        const float *dy, int64_t g, int64_t k0, int64_t k1, int64_t n0,
                        int64_t n1, float *Ab, float *out)
{
    const cr_conv_params *p = &s->p;
    const int64_t Cin = p->in_channels, cg = s->cin_g, Mg = s->cout_g, Ng = cr_im2col_rows(s);
    const int64_t Wo = s->w_out, P = s->h_out * Wo, MR = kd->mr, NR = kd->nr;
    const int64_t Hp = s->h_in + p->pad_top + p->pad_bottom;
    const int64_t Wp = s->w_in + p->pad_left + p->pad_right;
    const int64_t ldb = p->stride_w * Cin, skip = (p->stride_h * Wp - Wo * p->stride_w) * Cin;
    float *C = out + g * Mg * Ng;
    for (int64_t pc = k0; pc < k1;) {   /* depth blocks of at most KC pixels, one image each */
        const int64_t img = pc / P, oh = pc % P / Wo, ow = pc % Wo;
        const int64_t kc = min64(kd->kc, min64(k1, (img + 1) * P) - pc);
        pack_dy_planes(dy + (img * p->out_channels + g * Mg) * P, P, Mg, pc % P, kc, MR, Ab);
        const float *pix = xp + ((img * Hp + oh * p->stride_h) * Wp + ow * p->stride_w) * Cin +
                           g * cg;   /* the block's first pixel, the group's channel 0 */
        const float beta = pc == k0 ? 0.0f : 1.0f;   /* later blocks add to the first */
        for (int64_t n = n0; n < n1; n += NR) {       /* one panel: NR channels of one tap */
            const int64_t tap = n / cg, r = tap / p->kernel_w, q = tap % p->kernel_w;
            const float *B = pix + (r * p->dilation_h * Wp + q * p->dilation_w) * Cin + n % cg;
            const float *next = NULL;   /* the next panel, prefetched by the first tile */
            if (n + NR < n1) {
                const int64_t t2 = (n + NR) / cg;
                next = pix + ((t2 / p->kernel_w) * p->dilation_h * Wp +
                              (t2 % p->kernel_w) * p->dilation_w) * Cin + (n + NR) % cg;
            }
            for (int64_t ir = 0; ir < Mg; ir += MR)
                kd->kernel_seg(kc, Ab + ir * kc, B, ldb, Wo - ow, Wo, skip, ir == 0 ? next : NULL,
                               C + ir * Ng + n, Ng, beta);
        }
        pc += kc;
    }
}
// @end dw_in_place

/* Floats of the buffer dw_gemm needs per thread for shape s over a depth of K pixels
 * (0: none, cr_gemm_engine's own buffers instead). */
static size_t dw_in_place_floats(const cr_conv_shape *s, int64_t K)
{
    const cr_gemm_kernel *kd = cr_gemm_kernel_for(cr_gemm_active_kernel(), s->cout_g);
    return dw_in_place_fits(s, kd) ? (size_t)(s->cout_g * min64(kd->kc, K)) : 0;
}

/* True when dW's GEMM reads dY through dyt, its pixel-major copy (N*Ho*Wo x Cout): when
 * it is not read in place (dw_in_place reads dY as it lies). */
static int dw_needs_dyt(const cr_conv_shape *s)
{
    return !dw_in_place_fits(s, cr_gemm_kernel_for(cr_gemm_active_kernel(), s->cout_g));
}

/* One group's dWt_g (Cout_g x kh*kw*Cin_g) = dY_g times the patch matrix transposed over
 * depth [k0, k1) (the batch's pixels), into out; threads: cr_gemm_engine's (0: as many
 * as there are). The patch matrix is read in place where it can be (dw_in_place), the
 * threads then sharing its panels, each packing dY's blocks itself from dy (NCHW): every
 * column is computed by one thread, in the order one thread alone would use. Otherwise
 * cr_gemm_engine packs both, dY from dyt (dw_needs_dyt). */
static cr_status dw_gemm(const cr_conv_shape *s, const float *xp, const float *dy,
                         const float *dyt, int64_t g, int64_t k0, int64_t k1, float *out,
                         int threads)
{
    const cr_conv_params *p = &s->p;
    const int64_t Mg = s->cout_g, Ng = cr_im2col_rows(s);
    const cr_gemm_kernel *kd = cr_gemm_kernel_for(cr_gemm_active_kernel(), Mg);
    if (dw_in_place_fits(s, kd)) {
        const int T = threads == 1 ? 1 : cr_gemm_threads_available();
        const size_t bytes = dw_in_place_floats(s, k1 - k0) * sizeof(float);
        const int64_t panels = Ng / kd->nr;
        int oom = 0;
#pragma omp parallel num_threads(T) if (T > 1) reduction(|| : oom)
        {
#ifdef _OPENMP
            const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
            const int tid = 0, nt = 1;
#endif
            float *Ab = cr_aligned_alloc(bytes);
            if (!Ab) oom = 1;
            else dw_in_place(s, kd, xp, dy, g, k0, k1, panels * tid / nt * kd->nr,
                             panels * (tid + 1) / nt * kd->nr, Ab, out);
            cr_aligned_free(Ab);
        }
        if (oom) return cr_fail(CR_ENOMEM, "conv backward: dW's packed dY block of %zu bytes "
                                "per thread", bytes);
        return CR_OK;
    }
    const dw_patches bctx = {s, xp, g * s->cin_g, k0};
    const pixel_major actx = {dyt + k0 * p->out_channels + g * Mg, p->out_channels};
    const cr_gemm_operand A = {pack_pixel_major, &actx, NULL, 0}, B = {pack_patches, &bctx, NULL, 0};
    return cr_gemm_engine(kd, Mg, Ng, k1 - k0, &A, &B, 1.0f, 0.0f, out + g * Mg * Ng, Ng,
                          threads);
}

/* Rows [o0, o1) of dw (Cout x Cin_g x kh x kw) = dWt (Cout x kh*kw x Cin_g, tap-major)
 * permuted, dWt being first summed, in thread order, from `parts` partials (if any). */
static void dw_finish(const cr_conv_shape *s, const float *partial, int parts, float *dwt,
                      float *dw, int64_t o0, int64_t o1)
{
    const int64_t cg = s->cin_g, taps = s->p.kernel_h * s->p.kernel_w, row = taps * cg;
    const size_t wn = s->w_numel;
    for (int64_t o = o0; o < o1; o++) {
        if (parts)
            for (int64_t i = o * row; i < (o + 1) * row; i++) {
                float acc = 0.0f;
                for (int t = 0; t < parts; t++) acc += partial[(size_t)t * wn + (size_t)i];
                dwt[i] = acc;
            }
        transpose_tiles(taps, cg, dwt + o * row, cg, dw + o * row, taps);   /* (tap, c) -> (c, tap) */
    }
}

/* dW for every group: dWt_g (Cout_g x kh*kw*Cin_g, tap-major) = dY_g (Cout_g x N*Ho*Wo)
 * times the implicit patch matrix transposed, one GEMM whose depth runs over the whole
 * batch; A is read from dy (NCHW) or dyt (N*Ho*Wo x Cout, pixel-major, dw_needs_dyt),
 * B from xp (pad_pixel_major). Then dw (Cout x Cin_g x kh x kw) is dWt permuted. Threads
 * share the groups when there are enough, else ranges of the depth (partial dWt per thread in
 * `partial`, plan_dw's parts x w_numel floats, added in thread order), else the GEMM's
 * own loops. One parallel region, one barrier between the GEMMs and the sums. Same thread
 * count, same bits. */
static cr_status grad_weight_implicit(const cr_conv_shape *s, const float *xp,
                                      const float *dy, const float *dyt, float *dwt,
                                      float *partial, float *dw)
{
    const cr_conv_params *p = &s->p;
    const int64_t G = p->groups, O = p->out_channels, K = s->batch * s->h_out * s->w_out;
    const dw_split d = plan_dw(s);
    cr_status failed = CR_OK;
    char msg[256] = "";
    if (!d.per_group && !d.parts) {   /* one thread, or the GEMM's loops share them */
        for (int64_t g = 0; g < G && !failed; g++)
            failed = dw_gemm(s, xp, dy, dyt, g, 0, K, dwt, 0);
        if (failed) return failed;
#pragma omp parallel if (may_fork(O))
        {
#ifdef _OPENMP
            const int tid = omp_get_thread_num(), T = omp_get_num_threads();
#else
            const int tid = 0, T = 1;
#endif
            dw_finish(s, NULL, 0, dwt, dw, O * tid / T, O * (tid + 1) / T);
        }
        return CR_OK;
    }
#pragma omp parallel num_threads(d.parts ? d.parts : cr_gemm_threads_available())
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int tid = 0, T = 1;
#endif
        cr_status e = CR_OK;
        if (d.parts) {   /* this thread's range of the depth, every group, its partial */
            for (int64_t g = 0; g < G && !e; g++)
                e = dw_gemm(s, xp, dy, dyt, g, K * tid / T, K * (tid + 1) / T,
                            partial + (size_t)tid * s->w_numel, 1);
        } else {
#pragma omp for schedule(dynamic) nowait
            for (int64_t g = 0; g < G; g++) {   /* whole groups, one GEMM per thread */
                const cr_status r = dw_gemm(s, xp, dy, dyt, g, 0, K, dwt, 1);
                if (r != CR_OK) e = r;
            }
        }
        if (e != CR_OK) {
#pragma omp critical(cr_conv_backward_status)
            {
                failed = e;
                snprintf(msg, sizeof msg, "%s", cr_last_error());
            }
        }
#pragma omp barrier
        /* (every partial is complete; `failed` is seen by all) */
        if (!failed)   /* T partials: the team may be smaller than planned, never larger */
            dw_finish(s, partial, d.parts ? T : 0, dwt, dw, O * tid / T, O * (tid + 1) / T);
    }
    return failed ? cr_fail(failed, "%s", msg) : CR_OK;
}

/* True when dX is a forward convolution of dY (stride 1, zero padding no wider than the
 * dilated kernel less one on each side), see grad_input_forward. */
static int dx_is_forward(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    const int64_t eh = p->dilation_h * (p->kernel_h - 1), ew = p->dilation_w * (p->kernel_w - 1);
    return p->stride_h == 1 && p->stride_w == 1 && p->pad_mode == CR_PAD_ZEROS &&
           p->pad_top <= eh && p->pad_bottom <= eh && p->pad_left <= ew && p->pad_right <= ew;
}

/* wf (Cin x Cout_g x kh x kw) = W (Cout x Cin_g x kh x kw) with input and output channels
 * swapped within each group and the kernel turned by 180 degrees. The threads of the
 * enclosing parallel region (if any) share the tiles, and do not wait at the end. */
static void flip_kernel(const cr_conv_shape *s, const float *w, float *wf)
{
    const cr_conv_params *p = &s->p;
    const int64_t cg = s->cin_g, og = s->cout_g, taps = p->kernel_h * p->kernel_w;
    enum { TB = 16 };   /* (o, c) tiles: both sides' rows stay in cache */
#pragma omp for collapse(2) schedule(static) nowait
    for (int64_t g = 0; g < p->groups; g++)
        for (int64_t o0 = 0; o0 < og; o0 += TB)
            for (int64_t c0 = 0; c0 < cg; c0 += TB)
                for (int64_t o = o0; o < min64(og, o0 + TB); o++)
                    for (int64_t c = c0; c < min64(cg, c0 + TB); c++) {
                        const float *src = w + ((g * og + o) * cg + c) * taps;
                        float *dst = wf + ((g * cg + c) * og + o) * taps;
                        for (int64_t t = 0; t < taps; t++) dst[t] = src[taps - 1 - t];
                    }
}

/* The parameters of dX's forward convolution: dY in, dX out, stride 1, padding
 * d*(k-1) - pad on each side, no bias. */
static cr_conv_params dx_forward_params(const cr_conv_params *p)
{
    cr_conv_params t = *p;
    t.in_channels = p->out_channels;
    t.out_channels = p->in_channels;
    t.bias = false;
    t.pad_top = p->dilation_h * (p->kernel_h - 1) - p->pad_top;
    t.pad_bottom = p->dilation_h * (p->kernel_h - 1) - p->pad_bottom;
    t.pad_left = p->dilation_w * (p->kernel_w - 1) - p->pad_left;
    t.pad_right = p->dilation_w * (p->kernel_w - 1) - p->pad_right;
    return t;
}

/* dX = conv2d(dY, W'), wf holding W' (flip_kernel): every input pixel gathers the
 * gradients of the outputs it fed, through chapter 3's fastest forward. */
static cr_status grad_input_forward(const cr_conv_shape *s, const cr_tensor *dy, cr_tensor *dx,
                                    float *wf)
{
    const cr_conv_params *p = &s->p;
    const cr_conv_params t = dx_forward_params(p);
    cr_tensor wt = {4, {p->in_channels, s->cout_g, p->kernel_h, p->kernel_w}, s->w_numel, wf};
    return cr_conv2d_fast(&t, dy, &wt, NULL, dx);
}

/* Where cr_conv2d_backward's own workspace goes: the padded pixel-major x, the
 * pixel-major dY (only where dw_needs_dyt), the turned kernel or dWt, and dW's partials
 * (floats). */
typedef struct {
    size_t xn, yn, wn, pn;
} backward_layout;

/* The layout for shape s on the threads available now (dx_fwd: dX by the forward route;
 * want_dw: dW asked for). */
static backward_layout plan_backward(const cr_conv_shape *s, int dx_fwd, int want_dw)
{
    const cr_conv_params *p = &s->p;
    backward_layout b = {0, 0, 0, 0};
    const int implicit = want_dw && !is_pointwise(s);   /* dW by the implicit GEMM */
    if (implicit) {
        b.xn = (size_t)(s->batch * p->in_channels * (s->h_in + p->pad_top + p->pad_bottom) *
                        (s->w_in + p->pad_left + p->pad_right));
        b.yn = dw_needs_dyt(s) ? s->y_numel : 0;
        b.pn = (size_t)plan_dw(s).parts * s->w_numel;
    }
    if (implicit || dx_fwd) b.wn = s->w_numel;
    return b;
}

cr_status cr_conv2d_backward(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                             const cr_tensor *dy, cr_tensor *dx, cr_tensor *dw,
                             cr_tensor *db)
{
    cr_conv_shape s;
    cr_status st = cr_conv_backward_bind(&s, p, x, w, dy, dx, dw, db);
    if (st) return st;
    if (db) grad_bias(&s, dy->data, db->data);
    const int fwd_dx = dx && dx_is_forward(&s);
    if (dx && !fwd_dx && cr_grad_input_direct_fits(&s)) {   /* few channels a group */
        st = cr_grad_input_direct(&s, w->data, dy->data, dx->data);
        if (st) return st;
    } else if (dx && !fwd_dx) {   /* a stride or a padding mode the forward route cannot take */
        st = cr_conv2d_backward_gemm(p, x, w, dy, dx, NULL, NULL);
        if (st) return st;
    }
    if (dw && is_pointwise(&s)) {   /* x is the patch matrix: NT GEMMs */
        st = cr_conv2d_backward_gemm(p, x, w, dy, NULL, dw, NULL);
        if (st) return st;
        dw = NULL;
    }
    if (dw && cr_grad_weight_direct_fits(&s)) {   /* few channels a group: dot products */
        st = cr_grad_weight_direct(&s, x->data, dy->data, dw->data);
        if (st) return st;
        dw = NULL;
    }
    if (!dw && !fwd_dx) return CR_OK;
    const backward_layout L = plan_backward(&s, fwd_dx, dw != NULL);
    const size_t bytes = (L.xn + L.yn + L.wn + L.pn) * sizeof(float);
    float *buf = cr_aligned_alloc(bytes);
    if (!buf) return cr_fail(CR_ENOMEM, "conv backward: %zu bytes of workspace", bytes);
    float *xp = buf, *dyt = xp + L.xn, *wbuf = dyt + L.yn, *partial = wbuf + L.wn;
    /* the copies that read only the inputs, in one parallel region: no thread waits
     * between them */
#pragma omp parallel if (may_fork(s.batch * p->in_channels * s.h_in))
    {
        if (fwd_dx) flip_kernel(&s, w->data, wbuf);
        if (dw) {
            pad_pixel_major(&s, x->data, xp);
            if (L.yn) to_pixel_major(s.batch, p->out_channels, s.h_out * s.w_out, dy->data, dyt);
        }
    }
    if (fwd_dx) st = grad_input_forward(&s, dy, dx, wbuf);   /* wbuf: the turned kernel */
    if (st == CR_OK && dw)                                  /* wbuf: dWt, now free */
        st = grad_weight_implicit(&s, xp, dy->data, L.yn ? dyt : NULL, wbuf, partial, dw->data);
    cr_aligned_free(buf);
    return st;
}

size_t cr_conv2d_backward_workspace_bytes(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    const int fwd_dx = dx_is_forward(s);
    size_t peak = 0;
    if (!fwd_dx)                                         /* dX scattered or by col2im, first */
        peak = cr_grad_input_direct_fits(s) ? cr_grad_input_direct_bytes(s)
                                            : gemm_backward_bytes(s, 1, 0);
    if (is_pointwise(s)) {                               /* dW by NT GEMMs, next */
        const size_t b = gemm_backward_bytes(s, 0, 1);
        if (b > peak) peak = b;
    }
    const int direct = !is_pointwise(s) && cr_grad_weight_direct_fits(s);
    if (direct) {                                        /* or dW as dot products */
        const size_t b = cr_grad_weight_direct_bytes(s);
        if (b > peak) peak = b;
    }
    if ((is_pointwise(s) || direct) && !fwd_dx) return peak;
    /* then the one buffer, and beside it dX's forward convolution or dW's GEMMs */
    const backward_layout L = plan_backward(s, fwd_dx, !direct);
    const size_t own = (L.xn + L.yn + L.wn + L.pn) * sizeof(float);
    size_t beside = 0;
    if (fwd_dx) {
        const cr_conv_params t = dx_forward_params(p);
        cr_conv_shape ts;
        if (cr_conv_shape_init(&ts, &t, s->batch, s->h_out, s->w_out) == CR_OK)
            beside = cr_conv2d_fast_peak_bytes(&ts);
    }
    if (!is_pointwise(s) && !direct) {   /* as grad_weight_implicit runs its GEMMs */
        const int64_t Mg = s->cout_g, Ng = cr_im2col_rows(s), K = s->batch * s->h_out * s->w_out;
        const cr_gemm_kernel *kd = cr_gemm_kernel_for(cr_gemm_active_kernel(), Mg);
        const dw_split d = plan_dw(s);
        const int T = cr_gemm_threads_available();
        size_t gemms = 0;
        const size_t fl = sizeof(float);
        if (d.parts)
            for (int t = 0; t < d.parts; t++) {
                const int64_t Kt = K * (t + 1) / d.parts - K * t / d.parts;
                gemms += dw_in_place_floats(s, Kt) ? dw_in_place_floats(s, Kt) * fl
                                                   : cr_gemm_engine_workspace(kd, Mg, Ng, Kt, 1);
            }
        else if (d.per_group)
            gemms = (size_t)T * (dw_in_place_floats(s, K) ? dw_in_place_floats(s, K) * fl
                                                          : cr_gemm_engine_workspace(kd, Mg, Ng, K, 1));
        else if (dw_in_place_floats(s, K))   /* the threads share the panels */
            gemms = (size_t)T * dw_in_place_floats(s, K) * fl;
        else
            gemms = cr_gemm_engine_workspace(kd, Mg, Ng, K, T);
        if (gemms > beside) beside = gemms;
    }
    return own + beside > peak ? own + beside : peak;
}
