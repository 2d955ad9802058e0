/* int8_conv.c — chapter 7: fixed-point requantization and the int8 convolution on
 * the int8 GEMM (int8_gemm.h), with its seven-loop reference. */
#include "int8_conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "int8_gemm.h"
#include "scratch.h"
#include "tensor.h"

_Static_assert(CR_I8_MAX_NR <= 64, "cr_requant_runs holds one run per column of a tile");

/* ---- requantization ------------------------------------------------------------------ */

// @snippet qmul_from_real
cr_status cr_qmul_from_real(double real, cr_qmul *m)
{
    if (!(real > 0.0) || !(real < 1073741824.0))   /* NaN fails both */
        return cr_fail(CR_EINVAL, "requantization multiplier %g: expected a finite value in "
                       "(0, 2^30) (s_in * s_w / s_out)", real);
    int e;
    const double f = frexp(real, &e);            /* real = f * 2^e, f in [0.5, 1) */
    int64_t mult = llrint(ldexp(f, 31));         /* f * 2^31 in [2^30, 2^31], rounded */
    int shift = 31 - e;                          /* real ~ mult * 2^-shift */
    if (mult == ((int64_t)1 << 31)) {            /* f rounded up to 1: renormalise */
        mult >>= 1;
        shift--;
    }
    if (shift > 61) {                            /* tiny: keep the shift, lose mult's bits */
        mult = llrint(ldexp(real, 61));
        shift = 61;
    }
    m->mult = (int32_t)mult;
    m->shift = shift;
    return CR_OK;
}
// @end qmul_from_real

/* The row requantizer this CPU runs best. */
typedef void (*requant_row_fn)(const int32_t *, int64_t, int32_t, cr_qmul, int32_t, int32_t,
                               uint8_t *);

/* Portable: the scalar formula per element. */
static void requant_row_scalar(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m,
                               int32_t zp, int32_t lo, uint8_t *out)
{
    for (int64_t j = 0; j < n; j++) out[j] = cr_requant(acc[j], bias, m, zp, lo);
}

static requant_row_fn best_requant(void)
{
    static requant_row_fn _Atomic fn;
    requant_row_fn f = fn;
    if (!f) {
        f = cr_cpu_has_avx512_vnni() ? cr_requant_row_avx512
            : cr_int8_gemm_kernel_supported("avx2") ? cr_requant_row_avx2
                                                    : requant_row_scalar;
        fn = f;
    }
    return f;
}

void cr_requant_row(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m, int32_t zp,
                    int32_t lo, uint8_t *out)
{
    best_requant()(acc, n, bias, m, zp, lo, out);
}

void cr_requant_tile(const int32_t *T, int64_t ldt, int64_t mr, const int32_t *bias,
                     const cr_qmul *m, int32_t zp, int32_t lo, int32_t hi,
                     const cr_requant_runs *r, uint8_t *out, int64_t plane)
{
    const requant_row_fn rq = best_requant();
    if (rq == cr_requant_row_avx512) {   /* the CPU check, made once */
        cr_requant_tile_avx512(T, ldt, mr, bias, m, zp, lo, hi, r, out, plane);
        return;
    }
    for (int64_t i = 0; i < mr; i++)
        for (int64_t q = 0; q < r->n; q++) {
            uint8_t *restrict o = out + i * plane + r->dst[q];
            rq(T + i * ldt + r->src[q], r->len[q], bias[i], m[i], zp, lo, o);
            if (hi < 255)   /* the bytes just written, still in L1 */
                for (int64_t j = 0; j < r->len[q]; j++) o[j] = o[j] > hi ? (uint8_t)hi : o[j];
        }
}

/* ---- preparing a convolution ---------------------------------------------------------- */

void cr_int8_conv_free(cr_int8_conv *qc)
{
    if (!qc) return;
    free(qc->w);
    free(qc->bias_q);
    free(qc->bias_fold);
    free(qc->mul);
    free(qc->w_scale);
    cr_aligned_free(qc->wpack);
    cr_aligned_free(qc->wdirect);
    memset(qc, 0, sizeof *qc);
}

/* Checks the weights' tensor and parameters against p. */
static cr_status check_weights(const cr_conv_params *p, const cr_qtensor *w)
{
    const cr_dtensor *q = &w->q;
    const int64_t cin_g = p->in_channels / p->groups;
    if (q->dtype != CR_DT_I8 || q->ndim != 4 || q->shape[0] != p->out_channels ||
        q->shape[1] != cin_g || q->shape[2] != p->kernel_h || q->shape[3] != p->kernel_w)
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: w: expected I8 of shape %lld x %lld x %lld "
                       "x %lld (Cout x Cin/groups x kh x kw)", (long long)p->out_channels,
                       (long long)cin_g, (long long)p->kernel_h, (long long)p->kernel_w);
    cr_status st = cr_qparams_check(&w->p, q);
    if (st) return st;
    if (w->p.scheme == CR_QSCHEME_PER_CHANNEL && w->p.axis != 0)
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: w: per-channel parameters must follow "
                       "axis 0 (output channels), got axis %d", w->p.axis);
    for (int64_t o = 0; o < w->p.channels; o++)
        if (w->p.zero_point[o] != 0)
            return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: w: zero point %d of channel %lld: "
                           "expected 0 (symmetric weights)", (int)w->p.zero_point[o], (long long)o);
    return CR_OK;
}

/* Checks a u8 scale and zero point. */
static cr_status check_act(const char *what, double scale, int32_t zp)
{
    if (!(scale > 0.0) || !isfinite(scale))
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: %s scale %g: expected finite and > 0", what,
                       scale);
    if (zp < 0 || zp > 255)
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: %s zero point %d: expected 0..255", what,
                       (int)zp);
    return CR_OK;
}

