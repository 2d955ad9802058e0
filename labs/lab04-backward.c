/* lab04-backward.c — chapter 4's lab: the cost of the backward pass, and a real training run.
 *
 * (1) Timing: forward, backward (dx + dw + db) and forward+backward of the standard
 *     layers with their kernel replaced by k = 3, 5, 7 (padding k/2, stride, groups and
 *     batch kept), reference (chapter 1's loops forward, chapter 4's loops backward)
 *     against fast (chapter 3's cr_conv2d_fast, chapter 4's GEMM backward). The fast
 *     gradients are validated against the reference ones first (relative L2 <= 1e-4).
 *     GFLOP/s counts the forward's FLOP once and the backward's twice (dx and dw).
 *     The peer, PyTorch (reference/bench_pytorch.py with /usr/bin/python3, in child
 *     processes, same cases and thread count; with 2+ threads the faster of
 *     OMP_WAIT_POLICY=active and passive), is timed in the same run, case by case just
 *     before our fast version of the same case (the first case before the table), so a
 *     slow minute of a shared host lands on both sides: rows impl=pytorch (no
 *     peak_bytes); without an importable torch the lab says so. The environment
 *     variable CR_BENCH_PYTORCH, when set, names another script (a test's stand-in).
 *     The three passes are timed the same way, in rounds (forward, backward,
 *     forward+backward, cache flushed and a 2 ms pause before each) after one warm-up
 *     round: as many rounds as fit in the budget (at least --repeats when a round is
 *     short enough, at most 100); ms is the median over the rounds, ms_min the fastest;
 *     PyTorch is timed by the same rule (its script writes a 64 MiB buffer and pauses
 *     2 ms before each run, the warm-up round's too). Both
 *     processes run with glibc keeping freed memory (see KEEP_TRIM).
 *     peak_bytes: the operand tensors a pass needs (forward: x, w, b, y; backward: x, w,
 *     dy, dx, dw, db; both: their union) plus the highest heap use above the starting
 *     level during the warm-up round. The heap is measured by counting every malloc/free
 *     of this process (this file replaces malloc and its relatives by counting wrappers
 *     around glibc's __libc_malloc family; off in sanitizer builds, where the column
 *     then holds the operands alone).
 * (2) Training (--data DIR): a small fully-convolutional network learns CamVid's 11
 *     classes at 1/4 resolution (120 x 90) with AdamW and cross-entropy ignoring void,
 *     through chapter 4's training engine (train.h: step, epoch, schedule, evaluation,
 *     checkpoints; metrics.h: IoU); a progress line shows the loss; the CSV gets one
 *     `train` row per step (epoch, step, loss), one `val` row per epoch (validation loss
 *     and mean IoU), and `iou` rows at the end (per class and mean, validation and test
 *     splits). Same --seed and --threads give a bit-identical loss curve, and
 *     --checkpoint FILE / --resume FILE continue a run bit for bit (same --epochs: the
 *     schedule spans them). Every split is loaded and checked at --factor before any
 *     work; --quick trains on the first 16 train frames (8 val, 8 test).
 * (3) The other layers (--part layers): chapter 4's non-convolution layers as chapter 8's
 *     FPN trains with them (batch 8, 192 x 192 crops), forward and backward timed like
 *     (1), each against the bytes its pass must move and the machine's STREAM-style
 *     triad bandwidth measured in the same run, and against PyTorch's same ops
 *     (reference/bench_layers_pytorch.py, same child-process rule as (1), each op just
 *     before ours; CR_BENCH_LAYERS_PYTORCH names a stand-in). See layer_specs and
 *     op_bytes below.
 * CSV columns: lab,kind,case,impl,pass,k,batch,threads,ms,gflops,peak_bytes,epoch,step,
 * loss,split,class,iou,ms_min,bytes,gbps,pct_triad,vs_pytorch,target (columns a kind does
 * not use are empty; the last five are kind=layer_op's and kind=triad's). */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conv_backward.h"
#include "conv_gemm.h"
#include "dataset.h"
#include "direct.h"
#include "heap_count.h"
#include "lab_common.h"
#include "loss.h"
#include "metrics.h"
#include "model.h"
#include "optim.h"
#include "progress.h"
#include "train.h"

#define MAX_REL 1e-4          /* fast vs reference gradients, relative L2 (sums of 1e4+ terms) */
#define BUDGET_S 1.0          /* seconds of timed runs per implementation, pass and case */

/* ---- counting allocator: labs/heap_count.c (peak bytes above a mark) ---------------- */

/* ---- options and CSV --------------------------------------------------------------------- */

static const char *data_dir = NULL, *checkpoint_path = NULL, *resume_path = NULL;
static const char *part = "all";
static int epochs = 25, train_seed = 1, batch_size = 8, factor = 4;
static double lr = 2e-3;

static const cr_arg extra_args[] = {
    {"data", CR_ARG_STRING, &data_dir, "DIR",
     "CamVid in SegNet's layout (train/, trainannot/, val/, ...): runs the training part", 0, -1},
    {"epochs", CR_ARG_INT, &epochs, "N", "training epochs", 1, 1000},
    {"seed", CR_ARG_INT, &train_seed, "N", "training seed: init, shuffling, flips", 0,
     2147483647},
    {"batch", CR_ARG_INT, &batch_size, "N", "training batch size", 1, 256},
    {"factor", CR_ARG_INT, &factor, "N", "image reduction factor (4: 480x360 -> 120x90)",
     1, 32},
    {"lr", CR_ARG_DOUBLE, &lr, "X", "AdamW peak learning rate (finite, > 0)", 0, -1},
    {"checkpoint", CR_ARG_STRING, &checkpoint_path, "FILE",
     "save a checkpoint (weights, optimizer, schedule, random streams) after every epoch", 0, -1},
    {"resume", CR_ARG_STRING, &resume_path, "FILE",
     "continue the run a --checkpoint FILE saved (--epochs stays the total)", 0, -1},
    {"part", CR_ARG_STRING, &part, "WHICH", "all, timing, layers or train", 0, -1},
};

static const char *const csv_columns[] = {
    "lab", "kind", "case", "impl", "pass", "k", "batch", "threads", "ms", "gflops",
    "peak_bytes", "epoch", "step", "loss", "split", "class", "iou", "ms_min", "bytes", "gbps",
    "pct_triad", "vs_pytorch", "target", NULL};
#define NO_LAYER_COLS ",,,,,"   /* the last five columns, (3)'s alone, empty in other rows */

/* ---- (1) timing -------------------------------------------------------------------------- */

typedef struct {
    lab_conv c;            /* x, w, b, y */
    cr_tensor dy, dx, dw, db;
    cr_conv2d_fn fwd;
    cr_conv2d_backward_fn bwd;
} grad_case;

/* Runs the forward pass. */
static cr_status run_fwd(void *arg)
{
    grad_case *g = arg;
    return g->fwd(&g->c.p, &g->c.x, &g->c.w, g->c.p.bias ? &g->c.b : NULL, &g->c.y);
}

/* Runs the backward pass (dx, dw, db). */
static cr_status run_bwd(void *arg)
{
    grad_case *g = arg;
    return g->bwd(&g->c.p, &g->c.x, &g->c.w, &g->dy, &g->dx, &g->dw, g->c.p.bias ? &g->db : NULL);
}

/* Runs forward then backward. */
static cr_status run_both(void *arg)
{
    cr_status s = run_fwd(arg);
    return s ? s : run_bwd(arg);
}

/* Frees a case's tensors. */
static void grad_case_free(grad_case *g)
{
    lab_conv_free(&g->c);
    cr_tensor_free(&g->dy);
    cr_tensor_free(&g->dx);
    cr_tensor_free(&g->dw);
    cr_tensor_free(&g->db);
}

/* Copies t into a new tensor *out. */
static cr_status clone(const cr_tensor *t, cr_tensor *out)
{
    cr_status s = cr_tensor_alloc(out, t->ndim, t->shape);
    if (!s) memcpy(out->data, t->data, t->numel * sizeof(float));
    return s;
}

/* Clears a live progress line on a terminal before a table row. */
static void clear_progress(const cr_progress *prog)
{
    if (prog && prog->tty) fputs("\r\033[K", stderr);
}

typedef struct {
    double ms[3], min_ms[3];   /* forward, backward, both: median and fastest */
    long long peak[3];
} impl_times;

#define MAX_ROUNDS 100

/* glibc keeps freed memory instead of giving it back to the kernel after every call, in
 * this process (keep_freed_memory) and in PyTorch's (the same settings as environment
 * variables): on the lab's virtual machine a first touch of a page costs a page fault
 * many times dearer than on bare metal, and a_3x3_64's forward took 8-15 ms instead of
 * 1.3 ms, PyTorch's alike, when each call's workspace came back as fresh pages. */
#define KEEP_TRIM (1 << 30)            /* M_TRIM_THRESHOLD: trim the heap only past 1 GiB */
#define KEEP_MMAP (32 << 20)           /* M_MMAP_THRESHOLD: glibc's largest, 32 MiB */
#define KEEP_ENV "MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432"

