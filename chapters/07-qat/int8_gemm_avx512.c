/* int8_gemm_avx512.c — chapter 7: the AVX512-VNNI int8 micro-kernel (vpdpbusd on
 * zmm), the AVX-512 requantization of a row, and the AVX512-BF16 GEMM (vdpbf16ps).
 *
 * Every function carries a target attribute and runs only where the run-time CPU
 * check (int8_gemm.c) found the instructions. */
#include "int8_conv.h"
#include "int8_gemm.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define CR_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define CR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define CR_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

/* The 4 bytes at p as one int32. */
static inline int32_t load4(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

#define V_MR 8
#define V_NR 48

// @snippet ukernel_vnni
/* cr_i8_ukernel_fn, 8 x 48: 24 zmm accumulators (8 rows x 3 vectors of 16 columns),
 * 3 zmm for the 48 columns x 4 k of B, the weights broadcast from memory. vpdpbusd
 * multiplies the 4 u8 of each int32 lane of B with the 4 s8 of the broadcast and adds
 * the 4 products to the lane's int32: no intermediate to saturate. */
CR_VNNI static void avx512_vnni_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp,
                                       int32_t *C, int64_t ldc, int accumulate)
{
    __m512i c[V_MR][3];
#pragma GCC unroll 8
    for (int i = 0; i < V_MR; i++) c[i][0] = c[i][1] = c[i][2] = _mm512_setzero_si512();
    for (int64_t g = 0; g < kc4; g++, Ap += 4 * V_MR, Bp += 4 * V_NR) {
        const __m512i b0 = _mm512_loadu_si512(Bp);         /* columns 0-15, 4 k each */
        const __m512i b1 = _mm512_loadu_si512(Bp + 64);
        const __m512i b2 = _mm512_loadu_si512(Bp + 128);
#pragma GCC unroll 8
        for (int i = 0; i < V_MR; i++) {
            const __m512i a = _mm512_set1_epi32(load4(Ap + 4 * i));  /* row i, 4 k */
            c[i][0] = _mm512_dpbusd_epi32(c[i][0], b0, a);
            c[i][1] = _mm512_dpbusd_epi32(c[i][1], b1, a);
            c[i][2] = _mm512_dpbusd_epi32(c[i][2], b2, a);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < V_MR; i++) {
        int32_t *r = C + i * ldc;
        for (int v = 0; v < 3; v++) {
            __m512i x = c[i][v];
            if (accumulate) x = _mm512_add_epi32(x, _mm512_loadu_si512(r + 16 * v));
            _mm512_storeu_si512(r + 16 * v, x);
        }
    }
}
// @end ukernel_vnni

// @snippet ukernel_vnni_direct
/* The direct form of the kernel above, MR rows x NV vectors of 16 columns (MR, NV: constants
 * where inlined): group g's 16 NV columns x 4 bytes are read where the interleaved image has
 * them (B + goff[g]), not from a packed panel. */
CR_VNNI static inline __attribute__((always_inline)) void
vnni_direct_tile(const int MR, const int NV, int64_t kc4, const int8_t *Ap, const uint8_t *B,
                 const int64_t *goff, int32_t *C, int64_t ldc)
{
    __m512i c[8][4];   /* MR <= 8, NV <= 4: at most 32 zmm */
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_si512();
    for (int64_t g = 0; g < kc4; g++, Ap += 4 * MR) {
        const uint8_t *b = B + goff[g];
        __m512i bv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_si512(b + 64 * v);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m512i a = _mm512_set1_epi32(load4(Ap + 4 * i));
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_dpbusd_epi32(c[i][v], bv[v], a);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_storeu_si512(C + i * ldc + 16 * v, c[i][v]);
}

/* The 8 x 48 tile: 24 accumulators, 3 vectors of B per step; a last panel of 1 or 2
 * vectors (a 14-wide plane's 196 outputs are 4 x 48 + 4, not 5 x 48). */
CR_VNNI static void avx512_vnni_kernel_off(int64_t kc4, const int8_t *Ap, const uint8_t *B,
                                           const int64_t *goff, int32_t *C, int64_t ldc, int nv)
{
    if (nv >= 3)
        vnni_direct_tile(V_MR, 3, kc4, Ap, B, goff, C, ldc);
    else if (nv == 2)
        vnni_direct_tile(V_MR, 2, kc4, Ap, B, goff, C, ldc);
    else
        vnni_direct_tile(V_MR, 1, kc4, Ap, B, goff, C, ldc);
}
// @end ukernel_vnni_direct

/* The 4 x 64 tile, for grouped layers whose groups have at most 4 filters (ResNeXt's
 * first stage: 128 channels in 32 groups): 16 accumulators, where the 8 x 48 tile would
 * spend half its vpdpbusd on rows that do not exist. */
CR_VNNI static void avx512_vnni_kernel_off_4x64(int64_t kc4, const int8_t *Ap, const uint8_t *B,
                                                const int64_t *goff, int32_t *C, int64_t ldc,
                                                int nv)
{
    switch (nv) {
    case 1: vnni_direct_tile(4, 1, kc4, Ap, B, goff, C, ldc); break;
    case 2: vnni_direct_tile(4, 2, kc4, Ap, B, goff, C, ldc); break;
    case 3: vnni_direct_tile(4, 3, kc4, Ap, B, goff, C, ldc); break;
    default: vnni_direct_tile(4, 4, kc4, Ap, B, goff, C, ldc); break;
    }
}

/* Direct form only (kernel NULL): cr_i8_direct_kernel hands it to the convolution's
 * direct path, never to the GEMM engine. */
const cr_i8_kernel cr_i8_kernel_avx512_vnni_4x64 = {"avx512_vnni_4x64", 4, 64, 256, 640, 4096, 1,
                                                    NULL, avx512_vnni_kernel_off_4x64};

/* Blocks for this machine's L1d of 48 KiB and L2 of 1-2 MiB: KC = 640 bytes of depth (a
 * B micro-panel is 640 x 48 = 30 KiB; the 3x3 layers up to 64 input channels need one
 * depth block), MC = 256 rows (A block 160 KiB), NC = 4080 columns. */
const cr_i8_kernel cr_i8_kernel_avx512_vnni = {"avx512_vnni", V_MR, V_NR, 256, 640, 4080, 1,
                                               avx512_vnni_kernel, avx512_vnni_kernel_off};

// @snippet requant_avx512
/* Even int64 lanes of v * mult, rounded half to even at bit s, plus zp, in [lo, hi]. */
CR_AVX512 static inline __m512i requant_even512(__m512i v, __m512i mult, __m128i s,
                                                __m512i half1, __m512i zp, __m512i lo,
                                                __m512i hi)
{
    const __m512i p = _mm512_mul_epi32(v, mult);                       /* exact int64 */
    const __m512i odd = _mm512_and_si512(_mm512_sra_epi64(p, s), _mm512_set1_epi64(1));
    __m512i q = _mm512_sra_epi64(_mm512_add_epi64(p, _mm512_add_epi64(half1, odd)), s);
    q = _mm512_add_epi64(q, zp);
    return _mm512_min_epi64(_mm512_max_epi64(q, lo), hi);
}

/* Even int64 lanes of v * mult, rounded half to even at bit s (s >= 32: the quotient
 * fits in the lane's low int32, |v * mult| < 2^62). */
CR_AVX512 static inline __m512i round_even512(__m512i v, __m512i mult, __m128i s, __m512i half1)
{
    const __m512i p = _mm512_mul_epi32(v, mult);                       /* exact int64 */
    const __m512i odd = _mm512_and_si512(_mm512_sra_epi64(p, s), _mm512_set1_epi64(1));
    return _mm512_sra_epi64(_mm512_add_epi64(p, _mm512_add_epi64(half1, odd)), s);
}

/* One row's requantization constants (cr_requant's bias, multiplier, zero point, bound)
 * and which of three exact forms runs:
 *   WIDE    any shift: int64 products, rounding, zero point and clamp per half;
 *   NARROW  shift >= 32: every quotient an int32 (below 2^30), so the zero point, the
 *           bound and 255 (vpmovusdb saturates) go once on the 16 int32 lanes;
 *   DOUBLE  32 <= shift <= 44: in float64, v * (mult 2^-shift) rounded to nearest even by
 *           the conversion itself. Exact: where the true quotient is below 2^9 in
 *           magnitude it is a multiple of 2^-shift >= 2^-44 with at most 53 significant
 *           bits, so the product is not rounded; at 2^9 or more, a rounded product is
 *           also at least 2^9, and 255 or the bound comes out either way. */
typedef enum { RQ_WIDE, RQ_NARROW, RQ_DOUBLE } rq_form;
typedef struct {
    __m512i bias, mult, half1, zp64, lo64, hi64, zp32, lo32, hi32;
    __m512d m;
    __m128i s;
    rq_form form;
} rq_row;

/* Row constants for outputs clamped to [lo, hi] (hi <= 255: 127 for a 7-bit grid). */
CR_AVX512 static inline rq_row rq_make(int32_t bias, cr_qmul m, int32_t zp, int32_t lo,
                                       int32_t hi)
{
    rq_row r = {.form = m.shift < 32 ? RQ_WIDE : m.shift <= 44 ? RQ_DOUBLE : RQ_NARROW};
    r.bias = _mm512_set1_epi32(bias);
    r.zp32 = _mm512_set1_epi32(zp);
    r.lo32 = _mm512_set1_epi32(lo);
    r.hi32 = _mm512_set1_epi32(hi);
    if (r.form == RQ_DOUBLE) {   /* mult * 2^-shift, exact (31 bits); 2^-shift from its bits */
        const uint64_t e = (uint64_t)(1023 - m.shift) << 52;
        double p2;
        memcpy(&p2, &e, sizeof p2);
        r.m = _mm512_set1_pd((double)m.mult * p2);
        return r;   /* (the integer forms' constants stay zero: not read) */
    }
    r.mult = _mm512_set1_epi64(m.mult);
    r.half1 = _mm512_set1_epi64(((int64_t)1 << (m.shift - 1)) - 1);
    r.zp64 = _mm512_set1_epi64(zp);
    r.lo64 = _mm512_set1_epi64(lo);
    r.hi64 = _mm512_set1_epi64(hi);
    r.s = _mm_cvtsi32_si128(m.shift);
    return r;
}

/* 16 accumulators as u8 through row r's form (form: r->form, a constant where inlined,
 * so that each form's loop has no branch): cr_requant's bytes, clamped to at most r's hi. */
CR_AVX512 static inline __attribute__((always_inline)) __m128i
requant16_form(__m512i acc, const rq_row *r, const rq_form form)
{
    const __m512i v = _mm512_add_epi32(acc, r->bias);
    __m512i q;
    if (form == RQ_DOUBLE) {
        const __m512d lo = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(v)), r->m);
        const __m512d hi = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(v, 1)), r->m);
        const int rn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvt_roundpd_epi32(lo, rn)),
                               _mm512_cvt_roundpd_epi32(hi, rn), 1);
    } else if (form == RQ_NARROW) {
        const __m512i qe = round_even512(v, r->mult, r->s, r->half1);
        const __m512i qo = round_even512(_mm512_srli_epi64(v, 32), r->mult, r->s, r->half1);
        q = _mm512_mask_blend_epi32(0xAAAA, qe, _mm512_slli_epi64(qo, 32));
    } else {
        const __m512i qe = requant_even512(v, r->mult, r->s, r->half1, r->zp64, r->lo64, r->hi64);
        const __m512i qo = requant_even512(_mm512_srli_epi64(v, 32), r->mult, r->s, r->half1,
                                           r->zp64, r->lo64, r->hi64);
        return _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32(0xAAAA, qe, _mm512_slli_epi64(qo, 32)));
    }
    q = _mm512_max_epi32(_mm512_add_epi32(q, r->zp32), r->lo32);
    return _mm512_cvtusepi32_epi8(_mm512_min_epi32(q, r->hi32));   /* (vpmovusdb: 255) */
}