/* Packs each group's weights for the kernel the GEMM would use on full-range input. */
static cr_status pack_weights(cr_int8_conv *qc)
{
    const cr_i8_kernel *kd = cr_int8_gemm_kernel_for(255);
    const size_t gb = cr_i8_prepacked_bytes(kd, qc->cout_g, qc->K);
    const int64_t G = qc->p.groups;
    cr_aligned_free(qc->wpack);
    qc->wpack = cr_aligned_alloc(gb * (size_t)G);
    if (!qc->wpack)
        return cr_fail(CR_ENOMEM, "cr_int8_conv_prepare: packed weights: %zu bytes", gb * G);
    for (int64_t g = 0; g < G; g++)
        cr_i8_prepack_a(kd, qc->cout_g, qc->K, qc->w + g * qc->cout_g * qc->K, qc->K,
                        qc->wpack + (size_t)g * gb);
    qc->pack_mr = kd->mr;
    qc->pack_kc = kd->kc;
    qc->pack_group_bytes = gb;
    kd = cr_i8_direct_kernel(kd, qc->cout_g);
    if (!kd->kernel_off) return CR_OK;
    /* the direct path: depth ordered (channel quad, r, t, channel in quad), one block */
    const int64_t kh = qc->p.kernel_h, kw = qc->p.kernel_w, quads = (qc->cin_g + 3) / 4;
    const int64_t K4 = quads * kh * kw * 4, Mp = (qc->cout_g + kd->mr - 1) / kd->mr * kd->mr;
    int8_t *perm = calloc((size_t)(qc->cout_g * K4), 1);
    qc->direct_group_bytes = (size_t)(Mp * K4);
    qc->wdirect = cr_aligned_alloc(qc->direct_group_bytes * (size_t)G);
    if (!perm || !qc->wdirect) {
        free(perm);
        return cr_fail(CR_ENOMEM, "cr_int8_conv_prepare: direct weights: %zu bytes",
                       qc->direct_group_bytes * G);
    }
    for (int64_t g = 0; g < G; g++) {
        for (int64_t o = 0; o < qc->cout_g; o++)
            for (int64_t c = 0; c < qc->cin_g; c++)
                for (int64_t r = 0; r < kh; r++)
                    for (int64_t t = 0; t < kw; t++)
                        perm[o * K4 + (((c / 4) * kh + r) * kw + t) * 4 + c % 4] =
                            qc->w[(g * qc->cout_g + o) * qc->K + (c * kh + r) * kw + t];
        const cr_i8_strided a = {(const uint8_t *)perm, K4, 1};
        cr_i8_pack_strided(&a, 0, qc->cout_g, 0, K4, kd->mr,
                           (uint8_t *)qc->wdirect + (size_t)g * qc->direct_group_bytes);
    }
    free(perm);
    qc->direct_mr = kd->mr;
    qc->K4 = K4;
    return CR_OK;
}

// @snippet qconv_prepare
cr_status cr_int8_conv_prepare(cr_int8_conv *qc, const cr_conv_params *p, const cr_qtensor *w,
                           const float *bias, double x_scale, int32_t x_zp, double y_scale,
                           int32_t y_zp, int relu)
{
    if (!qc || !p || !w) return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: qc, p or w is NULL");
    memset(qc, 0, sizeof *qc);
    if (p->pad_mode != CR_PAD_ZEROS)
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: padding mode %s: the int8 convolution "
                       "pads with zeros only", cr_pad_mode_name(p->pad_mode));
    cr_conv_shape s;   /* validates p on the smallest input the kernel fits */
    cr_status st = cr_conv_shape_init(&s, p, 1, (p->kernel_h - 1) * p->dilation_h + 1,
                                      (p->kernel_w - 1) * p->dilation_w + 1);
    if (st) return st;
    if ((st = check_weights(p, w)) || (st = check_act("input", x_scale, x_zp)) ||
        (st = check_act("output", y_scale, y_zp)))
        return st;
    if (p->bias != (bias != NULL))
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: bias: expected %s (p->bias is %s)",
                       p->bias ? "Cout floats" : "NULL", p->bias ? "true" : "false");
    const int64_t Co = p->out_channels, K = s.cin_g * p->kernel_h * p->kernel_w;
    if (K > CR_I8_MAX_K)
        return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: Cin/groups x kh x kw = %lld: expected <= "
                       "%d (exact int32 sums)", (long long)K, CR_I8_MAX_K);
    qc->p = *p;
    qc->cin_g = s.cin_g;
    qc->cout_g = s.cout_g;
    qc->K = K;
    qc->x_scale = x_scale;
    qc->x_zp = x_zp;
    qc->y_scale = y_scale;
    qc->y_zp = y_zp;
    qc->relu = relu != 0;
    qc->y_max = 255;
    qc->w = malloc((size_t)(Co * K));
    qc->bias_q = calloc((size_t)Co, sizeof(int32_t));
    qc->bias_fold = calloc((size_t)Co, sizeof(int32_t));
    qc->mul = calloc((size_t)Co, sizeof(cr_qmul));
    qc->w_scale = calloc((size_t)Co, sizeof(double));
    if (!qc->w || !qc->bias_q || !qc->bias_fold || !qc->mul || !qc->w_scale) {
        cr_int8_conv_free(qc);
        return cr_fail(CR_ENOMEM, "cr_int8_conv_prepare: %lld channels", (long long)Co);
    }
    memcpy(qc->w, cr_dtensor_i8(&w->q), (size_t)(Co * K));
    const double limit = 2147483647.0 - 2.0 * (double)K * 128 * 255;  /* room beside sums */
    for (int64_t o = 0; o < Co; o++) {
        const double sw = w->p.scale[w->p.channels == 1 ? 0 : o];
        qc->w_scale[o] = sw;
        int64_t rowsum = 0;                       /* folds z_x into the bias: */
        for (int64_t k = 0; k < K; k++) rowsum += qc->w[o * K + k];  /* sum w (x - z) = */
        const double bq = bias ? nearbyint((double)bias[o] / (x_scale * sw)) : 0.0;
        if (!(fabs(bq) < limit)) {                /* sum w x - z sum w */
            cr_int8_conv_free(qc);
            return cr_fail(CR_EINVAL, "cr_int8_conv_prepare: bias[%lld] = %g is %g steps of s_x*s_w: "
                           "expected below %g in magnitude (int32 sums)", (long long)o,
                           bias ? (double)bias[o] : 0.0, bq, limit);
        }
        qc->bias_q[o] = (int32_t)bq;
        qc->bias_fold[o] = (int32_t)(bq - (double)x_zp * (double)rowsum);
        if ((st = cr_qmul_from_real(x_scale * sw / y_scale, &qc->mul[o]))) {
            cr_int8_conv_free(qc);
            return st;
        }
    }
    if ((st = pack_weights(qc))) cr_int8_conv_free(qc);
    return st;
}
// @end qconv_prepare

