/* test_dataset.c — the data pipeline: JPEG reading, the CamVid loader's checks (full-size
 * comparison, FIFOs, JPEG frames), and the augmenting batch maker (reproducibility, crop
 * geometry, flips, labels never blended, padding, jitter bounds, evaluation batches). */
#include "cr_test.h"
#include "test_files.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

#include "augment.h"
#include "dataset.h"
#include "jpeg_io.h"
#include "png_io.h"
#include "rng.h"

/* ImageNet statistics, to undo the normalisation (values as augment.h states them). */
static const float mean_rgb[3] = {0.485f, 0.456f, 0.406f};
static const float std_rgb[3] = {0.229f, 0.224f, 0.225f};

/* The run's seed: CR_SEED replays it; printed once. */
static uint64_t test_seed(void)
{
    static uint64_t seed;
    static int done;
    if (!done) {
        seed = cr_seed_from_env();
        done = 1;
        printf("test_dataset: seed = %llu (CR_SEED=%llu replays)\n", (unsigned long long)seed,
               (unsigned long long)seed);
    }
    return seed;
}

/* Byte value (0..255, not rounded) of normalised sample x of channel c. */
static double byte_of(float x, int c)
{
    return ((double)x * std_rgb[c] + mean_rgb[c]) * 255.0;
}

/* ------------------------------------------------------------------ files */

/* Writes n bytes to path. */
static void spit(const char *path, const void *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* Reads a whole file into a new buffer of *n bytes. */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long len = ftell(fp);
    assert_true(len > 0);
    rewind(fp);
    unsigned char *b = malloc((size_t)len);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return b;
}

/* An image of w x h x c bytes (malloc'd, contents to fill). */
static cr_image new_image(int w, int h, int c)
{
    cr_image img = {w, h, c, malloc((size_t)w * (size_t)h * (size_t)c)};
    assert_non_null(img.pixels);
    return img;
}

/* A smooth RGB image with random phases (JPEG codes it with small errors). */
static cr_image smooth_image(int w, int h, cr_rng *rng)
{
    cr_image img = new_image(w, h, 3);
    double ph[3], fr[3];
    for (int c = 0; c < 3; c++) {
        ph[c] = 6.28 * cr_rng_uniform(rng);
        fr[c] = 0.05 + 0.1 * cr_rng_uniform(rng);
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                img.pixels[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)lround(128 + 90 * sin(fr[c] * x + ph[c]) * cos(fr[c] * 0.7 * y));
    return img;
}

/* FNV-1a 64 of n bytes (as tests/fuzz/make_jpeg_seeds.py computes it). */
static uint64_t fnv1a64(const uint8_t *b, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Writes a w x h JPEG with libjpeg directly, in colour space cs with k components
 * (bytes: all 100), for inputs our writer does not make (CMYK). */
static void write_raw_jpeg(const char *path, int w, int h, J_COLOR_SPACE cs, int k)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err);
    jpeg_create_compress(&ci);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    jpeg_stdio_dest(&ci, fp);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = k;
    ci.in_color_space = cs;
    jpeg_set_defaults(&ci);
    JSAMPLE *row = malloc((size_t)w * (size_t)k);
    assert_non_null(row);
    memset(row, 100, (size_t)w * (size_t)k);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) jpeg_write_scanlines(&ci, &row, 1);
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(row);
    assert_int_equal(fclose(fp), 0);
}

/* Makes DIR/train and DIR/trainannot. */
static void make_split_dirs(const char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/train", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/trainannot", dir);
    assert_int_equal(mkdir(p, 0700), 0);
}

/* Removes DIR/train, DIR/trainannot (with their files) and DIR. */
static void remove_split_dirs(const char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/train", dir);
    cr_test_remove_temp_dir(p);
    snprintf(p, sizeof p, "%s/trainannot", dir);
    cr_test_remove_temp_dir(p);
    assert_int_equal(rmdir(dir), 0);
}

/* Writes DIR/train/NAME (PNG or, by its name, JPEG of quality 95) of w x h RGB from rgb and
 * DIR/trainannot/STEM.png from lab (w x h bytes). */
static void put_frame(const char *dir, const char *name, int w, int h, const uint8_t *rgb,
                      const uint8_t *lab)
{
    char p[1024];
    cr_image img = {w, h, 3, (uint8_t *)rgb}, ann = {w, h, 1, (uint8_t *)lab};
    snprintf(p, sizeof p, "%s/train/%s", dir, name);
    if (cr_is_jpeg_name(name))
        assert_cr_ok(cr_jpeg_write(p, &img, 95));
    else
        assert_cr_ok(cr_png_write(p, &img));
    const char *dot = strrchr(name, '.');
    snprintf(p, sizeof p, "%s/trainannot/%.*s.png", dir, (int)(dot - name), name);
    assert_cr_ok(cr_png_write(p, &ann));
}

