/* conv_avx2.c — chapter 3: the direct AVX2 kernel for grouped convolution.
 *
 * A ResNeXt group has 4 input and 4 output channels: as a GEMM that is M = 4,
 * K = 36, far too small for the micro-kernel of this chapter to reach its speed.
 * This kernel instead keeps a block of 4 output channels x 24 output columns in
 * twelve ymm accumulators and walks the group's taps, loading 24 input values per
 * tap and reusing each load for the 4 output channels. Its functions carry
 * target("avx2,fma"); called only where cr_cpu_has_avx2() says yes. */
#include "gemm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Every function here may use AVX2 and FMA (and is called only where the CPU has them). */
#define CR_AVX2 __attribute__((target("avx2,fma")))

// @snippet grouped_block
/* COB (1..4) output channels x NV*8 (NV = 1..3) consecutive outputs, taps [t0, t1) of
 * taps: every tap t loads NV vectors of input at x + tap_off[t] and does NV * COB FMAs
 * onto the sums of the taps before t0 (read back from y; zero when t0 = 0); w: the first
 * channel's weights (taps floats per channel); bias: the first channel's bias (NULL:
 * none), added once the last tap is in; y: the first channel's outputs, ystride apart per
 * channel; ncols (<= NV*8) are stored. */
CR_AVX2 static inline __attribute__((always_inline)) void
grouped_block(const int COB, const int NV, int64_t taps, int64_t t0, int64_t t1,
              const int64_t *tap_off, const float *x, const float *w, const float *bias,
              float *y, int64_t ystride, int64_t ncols)
{
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int co = 0; co < COB; co++) {
        if (t0 > 0 && ncols < 8 * NV) {   /* a partial block's sums so far, through tmp */
            _Alignas(32) float tmp[CR_GROUPED_OWB] = {0};
            for (int64_t j = 0; j < ncols; j++) tmp[j] = y[co * ystride + j];
            for (int v = 0; v < NV; v++) acc[co][v] = _mm256_load_ps(tmp + 8 * v);
        } else {
            for (int v = 0; v < NV; v++)
                acc[co][v] = t0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + co * ystride + 8 * v);
        }
    }
    for (int64_t t = t0; t < t1; t++) {
        const float *xt = x + tap_off[t];
        __m256 xv[3];
        for (int v = 0; v < NV; v++) xv[v] = _mm256_loadu_ps(xt + 8 * v);
#pragma GCC unroll 4
        for (int co = 0; co < COB; co++) {
            const __m256 wv = _mm256_broadcast_ss(w + co * taps + t);
            for (int v = 0; v < NV; v++) acc[co][v] = _mm256_fmadd_ps(wv, xv[v], acc[co][v]);
        }
    }
    const int last = t1 == taps;
#pragma GCC unroll 4
    for (int co = 0; co < COB; co++) {
        const __m256 b = _mm256_set1_ps(bias ? bias[co] : 0.0f);
        float *yc = y + co * ystride;
        for (int v = 0; v < NV && last; v++) acc[co][v] = _mm256_add_ps(acc[co][v], b);
        if (ncols == 8 * NV) {
            for (int v = 0; v < NV; v++) _mm256_storeu_ps(yc + 8 * v, acc[co][v]);
        } else {                                   /* a partial block */
            _Alignas(32) float tmp[CR_GROUPED_OWB];
            for (int v = 0; v < NV; v++) _mm256_store_ps(tmp + 8 * v, acc[co][v]);
            for (int64_t j = 0; j < ncols; j++) yc[j] = tmp[j];
        }
    }
}
// @end grouped_block

/* grouped_block for a run-time cob (1..4), NV vectors, dispatched to constant copies. */
#define BLOCK_ANY(NV)                                                                        \
    CR_AVX2 static void grouped_block_##NV(int64_t cob, int64_t taps, int64_t t0, int64_t t1,   \
                                           const int64_t *tap_off, const float *x,            \
                                           const float *w, const float *bias, float *y,       \
                                           int64_t ystride, int64_t ncols)                    \
    {                                                                                        \
        switch (cob) {   /* constant COB: the compiler unrolls the channel loops */          \
        case 4: grouped_block(4, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 3: grouped_block(3, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 2: grouped_block(2, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        default: grouped_block(1, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        }                                                                                    \
    }
BLOCK_ANY(1)
BLOCK_ANY(2)
BLOCK_ANY(3)

/* Output-channel blocks [blk0, blk1) of the flat output y (Cout_g x flat, ystride apart)
 * from the copies xp, 24 places at a time, the last block only as many vectors as it
 * needs; tc taps a pass over the places. */
CR_AVX2 void cr_grouped_conv_avx2(const cr_conv_shape *s, const int64_t *tap_off,
                                  const float *xp, const float *w_g, const float *b_g,
                                  float *y, int64_t ystride, int64_t flat, int64_t blk0,
                                  int64_t blk1, int64_t tc)
{
    const int64_t taps = s->cin_g * s->p.kernel_h * s->p.kernel_w, B = CR_GROUPED_OWB;
    for (int64_t co0 = 4 * blk0; co0 < s->cout_g && co0 < 4 * blk1; co0 += 4) {
        const int64_t cob = s->cout_g - co0 < 4 ? s->cout_g - co0 : 4;
        const float *w = w_g + co0 * taps, *b = b_g ? b_g + co0 : NULL;
        float *yc = y + co0 * ystride;
        for (int64_t t0 = 0; t0 < taps; t0 += tc) {   /* a pass: taps [t0, t1) everywhere */
            const int64_t t1 = taps - t0 <= tc ? taps : t0 + tc;
            for (int64_t f = 0; f < flat; f += B) {   /* the flat places, B at a time */
                const int64_t n = flat - f < B ? flat - f : B;
                float *yf = yc + f;
                if (n > 16) grouped_block_3(cob, taps, t0, t1, tap_off, xp + f, w, b, yf, ystride, n);
                else if (n > 8) grouped_block_2(cob, taps, t0, t1, tap_off, xp + f, w, b, yf, ystride, n);
                else grouped_block_1(cob, taps, t0, t1, tap_off, xp + f, w, b, yf, ystride, n);
            }
        }
    }
}

#else

void cr_grouped_conv_avx2(const cr_conv_shape *s, const int64_t *tap_off, const float *xp,
                          const float *w_g, const float *b_g, float *y, int64_t ystride,
                          int64_t flat, int64_t blk0, int64_t blk1, int64_t tc)
{
    (void)s; (void)tap_off; (void)xp; (void)w_g; (void)b_g; (void)y;  /* never called */
    (void)ystride; (void)flat; (void)tc;
    (void)blk0; (void)blk1;
}
#endif
