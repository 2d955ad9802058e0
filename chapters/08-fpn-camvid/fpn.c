/* fpn.c — chapter 8: smp's FPN with a ResNeXt encoder, built on chapter 4's module list
 * (see fpn.h). Each function appends one piece of the network and returns the index of
 * the module whose output is that piece's output, or -1 with cr_last_error() set. */
#include "fpn.h"

#include <stdarg.h>
#include <stdio.h>

cr_fpn_config cr_fpn_config_resnext50(int64_t classes)
{
    cr_fpn_config c = {
        .classes = classes, .stem = 64, .planes = {64, 128, 256, 512}, .blocks = {3, 4, 6, 3},
        .groups = 32, .width_per_group = 4, .pyramid = 256, .segmentation = 128, .dropout = 0.2,
    };
    return c;
}

/* printf into a module name buffer (names are far below CR_MODULE_NAME_MAX). */
static const char *name_of(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, CR_MODULE_NAME_MAX, fmt, ap);
    va_end(ap);
    return buf;
}

/* A conv k x k / stride, padding k/2, groups, with or without bias, reading from in. */
static int conv(cr_model *m, const char *name, int in, int64_t cin, int64_t cout, int64_t k,
                int64_t stride, int64_t groups, bool bias)
{
    cr_conv_params p = cr_conv_params_default(cin, cout, k);
    cr_conv_set_padding(&p, k / 2, k / 2);
    p.stride_h = p.stride_w = stride;
    p.groups = groups;
    p.bias = bias;
    return cr_model_add_conv(m, name, in, &p);
}

// @snippet fpn_encoder
/* The encoder: stem (conv1 7x7/2 - bn1 - relu - maxpool 3x3/2) and layer1..4 of
 * chapter 4's ResNeXt bottleneck (stride 2 in the first block of layers 2-4, a
 * downsample where the identity does not fit); writes the indices of c2..c5 into
 * feat[0..3] (1/4 .. 1/32 of the input). */
static cr_status encoder(cr_model *m, const cr_fpn_config *c, int feat[4])
{
    char a[CR_MODULE_NAME_MAX];
    const cr_pool_params pool = cr_pool_params_make(3, 2, 1);
    const cr_bn_params bnp = cr_bn_params_default();
    int x = conv(m, "encoder.conv1", CR_MODEL_INPUT, 3, c->stem, 7, 2, 1, false);
    if (x >= 0) x = cr_model_add_batchnorm(m, "encoder.bn1", x, c->stem, &bnp);
    if (x >= 0) x = cr_model_add_relu(m, "encoder.relu", x);
    if (x >= 0) x = cr_model_add_maxpool(m, "encoder.maxpool", x, &pool);
    int64_t cin = c->stem;
    for (int s = 0; s < 4 && x >= 0; s++) {
        const int64_t width = c->planes[s] * c->width_per_group / 64 * c->groups;
        const int64_t cout = 4 * c->planes[s];
        for (int64_t i = 0; i < c->blocks[s] && x >= 0; i++) {
            const int64_t stride = i == 0 && s > 0 ? 2 : 1;
            x = cr_model_add_bottleneck(m, name_of(a, "encoder.layer%d.%lld", s + 1, (long long)i),
                                        x, cin, width, cout, c->groups, stride,
                                        stride != 1 || cin != cout);
            cin = cout;
        }
        feat[s] = x;
    }
    return x < 0 ? cr_last_status() : CR_OK;
}
// @end fpn_encoder

// @snippet fpn_top_down
/* One top-down step: nearest x2 of the coarser level plus a 1x1 conv of the encoder's
 * feature (skip: N x skip_ch x 2h x 2w) -> N x pyramid x 2h x 2w. */
static int fpn_block(cr_model *m, const char *pre, int coarse, int skip, int64_t skip_ch,
                     const cr_fpn_config *c)
{
    // @solution fpn: the top-down merge: nearest x2 of the coarser level + a 1x1 skip conv (PRE.up, PRE.skip_conv, PRE.add)
    char a[CR_MODULE_NAME_MAX];
    const cr_upsample_params up = {.mode = CR_UPSAMPLE_NEAREST, .scale_h = 2, .scale_w = 2};
    const int u = cr_model_add_upsample(m, name_of(a, "%s.up", pre), coarse, &up, -1);
    const int s = u < 0 ? -1 : conv(m, name_of(a, "%s.skip_conv", pre), skip, skip_ch,
                                    c->pyramid, 1, 1, 1, true);
    return s < 0 ? -1 : cr_model_add_add(m, name_of(a, "%s.add", pre), u, s);
    // @stub
    // (void)m; (void)pre; (void)coarse; (void)skip; (void)skip_ch; (void)c;
    // (void)cr_todo("fpn");
    // return -1; /* TODO: the index of the sum's module */
    // @end-solution
}
// @end fpn_top_down

/* smp's SegmentationBlock: n_up (>= 1 blocks) of Conv3x3 (no bias) - GroupNorm(32) - ReLU,
 * each followed by a bilinear x2 (align_corners) when n_up > 0. */
