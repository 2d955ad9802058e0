/* lab03-gemm.c — chapter 3's lab: GEMM from the naive loop to near peak, and
 * convolution on top, against the peer libraries found at configure time.
 *
 * (0) The FP32 FMA peak of this machine, measured per thread by independent FMA
 *     chains (12 x 8-wide AVX2; 24 x 16-wide AVX-512 where the CPU has it).
 * (1) Every GEMM step, the default cr_sgemm, OpenBLAS, BLIS and oneDNN's sgemm on
 *     square sizes 256..2048 and on the GEMM shapes of the standard layers
 *     (M = Cout/groups, N = Ho*Wo, K = Cin/groups*kh*kw), 1 and N threads.
 * (2) The standard layers as convolutions: chapter 3's paths and oneDNN with NCHW
 *     input and output, end to end, 1 and N threads.
 * Every result is validated before it is timed: GEMMs against float64 dot products
 * on sampled entries, convolutions against chapter 1. */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifdef CR_HAVE_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int num_threads);  /* OpenBLAS's own, beside its cblas.h */
char *openblas_get_corename(void);
#endif
#include <unistd.h>
#ifdef CR_HAVE_BLIS
#include <blis.h>
#endif
#ifdef CR_HAVE_DNNL
#include "dnnl_conv.h"   /* includes oneapi/dnnl/dnnl.h */
#endif

#include "conv_gemm.h"
#include "direct.h"
#include "gemm.h"
#include "gemm_internal.h"   /* cr_grouped_force_layout */
#include "lab_common.h"
#include "progress.h"

#define GEMM_TOL 1e-4   /* sampled entries vs float64, relative L2 (fp32, K <= 2304) */
#define CONV_TOL 1e-4   /* vs chapter 1, relative L2 */
#define SAMPLES 512     /* entries of C checked in float64 */

static const char *const csv_columns[] = {
    "lab", "kind", "case", "impl", "threads", "ms", "gflops", "pct_peak", "vs_openblas",
    "vs_onednn", "workspace_bytes", "rel_err", "note", NULL};

/* ---- the peers' own code paths ---------------------------------------------------------- */

static char openblas_note[200] = "not built in";   /* the core OpenBLAS runs, and why */

#ifdef CR_HAVE_OPENBLAS
/* True if OpenBLAS's core name is one of its kernels for AVX2 or wider. */
static int openblas_core_is_wide(const char *core)
{
    static const char *const wide[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids"};
    for (size_t i = 0; i < sizeof wide / sizeof *wide; i++)
        if (core && strcmp(core, wide[i]) == 0) return 1;
    return 0;
}
#endif

/* Makes OpenBLAS run its best kernels: when its detection fell back to a core narrower
 * than this CPU (one it does not know), sets OPENBLAS_CORETYPE (SkylakeX with AVX-512,
 * Haswell with AVX2) and re-executes the lab, since OpenBLAS reads it once, when it is
 * loaded. A core set in the environment by the user is kept. Fills openblas_note. */
static void openblas_best_core(char **argv)
{
#ifdef CR_HAVE_OPENBLAS
    const char *core = openblas_get_corename(), *env = getenv("OPENBLAS_CORETYPE");
    const char *want = cr_gemm_kernel_supported("avx512") ? "SkylakeX" : cr_gemm_kernel_supported("avx2") ? "Haswell"
                                                                                    : NULL;
    const char *by_lab = getenv("CR_LAB03_CORETYPE_FROM");
    if (!env && want && !openblas_core_is_wide(core)) {
        setenv("OPENBLAS_CORETYPE", want, 1);
        setenv("CR_LAB03_CORETYPE_FROM", core ? core : "?", 1);
        fflush(stdout);
        execv("/proc/self/exe", argv);   /* returns only on failure: go on with this core */
        unsetenv("OPENBLAS_CORETYPE");
    }
    if (by_lab)
        snprintf(openblas_note, sizeof openblas_note,
                 "core %s (OPENBLAS_CORETYPE=%s set by the lab: its detection gave %s)", core,
                 env ? env : "?", by_lab);
    else if (env)
        snprintf(openblas_note, sizeof openblas_note,
                 "core %s (OPENBLAS_CORETYPE=%s from the environment)", core, env);
    else
        snprintf(openblas_note, sizeof openblas_note, "core %s (detected)", core);
#else
    (void)argv;
#endif
}

/* oneDNN's instruction set for its JIT kernels (sgemm and convolution), as a name. */
static const char *onednn_isa(void)
{
#ifdef CR_HAVE_DNNL
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    default: return "other";
    }
#else
    return "not built in";
#endif
}