/* Stores the low bytes of q's 16 int32 lanes at out, lanes of mask k only. vpmovdb to a
 * register, then a plain (or, for a tail, masked) 16-byte store: the memory form of vpmovdb
 * ran at half the requantizer's speed on Zen 5 (perf: half its samples on that store). */
CR_AVX512 static inline void store16_u8(uint8_t *out, __mmask16 k, __m128i b)
{
    if (k == (__mmask16)0xFFFF) _mm_storeu_si128((__m128i *)out, b);
    else _mm_mask_storeu_epi8(out, k, b);
}

/* n outputs of acc through row r, 16 per step, the tail masked; form as above. */
CR_AVX512 static inline __attribute__((always_inline)) void
rq_span(const int32_t *acc, int64_t n, const rq_row *r, const rq_form form, uint8_t *out)
{
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        store16_u8(out + j, k, requant16_form(_mm512_maskz_loadu_epi32(k, acc + j), r, form));
    }
}

/* rq_span with the row's form chosen once, outside the loop. */
CR_AVX512 static inline __attribute__((always_inline)) void
rq_span_any(const int32_t *acc, int64_t n, const rq_row *r, uint8_t *out)
{
    if (r->form == RQ_DOUBLE) rq_span(acc, n, r, RQ_DOUBLE, out);
    else if (r->form == RQ_NARROW) rq_span(acc, n, r, RQ_NARROW, out);
    else rq_span(acc, n, r, RQ_WIDE, out);
}

