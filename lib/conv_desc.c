/* conv_desc.c — nn.Conv2d's parameters: defaults, validation, output shape. */
#include "conv_desc.h"

#include <stdio.h>
#include <string.h>

/* Sizes we refuse before any arithmetic: no dimension of a real network comes near. */
#define CR_MAX_DIM ((int64_t)1 << 24)
/* The largest tensor a descriptor may describe, in elements (as in tensor.c). */
#define CR_MAX_NUMEL ((size_t)1 << 34)

cr_conv_params cr_conv_params_default(int64_t cin, int64_t cout, int64_t k)
{
    cr_conv_params p;
    memset(&p, 0, sizeof p);
    p.in_channels = cin;
    p.out_channels = cout;
    p.kernel_h = p.kernel_w = k;
    p.stride_h = p.stride_w = 1;
    p.dilation_h = p.dilation_w = 1;
    p.groups = 1;
    p.bias = true;
    p.pad_mode = CR_PAD_ZEROS;
    return p;
}

void cr_conv_set_padding(cr_conv_params *p, int64_t ph, int64_t pw)
{
    p->pad_top = p->pad_bottom = ph;
    p->pad_left = p->pad_right = pw;
}

// @snippet padding_same
cr_status cr_conv_set_padding_same(cr_conv_params *p)
{
    if (p->stride_h != 1 || p->stride_w != 1)
        return cr_fail(CR_EINVAL, "padding='same': expected stride 1, got (%lld, %lld)",
                       (long long)p->stride_h, (long long)p->stride_w);
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->dilation_h < 1 || p->dilation_w < 1)
        return cr_fail(CR_EINVAL, "padding='same': kernel and dilation must be >= 1");
    /* Bounded before the products below, which would overflow int64 otherwise. */
    if (p->kernel_h > CR_MAX_DIM || p->kernel_w > CR_MAX_DIM || p->dilation_h > CR_MAX_DIM ||
        p->dilation_w > CR_MAX_DIM)
        return cr_fail(CR_EINVAL, "padding='same': kernel and dilation must be at most %lld",
                       (long long)CR_MAX_DIM);
    /* PyTorch: total = dilation*(k-1); the smaller half goes top/left. */
    int64_t th = p->dilation_h * (p->kernel_h - 1), tw = p->dilation_w * (p->kernel_w - 1);
    p->pad_top = th / 2;
    p->pad_bottom = th - th / 2;
    p->pad_left = tw / 2;
    p->pad_right = tw - tw / 2;
    return CR_OK;
}
// @end padding_same

/* Fails unless lo <= v <= hi, naming the parameter. */
static cr_status check_range(const char *name, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return cr_fail(CR_EINVAL, "%s = %lld: expected %lld..%lld", name, (long long)v,
                       (long long)lo, (long long)hi);
    return CR_OK;
}

/* Checks every parameter on its own (ranges, groups dividing the channels). */
static cr_status check_params(const cr_conv_params *p)
{
    const struct { const char *name; int64_t v, lo; } r[] = {
        {"in_channels", p->in_channels, 1},   {"out_channels", p->out_channels, 1},
        {"kernel_h", p->kernel_h, 1},         {"kernel_w", p->kernel_w, 1},
        {"stride_h", p->stride_h, 1},         {"stride_w", p->stride_w, 1},
        {"dilation_h", p->dilation_h, 1},     {"dilation_w", p->dilation_w, 1},
        {"groups", p->groups, 1},             {"pad_top", p->pad_top, 0},
        {"pad_bottom", p->pad_bottom, 0},     {"pad_left", p->pad_left, 0},
        {"pad_right", p->pad_right, 0},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        cr_status st = check_range(r[i].name, r[i].v, r[i].lo, CR_MAX_DIM);
        if (st) return st;
    }
    if (p->in_channels % p->groups)
        return cr_fail(CR_EINVAL, "groups = %lld: must divide in_channels = %lld",
                       (long long)p->groups, (long long)p->in_channels);
    if (p->out_channels % p->groups)
        return cr_fail(CR_EINVAL, "groups = %lld: must divide out_channels = %lld",
                       (long long)p->groups, (long long)p->out_channels);
    if ((unsigned)p->pad_mode > CR_PAD_CIRCULAR)
        return cr_fail(CR_EINVAL, "pad_mode = %d: expected zeros, reflect, replicate or circular",
                       (int)p->pad_mode);
    return CR_OK;
}

/* Checks the padding of one spatial dimension of size n against PyTorch's rules for the mode. */
static cr_status check_pad_mode(const char *dim, cr_pad_mode m, int64_t before, int64_t after,
                                int64_t n)
{
    int64_t pad = before > after ? before : after;
    if (m == CR_PAD_REFLECT && pad >= n)
        return cr_fail(CR_EINVAL, "reflect padding %lld on %s: expected less than the input size %lld",
                       (long long)pad, dim, (long long)n);
    if (m == CR_PAD_CIRCULAR && pad > n)
        return cr_fail(CR_EINVAL, "circular padding %lld on %s: expected at most the input size %lld",
                       (long long)pad, dim, (long long)n);
    return CR_OK;
}

/* Output size of one dimension: floor((n + pads - dilation*(k-1) - 1) / stride) + 1. */
static cr_status out_size(const char *dim, int64_t n, int64_t before, int64_t after, int64_t k,
                          int64_t stride, int64_t dilation, int64_t *out)
{
    int64_t padded = n + before + after;
    int64_t span = dilation * (k - 1) + 1;
    if (span > padded)
        return cr_fail(CR_EINVAL, "%s: dilated kernel size %lld is larger than the padded input "
                       "size %lld (input %lld + padding %lld + %lld)", dim, (long long)span,
                       (long long)padded, (long long)n, (long long)before, (long long)after);
    *out = (padded - span) / stride + 1;
    return CR_OK;
}

