/* test_ch07_bf16.c — suite ch07, bf16 execution and fp16 storage: the bf16 convolution
 * (bf16 weights and patches, fp32 sums through the bf16 GEMM) and the fp16 one (fp16
 * weights and patches, chapter 3's fp32 engine widening them) each equal their definition
 * (the seven loops on x and w rounded to the format, sums in double) within the rounding
 * of fp32 sums, for every padding mode, stride, dilation, groups, 1x1 and batches; each
 * really rounds to its format (not the fp32 convolution); their bits do not depend on the
 * thread count; the fp16 GEMM is chapter 3's cr_sgemm on the widened matrices bit for
 * bit; a whole model (chapter 8's reduced FPN) run with either matches its simulation (x
 * and w rounded, chapter 3's fp32 convolution); and bad input is refused with a message.
 *
 * The bound: the reference is exact up to its final rounding. The fast path adds K exact
 * products (bf16 x bf16 fits float32) and the bias in float32, each addition rounded
 * with a relative error <= 2^-24 of a partial sum no larger than
 * A = sum |x_b w_b| + |b|; so |fast - ref| <= (K + 2) * 2^-24 * A, plus 2^-24 |ref| for
 * the reference's own rounding. The tests assert (K + 2) * 2^-23 * A + 2^-23 |ref|,
 * twice that, a safe bound (the pairs of vdpbf16ps change the order, not the count).
 * The same holds for fp16 (fp16 x fp16 has 22 significant bits: exact in float32). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bf16_conv.h"
#include "conv_gemm.h"
#include "conv_harness.h"
#include "cr_test.h"
#include "dtype.h"
#include "gemm.h"
#include "int8_gemm.h"
#include "model_common.h"
#include "rng.h"
#include "tensor.h"

static const char *gemm_name(void) { return cr_gemm_bf16_native() ? "vdpbf16ps" : "portable"; }

/* The format's name, its convolution and its definition. */
static const char *fmt_name(cr_half_format f) { return f == CR_HALF_FP16 ? "fp16" : "bf16"; }
static cr_conv2d_fn conv_of(cr_half_format f) { return f == CR_HALF_FP16 ? cr_conv2d_fp16 : cr_conv2d_bf16; }
static cr_conv2d_fn ref_of(cr_half_format f)
{
    return f == CR_HALF_FP16 ? cr_conv2d_fp16_ref : cr_conv2d_bf16_ref;
}
/* v rounded to format f and back, through lib's conversions. */
static float rounded(cr_half_format f, float v)
{
    return f == CR_HALF_FP16 ? cr_f16_to_f32(cr_f32_to_f16(v)) : cr_bf16_to_f32(cr_f32_to_bf16(v));
}

/* A new tensor holding |t| element by element. */
static void abs_copy(const cr_tensor *t, cr_tensor *out)
{
    assert_cr_ok(cr_tensor_alloc(out, t->ndim, t->shape));
    for (size_t i = 0; i < t->numel; i++) out->data[i] = fabsf(t->data[i]);
}

/* Runs the convolution in format f (3 threads) and its reference on one configuration
 * with random tensors, checks the bound above on every output, and that 1 thread, and
 * (bf16) the other path (gemm where packed runs), give the same bits. Returns the worst
 * error as a fraction of its bound. */
