/* test_ch03.c — suite ch03: every GEMM step equals a float64 product, and every
 * convolution built on the fast GEMM equals chapter 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "compare.h"
#include "conv_gemm.h"
#include "conv_harness.h"
#include "cr_test.h"
#include "direct.h"
#include "gemm.h"
#include "gemm_internal.h"
#include "rng.h"

/* One random GEMM problem: sizes, flags, scalars, leading-dimension padding. */
typedef struct {
    cr_trans ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
} gemm_case;

/* Sizes that matter: 1, primes, just around MR/NR/MC/KC of the kernels. */
static const int64_t special_sizes[] = {1, 2, 3, 5, 6, 7, 11, 12, 13, 16, 17, 31, 32, 33, 47, 97};

/* Draws a size: a special one, or uniform in [1, hi]. */
static int64_t draw_size(cr_rng *r, int64_t hi)
{
    if (cr_rng_int(r, 0, 2) == 0)
        return special_sizes[cr_rng_int(r, 0, (int64_t)(sizeof special_sizes / sizeof *special_sizes) - 1)];
    return cr_rng_int(r, 1, hi);
}

/* Fills a case: small random sizes, or (every few cases) one dimension of 300..700 so
 * the MC/KC blocks and their edges are crossed. */
static gemm_case draw_case(cr_rng *r, int t)
{
    gemm_case c;
    c.ta = (cr_trans)cr_rng_int(r, 0, 1);
    c.tb = (cr_trans)cr_rng_int(r, 0, 1);
    c.M = draw_size(r, 70);
    c.N = draw_size(r, 90);
    c.K = draw_size(r, 80);
    switch (t % 8) {       /* one in eight cases is larger in one dimension */
    case 5: c.M = cr_rng_int(r, 300, 700); break;
    case 6: c.N = cr_rng_int(r, 300, 700); break;
    case 7: c.K = cr_rng_int(r, 300, 700); break;
    default: break;
    }
    const int64_t wa = c.ta == CR_NO_TRANS ? c.K : c.M, wb = c.tb == CR_NO_TRANS ? c.N : c.K;
    c.lda = wa + (cr_rng_int(r, 0, 1) ? cr_rng_int(r, 1, 5) : 0);  /* ld > width half the time */
    c.ldb = wb + (cr_rng_int(r, 0, 1) ? cr_rng_int(r, 1, 5) : 0);
    c.ldc = c.N + (cr_rng_int(r, 0, 1) ? cr_rng_int(r, 1, 5) : 0);
    static const float alphas[] = {1.0f, -0.5f, 2.25f, 1.0f, 0.0f};
    static const float betas[] = {0.0f, 1.0f, -1.5f, 0.0f, 0.5f};
    c.alpha = alphas[cr_rng_int(r, 0, 4)];
    c.beta = betas[cr_rng_int(r, 0, 4)];
    return c;
}

/* Relative L2 bound for fp32 against float64 (GUIDE: 1e-5 ... 1e-4, growing with K). */
static double gemm_tol(int64_t K) { return K <= 64 ? 1e-5 : K <= 1024 ? 3e-5 : 1e-4; }

#define SENTINEL 12345.0f   /* written into C's leading-dimension padding, must survive */

/* Runs fn on case c (operands from r) and checks it against float64; fails with a message
 * naming the step, the case and the seed. */
static void check_gemm_case(cr_gemm_fn fn, const char *name, const gemm_case *c, cr_rng *r,
                            uint64_t seed, int threads)
{
    const int64_t ra = c->ta == CR_NO_TRANS ? c->M : c->K, rb = c->tb == CR_NO_TRANS ? c->K : c->N;
    float *A = malloc((size_t)(ra * c->lda) * sizeof *A);
    float *B = malloc((size_t)(rb * c->ldb) * sizeof *B);
    float *C = malloc((size_t)(c->M * c->ldc) * sizeof *C);
    double *ref = malloc((size_t)(c->M * c->N) * sizeof *ref);
    float *got = malloc((size_t)(c->M * c->N) * sizeof *got);
    float *want = malloc((size_t)(c->M * c->N) * sizeof *want);
    assert_non_null(A); assert_non_null(B); assert_non_null(C);
    assert_non_null(ref); assert_non_null(got); assert_non_null(want);
    for (int64_t i = 0; i < ra * c->lda; i++) A[i] = cr_rng_uniform_f(r, -1, 1);
    for (int64_t i = 0; i < rb * c->ldb; i++) B[i] = cr_rng_uniform_f(r, -1, 1);
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = 0; j < c->ldc; j++)
            C[i * c->ldc + j] = j >= c->N ? SENTINEL
                                : c->beta == 0.0f ? NAN          /* beta 0: must not be read */
                                                  : cr_rng_uniform_f(r, -1, 1);
    /* float64 reference: alpha * op(A) op(B) + beta * C */
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = 0; j < c->N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < c->K; k++) {
                const double a = c->ta == CR_NO_TRANS ? A[i * c->lda + k] : A[k * c->lda + i];
                const double b = c->tb == CR_NO_TRANS ? B[k * c->ldb + j] : B[j * c->ldb + k];
                acc += a * b;
            }
            ref[i * c->N + j] = c->alpha * acc +
                                (c->beta == 0.0f ? 0.0 : (double)c->beta * C[i * c->ldc + j]);
        }
    cr_status st = fn(c->ta, c->tb, c->M, c->N, c->K, c->alpha, A, c->lda, B, c->ldb, c->beta, C,
                      c->ldc);
    for (int64_t i = 0; i < c->M * c->N; i++) {
        got[i] = C[i / c->N * c->ldc + i % c->N];
        want[i] = (float)ref[i];
    }
    int pad_ok = 1;
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = c->N; j < c->ldc; j++) pad_ok &= C[i * c->ldc + j] == SENTINEL;
    const double tol = gemm_tol(c->K);
    cr_cmp cmp = cr_compare(got, want, (size_t)(c->M * c->N), 1e-4, 1e-5);
    if (st != CR_OK || !cr_cmp_ok(&cmp, tol) || !pad_ok) {
        const long long shape[2] = {c->M, c->N};
        if (st == CR_OK && pad_ok)
            cr_print_faults(stderr, got, want, (size_t)(c->M * c->N), shape, 2, tol, tol, 5);
        fail_msg("%s, %d thread(s): C = %g * op(A)%s * op(B)%s + %g * C with M=%lld N=%lld "
                 "K=%lld lda=%lld ldb=%lld ldc=%lld (seed %llu): %s%s%s, relative L2 %.3g "
                 "(bound %.0e)%s",
                 name, threads, (double)c->alpha, c->ta ? "^T" : "", c->tb ? "^T" : "",
                 (double)c->beta, (long long)c->M, (long long)c->N, (long long)c->K,
                 (long long)c->lda, (long long)c->ldb, (long long)c->ldc,
                 (unsigned long long)seed, cr_status_name(st), st != CR_OK ? ": " : "",
                 st != CR_OK ? cr_last_error() : "", cmp.rel_l2, tol,
                 pad_ok ? "" : "; it wrote past N into C's leading-dimension padding");
    }
    free(A); free(B); free(C); free(ref); free(got); free(want);
}

