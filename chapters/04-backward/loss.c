/* loss.c — chapter 4: cross-entropy and soft Dice over pixels (see loss.h). Sums are
 * in double; per-image partial sums are added in a fixed order, so the result does not
 * depend on the number of threads. */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_internal.h"   /* the CPU's vector units, as chapter 3 chose them */

/* Checks logits (rank 4), dlogits (same shape or NULL) and every label of target. */
static cr_status loss_check(const char *what, const cr_tensor *logits, const int32_t *target,
                            int32_t ignore_index, const cr_tensor *dlogits)
{
    if (!logits || !logits->data || logits->ndim != 4)
        return cr_fail(CR_EINVAL, "%s: logits must be an allocated N x C x H x W tensor", what);
    if (!target) return cr_fail(CR_EINVAL, "%s: target is NULL", what);
    if (dlogits && (!dlogits->data || !cr_tensor_same_shape(dlogits, logits)))
        return cr_fail(CR_EINVAL, "%s: dlogits must have the shape of logits", what);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    for (int64_t i = 0; i < N * HW; i++)
        if (target[i] != ignore_index && (target[i] < 0 || target[i] >= C))
            return cr_fail(CR_EINVAL, "%s: target label %d at image %lld, pixel %lld is not a "
                           "class (0..%lld) nor the ignore index %d", what, (int)target[i],
                           (long long)(i / HW), (long long)(i % HW), (long long)(C - 1),
                           (int)ignore_index);
    return CR_OK;
}

/* Softmax over the C classes of pixel i of one image (z: C x HW plane stack) into p[C]. */
static void softmax_pixel(const float *z, int64_t C, int64_t HW, int64_t i, double *p)
{
    double mx = -INFINITY, sum = 0.0;
    for (int64_t c = 0; c < C; c++)
        if (z[c * HW + i] > mx) mx = z[c * HW + i];
    for (int64_t c = 0; c < C; c++) sum += p[c] = exp(z[c * HW + i] - mx);
    for (int64_t c = 0; c < C; c++) p[c] /= sum;
}

/* Mean cross-entropy over non-ignored pixels of logits (N x C x H x W) and its gradient. */
cr_status cr_cross_entropy(const cr_tensor *logits, const int32_t *target,
                           int32_t ignore_index, double *loss, cr_tensor *dlogits)
{
    cr_status s = loss_check("cross_entropy", logits, target, ignore_index, dlogits);
    if (s) return s;
    if (!loss) return cr_fail(CR_EINVAL, "cross_entropy: loss is NULL");
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    double *part = calloc((size_t)N, sizeof *part), *p = malloc((size_t)C * sizeof *p);
    if (!part || !p) {
        free(part);
        free(p);
        return cr_fail(CR_ENOMEM, "cross_entropy: out of memory");
    }
    // @snippet cross_entropy
    // @solution cross_entropy: -log softmax at the label, averaged over the pixels not ignored; gradient (softmax - onehot) / count
    int64_t count = 0;                               /* pixels that are not ignored */
    for (int64_t i = 0; i < N * HW; i++) count += target[i] != ignore_index;
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits->data + n * C * HW;
        for (int64_t i = 0; i < HW; i++) {
            const int32_t t = target[n * HW + i];
            if (t == ignore_index) {
                if (dlogits)
                    for (int64_t c = 0; c < C; c++) dlogits->data[(n * C + c) * HW + i] = 0.0f;
                continue;
            }
            softmax_pixel(z, C, HW, i, p);
            part[n] -= log(p[t]);
            if (dlogits)
                for (int64_t c = 0; c < C; c++)
                    dlogits->data[(n * C + c) * HW + i] =
                        (float)((p[c] - (c == t ? 1.0 : 0.0)) / (double)count);
        }
    }
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total += part[n];
    *loss = count > 0 ? total / (double)count : 0.0;
    // @stub
    // (void)N; (void)C; (void)HW;
    // free(part);
    // free(p);
    // return cr_todo("cross_entropy");
    // @end-solution
    // @end cross_entropy
    free(part);
    free(p);
    return CR_OK;
}

/* ---- cross-entropy, fast: float, vector lanes, threads ------------------------------------ */

/* Pixels one task takes (its per-pixel losses: 16 KiB, summed in double in pixel order). */
#define CE_CHUNK 4096

