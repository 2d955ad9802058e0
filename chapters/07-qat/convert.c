/* convert.c — chapter 7: the int8 model of a QAT-prepared model (see convert.h). */
#include "convert.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "scratch.h"
#include "timing.h"

/* ---- grids -------------------------------------------------------------------------- */

/* nearbyintf(v) (ties to even) for the quantizers, in operations the compiler
 * vectorizes: below 2^22 in magnitude, v + 1.5 * 2^23 lands where the float spacing is
 * 1, so the addition itself rounds to the nearest integer, ties to even; larger
 * magnitudes (clamped by every caller anyway) are held at 2^22, NaN stays NaN. */
static inline float round_even(float v)
{
    const float big = 4194304.0f, magic = 12582912.0f;
    v = v > big ? big : v < -big ? -big : v;
    return (v + magic) - magic;
}

/* clamp(qf, lo, hi) as fminf(fmaxf(qf, lo), hi) gives it, NaN included (lo). */
static inline uint8_t clamp_u8(float qf, float lo, float hi)
{
    return (uint8_t)(qf >= lo ? (qf <= hi ? qf : hi) : lo);
}

/* ---- element-wise spans: written once, compiled for the baseline and for AVX-512 ----
 * Each span function computes its outputs element by element with the float operations
 * written in it (no contraction: -ffp-contract=off), so the vectorized forms give the
 * same bits; the AVX-512 copy (16 floats a vector, where the baseline has SSE2's 4) runs
 * where the CPU has it. Every pointer is restrict: an output byte may alias nothing, or
 * the compiler must reload the scalars after each store and cannot vectorize. */

/* Up to 2^14 elements per call: the parallel loops hand out blocks of this size. */
#define SPAN_BLOCK ((int64_t)1 << 14)

/* q = clamp(zp + round_even(x * inv), lo, hi) for n elements (the fake quantizer's). */
static inline __attribute__((always_inline)) void
quantize_body(const float *restrict x, int64_t n, float inv, float zp, float lo, float hi,
              uint8_t *restrict q)
{
    for (int64_t i = 0; i < n; i++) q[i] = clamp_u8(zp + round_even(x[i] * inv), lo, hi);
}

/* x = (q - zp) * s for n elements. */
static inline __attribute__((always_inline)) void
dequantize_body(const uint8_t *restrict q, int64_t n, float zp, float s, float *restrict x)
{
    for (int64_t i = 0; i < n; i++) x[i] = ((float)q[i] - zp) * s;
}

/* The operands of a quantized add: each input's u8 bytes on a grid (q, zp, scale) or
 * its floats (f, q NULL); the output grid (inv = 1 / scale, zp, lo..hi); relu: the ReLU
 * after the add is fused. */
typedef struct {
    const uint8_t *aq, *bq;
    const float *af, *bf;
    float za, sa, zb, sb, inv, zp, lo, hi;
    int relu;
} add_span;

/* y[k] for k in [o, o + n): the add (a + b, each input dequantized or float), the ReLU
 * (NaN kept) if relu, the output's fake quantizer, as the float model runs them. aq, bq,
 * relu: constants at each call, so that each combination is a loop of its own. */
static inline __attribute__((always_inline)) void
add_body(const add_span *p, int64_t o, int64_t n, uint8_t *restrict y, const int aq,
         const int bq, const int relu)
{
    const uint8_t *restrict qa = aq ? p->aq + o : NULL, *restrict qb = bq ? p->bq + o : NULL;
    const float *restrict fa = aq ? NULL : p->af + o, *restrict fb = bq ? NULL : p->bf + o;
    const float za = p->za, sa = p->sa, zb = p->zb, sb = p->sb, inv = p->inv, zp = p->zp,
                lo = p->lo, hi = p->hi;
    for (int64_t k = 0; k < n; k++) {
        const float x1 = aq ? ((float)qa[k] - za) * sa : fa[k];
        const float x2 = bq ? ((float)qb[k] - zb) * sb : fb[k];
        const float s = x1 + x2;
        const float rl = !relu || s > 0.0f || s != s ? s : 0.0f;
        y[k] = clamp_u8(zp + round_even(rl * inv), lo, hi);
    }
}

/* add_body with the combination of p's inputs and ReLU. */
static inline __attribute__((always_inline)) void
add_dispatch(const add_span *p, int64_t o, int64_t n, uint8_t *y)
{
    const int a = p->aq != NULL, b = p->bq != NULL;
    if (p->relu) {
        if (a && b) add_body(p, o, n, y, 1, 1, 1);
        else if (a) add_body(p, o, n, y, 1, 0, 1);
        else if (b) add_body(p, o, n, y, 0, 1, 1);
        else add_body(p, o, n, y, 0, 0, 1);
    } else {
        if (a && b) add_body(p, o, n, y, 1, 1, 0);
        else if (a) add_body(p, o, n, y, 1, 0, 0);
        else if (b) add_body(p, o, n, y, 0, 1, 0);
        else add_body(p, o, n, y, 0, 0, 0);
    }
}

typedef void (*quantize_fn)(const float *, int64_t, float, float, float, float, uint8_t *);
typedef void (*dequantize_fn)(const uint8_t *, int64_t, float, float, float *);
typedef void (*add_fn)(const add_span *, int64_t, int64_t, uint8_t *);

static void quantize_base(const float *x, int64_t n, float inv, float zp, float lo, float hi,
                          uint8_t *q)
{
    quantize_body(x, n, inv, zp, lo, hi, q);
}

static void dequantize_base(const uint8_t *q, int64_t n, float zp, float s, float *x)
{
    dequantize_body(q, n, zp, s, x);
}

