/* test_ch06_exec.c — suite ch06: sparse execution. The CSR convolution (reference and
 * fast, every SIMD kernel this CPU runs, 1 and 2 threads) against chapter 3's dense
 * convolution of the masked weight, on random configurations with every nn.Conv2d option;
 * the automatic sparse/dense choice; and the structured shrink of chapter 4's models
 * (a conv-BN-ReLU chain and a ResNeXt bottleneck) and of chapter 8's FPN, whose outputs
 * must equal the masked model's.
 *
 * Bounds: the sums differ from the dense ones only in order, so each output may differ by
 * SUM_TOL times the sum of |w||x| (+|b|) over its taps (float32 rounding of <= 200 terms
 * is below 1.2e-5 of that sum; a wrong or missing tap moves an output by about 1/taps of
 * it). Shrunk models: relative L2 <= 1e-5 against the masked model. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "compare.h"
#include "conv_gemm.h"
#include "cr_test.h"
#include "conv_harness.h"
#include "direct.h"
#include "fpn.h"
#include "gemm.h"
#include "model.h"
#include "model_common.h"
#include "rng.h"
#include "shrink.h"
#include "sparse_conv.h"

#define SUM_TOL 4e-5
#define MODEL_TOL 1e-5

/* ---- helpers ------------------------------------------------------------------------ */

/* Zeroes exactly round(sparsity * numel) elements of w, chosen at random (a shuffle). */
static void prune_exact(cr_tensor *w, double sparsity, cr_rng *r)
{
    const size_t n = w->numel, k = (size_t)llround(sparsity * (double)n);
    size_t *idx = malloc(n * sizeof *idx);
    assert_non_null(idx);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    for (size_t i = 0; i < k; i++) {
        const size_t j = i + (size_t)cr_rng_int(r, 0, (int64_t)(n - 1 - i));
        const size_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        w->data[idx[i]] = 0.0f;
    }
    free(idx);
}

/* A copy of t with every element replaced by its magnitude. */
static void abs_copy(const cr_tensor *t, cr_tensor *out)
{
    assert_cr_ok(cr_tensor_alloc(out, t->ndim, t->shape));
    for (size_t i = 0; i < t->numel; i++) out->data[i] = fabsf(t->data[i]);
}

/* Fails unless |y - ref| <= SUM_TOL * mag + 1e-6 everywhere (mag: the conv of |x|, |w|
 * plus |b|), naming what, the case and the seed. */
static void expect_close(const char *what, const cr_tensor *y, const cr_tensor *ref,
                         const cr_tensor *mag, const char *desc, uint64_t seed)
{
    for (size_t i = 0; i < y->numel; i++) {
        const double d = fabs((double)y->data[i] - ref->data[i]);
        if (!(d <= SUM_TOL * mag->data[i] + 1e-6))
            fail_msg("%s: y[%zu] = %.9g, dense masked conv %.9g (|w||x| sum %.4g) on %s "
                     "(replay with CR_SEED=%llu)", what, i, y->data[i], ref->data[i],
                     mag->data[i], desc, (unsigned long long)seed);
    }
}

/* Runs case (p, n, h, w) at the given sparsity through the reference and the fast sparse
 * conv under every kernel this CPU runs and 1 and 2 threads, against cr_conv2d_fast. */
