/* test_ch05_layers.c — suite ch05: the GPU layers of cuda_layers.h equal chapter 4's CPU
 * layers on random inputs, and chapter 8's FPN (the width-reduced variant of chapter 8's
 * tests) and lab 4's network run in evaluation mode on the device equal the CPU forward.
 *
 * Built three times, as test_ch05.c: test_ch05_layers (nvcc; exits 77, SKIP, without a
 * GPU), test_ch05_layers_emu (the emulator, every launch run under three schedules and
 * compared byte for byte) and test_ch05_layers_emu_race (the race detector). Shapes are
 * small: the emulator runs every GPU thread on the CPU.
 *
 * Tolerances (stated per test): the element-wise layers, the max-pool, the up-samplings
 * and the evaluation BatchNorm repeat chapter 4's float operations in its order, so they
 * equal it bit for bit on the emulator; on a GPU nvcc may fuse a multiply and an add
 * (one rounding less), hence 1e-6 relative. The reductions (batch and group statistics,
 * the loss) sum in another order than chapter 4, in double: 1e-5 on normalised values. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch05_common.h"
#include "compare.h"
#include "cr_test.h"
#include "cuda_gemm.h"
#include "cuda_layers.h"
#include "fpn.h"
#include "layers.h"
#include "loss.h"
#include "model.h"
#include "model_common.h"
#include "optim.h"
#include "rng.h"
#include "safetensors.h"

/* ---- device buffers and checks ------------------------------------------------------------- */

/* Waits for the device and copies n floats of d into host. */
static void from_dev(float *host, const float *d, size_t n, const char *what)
{
    assert_cr_ok(cr_cuda_sync(what));
    assert_cr_ok(cr_cuda_to_host(host, d, n * sizeof(float)));
}

/* Fails unless every |got - want| <= atol + rtol * |want| (NaN matching NaN), printing the
 * first faults; what and seed name the case. */
static void expect_near(const char *what, const float *got, const float *want, size_t n,
                        double rtol, double atol, uint64_t seed)
{
    size_t bad = 0, first = n;
    for (size_t i = 0; i < n; i++) {
        const int both_nan = isnan(got[i]) && isnan(want[i]);
        const int ok = both_nan || (!isnan(got[i]) && !isnan(want[i]) &&
                                    fabs((double)got[i] - want[i]) <= atol + rtol * fabs((double)want[i]));
        if (!ok && bad++ == 0) first = i;
    }
    if (bad) {
        cr_print_faults(stderr, got, want, n, NULL, 0, rtol, atol, 5);
        fail_msg("%s: %zu of %zu values differ from chapter 4 by more than %.0e + %.0e * |ref| "
                 "(first at %zu: %.9g, expected %.9g; seed %llu)", what, bad, n, atol, rtol,
                 first, (double)got[first], (double)want[first], (unsigned long long)seed);
    }
}

/* Fails unless the want->numel floats at dev equal want (expect_near's rule). */
static void expect_dev(const char *what, const float *dev, const cr_tensor *want, double rtol,
                       double atol, uint64_t seed)
{
    float *h = malloc(want->numel * sizeof *h);
    assert_non_null(h);
    from_dev(h, dev, want->numel, what);
    expect_near(what, h, want->data, want->numel, rtol, atol, seed);
    free(h);
}

/* Frees the n device buffers of ptrs (NULL ones too). */
static void free_devs_n(void *const *ptrs, size_t n)
{
    for (size_t k = 0; k < n; k++) cr_cuda_free(ptrs[k]);
}

/* free_devs(a, b, ...): frees every device buffer named. */
#define free_devs(...) \
    free_devs_n((void *[]){__VA_ARGS__}, sizeof((void *[]){__VA_ARGS__}) / sizeof(void *))

/* Frees the n host tensors of ts. */
static void free_hosts_n(cr_tensor *const *ts, size_t n)
{
    for (size_t k = 0; k < n; k++) cr_tensor_free(ts[k]);
}

/* free_hosts(&a, &b, ...): frees every host tensor named. */
#define free_hosts(...) \
    free_hosts_n((cr_tensor *[]){__VA_ARGS__}, sizeof((cr_tensor *[]){__VA_ARGS__}) / sizeof(cr_tensor *))

/* ---- random cases ------------------------------------------------------------------------- */

/* A random 4-d shape: each size in [1, hi] (h and w in [1, hw]). */
static cr_cuda_nchw draw_shape(cr_rng *r, int64_t n_hi, int64_t c_hi, int64_t hw)
{
    cr_cuda_nchw d = {cr_rng_int(r, 1, n_hi), cr_rng_int(r, 1, c_hi), cr_rng_int(r, 1, hw),
                      cr_rng_int(r, 1, hw)};
    return d;
}

/* d as "NxCxHxW" in buf (returned). */
static const char *shape_str(char buf[96], cr_cuda_nchw d)
{
    snprintf(buf, 96, "%lldx%lldx%lldx%lld", (long long)d.n, (long long)d.c, (long long)d.h,
             (long long)d.w);
    return buf;
}

/* A host tensor of shape d, values uniform in [lo, hi]. */
static void host_random(cr_tensor *t, cr_cuda_nchw d, cr_rng *r, float lo, float hi)
{
    random_input(t, d.n, d.c, d.h, d.w, r, lo, hi);
}

/* A host vector of n values uniform in [lo, hi]. */
static void host_vec(cr_tensor *t, int64_t n, cr_rng *r, float lo, float hi)
{
    assert_cr_ok(cr_tensor_alloc(t, 1, &n));
    cr_tensor_fill_uniform(t, r, lo, hi);
}

/* One random case of a layer test: case t of count, drawn from r; seed names the run. */
typedef void layer_case(cr_rng *r, int t, int count, uint64_t seed);

/* Runs cr_test_count(n) cases of one_case from one seed (CR_SEED replays) and prints how
 * many equalled chapter 4 under name. */
static void run_cases(const char *name, int n, layer_case *one_case)
{
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    const int count = cr_test_count(n);
    for (int t = 0; t < count; t++) one_case(&r, t, count, seed);
    printf("gpu %s: %d random cases equal chapter 4 (seed %llu)\n", name, count,
           (unsigned long long)seed);
}

/* ---- ReLU and add -------------------------------------------------------------------------- */

/* One random case of gpu_layers__relu_add (case t of count, r drawing it, seed for the messages). */
static void relu_add_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)t;
    (void)count;
    const cr_cuda_nchw d = draw_shape(r, 2, 5, 40);
    cr_tensor a, b, want;
    host_random(&a, d, r, -1, 1);
    host_random(&b, d, r, -1, 1);
    a.data[cr_rng_int(r, 0, (int64_t)a.numel - 1)] = NAN;
    assert_cr_ok(cr_tensor_alloc4(&want, d.n, d.c, d.h, d.w));
    const size_t n = a.numel;
    float *da = to_dev(a.data, n, "a"), *db = to_dev(b.data, n, "b"), *dy = dev_poisoned(n, "y");
    assert_cr_ok(cr_relu_forward(&a, &want));
    assert_cr_ok(cr_cuda_relu((int64_t)n, da, dy));
    expect_dev("cr_cuda_relu", dy, &want, 1e-6, 0, seed);
    for (int relu = 0; relu <= 1; relu++) {
        assert_cr_ok(cr_add_forward(&a, &b, &want));
        if (relu) assert_cr_ok(cr_relu_forward(&want, &want));
        assert_cr_ok(cr_cuda_add((int64_t)n, da, db, relu ? db : dy, relu));   /* in place into b */
        expect_dev(relu ? "cr_cuda_add + ReLU (in place)" : "cr_cuda_add", relu ? db : dy, &want,
                   1e-6, 0, seed);
    }
    free_devs(da, db, dy);
    free_hosts(&a, &b, &want);
}

/* relu and add (+ReLU, in place too) equal chapter 4 exactly on the emulator (1e-6 on a
 * GPU), NaNs included. */
static void gpu_layers__relu_add(void **state)
{
    (void)state;
    run_cases("relu, add", 10, relu_add_case);
}

/* ---- BatchNorm and GroupNorm ------------------------------------------------------------------ */