/* ------------------------------------------------------------------ JPEG */

/* A JPEG Pillow wrote (tests/fuzz/make_jpeg_seeds.py) decodes to Pillow's bytes exactly
 * (both use libjpeg's defaults), and within JPEG's error of the coordinates it encodes. */
static void jpeg__pillow_reference(void **state)
{
    (void)state;
    const char *dir = getenv("CR_TEST_DATA_DIR");
    if (!dir) fail_msg("CR_TEST_DATA_DIR is not set: run the tests through meson test");
    char p[1024];
    snprintf(p, sizeof p, "%s/pil_gradient_q95.jpg", dir);
    cr_image img;
    assert_cr_ok(cr_jpeg_read(p, 0, &img));
    assert_int_equal(img.width, 16);
    assert_int_equal(img.height, 12);
    assert_int_equal(img.channels, 3);
    int worst = 0;
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 16; x++) {
            const int want[3] = {16 * x + 8, 20 * y + 10, 128 - 4 * (x + y)};
            for (int c = 0; c < 3; c++) {
                int d = abs(img.pixels[(y * 16 + x) * 3 + c] - want[c]);
                if (d > worst) worst = d;
            }
        }
    assert_true(worst <= 6);  /* quality 95, 4:4:4 */
    assert_true(fnv1a64(img.pixels, 16 * 12 * 3) == 0x1956a419e1d21f3full);
    cr_image_free(&img);
    assert_cr_ok(cr_jpeg_read(p, 1, &img));  /* grey: the luma */
    assert_int_equal(img.channels, 1);
    const double luma = 0.299 * 8 + 0.587 * 10 + 0.114 * 128;  /* pixel (0, 0) */
    assert_true(fabs(img.pixels[0] - luma) <= 6);
    cr_image_free(&img);
}

/* Random smooth images written with libjpeg (quality 95) come back close, in RGB and
 * grey, at odd sizes. */
static void jpeg__round_trip_close(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed());
    char dir[512], p[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_jpeg");
    snprintf(p, sizeof p, "%s/a.jpg", dir);
    const int sizes[][2] = {{37, 23}, {1, 1}, {64, 48}, {9, 130}};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        cr_image img = smooth_image(sizes[k][0], sizes[k][1], &rng), back;
        assert_cr_ok(cr_jpeg_write(p, &img, 95));
        assert_cr_ok(cr_jpeg_read(p, 3, &back));
        assert_int_equal(back.width, img.width);
        assert_int_equal(back.height, img.height);
        const size_t n = (size_t)img.width * (size_t)img.height * 3;
        double sum = 0;
        int worst = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs(back.pixels[i] - img.pixels[i]);
            sum += d;
            if (d > worst) worst = d;
        }
        if (sum / (double)n > 3.0 || worst > 40)
            fail_msg("%dx%d: mean error %.2f, worst %d", img.width, img.height, sum / (double)n,
                     worst);
        cr_image_free(&back);
        assert_cr_ok(cr_jpeg_read(p, 0, &back));
        assert_int_equal(back.channels, 3);
        cr_image_free(&back);
        cr_image_free(&img);
    }
    remove(p);
    assert_int_equal(rmdir(dir), 0);
}

/* Truncated, corrupt, not-JPEG, CMYK, a huge claimed size, a FIFO and a folder are
 * refused with a message naming the file; nothing is left allocated. */