static double check_config(cr_half_format f, const cr_conv_params *p, int64_t n, int64_t h,
                           int64_t w, cr_rng *r, uint64_t seed, int case_no)
{
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, p, n, h, w));
    cr_tensor x, wt, b, y_ref, y, y1, y2, xa, wa, mag;
    cr_conv_tensors_random(&s, r, &x, &wt, &b, &y_ref);
    const cr_tensor *bp = p->bias ? &b : NULL;
    assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
    assert_cr_ok(cr_tensor_alloc(&y1, 4, y_ref.shape));
    assert_cr_ok(cr_tensor_alloc(&y2, 4, y_ref.shape));
    cr_tensor_poison(&y2);
    assert_cr_ok(cr_tensor_alloc(&mag, 4, y_ref.shape));
    cr_tensor_poison(&y);
    cr_tensor_poison(&y1);
    assert_cr_ok(ref_of(f)(p, &x, &wt, bp, &y_ref));
    abs_copy(&x, &xa);
    abs_copy(&wt, &wa);
    cr_conv_params nob = *p;
    nob.bias = false;
    assert_cr_ok(ref_of(f)(&nob, &xa, &wa, NULL, &mag));   /* sum |x_b w_b| */
    cr_test_set_threads(3);
    assert_cr_ok(conv_of(f)(p, &x, &wt, bp, &y));
    cr_test_set_threads(1);
    assert_cr_ok(conv_of(f)(p, &x, &wt, bp, &y1));
    cr_test_set_threads(3);
    /* the other path: bf16's gemm (gemm twice without packed), fp16's portable conversions */
    const char *path = f == CR_HALF_FP16 ? cr_fp16_storage_path() : cr_bf16_conv_path();
    const char *other = f == CR_HALF_FP16 ? "portable" : "gemm";
    assert_cr_ok(f == CR_HALF_FP16 ? cr_fp16_storage_set_path(other) : cr_bf16_conv_set_path(other));
    assert_cr_ok(conv_of(f)(p, &x, &wt, bp, &y2));
    assert_cr_ok(f == CR_HALF_FP16 ? cr_fp16_storage_set_path("auto") : cr_bf16_conv_set_path("auto"));
    const int64_t K = s.cin_g * p->kernel_h * p->kernel_w, plane = s.h_out * s.w_out;
    double worst = 0.0;
    char desc[512];
    for (size_t i = 0; i < y.numel; i++) {
        const int64_t o = (int64_t)(i / (size_t)plane) % p->out_channels;
        const double A = mag.data[i] * (1.0 + 1e-6) + (bp ? fabs(b.data[o]) : 0.0);
        const double bound = (double)(K + 2) * ldexp(A, -23) + ldexp(fabs(y_ref.data[i]), -23);
        const double err = fabs((double)y.data[i] - y_ref.data[i]);
        if (!(err <= bound) || memcmp(&y.data[i], &y1.data[i], sizeof(float)) != 0 ||
            memcmp(&y.data[i], &y2.data[i], sizeof(float)) != 0) {
            cr_conv_params_str(p, desc, sizeof desc);
            fail_msg("%s case %d (%s, %s path, input %lld x %lld x %lld x %lld): y[%zu] = %.9g with "
                     "3 threads, %.9g with 1, %.9g on the %s path, reference %.9g: error %.3g > "
                     "bound (K + 2) 2^-23 sum|x_b w_b| + 2^-23 |ref| = %.3g, or the threads or "
                     "paths disagree (replay with CR_SEED=%llu)", fmt_name(f), case_no, desc, path,
                     (long long)n,
                     (long long)p->in_channels, (long long)h, (long long)w, i, y.data[i],
                     y1.data[i], y2.data[i], other, y_ref.data[i], err, bound,
                     (unsigned long long)seed);
        }
        if (bound > 0 && err / bound > worst) worst = err / bound;
    }
    cr_tensor_free(&x);
    cr_tensor_free(&wt);
    cr_tensor_free(&b);
    cr_tensor_free(&y_ref);
    cr_tensor_free(&y);
    cr_tensor_free(&y1);
    cr_tensor_free(&y2);
    cr_tensor_free(&xa);
    cr_tensor_free(&wa);
    cr_tensor_free(&mag);
    return worst;
}

/* Random configurations (chapter 3's harness: odd sizes, every padding mode, stride,
 * dilation, groups, depthwise, batch 1..3) and fixed ones the harness may miss, in format f. */
