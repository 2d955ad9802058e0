/* test_ch02.c — suite ch02: convolution as im2col + GEMM equals chapter 1. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "compare.h"
#include "conv_harness.h"
#include "cr_test.h"
#include "direct.h"
#include "im2col.h"

/* C = A*B in double precision, the definition the naive GEMM is checked against. */
static void gemm_f64(int64_t M, int64_t N, int64_t K, const float *A, const float *B, double *C)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)A[i * K + k] * B[k * N + j];
            C[i * N + j] = acc;
        }
}

/* The naive GEMM equals a float64 product on random shapes (1, primes, odd sizes),
 * with leading dimensions larger than the widths. */
static void gemm_naive__random_shapes(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int t = 0; t < cr_test_count(200); t++) {
        const int64_t M = cr_rng_int(&r, 1, 37), N = cr_rng_int(&r, 1, 41), K = cr_rng_int(&r, 1, 53);
        const int64_t pad = cr_rng_int(&r, 0, 3); /* extra columns in every leading dimension */
        float *A = calloc((size_t)(M * (K + pad)), sizeof *A);
        float *B = calloc((size_t)(K * (N + pad)), sizeof *B);
        float *C = malloc((size_t)(M * (N + pad)) * sizeof *C);
        float *A0 = malloc((size_t)(M * K) * sizeof *A0), *B0 = malloc((size_t)(K * N) * sizeof *B0);
        double *ref = malloc((size_t)(M * N) * sizeof *ref);
        assert_non_null(A); assert_non_null(B); assert_non_null(C);
        assert_non_null(A0); assert_non_null(B0); assert_non_null(ref);
        for (int64_t i = 0; i < M * K; i++) A[i / K * (K + pad) + i % K] = A0[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < K * N; i++) B[i / N * (N + pad) + i % N] = B0[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < M * (N + pad); i++) C[i] = NAN;
        gemm_f64(M, N, K, A0, B0, ref);
        cr_gemm_naive(M, N, K, A, K + pad, B, N + pad, C, N + pad);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double got = C[i * (N + pad) + j], want = ref[i * N + j];
                if (!(fabs(got - want) <= 1e-5 * K + 1e-5 * fabs(want)))
                    fail_msg("gemm %lldx%lldx%lld (ld pad %lld, seed %llu): C[%lld][%lld] = %.8g, "
                             "expected %.8g", (long long)M, (long long)N, (long long)K,
                             (long long)pad, (unsigned long long)seed, (long long)i, (long long)j,
                             got, want);
            }
        free(A); free(B); free(C); free(A0); free(B0); free(ref);
    }
}

/* im2col is right if (weights x patch matrix) reproduces chapter 1 for one image and
 * group. The product here is the test's own float64 loop, so only the gather is tested. */
static void im2col_gather__product_equals_direct(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int t = 0; t < cr_test_count(300); t++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_random_conv_config(&r, &p, &n, &h, &w);
        p.groups = 1;                     /* one group: the whole weight is W_g */
        p.out_channels = cr_rng_int(&r, 1, 4);
        p.bias = false;
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, 1, h, w));
        cr_tensor x, wt, b, y;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y);
        assert_cr_ok(cr_conv2d_direct(&p, &x, &wt, NULL, &y));
        const int64_t rows = cr_im2col_rows(&s), cols = cr_im2col_cols(&s);
        float *col = malloc((size_t)(rows * cols) * sizeof *col);
        double *prod = malloc((size_t)(p.out_channels * cols) * sizeof *prod);
        double *mag = malloc((size_t)(p.out_channels * cols) * sizeof *mag);
        float *wabs = malloc(wt.numel * sizeof *wabs), *cabs = malloc((size_t)(rows * cols) * sizeof *cabs);
        assert_non_null(col); assert_non_null(prod); assert_non_null(mag);
        assert_non_null(wabs); assert_non_null(cabs);
        for (int64_t i = 0; i < rows * cols; i++) col[i] = NAN;
        cr_im2col(&s, x.data, col);
        gemm_f64(p.out_channels, cols, rows, wt.data, col, prod);
        /* Chapter 1 sums in float32: its rounding grows with sum |w x|, so the bound does too
         * (1e-6 of it, ~16 float epsilons); a wrongly gathered pixel is off by a whole term. */
        for (size_t i = 0; i < wt.numel; i++) wabs[i] = fabsf(wt.data[i]);
        for (int64_t i = 0; i < rows * cols; i++) cabs[i] = fabsf(col[i]);
        gemm_f64(p.out_channels, cols, rows, wabs, cabs, mag);
        for (int64_t i = 0; i < p.out_channels * cols; i++)
            if (!(fabs(prod[i] - y.data[i]) <= 1e-6 * mag[i] + 1e-7)) {
                char desc[512];
                cr_conv_params_str(&p, desc, sizeof desc);
                fail_msg("im2col (seed %llu, case %d, input 1x%lldx%lldx%lld, %s): output element "
                         "%lld is %.8g through the patch matrix, %.8g by chapter 1 (bound "
                         "1e-6 * sum|w x| = %.3g)",
                         (unsigned long long)seed, t, (long long)p.in_channels, (long long)h,
                         (long long)w, desc, (long long)i, prod[i], (double)y.data[i],
                         1e-6 * mag[i]);
            }
        free(col); free(prod); free(mag); free(wabs); free(cabs);
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b); cr_tensor_free(&y);
    }
}

/* ---- a void task still a coursework stub says so ----------------------------------- */

