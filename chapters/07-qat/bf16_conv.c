/* bf16_conv.c — chapter 7: convolution in bf16 with fp32 sums, and with fp16 storage
 * (see bf16_conv.h).
 *
 * The weights are rounded to bf16 once; every forward gathers each image's patch matrix
 * (chapter 2's im2col, with chapter 1's padding rule) straight into bf16 and hands it to
 * the bf16 GEMM, whose vdpbf16ps adds pairs of exact products into float32 sums. In fp16
 * the weights are rounded once, each image's input is converted once per convolution,
 * and chapter 3's engine packs both, widened, into its fp32 panels. */
#include "bf16_conv.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_gemm.h"  /* cr_conv_outer_threads: chapter 3's rule for the pair loop */
#include "direct.h"     /* cr_pad_index: chapter 1's padding rule */
#include "dtype.h"      /* cr_f32_to_bf16, cr_bf16_to_f32, cr_f32_to_f16, cr_f16_to_f32 */
#include "gemm.h"           /* cr_gemm_check_args (fp16 storage) */
#include "gemm_internal.h"  /* chapter 3's engine (fp16 storage): cr_gemm_engine, packing */
#include "int8_gemm.h"  /* cr_gemm_bf16 */
#include "scratch.h"    /* cr_scratch_get, cr_scratch_put: buffers kept between calls */

/* float32 to bf16 bits, round to nearest even, every NaN to 0xFFFF: cr_f32_to_bf16's
 * rule, inlined for the gather (the tests check the two agree bit for bit). */
static inline uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFFu;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* ---- fp16: conversions and the storage GEMM --------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define CR_F16C_TARGET __attribute__((target("avx2,fma,f16c")))
#define CR_F16C_512_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))
#define CR_HAVE_F16C 1
#else
#define CR_HAVE_F16C 0
#endif

/* What the CPU runs: 0 portable, 1 F16C (8 lanes, AVX2), 2 AVX-512F (16 lanes); asked
 * once (CPUID traps to the hypervisor in a virtual machine). Racing threads store the
 * same value. */
static int f16_detected(void)
{
    static int known = -1;
    if (known >= 0) return known;
    int level = 0;
#if CR_HAVE_F16C
    unsigned a, b, c, d;
    if (cr_cpu_has_avx2() && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C))
        level = cr_cpu_has_avx512() ? 2 : 1;
#endif
    known = level;
    return known;
}

static int f16_cap = 2;   /* cr_fp16_storage_set_path's ceiling on the level */

/* The level the conversions run at: the CPU's, at most the chosen one. */
static int f16_level(void)
{
    const int d = f16_detected();
    return d < f16_cap ? d : f16_cap;
}

cr_status cr_fp16_storage_set_path(const char *name)
{
    int cap = -1;
    if (name && strcmp(name, "auto") == 0) cap = 2;
    else if (name && strcmp(name, "f16c512") == 0) cap = 2;
    else if (name && strcmp(name, "f16c") == 0) cap = 1;
    else if (name && strcmp(name, "portable") == 0) cap = 0;
    if (cap < 0 || (strcmp(name, "auto") != 0 && cap > f16_detected()))
        return cr_fail(CR_EINVAL, "fp16 storage path \"%s\": expected auto, portable%s%s",
                       name ? name : "(null)", f16_detected() >= 1 ? ", f16c" : "",
                       f16_detected() >= 2 ? " or f16c512" : " (this CPU runs no more)");
    f16_cap = cap;
    return CR_OK;
}

const char *cr_fp16_storage_path(void)
{
    static const char *const names[] = {"portable", "f16c", "f16c512"};
    return names[f16_level()];
}

#if CR_HAVE_F16C
/* dst[0..n) = fp16 bits of src[0..n), 16 (or 8) lanes at a time, ties to even as
 * cr_f32_to_f16; a NaN lane is redone by cr_f32_to_f16 (vcvtps2ph keeps a NaN's payload,
 * lib makes every NaN 0x7E00 with its sign). */
CR_F16C_512_TARGET static void f32_to_f16_avx512(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const int m = n - i < 16 ? (int)(n - i) : 16;   /* the tail: masked, no scalar loop */
        const __mmask16 k = (__mmask16)((1u << m) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(k, src + i);
        const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        if (m == 16) _mm256_storeu_si256((__m256i *)(dst + i), h);
        else {
            uint16_t tmp[16];
            _mm256_storeu_si256((__m256i *)tmp, h);
            memcpy(dst + i, tmp, (size_t)m * sizeof *tmp);
        }
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q))
            for (int j = 0; j < m; j++) dst[i + j] = cr_f32_to_f16(src[i + j]);
    }
}

CR_F16C_TARGET static void f32_to_f16_f16c(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
            for (int j = 0; j < 8; j++) dst[i + j] = cr_f32_to_f16(src[i + j]);
    }
    for (; i < n; i++) dst[i] = cr_f32_to_f16(src[i]);
}

/* dst[0..n) = src[0..n) fp16 bits widened to float (exact). */
CR_F16C_512_TARGET static void f16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {   /* the tail through a zeroed vector, stored under a mask */
        uint16_t tmp[16] = {0};
        memcpy(tmp, src + i, (size_t)(n - i) * sizeof *tmp);
        _mm512_mask_storeu_ps(dst + i, (__mmask16)((1u << (n - i)) - 1),
                              _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)tmp)));
    }
}

CR_F16C_TARGET static void f16_to_f32_f16c(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = cr_f16_to_f32(src[i]);
}
#endif

void cr_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n)
{
#if CR_HAVE_F16C
    const int level = f16_level();
    if (level == 2) { f32_to_f16_avx512(src, dst, n); return; }
    if (level == 1) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = cr_f32_to_f16(src[i]);
}

/* dst[0..n) = src[0..n) widened to float, exactly (every fp16 value is a float). */
static void f16_to_f32_row(const uint16_t *src, float *dst, int64_t n)
{
#if CR_HAVE_F16C
    const int level = f16_level();
    if (level == 2) { f16_to_f32_avx512(src, dst, n); return; }
    if (level == 1) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = cr_f16_to_f32(src[i]);
}

/* An fp16 matrix as the engine's operand: element (row r, depth k) at p[r * rs + k * cs]. */
typedef struct {
    const uint16_t *p;
    int64_t rs, cs;
} f16_strided;

