/* int8_gemm.c — chapter 7: the int8 GEMM's reference, its portable kernel, the
 * k4-interleaved packing, the five-loop engine, the run-time choice of kernel, and
 * the bf16 reference. The SIMD kernels live in int8_gemm_avx2.c and
 * int8_gemm_avx512.c, their functions compiled for their instruction sets only. */
#include "int8_gemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "dtype.h"
#include "tensor.h"

/* ---- arguments ------------------------------------------------------------------ */

/* Checks sizes, leading dimensions and pointers of a GEMM of element size 1 or 2. */
static cr_status check_args(const char *fn, int64_t M, int64_t N, int64_t K, const void *A,
                            int64_t lda, const void *B, int64_t ldb, const void *C, int64_t ldc)
{
    if (M < 0 || N < 0 || K < 0)
        return cr_fail(CR_EINVAL, "%s: sizes must be >= 0 (M=%lld, N=%lld, K=%lld)", fn,
                       (long long)M, (long long)N, (long long)K);
    if (lda < (K > 1 ? K : 1))
        return cr_fail(CR_EINVAL, "%s: lda = %lld, expected >= %lld (K)", fn, (long long)lda,
                       (long long)(K > 1 ? K : 1));
    if (ldb < (N > 1 ? N : 1))
        return cr_fail(CR_EINVAL, "%s: ldb = %lld, expected >= %lld (N)", fn, (long long)ldb,
                       (long long)(N > 1 ? N : 1));
    if (ldc < (N > 1 ? N : 1))
        return cr_fail(CR_EINVAL, "%s: ldc = %lld, expected >= %lld (N)", fn, (long long)ldc,
                       (long long)(N > 1 ? N : 1));
    if ((M > 0 && K > 0 && !A) || (K > 0 && N > 0 && !B) || (M > 0 && N > 0 && !C))
        return cr_fail(CR_EINVAL, "%s: A, B or C is NULL", fn);
    return CR_OK;
}

