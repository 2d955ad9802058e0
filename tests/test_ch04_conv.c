/* test_ch04_conv.c — suite ch04: the gradients of convolution.
 *
 * Four proofs: (1) the reference backward reproduces PyTorch's autograd gradients
 * (reference/golden/convgrad_*); (2) so does the fast backward, gradient by gradient;
 * (3) the reference equals float64 central differences of L = sum(dy * conv(x, w, b)),
 * the forward written in this file from chapter 1's definition; (4) the fast backward
 * equals the reference on hundreds of random configurations per run. Plus col2im as the
 * exact adjoint of im2col, optional outputs and refused shapes (the workspace:
 * test_ch04_workspace.c). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "compare.h"
#include "conv_backward.h"
#include "conv_harness.h"
#include "cr_test.h"
#include "direct.h"
#include "gemm.h"
#include "gemm_internal.h"   /* cr_gemm_one_thread_region_calls */
#include "grad_weight_direct.h"
#include "im2col.h"
#include "rng.h"
#include "safetensors.h"

#define GRAD_TOL 1e-5     /* relative L2, fp32 against a float64 answer */
#define MIN_GOLDEN 30

/* Which gradients a check asks for. */
enum { G_DX = 1, G_DW = 2, G_DB = 4, G_ALL = 7 };

/* The OpenMP thread count parallel regions get now (1 without OpenMP). */
static int get_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- golden gradient cases --------------------------------------------------------------- */

/* One convgrad_* file: the layer and x, w, b, y as for a conv_* case, plus dy and the
 * gradients dx (like x), dw (like w), db (like b; empty without bias). */
typedef struct {
    cr_golden_conv c;
    cr_tensor dy, dx, dw, db;
} golden_grad;

/* Loads one golden gradient case; fails the test with a message on error. */
static void golden_grad_load(const char *path, golden_grad *g)
{
    memset(g, 0, sizeof *g);
    cr_golden_conv_load(path, &g->c);
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    assert_cr_ok(cr_st_get(f, "dy", &g->dy));
    assert_cr_ok(cr_st_get(f, "dx", &g->dx));
    assert_cr_ok(cr_st_get(f, "dw", &g->dw));
    if (g->c.p.bias) assert_cr_ok(cr_st_get(f, "db", &g->db));
    cr_st_free(f);
}

static void golden_grad_free(golden_grad *g)
{
    cr_golden_conv_free(&g->c);
    cr_tensor_free(&g->dy);
    cr_tensor_free(&g->dx);
    cr_tensor_free(&g->dw);
    cr_tensor_free(&g->db);
}

/* Compares gradient out against ref; on failure prints what, the error and the first
 * faults (with multi-indices) to stderr and returns 0. */
static int grad_matches(const char *ctx, const char *what, const cr_tensor *out, const cr_tensor *ref,
                        double tol)
{
    cr_cmp cmp = cr_compare(out->data, ref->data, ref->numel, 1e-4, 1e-5);
    if (cr_cmp_ok(&cmp, tol)) return 1;
    long long shape[CR_MAX_DIMS];
    for (int i = 0; i < ref->ndim; i++) shape[i] = ref->shape[i];
    fprintf(stderr, "  %s%s%s: relative L2 error %.3g > %.1g\n", ctx, *ctx ? ": " : "", what,
            cmp.rel_l2, tol);
    cr_print_faults(stderr, out->data, ref->data, ref->numel, shape, ref->ndim, 1e-4, 1e-5, 5);
    return 0;
}

/* Like grad_matches, but the error is measured against the magnitude of what was summed:
 * ||out - ref|| <= tol * ||mag||, mag being the gradient of the same layer with |x|, |w|,
 * |dy| (every term counted positive). A gradient element that is a sum of many terms that
 * nearly cancel has a large relative error in any fp32 summation order; this bound does not
 * fail on it, and still catches any wrong term (which is as large as the terms). */
static int grad_matches_mag(const char *what, const cr_tensor *out, const cr_tensor *ref,
                            const cr_tensor *mag, double tol)
{
    double num = 0, den = 0;
    int finite = 1;
    for (size_t i = 0; i < ref->numel; i++) {
        const double d = (double)out->data[i] - ref->data[i];
        finite &= isfinite(out->data[i]) != 0;
        num += d * d;
        den += (double)mag->data[i] * mag->data[i];
    }
    const double e = den > 0 ? sqrt(num / den) : sqrt(num);
    if (finite && e <= tol) return 1;
    long long shape[CR_MAX_DIMS];
    for (int i = 0; i < ref->ndim; i++) shape[i] = ref->shape[i];
    fprintf(stderr, "  %s: ||out - ref|| / ||magnitude|| = %.3g > %.1g%s\n", what, e, tol,
            finite ? "" : " (NaN or Inf in the output)");
    cr_print_faults(stderr, out->data, ref->data, ref->numel, shape, ref->ndim, 1e-4, 1e-5, 5);
    return 0;
}

/* A copy of t with every element replaced by its absolute value. */
static void tensor_abs(const cr_tensor *t, cr_tensor *out)
{
    memset(out, 0, sizeof *out);
    if (!t->data) return;
    assert_cr_ok(cr_tensor_alloc(out, t->ndim, t->shape));
    for (size_t i = 0; i < t->numel; i++) out->data[i] = fabsf(t->data[i]);
}

/* The magnitude gradients of mask: the reference backward of |x|, |w|, |dy|. */
static void magnitude_grads(int mask, const cr_conv_params *p, const cr_tensor *x,
                            const cr_tensor *w, const cr_tensor *dy, cr_tensor *mx,
                            cr_tensor *mw, cr_tensor *mb);

/* Allocates (poisoned) the outputs mask asks for, shaped like x, w and b; the others NULL. */
static void alloc_grads(int mask, const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                        cr_tensor *dx, cr_tensor *dw, cr_tensor *db, cr_tensor **pdx,
                        cr_tensor **pdw, cr_tensor **pdb)
{
    memset(dx, 0, sizeof *dx);
    memset(dw, 0, sizeof *dw);
    memset(db, 0, sizeof *db);
    *pdx = *pdw = *pdb = NULL;
    if (mask & G_DX) {
        assert_cr_ok(cr_tensor_alloc(dx, 4, x->shape));
        cr_tensor_poison(dx);
        *pdx = dx;
    }
    if (mask & G_DW) {
        assert_cr_ok(cr_tensor_alloc(dw, 4, w->shape));
        cr_tensor_poison(dw);
        *pdw = dw;
    }
    if ((mask & G_DB) && p->bias) {
        const int64_t bs[1] = {p->out_channels};
        assert_cr_ok(cr_tensor_alloc(db, 1, bs));
        cr_tensor_poison(db);
        *pdb = db;
    }
}