/* cr_pack_fn for an f16_strided context: chapter 3's panels (`panel` rows side by side
 * for each k, rows past the end zero), each value widened to float (scale is 1 here).
 * B (rs == 1: a panel's values are consecutive in memory) widens a run at a time; A's
 * rows (cs == 1) widen 16 depths at a time into a buffer and are laid across. */
static void pack_f16(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                     int panel, float scale, float *dst)
{
    const f16_strided *s = ctx;
    (void)scale;   /* cr_gemm_fp16 passes alpha = 1 */
    for (int64_t q = 0; q < rows; q += panel) {
        const int64_t h = rows - q < panel ? rows - q : panel;
        float *d = dst + q * kc;                          /* panels are kc x panel */
        if (s->rs == 1) {
            for (int64_t k = 0; k < kc; k++) {
                f16_to_f32_row(s->p + (r0 + q) + (k0 + k) * s->cs, d + k * panel, h);
                for (int64_t i = h; i < panel; i++) d[k * panel + i] = 0.0f;
            }
        } else {
            float buf[16];
            for (int64_t i = 0; i < panel; i++) {
                if (i >= h) {
                    for (int64_t k = 0; k < kc; k++) d[k * panel + i] = 0.0f;
                    continue;
                }
                const uint16_t *src = s->p + (r0 + q + i) * s->rs + k0 * s->cs;
                for (int64_t k = 0; k < kc; k += 16) {
                    const int64_t m = kc - k < 16 ? kc - k : 16;
                    if (s->cs == 1) f16_to_f32_row(src + k, buf, m);
                    else
                        for (int64_t j = 0; j < m; j++) buf[j] = cr_f16_to_f32(src[(k + j) * s->cs]);
                    for (int64_t j = 0; j < m; j++) d[(k + j) * panel + i] = buf[j];
                }
            }
        }
    }
}

cr_status cr_gemm_fp16(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                       const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int threads)
{
    /* chapter 3's checks of sizes, leading dimensions and NULLs (only the pointers' values
     * are looked at, never what they point to) */
    cr_status st = cr_gemm_check_args("cr_gemm_fp16", CR_NO_TRANS, CR_NO_TRANS, M, N, K,
                                      (const float *)(const void *)A, lda,
                                      (const float *)(const void *)B, ldb, C, ldc);
    if (st) return st;
    if (threads != 0 && threads != 1)
        return cr_fail(CR_EINVAL, "cr_gemm_fp16: threads: expected 0 (OpenMP's) or 1, got %d",
                       threads);
    const f16_strided a = {A, lda, 1}, b = {B, 1, ldb};   /* B as its transpose: N x K */
    const cr_gemm_operand oa = {pack_f16, &a, NULL, 0}, ob = {pack_f16, &b, NULL, 0};
    return cr_gemm_engine(cr_gemm_kernel_for(cr_gemm_active_kernel(), M), M, N, K, &oa, &ob,
                          1.0f, 0.0f, C, ldc, threads);
}

/* True for a 1x1, stride-1, unpadded kernel: the input rows are the patch matrix. */
static int is_pointwise(const cr_conv_params *p)
{
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0;
}

/* ---- preparing the weights ---------------------------------------------------------------- */

// @snippet bf16_prepare
cr_status cr_half_conv_prepare(cr_bf16_conv *bc, cr_half_format fmt, const cr_conv_params *p,
                               const cr_tensor *w, const cr_tensor *b)
{
    /* messages name the entry point of the format: cr_bf16_conv_prepare is bf16's */
    const char *fn = fmt == CR_HALF_BF16 ? "cr_bf16_conv_prepare" : "cr_half_conv_prepare";
    if (!bc || !p || !w) return cr_fail(CR_EINVAL, "%s: bc, p and w must not be NULL", fn);
    memset(bc, 0, sizeof *bc);
    if (fmt != CR_HALF_BF16 && fmt != CR_HALF_FP16)
        return cr_fail(CR_EINVAL, "cr_half_conv_prepare: fmt: expected CR_HALF_BF16 or "
                       "CR_HALF_FP16, got %d", (int)fmt);
    /* the weight's and bias's shapes through the descriptor's own check, on a 1-pixel
     * stand-in input that any kernel fits once padded */
    cr_conv_params q = *p;
    q.pad_mode = CR_PAD_ZEROS;
    q.pad_top = q.pad_bottom = (p->kernel_h - 1) * p->dilation_h;
    q.pad_left = q.pad_right = (p->kernel_w - 1) * p->dilation_w;
    cr_conv_shape s;
    cr_status st = cr_conv_shape_init(&s, &q, 1, 1, 1);
    if (st) return st;
    const int64_t cout = p->out_channels, K = s.cin_g * p->kernel_h * p->kernel_w;
    if (!w->data || w->ndim != 4 || w->shape[0] != cout || w->shape[1] != s.cin_g ||
        w->shape[2] != p->kernel_h || w->shape[3] != p->kernel_w)
        return cr_fail(CR_EINVAL, "%s: w: expected [%lld, %lld, %lld, %lld] (OIHW)", fn,
                       (long long)cout, (long long)s.cin_g, (long long)p->kernel_h,
                       (long long)p->kernel_w);
    if (p->bias != (b != NULL && b->data != NULL))
        return cr_fail(CR_EINVAL, "%s: b: %s", fn, p->bias
                       ? "the convolution has a bias, b is missing"
                       : "the convolution has no bias (p->bias false), b must be NULL");
    if (b && (b->numel != (size_t)cout))
        return cr_fail(CR_EINVAL, "%s: b: %zu elements, expected %lld (Cout)", fn, b->numel,
                       (long long)cout);
    bc->p = *p;
    bc->fmt = fmt;
    bc->cin_g = s.cin_g;
    bc->cout_g = s.cout_g;
    bc->K = K;
    bc->w = cr_aligned_alloc((size_t)(cout * K) * sizeof *bc->w);
    bc->bias = b ? cr_aligned_alloc((size_t)cout * sizeof *bc->bias) : NULL;
    if (!bc->w || (b && !bc->bias)) {
        cr_bf16_conv_free(bc);
        return cr_fail(CR_ENOMEM, "%s: %lld x %lld weights: out of memory", fn, (long long)cout, (long long)K);
    }
    if (fmt == CR_HALF_FP16) cr_f32_to_f16_row(w->data, bc->w, cout * K);   /* once */
    else
        for (int64_t i = 0; i < cout * K; i++) bc->w[i] = to_bf16(w->data[i]);   /* once */
    if (b) memcpy(bc->bias, b->data, (size_t)cout * sizeof *bc->bias);
    return CR_OK;
}

