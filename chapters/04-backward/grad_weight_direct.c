/* grad_weight_direct.c — chapter 4: dW of a grouped convolution, straight from x and dY.
 *
 * ResNeXt's 3x3 layers have 32 groups of 4 to 32 channels. As a GEMM, one group's dW is
 * a Cout_g x (Cin_g*kh*kw) product — 4 x 36 in the first stage — whose depth is every
 * output pixel of the batch: the micro-kernel, built for wide tiles, spends its time
 * packing and summing partial tiles. Here each weight's gradient is what it is, a dot
 * product: dW[o][c][r][q] = sum over (n, oh, ow) of dY[n][o][oh][ow] times the padded
 * input at (oh*stride + r*dil, ow*stride + q*dil). A block of output channels times a
 * block of taps stays in vector registers while every output row streams by; each dY
 * vector is loaded once per block and reused for every tap, each input vector once and
 * reused for every channel. The input of one (image, group) is first copied with its
 * padding resolved (any padding mode) and its columns split by stride phase, as chapter
 * 3's grouped forward does, so that every tap reads contiguous columns. */
#include "grad_weight_direct.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "direct.h"          /* cr_pad_index: chapter 1's padding rule */
#include "gemm_internal.h"   /* the CPU's vector units, chapter 3's kernel choice */
#include "tensor.h"

/* The most output channels per group this path takes (beyond, the GEMM's tiles fill),
 * and the fewest output columns it needs above 16 channels a group: measured on lab 4's
 * machine, 1 thread, batch 8, ResNeXt's stages (2026-11-30, AMD EPYC Zen 5): 4, 8 and 16
 * channels 1.2-33x faster than the GEMM route at any width; 32 channels 5.8x faster at
 * 28 columns but 0.3-0.6x at 7 and 14 (a row of 7 fills 7 of a vector's 16 lanes). */
#define DW_DIRECT_MAX_COUT_G 32
#define DW_DIRECT_WIDE_COUT_G 16
#define DW_DIRECT_WIDE_MIN_WO 28

/* Where one (image, group)'s padded copy puts things. */
typedef struct {
    int64_t hp;        /* padded rows */
    int64_t lp;        /* columns of one stride phase of a padded row */
    int64_t row;       /* floats of a padded row: stride_w phases of lp */
    int64_t xstep;     /* floats between the rows read by consecutive output rows */
    int64_t floats;    /* floats of the copy: Cin_g padded planes */
} dwd_geom;

/* The copy's geometry for shape s (see dwd_geom). */
static dwd_geom dwd_geometry(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    dwd_geom g;
    const int64_t wp = s->w_in + p->pad_left + p->pad_right, sw = p->stride_w;
    const int64_t have = (wp + sw - 1) / sw;                          /* a phase's columns */
    const int64_t need = s->w_out + (p->kernel_w - 1) * p->dilation_w / sw;   /* read */
    g.hp = s->h_in + p->pad_top + p->pad_bottom;
    g.lp = need > have ? need : have;
    g.row = sw * g.lp;
    g.xstep = p->stride_h * g.row;
    g.floats = s->cin_g * g.hp * g.row;
    return g;
}

int cr_grad_weight_direct_fits(const cr_conv_shape *s)
{
    const int T = cr_gemm_threads_available();
    return cr_cpu_has_avx2() && s->p.groups > 1 && s->p.groups >= T &&
           (s->cout_g <= DW_DIRECT_WIDE_COUT_G ||
            (s->cout_g <= DW_DIRECT_MAX_COUT_G && s->w_out >= DW_DIRECT_WIDE_MIN_WO));
}

size_t cr_grad_weight_direct_bytes(const cr_conv_shape *s)
{
    const int T = cr_gemm_threads_available();
    const dwd_geom g = dwd_geometry(s);
    const int64_t taps = s->cin_g * s->p.kernel_h * s->p.kernel_w;
    return (size_t)T * (size_t)g.floats * sizeof(float) + (size_t)(taps + g.row) * sizeof(int64_t);
}

// @snippet dw_direct_pad
/* col_map (stride_w x lp entries): the input column that place e of phase ph of a padded
 * row copies (padded column e*stride_w + ph, the layer's padding rule), or -1 for a zero. */
