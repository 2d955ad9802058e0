/* fuzz_png.c — libFuzzer target: cr_png_read on arbitrary bytes (the harness and its
 * contract are in fuzz_image.h, shared with fuzz_jpeg.c). */
#include "fuzz_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image_one(data, size, "png", cr_png_read);
}
