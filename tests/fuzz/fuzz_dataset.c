/* fuzz_dataset.c — libFuzzer target: the CamVid loader (cr_camvid_load) on arbitrary files.
 *
 * Input layout: byte 0 picks the reduction factor (1..4); bytes 1-2 (little endian)
 * give the length L of the frame's PNG; then L bytes of frame PNG, and the rest is the
 * label PNG. They become DIR/train/a.png and DIR/trainannot/a.png in a per-process
 * folder under /dev/shm (or TMPDIR). An accepted split must hold one frame whose
 * labels are classes 0..10 or the ignore index; a refusal must leave an empty
 * dataset and a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[256];

/* Removes the per-process folder at exit. */
static void cleanup(void)
{
    char path[320];
    const char *const subs[] = {"train/a.png", "trainannot/a.png", "train", "trainannot", ""};
    for (int i = 0; i < 5; i++) {
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

/* Writes n bytes to DIR/SUB/a.png. */
static void put(const char *sub, const uint8_t *bytes, size_t n)
{
    char path[320];
    snprintf(path, sizeof path, "%s/%s/a.png", data_dir(), sub);
    FILE *fp = fopen(path, "wb");
    if (!fp) abort();
    if (n && fwrite(bytes, 1, n, fp) != n) abort();
    if (fclose(fp) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    int factor = 1 + data[0] % 4;
    size_t len = (size_t)data[1] | (size_t)data[2] << 8;
    if (len > size - 3) len = size - 3;
    put("train", data + 3, len);
    put("trainannot", data + 3 + len, size - 3 - len);

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
    return 0;
}
