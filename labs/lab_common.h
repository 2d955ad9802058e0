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

/* ---- the standard layers (GUIDE.md section 4) ---------------------------- */

typedef struct {
    const char *name;  /* "a_3x3_64" ... "g_3x3_64_n8" */
    cr_conv_params p;
    int64_t n, h, w;   /* batch and input size */
} lab_layer;

/* The seven standard layers, a_3x3_64 ... g_3x3_64_n8; *count receives 7. */
const lab_layer *lab_standard_layers(int *count);
/* The standard layer with this name, or NULL. */
const lab_layer *lab_find_layer(const char *name);
/* Writes "1x64x56x56 -> 64, 3x3 s1 p1 g1" into buf. */
void lab_layer_shape_str(const cr_conv_params *p, int64_t n, int64_t h, int64_t w,
                         char *buf, size_t len);

/* ---- options, banner, CSV ------------------------------------------------ */

enum { LAB_RUN = -1 };                 /* lab_init: go on and run the lab */
enum { LAB_EXIT_OK = 0, LAB_EXIT_FAILED = 1, LAB_EXIT_USAGE = 2 };

typedef struct {
    const char *program;  /* "lab01-direct" */
    int threads;          /* --threads (OpenMP threads for the timed runs) */
    int quick;            /* --quick: a small run for the book build and CI */
    int repeats;          /* --repeats: timed runs per case */
    const char *csv_path; /* --csv FILE, or NULL */
    uint64_t seed;        /* CR_SEED from the environment, else fresh */
    cr_csv *csv;          /* open between lab_csv_begin and lab_finish */
} lab_ctx;

/* True if a lab runs the layer name: always in a full run; with --quick only if it is
 * one of the n names in quick. */
int lab_layer_selected(const lab_ctx *ctx, const char *name, const char *const *quick, int n);
/* The number of elements of a static array. */
#define LAB_COUNT(a) ((int)(sizeof(a) / sizeof *(a)))
/* Parses the common options plus the lab's own (extra, n_extra entries) and sets
 * the OpenMP thread count. Returns LAB_RUN to go on, LAB_EXIT_OK after --help,
 * or LAB_EXIT_USAGE after printing the error on stderr. */
int lab_init(lab_ctx *ctx, int argc, char **argv, const char *program,
             const char *summary, const cr_arg *extra, int n_extra);
/* Sets the number of OpenMP threads for the next parallel regions (no-op without OpenMP). */
void lab_set_threads(int threads);
/* Prints the lab's title and its machine, CPU, threads, build, git and seed on stdout. */
void lab_banner(const lab_ctx *ctx, const char *title);

/* Opens ctx->csv_path (if set) with the provenance header and writes the column
 * names; extra is NULL or NULL-terminated key/value pairs for the header. */
cr_status lab_csv_begin(lab_ctx *ctx, const char *const *columns, const char *const *extra);
/* Writes one CSV row (printf-style, no newline) if a CSV is open. */
cr_status lab_csv_row(lab_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the lab: with exit_code 0 closes (renames) the CSV, otherwise deletes it.
 * Returns the exit code (1 if closing the CSV failed). */
int lab_finish(lab_ctx *ctx, int exit_code);

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

#endif
