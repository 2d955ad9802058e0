/* test_nonfinite.c — suite ch03: every forward path follows one rule for NaN and inf.
 *
 * The rule (PyTorch's, measured; reference/make_golden_nonfinite.py): a zero-padded tap
 * is a real zero that is multiplied like any other input, so 0 * NaN and 0 * inf are
 * NaN. A NaN weight makes its whole output channel NaN, borders included; an infinite
 * weight makes NaN exactly the outputs whose tap lands in the zero padding. Each path of
 * chapters 1-3 (and each GEMM micro-kernel this CPU runs) must put NaN and +-inf in the
 * same places as PyTorch, and agree on every finite value. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "conv_gemm.h"
#include "conv_harness.h"
#include "cr_test.h"
#include "direct.h"
#include "gemm.h"
#include "im2col.h"

typedef struct {
    const char *name;
    cr_conv2d_fn fn;
} path;

static const path paths[] = {
    {"direct (chapter 1)", cr_conv2d_direct},   {"im2col (chapter 2)", cr_conv2d_im2col},
    {"gemm (chapter 3)", cr_conv2d_gemm},       {"fused (chapter 3)", cr_conv2d_fused},
    {"grouped (chapter 3)", cr_conv2d_grouped}, {"fast (chapter 3)", cr_conv2d_fast},
};

/* Which of NaN, +inf, -inf or finite v is (0, 1, 2, 3). */
static int kind_of(float v)
{
    return isnan(v) ? 0 : isinf(v) ? (v > 0 ? 1 : 2) : 3;
}

static const char *kind_name(int k)
{
    static const char *const names[] = {"NaN", "+inf", "-inf", "finite"};
    return names[k];
}

/* y (computed by a path) has NaN/inf exactly where want has them, and its finite values
 * agree within 1e-5 of sum-scale; fails naming the case, path and first differing element. */
static void expect_same(const char *case_name, const char *path_name, const cr_tensor *want,
                        const cr_tensor *y)
{
    int64_t finite = 0;
    for (size_t i = 0; i < want->numel; i++) {
        const float a = y->data[i], b = want->data[i];
        if (kind_of(a) != kind_of(b))
            fail_msg("%s, %s: y[%zu] is %s (%g), PyTorch gives %s (%g)", case_name, path_name, i,
                     kind_name(kind_of(a)), a, kind_name(kind_of(b)), b);
        if (kind_of(b) == 3) {
            finite++;
            if (!(fabsf(a - b) <= 1e-5f * (1.0f + fabsf(b))))
                fail_msg("%s, %s: y[%zu] = %.8g, PyTorch gives %.8g", case_name, path_name, i, a, b);
        }
    }
    (void)finite;
}

/* Runs every path, under every GEMM micro-kernel this CPU supports, on every case. */
static void nonfinite__every_path_follows_pytorch(void **state)
{
    (void)state;
    char **files;
    const int n = cr_golden_list("nonfinite_", &files);
    if (n < 8) fail_msg("expected 8 nonfinite_* golden cases, found %d", n);
    static const char *const kernels[] = {"avx512", "avx2", "portable"};
    int checked = 0;
    for (int f = 0; f < n; f++) {
        cr_golden_conv c;
        cr_golden_conv_load(files[f], &c);
        for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
            if (!cr_gemm_kernel_supported(kernels[k])) continue;
            assert_cr_ok(cr_gemm_set_kernel(kernels[k]));
            for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
                cr_tensor y = {0};
                assert_cr_ok(cr_tensor_alloc(&y, c.y.ndim, c.y.shape));
                cr_tensor_poison(&y);
                assert_cr_ok(paths[i].fn(&c.p, &c.x, &c.w, c.b.data ? &c.b : NULL, &y));
                char label[96];
                snprintf(label, sizeof label, "%s [gemm kernel %s]", paths[i].name, kernels[k]);
                expect_same(c.name, label, &c.y, &y);
                cr_tensor_free(&y);
                checked++;
            }
        }
        cr_golden_conv_free(&c);
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
    cr_free_list(files, n);
    assert_true(checked >= 8 * 6);
}

/* The golden cases have teeth: at least one case has NaN only at the borders (an inf
 * weight meeting a padded zero), which a path that skips padded taps would miss. */
static void nonfinite__cases_have_border_nans(void **state)
{
    (void)state;
    char **files;
    const int n = cr_golden_list("nonfinite_", &files);
    int border_only = 0;
    for (int f = 0; f < n; f++) {
        cr_golden_conv c;
        cr_golden_conv_load(files[f], &c);
        size_t nan = 0, inf = 0;
        for (size_t i = 0; i < c.y.numel; i++) {
            nan += isnan(c.y.data[i]) != 0;
            inf += isinf(c.y.data[i]) != 0;
        }
        if (nan > 0 && inf > 0) border_only++;
        cr_golden_conv_free(&c);
    }
    cr_free_list(files, n);
    if (border_only < 2)
        fail_msg("only %d golden cases mix NaN and inf outputs; expected >= 2", border_only);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nonfinite__cases_have_border_nans),
        cmocka_unit_test(nonfinite__every_path_follows_pytorch),
    };
    return cr_run_tests("nonfinite", tests);
}
