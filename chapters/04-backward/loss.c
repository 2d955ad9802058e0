/* loss.c — chapter 4: cross-entropy and soft Dice over pixels (see loss.h). Sums are
 * in double; per-image partial sums are added in a fixed order, so the result does not
 * depend on the number of threads. */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Checks logits (rank 4), dlogits (same shape or NULL) and every label of target. */
static cr_status loss_check(const char *what, const cr_tensor *logits, const int32_t *target,
                            int32_t ignore_index, const cr_tensor *dlogits)
{
    if (!logits || !logits->data || logits->ndim != 4)
        return cr_fail(CR_EINVAL, "%s: logits must be an allocated N x C x H x W tensor", what);
    if (!target) return cr_fail(CR_EINVAL, "%s: target is NULL", what);
    if (dlogits && (!dlogits->data || !cr_tensor_same_shape(dlogits, logits)))
        return cr_fail(CR_EINVAL, "%s: dlogits must have the shape of logits", what);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    for (int64_t i = 0; i < N * HW; i++)
        if (target[i] != ignore_index && (target[i] < 0 || target[i] >= C))
            return cr_fail(CR_EINVAL, "%s: target label %d at image %lld, pixel %lld is not a "
                           "class (0..%lld) nor the ignore index %d", what, (int)target[i],
                           (long long)(i / HW), (long long)(i % HW), (long long)(C - 1),
                           (int)ignore_index);
    return CR_OK;
}

/* Softmax over the C classes of pixel i of one image (z: C x HW plane stack) into p[C]. */
static void softmax_pixel(const float *z, int64_t C, int64_t HW, int64_t i, double *p)
{
    double mx = -INFINITY, sum = 0.0;
    for (int64_t c = 0; c < C; c++)
        if (z[c * HW + i] > mx) mx = z[c * HW + i];
    for (int64_t c = 0; c < C; c++) sum += p[c] = exp(z[c * HW + i] - mx);
    for (int64_t c = 0; c < C; c++) p[c] /= sum;
}

/* Mean cross-entropy over non-ignored pixels of logits (N x C x H x W) and its gradient. */
cr_status cr_cross_entropy(const cr_tensor *logits, const int32_t *target,
                           int32_t ignore_index, double *loss, cr_tensor *dlogits)
{
    cr_status s = loss_check("cross_entropy", logits, target, ignore_index, dlogits);
    if (s) return s;
    if (!loss) return cr_fail(CR_EINVAL, "cross_entropy: loss is NULL");
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    double *part = calloc((size_t)N, sizeof *part), *p = malloc((size_t)C * sizeof *p);
    if (!part || !p) {
        free(part);
        free(p);
        return cr_fail(CR_ENOMEM, "cross_entropy: out of memory");
    }
    // @snippet cross_entropy
    // @solution cross_entropy: -log softmax at the label, averaged over the pixels not ignored; gradient (softmax - onehot) / count
    int64_t count = 0;                               /* pixels that are not ignored */
    for (int64_t i = 0; i < N * HW; i++) count += target[i] != ignore_index;
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits->data + n * C * HW;
        for (int64_t i = 0; i < HW; i++) {
            const int32_t t = target[n * HW + i];
            if (t == ignore_index) {
                if (dlogits)
                    for (int64_t c = 0; c < C; c++) dlogits->data[(n * C + c) * HW + i] = 0.0f;
                continue;
            }
            softmax_pixel(z, C, HW, i, p);
            part[n] -= log(p[t]);
            if (dlogits)
                for (int64_t c = 0; c < C; c++)
                    dlogits->data[(n * C + c) * HW + i] =
                        (float)((p[c] - (c == t ? 1.0 : 0.0)) / (double)count);
        }
    }
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total += part[n];
    *loss = count > 0 ? total / (double)count : 0.0;
    // @stub
    // (void)N; (void)C; (void)HW;
    // free(part);
    // free(p);
    // return cr_todo("cross_entropy");
    // @end-solution
    // @end cross_entropy
    free(part);
    free(p);
    return CR_OK;
}

/* Soft Dice loss of logits (N x C x H x W) against target (N*H*W) and its gradient. */
cr_status cr_dice_loss(const cr_tensor *logits, const int32_t *target, int32_t ignore_index,
                       double eps, double *loss, cr_tensor *dlogits)
{
    cr_status s = loss_check("dice", logits, target, ignore_index, dlogits);
    if (s) return s;
    if (!loss) return cr_fail(CR_EINVAL, "dice: loss is NULL");
    if (!(eps > 0)) return cr_fail(CR_EINVAL, "dice: eps must be > 0, got %g", eps);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t HW = logits->shape[2] * logits->shape[3];
    double *inter = calloc((size_t)C, sizeof(double)), *card = calloc((size_t)C, sizeof(double));
    double *present = calloc((size_t)C, sizeof(double)), *p = malloc((size_t)C * sizeof(double));
    double *g = malloc((size_t)C * sizeof(double));
    if (!inter || !card || !present || !p || !g) {
        free(inter); free(card); free(present); free(p); free(g);
        return cr_fail(CR_ENOMEM, "dice: out of memory");
    }
    /* pass 1: per-class intersection, cardinality and presence */
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits->data + n * C * HW;
        for (int64_t i = 0; i < HW; i++) {
            const int32_t t = target[n * HW + i];
            if (t == ignore_index) continue;     /* p * m = 0 and y = 0 */
            softmax_pixel(z, C, HW, i, p);
            for (int64_t c = 0; c < C; c++) card[c] += p[c];
            inter[t] += p[t];
            card[t] += 1.0;
            present[t] = 1.0;
        }
    }
    double total = 0.0;
    for (int64_t c = 0; c < C; c++)
        total += present[c] * (1.0 - 2.0 * inter[c] / (card[c] > eps ? card[c] : eps));
    *loss = total / (double)C;
    /* pass 2: dL/dp, then through the softmax: dz_c = p_c (g_c - sum_k p_k g_k) */
    if (dlogits) {
        for (int64_t n = 0; n < N; n++) {
            const float *z = logits->data + n * C * HW;
            for (int64_t i = 0; i < HW; i++) {
                const int32_t t = target[n * HW + i];
                if (t == ignore_index) {
                    for (int64_t c = 0; c < C; c++) dlogits->data[(n * C + c) * HW + i] = 0.0f;
                    continue;
                }
                softmax_pixel(z, C, HW, i, p);
                double pg = 0.0;
                for (int64_t c = 0; c < C; c++) {
                    const double S = card[c], y = (c == t) ? 1.0 : 0.0;
                    g[c] = S > eps ? -present[c] / (double)C * (2.0 * y / S - 2.0 * inter[c] / (S * S))
                                   : -present[c] / (double)C * 2.0 * y / eps;
                    pg += p[c] * g[c];
                }
                for (int64_t c = 0; c < C; c++)
                    dlogits->data[(n * C + c) * HW + i] = (float)(p[c] * (g[c] - pg));
            }
        }
    }
    free(inter); free(card); free(present); free(p); free(g);
    return CR_OK;
}