/* The int8 checks: the above, and K small enough for exact int32 sums. */
static cr_status check_i8(const char *fn, int64_t M, int64_t N, int64_t K, const void *A,
                          int64_t lda, const void *B, int64_t ldb, const void *C, int64_t ldc)
{
    cr_status st = check_args(fn, M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    if (K > CR_I8_MAX_K)
        return cr_fail(CR_EINVAL, "%s: K = %lld, expected <= %d (int32 sums of K products "
                       "u8 x s8 must stay exact)", fn, (long long)K, CR_I8_MAX_K);
    return CR_OK;
}

/* ---- the reference ------------------------------------------------------------------- */

// @snippet i8_gemm_ref
cr_status cr_gemm_s8u8s32_ref(int64_t M, int64_t N, int64_t K, const int8_t *A, int64_t lda,
                              const uint8_t *B, int64_t ldb, int32_t *C, int64_t ldc,
                              int accumulate)
{
    cr_status st = check_i8("cr_gemm_s8u8s32_ref", M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            int32_t acc = accumulate ? C[i * ldc + j] : 0;
            for (int64_t k = 0; k < K; k++)     /* int32 sums of int16-sized products */
                acc += (int32_t)A[i * lda + k] * (int32_t)B[k * ldb + j];
            C[i * ldc + j] = acc;
        }
    return CR_OK;
}
// @end i8_gemm_ref

/* ---- packing --------------------------------------------------------------------------- */

/* cr_i8_interleave4 with SSE2 (x86-64's baseline), 16 columns per step. */
static void interleave4_sse2(const uint8_t *const r[4], int64_t n, uint8_t *d)
{
    int64_t j = 0;
#if defined(__SSE2__)
    for (; j + 16 <= n; j += 16) {
        const __m128i r0 = _mm_loadu_si128((const __m128i *)(r[0] + j));
        const __m128i r1 = _mm_loadu_si128((const __m128i *)(r[1] + j));
        const __m128i r2 = _mm_loadu_si128((const __m128i *)(r[2] + j));
        const __m128i r3 = _mm_loadu_si128((const __m128i *)(r[3] + j));
        const __m128i a0 = _mm_unpacklo_epi8(r0, r1), b0 = _mm_unpacklo_epi8(r2, r3);
        const __m128i a1 = _mm_unpackhi_epi8(r0, r1), b1 = _mm_unpackhi_epi8(r2, r3);
        _mm_storeu_si128((__m128i *)(d + 4 * j), _mm_unpacklo_epi16(a0, b0));
        _mm_storeu_si128((__m128i *)(d + 4 * j + 16), _mm_unpackhi_epi16(a0, b0));
        _mm_storeu_si128((__m128i *)(d + 4 * j + 32), _mm_unpacklo_epi16(a1, b1));
        _mm_storeu_si128((__m128i *)(d + 4 * j + 48), _mm_unpackhi_epi16(a1, b1));
    }
#endif
    for (; j < n; j++)
        for (int t = 0; t < 4; t++) d[4 * j + t] = r[t][j];
}

void cr_i8_interleave4(const uint8_t *const r[4], int64_t n, uint8_t *d)
{
    static void (*_Atomic fn)(const uint8_t *const *, int64_t, uint8_t *);
    void (*f)(const uint8_t *const *, int64_t, uint8_t *) = fn;
    if (!f) {
        f = cr_cpu_has_avx512_vnni() ? cr_i8_interleave4_avx512 : interleave4_sse2;
        fn = f;
    }
    f(r, n, d);
}

// @snippet i8_pack
void cr_i8_pack_strided(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                        int panel, uint8_t *dst)
{
    const cr_i8_strided *s = ctx;
    const int64_t kc4 = (kc + 3) / 4;
    static const uint8_t zeros[CR_I8_MAX_NR] = {0};
    if (s->rs == 1 && panel <= CR_I8_MAX_NR) {   /* B: each k a contiguous run of rows */
        for (int64_t q = 0; q < rows; q += panel) {
            const int64_t h = rows - q < panel ? rows - q : panel;
            uint8_t *d = dst + q * kc4 * 4;
            for (int64_t g = 0; g < kc4; g++) {
                const uint8_t *r[4];
                for (int t = 0; t < 4; t++)
                    r[t] = 4 * g + t < kc ? s->p + (r0 + q) + (k0 + 4 * g + t) * s->cs : zeros;
                cr_i8_interleave4(r, h, d + g * panel * 4);
                memset(d + g * panel * 4 + h * 4, 0, (size_t)(panel - h) * 4);
            }
        }
        return;
    }
    if (s->cs == 1) {                            /* A: each row contiguous in k */
        for (int64_t q = 0; q < rows; q += panel) {
            const int64_t h = rows - q < panel ? rows - q : panel;
            uint8_t *d = dst + q * kc4 * 4;
            for (int64_t i = 0; i < panel; i++) {
                const uint8_t *src = s->p + (r0 + q + i) * s->rs + k0;
                for (int64_t g = 0; g < kc4; g++) {
                    uint8_t *dd = d + (g * panel + i) * 4;
                    if (i >= h) memset(dd, 0, 4);                        /* past the rows */
                    else if (4 * g + 4 <= kc) memcpy(dd, src + 4 * g, 4);  /* 4 k at once */
                    else
                        for (int64_t t = 0; t < 4; t++) dd[t] = 4 * g + t < kc ? src[4 * g + t] : 0;
                }
            }
        }
        return;
    }
    for (int64_t q = 0; q < rows; q += panel) {              /* one panel of rows */
        const int64_t h = rows - q < panel ? rows - q : panel;
        uint8_t *d = dst + q * kc4 * 4;                      /* panels are kc4 x panel x 4 */
        for (int64_t g = 0; g < kc4; g++) {                  /* one group of 4 k */
            uint8_t *dg = d + g * panel * 4;
            const int64_t kn = kc - 4 * g < 4 ? kc - 4 * g : 4;
            for (int64_t i = 0; i < h; i++) {
                const uint8_t *src = s->p + (r0 + q + i) * s->rs + (k0 + 4 * g) * s->cs;
                for (int64_t t = 0; t < 4; t++) dg[i * 4 + t] = t < kn ? src[t * s->cs] : 0;
            }
            memset(dg + h * 4, 0, (size_t)(panel - h) * 4);  /* rows past the end */
        }
    }
}
// @end i8_pack

/* ---- the portable kernel -------------------------------------------------------------- */

#define PT_MR 4
#define PT_NR 8

/* cr_i8_ukernel_fn in plain C, 4 x 8. */
static void portable_kernel(int64_t kc4, const int8_t *Ap, const uint8_t *Bp, int32_t *C,
                            int64_t ldc, int accumulate)
{
    int32_t acc[PT_MR][PT_NR] = {{0}};
    for (int64_t g = 0; g < kc4; g++, Ap += PT_MR * 4, Bp += PT_NR * 4)
        for (int i = 0; i < PT_MR; i++)
            for (int j = 0; j < PT_NR; j++)
                for (int t = 0; t < 4; t++)
                    acc[i][j] += (int32_t)Ap[i * 4 + t] * (int32_t)Bp[j * 4 + t];
    for (int i = 0; i < PT_MR; i++)
        for (int j = 0; j < PT_NR; j++)
            C[i * ldc + j] = acc[i][j] + (accumulate ? C[i * ldc + j] : 0);
}

const cr_i8_kernel cr_i8_kernel_portable = {"portable", PT_MR, PT_NR, 128, 512, 4096, 1,
                                            portable_kernel, NULL};

/* ---- the engine ------------------------------------------------------------------------ */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* Threads a parallel region started here would get (1 without OpenMP or nested). */
static int threads_available(void)
{
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

/* What the macro kernel needs besides the panels. */
typedef struct {
    const cr_i8_kernel *kd;
    int32_t *C;                 /* output, or scratch for K > kc with an epilogue */
    int64_t ldc;
    int accumulate;             /* user's flag: add to C */
    cr_i8_epilogue_fn epi;
    const void *ctx_epi;
} engine_out;

/* One ic block (rows [ic, ic+mc)) of one jc block (columns [jc, jc+nc)) against the
 * packed B panels [p0, p1): block pc of the depth, `first` and `last` of them. */
static void macro_kernel(const engine_out *o, int64_t ic, int64_t mc, int64_t jc, int64_t nc,
                         int64_t kc4, const int8_t *Ap, const uint8_t *Bp, int64_t p0,
                         int64_t p1, int first, int last)
{
    const cr_i8_kernel *kd = o->kd;
    const int MR = kd->mr, NR = kd->nr;
    _Alignas(64) int32_t tile[CR_I8_MAX_MR * CR_I8_MAX_NR];
    for (int64_t jp = p0; jp < p1; jp++) {
        const int64_t jr = jp * NR, nr = min64(NR, nc - jr);
        const uint8_t *b = Bp + jr * kc4 * 4;
        for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = min64(MR, mc - ir);
            const int8_t *a = Ap + ir * kc4 * 4;
            int32_t *c = o->C ? o->C + (ic + ir) * o->ldc + jc + jr : NULL;
            const int add = !first || (o->accumulate && !o->epi);  /* C holds sums so far */
            if (!(o->epi && last) && mr == MR && nr == NR) {   /* straight into C */
                kd->kernel(kc4, a, b, c, o->ldc, add);
                continue;
            }
            kd->kernel(kc4, a, b, tile, NR, 0);               /* the tile aside */
            if (add)
                for (int64_t i = 0; i < mr; i++)
                    for (int64_t j = 0; j < nr; j++) tile[i * NR + j] += c[i * o->ldc + j];
            if (o->epi && last) {
                o->epi(o->ctx_epi, ic + ir, jc + jr, mr, nr, tile, NR);
            } else {
                for (int64_t i = 0; i < mr; i++)
                    memcpy(c + i * o->ldc, tile + i * NR, (size_t)nr * sizeof(int32_t));
            }
        }
    }
}

// @snippet i8_engine
cr_status cr_i8_engine(const cr_i8_kernel *kd, int64_t M, int64_t N, int64_t K,
                       cr_i8_pack_fn pack_a, const void *ctx_a, cr_i8_pack_fn pack_b,
                       const void *ctx_b, int32_t *C, int64_t ldc, int accumulate,
                       cr_i8_epilogue_fn epi, const void *ctx_epi, int threads)
{
    if (M == 0 || N == 0) return CR_OK;
    if (epi && K > kd->kc && !C)
        return cr_fail(CR_EINVAL, "int8 engine: K = %lld > %lld needs scratch C", (long long)K,
                       (long long)kd->kc);
    const int MR = kd->mr, NR = kd->nr;
    const int nt = threads == 1 ? 1 : threads_available();
    const int64_t KC = kd->kc, kc_max = min64(KC, K > 0 ? K : 4);
    const int64_t kc4_max = (kc_max + 3) / 4;
    /* N blocks: the kernel's NC, or a few panels per thread when all of M is one block */
    int64_t NC = kd->nc;
    if (M <= kd->mc) NC = min64(NC, 8 * (int64_t)NR * nt);   /* packed panels stay in L2 */
    NC = min64(round_up(N, NR), NC);
    const size_t b_bytes = (size_t)(kc4_max * 4 * round_up(NC, NR));
    const size_t a_bytes = (size_t)(kc4_max * 4 * min64(kd->mc, round_up(M, MR)));
    uint8_t *Bp = cr_aligned_alloc(b_bytes);
    uint8_t *Abuf = cr_aligned_alloc(a_bytes * (size_t)nt);
    if (!Bp || !Abuf) {
        cr_aligned_free(Bp);
        cr_aligned_free(Abuf);
        return cr_fail(CR_ENOMEM, "int8 gemm: packing buffers of %zu bytes: out of memory",
                       b_bytes + a_bytes * (size_t)nt);
    }
    const engine_out o = {kd, C, ldc, accumulate, epi, ctx_epi};
    const int64_t Kloop = K > 0 ? K : 1;   /* K == 0: one empty block writes zeros */
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int tid = 0, T = 1;
#endif
        int8_t *Ap = (int8_t *)(Abuf + (size_t)tid * a_bytes);
        for (int64_t jc = 0; jc < N; jc += NC) {                 /* loop 5: NC columns */
            const int64_t nc = min64(NC, N - jc), np = (nc + NR - 1) / NR;
            const int split_jr = np >= 4 * T;
            const int64_t MC = split_jr ? kd->mc : min64(kd->mc, round_up((M + T - 1) / T, MR));
            for (int64_t pc = 0; pc < Kloop; pc += KC) {         /* loop 4: KC of depth */
                const int64_t kc = K > 0 ? min64(KC, K - pc) : 0, kc4 = (kc + 3) / 4;
                const int first = pc == 0, last = pc + KC >= Kloop;
#pragma omp for schedule(static)
                for (int64_t p = 0; p < np; p++)                 /* pack B, all threads */
                    pack_b(ctx_b, jc + p * NR, min64(NR, nc - p * NR), pc, kc, NR,
                           Bp + p * NR * kc4 * 4);
                int64_t blk = 0;
                for (int64_t ic = 0; ic < M; ic += MC, blk++) {   /* loop 3: MC rows */
                    if (!split_jr && blk % T != tid) continue;
                    const int64_t mc = min64(MC, M - ic);
                    const int8_t *Ause = Ap;
                    if (pack_a) pack_a(ctx_a, ic, mc, pc, kc, MR, (uint8_t *)Ap);
                    else Ause = (const int8_t *)ctx_a + round_up(M, MR) * pc + ic * kc4 * 4;
                    const int64_t p0 = split_jr ? np * tid / T : 0;
                    const int64_t p1 = split_jr ? np * (tid + 1) / T : np;
                    macro_kernel(&o, ic, mc, jc, nc, kc4, Ause, Bp, p0, p1, first, last);
                }
#pragma omp barrier
            }
        }
    }
    cr_aligned_free(Bp);
    cr_aligned_free(Abuf);
    return CR_OK;
}
// @end i8_engine