static void check_equals_reference(cr_half_format f)
{
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    double worst = 0.0, e;
    int cases = 0;
    /* fixed: 1x1 stride 1 (the gather skipped), odd K, N > 1, each padding mode at 3x3 */
    {
        cr_conv_params p = cr_conv_params_default(6, 10, 1);   /* K = 6, 1x1 */
        e = check_config(f, &p, 3, 7, 9, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(5, 7, 3);                    /* K = 45, odd */
        for (int m = 0; m < 4; m++) {
            p.pad_mode = (cr_pad_mode)m;
            cr_conv_set_padding(&p, 1, 2);
            e = check_config(f, &p, 2, 6, 11, &r, seed, cases++);
            worst = e > worst ? e : worst;
        }
        p = cr_conv_params_default(8, 8, 3);                    /* depthwise, stride 2 */
        p.groups = 8;
        p.stride_h = p.stride_w = 2;
        cr_conv_set_padding(&p, 1, 1);
        e = check_config(f, &p, 2, 9, 13, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(12, 8, 3);                   /* groups 4, dilation 2, no bias */
        p.groups = 4;
        p.dilation_h = p.dilation_w = 2;
        p.bias = false;
        p.pad_mode = CR_PAD_REFLECT;
        cr_conv_set_padding(&p, 2, 2);
        e = check_config(f, &p, 1, 10, 8, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(5, 13, 3);                   /* rows wider than a panel */
        cr_conv_set_padding(&p, 1, 1);
        e = check_config(f, &p, 2, 5, 75, &r, seed, cases++);     /* zeros: interior read directly */
        worst = e > worst ? e : worst;
        p.pad_mode = CR_PAD_CIRCULAR;
        p.dilation_w = 2;
        cr_conv_set_padding(&p, 1, 2);
        e = check_config(f, &p, 1, 4, 70, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(4, 6, 7);                    /* stride 2, wide rows */
        p.stride_h = p.stride_w = 2;
        cr_conv_set_padding(&p, 3, 3);
        e = check_config(f, &p, 1, 9, 143, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p.pad_mode = CR_PAD_REPLICATE;
        e = check_config(f, &p, 1, 8, 140, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(6, 9, 1);                    /* 1x1 stride 2 (downsample) */
        p.stride_h = p.stride_w = 2;
        e = check_config(f, &p, 2, 5, 131, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(16, 40, 3);                  /* one panel, 40 rows: split */
        cr_conv_set_padding(&p, 1, 1);                          /* into row blocks (3 threads) */
        e = check_config(f, &p, 1, 5, 5, &r, seed, cases++);
        worst = e > worst ? e : worst;
        p = cr_conv_params_default(3, 5, 1);                    /* 1x1 with stride: a gather */
        p.stride_h = 2;
        e = check_config(f, &p, 2, 7, 5, &r, seed, cases++);
        worst = e > worst ? e : worst;
    }
    const int count = cr_test_count(60);
    for (int c = 0; c < count; c++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_random_conv_config(&r, &p, &n, &h, &w);
        e = check_config(f, &p, n, h, w, &r, seed, cases++);
        worst = e > worst ? e : worst;
    }
#ifdef _OPENMP
    cr_test_set_threads(omp_get_num_procs());
#endif
    printf("%s conv (%s path, %s): %d configurations within (K + 2) 2^-23 sum|x_b w_b| + "
           "2^-23 |ref| of the definition (worst %.3g of the bound), 1 and 3 threads and the "
           "%s path equal bit for bit (seed %llu)\n", fmt_name(f),
           f == CR_HALF_FP16 ? cr_fp16_storage_path() : cr_bf16_conv_path(),
           f == CR_HALF_FP16 ? cr_gemm_kernel_name() : gemm_name(), cases, worst,
           f == CR_HALF_FP16 ? "portable conversion" : "gemm", (unsigned long long)seed);
}

static void bf16_conv__fast_equals_reference(void **state)
{
    (void)state;
    check_equals_reference(CR_HALF_BF16);
}

static void fp16_conv__fast_equals_reference(void **state)
{
    (void)state;
    check_equals_reference(CR_HALF_FP16);
}


/* A 1x1 convolution with weight 1 on the given path returns its input rounded to bf16
 * (f = CR_HALF_BF16) or fp16: the gather's rounding is lib's cr_f32_to_bf16 or
 * cr_f32_to_f16 bit for bit (ties to even, overflow, NaN; for bf16 no denormals:
 * vdpbf16ps reads them as zero; for fp16 its subnormals, 2^-24 .. 2^-14), and it does
 * round. */
static void check_rounding(cr_half_format f, const char *path)
{
    assert_cr_ok(cr_bf16_conv_set_path(path));
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int64_t n = 4099;   /* not a multiple of the 32-column panels */
    cr_tensor x, w, y;
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 1, 1, n));
    assert_cr_ok(cr_tensor_alloc4(&w, 1, 1, 1, 1));
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 1, 1, n));
    w.data[0] = 1.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = cr_rng_uniform_f(&r, -100.0f, 100.0f);
        uint32_t u;
        memcpy(&u, &v, 4);
        const int sh = f == CR_HALF_FP16 ? 13 : 16;   /* the float bits the format drops */
        if (i % 4 == 1) u = (u & ~((1u << sh) - 1)) | (1u << (sh - 1));   /* an exact tie */
        if (i % 4 == 2)   /* a tie to an even neighbour */
            u = (u & ~((2u << sh) - 1)) | (1u << (sh - 1));
        memcpy(&v, &u, 4);
        x.data[i] = v;
    }
    x.data[3] = NAN;
    x.data[7] = -INFINITY;
    if (f == CR_HALF_BF16) {
        x.data[11] = 3.3962e38f;  /* past the midpoint above bf16's largest finite value: +inf */
        x.data[15] = 3.3961e38f;  /* below it: 0x7F7F */
    } else {
        x.data[11] = 65520.0f;    /* the midpoint above fp16's largest finite value: +inf */
        x.data[15] = -65519.996f; /* below it: -65504 */
        x.data[19] = 3.0e-6f;     /* subnormal in fp16: a multiple of 2^-24 */
        x.data[23] = -2.9802322e-8f;  /* 2^-25, half the smallest subnormal: a tie, to -0 */
        x.data[27] = 4.5e-8f;     /* above that tie: 2^-24 */
        x.data[31] = 1e-30f;      /* far below: 0 */
        uint32_t qnan = 0x7FC12345u;   /* a NaN with a payload, which lib does not keep */
        memcpy(&x.data[35], &qnan, 4);
    }
    cr_conv_params p = cr_conv_params_default(1, 1, 1);
    p.bias = false;
    cr_tensor_poison(&y);
    assert_cr_ok(conv_of(f)(&p, &x, &w, NULL, &y));
    int64_t changed = 0;
    const char *where = f == CR_HALF_FP16 ? cr_fp16_storage_path() : cr_bf16_conv_path();
    for (int64_t i = 0; i < n; i++) {
        const float wf = rounded(f, x.data[i]);
        /* (a -0 comes out +0: the GEMM's sums start from +0, and +0 + -0 is +0) */
        if (!(memcmp(&wf, &y.data[i], 4) == 0 || (isnan(wf) && isnan(y.data[i])) ||
              (wf == 0.0f && y.data[i] == 0.0f)))
            fail_msg("x[%lld] = %.9g: the %s conv (%s path) gives %.9g, lib's rounding %.9g "
                     "(seed %llu)", (long long)i, x.data[i], fmt_name(f), where, y.data[i], wf,
                     (unsigned long long)seed);
        changed += !isnan(wf) && wf != x.data[i];
    }
    if (changed < n / 2)
        fail_msg("only %lld of %lld inputs changed through the %s conv: it does not round",
                 (long long)changed, (long long)n, fmt_name(f));
    cr_tensor_free(&x);
    cr_tensor_free(&w);
    cr_tensor_free(&y);
    assert_cr_ok(cr_bf16_conv_set_path("auto"));
}

static void bf16_conv__rounds_to_bf16(void **state)
{
    (void)state;
    check_rounding(CR_HALF_BF16, "auto");
    check_rounding(CR_HALF_BF16, "gemm");
    assert_cr_fails(cr_bf16_conv_set_path("fast"), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "expected auto, gemm"));
}

/* The fp16 conversion paths this CPU runs, best first ("f16c512", "f16c", "portable"). */
static const char *const fp16_paths[] = {"f16c512", "f16c", "portable"};
static int fp16_path_runs(const char *name) { return cr_fp16_storage_set_path(name) == CR_OK; }

static void fp16_conv__rounds_to_fp16(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        if (fp16_path_runs(fp16_paths[i])) check_rounding(CR_HALF_FP16, "auto");
    assert_cr_ok(cr_fp16_storage_set_path("auto"));
    assert_cr_fails(cr_fp16_storage_set_path("fast"), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "expected auto, portable"));
}