/* ---- (0) the peak ------------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__)
/* GFLOP/s of n iterations of 12 independent 8-wide FMA chains on one thread. */
__attribute__((target("avx2,fma"))) static double fma_chains_avx2(long n)
{
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    double t = cr_now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], m, c);
    }
    t = cr_now() - t;
    __m256 s = a[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, a[j]);
    volatile float sink = _mm256_cvtss_f32(s);
    (void)sink;
    return 12.0 * 8 * 2 * (double)n / t * 1e-9;
}

/* GFLOP/s of n iterations of 24 independent 16-wide FMA chains on one thread. */
__attribute__((target("avx512f"))) static double fma_chains_avx512(long n)
{
    __m512 a[24];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
    double t = cr_now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 24
        for (int j = 0; j < 24; j++) a[j] = _mm512_fmadd_ps(a[j], m, c);
    }
    t = cr_now() - t;
    __m512 s = a[0];
    for (int j = 1; j < 24; j++) s = _mm512_add_ps(s, a[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 24.0 * 16 * 2 * (double)n / t * 1e-9;
}
#endif

/* Machine peak with `threads` threads, each running the chains (sum of the threads;
 * best of 3). avx512 selects the 16-wide version. 0 where the CPU lacks the ISA. */
static double measure_peak(int threads, int avx512)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx512 ? !cr_gemm_kernel_supported("avx512") : !cr_gemm_kernel_supported("avx2"))
        return 0.0;
    const long n = avx512 ? 20000000L : 40000000L;   /* about 0.2 s per run */
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double sum = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
        sum += avx512 ? fma_chains_avx512(n) : fma_chains_avx2(n);
        if (sum > best) best = sum;
    }
    return best;
#else
    (void)threads; (void)avx512;
    return 0.0;
#endif
}

/* ---- peers ---------------------------------------------------------------------------- */

/* Sets every library's thread count (ours and the peers' through OpenMP or their own call). */
static void set_all_threads(int t)
{
    lab_set_threads(t);
#ifdef CR_HAVE_OPENBLAS
    openblas_set_num_threads(t);
#endif
#ifdef CR_HAVE_BLIS
    bli_thread_set_num_threads(t);
#endif
}

/* The peers' sgemm with our signature (row-major, no transposes used by the lab). */
#ifdef CR_HAVE_OPENBLAS
/* C = alpha A B + beta C through OpenBLAS's cblas_sgemm. */
static cr_status peer_openblas(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                               float alpha, const float *A, int64_t lda, const float *B,
                               int64_t ldb, float beta, float *C, int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    return CR_OK;
}
#endif
#ifdef CR_HAVE_BLIS
/* C = alpha A B + beta C through BLIS's typed API (row strides, column stride 1). */
static cr_status peer_blis(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    bli_sgemm(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              M, N, K, &alpha, (float *)A, lda, 1, (float *)B, ldb, 1, &beta, C, ldc, 1);
    return CR_OK;
}
#endif
#ifdef CR_HAVE_DNNL
/* C = alpha A B + beta C through oneDNN's dnnl_sgemm (row-major). */
static cr_status peer_dnnl(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                 beta, C, ldc);
    return s == dnnl_success ? CR_OK : cr_fail(CR_EINVAL, "dnnl_sgemm: status %d", (int)s);
}
#endif

/* ---- (1) GEMM --------------------------------------------------------------------------- */

/* One GEMM operand set: A (M x K), B (K x N), C (M x N), all row-major and dense. */
typedef struct {
    int64_t M, N, K;
    float *A, *B, *C;
    cr_gemm_fn fn;
} gemm_run;

/* Runs the GEMM once (lab_time's callback); C is overwritten (beta = 0). */
static cr_status gemm_call(void *arg)
{
    gemm_run *g = arg;
    return g->fn(CR_NO_TRANS, CR_NO_TRANS, g->M, g->N, g->K, 1.0f, g->A, g->K, g->B, g->N, 0.0f,
                 g->C, g->N);
}

/* Relative L2 error of C against float64 dot products at SAMPLES fixed random entries. */
static double gemm_sampled_error(const gemm_run *g, uint64_t seed)
{
    cr_rng r;
    cr_rng_seed(&r, seed);
    double err = 0.0, norm = 0.0;
    for (int s = 0; s < SAMPLES; s++) {
        const int64_t i = cr_rng_int(&r, 0, g->M - 1), j = cr_rng_int(&r, 0, g->N - 1);
        double acc = 0.0;
        for (int64_t k = 0; k < g->K; k++) acc += (double)g->A[i * g->K + k] * g->B[k * g->N + j];
        const double d = g->C[i * g->N + j] - acc;
        err += isfinite(d) ? d * d : INFINITY;
        norm += acc * acc;
    }
    return norm > 0 ? sqrt(err / norm) : sqrt(err);
}

