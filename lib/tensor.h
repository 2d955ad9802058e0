/* tensor.h — dense float32 tensors of rank 1..4, row-major (NCHW for rank 4),
 * with 64-byte aligned storage. */
#ifndef CR_TENSOR_H
#define CR_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_MAX_DIMS 4
#define CR_ALIGN 64

typedef struct {
    int ndim;                    /* 1..4 */
    int64_t shape[CR_MAX_DIMS];  /* sizes, outermost first; unused entries are 1 */
    size_t numel;                /* product of shape */
    float *data;                 /* numel floats, CR_ALIGN-aligned, owned */
} cr_tensor;

/* Multiplies a*b into *out; fails with CR_EOVERFLOW (naming what) if it exceeds limit. */
cr_status cr_mul_checked(size_t a, size_t b, size_t limit, const char *what, size_t *out);

/* Allocates CR_ALIGN-aligned storage for n bytes (n may be 0); NULL on failure. */
void *cr_aligned_alloc(size_t bytes);
void cr_aligned_free(void *p);

/* Allocates t with the given shape (ndim 1..4, every size >= 1); contents undefined. */
cr_status cr_tensor_alloc(cr_tensor *t, int ndim, const int64_t *shape);
/* Allocates a rank-4 NCHW tensor. */
cr_status cr_tensor_alloc4(cr_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w);
/* Frees t's storage and zeroes the struct (safe on a zeroed struct). */
void cr_tensor_free(cr_tensor *t);

/* Sets every element to v. */
void cr_tensor_fill(cr_tensor *t, float v);
/* Fills with a NaN pattern, so that any element an implementation forgets to write shows. */
void cr_tensor_poison(cr_tensor *t);
/* True if a and b have the same rank and sizes. */
int cr_tensor_same_shape(const cr_tensor *a, const cr_tensor *b);
/* Fails with CR_EINVAL unless t is allocated with exactly this rank and shape; the
 * message names the tensor: "tensor w: expected shape [6, 2, 3, 3], got [6, 4, 3, 3]". */
cr_status cr_tensor_expect_shape(const char *name, const cr_tensor *t, int ndim,
                                 const int64_t *shape);
/* Writes "[2, 3, 5, 7]" into buf (always NUL-terminated). */
void cr_tensor_shape_str(const cr_tensor *t, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
