/* dtype.c — element types: names and sizes, f16/bf16 rounding, typed tensors, and the
 * storage of quantized tensors and masks (their arithmetic is in chapters 6 and 7). */
#include "dtype.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest typed tensor we agree to allocate: 2^36 bytes (as cr_tensor's 2^34 floats). */
#define CR_MAX_DTENSOR_BYTES ((size_t)1 << 36)

static const struct {
    const char *name;
    size_t size;
} dtype_info[CR_DT_COUNT] = {
    [CR_DT_F32] = {"F32", 4}, [CR_DT_F16] = {"F16", 2}, [CR_DT_BF16] = {"BF16", 2},
    [CR_DT_I8] = {"I8", 1},   [CR_DT_U8] = {"U8", 1},   [CR_DT_I32] = {"I32", 4},
    [CR_DT_I64] = {"I64", 8}, [CR_DT_F64] = {"F64", 8},
};

/* True if dt is one of the enumerated dtypes. */
static int dtype_valid(cr_dtype dt) { return (unsigned)dt < (unsigned)CR_DT_COUNT; }

const char *cr_dtype_name(cr_dtype dt) { return dtype_valid(dt) ? dtype_info[dt].name : "?"; }

size_t cr_dtype_size(cr_dtype dt) { return dtype_valid(dt) ? dtype_info[dt].size : 0; }

int cr_dtype_from_name(const char *name, size_t n, cr_dtype *dt)
{
    for (int i = 0; i < CR_DT_COUNT; i++) {
        if (strlen(dtype_info[i].name) == n && memcmp(dtype_info[i].name, name, n) == 0) {
            *dt = (cr_dtype)i;
            return 1;
        }
    }
    return 0;
}

int cr_dtype_is_int(cr_dtype dt)
{
    return dt == CR_DT_I8 || dt == CR_DT_U8 || dt == CR_DT_I32 || dt == CR_DT_I64;
}

/* ------------------------------------------------------------ scalar conversions */

/* The bits of a float32, and the float32 of some bits. */
static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float cr_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1F) {
        if (mant == 0) return float_of(sign | 0x7F800000u);
        return float_of(sign | 0x7FC00000u | (mant << 13));  /* NaN, made quiet */
    }
    if (exp != 0) return float_of(sign | ((exp + 112) << 23) | (mant << 13));
    float v = (float)mant * 0x1p-24f;  /* zero or subnormal: mant * 2^-24, exact */
    return sign ? -v : v;
}

/* m >> shift (1 <= shift <= 31), rounded to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t m, int shift)
{
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint16_t cr_f32_to_f16(float x)
{
    uint32_t u = bits_of(x), ax = u & 0x7FFFFFFFu;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (ax > 0x7F800000u) return sign | 0x7E00u;      /* NaN */
    if (ax >= 0x47800000u) return sign | 0x7C00u;     /* >= 2^16: infinity */
    if (ax >= 0x38800000u)                            /* >= 2^-14: a normal half */
        /* Rebias the exponent (127 -> 15) and round away 13 mantissa bits; a carry
         * walks into the exponent, and from 65520 up into infinity (0x7C00). */
        return sign | (uint16_t)shift_round_even(ax - (112u << 23), 13);
    uint32_t e = ax >> 23;
    if (e < 102) return sign;                          /* < 2^-25: rounds to zero */
    /* A subnormal half holds m16 * 2^-24; x = m * 2^(e-150), m with its implicit bit. */
    uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    return sign | (uint16_t)shift_round_even(m, (int)(126 - e));
}

float cr_bf16_to_f32(uint16_t b) { return float_of((uint32_t)b << 16); }

