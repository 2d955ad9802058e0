/* dataset.h — the CamVid loader: any folder in the SegNet tutorial's layout.
 *
 *     DIR/train/NAME.png       RGB frames (480 x 360 in CamVid), or NAME.jpg / NAME.jpeg
 *                              (JPEG frames, as in CamVid-q92: lib/jpeg_io.h)
 *     DIR/trainannot/NAME.png  8-bit grey label maps of the same stems (always PNG: a
 *                              label must be exact) and sizes,
 *                           one class per pixel: 0 sky, 1 building, 2 pole, 3 road,
 *                           4 pavement, 5 tree, 6 sign/symbol, 7 fence, 8 car,
 *                           9 pedestrian, 10 bicyclist, 11 void (unlabelled)
 *     DIR/val, valannot, test, testannot   likewise
 *
 * A split is loaded whole into memory at a reduced resolution: each image is cut into
 * factor x factor blocks (trailing rows and columns that do not fill a block are
 * dropped); RGB is averaged over the block, then normalised per channel with
 * ImageNet's mean and standard deviation; a label block takes its most frequent
 * class (ties go to the lower class index, so a real class beats void), and void
 * becomes CR_CAMVID_IGNORE. Frames are taken in file-name order (strcmp).
 *
 * Every frame of a split must have the same size on disk (compared before reduction:
 * 480x360 beside 487x367 is refused even where both reduce to the same size). Only
 * regular files are opened: a FIFO or folder named like a frame is refused before it
 * is opened (it could block the reader forever).
 *
 * Two forms of a loaded split: cr_dataset (float, normalised, reduced: cr_camvid_load;
 * what lab 4 trains on) and cr_frames (bytes as on disk, optionally reduced:
 * cr_camvid_load_frames), from which lib/augment.h cuts augmented training batches
 * (random scaled crops, flips, brightness/contrast) and whole-frame evaluation batches. */
#ifndef CR_DATASET_H
#define CR_DATASET_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_CAMVID_CLASSES 11     /* 0..10; 11 (void) is ignored */
#define CR_CAMVID_VOID 11
#define CR_CAMVID_IGNORE (-100)  /* what void becomes: PyTorch's default ignore_index */

/* The class names, 0..10 ("sky", ..., "bicyclist"); "void" for 11; NULL otherwise. */
const char *cr_camvid_class_name(int c);

/* Where to get the data, one paragraph (for error messages and --help). */
const char *cr_camvid_howto(void);

typedef struct {
    int64_t count;        /* frames */
    int64_t height, width;/* reduced size */
    float *images;        /* count x 3 x height x width, normalised (CR_ALIGN-aligned) */
    int32_t *labels;      /* count x height x width: 0..10 or CR_CAMVID_IGNORE */
    char **names;         /* count file names (without directory) */
    int64_t full_height, full_width; /* every frame's size on disk, before reduction */
    int factor;           /* the reduction factor it was loaded with */
} cr_dataset;

/* Loads every DIR/SPLIT/NAME.{png,jpg,jpeg} with DIR/SPLITannot/NAME.png (split: "train",
 * "val" or "test"), reduced by the integer factor (1 keeps the size). Fails with CR_EIO
 * and a message that says how to get the data (cr_camvid_howto) when the folders are
 * missing or hold no PNG or JPEG frame; with CR_EIO naming the file for a frame or label
 * that is not a regular file; with CR_EFORMAT naming the file for an unreadable PNG or
 * JPEG, a missing label file, two frames with one stem (a.png and a.jpg), an image and
 * label of different sizes, frames of different sizes (full size, before reduction),
 * a frame smaller than the factor ("frame F (WxH) is smaller than the reduction factor
 * N"), or a label above 11. Never crashes on a bad file. max_count > 0 loads only the
 * first max_count frames (quick runs); 0 loads all. On success full_height/full_width
 * hold the size on disk and height = full_height / factor, width = full_width / factor. */
cr_status cr_camvid_load(const char *dir, const char *split, int factor, int64_t max_count,
                         cr_dataset *ds);
/* Frees everything (safe on a zeroed struct). */
void cr_dataset_free(cr_dataset *ds);

/* Copies frames idx[0..n-1] into x (n x 3 x H x W, preallocated) and labels
 * (n*H*W ints); flip[i] != 0 (flip may be NULL) mirrors frame i left-right. */
cr_status cr_dataset_batch(const cr_dataset *ds, const int64_t *idx, int64_t n,
                           const uint8_t *flip, cr_tensor *x, int32_t *labels);

/* A split held as bytes: what the augmenting batch maker (lib/augment.h) reads. */
typedef struct {
    int64_t count;        /* frames */
    int64_t height, width;/* size of every frame after reduction (full size / factor) */
    int64_t full_height, full_width; /* size on disk */
    int factor;
    uint8_t *rgb;         /* count x height x width x 3: interleaved RGB bytes, row-major */
    uint8_t *labels;      /* count x height x width: class 0..10, or 11 (void) */
    char **names;         /* count file names (without directory) */
} cr_frames;

/* Loads a split like cr_camvid_load (same files, order, checks and messages) but keeps
 * bytes: factor 1 keeps the frames exactly as decoded; factor f > 1 averages each f x f
 * block's RGB, rounded to nearest (sum + f*f/2) / (f*f), and takes the block's
 * majority label as cr_camvid_load does (void stays 11 here). 367 CamVid frames at
 * full size take 367 * 480 * 360 * 4 bytes = 254 MB. */
cr_status cr_camvid_load_frames(const char *dir, const char *split, int factor,
                                int64_t max_count, cr_frames *fr);
/* Frees everything (safe on a zeroed struct). */
void cr_frames_free(cr_frames *fr);

#ifdef __cplusplus
}
#endif

#endif
