/* lab07-int8.c — chapter 7's lab, the int8 half: the int8 GEMM and the int8 convolution
 * against our fp32 (chapter 3) and oneDNN's int8, in the same run.
 *
 * (0) Each int8 micro-kernel alone on L1-resident panels: the compute ceiling.
 * (1) GEMM on the standard layers' shapes (M = Cout/groups, N = Ho*Wo, K = Cin/groups*kh*kw,
 *     batch 1): cr_gemm_s8u8s32 with every int8 kernel this CPU runs (full-range u8 input;
 *     the 7-bit kernel on 7-bit input), the bf16 GEMM, chapter 3's cr_sgemm, and oneDNN's
 *     dnnl_gemm_u8s8s32 on the same product (transposed: it takes A unsigned). Each int8
 *     result is checked bit for bit against the int32 loops (on sampled rows) first.
 * (2) The standard layers as int8 convolutions, u8 NCHW in and out, per-channel s8
 *     weights, bias, ReLU fused: cr_int8_conv_run (checked byte for byte against the seven
 *     loops), chapter 3's fp32 cr_conv2d_fast on the same shapes, and oneDNN's int8
 *     convolution (u8 src with zero point, s8 weights, per-channel output scales, u8 dst
 *     with zero point, ReLU post-op; reorders from and to NCHW inside the timed call,
 *     weights reordered once), whose output must be within one step of ours.
 * OP = 2 * multiply-adds; GOP/s for int8, GFLOP/s for fp32 and bf16, in one column.
 * Times are the fastest of the timed runs (the machine may be shared: the minimum is the
 * run least disturbed), every implementation of a case timed back to back in one run.
 * CSV columns: lab,kind,case,impl,threads,ms,gops,vs_fp32,vs_onednn,note.
 *
 * Two commands work on chapter 8's network (smp's FPN + ResNeXt-50 32x4d):
 *   lab07-int8 camvid --data DIR --weights CKPT   the accuracy table at chapter 8's CPU
 *       resolution: fp32 (the weights as they are), bf16 (executed: every convolution
 *       with bf16 weights and patches and fp32 sums, bf16_conv.h: vdpbf16ps where the CPU
 *       has AVX512-BF16), fp16 (executed: fp16 weights and input, chapter 3's fp32
 *       kernel on them widened, fp32 sums), int8 post-training
 *       quantization (min/max calibration on train frames), int8 QAT full and QAT
 *       partial (encoder.conv1 and the segmentation head in float) fine-tuned --epochs N,
 *       each QAT model also converted to a real int8 model (convert.h) and evaluated
 *       with the int8 kernels. Rows: val and test mean IoU, pixel accuracy, model bytes.
 *       CSV columns: lab,kind,config,split,miou,pixel_accuracy,model_bytes,epochs,lr,
 *       seconds,note. Then, in the same run, PyTorch's own table on the same weights,
 *       frames and options (reference/qat_fpn_pytorch.py with /usr/bin/python3 in a
 *       child process: torch.ao.quantization FX, x86 qconfig mappings): rows with the
 *       same columns and config names prefixed pytorch_, the CSV header's "pytorch" line
 *       naming its version and engine; without an importable torch (or with
 *       --no-pytorch) the lab says "PyTorch not run: why" and that line says so too.
 *   lab07-int8 fpn   forward latency of the converted int8 FPN and of the bf16 and fp16
 *       FPNs (bf16_conv.h) against our fp32 FPN (random weights, calibrated on a random
 *       batch) per batch size, chapter 8's latency columns with precision fp32, bf16, fp16
 *       or int8,
 *       plus vs_fp32; --profile prints,
 *       per batch size, where the int8 forward's time goes (per layer kind, per conv
 *       shape, and the u8 <-> float conversions between them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CR_HAVE_DNNL
#include "dnnl_conv.h"   /* includes oneapi/dnnl/dnnl.h */
#endif

#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "augment.h"
#include "bf16_conv.h"
#include "conv_gemm.h"
#include "convert.h"
#include "dataset.h"
#include "dtype.h"
#include "fpn.h"
#include "gemm.h"
#include "int8_conv.h"
#include "int8_gemm.h"
#include "lab_common.h"
#include "metrics.h"
#include "progress.h"
#include "qat.h"
#include "safetensors.h"
#include "train.h"
#include "train8.h"

static const char *const csv_columns[] = {"lab", "kind", "case", "impl", "threads", "ms", "gops",
                                          "vs_fp32", "vs_onednn", "note", NULL};

/* Writes a ratio ("" when the other side was not measured). */
static void ratio_str(char *buf, size_t len, double ours, double other)
{
    if (other > 0 && ours > 0) snprintf(buf, len, "%.2f", ours / other);
    else buf[0] = '\0';
}

/* Prints and records one row. */
static int row(lab_ctx *ctx, const char *kind, const char *cse, const char *impl, int threads,
               double sec, double ops, double fp32, double dnnl, const char *note)
{
    const double g = lab_gflops(ops, sec);
    char v1[16], v2[16];
    ratio_str(v1, sizeof v1, g, fp32);
    ratio_str(v2, sizeof v2, g, dnnl);
    printf("%-16s %-12s %3d %9.3f %8.1f %7s %7s  %s\n", cse, impl, threads, sec * 1e3, g, v1, v2,
           note);
    fflush(stdout);
    return lab_csv_row(ctx, "lab07,%s,%s,%s,%d,%.4f,%.2f,%s,%s,%s", kind, cse, impl, threads,
                       sec * 1e3, g, v1, v2, note) == CR_OK;
}

/* Prints the column titles. */
static void header(const char *first)
{
    printf("%-16s %-12s %3s %9s %8s %7s %7s  %s\n", first, "impl", "thr", "ms", "GOP/s", "/fp32",
           "/onednn", "note");
}

/* ---- (0) the micro-kernels alone --------------------------------------------------------- */

/* What kernel_loop runs: one kernel on L1-resident panels, calls times. */
typedef struct {
    const cr_i8_kernel *kd;
    int64_t kc4;
    const int8_t *A;
    const uint8_t *B;
    int32_t *C;
    int calls;
} kloop;

static int kernel_loop(void *arg)
{
    kloop *k = arg;
    for (int i = 0; i < k->calls; i++) k->kd->kernel(k->kc4, k->A, k->B, k->C, CR_I8_MAX_NR, 0);
    return 0;
}

/* Each int8 micro-kernel on panels of depth 576 that stay in L1: the compute ceiling. */
static int kernel_peaks(lab_ctx *ctx, cr_rng *rng)
{
    static const char *const names[] = {"avx512_vnni", "avx_vnni", "avx2_split", "avx2_7bit"};
    const int64_t kc4 = 144;
    int8_t *A = cr_aligned_alloc((size_t)(kc4 * 4 * CR_I8_MAX_MR));
    uint8_t *B = cr_aligned_alloc((size_t)(kc4 * 4 * CR_I8_MAX_NR));
    int32_t *C = cr_aligned_alloc(CR_I8_MAX_MR * CR_I8_MAX_NR * sizeof(int32_t));
    if (!A || !B || !C) return lab_report_failure("kernels", cr_fail(CR_ENOMEM, "panels"));
    for (int64_t i = 0; i < kc4 * 4 * CR_I8_MAX_MR; i++) A[i] = (int8_t)cr_rng_int(rng, -128, 127);
    for (int64_t i = 0; i < kc4 * 4 * CR_I8_MAX_NR; i++) B[i] = (uint8_t)cr_rng_int(rng, 0, 127);
    int ok = 1;
    for (size_t n = 0; n < sizeof names / sizeof *names; n++) {
        if (!cr_int8_gemm_kernel_supported(names[n])) continue;
        cr_int8_gemm_set_kernel(names[n]);
        kloop k = {cr_int8_gemm_kernel_for(strcmp(names[n], "avx2_7bit") == 0 ? 127 : 255), kc4,
                   A, B, C, 200};
        cr_bench_opts o = cr_bench_defaults();
        o.flush = 0;
        o.repeats = ctx->quick ? 20 : 100;
        cr_bench_result r = cr_bench(kernel_loop, &k, &o, NULL);
        const double ops = 2.0 * k.kd->mr * k.kd->nr * kc4 * 4 * k.calls;
        char note[64];
        snprintf(note, sizeof note, "%d x %d tile; depth 576; panels in L1", k.kd->mr, k.kd->nr);
        ok &= row(ctx, "kernel", "L1", k.kd->name, 1, r.min, ops, 0, 0, note);
    }
    cr_int8_gemm_set_kernel("auto");
    cr_aligned_free(A);
    cr_aligned_free(B);
    cr_aligned_free(C);
    return ok;
}

/* ---- (1) GEMM ---------------------------------------------------------------------------- */

typedef struct {
    int64_t M, N, K;
    int8_t *A;
    uint8_t *B, *B7;     /* full range, and 7-bit */
    int32_t *C;
    float *Af, *Bf, *Cf;
    uint16_t *Ah, *Bh;   /* bf16 */
    uint16_t *Ae, *Be;   /* fp16 */
    const uint8_t *Buse;
} gemm_op;

static cr_status run_i8(void *arg)
{
    gemm_op *g = arg;
    return cr_gemm_s8u8s32(g->M, g->N, g->K, g->A, g->K, g->Buse, g->N, g->C, g->N, 0);
}

static cr_status run_f32(void *arg)
{
    gemm_op *g = arg;
    return cr_sgemm(CR_NO_TRANS, CR_NO_TRANS, g->M, g->N, g->K, 1.0f, g->Af, g->K, g->Bf, g->N,
                    0.0f, g->Cf, g->N);
}

static cr_status run_bf16(void *arg)
{
    gemm_op *g = arg;
    return cr_gemm_bf16(g->M, g->N, g->K, g->Ah, g->K, g->Bh, g->N, g->Cf, g->N, 0);
}