// @snippet ce_exp_log
/* exp(x) for x <= 0 in float, as every lane computes it: x = n ln2 + r with n an integer
 * and |r| <= ln2 / 2 (ln2 in two parts, the first with few bits, so n * hi is exact), then
 * exp(r) by its Taylor series to r^7 (the next term is below 2^-27 of the result) and
 * 2^n put into the exponent bits. Below -87, 2^n would leave the normal floats: the input
 * is clamped there (a softmax term of 1.6e-38 instead of less). NaN stays NaN. */
#define CE_EXP_LO (-87.0f)
#define CE_LOG2E 1.44269504f
#define CE_LN2_HI 0.693359375f      /* 355/512 */
#define CE_LN2_LO (-2.12194440e-4f) /* ln 2 - 355/512 */
#define CE_LN2 0.693147181f
#define CE_SQRT2 1.41421354f
static const float ce_exp_c[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                  1.0f / 6,    0.5f,       1.0f,       1.0f};
/* log(s) for s >= 1: s = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f),
 * f = (m - 1) / (m + 1), |f| <= 0.172, by its series to f^9. (s - s) adds 0, or NaN
 * when s is not finite. */
static const float ce_log_c[5] = {1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f};

/* exp(x), one value: the operations each lane repeats. */
static float ce_exp(float x)
{
    x = CE_EXP_LO > x ? CE_EXP_LO : x;                 /* max(lo, x), NaN kept */
    const float n = rintf(x * CE_LOG2E);
    const float r = (x - n * CE_LN2_HI) - n * CE_LN2_LO;
    float p = ce_exp_c[0];
    for (int j = 1; j < 8; j++) p = p * r + ce_exp_c[j];
    const uint32_t bits = (uint32_t)((n == n ? (int32_t)n : 0) + 127) << 23;   /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* log(s), one value, s >= 1. */
static float ce_log(float s)
{
    uint32_t b;
    memcpy(&b, &s, sizeof b);
    float e = (float)((int32_t)(b >> 23) - 127), m;
    b = (b & 0x007fffffu) | 0x3f800000u;               /* m in [1, 2) */
    memcpy(&m, &b, sizeof m);
    if (m > CE_SQRT2) {
        m = m * 0.5f;
        e = e + 1.0f;
    }
    const float f = (m - 1.0f) / (m + 1.0f), f2 = f * f;
    float q = ce_log_c[0];
    for (int j = 1; j < 5; j++) q = q * f2 + ce_log_c[j];
    return (e * CE_LN2 + (f + f) * q) + (s - s);
}
// @end ce_exp_log

/* Pixels [i0, i1) of one image, one at a time: z and dz (NULL: the loss alone) are its
 * C x HW planes, t its HW labels; ls[i - i0] = the pixel's loss (0 where ignored); dz =
 * (softmax - onehot) * inv_count. */
static void ce_scalar(const float *z, float *dz, int64_t C, int64_t HW, const int32_t *t,
                      int32_t ign, float inv_count, float *ls, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) {
        if (t[i] == ign) {
            if (dz)
                for (int64_t c = 0; c < C; c++) dz[c * HW + i] = 0.0f;
            ls[i - i0] = 0.0f;
            continue;
        }
        float mx = z[i], zt = z[i], s = 0.0f;
        for (int64_t c = 1; c < C; c++) {
            const float zc = z[c * HW + i];
            mx = mx > zc ? mx : zc;
            if (t[i] == c) zt = zc;
        }
        for (int64_t c = 0; c < C; c++) {
            const float e = ce_exp(z[c * HW + i] - mx);
            s = s + e;
            if (dz) dz[c * HW + i] = e;
        }
        ls[i - i0] = ce_log(s) - (zt - mx);
        if (!dz) continue;
        const float inv_s = 1.0f / s;
        for (int64_t c = 0; c < C; c++)
            dz[c * HW + i] = (dz[c * HW + i] * inv_s - (t[i] == c ? 1.0f : 0.0f)) * inv_count;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// @snippet ce_fast
/* ce_exp on 16 lanes: the same operations, one instruction each. */
__attribute__((target("avx512f")))
static inline __m512 ce_exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(CE_EXP_LO), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(CE_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(CE_LN2_HI))),
                                   _mm512_mul_ps(n, _mm512_set1_ps(CE_LN2_LO)));
    __m512 p = _mm512_set1_ps(ce_exp_c[0]);
    for (int j = 1; j < 8; j++)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(ce_exp_c[j]));
    const __m512i bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

