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

// @snippet camvid_paint
/* Writes the colours of h x w labels into rgb (row stride `stride` bytes). */
static cr_status paint(const int32_t *labels, int64_t h, int64_t w, uint8_t *rgb, int64_t stride)
{
    // @solution palette: colour each label from cr_camvid_palette (ignore as void); refuse a non-class
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
    // @stub
    // (void)labels; (void)h; (void)w; (void)rgb; (void)stride;
    // return cr_todo("palette");
    // @end-solution
}
// @end camvid_paint

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

/* Chapter 8's data sources for chapter 4's epoch and evaluation loops. */
typedef struct {
    const cr_frames *fr;
    const cr_augment *a;
} crop_source;

// @snippet fpn_epoch
/* cr_batch_fn: augmented crops (scale jitter, flip, brightness/contrast) of the frames,
 * every random choice drawn from the trainer's data stream. */
static cr_status crop_batch(void *src, const int64_t *idx, int64_t n, cr_rng *rng, cr_tensor *x,
                            int32_t *labels)
{
    const crop_source *c = src;
    return cr_frames_train_batch(c->fr, idx, n, c->a, rng, x, labels);
}

cr_status cr_fpn_train_epoch(cr_trainer *t, const cr_frames *fr, const cr_augment *a,
                             cr_step_fn fn, void *ctx, double *mean_loss)
{
    // @solution epoch: chapter 4's epoch on augmented crops (crop_batch), once a, fr and t are checked
    cr_status s = cr_augment_check(a);
    if (s) return s;
    if (fr->count != t->train_count || a->crop != t->frame_h || a->crop != t->frame_w)
        return cr_fail(CR_EINVAL, "train: %lld frames with crops of %lld, the trainer was built "
                       "for %lld frames of %lldx%lld", (long long)fr->count, (long long)a->crop,
                       (long long)t->train_count, (long long)t->frame_w, (long long)t->frame_h);
    crop_source src = {fr, a};
    return cr_train_epoch_with(t, crop_batch, &src, fn, ctx, mean_loss);
    // @stub
    // (void)t; (void)fr; (void)a; (void)fn; (void)ctx; (void)mean_loss; (void)crop_batch;
    // return cr_todo("epoch");
    // @end-solution
}
// @end fpn_epoch

/* cr_batch_fn: whole frames resized to x's size, no randomness. */
static cr_status eval_batch(void *src, const int64_t *idx, int64_t n, cr_rng *rng, cr_tensor *x,
                            int32_t *labels)
{
    (void)rng;
    return cr_frames_eval_batch(src, idx, n, x, labels);
}

cr_status cr_fpn_evaluate(cr_model *m, const cr_frames *fr, int64_t eh, int64_t ew,
                          int64_t batch, int32_t ignore_index, double *loss, cr_confusion *conf)
{
    return cr_evaluate_with(m, fr->count, eh, ew, batch, eval_batch, (void *)fr, ignore_index,
                            loss, conf);
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