static void free_grads(cr_tensor *dx, cr_tensor *dw, cr_tensor *db)
{
    cr_tensor_free(dx);
    cr_tensor_free(dw);
    cr_tensor_free(db);
}

static void magnitude_grads(int mask, const cr_conv_params *p, const cr_tensor *x,
                            const cr_tensor *w, const cr_tensor *dy, cr_tensor *mx,
                            cr_tensor *mw, cr_tensor *mb)
{
    cr_tensor ax, aw, ady, *pmx, *pmw, *pmb;
    tensor_abs(x, &ax);
    tensor_abs(w, &aw);
    tensor_abs(dy, &ady);
    alloc_grads(mask, p, x, w, mx, mw, mb, &pmx, &pmw, &pmb);
    assert_cr_ok(cr_conv2d_backward_ref(p, &ax, &aw, &ady, pmx, pmw, pmb));
    cr_tensor_free(&ax);
    cr_tensor_free(&aw);
    cr_tensor_free(&ady);
}

/* Runs impl on one golden case asking for the gradients in mask; returns 0 (after printing
 * the case and its faults) if one differs from PyTorch's. */
static int golden_case_ok(cr_conv2d_backward_fn impl, const char *impl_name, const golden_grad *g,
                          int mask, double tol)
{
    const golden_grad *gg = g;
    cr_tensor dx, dw, db, *pdx, *pdw, *pdb;
    alloc_grads(mask, &gg->c.p, &gg->c.x, &gg->c.w, &dx, &dw, &db, &pdx, &pdw, &pdb);
    char desc[512];
    cr_conv_params_str(&gg->c.p, desc, sizeof desc);
    cr_status st = impl(&gg->c.p, &gg->c.x, &gg->c.w, &gg->dy, pdx, pdw, pdb);
    int ok = st == CR_OK;
    if (!ok)
        fprintf(stderr, "%s FAILED golden case %s (%s)\n  %s\n  returned %s: %s\n", impl_name,
                gg->c.name, gg->c.description, desc, cr_status_name(st), cr_last_error());
    else {
        int good = 1;
        char ctx[512];
        snprintf(ctx, sizeof ctx, "%s, case %s (%s)", impl_name, gg->c.name, gg->c.description);
        if (pdx) good &= grad_matches(ctx, "dx", &dx, &gg->dx, tol);
        if (pdw) good &= grad_matches(ctx, "dw", &dw, &gg->dw, tol);
        if (pdb) good &= grad_matches(ctx, "db", &db, &gg->db, tol);
        if (!good) fprintf(stderr, "    the layer: %s\n", desc);
        ok = good;
    }
    free_grads(&dx, &dw, &db);
    return ok;
}

/* impl reproduces the gradients in mask on every golden case (at least min_cases). */
static void check_backward_golden(cr_conv2d_backward_fn impl, const char *impl_name, int mask,
                                  double tol, int min_cases)
{
    char **paths;
    const int n = cr_golden_list("convgrad_", &paths);
    if (n < min_cases)
        fail_msg("found %d golden gradient cases (convgrad_*), expected at least %d: run "
                 "reference/make_golden_backward.py", n, min_cases);
    int failures = 0;
    char first[128] = "";
    for (int i = 0; i < n; i++) {
        golden_grad g;
        golden_grad_load(paths[i], &g);
        if (!golden_case_ok(impl, impl_name, &g, mask, tol)) {
            if (!failures) snprintf(first, sizeof first, "%s", g.c.name);
            failures++;
        }
        golden_grad_free(&g);
    }
    cr_free_list(paths, n);
    if (failures)
        fail_msg("%s: %d of %d golden gradient cases differ from PyTorch (first: %s; bound: "
                 "relative L2 <= %.1g)", impl_name, failures, n, first, tol);
}

/* ---- (1), (2): golden gradients ---------------------------------------------------------- */

/* The reference backward reproduces dx, dw and db of PyTorch's autograd on every case. */
static void backward_ref__golden_cases(void **state)
{
    (void)state;
    check_backward_golden(cr_conv2d_backward_ref, "reference backward", G_ALL, GRAD_TOL, MIN_GOLDEN);
}

/* The fast dx (W^T dY, then col2im) reproduces PyTorch's on every case. */
static void col2im_scatter__fast_dx_golden(void **state)
{
    (void)state;
    check_backward_golden(cr_conv2d_backward, "fast backward", G_DX, GRAD_TOL, MIN_GOLDEN);
}

/* The fast dW (dY cols^T summed over the batch) reproduces PyTorch's on every case. */
static void grad_weight__fast_dw_golden(void **state)
{
    (void)state;
    check_backward_golden(cr_conv2d_backward, "fast backward", G_DW, GRAD_TOL, MIN_GOLDEN);
}

/* The fast db reproduces PyTorch's on every case with a bias. */
static void grad_bias__fast_db_golden(void **state)
{
    (void)state;
    check_backward_golden(cr_conv2d_backward, "fast backward", G_DB, GRAD_TOL, MIN_GOLDEN);
}

/* Each padding mode's gradient, with pads larger than 1, equals PyTorch's, in both the
 * reference and the fast path (and the golden set has such a case for every mode). */
static void col2im_scatter__padding_modes_pad_gt_1(void **state)
{
    (void)state;
    char **paths;
    const int n = cr_golden_list("convgrad_", &paths);
    int seen[4] = {0, 0, 0, 0}, failures = 0;
    for (int i = 0; i < n; i++) {
        golden_grad g;
        golden_grad_load(paths[i], &g);
        const cr_conv_params *p = &g.c.p;
        int64_t pmax = p->pad_top;
        const int64_t pads[3] = {p->pad_bottom, p->pad_left, p->pad_right};
        for (int j = 0; j < 3; j++) pmax = pads[j] > pmax ? pads[j] : pmax;
        if (pmax > 1) {
            seen[p->pad_mode]++;
            failures += !golden_case_ok(cr_conv2d_backward_ref, "reference backward", &g, G_DX, GRAD_TOL);
            failures += !golden_case_ok(cr_conv2d_backward, "fast backward", &g, G_DX, GRAD_TOL);
        }
        golden_grad_free(&g);
    }
    cr_free_list(paths, n);
    for (int m = 0; m < 4; m++)
        if (seen[m] == 0)
            fail_msg("no golden gradient case with %s padding and a pad > 1",
                     cr_pad_mode_name((cr_pad_mode)m));
    if (failures)
        fail_msg("%d dx gradients through padding > 1 differ from PyTorch (cases: zeros %d, "
                 "reflect %d, replicate %d, circular %d)", failures, seen[0], seen[1], seen[2], seen[3]);
}

/* ---- (3): finite differences in float64 -------------------------------------------------- */