cr_status cr_conv_shape_init(cr_conv_shape *s, const cr_conv_params *p, int64_t n, int64_t h,
                             int64_t w)
{
    memset(s, 0, sizeof *s);
    cr_status st;
    if ((st = check_params(p))) return st;
    if ((st = check_range("batch", n, 1, CR_MAX_DIM))) return st;
    if ((st = check_range("input height", h, 1, CR_MAX_DIM))) return st;
    if ((st = check_range("input width", w, 1, CR_MAX_DIM))) return st;
    if ((st = check_pad_mode("height", p->pad_mode, p->pad_top, p->pad_bottom, h))) return st;
    if ((st = check_pad_mode("width", p->pad_mode, p->pad_left, p->pad_right, w))) return st;
    if ((st = out_size("height", h, p->pad_top, p->pad_bottom, p->kernel_h, p->stride_h,
                       p->dilation_h, &s->h_out))) return st;
    if ((st = out_size("width", w, p->pad_left, p->pad_right, p->kernel_w, p->stride_w,
                       p->dilation_w, &s->w_out))) return st;

    s->p = *p;
    s->batch = n;
    s->h_in = h;
    s->w_in = w;
    s->cin_g = p->in_channels / p->groups;
    s->cout_g = p->out_channels / p->groups;

    /* Element counts, each product checked (sizes are <= 2^24, so a chain can overflow). */
    const struct { const char *what; int64_t a, b, c, d; size_t *out; } counts[] = {
        {"input elements", n, p->in_channels, h, w, &s->x_numel},
        {"weight elements", p->out_channels, s->cin_g, p->kernel_h, p->kernel_w, &s->w_numel},
        {"output elements", n, p->out_channels, s->h_out, s->w_out, &s->y_numel},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        size_t v = 1;
        const int64_t f[4] = {counts[i].a, counts[i].b, counts[i].c, counts[i].d};
        for (int j = 0; j < 4; j++)
            if ((st = cr_mul_checked(v, (size_t)f[j], CR_MAX_NUMEL, counts[i].what, &v))) return st;
        *counts[i].out = v;
    }
    return CR_OK;
}

cr_status cr_conv_bind(cr_conv_shape *s, const cr_conv_params *p, const cr_tensor *x,
                       const cr_tensor *w, const cr_tensor *b, const cr_tensor *y)
{
    if (!p || !x || !x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "input x: expected a rank-4 N x C x H x W tensor");
    if (x->shape[1] != p->in_channels)
        return cr_fail(CR_EINVAL, "input x: has %lld channels, in_channels is %lld",
                       (long long)x->shape[1], (long long)p->in_channels);
    cr_status st = cr_conv_shape_init(s, p, x->shape[0], x->shape[2], x->shape[3]);
    if (st) return st;
    const int64_t ws[4] = {p->out_channels, s->cin_g, p->kernel_h, p->kernel_w};
    const int64_t ys[4] = {s->batch, p->out_channels, s->h_out, s->w_out};
    const int64_t bs[1] = {p->out_channels};
    if ((st = cr_tensor_expect_shape("w", w, 4, ws))) return st;
    if ((st = cr_tensor_expect_shape("y", y, 4, ys))) return st;
    if (p->bias) {
        if ((st = cr_tensor_expect_shape("b", b, 1, bs))) return st;
    } else if (b) {
        return cr_fail(CR_EINVAL, "tensor b: given, but the parameters say bias=false");
    }
    return CR_OK;
}

double cr_conv_flops(const cr_conv_shape *s)
{
    return 2.0 * (double)s->batch * (double)s->p.out_channels * (double)s->h_out *
           (double)s->w_out * (double)s->cin_g * (double)s->p.kernel_h * (double)s->p.kernel_w;
}

static const char *const pad_names[] = {"zeros", "reflect", "replicate", "circular"};

const char *cr_pad_mode_name(cr_pad_mode m)
{
    return (unsigned)m <= CR_PAD_CIRCULAR ? pad_names[m] : "?";
}

cr_status cr_pad_mode_parse(const char *name, cr_pad_mode *out)
{
    for (int i = 0; i <= CR_PAD_CIRCULAR; i++)
        if (name && strcmp(name, pad_names[i]) == 0) {
            *out = (cr_pad_mode)i;
            return CR_OK;
        }
    return cr_fail(CR_EINVAL, "padding mode '%s': expected zeros, reflect, replicate or circular",
                   name ? name : "(null)");
}

void cr_conv_params_str(const cr_conv_params *p, char *buf, size_t len)
{
    snprintf(buf, len,
             "Conv2d(%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld), "
             "padding=(top %lld, bottom %lld, left %lld, right %lld), dilation=(%lld, %lld), "
             "groups=%lld, bias=%s, padding_mode='%s')",
             (long long)p->in_channels, (long long)p->out_channels, (long long)p->kernel_h,
             (long long)p->kernel_w, (long long)p->stride_h, (long long)p->stride_w,
             (long long)p->pad_top, (long long)p->pad_bottom, (long long)p->pad_left,
             (long long)p->pad_right, (long long)p->dilation_h, (long long)p->dilation_w,
             (long long)p->groups, p->bias ? "True" : "False", cr_pad_mode_name(p->pad_mode));
}
