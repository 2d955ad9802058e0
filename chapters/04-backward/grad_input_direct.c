/* grad_input_direct.c — chapter 4: dX of a strided grouped convolution, straight from W
 * and dY.
 *
 * A stride keeps dX off the forward route (a strided convolution's dX is a convolution
 * of dY with holes), so it went to per-group GEMMs and col2im: for ResNeXt's strided 3x3
 * layers, 32 groups of 4 to 32 channels, each GEMM is tiny and col2im re-reads the whole
 * patch matrix. Here dX is what it is, a scatter: every output pixel sends w[co][tap]
 * times its gradient to the input pixel that tap read. Into a zeroed, padded copy of one
 * (image, group)'s dX, split by stride phase in rows and columns as chapter 3's grouped
 * forward splits its input, each tap adds sum over co of w[co][tap] * dY[co] as one
 * contiguous run over dY's flattened plane (rows of lp, the columns past Wo zero). A
 * block of taps stays in vector registers while the output channels stream by; the tap
 * blocks are outermost and each sweeps the whole plane, and a block holds one kernel
 * place of different input channels, whose runs lie in different planes of the copy: so
 * that the overlapping unaligned stores of different taps never meet in flight. Then the padded copy folds back into
 * dX: padded places that the padding mode maps onto real pixels (reflect, replicate,
 * circular) are added there, in a fixed order; zeros' places are dropped. */
#include "grad_input_direct.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "direct.h"          /* cr_pad_index: chapter 1's padding rule */
#include "gemm_internal.h"   /* the CPU's vector units, chapter 3's kernel choice */
#include "tensor.h"

/* The most input and output channels per group this path takes. Measured on a 2-core
 * AMD EPYC (Zen 5) VM under load 5-11, 1 thread, batch 8, 32 groups, 3x3 stride 2 pad 1,
 * inputs 56, 48, 24 and 12 square (2026-11-30), best of 5, against the GEMM + col2im
 * route in the same run: 4, 8, 16 and 32 channels a group 1.4-8x faster on AVX-512 and
 * 1.4-7.9x on AVX2, the least at 32 channels on large inputs; wider groups not measured,
 * and left to the GEMMs, whose tiles fill there. */
#define DX_DIRECT_MAX_COUT_G 32
#define DX_DIRECT_MAX_CIN_G 32

/* The kernels' column block: the flat plane is rounded up to it. */
#define DX_COLS 48

/* Where one (image, group)'s padded dX copy puts things: padded (c, i, j) at
 * (((c * sh + i % sh) * sw + j % sw) * hq + i / sh) * lp + j / sw. */
typedef struct {
    int64_t hp, wp;    /* padded rows and columns */
    int64_t hq, lp;    /* rows of one row phase, columns of one column phase */
    int64_t flat;      /* floats per channel of dY's flat copy: Ho * lp rounded up */
    int64_t dx_floats; /* floats of the padded dX copy, slack for the last block included */
} dxd_geom;

/* The copy's geometry for shape s (see dxd_geom). */
static dxd_geom dxd_geometry(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    const int64_t sh = p->stride_h, sw = p->stride_w;
    dxd_geom g;
    g.hp = s->h_in + p->pad_top + p->pad_bottom;
    g.wp = s->w_in + p->pad_left + p->pad_right;
    g.hq = (g.hp + sh - 1) / sh;
    g.lp = (g.wp + sw - 1) / sw;
    g.flat = (s->h_out * g.lp + DX_COLS - 1) / DX_COLS * DX_COLS;
    /* the last tap's last block ends at most lp + DX_COLS past the channels */
    g.dx_floats = s->cin_g * sh * sw * g.hq * g.lp + g.lp + DX_COLS;
    return g;
}

int cr_grad_input_direct_fits(const cr_conv_shape *s)
{
    return cr_cpu_has_avx2() && s->p.groups > 1 && s->cout_g <= DX_DIRECT_MAX_COUT_G &&
           s->cin_g <= DX_DIRECT_MAX_CIN_G;
}

