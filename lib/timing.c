/* timing.c — wall-clock timing for the labs: warm-up, repeats, median, cache flush. */
#include "timing.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLUSH_BYTES (64u << 20) /* larger than any last-level cache we run on */

/* Monotonic time in seconds (CLOCK_MONOTONIC, unaffected by clock changes). */
double cr_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The flush buffer (64 MiB of bytes) and a sink that keeps its reads live. */
static unsigned char flush_buffer[FLUSH_BYTES];
static volatile unsigned long cr_flush_sink;

/* Writes then reads every 64-byte line of the 64 MiB buffer, evicting the caches. */
void cr_flush_cache(void)
{
    static unsigned char pass;
    pass++;
    memset(flush_buffer, pass, sizeof flush_buffer);
    unsigned long sum = 0;
    for (size_t i = 0; i < sizeof flush_buffer; i += 64)
        sum += flush_buffer[i];
    cr_flush_sink += sum;
}

/* Default options: warmup 1, repeats 5, min_time 0, max_repeats 1000, flush 1. */
cr_bench_opts cr_bench_defaults(void)
{
    cr_bench_opts o = {.warmup = 1, .repeats = 5, .min_time = 0.0,
                       .max_repeats = 1000, .flush = 1};
    return o;
}

/* qsort comparator for doubles, ascending. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n doubles (sorts a copy; n >= 1); mean of the middle two when n is even. */
double cr_median(const double *v, int n)
{
    if (n <= 0) return 0.0;
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) return v[0];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = (n % 2) ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

/* Runs fn(ctx): opts->warmup untimed runs, then timed runs until both opts->repeats
 * runs and opts->min_time seconds are reached (at most max_repeats runs). */
cr_bench_result cr_bench(int (*fn)(void *ctx), void *ctx, const cr_bench_opts *opts,
                         int *status_out)
{
    cr_bench_opts o = opts ? *opts : cr_bench_defaults();
    cr_bench_result r = {0};
    if (status_out) *status_out = 0;
    if (o.repeats < 1) o.repeats = 1;
    if (o.max_repeats < o.repeats) o.max_repeats = o.repeats;

    for (int i = 0; i < o.warmup; i++) {
        int st = fn(ctx);
        if (st) { if (status_out) *status_out = st; return r; }
    }

    double *times = malloc((size_t)o.max_repeats * sizeof *times);
    if (!times) { if (status_out) *status_out = -1; return r; }
    double total = 0.0;
    int runs = 0;
    while (runs < o.max_repeats && (runs < o.repeats || total < o.min_time)) {
        if (o.flush) cr_flush_cache();
        double t0 = cr_now();
        int st = fn(ctx);
        double t = cr_now() - t0;
        if (st) { if (status_out) *status_out = st; free(times); return r; }
        times[runs++] = t;
        total += t;
    }

    r.runs = runs;
    r.median = cr_median(times, runs);
    r.min = r.max = times[0];
    for (int i = 1; i < runs; i++) {
        if (times[i] < r.min) r.min = times[i];
        if (times[i] > r.max) r.max = times[i];
    }
    free(times);
    return r;
}