static void check_sparse_case(const cr_conv_params *p, int64_t n, int64_t h, int64_t w,
                              double sparsity, cr_rng *r, uint64_t seed)
{
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, p, n, h, w));
    cr_tensor x, wt, b, y, ref, xa, wa, mag;
    memset(&b, 0, sizeof b);
    cr_conv_tensors_random(&s, r, &x, &wt, &b, &ref);
    prune_exact(&wt, sparsity, r);
    const cr_tensor *bp = p->bias ? &b : NULL;
    assert_cr_ok(cr_conv2d_fast(p, &x, &wt, bp, &ref));
    abs_copy(&x, &xa);
    abs_copy(&wt, &wa);
    assert_cr_ok(cr_tensor_alloc(&mag, 4, ref.shape));
    cr_conv_params pm = *p;
    pm.bias = false;
    assert_cr_ok(cr_conv2d_direct(&pm, &xa, &wa, NULL, &mag));
    for (size_t i = 0; bp && i < mag.numel; i++)
        mag.data[i] += fabsf(b.data[i / (size_t)(s.h_out * s.w_out) % (size_t)p->out_channels]);
    cr_csr_weight csr;
    assert_cr_ok(cr_csr_from_weight(&csr, &wt, NULL));
    assert_int_equal(csr.nnz, wt.numel - (size_t)llround(sparsity * (double)wt.numel) -
                                  0 /* random weights are never exactly 0 */);
    assert_cr_ok(cr_tensor_alloc(&y, 4, ref.shape));
    char desc[400], pdesc[300];
    cr_conv_params_str(p, pdesc, sizeof pdesc);
    snprintf(desc, sizeof desc, "%lldx%lldx%lldx%lld, sparsity %.2f, %s", (long long)n,
             (long long)p->in_channels, (long long)h, (long long)w, sparsity, pdesc);
    cr_tensor_poison(&y);
    assert_cr_ok(cr_sparse_conv2d_ref(p, &x, &csr, bp, &y));
    expect_close("cr_sparse_conv2d_ref", &y, &ref, &mag, desc, seed);
    static const char *const kernels[] = {"avx512", "avx2", "portable"};
    for (int k = 0; k < 3; k++) {
        if (!cr_gemm_kernel_supported(kernels[k])) continue;
        assert_cr_ok(cr_gemm_set_kernel(kernels[k]));
        assert_string_equal(cr_sparse_conv2d_kernel(), kernels[k]);
        for (int threads = 1; threads <= 2; threads++) {
#ifdef _OPENMP
            omp_set_num_threads(threads);
#endif
            cr_tensor_poison(&y);
            assert_cr_ok(cr_sparse_conv2d(p, &x, &csr, bp, &y));
            char what[64];
            snprintf(what, sizeof what, "cr_sparse_conv2d (%s, %d threads)", kernels[k], threads);
            expect_close(what, &y, &ref, &mag, desc, seed);
        }
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
    cr_csr_free(&csr);
    cr_tensor_free(&x);
    cr_tensor_free(&wt);
    cr_tensor_free(&b);
    cr_tensor_free(&y);
    cr_tensor_free(&ref);
    cr_tensor_free(&xa);
    cr_tensor_free(&wa);
    cr_tensor_free(&mag);
}

/* ---- the format ------------------------------------------------------------------------ */

/* The CSR keeps exactly the mask's nonzero weights and gives them back. */
static void sparse_csr__build_and_back(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    for (int t = 0; t < cr_test_count(20); t++) {
        cr_tensor w, back;
        assert_cr_ok(cr_tensor_alloc4(&w, cr_rng_int(&r, 1, 9), cr_rng_int(&r, 1, 7),
                                      cr_rng_int(&r, 1, 4), cr_rng_int(&r, 1, 4)));
        cr_tensor_fill_uniform(&w, &r, -1.0f, 1.0f);
        cr_mask m;
        assert_cr_ok(cr_mask_alloc(&m, 4, w.shape));
        size_t kept = 0;
        for (size_t i = 0; i < m.numel; i++) kept += m.data[i] = cr_rng_uniform(&r) < 0.3;
        cr_csr_weight c;
        assert_cr_ok(cr_csr_from_weight(&c, &w, &m));
        assert_int_equal(c.nnz, kept);
        assert_int_equal(cr_csr_bytes(&c), (size_t)(w.shape[0] + 1) * 8 + kept * 8);
        assert_true(fabs(cr_csr_density(&c) - (double)kept / (double)w.numel) < 1e-12);
        assert_cr_ok(cr_tensor_alloc(&back, 4, w.shape));
        cr_tensor_poison(&back);
        assert_cr_ok(cr_csr_to_dense(&c, &back));
        for (size_t i = 0; i < w.numel; i++)
            if (back.data[i] != (m.data[i] ? w.data[i] : 0.0f))
                fail_msg("element %zu: %g back, expected %g (seed %llu)", i, back.data[i],
                         m.data[i] ? w.data[i] : 0.0f, (unsigned long long)seed);
        cr_csr_free(&c);
        /* without a mask: the zeros of w */
        w.data[0] = 0.0f;
        assert_cr_ok(cr_csr_from_weight(&c, &w, NULL));
        assert_int_equal(c.nnz, w.numel - 1);
        assert_int_equal(c.row_ptr[1] - c.row_ptr[0], (int64_t)(w.numel / (size_t)w.shape[0]) - 1);
        cr_csr_free(&c);
        cr_mask_free(&m);
        cr_tensor_free(&w);
        cr_tensor_free(&back);
    }
}

/* A mask of another shape, a rank-2 weight and a missing output are refused. */
static void sparse_csr__bad_arguments(void **state)
{
    (void)state;
    cr_tensor w, w2;
    assert_cr_ok(cr_tensor_alloc4(&w, 4, 3, 3, 3));
    cr_tensor_fill(&w, 0.5f);
    const int64_t ms[4] = {4, 3, 3, 2}, s2[2] = {4, 27};
    cr_mask m;
    assert_cr_ok(cr_mask_alloc(&m, 4, ms));
    cr_csr_weight c;
    assert_cr_fails(cr_csr_from_weight(&c, &w, &m), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "mask"));
    assert_cr_ok(cr_tensor_alloc(&w2, 2, s2));
    assert_cr_fails(cr_csr_from_weight(&c, &w2, NULL), CR_EINVAL);
    assert_cr_fails(cr_csr_from_weight(NULL, &w, NULL), CR_EINVAL);
    cr_mask_free(&m);
    cr_tensor_free(&w);
    cr_tensor_free(&w2);
}

/* ---- the convolution ---------------------------------------------------------------------- */

/* Random configurations (every option, groups, strides, dilation, padding modes) at
 * sparsities from 0 to 1. */
static void sparse_conv__equals_dense_masked_random(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    static const double sp[] = {0.0, 0.5, 0.9, 0.97, 1.0};
    const int count = cr_test_count(60);
    for (int t = 0; t < count; t++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_random_conv_config(&r, &p, &n, &h, &w);
        check_sparse_case(&p, n, h, w, sp[cr_rng_int(&r, 0, 4)], &r, seed);
    }
    printf("sparse conv: %d random configurations x kernels x {1, 2} threads equal the dense "
           "masked conv (seed %llu)\n", count, (unsigned long long)seed);
}

/* Shapes like the standard layers (smaller), which take the threaded paths: one pair
 * shared by all threads, and many pairs (batch, groups) each on one thread. */
static void sparse_conv__layer_shapes(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    struct { int64_t cin, cout, k, stride, pad, groups, n, hw, dil; } L[] = {
        {64, 64, 3, 1, 1, 1, 1, 23, 1},    /* a_3x3_64, smaller */
        {96, 80, 3, 1, 1, 1, 1, 14, 1},    /* c-like: few pixels, many rows */
        {3, 16, 7, 2, 3, 1, 1, 37, 1},     /* d_7x7s2: the patch-matrix path */
        {32, 72, 1, 1, 0, 1, 2, 19, 1},    /* e_1x1 */
        {64, 64, 3, 1, 1, 16, 3, 17, 1},   /* f_3x3_g32-like: many pairs */
        {16, 24, 3, 2, 1, 1, 5, 21, 1},    /* strided, batched */
        {12, 20, 3, 1, 2, 1, 2, 15, 2}, /* dilated (stride 1: the shifted plane) */
    };
    for (size_t i = 0; i < sizeof L / sizeof *L; i++) {
        cr_conv_params p = cr_conv_params_default(L[i].cin, L[i].cout, L[i].k);
        p.stride_h = p.stride_w = L[i].stride;
        cr_conv_set_padding(&p, L[i].pad, L[i].pad);
        p.groups = L[i].groups;
        p.dilation_h = p.dilation_w = L[i].dil;
        p.bias = i % 2 == 0;
        check_sparse_case(&p, L[i].n, L[i].hw, L[i].hw, i % 3 == 0 ? 0.9 : 0.6, &r, seed);
    }
}

