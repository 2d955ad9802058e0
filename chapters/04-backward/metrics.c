/* metrics.c — chapter 4: confusion matrix, IoU and pixel accuracy (see metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cr_status cr_confusion_init(cr_confusion *c, int classes)
{
    memset(c, 0, sizeof *c);
    if (classes < 1 || classes > 65536)
        return cr_fail(CR_EINVAL, "confusion: classes must be in 1..65536, got %d", classes);
    c->counts = calloc((size_t)classes * (size_t)classes, sizeof *c->counts);
    if (!c->counts) return cr_fail(CR_ENOMEM, "confusion: out of memory for %d classes", classes);
    c->classes = classes;
    return CR_OK;
}

void cr_confusion_reset(cr_confusion *c)
{
    if (c->counts) memset(c->counts, 0, (size_t)c->classes * (size_t)c->classes * sizeof *c->counts);
}

void cr_confusion_free(cr_confusion *c)
{
    free(c->counts);
    memset(c, 0, sizeof *c);
}

/* Checks every pair first (nothing is added from a bad batch), then counts. */
cr_status cr_confusion_add(cr_confusion *c, const int32_t *pred, const int32_t *truth,
                           int64_t n, int32_t ignore_index)
{
    const int C = c->classes;
    if (!c->counts) return cr_fail(CR_EINVAL, "confusion: not initialised");
    if (n < 0 || (n > 0 && (!pred || !truth)))
        return cr_fail(CR_EINVAL, "confusion: %lld pixels need pred and truth arrays", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (truth[i] == ignore_index) continue;
        if (truth[i] < 0 || truth[i] >= C)
            return cr_fail(CR_EINVAL, "confusion: truth[%lld] = %d is not a class 0..%d nor "
                           "the ignore label %d", (long long)i, truth[i], C - 1, ignore_index);
        if (pred[i] < 0 || pred[i] >= C)
            return cr_fail(CR_EINVAL, "confusion: pred[%lld] = %d is not a class 0..%d",
                           (long long)i, pred[i], C - 1);
    }
    // @snippet confusion_add
    for (int64_t i = 0; i < n; i++)
        if (truth[i] != ignore_index) c->counts[(int64_t)truth[i] * C + pred[i]]++;
    // @end confusion_add
    return CR_OK;
}

cr_status cr_confusion_add_logits(cr_confusion *c, const cr_tensor *logits,
                                  const int32_t *truth, int32_t ignore_index)
{
    if (!c->counts) return cr_fail(CR_EINVAL, "confusion: not initialised");
    if (!logits || !logits->data || logits->ndim != 4 || logits->shape[1] != c->classes)
        return cr_fail(CR_EINVAL, "confusion: logits must be N x %d x H x W", c->classes);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    int32_t *pred = malloc((size_t)(HW ? HW : 1) * sizeof *pred);
    if (!pred) return cr_fail(CR_ENOMEM, "confusion: out of memory");
    cr_status s = CR_OK;
    for (int64_t n = 0; n < N && !s; n++) {
        const float *z = logits->data + n * C * HW;
        for (int64_t i = 0; i < HW; i++) {   /* argmax over classes: the first maximum */
            int64_t best = 0;
            for (int64_t k = 1; k < C; k++)
                if (z[k * HW + i] > z[best * HW + i]) best = k;
            pred[i] = (int32_t)best;
        }
        s = cr_confusion_add(c, pred, truth + n * HW, HW, ignore_index);
    }
    free(pred);
    return s;
}

// @snippet confusion_iou
double cr_confusion_iou(const cr_confusion *c, double *iou)
{
    const int C = c->classes;
    double sum = 0;
    int present = 0;
    for (int k = 0; k < C; k++) {
        const int64_t tp = c->counts[(int64_t)k * C + k];
        int64_t fp = 0, fn = 0;
        for (int j = 0; j < C; j++)
            if (j != k) {
                fp += c->counts[(int64_t)j * C + k];   /* predicted k, truth j */
                fn += c->counts[(int64_t)k * C + j];   /* truth k, predicted j */
            }
        const int64_t den = tp + fp + fn;
        const double v = den ? (double)tp / (double)den : NAN;   /* absent: 0/0 */
        if (iou) iou[k] = v;
        if (den) {
            sum += v;
            present++;
        }
    }
    return present ? sum / present : NAN;
}
// @end confusion_iou

int64_t cr_confusion_total(const cr_confusion *c)
{
    int64_t t = 0;
    for (int64_t i = 0; i < (int64_t)c->classes * c->classes; i++) t += c->counts[i];
    return t;
}

double cr_confusion_pixel_accuracy(const cr_confusion *c)
{
    int64_t tp = 0;
    for (int k = 0; k < c->classes; k++) tp += c->counts[(int64_t)k * c->classes + k];
    const int64_t total = cr_confusion_total(c);
    return total ? (double)tp / (double)total : NAN;
}