static int seg_block(cr_model *m, int s, int in, int n_up, const cr_fpn_config *c)
{
    char a[CR_MODULE_NAME_MAX];
    const cr_upsample_params up = {.mode = CR_UPSAMPLE_BILINEAR, .align_corners = true,
                                   .scale_h = 2, .scale_w = 2};
    int x = in;
    for (int b = 0; b < (n_up > 0 ? n_up : 1) && x >= 0; b++) {
        x = conv(m, name_of(a, "decoder.seg_blocks.%d.block.%d.block.0", s, b), x,
                 b == 0 ? c->pyramid : c->segmentation, c->segmentation, 3, 1, 1, false);
        if (x >= 0)
            x = cr_model_add_groupnorm(m, name_of(a, "decoder.seg_blocks.%d.block.%d.block.1", s, b),
                                       x, 32, c->segmentation, 1e-5);
        if (x >= 0) x = cr_model_add_relu(m, name_of(a, "decoder.seg_blocks.%d.block.%d.block.2", s, b), x);
        if (x >= 0 && n_up > 0)
            x = cr_model_add_upsample(m, name_of(a, "decoder.seg_blocks.%d.block.%d.up", s, b), x,
                                      &up, -1);
    }
    return x;
}

/* Checks that a config can be built; names the first bad field. */
static cr_status check_config(const cr_fpn_config *c)
{
    if (c->classes < 1) return cr_fail(CR_EINVAL, "fpn: classes = %lld: expected >= 1", (long long)c->classes);
    if (c->stem < 1) return cr_fail(CR_EINVAL, "fpn: stem = %lld: expected >= 1", (long long)c->stem);
    for (int s = 0; s < 4; s++) {
        if (c->blocks[s] < 1)
            return cr_fail(CR_EINVAL, "fpn: blocks[%d] = %lld: expected >= 1", s, (long long)c->blocks[s]);
        const int64_t width = c->planes[s] * c->width_per_group / 64 * c->groups;
        if (c->planes[s] < 1 || width < 1)
            return cr_fail(CR_EINVAL, "fpn: planes[%d] = %lld with width_per_group %lld and "
                           "groups %lld gives a 3x3 width of %lld: expected >= 1", s,
                           (long long)c->planes[s], (long long)c->width_per_group,
                           (long long)c->groups, (long long)width);
    }
    if (c->pyramid < 1) return cr_fail(CR_EINVAL, "fpn: pyramid = %lld: expected >= 1", (long long)c->pyramid);
    if (c->segmentation < 32 || c->segmentation % 32)
        return cr_fail(CR_EINVAL, "fpn: segmentation = %lld: expected a positive multiple of 32 "
                       "(GroupNorm has 32 groups)", (long long)c->segmentation);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return cr_fail(CR_EINVAL, "fpn: dropout = %g: expected 0 <= p < 1", c->dropout);
    return CR_OK;
}

// @snippet fpn_build
cr_status cr_fpn_build(cr_model *m, const cr_fpn_config *c)
{
    cr_status st = check_config(c);
    if (st) return st;
    int feat[4];                                   /* c2, c3, c4, c5 */
    if ((st = encoder(m, c, feat))) return st;
    const int64_t ch[4] = {4 * c->planes[0], 4 * c->planes[1], 4 * c->planes[2], 4 * c->planes[3]};
    int p[4];                                      /* p2, p3, p4, p5 */
    p[3] = conv(m, "decoder.p5", feat[3], ch[3], c->pyramid, 1, 1, 1, true);
    if (p[3] >= 0) p[2] = fpn_block(m, "decoder.p4", p[3], feat[2], ch[2], c);
    if (p[3] >= 0 && p[2] >= 0) p[1] = fpn_block(m, "decoder.p3", p[2], feat[1], ch[1], c);
    if (p[3] >= 0 && p[2] >= 0 && p[1] >= 0) p[0] = fpn_block(m, "decoder.p2", p[1], feat[0], ch[0], c);
    else return cr_last_status();
    if (p[0] < 0) return cr_last_status();
    int merged = -1;                               /* s5 + s4 + s3 + s2, in smp's order */
    for (int s = 0; s < 4; s++) {
        const int level = seg_block(m, s, p[3 - s], 3 - s, c);
        if (level < 0) return cr_last_status();
        char a[CR_MODULE_NAME_MAX];
        merged = s == 0 ? level : cr_model_add_add(m, name_of(a, "decoder.merge.%d", s), merged, level);
        if (merged < 0) return cr_last_status();
    }
    int x = cr_model_add_dropout2d(m, "decoder.dropout", merged, c->dropout);
    if (x >= 0) x = conv(m, "segmentation_head.0", x, c->segmentation, c->classes, 1, 1, 1, true);
    const cr_upsample_params up4 = {.mode = CR_UPSAMPLE_BILINEAR, .align_corners = true,
                                    .scale_h = 4, .scale_w = 4};
    if (x >= 0) x = cr_model_add_upsample(m, "segmentation_head.1", x, &up4, -1);
    return x < 0 ? cr_last_status() : CR_OK;
}
// @end fpn_build
