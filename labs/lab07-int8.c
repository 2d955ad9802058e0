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
 * CSV columns: lab,kind,case,impl,threads,ms,gops,vs_fp32,vs_onednn,note. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CR_HAVE_DNNL
#include "dnnl_conv.h"   /* includes oneapi/dnnl/dnnl.h */
#endif

#include "conv_gemm.h"
#include "gemm.h"
#include "int8_conv.h"
#include "int8_gemm.h"
#include "lab_common.h"
#include "progress.h"

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
        snprintf(note, sizeof note, "%d x %d tile, depth 576, panels in L1", k.kd->mr, k.kd->nr);
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
    int ok = g.A && g.B && g.B7 && g.C && g.Af && g.Bf && g.Cf && g.Ah && g.Bh;
#ifdef CR_HAVE_DNNL
    dnnl_c = cr_aligned_alloc((size_t)(M * N) * 4);
    ok = ok && dnnl_c;
#endif
    if (!ok) return lab_report_failure(name, cr_fail(CR_ENOMEM, "gemm operands"));
    for (int64_t i = 0; i < M * K; i++) {
        g.A[i] = (int8_t)cr_rng_int(rng, -128, 127);
        g.Af[i] = g.A[i] / 128.0f;
        g.Ah[i] = cr_f32_to_bf16(g.Af[i]);
    }
    for (int64_t i = 0; i < K * N; i++) {
        g.B[i] = (uint8_t)cr_rng_int(rng, 0, 255);
        g.B7[i] = g.B[i] >> 1;
        g.Bf[i] = g.B[i] / 255.0f;
        g.Bh[i] = cr_f32_to_bf16(g.Bf[i]);
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
                      cr_gemm_bf16_native() ? "vdpbf16ps, f32 sums" : "portable loop");
    }
    cr_aligned_free(g.A); cr_aligned_free(g.B); cr_aligned_free(g.B7); cr_aligned_free(g.C);
    cr_aligned_free(g.Af); cr_aligned_free(g.Bf); cr_aligned_free(g.Cf);
    cr_aligned_free(g.Ah); cr_aligned_free(g.Bh);
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
            snprintf(note, sizeof note, "kernel %s; equals the seven loops; %zu distinct outputs",
                     cr_int8_gemm_kernel_for(255)->name, distinct);
            ok &= row(ctx, "conv", l->name, "int8", threads[t], r.min, ops, fp32, dnnl, note);
        }
    }
    lab_set_threads(ctx->threads);
    lab_conv_free(&fc);
    qlayer_free(&q);
    return ok;
}

/* ---- main -------------------------------------------------------------------------------- */

static const char *const quick_layers[] = {"a_3x3_64", "c_3x3_256", "e_1x1"};

int main(int argc, char **argv)
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
                      "threads. Every int8 result is checked against integer loops before it is timed.",
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