/* One random case of gpu_layers__batchnorm (case t of count, r drawing it, seed for the messages). */
static void batchnorm_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    const cr_bn_params bp = cr_bn_params_default();
    cr_cuda_nchw d = draw_shape(r, 3, 20, 12);
    if (d.n * d.h * d.w < 2) d.w = 2;
    const bool training = t % 2 == 1, affine = t % 3 != 2, relu = t % 4 >= 2;
    const int64_t C = d.c;
    cr_tensor x, y, g, b, rm, rv, sm, si;
    host_random(&x, d, r, 1, 3);
    assert_cr_ok(cr_tensor_alloc4(&y, d.n, d.c, d.h, d.w));
    host_vec(&g, C, r, 0.5f, 1.5f);
    host_vec(&b, C, r, -1, 1);
    host_vec(&rm, C, r, 1, 3);
    host_vec(&rv, C, r, 0.1f, 2);
    host_vec(&sm, C, r, 0, 1);
    host_vec(&si, C, r, 0, 1);
    float *dx = to_dev(x.data, x.numel, "x"), *dg = to_dev(g.data, C, "gamma");
    float *db = to_dev(b.data, C, "beta"), *drm = to_dev(rm.data, C, "running_mean");
    float *drv = to_dev(rv.data, C, "running_var");
    float *dsm = dev_poisoned(C, "save_mean"), *dsi = dev_poisoned(C, "save_invstd");
    assert_cr_ok(cr_batchnorm2d_forward(&bp, training, &x, affine ? &g : NULL, affine ? &b : NULL,
                                        &rm, &rv, &y, &sm, &si));
    if (relu) assert_cr_ok(cr_relu_forward(&y, &y));
    assert_cr_ok(cr_cuda_batchnorm_forward(&bp, training, d, dx, affine ? dg : NULL,
                                           affine ? db : NULL, drm, drv, dx /* in place */,
                                           dsm, dsi, relu));
    char what[160], sh[96];
    snprintf(what, sizeof what, "cr_cuda_batchnorm_forward (%s%s%s, %s)",
             training ? "training" : "evaluation", affine ? ", affine" : "", relu ? ", ReLU" : "",
             shape_str(sh, d));
    const double tol = training ? 1e-5 : 1e-6;
    expect_dev(what, dx, &y, tol, tol, seed);
    expect_dev("batchnorm save_mean", dsm, &sm, tol, tol, seed);
    expect_dev("batchnorm save_invstd", dsi, &si, tol, tol, seed);
    expect_dev("batchnorm running_mean", drm, &rm, tol, tol, seed);
    expect_dev("batchnorm running_var", drv, &rv, tol, tol, seed);
    free_devs(dx, dg, db, drm, drv, dsm, dsi);
    free_hosts(&x, &y, &g, &b, &rm, &rv, &sm, &si);
}

/* BatchNorm in evaluation and training mode, with and without gamma/beta, with the fused
 * ReLU, in place: y, save_mean, save_invstd and the updated running statistics equal
 * chapter 4's within 1e-5 (training: statistics summed in another order) and 1e-6
 * (evaluation: the same operations). Inputs are offset (mean 2) so that the variance is
 * computed about a mean that matters. */
static void gpu_layers__batchnorm(void **state)
{
    (void)state;
    run_cases("batchnorm", 12, batchnorm_case);
}

/* One random case of gpu_layers__groupnorm (case t of count, r drawing it, seed for the messages). */
static void groupnorm_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    static const int64_t gs[] = {32, 32, 1, 4, 3};
    const int64_t groups = gs[t % 5];
    cr_cuda_nchw d = draw_shape(r, 2, 3, 20);
    d.c = groups * (t % 2 ? 2 : cr_rng_int(r, 1, 3));
    if (t == 0) d.w = 33;   /* a plane larger than a block: the strided loops wrap */
    const bool affine = t % 3 != 2, relu = t % 2 == 0;
    cr_tensor x, y, g, b, sm, si;
    host_random(&x, d, r, -2, 4);
    assert_cr_ok(cr_tensor_alloc4(&y, d.n, d.c, d.h, d.w));
    host_vec(&g, d.c, r, 0.5f, 1.5f);
    host_vec(&b, d.c, r, -1, 1);
    host_vec(&sm, d.n * groups, r, 0, 1);
    host_vec(&si, d.n * groups, r, 0, 1);
    float *dx = to_dev(x.data, x.numel, "x"), *dg = to_dev(g.data, g.numel, "gamma");
    float *db = to_dev(b.data, b.numel, "beta"), *dy = dev_poisoned(x.numel, "y");
    float *dsm = dev_poisoned(sm.numel, "save_mean"), *dsi = dev_poisoned(si.numel, "save_invstd");
    assert_cr_ok(cr_groupnorm_forward(groups, 1e-5, &x, affine ? &g : NULL, affine ? &b : NULL,
                                      &y, &sm, &si));
    if (relu) assert_cr_ok(cr_relu_forward(&y, &y));
    float *out = t % 2 ? dx : dy;   /* in place every other case */
    assert_cr_ok(cr_cuda_groupnorm_forward(groups, 1e-5, d, dx, affine ? dg : NULL,
                                           affine ? db : NULL, out, dsm, dsi, relu));
    char what[160], sh[96];
    snprintf(what, sizeof what, "cr_cuda_groupnorm_forward (%lld groups%s%s, %s)",
             (long long)groups, affine ? ", affine" : "", relu ? ", ReLU" : "", shape_str(sh, d));
    expect_dev(what, out, &y, 1e-5, 1e-5, seed);
    expect_dev("groupnorm save_mean", dsm, &sm, 1e-5, 1e-5, seed);
    expect_dev("groupnorm save_invstd", dsi, &si, 1e-5, 1e-5, seed);
    free_devs(dx, dg, db, dy, dsm, dsi);
    free_hosts(&x, &y, &g, &b, &sm, &si);
}

/* GroupNorm: 32 groups (the FPN's) on 32 and 64 channels, and other group counts;
 * y and the saved statistics within 1e-5 of chapter 4 (statistics summed in another order),
 * with and without gamma/beta and the fused ReLU. */
static void gpu_layers__groupnorm(void **state)
{
    (void)state;
    run_cases("groupnorm", 8, groupnorm_case);
}

/* ---- max-pool and up-sampling -------------------------------------------------------------------- */

/* One random case of gpu_layers__maxpool (case t of count, r drawing it, seed for the messages). */
static void maxpool_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    cr_pool_params p = cr_pool_params_make(3, 2, 1);
    if (t % 2) {
        const int64_t k = cr_rng_int(r, 1, 4);
        p = cr_pool_params_make(k, cr_rng_int(r, 1, 3), cr_rng_int(r, 0, k / 2));
    }
    cr_cuda_nchw d = draw_shape(r, 2, 3, 17);
    if (d.h < p.kernel_h) d.h = p.kernel_h;
    if (d.w < p.kernel_w) d.w = p.kernel_w;
    int64_t ho, wo;
    assert_cr_ok(cr_maxpool2d_out_size(&p, d.h, d.w, &ho, &wo));
    cr_tensor x, y;
    assert_cr_ok(cr_tensor_alloc4(&x, d.n, d.c, d.h, d.w));
    for (size_t i = 0; i < x.numel; i++) x.data[i] = (float)cr_rng_int(r, -3, 3);
    if (t % 3 == 0) x.data[cr_rng_int(r, 0, (int64_t)x.numel - 1)] = NAN;
    assert_cr_ok(cr_tensor_alloc4(&y, d.n, d.c, ho, wo));
    int64_t *am = malloc(y.numel * sizeof *am), *gam = malloc(y.numel * sizeof *gam);
    assert_non_null(am); assert_non_null(gam);
    assert_cr_ok(cr_maxpool2d_forward(&p, &x, &y, am));
    float *dx = to_dev(x.data, x.numel, "x"), *dy = dev_poisoned(y.numel, "y");
    int64_t *dam;
    assert_cr_ok(cr_cuda_malloc((void **)&dam, y.numel * sizeof *dam, "argmax"));
    assert_cr_ok(cr_cuda_maxpool2d_forward(&p, d, dx, dy, dam));
    char what[160], sh[96];
    snprintf(what, sizeof what, "cr_cuda_maxpool2d_forward (k %lld, s %lld, p %lld, %s)",
             (long long)p.kernel_h, (long long)p.stride_h, (long long)p.pad_h, shape_str(sh, d));
    expect_dev(what, dy, &y, 0, 0, seed);
    assert_cr_ok(cr_cuda_to_host(gam, dam, y.numel * sizeof *gam));
    for (size_t i = 0; i < y.numel; i++)
        if (gam[i] != am[i])
            fail_msg("%s: argmax[%zu] = %lld, chapter 4 chose %lld (seed %llu)", what, i,
                     (long long)gam[i], (long long)am[i], (unsigned long long)seed);
    /* without argmax: the same values */
    assert_cr_ok(cr_cuda_poison(dy, y.numel));
    assert_cr_ok(cr_cuda_maxpool2d_forward(&p, d, dx, dy, NULL));
    expect_dev(what, dy, &y, 0, 0, seed);
    free_devs(dx, dy, dam);
    free(am); free(gam);
    free_hosts(&x, &y);
}

/* Max-pool 3x3/2 padding 1 (the FPN's stem) and random pools: values drawn from a few
 * integers (ties: the first maximum must win) with a NaN; y and argmax exactly chapter 4's. */
