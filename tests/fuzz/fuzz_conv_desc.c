/* fuzz_conv_desc.c — libFuzzer target: the convolution descriptor from arbitrary integers.
 *
 * The input is read as a stream of integers (mostly small, sometimes any 64-bit
 * value or a boundary such as 2^24 or INT64_MAX) that fill every cr_conv_params
 * field, the input size, and the shapes of x, w, b, y. Then:
 *   - cr_conv_shape_init must accept with a consistent shape, or refuse with a message;
 *   - every size of an accepted shape is recomputed in 128-bit arithmetic and must
 *     match: h_out/w_out by PyTorch's rule, x_numel == N*C*H*W, w_numel, y_numel,
 *     all within the library's limit of 2^34 elements (absurd sizes are refused
 *     before anyone allocates);
 *   - cr_conv_bind on tensors of arbitrary shapes (never allocated: bind only reads
 *     shapes) must accept exactly when the shapes are the ones the descriptor
 *     implies, and cr_conv_set_padding_same must keep the rule "total = d*(k-1)". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_desc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef __int128 i128;

#define MAX_NUMEL ((i128)1 << 34)

/* A reader of integers from the fuzzer's bytes (zeros once they run out). */
typedef struct {
    const uint8_t *p;
    size_t left;
} stream;

static uint8_t byte(stream *s)
{
    if (!s->left) return 0;
    s->left--;
    return *s->p++;
}

/* One integer: small values most of the time, boundaries and raw 64-bit values sometimes. */
static int64_t next_int(stream *s)
{
    static const int64_t special[16] = {
        0, -1, INT64_MIN, INT64_MAX, (int64_t)1 << 24, ((int64_t)1 << 24) + 1,
        ((int64_t)1 << 24) - 1, (int64_t)1 << 31, ((int64_t)1 << 31) - 1, (int64_t)1 << 32,
        (int64_t)1 << 62, -((int64_t)1 << 24), (int64_t)1 << 17, 1 << 12, 65535, 3};
    uint8_t b = byte(s);
    if (b < 0xC0) return (int64_t)(b & 0x3F) - 2;    /* -2 .. 61 */
    if (b < 0xE0) return special[b & 0x0F];
    if (b < 0xF0) return (int64_t)(((b & 0x0F) << 8) | byte(s)); /* 0 .. 4095 */
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | byte(s);
    return (int64_t)v;
}

/* The output size by PyTorch's rule in 128 bits, or -1 if the kernel does not fit. */
static i128 rule_out(int64_t n, int64_t before, int64_t after, int64_t k, int64_t stride,
                     int64_t dil)
{
    i128 padded = (i128)n + before + after;
    i128 span = (i128)dil * (k - 1) + 1;
    if (span > padded) return -1;
    return (padded - span) / stride + 1;
}

/* Checks an accepted shape against the parameters, in 128-bit arithmetic. */
static void check_shape(const cr_conv_shape *s, const cr_conv_params *p, int64_t n, int64_t h,
                        int64_t w)
{
    if (memcmp(&s->p, p, sizeof *p) != 0) abort();
    if (s->batch != n || s->h_in != h || s->w_in != w) abort();
    const int64_t pos[] = {p->in_channels, p->out_channels, p->kernel_h, p->kernel_w,
                           p->stride_h, p->stride_w, p->dilation_h, p->dilation_w, p->groups,
                           n, h, w};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i] < 1) abort();
    if (p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0) abort();
    if (p->in_channels % p->groups || p->out_channels % p->groups) abort();
    if ((i128)s->cin_g * p->groups != p->in_channels) abort();
    if ((i128)s->cout_g * p->groups != p->out_channels) abort();
    if (s->h_out != rule_out(h, p->pad_top, p->pad_bottom, p->kernel_h, p->stride_h,
                             p->dilation_h)) abort();
    if (s->w_out != rule_out(w, p->pad_left, p->pad_right, p->kernel_w, p->stride_w,
                             p->dilation_w)) abort();
    if (s->h_out < 1 || s->w_out < 1) abort();
    if (p->pad_mode == CR_PAD_REFLECT &&
        (p->pad_top >= h || p->pad_bottom >= h || p->pad_left >= w || p->pad_right >= w))
        abort();
    if (p->pad_mode == CR_PAD_CIRCULAR &&
        (p->pad_top > h || p->pad_bottom > h || p->pad_left > w || p->pad_right > w))
        abort();
    i128 x = (i128)n * p->in_channels * h * w;           /* each factor <= 2^24: fits */
    i128 wt = (i128)p->out_channels * s->cin_g * p->kernel_h * p->kernel_w;
    i128 y = (i128)n * p->out_channels * s->h_out * s->w_out;
    if (x > MAX_NUMEL || wt > MAX_NUMEL || y > MAX_NUMEL) abort();
    if ((i128)s->x_numel != x || (i128)s->w_numel != wt || (i128)s->y_numel != y) abort();
    double flops = cr_conv_flops(s);
    if (!(flops > 0)) abort();
}