/* count random cases of fn with 1 and with 2 threads. */
static void check_gemm_random(cr_gemm_fn fn, const char *name, int count)
{
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int threads = 1; threads <= 2; threads++) {
        cr_test_set_threads(threads);
        for (int t = 0; t < count; t++) {
            gemm_case c = draw_case(&r, t);
            check_gemm_case(fn, name, &c, &r, seed, threads);
        }
    }
    cr_test_set_threads(1);
    printf("%s: %d random cases x {1, 2} threads equal float64 (seed %llu)\n", name, count,
           (unsigned long long)seed);
}

/* ---- the steps ----------------------------------------------------------------------- */

/* The reference itself equals float64 (it is what the book calls correct). */
static void gemm_steps__reference_random(void **state)
{
    (void)state;
    check_gemm_random(cr_gemm_ref, "cr_gemm_ref", cr_test_count(40));
}

/* Step 1: loop order. */
static void loop_order__random_shapes(void **state)
{
    (void)state;
    check_gemm_random(cr_gemm_loop_ikj, "cr_gemm_loop_ikj", cr_test_count(40));
}

/* Steps 2-4: register blocking, SIMD, cache blocking (no packing). */
static void gemm_steps__regblock_simd_blocked_random(void **state)
{
    (void)state;
    check_gemm_random(cr_gemm_regblock, "cr_gemm_regblock", cr_test_count(40));
    check_gemm_random(cr_gemm_simd, "cr_gemm_simd", cr_test_count(40));
    check_gemm_random(cr_gemm_blocked, "cr_gemm_blocked", cr_test_count(40));
}

/* Step 5: packed panels and edge tiles (the packing routine is the task). */
static void packing__packed_random(void **state)
{
    (void)state;
    check_gemm_random(cr_gemm_packed, "cr_gemm_packed", cr_test_count(60));
}

/* The AVX2 micro-kernel, through step 6 (threads) — skipped on a CPU without AVX2. */
static void micro_kernel__parallel_random(void **state)
{
    (void)state;
    if (!cr_gemm_kernel_supported("avx2")) skip();
    check_gemm_random(cr_gemm_parallel, "cr_gemm_parallel", cr_test_count(60));
}

/* The default with every micro-kernel this CPU runs, the portable fallback included. */
static void gemm_default__every_kernel_random(void **state)
{
    (void)state;
    static const char *const kernels[] = {"portable", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (!cr_gemm_kernel_supported(kernels[i])) {
            printf("cr_sgemm: kernel %s not supported by this CPU, not tested\n", kernels[i]);
            continue;
        }
        assert_cr_ok(cr_gemm_set_kernel(kernels[i]));
        assert_string_equal(cr_gemm_kernel_name(), kernels[i]);
        char name[64];
        snprintf(name, sizeof name, "cr_sgemm (%s kernel)", kernels[i]);
        check_gemm_random(cr_sgemm, name, cr_test_count(60));
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
}

/* cr_pack_strided that also counts the columns of B it packs (a spy: the in-place path
 * must leave only edge panels to it). */
typedef struct {
    cr_strided s;
    int64_t cols;
} counting_b;

static void pack_counting(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                          int panel, float scale, float *dst)
{
    counting_b *c = (counting_b *)ctx;
    __atomic_fetch_add(&c->cols, rows, __ATOMIC_RELAXED);
    cr_pack_strided(&c->s, r0, rows, k0, kc, panel, scale, dst);
}

/* B read in place (full panels of a row-major B, M within one MC block) gives the same
 * bits as B packed, for every kernel that can, on 1 and 2 threads, with tails in every
 * dimension, several depth blocks, ldb > N and beta 0 or not; and it packs only the edge
 * panel of each block (at most NR - 1 columns per block and depth block). */
static void gemm_default__b_in_place_same_bits(void **state)
{
    (void)state;
    const cr_gemm_kernel *kernels[] = {&cr_kernel_avx512_small_m, &cr_kernel_avx512};
    if (!cr_gemm_kernel_supported("avx512")) skip();
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int t = 0; t < cr_test_count(24); t++) {
        const cr_gemm_kernel *kd = kernels[t % 2];
        assert_non_null(kd->kernel_ldb);
        const int64_t M = cr_rng_int(&r, 1, kd->mc), N = cr_rng_int(&r, 1, 300);
        const int64_t K = cr_rng_int(&r, 1, t % 3 == 0 ? 700 : 80), ldb = N + cr_rng_int(&r, 0, 9);
        const float alpha = cr_rng_uniform_f(&r, -2, 2), beta = t % 2 ? 0.0f : 1.25f;
        float *A = malloc((size_t)(M * K) * sizeof *A), *B = malloc((size_t)(K * ldb) * sizeof *B);
        float *C0 = malloc((size_t)(M * N) * sizeof *C0), *C1 = malloc((size_t)(M * N) * sizeof *C1);
        float *C2 = malloc((size_t)(M * N) * sizeof *C2);
        assert_non_null(A); assert_non_null(B); assert_non_null(C0); assert_non_null(C1);
        assert_non_null(C2);
        for (int64_t i = 0; i < M * K; i++) A[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < K * ldb; i++) B[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < M * N; i++) C0[i] = C1[i] = C2[i] = cr_rng_uniform_f(&r, -1, 1);
        const cr_strided a = {A, K, 1};
        counting_b packed = {{B, 1, ldb}, 0}, spy = {{B, 1, ldb}, 0};
        const cr_gemm_operand oa = {cr_pack_strided, &a, NULL, 0};
        const cr_gemm_operand ob = {pack_counting, &packed, NULL, 0};
        const cr_gemm_operand ib = {pack_counting, &spy, B, ldb};
        assert_cr_ok(cr_gemm_engine(kd, M, N, K, &oa, &ob, alpha, beta, C0, N, 1));
        assert_cr_ok(cr_gemm_engine(kd, M, N, K, &oa, &ib, alpha, beta, C1, N, 1));
        cr_test_set_threads(2);
        assert_cr_ok(cr_gemm_engine(kd, M, N, K, &oa, &ib, alpha, beta, C2, N, 0));
        cr_test_set_threads(1);
        if (memcmp(C0, C1, (size_t)(M * N) * sizeof *C0) || memcmp(C0, C2, (size_t)(M * N) * sizeof *C0))
            fail_msg("kernel %s, M=%lld N=%lld K=%lld ldb=%lld: B in place differs from B "
                     "packed (seed %llu)", kd->name, (long long)M, (long long)N, (long long)K,
                     (long long)ldb, (unsigned long long)seed);
        const int64_t kblocks = (K + kd->kc - 1) / kd->kc, nblocks = (N + kd->nc - 1) / kd->nc + 2;
        if (packed.cols < N || spy.cols > 2 * (kd->nr - 1) * kblocks * nblocks)
            fail_msg("kernel %s, M=%lld N=%lld K=%lld: %lld columns of B packed with B in "
                     "place (%lld without): the in-place path did not run (seed %llu)", kd->name,
                     (long long)M, (long long)N, (long long)K, (long long)spy.cols,
                     (long long)packed.cols, (unsigned long long)seed);
        free(A); free(B); free(C0); free(C1); free(C2);
    }
}

