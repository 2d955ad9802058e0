/* test_ch07_convert.c — suite ch07: the int8 model converted from a QAT-prepared model
 * (chapters/07-qat/convert.h) against the fake-quantized model's evaluation forward.
 *
 * The network is chapter 8's FPN at the width chapter 8's tests and lab 8's --quick use
 * (stem 8, planes 4/8/16/32, blocks 1/2/1/1, groups 4), random weights, random BatchNorm
 * statistics and affine parameters (so that folding matters), calibrated with min/max
 * observers on one random batch and compared on another (so that clamping happens).
 * Bounds: each step alone (im.teacher: every int8 step reads the fake-quantized model's
 * values of its inputs) is within one step of the fake quantizer at every quantized
 * tensor (a convolution group's output, a quantized add + ReLU, pool or up-sampling) and
 * equal on at least EXACT of all their values together; free-running, where differences
 * carry on and the decoder's GroupNorm magnifies them, the final float logits are within
 * LOGIT_TOL (max) and LOGIT_MEAN_TOL (mean) of their range. Seeds from CR_SEED (printed). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "convert.h"
#include "cr_test.h"
#include "fakequant.h"
#include "fpn.h"
#include "model.h"
#include "qat.h"
#include "rng.h"

#define EXACT 0.99         /* each step alone: share of the u8 values of all quantized tensors
                            * together that are equal (measured over CR_SEED=1..1000, both tests:
                            * 0.99732 to 1, median 0.99980). Not per tensor: a channel whose
                            * outputs are one constant (a dead filter's bias) sits on one side of a
                            * rounding boundary in float and may sit on the other in integers, all
                            * of it one step off; in the reduced network's 4-channel tensors that is
                            * a quarter of a tensor (CR_SEED=843: 0.75 of encoder.layer1.0.relu2,
                            * every value within one step), and a per-tensor bound of 0.9 failed
                            * 3 seeds in 1000 and CI once (CR_SEED=5098: 0.83) */
#define EXACT_TENSOR 0.5   /* and in every tensor alone (worst measured over the same seeds: 0.75,
                            * one channel of four; a tensor wholly one step off gives 0) */
#define LOGIT_TOL 0.10     /* free-running, final logits: max |diff| / (max - min) */
#define LOGIT_MEAN_TOL 0.01  /* and mean |diff| / (max - min) */

