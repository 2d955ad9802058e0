/* test_ch07_qat.c — suite ch07: quantization-aware training (chapters/07-qat) against
 * PyTorch 1.13's torch.ao.quantization (reference/make_golden_qat.py).
 *
 * Bounds: scales, zero points, observer states, fake-quantized values and their
 * gradients are compared bit for bit (PyTorch's float32 operations, same order); the
 * folded inference weights too. Through a convolution (ConvBn2d's output and gradients)
 * the sums differ in order: relative L2 1e-5 there, the weight quantizer's state still
 * exact. Random tests draw a seed from CR_SEED (printed on failure). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compare.h"
#include "cr_test.h"
#include "fakequant.h"
#include "fold.h"
#include "layers.h"
#include "model.h"
#include "qat.h"
#include "rng.h"
#include "safetensors.h"

#define CONV_TOL 1e-5   /* relative L2, through a convolution's sums */

/* ---- helpers ------------------------------------------------------------------------ */

/* Opens reference/golden/qat_NAME.safetensors; fails the test if absent. */
static cr_st_file *golden(const char *name)
{
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir) fail_msg("CR_GOLDEN_DIR is not set (meson test sets it to reference/golden)");
    char path[1024];
    snprintf(path, sizeof path, "%s/qat_%s.safetensors", dir, name);
    cr_st_file *f = NULL;
    if (cr_st_load(&f, path) != CR_OK)
        fail_msg("cannot read %s: %s (run /usr/bin/python3 reference/make_golden_qat.py)", path,
                 cr_last_error());
    return f;
}

/* Reads golden tensor name (printf-style) into t. */
static void get(const cr_st_file *f, cr_tensor *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void get(const cr_st_file *f, cr_tensor *t, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    assert_cr_ok(cr_st_get(f, name, t));
}

/* Fails unless the n floats of out equal ref bit for bit, naming the first difference. */
static void expect_bits(const char *what, const float *out, const float *ref, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, &out[i], 4);
        memcpy(&b, &ref[i], 4);
        if (a != b)
            fail_msg("%s: element %zu is %.9g (0x%08x), PyTorch %.9g (0x%08x)", what, i,
                     (double)out[i], a, (double)ref[i], b);
    }
}

/* Fails unless the zero points (int32) equal ref (float32 integers). */
static void expect_zp(const char *what, const int32_t *out, const float *ref, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((float)out[i] != ref[i])
            fail_msg("%s: zero point %zu is %d, PyTorch %g", what, i, (int)out[i], (double)ref[i]);
}

/* Fails unless out is within relative L2 tol of ref, printing the first faults. */
static void expect_close(const char *what, const cr_tensor *out, const cr_tensor *ref, double tol)
{
    if (out->numel != ref->numel)
        fail_msg("%s: %zu values, expected %zu", what, out->numel, ref->numel);
    cr_cmp c = cr_compare(out->data, ref->data, ref->numel, tol, tol);
    if (!cr_cmp_ok(&c, tol)) {
        cr_print_faults(stderr, out->data, ref->data, ref->numel, NULL, 0, tol, tol, 5);
        fail_msg("%s: relative L2 error %.3g > %.0e (max abs %.3g at %zu)", what, c.rel_l2, tol,
                 c.max_abs, c.worst);
    }
}

/* Allocates out like ref, poisoned (NaN). */
static void like(cr_tensor *out, const cr_tensor *ref)
{
    assert_cr_ok(cr_tensor_alloc(out, ref->ndim, ref->shape));
    cr_tensor_poison(out);
}

/* ---- scale and zero point --------------------------------------------------------- */

/* Both rules on every (min, max) pair of the golden file, for one range. */
static void qparams_rule(bool choose, const char *kind, bool symmetric, cr_dtype dt)
{
    cr_st_file *f = golden("qparams");
    cr_tensor mn = {0}, mx = {0}, rs = {0}, rz = {0}, range = {0};
    get(f, &mn, "min");
    get(f, &mx, "max");
    get(f, &rs, "%s_%s_scale", choose ? "choose" : "calc", kind);
    get(f, &rz, "%s_%s_zp", choose ? "choose" : "calc", kind);
    get(f, &range, "%s_range", kind);
    const int32_t qmin = (int32_t)range.data[0], qmax = (int32_t)range.data[1];
    for (size_t i = 0; i < mn.numel; i++) {
        float s = NAN;
        int32_t z = -999;
        char what[160];
        snprintf(what, sizeof what, "%s %s rule, pair %zu (min %.9g, max %.9g)",
                 choose ? "fused" : "observer", kind, i, (double)mn.data[i], (double)mx.data[i]);
        if (choose) assert_cr_ok(cr_qparams_choose(mn.data[i], mx.data[i], qmin, qmax, symmetric, &s, &z));
        else assert_cr_ok(cr_qparams_calculate(mn.data[i], mx.data[i], qmin, qmax, symmetric, dt, &s, &z));
        expect_bits(what, &s, &rs.data[i], 1);
        expect_zp(what, &z, &rz.data[i], 1);
    }
    cr_tensor *ts[] = {&mn, &mx, &rs, &rz, &range};
    for (size_t i = 0; i < 5; i++) cr_tensor_free(ts[i]);
    cr_st_free(f);
}

static void qparams_choose__golden_activation(void **state)
{
    (void)state;
    qparams_rule(true, "act", false, CR_DT_U8);
}

static void qparams_choose__golden_weight(void **state)
{
    (void)state;
    qparams_rule(true, "weight", true, CR_DT_I8);
}

static void qparams_calculate__golden_activation(void **state)
{
    (void)state;
    qparams_rule(false, "act", false, CR_DT_U8);
}

static void qparams_calculate__golden_weight(void **state)
{
    (void)state;
    qparams_rule(false, "weight", true, CR_DT_I8);
}

static void qparams_calculate__never_observed_and_bad_input(void **state)
{
    (void)state;
    float s = 0;
    int32_t z = 5;
    assert_cr_ok(cr_qparams_calculate(INFINITY, -INFINITY, 0, 127, false, CR_DT_U8, &s, &z));
    assert_true(s == 1.0f && z == 0);
    assert_cr_fails(cr_qparams_calculate(2.0f, 1.0f, 0, 127, false, CR_DT_U8, &s, &z), CR_EINVAL);
    assert_cr_fails(cr_qparams_calculate(NAN, 1.0f, 0, 127, false, CR_DT_U8, &s, &z), CR_EINVAL);
    assert_cr_fails(cr_qparams_choose(0.0f, 1.0f, 5, 5, false, &s, &z), CR_EINVAL);
    assert_cr_fails(cr_qparams_choose(1.0f, -1.0f, 0, 127, false, &s, &z), CR_EINVAL);
}

