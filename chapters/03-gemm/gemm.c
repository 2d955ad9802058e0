/* gemm.c — chapter 3: GEMM, one step at a time.
 *
 * The portable steps (reference, loop order, register blocking), the packing
 * routines, the five-loop engine shared by steps 5 and 6, the default cr_sgemm
 * and its run-time choice of micro-kernel. The AVX2 and AVX-512 code lives in
 * gemm_avx2.c and gemm_avx512.c, compiled with their own flags, so that this
 * file (and the library) runs on any x86-64 or other CPU. */
#include "gemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm_internal.h"
#include "tensor.h"

#ifdef __SSE2__
#include <xmmintrin.h>   /* x86-64's baseline SIMD: the packing's 4 x 4 transposes */
#endif

/* ---- arguments ---------------------------------------------------------------- */

cr_status cr_gemm_check_args(const char *fn, cr_trans ta, cr_trans tb, int64_t M, int64_t N,
                             int64_t K, const float *A, int64_t lda, const float *B,
                             int64_t ldb, const float *C, int64_t ldc)
{
    if ((ta != CR_NO_TRANS && ta != CR_TRANS) || (tb != CR_NO_TRANS && tb != CR_TRANS))
        return cr_fail(CR_EINVAL, "%s: transpose flags must be CR_NO_TRANS or CR_TRANS", fn);
    if (M < 0 || N < 0 || K < 0)
        return cr_fail(CR_EINVAL, "%s: sizes must be >= 0 (M=%lld, N=%lld, K=%lld)", fn,
                       (long long)M, (long long)N, (long long)K);
    const int64_t wa = ta == CR_NO_TRANS ? K : M, wb = tb == CR_NO_TRANS ? N : K;
    if (lda < (wa > 1 ? wa : 1))
        return cr_fail(CR_EINVAL, "%s: lda = %lld, expected >= %lld (the width of A as stored)",
                       fn, (long long)lda, (long long)(wa > 1 ? wa : 1));
    if (ldb < (wb > 1 ? wb : 1))
        return cr_fail(CR_EINVAL, "%s: ldb = %lld, expected >= %lld (the width of B as stored)",
                       fn, (long long)ldb, (long long)(wb > 1 ? wb : 1));
    if (ldc < (N > 1 ? N : 1))
        return cr_fail(CR_EINVAL, "%s: ldc = %lld, expected >= %lld (N)", fn, (long long)ldc,
                       (long long)(N > 1 ? N : 1));
    if ((M > 0 && K > 0 && !A) || (K > 0 && N > 0 && !B) || (M > 0 && N > 0 && !C))
        return cr_fail(CR_EINVAL, "%s: A, B or C is NULL", fn);
    return CR_OK;
}

/* C (m x n, ldc) = beta * C, writing zeros when beta == 0 (C not read, as BLAS). */
static void scale_c(int64_t m, int64_t n, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* Strides of op(A) (M x K) and op(B) (K x N): element (i, k) of op(A) is A[i*rsa + k*csa]. */
#define OP_STRIDES()                                                         \
    const int64_t rsa = ta == CR_NO_TRANS ? lda : 1, csa = ta == CR_NO_TRANS ? 1 : lda; \
    const int64_t rsb = tb == CR_NO_TRANS ? ldb : 1, csb = tb == CR_NO_TRANS ? 1 : ldb

/* ---- step 0: the reference ------------------------------------------------------ */

// @snippet gemm_ref
cr_status cr_gemm_ref(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc)
{
    cr_status st = cr_gemm_check_args("cr_gemm_ref", ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    OP_STRIDES();
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;                       /* one dot product per element of C */
            for (int64_t k = 0; k < K; k++) acc += A[i * rsa + k * csa] * B[k * rsb + j * csb];
            C[i * ldc + j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
        }
    return CR_OK;
}
// @end gemm_ref

/* ---- step 1: loop order ------------------------------------------------------- */

// @snippet gemm_loop_ikj
cr_status cr_gemm_loop_ikj(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    cr_status st =
        cr_gemm_check_args("cr_gemm_loop_ikj", ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    OP_STRIDES();
    // @solution loop_order: scale row i of C by beta, then add alpha*A(i,k) times row k of B, for k in order (i-k-j)
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        for (int64_t k = 0; k < K; k++) {
            const float a = alpha * A[i * rsa + k * csa];  /* fixed for the inner loop */
            const float *b = B + k * rsb;                   /* row k of op(B) */
            if (csb == 1)                                   /* contiguous: vectorisable */
                for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
            else
                for (int64_t j = 0; j < N; j++) c[j] += a * b[j * csb];
        }
    }
    return CR_OK;
    // @stub
    // (void)rsa; (void)csa; (void)rsb; (void)csb; (void)alpha; (void)beta;
    // return cr_todo("loop_order");
    // @end-solution
}
// @end gemm_loop_ikj

/* ---- step 2: register blocking ---------------------------------------------------- */

void cr_gemm_tile_scalar(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                         int64_t rsa, int64_t csa, const float *B, int64_t rsb, int64_t csb,
                         float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++) acc += A[i * rsa + p * csa] * B[p * rsb + j * csb];
            float *c = &C[i * ldc + j];
            *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
        }
}

