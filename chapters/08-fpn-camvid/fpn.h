/* fpn.h — chapter 8: the Feature Pyramid Network with a ResNeXt encoder, exactly as
 * segmentation_models_pytorch (smp) builds `smp.FPN("resnext50_32x4d")`, on chapter 4's
 * module list.
 *
 * Encoder (torchvision's ResNet with Bottleneck blocks): conv1 7x7/2 - bn1 - relu -
 * maxpool 3x3/2, then four stages layer1..layer4 of Bottleneck blocks (1x1 conv - BN -
 * ReLU - grouped 3x3 conv (stride in the first block of stages 2-4) - BN - ReLU - 1x1 conv
 * - BN, plus the identity or a downsample 1x1 conv - BN, added, ReLU). Feature maps c2..c5
 * at 1/4, 1/8, 1/16, 1/32 of the input.
 * Decoder: p5 = 1x1 conv of c5; p4, p3, p2 = nearest x2 up-sampling of the level above plus
 * a 1x1 "skip" conv of c4, c3, c2; each level goes through a segmentation block of
 * Conv3x3 - GroupNorm(32) - ReLU (+ bilinear x2, align_corners) repeated until it reaches
 * 1/4 (3, 2, 1, 0 up-samplings for p5..p2); the four are added, then Dropout2d.
 * Head: 1x1 conv to the classes, bilinear x4 up-sampling (align_corners).
 * State-dict names are smp's: encoder.conv1.weight, encoder.layer1.0.conv2.weight,
 * encoder.layer1.0.downsample.0.weight, decoder.p5.weight, decoder.p4.skip_conv.weight,
 * decoder.seg_blocks.0.block.0.block.0.weight (conv), ...block.0.block.1.weight (GroupNorm),
 * segmentation_head.0.weight, so a checkpoint moves both ways through safetensors. The
 * input's height and width must be multiples of 32. */
#ifndef CR_FPN_H
#define CR_FPN_H

#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The network's shape. cr_fpn_config_resnext50 gives smp's FPN with resnext50_32x4d. */
typedef struct {
    int64_t classes;          /* output channels (11 with void ignored, or 12) */
    int64_t stem;             /* conv1's output channels (64) */
    int64_t planes[4];        /* Bottleneck planes per stage (64, 128, 256, 512); out = 4x */
    int64_t blocks[4];        /* blocks per stage (3, 4, 6, 3) */
    int64_t groups;           /* groups of the 3x3 convs (32) */
    int64_t width_per_group;  /* torchvision's base_width (4): width = planes*wpg/64*groups */
    int64_t pyramid;          /* pyramid channels (256) */
    int64_t segmentation;     /* segmentation-block channels (128; a multiple of 32) */
    double dropout;           /* Dropout2d probability before the head (0.2) */
} cr_fpn_config;

/* smp.FPN(encoder_name="resnext50_32x4d", classes=classes) with its defaults. */
cr_fpn_config cr_fpn_config_resnext50(int64_t classes);

/* Appends the whole network to an empty model m (input: N x 3 x H x W, H and W multiples
 * of 32; output: N x classes x H x W logits). Parameters are allocated, not initialised
 * (cr_model_init_params, or load a state dict). Fails with CR_EINVAL naming the field of
 * a config that cannot be built. */
cr_status cr_fpn_build(cr_model *m, const cr_fpn_config *c);

#ifdef __cplusplus
}
#endif

#endif