/* ---- fake quantization of a tensor ------------------------------------------------ */

static void fake_quantize__golden_per_tensor(void **state)
{
    (void)state;
    cr_st_file *f = golden("fq_tensor");
    cr_tensor x = {0}, y = {0}, qp = {0}, out = {0};
    get(f, &x, "x");
    get(f, &y, "y");
    get(f, &qp, "qp");
    like(&out, &x);
    uint8_t *mask = malloc(x.numel);
    assert_non_null(mask);
    memset(mask, 7, x.numel);
    assert_cr_ok(cr_fake_quantize_per_tensor(&x, qp.data[0], (int32_t)qp.data[1],
                                             (int32_t)qp.data[2], (int32_t)qp.data[3], &out, mask));
    expect_bits("fake_quantize_per_tensor y", out.data, y.data, y.numel);
    /* the mask: 1 exactly where the value was not clamped (PyTorch's dx != 0 there) */
    cr_tensor dx = {0}, dy = {0};
    get(f, &dx, "dx");
    get(f, &dy, "dy");
    for (size_t i = 0; i < x.numel; i++)
        if (mask[i] != (dx.data[i] != 0.0f || dy.data[i] == 0.0f))
            fail_msg("mask[%zu] = %d for x = %.9g (PyTorch's gradient %g)", i, mask[i],
                     (double)x.data[i], (double)dx.data[i]);
    free(mask);
    cr_tensor *ts[] = {&x, &y, &qp, &out, &dx, &dy};
    for (size_t i = 0; i < 6; i++) cr_tensor_free(ts[i]);
    cr_st_free(f);
}

static void fake_quantize__golden_per_channel(void **state)
{
    (void)state;
    cr_st_file *f = golden("fq_channel");
    cr_tensor x = {0}, y = {0}, sc = {0}, zpf = {0}, range = {0}, out = {0};
    get(f, &x, "x");
    get(f, &y, "y");
    get(f, &sc, "scale");
    get(f, &zpf, "zp");
    get(f, &range, "range");
    like(&out, &x);
    int32_t zp[8];
    for (size_t c = 0; c < zpf.numel; c++) zp[c] = (int32_t)zpf.data[c];
    assert_cr_ok(cr_fake_quantize_per_channel(&x, sc.data, zp, (int32_t)range.data[0],
                                              (int32_t)range.data[1], &out, NULL));
    expect_bits("fake_quantize_per_channel y", out.data, y.data, y.numel);
    cr_tensor *ts[] = {&x, &y, &sc, &zpf, &range, &out};
    for (size_t i = 0; i < 6; i++) cr_tensor_free(ts[i]);
    cr_st_free(f);
}

/* Random inputs: idempotent, on the grid, within half a step inside the range. */
static void fake_quantize__random_grid_properties(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int t = 0; t < cr_test_count(50); t++) {
        const float scale = (float)exp(cr_rng_uniform(&r) * 8 - 6);
        const int32_t zp = (int32_t)(cr_rng_uniform(&r) * 128);
        cr_tensor x = {0}, y = {0}, y2 = {0};
        const int64_t n = 1 + (int64_t)(cr_rng_uniform(&r) * 500);
        assert_cr_ok(cr_tensor_alloc(&x, 1, &n));
        assert_cr_ok(cr_tensor_alloc(&y, 1, &n));
        assert_cr_ok(cr_tensor_alloc(&y2, 1, &n));
        cr_tensor_fill_uniform(&x, &r, -200 * scale, 200 * scale);
        assert_cr_ok(cr_fake_quantize_per_tensor(&x, scale, zp, 0, 127, &y, NULL));
        assert_cr_ok(cr_fake_quantize_per_tensor(&y, scale, zp, 0, 127, &y2, NULL));
        for (int64_t i = 0; i < n; i++) {
            const double q = y.data[i] / scale + zp;
            const double lo = (0 - zp) * (double)scale, hi = (127 - zp) * (double)scale;
            if (y2.data[i] != y.data[i] || fabs(q - nearbyint(q)) > 1e-3 || q < -1e-3 ||
                q > 127 + 1e-3 ||
                (x.data[i] >= lo && x.data[i] <= hi && fabs(y.data[i] - x.data[i]) > 0.5001 * scale))
                fail_msg("seed %llu (CR_SEED replays): case %d element %lld: x %.9g -> %.9g -> "
                         "%.9g (scale %g, zp %d)", (unsigned long long)seed, t, (long long)i,
                         (double)x.data[i], (double)y.data[i], (double)y2.data[i], (double)scale,
                         (int)zp);
        }
        cr_tensor_free(&x), cr_tensor_free(&y), cr_tensor_free(&y2);
    }
}

static void fake_quantize__rejects_bad_parameters(void **state)
{
    (void)state;
    cr_tensor x = {0}, y = {0};
    const int64_t n = 4;
    assert_cr_ok(cr_tensor_alloc(&x, 1, &n));
    assert_cr_ok(cr_tensor_alloc(&y, 1, &n));
    cr_tensor_fill(&x, 0.5f);
    assert_cr_fails(cr_fake_quantize_per_tensor(&x, 0.0f, 0, 0, 127, &y, NULL), CR_EINVAL);
    assert_cr_fails(cr_fake_quantize_per_tensor(&x, 1e-39f, 0, 0, 127, &y, NULL), CR_EINVAL);
    assert_cr_fails(cr_fake_quantize_per_tensor(&x, 0.1f, 200, 0, 127, &y, NULL), CR_EINVAL);
    assert_cr_fails(cr_fake_quantize_per_tensor(&x, 0.1f, 0, 10, 10, &y, NULL), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "qmin"));
    cr_tensor_free(&x), cr_tensor_free(&y);
}

/* ---- the straight-through gradient ------------------------------------------------ */

