/* augment.c — training and evaluation batches from cr_frames (conventions: augment.h). */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Largest output side, and largest window side or offset, accepted. */
#define CR_AUG_MAX_OUT ((int64_t)1 << 15)
#define CR_AUG_MAX_WINDOW ((int64_t)1 << 17)

/* ImageNet's per-channel statistics of RGB in [0, 1] (as dataset.c). */
static const float rgb_mean[3] = {0.485f, 0.456f, 0.406f};
static const float rgb_std[3] = {0.229f, 0.224f, 0.225f};

void cr_augment_default(cr_augment *a, int64_t crop)
{
    a->crop = crop;
    a->scale_min = 0.75f;
    a->scale_max = 1.5f;
    a->flip_p = 0.5f;
    a->brightness = 0.2f;
    a->contrast = 0.2f;
}

cr_status cr_augment_check(const cr_augment *a)
{
    if (!a) return cr_fail(CR_EINVAL, "augment: settings are required");
    if (a->crop < 1 || a->crop > 8192)
        return cr_fail(CR_EINVAL, "augment: crop = %lld: expected 1..8192", (long long)a->crop);
    if (!(a->scale_min > 0 && a->scale_min <= a->scale_max && a->scale_max <= 16))
        return cr_fail(CR_EINVAL, "augment: scale range [%g, %g]: expected 0 < min <= max <= 16",
                       (double)a->scale_min, (double)a->scale_max);
    if (!(a->flip_p >= 0 && a->flip_p <= 1))
        return cr_fail(CR_EINVAL, "augment: flip_p = %g: expected 0..1", (double)a->flip_p);
    if (!(a->brightness >= 0 && a->brightness <= 1))
        return cr_fail(CR_EINVAL, "augment: brightness = %g: expected 0..1", (double)a->brightness);
    if (!(a->contrast >= 0 && a->contrast <= 1))
        return cr_fail(CR_EINVAL, "augment: contrast = %g: expected 0..1", (double)a->contrast);
    return CR_OK;
}

/* Uniform start of a window of side `side` along an axis of n pixels (see augment.h). */
static int64_t draw_start(cr_rng *rng, int64_t n, int64_t side)
{
    const int64_t d = n - side;
    return d >= 0 ? cr_rng_int(rng, 0, d) : cr_rng_int(rng, d, 0);
}

void cr_augment_draw(const cr_augment *a, int64_t h, int64_t w, cr_rng *rng, cr_view *v)
{
    float s = cr_rng_uniform_f(rng, a->scale_min, a->scale_max);
    if (s > a->scale_max) s = a->scale_max;  /* float rounding of lo + (hi-lo)*u */
    int64_t side = (int64_t)lround((double)a->crop / (double)s);
    if (side < 1) side = 1;
    v->h = v->w = side;
    v->y0 = draw_start(rng, h, side);
    v->x0 = draw_start(rng, w, side);
    v->flip = cr_rng_uniform(rng) < (double)a->flip_p;
    v->beta = cr_rng_uniform_f(rng, -a->brightness, a->brightness);
    v->alpha = 1.0f + cr_rng_uniform_f(rng, -a->contrast, a->contrast);
}

/* Where output index k (0..m-1) of one axis samples a frame axis of n pixels, for a
 * window of len pixels starting at a0: inside the frame or not, the nearest pixel, and
 * the two bilinear neighbours lo, hi with the weight f of hi. */
typedef struct {
    int inside;
    int64_t near, lo, hi;
    float f;
} axis_tap;

/* Fills taps[0..m-1] for one axis (convention: augment.h step 2). */
static void axis_taps(int64_t n, int64_t a0, int64_t len, int64_t m, axis_tap *taps)
{
    for (int64_t k = 0; k < m; k++) {
        const double p = (double)a0 + ((double)k + 0.5) * (double)len / (double)m - 0.5;
        axis_tap *t = &taps[k];
        t->inside = p >= -0.5 && p < (double)n - 0.5;
        t->near = t->inside ? (int64_t)floor(p + 0.5) : 0;
        const double pc = p < 0 ? 0 : p > (double)(n - 1) ? (double)(n - 1) : p;
        t->lo = (int64_t)floor(pc);
        t->hi = t->lo + 1 < n ? t->lo + 1 : n - 1;
        t->f = (float)(pc - (double)t->lo);
    }
}