/* cr_requant_row with AVX-512. */
CR_AVX512 void cr_requant_row_avx512(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m,
                                     int32_t zp, int32_t lo, uint8_t *out)
{
    const rq_row r = rq_make(bias, m, zp, lo, 255);
    rq_span_any(acc, n, &r, out);
}
// @end requant_avx512

/* cr_requant_tile with AVX-512: per row the constants once, then each run as above. */
CR_AVX512 void cr_requant_tile_avx512(const int32_t *T, int64_t ldt, int64_t mr,
                                      const int32_t *bias, const cr_qmul *m, int32_t zp,
                                      int32_t lo, int32_t hi, const cr_requant_runs *r,
                                      uint8_t *out, int64_t plane)
{
    for (int64_t i = 0; i < mr; i++) {
        const rq_row c = rq_make(bias[i], m[i], zp, lo, hi);
        for (int64_t q = 0; q < r->n; q++)
            rq_span_any(T + i * ldt + r->src[q], r->len[q], &c, out + i * plane + r->dst[q]);
    }
}

// @snippet interleave_avx512
/* cr_i8_interleave4 with AVX-512: the 4 rows' next 16 bytes fill the 4 lanes of a zmm;
 * vpermd gathers into lane L the 4 bytes of columns 4L..4L+3 of every row (a 4 x 4
 * byte block, row-major), and vpshufb transposes each block, 64 bytes per step. */
