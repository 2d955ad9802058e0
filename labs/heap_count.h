/* heap_count.h — a counting allocator for the programs that measure memory (lab 4's peak
 * bytes, tests/test_ch04_workspace.c's proof of the backward's workspace figure).
 *
 * Linking heap_count.c into a program replaces malloc, calloc, realloc, free,
 * aligned_alloc, memalign and posix_memalign with versions that forward to glibc and
 * count the usable size of every live block. Under AddressSanitizer or ThreadSanitizer,
 * which bring their own allocator, nothing is replaced and CR_HEAP_COUNTING is 0; under
 * valgrind, which replaces some of them itself, cr_heap_counting_works() says so. */
#ifndef CR_HEAP_COUNT_H
#define CR_HEAP_COUNT_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CR_HEAP_COUNTING 0
#else
#define CR_HEAP_COUNTING 1
#endif

/* Bytes of the heap's live blocks now (0 when not counting). */
long long cr_heap_now(void);
/* Starts a peak measurement: the peak is reset to the current level, which is returned. */
long long cr_heap_mark(void);
/* The highest level since the last cr_heap_mark (0 when not counting). */
long long cr_heap_peak(void);
/* True if this program's malloc and aligned allocations are the counted ones: a 64 KiB
 * malloc and a 64 KiB cr_aligned_alloc (what the library calls) raise the count. */
int cr_heap_counting_works(void);

#ifdef __cplusplus
}
#endif

#endif