static void jpeg__bad_input(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 1);
    char dir[512], p[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_jpeg_bad");
    snprintf(p, sizeof p, "%s/x.jpg", dir);
    cr_image img = smooth_image(40, 32, &rng), out;
    assert_cr_ok(cr_jpeg_write(p, &img, 90));
    size_t n;
    unsigned char *good = slurp(p, &n);

    spit(p, good, n / 2);                                          /* truncated */
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "truncated"));
    assert_non_null(strstr(cr_last_error(), "x.jpg"));
    assert_null(out.pixels);

    unsigned char *bad = malloc(n);                                /* corrupt scan data */
    assert_non_null(bad);
    memcpy(bad, good, n);
    size_t sos = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (good[i] == 0xFF && good[i + 1] == 0xDA) sos = i;
    assert_true(sos > 0 && sos + 40 < n);
    for (size_t i = sos + 20; i < n - 2; i++) bad[i] = (unsigned char)(0x5A ^ (i * 37));
    spit(p, bad, n);
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "invalid JPEG"));
    free(bad);

    cr_image_free(&img);                                           /* a PNG named .jpg */
    img = smooth_image(5, 4, &rng);
    assert_cr_ok(cr_png_write(p, &img));
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "not a JPEG file"));

    write_raw_jpeg(p, 8, 8, JCS_CMYK, 4);                          /* CMYK */
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "colour space"));

    unsigned char *huge = malloc(n);                               /* 30000x30000 claimed */
    assert_non_null(huge);
    memcpy(huge, good, n);
    size_t sof = 0;
    for (size_t i = 0; i + 9 < n && !sof; i++)
        if (good[i] == 0xFF && good[i + 1] == 0xC0) sof = i;
    assert_true(sof > 0);
    huge[sof + 5] = huge[sof + 7] = 30000 >> 8;
    huge[sof + 6] = huge[sof + 8] = 30000 & 0xFF;
    spit(p, huge, n);
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "cannot be coded in a file"));
    free(huge);

    remove(p);                                                     /* a FIFO */
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EIO);
    assert_non_null(strstr(cr_last_error(), "not a regular file"));
    assert_cr_fails(cr_jpeg_read(dir, 3, &out), CR_EIO);           /* a folder */
    remove(p);
    assert_cr_fails(cr_jpeg_read(p, 3, &out), CR_EIO);             /* missing */
    assert_cr_fails(cr_jpeg_read(p, 2, &out), CR_EINVAL);
    cr_image_free(&img);
    free(good);
    assert_int_equal(rmdir(dir), 0);
}

/* ------------------------------------------------------------------ the loader */

/* Frames of different sizes on disk are refused even where they reduce to the same
 * size; the message names the frame and both sizes. */
static void loader__sizes_compared_at_full_resolution(void **state)
{
    (void)state;
    char dir[512];
    cr_test_temp_dir(dir, sizeof dir, "cr_camvid_sizes");
    make_split_dirs(dir);
    uint8_t rgb[9 * 7 * 3], lab[9 * 7];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof lab; i++) lab[i] = (uint8_t)(i % 12);
    put_frame(dir, "a.png", 8, 6, rgb, lab);
    put_frame(dir, "b.png", 9, 7, rgb, lab);  /* 9x7 and 8x6 both reduce to 4x3 at factor 2 */
    cr_dataset ds;
    cr_frames fr;
    assert_cr_fails(cr_camvid_load(dir, "train", 2, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "b.png is 9x7, unlike the split's first frame (8x6)"));
    assert_null(ds.images);
    assert_cr_fails(cr_camvid_load_frames(dir, "train", 2, 0, &fr), CR_EFORMAT);
    assert_null(fr.rgb);
    put_frame(dir, "b.png", 8, 6, rgb, lab);
    assert_cr_ok(cr_camvid_load(dir, "train", 2, 0, &ds));
    assert_int_equal(ds.full_width, 8);
    assert_int_equal(ds.full_height, 6);
    assert_int_equal(ds.width, 4);
    assert_int_equal(ds.height, 3);
    assert_int_equal(ds.factor, 2);
    cr_dataset_free(&ds);
    assert_cr_fails(cr_camvid_load(dir, "train", 7, 0, &ds), CR_EFORMAT);  /* 8x6 < 7 */
    assert_non_null(strstr(cr_last_error(), "(8x6) is smaller than the reduction factor 7"));
    remove_split_dirs(dir);
}

/* A FIFO named like a frame or a label is refused at once (not opened: that would wait
 * for a writer forever), naming the file. */
static void loader__fifo_refused(void **state)
{
    (void)state;
    char dir[512], p[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_camvid_fifo");
    make_split_dirs(dir);
    uint8_t rgb[4 * 4 * 3] = {1, 2, 3}, lab[4 * 4] = {3};
    put_frame(dir, "a.png", 4, 4, rgb, lab);
    snprintf(p, sizeof p, "%s/train/x.png", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    cr_dataset ds;
    alarm(30);  /* a loader that opens the FIFO blocks: end the test instead of hanging */
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EIO);
    assert_non_null(strstr(cr_last_error(), "x.png is not a regular file (a FIFO)"));
    assert_null(ds.names);
    remove(p);
    put_frame(dir, "x.png", 4, 4, rgb, lab);                   /* now the label is a FIFO */
    snprintf(p, sizeof p, "%s/trainannot/x.png", dir);
    remove(p);
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EIO);
    assert_non_null(strstr(cr_last_error(), "label map"));
    assert_non_null(strstr(cr_last_error(), "trainannot/x.png"));
    alarm(0);
    remove_split_dirs(dir);
}

/* JPEG and PNG frames mix in a split (labels STEM.png); a JPEG frame loads close to
 * the pixels it was written from; two frames of one stem, a truncated JPEG frame and
 * a PNG named .jpg are refused naming the file. */