/* Renders one output pixel's three channels (bilinear, jitter, normalise) into x at
 * plane offset o (plane size ps); rgb: the frame's bytes, W its width. */
static void render_pixel(const uint8_t *rgb, int64_t W, const axis_tap *ty, const axis_tap *tx,
                         const cr_view *v, float *x, size_t o, size_t ps)
{
    const uint8_t *p00 = rgb + (size_t)(ty->lo * W + tx->lo) * 3;
    const uint8_t *p01 = rgb + (size_t)(ty->lo * W + tx->hi) * 3;
    const uint8_t *p10 = rgb + (size_t)(ty->hi * W + tx->lo) * 3;
    const uint8_t *p11 = rgb + (size_t)(ty->hi * W + tx->hi) * 3;
    const float fy = ty->f, fx = tx->f;
    for (int c = 0; c < 3; c++) {
        const float top = (1.0f - fx) * (float)p00[c] + fx * (float)p01[c];
        const float bot = (1.0f - fx) * (float)p10[c] + fx * (float)p11[c];
        float val = ((1.0f - fy) * top + fy * bot) / 255.0f;
        val = v->alpha * val + v->beta;
        val = val < 0.0f ? 0.0f : val > 1.0f ? 1.0f : val;
        x[(size_t)c * ps + o] = (val - rgb_mean[c]) / rgb_std[c];
    }
}

/* Checks render's arguments. */
static cr_status check_render(const cr_frames *fr, int64_t frame, const cr_view *v,
                              int64_t out_h, int64_t out_w, const float *x, const int32_t *labels)
{
    if (!fr || !fr->rgb || !fr->labels || !v || !x || !labels)
        return cr_fail(CR_EINVAL, "augment: frames, view, x and labels are required");
    if (frame < 0 || frame >= fr->count)
        return cr_fail(CR_EINVAL, "augment: frame %lld: expected 0..%lld", (long long)frame,
                       (long long)fr->count - 1);
    if (out_h < 1 || out_w < 1 || out_h > CR_AUG_MAX_OUT || out_w > CR_AUG_MAX_OUT)
        return cr_fail(CR_EINVAL, "augment: output %lldx%lld: expected 1..%lld per side",
                       (long long)out_w, (long long)out_h, (long long)CR_AUG_MAX_OUT);
    if (v->h < 1 || v->w < 1 || v->h > CR_AUG_MAX_WINDOW || v->w > CR_AUG_MAX_WINDOW ||
        llabs(v->y0) > CR_AUG_MAX_WINDOW || llabs(v->x0) > CR_AUG_MAX_WINDOW)
        return cr_fail(CR_EINVAL, "augment: window %lldx%lld at (%lld, %lld): expected sides "
                       "1..%lld and offsets within +-%lld", (long long)v->w, (long long)v->h,
                       (long long)v->y0, (long long)v->x0, (long long)CR_AUG_MAX_WINDOW,
                       (long long)CR_AUG_MAX_WINDOW);
    if (!(isfinite(v->alpha) && isfinite(v->beta)))
        return cr_fail(CR_EINVAL, "augment: jitter alpha = %g, beta = %g: expected finite values",
                       (double)v->alpha, (double)v->beta);
    return CR_OK;
}