/* ---- the reference ----------------------------------------------------------------------- */

// @snippet qconv_ref
/* acc of output (b, o, oh, ow): chapter 1's sum over the patch, of w (x - z_x) in int32;
 * taps in the padding read z_x and add nothing. */
static int32_t ref_sum(const cr_int8_conv *qc, const cr_conv_shape *s, const uint8_t *x,
                       int64_t b, int64_t o, int64_t oh, int64_t ow)
{
    const cr_conv_params *p = &qc->p;
    const int64_t g = o / s->cout_g, h = s->h_in, w = s->w_in;
    const int8_t *wo = qc->w + o * qc->K;                  /* Cin_g x kh x kw */
    int32_t acc = 0;
    for (int64_t c = 0; c < s->cin_g; c++) {
        const uint8_t *xc = x + ((b * p->in_channels + g * s->cin_g + c) * h) * w;
        for (int64_t r = 0; r < p->kernel_h; r++)
            for (int64_t t = 0; t < p->kernel_w; t++) {
                const int64_t ih = oh * p->stride_h - p->pad_top + r * p->dilation_h;
                const int64_t iw = ow * p->stride_w - p->pad_left + t * p->dilation_w;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                acc += wo[(c * p->kernel_h + r) * p->kernel_w + t] * (xc[ih * w + iw] - qc->x_zp);
            }
    }
    return acc;
}

/* v, or hi where v is above it. */
static inline uint8_t clamp_max(uint8_t v, int32_t hi)
{
    return v > hi ? (uint8_t)hi : v;
}

cr_status cr_int8_conv_run_ref(const cr_int8_conv *qc, int64_t n, int64_t h, int64_t w,
                           const uint8_t *x, uint8_t *y)
{
    if (!qc || !qc->w || !x || !y) return cr_fail(CR_EINVAL, "cr_int8_conv_run_ref: NULL argument");
    cr_conv_shape s;
    cr_status st = cr_conv_shape_init(&s, &qc->p, n, h, w);
    if (st) return st;
    const int32_t lo = qc->relu ? qc->y_zp : 0;          /* ReLU: real 0 is the byte z_y */
    for (int64_t b = 0; b < n; b++)
        for (int64_t o = 0; o < qc->p.out_channels; o++)
            for (int64_t oh = 0; oh < s.h_out; oh++)
                for (int64_t ow = 0; ow < s.w_out; ow++)
                    y[((b * qc->p.out_channels + o) * s.h_out + oh) * s.w_out + ow] =
                        clamp_max(cr_requant(ref_sum(qc, &s, x, b, o, oh, ow), qc->bias_q[o],
                                             qc->mul[o], qc->y_zp, lo), qc->y_max);
    return CR_OK;
}
// @end qconv_ref

/* ---- the fast path ---------------------------------------------------------------------- */

/* How one image's group of input channels is laid out for the B packer: padded with
 * z_x, each padded row split into sw phases of lp bytes (element (c, i, j) at
 * ((c * Hp + i) * sw + j % sw) * lp + j / sw), so that consecutive outputs of a row
 * read consecutive bytes. With stride 1 this is the plain padded image, and the
 * output is computed on the padded grid (row pitch Wp, "flat"): column j of B is
 * byte koff[k] + j, and the columns past Wo in each row are computed and dropped. */
typedef struct {
    int64_t Hp, Wp, lp, sw;
    int64_t row_pitch;   /* bytes between the inputs of output rows oh and oh + 1 */
    int flat;            /* stride 1: B column j is byte koff[k] + j */
    int copy;            /* 0: the input itself is the layout (stride 1, no padding) */
    size_t bytes;        /* of the padded copy of one group */
    int64_t N;           /* columns of the GEMM */
} qgeom;

