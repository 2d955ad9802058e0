/* test_ch05.c — suite ch05: every GPU GEMM kernel equals a float64 product within the
 * bound of its precision, every GPU convolution path equals chapter 1 (and PyTorch's
 * golden cases), and the GPU backward pass equals chapter 4's reference.
 *
 * Built twice: test_ch05 (nvcc) exits 77 (meson: SKIP) without a CUDA device, and prints
 * why; test_ch05_emu runs the same tests on the CUDA emulator (chapters/05-cuda/emu),
 * everywhere, with a few of the largest shapes made smaller (cr_cuda_emulated()). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ch05_common.h"
#include "compare.h"
#include "conv_backward.h"
#include "conv_harness.h"
#include "cr_test.h"
#include "cuda_gemm.h"
#include "direct.h"
#include "gemm.h"
#include "pad_rule.h"
#include "rng.h"
#include "safetensors.h"

/* ---- GEMM --------------------------------------------------------------------------------- */

typedef struct {
    cr_trans ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
} gemm_case;

/* Sizes that matter on the GPU: 1, primes, and both sides of every tile size (8, 16, 32,
 * 64, 128) and of the float4 width. */
static const int64_t special_sizes[] = {1, 2, 3, 5, 7, 13, 15, 17, 31, 33, 63, 65, 97, 127, 129, 131};

/* A size for one GEMM dimension: one of special_sizes a third of the time, else in [1, hi]. */
static int64_t draw_size(cr_rng *r, int64_t hi)
{
    if (cr_rng_int(r, 0, 2) == 0)
        return special_sizes[cr_rng_int(r, 0, (int64_t)(sizeof special_sizes / sizeof *special_sizes) - 1)];
    return cr_rng_int(r, 1, hi);
}

/* A random case: sizes up to a few hundred (one in four cases larger in one dimension, so
 * several 128-wide tiles and their edges are crossed), transposes, leading-dimension
 * padding half the time, and the BLAS scalars. */
static gemm_case draw_case(cr_rng *r, int t)
{
    gemm_case c;
    c.ta = (cr_trans)cr_rng_int(r, 0, 1);
    c.tb = (cr_trans)cr_rng_int(r, 0, 1);
    c.M = draw_size(r, 200);
    c.N = draw_size(r, 200);
    c.K = draw_size(r, 150);
    switch (t % 8) {
    case 5: c.M = cr_rng_int(r, 257, 601); break;
    case 6: c.N = cr_rng_int(r, 257, 601); break;
    case 7: c.K = cr_rng_int(r, 257, 1201); break;
    default: break;
    }
    const int64_t wa = c.ta == CR_NO_TRANS ? c.K : c.M, wb = c.tb == CR_NO_TRANS ? c.N : c.K;
    c.lda = wa + (cr_rng_int(r, 0, 1) ? cr_rng_int(r, 1, 5) : 0);
    c.ldb = wb + (cr_rng_int(r, 0, 1) ? cr_rng_int(r, 1, 5) : 0);
    c.ldc = c.N + (cr_rng_int(r, 0, 1) ? cr_rng_int(r, 1, 5) : 0);
    static const float alphas[] = {1.0f, -0.5f, 2.25f, 1.0f, 0.0f};
    static const float betas[] = {0.0f, 1.0f, -1.5f, 0.0f, 0.5f};
    c.alpha = alphas[cr_rng_int(r, 0, 4)];
    c.beta = betas[cr_rng_int(r, 0, 4)];
    return c;
}

/* Relative L2 bound against float64: cr_cuda_gemm_tolerance (cuda_gemm.h says how it is
 * derived), the table lab 5 uses too. */
static double gemm_tol(cr_cuda_precision p, int64_t K) { return cr_cuda_gemm_tolerance(p, K); }

#define SENTINEL 12345.0f   /* in C's leading-dimension padding: must survive */

/* Runs step on case c with fresh operands from r (device copies made here, offset by
 * `shift` floats from the allocation so that 16-byte alignment is not assumed) and checks
 * it against float64; fails naming the kernel, the case and the seed. */
static void check_gemm_case(const cr_cuda_gemm_step *step, const gemm_case *c, cr_rng *r,
                            uint64_t seed, int shift)
{
    const int64_t ra = c->ta == CR_NO_TRANS ? c->M : c->K, rb = c->tb == CR_NO_TRANS ? c->K : c->N;
    const size_t na = (size_t)(ra * c->lda), nb = (size_t)(rb * c->ldb), nc = (size_t)(c->M * c->ldc);
    const size_t mn = (size_t)(c->M * c->N);
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C);
    double *ref = malloc(mn * sizeof *ref);
    float *got = malloc(mn * sizeof *got), *want = malloc(mn * sizeof *want);
    assert_non_null(A); assert_non_null(B); assert_non_null(C);
    assert_non_null(ref); assert_non_null(got); assert_non_null(want);
    for (size_t i = 0; i < na; i++) A[i] = cr_rng_uniform_f(r, -1, 1);
    for (size_t i = 0; i < nb; i++) B[i] = cr_rng_uniform_f(r, -1, 1);
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = 0; j < c->ldc; j++)
            C[i * c->ldc + j] = j >= c->N ? SENTINEL
                                : c->beta == 0.0f ? NAN          /* beta 0: must not be read */
                                                  : cr_rng_uniform_f(r, -1, 1);
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
    void *dA, *dB, *dC;
    assert_cr_ok(cr_cuda_malloc(&dA, (na + 4) * sizeof(float), "A"));
    assert_cr_ok(cr_cuda_malloc(&dB, (nb + 4) * sizeof(float), "B"));
    assert_cr_ok(cr_cuda_malloc(&dC, (nc + 4) * sizeof(float), "C"));
    float *a = (float *)dA + shift, *b = (float *)dB + shift, *cc = (float *)dC + shift;
    assert_cr_ok(cr_cuda_to_device(a, A, na * sizeof(float)));
    assert_cr_ok(cr_cuda_to_device(b, B, nb * sizeof(float)));
    assert_cr_ok(cr_cuda_to_device(cc, C, nc * sizeof(float)));
    cr_status st = step->fn(c->ta, c->tb, c->M, c->N, c->K, c->alpha, a, c->lda, b, c->ldb,
                            c->beta, cc, c->ldc);
    if (st == CR_OK) st = cr_cuda_sync(step->name);
    if (st == CR_OK) st = cr_cuda_to_host(C, cc, nc * sizeof(float));
    cr_cuda_free(dA); cr_cuda_free(dB); cr_cuda_free(dC);
    for (size_t i = 0; i < mn; i++) {
        got[i] = C[(int64_t)i / c->N * c->ldc + (int64_t)i % c->N];
        want[i] = (float)ref[i];
    }
    int pad_ok = 1;
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = c->N; j < c->ldc; j++) pad_ok &= C[i * c->ldc + j] == SENTINEL;
    const double tol = gemm_tol(step->precision, c->K);
    cr_cmp cmp = cr_compare(got, want, mn, tol, tol);
    if (st != CR_OK || !cr_cmp_ok(&cmp, tol) || !pad_ok) {
        const long long shape[2] = {c->M, c->N};
        if (st == CR_OK && pad_ok) cr_print_faults(stderr, got, want, mn, shape, 2, tol, tol, 5);
        fail_msg("gpu %s (%s): C = %g * op(A)%s * op(B)%s + %g * C with M=%lld N=%lld K=%lld "
                 "lda=%lld ldb=%lld ldc=%lld, pointers +%d floats (seed %llu): %s%s%s, "
                 "relative L2 %.3g (bound %.0e)%s",
                 step->name, cr_cuda_precision_name(step->precision), (double)c->alpha,
                 c->ta ? "^T" : "", c->tb ? "^T" : "", (double)c->beta, (long long)c->M,
                 (long long)c->N, (long long)c->K, (long long)c->lda, (long long)c->ldb,
                 (long long)c->ldc, shift, (unsigned long long)seed, cr_status_name(st),
                 st != CR_OK ? ": " : "", st != CR_OK ? cr_last_error() : "", cmp.rel_l2, tol,
                 pad_ok ? "" : "; it wrote past N into C's leading-dimension padding");
    }
    free(A); free(B); free(C); free(ref); free(got); free(want);
}