static cr_status run_fp16(void *arg)
{
    gemm_op *g = arg;
    return cr_gemm_fp16(g->M, g->N, g->K, g->Ae, g->K, g->Be, g->N, g->Cf, g->N, 0);
}

#ifdef CR_HAVE_DNNL
static int32_t *dnnl_c;   /* N x M: oneDNN's C' = B^T A^T */
static cr_status run_dnnl_gemm(void *arg)
{
    gemm_op *g = arg;
    const int32_t co = 0;
    dnnl_status_t s = dnnl_gemm_u8s8s32('T', 'T', 'F', g->N, g->M, g->K, 1.0f, g->B, g->N, 0,
                                        g->A, g->K, 0, 0.0f, dnnl_c, g->M, &co);
    return s == dnnl_success ? CR_OK : cr_fail(CR_EINVAL, "dnnl_gemm_u8s8s32: status %d", (int)s);
}
#endif

/* Checks rows of C against the int32 loops (every 7th row and the last). */
static int check_i8_rows(const gemm_op *g, const uint8_t *B, const int32_t *C, int64_t ldc_t,
                         const char *what)
{
    int32_t *ref = malloc((size_t)g->N * sizeof(int32_t));
    if (!ref) return lab_report_failure(what, cr_fail(CR_ENOMEM, "check row"));
    int ok = 1;
    for (int64_t i = 0; ok; i += 7) {
        if (i >= g->M) i = g->M - 1;   /* the last row too */
        cr_gemm_s8u8s32_ref(1, g->N, g->K, g->A + i * g->K, g->K, B, g->N, ref, g->N, 0);
        for (int64_t j = 0; j < g->N; j++) {
            const int32_t got = ldc_t ? C[j * ldc_t + i] : C[i * g->N + j];
            if (got != ref[j]) {
                fprintf(stderr, "%s: FAILED: C[%lld][%lld] = %d, int32 loops %d\n", what,
                        (long long)i, (long long)j, got, ref[j]);
                ok = 0;
                break;
            }
        }
        if (i == g->M - 1) break;
    }
    free(ref);
    return ok;
}

/* One conv-shaped GEMM with every implementation and thread count. */
static int gemm_case(lab_ctx *ctx, const char *name, int64_t M, int64_t N, int64_t K,
                     const int *threads, int nthreads, cr_rng *rng, double budget)
{
    gemm_op g;
    memset(&g, 0, sizeof g);
    g.M = M, g.N = N, g.K = K;
    g.A = cr_aligned_alloc((size_t)(M * K));
    g.B = cr_aligned_alloc((size_t)(K * N));
    g.B7 = cr_aligned_alloc((size_t)(K * N));
    g.C = cr_aligned_alloc((size_t)(M * N) * 4);
    g.Af = cr_aligned_alloc((size_t)(M * K) * 4);
    g.Bf = cr_aligned_alloc((size_t)(K * N) * 4);
    g.Cf = cr_aligned_alloc((size_t)(M * N) * 4);
    g.Ah = cr_aligned_alloc((size_t)(M * K) * 2);
    g.Bh = cr_aligned_alloc((size_t)(K * N) * 2);
    g.Ae = cr_aligned_alloc((size_t)(M * K) * 2);
    g.Be = cr_aligned_alloc((size_t)(K * N) * 2);
    int ok = g.A && g.B && g.B7 && g.C && g.Af && g.Bf && g.Cf && g.Ah && g.Bh && g.Ae && g.Be;
#ifdef CR_HAVE_DNNL
    dnnl_c = cr_aligned_alloc((size_t)(M * N) * 4);
    ok = ok && dnnl_c;
#endif
    if (!ok) return lab_report_failure(name, cr_fail(CR_ENOMEM, "gemm operands"));
    for (int64_t i = 0; i < M * K; i++) {
        g.A[i] = (int8_t)cr_rng_int(rng, -128, 127);
        g.Af[i] = g.A[i] / 128.0f;
        g.Ah[i] = cr_f32_to_bf16(g.Af[i]);
        g.Ae[i] = cr_f32_to_f16(g.Af[i]);
    }
    for (int64_t i = 0; i < K * N; i++) {
        g.B[i] = (uint8_t)cr_rng_int(rng, 0, 255);
        g.B7[i] = g.B[i] >> 1;
        g.Bf[i] = g.B[i] / 255.0f;
        g.Bh[i] = cr_f32_to_bf16(g.Bf[i]);
        g.Be[i] = cr_f32_to_f16(g.Bf[i]);
    }
    const double ops = 2.0 * M * N * K;
    static const char *const kernels[] = {"avx512_vnni", "avx_vnni", "avx2", "avx2_split",
                                          "avx2_7bit", "portable"};
    const char *const before = cr_int8_gemm_kernel_name();
    for (int t = 0; t < nthreads; t++) {
        lab_set_threads(threads[t]);
        cr_bench_result r;
        double fp32 = 0, dnnl = 0;
        char what[96];
        snprintf(what, sizeof what, "%s fp32, %d thread(s)", name, threads[t]);
        cr_status st = lab_time_budget(ctx, run_f32, &g, budget, &r);
        if (st != CR_OK) { ok = lab_report_failure(what, st); break; }
        const double fp32_sec = r.min;
        fp32 = lab_gflops(ops, fp32_sec);
#ifdef CR_HAVE_DNNL
        snprintf(what, sizeof what, "%s onednn, %d thread(s)", name, threads[t]);
        st = run_dnnl_gemm(&g);
        if (st != CR_OK) ok = lab_report_failure(what, st);
        else if (!check_i8_rows(&g, g.B, dnnl_c, M, what)) ok = 0;
        else if (lab_time_budget(ctx, run_dnnl_gemm, &g, budget, &r) == CR_OK) {
            dnnl = lab_gflops(ops, r.min);
            ok &= row(ctx, "gemm", name, "onednn_u8s8", threads[t], r.min, ops, fp32, dnnl,
                      "dnnl_gemm_u8s8s32 (C transposed)");
        }
#endif
        ok &= row(ctx, "gemm", name, "fp32", threads[t], fp32_sec, ops, fp32, dnnl,
                  "chapter 3 cr_sgemm");
        for (size_t k = 0; k < sizeof kernels / sizeof *kernels; k++) {
            if (!cr_int8_gemm_kernel_supported(kernels[k])) continue;
            if (ctx->quick && strcmp(kernels[k], "portable") == 0) continue;
            cr_int8_gemm_set_kernel(kernels[k]);
            const int seven = strcmp(kernels[k], "avx2_7bit") == 0;
            g.Buse = seven ? g.B7 : g.B;
            snprintf(what, sizeof what, "%s int8 %s, %d thread(s)", name, kernels[k], threads[t]);
            if ((st = run_i8(&g)) != CR_OK) { ok = lab_report_failure(what, st); continue; }
            if (!check_i8_rows(&g, g.Buse, g.C, 0, what)) { ok = 0; continue; }
            if (lab_time_budget(ctx, run_i8, &g, budget, &r) != CR_OK) continue;
            ok &= row(ctx, "gemm", name, kernels[k], threads[t], r.min, ops, fp32, dnnl,
                      seven ? "7-bit u8 input (exact only there)" : "full-range u8 input");
        }
        cr_int8_gemm_set_kernel(before);
        if (lab_time_budget(ctx, run_bf16, &g, budget, &r) == CR_OK)
            ok &= row(ctx, "gemm", name, "bf16", threads[t], r.min, ops, fp32, dnnl,
                      cr_gemm_bf16_native() ? "vdpbf16ps; f32 sums" : "portable loop");
        if (lab_time_budget(ctx, run_fp16, &g, budget, &r) == CR_OK) {
            char fp16_what[96];
            snprintf(fp16_what, sizeof fp16_what, "fp16 storage: %s widening; cr_sgemm's %s kernel",
                     cr_fp16_storage_path(), cr_gemm_kernel_name());
            ok &= row(ctx, "gemm", name, "fp16", threads[t], r.min, ops, fp32, dnnl, fp16_what);
        }
    }
    cr_aligned_free(g.A); cr_aligned_free(g.B); cr_aligned_free(g.B7); cr_aligned_free(g.C);
    cr_aligned_free(g.Af); cr_aligned_free(g.Bf); cr_aligned_free(g.Cf);
    cr_aligned_free(g.Ah); cr_aligned_free(g.Bh); cr_aligned_free(g.Ae); cr_aligned_free(g.Be);
#ifdef CR_HAVE_DNNL
    cr_aligned_free(dnnl_c);
#endif
    return ok;
}

/* ---- (2) convolution -------------------------------------------------------------------- */

/* One layer's int8 operands. */
typedef struct {
    cr_int8_conv qc;
    cr_conv_shape s;
    uint8_t *x, *y, *ref;
    float *scales;       /* per channel s_x s_w / s_y, for oneDNN */
} qlayer;

typedef struct {
    const qlayer *q;
} qcall;

static cr_status run_qconv(void *arg)
{
    const qlayer *q = ((qcall *)arg)->q;
    return cr_int8_conv_run(&q->qc, q->s.batch, q->s.h_in, q->s.w_in, q->x, q->y);
}

typedef struct {
    lab_conv *c;
} fcall;

static cr_status run_fconv(void *arg)
{
    return lab_conv_run(((fcall *)arg)->c, cr_conv2d_fast);
}

