/* sparse_conv.c — chapter 6: convolution with an unstructured sparse (CSR) weight.
 *
 * The CSR over output channels, a plain reference, and the fast version: every kept
 * weight is a broadcast times a shifted row of the padded (phase-split) input plane,
 * accumulated 64 output pixels at a time in vector registers. See sparse_conv.h. */
#include "sparse_conv.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_gemm.h"      /* cr_conv2d_fast: the dense path of cr_conv2d_auto */
#include "direct.h"         /* cr_pad_index: chapter 1's padding rule */
#include "gemm.h"
#include "gemm_internal.h"  /* the CPU checks and the active kernel of chapter 3 */
#include "im2col.h"         /* cr_im2col_rows: the taps per output channel */

/* Output pixels one kernel call handles per row: 4 zmm, 8 ymm or 64 scalars. */
#define CB 64

static int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* ---- the format ------------------------------------------------------------------ */

void cr_csr_free(cr_csr_weight *c)
{
    if (!c) return;
    free(c->row_ptr);
    free(c->col);
    free(c->val);
    memset(c, 0, sizeof *c);
}

// @snippet csr_build
cr_status cr_csr_from_weight(cr_csr_weight *out, const cr_tensor *w, const cr_mask *mask)
{
    if (!out) return cr_fail(CR_EINVAL, "csr: out is NULL");
    memset(out, 0, sizeof *out);
    if (!w || !w->data || w->ndim != 4)
        return cr_fail(CR_EINVAL, "csr: w must be a rank-4 Cout x Cin_g x kh x kw tensor");
    if (mask && (!mask->data || mask->ndim != 4 || memcmp(mask->shape, w->shape,
                                                          sizeof w->shape) != 0))
        return cr_fail(CR_EINVAL, "csr: the mask must have w's shape [%lld, %lld, %lld, %lld]",
                       (long long)w->shape[0], (long long)w->shape[1], (long long)w->shape[2],
                       (long long)w->shape[3]);
    const int64_t rows = w->shape[0], cols = w->shape[1] * w->shape[2] * w->shape[3];
    if (cols > INT32_MAX) return cr_fail(CR_EOVERFLOW, "csr: %lld taps per row exceed int32",
                                         (long long)cols);
    size_t nnz = 0;   /* first pass: how many weights are kept */
    for (size_t i = 0; i < w->numel; i++) nnz += (!mask || mask->data[i]) && w->data[i] != 0.0f;
    out->cout = rows;
    out->cin_g = w->shape[1];
    out->kh = w->shape[2];
    out->kw = w->shape[3];
    out->row_ptr = malloc((size_t)(rows + 1) * sizeof *out->row_ptr);
    out->col = malloc((nnz ? nnz : 1) * sizeof *out->col);
    out->val = malloc((nnz ? nnz : 1) * sizeof *out->val);
    if (!out->row_ptr || !out->col || !out->val) {
        cr_csr_free(out);
        return cr_fail(CR_ENOMEM, "csr: %zu kept weights: out of memory", nnz);
    }
    size_t j = 0;     /* second pass: each row's kept taps, in increasing order */
    for (int64_t o = 0; o < rows; o++) {
        out->row_ptr[o] = (int64_t)j;
        for (int64_t k = 0; k < cols; k++) {
            const size_t i = (size_t)(o * cols + k);
            if ((!mask || mask->data[i]) && w->data[i] != 0.0f) {
                out->col[j] = (int32_t)k;
                out->val[j++] = w->data[i];
            }
        }
    }
    out->row_ptr[rows] = (int64_t)j;
    out->nnz = nnz;
    return CR_OK;
}
// @end csr_build

size_t cr_csr_bytes(const cr_csr_weight *c)
{
    return (size_t)(c->cout + 1) * sizeof *c->row_ptr +
           c->nnz * (sizeof *c->col + sizeof *c->val);
}

double cr_csr_density(const cr_csr_weight *c)
{
    const double numel = (double)c->cout * (double)(c->cin_g * c->kh * c->kw);
    return numel > 0 ? (double)c->nnz / numel : 0.0;
}

