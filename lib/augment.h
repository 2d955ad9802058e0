/* augment.h — training and evaluation batches from a split held as bytes (cr_frames).
 *
 * Chapter 8's recipe: for each sample of a training batch, a random scaled crop, a
 * horizontal flip with probability 1/2, brightness/contrast jitter, and ImageNet
 * normalisation. Every random number comes from the caller's cr_rng (lib/rng.h) in a
 * fixed order, so the same seed gives the same batch, bit for bit, on every machine.
 *
 * The exact conventions (one sample; frame of H x W pixels, output side S):
 *
 * 1. Draws, in this order, from the rng:
 *      s     = cr_rng_uniform_f(rng, scale_min, scale_max)  zoom factor (0.75..1.5)
 *      side  = max(1, round(S / s))        source window side in frame pixels
 *      y0    = cr_rng_int(rng, min(0, H - side), max(0, H - side))
 *      x0    = cr_rng_int(rng, min(0, W - side), max(0, W - side))
 *              a window that fits lies inside the frame; a larger one holds the whole
 *              frame at a random place (the rest of it is padding)
 *      flip  = cr_rng_uniform(rng) < flip_p
 *      beta  = cr_rng_uniform_f(rng, -brightness, brightness)
 *      alpha = 1 + cr_rng_uniform_f(rng, -contrast, contrast)
 *    All seven are drawn for every sample whatever the settings (flip_p 0 still draws).
 * 2. Renders the window (rows y0..y0+side-1, columns x0..x0+side-1) to S x S
 *    (cr_frames_render below): output pixel (i, j) looks at source point
 *      y = y0 + (i + 0.5) * side / S - 0.5,   x = x0 + (j' + 0.5) * side / S - 0.5
 *    (pixel centres at integers: PyTorch's align_corners=False), where j' = S-1-j when
 *    flipped, else j. A point outside the frame (y < -0.5 or y >= H - 0.5, same for x)
 *    is padding: image 0 in every channel (the ImageNet mean after normalisation), label
 *    CR_CAMVID_IGNORE. Inside, the image is bilinear between the four nearest pixels
 *    (coordinates clamped to 0..H-1 and 0..W-1 first), the label is the pixel nearest
 *    to the point, floor(y + 0.5), floor(x + 0.5) (PyTorch's 'nearest-exact'): labels
 *    are never blended, and void (11) becomes CR_CAMVID_IGNORE. With side == S (s = 1)
 *    every point is a pixel centre and the crop is the sub-image exactly.
 * 3. Jitter (as albumentations' RandomBrightnessContrast with limits 0.2, brightness by
 *    max, always applied): on values v = byte / 255, v' = clamp(alpha * v + beta, 0, 1).
 * 4. Normalises: (v' - mean[c]) / std[c] with ImageNet's mean (0.485, 0.456, 0.406)
 *    and std (0.229, 0.224, 0.225). Padding is not jittered (it stays 0).
 *
 * Evaluation batches (cr_frames_eval_batch) render the whole frame (window 0, 0, H, W)
 * to the size of the output tensor the same way, without flip or jitter: at the frame's
 * own size it is the frame exactly, normalised. */
#ifndef CR_AUGMENT_H
#define CR_AUGMENT_H

#include <stdint.h>

#include "dataset.h"
#include "error.h"
#include "rng.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Settings of the training augmentation (cr_augment_default gives chapter 8's). */
typedef struct {
    int64_t crop;          /* output side S in pixels, 1..8192 */
    float scale_min;       /* zoom range: 0 < scale_min <= scale_max <= 16 (0.75, 1.5) */
    float scale_max;
    float flip_p;          /* probability of a horizontal flip, 0..1 (0.5) */
    float brightness;      /* beta range [-brightness, brightness), 0..1 (0.2) */
    float contrast;        /* alpha range 1 + [-contrast, contrast), 0..1 (0.2) */
} cr_augment;

/* One rendering: a source window, an optional flip, and the jitter. */
typedef struct {
    int64_t y0, x0;        /* top-left pixel of the window (may be negative) */
    int64_t h, w;          /* window size in frame pixels, >= 1 (may exceed the frame) */
    int flip;              /* nonzero: mirror the output left-right */
    float alpha, beta;     /* v' = clamp(alpha * v + beta, 0, 1); 1 and 0 leave v */
} cr_view;

/* Chapter 8's settings for crop side S: scale 0.75..1.5, flip 0.5, brightness and
 * contrast 0.2. */
void cr_augment_default(cr_augment *a, int64_t crop);

/* Checks a's fields; CR_EINVAL naming the first one out of range. */
cr_status cr_augment_check(const cr_augment *a);

/* Draws one training sample's view for a frame of h x w (step 1 above). */
void cr_augment_draw(const cr_augment *a, int64_t h, int64_t w, cr_rng *rng, cr_view *v);

/* Renders view v of frame `frame` to out_h x out_w (steps 2-4): x gets 3 x out_h x out_w
 * floats (planar, normalised), labels out_h x out_w ints (0..10 or CR_CAMVID_IGNORE).
 * CR_EINVAL for a frame index, window or output size out of range (sides <= 2^15). */
cr_status cr_frames_render(const cr_frames *fr, int64_t frame, const cr_view *v,
                           int64_t out_h, int64_t out_w, float *x, int32_t *labels);

/* A training batch: for b = 0..n-1 draws a view for frame idx[b] (in batch order) and
 * renders it into x[b] (x: [n, 3, S, S], preallocated) and labels + b*S*S. */
cr_status cr_frames_train_batch(const cr_frames *fr, const int64_t *idx, int64_t n,
                                const cr_augment *a, cr_rng *rng, cr_tensor *x,
                                int32_t *labels);

/* An evaluation batch: frames idx[0..n-1], whole, resized to x's size (x: [n, 3, OH, OW],
 * preallocated; OH = H and OW = W keep the frames exact), no flip or jitter; labels
 * n*OH*OW ints. Uses no random numbers. */
cr_status cr_frames_eval_batch(const cr_frames *fr, const int64_t *idx, int64_t n,
                               cr_tensor *x, int32_t *labels);

#ifdef __cplusplus
}
#endif

#endif
