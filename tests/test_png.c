/* test_png.c — PNG reading and writing: exact round trips, conversions, refusals, damage. */
#include "cr_test.h"
#include "test_files.h"

#include <dirent.h>
#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "png_io.h"

/* ------------------------------------------------------------------ helpers */

/* A xorshift64 generator seeded from the clock. */
static uint64_t rng_state = 88172645463325252u;
static uint8_t next_byte(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 56);
}

/* Allocates an image of the given size filled with fresh random bytes. */
static cr_image random_image(int w, int h, int c)
{
    cr_image img = {w, h, c, malloc((size_t)w * (size_t)h * (size_t)c)};
    assert_non_null(img.pixels);
    for (size_t i = 0; i < (size_t)w * (size_t)h * (size_t)c; i++) img.pixels[i] = next_byte();
    return img;
}

/* Writes a PNG with libpng directly: any bit depth and colour type, optional palette and interlace.
 * rows holds height rows of png_get_rowbytes bytes (16-bit samples big-endian, as PNG stores them). */
static void write_raw_png(const char *path, png_uint_32 w, png_uint_32 h, int depth, int ct,
                          const png_color *palette, int npal, int interlace, png_bytep *rows)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng failed writing the test file %s", path);
    png_init_io(png, fp);
    png_set_IHDR(png, info, w, h, depth, ct,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, npal);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    assert_int_equal(fclose(fp), 0);
}

/* Reads a whole file into a new buffer. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n > 0);
    rewind(fp);
    unsigned char *b = malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

/* Writes len bytes of b to path. */
static void spit(const char *path, const unsigned char *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Writes img, reads it back with want channels and checks it is identical. */
static void check_round_trip(const char *path, const cr_image *img, int want)
{
    cr_image back;
    assert_cr_ok(cr_png_read(path, want, &back));
    assert_int_equal(back.width, img->width);
    assert_int_equal(back.height, img->height);
    assert_int_equal(back.channels, img->channels);
    assert_memory_equal(back.pixels, img->pixels,
                        (size_t)img->width * (size_t)img->height * (size_t)img->channels);
    cr_image_free(&back);
    assert_null(back.pixels);
}

/* ------------------------------------------------------------------ tests */

/* Grey images (odd sizes, 1x1) come back bit for bit, as grey and with want_channels 1. */
static void png__grey_round_trip(void **state)
{
    (void)state;
    rng_state ^= (uint64_t)time(NULL);
    char dir[512], path[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/grey.png", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const int sizes[][2] = {{37, 23}, {1, 1}, {1, 300}, {257, 2}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        cr_image img = random_image(sizes[i][0], sizes[i][1], 1);
        assert_cr_ok(cr_png_write(path, &img));
        struct stat sb;
        assert_int_not_equal(stat(tmp, &sb), 0);  /* no temporary left behind */
        check_round_trip(path, &img, 0);
        check_round_trip(path, &img, 1);
        cr_image_free(&img);
    }
    cr_test_remove_temp_dir(dir);
}

/* RGB images come back bit for bit, as they are and with want_channels 3. */
static void png__rgb_round_trip(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/rgb.png", dir);
    cr_image img = random_image(29, 17, 3);
    assert_cr_ok(cr_png_write(path, &img));
    check_round_trip(path, &img, 0);
    check_round_trip(path, &img, 3);
    cr_image_free(&img);
    /* Overwriting an existing file works (rename replaces it). */
    img = random_image(3, 5, 3);
    assert_cr_ok(cr_png_write(path, &img));
    check_round_trip(path, &img, 0);
    cr_image_free(&img);
    cr_test_remove_temp_dir(dir);
}

/* Grey read as RGB replicates the value; RGB read as grey gives luminance (exact for r=g=b). */
static void png__conversions(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/c.png", dir);
    cr_image grey = random_image(11, 7, 1), back;
    assert_cr_ok(cr_png_write(path, &grey));
    assert_cr_ok(cr_png_read(path, 3, &back));
    assert_int_equal(back.channels, 3);
    for (size_t i = 0; i < 77; i++)
        for (int c = 0; c < 3; c++) assert_int_equal(back.pixels[3 * i + (size_t)c], grey.pixels[i]);
    cr_image_free(&back);
    cr_image_free(&grey);

    cr_image rgb = random_image(16, 16, 3);
    for (size_t i = 0; i < 128; i++)  /* the first half grey-valued: those must stay exact */
        rgb.pixels[3 * i + 1] = rgb.pixels[3 * i + 2] = rgb.pixels[3 * i];
    assert_cr_ok(cr_png_write(path, &rgb));
    assert_cr_ok(cr_png_read(path, 1, &back));
    assert_int_equal(back.channels, 1);
    for (size_t i = 0; i < 256; i++) {
        const uint8_t *p = rgb.pixels + 3 * i;
        double y = 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2];  /* libpng's default weights */
        if (i < 128) assert_int_equal(back.pixels[i], p[0]);
        else if (back.pixels[i] < y - 1.5 || back.pixels[i] > y + 1.5)
            fail_msg("pixel %zu (%d, %d, %d) -> grey %d, expected %.1f +- 1.5", i, p[0], p[1], p[2],
                     back.pixels[i], y);
    }
    cr_image_free(&back);
    cr_image_free(&rgb);
    cr_test_remove_temp_dir(dir);
}

