/* conv_desc.h — the convolution descriptor: every nn.Conv2d parameter,
 * PyTorch's output-shape rule, and validation with clear errors. */
#ifndef CR_CONV_DESC_H
#define CR_CONV_DESC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "error.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CR_PAD_ZEROS = 0,
    CR_PAD_REFLECT,
    CR_PAD_REPLICATE,
    CR_PAD_CIRCULAR
} cr_pad_mode;

/* The layer's parameters, as nn.Conv2d takes them. Padding is given per side
 * (top, bottom, left, right) so that padding='same' with an even kernel, which
 * PyTorch pads asymmetrically, is representable. */
typedef struct {
    int64_t in_channels, out_channels;
    int64_t kernel_h, kernel_w;
    int64_t stride_h, stride_w;
    int64_t pad_top, pad_bottom, pad_left, pad_right;
    int64_t dilation_h, dilation_w;
    int64_t groups;
    bool bias;
    cr_pad_mode pad_mode;
} cr_conv_params;

/* A descriptor bound to an input size: the parameters plus every derived size. */
typedef struct {
    cr_conv_params p;
    int64_t batch;           /* N */
    int64_t h_in, w_in;      /* input spatial size */
    int64_t h_out, w_out;    /* output spatial size (PyTorch's rule) */
    int64_t cin_g, cout_g;   /* channels per group */
    size_t x_numel, w_numel, y_numel; /* N*Cin*H*W, Cout*Cin_g*kh*kw, N*Cout*Ho*Wo */
} cr_conv_shape;

/* Square defaults: kernel k, stride 1, padding 0, dilation 1, groups 1, bias, zeros. */
cr_conv_params cr_conv_params_default(int64_t cin, int64_t cout, int64_t k);
/* Sets symmetric padding (ph rows top and bottom, pw columns left and right). */
void cr_conv_set_padding(cr_conv_params *p, int64_t ph, int64_t pw);
/* Resolves padding='same' as PyTorch does (stride must be 1; extra pad goes bottom/right). */
cr_status cr_conv_set_padding_same(cr_conv_params *p);

/* Validates p against an N x Cin x H x W input and fills s; on failure the message
 * names the bad parameter and what was expected. */
cr_status cr_conv_shape_init(cr_conv_shape *s, const cr_conv_params *p,
                             int64_t n, int64_t h, int64_t w);

/* FLOPs of the forward pass: 2*N*Cout*Ho*Wo*Cin_g*kh*kw. */
double cr_conv_flops(const cr_conv_shape *s);

/* Checks that x (N x Cin x H x W), w (Cout x Cin/groups x kh x kw, PyTorch's OIHW),
 * b (Cout, or NULL exactly when p->bias is false) and y (N x Cout x Ho x Wo) fit p,
 * and fills s. The message names the tensor and the expected shape. */
cr_status cr_conv_bind(cr_conv_shape *s, const cr_conv_params *p, const cr_tensor *x,
                       const cr_tensor *w, const cr_tensor *b, const cr_tensor *y);

/* Every forward convolution in the project has this signature: y = conv2d(x, w, b)
 * with the shapes cr_conv_bind checks; y is preallocated and fully overwritten. */
typedef cr_status (*cr_conv2d_fn)(const cr_conv_params *p, const cr_tensor *x,
                                  const cr_tensor *w, const cr_tensor *b, cr_tensor *y);

/* Writes the parameters as nn.Conv2d would print them, e.g.
 * "Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), ...)". */
void cr_conv_params_str(const cr_conv_params *p, char *buf, size_t len);

/* Name of a padding mode as PyTorch spells it ("zeros", "reflect", ...). */
const char *cr_pad_mode_name(cr_pad_mode m);
/* Parses a PyTorch padding-mode name. */
cr_status cr_pad_mode_parse(const char *name, cr_pad_mode *out);

#ifdef __cplusplus
}
#endif

#endif
