/* lab06-sparsity.c — chapter 6's lab: when does sparsity make a convolution faster?
 *
 * For each standard layer (a_3x3_64 ... g_3x3_64_n8) and sparsity 0 ... 0.95:
 *   dense        chapter 3's cr_conv2d_fast on the full weight (timed once per layer:
 *                zeros in a dense weight cost as much as any other value);
 *   unstructured a random mask with exactly round(s * numel) zeros, the weight in CSR,
 *                cr_sparse_conv2d (its speed depends on the density alone, not on which
 *                weights are kept: every kept weight is one broadcast-FMA row);
 *                validated against the dense conv of the masked weight (relative L2);
 *   structured   round(s * Cout) filters removed (grouped: round(s * groups) whole groups,
 *                with their input channels), the smaller dense conv by cr_conv2d_fast;
 *                validated against the kept channels of the masked dense output.
 * Times are the minimum (and median) of --repeats runs, cache flushed before each; the
 * speedup is the dense minimum over the variant's minimum, measured in the same run. The
 * break-even sparsity of the unstructured path (where its speedup crosses 1, linearly
 * interpolated between grid points) is printed per layer; cr_conv2d_auto's constant
 * (sparse_conv.h) comes from these rows. Weight memory: dense float32 bytes, CSR bytes
 * (8 per row + 8 per kept weight), structured bytes.
 * The SIMD kernel follows chapter 3's: CR_GEMM_KERNEL=avx2 measures the AVX2 pair.
 * CSV columns: lab,layer,mode,sparsity,kernel,threads,ms,ms_min,speedup,weight_bytes,
 * nnz,rel_err,auto (what cr_conv2d_auto runs for that unstructured weight; the dense row
 * names chapter 3's path instead on stdout). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_gemm.h"
#include "gemm.h"
#include "lab_common.h"
#include "shrink.h"
#include "sparse_conv.h"

#define MAX_REL 1e-5   /* sparse vs dense masked output, relative L2 */

static const char *const csv_columns[] = {"lab", "layer", "mode", "sparsity", "kernel",
                                          "threads", "ms", "ms_min", "speedup", "weight_bytes",
                                          "nnz", "rel_err", "auto", NULL};