cr_status cr_csr_to_dense(const cr_csr_weight *c, cr_tensor *w)
{
    const int64_t shape[4] = {c->cout, c->cin_g, c->kh, c->kw};
    cr_status st = cr_tensor_expect_shape("w", w, 4, shape);
    if (st) return st;
    memset(w->data, 0, w->numel * sizeof(float));
    const int64_t cols = c->cin_g * c->kh * c->kw;
    for (int64_t o = 0; o < c->cout; o++)
        for (int64_t j = c->row_ptr[o]; j < c->row_ptr[o + 1]; j++)
            w->data[o * cols + c->col[j]] = c->val[j];
    return CR_OK;
}

/* Checks x (N x Cin x H x W), the CSR (p's weight shape), b (Cout or NULL exactly when
 * p->bias is false) and y (N x Cout x Ho x Wo) against p, and fills s. */
static cr_status bind_sparse(cr_conv_shape *s, const cr_conv_params *p, const cr_tensor *x,
                             const cr_csr_weight *w, const cr_tensor *b, const cr_tensor *y)
{
    if (!p || !x || !w || !y) return cr_fail(CR_EINVAL, "sparse conv: p, x, w and y are required");
    if (!x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "sparse conv: x must be an N x Cin x H x W tensor");
    cr_status st = cr_conv_shape_init(s, p, x->shape[0], x->shape[2], x->shape[3]);
    if (st) return st;
    const int64_t xs[4] = {s->batch, p->in_channels, s->h_in, s->w_in};
    const int64_t ys[4] = {s->batch, p->out_channels, s->h_out, s->w_out};
    if ((st = cr_tensor_expect_shape("x", x, 4, xs)) || (st = cr_tensor_expect_shape("y", y, 4, ys)))
        return st;
    if (!w->row_ptr || w->cout != p->out_channels || w->cin_g != s->cin_g ||
        w->kh != p->kernel_h || w->kw != p->kernel_w)
        return cr_fail(CR_EINVAL, "sparse conv: the CSR weight is %lld x %lld x %lld x %lld, "
                       "expected [%lld, %lld, %lld, %lld]", (long long)w->cout,
                       (long long)w->cin_g, (long long)w->kh, (long long)w->kw,
                       (long long)p->out_channels, (long long)s->cin_g,
                       (long long)p->kernel_h, (long long)p->kernel_w);
    if (p->bias != (b != NULL))
        return cr_fail(CR_EINVAL, "sparse conv: b must be %s (p->bias is %s)",
                       p->bias ? "given" : "NULL", p->bias ? "true" : "false");
    if (b) {
        const int64_t bs[1] = {p->out_channels};
        if ((st = cr_tensor_expect_shape("b", b, 1, bs))) return st;
    }
    return CR_OK;
}

/* ---- the reference ------------------------------------------------------------------ */

// @snippet sparse_ref
cr_status cr_sparse_conv2d_ref(const cr_conv_params *p, const cr_tensor *x,
                               const cr_csr_weight *w, const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = bind_sparse(&s, p, x, w, b, y);
    if (st) return st;
    const int64_t H = s.h_in, W = s.w_in, Ho = s.h_out, Wo = s.w_out, RS = p->kernel_h * p->kernel_w;
    for (int64_t n = 0; n < s.batch; n++)
        for (int64_t o = 0; o < p->out_channels; o++) {
            const int64_t c0 = o / s.cout_g * s.cin_g;   /* the group's first input channel */
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double acc = b ? b->data[o] : 0.0;
                    for (int64_t j = w->row_ptr[o]; j < w->row_ptr[o + 1]; j++) {
                        const int64_t k = w->col[j], c = k / RS, r = k / p->kernel_w % p->kernel_h,
                                      t = k % p->kernel_w;
                        const int64_t ih = cr_pad_index(oh * p->stride_h - p->pad_top +
                                                         r * p->dilation_h, H, p->pad_mode);
                        const int64_t iw = cr_pad_index(ow * p->stride_w - p->pad_left +
                                                         t * p->dilation_w, W, p->pad_mode);
                        if (ih >= 0 && iw >= 0)
                            acc += (double)w->val[j] *
                                   x->data[((n * p->in_channels + c0 + c) * H + ih) * W + iw];
                    }
                    y->data[((n * p->out_channels + o) * Ho + oh) * Wo + ow] = (float)acc;
                }
        }
    return CR_OK;
}
// @end sparse_ref