/* The layout of the packer's input for shape s. */
static qgeom make_geom(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    qgeom gm;
    gm.Hp = s->h_in + p->pad_top + p->pad_bottom;
    gm.Wp = s->w_in + p->pad_left + p->pad_right;
    gm.sw = p->stride_w;
    gm.lp = (gm.Wp + gm.sw - 1) / gm.sw;
    gm.flat = p->stride_h == 1 && p->stride_w == 1;
    gm.copy = !(gm.flat && p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 &&
                p->pad_right == 0);
    gm.row_pitch = p->stride_h * gm.sw * gm.lp;
    gm.bytes = (size_t)(s->cin_g * gm.Hp * gm.sw * gm.lp);
    gm.N = gm.flat ? (s->h_out - 1) * gm.Wp + s->w_out : s->h_out * s->w_out;
    return gm;
}

/* Offsets of each k = (c, r, t) of the patch in the layout: where output (0, 0) reads. */
static void make_koff(const cr_conv_shape *s, const qgeom *gm, int64_t *koff)
{
    const cr_conv_params *p = &s->p;
    int64_t k = 0;
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t r = 0; r < p->kernel_h; r++)
            for (int64_t t = 0; t < p->kernel_w; t++, k++) {
                const int64_t col = t * p->dilation_w;
                koff[k] = ((c * gm->Hp + r * p->dilation_h) * gm->sw + col % gm->sw) * gm->lp +
                          col / gm->sw;
            }
}

/* Writes one image's group (cin_g planes of h x w) into the layout, padding with zp. */
static void pad_copy(const cr_conv_shape *s, const qgeom *gm, const uint8_t *x_g, uint8_t zp,
                     uint8_t *buf)
{
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, sw = gm->sw, lp = gm->lp;
    memset(buf, zp, gm->bytes);
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t i = 0; i < H; i++) {
            const uint8_t *src = x_g + (c * H + i) * W;
            uint8_t *row = buf + (c * gm->Hp + i + p->pad_top) * sw * lp;
            if (sw == 1) {
                memcpy(row + p->pad_left, src, (size_t)W);
            } else {
                for (int64_t j = 0; j < W; j++) {
                    const int64_t jp = j + p->pad_left;
                    row[(jp % sw) * lp + jp / sw] = src[j];
                }
            }
        }
}

/* What the conv's B packer reads. */
typedef struct {
    const uint8_t *src;     /* the layout (or the input itself) */
    const int64_t *koff;    /* K offsets */
    int64_t K, Wo;
    const qgeom *gm;
} conv_b;

// @snippet qconv_pack_b
/* cr_i8_pack_fn for the patch matrix, never built: columns [j0, j0+cols) and patch rows
 * [k0, k0+kc), k4-interleaved. Flat (stride 1): each k is one contiguous run of the
 * layout. Otherwise each output row's part of the panel is one contiguous run. */
static void pack_conv_b(const void *ctx, int64_t j0, int64_t cols, int64_t k0, int64_t kc,
                        int panel, uint8_t *dst)
{
    const conv_b *cb = ctx;
    const qgeom *gm = cb->gm;
    static const uint8_t zeros[CR_I8_MAX_NR] = {0};
    uint8_t rows[4][CR_I8_MAX_NR];
    const int64_t kc4 = (kc + 3) / 4;
    for (int64_t g = 0; g < kc4; g++) {
        const uint8_t *r[4];
        for (int t = 0; t < 4; t++) {
            const int64_t k = k0 + 4 * g + t;
            if (k >= k0 + kc) {                       /* past the depth: zeros */
                r[t] = zeros;
            } else if (gm->flat) {                    /* one run */
                r[t] = cb->src + cb->koff[k] + j0;
            } else {                                  /* one run per output row */
                for (int64_t i = 0, j = j0; i < cols;) {
                    const int64_t oh = j / cb->Wo, ow = j % cb->Wo;
                    const int64_t len = cols - i < cb->Wo - ow ? cols - i : cb->Wo - ow;
                    memcpy(rows[t] + i, cb->src + cb->koff[k] + oh * gm->row_pitch + ow,
                           (size_t)len);
                    i += len;
                    j += len;
                }
                r[t] = rows[t];
            }
        }
        uint8_t *d = dst + g * panel * 4;
        cr_i8_interleave4(r, cols, d);
        memset(d + cols * 4, 0, (size_t)(panel - cols) * 4);   /* the edge panel */
    }
}
// @end qconv_pack_b

/* What the epilogue needs: where each tile's bytes go. */
typedef struct {
    const cr_int8_conv *qc;
    int64_t o0;             /* first output channel of the group */
    uint8_t *y_g;           /* cout_g x Ho x Wo */
    int64_t Ho, Wo, pitch;  /* pitch: GEMM columns per output row (Wp flat, else Wo) */
    int flat;
} conv_epi;

// @snippet qconv_epilogue
/* cr_i8_epilogue_fn: requantizes a finished tile of sums into the output. Flat mode:
 * the tile's columns are cut once into runs of one output row each (the padded grid's
 * extra columns dropped; without extra columns, Wp == Wo, the tile is one run), and
 * the whole tile is requantized run by run into its place in one call. */