cr_status cr_bf16_conv_prepare(cr_bf16_conv *bc, const cr_conv_params *p, const cr_tensor *w,
                               const cr_tensor *b)
{
    return cr_half_conv_prepare(bc, CR_HALF_BF16, p, w, b);
}
// @end bf16_prepare

void cr_bf16_conv_free(cr_bf16_conv *bc)
{
    if (!bc) return;
    cr_aligned_free(bc->w);
    cr_aligned_free(bc->bias);
    memset(bc, 0, sizeof *bc);
}

size_t cr_bf16_conv_bytes(const cr_bf16_conv *bc)
{
    const size_t cout = (size_t)bc->p.out_channels;
    return cout * (size_t)bc->K * sizeof(uint16_t) + (bc->bias ? cout * sizeof(float) : 0);
}

/* ---- the forward ------------------------------------------------------------------------- */

/* Where each tap column q reads: map[q * Wo + ow] = the input column (or -1: zero), and
 * [lo[q], hi[q]) the output columns whose input column lies inside the image, which
 * every padding mode reads directly at ow * stride - pad_left + q * dilation. */
typedef struct {
    int64_t *map, *lo, *hi;
    int64_t *rows;   /* rows[r * Ho + oh]: the input row tap row r reads for output row oh, or -1 */
    int64_t *kc, *kr, *kq;  /* patch-matrix row k's channel, kernel row and kernel column */
} col_plan;

/* Fills plan for shape s (S x Wo entries in map, S in lo and hi, R x Ho in rows, K in kc,
 * kr and kq). */
static void plan_columns(const cr_conv_shape *s, col_plan *plan)
{
    const cr_conv_params *p = &s->p;
    const int64_t RS = p->kernel_h * p->kernel_w;
    for (int64_t k = 0; k < s->cin_g * RS; k++) {
        plan->kc[k] = k / RS;
        plan->kr[k] = (k / p->kernel_w) % p->kernel_h;
        plan->kq[k] = k % p->kernel_w;
    }
    for (int64_t r = 0; r < p->kernel_h; r++)
        for (int64_t oh = 0; oh < s->h_out; oh++)
            plan->rows[r * s->h_out + oh] = cr_pad_index(
                oh * p->stride_h - p->pad_top + r * p->dilation_h, s->h_in, p->pad_mode);
    for (int64_t q = 0; q < p->kernel_w; q++) {
        int64_t lo = s->w_out, hi = 0;
        for (int64_t ow = 0; ow < s->w_out; ow++) {
            const int64_t raw = ow * p->stride_w - p->pad_left + q * p->dilation_w;
            plan->map[q * s->w_out + ow] = cr_pad_index(raw, s->w_in, p->pad_mode);
            if (raw >= 0 && raw < s->w_in) {
                lo = ow < lo ? ow : lo;
                hi = ow + 1;
            }
        }
        plan->lo[q] = lo < hi ? lo : 0;
        plan->hi[q] = lo < hi ? hi : 0;
    }
}

// @snippet bf16_gather
/* Row k = (c*kh + r)*kw + q of one image's and group's patch matrix, as bf16: x_g is the
 * group's Cin_g x H x W input, row its Ho*Wo entries. Rows of the padded input come from
 * chapter 1's rule; inside the image a column is read directly, at the edges through
 * the plan's map. */
static void gather_row(const cr_conv_shape *s, const col_plan *plan, const float *x_g, int64_t k,
                       uint16_t *row)
{
    const cr_conv_params *p = &s->p;
    const int64_t R = p->kernel_h, S = p->kernel_w, H = s->h_in, W = s->w_in, Wo = s->w_out;
    const int64_t c = k / (R * S), r = (k / S) % R, q = k % S;
    const int64_t *map = plan->map + q * Wo, lo = plan->lo[q], hi = plan->hi[q];
    const int64_t sw = p->stride_w, off = q * p->dilation_w - p->pad_left;
    for (int64_t oh = 0; oh < s->h_out; oh++, row += Wo) {
        const int64_t ih = plan->rows[r * s->h_out + oh];
        if (ih < 0) {                                   /* a row of zero padding */
            memset(row, 0, (size_t)Wo * sizeof *row);
            continue;
        }
        const float *src = x_g + (c * H + ih) * W;
        for (int64_t ow = 0; ow < lo; ow++) row[ow] = map[ow] < 0 ? 0 : to_bf16(src[map[ow]]);
        for (int64_t ow = lo; ow < hi; ow++) row[ow] = to_bf16(src[ow * sw + off]);
        for (int64_t ow = hi; ow < Wo; ow++) row[ow] = map[ow] < 0 ? 0 : to_bf16(src[map[ow]]);
    }
}

/* One image, one group: Y_g (Cout_g x Ho*Wo) = W_g (Cout_g x K, bf16) * bf16(patches) + b_g.
 * col: K x Ho*Wo bf16 scratch; par: gather with every thread (else on the caller's). */
static cr_status conv_group_bf16(const cr_bf16_conv *bc, const cr_conv_shape *s,
                                 const col_plan *plan, const float *x_g, const uint16_t *w_g,
                                 const float *b_g, float *y_g, uint16_t *col, int par)
{
    const int64_t plane = s->h_out * s->w_out, K = bc->K, HW = s->h_in * s->w_in;
    if (is_pointwise(&bc->p)) {                         /* the input rows, converted */
#pragma omp parallel for schedule(static) if (par)
        for (int64_t i = 0; i < K * HW; i++) col[i] = to_bf16(x_g[i]);
    } else {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t k = 0; k < K; k++) gather_row(s, plan, x_g, k, col + k * plane);
    }
    cr_status st = cr_gemm_bf16(s->cout_g, plane, K, w_g, K, col, plane, y_g, plane, 0);
    if (st == CR_OK && b_g)
        for (int64_t m = 0; m < s->cout_g; m++)
            for (int64_t j = 0; j < plane; j++) y_g[m * plane + j] += b_g[m];
    return st;
}
// @end bf16_gather

// @snippet fp16_patches
/* The fp16 image of one group as B for chapter 3's engine: its Cin_g x H x W input in
 * fp16 (xh), the patch matrix (K x Ho*Wo) it stands for never written. */
typedef struct {
    const cr_conv_shape *s;
    const col_plan *plan;
    const uint16_t *xh;
} f16_patches;