static void loader__jpeg_frames(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 2);
    char dir[512], p[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_camvid_jpeg");
    make_split_dirs(dir);
    cr_image img = smooth_image(24, 16, &rng);
    uint8_t lab[24 * 16];
    for (size_t i = 0; i < sizeof lab; i++) lab[i] = (uint8_t)(cr_rng_next(&rng) % 12);
    put_frame(dir, "a.jpg", 24, 16, img.pixels, lab);
    put_frame(dir, "b.png", 24, 16, img.pixels, lab);
    put_frame(dir, "c.JPEG", 24, 16, img.pixels, lab);
    cr_frames fr;
    assert_cr_ok(cr_camvid_load_frames(dir, "train", 1, 0, &fr));
    assert_int_equal(fr.count, 3);
    assert_string_equal(fr.names[0], "a.jpg");
    assert_string_equal(fr.names[2], "c.JPEG");
    assert_memory_equal(fr.rgb + 24 * 16 * 3, img.pixels, 24 * 16 * 3);  /* the PNG: exact */
    assert_memory_equal(fr.labels, lab, sizeof lab);
    double err = 0;
    for (size_t i = 0; i < 24 * 16 * 3; i++) err += fabs((double)fr.rgb[i] - img.pixels[i]);
    assert_true(err / (24 * 16 * 3) < 3.0);
    cr_frames_free(&fr);
    put_frame(dir, "a.png", 24, 16, img.pixels, lab);                   /* a.jpg and a.png */
    assert_cr_fails(cr_camvid_load_frames(dir, "train", 1, 0, &fr), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "holds both a.jpg and a.png"));
    snprintf(p, sizeof p, "%s/train/a.png", dir);
    remove(p);
    snprintf(p, sizeof p, "%s/train/a.jpg", dir);                       /* truncated JPEG */
    size_t n;
    unsigned char *b = slurp(p, &n);
    spit(p, b, n - 30);
    free(b);
    cr_dataset ds;
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "a.jpg"));
    assert_non_null(strstr(cr_last_error(), "truncated"));
    cr_image tiny = {24, 16, 3, img.pixels};                            /* a PNG named .jpg */
    assert_cr_ok(cr_png_write(p, &tiny));
    assert_cr_fails(cr_camvid_load(dir, "train", 1, 0, &ds), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "not a JPEG file"));
    cr_image_free(&img);
    remove_split_dirs(dir);
}

/* The byte form at factor 2: rounded block means and block-majority labels (void kept
 * as 11) agree with the float form's block means and labels. */
static void loader__frames_reduced_match_dataset(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 3);
    char dir[512];
    cr_test_temp_dir(dir, sizeof dir, "cr_camvid_bytes");
    make_split_dirs(dir);
    uint8_t rgb[10 * 6 * 3], lab[10 * 6];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(cr_rng_next(&rng) >> 56);
    for (size_t i = 0; i < sizeof lab; i++) lab[i] = (uint8_t)(cr_rng_next(&rng) % 12);
    put_frame(dir, "a.png", 10, 6, rgb, lab);
    cr_frames fr;
    cr_dataset ds;
    assert_cr_ok(cr_camvid_load_frames(dir, "train", 2, 0, &fr));
    assert_cr_ok(cr_camvid_load(dir, "train", 2, 0, &ds));
    assert_int_equal(fr.width, 5);
    assert_int_equal(fr.height, 3);
    for (int64_t r = 0; r < 3; r++)
        for (int64_t c = 0; c < 5; c++) {
            for (int ch = 0; ch < 3; ch++) {
                int sum = 0;
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) sum += rgb[((r * 2 + i) * 10 + c * 2 + j) * 3 + ch];
                assert_int_equal(fr.rgb[(r * 5 + c) * 3 + ch], (sum + 2) / 4);
                assert_true(fabs(byte_of(ds.images[(ch * 3 + r) * 5 + c], ch) - sum / 4.0) < 1e-3);
            }
            const int l = fr.labels[r * 5 + c];
            assert_int_equal(ds.labels[r * 5 + c], l == 11 ? CR_CAMVID_IGNORE : l);
        }
    cr_frames_free(&fr);
    cr_dataset_free(&ds);
    remove_split_dirs(dir);
}

/* ------------------------------------------------------------------ augmentation */

/* A frames struct of one synthetic w x h frame: R = column, G = row, B = 200 (so
 * pixel values encode coordinates), labels from the set {0, 3, 7, 11} at random. */
