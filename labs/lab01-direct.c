/* lab01-direct.c — chapter 1's lab: the direct convolution on the standard layers,
 * and the cost of each padding mode.
 *
 * Every case is first validated twice: a spot check of output elements against a
 * float64 dot product computed here, and the threaded run against a 1-thread run
 * (each output element is computed by one thread in a fixed order, so the two must
 * agree bit for bit). Then it is timed: median of --repeats runs, cache flushed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compare.h"
#include "direct.h"
#include "lab_common.h"

#define SPOT_POINTS 256     /* output elements checked against float64 per case */
#define SPOT_MAX_REL 1e-5   /* relative L2 bound of those elements (fp32 sums of K <= 2304) */

static const char *const csv_columns[] = {
    "lab", "kind", "case", "impl", "padding", "batch", "cin", "cout", "h", "w", "k", "stride",
    "groups", "threads", "ms", "gflops", "rel_err", NULL};

/* ---- validation ------------------------------------------------------------ */

/* Output element y[n, k, oh, ow] of c computed in float64 from the definition. */
static double ref_element(const lab_conv *c, int64_t n, int64_t k, int64_t oh, int64_t ow)
{
    const cr_conv_params *p = &c->p;
    const cr_conv_shape *s = &c->s;
    const int64_t H = s->h_in, W = s->w_in, c0 = (k / s->cout_g) * s->cin_g;
    double acc = p->bias ? (double)c->b.data[k] : 0.0;
    for (int64_t ci = 0; ci < s->cin_g; ci++)
        for (int64_t r = 0; r < p->kernel_h; r++) {
            int64_t ih = cr_pad_index(oh * p->stride_h - p->pad_top + r * p->dilation_h, H,
                                      p->pad_mode);
            if (ih < 0) continue;
            for (int64_t q = 0; q < p->kernel_w; q++) {
                int64_t iw = cr_pad_index(ow * p->stride_w - p->pad_left + q * p->dilation_w,
                                          W, p->pad_mode);
                if (iw < 0) continue;
                double xv = c->x.data[((n * p->in_channels + c0 + ci) * H + ih) * W + iw];
                double wv = c->w.data[((k * s->cin_g + ci) * p->kernel_h + r) * p->kernel_w + q];
                acc += xv * wv;
            }
        }
    return acc;
}

/* The i-th spot-check position: the first quarter on the image borders (where
 * padding acts), the rest anywhere; *idx is the flat NCHW index into y. */
static void spot_position(const lab_conv *c, cr_rng *rng, int i, int64_t pos[4], size_t *idx)
{
    const cr_conv_shape *s = &c->s;
    pos[0] = cr_rng_int(rng, 0, s->batch - 1);
    pos[1] = cr_rng_int(rng, 0, c->p.out_channels - 1);
    pos[2] = cr_rng_int(rng, 0, s->h_out - 1);
    pos[3] = cr_rng_int(rng, 0, s->w_out - 1);
    if (i < SPOT_POINTS / 4) {
        if (i % 2) pos[2] = (i % 4 == 1) ? 0 : s->h_out - 1;  /* top or bottom row */
        else       pos[3] = (i % 4 == 0) ? 0 : s->w_out - 1;  /* left or right column */
    }
    *idx = (size_t)(((pos[0] * c->p.out_channels + pos[1]) * s->h_out + pos[2]) * s->w_out +
                    pos[3]);
}

/* Checks SPOT_POINTS elements of c->y against float64; returns 1 if the relative
 * L2 error over them is within SPOT_MAX_REL (prints the first faults otherwise). */
