/* conv_gemm.c — chapter 3: convolution on top of the fast GEMM.
 *
 * Three paths: chapter 2's im2col with the fast GEMM; im2col fused into the
 * packing of the GEMM's B operand (no patch matrix at all); and a direct kernel
 * for the small groups of ResNeXt, where a GEMM has too little work per call. */
#include "conv_gemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "direct.h"   /* cr_pad_index: chapter 1's padding rule */
#include "gemm.h"
#include "gemm_internal.h"
#include "im2col.h"   /* cr_im2col: chapter 2's gather */
#include "tensor.h"

/* True for a 1x1, stride-1, unpadded kernel: the input itself is the patch matrix. */
static int is_pointwise(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0;
}

/* y_g (Cout_g x Ho*Wo) += b_g broadcast along each row. */
static void add_bias(const cr_conv_shape *s, const float *b_g, float *y_g)
{
    const int64_t plane = s->h_out * s->w_out;
    for (int64_t m = 0; m < s->cout_g; m++)
        for (int64_t j = 0; j < plane; j++) y_g[m * plane + j] += b_g[m];
}

int cr_conv_outer_threads(const cr_conv_shape *s)
{
    const int T = cr_gemm_threads_available();
    const int64_t pairs = s->batch * s->p.groups;
    return (T > 1 && (pairs % T == 0 || pairs >= 4 * (int64_t)T)) ? T : 1;
}

/* ---- im2col + GEMM ------------------------------------------------------------------- */

size_t cr_conv2d_gemm_workspace_bytes(const cr_conv_shape *s)
{
    return cr_im2col_workspace_bytes(s) +
           cr_gemm_engine_workspace(cr_gemm_kernel_for(cr_gemm_active_kernel(), s->cout_g),
                                    s->cout_g, cr_im2col_cols(s),
                                    cr_im2col_rows(s), 1);
}

// @snippet conv_gemm
/* One image, one group: Y_g (Cout_g x Ho*Wo) = W_g (Cout_g x Cin_g*kh*kw) * cols + b_g. */
static cr_status conv_group_gemm(const cr_conv_shape *s, const float *x_g, const float *w_g,
                                 const float *b_g, float *y_g, float *col)
{
    // @solution conv_gemm: im2col (none for a pointwise kernel), one cr_sgemm with beta = 0, then the bias
    const int64_t M = s->cout_g, N = cr_im2col_cols(s), K = cr_im2col_rows(s);
    const float *B = x_g;
    if (!is_pointwise(s)) {
        cr_im2col(s, x_g, col);
        B = col;
    }
    cr_status st = cr_sgemm(CR_NO_TRANS, CR_NO_TRANS, M, N, K, 1.0f, w_g, K, B, N, 0.0f, y_g, N);
    if (st == CR_OK && b_g) add_bias(s, b_g, y_g);
    return st;
    // @stub
    // (void)s; (void)x_g; (void)w_g; (void)b_g; (void)y_g; (void)col; (void)add_bias;
    // (void)is_pointwise;
    // return cr_todo("conv_gemm");
    // @end-solution
}
// @end conv_gemm

/* One (image, group) pair of cr_conv2d_gemm; col: its patch matrix (NULL: out of memory). */
static cr_status gemm_pair(const cr_conv_shape *s, const cr_tensor *x, const cr_tensor *w,
                           const cr_tensor *b, cr_tensor *y, int64_t n, int64_t g, float *col)
{
    const cr_conv_params *p = &s->p;
    const int64_t HW = s->h_in * s->w_in, plane = s->h_out * s->w_out, KK = cr_im2col_rows(s);
    if (!col && cr_im2col_workspace_bytes(s))
        return cr_fail(CR_ENOMEM, "im2col: %zu bytes", cr_im2col_workspace_bytes(s));
    return conv_group_gemm(s, x->data + (n * p->in_channels + g * s->cin_g) * HW,
                           w->data + g * s->cout_g * KK, b ? b->data + g * s->cout_g : NULL,
                           y->data + (n * p->out_channels + g * s->cout_g) * plane, col);
}

cr_status cr_conv2d_gemm(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    const size_t ws = cr_im2col_workspace_bytes(&s);
    const int T = cr_conv_outer_threads(&s);
    cr_status failed = CR_OK;
    if (T == 1) {            /* pairs one after the other, each GEMM on every thread */
        float *col = ws ? cr_aligned_alloc(ws) : NULL;
        for (int64_t n = 0; n < s.batch && !failed; n++)
            for (int64_t g = 0; g < p->groups && !failed; g++)
                failed = gemm_pair(&s, x, w, b, y, n, g, col);
        cr_aligned_free(col);
        return failed;
    }
#pragma omp parallel num_threads(T)
    {                        /* pairs shared by the threads, each GEMM on one thread */
        float *col = ws ? cr_aligned_alloc(ws) : NULL;   /* one patch matrix per thread */
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < s.batch; n++)
            for (int64_t g = 0; g < p->groups; g++) {
                cr_status e = gemm_pair(&s, x, w, b, y, n, g, col);
                if (e != CR_OK) {
#pragma omp critical(cr_conv_gemm_status)
                    failed = e;
                }
            }
        cr_aligned_free(col);
    }
    return failed;
}

