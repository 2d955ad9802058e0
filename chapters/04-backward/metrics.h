/* metrics.h — chapter 4: the numbers a segmentation run reports, accumulated over a split.
 *
 * A confusion matrix counts, for every labelled pixel, its true class (row) against the
 * predicted class (column). From it, for each class c:
 *   IoU_c = TP_c / (TP_c + FP_c + FN_c)   (TP: diagonal, FP: column minus TP, FN: row minus TP)
 * mean IoU is the mean of IoU_c over the classes that occur in the truth OR the
 * prediction of the whole split; a class absent from both has 0/0 = NaN and is left out
 * of the mean (the rule of the PyTorch project this book follows: it neither rewards nor
 * punishes a class never seen; older torchmetrics JaccardIndex versions use an
 * `absent_score` for it instead).
 * Pixel accuracy is sum(TP) / (labelled pixels). Pixels whose truth is the ignore label
 * (CamVid's void, mapped to CR_IGNORE_INDEX) are skipped whatever was predicted there. */
#ifndef CR_METRICS_H
#define CR_METRICS_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int classes;
    int64_t *counts;   /* classes x classes, row = truth, column = prediction */
} cr_confusion;

/* Allocates a zeroed classes x classes matrix (1 <= classes <= 65536). */
cr_status cr_confusion_init(cr_confusion *c, int classes);
/* Zeroes the counts (a new split). */
void cr_confusion_reset(cr_confusion *c);
/* Frees the matrix (safe on a zeroed struct). */
void cr_confusion_free(cr_confusion *c);

/* Adds n pixels: pred[i] (0..classes-1) against truth[i] (0..classes-1, or ignore_index:
 * skipped). A value out of range fails with CR_EINVAL naming it and its position, and
 * adds nothing. */
cr_status cr_confusion_add(cr_confusion *c, const int32_t *pred, const int32_t *truth,
                           int64_t n, int32_t ignore_index);
/* Adds the predictions of logits (N x classes x H x W: argmax over the classes, the
 * lowest class on ties) against truth (N*H*W labels in image, row, column order). */
cr_status cr_confusion_add_logits(cr_confusion *c, const cr_tensor *logits,
                                  const int32_t *truth, int32_t ignore_index);

/* Per-class IoU into iou[0..classes-1] (may be NULL; NaN for a class absent from truth
 * and prediction); returns the mean over the classes that occur (NaN if none does). */
double cr_confusion_iou(const cr_confusion *c, double *iou);
/* Correctly classified labelled pixels / labelled pixels (NaN if none). */
double cr_confusion_pixel_accuracy(const cr_confusion *c);
/* Labelled pixels counted so far. */
int64_t cr_confusion_total(const cr_confusion *c);

#ifdef __cplusplus
}
#endif

#endif
