/* test_onnx_models.h — the small models the ONNX export tests (test_onnx_export.c,
 * test_onnx_runtime.c) write: every chapter-4 module kind, every padding mode, every
 * up-sampling variant, with random parameters and running statistics. */
#ifndef CR_TEST_ONNX_MODELS_H
#define CR_TEST_ONNX_MODELS_H

#include "cr_test.h"
#include "model.h"
#include "model_common.h"
#include "rng.h"

/* The every-kind model's input: 2 x 3 x 12 x 10. */
enum { EK_N = 2, EK_C = 3, EK_H = 12, EK_W = 10 };

/* A conv cin -> cout, kernel kh x kw, with the given per-side padding and mode. */
static inline cr_conv_params ek_conv(int64_t cin, int64_t cout, int64_t kh, int64_t kw,
                                     cr_pad_mode mode, int64_t top, int64_t bottom,
                                     int64_t left, int64_t right)
{
    cr_conv_params p = cr_conv_params_default(cin, cout, kh);
    p.kernel_w = kw;
    p.pad_mode = mode;
    p.pad_top = top;
    p.pad_bottom = bottom;
    p.pad_left = left;
    p.pad_right = right;
    return p;
}

/* Builds, into an initialised empty m, a network of every module kind (sizes for the
 * 2 x 3 x 12 x 10 input in the comments):
 *   c_reflect (3->6, 3x3, reflect pads 1,2 / 2,1, bias) 13x11 - bn - relu
 *   c_circular (6->8, 3x3, dilation 2x1, stride 1x2, groups 2, circular 2,1 / 1,2, no bias) 12x6
 *   gn (4 groups of 8) - c_replicate (depthwise 8, 3x2, replicate 1,1 / 1,0) 12x6
 *   pool (max 3/2/1) 6x3 - c_zeros (8->8, 3x3, zeros 1) - up_nearest (scale 2) 12x6
 *   skip (+ c_replicate) - gap (global average) 1x1 - up_broadcast (nearest to skip's size)
 *   fuse (+ skip) - up_corners (bilinear, align_corners, to c_reflect's 13x11)
 *   up_half (bilinear, half_pixel, scale 1.5) 19x16 - drop (Dropout2d) - head (8->4, 1x1).
 * Fails the test if a builder refuses. */
static inline void build_every_kind(cr_model *m)
{
    cr_conv_params p;
    const cr_bn_params bn = cr_bn_params_default();
    int ok = 1, refl, repl, skip;
    p = ek_conv(3, 6, 3, 3, CR_PAD_REFLECT, 1, 2, 2, 1);
    ok &= (refl = cr_model_add_conv(m, "c_reflect", CR_MODEL_INPUT, &p)) >= 0;
    ok &= cr_model_add_batchnorm(m, "bn", CR_PREV, 6, &bn) >= 0;
    ok &= cr_model_add_relu(m, "relu", CR_PREV) >= 0;
    p = ek_conv(6, 8, 3, 3, CR_PAD_CIRCULAR, 2, 1, 1, 2);
    p.dilation_h = 2;
    p.stride_w = 2;
    p.groups = 2;
    p.bias = false;
    ok &= cr_model_add_conv(m, "c_circular", CR_PREV, &p) >= 0;
    ok &= cr_model_add_groupnorm(m, "gn", CR_PREV, 4, 8, 1e-5) >= 0;
    p = ek_conv(8, 8, 3, 2, CR_PAD_REPLICATE, 1, 1, 1, 0);
    p.groups = 8;
    ok &= (repl = cr_model_add_conv(m, "c_replicate", CR_PREV, &p)) >= 0;
    const cr_pool_params pool = cr_pool_params_make(3, 2, 1);
    ok &= cr_model_add_maxpool(m, "pool", CR_PREV, &pool) >= 0;
    p = ek_conv(8, 8, 3, 3, CR_PAD_ZEROS, 1, 1, 1, 1);
    ok &= cr_model_add_conv(m, "c_zeros", CR_PREV, &p) >= 0;
    const cr_upsample_params near2 = {.mode = CR_UPSAMPLE_NEAREST, .scale_h = 2, .scale_w = 2};
    ok &= cr_model_add_upsample(m, "up_nearest", CR_PREV, &near2, -1) >= 0;
    ok &= (skip = cr_model_add_add(m, "skip", CR_PREV, repl)) >= 0;
    ok &= cr_model_add_avgpool(m, "gap", CR_PREV) >= 0;
    const cr_upsample_params near = {.mode = CR_UPSAMPLE_NEAREST};
    ok &= cr_model_add_upsample(m, "up_broadcast", CR_PREV, &near, skip) >= 0;
    ok &= cr_model_add_add(m, "fuse", CR_PREV, skip) >= 0;
    const cr_upsample_params corners = {.mode = CR_UPSAMPLE_BILINEAR, .align_corners = true};
    ok &= cr_model_add_upsample(m, "up_corners", CR_PREV, &corners, refl) >= 0;
    const cr_upsample_params half = {.mode = CR_UPSAMPLE_BILINEAR, .scale_h = 1.5, .scale_w = 1.5};
    ok &= cr_model_add_upsample(m, "up_half", CR_PREV, &half, -1) >= 0;
    ok &= cr_model_add_dropout2d(m, "drop", CR_PREV, 0.3) >= 0;
    p = cr_conv_params_default(8, 4, 1);
    ok &= cr_model_add_conv(m, "head", CR_PREV, &p) >= 0;
    if (!ok) fail_msg("building the every-kind model: %s", cr_last_error());
}

/* Random parameters and buffers (norm weights around 1, biases and means around 0,
 * variances in [0.5, 1.5]) so that no norm is the identity. */
static inline void randomize_state(cr_model *m, cr_rng *r)
{
    assert_cr_ok(cr_model_init_params(m, cr_rng_next(r)));
    randomize_norms(m, r, 1.5f);
}

#endif
