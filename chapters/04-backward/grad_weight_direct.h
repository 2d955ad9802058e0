/* grad_weight_direct.h — chapter 4: dW of a grouped convolution with few channels per
 * group, as dot products of dY with the padded input (no GEMM). */
#ifndef CR_GRAD_WEIGHT_DIRECT_H
#define CR_GRAD_WEIGHT_DIRECT_H

#include <stddef.h>
#include <stdint.h>

#include "conv_desc.h"
#include "error.h"

/* True when cr_grad_weight_direct takes shape s: AVX2 or better, more than one group and
 * at least one per thread, at most 16 output channels per group (32 with 28 or more
 * output columns). */
int cr_grad_weight_direct_fits(const cr_conv_shape *s);

/* The heap bytes cr_grad_weight_direct takes for shape s on the threads available now. */
size_t cr_grad_weight_direct_bytes(const cr_conv_shape *s);

/* dw (Cout x Cin_g x kh x kw) = the gradient of the convolution s with respect to its
 * weights, from x (N x Cin x H x W) and dy (N x Cout x Ho x Wo); threads share the groups.
 * Only where cr_grad_weight_direct_fits(s). */
cr_status cr_grad_weight_direct(const cr_conv_shape *s, const float *x, const float *dy,
                                float *dw);

/* What a kernel needs to add one (image, group)'s share into dW_g. */
typedef struct {
    int64_t cout_g, taps;     /* rows and columns of dW_g (taps = Cin_g * kh * kw) */
    const int64_t *tap_off;   /* where tap t of output (0, 0) reads in the padded copy */
    int64_t ho, wo;           /* output rows and columns */
    int64_t xstep;            /* floats between the copy's rows of consecutive output rows */
    int64_t plane;            /* Ho * Wo: floats between dY's channels */
} cr_dw_direct_args;

/* dw_g (Cout_g x taps) += dy_g (Cout_g x Ho x Wo) correlated with xp at each tap. */
typedef void (*cr_dw_direct_fn)(const cr_dw_direct_args *a, const float *xp, const float *dy,
                                float *dw);
void cr_dw_direct_avx512(const cr_dw_direct_args *a, const float *xp, const float *dy, float *dw);
void cr_dw_direct_avx2(const cr_dw_direct_args *a, const float *xp, const float *dy, float *dw);

#endif