/* L = sum(dy * conv2d(x, w, b)) in double, straight from chapter 1's definition.
 * x: N x C x H x W, w: K x C/G x R x S, b: K or NULL, dy: N x K x Ho x Wo. */
static double loss_f64(const cr_conv_shape *s, const double *x, const double *w, const double *b,
                       const double *dy)
{
    const cr_conv_params *p = &s->p;
    const int64_t C = p->in_channels, K = p->out_channels, H = s->h_in, W = s->w_in;
    const int64_t Ho = s->h_out, Wo = s->w_out, R = p->kernel_h, S = p->kernel_w;
    double L = 0;
    for (int64_t n = 0; n < s->batch; n++)
        for (int64_t k = 0; k < K; k++) {
            const int64_t c0 = k / s->cout_g * s->cin_g;
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double y = b ? b[k] : 0.0;
                    for (int64_t c = 0; c < s->cin_g; c++)
                        for (int64_t r = 0; r < R; r++) {
                            const int64_t ih = cr_pad_index(
                                oh * p->stride_h - p->pad_top + r * p->dilation_h, H, p->pad_mode);
                            if (ih < 0) continue;
                            for (int64_t q = 0; q < S; q++) {
                                const int64_t iw = cr_pad_index(
                                    ow * p->stride_w - p->pad_left + q * p->dilation_w, W, p->pad_mode);
                                if (iw < 0) continue;
                                y += x[((n * C + c0 + c) * H + ih) * W + iw] *
                                     w[((k * s->cin_g + c) * R + r) * S + q];
                            }
                        }
                    L += dy[((n * K + k) * Ho + oh) * Wo + ow] * y;
                }
        }
    return L;
}

/* Central differences of L for every element of v (len elements, the variable the
 * derivative is taken in), written to out; h is the step. */
static void central_diff(const cr_conv_shape *s, double *x, double *w, double *b, const double *dy,
                         double *v, size_t len, double h, double *out)
{
    for (size_t i = 0; i < len; i++) {
        const double v0 = v[i];
        v[i] = v0 + h;
        const double lp = loss_f64(s, x, w, b, dy);
        v[i] = v0 - h;
        const double lm = loss_f64(s, x, w, b, dy);
        v[i] = v0;
        out[i] = (lp - lm) / (2 * h);
    }
}

/* ||got - want|| / ||mag|| for a float gradient against a double one, mag being the
 * magnitude of what was summed (see grad_matches_mag). */
static double err_f64(const float *got, const double *want, const double *mag, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = got[i] - want[i];
        num += d * d;
        den += mag[i] * mag[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A double copy of t (absolute values with take_abs). */
static double *to_f64_abs(const cr_tensor *t, int take_abs)
{
    double *d = malloc(t->numel * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < t->numel; i++) d[i] = take_abs ? fabs(t->data[i]) : t->data[i];
    return d;
}

static double *to_f64(const cr_tensor *t) { return to_f64_abs(t, 0); }

/* The reference's dx, dw, db equal float64 central differences of L = sum(dy * conv(x))
 * on small random layers of every kind. L is linear in each of x, w, b, so the central
 * difference is exact up to rounding: what remains is the reference's fp32 error. */
static void backward_ref__finite_differences(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(60);
    for (int t = 0; t < count; t++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_conv_shape s;
        do {   /* small enough for 4 forward passes per element */
            cr_random_conv_config(&r, &p, &n, &h, &w);
            assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
        } while (s.x_numel > 300 || s.w_numel > 300 ||
                 cr_conv_flops(&s) * (double)(s.x_numel + s.w_numel) > 4e8);
        cr_tensor x, wt, b, y, dx, dw, db, *pdx, *pdw, *pdb;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y);   /* y's storage becomes dy */
        cr_tensor_fill_uniform(&y, &r, -1.0f, 1.0f);
        alloc_grads(G_ALL, &p, &x, &wt, &dx, &dw, &db, &pdx, &pdw, &pdb);
        assert_cr_ok(cr_conv2d_backward_ref(&p, &x, &wt, &y, pdx, pdw, pdb));

        double *x64 = to_f64(&x), *w64 = to_f64(&wt), *dy64 = to_f64(&y);
        double *b64 = p.bias ? to_f64(&b) : NULL;
        /* the same with every term positive: the scale of the rounding error */
        double *xa = to_f64_abs(&x, 1), *wa = to_f64_abs(&wt, 1), *dya = to_f64_abs(&y, 1);
        double *ba = p.bias ? to_f64_abs(&b, 1) : NULL;
        const size_t most = s.x_numel + s.w_numel + (size_t)p.out_channels;
        double *fd = malloc(most * sizeof *fd), *mag = malloc(most * sizeof *mag);
        assert_non_null(fd);
        assert_non_null(mag);
        const double step = 0.25;   /* any step: L is linear in each variable */
        struct { const char *what; double *v, *va; size_t len; const cr_tensor *got; } vars[3] = {
            {"dx", x64, xa, s.x_numel, pdx}, {"dw", w64, wa, s.w_numel, pdw},
            {"db", b64, ba, p.bias ? (size_t)p.out_channels : 0, pdb}};
        for (int v = 0; v < 3; v++) {
            if (!vars[v].len) continue;
            central_diff(&s, x64, w64, b64, dy64, vars[v].v, vars[v].len, step, fd);
            central_diff(&s, xa, wa, ba, dya, vars[v].va, vars[v].len, step, mag);
            const double e = err_f64(vars[v].got->data, fd, mag, vars[v].len);
            if (!(e <= GRAD_TOL)) {
                char desc[512];
                cr_conv_params_str(&p, desc, sizeof desc);
                size_t worst = 0;
                for (size_t i = 0; i < vars[v].len; i++)
                    if (!(fabs(vars[v].got->data[i] - fd[i]) <= fabs(vars[v].got->data[worst] - fd[worst])))
                        worst = i;
                fail_msg("reference %s differs from float64 central differences (seed %" PRIu64
                         ", case %d, input %lldx%lldx%lldx%lld, %s): ||error|| / ||magnitude|| %.3g > %.1g; "
                         "element %zu is %.8g, finite differences say %.8g (error measured against the "
                         "gradient with every term positive)",
                         vars[v].what, seed, t, (long long)n, (long long)p.in_channels,
                         (long long)h, (long long)w, desc, e, GRAD_TOL, worst,
                         (double)vars[v].got->data[worst], fd[worst]);
            }
        }
        free(x64); free(w64); free(dy64); free(b64); free(fd);
        free(xa); free(wa); free(dya); free(ba); free(mag);
        free_grads(&dx, &dw, &db);
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&y);
    }
    printf("reference backward: %d random layers equal float64 finite differences (seed %" PRIu64 ")\n",
           count, seed);
}