static void add_base(const add_span *p, int64_t o, int64_t n, uint8_t *y)
{
    add_dispatch(p, o, n, y);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SPAN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

SPAN_AVX512 static void quantize_avx512(const float *x, int64_t n, float inv, float zp,
                                        float lo, float hi, uint8_t *q)
{
    quantize_body(x, n, inv, zp, lo, hi, q);
}

SPAN_AVX512 static void dequantize_avx512(const uint8_t *q, int64_t n, float zp, float s,
                                          float *x)
{
    dequantize_body(q, n, zp, s, x);
}

SPAN_AVX512 static void add_avx512(const add_span *p, int64_t o, int64_t n, uint8_t *y)
{
    add_dispatch(p, o, n, y);
}

/* 1 where the CPU runs the AVX-512 spans (and the CR_SPAN_BASELINE environment variable,
 * a test's switch, is unset). */
static int spans_avx512(void)
{
    static int _Atomic known = -1;
    int k = known;
    if (k < 0) {
        __builtin_cpu_init();
        k = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
            !getenv("CR_SPAN_BASELINE");
        known = k;
    }
    return k;
}
#else
static int spans_avx512(void) { return 0; }
#define quantize_avx512 quantize_base
#define dequantize_avx512 dequantize_base
#define add_avx512 add_base
#endif

void cr_qgrid_quantize(const cr_qgrid *g, const float *x, int64_t n, uint8_t *q)
{
    const float inv = 1.0f / g->scale, zp = (float)g->zp, lo = (float)g->qmin,
                hi = (float)g->qmax;
    const quantize_fn f = spans_avx512() ? quantize_avx512 : quantize_base;
    const int64_t blocks = (n + SPAN_BLOCK - 1) / SPAN_BLOCK;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t b = 0; b < blocks; b++)   /* as fq_span: zp + nearbyint(x / scale), clamped */
        f(x + b * SPAN_BLOCK, n - b * SPAN_BLOCK < SPAN_BLOCK ? n - b * SPAN_BLOCK : SPAN_BLOCK,
          inv, zp, lo, hi, q + b * SPAN_BLOCK);
}

void cr_qgrid_dequantize(const cr_qgrid *g, const uint8_t *q, int64_t n, float *x)
{
    const float zp = (float)g->zp, s = g->scale;
    const dequantize_fn f = spans_avx512() ? dequantize_avx512 : dequantize_base;
    const int64_t blocks = (n + SPAN_BLOCK - 1) / SPAN_BLOCK;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t b = 0; b < blocks; b++)
        f(q + b * SPAN_BLOCK, n - b * SPAN_BLOCK < SPAN_BLOCK ? n - b * SPAN_BLOCK : SPAN_BLOCK,
          zp, s, x + b * SPAN_BLOCK);
}

/* The grid an activation quantizer's next fake-quantized forward uses: the fused rule
 * (cr_qparams_choose) on its running min/max, as cr_fake_quant_forward computes it (its
 * scale buffer holds that only after a forward with fake quantization on). */
static cr_status grid_of(const cr_fake_quant *fq, const char *module, cr_qgrid *g)
{
    if (!fq->min_val || !fq->max_val || fq->channels != 1 || fq->dtype != CR_DT_U8 ||
        !(fq->min_val[0] <= fq->max_val[0]))
        return cr_fail(CR_EINVAL, "int8_convert: the activation quantizer of '%s' has no "
                       "parameters: it observed nothing (run a calibration or QAT forward "
                       "before converting)", module);
    g->qmin = fq->qmin;
    g->qmax = fq->qmax;
    cr_status r = cr_qparams_choose(fq->min_val[0], fq->max_val[0], fq->qmin, fq->qmax,
                                    fq->symmetric, &g->scale, &g->zp);
    if (r) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cr_last_error());
        return cr_fail(r, "int8_convert: the activation quantizer of '%s': %s", module, msg);
    }
    return CR_OK;
}

static bool same_grid(const cr_qgrid *a, const cr_qgrid *b)
{
    return a->scale == b->scale && a->zp == b->zp && a->qmin == b->qmin && a->qmax == b->qmax;
}

/* ---- conversion --------------------------------------------------------------------- */

/* Number of modules that read module j's output (as qat.c counts them). */
static int consumers(const cr_model *m, int j)
{
    int c = 0;
    for (int i = j + 1; i < m->n; i++)
        c += (m->mods[i].in == j) + (m->mods[i].kind == CR_MOD_ADD && m->mods[i].in2 == j);
    return c;
}

/* The module whose value holds module k's output in the int8 model. */
static int value_index(const cr_int8_model *im, int k)
{
    if (k < 0) return k;
    const cr_i8_step_kind K = im->steps[k].kind;
    if (K == CR_I8_CONV || K == CR_I8_ADD_RELU) return im->steps[k].end;
    if (K == CR_I8_INSIDE)
        for (int j = k - 1; j >= 0; j--)
            if (im->steps[j].kind == CR_I8_CONV || im->steps[j].kind == CR_I8_ADD_RELU)
                return im->steps[j].end;
    return k;
}

/* The quantized weights (w * sf on the weight quantizer's per-channel grid) and the
 * folded bias of conv site s (module i), then the prepared int8 convolution. */
