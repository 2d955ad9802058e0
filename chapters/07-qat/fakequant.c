/* fakequant.c — chapter 7: scale and zero point, fake quantization and its straight-
 * through gradient, the moving-average observers (see fakequant.h).
 *
 * Every float operation here is written in the order and the precision PyTorch 1.13's
 * kernels use, and the library is compiled with -ffp-contract=off: a fused multiply-add
 * would round once where PyTorch rounds twice, and the golden tests compare bits. */
#include "fakequant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ATen's SMALL_SCALE_THRESHOLD: smaller scales are raised to it (the range stretched). */
#define SMALL_SCALE 6.1e-5f

/* Fails with status, prefixing the last error's message with who and channel c (the
 * message is copied first: cr_fail writes into the buffer cr_last_error returns). */
static cr_status fail_channel(cr_status status, const char *who, int64_t c)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", cr_last_error());
    return cr_fail(status, "%s: channel %lld: %s", who, (long long)c, msg);
}

/* Checks the common arguments of the two scale rules. */
static cr_status check_range(float min, float max, int32_t qmin, int32_t qmax, const char *who)
{
    if (!(qmin < qmax))
        return cr_fail(CR_EINVAL, "%s: qmin %d must be below qmax %d", who, (int)qmin, (int)qmax);
    if (isnan(min) || isnan(max) || !(min <= max))
        return cr_fail(CR_EINVAL, "%s: min %g must be <= max %g (and neither NaN)", who,
                       (double)min, (double)max);
    return CR_OK;
}

// @snippet qparams_choose
cr_status cr_qparams_choose(float min, float max, int32_t qmin, int32_t qmax, bool symmetric,
                            float *scale, int32_t *zero_point)
{
    cr_status st = check_range(min, max, qmin, qmax, "qparams_choose");
    if (st) return st;
    if (min < 0 && max > 0 && symmetric) {   /* the signed grid: -128 * s .. 127 * s */
        const int sym_qmin = -((qmax - qmin) / 2 + 1), sym_qmax = (qmax - qmin) / 2;
        const double max_scale = fmaxf(fabsf(min / (float)sym_qmin), fabsf(max / (float)sym_qmax));
        min = (float)(max_scale * sym_qmin);
        max = (float)(max_scale * sym_qmax);
    }
    min = fminf(min, 0.0f);                  /* the range must hold 0 exactly */
    max = fmaxf(max, 0.0f);
    double s = ((double)max - min) / (qmax - qmin);
    if ((float)s == 0.0f || isinf(1.0f / (float)s)) s = 0.1;
    if (s < SMALL_SCALE) {                   /* too fine: raise it, stretch the range */
        const float org = (float)s;
        s = SMALL_SCALE;
        if (min == 0.0f) {
            max = SMALL_SCALE * (float)(qmax - qmin);
        } else if (max == 0.0f) {
            min = -SMALL_SCALE * (float)(qmax - qmin);
        } else {
            const float amplifier = SMALL_SCALE / org;
            min *= amplifier;
            max *= amplifier;
        }
    }
    /* the zero point from the end whose arithmetic adds the smaller terms */
    const double zp_min = qmin - min / s, zp_max = qmax - max / s;
    const double err_min = abs(qmin) - fabs(min / s), err_max = abs(qmax) - fabs(max / s);
    double zp = err_min < err_max ? zp_min : zp_max;
    if (min < 0 && max > 0 && symmetric) zp = (double)(qmin + qmax) / 2;
    int32_t nudged;
    if (zp < qmin) nudged = qmin;
    else if (zp > qmax) nudged = qmax;
    else nudged = (int32_t)nearbyint(zp);
    *scale = (float)s;                       /* the scale buffer is float32 */
    *zero_point = nudged;
    return CR_OK;
}
// @end qparams_choose