/* A 16-bit grey PNG is refused as it is (the message says what it is) and converts when asked. */
static void png__refuses_16bit(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/deep.png", dir);
    enum { W = 5, H = 3 };
    uint8_t want[W * H], raw[H][2 * W];
    png_bytep rows[H];
    for (int y = 0; y < H; y++) {
        rows[y] = raw[y];
        for (int x = 0; x < W; x++) {
            want[y * W + x] = next_byte();
            unsigned v16 = want[y * W + x] * 257u;  /* scales back to exactly the byte */
            raw[y][2 * x] = (uint8_t)(v16 >> 8);
            raw[y][2 * x + 1] = (uint8_t)v16;
        }
    }
    write_raw_png(path, W, H, 16, PNG_COLOR_TYPE_GRAY, NULL, 0, 0, rows);
    cr_image img = {1, 1, 1, NULL};
    assert_cr_fails(cr_png_read(path, 0, &img), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), path));
    assert_non_null(strstr(cr_last_error(), "16-bit grey"));
    assert_null(img.pixels);
    assert_cr_ok(cr_png_read(path, 1, &img));
    assert_int_equal(img.channels, 1);
    assert_memory_equal(img.pixels, want, sizeof want);
    cr_image_free(&img);
    assert_cr_ok(cr_png_read(path, 3, &img));
    for (int i = 0; i < W * H; i++) assert_int_equal(img.pixels[3 * i + 2], want[i]);
    cr_image_free(&img);
    cr_test_remove_temp_dir(dir);
}

/* A palette PNG is refused as it is and expands to its colours when asked (interlaced too). */
static void png__refuses_palette(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/pal.png", dir);
    const png_color pal[4] = {{200, 10, 30}, {0, 255, 7}, {90, 90, 90}, {1, 2, 3}};
    enum { W = 9, H = 10 };
    uint8_t idx[H][W];
    png_bytep rows[H];
    for (int y = 0; y < H; y++) {
        rows[y] = idx[y];
        for (int x = 0; x < W; x++) idx[y][x] = (uint8_t)((x * 7 + y * 3) % 4);
    }
    for (int interlace = 0; interlace <= 1; interlace++) {
        write_raw_png(path, W, H, 8, PNG_COLOR_TYPE_PALETTE, pal, 4, interlace, rows);
        cr_image img;
        assert_cr_fails(cr_png_read(path, 0, &img), CR_EFORMAT);
        assert_non_null(strstr(cr_last_error(), "8-bit palette"));
        assert_non_null(strstr(cr_last_error(), path));
        assert_cr_ok(cr_png_read(path, 3, &img));
        assert_int_equal(img.channels, 3);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const uint8_t *p = img.pixels + 3 * (y * W + x);
                const png_color *c = &pal[idx[y][x]];
                assert_true(p[0] == c->red && p[1] == c->green && p[2] == c->blue);
            }
        cr_image_free(&img);
        assert_cr_ok(cr_png_read(path, 1, &img));
        assert_int_equal(img.pixels[2], 90);  /* (2*7 + 0) % 4 = 2: the grey entry stays exact */
        cr_image_free(&img);
    }
    cr_test_remove_temp_dir(dir);
}

/* Every truncation of a valid file, and a flipped byte in the image data, give CR_EFORMAT. */
static void png__truncated_and_corrupt(void **state)
{
    (void)state;
    char dir[512], path[1024], cut[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/full.png", dir);
    snprintf(cut, sizeof cut, "%s/cut.png", dir);
    cr_image img = random_image(13, 11, 3), back;
    assert_cr_ok(cr_png_write(path, &img));
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    for (size_t n = 0; n < len; n++) {
        spit(cut, bytes, n);
        cr_status st = cr_png_read(cut, 0, &back);
        if (st != CR_EFORMAT)
            fail_msg("truncated to %zu of %zu bytes: got %s", n, len, cr_status_name(st));
        if (!strstr(cr_last_error(), cut)) fail_msg("message '%s' lacks the path", cr_last_error());
        assert_null(back.pixels);
    }
    assert_cr_fails(cr_png_read(cut, 3, &back), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "truncated"));
    /* Damage inside IDAT (past the 8-byte signature, 25-byte IHDR and the IDAT's 8-byte head). */
    bytes[8 + 25 + 8 + 10] ^= 0x55;
    spit(cut, bytes, len);
    assert_cr_fails(cr_png_read(cut, 0, &back), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "invalid PNG"));
    spit(cut, (const unsigned char *)"GIF89a not a png at all", 23);
    assert_cr_fails(cr_png_read(cut, 0, &back), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "not a PNG"));
    free(bytes);
    cr_image_free(&img);
    cr_test_remove_temp_dir(dir);
}

