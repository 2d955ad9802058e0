/* loss.h — chapter 4: the losses of pixel-wise segmentation, each with its gradient.
 *
 * logits are N x C x H x W float32 (one score per class and pixel, before softmax);
 * target is N*H*W int32 labels in image, row, column order, each in 0..C-1 or equal
 * to ignore_index (PyTorch's default is -100; CamVid's void class is mapped to it by
 * lib/dataset.h). A label outside 0..C-1 that is not ignore_index fails with CR_EINVAL
 * naming its position. dlogits (same shape as logits, or NULL for the loss alone)
 * receives d(loss)/d(logits) — the gradient of the scalar loss itself, ready to be
 * sent backward through the network. */
#ifndef CR_LOSS_H
#define CR_LOSS_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's default ignore_index. */
#define CR_IGNORE_INDEX (-100)

/* F.cross_entropy(logits, target, ignore_index=..., reduction='mean'):
 *   loss = (1/P) * sum over the P non-ignored pixels i of -log softmax(z_i)[t_i],
 *   dloss/dz_{c,i} = (softmax(z_i)_c - [c == t_i]) / P, and 0 at ignored pixels.
 * With every pixel ignored PyTorch returns NaN (0/0); this returns loss 0 and a zero
 * gradient, which a training loop can step through. */
cr_status cr_cross_entropy(const cr_tensor *logits, const int32_t *target,
                           int32_t ignore_index, double *loss, cr_tensor *dlogits);

/* The same loss and gradient, fast: float instead of double, the exponential and the
 * logarithm as polynomials on vector lanes of 16 (AVX-512) or 8 (AVX2) neighbouring
 * pixels, or one pixel at a time where neither exists, and the pixels split among the
 * threads. Each lane repeats the portable path's operations one by one (nothing fused),
 * and the per-pixel losses are summed in double in a fixed order, so the bits do not
 * depend on the thread count or the vector width. Within a few float roundings of
 * cr_cross_entropy (loss: relative 1e-6 plus (C + 4) float ulps of 1 absolute, the rounding
 * of the softmax's denominator; each gradient within (C + 8) float ulps of 1/P). */
cr_status cr_cross_entropy_fast(const cr_tensor *logits, const int32_t *target,
                                int32_t ignore_index, double *loss, cr_tensor *dlogits);

/* Soft Dice loss, exactly segmentation_models_pytorch's
 * DiceLoss(mode='multiclass', from_logits=True, smooth=0, eps=eps, ignore_index):
 *   p = softmax over classes; m_i = [t_i != ignore_index]; y_{c,i} = [t_i == c] * m_i;
 *   for each class c, summed over the batch and all pixels:
 *     I_c = sum_i p_{c,i} m_i y_{c,i},   S_c = sum_i (p_{c,i} m_i + y_{c,i}),
 *     dice_c = 2 I_c / max(S_c, eps);
 *   loss = (1/C) * sum_c (1 - dice_c) * [class c occurs in the target]
 * (a class absent from the batch's target contributes 0 but still counts in the 1/C).
 * eps is smp's 1e-7 by default. */
cr_status cr_dice_loss(const cr_tensor *logits, const int32_t *target, int32_t ignore_index,
                       double eps, double *loss, cr_tensor *dlogits);

#ifdef __cplusplus
}
#endif

#endif