static void fake_quant_backward__golden(void **state)
{
    (void)state;
    const char *files[] = {"fq_tensor", "fq_channel"};
    for (int k = 0; k < 2; k++) {
        cr_st_file *f = golden(files[k]);
        cr_tensor dy = {0}, dx = {0}, out = {0};
        get(f, &dy, "dy");
        get(f, &dx, "dx");
        like(&out, &dy);
        /* the mask from PyTorch's own gradient (dy is never 0 in these files) */
        uint8_t *mask = malloc(dy.numel);
        assert_non_null(mask);
        size_t kept = 0;
        for (size_t i = 0; i < dy.numel; i++) kept += mask[i] = dx.data[i] != 0.0f;
        assert_true(kept > 0 && kept < dy.numel);   /* both kinds present */
        cr_last_error();
        assert_cr_ok(cr_fake_quantize_backward(mask, &dy, &out));
        expect_bits(files[k], out.data, dx.data, dx.numel);
        free(mask);
        cr_tensor_free(&dy), cr_tensor_free(&dx), cr_tensor_free(&out);
        cr_st_free(f);
    }
}

/* ---- observers and the fused quantizer over several steps -------------------------- */

/* Runs the golden steps of file name through a fresh quantizer; only the observer when
 * observer_only, else the whole fused forward and backward. */
static void run_steps(const char *name, bool weight, bool observer_only)
{
    cr_st_file *f = golden(name);
    cr_fake_quant fq;
    assert_cr_ok(weight ? cr_fake_quant_init_weight(&fq) : cr_fake_quant_init_act(&fq));
    cr_tensor steps = {0};
    get(f, &steps, "steps");
    for (int s = 0; s < (int)steps.data[0]; s++) {
        cr_tensor x = {0}, dy = {0}, y = {0}, dx = {0}, mn = {0}, mx = {0}, sc = {0}, zp = {0};
        cr_tensor out = {0}, dout = {0};
        get(f, &x, "x%d", s), get(f, &dy, "dy%d", s), get(f, &y, "y%d", s);
        get(f, &dx, "dx%d", s), get(f, &mn, "min%d", s), get(f, &mx, "max%d", s);
        get(f, &sc, "scale%d", s), get(f, &zp, "zp%d", s);
        char what[96];
        if (observer_only) {
            assert_cr_ok(cr_observer_update(&fq, &x));
        } else {
            like(&out, &x);
            like(&dout, &x);
            uint8_t *mask = malloc(x.numel);
            assert_non_null(mask);
            assert_cr_ok(cr_fake_quant_forward(&fq, &x, &out, mask));
            assert_cr_ok(cr_fake_quantize_backward(mask, &dy, &dout));
            snprintf(what, sizeof what, "%s step %d y", name, s);
            expect_bits(what, out.data, y.data, y.numel);
            snprintf(what, sizeof what, "%s step %d dx", name, s);
            expect_bits(what, dout.data, dx.data, dx.numel);
            snprintf(what, sizeof what, "%s step %d scale", name, s);
            expect_bits(what, fq.scale, sc.data, sc.numel);
            snprintf(what, sizeof what, "%s step %d zero_point", name, s);
            expect_zp(what, fq.zero_point, zp.data, zp.numel);
            free(mask);
        }
        assert_int_equal(fq.channels, (int64_t)mn.numel);
        snprintf(what, sizeof what, "%s step %d running min", name, s);
        expect_bits(what, fq.min_val, mn.data, mn.numel);
        snprintf(what, sizeof what, "%s step %d running max", name, s);
        expect_bits(what, fq.max_val, mx.data, mx.numel);
        cr_tensor *ts[] = {&x, &dy, &y, &dx, &mn, &mx, &sc, &zp, &out, &dout};
        for (size_t i = 0; i < 10; i++) cr_tensor_free(ts[i]);
    }
    if (!observer_only) {   /* what convert would use */
        cr_qparams p;
        cr_tensor cs = {0}, cz = {0};
        get(f, &cs, "conv_scale"), get(f, &cz, "conv_zp");
        assert_cr_ok(cr_fake_quant_qparams(&fq, &p));
        assert_int_equal(p.channels, (int64_t)cs.numel);
        assert_int_equal(p.scheme, weight ? CR_QSCHEME_PER_CHANNEL : CR_QSCHEME_PER_TENSOR);
        for (int64_t c = 0; c < p.channels; c++) {
            const float s = (float)p.scale[c];
            char what[64];
            snprintf(what, sizeof what, "%s converted channel %lld", name, (long long)c);
            expect_bits(what, &s, &cs.data[c], 1);
            expect_zp(what, &p.zero_point[c], &cz.data[c], 1);
        }
        cr_qparams_free(&p);
        cr_tensor_free(&cs), cr_tensor_free(&cz);
    }
    cr_tensor_free(&steps);
    cr_fake_quant_free(&fq);
    cr_st_free(f);
}

/* PyTorch's post-training observers (MinMaxObserver, PerChannelMinMaxObserver) on the
 * same steps: the running extremes after each, the converted parameters at the end. */
static void run_minmax_steps(const char *name, bool weight)
{
    cr_st_file *f = golden(name);
    cr_fake_quant fq;
    assert_cr_ok(weight ? cr_fake_quant_init_weight(&fq) : cr_fake_quant_init_act(&fq));
    fq.minmax = true;
    cr_tensor steps = {0}, cs = {0}, cz = {0};
    get(f, &steps, "steps");
    for (int s = 0; s < (int)steps.data[0]; s++) {
        cr_tensor x = {0}, mn = {0}, mx = {0};
        get(f, &x, "x%d", s), get(f, &mn, "mm_min%d", s), get(f, &mx, "mm_max%d", s);
        assert_cr_ok(cr_observer_update(&fq, &x));
        char what[96];
        snprintf(what, sizeof what, "%s min/max observer step %d min", name, s);
        expect_bits(what, fq.min_val, mn.data, mn.numel);
        snprintf(what, sizeof what, "%s min/max observer step %d max", name, s);
        expect_bits(what, fq.max_val, mx.data, mx.numel);
        cr_tensor_free(&x), cr_tensor_free(&mn), cr_tensor_free(&mx);
    }
    cr_qparams p;
    get(f, &cs, "mm_scale"), get(f, &cz, "mm_zp");
    assert_cr_ok(cr_fake_quant_qparams(&fq, &p));
    for (int64_t c = 0; c < p.channels; c++) {
        const float s = (float)p.scale[c];
        char what[64];
        snprintf(what, sizeof what, "%s min/max converted channel %lld", name, (long long)c);
        expect_bits(what, &s, &cs.data[c], 1);
        expect_zp(what, &p.zero_point[c], &cz.data[c], 1);
    }
    cr_qparams_free(&p);
    cr_tensor_free(&steps), cr_tensor_free(&cs), cr_tensor_free(&cz);
    cr_fake_quant_free(&fq);
    cr_st_free(f);
}

