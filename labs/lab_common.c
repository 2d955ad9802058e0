/* lab_common.c — what every lab shares: the standard layers, the common options,
 * the banner, the CSV, random conv operands, timing and validation. */
#include "lab_common.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_file.h"
#include "compare.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define LAB_MAX_THREADS 64
#define LAB_MAX_OPTIONS 24

/* ---- the standard layers -------------------------------------------------- */

/* One standard layer: a square kernel k, stride, symmetric padding, groups. */
static lab_layer make_layer(const char *name, int64_t cin, int64_t cout, int64_t hw,
                            int64_t k, int64_t stride, int64_t pad, int64_t groups,
                            int64_t batch)
{
    lab_layer l;
    l.name = name;
    l.p = cr_conv_params_default(cin, cout, k);
    l.p.stride_h = l.p.stride_w = stride;
    cr_conv_set_padding(&l.p, pad, pad);
    l.p.groups = groups;
    l.n = batch;
    l.h = l.w = hw;
    return l;
}

/* The standard layers every lab and table compares on, built on first use (params come from a function). */
const lab_layer *lab_standard_layers(int *count)
{
    static lab_layer layers[7];
    static int built;
    if (!built) {
        layers[0] = make_layer("a_3x3_64", 64, 64, 56, 3, 1, 1, 1, 1);
        layers[1] = make_layer("b_3x3_128", 128, 128, 28, 3, 1, 1, 1, 1);
        layers[2] = make_layer("c_3x3_256", 256, 256, 14, 3, 1, 1, 1, 1);
        layers[3] = make_layer("d_7x7s2", 3, 64, 224, 7, 2, 3, 1, 1);
        layers[4] = make_layer("e_1x1", 64, 256, 56, 1, 1, 0, 1, 1);
        layers[5] = make_layer("f_3x3_g32", 128, 128, 56, 3, 1, 1, 32, 1);
        layers[6] = make_layer("g_3x3_64_n8", 64, 64, 56, 3, 1, 1, 1, 8);
        built = 1;
    }
    if (count) *count = 7;
    return layers;
}

/* The standard layer called name, or NULL. */
const lab_layer *lab_find_layer(const char *name)
{
    int n;
    const lab_layer *l = lab_standard_layers(&n);
    for (int i = 0; i < n; i++)
        if (strcmp(l[i].name, name) == 0) return &l[i];
    return NULL;
}

int lab_layer_selected(const lab_ctx *ctx, const char *name, const char *const *quick, int n)
{
    if (!ctx->quick) return 1;
    for (int i = 0; i < n; i++)
        if (strcmp(name, quick[i]) == 0) return 1;
    return 0;
}

/* "256,512,1024" -> sizes (at most max, each 1..16384); the count, or -1 on a bad list. */
int lab_parse_sizes(const char *s, int64_t *sizes, int max)
{
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 16384 || n == max || (*end && *end != ',')) return -1;
        sizes[n++] = v;
        s = *end ? end + 1 : end;
    }
    return n;
}

/* "1,2,8" -> v (at most max_count, each 1..max_batch); the count, or 0 on a bad list. */
int lab_parse_batches(const char *s, int *v, int max_count, int max_batch)
{
    int n = 0;
    const char *q = s;
    while (q && *q && n < max_count) {
        char *end;
        const long b = strtol(q, &end, 10);
        if (end == q || b < 1 || b > max_batch || (*end && *end != ',')) return 0;
        v[n++] = (int)b;
        q = *end ? end + 1 : end;
    }
    return q && *q ? 0 : n;
}

/* "HxW" (multiples of 32, 32..8192) -> *h, *w; 1, or 0 after printing the error. */
int lab_parse_fpn_size(const char *program, const char *opt, const char *s, int64_t *h,
                       int64_t *w)
{
    long long a, b;
    char tail;
    if (!s || sscanf(s, "%lldx%lld%c", &a, &b, &tail) != 2 || a < 32 || b < 32 || a > 8192 ||
        b > 8192 || a % 32 || b % 32) {
        fprintf(stderr, "%s: --%s: expected HxW with H and W multiples of 32 in 32..8192 (the "
                "network divides by 32), got '%s'\n", program, opt, s ? s : "");
        return 0;
    }
    *h = a;
    *w = b;
    return 1;
}

