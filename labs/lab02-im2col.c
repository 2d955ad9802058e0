/* lab02-im2col.c — chapter 2's lab: im2col + GEMM against chapter 1's direct loops.
 *
 * (a) The micro-benchmark of the project that inspired us: a stack of conv+ReLU
 *     layers (3 -> 16 -> 16 -> 16 channels on 32x32 images, padding k/2 so the size
 *     stays) for kernel sizes 1..11 and batch 1..64; time of each implementation,
 *     speedup, and the patch matrix's bytes next to the activations' bytes.
 * (b) The standard layers with both implementations.
 * Chapter 2's output is validated against chapter 1's (relative L2 <= 1e-5): before
 * timing for the layers; for the stacks, the output of the timed runs themselves,
 * so that the slowest cases (seconds per run) are not run once more. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "direct.h"
#include "im2col.h"
#include "lab_common.h"
#include "progress.h"

#define MAX_REL 1e-5  /* ch2 vs ch1, relative L2; both fp32, summed in the same order */

#define STACK_BUDGET_S 1.0  /* seconds of timed runs per implementation and stack case */

#define STACK_DEPTH 3
#define STACK_HW 32
static const int64_t stack_channels[STACK_DEPTH + 1] = {3, 16, 16, 16};

static const int full_kernels[] = {1, 3, 5, 7, 9, 11};
static const int full_batches[] = {1, 2, 4, 8, 16, 32, 64};
static const int quick_kernels[] = {1, 3, 5};
static const int quick_batches[] = {1, 4};
static const char *const quick_layers[] = {"f_3x3_g32", "e_1x1"};

static const char *const csv_columns[] = {
    "lab", "kind", "case", "impl", "k", "batch", "threads", "ms", "gflops",
    "workspace_bytes", "activation_bytes", "speedup_vs_direct", "rel_err", NULL};

/* ---- the conv+ReLU stack ---------------------------------------------------- */

/* act[0] is the input (N x 3 x 32 x 32); act[i+1] = relu(conv_i(act[i])), all
 * N x 16 x 32 x 32; conv_i has weights w[i] (Cout x Cin x k x k) and bias b[i]. */
typedef struct {
    int64_t k, batch;
    cr_conv_params p[STACK_DEPTH];
    cr_conv_shape s[STACK_DEPTH];
    cr_tensor act[STACK_DEPTH + 1], w[STACK_DEPTH], b[STACK_DEPTH];
    cr_conv2d_fn fn;          /* the implementation stack_forward uses */
    double flops;             /* of the convolutions, one forward pass */
    size_t workspace_bytes;   /* the largest im2col patch matrix of the layers */
    size_t activation_bytes;  /* input plus every layer's output */
} conv_stack;

/* Frees every tensor of the stack (safe on a zeroed or half-built one). */
static void stack_free(conv_stack *st)
{
    for (int i = 0; i <= STACK_DEPTH; i++) cr_tensor_free(&st->act[i]);
    for (int i = 0; i < STACK_DEPTH; i++) {
        cr_tensor_free(&st->w[i]);
        cr_tensor_free(&st->b[i]);
    }
}

/* Builds a stack with kernel k (padding k/2) on batch images with random input,
 * weights and biases (PyTorch's default init range, so activations stay O(1)). */
