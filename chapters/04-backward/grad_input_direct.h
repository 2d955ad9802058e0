/* grad_input_direct.h — chapter 4: dX of a strided grouped convolution with few channels
 * per group, scattered straight from dY and W into a padded copy (no GEMM, no col2im). */
#ifndef CR_GRAD_INPUT_DIRECT_H
#define CR_GRAD_INPUT_DIRECT_H

#include <stddef.h>
#include <stdint.h>

#include "conv_desc.h"
#include "error.h"

/* True when cr_grad_input_direct takes shape s: AVX2 or better, more than one group, at
 * most 32 input and output channels per group (see grad_input_direct.c for the
 * measurements). The caller sends here only what the forward route cannot take. */
int cr_grad_input_direct_fits(const cr_conv_shape *s);

/* The heap bytes cr_grad_input_direct takes for shape s on the threads available now. */
size_t cr_grad_input_direct_bytes(const cr_conv_shape *s);

/* dx (N x Cin x H x W) = the gradient of the convolution s with respect to its input,
 * from w (Cout x Cin_g x kh x kw) and dy (N x Cout x Ho x Wo), any stride, dilation and
 * padding mode; threads share the (image, group) pairs, each pair's sums in a fixed
 * order (the same bits for any thread count). Only where cr_grad_input_direct_fits(s). */
cr_status cr_grad_input_direct(const cr_conv_shape *s, const float *w, const float *dy,
                               float *dx);

/* What a kernel needs to scatter one (image, group) into the padded dX copy. */
typedef struct {
    int64_t cout_g, cin_g;    /* channels of the group */
    int64_t kk;               /* taps of one channel (kh * kw): W_g is Cout_g x (Cin_g*kk) */
    const int64_t *tap_off;   /* where tap t of output (0, 0) lands in the padded copy */
    int64_t flat;             /* dY's flat plane: Ho rows of lp, rounded up to 48 */
} cr_dx_direct_args;

/* dxp (the padded copy) += for every tap t, sum over co of w_g[co][t] times dyp's channel
 * co (cout_g x flat floats), placed at tap_off[t]. */
typedef void (*cr_dx_direct_fn)(const cr_dx_direct_args *a, const float *w_g, const float *dyp,
                                float *dxp);
void cr_dx_direct_avx512(const cr_dx_direct_args *a, const float *w_g, const float *dyp,
                         float *dxp);
void cr_dx_direct_avx2(const cr_dx_direct_args *a, const float *w_g, const float *dyp,
                       float *dxp);

#endif
