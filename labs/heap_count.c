/* heap_count.c — the counting allocator of heap_count.h. */
#include "heap_count.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "tensor.h"   /* cr_aligned_alloc, what the library allocates its buffers with */

static atomic_llong heap_now, heap_peak;

long long cr_heap_now(void) { return atomic_load(&heap_now); }

long long cr_heap_mark(void)
{
    const long long now = atomic_load(&heap_now);
    atomic_store(&heap_peak, now);
    return now;
}

long long cr_heap_peak(void) { return atomic_load(&heap_peak); }

int cr_heap_counting_works(void)
{
    if (!CR_HEAP_COUNTING) return 0;
    const long long before = atomic_load(&heap_now);
    void *volatile p = malloc(65536);   /* volatile: the pairs must not be optimised out */
    void *volatile q = cr_aligned_alloc(65536);
    const long long held = atomic_load(&heap_now) - before;
    free(p);
    cr_aligned_free(q);
    return p != NULL && q != NULL && held >= 2 * 65536;
}

#if CR_HEAP_COUNTING
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* Adds n bytes to the live count and raises the peak. */
static void heap_add(long long n)
{
    long long now = atomic_fetch_add(&heap_now, n) + n, peak = atomic_load(&heap_peak);
    while (now > peak && !atomic_compare_exchange_weak(&heap_peak, &peak, now)) {
    }
}

void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    if (p) heap_add((long long)malloc_usable_size(p));
    return p;
}

void free(void *p)
{
    if (p) heap_add(-(long long)malloc_usable_size(p));
    __libc_free(p);
}

void *calloc(size_t a, size_t b)
{
    void *p = __libc_calloc(a, b);
    if (p) heap_add((long long)malloc_usable_size(p));
    return p;
}

void *realloc(void *p, size_t n)
{
    const long long old = p ? (long long)malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q) heap_add((long long)malloc_usable_size(q) - old);
    else if (n == 0 && p) heap_add(-old);
    return q;
}

void *aligned_alloc(size_t align, size_t n)
{
    void *p = __libc_memalign(align, n);
    if (p) heap_add((long long)malloc_usable_size(p));
    return p;
}

void *memalign(size_t align, size_t n)
{
    return aligned_alloc(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p = aligned_alloc(align, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
#endif