/* The compute capability's major number of device 0. */
static int cc_major(void)
{
    cr_cuda_info info;
    assert_cr_ok(cr_cuda_device_info(&info));
    return info.cc_major;
}

/* count random cases of every kernel whose precision is in [lo, hi]. */
static void check_steps_random(cr_cuda_precision lo, cr_cuda_precision hi, int count)
{
    const uint64_t seed = cr_seed_from_env();
    int n;
    const cr_cuda_gemm_step *steps = cr_cuda_gemm_steps(&n);
    for (int s = 0; s < n; s++) {
        if (steps[s].precision < lo || steps[s].precision > hi) continue;
        cr_rng r;
        cr_rng_seed(&r, seed);
        for (int t = 0; t < count; t++) {
            gemm_case c = draw_case(&r, t);
            check_gemm_case(&steps[s], &c, &r, seed, t % 3 == 2 ? 1 : 0);
        }
        printf("gpu %s: %d random cases equal float64 within %.0e..%.0e (seed %llu)\n",
               steps[s].name, count, gemm_tol(steps[s].precision, 1),
               gemm_tol(steps[s].precision, 2000), (unsigned long long)seed);
    }
}

/* The six FP32 kernels, naive to vec4. */
static void gpu_gemm__fp32_kernels_random(void **state)
{
    (void)state;
    check_steps_random(CR_CUDA_FP32, CR_CUDA_FP32, cr_test_count(40));
}

/* The tensor-core kernels (TF32, FP16, BF16), on sm_80 or newer. */
static void gpu_gemm__tensor_core_kernels_random(void **state)
{
    (void)state;
    if (cc_major() < 8) {
        printf("tensor-core kernels need compute capability 8.0; this GPU is %d.x\n", cc_major());
        skip();
    }
    check_steps_random(CR_CUDA_TF32, CR_CUDA_BF16, cr_test_count(40));
}

/* Every tile edge at once, vec4 with aligned and unaligned pointers, the tensor cores
 * with K not a multiple of their depth. */
static void gpu_gemm__beyond_every_tile(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const gemm_case cases[] = {
        {CR_NO_TRANS, CR_NO_TRANS, 257, 263, 131, 132, 264, 264, 1.0f, 0.0f},
        {CR_NO_TRANS, CR_NO_TRANS, 129, 1, 33, 33, 1, 1, 1.0f, 0.0f},
        {CR_NO_TRANS, CR_NO_TRANS, 1, 300, 1000, 1000, 300, 300, -1.0f, 1.0f},
        {CR_TRANS, CR_TRANS, 130, 131, 17, 130, 17, 136, 0.5f, 0.5f},
        {CR_NO_TRANS, CR_TRANS, 384, 256, 2049, 2049, 2049, 256, 1.0f, 0.0f},
    };
    /* the emulator runs the last case smaller (still two 128-row tiles and K > 2048) */
    gemm_case last = cases[sizeof cases / sizeof *cases - 1];
    if (cr_cuda_emulated()) last.M = 130, last.N = 129, last.ldc = 129;
    /* with fewer cases asked for (the race build, sanitizers): K > 2048 on a 33 x 33 C */
    if (cr_cuda_emulated() && cr_test_count(100) < 100) last.M = 33, last.N = 33, last.ldc = 33;
    int n;
    const cr_cuda_gemm_step *steps = cr_cuda_gemm_steps(&n);
    const int tc = cc_major() >= 8;
    for (int s = 0; s < n; s++) {
        if (steps[s].precision != CR_CUDA_FP32 && !tc) continue;
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            for (int shift = 0; shift <= 1; shift++) {
                /* the emulator shifts the pointers only where alignment is tested (vec4) */
                if (shift && cr_cuda_emulated() && steps[s].fn != cr_cuda_gemm_vec4) continue;
                check_gemm_case(&steps[s], i + 1 < sizeof cases / sizeof *cases ? &cases[i] : &last,
                                &r, seed, shift);
            }
    }
}

/* The GEMM step named name (fails the test when there is none). */
static const cr_cuda_gemm_step *gemm_step(const char *name)
{
    int n;
    const cr_cuda_gemm_step *steps = cr_cuda_gemm_steps(&n);
    for (int s = 0; s < n; s++)
        if (strcmp(steps[s].name, name) == 0) return &steps[s];
    fail_msg("no GPU GEMM step named %s", name);
    return NULL;
}

/* Kernel 3 alone (coursework task gpu_smem): random cases, then sizes on both sides of
 * its 32 x 32 tile with both transposes and a K that is not a multiple of 32. */
