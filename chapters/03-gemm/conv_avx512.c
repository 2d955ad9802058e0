/* conv_avx512.c — chapter 3: the direct grouped-convolution kernel with AVX-512.
 *
 * The same walk as conv_avx2.c with registers twice as wide and twice as many: a
 * block of up to 8 output channels x 48 output columns lives in 24 zmm accumulators;
 * every tap loads 48 input values (3 zmm) and reuses each load for every channel of
 * the block, whose weight is broadcast straight from memory into the FMA. Its
 * functions carry target("avx512f,avx2,fma"); called only where cr_cpu_has_avx512()
 * says yes. */
#include "gemm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Every function here may use AVX-512 (and is called only where the CPU has it). */
#define CR_AVX512 __attribute__((target("avx512f,avx2,fma")))

#define OWB CR_GROUPED_OWB_AVX512

// @snippet grouped_block_avx512
/* COB (1..8) output channels x 48 consecutive outputs: every tap t loads 3 zmm of input
 * at x + tap_off[t] and does 3 * COB FMAs; w: the first channel's weights (taps floats
 * per channel); y: the first channel's 48 outputs, ystride apart per channel; ncols
 * (<= 48) are stored, a partial block through masked stores. */
CR_AVX512 static inline __attribute__((always_inline)) void
grouped_block512(const int COB, int64_t taps, const int64_t *tap_off, const float *x,
                 const float *w, float *y, int64_t ystride, int64_t ncols)
{
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int co = 0; co < COB; co++) acc[co][0] = acc[co][1] = acc[co][2] = _mm512_setzero_ps();
    for (int64_t t = 0; t < taps; t++) {
        const float *xt = x + tap_off[t];
        const __m512 x0 = _mm512_loadu_ps(xt), x1 = _mm512_loadu_ps(xt + 16),
                     x2 = _mm512_loadu_ps(xt + 32);
#pragma GCC unroll 8
        for (int co = 0; co < COB; co++) {
            const __m512 wv = _mm512_set1_ps(w[co * taps + t]);
            acc[co][0] = _mm512_fmadd_ps(wv, x0, acc[co][0]);
            acc[co][1] = _mm512_fmadd_ps(wv, x1, acc[co][1]);
            acc[co][2] = _mm512_fmadd_ps(wv, x2, acc[co][2]);
        }
    }
    __mmask16 m[3];   /* the columns of each vector that are stored */
    for (int v = 0; v < 3; v++) {
        const int64_t n = ncols - 16 * v;
        m[v] = n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
    }
#pragma GCC unroll 8
    for (int co = 0; co < COB; co++) {
        float *yc = y + co * ystride;
        _mm512_mask_storeu_ps(yc, m[0], acc[co][0]);
        _mm512_mask_storeu_ps(yc + 16, m[1], acc[co][1]);
        _mm512_mask_storeu_ps(yc + 32, m[2], acc[co][2]);
    }
}
// @end grouped_block_avx512

/* grouped_block512 for a run-time cob (1..8), dispatched to constant copies. */
CR_AVX512 static void grouped_block512_any(int64_t cob, int64_t taps, const int64_t *tap_off,
                                           const float *x, const float *w, float *y,
                                           int64_t ystride, int64_t ncols)
{
    switch (cob) {   /* constant COB: the compiler unrolls the channel loops */
    case 8: grouped_block512(8, taps, tap_off, x, w, y, ystride, ncols); break;
    case 7: grouped_block512(7, taps, tap_off, x, w, y, ystride, ncols); break;
    case 6: grouped_block512(6, taps, tap_off, x, w, y, ystride, ncols); break;
    case 5: grouped_block512(5, taps, tap_off, x, w, y, ystride, ncols); break;
    case 4: grouped_block512(4, taps, tap_off, x, w, y, ystride, ncols); break;
    case 3: grouped_block512(3, taps, tap_off, x, w, y, ystride, ncols); break;
    case 2: grouped_block512(2, taps, tap_off, x, w, y, ystride, ncols); break;
    default: grouped_block512(1, taps, tap_off, x, w, y, ystride, ncols); break;
    }
}

/* Output-channel blocks [blk0, blk1) of y_g (Cout_g x out_plane, the flat layout of
 * cr_grouped_geom) from the phase-split copy xp, out_plane/B column blocks each. */
CR_AVX512 void cr_grouped_conv_avx512(const cr_conv_shape *s, const cr_grouped_geom *gm,
                                      const int64_t *tap_off, const float *xp, const float *w_g,
                                      float *y_g, int64_t blk0, int64_t blk1)
{
    const int64_t taps = s->cin_g * s->p.kernel_h * s->p.kernel_w, B = OWB;
    const int64_t CB = CR_GROUPED_COB_AVX512;
    for (int64_t co0 = CB * blk0; co0 < s->cout_g && co0 < CB * blk1; co0 += CB) {
        const int64_t cob = s->cout_g - co0 < CB ? s->cout_g - co0 : CB;
        const float *w = w_g + co0 * taps;
        for (int64_t f = 0; f < gm->out_plane; f += B)   /* the flat plane, B at a time */
            grouped_block512_any(cob, taps, tap_off, xp + f, w, y_g + co0 * gm->out_plane + f,
                                 gm->out_plane, B);
    }
}

#else

void cr_grouped_conv_avx512(const cr_conv_shape *s, const cr_grouped_geom *gm,
                            const int64_t *tap_off, const float *xp, const float *w_g,
                            float *y_g, int64_t blk0, int64_t blk1)
{
    (void)s; (void)gm; (void)tap_off; (void)xp; (void)w_g; (void)y_g;  /* never called */
    (void)blk0; (void)blk1;
}
#endif