/* Builds the int8 layer: random u8 input (full range), per-channel s8 weights, bias. */
static cr_status qlayer_init(qlayer *q, const lab_layer *l, cr_rng *rng)
{
    memset(q, 0, sizeof *q);
    cr_status st = cr_conv_shape_init(&q->s, &l->p, l->n, l->h, l->w);
    if (st) return st;
    const int64_t co = l->p.out_channels, K = q->s.cin_g * l->p.kernel_h * l->p.kernel_w;
    double *sc = malloc((size_t)co * sizeof(double));
    int32_t *zp = calloc((size_t)co, sizeof(int32_t));
    float *bias = malloc((size_t)co * sizeof(float));
    q->scales = malloc((size_t)co * sizeof(float));
    q->x = malloc(q->s.x_numel);
    q->y = malloc(q->s.y_numel);
    q->ref = malloc(q->s.y_numel);
    if (!sc || !zp || !bias || !q->scales || !q->x || !q->y || !q->ref) {
        free(sc); free(zp); free(bias);
        return cr_fail(CR_ENOMEM, "int8 layer");
    }
    for (int64_t o = 0; o < co; o++) {
        sc[o] = 0.002 + 0.01 * cr_rng_uniform(rng);
        bias[o] = cr_rng_uniform_f(rng, -0.5f, 0.5f);
    }
    cr_qparams qp = {0};
    cr_qtensor w = {0};
    const int64_t shape[4] = {co, q->s.cin_g, l->p.kernel_h, l->p.kernel_w};
    const double xs = 0.02, ys = xs * 0.006 * 74 * 74 * sqrt((double)K) / 40;
    if (!(st = cr_qparams_per_channel(&qp, CR_DT_I8, 0, co, sc, zp)) &&
        !(st = cr_qtensor_alloc(&w, &qp, 4, shape))) {
        int8_t *wd = cr_dtensor_i8(&w.q);
        for (size_t i = 0; i < w.q.numel; i++) wd[i] = (int8_t)cr_rng_int(rng, -128, 127);
        for (size_t i = 0; i < q->s.x_numel; i++) q->x[i] = (uint8_t)cr_rng_int(rng, 0, 255);
        st = cr_int8_conv_prepare(&q->qc, &l->p, &w, l->p.bias ? bias : NULL, xs, 110, ys, 20, 1);
        for (int64_t o = 0; o < co && !st; o++) q->scales[o] = (float)(xs * sc[o] / ys);
    }
    cr_qtensor_free(&w);
    cr_qparams_free(&qp);
    free(sc); free(zp); free(bias);
    return st;
}

static void qlayer_free(qlayer *q)
{
    cr_int8_conv_free(&q->qc);
    free(q->x); free(q->y); free(q->ref); free(q->scales);
    memset(q, 0, sizeof *q);
}

#ifdef CR_HAVE_DNNL
/* oneDNN's int8 convolution on the same layer (labs/dnnl_conv.c): u8 src (zero point z_x),
 * s8 weights, s32 bias (b_q), per-channel output scales, ReLU, u8 dst (zero point z_y). */
static void dnnl_qconv_init(lab_dnnl_conv *d, const qlayer *q)
{
    memset(d, 0, sizeof *d);
    const cr_conv_params *p = &q->qc.p;
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return;
    const int32_t zs = q->qc.x_zp, zd = q->qc.y_zp;
    dnnl_post_ops_create(&po);
    dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
    const int ok = dnnl_primitive_attr_set_output_scales(attr, p->out_channels, 1 << 1, q->scales) == dnnl_success &&
                   dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &zs) == dnnl_success &&
                   dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_DST, 1, 0, &zd) == dnnl_success &&
                   dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    dnnl_post_ops_destroy(po);
    const lab_dnnl_types u8s8 = {dnnl_u8, dnnl_s8, dnnl_s32, dnnl_u8};
    if (ok) lab_dnnl_conv_init(d, p, &q->s, &u8s8, q->x, q->qc.w, q->qc.bias_q, q->y, attr);
    dnnl_primitive_attr_destroy(attr);
}
#endif

/* One standard layer: int8 (ours, checked against the seven loops), fp32, oneDNN int8. */
static int conv_layer(lab_ctx *ctx, const lab_layer *l, const int *threads, int nthreads,
                      cr_rng *rng, double budget)
{
    qlayer q;
    cr_status st = qlayer_init(&q, l, rng);
    if (st) { qlayer_free(&q); return lab_report_failure(l->name, st); }
    lab_conv fc;
    if ((st = lab_conv_alloc(&fc, &l->p, l->n, l->h, l->w, rng)) != CR_OK) {
        qlayer_free(&q);
        return lab_report_failure(l->name, st);
    }
    int ok = 1;
    const double ops = cr_conv_flops(&q.s);
    if ((st = cr_int8_conv_run_ref(&q.qc, l->n, l->h, l->w, q.x, q.ref)) != CR_OK)
        ok = lab_report_failure(l->name, st);
    size_t distinct = 0;
    int seen[256] = {0};
    for (size_t i = 0; i < q.s.y_numel; i++) distinct += !seen[q.ref[i]]++;
    for (int t = 0; t < nthreads && ok; t++) {
        lab_set_threads(threads[t]);
        char what[96], note[128];
        cr_bench_result r;
        double fp32 = 0, dnnl = 0;
        fcall fcl = {&fc};
        if (lab_time_budget(ctx, run_fconv, &fcl, budget, &r) == CR_OK) {
            fp32 = lab_gflops(ops, r.min);
            snprintf(note, sizeof note, "chapter 3 cr_conv2d_fast (path %s)",
                     cr_conv2d_fast_path(&fc.s));
            ok &= row(ctx, "conv", l->name, "fp32", threads[t], r.min, ops, fp32, 0, note);
        }
#ifdef CR_HAVE_DNNL
        lab_dnnl_conv d;
        dnnl_qconv_init(&d, &q);
        snprintf(what, sizeof what, "%s onednn int8, %d thread(s)", l->name, threads[t]);
        if (d.ok) {
            memset(q.y, 0xA5, q.s.y_numel);
            if ((st = lab_dnnl_conv_run(&d)) != CR_OK) {
                ok = lab_report_failure(what, st);
            } else {
                size_t off1 = 0, worse = 0;
                for (size_t i = 0; i < q.s.y_numel; i++) {
                    const int dd = abs((int)q.y[i] - (int)q.ref[i]);
                    off1 += dd == 1;
                    worse += dd > 1;
                }
                if (worse) {
                    fprintf(stderr, "%s: FAILED: %zu outputs more than one step from ours\n", what, worse);
                    ok = 0;
                } else if (lab_time_budget(ctx, lab_dnnl_conv_run, &d, budget, &r) == CR_OK) {
                    dnnl = lab_gflops(ops, r.min);
                    snprintf(note, sizeof note, "%s; %zu of %zu outputs 1 step off ours", d.impl,
                             off1, q.s.y_numel);
                    ok &= row(ctx, "conv", l->name, "onednn_int8", threads[t], r.min, ops, fp32,
                              dnnl, note);
                }
            }
        } else {
            printf("%-16s %-12s %3d  (oneDNN could not build this int8 convolution)\n", l->name,
                   "onednn_int8", threads[t]);
        }
        lab_dnnl_conv_free(&d);
#endif
        snprintf(what, sizeof what, "%s int8, %d thread(s)", l->name, threads[t]);
        memset(q.y, 0xA5, q.s.y_numel);
        qcall qcl = {&q};
        if ((st = run_qconv(&qcl)) != CR_OK) { ok = lab_report_failure(what, st); break; }
        if (memcmp(q.y, q.ref, q.s.y_numel) != 0) {
            fprintf(stderr, "%s: FAILED: differs from the seven loops\n", what);
            ok = 0;
            break;
        }
        if (lab_time_budget(ctx, run_qconv, &qcl, budget, &r) == CR_OK) {
            snprintf(note, sizeof note, "kernel %s (%s); equals the seven loops; %zu distinct "
                     "outputs", cr_int8_gemm_kernel_for(255)->name,
                     cr_int8_conv_path(&q.qc, l->n, l->h, l->w), distinct);
            ok &= row(ctx, "conv", l->name, "int8", threads[t], r.min, ops, fp32, dnnl, note);
        }
    }
    lab_set_threads(ctx->threads);
    lab_conv_free(&fc);
    qlayer_free(&q);
    return ok;
}

/* ---- chapter 8's network: options shared by camvid and fpn ----------------------------- */

static const char *data_dir, *weights_path, *eval_size_str = "192x256", *configs_str,
                  *limit_str, *batches_str = "1,8", *size_str = "384x480",
                  *fpn_precisions = "bf16,fp16,int8";
static int crop = 192, factor = 2, batch_size = 8, epochs = 1, calib_frames = 32,
           classes = CR_CAMVID_CLASSES, train_seed = 1, freeze_bn_epoch = 0, fpn_profile = 0,
           no_pytorch = 0;
static double qat_lr = 1e-4;

/* The network: the full ResNeXt-50 FPN, or (reduced) lab 8's --quick variant. */
static cr_status build_fpn_net(cr_model *m, int reduced)
{
    cr_fpn_config c = cr_fpn_config_resnext50(classes);
    if (reduced) {
        const cr_fpn_config r = {.classes = classes, .stem = 8, .planes = {4, 8, 16, 32},
                                 .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                                 .pyramid = 16, .segmentation = 32, .dropout = 0.2};
        c = r;
    }
    cr_model_init(m);
    return cr_fpn_build(m, &c);
}

/* ---- camvid: the accuracy table -------------------------------------------------------- */