CR_AVX512 void cr_i8_interleave4_avx512(const uint8_t *const r[4], int64_t n, uint8_t *d)
{
    const __m512i gather = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i transpose = _mm512_broadcast_i32x4(
        _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(r[0] + j)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r[1] + j)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r[2] + j)), 2);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r[3] + j)), 3);
        v = _mm512_shuffle_epi8(_mm512_permutexvar_epi32(gather, v), transpose);
        _mm512_storeu_si512(d + 4 * j, v);
    }
    for (; j < n; j++)
        for (int t = 0; t < 4; t++) d[4 * j + t] = r[t][j];
}
// @end interleave_avx512

/* ---- bf16: vdpbf16ps ----------------------------------------------------------------- */

#define B_MR 12
#define B_NR CR_BF16_NR   /* the packed panel int8_gemm.h describes */

/* Packs columns [j0, j0+32) of B (K x N bf16, ldb) into k pairs: for each pair p, 32
 * columns x (b[2p][j], b[2p+1][j]); past N and past K zeros. */
static void bf16_pack_b(const uint16_t *B, int64_t ldb, int64_t K, int64_t N, int64_t j0,
                        uint16_t *dst)
{
    const int64_t KP = (K + 1) / 2, w = N - j0 < B_NR ? N - j0 : B_NR;
    for (int64_t p = 0; p < KP; p++) {
        uint16_t *d = dst + p * B_NR * 2;
        const uint16_t *r0 = B + 2 * p * ldb + j0, *r1 = r0 + ldb;
        const int has1 = 2 * p + 1 < K;
        for (int64_t j = 0; j < w; j++) {
            d[2 * j] = r0[j];
            d[2 * j + 1] = has1 ? r1[j] : 0;
        }
        memset(d + 2 * w, 0, (size_t)(B_NR - w) * 2 * sizeof(uint16_t));
    }
}