static void gpu_smem__equals_float64(void **state)
{
    (void)state;
    const cr_cuda_gemm_step *step = gemm_step("smem");
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const gemm_case cases[] = {
        {CR_NO_TRANS, CR_NO_TRANS, 33, 65, 31, 31, 65, 65, 1.0f, 0.0f},
        {CR_TRANS, CR_NO_TRANS, 64, 32, 97, 64, 32, 40, -0.5f, 1.0f},
        {CR_NO_TRANS, CR_TRANS, 1, 1, 1, 1, 1, 1, 2.0f, 0.0f},
        {CR_TRANS, CR_TRANS, 95, 63, 64, 95, 64, 63, 1.0f, 0.5f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_gemm_case(step, &cases[i], &r, seed, 0);
    const int count = cr_test_count(20);
    for (int t = 0; t < count; t++) {
        gemm_case c = draw_case(&r, t);
        check_gemm_case(step, &c, &r, seed, 0);
    }
}

/* Bad arguments are refused with chapter 3's messages; K = 0 and alpha = 0 follow BLAS. */
static void gpu_gemm__arguments_and_edge_cases(void **state)
{
    (void)state;
    float hA[6] = {1, 2, 3, 4, 5, 6}, hB[6] = {1, 0, 0, 1, 1, 1}, hC[4];
    float *A = to_dev(hA, 6, "A"), *B = to_dev(hB, 6, "B"), *C = dev_poisoned(4, "C");
    int n;
    const cr_cuda_gemm_step *steps = cr_cuda_gemm_steps(&n);
    assert_true(n >= 9);
    const int tc = cc_major() >= 8;
    for (int i = 0; i < n; i++) {
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 1, A, 2, B, 2, 0, C, 2),
                        CR_EINVAL);
        assert_non_null(strstr(cr_last_error(), "lda"));
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, -1, 2, 3, 1, A, 3, B, 2, 0, C, 2),
                        CR_EINVAL);
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 1, A, 3, B, 2, 0, C, 1),
                        CR_EINVAL);
        assert_cr_fails(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 1, NULL, 3, B, 2, 0, C, 2),
                        CR_EINVAL);
        if (steps[i].precision != CR_CUDA_FP32 && !tc) continue;
        /* K = 0, beta = 0: C becomes 0 although it held NaN */
        assert_cr_ok(cr_cuda_poison(C, 4));
        assert_cr_ok(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 0, 1, A, 1, B, 2, 0, C, 2));
        assert_cr_ok(cr_cuda_to_host(hC, C, sizeof hC));
        for (int j = 0; j < 4; j++) assert_true(hC[j] == 0.0f);
        /* alpha = 0, beta = 2: C doubles */
        for (int j = 0; j < 4; j++) hC[j] = (float)j;
        assert_cr_ok(cr_cuda_to_device(C, hC, sizeof hC));
        assert_cr_ok(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 2, 2, 3, 0, A, 3, B, 2, 2, C, 2));
        assert_cr_ok(cr_cuda_to_host(hC, C, sizeof hC));
        for (int j = 0; j < 4; j++) assert_true(hC[j] == 2.0f * (float)j);
        /* M = 0: nothing to do */
        assert_cr_ok(steps[i].fn(CR_NO_TRANS, CR_NO_TRANS, 0, 2, 3, 1, A, 3, B, 2, 0, C, 2));
        assert_cr_ok(cr_cuda_sync(steps[i].name));
    }
    cr_cuda_free(A); cr_cuda_free(B); cr_cuda_free(C);
}

/* ---- conversions to 16-bit floats ------------------------------------------------------------ */

/* IEEE binary16 bits of x rounded to nearest even, computed in double from the spacing of
 * the half numbers around x (independent of the bit tricks of a conversion routine). */
static uint16_t ref_half_bits(float x)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs((double)x);
    if (isnan(x)) return 0x7fff;
    if (isinf(x) || a >= 65520.0) return sign | 0x7c00;           /* 65520: halfway to 2^16 */
    int e;
    frexp(a, &e);                                                  /* a in [2^(e-1), 2^e) */
    const double ulp = ldexp(1.0, (e - 1 < -14 ? -14 : e - 1) - 10);
    const double v = nearbyint(a / ulp) * ulp;                     /* ties to even */
    if (v < ldexp(1.0, -14)) return sign | (uint16_t)(v / ldexp(1.0, -24));   /* subnormal */
    frexp(v, &e);
    return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)(v / ldexp(1.0, e - 1) * 1024 - 1024);
}

/* bfloat16 bits of x rounded to nearest even (a float with 8 significant bits). */
static uint16_t ref_bf16_bits(float x)
{
    if (isnan(x)) return 0x7fff;
    if (isinf(x)) return signbit(x) ? 0xff80 : 0x7f80;
    const double a = fabs((double)x);
    int e;
    frexp(a, &e);
    const double ulp = ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 7);
    const double v = nearbyint(a / ulp) * ulp;
    const float f = v >= ldexp(1.0, 128) ? INFINITY : (float)v;    /* exact: 8 bits */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((signbit(x) ? 0x8000 : 0) | (u >> 16));
}

/* cr_cuda_convert rounds to nearest even, bit for bit, on boundary values (ties, the
 * largest finite values, subnormals, zeros, infinities) and random floats of every
 * exponent; a NaN stays a NaN. */
static void gpu_convert__round_to_nearest_even(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    static const float special[] = {
        0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.996f, 65520.0f, -65520.0f, 1e30f,
        0x1p-14f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-26f, 0x1.002p0f, 0x1.006p0f,
        0x1.001p0f, 0x1.003p0f, 0x1.0001p0f, 0x1.0003p0f, 0x1.00018p0f, 0x1.fffffep127f,
        0x1p-149f, 0x1.fep-127f, 3.14159265f, -2.71828183f, INFINITY, -INFINITY, NAN};
    const size_t ns = sizeof special / sizeof *special, n = ns + (size_t)cr_test_count(20000);
    float *h = malloc(n * sizeof *h);
    uint16_t *out = malloc(n * sizeof *out);
    assert_non_null(h); assert_non_null(out);
    memcpy(h, special, sizeof special);
    for (size_t i = ns; i < n; i++) {   /* random bits: every exponent, NaNs excluded */
        uint32_t u = (uint32_t)cr_rng_int(&r, 0, 0xffffffffLL);
        if ((u & 0x7f800000u) == 0x7f800000u) u &= 0xbfffffffu;
        if (i % 2) u = (u & 0x807fffffu) | (uint32_t)cr_rng_int(&r, 100, 150) << 23;  /* near the half range */
        memcpy(&h[i], &u, 4);
    }
    float *d = to_dev(h, n, "conversion input");
    void *d16;
    assert_cr_ok(cr_cuda_malloc(&d16, n * 2, "conversion output"));
    for (int to = 0; to < 2; to++) {
        const cr_cuda_precision p = to ? CR_CUDA_BF16 : CR_CUDA_FP16;
        assert_cr_ok(cr_cuda_convert(d, d16, n, p));
        assert_cr_ok(cr_cuda_sync("cr_cuda_convert"));
        assert_cr_ok(cr_cuda_to_host(out, d16, n * 2));
        for (size_t i = 0; i < n; i++) {
            const uint16_t want = to ? ref_bf16_bits(h[i]) : ref_half_bits(h[i]);
            const uint16_t exp_mask = to ? 0x7f80 : 0x7c00;
            const int both_nan = isnan(h[i]) && (out[i] & exp_mask) == exp_mask && (out[i] & ~exp_mask & 0x7fff);
            if (out[i] != want && !both_nan)
                fail_msg("cr_cuda_convert to %s: %a (bits 0x%08x) gave 0x%04x, round to nearest "
                         "even is 0x%04x (value %zu, seed %llu)", cr_cuda_precision_name(p),
                         (double)h[i], (unsigned)((union { float f; uint32_t u; }){h[i]}).u, out[i],
                         want, i, (unsigned long long)seed);
        }
    }
    assert_cr_fails(cr_cuda_convert(d, d16, n, CR_CUDA_TF32), CR_EINVAL);
    cr_cuda_free(d); cr_cuda_free(d16);
    free(h); free(out);
}

