/* test_ch07_int8.c — suite ch07, the int8 half: every int8 GEMM kernel equals the
 * int32 reference bit for bit (and vpmaddubsw's saturation is caught where it bites),
 * fixed-point requantization equals the real-valued rounding, the int8 convolution
 * equals its seven-loop reference and PyTorch's quantized convolution within one
 * step, and the bf16 GEMM equals its vdpbf16ps-order reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_harness.h"
#include "cr_test.h"
#include "dtype.h"
#include "int8_conv.h"
#include "int8_gemm.h"
#include "rng.h"
#include "safetensors.h"
#include "tensor.h"

/* The kernel names the tests run: every one this CPU supports, the "avx2" rule included. */
static const char *const kernel_names[] = {"portable", "avx2_split", "avx2", "avx_vnni",
                                           "avx512_vnni"};
#define N_KERNELS ((int)(sizeof kernel_names / sizeof *kernel_names))

/* Sizes around the kernels' tiles (4, 6, 8 rows; 8, 16, 48 columns) and depth blocks. */
static const int64_t special[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 47, 48, 49, 97};

static int64_t pick_size(cr_rng *r, int64_t lo, int64_t hi)
{
    return cr_rng_uniform(r) < 0.5 ? special[cr_rng_int(r, 0, 14)] : cr_rng_int(r, lo, hi);
}

/* Fills n bytes with integers in [lo, hi]. */
static void fill_u8(cr_rng *r, uint8_t *p, size_t n, int lo, int hi)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)cr_rng_int(r, lo, hi);
}
static void fill_s8(cr_rng *r, int8_t *p, size_t n, int lo, int hi)
{
    for (size_t i = 0; i < n; i++) p[i] = (int8_t)cr_rng_int(r, lo, hi);
}

/* One int8 GEMM against the reference: A, B drawn in the given ranges (or extremes), C
 * poisoned (or random when accumulating). Returns the number of differing entries and
 * fails the test on a bad status. */
static int64_t gemm_diff(cr_rng *r, int64_t M, int64_t N, int64_t K, int a_lo, int a_hi,
                         int b_lo, int b_hi, int accumulate, const char *what, uint64_t seed)
{
    const int64_t lda = K + cr_rng_int(r, 0, 3), ldb = N + cr_rng_int(r, 0, 3),
                  ldc = N + cr_rng_int(r, 0, 3);
    int8_t *A = malloc((size_t)(M * lda) + 1);
    uint8_t *B = malloc((size_t)(K * ldb) + 1);
    int32_t *C = malloc((size_t)(M * ldc + 1) * sizeof(int32_t));
    int32_t *R = malloc((size_t)(M * ldc + 1) * sizeof(int32_t));
    assert_non_null(A);
    assert_non_null(B);
    assert_non_null(C);
    assert_non_null(R);
    fill_s8(r, A, (size_t)(M * lda), a_lo, a_hi);
    fill_u8(r, B, (size_t)(K * ldb), b_lo, b_hi);
    for (int64_t i = 0; i < M * ldc; i++)
        C[i] = R[i] = accumulate ? (int32_t)cr_rng_int(r, -1000000, 1000000) : (int32_t)0xDEADBEEF;
    assert_cr_ok(cr_gemm_s8u8s32_ref(M, N, K, A, lda, B, ldb, R, ldc, accumulate));
    cr_status st = cr_gemm_s8u8s32(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    if (st != CR_OK)
        fail_msg("%s: M=%lld N=%lld K=%lld (seed %llu): %s", what, (long long)M, (long long)N,
                 (long long)K, (unsigned long long)seed, cr_last_error());
    int64_t bad = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldc; j++) {
            const int64_t at = i * ldc + j;
            if (C[at] != R[at]) {   /* the padding columns too: must be left alone */
                if (bad == 0 && a_lo != a_hi)
                    printf("  %s: first difference C[%lld][%lld] = %d, reference %d\n", what,
                           (long long)i, (long long)j, C[at], R[at]);
                bad++;
            }
        }
    free(A);
    free(B);
    free(C);
    free(R);
    return bad;
}

/* ---- the int8 GEMM -------------------------------------------------------------------- */