/* Blocks are crossed in every dimension at once, including N beyond NC (4096). */
static void gemm_default__beyond_every_block(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const gemm_case cases[] = {
        {CR_NO_TRANS, CR_NO_TRANS, 7, 4133, 21, 21, 4133, 4135, 1.0f, 0.0f},
        {CR_TRANS, CR_TRANS, 5, 4099, 3, 5, 3, 4099, -1.0f, 1.0f},
        {CR_NO_TRANS, CR_TRANS, 503, 211, 389, 389, 390, 213, 0.5f, 0.5f},
        {CR_TRANS, CR_NO_TRANS, 257, 293, 601, 258, 293, 293, 1.0f, 0.0f},
    };
    for (int threads = 1; threads <= 2; threads++) {
        cr_test_set_threads(threads);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            check_gemm_case(cr_sgemm, "cr_sgemm", &cases[i], &r, seed, threads);
            check_gemm_case(cr_gemm_blocked, "cr_gemm_blocked", &cases[i], &r, seed, threads);
        }
    }
    cr_test_set_threads(1);
}

/* Bad arguments are refused with a message; empty products and alpha = 0 follow BLAS. */
static void gemm_default__arguments_and_edge_cases(void **state)
{
    (void)state;
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4] = {NAN, NAN, NAN, NAN};
    int count;
    const cr_gemm_step *steps = cr_gemm_steps(&count);
    assert_true(count >= 8);
    assert_string_equal(steps[count - 1].name, "default");
    for (int i = 0; i < count; i++) {
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 1, A, 2, B, 2, 0, C, 2),
                        CR_EINVAL);   /* lda 2 < K 3 */
        assert_non_null(strstr(cr_last_error(), "lda"));
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, -1, 2, 3, 1, A, 3, B, 2, 0, C, 2),
                        CR_EINVAL);
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 1, A, 3, B, 2, 0, C, 1),
                        CR_EINVAL);   /* ldc 1 < N 2 */
        /* K = 0, beta = 0: C becomes 0 even though it held NaN */
        for (int j = 0; j < 4; j++) C[j] = NAN;
        assert_cr_ok(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 0, 1, A, 1, B, 2, 0, C, 2));
        for (int j = 0; j < 4; j++) assert_true(C[j] == 0.0f);
        /* alpha = 0, beta = 2: C doubles, A and B do not matter */
        for (int j = 0; j < 4; j++) C[j] = (float)j;
        assert_cr_ok(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 0, A, 3, B, 2, 2, C, 2));
        for (int j = 0; j < 4; j++) assert_true(C[j] == 2.0f * (float)j);
        /* M = 0: nothing to do, C untouched */
        assert_cr_ok(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 0, 2, 3, 1, A, 3, B, 2, 0, C, 2));
        assert_true(C[1] == 2.0f);
    }
    assert_cr_fails(cr_gemm_set_kernel("sse9"), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "sse9"));
    assert_cr_ok(cr_gemm_set_kernel("auto"));
}

/* ---- each task on its own: packing and the micro-kernel without the engine ----------- */

/* Clears the thread's last error message, so that a stub's cr_todo can be told apart. */
static void clear_last_error(void) { (void)cr_fail(CR_OK, "%s", ""); }

/* Fails with the stub's own message when a void function just called was a coursework
 * stub (it records CR_ETODO through cr_todo instead of returning it). */
static void fail_if_stub(void)
{
    if (strstr(cr_last_error(), "coursework stub")) fail_msg("%s", cr_last_error());
}

/* The layout cr_pack_strided promises (gemm_internal.h), one element at a time: panel q,
 * depth k, lane i of dst holds scale * (row r0 + q*panel + i, depth k0 + k) of the
 * operand, or 0 past its last row. */
static float expected_packed(const cr_strided *s, int64_t r0, int64_t rows, int64_t k0,
                             int64_t kc, int panel, float scale, int64_t at)
{
    const int64_t q = at / (panel * kc), k = at / panel % kc, i = at % panel;
    const int64_t row = q * panel + i;
    return row < rows ? scale * s->p[(r0 + row) * s->rs + (k0 + k) * s->cs] : 0.0f;
}

/* Packing on its own: random blocks of operands in every orientation (rows side by side,
 * rows contiguous in k, general strides), panel widths of every kernel, scales, offsets;
 * every packed float equals the layout's, and nothing past the panels is written. */
static void packing__panels_match_layout(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    static const int panels[] = {4, 6, 8, 16, 32};
    static const float scales[] = {1.0f, -0.5f, 2.25f};
    for (int t = 0; t < cr_test_count(400); t++) {
        const int panel = panels[cr_rng_int(&r, 0, 4)];
        const float scale = scales[cr_rng_int(&r, 0, 2)];
        const int64_t rows = cr_rng_int(&r, 1, 3 * panel + 1), kc = cr_rng_int(&r, 1, 40);
        const int64_t r0 = cr_rng_int(&r, 0, 5), k0 = cr_rng_int(&r, 0, 5);
        const int64_t R = r0 + rows, Kd = k0 + kc;   /* the operand: R rows, depth Kd */
        const int orient = cr_rng_int(&r, 0, 2);
        int64_t rs, cs, n;
        if (orient == 0) { rs = 1; cs = R + cr_rng_int(&r, 0, 3); n = Kd * cs; }
        else if (orient == 1) { cs = 1; rs = Kd + cr_rng_int(&r, 0, 3); n = R * rs; }
        else { rs = 2; cs = 2 * R + 1; n = Kd * cs; }          /* neither stride is 1 */
        float *src = malloc((size_t)n * sizeof *src);
        const int64_t np = (rows + panel - 1) / panel, len = np * panel * kc;
        float *dst = malloc((size_t)(len + 8) * sizeof *dst);
        assert_non_null(src); assert_non_null(dst);
        for (int64_t i = 0; i < n; i++) src[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < len; i++) dst[i] = NAN;
        for (int64_t i = len; i < len + 8; i++) dst[i] = SENTINEL;
        const cr_strided sv = {src, rs, cs};
        clear_last_error();
        cr_pack_strided(&sv, r0, rows, k0, kc, panel, scale, dst);
        fail_if_stub();
        for (int64_t at = 0; at < len; at++) {
            const float want = expected_packed(&sv, r0, rows, k0, kc, panel, scale, at);
            if (!(dst[at] == want))
                fail_msg("cr_pack_strided (seed %llu, case %d): rows [%lld, %lld) x depth "
                         "[%lld, %lld), rs=%lld cs=%lld, panel %d, scale %g: dst[%lld] (panel "
                         "%lld, k %lld, lane %lld) is %.8g, expected %.8g%s",
                         (unsigned long long)seed, t, (long long)r0, (long long)(r0 + rows),
                         (long long)k0, (long long)(k0 + kc), (long long)rs, (long long)cs,
                         panel, (double)scale, (long long)at, (long long)(at / (panel * kc)),
                         (long long)(at / panel % kc), (long long)(at % panel), (double)dst[at],
                         (double)want,
                         (at % panel) + at / (panel * kc) * panel >= rows
                             ? " (a lane past the last row: zero padding)" : "");
        }
        for (int64_t i = len; i < len + 8; i++)
            if (dst[i] != SENTINEL)
                fail_msg("cr_pack_strided (seed %llu, case %d): wrote dst[%lld], past the %lld "
                         "floats of its %lld panel(s)", (unsigned long long)seed, t,
                         (long long)i, (long long)len, (long long)np);
        free(src); free(dst);
    }
    printf("cr_pack_strided: %d random blocks match the panel layout (seed %llu)\n",
           cr_test_count(400), (unsigned long long)seed);
}