static void observer_update__golden_activation_steps(void **state)
{
    (void)state;
    run_steps("act_steps", false, true);
}

static void observer_update__golden_weight_steps(void **state)
{
    (void)state;
    run_steps("weight_steps", true, true);
}

static void fake_quant_module__golden_activation_steps(void **state)
{
    (void)state;
    run_steps("act_steps", false, false);
}

static void fake_quant_module__golden_weight_steps(void **state)
{
    (void)state;
    run_steps("weight_steps", true, false);
}

static void fake_quant_module__golden_minmax_observers(void **state)
{
    (void)state;
    run_minmax_steps("act_steps", false);
    run_minmax_steps("weight_steps", true);
}

static void fake_quant_module__ranges_and_switches(void **state)
{
    (void)state;
    cr_fake_quant a, w;
    assert_cr_ok(cr_fake_quant_init_act(&a));
    assert_cr_ok(cr_fake_quant_init_weight(&w));
    assert_int_equal(a.qmin, 0);
    assert_int_equal(a.qmax, 127);   /* reduce_range */
    assert_int_equal(w.qmin, -128);
    assert_int_equal(w.qmax, 127);
    /* fake quantization off: identity, the observer still runs (PTQ calibration) */
    cr_tensor x = {0}, y = {0};
    const int64_t n = 5;
    assert_cr_ok(cr_tensor_alloc(&x, 1, &n));
    assert_cr_ok(cr_tensor_alloc(&y, 1, &n));
    const float v[5] = {-1.3f, 0.2f, 0.333f, 2.5f, 7.1f};
    memcpy(x.data, v, sizeof v);
    a.fake_quant_enabled = false;
    assert_cr_ok(cr_fake_quant_forward(&a, &x, &y, NULL));
    expect_bits("fake quant off", y.data, v, 5);
    assert_true(a.min_val[0] == -1.3f && a.max_val[0] == 7.1f);
    /* observer off: min/max stay */
    a.fake_quant_enabled = true;
    a.observer_enabled = false;
    x.data[4] = 100.0f;
    assert_cr_ok(cr_fake_quant_forward(&a, &x, &y, NULL));
    assert_true(a.max_val[0] == 7.1f);
    assert_true(y.data[4] < 7.2f);   /* clamped to the old range */
    /* a per-channel quantizer refuses a tensor with another channel count */
    cr_tensor w4 = {0}, w3 = {0};
    assert_cr_ok(cr_tensor_alloc4(&w4, 4, 1, 1, 2));
    assert_cr_ok(cr_tensor_alloc4(&w3, 3, 1, 1, 2));
    cr_tensor_fill(&w4, 0.25f), cr_tensor_fill(&w3, 0.25f);
    assert_cr_ok(cr_observer_update(&w, &w4));
    assert_cr_fails(cr_observer_update(&w, &w3), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "channels"));
    cr_fake_quant bad;
    assert_cr_fails(cr_fake_quant_init(&bad, CR_DT_I32, false, false, 0, 10, false, 0.01f),
                    CR_EINVAL);
    assert_cr_fails(cr_fake_quant_init(&bad, CR_DT_U8, false, false, 1, 10, false, 0.01f),
                    CR_EINVAL);   /* the range must hold 0 */
    cr_fake_quant_free(&bad);
    cr_tensor_free(&x), cr_tensor_free(&y), cr_tensor_free(&w4), cr_tensor_free(&w3);
    cr_fake_quant_free(&a);
    cr_fake_quant_free(&w);
}

/* ---- BatchNorm folding ------------------------------------------------------------ */

static void fold_bn__golden_inference(void **state)
{
    (void)state;
    cr_st_file *f = golden("convbn");
    cr_tensor w = {0}, b = {0}, g = {0}, be = {0}, rm = {0}, rv = {0}, fw = {0}, fb = {0};
    cr_tensor meta = {0}, ow = {0}, ob = {0};
    get(f, &w, "w"), get(f, &b, "b"), get(f, &g, "gamma"), get(f, &be, "beta");
    get(f, &rm, "rmean3"), get(f, &rv, "rvar3"), get(f, &fw, "fold_w"), get(f, &fb, "fold_b");
    get(f, &meta, "meta");
    like(&ow, &w), like(&ob, &b);
    assert_cr_ok(cr_fold_conv_bn(&w, &b, &g, &be, &rm, &rv, meta.data[0], &ow, &ob));
    expect_bits("folded weight", ow.data, fw.data, fw.numel);
    expect_bits("folded bias", ob.data, fb.data, fb.numel);
    assert_cr_fails(cr_fold_conv_bn(&w, &b, &g, &be, &rm, &rv, 0.0, &ow, &ob), CR_EINVAL);
    assert_cr_fails(cr_fold_conv_bn(&w, &b, &w, &be, &rm, &rv, 1e-5, &ow, &ob), CR_EINVAL);
    cr_tensor *ts[] = {&w, &b, &g, &be, &rm, &rv, &fw, &fb, &meta, &ow, &ob};
    for (size_t i = 0; i < 11; i++) cr_tensor_free(ts[i]);
    cr_st_free(f);
}

/* Conv(3 -> 5, 3x3, padding 1, bias) as the golden ConvBn2d. */
static cr_conv_params convbn_params(void)
{
    cr_conv_params p = cr_conv_params_default(3, 5, 3);
    cr_conv_set_padding(&p, 1, 1);
    return p;
}

/* The golden ConvBn2d steps: qconv + chapter 4's BatchNorm, each step from PyTorch's
 * running statistics before it (so that the scale factor, and with it the weight
 * quantizer, sees the same bits). */