static void gpu_layers__maxpool(void **state)
{
    (void)state;
    run_cases("maxpool", 12, maxpool_case);
}

/* The up-sampling of case t (of 7 kinds): the FPN's three, then random others (r draws
 * the output sizes). */
static cr_upsample_params upsample_params(int t, cr_rng *r)
{
    cr_upsample_params p = {.mode = CR_UPSAMPLE_NEAREST, .scale_h = 2, .scale_w = 2};
    switch (t % 7) {
    case 0: break;
    case 1: p.mode = CR_UPSAMPLE_BILINEAR; p.align_corners = true; break;
    case 2: p.mode = CR_UPSAMPLE_BILINEAR; p.align_corners = true; p.scale_h = p.scale_w = 4; break;
    case 3: p.mode = CR_UPSAMPLE_BILINEAR; p.scale_h = 1.5; p.scale_w = 2.5; break;
    case 4: p.scale_h = 1.75; p.scale_w = 3; break;
    case 5: p.mode = CR_UPSAMPLE_BILINEAR; p.align_corners = t % 2;
            p.scale_h = p.scale_w = 0; p.out_h = cr_rng_int(r, 1, 20); p.out_w = cr_rng_int(r, 1, 20); break;
    default: p.scale_h = p.scale_w = 0; p.out_h = cr_rng_int(r, 1, 20); p.out_w = cr_rng_int(r, 1, 20); break;
    }
    return p;
}

/* One random case of gpu_layers__upsample (case t of count, r drawing it, seed for the messages). */
static void upsample_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    const cr_upsample_params p = upsample_params(t, r);
    const cr_cuda_nchw d = draw_shape(r, 2, 3, 9);
    int64_t ho, wo;
    assert_cr_ok(cr_upsample_out_size(&p, d.h, d.w, &ho, &wo));
    cr_tensor x, y;
    host_random(&x, d, r, -1, 1);
    assert_cr_ok(cr_tensor_alloc4(&y, d.n, d.c, ho, wo));
    assert_cr_ok(cr_upsample_forward(&p, &x, &y));
    float *dx = to_dev(x.data, x.numel, "x"), *dy = dev_poisoned(y.numel, "y");
    assert_cr_ok(cr_cuda_upsample_forward(&p, d, dx, dy));
    char what[200], sh[96];
    snprintf(what, sizeof what, "cr_cuda_upsample_forward (%s%s, scale %g x %g, size %lldx%lld, "
             "input %s)", p.mode == CR_UPSAMPLE_NEAREST ? "nearest" : "bilinear",
             p.align_corners ? ", align_corners" : "", p.scale_h, p.scale_w, (long long)ho,
             (long long)wo, shape_str(sh, d));
    expect_dev(what, dy, &y, 1e-6, 1e-7, seed);
    free_devs(dx, dy);
    free_hosts(&x, &y);
}

/* The FPN's up-samplings (nearest x2, bilinear x2 and x4 with align_corners) and random
 * others (bilinear without align_corners, non-integer scales, output sizes): 1e-6 relative
 * (chapter 4's float operations in its order; equal on the emulator). */
static void gpu_layers__upsample(void **state)
{
    (void)state;
    run_cases("upsample", 14, upsample_case);
}

/* ---- cross-entropy and AdamW ------------------------------------------------------------------------ */

/* One random case of gpu_layers__cross_entropy (case t of count, r drawing it, seed for the messages). */
static void cross_entropy_case(cr_rng *r, int t, int count, uint64_t seed)
{
    cr_cuda_nchw d = draw_shape(r, 2, 12, 9);
    if (d.c < 2) d.c = 2;
    const int64_t P = d.n * d.h * d.w;
    const bool all_ignored = t == count - 1 && count > 1;
    cr_tensor z, dz, got;
    host_random(&z, d, r, -4, 4);
    assert_cr_ok(cr_tensor_alloc4(&dz, d.n, d.c, d.h, d.w));
    assert_cr_ok(cr_tensor_alloc4(&got, d.n, d.c, d.h, d.w));
    int32_t *tg = malloc((size_t)P * sizeof *tg);
    assert_non_null(tg);
    for (int64_t i = 0; i < P; i++)
        tg[i] = all_ignored || cr_rng_int(r, 0, 4) == 0 ? CR_IGNORE_INDEX
                                                        : (int32_t)cr_rng_int(r, 0, d.c - 1);
    double want = -1, loss = -1;
    assert_cr_ok(cr_cross_entropy(&z, tg, CR_IGNORE_INDEX, &want, &dz));
    float *dev_z = to_dev(z.data, z.numel, "logits"), *ddz = dev_poisoned(z.numel, "dlogits");
    int32_t *dt;
    assert_cr_ok(cr_cuda_malloc((void **)&dt, (size_t)P * sizeof *dt, "target"));
    assert_cr_ok(cr_cuda_to_device(dt, tg, (size_t)P * sizeof *dt));
    assert_cr_ok(cr_cuda_cross_entropy(d, dev_z, dt, CR_IGNORE_INDEX, &loss, ddz));
    from_dev(got.data, ddz, z.numel, "cross_entropy");
    if (!(fabs(loss - want) <= 1e-9 * fabs(want)) && !(all_ignored && loss == 0))
        fail_msg("cr_cuda_cross_entropy: loss %.17g, chapter 4 %.17g (case %d, seed %llu)", loss,
                 want, t, (unsigned long long)seed);
    expect_near("cr_cuda_cross_entropy dlogits", got.data, dz.data, z.numel, 1e-6, 1e-9, seed);
    if (all_ignored)
        for (size_t i = 0; i < z.numel; i++) assert_true(got.data[i] == 0.0f);
    /* a label that is not a class: refused, naming the pixel */
    if (!all_ignored) {
        const int64_t at = cr_rng_int(r, 0, P - 1);
        tg[at] = (int32_t)d.c;
        assert_cr_ok(cr_cuda_to_device(dt, tg, (size_t)P * sizeof *dt));
        assert_cr_fails(cr_cuda_cross_entropy(d, dev_z, dt, CR_IGNORE_INDEX, &loss, ddz), CR_EINVAL);
        char pix[64];
        snprintf(pix, sizeof pix, "image %lld, pixel %lld", (long long)(at / (d.h * d.w)),
                 (long long)(at % (d.h * d.w)));
        if (!strstr(cr_last_error(), pix))
            fail_msg("bad label at %s: the message says '%s'", pix, cr_last_error());
    }
    free_devs(dev_z, ddz, dt);
    free(tg);
    free_hosts(&z, &dz, &got);
}

/* Cross-entropy with ignored pixels: the loss within 1e-9 relative of chapter 4's (double
 * sums in another order), dlogits within 1e-6 relative + 1e-9; a bad label is refused,
 * naming its image and pixel; every pixel ignored gives 0 and a zero gradient. */
static void gpu_layers__cross_entropy(void **state)
{
    (void)state;
    run_cases("cross_entropy", 8, cross_entropy_case);
}

/* Three AdamW steps on random parameters: p, m and v within 1e-6 relative of chapter 4's
 * (both compute each value in double; the same bits on the emulator); bad configs refused. */
static void gpu_layers__adamw(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    const int64_t n = 1000 + cr_rng_int(&r, 0, 100);
    const int64_t shape[1] = {n};
    cr_tensor p, g, m, v;
    cr_tensor *ts[] = {&p, &g, &m, &v};
    for (int k = 0; k < 4; k++) assert_cr_ok(cr_tensor_alloc(ts[k], 1, shape));
    cr_tensor_fill_uniform(&p, &r, -1, 1);
    cr_tensor_fill(&m, 0);
    cr_tensor_fill(&v, 0);
    cr_optim_config c = cr_adamw_config(1e-3, 0.01);
    float *dp = to_dev(p.data, n, "p"), *dm = to_dev(m.data, n, "m"), *dv = to_dev(v.data, n, "v");
    float *dg = dev_poisoned(n, "g");
    for (int64_t step = 1; step <= 3; step++) {
        cr_tensor_fill_uniform(&g, &r, -1, 1);
        assert_cr_ok(cr_cuda_to_device(dg, g.data, n * sizeof(float)));
        assert_cr_ok(cr_adamw_update(&c, step, &p, &g, &m, &v));
        assert_cr_ok(cr_cuda_adamw_update(&c, step, n, dp, dg, dm, dv));
        expect_dev("cr_cuda_adamw_update p", dp, &p, 1e-6, 0, seed);
        expect_dev("cr_cuda_adamw_update m", dm, &m, 1e-6, 0, seed);
        expect_dev("cr_cuda_adamw_update v", dv, &v, 1e-6, 0, seed);
    }
    assert_cr_fails(cr_cuda_adamw_update(&c, 0, n, dp, dg, dm, dv), CR_EINVAL);
    cr_optim_config sgd = cr_sgd_config(0.1, 0.9, 0);
    assert_cr_fails(cr_cuda_adamw_update(&sgd, 1, n, dp, dg, dm, dv), CR_EINVAL);
    c.eps = 0;
    assert_cr_fails(cr_cuda_adamw_update(&c, 1, n, dp, dg, dm, dv), CR_EINVAL);
    free_devs(dp, dm, dv, dg);
    free_hosts(&p, &g, &m, &v);
}

