/* fuzz_dataset.c — libFuzzer target: the CamVid loader (cr_camvid_load, and
 * cr_camvid_load_frames with the augmenting batch maker) on arbitrary files.
 *
 * Input layout: byte 0 picks the reduction factor (1 + bits 0-1), the frame's format
 * (bit 2: JPEG, else PNG) and the training crop side (1 + bits 4-7); bytes 1-2 (little
 * endian) give the length L of the frame's file; then L bytes of frame, and the rest is
 * the label PNG. They become DIR/train/a.png (or a.jpg) and DIR/trainannot/a.png in a
 * per-process folder under /dev/shm (or TMPDIR). An accepted split must hold one frame
 * whose labels are classes 0..10 or the ignore index; then the byte form must load too,
 * and a seeded training batch and an evaluation batch at half size must hold labels in
 * that range and finite values. A refusal must leave an empty dataset and a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "augment.h"
#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[256];

/* Removes the per-process folder at exit. */
static void cleanup(void)
{
    char path[320];
    const char *const subs[] = {"train/a.png", "train/a.jpg", "trainannot/a.png", "train",
                                "trainannot", ""};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", root, subs[i]);
        remove(path);
    }
}

/* Creates the per-process DIR/train and DIR/trainannot once; returns DIR. */
static const char *data_dir(void)
{
    if (!root[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(root, sizeof root, "%s/cr-fuzz-dataset-%ld", base ? base : "/tmp",
                 (long)getpid());
        char sub[300];
        mkdir(root, 0700);
        snprintf(sub, sizeof sub, "%s/train", root);
        mkdir(sub, 0700);
        snprintf(sub, sizeof sub, "%s/trainannot", root);
        mkdir(sub, 0700);
        atexit(cleanup);
    }
    return root;
}

/* Writes n bytes to DIR/SUB/NAME. */
static void put(const char *sub, const char *name, const uint8_t *bytes, size_t n)
{
    char path[320];
    snprintf(path, sizeof path, "%s/%s/%s", data_dir(), sub, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) abort();
    if (n && fwrite(bytes, 1, n, fp) != n) abort();
    if (fclose(fp) != 0) abort();
}

/* Aborts unless labels[0..n-1] are classes 0..10 or the ignore index and x[0..3n-1] is
 * finite. */
static void check_batch(const float *x, const int32_t *labels, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int32_t c = labels[i];
        if (!(c == CR_CAMVID_IGNORE || (c >= 0 && c < CR_CAMVID_CLASSES))) abort();
    }
    for (int64_t i = 0; i < 3 * n; i++)
        if (!(x[i] > -10.0f && x[i] < 10.0f)) abort();
}

/* Loads the split again as bytes (it must load: the same files were just accepted),
 * then renders a training batch of side crop seeded by seed and an evaluation batch
 * at half size (rounded up). */
static void check_frames(int64_t crop, uint64_t seed)
{
    cr_frames fr;
    if (cr_camvid_load_frames(data_dir(), "train", 1, 0, &fr) != CR_OK) abort();
    cr_augment a;
    cr_augment_default(&a, crop);
    cr_rng rng;
    cr_rng_seed(&rng, seed);
    int64_t idx[2] = {0, 0};
    cr_tensor x = {0};
    int32_t *lab = malloc((size_t)(2 * crop * crop) * sizeof *lab);
    if (!lab || cr_tensor_alloc4(&x, 2, 3, crop, crop) ||
        cr_frames_train_batch(&fr, idx, 2, &a, &rng, &x, lab))
        abort();
    check_batch(x.data, lab, 2 * crop * crop);
    cr_tensor_free(&x);
    free(lab);
    const int64_t eh = (fr.height + 1) / 2, ew = (fr.width + 1) / 2;
    lab = malloc((size_t)(eh * ew) * sizeof *lab);
    if (!lab || cr_tensor_alloc4(&x, 1, 3, eh, ew) || cr_frames_eval_batch(&fr, idx, 1, &x, lab))
        abort();
    check_batch(x.data, lab, eh * ew);
    cr_tensor_free(&x);
    free(lab);
    cr_frames_free(&fr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    int factor = 1 + data[0] % 4;
    size_t len = (size_t)data[1] | (size_t)data[2] << 8;
    if (len > size - 3) len = size - 3;
    const int is_jpeg = (data[0] & 4) != 0;
    char stale[320];  /* only one frame file at a time */
    snprintf(stale, sizeof stale, "%s/train/%s", data_dir(), is_jpeg ? "a.png" : "a.jpg");
    remove(stale);
    put("train", is_jpeg ? "a.jpg" : "a.png", data + 3, len);
    put("trainannot", "a.png", data + 3 + len, size - 3 - len);

    cr_dataset ds;
    memset(&ds, 0xA5, sizeof ds);  /* the loader must set every field */
    cr_status st = cr_camvid_load(data_dir(), "train", factor, 0, &ds);
    if (st != CR_OK) {
        if (ds.images || ds.labels || ds.names || !cr_last_error()[0]) abort();
        return 0;
    }
    if (ds.count != 1 || ds.height < 1 || ds.width < 1) abort();
    for (int64_t i = 0; i < ds.height * ds.width; i++) {
        int32_t c = ds.labels[i];
        if (!(c == CR_CAMVID_IGNORE || (c >= 0 && c < CR_CAMVID_CLASSES))) abort();
    }
    volatile float sink = 0;
    for (int64_t i = 0; i < 3 * ds.height * ds.width; i++) sink += ds.images[i];
    (void)sink;
    cr_dataset_free(&ds);
    check_frames(1 + (data[0] >> 4), (uint64_t)size);
    return 0;
}