static const cr_arg camvid_args[] = {
    {"data", CR_ARG_STRING, &data_dir, "DIR", "CamVid in SegNet's layout (train/, trainannot/, ...)", 0, -1},
    {"weights", CR_ARG_STRING, &weights_path, "CKPT", "the fp32 FPN: a state dict or chapter 4 checkpoint (--quick: random reduced network)", 0, -1},
    {"epochs", CR_ARG_INT, &epochs, "N", "QAT fine-tuning epochs (1)", 0, 1000},
    {"lr", CR_ARG_DOUBLE, &qat_lr, "X", "QAT AdamW peak learning rate: no warm-up, cosine over the epochs (1e-4)", 0, -1},
    {"freeze-bn-epoch", CR_ARG_INT, &freeze_bn_epoch, "E", "BatchNorm statistics frozen from epoch E on (0: from the start)", 0, 1000},
    {"calib", CR_ARG_INT, &calib_frames, "N", "train frames for PTQ calibration (32)", 1, 100000},
    {"configs", CR_ARG_STRING, &configs_str, "LIST", "comma list of fp32,bf16 (executed),fp16 (executed),ptq,ptq_converted,qat_full,qat_partial,converted (QAT's converted models) (all)", 0, -1},
    {"crop", CR_ARG_INT, &crop, "S", "QAT training crop side, a multiple of 32 (192)", 32, 4096},
    {"eval-size", CR_ARG_STRING, &eval_size_str, "HxW", "evaluation size, multiples of 32 (192x256)", 0, -1},
    {"factor", CR_ARG_INT, &factor, "N", "frames reduced by N (2: 480x360 -> 240x180)", 1, 8},
    {"batch", CR_ARG_INT, &batch_size, "N", "frames per QAT step and per evaluation batch (8)", 1, 256},
    {"limit", CR_ARG_STRING, &limit_str, "T[,E]", "load only the first T train and E val/test frames", 0, -1},
    {"seed", CR_ARG_INT, &train_seed, "N", "QAT order and augmentation seed (1)", 0, 2147483647},
    {"no-pytorch", CR_ARG_FLAG, &no_pytorch, NULL, "skip PyTorch's table (reference/qat_fpn_pytorch.py, run by default when /usr/bin/python3 imports torch)", 0, -1},
};

static const char *const camvid_columns[] = {"lab", "kind", "config", "split", "miou",
                                             "pixel_accuracy", "model_bytes", "epochs", "lr",
                                             "seconds", "note", NULL};

typedef struct {
    lab_ctx *ctx;
    cr_frames train, val, test, calib;   /* calib: a view of the first train frames */
    cr_model m;
    cr_st_file *weights;                 /* NULL: random (reduced) network */
    int64_t eh, ew;
    int64_t fp32_bytes;
    long long lim[2];                    /* --limit as applied (0: every frame) */
    double fp32_miou[2];                 /* ours, val and test (NAN: not run) */
} camvid_run;

/* True if config name is in --configs (or no list was given). */
static int wanted(const char *name)
{
    if (!configs_str) return 1;
    const size_t n = strlen(name);
    for (const char *p = configs_str; (p = strstr(p, name)); p += n)
        if ((p == configs_str || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
    return 0;
}

/* Puts the fp32 weights back into the model (from the file, or the seed). */
static cr_status reset_weights(camvid_run *r)
{
    if (!r->weights) return cr_model_init_params(&r->m, (uint64_t)train_seed);
    return cr_model_load_st(&r->m, r->weights, weights_path, "optimizer.");
}

/* Evaluates the model (fake-quantized or not) on a split into conf. */
static cr_status eval_model(camvid_run *r, const cr_frames *fr, cr_confusion *conf)
{
    cr_confusion_reset(conf);
    return cr_fpn_evaluate(&r->m, fr, r->eh, r->ew, batch_size, CR_CAMVID_IGNORE, NULL, conf);
}

/* Evaluates the converted int8 model on a split into conf. */
static cr_status eval_int8(camvid_run *r, cr_int8_model *im, const cr_frames *fr,
                           cr_confusion *conf)
{
    cr_confusion_reset(conf);
    const int64_t B = batch_size < fr->count ? batch_size : fr->count;
    cr_tensor x = {0};
    int32_t *lab = malloc((size_t)(B * r->eh * r->ew) * sizeof *lab);
    int64_t *idx = malloc((size_t)B * sizeof *idx);
    cr_status s = lab && idx ? CR_OK : cr_fail(CR_ENOMEM, "eval_int8: out of memory");
    for (int64_t b0 = 0; !s && b0 < fr->count; b0 += B) {
        const int64_t nb = fr->count - b0 < B ? fr->count - b0 : B;
        for (int64_t i = 0; i < nb; i++) idx[i] = b0 + i;
        if (!x.data || x.shape[0] != nb) {
            cr_tensor_free(&x);
            if ((s = cr_tensor_alloc4(&x, nb, 3, r->eh, r->ew))) break;
        }
        const cr_tensor *y;
        if ((s = cr_frames_eval_batch(fr, idx, nb, &x, lab)) || (s = cr_int8_forward(im, &x, &y)))
            break;
        s = cr_confusion_add_logits(conf, y, lab, CR_CAMVID_IGNORE);
    }
    cr_tensor_free(&x);
    free(lab);
    free(idx);
    return s;
}

/* Prints and records one configuration's val and test rows. */
typedef cr_status (*split_eval_fn)(camvid_run *r, const cr_frames *fr, cr_confusion *conf,
                                   void *arg);

static cr_status report(camvid_run *r, const char *config, split_eval_fn fn, void *arg,
                        int64_t bytes, int ep, double lr, double t0, const char *note)
{
    cr_confusion conf = {0};
    cr_status s = cr_confusion_init(&conf, classes);
    const cr_frames *sp[2] = {&r->val, &r->test};
    const char *names[2] = {"val", "test"};
    double miou[2] = {NAN, NAN};
    for (int i = 0; i < 2 && !s; i++) {
        if ((s = fn(r, sp[i], &conf, arg))) break;
        miou[i] = cr_confusion_iou(&conf, NULL);
        if (strcmp(config, "fp32") == 0) r->fp32_miou[i] = miou[i];
        const double secs = cr_now() - t0;
        lab_csv_row(r->ctx, "lab07,accuracy,%s,%s,%.4f,%.4f,%lld,%d,%g,%.1f,%s", config, names[i],
                    miou[i], cr_confusion_pixel_accuracy(&conf), (long long)bytes, ep, lr, secs,
                    note);
    }
    if (!s)
        printf("  %-22s %8.4f %8.4f %12lld %7.2f  %6.0f s  %s\n", config, miou[0], miou[1],
               (long long)bytes, (double)r->fp32_bytes / (double)bytes, cr_now() - t0, note);
    fflush(stdout);
    cr_confusion_free(&conf);
    return s;
}

/* split_eval_fn of the (fake-quantized or float) model, and of the converted model arg. */
static cr_status eval_fn(camvid_run *r, const cr_frames *fr, cr_confusion *conf, void *arg)
{
    (void)arg;
    return eval_model(r, fr, conf);
}

static cr_status eval_int8_fn(camvid_run *r, const cr_frames *fr, cr_confusion *conf, void *arg)
{
    return eval_int8(r, arg, fr, conf);
}

/* Bytes of the bf16 (or fp16) model: convolution weights 2 bytes, everything else 4. */
static int64_t bf16_bytes(const cr_model *m)
{
    int64_t b = 0;
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        if (d->weight.data) b += (d->kind == CR_MOD_CONV ? 2 : 4) * (int64_t)d->weight.numel;
        if (d->bias.data) b += 4 * (int64_t)d->bias.numel;
    }
    return b;
}

typedef struct {
    cr_progress *prog;
    int epoch;
} qat_step_ctx;

static void on_qat_step(void *arg, const cr_step_info *info)
{
    qat_step_ctx *c = arg;
    char what[80];
    snprintf(what, sizeof what, "QAT epoch %d loss %.4f, %.2f s/step", info->epoch, info->loss,
             info->ms / 1e3);
    cr_progress_step(c->prog, what);
}

/* PTQ: min/max calibration on the calib frames with the float model (observers on, fake
 * quantization off), then evaluation with fake quantization. */
static cr_status run_ptq(camvid_run *r)
{
    const double t0 = cr_now();
    cr_qat q;
    cr_status s = reset_weights(r);
    if (s || (s = cr_qat_prepare(&q, &r->m, NULL))) return s;
    cr_qat_observe_minmax(&q, true);
    cr_qat_enable(&q, true, false);
    s = cr_fpn_evaluate(&r->m, &r->calib, r->eh, r->ew, batch_size, CR_CAMVID_IGNORE, NULL, NULL);
    cr_qat_enable(&q, false, true);
    cr_int8_model im = {0};
    if (!s) s = cr_int8_convert(&im, &q);
    char note[160];
    snprintf(note, sizeof note, "min/max calibration on %lld train frames; fake-quantized "
             "evaluation", (long long)r->calib.count);
    if (!s) s = report(r, "int8_ptq", eval_fn, NULL, cr_int8_model_bytes(&im), 0, 0, t0, note);
    if (!s && wanted("ptq_converted")) {
        snprintf(note, sizeof note, "PTQ converted: real int8 kernels (convert.h)");
        s = report(r, "int8_ptq_converted", eval_int8_fn, &im, cr_int8_model_bytes(&im), 0, 0,
                   cr_now(), note);
    }
    cr_int8_model_free(&im);
    cr_qat_free(&q);
    return s;
}

/* QAT from the fp32 weights: --epochs of fine-tuning with fake quantization (x86 QAT
 * observers), then evaluation with the observers off; the converted model too. */
static cr_status run_qat(camvid_run *r, const char *config, const char *const *keep)
{
    const double t0 = cr_now();
    cr_qat q;
    cr_trainer t = {0};
    cr_augment aug;
    cr_status s = reset_weights(r);
    if (s || (s = cr_qat_prepare(&q, &r->m, keep))) return s;
    cr_augment_default(&aug, r->ctx->quick ? 64 : crop);
    cr_train_config c = cr_train_config_default();
    c.lr = qat_lr;
    c.weight_decay = 1e-4;
    c.batch = batch_size < r->train.count ? batch_size : r->train.count;
    c.epochs = epochs > 0 ? epochs : 1;
    c.warmup_epochs = 0;
    c.seed = (uint64_t)train_seed;
    c.flips = false;
    c.ignore_index = CR_CAMVID_IGNORE;
    if (epochs > 0) s = cr_trainer_init(&t, &r->m, &c, r->train.count, aug.crop, aug.crop);
    cr_progress prog;
    cr_progress_begin(&prog, "QAT steps", epochs > 0 ? (long)(epochs * t.steps_per_epoch) : 0);
    qat_step_ctx sc = {&prog, 0};
    for (int e = 0; !s && e < epochs; e++) {
        cr_qat_enable(&q, true, true);
        cr_qat_freeze_bn(&q, e >= freeze_bn_epoch);
        double loss = NAN;
        const double te = cr_now();
        s = cr_fpn_train_epoch(&t, &r->train, &aug, on_qat_step, &sc, &loss);
        if (!s) {
            if (prog.tty) fputs("\r\033[K", stderr);
            printf("  %s epoch %d: train loss %.4f, %.0f s\n", config, e + 1, loss, cr_now() - te);
            lab_csv_row(r->ctx, "lab07,qat_epoch,%s,train,,,,%d,%g,%.1f,mean training loss %.4f",
                        config, e + 1, t.lr, cr_now() - te, loss);
        }
    }
    cr_progress_end(&prog);
    cr_qat_enable(&q, epochs == 0, true);   /* no training: observe in the first evaluation */
    if (!s && epochs == 0)
        s = cr_fpn_evaluate(&r->m, &r->calib, r->eh, r->ew, batch_size, CR_CAMVID_IGNORE, NULL, NULL);
    cr_qat_enable(&q, false, true);
    cr_int8_model im = {0};
    if (!s) s = cr_int8_convert(&im, &q);
    char note[200], name[64];
    int convs = 0, folded = 0, acts = 0;
    cr_qat_counts(&q, &convs, &folded, &acts);
    snprintf(note, sizeof note, "%d int8 convs (%d BatchNorms folded); %d activation quantizers; "
             "AdamW lr %g cosine; BN frozen from epoch %d; fake-quantized evaluation", convs,
             folded, acts, qat_lr, freeze_bn_epoch);
    if (!s) s = report(r, config, eval_fn, NULL, cr_int8_model_bytes(&im), epochs, qat_lr, t0, note);
    if (!s && wanted("converted")) {
        snprintf(name, sizeof name, "%s_converted", config);
        snprintf(note, sizeof note, "the same weights converted: real int8 kernels (convert.h); "
                 "%d weight channels by the symmetric rule", im.weight_fallbacks);
        s = report(r, name, eval_int8_fn, &im, cr_int8_model_bytes(&im), epochs, qat_lr, cr_now(),
                   note);
    }
    cr_int8_model_free(&im);
    cr_trainer_free(&t);
    cr_qat_free(&q);
    return s;
}

/* ---- camvid: PyTorch's own table, in the same run ------------------------------------- */

#ifndef CR_QAT_SCRIPT
#define CR_QAT_SCRIPT "reference/qat_fpn_pytorch.py"
#endif

/* PyTorch's side (reference/qat_fpn_pytorch.py): whether it runs, and the CSV header's
 * "pytorch" line (its version and engine, or "not run: why"). */
typedef struct {
    int ok;
    const char *script;
    char line[320];
} pytorch_probe;

/* The last non-empty line of text (in place: the newline cut). */
static const char *last_line(char *text)
{
    char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == ' ')) *--end = '\0';
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