/* A tensor header with the given shape and a non-NULL data pointer that is never read. */
static cr_tensor fake_tensor(int ndim, const int64_t *shape)
{
    static float dummy;
    cr_tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = ndim;
    t.numel = 1;
    for (int i = 0; i < CR_MAX_DIMS; i++) t.shape[i] = i < ndim ? shape[i] : 1;
    t.data = &dummy;
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stream s = {data, size};
    cr_conv_params p;
    memset(&p, 0, sizeof p);
    p.in_channels = next_int(&s);
    p.out_channels = next_int(&s);
    p.kernel_h = next_int(&s);
    p.kernel_w = next_int(&s);
    p.stride_h = next_int(&s);
    p.stride_w = next_int(&s);
    p.pad_top = next_int(&s);
    p.pad_bottom = next_int(&s);
    p.pad_left = next_int(&s);
    p.pad_right = next_int(&s);
    p.dilation_h = next_int(&s);
    p.dilation_w = next_int(&s);
    p.groups = next_int(&s);
    uint8_t flags = byte(&s);
    p.bias = flags & 1;
    int mode_raw = (int)(flags >> 1) % 6 - 1;   /* -1 .. 4: two invalid modes */
    memcpy(&p.pad_mode, &mode_raw, sizeof mode_raw < sizeof p.pad_mode ? sizeof mode_raw
                                                                         : sizeof p.pad_mode);
    if (flags & 0x80) {
        cr_conv_params q = p;
        if (cr_conv_set_padding_same(&q) == CR_OK) {
            i128 th = (i128)q.dilation_h * (q.kernel_h - 1), tw = (i128)q.dilation_w * (q.kernel_w - 1);
            if (q.pad_top + (i128)q.pad_bottom != th || q.pad_left + (i128)q.pad_right != tw ||
                q.pad_top > q.pad_bottom || q.pad_left > q.pad_right)
                abort();
            p = q;
        } else if (!cr_last_error()[0]) {
            abort();
        }
    }
    int64_t n = next_int(&s), h = next_int(&s), w = next_int(&s);

    cr_conv_shape shape;
    cr_status st = cr_conv_shape_init(&shape, &p, n, h, w);
    if (st != CR_OK) {
        if (!cr_last_error()[0]) abort();
    } else {
        check_shape(&shape, &p, n, h, w);
    }

    /* cr_conv_bind: x from (n, c, h, w) read above or the input's own channel count; the
     * other tensors either the right shapes (flags & 0x40) or arbitrary ones. */
    uint8_t how = byte(&s);
    int64_t xs[4] = {n, (how & 1) ? next_int(&s) : p.in_channels, h, w};
    cr_tensor x = fake_tensor((how & 2) ? 3 : 4, xs);
    int64_t ws[4], ys[4], bs[1];
    int right = st == CR_OK && (flags & 0x40);
    if (right) {
        const int64_t w4[4] = {p.out_channels, shape.cin_g, p.kernel_h, p.kernel_w};
        const int64_t y4[4] = {n, p.out_channels, shape.h_out, shape.w_out};
        memcpy(ws, w4, sizeof ws);
        memcpy(ys, y4, sizeof ys);
        bs[0] = p.out_channels;
        if (how & 4) ws[byte(&s) & 3] += 1;   /* one size off */
        if (how & 8) ys[byte(&s) & 3] -= 1;
    } else {
        for (int i = 0; i < 4; i++) ws[i] = next_int(&s);
        for (int i = 0; i < 4; i++) ys[i] = next_int(&s);
        bs[0] = next_int(&s);
    }
    cr_tensor wt = fake_tensor(4, ws), y = fake_tensor(4, ys), b = fake_tensor(1, bs);
    const cr_tensor *bp = (how & 16) ? NULL : &b;
    cr_conv_shape bound;
    cr_status bst = cr_conv_bind(&bound, &p, &x, (how & 32) ? NULL : &wt, bp, &y);
    if (bst != CR_OK) {
        if (!cr_last_error()[0]) abort();
        return 0;
    }
    /* Accepted: the shapes are exactly what the descriptor implies. */
    if (x.ndim != 4 || xs[1] != p.in_channels) abort();
    check_shape(&bound, &p, xs[0], xs[2], xs[3]);
    const int64_t w4[4] = {p.out_channels, bound.cin_g, p.kernel_h, p.kernel_w};
    const int64_t y4[4] = {xs[0], p.out_channels, bound.h_out, bound.w_out};
    if (memcmp(ws, w4, sizeof w4) != 0 || memcmp(ys, y4, sizeof y4) != 0) abort();
    if (p.bias != (bp != NULL)) abort();
    if (bp && bs[0] != p.out_channels) abort();
    char buf[512];
    cr_conv_params_str(&p, buf, sizeof buf);
    return 0;
}