/* Tells this process's glibc to keep freed memory (see KEEP_TRIM). */
static void keep_freed_memory(void)
{
    mallopt(M_TRIM_THRESHOLD, KEEP_TRIM);
    mallopt(M_MMAP_THRESHOLD, KEEP_MMAP);
}
#define SETTLE_NS 2000000   /* the pause before each timed run (bench_pytorch.py's too) */

/* The cache flushed, then a 2 ms pause: on a shared machine the flush's 64 MiB of stores
 * use up most of a time slice, and the timed run that followed was often preempted at
 * once (a median 4x the fastest run on a_3x3_64 at load 12); after a short sleep it
 * starts on a fresh slice. */
static void flush_and_settle(void)
{
    cr_flush_cache();
    const struct timespec ts = {0, SETTLE_NS};
    nanosleep(&ts, NULL);
}

/* Times the three passes of one implementation the same way, in rounds (forward,
 * backward, both; flush_and_settle before each) after a warm-up round that also
 * measures their peak memory: as many rounds as fit in the budget, at least --repeats
 * when a round takes under the budget, at most MAX_ROUNDS. Median and fastest of each. */
static cr_status time_impl(const lab_ctx *ctx, grad_case *g, impl_times *t)
{
    cr_status (*fns[3])(void *) = {run_fwd, run_bwd, run_both};
    const size_t F = sizeof(float);
    const long long fwd_ops = (long long)((g->c.x.numel + g->c.w.numel + g->c.b.numel + g->c.y.numel) * F);
    const long long bwd_ops = (long long)((g->c.x.numel + g->c.w.numel + g->dy.numel + g->dx.numel +
                                           g->dw.numel + g->db.numel) * F);
    const long long ops[3] = {fwd_ops, bwd_ops, fwd_ops + (long long)((g->dy.numel + g->dx.numel + g->dw.numel + g->db.numel) * F)};
    const double budget = 3 * (ctx->quick ? 0.3 : BUDGET_S);
    double first = 0;
    for (int i = 0; i < 3; i++) {   /* the warm-up round: memory, and a round's length */
        const long long base = cr_heap_mark();
        flush_and_settle();
        const double t0 = cr_now();
        cr_status s = fns[i](g);
        first += cr_now() - t0;
        if (s) return s;
        t->peak[i] = ops[i] + (CR_HEAP_COUNTING ? cr_heap_peak() - base : 0);
    }
    int rounds = (int)(budget / (first > 1e-9 ? first : 1e-9));
    if (first <= budget && rounds < ctx->repeats) rounds = ctx->repeats;
    rounds = rounds < 1 ? 1 : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    double times[3][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < 3; i++) {
            flush_and_settle();
            const double t0 = cr_now();
            cr_status s = fns[i](g);
            times[i][r] = cr_now() - t0;
            if (s) return s;
        }
    for (int i = 0; i < 3; i++) {
        double med;
        lab_median_p90(times[i], rounds, &med, NULL);   /* sorts: [0] is the fastest */
        t->min_ms[i] = times[i][0] * 1e3;
        t->ms[i] = med * 1e3;
    }
    return CR_OK;
}

/* ---- the peer: PyTorch, timed in this run by a child process --------------------------- */

#ifndef CR_BENCH_PYTORCH
#define CR_BENCH_PYTORCH "reference/bench_pytorch.py"
#endif
#define MAX_TORCH_ROWS 64

/* PyTorch's times of one case (forward, backward, forward+backward; 0 = not measured). */
typedef struct {
    char name[32];
    long long k, batch;
    double ms[3], min_ms[3];   /* median and fastest */
    char policy[3][12];   /* the OMP_WAIT_POLICY each time was measured with */
} torch_row;

static torch_row torch_rows[MAX_TORCH_ROWS];
static int n_torch_rows;
static char torch_note[320] = "not run";   /* for the banner and the CSV header */

static const char *const pass_names[3] = {"forward", "backward", "forward+backward"};
static const int64_t timing_ks[] = {3, 5, 7};
static const char *const quick_layers[] = {"a_3x3_64", "f_3x3_g32"};   /* k = 3 only */

/* PyTorch's row of (name, k), or NULL. */
static torch_row *torch_find(const char *name, long long k)
{
    for (int i = 0; i < n_torch_rows; i++)
        if (strcmp(torch_rows[i].name, name) == 0 && torch_rows[i].k == k) return &torch_rows[i];
    return NULL;
}

/* Keeps the faster (by median) of a PyTorch time already held and a new one for (name,
 * k, pass); min_ms goes with its median. */
static void torch_merge(const char *name, long long k, long long batch, const char *pass,
                        double ms, double min_ms, const char *policy)
{
    int ps = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(pass, pass_names[i]) == 0) ps = i;
    torch_row *r = torch_find(name, k);
    if (ps < 0 || !(ms > 0)) return;
    if (!r) {
        if (n_torch_rows == MAX_TORCH_ROWS) return;
        r = &torch_rows[n_torch_rows++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", name);
        r->k = k;
        r->batch = batch;
    }
    if (r->ms[ps] == 0 || ms < r->ms[ps]) {
        r->ms[ps] = ms;
        r->min_ms[ps] = min_ms > 0 ? min_ms : ms;
        snprintf(r->policy[ps], sizeof r->policy[ps], "%s", policy);
    }
}

/* Keeps a time of PyTorch's (name, k, batch, pass, median and fastest ms, wait policy). */
typedef void (*torch_merge_fn)(const char *name, long long k, long long batch, const char *pass,
                               double ms, double min_ms, const char *policy);

/* Runs a peer script (bench_pytorch.py, bench_layers_pytorch.py) once on the cases (its
 * arguments in `cases`) with ctx->threads threads and OMP_WAIT_POLICY = policy (NULL:
 * unset), handing each row to merge. The child sets its thread count before torch loads.
 * Returns the number of rows read; *info receives its info line, or the last line it
 * printed. */
static int torch_run(const lab_ctx *ctx, const char *script, torch_merge_fn merge,
                     const char *policy, const char *cases, char *info, size_t info_len)
{
    static char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "%s OMP_NUM_THREADS=%d %s%s /usr/bin/python3 '%s' --threads %d --budget %g "
             "--repeats %d%s 2>&1",
             KEEP_ENV, ctx->threads, policy ? "OMP_WAIT_POLICY=" : "", policy ? policy : "",
             script, ctx->threads, ctx->quick ? 0.3 : BUDGET_S, ctx->repeats, cases);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f) {
        snprintf(info, info_len, "cannot start /usr/bin/python3");
        return 0;
    }
    char line[512], name[32], pass[32];
    long long k, batch;
    int threads, rows = 0;
    double ms, min_ms;
    info[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "row %31s %lld %lld %d %31s %lf %lf", name, &k, &batch, &threads, pass,
                   &ms, &min_ms) == 7) {
            merge(name, k, batch, pass, ms, min_ms, policy ? policy : "default");
            rows++;
        } else if (strncmp(line, "info ", 5) == 0 || (rows == 0 && line[0])) {
            const char *src = strncmp(line, "info ", 5) == 0 ? line + 5 : line;
            size_t n = strlen(src) < info_len ? strlen(src) : info_len - 1;
            memcpy(info, src, n);
            info[n] = '\0';
            char *wp = strstr(info, " wait_policy=");   /* the caller names the policies */
            if (wp) *wp = '\0';
        }
    }
    pclose(f);
    return rows;
}

/* Runs a peer script on cases in child processes: once with one thread; with more, once
 * per OMP_WAIT_POLICY (active, passive), merge keeping the faster time of each case and
 * pass. Writes what ran, or why nothing did, into note (len bytes). */
static void torch_policies(const lab_ctx *ctx, const char *script, torch_merge_fn merge,
                           const char *cases, char *note, size_t len)
{
    char info[2][200];
    int rows;
    if (ctx->threads == 1) {
        rows = torch_run(ctx, script, merge, NULL, cases, info[0], sizeof info[0]);
        snprintf(note, len, "PyTorch %s (OMP_NUM_THREADS=1)", info[0]);
    } else {
        rows = torch_run(ctx, script, merge, "active", cases, info[0], sizeof info[0]);
        rows += torch_run(ctx, script, merge, "passive", cases, info[1], sizeof info[1]);
        snprintf(note, len, "PyTorch %s; best of OMP_WAIT_POLICY=active and passive per case "
                 "and pass", info[0]);
    }
    if (rows == 0)
        snprintf(note, len, "PyTorch not measured: /usr/bin/python3 %s gave no times (%s)",
                 script, info[0][0] ? info[0] : "no output");
}

/* Appends to buf (len bytes) bench_pytorch.py's --case argument for layer l with kernel k. */
static void torch_case_arg(const lab_layer *l, int64_t k, char *buf, size_t len)
{
    const size_t n = strlen(buf);
    snprintf(buf + n, len - n, " --case %s,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld", l->name,
             (long long)l->p.in_channels, (long long)l->p.out_channels, (long long)l->h,
             (long long)l->w, (long long)k, (long long)l->p.stride_h, (long long)k / 2,
             (long long)l->p.groups, (long long)l->n);
}