static void int8_gemm__kernels_equal_reference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(30);
    int ran = 0;
    for (int k = 0; k < N_KERNELS; k++) {
        if (!cr_int8_gemm_kernel_supported(kernel_names[k])) {
            printf("  kernel %s: not on this CPU, skipped\n", kernel_names[k]);
            continue;
        }
        assert_cr_ok(cr_int8_gemm_set_kernel(kernel_names[k]));
        for (int threads = 1; threads <= 2; threads++) {
            cr_test_set_threads(threads);
            for (int c = 0; c < count; c++) {
                const int64_t M = pick_size(&r, 1, 70), N = pick_size(&r, 1, 300);
                /* depths across the 512- and 640-byte blocks, K % 4 of every kind */
                const int64_t K = cr_rng_uniform(&r) < 0.2 ? cr_rng_int(&r, 600, 1400)
                                                           : pick_size(&r, 1, 200);
                char what[96];
                snprintf(what, sizeof what, "kernel %s, %d thread(s)", kernel_names[k], threads);
                const int64_t bad = gemm_diff(&r, M, N, K, -128, 127, 0, 255,
                                              cr_rng_uniform(&r) < 0.3, what, seed);
                if (bad)
                    fail_msg("%s: M=%lld N=%lld K=%lld: %lld entries differ from the int32 "
                             "reference (seed %llu)", what, (long long)M, (long long)N,
                             (long long)K, (long long)bad, (unsigned long long)seed);
            }
        }
        ran++;
    }
    cr_test_set_threads(2);
    assert_cr_ok(cr_int8_gemm_set_kernel("auto"));
    printf("int8 gemm: %d kernels x %d random products x {1, 2} threads equal the reference "
           "bit for bit (seed %llu)\n", ran, count, (unsigned long long)seed);
}

/* Largest-magnitude inputs: every full-range kernel exact; the 7-bit kernel exact on
 * u8 <= 127 and wrong (saturated) on 255 x 127, the case vpmaddubsw cannot add. */
static void int8_gemm__extremes_and_saturation(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    static const int ranges[][4] = {   /* a_lo, a_hi, b_lo, b_hi */
        {127, 127, 255, 255}, {-128, -128, 255, 255}, {-128, 127, 255, 255},
        {-128, -128, 127, 127}, {127, 127, 127, 127}, {-128, 127, 0, 255}};
    const char *const all[] = {"portable", "avx2_7bit", "avx2_split", "avx2", "avx_vnni",
                               "avx512_vnni"};
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) {
        if (!cr_int8_gemm_kernel_supported(all[k])) continue;
        assert_cr_ok(cr_int8_gemm_set_kernel(all[k]));
        const int full = cr_int8_gemm_kernel_full_range(all[k]);
        for (size_t q = 0; q < sizeof ranges / sizeof *ranges; q++) {
            const int *g = ranges[q];
            const int64_t bad = gemm_diff(&r, 19, 53, 517, g[0], g[1], g[2], g[3], 0, all[k], seed);
            const int b7 = g[3] <= 127;
            if ((full || b7) && bad)
                fail_msg("kernel %s, A in [%d, %d], B in [%d, %d]: %lld entries differ (the "
                         "kernel claims exactness here; seed %llu)", all[k], g[0], g[1], g[2],
                         g[3], (long long)bad, (unsigned long long)seed);
            /* 255 * 127 twice is 64770 > 32767: the 7-bit kernel must show it */
            if (!full && g[0] == 127 && g[2] == 255 && bad == 0)
                fail_msg("kernel %s with A = 127, B = 255: no difference, but vpmaddubsw "
                         "saturates there (was the kernel really run?)", all[k]);
            if (!full && (g[2] == 255 || g[3] == 255))
                printf("  %s, A in [%d, %d], B in [%d, %d]: %lld of 1007 entries wrong "
                       "(int16 saturation)\n", all[k], g[0], g[1], g[2], g[3], (long long)bad);
        }
    }
    assert_cr_ok(cr_int8_gemm_set_kernel("auto"));
}

static void int8_gemm__bad_arguments(void **state)
{
    (void)state;
    int8_t a[4] = {1, 2, 3, 4};
    uint8_t b[4] = {1, 2, 3, 4};
    int32_t c[4];
    assert_cr_fails(cr_gemm_s8u8s32(-1, 2, 2, a, 2, b, 2, c, 2, 0), CR_EINVAL);
    assert_cr_fails(cr_gemm_s8u8s32(2, 2, 2, a, 1, b, 2, c, 2, 0), CR_EINVAL);
    assert_cr_fails(cr_gemm_s8u8s32(2, 2, 2, a, 2, b, 1, c, 2, 0), CR_EINVAL);
    assert_cr_fails(cr_gemm_s8u8s32(2, 2, 2, NULL, 2, b, 2, c, 2, 0), CR_EINVAL);
    assert_cr_fails(cr_gemm_s8u8s32(1, 1, CR_I8_MAX_K + 1, a, CR_I8_MAX_K + 1, b, 1, c, 1, 0),
                    CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "K ="));
    assert_cr_fails(cr_int8_gemm_set_kernel("avx9000"), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "avx9000"));
    /* sizes 0: nothing to do, nothing read */
    assert_cr_ok(cr_gemm_s8u8s32(0, 0, 0, NULL, 1, NULL, 1, NULL, 1, 0));
    /* K == 0 writes zeros */
    c[0] = 77;
    assert_cr_ok(cr_gemm_s8u8s32(1, 1, 0, a, 1, b, 1, c, 1, 0));
    assert_int_equal(c[0], 0);
}

/* ---- requantization ------------------------------------------------------------------- */

