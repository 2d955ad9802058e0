/* test_dtype.c — dtypes (lib/dtype.h): names and sizes, float16/bfloat16 rounding against
 * an independent decoder, a search-based rounding reference and PyTorch's own results
 * (reference/golden/dtype_round.safetensors), typed tensors and their conversions, and
 * the quantization and mask descriptions. */
#include "cr_test.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dtype.h"
#include "rng.h"
#include "safetensors.h"

/* ------------------------------------------------------------------ helpers */

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

/* binary16 decoded from its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals
 * 2^-14 * m/1024; an independent formula, not the library's bit shuffling. */
static double half_by_formula(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m / 1024.0, -14) : e == 31 ? (m ? NAN : INFINITY)
                                                         : ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

/* The value of a non-negative half or bfloat16 pattern, with the infinity pattern counted
 * as the next power of two past the largest finite value (as IEEE rounding treats it). */
static double half_value_for_rounding(uint16_t h) { return h == 0x7C00 ? 65536.0 : half_by_formula(h); }
static double bf16_value_for_rounding(uint16_t b)
{
    return b == 0x7F80 ? 0x1p128 : (double)float_of((uint32_t)b << 16);
}

/* Rounds |x| (finite) to nearest-even among the patterns 0..top, whose values increase
 * with the pattern: binary search for the neighbours, then compare distances. */
static uint16_t round_by_search(double ax, uint16_t top, double (*value)(uint16_t))
{
    uint32_t lo = 0, hi = top;  /* value(lo) <= ax once narrowed; find the last <= ax */
    if (ax >= value(top)) return top;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (value((uint16_t)mid) <= ax) lo = mid;
        else hi = mid;
    }
    double dlo = ax - value((uint16_t)lo), dhi = value((uint16_t)hi) - ax;
    if (dlo < dhi) return (uint16_t)lo;
    if (dhi < dlo) return (uint16_t)hi;
    return (uint16_t)((lo & 1) ? hi : lo);
}

/* The golden directory ($CR_GOLDEN_DIR, which meson sets) joined with name. */
static void golden_path(char *buf, size_t len, const char *name)
{
    const char *d = getenv("CR_GOLDEN_DIR");
    if (!d || !*d) fail_msg("CR_GOLDEN_DIR is not set: run the tests through meson test");
    snprintf(buf, len, "%s/%s", d, name);
}

/* Reads tensor name of f typed, checking its dtype and element count. */
static void get_typed(const cr_st_file *f, const char *name, cr_dtype dt, size_t numel, cr_dtensor *t)
{
    assert_cr_ok(cr_st_get_typed(f, name, t));
    if (t->dtype != dt || t->numel != numel)
        fail_msg("golden tensor '%s': %s of %zu elements, expected %s of %zu", name,
                 cr_dtype_name(t->dtype), t->numel, cr_dtype_name(dt), numel);
}

/* ------------------------------------------------------------------ names */

/* Names and sizes are safetensors'; lookups by name are exact (length and case). */
static void dtype__names_and_sizes(void **state)
{
    (void)state;
    const char *names[CR_DT_COUNT] = {"F32", "F16", "BF16", "I8", "U8", "I32", "I64", "F64"};
    const size_t sizes[CR_DT_COUNT] = {4, 2, 2, 1, 1, 4, 8, 8};
    for (int i = 0; i < CR_DT_COUNT; i++) {
        assert_string_equal(cr_dtype_name((cr_dtype)i), names[i]);
        assert_int_equal(cr_dtype_size((cr_dtype)i), sizes[i]);
        cr_dtype dt = CR_DT_COUNT;
        assert_true(cr_dtype_from_name(names[i], strlen(names[i]), &dt));
        assert_int_equal(dt, i);
        assert_int_equal(cr_dtype_is_int((cr_dtype)i), i >= CR_DT_I8 && i <= CR_DT_I64);
    }
    cr_dtype dt;
    assert_false(cr_dtype_from_name("F3", 2, &dt));
    assert_false(cr_dtype_from_name("F32 ", 4, &dt));
    assert_false(cr_dtype_from_name("f32", 3, &dt));
    assert_false(cr_dtype_from_name("BOOL", 4, &dt));
    assert_true(cr_dtype_from_name("BF16x", 4, &dt) && dt == CR_DT_BF16);  /* n bytes only */
    assert_string_equal(cr_dtype_name(CR_DT_COUNT), "?");
    assert_int_equal(cr_dtype_size(CR_DT_COUNT), 0);
}

