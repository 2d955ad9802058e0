/* gemm_avx512.c — chapter 3: the AVX-512 micro-kernel, for CPUs that have it.
 *
 * Not a step of the progression: the same contract as the AVX2 kernel with
 * registers twice as wide and twice as many (32 zmm). Its functions carry
 * target("avx512f,avx2,fma"); they run only where cr_cpu_has_avx512() says yes. */
#include "gemm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Every function here may use AVX-512 (and is called only where the CPU has it). */
#define CR_AVX512 __attribute__((target("avx512f,avx2,fma")))

#define NR 32

// @snippet ukernel_avx512
/* cr_ukernel_fn, MR x 32 for MR = 12 or 8: MR*2 zmm accumulators (MR rows x 2 vectors of
 * 16), two zmm for the row of B, one for the broadcast of A: 27 (or 19) of 32 registers.
 * B's rows are ldb floats apart: NR in a packed panel, or B's own row stride; next (NULL
 * but for B in place) is a panel to prefetch row by row. NV = 1: the left 16 columns only
 * (a panel's edge of at most 16 columns, computed without its zero half). SEG = 1: B in
 * segments (cr_ukernel_seg_fn), skip floats more after the first `left` rows and then
 * after every `seg` rows. */
CR_AVX512 static inline __attribute__((always_inline)) void
avx512_kernel(const int MR, const int NV, int64_t kc, const float *Ap, const float *Bp,
              int64_t ldb, const float *next, float *C, int64_t ldc, float beta,
              const int SEG, int64_t left, int64_t seg, int64_t skip)
{
    __m512 c[12][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        c[i][0] = c[i][1] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(C + i * ldc), _MM_HINT_T0);       /* C is needed last: */
        _mm_prefetch((const char *)(C + i * ldc + 16), _MM_HINT_T0);  /* ask for it first */
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(Bp), b1 = NV == 2 ? _mm512_loadu_ps(Bp + 16) : b0;
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            const __m512 a = _mm512_set1_ps(Ap[i]);
            c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
            if (NV == 2) c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
        }
        if (next) {   /* the next in-place panel's row k, on its way to L1 */
            _mm_prefetch((const char *)next, _MM_HINT_T0);
            _mm_prefetch((const char *)(next + 16), _MM_HINT_T0);
            next += ldb;
        }
        Ap += MR;
        Bp += ldb;   /* NR in a packed panel; B's row stride when B is read in place */
        if (SEG && --left == 0) {   /* the segment's last row: on to the next segment */
            Bp += skip;
            if (next) next += skip;
            left = seg;
        }
    }
    const __m512 bv = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        float *r = C + i * ldc;
        if (beta == 0.0f) {
            _mm512_storeu_ps(r, c[i][0]);
            if (NV == 2) _mm512_storeu_ps(r + 16, c[i][1]);
        } else {
            _mm512_storeu_ps(r, _mm512_fmadd_ps(bv, _mm512_loadu_ps(r), c[i][0]));
            if (NV == 2)
                _mm512_storeu_ps(r + 16, _mm512_fmadd_ps(bv, _mm512_loadu_ps(r + 16), c[i][1]));
        }
    }
}
// @end ukernel_avx512

/* The 12 x 32 instance (large M). */
CR_AVX512 static void avx512_kernel_12x32(int64_t kc, const float *Ap, const float *Bp, float *C,
                                int64_t ldc, float beta)
{
    avx512_kernel(12, 2, kc, Ap, Bp, NR, NULL, C, ldc, beta, 0, 0, 0, 0);
}

/* The 12 x 32 instance reading B in place (two copies: with and without prefetching). */
CR_AVX512 static void avx512_kernel_12x32_ldb(int64_t kc, const float *Ap, const float *B,
                                              int64_t ldb, const float *next, float *C,
                                              int64_t ldc, float beta)
{
    if (next) avx512_kernel(12, 2, kc, Ap, B, ldb, next, C, ldc, beta, 0, 0, 0, 0);
    else avx512_kernel(12, 2, kc, Ap, B, ldb, NULL, C, ldc, beta, 0, 0, 0, 0);
}