/* A small GEMM for the timing test. */
static cr_status timed_gemm(void *arg)
{
    float **m = arg;
    return cr_cuda_sgemm(CR_NO_TRANS, CR_NO_TRANS, 40, 40, 40, 1.0f, m[0], 40, m[1], 40, 0.0f,
                         m[2], 40);
}

/* cr_cuda_time_stats: min <= median <= max, all positive; a failing fn's status comes back. */
static void gpu_time__median_min_max(void **state)
{
    (void)state;
    float *m[3] = {dev_poisoned(1600, "A"), dev_poisoned(1600, "B"), dev_poisoned(1600, "C")};
    cr_cuda_timing t = {-1, -1, -1};
    assert_cr_ok(cr_cuda_time_stats(timed_gemm, m, 1, 5, &t));
    if (!(t.min_ms > 0 && t.min_ms <= t.median_ms && t.median_ms <= t.max_ms))
        fail_msg("cr_cuda_time_stats: min %g, median %g, max %g ms", t.min_ms, t.median_ms, t.max_ms);
    assert_cr_fails(cr_cuda_time_stats(timed_gemm, m, 0, 0, &t), CR_EINVAL);
    for (int i = 0; i < 3; i++) cr_cuda_free(m[i]);
}

/* ---- convolution: host adapters for the harness -------------------------------------------- */

/* The GPU path the adapter runs (the harness takes a plain cr_conv2d_fn). */
static cr_cuda_conv2d_fn gpu_path;

/* cr_conv2d_fn over host tensors: binds the shapes, copies x, w, b to the device, runs
 * gpu_path into a poisoned device y, copies y back. */
static cr_status gpu_conv_host(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                               const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st != CR_OK) return st;
    float *dx = to_dev(x->data, x->numel, "x"), *dw = to_dev(w->data, w->numel, "w");
    float *db = b ? to_dev(b->data, b->numel, "b") : NULL;
    float *dy = dev_poisoned(y->numel, "y");
    st = gpu_path(&s, dx, dw, db, dy);
    if (st == CR_OK) st = cr_cuda_sync("convolution");
    if (st == CR_OK) st = cr_cuda_to_host(y->data, dy, y->numel * sizeof(float));
    cr_cuda_free(dx); cr_cuda_free(dw); cr_cuda_free(db); cr_cuda_free(dy);
    return st;
}

#define CONV_TOL 3e-5   /* fp32, K = Cin_g*kh*kw up to a few hundred (as chapter 3) */

/* One path against chapter 1 on random configurations and against PyTorch's golden cases. */
static void check_conv_path(const char *name)
{
    int n;
    const cr_cuda_conv_path *paths = cr_cuda_conv_paths(&n);
    for (int i = 0; i < n; i++) {
        if (strcmp(paths[i].name, name) != 0) continue;
        char label[64];
        snprintf(label, sizeof label, "cr_cuda_conv2d %s path", name);
        gpu_path = paths[i].fn;
        cr_check_conv_random(cr_conv2d_direct, gpu_conv_host, label, cr_test_count(300), CONV_TOL);
        cr_check_conv_golden(gpu_conv_host, label, CONV_TOL, 40);
        cr_cuda_workspace_release();
        return;
    }
    fail_msg("no GPU convolution path named %s", name);
}

static void gpu_conv_direct__equals_direct_random(void **state) { (void)state; check_conv_path("direct"); }
static void gpu_conv_im2col__equals_direct_random(void **state) { (void)state; check_conv_path("im2col"); }
static void gpu_conv_implicit__equals_direct_random(void **state) { (void)state; check_conv_path("implicit"); }
static void gpu_conv_default__equals_direct_random(void **state) { (void)state; check_conv_path("default"); }

/* The kernels' padding rule (pad_rule.h, the same code on the device) equals chapter 1's
 * cr_pad_index for every mode, size 1..9 and coordinate within two sizes of the image. */
static void gpu_pad_rule__equals_chapter_1(void **state)
{
    (void)state;
    const cr_pad_mode modes[] = {CR_PAD_ZEROS, CR_PAD_REFLECT, CR_PAD_REPLICATE, CR_PAD_CIRCULAR};
    int checked = 0;
    for (int m = 0; m < 4; m++)
        for (int n = 1; n <= 9; n++)
            for (int i = -n + 1; i < 2 * n - 1; i++) {   /* the padding any mode accepts */
                const int64_t want = cr_pad_index(i, n, modes[m]);
                const int got = cr_pad_rule(i, n, (int)modes[m]);
                if (got != want)
                    fail_msg("cr_pad_rule(%d, %d, mode %d) = %d, chapter 1's cr_pad_index says %lld",
                             i, n, m, got, (long long)want);
                checked++;
            }
    assert_true(checked > 300);
}

/* The standard layers a_3x3_64 (batch 2) and f_3x3_g32 with a bias, every path. */
static void gpu_conv_default__standard_layers(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    for (int layer = 0; layer < 2; layer++) {
        cr_conv_params p = cr_conv_params_default(layer ? 128 : 64, layer ? 128 : 64, 3);
        cr_conv_set_padding(&p, 1, 1);
        p.groups = layer ? 32 : 1;
        const int64_t batch = layer ? 1 : 2;
        cr_conv_shape s;
        const int64_t hw = cr_cuda_emulated() ? 20 : 56;   /* the emulator: the same layers, smaller images */
        assert_cr_ok(cr_conv_shape_init(&s, &p, batch, hw, hw));
        cr_tensor x, w, b, y_ref, y;
        cr_conv_tensors_random(&s, &r, &x, &w, &b, &y_ref);
        assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
        assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &y_ref));
        int n;
        const cr_cuda_conv_path *paths = cr_cuda_conv_paths(&n);
        for (int i = 0; i < n; i++) {
            gpu_path = paths[i].fn;
            cr_tensor_poison(&y);
            assert_cr_ok(gpu_conv_host(&p, &x, &w, &b, &y));
            cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-4, 1e-5);
            if (!cr_cmp_ok(&cmp, CONV_TOL))
                fail_msg("%s by the %s path: relative L2 %.3g (bound %.0e)",
                         layer ? "f_3x3_g32" : "a_3x3_64 batch 2", paths[i].name, cmp.rel_l2,
                         CONV_TOL);
        }
        assert_string_equal(cr_cuda_conv2d_path(&s), layer ? "direct" : "implicit");
        cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b);
        cr_tensor_free(&y_ref); cr_tensor_free(&y);
    }
    cr_cuda_workspace_release();
}