/* ce_log on 16 lanes. */
__attribute__((target("avx512f")))
static inline __m512 ce_log16(__m512 s)
{
    const __m512i b = _mm512_castps_si512(s);
    __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(b, 23), _mm512_set1_epi32(127)));
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(b, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f800000)));
    const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(CE_SQRT2), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    e = _mm512_mask_add_ps(e, big, e, _mm512_set1_ps(1.0f));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 f = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    const __m512 f2 = _mm512_mul_ps(f, f);
    __m512 q = _mm512_set1_ps(ce_log_c[0]);
    for (int j = 1; j < 5; j++) q = _mm512_add_ps(_mm512_mul_ps(q, f2), _mm512_set1_ps(ce_log_c[j]));
    return _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(e, _mm512_set1_ps(CE_LN2)),
                                       _mm512_mul_ps(_mm512_add_ps(f, f), q)),
                         _mm512_sub_ps(s, s));
}

/* ce_scalar on 16 neighbouring pixels at a time (the last ones masked). */
__attribute__((target("avx512f")))
static void ce_avx512(const float *z, float *dz, int64_t C, int64_t HW, const int32_t *t,
                      int32_t ign, float inv_count, float *ls, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i += 16) {
        const __mmask16 u = i1 - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (i1 - i)) - 1);
        const __m512i ti = _mm512_maskz_loadu_epi32(u, t + i);
        const __mmask16 keep = _mm512_mask_cmpneq_epi32_mask(u, ti, _mm512_set1_epi32(ign));
        __m512 mx = _mm512_maskz_loadu_ps(u, z + i), zt = mx, s = _mm512_setzero_ps();
        for (int64_t c = 1; c < C; c++) {            /* the maximum, and z at the label */
            const __m512 zc = _mm512_maskz_loadu_ps(u, z + c * HW + i);
            mx = _mm512_max_ps(mx, zc);
            zt = _mm512_mask_mov_ps(zt, _mm512_cmpeq_epi32_mask(ti, _mm512_set1_epi32((int)c)), zc);
        }
        for (int64_t c = 0; c < C; c++) {            /* exp(z - max), their sum */
            const __m512 e = ce_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(u, z + c * HW + i), mx));
            s = _mm512_add_ps(s, e);
            if (dz) _mm512_mask_storeu_ps(dz + c * HW + i, u, e);
        }
        const __m512 l = _mm512_sub_ps(ce_log16(s), _mm512_sub_ps(zt, mx));
        _mm512_mask_storeu_ps(ls + (i - i0), u, _mm512_maskz_mov_ps(keep, l));
        if (!dz) continue;
        const __m512 inv_s = _mm512_div_ps(_mm512_set1_ps(1.0f), s), k = _mm512_set1_ps(inv_count);
        for (int64_t c = 0; c < C; c++) {            /* (softmax - onehot) / P */
            const __mmask16 is_t = _mm512_cmpeq_epi32_mask(ti, _mm512_set1_epi32((int)c));
            const __m512 g = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(u, dz + c * HW + i), inv_s),
                                           _mm512_maskz_mov_ps(is_t, _mm512_set1_ps(1.0f)));
            _mm512_mask_storeu_ps(dz + c * HW + i, u, _mm512_maskz_mov_ps(keep, _mm512_mul_ps(g, k)));
        }
    }
}
// @end ce_fast

/* ce_exp on 8 lanes. */
__attribute__((target("avx2")))
static inline __m256 ce_exp8(__m256 x)
{
    x = _mm256_max_ps(_mm256_set1_ps(CE_EXP_LO), x);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(CE_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(CE_LN2_HI))),
                                   _mm256_mul_ps(n, _mm256_set1_ps(CE_LN2_LO)));
    __m256 p = _mm256_set1_ps(ce_exp_c[0]);
    for (int j = 1; j < 8; j++)
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(ce_exp_c[j]));
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* ce_log on 8 lanes. */
__attribute__((target("avx2")))
static inline __m256 ce_log8(__m256 s)
{
    const __m256i b = _mm256_castps_si256(s);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(127)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
    const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(CE_SQRT2), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_blendv_ps(e, _mm256_add_ps(e, _mm256_set1_ps(1.0f)), big);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 f = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    const __m256 f2 = _mm256_mul_ps(f, f);
    __m256 q = _mm256_set1_ps(ce_log_c[0]);
    for (int j = 1; j < 5; j++) q = _mm256_add_ps(_mm256_mul_ps(q, f2), _mm256_set1_ps(ce_log_c[j]));
    return _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(e, _mm256_set1_ps(CE_LN2)),
                                       _mm256_mul_ps(_mm256_add_ps(f, f), q)),
                         _mm256_sub_ps(s, s));
}

