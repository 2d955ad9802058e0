/* test_ch06_fpn.c — suite ch06: chapter 8's network executed sparse. The width-reduced
 * FPN + ResNeXt of chapter 8's lab and tests (stem 8, planes 4/8/16/32, blocks 1/2/1/1,
 * groups 4), random weights and norm statistics, magnitude-pruned (first conv and head
 * kept dense, as lab 6's grid does by default):
 *   unstructured  run through cr_sparse_model (CSR above the break-even, dense below);
 *   structured    filters pruned by L2 norm, cut out by cr_model_shrink where exact, the
 *                 rest run by the filters path;
 * each against the masked dense model's output. Bound: relative L2 <= MODEL_TOL (the
 * paths sum the same products in another order; float32 over a few hundred terms per
 * output and about 30 layers stays near 1e-6; a wrong tap or a missing bias is of the
 * order of the output itself). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compare.h"
#include "cr_test.h"
#include "fpn.h"
#include "model.h"
#include "model_common.h"
#include "prune.h"
#include "rng.h"
#include "shrink.h"
#include "sparse_model.h"

#define MODEL_TOL 1e-5

static const char *const dense_layers[] = {"encoder.conv1.weight", "segmentation_head.0.weight", NULL};

/* The reduced network of chapter 8's lab (--quick) with 11 classes, in evaluation mode,
 * random weights, BatchNorm and GroupNorm parameters and statistics. */
static void build_reduced(cr_model *m, uint64_t seed, cr_rng *r)
{
    const cr_fpn_config c = {.classes = 11, .stem = 8, .planes = {4, 8, 16, 32},
                             .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                             .pyramid = 16, .segmentation = 32, .dropout = 0.2};
    cr_model_init(m);
    assert_cr_ok(cr_fpn_build(m, &c));
    random_eval_params(m, seed, r);
}

/* Fails unless a equals b within MODEL_TOL (relative L2), naming what and the seed. */
static void expect_same(const char *what, const cr_tensor *a, const cr_tensor *b, uint64_t seed)
{
    assert_true(cr_tensor_same_shape(a, b));
    cr_cmp cmp = cr_compare(a->data, b->data, a->numel, 1e-4, 1e-5);
    if (!cr_cmp_ok(&cmp, MODEL_TOL))
        fail_msg("%s differs from the masked dense model: relative L2 %.3g > %g "
                 "(replay with CR_SEED=%llu)", what, cmp.rel_l2, MODEL_TOL, (unsigned long long)seed);
}

/* Prunes every convolution of m but those named in exclude (NULL: none) to sparsity s
 * (kind, norm). */
static void prune_model(cr_model *m, cr_prune_kind kind, cr_prune_norm norm,
                        const char *const *exclude, double s)
{
    cr_pruner p;
    const cr_prune_config c = {.kind = kind, .norm = norm, .exclude = exclude};
    assert_cr_ok(cr_pruner_init(&p, m, &c));
    assert_cr_ok(cr_pruner_prune(&p, s));
    cr_pruner_free(&p);
}

/* Seeds r (CR_SEED replays), builds the reduced network into m and prunes it to sparsity
 * s (prune_model's kind, norm and exclusions); returns the seed. */
static uint64_t build_pruned(cr_model *m, cr_rng *r, cr_prune_kind kind, cr_prune_norm norm,
                             const char *const *exclude, double s)
{
    const uint64_t seed = seed_rng(r);
    build_reduced(m, seed, r);
    prune_model(m, kind, norm, exclude, s);
    return seed;
}

/* Unstructured at 0.9 (every pruned layer above the break-even: the CSR path, or the
 * filters path where whole filters happen to be empty) and at 0.5 (below it: dense),
 * batch 2: the attached model's output is the masked one's; detached, the dense again. */