/* Finds the script and asks /usr/bin/python3 for its version and engine line (--probe),
 * filling pt; pt->ok = 0 with the reason when PyTorch cannot run here. */
static void probe_pytorch(pytorch_probe *pt)
{
    struct stat sb;
    pt->ok = 0;
    pt->script = CR_QAT_SCRIPT;
    if (stat(pt->script, &sb) != 0) pt->script = "reference/qat_fpn_pytorch.py";
    if (no_pytorch) {
        snprintf(pt->line, sizeof pt->line, "not run: --no-pytorch");
        return;
    }
    if (!wanted("fp32") && !wanted("ptq") && !wanted("qat_full") && !wanted("qat_partial")) {
        snprintf(pt->line, sizeof pt->line, "not run: --configs names none of fp32, ptq, "
                 "qat_full, qat_partial");
        return;
    }
    if (strchr(pt->script, '\'') || stat(pt->script, &sb) != 0) {
        snprintf(pt->line, sizeof pt->line, "not run: reference/qat_fpn_pytorch.py not found");
        return;
    }
    if ((data_dir && strchr(data_dir, '\'')) || (weights_path && strchr(weights_path, '\''))) {
        snprintf(pt->line, sizeof pt->line, "not run: --data or --weights has a quote (')");
        return;
    }
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --probe 2>&1", pt->script);
    FILE *pp = popen(cmd, "r");
    size_t n = pp ? fread(out, 1, sizeof out - 1, pp) : 0;
    out[n] = '\0';
    const int st = pp ? pclose(pp) : -1;
    const char *last = last_line(out);
    if (st != 0 || !*last) {
        snprintf(pt->line, sizeof pt->line, "not run: /usr/bin/python3 cannot run the script "
                 "(%.200s)", *last ? last : "no output");
        return;
    }
    pt->ok = 1;
    snprintf(pt->line, sizeof pt->line, "%.300s", last);
}

/* Writes the command line that runs the script on the lab's own options into cmd;
 * weights: the fp32 weights file (ours, or the quick run's saved random network). */