static cr_status convert_conv(cr_int8_model *im, const cr_qat *q, int i)
{
    cr_model *m = q->m;
    const cr_qat_site *s = &q->sites[i];
    const cr_module *d = &m->mods[i];
    const cr_module *bn = s->bn >= 0 ? &m->mods[s->bn] : NULL;
    cr_i8_step *st = &im->steps[i];
    const cr_fake_quant *wfq = &s->qconv.wfq;
    const int64_t C = d->weight.shape[0];
    const size_t inner = d->weight.numel / (size_t)C;
    if (!wfq->min_val || !wfq->max_val || wfq->channels != C)
        return cr_fail(CR_EINVAL, "int8_convert: the weight quantizer of '%s' has no parameters "
                       "for its %lld channels: it observed nothing (run a forward before "
                       "converting)", d->name, (long long)C);
    double *scale = malloc((size_t)C * sizeof *scale);
    int32_t *zps = calloc((size_t)C, sizeof *zps);
    float *bias = malloc((size_t)C * sizeof *bias), *row = malloc(inner * sizeof *row);
    cr_qparams qp = {0};
    cr_qtensor wt = {0};
    cr_status r = scale && zps && bias && row ? CR_OK
                                              : cr_fail(CR_ENOMEM, "int8_convert: out of memory");
    for (int64_t c = 0; !r && c < C; c++) scale[c] = 1.0;   /* set per channel below */
    if (!r) r = cr_qparams_per_channel(&qp, CR_DT_I8, 0, C, scale, zps);
    if (!r) r = cr_qtensor_alloc(&wt, &qp, 4, d->weight.shape);
    int8_t *wq = r ? NULL : cr_dtensor_i8(&wt.q);
    for (int64_t c = 0; !r && c < C; c++) {
        /* sf and w * sf exactly as cr_qconv_forward computes them */
        const float sd = bn ? sqrtf(bn->running_var.data[c] + (float)bn->bn.eps) : 1.0f;
        const float sf = bn ? bn->weight.data[c] / sd : 1.0f;
        float lo = 0, hi = 0;
        for (size_t k = 0; k < inner; k++) {
            row[k] = d->weight.data[c * inner + k] * sf;
            lo = fminf(lo, row[k]);
            hi = fmaxf(hi, row[k]);
        }
        float sc;
        int32_t zp;
        r = cr_qparams_choose(wfq->min_val[c], wfq->max_val[c], wfq->qmin, wfq->qmax,
                              wfq->symmetric, &sc, &zp);
        if (!r && zp != 0) {   /* a channel of one sign: the symmetric rule, zero point 0 */
            r = cr_qparams_calculate(lo, hi, wfq->qmin, wfq->qmax, true, CR_DT_I8, &sc, &zp);
            im->weight_fallbacks++;
        }
        const float inv = 1.0f / sc;
        for (size_t k = 0; !r && k < inner; k++) {
            const float qf = (float)zp + nearbyintf(row[k] * inv);
            wq[c * inner + k] = (int8_t)fminf(fmaxf(qf, (float)wfq->qmin), (float)wfq->qmax);
        }
        scale[c] = sc;
        wt.p.scale[c] = sc;
        /* conv / sf + b, then the BatchNorm: (. - mean) * gamma / sd + beta */
        const double b = d->conv.bias ? d->bias.data[c] : 0.0;
        bias[c] = bn ? (float)((b - bn->running_mean.data[c]) * bn->weight.data[c] / sd +
                               bn->bias.data[c])
                     : (float)b;
    }
    const bool has_bias = bn || d->conv.bias;
    cr_conv_params p = d->conv;
    p.bias = has_bias;
    if (!r)
        r = cr_int8_conv_prepare(&st->qc, &p, &wt, has_bias ? bias : NULL, st->in.scale,
                                 st->in.zp, st->og.scale, st->og.zp,
                                 m->mods[st->end].kind == CR_MOD_RELU);
    if (!r) st->qc.y_max = st->og.qmax;   /* the output quantizer's range (reduce_range: 127) */
    if (r) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cr_last_error());
        r = cr_fail(r, "int8_convert: module '%s': %s", d->name, msg);
    }
    cr_qtensor_free(&wt);
    cr_qparams_free(&qp);
    free(scale);
    free(zps);
    free(bias);
    free(row);
    return r;
}

/* Plans module i: a quantized conv group (its end, its input and output grids), or a
 * float module with or without an output quantizer. gr: the quantizer each output lies
 * on (NULL: none). */
static cr_status plan_module(cr_int8_model *im, const cr_qat *q, int i,
                             const cr_fake_quant *const *gr)
{
    const cr_model *m = q->m;
    const cr_qat_site *s = &q->sites[i];
    const cr_module *d = &m->mods[i];
    cr_i8_step *st = &im->steps[i];
    if (d->kind == CR_MOD_ADD && !s->output && i + 1 < m->n &&
        m->mods[i + 1].kind == CR_MOD_RELU && m->mods[i + 1].in == i && consumers(m, i) == 1 &&
        q->sites[i + 1].output && !q->sites[i + 1].out_share) {
        st->kind = CR_I8_ADD_RELU;   /* the quantized add + ReLU in one pass */
        st->end = i + 1;
        st->out = true;
        im->steps[i + 1].kind = CR_I8_INSIDE;
        return grid_of(gr[i + 1], m->mods[i + 1].name, &st->og);
    }
    if (!s->conv) {
        st->kind = CR_I8_FLOAT;
        st->out = s->output;
        st->out_shared = s->output && s->out_share;
        return s->output ? grid_of(gr[i], d->name, &st->og) : CR_OK;
    }
    int e = s->bn >= 0 ? s->bn : i;
    if (e + 1 < m->n && m->mods[e + 1].kind == CR_MOD_RELU && m->mods[e + 1].in == e &&
        consumers(m, e) == 1)
        e++;
    if (!q->sites[e].output || q->sites[e].out_share)
        return cr_fail(CR_EINVAL, "int8_convert: the group of '%s' ends at '%s', which has no "
                       "output quantizer of its own", d->name, m->mods[e].name);
    st->kind = CR_I8_CONV;
    st->end = e;
    st->out = true;
    for (int k = i + 1; k <= e; k++) im->steps[k].kind = CR_I8_INSIDE;
    cr_status r = grid_of(gr[e], m->mods[e].name, &st->og);
    const cr_fake_quant *in = s->input ? &s->in_fq : d->in >= 0 ? gr[d->in] : NULL;
    st->in_own = s->input;
    if (!r && !in)
        r = cr_fail(CR_EINVAL, "int8_convert: the input of '%s' is on no grid", d->name);
    if (!r) r = grid_of(in, d->name, &st->in);
    if (!r) r = convert_conv(im, q, i);
    im->convs++;
    return r;
}