static cr_status stack_init(conv_stack *st, int64_t k, int64_t batch, cr_rng *rng)
{
    memset(st, 0, sizeof *st);
    st->k = k;
    st->batch = batch;
    cr_status s = cr_tensor_alloc4(&st->act[0], batch, stack_channels[0], STACK_HW, STACK_HW);
    if (s != CR_OK) return s;
    cr_tensor_fill_uniform(&st->act[0], rng, -1.0f, 1.0f);
    st->activation_bytes = st->act[0].numel * sizeof(float);

    for (int i = 0; i < STACK_DEPTH; i++) {
        const int64_t cin = stack_channels[i], cout = stack_channels[i + 1];
        st->p[i] = cr_conv_params_default(cin, cout, k);
        cr_conv_set_padding(&st->p[i], k / 2, k / 2);
        if ((s = cr_conv_shape_init(&st->s[i], &st->p[i], batch, STACK_HW, STACK_HW)) != CR_OK ||
            (s = cr_tensor_alloc4(&st->w[i], cout, cin, k, k)) != CR_OK ||
            (s = cr_tensor_alloc(&st->b[i], 1, &cout)) != CR_OK ||
            (s = cr_tensor_alloc4(&st->act[i + 1], batch, cout, st->s[i].h_out,
                                  st->s[i].w_out)) != CR_OK) {
            stack_free(st);
            return s;
        }
        const float init = (float)(1.0 / sqrt((double)(cin * k * k)));
        cr_tensor_fill_uniform(&st->w[i], rng, -init, init);
        cr_tensor_fill_uniform(&st->b[i], rng, -init, init);
        st->flops += cr_conv_flops(&st->s[i]);
        size_t ws = cr_im2col_workspace_bytes(&st->s[i]);
        if (ws > st->workspace_bytes) st->workspace_bytes = ws;
        st->activation_bytes += st->act[i + 1].numel * sizeof(float);
    }
    return CR_OK;
}

/* Replaces every negative element of t by 0. */
static void relu_inplace(cr_tensor *t)
{
    for (size_t i = 0; i < t->numel; i++)
        if (t->data[i] < 0.0f) t->data[i] = 0.0f;
}

/* One forward pass: act[i+1] = relu(fn(act[i], w[i], b[i])) for every layer. */
static cr_status stack_forward(void *arg)
{
    conv_stack *st = arg;
    for (int i = 0; i < STACK_DEPTH; i++) {
        cr_tensor_poison(&st->act[i + 1]);
        cr_status s = st->fn(&st->p[i], &st->act[i], &st->w[i], &st->b[i], &st->act[i + 1]);
        if (s != CR_OK) return s;
        relu_inplace(&st->act[i + 1]);
    }
    return CR_OK;
}

/* ---- output ---------------------------------------------------------------- */

/* Erases a live progress line on a terminal so that a table row can be printed. */
static void clear_progress(const cr_progress *prog)
{
    if (prog && prog->tty) fputs("\r\033[K", stderr);
}

/* Prints the column titles of both tables. */
static void print_table_header(const char *title)
{
    printf("%s\n", title);
    printf("%-11s %3s %5s %10s %10s %8s %8s %8s %12s %12s %8s %5s\n", "case", "k", "batch",
           "direct ms", "im2col ms", "speedup", "dir GF/s", "i2c GF/s", "patch bytes",
           "activ bytes", "rel err", "runs");
    fflush(stdout);
}

/* Prints one table row and writes the two CSV rows (direct, then im2col) of a case. */
static cr_status report_case(lab_ctx *ctx, const cr_progress *prog, const char *kind,
                             const char *name, int64_t k, int64_t batch, double flops,
                             const cr_bench_result *direct, const cr_bench_result *im2col,
                             size_t workspace, size_t activations, double rel)
{
    const double t_direct = direct->median, t_im2col = im2col->median;
    double speedup = t_im2col > 0 ? t_direct / t_im2col : 0.0;
    double gf_d = lab_gflops(flops, t_direct), gf_i = lab_gflops(flops, t_im2col);
    char runs[16];
    snprintf(runs, sizeof runs, "%d/%d", direct->runs, im2col->runs);
    clear_progress(prog);
    printf("%-11s %3lld %5lld %10.2f %10.2f %7.2fx %8.2f %8.2f %12zu %12zu %8.1e %5s\n", name,
           (long long)k, (long long)batch, t_direct * 1e3, t_im2col * 1e3, speedup, gf_d,
           gf_i, workspace, activations, rel, runs);
    fflush(stdout);
    cr_status s = lab_csv_row(ctx, "lab02,%s,%s,direct,%lld,%lld,%d,%.4f,%.4f,0,%zu,1,0", kind,
                              name, (long long)k, (long long)batch, ctx->threads,
                              t_direct * 1e3, gf_d, activations);
    if (s != CR_OK) return s;
    return lab_csv_row(ctx, "lab02,%s,%s,im2col,%lld,%lld,%d,%.4f,%.4f,%zu,%zu,%.4f,%.3g",
                       kind, name, (long long)k, (long long)batch, ctx->threads,
                       t_im2col * 1e3, gf_i, workspace, activations, speedup, rel);
}