/* ---- im2col fused into packing ----------------------------------------------------------- */

/* What the B packer of the fused path reads: one image's group of input channels. */
typedef struct {
    const cr_conv_shape *s;
    const float *x_g;   /* Cin_g x H x W */
} conv_b_src;

// @snippet pack_conv_b
/* cr_pack_fn for the patch matrix of one image and group, never built: packs output
 * positions [j0, j0+cols) ("rows" of B's transpose) and patch rows [k0, k0+kc) into
 * panel-wide, k-major, zero-padded panels, reading the image directly. */
static void pack_conv_b(const void *ctx, int64_t j0, int64_t cols, int64_t k0, int64_t kc,
                        int panel, float scale, float *dst)
{
    const conv_b_src *src = ctx;
    const cr_conv_shape *s = src->s;
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, Wo = s->w_out, R = p->kernel_h, S = p->kernel_w;
    (void)scale;  /* B is never scaled: alpha goes into A */
    for (int64_t q = 0; q < cols; q += panel) {
        const int64_t h = cols - q < panel ? cols - q : panel;
        float *d = dst + q * kc;
        for (int64_t k = 0; k < kc; k++) {
            const int64_t kk = k0 + k, c = kk / (R * S), r = kk / S % R, t = kk % S;
            const float *xc = src->x_g + c * H * W;
            float *dk = d + k * panel;
            /* the panel's output positions, one output row (segment) at a time */
            for (int64_t i = 0, j = j0 + q; i < h;) {
                const int64_t oh = j / Wo, ow = j % Wo;
                const int64_t len = h - i < Wo - ow ? h - i : Wo - ow;
                const int64_t ih = cr_pad_index(oh * p->stride_h - p->pad_top + r * p->dilation_h,
                                                H, p->pad_mode);
                const int64_t iw0 = ow * p->stride_w - p->pad_left + t * p->dilation_w;
                if (ih < 0) {                                   /* a zero-padded row */
                    memset(dk + i, 0, (size_t)len * sizeof(float));
                } else if (p->stride_w == 1 && iw0 >= 0 && iw0 + len <= W) {
                    memcpy(dk + i, xc + ih * W + iw0, (size_t)len * sizeof(float));
                } else {                                        /* borders, strides */
                    for (int64_t e = 0; e < len; e++) {
                        const int64_t iw = cr_pad_index(iw0 + e * p->stride_w, W, p->pad_mode);
                        dk[i + e] = iw < 0 ? 0.0f : xc[ih * W + iw];
                    }
                }
                i += len;
                j += len;
            }
            for (int64_t i = h; i < panel; i++) dk[i] = 0.0f;  /* the edge panel */
        }
    }
}
// @end pack_conv_b

size_t cr_conv2d_fused_workspace_bytes(const cr_conv_shape *s)
{
    return cr_gemm_engine_workspace(cr_gemm_kernel_for(cr_gemm_active_kernel(), s->cout_g),
                                    s->cout_g, cr_im2col_cols(s),
                                    cr_im2col_rows(s), 1);
}

// @snippet conv_fused
/* One (image, group) pair: Y_g = W_g * (patch matrix, packed straight from x) + b_g. */
static cr_status fused_pair(const cr_conv_shape *s, const cr_tensor *x, const cr_tensor *w,
                            const cr_tensor *b, cr_tensor *y, int64_t n, int64_t g)
{
    const cr_conv_params *p = &s->p;
    const int64_t HW = s->h_in * s->w_in, plane = s->h_out * s->w_out, KK = cr_im2col_rows(s);
    float *y_g = y->data + (n * p->out_channels + g * s->cout_g) * plane;
    const cr_strided wa = {w->data + g * s->cout_g * KK, KK, 1};     /* A: W_g as it is */
    const conv_b_src xb = {s, x->data + (n * p->in_channels + g * s->cin_g) * HW};
    /* a 1x1 stride-1 convolution without padding: the patch matrix is x_g itself */
    const int plain = KK == s->cin_g && p->stride_h == 1 && p->stride_w == 1 &&
                      p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 &&
                      p->pad_right == 0;
    const cr_gemm_operand A = {cr_pack_strided, &wa, NULL, 0},
                          B = {pack_conv_b, &xb, plain ? xb.x_g : NULL, HW};
    cr_status e = cr_gemm_engine(cr_gemm_kernel_for(cr_gemm_active_kernel(), s->cout_g),
                                 s->cout_g, plane, KK, &A, &B, 1.0f, 0.0f, y_g, plane, 0);
    if (e == CR_OK && b) add_bias(s, b->data + g * s->cout_g, y_g);
    return e;
}

