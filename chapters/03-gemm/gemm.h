/* gemm.h — chapter 3: single-precision GEMM from the naive loop to near the
 * machine's peak, one named step at a time.
 *
 * Every step computes the same thing, with BLAS semantics on row-major storage:
 *
 *     C = alpha * op(A) * op(B) + beta * C
 *
 * op(A) is M x K: A itself (M x K, lda >= K) or, with CR_TRANS, the transpose of
 * a K x M matrix (lda >= M). op(B) is K x N: B (K x N, ldb >= N) or, with
 * CR_TRANS, the transpose of an N x K matrix (ldb >= K). C is M x N, ldc >= N.
 * As in BLAS, beta == 0 means C is not read (NaN in C is ignored), and with
 * K == 0 or alpha == 0 the product term is absent. Sizes may be 0.
 *
 * All steps share one signature (cr_gemm_fn), so the tests and the lab run a
 * table of them. They fail with CR_EINVAL for negative sizes, short leading
 * dimensions or NULL pointers, and with CR_ENOMEM if packing buffers cannot be
 * allocated. */
#ifndef CR_GEMM_H
#define CR_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {  /* chapter 5 calls these from CUDA C++ */
#endif

typedef enum { CR_NO_TRANS = 0, CR_TRANS = 1 } cr_trans;

/* C (M x N, ldc) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C; row-major. */
typedef cr_status (*cr_gemm_fn)(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                                float alpha, const float *A, int64_t lda, const float *B,
                                int64_t ldb, float beta, float *C, int64_t ldc);

/* Step 0, the reference: chapter 2's triple loop (i, j, k), one dot product per element. */
cr_status cr_gemm_ref(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc);
/* Step 1, loop order: i, k, j, so the inner loop streams along rows of B and C. */
cr_status cr_gemm_loop_ikj(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc);
/* Step 2, register blocking: a 4 x 8 tile of C held in scalar accumulators over all of K. */
cr_status cr_gemm_regblock(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc);
/* Step 3, SIMD: an AVX2+FMA 6 x 16 micro-kernel read straight from A and B (no blocking). */
cr_status cr_gemm_simd(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc);
/* Step 4, cache blocking: step 3 inside the NC / KC / MC loops, still without packing. */
cr_status cr_gemm_blocked(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                          float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc);
/* Step 5, packing: A and B copied into contiguous MR- and NR-wide panels (edge tiles
 * zero-padded), the AVX2 micro-kernel on the panels; one thread. */
cr_status cr_gemm_packed(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                         float alpha, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float beta, float *C, int64_t ldc);
/* Step 6, threads: step 5 with the jr loop (NR-wide column panels) shared by OpenMP threads. */
cr_status cr_gemm_parallel(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc);
/* Checks a GEMM call's arguments as BLAS does (flags, sizes >= 0, leading dimensions,
 * NULL pointers); fails with CR_EINVAL naming the bad one and the caller fn. */
cr_status cr_gemm_check_args(const char *fn, cr_trans ta, cr_trans tb, int64_t M, int64_t N,
                             int64_t K, const float *A, int64_t lda, const float *B,
                             int64_t ldb, const float *C, int64_t ldc);

/* The library's default: step 6 with the best micro-kernel this CPU runs (AVX-512,
 * AVX2+FMA, or portable C), chosen at run time. */
cr_status cr_sgemm(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                   float *C, int64_t ldc);

/* ---- the micro-kernel in use ------------------------------------------------ */

/* Name of the micro-kernel cr_sgemm uses now: "avx512", "avx2" or "portable". */
const char *cr_gemm_kernel_name(void);
/* Forces the micro-kernel of cr_sgemm ("avx512", "avx2", "portable", or "auto" for the
 * best this CPU supports); fails with CR_EINVAL for an unknown name or one the CPU
 * cannot run. The environment variable CR_GEMM_KERNEL sets the initial choice.
 * Without AVX2+FMA, steps 3-6 run their portable counterparts. */
cr_status cr_gemm_set_kernel(const char *name);
/* True if this CPU runs the named kernel ("portable" always). */
int cr_gemm_kernel_supported(const char *name);

/* One step of the progression, for tables: name ("ref", "loop_ikj", ...) and function. */
typedef struct {
    const char *name;
    cr_gemm_fn fn;
    const char *what;  /* one line for tables and messages */
} cr_gemm_step;
/* The steps in reading order, the default (cr_sgemm, named "default") last; *count receives
 * their number. */
const cr_gemm_step *cr_gemm_steps(int *count);

#ifdef __cplusplus
}
#endif

#endif