/* The implicit GEMM's row blocks (blockIdx.y) and groups (blockIdx.z): more than 64 output
 * channels per group (2 and 3 row blocks of 64, the last one partial) and many groups,
 * which the random configurations (few channels) never reach. */
static void gpu_conv_implicit__row_blocks_and_groups(void **state)
{
    (void)state;
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    /* {Cin, Cout, groups, kernel, stride, pad, batch, H, W} */
    static const int cfg[][9] = {
        {5, 130, 1, 3, 1, 1, 1, 9, 7},     /* 130 channels: 3 row blocks */
        {6, 140, 2, 3, 2, 1, 2, 11, 10},   /* 70 per group: 2 row blocks in each of 2 groups */
        {64, 128, 64, 3, 1, 1, 1, 6, 5},   /* 64 groups of 2 channels */
        {96, 96, 32, 1, 1, 0, 3, 5, 9},    /* 32 groups, 1x1, batch 3 */
    };
    cr_cuda_conv2d_fn fns[] = {cr_cuda_conv2d_implicit, cr_cuda_conv2d};
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        const int *c = cfg[i];
        cr_conv_params p = cr_conv_params_default(c[0], c[1], c[3]);
        cr_conv_set_padding(&p, c[5], c[5]);
        p.stride_h = p.stride_w = c[4];
        p.groups = c[2];
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, c[6], c[7], c[8]));
        cr_tensor x, w, b, y_ref, y;
        cr_conv_tensors_random(&s, &r, &x, &w, &b, &y_ref);
        assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
        assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &y_ref));
        for (size_t f = 0; f < sizeof fns / sizeof *fns; f++) {
            gpu_path = fns[f];
            cr_tensor_poison(&y);
            assert_cr_ok(gpu_conv_host(&p, &x, &w, &b, &y));
            cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-4, 1e-5);
            if (!cr_cmp_ok(&cmp, CONV_TOL))
                fail_msg("%s, case %zu (Cin %d, Cout %d, groups %d, seed %llu): relative L2 %.3g "
                         "(bound %.0e)", f ? "cr_cuda_conv2d" : "cr_cuda_conv2d_implicit", i,
                         c[0], c[1], c[2], (unsigned long long)seed, cmp.rel_l2, CONV_TOL);
        }
        cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b);
        cr_tensor_free(&y_ref); cr_tensor_free(&y);
    }
}

/* ---- tensor cores: cr_cuda_conv2d_tc, cr_cuda_conv2d_implicit_tc, cr_cuda_conv2d_at ------- */

static cr_cuda_precision tc_prec;   /* the precision the three adapters below run at */
static cr_status tc_conv(const cr_conv_shape *s, const float *x, const float *w, const float *b,
                         float *y)
{
    return cr_cuda_conv2d_tc(s, tc_prec, x, w, b, y);
}
static cr_status implicit_tc_conv(const cr_conv_shape *s, const float *x, const float *w,
                                  const float *b, float *y)
{
    return cr_cuda_conv2d_implicit_tc(s, tc_prec, x, w, b, y);
}
static cr_status at_conv(const cr_conv_shape *s, const float *x, const float *w, const float *b,
                         float *y)
{
    return cr_cuda_conv2d_at(s, tc_prec, x, w, b, y);
}

/* A tensor-core path (fn, through the tc_prec adapters) at TF32, FP16 and BF16 equals
 * chapter 1 within the precision's GEMM bound (cr_cuda_gemm_tolerance: the error of
 * products whose operands were rounded) on `count` random configurations, every option
 * (groups, padding modes, stride, dilation, bias, batch 1-3, 1 x 1 kernels). */
static void check_tc_random(cr_cuda_conv2d_fn fn, const char *name, int count)
{
    if (cc_major() < 8) {
        printf("tensor-core kernels need compute capability 8.0; this GPU is %d.x\n", cc_major());
        skip();
    }
    for (int p = CR_CUDA_TF32; p <= CR_CUDA_BF16; p++) {
        char label[64];
        tc_prec = (cr_cuda_precision)p;
        snprintf(label, sizeof label, "%s %s", name, cr_cuda_precision_name(tc_prec));
        gpu_path = fn;
        cr_check_conv_random(cr_conv2d_direct, gpu_conv_host, label, count,
                             cr_cuda_gemm_tolerance(tc_prec, 0));
    }
    cr_cuda_workspace_release();
}

static void gpu_conv_tc__equals_direct_random(void **state)
{
    (void)state;
    check_tc_random(tc_conv, "cr_cuda_conv2d_tc", cr_test_count(30));
}

static void gpu_conv_implicit_tc__equals_direct_random(void **state)
{
    (void)state;
    check_tc_random(implicit_tc_conv, "cr_cuda_conv2d_implicit_tc", cr_test_count(40));
}

/* The tensor-core implicit GEMM where the random configurations (at most 32 output
 * channels) do not reach: more than 128 output channels per group (blockIdx.y > 0, the
 * last row block partial), several groups of more than 64 and many groups of 2
 * (blockIdx.z), batches whose columns (N*Ho*Wo, Ho*Wo not a multiple of 128) span several
 * column blocks with images split across them, K over several steps of 32 with a partial
 * last one, every padding mode, stride, dilation, with and without bias. At each precision
 * the result is within the GEMM bound of chapter 1's and differs from it by more than
 * 1e-5 (the operands were rounded: a kernel that quietly ran in FP32 fails), and bad
 * arguments are refused naming what is wrong. */
