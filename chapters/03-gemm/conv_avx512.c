/* conv_avx512.c — chapter 3: the direct grouped-convolution kernel with AVX-512.
 *
 * The same walk as conv_avx2.c with registers twice as wide and twice as many: a
 * block of up to 8 output channels x 48 outputs lives in 24 zmm accumulators;
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
/* COB (1..8) output channels x NV*16 (NV = 1..3) consecutive outputs, taps [t0, t1) of
 * taps: every tap t loads NV zmm of input at x + tap_off[t] and does NV * COB FMAs onto
 * the sums of the taps before t0 (read back from y; zero when t0 = 0); w: the first
 * channel's weights (taps floats per channel); bias: the first channel's bias (NULL:
 * none), added once the last tap is in; y: the first channel's outputs, ystride apart per
 * channel; ncols (<= NV*16) are stored, a partial block through masked stores. */
CR_AVX512 static inline __attribute__((always_inline)) void
grouped_block512(const int COB, const int NV, int64_t taps, int64_t t0, int64_t t1,
                 const int64_t *tap_off, const float *x, const float *w, const float *bias,
                 float *y, int64_t ystride, int64_t ncols)
{
    __m512 acc[8][3];
    __mmask16 m[3];   /* the columns of each vector that are stored */
    for (int v = 0; v < NV; v++) {
        const int64_t n = ncols - 16 * v;
        m[v] = n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
    }
#pragma GCC unroll 8
    for (int co = 0; co < COB; co++)
        for (int v = 0; v < NV; v++)
            acc[co][v] = t0 == 0 ? _mm512_setzero_ps()
                                 : _mm512_maskz_loadu_ps(m[v], y + co * ystride + 16 * v);
    for (int64_t t = t0; t < t1; t++) {
        const float *xt = x + tap_off[t];
        __m512 xv[3];
        for (int v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(xt + 16 * v);
#pragma GCC unroll 8
        for (int co = 0; co < COB; co++) {
            const __m512 wv = _mm512_set1_ps(w[co * taps + t]);
            for (int v = 0; v < NV; v++) acc[co][v] = _mm512_fmadd_ps(wv, xv[v], acc[co][v]);
        }
    }
    const int last = t1 == taps;
#pragma GCC unroll 8
    for (int co = 0; co < COB; co++) {
        const __m512 b = _mm512_set1_ps(bias ? bias[co] : 0.0f);
        for (int v = 0; v < NV; v++)
            _mm512_mask_storeu_ps(y + co * ystride + 16 * v, m[v],
                                  last ? _mm512_add_ps(acc[co][v], b) : acc[co][v]);
    }
}
// @end grouped_block_avx512

/* grouped_block512 for a run-time cob (1..8), NV vectors, dispatched to constant copies. */
#define BLOCK512_ANY(NV)                                                                      \
    CR_AVX512 static void grouped_block512_##NV(int64_t cob, int64_t taps, int64_t t0,        \
                                                int64_t t1, const int64_t *tap_off,           \
                                                const float *x, const float *w,               \
                                                const float *bias, float *y, int64_t ystride, \
                                                int64_t ncols)                                \
    {                                                                                         \
        switch (cob) {   /* constant COB: the compiler unrolls the channel loops */           \
        case 8: grouped_block512(8, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 7: grouped_block512(7, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 6: grouped_block512(6, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 5: grouped_block512(5, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 4: grouped_block512(4, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 3: grouped_block512(3, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        case 2: grouped_block512(2, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        default: grouped_block512(1, NV, taps, t0, t1, tap_off, x, w, bias, y, ystride, ncols); break; \
        }                                                                                     \
    }
BLOCK512_ANY(1)
BLOCK512_ANY(2)
BLOCK512_ANY(3)

/* Output-channel blocks [blk0, blk1) of the flat output y (Cout_g x flat, ystride apart)
 * from the copies xp, 48 places at a time, the last block only as many vectors as it
 * needs; tc taps a pass over the places. */
CR_AVX512 void cr_grouped_conv_avx512(const cr_conv_shape *s, const int64_t *tap_off,
                                      const float *xp, const float *w_g, const float *b_g,
                                      float *y, int64_t ystride, int64_t flat, int64_t blk0,
                                      int64_t blk1, int64_t tc)
{
    const int64_t taps = s->cin_g * s->p.kernel_h * s->p.kernel_w, B = OWB;
    const int64_t CB = CR_GROUPED_COB_AVX512;
    for (int64_t co0 = CB * blk0; co0 < s->cout_g && co0 < CB * blk1; co0 += CB) {
        const int64_t cob = s->cout_g - co0 < CB ? s->cout_g - co0 : CB;
        const float *w = w_g + co0 * taps, *b = b_g ? b_g + co0 : NULL;
        float *yc = y + co0 * ystride;
        for (int64_t t0 = 0; t0 < taps; t0 += tc) {   /* a pass: taps [t0, t1) everywhere */
            const int64_t t1 = taps - t0 <= tc ? taps : t0 + tc;
            for (int64_t f = 0; f < flat; f += B) {   /* the flat places, B at a time */
                const int64_t n = flat - f < B ? flat - f : B;
                float *yf = yc + f;
                if (n > 32) grouped_block512_3(cob, taps, t0, t1, tap_off, xp + f, w, b, yf, ystride, n);
                else if (n > 16) grouped_block512_2(cob, taps, t0, t1, tap_off, xp + f, w, b, yf, ystride, n);
                else grouped_block512_1(cob, taps, t0, t1, tap_off, xp + f, w, b, yf, ystride, n);
            }
        }
    }
}

#else

void cr_grouped_conv_avx512(const cr_conv_shape *s, const int64_t *tap_off, const float *xp,
                            const float *w_g, const float *b_g, float *y, int64_t ystride,
                            int64_t flat, int64_t blk0, int64_t blk1, int64_t tc)
{
    (void)s; (void)tap_off; (void)xp; (void)w_g; (void)b_g; (void)y;  /* never called */
    (void)ystride; (void)flat; (void)tc;
    (void)blk0; (void)blk1;
}
#endif
