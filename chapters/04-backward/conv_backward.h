/* conv_backward.h — chapter 4: the gradients of convolution.
 *
 * Given the gradient dy = dL/dy of a loss L with respect to a convolution's output
 * y = conv2d(x, w, b), the backward pass returns
 *
 *     dx = dL/dx,   dw = dL/dw,   db = dL/db
 *
 * for every nn.Conv2d option (stride, dilation, groups, per-side padding in all four
 * padding modes). Shapes, as in the forward pass (cr_conv_bind):
 *
 *     x  : N x Cin x H x W           dx : like x
 *     w  : Cout x Cin/groups x kh x kw (OIHW)   dw : like w
 *     dy : N x Cout x Ho x Wo        db : Cout
 *
 * dx, dw and db may each be NULL: only the gradients asked for are computed (a frozen
 * layer needs dx only; the first layer of a network needs no dx). The outputs are
 * overwritten, not accumulated into. */
#ifndef CR_CONV_BACKWARD_H
#define CR_CONV_BACKWARD_H

#include <stddef.h>

#include "conv_desc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every backward convolution in the project has this signature (shapes above). */
typedef cr_status (*cr_conv2d_backward_fn)(const cr_conv_params *p, const cr_tensor *x,
                                           const cr_tensor *w, const cr_tensor *dy,
                                           cr_tensor *dx, cr_tensor *dw, cr_tensor *db);

/* Checks x, w, dy (all required) and dx, dw, db (each optional) against p and fills s;
 * the message names the tensor and the expected shape, as cr_conv_bind's does. */
cr_status cr_conv_backward_bind(cr_conv_shape *s, const cr_conv_params *p,
                                const cr_tensor *x, const cr_tensor *w, const cr_tensor *dy,
                                const cr_tensor *dx, const cr_tensor *dw, const cr_tensor *db);

/* The reference: chapter 1's seven loops run backwards, one scalar at a time. dx is
 * scattered through the padding map (reflect, replicate and circular send each padded
 * tap's gradient to the pixel it copied; zeros drops it); dw and db accumulate. */
cr_status cr_conv2d_backward_ref(const cr_conv_params *p, const cr_tensor *x,
                                 const cr_tensor *w, const cr_tensor *dy, cr_tensor *dx,
                                 cr_tensor *dw, cr_tensor *db);

/* The chapter's first fast backward, on chapter 3's GEMM, per image and group:
 *   dX_g = col2im(W_g^T dY_g)                    (cr_sgemm with A transposed)
 *   dW_g += dY_g cols_g^T  over the batch        (cr_sgemm with B transposed, beta = 1)
 *   db   = sums of dY over images and pixels.
 * OpenMP: (image, group) pairs are shared by the threads when there are enough of them
 * (each thread then accumulates its own partial dW, added in thread order), else the
 * GEMMs themselves run on all threads. Same thread count, same bits. */
cr_status cr_conv2d_backward_gemm(const cr_conv_params *p, const cr_tensor *x,
                                  const cr_tensor *w, const cr_tensor *dy, cr_tensor *dx,
                                  cr_tensor *dw, cr_tensor *db);

/* The fast backward, what training uses:
 *   dW = one GEMM per group whose depth is the whole batch's pixels, dY and the patch
 *        matrix read pixel-major (channels contiguous), the patch matrix never built:
 *        the GEMM's packing gathers it from a padded pixel-major copy of x (for a 1x1
 *        stride-1 unpadded kernel, where x is the patch matrix, cr_conv2d_backward_gemm's
 *        GEMMs instead);
 *   dX = for stride 1 and zero padding, the forward convolution of dY with the kernel
 *        turned by 180 degrees and in/out channels swapped (cr_conv2d_fast); otherwise
 *        cr_conv2d_backward_gemm's col2im route;
 *   db = as cr_conv2d_backward_gemm.
 * OpenMP: groups shared by the threads when there are enough, else ranges of dW's depth
 * (one partial dW per thread, added in thread order). Same thread count, same bits. */
cr_status cr_conv2d_backward(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                             const cr_tensor *dy, cr_tensor *dx, cr_tensor *dw,
                             cr_tensor *db);

/* The adjoint of chapter 2's cr_im2col, for one image and one group.
 * col: (Cin_g*kh*kw) x (Ho*Wo), row (c*kh + i)*kw + j, as cr_im2col writes it;
 * dx: Cin_g x H x W, overwritten with the sum, for every input pixel, of the col entries
 * that im2col would have copied from it (through the padding map; zero padding drops). */
void cr_col2im(const cr_conv_shape *s, const float *col, float *dx);

/* Bytes of workspace cr_conv2d_backward holds at its peak (the worst case: every thread's
 * buffers live at once), all threads together, for
 * shape s with all three gradients asked for and the current OpenMP thread count: its own
 * buffer (x padded and pixel-major, dY pixel-major, the turned kernel or dW's transpose,
 * the partial dWs of the depth split) plus what runs beside it (chapter 3's forward for
 * dX, or dW's GEMMs with their packing buffers), or the col2im route's patch matrices,
 * partials and packing buffers when that is larger. Tensors the caller owns are not
 * counted. tests/test_ch04_workspace.c checks it against the bytes really allocated. */
size_t cr_conv2d_backward_workspace_bytes(const cr_conv_shape *s);

#ifdef __cplusplus
}
#endif

#endif