/* "NxCinxHxW -> Cout, khxkw sS pP gG" for a layer on an n x Cin x h x w input. */
void lab_layer_shape_str(const cr_conv_params *p, int64_t n, int64_t h, int64_t w,
                         char *buf, size_t len)
{
    snprintf(buf, len, "%lldx%lldx%lldx%lld -> %lld, %lldx%lld s%lld p%lld g%lld",
             (long long)n, (long long)p->in_channels, (long long)h, (long long)w,
             (long long)p->out_channels, (long long)p->kernel_h, (long long)p->kernel_w,
             (long long)p->stride_h, (long long)p->pad_top, (long long)p->groups);
}

/* ---- options, banner, CSV -------------------------------------------------- */

/* The thread count OpenMP would use by default (1 without OpenMP), capped at 64. */
static int default_threads(void)
{
#ifdef _OPENMP
    int t = omp_get_max_threads();
    return t < 1 ? 1 : t > LAB_MAX_THREADS ? LAB_MAX_THREADS : t;
#else
    return 1;
#endif
}

/* Sets the OpenMP thread count for the following parallel regions. */
void lab_set_threads(int threads)
{
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

/* The number of threads OpenMP really gives a parallel region now (asked for with
 * lab_set_threads, limited by OMP_THREAD_LIMIT, OMP_DYNAMIC and the like). */
static int team_size(void)
{
    int n = 1;
#ifdef _OPENMP
#pragma omp parallel
    {
#pragma omp single
        n = omp_get_num_threads();
    }
#endif
    return n;
}

/* Parses the common and the lab's options; see lab_common.h. */
int lab_init(lab_ctx *ctx, int argc, char **argv, const char *program,
             const char *summary, const cr_arg *extra, int n_extra)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->program = program;
    ctx->threads = default_threads();
    ctx->repeats = 0; /* outside 1..1000: chosen below from --quick */

    cr_arg table[LAB_MAX_OPTIONS] = {
        {"quick", CR_ARG_FLAG, &ctx->quick, NULL,
         "a small run (a few seconds) for the book build and CI", 0, -1},
        {"csv", CR_ARG_STRING, &ctx->csv_path, "FILE",
         "write the results as CSV with a provenance header", 0, -1},
        {"threads", CR_ARG_INT, &ctx->threads, "N", "OpenMP threads", 1, LAB_MAX_THREADS},
        {"repeats", CR_ARG_INT, &ctx->repeats, "N",
         "timed runs per case, median reported (default 5, 3 with --quick)", 1, 1000},
    };
    int n = 4;
    for (int i = 0; i < n_extra && n < LAB_MAX_OPTIONS; i++) table[n++] = extra[i];

    int help = 0;
    cr_status st = cr_args_parse(argc, argv, table, n, program, summary, &help);
    if (st != CR_OK) {
        fprintf(stderr, "%s: %s\n", program, cr_last_error());
        return LAB_EXIT_USAGE;
    }
    if (help) return LAB_EXIT_OK;
    if (ctx->repeats == 0) ctx->repeats = ctx->quick ? 3 : 5;
#ifndef _OPENMP
    if (ctx->threads > 1) {
        fprintf(stderr, "%s: built without OpenMP, running on 1 thread\n", program);
        ctx->threads = 1;
    }
#endif
    if (ctx->csv_path && cr_afile_check(ctx->csv_path, "CSV") != CR_OK) {
        fprintf(stderr, "%s: --csv: %s\n", program, cr_last_error());
        return LAB_EXIT_USAGE;
    }
    lab_set_threads(ctx->threads);
    ctx->threads_asked = ctx->threads;
    ctx->threads = team_size();
    if (ctx->threads != ctx->threads_asked)
        fprintf(stderr, "%s: warning: asked for %d threads, OpenMP gives %d (OMP_THREAD_LIMIT?); "
                "%d is what the banner and the CSV record\n", program, ctx->threads_asked,
                ctx->threads, ctx->threads);
    ctx->seed = cr_seed_from_env();
    ctx->load_before = lab_measure_load();
    return LAB_RUN;
}