cr_status cr_conv2d_fused(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                          const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    const int T = cr_conv_outer_threads(&s);
    cr_status failed = CR_OK;
    if (T == 1) {            /* pairs one after the other, each GEMM on every thread */
        for (int64_t n = 0; n < s.batch && !failed; n++)
            for (int64_t g = 0; g < p->groups && !failed; g++)
                failed = fused_pair(&s, x, w, b, y, n, g);
        return failed;
    }
#pragma omp parallel for collapse(2) schedule(static) num_threads(T)
    for (int64_t n = 0; n < s.batch; n++)    /* pairs shared, each GEMM on one thread */
        for (int64_t g = 0; g < p->groups; g++) {
            cr_status e = fused_pair(&s, x, w, b, y, n, g);
            if (e != CR_OK) {
#pragma omp critical(cr_conv_fused_status)
                failed = e;
            }
        }
    return failed;
}
// @end conv_fused

/* ---- grouped: a direct kernel ------------------------------------------------------------- */

/* The two direct kernels: AVX2 (conv_avx2.c) and AVX-512 (conv_avx512.c). */
static const cr_grouped_kernel grouped_avx2 = {"avx2", CR_GROUPED_OWB, 4, cr_grouped_conv_avx2};
static const cr_grouped_kernel grouped_avx512 = {"avx512", CR_GROUPED_OWB_AVX512,
                                                 CR_GROUPED_COB_AVX512, cr_grouped_conv_avx512};

/* The direct kernel to run: AVX-512 when cr_sgemm's kernel is (so CR_GEMM_KERNEL and
 * cr_gemm_set_kernel choose both), else AVX2; called only where the CPU has AVX2. */
static const cr_grouped_kernel *grouped_kernel(void)
{
    return cr_gemm_active_kernel() == &cr_kernel_avx512 ? &grouped_avx512 : &grouped_avx2;
}

/* Where the direct kernel reads its input, in one of two layouts of one image's group
 * of input channels, padding resolved in both (every mode), rows split by stride phase
 * in both (padded row i at row place (i % sh) * hq + i / sh, sh = stride_h):
 *  - phases (shifted = 0): one padded copy per channel, each padded row also split into
 *    its sw = stride_w column phases of lp places (padded column j at place j / sw of
 *    phase j % sw). Output (oh, ow) reads tap (c, r, q) at flat place oh * lp + ow plus
 *    the tap's offset: the lp - Wo places between two output rows are computed too.
 *  - shifted (shifted = 1): one copy per channel c and kernel column q, holding of every
 *    padded row only the Wo columns q reads (padded column ow * sw + q * dilation_w at
 *    place ow), so lp = Wo: output (oh, ow) reads at oh * Wo + ow plus the tap's offset,
 *    and every flat place is an output, for kw times the copying.
 * The kernel's blocks run over the flat places [0, flat) across row ends; the last
 * block reads at most a block past them, into the zero tail. */
typedef struct {
    int shifted;        /* the layout: 1 shifted copies, 0 phases */
    int64_t hp;         /* padded rows */
    int64_t hq;         /* rows of one row phase: hp / sh rounded up */
    int64_t lp;         /* places of a row of one copy (phases: of one column phase) */
    int64_t plane;      /* floats of one copy: sh*hq*lp per (c, q) shifted, sh*sw*hq*lp per c */
    int64_t flat;       /* flat output places: Ho * lp - (lp - Wo), the last row's tail off */
    int64_t in_floats;  /* floats of the copies, zero tail included */
    int64_t out_floats; /* floats of one block's flat output: cob x flat (phases), 0 (shifted) */
} grouped_geom_t;

/* Floats a layout copies for one image's group of shape s (shifted or phases). */
static int64_t grouped_copy_floats(const cr_conv_shape *s, int shifted)
{
    const cr_conv_params *p = &s->p;
    const int64_t sh = p->stride_h, sw = p->stride_w;
    const int64_t hq = (s->h_in + p->pad_top + p->pad_bottom + sh - 1) / sh;
    const int64_t lp = (s->w_in + p->pad_left + p->pad_right + sw - 1) / sw;
    return shifted ? s->cin_g * p->kernel_w * sh * hq * s->w_out : s->cin_g * sh * sw * hq * lp;
}

