/* cuda_util.h — what the chapter's .cu files share (C++/CUDA only; C code includes
 * cuda_gemm.h): turning CUDA errors into the library's, and a few small helpers. */
#ifndef CR_CUDA_UTIL_H
#define CR_CUDA_UTIL_H

#include <cuda_runtime_api.h>

extern "C" {
#include "error.h"
}
#include "cuda_gemm.h"

// @snippet cuda_check
/* Turns a CUDA error into CR_EIO with the call and CUDA's message; CR_OK on success.
 * "cudaMalloc(x: 4096 bytes): out of memory". */
cr_status cr_cuda_check(cudaError_t err, const char *what);

/* Checks the launch of the kernel just started (bad configuration, no device, ...):
 * a launch does not return an error, cudaGetLastError does. With CR_CUDA_SYNC=1 in the
 * environment (the tests set it) it also waits for the kernel, so that a fault while it
 * runs is reported with its name, not with the next call's. */
cr_status cr_cuda_launched(const char *kernel);
#define CR_CUDA_LAUNCHED(what) cr_cuda_launched(what)

/* Returns from the calling function on a failed CUDA call or cr_status. */
#define CR_TRY(expr)                                \
    do {                                            \
        cr_status st_ = (expr);                     \
        if (st_ != CR_OK) return st_;               \
    } while (0)
// @end cuda_check

/* CR_OK on a device of compute capability 8.0 or newer (TF32 and BF16 fragments), else
 * CR_EINVAL naming fn and the device's major version. */
cr_status cr_cuda_need_sm80(const char *fn);

/* Blocks of `per` threads covering n items (n >= 1), for grids known to fit (n < 2^31). */
static inline unsigned cr_cuda_blocks(long long n, int per)
{
    return (unsigned)((n + per - 1) / per);
}

/* *blocks = blocks of `per` threads covering n items, or CR_EINVAL naming the kernel when
 * that exceeds gridDim.x's limit (2^31 - 1): a one-dimensional grid, never narrowed. */
static inline cr_status cr_cuda_grid_1d(long long n, int per, const char *kernel, unsigned *blocks)
{
    const long long b = (n + per - 1) / per;
    if (b > 2147483647LL)
        return cr_fail(CR_EINVAL, "%s: %lld items need %lld blocks of %d, more than CUDA's "
                       "2^31 - 1", kernel, n, b, per);
    *blocks = (unsigned)(b < 1 ? 1 : b);
    return CR_OK;
}

#endif
