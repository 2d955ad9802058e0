/* ch05_common.h — the device buffers chapter 5's tests (test_ch05.c, test_ch05_layers.c)
 * share. Header-only (static inline): those tests are built three times each (nvcc, the
 * emulator, the race detector) from the one C file, and this header goes with it, so no
 * build list has to name it. Each helper fails the current cmocka test on error. */
#ifndef CR_TEST_CH05_COMMON_H
#define CR_TEST_CH05_COMMON_H

#include <stddef.h>

#include "cr_test.h"
#include "cuda_gemm.h"

/* A new device copy of n floats of host (NULL when host is NULL). */
static inline float *to_dev(const float *host, size_t n, const char *what)
{
    if (!host) return NULL;
    void *d = NULL;
    assert_cr_ok(cr_cuda_malloc(&d, n * sizeof(float), what));
    assert_cr_ok(cr_cuda_to_device(d, host, n * sizeof(float)));
    return d;
}

/* A device buffer of n floats filled with NaN (anything left unwritten shows). */
static inline float *dev_poisoned(size_t n, const char *what)
{
    void *d = NULL;
    assert_cr_ok(cr_cuda_malloc(&d, n * sizeof(float), what));
    assert_cr_ok(cr_cuda_poison(d, n));
    return d;
}

#endif