cr_status cr_int8_convert(cr_int8_model *im, const cr_qat *q)
{
    if (!im) return cr_fail(CR_EINVAL, "int8_convert: im is NULL");
    memset(im, 0, sizeof *im);
    if (!q || !q->m || !q->sites || q->n != q->m->n || q->n == 0)
        return cr_fail(CR_EINVAL, "int8_convert: q is not prepared on a model (cr_qat_prepare)");
    cr_model *m = q->m;
    const int n = m->n;
    im->m = m;
    im->n = n;
    im->steps = calloc((size_t)n, sizeof *im->steps);
    im->vals = calloc((size_t)n, sizeof *im->vals);
    im->readers = calloc((size_t)n, sizeof *im->readers);
    im->left = calloc((size_t)n, sizeof *im->left);
    im->prof_s = calloc((size_t)n, sizeof *im->prof_s);
    im->prof_cvt_s = calloc((size_t)n, sizeof *im->prof_cvt_s);
    const cr_fake_quant **gr = calloc((size_t)n, sizeof *gr);
    if (!im->steps || !im->vals || !im->readers || !im->left || !im->prof_s ||
        !im->prof_cvt_s || !gr) {
        free(gr);
        return cr_fail(CR_ENOMEM, "int8_convert: out of memory");
    }
    for (int i = 0; i < n; i++) {   /* the grid of every output, as cr_qat_prepare's */
        const cr_qat_site *s = &q->sites[i];
        const cr_module *d = &m->mods[i];
        if (s->output) gr[i] = s->out_share ? s->out_share : &s->out_fq;
        else if (d->in >= 0 && (d->kind == CR_MOD_RELU ||
                                (d->kind == CR_MOD_UPSAMPLE && d->up.mode == CR_UPSAMPLE_NEAREST)))
            gr[i] = gr[d->in];
    }
    cr_status r = CR_OK;
    for (int i = 0; !r && i < n; i++) {
        if (im->steps[i].kind == CR_I8_INSIDE) continue;
        r = plan_module(im, q, i, gr);
        if (!r && m->mods[i].kind == CR_MOD_CONV && !q->sites[i].conv) im->float_convs++;
    }
    free(gr);
    for (int i = 0; !r && i < n; i++) {   /* readers, through the groups */
        const cr_module *d = &m->mods[i];
        if (im->steps[i].kind == CR_I8_INSIDE) continue;
        if (d->in >= 0) im->readers[value_index(im, d->in)]++;
        if (d->kind == CR_MOD_ADD && d->in2 >= 0) im->readers[value_index(im, d->in2)]++;
    }
    return r;
}

/* ---- buffers: a pool the outputs' storage returns to, so that a forward after the first
 * allocates nothing (and touches no fresh pages) ---------------------------------------- */

/* A buffer of at least bytes from the pool (the smallest that fits), else a new one. */
static void *pool_take(cr_int8_model *im, size_t bytes, size_t *cap)
{
    int best = -1;
    for (int k = 0; k < im->pool_n; k++)
        if (im->pool_cap[k] >= bytes && (best < 0 || im->pool_cap[k] < im->pool_cap[best]))
            best = k;
    if (best >= 0) {
        void *p = im->pool_ptr[best];
        *cap = im->pool_cap[best];
        im->pool_n--;
        im->pool_ptr[best] = im->pool_ptr[im->pool_n];
        im->pool_cap[best] = im->pool_cap[im->pool_n];
        return p;
    }
    void *p = cr_aligned_alloc(bytes ? bytes : 1);
    *cap = p ? bytes : 0;
    return p;
}

/* Returns a buffer to the pool (freed when the pool cannot grow). */
static void pool_give(cr_int8_model *im, void *p, size_t cap)
{
    if (!p) return;
    if (im->pool_n == im->pool_max) {
        const int nm = im->pool_max ? 2 * im->pool_max : 16;
        void **np = realloc(im->pool_ptr, (size_t)nm * sizeof *np);
        if (np) im->pool_ptr = np;
        size_t *nc = np ? realloc(im->pool_cap, (size_t)nm * sizeof *nc) : NULL;
        if (nc) im->pool_cap = nc;
        if (!np || !nc) {
            cr_aligned_free(p);
            return;
        }
        im->pool_max = nm;
    }
    im->pool_ptr[im->pool_n] = p;
    im->pool_cap[im->pool_n++] = cap;
}

/* Returns one value's buffers to the pool (its shape stays: up-samplings may read it). */
static void value_release(cr_int8_model *im, cr_i8_value *v)
{
    pool_give(im, v->f.data, v->f_cap);
    pool_give(im, v->q, v->q_cap);
    memset(&v->f, 0, sizeof v->f);
    v->q = NULL;
    v->f_cap = v->q_cap = 0;
    v->has_f = v->has_q = false;
}

