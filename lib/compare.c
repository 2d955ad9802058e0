/* compare.c — relative error against a reference and a readable list of faults. */
#include "compare.h"

#include <math.h>

/* True when out[i] is not within atol + rtol*|ref[i]| of ref[i] (NaN and Inf included). */
static int is_fault(float out, float ref, double rtol, double atol)
{
    if (!isfinite(out)) return 1;
    return fabs((double)out - (double)ref) > atol + rtol * fabs((double)ref);
}

cr_cmp cr_compare(const float *out, const float *ref, size_t n, double rtol, double atol)
{
    cr_cmp c = {0, 0, 0, 0, n};
    double diff2 = 0, ref2 = 0;
    int nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)out[i] - (double)ref[i];
        if (!isfinite(out[i])) nonfinite = 1;
        diff2 += d * d;
        ref2 += (double)ref[i] * ref[i];
        double a = fabs(d);
        if (a > c.max_abs || (isnan(d) && !isnan(c.max_abs))) {
            c.max_abs = isnan(d) ? NAN : a;
            c.worst = i;
        }
        if (is_fault(out[i], ref[i], rtol, atol)) {
            if (c.n_bad == 0) c.first_bad = i;
            c.n_bad++;
        }
    }
    c.rel_l2 = nonfinite ? INFINITY : (ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2));
    return c;
}

int cr_cmp_ok(const cr_cmp *c, double max_rel)
{
    return isfinite(c->rel_l2) && c->rel_l2 <= max_rel;
}

void cr_print_faults(FILE *f, const float *out, const float *ref, size_t n,
                     const long long *shape, int ndim, double rtol, double atol, int max_faults)
{
    int shown = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_fault(out[i], ref[i], rtol, atol)) continue;
        total++;
        if (shown >= max_faults) continue;
        fprintf(f, "  fault at %zu", i);
        if (shape && ndim > 0) {
            long long idx[8], rest = (long long)i;
            for (int d = ndim - 1; d >= 0; d--) {
                idx[d] = shape[d] > 0 ? rest % shape[d] : 0;
                rest = shape[d] > 0 ? rest / shape[d] : 0;
            }
            fprintf(f, " [");
            for (int d = 0; d < ndim && d < 8; d++) fprintf(f, "%s%lld", d ? "," : "", idx[d]);
            fprintf(f, "]");
        }
        fprintf(f, ": got %.9g, expected %.9g\n", (double)out[i], (double)ref[i]);
        shown++;
    }
    if (total > (size_t)shown)
        fprintf(f, "  ... and %zu more faults (of %zu elements)\n", total - (size_t)shown, n);
}
