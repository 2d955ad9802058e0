/* jpeg_io.h — 8-bit JPEG reading (and writing, for tests and tools) through libjpeg-turbo.
 *
 * Pixels come back in the cr_image of png_io.h: rows top to bottom, samples interleaved
 * (RGB or grey), one byte each. Decoding uses libjpeg's defaults (the accurate integer
 * IDCT, "fancy" triangle-filter chroma upsampling), the same as Pillow's, so a file
 * decodes to the same bytes here and in PIL built on the same libjpeg-turbo. */
#ifndef CR_JPEG_IO_H
#define CR_JPEG_IO_H

#include "error.h"
#include "png_io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads an 8-bit baseline or progressive JPEG (Huffman-coded; colour space grey, YCbCr
 * or RGB) from a regular file. want_channels 0 keeps the file's own (grey -> 1,
 * colour -> 3), 1 converts to grey (luma), 3 to RGB. Refused with CR_EFORMAT and a
 * message naming the file: not a JPEG, truncated or corrupt data (every libjpeg
 * warning counts as an error), CMYK/YCCK, arithmetic coding, 12-bit samples, more than
 * 32768 pixels a side, or a header that claims more 8x8 blocks than the file has bits
 * to code (checked before any pixel memory is allocated); CR_EIO for a missing or
 * unreadable file or one that is not a regular file (a FIFO, a folder). */
cr_status cr_jpeg_read(const char *path, int want_channels, cr_image *img);

/* Writes img (1 or 3 channels) as a baseline JPEG of quality 1..100 (4:2:0 chroma for
 * RGB), atomically (PATH.tmp then rename). */
cr_status cr_jpeg_write(const char *path, const cr_image *img, int quality);

/* True if name ends in ".jpg" or ".jpeg" (any case). */
int cr_is_jpeg_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif
