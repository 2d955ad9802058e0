/* test_ch04_layers.c — suite ch04: the pieces of a training loop (layers, losses,
 * optimizers, initialisation, the model's state dict) against PyTorch's golden
 * tensors (reference/make_golden_layers.py), finite differences, and the CamVid
 * loader on a tiny synthetic folder.
 *
 * Bounds: forward outputs and gradients within relative L2 1e-5 of the golden
 * float64 results (fp32 storage, sums in double: the observed errors are ~1e-7);
 * optimizer trajectories within 1e-5 after 20 steps; finite differences (float32
 * forward, loss summed in double, central step 1e-3, 2e-4 through ReLU and max-pool)
 * within 1e-2 of the largest gradient. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "compare.h"
#include "cr_test.h"
#include "dataset.h"
#include "gemm.h"
#include "layers.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "png_io.h"
#include "rng.h"
#include "safetensors.h"

#define GOLDEN_TOL 1e-5   /* relative L2 against the golden float64 result */
#define TRAJ_TOL 1e-5     /* optimizer trajectories, relative L2 per step */
#define FD_TOL 1e-2       /* finite differences, relative to max |gradient| */

/* ---- helpers ------------------------------------------------------------------------ */

/* Opens reference/golden/layer_NAME.safetensors (from $CR_GOLDEN_DIR); fails the test if absent. */
static cr_st_file *golden(const char *name)
{
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir) fail_msg("CR_GOLDEN_DIR is not set (meson test sets it to reference/golden)");
    char path[1024];
    snprintf(path, sizeof path, "%s/layer_%s.safetensors", dir, name);
    cr_st_file *f = NULL;
    if (cr_st_load(&f, path) != CR_OK)
        fail_msg("cannot read %s: %s (run /usr/bin/python3 reference/make_golden_layers.py)",
                 path, cr_last_error());
    return f;
}

/* Reads tensor `name` of golden file f into t. */
static void get(const cr_st_file *f, const char *name, cr_tensor *t)
{
    assert_cr_ok(cr_st_get(f, name, t));
}

/* Allocates out with ref's shape, poisoned. */
static void like(cr_tensor *out, const cr_tensor *ref)
{
    assert_cr_ok(cr_tensor_alloc(out, ref->ndim, ref->shape));
    cr_tensor_poison(out);
}

/* Fails unless out is within relative L2 tol of ref (same numel), printing the first faults. */
static void expect_close(const char *what, const char *case_name, const cr_tensor *out,
                         const cr_tensor *ref, double tol)
{
    if (out->numel != ref->numel)
        fail_msg("%s %s: %zu values, expected %zu", case_name, what, out->numel, ref->numel);
    cr_cmp c = cr_compare(out->data, ref->data, ref->numel, tol, tol);
    if (!cr_cmp_ok(&c, tol)) {
        cr_print_faults(stderr, out->data, ref->data, ref->numel, NULL, 0, tol, tol, 5);
        fail_msg("%s %s: relative L2 error %.3g > %.0e (max abs %.3g at %zu)", case_name, what,
                 c.rel_l2, tol, c.max_abs, c.worst);
    }
}

/* Reads a metadata value as a double (fails if absent). */
static double meta_d(const cr_st_file *f, const char *key)
{
    const char *v = cr_st_meta(f, key);
    if (!v) fail_msg("golden file lacks metadata '%s'", key);
    return atof(v);
}

/* Frees a list of tensors. */
static void free_all(cr_tensor *ts, int n)
{
    for (int i = 0; i < n; i++) cr_tensor_free(&ts[i]);
}

/* Converts a float tensor of labels into int32 (caller frees). */
static int32_t *labels_of(const cr_tensor *t)
{
    int32_t *l = malloc(t->numel * sizeof *l);
    assert_non_null(l);
    for (size_t i = 0; i < t->numel; i++) l[i] = (int32_t)lrintf(t->data[i]);
    return l;
}

/* sum(dy * y) in double: the scalar whose gradient a backward pass with upstream dy computes. */
static double dot(const cr_tensor *a, const cr_tensor *b)
{
    double s = 0.0;
    for (size_t i = 0; i < a->numel; i++) s += (double)a->data[i] * b->data[i];
    return s;
}

/* ---- ReLU, add ---------------------------------------------------------------------- */

/* ReLU forward and backward equal PyTorch's. */
static void layers__relu_golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("relu");
    cr_tensor t[4] = {0}, y = {0}, dx = {0};   /* x, dy, y, dx */
    get(f, "x", &t[0]); get(f, "dy", &t[1]); get(f, "y", &t[2]); get(f, "dx", &t[3]);
    like(&y, &t[2]); like(&dx, &t[3]);
    assert_cr_ok(cr_relu_forward(&t[0], &y));
    expect_close("y", "relu", &y, &t[2], GOLDEN_TOL);
    assert_cr_ok(cr_relu_backward(&y, &t[1], &dx));
    expect_close("dx", "relu", &dx, &t[3], GOLDEN_TOL);
    free_all(t, 4); cr_tensor_free(&y); cr_tensor_free(&dx);
    cr_st_free(f);
}

/* Add forward and backward (the gradient goes to both inputs). */
static void layers__add_golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("add");
    cr_tensor x = {0}, x2 = {0}, dy = {0}, yr = {0}, y = {0}, da = {0}, db = {0};
    get(f, "x", &x); get(f, "x2", &x2); get(f, "dy", &dy); get(f, "y", &yr);
    like(&y, &yr); like(&da, &x); like(&db, &x);
    assert_cr_ok(cr_add_forward(&x, &x2, &y));
    expect_close("y", "add", &y, &yr, GOLDEN_TOL);
    assert_cr_ok(cr_add_backward(&dy, &da, &db));
    expect_close("dx", "add", &da, &dy, 0);
    expect_close("dx2", "add", &db, &dy, 0);
    cr_tensor bad = {0};
    assert_cr_ok(cr_tensor_alloc4(&bad, 1, 1, 1, 1));
    assert_cr_fails(cr_add_forward(&x, &bad, &y), CR_EINVAL);
    cr_tensor *all[] = {&x, &x2, &dy, &yr, &y, &da, &db, &bad};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
    cr_st_free(f);
}

/* ---- BatchNorm2d -------------------------------------------------------------------------- */

static const char *const bn_cases[] = {"batchnorm_train", "batchnorm_train_m03_eps1e-3",
                                       "batchnorm_train_n1_1x1", "batchnorm_eval"};

/* Runs the forward pass of one golden BN case; leaves the outputs in the given tensors. */
static void bn_run_forward(const cr_st_file *f, const char *name, cr_tensor *x, cr_tensor *g,
                           cr_tensor *b, cr_tensor *rm, cr_tensor *rv, cr_tensor *y,
                           cr_tensor *sm, cr_tensor *si, bool *training)
{
    get(f, "x", x); get(f, "weight", g); get(f, "bias", b);
    get(f, "running_mean0", rm); get(f, "running_var0", rv);
    cr_tensor yr = {0};
    get(f, "y", &yr);
    like(y, &yr);
    cr_tensor_free(&yr);
    like(sm, g); like(si, g);
    cr_bn_params p = {.eps = meta_d(f, "eps"), .momentum = meta_d(f, "momentum")};
    *training = meta_d(f, "training") != 0;
    (void)name;
    assert_cr_ok(cr_batchnorm2d_forward(&p, *training, x, g, b, rm, rv, y, sm, si));
}

/* Forward output and the running statistics after one step (momentum convention,
 * unbiased variance) equal PyTorch's, in training and evaluation. */
static void layers__batchnorm_forward_golden(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof bn_cases / sizeof *bn_cases; k++) {
        cr_st_file *f = golden(bn_cases[k]);
        cr_tensor x = {0}, g = {0}, b = {0}, rm = {0}, rv = {0}, y = {0}, sm = {0}, si = {0};
        cr_tensor yr = {0}, rmr = {0}, rvr = {0};
        bool training;
        bn_run_forward(f, bn_cases[k], &x, &g, &b, &rm, &rv, &y, &sm, &si, &training);
        get(f, "y", &yr); get(f, "running_mean", &rmr); get(f, "running_var", &rvr);
        expect_close("y", bn_cases[k], &y, &yr, GOLDEN_TOL);
        expect_close("running_mean", bn_cases[k], &rm, &rmr, GOLDEN_TOL);
        expect_close("running_var", bn_cases[k], &rv, &rvr, GOLDEN_TOL);
        cr_tensor *all[] = {&x, &g, &b, &rm, &rv, &y, &sm, &si, &yr, &rmr, &rvr};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
        cr_st_free(f);
    }
}

/* dx, dgamma, dbeta equal PyTorch's autograd, in training (through the batch statistics)
 * and evaluation (constants). */
static void batchnorm_backward__golden(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof bn_cases / sizeof *bn_cases; k++) {
        cr_st_file *f = golden(bn_cases[k]);
        cr_tensor x = {0}, g = {0}, b = {0}, rm = {0}, rv = {0}, y = {0}, sm = {0}, si = {0};
        cr_tensor dy = {0}, dxr = {0}, dgr = {0}, dbr = {0}, dx = {0}, dg = {0}, db = {0};
        bool training;
        bn_run_forward(f, bn_cases[k], &x, &g, &b, &rm, &rv, &y, &sm, &si, &training);
        get(f, "dy", &dy); get(f, "dx", &dxr); get(f, "dweight", &dgr); get(f, "dbias", &dbr);
        like(&dx, &dxr); like(&dg, &dgr); like(&db, &dbr);
        assert_cr_ok(cr_batchnorm2d_backward(training, &x, &g, &sm, &si, &dy, &dx, &dg, &db));
        expect_close("dx", bn_cases[k], &dx, &dxr, GOLDEN_TOL);
        expect_close("dweight", bn_cases[k], &dg, &dgr, GOLDEN_TOL);
        expect_close("dbias", bn_cases[k], &db, &dbr, GOLDEN_TOL);
        cr_tensor *all[] = {&x, &g, &b, &rm, &rv, &y, &sm, &si, &dy, &dxr, &dgr, &dbr, &dx, &dg, &db};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
        cr_st_free(f);
    }
}

/* L(x) = sum(dy * bn(x)) for the finite-difference check (training mode, no running stats). */
static double bn_loss(const cr_tensor *x, const cr_tensor *g, const cr_tensor *b,
                      const cr_tensor *dy, cr_tensor *y, cr_tensor *sm, cr_tensor *si)
{
    cr_bn_params p = cr_bn_params_default();
    assert_cr_ok(cr_batchnorm2d_forward(&p, true, x, g, b, NULL, NULL, y, sm, si));
    return dot(dy, y);
}

/* Training-mode dx against central finite differences of sum(dy * y), on random data. */
static void batchnorm_backward__finite_difference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_tensor x = {0}, g = {0}, b = {0}, dy = {0}, y = {0}, sm = {0}, si = {0}, dx = {0};
    const int64_t C = 3;
    assert_cr_ok(cr_tensor_alloc4(&x, 2, C, 3, 4));
    assert_cr_ok(cr_tensor_alloc(&g, 1, &C)); assert_cr_ok(cr_tensor_alloc(&b, 1, &C));
    assert_cr_ok(cr_tensor_alloc(&sm, 1, &C)); assert_cr_ok(cr_tensor_alloc(&si, 1, &C));
    like(&dy, &x); like(&y, &x); like(&dx, &x);
    cr_tensor_fill_uniform(&x, &r, -2, 2);
    cr_tensor_fill_uniform(&g, &r, 0.5f, 1.5f);
    cr_tensor_fill_uniform(&b, &r, -1, 1);
    cr_tensor_fill_uniform(&dy, &r, -1, 1);
    bn_loss(&x, &g, &b, &dy, &y, &sm, &si);
    assert_cr_ok(cr_batchnorm2d_backward(true, &x, &g, &sm, &si, &dy, &dx, NULL, NULL));
    double gmax = 0;
    for (size_t i = 0; i < dx.numel; i++) gmax = fmax(gmax, fabs(dx.data[i]));
    const float h = 1e-3f;
    for (size_t i = 0; i < x.numel; i++) {
        const float x0 = x.data[i];
        x.data[i] = x0 + h;
        const double lp = bn_loss(&x, &g, &b, &dy, &y, &sm, &si);
        x.data[i] = x0 - h;
        const double lm = bn_loss(&x, &g, &b, &dy, &y, &sm, &si);
        x.data[i] = x0;
        const double fd = (lp - lm) / (2.0 * h);
        if (fabs(fd - dx.data[i]) > FD_TOL * gmax)
            fail_msg("batchnorm dx[%zu] = %.6g, finite difference %.6g (bound %.0e * %.3g, seed %llu)",
                     i, dx.data[i], fd, FD_TOL, gmax, (unsigned long long)seed);
    }
    cr_tensor *all[] = {&x, &g, &b, &dy, &y, &sm, &si, &dx};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
}

/* ---- GroupNorm --------------------------------------------------------------------------------- */

/* GroupNorm forward and backward (1 group, 2 groups, one group per channel). */
static void layers__groupnorm_golden(void **state)
{
    (void)state;
    const char *cases[] = {"groupnorm_g2", "groupnorm_g1", "groupnorm_gc"};
    for (size_t k = 0; k < 3; k++) {
        cr_st_file *f = golden(cases[k]);
        cr_tensor x = {0}, g = {0}, b = {0}, dy = {0}, yr = {0}, dxr = {0}, dgr = {0}, dbr = {0};
        cr_tensor y = {0}, dx = {0}, dg = {0}, db = {0}, sm = {0}, si = {0};
        get(f, "x", &x); get(f, "weight", &g); get(f, "bias", &b); get(f, "dy", &dy);
        get(f, "y", &yr); get(f, "dx", &dxr); get(f, "dweight", &dgr); get(f, "dbias", &dbr);
        const int64_t G = (int64_t)meta_d(f, "groups"), NG = x.shape[0] * G;
        like(&y, &yr); like(&dx, &dxr); like(&dg, &dgr); like(&db, &dbr);
        assert_cr_ok(cr_tensor_alloc(&sm, 1, &NG)); assert_cr_ok(cr_tensor_alloc(&si, 1, &NG));
        assert_cr_ok(cr_groupnorm_forward(G, meta_d(f, "eps"), &x, &g, &b, &y, &sm, &si));
        expect_close("y", cases[k], &y, &yr, GOLDEN_TOL);
        assert_cr_ok(cr_groupnorm_backward(G, &x, &g, &sm, &si, &dy, &dx, &dg, &db));
        expect_close("dx", cases[k], &dx, &dxr, GOLDEN_TOL);
        expect_close("dweight", cases[k], &dg, &dgr, GOLDEN_TOL);
        expect_close("dbias", cases[k], &db, &dbr, GOLDEN_TOL);
        cr_tensor *all[] = {&x, &g, &b, &dy, &yr, &dxr, &dgr, &dbr, &y, &dx, &dg, &db, &sm, &si};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
        cr_st_free(f);
    }
}

/* ---- pools --------------------------------------------------------------------------------------- */

/* Max-pool forward, argmax (PyTorch's return_indices, first maximum on ties) and backward. */
static void layers__maxpool_golden(void **state)
{
    (void)state;
    const char *cases[] = {"maxpool_k2s2", "maxpool_k3s2p1", "maxpool_k3s1p1_ties",
                           "maxpool_k2s2_ties"};
    for (size_t k = 0; k < 4; k++) {
        cr_st_file *f = golden(cases[k]);
        cr_tensor x = {0}, dy = {0}, yr = {0}, am = {0}, dxr = {0}, y = {0}, dx = {0};
        get(f, "x", &x); get(f, "dy", &dy); get(f, "y", &yr); get(f, "argmax", &am);
        get(f, "dx", &dxr);
        like(&y, &yr); like(&dx, &dxr);
        const int64_t kk = (int64_t)meta_d(f, "kernel");
        cr_pool_params p = cr_pool_params_make(kk, (int64_t)meta_d(f, "stride"),
                                               (int64_t)meta_d(f, "padding"));
        int64_t *arg = malloc(yr.numel * sizeof *arg);
        assert_non_null(arg);
        assert_cr_ok(cr_maxpool2d_forward(&p, &x, &y, arg));
        expect_close("y", cases[k], &y, &yr, 0);
        for (size_t i = 0; i < am.numel; i++)
            if (arg[i] != (int64_t)am.data[i])
                fail_msg("%s: argmax[%zu] = %lld, PyTorch chose %lld (the first maximum wins)",
                         cases[k], i, (long long)arg[i], (long long)am.data[i]);
        assert_cr_ok(cr_maxpool2d_backward(arg, &dy, &dx));
        expect_close("dx", cases[k], &dx, &dxr, GOLDEN_TOL);
        free(arg);
        cr_tensor *all[] = {&x, &dy, &yr, &am, &dxr, &y, &dx};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
        cr_st_free(f);
    }
    cr_pool_params bad = cr_pool_params_make(2, 2, 2);   /* padding > kernel / 2 */
    int64_t ho, wo;
    assert_cr_fails(cr_maxpool2d_out_size(&bad, 8, 8, &ho, &wo), CR_EINVAL);
}

/* Global average pool forward and backward. */
static void layers__avgpool_golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("avgpool_global");
    cr_tensor x = {0}, dy = {0}, yr = {0}, dxr = {0}, y = {0}, dx = {0};
    get(f, "x", &x); get(f, "dy", &dy); get(f, "y", &yr); get(f, "dx", &dxr);
    like(&y, &yr); like(&dx, &dxr);
    assert_cr_ok(cr_global_avgpool_forward(&x, &y));
    expect_close("y", "avgpool", &y, &yr, GOLDEN_TOL);
    assert_cr_ok(cr_global_avgpool_backward(&dy, &dx));
    expect_close("dx", "avgpool", &dx, &dxr, GOLDEN_TOL);
    cr_tensor *all[] = {&x, &dy, &yr, &dxr, &y, &dx};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
    cr_st_free(f);
}

/* ---- up-sampling ---------------------------------------------------------------------------------- */

/* Nearest and bilinear (align_corners both ways), by scale factor and by output size,
 * up and down, forward and backward. */
static void layers__upsample_golden(void **state)
{
    (void)state;
    const char *cases[] = {"upsample_nearest_x2", "upsample_nearest_size", "upsample_nearest_x1_5",
                           "upsample_bilinear_x2", "upsample_bilinear_x2_ac",
                           "upsample_bilinear_size", "upsample_bilinear_size_ac",
                           "upsample_bilinear_x1_5", "upsample_bilinear_down"};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        cr_st_file *f = golden(cases[k]);
        cr_tensor x = {0}, dy = {0}, yr = {0}, dxr = {0}, y = {0}, dx = {0};
        get(f, "x", &x); get(f, "dy", &dy); get(f, "y", &yr); get(f, "dx", &dxr);
        like(&y, &yr); like(&dx, &dxr);
        cr_upsample_params p = {
            .mode = strcmp(cr_st_meta(f, "mode"), "bilinear") == 0 ? CR_UPSAMPLE_BILINEAR
                                                                   : CR_UPSAMPLE_NEAREST,
            .align_corners = meta_d(f, "align_corners") != 0,
            .scale_h = meta_d(f, "scale_h"), .scale_w = meta_d(f, "scale_w")};
        if (p.scale_h == 0) {
            p.out_h = (int64_t)meta_d(f, "out_h");
            p.out_w = (int64_t)meta_d(f, "out_w");
        }
        assert_cr_ok(cr_upsample_forward(&p, &x, &y));
        expect_close("y", cases[k], &y, &yr, GOLDEN_TOL);
        assert_cr_ok(cr_upsample_backward(&p, &dy, &dx));
        expect_close("dx", cases[k], &dx, &dxr, GOLDEN_TOL);
        cr_tensor *all[] = {&x, &dy, &yr, &dxr, &y, &dx};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
        cr_st_free(f);
    }
}

/* ---- dropout ------------------------------------------------------------------------------------------ */

/* Dropout: mask values {0, 1/(1-p)}, kept fraction near 1-p, y = x*mask, dx = dy*mask,
 * same seed same mask, p = 0 is the identity, bad p refused. */
static void layers__dropout_properties(void **state)
{
    (void)state;
    const double p = 0.3;
    cr_tensor x = {0}, y = {0}, mask = {0}, mask2 = {0}, dx = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 4, 8, 16, 16));
    like(&y, &x); like(&mask, &x); like(&mask2, &x); like(&dx, &x);
    cr_rng r;
    cr_rng_seed(&r, 7);
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    cr_rng_seed(&r, 42);
    assert_cr_ok(cr_dropout_forward(p, &r, &x, &y, &mask));
    size_t kept = 0;
    const float s = (float)(1.0 / (1.0 - p));
    for (size_t i = 0; i < x.numel; i++) {
        if (mask.data[i] != 0.0f && mask.data[i] != s)
            fail_msg("dropout mask[%zu] = %g, expected 0 or %g", i, mask.data[i], s);
        kept += mask.data[i] != 0.0f;
        if (y.data[i] != x.data[i] * mask.data[i]) fail_msg("dropout y[%zu] != x * mask", i);
    }
    const double n = (double)x.numel, frac = kept / n, sd = sqrt(p * (1 - p) / n);
    if (fabs(frac - (1 - p)) > 5 * sd)
        fail_msg("dropout kept %.4f of the elements, expected %.2f +- %.4f", frac, 1 - p, 5 * sd);
    assert_cr_ok(cr_dropout_backward(&mask, &x, &dx));   /* dy = x */
    for (size_t i = 0; i < x.numel; i++)
        if (dx.data[i] != x.data[i] * mask.data[i]) fail_msg("dropout dx[%zu] != dy * mask", i);
    cr_rng_seed(&r, 42);
    assert_cr_ok(cr_dropout_forward(p, &r, &x, &y, &mask2));
    assert_memory_equal(mask.data, mask2.data, x.numel * sizeof(float));
    assert_cr_ok(cr_dropout_forward(0.0, &r, &x, &y, &mask2));
    assert_memory_equal(y.data, x.data, x.numel * sizeof(float));
    assert_cr_fails(cr_dropout_forward(1.0, &r, &x, &y, &mask2), CR_EINVAL);
    cr_tensor *all[] = {&x, &y, &mask, &mask2, &dx};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
}

/* ---- losses --------------------------------------------------------------------------------------------- */

/* Loads a loss case: logits, labels (int32), the golden loss and gradient; ignore_index. */
static void loss_case(const cr_st_file *f, cr_tensor *z, int32_t **lab, double *loss,
                      cr_tensor *dzr, int32_t *ignore)
{
    cr_tensor t = {0}, l = {0};
    get(f, "logits", z); get(f, "target", &t); get(f, "loss", &l); get(f, "dlogits", dzr);
    *lab = labels_of(&t);
    *loss = l.data[0];
    *ignore = (int32_t)meta_d(f, "ignore_index");
    cr_tensor_free(&t);
    cr_tensor_free(&l);
}

/* Mean cross-entropy over non-ignored pixels and its gradient equal PyTorch's. */
static void cross_entropy__golden(void **state)
{
    (void)state;
    const char *cases[] = {"cross_entropy", "cross_entropy_ignore", "cross_entropy_ignore255"};
    for (size_t k = 0; k < 3; k++) {
        cr_st_file *f = golden(cases[k]);
        cr_tensor z = {0}, dzr = {0}, dz = {0};
        int32_t *lab, ign;
        double want, got = NAN;
        loss_case(f, &z, &lab, &want, &dzr, &ign);
        like(&dz, &dzr);
        for (int fast = 0; fast < 2; fast++) {   /* the reference, then the fast version */
            char what[64];
            snprintf(what, sizeof what, "%s%s", cases[k], fast ? " (fast)" : "");
            cr_tensor_fill(&dz, NAN);
            assert_cr_ok(fast ? cr_cross_entropy_fast(&z, lab, ign, &got, &dz)
                              : cr_cross_entropy(&z, lab, ign, &got, &dz));
            if (!(fabs(got - want) <= GOLDEN_TOL * fabs(want)))
                fail_msg("%s: loss %.9g, PyTorch %.9g (bound %.0e relative)", what, got, want,
                         GOLDEN_TOL);
            expect_close("dlogits", what, &dz, &dzr, GOLDEN_TOL);
        }
        free(lab);
        cr_tensor_free(&z); cr_tensor_free(&dzr); cr_tensor_free(&dz);
        cr_st_free(f);
    }
}

/* A label that is neither a class nor ignore_index is refused; all pixels ignored gives 0. */
static void cross_entropy__labels(void **state)
{
    (void)state;
    cr_tensor z = {0}, dz = {0};
    assert_cr_ok(cr_tensor_alloc4(&z, 1, 3, 2, 2));
    like(&dz, &z);
    cr_tensor_fill(&z, 0.5f);
    int32_t bad[4] = {0, 1, 3, 2}, ign[4] = {-100, -100, -100, -100};
    double loss = 1;
    assert_cr_fails(cr_cross_entropy(&z, bad, -100, &loss, &dz), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "label 3"));
    assert_cr_ok(cr_cross_entropy(&z, ign, -100, &loss, &dz));
    assert_true(loss == 0.0);
    for (size_t i = 0; i < dz.numel; i++) assert_true(dz.data[i] == 0.0f);
    cr_tensor_free(&z); cr_tensor_free(&dz);
}

/* Max-pool with indices against the definition written out here (each window scanned row
 * by row, the first strictly greater value or the first NaN kept), on random kernels,
 * strides and paddings, values with ties (drawn from 5 levels) and some NaNs; and the
 * values of the evaluation path (no indices) equal the training path's. */
static void maxpool__random_windows(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int cases = (int)cr_test_count(60);
    for (int t = 0; t < cases; t++) {
        const int64_t k = cr_rng_int(&r, 1, 4), st = cr_rng_int(&r, 1, 3), pad = cr_rng_int(&r, 0, k / 2);
        const int64_t N = cr_rng_int(&r, 1, 2), C = cr_rng_int(&r, 1, 3);
        const int64_t H = cr_rng_int(&r, k, 13), W = cr_rng_int(&r, k, 40);
        cr_pool_params pp = cr_pool_params_make(k, st, pad);
        int64_t Ho, Wo;
        assert_cr_ok(cr_maxpool2d_out_size(&pp, H, W, &Ho, &Wo));
        cr_tensor x = {0}, y = {0}, ye = {0};
        assert_cr_ok(cr_tensor_alloc4(&x, N, C, H, W));
        assert_cr_ok(cr_tensor_alloc4(&y, N, C, Ho, Wo));
        assert_cr_ok(cr_tensor_alloc4(&ye, N, C, Ho, Wo));
        for (size_t i = 0; i < x.numel; i++)
            x.data[i] = cr_rng_int(&r, 0, 99) == 0 ? NAN : (float)cr_rng_int(&r, -2, 2);
        int64_t *arg = malloc(y.numel * sizeof *arg);
        assert_non_null(arg);
        assert_cr_ok(cr_maxpool2d_forward(&pp, &x, &y, arg));
        assert_cr_ok(cr_maxpool2d_forward(&pp, &x, &ye, NULL));
        for (int64_t pl = 0; pl < N * C; pl++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const float *xp = x.data + pl * H * W;
                    int64_t at = -1;
                    for (int64_t i = oh * st - pad; i < oh * st - pad + k; i++)
                        for (int64_t j = ow * st - pad; j < ow * st - pad + k; j++) {
                            if (i < 0 || i >= H || j < 0 || j >= W) continue;
                            const float v = xp[i * W + j];
                            if (at < 0 || (xp[at] == xp[at] && (v > xp[at] || v != v))) at = i * W + j;
                        }
                    const size_t o = (size_t)((pl * Ho + oh) * Wo + ow);
                    const float want = xp[at];
                    const int same = (want != want) ? (y.data[o] != y.data[o] && ye.data[o] != ye.data[o])
                                                    : (y.data[o] == want && ye.data[o] == want);
                    if (arg[o] != at || !same)
                        fail_msg("maxpool k%lld s%lld p%lld on %lldx%lld: output (%lld, %lld, %lld) "
                                 "is %g at %lld (evaluation %g), the definition %g at %lld (seed %llu)",
                                 (long long)k, (long long)st, (long long)pad, (long long)H,
                                 (long long)W, (long long)pl, (long long)oh, (long long)ow,
                                 y.data[o], (long long)arg[o], ye.data[o], want, (long long)at,
                                 (unsigned long long)seed);
                }
        free(arg);
        cr_tensor_free(&x); cr_tensor_free(&y); cr_tensor_free(&ye);
    }
}

/* cr_cross_entropy_fast against cr_cross_entropy (double) on random shapes (pixel counts
 * below, at and past a vector and a task, 1 to 20 classes, logits up to +-30 and some at
 * +-100 so that exp leaves the floats, about one label in 5 ignored): the loss within 1e-6
 * relative plus (C + 4) ulps of 1 absolute, every gradient within (C + 8) float ulps of
 * 1/P; and the same bits on every vector path this CPU has (AVX-512, AVX2, portable) and
 * on 1 and 2 threads. Then: a pixel whose loss is near 0 (held to the same bound), every
 * pixel ignored gives 0 and a zero gradient, a NaN logit gives a NaN loss, a bad label is
 * refused. */
static void set_threads_ch04(int n);

static void cross_entropy_fast__equals_reference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const char *paths[] = {"avx512", "avx2", "portable"};
    const int cases = (int)cr_test_count(24);
    for (int t = 0; t < cases; t++) {
        const int64_t N = cr_rng_int(&r, 1, 3), C = cr_rng_int(&r, 1, 20);
        const int64_t H = t % 4 == 0 ? 1 : cr_rng_int(&r, 1, 80), W = cr_rng_int(&r, 1, 97);
        cr_tensor z = {0}, dref = {0}, dz = {0}, dfirst = {0};
        assert_cr_ok(cr_tensor_alloc4(&z, N, C, H, W));
        like(&dref, &z); like(&dz, &z); like(&dfirst, &z);
        cr_tensor_fill_uniform(&z, &r, -30, 30);
        for (size_t i = 0; i < z.numel; i++)
            if (cr_rng_int(&r, 0, 49) == 0) z.data[i] = cr_rng_int(&r, 0, 1) ? 100.0f : -100.0f;
        int32_t *lab = malloc((size_t)(N * H * W) * sizeof *lab);
        assert_non_null(lab);
        int64_t count = 0;
        for (int64_t i = 0; i < N * H * W; i++) {
            lab[i] = cr_rng_int(&r, 0, 4) == 0 ? CR_IGNORE_INDEX : (int32_t)cr_rng_int(&r, 0, C - 1);
            count += lab[i] != CR_IGNORE_INDEX;
        }
        double want = NAN, first = NAN;
        assert_cr_ok(cr_cross_entropy(&z, lab, CR_IGNORE_INDEX, &want, &dref));
        const double gtol = count ? (double)(C + 8) * 0x1p-23 / (double)count : 0.0;
        /* the loss: relative 1e-6, plus the rounding of the softmax's float denominator
         * (C terms near 1), which a pixel with a loss near 0 keeps as an absolute error */
        const double ltol = 1e-6 * fabs(want) + (double)(C + 4) * 0x1p-24;
        int ran = 0;
        for (size_t p = 0; p < 3; p++) {
            if (!cr_gemm_kernel_supported(paths[p])) continue;
            assert_cr_ok(cr_gemm_set_kernel(paths[p]));
            for (int threads = 2; threads >= 1; threads--) {
                double got = NAN, alone = NAN;
                set_threads_ch04(threads);
                cr_tensor_fill(&dz, NAN);
                assert_cr_ok(cr_cross_entropy_fast(&z, lab, CR_IGNORE_INDEX, &got, &dz));
                assert_cr_ok(cr_cross_entropy_fast(&z, lab, CR_IGNORE_INDEX, &alone, NULL));
                set_threads_ch04(0);
                if (!(fabs(got - want) <= ltol) || memcmp(&got, &alone, sizeof got))
                    fail_msg("cross_entropy_fast (%s, %d threads) %lldx%lldx%lldx%lld: loss %.9g "
                             "(without gradient %.9g), reference %.9g (seed %llu)", paths[p],
                             threads, (long long)N, (long long)C, (long long)H, (long long)W,
                             got, alone, want, (unsigned long long)seed);
                for (size_t i = 0; i < z.numel; i++)
                    if (!(fabs((double)dz.data[i] - dref.data[i]) <= gtol))
                        fail_msg("cross_entropy_fast (%s): dlogits[%zu] %.9g, reference %.9g, "
                                 "bound %.3g (%lldx%lldx%lldx%lld, seed %llu)", paths[p], i,
                                 dz.data[i], dref.data[i], gtol, (long long)N, (long long)C,
                                 (long long)H, (long long)W, (unsigned long long)seed);
                if (!ran++) {
                    first = got;
                    memcpy(dfirst.data, dz.data, z.numel * sizeof(float));
                } else if (memcmp(&first, &got, sizeof got) ||
                           memcmp(dfirst.data, dz.data, z.numel * sizeof(float)))
                    fail_msg("cross_entropy_fast: %s on %d threads gives other bits than %s "
                             "on 2 (seed %llu)", paths[p], threads, paths[0],
                             (unsigned long long)seed);
            }
        }
        assert_cr_ok(cr_gemm_set_kernel("auto"));
        free(lab);
        cr_tensor_free(&z); cr_tensor_free(&dref); cr_tensor_free(&dz); cr_tensor_free(&dfirst);
    }
    /* one pixel already right by a margin of 10: loss log(1 + e^-10) = 4.54e-5 */
    {
        cr_tensor z1 = {0};
        assert_cr_ok(cr_tensor_alloc4(&z1, 1, 2, 1, 1));
        z1.data[0] = 0.0f;
        z1.data[1] = 10.0f;
        const int32_t one = 1;
        double got = NAN;
        assert_cr_ok(cr_cross_entropy_fast(&z1, &one, CR_IGNORE_INDEX, &got, NULL));
        const double want = log1p(exp(-10.0));
        if (!(fabs(got - want) <= 1e-6 * want + 6 * 0x1p-24))
            fail_msg("cross_entropy_fast: a near-zero loss %.9g, want %.9g", got, want);
        cr_tensor_free(&z1);
    }
    /* all ignored; a NaN; a label outside the classes */
    cr_tensor z = {0}, dz = {0};
    assert_cr_ok(cr_tensor_alloc4(&z, 1, 3, 5, 7));
    like(&dz, &z);
    cr_tensor_fill_uniform(&z, &r, -1, 1);
    int32_t lab[35];
    for (int i = 0; i < 35; i++) lab[i] = CR_IGNORE_INDEX;
    double loss = 1;
    cr_tensor_fill(&dz, NAN);
    assert_cr_ok(cr_cross_entropy_fast(&z, lab, CR_IGNORE_INDEX, &loss, &dz));
    assert_true(loss == 0.0);
    for (size_t i = 0; i < dz.numel; i++) assert_true(dz.data[i] == 0.0f);
    for (int i = 0; i < 35; i++) lab[i] = i % 3;
    z.data[2 * 35 + 20] = NAN;
    assert_cr_ok(cr_cross_entropy_fast(&z, lab, CR_IGNORE_INDEX, &loss, &dz));
    assert_true(isnan(loss));
    lab[33] = 3;
    assert_cr_fails(cr_cross_entropy_fast(&z, lab, CR_IGNORE_INDEX, &loss, &dz), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "label 3"));
    cr_tensor_free(&z); cr_tensor_free(&dz);
}

/* Soft Dice (smp's multiclass definition) and its gradient equal PyTorch's autograd,
 * with ignored pixels and a class absent from the target. */
static void losses__dice_golden(void **state)
{
    (void)state;
    const char *cases[] = {"dice", "dice_ignore_absent"};
    for (size_t k = 0; k < 2; k++) {
        cr_st_file *f = golden(cases[k]);
        cr_tensor z = {0}, dzr = {0}, dz = {0};
        int32_t *lab, ign;
        double want, got = NAN;
        loss_case(f, &z, &lab, &want, &dzr, &ign);
        like(&dz, &dzr);
        assert_cr_ok(cr_dice_loss(&z, lab, ign, meta_d(f, "eps"), &got, &dz));
        if (!(fabs(got - want) <= GOLDEN_TOL * fabs(want)))
            fail_msg("%s: loss %.9g, PyTorch %.9g", cases[k], got, want);
        expect_close("dlogits", cases[k], &dz, &dzr, GOLDEN_TOL);
        free(lab);
        cr_tensor_free(&z); cr_tensor_free(&dzr); cr_tensor_free(&dz);
        cr_st_free(f);
    }
}

/* Dice's gradient against finite differences on random logits (the golden check's
 * independent twin: it needs no PyTorch). */
static void losses__dice_finite_difference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_tensor z = {0}, dz = {0};
    assert_cr_ok(cr_tensor_alloc4(&z, 2, 4, 3, 3));
    like(&dz, &z);
    cr_tensor_fill_uniform(&z, &r, -2, 2);
    int32_t lab[18];
    for (int i = 0; i < 18; i++) lab[i] = i % 5 == 4 ? -100 : (int32_t)cr_rng_int(&r, 0, 3);
    double loss;
    assert_cr_ok(cr_dice_loss(&z, lab, -100, 1e-7, &loss, &dz));
    double gmax = 0;
    for (size_t i = 0; i < dz.numel; i++) gmax = fmax(gmax, fabs(dz.data[i]));
    const float h = 1e-3f;
    for (size_t i = 0; i < z.numel; i++) {
        const float z0 = z.data[i];
        double lp, lm;
        z.data[i] = z0 + h;
        assert_cr_ok(cr_dice_loss(&z, lab, -100, 1e-7, &lp, NULL));
        z.data[i] = z0 - h;
        assert_cr_ok(cr_dice_loss(&z, lab, -100, 1e-7, &lm, NULL));
        z.data[i] = z0;
        const double fd = (lp - lm) / (2.0 * (double)h);
        if (fabs(fd - dz.data[i]) > FD_TOL * gmax)
            fail_msg("dice dlogits[%zu] = %.6g, finite difference %.6g (seed %llu)", i,
                     dz.data[i], fd, (unsigned long long)seed);
    }
    cr_tensor_free(&z); cr_tensor_free(&dz);
}

/* ---- optimizers ------------------------------------------------------------------------------------------ */

/* Gradient of mean((X w^T + b - Y)^2) in double, rounded to float: X 8x3, Y 8x4, w 4x3, b 4. */
static void lsq_grad(const cr_tensor *X, const cr_tensor *Y, const cr_tensor *w, const cr_tensor *b,
                     cr_tensor *gw, cr_tensor *gb)
{
    double dw[12] = {0}, db[4] = {0};
    for (int s = 0; s < 8; s++)
        for (int o = 0; o < 4; o++) {
            double r = b->data[o] - Y->data[s * 4 + o];
            for (int i = 0; i < 3; i++) r += (double)X->data[s * 3 + i] * w->data[o * 3 + i];
            const double g = 2.0 * r / 32.0;
            db[o] += g;
            for (int i = 0; i < 3; i++) dw[o * 3 + i] += g * X->data[s * 3 + i];
        }
    for (int k = 0; k < 12; k++) gw->data[k] = (float)dw[k];
    for (int k = 0; k < 4; k++) gb->data[k] = (float)db[k];
}

/* Runs 20 optimizer steps on the golden problem and compares each step's parameters.
 * AdamW steps through cr_adamw_update (the reference, a coursework task) unless fast,
 * then through cr_optim_step (cr_adamw_update_fast). */
static void check_trajectory(const char *name, int fast)
{
    cr_st_file *f = golden(name);
    cr_tensor X = {0}, Y = {0}, w = {0}, b = {0}, tw = {0}, tb = {0}, gw = {0}, gb = {0};
    get(f, "X", &X); get(f, "Y", &Y); get(f, "w0", &w); get(f, "b0", &b);
    get(f, "traj_w", &tw); get(f, "traj_b", &tb);
    like(&gw, &w); like(&gb, &b);
    cr_optim_config c;
    if (strcmp(cr_st_meta(f, "optimizer"), "sgd") == 0) {
        c = cr_sgd_config(meta_d(f, "lr"), cr_st_meta(f, "momentum") ? meta_d(f, "momentum") : 0,
                          cr_st_meta(f, "weight_decay") ? meta_d(f, "weight_decay") : 0);
        c.dampening = cr_st_meta(f, "dampening") ? meta_d(f, "dampening") : 0;
        c.nesterov = cr_st_meta(f, "nesterov") && strcmp(cr_st_meta(f, "nesterov"), "True") == 0;
    } else {
        c = cr_adamw_config(meta_d(f, "lr"), meta_d(f, "weight_decay"));
        c.beta1 = meta_d(f, "beta1");
        c.beta2 = meta_d(f, "beta2");
        c.eps = meta_d(f, "eps");
    }
    cr_tensor *params[2] = {&w, &b};
    const cr_tensor *grads[2] = {&gw, &gb};
    cr_optimizer o;
    assert_cr_ok(cr_optim_init(&o, &c, params, 2));
    const int steps = (int)meta_d(f, "steps");
    for (int s = 0; s < steps; s++) {
        lsq_grad(&X, &Y, &w, &b, &gw, &gb);
        if (fast || c.kind != CR_OPTIM_ADAMW) {
            assert_cr_ok(cr_optim_step(&o, params, grads));
        } else {
            o.step++;
            for (int i = 0; i < 2; i++)
                assert_cr_ok(cr_adamw_update(&c, o.step, params[i], grads[i], &o.state1[i],
                                             &o.state2[i]));
        }
        cr_tensor rw = {.ndim = 2, .shape = {4, 3, 1, 1}, .numel = 12, .data = tw.data + s * 12};
        cr_tensor rb = {.ndim = 1, .shape = {4, 1, 1, 1}, .numel = 4, .data = tb.data + s * 4};
        char what[48];
        snprintf(what, sizeof what, "weight after step %d", s + 1);
        expect_close(what, name, &w, &rw, TRAJ_TOL);
        snprintf(what, sizeof what, "bias after step %d", s + 1);
        expect_close(what, name, &b, &rb, TRAJ_TOL);
    }
    cr_optim_free(&o);
    cr_tensor *all[] = {&X, &Y, &w, &b, &tw, &tb, &gw, &gb};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
    cr_st_free(f);
}

/* SGD (momentum, nesterov, dampening, plain; weight decay) follows PyTorch for 20 steps. */
static void optim__sgd_trajectory(void **state)
{
    (void)state;
    check_trajectory("sgd_momentum", 0);
    check_trajectory("sgd_nesterov", 0);
    check_trajectory("sgd_dampening", 0);
    check_trajectory("sgd_plain", 0);
}

/* AdamW (decoupled weight decay, bias correction, eps outside the sqrt) follows PyTorch. */
static void adamw_step__trajectory(void **state)
{
    (void)state;
    check_trajectory("adamw", 0);
    check_trajectory("adamw_wd01_b2", 0);
}

/* The fast AdamW that training runs (cr_optim_step) follows PyTorch too. */
static void adamw_fast__trajectory(void **state)
{
    (void)state;
    check_trajectory("adamw", 1);
    check_trajectory("adamw_wd01_b2", 1);
}

/* Sets the OpenMP thread count (0: back to the count the process started with). */
static void set_threads_ch04(int n)
{
#ifdef _OPENMP
    static int start = 0;
    if (!start) start = omp_get_max_threads();
    omp_set_num_threads(n > 0 ? n : start);
#else
    (void)n;
#endif
}

/* One array of n floats from the cr_tensor allocator, uniform in [lo, hi). */
static void rand_vec(cr_tensor *t, int64_t n, cr_rng *r, float lo, float hi)
{
    assert_cr_ok(cr_tensor_alloc(t, 1, &n));
    cr_tensor_fill_uniform(t, r, lo, hi);
}

/* cr_adamw_update_fast (float, vector lanes, threads) against cr_adamw_update (double):
 * sizes below one vector, odd, and past the threads' threshold; 6 steps each from the
 * same start, with weight decay; every p, m, v within a few float roundings of the
 * reference's; and the same bits on 1 and 2 threads. */
