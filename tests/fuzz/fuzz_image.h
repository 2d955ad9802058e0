/* fuzz_image.h — what the PNG and JPEG libFuzzer targets share: the image readers take a
 * path, so each input goes to a per-process file in /dev/shm (or TMPDIR when /dev/shm is
 * absent). The first byte picks want_channels (0, 1 or 3); the rest is the file. An
 * accepted image must have the channels asked for and every pixel byte readable; a
 * refusal must leave an empty image and a message. */
#ifndef CR_FUZZ_IMAGE_H
#define CR_FUZZ_IMAGE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "png_io.h"

/* Reads an image file with want_channels (0: as stored) into img; the reader under test. */
typedef cr_status (*fuzz_image_reader)(const char *path, int want_channels, cr_image *img);

/* The per-process input file for extension ext ("png", "jpg"), picked once. */
static const char *fuzz_input_path(const char *ext)
{
    static char path[256];
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/cr-fuzz-%s-%ld.%s", dir ? dir : "/tmp", ext,
                 (long)getpid(), ext);
    }
    return path;
}

/* One fuzz input through read: aborts (a finding) on a broken contract, else returns 0. */
static int fuzz_image_one(const uint8_t *data, size_t size, const char *ext,
                          fuzz_image_reader read)
{
    if (size < 1) return 0;
    static const int wants[3] = {0, 1, 3};
    const int want = wants[data[0] % 3];
    const char *path = fuzz_input_path(ext);
    FILE *fp = fopen(path, "wb");
    if (!fp) abort();
    if (size > 1 && fwrite(data + 1, 1, size - 1, fp) != size - 1) abort();
    if (fclose(fp) != 0) abort();

    cr_image img;
    cr_status st = read(path, want, &img);
    remove(path);  /* libFuzzer may end with _Exit: leave nothing in /dev/shm */
    if (st != CR_OK) {
        if (img.pixels || !cr_last_error()[0]) abort();
        return 0;
    }
    if (img.width < 1 || img.height < 1 || (img.channels != 1 && img.channels != 3) ||
        (want && img.channels != want))
        abort();
    volatile unsigned sink = 0;
    const size_t n = (size_t)img.width * (size_t)img.height * (size_t)img.channels;
    for (size_t i = 0; i < n; i++) sink += img.pixels[i];
    (void)sink;
    cr_image_free(&img);
    return 0;
}

#endif