static void pytorch_command(const camvid_run *r, const pytorch_probe *pt, const char *weights,
                            char *cmd, size_t len)
{
    char configs[80] = "", limit[64] = "";
    static const char *const names[] = {"fp32", "ptq", "qat_full", "qat_partial", "converted"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (wanted(names[i]))
            snprintf(configs + strlen(configs), sizeof configs - strlen(configs), "%s%s",
                     configs[0] ? "," : "", names[i]);
    if (r->lim[0] > 0)
        snprintf(limit, sizeof limit, " --limit %lld,%lld", r->lim[0],
                 r->lim[1] > 0 ? r->lim[1] : 0);
    const int64_t b = batch_size < r->train.count ? batch_size : r->train.count;
    snprintf(cmd, len, "OMP_NUM_THREADS=%d /usr/bin/python3 '%s' --data '%s' --weights '%s'%s "
             "--classes %d --factor %d --eval-size %lldx%lld --crop %d --batch %lld --epochs %d "
             "--lr %.17g --freeze-bn-epoch %d --calib %lld%s --seed %d --threads %d --configs %s "
             "2>&1", r->ctx->threads, pt->script, data_dir, weights, r->ctx->quick ? " --quick" : "",
             classes, factor, (long long)r->eh, (long long)r->ew, r->ctx->quick ? 64 : crop,
             (long long)b, epochs, qat_lr, freeze_bn_epoch, (long long)r->calib.count, limit,
             train_seed, r->ctx->threads, configs);
}

/* One row of the script's (lab,kind,config,split,miou,pixel_accuracy,model_bytes,...):
 * printed as a table line, the fp32 rows with their difference from ours; 1 if it is a
 * row (config pytorch_*, 11 fields), 0 otherwise. */
static int pytorch_row(const camvid_run *r, const char *line)
{
    char kind[32], config[64], split[16], miou_s[32], acc_s[32], bytes_s[32];
    if (sscanf(line, "lab07,%31[^,],%63[^,],%15[^,],%31[^,],%31[^,],%31[^,],", kind, config,
               split, miou_s, acc_s, bytes_s) != 6 && strncmp(line, "lab07,qat_epoch,", 16) != 0)
        return 0;
    int commas = 0;
    for (const char *c = line; *c; c++) commas += *c == ',';
    if (commas != 10 || !strstr(line, ",pytorch_")) return 0;
    if (strncmp(line, "lab07,accuracy,", 15) != 0) return 1;
    const double miou = atof(miou_s), acc = atof(acc_s);
    const long long bytes = atoll(bytes_s);
    printf("  %-32s %-5s %8.4f %8.4f %12lld", config, split, miou, acc, bytes);
    const int i = strcmp(split, "val") == 0 ? 0 : strcmp(split, "test") == 0 ? 1 : -1;
    if (strcmp(config, "pytorch_fp32") == 0 && i >= 0 && !isnan(r->fp32_miou[i]))
        printf("  (PyTorch - ours: %+.4f)", miou - r->fp32_miou[i]);
    printf("\n");
    fflush(stdout);
    return 1;
}

/* Runs PyTorch's table on the lab's options and appends its rows to the CSV (a failed or
 * interrupted script: the rows it finished, a "# pytorch_status" line and a message). */
static void run_pytorch(camvid_run *r, const pytorch_probe *pt)
{
    printf("\n  PyTorch (%s):\n", pt->script);
    if (!pt->ok) {
        printf("  PyTorch %s\n", pt->line);
        return;
    }
    char weights[4096];
    int saved = 0;
    if (weights_path) snprintf(weights, sizeof weights, "%s", weights_path);
    else {   /* --quick: the same random reduced network, through a file */
        const char *tmp = getenv("TMPDIR");
        snprintf(weights, sizeof weights, "%s/lab07_fpn_XXXXXX",
                 tmp && *tmp && !strchr(tmp, '\'') ? tmp : "/tmp");
        const int fd = mkstemp(weights);
        cr_status s = fd >= 0 ? CR_OK : cr_fail(CR_EIO, "mkstemp %s failed", weights);
        if (fd >= 0) close(fd);
        if (!s) s = reset_weights(r);
        if (!s) s = cr_model_save(&r->m, weights, NULL);
        if (s) {
            printf("  PyTorch not run: the quick network could not be saved (%s)\n", cr_last_error());
            if (fd >= 0) remove(weights);
            return;
        }
        saved = 1;
    }
    char cmd[8192], line[1024];
    pytorch_command(r, pt, weights, cmd, sizeof cmd);
    FILE *pp = popen(cmd, "r");
    int rows = 0;
    while (pp && fgets(line, sizeof line, pp)) {
        line[strcspn(line, "\n")] = '\0';
        if (pytorch_row(r, line)) {
            if (lab_csv_row(r->ctx, "%s", line) == CR_OK) rows++;
        } else if (line[0]) {
            printf("  %s\n", line[0] == ' ' ? line + 2 : line);
        }
    }
    const int st = pp ? pclose(pp) : -1;
    if (saved) remove(weights);
    if (st != 0) {
        printf("  PyTorch: the script failed (status %d) after %d rows; they are kept\n", st, rows);
        char what[96];
        snprintf(what, sizeof what, "the script failed (status %d) after %d rows", st, rows);
        lab_csv_comment(r->ctx, "pytorch_status", what);
    }
}

/* Checks the options, loads the splits and the weights; a lab exit code (LAB_RUN: go on). */
static int camvid_prepare(lab_ctx *ctx, camvid_run *r)
{
    const char *p = ctx->program;
    if (!data_dir) {
        fprintf(stderr, "%s: --data DIR is required. %s\n", p, cr_camvid_howto());
        return LAB_EXIT_USAGE;
    }
    if (!weights_path && !ctx->quick) {
        fprintf(stderr, "%s: --weights CKPT is required (the fp32 FPN; --quick runs a random "
                "reduced network instead)\n", p);
        return LAB_EXIT_USAGE;
    }
    if (weights_path && ctx->quick) {
        fprintf(stderr, "%s: --weights with --quick: --quick runs the reduced network, which "
                "a full checkpoint does not fit\n", p);
        return LAB_EXIT_USAGE;
    }
    if (crop % 32) {
        fprintf(stderr, "%s: --crop: expected a multiple of 32, got %d\n", p, crop);
        return LAB_EXIT_USAGE;
    }
    if (!(qat_lr > 0) || !isfinite(qat_lr)) {
        fprintf(stderr, "%s: --lr: expected a finite number > 0, got %g\n", p, qat_lr);
        return LAB_EXIT_USAGE;
    }
    static const char *const known[] = {"fp32", "bf16", "fp16", "ptq", "qat_full", "qat_partial",
                                        "converted", "ptq_converted"};
    for (const char *q = configs_str; q && *q;) {
        const size_t n = strcspn(q, ",");
        int ok = 0;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            ok |= strlen(known[k]) == n && strncmp(q, known[k], n) == 0;
        if (!ok) {
            fprintf(stderr, "%s: --configs: unknown '%.*s' (expected fp32, bf16, fp16, ptq, qat_full, "
                    "qat_partial, converted, ptq_converted)\n", p, (int)n, q);
            return LAB_EXIT_USAGE;
        }
        q += n + (q[n] == ',');
    }
    if (!lab_parse_fpn_size(p, "eval-size", eval_size_str, &r->eh, &r->ew)) return LAB_EXIT_USAGE;
    long long lim[2] = {0, 0};
    if (limit_str) {
        char tail;
        const int n = sscanf(limit_str, "%lld,%lld%c", &lim[0], &lim[1], &tail);
        if (n < 1 || n > 2 || lim[0] < 1 || (n == 2 && lim[1] < 1)) {
            fprintf(stderr, "%s: --limit: expected T or T,E (frames, >= 1), got '%s'\n", p, limit_str);
            return LAB_EXIT_USAGE;
        }
    }
    if (ctx->quick) {
        lim[0] = lim[0] ? lim[0] : 8;
        lim[1] = lim[1] ? lim[1] : 4;
        if (strcmp(eval_size_str, "192x256") == 0) r->eh = 64, r->ew = 96;
        if (calib_frames > 4) calib_frames = 4;
        batch_size = batch_size > 4 ? 4 : batch_size;
    }
    const char *splits[3] = {"train", "val", "test"};
    cr_frames *fr[3] = {&r->train, &r->val, &r->test};
    for (int i = 0; i < 3; i++) {
        cr_status s = cr_camvid_load_frames(data_dir, splits[i], factor, i ? lim[1] : lim[0], fr[i]);
        if (s) {
            fprintf(stderr, "%s: %s\n", p, cr_last_error());
            return s == CR_EIO ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
        }
    }
    r->lim[0] = lim[0];
    r->lim[1] = lim[1];
    r->calib = r->train;   /* a view: the first frames */
    if (r->calib.count > calib_frames) r->calib.count = calib_frames;
    cr_status s = build_fpn_net(&r->m, ctx->quick);
    if (!s && weights_path) s = cr_st_load(&r->weights, weights_path);
    if (!s) s = reset_weights(r);
    if (s) {
        fprintf(stderr, "%s: %s\n", p, cr_last_error());
        return LAB_EXIT_USAGE;
    }
    r->fp32_bytes = 4 * cr_model_num_scalars(&r->m);
    return LAB_RUN;
}

static void camvid_free(camvid_run *r)
{
    cr_model_free(&r->m);
    cr_st_free(r->weights);
    cr_frames_free(&r->train);
    cr_frames_free(&r->val);
    cr_frames_free(&r->test);
}

static int cmd_camvid(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab07-int8 camvid",
                      "Chapter 7: CamVid mean IoU of chapter 8's FPN in fp32, bf16 (executed), fp16 (executed), "
                      "int8 PTQ, int8 QAT full and partial, and the converted int8 models.",
                      camvid_args, LAB_COUNT(camvid_args));
    if (rc != LAB_RUN) return rc;
    camvid_run r;
    memset(&r, 0, sizeof r);
    r.ctx = &ctx;
    r.fp32_miou[0] = r.fp32_miou[1] = NAN;
    if ((rc = camvid_prepare(&ctx, &r)) != LAB_RUN) {
        camvid_free(&r);
        return rc;
    }
    lab_banner(&ctx, "chapter 7, int8 on chapter 8's FPN: CamVid accuracy");
    pytorch_probe pt;
    probe_pytorch(&pt);
    char setup[400];
    snprintf(setup, sizeof setup, "%s; %lld train %lld val %lld test frames (1/%d); eval %lldx%lld; "
             "QAT crop %d batch %d epochs %d lr %g seed %d; calibration %lld frames",
             weights_path ? weights_path : "random reduced network (--quick)",
             (long long)r.train.count, (long long)r.val.count, (long long)r.test.count, factor,
             (long long)r.eh, (long long)r.ew, ctx.quick ? 64 : crop, batch_size, epochs, qat_lr,
             train_seed, (long long)r.calib.count);
    const char *const extra[] = {"setup", setup, "model_bytes", "fp32 and bf16: parameters "
                                 "(running statistics not counted); int8: 1 byte per quantized "
                                 "weight + 4 (scale) + 4 (s32 bias) per channel, BatchNorm folded, "
                                 "float layers 4 bytes, 8 per activation quantizer; pytorch_ rows: "
                                 "torch.save bytes of the state dict", "pytorch", pt.line, NULL};
    if (lab_csv_begin(&ctx, camvid_columns, extra) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        camvid_free(&r);
        return LAB_EXIT_FAILED;
    }
    printf("  %s\n\n  %-22s %8s %8s %12s %7s  %8s\n", setup, "config", "val mIoU", "test", "bytes",
           "fp32/x", "seconds");
    cr_status s = CR_OK;
    double t0 = cr_now();
    if (wanted("fp32"))
        s = report(&r, "fp32", eval_fn, NULL, r.fp32_bytes, 0, 0, t0, "the weights as they are");
    if (!s && wanted("bf16")) {
        t0 = cr_now();
        cr_bf16_model bm;
        s = cr_bf16_model_attach(&bm, &r.m);
        if (!s)
            s = report(&r, "bf16", eval_fn, NULL, bf16_bytes(&r.m), 0, 0, t0,
                       cr_gemm_bf16_native() ? "executed: vdpbf16ps; fp32 sums"
                                             : "executed: portable loop; fp32 sums");
        cr_bf16_model_detach(&bm);
    }
    if (!s && wanted("fp16")) {
        t0 = cr_now();
        cr_bf16_model bm;
        char fp16_note[120];
        snprintf(fp16_note, sizeof fp16_note, "executed: fp16 storage; %s conversions; chapter "
                 "3's %s kernel; fp32 sums", cr_fp16_storage_path(), cr_gemm_kernel_name());
        s = cr_half_model_attach(&bm, &r.m, CR_HALF_FP16);
        if (!s) s = report(&r, "fp16", eval_fn, NULL, bf16_bytes(&r.m), 0, 0, t0, fp16_note);
        cr_bf16_model_detach(&bm);
    }
    if (!s && wanted("ptq")) s = run_ptq(&r);
    if (!s && wanted("qat_full")) s = run_qat(&r, "int8_qat_full", NULL);
    if (!s && wanted("qat_partial")) s = run_qat(&r, "int8_qat_partial", cr_qat_partial_float);
    if (!s) run_pytorch(&r, &pt);
    if (s) fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
    camvid_free(&r);
    return lab_finish(&ctx, s ? LAB_EXIT_FAILED : LAB_EXIT_OK);
}

/* ---- fpn: int8 against fp32 latency ----------------------------------------------------- */

static const cr_arg fpn_args[] = {
    {"batches", CR_ARG_STRING, &batches_str, "LIST", "batch sizes (1,8)", 0, -1},
    {"size", CR_ARG_STRING, &size_str, "HxW", "input size, multiples of 32 (384x480)", 0, -1},
    {"classes", CR_ARG_INT, &classes, "N", "output classes (11)", 2, 256},
    {"profile", CR_ARG_FLAG, &fpn_profile, NULL, "then time the int8 forward per layer kind "
     "and per conv shape (untimed runs of their own)", 0, -1},
    {"precisions", CR_ARG_STRING, &fpn_precisions, "LIST", "comma list of bf16, fp16, int8 "
     "(bf16,fp16,int8); fp32, the baseline, always runs", 0, -1},
};

/* The precisions lab07-int8 fpn times after fp32, in table order. */
static const char *const fpn_known[] = {"bf16", "fp16", "int8"};

/* Parses --precisions into want[0..2] (bf16, fp16, int8); 0 with a message on a name it
 * does not know or an empty list. */
