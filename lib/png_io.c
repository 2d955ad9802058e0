/* png_io.c — 8-bit grey/RGB PNG reading and writing with libpng 1.6's classic API.
 *
 * libpng reports errors by calling an error function that must not return; ours
 * records the message and longjmps back to the setjmp in the reading or writing
 * function, which frees what it allocated. Locals changed after setjmp are volatile. */
#include "png_io.h"
#include "atomic_file.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The largest width or height we agree to read or write. */
#define CR_PNG_MAX_SIDE ((png_uint_32)1 << 15)
/* Deflate never expands more than 1032:1, so a file of S bytes holds at most about
 * 1032*S bytes of (filtered) pixel rows: a header promising more is refused before
 * the pixel buffer is allocated (a 60-byte file must not cost gigabytes). */
#define CR_PNG_DEFLATE_MAX_RATIO 1032u
#define CR_PNG_RATIO_SLACK 4096u

/* What libpng's error function needs to word the failure; set before setjmp and never
 * changed after, so it stays valid across the longjmp. */
typedef struct {
    const char *path;
    FILE *fp;
    cr_status status;  /* CR_EFORMAT when reading, CR_EIO when writing */
} png_err;

/* libpng error callback: records the failure with cr_fail, then longjmps (never returns). */
static void on_error(png_structp png, png_const_charp msg)
{
    const png_err *e = png_get_error_ptr(png);
    int errnum = errno;
    if (!msg) msg = "unknown libpng error";
    if (e->status == CR_EIO)
        cr_fail(CR_EIO, "%s: write failed: %s (%s)", e->path, msg, strerror(errnum));
    else if (feof(e->fp))
        cr_fail(CR_EFORMAT, "%s: invalid PNG: the file is truncated (%s)", e->path, msg);
    else
        cr_fail(CR_EFORMAT, "%s: invalid PNG: %s", e->path, msg);
    png_longjmp(png, 1);
}

/* libpng warning callback: warnings (e.g. a bad ancillary chunk) are ignored. */
static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* A name for a PNG colour type, for messages. */
static const char *color_type_name(int ct)
{
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY:       return "grey";
    case PNG_COLOR_TYPE_GRAY_ALPHA: return "grey+alpha";
    case PNG_COLOR_TYPE_RGB:        return "RGB";
    case PNG_COLOR_TYPE_RGB_ALPHA:  return "RGBA";
    case PNG_COLOR_TYPE_PALETTE:    return "palette";
    }
    return "unknown colour type";
}

void cr_image_free(cr_image *img)
{
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

/* Sets libpng transformations that turn any PNG of colour type ct and bit depth
 * depth into 8-bit samples with want (1 or 3) channels and no alpha. */
static void set_conversions(png_structp png, int ct, int depth, int want)
{
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    png_set_strip_alpha(png);
    int color = (ct & PNG_COLOR_MASK_COLOR) != 0;
    if (want == 1 && color) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
    if (want == 3 && !color) png_set_gray_to_rgb(png);
}

/* Checks the header (IHDR) against what we accept; sets *channels to the output's. */
static cr_status check_header(const char *path, png_uint_32 w, png_uint_32 h, int depth, int ct,
                              int want, int *channels)
{
    if (w > CR_PNG_MAX_SIDE || h > CR_PNG_MAX_SIDE)
        return cr_fail(CR_EFORMAT, "%s: image of %lux%lu pixels exceeds the limit of %lu per side",
                       path, (unsigned long)w, (unsigned long)h, (unsigned long)CR_PNG_MAX_SIDE);
    if (want == 0) {
        if (depth != 8 || (ct != PNG_COLOR_TYPE_GRAY && ct != PNG_COLOR_TYPE_RGB))
            return cr_fail(CR_EFORMAT, "%s: %d-bit %s PNG; expected 8-bit grey or RGB "
                           "(ask for 1 or 3 channels to convert)", path, depth, color_type_name(ct));
        *channels = ct == PNG_COLOR_TYPE_GRAY ? 1 : 3;
    } else {
        *channels = want;
    }
    return CR_OK;
}

/* Refuses a header whose pixel rows (h rows of a filter byte and w pixels of
 * file_channels samples of depth bits, as stored before compression) could not come
 * out of a file of fp's size, whatever the compression. */
static cr_status check_size_fits_file(FILE *fp, const char *path, png_uint_32 w, png_uint_32 h,
                                      int depth, int file_channels)
{
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0)
        return CR_OK;  /* not a regular file (a pipe): no size to check against */
    uint64_t row = 1 + ((uint64_t)w * (uint64_t)file_channels * (uint64_t)depth + 7) / 8;
    uint64_t raw = row * h;  /* <= 2^15 * (1 + 2^15 * 8) : no overflow */
    uint64_t most = (uint64_t)sb.st_size * CR_PNG_DEFLATE_MAX_RATIO + CR_PNG_RATIO_SLACK;
    if (raw > most)
        return cr_fail(CR_EFORMAT, "%s: invalid PNG: %lux%lu pixels cannot fit in a file of %lld "
                       "bytes (truncated or corrupt header)", path, (unsigned long)w,
                       (unsigned long)h, (long long)sb.st_size);
    return CR_OK;
}