/* An implementation in the GEMM table: a name and the largest size it is run at. */
typedef struct {
    const char *name;
    cr_gemm_fn fn;
    int64_t max_cube;   /* runs only where M*N*K <= max_cube (0: no limit) */
} gemm_impl;

/* The per-case results kept to compute ratios against the peers. */
typedef struct {
    double gf_openblas, gf_onednn;
} peer_rates;

/* Erases a live progress line on a terminal so that a table row can be printed. */
static void clear_progress(const cr_progress *prog)
{
    if (prog && prog->tty) fputs("\r\033[K", stderr);
}

/* Writes a ratio column value ("" when the peer was not measured). */
static void ratio_str(char *buf, size_t len, double ours, double peer)
{
    if (peer > 0) snprintf(buf, len, "%.3f", ours / peer);
    else buf[0] = '\0';
}

/* Validates and times one implementation on one GEMM case; prints and records it.
 * Returns 0 on a validation failure. */
static int gemm_case_impl(lab_ctx *ctx, const cr_progress *prog, const char *case_name,
                          gemm_run *g, const gemm_impl *im, int threads, double peak,
                          peer_rates *peers, double budget)
{
    const double flops = 2.0 * (double)g->M * (double)g->N * (double)g->K;
    char what[96];
    snprintf(what, sizeof what, "gemm %s %s, %d thread(s)", case_name, im->name, threads);
    g->fn = im->fn;
    for (int64_t i = 0; i < g->M * g->N; i++) g->C[i] = NAN;     /* poison */
    cr_status st = gemm_call(g);
    if (st != CR_OK) return lab_report_failure(what, st);
    const double rel = gemm_sampled_error(g, ctx->seed ^ 0x5eed);
    if (!(rel <= GEMM_TOL)) {
        clear_progress(prog);
        fprintf(stderr, "%s: FAILED validation, sampled relative L2 %.3g > %.0e\n", what, rel,
                GEMM_TOL);
        return 0;
    }
    cr_bench_result r;
    if ((st = lab_time_budget(ctx, gemm_call, g, budget, &r)) != CR_OK)
        return lab_report_failure(what, st);
    const double gf = lab_gflops(flops, r.median);
    if (strcmp(im->name, "openblas") == 0) peers->gf_openblas = gf;
    if (strcmp(im->name, "onednn") == 0) peers->gf_onednn = gf;
    char vo[16], vd[16];
    ratio_str(vo, sizeof vo, gf, peers->gf_openblas);
    ratio_str(vd, sizeof vd, gf, peers->gf_onednn);
    clear_progress(prog);
    printf("%-16s %-10s %3d %10.3f %8.1f %6.1f%% %8s %8s %9.1e\n", case_name, im->name, threads,
           r.median * 1e3, gf, peak > 0 ? 100.0 * gf / peak : 0.0, vo, vd, rel);
    fflush(stdout);
    st = lab_csv_row(ctx, "lab03,gemm,%s,%s,%d,%.4f,%.3f,%.2f,%s,%s,%zu,%.3g,%s", case_name,
                     im->name, threads, r.median * 1e3, gf, peak > 0 ? 100.0 * gf / peak : 0.0,
                     vo, vd, (size_t)0, rel,
                     strcmp(im->name, "default") == 0      ? cr_gemm_kernel_name()
                     : strcmp(im->name, "rows_apart") == 0 ? "each thread its own M/T rows"
                                                           : "");
    return st == CR_OK ? 1 : lab_report_failure("CSV", st);
}

/* A diagnostic beside the default at T > 1 threads: T independent products of M/T rows
 * each (rows [M t/T, M (t+1)/T) of A and C, all of B), one per thread, nothing shared
 * but B and the machine. Where two threads run below 2x one thread and this row does
 * too, the loss is the machine's (caches, memory, clock with both cores busy), not the
 * engine's division of the work. Row-major, no transposes (as the lab calls it). */
