/* onnx_export.h — chapter 8: a chapter-4 module list written as an ONNX model, so that
 * another runtime (ONNX Runtime, or anything that reads ONNX) runs the network we trained.
 *
 * The file is a ModelProto (IR version 7, opset 13 of the default domain) with one graph:
 * input "input" (N x C x H x W float32), output "output", fixed shapes (the sizes given
 * to the exporter; every module's output shape is derived from them here, without running
 * the model). Every parameter and buffer is an initializer named with the model's
 * state-dict name ("encoder.conv1.weight", "encoder.bn1.running_var", ...) in PyTorch's
 * shape, float32 little-endian raw_data. Helper constants (pad amounts, shapes, axes)
 * are named "MODULE/what"; a module's output value is named after the module.
 *
 * The graph is the model in EVALUATION mode, whatever m->training says:
 *   conv       -> Conv (kernel_shape, strides, pads, dilations, group; bias input when
 *                 the conv has one); padding mode reflect / replicate -> an explicit Pad
 *                 (mode reflect / edge) before a Conv without pads; circular -> Slice +
 *                 Concat along H then W (Pad's "wrap" needs opset 19);
 *   batchnorm  -> BatchNormalization with the running statistics, epsilon;
 *   groupnorm  -> the standard decomposition, not opset 18's GroupNormalization (its
 *                 scale and bias shapes changed between versions 18 and 21):
 *                 Reshape (N, G, -1) - InstanceNormalization (scale 1, bias 0, epsilon)
 *                 - Reshape (N, C, H, W) - Mul (weight, unsqueezed to C x 1 x 1)
 *                 - Add (bias, likewise);
 *   relu       -> Relu; maxpool -> MaxPool (pads; padding is never chosen, as PyTorch's
 *                 -infinity); avgpool (global) -> GlobalAveragePool; add -> Add;
 *   upsample   -> Resize: nearest = PyTorch's legacy 'nearest' (coordinate_transformation
 *                 _mode asymmetric, nearest_mode floor); bilinear with align_corners ->
 *                 align_corners, without -> half_pixel (PyTorch's source index, clamped
 *                 at 0); the output size is given as sizes, or as scales when PyTorch's
 *                 scale_factor gives a ratio that sizes would change. A case where ONNX
 *                 Runtime's float arithmetic would choose another source pixel or another
 *                 output size than ours, or where it would copy a tensor whose size a
 *                 bilinear scale_factor leaves unchanged, is refused, naming the module,
 *                 never exported wrong (rare: 35 of 4068 sizes and scales tried);
 *   dropout    -> Identity (evaluation mode).
 *
 * Protobuf: the ONNX .proto is third-party, so nothing is generated from it; the encoder
 * here writes the wire format itself (varints, length-delimited fields; field numbers
 * from the ONNX specification's onnx.proto, cited at each use by message and field name).
 * Debian's python3-onnx does ship onnx.proto, so libprotobuf-c would have been possible,
 * but it would add a build-time code generator and a library for some 200 lines of
 * encoding that a reader of this chapter can follow byte by byte.
 *
 * The file is written through lib/atomic_file.h (a temporary file renamed onto path):
 * a failed export leaves no file and any previous one unchanged. */
#ifndef CR_ONNX_EXPORT_H
#define CR_ONNX_EXPORT_H

#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_ONNX_OPSET 13       /* opset of the default domain the graph uses */
#define CR_ONNX_IR_VERSION 7   /* IR version of that opset's release (ONNX 1.8) */

/* Writes m as an ONNX model for an n x C x h x w input to path, C being the in_channels
 * of the conv (or the channels of the norm) that reads the model's input. Fails with
 * CR_EINVAL naming the module when a module's kind is not one of chapter 4's, when its
 * input does not fit it (channels, a size too small), or when ONNX cannot express it
 * exactly; CR_EIO when the file cannot be written; CR_ENOMEM. */
cr_status cr_onnx_export(const cr_model *m, int64_t n, int64_t h, int64_t w, const char *path);

/* cr_onnx_export with the input's channel count c given (for a model whose first module
 * does not tell it, such as one that starts with a ReLU). */
cr_status cr_onnx_export_nchw(const cr_model *m, int64_t n, int64_t c, int64_t h, int64_t w,
                              const char *path);

#ifdef __cplusplus
}
#endif

#endif