/* Decodes an open PNG stream (signature already consumed) into img. */
static cr_status read_stream(FILE *fp, const char *path, int want, cr_image *img)
{
    png_err err = {path, fp, CR_EFORMAT};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        return cr_fail(CR_ENOMEM, "%s: out of memory for libpng", path);
    }
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    volatile cr_status st = CR_OK;
    if (setjmp(png_jmpbuf(png))) {
        st = CR_EFORMAT;  /* on_error has recorded the message */
        goto done;
    }
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ct, interlace, channels = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ct, &interlace, NULL, NULL);
    if ((st = check_header(path, w, h, depth, ct, want, &channels))) goto done;
    if ((st = check_size_fits_file(fp, path, w, h, depth, png_get_channels(png, info)))) goto done;
    if (want) set_conversions(png, ct, depth, want);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t row_bytes = (size_t)w * (size_t)channels;  /* <= 2^15 * 3: no overflow */
    if (png_get_channels(png, info) != channels || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != row_bytes) {
        st = cr_fail(CR_EFORMAT, "%s: %d-bit %s PNG did not convert to 8-bit with %d channels",
                     path, depth, color_type_name(ct), channels);
        goto done;
    }
    pixels = malloc(row_bytes * h);
    rows = malloc(h * sizeof *rows);
    if (!pixels || !rows) {
        st = cr_fail(CR_ENOMEM, "%s: out of memory for %lux%lu pixels", path, (unsigned long)w,
                     (unsigned long)h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);  /* checks the rest of the file (truncation, CRCs) */
    img->width = (int)w;
    img->height = (int)h;
    img->channels = channels;
    img->pixels = pixels;
    pixels = NULL;
done:
    free(pixels);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return st;
}

cr_status cr_png_read(const char *path, int want_channels, cr_image *img)
{
    memset(img, 0, sizeof *img);
    if (want_channels != 0 && want_channels != 1 && want_channels != 3)
        return cr_fail(CR_EINVAL, "%s: want_channels = %d: expected 0, 1 or 3", path, want_channels);
    FILE *fp = fopen(path, "rb");
    if (!fp) return cr_fail(CR_EIO, "%s: %s", path, strerror(errno));
    unsigned char sig[8];
    cr_status st;
    if (fread(sig, 1, sizeof sig, fp) != sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0)
        st = ferror(fp) ? cr_fail(CR_EIO, "%s: %s", path, strerror(errno))
                        : cr_fail(CR_EFORMAT, "%s: not a PNG file (bad signature)", path);
    else
        st = read_stream(fp, path, want_channels, img);
    fclose(fp);
    return st;
}

/* Encodes img into an open stream as an 8-bit grey or RGB PNG. */
static cr_status write_stream(FILE *fp, const char *path, const cr_image *img)
{
    png_err err = {path, fp, CR_EIO};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        return cr_fail(CR_ENOMEM, "%s: out of memory for libpng", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return CR_EIO;  /* on_error has recorded the message */
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 img->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t row_bytes = (size_t)img->width * (size_t)img->channels;
    for (int y = 0; y < img->height; y++) png_write_row(png, img->pixels + (size_t)y * row_bytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return CR_OK;
}

/* Checks that img describes something we can write. */
static cr_status check_image(const char *path, const cr_image *img)
{
    if (img->channels != 1 && img->channels != 3)
        return cr_fail(CR_EINVAL, "%s: image has %d channels, expected 1 or 3", path, img->channels);
    if (img->width < 1 || img->height < 1 || (png_uint_32)img->width > CR_PNG_MAX_SIDE ||
        (png_uint_32)img->height > CR_PNG_MAX_SIDE)
        return cr_fail(CR_EINVAL, "%s: image of %dx%d pixels, expected 1..%lu per side", path,
                       img->width, img->height, (unsigned long)CR_PNG_MAX_SIDE);
    if (!img->pixels) return cr_fail(CR_EINVAL, "%s: image has no pixels", path);
    return CR_OK;
}

cr_status cr_png_write(const char *path, const cr_image *img)
{
    cr_status st = check_image(path, img);
    if (st) return st;
    cr_afile *af = NULL;
    st = cr_afile_open(&af, path, NULL);  /* temporary file + rename; see atomic_file.h */
    if (st) return st;
    st = write_stream(cr_afile_stream(af), path, img);
    if (st) {
        cr_afile_abort(af);
        return st;
    }
    return cr_afile_commit(af);
}