static void sparse_model__fpn_unstructured(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    const double sparsities[] = {cr_sparse_break_even() <= 0.85 ? 0.9 : 0.97, 0.5};
    for (int k = 0; k < 2; k++) {
        cr_model m;
        build_reduced(&m, seed + (uint64_t)k, &r);
        prune_model(&m, CR_PRUNE_UNSTRUCTURED, CR_PRUNE_L2, dense_layers, sparsities[k]);
        cr_tensor x, ref, y, again;
        random_input(&x, 2, 3, 64, 96, &r, -2.0f, 2.0f);
        run_model(&m, &x, &ref);
        cr_sparse_model e;
        assert_cr_ok(cr_sparse_model_attach(&e, &m, NULL));
        int convs = 0;
        for (int i = 0; i < m.n; i++) convs += m.mods[i].kind == CR_MOD_CONV;
        assert_int_equal(e.n, convs);
        const int sparse = e.count[CR_SPARSE_PATH_CSR] + e.count[CR_SPARSE_PATH_FILTERS];
        if (k == 0) {
            /* all but the two kept dense (the smallest pruned layer, 32 weights, keeps 87.5%
             * zeros: above every break-even but the portable kernel's) */
            if (cr_sparse_break_even() <= 0.85) assert_int_equal(sparse, convs - 2);
            assert_true(e.count[CR_SPARSE_PATH_CSR] > 0);
        } else {
            /* 0.5 is below every break-even: no CSR (small layers may lose whole filters
             * by chance: those take the filters path) */
            assert_int_equal(e.count[CR_SPARSE_PATH_CSR], 0);
        }
        assert_true(cr_sparse_model_bytes(&e) <= cr_model_param_bytes(&m) || k == 1);
        cr_tensor_poison(&m.mods[m.n - 1].out);
        run_model(&m, &x, &y);
        if (k == 0) assert_true(e.calls[CR_SPARSE_PATH_CSR] >= e.count[CR_SPARSE_PATH_CSR]);
        assert_int_equal(e.calls[0] + e.calls[1] + e.calls[2], convs);
        expect_same(k == 0 ? "unstructured 0.9, executed sparse" : "unstructured 0.5", &y, &ref, seed);
        cr_sparse_model_detach(&e);
        assert_true(m.conv_forward != NULL);
        run_model(&m, &x, &again);
        expect_same("detached", &again, &ref, seed);
        cr_tensor *ts[] = {&x, &ref, &y, &again};
        for (int i = 0; i < 4; i++) cr_tensor_free(ts[i]);
        cr_model_free(&m);
    }
}

/* Structured (whole filters by L2) at 0.5: cr_model_shrink cuts what it can exactly,
 * the filters path runs the rest; the output is the masked model's, batch 1 and 3.
 * Whether a draw leaves anything the shrink may cut is chance: a dead filter goes only
 * when its constant is 0 or absorbable, and a grouped layer's only as a whole group, and
 * about one seed in 4000 (CR_SEED=422) leaves nothing. Such a draw is no test of the
 * shrink, so the next seed is drawn, up to SHRINK_DRAWS; a shrink that never cuts fails. */