static void conv_epilogue(const void *ctx, int64_t i0, int64_t j0, int64_t mr, int64_t nr,
                          const int32_t *T, int64_t ldt)
{
    const conv_epi *e = ctx;
    const cr_int8_conv *qc = e->qc;
    cr_requant_runs r;   /* not zeroed: only its first r.n runs are read */
    r.n = 1, r.src[0] = 0, r.dst[0] = j0, r.len[0] = nr;
    if (e->flat && e->pitch != e->Wo) {   /* (no extra columns: the one run above) */
        r.n = 0;
        for (int64_t j = j0; j < j0 + nr;) {         /* runs of one output row */
            const int64_t oh = j / e->pitch, ow = j % e->pitch;
            if (ow >= e->Wo) { j += e->pitch - ow; continue; }
            const int64_t l = j0 + nr - j < e->Wo - ow ? j0 + nr - j : e->Wo - ow;
            const int64_t sj = j - j0, dj = oh * e->Wo + ow;
            j += l;
            if (r.n > 0 && r.src[r.n - 1] + r.len[r.n - 1] == sj &&
                r.dst[r.n - 1] + r.len[r.n - 1] == dj) {
                r.len[r.n - 1] += l;   /* the next output row follows without a gap */
                continue;
            }
            r.src[r.n] = sj;
            r.dst[r.n] = dj;
            r.len[r.n++] = l;
        }
    }
    /* each run straight to its place (the requantization is element by element): no
       staging row and no copies, the epilogue's largest cost on 1x1 layers */
    const int64_t o = e->o0 + i0;   /* (a 7-bit output grid: y_max 127, in the same pass) */
    cr_requant_tile(T, ldt, mr, qc->bias_fold + o, qc->mul + o, qc->y_zp,
                    qc->relu ? qc->y_zp : 0, qc->y_max, &r, e->y_g + i0 * e->Ho * e->Wo,
                    e->Ho * e->Wo);
}
// @end qconv_epilogue

/* Buffers of one worker, from lib's scratch pool (kept between calls): the padded copy
 * and the scratch sums (K > kc), with their sizes. */
typedef struct {
    uint8_t *pad;
    int32_t *scratch;
    size_t pad_cap, scratch_cap;
} worker_buf;

/* One (image, group) pair through the engine with `threads`. */
static cr_status conv_pair(const cr_int8_conv *qc, const cr_conv_shape *s, const qgeom *gm,
                           const int64_t *koff, const cr_i8_kernel *kd, const int8_t *wpack,
                           size_t group_bytes, const uint8_t *x, uint8_t *y, int64_t b,
                           int64_t g, const worker_buf *wb, int threads)
{
    const cr_conv_params *p = &s->p;
    const int64_t HW = s->h_in * s->w_in, plane = s->h_out * s->w_out;
    const uint8_t *x_g = x + (b * p->in_channels + g * s->cin_g) * HW;
    if (gm->copy) pad_copy(s, gm, x_g, (uint8_t)qc->x_zp, wb->pad);
    const conv_b cb = {gm->copy ? wb->pad : x_g, koff, qc->K, s->w_out, gm};
    const conv_epi e = {qc, g * s->cout_g, y + (b * p->out_channels + g * s->cout_g) * plane,
                        s->h_out, s->w_out, gm->flat ? gm->Wp : s->w_out, gm->flat};
    return cr_i8_engine(kd, s->cout_g, gm->N, qc->K, NULL, wpack + (size_t)g * group_bytes,
                        pack_conv_b, &cb, wb->scratch, gm->N, 0, conv_epilogue, &e, threads);
}

/* Allocates a worker's buffers (NULL members where none is needed); 0 if out of memory. */
static int worker_alloc(worker_buf *wb, const qgeom *gm, const cr_conv_shape *s,
                        const cr_i8_kernel *kd, int64_t K)
{
    wb->pad_cap = wb->scratch_cap = 0;
    wb->pad = gm->copy ? cr_scratch_get(gm->bytes, &wb->pad_cap) : NULL;
    wb->scratch = K > kd->kc ? cr_scratch_get((size_t)(s->cout_g * gm->N) * sizeof(int32_t),
                                              &wb->scratch_cap)
                             : NULL;
    return (!gm->copy || wb->pad) && (K <= kd->kc || wb->scratch);
}

/* Gives a worker's buffers back to the pool. */
static void worker_free(worker_buf *wb)
{
    cr_scratch_put(wb->pad, wb->pad_cap);
    cr_scratch_put(wb->scratch, wb->scratch_cap);
}

/* ---- the direct path (stride 1, a kernel with a direct form) --------------------------- */

/* Writes padded row i of channel quad q of one image's group into the direct layout:
 * channel quads, each Hp padded rows of sw phases of lp 4-byte pixels (element j of a
 * padded row at phase j % sw, index j / sw; z_x outside the image, past Wp and for
 * channels past Cin_g), the quad's 4 channels interleaved in each pixel. rows: 8 x
 * sw * lp bytes of scratch. */
static void quad_row(const cr_conv_shape *s, const qgeom *gm, const uint8_t *x_g, uint8_t zp,
                     int64_t q, int64_t i, uint8_t *xi, uint8_t *rows)
{
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, Wp = gm->Wp, ih = i - p->pad_top;
    const int64_t sw = gm->sw, lp = gm->lp, L = sw * lp;   /* bytes of a split row */
    const uint8_t *r[4];
    for (int t = 0; t < 4; t++) {
        const int64_t c = 4 * q + t;
        const int inside = c < s->cin_g && ih >= 0 && ih < H;
        if (inside && sw == 1 && Wp == W) {          /* no padding in the row: read it */
            r[t] = x_g + (c * H + ih) * W;
            continue;
        }
        uint8_t *row = rows + t * L;
        memset(row, zp, (size_t)L);
        if (inside) memcpy(row + p->pad_left, x_g + (c * H + ih) * W, (size_t)W);
        if (sw == 2) {                               /* even and odd bytes: a loop the
                                                        compiler vectorizes (row is z_x
                                                        from Wp to L, as split would be) */
            uint8_t *restrict even = rows + (4 + t) * L, *restrict odd = even + lp;
            const uint8_t *restrict src = row;
            for (int64_t k = 0; k < lp; k++) {
                even[k] = src[2 * k];
                odd[k] = src[2 * k + 1];
            }
            row = even;
        } else if (sw > 1) {                         /* split the row into its phases */
            uint8_t *split = rows + (4 + t) * L;
            memset(split, zp, (size_t)L);
            for (int64_t ph = 0; ph < sw; ph++)
                for (int64_t j = ph, k = ph * lp; j < Wp; j += sw, k++) split[k] = row[j];
            row = split;
        }
        r[t] = row;
    }
    cr_i8_interleave4(r, L, xi + ((q * gm->Hp + i) * L) * 4);
}