static cr_status gemm_rows_apart(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                                 float alpha, const float *A, int64_t lda, const float *B,
                                 int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (ta != CR_NO_TRANS) return cr_fail(CR_EINVAL, "gemm_rows_apart: ta: expected no transpose");
    cr_status st = CR_OK;
#pragma omp parallel
    {
#ifdef _OPENMP
        const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int64_t t = 0, T = 1;
#endif
        const int64_t r0 = M * t / T, r1 = M * (t + 1) / T;   /* cr_sgemm: one thread here */
        cr_status s = cr_sgemm(ta, tb, r1 - r0, N, K, alpha, A + r0 * lda, lda, B, ldb, beta,
                               C + r0 * ldc, ldc);
        if (s != CR_OK) {
#pragma omp critical(lab03_rows_apart)
            st = s;
        }
    }
    return st;
}

/* The implementations of the GEMM table: every step, the default, rows_apart (a
 * diagnostic, run at 2+ threads only), the peers found. */
static int gemm_impls(gemm_impl *out)
{
    int count, n = 0;
    const cr_gemm_step *steps = cr_gemm_steps(&count);
    for (int i = 0; i < count; i++) {
        int64_t limit = 0;   /* the slow steps only where they finish in seconds */
        if (strcmp(steps[i].name, "naive") == 0) limit = 512LL * 512 * 512;
        if (strcmp(steps[i].name, "loop_ikj") == 0 || strcmp(steps[i].name, "regblock") == 0)
            limit = 1024LL * 1024 * 1024;
        out[n++] = (gemm_impl){steps[i].name, steps[i].fn, limit};
    }
    out[n++] = (gemm_impl){"rows_apart", gemm_rows_apart, 0};   /* at 2+ threads only */
#ifdef CR_HAVE_OPENBLAS
    out[n++] = (gemm_impl){"openblas", peer_openblas, 0};
#endif
#ifdef CR_HAVE_BLIS
    out[n++] = (gemm_impl){"blis", peer_blis, 0};
#endif
#ifdef CR_HAVE_DNNL
    out[n++] = (gemm_impl){"onednn", peer_dnnl, 0};
#endif
    return n;
}

/* One GEMM case (M x N x K) for every implementation and thread count. */
static int run_gemm_case(lab_ctx *ctx, const cr_progress *prog, const char *case_name,
                         int64_t M, int64_t N, int64_t K, const int *threads, int nthreads,
                         const double *peaks, cr_rng *rng)
{
    gemm_run g = {M, N, K, NULL, NULL, NULL, NULL};
    g.A = cr_aligned_alloc((size_t)(M * K) * sizeof(float));
    g.B = cr_aligned_alloc((size_t)(K * N) * sizeof(float));
    g.C = cr_aligned_alloc((size_t)(M * N) * sizeof(float));
    int ok = 1;
    if (!g.A || !g.B || !g.C) {
        ok = lab_report_failure(case_name, cr_fail(CR_ENOMEM, "GEMM operands"));
    } else {
        for (int64_t i = 0; i < M * K; i++) g.A[i] = cr_rng_uniform_f(rng, -1, 1);
        for (int64_t i = 0; i < K * N; i++) g.B[i] = cr_rng_uniform_f(rng, -1, 1);
        gemm_impl impls[16];
        const int n = gemm_impls(impls);
        const double budget = ctx->quick ? 0.4 : 3.0;
        for (int t = 0; t < nthreads; t++) {
            set_all_threads(threads[t]);
            peer_rates peers = {0, 0};
            /* the peers first, so that every row can show its ratio to them */
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < n; i++) {
                    const int is_peer = strcmp(impls[i].name, "openblas") == 0 ||
                                        strcmp(impls[i].name, "blis") == 0 ||
                                        strcmp(impls[i].name, "onednn") == 0;
                    if (is_peer != (pass == 0)) continue;
                    if (impls[i].max_cube && (double)M * N * K > (double)impls[i].max_cube)
                        continue;
                    if (threads[t] == 1 && strcmp(impls[i].name, "rows_apart") == 0)
                        continue;   /* one thread: the default itself */
                    ok &= gemm_case_impl(ctx, prog, case_name, &g, &impls[i], threads[t],
                                         peaks[t], &peers, budget);
                }
        }
        set_all_threads(ctx->threads);
    }
    cr_aligned_free(g.A);
    cr_aligned_free(g.B);
    cr_aligned_free(g.C);
    return ok;
}

/* ---- (2) convolutions --------------------------------------------------------------------- */


/* A convolution implementation of the conv table. */
typedef struct {
    const char *name;
    cr_conv2d_fn fn;
    size_t (*workspace)(const cr_conv_shape *s);
} conv_impl;