static void requant__fixed_point_equals_real_rounding(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(200000);
    int ties = 0;
    for (int c = 0; c < count; c++) {
        const double real = exp2(cr_rng_uniform(&r) * 28.0 - 26.0);   /* 2^-26 .. 2^2 */
        cr_qmul m;
        assert_cr_ok(cr_qmul_from_real(real, &m));
        const double approx = ldexp((double)m.mult, -m.shift);
        if (m.mult < (1 << 30) || fabs(approx - real) > real * ldexp(1.0, -31))
            fail_msg("cr_qmul_from_real(%.17g): mult %d, shift %d: %.17g, relative error %.3g "
                     "> 2^-31", real, m.mult, m.shift, approx, fabs(approx - real) / real);
        const int32_t lim = (int32_t)fmin(2e9, 400.0 / real);   /* outputs near 0..255 */
        const int32_t acc = (int32_t)cr_rng_int(&r, -lim, lim), bias = (int32_t)cr_rng_int(&r, -1000, 1000);
        const int32_t zp = (int32_t)cr_rng_int(&r, 0, 255), lo = cr_rng_uniform(&r) < 0.5 ? zp : 0;
        /* the exact rational (acc + bias) * mult / 2^shift, rounded half to even */
        const long double x = (long double)((int64_t)acc + bias) * m.mult / powl(2.0L, m.shift);
        const long double fl = floorl(x), fr = x - fl;
        long double q = fr > 0.5L ? fl + 1 : fr < 0.5L ? fl : (fmodl(fl, 2.0L) == 0 ? fl : fl + 1);
        q += zp;
        const int want = (int)(q < lo ? lo : q > 255 ? 255 : q);
        const int got = cr_requant(acc, bias, m, zp, lo);
        if (got != want)
            fail_msg("cr_requant(acc %d, bias %d, mult %d, shift %d, zp %d, lo %d) = %d, the "
                     "exact rounding gives %d (seed %llu)", acc, bias, m.mult, m.shift, zp, lo, got,
                     want, (unsigned long long)seed);
        /* against the real multiplier: equal unless within 2^-20 of a tie (mult's error) */
        const double y = ((double)acc + bias) * real, fy = y - floor(y);
        if (fabs(fy - 0.5) < 1e-6) {
            ties++;
            continue;
        }
        const double qr = fmin(255.0, fmax((double)lo, nearbyint(y) + zp));
        if ((double)got != qr)
            fail_msg("cr_requant = %d but round(%.17g * %.17g) + %d clamped = %g (seed %llu)", got,
                     (double)acc + bias, real, zp, qr, (unsigned long long)seed);
    }
    /* ties exactly: 5 * 0.5 = 2.5 goes to 2, 7 * 0.5 = 3.5 to 4, -5 * 0.5 to -2 */
    cr_qmul half;
    assert_cr_ok(cr_qmul_from_real(0.5, &half));
    assert_int_equal(cr_requant(5, 0, half, 100, 0), 102);
    assert_int_equal(cr_requant(7, 0, half, 100, 0), 104);
    assert_int_equal(cr_requant(-5, 0, half, 100, 0), 98);
    assert_int_equal(cr_requant(-5, 0, half, 100, 100), 100);   /* ReLU: clamped at zp */
    assert_cr_fails(cr_qmul_from_real(0.0, NULL), CR_EINVAL);
    assert_cr_fails(cr_qmul_from_real(NAN, NULL), CR_EINVAL);
    assert_cr_fails(cr_qmul_from_real(2e9, NULL), CR_EINVAL);
    printf("requant: %d random cases equal the exact rounding and the real multiplier (%d "
           "near-ties skipped; seed %llu)\n", count, ties, (unsigned long long)seed);
}