/* One (image, group) pair by the direct path: the quad copy (slack bytes after it
 * zeroed), then every tile of the output against it; both shared by `threads`
 * threads, thread t using scratch + t * 4 * Wp. */
static void direct_pair(const cr_int8_conv *qc, const cr_conv_shape *s, const qgeom *gm,
                        const cr_i8_kernel *kd, const int64_t *goff, const uint8_t *x,
                        uint8_t *y, int64_t b, int64_t g, uint8_t *xi, size_t slack,
                        uint8_t *scratch, int threads)
{
    const cr_conv_params *p = &s->p;
    const int64_t HW = s->h_in * s->w_in, plane = s->h_out * s->w_out;
    const int64_t quads = (s->cin_g + 3) / 4, Hp = gm->Hp;
    const uint8_t *x_g = x + (b * p->in_channels + g * s->cin_g) * HW;
    const conv_epi e = {qc, g * s->cout_g, y + (b * p->out_channels + g * s->cout_g) * plane,
                        s->h_out, s->w_out, gm->flat ? gm->Wp : s->w_out, gm->flat};
    const int8_t *wg = qc->wdirect + (size_t)g * qc->direct_group_bytes;
    const int MR = kd->mr, NR = kd->nr;
    /* panels: NR columns of the flat grid, or (stride > 1) of one output row each; a last
       panel computes only the 16-column vectors it needs (112 outputs a row: 48 + 48 + 16) */
    const int64_t per_row = (s->w_out + NR - 1) / NR;
    const int64_t np = gm->flat ? (gm->N + NR - 1) / NR : s->h_out * per_row, kc4 = qc->K4 / 4;
    memset(xi + quads * Hp * gm->sw * gm->lp * 4, 0, slack);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#ifdef _OPENMP
        uint8_t *rows = scratch + (size_t)omp_get_thread_num() * 8 * (size_t)(gm->sw * gm->lp);
#else
        uint8_t *rows = scratch;
#endif
#pragma omp for schedule(static)
        for (int64_t qi = 0; qi < quads * Hp; qi++)
            quad_row(s, gm, x_g, (uint8_t)qc->x_zp, qi / Hp, qi % Hp, xi, rows);
        /* (implicit barrier: the copy is complete) */
        /* tiles (panel, row block) shared out one by one: a few panels (c_3x3_256 has 5)
           would split unevenly between threads; row blocks of one panel in a row */
        const int64_t mt = (s->cout_g + MR - 1) / MR;
#pragma omp for schedule(static)
        for (int64_t w = 0; w < np * mt; w++) {
            _Alignas(64) int32_t tile[CR_I8_MAX_MR * CR_I8_MAX_NR];
            const int64_t jp = w / mt, ir = w % mt * MR;
            int64_t j0, nr, at;   /* first column (flat grid, or output index), count, pixel */
            if (gm->flat) {
                j0 = at = jp * NR;
                nr = gm->N - j0 < NR ? gm->N - j0 : NR;
            } else {
                const int64_t oh = jp / per_row, ow0 = jp % per_row * NR;
                j0 = oh * s->w_out + ow0;
                nr = s->w_out - ow0 < NR ? s->w_out - ow0 : NR;
                at = oh * gm->row_pitch + ow0;
            }
            const int64_t mr = s->cout_g - ir < MR ? s->cout_g - ir : MR;
            kd->kernel_off(kc4, wg + ir * qc->K4, xi + at * 4, goff, tile, NR,
                           (int)(nr + 15) / 16);
            conv_epilogue(&e, ir, j0, mr, nr, tile, NR);
        }
    }
}