/* cr_f32_to_f16_row (vectorized where the CPU has F16C) is lib's cr_f32_to_f16 bit for
 * bit: on a stride through all 2^32 float patterns (every exponent, both signs, NaNs
 * with payloads, subnormals) and on the edges of fp16's range, in rows whose lengths
 * leave every tail length of the 16 lanes. */
static void fp16_row__equals_lib(void **state)
{
    (void)state;
    const int64_t n = 1 << 20;
    float *src = malloc((size_t)n * sizeof *src);
    uint16_t *dst = malloc((size_t)n * sizeof *dst);
    assert_non_null(src);
    assert_non_null(dst);
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)(i * 4099u + 12345u * (uint32_t)(i & 15));   /* all over */
        if (i % 7 == 3) u = (uint32_t)(0x33000000u + (uint32_t)i * 37u);   /* near 2^-25 .. */
        memcpy(&src[i], &u, 4);
    }
    const float edges[] = {65504.0f, 65519.996f, 65520.0f, -65520.0f, 6.1035156e-5f,
                           6.1035152e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 0.0f,
                           -0.0f, INFINITY, -INFINITY, NAN};
    memcpy(src, edges, sizeof edges);
    int64_t lengths[] = {n, 15, 17, 31, 1, 0};
    int paths = 0;
    for (int pi = 0; pi < 3; pi++)
    for (int t = 0; t < 6 && fp16_path_runs(fp16_paths[pi]); t++) {
        paths += t == 0;
        memset(dst, 0xAB, (size_t)n * sizeof *dst);
        cr_f32_to_f16_row(src + 3, dst + 3, lengths[t] - (lengths[t] >= 3 ? 3 : 0));
        for (int64_t i = 3; i < lengths[t]; i++) {
            const uint16_t want = cr_f32_to_f16(src[i]);
            if (dst[i] != want) {
                uint32_t u;
                memcpy(&u, &src[i], 4);
                fail_msg("cr_f32_to_f16_row (%s): float 0x%08x (%.9g) at %lld of %lld gives 0x%04x, "
                         "cr_f32_to_f16 0x%04x", cr_fp16_storage_path(), u, src[i], (long long)i,
                         (long long)lengths[t], dst[i], want);
            }
        }
    }
    assert_cr_ok(cr_fp16_storage_set_path("auto"));
    assert_true(paths >= 1);
    printf("cr_f32_to_f16_row = cr_f32_to_f16 on %lld float patterns, on the %d conversion "
           "paths this CPU runs (best: %s)\n", (long long)n, paths, cr_fp16_storage_path());
    free(src);
    free(dst);
}