/* ---- the kernels ---------------------------------------------------------------------- */

/* A kernel: for rows o in [o0, o1) and one block of CB output pixels (e = 0 .. CB-1),
 *     yb[o*ldy + e] = sum over row o's entries j of val[j] * xb[off[j] + e],
 * the entries taken by channel blocks: block kb of row o is [seg[o*ss + kb], seg[o*ss +
 * kb + 1]), and all rows finish block kb before block kb + 1 starts, so the input a block
 * reads stays in the L1 cache while every row uses it (the partial sums wait in yb). xb
 * must be readable up to the largest off + CB. */
typedef void (*spmm_fn)(int64_t o0, int64_t o1, const int64_t *seg, int64_t ss, int64_t nkb,
                        const int64_t *off, const float *val, const float *xb, float *yb, int64_t ldy);

/* Portable C: 64 scalar accumulators per row (the compiler may vectorize them). */
static void spmm_portable(int64_t o0, int64_t o1, const int64_t *seg, int64_t ss, int64_t nkb,
                          const int64_t *off, const float *val, const float *xb, float *yb,
                          int64_t ldy)
{
    for (int64_t kb = 0; kb < nkb; kb++)
        for (int64_t o = o0; o < o1; o++) {
            float acc[CB];
            float *yo = yb + o * ldy;
            if (kb == 0) memset(acc, 0, sizeof acc);
            else memcpy(acc, yo, sizeof acc);
            for (int64_t j = seg[o * ss + kb]; j < seg[o * ss + kb + 1]; j++) {
                const float v = val[j], *xr = xb + off[j];
                for (int e = 0; e < CB; e++) acc[e] += v * xr[e];
            }
            memcpy(yo, acc, sizeof acc);
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// @snippet spmm_avx512
/* AVX-512: 64 pixels = 4 zmm per row; entries taken two at a time into two sets of
 * accumulators, so that 8 FMA chains are in flight; each entry is one broadcast and four
 * FMAs that read the shifted input straight from memory. */
__attribute__((target("avx512f,avx2,fma")))
static void spmm_avx512(int64_t o0, int64_t o1, const int64_t *seg, int64_t ss, int64_t nkb,
                        const int64_t *off, const float *val, const float *xb, float *yb,
                        int64_t ldy)
{
    const float *xf = xb;
    for (int64_t kb = 0; kb < nkb; kb++)
        for (int64_t o = o0; o < o1; o++) {
            float *yo = yb + o * ldy;
            __m512 a0, a1, a2, a3, b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
            if (kb == 0) {
                a0 = a1 = a2 = a3 = b0;
            } else {   /* the sums of the earlier channel blocks */
                a0 = _mm512_loadu_ps(yo);
                a1 = _mm512_loadu_ps(yo + 16);
                a2 = _mm512_loadu_ps(yo + 32);
                a3 = _mm512_loadu_ps(yo + 48);
            }
            int64_t j = seg[o * ss + kb];
            const int64_t e = seg[o * ss + kb + 1];
            for (; j + 1 < e; j += 2) {
                const float *p = xf + off[j], *q = xf + off[j + 1];
                const __m512 v = _mm512_set1_ps(val[j]), u = _mm512_set1_ps(val[j + 1]);
                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 16), a1);
                a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 32), a2);
                a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 48), a3);
                b0 = _mm512_fmadd_ps(u, _mm512_loadu_ps(q), b0);
                b1 = _mm512_fmadd_ps(u, _mm512_loadu_ps(q + 16), b1);
                b2 = _mm512_fmadd_ps(u, _mm512_loadu_ps(q + 32), b2);
                b3 = _mm512_fmadd_ps(u, _mm512_loadu_ps(q + 48), b3);
            }
            if (j < e) {
                const float *p = xf + off[j];
                const __m512 v = _mm512_set1_ps(val[j]);
                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 16), a1);
                a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 32), a2);
                a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 48), a3);
            }
            _mm512_storeu_ps(yo, _mm512_add_ps(a0, b0));
            _mm512_storeu_ps(yo + 16, _mm512_add_ps(a1, b1));
            _mm512_storeu_ps(yo + 32, _mm512_add_ps(a2, b2));
            _mm512_storeu_ps(yo + 48, _mm512_add_ps(a3, b3));
        }
}
// @end spmm_avx512