/* cr_int8_conv_run by the direct path; CR_ENOMEM if a buffer cannot be had. */
static cr_status run_direct(const cr_int8_conv *qc, const cr_conv_shape *s, const qgeom *gm,
                            const cr_i8_kernel *kd, const uint8_t *x, uint8_t *y, int T)
{
    const cr_conv_params *p = &s->p;
    const int64_t quads = (s->cin_g + 3) / 4, kh = p->kernel_h, kw = p->kernel_w;
    int64_t *goff = malloc((size_t)(quads * kh * kw) * sizeof(int64_t));
    if (!goff)
        return cr_fail(CR_ENOMEM, "cr_int8_conv_run: %lld offsets", (long long)(quads * kh * kw));
    for (int64_t q = 0, g = 0; q < quads; q++)     /* where tap (q, r, t) of output 0 reads */
        for (int64_t r = 0; r < kh; r++)
            for (int64_t t = 0; t < kw; t++, g++)
                goff[g] = (((q * gm->Hp + r * p->dilation_h) * gm->sw +
                            t * p->dilation_w % gm->sw) * gm->lp + t * p->dilation_w / gm->sw) * 4;
    /* past the last quad, a panel's columns past N read up to NR pixels further */
    const size_t slack = (size_t)kd->nr * 4 + 64;
    const int64_t pairs = s->batch * p->groups;
    const int outer = T > 1 && (pairs % T == 0 || pairs >= 4 * (int64_t)T) ? T : 1;
    const int inner = outer > 1 ? 1 : T;   /* threads sharing one pair */
    const size_t main_bytes = (size_t)(quads * gm->Hp * gm->sw * gm->lp * 4) + slack;
    const size_t bytes = main_bytes + (size_t)(8 * gm->sw * gm->lp) * (size_t)inner;
    cr_status failed = CR_OK;
    if (outer == 1) {   /* pairs one after the other, each on every thread (no nesting:
                           a team inside an inactive region would be made anew each call) */
        size_t cap = 0;
        uint8_t *xi = cr_scratch_get(bytes, &cap);
        if (!xi) failed = cr_fail(CR_ENOMEM, "cr_int8_conv_run: interleaved copy of %zu bytes", bytes);
        for (int64_t b = 0; b < s->batch && xi; b++)
            for (int64_t g = 0; g < p->groups; g++)
                direct_pair(qc, s, gm, kd, goff, x, y, b, g, xi, slack, xi + main_bytes, inner);
        cr_scratch_put(xi, cap);
        free(goff);
        return failed;
    }
#pragma omp parallel num_threads(outer)
    {                   /* pairs shared by the threads, each pair on one thread */
        size_t cap = 0;
        uint8_t *xi = cr_scratch_get(bytes, &cap);
        if (!xi) {
#pragma omp critical(cr_int8_conv_status)
            failed = cr_fail(CR_ENOMEM, "cr_int8_conv_run: interleaved copy of %zu bytes", bytes);
        }
#pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < s->batch; b++)
            for (int64_t g = 0; g < p->groups; g++)
                if (xi)
                    direct_pair(qc, s, gm, kd, goff, x, y, b, g, xi, slack, xi + main_bytes, 1);
        cr_scratch_put(xi, cap);
    }
    free(goff);
    return failed;
}

/* 1 for a 1x1 convolution with stride > 1 and no padding (run as subsample_1x1 says). */
static int strided_1x1(const cr_conv_params *p)
{
    return p->kernel_h == 1 && p->kernel_w == 1 && (p->stride_h > 1 || p->stride_w > 1) &&
           !p->pad_top && !p->pad_bottom && !p->pad_left && !p->pad_right;
}

/* A 1x1 convolution with stride > 1 and no padding reads only every stride-th pixel:
 * x (n x Cin x h x w) subsampled into xs (n x Cin x Ho x Wo), so that the stride-1 path
 * (nothing split into phases, nothing read twice) runs on a quarter of the bytes. */
static void subsample_1x1(const cr_conv_shape *s, const uint8_t *x, uint8_t *xs)
{
    const int64_t sh = s->p.stride_h, sw = s->p.stride_w, H = s->h_in, W = s->w_in;
    const int64_t Ho = s->h_out, Wo = s->w_out, planes = s->batch * s->p.in_channels;
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > (1 << 16))
    for (int64_t c = 0; c < planes; c++)
        for (int64_t i = 0; i < Ho; i++) {
            const uint8_t *restrict src = x + (c * H + i * sh) * W;
            uint8_t *restrict dst = xs + (c * Ho + i) * Wo;
            for (int64_t j = 0; j < Wo; j++) dst[j] = src[j * sw];
        }
}

const char *cr_int8_conv_path(const cr_int8_conv *qc, int64_t n, int64_t h, int64_t w)
{
    cr_conv_shape s;
    if (!qc || !qc->w || cr_conv_shape_init(&s, &qc->p, n, h, w) != CR_OK) return "invalid";
    if (strided_1x1(&qc->p)) {
        cr_int8_conv unit = *qc;   /* as cr_int8_conv_run: stride 1 on the subsampled input */
        unit.p.stride_h = unit.p.stride_w = 1;
        return strcmp(cr_int8_conv_path(&unit, n, s.h_out, s.w_out), "packed GEMM") == 0
                   ? "subsampled/packed GEMM" : "subsampled/direct/flat";
    }
    const cr_i8_kernel *dk = cr_i8_direct_kernel(cr_int8_gemm_kernel_for(255), qc->cout_g);
    if (!(dk->kernel_off && qc->wdirect && dk->mr == qc->direct_mr)) return "packed GEMM";
    return make_geom(&s).flat ? "direct/flat" : "direct/phase-split rows";
}