/* The portable engine (its own micro-kernel, which is given) over cr_pack_strided: the
 * packed panels give the right product, whatever the AVX2 micro-kernel does. */
static void packing__engine_with_portable_kernel(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int t = 0; t < cr_test_count(40); t++) {
        const int64_t M = cr_rng_int(&r, 1, 150), N = cr_rng_int(&r, 1, 150);
        const int64_t K = cr_rng_int(&r, 1, t % 4 == 0 ? 600 : 60);   /* crosses KC */
        float *A = malloc((size_t)(M * K) * sizeof *A), *B = malloc((size_t)(K * N) * sizeof *B);
        float *C = malloc((size_t)(M * N) * sizeof *C);
        float *want = malloc((size_t)(M * N) * sizeof *want);
        assert_non_null(A); assert_non_null(B); assert_non_null(C); assert_non_null(want);
        for (int64_t i = 0; i < M * K; i++) A[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < K * N; i++) B[i] = cr_rng_uniform_f(&r, -1, 1);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++) acc += (double)A[i * K + k] * B[k * N + j];
                want[i * N + j] = (float)(-0.5 * acc);
                C[i * N + j] = NAN;                      /* beta 0: not read */
            }
        const cr_strided a = {A, K, 1}, b = {B, 1, N};   /* B as its transpose: N x K */
        const cr_gemm_operand oa = {cr_pack_strided, &a, NULL, 0}, ob = {cr_pack_strided, &b, NULL, 0};
        assert_cr_ok(cr_gemm_engine(&cr_kernel_portable, M, N, K, &oa, &ob, -0.5f, 0.0f, C, N, 1));
        cr_cmp cmp = cr_compare(C, want, (size_t)(M * N), 1e-4, 1e-5);
        if (!cr_cmp_ok(&cmp, gemm_tol(K)))
            fail_msg("engine with the portable kernel over cr_pack_strided (seed %llu): C = "
                     "-0.5 * A * B with M=%lld N=%lld K=%lld: relative L2 %.3g (bound %.0e)",
                     (unsigned long long)seed, (long long)M, (long long)N, (long long)K,
                     cmp.rel_l2, gemm_tol(K));
        free(A); free(B); free(C); free(want);
    }
}

/* The AVX2 micro-kernel on panels packed here by hand (no packing routine involved):
 * C (6 x 16, ldc) = beta * C + Ap * Bp for depths around the unroll and the KC block,
 * beta 0 (C not read: it holds NaN), 1 and another; C's padding columns untouched. */
static void micro_kernel__hand_packed_panels(void **state)
{
    (void)state;
    if (!cr_gemm_kernel_supported("avx2")) skip();
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const cr_gemm_kernel *kd = &cr_kernel_avx2;
    assert_int_equal(kd->mr, 6);
    assert_int_equal(kd->nr, 16);
    static const int64_t depths[] = {1, 2, 7, 8, 64, 255, 256, 301};
    static const float betas[] = {0.0f, 1.0f, -1.5f};
    for (size_t d = 0; d < sizeof depths / sizeof *depths; d++)
        for (int bi = 0; bi < 3; bi++) {
            const int64_t kc = depths[d], ldc = bi == 2 ? 21 : 16;
            const float beta = betas[bi];
            float *Ap = malloc((size_t)(6 * kc) * sizeof *Ap);
            float *Bp = malloc((size_t)(16 * kc) * sizeof *Bp);
            float C[6 * 21], C0[6 * 21];
            assert_non_null(Ap); assert_non_null(Bp);
            for (int64_t i = 0; i < 6 * kc; i++) Ap[i] = cr_rng_uniform_f(&r, -1, 1);
            for (int64_t i = 0; i < 16 * kc; i++) Bp[i] = cr_rng_uniform_f(&r, -1, 1);
            for (int64_t i = 0; i < 6 * ldc; i++)
                C0[i] = i % ldc >= 16 ? SENTINEL : beta == 0.0f ? NAN : cr_rng_uniform_f(&r, -1, 1);
            memcpy(C, C0, sizeof C);
            clear_last_error();
            kd->kernel(kc, Ap, Bp, C, ldc, beta);
            fail_if_stub();
            for (int i = 0; i < 6; i++)
                for (int64_t j = 0; j < ldc; j++) {
                    const float got = C[i * ldc + j];
                    if (j >= 16) {
                        if (got != SENTINEL)
                            fail_msg("micro-kernel (kc %lld, beta %g, ldc %lld): wrote C[%d][%lld], "
                                     "past the tile's 16 columns", (long long)kc, (double)beta,
                                     (long long)ldc, i, (long long)j);
                        continue;
                    }
                    double acc = 0, mag = 0;   /* float64, and the size of the terms */
                    for (int64_t k = 0; k < kc; k++) {
                        acc += (double)Ap[k * 6 + i] * Bp[k * 16 + j];
                        mag += fabs((double)Ap[k * 6 + i] * Bp[k * 16 + j]);
                    }
                    if (beta != 0.0f) {
                        acc += (double)beta * C0[i * ldc + j];
                        mag += fabs((double)beta * C0[i * ldc + j]);
                    }
                    if (!(fabs(got - acc) <= 1e-6 * mag + 1e-30))
                        fail_msg("micro-kernel on hand-packed panels (seed %llu): kc %lld, beta "
                                 "%g, ldc %lld: C[%d][%lld] is %.8g, expected %.8g (Ap is kc x 6, "
                                 "Bp kc x 16, both k-major)", (unsigned long long)seed,
                                 (long long)kc, (double)beta, (long long)ldc, i, (long long)j,
                                 (double)got, acc);
                }
            free(Ap); free(Bp);
        }
}