/* Floats of one thread's buffers: the padded dX copy and dY's flat copy. */
static int64_t thread_floats(const cr_conv_shape *s, const dxd_geom *g)
{
    return g->dx_floats + s->cout_g * g->flat;
}

size_t cr_grad_input_direct_bytes(const cr_conv_shape *s)
{
    const dxd_geom g = dxd_geometry(s);
    const int64_t taps = s->cin_g * s->p.kernel_h * s->p.kernel_w;
    return (size_t)cr_gemm_threads_available() * ((size_t)thread_floats(s, &g) * sizeof(float) +
                                     (size_t)g.hp * sizeof(int64_t)) +   /* + row_map */
           (size_t)(taps + g.wp) * sizeof(int64_t);
}

/* dyp (Cout_g x flat) = dy_g (Cout_g x Ho x Wo) with each row widened to lp columns and
 * the plane to flat floats: only the rows are written, the new places keep the zeros
 * they were given once (they add nothing anywhere). */
static void dxd_flat_dy(const cr_conv_shape *s, const dxd_geom *g, const float *dy_g,
                        float *dyp)
{
    const int64_t Ho = s->h_out, Wo = s->w_out;
    for (int64_t co = 0; co < s->cout_g; co++) {
        float *dst = dyp + co * g->flat;
        for (int64_t oh = 0; oh < Ho; oh++)
            memcpy(dst + oh * g->lp, dy_g + (co * Ho + oh) * Wo, (size_t)Wo * sizeof(float));
    }
}

/* [*e0, *e1): the places e of column phase ph (padded column e*sw + ph) that hold real
 * columns, [pl, pl + W) of the padded row; lp places in all. */
static void interior_run(int64_t pl, int64_t W, int64_t ph, int64_t sw, int64_t lp,
                         int64_t *e0, int64_t *e1)
{
    *e0 = pl > ph ? (pl - ph + sw - 1) / sw : 0;
    *e1 = (pl + W - ph + sw - 1) / sw;
    if (*e1 > lp) *e1 = lp;
    if (*e0 > *e1) *e0 = *e1;
}

/* dst[col_map[j]] += v for a padded column j that the padding rule maps onto a real one
 * (j < wp, col_map[j] >= 0); else nothing. */
static inline void add_mapped(const int64_t *col_map, int64_t j, int64_t wp, float v, float *dst)
{
    if (j < wp && col_map[j] >= 0) dst[col_map[j]] += v;
}

/* dst[iw] (W floats) = padded column pl + iw of a row split into 2 phases (row: phase 0,
 * phase_floats later phase 1), pairs of pixels at a time: a loop the compiler vectorizes. */
static void copy_real_columns2(const float *row, int64_t phase_floats, int64_t pl, int64_t W,
                               float *dst)
{
    const float *a = row + (pl & 1) * phase_floats + pl / 2;                /* pixels 0, 2, ... */
    const float *b = row + ((pl + 1) & 1) * phase_floats + (pl + 1) / 2;    /* pixels 1, 3, ... */
    for (int64_t k = 0; k < W / 2; k++) {
        dst[2 * k] = a[k];
        dst[2 * k + 1] = b[k];
    }
    if (W & 1) dst[W - 1] = a[W / 2];
}

// @snippet dx_direct_fold
/* dx_g (Cin_g x H x W) = the padded copy dxp folded back: first the real places, one per
 * pixel, copied; then each padding place (i, j), row by row, added to the pixel that the
 * padding rule maps it to (row_map[i], col_map[j]), or dropped where either is -1 (a
 * fixed order). Then the channels' planes are zeroed again (the slack after them only
 * ever receives zeros), so dxp is all zeros after. */