// @snippet grouped_layout
/* Which layout pays for shape s: the shifted copies save the flat places the phases
 * layout computes and drops, (lp - Wo) between output rows, each costing 2 Cin_g kh kw
 * flops per output channel (the kernel computes whole vectors of owb / 3 places in
 * both), and copy kw times as much. A copied float costs about as much as COPY_FLOPS
 * flops of the kernel while the shifted copies fit in the 1 MiB L2 (COPY_NEAR_BYTES).
 * Beyond it the kernel streams the copies from the L3 once per block of cob output
 * channels, so a copied float costs COPY_FLOPS_STREAM flops per block on one thread and
 * COPY_FLOPS_STREAM_SHARED with more threads streaming at once (both layouts forced on 24
 * shapes, Zen 5 VM, 2026-12-02: see chapter 3). Beyond COPY_DRAM_BYTES, half a 32 MiB
 * L3, at least COPY_FLOPS_DRAM: 256->64 at 56 x 56 with a 7x7 kernel (24.9 MB of shifted
 * copies, the backward's dX of lab 4's e_1x1) took 1.4 times as long shifted on one
 * thread and 2.8 times on two (medians of 8 processes, Zen 5, 2026-12-02).
 * Grouped layers keep the phases: with 32 channels a group the model under-prices the
 * copies (1024 channels in 32 groups at 12 x 15: 56 against 71 GFLOP/s shifted). */
#define COPY_FLOPS 16
#define COPY_NEAR_BYTES (1 << 20)
#define COPY_FLOPS_STREAM 16
#define COPY_FLOPS_STREAM_SHARED 32
#define COPY_FLOPS_DRAM 512
#define COPY_DRAM_BYTES (16 << 20)
static _Atomic int layout_forced = -1;   /* cr_grouped_force_layout: -1 by the cost */
static int grouped_shifted(const cr_conv_shape *s, int64_t owb, int64_t cob)
{
    const int forced = layout_forced;
    if (forced >= 0) return forced;
    if (s->p.groups > 1) return 0;
    const cr_conv_params *p = &s->p;
    const int64_t sw = p->stride_w, taps = s->cin_g * p->kernel_h * p->kernel_w;
    const int64_t lp = (s->w_in + p->pad_left + p->pad_right + sw - 1) / sw;
    const int64_t Ho = s->h_out, Wo = s->w_out;
    const int64_t vec = owb / 3;   /* the places the kernel computes: whole vectors */
    const int64_t phase_places = (Ho * lp - (lp - Wo) + vec - 1) / vec * vec;
    const int64_t shifted_places = (Ho * Wo + vec - 1) / vec * vec;
    const int64_t shifted_floats = grouped_copy_floats(s, 1);
    const int64_t shifted_bytes = shifted_floats * (int64_t)sizeof(float);
    const int64_t blocks = (s->cout_g + cob - 1) / cob;
    const double stream = (double)blocks * (cr_gemm_threads_available() > 1
                                                ? COPY_FLOPS_STREAM_SHARED
                                                : COPY_FLOPS_STREAM);
    const double per_float = shifted_bytes <= COPY_NEAR_BYTES   ? COPY_FLOPS
                             : shifted_bytes <= COPY_DRAM_BYTES ? stream
                             : stream > COPY_FLOPS_DRAM         ? stream
                                                                : COPY_FLOPS_DRAM;
    const double saved = 2.0 * (double)taps * (double)s->cout_g *
                         (double)(phase_places - shifted_places);
    const double extra = per_float * (double)(shifted_floats - grouped_copy_floats(s, 0));
    return saved > extra;
}
// @end grouped_layout

void cr_grouped_force_layout(int layout)
{
    layout_forced = layout == 0 || layout == 1 ? layout : -1;
}

const char *cr_grouped_layout_name(const cr_conv_shape *s)
{
    return grouped_shifted(s, grouped_kernel()->owb, grouped_kernel()->cob) ? "shifted" : "phases";
}