void cr_int8_model_free(cr_int8_model *im)
{
    if (!im) return;
    for (int i = 0; im->steps && i < im->n; i++) cr_int8_conv_free(&im->steps[i].qc);
    for (int i = 0; im->vals && i < im->n; i++) {
        cr_aligned_free(im->vals[i].f.data);
        cr_aligned_free(im->vals[i].q);
    }
    for (int k = 0; k < im->pool_n; k++) cr_aligned_free(im->pool_ptr[k]);
    free(im->pool_ptr);
    free(im->pool_cap);
    cr_aligned_free(im->qin);
    free(im->steps);
    free(im->vals);
    free(im->readers);
    free(im->left);
    free(im->prof_s);
    free(im->prof_cvt_s);
    memset(im, 0, sizeof *im);
    cr_scratch_release();   /* the convolutions' kept scratch (lib's pool; idle buffers only) */
}

/* ---- forward ------------------------------------------------------------------------ */

/* The forward's state beyond the model: its input and the norms' statistics. */
typedef struct {
    cr_int8_model *im;
    const cr_tensor *x;
    cr_tensor save_a, save_b;   /* norms' statistics (not used after) */
    double cvt_s;               /* profile: seconds of u8 <-> float conversions so far */
} fwd_ctx;

/* A clock read when the model is profiled, else 0. */
static double prof_now(const cr_int8_model *im)
{
    return im->profile ? cr_now() : 0.0;
}

/* Makes t a rank-1 tensor of n floats (kept when it already is). */
static cr_status ensure1(cr_tensor *t, int64_t n)
{
    if (t->data && t->ndim == 1 && t->shape[0] == n) return CR_OK;
    cr_tensor_free(t);
    const int64_t shape[1] = {n};
    return cr_tensor_alloc(t, 1, shape);
}

/* Makes v's float tensor N x C x H x W (storage from the pool unless it fits already). */
static cr_status value_alloc_f(cr_int8_model *im, cr_i8_value *v, const int64_t shape[4])
{
    memcpy(v->shape, shape, sizeof v->shape);
    const size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    if (!v->f.data || v->f_cap < n * sizeof(float)) {
        pool_give(im, v->f.data, v->f_cap);
        v->f.data = pool_take(im, n * sizeof(float), &v->f_cap);
        if (!v->f.data)
            return cr_fail(CR_ENOMEM, "int8_forward: out of memory for %zu floats", n);
    }
    v->f.ndim = 4;
    memcpy(v->f.shape, shape, sizeof v->shape);
    v->f.numel = n;
    return CR_OK;
}

/* Makes v's u8 buffer hold n bytes. */
static cr_status value_alloc_q(cr_int8_model *im, cr_i8_value *v, size_t n)
{
    if (v->q && v->q_cap >= n) return CR_OK;
    pool_give(im, v->q, v->q_cap);
    v->q = pool_take(im, n, &v->q_cap);
    return v->q ? CR_OK : cr_fail(CR_ENOMEM, "int8_forward: out of memory for %zu bytes", n);
}

static size_t shape_numel(const int64_t s[4])
{
    return (size_t)(s[0] * s[1] * s[2] * s[3]);
}

/* Module k's output as float (dequantized from u8 on first use). */
static cr_status value_float(fwd_ctx *c, int k, const cr_tensor **t)
{
    if (k == CR_MODEL_INPUT) {
        *t = c->x;
        return CR_OK;
    }
    if (c->im->teacher) {   /* tests: the float model's output of the same module */
        *t = &c->im->teacher->mods[k].out;
        return (*t)->data ? CR_OK : cr_fail(CR_EINVAL, "int8_forward: the teacher has no "
                                            "output for '%s'", c->im->m->mods[k].name);
    }
    cr_i8_value *v = &c->im->vals[value_index(c->im, k)];
    if (!v->has_f) {
        if (!v->has_q)
            return cr_fail(CR_EINVAL, "int8_forward: module '%s' read before it ran",
                           c->im->m->mods[k].name);
        cr_status r = value_alloc_f(c->im, v, v->shape);
        if (r) return r;
        const double t0 = prof_now(c->im);
        cr_qgrid_dequantize(&v->g, v->q, (int64_t)shape_numel(v->shape), v->f.data);
        c->cvt_s += prof_now(c->im) - t0;
        v->has_f = true;
    }
    *t = &v->f;
    return CR_OK;
}

/* Module k's output as u8 on grid g: its own bytes if it lies on g, else its float
 * values quantized (into the context's scratch). */
static cr_status value_u8(fwd_ctx *c, int k, const cr_qgrid *g, const uint8_t **q,
                          int64_t shape[4])
{
    if (k != CR_MODEL_INPUT && !c->im->teacher) {
        cr_i8_value *v = &c->im->vals[value_index(c->im, k)];
        if (v->has_q && same_grid(&v->g, g)) {
            *q = v->q;
            memcpy(shape, v->shape, 4 * sizeof *shape);
            return CR_OK;
        }
    }
    const cr_tensor *t;
    cr_status r = value_float(c, k, &t);
    if (r) return r;
    if (t->ndim != 4) return cr_fail(CR_EINVAL, "int8_forward: expected an N x C x H x W input");
    cr_int8_model *im = c->im;
    if (im->qin_cap < t->numel) {
        cr_aligned_free(im->qin);
        im->qin = cr_aligned_alloc(t->numel);
        im->qin_cap = im->qin ? t->numel : 0;
        if (!im->qin) return cr_fail(CR_ENOMEM, "int8_forward: out of memory");
    }
    const double t0 = prof_now(im);
    cr_qgrid_quantize(g, t->data, (int64_t)t->numel, im->qin);
    c->cvt_s += prof_now(im) - t0;
    memcpy(shape, t->shape, 4 * sizeof *shape);
    *q = im->qin;
    return CR_OK;
}