/* AVX2: the same with 8-wide ymm, 32 pixels = 4 ymm per pass, two passes per block. */
__attribute__((target("avx2,fma")))
static void spmm_avx2(int64_t o0, int64_t o1, const int64_t *seg, int64_t ss, int64_t nkb,
                      const int64_t *off, const float *val, const float *xb, float *yb,
                      int64_t ldy)
{
    for (int64_t kb = 0; kb < nkb; kb++)
        for (int64_t o = o0; o < o1; o++)
            for (int64_t h = 0; h < CB; h += CB / 2) {
                const float *xf = xb + h;
                float *yo = yb + o * ldy + h;
                __m256 a0, a1, a2, a3, b0 = _mm256_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
                if (kb == 0) {
                    a0 = a1 = a2 = a3 = b0;
                } else {
                    a0 = _mm256_loadu_ps(yo);
                    a1 = _mm256_loadu_ps(yo + 8);
                    a2 = _mm256_loadu_ps(yo + 16);
                    a3 = _mm256_loadu_ps(yo + 24);
                }
                int64_t j = seg[o * ss + kb];
                const int64_t e = seg[o * ss + kb + 1];
                for (; j + 1 < e; j += 2) {
                    const float *p = xf + off[j], *q = xf + off[j + 1];
                    const __m256 v = _mm256_broadcast_ss(val + j), u = _mm256_broadcast_ss(val + j + 1);
                    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p), a0);
                    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 8), a1);
                    a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 16), a2);
                    a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 24), a3);
                    b0 = _mm256_fmadd_ps(u, _mm256_loadu_ps(q), b0);
                    b1 = _mm256_fmadd_ps(u, _mm256_loadu_ps(q + 8), b1);
                    b2 = _mm256_fmadd_ps(u, _mm256_loadu_ps(q + 16), b2);
                    b3 = _mm256_fmadd_ps(u, _mm256_loadu_ps(q + 24), b3);
                }
                if (j < e) {
                    const float *p = xf + off[j];
                    const __m256 v = _mm256_broadcast_ss(val + j);
                    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p), a0);
                    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 8), a1);
                    a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 16), a2);
                    a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 24), a3);
                }
                _mm256_storeu_ps(yo, _mm256_add_ps(a0, b0));
                _mm256_storeu_ps(yo + 8, _mm256_add_ps(a1, b1));
                _mm256_storeu_ps(yo + 16, _mm256_add_ps(a2, b2));
                _mm256_storeu_ps(yo + 24, _mm256_add_ps(a3, b3));
            }
}
#define HAVE_SIMD_KERNELS 1
#endif

/* The kernel for chapter 3's active GEMM kernel: AVX-512, AVX2 or portable. */
static spmm_fn active_kernel(const char **name)
{
    const cr_gemm_kernel *k = cr_gemm_active_kernel();
#ifdef HAVE_SIMD_KERNELS
    if (k == &cr_kernel_avx512 && cr_cpu_has_avx512()) {
        *name = "avx512";
        return spmm_avx512;
    }
    if (k != &cr_kernel_portable && cr_cpu_has_avx2()) {
        *name = "avx2";
        return spmm_avx2;
    }
#else
    (void)k;
#endif
    *name = "portable";
    return spmm_portable;
}

const char *cr_sparse_conv2d_kernel(void)
{
    const char *name;
    (void)active_kernel(&name);
    return name;
}