static void dxd_fold(const cr_conv_shape *s, const dxd_geom *g, const int64_t *row_map,
                     const int64_t *col_map, float *dxp, float *dx_g)
{
    const int64_t sh = s->p.stride_h, sw = s->p.stride_w, H = s->h_in, W = s->w_in;
    const int64_t pl = s->p.pad_left, pt = s->p.pad_top, pf = g->hq * g->lp;   /* a phase */
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t ih = 0; ih < H; ih++) {   /* the real rows' real columns */
            const int64_t i = ih + pt;
            const float *row = dxp + ((c * sh + i % sh) * sw * g->hq + i / sh) * g->lp;
            float *dst = dx_g + (c * H + ih) * W;
            if (sw == 2) {
                copy_real_columns2(row, pf, pl, W, dst);
                continue;
            }
            for (int64_t ph = 0; ph < sw; ph++) {
                int64_t e0, e1;
                interior_run(pl, W, ph, sw, g->lp, &e0, &e1);
                for (int64_t e = e0; e < e1; e++) dst[e * sw + ph - pl] = row[ph * pf + e];
            }
        }
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t i = 0; i < g->hp; i++) {   /* the padding's places */
            if (row_map[i] < 0) continue;
            const int real_row = i >= pt && i < pt + H;
            const float *row = dxp + ((c * sh + i % sh) * sw * g->hq + i / sh) * g->lp;
            float *dst = dx_g + (c * H + row_map[i]) * W;
            for (int64_t ph = 0; ph < sw; ph++) {
                int64_t e0, e1;
                interior_run(pl, W, ph, sw, g->lp, &e0, &e1);
                if (!real_row) e0 = e1 = 0;   /* every column of a padding row */
                for (int64_t e = 0; e < e0; e++)
                    add_mapped(col_map, e * sw + ph, g->wp, row[ph * pf + e], dst);
                for (int64_t e = e1; e < g->lp; e++)
                    add_mapped(col_map, e * sw + ph, g->wp, row[ph * pf + e], dst);
            }
        }
    /* read: zeros again for the next pair, one run (the channels' planes are contiguous) */
    memset(dxp, 0, (size_t)(s->cin_g * sh * sw * pf) * sizeof(float));
}
// @end dx_direct_fold

// @snippet dx_direct_drive
cr_status cr_grad_input_direct(const cr_conv_shape *s, const float *w, const float *dy,
                               float *dx)
{
    const cr_conv_params *p = &s->p;
    const dxd_geom g = dxd_geometry(s);
    const int64_t sh = p->stride_h, sw = p->stride_w;
    const int64_t taps = s->cin_g * p->kernel_h * p->kernel_w, G = p->groups;
    const int64_t plane = s->h_out * s->w_out, HW = s->h_in * s->w_in;
    int64_t *tap_off = malloc((size_t)(taps + g.wp) * sizeof *tap_off);
    if (!tap_off) return cr_fail(CR_ENOMEM, "conv backward: dX's tap table");
    int64_t *col_map = tap_off + taps;
    for (int64_t j = 0; j < g.wp; j++) col_map[j] = cr_pad_index(j - p->pad_left, s->w_in, p->pad_mode);
    /* tap (c, r, q) of output (0, 0) lands on padded (r*dil, q*dil) of channel c */
    for (int64_t c = 0, t = 0; c < s->cin_g; c++)
        for (int64_t r = 0; r < p->kernel_h; r++)
            for (int64_t q = 0; q < p->kernel_w; q++, t++) {
                const int64_t i = r * p->dilation_h, j = q * p->dilation_w;
                tap_off[t] = ((c * sh + i % sh) * sw + j % sw) * g.hq * g.lp + i / sh * g.lp +
                             j / sw;
            }
    const cr_dx_direct_fn fn = cr_gemm_active_kernel() == &cr_kernel_avx512
                                   ? cr_dx_direct_avx512 : cr_dx_direct_avx2;
    const cr_dx_direct_args a = {s->cout_g, s->cin_g, p->kernel_h * p->kernel_w, tap_off, g.flat};
    const size_t bytes = (size_t)thread_floats(s, &g) * sizeof(float);
    int oom = 0;
    /* each (image, group) is one thread's from start to end: the same bits for any
     * thread count */
#pragma omp parallel reduction(|| : oom) if (cr_gemm_threads_available() > 1 && s->batch * G > 1)
    {
        float *dxp = cr_aligned_alloc(bytes), *dyp = dxp ? dxp + g.dx_floats : NULL;
        int64_t *row_map = malloc((size_t)g.hp * sizeof *row_map);
        if (!dxp || !row_map) oom = 1;
        else memset(dxp, 0, bytes);   /* dxp: the fold keeps it zero; dyp: its zero places */
        for (int64_t i = 0; row_map && i < g.hp; i++)
            row_map[i] = cr_pad_index(i - p->pad_top, s->h_in, p->pad_mode);
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < s->batch; n++)
            for (int64_t gi = 0; gi < G; gi++) {
                if (!dxp || !row_map) continue;
                dxd_flat_dy(s, &g, dy + (n * p->out_channels + gi * s->cout_g) * plane, dyp);
                fn(&a, w + gi * s->cout_g * taps, dyp, dxp);
                dxd_fold(s, &g, row_map, col_map, dxp,
                         dx + (n * p->in_channels + gi * s->cin_g) * HW);
            }
        free(row_map);
        cr_aligned_free(dxp);
    }
    free(tap_off);
    return oom ? cr_fail(CR_ENOMEM, "conv backward: %zu bytes of dX's padded copies per thread",
                         bytes)
               : CR_OK;
}
// @end dx_direct_drive