static cr_frames coord_frames(int64_t w, int64_t h, cr_rng *rng)
{
    cr_frames fr = {0};
    fr.count = 1;
    fr.height = fr.full_height = h;
    fr.width = fr.full_width = w;
    fr.factor = 1;
    fr.rgb = malloc((size_t)(w * h * 3));
    fr.labels = malloc((size_t)(w * h));
    assert_non_null(fr.rgb);
    assert_non_null(fr.labels);
    static const uint8_t set[4] = {0, 3, 7, 11};
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            fr.rgb[(y * w + x) * 3 + 0] = (uint8_t)x;
            fr.rgb[(y * w + x) * 3 + 1] = (uint8_t)y;
            fr.rgb[(y * w + x) * 3 + 2] = 200;
            fr.labels[y * w + x] = set[cr_rng_next(rng) % 4];
        }
    return fr;
}

/* Frees what coord_frames allocated. */
static void free_coord_frames(cr_frames *fr)
{
    free(fr->rgb);
    free(fr->labels);
}

/* Runs one training batch of n samples of side S from fr with seed; x and lab allocated. */
static void train_batch(const cr_frames *fr, const cr_augment *a, uint64_t seed, int64_t n,
                        cr_tensor *x, int32_t **lab)
{
    int64_t idx[16] = {0};
    assert_true(n <= 16);
    cr_rng rng;
    cr_rng_seed(&rng, seed);
    assert_cr_ok(cr_tensor_alloc4(x, n, 3, a->crop, a->crop));
    *lab = malloc((size_t)(n * a->crop * a->crop) * sizeof **lab);
    assert_non_null(*lab);
    assert_cr_ok(cr_frames_train_batch(fr, idx, n, a, &rng, x, *lab));
}

/* The same seed gives the same bytes; another seed differs (images and labels). */
static void augment__reproducible(void **state)
{
    (void)state;
    const uint64_t seed = test_seed();
    cr_rng rng;
    cr_rng_seed(&rng, seed);
    cr_frames fr = coord_frames(60, 40, &rng);
    cr_augment a;
    cr_augment_default(&a, 32);
    cr_tensor x1 = {0}, x2 = {0}, x3 = {0};
    int32_t *l1, *l2, *l3;
    train_batch(&fr, &a, seed + 10, 8, &x1, &l1);
    train_batch(&fr, &a, seed + 10, 8, &x2, &l2);
    train_batch(&fr, &a, seed + 11, 8, &x3, &l3);
    assert_memory_equal(x1.data, x2.data, x1.numel * sizeof(float));
    assert_memory_equal(l1, l2, 8 * 32 * 32 * sizeof(int32_t));
    assert_true(memcmp(x1.data, x3.data, x1.numel * sizeof(float)) != 0);
    assert_true(memcmp(l1, l3, 8 * 32 * 32 * sizeof(int32_t)) != 0);
    cr_tensor_free(&x1);
    cr_tensor_free(&x2);
    cr_tensor_free(&x3);
    free(l1);
    free(l2);
    free(l3);
    free_coord_frames(&fr);
}

/* At scale 1 a crop is the sub-image exactly (every byte, every label); flipped, column
 * j holds source column x0 + S-1-j. The crop positions spread over the whole frame. */
static void augment__scale_one_is_exact_sub_image(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 4);
    const int64_t W = 50, H = 30, S = 16;
    cr_frames fr = coord_frames(W, H, &rng);
    cr_augment a;
    cr_augment_default(&a, S);
    a.scale_min = a.scale_max = 1.0f;
    a.brightness = a.contrast = 0.0f;
    float *x = malloc((size_t)(3 * S * S) * sizeof *x);
    int32_t *lab = malloc((size_t)(S * S) * sizeof *lab);
    assert_non_null(x);
    assert_non_null(lab);
    int flips = 0, min_x0 = 999, max_x0 = -1, min_y0 = 999, max_y0 = -1;
    const int trials = cr_test_count(200);
    for (int t = 0; t < trials; t++) {
        cr_view v;
        cr_augment_draw(&a, H, W, &rng, &v);
        assert_int_equal(v.h, S);
        assert_true(v.y0 >= 0 && v.y0 <= H - S && v.x0 >= 0 && v.x0 <= W - S);
        assert_cr_ok(cr_frames_render(&fr, 0, &v, S, S, x, lab));
        flips += v.flip;
        if (v.x0 < min_x0) min_x0 = (int)v.x0;
        if (v.x0 > max_x0) max_x0 = (int)v.x0;
        if (v.y0 < min_y0) min_y0 = (int)v.y0;
        if (v.y0 > max_y0) max_y0 = (int)v.y0;
        for (int64_t i = 0; i < S; i++)
            for (int64_t j = 0; j < S; j++) {
                const int64_t sy = v.y0 + i, sx = v.x0 + (v.flip ? S - 1 - j : j);
                for (int c = 0; c < 3; c++) {
                    const float want = ((float)fr.rgb[(sy * W + sx) * 3 + c] / 255.0f -
                                        mean_rgb[c]) / std_rgb[c];
                    if (x[(c * S + i) * S + j] != want)
                        fail_msg("view (%lld, %lld) flip %d: pixel (%lld, %lld) channel %d is "
                                 "%.8g, expected %.8g", (long long)v.y0, (long long)v.x0,
                                 v.flip, (long long)i, (long long)j, c,
                                 (double)x[(c * S + i) * S + j], (double)want);
                }
                const int l = fr.labels[sy * W + sx];
                assert_int_equal(lab[i * S + j], l == 11 ? CR_CAMVID_IGNORE : l);
            }
    }
    if (trials >= 100) {
        assert_true(flips > trials / 4 && flips < 3 * trials / 4);
        assert_true(min_x0 <= 3 && max_x0 >= W - S - 3);
        assert_true(min_y0 <= 2 && max_y0 >= H - S - 2);
    }
    free(x);
    free(lab);
    free_coord_frames(&fr);
}