// @snippet ukernel_bf16
/* MR rows x 32 columns of C (masked to the w columns that exist) += A rows (lda) times
 * the packed panel, over KP k pairs: vdpbf16ps adds, per f32 lane, a[2p+1]*b[2p+1] and
 * then a[2p]*b[2p] (products exact in f32). An odd K's last pair is (a[K-1], 0). */
CR_BF16 static inline __attribute__((always_inline)) void
bf16_tile(const int MR, int64_t K, const uint16_t *A, int64_t lda, const uint16_t *Bp, float *C,
          int64_t ldc, __mmask16 m0, __mmask16 m1, int accumulate)
{
    __m512 c[B_MR][2];
    const int64_t KP = K / 2;   /* whole pairs */
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        c[i][0] = accumulate ? _mm512_maskz_loadu_ps(m0, C + i * ldc) : _mm512_setzero_ps();
        c[i][1] = accumulate ? _mm512_maskz_loadu_ps(m1, C + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < (K + 1) / 2; p++, Bp += 2 * B_NR) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + 32);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const int32_t pair = p < KP ? load4(A + i * lda + 2 * p)
                                        : (int32_t)A[i * lda + 2 * p];  /* (a[K-1], 0) */
            const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], b0, a);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], b1, a);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        _mm512_mask_storeu_ps(C + i * ldc, m0, c[i][0]);
        _mm512_mask_storeu_ps(C + i * ldc + 16, m1, c[i][1]);
    }
}
// @end ukernel_bf16

/* Rows [0, M) of one 32-column panel: 12 rows at a time, then 8 or 4 (the small row
 * counts of grouped convolutions: one load of B serves them all), then one at a time.
 * Every entry of C gets the same vdpbf16ps sequence whatever tile computes it. */
CR_BF16 static void bf16_panel(int64_t M, int64_t K, const uint16_t *A, int64_t lda,
                               const uint16_t *Bp, float *C, int64_t ldc, int64_t w,
                               int accumulate)
{
    const __mmask16 m0 = w >= 16 ? 0xFFFF : (__mmask16)((1u << w) - 1);
    const __mmask16 m1 = w >= 32 ? 0xFFFF : w <= 16 ? 0 : (__mmask16)((1u << (w - 16)) - 1);
    int64_t i = 0;
    for (; i + B_MR <= M; i += B_MR)
        bf16_tile(B_MR, K, A + i * lda, lda, Bp, C + i * ldc, ldc, m0, m1, accumulate);
    if (i + 8 <= M) {
        bf16_tile(8, K, A + i * lda, lda, Bp, C + i * ldc, ldc, m0, m1, accumulate);
        i += 8;
    }
    if (i + 4 <= M) {
        bf16_tile(4, K, A + i * lda, lda, Bp, C + i * ldc, ldc, m0, m1, accumulate);
        i += 4;
    }
    for (; i < M; i++) bf16_tile(1, K, A + i * lda, lda, Bp, C + i * ldc, ldc, m0, m1, accumulate);
}

