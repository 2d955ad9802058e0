/* int8_gemm_avx2.c — chapter 7: the int8 micro-kernels for AVX2 (vpmaddubsw +
 * vpmaddwd, in two flavours) and AVX-VNNI (vpdpbusd on ymm), and the AVX2
 * requantization of a row.
 *
 * Every function carries a target attribute and runs only after the run-time CPU
 * check (int8_gemm.c), so the library still runs on a CPU without these. */
#include "int8_conv.h"
#include "int8_gemm.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define CR_AVX2 __attribute__((target("avx2,fma")))
#define CR_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

/* The 4 bytes at p as one int32 (the 4 weights of one row for one group of k). */
static inline int32_t load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// @snippet ukernel_maddubs
/* vpmaddubsw then vpmaddwd: for each of the 8 int32 lanes, the sum of the 4 products
 * b (u8) x a (s8). The first instruction adds the products in pairs into int16 and
 * SATURATES: 255 * 127 + 255 * 127 = 64770 does not fit. Exact while b <= 127. */
CR_AVX2 static inline __m256i dot4_7bit(__m256i b, __m256i a, __m256i ones16)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(b, a), ones16);
}

/* cr_i8_ukernel_fn, 4 x 16: eight ymm accumulators (4 rows x 2 vectors of 8 columns). */
CR_AVX2 static void avx2_7bit_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp,
                                     int32_t *C, int64_t ldc, int accumulate)
{
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i c[4][2];
    for (int i = 0; i < 4; i++) c[i][0] = c[i][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < kc4; g++, Ap += 16, Bp += 64) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)Bp);        /* 8 columns x 4 k */
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(Bp + 32));
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256i a = _mm256_set1_epi32(load4(Ap + 4 * i));          /* row i's 4 k */
            c[i][0] = _mm256_add_epi32(c[i][0], dot4_7bit(b0, a, ones16));
            c[i][1] = _mm256_add_epi32(c[i][1], dot4_7bit(b1, a, ones16));
        }
    }
    for (int i = 0; i < 4; i++) {
        int32_t *r = C + i * ldc;
        if (accumulate) {
            c[i][0] = _mm256_add_epi32(c[i][0], _mm256_loadu_si256((const __m256i *)r));
            c[i][1] = _mm256_add_epi32(c[i][1], _mm256_loadu_si256((const __m256i *)(r + 8)));
        }
        _mm256_storeu_si256((__m256i *)r, c[i][0]);
        _mm256_storeu_si256((__m256i *)(r + 8), c[i][1]);
    }
}
// @end ukernel_maddubs

// @snippet ukernel_split
/* Exact for every u8: b = lo + 128 * hi with lo = b & 127 and hi = b >> 7, and both
 * lo x a and hi x a go through vpmaddubsw without saturating (|pair| <= 32512 and
 * <= 256); vpmaddwd then sums the hi pairs with weight 128 instead of 1. */
CR_AVX2 static inline __m256i dot4_split(__m256i lo, __m256i hi, __m256i a, __m256i ones16,
                                         __m256i w128)
{
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, a), ones16),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a), w128));
}

/* cr_i8_ukernel_fn, 4 x 16, exact for every u8 of B: twice the instructions of the
 * 7-bit kernel. */
CR_AVX2 static void avx2_split_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp,
                                      int32_t *C, int64_t ldc, int accumulate)
{
    const __m256i ones16 = _mm256_set1_epi16(1), w128 = _mm256_set1_epi16(128);
    const __m256i low7 = _mm256_set1_epi8(0x7F), one8 = _mm256_set1_epi8(1);
    __m256i c[4][2];
    for (int i = 0; i < 4; i++) c[i][0] = c[i][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < kc4; g++, Ap += 16, Bp += 64) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)Bp);
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(Bp + 32));
        const __m256i lo0 = _mm256_and_si256(b0, low7), lo1 = _mm256_and_si256(b1, low7);
        const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(b0, 7), one8);
        const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(b1, 7), one8);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256i a = _mm256_set1_epi32(load4(Ap + 4 * i));
            c[i][0] = _mm256_add_epi32(c[i][0], dot4_split(lo0, hi0, a, ones16, w128));
            c[i][1] = _mm256_add_epi32(c[i][1], dot4_split(lo1, hi1, a, ones16, w128));
        }
    }
    for (int i = 0; i < 4; i++) {
        int32_t *r = C + i * ldc;
        if (accumulate) {
            c[i][0] = _mm256_add_epi32(c[i][0], _mm256_loadu_si256((const __m256i *)r));
            c[i][1] = _mm256_add_epi32(c[i][1], _mm256_loadu_si256((const __m256i *)(r + 8)));
        }
        _mm256_storeu_si256((__m256i *)r, c[i][0]);
        _mm256_storeu_si256((__m256i *)(r + 8), c[i][1]);
    }
}
// @end ukernel_split

/* cr_i8_ukernel_fn, 6 x 16 with AVX-VNNI's vpdpbusd on ymm: one instruction per 8
 * lanes of 4 products, int32 sums, no saturation: 12 accumulators, 2 B, 1 broadcast. */