/* Workspace of cr_conv2d_fast: that of the path it takes. */
static size_t fast_workspace(const cr_conv_shape *s)
{
    const char *path = cr_conv2d_fast_path(s);
    if (strcmp(path, "grouped") == 0) return cr_conv2d_grouped_workspace_bytes(s);
    if (strcmp(path, "gemm") == 0) return cr_conv2d_gemm_workspace_bytes(s);
    return cr_conv2d_fused_workspace_bytes(s);
}

/* The direct (grouped) path with its input layout forced, for chapter 3's layout table:
 * "grouped" above is the cost model's choice. */
static cr_status grouped_forced(int layout, const cr_conv_params *p, const cr_tensor *x,
                                const cr_tensor *w, const cr_tensor *b, cr_tensor *y)
{
    cr_grouped_force_layout(layout);
    const cr_status st = cr_conv2d_grouped(p, x, w, b, y);
    cr_grouped_force_layout(-1);
    return st;
}

/* cr_conv2d_fn: the phases layout forced. */
static cr_status grouped_phases(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                                const cr_tensor *b, cr_tensor *y)
{
    return grouped_forced(0, p, x, w, b, y);
}

/* cr_conv2d_fn: the shifted copies forced. */
static cr_status grouped_shifted(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                                 const cr_tensor *b, cr_tensor *y)
{
    return grouped_forced(1, p, x, w, b, y);
}

/* Workspace of cr_conv2d_grouped with a layout forced. */
static size_t grouped_forced_workspace(int layout, const cr_conv_shape *s)
{
    cr_grouped_force_layout(layout);
    const size_t n = cr_conv2d_grouped_workspace_bytes(s);
    cr_grouped_force_layout(-1);
    return n;
}

static size_t phases_workspace(const cr_conv_shape *s) { return grouped_forced_workspace(0, s); }
static size_t shifted_workspace(const cr_conv_shape *s) { return grouped_forced_workspace(1, s); }

static const conv_impl conv_impls[] = {
    {"gemm", cr_conv2d_gemm, cr_conv2d_gemm_workspace_bytes},
    {"fused", cr_conv2d_fused, cr_conv2d_fused_workspace_bytes},
    {"grouped", cr_conv2d_grouped, cr_conv2d_grouped_workspace_bytes},
    {"grouped_phases", grouped_phases, phases_workspace},
    {"grouped_shifted", grouped_shifted, shifted_workspace},
    {"default", cr_conv2d_fast, fast_workspace},
};

/* Prints and records one conv row. */
static int conv_row(lab_ctx *ctx, const cr_progress *prog, const char *layer, const char *impl,
                    int threads, double sec, double flops, double peak, double gf_dnnl,
                    size_t ws, double rel, const char *note)
{
    const double gf = lab_gflops(flops, sec);
    char vd[16];
    ratio_str(vd, sizeof vd, gf, gf_dnnl);
    clear_progress(prog);
    printf("%-16s %-15s %3d %10.3f %8.1f %6.1f%% %8s %12zu %9.1e %s\n", layer, impl, threads,
           sec * 1e3, gf, peak > 0 ? 100.0 * gf / peak : 0.0, vd, ws, rel, note);
    fflush(stdout);
    cr_status st = lab_csv_row(ctx, "lab03,conv,%s,%s,%d,%.4f,%.3f,%.2f,,%s,%zu,%.3g,%s", layer,
                               impl, threads, sec * 1e3, gf, peak > 0 ? 100.0 * gf / peak : 0.0,
                               vd, ws, rel, note);
    return st == CR_OK ? 1 : lab_report_failure("CSV", st);
}

/* A convolution and the function computing it (lab_time_budget's argument). */
typedef struct {
    lab_conv *c;
    cr_conv2d_fn fn;
} conv_call;

/* Runs one convolution (lab_time_budget's callback). */
static cr_status conv_call_run(void *arg)
{
    conv_call *cc = arg;
    return lab_conv_run(cc->c, cc->fn);
}

/* One standard layer: chapter 1 as the reference, then every path and oneDNN, per
 * thread count. */