static const double full_grid[] = {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95};
static const double quick_grid[] = {0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
static const char *const quick_layers[] = {"a_3x3_64", "c_3x3_256", "e_1x1", "f_3x3_g32"};

/* A sparse convolution call, for lab_time. */
typedef struct {
    const cr_conv_params *p;
    const cr_tensor *x, *b;
    const cr_csr_weight *w;
    cr_tensor *y;
} sparse_call;

/* Runs one sparse convolution (lab_time's callback). */
static cr_status run_sparse(void *arg)
{
    sparse_call *c = arg;
    return cr_sparse_conv2d(c->p, c->x, c->w, c->b, c->y);
}

/* Zeroes exactly round(s * numel) weights of w, chosen by a shuffle. */
static cr_status prune_random(cr_tensor *w, double s, cr_rng *r)
{
    const size_t n = w->numel, k = (size_t)llround(s * (double)n);
    size_t *idx = malloc(n * sizeof *idx);
    if (!idx) return cr_fail(CR_ENOMEM, "lab06: %zu indices", n);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    for (size_t i = 0; i < k; i++) {
        const size_t j = i + (size_t)cr_rng_int(r, 0, (int64_t)(n - 1 - i));
        const size_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        w->data[idx[i]] = 0.0f;
    }
    free(idx);
    return CR_OK;
}

/* The result of one layer: dense time and the unstructured speedups per grid point. */
typedef struct {
    double dense_min;
    double speedup[16];
} layer_result;

/* The unstructured row at sparsity s: mask, CSR, validate, time. */
static int run_unstructured(lab_ctx *ctx, const lab_layer *L, lab_conv *c, double s,
                            double dense_min, cr_rng *rng, double *speedup)
{
    cr_tensor wm, ref;
    memset(&wm, 0, sizeof wm);
    memset(&ref, 0, sizeof ref);
    cr_csr_weight csr;
    memset(&csr, 0, sizeof csr);
    int ok = 0;
    cr_status st;
    const cr_tensor *b = c->p.bias ? &c->b : NULL;
    if ((st = cr_tensor_alloc(&wm, 4, c->w.shape)) || (st = cr_tensor_alloc(&ref, 4, c->y.shape)))
        return lab_report_failure("unstructured", st);
    memcpy(wm.data, c->w.data, c->w.numel * sizeof(float));
    double rel = 0;
    cr_bench_result r;
    sparse_call call = {&c->p, &c->x, b, &csr, &c->y};
    if ((st = prune_random(&wm, s, rng)) || (st = cr_csr_from_weight(&csr, &wm, NULL)) ||
        (st = cr_conv2d_fast(&c->p, &c->x, &wm, b, &ref))) {
        lab_report_failure("unstructured", st);
        goto out;
    }
    cr_tensor_poison(&c->y);
    if ((st = run_sparse(&call))) {
        lab_report_failure("cr_sparse_conv2d", st);
        goto out;
    }
    char what[96];
    snprintf(what, sizeof what, "%s unstructured %.2f", L->name, s);
    if (!lab_check(what, &c->y, &ref, MAX_REL, &rel)) goto out;
    if ((st = lab_time(ctx, run_sparse, &call, &r))) {
        lab_report_failure("cr_sparse_conv2d", st);
        goto out;
    }
    *speedup = dense_min / r.min;
    const char *pick = cr_sparse_pays(1.0 - cr_csr_density(&csr)) ? "sparse" : "dense";
    printf("  %-9s %-12s %5.2f %9.3f %9.3f %8.2fx %10zu %9zu  %s\n", L->name, "unstructured", s,
           r.median * 1e3, r.min * 1e3, *speedup, cr_csr_bytes(&csr), csr.nnz, pick);
    lab_csv_row(ctx, "lab06,%s,unstructured,%.2f,%s,%d,%.4f,%.4f,%.3f,%zu,%zu,%.3g,%s", L->name, s,
                cr_sparse_conv2d_kernel(), ctx->threads, r.median * 1e3, r.min * 1e3, *speedup,
                cr_csr_bytes(&csr), csr.nnz, rel, pick);
    ok = 1;
out:
    cr_csr_free(&csr);
    cr_tensor_free(&wm);
    cr_tensor_free(&ref);
    return ok;
}

/* The structured row at sparsity s: filters (or whole groups) removed, a smaller dense
 * conv on the kept input channels, validated against the masked dense output. */
static int run_structured(lab_ctx *ctx, const lab_layer *L, lab_conv *c, double s,
                          double dense_min, cr_rng *rng)
{
    const cr_conv_params *p = &c->p;
    const int64_t G = p->groups, units = G > 1 ? G : p->out_channels, per = p->out_channels / units;
    const int64_t drop = llround(s * (double)units);
    if (drop >= units) return 1;   /* nothing left to run */
    uint8_t *keep = malloc((size_t)p->out_channels), *in_keep = malloc((size_t)p->in_channels);
    int64_t *order = malloc((size_t)units * sizeof *order);
    lab_conv small;
    memset(&small, 0, sizeof small);
    cr_tensor wm, ref;
    memset(&wm, 0, sizeof wm);
    memset(&ref, 0, sizeof ref);
    int ok = 0;
    cr_status st = CR_OK;
    if (!keep || !in_keep || !order) {
        lab_report_failure("structured", cr_fail(CR_ENOMEM, "lab06: masks"));
        goto out;
    }
    for (int64_t u = 0; u < units; u++) order[u] = u;
    for (int64_t u = 0; u < drop; u++) {   /* which units go: a shuffle */
        const int64_t j = u + cr_rng_int(rng, 0, units - 1 - u), t = order[u];
        order[u] = order[j];
        order[j] = t;
    }
    memset(keep, 1, (size_t)p->out_channels);
    for (int64_t u = 0; u < drop; u++) memset(keep + order[u] * per, 0, (size_t)per);
    /* the masked dense reference: pruned filters zero, so their outputs are the bias */
    if ((st = cr_tensor_alloc(&wm, 4, c->w.shape)) || (st = cr_tensor_alloc(&ref, 4, c->y.shape))) goto fail;
    const int64_t fw = (int64_t)c->w.numel / p->out_channels;
    for (int64_t o = 0; o < p->out_channels; o++)
        for (int64_t k = 0; k < fw; k++) wm.data[o * fw + k] = keep[o] ? c->w.data[o * fw + k] : 0.0f;
    if ((st = cr_conv2d_fast(p, &c->x, &wm, p->bias ? &c->b : NULL, &ref))) goto fail;
    /* the smaller conv and its input (grouped: only the kept groups' channels) */
    cr_tensor b2;
    if ((st = cr_conv_keep_filters(p, &c->w, p->bias ? &c->b : NULL, keep, &small.p, &small.w, &b2,
                                   in_keep)))
        goto fail;
    small.b = b2;
    const int64_t N = c->x.shape[0], H = c->x.shape[2], W = c->x.shape[3], HW = H * W;
    if ((st = cr_conv_shape_init(&small.s, &small.p, N, H, W)) ||
        (st = cr_tensor_alloc4(&small.x, N, small.p.in_channels, H, W)) ||
        (st = cr_tensor_alloc4(&small.y, N, small.p.out_channels, small.s.h_out, small.s.w_out)))
        goto fail;
    for (int64_t n = 0, d = 0; n < N; n++)
        for (int64_t ci = 0; ci < p->in_channels; ci++)
            if (in_keep[ci])
                memcpy(small.x.data + (d++) * HW, c->x.data + (n * p->in_channels + ci) * HW,
                       (size_t)HW * sizeof(float));
    cr_tensor_poison(&small.y);
    if ((st = lab_conv_run(&small, cr_conv2d_fast))) goto fail;
    /* compare the kept channels */
    const int64_t plane = small.s.h_out * small.s.w_out;
    double num = 0, den = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0, d = 0; o < p->out_channels; o++) {
            if (!keep[o]) continue;
            const float *a = small.y.data + (n * small.p.out_channels + d++) * plane,
                        *e = ref.data + (n * p->out_channels + o) * plane;
            for (int64_t j = 0; j < plane; j++) {
                num += ((double)a[j] - e[j]) * ((double)a[j] - e[j]);
                den += (double)e[j] * e[j];
            }
        }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(rel <= MAX_REL)) {
        fprintf(stderr, "%s structured %.2f: FAILED, relative L2 %.3g > %g\n", L->name, s, rel, MAX_REL);
        goto out;
    }
    cr_bench_result r;
    if ((st = lab_time_conv(ctx, cr_conv2d_fast, &small, &r))) goto fail;
    const double speedup = dense_min / r.min;
    const size_t bytes = small.w.numel * sizeof(float);
    printf("  %-9s %-12s %5.2f %9.3f %9.3f %8.2fx %10zu %9zu  %s\n", L->name, "structured", s,
           r.median * 1e3, r.min * 1e3, speedup, bytes, small.w.numel, "-");
    lab_csv_row(ctx, "lab06,%s,structured,%.2f,%s,%d,%.4f,%.4f,%.3f,%zu,%zu,%.3g,", L->name, s,
                cr_gemm_kernel_name(), ctx->threads, r.median * 1e3, r.min * 1e3, speedup, bytes,
                small.w.numel, rel);
    ok = 1;
    goto out;