/* ---- the driver ------------------------------------------------------------------------ */

/* Where the kernel reads and writes for one (image, group). The input is the padded copy,
 * phase-split along W as chapter 3's grouped kernel keeps it: padded element (c, i, j) at
 * ((c*hp + i)*sw + j % sw)*lp + j / sw, so that output pixels (oh, ow), (oh, ow+1), ...
 * of one tap read consecutive floats. Stride 1 ("flat" mode, sw = 1): the planes are
 * walked as one long row, output (oh, ow) at oh*lp + ow, blocks running across row ends.
 * Other strides ("row" mode): each output row in blocks of CB, (oh, ow) at oh*wo_r + ow. */
typedef struct {
    int flat;
    int64_t hp, lp, sw;   /* padded rows; length of one phase of a padded row; phases */
    int64_t wp;           /* padded width */
    int64_t wo_r;         /* row mode: output width rounded up to CB */
    int64_t ylp;          /* output row stride in the kernel's output (lp or wo_r) */
    int64_t L;            /* output floats per channel the kernel writes (a multiple of CB) */
    int64_t blocks;       /* pixel blocks per channel */
    int64_t in_floats;    /* the input buffer, with slack for the last block's reads */
} sparse_geom;

/* The geometry of shape s. */
static sparse_geom sparse_geometry(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    sparse_geom g;
    g.flat = p->stride_h == 1 && p->stride_w == 1;
    g.hp = s->h_in + p->pad_top + p->pad_bottom;
    g.wp = s->w_in + p->pad_left + p->pad_right;
    g.sw = p->stride_w;
    if (g.flat) {
        g.lp = g.wp;
        g.wo_r = 0;
        g.ylp = g.lp;
        g.L = round_up(s->h_out * g.lp, CB);
        /* the last block of the last tap reads at most lp + CB floats past the planes */
        g.in_floats = s->cin_g * g.hp * g.lp + g.lp + CB;
    } else {
        /* a phase holds every padded column of its phase, and reaches the widest tap's
         * column for the last rounded-up output */
        g.wo_r = round_up(s->w_out, CB);
        const int64_t need = g.wo_r + (p->kernel_w - 1) * p->dilation_w / g.sw + 1;
        const int64_t have = (g.wp + g.sw - 1) / g.sw;
        g.lp = need > have ? need : have;
        g.ylp = g.wo_r;
        g.L = s->h_out * g.wo_r;
        g.in_floats = s->cin_g * g.hp * g.sw * g.lp + CB;
    }
    g.blocks = g.L / CB;
    return g;
}

size_t cr_sparse_conv2d_workspace_bytes(const cr_conv_shape *s)
{
    const sparse_geom g = sparse_geometry(s);
    return (size_t)(g.in_floats + s->cout_g * g.L) * sizeof(float);
}

/* Where pixel block blk starts: *xo in the input buffer, *yo in the kernel's output row. */
static void block_start(const cr_conv_shape *s, const sparse_geom *g, int64_t blk, int64_t *xo,
                        int64_t *yo)
{
    if (g->flat) {
        *xo = *yo = blk * CB;
        return;
    }
    const int64_t per_row = g->wo_r / CB, oh = blk / per_row, ow0 = blk % per_row * CB;
    *xo = oh * s->p.stride_h * g->sw * g->lp + ow0;
    *yo = oh * g->wo_r + ow0;
}

// @snippet sparse_pad
/* The padded, phase-split copy of one image's group (x_g: Cin_g x H x W), channels
 * [c0, c1), into xp (geometry g): every padding mode resolved here, once. col_map[e] is
 * the input column that padded column e copies, or -1 for a zero (sw * lp entries). */
