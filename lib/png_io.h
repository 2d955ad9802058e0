/* png_io.h — 8-bit PNG reading and writing through libpng (grey and RGB, as CamVid uses). */
#ifndef CR_PNG_IO_H
#define CR_PNG_IO_H

#include <stdint.h>
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width, height;
    int channels;     /* 1 (grey) or 3 (RGB) */
    uint8_t *pixels;  /* height * width * channels bytes, row-major, interleaved */
} cr_image;

/* Reads an 8-bit grey or RGB PNG (palette and 16-bit files are refused unless
 * want_channels asks for conversion: want_channels 0 keeps the file's own format
 * and refuses anything but 8-bit grey/RGB; 1 or 3 converts to that). Values are
 * never altered for 8-bit grey files read as grey (label maps stay exact). */
cr_status cr_png_read(const char *path, int want_channels, cr_image *img);
/* Writes img as an 8-bit grey or RGB PNG, atomically (a unique temporary file then
 * rename, or directly to a device or FIFO; see atomic_file.h). */
cr_status cr_png_write(const char *path, const cr_image *img);
void cr_image_free(cr_image *img);

#ifdef __cplusplus
}
#endif

#endif