static void requant__simd_rows_equal_scalar(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(3000);
    const int has512 = cr_cpu_has_avx512_vnni(), has2 = cr_int8_gemm_kernel_supported("avx2");
    int32_t acc[100];
    uint8_t want[100], got[100];
    for (int c = 0; c < count; c++) {
        const int64_t n = cr_rng_int(&r, 0, 100);
        const int32_t bias = (int32_t)cr_rng_int(&r, -100000, 100000);
        const int64_t span = c % 3 == 0 ? 2147383647 : cr_rng_int(&r, 1, 1 << 24);  /* extremes */
        for (int64_t j = 0; j < n; j++) acc[j] = (int32_t)cr_rng_int(&r, -span, span);
        cr_qmul m = {(int32_t)cr_rng_int(&r, 1 << 30, 2147483647), (int32_t)cr_rng_int(&r, 1, 61)};
        if (c % 7 == 0) m.shift = 61, m.mult = (int32_t)cr_rng_int(&r, 0, 2147483647);
        int32_t b = bias;
        if (c % 11 == 5) {   /* exact ties, (2t + 1) / 2, at every shift of the float64 form */
            m.mult = 1 << 30;
            m.shift = (int32_t)cr_rng_int(&r, 31, 45);
            b = 0;
            for (int64_t j = 0; j < n; j++)
                acc[j] = (int32_t)((2 * cr_rng_int(&r, -100, 100) + 1) * ((int64_t)1 << (m.shift - 31)));
        }
        const int32_t zp = (int32_t)cr_rng_int(&r, 0, 255), lo = c % 2 ? zp : 0;
        for (int64_t j = 0; j < n; j++) want[j] = cr_requant(acc[j], b, m, zp, lo);
        void (*fns[3])(const int32_t *, int64_t, int32_t, cr_qmul, int32_t, int32_t, uint8_t *) = {
            cr_requant_row, has2 ? cr_requant_row_avx2 : NULL, has512 ? cr_requant_row_avx512 : NULL};
        const char *names[3] = {"cr_requant_row", "cr_requant_row_avx2", "cr_requant_row_avx512"};
        for (int f = 0; f < 3; f++) {
            if (!fns[f]) continue;
            memset(got, 0xA5, sizeof got);
            fns[f](acc, n, b, m, zp, lo, got);
            for (int64_t j = 0; j < n; j++)
                if (got[j] != want[j])
                    fail_msg("%s: element %lld of %lld: %d, scalar %d (acc %d, bias %d, mult %d, "
                             "shift %d, zp %d; seed %llu)", names[f], (long long)j, (long long)n,
                             got[j], want[j], acc[j], b, m.mult, m.shift, zp,
                             (unsigned long long)seed);
            for (int64_t j = n; j < 100; j++)
                if (got[j] != 0xA5) fail_msg("%s wrote past n = %lld", names[f], (long long)n);
        }
    }
    printf("requant rows: %d random rows (AVX2 %s, AVX-512 %s) equal the scalar form\n", count,
           has2 ? "run" : "absent", has512 ? "run" : "absent");
}

/* ---- the int8 convolution -------------------------------------------------------------- */

/* Random int8 weights (per channel, symmetric) for p as a quantized tensor. */
static void random_qweights(cr_rng *r, const cr_conv_params *p, cr_qtensor *w)
{
    const int64_t co = p->out_channels;
    const int64_t shape[4] = {co, p->in_channels / p->groups, p->kernel_h, p->kernel_w};
    double *sc = malloc((size_t)co * sizeof(double));
    int32_t *zp = calloc((size_t)co, sizeof(int32_t));
    assert_non_null(sc);
    assert_non_null(zp);
    for (int64_t o = 0; o < co; o++) sc[o] = 0.001 + 0.02 * cr_rng_uniform(r);
    cr_qparams qp = {0};
    assert_cr_ok(cr_qparams_per_channel(&qp, CR_DT_I8, 0, co, sc, zp));
    assert_cr_ok(cr_qtensor_alloc(w, &qp, 4, shape));
    fill_s8(r, cr_dtensor_i8(&w->q), w->q.numel, -128, 127);
    cr_qparams_free(&qp);
    free(sc);
    free(zp);
}

/* One random conv: cr_int8_conv_run equals cr_int8_conv_run_ref byte for byte. Returns 1 if
 * the reference output has at least 3 distinct values (some random geometries read
 * only padding: their outputs are all one value and prove little). */
static int check_qconv_case(cr_rng *r, uint64_t seed, int x_max, const char *what)
{
    cr_conv_params p;
    int64_t n, h, w;
    cr_random_conv_config(r, &p, &n, &h, &w);
    p.pad_mode = CR_PAD_ZEROS;
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
    cr_qtensor qw = {0};
    random_qweights(r, &p, &qw);
    float *bias = NULL;
    if (p.bias) {
        bias = malloc((size_t)p.out_channels * sizeof(float));
        assert_non_null(bias);
        for (int64_t o = 0; o < p.out_channels; o++) bias[o] = cr_rng_uniform_f(r, -2.0f, 2.0f);
    }
    const double xs = 0.01 + 0.05 * cr_rng_uniform(r);
    const int32_t xz = (int32_t)cr_rng_int(r, 0, x_max);
    /* the output scale: the sums' spread (w and x - z_x about 74 each, s_w about 0.01:
     * 74 * 74 * 0.01 * sqrt(K) * s_x) over about 40 steps, so that outputs vary */
    const double ys = xs * 1.4 * sqrt((double)s.cin_g * p.kernel_h * p.kernel_w) *
                      (0.5 + cr_rng_uniform(r));
    const int32_t yz = (int32_t)cr_rng_int(r, 0, 255);
    const int relu = cr_rng_uniform(r) < 0.5;
    cr_int8_conv qc;
    assert_cr_ok(cr_int8_conv_prepare(&qc, &p, &qw, bias, xs, xz, ys, yz, relu));
    assert_int_equal(qc.y_max, 255);
    if (cr_rng_uniform(r) < 0.3) qc.y_max = 127;   /* a 7-bit output grid (reduce_range) */
    uint8_t *x = malloc(s.x_numel), *y = malloc(s.y_numel), *ref = malloc(s.y_numel);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(ref);
    fill_u8(r, x, s.x_numel, 0, x_max);
    x[0] = (uint8_t)x_max;
    memset(y, 0xA5, s.y_numel);
    assert_cr_ok(cr_int8_conv_run_ref(&qc, n, h, w, x, ref));
    assert_cr_ok(cr_int8_conv_run(&qc, n, h, w, x, y));
    size_t bad = 0, first = 0, distinct = 0;
    int seen[256] = {0};
    for (size_t i = 0; i < s.y_numel; i++) {
        if (y[i] != ref[i] && bad++ == 0) first = i;
        distinct += !seen[ref[i]]++;
    }
    if (bad) {
        char ps[256];
        cr_conv_params_str(&p, ps, sizeof ps);
        fail_msg("%s: %s on %lldx%lldx%lldx%lld, relu %d, y_max %d: %zu of %zu bytes differ "
                 "from the reference, first at %zu: %d vs %d (seed %llu)", what, ps,
                 (long long)n, (long long)p.in_channels, (long long)h, (long long)w, relu,
                 (int)qc.y_max, bad, s.y_numel, first, y[first], ref[first],
                 (unsigned long long)seed);
    }
    cr_int8_conv_free(&qc);
    cr_qtensor_free(&qw);
    free(bias);
    free(x);
    free(y);
    free(ref);
    return distinct >= 3;
}

