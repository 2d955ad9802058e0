/* upsample_taps.h — chapter 4's up-sampling taps for one axis, in one definition for the
 * up-sampling kernel (layer_kernels.cu) and its adjoint (layer_backward.cu). Included by
 * the chapter's .cu files only, after cuda_util.h. */
#ifndef CR_UPSAMPLE_TAPS_H
#define CR_UPSAMPLE_TAPS_H

#include "cuda_layers.h"   /* cr_upsample_params, cr_cuda_nchw */

/* What the up-sampling kernels need. */
struct UpDims {
    int H, W, Ho, Wo;
    int bilinear, align_corners;
    double scale_h, scale_w;   /* the scale factors, or 0 (the output size decides) */
};

/* One axis of chapter 4's axis_taps for output index dst: source indices i0, i1 and the
 * weights l0, l1 (nearest: i0 == i1, l0 = 1), in the same float and double arithmetic. */
static __device__ inline void up_tap(const UpDims &u, int in, int out, double scale, int dst,
                                     int *i0, int *i1, float *l0, float *l1)
{
    if (!u.bilinear) {                      /* PyTorch's legacy 'nearest', in float */
        int src;
        if (out == in) src = dst;
        else if (out == 2 * in) src = dst >> 1;
        else {
            const float r = scale > 0 ? (float)(1.0 / scale) : (float)in / (float)out;
            src = (int)floorf((float)dst * r);
            if (src > in - 1) src = in - 1;
        }
        *i0 = *i1 = src;
        *l0 = 1.0f;
        *l1 = 0.0f;
        return;
    }
    double src;
    if (u.align_corners) {
        src = out > 1 ? (double)(in - 1) / (double)(out - 1) * (double)dst : 0.0;
    } else {
        const double r = scale > 0 ? 1.0 / scale : (double)in / (double)out;
        src = r * ((double)dst + 0.5) - 0.5;
        if (src < 0) src = 0;
    }
    *i0 = (int)src;
    *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
    const double w1 = src - (double)*i0;
    *l0 = (float)(1.0 - w1);
    *l1 = (float)w1;
}

/* The kernels' view of up-sampling p from an input of shape d to ho x wo. */
static inline UpDims up_dims(const cr_upsample_params *p, cr_cuda_nchw d, int64_t ho, int64_t wo)
{
    UpDims u;
    u.H = (int)d.h; u.W = (int)d.w; u.Ho = (int)ho; u.Wo = (int)wo;
    u.bilinear = p->mode == CR_UPSAMPLE_BILINEAR;
    u.align_corners = p->align_corners;
    u.scale_h = p->scale_h > 0 ? p->scale_h : 0;
    u.scale_w = p->scale_w > 0 ? p->scale_w : 0;
    return u;
}

#endif
