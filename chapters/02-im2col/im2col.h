/* im2col.h — chapter 2: convolution as a matrix product. */
#ifndef CR_IM2COL_H
#define CR_IM2COL_H

#include <stddef.h>
#include "conv_desc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of the patch matrix for one group: Cin_g * kh * kw. */
int64_t cr_im2col_rows(const cr_conv_shape *s);
/* Columns of the patch matrix: Ho * Wo. */
int64_t cr_im2col_cols(const cr_conv_shape *s);
/* Bytes of the patch-matrix workspace cr_conv2d_im2col allocates for shape s
 * (0 when the 1x1 fast path needs none). */
size_t cr_im2col_workspace_bytes(const cr_conv_shape *s);

/* Gathers the patches of one image and one group. x: Cin_g x H x W (that group's
 * channels of one image); col: (Cin_g*kh*kw) x (Ho*Wo), row r = (c*kh + i)*kw + j. */
void cr_im2col(const cr_conv_shape *s, const float *x, float *col);

/* C = A * B, row-major. A: M x K (leading dimension lda), B: K x N (ldb), C: M x N (ldc). */
void cr_gemm_naive(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float *C, int64_t ldc);

/* y = conv2d(x, w, b) as one GEMM per image and group (same contract as chapter 1). */
cr_status cr_conv2d_im2col(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                           const cr_tensor *b, cr_tensor *y);

#ifdef __cplusplus
}
#endif

#endif