/* The speed floor's yardstick: the 6 x 16 tile as the textbook loops, one dot product per
 * element, not vectorised (what the micro-kernel task must beat). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void scalar_tile_6x16(int64_t kc, const float *Ap, const float *Bp, float *C,
                             int64_t ldc, float beta)
{
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 16; j++) {
            float acc = 0.0f;
#if defined(__clang__)
#pragma clang loop vectorize(disable)
#endif
            for (int64_t k = 0; k < kc; k++) acc += Ap[k * 6 + i] * Bp[k * 16 + j];
            C[i * ldc + j] = acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
        }
}

/* NULL when this build and run can measure speed; else why not (the speed floors are
 * checked in optimised builds only: sanitizers and valgrind change what is fast). */
static const char *speed_unmeasurable(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return "built with a sanitizer";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
    return "built with a sanitizer";
#endif
#endif
    const char *scale = getenv("CR_TEST_SCALE");
    if (scale && atof(scale) < 1.0) return "CR_TEST_SCALE below 1 (a sanitizer or valgrind run)";
    return NULL;
}

/* Seconds for `calls` runs of fn on one tile (kc deep, accumulating into C). */
static double time_tile(cr_ukernel_fn fn, int calls, int64_t kc, const float *Ap,
                        const float *Bp, float *C)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int c = 0; c < calls; c++) fn(kc, Ap, Bp, C, 16, 1.0f);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The micro-kernel's task is speed: on one L1-resident tile (kc 256) it must run at least
 * 3x as fast as the scalar loops above, measured in the same run as the median of 7
 * alternating repeats (the honest kernel is some 10x faster or more, so a loaded machine
 * does not fail it; a scalar loop in its place does). */
static void micro_kernel__faster_than_scalar(void **state)
{
    (void)state;
    if (!cr_gemm_kernel_supported("avx2")) skip();
    if (speed_unmeasurable()) {
        printf("micro-kernel speed not measured: %s\n", speed_unmeasurable());
        return;
    }
    enum { KC = 256, REPEATS = 7 };
    const double floor_ratio = 3.0;
    cr_rng r;
    cr_rng_seed(&r, 3);
    float *Ap = malloc(6 * KC * sizeof *Ap), *Bp = malloc(16 * KC * sizeof *Bp);
    float C[6 * 16] = {0};
    assert_non_null(Ap); assert_non_null(Bp);
    for (int i = 0; i < 6 * KC; i++) Ap[i] = cr_rng_uniform_f(&r, -1e-3f, 1e-3f);
    for (int i = 0; i < 16 * KC; i++) Bp[i] = cr_rng_uniform_f(&r, -1e-3f, 1e-3f);
    /* calls per repeat: about 5 ms of the scalar loops */
    int calls = 1;
    while (time_tile(scalar_tile_6x16, calls, KC, Ap, Bp, C) < 5e-3 && calls < (1 << 20))
        calls *= 2;
    double t_kernel[REPEATS], t_scalar[REPEATS];
    (void)time_tile(cr_kernel_avx2.kernel, calls, KC, Ap, Bp, C);   /* warm up */
    for (int i = 0; i < REPEATS; i++) {
        t_kernel[i] = time_tile(cr_kernel_avx2.kernel, calls, KC, Ap, Bp, C);
        t_scalar[i] = time_tile(scalar_tile_6x16, calls, KC, Ap, Bp, C);
    }
    qsort(t_kernel, REPEATS, sizeof *t_kernel, cmp_double);
    qsort(t_scalar, REPEATS, sizeof *t_scalar, cmp_double);
    const double tk = t_kernel[REPEATS / 2], ts = t_scalar[REPEATS / 2];
    const double ratio = tk > 0 ? ts / tk : 1e9;
    printf("micro-kernel: %.3g s, scalar loops %.3g s for %d tiles of depth %d: %.1fx "
           "(floor %.0fx)\n", tk, ts, calls, KC, ratio, floor_ratio);
    free(Ap); free(Bp);
    if (ratio < floor_ratio)
        fail_msg("micro-kernel too slow: %.1fx the speed of the scalar loops (median of %d "
                 "repeats of %d tiles of depth %d; at least %.0fx expected: keep the tile in "
                 "ymm registers and use FMA)", ratio, REPEATS, calls, KC, floor_ratio);
}

/* Seconds for one product C = A * B (n x n, no transposes) by fn. */
static double time_gemm(cr_gemm_fn fn, int64_t n, const float *A, const float *B, float *C)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_cr_ok(fn(CR_NO_TRANS, CR_NO_TRANS, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

/* Loop order is a task about speed too: i-k-j streams rows of B and C, so on a product
 * of 256 x 256 matrices it must run at least 1.5x as fast as the reference i-j-k loops
 * (median of 5 alternating repeats in the same run; it is several times faster). */
static void loop_order__faster_than_reference(void **state)
{
    (void)state;
    if (speed_unmeasurable()) {
        printf("loop order speed not measured: %s\n", speed_unmeasurable());
        return;
    }
    enum { N = 256, REPEATS = 5 };
    const double floor_ratio = 1.5;
    cr_rng r;
    cr_rng_seed(&r, 4);
    float *A = malloc(N * N * sizeof *A), *B = malloc(N * N * sizeof *B);
    float *C = malloc(N * N * sizeof *C);
    assert_non_null(A); assert_non_null(B); assert_non_null(C);
    for (int i = 0; i < N * N; i++) {
        A[i] = cr_rng_uniform_f(&r, -1, 1);
        B[i] = cr_rng_uniform_f(&r, -1, 1);
    }
    double t_ikj[REPEATS], t_ref[REPEATS];
    (void)time_gemm(cr_gemm_loop_ikj, N, A, B, C);   /* warm up */
    for (int i = 0; i < REPEATS; i++) {
        t_ikj[i] = time_gemm(cr_gemm_loop_ikj, N, A, B, C);
        t_ref[i] = time_gemm(cr_gemm_ref, N, A, B, C);
    }
    qsort(t_ikj, REPEATS, sizeof *t_ikj, cmp_double);
    qsort(t_ref, REPEATS, sizeof *t_ref, cmp_double);
    const double ti = t_ikj[REPEATS / 2], tr = t_ref[REPEATS / 2];
    const double ratio = ti > 0 ? tr / ti : 1e9;
    printf("loop order i-k-j: %.3g s, reference i-j-k %.3g s for %dx%d: %.1fx (floor %.1fx)\n",
           ti, tr, N, N, ratio, floor_ratio);
    free(A); free(B); free(C);
    if (ratio < floor_ratio)
        fail_msg("cr_gemm_loop_ikj too slow: %.1fx the speed of the reference i-j-k loops on "
                 "%dx%d (median of %d repeats; at least %.1fx expected: the innermost loop "
                 "should run along a row of B and of C)", ratio, N, N, REPEATS, floor_ratio);
}

/* ---- convolution -------------------------------------------------------------------- */

/* Relative L2 bound for the convolutions: fp32, K = Cin_g*kh*kw up to a few hundred here. */
#define CONV_TOL 3e-5

/* im2col + the fast GEMM equals chapter 1 on random configurations, 1 and 2 threads. */
static void conv_gemm__equals_direct_random(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 2; threads++) {
        cr_test_set_threads(threads);
        cr_check_conv_random(cr_conv2d_direct, cr_conv2d_gemm, "cr_conv2d_gemm",
                             cr_test_count(1000) / 2 + 1, CONV_TOL);
    }
    cr_test_set_threads(1);
}

/* ... and PyTorch's golden cases. */
static void conv_gemm__golden_cases(void **state)
{
    (void)state;
    cr_check_conv_golden(cr_conv2d_gemm, "cr_conv2d_gemm", CONV_TOL, 40);
}

/* The fused path (B packed straight from the image) equals chapter 1. */
static void conv_fused__equals_direct_random(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 2; threads++) {
        cr_test_set_threads(threads);
        cr_check_conv_random(cr_conv2d_direct, cr_conv2d_fused, "cr_conv2d_fused",
                             cr_test_count(1000) / 2 + 1, CONV_TOL);
    }
    cr_test_set_threads(1);
    cr_check_conv_golden(cr_conv2d_fused, "cr_conv2d_fused", CONV_TOL, 40);
}