/* Bad arguments are refused with CR_EINVAL naming what is wrong. */
static void gpu_layers__bad_arguments(void **state)
{
    (void)state;
    float *x = dev_poisoned(64, "x");
    const cr_cuda_nchw d = {1, 4, 4, 4}, empty = {1, 0, 4, 4};
    const cr_bn_params bp = cr_bn_params_default();
    assert_cr_fails(cr_cuda_relu(-1, x, x), CR_EINVAL);
    assert_cr_fails(cr_cuda_add(4, x, NULL, x, false), CR_EINVAL);
    assert_cr_fails(cr_cuda_batchnorm_forward(&bp, false, d, x, NULL, NULL, NULL, NULL, x, NULL,
                                              NULL, false), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "running"));
    assert_cr_fails(cr_cuda_batchnorm_forward(&bp, true, empty, x, NULL, NULL, NULL, NULL, x, NULL,
                                              NULL, false), CR_EINVAL);
    const cr_cuda_nchw one = {1, 4, 1, 1};
    assert_cr_fails(cr_cuda_batchnorm_forward(&bp, true, one, x, NULL, NULL, NULL, NULL, x, NULL,
                                              NULL, false), CR_EINVAL);   /* 1 value per channel */
    assert_cr_fails(cr_cuda_groupnorm_forward(3, 1e-5, d, x, NULL, NULL, x, NULL, NULL, false),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "divisible"));
    const cr_pool_params bad_pool = cr_pool_params_make(2, 1, 2);
    assert_cr_fails(cr_cuda_maxpool2d_forward(&bad_pool, d, x, x, NULL), CR_EINVAL);
    const cr_upsample_params bad_up = {.mode = CR_UPSAMPLE_NEAREST, .align_corners = true,
                                       .scale_h = 2, .scale_w = 2};
    assert_cr_fails(cr_cuda_upsample_forward(&bad_up, d, x, x), CR_EINVAL);
    double loss;
    assert_cr_fails(cr_cuda_cross_entropy(d, x, NULL, CR_IGNORE_INDEX, &loss, NULL), CR_EINVAL);
    cr_cuda_free(x);
}

/* ---- whole networks ---------------------------------------------------------------------------------------- */

/* Runs m in evaluation mode on x on the CPU and on the device and fails unless the two
 * outputs agree within rel_tol (relative L2); *gpu receives the device's output. */
static void expect_model_equal(const char *what, cr_model *m, const cr_tensor *x, double rel_tol,
                               cr_tensor *gpu)
{
    cr_model_train(m, false);
    const cr_tensor *y = NULL;
    assert_cr_ok(cr_model_forward(m, x, &y));
    cr_cuda_model *g = NULL;
    assert_cr_ok(cr_cuda_model_create(m, &g));
    assert_cr_ok(cr_cuda_model_forward_host(g, x, gpu));
    if (!cr_tensor_same_shape(gpu, y)) fail_msg("%s: the device output's shape differs", what);
    cr_cmp c = cr_compare(gpu->data, y->data, y->numel, rel_tol, rel_tol);
    if (!cr_cmp_ok(&c, rel_tol)) {
        cr_print_faults(stderr, gpu->data, y->data, y->numel, NULL, 0, rel_tol, rel_tol, 5);
        fail_msg("%s: device forward vs CPU forward: relative L2 %.3g > %.0e", what, c.rel_l2, rel_tol);
    }
    /* a second forward reuses the pool and gives the same output */
    cr_tensor again;
    assert_cr_ok(cr_cuda_model_forward_host(g, x, &again));
    if (memcmp(again.data, gpu->data, gpu->numel * sizeof(float)) != 0)
        fail_msg("%s: a second device forward differs from the first", what);
    printf("%s: device forward equals the CPU's (relative L2 %.2g), %zu device bytes\n", what,
           c.rel_l2, cr_cuda_model_bytes(g));
    cr_tensor_free(&again);
    cr_cuda_model_free(g);
    cr_cuda_workspace_release();
    cr_cuda_layers_release();
}

/* Lab 4's network (conv, BatchNorm, ReLU, 2x2 max-pools, bilinear up-sampling to the
 * skip's size, adds) with random weights: device forward within 1e-5 of the CPU's. */
static void gpu_model__lab4_network(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    cr_model m;
    assert_cr_ok(cr_model_build_fcn(&m, 11));
    assert_cr_ok(cr_model_init_params(&m, seed));
    randomize_norms(&m, &r, 2.0f);
    const cr_cuda_nchw d = {2, 3, 13, 18};
    cr_tensor x, y;
    host_random(&x, d, &r, -1, 1);
    char what[80];
    snprintf(what, sizeof what, "lab 4's network, 2x3x13x18 (seed %llu)", (unsigned long long)seed);
    expect_model_equal(what, &m, &x, 1e-5, &y);
    cr_tensor_free(&x);
    cr_tensor_free(&y);
    cr_model_free(&m);
}

/* Chapter 8's FPN, the width-reduced variant of its tests with PyTorch's weights, on its
 * 2x3x32x64 input: the device's evaluation forward within 1e-5 of the CPU's and within
 * 1e-4 of PyTorch's (chapter 8's own bound). */
static void gpu_model__fpn_reduced(void **state)
{
    (void)state;
    cr_st_file *io = NULL;
    cr_model m;
    golden_fpn_load(&m, &io, 0);
    cr_tensor x = {0}, y_eval = {0}, y;
    assert_cr_ok(cr_st_get(io, "x", &x));
    assert_cr_ok(cr_st_get(io, "y_eval", &y_eval));
    expect_model_equal("chapter 8's FPN (reduced), 2x3x32x64", &m, &x, 1e-5, &y);
    cr_cmp cmp = cr_compare(y.data, y_eval.data, y_eval.numel, 1e-4, 1e-4);
    if (y.numel != y_eval.numel || !cr_cmp_ok(&cmp, 1e-4))
        fail_msg("FPN on the device vs PyTorch's evaluation output: relative L2 %.3g > 1e-4",
                 cmp.rel_l2);
    printf("chapter 8's FPN on the device vs PyTorch: relative L2 %.2g\n", cmp.rel_l2);
    cr_tensor_free(&x); cr_tensor_free(&y_eval); cr_tensor_free(&y);
    cr_model_free(&m);
    cr_st_free(io);
}

/* The reduced FPN with its convolutions on the tensor cores (cr_cuda_model_set_precision):
 * TF32, FP16 and BF16 each differ from the CPU's FP32 forward (the rounded path ran: above
 * 1e-6) and stay within `convs` times the precision's GEMM bound, `convs` the number of
 * convolutions that ran on the tensor cores (a first-order bound: each adds at most its
 * own relative error). An unknown precision is refused. */
static void gpu_model__fpn_reduced_tensor_cores(void **state)
{
    (void)state;
    cr_cuda_info info;
    assert_cr_ok(cr_cuda_device_info(&info));
    if (info.cc_major < 8) skip();
    cr_st_file *io = NULL;
    cr_model m;
    golden_fpn_load(&m, &io, 0);
    cr_tensor x = {0};
    assert_cr_ok(cr_st_get(io, "x", &x));
    cr_model_train(&m, false);
    const cr_tensor *y = NULL;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    cr_cuda_model *g = NULL;
    assert_cr_ok(cr_cuda_model_create(&m, &g));
    for (int p = CR_CUDA_TF32; p <= CR_CUDA_BF16; p++) {
        const cr_cuda_precision prec = (cr_cuda_precision)p;
        int convs = 0;
        char tc_path[32];   /* the path's name on the tensor cores, "tf32_implicit", ... */
        snprintf(tc_path, sizeof tc_path, "%s_implicit", cr_cuda_precision_name(prec));
        for (int i = 0; i < m.n; i++) {
            if (m.mods[i].kind != CR_MOD_CONV) continue;
            cr_conv_shape cs;   /* the input size does not change the rule (channels per group) */
            assert_cr_ok(cr_conv_shape_init(&cs, &m.mods[i].conv, 1, 64, 64));
            convs += strcmp(cr_cuda_conv2d_path_at(&cs, prec), tc_path) == 0;
        }
        assert_cr_ok(cr_cuda_model_set_precision(g, prec));
        cr_tensor gy;
        assert_cr_ok(cr_cuda_model_forward_host(g, &x, &gy));
        const cr_cmp c = cr_compare(gy.data, y->data, y->numel, 1, 1);
        const double bound = convs * cr_cuda_gemm_tolerance(prec, 0);
        printf("chapter 8's FPN (reduced) at %s (%d convolutions on the tensor cores): relative L2 "
               "%.2g against the CPU's FP32 forward (bound %.2g)\n", cr_cuda_precision_name(prec),
               convs, c.rel_l2, bound);
        if (!(convs > 0 && c.rel_l2 > 1e-6 && c.rel_l2 <= bound))
            fail_msg("FPN at %s: relative L2 %.3g, expected above 1e-6 and at most %.3g (%d "
                     "convolutions on the tensor cores)", cr_cuda_precision_name(prec), c.rel_l2,
                     bound, convs);
        cr_tensor_free(&gy);
    }
    assert_cr_fails(cr_cuda_model_set_precision(g, (cr_cuda_precision)7), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "precision"));
    cr_cuda_model_free(g);
    cr_cuda_workspace_release();
    cr_cuda_layers_release();
    cr_tensor_free(&x);
    cr_model_free(&m);
    cr_st_free(io);
}