// @snippet qparams_calculate
cr_status cr_qparams_calculate(float min, float max, int32_t qmin, int32_t qmax,
                               bool symmetric, cr_dtype dtype, float *scale,
                               int32_t *zero_point)
{
    if (min == INFINITY && max == -INFINITY) {   /* never observed: PyTorch's default */
        *scale = 1.0f;
        *zero_point = 0;
        return CR_OK;
    }
    cr_status st = check_range(min, max, qmin, qmax, "qparams_calculate");
    if (st) return st;
    // @solution qparams_calculate: the observer's scale and zero point, float32 as PyTorch
    const float min_neg = fminf(min, 0.0f), max_pos = fmaxf(max, 0.0f);
    if (symmetric) {
        const float half = (float)((double)(qmax - qmin) / 2);
        *scale = fmaxf(fmaxf(-min_neg, max_pos) / half, FLT_EPSILON);
        *zero_point = dtype == CR_DT_U8 ? (qmin + qmax) / 2 : 0;
    } else {
        *scale = fmaxf((max_pos - min_neg) / (float)(qmax - qmin), FLT_EPSILON);
        const int32_t zp = qmin - (int32_t)nearbyintf(min_neg / *scale);
        *zero_point = zp < qmin ? qmin : zp > qmax ? qmax : zp;
    }
    return CR_OK;
    // @stub
    // (void)symmetric; (void)dtype; (void)scale; (void)zero_point;
    // return cr_todo("qparams_calculate");
    // @end-solution
}
// @end qparams_calculate

/* Checks y against x (same numel, both allocated). */
static cr_status check_xy(const cr_tensor *x, const cr_tensor *y, const char *who)
{
    if (!x || !x->data || !y || !y->data)
        return cr_fail(CR_EINVAL, "%s: x and y must be allocated tensors", who);
    if (x->numel != y->numel)
        return cr_fail(CR_EINVAL, "%s: y has %zu elements, x has %zu", who, y->numel, x->numel);
    return CR_OK;
}

/* Checks one (scale, zero point) pair and the range. */
static cr_status check_qp(float scale, int32_t zp, int32_t qmin, int32_t qmax, const char *who)
{
    if (!(qmin < qmax))
        return cr_fail(CR_EINVAL, "%s: qmin %d must be below qmax %d", who, (int)qmin, (int)qmax);
    if (!(scale > 0) || isinf(scale) || isinf(1.0f / scale))
        return cr_fail(CR_EINVAL, "%s: scale %g must be finite and > 0 with a finite reciprocal",
                       who, (double)scale);
    if (zp < qmin || zp > qmax)
        return cr_fail(CR_EINVAL, "%s: zero point %d outside [%d, %d]", who, (int)zp, (int)qmin,
                       (int)qmax);
    return CR_OK;
}

// @snippet fake_quantize
/* Fake-quantizes n floats with one scale and zero point (ATen's cachemask kernel). */
static cr_status fq_span(const float *x, size_t n, float scale, int32_t zp, int32_t qmin,
                         int32_t qmax, float *y, uint8_t *mask)
{
    // @solution fake_quantize: round to the grid, clamp, back to reals; mask = not clamped
    const float inv_scale = 1.0f / scale;
    for (size_t i = 0; i < n; i++) {
        const float qf = (float)zp + nearbyintf(x[i] * inv_scale);   /* ties to even */
        const float q = fminf(fmaxf(qf, (float)qmin), (float)qmax);
        if (mask) mask[i] = (uint8_t)(qmin <= qf && qf <= qmax);
        y[i] = (q - (float)zp) * scale;
    }
    return CR_OK;
    // @stub
    // (void)x; (void)n; (void)scale; (void)zp; (void)qmin; (void)qmax; (void)y; (void)mask;
    // return cr_todo("fake_quantize");
    // @end-solution
}
// @end fake_quantize

cr_status cr_fake_quantize_per_tensor(const cr_tensor *x, float scale, int32_t zero_point,
                                      int32_t qmin, int32_t qmax, cr_tensor *y, uint8_t *mask)
{
    cr_status st;
    if ((st = check_xy(x, y, "fake_quantize_per_tensor")) ||
        (st = check_qp(scale, zero_point, qmin, qmax, "fake_quantize_per_tensor")))
        return st;
    return fq_span(x->data, x->numel, scale, zero_point, qmin, qmax, y->data, mask);
}

cr_status cr_fake_quantize_per_channel(const cr_tensor *x, const float *scale,
                                       const int32_t *zero_point, int32_t qmin, int32_t qmax,
                                       cr_tensor *y, uint8_t *mask)
{
    cr_status st = check_xy(x, y, "fake_quantize_per_channel");
    if (st) return st;
    if (!scale || !zero_point)
        return cr_fail(CR_EINVAL, "fake_quantize_per_channel: scale and zero_point are required");
    const int64_t C = x->shape[0];
    const size_t inner = x->numel / (size_t)C;
    for (int64_t c = 0; c < C; c++)
        if ((st = check_qp(scale[c], zero_point[c], qmin, qmax, "fake_quantize_per_channel")))
            return fail_channel(st, "fake_quantize_per_channel", c);
    for (int64_t c = 0; !st && c < C; c++)
        st = fq_span(x->data + c * inner, inner, scale[c], zero_point[c], qmin, qmax,
                     y->data + c * inner, mask ? mask + c * inner : NULL);
    return st;
}