static void qconv_weight_grad__convbn_golden_steps(void **state)
{
    (void)state;
    cr_st_file *f = golden("convbn");
    cr_tensor w = {0}, b = {0}, g = {0}, be = {0}, rm = {0}, rv = {0}, meta = {0};
    get(f, &w, "w"), get(f, &b, "b"), get(f, &g, "gamma"), get(f, &be, "beta");
    get(f, &rm, "rmean_init"), get(f, &rv, "rvar_init"), get(f, &meta, "meta");
    const cr_conv_params p = convbn_params();
    cr_bn_params bnp = {.eps = meta.data[0], .momentum = meta.data[1]};
    const int frozen_from = (int)meta.data[2];
    cr_qconv q;
    assert_cr_ok(cr_qconv_init(&q));
    for (int s = 0; s < 4; s++) {
        cr_tensor x = {0}, dy = {0}, y = {0}, dx = {0}, dw = {0}, db = {0}, dg = {0}, dbe = {0};
        cr_tensor sc = {0}, zp = {0}, wmin = {0}, wmax = {0}, rm1 = {0}, rv1 = {0};
        get(f, &x, "x%d", s), get(f, &dy, "dy%d", s), get(f, &y, "y%d", s);
        get(f, &dx, "dx%d", s), get(f, &dw, "dw%d", s), get(f, &db, "db%d", s);
        get(f, &dg, "dgamma%d", s), get(f, &dbe, "dbeta%d", s), get(f, &sc, "scale%d", s);
        get(f, &zp, "zp%d", s), get(f, &wmin, "wmin%d", s), get(f, &wmax, "wmax%d", s);
        get(f, &rm1, "rmean%d", s), get(f, &rv1, "rvar%d", s);
        if (s > 0) {   /* PyTorch's running statistics before this step */
            cr_tensor_free(&rm), cr_tensor_free(&rv);
            get(f, &rm, "rmean%d", s - 1), get(f, &rv, "rvar%d", s - 1);
        }
        const bool training = s < frozen_from;
        cr_tensor conv = {0}, out = {0}, smean = {0}, sinv = {0}, dconv = {0}, ox = {0};
        cr_tensor odw = {0}, odb = {0}, odg = {0}, odbe = {0};
        like(&conv, &y), like(&out, &y), like(&dconv, &y), like(&ox, &x), like(&odw, &w);
        like(&odb, &b), like(&odg, &g), like(&odbe, &g), like(&smean, &g), like(&sinv, &g);
        assert_cr_ok(cr_qconv_forward(&q, &p, NULL, &x, &w, &b, &g, &rv, bnp.eps, &conv));
        assert_cr_ok(cr_batchnorm2d_forward(&bnp, training, &conv, &g, &be, &rm, &rv, &out,
                                            &smean, &sinv));
        char what[64];
        snprintf(what, sizeof what, "step %d weight scale", s);
        expect_bits(what, q.wfq.scale, sc.data, sc.numel);
        snprintf(what, sizeof what, "step %d weight zero point", s);
        expect_zp(what, q.wfq.zero_point, zp.data, zp.numel);
        snprintf(what, sizeof what, "step %d weight observer min", s);
        expect_bits(what, q.wfq.min_val, wmin.data, wmin.numel);
        snprintf(what, sizeof what, "step %d weight observer max", s);
        expect_bits(what, q.wfq.max_val, wmax.data, wmax.numel);
        snprintf(what, sizeof what, "step %d y", s);
        expect_close(what, &out, &y, CONV_TOL);
        snprintf(what, sizeof what, "step %d running mean", s);
        expect_close(what, &rm, &rm1, 1e-6);
        snprintf(what, sizeof what, "step %d running var", s);
        expect_close(what, &rv, &rv1, 1e-6);
        assert_cr_ok(cr_batchnorm2d_backward(training, &conv, &g, &smean, &sinv, &dy, &dconv,
                                             &odg, &odbe));
        assert_cr_ok(cr_qconv_backward(&q, &p, NULL, &x, &w, &dconv, &ox, &odw, &odb, &odg));
        const cr_tensor *got[] = {&ox, &odw, &odb, &odg, &odbe};
        const cr_tensor *ref[] = {&dx, &dw, &db, &dg, &dbe};
        const char *names[] = {"dx", "dw", "db", "dgamma", "dbeta"};
        for (int k = 0; k < 5; k++) {
            snprintf(what, sizeof what, "step %d %s", s, names[k]);
            if (k == 2 && training) {   /* BN in training removes the bias: db is ~0 noise */
                double nb = 0, ref_norm = 0;
                for (size_t i = 0; i < odb.numel; i++) nb += fabs(odb.data[i]) + fabs(db.data[i]);
                for (size_t i = 0; i < dbe.numel; i++) ref_norm += fabs(dbe.data[i]);
                if (!(nb <= 1e-4 * ref_norm))
                    fail_msg("%s: sum |db| %g (ours and PyTorch's) should vanish beside "
                             "sum |dbeta| %g in training", what, nb, ref_norm);
                continue;
            }
            expect_close(what, got[k], ref[k], CONV_TOL);
        }
        cr_tensor *ts[] = {&x, &dy, &y, &dx, &dw, &db, &dg, &dbe, &sc, &zp, &wmin, &wmax, &rm1,
                           &rv1, &conv, &out, &smean, &sinv, &dconv, &ox, &odw, &odb, &odg, &odbe};
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) cr_tensor_free(ts[i]);
    }
    cr_qconv_free(&q);
    cr_tensor *ts[] = {&w, &b, &g, &be, &rm, &rv, &meta};
    for (size_t i = 0; i < 7; i++) cr_tensor_free(ts[i]);
    cr_st_free(f);
}

/* ---- the model, configured by name ------------------------------------------------ */

/* Builds lab 4's FCN with 5 classes, random weights and a random input N=2, 3 x 12 x 13. */
static void fcn(cr_model *m, cr_tensor *x, cr_rng *r)
{
    assert_cr_ok(cr_model_build_fcn(m, 5));
    assert_cr_ok(cr_model_init_params(m, (uint64_t)(cr_rng_uniform(r) * 1e9)));
    assert_cr_ok(cr_tensor_alloc4(x, 2, 3, 12, 13));
    cr_tensor_fill_uniform(x, r, -1.0f, 1.0f);
}

/* Fails unless every value of t lies on the grid of site fq (per tensor). */
static void expect_on_grid(const char *what, const cr_tensor *t, const cr_fake_quant *fq)
{
    for (size_t i = 0; i < t->numel; i++) {
        const double q = t->data[i] / (double)fq->scale[0] + fq->zero_point[0];
        if (fabs(q - nearbyint(q)) > 1e-3 || q < fq->qmin - 1e-3 || q > fq->qmax + 1e-3)
            fail_msg("%s: element %zu = %.9g is not on the grid (scale %g, zero point %d)", what,
                     i, (double)t->data[i], (double)fq->scale[0], (int)fq->zero_point[0]);
    }
}