/* Prints the title and the provenance the CSV header also carries. */
void lab_banner(const lab_ctx *ctx, const char *title)
{
    printf("%s — %s\n", ctx->program, title);
    printf("  machine  %s\n", cr_machine_name());
    printf("  cpu      %s\n", cr_cpu_model());
#ifdef _OPENMP
    if (ctx->threads != ctx->threads_asked)
        printf("  threads  %d (OpenMP; %d asked for, the runtime limits the team to %d)\n",
               ctx->threads, ctx->threads_asked, ctx->threads);
    else
        printf("  threads  %d (OpenMP)\n", ctx->threads);
#else
    printf("  threads  1 (built without OpenMP)\n");
#endif
    printf("  build    %s, %s\n", cr_build_compiler(), cr_build_flags());
    printf("  git      %s\n", cr_git_revision());
    printf("  run      %s, %d timed runs per case (median), seed %llu (set CR_SEED to repeat)\n",
           ctx->quick ? "quick" : "full", ctx->repeats, (unsigned long long)ctx->seed);
    if (ctx->load_before.load >= 0)
        printf("  load     %.2f (1-minute average before the run)\n", ctx->load_before.load);
    else
        printf("  load     unknown (no /proc/loadavg)\n");
    if (lab_machine_busy(ctx->load_before.load, -1, ctx->threads))
        printf("warning: the machine is busy (load %.2f > %d threads): timings will be slow "
               "and noisy\n", ctx->load_before.load, ctx->threads);
    printf("\n");
    fflush(stdout);
}

/* The open CSV's temporary file (PATH.tmp.XXXXXX), removed if the lab is interrupted
 * (INT, TERM, HUP, PIPE); empty when none (or when PATH is written directly). */
static char interrupted_tmp[4096];

/* Removes the half-written temporary file, then dies of the signal as it would have. */
static void remove_tmp_on_signal(int sig)
{
    if (interrupted_tmp[0]) unlink(interrupted_tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Opens the CSV (if --csv was given): provenance, lab keys, extra keys, columns. */
cr_status lab_csv_begin(lab_ctx *ctx, const char *const *columns, const char *const *extra)
{
    if (!ctx->csv_path) return CR_OK;
    char quick[8], repeats[16], seed[32];
    snprintf(quick, sizeof quick, "%d", ctx->quick);
    snprintf(repeats, sizeof repeats, "%d", ctx->repeats);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)ctx->seed);
    const char *keys[2 * LAB_MAX_OPTIONS + 1] = {"quick", quick, "repeats", repeats,
                                                 "seed", seed};
    int k = 6;
    for (int i = 0; extra && extra[i] && extra[i + 1] && k + 2 < 2 * LAB_MAX_OPTIONS; i += 2) {
        keys[k++] = extra[i];
        keys[k++] = extra[i + 1];
    }
    char asked[16];
    if (ctx->threads != ctx->threads_asked && k + 2 < 2 * LAB_MAX_OPTIONS) {
        snprintf(asked, sizeof asked, "%d", ctx->threads_asked);
        keys[k++] = "threads_asked";
        keys[k++] = asked;
    }
    keys[k] = NULL;
    cr_status st = cr_csv_open(&ctx->csv, ctx->csv_path, ctx->program, ctx->threads, keys);
    if (st != CR_OK) return st;
    const char *tmp = cr_csv_temp_path(ctx->csv);
    snprintf(interrupted_tmp, sizeof interrupted_tmp, "%s", tmp ? tmp : "");
    signal(SIGINT, remove_tmp_on_signal);
    signal(SIGTERM, remove_tmp_on_signal);
    signal(SIGHUP, remove_tmp_on_signal);
    signal(SIGPIPE, remove_tmp_on_signal);
    st = cr_csv_columns(ctx->csv, columns);
    if (st == CR_OK) st = cr_csv_flush(ctx->csv);  /* /dev/full fails here, before timing */
    if (st != CR_OK) {  /* the caller returns at once: leave no temporary file */
        cr_csv_abort(ctx->csv);
        ctx->csv = NULL;
        interrupted_tmp[0] = '\0';
    }
    return st;
}