static int torch_available;   /* the first case's PyTorch run gave times */

/* Times PyTorch on one case (layer l, kernel k) in child processes: once with one thread;
 * with more, once per OMP_WAIT_POLICY (active, passive), keeping the faster time of each
 * pass. Each case runs just before ours of the same case (timing_case), so that a slow
 * minute of a shared host lands on both sides; the first case runs before the CSV,
 * whose header names the peer (torch_note). Without PyTorch it says so once and goes on. */
static void torch_measure_case(const lab_ctx *ctx, const lab_layer *l, int64_t k, int first)
{
    if (!first && (!torch_available || torch_find(l->name, (long long)k))) return;
    const char *script = getenv("CR_BENCH_PYTORCH");   /* a stand-in's path (tests) */
    if (!script || !*script) script = CR_BENCH_PYTORCH;
    char cases[256] = "", note[280];
    torch_case_arg(l, k, cases, sizeof cases);
    if (first)
        printf("PyTorch, the peer: %s in child processes, each case just before ours ...\n",
               script);
    torch_policies(ctx, script, torch_merge, cases, note, sizeof note);
    if (first) {
        torch_available = torch_find(l->name, (long long)k) != NULL;
        snprintf(torch_note, sizeof torch_note, "%s%s", note,
                 torch_available ? "; each case timed just before ours" : "");
        printf("  %s\n\n", torch_note);
    } else if (!torch_find(l->name, (long long)k)) {
        printf("  %s k=%lld: %s\n", l->name, (long long)k, note);
    }
}

/* The first case the timing table runs, measured by PyTorch before the CSV begins. */
static void torch_measure(const lab_ctx *ctx)
{
    int count;
    const lab_layer *layers = lab_standard_layers(&count);
    for (int i = 0; i < count; i++)
        if (lab_layer_selected(ctx, layers[i].name, quick_layers, LAB_COUNT(quick_layers))) {
            torch_measure_case(ctx, &layers[i], timing_ks[0], 1);
            return;
        }
}

/* One standard layer with kernel k: validates fast against reference gradients, times
 * both, prints and writes rows (and PyTorch's, measured before, when it ran); fb_gflops
 * receives a_3x3_64 k=3's forward+backward GFLOP/s, fast and PyTorch. Returns 1 if it
 * validated. */
static int timing_case(lab_ctx *ctx, const cr_progress *prog, const lab_layer *l, int64_t k,
                       cr_rng *rng, double *fb_gflops)
{
    char what[64];
    snprintf(what, sizeof what, "%s k=%lld", l->name, (long long)k);
    cr_conv_params p = l->p;
    p.kernel_h = p.kernel_w = k;
    cr_conv_set_padding(&p, k / 2, k / 2);
    grad_case g = {0};
    cr_status s = lab_conv_alloc(&g.c, &p, l->n, l->h, l->w, rng);
    if (!s) s = cr_tensor_alloc(&g.dy, 4, g.c.y.shape);
    if (!s) s = cr_tensor_alloc(&g.dx, 4, g.c.x.shape);
    if (!s) s = cr_tensor_alloc(&g.dw, 4, g.c.w.shape);
    if (!s) s = cr_tensor_alloc(&g.db, 1, &p.out_channels);
    if (s) {
        grad_case_free(&g);
        return lab_report_failure(what, s);
    }
    cr_tensor_fill_uniform(&g.dy, rng, -1, 1);
    const double F = cr_conv_flops(&g.c.s);
    impl_times t[2];
    cr_tensor ref[3] = {{0}}, *out[3] = {&g.dx, &g.dw, &g.db};
    int ok = 1;
    for (int impl = 0; impl < 2 && ok; impl++) {
        g.fwd = impl == 0 ? cr_conv2d_direct : cr_conv2d_fast;
        g.bwd = impl == 0 ? cr_conv2d_backward_ref : cr_conv2d_backward;
        if (impl == 1) {   /* the peer's times of this case, just before ours */
            clear_progress(prog);
            torch_measure_case(ctx, l, k, 0);
        }
        if ((s = time_impl(ctx, &g, &t[impl]))) {
            ok = lab_report_failure(what, s);
            break;
        }
        if (impl == 0) {
            for (int i = 0; i < 3 && !s; i++) s = clone(out[i], &ref[i]);
            if (s) ok = lab_report_failure(what, s);
        } else {
            clear_progress(prog);
            const char *names[3] = {"dx", "dw", "db"};
            for (int i = 0; i < 3 && ok; i++) {
                char w2[80];
                snprintf(w2, sizeof w2, "%s %s", what, names[i]);
                ok = lab_check(w2, out[i], &ref[i], MAX_REL, NULL);
            }
        }
    }
    for (int i = 0; i < 3; i++) cr_tensor_free(&ref[i]);
    if (ok) {
        const char *impl_names[2] = {"reference", "fast"};
        const double flops[3] = {F, 2 * F, 3 * F};
        clear_progress(prog);
        for (int impl = 0; impl < 2; impl++) {
            const double *ms = t[impl].ms, *lo = t[impl].min_ms;
            printf("%-12s %2lld %5lld %-9s %7.2f/%-7.2f %7.2f/%-7.2f %7.2f/%-7.2f %7.1f %7.1f "
                   "%7.1f %9.1f\n", l->name, (long long)k, (long long)l->n, impl_names[impl],
                   lo[0], ms[0], lo[1], ms[1], lo[2], ms[2], lab_gflops(flops[0], ms[0] / 1e3),
                   lab_gflops(flops[1], ms[1] / 1e3), lab_gflops(flops[2], ms[2] / 1e3),
                   t[impl].peak[2] / 1048576.0);
            for (int ps = 0; ps < 3; ps++)
                if (lab_csv_row(ctx, "lab04,conv,%s,%s,%s,%lld,%lld,%d,%.4f,%.4f,%lld,,,,,,,%.4f" NO_LAYER_COLS,
                                l->name, impl_names[impl], pass_names[ps], (long long)k,
                                (long long)l->n, ctx->threads, ms[ps],
                                lab_gflops(flops[ps], ms[ps] / 1e3), t[impl].peak[ps], lo[ps]))
                    ok = lab_report_failure("CSV", CR_EIO);
        }
        const torch_row *tr = torch_find(l->name, (long long)k);
        if (tr) {
            printf("%-12s %2lld %5lld %-9s %7.2f/%-7.2f %7.2f/%-7.2f %7.2f/%-7.2f %7.1f %7.1f "
                   "%7.1f %9s   fast/PyTorch f+b: %.2fx median, %.2fx min\n", l->name,
                   (long long)k, (long long)l->n, "pytorch", tr->min_ms[0], tr->ms[0],
                   tr->min_ms[1], tr->ms[1], tr->min_ms[2], tr->ms[2],
                   lab_gflops(flops[0], tr->ms[0] / 1e3), lab_gflops(flops[1], tr->ms[1] / 1e3),
                   lab_gflops(flops[2], tr->ms[2] / 1e3), "-", tr->ms[2] / t[1].ms[2],
                   tr->min_ms[2] / t[1].min_ms[2]);
            for (int ps = 0; ps < 3; ps++)
                if (tr->ms[ps] > 0 &&
                    lab_csv_row(ctx, "lab04,conv,%s,pytorch,%s,%lld,%lld,%d,%.4f,%.4f,,,,,,,,%.4f" NO_LAYER_COLS,
                                l->name, pass_names[ps], (long long)k, (long long)l->n,
                                ctx->threads, tr->ms[ps], lab_gflops(flops[ps], tr->ms[ps] / 1e3),
                                tr->min_ms[ps]))
                    ok = lab_report_failure("CSV", CR_EIO);
        }
        if (strcmp(l->name, "a_3x3_64") == 0 && k == 3) {
            fb_gflops[0] = lab_gflops(3 * F, t[1].ms[2] / 1e3);
            fb_gflops[1] = tr && tr->ms[2] > 0 ? lab_gflops(3 * F, tr->ms[2] / 1e3) : 0.0;
        }
        fflush(stdout);
    }
    grad_case_free(&g);
    return ok;
}

