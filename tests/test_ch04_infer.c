/* test_ch04_infer.c — suite ch04: the model's evaluation forward (model.h), which keeps
 * nothing for backward, shares activation buffers by liveness, defers BatchNorm and ReLU
 * to the next reader and fuses add + ReLU, against the same graph computed module by
 * module with the layer functions of layers.h, each into its own tensor.
 *
 * The graph exercises every rule: a BatchNorm and a ReLU deferred onto a conv's buffer
 * and applied by the next conv; a deferred ReLU read by two modules; an add of two
 * deferred BatchNorms followed by a ReLU (one pass); an output read three times; a
 * GroupNorm with a deferred ReLU read by an up-sampling; dropout (identity) passing a
 * pending BatchNorm on; a ReLU whose input has other readers (not deferred).
 * Bound: relative L2 1e-5 (the deferred BatchNorm rounds its scale and shift to float,
 * as the layer function does; only the order of a few roundings differs). Random inputs
 * and parameters from a printed seed (CR_SEED replays). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compare.h"
#include "cr_test.h"
#include "direct.h"
#include "layers.h"
#include "model.h"
#include "rng.h"

#define INFER_TOL 1e-5

/* The modules of the test graph, by index (see build_graph). */
enum { G_CONV_A, G_BN_A, G_RELU_A, G_CONV_B, G_BN_B, G_CONV_D, G_BN_D, G_ADD_1, G_RELU_1,
       G_ADD_2, G_POOL, G_GN, G_RELU_G, G_UP, G_DROP, G_BN_E, G_ADD_3, G_RELU_R, G_ADD_4,
       G_COUNT };

/* A conv params k x k, padding k/2, with bias. */
static cr_conv_params conv_p(int64_t cin, int64_t cout, int64_t k)
{
    cr_conv_params p = cr_conv_params_default(cin, cout, k);
    cr_conv_set_padding(&p, k / 2, k / 2);
    return p;
}

/* Builds the test graph (C channels, input 4 channels) into m. */
static void build_graph(cr_model *m, int64_t C)
{
    const cr_conv_params pa = conv_p(4, C, 3), pb = conv_p(C, C, 1), pd = conv_p(4, C, 1);
    const cr_pool_params pool = cr_pool_params_make(2, 2, 0);
    const cr_upsample_params up = {.mode = CR_UPSAMPLE_BILINEAR, .align_corners = true,
                                   .scale_h = 2, .scale_w = 2};
    cr_model_init(m);
    int ok = 1;
    ok &= cr_model_add_conv(m, "conv_a", CR_MODEL_INPUT, &pa) == G_CONV_A;
    ok &= cr_model_add_batchnorm(m, "bn_a", CR_PREV, C, NULL) == G_BN_A;
    ok &= cr_model_add_relu(m, "relu_a", CR_PREV) == G_RELU_A;
    ok &= cr_model_add_conv(m, "conv_b", G_RELU_A, &pb) == G_CONV_B;
    ok &= cr_model_add_batchnorm(m, "bn_b", CR_PREV, C, NULL) == G_BN_B;
    ok &= cr_model_add_conv(m, "conv_d", CR_MODEL_INPUT, &pd) == G_CONV_D;
    ok &= cr_model_add_batchnorm(m, "bn_d", CR_PREV, C, NULL) == G_BN_D;
    ok &= cr_model_add_add(m, "add_1", G_BN_B, G_BN_D) == G_ADD_1;
    ok &= cr_model_add_relu(m, "relu_1", CR_PREV) == G_RELU_1;
    ok &= cr_model_add_add(m, "add_2", G_RELU_1, G_RELU_A) == G_ADD_2;
    ok &= cr_model_add_maxpool(m, "pool", CR_PREV, &pool) == G_POOL;
    ok &= cr_model_add_groupnorm(m, "gn", CR_PREV, 2, C, 1e-5) == G_GN;
    ok &= cr_model_add_relu(m, "relu_g", CR_PREV) == G_RELU_G;
    ok &= cr_model_add_upsample(m, "up", CR_PREV, &up, -1) == G_UP;
    ok &= cr_model_add_dropout2d(m, "drop", CR_PREV, 0.3) == G_DROP;
    ok &= cr_model_add_batchnorm(m, "bn_e", CR_PREV, C, NULL) == G_BN_E;
    ok &= cr_model_add_add(m, "add_3", G_BN_E, G_ADD_2) == G_ADD_3;
    ok &= cr_model_add_relu(m, "relu_r", G_ADD_2) == G_RELU_R;
    ok &= cr_model_add_add(m, "add_4", G_RELU_R, G_ADD_3) == G_ADD_4;
    if (!ok) fail_msg("building the test graph: %s", cr_last_error());
}