static void adamw_fast__equals_reference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int64_t sizes[] = {1, 7, 15, 16, 17, 33, 1000 + cr_rng_int(&r, 0, 99),
                             (int64_t)cr_test_count(200000) + 70001};
    cr_optim_config c = cr_adamw_config(2e-3, 0.05);
    c.beta2 = 0.99;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int64_t n = sizes[k];
        cr_tensor p0, g, p[3], m[3], v[3];   /* [0] reference, [1] fast 2 threads, [2] fast 1 */
        rand_vec(&p0, n, &r, -1, 1);
        rand_vec(&g, n, &r, -1, 1);
        for (int j = 0; j < 3; j++) {
            rand_vec(&p[j], n, &r, 0, 1);
            memcpy(p[j].data, p0.data, (size_t)n * sizeof(float));
            rand_vec(&m[j], n, &r, 0, 1);
            rand_vec(&v[j], n, &r, 0, 1);
            cr_tensor_fill(&m[j], 0);
            cr_tensor_fill(&v[j], 0);
        }
        /* m sums gradients of both signs: its rounding is relative to the sum of their sizes */
        double *mabs = calloc((size_t)n, sizeof *mabs), *uabs = calloc((size_t)n, sizeof *uabs);
        assert_non_null(mabs);
        double *p_prev = calloc((size_t)n, sizeof *p_prev);   /* p before the step */
        assert_non_null(uabs);   /* and p's rounding is relative to |p| and the steps it took */
        assert_non_null(p_prev);
        for (int64_t t = 1; t <= 6; t++) {
            for (int64_t i = 0; i < n; i++) {   /* gradients of every size, some tiny */
                g.data[i] = cr_rng_uniform_f(&r, -1, 1) * (i % 5 == 0 ? 1e-4f : 1.0f);
                mabs[i] = c.beta1 * mabs[i] + (1 - c.beta1) * fabs(g.data[i]);
            }
            for (int64_t i = 0; i < n; i++) {   /* |p| before, and the step's size */
                uabs[i] += fabs((double)p[0].data[i]);
                p_prev[i] = p[0].data[i];
            }
            assert_cr_ok(cr_adamw_update(&c, t, &p[0], &g, &m[0], &v[0]));
            set_threads_ch04(2);
            assert_cr_ok(cr_adamw_update_fast(&c, t, &p[1], &g, &m[1], &v[1]));
            set_threads_ch04(1);
            assert_cr_ok(cr_adamw_update_fast(&c, t, &p[2], &g, &m[2], &v[2]));
            set_threads_ch04(0);
            for (int64_t i = 0; i < n; i++) {
                uabs[i] += fabs(p_prev[i] * (1 - c.lr * c.weight_decay) - p[0].data[i]);
                const double dp = fabs((double)p[1].data[i] - p[0].data[i]),
                             dm = fabs((double)m[1].data[i] - m[0].data[i]),
                             dv = fabs((double)v[1].data[i] - v[0].data[i]);
                if (dp > 4e-7 * uabs[i] || dm > 1e-6 * mabs[i] ||
                    dv > 1e-6 * fabs(v[0].data[i]))
                    fail_msg("n %lld step %lld element %lld: fast p %.9g m %.9g v %.9g, reference "
                             "%.9g %.9g %.9g (seed %llu)", (long long)n, (long long)t, (long long)i,
                             p[1].data[i], m[1].data[i], v[1].data[i], p[0].data[i], m[0].data[i],
                             v[0].data[i], (unsigned long long)seed);
            }
            if (memcmp(p[1].data, p[2].data, (size_t)n * sizeof(float)) ||
                memcmp(m[1].data, m[2].data, (size_t)n * sizeof(float)) ||
                memcmp(v[1].data, v[2].data, (size_t)n * sizeof(float)))
                fail_msg("n %lld step %lld: 1 and 2 threads differ (seed %llu)", (long long)n,
                         (long long)t, (unsigned long long)seed);
        }
        free(mabs);
        free(uabs);
        free(p_prev);
        cr_tensor_free(&p0);
        cr_tensor_free(&g);
        for (int j = 0; j < 3; j++) {
            cr_tensor_free(&p[j]);
            cr_tensor_free(&m[j]);
            cr_tensor_free(&v[j]);
        }
    }
    cr_tensor p1 = {0};
    int64_t one = 1;
    assert_cr_ok(cr_tensor_alloc(&p1, 1, &one));
    assert_cr_fails(cr_adamw_update_fast(&c, 0, &p1, &p1, &p1, &p1), CR_EINVAL);
    cr_tensor_free(&p1);
}

/* Bad configurations are refused, as PyTorch's constructors refuse them. */
static void optim__bad_config(void **state)
{
    (void)state;
    cr_tensor p = {0};
    int64_t n = 3;
    assert_cr_ok(cr_tensor_alloc(&p, 1, &n));
    cr_tensor *ps[1] = {&p};
    cr_optimizer o;
    cr_optim_config c = cr_sgd_config(-1, 0, 0);
    assert_cr_fails(cr_optim_init(&o, &c, ps, 1), CR_EINVAL);
    c = cr_sgd_config(0.1, 0, 0);
    c.nesterov = true;
    assert_cr_fails(cr_optim_init(&o, &c, ps, 1), CR_EINVAL);
    c = cr_adamw_config(1e-3, 0.01);
    c.beta2 = 1.0;
    assert_cr_fails(cr_optim_init(&o, &c, ps, 1), CR_EINVAL);
    cr_tensor_free(&p);
}

/* ---- initialisation ---------------------------------------------------------------------------------------- */

/* Conv weights and biases lie within +-1/sqrt(fan_in) with the moments of a uniform
 * distribution; the same seed gives the same values, another seed others. */
static void init__conv_default_bounds_moments(void **state)
{
    (void)state;
    cr_tensor w = {0}, b = {0}, w2 = {0};
    const int64_t cout = 64;
    assert_cr_ok(cr_tensor_alloc4(&w, cout, 16, 3, 3));   /* fan_in 144: bound 1/12 */
    assert_cr_ok(cr_tensor_alloc(&b, 1, &cout));
    like(&w2, &w);
    cr_rng r;
    cr_rng_seed(&r, 5);
    assert_cr_ok(cr_init_conv_default(&r, &w, &b));
    const double bound = 1.0 / 12.0;
    double sum = 0, sq = 0, mx = 0;
    for (size_t i = 0; i < w.numel; i++) {
        sum += w.data[i];
        sq += (double)w.data[i] * w.data[i];
        mx = fmax(mx, fabs(w.data[i]));
    }
    for (size_t i = 0; i < b.numel; i++)
        if (fabs(b.data[i]) > bound) fail_msg("bias[%zu] = %g outside +-%g", i, b.data[i], bound);
    const double n = (double)w.numel, mean = sum / n, var = sq / n - mean * mean;
    const double var_want = bound * bound / 3.0;
    if (mx > bound) fail_msg("weight max |w| = %g > 1/sqrt(fan_in) = %g", mx, bound);
    if (mx < 0.95 * bound) fail_msg("weight max |w| = %g: the range +-%g is not filled", mx, bound);
    if (fabs(mean) > 5 * sqrt(var_want / n)) fail_msg("weight mean %g is not ~0", mean);
    if (fabs(var / var_want - 1) > 0.05)
        fail_msg("weight variance %g, expected bound^2/3 = %g (+-5%%)", var, var_want);
    cr_rng_seed(&r, 5);
    assert_cr_ok(cr_init_conv_default(&r, &w2, NULL));
    assert_memory_equal(w.data, w2.data, w.numel * sizeof(float));
    cr_rng_seed(&r, 6);
    assert_cr_ok(cr_init_conv_default(&r, &w2, NULL));
    assert_true(memcmp(w.data, w2.data, w.numel * sizeof(float)) != 0);
    cr_tensor_free(&w); cr_tensor_free(&b); cr_tensor_free(&w2);
}

/* ---- model --------------------------------------------------------------------------------------------------- */

/* A tiny FCN with a skip connection: enc1 (conv, bn, relu) -> pool -> enc2 (conv, relu) ->
 * up (to enc1's size) -> add enc1 -> head conv. with_bn = false leaves BN out. */
static void build_fcn(cr_model *m, bool with_bn)
{
    cr_model_init(m);
    cr_conv_params c1 = cr_conv_params_default(3, 4, 3), c2 = cr_conv_params_default(4, 4, 3);
    cr_conv_params head = cr_conv_params_default(4, 5, 1);
    cr_conv_set_padding(&c1, 1, 1);
    cr_conv_set_padding(&c2, 1, 1);
    cr_pool_params pool = cr_pool_params_make(2, 2, 0);
    cr_upsample_params up = {.mode = CR_UPSAMPLE_BILINEAR};
    int e1 = cr_model_add_conv(m, "enc1.conv", CR_MODEL_INPUT, &c1);
    assert_true(e1 >= 0);
    if (with_bn) assert_true(cr_model_add_batchnorm(m, "enc1.bn", CR_PREV, 4, NULL) >= 0);
    int r1 = cr_model_add_relu(m, "enc1.relu", CR_PREV);
    assert_true(r1 >= 0);
    assert_true(cr_model_add_maxpool(m, "pool1", CR_PREV, &pool) >= 0);
    assert_true(cr_model_add_conv(m, "enc2.conv", CR_PREV, &c2) >= 0);
    assert_true(cr_model_add_relu(m, "enc2.relu", CR_PREV) >= 0);
    assert_true(cr_model_add_upsample(m, "up1", CR_PREV, &up, r1) >= 0);
    assert_true(cr_model_add_add(m, "skip1", CR_PREV, r1) >= 0);
    assert_true(cr_model_add_conv(m, "head", CR_PREV, &head) >= 0);
}