/* The timing table: every standard layer x k in {3, 5, 7} (quick: two small cases). */
static int run_timing(lab_ctx *ctx, cr_rng *rng)
{
    int count;
    const lab_layer *layers = lab_standard_layers(&count);
    printf("(1) convolution forward and backward, standard layers with kernel k (padding k/2)\n"
           "    ms: fastest/median of the rounds; GFLOP/s (of the median): forward F, backward 2F\n"
           "    (dx and dw), both 3F; peak MiB: forward+backward\n");
    printf("%-12s %2s %5s %-9s %15s %15s %15s %7s %7s %7s %9s\n", "case", "k", "batch", "impl",
           "fwd ms min/med", "bwd ms min/med", "f+b ms min/med", "fwd GF", "bwd GF", "f+b GF",
           "peak MiB");
    const int total = ctx->quick ? 2 : count * 3;
    cr_progress prog;
    cr_progress_begin(&prog, "timing cases", total);
    int ok = 1;
    double fb[2] = {0.0, 0.0};
    for (int i = 0; i < count; i++) {
        if (!lab_layer_selected(ctx, layers[i].name, quick_layers,
                                LAB_COUNT(quick_layers)))
            continue;
        for (int j = 0; j < (ctx->quick ? 1 : 3); j++) {
            ok &= timing_case(ctx, &prog, &layers[i], timing_ks[j], rng, fb);
            char what[48];
            snprintf(what, sizeof what, "%s k=%lld", layers[i].name, (long long)timing_ks[j]);
            cr_progress_step(&prog, what);
        }
    }
    cr_progress_end(&prog);
    if (fb[0] > 0 && fb[1] > 0)
        printf("\na_3x3_64 k=3 forward+backward: fast %.1f GFLOP/s, PyTorch %.1f GFLOP/s "
               "(this run, %d thread%s): %.2fx\n", fb[0], fb[1], ctx->threads,
               ctx->threads > 1 ? "s" : "", fb[0] / fb[1]);
    else if (fb[0] > 0)
        printf("\na_3x3_64 k=3 forward+backward: fast %.1f GFLOP/s (%s)\n", fb[0], torch_note);
    printf("\n");
    return ok;
}

/* ---- (3) the other layers: bytes moved, the triad, PyTorch ------------------------------- */

#ifndef CR_BENCH_LAYERS_PYTORCH
#define CR_BENCH_LAYERS_PYTORCH "reference/bench_layers_pytorch.py"
#endif
#define GN_GROUPS 32              /* chapter 8's decoder: GroupNorm(32, C) */
#define CE_IGNORE_EVERY 10        /* cross-entropy: every 10th pixel ignored (void) */
#define TARGET_SPEED 1.0          /* issue 12: >= 1.0x PyTorch ... */
#define TARGET_PCT_TRIAD 60.0     /* ... or >= 60% of the triad bandwidth */
#define TRIAD_FLOATS (1 << 25)    /* per array: 3 x 128 MiB, far beyond any L3 */
#define TRIAD_FLOATS_QUICK (1 << 22)

typedef enum { OP_BN, OP_GN, OP_RELU, OP_MAXPOOL, OP_NEAREST, OP_BILINEAR, OP_ADD, OP_CE,
               OP_ADAMW } op_kind;

/* One layer as chapter 8's FPN trains with it. Input n x c x h x w (--quick: qn x qc x qh
 * x qw); adamw: n blocks of one c x c x h x w weight and two vectors of c. */
typedef struct {
    const char *name;      /* the CSV's case */
    const char *kind;      /* bench_layers_pytorch.py's kind */
    op_kind op;
    int64_t n, c, h, w;
    int64_t qn, qc, qh, qw;
    const char *where;     /* where the FPN uses it, at batch 8 and 192 x 192 crops */
} layer_spec;

static const layer_spec layer_specs[] = {
    {"batchnorm", "batchnorm", OP_BN, 8, 256, 48, 48, 1, 64, 24, 24,
     "encoder layer1 output, 256 ch at 1/4, training mode"},
    {"groupnorm32", "groupnorm", OP_GN, 8, 128, 48, 48, 1, 64, 24, 24,
     "decoder segmentation block, 128 ch at 1/4, 32 groups"},
    {"relu", "relu", OP_RELU, 8, 256, 48, 48, 1, 64, 24, 24, "encoder layer1, 256 ch at 1/4"},
    {"maxpool3x3s2", "maxpool", OP_MAXPOOL, 8, 64, 96, 96, 1, 64, 24, 24,
     "stem, 64 ch, 1/2 -> 1/4, padding 1"},
    {"nearest_x2", "nearest", OP_NEAREST, 8, 256, 24, 24, 1, 64, 12, 12,
     "FPN top-down, 256 ch, 1/8 -> 1/4"},
    {"bilinear_x2", "bilinear", OP_BILINEAR, 8, 128, 24, 24, 1, 64, 12, 12,
     "segmentation block, 128 ch, 1/8 -> 1/4, align_corners"},
    {"add", "add", OP_ADD, 8, 256, 48, 48, 1, 64, 24, 24, "FPN lateral + top-down, 256 ch at 1/4"},
    {"cross_entropy", "cross_entropy", OP_CE, 8, 11, 192, 192, 1, 11, 48, 48,
     "11 classes at full crop, 1 pixel in 10 ignored"},
    {"adamw", "adamw", OP_ADAMW, 42, 256, 3, 3, 2, 64, 3, 3,
     "42 x (256x256x3x3 + 2 x 256) = 24.8M parameters, 126 tensors"},
};

/* The passes each op times: most have forward and backward; cross-entropy's backward
 * comes with its loss (one call), so it times the loss alone and loss + gradient; AdamW
 * has one step. */
static int op_passes(op_kind op, const char **names)
{
    if (op == OP_ADAMW) {
        names[0] = "step";
        return 1;
    }
    names[0] = "forward";
    names[1] = op == OP_CE ? "forward+backward" : "backward";
    return 2;
}

/* One op's operands. add: x and b in, y out, dy in, dx and db out. */
typedef struct {
    const layer_spec *spec;
    int64_t n, c, h, w;
    cr_tensor x, b, y, dy, dx, db;
    cr_tensor gamma, beta, dgamma, dbeta, mean, invstd, rmean, rvar;
    int64_t *argmax;
    int32_t *target;
    cr_bn_params bn;
    cr_pool_params pool;
    cr_upsample_params up;
    double loss;
    int np;                    /* adamw: parameter tensors */
    cr_tensor *params, *grads;
    cr_tensor **pp;
    const cr_tensor **gp;
    cr_optimizer opt;
} op_state;

/* Frees an op's operands (safe on a zeroed or half-built one). */
static void op_free(op_state *s)
{
    cr_tensor *ts[] = {&s->x, &s->b, &s->y, &s->dy, &s->dx, &s->db, &s->gamma, &s->beta,
                       &s->dgamma, &s->dbeta, &s->mean, &s->invstd, &s->rmean, &s->rvar};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) cr_tensor_free(ts[i]);
    for (int i = 0; i < s->np; i++) {
        if (s->params) cr_tensor_free(&s->params[i]);
        if (s->grads) cr_tensor_free(&s->grads[i]);
    }
    cr_optim_free(&s->opt);
    free(s->params);
    free(s->grads);
    free(s->pp);
    free(s->gp);
    free(s->argmax);
    free(s->target);
    memset(s, 0, sizeof *s);
}

/* AdamW's parameter set: n blocks of (c x c x h x w weight, c, c), random values and
 * gradients, and its optimizer state (zero). */
static cr_status op_alloc_adamw(op_state *s, cr_rng *rng)
{
    s->np = (int)(3 * s->n);
    s->params = calloc((size_t)s->np, sizeof *s->params);
    s->grads = calloc((size_t)s->np, sizeof *s->grads);
    s->pp = calloc((size_t)s->np, sizeof *s->pp);
    s->gp = calloc((size_t)s->np, sizeof *s->gp);
    if (!s->params || !s->grads || !s->pp || !s->gp)
        return cr_fail(CR_ENOMEM, "adamw: %d parameter tensors", s->np);
    cr_status st = CR_OK;
    for (int i = 0; i < s->np && !st; i++) {
        const int64_t vec = s->c;
        st = i % 3 == 0 ? cr_tensor_alloc4(&s->params[i], s->c, s->c, s->h, s->w)
                        : cr_tensor_alloc(&s->params[i], 1, &vec);
        if (!st) st = cr_tensor_alloc(&s->grads[i], s->params[i].ndim, s->params[i].shape);
        if (st) break;
        cr_tensor_fill_uniform(&s->params[i], rng, -0.1f, 0.1f);
        cr_tensor_fill_uniform(&s->grads[i], rng, -1, 1);
        s->pp[i] = &s->params[i];
        s->gp[i] = &s->grads[i];
    }
    if (st) return st;
    const cr_optim_config cfg = cr_adamw_config(1e-3, 0.01);
    return cr_optim_init(&s->opt, &cfg, s->pp, s->np);
}

/* Allocates an op's operands at its full (or --quick) shape, inputs and upstream
 * gradients uniform in [-1, 1), norms' gamma in [0.5, 1.5) and beta in [-0.5, 0.5). */