static int parse_fpn_precisions(const char *program, const char *list, int want[3])
{
    want[0] = want[1] = want[2] = 0;
    const char *p = list;
    while (*p) {
        const size_t len = strcspn(p, ",");
        int k = -1;
        for (int i = 0; i < 3; i++)
            if (len == strlen(fpn_known[i]) && strncmp(p, fpn_known[i], len) == 0) k = i;
        if (k < 0 && !(len == 4 && strncmp(p, "fp32", 4) == 0)) {
            fprintf(stderr, "%s: --precisions: unknown '%.*s' (expected a comma list of bf16, "
                    "fp16, int8; fp32 always runs)\n", program, (int)len, p);
            return 0;
        }
        if (k >= 0) want[k] = 1;
        p += len + (p[len] == ',');
    }
    return 1;
}

static const char *const latency_columns[] = {
    "batch_size", "device", "precision", "latency_mean_ms", "latency_median_ms",
    "latency_p90_ms", "images_per_s", "peak_memory_mib", "impl", "threads", "vs_fp32", NULL};

/* What one latency measurement found. */
typedef struct {
    double mean, median, p90, mib;
} lat_result;

/* Times `repeats` forwards of the fp32 model (im NULL) or the int8 model on x after one
 * warm-up, the high-water mark reset first. */
static cr_status time_forward(const lab_ctx *ctx, cr_model *m, cr_int8_model *im,
                              const cr_tensor *x, lat_result *res, int *hwm_ok)
{
    double t[1000];
    const cr_tensor *y;
    *hwm_ok &= lab_reset_hwm();
    cr_status s = im ? cr_int8_forward(im, x, &y) : cr_model_forward(m, x, &y);
    for (int r = 0; r < ctx->repeats && !s; r++) {
        const double t0 = cr_now();
        s = im ? cr_int8_forward(im, x, &y) : cr_model_forward(m, x, &y);
        t[r] = (cr_now() - t0) * 1e3;
    }
    if (s) return s;
    const int R = ctx->repeats;
    double sum = 0;
    for (int r = 0; r < R; r++) sum += t[r];
    res->mean = sum / R;
    lab_median_p90(t, R, &res->median, &res->p90);
    res->mib = *hwm_ok ? lab_vm_hwm_mib() : -1;
    return CR_OK;
}

/* One row of the int8 profile: a layer kind or a conv shape, its seconds summed. */
typedef struct {
    char key[96];
    double s, ops;
    int count;
} i8prof_row;

/* Adds s seconds (and ops) to the row named key of rows[0..*n-1] (appended if new). */
static void i8prof_add(i8prof_row *rows, int *n, int max, const char *key, double sec,
                       double ops)
{
    int i = 0;
    while (i < *n && strcmp(rows[i].key, key) != 0) i++;
    if (i == *n) {
        if (*n == max) return;
        memset(&rows[i], 0, sizeof rows[i]);
        snprintf(rows[i].key, sizeof rows[i].key, "%s", key);
        (*n)++;
    }
    rows[i].s += sec;
    rows[i].ops += ops;
    rows[i].count++;
}

static int i8prof_cmp(const void *a, const void *b)
{
    const i8prof_row *x = a, *y = b;
    return (x->s < y->s) - (x->s > y->s);
}

/* The name of step i's kind for the profile (an int8 conv group, a float module...). */
static void i8prof_kind(const cr_int8_model *im, int i, char *key, size_t size)
{
    const cr_module *d = &im->m->mods[i];
    const cr_i8_step *st = &im->steps[i];
    if (st->kind == CR_I8_CONV) {
        const cr_conv_params *p = &d->conv;
        snprintf(key, size, "int8 conv %s%s", p->kernel_h == 1 && p->kernel_w == 1 ? "1x1"
                 : p->groups > 1 ? "grouped" : "kxk", p->stride_h > 1 ? " stride 2" : "");
    } else if (st->kind == CR_I8_ADD_RELU) {
        snprintf(key, size, "add+relu (u8)");
    } else if (d->kind == CR_MOD_MAXPOOL || (d->kind == CR_MOD_ADD && st->out)) {
        snprintf(key, size, "%s (u8 out)", cr_module_kind_name(d->kind));   /* no float out */
    } else if (d->kind == CR_MOD_UPSAMPLE) {
        snprintf(key, size, "float upsample %s",
                 d->up.mode == CR_UPSAMPLE_NEAREST ? "nearest" : "bilinear");
    } else {
        snprintf(key, size, "float %s", cr_module_kind_name(d->kind));
    }
}

/* Prints im's profile from `runs` forwards at batch `batch`: per step kind (the u8 <->
 * float conversions as a row of their own), then per int8 conv shape with GOPS. */
static void print_int8_profile(const cr_int8_model *im, int runs, int batch)
{
    enum { MAXR = 128 };
    static i8prof_row kinds[MAXR], convs[MAXR];
    int nk = 0, nc = 0;
    double total = 0, cvt = 0;
    for (int i = 0; i < im->n; i++) {
        const cr_i8_step *st = &im->steps[i];
        if (st->kind == CR_I8_INSIDE) continue;
        const double sec = im->prof_s[i] / runs, c = im->prof_cvt_s[i] / runs;
        char key[96];
        i8prof_kind(im, i, key, sizeof key);
        i8prof_add(kinds, &nk, MAXR, key, sec - c, 0);
        total += sec;
        cvt += c;
        const cr_i8_value *v = &im->vals[st->end];
        if (st->kind != CR_I8_CONV) continue;
        const cr_conv_params *p = &im->m->mods[i].conv;
        snprintf(key, sizeof key, "%lldx%lld/%lld g%lld %lld->%lld out %lldx%lld",
                 (long long)p->kernel_h, (long long)p->kernel_w, (long long)p->stride_h,
                 (long long)p->groups, (long long)p->in_channels, (long long)p->out_channels,
                 (long long)v->shape[2], (long long)v->shape[3]);
        const double ops = 2.0 * (double)(v->shape[0] * v->shape[1] * v->shape[2] *
                                          v->shape[3]) *
                           (double)(p->in_channels / p->groups * p->kernel_h * p->kernel_w);
        i8prof_add(convs, &nc, MAXR, key, sec - c, ops);
    }
    if (cvt > 0) {
        i8prof_add(kinds, &nk, MAXR, "u8 <-> float conversions", cvt, 0);
        kinds[nk - 1].count = 0;
    }
    qsort(kinds, (size_t)nk, sizeof *kinds, i8prof_cmp);
    qsort(convs, (size_t)nc, sizeof *convs, i8prof_cmp);
    const double tot = total > 0 ? total : 1;
    printf("  int8 profile, batch %d: ms per forward, mean of %d runs, total %.1f ms\n", batch,
           runs, total * 1e3);
    printf("    %-44s %5s %9s %6s\n", "step kind", "count", "ms", "share");
    for (int k = 0; k < nk; k++)
        printf("    %-44s %5d %9.2f %5.1f%%\n", kinds[k].key, kinds[k].count,
               kinds[k].s * 1e3, 100 * kinds[k].s / tot);
    printf("    %-44s %5s %9s %6s %8s\n", "int8 conv shape (k/stride groups, channels, out)",
           "count", "ms", "share", "GOPS");
    for (int k = 0; k < nc; k++)
        printf("    %-44s %5d %9.2f %5.1f%% %8.1f\n", convs[k].key, convs[k].count,
               convs[k].s * 1e3, 100 * convs[k].s / tot,
               convs[k].s > 0 ? convs[k].ops / convs[k].s / 1e9 : 0.0);
}