/* Absurd dimensions are refused before allocating. */
static void png__refuses_huge(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/wide.png", dir);
    enum { W = (1 << 15) + 1 };
    static uint8_t row[W];
    png_bytep rows[1] = {row};
    write_raw_png(path, W, 1, 8, PNG_COLOR_TYPE_GRAY, NULL, 0, 0, rows);
    cr_image img;
    assert_cr_fails(cr_png_read(path, 0, &img), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "exceeds the limit"));
    cr_image big = {W, 1, 1, row};
    assert_cr_fails(cr_png_write(path, &big), CR_EINVAL);
    cr_test_remove_temp_dir(dir);
}

/* Found by tests/fuzz (corpus/png/huge-header-tiny-file): a 69-byte file whose header
 * says 32768x32768 RGB made the reader allocate 3 GiB for pixels before reading any.
 * Deflate expands at most 1032:1, so such a header is refused before allocating; a
 * real, highly compressed large image still reads. */
static void png__header_larger_than_file_refused(void **state)
{
    (void)state;
    static const unsigned char huge[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49,
        0x48, 0x44, 0x52, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x00, 0x08, 0x02,
        0x00, 0x00, 0x00, 0x4b, 0x1e, 0x34, 0x28, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44,
        0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0xa0, 0x3d, 0x00, 0x00, 0x00, 0x64, 0x00,
        0x01, 0x86, 0x64, 0x3c, 0x35, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
        0xae, 0x42, 0x60, 0x82};
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_png");
    snprintf(path, sizeof path, "%s/huge.png", dir);
    spit(path, huge, sizeof huge);
    cr_image img;
    for (int want = 0; want <= 3; want += want ? 2 : 1) {
        assert_cr_fails(cr_png_read(path, want, &img), CR_EFORMAT);
        assert_non_null(strstr(cr_last_error(), "cannot fit in a file of 69 bytes"));
        assert_null(img.pixels);
    }
    /* 4096 x 2048 zeros: compresses about 1000:1, close to the bound, and reads. */
    enum { W = 4096, H = 2048 };
    uint8_t *zeros = calloc((size_t)W * H, 1);
    png_bytep *rows = malloc(H * sizeof *rows);
    assert_non_null(zeros);
    assert_non_null(rows);
    for (int y = 0; y < H; y++) rows[y] = zeros + (size_t)y * W;
    snprintf(path, sizeof path, "%s/zeros.png", dir);
    write_raw_png(path, W, H, 8, PNG_COLOR_TYPE_GRAY, NULL, 0, 0, rows);
    assert_cr_ok(cr_png_read(path, 0, &img));
    assert_int_equal(img.width, W);
    assert_int_equal(img.height, H);
    cr_image_free(&img);
    free(rows);
    free(zeros);
    cr_test_remove_temp_dir(dir);
}

/* Missing files are CR_EIO naming the path; bad arguments are CR_EINVAL. */
static void png__io_errors(void **state)
{
    (void)state;
    cr_image img = random_image(2, 2, 1), back;
    const char *missing = "/nonexistent-cr-dir/missing.png";
    assert_cr_fails(cr_png_read(missing, 0, &back), CR_EIO);
    assert_non_null(strstr(cr_last_error(), missing));
    assert_non_null(strstr(cr_last_error(), strerror(ENOENT)));
    assert_cr_fails(cr_png_write(missing, &img), CR_EIO);
    assert_non_null(strstr(cr_last_error(), missing));
    assert_cr_fails(cr_png_read(missing, 2, &back), CR_EINVAL);
    img.channels = 4;
    assert_cr_fails(cr_png_write("/tmp/never.png", &img), CR_EINVAL);
    img.channels = 1;
    img.width = 0;
    assert_cr_fails(cr_png_write("/tmp/never.png", &img), CR_EINVAL);
    cr_image_free(&img);
    cr_image_free(&img);  /* safe twice */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(png__grey_round_trip),
        cmocka_unit_test(png__rgb_round_trip),
        cmocka_unit_test(png__conversions),
        cmocka_unit_test(png__refuses_16bit),
        cmocka_unit_test(png__refuses_palette),
        cmocka_unit_test(png__truncated_and_corrupt),
        cmocka_unit_test(png__refuses_huge),
        cmocka_unit_test(png__header_larger_than_file_refused),
        cmocka_unit_test(png__io_errors),
    };
    return cr_run_tests("png", tests);
}
