/* fuzz_jpeg.c — libFuzzer target: cr_jpeg_read on arbitrary bytes (the harness and its
 * contract are in fuzz_image.h, shared with fuzz_png.c). */
#include "fuzz_image.h"
#include "jpeg_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image_one(data, size, "jpg", cr_jpeg_read);
}