static void sparse_pad(const cr_conv_shape *s, const sparse_geom *g, const int64_t *col_map,
                       const float *x_g, float *xp, int64_t c0, int64_t c1)
{
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, len = g->sw * g->lp, pl = p->pad_left;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t i = 0; i < g->hp; i++) {
            float *dst = xp + (c * g->hp + i) * len;
            const int64_t ih = cr_pad_index(i - p->pad_top, H, p->pad_mode);
            if (ih < 0) {
                memset(dst, 0, (size_t)len * sizeof(float));
                continue;
            }
            const float *row = x_g + (c * H + ih) * W;
            if (g->flat) {   /* the row itself in the middle, the padding around it */
                memcpy(dst + pl, row, (size_t)W * sizeof(float));
                for (int64_t e = 0; e < pl; e++) dst[e] = col_map[e] < 0 ? 0.0f : row[col_map[e]];
                for (int64_t e = pl + W; e < len; e++)
                    dst[e] = col_map[e] < 0 ? 0.0f : row[col_map[e]];
            } else {         /* phase by phase */
                for (int64_t e = 0; e < len; e++)
                    dst[e % g->sw * g->lp + e / g->sw] = col_map[e] < 0 ? 0.0f : row[col_map[e]];
            }
        }
}
// @end sparse_pad

/* Fills col_map (sw * lp entries) for sparse_pad: padded column e copies input column
 * col_map[e], or is a zero (-1: zero padding, or past the padded width). */
static void sparse_col_map(const cr_conv_shape *s, const sparse_geom *g, int64_t *col_map)
{
    const cr_conv_params *p = &s->p;
    for (int64_t e = 0; e < g->sw * g->lp; e++)
        col_map[e] = e < g->wp ? cr_pad_index(e - p->pad_left, s->w_in, p->pad_mode) : -1;
}

/* Floats of the input buffer that hold the padded copy (the rest is the zeroed slack). */
static int64_t sparse_input_used(const cr_conv_shape *s, const sparse_geom *g)
{
    return s->cin_g * g->hp * g->sw * g->lp;
}

/* y_g (Cout_g x Ho x Wo) rows [o0, o1) = yf (row stride L, pixel (oh, ow) at oh*ylp + ow)
 * + the bias. */
static void sparse_unflatten(const cr_conv_shape *s, const sparse_geom *g, const float *yf,
                             const float *b_g, float *y_g, int64_t o0, int64_t o1)
{
    const int64_t Ho = s->h_out, Wo = s->w_out;
    for (int64_t o = o0; o < o1; o++) {
        const float bias = b_g ? b_g[o] : 0.0f;
        for (int64_t oh = 0; oh < Ho; oh++) {
            const float *src = yf + o * g->L + oh * g->ylp;
            float *dst = y_g + (o * Ho + oh) * Wo;
            for (int64_t ow = 0; ow < Wo; ow++) dst[ow] = src[ow] + bias;
        }
    }
}

/* off[j] = where entry j's tap reads in the input buffer, relative to its pixel block's
 * start; tap (K entries): scratch for the offset of every tap, filled without divisions
 * (a division per entry costs as much as its FMAs). */
static void sparse_offsets(const cr_conv_shape *s, const sparse_geom *g, const cr_csr_weight *w,
                           int64_t *tap, int64_t *off)
{
    const cr_conv_params *p = &s->p;
    for (int64_t c = 0, k = 0; c < s->cin_g; c++)
        for (int64_t r = 0; r < p->kernel_h; r++)
            for (int64_t t = 0; t < p->kernel_w; t++, k++) {
                const int64_t j = t * p->dilation_w;   /* padded column of output column 0 */
                tap[k] = ((c * g->hp + r * p->dilation_h) * g->sw + j % g->sw) * g->lp + j / g->sw;
            }
    for (size_t j = 0; j < w->nnz; j++) off[j] = tap[w->col[j]];
}

/* Taps per channel block: as many input channels as keep what one pixel block reads
 * within 16 KiB (a third of a 48 KiB L1 data cache, half of a 32 KiB one). */
