/* kit_given_ch03.c — given code for chapter 3's coursework kit (kits/README.md).
 *
 * A task's test program in the kit may run on these in place of functions that other
 * tasks write, so that each task is graded on its own: the kit compiles this file with
 * CR_GIVEN_<function> for each function its kit.ini gives to the task, and makes the
 * student's definition of it weak. They are plain and slow on purpose: the reference
 * GEMM, the packing layout one element at a time, a scalar 6 x 16 tile. */
#include "gemm.h"
#include "gemm_internal.h"

#ifdef CR_GIVEN_cr_sgemm
/* cr_sgemm as the chapter's reference triple loop (for conv_gemm's tests). */
cr_status cr_sgemm(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                   float *C, int64_t ldc)
{
    return cr_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif

#ifdef CR_GIVEN_cr_pack_strided
/* cr_pack_strided by its definition (gemm_internal.h), element by element (for the
 * micro-kernel's tests that go through the engine). */
void cr_pack_strided(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                     int panel, float scale, float *dst)
{
    const cr_strided *s = ctx;
    const int64_t np = (rows + panel - 1) / panel;
    for (int64_t at = 0; at < np * panel * kc; at++) {
        const int64_t q = at / (panel * kc), k = at / panel % kc, i = at % panel;
        const int64_t row = q * panel + i;
        dst[at] = row < rows ? scale * s->p[(r0 + row) * s->rs + (k0 + k) * s->cs] : 0.0f;
    }
}
#endif

#ifdef CR_GIVEN_cr_kernel_avx2
/* cr_ukernel_fn, 6 x 16, as scalar loops (for packing's tests that go through the
 * engine with the AVX2 kernel's shape): C = beta * C + Ap * Bp, C not read when beta 0. */
static void given_tile_6x16(int64_t kc, const float *Ap, const float *Bp, float *C,
                            int64_t ldc, float beta)
{
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 16; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < kc; k++) acc += Ap[k * 6 + i] * Bp[k * 16 + j];
            C[i * ldc + j] = acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
        }
}

const cr_gemm_kernel cr_kernel_avx2 = {"avx2", 6, 16, 144, 256, 4080, given_tile_6x16, NULL, NULL};
#endif