/* The 8 x 32 instance (M <= 256: the conv-shaped products, where 12 rows waste an edge). */
CR_AVX512 static void avx512_kernel_8x32(int64_t kc, const float *Ap, const float *Bp, float *C,
                               int64_t ldc, float beta)
{
    avx512_kernel(8, 2, kc, Ap, Bp, NR, NULL, C, ldc, beta, 0, 0, 0, 0);
}

/* The 8 x 32 instance reading B in place (two copies: with and without prefetching). */
CR_AVX512 static void avx512_kernel_8x32_ldb(int64_t kc, const float *Ap, const float *B,
                                             int64_t ldb, const float *next, float *C,
                                             int64_t ldc, float beta)
{
    if (next) avx512_kernel(8, 2, kc, Ap, B, ldb, next, C, ldc, beta, 0, 0, 0, 0);
    else avx512_kernel(8, 2, kc, Ap, B, ldb, NULL, C, ldc, beta, 0, 0, 0, 0);
}

/* The 12 x 32 and 8 x 32 instances reading B in place in segments (with and without
 * prefetching). */
CR_AVX512 static void avx512_kernel_12x32_seg(int64_t kc, const float *Ap, const float *B,
                                              int64_t ldb, int64_t first, int64_t seg,
                                              int64_t skip, const float *next, float *C,
                                              int64_t ldc, float beta)
{
    if (next) avx512_kernel(12, 2, kc, Ap, B, ldb, next, C, ldc, beta, 1, first, seg, skip);
    else avx512_kernel(12, 2, kc, Ap, B, ldb, NULL, C, ldc, beta, 1, first, seg, skip);
}

CR_AVX512 static void avx512_kernel_8x32_seg(int64_t kc, const float *Ap, const float *B,
                                             int64_t ldb, int64_t first, int64_t seg,
                                             int64_t skip, const float *next, float *C,
                                             int64_t ldc, float beta)
{
    if (next) avx512_kernel(8, 2, kc, Ap, B, ldb, next, C, ldc, beta, 1, first, seg, skip);
    else avx512_kernel(8, 2, kc, Ap, B, ldb, NULL, C, ldc, beta, 1, first, seg, skip);
}

/* The 12 x 16 and 8 x 16 instances: an edge panel of at most 16 columns (packed). */
CR_AVX512 static void avx512_kernel_12x16(int64_t kc, const float *Ap, const float *Bp, float *C,
                                          int64_t ldc, float beta)
{
    avx512_kernel(12, 1, kc, Ap, Bp, NR, NULL, C, ldc, beta, 0, 0, 0, 0);
}

CR_AVX512 static void avx512_kernel_8x16(int64_t kc, const float *Ap, const float *Bp, float *C,
                                         int64_t ldc, float beta)
{
    avx512_kernel(8, 1, kc, Ap, Bp, NR, NULL, C, ldc, beta, 0, 0, 0, 0);
}

/* Blocks measured best on the lab's machine (48 KiB L1d, 2 MiB L2 per core):
 * KC = 256: a B micro-panel is 256 x 32 x 4 B = 32 KiB, two thirds of L1d;
 * MC = 480 (12 x 32): the packed A block is 480 x 256 x 4 B = 480 KiB, a quarter of L2;
 * NC = 4096: the packed B block is 4 MiB, in L3. */
const cr_gemm_kernel cr_kernel_avx512 = {"avx512", 12, NR, 480, 256, 4096, avx512_kernel_12x32,
                                         avx512_kernel_12x32_ldb, avx512_kernel_12x16,
                                         avx512_kernel_12x32_seg};
const cr_gemm_kernel cr_kernel_avx512_small_m = {"avx512", 8, NR, 256, 256, 4096,
                                                 avx512_kernel_8x32, avx512_kernel_8x32_ldb,
                                                 avx512_kernel_8x16, avx512_kernel_8x32_seg};

#else

/* Never called: the placeholder of a kernel this build does not have. */
static void no_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                      float beta)
{
    (void)kc; (void)Ap; (void)Bp; (void)C; (void)ldc; (void)beta;
}

const cr_gemm_kernel cr_kernel_avx512 = {"avx512", 12, 32, 480, 256, 4096, no_kernel, NULL, NULL,
                                         NULL};
const cr_gemm_kernel cr_kernel_avx512_small_m = {"avx512", 8, 32, 256, 256, 4096, no_kernel, NULL,
                                                 NULL, NULL};
#endif
