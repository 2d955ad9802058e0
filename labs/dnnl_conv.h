/* dnnl_conv.h — oneDNN's convolution as a peer for the labs (3: fp32, 7: int8), built once
 * per layer on the lab's own NCHW buffers. The primitive picks its own layouts (format
 * "any"); the reorders from and to NCHW run inside every timed call, the weights are
 * reordered once at set-up, as an inference engine does. Compiled only where oneDNN is
 * found (CR_HAVE_DNNL). */
#ifndef LAB_DNNL_CONV_H
#define LAB_DNNL_CONV_H

#include <oneapi/dnnl/dnnl.h>

#include "conv_desc.h"
#include "error.h"

/* The element types of the four operands: f32 everywhere, or u8 / s8 / s32 / u8. */
typedef struct {
    dnnl_data_type_t src, wei, bias, dst;
} lab_dnnl_types;

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t conv, src_reorder, dst_reorder;
    dnnl_memory_t user_src, user_dst, src, wei, bias, dst;
    int ok;          /* 1 once built: otherwise the layer has no oneDNN row */
    char impl[64];   /* the implementation oneDNN chose (impl_info_str) */
} lab_dnnl_conv;

/* Builds oneDNN's convolution of p on shape s (zero padding only) over the caller's
 * buffers: x (N x Cin x H x W, t->src), w (Cout x Cin/g x kh x kw, t->wei), b (Cout,
 * t->bias; NULL: none), y (N x Cout x Ho x Wo, t->dst); attr (NULL: none) carries scales,
 * zero points and post-ops. d->ok says whether it worked. */
void lab_dnnl_conv_init(lab_dnnl_conv *d, const cr_conv_params *p, const cr_conv_shape *s,
                        const lab_dnnl_types *t, void *x, void *w, void *b, void *y,
                        const_dnnl_primitive_attr_t attr);
/* One end-to-end run (arg: a lab_dnnl_conv): NCHW to the primitive's layout, the
 * convolution, back to NCHW. */
cr_status lab_dnnl_conv_run(void *arg);
/* Frees whatever d holds (safe on a half-built one). */
void lab_dnnl_conv_free(lab_dnnl_conv *d);

#endif