/* cr_gemm_fp16 is chapter 3's cr_sgemm on the widened matrices, bit for bit, on 1 thread
 * and on OpenMP's: random shapes (edges of the register tile, M past 256 where the
 * kernel changes, K past one depth block), fp16 values of both signs over six binades. */
static void fp16_gemm__equals_sgemm_on_widened(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int count = cr_test_count(24);
    for (int c = 0; c < count; c++) {
        const int64_t M = c == 0 ? 300 : cr_rng_int(&r, 1, c % 3 ? 40 : 280);
        const int64_t N = cr_rng_int(&r, 1, 300), K = cr_rng_int(&r, 1, c % 4 ? 90 : 700);
        const int64_t lda = K + cr_rng_int(&r, 0, 2), ldb = N + cr_rng_int(&r, 0, 2);
        uint16_t *A = malloc((size_t)(M * lda) * 2), *B = malloc((size_t)(K * ldb) * 2);
        float *Af = malloc((size_t)(M * lda) * 4), *Bf = malloc((size_t)(K * ldb) * 4);
        float *C = malloc((size_t)(M * N) * 4), *C1 = malloc((size_t)(M * N) * 4);
        float *Cs = malloc((size_t)(M * N) * 4);
        assert_true(A && B && Af && Bf && C && C1 && Cs);
        for (int64_t i = 0; i < M * lda; i++) {
            A[i] = cr_f32_to_f16(ldexpf(cr_rng_uniform_f(&r, -1.0f, 1.0f), (int)cr_rng_int(&r, -3, 2)));
            Af[i] = cr_f16_to_f32(A[i]);
        }
        for (int64_t i = 0; i < K * ldb; i++) {
            B[i] = cr_f32_to_f16(ldexpf(cr_rng_uniform_f(&r, -1.0f, 1.0f), (int)cr_rng_int(&r, -3, 2)));
            Bf[i] = cr_f16_to_f32(B[i]);
        }
        cr_test_set_threads(2);
        assert_true(fp16_path_runs(fp16_paths[c % 3]) || fp16_path_runs("portable"));
        assert_cr_ok(cr_gemm_fp16(M, N, K, A, lda, B, ldb, C, N, 0));
        assert_cr_ok(cr_gemm_fp16(M, N, K, A, lda, B, ldb, C1, N, 1));
        assert_cr_ok(cr_sgemm(CR_NO_TRANS, CR_NO_TRANS, M, N, K, 1.0f, Af, lda, Bf, ldb, 0.0f, Cs, N));
        for (int64_t i = 0; i < M * N; i++)
            if (memcmp(&C[i], &Cs[i], 4) != 0 || memcmp(&C1[i], &Cs[i], 4) != 0)
                fail_msg("cr_gemm_fp16 %lld x %lld x %lld (lda %lld, ldb %lld): C[%lld] = %.9g "
                         "(threads 0), %.9g (1), cr_sgemm on the widened matrices %.9g (kernel %s, "
                         "conversions %s, seed %llu)", (long long)M, (long long)N, (long long)K, (long long)lda,
                         (long long)ldb, (long long)i, C[i], C1[i], Cs[i], cr_gemm_kernel_name(),
                         cr_fp16_storage_path(), (unsigned long long)seed);
        free(A);
        free(B);
        free(Af);
        free(Bf);
        free(C);
        free(C1);
        free(Cs);
    }
    assert_cr_ok(cr_fp16_storage_set_path("auto"));
    /* bad arguments */
    uint16_t h[4] = {0};
    float o[4];
    assert_cr_fails(cr_gemm_fp16(2, 2, 2, NULL, 2, h, 2, o, 2, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "cr_gemm_fp16: A, B or C is NULL"));
    assert_cr_fails(cr_gemm_fp16(2, 2, 2, h, 1, h, 2, o, 2, 0), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "cr_gemm_fp16: lda = 1, expected >= 2"));
    assert_cr_fails(cr_gemm_fp16(2, -1, 2, h, 2, h, 2, o, 2, 0), CR_EINVAL);
    assert_cr_fails(cr_gemm_fp16(2, 2, 2, h, 2, h, 2, o, 2, 3), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "threads"));
#ifdef _OPENMP
    cr_test_set_threads(omp_get_num_procs());
#endif
    printf("cr_gemm_fp16 = cr_sgemm on the widened matrices: %d shapes, kernel %s, conversions "
           "on each path this CPU runs, best %s (seed %llu)\n", count, cr_gemm_kernel_name(), cr_fp16_storage_path(),
           (unsigned long long)seed);
}

/* The bf16 (fp16) convolution is not chapter 3's fp32 one: on a 3x3 layer their relative
 * L2 difference is of the format's rounding (2^-9 per operand for bf16, 2^-12 for fp16),
 * far above fp32's, within [lo, hi). */
