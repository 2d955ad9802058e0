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
 * names chapter 3's path instead on stdout).
 *
 * Two commands run the same question on chapter 8's network (FPN + ResNeXt-50 32x4d):
 *   lab06-sparsity fpn    forward latency (evaluation mode, 384x480, batch 1 and 8) of the
 *       dense network and of copies pruned to 0.3 .. 0.9, unstructured (cr_sparse_model: CSR
 *       where it pays) and structured (filters by L2: cr_model_shrink, then the filters path
 *       for what cannot be cut), each checked against its masked dense model first; chapter
 *       8's latency columns plus mode, sparsity, speedup and weight bytes.
 *   lab06-sparsity grid --data DIR --weights CKPT --epochs N   the original project's grid:
 *       magnitude 0.3/0.5/0.7 (unstructured and structured) and iterative to 0.5/0.7 (the
 *       original's schedule laid over the fine-tuning's steps), each pruned from the trained
 *       baseline, fine-tuned with chapter 8's loop (train8.h) and evaluated (val and test
 *       mean IoU), then made executable and timed at batch 1 and 8 at the eval size.
 * First conv and segmentation head stay dense unless --prune-all. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "augment.h"
#include "conv_gemm.h"
#include "dataset.h"
#include "fpn.h"
#include "gemm.h"
#include "lab_common.h"
#include "metrics.h"
#include "progress.h"
#include "prune.h"
#include "safetensors.h"
#include "shrink.h"
#include "sparse_conv.h"
#include "sparse_model.h"
#include "train.h"
#include "train8.h"

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

/* The standard layers' sweep (no command). */
static int cmd_layers(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab06-sparsity",
                      "Chapter 6: latency of the standard layers against sparsity 0 .. 0.95, "
                      "unstructured (CSR\nsparse conv) and structured (filters removed), "
                      "against the dense conv in the same run;\nthe break-even sparsity and "
                      "the weights' memory.\nOn chapter 8's network: lab06-sparsity fpn --help, "
                      "lab06-sparsity grid --help.",
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

/* ==== chapter 8's network ==================================================================== */

#define GRID_MAX_FRAMES_QUICK 16   /* grid --quick: the first 16 train frames, 8 val and 8 test */
#define MAX_BATCHES 8

static const char *fpn_batches_str = "1,8", *fpn_size_str = "384x480", *weights_path;
static const char *data_dir, *grid_eval_str = "192x256", *limit_str, *variants_str;
static int prune_all = 0, grid_epochs = 2, grid_crop = 192, grid_batch = 8, grid_factor = 2;
static int grid_seed = 1;
static double grid_lr = 1e-4;

/* Layers kept dense unless --prune-all: the first convolution and the segmentation head. */
static const char *const kept_dense[] = {"encoder.conv1.weight", "segmentation_head.0.weight", NULL};

/* The network: the full ResNeXt-50 FPN (11 classes), or with --quick the width-reduced
 * variant of chapter 8's lab and tests (stem 8, planes 4/8/16/32, blocks 1/2/1/1, groups 4). */
static cr_fpn_config fpn_config(int quick)
{
    cr_fpn_config c = cr_fpn_config_resnext50(CR_CAMVID_CLASSES);
    if (quick) {
        const cr_fpn_config r = {.classes = CR_CAMVID_CLASSES, .stem = 8, .planes = {4, 8, 16, 32},
                                 .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                                 .pyramid = 16, .segmentation = 32, .dropout = 0.2};
        c = r;
    }
    return c;
}

/* Builds the network into m (initialised here; free with cr_model_free even on failure). */
static cr_status fpn_new(cr_model *m, int quick)
{
    const cr_fpn_config c = fpn_config(quick);
    cr_model_init(m);
    return cr_fpn_build(m, &c);
}

/* Copies every state-dict tensor of src into dst (the same network, unshrunk). */
static cr_status copy_state(cr_model *dst, cr_model *src)
{
    cr_tensor_list a = {0}, b = {0};
    cr_status s = cr_model_state_list(dst, &a);
    if (!s) s = cr_model_state_list(src, &b);
    for (int i = 0; !s && i < a.n; i++) {
        if (i >= b.n || !cr_tensor_same_shape(a.tensors[i], b.tensors[i]))
            s = cr_fail(CR_EINVAL, "lab06: copy_state: '%s' differs between the models", a.names[i]);
        else memcpy(a.tensors[i]->data, b.tensors[i]->data, a.tensors[i]->numel * sizeof(float));
    }
    cr_tensor_list_free(&a);
    cr_tensor_list_free(&b);
    return s;
}

/* Loads a state dict or a chapter 4 checkpoint (its optimizer state skipped) into m. */
static cr_status load_weights(cr_model *m, const char *path)
{
    cr_st_file *f;
    cr_status s = cr_st_load(&f, path);
    if (s) return s;
    s = cr_model_load_st(m, f, path, "optimizer.");
    cr_st_free(f);
    return s;
}

/* Random norm parameters and statistics (BatchNorm shift +-0.5, scale 0.5..1.5), as a
 * trained network has: at PyTorch's initial values (shift 0, mean 0) a pruned filter's
 * channel is exactly 0 after its BatchNorm and the shrink would cut everything. */
static void randomize_norms(cr_model *m, cr_rng *r)
{
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        if (d->kind != CR_MOD_BATCHNORM && d->kind != CR_MOD_GROUPNORM) continue;
        cr_tensor_fill_uniform(&d->weight, r, 0.5f, 1.5f);
        cr_tensor_fill_uniform(&d->bias, r, -0.5f, 0.5f);
        if (d->running_mean.data) cr_tensor_fill_uniform(&d->running_mean, r, -0.5f, 0.5f);
        if (d->running_var.data) cr_tensor_fill_uniform(&d->running_var, r, 0.5f, 1.5f);
    }
}