/* At random scales (jitter off), each output pixel inside the frame decodes (R, G) to
 * the source point augment.h states, flipped or not; its label is the label of the
 * pixel nearest that point, so labels are only values present in the source; pixels
 * outside the frame are padding (0 in every channel, ignore). */
static void augment__geometry_and_labels(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 5);
    const int64_t W = 41, H = 23, S = 24;
    cr_frames fr = coord_frames(W, H, &rng);
    cr_augment a;
    cr_augment_default(&a, S);
    a.scale_min = 0.3f;  /* windows from 16 to 80 pixels: larger than the frame too */
    a.scale_max = 1.5f;
    a.brightness = a.contrast = 0.0f;
    float *x = malloc((size_t)(3 * S * S) * sizeof *x);
    int32_t *lab = malloc((size_t)(S * S) * sizeof *lab);
    assert_non_null(x);
    assert_non_null(lab);
    int64_t padded = 0, checked = 0;
    const int trials = cr_test_count(200);
    for (int t = 0; t < trials; t++) {
        cr_view v;
        cr_augment_draw(&a, H, W, &rng, &v);
        assert_cr_ok(cr_frames_render(&fr, 0, &v, S, S, x, lab));
        for (int64_t i = 0; i < S; i++)
            for (int64_t j = 0; j < S; j++) {
                const int64_t jj = v.flip ? S - 1 - j : j;
                const double py = v.y0 + (i + 0.5) * v.h / S - 0.5;
                const double px = v.x0 + (jj + 0.5) * v.w / S - 0.5;
                const int32_t l = lab[i * S + j];
                const float *px0 = x + i * S + j;
                if (py < -0.5 || py >= H - 0.5 || px < -0.5 || px >= W - 0.5) {
                    assert_int_equal(l, CR_CAMVID_IGNORE);
                    for (int c = 0; c < 3; c++) assert_true(px0[c * S * S] == 0.0f);
                    padded++;
                    continue;
                }
                const double r = byte_of(px0[0], 0), g = byte_of(px0[S * S], 1);
                const double wx = fmin(fmax(px, 0), W - 1), wy = fmin(fmax(py, 0), H - 1);
                if (fabs(r - wx) > 1e-3 || fabs(g - wy) > 1e-3 || fabs(byte_of(px0[2 * S * S], 2) - 200) > 1e-3)
                    fail_msg("view %lldx%lld at (%lld, %lld) flip %d: pixel (%lld, %lld) decodes "
                             "to (x %.4f, y %.4f), expected (%.4f, %.4f)", (long long)v.w,
                             (long long)v.h, (long long)v.y0, (long long)v.x0, v.flip,
                             (long long)i, (long long)j, r, g, wx, wy);
                assert_true(l == 0 || l == 3 || l == 7 || l == CR_CAMVID_IGNORE);
                const double fy = wy - floor(wy), fx = wx - floor(wx);
                if (fabs(fy - 0.5) < 1e-3 || fabs(fx - 0.5) < 1e-3) continue;  /* a tie */
                const int src = fr.labels[(int64_t)floor(wy + 0.5) * W + (int64_t)floor(wx + 0.5)];
                assert_int_equal(l, src == 11 ? CR_CAMVID_IGNORE : src);
                checked++;
            }
    }
    assert_true(checked > 0);
    if (trials >= 100) assert_true(padded > 0);
    free(x);
    free(lab);
    free_coord_frames(&fr);
}

/* Jitter on a flat grey frame: every sample's values lie in [0.8 v - 0.2, 1.2 v + 0.2]
 * (clamped to [0, 1]); over many samples the mean stays near v and the spread is that
 * of the two uniform draws (within generous bounds). */