/* ------------------------------------------------------------------ float16 and bfloat16 */

/* All 65,536 halves: decoding equals the formula, and half -> float -> half is the identity
 * (NaNs: sign kept, made quiet, as the golden file shows PyTorch does). */
static void dtype__f16_every_value(void **state)
{
    (void)state;
    int nans = 0;
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        float f = cr_f16_to_f32((uint16_t)h);
        double want = half_by_formula((uint16_t)h);
        if (isnan(want)) {
            nans++;
            uint32_t b = bits_of(f);
            if (!isnan(f) || (b >> 31) != (h >> 15) || !(b & 0x400000u) ||
                ((b >> 13) & 0x3FF) != ((h & 0x3FF) | 0x200))
                fail_msg("half 0x%04X: got float bits 0x%08X, expected a quiet NaN with its "
                         "sign and payload", h, b);
            if (cr_f32_to_f16(f) != ((h & 0x8000) | 0x7E00))
                fail_msg("half NaN 0x%04X -> float -> 0x%04X, expected 0x%04X", h, cr_f32_to_f16(f),
                         (h & 0x8000) | 0x7E00);
            continue;
        }
        if ((double)f != want || !signbit(f) != !signbit(want))
            fail_msg("half 0x%04X: got %a, expected %a", h, (double)f, want);
        if (cr_f32_to_f16(f) != h)
            fail_msg("half 0x%04X -> %a -> 0x%04X: not the identity", h, (double)f, cr_f32_to_f16(f));
    }
    assert_int_equal(nans, 2 * 1023);
    for (uint32_t b = 0; b <= 0xFFFF; b += 7) {  /* bfloat16: the top half of a float */
        float f = cr_bf16_to_f32((uint16_t)b);
        assert_int_equal(bits_of(f), b << 16);
        if (!isnan(f)) assert_int_equal(cr_f32_to_bf16(f), b);
    }
}

/* Random float32 bit patterns (every exponent, subnormals, ties) round as a search over
 * the target's values says: nearest, ties to even, overflow to infinity. */
static void dtype__rounding_random(void **state)
{
    (void)state;
    uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    int n = cr_test_count(200000);
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)cr_rng_next(&r);
        switch (i % 4) {
        case 1: u = (u & 0x807FFFFFu) | (uint32_t)cr_rng_int(&r, 100, 144) << 23; break;  /* half's range */
        case 2: u = (u & 0xFFFFE000u) | 0x1000u; break;  /* a half tie, if in range */
        case 3: u = (u & 0xFFFF0000u) | 0x8000u; break;  /* a bfloat16 tie */
        default: break;
        }
        float x = float_of(u);
        if (isnan(x)) continue;
        double ax = fabs((double)x);
        uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
        uint16_t want_h = sign | (isinf(x) ? 0x7C00 : round_by_search(ax, 0x7C00, half_value_for_rounding));
        uint16_t want_b = sign | (isinf(x) ? 0x7F80 : round_by_search(ax, 0x7F80, bf16_value_for_rounding));
        if (cr_f32_to_f16(x) != want_h)
            fail_msg("float %a (0x%08X) -> half 0x%04X, expected 0x%04X (CR_SEED=%" PRIu64 ")",
                     (double)x, u, cr_f32_to_f16(x), want_h, seed);
        if (cr_f32_to_bf16(x) != want_b)
            fail_msg("float %a (0x%08X) -> bfloat16 0x%04X, expected 0x%04X (CR_SEED=%" PRIu64 ")",
                     (double)x, u, cr_f32_to_bf16(x), want_b, seed);
    }
}

/* PyTorch's own conversions (golden file): float32 -> float16/bfloat16 of a few thousand
 * hard values, and float16/bfloat16 NaNs -> float32, equal bit for bit. */