static void qat_model__full_places_and_quantizes(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_model m;
    cr_tensor x = {0};
    fcn(&m, &x, &r);
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    int convs, folded, acts;
    cr_qat_counts(&q, &convs, &folded, &acts);
    /* 6 convs, 5 with a BatchNorm; outputs: 5 conv-bn-relu groups, the head, 2 adds;
     * one input (the model's) */
    assert_int_equal(convs, 6);
    assert_int_equal(folded, 5);
    assert_int_equal(acts, 5 + 1 + 2 + 2 + 1);   /* + the two bilinear up-samplings */
    assert_true(cr_qat_site_of(&q, "enc1.conv")->input);
    assert_false(cr_qat_site_of(&q, "enc2.conv")->input);   /* reads a max-pool of a grid */
    assert_true(cr_qat_site_of(&q, "enc1.relu")->output);
    const cr_tensor *out;
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    cr_qat_site *head = cr_qat_site_of(&q, "head"), *e2 = cr_qat_site_of(&q, "enc2.relu");
    expect_on_grid("head output", out, &head->out_fq);
    int e2i = e2->module;
    expect_on_grid("enc2.relu output", &m.mods[e2i].out, &e2->out_fq);
    /* backward runs, and gives every parameter a finite, non-zero gradient */
    cr_tensor dy = {0};
    assert_cr_ok(cr_tensor_alloc(&dy, out->ndim, out->shape));
    cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
    cr_model_zero_grad(&m);
    assert_cr_ok(cr_model_backward(&m, &dy));
    for (int i = 0; i < m.n; i++) {
        if (!m.mods[i].dweight.data) continue;
        double sum = 0;
        for (size_t k = 0; k < m.mods[i].dweight.numel; k++) sum += fabs(m.mods[i].dweight.data[k]);
        if (!isfinite(sum) || sum == 0)
            fail_msg("seed %llu: module %s: weight gradient sum %g", (unsigned long long)seed,
                     m.mods[i].name, sum);
    }
    /* after backward the quantized outputs are back in place */
    expect_on_grid("enc2.relu output after backward", &m.mods[e2i].out, &e2->out_fq);
    cr_qat_free(&q);
    for (int i = 0; i < m.n; i++) assert_null(m.mods[i].hook);
    cr_tensor_free(&dy), cr_tensor_free(&x);
    cr_model_free(&m);
}

static void qat_model__partial_keeps_named_layers_float(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    cr_model m;
    cr_tensor x = {0};
    fcn(&m, &x, &r);
    cr_qat q;
    const char *const keep[] = {"enc1", "head", NULL};   /* the FCN's first stage and head */
    assert_cr_ok(cr_qat_prepare(&q, &m, keep));
    int convs, folded;
    cr_qat_counts(&q, &convs, &folded, NULL);
    assert_int_equal(convs, 4);
    assert_int_equal(folded, 4);
    assert_null(m.mods[cr_qat_site_of(&q, "enc1.conv")->module].hook);
    assert_null(m.mods[cr_qat_site_of(&q, "head")->module].hook);
    assert_true(cr_qat_site_of(&q, "enc2.conv")->input);   /* its input comes from float */
    const cr_tensor *out;
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    cr_qat_free(&q);
    /* the prefix is a whole name component: "enc1" does not keep "enc10" */
    const char *const keep2[] = {"enc", NULL};
    assert_cr_ok(cr_qat_prepare(&q, &m, keep2));
    cr_qat_counts(&q, &convs, NULL, NULL);
    assert_int_equal(convs, 6);
    cr_qat_free(&q);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* The hooked model's forward and backward equal the pieces composed by hand on a
 * conv -> bn -> relu model (what the hooks must wire). */
static void qat_model__hooks_equal_composition(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    cr_model m;
    cr_model_init(&m);
    cr_conv_params p = cr_conv_params_default(2, 3, 3);
    cr_conv_set_padding(&p, 1, 1);
    const cr_bn_params bnp = cr_bn_params_default();
    assert_true(cr_model_add_conv(&m, "c", CR_MODEL_INPUT, &p) == 0);
    assert_true(cr_model_add_batchnorm(&m, "bn", CR_PREV, 3, &bnp) == 1);
    assert_true(cr_model_add_relu(&m, "relu", CR_PREV) == 2);
    assert_cr_ok(cr_model_init_params(&m, seed));
    cr_tensor_fill_uniform(&m.mods[1].weight, &r, 0.5f, 1.5f);
    cr_tensor_fill_uniform(&m.mods[1].running_var, &r, 0.5f, 1.5f);
    cr_tensor x = {0}, dy = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 2, 5, 6));
    cr_tensor_fill_uniform(&x, &r, -2.0f, 2.0f);
    /* by hand, on copies of the parameters */
    cr_tensor rm = {0}, rv = {0}, xq = {0}, conv = {0}, bn = {0}, y = {0}, sm = {0}, si = {0};
    like(&rm, &m.mods[1].running_mean), like(&rv, &m.mods[1].running_var);
    memcpy(rm.data, m.mods[1].running_mean.data, rm.numel * 4);
    memcpy(rv.data, m.mods[1].running_var.data, rv.numel * 4);
    cr_fake_quant fin, fout;
    cr_qconv qc;
    assert_cr_ok(cr_fake_quant_init_act(&fin));
    assert_cr_ok(cr_fake_quant_init_act(&fout));
    assert_cr_ok(cr_qconv_init(&qc));
    like(&xq, &x);
    assert_cr_ok(cr_fake_quant_forward(&fin, &x, &xq, NULL));
    assert_cr_ok(cr_tensor_alloc4(&conv, 2, 3, 5, 6));
    like(&bn, &conv), like(&y, &conv), like(&sm, &rm), like(&si, &rm);
    assert_cr_ok(cr_qconv_forward(&qc, &p, m.conv_forward, &xq, &m.mods[0].weight,
                                  &m.mods[0].bias, &m.mods[1].weight, &rv, bnp.eps, &conv));
    assert_cr_ok(cr_batchnorm2d_forward(&bnp, true, &conv, &m.mods[1].weight, &m.mods[1].bias,
                                        &rm, &rv, &bn, &sm, &si));
    assert_cr_ok(cr_relu_forward(&bn, &y));
    uint8_t mask[180];
    assert_cr_ok(cr_fake_quant_forward(&fout, &y, &y, mask));
    /* the model, hooked */
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    const cr_tensor *out;
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    expect_bits("hooked forward", out->data, y.data, y.numel);
    expect_bits("running var", m.mods[1].running_var.data, rv.data, rv.numel);
    /* backward: relu' on the output before quantization, BN, the folded conv */
    like(&dy, &y);
    cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
    cr_tensor d1 = {0}, d2 = {0}, dw = {0}, db = {0}, dg = {0}, dbe = {0};
    like(&d1, &y), like(&d2, &y), like(&dw, &m.mods[0].weight), like(&db, &m.mods[0].bias);
    like(&dg, &rm), like(&dbe, &rm);
    assert_cr_ok(cr_fake_quantize_backward(mask, &dy, &d1));
    assert_cr_ok(cr_relu_backward(&bn, &d1, &d1));
    assert_cr_ok(cr_batchnorm2d_backward(true, &conv, &m.mods[1].weight, &sm, &si, &d1, &d2, &dg,
                                         &dbe));
    assert_cr_ok(cr_qconv_backward(&qc, &p, m.conv_backward, &xq, &m.mods[0].weight, &d2, NULL,
                                   &dw, &db, &dg));
    cr_model_zero_grad(&m);
    assert_cr_ok(cr_model_backward(&m, &dy));
    expect_bits("hooked dweight", m.mods[0].dweight.data, dw.data, dw.numel);
    expect_bits("hooked dbias", m.mods[0].dbias.data, db.data, db.numel);
    expect_bits("hooked dgamma", m.mods[1].dweight.data, dg.data, dg.numel);
    expect_bits("hooked dbeta", m.mods[1].dbias.data, dbe.data, dbe.numel);
    /* frozen BatchNorm: running statistics do not move in training */
    cr_qat_freeze_bn(&q, true);
    memcpy(rv.data, m.mods[1].running_var.data, rv.numel * 4);
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    expect_bits("frozen running var", m.mods[1].running_var.data, rv.data, rv.numel);
    cr_qat_free(&q);
    assert_false(m.mods[1].frozen);
    cr_tensor *ts[] = {&rm, &rv, &xq, &conv, &bn, &y, &sm, &si, &x, &dy, &d1, &d2, &dw, &db,
                       &dg, &dbe};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) cr_tensor_free(ts[i]);
    cr_fake_quant_free(&fin), cr_fake_quant_free(&fout);
    cr_qconv_free(&qc);
    cr_model_free(&m);
}