/* Parameters and buffers are named as PyTorch's state_dict names them, in order. */
static void model__state_dict_names(void **state)
{
    (void)state;
    cr_model m;
    build_fcn(&m, true);
    assert_cr_ok(cr_model_init_params(&m, 1));
    cr_tensor_list l, st;
    assert_cr_ok(cr_model_param_list(&m, &l));
    const char *want[] = {"enc1.conv.weight", "enc1.conv.bias", "enc1.bn.weight", "enc1.bn.bias",
                          "enc2.conv.weight", "enc2.conv.bias", "head.weight", "head.bias"};
    assert_int_equal(l.n, 8);
    for (int i = 0; i < l.n; i++) {
        if (strcmp(l.names[i], want[i]) != 0)
            fail_msg("parameter %d is named '%s', expected '%s'", i, l.names[i], want[i]);
        assert_non_null(l.grads[i]);
    }
    assert_ptr_equal(l.tensors[2], &m.mods[1].weight);
    /* the state dict adds the BatchNorm buffers after the BN's bias, without gradients */
    assert_cr_ok(cr_model_state_list(&m, &st));
    assert_int_equal(st.n, 10);
    assert_string_equal(st.names[4], "enc1.bn.running_mean");
    assert_string_equal(st.names[5], "enc1.bn.running_var");
    assert_null(st.grads[4]);
    assert_ptr_equal(st.tensors[5], &m.mods[1].running_var);
    cr_tensor_list_free(&l);
    cr_tensor_list_free(&st);
    assert_int_equal(cr_model_num_scalars(&m), 3 * 4 * 9 + 4 + 4 + 4 + 4 * 4 * 9 + 4 + 4 * 5 + 5);
    assert_true(cr_model_add_relu(&m, "head", CR_PREV) < 0);        /* duplicate name */
    assert_true(cr_model_add_relu(&m, "x", 99) < 0);                 /* not an earlier module */
    cr_model_free(&m);
}

/* Save, load into a differently initialised model: every tensor, BN running statistics
 * included, and the forward output are equal; bad files are refused and leave the model
 * unchanged. */
static void model__save_load_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/cr_ch04_model_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    cr_model a, b;
    build_fcn(&a, true);
    build_fcn(&b, true);
    assert_cr_ok(cr_model_init_params(&a, 1));
    assert_cr_ok(cr_model_init_params(&b, 2));
    cr_tensor x = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 6, 7));
    cr_rng r;
    cr_rng_seed(&r, 3);
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    const cr_tensor *ya, *yb;
    assert_cr_ok(cr_model_forward(&a, &x, &ya));      /* training: running stats move */
    cr_model_train(&a, false);
    cr_model_train(&b, false);
    assert_cr_ok(cr_model_forward(&a, &x, &ya));
    const char *meta[] = {"note", "test", NULL};
    assert_cr_ok(cr_model_save(&a, path, meta));
    assert_cr_ok(cr_model_load(&b, path));
    assert_cr_ok(cr_model_forward(&b, &x, &yb));
    assert_memory_equal(ya->data, yb->data, ya->numel * sizeof(float));
    assert_memory_equal(a.mods[1].running_var.data, b.mods[1].running_var.data, 4 * sizeof(float));
    /* a file for another model (a head of 6 classes) and a file missing a tensor */
    cr_model c;
    cr_model_init(&c);
    cr_conv_params p = cr_conv_params_default(3, 4, 3);
    assert_true(cr_model_add_conv(&c, "enc1.conv", CR_MODEL_INPUT, &p) >= 0);
    assert_cr_ok(cr_model_init_params(&c, 9));
    assert_cr_ok(cr_model_save(&c, bad, NULL));
    const float before = b.mods[0].weight.data[0];
    assert_cr_fails(cr_model_load(&b, bad), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "missing tensor"));
    assert_true(b.mods[0].weight.data[0] == before);
    assert_cr_fails(cr_model_load(&c, path), CR_EFORMAT);            /* unknown names */
    assert_non_null(strstr(cr_last_error(), "belongs to no module"));
    unlink(path);
    unlink(bad);
    rmdir(dir);
    cr_model_free(&a); cr_model_free(&b); cr_model_free(&c);
    cr_tensor_free(&x);
}

/* L = sum(dy * model(x)) for the model's finite-difference check. */
static double model_loss(cr_model *m, const cr_tensor *x, const cr_tensor *dy)
{
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(m, x, &y));
    return dot(dy, y);
}

/* The model's backward (conv, relu, pool, up-sample, skip add; no BN, whose backward is a
 * coursework task) against finite differences of sum(dy * out) on a few weights of every
 * conv; a second backward without zero_grad doubles the gradients. */
static void model__backward_finite_difference(void **state)
{
    (void)state;
    cr_model m;
    build_fcn(&m, false);
    assert_cr_ok(cr_model_init_params(&m, 4));
    cr_tensor x = {0}, dy = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 6, 8));
    cr_rng r;
    cr_rng_seed(&r, 11);
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    like(&dy, y);
    cr_tensor_fill_uniform(&dy, &r, -1, 1);
    cr_model_zero_grad(&m);
    assert_cr_ok(cr_model_backward(&m, &dy));
    cr_tensor_list pl;
    assert_cr_ok(cr_model_param_list(&m, &pl));
    cr_tensor **params = pl.tensors, **grads = pl.grads;
    const int n = pl.n;
    double gmax = 0;
    for (int k = 0; k < n; k++)
        for (size_t i = 0; i < grads[k]->numel; i++) gmax = fmax(gmax, fabs(grads[k]->data[i]));
    const float h = 2e-4f;   /* small: a larger step crosses ReLU/max-pool kinks */
    for (int k = 0; k < n; k++)
        for (size_t i = 0; i < grads[k]->numel; i += 1 + grads[k]->numel / 6) {
            float *v = &params[k]->data[i];
            const float v0 = *v;
            *v = v0 + h;
            const double lp = model_loss(&m, &x, &dy);
            *v = v0 - h;
            const double lm = model_loss(&m, &x, &dy);
            *v = v0;
            const double fd = (lp - lm) / (2.0 * (double)h);
            if (fabs(fd - grads[k]->data[i]) > FD_TOL * gmax)
                fail_msg("parameter %d element %zu: gradient %.6g, finite difference %.6g", k, i,
                         grads[k]->data[i], fd);
        }
    /* accumulation, as PyTorch's .grad */
    const float g0 = grads[0]->data[0];
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    assert_cr_ok(cr_model_backward(&m, &dy));
    assert_true(fabsf(grads[0]->data[0] - 2 * g0) <= 1e-5f * fabsf(g0) + 1e-7f);
    cr_model_zero_grad(&m);
    assert_true(grads[0]->data[0] == 0.0f);
    cr_tensor_list_free(&pl);
    cr_model_free(&m);
    cr_tensor_free(&x); cr_tensor_free(&dy);
}

/* ---- the CamVid loader ---------------------------------------------------------------------------------------- */

/* Writes an RGB or grey PNG of w x h from pixel bytes. */
static void write_png(const char *path, int w, int h, int ch, const uint8_t *px)
{
    cr_image img = {.width = w, .height = h, .channels = ch, .pixels = (uint8_t *)px};
    assert_cr_ok(cr_png_write(path, &img));
}

/* Makes DIR/{train,trainannot} with frames named b.png, a.png (listed a, b) of 6x4 RGB
 * with known pixels and labels; frame a's labels hold a 2x2 block with classes 3,3,5,11
 * and one all-void block. */
static void make_tiny_camvid(const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/train", dir); mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/trainannot", dir); mkdir(p, 0755);
    uint8_t rgb[4 * 6 * 3], lab[4 * 6];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 4 * 6 * 3; i++) rgb[i] = (uint8_t)(k * 100 + i);
        for (int i = 0; i < 4 * 6; i++) lab[i] = (uint8_t)(k == 0 ? 1 : 2);
        if (k == 0) {   /* frame "a": block (0,0) = {3, 3; 5, 11}, block (1,2) all void */
            lab[0] = 3; lab[1] = 3; lab[6] = 5; lab[7] = 11;
            lab[2 * 6 + 4] = lab[2 * 6 + 5] = lab[3 * 6 + 4] = lab[3 * 6 + 5] = 11;
        }
        snprintf(p, sizeof p, "%s/train/%s.png", dir, k == 0 ? "a" : "b");
        write_png(p, 6, 4, 3, rgb);
        snprintf(p, sizeof p, "%s/trainannot/%s.png", dir, k == 0 ? "a" : "b");
        write_png(p, 6, 4, 1, lab);
    }
}