/* cr_pack_fn for an f16_patches context: columns [j0, j0 + cols) and depths [k0, k0 + kc)
 * of the patch matrix into chapter 3's panels, widened to float. Each panel row is cut at
 * output rows; a run inside the image at stride 1 is widened in one go, the rest (edges
 * through the plan's map, strides) picked into a buffer first. */
static void pack_f16_patches(const void *ctx, int64_t j0, int64_t cols, int64_t k0, int64_t kc,
                             int panel, float scale, float *dst)
{
    const f16_patches *src = ctx;
    const cr_conv_shape *s = src->s;
    const col_plan *plan = src->plan;
    const int64_t H = s->h_in, W = s->w_in, Ho = s->h_out, Wo = s->w_out, sw = s->p.stride_w;
    (void)scale;   /* B is never scaled */
    for (int64_t q = 0; q < cols; q += panel) {
        const int64_t h = cols - q < panel ? cols - q : panel;
        for (int64_t k = 0; k < kc; k++) {
            const int64_t kk = k0 + k, t = plan->kq[kk];
            const int64_t *map = plan->map + t * Wo, lo = plan->lo[t], hi = plan->hi[t];
            const int64_t off = t * s->p.dilation_w - s->p.pad_left;
            float *dk = dst + q * kc + k * panel;
            for (int64_t i = 0, j = j0 + q; i < h;) {   /* one output row's run at a time */
                const int64_t oh = j / Wo, ow = j % Wo, len = h - i < Wo - ow ? h - i : Wo - ow;
                const int64_t ih = plan->rows[plan->kr[kk] * Ho + oh];
                if (ih < 0) {
                    memset(dk + i, 0, (size_t)len * sizeof(float));
                } else {
                    const uint16_t *row = src->xh + (plan->kc[kk] * H + ih) * W;
                    const int64_t a = ow > lo ? ow : lo, b = ow + len < hi ? ow + len : hi;
                    if (sw == 1 && a < b) {   /* inside the image: straight from the row */
                        for (int64_t e = ow; e < a; e++)
                            dk[i + e - ow] = map[e] < 0 ? 0.0f : cr_f16_to_f32(row[map[e]]);
                        f16_to_f32_row(row + a + off, dk + i + a - ow, b - a);
                        for (int64_t e = b; e < ow + len; e++)
                            dk[i + e - ow] = map[e] < 0 ? 0.0f : cr_f16_to_f32(row[map[e]]);
                    } else {                  /* strides, edges: picked, then widened */
                        uint16_t buf[CR_MAX_NR];
                        for (int64_t e = 0; e < len; e++)
                            buf[e] = map[ow + e] < 0 ? 0 : row[map[ow + e]];
                        f16_to_f32_row(buf, dk + i, len);
                    }
                }
                i += len;
                j += len;
            }
            for (int64_t i = h; i < panel; i++) dk[i] = 0.0f;   /* the edge panel */
        }
    }
}

/* One image, one group in fp16: x_g (Cin_g x H x W float) to fp16 in xh (Cin_g*H*W
 * scratch), then Y_g (Cout_g x Ho*Wo) = W_g (Cout_g x K fp16) * patches(xh) + b_g through
 * chapter 3's engine, both operands widened as they are packed (a 1x1 stride-1 unpadded
 * kernel: xh is the patch matrix). par: with every thread (else on the caller's). */
static cr_status conv_group_fp16(const cr_bf16_conv *bc, const cr_conv_shape *s,
                                 const col_plan *plan, const float *x_g, const uint16_t *w_g,
                                 const float *b_g, float *y_g, uint16_t *xh, int par)
{
    const int64_t plane = s->h_out * s->w_out, K = bc->K, HW = s->h_in * s->w_in;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t c = 0; c < s->cin_g; c++) cr_f32_to_f16_row(x_g + c * HW, xh + c * HW, HW);
    const f16_strided wa = {w_g, K, 1}, xa = {xh, 1, HW};   /* xa: the 1x1 case, N x K */
    const f16_patches xp = {s, plan, xh};
    const cr_gemm_operand A = {pack_f16, &wa, NULL, 0},
                          B = is_pointwise(&bc->p) ? (cr_gemm_operand){pack_f16, &xa, NULL, 0}
                                                   : (cr_gemm_operand){pack_f16_patches, &xp, NULL, 0};
    cr_status st = cr_gemm_engine(cr_gemm_kernel_for(cr_gemm_active_kernel(), s->cout_g),
                                  s->cout_g, plane, K, &A, &B, 1.0f, 0.0f, y_g, plane, par ? 0 : 1);
    if (st == CR_OK && b_g)
        for (int64_t m = 0; m < s->cout_g; m++)
            for (int64_t j = 0; j < plane; j++) y_g[m * plane + j] += b_g[m];
    return st;
}
// @end fp16_patches

/* One (image, group) pair of the forward: the group's slices of x, w, b, y. */
static cr_status run_pair(const cr_bf16_conv *bc, const cr_conv_shape *s, const col_plan *plan,
                          const cr_tensor *x, cr_tensor *y, int64_t n, int64_t g,
                          uint16_t *col, int par)
{
    const cr_conv_params *p = &bc->p;
    const int64_t HW = s->h_in * s->w_in, plane = s->h_out * s->w_out;
    const float *x_g = x->data + (n * p->in_channels + g * s->cin_g) * HW;
    const uint16_t *w_g = bc->w + g * s->cout_g * bc->K;
    const float *b_g = bc->bias ? bc->bias + g * s->cout_g : NULL;
    float *y_g = y->data + (n * p->out_channels + g * s->cout_g) * plane;
    return bc->fmt == CR_HALF_FP16 ? conv_group_fp16(bc, s, plan, x_g, w_g, b_g, y_g, col, par)
                                   : conv_group_bf16(bc, s, plan, x_g, w_g, b_g, y_g, col, par);
}

/* ---- scratch kept between calls ------------------------------------------------------------ */

/* A model's forward needs a scratch per convolution (a bf16 patch matrix, an fp16 copy of
 * the input); lib's pool (scratch.h) keeps them between calls: the first fp16 FPN, with
 * buffers mapped fresh each call, ran at 0.35x fp32's speed, and at 0.57x with glibc told
 * to keep freed memory (MALLOC_MMAP_THRESHOLD_; batch 1, lab 7, a loaded machine,
 * 2026-11-30). */
void cr_half_scratch_release(void) { cr_scratch_release(); }