/* Post-training quantization: calibration observes without changing the outputs (beyond
 * the folded path's rounding); evaluation then quantizes with the calibrated ranges. */
static void qat_model__ptq_calibration(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    cr_model m;
    cr_tensor x = {0}, ref = {0};
    fcn(&m, &x, &r);
    cr_model_train(&m, false);
    const cr_tensor *out;
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    like(&ref, out);
    memcpy(ref.data, out->data, out->numel * 4);
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, cr_qat_partial_float));
    cr_qat_enable(&q, true, false);                 /* calibrate */
    cr_qat_observe_minmax(&q, true);
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    expect_close("calibration forward", out, &ref, 1e-5);
    cr_qat_site *s = cr_qat_site_of(&q, "enc2.relu");
    assert_true(isfinite(s->out_fq.min_val[0]) && s->out_fq.max_val[0] > 0);
    cr_qat_enable(&q, false, true);                 /* evaluate, quantized */
    const float mx = s->out_fq.max_val[0];
    assert_cr_ok(cr_model_forward(&m, &x, &out));
    assert_true(s->out_fq.max_val[0] == mx);        /* observers frozen */
    cr_cmp c = cr_compare(out->data, ref.data, ref.numel, 0.5, 0.5);
    if (!(c.rel_l2 > 0 && c.rel_l2 < 0.2))
        fail_msg("seed %llu: quantized FCN output relative L2 %.3g from float, expected (0, 0.2)",
                 (unsigned long long)seed, c.rel_l2);
    cr_qat_free(&q);
    cr_tensor_free(&x), cr_tensor_free(&ref);
    cr_model_free(&m);
}

/* A NaN stops the forward with a message naming the module; preparing twice is refused. */
static void qat_model__refuses_nan_and_double_prepare(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    cr_model m;
    cr_tensor x = {0};
    fcn(&m, &x, &r);
    cr_qat q, q2;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    assert_cr_fails(cr_qat_prepare(&q2, &m, NULL), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "already has a hook"));
    x.data[7] = NAN;
    const cr_tensor *out;
    assert_cr_fails(cr_model_forward(&m, &x, &out), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "'enc1.conv'"));
    assert_non_null(strstr(cr_last_error(), "NaN"));
    cr_qat_free(&q);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* Relative difference of a and b against max(|b|, floor). */
static double rel_diff(double a, double b, double floor)
{
    return fabs(a - b) / fmax(fabs(b), floor);
}

/* PyTorch's FX QAT (prepare_qat_fx, x86 mapping) on a ResNet-like block: the same
 * quantizers in the same places, and after each of 3 training steps the same output,
 * quantizer states, running variances and parameter gradients. The convolutions' sums
 * differ in order, so values are compared within bounds, zero points exactly. */