/* Removes the tiny folder (the files the tests write, then the directories). */
static void remove_tiny_camvid(const char *dir)
{
    const char *files[] = {"train/a.png", "train/b.png", "trainannot/a.png", "trainannot/b.png",
                           "train/c.png", "trainannot/c.png"};
    char p[512];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/train", dir); rmdir(p);
    snprintf(p, sizeof p, "%s/trainannot", dir); rmdir(p);
    rmdir(dir);
}

/* Loads the tiny folder at half size: sorted order, averaged and normalised RGB,
 * majority labels (ties to the lower class), void -> ignore; a flipped batch. */
static void dataset__tiny_camvid(void **state)
{
    (void)state;
    char dir[] = "/tmp/cr_ch04_camvid_XXXXXX";
    assert_non_null(mkdtemp(dir));
    make_tiny_camvid(dir);
    cr_dataset ds;
    assert_cr_ok(cr_camvid_load(dir, "train", 2, 0, &ds));
    assert_int_equal(ds.count, 2);
    assert_int_equal(ds.width, 3);
    assert_int_equal(ds.height, 2);
    assert_string_equal(ds.names[0], "a.png");
    assert_string_equal(ds.names[1], "b.png");
    /* frame a, red channel, block (0,0): bytes 0, 3, 18, 21 -> mean 10.5 */
    const float want = (10.5f / 255.0f - 0.485f) / 0.229f;
    assert_true(fabsf(ds.images[0] - want) < 1e-5f);
    assert_int_equal(ds.labels[0], 3);                      /* {3, 3, 5, 11}: 3 wins */
    assert_int_equal(ds.labels[1 * 3 + 2], CR_CAMVID_IGNORE);/* all void */
    assert_int_equal(ds.labels[1], 1);
    assert_int_equal(ds.labels[6], 2);                      /* frame b */
    cr_tensor x = {0};
    int32_t lab[12];
    int64_t idx[2] = {1, 0};
    uint8_t flip[2] = {0, 1};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 2, 3));
    assert_cr_ok(cr_dataset_batch(&ds, idx, 2, flip, &x, lab));
    assert_int_equal(lab[6 + 2], 3);                        /* frame a mirrored */
    assert_true(x.data[18 + 2] == ds.images[0]);
    cr_tensor_free(&x);
    cr_dataset_free(&ds);
    assert_cr_ok(cr_camvid_load(dir, "train", 1, 1, &ds));  /* full size, first frame only */
    assert_int_equal(ds.count, 1);
    assert_int_equal(ds.labels[0], 3);
    assert_int_equal(ds.labels[7], CR_CAMVID_IGNORE);
    cr_dataset_free(&ds);
    remove_tiny_camvid(dir);
}

/* Missing folders say where to get the data; bad label values, mismatched sizes, a
 * missing label file and a corrupt PNG are refused naming the file, without a crash. */
static void dataset__errors(void **state)
{
    (void)state;
    cr_dataset ds;
    assert_cr_fails(cr_camvid_load("/nonexistent/CamVid", "train", 4, 0, &ds), CR_EIO);
    assert_non_null(strstr(cr_last_error(), "SegNet"));
    assert_non_null(strstr(cr_last_error(), "--data"));
    char dir[] = "/tmp/cr_ch04_camvid_XXXXXX";
    assert_non_null(mkdtemp(dir));
    make_tiny_camvid(dir);
    assert_cr_fails(cr_camvid_load(dir, "val", 1, 0, &ds), CR_EIO);    /* no val/ */
    assert_non_null(strstr(cr_last_error(), "SegNet"));
    char p[512];
    uint8_t px[8 * 6 * 3] = {0};
    /* a label of 14 */
    snprintf(p, sizeof p, "%s/trainannot/b.png", dir);
    uint8_t lab[4 * 6] = {0};
    lab[9] = 14;
    write_png(p, 6, 4, 1, lab);
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "value 14"));
    /* an 8x6 label for a 6x4 frame */
    write_png(p, 8, 6, 1, px);
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "label map is 8x6"));
    lab[9] = 0;
    write_png(p, 6, 4, 1, lab);
    assert_cr_ok(cr_camvid_load(dir, "train", 1, 0, &ds));
    cr_dataset_free(&ds);
    /* a frame without its label file */
    snprintf(p, sizeof p, "%s/train/c.png", dir);
    write_png(p, 6, 4, 3, px);
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "no label map"));
    /* a corrupt PNG: its label exists, the frame is garbage */
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs("\x89PNG\r\n\x1a\n this is not a PNG", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/trainannot/c.png", dir);
    write_png(p, 6, 4, 1, lab);
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "c.png"));
    assert_null(ds.images);
    remove_tiny_camvid(dir);
}

/* Runs steps of AdamW training of the tiny FCN on one fixed random batch (seeded) and
 * writes each step's loss into losses and the final parameters into final (n floats). */
static void train_tiny(int steps, double *losses, float *final, size_t n)
{
    cr_model m;
    build_fcn(&m, true);
    assert_cr_ok(cr_model_init_params(&m, 11));
    cr_tensor_list pl;
    assert_cr_ok(cr_model_param_list(&m, &pl));
    cr_tensor **params = pl.tensors, **grads = pl.grads;
    const int np = pl.n;
    cr_optimizer opt;
    const cr_optim_config oc = cr_adamw_config(1e-2, 1e-4);
    assert_cr_ok(cr_optim_init(&opt, &oc, params, np));
    cr_rng r;
    cr_rng_seed(&r, 12);
    cr_tensor x, dz = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 10, 10));
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    int32_t labels[2 * 10 * 10];
    for (int i = 0; i < 200; i++) labels[i] = (int32_t)cr_rng_int(&r, 0, 4);
    for (int t = 0; t < steps; t++) {
        const cr_tensor *y;
        assert_cr_ok(cr_model_forward(&m, &x, &y));
        if (!dz.data) assert_cr_ok(cr_tensor_alloc(&dz, 4, y->shape));
        assert_cr_ok(cr_cross_entropy(y, labels, CR_CAMVID_IGNORE, &losses[t], &dz));
        cr_model_zero_grad(&m);
        assert_cr_ok(cr_model_backward(&m, &dz));
        assert_cr_ok(cr_optim_step(&opt, params, (const cr_tensor *const *)grads));
    }
    size_t k = 0;
    for (int i = 0; i < np; i++)
        for (size_t j = 0; j < params[i]->numel && k < n; j++) final[k++] = params[i]->data[j];
    assert_int_equal(k, n);
    cr_tensor_list_free(&pl);
    cr_optim_free(&opt);
    cr_tensor_free(&x);
    cr_tensor_free(&dz);
    cr_model_free(&m);
}

/* Same seed and thread count: the same losses and parameters, bit for bit (the lab's
 * loss curves rely on it); and the loss goes down. */
static void model__training_is_bit_reproducible(void **state)
{
    (void)state;
    enum { STEPS = 8, NPARAM = 3 * 4 * 9 + 4 + 4 + 4 + 4 * 4 * 9 + 4 + 4 * 5 + 5 };
    double l1[STEPS], l2[STEPS];
    static float p1[NPARAM], p2[NPARAM];
    train_tiny(STEPS, l1, p1, NPARAM);
    train_tiny(STEPS, l2, p2, NPARAM);
    assert_memory_equal(l1, l2, sizeof l1);
    assert_memory_equal(p1, p2, sizeof p1);
    if (!(l1[STEPS - 1] < l1[0]))
        fail_msg("loss did not fall over %d AdamW steps: %g -> %g", STEPS, l1[0], l1[STEPS - 1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layers__relu_golden),
        cmocka_unit_test(layers__add_golden),
        cmocka_unit_test(layers__batchnorm_forward_golden),
        cmocka_unit_test(batchnorm_backward__golden),
        cmocka_unit_test(batchnorm_backward__finite_difference),
        cmocka_unit_test(layers__groupnorm_golden),
        cmocka_unit_test(layers__maxpool_golden),
        cmocka_unit_test(layers__avgpool_golden),
        cmocka_unit_test(layers__upsample_golden),
        cmocka_unit_test(layers__dropout_properties),
        cmocka_unit_test(cross_entropy__golden),
        cmocka_unit_test(cross_entropy__labels),
        cmocka_unit_test(cross_entropy_fast__equals_reference),
        cmocka_unit_test(maxpool__random_windows),
        cmocka_unit_test(losses__dice_golden),
        cmocka_unit_test(losses__dice_finite_difference),
        cmocka_unit_test(optim__sgd_trajectory),
        cmocka_unit_test(adamw_step__trajectory),
        cmocka_unit_test(adamw_fast__trajectory),
        cmocka_unit_test(adamw_fast__equals_reference),
        cmocka_unit_test(optim__bad_config),
        cmocka_unit_test(init__conv_default_bounds_moments),
        cmocka_unit_test(model__state_dict_names),
        cmocka_unit_test(model__save_load_roundtrip),
        cmocka_unit_test(model__backward_finite_difference),
        cmocka_unit_test(model__training_is_bit_reproducible),
        cmocka_unit_test(dataset__tiny_camvid),
        cmocka_unit_test(dataset__errors),
    };
    return cr_run_tests("ch04_layers", tests);
}
