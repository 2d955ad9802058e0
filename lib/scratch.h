/* scratch.h — buffers kept between calls. A forward pass needs scratch per layer (a
 * padded or interleaved copy of the input, a patch matrix): megabytes each at 384 x 480,
 * which malloc maps fresh from the kernel every call (above its mmap threshold) and the
 * kernel zeroes page by page, each thread's first touch a page fault. Buffers given back
 * wait here for the next call instead. Thread-safe (a mutex); a buffer taken is the
 * caller's alone until it is given back. */
#ifndef CR_SCRATCH_H
#define CR_SCRATCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A 64-byte-aligned, uninitialised buffer of at least bytes: the smallest kept one that
 * fits, else a new one; *cap receives its size (give it back with it). NULL when out of
 * memory. */
void *cr_scratch_get(size_t bytes, size_t *cap);

/* Gives p (from cr_scratch_get, cap its size; NULL: nothing) back to be kept; freed if
 * the pool is full. */
void cr_scratch_put(void *p, size_t cap);

/* Frees every kept buffer (the ones taken are not touched). */
void cr_scratch_release(void);

/* Bytes kept now (for tests and reports). */
size_t cr_scratch_kept_bytes(void);

#ifdef __cplusplus
}
#endif

#endif
