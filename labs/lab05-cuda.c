/* lab05-cuda.c — chapter 5's lab: GEMM and convolution on an NVIDIA GPU, against cuBLAS
 * and cuDNN measured in the same run (each optional, found at build time).
 *
 * (1) GEMM, C = A B, square sizes 1024..8192: every kernel of the progression in its own
 *     precision, TFLOP/s and % of cuBLAS in the same precision (FP32: cublasSgemm with
 *     the default math mode, no TF32; TF32: cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32;
 *     FP16 / BF16: cublasGemmEx on inputs converted beforehand, FP32 accumulation).
 * (2) The standard layers at batch 1 and 32 (g_3x3_64_n8 at its batch 8), forward, FP32,
 *     NCHW in and out: every GPU path and cuDNN (FP32 math, bias added by cudnnAddTensor;
 *     the algorithm the Find API measured fastest with success and FMA math, named in the
 *     note), TFLOP/s and % of cuDNN. A failed peer fails the run; our rows still come.
 *     Then the same layers at TF32: our two tensor-core convolutions (cr_cuda_conv2d_tc,
 *     the im2col recipe, "tf32_im2col"; cr_cuda_conv2d_implicit_tc, the batch-folded
 *     implicit GEMM, "tf32_implicit") against cuDNN with tensor-op math (the fastest
 *     algorithm Find measured with success, its math type named in the note).
 * Every result is validated before it is timed (GEMM: 512 sampled entries against float64,
 * cr_cuda_gemm_tolerance's bounds; convolution: chapter 3's CPU convolution, itself proven
 * equal to chapter 1). Times are CUDA-event median, min and max after warm-up; before each
 * timed run a kernel reads twice the L2 size (clean lines) and the host waits. The
 * memory column is the device memory in use for the variant: operands plus workspace
 * (cudaMemGetInfo before and after its first run; allocation granularity applies).
 *
 * Without a CUDA device the lab says so and exits 0 having measured nothing (no CSV). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CR_HAVE_CUBLAS
#include <cublas_v2.h>
#endif
#ifdef CR_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "conv_gemm.h"
#include "cuda_gemm.h"
#include "lab_common.h"
#include "progress.h"

#define SAMPLES 512
#define CONV_TOL 1e-4       /* vs chapter 3 on the CPU, relative L2 (fp32) */
#define CONV_TOL_TF32 5e-3  /* the same at TF32 (10-bit operands: about 3e-4 measured in the
                               tests' random configurations; the FPN's 7.8e-4 on the H200) */

static const char *const csv_columns[] = {
    "lab", "kind", "case", "impl", "precision", "batch", "ms", "ms_min", "ms_max", "tflops",
    "pct_ref", "ref_impl",
    "mem_bytes", "rel_err", "note", NULL};

/* Device memory in use now (total - free), or 0 if it cannot be read. */
static size_t mem_used(void)
{
    size_t f = 0, t = 0;
    return cr_cuda_mem_info(&f, &t) == CR_OK ? t - f : 0;
}

/* ---- (1) GEMM ------------------------------------------------------------------------------- */

typedef struct {
    int64_t S;                     /* M = N = K */
    float *A, *B, *C;              /* device */
    void *A16, *B16;               /* device, 2-byte copies for cuBLAS's FP16 / BF16 */
    const float *hA, *hB;          /* host copies for validation */
    cr_cuda_gemm_fn fn;
    cr_cuda_precision prec;
#ifdef CR_HAVE_CUBLAS
    cublasHandle_t h;
#endif
} gemm_run;

static cr_status gemm_ours(void *arg)
{
    gemm_run *g = arg;
    return g->fn(CR_NO_TRANS, CR_NO_TRANS, g->S, g->S, g->S, 1.0f, g->A, g->S, g->B, g->S, 0.0f,
                 g->C, g->S);
}