static int spot_check(const char *what, const lab_conv *c, cr_rng *rng, double *rel)
{
    float got[SPOT_POINTS], want[SPOT_POINTS];
    long long where[SPOT_POINTS][4];
    for (int i = 0; i < SPOT_POINTS; i++) {
        int64_t pos[4];
        size_t idx;
        spot_position(c, rng, i, pos, &idx);
        got[i] = c->y.data[idx];
        want[i] = (float)ref_element(c, pos[0], pos[1], pos[2], pos[3]);
        for (int d = 0; d < 4; d++) where[i][d] = pos[d];
    }
    cr_cmp cmp = cr_compare(got, want, SPOT_POINTS, SPOT_MAX_REL, 1e-6);
    *rel = cmp.rel_l2;
    if (cr_cmp_ok(&cmp, SPOT_MAX_REL)) return 1;
    fprintf(stderr, "%s: FAILED spot check vs float64: relative L2 %.3g > %.0e\n", what,
            cmp.rel_l2, SPOT_MAX_REL);
    for (int i = 0, shown = 0; i < SPOT_POINTS && shown < 8; i++) {
        if (fabs((double)got[i] - want[i]) <= 1e-6 + SPOT_MAX_REL * fabs((double)want[i]) &&
            isfinite(got[i]))
            continue;
        fprintf(stderr, "  fault at [%lld,%lld,%lld,%lld]: got %.9g, expected %.9g\n",
                where[i][0], where[i][1], where[i][2], where[i][3], got[i], want[i]);
        shown++;
    }
    return 0;
}

/* Runs c again on 1 thread and checks that every output element is bit-identical
 * to the threaded result now in c->y. */
static int check_one_thread_agrees(const lab_ctx *ctx, const char *what, lab_conv *c)
{
    if (ctx->threads == 1) return 1;  /* nothing to compare */
    cr_tensor threaded;
    cr_status st = cr_tensor_alloc(&threaded, c->y.ndim, c->y.shape);
    if (st != CR_OK) return lab_report_failure(what, st);
    memcpy(threaded.data, c->y.data, c->y.numel * sizeof(float));

    lab_set_threads(1);
    cr_tensor_poison(&c->y);
    st = lab_conv_run(c, cr_conv2d_direct);
    lab_set_threads(ctx->threads);
    int ok = st == CR_OK ? 1 : lab_report_failure(what, st);

    if (ok) {
        cr_cmp cmp = cr_compare(threaded.data, c->y.data, c->y.numel, 0.0, 0.0);
        if (cmp.n_bad) {
            long long shape[4] = {c->y.shape[0], c->y.shape[1], c->y.shape[2], c->y.shape[3]};
            fprintf(stderr, "%s: FAILED: %d threads and 1 thread differ in %zu element(s)\n",
                    what, ctx->threads, cmp.n_bad);
            cr_print_faults(stderr, threaded.data, c->y.data, c->y.numel, shape, 4, 0.0, 0.0, 8);
            ok = 0;
        }
    }
    cr_tensor_free(&threaded);
    return ok;
}

/* ---- one case ------------------------------------------------------------------ */

/* Validates and times (kind "layer" or "padding") the direct conv of p on an n x Cin x h x w input; prints a
 * table row and writes a CSV row. Returns 1 if it ran and validated. */
static int run_case(lab_ctx *ctx, const char *kind, const char *name, const cr_conv_params *p, int64_t n,
                    int64_t h, int64_t w, cr_rng *rng)
{
    lab_conv c;
    cr_status st = lab_conv_alloc(&c, p, n, h, w, rng);
    if (st != CR_OK) return lab_report_failure(name, st);

    double rel = NAN;
    int ok = 1;
    st = lab_conv_run(&c, cr_conv2d_direct);
    if (st != CR_OK) ok = lab_report_failure(name, st);
    if (ok) ok = spot_check(name, &c, rng, &rel);
    if (ok) ok = check_one_thread_agrees(ctx, name, &c);

    cr_bench_result t = {0};
    if (ok && (st = lab_time_conv(ctx, cr_conv2d_direct, &c, &t)) != CR_OK)
        ok = lab_report_failure(name, st);

    char shape[64];
    lab_layer_shape_str(p, n, h, w, shape, sizeof shape);
    double ms = t.median * 1e3, gflops = lab_gflops(cr_conv_flops(&c.s), t.median);
    printf("%-22s %-9s %-34s %9.2f %8.2f %9.1e  %s\n", name, cr_pad_mode_name(p->pad_mode),
           shape, ms, gflops, rel, ok ? "ok" : "FAILED");
    fflush(stdout);

    if (ok) {
        st = lab_csv_row(ctx, "lab01,%s,%s,direct,%s,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%d,"
                         "%.4f,%.4f,%.3g",
                         kind, name, cr_pad_mode_name(p->pad_mode), (long long)n,
                         (long long)p->in_channels, (long long)p->out_channels, (long long)h,
                         (long long)w, (long long)p->kernel_h, (long long)p->stride_h,
                         (long long)p->groups, ctx->threads, ms, gflops, rel);
        if (st != CR_OK) ok = lab_report_failure("CSV", st);
    }
    lab_conv_free(&c);
    return ok;
}