/* The layout's geometry for shape s and a kernel of column block owb, channel block cob. */
static grouped_geom_t grouped_geom(const cr_conv_shape *s, int64_t owb, int64_t cob)
{
    const cr_conv_params *p = &s->p;
    const int64_t sh = p->stride_h, sw = p->stride_w;
    grouped_geom_t g;
    g.shifted = grouped_shifted(s, owb, cob);
    g.hp = s->h_in + p->pad_top + p->pad_bottom;
    g.hq = (g.hp + sh - 1) / sh;
    /* phases: every column a valid output reads, (ow*sw + q*dil) / sw, lies below lp */
    g.lp = g.shifted ? s->w_out : (s->w_in + p->pad_left + p->pad_right + sw - 1) / sw;
    g.plane = g.shifted ? sh * g.hq * g.lp : sh * sw * g.hq * g.lp;
    g.flat = s->h_out * g.lp - (g.lp - s->w_out);
    /* zeros after the last copy: the last block reads up to a block past the flat places */
    g.in_floats = grouped_copy_floats(s, g.shifted) + g.lp + owb;
    /* the phases' flat output is staged one block of channels at a time, in a buffer of
     * the thread's own that stays in L2 while it is copied out (see grouped_blocks) */
    g.out_floats = g.shifted ? 0 : (cob < s->cout_g ? cob : s->cout_g) * g.flat;
    return g;
}

size_t cr_conv2d_grouped_workspace_bytes(const cr_conv_shape *s)
{
    const grouped_geom_t g = grouped_geom(s, grouped_kernel()->owb, grouped_kernel()->cob);
    return (size_t)(g.in_floats + g.out_floats) * sizeof(float);
}

/* [*e0, *e1): the places e < n of a row whose padded column e*sw + j0 is a real column,
 * one of [pl, pl + W); the others are padding. */
static void row_interior(int64_t pl, int64_t W, int64_t j0, int64_t sw, int64_t n,
                         int64_t *e0, int64_t *e1)
{
    *e0 = pl > j0 ? (pl - j0 + sw - 1) / sw : 0;
    *e1 = pl + W > j0 ? (pl + W - j0 + sw - 1) / sw : 0;
    if (*e1 > n) *e1 = n;
    if (*e0 > *e1) *e0 = *e1;
}

// @snippet grouped_pad
/* dst[e] (n places) = padded column e*sw + j0 of input row `row` (W floats, NULL: a
 * zero row); col_map[j] is the input column padded column j copies, or -1 for a zero:
 * every padding mode is resolved here, once, so the kernel has no border tests. */
static void pad_row(const float *row, int64_t W, int64_t pl, int64_t sw, int64_t j0,
                    const int64_t *col_map, float *dst, int64_t n)
{
    if (!row) {
        memset(dst, 0, (size_t)n * sizeof(float));
        return;
    }
    int64_t e0, e1;   /* the real columns in the middle, padding around */
    row_interior(pl, W, j0, sw, n, &e0, &e1);
    if (sw == 1) memcpy(dst + e0, row + e0 + j0 - pl, (size_t)(e1 - e0) * sizeof(float));
    else if (sw == 2)   /* a constant stride: the compiler vectorizes it */
        for (int64_t e = e0; e < e1; e++) dst[e] = row[2 * e + j0 - pl];
    else for (int64_t e = e0; e < e1; e++) dst[e] = row[e * sw + j0 - pl];
    for (int64_t e = 0; e < n; e++) {   /* the padding places, by the layer's rule */
        if (e >= e0 && e < e1) continue;
        const int64_t m = col_map[e * sw + j0];
        dst[e] = m < 0 ? 0.0f : row[m];
    }
}

/* Channels [c0, c1) of one image's group (x_g: Cin_g x H x W) into xp in the layout of gm
 * (see grouped_geom_t): shifted, copy (c, q) row i holds padded columns ow*sw + q*dil;
 * phases, channel c's row i phase ph holds padded columns e*sw + ph. The zeros after the
 * last channel are written with it. */
static void grouped_pad(const cr_conv_shape *s, const grouped_geom_t *gm,
                        const int64_t *col_map, const float *x_g, float *xp, int64_t c0,
                        int64_t c1)
{
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, lp = gm->lp, pl = p->pad_left;
    const int64_t sh = p->stride_h, sw = p->stride_w, S = p->kernel_w;
    const int64_t copies = gm->shifted ? S : sw;   /* per channel: kernel columns or phases */
    for (int64_t c = c0; c < c1; c++)
        for (int64_t i = 0; i < gm->hq * sh; i++) {   /* rows past hp: zeros */
            const int64_t ih = i < gm->hp ? cr_pad_index(i - p->pad_top, H, p->pad_mode) : -1;
            const float *row = ih < 0 ? NULL : x_g + (c * H + ih) * W;
            for (int64_t k = 0; k < copies; k++) {
                const int64_t j0 = gm->shifted ? k * p->dilation_w : k;   /* column of place 0 */
                float *dst = xp + (gm->shifted ? (c * S + k) * gm->plane +
                                                     ((i % sh) * gm->hq + i / sh) * lp
                                               : c * gm->plane + ((i % sh) * sw + k) * gm->hq * lp +
                                                     i / sh * lp);
                pad_row(row, W, pl, sw, j0, col_map, dst, lp);
            }
        }
    const int64_t body = grouped_copy_floats(s, gm->shifted);
    if (c1 == s->cin_g) memset(xp + body, 0, (size_t)(gm->in_floats - body) * sizeof(float));
}
// @end grouped_pad