static void check_differs_from_fp32(cr_half_format f, double lo, double hi)
{
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_conv_params p = cr_conv_params_default(16, 24, 3);
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 2, 13, 17));
    cr_tensor x, w, b, y32, y16;
    cr_conv_tensors_random(&s, &r, &x, &w, &b, &y32);
    assert_cr_ok(cr_tensor_alloc(&y16, 4, y32.shape));
    assert_cr_ok(cr_conv2d_fast(&p, &x, &w, &b, &y32));
    assert_cr_ok(conv_of(f)(&p, &x, &w, &b, &y16));
    double d = 0, nrm = 0;
    for (size_t i = 0; i < y32.numel; i++) {
        d += ((double)y16.data[i] - y32.data[i]) * ((double)y16.data[i] - y32.data[i]);
        nrm += (double)y32.data[i] * y32.data[i];
    }
    const double rel = sqrt(d / nrm);
    printf("%s conv vs fp32 conv: relative L2 %.3g (seed %llu)\n", fmt_name(f), rel,
           (unsigned long long)seed);
    if (!(rel > lo && rel < hi))
        fail_msg("%s conv vs chapter 3's fp32 conv: relative L2 %.3g, expected in (%g, %g): "
                 "the format rounds each operand (seed %llu)", fmt_name(f), rel, lo, hi,
                 (unsigned long long)seed);
    cr_tensor_free(&x);
    cr_tensor_free(&w);
    cr_tensor_free(&b);
    cr_tensor_free(&y32);
    cr_tensor_free(&y16);
}

static void bf16_conv__differs_from_fp32(void **state)
{
    (void)state;
    check_differs_from_fp32(CR_HALF_BF16, 1e-4, 2e-2);
}

static void fp16_conv__differs_from_fp32(void **state)
{
    (void)state;
    check_differs_from_fp32(CR_HALF_FP16, 1e-5, 2e-3);
}

/* ---- a whole model ------------------------------------------------------------------------ */

static cr_tensor sim_x, sim_w;
static cr_half_format sim_fmt;   /* the format conv_simulated rounds to */

/* A cr_conv2d_fn: the simulation lab 7 ran before these paths existed: x and w rounded to
 * bf16 (or fp16: sim_fmt), chapter 3's fp32 convolution. */
static cr_status conv_simulated(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                                const cr_tensor *b, cr_tensor *y)
{
    cr_tensor_free(&sim_x);
    cr_tensor_free(&sim_w);
    cr_status s = cr_tensor_alloc(&sim_x, x->ndim, x->shape);
    if (!s) s = cr_tensor_alloc(&sim_w, w->ndim, w->shape);
    if (s) return s;
    for (size_t i = 0; i < x->numel; i++) sim_x.data[i] = rounded(sim_fmt, x->data[i]);
    for (size_t i = 0; i < w->numel; i++) sim_w.data[i] = rounded(sim_fmt, w->data[i]);
    return cr_conv2d_fast(p, &sim_x, &sim_w, b, y);
}

/* Relative L2 distance of a from b. */
static double rel_l2(const cr_tensor *a, const cr_tensor *b)
{
    double d = 0, n = 0;
    for (size_t i = 0; i < a->numel; i++) {
        d += ((double)a->data[i] - b->data[i]) * ((double)a->data[i] - b->data[i]);
        n += (double)b->data[i] * b->data[i];
    }
    return sqrt(d / (n > 0 ? n : 1));
}

/* Chapter 8's FPN, reduced (lab 7's --quick network), in format f: within sim_bound
 * (relative L2) of the simulation, while fp32 is three times further than that from both;
 * training mode refused; a second attach refused; detach restores the model's
 * convolution. */