/* The scratch forward (any CPU): per (image, group) pair a bf16 patch matrix and
 * cr_gemm_bf16, or an fp16 input and chapter 3's engine, the pairs shared by the threads
 * or each pair on all of them. */
static cr_status forward_gemm(const cr_bf16_conv *bc, const cr_conv_shape *s,
                              const col_plan *plan, const cr_tensor *x, cr_tensor *y)
{
    /* bf16: one patch matrix (K x Ho*Wo); fp16: the group's input (Cin_g x H x W) */
    const size_t col_bytes = (size_t)(bc->fmt == CR_HALF_FP16 ? s->cin_g * s->h_in * s->w_in
                                                              : bc->K * s->h_out * s->w_out) *
                             sizeof(uint16_t);
    const int T = cr_conv_outer_threads(s);
    cr_status failed = CR_OK;
    if (T == 1) {            /* pairs one after the other, each on every thread */
        size_t cap;
        uint16_t *col = cr_scratch_get(col_bytes, &cap);
        if (!col) failed = cr_fail(CR_ENOMEM, "cr_bf16_conv_forward: scratch of %zu bytes",
                                   col_bytes);
        for (int64_t n = 0; n < s->batch && !failed; n++)
            for (int64_t g = 0; g < bc->p.groups && !failed; g++)
                failed = run_pair(bc, s, plan, x, y, n, g, col, 1);
        cr_scratch_put(col, cap);
        return failed;
    }
#pragma omp parallel num_threads(T)
    {                        /* pairs shared by the threads, each on one thread */
        size_t cap;
        uint16_t *col = cr_scratch_get(col_bytes, &cap);   /* one scratch per thread */
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < s->batch; n++)
            for (int64_t g = 0; g < bc->p.groups; g++) {
                cr_status e = col ? run_pair(bc, s, plan, x, y, n, g, col, 0)
                                  : cr_fail(CR_ENOMEM, "cr_bf16_conv_forward: scratch "
                                            "of %zu bytes", col_bytes);
                if (e != CR_OK) {
#pragma omp critical(cr_bf16_conv_status)
                    failed = e;
                }
            }
        cr_scratch_put(col, cap);
    }
    return failed;
}

/* ---- the packed path: the gather writes the GEMM's panels (AVX512-BF16) ---------------- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CR_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define CR_HAVE_PACKED 1

/* Bits [a, b) of a 64-bit mask (none when a >= b); 0 <= a, b <= 64. */
static inline uint64_t bit_range(int64_t a, int64_t b)
{
    if (a >= b) return 0;
    return ((b == 64 ? 0 : 1ull << b) - 1) ^ ((1ull << a) - 1);
}

/* n <= 32 values of one input row (rowbase, W floats) read at stride sw (1 or 2) from
 * column c0, as two vectors: lane i holds rowbase[c0 + i * sw], or 0 where that column
 * lies outside the row (zero padding) and for i >= n. Masked loads: a masked-off lane
 * touches no memory, so c0 may lie left of the row. */
CR_BF16_TARGET static inline void row_run(const float *rowbase, int64_t c0, int64_t W, int64_t sw,
                                          int64_t n, __m512 *v0, __m512 *v1)
{
    const int64_t a = -c0 > 0 ? -c0 : 0, span = sw * n, b = W - c0 < span ? W - c0 : span;
    const uint64_t m = bit_range(a, b);
    const float *src = (const float *)((uintptr_t)rowbase + (uintptr_t)c0 * sizeof(float));
    const __m512 s0 = _mm512_maskz_loadu_ps((__mmask16)m, src);
    const __m512 s1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), src + 16);
    if (sw == 1) {
        *v0 = s0;
        *v1 = s1;
        return;
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);   /* stride 2: the even source lanes */
    const __m512 s2 = _mm512_maskz_loadu_ps((__mmask16)(m >> 32), src + 32);
    const __m512 s3 = _mm512_maskz_loadu_ps((__mmask16)(m >> 48), src + 48);
    *v0 = _mm512_permutex2var_ps(s0, even, s1);
    *v1 = _mm512_permutex2var_ps(s2, even, s3);
}

/* The 32 floats of patch-matrix row k at panel columns [j0, j0 + w) (zeros past w),
 * as two vectors. A 1x1 stride-1 kernel reads them straight from x_g (the input rows
 * are the matrix). Otherwise the panel is cut at output rows, and each run of one
 * output row at stride 1 or 2 is read with row_run where zero padding applies or every
 * column of the run lies inside the image; what remains (reflect, replicate and
 * circular edges, other strides) comes from chapter 1's rule, value by value. */
CR_BF16_TARGET static inline void panel_row(const cr_conv_shape *s, const col_plan *plan,
                                            const float *x_g, int64_t k, int64_t j0,
                                            int64_t w, float *tmp, __m512 *v0, __m512 *v1)
{
    const cr_conv_params *p = &s->p;
    const int64_t W = s->w_in, Wo = s->w_out, HW = s->h_in * W, sw = p->stride_w;
    if (is_pointwise(p)) {
        const float *src = x_g + k * HW + j0;
        const uint64_t m = bit_range(0, w);
        *v0 = _mm512_maskz_loadu_ps((__mmask16)m, src);
        *v1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), src + 16);
        return;
    }
    const int64_t q = plan->kq[k], *map = plan->map + q * Wo, lo = plan->lo[q], hi = plan->hi[q];
    const int64_t *rows = plan->rows + plan->kr[k] * s->h_out;
    const float *xc = x_g + plan->kc[k] * HW;
    const int64_t off = q * p->dilation_w - p->pad_left;
    const int vec = sw <= 2, zeros = p->pad_mode == CR_PAD_ZEROS;
    int64_t oh = j0 / Wo, ow = j0 % Wo;
    if (ow + CR_BF16_NR <= Wo) {                            /* one output row: no buffer */
        const int64_t ih = rows[oh];
        if (ih < 0) {
            *v0 = *v1 = _mm512_setzero_ps();
            return;
        }
        if (vec && (zeros || (ow >= lo && ow + CR_BF16_NR <= hi))) {
            row_run(xc + ih * W, ow * sw + off, W, sw, CR_BF16_NR, v0, v1);
            return;
        }
    }
    for (int64_t jj = 0; jj < CR_BF16_NR;) {                /* run after run of output rows */
        const int64_t n = jj >= w ? CR_BF16_NR - jj : (Wo - ow < w - jj ? Wo - ow : w - jj);
        const int64_t ih = jj >= w ? -1 : rows[oh];
        if (ih < 0) {                                       /* past w, or zero padding */
            memset(tmp + jj, 0, (size_t)n * sizeof *tmp);
        } else if (vec && (zeros || (ow >= lo && ow + n <= hi))) {
            __m512 r0, r1;
            row_run(xc + ih * W, ow * sw + off, W, sw, n, &r0, &r1);
            const uint64_t m = bit_range(0, n);
            _mm512_mask_storeu_ps(tmp + jj, (__mmask16)m, r0);
            _mm512_mask_storeu_ps(tmp + jj + 16, (__mmask16)(m >> 16), r1);
        } else {
            for (int64_t i = 0; i < n; i++)
                tmp[jj + i] = map[ow + i] < 0 ? 0.0f : xc[ih * W + map[ow + i]];
        }
        jj += n;
        ow += n;
        if (ow == Wo) {
            ow = 0;
            oh++;
        }
    }
    *v0 = _mm512_loadu_ps(tmp);
    *v1 = _mm512_loadu_ps(tmp + 16);
}