void cr_bf16_gemm_panel_avx512(int64_t M, int64_t K, const uint16_t *A, int64_t lda,
                               const uint16_t *Bp, float *C, int64_t ldc, int64_t w,
                               int accumulate)
{
    bf16_panel(M, K, A, lda, Bp, C, ldc, w, accumulate);
}

/* The bf16 GEMM: 32-column panels of B packed by the thread that computes them
 * against all rows of A. Returns 1, or -1 when a buffer cannot be allocated. */
int cr_bf16_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                        const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    if (M == 0 || N == 0) return 1;
    const int64_t np = (N + B_NR - 1) / B_NR;
    const size_t panel = (size_t)((K + 1) / 2) * B_NR * 2 * sizeof(uint16_t) + 64;
    int failed = 0;
#pragma omp parallel if (np > 1 && (double)M * N * K > 1e6)
    {
        uint16_t *Bp = cr_aligned_alloc(panel);
        if (!Bp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t q = 0; q < np; q++) {
            if (!Bp) continue;
            const int64_t j0 = q * B_NR, w = N - j0 < B_NR ? N - j0 : B_NR;
            bf16_pack_b(B, ldb, K, N, j0, Bp);
            bf16_panel(M, K, A, lda, Bp, C + j0, ldc, w, accumulate);
        }
        cr_aligned_free(Bp);
    }
    return failed ? -1 : 1;
}

#else

/* Never called: placeholders of what this build does not have. */
static void no_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp, int32_t *C,
                      int64_t ldc, int accumulate)
{
    (void)kc4; (void)Ap; (void)Bp; (void)C; (void)ldc; (void)accumulate;
}
const cr_i8_kernel cr_i8_kernel_avx512_vnni = {"avx512_vnni", 8, 48, 256, 640, 4080, 1,
                                               no_kernel, NULL};
const cr_i8_kernel cr_i8_kernel_avx512_vnni_4x64 = {"avx512_vnni_4x64", 4, 64, 256, 640, 4096,
                                                    1, NULL, NULL};

void cr_requant_row_avx512(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m, int32_t zp,
                           int32_t lo, uint8_t *out)
{
    for (int64_t j = 0; j < n; j++) out[j] = cr_requant(acc[j], bias, m, zp, lo);
}

void cr_requant_tile_avx512(const int32_t *T, int64_t ldt, int64_t mr, const int32_t *bias,
                            const cr_qmul *m, int32_t zp, int32_t lo, const cr_requant_runs *r,
                            uint8_t *out, int64_t plane)
{
    for (int64_t i = 0; i < mr; i++)
        for (int64_t q = 0; q < r->n; q++)
            for (int64_t j = 0; j < r->len[q]; j++)
                out[i * plane + r->dst[q] + j] =
                    cr_requant(T[i * ldt + r->src[q] + j], bias[i], m[i], zp, lo);
}

void cr_i8_interleave4_avx512(const uint8_t *const r[4], int64_t n, uint8_t *d)
{
    for (int64_t j = 0; j < n; j++)
        for (int t = 0; t < 4; t++) d[4 * j + t] = r[t][j];
}

int cr_bf16_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                        const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
    (void)accumulate;
    return 0;
}

void cr_bf16_gemm_panel_avx512(int64_t M, int64_t K, const uint16_t *A, int64_t lda,
                               const uint16_t *Bp, float *C, int64_t ldc, int64_t w,
                               int accumulate)
{
    (void)M; (void)K; (void)A; (void)lda; (void)Bp; (void)C; (void)ldc; (void)w; (void)accumulate;
}
#endif