/* The device forward's profile (m->profile): every module synchronised, timed and counted
 * once per forward, nothing counted with it off; cr_cuda_model_shape gives each module's
 * output shape of the last forward (the last one the network's output), zeros out of range. */
static void gpu_model__profile_and_shapes(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    cr_model m;
    assert_cr_ok(cr_model_build_fcn(&m, 4));
    assert_cr_ok(cr_model_init_params(&m, seed));
    cr_model_train(&m, false);
    cr_cuda_model *g = NULL;
    assert_cr_ok(cr_cuda_model_create(&m, &g));
    cr_tensor x, y;
    random_input(&x, 2, 3, 12, 16, &r, -1.0f, 1.0f);
    cr_model_profile_reset(&m);
    m.profile = true;
    assert_cr_ok(cr_cuda_model_forward_host(g, &x, &y));
    double total = 0;
    for (int i = 0; i < m.n; i++) {
        if (m.mods[i].fwd_calls != 1)
            fail_msg("module '%s' counted %lld forwards, expected 1", m.mods[i].name,
                     (long long)m.mods[i].fwd_calls);
        total += m.mods[i].fwd_s;
    }
    assert_true(total > 0);
    const cr_cuda_nchw o = cr_cuda_model_shape(g, m.n - 1);
    assert_true(o.n == y.shape[0] && o.c == y.shape[1] && o.h == y.shape[2] && o.w == y.shape[3]);
    const cr_cuda_nchw none = cr_cuda_model_shape(g, m.n);
    assert_true(none.n == 0 && none.c == 0 && none.h == 0 && none.w == 0);
    cr_tensor_free(&y);
    m.profile = false;
    assert_cr_ok(cr_cuda_model_forward_host(g, &x, &y));
    for (int i = 0; i < m.n; i++) assert_int_equal(m.mods[i].fwd_calls, 1);
    cr_tensor_free(&y);
    cr_tensor_free(&x);
    cr_cuda_model_free(g);
    cr_model_free(&m);
}

/* The device forward refuses a model in training mode, a model with a hook, a hook-free
 * model with a global average pool, and an input with the wrong channel count, naming the
 * module. */
static void gpu_model__refusals(void **state)
{
    (void)state;
    cr_model m;
    assert_cr_ok(cr_model_build_fcn(&m, 5));
    assert_cr_ok(cr_model_init_params(&m, 1));
    cr_cuda_model *g = NULL;
    cr_module_hook hook;   /* any hook: the device forward runs none */
    memset(&hook, 0, sizeof hook);
    m.mods[1].hook = &hook;
    assert_cr_fails(cr_cuda_model_create(&m, &g), CR_EINVAL);
    assert_null(g);
    assert_non_null(strstr(cr_last_error(), m.mods[1].name));
    assert_non_null(strstr(cr_last_error(), "device forward does not run hooks"));
    m.mods[1].hook = NULL;
    assert_cr_ok(cr_cuda_model_create(&m, &g));
    cr_tensor x, y;
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 4, 8, 8));   /* 4 channels: the network takes 3 */
    cr_tensor_fill(&x, 0.5f);
    cr_model_train(&m, true);
    assert_cr_fails(cr_cuda_model_forward_host(g, &x, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "training"));
    cr_model_train(&m, false);
    assert_cr_fails(cr_cuda_model_forward_host(g, &x, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "channels"));
    cr_cuda_model_free(g);
    cr_tensor_free(&x);
    cr_model_free(&m);
    cr_model_init(&m);
    assert_true(cr_model_add_avgpool(&m, "gap", CR_MODEL_INPUT) >= 0);
    assert_cr_fails(cr_cuda_model_create(&m, &g), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "gap"));
    cr_model_free(&m);
}

/* ---- backward (layer_backward.cu) ------------------------------------------------------------------------ */

/* Tolerances of the backward tests. The element-wise backwards, the max-pool's and the
 * up-sampling's gathers and the evaluation BatchNorm's dx repeat chapter 4's float
 * operations in its order: bit for bit on the emulator (tolerance 0), 1e-6 relative per
 * value on a GPU (nvcc may fuse a multiply and an add).
 * The norms' sums (dgamma, dbeta, and dx in training, which subtracts the means of g and
 * g * xhat, g = dy masked by the ReLU) are summed in double here, and in float within
 * blocks of 256 values by chapter 4: at most 20 roundings per term, 2^-24 each, so a sum
 * may differ by 1.2e-6 of the sum of its terms' magnitudes, |g| for dbeta, |g * xhat| for
 * dgamma; dx = gamma * invstd * (g - mean g - xhat * mean(g * xhat)) inherits that
 * relative to its terms, and chapter 4 evaluates it as kd * g + kx * x + k0, the mean
 * folded into k0: where the variance is small (a group of 2 close values) kx * x and k0
 * are |mean| * invstd times larger than dx and cancel. The bound is therefore relative to
 * the size of the terms (norm_terms): ||got - want|| <= BWD_SUM_TOL * max(||want||,
 * ||terms||), 1e-5: 4 times 2.4e-6 (the two sums dx subtracts); measured at most 1.1e-7
 * in 30 runs at CR_TEST_SCALE=5 (each test prints its worst). */
#define BWD_SUM_TOL 1e-5

/* The per-value bound of the backwards that repeat chapter 4's operations in its order. */
static double bwd_exact_tol(void)
{
    return cr_cuda_emulated() ? 0 : 1e-6;
}

/* The L2 norm of n floats. */
static double norm2(const float *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s);
}

/* Fails unless the want->numel floats at dev are finite and within rel_tol of want in L2,
 * relative to the larger of ||want|| and ||terms|| (the magnitudes of the terms each value
 * sums; NULL: ||want|| alone); returns the relative error found. */
static double expect_dev_l2(const char *what, const float *dev, const cr_tensor *want,
                            const cr_tensor *terms, double rel_tol, uint64_t seed)
{
    float *h = malloc(want->numel * sizeof *h);
    assert_non_null(h);
    from_dev(h, dev, want->numel, what);
    double diff = 0;
    size_t nonfinite = 0;
    for (size_t i = 0; i < want->numel; i++) {
        nonfinite += !isfinite(h[i]);
        diff += ((double)h[i] - want->data[i]) * ((double)h[i] - want->data[i]);
    }
    const double nw = norm2(want->data, want->numel), nt = terms ? norm2(terms->data, terms->numel) : 0;
    const double scale = nw > nt ? nw : nt, rel = sqrt(diff) / (scale > 0 ? scale : 1);
    if (nonfinite || !(rel <= rel_tol)) {
        cr_print_faults(stderr, h, want->data, want->numel, NULL, 0, rel_tol, rel_tol * scale, 5);
        fail_msg("%s: ||got - want|| = %.3g relative to %.3g (||want|| %.3g, ||terms|| %.3g), "
                 "above %.0e; %zu values not finite (seed %llu)", what, rel, scale, nw, nt,
                 rel_tol, nonfinite, (unsigned long long)seed);
    }
    free(h);
    return rel;
}

/* A host tensor of shape d, uniform in [lo, hi] and never 0 (a non-trivial gradient). */
static void host_grad(cr_tensor *t, cr_cuda_nchw d, cr_rng *r)
{
    host_random(t, d, r, -1, 1);
    for (size_t i = 0; i < t->numel; i++)
        if (t->data[i] == 0.0f) t->data[i] = 0.5f;
}

