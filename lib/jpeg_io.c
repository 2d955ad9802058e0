/* jpeg_io.c — 8-bit JPEG reading and writing with libjpeg-turbo's classic (jpeglib.h) API.
 *
 * libjpeg reports a fatal error by calling err->error_exit, which must not return (the
 * default one calls exit()); ours records the message with cr_fail and longjmps back to
 * the setjmp of the reading or writing function, which frees what it allocated. Warnings
 * (err->emit_message with level -1: corrupt data, a premature end of file) are treated
 * as errors the same way, as djpeg -strict does. Locals changed after setjmp are volatile. */
#include "jpeg_io.h"

#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <jerror.h>

/* The largest width or height we agree to read (as png_io). */
#define CR_JPEG_MAX_SIDE 32768u
/* Bits every file may spend on markers and tables beyond one bit per coded block. */
#define CR_JPEG_SLACK_BITS 64u

/* libjpeg's error manager with what our handlers need; the jmp_buf is set before any
 * libjpeg call and path/status never change after, so they stay valid across longjmp. */
typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    const char *path;
    cr_status status;  /* CR_EFORMAT when reading, CR_EIO when writing */
} jpeg_err;

/* error_exit: records libjpeg's message for the file, then longjmps (never returns). */
static void on_error(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    int errnum = errno;
    e->mgr.format_message(cinfo, msg);
    if (e->status == CR_EIO)
        cr_fail(CR_EIO, "%s: write failed: %s (%s)", e->path, msg, strerror(errnum));
    else if (e->mgr.msg_code == JWRN_JPEG_EOF)
        cr_fail(CR_EFORMAT, "%s: invalid JPEG: the file is truncated (%s)", e->path, msg);
    else
        cr_fail(CR_EFORMAT, "%s: invalid JPEG: %s", e->path, msg);
    longjmp(e->jump, 1);
}

/* emit_message: a warning (level -1, corrupt or missing data) is fatal; trace
 * messages (level >= 0) are dropped. */
static void on_message(j_common_ptr cinfo, int level)
{
    if (level < 0) cinfo->err->error_exit(cinfo);
}

/* Installs our handlers in e (status: what a failure reports). */
static struct jpeg_error_mgr *init_err(jpeg_err *e, const char *path, cr_status status)
{
    memset(e, 0, sizeof *e);
    jpeg_std_error(&e->mgr);
    e->mgr.error_exit = on_error;
    e->mgr.emit_message = on_message;
    e->path = path;
    e->status = status;
    return &e->mgr;
}

int cr_is_jpeg_name(const char *name)
{
    size_t n = strlen(name);
    return (n > 4 && strcasecmp(name + n - 4, ".jpg") == 0) ||
           (n > 5 && strcasecmp(name + n - 5, ".jpeg") == 0);
}

/* A name for a JPEG colour space, for messages. */
static const char *space_name(J_COLOR_SPACE cs)
{
    switch (cs) {
    case JCS_GRAYSCALE: return "grey";
    case JCS_RGB:       return "RGB";
    case JCS_YCbCr:     return "YCbCr";
    case JCS_CMYK:      return "CMYK";
    case JCS_YCCK:      return "YCCK";
    default:            return "unknown";
    }
}

/* Checks the header read by jpeg_read_header: side limits, coding, colour space, and
 * that the file (file_bytes long) has at least one bit for every 8x8 block of the
 * component with the fewest blocks (each coded block costs a Huffman code of >= 1 bit
 * in some scan), so a tiny file cannot make us allocate for a huge image. */
static cr_status check_header(const struct jpeg_decompress_struct *ci, const char *path,
                              long long file_bytes)
{
    if (ci->image_width > CR_JPEG_MAX_SIDE || ci->image_height > CR_JPEG_MAX_SIDE)
        return cr_fail(CR_EFORMAT, "%s: image of %ux%u pixels exceeds the limit of %u per side",
                       path, ci->image_width, ci->image_height, CR_JPEG_MAX_SIDE);
    if (ci->arith_code)
        return cr_fail(CR_EFORMAT, "%s: arithmetic-coded JPEG is not supported (only Huffman "
                       "coding)", path);
    const J_COLOR_SPACE cs = ci->jpeg_color_space;
    if (!((cs == JCS_GRAYSCALE && ci->num_components == 1) ||
          ((cs == JCS_YCbCr || cs == JCS_RGB) && ci->num_components == 3)))
        return cr_fail(CR_EFORMAT, "%s: JPEG colour space %s with %d components; expected "
                       "grey, YCbCr or RGB", path, space_name(cs), ci->num_components);
    uint64_t fewest = UINT64_MAX;
    for (int c = 0; c < ci->num_components; c++) {
        const jpeg_component_info *k = &ci->comp_info[c];
        uint64_t blocks = (uint64_t)k->width_in_blocks * (uint64_t)k->height_in_blocks;
        if (blocks < fewest) fewest = blocks;
    }
    uint64_t bits = (uint64_t)file_bytes * 8u + CR_JPEG_SLACK_BITS;
    if (fewest > bits)
        return cr_fail(CR_EFORMAT, "%s: invalid JPEG: %ux%u pixels cannot be coded in a file "
                       "of %lld bytes (truncated or corrupt header)", path, ci->image_width,
                       ci->image_height, file_bytes);
    return CR_OK;
}