/* Mismatched CSR, bias and output shapes are refused with the argument named. */
static void sparse_conv__bad_arguments(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_tensor x, w, b, y, wrong;
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 4, 8, 8));
    assert_cr_ok(cr_tensor_alloc4(&w, 6, 4, 3, 3));
    assert_cr_ok(cr_tensor_alloc4(&wrong, 6, 4, 3, 1));
    assert_cr_ok(cr_tensor_alloc(&b, 1, (int64_t[]){6}));
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 6, 6, 6));
    cr_tensor_fill(&x, 1.0f);
    cr_tensor_fill(&w, 1.0f);
    cr_tensor_fill(&wrong, 1.0f);
    cr_tensor_fill(&b, 1.0f);
    cr_csr_weight c, cw;
    assert_cr_ok(cr_csr_from_weight(&c, &w, NULL));
    assert_cr_ok(cr_csr_from_weight(&cw, &wrong, NULL));
    assert_cr_fails(cr_sparse_conv2d(&p, &x, &cw, &b, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "CSR"));
    assert_cr_fails(cr_sparse_conv2d_ref(&p, &x, &cw, &b, &y), CR_EINVAL);
    assert_cr_fails(cr_sparse_conv2d(&p, &x, &c, NULL, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "b must"));
    cr_tensor ys;
    assert_cr_ok(cr_tensor_alloc4(&ys, 1, 6, 5, 6));
    assert_cr_fails(cr_sparse_conv2d(&p, &x, &c, &b, &ys), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "tensor y"));
    assert_cr_fails(cr_conv2d_auto(&p, &x, &wrong, &c, &b, &y), CR_EINVAL);
    /* a y the right shape works, and equals the dense conv */
    assert_cr_ok(cr_sparse_conv2d(&p, &x, &c, &b, &y));
    assert_true(fabsf(y.data[0] - 37.0f) < 1e-5f);   /* 36 ones plus the bias */
    cr_csr_free(&c);
    cr_csr_free(&cw);
    cr_tensor *ts[] = {&x, &w, &b, &y, &wrong, &ys};
    for (size_t i = 0; i < 6; i++) cr_tensor_free(ts[i]);
}

/* The automatic choice: sparse at and above the break-even, dense below; same results. */
static void sparse_auto__chooses_by_break_even(void **state)
{
    (void)state;
    const double be = cr_sparse_break_even();
    assert_true(be > 0.0 && be < 1.0);
    assert_true(cr_sparse_pays(be));
    assert_false(cr_sparse_pays(be - 0.05));
    assert_true(cr_sparse_pays(0.99));
    assert_false(cr_sparse_pays(0.0));
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    cr_conv_params p = cr_conv_params_default(8, 8, 3);
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 2, 9, 11));
    for (int k = 0; k < 2; k++) {
        const double sparsity = k == 0 ? 0.2 : 0.95;
        cr_tensor x, w, b, y, ref;
        cr_conv_tensors_random(&s, &r, &x, &w, &b, &ref);
        prune_exact(&w, sparsity, &r);
        assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &ref));
        cr_csr_weight c;
        assert_cr_ok(cr_csr_from_weight(&c, &w, NULL));
        assert_cr_ok(cr_tensor_alloc(&y, 4, ref.shape));
        cr_tensor_poison(&y);
        assert_cr_ok(cr_conv2d_auto(&p, &x, &w, &c, &b, &y));
        cr_cmp cmp = cr_compare(y.data, ref.data, y.numel, 1e-4, 1e-5);
        if (!cr_cmp_ok(&cmp, 1e-5))
            fail_msg("auto at sparsity %.2f: relative L2 %.3g (seed %llu)", sparsity, cmp.rel_l2,
                     (unsigned long long)seed);
        cr_csr_free(&c);
        cr_tensor *ts[] = {&x, &w, &b, &y, &ref};
        for (size_t i = 0; i < 5; i++) cr_tensor_free(ts[i]);
    }
}

/* ---- the structured shrink ------------------------------------------------------------------ */

/* The module named name. */
static cr_module *module(cr_model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->mods[i].name, name) == 0) return &m->mods[i];
    fail_msg("no module %s", name);
    return NULL;
}

/* Fails unless the shrunk model's output equals the masked one's. */
static void expect_same_output(const cr_tensor *a, const cr_tensor *b, uint64_t seed)
{
    assert_true(cr_tensor_same_shape(a, b));
    cr_cmp cmp = cr_compare(a->data, b->data, a->numel, 1e-4, 1e-5);
    if (!cr_cmp_ok(&cmp, MODEL_TOL))
        fail_msg("shrunk model differs from the masked one: relative L2 %.3g > %g (seed %llu)",
                 cmp.rel_l2, MODEL_TOL, (unsigned long long)seed);
}

/* A random n x 3 x h x w input x (uniform in [-1, 1)), the masked m's output on it into
 * before, then m shrunk (its report into *rep). */