/* Fills col_map (cols entries) for grouped_pad: padded column j's input column, -1 for a
 * zero (and for every column past the padded row). */
static void grouped_col_map(const cr_conv_shape *s, int64_t cols, int64_t *col_map)
{
    const cr_conv_params *p = &s->p;
    const int64_t wp = s->w_in + p->pad_left + p->pad_right;
    for (int64_t j = 0; j < cols; j++)
        col_map[j] = j < wp ? cr_pad_index(j - p->pad_left, s->w_in, p->pad_mode) : -1;
}

/* Where tap t = (c*kh + r)*kw + q of output (0, 0) reads in the layout of gm. */
static void grouped_tap_offsets(const cr_conv_shape *s, const grouped_geom_t *gm,
                                int64_t *tap_off)
{
    const cr_conv_params *p = &s->p;
    const int64_t sh = p->stride_h, sw = p->stride_w;
    for (int64_t c = 0, t = 0; c < s->cin_g; c++)
        for (int64_t r = 0; r < p->kernel_h; r++)
            for (int64_t q = 0; q < p->kernel_w; q++, t++) {
                /* padded row r*dil (its row phase and place), padded column q*dil */
                const int64_t ri = r * p->dilation_h, qj = q * p->dilation_w;
                tap_off[t] = gm->shifted ? (c * p->kernel_w + q) * gm->plane +
                                               ((ri % sh) * gm->hq + ri / sh) * gm->lp
                                         : c * gm->plane + ((ri % sh) * sw + qj % sw) * gm->hq * gm->lp +
                                               ri / sh * gm->lp + qj / sw;
            }
}

// @snippet grouped_tap_pass
/* The kernel sweeps every flat place once per block of output channels; between two
 * output rows it revisits the input rows of the window, Cin_g x kh rows of the copies.
 * Where that window outgrows WINDOW_BYTES (lab 4's 7x7 layers of 64-256 channels), the
 * AVX-512 kernel ran 4-13 % faster at batch 1 (1-4 % at batch 8) when it sweeps the
 * places once per slice of the input channels, their sums kept in y between the passes
 * (Zen 5, 2026-12-02, chapter 3). The passes split the channels evenly; every 3x3 and
 * 5x5 layer of the labs stays in one pass (no gain measured there). The AVX2 kernel,
 * not measured on an AVX2-only machine yet, keeps one pass. */
#define WINDOW_BYTES (96 << 10)
static _Atomic int64_t tap_pass_forced = 0;   /* cr_grouped_force_tap_pass: 0 by the window */
static int64_t grouped_tap_pass(const cr_conv_shape *s, const grouped_geom_t *gm,
                                const cr_grouped_kernel *kd)
{
    const cr_conv_params *p = &s->p;
    const int64_t kk = p->kernel_h * p->kernel_w, taps = s->cin_g * kk;
    const int64_t forced = tap_pass_forced;
    if (forced > 0) return forced < taps ? forced : taps;
    if (kd != &grouped_avx512) return taps;
    /* floats of one input channel's window: kh rows of its copies (all column phases, or
     * all kw shifted copies) */
    const int64_t row = gm->shifted ? p->kernel_w * gm->lp : p->stride_w * gm->lp;
    const int64_t window = s->cin_g * p->kernel_h * row * (int64_t)sizeof(float);
    if (window <= WINDOW_BYTES) return taps;
    const int64_t passes = (window + WINDOW_BYTES - 1) / WINDOW_BYTES;
    return (s->cin_g + passes - 1) / passes * kk;   /* whole channels a pass */
}
// @end grouped_tap_pass

void cr_grouped_force_tap_pass(int64_t taps)
{
    tap_pass_forced = taps > 0 ? taps : 0;
}

int64_t cr_grouped_tap_pass(const cr_conv_shape *s)
{
    const cr_grouped_kernel *kd = grouped_kernel();
    const grouped_geom_t gm = grouped_geom(s, kd->owb, kd->cob);
    return grouped_tap_pass(s, &gm, kd);
}

/* Channels [c0, c1) of y_g (Cout_g x Ho x Wo) = the flat result yf of those channels
 * ((c1 - c0) x flat, row stride lp; bias already added) without the lp - Wo places
 * between rows. */