/* Random parameters and BatchNorm statistics (variances in [0.5, 2]). */
static void randomize(cr_model *m, cr_rng *r)
{
    assert_cr_ok(cr_model_init_params(m, cr_rng_next(r)));
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        if (d->kind == CR_MOD_BATCHNORM || d->kind == CR_MOD_GROUPNORM) {
            cr_tensor_fill_uniform(&d->weight, r, 0.5f, 1.5f);
            cr_tensor_fill_uniform(&d->bias, r, -0.5f, 0.5f);
        }
        if (d->kind == CR_MOD_BATCHNORM) {
            cr_tensor_fill_uniform(&d->running_mean, r, -0.3f, 0.3f);
            cr_tensor_fill_uniform(&d->running_var, r, 0.5f, 2.0f);
        }
    }
}

/* out = module d of m applied to x (and x2 for an add) with the layer functions, in
 * evaluation mode, into a fresh tensor. */
static void reference_module(const cr_module *d, const cr_tensor *x, const cr_tensor *x2,
                             cr_tensor *out)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    cr_tensor sm = {0}, si = {0};
    switch (d->kind) {
    case CR_MOD_CONV: {
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &d->conv, N, H, W));
        assert_cr_ok(cr_tensor_alloc4(out, N, d->conv.out_channels, s.h_out, s.w_out));
        assert_cr_ok(cr_conv2d_direct(&d->conv, x, &d->weight, &d->bias, out));
        break;
    }
    case CR_MOD_BATCHNORM:
        assert_cr_ok(cr_tensor_alloc4(out, N, C, H, W));
        assert_cr_ok(cr_tensor_alloc(&sm, 1, &C));
        assert_cr_ok(cr_tensor_alloc(&si, 1, &C));
        assert_cr_ok(cr_batchnorm2d_forward(&d->bn, false, x, &d->weight, &d->bias,
                                            (cr_tensor *)&d->running_mean,
                                            (cr_tensor *)&d->running_var, out, &sm, &si));
        break;
    case CR_MOD_GROUPNORM: {
        const int64_t ng = N * d->groups;
        assert_cr_ok(cr_tensor_alloc4(out, N, C, H, W));
        assert_cr_ok(cr_tensor_alloc(&sm, 1, &ng));
        assert_cr_ok(cr_tensor_alloc(&si, 1, &ng));
        assert_cr_ok(cr_groupnorm_forward(d->groups, d->eps, x, &d->weight, &d->bias, out, &sm, &si));
        break;
    }
    case CR_MOD_RELU:
        assert_cr_ok(cr_tensor_alloc4(out, N, C, H, W));
        assert_cr_ok(cr_relu_forward(x, out));
        break;
    case CR_MOD_ADD:
        assert_cr_ok(cr_tensor_alloc4(out, N, C, H, W));
        assert_cr_ok(cr_add_forward(x, x2, out));
        break;
    case CR_MOD_DROPOUT:
        assert_cr_ok(cr_tensor_alloc4(out, N, C, H, W));
        memcpy(out->data, x->data, x->numel * sizeof(float));
        break;
    case CR_MOD_MAXPOOL: {
        int64_t ho, wo;
        assert_cr_ok(cr_maxpool2d_out_size(&d->pool, H, W, &ho, &wo));
        assert_cr_ok(cr_tensor_alloc4(out, N, C, ho, wo));
        assert_cr_ok(cr_maxpool2d_forward(&d->pool, x, out, NULL));
        break;
    }
    case CR_MOD_UPSAMPLE: {
        int64_t ho, wo;
        assert_cr_ok(cr_upsample_out_size(&d->up, H, W, &ho, &wo));
        assert_cr_ok(cr_tensor_alloc4(out, N, C, ho, wo));
        assert_cr_ok(cr_upsample_forward(&d->up, x, out));
        break;
    }
    default:
        fail_msg("the test graph has no module of kind %d", (int)d->kind);
    }
    cr_tensor_free(&sm);
    cr_tensor_free(&si);
}

/* The graph's output computed module by module, every output kept, into *y. */
static void reference_forward(const cr_model *m, const cr_tensor *x, cr_tensor *y)
{
    cr_tensor outs[G_COUNT];
    memset(outs, 0, sizeof outs);
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        const cr_tensor *a = d->in == CR_MODEL_INPUT ? x : &outs[d->in];
        const cr_tensor *b = d->kind == CR_MOD_ADD ? &outs[d->in2] : NULL;
        reference_module(d, a, b, &outs[i]);
    }
    *y = outs[m->n - 1];
    for (int i = 0; i < m->n - 1; i++) cr_tensor_free(&outs[i]);
}

/* Fails unless out is within INFER_TOL of ref (relative L2), naming what and the seed. */
static void expect_close(const char *what, const cr_tensor *out, const cr_tensor *ref,
                         uint64_t seed)
{
    if (!cr_tensor_same_shape(out, ref)) fail_msg("%s: shapes differ (seed %llu)", what, (unsigned long long)seed);
    cr_cmp c = cr_compare(out->data, ref->data, ref->numel, INFER_TOL, INFER_TOL);
    if (!cr_cmp_ok(&c, INFER_TOL)) {
        cr_print_faults(stderr, out->data, ref->data, ref->numel, NULL, 0, INFER_TOL, INFER_TOL, 5);
        fail_msg("%s: relative L2 %.3g > %.0e (seed %llu; CR_SEED replays)", what, c.rel_l2,
                 INFER_TOL, (unsigned long long)seed);
    }
}