/* ---- col2im is the adjoint of im2col ----------------------------------------------------- */

/* For random x and col: <im2col(x), col> = <x, col2im(col)> (in double), on random layers
 * of one group; and col2im overwrites every element of its output. */
static void col2im_scatter__adjoint_of_im2col(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(300);
    for (int t = 0; t < count; t++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_random_conv_config(&r, &p, &n, &h, &w);
        p.in_channels /= p.groups;   /* one group's worth of channels, as cr_col2im sees them */
        p.out_channels = 1;
        p.groups = 1;
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, 1, h, w));
        const int64_t rows = cr_im2col_rows(&s), cols = cr_im2col_cols(&s);
        const size_t xn = (size_t)(s.cin_g * h * w), cn = (size_t)(rows * cols);
        float *x = malloc(xn * sizeof *x), *dx = malloc(xn * sizeof *dx);
        float *col = malloc(cn * sizeof *col), *xcol = malloc(cn * sizeof *xcol);
        assert_non_null(x); assert_non_null(dx); assert_non_null(col); assert_non_null(xcol);
        for (size_t i = 0; i < xn; i++) { x[i] = cr_rng_uniform_f(&r, -1, 1); dx[i] = NAN; }
        for (size_t i = 0; i < cn; i++) col[i] = cr_rng_uniform_f(&r, -1, 1);
        cr_im2col(&s, x, xcol);
        cr_col2im(&s, col, dx);
        double lhs = 0, rhs = 0, mag = 0;
        for (size_t i = 0; i < cn; i++) {
            lhs += (double)xcol[i] * col[i];
            mag += fabs((double)xcol[i] * col[i]);
        }
        for (size_t i = 0; i < xn; i++) rhs += (double)x[i] * dx[i];
        if (!(fabs(lhs - rhs) <= 1e-5 * mag + 1e-6)) {
            char desc[512];
            cr_conv_params_str(&p, desc, sizeof desc);
            size_t nan_at = xn;
            for (size_t i = 0; i < xn && nan_at == xn; i++)
                if (isnan(dx[i])) nan_at = i;
            fail_msg("col2im is not the adjoint of im2col (seed %" PRIu64 ", case %d, one group of "
                     "%lld channels, %lldx%lld input, %s): <im2col(x), col> = %.9g but "
                     "<x, col2im(col)> = %.9g%s", seed, t, (long long)p.in_channels, (long long)h,
                     (long long)w, desc, lhs, rhs,
                     nan_at < xn ? " (col2im left elements of dx unwritten)" : "");
        }
        free(x); free(dx); free(col); free(xcol);
    }
    printf("col2im: adjoint of im2col on %d random layers (seed %" PRIu64 ")\n", count, seed);
}

/* ---- (4): fast equals reference on random configurations --------------------------------- */

/* Which random configurations check_backward_random draws. */
enum {
    CFG_ANY,       /* cr_random_conv_config: every option, a few channels */
    CFG_DX_CONV,   /* stride 1, zero padding <= dilation*(k-1): dX as a forward conv */
    CFG_WIDE,      /* up to 72 channels per group: dW's panels span taps and runs */
    CFG_GROUPED,   /* 2-8 groups of up to 33 output channels, rows of up to 40 outputs:
                      dW by dot products, across its channel, tap and column blocks */
    CFG_GROUPED_STRIDED,   /* CFG_GROUPED with stride 2-3 down and 1-3 across and up to 33
                              input channels a group: dX scattered, across its blocks */
    CFG_IN_PLACE,  /* 32 or 64 input channels a group, 8 to 64 output channels, 1-3 images
                      of up to 24 x 24 outputs: dW reads x in place (on AVX-512), its depth
                      blocks across output rows and ending at images */
};

/* A random configuration of kind cfg (see above); n, h, w as cr_random_conv_config's. */
static void random_config(cr_rng *r, int cfg, cr_conv_params *p, int64_t *n, int64_t *h,
                          int64_t *w)
{
    for (;;) {
        cr_random_conv_config(r, p, n, h, w);
        if (cfg == CFG_DX_CONV) {
            p->stride_h = p->stride_w = 1;
            p->pad_mode = CR_PAD_ZEROS;
            const int64_t eh = p->dilation_h * (p->kernel_h - 1);
            const int64_t ew = p->dilation_w * (p->kernel_w - 1);
            p->pad_top = cr_rng_int(r, 0, (int)eh);
            p->pad_bottom = cr_rng_int(r, 0, (int)eh);
            p->pad_left = cr_rng_int(r, 0, (int)ew);
            p->pad_right = cr_rng_int(r, 0, (int)ew);
        } else if (cfg == CFG_WIDE) {
            static const int64_t cins[] = {3, 17, 40, 64, 72}, couts[] = {5, 16, 33, 64};
            const int64_t groups = cr_rng_int(r, 1, 2);
            p->groups = groups;
            p->in_channels = groups * cins[cr_rng_int(r, 0, 4)];
            p->out_channels = groups * couts[cr_rng_int(r, 0, 3)];
            *h = cr_rng_int(r, 4, 12);
            *w = cr_rng_int(r, 4, 12);
        } else if (cfg == CFG_GROUPED) {
            static const int64_t couts[] = {1, 3, 4, 5, 8, 16, 31, 32, 33};
            const int64_t groups = cr_rng_int(r, 2, 8);
            p->groups = groups;
            p->in_channels = groups * cr_rng_int(r, 1, 9);
            p->out_channels = groups * couts[cr_rng_int(r, 0, 8)];
            *h = cr_rng_int(r, 3, 24);
            *w = cr_rng_int(r, 3, 40);
        } else if (cfg == CFG_IN_PLACE) {
            static const int64_t cins[] = {32, 64}, couts[] = {8, 16, 24, 64};
            const int64_t groups = cr_rng_int(r, 1, 2);
            p->groups = groups;
            p->in_channels = groups * cins[cr_rng_int(r, 0, 1)];
            p->out_channels = groups * couts[cr_rng_int(r, 0, 3)];
            *n = cr_rng_int(r, 1, 3);
            *h = cr_rng_int(r, 4, 24);
            *w = cr_rng_int(r, 4, 24);
        } else if (cfg == CFG_GROUPED_STRIDED) {
            static const int64_t chans[] = {1, 3, 4, 5, 8, 16, 31, 32, 33};
            const int64_t groups = cr_rng_int(r, 2, 8);
            p->groups = groups;
            p->in_channels = groups * chans[cr_rng_int(r, 0, 8)];
            p->out_channels = groups * chans[cr_rng_int(r, 0, 8)];
            p->stride_h = cr_rng_int(r, 2, 3);
            p->stride_w = cr_rng_int(r, 1, 3);
            *h = cr_rng_int(r, 3, 30);
            *w = cr_rng_int(r, 3, 60);
        }
        cr_conv_shape s;
        if (cr_conv_shape_init(&s, p, *n, *h, *w) == CR_OK) return;
    }
}