static void qat_model__fx_golden_steps(void **state)
{
    (void)state;
    cr_st_file *f = golden("fx");
    cr_model m;
    cr_model_init(&m);
    cr_conv_params p3 = cr_conv_params_default(3, 8, 3), p8 = cr_conv_params_default(8, 8, 3);
    cr_conv_set_padding(&p3, 1, 1);
    cr_conv_set_padding(&p8, 1, 1);
    const cr_conv_params ph = cr_conv_params_default(8, 4, 1);
    const cr_bn_params bnp = cr_bn_params_default();
    const cr_pool_params pool = cr_pool_params_make(2, 2, 0);
    int ok = cr_model_add_conv(&m, "conv1", CR_MODEL_INPUT, &p3) >= 0;
    ok &= cr_model_add_batchnorm(&m, "bn1", CR_PREV, 8, &bnp) >= 0;
    ok &= cr_model_add_relu(&m, "relu1", CR_PREV) >= 0;
    const int ipool = cr_model_add_maxpool(&m, "pool", CR_PREV, &pool);
    ok &= cr_model_add_conv(&m, "conv2", CR_PREV, &p8) >= 0;
    ok &= cr_model_add_batchnorm(&m, "bn2", CR_PREV, 8, &bnp) >= 0;
    ok &= cr_model_add_relu(&m, "relu2", CR_PREV) >= 0;
    ok &= cr_model_add_conv(&m, "conv3", CR_PREV, &p8) >= 0;
    ok &= cr_model_add_batchnorm(&m, "bn3", CR_PREV, 8, &bnp) >= 0;
    ok &= cr_model_add_add(&m, "add", CR_PREV, ipool) >= 0;
    ok &= cr_model_add_relu(&m, "relu3", CR_PREV) >= 0;
    ok &= cr_model_add_conv(&m, "head", CR_PREV, &ph) >= 0;
    if (!ok || ipool < 0) fail_msg("building the block: %s", cr_last_error());
    assert_cr_ok(cr_model_load_st(&m, f, "qat_fx", "golden."));
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    /* FX's activation quantizers in graph order (2 is 1: the max-pool shares it) */
    cr_fake_quant *fx[7] = {
        &cr_qat_site_of(&q, "conv1")->in_fq, &cr_qat_site_of(&q, "relu1")->out_fq,
        cr_qat_site_of(&q, "pool")->out_share, &cr_qat_site_of(&q, "relu2")->out_fq,
        &cr_qat_site_of(&q, "bn3")->out_fq, &cr_qat_site_of(&q, "relu3")->out_fq,
        &cr_qat_site_of(&q, "head")->out_fq};
    assert_ptr_equal(fx[2], fx[1]);
    int convs, folded, acts;
    cr_qat_counts(&q, &convs, &folded, &acts);
    assert_int_equal(convs, 4);
    assert_int_equal(folded, 3);
    assert_int_equal(acts, 6);
    cr_tensor_list params;
    assert_cr_ok(cr_model_param_list(&m, &params));
    for (int s = 0; s < 3; s++) {
        cr_tensor x = {0}, dy = {0}, y = {0};
        get(f, &x, "golden.x%d", s), get(f, &dy, "golden.dy%d", s), get(f, &y, "golden.y%d", s);
        const cr_tensor *out;
        assert_cr_ok(cr_model_forward(&m, &x, &out));
        char what[128];
        snprintf(what, sizeof what, "step %d output", s);
        expect_close(what, out, &y, CONV_TOL);
        for (int i = 0; i < 7; i++) {
            cr_tensor g = {0};
            get(f, &g, "golden.q%d.%d", s, i);
            const double got[3] = {fx[i]->min_val[0], fx[i]->max_val[0], fx[i]->scale[0]};
            for (int k = 0; k < 3; k++)
                if (rel_diff(got[k], g.data[k], 1e-3) > 1e-5)
                    fail_msg("step %d quantizer %d: %s %.9g, PyTorch %.9g", s, i,
                             (const char *[]){"min", "max", "scale"}[k], got[k], (double)g.data[k]);
            if ((float)fx[i]->zero_point[0] != g.data[3])
                fail_msg("step %d quantizer %d: zero point %d, PyTorch %g", s, i,
                         (int)fx[i]->zero_point[0], (double)g.data[3]);
            cr_tensor_free(&g);
        }
        for (int i = 1; i <= 3; i++) {
            cr_tensor rv = {0};
            char bn[8];
            snprintf(bn, sizeof bn, "bn%d", i);
            get(f, &rv, "golden.rvar%d.bn%d", s, i);
            snprintf(what, sizeof what, "step %d %s.running_var", s, bn);
            expect_close(what, &m.mods[cr_qat_site_of(&q, bn)->module].running_var, &rv, 1e-6);
            cr_tensor_free(&rv);
        }
        cr_model_zero_grad(&m);
        assert_cr_ok(cr_model_backward(&m, &dy));
        for (int k = 0; k < params.n; k++) {
            cr_tensor g = {0};
            get(f, &g, "golden.grad%d.%s", s, params.names[k]);
            snprintf(what, sizeof what, "step %d gradient of %s", s, params.names[k]);
            if (strstr(params.names[k], "conv") && strstr(params.names[k], ".bias")) {
                /* BN in training removes it: both are rounding noise */
                double ours = 0, ref = 0;
                for (size_t i = 0; i < g.numel; i++)
                    ours += fabs(params.grads[k]->data[i]), ref += fabs(g.data[i]);
                if (!(ours < 1e-4 && ref < 1e-4)) fail_msg("%s: %g vs %g, expected ~0", what, ours, ref);
            } else {
                expect_close(what, params.grads[k], &g, 1e-4);
            }
            cr_tensor_free(&g);
        }
        cr_tensor_free(&x), cr_tensor_free(&dy), cr_tensor_free(&y);
    }
    cr_tensor_list_free(&params);
    cr_qat_free(&q);
    cr_model_free(&m);
    cr_st_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(qparams_choose__golden_activation),
        cmocka_unit_test(qparams_choose__golden_weight),
        cmocka_unit_test(qparams_calculate__golden_activation),
        cmocka_unit_test(qparams_calculate__golden_weight),
        cmocka_unit_test(qparams_calculate__never_observed_and_bad_input),
        cmocka_unit_test(fake_quantize__golden_per_tensor),
        cmocka_unit_test(fake_quantize__golden_per_channel),
        cmocka_unit_test(fake_quantize__random_grid_properties),
        cmocka_unit_test(fake_quantize__rejects_bad_parameters),
        cmocka_unit_test(fake_quant_backward__golden),
        cmocka_unit_test(observer_update__golden_activation_steps),
        cmocka_unit_test(observer_update__golden_weight_steps),
        cmocka_unit_test(fake_quant_module__golden_activation_steps),
        cmocka_unit_test(fake_quant_module__golden_weight_steps),
        cmocka_unit_test(fake_quant_module__golden_minmax_observers),
        cmocka_unit_test(fake_quant_module__ranges_and_switches),
        cmocka_unit_test(fold_bn__golden_inference),
        cmocka_unit_test(qconv_weight_grad__convbn_golden_steps),
        cmocka_unit_test(qat_model__full_places_and_quantizes),
        cmocka_unit_test(qat_model__partial_keeps_named_layers_float),
        cmocka_unit_test(qat_model__hooks_equal_composition),
        cmocka_unit_test(qat_model__ptq_calibration),
        cmocka_unit_test(qat_model__fx_golden_steps),
        cmocka_unit_test(qat_model__refuses_nan_and_double_prepare),
    };
    return cr_run_tests("ch07", tests);
}