// @snippet fake_quant_backward
cr_status cr_fake_quantize_backward(const uint8_t *mask, const cr_tensor *dy, cr_tensor *dx)
{
    cr_status st = check_xy(dy, dx, "fake_quantize_backward");
    if (st) return st;
    if (!mask) return cr_fail(CR_EINVAL, "fake_quantize_backward: mask is required");
    // @solution fake_quant_backward: the straight-through estimator, zero where clamped
    for (size_t i = 0; i < dy->numel; i++) dx->data[i] = dy->data[i] * (float)mask[i];
    return CR_OK;
    // @stub
    // return cr_todo("fake_quant_backward");
    // @end-solution
}
// @end fake_quant_backward

/* ---- the fused observer + fake quantizer ------------------------------------------ */

/* (Re)sizes fq's per-entry buffers to n channels: min/max +-inf, scale 1, zero point 0. */
static cr_status fq_resize(cr_fake_quant *fq, int64_t n)
{
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    float *s = malloc((size_t)n * sizeof *s);
    int32_t *z = malloc((size_t)n * sizeof *z);
    if (!a || !b || !s || !z) {
        free(a), free(b), free(s), free(z);
        return cr_fail(CR_ENOMEM, "fake_quant: out of memory for %lld channels", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) a[i] = INFINITY, b[i] = -INFINITY, s[i] = 1.0f, z[i] = 0;
    free(fq->min_val), free(fq->max_val), free(fq->scale), free(fq->zero_point);
    fq->min_val = a, fq->max_val = b, fq->scale = s, fq->zero_point = z;
    fq->channels = n;
    return CR_OK;
}

cr_status cr_fake_quant_init(cr_fake_quant *fq, cr_dtype dtype, bool per_channel,
                             bool symmetric, int32_t qmin, int32_t qmax, bool reduce_range,
                             float averaging_constant)
{
    memset(fq, 0, sizeof *fq);
    if (dtype != CR_DT_U8 && dtype != CR_DT_I8)
        return cr_fail(CR_EINVAL, "fake_quant: dtype must be U8 or I8, got %s",
                       cr_dtype_name(dtype));
    const int32_t lo = dtype == CR_DT_U8 ? 0 : -128, hi = dtype == CR_DT_U8 ? 255 : 127;
    if (qmin < lo || qmax > hi || !(qmin <= 0 && 0 <= qmax && qmin < qmax))
        return cr_fail(CR_EINVAL, "fake_quant: range [%d, %d] must hold 0 and fit %s [%d, %d]",
                       (int)qmin, (int)qmax, cr_dtype_name(dtype), (int)lo, (int)hi);
    if (!(averaging_constant > 0 && averaging_constant <= 1))
        return cr_fail(CR_EINVAL, "fake_quant: averaging constant %g must be in (0, 1]",
                       (double)averaging_constant);
    fq->dtype = dtype;
    fq->per_channel = per_channel;
    fq->symmetric = symmetric;
    /* PyTorch's calculate_qmin_qmax: reduce_range floors both ends to half */
    fq->qmin = reduce_range ? (int32_t)floor(qmin / 2.0) : qmin;
    fq->qmax = reduce_range ? (int32_t)floor(qmax / 2.0) : qmax;
    fq->averaging_constant = averaging_constant;
    fq->observer_enabled = fq->fake_quant_enabled = true;
    if (per_channel) return CR_OK;   /* sized by the first tensor it sees */
    return fq_resize(fq, 1);
}

cr_status cr_fake_quant_init_act(cr_fake_quant *fq)
{
    return cr_fake_quant_init(fq, CR_DT_U8, false, false, 0, 255, true, 0.01f);
}

cr_status cr_fake_quant_init_weight(cr_fake_quant *fq)
{
    return cr_fake_quant_init(fq, CR_DT_I8, true, true, -128, 127, false, 0.01f);
}

void cr_fake_quant_free(cr_fake_quant *fq)
{
    free(fq->min_val), free(fq->max_val), free(fq->scale), free(fq->zero_point);
    memset(fq, 0, sizeof *fq);
}

/* min and max of n floats (NaNs propagate as in aminmax: the first NaN wins). */
static void span_minmax(const float *x, size_t n, float *lo, float *hi)
{
    float a = x[0], b = x[0];
    for (size_t i = 1; i < n; i++) {
        if (isnan(x[i])) {
            *lo = *hi = x[i];
            return;
        }
        if (x[i] < a) a = x[i];
        if (x[i] > b) b = x[i];
    }
    *lo = a, *hi = b;
}

// @snippet observer_update
/* One moving-average step of running value *run toward cur (the first one is taken). */
static cr_status moving_average(float *run, float cur, float c)
{
    // @solution observer_update: the first observation as is, then run + c * (cur - run)
    *run = isinf(*run) ? cur : *run + c * (cur - *run);
    return CR_OK;
    // @stub
    // (void)run; (void)cur; (void)c;
    // return cr_todo("observer_update");
    // @end-solution
}
// @end observer_update

cr_status cr_observer_update(cr_fake_quant *fq, const cr_tensor *x)
{
    if (!x || !x->data || x->numel == 0)
        return cr_fail(CR_EINVAL, "observer: x must be a non-empty allocated tensor");
    cr_status st;
    const int64_t C = fq->per_channel ? x->shape[0] : 1;
    if (fq->channels == 0 && (st = fq_resize(fq, C))) return st;
    if (fq->channels != C)
        return cr_fail(CR_EINVAL, "observer: x has %lld channels along dimension 0, the observer "
                       "%lld", (long long)C, (long long)fq->channels);
    const size_t inner = x->numel / (size_t)C;
    for (int64_t c = 0; c < C; c++) {
        float lo, hi;
        span_minmax(x->data + c * inner, inner, &lo, &hi);
        if (isnan(lo))
            return cr_fail(CR_EINVAL, "observer: x holds a NaN (channel %lld)", (long long)c);
        if (fq->minmax) {   /* isinf: the first observation (NaN was refused above) */
            fq->min_val[c] = isinf(fq->min_val[c]) ? lo : fminf(fq->min_val[c], lo);
            fq->max_val[c] = isinf(fq->max_val[c]) ? hi : fmaxf(fq->max_val[c], hi);
        } else if ((st = moving_average(&fq->min_val[c], lo, fq->averaging_constant)) ||
                   (st = moving_average(&fq->max_val[c], hi, fq->averaging_constant))) {
            return st;
        }
    }
    return CR_OK;
}

cr_status cr_fake_quant_forward(cr_fake_quant *fq, const cr_tensor *x, cr_tensor *y,
                                uint8_t *mask)
{
    cr_status st = check_xy(x, y, "fake_quant_forward");
    if (st) return st;
    if (fq->observer_enabled && (st = cr_observer_update(fq, x))) return st;
    if (!fq->fake_quant_enabled || fq->channels == 0) {
        if (y->data != x->data) memcpy(y->data, x->data, x->numel * sizeof(float));
        if (mask) memset(mask, 1, x->numel);
        return CR_OK;
    }
    for (int64_t c = 0; c < fq->channels; c++)
        if ((st = cr_qparams_choose(fq->min_val[c], fq->max_val[c], fq->qmin, fq->qmax,
                                    fq->symmetric, &fq->scale[c], &fq->zero_point[c])))
            return fail_channel(st, "fake_quant_forward (was it ever observed?)", c);
    return fq->per_channel
        ? cr_fake_quantize_per_channel(x, fq->scale, fq->zero_point, fq->qmin, fq->qmax, y, mask)
        : cr_fake_quantize_per_tensor(x, fq->scale[0], fq->zero_point[0], fq->qmin, fq->qmax, y,
                                      mask);
}

cr_status cr_fake_quant_qparams(const cr_fake_quant *fq, cr_qparams *p)
{
    memset(p, 0, sizeof *p);
    const int64_t n = fq->channels ? fq->channels : 1;
    double *scale = malloc((size_t)n * sizeof *scale);
    int32_t *zp = malloc((size_t)n * sizeof *zp);
    cr_status st = scale && zp ? CR_OK : cr_fail(CR_ENOMEM, "fake_quant_qparams: out of memory");
    for (int64_t c = 0; !st && c < n; c++) {
        float s = 1.0f;
        zp[c] = 0;
        if (fq->channels)
            st = cr_qparams_calculate(fq->min_val[c], fq->max_val[c], fq->qmin, fq->qmax,
                                      fq->symmetric, fq->dtype, &s, &zp[c]);
        scale[c] = s;
    }
    if (!st)
        st = fq->per_channel ? cr_qparams_per_channel(p, fq->dtype, 0, n, scale, zp)
                             : cr_qparams_per_tensor(p, fq->dtype, scale[0], zp[0]);
    free(scale);
    free(zp);
    return st;
}