/* st from the CSV: on a refusal prints it (once, here: most callers only count the
 * failure) and counts it for lab_finish. Returns st. */
static cr_status csv_outcome(lab_ctx *ctx, cr_status st)
{
    if (st != CR_OK) {
        fprintf(stderr, "%s: --csv: %s\n", ctx->program, cr_last_error());
        ctx->csv_refused++;
    }
    return st;
}

/* Formats a row and hands it to cr_csv_row (a refusal as csv_outcome says); nothing
 * happens without --csv. */
cr_status lab_csv_row(lab_ctx *ctx, const char *fmt, ...)
{
    if (!ctx->csv) return CR_OK;
    char row[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(row, sizeof row, fmt, ap);
    va_end(ap);
    return csv_outcome(ctx, n < 0 || (size_t)n >= sizeof row
                                ? cr_fail(CR_EINVAL, "CSV row longer than %zu bytes", sizeof row)
                                : cr_csv_row(ctx->csv, "%s", row));
}

/* Hands "# key: value" to cr_csv_comment (a refusal as csv_outcome says); nothing
 * happens without --csv. */
cr_status lab_csv_comment(lab_ctx *ctx, const char *key, const char *value)
{
    return ctx->csv ? csv_outcome(ctx, cr_csv_comment(ctx->csv, key, value)) : CR_OK;
}

/* Prints the load before and after the run and the steal over it, with a warning
 * when the machine was busy; the same text goes into the CSV's trailing comment. */
static void report_load(lab_ctx *ctx, char *line, size_t len)
{
    lab_load after = lab_measure_load();
    lab_load_str(&ctx->load_before, &after, line, len);
    printf("load: %s\n", line);
    double steal = lab_steal_percent(&ctx->load_before.cpu, &after.cpu);
    double load = after.load > ctx->load_before.load ? after.load : ctx->load_before.load;
    if (lab_machine_busy(load, steal, ctx->threads))
        printf("warning: the machine was busy during the run (load above %d threads or steal "
               "above 5%%): the timings are not trustworthy\n", ctx->threads);
    fflush(stdout);
}

/* Closes the CSV on success (renaming it into place), deletes it otherwise. */
int lab_finish(lab_ctx *ctx, int exit_code)
{
    char load[160];
    report_load(ctx, load, sizeof load);
    if (ctx->csv && exit_code == LAB_EXIT_OK && ctx->csv_refused) {
        /* a CSV missing rows would pass for a whole one: none is written */
        fprintf(stderr, "%s: %d CSV line(s) refused (above)\n", ctx->program, ctx->csv_refused);
        exit_code = LAB_EXIT_FAILED;
    }
    if (ctx->csv) {
        if (exit_code == LAB_EXIT_OK) {
            cr_status st = cr_csv_comment(ctx->csv, "load", load);
            if (st == CR_OK) st = cr_csv_close(ctx->csv);
            else cr_csv_abort(ctx->csv);
            if (st != CR_OK) {
                fprintf(stderr, "%s: %s\n", ctx->program, cr_last_error());
                exit_code = LAB_EXIT_FAILED;
            } else {
                printf("wrote %s\n", ctx->csv_path);
            }
        } else {
            cr_csv_abort(ctx->csv);
            fprintf(stderr, "%s: no CSV written (the run failed)\n", ctx->program);
        }
        ctx->csv = NULL;
        interrupted_tmp[0] = '\0';
    }
    return exit_code;
}

/* ---- how busy the machine is ------------------------------------------------ */

/* The first number of /proc/loadavg's text; see lab_common.h. */
int lab_parse_loadavg(const char *text, double *load)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || !(v >= 0)) return 0;
    *load = v;
    return 1;
}