static void dwd_col_map(const cr_conv_shape *s, const dwd_geom *g, int64_t *col_map)
{
    const cr_conv_params *p = &s->p;
    const int64_t sw = p->stride_w, wp = s->w_in + p->pad_left + p->pad_right;
    for (int64_t ph = 0; ph < sw; ph++)
        for (int64_t e = 0; e < g->lp; e++) {
            const int64_t j = e * sw + ph;   /* the padded column */
            col_map[ph * g->lp + e] = j < wp ? cr_pad_index(j - p->pad_left, s->w_in, p->pad_mode) : -1;
        }
}

/* xp (Cin_g x hp x stride_w x lp) = one image's group x_g (Cin_g x H x W) padded by the
 * layer's rule, each padded row split into its stride_w column phases (see dwd_col_map). */
static void dwd_pad(const cr_conv_shape *s, const dwd_geom *g, const int64_t *col_map,
                    const float *x_g, float *xp)
{
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, pl = p->pad_left;
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t i = 0; i < g->hp; i++) {
            float *dst = xp + (c * g->hp + i) * g->row;
            const int64_t ih = cr_pad_index(i - p->pad_top, H, p->pad_mode);
            if (ih < 0) {
                memset(dst, 0, (size_t)g->row * sizeof(float));
                continue;
            }
            const float *src = x_g + (c * H + ih) * W;
            if (p->stride_w == 1) {   /* the row itself in the middle, the padding around */
                memcpy(dst + pl, src, (size_t)W * sizeof(float));
                for (int64_t e = 0; e < pl; e++) dst[e] = col_map[e] < 0 ? 0.0f : src[col_map[e]];
                for (int64_t e = pl + W; e < g->row; e++)
                    dst[e] = col_map[e] < 0 ? 0.0f : src[col_map[e]];
            } else {
                for (int64_t e = 0; e < g->row; e++) dst[e] = col_map[e] < 0 ? 0.0f : src[col_map[e]];
            }
        }
}
// @end dw_direct_pad

// @snippet dw_direct_drive
cr_status cr_grad_weight_direct(const cr_conv_shape *s, const float *x, const float *dy,
                                float *dw)
{
    const cr_conv_params *p = &s->p;
    const dwd_geom g = dwd_geometry(s);
    const int64_t taps = s->cin_g * p->kernel_h * p->kernel_w, G = p->groups;
    const int64_t plane = s->h_out * s->w_out, HW = s->h_in * s->w_in;
    int64_t *tap_off = malloc((size_t)(taps + g.row) * sizeof *tap_off);
    if (!tap_off) return cr_fail(CR_ENOMEM, "conv backward: dW's tap table");
    int64_t *col_map = tap_off + taps;
    dwd_col_map(s, &g, col_map);
    /* tap (c, r, q) of output row 0, column 0 reads at: row r*dil of channel c, the
     * phase and place of padded column q*dil */
    for (int64_t c = 0, t = 0; c < s->cin_g; c++)
        for (int64_t r = 0; r < p->kernel_h; r++)
            for (int64_t q = 0; q < p->kernel_w; q++, t++) {
                const int64_t j = q * p->dilation_w;
                tap_off[t] = (c * g.hp + r * p->dilation_h) * g.row +
                             (j % p->stride_w) * g.lp + j / p->stride_w;
            }
    const cr_dw_direct_fn fn = cr_gemm_active_kernel() == &cr_kernel_avx512
                                   ? cr_dw_direct_avx512 : cr_dw_direct_avx2;
    const cr_dw_direct_args a = {s->cout_g, taps, tap_off, s->h_out, s->w_out, g.xstep, plane};
    memset(dw, 0, s->w_numel * sizeof(float));
    int oom = 0;
    /* each thread owns whole groups, and adds their images in order: the same bits for
     * any thread count */
#pragma omp parallel reduction(|| : oom) if (cr_gemm_threads_available() > 1)
    {
        float *xp = cr_aligned_alloc((size_t)g.floats * sizeof(float));
        if (!xp) oom = 1;
#pragma omp for schedule(static)
        for (int64_t gi = 0; gi < G; gi++)
            for (int64_t n = 0; n < s->batch && xp; n++) {
                dwd_pad(s, &g, col_map,
                        x + (n * p->in_channels + gi * s->cin_g) * HW, xp);
                fn(&a, xp, dy + (n * p->out_channels + gi * s->cout_g) * plane,
                   dw + gi * s->cout_g * taps);
            }
        cr_aligned_free(xp);
    }
    free(tap_off);
    return oom ? cr_fail(CR_ENOMEM, "conv backward: %lld bytes of dW's padded input per thread",
                         (long long)(g.floats * (int64_t)sizeof(float)))
               : CR_OK;
}
// @end dw_direct_drive

