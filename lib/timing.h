/* timing.h — wall-clock timing for the labs: warm-up, repeats, median, cache flush. */
#ifndef CR_TIMING_H
#define CR_TIMING_H

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic time in seconds. */
double cr_now(void);

/* Writes and reads a buffer larger than the last-level cache, so the next timed
 * run starts cold (the buffer is allocated once, 64 MiB). */
void cr_flush_cache(void);

typedef struct {
    int warmup;        /* untimed runs first (default 1) */
    int repeats;       /* timed runs (default 5) */
    double min_time;   /* keep repeating until the timed runs add up to this many seconds (0: off) */
    int max_repeats;   /* cap for min_time (default 1000) */
    int flush;         /* flush the cache before each timed run */
} cr_bench_opts;

typedef struct {
    double median, min, max; /* seconds per run */
    int runs;                /* timed runs made */
} cr_bench_result;

/* Default options: warmup 1, repeats 5, min_time 0, max_repeats 1000, flush 1. */
cr_bench_opts cr_bench_defaults(void);

/* Runs fn(ctx) as opts say and returns the timing; fn returns nonzero to abort,
 * in which case *status_out (if non-NULL) receives that value and the result is zero. */
cr_bench_result cr_bench(int (*fn)(void *ctx), void *ctx, const cr_bench_opts *opts,
                         int *status_out);

/* Median of n doubles (sorts a copy; n >= 1). */
double cr_median(const double *v, int n);

#ifdef __cplusplus
}
#endif

#endif