static void grouped_unflatten(const cr_conv_shape *s, const grouped_geom_t *gm,
                              const float *yf, float *y_g, int64_t c0, int64_t c1)
{
    const int64_t Ho = s->h_out, Wo = s->w_out;
    for (int64_t co = c0; co < c1; co++)
        for (int64_t oh = 0; oh < Ho; oh++)
            memcpy(y_g + (co * Ho + oh) * Wo, yf + (co - c0) * gm->flat + oh * gm->lp,
                   (size_t)Wo * sizeof(float));
}

// @snippet grouped_blocks
/* Output-channel blocks [blk0, blk1) of one (image, group): with shifted copies straight
 * into y_g, else one block at a time into the thread's staging buffer yf (cob x flat,
 * in L2 while it is copied out) and then y_g's rows. */
static void grouped_blocks(const cr_conv_shape *s, const grouped_geom_t *gm,
                           const cr_grouped_kernel *kd, const int64_t *tap_off, const float *xp,
                           const float *w_g, const float *b_g, float *yf, float *y_g,
                           int64_t blk0, int64_t blk1)
{
    const int64_t tc = grouped_tap_pass(s, gm, kd);
    if (gm->shifted) {
        kd->fn(s, tap_off, xp, w_g, b_g, y_g, s->h_out * s->w_out, gm->flat, blk0, blk1, tc);
        return;
    }
    const int64_t taps = cr_im2col_rows(s);
    for (int64_t c0 = blk0 * kd->cob; c0 < s->cout_g && c0 < blk1 * kd->cob; c0 += kd->cob) {
        const int64_t c1 = c0 + kd->cob < s->cout_g ? c0 + kd->cob : s->cout_g;
        cr_conv_shape sb = *s;   /* the kernel sees this block's channels as its only block */
        sb.cout_g = c1 - c0;
        kd->fn(&sb, tap_off, xp, w_g + c0 * taps, b_g ? b_g + c0 : NULL, yf, gm->flat, gm->flat,
               0, 1, tc);
        grouped_unflatten(s, gm, yf, y_g, c0, c1);
    }
}
// @end grouped_blocks

// @snippet conv_grouped
cr_status cr_conv2d_grouped(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                            const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    if (!cr_cpu_has_avx2()) return cr_conv2d_fused(p, x, w, b, y);
    const cr_grouped_kernel *kd = grouped_kernel();
    const grouped_geom_t gm = grouped_geom(&s, kd->owb, kd->cob);
    const size_t ws = cr_conv2d_grouped_workspace_bytes(&s);
    const int64_t H = s.h_in, W = s.w_in, plane = s.h_out * s.w_out, KK = cr_im2col_rows(&s);
    const int64_t cols = p->stride_w * gm.lp + W + p->pad_left + p->pad_right;
    int64_t *col_map = malloc((size_t)(cols + KK) * sizeof *col_map);
    if (!col_map) return cr_fail(CR_ENOMEM, "grouped convolution: column map");
    grouped_col_map(&s, cols, col_map);
    int64_t *tap_off = col_map + cols;   /* where each tap reads in xp */
    grouped_tap_offsets(&s, &gm, tap_off);
    const int64_t pairs = s.batch * p->groups, blocks = (s.cout_g + kd->cob - 1) / kd->cob;
    /* many (image, group) pairs: one pair per thread at a time; few (a dense layer, batch
     * 1): all threads on one pair, sharing its output-channel blocks */
    const int shared = pairs < 2 * (int64_t)cr_gemm_threads_available();
    const size_t in_bytes = (size_t)gm.in_floats * sizeof(float);
    float *xs = shared ? cr_aligned_alloc(in_bytes) : NULL;
    if (shared && !xs) {
        free(col_map);
        return cr_fail(CR_ENOMEM, "grouped convolution: %zu bytes", in_bytes);
    }
    int oom = 0;
#pragma omp parallel reduction(|| : oom)
    {
        /* the copies (shared: one for all threads) and the thread's own staging block */
        const size_t own_bytes = shared ? ws - in_bytes : ws;
        float *own = own_bytes ? cr_aligned_alloc(own_bytes) : NULL;
        float *xp = shared ? xs : own;
        float *yf = shared ? own : own ? own + gm.in_floats : NULL;
        const int ready = !own_bytes || own;   /* (each thread still meets every barrier) */
        if (!ready) oom = 1;
        for (int64_t i = 0; i < (shared ? pairs : 0); i++) {   /* pairs in turn, together */
            const int64_t n = i / p->groups, g = i % p->groups;
            float *y_g = y->data + (n * p->out_channels + g * s.cout_g) * plane;
            const float *x_g = x->data + (n * p->in_channels + g * s.cin_g) * H * W;
            const float *b_g = b ? b->data + g * s.cout_g : NULL;
#pragma omp for schedule(static)
            for (int64_t c = 0; c < s.cin_g; c++) grouped_pad(&s, &gm, col_map, x_g, xp, c, c + 1);
            /* (implicit barrier: the copies are complete) */
#pragma omp for schedule(static)
            for (int64_t blk = 0; blk < blocks; blk++)   /* a block and its own rows of y */
                if (ready)
                    grouped_blocks(&s, &gm, kd, tap_off, xp, w->data + g * s.cout_g * KK, b_g,
                                   yf, y_g, blk, blk + 1);
            /* (implicit barrier: xp is free for the next pair) */
        }
        if (!shared) {   /* (a worksharing loop with no work still waits at its end) */
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < s.batch; n++)
            for (int64_t g = 0; g < p->groups; g++) {
                if (!ready) continue;
                float *y_g = y->data + (n * p->out_channels + g * s.cout_g) * plane;
                const float *b_g = b ? b->data + g * s.cout_g : NULL;
                grouped_pad(&s, &gm, col_map, x->data + (n * p->in_channels + g * s.cin_g) * H * W,
                            xp, 0, s.cin_g);
                grouped_blocks(&s, &gm, kd, tap_off, xp, w->data + g * s.cout_g * KK, b_g,
                               yf, y_g, 0, blocks);
            }
        }
        cr_aligned_free(own);
    }
    cr_aligned_free(xs);
    free(col_map);
    if (oom) return cr_fail(CR_ENOMEM, "grouped convolution: %zu bytes per thread", ws);
    return CR_OK;
}
// @end conv_grouped