/* Sums the "cpu " line of /proc/stat's text; see lab_common.h. */
int lab_parse_cpu_times(const char *text, lab_cpu_times *t)
{
    memset(t, 0, sizeof *t);
    const char *line = text;
    while (line && strncmp(line, "cpu ", 4) != 0) {
        line = strchr(line, '\n');
        if (line) line++;
    }
    if (!line) return 0;
    const char *p = line + 4;
    int fields = 0;
    for (; fields < 8; fields++) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p < '0' || *p > '9') break;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        p = end;
        t->total += v;
        if (fields == 7) t->steal = v;
    }
    if (fields < 4) {
        memset(t, 0, sizeof *t);
        return 0;
    }
    t->ok = 1;
    return 1;
}

/* 100 * stolen ticks / all ticks between a and b; -1 if either is unknown or no
 * time passed. */
double lab_steal_percent(const lab_cpu_times *a, const lab_cpu_times *b)
{
    if (!a->ok || !b->ok || b->total <= a->total || b->steal < a->steal) return -1;
    return 100.0 * (double)(b->steal - a->steal) / (double)(b->total - a->total);
}

/* Reads a small /proc file into buf (NUL-terminated); 1 on success. */
static int read_proc(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

/* The load average and the CPU counters now. */
lab_load lab_measure_load(void)
{
    lab_load l = {-1, {0, 0, 0}};
    char buf[4096];
    if (!read_proc("/proc/loadavg", buf, sizeof buf) || !lab_parse_loadavg(buf, &l.load))
        l.load = -1;
    if (read_proc("/proc/stat", buf, sizeof buf)) lab_parse_cpu_times(buf, &l.cpu);
    return l;
}

/* Load above the thread count, or more than 5% stolen. */
int lab_machine_busy(double load, double steal_percent, int threads)
{
    return load > threads || steal_percent > 5.0;
}

/* "before 0.12, after 1.90; steal 0.0%". */
void lab_load_str(const lab_load *before, const lab_load *after, char *buf, size_t len)
{
    char b[32] = "unknown", a[32] = "unknown", s[32] = "unknown";
    if (before->load >= 0) snprintf(b, sizeof b, "%.2f", before->load);
    if (after->load >= 0) snprintf(a, sizeof a, "%.2f", after->load);
    double steal = lab_steal_percent(&before->cpu, &after->cpu);
    if (steal >= 0) snprintf(s, sizeof s, "%.1f%%", steal);
    snprintf(buf, len, "before %s, after %s; steal %s", b, a, s);
}

/* ---- the OpenMP wait policy of the timing commands ------------------------- */

/* Why PASSIVE: libgomp's default spins about 3 ms at every barrier and loses whole time
 * slices when other processes share the cores (lab 8's batch-1 latency on a 2-core
 * machine at load 6: 2.5 s spinning, 0.41 s passive). Why a short spin, and only on a
 * quiet machine, measured with lab 7's FPN at batch 1
 * (2-core AMD EPYC Zen 5 VM, 2026-12-02, three rounds): idle, PASSIVE alone ran int8 at
 * 79.7-81.0 ms, with GOMP_SPINCOUNT=10000 at 70.8-77.1 (waking the other thread at every
 * parallel region costs time); with four busy processes beside it, PASSIVE ran 244-264
 * ms and the spin 349-353 (a spinning thread holds a core the other needs). */
long lab_spin_for_load(double load, long cpus)
{
    return load >= 0 && cpus > 0 && load < (double)cpus ? LAB_QUIET_SPINCOUNT : 0;
}

/* PASSIVE plus lab_spin_for_load's spin, then exec; see lab_common.h. */
void lab_timing_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    char spin[32];
    snprintf(spin, sizeof spin, "%ld",
             lab_spin_for_load(lab_measure_load().load, sysconf(_SC_NPROCESSORS_ONLN)));
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    if (setenv("GOMP_SPINCOUNT", spin, 1) != 0) {
        unsetenv("OMP_WAIT_POLICY");
        return;
    }
    execvp(argv[0], argv);
    unsetenv("OMP_WAIT_POLICY");   /* exec failed: the runtime's default policy */
    unsetenv("GOMP_SPINCOUNT");
}