/* ce_scalar on 8 neighbouring pixels at a time; the last (i1 - i0) % 8 one at a time. */
__attribute__((target("avx2")))
static void ce_avx2(const float *z, float *dz, int64_t C, int64_t HW, const int32_t *t,
                    int32_t ign, float inv_count, float *ls, int64_t i0, int64_t i1)
{
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256i ti = _mm256_loadu_si256((const __m256i *)(t + i));
        const __m256 drop = _mm256_castsi256_ps(_mm256_cmpeq_epi32(ti, _mm256_set1_epi32(ign)));
        __m256 mx = _mm256_loadu_ps(z + i), zt = mx, s = _mm256_setzero_ps();
        for (int64_t c = 1; c < C; c++) {
            const __m256 zc = _mm256_loadu_ps(z + c * HW + i);
            mx = _mm256_max_ps(mx, zc);
            zt = _mm256_blendv_ps(zt, zc, _mm256_castsi256_ps(
                                              _mm256_cmpeq_epi32(ti, _mm256_set1_epi32((int)c))));
        }
        for (int64_t c = 0; c < C; c++) {
            const __m256 e = ce_exp8(_mm256_sub_ps(_mm256_loadu_ps(z + c * HW + i), mx));
            s = _mm256_add_ps(s, e);
            if (dz) _mm256_storeu_ps(dz + c * HW + i, e);
        }
        const __m256 l = _mm256_sub_ps(ce_log8(s), _mm256_sub_ps(zt, mx));
        _mm256_storeu_ps(ls + (i - i0), _mm256_andnot_ps(drop, l));
        if (!dz) continue;
        const __m256 inv_s = _mm256_div_ps(_mm256_set1_ps(1.0f), s), k = _mm256_set1_ps(inv_count);
        for (int64_t c = 0; c < C; c++) {
            const __m256 is_t = _mm256_castsi256_ps(_mm256_cmpeq_epi32(ti, _mm256_set1_epi32((int)c)));
            const __m256 g = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(dz + c * HW + i), inv_s),
                                           _mm256_and_ps(is_t, _mm256_set1_ps(1.0f)));
            _mm256_storeu_ps(dz + c * HW + i, _mm256_andnot_ps(drop, _mm256_mul_ps(g, k)));
        }
    }
    ce_scalar(z, dz, C, HW, t, ign, inv_count, ls + (i - i0), i, i1);
}
#endif

typedef void (*ce_fn)(const float *, float *, int64_t, int64_t, const int32_t *, int32_t, float,
                      float *, int64_t, int64_t);

/* The widest path chapter 3 chose for this CPU (CR_GEMM_KERNEL=avx2|portable narrows it). */
static ce_fn ce_kernel(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const cr_gemm_kernel *k = cr_gemm_active_kernel();
    if (k == &cr_kernel_avx512 || k == &cr_kernel_avx512_small_m) return ce_avx512;
    if (k == &cr_kernel_avx2) return ce_avx2;
#endif
    return ce_scalar;
}