/* ---- (a) the stack micro-benchmark ------------------------------------------ */

/* Times the stack with fn within STACK_BUDGET_S; its output stays in the last activation. */
static cr_status time_stack(const lab_ctx *ctx, conv_stack *st, cr_conv2d_fn fn,
                            cr_bench_result *r)
{
    st->fn = fn;
    return lab_time_budget(ctx, stack_forward, st, STACK_BUDGET_S, r);
}

/* Times ch1 and ch2 on one stack, validates ch2's output against ch1's, reports;
 * returns 1 if it validated. */
static int run_stack_case(lab_ctx *ctx, const cr_progress *prog, int64_t k, int64_t batch,
                          cr_rng *rng)
{
    char what[48];
    snprintf(what, sizeof what, "stack k=%lld batch=%lld", (long long)k, (long long)batch);
    conv_stack st;
    cr_status s = stack_init(&st, k, batch, rng);
    if (s != CR_OK) return lab_report_failure(what, s);

    cr_tensor ref = {0};
    cr_tensor *out = &st.act[STACK_DEPTH];
    cr_bench_result td = {0}, ti = {0};
    double rel = 0.0;
    int ok = 1;
    if ((s = time_stack(ctx, &st, cr_conv2d_direct, &td)) == CR_OK &&
        (s = cr_tensor_alloc(&ref, out->ndim, out->shape)) == CR_OK) {
        memcpy(ref.data, out->data, out->numel * sizeof(float));
        s = time_stack(ctx, &st, cr_conv2d_im2col, &ti);
    }
    if (s != CR_OK) ok = lab_report_failure(what, s);
    if (ok) {
        clear_progress(prog);
        ok = lab_check(what, out, &ref, MAX_REL, &rel);
    }
    if (ok && (s = report_case(ctx, prog, "stack", "relu_stack3", k, batch, st.flops, &td,
                               &ti, st.workspace_bytes, st.activation_bytes, rel)) != CR_OK)
        ok = lab_report_failure("CSV", s);

    cr_tensor_free(&ref);
    stack_free(&st);
    return ok;
}

/* Every kernel size x batch of the micro-benchmark, with a progress line. */
static int run_stacks(lab_ctx *ctx, cr_rng *rng)
{
    const int *ks = ctx->quick ? quick_kernels : full_kernels;
    const int *bs = ctx->quick ? quick_batches : full_batches;
    int nk = ctx->quick ? 3 : 6, nb = ctx->quick ? 2 : 7;
    char title[320];
    snprintf(title, sizeof title,
             "(a) conv+ReLU stack: %d layers, %lld -> %lld -> %lld -> %lld channels, %dx%d, "
             "padding k/2\n"
             "    patch bytes: one im2col patch matrix (im2col holds one per thread)\n"
             "    runs: timed runs direct/im2col, median shown; each implementation gets\n"
             "    about %.0f s per case (one run if a run takes longer)",
             STACK_DEPTH, (long long)stack_channels[0], (long long)stack_channels[1],
             (long long)stack_channels[2], (long long)stack_channels[3], STACK_HW, STACK_HW,
             STACK_BUDGET_S);
    print_table_header(title);

    cr_progress prog;
    cr_progress_begin(&prog, "stack cases", (long)nk * nb);
    int ok = 1;
    for (int i = 0; i < nk; i++)
        for (int j = 0; j < nb; j++) {
            ok &= run_stack_case(ctx, &prog, ks[i], bs[j], rng);
            char what[32];
            snprintf(what, sizeof what, "k=%d batch=%d", ks[i], bs[j]);
            cr_progress_step(&prog, what);
        }
    cr_progress_end(&prog);
    printf("\n");
    return ok;
}

/* ---- (b) the standard layers --------------------------------------------------- */

