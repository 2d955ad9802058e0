/* direct.h — chapter 1: convolution by its definition, seven nested loops. */
#ifndef CR_DIRECT_H
#define CR_DIRECT_H

#include "conv_desc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Maps a coordinate i of the padded input (it may lie outside 0..n-1) to the input
 * index it copies for padding mode m, or -1 where zero padding applies. Valid for
 * the padding amounts cr_conv_shape_init accepts (reflect: pad < n; circular: pad <= n). */
int64_t cr_pad_index(int64_t i, int64_t n, cr_pad_mode m);

/* y = conv2d(x, w, b) for every nn.Conv2d option. x: N x Cin x H x W; w: Cout x Cin/groups
 * x kh x kw; b: Cout or NULL; y: N x Cout x Ho x Wo (preallocated, overwritten). */
cr_status cr_conv2d_direct(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                           const cr_tensor *b, cr_tensor *y);

#ifdef __cplusplus
}
#endif

#endif