#define RB_M 4
#define RB_N 8

// @snippet gemm_regblock
/* One RB_M x RB_N tile of C over the whole depth K, its 32 sums held in registers. */
#if defined(__GNUC__) && !defined(__clang__)
/* GCC would vectorise the k loop as a reduction (shuffles everywhere); we want the tile. */
__attribute__((optimize("no-tree-loop-vectorize")))
#endif
static void
regblock_tile(int64_t K, float alpha, const float *A, int64_t rsa, int64_t csa, const float *B,
              int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc)
{
    float acc[RB_M][RB_N] = {{0}};
    for (int64_t k = 0; k < K; k++) {
        float b[RB_N];                                   /* one row of B, loaded once ... */
#pragma GCC unroll 8
        for (int j = 0; j < RB_N; j++) b[j] = B[k * rsb + j * csb];
#pragma GCC unroll 4
        for (int i = 0; i < RB_M; i++) {
            const float a = A[i * rsa + k * csa];        /* ... and one element of A per row */
#pragma GCC unroll 8
            for (int j = 0; j < RB_N; j++) acc[i][j] += a * b[j];  /* RB_M*RB_N FMAs */
        }
    }
    for (int i = 0; i < RB_M; i++)
        for (int j = 0; j < RB_N; j++) {
            float *c = &C[i * ldc + j];
            *c = alpha * acc[i][j] + (beta == 0.0f ? 0.0f : beta * *c);
        }
}