/* One random case of gpu_backward__relu_add (case t of count, r drawing it, seed for the messages). */
static void relu_add_backward_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    const cr_cuda_nchw d = draw_shape(r, 3, 5, 23);
    cr_tensor x, y, g, want;
    host_random(&x, d, r, -1, 1);
    host_grad(&g, d, r);
    assert_cr_ok(cr_tensor_alloc4(&y, d.n, d.c, d.h, d.w));
    assert_cr_ok(cr_tensor_alloc4(&want, d.n, d.c, d.h, d.w));
    assert_cr_ok(cr_relu_forward(&x, &y));
    y.data[cr_rng_int(r, 0, (int64_t)y.numel - 1)] = NAN;   /* passes nothing, as chapter 4 */
    assert_cr_ok(cr_relu_backward(&y, &g, &want));
    const size_t n = y.numel;
    float *dy_ = to_dev(y.data, n, "y"), *dg = to_dev(g.data, n, "dy");
    float *da = dev_poisoned(n, "da"), *db = dev_poisoned(n, "db");
    assert_cr_ok(cr_cuda_relu_backward((int64_t)n, dy_, dg, da));
    expect_dev("cr_cuda_relu_backward", da, &want, bwd_exact_tol(), 0, seed);
    /* the add's fused ReLU: both gradients; every other case da in place of dy, or db only */
    assert_cr_ok(cr_cuda_poison(da, n));
    float *a_out = t % 2 ? dg : da;
    assert_cr_ok(cr_cuda_add_relu_backward((int64_t)n, dy_, dg, t % 3 == 2 ? NULL : a_out, db));
    expect_dev("cr_cuda_add_relu_backward db", db, &want, bwd_exact_tol(), 0, seed);
    if (t % 3 != 2) expect_dev("cr_cuda_add_relu_backward da", a_out, &want, bwd_exact_tol(), 0, seed);
    free_devs(dy_, dg, da, db);
    free_hosts(&x, &y, &g, &want);
}

/* ReLU's backward and the add's fused ReLU backward (one gradient or both, in place of
 * dy too) equal chapter 4's masking exactly, a NaN output passing nothing. */
static void gpu_backward__relu_add(void **state)
{
    (void)state;
    run_cases("relu/add backward", 8, relu_add_backward_case);
}

/* The worst relative L2 the norms' backward tests saw (printed at the end of each test). */
static double bwd_worst_l2;

/* The norm of a backward case: BatchNorm (groups 0) or GroupNorm with groups. */
typedef struct {
    int64_t groups;      /* 0: BatchNorm */
    bool training;       /* BatchNorm only */
    bool affine, relu, in_place;
} norm_case;

/* Runs the forward of nc on the CPU (x of shape d, gamma g) into y and the saved
 * statistics sm, si (allocated here), then its ReLU when fused. */
static void norm_forward_cpu(const norm_case *nc, const cr_tensor *x, const cr_tensor *g,
                             const cr_tensor *b, cr_tensor *y, cr_tensor *sm, cr_tensor *si,
                             cr_rng *r)
{
    const cr_cuda_nchw d = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    assert_cr_ok(cr_tensor_alloc4(y, d.n, d.c, d.h, d.w));
    if (nc->groups) {
        host_vec(sm, d.n * nc->groups, r, 0, 1);
        host_vec(si, d.n * nc->groups, r, 0, 1);
        assert_cr_ok(cr_groupnorm_forward(nc->groups, 1e-5, x, nc->affine ? g : NULL,
                                          nc->affine ? b : NULL, y, sm, si));
    } else {
        cr_tensor rm, rv;
        host_vec(&rm, d.c, r, 1, 3);
        host_vec(&rv, d.c, r, 0.1f, 2);
        host_vec(sm, d.c, r, 0, 1);
        host_vec(si, d.c, r, 0, 1);
        const cr_bn_params bp = cr_bn_params_default();
        assert_cr_ok(cr_batchnorm2d_forward(&bp, nc->training, x, nc->affine ? g : NULL,
                                            nc->affine ? b : NULL, &rm, &rv, y, sm, si));
        free_hosts(&rm, &rv);
    }
    if (nc->relu) assert_cr_ok(cr_relu_forward(y, y));
}

/* The magnitudes of the terms the norm's gradients sum (see BWD_SUM_TOL), from x, gamma
 * (NULL: 1), the saved statistics and g (dy masked), allocated here: tdb[c] = the sum of
 * |g| over channel c, tdg[c] = the sum of |g * xhat|, and tdx (x's shape) the terms of
 * dx = invstd * (gamma * g - A - xhat * B) as chapter 4 evaluates it, kd * g + kx * x + k0:
 * invstd * (|gamma * g| + |A| + invstd * |B| * (|x| + |mean|)), A and B the means of
 * gamma * g and gamma * g * xhat over the statistics' set (a channel, or an image's group). */
static void norm_terms(const norm_case *nc, const cr_tensor *x, const cr_tensor *gamma,
                       const cr_tensor *sm, const cr_tensor *si, const cr_tensor *g,
                       cr_tensor *tdx, cr_tensor *tdg, cr_tensor *tdb)
{
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t sets = (int64_t)sm->numel;
    assert_cr_ok(cr_tensor_alloc4(tdx, N, C, x->shape[2], x->shape[3]));
    assert_cr_ok(cr_tensor_alloc(tdg, 1, &C));
    assert_cr_ok(cr_tensor_alloc(tdb, 1, &C));
    cr_tensor_fill(tdg, 0);
    cr_tensor_fill(tdb, 0);
    double *A = calloc((size_t)sets, sizeof *A), *B = calloc((size_t)sets, sizeof *B);
    assert_non_null(A);
    assert_non_null(B);
    const double M = nc->groups ? (double)(C / nc->groups * HW) : (double)(N * HW);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                const int64_t st = nc->groups ? n * nc->groups + c / (C / nc->groups) : c;
                const double mean = sm->data[st], invstd = si->data[st];
                const double gm = gamma ? gamma->data[c] : 1.0;
                double sg = 0, sgx = 0;
                for (int64_t i = 0; i < HW; i++) {
                    const int64_t e = (n * C + c) * HW + i;
                    const double xhat = (x->data[e] - mean) * invstd;
                    if (pass == 0) {
                        A[st] += gm * g->data[e] / M;
                        B[st] += gm * g->data[e] * xhat / M;
                        continue;
                    }
                    tdx->data[e] = (float)(invstd * (fabs(gm * g->data[e]) + fabs(A[st]) +
                                           invstd * fabs(B[st]) * (fabs(x->data[e]) + fabs(mean))));
                    sg += fabs(g->data[e]);
                    sgx += fabs(g->data[e] * xhat);
                }
                tdg->data[c] += (float)sgx;
                tdb->data[c] += (float)sg;
            }
    free(A);
    free(B);
}

/* One backward of nc on x (shape d): chapter 4's (dy masked by the ReLU, then the norm's
 * backward) against the device's; dx, dgamma, dbeta compared (L2 within BWD_SUM_TOL of
 * their terms' size; evaluation BatchNorm's dx to bwd_exact_tol per value). */