/* fn equals the reference on count random configurations of kind cfg, for the
 * gradients in mask (the others are not asked for). With vary_threads, each configuration
 * runs on 1, 2 or 3 threads, so both ways of sharing the work are exercised. */
static void check_backward_random_fn(cr_conv2d_backward_fn fn, int cfg, int mask, int count,
                                     int vary_threads, const char *what)
{
    const uint64_t seed = cr_seed_from_env();
    const int threads0 = get_threads();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int i = 0; i < count; i++) {
        cr_conv_params p;
        int64_t n, h, w;
        random_config(&r, cfg, &p, &n, &h, &w);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
        cr_tensor x, wt, b, dy, rx, rw, rb, fx, fw, fb, *prx, *prw, *prb, *pfx, *pfw, *pfb;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
        cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);        /* a fresh dy, never zeros */
        alloc_grads(mask, &p, &x, &wt, &rx, &rw, &rb, &prx, &prw, &prb);
        alloc_grads(mask, &p, &x, &wt, &fx, &fw, &fb, &pfx, &pfw, &pfb);
        const int threads = vary_threads ? 1 + i % 3 : threads0;
        assert_cr_ok(cr_conv2d_backward_ref(&p, &x, &wt, &dy, prx, prw, prb));
        cr_test_set_threads(threads);
        cr_status st = fn(&p, &x, &wt, &dy, pfx, pfw, pfb);
        cr_test_set_threads(threads0);
        int ok = st == CR_OK;
        char desc[512];
        cr_conv_params_str(&p, desc, sizeof desc);
        if (!ok)
            fprintf(stderr, "fast backward returned %s: %s\n", cr_status_name(st), cr_last_error());
        cr_tensor mx, mw, mb;
        magnitude_grads(mask, &p, &x, &wt, &dy, &mx, &mw, &mb);
        if (ok && pfx) ok &= grad_matches_mag("dx", &fx, &rx, &mx, GRAD_TOL);
        if (ok && pfw) ok &= grad_matches_mag("dw", &fw, &rw, &mw, GRAD_TOL);
        if (ok && pfb) ok &= grad_matches_mag("db", &fb, &rb, &mb, GRAD_TOL);
        free_grads(&mx, &mw, &mb);
        if (!ok)
            fail_msg("fast backward (%s) differs from the reference on random configuration %d of %d "
                     "(%d threads; replay with CR_SEED=%" PRIu64 "): input %lld x %lld x %lld x %lld, %s",
                     what, i, count, threads, seed, (long long)n, (long long)p.in_channels,
                     (long long)h, (long long)w, desc);
        free_grads(&rx, &rw, &rb);
        free_grads(&fx, &fw, &fb);
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
    }
    printf("fast backward (%s): %d random configurations equal the reference (seed %" PRIu64 ")\n",
           what, count, seed);
}

/* check_backward_random_fn for cr_conv2d_backward on any configuration. */
static void check_backward_random(int mask, int count, int vary_threads, const char *what)
{
    check_backward_random_fn(cr_conv2d_backward, CFG_ANY, mask, count, vary_threads, what);
}

/* dx alone: fast equals reference on 500 random configurations (fresh seed). */
static void col2im_scatter__dx_equals_reference_random(void **state)
{
    (void)state;
    check_backward_random(G_DX, cr_test_count(500), 0, "dx only");
}

/* dW alone: fast equals reference on 500 random configurations. */
static void grad_weight__dw_equals_reference_random(void **state)
{
    (void)state;
    check_backward_random(G_DW, cr_test_count(500), 0, "dw only");
}

/* db alone: fast equals reference on 500 random configurations. */
static void grad_bias__db_equals_reference_random(void **state)
{
    (void)state;
    check_backward_random(G_DB, cr_test_count(500), 0, "db only");
}

/* All three at once (dW and dX share a patch-matrix buffer), on 1, 2 and 3 threads. */
static void backward_api__all_gradients_random(void **state)
{
    (void)state;
    check_backward_random(G_ALL, cr_test_count(500), 1, "dx, dw, db");
}

/* ---- (5): the API -------------------------------------------------------------------------- */

/* A depth long enough (2 images of 48 x 47 outputs) that 2 and 3 threads split dW's
 * GEMM by ranges of pixels, each into its own partial dW: equal to the reference on 1, 2
 * and 3 threads, and the same bits twice on the same thread count. */
static void backward_api__depth_split_threads(void **state)
{
    (void)state;
    const int threads0 = get_threads();
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    cr_conv_params p = cr_conv_params_default(6, 5, 3);
    cr_conv_set_padding(&p, 1, 1);
    p.pad_mode = (cr_pad_mode)cr_rng_int(&r, 0, 3);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 2, 48, 47));
    cr_tensor x, wt, b, dy, rx, rw, rb, *prx, *prw, *prb, mx, mw, mb;
    cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
    cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
    alloc_grads(G_ALL, &p, &x, &wt, &rx, &rw, &rb, &prx, &prw, &prb);
    assert_cr_ok(cr_conv2d_backward_ref(&p, &x, &wt, &dy, prx, prw, prb));
    magnitude_grads(G_ALL, &p, &x, &wt, &dy, &mx, &mw, &mb);
    for (int threads = 1; threads <= 3; threads++) {
        cr_tensor g[2][3], *pg[2][3];
        for (int run = 0; run < 2; run++)
            alloc_grads(G_ALL, &p, &x, &wt, &g[run][0], &g[run][1], &g[run][2], &pg[run][0],
                        &pg[run][1], &pg[run][2]);
        cr_test_set_threads(threads);
        for (int run = 0; run < 2; run++)
            assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, pg[run][0], pg[run][1], pg[run][2]));
        cr_test_set_threads(threads0);
        if (!(grad_matches_mag("dx", &g[0][0], &rx, &mx, GRAD_TOL) &&
              grad_matches_mag("dw", &g[0][1], &rw, &mw, GRAD_TOL) &&
              grad_matches_mag("db", &g[0][2], &rb, &mb, GRAD_TOL)))
            fail_msg("depth-split backward differs from the reference on %d threads "
                     "(CR_SEED=%" PRIu64 ")", threads, seed);
        if (memcmp(g[0][1].data, g[1][1].data, g[0][1].numel * sizeof(float)) != 0)
            fail_msg("two runs on %d threads gave different dw", threads);
        for (int run = 0; run < 2; run++) free_grads(&g[run][0], &g[run][1], &g[run][2]);
    }
    free_grads(&mx, &mw, &mb);
    free_grads(&rx, &rw, &rb);
    cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
}