cr_status cr_frames_render(const cr_frames *fr, int64_t frame, const cr_view *v,
                           int64_t out_h, int64_t out_w, float *x, int32_t *labels)
{
    cr_status s = check_render(fr, frame, v, out_h, out_w, x, labels);
    if (s) return s;
    const int64_t H = fr->height, W = fr->width;
    axis_tap *ty = malloc((size_t)out_h * sizeof *ty);
    axis_tap *tx = malloc((size_t)out_w * sizeof *tx);
    if (!ty || !tx) {
        free(ty);
        free(tx);
        return cr_fail(CR_ENOMEM, "augment: out of memory for a %lldx%lld output",
                       (long long)out_w, (long long)out_h);
    }
    axis_taps(H, v->y0, v->h, out_h, ty);
    axis_taps(W, v->x0, v->w, out_w, tx);
    const uint8_t *rgb = fr->rgb + (size_t)frame * (size_t)(H * W) * 3;
    const uint8_t *lab = fr->labels + (size_t)frame * (size_t)(H * W);
    const size_t ps = (size_t)(out_h * out_w);
    for (int64_t i = 0; i < out_h; i++)
        for (int64_t j = 0; j < out_w; j++) {
            const axis_tap *a = &ty[i], *b = &tx[v->flip ? out_w - 1 - j : j];
            const size_t o = (size_t)(i * out_w + j);
            if (!a->inside || !b->inside) {
                for (int c = 0; c < 3; c++) x[(size_t)c * ps + o] = 0.0f;
                labels[o] = CR_CAMVID_IGNORE;
                continue;
            }
            render_pixel(rgb, W, a, b, v, x, o, ps);
            const int l = lab[a->near * W + b->near];
            labels[o] = l == CR_CAMVID_VOID ? CR_CAMVID_IGNORE : l;
        }
    free(ty);
    free(tx);
    return CR_OK;
}

/* Checks that x is [n, 3, h, w] (h or w < 0: any size 1..2^15) and the indices. */
static cr_status check_batch(const cr_frames *fr, const int64_t *idx, int64_t n,
                             const cr_tensor *x, int64_t h, int64_t w, const int32_t *labels)
{
    if (!fr || !idx || !x || !x->data || !labels || n < 1)
        return cr_fail(CR_EINVAL, "augment batch: frames, idx, x, labels and n >= 1 are required");
    if (x->ndim != 4 || x->shape[0] != n || x->shape[1] != 3 || (h >= 0 && x->shape[2] != h) ||
        (w >= 0 && x->shape[3] != w)) {
        char got[96];
        cr_tensor_shape_str(x, got, sizeof got);
        if (h >= 0)
            return cr_fail(CR_EINVAL, "augment batch: x must be [%lld, 3, %lld, %lld], got %s",
                           (long long)n, (long long)h, (long long)w, got);
        return cr_fail(CR_EINVAL, "augment batch: x must be [%lld, 3, H, W], got %s",
                       (long long)n, got);
    }
    for (int64_t b = 0; b < n; b++)
        if (idx[b] < 0 || idx[b] >= fr->count)
            return cr_fail(CR_EINVAL, "augment batch: idx[%lld] = %lld: expected 0..%lld",
                           (long long)b, (long long)idx[b], (long long)fr->count - 1);
    return CR_OK;
}

cr_status cr_frames_train_batch(const cr_frames *fr, const int64_t *idx, int64_t n,
                                const cr_augment *a, cr_rng *rng, cr_tensor *x,
                                int32_t *labels)
{
    cr_status s = cr_augment_check(a);
    if (s) return s;
    if (!rng) return cr_fail(CR_EINVAL, "augment batch: rng is required");
    const int64_t S = a->crop;
    if ((s = check_batch(fr, idx, n, x, S, S, labels))) return s;
    for (int64_t b = 0; b < n && !s; b++) {
        cr_view v;
        cr_augment_draw(a, fr->height, fr->width, rng, &v);
        s = cr_frames_render(fr, idx[b], &v, S, S, x->data + (size_t)(b * 3 * S * S),
                             labels + (size_t)(b * S * S));
    }
    return s;
}

cr_status cr_frames_eval_batch(const cr_frames *fr, const int64_t *idx, int64_t n,
                               cr_tensor *x, int32_t *labels)
{
    cr_status s = check_batch(fr, idx, n, x, -1, -1, labels);
    if (s) return s;
    const int64_t OH = x->shape[2], OW = x->shape[3];
    const cr_view v = {0, 0, fr->height, fr->width, 0, 1.0f, 0.0f};
    for (int64_t b = 0; b < n && !s; b++)
        s = cr_frames_render(fr, idx[b], &v, OH, OW, x->data + (size_t)(b * 3 * OH * OW),
                             labels + (size_t)(b * OH * OW));
    return s;
}