// @snippet qconv_run
cr_status cr_int8_conv_run(const cr_int8_conv *qc, int64_t n, int64_t h, int64_t w, const uint8_t *x,
                       uint8_t *y)
{
    if (!qc || !qc->w || !x || !y) return cr_fail(CR_EINVAL, "cr_int8_conv_run: NULL argument");
    cr_conv_shape s;
    cr_status st = cr_conv_shape_init(&s, &qc->p, n, h, w);
    if (st) return st;
    /* the AVX2 rule needs the largest byte the GEMM will see: the input's or z_x */
    int b_max = 255;
    if (strcmp(cr_int8_gemm_kernel_name(), "avx2") == 0) {
        b_max = cr_u8_max(x, 1, (int64_t)s.x_numel, (int64_t)s.x_numel);
        b_max = b_max > qc->x_zp ? b_max : qc->x_zp;
    }
    const cr_i8_kernel *kd = cr_int8_gemm_kernel_for(b_max);
    const int64_t G = qc->p.groups;
    const cr_conv_params *p = &qc->p;
    if (strided_1x1(p)) {
        /* the same sums on the subsampled input with stride 1 (same weights, same bytes) */
        size_t cap = 0;
        uint8_t *xs = cr_scratch_get((size_t)(s.batch * p->in_channels * s.h_out * s.w_out), &cap);
        if (!xs) return cr_fail(CR_ENOMEM, "cr_int8_conv_run: subsampled input");
        subsample_1x1(&s, x, xs);
        cr_int8_conv unit = *qc;
        unit.p.stride_h = unit.p.stride_w = 1;
        st = cr_int8_conv_run(&unit, n, s.h_out, s.w_out, xs, y);
        cr_scratch_put(xs, cap);
        return st;
    }
#ifdef _OPENMP
    const int T = omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    const int T = 1;
#endif
    const qgeom gm = make_geom(&s);
    const cr_i8_kernel *dk = cr_i8_direct_kernel(kd, qc->cout_g);
    if (dk->kernel_off && qc->wdirect && dk->mr == qc->direct_mr)
        return run_direct(qc, &s, &gm, dk, x, y, T);   /* nothing packed */
    /* the weights packed at prepare time, unless the kernel's layout changed since */
    const int8_t *wpack = qc->wpack;
    size_t gb = qc->pack_group_bytes;
    int8_t *own = NULL;
    if (kd->mr != qc->pack_mr || kd->kc != qc->pack_kc) {
        gb = cr_i8_prepacked_bytes(kd, qc->cout_g, qc->K);
        if (!(own = cr_aligned_alloc(gb * (size_t)G)))
            return cr_fail(CR_ENOMEM, "cr_int8_conv_run: packed weights: %zu bytes", gb * G);
        for (int64_t g = 0; g < G; g++)
            cr_i8_prepack_a(kd, qc->cout_g, qc->K, qc->w + g * qc->cout_g * qc->K, qc->K,
                            own + (size_t)g * gb);
        wpack = own;
    }
    int64_t *koff = malloc((size_t)qc->K * sizeof(int64_t));
    if (!koff) {
        cr_aligned_free(own);
        return cr_fail(CR_ENOMEM, "cr_int8_conv_run: %lld offsets", (long long)qc->K);
    }
    make_koff(&s, &gm, koff);
    /* enough (image, group) pairs: one per thread at a time, each GEMM on one thread */
    const int64_t pairs = n * G;
    const int outer = T > 1 && (pairs % T == 0 || pairs >= 4 * (int64_t)T) ? T : 1;
    cr_status failed = CR_OK;
    if (outer == 1) {   /* pairs one after the other, each GEMM on every thread */
        worker_buf wb;
        if (!worker_alloc(&wb, &gm, &s, kd, qc->K))
            failed = cr_fail(CR_ENOMEM, "cr_int8_conv_run: buffers of a worker");
        for (int64_t b = 0; b < n && !failed; b++)
            for (int64_t g = 0; g < G && !failed; g++)
                failed = conv_pair(qc, &s, &gm, koff, kd, wpack, gb, x, y, b, g, &wb, 0);
        worker_free(&wb);
        free(koff);
        cr_aligned_free(own);
        return failed;
    }
#pragma omp parallel num_threads(outer)
    {                   /* pairs shared by the threads, each GEMM on one thread */
        worker_buf wb;
        const int ok = worker_alloc(&wb, &gm, &s, kd, qc->K);
#pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < n; b++)
            for (int64_t g = 0; g < G; g++) {
                cr_status e = ok ? conv_pair(qc, &s, &gm, koff, kd, wpack, gb, x, y, b, g, &wb, 1)
                                 : cr_fail(CR_ENOMEM, "cr_int8_conv_run: buffers of a worker");
                if (e != CR_OK) {
#pragma omp critical(cr_int8_conv_status)
                    failed = e;
                }
            }
        worker_free(&wb);
    }
    free(koff);
    cr_aligned_free(own);
    return failed;
}
// @end qconv_run

cr_status cr_int8_conv_forward(const cr_int8_conv *qc, const cr_qtensor *x, cr_qtensor *y)
{
    if (!qc || !x || !y) return cr_fail(CR_EINVAL, "cr_int8_conv_forward: NULL argument");
    cr_status st = cr_qparams_check(&x->p, &x->q);
    if (st) return st;
    if (x->q.dtype != CR_DT_U8 || x->q.ndim != 4 || x->p.scheme != CR_QSCHEME_PER_TENSOR)
        return cr_fail(CR_EINVAL, "cr_int8_conv_forward: x: expected a 4-d U8 tensor quantized per "
                       "tensor");
    if (x->p.scale[0] != qc->x_scale || x->p.zero_point[0] != qc->x_zp)
        return cr_fail(CR_EINVAL, "cr_int8_conv_forward: x: scale %g, zero point %d: expected the "
                       "prepared %g, %d", x->p.scale[0], (int)x->p.zero_point[0], qc->x_scale,
                       (int)qc->x_zp);
    cr_conv_shape s;
    if ((st = cr_conv_shape_init(&s, &qc->p, x->q.shape[0], x->q.shape[2], x->q.shape[3])))
        return st;
    if (x->q.shape[1] != qc->p.in_channels)
        return cr_fail(CR_EINVAL, "cr_int8_conv_forward: x has %lld channels, expected %lld",
                       (long long)x->q.shape[1], (long long)qc->p.in_channels);
    cr_qparams yp = {0};
    if ((st = cr_qparams_per_tensor(&yp, CR_DT_U8, qc->y_scale, qc->y_zp))) return st;
    const int64_t shape[4] = {s.batch, qc->p.out_channels, s.h_out, s.w_out};
    st = cr_qtensor_alloc(y, &yp, 4, shape);
    cr_qparams_free(&yp);
    if (st) return st;
    st = cr_int8_conv_run(qc, s.batch, s.h_in, s.w_in, cr_dtensor_u8(&x->q), cr_dtensor_u8(&y->q));
    if (st) cr_qtensor_free(y);
    return st;
}