fail:
    lab_report_failure("structured", st);
out:
    free(keep);
    free(in_keep);
    free(order);
    lab_conv_free(&small);
    cr_tensor_free(&wm);
    cr_tensor_free(&ref);
    return ok;
}

/* Where the speedups (one per grid point) cross 1, interpolated; -1 if never, 0 if at
 * the first point already. */
static double break_even(const double *grid, const double *speedup, int n)
{
    for (int i = 0; i < n; i++) {
        if (speedup[i] < 1.0) continue;
        if (i == 0) return grid[0];
        const double a = speedup[i - 1], b = speedup[i];
        return grid[i - 1] + (grid[i] - grid[i - 1]) * (1.0 - a) / (b - a);
    }
    return -1;
}

/* Every row of one layer. */
static int run_layer(lab_ctx *ctx, const lab_layer *L, const double *grid, int ng, cr_rng *rng,
                     double *be)
{
    lab_conv c;
    memset(&c, 0, sizeof c);
    cr_status st = lab_conv_alloc(&c, &L->p, L->n, L->h, L->w, rng);
    if (st) return lab_report_failure(L->name, st);
    cr_bench_result r;
    if ((st = lab_time_conv(ctx, cr_conv2d_fast, &c, &r))) {
        lab_conv_free(&c);
        return lab_report_failure(L->name, st);
    }
    const double dense_min = r.min;
    const size_t dense_bytes = c.w.numel * sizeof(float);
    printf("  %-9s %-12s %5s %9.3f %9.3f %8.2fx %10zu %9zu  %s\n", L->name, "dense", "-",
           r.median * 1e3, r.min * 1e3, 1.0, dense_bytes, c.w.numel, cr_conv2d_fast_path(&c.s));
    lab_csv_row(ctx, "lab06,%s,dense,,%s,%d,%.4f,%.4f,1,%zu,%zu,,dense", L->name,
                cr_gemm_kernel_name(), ctx->threads, r.median * 1e3, r.min * 1e3, dense_bytes,
                c.w.numel);
    double sp[16];
    int ok = 1;
    for (int i = 0; i < ng && ok; i++) {
        sp[i] = 0;
        ok = run_unstructured(ctx, L, &c, grid[i], dense_min, rng, &sp[i]) &&
             run_structured(ctx, L, &c, grid[i], dense_min, rng);
    }
    if (ok) {
        *be = break_even(grid, sp, ng);
        if (*be < 0) printf("  %-9s break-even: the sparse path never beats dense here\n", L->name);
        else printf("  %-9s break-even sparsity: %.2f\n", L->name, *be);
        lab_csv_row(ctx, "lab06,%s,break_even,%.3f,%s,%d,,,,,,,", L->name, *be,
                    cr_sparse_conv2d_kernel(), ctx->threads);
    }
    lab_conv_free(&c);
    return ok;
}

