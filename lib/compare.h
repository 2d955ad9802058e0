/* compare.h — comparing a result against a reference, and saying where they differ. */
#ifndef CR_COMPARE_H
#define CR_COMPARE_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double rel_l2;      /* ||out - ref|| / ||ref|| (or ||out - ref|| if ref is all zero) */
    double max_abs;     /* max |out - ref| */
    size_t worst;       /* index of max |out - ref| */
    size_t n_bad;       /* elements with |out-ref| > atol + rtol*|ref|, NaN included */
    size_t first_bad;   /* index of the first such element (n if none) */
} cr_cmp;

/* Compares n floats of out against ref; NaN or Inf in out counts as bad. */
cr_cmp cr_compare(const float *out, const float *ref, size_t n, double rtol, double atol);

/* True when cmp.rel_l2 <= max_rel and no element is NaN/Inf. */
int cr_cmp_ok(const cr_cmp *c, double max_rel);

/* Prints up to max_faults elements where |out-ref| > atol + rtol*|ref|, with their
 * flat index and, if shape != NULL (rank ndim), their multi-index. */
void cr_print_faults(FILE *f, const float *out, const float *ref, size_t n,
                     const long long *shape, int ndim, double rtol, double atol,
                     int max_faults);

#ifdef __cplusplus
}
#endif

#endif