CR_AVXVNNI static void avx_vnni_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp,
                                       int32_t *C, int64_t ldc, int accumulate)
{
    __m256i c[6][2];
    for (int i = 0; i < 6; i++) c[i][0] = c[i][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < kc4; g++, Ap += 24, Bp += 64) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)Bp);
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(Bp + 32));
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            const __m256i a = _mm256_set1_epi32(load4(Ap + 4 * i));
            c[i][0] = _mm256_dpbusd_avx_epi32(c[i][0], b0, a);
            c[i][1] = _mm256_dpbusd_avx_epi32(c[i][1], b1, a);
        }
    }
    for (int i = 0; i < 6; i++) {
        int32_t *r = C + i * ldc;
        if (accumulate) {
            c[i][0] = _mm256_add_epi32(c[i][0], _mm256_loadu_si256((const __m256i *)r));
            c[i][1] = _mm256_add_epi32(c[i][1], _mm256_loadu_si256((const __m256i *)(r + 8)));
        }
        _mm256_storeu_si256((__m256i *)r, c[i][0]);
        _mm256_storeu_si256((__m256i *)(r + 8), c[i][1]);
    }
}

/* Blocks: KC = 512 bytes of depth, so a B micro-panel is 512 x 16 = 8 KiB (a quarter of a
 * 32 KiB L1d); MC = 192 rows: the A block is 96 KiB, in L2; NC = 4096 columns. */
const cr_i8_kernel cr_i8_kernel_avx2_7bit = {"avx2_7bit", 4, 16, 192, 512, 4096, 0,
                                             avx2_7bit_kernel, NULL};
const cr_i8_kernel cr_i8_kernel_avx2_split = {"avx2_split", 4, 16, 192, 512, 4096, 1,
                                              avx2_split_kernel, NULL};
const cr_i8_kernel cr_i8_kernel_avx_vnni = {"avx_vnni", 6, 16, 192, 512, 4096, 1,
                                            avx_vnni_kernel, NULL};

// @snippet requant_avx2
/* Even lanes of v * mult (int64), rounded and shifted as cr_requant does, plus zp,
 * clamped to [lo, 255]. AVX2 has no 64-bit arithmetic shift: p + 2^62 is >= 0, so a
 * logical shift of it is floor((p + 2^62) / 2^s) = floor(p / 2^s) + 2^(62 - s). */
CR_AVX2 static inline __m256i requant_even(__m256i v, __m256i mult, __m128i s, __m256i half1,
                                           __m256i off, __m256i off_s, __m256i zp, __m256i lo,
                                           __m256i hi)
{
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i t = _mm256_add_epi64(_mm256_mul_epi32(v, mult), off);  /* p + 2^62 >= 0 */
    const __m256i odd = _mm256_and_si256(_mm256_srl_epi64(t, s), one);  /* ties to even */
    __m256i q = _mm256_srl_epi64(_mm256_add_epi64(t, _mm256_add_epi64(half1, odd)), s);
    q = _mm256_add_epi64(_mm256_sub_epi64(q, off_s), zp);
    q = _mm256_blendv_epi8(q, lo, _mm256_cmpgt_epi64(lo, q));
    return _mm256_blendv_epi8(q, hi, _mm256_cmpgt_epi64(q, hi));
}

/* cr_requant_row with AVX2, 8 outputs per step. */
CR_AVX2 void cr_requant_row_avx2(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m,
                                 int32_t zp, int32_t lo, uint8_t *out)
{
    const __m256i b = _mm256_set1_epi32(bias), mult = _mm256_set1_epi64x(m.mult);
    const __m128i s = _mm_cvtsi32_si128(m.shift);
    const __m256i half1 = _mm256_set1_epi64x(((int64_t)1 << (m.shift - 1)) - 1);
    const __m256i off = _mm256_set1_epi64x((int64_t)1 << 62);
    const __m256i off_s = _mm256_set1_epi64x((int64_t)1 << (62 - m.shift));
    const __m256i zpv = _mm256_set1_epi64x(zp), lov = _mm256_set1_epi64x(lo);
    const __m256i hiv = _mm256_set1_epi64x(255);
    const __m256i gather = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + j)), b);
        const __m256i qe = requant_even(v, mult, s, half1, off, off_s, zpv, lov, hiv);
        const __m256i qo = requant_even(_mm256_srli_epi64(v, 32), mult, s, half1, off, off_s,
                                        zpv, lov, hiv);
        const __m256i q = _mm256_blend_epi32(qe, _mm256_slli_epi64(qo, 32), 0xAA);
        const __m256i w16 = _mm256_packus_epi32(q, q);          /* per 128-bit half: */
        const __m256i w = _mm256_packus_epi16(w16, w16);         /* its 4 bytes first */
        const __m256i g = _mm256_permutevar8x32_epi32(w, gather); /* both halves' */
        _mm_storel_epi64((__m128i *)(out + j), _mm256_castsi256_si128(g));
    }
    for (; j < n; j++) out[j] = cr_requant(acc[j], bias, m, zp, lo);
}
// @end requant_avx2

#else

/* Never called: placeholders of kernels this build does not have. */
static void no_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp, int32_t *C,
                      int64_t ldc, int accumulate)
{
    (void)kc4; (void)Ap; (void)Bp; (void)C; (void)ldc; (void)accumulate;
}
const cr_i8_kernel cr_i8_kernel_avx2_7bit = {"avx2_7bit", 4, 16, 192, 512, 4096, 0,
                                             no_kernel, NULL};
const cr_i8_kernel cr_i8_kernel_avx2_split = {"avx2_split", 4, 16, 192, 512, 4096, 1,
                                              no_kernel, NULL};
const cr_i8_kernel cr_i8_kernel_avx_vnni = {"avx_vnni", 6, 16, 192, 512, 4096, 1, no_kernel,
                                            NULL};

void cr_requant_row_avx2(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m, int32_t zp,
                         int32_t lo, uint8_t *out)
{
    for (int64_t j = 0; j < n; j++) out[j] = cr_requant(acc[j], bias, m, zp, lo);
}
#endif