/* 1x1 layers through the fused path, where the patch matrix is x itself only with
 * stride 1 and no padding (then B is read in place): a plain layer wide enough for
 * several panels and an edge; and layers whose output has as many pixels as their input
 * without being plain (stride 2 with bottom padding, stride 1 with padding on one side
 * only), which must not take that path. Each equals chapter 1, with 1 and 2 threads. */
static void conv_fused__1x1_in_place_only_when_plain(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    static const int64_t cases[][8] = {  /* cin, cout, h, w, stride h, stride w, pad bottom, pad right */
        {37, 40, 9, 70, 1, 1, 0, 0}, {64, 24, 16, 6, 2, 1, 15, 0}, {5, 9, 2, 40, 1, 2, 0, 39},
        {16, 8, 7, 7, 1, 1, 0, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int64_t *v = cases[c];
        cr_conv_params p = cr_conv_params_default(v[0], v[1], 1);
        p.stride_h = v[4], p.stride_w = v[5], p.pad_bottom = v[6], p.pad_right = v[7];
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, 2, v[2], v[3]));
        cr_tensor x, wt, b, y_ref, y;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y_ref);
        assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
        const cr_tensor *bp = p.bias ? &b : NULL;
        assert_cr_ok(cr_conv2d_direct(&p, &x, &wt, bp, &y_ref));
        for (int threads = 1; threads <= 2; threads++) {
            cr_tensor_poison(&y);
            cr_test_set_threads(threads);
            const cr_status st = cr_conv2d_fused(&p, &x, &wt, bp, &y);
            cr_test_set_threads(1);
            const cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-4, 1e-5);
            if (st != CR_OK || !cr_cmp_ok(&cmp, CONV_TOL))
                fail_msg("cr_conv2d_fused, 1x1 case %zu (%lld -> %lld, %lld x %lld, stride "
                         "%lld x %lld, bottom/right padding %lld/%lld), %d threads: relative L2 "
                         "%.3g (seed %llu)", c, (long long)v[0], (long long)v[1], (long long)v[2],
                         (long long)v[3], (long long)v[4], (long long)v[5], (long long)v[6],
                         (long long)v[7], threads, cmp.rel_l2, (unsigned long long)seed);
        }
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b);
        cr_tensor_free(&y_ref); cr_tensor_free(&y);
    }
}

/* The direct grouped kernel equals chapter 1 on random configurations (every option:
 * its copies resolve padding modes, strides and dilation), with each direct kernel this
 * CPU runs (the GEMM kernel chooses it: AVX-512 with "avx512", else AVX2), in each input
 * layout (one padded copy split by column phases, shifted copies per kernel column). */