#ifdef CR_HAVE_CUBLAS
/* C = A B row-major through column-major cuBLAS: C^T = B^T A^T, so B is passed first. */
static cr_status gemm_cublas(void *arg)
{
    gemm_run *g = arg;
    const float one = 1.0f, zero = 0.0f;
    const int n = (int)g->S;
    cublasStatus_t s;
    switch (g->prec) {
    case CR_CUDA_FP32:
        s = cublasSgemm(g->h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, g->B, n, g->A, n, &zero,
                        g->C, n);
        break;
    case CR_CUDA_TF32:
        s = cublasGemmEx(g->h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, g->B, CUDA_R_32F, n,
                         g->A, CUDA_R_32F, n, &zero, g->C, CUDA_R_32F, n,
                         CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
        break;
    default: {
        const cudaDataType t = g->prec == CR_CUDA_FP16 ? CUDA_R_16F : CUDA_R_16BF;
        s = cublasGemmEx(g->h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, g->B16, t, n, g->A16, t,
                         n, &zero, g->C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        break;
    }
    }
    return s == CUBLAS_STATUS_SUCCESS ? CR_OK
                                      : cr_fail(CR_EIO, "cuBLAS: %s", cublasGetStatusString(s));
}
#endif

/* Relative L2 error of C (copied back) against float64 dot products at sampled entries. */
static cr_status gemm_error(const gemm_run *g, uint64_t seed, float *row, double *rel)
{
    cr_rng r;
    cr_rng_seed(&r, seed);
    double err = 0.0, norm = 0.0;
    for (int s = 0; s < SAMPLES; s++) {
        const int64_t i = cr_rng_int(&r, 0, g->S - 1), j = cr_rng_int(&r, 0, g->S - 1);
        cr_status st = cr_cuda_to_host(row, g->C + i * g->S + j, sizeof(float));
        if (st != CR_OK) return st;
        double acc = 0.0;
        for (int64_t k = 0; k < g->S; k++) acc += (double)g->hA[i * g->S + k] * g->hB[k * g->S + j];
        const double d = row[0] - acc;
        err += isfinite(d) ? d * d : INFINITY;
        norm += acc * acc;
    }
    *rel = norm > 0 ? sqrt(err / norm) : sqrt(err);
    return CR_OK;
}

/* Prints and records one row. */
static int result_row(lab_ctx *ctx, const char *kind, const char *cs, const char *impl,
                      cr_cuda_precision prec, int64_t batch, const cr_cuda_timing *t, double flops,
                      double ref_tflops, const char *ref_impl, size_t mem, double rel,
                      const char *note)
{
    const double ms = t->median_ms;
    const double tf = ms > 0 ? flops / (ms * 1e-3) * 1e-12 : 0.0;
    char pct[16] = "";
    if (ref_tflops > 0) snprintf(pct, sizeof pct, "%.1f", 100.0 * tf / ref_tflops);
    printf("%-14s %-10s %-5s %5lld %10.3f %10.3f %10.3f %8.2f %7s %-8s %12zu %9.1e %s\n", cs,
           impl, cr_cuda_precision_name(prec), (long long)batch, ms, t->min_ms, t->max_ms, tf, pct,
           ref_impl, mem, rel, note);
    fflush(stdout);
    cr_status st = lab_csv_row(ctx, "lab05,%s,%s,%s,%s,%lld,%.4f,%.4f,%.4f,%.3f,%s,%s,%zu,%.3g,%s",
                               kind, cs, impl, cr_cuda_precision_name(prec), (long long)batch, ms,
                               t->min_ms, t->max_ms, tf, pct,
                               ref_impl, mem, rel, note);
    return st == CR_OK ? 1 : lab_report_failure("CSV", st);
}

/* Validates, measures memory and times one GEMM variant; returns 0 on failure. */
static int gemm_variant(lab_ctx *ctx, gemm_run *g, const char *impl, cr_status (*run)(void *),
                        double *tflops_out, double ref_tflops, float *row)
{
    char cs[32], what[96];
    snprintf(cs, sizeof cs, "%lld^3", (long long)g->S);
    snprintf(what, sizeof what, "gemm %s %s (%s)", cs, impl, cr_cuda_precision_name(g->prec));
    cr_status st = cr_cuda_poison(g->C, (size_t)(g->S * g->S));
    const size_t before = mem_used();
    if (st == CR_OK) st = run(g);
    if (st == CR_OK) st = cr_cuda_sync(what);
    const size_t after = mem_used();
    double rel = 0.0;
    cr_cuda_timing t;
    if (st == CR_OK) st = gemm_error(g, ctx->seed ^ 0x5eed, row, &rel);
    if (st != CR_OK) return lab_report_failure(what, st);
    const double tol = cr_cuda_gemm_tolerance(g->prec, g->S);   /* the tests' table */
    if (!(rel <= tol)) {
        fprintf(stderr, "%s: FAILED validation, sampled relative L2 %.3g > %.0e\n", what, rel,
                tol);
        return 0;
    }
    if ((st = cr_cuda_time_stats(run, g, 2, ctx->repeats, &t)) != CR_OK)
        return lab_report_failure(what, st);
    const double flops = 2.0 * (double)g->S * (double)g->S * (double)g->S;
    *tflops_out = flops / (t.median_ms * 1e-3) * 1e-12;
    const size_t operands = 3 * (size_t)(g->S * g->S) * sizeof(float);
    return result_row(ctx, "gemm", cs, impl, g->prec, 1, &t, flops, ref_tflops, "cublas",
                      operands + (after > before ? after - before : 0), rel, "");
}

/* Every kernel (and cuBLAS in each precision) at one size. */
static int run_gemm_size(lab_ctx *ctx, int64_t S, cr_rng *rng)
{
    const size_t n = (size_t)(S * S);
    gemm_run g;
    memset(&g, 0, sizeof g);
    g.S = S;
    float *hA = malloc(n * sizeof *hA), *hB = malloc(n * sizeof *hB), row[1];
    int ok = 1;
    cr_status st = (hA && hB) ? CR_OK : cr_fail(CR_ENOMEM, "host operands of %zu floats", n);
    if (st == CR_OK) {
        for (size_t i = 0; i < n; i++) hA[i] = cr_rng_uniform_f(rng, -1, 1);
        for (size_t i = 0; i < n; i++) hB[i] = cr_rng_uniform_f(rng, -1, 1);
        g.hA = hA;
        g.hB = hB;
        st = cr_cuda_malloc((void **)&g.A, n * sizeof(float), "A");
    }
    if (st == CR_OK) st = cr_cuda_malloc((void **)&g.B, n * sizeof(float), "B");
    if (st == CR_OK) st = cr_cuda_malloc((void **)&g.C, n * sizeof(float), "C");
    if (st == CR_OK) st = cr_cuda_to_device(g.A, hA, n * sizeof(float));
    if (st == CR_OK) st = cr_cuda_to_device(g.B, hB, n * sizeof(float));
#ifdef CR_HAVE_CUBLAS
    if (st == CR_OK) st = cr_cuda_malloc(&g.A16, n * 2, "A (16-bit)");
    if (st == CR_OK) st = cr_cuda_malloc(&g.B16, n * 2, "B (16-bit)");
    if (st == CR_OK && cublasCreate(&g.h) != CUBLAS_STATUS_SUCCESS)
        st = cr_fail(CR_EIO, "cublasCreate failed");
#endif
    if (st != CR_OK) ok = lab_report_failure("gemm operands", st);
    int count;
    const cr_cuda_gemm_step *steps = cr_cuda_gemm_steps(&count);
    const int operands_ok = ok;
    for (int p = CR_CUDA_FP32; operands_ok && p <= CR_CUDA_BF16; p++) {
        g.prec = (cr_cuda_precision)p;
        double ref = 0.0, tf = 0.0;
#ifdef CR_HAVE_CUBLAS
        if (p == CR_CUDA_FP16 || p == CR_CUDA_BF16) {
            st = cr_cuda_convert(g.A, g.A16, n, g.prec);
            if (st == CR_OK) st = cr_cuda_convert(g.B, g.B16, n, g.prec);
            if (st == CR_OK) st = cr_cuda_sync("convert");
            if (st != CR_OK) { ok = lab_report_failure("convert", st); continue; }
        }
        /* a failed peer is reported (and fails the run) but our kernels are still measured */
        if (!gemm_variant(ctx, &g, "cublas", gemm_cublas, &ref, 0.0, row)) {
            ok = 0;
            ref = 0.0;
        }
#endif
        for (int i = 0; i < count; i++) {
            if (steps[i].precision != g.prec) continue;
            /* the one-element-per-thread kernels only where they finish in seconds */
            if ((strcmp(steps[i].name, "naive") == 0 || strcmp(steps[i].name, "coalesced") == 0)
                && S > 4096)
                continue;
            g.fn = steps[i].fn;
            ok &= gemm_variant(ctx, &g, steps[i].name, gemm_ours, &tf, ref, row);
        }
    }
#ifdef CR_HAVE_CUBLAS
    if (g.h) cublasDestroy(g.h);
#endif
    cr_cuda_free(g.A); cr_cuda_free(g.B); cr_cuda_free(g.C);
    cr_cuda_free(g.A16); cr_cuda_free(g.B16);
    free(hA); free(hB);
    return ok;
}

/* ---- (2) convolution -------------------------------------------------------------------------- */

typedef struct {
    cr_conv_shape s;
    float *x, *w, *b, *y;          /* device */
    cr_cuda_conv2d_fn fn;
    cr_status (*tc)(const cr_conv_shape *, cr_cuda_precision, const float *, const float *,
                    const float *, float *);   /* a tensor-core path, run at TF32 */
#ifdef CR_HAVE_CUDNN
    cudnnHandle_t h;
    cudnnTensorDescriptor_t xd, yd, bd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t algo;
    void *ws;
    size_t ws_bytes;
    int ready;
#endif
} conv_run;

static cr_status conv_ours(void *arg)
{
    conv_run *c = arg;
    return c->fn(&c->s, c->x, c->w, c->b, c->y);
}

static cr_status conv_ours_tf32(void *arg)
{
    conv_run *c = arg;
    return c->tc(&c->s, CR_CUDA_TF32, c->x, c->w, c->b, c->y);
}

#ifdef CR_HAVE_CUDNN
#define CUDNN_OK(call) ((call) == CUDNN_STATUS_SUCCESS)

/* cuDNN's name for a forward algorithm. */
static const char *cudnn_algo_name(cudnnConvolutionFwdAlgo_t a)
{
    static const char *const names[] = {"implicit_gemm", "implicit_precomp_gemm", "gemm", "direct",
                                        "fft", "fft_tiling", "winograd", "winograd_nonfused"};
    return (int)a >= 0 && (int)a < (int)(sizeof names / sizeof *names) ? names[a] : "?";
}

/* Builds cuDNN's FP32 convolution for c (symmetric zero padding only); c->ready says if it
 * worked. The algorithm is the fastest that cuDNN's Find API measured with status success
 * and FP32 (FMA) math: cudnnFindConvolutionForwardAlgorithm runs each candidate, so neither
 * a heuristic's guess nor an entry that failed or would use TF32 tensor cores is taken.
 * tf32: tensor-op math instead, and the fastest successful entry of any math type (its
 * type goes to *math). */
static void cudnn_init(conv_run *c, int tf32, cudnnMathType_t *math)
{
    const cr_conv_params *p = &c->s.p;
    c->ready = 0;
    if (p->pad_mode != CR_PAD_ZEROS || p->pad_top != p->pad_bottom || p->pad_left != p->pad_right)
        return;
    if (!CUDNN_OK(cudnnCreate(&c->h))) return;
    int ok = CUDNN_OK(cudnnCreateTensorDescriptor(&c->xd)) &&
             CUDNN_OK(cudnnCreateTensorDescriptor(&c->yd)) &&
             CUDNN_OK(cudnnCreateTensorDescriptor(&c->bd)) &&
             CUDNN_OK(cudnnCreateFilterDescriptor(&c->wd)) &&
             CUDNN_OK(cudnnCreateConvolutionDescriptor(&c->cd));
    ok = ok && CUDNN_OK(cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                        (int)c->s.batch, (int)p->in_channels, (int)c->s.h_in, (int)c->s.w_in));
    ok = ok && CUDNN_OK(cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                        (int)c->s.batch, (int)p->out_channels, (int)c->s.h_out, (int)c->s.w_out));
    ok = ok && CUDNN_OK(cudnnSetTensor4dDescriptor(c->bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                        (int)p->out_channels, 1, 1));
    ok = ok && CUDNN_OK(cudnnSetFilter4dDescriptor(c->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                        (int)p->out_channels, (int)c->s.cin_g, (int)p->kernel_h, (int)p->kernel_w));
    ok = ok && CUDNN_OK(cudnnSetConvolution2dDescriptor(c->cd, (int)p->pad_top, (int)p->pad_left,
                        (int)p->stride_h, (int)p->stride_w, (int)p->dilation_h, (int)p->dilation_w,
                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    ok = ok && CUDNN_OK(cudnnSetConvolutionGroupCount(c->cd, (int)p->groups));
    /* FP32 arithmetic: CUDNN_DEFAULT_MATH would allow TF32 tensor cores on sm_80+ */
    ok = ok && CUDNN_OK(cudnnSetConvolutionMathType(c->cd, tf32 ? CUDNN_TENSOR_OP_MATH
                                                                 : CUDNN_FMA_MATH));
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0, pick = -1;
    ok = ok && CUDNN_OK(cudnnFindConvolutionForwardAlgorithm(c->h, c->xd, c->wd, c->cd, c->yd,
                        CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf));
    for (int i = 0; ok && i < found && pick < 0; i++)   /* sorted fastest first */
        if (perf[i].status == CUDNN_STATUS_SUCCESS && (tf32 || perf[i].mathType == CUDNN_FMA_MATH))
            pick = i;
    ok = ok && pick >= 0;
    if (ok) {
        c->algo = perf[pick].algo;
        *math = perf[pick].mathType;
    }
    ok = ok && CUDNN_OK(cudnnGetConvolutionForwardWorkspaceSize(c->h, c->xd, c->wd, c->cd, c->yd,
                        c->algo, &c->ws_bytes));
    ok = ok && (c->ws_bytes == 0 || cr_cuda_malloc(&c->ws, c->ws_bytes, "cuDNN workspace") == CR_OK);
    c->ready = ok;
}

static void cudnn_free(conv_run *c)
{
    if (c->cd) cudnnDestroyConvolutionDescriptor(c->cd);
    if (c->wd) cudnnDestroyFilterDescriptor(c->wd);
    if (c->xd) cudnnDestroyTensorDescriptor(c->xd);
    if (c->yd) cudnnDestroyTensorDescriptor(c->yd);
    if (c->bd) cudnnDestroyTensorDescriptor(c->bd);
    if (c->h) cudnnDestroy(c->h);
    cr_cuda_free(c->ws);
    c->cd = NULL, c->wd = NULL, c->xd = NULL, c->yd = NULL, c->bd = NULL, c->h = NULL;
    c->ws = NULL, c->ws_bytes = 0;
}

/* cuDNN's name for a math type. */
static const char *cudnn_math_name(cudnnMathType_t m)
{
    return m == CUDNN_FMA_MATH ? "FMA" : m == CUDNN_TENSOR_OP_MATH ? "tensor op"
         : m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ? "tensor op, conversion" : "default";
}

/* y = conv(x, w) + b through cuDNN. */
static cr_status conv_cudnn(void *arg)
{
    conv_run *c = arg;
    const float one = 1.0f, zero = 0.0f;
    cudnnStatus_t s = cudnnConvolutionForward(c->h, &one, c->xd, c->x, c->wd, c->w, c->cd, c->algo,
                                              c->ws, c->ws_bytes, &zero, c->yd, c->y);
    if (s == CUDNN_STATUS_SUCCESS && c->b)
        s = cudnnAddTensor(c->h, &one, c->bd, c->b, &one, c->yd, c->y);
    return s == CUDNN_STATUS_SUCCESS ? CR_OK : cr_fail(CR_EIO, "cuDNN: %s", cudnnGetErrorString(s));
}
#endif

/* Validates (against ref), measures memory and times one convolution variant. */
static int conv_variant(lab_ctx *ctx, conv_run *c, const char *layer, const char *impl,
                        cr_cuda_precision prec, cr_status (*run)(void *), const cr_tensor *ref,
                        cr_tensor *out, double *tflops, double ref_tflops, size_t extra_mem,
                        const char *note)
{
    char what[96];
    snprintf(what, sizeof what, "%s batch %lld %s", layer, (long long)c->s.batch, impl);
    cr_cuda_workspace_release();
    cr_status st = cr_cuda_poison(c->y, c->s.y_numel);
    const size_t before = mem_used();
    if (st == CR_OK) st = run(c);
    if (st == CR_OK) st = cr_cuda_sync(what);
    const size_t after = mem_used();
    if (st == CR_OK) st = cr_cuda_to_host(out->data, c->y, c->s.y_numel * sizeof(float));
    if (st != CR_OK) return lab_report_failure(what, st);
    double rel = 0.0;
    cr_cuda_timing t;
    if (!lab_check(what, out, ref, prec == CR_CUDA_TF32 ? CONV_TOL_TF32 : CONV_TOL, &rel)) return 0;
    if ((st = cr_cuda_time_stats(run, c, 2, ctx->repeats, &t)) != CR_OK)
        return lab_report_failure(what, st);
    const double flops = cr_conv_flops(&c->s);
    *tflops = flops / (t.median_ms * 1e-3) * 1e-12;
    const size_t operands = (c->s.x_numel + c->s.w_numel + c->s.y_numel +
                             (c->b ? (size_t)c->s.p.out_channels : 0)) * sizeof(float);
    return result_row(ctx, "conv", layer, impl, prec, c->s.batch, &t, flops, ref_tflops,
                      "cudnn", operands + extra_mem + (after > before ? after - before : 0), rel,
                      note);
}

#ifdef CR_HAVE_CUDNN
/* cuDNN's row for c at FP32 (tf32 0: FMA math) or TF32 (tensor-op math), its TFLOP/s in
 * *ref_tf (0 when it did not run). A failed peer is reported and fails the run (returns 0),
 * but our paths are still measured after it. */
static int cudnn_variant(lab_ctx *ctx, conv_run *c, const char *layer, int tf32,
                         const cr_tensor *ref, cr_tensor *out, double *ref_tf)
{
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
    cudnn_init(c, tf32, &math);
    char note[64];
    snprintf(note, sizeof note, "Find: %s; %s math", cudnn_algo_name(c->algo),
             cudnn_math_name(math));
    int ok = 1;
    *ref_tf = 0.0;
    if (c->ready && !conv_variant(ctx, c, layer, "cudnn", tf32 ? CR_CUDA_TF32 : CR_CUDA_FP32,
                                  conv_cudnn, ref, out, ref_tf, 0.0, c->ws_bytes, note)) {
        ok = 0;
        *ref_tf = 0.0;
    }
    cudnn_free(c);
    return ok;
}
#endif

/* One standard layer at one batch size: the CPU reference, cuDNN, every GPU path. */
static int run_conv_layer(lab_ctx *ctx, const lab_layer *l, int64_t batch, cr_rng *rng)
{
    lab_conv lc;
    cr_status st = lab_conv_alloc(&lc, &l->p, batch, l->h, l->w, rng);
    if (st != CR_OK) return lab_report_failure(l->name, st);
    cr_tensor ref = {0};
    conv_run c;
    memset(&c, 0, sizeof c);
    c.s = lc.s;
    int ok = 1;
    if ((st = lab_conv_run(&lc, cr_conv2d_fast)) == CR_OK &&
        (st = cr_tensor_alloc(&ref, lc.y.ndim, lc.y.shape)) == CR_OK) {
        memcpy(ref.data, lc.y.data, lc.y.numel * sizeof(float));
        st = cr_cuda_malloc((void **)&c.x, lc.x.numel * sizeof(float), "x");
    }
    if (st == CR_OK) st = cr_cuda_malloc((void **)&c.w, lc.w.numel * sizeof(float), "w");
    if (st == CR_OK && l->p.bias) st = cr_cuda_malloc((void **)&c.b, lc.b.numel * sizeof(float), "b");
    if (st == CR_OK) st = cr_cuda_malloc((void **)&c.y, lc.y.numel * sizeof(float), "y");
    if (st == CR_OK) st = cr_cuda_to_device(c.x, lc.x.data, lc.x.numel * sizeof(float));
    if (st == CR_OK) st = cr_cuda_to_device(c.w, lc.w.data, lc.w.numel * sizeof(float));
    if (st == CR_OK && c.b) st = cr_cuda_to_device(c.b, lc.b.data, lc.b.numel * sizeof(float));
    if (st != CR_OK) ok = lab_report_failure(l->name, st);
    const int operands_ok = ok;
    double ref_tf = 0.0, tf = 0.0;
#ifdef CR_HAVE_CUDNN
    if (ok) ok = cudnn_variant(ctx, &c, l->name, 0, &ref, &lc.y, &ref_tf);
#endif
    int count;
    const cr_cuda_conv_path *paths = cr_cuda_conv_paths(&count);
    for (int i = 0; operands_ok && i < count; i++) {
        c.fn = paths[i].fn;
        char note[48] = "";
        if (strcmp(paths[i].name, "default") == 0)
            snprintf(note, sizeof note, "path %s", cr_cuda_conv2d_path(&c.s));
        ok &= conv_variant(ctx, &c, l->name, paths[i].name, CR_CUDA_FP32, conv_ours, &ref, &lc.y,
                           &tf, ref_tf, 0, note);
    }
    /* TF32: cuDNN with tensor-op math, then our two tensor-core convolutions */
    double ref_tf32 = 0.0;
#ifdef CR_HAVE_CUDNN
    if (operands_ok) ok &= cudnn_variant(ctx, &c, l->name, 1, &ref, &lc.y, &ref_tf32);
#endif
    const struct { const char *name; cr_status (*fn)(const cr_conv_shape *, cr_cuda_precision,
                                                     const float *, const float *, const float *,
                                                     float *); } tcs[] = {
        {"tf32_im2col", cr_cuda_conv2d_tc}, {"tf32_implicit", cr_cuda_conv2d_implicit_tc}};
    cr_cuda_info info;   /* the tensor-core kernels need compute capability 8.0 */
    const int sm80 = cr_cuda_device_info(&info) == CR_OK && info.cc_major >= 8;
    for (int i = 0; operands_ok && sm80 && i < 2; i++) {
        c.tc = tcs[i].fn;
        ok &= conv_variant(ctx, &c, l->name, tcs[i].name, CR_CUDA_TF32, conv_ours_tf32, &ref,
                           &lc.y, &tf, ref_tf32, 0, "");
    }
    cr_cuda_workspace_release();
    cr_cuda_free(c.x); cr_cuda_free(c.w); cr_cuda_free(c.b); cr_cuda_free(c.y);
    cr_tensor_free(&ref);
    lab_conv_free(&lc);
    return ok;
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *sizes_arg = NULL, *only_arg = NULL;
    const cr_arg extra[] = {
        {"sizes", CR_ARG_STRING, &sizes_arg, "LIST",
         "square GEMM sizes, comma-separated (default 1024,2048,4096,8192; quick 1024)", 0, -1},
        {"only", CR_ARG_STRING, &only_arg, "PART", "run one part only: gemm, conv", 0, -1},
    };
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab05-cuda",
                      "Chapter 5: GEMM and convolution on an NVIDIA GPU.\n"
                      "Every GEMM kernel (FP32, TF32, FP16, BF16) against cuBLAS in the same\n"
                      "precision at 1024..8192, then the standard layers at batch 1 and 32\n"
                      "against cuDNN (FP32), with the device memory each variant uses. Needs a\n"
                      "CUDA device; without one it says so and exits 0.",
                      extra, (int)(sizeof extra / sizeof *extra));
    if (rc != LAB_RUN) return rc;
    int64_t sizes[16] = {1024, 2048, 4096, 8192};
    int nsizes = ctx.quick ? 1 : 4;
    if (sizes_arg && (nsizes = lab_parse_sizes(sizes_arg, sizes, 16)) <= 0) {
        fprintf(stderr, "lab05-cuda: --sizes: expected a comma-separated list of sizes "
                "1..16384, e.g. 1024,4096 (got \"%s\")\n", sizes_arg);
        return LAB_EXIT_USAGE;
    }
    if (only_arg && strcmp(only_arg, "gemm") != 0 && strcmp(only_arg, "conv") != 0) {
        fprintf(stderr, "lab05-cuda: --only: expected gemm or conv (got \"%s\")\n", only_arg);
        return LAB_EXIT_USAGE;
    }
    // @snippet lab05_no_gpu
    if (!cr_cuda_available()) {
        printf("lab05-cuda: no CUDA device found (%s); nothing to measure\n",
               cr_cuda_unavailable_reason());
        return LAB_EXIT_OK;   /* not a failure: there is no GPU here to measure */
    }
    // @end lab05_no_gpu
    lab_banner(&ctx, "chapter 5, GEMM and convolution on the GPU");
    cr_cuda_info info;
    cr_status st = cr_cuda_device_info(&info);
    if (st != CR_OK) {
        fprintf(stderr, "lab05-cuda: %s\n", cr_last_error());
        return LAB_EXIT_FAILED;
    }
    char gpu[300], driver[32], runtime[32], cc[16], libs[96];
    snprintf(gpu, sizeof gpu, "%s, %d SMs, %.1f GiB", info.name, info.sm_count,
             (double)info.total_mem / (1 << 30));
    snprintf(driver, sizeof driver, "%d.%d", info.driver_version / 1000,
             info.driver_version % 1000 / 10);
    snprintf(runtime, sizeof runtime, "%d.%d", info.runtime_version / 1000,
             info.runtime_version % 1000 / 10);
    snprintf(cc, sizeof cc, "%d.%d", info.cc_major, info.cc_minor);
    snprintf(libs, sizeof libs, "cuBLAS %s, cuDNN %s",
#ifdef CR_HAVE_CUBLAS
             "yes",
#else
             "not found at build time",
#endif
#ifdef CR_HAVE_CUDNN
             "yes"
#else
             "not found at build time"
#endif
    );
    printf("  GPU %s, compute capability %s, driver (CUDA) %s, runtime %s; %s\n\n", gpu, cc,
           driver, runtime, libs);
    const char *const extra_csv[] = {
        "gpu", gpu, "compute_capability", cc, "cuda_driver", driver, "cuda_runtime", runtime,
        "peers", libs,
        "timing", "CUDA events: median, min, max after 2 warm-up runs; before each run a kernel "
                  "reads twice the L2 size, then a synchronisation",
        "validation", "gemm: 512 sampled entries vs float64; conv: chapter 3 on the CPU",
        NULL};
    if ((st = lab_csv_begin(&ctx, csv_columns, extra_csv)) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    const double t0 = cr_now();
    int ok = 1;
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    printf("%-14s %-10s %-5s %5s %10s %10s %10s %8s %7s %-8s %12s %9s %s\n", "case", "impl", "prec",
           "batch", "ms", "min ms", "max ms", "TFLOP/s", "%ref", "ref", "memory B", "rel err", "note");
    if (!only_arg || strcmp(only_arg, "gemm") == 0)
        for (int i = 0; i < nsizes; i++) ok &= run_gemm_size(&ctx, sizes[i], &rng);
    if (!only_arg || strcmp(only_arg, "conv") == 0) {
        static const char *const quick_layers[] = {"a_3x3_64", "f_3x3_g32"};
        int nl;
        const lab_layer *layers = lab_standard_layers(&nl);
        for (int i = 0; i < nl; i++) {
            if (!lab_layer_selected(&ctx, layers[i].name, quick_layers, LAB_COUNT(quick_layers)))
                continue;
            ok &= run_conv_layer(&ctx, &layers[i], layers[i].n, &rng);
            if (layers[i].n == 1) ok &= run_conv_layer(&ctx, &layers[i], 32, &rng);
        }
    }
    printf("\n%s in %.1f s\n", ok ? "all cases validated" : "VALIDATION FAILED", cr_now() - t0);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
