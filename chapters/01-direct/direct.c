/* direct.c — chapter 1: the convolution written as its definition.
 *
 * Every later chapter is proven equal to this file, and this file is proven equal
 * to PyTorch (tests/test_ch01_golden.c), so it favours being obviously right over
 * being fast: one output element at a time, seven loops, no tricks. */
#include "direct.h"

// @snippet pad_index
int64_t cr_pad_index(int64_t i, int64_t n, cr_pad_mode m)
{
    // @solution pad_index: map a padded coordinate to the input index each padding mode copies
    if (i >= 0 && i < n) return i;              /* inside the image: itself */
    switch (m) {
    case CR_PAD_REFLECT:                        /* mirror, edge not repeated: 2 1 | 0 1 2 3 | 2 1 */
        return i < 0 ? -i : 2 * (n - 1) - i;
    case CR_PAD_REPLICATE:                      /* repeat the edge:           0 0 | 0 1 2 3 | 3 3 */
        return i < 0 ? 0 : n - 1;
    case CR_PAD_CIRCULAR:                       /* wrap around:               2 3 | 0 1 2 3 | 0 1 */
        return i < 0 ? i + n : i - n;
    case CR_PAD_ZEROS:
    default:                                    /* no source pixel: the value is 0 */
        return -1;
    }
    // @stub
    // (void)i; (void)n; (void)m;
    // (void)cr_todo("pad_index");
    // return -2; /* TODO: not an index any mode can return */
    // @end-solution
}
// @end pad_index

// @snippet direct_loops
/* The seven loops over raw NCHW / OIHW arrays whose sizes s describes. */
static cr_status conv_direct_loops(const cr_conv_shape *s, const float *x, const float *w,
                                   const float *b, float *y)
{
    // @solution direct_loops: the seven loops of the definition, with groups, stride, dilation and padding
    const cr_conv_params *p = &s->p;
    const int64_t C = p->in_channels, K = p->out_channels;
    const int64_t H = s->h_in, W = s->w_in, Ho = s->h_out, Wo = s->w_out;
    const int64_t R = p->kernel_h, S = p->kernel_w;

#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < s->batch; n++)                 /* 1: every image        */
        for (int64_t k = 0; k < K; k++) {                  /* 2: every out channel  */
            const int64_t g = k / s->cout_g;               /* k's group ...          */
            const int64_t c0 = g * s->cin_g;               /* ... reads these inputs */
            for (int64_t oh = 0; oh < Ho; oh++)            /* 3: every output row   */
                for (int64_t ow = 0; ow < Wo; ow++) {      /* 4: every output col   */
                    float acc = b ? b[k] : 0.0f;
                    for (int64_t c = 0; c < s->cin_g; c++)         /* 5: in channel */
                        for (int64_t r = 0; r < R; r++) {          /* 6: kernel row */
                            const int64_t ih = cr_pad_index(
                                oh * p->stride_h - p->pad_top + r * p->dilation_h, H, p->pad_mode);
                            for (int64_t q = 0; q < S; q++) {      /* 7: kernel col */
                                const int64_t iw = cr_pad_index(
                                    ow * p->stride_w - p->pad_left + q * p->dilation_w, W,
                                    p->pad_mode);
                                /* a zero-padded tap is a real zero, multiplied like any
                                 * other input: 0 * NaN = NaN, as in PyTorch */
                                const float xv = (ih < 0 || iw < 0)
                                    ? 0.0f : x[((n * C + c0 + c) * H + ih) * W + iw];
                                acc += xv * w[((k * s->cin_g + c) * R + r) * S + q];
                            }
                        }
                    y[((n * K + k) * Ho + oh) * Wo + ow] = acc;
                }
        }
    return CR_OK;
    // @stub
    // (void)s; (void)x; (void)w; (void)b; (void)y;
    // return cr_todo("direct_loops");
    // @end-solution
}
// @end direct_loops

// @snippet direct_api
cr_status cr_conv2d_direct(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                           const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);  /* shapes checked, sizes derived */
    if (st) return st;
    return conv_direct_loops(&s, x->data, w->data, b ? b->data : NULL, y->data);
}
// @end direct_api