/* The sum of ls[0..n-1] in double: four running sums (i mod 4), then (s0 + s1) + (s2 + s3). */
static double ce_sum(const float *ls, int64_t n)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) a[j] += ls[i + j];
    for (; i < n; i++) a[0] += ls[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* Mean cross-entropy of logits (N x C x H x W) and its gradient, fast; see loss.h. */
cr_status cr_cross_entropy_fast(const cr_tensor *logits, const int32_t *target,
                                int32_t ignore_index, double *loss, cr_tensor *dlogits)
{
    cr_status s = loss_check("cross_entropy", logits, target, ignore_index, dlogits);
    if (s) return s;
    if (!loss) return cr_fail(CR_EINVAL, "cross_entropy: loss is NULL");
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    const int64_t per = (HW + CE_CHUNK - 1) / CE_CHUNK, tasks = N * per;
    double *part = malloc((size_t)(tasks > 0 ? tasks : 1) * sizeof *part);
    if (!part) return cr_fail(CR_ENOMEM, "cross_entropy: out of memory");
    int64_t count = 0;
    for (int64_t i = 0; i < N * HW; i++) count += target[i] != ignore_index;
    const float inv_count = count > 0 ? (float)(1.0 / (double)count) : 0.0f;
    const ce_fn fn = ce_kernel();
    float *dz = dlogits ? dlogits->data : NULL;
    /* tasks are independent; each one's sum does not depend on who runs it */
#pragma omp parallel for schedule(static) if (tasks > 1 && N * C * HW > (1 << 16) && \
                                               cr_gemm_threads_available() > 1)
    for (int64_t k = 0; k < tasks; k++) {
        float ls[CE_CHUNK];
        const int64_t n = k / per, i0 = (k % per) * CE_CHUNK;
        const int64_t i1 = i0 + CE_CHUNK < HW ? i0 + CE_CHUNK : HW;
        fn(logits->data + n * C * HW, dz ? dz + n * C * HW : NULL, C, HW, target + n * HW,
           ignore_index, inv_count, ls, i0, i1);
        part[k] = ce_sum(ls, i1 - i0);
    }
    double total = 0.0;
    for (int64_t k = 0; k < tasks; k++) total += part[k];
    *loss = count > 0 ? total / (double)count : 0.0;
    free(part);
    return CR_OK;
}

/* Soft Dice loss of logits (N x C x H x W) against target (N*H*W) and its gradient. */
cr_status cr_dice_loss(const cr_tensor *logits, const int32_t *target, int32_t ignore_index,
                       double eps, double *loss, cr_tensor *dlogits)
{
    cr_status s = loss_check("dice", logits, target, ignore_index, dlogits);
    if (s) return s;
    if (!loss) return cr_fail(CR_EINVAL, "dice: loss is NULL");
    if (!(eps > 0)) return cr_fail(CR_EINVAL, "dice: eps must be > 0, got %g", eps);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    double *inter = calloc((size_t)C, sizeof(double)), *card = calloc((size_t)C, sizeof(double));
    double *present = calloc((size_t)C, sizeof(double)), *p = malloc((size_t)C * sizeof(double));
    double *g = malloc((size_t)C * sizeof(double));
    if (!inter || !card || !present || !p || !g) {
        free(inter); free(card); free(present); free(p); free(g);
        return cr_fail(CR_ENOMEM, "dice: out of memory");
    }
    /* pass 1: per-class intersection, cardinality and presence */
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits->data + n * C * HW;
        for (int64_t i = 0; i < HW; i++) {
            const int32_t t = target[n * HW + i];
            if (t == ignore_index) continue;     /* p * m = 0 and y = 0 */
            softmax_pixel(z, C, HW, i, p);
            for (int64_t c = 0; c < C; c++) card[c] += p[c];
            inter[t] += p[t];
            card[t] += 1.0;
            present[t] = 1.0;
        }
    }
    double total = 0.0;
    for (int64_t c = 0; c < C; c++)
        total += present[c] * (1.0 - 2.0 * inter[c] / (card[c] > eps ? card[c] : eps));
    *loss = total / (double)C;
    /* pass 2: dL/dp, then through the softmax: dz_c = p_c (g_c - sum_k p_k g_k) */
    if (dlogits) {
        for (int64_t n = 0; n < N; n++) {
            const float *z = logits->data + n * C * HW;
            for (int64_t i = 0; i < HW; i++) {
                const int32_t t = target[n * HW + i];
                if (t == ignore_index) {
                    for (int64_t c = 0; c < C; c++) dlogits->data[(n * C + c) * HW + i] = 0.0f;
                    continue;
                }
                softmax_pixel(z, C, HW, i, p);
                double pg = 0.0;
                for (int64_t c = 0; c < C; c++) {
                    const double S = card[c], y = (c == t) ? 1.0 : 0.0;
                    g[c] = S > eps ? -present[c] / (double)C * (2.0 * y / S - 2.0 * inter[c] / (S * S))
                                   : -present[c] / (double)C * 2.0 * y / eps;
                    pg += p[c] * g[c];
                }
                for (int64_t c = 0; c < C; c++)
                    dlogits->data[(n * C + c) * HW + i] = (float)(p[c] * (g[c] - pg));
            }
        }
    }
    free(inter); free(card); free(present); free(p); free(g);
    return CR_OK;
}