/* ---- timing a forward ----------------------------------------------------------------------- */

/* Chapter 8's latency figures of one model and batch size. */
typedef struct {
    double mean, median, p90, images_per_s, peak_mib;
} fpn_latency;

/* Times m's evaluation forward on a random batch x N x 3 x H x W: one warm-up, then
 * `repeats` timed runs (wall clock); peak memory from VmHWM, reset first. */
static cr_status time_forward(cr_model *m, int N, int64_t H, int64_t W, int repeats, cr_rng *rng,
                              fpn_latency *r)
{
    cr_tensor x = {0};
    const cr_tensor *y;
    double t[1000];
    const int hwm = lab_reset_hwm();
    cr_status s = cr_tensor_alloc4(&x, N, 3, H, W);
    if (s) return s;
    cr_tensor_fill_uniform(&x, rng, -2, 2);
    s = cr_model_forward(m, &x, &y);
    for (int i = 0; i < repeats && !s; i++) {
        const double t0 = cr_now();
        s = cr_model_forward(m, &x, &y);
        t[i] = (cr_now() - t0) * 1e3;
    }
    cr_tensor_free(&x);
    if (s) return s;
    double sum = 0;
    for (int i = 0; i < repeats; i++) sum += t[i];
    r->mean = sum / repeats;
    lab_median_p90(t, repeats, &r->median, &r->p90);
    r->images_per_s = N * 1e3 / r->mean;
    r->peak_mib = hwm ? lab_vm_hwm_mib() : -1;
    return CR_OK;
}

/* Copies m's evaluation output on x into out (allocated). */
static cr_status forward_copy(cr_model *m, const cr_tensor *x, cr_tensor *out)
{
    const cr_tensor *y;
    cr_status s = cr_model_forward(m, x, &y);
    if (!s) s = cr_tensor_alloc(out, y->ndim, y->shape);
    if (!s) memcpy(out->data, y->data, y->numel * sizeof(float));
    return s;
}