// @snippet bf16_pack_pair
/* One k pair of a packed panel: rows a and b (32 floats each, as two vectors) rounded to
 * bf16 by vcvtne2ps2bf16 (to nearest even) and interleaved, d[2j] = a[j], d[2j+1] = b[j],
 * the order in which vdpbf16ps reads a pair. */
CR_BF16_TARGET static inline void pack_pair(__m512 a0, __m512 a1, __m512 b0, __m512 b1,
                                            uint16_t *d)
{
    static const uint16_t lo_idx[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                        8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    static const uint16_t hi_idx[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54,
                                        23, 55, 24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61,
                                        30, 62, 31, 63};
    const __m512i va = (__m512i)_mm512_cvtne2ps_pbh(a1, a0);   /* a[0..15] in the low half */
    const __m512i vb = (__m512i)_mm512_cvtne2ps_pbh(b1, b0);
    _mm512_storeu_si512(d, _mm512_permutex2var_epi16(va, _mm512_loadu_si512(lo_idx), vb));
    _mm512_storeu_si512(d + 32, _mm512_permutex2var_epi16(va, _mm512_loadu_si512(hi_idx), vb));
}

/* The packed panel of columns [j0, j0 + w) of one image's and group's patch matrix: for
 * each k pair, its two rows gathered and packed (an odd K's last pair against zeros). */
CR_BF16_TARGET static void pack_panel(const cr_bf16_conv *bc, const cr_conv_shape *s,
                                      const col_plan *plan, const float *x_g, int64_t j0,
                                      int64_t w, uint16_t *Bp)
{
    float tmp[CR_BF16_NR];
    __m512 a0, a1, b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    for (int64_t k = 0; k < bc->K; k += 2, Bp += 2 * CR_BF16_NR) {
        panel_row(s, plan, x_g, k, j0, w, tmp, &a0, &a1);
        if (k + 1 < bc->K) panel_row(s, plan, x_g, k + 1, j0, w, tmp, &b0, &b1);
        else b0 = b1 = _mm512_setzero_ps();
        pack_pair(a0, a1, b0, b1, Bp);
    }
}
// @end bf16_pack_pair

/* Row blocks of Cout/groups rows for the work items: 1, or (when the (image, group,
 * panel) items are too few to keep T threads busy, as in the deep layers of a small
 * image) enough blocks of a multiple of 12 rows, the panel kernel's tile, to make about
 * 2T items. Each entry gets the same instructions whatever block holds it. */
static int64_t row_block(int64_t M, int64_t items, int T)
{
    if (T < 2 || items >= 2 * (int64_t)T || M < 24) return M;
    const int64_t want = (2 * (int64_t)T + items - 1) / items;   /* blocks per item */
    const int64_t rb = (M + want - 1) / want;
    return (rb + 11) / 12 * 12;
}

/* The packed forward: every (image, group, 32-column panel, row block) is one work item,
 * the items shared by the threads in order: the panel packed by the gather, multiplied
 * by the panel kernel, + bias. */
static cr_status forward_packed(const cr_bf16_conv *bc, const cr_conv_shape *s,
                                const col_plan *plan, const cr_tensor *x, cr_tensor *y)
{
    const cr_conv_params *p = &bc->p;
    const int64_t plane = s->h_out * s->w_out, HW = s->h_in * s->w_in, K = bc->K, M = s->cout_g;
    const int64_t np = (plane + CR_BF16_NR - 1) / CR_BF16_NR, panels = s->batch * p->groups * np;
    const size_t bp_bytes = (size_t)((K + 1) / 2) * 2 * CR_BF16_NR * sizeof(uint16_t);
#ifdef _OPENMP
    const int T = omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    const int T = 1;
#endif
    const int64_t rb = row_block(M, panels, T), nb = (M + rb - 1) / rb, items = panels * nb;
    cr_status failed = CR_OK;
#pragma omp parallel num_threads(T) if (T > 1 && items > 1)
    {
        uint16_t *Bp = cr_aligned_alloc(bp_bytes);
        if (!Bp) {
#pragma omp critical(cr_bf16_conv_status)
            failed = cr_fail(CR_ENOMEM, "cr_bf16_conv_forward: packed panel of %zu bytes", bp_bytes);
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!Bp) continue;
            const int64_t panel = it / nb, m0 = (it % nb) * rb, rows = M - m0 < rb ? M - m0 : rb;
            const int64_t pair = panel / np, j0 = (panel % np) * CR_BF16_NR;
            const int64_t n = pair / p->groups, g = pair % p->groups;
            const int64_t w = plane - j0 < CR_BF16_NR ? plane - j0 : CR_BF16_NR;
            float *y_g = y->data + (n * p->out_channels + g * M + m0) * plane;
            pack_panel(bc, s, plan, x->data + (n * p->in_channels + g * s->cin_g) * HW, j0, w, Bp);
            cr_bf16_gemm_panel_avx512(rows, K, bc->w + (g * M + m0) * K, K, Bp, y_g + j0, plane,
                                      w, 0);
            if (bc->bias)
                for (int64_t m = 0; m < rows; m++)
                    for (int64_t j = j0; j < j0 + w; j++)
                        y_g[m * plane + j] += bc->bias[g * M + m0 + m];
        }
        cr_aligned_free(Bp);
    }
    return failed;
}
#else
#define CR_HAVE_PACKED 0
static cr_status forward_packed(const cr_bf16_conv *bc, const cr_conv_shape *s,
                                const col_plan *plan, const cr_tensor *x, cr_tensor *y)
{
    return forward_gemm(bc, s, plan, x, y);
}
#endif