static int run_conv_layer(lab_ctx *ctx, const cr_progress *prog, const lab_layer *l,
                          const int *threads, int nthreads, const double *peaks, cr_rng *rng)
{
    lab_conv c;
    cr_status st = lab_conv_alloc(&c, &l->p, l->n, l->h, l->w, rng);
    if (st != CR_OK) return lab_report_failure(l->name, st);
    cr_tensor ref = {0};
    int ok = 1;
    if ((st = lab_conv_run(&c, cr_conv2d_direct)) != CR_OK ||
        (st = cr_tensor_alloc(&ref, c.y.ndim, c.y.shape)) != CR_OK) {
        ok = lab_report_failure(l->name, st);
        lab_conv_free(&c);
        return ok;
    }
    memcpy(ref.data, c.y.data, c.y.numel * sizeof(float));
    const double flops = cr_conv_flops(&c.s);
    const double budget = ctx->quick ? 0.4 : 3.0;
    char what[96];
    for (int t = 0; t < nthreads; t++) {
        set_all_threads(threads[t]);
        double gf_dnnl = 0.0;
#ifdef CR_HAVE_DNNL
        /* built per thread count: oneDNN fixes its thread count when the primitive is made */
        lab_dnnl_conv dc;
        const lab_dnnl_types f32 = {dnnl_f32, dnnl_f32, dnnl_f32, dnnl_f32};
        lab_dnnl_conv_init(&dc, &c.p, &c.s, &f32, c.x.data, c.w.data,
                           c.p.bias ? c.b.data : NULL, c.y.data, NULL);
        if (dc.ok) {
            snprintf(what, sizeof what, "%s onednn, %d thread(s)", l->name, threads[t]);
            double rel = 0.0;
            cr_bench_result r;
            cr_tensor_poison(&c.y);
            if ((st = lab_dnnl_conv_run(&dc)) != CR_OK) {
                ok = lab_report_failure(what, st);
            } else if (!lab_check(what, &c.y, &ref, CONV_TOL, &rel)) {
                ok = 0;
            } else if ((st = lab_time_budget(ctx, lab_dnnl_conv_run, &dc, budget, &r)) != CR_OK) {
                ok = lab_report_failure(what, st);
            } else {
                gf_dnnl = lab_gflops(flops, r.median);
                ok &= conv_row(ctx, prog, l->name, "onednn", threads[t], r.median, flops,
                               peaks[t], gf_dnnl, 0, rel, dc.impl);
            }
        }
        lab_dnnl_conv_free(&dc);
#endif
        for (size_t i = 0; i < sizeof conv_impls / sizeof *conv_impls; i++) {
            const conv_impl *im = &conv_impls[i];
            snprintf(what, sizeof what, "%s %s, %d thread(s)", l->name, im->name, threads[t]);
            double rel = 0.0;
            cr_bench_result r;
            cr_tensor_poison(&c.y);
            if ((st = lab_conv_run(&c, im->fn)) != CR_OK) {
                ok = lab_report_failure(what, st);
                continue;
            }
            clear_progress(prog);
            if (!lab_check(what, &c.y, &ref, CONV_TOL, &rel)) {
                ok = 0;
                continue;
            }
            /* lab_time_conv has no budget; time through a closure of our own */
            conv_call call = {&c, im->fn};
            st = lab_time_budget(ctx, conv_call_run, &call, budget, &r);
            if (st != CR_OK) {
                ok = lab_report_failure(what, st);
                continue;
            }
            char note[64] = "";
            if (strcmp(im->name, "default") == 0)
                snprintf(note, sizeof note, "path %s; gemm kernel %s", cr_conv2d_fast_path(&c.s),
                         cr_gemm_kernel_name());
            else if (im->fn == grouped_phases || im->fn == grouped_shifted)
                snprintf(note, sizeof note, "layout forced; the cost model picks %s",
                         cr_grouped_layout_name(&c.s));
            ok &= conv_row(ctx, prog, l->name, im->name, threads[t], r.median, flops, peaks[t],
                           gf_dnnl, im->workspace(&c.s), rel, note);
        }
    }
    set_all_threads(ctx->threads);
    cr_tensor_free(&ref);
    lab_conv_free(&c);
    return ok;
}

/* ---- main ---------------------------------------------------------------------------------- */

static const int64_t full_sizes[] = {256, 512, 1024, 1536, 2048};
static const int64_t quick_sizes[] = {256, 1024};
static const char *const quick_layers[] = {"a_3x3_64", "f_3x3_g32"};
static const char *const quick_gemm_layers[] = {"a_3x3_64"};

/* Prints the column titles of the GEMM or the conv table. */
static void table_header(int conv)
{
    if (conv)
        printf("%-16s %-15s %3s %10s %8s %7s %8s %12s %9s %s\n", "layer", "impl", "thr", "ms",
               "GFLOP/s", "%peak", "/onednn", "workspace B", "rel err", "note");
    else
        printf("%-16s %-10s %3s %10s %8s %7s %8s %8s %9s\n", "case (MxNxK)", "impl", "thr", "ms",
               "GFLOP/s", "%peak", "/openblas", "/onednn", "rel err");
}