/* Decodes an open JPEG file of file_bytes bytes into img (want: 0, 1 or 3 channels). */
static cr_status read_stream(FILE *fp, const char *path, long long file_bytes, int want,
                             cr_image *img)
{
    struct jpeg_decompress_struct ci;
    jpeg_err err;
    uint8_t *volatile pixels = NULL;
    volatile cr_status st = CR_OK;
    memset(&ci, 0, sizeof ci);  /* jpeg_destroy is safe on it whenever the longjmp comes */
    ci.err = init_err(&err, path, CR_EFORMAT);
    if (setjmp(err.jump)) {
        st = CR_EFORMAT;  /* on_error has recorded the message */
        goto done;
    }
    jpeg_create_decompress(&ci);
    jpeg_stdio_src(&ci, fp);
    jpeg_read_header(&ci, TRUE);
    if ((st = check_header(&ci, path, file_bytes))) goto done;
    const int channels = want ? want : ci.jpeg_color_space == JCS_GRAYSCALE ? 1 : 3;
    ci.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&ci);
    if (ci.output_components != channels || ci.output_width != ci.image_width ||
        ci.output_height != ci.image_height) {
        st = cr_fail(CR_EFORMAT, "%s: JPEG did not decode to %d channels at full size", path,
                     channels);
        goto done;
    }
    const size_t row = (size_t)ci.output_width * (size_t)channels;  /* <= 2^15 * 3 */
    pixels = malloc(row * ci.output_height + 1);
    if (!pixels) {
        st = cr_fail(CR_ENOMEM, "%s: out of memory for %ux%u pixels", path, ci.output_width,
                     ci.output_height);
        goto done;
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW r = pixels + (size_t)ci.output_scanline * row;
        jpeg_read_scanlines(&ci, &r, 1);
    }
    jpeg_finish_decompress(&ci);  /* reads to EOI: trailing damage is reported too */
    img->width = (int)ci.output_width;
    img->height = (int)ci.output_height;
    img->channels = channels;
    img->pixels = pixels;
    pixels = NULL;
done:
    free(pixels);
    jpeg_destroy_decompress(&ci);
    return st;
}

cr_status cr_jpeg_read(const char *path, int want_channels, cr_image *img)
{
    memset(img, 0, sizeof *img);
    if (want_channels != 0 && want_channels != 1 && want_channels != 3)
        return cr_fail(CR_EINVAL, "%s: want_channels = %d: expected 0, 1 or 3", path,
                       want_channels);
    struct stat sb;
    if (stat(path, &sb) != 0) return cr_fail(CR_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return cr_fail(CR_EIO, "%s: not a regular file (a folder, FIFO or device); expected "
                       "a JPEG file", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return cr_fail(CR_EIO, "%s: %s", path, strerror(errno));
    unsigned char soi[2];
    cr_status st;
    if (fread(soi, 1, 2, fp) != 2 || soi[0] != 0xFF || soi[1] != 0xD8) {
        st = ferror(fp) ? cr_fail(CR_EIO, "%s: %s", path, strerror(errno))
                        : cr_fail(CR_EFORMAT, "%s: not a JPEG file (no SOI marker)", path);
    } else {
        rewind(fp);
        st = read_stream(fp, path, (long long)sb.st_size, want_channels, img);
    }
    fclose(fp);
    return st;
}

/* Encodes img into an open stream as a baseline JPEG of the given quality. */
static cr_status write_stream(FILE *fp, const char *path, const cr_image *img, int quality)
{
    struct jpeg_compress_struct ci;
    jpeg_err err;
    memset(&ci, 0, sizeof ci);
    ci.err = init_err(&err, path, CR_EIO);
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&ci);
        return CR_EIO;  /* on_error has recorded the message */
    }
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, fp);
    ci.image_width = (JDIMENSION)img->width;
    ci.image_height = (JDIMENSION)img->height;
    ci.input_components = img->channels;
    ci.in_color_space = img->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    const size_t row = (size_t)img->width * (size_t)img->channels;
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW r = img->pixels + (size_t)ci.next_scanline * row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return CR_OK;
}

cr_status cr_jpeg_write(const char *path, const cr_image *img, int quality)
{
    if (img->channels != 1 && img->channels != 3)
        return cr_fail(CR_EINVAL, "%s: image has %d channels, expected 1 or 3", path,
                       img->channels);
    if (img->width < 1 || img->height < 1 || (unsigned)img->width > CR_JPEG_MAX_SIDE ||
        (unsigned)img->height > CR_JPEG_MAX_SIDE)
        return cr_fail(CR_EINVAL, "%s: image of %dx%d pixels, expected 1..%u per side", path,
                       img->width, img->height, CR_JPEG_MAX_SIDE);
    if (!img->pixels) return cr_fail(CR_EINVAL, "%s: image has no pixels", path);
    if (quality < 1 || quality > 100)
        return cr_fail(CR_EINVAL, "%s: quality = %d: expected 1..100", path, quality);
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) return cr_fail(CR_ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *fp = fopen(tmp, "wb");
    cr_status st;
    if (!fp) {
        st = cr_fail(CR_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return st;
    }
    st = write_stream(fp, path, img, quality);
    if (fclose(fp) != 0 && !st) st = cr_fail(CR_EIO, "%s: write failed: %s", path, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = cr_fail(CR_EIO, "%s: cannot rename %s: %s", path, tmp, strerror(errno));
    if (st) remove(tmp);
    free(tmp);
    return st;
}