/* Prints the column titles of the table. */
static void print_table_header(const char *section)
{
    printf("%s\n", section);
    printf("%-22s %-9s %-34s %9s %8s %9s  %s\n", "case", "padding", "shape (NxCxHxW -> Cout)",
           "ms", "GFLOP/s", "spot err", "check");
    fflush(stdout);
}

/* ---- the experiments ------------------------------------------------------------ */

/* The standard layers: all of them in full mode; in quick mode the three smallest
 * (by FLOPs), so a quick run takes seconds. */
static int run_standard_layers(lab_ctx *ctx, cr_rng *rng)
{
    static const char *const quick_layers[] = {"a_3x3_64", "c_3x3_256", "e_1x1", "f_3x3_g32"};
    print_table_header("standard layers (median time, float32, batch as listed)");
    int count, ok = 1;
    const lab_layer *layers = lab_standard_layers(&count);
    for (int i = 0; i < count; i++) {
        const lab_layer *l = &layers[i];
        if (lab_layer_selected(ctx, l->name, quick_layers, LAB_COUNT(quick_layers)))
            ok &= run_case(ctx, "layer", l->name, &l->p, l->n, l->h, l->w, rng);
    }
    printf("\n");
    return ok;
}

/* One layer under the four padding modes (the same work; only the border rule
 * changes): a_3x3_64 in full mode, a 16-channel version of it in quick mode. */
static int run_padding_modes(lab_ctx *ctx, cr_rng *rng)
{
    const lab_layer *a = lab_find_layer("a_3x3_64");
    cr_conv_params p = a->p;
    const char *name = "padding_a_3x3_64";
    if (ctx->quick) {
        p.in_channels = p.out_channels = 16;
        name = "padding_a_3x3_16";
    }
    print_table_header("padding modes (same layer, border rule changes)");
    int ok = 1;
    const cr_pad_mode modes[] = {CR_PAD_ZEROS, CR_PAD_REFLECT, CR_PAD_REPLICATE, CR_PAD_CIRCULAR};
    for (int m = 0; m < 4; m++) {
        p.pad_mode = modes[m];
        ok &= run_case(ctx, "padding", name, &p, a->n, a->h, a->w, rng);
    }
    printf("\n");
    return ok;
}

int main(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab01-direct",
                      "Chapter 1: the direct convolution on the standard layers and under "
                      "each padding mode.\nEach case is validated against float64 and a "
                      "1-thread run, then timed.",
                      NULL, 0);
    if (rc != LAB_RUN) return rc;
    lab_banner(&ctx, "chapter 1, the direct convolution");

    cr_status st = lab_csv_begin(&ctx, csv_columns, NULL);
    if (st != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return LAB_EXIT_FAILED;
    }

    double t0 = cr_now();
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int ok = run_standard_layers(&ctx, &rng);
    ok &= run_padding_modes(&ctx, &rng);
    printf("%s in %.1f s\n", ok ? "all cases validated" : "VALIDATION FAILED",
           cr_now() - t0);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