int main(int argc, char **argv)
{
    const char *sizes_arg = NULL;
    const char *only_arg = NULL;
    openblas_best_core(argv);   /* first: it may re-execute the lab */
    const cr_arg extra[] = {
        {"sizes", CR_ARG_STRING, &sizes_arg, "LIST",
         "square GEMM sizes, comma-separated (default 256,512,1024,1536,2048; quick 256,1024)",
         0, -1},
        {"only", CR_ARG_STRING, &only_arg, "PART",
         "run one part only: gemm, conv (default: both)", 0, -1},
    };
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab03-gemm",
                      "Chapter 3: GEMM from the naive loop to near peak, and convolution on top.\n"
                      "Measures the FP32 FMA peak, every GEMM step, the default and the peer\n"
                      "libraries (OpenBLAS, BLIS, oneDNN, where found at build time) on square and\n"
                      "conv-shaped products, then the standard layers as convolutions, with 1 and\n"
                      "--threads N threads. Slow steps run on small sizes only (naive <= 512^3,\n"
                      "loop_ikj and regblock <= 1024^3).",
                      extra, (int)(sizeof extra / sizeof *extra));
    if (rc != LAB_RUN) return rc;
    int64_t sizes[16];
    int nsizes;
    if (sizes_arg) {
        nsizes = lab_parse_sizes(sizes_arg, sizes, 16);
        if (nsizes <= 0) {
            fprintf(stderr, "lab03-gemm: --sizes: expected a comma-separated list of sizes "
                    "1..16384, e.g. 256,1024 (got \"%s\")\n", sizes_arg);
            return LAB_EXIT_USAGE;
        }
    } else {
        const int64_t *src = ctx.quick ? quick_sizes : full_sizes;
        nsizes = ctx.quick ? 2 : 5;
        memcpy(sizes, src, (size_t)nsizes * sizeof *sizes);
    }
    if (only_arg && strcmp(only_arg, "gemm") != 0 && strcmp(only_arg, "conv") != 0) {
        fprintf(stderr, "lab03-gemm: --only: expected gemm or conv (got \"%s\")\n", only_arg);
        return LAB_EXIT_USAGE;
    }
    lab_banner(&ctx, "chapter 3, GEMM from the naive loop to near peak");
    /* glibc keeps freed memory: on the lab's virtual machine a first touch of a page is
     * dear, and a packing buffer handed back to the kernel after every call came back as
     * fresh pages (lab 4 measured 8-15 ms instead of 1.3 for a_3x3_64's forward) */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);

    int threads[2] = {1, ctx.threads};
    const int nthreads = ctx.threads > 1 ? 2 : 1;
    const char *peers = "peers:"
#ifdef CR_HAVE_OPENBLAS
                        " openblas"
#endif
#ifdef CR_HAVE_BLIS
                        " blis"
#endif
#ifdef CR_HAVE_DNNL
                        " onednn"