static void conv_grouped__equals_direct_random(void **state)
{
    (void)state;
    static const char *const kernels[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        if (!cr_gemm_kernel_supported(kernels[i])) {
            printf("cr_conv2d_grouped: kernel %s not supported by this CPU, not tested\n",
                   kernels[i]);
            continue;
        }
        assert_cr_ok(cr_gemm_set_kernel(kernels[i]));
        static const char *const layouts[] = {"phases", "shifted"};
        for (int layout = 0; layout < 2; layout++) {
            cr_grouped_force_layout(layout);
            char name[96];
            snprintf(name, sizeof name, "cr_conv2d_grouped (%s kernel, %s layout)", kernels[i],
                     layouts[layout]);
            for (int threads = 1; threads <= 2; threads++) {
                cr_test_set_threads(threads);
                cr_check_conv_random(cr_conv2d_direct, cr_conv2d_grouped, name,
                                     cr_test_count(1000) / 4 + 1, CONV_TOL);
            }
            cr_test_set_threads(1);
            cr_check_conv_golden(cr_conv2d_grouped, name, CONV_TOL, 40);
        }
        cr_grouped_force_layout(-1);
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
}

/* A random strided grouped layer: 2-8 groups of 1-9 input and 1-17 output channels
 * (across the kernels' channel blocks), stride 2-3, rows of 1-30 outputs (across the
 * vectors and column blocks), every padding mode, dilation 1-2, batch 1-3. */
static void random_strided_grouped(cr_rng *r, cr_conv_params *p, int64_t *n, int64_t *h,
                                   int64_t *w)
{
    static const int64_t couts[] = {1, 3, 4, 5, 8, 9, 16, 17};
    for (;;) {
        const int64_t groups = cr_rng_int(r, 2, 8);
        *p = cr_conv_params_default(groups * cr_rng_int(r, 1, 9), groups * couts[cr_rng_int(r, 0, 7)],
                                    cr_rng_int(r, 1, 5));
        p->groups = groups;
        p->kernel_w = cr_rng_int(r, 0, 2) ? p->kernel_h : cr_rng_int(r, 1, 5);
        p->stride_h = cr_rng_int(r, 2, 3);
        p->stride_w = cr_rng_int(r, 0, 2) ? p->stride_h : cr_rng_int(r, 1, 3);
        p->dilation_h = cr_rng_int(r, 1, 2);
        p->dilation_w = cr_rng_int(r, 1, 2);
        p->bias = cr_rng_int(r, 0, 1);
        p->pad_mode = (cr_pad_mode)cr_rng_int(r, 0, 3);
        p->pad_top = cr_rng_int(r, 0, 3);
        p->pad_bottom = cr_rng_int(r, 0, 3);
        p->pad_left = cr_rng_int(r, 0, 3);
        p->pad_right = cr_rng_int(r, 0, 3);
        *n = cr_rng_int(r, 1, 3);
        *h = cr_rng_int(r, 3, 30);
        *w = cr_rng_int(r, 3, 61);
        cr_conv_shape s;
        if (cr_conv_shape_init(&s, p, *n, *h, *w) == CR_OK) return;
    }
}

/* Strided grouped layers, whose output rows the direct kernel's column blocks span
 * (flattened over the copies), equal chapter 1 with each direct kernel this CPU runs,
 * on 1, 2 and 3 threads, in each input layout (phases, shifted, the cost model's). */
static void conv_grouped__strided_rows_random(void **state)
{
    (void)state;
    static const char *const kernels[] = {"avx2", "avx512"};
    const uint64_t seed = cr_seed_from_env();
    for (int k = 0; k < 2; k++) {
        if (!cr_gemm_kernel_supported(kernels[k])) {
            printf("strided grouped: kernel %s not supported by this CPU, not tested\n",
                   kernels[k]);
            continue;
        }
        assert_cr_ok(cr_gemm_set_kernel(kernels[k]));
        cr_rng r;
        cr_rng_seed(&r, seed + (uint64_t)k);
        const int count = cr_test_count(150);
        for (int i = 0; i < count; i++) {
            cr_conv_params p;
            int64_t n, h, w;
            random_strided_grouped(&r, &p, &n, &h, &w);
            cr_conv_shape s;
            assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
            cr_tensor x, wt, b, y_ref, y;
            cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y_ref);
            assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
            cr_tensor_poison(&y);
            const cr_tensor *bp = p.bias ? &b : NULL;
            assert_cr_ok(cr_conv2d_direct(&p, &x, &wt, bp, &y_ref));
            cr_test_set_threads(1 + i % 3);
            cr_grouped_force_layout(i / 3 % 3 - 1);   /* -1 (the model's), 0, 1 */
            const cr_status st = cr_conv2d_grouped(&p, &x, &wt, bp, &y);
            cr_grouped_force_layout(-1);
            cr_test_set_threads(1);
            const cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-4, 1e-5);
            if (st != CR_OK || !cr_cmp_ok(&cmp, CONV_TOL)) {
                char desc[512];
                cr_conv_params_str(&p, desc, sizeof desc);
                fail_msg("strided grouped (%s kernel, %d threads, layout %d) differs on case %d "
                         "(CR_SEED=%llu): input %lld x %lld x %lld x %lld, %s: relative L2 %.3g",
                         kernels[k], 1 + i % 3, i / 3 % 3 - 1, i, (unsigned long long)seed, (long long)n,
                         (long long)p.in_channels, (long long)h, (long long)w, desc, cmp.rel_l2);
            }
            cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b);
            cr_tensor_free(&y_ref); cr_tensor_free(&y);
        }
        printf("cr_conv2d_grouped (%s kernel): %d strided grouped layers equal the reference "
               "(seed %llu)\n", kernels[k], count, (unsigned long long)seed);
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
}

/* The direct kernel in passes over slices of the taps (the sums kept in y between them)
 * gives the bits of one pass, with each direct kernel this CPU runs, in each layout, on 1
 * and 2 threads: dense layers (kernel 1-7, 1-24 input and 1-20 output channels, across
 * the channel blocks) and strided grouped ones, the passes of 1, 2, a channel's taps and
 * a random count; and with AVX-512, a 7x7 layer of 64 channels at 56 x 56 takes passes
 * where a 3x3 one does not (chapter 3's measured window rule). */
static void conv_grouped__tap_passes_same_bits(void **state)
{
    (void)state;
    static const char *const kernels[] = {"avx2", "avx512"};
    const uint64_t seed = cr_seed_from_env();
    for (int k = 0; k < 2; k++) {
        if (!cr_gemm_kernel_supported(kernels[k])) {
            printf("tap passes: kernel %s not supported by this CPU, not tested\n", kernels[k]);
            continue;
        }
        assert_cr_ok(cr_gemm_set_kernel(kernels[k]));
        cr_rng r;
        cr_rng_seed(&r, seed + 17 + (uint64_t)k);
        const int count = cr_test_count(120);
        for (int i = 0; i < count; i++) {
            cr_conv_params p;
            int64_t n, h, w;
            if (i % 2) {
                random_strided_grouped(&r, &p, &n, &h, &w);
            } else {
                for (;;) {
                    p = cr_conv_params_default(cr_rng_int(&r, 1, 24), cr_rng_int(&r, 1, 20),
                                               cr_rng_int(&r, 1, 7));
                    p.kernel_w = cr_rng_int(&r, 1, 7);
                    p.bias = cr_rng_int(&r, 0, 1);
                    p.pad_mode = (cr_pad_mode)cr_rng_int(&r, 0, 3);
                    cr_conv_set_padding(&p, cr_rng_int(&r, 0, 3), cr_rng_int(&r, 0, 3));
                    n = cr_rng_int(&r, 1, 2);
                    h = cr_rng_int(&r, 3, 30);
                    w = cr_rng_int(&r, 3, 61);
                    cr_conv_shape t;
                    if (cr_conv_shape_init(&t, &p, n, h, w) == CR_OK) break;
                }
            }
            cr_conv_shape s;
            assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
            cr_tensor x, wt, b, y_ref, y;
            cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y_ref);
            assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
            const cr_tensor *bp = p.bias ? &b : NULL;
            const int64_t kk = p.kernel_h * p.kernel_w, taps = s.cin_g * kk;
            const int64_t passes[] = {1, 2, kk, cr_rng_int(&r, 1, taps)};
            cr_test_set_threads(1 + i % 2);
            cr_grouped_force_layout(i / 2 % 2);
            cr_grouped_force_tap_pass(INT64_MAX);   /* one pass */
            assert_int_equal(cr_grouped_tap_pass(&s), taps);
            assert_cr_ok(cr_conv2d_grouped(&p, &x, &wt, bp, &y_ref));
            for (int j = 0; j < 4; j++) {
                cr_grouped_force_tap_pass(passes[j]);
                cr_tensor_poison(&y);
                assert_cr_ok(cr_conv2d_grouped(&p, &x, &wt, bp, &y));
                if (memcmp(y.data, y_ref.data, y.numel * sizeof(float)) != 0) {
                    char desc[512];
                    cr_conv_params_str(&p, desc, sizeof desc);
                    fail_msg("tap passes (%s kernel, %lld taps a pass of %lld, %d threads, layout "
                             "%d) change the bits on case %d (CR_SEED=%llu): input %lld x %lld x "
                             "%lld x %lld, %s", kernels[k], (long long)passes[j], (long long)taps,
                             1 + i % 2, i / 2 % 2, i, (unsigned long long)seed, (long long)n,
                             (long long)p.in_channels, (long long)h, (long long)w, desc);
                }
            }
            cr_grouped_force_tap_pass(0);
            cr_grouped_force_layout(-1);
            cr_test_set_threads(1);
            cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b);
            cr_tensor_free(&y_ref); cr_tensor_free(&y);
        }
        printf("cr_conv2d_grouped (%s kernel): %d layers give the same bits in tap passes "
               "(seed %llu)\n", kernels[k], count, (unsigned long long)seed);
        if (k == 1) {   /* the window rule, on the kernel it was measured with */
            cr_conv_params p7 = cr_conv_params_default(64, 64, 7), p3 = cr_conv_params_default(64, 64, 3);
            cr_conv_set_padding(&p7, 3, 3);
            cr_conv_set_padding(&p3, 1, 1);
            cr_conv_shape s7, s3;
            assert_cr_ok(cr_conv_shape_init(&s7, &p7, 1, 56, 56));
            assert_cr_ok(cr_conv_shape_init(&s3, &p3, 1, 56, 56));
            assert_true(cr_grouped_tap_pass(&s7) < 64 * 49);
            assert_int_equal(cr_grouped_tap_pass(&s7) % 49, 0);   /* whole channels */
            assert_int_equal(cr_grouped_tap_pass(&s3), 64 * 9);
        }
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
}