/* Relative L2 distance of a from b (same shape). */
static double rel_l2(const cr_tensor *a, const cr_tensor *b)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < a->numel; i++) {
        const double d = (double)a->data[i] - b->data[i];
        num += d * d;
        den += (double)b->data[i] * b->data[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- a pruned, executed variant --------------------------------------------------------------- */

typedef enum { MODE_DENSE = 0, MODE_UNSTRUCTURED, MODE_STRUCTURED } prune_mode;
static const char *const mode_names[] = {"dense", "unstructured", "structured"};

/* What making a variant executable did. */
typedef struct {
    cr_sparse_model exec;
    int attached;
    cr_shrink_report shrink;
    double rel_err;              /* executed output against the masked dense one */
    size_t bytes;                /* the executed model's parameter bytes */
} exec_variant;

/* Makes masked model m (evaluation mode) fast: structured -> cr_model_shrink, then the
 * sparse paths attached (every mode but dense); checks the output on xv against the
 * masked model's. */
static cr_status make_executable(cr_model *m, prune_mode mode, const cr_tensor *xv, exec_variant *v)
{
    memset(v, 0, sizeof *v);
    cr_tensor ref = {0}, out = {0};
    cr_model_train(m, false);
    cr_status s = forward_copy(m, xv, &ref);
    if (!s && mode == MODE_STRUCTURED) s = cr_model_shrink(m, &v->shrink);
    if (!s && mode != MODE_DENSE && !(s = cr_sparse_model_attach(&v->exec, m, NULL))) v->attached = 1;
    if (!s) s = forward_copy(m, xv, &out);
    if (!s) {
        v->rel_err = rel_l2(&out, &ref);
        v->bytes = v->attached ? cr_sparse_model_bytes(&v->exec) : cr_model_param_bytes(m);
    }
    cr_tensor_free(&ref);
    cr_tensor_free(&out);
    return s;
}

static void exec_variant_free(exec_variant *v)
{
    if (v->attached) cr_sparse_model_detach(&v->exec);
    v->attached = 0;
}

/* Initialises a pruner on m for mode (unstructured, or filters by L2), first conv and
 * head excluded unless --prune-all. */
static cr_status pruner_for(cr_pruner *p, cr_model *m, prune_mode mode)
{
    const cr_prune_config c = {.kind = mode == MODE_STRUCTURED ? CR_PRUNE_FILTERS : CR_PRUNE_UNSTRUCTURED,
                               .norm = CR_PRUNE_L2, .exclude = prune_all ? NULL : kept_dense};
    return cr_pruner_init(p, m, &c);
}

/* The model's sparsity: zeros / total over the pruned layers (*pruned) and over every
 * parameter (*model). */
static void measure_sparsity(const cr_pruner *p, double *pruned, double *model)
{
    int64_t z, n;
    cr_pruner_count(p, -1, &z, &n);
    *pruned = n ? (double)z / (double)n : 0;
    cr_pruner_count(p, -2, &z, &n);
    *model = n ? (double)z / (double)n : 0;
}

/* ---- lab06-sparsity fpn ------------------------------------------------------------------------ */

static const cr_arg fpn_args[] = {
    {"batches", CR_ARG_STRING, &fpn_batches_str, "LIST", "batch sizes (1,8; --quick 1,2)", 0, -1},
    {"size", CR_ARG_STRING, &fpn_size_str, "HxW", "input size, multiples of 32 (384x480; --quick 64x96)", 0, -1},
    {"weights", CR_ARG_STRING, &weights_path, "FILE", "the FPN's weights (state dict or checkpoint); "
     "default: random, norms randomised", 0, -1},
    {"prune-all", CR_ARG_FLAG, &prune_all, NULL, "prune the first conv and the head too", 0, -1},
};

static const char *const fpn_columns[] = {
    "lab", "mode", "sparsity", "sparsity_measured", "batch_size", "device", "precision",
    "latency_mean_ms", "latency_median_ms", "latency_p90_ms", "images_per_s", "peak_memory_mib",
    "impl", "threads", "speedup", "weight_bytes", "dense_convs", "csr_convs", "filters_convs",
    "rel_err", NULL};

static const double fpn_grid[] = {0.3, 0.5, 0.7, 0.9};

/* One variant of the fpn command: prune a copy of base, make it executable, check, time
 * every batch size. dense_median[] holds (mode dense) or reads the dense medians. */
static int fpn_variant(lab_ctx *ctx, cr_model *base, prune_mode mode, double s, const int *bs, int nb,
                       int64_t H, int64_t W, const cr_tensor *xv, double *dense_median, cr_rng *rng)
{
    cr_model m;
    cr_pruner p;
    memset(&p, 0, sizeof p);
    exec_variant v;
    memset(&v, 0, sizeof v);
    double sp = 0, sp_model = 0;
    cr_status st = fpn_new(&m, ctx->quick);
    if (!st) st = copy_state(&m, base);
    if (!st && mode != MODE_DENSE && !(st = pruner_for(&p, &m, mode))) {
        st = cr_pruner_prune(&p, s);
        measure_sparsity(&p, &sp, &sp_model);
        cr_pruner_free(&p);
    }
    if (!st) st = make_executable(&m, mode, xv, &v);
    if (!st && !(v.rel_err <= 1e-4)) {
        fprintf(stderr, "fpn %s %.2f: FAILED: executed output differs from the masked model's by "
                "%.3g (relative L2 > 1e-4)\n", mode_names[mode], s, v.rel_err);
        exec_variant_free(&v);
        cr_model_free(&m);
        return 0;
    }
    const int *cnt = v.attached ? v.exec.count : NULL;
    for (int i = 0; i < nb && !st; i++) {
        fpn_latency r;
        if ((st = time_forward(&m, bs[i], H, W, ctx->repeats, rng, &r))) break;
        if (mode == MODE_DENSE) dense_median[i] = r.median;
        const double speedup = dense_median[i] / r.median;
        printf("  %-12s %5.2f %6.3f %5d %9.1f %9.1f %9.1f %8.2f %9.0f %7.2fx %11zu %3d/%d/%d %9.2g\n",
               mode_names[mode], s, sp_model, bs[i], r.mean, r.median, r.p90, r.images_per_s,
               r.peak_mib, speedup, v.bytes, cnt ? cnt[0] : 0, cnt ? cnt[1] : 0, cnt ? cnt[2] : 0,
               v.rel_err);
        fflush(stdout);
        lab_csv_row(ctx, "lab06,%s,%.2f,%.4f,%d,cpu,fp32,%.3f,%.3f,%.3f,%.2f,%.1f,ours,%d,%.3f,%zu,%d,%d,%d,%.3g",
                    mode_names[mode], s, sp_model, bs[i], r.mean, r.median, r.p90, r.images_per_s,
                    r.peak_mib, ctx->threads, speedup, v.bytes, cnt ? cnt[0] : 0, cnt ? cnt[1] : 0,
                    cnt ? cnt[2] : 0, v.rel_err);
    }
    if (!st && mode == MODE_STRUCTURED)
        printf("  %-12s %5s shrink: %lld filters cut, %lld pruned filters kept (add or padded reader), "
               "conv weights %lld -> %lld\n", "", "", (long long)v.shrink.channels_removed,
               (long long)v.shrink.channels_kept_dead, (long long)v.shrink.weights_before,
               (long long)v.shrink.weights_after);
    exec_variant_free(&v);
    cr_model_free(&m);
    if (st) return lab_report_failure("fpn", st);
    return 1;
}

static int cmd_fpn(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab06-sparsity fpn",
                      "Chapter 6 on chapter 8's network: forward latency of the FPN + ResNeXt-50 "
                      "against sparsity\n0.3 .. 0.9, unstructured (CSR where it pays) and "
                      "structured (filters by L2: shrunk, the rest\nskipped), against the dense "
                      "model in the same run; weight memory.",
                      fpn_args, LAB_COUNT(fpn_args));
    if (rc != LAB_RUN) return rc;
    if (ctx.quick && strcmp(fpn_batches_str, "1,8") == 0) fpn_batches_str = "1,2";
    if (ctx.quick && strcmp(fpn_size_str, "384x480") == 0) fpn_size_str = "64x96";
    int bs[MAX_BATCHES];
    const int nb = lab_parse_batches(fpn_batches_str, bs, MAX_BATCHES, 256);
    if (!nb) {
        fprintf(stderr, "%s: --batches: expected a comma list of sizes 1..256 (at most %d), got '%s'\n",
                ctx.program, MAX_BATCHES, fpn_batches_str);
        return LAB_EXIT_USAGE;
    }
    int64_t H, W;
    if (!lab_parse_fpn_size(ctx.program, "size", fpn_size_str, &H, &W)) return LAB_EXIT_USAGE;
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    cr_model base;
    cr_status st = fpn_new(&base, ctx.quick);
    if (!st) st = cr_model_init_params(&base, 1);
    if (!st && weights_path) st = load_weights(&base, weights_path);
    else if (!st) randomize_norms(&base, &rng);
    if (st) {
        fprintf(stderr, "%s: %s%s\n", ctx.program, weights_path ? "--weights: " : "", cr_last_error());
        cr_model_free(&base);
        return weights_path ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
    }
    lab_banner(&ctx, "chapter 6, sparse execution of chapter 8's FPN + ResNeXt-50 32x4d");
    char note[160];
    snprintf(note, sizeof note, "%s network, %s, %lldx%lld, %s", ctx.quick ? "reduced" : "full",
             weights_path ? "trained weights" : "random weights and norms",
             (long long)H, (long long)W, prune_all ? "every conv pruned" : "first conv and head dense");
    const char *const extra[] = {"fpn", note, "kernel", cr_sparse_conv2d_kernel(), "speedup",
                                 "dense latency_median_ms / latency_median_ms, same batch", NULL};
    if (lab_csv_begin(&ctx, fpn_columns, extra) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        cr_model_free(&base);
        return LAB_EXIT_FAILED;
    }
    char policy[64];
    lab_wait_policy_str(policy, sizeof policy);
    lab_csv_comment(&ctx, "wait_policy", policy);
    printf("  %s; sparse kernel %s, break-even %.2f; OMP_WAIT_POLICY=%s\n", note,
           cr_sparse_conv2d_kernel(), cr_sparse_break_even(), policy);
    printf("  %-12s %5s %6s %5s %9s %9s %9s %8s %9s %8s %11s %8s %9s\n", "mode", "s", "zeros", "batch",
           "mean ms", "median", "p90", "img/s", "peak MiB", "speedup", "w bytes", "d/csr/f", "rel err");
    cr_tensor xv = {0};
    st = cr_tensor_alloc4(&xv, 1, 3, H, W);
    if (st) {
        lab_report_failure("fpn", st);
        cr_model_free(&base);
        return lab_finish(&ctx, LAB_EXIT_FAILED);
    }
    cr_tensor_fill_uniform(&xv, &rng, -2, 2);
    double dense_median[MAX_BATCHES];
    int ok = fpn_variant(&ctx, &base, MODE_DENSE, 0.0, bs, nb, H, W, &xv, dense_median, &rng);
    for (int mode = MODE_UNSTRUCTURED; mode <= MODE_STRUCTURED && ok; mode++)
        for (int i = 0; i < LAB_COUNT(fpn_grid) && ok; i++)
            ok = fpn_variant(&ctx, &base, (prune_mode)mode, fpn_grid[i], bs, nb, H, W, &xv,
                             dense_median, &rng);
    cr_tensor_free(&xv);
    cr_model_free(&base);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}

/* ---- lab06-sparsity grid ------------------------------------------------------------------------ */

static const cr_arg grid_args[] = {
    {"data", CR_ARG_STRING, &data_dir, "DIR", "CamVid in SegNet's layout (--quick without it: "
     "synthetic frames)", 0, -1},
    {"weights", CR_ARG_STRING, &weights_path, "FILE", "the trained FPN (chapter 4 checkpoint or "
     "state dict); required but with --quick", 0, -1},
    {"epochs", CR_ARG_INT, &grid_epochs, "N", "fine-tuning epochs per variant (2; --quick 1)", 1, 1000},
    {"lr", CR_ARG_DOUBLE, &grid_lr, "X", "AdamW peak learning rate of the fine-tuning (1e-4)", 0, -1},
    {"crop", CR_ARG_INT, &grid_crop, "S", "training crop side, a multiple of 32 (192; --quick 64)", 32, 4096},
    {"eval-size", CR_ARG_STRING, &grid_eval_str, "HxW", "evaluation and latency size (192x256; "
     "--quick 64x96)", 0, -1},
    {"batch", CR_ARG_INT, &grid_batch, "N", "frames per step (8)", 1, 256},
    {"factor", CR_ARG_INT, &grid_factor, "N", "frames reduced by N before cropping (2)", 1, 8},
    {"limit", CR_ARG_STRING, &limit_str, "T[,E]", "only the first T train and E val/test frames", 0, -1},
    {"variants", CR_ARG_STRING, &variants_str, "LIST", "run only these variants (names as in the "
     "table, comma-separated; dense-finetuned, the unpruned control, runs only when named)", 0, -1},
    {"prune-all", CR_ARG_FLAG, &prune_all, NULL, "prune the first conv and the head too, as the "
     "original did", 0, -1},
    {"seed", CR_ARG_INT, &grid_seed, "N", "order and augmentation seed (1)", 0, 2147483647},
};

static const char *const grid_columns[] = {
    "lab", "variant", "method", "mode", "target", "sparsity", "sparsity_model", "epochs", "lr",
    "train_loss", "val_miou", "test_miou", "weight_bytes", "latency_b1_ms", "latency_b8_ms",
    "rel_err", "convs_csr", "convs_filters", "filters_cut", "filters_kept_dead", "seconds", NULL};

/* The original project's grid: one-shot magnitude pruning and iterative pruning. */
typedef struct {
    const char *name;
    int iterative;
    prune_mode mode;
    double target;
} grid_variant;

static const grid_variant grid_variants[] = {
    {"dense", 0, MODE_DENSE, 0.0},
    {"magnitude-u-0.3", 0, MODE_UNSTRUCTURED, 0.3},
    {"magnitude-u-0.5", 0, MODE_UNSTRUCTURED, 0.5},
    {"magnitude-u-0.7", 0, MODE_UNSTRUCTURED, 0.7},
    {"magnitude-s-0.3", 0, MODE_STRUCTURED, 0.3},
    {"magnitude-s-0.5", 0, MODE_STRUCTURED, 0.5},
    {"magnitude-s-0.7", 0, MODE_STRUCTURED, 0.7},
    {"iterative-u-0.5", 1, MODE_UNSTRUCTURED, 0.5},
    {"iterative-u-0.7", 1, MODE_UNSTRUCTURED, 0.7},
    /* a control, only with --variants: the baseline fine-tuned the same way, unpruned */
    {"dense-finetuned", 0, MODE_UNSTRUCTURED, 0.0},
};

/* True for variants that run only when --variants names them. */
static int grid_on_request(const grid_variant *gv)
{
    return gv->mode != MODE_DENSE && gv->target == 0.0;
}

/* True if variant name is in the comma list (NULL: every variant). */
static int variant_selected(const char *list, const char *name)
{
    if (!list) return 1;
    const size_t n = strlen(name);
    for (const char *q = list; *q;) {
        const char *end = strchr(q, ',');
        const size_t len = end ? (size_t)(end - q) : strlen(q);
        if (len == n && strncmp(q, name, n) == 0) return 1;
        if (!end) break;
        q = end + 1;
    }
    return 0;
}

/* Synthetic frames for grid --quick without --data: count h x w scenes of CamVid's classes
 * (sky above, buildings, road below, a car and a pedestrian box), coloured with the palette
 * plus noise. The accuracy they give means nothing; they let the book build run the grid. */
static cr_status synthetic_frames(int64_t count, int64_t h, int64_t w, cr_rng *r, cr_frames *fr)
{
    memset(fr, 0, sizeof *fr);
    fr->count = count;
    fr->height = fr->full_height = h;
    fr->width = fr->full_width = w;
    fr->factor = 1;
    fr->rgb = malloc((size_t)(count * h * w * 3));
    fr->labels = malloc((size_t)(count * h * w));
    fr->names = calloc((size_t)count, sizeof *fr->names);
    if (!fr->rgb || !fr->labels || !fr->names) {
        cr_frames_free(fr);
        return cr_fail(CR_ENOMEM, "lab06: synthetic frames");
    }
    for (int64_t f = 0; f < count; f++) {
        char name[32];
        snprintf(name, sizeof name, "synthetic_%03lld", (long long)f);
        fr->names[f] = strdup(name);
        if (!fr->names[f]) {
            cr_frames_free(fr);
            return cr_fail(CR_ENOMEM, "lab06: synthetic frames");
        }
        const int64_t horizon = h / 4 + cr_rng_int(r, 0, h / 4), road = h / 2 + cr_rng_int(r, 0, h / 4);
        const int64_t cx = cr_rng_int(r, 0, w - w / 4), px = cr_rng_int(r, 0, w - w / 8);
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                int c = y < horizon ? 0 : y < road ? 1 : 3;               /* sky, building, road */
                if (y >= road - h / 8 && y < road + h / 8 && x >= cx && x < cx + w / 4) c = 8;  /* car */
                if (y >= horizon && y < road + h / 6 && x >= px && x < px + w / 16) c = 9;      /* pedestrian */
                const int64_t i = (f * h + y) * w + x;
                fr->labels[i] = (uint8_t)c;
                for (int k = 0; k < 3; k++) {
                    const int v = cr_camvid_palette[c][k] + (int)cr_rng_int(r, -24, 24);
                    fr->rgb[i * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
    }
    return CR_OK;
}

/* Everything the grid shares between variants. */
typedef struct {
    lab_ctx *ctx;
    cr_frames train, val, test;
    cr_model base;               /* the trained baseline, never changed */
    cr_augment aug;
    int64_t eh, ew;
    cr_tensor xv;                /* one val frame at the eval size: the output check */
    cr_rng rng;
} grid_run;

/* The original's iterative schedule (0 -> target, 14 rounds of 3 epochs: 42 schedule
 * epochs) laid over the fine-tuning's optimizer steps: schedule epoch e begins once
 * ceil(e * total / 42) steps are done; the target is reached at schedule epoch 12 (29%
 * of the run). */
typedef struct {
    cr_pruner *pruner;
    cr_iterative_schedule sched;
    int64_t total_steps;
    int done;                    /* schedule epochs begun */
    cr_status st;
    double s;                    /* the last sparsity pruned to */
    cr_progress *prog;
} iter_ctx;

/* Begins every schedule epoch up to the one step `step` falls in. */
static void iter_advance(iter_ctx *c, int64_t step)
{
    const int span = c->sched.iterations * c->sched.epochs_per_iteration;
    const int upto = (int)((step * span) / c->total_steps);
    while (!c->st && c->done <= upto && c->done < span) {
        bool pruned = false;
        double s = 0;
        c->st = cr_pruner_iterative_epoch(c->pruner, &c->sched, c->done, &pruned, &s);
        if (pruned) c->s = s;
        c->done++;
    }
}

/* After each fine-tuning step: the schedule, then the progress line. */
static void grid_on_step(void *arg, const cr_step_info *info)
{
    iter_ctx *c = arg;
    if (c->pruner) iter_advance(c, info->step);
    char what[96];
    snprintf(what, sizeof what, "epoch %d loss %.4f", info->epoch, info->loss);
    if (c->pruner) snprintf(what + strlen(what), sizeof what - strlen(what), ", sparsity %.3f", c->s);
    cr_progress_step(c->prog, what);
}

/* Mean IoU of m over a split at the eval size. */
static cr_status split_miou(grid_run *g, cr_model *m, const cr_frames *fr, double *miou)
{
    cr_confusion conf = {0};
    cr_status s = cr_confusion_init(&conf, CR_CAMVID_CLASSES);
    if (!s) s = cr_fpn_evaluate(m, fr, g->eh, g->ew, 8, CR_CAMVID_IGNORE, NULL, &conf);
    if (!s) *miou = cr_confusion_iou(&conf, NULL);
    cr_confusion_free(&conf);
    return s;
}

/* Fine-tunes m with its pruner (one-shot: pruned first; iterative: on the schedule). */
static cr_status grid_finetune(grid_run *g, const grid_variant *gv, cr_model *m, cr_pruner *p,
                               double *loss)
{
    cr_train_config c = cr_train_config_default();
    c.lr = grid_lr;
    c.weight_decay = 1e-4;
    c.batch = grid_batch;
    c.epochs = grid_epochs;
    c.warmup_epochs = 0;
    c.seed = (uint64_t)grid_seed;
    c.flips = false;                       /* the augmentation flips */
    c.ignore_index = CR_CAMVID_IGNORE;
    cr_trainer t;
    memset(&t, 0, sizeof t);
    cr_status s = cr_trainer_init(&t, m, &c, g->train.count, g->aug.crop, g->aug.crop);
    if (!s) s = cr_pruner_attach(p, &t);
    cr_progress prog;
    iter_ctx ic = {.pruner = gv->iterative ? p : NULL, .total_steps = 1, .prog = &prog};
    if (!s && gv->iterative) {
        ic.sched = cr_iterative_schedule_default();
        ic.sched.final = gv->target;
        ic.total_steps = t.steps_per_epoch * grid_epochs;
        iter_advance(&ic, 0);
        s = ic.st;
    } else if (!s) {
        s = cr_pruner_prune(p, gv->target);
    }
    if (!s) {
        char label[64];
        snprintf(label, sizeof label, "%s fine-tuning", gv->name);
        cr_progress_begin(&prog, label, (long)(t.steps_per_epoch * grid_epochs));
        while (!s && t.epoch < grid_epochs) {
            s = cr_fpn_train_epoch(&t, &g->train, &g->aug, grid_on_step, &ic, loss);
            if (!s) s = ic.st;
        }
        cr_progress_end(&prog);
    }
    cr_trainer_free(&t);
    return s;
}

/* One row of the grid. */
static int grid_variant_run(grid_run *g, const grid_variant *gv)
{
    lab_ctx *ctx = g->ctx;
    const double t0 = cr_now();
    cr_model m;
    cr_pruner p;
    memset(&p, 0, sizeof p);
    exec_variant v;
    memset(&v, 0, sizeof v);
    double loss = NAN, sp = 0, sp_model = 0, miou[2] = {NAN, NAN};
    fpn_latency lat[2];
    cr_status s = fpn_new(&m, ctx->quick);
    if (!s) s = copy_state(&m, &g->base);
    if (!s && gv->mode != MODE_DENSE) {
        if (!(s = pruner_for(&p, &m, gv->mode))) s = grid_finetune(g, gv, &m, &p, &loss);
        if (!s) measure_sparsity(&p, &sp, &sp_model);
        cr_pruner_free(&p);   /* before the shrink: it holds the parameters' addresses */
    }
    if (!s) s = split_miou(g, &m, &g->val, &miou[0]);
    if (!s) s = split_miou(g, &m, &g->test, &miou[1]);
    if (!s) s = make_executable(&m, gv->mode, &g->xv, &v);
    if (!s && !(v.rel_err <= 1e-4))
        s = cr_fail(CR_EINVAL, "the executed model's output differs from the masked model's by %.3g "
                    "(relative L2 > 1e-4)", v.rel_err);
    const int bsz[2] = {1, 8};
    for (int i = 0; i < 2 && !s; i++) s = time_forward(&m, bsz[i], g->eh, g->ew, ctx->repeats, &g->rng, &lat[i]);
    if (s) {
        exec_variant_free(&v);
        cr_model_free(&m);
        char what[96];
        snprintf(what, sizeof what, "grid %s", gv->name);
        return lab_report_failure(what, s);
    }
    const int *cnt = v.attached ? v.exec.count : NULL;
    const char *method = gv->mode == MODE_DENSE ? "baseline" : grid_on_request(gv) ? "control"
                         : gv->iterative ? "iterative" : "magnitude";
    const double secs = cr_now() - t0;
    printf("  %-16s %6.3f %6.3f %8.4f %8.4f %8.4f %11zu %9.1f %9.1f %3d/%d %8.2g %7.0f\n", gv->name, sp,
           sp_model, loss, miou[0], miou[1], v.bytes, lat[0].median, lat[1].median, cnt ? cnt[1] : 0,
           cnt ? cnt[2] : 0, v.rel_err, secs);
    fflush(stdout);
    lab_csv_row(ctx, "lab06,%s,%s,%s,%.2f,%.4f,%.4f,%d,%g,%.4f,%.4f,%.4f,%zu,%.3f,%.3f,%.3g,%d,%d,%lld,%lld,%.1f",
                gv->name, method, mode_names[gv->mode], gv->target, sp, sp_model,
                gv->mode == MODE_DENSE ? 0 : grid_epochs, gv->mode == MODE_DENSE ? 0 : grid_lr, loss,
                miou[0], miou[1], v.bytes, lat[0].median, lat[1].median, v.rel_err, cnt ? cnt[1] : 0,
                cnt ? cnt[2] : 0, (long long)v.shrink.channels_removed,
                (long long)v.shrink.channels_kept_dead, secs);
    exec_variant_free(&v);
    cr_model_free(&m);
    return 1;
}

/* Checks the grid's options and loads the data and the baseline; a lab exit code
 * (LAB_RUN to go on). */
static int grid_prepare(lab_ctx *ctx, grid_run *g)
{
    const char *p = ctx->program;
    if (!weights_path && !ctx->quick) {
        fprintf(stderr, "%s: --weights FILE is required: the trained FPN the grid prunes (lab08-fpn "
                "train --checkpoint FILE writes one)\n", p);
        return LAB_EXIT_USAGE;
    }
    if (!data_dir && !ctx->quick) {
        fprintf(stderr, "%s: --data DIR is required. %s\n", p, cr_camvid_howto());
        return LAB_EXIT_USAGE;
    }
    if (!(grid_lr > 0) || !isfinite(grid_lr)) {
        fprintf(stderr, "%s: --lr: expected a finite number > 0, got %g\n", p, grid_lr);
        return LAB_EXIT_USAGE;
    }
    if (ctx->quick) {
        if (grid_crop == 192) grid_crop = 64;
        if (strcmp(grid_eval_str, "192x256") == 0) grid_eval_str = "64x96";
        if (grid_epochs == 2) grid_epochs = 1;
        if (grid_batch == 8) grid_batch = 4;
    }
    if (grid_crop % 32) {
        fprintf(stderr, "%s: --crop: expected a multiple of 32, got %d\n", p, grid_crop);
        return LAB_EXIT_USAGE;
    }
    if (!lab_parse_fpn_size(p, "eval-size", grid_eval_str, &g->eh, &g->ew)) return LAB_EXIT_USAGE;
    int any = 0;
    for (int i = 0; i < LAB_COUNT(grid_variants); i++) any |= variant_selected(variants_str, grid_variants[i].name);
    if (!any) {
        fprintf(stderr, "%s: --variants '%s' names no variant (dense, magnitude-u-0.3, ..., "
                "iterative-u-0.7)\n", p, variants_str);
        return LAB_EXIT_USAGE;
    }
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
        lim[0] = lim[0] ? lim[0] : GRID_MAX_FRAMES_QUICK;
        lim[1] = lim[1] ? lim[1] : GRID_MAX_FRAMES_QUICK / 2;
    }
    cr_rng_seed(&g->rng, ctx->seed);
    const char *splits[3] = {"train", "val", "test"};
    cr_frames *fr[3] = {&g->train, &g->val, &g->test};
    for (int i = 0; i < 3; i++) {
        cr_status s = data_dir
            ? cr_camvid_load_frames(data_dir, splits[i], grid_factor, i == 0 ? lim[0] : lim[1], fr[i])
            : synthetic_frames(i == 0 ? lim[0] : lim[1], 96, 128, &g->rng, fr[i]);
        if (s) {
            fprintf(stderr, "%s: %s\n", p, cr_last_error());
            return s == CR_EIO ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
        }
    }
    if (g->train.count < grid_batch) {
        fprintf(stderr, "%s: --batch %d: the train split has only %lld frames\n", p, grid_batch,
                (long long)g->train.count);
        return LAB_EXIT_USAGE;
    }
    cr_augment_default(&g->aug, grid_crop);
    cr_status s = fpn_new(&g->base, ctx->quick);
    if (!s) s = cr_model_init_params(&g->base, (uint64_t)grid_seed);
    if (!s && weights_path && (s = load_weights(&g->base, weights_path))) {
        fprintf(stderr, "%s: --weights: %s\n", p, cr_last_error());
        return LAB_EXIT_USAGE;
    }
    /* the output check's input: the first val frame at the eval size */
    int32_t *lab = malloc((size_t)(g->eh * g->ew) * sizeof *lab);
    const int64_t idx = 0;
    if (!s && !lab) s = cr_fail(CR_ENOMEM, "lab06: labels");
    if (!s) s = cr_tensor_alloc4(&g->xv, 1, 3, g->eh, g->ew);
    if (!s) s = cr_frames_eval_batch(&g->val, &idx, 1, &g->xv, lab);
    free(lab);
    if (s) {
        fprintf(stderr, "%s: %s\n", p, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    return LAB_RUN;
}

static void grid_free(grid_run *g)
{
    cr_frames_free(&g->train);
    cr_frames_free(&g->val);
    cr_frames_free(&g->test);
    cr_model_free(&g->base);
    cr_tensor_free(&g->xv);
}

static int cmd_grid(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab06-sparsity grid",
                      "Chapter 6: the original project's pruning grid on chapter 8's network: "
                      "magnitude 0.3/0.5/0.7\n(unstructured, and structured by filters' L2 norm) "
                      "and iterative to 0.5/0.7, each pruned from\nthe trained baseline and "
                      "fine-tuned on CamVid; val/test mean IoU, weight memory, latency\nat batch 1 "
                      "and 8 of the executed (CSR / shrunk) model.",
                      grid_args, LAB_COUNT(grid_args));
    if (rc != LAB_RUN) return rc;
    grid_run g;
    memset(&g, 0, sizeof g);
    g.ctx = &ctx;
    if ((rc = grid_prepare(&ctx, &g)) != LAB_RUN) {
        grid_free(&g);
        return rc;
    }
    lab_banner(&ctx, "chapter 6, the pruning grid on chapter 8's FPN + ResNeXt-50 32x4d");
    char note[320];
    snprintf(note, sizeof note, "%s network; %s; %lld train, %lld val, %lld test frames (1/%d); "
             "fine-tuning %d epoch(s), AdamW lr %g (cosine, no warm-up), wd 1e-4, batch %d, crop %d; "
             "eval and latency at %lldx%lld; %s", ctx.quick ? "reduced" : "full",
             weights_path ? weights_path : "random initial weights",
             (long long)g.train.count, (long long)g.val.count, (long long)g.test.count,
             data_dir ? grid_factor : 1, grid_epochs, grid_lr, grid_batch, grid_crop, (long long)g.eh,
             (long long)g.ew, prune_all ? "every conv pruned" : "first conv and head dense");
    const char *const extra[] = {"grid", note, "data", data_dir ? data_dir : "synthetic frames (no --data)",
                                 "kernel", cr_sparse_conv2d_kernel(), NULL};
    if (lab_csv_begin(&ctx, grid_columns, extra) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        grid_free(&g);
        return LAB_EXIT_FAILED;
    }
    printf("  %s\n  data: %s\n", note, data_dir ? data_dir : "synthetic frames (the accuracy means nothing)");
    printf("  %-16s %6s %6s %8s %8s %8s %11s %9s %9s %5s %8s %7s\n", "variant", "zeros", "model",
           "loss", "val mIoU", "test", "w bytes", "b1 ms", "b8 ms", "c/f", "rel err", "s");
    int ok = 1;
    for (int i = 0; i < LAB_COUNT(grid_variants) && ok; i++)
        if (variants_str ? variant_selected(variants_str, grid_variants[i].name)
                         : !grid_on_request(&grid_variants[i]))
            ok = grid_variant_run(&g, &grid_variants[i]);
    grid_free(&g);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "fpn") == 0 || strcmp(argv[1], "grid") == 0)) {
        lab_timing_wait_policy(argv);
        return strcmp(argv[1], "fpn") == 0 ? cmd_fpn(argc - 1, argv + 1) : cmd_grid(argc - 1, argv + 1);
    }
    if (argc >= 2 && argv[1][0] != '-') {
        fprintf(stderr, "lab06-sparsity: unknown command '%s'\n"
                "usage: lab06-sparsity [options]        the standard layers against sparsity\n"
                "       lab06-sparsity fpn [options]    chapter 8's network against sparsity\n"
                "       lab06-sparsity grid [options]   the pruning grid on CamVid\n", argv[1]);
        return LAB_EXIT_USAGE;
    }
    return cmd_layers(argc, argv);
}