// @snippet int8_group
/* A quantized group: the int8 convolution into the group end's u8 value. */
static cr_status run_conv(fwd_ctx *c, int i)
{
    cr_int8_model *im = c->im;
    const cr_i8_step *st = &im->steps[i];
    const cr_module *d = &im->m->mods[i];
    const uint8_t *xq = NULL;
    int64_t xs[4];
    cr_status r = value_u8(c, d->in, &st->in, &xq, xs);
    if (r) return r;
    cr_conv_shape cs;
    if ((r = cr_conv_shape_init(&cs, &d->conv, xs[0], xs[2], xs[3]))) return r;
    cr_i8_value *v = &im->vals[st->end];
    const int64_t ys[4] = {xs[0], d->conv.out_channels, cs.h_out, cs.w_out};
    memcpy(v->shape, ys, sizeof ys);
    const size_t ny = shape_numel(ys);
    if ((r = value_alloc_q(im, v, ny)) ||   /* (clamped to og.qmax by the convolution) */
        (r = cr_int8_conv_run(&st->qc, xs[0], xs[2], xs[3], xq, v->q)))
        return r;
    v->g = st->og;
    v->has_q = true;
    v->has_f = false;
    return CR_OK;
}
// @end int8_group

/* A float module on dequantized values, exactly as the model's evaluation forward runs it
 * (module_forward in model.c), into v (float). */
static cr_status float_op(fwd_ctx *c, int i, cr_i8_value *v)
{
    cr_int8_model *im = c->im;
    cr_module *d = &im->m->mods[i];
    const cr_tensor *x = NULL;
    cr_status r = value_float(c, d->in, &x);
    if (r) return r;
    if (x->ndim != 4) return cr_fail(CR_EINVAL, "int8_forward: '%s' has no 4-d input", d->name);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t ys[4] = {N, C, H, W};
    switch (d->kind) {
    case CR_MOD_CONV: {
        cr_conv_shape cs;
        if ((r = cr_conv_shape_init(&cs, &d->conv, N, H, W))) return r;
        ys[1] = d->conv.out_channels, ys[2] = cs.h_out, ys[3] = cs.w_out;
        if ((r = value_alloc_f(im, v, ys))) return r;
        return im->m->conv_forward(&d->conv, x, &d->weight, d->conv.bias ? &d->bias : NULL, &v->f);
    }
    case CR_MOD_BATCHNORM:
        if ((r = value_alloc_f(im, v, ys)) || (r = ensure1(&c->save_a, C)) ||
            (r = ensure1(&c->save_b, C)))
            return r;
        r = cr_batchnorm2d_forward(&d->bn, false, x, &d->weight, &d->bias, &d->running_mean,
                                   &d->running_var, &v->f, &c->save_a, &c->save_b);
        break;
    case CR_MOD_GROUPNORM:
        if ((r = value_alloc_f(im, v, ys)) || (r = ensure1(&c->save_a, N * d->groups)) ||
            (r = ensure1(&c->save_b, N * d->groups)))
            return r;
        r = cr_groupnorm_forward(d->groups, d->eps, x, &d->weight, &d->bias, &v->f, &c->save_a,
                                 &c->save_b);
        break;
    case CR_MOD_RELU:
        if (!(r = value_alloc_f(im, v, ys))) r = cr_relu_forward(x, &v->f);
        break;
    case CR_MOD_MAXPOOL:
        if ((r = cr_maxpool2d_out_size(&d->pool, H, W, &ys[2], &ys[3])) ||
            (r = value_alloc_f(im, v, ys)))
            return r;
        r = cr_maxpool2d_forward(&d->pool, x, &v->f, NULL);
        break;
    case CR_MOD_AVGPOOL:
        ys[2] = ys[3] = 1;
        if (!(r = value_alloc_f(im, v, ys))) r = cr_global_avgpool_forward(x, &v->f);
        break;
    case CR_MOD_UPSAMPLE: {
        cr_upsample_params up = d->up;
        if (d->up_like >= 0) {   /* another module's output size */
            const cr_i8_value *like = &im->vals[value_index(im, d->up_like)];
            up.out_h = like->shape[2];
            up.out_w = like->shape[3];
            up.scale_h = up.scale_w = 0;
        }
        if ((r = cr_upsample_out_size(&up, H, W, &ys[2], &ys[3])) || (r = value_alloc_f(im, v, ys)))
            return r;
        r = cr_upsample_forward(&up, x, &v->f);
        break;
    }
    case CR_MOD_ADD: {
        const cr_tensor *b;
        if ((r = value_float(c, d->in2, &b)) || (r = value_alloc_f(im, v, ys))) return r;
        r = cr_add_forward(x, b, &v->f);
        break;
    }
    case CR_MOD_DROPOUT:   /* evaluation: the identity */
        if (!(r = value_alloc_f(im, v, ys))) cr_copy_f(v->f.data, x->data, (int64_t)x->numel);
        break;
    }
    return r;
}

/* cr_u8_maxpool: windows clipped to the plane as cr_maxpool2d_forward clips them; per
 * output row, the maximum over the window's rows first (whole rows: a loop the compiler
 * vectorizes, into col), then over each window's columns of col. */
