/* lab_common.h — what every lab shares: the standard layers, the common options
 * (--quick, --csv, --threads, --repeats, --help), the banner, random conv
 * operands, timing a convolution, and validation that prints the first faults.
 *
 * A lab's main reads top to bottom:
 *   lab_ctx ctx; int rc = lab_init(&ctx, argc, argv, ...); if (rc != LAB_RUN) return rc;
 *   lab_banner(&ctx, ...); lab_csv_begin(&ctx, columns, NULL);
 *   ... lab_conv_alloc, lab_time_conv, lab_check, lab_csv_row ...
 *   return lab_finish(&ctx, ok ? 0 : 1);
 */
#ifndef CR_LAB_COMMON_H
#define CR_LAB_COMMON_H

#include <stdint.h>

#include "args.h"
#include "conv_desc.h"
#include "csv.h"
#include "rng.h"
#include "tensor.h"
#include "timing.h"

/* ---- the standard layers (the same work in every chapter's tables) ---------- */

typedef struct {
    const char *name;  /* "a_3x3_64" ... "g_3x3_64_n8" */
    cr_conv_params p;
    int64_t n, h, w;   /* batch and input size */
} lab_layer;

/* The seven standard layers, a_3x3_64 ... g_3x3_64_n8; *count receives 7. */
const lab_layer *lab_standard_layers(int *count);
/* The standard layer with this name, or NULL. */
const lab_layer *lab_find_layer(const char *name);
/* Parses a --sizes list "256,512,1024" into sizes (at most max, each 1..16384);
 * returns the count, or -1 on a bad list (empty item, junk, out of range, too many). */
int lab_parse_sizes(const char *s, int64_t *sizes, int max);
/* Parses a comma list of batch sizes "1,2,8" into v (at most max_count, each
 * 1..max_batch); returns the count, or 0 on a bad list (NULL, empty, an empty item,
 * junk, out of range, too many). The caller prints the error. */
int lab_parse_batches(const char *s, int *v, int max_count, int max_batch);
/* Parses an FPN input size "HxW" (H and W multiples of 32 in 32..8192: the network
 * divides by 32) into *h, *w; returns 1, or 0 after printing "program: --opt:
 * expected ..." on stderr. */
int lab_parse_fpn_size(const char *program, const char *opt, const char *s, int64_t *h,
                       int64_t *w);
/* Writes "1x64x56x56 -> 64, 3x3 s1 p1 g1" into buf. */
void lab_layer_shape_str(const cr_conv_params *p, int64_t n, int64_t h, int64_t w,
                         char *buf, size_t len);

/* ---- options, banner, CSV ------------------------------------------------ */

enum { LAB_RUN = -1 };                 /* lab_init: go on and run the lab */
enum { LAB_EXIT_OK = 0, LAB_EXIT_FAILED = 1, LAB_EXIT_USAGE = 2 };

/* CPU time counters of /proc/stat's "cpu" line, in clock ticks. */
typedef struct {
    unsigned long long total; /* user+nice+system+idle+iowait+irq+softirq+steal */
    unsigned long long steal; /* time a hypervisor gave this machine's CPUs to others */
    int ok;                   /* 1 if the line was read */
} lab_cpu_times;

/* How busy the machine was: the 1-minute load average and the CPU counters. */
typedef struct {
    double load;          /* /proc/loadavg's first field, or -1 if unknown */
    lab_cpu_times cpu;
} lab_load;

typedef struct {
    const char *program;  /* "lab01-direct" */
    int threads;          /* OpenMP team size the timed runs really get (asked for
                             with --threads, limited by OMP_THREAD_LIMIT and the like) */
    int threads_asked;    /* --threads, or the default when not given */
    lab_load load_before; /* measured by lab_init, before any timing */
    int quick;            /* --quick: a small run for the book build and CI */
    int repeats;          /* --repeats: timed runs per case */
    const char *csv_path; /* --csv FILE, or NULL */
    uint64_t seed;        /* CR_SEED from the environment, else fresh */
    cr_csv *csv;          /* open between lab_csv_begin and lab_finish */
    int csv_refused;      /* rows or comments the CSV refused: lab_finish then writes none */
} lab_ctx;

/* True if a lab runs the layer name: always in a full run; with --quick only if it is
 * one of the n names in quick. */