static uint64_t seed_now(void)
{
    const char *s = getenv("CR_SEED");
    const uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
    printf("# CR_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}

/* The reduced FPN of chapter 8's tests, random weights and norm statistics. */
static void build_fpn(cr_model *m, cr_rng *rng, uint64_t seed)
{
    const cr_fpn_config c = {.classes = 11, .stem = 8, .planes = {4, 8, 16, 32},
                             .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                             .pyramid = 16, .segmentation = 32, .dropout = 0.2};
    cr_model_init(m);
    assert_cr_ok(cr_fpn_build(m, &c));
    assert_cr_ok(cr_model_init_params(m, seed));
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        if (d->kind != CR_MOD_BATCHNORM && d->kind != CR_MOD_GROUPNORM) continue;
        for (int64_t k = 0; k < d->channels; k++) {
            d->weight.data[k] = cr_rng_uniform_f(rng, 0.5f, 1.5f);
            d->bias.data[k] = cr_rng_uniform_f(rng, -0.2f, 0.2f);
            if (d->kind == CR_MOD_BATCHNORM) {
                d->running_mean.data[k] = cr_rng_uniform_f(rng, -0.2f, 0.2f);
                d->running_var.data[k] = cr_rng_uniform_f(rng, 0.3f, 2.0f);
            }
        }
    }
    cr_model_train(m, false);
}

/* What one comparison found. */
typedef struct {
    int tensors;
    double worst_within1;   /* smallest share within one step over the tensors */
    double worst_exact;     /* smallest share equal */
    const char *worst_name; /* the tensor (module) it is in, and its size */
    size_t worst_numel;
    double pooled_exact;    /* share equal over the values of every tensor together */
    int max_steps;
    double logit_rel;       /* max |diff| / range of the logits */
    double logit_mean_rel;  /* mean |diff| / range */
    int float_convs;
} cmp_result;

/* Calibrates q on x1 (min/max observers, no fake quantization), runs the fake-quantized
 * model and the int8 model on x2 and compares every quantized tensor and the logits;
 * teacher: every int8 step reads the fake-quantized model's values (each step alone). */
static cmp_result compare_on(cr_model *m, const char *const *keep, const cr_tensor *x1,
                             const cr_tensor *x2, bool teacher)
{
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, m, keep));
    cr_qat_observe_minmax(&q, true);
    cr_qat_enable(&q, true, false);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(m, x1, &y));
    cr_qat_enable(&q, false, true);
    assert_cr_ok(cr_model_forward(m, x2, &y));   /* every module's output stays */
    cr_int8_model im;
    assert_cr_ok(cr_int8_convert(&im, &q));
    im.keep = true;
    im.teacher = teacher ? m : NULL;
    const cr_tensor *yi;
    assert_cr_ok(cr_int8_forward(&im, x2, &yi));
    cmp_result r = {0, 1.0, 1.0, NULL, 0, 0, 0, 0, 0, im.float_convs};
    size_t all = 0, all_exact = 0;
    for (int i = 0; i < m->n; i++) {
        const cr_i8_value *v = cr_int8_value_of(&im, i);
        if (!v || !v->has_q) continue;
        const int e = im.steps[i].kind == CR_I8_CONV || im.steps[i].kind == CR_I8_ADD_RELU
                          ? im.steps[i].end : i;
        const cr_tensor *ref = &m->mods[e].out;   /* fake-quantized in place by its hook */
        assert_int_equal(ref->numel, (size_t)(v->shape[0] * v->shape[1] * v->shape[2] * v->shape[3]));
        size_t within = 0, exact = 0;
        for (size_t k = 0; k < ref->numel; k++) {
            const float qf = (float)v->g.zp + nearbyintf(ref->data[k] / v->g.scale);
            const int d = abs((int)v->q[k] - (int)qf);
            within += d <= 1;
            exact += d == 0;
            if (d > r.max_steps) r.max_steps = d;
        }
        all += ref->numel;
        all_exact += exact;
        const double share = (double)within / (double)ref->numel;
        if (share < r.worst_within1) r.worst_within1 = share;
        if ((double)exact / (double)ref->numel < r.worst_exact) {
            r.worst_exact = (double)exact / (double)ref->numel;
            r.worst_name = m->mods[e].name;
            r.worst_numel = ref->numel;
        }
        r.tensors++;
    }
    r.pooled_exact = all ? (double)all_exact / (double)all : 1.0;
    const cr_tensor *ref = &m->mods[m->n - 1].out;
    assert_true(cr_tensor_same_shape(ref, yi));
    float lo = INFINITY, hi = -INFINITY, dmax = 0;
    double dsum = 0;
    for (size_t k = 0; k < ref->numel; k++) {
        lo = fminf(lo, ref->data[k]);
        hi = fmaxf(hi, ref->data[k]);
        dmax = fmaxf(dmax, fabsf(ref->data[k] - yi->data[k]));
        dsum += fabsf(ref->data[k] - yi->data[k]);
    }
    assert_true(hi > lo);   /* not a constant output */
    r.logit_rel = dmax / (hi - lo);
    r.logit_mean_rel = dsum / (double)ref->numel / (hi - lo);
    printf("# %s: %d quantized tensors; share exact %.5f of all values, worst %.5f ('%s', "
           "%zu values), within 1 step %.5f; max %d steps; logits max |diff| %.4g, mean %.4g, "
           "of range %.4g (%d int8 convs, %d float)\n",
           teacher ? "each step alone" : "free-running", r.tensors, r.pooled_exact,
           r.worst_exact, r.worst_name ? r.worst_name : "-", r.worst_numel, r.worst_within1,
           r.max_steps, (double)dmax, dsum / (double)ref->numel, (double)(hi - lo), im.convs,
           im.float_convs);
    cr_int8_model_free(&im);
    cr_qat_free(&q);
    return r;
}

