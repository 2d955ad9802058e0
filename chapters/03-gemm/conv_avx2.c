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
/* COB (1..4) output channels x 24 consecutive outputs: every tap t loads 3 vectors of
 * input at x + tap_off[t] and does 3 * COB FMAs; w: the first channel's weights (taps
 * floats per channel); y: the first channel's 24 outputs, ystride apart per channel;
 * ncols (<= 24) are stored. */
CR_AVX2 static inline __attribute__((always_inline)) void
grouped_block(const int COB, int64_t taps, const int64_t *tap_off, const float *x,
              const float *w, float *y, int64_t ystride, int64_t ncols)
{
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int co = 0; co < COB; co++) acc[co][0] = acc[co][1] = acc[co][2] = _mm256_setzero_ps();
    for (int64_t t = 0; t < taps; t++) {
        const float *xt = x + tap_off[t];
        const __m256 x0 = _mm256_loadu_ps(xt), x1 = _mm256_loadu_ps(xt + 8),
                     x2 = _mm256_loadu_ps(xt + 16);
#pragma GCC unroll 4
        for (int co = 0; co < COB; co++) {
            const __m256 wv = _mm256_broadcast_ss(w + co * taps + t);
            acc[co][0] = _mm256_fmadd_ps(wv, x0, acc[co][0]);
            acc[co][1] = _mm256_fmadd_ps(wv, x1, acc[co][1]);
            acc[co][2] = _mm256_fmadd_ps(wv, x2, acc[co][2]);
        }
    }
#pragma GCC unroll 4
    for (int co = 0; co < COB; co++) {
        float *yc = y + co * ystride;
        if (ncols == CR_GROUPED_OWB) {
            _mm256_storeu_ps(yc, acc[co][0]);
            _mm256_storeu_ps(yc + 8, acc[co][1]);
            _mm256_storeu_ps(yc + 16, acc[co][2]);
        } else {                                   /* a partial block */
            _Alignas(32) float tmp[CR_GROUPED_OWB];
            _mm256_store_ps(tmp, acc[co][0]);
            _mm256_store_ps(tmp + 8, acc[co][1]);
            _mm256_store_ps(tmp + 16, acc[co][2]);
            for (int64_t j = 0; j < ncols; j++) yc[j] = tmp[j];
        }
    }
}
// @end grouped_block

/* grouped_block for a run-time cob (1..4), dispatched to constant copies. */
CR_AVX2 static void grouped_block_any(int64_t cob, int64_t taps, const int64_t *tap_off, const float *x,
                              const float *w, float *y, int64_t ystride, int64_t ncols)
{
    switch (cob) {   /* constant COB: the compiler unrolls the channel loops */
    case 4: grouped_block(4, taps, tap_off, x, w, y, ystride, ncols); break;
    case 3: grouped_block(3, taps, tap_off, x, w, y, ystride, ncols); break;
    case 2: grouped_block(2, taps, tap_off, x, w, y, ystride, ncols); break;
    default: grouped_block(1, taps, tap_off, x, w, y, ystride, ncols); break;
    }
}

/* Output-channel blocks [blk0, blk1) of y_g (Cout_g x out_plane, the flat layout of
 * cr_grouped_geom) from the phase-split copy xp, out_plane/B column blocks each. */
CR_AVX2 void cr_grouped_conv_avx2(const cr_conv_shape *s, const cr_grouped_geom *gm,
                                  const int64_t *tap_off, const float *xp, const float *w_g,
                                  float *y_g, int64_t blk0, int64_t blk1)
{
    const int64_t taps = s->cin_g * s->p.kernel_h * s->p.kernel_w, B = CR_GROUPED_OWB;
    for (int64_t co0 = 4 * blk0; co0 < s->cout_g && co0 < 4 * blk1; co0 += 4) {
        const int64_t cob = s->cout_g - co0 < 4 ? s->cout_g - co0 : 4;
        const float *w = w_g + co0 * taps;
        for (int64_t f = 0; f < gm->out_plane; f += B)   /* the flat plane, B at a time */
            grouped_block_any(cob, taps, tap_off, xp + f, w, y_g + co0 * gm->out_plane + f,
                              gm->out_plane, B);
    }
}

#else

void cr_grouped_conv_avx2(const cr_conv_shape *s, const cr_grouped_geom *gm,
                          const int64_t *tap_off, const float *xp, const float *w_g, float *y_g,
                          int64_t blk0, int64_t blk1)
{
    (void)s; (void)gm; (void)tap_off; (void)xp; (void)w_g; (void)y_g;  /* never called */
    (void)blk0; (void)blk1;
}
#endif