static cr_status op_alloc(op_state *s, const layer_spec *spec, int quick, cr_rng *rng)
{
    memset(s, 0, sizeof *s);
    s->spec = spec;
    s->n = quick ? spec->qn : spec->n;
    s->c = quick ? spec->qc : spec->c;
    s->h = quick ? spec->qh : spec->h;
    s->w = quick ? spec->qw : spec->w;
    if (spec->op == OP_ADAMW) return op_alloc_adamw(s, rng);
    cr_status st = cr_tensor_alloc4(&s->x, s->n, s->c, s->h, s->w);
    int64_t ho = s->h, wo = s->w;
    if (!st && spec->op == OP_MAXPOOL) {
        s->pool = cr_pool_params_make(3, 2, 1);
        st = cr_maxpool2d_out_size(&s->pool, s->h, s->w, &ho, &wo);
    } else if (!st && (spec->op == OP_NEAREST || spec->op == OP_BILINEAR)) {
        s->up = (cr_upsample_params){.mode = spec->op == OP_NEAREST ? CR_UPSAMPLE_NEAREST
                                                                   : CR_UPSAMPLE_BILINEAR,
                                     .align_corners = spec->op == OP_BILINEAR,
                                     .scale_h = 2, .scale_w = 2};
        st = cr_upsample_out_size(&s->up, s->h, s->w, &ho, &wo);
    }
    if (!st && spec->op != OP_CE) st = cr_tensor_alloc4(&s->y, s->n, s->c, ho, wo);
    if (!st && spec->op != OP_CE) st = cr_tensor_alloc4(&s->dy, s->n, s->c, ho, wo);
    if (!st) st = cr_tensor_alloc4(&s->dx, s->n, s->c, s->h, s->w);
    if (!st && spec->op == OP_ADD) st = cr_tensor_alloc4(&s->b, s->n, s->c, s->h, s->w);
    if (!st && spec->op == OP_ADD) st = cr_tensor_alloc4(&s->db, s->n, s->c, s->h, s->w);
    if (!st && (spec->op == OP_BN || spec->op == OP_GN)) {
        const int64_t stats = spec->op == OP_BN ? s->c : s->n * GN_GROUPS;
        cr_tensor *cs[] = {&s->gamma, &s->beta, &s->dgamma, &s->dbeta, &s->rmean, &s->rvar};
        for (int i = 0; i < (spec->op == OP_BN ? 6 : 4) && !st; i++)
            st = cr_tensor_alloc(cs[i], 1, &s->c);
        if (!st) st = cr_tensor_alloc(&s->mean, 1, &stats);
        if (!st) st = cr_tensor_alloc(&s->invstd, 1, &stats);
        if (!st) {
            cr_tensor_fill_uniform(&s->gamma, rng, 0.5f, 1.5f);
            cr_tensor_fill_uniform(&s->beta, rng, -0.5f, 0.5f);
            if (spec->op == OP_BN) {
                cr_tensor_fill(&s->rmean, 0.0f);
                cr_tensor_fill(&s->rvar, 1.0f);
            }
        }
        s->bn = cr_bn_params_default();
    }
    if (!st && spec->op == OP_MAXPOOL) {
        s->argmax = malloc(s->y.numel * sizeof *s->argmax);
        if (!s->argmax) st = cr_fail(CR_ENOMEM, "maxpool: argmax of %zu", s->y.numel);
    }
    if (!st && spec->op == OP_CE) {
        const size_t pixels = (size_t)(s->n * s->h * s->w);
        s->target = malloc(pixels * sizeof *s->target);
        if (!s->target) return cr_fail(CR_ENOMEM, "cross_entropy: target of %zu", pixels);
        for (size_t i = 0; i < pixels; i++)
            s->target[i] = i % CE_IGNORE_EVERY == 0 ? CR_IGNORE_INDEX
                                                    : (int32_t)(cr_rng_next(rng) % (uint64_t)s->c);
    }
    if (st) return st;
    cr_tensor_fill_uniform(&s->x, rng, -1, 1);
    if (s->b.data) cr_tensor_fill_uniform(&s->b, rng, -1, 1);
    if (s->dy.data) cr_tensor_fill_uniform(&s->dy, rng, -1, 1);
    return CR_OK;
}

/* Runs pass 0 or 1 of an op (op_passes) once. */
static cr_status op_run(op_state *s, int pass)
{
    switch (s->spec->op) {
    case OP_BN:
        return pass == 0 ? cr_batchnorm2d_forward(&s->bn, true, &s->x, &s->gamma, &s->beta,
                                                  &s->rmean, &s->rvar, &s->y, &s->mean,
                                                  &s->invstd)
                         : cr_batchnorm2d_backward(true, &s->x, &s->gamma, &s->mean, &s->invstd,
                                                   &s->dy, &s->dx, &s->dgamma, &s->dbeta);
    case OP_GN:
        return pass == 0 ? cr_groupnorm_forward(GN_GROUPS, s->bn.eps, &s->x, &s->gamma, &s->beta,
                                                &s->y, &s->mean, &s->invstd)
                         : cr_groupnorm_backward(GN_GROUPS, &s->x, &s->gamma, &s->mean,
                                                 &s->invstd, &s->dy, &s->dx, &s->dgamma,
                                                 &s->dbeta);
    case OP_RELU:
        return pass == 0 ? cr_relu_forward(&s->x, &s->y) : cr_relu_backward(&s->y, &s->dy, &s->dx);
    case OP_MAXPOOL:
        return pass == 0 ? cr_maxpool2d_forward(&s->pool, &s->x, &s->y, s->argmax)
                         : cr_maxpool2d_backward(s->argmax, &s->dy, &s->dx);
    case OP_NEAREST:
    case OP_BILINEAR:
        return pass == 0 ? cr_upsample_forward(&s->up, &s->x, &s->y)
                         : cr_upsample_backward(&s->up, &s->dy, &s->dx);
    case OP_ADD:
        return pass == 0 ? cr_add_forward(&s->x, &s->b, &s->y) : cr_add_backward(&s->dy, &s->dx, &s->db);
    case OP_CE:
        return cr_cross_entropy_fast(&s->x, s->target, CR_IGNORE_INDEX, &s->loss,
                                pass == 0 ? NULL : &s->dx);
    case OP_ADAMW:
        return cr_optim_step(&s->opt, s->pp, s->gp);
    }
    return cr_fail(CR_EINVAL, "unknown op");
}

/* The bytes pass `pass` must move: every tensor it reads counted once, every tensor it
 * writes counted once (one read and written, twice); float 4 bytes, max-pool's indices 8,
 * cross-entropy's labels 4. What a pass needs at least, whatever its route: a two-pass
 * norm that reads x twice is held to one read. */
static double op_bytes(const op_state *s, int pass)
{
    const double F = 4, x = (double)s->x.numel, y = (double)s->y.numel;
    const double c = (double)s->gamma.numel, st = (double)s->mean.numel;
    switch (s->spec->op) {
    case OP_BN:   /* fwd: x, gamma, beta, running mean/var in; y, mean, invstd, running out */
        return pass == 0 ? F * (2 * x + 2 * c + 2 * st + 4 * c)
                         : F * (3 * x + 3 * c + 2 * st); /* x, dy, gamma, mean, invstd; dx, dgamma, dbeta */
    case OP_GN:
        return pass == 0 ? F * (2 * x + 2 * c + 2 * st) : F * (3 * x + 3 * c + 2 * st);
    case OP_RELU:
        return pass == 0 ? F * 2 * x : F * 3 * x;     /* x, y; y, dy, dx */
    case OP_MAXPOOL:
        return F * (x + y) + 8 * y;                    /* x; y, argmax | argmax, dy; dx */
    case OP_NEAREST:
    case OP_BILINEAR:
        return F * (x + y);                            /* x; y | dy; dx */
    case OP_ADD:
        return F * 3 * x;                              /* a, b; y | dy; da, db */
    case OP_CE:
        return F * (pass == 0 ? x : 2 * x) + 4.0 * (double)(s->n * s->h * s->w);
    case OP_ADAMW: {
        double total = 0;
        for (int i = 0; i < s->np; i++) total += (double)s->params[i].numel;
        return 7 * F * total;                          /* p, g, m, v in; p, m, v out */
    }
    }
    return 0;
}