/* Runs the comparison for one configuration and checks the bounds. */
static void check_config(const char *const *keep, int expect_float_convs)
{
    const uint64_t seed = seed_now();
    cr_rng rng;
    cr_rng_seed(&rng, seed);
    cr_model m;
    build_fpn(&m, &rng, seed);
    cr_tensor x1 = {0}, x2 = {0};
    assert_cr_ok(cr_tensor_alloc4(&x1, 2, 3, 64, 96));
    assert_cr_ok(cr_tensor_alloc4(&x2, 2, 3, 64, 96));
    cr_tensor_fill_uniform(&x1, &rng, -2, 2);
    cr_tensor_fill_uniform(&x2, &rng, -2.2f, 2.2f);   /* a little outside: clamping */
    const cmp_result t = compare_on(&m, keep, &x1, &x2, true);
    assert_int_equal(t.float_convs, expect_float_convs);
    assert_true(t.tensors > 20);
    assert_true(t.max_steps <= 1);            /* each step: within one step everywhere */
    assert_true(t.pooled_exact >= EXACT);
    assert_true(t.worst_exact >= EXACT_TENSOR);
    const cmp_result r = compare_on(&m, keep, &x1, &x2, false);
    assert_true(r.logit_mean_rel <= LOGIT_MEAN_TOL);
    assert_true(r.logit_rel <= LOGIT_TOL);
    cr_tensor_free(&x1);
    cr_tensor_free(&x2);
    cr_model_free(&m);
}

static void convert__fpn_full_matches_fake_quant(void **state)
{
    (void)state;
    check_config(NULL, 0);
}

static void convert__fpn_partial_matches_fake_quant(void **state)
{
    (void)state;
    check_config(cr_qat_partial_float, 2);
}

/* The reference of a u8 step on its input bytes: v's float on grid g quantized back to
 * g, as the fake quantizer rounds (zp + nearbyint(v / scale) through 1 / scale). */
static uint8_t quantize_ref(const cr_qgrid *g, float v)
{
    const float qf = (float)g->zp + nearbyintf(v * (1.0f / g->scale));
    return (uint8_t)fminf(fmaxf(qf, (float)g->qmin), (float)g->qmax);
}

/* The kept output of module k: that of the step whose group ends at k if one does. */
static const cr_i8_value *output_of(const cr_int8_model *im, int k)
{
    for (int j = 0; j <= k && k >= 0; j++)
        if ((im->steps[j].kind == CR_I8_CONV || im->steps[j].kind == CR_I8_ADD_RELU) &&
            im->steps[j].end == k)
            return cr_int8_value_of(im, j);
    return k >= 0 ? cr_int8_value_of(im, k) : NULL;
}

/* Input k of the add at element e: its byte dequantized, or its float. */
static float add_in(const cr_i8_value *v, size_t e)
{
    return v->has_q ? ((float)v->q[e] - (float)v->g.zp) * v->g.scale : v->f.data[e];
}

/* Free-running, the steps that work on u8 bytes (a max-pool on its input's grid, the
 * fused add + ReLU, a quantized add) equal, byte for byte, their float definition on the
 * same input bytes: dequantize, the float model's operation, quantize. */
static void convert__u8_steps_equal_float_definition(void **state)
{
    (void)state;
    const uint64_t seed = seed_now();
    cr_rng rng;
    cr_rng_seed(&rng, seed);
    cr_model m;
    build_fpn(&m, &rng, seed);
    cr_tensor x = {0}, pf = {0}, pq = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 64, 96));
    cr_tensor_fill_uniform(&x, &rng, -2, 2);
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    cr_qat_observe_minmax(&q, true);
    cr_qat_enable(&q, true, false);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    cr_int8_model im;
    assert_cr_ok(cr_int8_convert(&im, &q));
    im.keep = true;
    cr_tensor_fill_uniform(&x, &rng, -2.2f, 2.2f);
    assert_cr_ok(cr_int8_forward(&im, &x, &y));
    int pools = 0, adds = 0, merges = 0;
    for (int i = 0; i < m.n; i++) {
        const cr_module *d = &m.mods[i];
        const cr_i8_value *v = cr_int8_value_of(&im, i), *a = output_of(&im, d->in);
        if (!v || !v->has_q || !a || !(a->has_q || a->has_f)) continue;
        const size_t n = (size_t)(v->shape[0] * v->shape[1] * v->shape[2] * v->shape[3]);
        size_t bad = 0;
        if (d->kind == CR_MOD_MAXPOOL && a->has_q) {
            const size_t na = (size_t)(a->shape[0] * a->shape[1] * a->shape[2] * a->shape[3]);
            assert_cr_ok(cr_tensor_alloc4(&pf, a->shape[0], a->shape[1], a->shape[2], a->shape[3]));
            assert_cr_ok(cr_tensor_alloc4(&pq, v->shape[0], v->shape[1], v->shape[2], v->shape[3]));
            for (size_t k = 0; k < na; k++) pf.data[k] = ((float)a->q[k] - (float)a->g.zp) * a->g.scale;
            assert_cr_ok(cr_maxpool2d_forward(&d->pool, &pf, &pq, NULL));
            for (size_t k = 0; k < n; k++) bad += v->q[k] != quantize_ref(&v->g, pq.data[k]);
            cr_tensor_free(&pf);
            cr_tensor_free(&pq);
            pools++;
        } else if (d->kind == CR_MOD_ADD) {
            const cr_i8_value *b = output_of(&im, d->in2);
            if (!b || !(b->has_q || b->has_f)) continue;
            const int relu = im.steps[i].kind == CR_I8_ADD_RELU;
            for (size_t k = 0; k < n; k++) {
                const float s = add_in(a, k) + add_in(b, k);
                bad += v->q[k] != quantize_ref(&v->g, relu && !(s > 0.0f) ? 0.0f : s);
            }
            adds += relu;
            merges += !relu;
        } else {
            continue;
        }
        if (bad)
            fail_msg("'%s': %zu of %zu bytes differ from the float definition (seed %llu)",
                     d->name, bad, n, (unsigned long long)seed);
    }
    printf("# %d max-pools, %d add + ReLU steps and %d quantized adds equal their float "
           "definition\n", pools, adds, merges);
    assert_true(pools >= 1 && adds >= 4 && merges >= 3);
    cr_int8_model_free(&im);
    cr_qat_free(&q);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* The grid's quantize and dequantize equal the fake quantizer bit for bit, in and out of
 * range, ties included. */
