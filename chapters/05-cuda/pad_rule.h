/* pad_rule.h — chapter 1's padding rule in one definition for the host and the device.
 *
 * The chapter's kernels resolve padding with cr_pad_rule; tests/test_ch05.c includes this
 * header in C and proves cr_pad_rule equal to chapter 1's cr_pad_index for every mode, so
 * the code the kernels run is the code the test checks. (Chapter 1 keeps cr_pad_index in
 * direct.c: writing it is a coursework task there.) */
#ifndef CR_PAD_RULE_H
#define CR_PAD_RULE_H

#include "conv_desc.h"   /* cr_pad_mode */

/* CR_HD: a function for both sides, __host__ __device__ under nvcc and the CUDA emulator
 * (whose qualifiers expand to nothing), nothing at all in C. */
#if defined(__CUDACC__) || defined(CR_EMU)
#define CR_HD __host__ __device__
#else
#define CR_HD
#endif

// @snippet gpu_pad_index
/* The input index that padded coordinate i (possibly outside 0..n-1) copies in padding
 * mode m (a cr_pad_mode), or -1 where zero padding applies: chapter 1's cr_pad_index. */
static inline CR_HD int cr_pad_rule(int i, int n, int m)
{
    if (i >= 0 && i < n) return i;
    switch (m) {
    case CR_PAD_REFLECT: return i < 0 ? -i : 2 * (n - 1) - i;
    case CR_PAD_REPLICATE: return i < 0 ? 0 : n - 1;
    case CR_PAD_CIRCULAR: return i < 0 ? i + n : i - n;
    default: return -1;
    }
}
// @end gpu_pad_index

#endif