int lab_layer_selected(const lab_ctx *ctx, const char *name, const char *const *quick, int n);
/* The number of elements of a static array. */
#define LAB_COUNT(a) ((int)(sizeof(a) / sizeof *(a)))
/* Parses the common options plus the lab's own (extra, n_extra entries), checks
 * that --csv FILE can be written (a directory or a missing directory is refused
 * here, before anything is measured; nothing is left behind), sets the OpenMP
 * thread count and records the team size OpenMP really gives (ctx->threads; a
 * warning on stderr when it differs from --threads), and measures the load before
 * the run. Returns LAB_RUN to go on, LAB_EXIT_OK after --help, or LAB_EXIT_USAGE
 * after printing the error on stderr. */
int lab_init(lab_ctx *ctx, int argc, char **argv, const char *program,
             const char *summary, const cr_arg *extra, int n_extra);
/* Sets the number of OpenMP threads for the next parallel regions (no-op without OpenMP). */
void lab_set_threads(int threads);
/* Prints the lab's title and its machine, CPU, threads, build, git, seed and load on
 * stdout, with a warning line when the machine is busy before the run. */
void lab_banner(const lab_ctx *ctx, const char *title);

/* Opens ctx->csv_path (if set) with the provenance header and writes the column
 * names, flushed at once (a device that refuses them fails here, before any timing;
 * nothing is left behind on failure); extra is NULL or NULL-terminated key/value
 * pairs for the header. */