/* a[i] = b[i] + s * c[i] for i < n, OpenMP threads, static schedule. */
static void triad_kernel(float *restrict a, const float *restrict b, const float *restrict c, float s,
                  int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

/* The STREAM-style triad a[i] = b[i] + s * c[i] over three arrays of n floats (far beyond
 * any L3), OpenMP threads as --threads (static schedule, first touch by the same threads):
 * one warm-up, then max(--repeats, 10) timed runs; GB/s counts 3 x 4 bytes per element,
 * of the median (*gbps) and of the fastest (*best) run; *bytes receives the count. */
static cr_status measure_triad(const lab_ctx *ctx, double *gbps, double *best, double *ms,
                               double *min_ms, double *bytes)
{
    const int64_t n = ctx->quick ? TRIAD_FLOATS_QUICK : TRIAD_FLOATS;
    cr_tensor t[3] = {{0}};
    cr_status st = CR_OK;
    for (int i = 0; i < 3 && !st; i++) st = cr_tensor_alloc(&t[i], 1, &n);
    if (st) {
        for (int i = 0; i < 3; i++) cr_tensor_free(&t[i]);
        return st;
    }
    float *a = t[0].data, *b = t[1].data, *c = t[2].data;
    const float scalar = 3.0f;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        b[i] = 1.0f + (float)(i % 7);
        c[i] = 2.0f - (float)(i % 5);
        a[i] = 0.0f;
    }
    const int runs = ctx->repeats < 10 ? 10 : ctx->repeats > MAX_ROUNDS ? MAX_ROUNDS : ctx->repeats;
    double times[MAX_ROUNDS];
    for (int r = -1; r < runs; r++) {
        const double t0 = cr_now();
        triad_kernel(a, b, c, scalar, n);
        if (r >= 0) times[r] = cr_now() - t0;
    }
    const int ok = a[n - 1] == b[n - 1] + scalar * c[n - 1];   /* the loop really ran */
    for (int i = 0; i < 3; i++) cr_tensor_free(&t[i]);
    if (!ok) return cr_fail(CR_EINVAL, "triad: wrong result");
    double med;
    lab_median_p90(times, runs, &med, NULL);
    *bytes = 3.0 * 4.0 * (double)n;
    *ms = med * 1e3;
    *min_ms = times[0] * 1e3;
    *gbps = *bytes / med / 1e9;
    *best = *bytes / times[0] / 1e9;
    return CR_OK;
}

/* Times an op's passes as time_impl times a convolution's: rounds of every pass once
 * (flush_and_settle before each) after a warm-up round, as many as fit in passes x the
 * budget (at least --repeats when a round is shorter, at most MAX_ROUNDS); median and
 * fastest ms of each pass. */
static cr_status time_op(const lab_ctx *ctx, op_state *s, int passes, double *ms, double *min_ms)
{
    const double budget = passes * (ctx->quick ? 0.1 : BUDGET_S);
    double first = 0;
    for (int p = 0; p < passes; p++) {
        flush_and_settle();
        const double t0 = cr_now();
        cr_status st = op_run(s, p);
        first += cr_now() - t0;
        if (st) return st;
    }
    int rounds = (int)(budget / (first > 1e-9 ? first : 1e-9));
    if (first <= budget && rounds < ctx->repeats) rounds = ctx->repeats;
    rounds = rounds < 1 ? 1 : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    double times[2][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int p = 0; p < passes; p++) {
            flush_and_settle();
            const double t0 = cr_now();
            cr_status st = op_run(s, p);
            times[p][r] = cr_now() - t0;
            if (st) return st;
        }
    for (int p = 0; p < passes; p++) {
        double med;
        lab_median_p90(times[p], rounds, &med, NULL);
        ms[p] = med * 1e3;
        min_ms[p] = times[p][0] * 1e3;
    }
    return CR_OK;
}

/* PyTorch's times of the layer ops (0: not measured). */
typedef struct {
    char name[32], pass[24];
    double ms, min_ms;
} layer_torch_row;

#define MAX_LAYER_TORCH 32
static layer_torch_row layer_torch[MAX_LAYER_TORCH];
static int n_layer_torch;
static char layer_torch_note[320] = "not run";

/* PyTorch's row of (name, pass), or NULL. */
static layer_torch_row *layer_torch_find(const char *name, const char *pass)
{
    for (int i = 0; i < n_layer_torch; i++)
        if (strcmp(layer_torch[i].name, name) == 0 && strcmp(layer_torch[i].pass, pass) == 0)
            return &layer_torch[i];
    return NULL;
}

/* torch_merge_fn for the layer ops: keeps the faster (by median) of two times. */
static void layer_torch_merge(const char *name, long long k, long long batch, const char *pass,
                              double ms, double min_ms, const char *policy)
{
    (void)k, (void)batch, (void)policy;
    layer_torch_row *r = layer_torch_find(name, pass);
    if (!(ms > 0)) return;
    if (!r) {
        if (n_layer_torch == MAX_LAYER_TORCH) return;
        r = &layer_torch[n_layer_torch++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", name);
        snprintf(r->pass, sizeof r->pass, "%s", pass);
    }
    if (r->ms == 0 || ms < r->ms) {
        r->ms = ms;
        r->min_ms = min_ms > 0 ? min_ms : ms;
    }
}

static int layer_torch_available;   /* the first op's PyTorch run gave times */

/* The name of the first pass op times (see op_passes). */
static const char *op_first_pass(op_kind op)
{
    const char *names[2];
    op_passes(op, names);
    return names[0];
}

/* Times PyTorch's version of layer op l at the same shape in child processes, by the
 * same rule as torch_measure_case: each op just before ours, the first one before the
 * CSV (layer_torch_note). CR_BENCH_LAYERS_PYTORCH, when set, names another script. */
static void layer_torch_measure_op(const lab_ctx *ctx, const layer_spec *l, int first)
{
    if (!first && (!layer_torch_available || n_layer_torch == 0 ||
                   layer_torch_find(l->name, op_first_pass(l->op))))
        return;
    const char *script = getenv("CR_BENCH_LAYERS_PYTORCH");
    if (!script || !*script) script = CR_BENCH_LAYERS_PYTORCH;
    char op[160], note[280];
    snprintf(op, sizeof op, " --op %s,%s,%lld,%lld,%lld,%lld", l->name, l->kind,
             (long long)(ctx->quick ? l->qn : l->n), (long long)(ctx->quick ? l->qc : l->c),
             (long long)(ctx->quick ? l->qh : l->h), (long long)(ctx->quick ? l->qw : l->w));
    if (first)
        printf("PyTorch, the peer of the other layers: %s, each op just before ours ...\n", script);
    torch_policies(ctx, script, layer_torch_merge, op, note, sizeof note);
    const int got = layer_torch_find(l->name, op_first_pass(l->op)) != NULL;
    if (first) {
        layer_torch_available = got;
        snprintf(layer_torch_note, sizeof layer_torch_note, "%s%s", note,
                 got ? "; each op timed just before ours" : "");
        printf("  %s\n\n", layer_torch_note);
    } else if (!got) {
        printf("  %s: %s\n", l->name, note);
    }
}

/* The first layer op, measured by PyTorch before the CSV begins. */
static void layer_torch_measure(const lab_ctx *ctx)
{
    layer_torch_measure_op(ctx, &layer_specs[0], 1);
}

/* Times one op, prints its table rows and writes its CSV rows against the triad's GB/s;
 * returns 1 if it ran. */
static int layer_case(lab_ctx *ctx, const layer_spec *l, double triad_gbps, cr_rng *rng)
{
    op_state s;
    const char *passes[2];
    const int np = op_passes(l->op, passes);
    double ms[2], min_ms[2];
    cr_status st = op_alloc(&s, l, ctx->quick, rng);
    if (!st) layer_torch_measure_op(ctx, l, 0);   /* the peer's times, just before ours */
    if (!st) st = time_op(ctx, &s, np, ms, min_ms);
    if (st) {
        op_free(&s);
        return lab_report_failure(l->name, st);
    }
    char shape[48];
    if (l->op == OP_ADAMW)
        snprintf(shape, sizeof shape, "%dx(%lldx%lldx%lldx%lld+2x%lld)", (int)s.n,
                 (long long)s.c, (long long)s.c, (long long)s.h, (long long)s.w, (long long)s.c);
    else
        snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld", (long long)s.n, (long long)s.c,
                 (long long)s.h, (long long)s.w);
    int ok = 1;
    for (int p = 0; p < np; p++) {
        const double bytes = op_bytes(&s, p), gbps = bytes / (ms[p] / 1e3) / 1e9;
        const double pct = 100.0 * gbps / triad_gbps;
        const layer_torch_row *tr = layer_torch_find(l->name, passes[p]);
        const double speed = tr ? tr->ms / ms[p] : 0.0;
        /* met by either rule; missed only when both were measured (PyTorch may be absent) */
        const char *target = speed >= TARGET_SPEED || pct >= TARGET_PCT_TRIAD ? "met"
                             : tr ? "missed" : "unknown";
        char tms[32] = "-", tsp[16] = "-";
        if (tr) {
            snprintf(tms, sizeof tms, "%.3f/%.3f", tr->min_ms, tr->ms);
            snprintf(tsp, sizeof tsp, "%.2fx", speed);
        }
        printf("%-14s %-26s %-16s %8.3f/%-8.3f %17s %7s %8.1f %6.0f%% %-6s\n", l->name, shape,
               passes[p], min_ms[p], ms[p], tms, tsp, gbps, pct, target);
        char vs[32] = "";
        if (tr) snprintf(vs, sizeof vs, "%.3f", speed);
        if (lab_csv_row(ctx, "lab04,layer_op,%s,fast,%s,,%lld,%d,%.4f,,,,,,,,,%.4f,%.0f,%.3f,%.2f,%s,%s",
                        l->name, passes[p], (long long)s.n, ctx->threads, ms[p], min_ms[p], bytes,
                        gbps, pct, vs, target))
            ok = lab_report_failure("CSV", CR_EIO);
        if (tr && lab_csv_row(ctx, "lab04,layer_op,%s,pytorch,%s,,%lld,%d,%.4f,,,,,,,,,%.4f,,,,,",
                              l->name, passes[p], (long long)s.n, ctx->threads, tr->ms, tr->min_ms))
            ok = lab_report_failure("CSV", CR_EIO);
    }
    fflush(stdout);
    op_free(&s);
    return ok;
}

