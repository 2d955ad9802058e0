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
        for (int i = 0; i < m.n; i++) {
            if (m.mods[i].kind != CR_MOD_CONV) continue;
            cr_conv_shape cs;   /* the input size does not change the rule (channels per group) */
            assert_cr_ok(cr_conv_shape_init(&cs, &m.mods[i].conv, 1, 64, 64));
            convs += strcmp(cr_cuda_conv2d_path_at(&cs, prec), cr_cuda_precision_name(prec)) == 0;
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

/* The device forward refuses a model in training mode, a hook-free model with a global
 * average pool, and an input with the wrong channel count, naming the module. */
static void gpu_model__refusals(void **state)
{
    (void)state;
    cr_model m;
    assert_cr_ok(cr_model_build_fcn(&m, 5));
    assert_cr_ok(cr_model_init_params(&m, 1));
    cr_cuda_model *g = NULL;
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
        cmocka_unit_test(gpu_model__lab4_network),
        cmocka_unit_test(gpu_model__fpn_reduced),
        cmocka_unit_test(gpu_model__fpn_reduced_tensor_cores),
        cmocka_unit_test(gpu_model__refusals),
    };
    return cr_run_tests("ch05_layers", tests);
}