static void qconv__fast_equals_reference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(25);
    int ran = 0, varied = 0, total = 0;
    for (int k = 0; k < N_KERNELS; k++) {
        if (!cr_int8_gemm_kernel_supported(kernel_names[k])) continue;
        assert_cr_ok(cr_int8_gemm_set_kernel(kernel_names[k]));
        for (int threads = 1; threads <= 2; threads++) {
            cr_test_set_threads(threads);
            char what[80];
            snprintf(what, sizeof what, "kernel %s, %d thread(s)", kernel_names[k], threads);
            for (int c = 0; c < count; c++)
                varied += check_qconv_case(&r, seed, c % 3 ? 255 : 127, what);
            total += count;
        }
        ran++;
    }
    cr_test_set_threads(2);
    assert_cr_ok(cr_int8_gemm_set_kernel("auto"));
    /* some random geometries read only padding (one output value): most must not */
    if (varied == 0 || (total >= 10 && 2 * varied < total))
        fail_msg("only %d of %d random convolutions had 3 or more distinct output values: "
                 "the outputs are too uniform to prove much (seed %llu)", varied, total,
                 (unsigned long long)seed);
    printf("int8 conv: %d kernels x %d random convolutions x {1, 2} threads equal the seven "
           "loops byte for byte, %d of %d with 3+ distinct outputs (seed %llu)\n", ran, count,
           varied, total, (unsigned long long)seed);
}

/* A convolution too deep for one depth block, with every layout path: stride 1 with
 * and without padding (flat), stride 2 (phase-split rows, odd and even widths), 1x1
 * stride 2 without padding (the subsampled input), stride 3 (the general split). */
static void qconv__deep_and_layout_paths(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    static const int64_t shapes[][7] = {  /* cin, cout, k, stride, pad, h, groups */
        {160, 20, 3, 1, 1, 9, 1}, {160, 20, 3, 1, 0, 9, 1}, {90, 16, 3, 2, 1, 11, 1},
        {700, 9, 1, 1, 0, 6, 1},  {64, 64, 3, 1, 1, 12, 32}, {3, 17, 7, 2, 3, 23, 1},
        {48, 24, 1, 2, 0, 10, 1}, {40, 20, 1, 2, 0, 11, 1}, {36, 12, 1, 3, 0, 13, 1},
        {24, 16, 3, 2, 1, 12, 1}, {20, 12, 3, 3, 1, 13, 1}};
    for (int k = 0; k < N_KERNELS; k++) {
        if (!cr_int8_gemm_kernel_supported(kernel_names[k])) continue;
        assert_cr_ok(cr_int8_gemm_set_kernel(kernel_names[k]));
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
            const int64_t *v = shapes[i];
            cr_conv_params p = cr_conv_params_default(v[0], v[1], v[2]);
            p.stride_h = p.stride_w = v[3];
            cr_conv_set_padding(&p, v[4], v[4]);
            p.groups = v[6];
            cr_conv_shape s;
            assert_cr_ok(cr_conv_shape_init(&s, &p, 2, v[5], v[5] + 2));
            cr_qtensor qw = {0};
            random_qweights(&r, &p, &qw);
            float *bias = malloc((size_t)v[1] * sizeof(float));
            assert_non_null(bias);
            for (int64_t o = 0; o < v[1]; o++) bias[o] = cr_rng_uniform_f(&r, -1.0f, 1.0f);
            cr_int8_conv qc;
            const double ys = 0.03 * 1.4 * sqrt((double)s.cin_g * v[2] * v[2]);
            assert_cr_ok(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.03, 77, ys, 60, (int)(i % 2)));
            uint8_t *x = malloc(s.x_numel), *y = malloc(s.y_numel), *ref = malloc(s.y_numel);
            assert_non_null(x);
            assert_non_null(y);
            assert_non_null(ref);
            fill_u8(&r, x, s.x_numel, 0, 255);
            assert_cr_ok(cr_int8_conv_run_ref(&qc, 2, v[5], v[5] + 2, x, ref));
            assert_cr_ok(cr_int8_conv_run(&qc, 2, v[5], v[5] + 2, x, y));
            size_t bad = 0;
            for (size_t e = 0; e < s.y_numel; e++) bad += y[e] != ref[e];
            if (bad)
                fail_msg("kernel %s, shape %zu (Cin %lld, k %lld, stride %lld, pad %lld, groups "
                         "%lld): %zu of %zu bytes differ (seed %llu)", kernel_names[k], i,
                         (long long)v[0], (long long)v[2], (long long)v[3], (long long)v[4],
                         (long long)v[6], bad, s.y_numel, (unsigned long long)seed);
            cr_int8_conv_free(&qc);
            cr_qtensor_free(&qw);
            free(bias);
            free(x);
            free(y);
            free(ref);
        }
    }
    assert_cr_ok(cr_int8_gemm_set_kernel("auto"));
}