static void augment__jitter_bounded(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 6);
    const int64_t W = 20, H = 20, S = 4;
    cr_frames fr = coord_frames(W, H, &rng);
    memset(fr.rgb, 128, (size_t)(W * H * 3));
    cr_augment a;
    cr_augment_default(&a, S);
    a.scale_min = a.scale_max = 1.0f;
    float x[3 * 4 * 4];
    int32_t lab[16];
    const double v = 128.0 / 255.0;
    const int trials = cr_test_count(4000);
    double sum = 0, sum2 = 0, lo = 1, hi = 0;
    for (int t = 0; t < trials; t++) {
        cr_view view;
        cr_augment_draw(&a, H, W, &rng, &view);
        assert_true(view.alpha >= 0.8f && view.alpha <= 1.2f);
        assert_true(view.beta >= -0.2f && view.beta <= 0.2f);
        assert_cr_ok(cr_frames_render(&fr, 0, &view, S, S, x, lab));
        for (int c = 0; c < 3; c++) {
            const double got = byte_of(x[c * 16 + 5], c) / 255.0;
            assert_true(got >= 0.8 * v - 0.2 - 1e-5 && got <= 1.2 * v + 0.2 + 1e-5);
            assert_true(fabs(byte_of(x[c * 16], c) / 255.0 - got) < 1e-5);  /* one per sample */
            if (c == 0) {
                sum += got;
                sum2 += got * got;
                lo = fmin(lo, got);
                hi = fmax(hi, got);
            }
        }
    }
    const double mean = sum / trials, var = sum2 / trials - mean * mean;
    /* var of alpha*v + beta: v^2 * 0.4^2/12 + 0.4^2/12 = 0.0170 */
    const double want_var = (v * v + 1.0) * 0.16 / 12.0;
    if (trials >= 1000) {
        assert_true(fabs(mean - v) < 0.01);
        assert_true(var > 0.8 * want_var && var < 1.2 * want_var);
        assert_true(lo < v - 0.25 && hi > v + 0.25);
    }
    free_coord_frames(&fr);
}

/* Evaluation batches at the frames' own size equal cr_camvid_load's tensors bit for bit;
 * at half size they hold the nearest labels and use no randomness. */
static void augment__eval_matches_loader(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 7);
    char dir[512];
    cr_test_temp_dir(dir, sizeof dir, "cr_camvid_eval");
    make_split_dirs(dir);
    uint8_t rgb[2][14 * 10 * 3], lab[2][14 * 10];
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof rgb[k]; i++) rgb[k][i] = (uint8_t)(cr_rng_next(&rng) >> 56);
        for (size_t i = 0; i < sizeof lab[k]; i++) lab[k][i] = (uint8_t)(cr_rng_next(&rng) % 12);
        put_frame(dir, k ? "b.png" : "a.png", 14, 10, rgb[k], lab[k]);
    }
    cr_frames fr;
    cr_dataset ds;
    assert_cr_ok(cr_camvid_load_frames(dir, "train", 1, 0, &fr));
    assert_cr_ok(cr_camvid_load(dir, "train", 1, 0, &ds));
    int64_t idx[2] = {1, 0};
    cr_tensor x = {0}, ref = {0};
    int32_t l[2 * 14 * 10], lref[2 * 14 * 10];
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 10, 14));
    assert_cr_ok(cr_tensor_alloc4(&ref, 2, 3, 10, 14));
    assert_cr_ok(cr_frames_eval_batch(&fr, idx, 2, &x, l));
    assert_cr_ok(cr_dataset_batch(&ds, idx, 2, NULL, &ref, lref));
    assert_memory_equal(x.data, ref.data, x.numel * sizeof(float));
    assert_memory_equal(l, lref, sizeof l);
    cr_tensor_free(&x);
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 3, 5, 7));              /* half size */
    assert_cr_ok(cr_frames_eval_batch(&fr, idx, 1, &x, l));
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 7; j++) {   /* point 2i + 0.5: a tie, rounded up to 2i + 1 */
            const int src = lab[1][(2 * i + 1) * 14 + 2 * j + 1];
            assert_int_equal(l[i * 7 + j], src == 11 ? CR_CAMVID_IGNORE : src);
        }
    cr_tensor_free(&x);
    cr_tensor_free(&ref);
    cr_frames_free(&fr);
    cr_dataset_free(&ds);
    remove_split_dirs(dir);
}