cr_status lab_csv_begin(lab_ctx *ctx, const char *const *columns, const char *const *extra);
/* Writes one CSV row (printf-style, no newline) if a CSV is open. */
cr_status lab_csv_row(lab_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes a "# key: value" line among the rows (what happened during the run) if a CSV is open. */
cr_status lab_csv_comment(lab_ctx *ctx, const char *key, const char *value);
/* Ends the lab: measures the load and CPU steal again and prints them ("load: before
 * 0.12, after 1.90; steal 0.0%", plus a warning when the machine was busy); with
 * exit_code 0 writes that line as a trailing "# load: ..." comment of the CSV and
 * closes (renames) it, otherwise deletes it; a CSV that refused a row or comment
 * (lab_csv_row, lab_csv_comment) is deleted too. Returns the exit code (1 if closing
 * the CSV failed or it refused a line). */
int lab_finish(lab_ctx *ctx, int exit_code);

/* ---- how busy the machine is (/proc/loadavg, /proc/stat) ------------------- */

/* Reads the 1-minute load average from the text of /proc/loadavg into *load; 1 on
 * success, 0 if the text does not start with a number. */
int lab_parse_loadavg(const char *text, double *load);
/* Reads the "cpu " line (the sum over all CPUs) from the text of /proc/stat: total
 * is the sum of its first eight fields (user .. steal; guest time is already in
 * user), steal the eighth (0 when the kernel gives fewer than eight). Returns 1, or
 * 0 (and t->ok = 0) when there is no such line with at least four fields. */
int lab_parse_cpu_times(const char *text, lab_cpu_times *t);
/* Percent of the CPU time between a and b that was stolen, or -1 if unknown. */
double lab_steal_percent(const lab_cpu_times *a, const lab_cpu_times *b);
/* Measures the load average and the CPU counters now (fields unknown: -1 / ok = 0). */
lab_load lab_measure_load(void);
/* True when the machine is too busy for trustworthy timings: load above the thread
 * count, or more than 5% of CPU time stolen. */
int lab_machine_busy(double load, double steal_percent, int threads);
/* Writes "before 0.12, after 1.90; steal 0.0%" ("unknown" for what could not be
 * read) into buf. */
void lab_load_str(const lab_load *before, const lab_load *after, char *buf, size_t len);

/* ---- the OpenMP wait policy of the timing commands (labs 6, 7, 8) ----------- */

/* The spin libgomp is given before a waiting thread sleeps, on a quiet machine
 * (GOMP_SPINCOUNT; about 0.1 ms). */
#define LAB_QUIET_SPINCOUNT 10000
/* The spin count for a 1-minute load average `load` on `cpus` online CPUs:
 * LAB_QUIET_SPINCOUNT when the load is known and below cpus, else 0 (sleep at once). */
long lab_spin_for_load(double load, long cpus);
/* For a timing command, before OpenMP starts: unless the user set OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT, sets OMP_WAIT_POLICY=PASSIVE and GOMP_SPINCOUNT to
 * lab_spin_for_load of the machine now, and runs the program again under them
 * (exec; if that fails it carries on with the runtime's default). */
void lab_timing_wait_policy(char **argv);
/* Writes the wait policy in force ("PASSIVE;GOMP_SPINCOUNT=10000", "(unset)"), with no
 * comma (a CSV field), into buf. */
void lab_wait_policy_str(char *buf, size_t len);


/* ---- operands, timing, validation ----------------------------------------- */

/* One convolution's operands: x (N x Cin x H x W), w (Cout x Cin_g x kh x kw),
 * b (Cout, empty when p.bias is false), y (N x Cout x Ho x Wo), and the bound shape. */
typedef struct {
    cr_conv_params p;
    cr_conv_shape s;
    cr_tensor x, w, b, y;
} lab_conv;

/* Allocates the operands of p on an n x Cin x h x w input; x uniform in [-1, 1),
 * w and b uniform in +-1/sqrt(Cin_g*kh*kw) (PyTorch's default init), y poisoned. */
cr_status lab_conv_alloc(lab_conv *c, const cr_conv_params *p, int64_t n, int64_t h,
                         int64_t w, cr_rng *rng);
/* Frees the operands (safe on a zeroed or half-built lab_conv). */
void lab_conv_free(lab_conv *c);
/* Runs y = fn(x, w, b) once. */
cr_status lab_conv_run(lab_conv *c, cr_conv2d_fn fn);
/* Times fn on c's operands: 1 warm-up, ctx->repeats timed runs, cache flushed before each. */
cr_status lab_time_conv(const lab_ctx *ctx, cr_conv2d_fn fn, lab_conv *c, cr_bench_result *r);
/* Times fn(arg) the same way (for work that is not a single convolution); fn
 * returns a cr_status. */
cr_status lab_time(const lab_ctx *ctx, cr_status (*fn)(void *arg), void *arg,
                   cr_bench_result *r);
/* Times fn(arg) with a time budget: the first run (cache flushed) is timed; if
 * ctx->repeats runs fit in budget_s seconds, lab_time follows; otherwise only as
 * many more runs as fit (none if the first run alone exceeds the budget) and the
 * result is their median. For slow cases (seconds per run) in long sweeps. */
cr_status lab_time_budget(const lab_ctx *ctx, cr_status (*fn)(void *arg), void *arg,
                          double budget_s, cr_bench_result *r);
/* GFLOP/s for flops done in seconds (0 if seconds is 0). */
double lab_gflops(double flops, double seconds);

/* Compares out against ref (same shape): returns 1 when ||out-ref||/||ref|| <= max_rel
 * and nothing is NaN/Inf; otherwise prints "what: FAILED ..." and the first faults
 * (tolerance max_rel*|ref| + max_rel*rms(ref)) to stderr and returns 0. *rel_l2
 * (if non-NULL) receives the relative error. */
int lab_check(const char *what, const cr_tensor *out, const cr_tensor *ref, double max_rel,
              double *rel_l2);

/* Prints a status failure ("what: CR_EINVAL: message") to stderr; returns 0. */
int lab_report_failure(const char *what, cr_status st);

/* ---- latency of repeated runs: peak memory and order statistics (labs 4, 6, 7, 8) ---- */

/* The process's resident high-water mark in MiB (VmHWM of /proc/self/status), or -1
 * when it cannot be read. */
double lab_vm_hwm_mib(void);
/* Resets VmHWM to the current resident size (writes "5" to /proc/self/clear_refs);
 * returns 1 if that worked, 0 otherwise. */
int lab_reset_hwm(void);
/* qsort's comparison of two doubles (ascending): -1, 0 or 1. */
int lab_cmp_double(const void *a, const void *b);
/* Sorts t[0..n-1] ascending in place; *median receives the middle value (for even n
 * the mean of the two middle ones), *p90 (if non-NULL) the nearest-rank 90th
 * percentile t[ceil(0.9 n) - 1]. With n < 1 both receive NaN. */
void lab_median_p90(double *t, int n, double *median, double *p90);

#endif