static void gpu_conv_implicit_tc__row_blocks_groups_and_modes(void **state)
{
    (void)state;
    if (cc_major() < 8) skip();
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    /* {Cin, Cout, groups, kh, kw, stride h, stride w, pad h, pad w, dilation, mode, bias,
     *  batch, H, W} */
    static const int cfg[][15] = {
        {5, 130, 1, 3, 3, 1, 1, 1, 1, 1, CR_PAD_ZEROS, 1, 3, 9, 7},       /* 2 row blocks, 189 columns */
        {6, 140, 2, 3, 3, 2, 2, 1, 1, 1, CR_PAD_REFLECT, 1, 2, 11, 10},   /* 2 groups of 70 */
        {9, 390, 3, 3, 3, 1, 1, 1, 1, 1, CR_PAD_CIRCULAR, 0, 2, 5, 6},    /* 3 groups of 130 */
        {48, 96, 48, 3, 3, 1, 1, 1, 1, 1, CR_PAD_CIRCULAR, 1, 1, 6, 5},   /* 48 groups of 2 */
        {8, 200, 1, 1, 1, 1, 1, 0, 0, 1, CR_PAD_ZEROS, 0, 2, 13, 11},     /* plain 1 x 1, 286 columns */
        {7, 66, 1, 5, 3, 2, 1, 2, 1, 2, CR_PAD_REPLICATE, 1, 2, 12, 9},   /* dilation 2, stride 2 x 1 */
        {37, 64, 1, 3, 3, 1, 1, 1, 1, 1, CR_PAD_ZEROS, 1, 2, 7, 9},       /* K = 333: 11 steps of 32 */
    };
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        const int *c = cfg[i];
        cr_conv_params p = cr_conv_params_default(c[0], c[1], c[3]);
        p.kernel_w = c[4];
        p.stride_h = c[5];
        p.stride_w = c[6];
        cr_conv_set_padding(&p, c[7], c[8]);
        p.dilation_h = p.dilation_w = c[9];
        p.pad_mode = (cr_pad_mode)c[10];
        p.bias = c[11] != 0;
        p.groups = c[2];
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, c[12], c[13], c[14]));
        cr_tensor x, w, b, y_ref, y;
        cr_conv_tensors_random(&s, &r, &x, &w, &b, &y_ref);
        assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
        const cr_tensor *bp = p.bias ? &b : NULL;
        assert_cr_ok(cr_conv2d_direct(&p, &x, &w, bp, &y_ref));
        gpu_path = implicit_tc_conv;
        for (int q = CR_CUDA_TF32; q <= CR_CUDA_BF16; q++) {
            tc_prec = (cr_cuda_precision)q;
            const double tol = cr_cuda_gemm_tolerance(tc_prec, 0);
            cr_tensor_poison(&y);
            assert_cr_ok(gpu_conv_host(&p, &x, &w, bp, &y));
            const cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-2, 1e-3);
            if (!(cmp.rel_l2 > 1e-5 && cmp.rel_l2 <= tol))
                fail_msg("cr_cuda_conv2d_implicit_tc %s, case %zu (Cin %d, Cout %d, groups %d, "
                         "batch %d, seed %llu): relative L2 %.3g against chapter 1, expected a "
                         "rounded result: above 1e-5 and at most %.0e",
                         cr_cuda_precision_name(tc_prec), i, c[0], c[1], c[2], c[12],
                         (unsigned long long)seed, cmp.rel_l2, tol);
        }
        cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b);
        cr_tensor_free(&y_ref); cr_tensor_free(&y);
    }
    /* refusals: a precision that is not the tensor cores', a missing bias, NULL pointers */
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 8, 8));
    float *d = dev_poisoned(s.x_numel, "d");
    assert_cr_fails(cr_cuda_conv2d_implicit_tc(&s, CR_CUDA_FP32, d, d, d, d), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "precision"));
    assert_cr_fails(cr_cuda_conv2d_implicit_tc(&s, CR_CUDA_TF32, d, d, NULL, d), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "bias"));
    assert_cr_fails(cr_cuda_conv2d_implicit_tc(&s, CR_CUDA_FP16, NULL, d, d, d), CR_EINVAL);
    assert_cr_fails(cr_cuda_conv2d_implicit_tc(NULL, CR_CUDA_BF16, d, d, d, d), CR_EINVAL);
    cr_cuda_free(d);
}

/* cr_cuda_conv2d_at's rule: FP32 and fewer than 64 output channels per group (ResNeXt's
 * grouped layers among them) take cr_cuda_conv2d bit for bit; otherwise the tensor-core
 * implicit GEMM (path "<precision>_implicit"), bit for bit, whose result is rounded (its
 * error against chapter 1 is above FP32's 1e-5 and within the precision's bound) and which
 * stores no patch matrix (the workspace stays empty): a rule that quietly ran FP32 fails
 * here, and so does one that ran the im2col recipe (cr_cuda_conv2d_tc: its result can be
 * the same bits, its patch matrix is not). */