/* The default and, with the portable GEMM kernel forced, the fallback path. */
static void conv_fast__equals_direct_random(void **state)
{
    (void)state;
    cr_test_set_threads(2);
    cr_check_conv_random(cr_conv2d_direct, cr_conv2d_fast, "cr_conv2d_fast",
                         cr_test_count(1000), CONV_TOL);
    assert_cr_ok(cr_gemm_set_kernel("portable"));
    cr_check_conv_random(cr_conv2d_direct, cr_conv2d_fused, "cr_conv2d_fused (portable kernel)",
                         cr_test_count(200), CONV_TOL);
    assert_cr_ok(cr_gemm_set_kernel("auto"));
    cr_test_set_threads(1);
    cr_check_conv_golden(cr_conv2d_fast, "cr_conv2d_fast", CONV_TOL, 40);
}

/* The ResNeXt layer f_3x3_g32 through every path, with a bias, against chapter 1. */
static void conv_fast__resnext_layer(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(128, 128, 3);
    cr_conv_set_padding(&p, 1, 1);
    p.groups = 32;
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    cr_tensor x, w, b, y_ref, y;
    cr_conv_tensors_random(&s, &r, &x, &w, &b, &y_ref);
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 128, 56, 56));
    assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &y_ref));
    const cr_conv2d_fn fns[] = {cr_conv2d_gemm, cr_conv2d_fused, cr_conv2d_grouped, cr_conv2d_fast,
                                cr_conv2d_grouped};
    const char *names[] = {"gemm", "fused", "grouped", "fast", "grouped (AVX2 kernel)"};
    for (int i = 0; i < 5; i++) {
        if (i == 4) {   /* the AVX2 direct kernel where AVX-512 is the default */
            if (!cr_gemm_kernel_supported("avx512") || !cr_gemm_kernel_supported("avx2")) break;
            assert_cr_ok(cr_gemm_set_kernel("avx2"));
        }
        cr_tensor_poison(&y);
        assert_cr_ok(fns[i](&p, &x, &w, &b, &y));
        cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-4, 1e-5);
        if (!cr_cmp_ok(&cmp, CONV_TOL))
            fail_msg("f_3x3_g32 by %s: relative L2 %.3g (bound %.0e)", names[i], cmp.rel_l2,
                     CONV_TOL);
    }
    assert_cr_ok(cr_gemm_set_kernel("auto"));
    if (cr_gemm_kernel_supported("avx2")) assert_string_equal(cr_conv2d_fast_path(&s), "grouped");
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b);
    cr_tensor_free(&y_ref); cr_tensor_free(&y);
}

/* Workspace: the fused path needs only packing buffers, far less than the patch matrix. */
static void conv_fused__workspace_is_packing_only(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(64, 64, 3);
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    const size_t patch = (size_t)576 * 3136 * 4;
    const size_t fused = cr_conv2d_fused_workspace_bytes(&s);
    assert_int_equal(cr_conv2d_gemm_workspace_bytes(&s), patch + fused);
    assert_true(fused > 0 && fused < patch / 4);
    printf("a_3x3_64: im2col + GEMM %zu bytes, fused %zu bytes\n", patch + fused, fused);
}

/* Bad tensors are refused with a message naming them, by every path. */
static void conv_fast__bad_tensors_refused(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_tensor x, w, y;
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 4, 8, 8));
    assert_cr_ok(cr_tensor_alloc4(&w, 6, 4, 3, 3));
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 6, 5, 5)); /* should be 6x6 */
    cr_tensor_fill(&x, 1); cr_tensor_fill(&w, 1); cr_tensor_fill(&y, 7);
    const cr_conv2d_fn fns[] = {cr_conv2d_gemm, cr_conv2d_fused, cr_conv2d_grouped, cr_conv2d_fast};
    for (int i = 0; i < 4; i++) {
        assert_cr_fails(fns[i](&p, &x, &w, NULL, &y), CR_EINVAL);
        assert_non_null(strstr(cr_last_error(), "tensor y"));
        assert_true(y.data[0] == 7.0f);
    }
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gemm_steps__reference_random),
        cmocka_unit_test(loop_order__random_shapes),
        cmocka_unit_test(loop_order__faster_than_reference),
        cmocka_unit_test(gemm_steps__regblock_simd_blocked_random),
        cmocka_unit_test(packing__panels_match_layout),
        cmocka_unit_test(packing__engine_with_portable_kernel),
        cmocka_unit_test(packing__packed_random),
        cmocka_unit_test(micro_kernel__hand_packed_panels),
        cmocka_unit_test(micro_kernel__faster_than_scalar),
        cmocka_unit_test(micro_kernel__parallel_random),
        cmocka_unit_test(gemm_default__every_kernel_random),
        cmocka_unit_test(gemm_default__beyond_every_block),
        cmocka_unit_test(gemm_default__b_in_place_same_bits),
        cmocka_unit_test(gemm_default__arguments_and_edge_cases),
        cmocka_unit_test(conv_gemm__equals_direct_random),
        cmocka_unit_test(conv_gemm__golden_cases),
        cmocka_unit_test(conv_fused__equals_direct_random),
        cmocka_unit_test(conv_fused__1x1_in_place_only_when_plain),
        cmocka_unit_test(conv_grouped__equals_direct_random),
        cmocka_unit_test(conv_grouped__strided_rows_random),
        cmocka_unit_test(conv_grouped__tap_passes_same_bits),
        cmocka_unit_test(conv_fast__equals_direct_random),
        cmocka_unit_test(conv_fast__resnext_layer),
        cmocka_unit_test(conv_fused__workspace_is_packing_only),
        cmocka_unit_test(conv_fast__bad_tensors_refused),
    };
    return cr_run_tests("ch03", tests);
}