cr_status cr_u8_maxpool(const cr_pool_params *p, int64_t planes, int64_t H, int64_t W,
                        int64_t Ho, int64_t Wo, const uint8_t *x, uint8_t qmin, uint8_t qmax,
                        uint8_t *y)
{
    cr_status r = CR_OK;
#pragma omp parallel if (planes * Ho * Wo > (1 << 16))
    {
        uint8_t *col = malloc((size_t)W);
        if (!col) {
#pragma omp critical(cr_u8_maxpool)
            r = cr_fail(CR_ENOMEM, "int8_forward: max-pool row of %lld bytes", (long long)W);
        }
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const uint8_t *xp = x + pl * H * W;
            for (int64_t oh = 0; oh < Ho && col; oh++) {
                const int64_t h0 = oh * p->stride_h - p->pad_h;
                const int64_t i0 = h0 > 0 ? h0 : 0, i1 = h0 + p->kernel_h < H ? h0 + p->kernel_h : H;
                memcpy(col, xp + i0 * W, (size_t)W);
                for (int64_t i = i0 + 1; i < i1; i++) {
                    const uint8_t *restrict src = xp + i * W;
                    uint8_t *restrict dst = col;
                    for (int64_t j = 0; j < W; j++) dst[j] = src[j] > dst[j] ? src[j] : dst[j];
                }
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const int64_t w0 = ow * p->stride_w - p->pad_w;
                    const int64_t j0 = w0 > 0 ? w0 : 0, j1 = w0 + p->kernel_w < W ? w0 + p->kernel_w : W;
                    uint8_t best = 0;
                    for (int64_t j = j0; j < j1; j++) best = col[j] > best ? col[j] : best;
                    y[(pl * Ho + oh) * Wo + ow] = best < qmin ? qmin : best > qmax ? qmax : best;
                }
            }
        }
        free(col);
    }
    return r;
}

/* A max-pool whose output lies on its input's grid, on the input's bytes: the
 * dequantization is non-decreasing, so the float maximum is the maximum byte's value,
 * and quantizing a grid value to its own grid gives its byte back; the bytes equal the
 * float path's without its dequantize, pool and quantize passes. 0: not this case. */
static int run_maxpool_u8(fwd_ctx *c, int i, cr_status *r)
{
    cr_int8_model *im = c->im;
    const cr_i8_step *st = &im->steps[i];
    const cr_module *d = &im->m->mods[i];
    if (d->kind != CR_MOD_MAXPOOL || !st->out || im->teacher || d->in < 0) return 0;
    const cr_i8_value *x = &im->vals[value_index(im, d->in)];
    if (!x->has_q || !same_grid(&x->g, &st->og)) return 0;
    int64_t ys[4] = {x->shape[0], x->shape[1], 0, 0};
    cr_i8_value *v = &im->vals[i];
    if ((*r = cr_maxpool2d_out_size(&d->pool, x->shape[2], x->shape[3], &ys[2], &ys[3])) ||
        (*r = value_alloc_q(im, v, shape_numel(ys))))
        return 1;
    memcpy(v->shape, ys, sizeof ys);
    if ((*r = cr_u8_maxpool(&d->pool, ys[0] * ys[1], x->shape[2], x->shape[3], ys[2], ys[3],
                         x->q, (uint8_t)st->og.qmin, (uint8_t)st->og.qmax, v->q)))
        return 1;
    v->g = st->og;
    v->has_q = true;
    return 1;
}

static cr_status run_add_quant(fwd_ctx *c, int i, cr_i8_value *v, const cr_qgrid *og,
                               int relu);

/* A float module, then its output quantizer (u8 kept; floats on the grid made on demand). */
static cr_status run_float(fwd_ctx *c, int i)
{
    cr_int8_model *im = c->im;
    const cr_i8_step *st = &im->steps[i];
    cr_i8_value *v = &im->vals[i];
    v->has_f = v->has_q = false;
    cr_status r = CR_OK;
    if (run_maxpool_u8(c, i, &r)) return r;
    if (im->m->mods[i].kind == CR_MOD_ADD && st->out)   /* the FPN's merges: u8 out */
        return run_add_quant(c, i, v, &st->og, 0);
    r = float_op(c, i, v);
    if (r) return r;
    v->has_f = true;
    if (!st->out) return CR_OK;
    const size_t n = v->f.numel;
    if ((r = value_alloc_q(im, v, n))) return r;
    const double t0 = prof_now(im);
    cr_qgrid_quantize(&st->og, v->f.data, (int64_t)n, v->q);
    c->cvt_s += prof_now(im) - t0;
    v->g = st->og;
    v->has_q = true;
    v->has_f = false;   /* the floats are dequantized again where a float module reads them */
    return CR_OK;
}

/* One input of a fused add: its u8 bytes and grid if it has them, else its floats. */
typedef struct {
    const uint8_t *q;
    const float *f;
    float zp, scale;
} add_input;

static cr_status add_input_of(fwd_ctx *c, int k, add_input *a, int64_t shape[4])
{
    memset(a, 0, sizeof *a);
    if (k != CR_MODEL_INPUT && !c->im->teacher) {
        const cr_i8_value *v = &c->im->vals[value_index(c->im, k)];
        if (v->has_q) {
            a->q = v->q;
            a->zp = (float)v->g.zp;
            a->scale = v->g.scale;
            memcpy(shape, v->shape, 4 * sizeof *shape);
            return CR_OK;
        }
    }
    const cr_tensor *t = NULL;
    cr_status r = value_float(c, k, &t);
    if (r) return r;
    a->f = t->data;
    memcpy(shape, t->shape, 4 * sizeof *shape);
    return CR_OK;
}

/* An add (+ ReLU if relu) and its output quantizer in one pass into v: the same float
 * operations as the model's add (a + b), ReLU (v > 0 ? v : 0) and fake quantizer, on
 * the inputs' bytes dequantized on the fly (or their floats): no float tensor is made
 * for an input on a grid or for the sum. */