/* ---- choosing the path ------------------------------------------------------------------ */

static int path_choice;   /* 0 auto, 1 packed, 2 gemm */

/* True if this CPU (and build) runs the packed path; asked once (CPUID traps to the
 * hypervisor in a virtual machine: not something to ask per convolution). Racing
 * threads store the same value. */
static int packed_runs(void)
{
    static int known = -1;
    if (known < 0) known = CR_HAVE_PACKED && cr_gemm_bf16_native();
    return known;
}

cr_status cr_bf16_conv_set_path(const char *name)
{
    if (name && strcmp(name, "auto") == 0) path_choice = 0;
    else if (name && strcmp(name, "packed") == 0 && packed_runs()) path_choice = 1;
    else if (name && strcmp(name, "gemm") == 0) path_choice = 2;
    else
        return cr_fail(CR_EINVAL, "bf16 conv path \"%s\": expected auto, gemm%s", name ? name : "(null)",
                       packed_runs() ? " or packed" : " (packed needs AVX512-BF16, which this CPU lacks)");
    return CR_OK;
}

const char *cr_bf16_conv_path(void)
{
    return path_choice == 2 || !packed_runs() ? "gemm" : "packed";
}

cr_status cr_bf16_conv_forward(const cr_bf16_conv *bc, const cr_tensor *x, cr_tensor *y)
{
    if (!bc || !bc->w) return cr_fail(CR_EINVAL, "cr_bf16_conv_forward: bc is not prepared");
    if (!x || !x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "cr_bf16_conv_forward: x: expected a 4-d N x %lld x H x W tensor",
                       (long long)bc->p.in_channels);
    cr_conv_shape s;
    cr_status st = cr_conv_shape_init(&s, &bc->p, x->shape[0], x->shape[2], x->shape[3]);
    if (st) return st;
    if (x->shape[1] != bc->p.in_channels)
        return cr_fail(CR_EINVAL, "cr_bf16_conv_forward: x has %lld channels, expected %lld",
                       (long long)x->shape[1], (long long)bc->p.in_channels);
    if (!y || !y->data || y->ndim != 4 || y->shape[0] != s.batch ||
        y->shape[1] != bc->p.out_channels || y->shape[2] != s.h_out || y->shape[3] != s.w_out)
        return cr_fail(CR_EINVAL, "cr_bf16_conv_forward: y: expected [%lld, %lld, %lld, %lld]",
                       (long long)s.batch, (long long)bc->p.out_channels, (long long)s.h_out,
                       (long long)s.w_out);
    const int64_t R = bc->p.kernel_h, S = bc->p.kernel_w;
    const int64_t K = bc->K, n_map = S * s.w_out, n_rows = R * s.h_out;
    int64_t *buf = malloc((size_t)(n_map + 2 * S + n_rows + 3 * K) * sizeof(int64_t));
    if (!buf) return cr_fail(CR_ENOMEM, "cr_bf16_conv_forward: column plan: out of memory");
    col_plan plan = {buf, buf + n_map, buf + n_map + S, buf + n_map + 2 * S,
                     buf + n_map + 2 * S + n_rows, buf + n_map + 2 * S + n_rows + K,
                     buf + n_map + 2 * S + n_rows + 2 * K};
    plan_columns(&s, &plan);
    st = bc->fmt == CR_HALF_BF16 && strcmp(cr_bf16_conv_path(), "packed") == 0
        ? forward_packed(bc, &s, &plan, x, y) : forward_gemm(bc, &s, &plan, x, y);
    free(buf);
    return st;
}

/* Prepare, forward and free in format fmt. */
static cr_status conv2d_half(cr_half_format fmt, const cr_conv_params *p, const cr_tensor *x,
                             const cr_tensor *w, const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    cr_bf16_conv bc;
    st = cr_half_conv_prepare(&bc, fmt, p, w, b);
    if (!st) st = cr_bf16_conv_forward(&bc, x, y);
    cr_bf16_conv_free(&bc);
    return st;
}

cr_status cr_conv2d_bf16(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y)
{
    return conv2d_half(CR_HALF_BF16, p, x, w, b, y);
}

cr_status cr_conv2d_fp16(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y)
{
    return conv2d_half(CR_HALF_FP16, p, x, w, b, y);
}

/* v rounded to format fmt and back: bf16 or fp16 through lib's conversions. */
static float round_half(cr_half_format fmt, float v)
{
    return fmt == CR_HALF_FP16 ? cr_f16_to_f32(cr_f32_to_f16(v)) : cr_bf16_to_f32(cr_f32_to_bf16(v));
}

// @snippet bf16_ref
/* The definition in format fmt: seven loops, products of rounded operands summed in double. */
static cr_status conv2d_half_ref(cr_half_format fmt, const cr_conv_params *p, const cr_tensor *x,
                                 const cr_tensor *w, const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    const int64_t H = s.h_in, W = s.w_in, R = p->kernel_h, S = p->kernel_w;
    for (int64_t n = 0; n < s.batch; n++)
        for (int64_t o = 0; o < p->out_channels; o++)
            for (int64_t oh = 0; oh < s.h_out; oh++)
                for (int64_t ow = 0; ow < s.w_out; ow++) {
                    const int64_t g = o / s.cout_g;
                    double acc = 0.0;   /* exact products, summed in double */
                    for (int64_t c = 0; c < s.cin_g; c++)
                        for (int64_t r = 0; r < R; r++)
                            for (int64_t q = 0; q < S; q++) {
                                const int64_t ih = cr_pad_index(oh * p->stride_h - p->pad_top +
                                                                r * p->dilation_h, H, p->pad_mode);
                                const int64_t iw = cr_pad_index(ow * p->stride_w - p->pad_left +
                                                                q * p->dilation_w, W, p->pad_mode);
                                if (ih < 0 || iw < 0) continue;
                                const int64_t ci = g * s.cin_g + c;
                                const float xv = round_half(fmt,
                                    x->data[((n * p->in_channels + ci) * H + ih) * W + iw]);
                                const float wv = round_half(fmt,
                                    w->data[((o * s.cin_g + c) * R + r) * S + q]);
                                acc += (double)(xv * wv);   /* exact in float */
                            }
                    if (b) acc += b->data[o];
                    y->data[((n * p->out_channels + o) * s.h_out + oh) * s.w_out + ow] = (float)acc;
                }
    return CR_OK;
}
// @end bf16_ref

