/* train8.c — chapter 8's crop-batch epoch, evaluation at a fixed size, the predictor and
 * the pictures (see train8.h). */
#include "train8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "timing.h"

// @snippet camvid_palette
const uint8_t cr_camvid_palette[12][3] = {
    {128, 128, 128},  /* 0 sky */
    {128, 0, 0},      /* 1 building */
    {192, 192, 128},  /* 2 pole */
    {128, 64, 128},   /* 3 road */
    {60, 40, 222},    /* 4 pavement */
    {128, 128, 0},    /* 5 tree */
    {192, 128, 128},  /* 6 sign/symbol */
    {64, 64, 128},    /* 7 fence */
    {64, 0, 128},     /* 8 car */
    {64, 64, 0},      /* 9 pedestrian */
    {0, 128, 192},    /* 10 bicyclist */
    {0, 0, 0},        /* 11 void */
};
// @end camvid_palette

/* Writes the colours of h x w labels into rgb (row stride `stride` bytes). */
static cr_status paint(const int32_t *labels, int64_t h, int64_t w, uint8_t *rgb, int64_t stride)
{
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            int32_t c = labels[y * w + x];
            if (c == CR_CAMVID_IGNORE) c = CR_CAMVID_VOID;
            if (c < 0 || c > CR_CAMVID_VOID)
                return cr_fail(CR_EINVAL, "colorize: label %d at row %lld, column %lld is not a "
                               "CamVid class (0..11 or %d)", (int)labels[y * w + x], (long long)y,
                               (long long)x, CR_CAMVID_IGNORE);
            memcpy(rgb + y * stride + 3 * x, cr_camvid_palette[c], 3);
        }
    return CR_OK;
}

/* Allocates a w x h RGB image. */
static cr_status image_alloc(cr_image *out, int64_t h, int64_t w)
{
    memset(out, 0, sizeof *out);
    if (h < 1 || w < 1 || h > 65536 || w > 65536)
        return cr_fail(CR_EINVAL, "image: size %lldx%lld out of range", (long long)w, (long long)h);
    out->pixels = malloc((size_t)(h * w * 3));
    if (!out->pixels) return cr_fail(CR_ENOMEM, "image: out of memory for %lldx%lld", (long long)w, (long long)h);
    out->width = (int)w;
    out->height = (int)h;
    out->channels = 3;
    return CR_OK;
}

cr_status cr_camvid_colorize(const int32_t *labels, int64_t h, int64_t w, cr_image *out)
{
    cr_status s = image_alloc(out, h, w);
    if (!s) s = paint(labels, h, w, out->pixels, 3 * w);
    if (s) cr_image_free(out);
    return s;
}

// @snippet fpn_panel
cr_status cr_fpn_panel(const uint8_t *rgb, const int32_t *truth, const int32_t *pred,
                       int64_t h, int64_t w, cr_image *out)
{
    cr_status s = image_alloc(out, h, 3 * w);
    if (s) return s;
    const int64_t stride = 9 * w;   /* bytes per panel row: three w-pixel thirds */
    for (int64_t y = 0; y < h; y++) memcpy(out->pixels + y * stride, rgb + y * 3 * w, (size_t)(3 * w));
    s = paint(truth, h, w, out->pixels + 3 * w, stride);
    if (!s) s = paint(pred, h, w, out->pixels + 6 * w, stride);
    if (s) cr_image_free(out);
    return s;
}
// @end fpn_panel