/* "PASSIVE;GOMP_SPINCOUNT=10000"; see lab_common.h. */
void lab_wait_policy_str(char *buf, size_t len)
{
    const char *pol = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    if (!pol && !spin) snprintf(buf, len, "(unset)");
    else if (!spin) snprintf(buf, len, "%s", pol);
    else snprintf(buf, len, "%s;GOMP_SPINCOUNT=%s", pol ? pol : "(unset)", spin);
    for (char *c = buf; *c; c++)
        if (*c == ',') *c = ';';
}

/* ---- operands, timing, validation ---------------------------------------- */

/* Allocates and fills the operands of one convolution; see lab_common.h. */
cr_status lab_conv_alloc(lab_conv *c, const cr_conv_params *p, int64_t n, int64_t h,
                         int64_t w, cr_rng *rng)
{
    memset(c, 0, sizeof *c);
    c->p = *p;
    cr_status st = cr_conv_shape_init(&c->s, p, n, h, w);
    if (st != CR_OK) return st;
    const cr_conv_shape *s = &c->s;
    if ((st = cr_tensor_alloc4(&c->x, n, p->in_channels, h, w)) != CR_OK ||
        (st = cr_tensor_alloc4(&c->w, p->out_channels, s->cin_g, p->kernel_h,
                               p->kernel_w)) != CR_OK ||
        (st = cr_tensor_alloc4(&c->y, n, p->out_channels, s->h_out, s->w_out)) != CR_OK ||
        (p->bias && (st = cr_tensor_alloc(&c->b, 1, &p->out_channels)) != CR_OK)) {
        lab_conv_free(c);
        return st;
    }
    const float bound = (float)(1.0 / sqrt((double)(s->cin_g * p->kernel_h * p->kernel_w)));
    cr_tensor_fill_uniform(&c->x, rng, -1.0f, 1.0f);
    cr_tensor_fill_uniform(&c->w, rng, -bound, bound);
    if (p->bias) cr_tensor_fill_uniform(&c->b, rng, -bound, bound);
    cr_tensor_poison(&c->y);
    return CR_OK;
}

/* Frees x, w, b, y. */
void lab_conv_free(lab_conv *c)
{
    cr_tensor_free(&c->x);
    cr_tensor_free(&c->w);
    cr_tensor_free(&c->b);
    cr_tensor_free(&c->y);
}

/* y = fn(x, w, b), passing b only when the layer has a bias. */
cr_status lab_conv_run(lab_conv *c, cr_conv2d_fn fn)
{
    return fn(&c->p, &c->x, &c->w, c->p.bias ? &c->b : NULL, &c->y);
}

/* What cr_bench calls: a cr_status function and its argument. */
typedef struct {
    cr_status (*fn)(void *arg);
    void *arg;
} bench_call;

/* Calls the wrapped function; its status is cr_bench's abort code. */
static int bench_trampoline(void *p)
{
    bench_call *b = p;
    return (int)b->fn(b->arg);
}

/* Times fn(arg): warmup untimed runs, then repeats timed ones, cache flushed before each. */
static cr_status time_runs(cr_status (*fn)(void *arg), void *arg, int warmup, int repeats,
                           cr_bench_result *r)
{
    cr_bench_opts o = cr_bench_defaults();
    o.warmup = warmup;
    o.repeats = repeats;
    o.flush = 1;
    bench_call call = {fn, arg};
    int st = 0;
    *r = cr_bench(bench_trampoline, &call, &o, &st);
    return (cr_status)st;
}

/* Times fn(arg): 1 warm-up, ctx->repeats timed runs, cache flushed before each. */
cr_status lab_time(const lab_ctx *ctx, cr_status (*fn)(void *arg), void *arg,
                   cr_bench_result *r)
{
    return time_runs(fn, arg, 1, ctx->repeats, r);
}