static void shrink_on_input(cr_model *m, cr_rng *r, int64_t n, int64_t h, int64_t w,
                            cr_tensor *x, cr_tensor *before, cr_shrink_report *rep)
{
    random_input(x, n, 3, h, w, r, -1.0f, 1.0f);
    run_model(m, x, before);
    assert_cr_ok(cr_model_shrink(m, rep));
}

/* Fails unless the shrunk m's output on x equals before (expect_same_output). */
static void expect_unchanged(cr_model *m, const cr_tensor *x, const cr_tensor *before,
                             uint64_t seed)
{
    cr_tensor after;
    run_model(m, x, &after);
    expect_same_output(&after, before, seed);
    cr_tensor_free(&after);
}

/* conv 3x3 (bias) -> BN -> ReLU -> conv 1x1 (bias) -> BN -> ReLU -> conv 3x3 (pad 1):
 * every pruned filter of the first conv goes (the 1x1 reader absorbs the constants); of
 * the second, only those whose ReLU output is 0 (the padded 3x3 reader cannot absorb). */
static void shrink__conv_bn_relu_chain(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    cr_model m;
    cr_model_init(&m);
    cr_conv_params p1 = cr_conv_params_default(3, 16, 3), p2 = cr_conv_params_default(16, 8, 1),
                   p3 = cr_conv_params_default(8, 5, 3);
    cr_conv_set_padding(&p1, 1, 1);
    cr_conv_set_padding(&p3, 1, 1);
    assert_true(cr_model_add_conv(&m, "c1", CR_MODEL_INPUT, &p1) >= 0);
    assert_true(cr_model_add_batchnorm(&m, "bn1", CR_PREV, 16, NULL) >= 0);
    assert_true(cr_model_add_relu(&m, "r1", CR_PREV) >= 0);
    assert_true(cr_model_add_conv(&m, "c2", CR_PREV, &p2) >= 0);
    assert_true(cr_model_add_batchnorm(&m, "bn2", CR_PREV, 8, NULL) >= 0);
    assert_true(cr_model_add_relu(&m, "r2", CR_PREV) >= 0);
    assert_true(cr_model_add_conv(&m, "c3", CR_PREV, &p3) >= 0);
    random_eval_params(&m, seed, &r);
    /* prune c1 filters 0, 5, 6, 15 (BN1 gives them nonzero constants, made positive so
     * the ReLU passes them) and c2 filters 1, 2, 6: 1 and 6 forced to ReLU zero, 2 not */
    const int64_t c1_pruned[] = {0, 5, 6, 15}, c2_pruned[] = {1, 2, 6};
    cr_module *c1 = module(&m, "c1"), *c2 = module(&m, "c2"), *bn1 = module(&m, "bn1"),
              *bn2 = module(&m, "bn2");
    for (int i = 0; i < 4; i++) {
        const int64_t o = c1_pruned[i];
        memset(c1->weight.data + o * 27, 0, 27 * sizeof(float));
        bn1->bias.data[o] = 3.0f;
    }
    for (int i = 0; i < 3; i++) {
        const int64_t o = c2_pruned[i];
        memset(c2->weight.data + o * 16, 0, 16 * sizeof(float));
        bn2->bias.data[o] = o == 2 ? 3.0f : -3.0f;
    }
    cr_tensor x, before;
    cr_shrink_report rep;
    shrink_on_input(&m, &r, 2, 9, 7, &x, &before, &rep);
    c1 = module(&m, "c1");
    c2 = module(&m, "c2");
    assert_int_equal(c1->conv.out_channels, 12);
    assert_int_equal(module(&m, "bn1")->channels, 12);
    assert_int_equal(c2->conv.in_channels, 12);
    assert_int_equal(c2->conv.out_channels, 6);
    assert_int_equal(module(&m, "c3")->conv.in_channels, 6);
    assert_int_equal(rep.channels_removed, 6);
    assert_int_equal(rep.channels_kept_dead, 1);
    assert_int_equal(rep.weights_after, 12 * 27 + 6 * 12 + 5 * 6 * 9);
    expect_unchanged(&m, &x, &before, seed);
    cr_tensor_free(&x);
    cr_tensor_free(&before);
    cr_model_free(&m);
}

/* A stem and a ResNeXt bottleneck (8 groups of 4): conv1's filters of conv2's groups 1
 * and 5 pruned with their BatchNorm entries (network slimming's convention, so they are
 * zero after the ReLU), and conv2's group 3 pruned. conv2 loses groups 1, 3, 5 (their
 * constants go into bn3's running mean), conv1 the 12 channels they read. */