static void gpu_conv_at__path_rule(void **state)
{
    (void)state;
    if (cc_major() < 8) skip();
    cr_rng r;
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(&r, seed);
    /* {Cin, Cout, groups, kernel, pad, batch, H, W, precision, tensor cores?} */
    static const int cfg[][10] = {
        {64, 64, 1, 1, 0, 2, 9, 11, CR_CUDA_TF32, 1},     /* plain 1 x 1, 64 channels */
        {32, 130, 1, 3, 1, 2, 5, 6, CR_CUDA_FP16, 1},     /* 2 row blocks */
        {96, 128, 2, 3, 1, 2, 5, 5, CR_CUDA_BF16, 1},     /* grouped, 64 per group */
        {126, 126, 2, 1, 0, 1, 5, 5, CR_CUDA_TF32, 0},    /* 63 per group: the implicit GEMM */
        {64, 32, 1, 3, 1, 1, 6, 5, CR_CUDA_TF32, 0},      /* 32 channels: the implicit GEMM */
        {64, 16, 1, 3, 1, 1, 7, 6, CR_CUDA_FP16, 0},
        {128, 128, 32, 3, 1, 1, 6, 5, CR_CUDA_TF32, 0},   /* 4 per group: the direct kernel */
        {16, 15, 1, 1, 0, 1, 6, 5, CR_CUDA_BF16, 0},      /* 15 channels: the direct kernel */
        {64, 64, 1, 3, 1, 1, 6, 7, CR_CUDA_FP32, 0},      /* FP32: the implicit GEMM */
    };
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        const int *c = cfg[i];
        cr_conv_params p = cr_conv_params_default(c[0], c[1], c[3]);
        cr_conv_set_padding(&p, c[4], c[4]);
        p.groups = c[2];
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, c[5], c[6], c[7]));
        cr_tensor x, w, b, y_ref, y, y_other;
        cr_conv_tensors_random(&s, &r, &x, &w, &b, &y_ref);
        assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
        assert_cr_ok(cr_tensor_alloc(&y_other, 4, y_ref.shape));
        assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &y_ref));
        tc_prec = (cr_cuda_precision)c[8];
        gpu_path = at_conv;
        cr_tensor_poison(&y);
        cr_cuda_workspace_release();
        assert_cr_ok(gpu_conv_host(&p, &x, &w, &b, &y));
        const size_t ws = cr_cuda_workspace_bytes();
        /* what the rule should have run: the tensor-core implicit GEMM or cr_cuda_conv2d */
        gpu_path = c[9] ? implicit_tc_conv : cr_cuda_conv2d;
        assert_cr_ok(gpu_conv_host(&p, &x, &w, &b, &y_other));
        const char *path = cr_cuda_conv2d_path_at(&s, tc_prec);
        char want[32];
        snprintf(want, sizeof want, "%s_implicit", cr_cuda_precision_name(tc_prec));
        if (memcmp(y.data, y_other.data, y.numel * sizeof(float)) != 0)
            fail_msg("case %zu (%s at %s): not %s's result bit for bit", i, path,
                     cr_cuda_precision_name(tc_prec),
                     c[9] ? "cr_cuda_conv2d_implicit_tc" : "cr_cuda_conv2d");
        if (c[9]) {
            const cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-2, 1e-3);
            assert_string_equal(path, want);
            if (ws != 0)
                fail_msg("case %zu (%s): the workspace holds %zu bytes, the implicit GEMM stores "
                         "no patch matrix", i, path, ws);
            if (!(cmp.rel_l2 > 1e-5 && cmp.rel_l2 <= cr_cuda_gemm_tolerance(tc_prec, 0)))
                fail_msg("case %zu (%s, seed %llu): relative L2 %.3g against chapter 1, expected "
                         "a rounded result: above 1e-5 and at most %.0e", i, path,
                         (unsigned long long)seed, cmp.rel_l2, cr_cuda_gemm_tolerance(tc_prec, 0));
        } else {
            assert_string_equal(path, cr_cuda_conv2d_path(&s));
        }
        if (i == 0) {   /* refusals */
            float *d = dev_poisoned(4, "d");
            cr_status st = cr_cuda_conv2d_tc(&s, CR_CUDA_FP32, d, d, d, d);
            assert_int_equal(st, CR_EINVAL);
            assert_non_null(strstr(cr_last_error(), "precision"));
            st = cr_cuda_conv2d_at(&s, (cr_cuda_precision)7, d, d, d, d);
            assert_int_equal(st, CR_EINVAL);
            assert_non_null(strstr(cr_last_error(), "precision"));
            cr_cuda_free(d);
        }
        cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&b);
        cr_tensor_free(&y_ref); cr_tensor_free(&y); cr_tensor_free(&y_other);
    }
    cr_cuda_workspace_release();
}

/* Bad arguments are refused: a missing bias, a bias not asked for, NULL pointers. */
static void gpu_conv_default__bad_arguments(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 8, 8));
    float *x = dev_poisoned(s.x_numel, "x"), *w = dev_poisoned(s.w_numel, "w");
    float *y = dev_poisoned(s.y_numel, "y");
    int n;
    const cr_cuda_conv_path *paths = cr_cuda_conv_paths(&n);
    for (int i = 0; i < n; i++) {
        assert_cr_fails(paths[i].fn(&s, x, w, NULL, y), CR_EINVAL);   /* bias = true */
        assert_non_null(strstr(cr_last_error(), "bias"));
        assert_cr_fails(paths[i].fn(&s, NULL, w, y, y), CR_EINVAL);
        assert_cr_fails(paths[i].fn(NULL, x, w, y, y), CR_EINVAL);
    }
    assert_cr_fails(cr_cuda_conv2d_backward(&s, x, w, NULL, x, NULL, NULL), CR_EINVAL);
    cr_cuda_free(x); cr_cuda_free(w); cr_cuda_free(y);
}

/* ---- backward ---------------------------------------------------------------------------------- */

#define GRAD_TOL 3e-5   /* ||out - ref|| / ||magnitude||, fp32 (chapter 4's measure) */

/* A copy of t with every element replaced by its absolute value. */
static void tensor_abs(const cr_tensor *t, cr_tensor *out)
{
    assert_cr_ok(cr_tensor_alloc(out, t->ndim, t->shape));
    for (size_t i = 0; i < t->numel; i++) out->data[i] = fabsf(t->data[i]);
}

/* ||out - ref|| <= tol * ||mag|| (mag: the gradient with |x|, |w|, |dy|: every term
 * positive, so cancellation in a long sum does not fail a correct result). */
static void expect_grad(const char *what, const char *ctx, const cr_tensor *out,
                        const cr_tensor *ref, const cr_tensor *mag)
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
    if (finite && e <= GRAD_TOL) return;
    long long shape[CR_MAX_DIMS] = {0};
    for (int i = 0; i < ref->ndim; i++) shape[i] = ref->shape[i];
    cr_print_faults(stderr, out->data, ref->data, ref->numel, shape, ref->ndim, 1e-4, 1e-5, 5);
    fail_msg("gpu backward %s, %s: ||out - ref|| / ||magnitude|| = %.3g (bound %.0e)%s", what,
             ctx, e, GRAD_TOL, finite ? "" : ", NaN or Inf in the output");
}

/* Runs the GPU backward for (p, x, w, dy) asking for the gradients in mask (1 dx, 2 dw,
 * 4 db) and checks them against chapter 4's reference. */