static void check_model(cr_half_format f, double sim_bound)
{
    cr_rng r;
    const uint64_t seed = seed_rng(&r);
    const cr_fpn_config c = {.classes = 5, .stem = 8, .planes = {4, 8, 16, 32},
                             .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                             .pyramid = 16, .segmentation = 32, .dropout = 0.2};
    cr_model m;
    cr_model_init(&m);
    assert_cr_ok(cr_fpn_build(&m, &c));
    random_eval_params(&m, seed, &r);
    cr_tensor x, y32, ysim, y16;
    random_input(&x, 2, 3, 64, 96, &r, -2.0f, 2.0f);
    run_model(&m, &x, &y32);
    sim_fmt = f;
    m.conv_forward = conv_simulated;
    run_model(&m, &x, &ysim);
    m.conv_forward = cr_conv2d_fast;
    cr_bf16_model bm;
    assert_cr_ok(cr_half_model_attach(&bm, &m, f));
    cr_bf16_model bm2;
    assert_cr_fails(cr_half_model_attach(&bm2, &m, f), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "already attached"));
    assert_cr_fails(cr_bf16_model_attach(&bm, &m), CR_EINVAL);   /* bm itself: untouched */
    assert_non_null(strstr(cr_last_error(), "bm is attached"));
    cr_bf16_model_detach(&bm2);   /* zeroed by the refused attach: harmless */
    run_model(&m, &x, &y16);
    int convs = 0;
    for (int i = 0; i < m.n; i++) convs += m.mods[i].kind == CR_MOD_CONV;
    assert_int_equal(bm.n, convs);
    assert_int_equal(bm.calls, convs);
    const double d_sim = rel_l2(&y16, &ysim), d32 = rel_l2(&y16, &y32), sim32 = rel_l2(&ysim, &y32);
    const char *name = fmt_name(f);
    printf("reduced FPN (%d convs, %s): %s vs simulation %.3g, %s vs fp32 %.3g, simulation "
           "vs fp32 %.3g (relative L2; seed %llu)\n", convs,
           f == CR_HALF_FP16 ? cr_fp16_storage_path() : gemm_name(), name, d_sim, name, d32,
           sim32, (unsigned long long)seed);
    if (!(d_sim < sim_bound) || !(d32 > 3 * d_sim) || !(sim32 > 3 * d_sim))
        fail_msg("%s model vs simulation %.3g (expected < %g and a third of fp32's distance: "
                 "%s vs fp32 %.3g, simulation vs fp32 %.3g) (seed %llu)", name, d_sim, sim_bound,
                 name, d32, sim32, (unsigned long long)seed);
    /* bytes: convolution weights at 2 bytes instead of 4 */
    size_t wbytes = 0, all = 0;
    for (int i = 0; i < m.n; i++) {
        const cr_module *d = &m.mods[i];
        const cr_tensor *t[4] = {&d->weight, &d->bias, &d->running_mean, &d->running_var};
        for (int j = 0; j < 4; j++) all += t[j]->data ? t[j]->numel * 4 : 0;
        if (d->kind == CR_MOD_CONV) wbytes += d->weight.numel * 4;
    }
    assert_int_equal(cr_bf16_model_bytes(&bm), all - wbytes / 2);
    /* training mode: refused, naming the module */
    cr_model_train(&m, true);
    const cr_tensor *yy;
    assert_cr_fails(cr_model_forward(&m, &x, &yy), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "evaluation"));
    cr_model_train(&m, false);
    cr_bf16_model_detach(&bm);
    assert_true(m.conv_forward == cr_conv2d_fast);
    cr_tensor yd;
    run_model(&m, &x, &yd);
    assert_memory_equal(yd.data, y32.data, y32.numel * sizeof(float));
    cr_bf16_model_detach(&bm);   /* twice: harmless */
    cr_tensor_free(&sim_x);
    cr_tensor_free(&sim_w);
    cr_tensor_free(&x);
    cr_tensor_free(&y32);
    cr_tensor_free(&ysim);
    cr_tensor_free(&y16);
    cr_tensor_free(&yd);
    cr_model_free(&m);
}

static void bf16_model__matches_simulation(void **state)
{
    (void)state;
    check_model(CR_HALF_BF16, 1e-3);
}

static void fp16_model__matches_simulation(void **state)
{
    (void)state;
    check_model(CR_HALF_FP16, 2e-4);   /* measured <= 4.7e-5 over 200 seeds: the order of the sums */
}

/* ---- bad input ------------------------------------------------------------------------------ */

/* Asserts that the last error contains needle. */
static void assert_error_has(const char *needle)
{
    if (!strstr(cr_last_error(), needle))
        fail_msg("expected a message naming '%s', got: %s", needle, cr_last_error());
}