static void shrink__resnext_bottleneck(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    cr_model m;
    cr_model_init(&m);
    cr_conv_params ps = cr_conv_params_default(3, 16, 3);
    cr_conv_set_padding(&ps, 1, 1);
    assert_true(cr_model_add_conv(&m, "stem", CR_MODEL_INPUT, &ps) >= 0);
    assert_true(cr_model_add_batchnorm(&m, "stem_bn", CR_PREV, 16, NULL) >= 0);
    assert_true(cr_model_add_relu(&m, "stem_relu", CR_PREV) >= 0);
    assert_true(cr_model_add_bottleneck(&m, "layer1.0", CR_PREV, 16, 32, 16, 8, 1, false) >= 0);
    random_eval_params(&m, seed, &r);
    cr_module *conv1 = module(&m, "layer1.0.conv1"), *bn1 = module(&m, "layer1.0.bn1"),
              *conv2 = module(&m, "layer1.0.conv2");
    for (int64_t o = 0; o < 32; o++)
        if (o / 4 == 1 || o / 4 == 5) {
            memset(conv1->weight.data + o * 16, 0, 16 * sizeof(float));
            bn1->weight.data[o] = bn1->bias.data[o] = 0.0f;
        }
    memset(conv2->weight.data + 12 * 36, 0, 4 * 36 * sizeof(float));   /* group 3 */
    cr_tensor x, before;
    cr_shrink_report rep;
    shrink_on_input(&m, &r, 2, 11, 10, &x, &before, &rep);
    conv1 = module(&m, "layer1.0.conv1");
    conv2 = module(&m, "layer1.0.conv2");
    assert_int_equal(conv1->conv.out_channels, 20);
    assert_int_equal(module(&m, "layer1.0.bn1")->channels, 20);
    assert_int_equal(conv2->conv.groups, 5);
    assert_int_equal(conv2->conv.in_channels, 20);
    assert_int_equal(conv2->conv.out_channels, 20);
    assert_int_equal(module(&m, "layer1.0.bn2")->channels, 20);
    assert_int_equal(module(&m, "layer1.0.conv3")->conv.in_channels, 20);
    assert_int_equal(module(&m, "layer1.0.conv3")->conv.out_channels, 16);
    assert_int_equal(rep.groups_removed, 3);
    assert_int_equal(rep.channels_kept_dead, 0);
    expect_unchanged(&m, &x, &before, seed);
    /* the smaller model still trains: one forward and backward in training mode */
    cr_model_train(&m, true);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    cr_tensor dy;
    assert_cr_ok(cr_tensor_alloc(&dy, y->ndim, y->shape));
    cr_tensor_fill(&dy, 0.01f);
    assert_cr_ok(cr_model_backward(&m, &dy));
    cr_tensor_free(&dy);
    cr_tensor_free(&x);
    cr_tensor_free(&before);
    cr_model_free(&m);
}

/* Chapter 8's network (a reduced FPN + ResNeXt: one bottleneck per stage, 4 groups of 4):
 * in every bottleneck, conv1's filters of conv2's group 1 pruned with their BatchNorm
 * entries, and conv2's group 3 pruned. Each conv2 loses 2 of its 4 groups, each conv1
 * 8 of its 16 filters; the decoder (GroupNorm, up-sampling, adds) is left alone; the
 * output equals the masked network's. */