/* ---- the kernels ------------------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define CR_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define CR_AVX2 __attribute__((target("avx2,fma")))

// @snippet dw_direct_block512
/* dw (COB rows of taps floats, from tap t0) += COB channels of dy (Ho x Wo planes,
 * `plane` apart) correlated with TB taps of xp: COB x TB zmm accumulators while every
 * output row streams by 16 columns at a time, the last columns through a mask (masked
 * lanes load zeros, so nothing past Wo enters a sum). */
CR_AVX512 static inline __attribute__((always_inline)) void
dw_block512(const int COB, const int TB, const cr_dw_direct_args *a, const float *xp,
            const float *dy, float *dw, int64_t t0)
{
    __m512 acc[4][6];
#pragma GCC unroll 4
    for (int c = 0; c < COB; c++)
#pragma GCC unroll 6
        for (int t = 0; t < TB; t++) acc[c][t] = _mm512_setzero_ps();
    const int64_t Wo = a->wo;
    for (int64_t oh = 0; oh < a->ho; oh++) {
        const float *xr = xp + oh * a->xstep, *dr = dy + oh * Wo;
        for (int64_t ow = 0; ow < Wo; ow += 16) {
            const int64_t n = Wo - ow;
            const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
            __m512 d[4];
#pragma GCC unroll 4
            for (int c = 0; c < COB; c++) d[c] = _mm512_maskz_loadu_ps(m, dr + c * a->plane + ow);
#pragma GCC unroll 6
            for (int t = 0; t < TB; t++) {
                const __m512 xv = _mm512_maskz_loadu_ps(m, xr + a->tap_off[t0 + t] + ow);
#pragma GCC unroll 4
                for (int c = 0; c < COB; c++) acc[c][t] = _mm512_fmadd_ps(d[c], xv, acc[c][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < COB; c++)
#pragma GCC unroll 6
        for (int t = 0; t < TB; t++) dw[c * a->taps + t0 + t] += _mm512_reduce_add_ps(acc[c][t]);
}
// @end dw_direct_block512

/* dw_block512 with 4 channels and a run-time tb (1..6), dispatched to constant copies. */
CR_AVX512 static void dw_block512_c4(int tb, const cr_dw_direct_args *a, const float *xp,
                                     const float *dy, float *dw, int64_t t0)
{
    switch (tb) {   /* constant TB: the compiler keeps every accumulator in a register */
    case 6: dw_block512(4, 6, a, xp, dy, dw, t0); break;
    case 5: dw_block512(4, 5, a, xp, dy, dw, t0); break;
    case 4: dw_block512(4, 4, a, xp, dy, dw, t0); break;
    case 3: dw_block512(4, 3, a, xp, dy, dw, t0); break;
    case 2: dw_block512(4, 2, a, xp, dy, dw, t0); break;
    default: dw_block512(4, 1, a, xp, dy, dw, t0); break;
    }
}

/* dw_block512 with 1..3 channels (the last block of a group) and 6 taps or fewer. */
CR_AVX512 static void dw_block512_tail(int cob, int tb, const cr_dw_direct_args *a,
                                       const float *xp, const float *dy, float *dw, int64_t t0)
{
    for (int t = 0; t < tb; t++)   /* one tap at a time: rare, and never the hot loop */
        switch (cob) {
        case 3: dw_block512(3, 1, a, xp, dy, dw, t0 + t); break;
        case 2: dw_block512(2, 1, a, xp, dy, dw, t0 + t); break;
        default: dw_block512(1, 1, a, xp, dy, dw, t0 + t); break;
        }
}

CR_AVX512 void cr_dw_direct_avx512(const cr_dw_direct_args *a, const float *xp, const float *dy,
                                   float *dw)
{
    for (int64_t c0 = 0; c0 < a->cout_g; c0 += 4) {
        const int cob = a->cout_g - c0 < 4 ? (int)(a->cout_g - c0) : 4;
        for (int64_t t0 = 0; t0 < a->taps; t0 += 6) {
            const int tb = a->taps - t0 < 6 ? (int)(a->taps - t0) : 6;
            if (cob == 4) dw_block512_c4(tb, a, xp, dy + c0 * a->plane, dw + c0 * a->taps, t0);
            else dw_block512_tail(cob, tb, a, xp, dy + c0 * a->plane, dw + c0 * a->taps, t0);
        }
    }
}

/* The sum of a ymm's 8 lanes, in a fixed order. */
CR_AVX2 static inline float hsum256(__m256 v)
{
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

/* The AVX2 mask of the first n (0..8) lanes. */
CR_AVX2 static inline __m256i mask256(int64_t n)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n > 8 ? 8 : n)), lane);
}

// @snippet dw_direct_block256
/* dw_block512 with ymm: COB x TB accumulators (at most 4 x 3 = 12 of the 16 registers),
 * 8 columns at a time, the last ones through vmaskmovps (masked lanes read as zeros). */
CR_AVX2 static inline __attribute__((always_inline)) void
dw_block256(const int COB, const int TB, const cr_dw_direct_args *a, const float *xp,
            const float *dy, float *dw, int64_t t0)
{
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int c = 0; c < COB; c++)
#pragma GCC unroll 3
        for (int t = 0; t < TB; t++) acc[c][t] = _mm256_setzero_ps();
    const int64_t Wo = a->wo, full = Wo / 8 * 8;
    const __m256i m = mask256(Wo - full);
    for (int64_t oh = 0; oh < a->ho; oh++) {
        const float *xr = xp + oh * a->xstep, *dr = dy + oh * Wo;
        for (int64_t ow = 0; ow < Wo; ow += 8) {
            const int tail = ow == full;
            __m256 d[4];
#pragma GCC unroll 4
            for (int c = 0; c < COB; c++)
                d[c] = tail ? _mm256_maskload_ps(dr + c * a->plane + ow, m)
                            : _mm256_loadu_ps(dr + c * a->plane + ow);
#pragma GCC unroll 3
            for (int t = 0; t < TB; t++) {
                const float *xt = xr + a->tap_off[t0 + t] + ow;
                const __m256 xv = tail ? _mm256_maskload_ps(xt, m) : _mm256_loadu_ps(xt);
#pragma GCC unroll 4
                for (int c = 0; c < COB; c++) acc[c][t] = _mm256_fmadd_ps(d[c], xv, acc[c][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < COB; c++)
#pragma GCC unroll 3
        for (int t = 0; t < TB; t++) dw[c * a->taps + t0 + t] += hsum256(acc[c][t]);
}
// @end dw_direct_block256

CR_AVX2 void cr_dw_direct_avx2(const cr_dw_direct_args *a, const float *xp, const float *dy,
                               float *dw)
{
    for (int64_t c0 = 0; c0 < a->cout_g; c0 += 4) {
        const int cob = a->cout_g - c0 < 4 ? (int)(a->cout_g - c0) : 4;
        const float *dyc = dy + c0 * a->plane;
        float *dwc = dw + c0 * a->taps;
        for (int64_t t0 = 0; t0 < a->taps; t0 += 3) {
            const int tb = a->taps - t0 < 3 ? (int)(a->taps - t0) : 3;
            if (cob == 4 && tb == 3) dw_block256(4, 3, a, xp, dyc, dwc, t0);
            else   /* the last taps or channels of a group: one tap, one channel at a time */
                for (int c = 0; c < cob; c++)
                    for (int t = 0; t < tb; t++)
                        dw_block256(1, 1, a, xp, dyc + c * a->plane, dwc + c * a->taps, t0 + t);
        }
    }
}

#else   /* not x86-64 with GCC: never called (cr_cpu_has_avx2 says no) */

void cr_dw_direct_avx512(const cr_dw_direct_args *a, const float *xp, const float *dy, float *dw)
{
    (void)a, (void)xp, (void)dy, (void)dw;
}
void cr_dw_direct_avx2(const cr_dw_direct_args *a, const float *xp, const float *dy, float *dw)
{
    (void)a, (void)xp, (void)dy, (void)dw;
}

#endif