static void bf16_conv__bad_arguments(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_tensor w, b, x, y, wbad;
    assert_cr_ok(cr_tensor_alloc4(&w, 6, 4, 3, 3));
    assert_cr_ok(cr_tensor_alloc4(&wbad, 6, 4, 3, 2));
    int64_t bs[1] = {6};
    assert_cr_ok(cr_tensor_alloc(&b, 1, bs));
    cr_rng r;
    cr_rng_seed(&r, 7);
    cr_tensor_fill_uniform(&w, &r, -1, 1);
    cr_tensor_fill_uniform(&b, &r, -1, 1);
    cr_bf16_conv bc;
    assert_cr_fails(cr_bf16_conv_prepare(NULL, &p, &w, &b), CR_EINVAL);
    assert_cr_fails(cr_bf16_conv_prepare(&bc, &p, &wbad, &b), CR_EINVAL);
    assert_error_has("cr_bf16_conv_prepare: w: expected [6, 4, 3, 3]");
    assert_cr_fails(cr_half_conv_prepare(&bc, CR_HALF_FP16, &p, &wbad, &b), CR_EINVAL);
    assert_error_has("cr_half_conv_prepare: w: expected [6, 4, 3, 3]");   /* fp16 names its own */
    assert_cr_fails(cr_bf16_conv_prepare(&bc, &p, &w, NULL), CR_EINVAL);
    assert_error_has("b:");
    p.groups = 3;   /* does not divide 4 */
    assert_cr_fails(cr_bf16_conv_prepare(&bc, &p, &w, &b), CR_EINVAL);
    assert_error_has("groups");
    p.groups = 1;
    assert_cr_ok(cr_bf16_conv_prepare(&bc, &p, &w, &b));
    assert_int_equal(cr_bf16_conv_bytes(&bc), 6 * 36 * 2 + 6 * 4);
    /* the input: wrong channels, too small for the kernel, wrong output */
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 5, 8, 8));
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 6, 6, 6));
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    assert_cr_fails(cr_bf16_conv_forward(&bc, &x, &y), CR_EINVAL);
    assert_error_has("channels");
    cr_tensor_free(&x);
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 4, 2, 8));
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    assert_cr_fails(cr_bf16_conv_forward(&bc, &x, &y), CR_EINVAL);
    assert_error_has("kernel");
    cr_tensor_free(&x);
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 4, 8, 8));
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    cr_tensor_free(&y);
    assert_cr_ok(cr_tensor_alloc4(&y, 1, 6, 8, 8));
    assert_cr_fails(cr_bf16_conv_forward(&bc, &x, &y), CR_EINVAL);
    assert_error_has("y: expected [1, 6, 6, 6]");
    assert_cr_fails(cr_bf16_conv_forward(&bc, NULL, &y), CR_EINVAL);
    cr_bf16_conv_free(&bc);
    assert_cr_fails(cr_bf16_conv_forward(&bc, &x, &y), CR_EINVAL);   /* freed: not prepared */
    assert_error_has("not prepared");
    cr_bf16_conv_free(&bc);   /* twice: harmless */
    /* reflect padding as large as the input */
    p.pad_mode = CR_PAD_REFLECT;
    cr_conv_set_padding(&p, 8, 1);
    assert_cr_ok(cr_bf16_conv_prepare(&bc, &p, &w, &b));
    assert_cr_fails(cr_bf16_conv_forward(&bc, &x, &y), CR_EINVAL);
    assert_error_has("reflect");
    cr_bf16_conv_free(&bc);
    /* a model without convolutions, NULL arguments */
    cr_model m;
    cr_model_init(&m);
    assert_true(cr_model_add_relu(&m, "relu", CR_MODEL_INPUT) >= 0);
    cr_bf16_model bm;
    assert_cr_fails(cr_bf16_model_attach(&bm, &m), CR_EINVAL);
    assert_error_has("no convolution");
    assert_cr_fails(cr_half_model_attach(&bm, &m, CR_HALF_FP16), CR_EINVAL);
    assert_error_has("fp16 model: the model has no convolution");
    assert_cr_fails(cr_half_model_attach(&bm, &m, (cr_half_format)7), CR_EINVAL);
    assert_error_has("fmt: expected CR_HALF_BF16 or CR_HALF_FP16");
    p.pad_mode = CR_PAD_ZEROS;
    cr_conv_set_padding(&p, 1, 1);
    assert_cr_fails(cr_half_conv_prepare(&bc, (cr_half_format)2, &p, &w, &b), CR_EINVAL);
    assert_error_has("fmt: expected");
    assert_cr_ok(cr_half_conv_prepare(&bc, CR_HALF_FP16, &p, &w, &b));
    assert_int_equal(cr_bf16_conv_bytes(&bc), 6 * 36 * 2 + 6 * 4);
    assert_int_equal(bc.w[0], cr_f32_to_f16(w.data[0]));   /* fp16 bits, not bf16 */
    cr_bf16_conv_free(&bc);
    assert_cr_fails(cr_bf16_model_attach(NULL, &m), CR_EINVAL);
    cr_bf16_model_detach(NULL);
    cr_model_free(&m);
    cr_tensor_free(&w);
    cr_tensor_free(&wbad);
    cr_tensor_free(&b);
    cr_tensor_free(&x);
    cr_tensor_free(&y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bf16_conv__fast_equals_reference),
        cmocka_unit_test(bf16_conv__rounds_to_bf16),
        cmocka_unit_test(bf16_conv__differs_from_fp32),
        cmocka_unit_test(bf16_model__matches_simulation),
        cmocka_unit_test(bf16_conv__bad_arguments),
        cmocka_unit_test(fp16_conv__fast_equals_reference),
        cmocka_unit_test(fp16_conv__rounds_to_fp16),
        cmocka_unit_test(fp16_row__equals_lib),
        cmocka_unit_test(fp16_gemm__equals_sgemm_on_widened),
        cmocka_unit_test(fp16_conv__differs_from_fp32),
        cmocka_unit_test(fp16_model__matches_simulation),
    };
    return cr_run_tests("ch07 bf16", tests);
}