static int64_t block_taps(const cr_conv_shape *s, const sparse_geom *g)
{
    const cr_conv_params *p = &s->p;
    const int64_t R = p->kernel_h, S = p->kernel_w, RS = R * S;
    const int64_t bytes =
        g->flat ? (int64_t)sizeof(float) * (CB + (R - 1) * p->dilation_h * g->lp + (S - 1) * p->dilation_w)
                : (int64_t)sizeof(float) * R * (g->sw < S ? g->sw : S) *
                      (CB + (S - 1) * p->dilation_w / g->sw + 1);
    int64_t kc = 16384 / bytes;
    kc = kc < 1 ? 1 : kc > s->cin_g ? s->cin_g : kc;
    return kc * RS;
}

/* seg (Cout rows of nkb + 1): where each row's entries of channel block kb (taps
 * [kb*kbt, (kb+1)*kbt)) begin; the last is the row's end. */
static void sparse_segments(const cr_csr_weight *w, int64_t kbt, int64_t nkb, int64_t *seg)
{
    for (int64_t o = 0; o < w->cout; o++) {
        int64_t j = w->row_ptr[o];
        const int64_t e = w->row_ptr[o + 1];
        for (int64_t kb = 0; kb < nkb; kb++) {
            while (j < e && w->col[j] < kb * kbt) j++;
            seg[o * (nkb + 1) + kb] = j;
        }
        seg[o * (nkb + 1) + nkb] = e;
    }
}

// @snippet sparse_conv
/* One (image, group) pair's pixel blocks [b0, b1) x rows [o0, o1) through the kernel. */
static void sparse_blocks(const cr_conv_shape *s, const sparse_geom *g, spmm_fn kern,
                          const int64_t *seg, int64_t ss, int64_t nkb, const int64_t *off,
                          const float *val, const float *xp, float *yf, int64_t b0, int64_t b1,
                          int64_t o0, int64_t o1)
{
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t xo, yo;
        block_start(s, g, blk, &xo, &yo);
        kern(o0, o1, seg, ss, nkb, off, val, xp + xo, yf + yo, g->L);
    }
}