#define SHRINK_DRAWS 8
static void sparse_model__fpn_structured(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t first = seed_rng(&r);
    for (int t = 0; t < SHRINK_DRAWS; t++) {
        const uint64_t seed = first + (uint64_t)t;
        cr_rng_seed(&r, seed);
        cr_model m;
        build_reduced(&m, seed, &r);
        prune_model(&m, CR_PRUNE_FILTERS, CR_PRUNE_L2, dense_layers, 0.5);
        cr_tensor x1, x3, ref1, ref3, y1, y3;
        random_input(&x1, 1, 3, 96, 64, &r, -2.0f, 2.0f);
        random_input(&x3, 3, 3, 64, 64, &r, -2.0f, 2.0f);
        run_model(&m, &x1, &ref1);
        run_model(&m, &x3, &ref3);
        const size_t bytes_before = cr_model_param_bytes(&m);
        cr_shrink_report rep;
        assert_cr_ok(cr_model_shrink(&m, &rep));
        if (rep.weights_after == rep.weights_before) {   /* nothing cuttable: draw again */
            assert_int_equal(rep.channels_removed, 0);
            cr_tensor *ts[] = {&x1, &x3, &ref1, &ref3};
            for (int i = 0; i < 4; i++) cr_tensor_free(ts[i]);
            cr_model_free(&m);
            continue;
        }
        assert_true(rep.weights_after < rep.weights_before);
        assert_true(rep.channels_kept_dead > 0);   /* adds and padded readers keep some */
        cr_sparse_model e;
        assert_cr_ok(cr_sparse_model_attach(&e, &m, NULL));
        assert_true(e.count[CR_SPARSE_PATH_FILTERS] > 0);
        assert_true(cr_sparse_model_bytes(&e) < bytes_before);
        run_model(&m, &x1, &y1);
        expect_same("structured 0.5, shrunk and executed (batch 1)", &y1, &ref1, seed);
        assert_true(e.calls[CR_SPARSE_PATH_FILTERS] >= e.count[CR_SPARSE_PATH_FILTERS]);
        run_model(&m, &x3, &y3);
        expect_same("structured 0.5, shrunk and executed (batch 3)", &y3, &ref3, seed);
        cr_sparse_model_detach(&e);
        cr_tensor *ts[] = {&x1, &x3, &ref1, &ref3, &y1, &y3};
        for (int i = 0; i < 6; i++) cr_tensor_free(ts[i]);
        cr_model_free(&m);
        return;
    }
    fail_msg("cr_model_shrink cut nothing in %d draws from CR_SEED=%llu (a draw leaves "
             "nothing about once in 4000)", SHRINK_DRAWS, (unsigned long long)first);
}

/* The filters path without the shrink, on the whole pruned network, every layer pruned
 * (head included: a dead head filter's plane is its bias). */
static void sparse_model__filters_path_alone(void **state)
{
    (void)state;
    cr_rng r;
    cr_model m;
    const uint64_t seed = build_pruned(&m, &r, CR_PRUNE_FILTERS, CR_PRUNE_L1, NULL, 0.3);
    cr_tensor x, ref, y;
    random_input(&x, 2, 3, 64, 96, &r, -2.0f, 2.0f);
    run_model(&m, &x, &ref);
    cr_sparse_model e;
    cr_sparse_model_config cfg = cr_sparse_model_config_default();
    cfg.csr = false;
    assert_cr_ok(cr_sparse_model_attach(&e, &m, &cfg));
    assert_int_equal(e.count[CR_SPARSE_PATH_CSR], 0);
    assert_true(e.count[CR_SPARSE_PATH_FILTERS] > 0);
    run_model(&m, &x, &y);
    expect_same("structured 0.3, filters path", &y, &ref, seed);
    cr_sparse_model_detach(&e);
    cr_tensor_free(&x);
    cr_tensor_free(&ref);
    cr_tensor_free(&y);
    cr_model_free(&m);
}

/* NULL arguments, a model without convolutions, attaching twice. */
static void sparse_model__bad_arguments(void **state)
{
    (void)state;
    cr_sparse_model e;
    memset(&e, 0, sizeof e);
    assert_cr_fails(cr_sparse_model_attach(NULL, NULL, NULL), CR_EINVAL);
    cr_model m;
    cr_model_init(&m);
    assert_true(cr_model_add_relu(&m, "r", CR_MODEL_INPUT) >= 0);
    assert_cr_fails(cr_sparse_model_attach(&e, &m, NULL), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "no convolution"));
    cr_model_free(&m);
    cr_rng r;
    cr_rng_seed(&r, 5);
    build_reduced(&m, 5, &r);
    assert_cr_ok(cr_sparse_model_attach(&e, &m, NULL));
    cr_sparse_model e2;
    assert_cr_fails(cr_sparse_model_attach(&e2, &m, NULL), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "already attached"));
    assert_int_equal(e.count[CR_SPARSE_PATH_DENSE], e.n);   /* nothing pruned */
    cr_sparse_model_detach(&e);
    cr_sparse_model_detach(&e);   /* twice: harmless */
    cr_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sparse_model__fpn_unstructured),
        cmocka_unit_test(sparse_model__fpn_structured),
        cmocka_unit_test(sparse_model__filters_path_alone),
        cmocka_unit_test(sparse_model__bad_arguments),
    };
    return cr_run_tests("ch06_fpn", tests);
}