/* The other layers' table: the triad first, then every op of layer_specs. */
static int run_layers(lab_ctx *ctx, cr_rng *rng)
{
    double triad = 0, best = 0, tms = 0, tmin = 0, tbytes = 0;
    cr_status st = measure_triad(ctx, &triad, &best, &tms, &tmin, &tbytes);
    if (st) return lab_report_failure("triad", st);
    printf("(3) the other layers, as chapter 8's FPN trains with them%s\n"
           "    STREAM-style triad a = b + s*c, 3 x %lld floats, %d thread%s: %.1f GB/s median, "
           "%.1f GB/s best (3 x 4 bytes per element)\n"
           "    GB/s: the bytes the pass must move (each tensor read or written once) / median;\n"
           "    speed: PyTorch's median / ours (> 1: ours faster); target: speed >= %.1f or "
           ">= %.0f%% of the triad\n",
           ctx->quick ? " (--quick: small shapes)" : " (batch 8, 192 x 192 crops)",
           (long long)(ctx->quick ? TRIAD_FLOATS_QUICK : TRIAD_FLOATS), ctx->threads,
           ctx->threads > 1 ? "s" : "", triad, best, TARGET_SPEED, TARGET_PCT_TRIAD);
    if (lab_csv_row(ctx, "lab04,triad,triad,fast,,,,%d,%.4f,,,,,,,,,%.4f,%.0f,%.3f,,,", ctx->threads,
                    tms, tmin, tbytes, triad))
        return lab_report_failure("CSV", CR_EIO);
    printf("%-14s %-26s %-16s %17s %17s %7s %8s %7s %-6s\n", "layer", "input", "pass",
           "ours ms min/med", "PyTorch min/med", "speed", "GB/s", "triad", "target");
    int ok = 1;
    for (int i = 0; i < LAB_COUNT(layer_specs); i++) ok &= layer_case(ctx, &layer_specs[i], triad, rng);
    printf("\n");
    return ok;
}

/* ---- (2) training on CamVid ---------------------------------------------------------------- */

#define NET_MIN_SIDE 4        /* two 2x2 max-pools need 4 x 4 frames */
#define QUICK_FRAMES 16       /* --quick with --data: the first 16 train, 8 val, 8 test frames */

/* Everything the training part needs, prepared before any work. */
typedef struct {
    cr_dataset train, val, test;
    cr_model model;
    cr_trainer trainer;
    int start_epoch;          /* epochs already in the --resume checkpoint */
    double load_s;
} train_run;

/* Frees the run (safe on a zeroed one). */
static void train_run_free(train_run *r)
{
    cr_trainer_free(&r->trainer);
    cr_model_free(&r->model);
    cr_dataset_free(&r->train);
    cr_dataset_free(&r->val);
    cr_dataset_free(&r->test);
}

/* Fails unless a split's reduced frames are at least NET_MIN_SIDE on each side. */
static int check_split(const lab_ctx *ctx, const char *split, const cr_dataset *ds)
{
    if (ds->height >= NET_MIN_SIDE && ds->width >= NET_MIN_SIDE) return 1;
    fprintf(stderr, "%s: --data: the %s frames are %lldx%lld at --factor %d; the network needs "
            "at least %dx%d (two 2x2 max-pools): use a smaller --factor\n", ctx->program, split,
            (long long)ds->width, (long long)ds->height, factor, NET_MIN_SIDE, NET_MIN_SIDE);
    return 0;
}

/* Loads the three splits at --factor, builds the network and the trainer and reads
 * --resume: every check the run needs, before any timing or training. Returns a lab exit
 * code (LAB_EXIT_OK to go on). */