static int cmd_fpn(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab07-int8 fpn",
                      "Chapter 7: forward latency of chapter 8's full FPN converted to int8, and "
                      "run in bf16 (bf16 weights and patches, fp32 sums) and with fp16 storage, "
                      "against our fp32, per batch size (random weights; int8 calibrated on a "
                      "random batch).",
                      fpn_args, LAB_COUNT(fpn_args));
    if (rc != LAB_RUN) return rc;
    int want[3];
    if (!parse_fpn_precisions(ctx.program, fpn_precisions, want)) return LAB_EXIT_USAGE;
    if (fpn_profile && !want[2]) {
        fprintf(stderr, "%s: --profile times the int8 forward: --precisions must include int8\n",
                ctx.program);
        return LAB_EXIT_USAGE;
    }
    int64_t H, W;
    int bs[32];
    if (ctx.quick && strcmp(batches_str, "1,8") == 0) batches_str = "1,2";
    if (ctx.quick && strcmp(size_str, "384x480") == 0) size_str = "64x96";
    const int nb = lab_parse_batches(batches_str, bs, 32, 1024);
    if (!nb) {
        fprintf(stderr, "%s: --batches: expected a comma list of sizes 1..1024 (at most 32), got "
                "'%s'\n", ctx.program, batches_str);
        return LAB_EXIT_USAGE;
    }
    if (!lab_parse_fpn_size(ctx.program, "size", size_str, &H, &W)) return LAB_EXIT_USAGE;
    cr_model m;
    cr_qat q = {0};
    cr_int8_model im = {0};
    cr_tensor x = {0};
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    const double tc = cr_now();
    cr_status s = build_fpn_net(&m, 0);
    if (!s) s = cr_model_init_params(&m, 1);
    cr_model_train(&m, false);
    /* calibration: min/max observers on one random image at the timed size */
    if (!s) s = cr_tensor_alloc4(&x, 1, 3, H, W);
    if (!s) cr_tensor_fill_uniform(&x, &rng, -2, 2);
    if (!s && want[2]) s = cr_qat_prepare(&q, &m, NULL);
    if (!s && want[2]) {
        cr_qat_observe_minmax(&q, true);
        cr_qat_enable(&q, true, false);
        const cr_tensor *y;
        s = cr_model_forward(&m, &x, &y);
    }
    if (!s && want[2]) s = cr_int8_convert(&im, &q);
    cr_qat_free(&q);   /* the float model runs unhooked again; im keeps its own copies */
    cr_tensor_free(&x);
    if (s) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        cr_int8_model_free(&im);
        cr_model_free(&m);
        return LAB_EXIT_FAILED;
    }
    const double conv_s = cr_now() - tc;
    lab_banner(&ctx, "chapter 7, chapter 8's FPN in int8, bf16 and fp16 against fp32: forward latency");
    char note[200];
    if (want[2])
        snprintf(note, sizeof note, "full QAT configuration, %d int8 convolutions, %d float; "
                 "calibration and conversion %.1f s", im.convs, im.float_convs, conv_s);
    else
        snprintf(note, sizeof note, "not run (--precisions %s)", fpn_precisions);
    const char *bf16_note = cr_gemm_bf16_native()
        ? "every convolution with bf16 weights and patches; vdpbf16ps with fp32 sums; the "
          "other layers fp32"
        : "every convolution with bf16 weights and patches; portable loop (no AVX512-BF16) "
          "with fp32 sums; the other layers fp32";
    char fp16_note[240];
    snprintf(fp16_note, sizeof fp16_note, "every convolution with fp16 weights and an fp16 copy of "
             "its input (storage); widened exactly in the packing (%s conversions), chapter 3's "
             "%s fp32 kernel; the other layers fp32", cr_fp16_storage_path(), cr_gemm_kernel_name());
    const char *const extra[] = {"peak_memory_mib", "resident high-water mark (VmHWM) during the "
                                 "batch size's runs, reset before each", "size", size_str,
                                 "int8", note, "bf16", bf16_note, "fp16", fp16_note, NULL};
    if (lab_csv_begin(&ctx, latency_columns, extra) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        cr_int8_model_free(&im);
        cr_model_free(&m);
        return LAB_EXIT_FAILED;
    }
    char policy[64];
    lab_wait_policy_str(policy, sizeof policy);
    lab_csv_comment(&ctx, "wait_policy", policy);
    printf("  int8: %s\n  bf16: %s\n  fp16: %s\n  OMP_WAIT_POLICY=%s; input %lldx%lld, %d timed "
           "runs after one warm-up per batch size and precision\n", note, bf16_note, fp16_note,
           policy, (long long)H, (long long)W, ctx.repeats);
    printf("  %5s %-9s %9s %9s %9s %9s %10s %8s\n", "batch", "precision", "mean ms", "median",
           "p90", "img/s", "peak MiB", "vs fp32");
    int hwm_ok = 1;
    for (int i = 0; i < nb && !s; i++) {
        if ((s = cr_tensor_alloc4(&x, bs[i], 3, H, W))) break;
        cr_tensor_fill_uniform(&x, &rng, -2, 2);
        lat_result f, q8, h16, f16;
        s = time_forward(&ctx, &m, NULL, &x, &f, &hwm_ok);
        if (!s && want[2]) s = time_forward(&ctx, &m, &im, &x, &q8, &hwm_ok);
        for (int k = 0; k < 2 && !s; k++) {   /* the same float model, convolutions in bf16, fp16 */
            if (!want[k]) continue;
            cr_bf16_model bm;
            s = cr_half_model_attach(&bm, &m, k ? CR_HALF_FP16 : CR_HALF_BF16);
            if (!s) s = time_forward(&ctx, &m, NULL, &x, k ? &f16 : &h16, &hwm_ok);
            cr_bf16_model_detach(&bm);
        }
        if (!s && fpn_profile) {   /* runs of their own: the timed ones stay unprofiled */
            cr_int8_profile_reset(&im);
            im.profile = true;
            const cr_tensor *y;
            for (int r = 0; r < ctx.repeats && !s; r++) s = cr_int8_forward(&im, &x, &y);
            im.profile = false;
        }
        cr_tensor_free(&x);
        if (s) break;
        const lat_result *rs[4] = {&f, &h16, &f16, &q8};
        const char *prec[4] = {"fp32", "bf16", "fp16", "int8"};
        for (int k = 0; k < 4; k++) {
            if (k > 0 && !want[k - 1]) continue;
            const double ips = bs[i] * 1e3 / rs[k]->mean, vs = f.median / rs[k]->median;
            printf("  %5d %-9s %9.1f %9.1f %9.1f %9.2f %10.0f %8.2f\n", bs[i], prec[k],
                   rs[k]->mean, rs[k]->median, rs[k]->p90, ips, rs[k]->mib, vs);
            lab_csv_row(&ctx, "%d,cpu,%s,%.3f,%.3f,%.3f,%.3f,%.1f,ours,%d,%.3f", bs[i], prec[k],
                        rs[k]->mean, rs[k]->median, rs[k]->p90, ips, rs[k]->mib, ctx.threads, vs);
        }
        if (fpn_profile) print_int8_profile(&im, ctx.repeats, bs[i]);
        fflush(stdout);
    }
    cr_int8_model_free(&im);
    cr_model_free(&m);
    if (s) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return lab_finish(&ctx, LAB_EXIT_FAILED);
    }
    if (!hwm_ok) printf("  (peak memory: /proc/self/clear_refs not writable: the run's peak so far)\n");
    return lab_finish(&ctx, LAB_EXIT_OK);
}

/* ---- main -------------------------------------------------------------------------------- */

static int cmd_kernels(int argc, char **argv);

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "camvid") == 0) return cmd_camvid(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "fpn") == 0) {
        lab_timing_wait_policy(argv);
        return cmd_fpn(argc - 1, argv + 1);
    }
    return cmd_kernels(argc, argv);
}

/* ---- the kernels and layers (no command) ----------------------------------------------------- */

static const char *const quick_layers[] = {"a_3x3_64", "c_3x3_256", "e_1x1"};

static int cmd_kernels(int argc, char **argv)
{
    const char *only = NULL;
    const cr_arg extra[] = {
        {"only", CR_ARG_STRING, &only, "PART", "run one part only: gemm, conv (default: both)", 0, -1},
    };
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab07-int8",
                      "Chapter 7, int8 execution: the int8 GEMM (every kernel this CPU runs), the\n"
                      "bf16 GEMM and the int8 convolution on the standard layers, against chapter\n"
                      "3's fp32 and oneDNN's int8 (where found at build time), 1 and --threads N\n"
                      "threads. Every int8 result is checked against integer loops before it is timed.\n"
                      "Commands: lab07-int8 camvid --help (CamVid accuracy of the FPN in fp32, bf16,\n"
                      "int8 PTQ and QAT), lab07-int8 fpn --help (int8 and bf16 against fp32 FPN\n"
                      "latency).",
                      extra, 1);
    if (rc != LAB_RUN) return rc;
    if (only && strcmp(only, "gemm") != 0 && strcmp(only, "conv") != 0) {
        fprintf(stderr, "lab07-int8: --only: expected gemm or conv (got \"%s\")\n", only);
        return LAB_EXIT_USAGE;
    }
    lab_banner(&ctx, "chapter 7, int8 execution");
#ifdef CR_HAVE_DNNL
    const char *peer = "oneDNN (libdnnl)";
#else
    const char *peer = "none (oneDNN not found at build time)";
#endif
    printf("  int8 kernel %s (full-range input: %s); fp32 kernel %s; bf16 %s; peer: %s\n\n",
           cr_int8_gemm_kernel_name(), cr_int8_gemm_kernel_for(255)->name, cr_gemm_kernel_name(),
           cr_gemm_bf16_native() ? "vdpbf16ps" : "portable", peer);
    static const char *const extra_csv[] = {
        "ops", "OP = 2 x multiply-adds; gops is GOP/s for int8, GFLOP/s for fp32 and bf16",
        "timing", "ms: the fastest of the timed runs (cache flushed before each)",
        "validation", "int8 gemm: sampled rows bit for bit vs int32 loops; int8 conv: every byte "
        "vs the seven loops; oneDNN int8 conv: within one step of ours",
        NULL};
    if (lab_csv_begin(&ctx, csv_columns, extra_csv) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    const int threads[2] = {1, ctx.threads};
    const int nthreads = ctx.threads > 1 ? 2 : 1;
    const double budget = ctx.quick ? 0.25 : 2.0;
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int nl, ok = 1;
    const lab_layer *layers = lab_standard_layers(&nl);
    const double t0 = cr_now();
    if (!only || strcmp(only, "gemm") == 0) {
        printf("(0) each int8 micro-kernel alone, its panels in L1 (one thread)\n");
        header("case");
        ok &= kernel_peaks(&ctx, &rng);
        printf("\n");
        printf("(1) GEMM C (int32) = A (s8 weights, M x K) B (u8 activations, K x N), the "
               "standard layers' shapes\n");
        header("case (MxNxK)");
        for (int i = 0; i < nl; i++) {
            if (layers[i].n > 1 || !lab_layer_selected(&ctx, layers[i].name, quick_layers, 1))
                continue;
            cr_conv_shape s;
            if (cr_conv_shape_init(&s, &layers[i].p, 1, layers[i].h, layers[i].w)) continue;
            const int64_t M = s.cout_g, N = s.h_out * s.w_out,
                          K = s.cin_g * layers[i].p.kernel_h * layers[i].p.kernel_w;
            char name[48];
            snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
            ok &= gemm_case(&ctx, name, M, N, K, threads, nthreads, &rng, budget);
        }
        printf("\n");
    }
    if (!only || strcmp(only, "conv") == 0) {
        printf("(2) standard layers as int8 convolutions: u8 NCHW in and out, per-channel s8 "
               "weights, bias, ReLU\n");
        header("layer");
        for (int i = 0; i < nl; i++) {
            if (!lab_layer_selected(&ctx, layers[i].name, quick_layers, LAB_COUNT(quick_layers)))
                continue;
            ok &= conv_layer(&ctx, &layers[i], threads, nthreads, &rng, budget);
        }
        printf("\n");
    }
    printf("%s in %.1f s\n", ok ? "all cases validated" : "VALIDATION FAILED", cr_now() - t0);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
