/* tensor.c — allocation and small helpers for cr_tensor. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest tensor we agree to allocate: 2^34 floats (64 GiB). Anything larger is
 * almost surely a wrong shape, and refusing it before allocating keeps errors clear. */
#define CR_MAX_NUMEL ((size_t)1 << 34)

cr_status cr_mul_checked(size_t a, size_t b, size_t limit, const char *what, size_t *out)
{
    if (a != 0 && b > limit / a)
        return cr_fail(CR_EOVERFLOW, "%s: %zu x %zu exceeds the limit %zu", what, a, b, limit);
    *out = a * b;
    return CR_OK;
}

void *cr_aligned_alloc(size_t bytes)
{
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t rounded = (bytes + CR_ALIGN - 1) / CR_ALIGN * CR_ALIGN;
    if (rounded < bytes) return NULL;
    if (rounded == 0) rounded = CR_ALIGN;
    return aligned_alloc(CR_ALIGN, rounded);
}

void cr_aligned_free(void *p) { free(p); }

cr_status cr_tensor_alloc(cr_tensor *t, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    if (ndim < 1 || ndim > CR_MAX_DIMS)
        return cr_fail(CR_EINVAL, "tensor rank %d: expected 1..%d", ndim, CR_MAX_DIMS);
    size_t numel = 1;
    for (int i = 0; i < CR_MAX_DIMS; i++) t->shape[i] = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return cr_fail(CR_EINVAL, "tensor size %lld in dimension %d: expected >= 1",
                           (long long)shape[i], i);
        cr_status st = cr_mul_checked(numel, (size_t)shape[i], CR_MAX_NUMEL, "tensor size", &numel);
        if (st) return st;
        t->shape[i] = shape[i];
    }
    t->data = cr_aligned_alloc(numel * sizeof(float));
    if (!t->data)
        return cr_fail(CR_ENOMEM, "tensor of %zu floats: out of memory", numel);
    t->ndim = ndim;
    t->numel = numel;
    return CR_OK;
}

cr_status cr_tensor_alloc4(cr_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w)
{
    const int64_t shape[4] = {n, c, h, w};
    return cr_tensor_alloc(t, 4, shape);
}

void cr_tensor_free(cr_tensor *t)
{
    cr_aligned_free(t->data);
    memset(t, 0, sizeof *t);
}

void cr_tensor_fill(cr_tensor *t, float v)
{
    for (size_t i = 0; i < t->numel; i++) t->data[i] = v;
}

void cr_tensor_poison(cr_tensor *t) { cr_tensor_fill(t, NAN); }

int cr_tensor_same_shape(const cr_tensor *a, const cr_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

void cr_tensor_shape_str(const cr_tensor *t, char *buf, size_t len)
{
    if (len == 0) return;
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "",
                                 (long long)t->shape[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

cr_status cr_tensor_expect_shape(const char *name, const cr_tensor *t, int ndim,
                                 const int64_t *shape)
{
    int ok = t && t->data && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return CR_OK;
    cr_tensor wanted = {.ndim = ndim < CR_MAX_DIMS ? ndim : CR_MAX_DIMS};
    for (int i = 0; i < wanted.ndim; i++) wanted.shape[i] = shape[i];
    char want[96], got[96] = "(none)";
    cr_tensor_shape_str(&wanted, want, sizeof want);
    if (t && t->data) cr_tensor_shape_str(t, got, sizeof got);
    return cr_fail(CR_EINVAL, "tensor %s: expected shape %s, got %s", name, want, got);
}