static cr_status run_add_quant(fwd_ctx *c, int i, cr_i8_value *v, const cr_qgrid *og,
                               int relu)
{
    cr_int8_model *im = c->im;
    const cr_module *d = &im->m->mods[i];
    add_input a, b;
    int64_t sa[4], sb[4];
    cr_status r;
    if ((r = add_input_of(c, d->in, &a, sa)) || (r = add_input_of(c, d->in2, &b, sb))) return r;
    if (memcmp(sa, sb, sizeof sa) != 0)
        return cr_fail(CR_EINVAL, "int8_forward: '%s' adds tensors of different shapes", d->name);
    const int64_t n = (int64_t)shape_numel(sa);
    if ((r = value_alloc_q(im, v, (size_t)n))) return r;
    memcpy(v->shape, sa, sizeof sa);
    const add_span p = {a.q, b.q, a.f, b.f, a.zp, a.scale, b.zp, b.scale, 1.0f / og->scale,
                        (float)og->zp, (float)og->qmin, (float)og->qmax, relu};
    const add_fn f = spans_avx512() ? add_avx512 : add_base;
    const int64_t blocks = (n + SPAN_BLOCK - 1) / SPAN_BLOCK;
    uint8_t *y = v->q;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t k = 0; k < blocks; k++) {
        const int64_t o = k * SPAN_BLOCK;
        f(&p, o, n - o < SPAN_BLOCK ? n - o : SPAN_BLOCK, y + o);
    }
    v->g = *og;
    v->has_q = true;
    v->has_f = false;
    return CR_OK;
}

/* add + ReLU + the ReLU's quantizer (a bottleneck's end) into the ReLU's value. */
static cr_status run_add_relu(fwd_ctx *c, int i)
{
    const cr_i8_step *st = &c->im->steps[i];
    return run_add_quant(c, i, &c->im->vals[st->end], &st->og, 1);
}

/* After module i: frees the outputs whose last reader it was. */
static void release_inputs(cr_int8_model *im, int i)
{
    const cr_module *d = &im->m->mods[i];
    int in[2] = {d->in, d->kind == CR_MOD_ADD ? d->in2 : -1};
    for (int k = 0; k < 2; k++) {
        if (in[k] < 0 || (k == 1 && in[1] == in[0])) continue;
        const int j = value_index(im, in[k]);
        if (--im->left[j] <= 0 && j != value_index(im, im->n - 1) && !im->keep)
            value_release(im, &im->vals[j]);
    }
}

cr_status cr_int8_forward(cr_int8_model *im, const cr_tensor *x, const cr_tensor **out)
{
    if (!im || !im->steps || !im->m || im->m->n != im->n)
        return cr_fail(CR_EINVAL, "int8_forward: im is not a converted model");
    if (!x || !x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "int8_forward: x must be an N x C x H x W tensor");
    fwd_ctx c = {.im = im, .x = x};
    cr_status r = CR_OK;
    for (int i = 0; i < im->n; i++) {
        im->vals[i].has_f = im->vals[i].has_q = false;
        im->left[i] = im->readers[i];
    }
    for (int i = 0; !r && i < im->n; i++) {
        const cr_i8_step *st = &im->steps[i];
        if (st->kind == CR_I8_INSIDE) continue;
        const double t0 = prof_now(im), cvt0 = c.cvt_s;
        r = st->kind == CR_I8_CONV       ? run_conv(&c, i)
            : st->kind == CR_I8_ADD_RELU ? run_add_relu(&c, i)
                                         : run_float(&c, i);
        if (!r) release_inputs(im, i);
        if (im->profile) {
            im->prof_s[i] += cr_now() - t0;
            im->prof_cvt_s[i] += c.cvt_s - cvt0;
        }
    }
    const cr_tensor *y = NULL;
    const double t0 = prof_now(im), cvt0 = c.cvt_s;
    if (!r) r = value_float(&c, im->n - 1, &y);
    if (im->profile && im->n > 0) {   /* the last output's floats: the last module's */
        im->prof_s[im->n - 1] += cr_now() - t0;
        im->prof_cvt_s[im->n - 1] += c.cvt_s - cvt0;
    }
    cr_tensor_free(&c.save_a);
    cr_tensor_free(&c.save_b);
    if (!r && out) *out = y;
    return r;
}

void cr_int8_profile_reset(cr_int8_model *im)
{
    for (int i = 0; im && im->prof_s && i < im->n; i++) im->prof_s[i] = im->prof_cvt_s[i] = 0;
}

const cr_i8_value *cr_int8_value_of(const cr_int8_model *im, int i)
{
    if (!im || i < 0 || i >= im->n || im->steps[i].kind == CR_I8_INSIDE) return NULL;
    i = value_index(im, i);
    const cr_i8_value *v = &im->vals[i];
    return v->has_f || v->has_q ? v : NULL;
}

int64_t cr_int8_model_bytes(const cr_int8_model *im)
{
    int64_t b = 0;
    for (int i = 0; i < im->n; i++) {
        const cr_module *d = &im->m->mods[i];
        const cr_i8_step *st = &im->steps[i];
        if (st->kind == CR_I8_CONV) {
            /* weights, per channel scale and s32 bias, the output grid, its own input grid */
            b += (int64_t)d->weight.numel + 8 * d->conv.out_channels + 8 + (st->in_own ? 8 : 0);
        } else if (st->kind == CR_I8_FLOAT) {
            if (d->weight.data) b += 4 * (int64_t)d->weight.numel;
            if (d->bias.data) b += 4 * (int64_t)d->bias.numel;
            if (st->out && !st->out_shared) b += 8;
        } else if (st->kind == CR_I8_ADD_RELU) {
            b += 8;
        }
    }
    return b;
}