cr_status cr_gemm_regblock(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    cr_status st =
        cr_gemm_check_args("cr_gemm_regblock", ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    OP_STRIDES();
    const int64_t M0 = M - M % RB_M, N0 = N - N % RB_N;   /* the part full tiles cover */
    for (int64_t j = 0; j < N0; j += RB_N)       /* a K x 8 strip of B, reused for all i */
        for (int64_t i = 0; i < M0; i += RB_M) {
            if (csa == 1 && csb == 1)   /* the common case, constant strides for the compiler */
                regblock_tile(K, alpha, A + i * rsa, rsa, 1, B + j, rsb, 1, beta,
                              C + i * ldc + j, ldc);
            else
                regblock_tile(K, alpha, A + i * rsa, rsa, csa, B + j * csb, rsb, csb, beta,
                              C + i * ldc + j, ldc);
        }
    /* edges: the columns right of N0 (all rows), then the rows below M0 */
    cr_gemm_tile_scalar(M, N - N0, K, alpha, A, rsa, csa, B + N0 * csb, rsb, csb, beta,
                        C + N0, ldc);
    cr_gemm_tile_scalar(M - M0, N0, K, alpha, A + M0 * rsa, rsa, csa, B, rsb, csb, beta,
                        C + M0 * ldc, ldc);
    return CR_OK;
}
// @end gemm_regblock

/* ---- steps 3 and 4: SIMD and cache blocking without packing ------------------------ */

// @snippet gemm_simd
cr_status cr_gemm_simd(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc)
{
    cr_status st = cr_gemm_check_args("cr_gemm_simd", ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    if (!cr_cpu_has_avx2())   /* no AVX2: the portable step does the same work */
        return cr_gemm_regblock(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    OP_STRIDES();
    const int64_t MR = CR_UNPACKED_MR, NR = CR_UNPACKED_NR;
    const int64_t M0 = M - M % MR, N0 = N - N % NR;
    for (int64_t i = 0; i < M0; i += MR)
        for (int64_t j = 0; j < N0; j += NR)     /* a 6 x 16 tile over the whole of K */
            cr_avx2_kernel_unpacked(K, A + i * rsa, rsa, csa, B + j * csb, rsb, csb,
                                    C + i * ldc + j, ldc, alpha, beta);
    cr_gemm_tile_scalar(M, N - N0, K, alpha, A, rsa, csa, B + N0 * csb, rsb, csb, beta,
                        C + N0, ldc);
    cr_gemm_tile_scalar(M - M0, N0, K, alpha, A + M0 * rsa, rsa, csa, B, rsb, csb, beta,
                        C + M0 * ldc, ldc);
    return CR_OK;
}
// @end gemm_simd

/* Cache blocks of step 4 (the AVX2 kernel's, see cr_kernel_avx2). */
#define BL_MC 144
#define BL_KC 256
#define BL_NC 4080

// @snippet gemm_blocked
cr_status cr_gemm_blocked(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                          float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc)
{
    cr_status st =
        cr_gemm_check_args("cr_gemm_blocked", ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    if (!cr_cpu_has_avx2())
        return cr_gemm_regblock(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    OP_STRIDES();
    if (K == 0) { scale_c(M, N, beta, C, ldc); return CR_OK; }
    const int64_t MR = CR_UNPACKED_MR, NR = CR_UNPACKED_NR;
    for (int64_t jc = 0; jc < N; jc += BL_NC) {              /* loop 5: NC columns of B, C */
        const int64_t nc = N - jc < BL_NC ? N - jc : BL_NC;
        for (int64_t pc = 0; pc < K; pc += BL_KC) {          /* loop 4: KC of the depth   */
            const int64_t kc = K - pc < BL_KC ? K - pc : BL_KC;
            const float bt = pc == 0 ? beta : 1.0f;          /* later blocks accumulate   */
            for (int64_t ic = 0; ic < M; ic += BL_MC) {      /* loop 3: MC rows of A, C   */
                const int64_t mc = M - ic < BL_MC ? M - ic : BL_MC;
                const float *Ab = A + ic * rsa + pc * csa, *Bb = B + pc * rsb + jc * csb;
                float *Cb = C + ic * ldc + jc;
                const int64_t m0 = mc - mc % MR, n0 = nc - nc % NR;
                for (int64_t jr = 0; jr < n0; jr += NR)      /* loop 2: NR columns        */
                    for (int64_t ir = 0; ir < m0; ir += MR)  /* loop 1: MR rows           */
                        cr_avx2_kernel_unpacked(kc, Ab + ir * rsa, rsa, csa, Bb + jr * csb,
                                                rsb, csb, Cb + ir * ldc + jr, ldc, alpha, bt);
                cr_gemm_tile_scalar(mc, nc - n0, kc, alpha, Ab, rsa, csa, Bb + n0 * csb, rsb,
                                    csb, bt, Cb + n0, ldc);
                cr_gemm_tile_scalar(mc - m0, n0, kc, alpha, Ab + m0 * rsa, rsa, csa, Bb, rsb,
                                    csb, bt, Cb + m0 * ldc, ldc);
            }
        }
    }
    return CR_OK;
}
// @end gemm_blocked

/* ---- packing ----------------------------------------------------------------------- */

// @snippet gemm_pack
void cr_pack_strided(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                     int panel, float scale, float *dst)
{
    const cr_strided *s = ctx;
    // @solution packing: copy rows [r0, r0+rows) x depth [k0, k0+kc) into panel-wide, k-major, zero-padded panels, times scale
    const int64_t full = s->rs == 1 && scale == 1.0f && (panel == 32 || panel == 16)
                         ? rows / panel * panel : 0;
    /* B's full panels of the kernels' widths: row k of the block read once, left to
     * right (one long stream instead of a short one per panel), copied in fixed sizes */
    for (int64_t k = 0; k < kc; k++) {
        const float *src = s->p + r0 + (k0 + k) * s->cs;
        if (k + 16 < kc)   /* the row 16 ahead: each row is a new page, beyond the prefetchers */
            for (int64_t q = 0; q < full; q += 16) __builtin_prefetch(src + 16 * s->cs + q);
        if (panel == 32)
            for (int64_t q = 0; q < full; q += 32) memcpy(dst + q * kc + k * 32, src + q, 128);
        else
            for (int64_t q = 0; q < full; q += 16) memcpy(dst + q * kc + k * 16, src + q, 64);
    }
    for (int64_t q = full; q < rows; q += panel) {          /* one panel of `panel` rows */
        const int64_t h = rows - q < panel ? rows - q : panel;
        const float *src = s->p + (r0 + q) * s->rs + k0 * s->cs;
        float *d = dst + q * kc;                            /* panels are kc x panel     */
        if (s->rs == 1 && scale == 1.0f) {   /* rows side by side (B, or A transposed) */
            for (int64_t k = 0; k < kc; k++)
                memcpy(d + k * panel, src + k * s->cs, (size_t)h * sizeof(float));
        } else if (s->rs == 1) {
            for (int64_t k = 0; k < kc; k++)
                for (int64_t i = 0; i < h; i++) d[k * panel + i] = scale * src[k * s->cs + i];
        } else if (s->cs == 1) {   /* rows contiguous in k (A, or B transposed): a panel's
                                    * rows read side by side, 4 k at a time, so that every
                                    * store of the panel's k-major rows is contiguous */
            int64_t k = 0;
#ifdef __SSE2__
            if (h % 4 == 0) {   /* 4 x 4 blocks transposed in SSE registers */
                const __m128 sv = _mm_set1_ps(scale);
                for (; k + 4 <= kc; k += 4) {
                    if (k % 16 == 0 && q + panel < rows)   /* the next panel's rows: short */
                        for (int64_t i = 0; i < panel; i++)   /* streams, prefetched */
                            __builtin_prefetch(src + (panel + i) * s->rs + k);
                    for (int64_t i = 0; i < h; i += 4) {
                        const float *r = src + i * s->rs + k;
                        __m128 r0 = _mm_loadu_ps(r), r1 = _mm_loadu_ps(r + s->rs);
                        __m128 r2 = _mm_loadu_ps(r + 2 * s->rs), r3 = _mm_loadu_ps(r + 3 * s->rs);
                        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                        _mm_storeu_ps(d + k * panel + i, _mm_mul_ps(sv, r0));
                        _mm_storeu_ps(d + (k + 1) * panel + i, _mm_mul_ps(sv, r1));
                        _mm_storeu_ps(d + (k + 2) * panel + i, _mm_mul_ps(sv, r2));
                        _mm_storeu_ps(d + (k + 3) * panel + i, _mm_mul_ps(sv, r3));
                    }
                }
            }
#endif
            for (; k < kc; k++)
                for (int64_t i = 0; i < h; i++) d[k * panel + i] = scale * src[i * s->rs + k];
        } else {                   /* general strides */
            for (int64_t k = 0; k < kc; k++)
                for (int64_t i = 0; i < h; i++) d[k * panel + i] = scale * src[k * s->cs + i * s->rs];
        }
        for (int64_t k = 0; k < kc; k++)                    /* the edge: pad with zeros  */
            for (int64_t i = h; i < panel; i++) d[k * panel + i] = 0.0f;
    }
    // @stub
    // (void)s; (void)r0; (void)rows; (void)k0; (void)kc; (void)panel; (void)scale;
    // (void)dst;
    // (void)cr_todo("packing"); /* TODO: fill every panel */
    // @end-solution
}
// @end gemm_pack

/* ---- the portable micro-kernel ------------------------------------------------------ */

#define PT_MR 4
#define PT_NR 8

/* cr_ukernel_fn in plain C (4 x 8); compilers vectorise the j loop with whatever SIMD the
 * baseline target has (SSE2 on x86-64, NEON on arm64). */
static void portable_kernel(int64_t kc, const float *Ap, const float *Bp, float *C,
                            int64_t ldc, float beta)
{
    float acc[PT_MR][PT_NR] = {{0}};
    for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < PT_MR; i++)
            for (int j = 0; j < PT_NR; j++) acc[i][j] += Ap[k * PT_MR + i] * Bp[k * PT_NR + j];
    for (int i = 0; i < PT_MR; i++)
        for (int j = 0; j < PT_NR; j++)
            C[i * ldc + j] = acc[i][j] + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
}

const cr_gemm_kernel cr_kernel_portable = {"portable", PT_MR, PT_NR, 128, 256, 4096,
                                           portable_kernel, NULL, NULL, NULL};

/* ---- the engine: five loops around the micro-kernel ---------------------------------- */

/* Calls of cr_gemm_threads_available made inside a parallel region of one thread. */
static atomic_long one_thread_region_calls;

int cr_gemm_threads_available(void)
{
#ifdef _OPENMP
    /* inside a region of one thread (an `if` that was false), omp_in_parallel() is false
       and a fork here would start a nested team: count it, tests expect none */
    if (omp_get_level() > 0 && omp_get_active_level() == 0)
        atomic_fetch_add(&one_thread_region_calls, 1);
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

long cr_gemm_one_thread_region_calls(void)
{
    return atomic_load(&one_thread_region_calls);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* Bytes up to which the whole of A is packed once per call, before the loops, rather than
 * block by block inside loop 5: a small M (a convolution's Cout_g) has many NC blocks, and
 * repacking A for every one of them cost more than packing B. */
#define PREPACK_A_BYTES ((size_t)1 << 20)

/* How one call shares its work among its threads and which buffers it needs. */
typedef struct {
    int nt;              /* threads the call plans for */
    int split_n;         /* 1: each thread its own range of NR panels of N; 0: the MC
                          * blocks of A dealt round the threads (few NR panels). Either
                          * way each thread packs its own B blocks: no barrier in the loops */
    int64_t mc, kc, nc;  /* blocks; kc: the depth cut into even blocks of at most kd->kc */
    size_t pre_floats;   /* the whole of A packed once per thread (0: block by block) */
    size_t a_floats;     /* one A block per thread (0 when A is prepacked) */
    size_t b_floats;     /* one B block, per thread */
} engine_plan;
/* Each thread allocates its own buffers (prepacked A, A block, B block) in one piece, and
 * packs A itself: no barrier, and no buffer beside another thread's. With the threads'
 * B blocks side by side in one allocation, two threads ran 64x3136x576 at 1.3x one
 * thread, against 2.0x with buffers of their own (lab 3's machine, 2026-11-30). */

/* Columns per NC block over a width of `width` columns: the kernel's NC, unless all of M
 * fits in one MC block. Then each packed B block is used once, and 8 NR panels (in L2
 * when the micro-kernel reads them) are as good as many, with a much smaller buffer:
 * what keeps the fused convolution's workspace small. The blocks are as even as whole
 * panels allow, so that the last one is not a sliver. */
static int64_t block_nc(const cr_gemm_kernel *kd, int64_t M, int64_t mc, int64_t width)
{
    const int64_t most = M > mc ? kd->nc : min64(kd->nc, 8 * (int64_t)kd->nr);
    const int64_t blocks = (width + most - 1) / most;
    return min64(most, round_up((width + blocks - 1) / blocks, kd->nr));
}

/* The plan of an M x N x K product on nt threads with kernel kd. */
static engine_plan plan_engine(const cr_gemm_kernel *kd, int64_t M, int64_t N, int64_t K,
                               int nt)
{
    engine_plan p;
    const int64_t panels = (N + kd->nr - 1) / kd->nr, depth = K > 0 ? K : 1;
    p.nt = nt;
    p.split_n = nt == 1 || panels >= 4 * (int64_t)nt;   /* at least 4 panels a thread */
    /* sharing MC blocks: at least one per thread (MR-aligned), even when all of M fits in
     * one kernel MC block */
    p.mc = p.split_n ? kd->mc : min64(kd->mc, round_up((M + nt - 1) / nt, kd->mr));
    const int64_t kblocks = (depth + kd->kc - 1) / kd->kc;
    p.kc = (depth + kblocks - 1) / kblocks;
    const int64_t width = p.split_n ? (panels + nt - 1) / nt * kd->nr : N;
    p.nc = block_nc(kd, M, p.mc, width > 0 ? width : 1);
    const size_t pre = (size_t)round_up(M, kd->mr) * (size_t)depth;
    p.pre_floats = pre * sizeof(float) <= PREPACK_A_BYTES ? pre : 0;
    p.a_floats = p.pre_floats ? 0 : (size_t)(p.kc * min64(p.mc, round_up(M, kd->mr)));
    p.b_floats = (size_t)(p.kc * p.nc);
    return p;
}

/* Floats of all the buffers of plan p: prepacked A, A blocks, B blocks. */
static size_t plan_floats(const engine_plan *p)
{
    return (p->pre_floats + p->a_floats + p->b_floats) * (size_t)p->nt;
}

size_t cr_gemm_engine_workspace(const cr_gemm_kernel *kd, int64_t M, int64_t N, int64_t K,
                                int threads)
{
    const engine_plan p = plan_engine(kd, M, N, K, threads > 0 ? threads : 1);
    return plan_floats(&p) * sizeof(float);
}

// @snippet gemm_b_in_place
/* One ic block against the packed B block: the micro-tiles of NR-panels [p0, p1),
 * every MR-panel of the packed A block. Edge tiles go through a local tile. With Brow
 * (not NULL), B's full panels are read in place, row k of the block at Brow + k * ldb
 * (only the edge panel is in Bp), and the first tile of each panel prefetches the next
 * one: with the caches flushed (a harness, one thread), 64x3136x576 ran at 145 GFLOP/s in
 * place without it and 180 with it (its rows are 12.5 KB apart, no prefetcher follows). */
static void macro_kernel(const cr_gemm_kernel *kd, int64_t mc, int64_t nc, int64_t kc,
                         const float *Ap, const float *Bp, const float *Brow, int64_t ldb,
                         int64_t p0, int64_t p1, float beta, float *C, int64_t ldc)
{
    const int MR = kd->mr, NR = kd->nr;
    _Alignas(64) float tile[CR_MAX_MR * CR_MAX_NR];
    for (int64_t jp = p0; jp < p1; jp++) {                   /* loop 2: one NR panel of B */
        const int64_t jr = jp * NR, nr = min64(NR, nc - jr);
        const int in_place = Brow && nr == NR;
        for (int64_t ir = 0; ir < mc; ir += MR) {            /* loop 1: one MR panel of A */
            const int64_t mr = min64(MR, mc - ir);
            float *c = C + ir * ldc + jr;
            const float *a = Ap + ir * kc, *b = Bp + jr * kc;
            const int full = mr == MR && nr == NR;        /* else: a full tile aside */
            float *t = full ? c : tile;
            /* B's own rows, no copy; the panel's first tile prefetches the next panel */
            const float *next = in_place && ir == 0 && jr + 2 * NR <= nc ? Brow + jr + NR : NULL;
            if (in_place) kd->kernel_ldb(kc, a, Brow + jr, ldb, next, t, full ? ldc : NR,
                                         full ? beta : 0.0f);
            else if (nr <= NR / 2 && kd->kernel_half) kd->kernel_half(kc, a, b, tile, NR, 0.0f);
            else kd->kernel(kc, a, b, t, full ? ldc : NR, full ? beta : 0.0f);
            if (full) continue;
            for (int64_t i = 0; i < mr; i++)                  /* the edge tile's part */
                for (int64_t j = 0; j < nr; j++)
                    c[i * ldc + j] = tile[i * NR + j] +
                                     (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]);
        }
    }
}
// @end gemm_b_in_place

/* The operands and buffers of one call, as its threads see them. */
typedef struct {
    const cr_gemm_kernel *kd;
    const engine_plan *pl;
    int64_t M, N, K;
    const cr_gemm_operand *A, *B;
    float alpha, beta;
    float *C;
    int64_t ldc;
    float *pre;   /* the whole packed A (NULL: packed block by block) */
    int b_in_place;   /* B's full panels read where they are (see cr_gemm_engine) */
} engine_call;

/* The packed A block of rows [ic, ic+mc) and depth [pc, pc+kc): in the prepacked A
 * (blocks of one depth range side by side, MR-row panels), or packed now into Ap. */
static const float *a_block(const engine_call *e, int64_t ic, int64_t mc, int64_t pc,
                            int64_t kc, float *Ap)
{
    const int64_t rows = round_up(e->M, e->kd->mr);
    if (e->pre) return e->pre + rows * pc + ic * kc;
    e->A->pack(e->A->ctx, ic, mc, pc, kc, e->kd->mr, e->alpha, Ap);
    return Ap;
}

/* Packs into this thread's e->pre the blocks of A it uses: (ic block number ib, depth
 * block kb) with ib % T == tid when by_rows (the row blocks dealt to it), else all. */
static void prepack_a(const engine_call *e, int tid, int T, int by_rows)
{
    const engine_plan *pl = e->pl;
    const int64_t rows = round_up(e->M, e->kd->mr);
    for (int64_t pc = 0; pc < e->K; pc += pl->kc) {
        const int64_t kc = min64(pl->kc, e->K - pc);
        int64_t ib = 0;
        for (int64_t ic = 0; ic < e->M; ic += pl->mc, ib++)
            if (!by_rows || ib % T == tid)
                e->A->pack(e->A->ctx, ic, min64(pl->mc, e->M - ic), pc, kc, e->kd->mr,
                           e->alpha, e->pre + rows * pc + ic * kc);
    }
}

// @snippet gemm_engine
/* One thread's share of C with its own buffers, loops 5 to 1: columns [n0, n1), and of
 * the MC blocks of rows either all (deal == 0) or those numbered tid, tid + T, ... */
static void engine_part(const engine_call *e, int64_t n0, int64_t n1, int deal, int tid,
                        int T, float *Ap, float *Bp)
{
    const engine_plan *pl = e->pl;
    const int NR = e->kd->nr;
    for (int64_t jc = n0; jc < n1; jc += pl->nc) {               /* loop 5: NC columns   */
        const int64_t nc = min64(pl->nc, n1 - jc), np = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < e->K; pc += pl->kc) {          /* loop 4: KC of depth  */
            const int64_t kc = min64(pl->kc, e->K - pc);
            const int64_t edge = e->b_in_place ? nc / NR * NR : 0;  /* first packed column */
            if (edge < nc)                          /* this thread's copy (in place: the edge) */
                e->B->pack(e->B->ctx, jc + edge, nc - edge, pc, kc, NR, 1.0f, Bp + edge * kc);
            const float *Brow = e->b_in_place ? e->B->rows + pc * e->B->ld + jc : NULL;
            int64_t blk = 0;
            for (int64_t ic = 0; ic < e->M; ic += pl->mc, blk++) {  /* loop 3: MC rows   */
                if (deal && blk % T != tid) continue;
                const int64_t mc = min64(pl->mc, e->M - ic);
                macro_kernel(e->kd, mc, nc, kc, a_block(e, ic, mc, pc, kc, Ap), Bp, Brow,
                             e->B->ld, 0, np, pc == 0 ? e->beta : 1.0f, e->C + ic * e->ldc + jc,
                             e->ldc);
            }
        }
    }
}

cr_status cr_gemm_engine(const cr_gemm_kernel *kd, int64_t M, int64_t N, int64_t K,
                         const cr_gemm_operand *A, const cr_gemm_operand *B, float alpha,
                         float beta, float *C, int64_t ldc, int threads)
{
    if (M == 0 || N == 0) return CR_OK;
    if (K == 0 || alpha == 0.0f) { scale_c(M, N, beta, C, ldc); return CR_OK; }
    const int nt = threads == 1 ? 1 : cr_gemm_threads_available();
    const engine_plan pl = plan_engine(kd, M, N, K, nt);
    const size_t own = pl.pre_floats + pl.a_floats + pl.b_floats;   /* floats per thread */
    /* B in place pays where each of its panels serves all of A from L1 (one MC block);
       for a large M, packing is shared by more rows and the copy's order wins */
    const int in_place = B->rows && kd->kernel_ldb && M <= kd->mc;
    const engine_call e = {kd, &pl, M, N, K, A, B, alpha, beta, C, ldc, NULL, in_place};
    int oom = 0;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(|| : oom)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int tid = 0, T = 1;
#endif
        const int works = pl.split_n || tid < (M + pl.mc - 1) / pl.mc;
        float *buf = works ? cr_aligned_alloc(own * sizeof(float)) : NULL;
        if (works && !buf) oom = 1;
        if (buf) {
            engine_call et = e;   /* this thread's view: its own prepacked A */
            et.pre = pl.pre_floats ? buf : NULL;
            float *Ap = buf + pl.pre_floats, *Bp = Ap + pl.a_floats;
            if (pl.split_n) {
                /* each thread its own range of whole NR panels */
                if (et.pre) prepack_a(&et, tid, T, 0);
                const int64_t panels = (N + kd->nr - 1) / kd->nr;
                engine_part(&et, min64(N, panels * tid / T * kd->nr),
                            min64(N, panels * (tid + 1) / T * kd->nr), 0, tid, T, Ap, Bp);
            } else {
                /* too few panels: the MC blocks of rows dealt round, every thread packing
                 * the B blocks it needs itself (twice the packing of B, no barrier) */
                if (et.pre) prepack_a(&et, tid, T, 1);   /* the A blocks it uses */
                engine_part(&et, 0, N, 1, tid, T, Ap, Bp);
            }
            cr_aligned_free(buf);
        }
    }
    /* a thread without its buffers computed nothing: C is incomplete */
    if (oom)
        return cr_fail(CR_ENOMEM, "gemm: packing buffers of %zu bytes per thread: out of memory",
                       own * sizeof(float));
    return CR_OK;
}
// @end gemm_engine

/* ---- steps 5, 6 and the default ------------------------------------------------------ */

/* The packed steps with kernel kd: operands as strided views, then the engine. */
static cr_status gemm_packed_with(const char *fn, const cr_gemm_kernel *kd, int threads,
                                  cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                                  float alpha, const float *A, int64_t lda, const float *B,
                                  int64_t ldb, float beta, float *C, int64_t ldc)
{
    cr_status st = cr_gemm_check_args(fn, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    // @snippet gemm_transposes
    /* op(A) as M x K rows, op(B) as its transpose, N x K: the transposes are strides. */
    const cr_strided a = {A, ta == CR_NO_TRANS ? lda : 1, ta == CR_NO_TRANS ? 1 : lda};
    const cr_strided b = {B, tb == CR_NO_TRANS ? 1 : ldb, tb == CR_NO_TRANS ? ldb : 1};
    const cr_gemm_operand oa = {cr_pack_strided, &a, NULL, 0},
                          ob = {cr_pack_strided, &b, tb == CR_NO_TRANS ? B : NULL, ldb};
    return cr_gemm_engine(kd, M, N, K, &oa, &ob, alpha, beta, C, ldc, threads);
    // @end gemm_transposes
}

/* The kernel of steps 5 and 6: AVX2 where the CPU has it, else the portable one. */
static const cr_gemm_kernel *avx2_or_portable(void)
{
    return cr_cpu_has_avx2() ? &cr_kernel_avx2 : &cr_kernel_portable;
}

cr_status cr_gemm_packed(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                         float alpha, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float beta, float *C, int64_t ldc)
{
    return gemm_packed_with("cr_gemm_packed", avx2_or_portable(), 1, ta, tb, M, N, K, alpha,
                            A, lda, B, ldb, beta, C, ldc);
}

cr_status cr_gemm_parallel(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    return gemm_packed_with("cr_gemm_parallel", avx2_or_portable(), 0, ta, tb, M, N, K, alpha,
                            A, lda, B, ldb, beta, C, ldc);
}

cr_status cr_sgemm(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                   float *C, int64_t ldc)
{
    return gemm_packed_with("cr_sgemm", cr_gemm_kernel_for(cr_gemm_active_kernel(), M), 0, ta,
                            tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ---- run-time dispatch ---------------------------------------------------------------- */

// @snippet gemm_dispatch
int cr_cpu_has_avx2(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int cr_cpu_has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && cr_cpu_has_avx2();
#else
    return 0;
#endif
}

int cr_gemm_kernel_supported(const char *name)
{
    if (!name) return 0;
    if (strcmp(name, "portable") == 0) return 1;
    if (strcmp(name, "avx2") == 0) return cr_cpu_has_avx2();
    if (strcmp(name, "avx512") == 0) return cr_cpu_has_avx512();
    return 0;
}

static const cr_gemm_kernel *_Atomic active;  /* NULL until first use */

/* The best kernel this CPU runs. */
static const cr_gemm_kernel *best_kernel(void)
{
    if (cr_cpu_has_avx512()) return &cr_kernel_avx512;
    if (cr_cpu_has_avx2()) return &cr_kernel_avx2;
    return &cr_kernel_portable;
}

cr_status cr_gemm_set_kernel(const char *name)
{
    if (name && strcmp(name, "auto") == 0) {
        active = best_kernel();
        return CR_OK;
    }
    if (!cr_gemm_kernel_supported(name))
        return cr_fail(CR_EINVAL, "gemm kernel \"%s\": expected auto, portable, avx2 or avx512 "
                       "(one this CPU supports)", name ? name : "(null)");
    active = strcmp(name, "portable") == 0 ? &cr_kernel_portable
             : strcmp(name, "avx2") == 0   ? &cr_kernel_avx2
                                           : &cr_kernel_avx512;
    return CR_OK;
}

const cr_gemm_kernel *cr_gemm_active_kernel(void)
{
    const cr_gemm_kernel *k = active;
    if (!k) {   /* first use: CR_GEMM_KERNEL if it names a usable kernel, else the best */
        const char *env = getenv("CR_GEMM_KERNEL");
        k = best_kernel();
        if (env && strcmp(env, "portable") == 0) k = &cr_kernel_portable;
        if (env && strcmp(env, "avx2") == 0 && cr_cpu_has_avx2()) k = &cr_kernel_avx2;
        if (env && strcmp(env, "avx512") == 0 && cr_cpu_has_avx512()) k = &cr_kernel_avx512;
        active = k;  /* threads racing here all store the same value */
    }
    return k;
}
// @end gemm_dispatch

const cr_gemm_kernel *cr_gemm_kernel_for(const cr_gemm_kernel *k, int64_t M)
{
    return k == &cr_kernel_avx512 && M <= 256 ? &cr_kernel_avx512_small_m : k;
}

const char *cr_gemm_kernel_name(void) { return cr_gemm_active_kernel()->name; }

static const cr_gemm_step steps[] = {
    {"naive", cr_gemm_ref, "reference triple loop (i-j-k)"},
    {"loop_ikj", cr_gemm_loop_ikj, "loop order i-k-j"},
    {"regblock", cr_gemm_regblock, "4x8 register blocking, scalar"},
    {"simd", cr_gemm_simd, "AVX2+FMA 6x16 micro-kernel, unpacked"},
    {"blocked", cr_gemm_blocked, "+ cache blocking (MC, KC, NC)"},
    {"packed", cr_gemm_packed, "+ packed panels, edge tiles"},
    {"parallel", cr_gemm_parallel, "+ OpenMP over the jr loop"},
    {"default", cr_sgemm, "cr_sgemm: best kernel of this CPU"},
};

const cr_gemm_step *cr_gemm_steps(int *count)
{
    *count = (int)(sizeof steps / sizeof *steps);
    return steps;
}