/* ---- the kernels ------------------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define CR_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define CR_AVX2 __attribute__((target("avx2,fma")))

// @snippet dx_direct_block512
/* Kernel place rq of channels [c0, c0 + TB) (taps c*kk + rq) of dxp += sum over co of
 * w[co][tap] * dyp[co], 48 flat columns at a time in TB x 3 zmm accumulators: each dY
 * vector is loaded once and reused for every tap of the block, each weight broadcast
 * into its FMAs; then tap by tap its run of dxp (one per channel plane) is added to. */
CR_AVX512 static inline __attribute__((always_inline)) void
dx_block512(const int TB, const cr_dx_direct_args *a, const float *w, const float *dyp,
            float *dxp, int64_t c0, int64_t rq)
{
    const int64_t taps = a->cin_g * a->kk, t0 = c0 * a->kk + rq;
    for (int64_t f = 0; f < a->flat; f += DX_COLS) {
        __m512 acc[4][3];
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) acc[t][0] = acc[t][1] = acc[t][2] = _mm512_setzero_ps();
        for (int64_t co = 0; co < a->cout_g; co++) {
            const float *d = dyp + co * a->flat + f, *wc = w + co * taps + t0;
            const __m512 d0 = _mm512_loadu_ps(d), d1 = _mm512_loadu_ps(d + 16),
                         d2 = _mm512_loadu_ps(d + 32);
#pragma GCC unroll 4
            for (int t = 0; t < TB; t++) {
                const __m512 wv = _mm512_set1_ps(wc[t * a->kk]);
                acc[t][0] = _mm512_fmadd_ps(wv, d0, acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(wv, d1, acc[t][1]);
                acc[t][2] = _mm512_fmadd_ps(wv, d2, acc[t][2]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) {
            float *x = dxp + a->tap_off[t0 + t * a->kk] + f;
            _mm512_storeu_ps(x, _mm512_add_ps(_mm512_loadu_ps(x), acc[t][0]));
            _mm512_storeu_ps(x + 16, _mm512_add_ps(_mm512_loadu_ps(x + 16), acc[t][1]));
            _mm512_storeu_ps(x + 32, _mm512_add_ps(_mm512_loadu_ps(x + 32), acc[t][2]));
        }
    }
}
// @end dx_direct_block512

/* cr_dx_direct_fn with AVX-512: every kernel place, blocks of 4 input channels. */
CR_AVX512 void cr_dx_direct_avx512(const cr_dx_direct_args *a, const float *w_g,
                                   const float *dyp, float *dxp)
{
    for (int64_t rq = 0; rq < a->kk; rq++)   /* a block of taps sweeps the whole plane */
        for (int64_t c0 = 0; c0 < a->cin_g; c0 += 4)
            switch (a->cin_g - c0 < 4 ? a->cin_g - c0 : 4) {   /* constant TB: registers */
            case 4: dx_block512(4, a, w_g, dyp, dxp, c0, rq); break;
            case 3: dx_block512(3, a, w_g, dyp, dxp, c0, rq); break;
            case 2: dx_block512(2, a, w_g, dyp, dxp, c0, rq); break;
            default: dx_block512(1, a, w_g, dyp, dxp, c0, rq); break;
            }
}

// @snippet dx_direct_block256
/* dx_block512 with ymm: TB (1..4) taps x 2 ymm (16 flat columns) in at most 8 of the 16
 * registers. */
CR_AVX2 static inline __attribute__((always_inline)) void
dx_block256(const int TB, const cr_dx_direct_args *a, const float *w, const float *dyp,
            float *dxp, int64_t c0, int64_t rq)
{
    const int64_t taps = a->cin_g * a->kk, t0 = c0 * a->kk + rq;
    for (int64_t f = 0; f < a->flat; f += 16) {
        __m256 acc[4][2];
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        for (int64_t co = 0; co < a->cout_g; co++) {
            const float *d = dyp + co * a->flat + f, *wc = w + co * taps + t0;
            const __m256 d0 = _mm256_loadu_ps(d), d1 = _mm256_loadu_ps(d + 8);
#pragma GCC unroll 4
            for (int t = 0; t < TB; t++) {
                const __m256 wv = _mm256_broadcast_ss(wc + t * a->kk);
                acc[t][0] = _mm256_fmadd_ps(wv, d0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(wv, d1, acc[t][1]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) {
            float *x = dxp + a->tap_off[t0 + t * a->kk] + f;
            _mm256_storeu_ps(x, _mm256_add_ps(_mm256_loadu_ps(x), acc[t][0]));
            _mm256_storeu_ps(x + 8, _mm256_add_ps(_mm256_loadu_ps(x + 8), acc[t][1]));
        }
    }
}
// @end dx_direct_block256

/* cr_dx_direct_fn with AVX2: every kernel place, blocks of 4 input channels. */
CR_AVX2 void cr_dx_direct_avx2(const cr_dx_direct_args *a, const float *w_g, const float *dyp,
                               float *dxp)
{
    for (int64_t rq = 0; rq < a->kk; rq++)   /* a block of taps sweeps the whole plane */
        for (int64_t c0 = 0; c0 < a->cin_g; c0 += 4)
            switch (a->cin_g - c0 < 4 ? a->cin_g - c0 : 4) {   /* constant TB: registers */
            case 4: dx_block256(4, a, w_g, dyp, dxp, c0, rq); break;
            case 3: dx_block256(3, a, w_g, dyp, dxp, c0, rq); break;
            case 2: dx_block256(2, a, w_g, dyp, dxp, c0, rq); break;
            default: dx_block256(1, a, w_g, dyp, dxp, c0, rq); break;
            }
}

#else   /* not x86-64 with GCC: never called (cr_cpu_has_avx2 says no) */

void cr_dx_direct_avx512(const cr_dx_direct_args *a, const float *w_g, const float *dyp,
                         float *dxp)
{
    (void)a, (void)w_g, (void)dyp, (void)dxp;
}
void cr_dx_direct_avx2(const cr_dx_direct_args *a, const float *w_g, const float *dyp,
                       float *dxp)
{
    (void)a, (void)w_g, (void)dyp, (void)dxp;
}

#endif