/* With one (image, group) pair the backward must not run its GEMMs inside a parallel
 * region of one thread: each would start a nested team (chapter 4, "Zen 5 again": 1.7
 * against 0.18 ms a GEMM). Every route at 2 threads, batch 1, one group: the col2im
 * route (stride 2), dX as a forward conv (stride 1), a strided and a plain 1x1 kernel;
 * then three images, which two threads do not share (the pairs run one by one). */
static void backward_api__no_nested_teams(void **state)
{
    (void)state;
    const int threads0 = get_threads();
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    struct { int64_t cin, cout, k, stride, pad, n, hw; } cases[] = {
        {3, 16, 7, 2, 3, 1, 40},   /* the stem: dX by col2im */
        {8, 16, 3, 1, 1, 1, 20},   /* dX as a forward convolution, dW implicit */
        {8, 16, 1, 2, 0, 1, 20},   /* strided 1x1 */
        {8, 16, 1, 1, 0, 1, 20},   /* pointwise: NT GEMMs */
        {3, 16, 7, 2, 3, 3, 24},   /* three images on two threads: pairs one by one */
    };
    cr_test_set_threads(2);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_conv_params p = cr_conv_params_default(cases[i].cin, cases[i].cout, cases[i].k);
        p.stride_h = p.stride_w = cases[i].stride;
        cr_conv_set_padding(&p, cases[i].pad, cases[i].pad);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, cases[i].n, cases[i].hw, cases[i].hw));
        cr_tensor x, wt, b, dy, gx, gw, gb, *pgx, *pgw, *pgb;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
        alloc_grads(G_ALL, &p, &x, &wt, &gx, &gw, &gb, &pgx, &pgw, &pgb);
        const long before = cr_gemm_one_thread_region_calls();
        const cr_status st1 = cr_conv2d_backward(&p, &x, &wt, &dy, pgx, pgw, pgb);
        const cr_status st2 = cr_conv2d_backward_gemm(&p, &x, &wt, &dy, pgx, pgw, pgb);
        const long nested = cr_gemm_one_thread_region_calls() - before;
        free_grads(&gx, &gw, &gb);
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
        if (st1 != CR_OK || st2 != CR_OK) {
            cr_test_set_threads(threads0);
            fail_msg("case %zu: the backward failed: %s", i, cr_last_error());
        }
        if (nested != 0) {
            cr_test_set_threads(threads0);
            fail_msg("case %zu (%lld -> %lld, k %lld, stride %lld, batch %lld): %ld calls for "
                     "threads from inside a parallel region of one thread (nested teams)",
                     i, (long long)cases[i].cin, (long long)cases[i].cout, (long long)cases[i].k,
                     (long long)cases[i].stride, (long long)cases[i].n, nested);
        }
    }
    cr_test_set_threads(threads0);
}

/* The chapter's first fast backward (per-pair GEMMs, col2im) equals the reference: dX on
 * 300 random configurations; it is the route cr_conv2d_backward takes for strides. */
static void col2im_scatter__gemm_backward_dx_random(void **state)
{
    (void)state;
    check_backward_random_fn(cr_conv2d_backward_gemm, CFG_ANY, G_DX, cr_test_count(300), 1,
                             "per-pair GEMMs, dx");
}

/* cr_conv2d_backward_gemm's dW (one GEMM per image and group) equals the reference. */
static void grad_weight__gemm_backward_dw_random(void **state)
{
    (void)state;
    check_backward_random_fn(cr_conv2d_backward_gemm, CFG_ANY, G_DW, cr_test_count(300), 1,
                             "per-pair GEMMs, dw");
}

/* dX through the forward convolution of dY (stride 1, zero padding up to the dilated
 * kernel's reach, asymmetric, grouped, dilated) equals the reference, with dW and db. */
static void backward_api__dx_as_forward_conv_random(void **state)
{
    (void)state;
    check_backward_random_fn(cr_conv2d_backward, CFG_DX_CONV, G_ALL, cr_test_count(300), 1,
                             "dx as a forward conv");
}

/* Up to 72 channels per group: dW's packed panels hold runs of several taps and span
 * more than one register tile; every padding mode and stride. */
static void backward_api__wide_channels_random(void **state)
{
    (void)state;
    check_backward_random_fn(cr_conv2d_backward, CFG_WIDE, G_ALL, cr_test_count(60), 1,
                             "wide channels");
}

/* Layers whose every 32-wide panel of dW's patch matrix is 32 channels of one tap, where
 * dW's GEMM reads the padded pixel-major x in place, one output row after another (with
 * the AVX-512 kernel; the packing route elsewhere): equal to the reference on 1-3 threads
 * (one thread per depth range or per group), every padding mode, stride and dilation. */
static void backward_api__dw_in_place_random(void **state)
{
    (void)state;
    check_backward_random_fn(cr_conv2d_backward, CFG_IN_PLACE, G_ALL, cr_test_count(80), 1,
                             "dW in place");
}

/* Grouped layers of few channels (ResNeXt's), where dW is computed as dot products of dY
 * with the padded input: equal to the reference with every vector kernel this CPU runs
 * (AVX2's 8 columns, AVX-512's 16), every padding mode, stride and dilation, 1-3 threads;
 * and dW the same bits on 1 and 2 threads (each thread owns whole groups). */