/* Reads a metadata value as a number; fails the test if absent. */
static double meta_num(const cr_st_file *f, const char *key, const char *path)
{
    const char *v = cr_st_meta(f, key);
    if (!v) fail_msg("%s: no metadata \"%s\"", path, key);
    return atof(v);
}

static void qconv__golden_pytorch_onednn(void **state)
{
    (void)state;
    char **paths;
    const int np = cr_golden_list("int8_", &paths);
    if (np < 10) fail_msg("expected >= 10 golden int8 cases in reference/golden, found %d", np);
    size_t total = 0, off1 = 0;
    for (int i = 0; i < np; i++) {
        cr_st_file *f;
        assert_cr_ok(cr_st_load(&f, paths[i]));
        cr_dtensor x = {0}, w = {0}, ws = {0}, b = {0}, y = {0};
        assert_cr_ok(cr_st_get_typed(f, "x", &x));
        assert_cr_ok(cr_st_get_typed(f, "w", &w));
        assert_cr_ok(cr_st_get_typed(f, "w_scale", &ws));
        assert_cr_ok(cr_st_get_typed(f, "y", &y));
        const int has_b = cr_st_has(f, "b");
        if (has_b) assert_cr_ok(cr_st_get_typed(f, "b", &b));
        const int64_t stride = (int64_t)meta_num(f, "stride", paths[i]),
                      pad = (int64_t)meta_num(f, "padding", paths[i]),
                      dil = (int64_t)meta_num(f, "dilation", paths[i]),
                      groups = (int64_t)meta_num(f, "groups", paths[i]);
        const int relu = (int)meta_num(f, "relu", paths[i]);
        cr_conv_params p = cr_conv_params_default(x.shape[1], w.shape[0], w.shape[2]);
        p.kernel_w = w.shape[3];
        p.stride_h = p.stride_w = stride;
        cr_conv_set_padding(&p, pad, pad);
        p.dilation_h = p.dilation_w = dil;
        p.groups = groups;
        p.bias = has_b;
        cr_qtensor qw = {0};
        int32_t *zeros = calloc((size_t)w.shape[0], sizeof(int32_t));
        assert_non_null(zeros);
        assert_cr_ok(cr_qparams_per_channel(&qw.p, CR_DT_I8, 0, w.shape[0], cr_dtensor_f64(&ws),
                                            zeros));
        qw.q = w;
        cr_int8_conv qc;
        assert_cr_ok(cr_int8_conv_prepare(&qc, &p, &qw, has_b ? cr_dtensor_f32(&b) : NULL,
                                      meta_num(f, "x_scale", paths[i]),
                                      (int32_t)meta_num(f, "x_zero_point", paths[i]),
                                      meta_num(f, "y_scale", paths[i]),
                                      (int32_t)meta_num(f, "y_zero_point", paths[i]), relu));
        uint8_t *out = malloc(y.numel), *ref = malloc(y.numel);
        assert_non_null(out);
        assert_non_null(ref);
        assert_cr_ok(cr_int8_conv_run(&qc, x.shape[0], x.shape[2], x.shape[3], cr_dtensor_u8(&x), out));
        assert_cr_ok(cr_int8_conv_run_ref(&qc, x.shape[0], x.shape[2], x.shape[3], cr_dtensor_u8(&x),
                                      ref));
        const uint8_t *py = cr_dtensor_u8(&y);
        size_t n1 = 0, distinct = 0;
        int seen[256] = {0};
        for (size_t e = 0; e < y.numel; e++) {
            const int d = abs((int)out[e] - (int)py[e]);
            if (out[e] != ref[e])
                fail_msg("%s: element %zu: fast %d, reference %d", paths[i], e, out[e], ref[e]);
            if (d > 1)
                fail_msg("%s: element %zu: ours %d, PyTorch %d: more than one step apart",
                         paths[i], e, out[e], py[e]);
            n1 += d == 1;
            distinct += !seen[py[e]]++;
        }
        if (distinct < 10)
            fail_msg("%s: PyTorch's output has %zu distinct values: too few to prove anything",
                     paths[i], distinct);
        printf("  %s: %zu of %zu outputs one step from PyTorch's, the rest equal\n",
               strrchr(paths[i], '/') ? strrchr(paths[i], '/') + 1 : paths[i], n1, y.numel);
        total += y.numel;
        off1 += n1;
        cr_int8_conv_free(&qc);
        free(out);
        free(ref);
        free(zeros);
        qw.q = (cr_dtensor){0};
        cr_qparams_free(&qw.p);
        cr_dtensor_free(&x);
        cr_dtensor_free(&w);
        cr_dtensor_free(&ws);
        cr_dtensor_free(&b);
        cr_dtensor_free(&y);
        cr_st_free(f);
    }
    printf("int8 conv vs PyTorch 1.13 (onednn engine): %d cases, %zu of %zu outputs differ by "
           "one step, none by more\n", np, off1, total);
    cr_free_list(paths, np);
}