static void dtype__rounding_matches_pytorch(void **state)
{
    (void)state;
    char path[1024];
    golden_path(path, sizeof path, "dtype_round.safetensors");
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    int64_t shape[CR_MAX_DIMS];
    int ndim;
    assert_cr_ok(cr_st_info(f, "x", NULL, &ndim, shape));
    assert_int_equal(ndim, 1);
    size_t n = (size_t)shape[0];
    assert_true(n > 2000);
    cr_dtensor x, h, b;
    get_typed(f, "x", CR_DT_F32, n, &x);
    get_typed(f, "x_f16", CR_DT_F16, n, &h);
    get_typed(f, "x_bf16", CR_DT_BF16, n, &b);
    const float *xs = cr_dtensor_f32(&x);
    int nan_inputs = 0;
    for (size_t i = 0; i < n; i++) {
        nan_inputs += isnan(xs[i]);
        if (cr_f32_to_f16(xs[i]) != cr_dtensor_u16(&h)[i])
            fail_msg("x[%zu] = 0x%08X: half 0x%04X, PyTorch 0x%04X", i, bits_of(xs[i]),
                     cr_f32_to_f16(xs[i]), cr_dtensor_u16(&h)[i]);
        if (cr_f32_to_bf16(xs[i]) != cr_dtensor_u16(&b)[i])
            fail_msg("x[%zu] = 0x%08X: bfloat16 0x%04X, PyTorch 0x%04X", i, bits_of(xs[i]),
                     cr_f32_to_bf16(xs[i]), cr_dtensor_u16(&b)[i]);
    }
    assert_true(nan_inputs >= 10);
    cr_dtensor_free(&x), cr_dtensor_free(&h), cr_dtensor_free(&b);

    const char *from[2] = {"h_nan", "bf_nan"}, *to[2] = {"h_nan_f32", "bf_nan_f32"};
    for (int k = 0; k < 2; k++) {
        assert_cr_ok(cr_st_info(f, from[k], NULL, NULL, shape));
        n = (size_t)shape[0];
        get_typed(f, from[k], k ? CR_DT_BF16 : CR_DT_F16, n, &h);
        get_typed(f, to[k], CR_DT_F32, n, &x);
        for (size_t i = 0; i < n; i++) {
            uint16_t v = cr_dtensor_u16(&h)[i];
            float got = k ? cr_bf16_to_f32(v) : cr_f16_to_f32(v);
            if (bits_of(got) != bits_of(cr_dtensor_f32(&x)[i]))
                fail_msg("%s 0x%04X -> float 0x%08X, PyTorch 0x%08X", k ? "bfloat16" : "half", v,
                         bits_of(got), bits_of(cr_dtensor_f32(&x)[i]));
        }
        cr_dtensor_free(&x), cr_dtensor_free(&h);
    }
    assert_non_null(cr_st_meta(f, "torch_version"));
    cr_st_free(f);
}

/* ------------------------------------------------------------------ typed tensors */