/* ---- the default --------------------------------------------------------------------------- */

// @snippet conv_fast
const char *cr_conv2d_fast_path(const cr_conv_shape *s)
{
    /* few channels per group: a GEMM per group has M = Cout_g and K = Cin_g*kh*kw too
     * small to fill the micro-kernel; the direct kernel reuses each input load for 4
     * output channels and needs no packing at all */
    if (!cr_cpu_has_avx2()) return "fused";
    if (s->cout_g <= 8 && cr_im2col_rows(s) <= 72) return "grouped";
    /* measured (lab 3): the direct kernel also wins on dense layers with a kernel of 3x3
     * or more: the AVX2 one up to 64 output channels (a_3x3_64, d_7x7s2), the AVX-512 one
     * (8 channels x 48 columns) at every width the lab runs (up to c_3x3_256); wider
     * layers on AVX2 and 1x1 kernels go to the GEMM */
    const int wide_ok = grouped_kernel() == &grouped_avx512;
    if (s->p.kernel_h * s->p.kernel_w >= 9 && (s->cout_g <= 64 || wide_ok)) return "grouped";
    return "fused";
}
// @end conv_fast

size_t cr_conv2d_fast_peak_bytes(const cr_conv_shape *s)
{
    const char *path = cr_conv2d_fast_path(s);
    const size_t T = (size_t)cr_gemm_threads_available();
    const int64_t M = s->cout_g, N = s->h_out * s->w_out, K = cr_im2col_rows(s);
    const cr_gemm_kernel *kd = cr_gemm_kernel_for(cr_gemm_active_kernel(), M);
    if (strcmp(path, "grouped") == 0) {   /* as cr_conv2d_grouped allocates */
        const int shared = s->batch * s->p.groups < 2 * (int64_t)T;
        const grouped_geom_t gm = grouped_geom(s, grouped_kernel()->owb, grouped_kernel()->cob);
        const int64_t cols = s->p.stride_w * gm.lp + s->w_in + s->p.pad_left + s->p.pad_right;
        const size_t ws = cr_conv2d_grouped_workspace_bytes(s);
        const size_t in_bytes = (size_t)gm.in_floats * sizeof(float);
        return (shared ? in_bytes + T * (ws - in_bytes) : T * ws) +   /* staging per thread */
               (size_t)(cols + K) * sizeof(int64_t);
    }
    const size_t col = strcmp(path, "gemm") == 0 ? cr_im2col_workspace_bytes(s) : 0;
    if (cr_conv_outer_threads(s) == 1)   /* one pair at a time, each GEMM on every thread */
        return col + cr_gemm_engine_workspace(kd, M, N, K, (int)T);
    return T * (col + cr_gemm_engine_workspace(kd, M, N, K, 1));   /* a pair per thread */
}

cr_status cr_conv2d_fast(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    const char *path = cr_conv2d_fast_path(&s);
    if (strcmp(path, "grouped") == 0) return cr_conv2d_grouped(p, x, w, b, y);
    if (strcmp(path, "gemm") == 0) return cr_conv2d_gemm(p, x, w, b, y);
    return cr_conv2d_fused(p, x, w, b, y);
}