static void shrink__fpn_network(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    cr_fpn_config c = cr_fpn_config_resnext50(5);
    c.stem = 16;
    for (int i = 0; i < 4; i++) {
        c.planes[i] = 32;
        c.blocks[i] = 1;
    }
    c.groups = 4;
    c.width_per_group = 8;   /* width = 32 * 8 / 64 * 4 = 16: 4 groups of 4 */
    c.pyramid = 32;
    c.segmentation = 32;
    cr_model m;
    cr_model_init(&m);
    assert_cr_ok(cr_fpn_build(&m, &c));
    random_eval_params(&m, seed, &r);
    static const char *const stages[] = {"encoder.layer1.0", "encoder.layer2.0", "encoder.layer3.0",
                                         "encoder.layer4.0"};
    char name[96];
    for (int st = 0; st < 4; st++) {
        snprintf(name, sizeof name, "%s.conv1", stages[st]);
        cr_module *conv1 = module(&m, name);
        snprintf(name, sizeof name, "%s.bn1", stages[st]);
        cr_module *bn1 = module(&m, name);
        snprintf(name, sizeof name, "%s.conv2", stages[st]);
        cr_module *conv2 = module(&m, name);
        assert_int_equal(conv2->conv.groups, 4);
        assert_int_equal(conv2->conv.out_channels, 16);
        const int64_t per1 = (int64_t)conv1->weight.numel / 16, per2 = (int64_t)conv2->weight.numel / 16;
        for (int64_t o = 4; o < 8; o++) {
            memset(conv1->weight.data + o * per1, 0, (size_t)per1 * sizeof(float));
            bn1->weight.data[o] = bn1->bias.data[o] = 0.0f;
        }
        memset(conv2->weight.data + 12 * per2, 0, (size_t)(4 * per2) * sizeof(float));
    }
    cr_tensor x, before;
    cr_shrink_report rep;
    shrink_on_input(&m, &r, 1, 64, 96, &x, &before, &rep);
    for (int st = 0; st < 4; st++) {
        snprintf(name, sizeof name, "%s.conv2", stages[st]);
        assert_int_equal(module(&m, name)->conv.groups, 2);
        assert_int_equal(module(&m, name)->conv.out_channels, 8);
        snprintf(name, sizeof name, "%s.conv1", stages[st]);
        assert_int_equal(module(&m, name)->conv.out_channels, 8);
    }
    assert_int_equal(rep.groups_removed, 8);
    assert_int_equal(rep.channels_kept_dead, 0);
    expect_unchanged(&m, &x, &before, seed);
    cr_tensor_free(&x);
    cr_tensor_free(&before);
    cr_model_free(&m);
}

/* Shrinking needs evaluation mode; a grouped conv loses whole groups only. */
static void shrink__bad_arguments(void **state)
{
    (void)state;
    cr_model m;
    cr_model_init(&m);
    cr_conv_params p = cr_conv_params_default(8, 8, 3);
    p.groups = 4;
    assert_true(cr_model_add_conv(&m, "c", CR_MODEL_INPUT, &p) >= 0);
    assert_cr_fails(cr_model_shrink(&m, NULL), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "evaluation mode"));
    cr_module *c = &m.mods[0];
    uint8_t keep[8] = {1, 1, 0, 1, 1, 1, 1, 1};
    cr_conv_params p2;
    cr_tensor w2, b2;
    assert_cr_ok(cr_model_init_params(&m, 1));
    assert_cr_fails(cr_conv_keep_filters(&c->conv, &c->weight, &c->bias, keep, &p2, &w2, &b2, NULL),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "whole groups"));
    keep[3] = 0;   /* group 1 whole: a 6-channel conv of 3 groups, inputs 2,3 gone */
    uint8_t in_keep[8];
    assert_cr_ok(cr_conv_keep_filters(&c->conv, &c->weight, &c->bias, keep, &p2, &w2, &b2, in_keep));
    assert_int_equal(p2.groups, 3);
    assert_int_equal(p2.in_channels, 6);
    assert_int_equal(p2.out_channels, 6);
    assert_int_equal(in_keep[2] + in_keep[3], 0);
    assert_int_equal(in_keep[0] + in_keep[1] + in_keep[4] + in_keep[7], 4);
    assert_true(w2.data[2 * 18] == c->weight.data[4 * 18]);
    assert_true(b2.data[2] == c->bias.data[4]);
    cr_tensor_free(&w2);
    cr_tensor_free(&b2);
    cr_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sparse_csr__build_and_back),
        cmocka_unit_test(sparse_csr__bad_arguments),
        cmocka_unit_test(sparse_conv__equals_dense_masked_random),
        cmocka_unit_test(sparse_conv__layer_shapes),
        cmocka_unit_test(sparse_conv__bad_arguments),
        cmocka_unit_test(sparse_auto__chooses_by_break_even),
        cmocka_unit_test(shrink__conv_bn_relu_chain),
        cmocka_unit_test(shrink__resnext_bottleneck),
        cmocka_unit_test(shrink__fpn_network),
        cmocka_unit_test(shrink__bad_arguments),
    };
    return cr_run_tests("ch06_exec", tests);
}
