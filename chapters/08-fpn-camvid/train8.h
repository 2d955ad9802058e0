/* train8.h — chapter 8's training loop on augmented crops, its predictor and its pictures.
 *
 * The epoch: shuffle the train split (Fisher-Yates on the trainer's data stream), take
 * floor(count / batch) batches in that order, and for each batch draw every frame's view
 * (lib/augment.h: scaled crop, flip, brightness/contrast) from the same stream, then one
 * chapter 4 training step (cr_train_step). Because the views come from the trainer's data
 * stream, a chapter 4 checkpoint (which stores that stream) resumes this loop bit for bit.
 * Evaluation renders each whole frame to a fixed size (bilinear image, nearest labels).
 *
 * Pictures: CamVid's colour palette (SegNet's, the one the original PyTorch project draws
 * with), colour masks, and a panel image | ground truth | prediction side by side. */
#ifndef CR_TRAIN8_H
#define CR_TRAIN8_H

#include <stdint.h>

#include "augment.h"
#include "dataset.h"
#include "metrics.h"
#include "model.h"
#include "png_io.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* RGB of CamVid class c (0..10), void (11 or CR_CAMVID_IGNORE: black). */
extern const uint8_t cr_camvid_palette[12][3];

/* Colours h x w labels (0..11 or CR_CAMVID_IGNORE) into *out (an RGB image it allocates;
 * cr_image_free). CR_EINVAL naming the first label out of range and its position. */
cr_status cr_camvid_colorize(const int32_t *labels, int64_t h, int64_t w, cr_image *out);

/* The panel of one frame: rgb (h x w x 3 bytes) | truth coloured | prediction coloured,
 * a 3w x h RGB image allocated into *out. Labels as cr_camvid_colorize. */
cr_status cr_fpn_panel(const uint8_t *rgb, const int32_t *truth, const int32_t *pred,
                       int64_t h, int64_t w, cr_image *out);

/* One epoch of augmented crops: t must have been built for fr->count frames of
 * a->crop x a->crop (cr_trainer_init(t, m, c, fr->count, crop, crop)). Calls fn(ctx,
 * info) after each step (fn may be NULL); *mean_loss (may be NULL) receives the mean of
 * the steps' losses. Increments t->epoch. */
cr_status cr_fpn_train_epoch(cr_trainer *t, const cr_frames *fr, const cr_augment *a,
                             cr_step_fn fn, void *ctx, double *mean_loss);

/* Runs m in evaluation mode over every frame of fr, each rendered whole to eh x ew
 * (cr_frames_eval_batch), in batches of `batch` (the last smaller), restoring its mode:
 * *loss (may be NULL) receives the mean of the batches' cross-entropy; predictions are
 * ADDED to conf (may be NULL). */
cr_status cr_fpn_evaluate(cr_model *m, const cr_frames *fr, int64_t eh, int64_t ew,
                          int64_t batch, int32_t ignore_index, double *loss, cr_confusion *conf);

/* The predicted class of every pixel of x (N x 3 x H x W) in evaluation mode (argmax of
 * the logits, the lowest class on ties) into pred (N*H*W), restoring m's mode. */
cr_status cr_fpn_predict(cr_model *m, const cr_tensor *x, int32_t *pred);

/* The bytes of a normalised image x[i] (3 x H x W, ImageNet mean/std) back as H x W x 3
 * RGB (rounded, clamped to 0..255): what the panel shows on the left. */
void cr_denormalize_rgb(const cr_tensor *x, int64_t i, uint8_t *rgb);

#ifdef __cplusplus
}
#endif

#endif
