/* layer_util.h — what the layers' .cu files (layer_kernels.cu, layer_backward.cu) share,
 * inside chapter 5 only: the shape check and the layers' one scratch buffer, both defined
 * in layer_kernels.cu. C++ (the .cu files), after cuda_util.h. */
#ifndef CR_LAYER_UTIL_H
#define CR_LAYER_UTIL_H

#include "cuda_layers.h"

/* Checks the shape d named what for fn: every size >= 1 and at most 2^31 - 1 elements;
 * *numel receives N*C*H*W. CR_EINVAL naming fn and what otherwise. */
cr_status cr_layer_check_dims(const char *fn, const char *what, cr_cuda_nchw d, long long *numel);
/* *p = at least bytes of the layers' device scratch (grown on demand, kept between calls,
 * freed by cr_cuda_layers_release). One user at a time: a layer's call is done with it
 * before it returns or before the next layer's kernels are launched on the stream. */
cr_status cr_layer_scratch(size_t bytes, void **p);

#endif