static int prepare_training(const lab_ctx *ctx, train_run *r)
{
    const double t0 = cr_now();
    const char *splits[3] = {"train", "val", "test"};
    cr_dataset *ds[3] = {&r->train, &r->val, &r->test};
    for (int i = 0; i < 3; i++) {
        cr_status s = cr_camvid_load(data_dir, splits[i], factor,
                                     ctx->quick ? (i == 0 ? QUICK_FRAMES : QUICK_FRAMES / 2) : 0,
                                     ds[i]);
        if (s) {
            fprintf(stderr, "%s: %s\n", ctx->program, cr_last_error());
            return s == CR_EIO ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
        }
        if (!check_split(ctx, splits[i], ds[i])) return LAB_EXIT_USAGE;
    }
    r->load_s = cr_now() - t0;
    cr_train_config c = cr_train_config_default();
    c.lr = lr;
    c.batch = batch_size;
    c.epochs = epochs;
    c.seed = (uint64_t)train_seed;
    c.ignore_index = CR_CAMVID_IGNORE;
    cr_status s;
    if ((s = cr_model_build_fcn(&r->model, CR_CAMVID_CLASSES)) || (s = cr_model_init_params(&r->model, (uint64_t)train_seed))) {
        fprintf(stderr, "%s: building the network: %s\n", ctx->program, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    if ((s = cr_trainer_init(&r->trainer, &r->model, &c, r->train.count, r->train.height,
                             r->train.width))) {
        fprintf(stderr, "%s: --batch %d: %s\n", ctx->program, batch_size, cr_last_error());
        return s == CR_EINVAL ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
    }
    if (resume_path) {
        if ((s = cr_checkpoint_load(&r->trainer, resume_path))) {
            fprintf(stderr, "%s: --resume: %s\n", ctx->program, cr_last_error());
            return s == CR_EINVAL ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
        }
        r->start_epoch = r->trainer.epoch;
        if (r->start_epoch >= epochs) {
            fprintf(stderr, "%s: --resume: '%s' already holds %d epochs; --epochs %d (the total) "
                    "leaves none to train\n", ctx->program, resume_path, r->start_epoch, epochs);
            return LAB_EXIT_USAGE;
        }
    }
    return LAB_EXIT_OK;
}

/* Prints and writes per-class IoU of a split; returns the mean. */
static double report_iou(lab_ctx *ctx, const char *split, const cr_confusion *conf, int epoch)
{
    double iou[CR_CAMVID_CLASSES];
    const double mean = cr_confusion_iou(conf, iou);
    printf("%-5s", split);
    for (int c = 0; c < CR_CAMVID_CLASSES; c++) {
        printf(" %6.3f", iou[c]);
        lab_csv_row(ctx, "lab04,iou,camvid,fast,,,,%d,,,,%d,,,%s,%s,%.4f," NO_LAYER_COLS, ctx->threads, epoch,
                    split, cr_camvid_class_name(c), iou[c]);
    }
    printf("  %6.3f\n", mean);
    lab_csv_row(ctx, "lab04,iou,camvid,fast,,,,%d,,,,%d,,,%s,mean,%.4f," NO_LAYER_COLS, ctx->threads, epoch,
                split, mean);
    return mean;
}

typedef struct {
    lab_ctx *ctx;
    cr_progress *prog;
    int64_t w, h;
    double first_loss;
} step_ctx;

/* After each training step: a CSV row and the progress line. */
static void on_step(void *arg, const cr_step_info *info)
{
    step_ctx *c = arg;
    if (isnan(c->first_loss)) c->first_loss = info->loss;
    lab_csv_row(c->ctx, "lab04,train,camvid_%lldx%lld,fast,forward+backward,3,%d,%d,%.3f,,,"
                "%d,%lld,%.6f,train,,," NO_LAYER_COLS, (long long)c->w, (long long)c->h, batch_size,
                c->ctx->threads, info->ms, info->epoch, (long long)info->step, info->loss);
    char what[64];
    snprintf(what, sizeof what, "epoch %d loss %.4f", info->epoch, info->loss);
    cr_progress_step(c->prog, what);
}

/* The training run on a prepared run; returns a lab exit code. */
static int run_training(lab_ctx *ctx, train_run *r)
{
    cr_trainer *t = &r->trainer;
    const int64_t H = r->train.height, W = r->train.width;
    printf("(2) training on CamVid %s: %lld train, %lld val, %lld test frames at %lldx%lld "
           "(1/%d)%s, loaded in %.1f s\n", data_dir, (long long)r->train.count,
           (long long)r->val.count, (long long)r->test.count, (long long)W, (long long)H, factor,
           ctx->quick ? ", --quick: the first frames only" : "", r->load_s);
    printf("    network: %d modules, %d parameter tensors, %lld parameters; AdamW lr %.1e "
           "(warm-up, cosine), weight decay %g, batch %d, %d epochs, seed %d, flips\n",
           r->model.n, t->params.n, (long long)cr_model_num_scalars(&r->model), lr,
           t->cfg.weight_decay, batch_size, epochs, train_seed);
    if (resume_path)
        printf("    resumed from %s after epoch %d (step %lld)\n", resume_path, r->start_epoch,
               (long long)t->step);
    cr_confusion conf;
    cr_status s = cr_confusion_init(&conf, CR_CAMVID_CLASSES);
    cr_progress prog;
    cr_progress_begin(&prog, "training steps", (long)((epochs - r->start_epoch) * t->steps_per_epoch));
    step_ctx sc = {ctx, &prog, W, H, NAN};
    double last_epoch_loss = NAN, val_miou = 0;
    const double t_train = cr_now();
    while (!s && t->epoch < epochs) {
        if ((s = cr_train_epoch(t, &r->train, on_step, &sc, &last_epoch_loss))) break;
        double vloss;
        cr_confusion_reset(&conf);
        if ((s = cr_evaluate(&r->model, &r->val, 8, CR_CAMVID_IGNORE, &vloss, &conf))) break;
        val_miou = cr_confusion_iou(&conf, NULL);
        clear_progress(&prog);
        printf("    epoch %2d: train loss %.4f, val loss %.4f, val mean IoU %.3f (%.0f s)\n",
               t->epoch, last_epoch_loss, vloss, val_miou, cr_now() - t_train);
        fflush(stdout);
        lab_csv_row(ctx, "lab04,val,camvid_%lldx%lld,fast,forward,,%d,%d,,,,%d,%lld,%.6f,val,mean,%.4f," NO_LAYER_COLS,
                    (long long)W, (long long)H, batch_size, ctx->threads, t->epoch,
                    (long long)t->step, vloss, val_miou);
        if (checkpoint_path && (s = cr_checkpoint_save(t, checkpoint_path, NULL))) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", cr_last_error());
            s = cr_fail(s, "--checkpoint: %s", msg);
        }
    }
    cr_progress_end(&prog);
    const double train_s = cr_now() - t_train;
    int rc = LAB_EXIT_OK;
    if (s) {
        clear_progress(&prog);
        fprintf(stderr, "%s: training: %s\n", ctx->program, cr_last_error());
        rc = LAB_EXIT_FAILED;
    } else {
        printf("\n    IoU per class (%d classes, void ignored; nan: a class in neither truth nor "
               "prediction, left out of the mean), at %lldx%lld:\n%-5s", CR_CAMVID_CLASSES,
               (long long)W, (long long)H, "");
        for (int c = 0; c < CR_CAMVID_CLASSES; c++) printf(" %6.6s", cr_camvid_class_name(c));
        printf("  %6s\n", "mean");
        cr_confusion_reset(&conf);
        s = cr_evaluate(&r->model, &r->val, 8, CR_CAMVID_IGNORE, NULL, &conf);
        if (!s) val_miou = report_iou(ctx, "val", &conf, epochs);
        cr_confusion_reset(&conf);
        if (!s) s = cr_evaluate(&r->model, &r->test, 8, CR_CAMVID_IGNORE, NULL, &conf);
        const double test_miou = s ? 0 : report_iou(ctx, "test", &conf, epochs);
        printf("\n    loss %.4f (first step%s) -> %.4f (last epoch's mean); val mean IoU %.3f, "
               "test %.3f (chance, all road: about 0.03); %.0f s of training\n", sc.first_loss,
               resume_path ? " after resuming" : "", last_epoch_loss, val_miou, test_miou, train_s);
        if (checkpoint_path) printf("    checkpoint: %s (epoch %d)\n", checkpoint_path, t->epoch);
        if (s) {
            fprintf(stderr, "%s: evaluation: %s\n", ctx->program, cr_last_error());
            rc = LAB_EXIT_FAILED;
        } else if (!resume_path && !ctx->quick && !(last_epoch_loss < sc.first_loss)) {
            fprintf(stderr, "%s: the loss did not go down\n", ctx->program);
            rc = LAB_EXIT_FAILED;
        }
    }
    cr_confusion_free(&conf);
    return rc;
}

/* Checks the training options beyond their types; returns LAB_RUN or LAB_EXIT_USAGE. */
static int check_train_args(const lab_ctx *ctx)
{
    if (!(lr > 0) || !isfinite(lr)) {
        fprintf(stderr, "%s: --lr: expected a finite number > 0, got %g\n", ctx->program, lr);
        return LAB_EXIT_USAGE;
    }
    if ((checkpoint_path || resume_path) && !data_dir) {
        fprintf(stderr, "%s: --%s needs --data DIR (it belongs to the training part)\n",
                ctx->program, checkpoint_path ? "checkpoint" : "resume");
        return LAB_EXIT_USAGE;
    }
    if (checkpoint_path) {   /* the directory must take the file: try its .tmp now */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", checkpoint_path);
        FILE *f = fopen(tmp, "wb");
        if (!f) {
            fprintf(stderr, "%s: --checkpoint '%s': cannot write '%s': %s\n", ctx->program,
                    checkpoint_path, tmp, strerror(errno));
            return LAB_EXIT_FAILED;
        }
        fclose(f);
        remove(tmp);
    }
    return LAB_RUN;
}

int main(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab04-backward",
                      "Chapter 4: (1) forward and backward time and memory of the standard "
                      "layers with kernels 3, 5, 7,\nreference against fast and PyTorch "
                      "(same run); (2) with --data DIR, a small FCN trained on CamVid;\n"
                      "(3) --part layers: the other layers (norms, ReLU, pooling, "
                      "up-sampling, add, cross-entropy, AdamW)\nagainst PyTorch and the "
                      "machine's triad bandwidth.",
                      extra_args, (int)(sizeof extra_args / sizeof *extra_args));
    if (rc != LAB_RUN) return rc;
    const int do_timing = strcmp(part, "all") == 0 || strcmp(part, "timing") == 0;
    const int do_layers = strcmp(part, "all") == 0 || strcmp(part, "layers") == 0;
    const int do_train = strcmp(part, "all") == 0 || strcmp(part, "train") == 0;
    if (!do_timing && !do_layers && !do_train) {
        fprintf(stderr, "%s: --part: expected all, timing, layers or train, got '%s'\n",
                ctx.program, part);
        return LAB_EXIT_USAGE;
    }
    if ((rc = check_train_args(&ctx)) != LAB_RUN) return rc;
    train_run tr;
    memset(&tr, 0, sizeof tr);
    if (do_train && data_dir && (rc = prepare_training(&ctx, &tr)) != LAB_EXIT_OK) {
        train_run_free(&tr);   /* every split checked before any work */
        return rc;
    }
    lab_banner(&ctx, "chapter 4, the backward pass and a training loop");
    keep_freed_memory();
    cr_flush_cache();   /* allocates its buffer now, outside the memory measurements */
    char train_note[160];
    snprintf(train_note, sizeof train_note, "seed %d, %d epochs, batch %d, factor %d, AdamW lr %g",
             train_seed, epochs, batch_size, factor, lr);
    if (do_timing) torch_measure(&ctx);   /* before the CSV: its header names the peer */
    if (do_layers) layer_torch_measure(&ctx);
    const char *const extra[] = {
        "pytorch", torch_note,
        "peak_bytes", CR_HEAP_COUNTING ? "operand tensors + the heap's peak above its level before the "
                                    "pass (every malloc counted)"
                                  : "operand tensors only (sanitizer build: heap not counted)",
        "training", train_note,
        "malloc", "glibc keeps freed memory, here and in PyTorch's process: " KEEP_ENV,
        "pytorch_layers", layer_torch_note,
        "layer_op", "bytes: what the pass must move, each tensor it reads or writes counted once "
                    "(4 bytes a float, 8 a max-pool index, 4 a label); gbps: bytes / median ms; "
                    "pct_triad: gbps / the kind=triad row's gbps (both medians); vs_pytorch: "
                    "PyTorch's median / ours (> 1: ours faster); target: met when vs_pytorch >= 1 "
                    "or pct_triad >= 60, missed when neither, unknown when PyTorch did not run "
                    "and pct_triad < 60",
        "triad", "a[i] = b[i] + s*c[i], OpenMP threads as --threads, 3 x 4 bytes per element, "
                 "median of max(--repeats, 10) runs",
        NULL};
    cr_status st = lab_csv_begin(&ctx, csv_columns, extra);
    if (st != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        train_run_free(&tr);
        return LAB_EXIT_FAILED;
    }
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int ok = 1;
    if (do_timing) ok = run_timing(&ctx, &rng);
    if (do_layers) ok &= run_layers(&ctx, &rng);
    if (do_train) {
        if (!data_dir) {
            printf("(2) training: skipped, no --data DIR. %s\n", cr_camvid_howto());
        } else {
            int trc = run_training(&ctx, &tr);
            if (trc != LAB_EXIT_OK) {
                train_run_free(&tr);
                return lab_finish(&ctx, trc);
            }
        }
    }
    train_run_free(&tr);
    return lab_finish(&ctx, ok ? LAB_EXIT_OK : LAB_EXIT_FAILED);
}