/* Times fn(arg) within about budget_s seconds; see lab_common.h. */
cr_status lab_time_budget(const lab_ctx *ctx, cr_status (*fn)(void *arg), void *arg,
                          double budget_s, cr_bench_result *r)
{
    cr_flush_cache();
    double t0 = cr_now();
    cr_status st = fn(arg);
    double first = cr_now() - t0;
    if (st != CR_OK) return st;
    if (first * (ctx->repeats + 1) <= budget_s) return lab_time(ctx, fn, arg, r);
    int more = (int)(budget_s / first);
    if (more < 1) {
        cr_bench_result one = {first, first, first, 1};
        *r = one;
        return CR_OK;
    }
    return time_runs(fn, arg, 0, more < ctx->repeats ? more : ctx->repeats, r);
}

/* A conv and the function that computes it, for lab_time. */
typedef struct {
    lab_conv *c;
    cr_conv2d_fn fn;
} conv_call;

/* Runs one convolution (lab_time's callback). */
static cr_status run_conv_call(void *p)
{
    conv_call *cc = p;
    return lab_conv_run(cc->c, cc->fn);
}

/* Times fn on c's operands. */
cr_status lab_time_conv(const lab_ctx *ctx, cr_conv2d_fn fn, lab_conv *c, cr_bench_result *r)
{
    conv_call cc = {c, fn};
    return lab_time(ctx, run_conv_call, &cc, r);
}

/* GFLOP/s for flops in seconds. */
double lab_gflops(double flops, double seconds)
{
    return seconds > 0 ? flops / seconds * 1e-9 : 0.0;
}

/* Root mean square of n floats (float64 accumulation). */
static double rms(const float *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return n ? sqrt(s / (double)n) : 0.0;
}

/* Relative L2 check with the first faults printed on failure; see lab_common.h. */
int lab_check(const char *what, const cr_tensor *out, const cr_tensor *ref, double max_rel,
              double *rel_l2)
{
    if (!cr_tensor_same_shape(out, ref)) {
        char a[64], b[64];
        cr_tensor_shape_str(out, a, sizeof a);
        cr_tensor_shape_str(ref, b, sizeof b);
        fprintf(stderr, "%s: FAILED: output shape %s, reference shape %s\n", what, a, b);
        if (rel_l2) *rel_l2 = INFINITY;
        return 0;
    }
    cr_cmp cmp = cr_compare(out->data, ref->data, out->numel, max_rel, 0.0);
    if (rel_l2) *rel_l2 = cmp.rel_l2;
    if (cr_cmp_ok(&cmp, max_rel)) return 1;

    fprintf(stderr, "%s: FAILED: relative L2 error %.3g > bound %.1g (max |diff| %.3g at %zu)\n",
            what, cmp.rel_l2, max_rel, cmp.max_abs, cmp.worst);
    long long shape[CR_MAX_DIMS];
    for (int d = 0; d < out->ndim; d++) shape[d] = (long long)out->shape[d];
    cr_print_faults(stderr, out->data, ref->data, out->numel, shape, out->ndim, max_rel,
                    max_rel * rms(ref->data, ref->numel), 8);
    return 0;
}

/* Prints "what: CR_XXX: message" on stderr; returns 0 (not ok). */
int lab_report_failure(const char *what, cr_status st)
{
    fprintf(stderr, "%s: %s: %s\n", what, cr_status_name(st), cr_last_error());
    return 0;
}

/* ---- latency of repeated runs: peak memory and order statistics ---------------- */

/* VmHWM of /proc/self/status ("VmHWM:  123456 kB") in MiB, or -1. */
double lab_vm_hwm_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = atof(line + 6);
    fclose(f);
    return kb < 0 ? -1 : kb / 1024.0;
}

/* Writes "5" to /proc/self/clear_refs (VmHWM := current RSS); 1 if it worked. */
int lab_reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    const int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* Orders two doubles for qsort: -1 if *a < *b, 1 if *a > *b, else 0. */
int lab_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts t[0..n-1]; median (mean of the middle two for even n) and nearest-rank p90. */
void lab_median_p90(double *t, int n, double *median, double *p90)
{
    if (n < 1) {
        *median = NAN;
        if (p90) *p90 = NAN;
        return;
    }
    qsort(t, (size_t)n, sizeof *t, lab_cmp_double);
    *median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    if (p90) *p90 = t[(int)ceil(0.9 * n) - 1];
}