int main(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab06-sparsity",
                      "Chapter 6: latency of the standard layers against sparsity 0 .. 0.95, "
                      "unstructured (CSR\nsparse conv) and structured (filters removed), "
                      "against the dense conv in the same run;\nthe break-even sparsity and "
                      "the weights' memory.",
                      NULL, 0);
    if (rc != LAB_RUN) return rc;
    lab_banner(&ctx, "chapter 6, sparse execution");
    char be_note[96];
    snprintf(be_note, sizeof be_note, "%.2f (kernel %s)", cr_sparse_break_even(),
             cr_sparse_conv2d_kernel());
    const char *const extra[] = {"kernel", cr_sparse_conv2d_kernel(), "break_even_constant",
                                 be_note, "time", "ms: median, ms_min: minimum of the repeats; "
                                 "speedup: dense ms_min / ms_min", NULL};
    cr_status st = lab_csv_begin(&ctx, csv_columns, extra);
    if (st != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    printf("kernel: %s (sparse) / %s (dense GEMM); cr_conv2d_auto's break-even constant %.2f\n\n",
           cr_sparse_conv2d_kernel(), cr_gemm_kernel_name(), cr_sparse_break_even());
    printf("  %-9s %-12s %5s %9s %9s %9s %10s %9s  %s\n", "layer", "mode", "s", "ms med",
           "ms min", "speedup", "w bytes", "w stored", "auto/path");
    const double *grid = ctx.quick ? quick_grid : full_grid;
    const int ng = ctx.quick ? LAB_COUNT(quick_grid) : LAB_COUNT(full_grid);
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int nl, ok = 1;
    const lab_layer *layers = lab_standard_layers(&nl);
    double worst = 0;
    for (int i = 0; i < nl && ok; i++) {
        if (!lab_layer_selected(&ctx, layers[i].name, quick_layers, LAB_COUNT(quick_layers))) continue;
        double be = -1;
        ok = run_layer(&ctx, &layers[i], grid, ng, &rng, &be);
        if (be < 0) be = 1.0;
        if (be > worst) worst = be;
        fflush(stdout);
    }
    if (ok) printf("\nhighest break-even over the layers run: %.2f (the constant in use: %.2f)\n",
                   worst, cr_sparse_break_even());
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