static void check_backward_case(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                                const cr_tensor *dy, int mask, const char *ctx)
{
    cr_conv_shape s;
    assert_cr_ok(cr_conv_backward_bind(&s, p, x, w, dy, NULL, NULL, NULL));
    const int64_t bs[1] = {p->out_channels};
    cr_tensor rdx, rdw, rdb = {0}, mdx, mdw, mdb = {0}, gdx, gdw, gdb = {0};
    cr_tensor ax, aw, ady;
    assert_cr_ok(cr_tensor_alloc(&rdx, 4, x->shape)); assert_cr_ok(cr_tensor_alloc(&gdx, 4, x->shape));
    assert_cr_ok(cr_tensor_alloc(&mdx, 4, x->shape));
    assert_cr_ok(cr_tensor_alloc(&rdw, 4, w->shape)); assert_cr_ok(cr_tensor_alloc(&gdw, 4, w->shape));
    assert_cr_ok(cr_tensor_alloc(&mdw, 4, w->shape));
    if (p->bias) {
        assert_cr_ok(cr_tensor_alloc(&rdb, 1, bs)); assert_cr_ok(cr_tensor_alloc(&gdb, 1, bs));
        assert_cr_ok(cr_tensor_alloc(&mdb, 1, bs));
    }
    tensor_abs(x, &ax); tensor_abs(w, &aw); tensor_abs(dy, &ady);
    assert_cr_ok(cr_conv2d_backward_ref(p, x, w, dy, &rdx, &rdw, p->bias ? &rdb : NULL));
    assert_cr_ok(cr_conv2d_backward_ref(p, &ax, &aw, &ady, &mdx, &mdw, p->bias ? &mdb : NULL));
    float *ddx = (mask & 1) ? dev_poisoned(x->numel, "dx") : NULL;
    float *ddw = (mask & 2) ? dev_poisoned(w->numel, "dw") : NULL;
    float *ddb = (mask & 4) && p->bias ? dev_poisoned(rdb.numel, "db") : NULL;
    float *gx = to_dev(x->data, x->numel, "x"), *gw = to_dev(w->data, w->numel, "w");
    float *gdy = to_dev(dy->data, dy->numel, "dy");
    cr_status st = cr_cuda_conv2d_backward(&s, gx, gw, gdy, ddx, ddw, ddb);
    if (st == CR_OK) st = cr_cuda_sync("backward");
    if (st == CR_OK && ddx) st = cr_cuda_to_host(gdx.data, ddx, x->numel * sizeof(float));
    if (st == CR_OK && ddw) st = cr_cuda_to_host(gdw.data, ddw, w->numel * sizeof(float));
    if (st == CR_OK && ddb) st = cr_cuda_to_host(gdb.data, ddb, rdb.numel * sizeof(float));
    cr_cuda_free(ddx); cr_cuda_free(ddw); cr_cuda_free(ddb);
    cr_cuda_free(gx); cr_cuda_free(gw); cr_cuda_free(gdy);
    if (st != CR_OK) fail_msg("gpu backward, %s: %s: %s", ctx, cr_status_name(st), cr_last_error());
    if (mask & 1) expect_grad("dx", ctx, &gdx, &rdx, &mdx);
    if (mask & 2) expect_grad("dw", ctx, &gdw, &rdw, &mdw);
    if ((mask & 4) && p->bias) expect_grad("db", ctx, &gdb, &rdb, &mdb);
    cr_tensor *all[] = {&rdx, &rdw, &rdb, &mdx, &mdw, &mdb, &gdx, &gdw, &gdb, &ax, &aw, &ady};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cr_tensor_free(all[i]);
}

/* dx, dw, db (all, and each alone) on random configurations: every padding mode, stride,
 * dilation, groups, batch 1..3. */
static void gpu_backward__equals_reference_random(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(150);
    for (int i = 0; i < count; i++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_random_conv_config(&r, &p, &n, &h, &w);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
        cr_tensor x, wt, b, y, dy;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y);
        assert_cr_ok(cr_tensor_alloc(&dy, 4, y.shape));
        cr_tensor_fill_uniform(&dy, &r, -1, 1);
        char desc[400], ctx[600];
        cr_conv_params_str(&p, desc, sizeof desc);
        snprintf(ctx, sizeof ctx, "random configuration %d (seed %llu), input %lldx%lldx%lldx%lld, %s",
                 i, (unsigned long long)seed, (long long)n, (long long)p.in_channels,
                 (long long)h, (long long)w, desc);
        check_backward_case(&p, &x, &wt, &dy, i % 4 == 0 ? 7 : 1 << (i % 4 - 1), ctx);
        cr_tensor_free(&x); cr_tensor_free(&wt); cr_tensor_free(&b);
        cr_tensor_free(&y); cr_tensor_free(&dy);
    }
    cr_cuda_workspace_release();
    printf("gpu backward: %d random configurations equal chapter 4's reference (seed %llu)\n",
           count, (unsigned long long)seed);
}

/* PyTorch's golden gradients (reference/golden/convgrad_*): the GPU's dx, dw, db equal
 * chapter 4's reference on each (the reference itself is proven against them by ch04). */
static void gpu_backward__golden_layers(void **state)
{
    (void)state;
    char **paths;
    const int n = cr_golden_list("convgrad_", &paths);
    if (n < 1) fail_msg("no golden gradient cases (convgrad_*) under CR_GOLDEN_DIR");
    for (int i = 0; i < n; i++) {
        cr_golden_conv c;
        cr_golden_conv_load(paths[i], &c);
        cr_st_file *f;
        cr_tensor dy;
        assert_cr_ok(cr_st_load(&f, paths[i]));
        assert_cr_ok(cr_st_get(f, "dy", &dy));
        cr_st_free(f);
        check_backward_case(&c.p, &c.x, &c.w, &dy, 7, c.name);
        cr_tensor_free(&dy);
        cr_golden_conv_free(&c);
    }
    cr_free_list(paths, n);
    cr_cuda_workspace_release();
}

int main(void)
{
    if (!cr_cuda_available()) {
        printf("ch05: SKIP: no CUDA device found (%s); the GPU tests need an NVIDIA GPU and "
               "its driver\n", cr_cuda_unavailable_reason());
        return 77;   /* meson: skipped */
    }
    cr_cuda_info info;
    if (cr_cuda_device_info(&info) == CR_OK)
        printf("ch05: %s, compute capability %d.%d, driver %d, runtime %d\n", info.name,
               info.cc_major, info.cc_minor, info.driver_version, info.runtime_version);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gpu_gemm__fp32_kernels_random),
        cmocka_unit_test(gpu_gemm__tensor_core_kernels_random),
        cmocka_unit_test(gpu_gemm__beyond_every_tile),
        cmocka_unit_test(gpu_gemm__arguments_and_edge_cases),
        cmocka_unit_test(gpu_smem__equals_float64),
        cmocka_unit_test(gpu_convert__round_to_nearest_even),
        cmocka_unit_test(gpu_time__median_min_max),
        cmocka_unit_test(gpu_conv_direct__equals_direct_random),
        cmocka_unit_test(gpu_conv_im2col__equals_direct_random),
        cmocka_unit_test(gpu_conv_implicit__equals_direct_random),
        cmocka_unit_test(gpu_conv_default__equals_direct_random),
        cmocka_unit_test(gpu_pad_rule__equals_chapter_1),
        cmocka_unit_test(gpu_conv_default__standard_layers),
        cmocka_unit_test(gpu_conv_implicit__row_blocks_and_groups),
        cmocka_unit_test(gpu_conv_default__bad_arguments),
        cmocka_unit_test(gpu_conv_tc__equals_direct_random),
        cmocka_unit_test(gpu_conv_implicit_tc__equals_direct_random),
        cmocka_unit_test(gpu_conv_implicit_tc__row_blocks_groups_and_modes),
        cmocka_unit_test(gpu_conv_at__path_rule),
        cmocka_unit_test(gpu_backward__equals_reference_random),
        cmocka_unit_test(gpu_backward__golden_layers),
    };
    return cr_run_tests("ch05", tests);
}