/* Bad settings and shapes are refused naming what was wrong. */
static void augment__bad_arguments(void **state)
{
    (void)state;
    cr_rng rng;
    cr_rng_seed(&rng, test_seed() + 8);
    cr_frames fr = coord_frames(12, 8, &rng);
    cr_augment a;
    cr_augment_default(&a, 4);
    cr_tensor x = {0};
    int32_t lab[2 * 16];
    int64_t idx[2] = {0, 0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 4, 4));
    assert_cr_ok(cr_frames_train_batch(&fr, idx, 2, &a, &rng, &x, lab));
    a.crop = 0;
    assert_cr_fails(cr_frames_train_batch(&fr, idx, 2, &a, &rng, &x, lab), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "crop = 0"));
    cr_augment_default(&a, 4);
    a.scale_min = 2.0f;
    assert_cr_fails(cr_augment_check(&a), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "scale range"));
    cr_augment_default(&a, 4);
    a.flip_p = NAN;
    assert_cr_fails(cr_augment_check(&a), CR_EINVAL);
    cr_augment_default(&a, 5);                                   /* x is 4x4, crop 5 */
    assert_cr_fails(cr_frames_train_batch(&fr, idx, 2, &a, &rng, &x, lab), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "x must be [2, 3, 5, 5], got [2, 3, 4, 4]"));
    cr_augment_default(&a, 4);
    idx[1] = 1;                                                  /* one frame only */
    assert_cr_fails(cr_frames_train_batch(&fr, idx, 2, &a, &rng, &x, lab), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "idx[1] = 1"));
    cr_view v = {0, 0, 0, 4, 0, 1.0f, 0.0f};                     /* empty window */
    assert_cr_fails(cr_frames_render(&fr, 0, &v, 4, 4, x.data, lab), CR_EINVAL);
    cr_tensor_free(&x);
    free_coord_frames(&fr);
}

/* ------------------------------------------------------------------ real CamVid */

/* The first frames of CamVid-q92 (JPEG) load at 480x360 and lie close to the same frames
 * of the PNG CamVid; labels agree exactly; a training batch of them renders. Skipped
 * when CR_CAMVID_DIR (set by tests/meson.build where ../shared/data exists) is unset. */
static void camvid__real_q92_frames(void **state)
{
    (void)state;
    const char *root = getenv("CR_CAMVID_DIR");
    char q92[1024], png[1024];
    snprintf(q92, sizeof q92, "%s/CamVid-q92", root ? root : "");
    snprintf(png, sizeof png, "%s/CamVid", root ? root : "");
    struct stat st;
    if (!root || stat(q92, &st) != 0) {
        printf("camvid__real_q92_frames: CR_CAMVID_DIR/CamVid-q92 not found; skipped\n");
        skip();
    }
    cr_frames fr;
    assert_cr_ok(cr_camvid_load_frames(q92, "train", 1, 3, &fr));
    assert_int_equal(fr.count, 3);
    assert_int_equal(fr.width, 480);
    assert_int_equal(fr.height, 360);
    assert_true(cr_is_jpeg_name(fr.names[0]));
    if (stat(png, &st) == 0) {
        cr_frames ref;
        assert_cr_ok(cr_camvid_load_frames(png, "train", 1, 3, &ref));
        const size_t n = (size_t)(3 * 480 * 360);
        double err = 0;
        for (size_t i = 0; i < n; i++) err += fabs((double)fr.rgb[i] - ref.rgb[i]);
        printf("camvid__real_q92_frames: mean |JPEG q92 - PNG| = %.3f (bytes)\n", err / (double)n);
        assert_true(err / (double)n < 4.0);
        assert_memory_equal(fr.labels, ref.labels, (size_t)(3 * 480 * 360));
        cr_frames_free(&ref);
    }
    cr_augment a;
    cr_augment_default(&a, 64);
    cr_tensor x = {0};
    int32_t *lab;
    train_batch(&fr, &a, test_seed(), 3, &x, &lab);
    int64_t real = 0;
    for (int64_t i = 0; i < 3 * 64 * 64; i++) {
        assert_true(lab[i] == CR_CAMVID_IGNORE || (lab[i] >= 0 && lab[i] < CR_CAMVID_CLASSES));
        real += lab[i] != CR_CAMVID_IGNORE;
    }
    assert_true(real > 0);
    cr_tensor_free(&x);
    free(lab);
    cr_frames_free(&fr);
}

int main(void)
{
    test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jpeg__pillow_reference),
        cmocka_unit_test(jpeg__round_trip_close),
        cmocka_unit_test(jpeg__bad_input),
        cmocka_unit_test(loader__sizes_compared_at_full_resolution),
        cmocka_unit_test(loader__fifo_refused),
        cmocka_unit_test(loader__jpeg_frames),
        cmocka_unit_test(loader__frames_reduced_match_dataset),
        cmocka_unit_test(augment__reproducible),
        cmocka_unit_test(augment__scale_one_is_exact_sub_image),
        cmocka_unit_test(augment__geometry_and_labels),
        cmocka_unit_test(augment__jitter_bounded),
        cmocka_unit_test(augment__eval_matches_loader),
        cmocka_unit_test(augment__bad_arguments),
        cmocka_unit_test(camvid__real_q92_frames),
    };
    return cr_run_tests("dataset", tests);
}