cr_status cr_conv2d_bf16_ref(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                             const cr_tensor *b, cr_tensor *y)
{
    return conv2d_half_ref(CR_HALF_BF16, p, x, w, b, y);
}

cr_status cr_conv2d_fp16_ref(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                             const cr_tensor *b, cr_tensor *y)
{
    return conv2d_half_ref(CR_HALF_FP16, p, x, w, b, y);
}

/* ---- a whole model in bf16 ------------------------------------------------------------------ */

/* The attached models: the dispatcher, a plain cr_conv2d_fn, has no other context. */
static cr_bf16_model *attached;

/* The attached model whose modules hold p, and the index of p's layer in it (-1: none). */
static cr_bf16_model *find_layer(const cr_conv_params *p, int *layer)
{
    *layer = -1;
    for (cr_bf16_model *e = attached; e; e = e->next) {
        const cr_module *first = e->model->mods, *last = first + e->model->n;
        if ((const void *)p < (const void *)first || (const void *)p >= (const void *)last) continue;
        for (int i = 0; i < e->n; i++)
            if (&first[e->module[i]].conv == p) *layer = i;
        return e;
    }
    return NULL;
}

// @snippet bf16_model_conv
/* The dispatcher installed as an attached model's conv_forward (a cr_conv2d_fn). */
static cr_status bf16_model_conv(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                                 const cr_tensor *b, cr_tensor *y)
{
    (void)b;   /* the prepared layer keeps its own copy */
    int i;
    cr_bf16_model *e = find_layer(p, &i);
    if (!e || i < 0)
        return cr_fail(CR_EINVAL, "bf16 model: a convolution of no attached model reached the "
                       "bf16/fp16 dispatcher");
    const char *f = e->convs[i].fmt == CR_HALF_FP16 ? "fp16" : "bf16";
    /* (the model's forward prefixes the module's name to these messages) */
    if (e->model->training)
        return cr_fail(CR_EINVAL, "%s model: the %s path runs evaluation forwards only "
                       "(cr_model_train(m, false), or detach to train)", f, f);
    if (!w || w->data != e->weight[i])
        return cr_fail(CR_EINVAL, "%s model: the weight's storage changed since the attach "
                       "(detach and attach again)", f);
    e->calls++;
    return cr_bf16_conv_forward(&e->convs[i], x, y);
}
// @end bf16_model_conv

/* Frees what an attach made (the list is not touched). */
static void model_free(cr_bf16_model *bm)
{
    for (int i = 0; i < bm->n && bm->convs; i++) cr_bf16_conv_free(&bm->convs[i]);
    free(bm->convs);
    free(bm->module);
    free((void *)bm->weight);
    memset(bm, 0, sizeof *bm);
}

cr_status cr_half_model_attach(cr_bf16_model *bm, cr_model *m, cr_half_format fmt)
{
    const char *f = fmt == CR_HALF_FP16 ? "fp16" : "bf16";
    if (!bm || !m) return cr_fail(CR_EINVAL, "%s model: bm and m must not be NULL", f);
    for (cr_bf16_model *e = attached; e; e = e->next)
        if (e == bm) return cr_fail(CR_EINVAL, "%s model: bm is attached to a model (detach it first)", f);
    memset(bm, 0, sizeof *bm);   /* from here on, detach is safe on bm */
    if (fmt != CR_HALF_BF16 && fmt != CR_HALF_FP16)
        return cr_fail(CR_EINVAL, "cr_half_model_attach: fmt: expected CR_HALF_BF16 or "
                       "CR_HALF_FP16, got %d", (int)fmt);
    if (m->conv_forward == bf16_model_conv)
        return cr_fail(CR_EINVAL, "%s model: the model is already attached (detach it first)", f);
    for (int i = 0; i < m->n; i++) bm->n += m->mods[i].kind == CR_MOD_CONV;
    if (bm->n == 0) return cr_fail(CR_EINVAL, "%s model: the model has no convolution", f);
    bm->convs = calloc((size_t)bm->n, sizeof *bm->convs);
    bm->module = calloc((size_t)bm->n, sizeof *bm->module);
    bm->weight = calloc((size_t)bm->n, sizeof *bm->weight);
    if (!bm->convs || !bm->module || !bm->weight) {
        model_free(bm);
        return cr_fail(CR_ENOMEM, "%s model: out of memory", f);
    }
    for (int i = 0, k = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        if (d->kind != CR_MOD_CONV) continue;
        cr_status st = cr_half_conv_prepare(&bm->convs[k], fmt, &d->conv, &d->weight,
                                            d->conv.bias ? &d->bias : NULL);
        if (st) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", cr_last_error());
            model_free(bm);
            return cr_fail(st, "%s model: module '%s': %s", f, d->name, msg);
        }
        bm->module[k] = i;
        bm->weight[k++] = d->weight.data;
    }
    bm->model = m;
    bm->prev = m->conv_forward;
    bm->next = attached;
    attached = bm;
    m->conv_forward = bf16_model_conv;
    return CR_OK;
}

cr_status cr_bf16_model_attach(cr_bf16_model *bm, cr_model *m)
{
    return cr_half_model_attach(bm, m, CR_HALF_BF16);
}

void cr_bf16_model_detach(cr_bf16_model *bm)
{
    if (!bm) return;
    for (cr_bf16_model **q = &attached; *q; q = &(*q)->next)
        if (*q == bm) {
            *q = bm->next;
            break;
        }
    if (bm->model && bm->model->conv_forward == bf16_model_conv) bm->model->conv_forward = bm->prev;
    model_free(bm);
    if (!attached) cr_half_scratch_release();   /* the last one: the patch matrices go too */
}

size_t cr_bf16_model_bytes(const cr_bf16_model *bm)
{
    if (!bm || !bm->model) return 0;
    size_t bytes = 0;
    for (int i = 0; i < bm->n; i++) bytes += cr_bf16_conv_bytes(&bm->convs[i]);
    const cr_model *m = bm->model;
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        if (d->kind == CR_MOD_CONV) continue;
        const cr_tensor *t[4] = {&d->weight, &d->bias, &d->running_mean, &d->running_var};
        for (int j = 0; j < 4; j++)
            if (t[j]->data) bytes += t[j]->numel * sizeof(float);
    }
    return bytes;
}