uint16_t cr_f32_to_bf16(float x)
{
    uint32_t u = bits_of(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFFu;  /* NaN: see the header */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* ------------------------------------------------------------ typed tensors */

cr_status cr_dtensor_alloc(cr_dtensor *t, cr_dtype dt, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    if (!dtype_valid(dt)) return cr_fail(CR_EINVAL, "typed tensor: dtype %d is not a dtype", (int)dt);
    if (ndim < 0 || ndim > CR_MAX_DIMS)
        return cr_fail(CR_EINVAL, "typed tensor rank %d: expected 0..%d", ndim, CR_MAX_DIMS);
    size_t numel = 1, bytes = 0;
    for (int i = 0; i < CR_MAX_DIMS; i++) t->shape[i] = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return cr_fail(CR_EINVAL, "typed tensor size %lld in dimension %d: expected >= 0",
                           (long long)shape[i], i);
        if ((uint64_t)shape[i] > SIZE_MAX)
            return cr_fail(CR_EOVERFLOW, "typed tensor size %lld: too large", (long long)shape[i]);
        cr_status st = cr_mul_checked(numel, (size_t)shape[i], CR_MAX_DTENSOR_BYTES,
                                      "typed tensor size", &numel);
        if (st) return st;
        t->shape[i] = shape[i];
    }
    cr_status st = cr_mul_checked(numel, dtype_info[dt].size, CR_MAX_DTENSOR_BYTES,
                                  "typed tensor bytes", &bytes);
    if (st) return st;
    t->data = cr_aligned_alloc(bytes);
    if (!t->data) {
        memset(t, 0, sizeof *t);
        return cr_fail(CR_ENOMEM, "typed tensor of %zu bytes: out of memory", bytes);
    }
    memset(t->data, 0, bytes);
    t->dtype = dt;
    t->ndim = ndim;
    t->numel = numel;
    return CR_OK;
}

void cr_dtensor_free(cr_dtensor *t)
{
    cr_aligned_free(t->data);
    memset(t, 0, sizeof *t);
}

size_t cr_dtensor_bytes(const cr_dtensor *t) { return t->numel * cr_dtype_size(t->dtype); }

/* t's data if t has dtype dt, else NULL. */
static void *typed_data(const cr_dtensor *t, cr_dtype dt)
{
    return t && t->dtype == dt ? t->data : NULL;
}

float *cr_dtensor_f32(const cr_dtensor *t) { return typed_data(t, CR_DT_F32); }
uint16_t *cr_dtensor_u16(const cr_dtensor *t)
{
    return t && (t->dtype == CR_DT_F16 || t->dtype == CR_DT_BF16) ? t->data : NULL;
}
int8_t *cr_dtensor_i8(const cr_dtensor *t) { return typed_data(t, CR_DT_I8); }
uint8_t *cr_dtensor_u8(const cr_dtensor *t) { return typed_data(t, CR_DT_U8); }
int32_t *cr_dtensor_i32(const cr_dtensor *t) { return typed_data(t, CR_DT_I32); }
int64_t *cr_dtensor_i64(const cr_dtensor *t) { return typed_data(t, CR_DT_I64); }
double *cr_dtensor_f64(const cr_dtensor *t) { return typed_data(t, CR_DT_F64); }

/* Element i of an integer-typed buffer, exactly. */
static int64_t load_int(cr_dtype dt, const void *p, size_t i)
{
    switch (dt) {
    case CR_DT_I8: return ((const int8_t *)p)[i];
    case CR_DT_U8: return ((const uint8_t *)p)[i];
    case CR_DT_I32: return ((const int32_t *)p)[i];
    case CR_DT_I64: return ((const int64_t *)p)[i];
    default: return 0;
    }
}

/* float64 to float32, rounding to nearest; out-of-range values become +-inf (no UB). */
static float double_to_float(double d)
{
    if (isfinite(d) && fabs(d) >= 0x1.ffffffp127) return d > 0 ? INFINITY : -INFINITY;
    return (float)d;
}

/* Element i of any buffer as float32 (rounded to nearest where it is not exact). */
static float load_f32(cr_dtype dt, const void *p, size_t i)
{
    switch (dt) {
    case CR_DT_F32: return ((const float *)p)[i];
    case CR_DT_F16: return cr_f16_to_f32(((const uint16_t *)p)[i]);
    case CR_DT_BF16: return cr_bf16_to_f32(((const uint16_t *)p)[i]);
    case CR_DT_F64: return double_to_float(((const double *)p)[i]);
    default: return (float)load_int(dt, p, i);
    }
}

/* Element i of any buffer as float64 (exact except I64 beyond 2^53). */
static double load_f64(cr_dtype dt, const void *p, size_t i)
{
    switch (dt) {
    case CR_DT_F64: return ((const double *)p)[i];
    case CR_DT_F32: case CR_DT_F16: case CR_DT_BF16: return load_f32(dt, p, i);
    default: return (double)load_int(dt, p, i);
    }
}

/* The range of an integer dtype. */
static void int_range(cr_dtype dt, int64_t *lo, int64_t *hi)
{
    switch (dt) {
    case CR_DT_I8: *lo = INT8_MIN, *hi = INT8_MAX; break;
    case CR_DT_U8: *lo = 0, *hi = UINT8_MAX; break;
    case CR_DT_I32: *lo = INT32_MIN, *hi = INT32_MAX; break;
    default: *lo = INT64_MIN, *hi = INT64_MAX; break;
    }
}

/* Element i of src as an integer of dt's range in *v; 0 if it is not one. */
static int exact_int(const cr_dtensor *src, size_t i, cr_dtype dt, int64_t *v)
{
    int64_t lo, hi;
    int_range(dt, &lo, &hi);
    if (cr_dtype_is_int(src->dtype)) {
        *v = load_int(src->dtype, src->data, i);
    } else {
        double d = load_f64(src->dtype, src->data, i);
        /* -2^63 <= d < 2^63 is exactly the doubles that convert to int64 without UB. */
        if (!(d >= -0x1p63 && d < 0x1p63) || d != trunc(d)) return 0;
        *v = (int64_t)d;
    }
    return *v >= lo && *v <= hi;
}

/* Stores integer v (already in range) as element i of an integer buffer. */
static void store_int(cr_dtype dt, void *p, size_t i, int64_t v)
{
    switch (dt) {
    case CR_DT_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case CR_DT_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case CR_DT_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    default: ((int64_t *)p)[i] = v; break;
    }
}

/* Converts every element of src into out (allocated, same numel, dtype out->dtype). */
static cr_status convert_elements(cr_dtensor *out, const cr_dtensor *src)
{
    const cr_dtype dt = out->dtype, sdt = src->dtype;
    for (size_t i = 0; i < src->numel; i++) {
        switch (dt) {
        case CR_DT_F32: ((float *)out->data)[i] = load_f32(sdt, src->data, i); break;
        case CR_DT_F16: ((uint16_t *)out->data)[i] = cr_f32_to_f16(load_f32(sdt, src->data, i)); break;
        case CR_DT_BF16: ((uint16_t *)out->data)[i] = cr_f32_to_bf16(load_f32(sdt, src->data, i)); break;
        case CR_DT_F64: ((double *)out->data)[i] = load_f64(sdt, src->data, i); break;
        default: {
            int64_t v;
            if (!exact_int(src, i, dt, &v))
                return cr_fail(CR_EINVAL,
                               "convert %s to %s: element %zu (%.17g) is not an integer in %s's range",
                               cr_dtype_name(sdt), cr_dtype_name(dt), i, load_f64(sdt, src->data, i),
                               cr_dtype_name(dt));
            store_int(dt, out->data, i, v);
        }
        }
    }
    return CR_OK;
}

cr_status cr_dtensor_convert(cr_dtensor *out, const cr_dtensor *src, cr_dtype dt)
{
    memset(out, 0, sizeof *out);
    if (!src || !dtype_valid(src->dtype) || (!src->data && src->numel))
        return cr_fail(CR_EINVAL, "convert: the source tensor is not allocated");
    cr_status st = cr_dtensor_alloc(out, dt, src->ndim, src->shape);
    if (!st) st = convert_elements(out, src);
    if (st) cr_dtensor_free(out);
    return st;
}

cr_status cr_dtensor_from_tensor(cr_dtensor *out, const cr_tensor *src, cr_dtype dt)
{
    memset(out, 0, sizeof *out);
    if (!src || !src->data || src->ndim < 1 || src->ndim > CR_MAX_DIMS)
        return cr_fail(CR_EINVAL, "convert: the float32 source tensor is not allocated");
    /* A read-only typed view of src's storage (never freed through the view). */
    cr_dtensor view = {.dtype = CR_DT_F32, .ndim = src->ndim, .numel = src->numel, .data = src->data};
    memcpy(view.shape, src->shape, sizeof view.shape);
    return cr_dtensor_convert(out, &view, dt);
}

cr_status cr_dtensor_to_tensor(cr_tensor *out, const cr_dtensor *src)
{
    memset(out, 0, sizeof *out);
    if (!src || !dtype_valid(src->dtype) || (!src->data && src->numel))
        return cr_fail(CR_EINVAL, "convert: the source tensor is not allocated");
    if (src->numel == 0)
        return cr_fail(CR_EINVAL, "convert: a tensor with no elements cannot become a cr_tensor");
    const int64_t one = 1;
    cr_status st = src->ndim == 0 ? cr_tensor_alloc(out, 1, &one)
                                  : cr_tensor_alloc(out, src->ndim, src->shape);
    if (st) return st;
    for (size_t i = 0; i < src->numel; i++) out->data[i] = load_f32(src->dtype, src->data, i);
    return CR_OK;
}

/* ------------------------------------------------------------ quantized tensors */

/* Checks one (scale, zero point) pair for dtype dt; index names it in the message. */
static cr_status check_qpair(cr_dtype dt, double scale, int32_t zp, int64_t index)
{
    if (!(scale > 0) || !isfinite(scale))
        return cr_fail(CR_EINVAL, "quantization: scale[%lld] = %g, expected finite and > 0",
                       (long long)index, scale);
    int64_t lo, hi;
    int_range(dt, &lo, &hi);
    if (zp < lo || zp > hi)
        return cr_fail(CR_EINVAL, "quantization: zero_point[%lld] = %d, expected %lld..%lld for %s",
                       (long long)index, (int)zp, (long long)lo, (long long)hi, cr_dtype_name(dt));
    return CR_OK;
}

cr_status cr_qparams_per_tensor(cr_qparams *p, cr_dtype dt, double scale, int32_t zero_point)
{
    return cr_qparams_per_channel(p, dt, -1, 1, &scale, &zero_point);
}

cr_status cr_qparams_per_channel(cr_qparams *p, cr_dtype dt, int axis, int64_t channels,
                                 const double *scale, const int32_t *zero_point)
{
    memset(p, 0, sizeof *p);
    if (dt != CR_DT_U8 && dt != CR_DT_I8)
        return cr_fail(CR_EINVAL, "quantization: dtype %s, expected U8 or I8", cr_dtype_name(dt));
    if (axis < -1 || axis >= CR_MAX_DIMS)
        return cr_fail(CR_EINVAL, "quantization: axis %d, expected 0..%d (or -1 per tensor)", axis,
                       CR_MAX_DIMS - 1);
    if (axis == -1 && channels != 1)
        return cr_fail(CR_EINVAL, "quantization: per tensor needs 1 scale, got %lld", (long long)channels);
    if (channels < 1 || channels > ((int64_t)1 << 30))
        return cr_fail(CR_EINVAL, "quantization: %lld channels, expected 1..2^30", (long long)channels);
    if (!scale || !zero_point) return cr_fail(CR_EINVAL, "quantization: scale or zero_point is NULL");
    for (int64_t c = 0; c < channels; c++) {
        cr_status st = check_qpair(dt, scale[c], zero_point[c], c);
        if (st) return st;
    }
    p->scale = malloc((size_t)channels * sizeof *p->scale);
    p->zero_point = malloc((size_t)channels * sizeof *p->zero_point);
    if (!p->scale || !p->zero_point) {
        cr_qparams_free(p);
        return cr_fail(CR_ENOMEM, "quantization: out of memory for %lld channels", (long long)channels);
    }
    memcpy(p->scale, scale, (size_t)channels * sizeof *p->scale);
    memcpy(p->zero_point, zero_point, (size_t)channels * sizeof *p->zero_point);
    p->dtype = dt;
    p->scheme = axis == -1 ? CR_QSCHEME_PER_TENSOR : CR_QSCHEME_PER_CHANNEL;
    p->axis = axis;
    p->channels = channels;
    return CR_OK;
}

void cr_qparams_free(cr_qparams *p)
{
    free(p->scale);
    free(p->zero_point);
    memset(p, 0, sizeof *p);
}

cr_status cr_qparams_check(const cr_qparams *p, const cr_dtensor *q)
{
    if (!p || !p->scale || !p->zero_point)
        return cr_fail(CR_EINVAL, "quantization: parameters not set");
    if (q->dtype != p->dtype)
        return cr_fail(CR_EINVAL, "quantization: tensor is %s, parameters are for %s",
                       cr_dtype_name(q->dtype), cr_dtype_name(p->dtype));
    if (p->scheme == CR_QSCHEME_PER_CHANNEL) {
        if (p->axis < 0 || p->axis >= q->ndim)
            return cr_fail(CR_EINVAL, "quantization: axis %d, but the tensor has rank %d", p->axis, q->ndim);
        if (p->channels != q->shape[p->axis])
            return cr_fail(CR_EINVAL, "quantization: %lld channels, but dimension %d has size %lld",
                           (long long)p->channels, p->axis, (long long)q->shape[p->axis]);
    } else if (p->channels != 1 || p->axis != -1) {
        return cr_fail(CR_EINVAL, "quantization: per tensor needs axis -1 and 1 scale");
    }
    for (int64_t c = 0; c < p->channels; c++) {
        cr_status st = check_qpair(p->dtype, p->scale[c], p->zero_point[c], c);
        if (st) return st;
    }
    return CR_OK;
}

cr_status cr_qtensor_alloc(cr_qtensor *qt, const cr_qparams *p, int ndim, const int64_t *shape)
{
    memset(qt, 0, sizeof *qt);
    if (!p || !p->scale) return cr_fail(CR_EINVAL, "quantized tensor: parameters not set");
    cr_status st = cr_dtensor_alloc(&qt->q, p->dtype, ndim, shape);
    if (!st) st = cr_qparams_check(p, &qt->q);
    if (!st) {
        st = p->axis == -1
                 ? cr_qparams_per_tensor(&qt->p, p->dtype, p->scale[0], p->zero_point[0])
                 : cr_qparams_per_channel(&qt->p, p->dtype, p->axis, p->channels, p->scale, p->zero_point);
    }
    if (st) cr_qtensor_free(qt);
    return st;
}

void cr_qtensor_free(cr_qtensor *qt)
{
    cr_dtensor_free(&qt->q);
    cr_qparams_free(&qt->p);
}

/* ------------------------------------------------------------ byte masks */

cr_status cr_mask_alloc(cr_mask *m, int ndim, const int64_t *shape)
{
    memset(m, 0, sizeof *m);
    if (ndim < 1 || ndim > CR_MAX_DIMS)
        return cr_fail(CR_EINVAL, "mask rank %d: expected 1..%d", ndim, CR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1)
            return cr_fail(CR_EINVAL, "mask size %lld in dimension %d: expected >= 1",
                           (long long)shape[i], i);
    cr_dtensor t;
    cr_status st = cr_dtensor_alloc(&t, CR_DT_U8, ndim, shape);
    if (st) return st;
    m->ndim = t.ndim;
    memcpy(m->shape, t.shape, sizeof m->shape);
    m->numel = t.numel;
    m->data = t.data;  /* ownership moves to m */
    return CR_OK;
}

void cr_mask_free(cr_mask *m)
{
    cr_aligned_free(m->data);
    memset(m, 0, sizeof *m);
}

size_t cr_mask_count(const cr_mask *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->numel; i++) n += m->data[i] != 0;
    return n;
}

cr_status cr_mask_from_dtensor(cr_mask *m, const cr_dtensor *src)
{
    memset(m, 0, sizeof *m);
    if (src->dtype != CR_DT_U8)
        return cr_fail(CR_EINVAL, "mask: tensor is %s, expected U8", cr_dtype_name(src->dtype));
    const uint8_t *b = src->data;
    for (size_t i = 0; i < src->numel; i++)
        if (b[i] > 1) return cr_fail(CR_EINVAL, "mask: element %zu is %u, expected 0 or 1", i, b[i]);
    cr_status st = cr_mask_alloc(m, src->ndim, src->shape);
    if (st) return st;
    memcpy(m->data, b, m->numel);
    return CR_OK;
}

cr_status cr_mask_to_dtensor(cr_dtensor *out, const cr_mask *m)
{
    cr_status st = cr_dtensor_alloc(out, CR_DT_U8, m->ndim, m->shape);
    if (st) return st;
    memcpy(out->data, m->data, m->numel);
    return CR_OK;
}