/* cr_int8_conv_path names the path each kind of layer takes with each kernel. */
static void qconv__path_names(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    static const int64_t shapes[][4] = {{16, 16, 3, 1}, {16, 16, 3, 2}, {16, 16, 1, 2}};
    const char *vnni[] = {"direct/flat", "direct/phase-split rows", "subsampled/direct/flat"};
    const char *packed[] = {"packed GEMM", "packed GEMM", "subsampled/packed GEMM"};
    for (int k = 0; k < N_KERNELS; k++) {
        if (!cr_int8_gemm_kernel_supported(kernel_names[k])) continue;
        assert_cr_ok(cr_int8_gemm_set_kernel(kernel_names[k]));
        for (int i = 0; i < 3; i++) {
            const int64_t *v = shapes[i];
            cr_conv_params p = cr_conv_params_default(v[0], v[1], v[2]);
            p.stride_h = p.stride_w = v[3];
            cr_conv_set_padding(&p, v[2] / 2, v[2] / 2);
            cr_qtensor qw = {0};
            random_qweights(&r, &p, &qw);
            float bias[16] = {0};
            cr_int8_conv qc;
            assert_cr_ok(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.03, 10, 0.1, 10, 0));
            const int direct = strcmp(kernel_names[k], "avx512_vnni") == 0;
            assert_string_equal(cr_int8_conv_path(&qc, 1, 9, 11), direct ? vnni[i] : packed[i]);
            assert_string_equal(cr_int8_conv_path(&qc, 1, 0, 11), "invalid");
            cr_int8_conv_free(&qc);
            cr_qtensor_free(&qw);
        }
    }
    assert_cr_ok(cr_int8_gemm_set_kernel("auto"));
    assert_string_equal(cr_int8_conv_path(NULL, 1, 9, 11), "invalid");
}

static void qconv__bad_arguments(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, 5);
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_qtensor qw = {0};
    random_qweights(&r, &p, &qw);
    float bias[6] = {0};
    cr_int8_conv qc;
    p.pad_mode = CR_PAD_REFLECT;
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.1, 3, 0.2, 4, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "reflect"));
    p.pad_mode = CR_PAD_ZEROS;
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, NULL, 0.1, 3, 0.2, 4, 0), CR_EINVAL);
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.1, 256, 0.2, 4, 0), CR_EINVAL);
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, bias, -0.1, 3, 0.2, 4, 0), CR_EINVAL);
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.1, 3, 0.0, 4, 0), CR_EINVAL);
    qw.p.zero_point[2] = 1;   /* asymmetric weights are not what PyTorch's x86 config makes */
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.1, 3, 0.2, 4, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "zero point"));
    qw.p.zero_point[2] = 0;
    bias[1] = 1e9f;           /* 1e9 / (0.1 * s_w): beyond int32 */
    assert_cr_fails(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.1, 3, 0.2, 4, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "bias[1]"));
    bias[1] = 0.0f;
    assert_cr_ok(cr_int8_conv_prepare(&qc, &p, &qw, bias, 0.1, 3, 0.2, 4, 0));
    /* an input of the wrong scale or channel count */
    cr_qparams xp = {0};
    assert_cr_ok(cr_qparams_per_tensor(&xp, CR_DT_U8, 0.1, 4));
    cr_qtensor x = {0}, y = {0};
    const int64_t shape[4] = {1, 4, 5, 5};
    assert_cr_ok(cr_qtensor_alloc(&x, &xp, 4, shape));
    assert_cr_fails(cr_int8_conv_forward(&qc, &x, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "zero point"));
    x.p.zero_point[0] = 3;
    assert_cr_ok(cr_int8_conv_forward(&qc, &x, &y));
    assert_int_equal(y.q.shape[1], 6);
    assert_int_equal(y.q.shape[2], 3);
    assert_true(y.p.scale[0] == 0.2 && y.p.zero_point[0] == 4);
    cr_qtensor_free(&y);
    assert_cr_fails(cr_int8_conv_run(&qc, 1, 2, 2, cr_dtensor_u8(&x.q), cr_dtensor_u8(&x.q)),
                    CR_EINVAL);   /* 2 x 2 is smaller than the 3 x 3 kernel */
    cr_qtensor_free(&x);
    cr_qparams_free(&xp);
    cr_int8_conv_free(&qc);
    cr_qtensor_free(&qw);
}