static void grad_weight__grouped_dot_products_random(void **state)
{
    (void)state;
    static const char *const kernels[] = {"avx2", "avx512"};
    for (int k = 0; k < 2; k++) {
        if (!cr_gemm_kernel_supported(kernels[k])) {
            printf("grouped dW: kernel %s not supported by this CPU, not tested\n", kernels[k]);
            continue;
        }
        assert_cr_ok(cr_gemm_set_kernel(kernels[k]));
        char what[64];
        snprintf(what, sizeof what, "grouped dW as dot products, %s", kernels[k]);
        check_backward_random_fn(cr_conv2d_backward, CFG_GROUPED, G_DW, cr_test_count(80), 1,
                                 what);
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
    /* the same bits on 1 and 2 threads, where the dot-product route takes the layer (a
     * pointwise kernel or a wide group goes to the GEMMs, whose split follows the threads) */
    const int threads0 = get_threads();
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    const int want = cr_test_count(20);
    int checked = 0;
    for (int i = 0; checked < want && i < 50 * want; i++) {
        cr_conv_params p;
        int64_t n, h, w;
        random_config(&r, CFG_GROUPED, &p, &n, &h, &w);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
        const int pointwise = p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 &&
                              p.stride_w == 1 && p.pad_top == 0 && p.pad_bottom == 0 &&
                              p.pad_left == 0 && p.pad_right == 0;
        cr_test_set_threads(2);
        const int direct = !pointwise && cr_grad_weight_direct_fits(&s);
        cr_test_set_threads(threads0);
        if (!direct) continue;
        checked++;
        cr_tensor x, wt, b, dy, dw1, dw2;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
        cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
        assert_cr_ok(cr_tensor_alloc4(&dw1, p.out_channels, s.cin_g, p.kernel_h, p.kernel_w));
        assert_cr_ok(cr_tensor_alloc4(&dw2, p.out_channels, s.cin_g, p.kernel_h, p.kernel_w));
        cr_test_set_threads(1);
        assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, NULL, &dw1, NULL));
        cr_test_set_threads(2);
        assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, NULL, &dw2, NULL));
        cr_test_set_threads(threads0);
        if (memcmp(dw1.data, dw2.data, dw1.numel * sizeof(float)) != 0) {
            char desc[512];
            cr_conv_params_str(&p, desc, sizeof desc);
            fail_msg("grouped dW differs between 1 and 2 threads (CR_SEED=%" PRIu64 ", case %d): %s",
                     seed, i, desc);
        }
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
        cr_tensor_free(&dw1); cr_tensor_free(&dw2);
    }
    /* the route must have been taken on some layers where the CPU has it */
    if (cr_gemm_kernel_supported("avx2") && checked == 0)
        fail_msg("grouped dW: no random layer took the dot-product route (CR_SEED=%" PRIu64 ")", seed);
    printf("grouped dW: the same bits on 1 and 2 threads, %d layers (seed %" PRIu64 ")\n", checked,
           seed);
}

/* dX of strided grouped layers (scattered into a padded copy, then folded back: every
 * padding mode, dilation, widths across the vectors and blocks) equals the reference on
 * both kernels and 1-3 threads, and gives the same bits on 1 and 2 threads. */
static void grad_input__grouped_scatter_random(void **state)
{
    (void)state;
    static const char *const kernels[] = {"avx2", "avx512"};
    for (int k = 0; k < 2; k++) {
        if (!cr_gemm_kernel_supported(kernels[k])) {
            printf("grouped dX: kernel %s not supported by this CPU, not tested\n", kernels[k]);
            continue;
        }
        assert_cr_ok(cr_gemm_set_kernel(kernels[k]));
        char what[64];
        snprintf(what, sizeof what, "strided grouped dX scattered, %s", kernels[k]);
        check_backward_random_fn(cr_conv2d_backward, CFG_GROUPED_STRIDED, G_DX, cr_test_count(80),
                                 1, what);
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
    const int threads0 = get_threads();
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    for (int i = 0; i < cr_test_count(20); i++) {
        cr_conv_params p;
        int64_t n, h, w;
        random_config(&r, CFG_GROUPED_STRIDED, &p, &n, &h, &w);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
        cr_tensor x, wt, b, dy, dx1, dx2;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
        cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
        assert_cr_ok(cr_tensor_alloc(&dx1, 4, x.shape));
        assert_cr_ok(cr_tensor_alloc(&dx2, 4, x.shape));
        cr_test_set_threads(1);
        assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, &dx1, NULL, NULL));
        cr_test_set_threads(2);
        assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, &dx2, NULL, NULL));
        cr_test_set_threads(threads0);
        if (memcmp(dx1.data, dx2.data, dx1.numel * sizeof(float)) != 0) {
            char desc[512];
            cr_conv_params_str(&p, desc, sizeof desc);
            fail_msg("strided grouped dX differs between 1 and 2 threads (CR_SEED=%" PRIu64
                     ", case %d): %s", seed, i, desc);
        }
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
        cr_tensor_free(&dx1); cr_tensor_free(&dx2);
    }
    printf("strided grouped dX: the same bits on 1 and 2 threads, %d layers (seed %" PRIu64 ")\n",
           cr_test_count(20), seed);
}

/* Any subset of dx, dw, db may be asked for: what is asked equals the full computation,
 * in both implementations; asking for nothing is fine. */
static void backward_api__nullable_outputs(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, 4);
    cr_conv_params p = cr_conv_params_default(6, 4, 3);
    p.groups = 2;
    p.stride_h = 2;
    p.pad_mode = CR_PAD_REFLECT;
    cr_conv_set_padding(&p, 2, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 2, 7, 6));
    cr_tensor x, wt, b, dy, ax, aw, ab, *pax, *paw, *pab;
    cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
    cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
    alloc_grads(G_ALL, &p, &x, &wt, &ax, &aw, &ab, &pax, &paw, &pab);
    assert_cr_ok(cr_conv2d_backward_ref(&p, &x, &wt, &dy, pax, paw, pab));
    const cr_conv2d_backward_fn impls[2] = {cr_conv2d_backward_ref, cr_conv2d_backward};
    const char *names[2] = {"reference", "fast"};
    for (int k = 0; k < 2; k++)
        for (int mask = 0; mask <= G_ALL; mask++) {
            cr_tensor dx, dw, db, *pdx, *pdw, *pdb;
            alloc_grads(mask, &p, &x, &wt, &dx, &dw, &db, &pdx, &pdw, &pdb);
            assert_cr_ok(impls[k](&p, &x, &wt, &dy, pdx, pdw, pdb));
            int ok = 1;
            if (pdx) ok &= grad_matches("", "dx", &dx, &ax, GRAD_TOL);
            if (pdw) ok &= grad_matches("", "dw", &dw, &aw, GRAD_TOL);
            if (pdb) ok &= grad_matches("", "db", &db, &ab, GRAD_TOL);
            if (!ok)
                fail_msg("%s backward asked for%s%s%s%s differs from the full computation", names[k],
                         pdx ? " dx" : "", pdw ? " dw" : "", pdb ? " db" : "", mask ? "" : " nothing");
            free_grads(&dx, &dw, &db);
        }
    free_grads(&ax, &aw, &ab);
    cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
}

/* Wrong shapes are refused with CR_EINVAL and a message naming the tensor; no output is
 * written. */