/* Validates ch2 against ch1 on one standard layer, times both, reports. */
static int run_layer_case(lab_ctx *ctx, const cr_progress *prog, const lab_layer *l,
                          cr_rng *rng)
{
    lab_conv c;
    cr_status s = lab_conv_alloc(&c, &l->p, l->n, l->h, l->w, rng);
    if (s != CR_OK) return lab_report_failure(l->name, s);

    cr_tensor ref = {0};
    double rel = 0.0;
    int ok = 1;
    if ((s = lab_conv_run(&c, cr_conv2d_direct)) == CR_OK &&
        (s = cr_tensor_alloc(&ref, c.y.ndim, c.y.shape)) == CR_OK) {
        memcpy(ref.data, c.y.data, c.y.numel * sizeof(float));
        cr_tensor_poison(&c.y);
        s = lab_conv_run(&c, cr_conv2d_im2col);
    }
    if (s != CR_OK) ok = lab_report_failure(l->name, s);
    if (ok) {
        clear_progress(prog);
        ok = lab_check(l->name, &c.y, &ref, MAX_REL, &rel);
    }

    cr_bench_result td = {0}, ti = {0};
    if (ok && (s = lab_time_conv(ctx, cr_conv2d_direct, &c, &td)) != CR_OK)
        ok = lab_report_failure(l->name, s);
    if (ok && (s = lab_time_conv(ctx, cr_conv2d_im2col, &c, &ti)) != CR_OK)
        ok = lab_report_failure(l->name, s);
    size_t activations = (c.x.numel + c.y.numel) * sizeof(float);
    if (ok && (s = report_case(ctx, prog, "layer", l->name, l->p.kernel_h, l->n,
                               cr_conv_flops(&c.s), &td, &ti,
                               cr_im2col_workspace_bytes(&c.s), activations, rel)) != CR_OK)
        ok = lab_report_failure("CSV", s);

    cr_tensor_free(&ref);
    lab_conv_free(&c);
    return ok;
}

/* The standard layers (in quick mode the two cheapest), with a progress line. */
static int run_layers(lab_ctx *ctx, cr_rng *rng)
{
    int count, ok = 1;
    const lab_layer *layers = lab_standard_layers(&count);
    print_table_header("(b) standard layers (activ bytes: input + output)");
    cr_progress prog;
    cr_progress_begin(&prog, "layers", ctx->quick ? 2 : count);
    for (int i = 0; i < count; i++) {
        if (!lab_layer_selected(ctx, layers[i].name, quick_layers,
                                LAB_COUNT(quick_layers)))
            continue;
        ok &= run_layer_case(ctx, &prog, &layers[i], rng);
        cr_progress_step(&prog, layers[i].name);
    }
    cr_progress_end(&prog);
    printf("\n");
    return ok;
}

int main(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab02-im2col",
                      "Chapter 2: im2col + GEMM against chapter 1's direct convolution:\n"
                      "(a) conv+ReLU stacks, kernel 1..11 x batch 1..64; (b) the standard "
                      "layers.\nChapter 2 is validated against chapter 1 before timing.",
                      NULL, 0);
    if (rc != LAB_RUN) return rc;
    lab_banner(&ctx, "chapter 2, im2col + GEMM vs the direct convolution");

    char timing[200];
    snprintf(timing, sizeof timing, "median of --repeats runs after a warm-up, cache flushed "
             "before each; a stack case gets about %.0f s per implementation (fewer runs, or "
             "one, when runs are slow)", STACK_BUDGET_S);
    const char *const extra[] = {
        "stack", "3 x (conv + ReLU), 3->16->16->16 channels, 32x32, padding k/2",
        "workspace", "workspace_bytes is one im2col patch matrix; im2col allocates one per "
        "thread (min(threads, batch*groups) in use)",
        "timing", timing, NULL};
    cr_status st = lab_csv_begin(&ctx, csv_columns, extra);
    if (st != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return LAB_EXIT_FAILED;
    }

    double t0 = cr_now();
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int ok = run_stacks(&ctx, &rng);
    ok &= run_layers(&ctx, &rng);
    printf("%s in %.1f s\n", ok ? "all cases validated" : "VALIDATION FAILED",
           cr_now() - t0);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