static void norm_backward_check(const norm_case *nc, cr_cuda_nchw d, cr_rng *r, uint64_t seed)
{
    cr_tensor x, y, gm, bt, sm, si, dy, dym, dx, dg, db;
    host_random(&x, d, r, 1, 3);   /* offset: x - mean matters */
    host_vec(&gm, d.c, r, 0.5f, 1.5f);
    host_vec(&bt, d.c, r, -1, 1);
    norm_forward_cpu(nc, &x, &gm, &bt, &y, &sm, &si, r);
    host_grad(&dy, d, r);
    assert_cr_ok(cr_tensor_alloc4(&dym, d.n, d.c, d.h, d.w));
    assert_cr_ok(cr_tensor_alloc4(&dx, d.n, d.c, d.h, d.w));
    host_vec(&dg, d.c, r, 0, 1);
    host_vec(&db, d.c, r, 0, 1);
    if (nc->relu) assert_cr_ok(cr_relu_backward(&y, &dy, &dym));
    else cr_copy_f(dym.data, dy.data, (int64_t)dy.numel);
    const cr_tensor *g = nc->affine ? &gm : NULL;
    if (nc->groups)
        assert_cr_ok(cr_groupnorm_backward(nc->groups, &x, g, &sm, &si, &dym, &dx, &dg, &db));
    else
        assert_cr_ok(cr_batchnorm2d_backward(nc->training, &x, g, &sm, &si, &dym, &dx, &dg, &db));
    float *d_x = to_dev(x.data, x.numel, "x"), *d_g = to_dev(gm.data, d.c, "gamma");
    float *d_sm = to_dev(sm.data, sm.numel, "save_mean"), *d_si = to_dev(si.data, si.numel, "save_invstd");
    float *d_y = to_dev(y.data, y.numel, "y"), *d_dy = to_dev(dy.data, dy.numel, "dy");
    float *d_dx = nc->in_place ? d_dy : dev_poisoned(x.numel, "dx");
    float *d_dg = dev_poisoned(d.c, "dgamma"), *d_db = dev_poisoned(d.c, "dbeta");
    const float *gg = nc->affine ? d_g : NULL, *yy = nc->relu ? d_y : NULL;
    if (nc->groups)
        assert_cr_ok(cr_cuda_groupnorm_backward(nc->groups, d, d_x, gg, d_sm, d_si, yy, d_dy,
                                                d_dx, d_dg, d_db));
    else
        assert_cr_ok(cr_cuda_batchnorm_backward(nc->training, d, d_x, gg, d_sm, d_si, yy, d_dy,
                                                d_dx, d_dg, d_db));
    char what[200], sh[96];
    snprintf(what, sizeof what, "%s (%s%s%s%s, %s)",
             nc->groups ? "cr_cuda_groupnorm_backward" : "cr_cuda_batchnorm_backward",
             nc->groups ? "groups" : (nc->training ? "training" : "evaluation"),
             nc->affine ? ", affine" : "", nc->relu ? ", ReLU" : "",
             nc->in_place ? ", in place" : "", shape_str(sh, d));
    char wdx[240], wdg[240], wdb[240];
    snprintf(wdx, sizeof wdx, "%s dx", what);
    snprintf(wdg, sizeof wdg, "%s dgamma", what);
    snprintf(wdb, sizeof wdb, "%s dbeta", what);
    cr_tensor tdx, tdg, tdb;
    norm_terms(nc, &x, g, &sm, &si, &dym, &tdx, &tdg, &tdb);
    const bool dx_exact = !nc->groups && !nc->training;   /* evaluation: chapter 4's operations */
    double l2[3];
    if (dx_exact) {
        expect_dev(wdx, d_dx, &dx, bwd_exact_tol(), 0, seed);
        l2[0] = 0;
    } else {
        l2[0] = expect_dev_l2(wdx, d_dx, &dx, &tdx, BWD_SUM_TOL, seed);
    }
    l2[1] = expect_dev_l2(wdg, d_dg, &dg, &tdg, BWD_SUM_TOL, seed);
    l2[2] = expect_dev_l2(wdb, d_db, &db, &tdb, BWD_SUM_TOL, seed);
    for (int k = 0; k < 3; k++)
        if (l2[k] > bwd_worst_l2) bwd_worst_l2 = l2[k];
    /* dx alone (dgamma, dbeta not wanted): the same bits as with them (a fixed tree) */
    if (!nc->in_place) {
        float *first = malloc(x.numel * sizeof *first), *again = malloc(x.numel * sizeof *again);
        assert_non_null(first);
        assert_non_null(again);
        from_dev(first, d_dx, x.numel, wdx);
        assert_cr_ok(cr_cuda_poison(d_dx, x.numel));
        if (nc->groups)
            assert_cr_ok(cr_cuda_groupnorm_backward(nc->groups, d, d_x, gg, d_sm, d_si, yy, d_dy,
                                                    d_dx, NULL, NULL));
        else
            assert_cr_ok(cr_cuda_batchnorm_backward(nc->training, d, d_x, gg, d_sm, d_si, yy,
                                                    d_dy, d_dx, NULL, NULL));
        from_dev(again, d_dx, x.numel, wdx);
        if (memcmp(first, again, x.numel * sizeof *first) != 0)
            fail_msg("%s: dx without dgamma and dbeta differs from dx with them (seed %llu)", wdx,
                     (unsigned long long)seed);
        free(first);
        free(again);
        cr_cuda_free(d_dx);
    }
    free_devs(d_x, d_g, d_sm, d_si, d_y, d_dy, d_dg, d_db);
    free_hosts(&x, &y, &gm, &bt, &sm, &si, &dy, &dym, &dx, &dg, &db, &tdx, &tdg, &tdb);
}

/* One random case of gpu_backward__batchnorm (case t of count, r drawing it, seed for the messages). */
static void batchnorm_backward_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    cr_cuda_nchw d = draw_shape(r, 3, 9, 12);
    if (d.n * d.h * d.w < 2) d.w = 3;
    if (t == 0) d.h = 17, d.w = 19;   /* a plane larger than a block: the strided loops wrap */
    const norm_case nc = {0, t % 2 == 1, t % 3 != 2, t % 4 >= 2, t % 5 == 1};
    norm_backward_check(&nc, d, r, seed);
}

/* BatchNorm's backward in training and evaluation, with and without gamma, with the
 * forward's fused ReLU (dy masked by y), in place: dx, dgamma, dbeta against chapter 4's
 * (tolerances above). */
static void gpu_backward__batchnorm(void **state)
{
    (void)state;
    bwd_worst_l2 = 0;
    run_cases("batchnorm backward", 12, batchnorm_backward_case);
    printf("gpu batchnorm backward: worst relative L2 error %.2g (bound %.0e)\n", bwd_worst_l2, BWD_SUM_TOL);
}

/* One random case of gpu_backward__groupnorm (case t of count, r drawing it, seed for the messages). */
static void groupnorm_backward_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    static const int64_t gs[] = {32, 1, 4, 3, 2};
    const int64_t groups = gs[t % 5];
    cr_cuda_nchw d = draw_shape(r, 3, 3, 13);
    d.c = groups * (groups == 32 ? cr_rng_int(r, 1, 2) : cr_rng_int(r, 1, 4));
    if (t == 1) d.w = 29;   /* a plane larger than a block */
    const norm_case nc = {groups, true, t % 3 != 2, t % 2 == 0, t % 4 == 3};
    norm_backward_check(&nc, d, r, seed);
}

/* GroupNorm's backward: 32 groups (the FPN's), one group, and 2, 3, 4; with and without
 * gamma, the fused ReLU, in place: dx, dgamma, dbeta against chapter 4's. */
static void gpu_backward__groupnorm(void **state)
{
    (void)state;
    bwd_worst_l2 = 0;
    run_cases("groupnorm backward", 10, groupnorm_backward_case);
    printf("gpu groupnorm backward: worst relative L2 error %.2g (bound %.0e)\n", bwd_worst_l2, BWD_SUM_TOL);
}

/* One random case of gpu_backward__maxpool (case t of count, r drawing it, seed for the messages). */
static void maxpool_backward_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    cr_pool_params p = cr_pool_params_make(3, 2, t % 4 == 0 ? 0 : 1);   /* overlapping */
    if (t % 2) {
        const int64_t k = cr_rng_int(r, 1, 4);
        p = cr_pool_params_make(k, cr_rng_int(r, 1, 3), cr_rng_int(r, 0, k / 2));
        p.kernel_w = cr_rng_int(r, 1, 4);   /* rectangular windows too */
        p.pad_w = cr_rng_int(r, 0, p.kernel_w / 2);
    }
    cr_cuda_nchw d = draw_shape(r, 3, 3, 15);
    if (d.h < p.kernel_h) d.h = p.kernel_h;
    if (d.w < p.kernel_w) d.w = p.kernel_w;
    int64_t ho, wo;
    assert_cr_ok(cr_maxpool2d_out_size(&p, d.h, d.w, &ho, &wo));
    const cr_cuda_nchw dyd = {d.n, d.c, ho, wo};
    cr_tensor x, y, g, want;
    assert_cr_ok(cr_tensor_alloc4(&x, d.n, d.c, d.h, d.w));
    for (size_t i = 0; i < x.numel; i++) x.data[i] = (float)cr_rng_int(r, -3, 3);   /* ties */
    if (t % 3 == 0) x.data[cr_rng_int(r, 0, (int64_t)x.numel - 1)] = NAN;
    assert_cr_ok(cr_tensor_alloc4(&y, d.n, d.c, ho, wo));
    assert_cr_ok(cr_tensor_alloc4(&want, d.n, d.c, d.h, d.w));
    host_grad(&g, dyd, r);
    int64_t *am = malloc(y.numel * sizeof *am);
    assert_non_null(am);
    assert_cr_ok(cr_maxpool2d_forward(&p, &x, &y, am));
    assert_cr_ok(cr_maxpool2d_backward(am, &g, &want));
    /* the device's own forward chooses the argmax */
    float *d_x = to_dev(x.data, x.numel, "x"), *d_y = dev_poisoned(y.numel, "y");
    float *d_g = to_dev(g.data, g.numel, "dy"), *d_dx = dev_poisoned(x.numel, "dx");
    int64_t *d_am;
    assert_cr_ok(cr_cuda_malloc((void **)&d_am, y.numel * sizeof *d_am, "argmax"));
    assert_cr_ok(cr_cuda_maxpool2d_forward(&p, d, d_x, d_y, d_am));
    assert_cr_ok(cr_cuda_maxpool2d_backward(&p, d, dyd, d_am, d_g, d_dx));
    char what[200], sh[96];
    snprintf(what, sizeof what, "cr_cuda_maxpool2d_backward (k %lldx%lld, s %lld, p %lldx%lld, %s)",
             (long long)p.kernel_h, (long long)p.kernel_w, (long long)p.stride_h,
             (long long)p.pad_h, (long long)p.pad_w, shape_str(sh, d));
    expect_dev(what, d_dx, &want, bwd_exact_tol(), 0, seed);
    /* an argmax outside its window: refused, naming it, dx not written */
    const int64_t o = cr_rng_int(r, 0, (int64_t)y.numel - 1);
    int64_t outside = t % 2 ? (int64_t)(d.h * d.w) : -1;   /* outside the plane */
    const int64_t oh = o / wo % ho, below = oh * p.stride_h - p.pad_h + p.kernel_h;
    if (t % 3 == 1 && below < d.h) outside = below * d.w;   /* in the plane, below the window */
    assert_cr_ok(cr_cuda_to_device(d_am + o, &outside, sizeof outside));
    assert_cr_ok(cr_cuda_poison(d_dx, x.numel));
    assert_cr_fails(cr_cuda_maxpool2d_backward(&p, d, dyd, d_am, d_g, d_dx), CR_EINVAL);
    char name[48];
    snprintf(name, sizeof name, "argmax[%lld]", (long long)o);
    if (!strstr(cr_last_error(), name))
        fail_msg("%s: the message says '%s', expected it to name %s", what, cr_last_error(), name);
    float *h = malloc(x.numel * sizeof *h);
    assert_non_null(h);
    from_dev(h, d_dx, x.numel, "dx after a refusal");
    for (size_t i = 0; i < x.numel; i++)
        if (!isnan(h[i])) fail_msg("%s: dx[%zu] written after a refusal", what, i);
    free(h);
    free(am);
    free_devs(d_x, d_y, d_g, d_dx, d_am);
    free_hosts(&x, &y, &g, &want);
}