static void convert__grid_equals_fake_quantizer(void **state)
{
    (void)state;
    const uint64_t seed = seed_now();
    cr_rng rng;
    cr_rng_seed(&rng, seed);
    const int cases = cr_test_count(50);
    cr_tensor x = {0}, y = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 1, 1, 999));
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 1, 1, 999));
    uint8_t q[999];
    float back[999];
    for (int c = 0; c < cases; c++) {
        const cr_qgrid g = {cr_rng_uniform_f(&rng, 0.001f, 0.5f), (int32_t)cr_rng_int(&rng, 0, 127),
                            0, 127};
        for (size_t k = 0; k < x.numel; k++)   /* a third exactly on half steps */
            x.data[k] = k % 3 ? cr_rng_uniform_f(&rng, -200 * g.scale, 200 * g.scale)
                              : ((float)cr_rng_int(&rng, -300, 300) + 0.5f) * g.scale;
        assert_cr_ok(cr_fake_quantize_per_tensor(&x, g.scale, g.zp, g.qmin, g.qmax, &y, NULL));
        cr_qgrid_quantize(&g, x.data, (int64_t)x.numel, q);
        cr_qgrid_dequantize(&g, q, (int64_t)x.numel, back);
        for (size_t k = 0; k < x.numel; k++) {
            assert_true(q[k] <= g.qmax);
            if (memcmp(&back[k], &y.data[k], 4) != 0)
                fail_msg("case %d, x %.9g: grid %.9g, fake quantizer %.9g", c, (double)x.data[k],
                         (double)back[k], (double)y.data[k]);
        }
    }
    cr_tensor_free(&x);
    cr_tensor_free(&y);
}


/* cr_u8_maxpool against the plain definition (every window's maximum over the positions
 * inside the plane, clamped) on random planes, kernels 1-4, strides 1-3, paddings up to
 * kernel / 2, widths odd and even (the stem's 3x3 / 2 pool has a vectorized inside). */