/* Shapes: rank 0 holds one element, zero sizes none; bad ranks, sizes and dtypes refused. */
static void dtype__alloc(void **state)
{
    (void)state;
    cr_dtensor t;
    assert_cr_ok(cr_dtensor_alloc(&t, CR_DT_I64, 0, NULL));
    assert_int_equal(t.numel, 1);
    assert_int_equal(cr_dtensor_bytes(&t), 8);
    assert_true(cr_dtensor_i64(&t)[0] == 0);
    assert_null(cr_dtensor_i32(&t));
    assert_int_equal((uintptr_t)t.data % CR_ALIGN, 0);
    cr_dtensor_free(&t);
    assert_null(t.data);
    const int64_t s[4] = {2, 0, 3, 5}, bad[2] = {3, -1}, huge[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
    assert_cr_ok(cr_dtensor_alloc(&t, CR_DT_BF16, 4, s));
    assert_int_equal(t.numel, 0);
    assert_int_equal(t.shape[3], 5);
    cr_dtensor_free(&t);
    assert_cr_fails(cr_dtensor_alloc(&t, CR_DT_F32, 2, bad), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dimension 1"));
    assert_cr_fails(cr_dtensor_alloc(&t, CR_DT_F32, 5, s), CR_EINVAL);
    assert_cr_fails(cr_dtensor_alloc(&t, CR_DT_COUNT, 1, s), CR_EINVAL);
    assert_cr_fails(cr_dtensor_alloc(&t, CR_DT_U8, 4, huge), CR_EOVERFLOW);
    assert_null(t.data);
}

/* Conversions: float targets round as PyTorch (F64 -> F16 through float32, measured);
 * integer targets are exact or refused with the element named. */
static void dtype__convert(void **state)
{
    (void)state;
    const int64_t n6[1] = {6};
    cr_dtensor d, out, back;
    assert_cr_ok(cr_dtensor_alloc(&d, CR_DT_F64, 1, n6));
    /* 1 + 2^-11 + 2^-40 rounds to 1 + 2^-10 as a half directly, but PyTorch goes through
     * float32 (1 + 2^-11, a tie) and gets 1.0 (0x3C00); 65519.999999 gives inf (0x7C00). */
    const double dv[6] = {1 + 0x1p-11 + 0x1p-40, 65519.999999, 0x1p-25 + 0x1p-60, -3.0, 1e300, -0.0};
    const uint16_t want_h[6] = {0x3C00, 0x7C00, 0x0000, 0xC200, 0x7C00, 0x8000};
    memcpy(cr_dtensor_f64(&d), dv, sizeof dv);
    assert_cr_ok(cr_dtensor_convert(&out, &d, CR_DT_F16));
    for (int i = 0; i < 6; i++)
        if (cr_dtensor_u16(&out)[i] != want_h[i])
            fail_msg("F64 %a -> F16 0x%04X, PyTorch 0x%04X", dv[i], cr_dtensor_u16(&out)[i], want_h[i]);
    cr_dtensor_free(&out);
    /* Integer targets: 1e300 is not an int8. */
    assert_cr_fails(cr_dtensor_convert(&out, &d, CR_DT_I8), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 0"));
    assert_null(out.data);
    cr_dtensor_free(&d);

    const int64_t s23[2] = {2, 3};
    assert_cr_ok(cr_dtensor_alloc(&d, CR_DT_I32, 2, s23));
    const int32_t iv[6] = {16777217, -128, 127, 255, -7, 2147483647};
    memcpy(cr_dtensor_i32(&d), iv, sizeof iv);
    assert_cr_ok(cr_dtensor_convert(&out, &d, CR_DT_F32));
    assert_int_equal(out.ndim, 2);
    assert_true(cr_dtensor_f32(&out)[0] == 16777216.0f);  /* rounds, as .float() */
    assert_true(cr_dtensor_f32(&out)[5] == 2147483648.0f);
    assert_cr_fails(cr_dtensor_convert(&back, &out, CR_DT_I32), CR_EINVAL);  /* 2^31 is not an I32 */
    assert_non_null(strstr(cr_last_error(), "element 5"));
    cr_dtensor_free(&out);
    assert_cr_fails(cr_dtensor_convert(&out, &d, CR_DT_I8), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 0"));
    assert_cr_fails(cr_dtensor_convert(&out, &d, CR_DT_U8), CR_EINVAL);
    assert_cr_ok(cr_dtensor_convert(&out, &d, CR_DT_I64));
    for (int i = 0; i < 6; i++) assert_true(cr_dtensor_i64(&out)[i] == iv[i]);
    cr_dtensor_free(&out);
    cr_dtensor_free(&d);

    /* float32 cr_tensor <-> typed: exact integers go through; 2.5, -0.5, NaN, 256 do not. */
    cr_tensor t, t2;
    assert_cr_ok(cr_tensor_alloc(&t, 1, n6));
    const float fv[6] = {0.0f, 1.0f, 255.0f, 2.5f, NAN, 256.0f};
    memcpy(t.data, fv, sizeof fv);
    assert_cr_fails(cr_dtensor_from_tensor(&out, &t, CR_DT_U8), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 3"));
    t.data[3] = 3.0f;
    assert_cr_fails(cr_dtensor_from_tensor(&out, &t, CR_DT_U8), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 4"));
    t.data[4] = 4.0f;
    assert_cr_fails(cr_dtensor_from_tensor(&out, &t, CR_DT_U8), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 5"));
    t.data[5] = 5.0f;
    assert_cr_ok(cr_dtensor_from_tensor(&out, &t, CR_DT_U8));
    const uint8_t want_u8[6] = {0, 1, 255, 3, 4, 5};
    assert_memory_equal(cr_dtensor_u8(&out), want_u8, 6);
    assert_cr_ok(cr_dtensor_to_tensor(&t2, &out));
    assert_true(cr_tensor_same_shape(&t, &t2));
    assert_memory_equal(t.data, t2.data, 6 * sizeof(float));
    cr_tensor_free(&t2);
    cr_dtensor_free(&out);
    t.data[0] = 1.0f + 0x1p-9f;  /* bfloat16 keeps 8 bits: rounds to 1 (a tie, even) */
    assert_cr_ok(cr_dtensor_from_tensor(&out, &t, CR_DT_BF16));
    assert_int_equal(cr_dtensor_u16(&out)[0], 0x3F80);
    assert_int_equal(cr_dtensor_u16(&out)[2], 0x437F);  /* 255 */
    cr_dtensor_free(&out);
    cr_tensor_free(&t);

    /* Rank 0 becomes rank 1 of size 1; an empty tensor cannot become a cr_tensor. */
    assert_cr_ok(cr_dtensor_alloc(&d, CR_DT_I64, 0, NULL));
    cr_dtensor_i64(&d)[0] = 3;  /* a num_batches_tracked */
    assert_cr_ok(cr_dtensor_to_tensor(&t, &d));
    assert_int_equal(t.ndim, 1);
    assert_true(t.numel == 1 && t.data[0] == 3.0f);
    cr_tensor_free(&t);
    cr_dtensor_free(&d);
    const int64_t e[2] = {0, 4};
    assert_cr_ok(cr_dtensor_alloc(&d, CR_DT_F16, 2, e));
    assert_cr_fails(cr_dtensor_to_tensor(&t, &d), CR_EINVAL);
    assert_cr_ok(cr_dtensor_convert(&out, &d, CR_DT_I8));  /* empty converts to empty */
    assert_int_equal(out.numel, 0);
    cr_dtensor_free(&out);
    cr_dtensor_free(&d);
}

/* ------------------------------------------------------------------ quantization, masks */

/* Per-tensor and per-channel descriptions: valid ones are copied, bad ones refused. */
static void dtype__qparams(void **state)
{
    (void)state;
    cr_qparams p;
    assert_cr_ok(cr_qparams_per_tensor(&p, CR_DT_U8, 0.025, 37));
    assert_int_equal(p.scheme, CR_QSCHEME_PER_TENSOR);
    assert_int_equal(p.axis, -1);
    assert_int_equal(p.channels, 1);
    assert_true(p.scale[0] == 0.025 && p.zero_point[0] == 37);
    const int64_t s[4] = {2, 3, 4, 5};
    cr_qtensor qt;
    assert_cr_ok(cr_qtensor_alloc(&qt, &p, 4, s));
    assert_int_equal(qt.q.dtype, CR_DT_U8);
    assert_int_equal(qt.q.numel, 120);
    assert_true(qt.p.scale != p.scale && qt.p.scale[0] == 0.025);  /* a copy */
    cr_qtensor_free(&qt);
    cr_qparams_free(&p);
    assert_null(p.scale);

    assert_cr_fails(cr_qparams_per_tensor(&p, CR_DT_U8, 0.0, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "scale"));
    assert_cr_fails(cr_qparams_per_tensor(&p, CR_DT_U8, NAN, 0), CR_EINVAL);
    assert_cr_fails(cr_qparams_per_tensor(&p, CR_DT_U8, INFINITY, 0), CR_EINVAL);
    assert_cr_fails(cr_qparams_per_tensor(&p, CR_DT_U8, 0.1, 256), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "zero_point"));
    assert_cr_fails(cr_qparams_per_tensor(&p, CR_DT_I8, 0.1, -129), CR_EINVAL);
    assert_cr_ok(cr_qparams_per_tensor(&p, CR_DT_I8, 0.1, -128));
    cr_qparams_free(&p);
    assert_cr_fails(cr_qparams_per_tensor(&p, CR_DT_I32, 0.1, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "U8 or I8"));

    double scales[3] = {0.02, 0.015, 0.03};
    int32_t zps[3] = {0, 1, -2};
    assert_cr_ok(cr_qparams_per_channel(&p, CR_DT_I8, 0, 3, scales, zps));
    scales[1] = -1.0;  /* the description holds its own copy */
    assert_true(p.scale[1] == 0.015);
    const int64_t w[4] = {3, 2, 3, 3}, w_bad[4] = {4, 2, 3, 3};
    assert_cr_ok(cr_qtensor_alloc(&qt, &p, 4, w));
    assert_int_equal(qt.p.scheme, CR_QSCHEME_PER_CHANNEL);
    assert_cr_ok(cr_qparams_check(&qt.p, &qt.q));
    cr_qtensor_free(&qt);
    assert_cr_fails(cr_qtensor_alloc(&qt, &p, 4, w_bad), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "3 channels"));
    assert_null(qt.q.data);
    assert_cr_fails(cr_qtensor_alloc(&qt, &p, 0, NULL), CR_EINVAL);  /* axis 0 of a scalar */
    cr_qparams_free(&p);
    assert_cr_fails(cr_qparams_per_channel(&p, CR_DT_I8, 1, 3, scales, zps), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "scale[1]"));
    assert_cr_fails(cr_qparams_per_channel(&p, CR_DT_I8, 4, 1, scales, zps), CR_EINVAL);
    assert_cr_fails(cr_qparams_per_channel(&p, CR_DT_I8, -1, 2, scales, zps), CR_EINVAL);
    assert_cr_fails(cr_qparams_per_channel(&p, CR_DT_I8, 0, 0, scales, zps), CR_EINVAL);
}

/* Masks hold 0/1 bytes: count, conversion to and from U8 tensors, other bytes refused. */
static void dtype__mask(void **state)
{
    (void)state;
    uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int64_t s[3] = {3, 7, 5};
    cr_mask m, m2;
    assert_cr_ok(cr_mask_alloc(&m, 3, s));
    assert_int_equal(m.numel, 105);
    assert_int_equal(cr_mask_count(&m), 0);
    size_t ones = 0;
    for (size_t i = 0; i < m.numel; i++) ones += (m.data[i] = (uint8_t)cr_rng_int(&r, 0, 1));
    assert_int_equal(cr_mask_count(&m), ones);
    cr_dtensor d;
    assert_cr_ok(cr_mask_to_dtensor(&d, &m));
    assert_int_equal(d.dtype, CR_DT_U8);
    assert_cr_ok(cr_mask_from_dtensor(&m2, &d));
    assert_memory_equal(m2.data, m.data, m.numel);
    assert_int_equal(m2.shape[1], 7);
    cr_mask_free(&m2);
    cr_dtensor_u8(&d)[17] = 2;
    assert_cr_fails(cr_mask_from_dtensor(&m2, &d), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 17 is 2"));
    assert_null(m2.data);
    cr_dtensor_free(&d);
    assert_cr_ok(cr_dtensor_alloc(&d, CR_DT_I8, 3, s));
    assert_cr_fails(cr_mask_from_dtensor(&m2, &d), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "expected U8"));
    cr_dtensor_free(&d);
    const int64_t z[1] = {0};
    assert_cr_fails(cr_mask_alloc(&m2, 1, z), CR_EINVAL);
    cr_mask_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dtype__names_and_sizes),
        cmocka_unit_test(dtype__f16_every_value),
        cmocka_unit_test(dtype__rounding_random),
        cmocka_unit_test(dtype__rounding_matches_pytorch),
        cmocka_unit_test(dtype__alloc),
        cmocka_unit_test(dtype__convert),
        cmocka_unit_test(dtype__qparams),
        cmocka_unit_test(dtype__mask),
    };
    return cr_run_tests("dtype", tests);
}