/* Fisher-Yates shuffle of 0..n-1 into order, from r (chapter 4's order of draws). */
static void shuffle(cr_rng *r, int64_t *order, int64_t n)
{
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = cr_rng_int(r, 0, i), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

cr_status cr_fpn_train_epoch(cr_trainer *t, const cr_frames *fr, const cr_augment *a,
                             cr_step_fn fn, void *ctx, double *mean_loss)
{
    cr_status s = cr_augment_check(a);
    if (s) return s;
    if (fr->count != t->train_count || a->crop != t->frame_h || a->crop != t->frame_w)
        return cr_fail(CR_EINVAL, "train: %lld frames with crops of %lld, the trainer was built "
                       "for %lld frames of %lldx%lld", (long long)fr->count, (long long)a->crop,
                       (long long)t->train_count, (long long)t->frame_w, (long long)t->frame_h);
    const int64_t B = t->cfg.batch;
    // @snippet fpn_epoch
    shuffle(&t->data_rng, t->order, fr->count);
    double sum = 0;
    for (int64_t b = 0; b < t->steps_per_epoch; b++) {
        const double t0 = cr_now();
        double loss;
        s = cr_frames_train_batch(fr, t->order + b * B, B, a, &t->data_rng, &t->x, t->labels);
        if (!s) s = cr_train_step(t, &t->x, t->labels, &loss);
        if (s) return s;
        sum += loss;
        // @end fpn_epoch
        if (fn) {
            const cr_step_info info = {.epoch = t->epoch + 1, .step = t->step, .loss = loss,
                                       .lr = t->lr, .ms = (cr_now() - t0) * 1e3};
            fn(ctx, &info);
        }
    }
    t->epoch++;
    if (mean_loss) *mean_loss = sum / (double)t->steps_per_epoch;
    return CR_OK;
}

cr_status cr_fpn_evaluate(cr_model *m, const cr_frames *fr, int64_t eh, int64_t ew,
                          int64_t batch, int32_t ignore_index, double *loss, cr_confusion *conf)
{
    if (batch < 1) return cr_fail(CR_EINVAL, "evaluate: batch must be >= 1, got %lld", (long long)batch);
    if (fr->count < 1) return cr_fail(CR_EINVAL, "evaluate: the split has no frame");
    if (eh < 1 || ew < 1) return cr_fail(CR_EINVAL, "evaluate: size %lldx%lld", (long long)eh, (long long)ew);
    const int64_t B = batch < fr->count ? batch : fr->count;
    cr_tensor x = {0};
    int32_t *lab = malloc((size_t)(B * eh * ew) * sizeof *lab);
    int64_t *idx = malloc((size_t)B * sizeof *idx);
    double total = 0;
    int64_t batches = 0;
    cr_status s = lab && idx ? CR_OK : cr_fail(CR_ENOMEM, "evaluate: out of memory");
    const bool was_training = m->training;
    cr_model_train(m, false);
    for (int64_t b0 = 0; !s && b0 < fr->count; b0 += B) {
        const int64_t nb = fr->count - b0 < B ? fr->count - b0 : B;
        for (int64_t i = 0; i < nb; i++) idx[i] = b0 + i;
        if (!x.data || x.shape[0] != nb) {
            cr_tensor_free(&x);
            if ((s = cr_tensor_alloc4(&x, nb, 3, eh, ew))) break;
        }
        const cr_tensor *y;
        double l = 0;
        if ((s = cr_frames_eval_batch(fr, idx, nb, &x, lab)) || (s = cr_model_forward(m, &x, &y)) ||
            (loss && (s = cr_cross_entropy(y, lab, ignore_index, &l, NULL))) ||
            (conf && (s = cr_confusion_add_logits(conf, y, lab, ignore_index))))
            break;
        total += l;
        batches++;
    }
    cr_model_train(m, was_training);
    cr_tensor_free(&x);
    free(lab);
    free(idx);
    if (loss) *loss = batches ? total / (double)batches : NAN;
    return s;
}

cr_status cr_fpn_predict(cr_model *m, const cr_tensor *x, int32_t *pred)
{
    const bool was_training = m->training;
    const cr_tensor *y;
    cr_model_train(m, false);
    cr_status s = cr_model_forward(m, x, &y);
    cr_model_train(m, was_training);
    if (s) return s;
    const int64_t N = y->shape[0], C = y->shape[1], P = y->shape[2] * y->shape[3];
    for (int64_t n = 0; n < N; n++)
        for (int64_t p = 0; p < P; p++) {
            const float *v = y->data + n * C * P + p;
            int32_t best = 0;
            for (int64_t c = 1; c < C; c++)
                if (v[c * P] > v[best * P]) best = (int32_t)c;
            pred[n * P + p] = best;
        }
    return CR_OK;
}

void cr_denormalize_rgb(const cr_tensor *x, int64_t i, uint8_t *rgb)
{
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    const int64_t H = x->shape[2], W = x->shape[3], P = H * W;
    const float *src = x->data + i * 3 * P;
    for (int64_t p = 0; p < P; p++)
        for (int c = 0; c < 3; c++) {
            const float v = (src[c * P + p] * sd[c] + mean[c]) * 255.0f;
            rgb[3 * p + c] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v));
        }
}
