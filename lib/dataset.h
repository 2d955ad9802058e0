/* dataset.h — the CamVid loader: any folder in the SegNet tutorial's layout.
 *
 *     DIR/train/NAME.png       RGB frames (480 x 360 in CamVid)
 *     DIR/trainannot/NAME.png  8-bit grey label maps of the same names and sizes,
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
 * becomes CR_CAMVID_IGNORE. Frames are taken in file-name order (strcmp). */
#ifndef CR_DATASET_H
#define CR_DATASET_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

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
} cr_dataset;

/* Loads every DIR/SPLIT/NAME.png with DIR/SPLITannot/NAME.png (split: "train", "val"
 * or "test"), reduced by the integer factor (1 keeps the size). Fails with CR_EIO and a message
 * that says how to get the data (cr_camvid_howto) when the folders are missing or
 * hold no PNG; with CR_EFORMAT naming the file for an unreadable PNG, a missing label
 * file, an image and label of different sizes, frames of different sizes, or a label
 * above 11. Never crashes on a bad file. max_count > 0 loads only the first max_count
 * frames (quick runs); 0 loads all. */
cr_status cr_camvid_load(const char *dir, const char *split, int factor, int64_t max_count,
                         cr_dataset *ds);
/* Frees everything (safe on a zeroed struct). */
void cr_dataset_free(cr_dataset *ds);

/* Copies frames idx[0..n-1] into x (n x 3 x H x W, preallocated) and labels
 * (n*H*W ints); flip[i] != 0 (flip may be NULL) mirrors frame i left-right. */
cr_status cr_dataset_batch(const cr_dataset *ds, const int64_t *idx, int64_t n,
                           const uint8_t *flip, cr_tensor *x, int32_t *labels);

#endif