/* ---- bf16 -------------------------------------------------------------------------------- */

static void bf16_gemm__equals_reference(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(40);
    double worst = 0.0;
    for (int c = 0; c < count; c++) {
        const int64_t M = pick_size(&r, 1, 40), N = pick_size(&r, 1, 120),
                      K = pick_size(&r, 1, 300);
        const int acc = c % 3 == 0;
        uint16_t *A = malloc((size_t)(M * K) * 2), *B = malloc((size_t)(K * N) * 2);
        float *C = malloc((size_t)(M * N) * 4), *R = malloc((size_t)(M * N) * 4);
        assert_non_null(A);
        assert_non_null(B);
        assert_non_null(C);
        assert_non_null(R);
        for (int64_t i = 0; i < M * K; i++) A[i] = cr_f32_to_bf16(cr_rng_uniform_f(&r, -2.0f, 2.0f));
        for (int64_t i = 0; i < K * N; i++) B[i] = cr_f32_to_bf16(cr_rng_uniform_f(&r, -2.0f, 2.0f));
        for (int64_t i = 0; i < M * N; i++) C[i] = R[i] = acc ? cr_rng_uniform_f(&r, -3.0f, 3.0f) : NAN;
        assert_cr_ok(cr_gemm_bf16_ref(M, N, K, A, K, B, N, R, N, acc));
        assert_cr_ok(cr_gemm_bf16(M, N, K, A, K, B, N, C, N, acc));
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                const float got = C[i * N + j], want = R[i * N + j];
                if (memcmp(&got, &want, 4) != 0)
                    fail_msg("cr_gemm_bf16 (%s): M=%lld N=%lld K=%lld: C[%lld][%lld] = %.9g, the "
                             "vdpbf16ps-order reference %.9g (seed %llu)",
                             cr_gemm_bf16_native() ? "vdpbf16ps" : "portable", (long long)M,
                             (long long)N, (long long)K, (long long)i, (long long)j, got, want,
                             (unsigned long long)seed);
                /* and the reference is the product of the bf16 inputs, to f32 rounding */
                double d = acc ? 0.0 : 0.0, mag = 0.0;
                if (!acc) {
                    for (int64_t k = 0; k < K; k++) {
                        const double p = (double)cr_bf16_to_f32(A[i * K + k]) *
                                         cr_bf16_to_f32(B[k * N + j]);
                        d += p;
                        mag += fabs(p);
                    }
                    const double err = fabs(want - d) / (mag > 0 ? mag : 1);
                    worst = err > worst ? err : worst;
                    if (err > (double)K * 6e-8)
                        fail_msg("cr_gemm_bf16_ref: C[%lld][%lld] = %.9g, float64 %.17g: error "
                                 "%.3g of the magnitude > K * 2^-24", (long long)i, (long long)j,
                                 want, d, err);
                }
            }
        free(A);
        free(B);
        free(C);
        free(R);
    }
    printf("bf16 gemm (%s): %d random products equal the reference bit for bit; reference vs "
           "float64 worst %.3g of the magnitude (seed %llu)\n",
           cr_gemm_bf16_native() ? "vdpbf16ps" : "portable", count, worst,
           (unsigned long long)seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(int8_gemm__kernels_equal_reference),
        cmocka_unit_test(int8_gemm__extremes_and_saturation),
        cmocka_unit_test(int8_gemm__bad_arguments),
        cmocka_unit_test(requant__fixed_point_equals_real_rounding),
        cmocka_unit_test(requant__simd_rows_equal_scalar),
        cmocka_unit_test(qconv__fast_equals_reference),
        cmocka_unit_test(qconv__deep_and_layout_paths),
        cmocka_unit_test(qconv__golden_pytorch_onednn),
        cmocka_unit_test(qconv__path_names),
        cmocka_unit_test(qconv__bad_arguments),
        cmocka_unit_test(bf16_gemm__equals_reference),
    };
    return cr_run_tests("ch07 int8", tests);
}