static void backward_api__bad_shapes_refused(void **state)
{
    (void)state;
    const cr_conv2d_backward_fn impls[2] = {cr_conv2d_backward_ref, cr_conv2d_backward};
    cr_conv_params p = cr_conv_params_default(4, 6, 3);   /* 8x8 input -> 6x6 output */
    cr_tensor x, w, dy, dx, dw, db, bad4, bad1;
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 4, 8, 8));
    assert_cr_ok(cr_tensor_alloc4(&w, 6, 4, 3, 3));
    assert_cr_ok(cr_tensor_alloc4(&dy, 2, 6, 6, 6));
    assert_cr_ok(cr_tensor_alloc4(&dx, 2, 4, 8, 8));
    assert_cr_ok(cr_tensor_alloc4(&dw, 6, 4, 3, 3));
    assert_cr_ok(cr_tensor_alloc4(&bad4, 2, 6, 5, 5));
    const int64_t bs[1] = {6}, bs_bad[1] = {5};
    assert_cr_ok(cr_tensor_alloc(&db, 1, bs));
    assert_cr_ok(cr_tensor_alloc(&bad1, 1, bs_bad));
    cr_tensor_fill(&x, 1); cr_tensor_fill(&w, 1); cr_tensor_fill(&dy, 1);
    for (int k = 0; k < 2; k++) {
        cr_tensor_fill(&dx, 7); cr_tensor_fill(&dw, 7); cr_tensor_fill(&db, 7);
        assert_cr_fails(impls[k](&p, &x, &w, &bad4, &dx, &dw, &db), CR_EINVAL);   /* dy */
        assert_non_null(strstr(cr_last_error(), "tensor dy"));
        assert_cr_fails(impls[k](&p, &x, &w, &dy, &bad4, &dw, &db), CR_EINVAL);   /* dx */
        assert_non_null(strstr(cr_last_error(), "tensor dx"));
        assert_cr_fails(impls[k](&p, &x, &w, &dy, &dx, &bad4, &db), CR_EINVAL);   /* dw */
        assert_non_null(strstr(cr_last_error(), "tensor dw"));
        assert_cr_fails(impls[k](&p, &x, &w, &dy, &dx, &dw, &bad1), CR_EINVAL);   /* db */
        assert_non_null(strstr(cr_last_error(), "tensor db"));
        assert_cr_fails(impls[k](&p, &x, &bad4, &dy, &dx, &dw, &db), CR_EINVAL);  /* w */
        assert_non_null(strstr(cr_last_error(), "tensor w"));
        assert_cr_fails(impls[k](&p, &bad4, &w, &dy, &dx, &dw, &db), CR_EINVAL);  /* x's channels */
        assert_non_null(strstr(cr_last_error(), "input x"));
        assert_cr_fails(impls[k](&p, &x, &w, NULL, &dx, &dw, &db), CR_EINVAL);    /* no dy */
        p.bias = false;                                                         /* db without bias */
        assert_cr_fails(impls[k](&p, &x, &w, &dy, &dx, &dw, &db), CR_EINVAL);
        assert_non_null(strstr(cr_last_error(), "bias=false"));
        p.bias = true;
        assert_true(dx.data[0] == 7.0f && dw.data[0] == 7.0f && db.data[0] == 7.0f);
    }
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&dy); cr_tensor_free(&dx);
    cr_tensor_free(&dw); cr_tensor_free(&db); cr_tensor_free(&bad4); cr_tensor_free(&bad1);
}

/* The same thread count gives the same bits, run after run; 1 and 2 threads agree
 * within rounding. A batch of 4 makes 2 threads share the images (partial dW). */
static void backward_api__deterministic(void **state)
{
    (void)state;
    const int threads0 = get_threads();
    cr_rng r;
    cr_rng_seed(&r, 7);
    cr_conv_params p = cr_conv_params_default(8, 16, 3);
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 4, 12, 11));
    cr_tensor x, wt, b, dy;
    cr_conv_tensors_random(&s, &r, &x, &wt, &b, &dy);
    cr_tensor_fill_uniform(&dy, &r, -1.0f, 1.0f);
    cr_tensor g[2][3], *pg[2][3];
    for (int run = 0; run < 2; run++)
        alloc_grads(G_ALL, &p, &x, &wt, &g[run][0], &g[run][1], &g[run][2], &pg[run][0],
                    &pg[run][1], &pg[run][2]);
    for (int threads = 1; threads <= 2; threads++) {
        cr_test_set_threads(threads);
        for (int run = 0; run < 2; run++)
            assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, pg[run][0], pg[run][1], pg[run][2]));
        for (int j = 0; j < 3; j++)
            if (memcmp(g[0][j].data, g[1][j].data, g[0][j].numel * sizeof(float)) != 0)
                fail_msg("two runs on %d threads gave different %s", threads,
                         j == 0 ? "dx" : j == 1 ? "dw" : "db");
        if (threads == 1) {   /* keep the 1-thread result in run 1's tensors, compare below */
            for (int j = 0; j < 3; j++) cr_tensor_poison(&g[0][j]);
            cr_test_set_threads(2);
            assert_cr_ok(cr_conv2d_backward(&p, &x, &wt, &dy, pg[0][0], pg[0][1], pg[0][2]));
            if (!(grad_matches("", "dx", &g[0][0], &g[1][0], GRAD_TOL) &&
                  grad_matches("", "dw", &g[0][1], &g[1][1], GRAD_TOL) &&
                  grad_matches("", "db", &g[0][2], &g[1][2], GRAD_TOL)))
                fail_msg("1 and 2 threads disagree beyond rounding");
        }
    }
    cr_test_set_threads(threads0);
    for (int run = 0; run < 2; run++) free_grads(&g[run][0], &g[run][1], &g[run][2]);
    cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&dy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backward_ref__golden_cases),
        cmocka_unit_test(backward_ref__finite_differences),
        cmocka_unit_test(col2im_scatter__adjoint_of_im2col),
        cmocka_unit_test(col2im_scatter__fast_dx_golden),
        cmocka_unit_test(col2im_scatter__padding_modes_pad_gt_1),
        cmocka_unit_test(col2im_scatter__dx_equals_reference_random),
        cmocka_unit_test(grad_weight__fast_dw_golden),
        cmocka_unit_test(grad_weight__dw_equals_reference_random),
        cmocka_unit_test(grad_bias__fast_db_golden),
        cmocka_unit_test(grad_bias__db_equals_reference_random),
        cmocka_unit_test(backward_api__all_gradients_random),
        cmocka_unit_test(col2im_scatter__gemm_backward_dx_random),
        cmocka_unit_test(grad_weight__gemm_backward_dw_random),
        cmocka_unit_test(backward_api__dx_as_forward_conv_random),
        cmocka_unit_test(backward_api__wide_channels_random),
        cmocka_unit_test(backward_api__dw_in_place_random),
        cmocka_unit_test(grad_weight__grouped_dot_products_random),
        cmocka_unit_test(grad_input__grouped_scatter_random),
        cmocka_unit_test(backward_api__depth_split_threads),
        cmocka_unit_test(backward_api__no_nested_teams),
        cmocka_unit_test(backward_api__nullable_outputs),
        cmocka_unit_test(backward_api__bad_shapes_refused),
        cmocka_unit_test(backward_api__deterministic),
    };
    return cr_run_tests("ch04", tests);
}
