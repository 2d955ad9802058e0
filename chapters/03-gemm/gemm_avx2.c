/* gemm_avx2.c — chapter 3: the AVX2 + FMA micro-kernels (6 x 16).
 *
 * Every function here carries __attribute__((target("avx2,fma"))), so this file
 * compiles with the project's ordinary flags (never -march=native) and nothing in
 * it runs unless cr_cpu_has_avx2() said yes: the library still runs on a CPU
 * without AVX2. On other architectures it compiles to placeholders never called. */
#include "gemm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Every function here may use AVX2 and FMA (and is called only where the CPU has them). */
#define CR_AVX2 __attribute__((target("avx2,fma")))

/* Writes one 16-wide row of a tile: c = v + beta * c (c not read when beta == 0). */
CR_AVX2 static inline void store_row16(float *c, __m256 v0, __m256 v1, float beta)
{
    if (beta == 0.0f) {
        _mm256_storeu_ps(c, v0);
        _mm256_storeu_ps(c + 8, v1);
    } else if (beta == 1.0f) {
        _mm256_storeu_ps(c, _mm256_add_ps(_mm256_loadu_ps(c), v0));
        _mm256_storeu_ps(c + 8, _mm256_add_ps(_mm256_loadu_ps(c + 8), v1));
    } else {
        const __m256 bv = _mm256_set1_ps(beta);
        _mm256_storeu_ps(c, _mm256_fmadd_ps(bv, _mm256_loadu_ps(c), v0));
        _mm256_storeu_ps(c + 8, _mm256_fmadd_ps(bv, _mm256_loadu_ps(c + 8), v1));
    }
}

// @snippet ukernel_avx2
/* One k step of a row: broadcast A's element, two FMAs into the row's accumulators. */
#define ROW_FMA(r, a_ptr)                                   \
    do {                                                    \
        const __m256 av_ = _mm256_broadcast_ss(a_ptr);      \
        c##r##0 = _mm256_fmadd_ps(av_, b0, c##r##0);        \
        c##r##1 = _mm256_fmadd_ps(av_, b1, c##r##1);        \
    } while (0)

/* cr_ukernel_fn, 6 x 16: twelve ymm accumulators (6 rows x 2 vectors of 8), two ymm
 * for the row of B, one for the broadcast element of A: 15 of the 16 registers. */
CR_AVX2 static void avx2_kernel_6x16(int64_t kc, const float *Ap, const float *Bp, float *C,
                             int64_t ldc, float beta)
{
    // @solution micro_kernel: keep the 6x16 tile in 12 ymm accumulators; per k, load 16 of B, broadcast 6 of A, 12 FMAs
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
        ROW_FMA(0, Ap + 0);
        ROW_FMA(1, Ap + 1);
        ROW_FMA(2, Ap + 2);
        ROW_FMA(3, Ap + 3);
        ROW_FMA(4, Ap + 4);
        ROW_FMA(5, Ap + 5);
        Ap += 6;
        Bp += 16;
    }
    store_row16(C + 0 * ldc, c00, c01, beta);
    store_row16(C + 1 * ldc, c10, c11, beta);
    store_row16(C + 2 * ldc, c20, c21, beta);
    store_row16(C + 3 * ldc, c30, c31, beta);
    store_row16(C + 4 * ldc, c40, c41, beta);
    store_row16(C + 5 * ldc, c50, c51, beta);
    // @stub
    // (void)kc; (void)Ap; (void)Bp; (void)beta;
    // for (int i = 0; i < 6; i++) for (int j = 0; j < 16; j++) C[i * ldc + j] = 0.0f;
    // (void)cr_todo("micro_kernel"); /* TODO: the tile in registers */
    // @end-solution
}
// @end ukernel_avx2

/* Loads 8 consecutive elements of a row of B whose elements are cs apart. */
CR_AVX2 static inline __m256 load8_strided(const float *p, int64_t cs)
{
    if (cs == 1) return _mm256_loadu_ps(p);
    return _mm256_setr_ps(p[0], p[cs], p[2 * cs], p[3 * cs], p[4 * cs], p[5 * cs], p[6 * cs],
                          p[7 * cs]);
}

// @snippet ukernel_unpacked
CR_AVX2 void cr_avx2_kernel_unpacked(int64_t kc, const float *A, int64_t rsa, int64_t csa,
                             const float *B, int64_t rsb, int64_t csb, float *C, int64_t ldc,
                             float alpha, float beta)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        /* row k of B: 16 floats a row stride apart from the previous k (no locality) */
        const __m256 b0 = load8_strided(B + k * rsb, csb);
        const __m256 b1 = load8_strided(B + k * rsb + 8 * csb, csb);
        const float *ak = A + k * csa;   /* column k of A: six elements rsa apart */
        ROW_FMA(0, ak + 0 * rsa);
        ROW_FMA(1, ak + 1 * rsa);
        ROW_FMA(2, ak + 2 * rsa);
        ROW_FMA(3, ak + 3 * rsa);
        ROW_FMA(4, ak + 4 * rsa);
        ROW_FMA(5, ak + 5 * rsa);
    }
    const __m256 al = _mm256_set1_ps(alpha);
    store_row16(C + 0 * ldc, _mm256_mul_ps(al, c00), _mm256_mul_ps(al, c01), beta);
    store_row16(C + 1 * ldc, _mm256_mul_ps(al, c10), _mm256_mul_ps(al, c11), beta);
    store_row16(C + 2 * ldc, _mm256_mul_ps(al, c20), _mm256_mul_ps(al, c21), beta);
    store_row16(C + 3 * ldc, _mm256_mul_ps(al, c30), _mm256_mul_ps(al, c31), beta);
    store_row16(C + 4 * ldc, _mm256_mul_ps(al, c40), _mm256_mul_ps(al, c41), beta);
    store_row16(C + 5 * ldc, _mm256_mul_ps(al, c50), _mm256_mul_ps(al, c51), beta);
}
// @end ukernel_unpacked

/* Block sizes for Zen 2 (32 KiB L1d, 512 KiB L2 per core, 16 MiB L3 per 4 cores):
 * KC = 256: a B micro-panel is 256 x 16 x 4 B = 16 KiB, half of L1d;
 * MC = 144: the packed A block is 144 x 256 x 4 B = 144 KiB, about a quarter of L2;
 * NC = 4080: the packed B block is 256 x 4080 x 4 B = 4 MiB, a quarter of L3. */
const cr_gemm_kernel cr_kernel_avx2 = {"avx2", 6, 16, 144, 256, 4080, avx2_kernel_6x16, NULL, NULL,
                                       NULL};

#else /* not x86-64 with AVX2: placeholders, never called (cr_cpu_has_avx2() is 0) */

/* Never called: the placeholder of a kernel this build does not have. */
static void no_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                      float beta)
{
    (void)kc; (void)Ap; (void)Bp; (void)C; (void)ldc; (void)beta;
}

void cr_avx2_kernel_unpacked(int64_t kc, const float *A, int64_t rsa, int64_t csa,
                             const float *B, int64_t rsb, int64_t csb, float *C, int64_t ldc,
                             float alpha, float beta)
{
    cr_gemm_tile_scalar(6, 16, kc, alpha, A, rsa, csa, B, rsb, csb, beta, C, ldc);
}

const cr_gemm_kernel cr_kernel_avx2 = {"avx2", 6, 16, 144, 256, 4080, no_kernel, NULL, NULL, NULL};
#endif