#endif
                        "";
    printf("  gemm kernel %s; %s%s\n", cr_gemm_kernel_name(), peers,
           strcmp(peers, "peers:") == 0 ? " none found at build time" : "");
    printf("  openblas: %s; onednn: JIT ISA %s\n\n", openblas_note, onednn_isa());
    static const char *extra_csv[] = {
        "peak", "FP32 FMA peak: independent FMA chains per thread (12 x 8-wide AVX2, 24 x 16-wide "
        "AVX-512), summed over threads; pct_peak uses the widest the CPU has",
        "validation", "gemm: 512 sampled entries vs float64; conv: chapter 1 (relative L2)",
        "onednn_conv", "NCHW in and out, reorders inside the timed call, weights reordered once; "
        "note: the implementation oneDNN chose",
        "openblas", openblas_note, "malloc", "glibc keeps freed memory (M_TRIM_THRESHOLD 1 GiB, "
        "M_MMAP_THRESHOLD 32 MiB)", "onednn", NULL, NULL};
    const char *extra_csv_now[sizeof extra_csv / sizeof *extra_csv];
    memcpy(extra_csv_now, extra_csv, sizeof extra_csv);
    char dnnl_note[64];
    snprintf(dnnl_note, sizeof dnnl_note, "JIT ISA %s (dnnl_get_effective_cpu_isa)", onednn_isa());
    extra_csv_now[sizeof extra_csv / sizeof *extra_csv - 2] = dnnl_note;
    cr_status st = lab_csv_begin(&ctx, csv_columns, extra_csv_now);
    if (st != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    const double t0 = cr_now();
    int ok = 1;

    /* (0) the peak */
    double peaks[2] = {0, 0};
    printf("(0) FP32 FMA peak (independent FMA chains on every thread)\n");
    for (int t = 0; t < nthreads; t++) {
        const double p2 = measure_peak(threads[t], 0), p5 = measure_peak(threads[t], 1);
        peaks[t] = p5 > p2 ? p5 : p2;
        printf("  %d thread(s): AVX2 %.1f GFLOP/s, AVX-512 %s%.1f GFLOP/s\n", threads[t], p2,
               p5 > 0 ? "" : "(not on this CPU) ", p5);
        if (p2 > 0)
            ok &= lab_csv_row(&ctx, "lab03,peak,fma_chains,avx2,%d,,%.3f,%.2f,,,,,12 x 8-wide",
                              threads[t], p2, 100.0 * p2 / peaks[t]) == CR_OK;
        if (p5 > 0)
            ok &= lab_csv_row(&ctx, "lab03,peak,fma_chains,avx512,%d,,%.3f,100.00,,,,,24 x "
                              "16-wide", threads[t], p5) == CR_OK;
    }
    printf("\n");

    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int nlayers;
    const lab_layer *layers = lab_standard_layers(&nlayers);

    /* (1) GEMM: square sizes, then the conv-shaped products of the standard layers */
    if (!only_arg || strcmp(only_arg, "gemm") == 0) {
        printf("(1) GEMM, C = A B (row-major, no transposes); ratios are GFLOP/s over the peer's, "
               "same thread count\n");
        table_header(0);
        int ncases = nsizes;   /* the progress total: the cases the loops below really run */
        for (int i = 0; i < nlayers; i++)
            ncases += layers[i].n == 1 && lab_layer_selected(&ctx, layers[i].name, quick_gemm_layers,
                                                             LAB_COUNT(quick_gemm_layers));
        cr_progress prog;
        cr_progress_begin(&prog, "gemm cases", ncases);
        for (int i = 0; i < nsizes; i++) {
            char name[48];
            snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)sizes[i],
                     (long long)sizes[i], (long long)sizes[i]);
            ok &= run_gemm_case(&ctx, &prog, name, sizes[i], sizes[i], sizes[i], threads,
                                nthreads, peaks, &rng);
            cr_progress_step(&prog, name);
        }
        for (int i = 0; i < nlayers; i++) {
            const lab_layer *l = &layers[i];
            if (l->n > 1) continue;   /* batch 8 is 8 products of the batch-1 shape */
            if (!lab_layer_selected(&ctx, l->name, quick_gemm_layers,
                                    LAB_COUNT(quick_gemm_layers)))
                continue;
            cr_conv_shape s;
            if (cr_conv_shape_init(&s, &l->p, l->n, l->h, l->w) != CR_OK) continue;
            const int64_t M = s.cout_g, N = s.h_out * s.w_out,
                          K = s.cin_g * l->p.kernel_h * l->p.kernel_w;
            char name[48];
            snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
            ok &= run_gemm_case(&ctx, &prog, name, M, N, K, threads, nthreads, peaks, &rng);
            cr_progress_step(&prog, l->name);
        }
        cr_progress_end(&prog);
        printf("\n");
    }

    /* (2) the standard layers as convolutions */
    if (!only_arg || strcmp(only_arg, "conv") == 0) {
        printf("(2) standard layers, forward, NCHW in and out (workspace: bytes per concurrent "
               "GEMM or per thread)\n");
        table_header(1);
        int nconv = 0;
        for (int i = 0; i < nlayers; i++)
            nconv += lab_layer_selected(&ctx, layers[i].name, quick_layers, LAB_COUNT(quick_layers));
        cr_progress prog;
        cr_progress_begin(&prog, "layers", nconv);
        for (int i = 0; i < nlayers; i++) {
            if (!lab_layer_selected(&ctx, layers[i].name, quick_layers,
                                    LAB_COUNT(quick_layers)))
                continue;
            ok &= run_conv_layer(&ctx, &prog, &layers[i], threads, nthreads, peaks, &rng);
            cr_progress_step(&prog, layers[i].name);
        }
        cr_progress_end(&prog);
        printf("\n");
    }
    printf("%s in %.1f s\n", ok ? "all cases validated" : "VALIDATION FAILED", cr_now() - t0);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
