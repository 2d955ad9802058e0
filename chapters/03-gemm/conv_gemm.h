/* conv_gemm.h — chapter 3: convolution on top of the fast GEMM.
 *
 * Every function here has chapter 1's contract (cr_conv2d_fn): x is N x Cin x H x W,
 * w is Cout x Cin/groups x kh x kw (OIHW), b is Cout or NULL, y is N x Cout x Ho x Wo
 * (preallocated, overwritten); every nn.Conv2d option is supported. */
#ifndef CR_CONV_GEMM_H
#define CR_CONV_GEMM_H

#include <stddef.h>

#include "conv_desc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Threads for a convolution's (image, group) loop: all that a parallel region started here
 * would get when the batch * groups pairs share evenly between them (each pair's GEMM
 * then runs on one thread), else 1 (each pair's GEMM runs on all threads). Chapters 4 and
 * 7 share the rule. */
int cr_conv_outer_threads(const cr_conv_shape *s);

/* Chapter 2's recipe with chapter 3's GEMM: im2col into a patch matrix, then cr_sgemm. */
cr_status cr_conv2d_gemm(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y);
/* Bytes of workspace cr_conv2d_gemm uses per concurrent GEMM: the patch matrix (none for
 * a 1x1 stride-1 unpadded kernel) plus the GEMM's packing buffers for one thread. */
size_t cr_conv2d_gemm_workspace_bytes(const cr_conv_shape *s);

/* im2col fused into the packing of B: the GEMM's B panels are packed straight from the
 * image, so no patch matrix exists. */
cr_status cr_conv2d_fused(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                          const cr_tensor *b, cr_tensor *y);
/* Bytes of workspace cr_conv2d_fused uses per concurrent GEMM: the packing buffers only. */
size_t cr_conv2d_fused_workspace_bytes(const cr_conv_shape *s);

/* A direct kernel for convolutions with few channels per group (ResNeXt's 4,
 * depthwise's 1): 4 output channels x 24 columns in ymm registers (AVX2), or 8 x 48 in
 * zmm (AVX-512, when cr_sgemm's kernel is "avx512"), on a padded copy of each group's
 * input. Runs cr_conv2d_fused on a CPU without AVX2. */
cr_status cr_conv2d_grouped(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                            const cr_tensor *b, cr_tensor *y);
/* Bytes of workspace cr_conv2d_grouped uses per thread: one group's padded input copies and
 * (phases layout) one block of output channels' flat output. */
size_t cr_conv2d_grouped_workspace_bytes(const cr_conv_shape *s);

/* The chapter's default: the fastest of the paths above for this shape (see
 * cr_conv2d_fast_path). */
cr_status cr_conv2d_fast(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y);
/* Which path cr_conv2d_fast takes for shape s: "grouped", "fused" or "gemm". */
const char *cr_conv2d_fast_path(const cr_conv_shape *s);
/* Bytes of workspace cr_conv2d_fast holds at once for shape s with the current OpenMP
 * thread count, all threads together: its path's buffers times the threads that hold
 * one, plus the direct kernel's column map and tap offsets. */
size_t cr_conv2d_fast_peak_bytes(const cr_conv_shape *s);

#ifdef __cplusplus
}
#endif

#endif