cr_status cr_sparse_conv2d(const cr_conv_params *p, const cr_tensor *x, const cr_csr_weight *w,
                           const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = bind_sparse(&s, p, x, w, b, y);
    if (st) return st;
    const char *kname;
    const spmm_fn kern = active_kernel(&kname);
    const sparse_geom g = sparse_geometry(&s);
    const int64_t HW = s.h_in * s.w_in, plane = s.h_out * s.w_out, used = sparse_input_used(&s, &g);
    const size_t ws = cr_sparse_conv2d_workspace_bytes(&s);
    const int64_t K = cr_im2col_rows(&s), kbt = block_taps(&s, &g), nkb = (K + kbt - 1) / kbt,
                  ss = nkb + 1;
    /* per call: entry offsets, channel-block starts, the tap table and the column map */
    int64_t *off = malloc((w->nnz + (size_t)(p->out_channels * ss + K + g.sw * g.lp)) * sizeof *off);
    if (!off) return cr_fail(CR_ENOMEM, "sparse conv: %zu offsets", w->nnz);
    int64_t *seg = off + w->nnz, *tap = seg + p->out_channels * ss, *col_map = tap + K;
    sparse_offsets(&s, &g, w, tap, off);
    sparse_segments(w, kbt, nkb, seg);
    sparse_col_map(&s, &g, col_map);
    const int T = cr_gemm_threads_available();
    const int64_t pairs = s.batch * p->groups;
    /* many (image, group) pairs: each thread its own pairs and buffers; few: all threads
     * on one pair at a time, sharing its pixel blocks (and rows, when blocks are few) */
    const int shared = pairs < 2 * (int64_t)T;
    float *xs = shared ? cr_aligned_alloc(ws) : NULL;
    if (shared && !xs) {
        free(off);
        return cr_fail(CR_ENOMEM, "sparse conv: %zu bytes of workspace", ws);
    }
    const int64_t rchunks = shared && g.blocks < 4 * T ? T : 1;   /* row chunks per block */
    const int64_t rstep = (s.cout_g + rchunks - 1) / rchunks;
    int oom = 0;
#pragma omp parallel reduction(|| : oom)
    {
        float *buf = shared ? xs : cr_aligned_alloc(ws);   /* padded input, then yf */
        if (!buf) oom = 1;
        for (int64_t i = 0; i < (shared ? pairs : 0); i++) {   /* pairs in turn, together */
            const int64_t n = i / p->groups, gi = i % p->groups;
            const float *x_g = x->data + (n * p->in_channels + gi * s.cin_g) * HW;
#pragma omp for schedule(static)
            for (int64_t c = 0; c < s.cin_g; c++) sparse_pad(&s, &g, col_map, x_g, buf, c, c + 1);
#pragma omp single
            memset(buf + used, 0, (size_t)(g.in_floats - used) * sizeof(float));
            const int64_t *sg = seg + gi * s.cout_g * ss;
            float *yf = buf + g.in_floats;
#pragma omp for schedule(static) collapse(2)
            for (int64_t blk = 0; blk < g.blocks; blk++)
                for (int64_t rc = 0; rc < rchunks; rc++) {
                    const int64_t o0 = rc * rstep, o1 = o0 + rstep < s.cout_g ? o0 + rstep : s.cout_g;
                    if (o0 < o1)
                        sparse_blocks(&s, &g, kern, sg, ss, nkb, off, w->val, buf, yf, blk, blk + 1,
                                      o0, o1);
                }
            const float *b_g = b ? b->data + gi * s.cout_g : NULL;
            float *y_g = y->data + (n * p->out_channels + gi * s.cout_g) * plane;
#pragma omp for schedule(static)
            for (int64_t o = 0; o < s.cout_g; o++) sparse_unflatten(&s, &g, yf, b_g, y_g, o, o + 1);
        }
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < (shared ? 0 : s.batch); n++)
            for (int64_t gi = 0; gi < p->groups; gi++) {
                if (!buf) continue;
                sparse_pad(&s, &g, col_map, x->data + (n * p->in_channels + gi * s.cin_g) * HW, buf,
                           0, s.cin_g);
                memset(buf + used, 0, (size_t)(g.in_floats - used) * sizeof(float));
                float *yf = buf + g.in_floats;
                sparse_blocks(&s, &g, kern, seg + gi * s.cout_g * ss, ss, nkb, off, w->val, buf, yf,
                              0, g.blocks, 0, s.cout_g);
                sparse_unflatten(&s, &g, yf, b ? b->data + gi * s.cout_g : NULL,
                                 y->data + (n * p->out_channels + gi * s.cout_g) * plane, 0,
                                 s.cout_g);
            }
        if (!shared) cr_aligned_free(buf);
    }
    cr_aligned_free(xs);
    free(off);
    if (oom) return cr_fail(CR_ENOMEM, "sparse conv: %zu bytes of workspace per thread", ws);
    return CR_OK;
}
// @end sparse_conv

/* ---- sparse or dense ------------------------------------------------------------------- */

double cr_sparse_break_even(void)
{
    const char *k = cr_sparse_conv2d_kernel();
    if (strcmp(k, "avx512") == 0) return CR_SPARSE_BREAK_EVEN_AVX512;
    if (strcmp(k, "avx2") == 0) return CR_SPARSE_BREAK_EVEN_AVX2;
    return CR_SPARSE_BREAK_EVEN_PORTABLE;
}

int cr_sparse_pays(double sparsity)
{
    return sparsity >= cr_sparse_break_even();
}

cr_status cr_conv2d_auto(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w_dense,
                         const cr_csr_weight *csr, const cr_tensor *b, cr_tensor *y)
{
    if (!csr || !w_dense || !w_dense->data || w_dense->ndim != 4 || csr->cout != w_dense->shape[0] ||
        csr->cin_g != w_dense->shape[1] || csr->kh != w_dense->shape[2] ||
        csr->kw != w_dense->shape[3])
        return cr_fail(CR_EINVAL, "conv auto: w_dense and csr must hold the same weight shape");
    if (cr_sparse_pays(1.0 - cr_csr_density(csr))) return cr_sparse_conv2d(p, x, csr, b, y);
    return cr_conv2d_fast(p, x, w_dense, b, y);
}
