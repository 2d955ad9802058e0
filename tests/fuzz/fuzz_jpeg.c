/* fuzz_jpeg.c — libFuzzer target: cr_jpeg_read on arbitrary bytes.
 *
 * jpeg_io reads from a path, so each input goes to a per-process file in /dev/shm
 * (or TMPDIR when /dev/shm is absent). The first byte picks want_channels (0, 1
 * or 3); the rest is the file. An accepted image must have the channels asked
 * for and every pixel byte readable; a refusal must leave an empty image and a
 * message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jpeg_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];

/* Picks the per-process input file once. */
static const char *input_path(void)
{
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/cr-fuzz-jpeg-%ld.jpg", dir ? dir : "/tmp", (long)getpid());
    }
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const int wants[3] = {0, 1, 3};
    int want = wants[data[0] % 3];
    FILE *fp = fopen(input_path(), "wb");
    if (!fp) abort();
    if (size > 1 && fwrite(data + 1, 1, size - 1, fp) != size - 1) abort();
    if (fclose(fp) != 0) abort();

    cr_image img;
    cr_status st = cr_jpeg_read(input_path(), want, &img);
    remove(input_path());  /* libFuzzer may end with _Exit: leave nothing in /dev/shm */
    if (st != CR_OK) {
        if (img.pixels || !cr_last_error()[0]) abort();
        return 0;
    }
    if (img.width < 1 || img.height < 1 || (img.channels != 1 && img.channels != 3) ||
        (want && img.channels != want))
        abort();
    volatile unsigned sink = 0;
    size_t n = (size_t)img.width * (size_t)img.height * (size_t)img.channels;
    for (size_t i = 0; i < n; i++) sink += img.pixels[i];
    (void)sink;
    cr_image_free(&img);
    return 0;
}