/* Fails with the stub's message if the void function call just made was a coursework
 * stub (it records CR_ETODO through cr_todo; the caller clears the message first). */
static void fail_if_stub(void)
{
    if (strstr(cr_last_error(), "coursework stub")) fail_msg("%s", cr_last_error());
}

/* One small convolution's shape and tensors for the checks below (3x3, padding 1, no
 * bias). */
static void small_case(cr_conv_params *p, cr_conv_shape *s, cr_tensor *x, cr_tensor *w,
                       cr_tensor *b, cr_tensor *y)
{
    cr_rng r;
    cr_rng_seed(&r, 5);
    *p = cr_conv_params_default(2, 3, 3);
    cr_conv_set_padding(p, 1, 1);
    p->bias = false;
    assert_cr_ok(cr_conv_shape_init(s, p, 1, 6, 5));
    cr_conv_tensors_random(s, &r, x, w, b, y);
}

/* cr_gemm_naive returns nothing: a stub says it is one through cr_todo. */
static void gemm_naive__is_written(void **state)
{
    (void)state;
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4];
    (void)cr_fail(CR_OK, "%s", "");
    cr_gemm_naive(2, 2, 3, A, 3, B, 2, C, 2);
    fail_if_stub();
}

/* cr_im2col returns nothing: a stub says it is one through cr_todo. */
static void im2col_gather__is_written(void **state)
{
    (void)state;
    cr_conv_params p;
    cr_conv_shape s;
    cr_tensor x, w, b, y;
    small_case(&p, &s, &x, &w, &b, &y);
    float *col = malloc(cr_im2col_workspace_bytes(&s));
    assert_non_null(col);
    (void)cr_fail(CR_OK, "%s", "");
    cr_im2col(&s, x.data, col);
    free(col);
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b); cr_tensor_free(&y);
    fail_if_stub();
}

/* The GEMM of one image and group returns nothing: a stub says it is one (one thread, so
 * that the message is this thread's). */
static void conv_as_gemm__is_written(void **state)
{
    (void)state;
    cr_conv_params p;
    cr_conv_shape s;
    cr_tensor x, w, b, y;
    small_case(&p, &s, &x, &w, &b, &y);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    (void)cr_fail(CR_OK, "%s", "");
    cr_status st = cr_conv2d_im2col(&p, &x, &w, NULL, &y);
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b); cr_tensor_free(&y);
    fail_if_stub();
    assert_cr_ok(st);
}

/* Chapter 2 equals chapter 1 on at least 1,000 random configurations (fresh seed). */
static void conv_as_gemm__equals_direct_random(void **state)
{
    (void)state;
    cr_check_conv_random(cr_conv2d_direct, cr_conv2d_im2col, "chapter 2 (im2col + GEMM)",
                         cr_test_count(1000), 1e-5);
}

/* Chapter 2 also reproduces PyTorch's golden cases directly. */
static void conv_as_gemm__golden_cases(void **state)
{
    (void)state;
    cr_check_conv_golden(cr_conv2d_im2col, "chapter 2 (im2col + GEMM)", 1e-5, 40);
}

/* The patch matrix holds Cin_g*kh*kw x Ho*Wo floats; the pointwise case needs none. */
static void workspace__bytes_follow_the_shape(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(64, 64, 3);
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    assert_int_equal(cr_im2col_workspace_bytes(&s), (size_t)576 * 3136 * 4);
    p = cr_conv_params_default(64, 256, 1);
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    assert_int_equal(cr_im2col_workspace_bytes(&s), 0);
    p.stride_h = p.stride_w = 2;    /* 1x1 but strided: a (smaller) patch matrix again */
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    assert_int_equal(cr_im2col_workspace_bytes(&s), (size_t)64 * 28 * 28 * 4);
    p = cr_conv_params_default(128, 128, 3);
    p.groups = 32;                  /* per group: 4 channels x 9 taps */
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    assert_int_equal(cr_im2col_workspace_bytes(&s), (size_t)36 * 54 * 54 * 4);
}

/* Bad tensors are refused with a message naming them, and y is left alone. */
static void workspace__bad_tensors_refused(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_tensor x, w, b, y;
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 4, 8, 8));
    assert_cr_ok(cr_tensor_alloc4(&w, 6, 4, 3, 3));
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 6, 5, 5)); /* should be 6x6 */
    const int64_t bs[1] = {6};
    assert_cr_ok(cr_tensor_alloc(&b, 1, bs));
    cr_tensor_fill(&x, 1); cr_tensor_fill(&w, 1); cr_tensor_fill(&b, 1); cr_tensor_fill(&y, 7);
    assert_cr_fails(cr_conv2d_im2col(&p, &x, &w, &b, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "tensor y"));
    assert_true(y.data[0] == 7.0f);
    assert_cr_fails(cr_conv2d_im2col(&p, &x, &w, NULL, &y), CR_EINVAL);
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b); cr_tensor_free(&y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gemm_naive__is_written),
        cmocka_unit_test(gemm_naive__random_shapes),
        cmocka_unit_test(im2col_gather__is_written),
        cmocka_unit_test(im2col_gather__product_equals_direct),
        cmocka_unit_test(conv_as_gemm__is_written),
        cmocka_unit_test(conv_as_gemm__equals_direct_random),
        cmocka_unit_test(conv_as_gemm__golden_cases),
        cmocka_unit_test(workspace__bytes_follow_the_shape),
        cmocka_unit_test(workspace__bad_tensors_refused),
    };
    return cr_run_tests("ch02", tests);
}