size_t cr_i8_prepacked_bytes(const cr_i8_kernel *kd, int64_t M, int64_t K)
{
    return (size_t)(round_up(M, kd->mr) * round_up(K > 0 ? K : 1, 4));
}

void cr_i8_prepack_a(const cr_i8_kernel *kd, int64_t M, int64_t K, const int8_t *A,
                     int64_t lda, int8_t *dst)
{
    const cr_i8_strided a = {(const uint8_t *)A, lda, 1};
    for (int64_t pc = 0; pc < K; pc += kd->kc)   /* block pc: all of M, kc of depth */
        cr_i8_pack_strided(&a, 0, M, pc, min64(kd->kc, K - pc), kd->mr,
                           (uint8_t *)dst + round_up(M, kd->mr) * pc);
}

int cr_u8_max(const uint8_t *B, int64_t K, int64_t N, int64_t ldb)
{
    uint8_t m = 0;
    for (int64_t k = 0; k < K && m < 255; k++) {
        const uint8_t *row = B + k * ldb;
        uint8_t r = 0;
        for (int64_t j = 0; j < N; j++) r = row[j] > r ? row[j] : r;   /* vectorises */
        m = r > m ? r : m;
    }
    return m;
}

// @snippet i8_gemm_default
cr_status cr_gemm_s8u8s32(int64_t M, int64_t N, int64_t K, const int8_t *A, int64_t lda,
                          const uint8_t *B, int64_t ldb, int32_t *C, int64_t ldc,
                          int accumulate)
{
    cr_status st = check_i8("cr_gemm_s8u8s32", M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    /* the AVX2 rule reads B's largest byte: vpmaddubsw is exact only below 128 */
    const int b_max = strcmp(cr_int8_gemm_kernel_name(), "avx2") == 0 ? cr_u8_max(B, K, N, ldb)
                                                                      : 255;
    const cr_i8_kernel *kd = cr_int8_gemm_kernel_for(b_max);
    const cr_i8_strided b = {B, 1, ldb};                    /* B as its transpose: N x K */
    /* A packed once, whole (M x K bytes), rather than once per block of N */
    int8_t *Ap = M > 0 && N > 0 ? cr_aligned_alloc(cr_i8_prepacked_bytes(kd, M, K)) : NULL;
    if (M > 0 && N > 0 && !Ap)
        return cr_fail(CR_ENOMEM, "cr_gemm_s8u8s32: packed A of %zu bytes",
                       cr_i8_prepacked_bytes(kd, M, K));
    if (Ap) cr_i8_prepack_a(kd, M, K, A, lda, Ap);
    st = cr_i8_engine(kd, M, N, K, NULL, Ap, cr_i8_pack_strided, &b, C, ldc, accumulate, NULL,
                      NULL, 0);
    cr_aligned_free(Ap);
    return st;
}
// @end i8_gemm_default

/* ---- run-time choice ------------------------------------------------------------------ */

/* True if the OS saves the ymm (and, with zmm, the opmask and zmm) state. */
static int os_saves(int zmm)
{
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned eax, edx;
    __asm__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    const unsigned need = zmm ? 0xE6u : 0x6u;
    return (eax & need) == need;
#else
    (void)zmm;
    return 0;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
/* Bits of CPUID leaf 7: subleaf 0's ecx and edx, subleaf 1's eax. */
static void cpuid7(unsigned *ecx0, unsigned *eax1)
{
    unsigned a, b, c, d;
    *ecx0 = *eax1 = 0;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    *ecx0 = c;
    __cpuid_count(7, 1, a, b, c, d);
    *eax1 = a;
}
#endif

static int has_avx2(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && os_saves(0);
#else
    return 0;
#endif
}

static int has_avx512bw(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && os_saves(1);
#else
    return 0;
#endif
}

int cr_cpu_has_avx512_vnni(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned ecx0, eax1;
    cpuid7(&ecx0, &eax1);
    return has_avx512bw() && (ecx0 >> 11 & 1);   /* CPUID.7.0:ECX[11] AVX512_VNNI */
#else
    return 0;
#endif
}

int cr_cpu_has_avx_vnni(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned ecx0, eax1;
    cpuid7(&ecx0, &eax1);
    return has_avx2() && (eax1 >> 4 & 1);        /* CPUID.7.1:EAX[4] AVX_VNNI */
#else
    return 0;
#endif
}

int cr_cpu_has_avx512_bf16(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned ecx0, eax1;
    cpuid7(&ecx0, &eax1);
    return has_avx512bw() && (eax1 >> 5 & 1);    /* CPUID.7.1:EAX[5] AVX512_BF16 */
#else
    return 0;
#endif
}

/* The kernels by name, best first, and whether this CPU runs each. */
static const cr_i8_kernel *kernel_by_name(const char *name)
{
    static const cr_i8_kernel *const all[] = {&cr_i8_kernel_avx512_vnni, &cr_i8_kernel_avx_vnni,
                                              &cr_i8_kernel_avx2_split, &cr_i8_kernel_avx2_7bit,
                                              &cr_i8_kernel_portable};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (name && strcmp(name, all[i]->name) == 0) return all[i];
    return NULL;
}

const cr_i8_kernel *cr_i8_direct_kernel(const cr_i8_kernel *kd, int64_t rows)
{
    return kd == &cr_i8_kernel_avx512_vnni && rows <= 4 ? &cr_i8_kernel_avx512_vnni_4x64 : kd;
}

int cr_int8_gemm_kernel_supported(const char *name)
{
    if (!name) return 0;
    if (strcmp(name, "portable") == 0) return 1;
    if (strcmp(name, "avx2") == 0 || strcmp(name, "avx2_7bit") == 0 ||
        strcmp(name, "avx2_split") == 0)
        return has_avx2();
    if (strcmp(name, "avx_vnni") == 0) return cr_cpu_has_avx_vnni();
    if (strcmp(name, "avx512_vnni") == 0) return cr_cpu_has_avx512_vnni();
    return 0;
}

int cr_int8_gemm_kernel_full_range(const char *name)
{
    if (name && strcmp(name, "avx2") == 0) return 1;   /* the rule picks an exact kernel */
    const cr_i8_kernel *k = kernel_by_name(name);
    return k ? k->full_range : 0;
}

/* The choice: a kernel's name or "avx2" (the rule); NULL until first use. */
static const char *_Atomic active;

/* The best this CPU runs. */
static const char *best_name(void)
{
    if (cr_cpu_has_avx512_vnni()) return "avx512_vnni";
    if (cr_cpu_has_avx_vnni()) return "avx_vnni";
    if (has_avx2()) return "avx2";
    return "portable";
}

cr_status cr_int8_gemm_set_kernel(const char *name)
{
    if (name && strcmp(name, "auto") == 0) {
        active = best_name();
        return CR_OK;
    }
    if (!cr_int8_gemm_kernel_supported(name))
        return cr_fail(CR_EINVAL, "int8 gemm kernel \"%s\": expected auto, portable, avx2, "
                       "avx2_7bit, avx2_split, avx_vnni or avx512_vnni (one this CPU runs)",
                       name ? name : "(null)");
    active = strcmp(name, "avx2") == 0 ? "avx2" : kernel_by_name(name)->name;
    return CR_OK;
}

const char *cr_int8_gemm_kernel_name(void)
{
    const char *n = active;
    if (!n) {   /* first use: CR_INT8_GEMM_KERNEL if this CPU runs it, else the best */
        const char *env = getenv("CR_INT8_GEMM_KERNEL");
        n = best_name();
        if (env && strcmp(env, "avx2") == 0 && has_avx2()) n = "avx2";
        else if (env && cr_int8_gemm_kernel_supported(env) && kernel_by_name(env))
            n = kernel_by_name(env)->name;
        active = n;   /* racing threads store the same value */
    }
    return n;
}

const cr_i8_kernel *cr_int8_gemm_kernel_for(int b_max)
{
    const char *n = cr_int8_gemm_kernel_name();
    if (strcmp(n, "avx2") == 0)
        return b_max <= 127 ? &cr_i8_kernel_avx2_7bit : &cr_i8_kernel_avx2_split;
    return kernel_by_name(n);
}

/* ---- bf16 -------------------------------------------------------------------------------- */

/* float32 of bf16 bits (exact), as vdpbf16ps reads them. */
static float bf(uint16_t b) { return cr_bf16_to_f32(b); }

// @snippet bf16_gemm_ref
cr_status cr_gemm_bf16_ref(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                           const uint16_t *B, int64_t ldb, float *C, int64_t ldc,
                           int accumulate)
{
    cr_status st = check_args("cr_gemm_bf16_ref", M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = accumulate ? C[i * ldc + j] : 0.0f;  /* products exact: one rounding */
            for (int64_t k = 0; k < K; k += 2) {   /* the odd element of the pair first */
                if (k + 1 < K) acc = acc + bf(A[i * lda + k + 1]) * bf(B[(k + 1) * ldb + j]);
                else acc = acc + 0.0f;
                acc = acc + bf(A[i * lda + k]) * bf(B[k * ldb + j]);
            }
            C[i * ldc + j] = acc;
        }
    return CR_OK;
}
// @end bf16_gemm_ref

/* The AVX512-BF16 driver (int8_gemm_avx512.c); 0 if this build has none. */
int cr_bf16_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                        const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int accumulate);

int cr_gemm_bf16_native(void) { return cr_cpu_has_avx512_bf16(); }

cr_status cr_gemm_bf16(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                       const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    cr_status st = check_args("cr_gemm_bf16", M, N, K, A, lda, B, ldb, C, ldc);
    if (st) return st;
    if (cr_gemm_bf16_native()) {
        const int r = cr_bf16_gemm_avx512(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
        if (r == 1) return CR_OK;
        if (r < 0) return cr_fail(CR_ENOMEM, "cr_gemm_bf16: packing buffer: out of memory");
    }
    return cr_gemm_bf16_ref(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