/* The evaluation forward equals the module-by-module computation, on odd sizes, twice in
 * a row (the pool reused) and after a training forward; the pooled run's output is the
 * only one it keeps valid, and every module keeps its shape. */
static void model_eval__matches_module_by_module(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    printf("seed %llu\n", (unsigned long long)seed);
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int64_t sizes[][4] = {{2, 4, 10, 14}, {1, 4, 6, 8}, {3, 4, 8, 12}};
    for (int k = 0; k < cr_test_count(3) && k < 3; k++) {
        const int64_t C = 6 + 2 * k;
        cr_model m;
        build_graph(&m, C);
        randomize(&m, &r);
        cr_tensor x = {0}, ref = {0};
        assert_cr_ok(cr_tensor_alloc4(&x, sizes[k][0], sizes[k][1], sizes[k][2], sizes[k][3]));
        cr_tensor_fill_uniform(&x, &r, -2, 2);
        reference_forward(&m, &x, &ref);
        cr_model_train(&m, false);
        const cr_tensor *y;
        for (int pass = 0; pass < 2; pass++) {
            assert_cr_ok(cr_model_forward(&m, &x, &y));
            expect_close(pass ? "second evaluation forward" : "evaluation forward", y, &ref, seed);
        }
        for (int i = 0; i < m.n; i++)
            if (m.mods[i].out.ndim != 4) fail_msg("module %d lost its output shape", i);
        /* a training forward in between (it moves the running statistics: a new
         * reference), then evaluation again */
        cr_model_train(&m, true);
        assert_cr_ok(cr_model_forward(&m, &x, &y));
        cr_tensor_free(&ref);
        reference_forward(&m, &x, &ref);
        cr_model_train(&m, false);
        assert_cr_ok(cr_model_forward(&m, &x, &y));
        expect_close("evaluation forward after a training forward", y, &ref, seed);
        cr_tensor_free(&x);
        cr_tensor_free(&ref);
        cr_model_free(&m);
    }
}

/* A backward after an evaluation forward is refused (it kept nothing); training after
 * evaluation gives the same bits as training alone (forward output and gradients). */
static void model_eval__then_training(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    printf("seed %llu\n", (unsigned long long)seed);
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_model a, b;
    build_graph(&a, 6);
    build_graph(&b, 6);
    randomize(&a, &r);
    cr_tensor_list la = {0}, lb = {0};
    assert_cr_ok(cr_model_state_list(&a, &la));
    assert_cr_ok(cr_model_state_list(&b, &lb));
    for (int i = 0; i < la.n; i++)
        memcpy(lb.tensors[i]->data, la.tensors[i]->data, la.tensors[i]->numel * sizeof(float));
    cr_tensor x = {0}, dy = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 4, 8, 10));
    cr_tensor_fill_uniform(&x, &r, -2, 2);
    const cr_tensor *ya, *yb;
    /* a: training forward, evaluation forward, backward refused */
    assert_cr_ok(cr_model_forward(&a, &x, &ya));
    assert_cr_ok(cr_tensor_alloc(&dy, ya->ndim, ya->shape));
    cr_tensor_fill_uniform(&dy, &r, -1, 1);
    cr_model_train(&a, false);
    assert_cr_ok(cr_model_forward(&a, &x, &ya));
    cr_model_train(&a, true);
    assert_cr_fails(cr_model_backward(&a, &dy), CR_EINVAL);
    if (!strstr(cr_last_error(), "training mode"))
        fail_msg("the refusal does not say why: %s", cr_last_error());
    /* then a training step on both; the dropout streams are seeded alike */
    assert_cr_ok(cr_model_init_params(&a, 5));
    assert_cr_ok(cr_model_init_params(&b, 5));
    assert_cr_ok(cr_model_forward(&a, &x, &ya));
    assert_cr_ok(cr_model_forward(&b, &x, &yb));
    assert_memory_equal(ya->data, yb->data, ya->numel * sizeof(float));
    cr_model_zero_grad(&a);
    cr_model_zero_grad(&b);
    assert_cr_ok(cr_model_backward(&a, &dy));
    assert_cr_ok(cr_model_backward(&b, &dy));
    cr_tensor_list ga = {0}, gb = {0};
    assert_cr_ok(cr_model_param_list(&a, &ga));
    assert_cr_ok(cr_model_param_list(&b, &gb));
    for (int i = 0; i < ga.n; i++)
        if (memcmp(ga.grads[i]->data, gb.grads[i]->data, ga.grads[i]->numel * sizeof(float)))
            fail_msg("gradient of %s differs after an evaluation forward (seed %llu)", ga.names[i],
                     (unsigned long long)seed);
    cr_tensor_list_free(&ga);
    cr_tensor_list_free(&gb);
    cr_tensor_list_free(&la);
    cr_tensor_list_free(&lb);
    cr_tensor_free(&x);
    cr_tensor_free(&dy);
    cr_model_free(&a);
    cr_model_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(model_eval__matches_module_by_module),
        cmocka_unit_test(model_eval__then_training),
    };
    return cr_run_tests("ch04_infer", tests);
}