static void convert__u8_maxpool_equals_definition(void **state)
{
    (void)state;
    const uint64_t seed = seed_now();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(400);
    for (int c = 0; c < count; c++) {
        const int64_t k = c % 5 == 0 ? 3 : cr_rng_int(&r, 1, 4);
        const int64_t st = c % 5 == 0 ? 2 : cr_rng_int(&r, 1, 3);
        const int64_t pad = cr_rng_int(&r, 0, k / 2);
        const cr_pool_params p = cr_pool_params_make(k, st, pad);
        const int64_t planes = cr_rng_int(&r, 1, 3), H = cr_rng_int(&r, k, 9),
                      W = cr_rng_int(&r, k, 70);
        int64_t Ho, Wo;
        assert_cr_ok(cr_maxpool2d_out_size(&p, H, W, &Ho, &Wo));
        const uint8_t qmin = (uint8_t)(c % 3 == 0 ? cr_rng_int(&r, 0, 60) : 0),
                      qmax = (uint8_t)(c % 4 == 0 ? cr_rng_int(&r, 200, 255) : 255);
        uint8_t *x = malloc((size_t)(planes * H * W)), *y = malloc((size_t)(planes * Ho * Wo) + 1);
        assert_non_null(x);
        assert_non_null(y);
        for (int64_t i = 0; i < planes * H * W; i++) x[i] = (uint8_t)cr_rng_int(&r, 0, 255);
        y[planes * Ho * Wo] = 0xA5;
        assert_cr_ok(cr_u8_maxpool(&p, planes, H, W, Ho, Wo, x, qmin, qmax, y));
        for (int64_t pl = 0; pl < planes; pl++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    int best = -1;
                    for (int64_t i = oh * st - pad; i < oh * st - pad + k; i++)
                        for (int64_t j = ow * st - pad; j < ow * st - pad + k; j++)
                            if (i >= 0 && i < H && j >= 0 && j < W && x[(pl * H + i) * W + j] > best)
                                best = x[(pl * H + i) * W + j];
                    const int want = best < qmin ? qmin : best > qmax ? qmax : best;
                    const int got = y[(pl * Ho + oh) * Wo + ow];
                    if (got != want)
                        fail_msg("cr_u8_maxpool k %lld s %lld p %lld on %lldx%lld: output (%lld, "
                                 "%lld, %lld) = %d, expected %d (seed %llu)", (long long)k,
                                 (long long)st, (long long)pad, (long long)H, (long long)W,
                                 (long long)pl, (long long)oh, (long long)ow, got, want,
                                 (unsigned long long)seed);
                }
        assert_int_equal(y[planes * Ho * Wo], 0xA5);
        free(x);
        free(y);
    }
    printf("# cr_u8_maxpool: %d random pools equal the definition\n", count);
}

/* A model that has not run since prepare (no quantizer parameters) is refused by name,
 * and so is a NULL or unprepared qat; the failed model frees cleanly. */
static void convert__refuses_uncalibrated(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, 7);
    cr_model m;
    build_fpn(&m, &rng, 7);
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    cr_int8_model im;
    assert_cr_fails(cr_int8_convert(&im, &q), CR_EINVAL);
    printf("# %s\n", cr_last_error());
    assert_non_null(strstr(cr_last_error(), "has no parameters"));
    cr_int8_model_free(&im);
    cr_qat empty;
    memset(&empty, 0, sizeof empty);
    assert_cr_fails(cr_int8_convert(&im, &empty), CR_EINVAL);
    assert_cr_fails(cr_int8_convert(&im, NULL), CR_EINVAL);
    cr_int8_model_free(&im);
    cr_tensor x = {0};
    assert_cr_fails(cr_int8_forward(&im, &x, NULL), CR_EINVAL);
    cr_qat_free(&q);
    cr_model_free(&m);
}

/* The int8 model's parameter bytes: under a third of fp32's on full QAT. */
static void convert__model_bytes(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, 11);
    cr_model m;
    build_fpn(&m, &rng, 11);
    cr_tensor x = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 3, 64, 64));
    cr_tensor_fill_uniform(&x, &rng, -2, 2);
    cr_qat q;
    assert_cr_ok(cr_qat_prepare(&q, &m, NULL));
    cr_qat_enable(&q, true, false);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    cr_int8_model im;
    assert_cr_ok(cr_int8_convert(&im, &q));
    const int64_t b8 = cr_int8_model_bytes(&im), b32 = 4 * cr_model_num_scalars(&m);
    printf("# int8 %lld bytes, fp32 %lld bytes\n", (long long)b8, (long long)b32);
    assert_true(b8 > 0 && b8 * 2 < b32);
    cr_int8_model_free(&im);
    cr_qat_free(&q);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(convert__grid_equals_fake_quantizer),
        cmocka_unit_test(convert__fpn_full_matches_fake_quant),
        cmocka_unit_test(convert__fpn_partial_matches_fake_quant),
        cmocka_unit_test(convert__u8_steps_equal_float_definition),
        cmocka_unit_test(convert__u8_maxpool_equals_definition),
        cmocka_unit_test(convert__refuses_uncalibrated),
        cmocka_unit_test(convert__model_bytes),
    };
    return cr_run_tests("ch07_convert", tests);
}