/* Max-pool backward: 3x3 stride 2 (overlapping windows, the FPN's stem) with and without
 * padding, and random rectangular pools, from the device forward's argmax (ties and a NaN
 * in x): dx equals chapter 4's scatter exactly on the emulator (the gather adds in its
 * order); an argmax outside its window is refused and nothing is written. */
static void gpu_backward__maxpool(void **state)
{
    (void)state;
    run_cases("maxpool backward", 12, maxpool_backward_case);
}

/* One random case of gpu_backward__upsample (case t of count, r drawing it, seed for the messages). */
static void upsample_backward_case(cr_rng *r, int t, int count, uint64_t seed)
{
    (void)count;
    const cr_upsample_params p = upsample_params(t, r);
    const cr_cuda_nchw d = draw_shape(r, 3, 3, 11);
    int64_t ho, wo;
    assert_cr_ok(cr_upsample_out_size(&p, d.h, d.w, &ho, &wo));
    const cr_cuda_nchw dyd = {d.n, d.c, ho, wo};
    cr_tensor g, want;
    host_grad(&g, dyd, r);
    assert_cr_ok(cr_tensor_alloc4(&want, d.n, d.c, d.h, d.w));
    assert_cr_ok(cr_upsample_backward(&p, &g, &want));
    float *d_g = to_dev(g.data, g.numel, "dy"), *d_dx = dev_poisoned(want.numel, "dx");
    assert_cr_ok(cr_cuda_upsample_backward(&p, d, dyd, d_g, d_dx));
    char what[200], sh[96];
    snprintf(what, sizeof what, "cr_cuda_upsample_backward (%s%s, scale %g x %g, size %lldx%lld, "
             "input %s)", p.mode == CR_UPSAMPLE_NEAREST ? "nearest" : "bilinear",
             p.align_corners ? ", align_corners" : "", p.scale_h, p.scale_w, (long long)ho,
             (long long)wo, shape_str(sh, d));
    expect_dev(what, d_dx, &want, bwd_exact_tol(), cr_cuda_emulated() ? 0 : 1e-7, seed);
    free_devs(d_g, d_dx);
    free_hosts(&g, &want);
}

/* Up-sampling backward: the FPN's three (nearest x2, bilinear x2 and x4 with
 * align_corners), bilinear without align_corners at non-integer scales, nearest at
 * 1.75 x 3, and random odd output sizes; dx equals chapter 4's adjoint exactly on the
 * emulator (the gather adds in its order). */
static void gpu_backward__upsample(void **state)
{
    (void)state;
    run_cases("upsample backward", 21, upsample_backward_case);
}

/* The backwards refuse NULL pointers and mismatched shapes with CR_EINVAL naming the
 * argument. */
static void gpu_backward__bad_arguments(void **state)
{
    (void)state;
    float *x = dev_poisoned(64, "x");
    int64_t *am;
    assert_cr_ok(cr_cuda_malloc((void **)&am, 64 * sizeof *am, "argmax"));
    const cr_cuda_nchw d = {1, 4, 4, 4}, empty = {1, 4, 0, 4};
    assert_cr_fails(cr_cuda_relu_backward(64, x, NULL, x), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dy is NULL"));
    assert_cr_fails(cr_cuda_relu_backward(-1, x, x, x), CR_EINVAL);
    assert_cr_fails(cr_cuda_add_relu_backward(64, NULL, x, x, x), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "y is NULL"));
    assert_cr_fails(cr_cuda_batchnorm_backward(true, d, x, NULL, NULL, x, NULL, x, x, NULL, NULL),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "save_mean is NULL"));
    assert_cr_fails(cr_cuda_batchnorm_backward(true, empty, x, NULL, x, x, NULL, x, x, NULL, NULL),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "x is 1x4x0x4"));
    assert_cr_fails(cr_cuda_groupnorm_backward(3, d, x, NULL, x, x, NULL, x, x, NULL, NULL),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "divisible"));
    assert_cr_fails(cr_cuda_groupnorm_backward(2, d, x, NULL, x, NULL, NULL, x, x, NULL, NULL),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "save_invstd is NULL"));
    const cr_pool_params pool = cr_pool_params_make(3, 2, 1);   /* 4x4 -> 2x2 */
    const cr_cuda_nchw pooled = {1, 4, 2, 2}, wrong = {1, 4, 2, 3};
    assert_cr_fails(cr_cuda_maxpool2d_backward(&pool, d, wrong, am, x, x), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dy is 1x4x2x3, expected"));
    assert_cr_fails(cr_cuda_maxpool2d_backward(&pool, d, pooled, NULL, x, x), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "argmax is NULL"));
    assert_cr_fails(cr_cuda_maxpool2d_backward(NULL, d, pooled, am, x, x), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "p is NULL"));
    const cr_upsample_params up = {.mode = CR_UPSAMPLE_BILINEAR, .scale_h = 2, .scale_w = 2};
    const cr_cuda_nchw up_wrong = {1, 4, 8, 7};
    assert_cr_fails(cr_cuda_upsample_backward(&up, d, up_wrong, x, x), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dy is"));
    assert_cr_fails(cr_cuda_upsample_backward(&up, d, (cr_cuda_nchw){1, 4, 8, 8}, x, NULL),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dx is NULL"));
    cr_cuda_free(am);
    cr_cuda_free(x);
}

int main(void)
{
    if (!cr_cuda_available()) {
        printf("ch05 layers: SKIP: no CUDA device found (%s)\n", cr_cuda_unavailable_reason());
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gpu_layers__relu_add),
        cmocka_unit_test(gpu_layers__batchnorm),
        cmocka_unit_test(gpu_layers__groupnorm),
        cmocka_unit_test(gpu_layers__maxpool),
        cmocka_unit_test(gpu_layers__upsample),
        cmocka_unit_test(gpu_layers__cross_entropy),
        cmocka_unit_test(gpu_layers__adamw),
        cmocka_unit_test(gpu_layers__bad_arguments),
        cmocka_unit_test(gpu_backward__relu_add),
        cmocka_unit_test(gpu_backward__batchnorm),
        cmocka_unit_test(gpu_backward__groupnorm),
        cmocka_unit_test(gpu_backward__maxpool),
        cmocka_unit_test(gpu_backward__upsample),
        cmocka_unit_test(gpu_backward__bad_arguments),
        cmocka_unit_test(gpu_model__lab4_network),
        cmocka_unit_test(gpu_model__fpn_reduced),
        cmocka_unit_test(gpu_model__fpn_reduced_tensor_cores),
        cmocka_unit_test(gpu_model__profile_and_shapes),
        cmocka_unit_test(gpu_model__refusals),
    };
    return cr_run_tests("ch05_layers", tests);
}
