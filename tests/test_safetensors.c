/* test_safetensors.c — the safetensors reader and writer, and the JSON parser under them. */
#include "cr_test.h"
#include "test_files.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "json.h"
#include "rng.h"
#include "safetensors.h"
#include "tensor.h"

/* ------------------------------------------------------------------ helpers */

/* A xorshift64 generator seeded from the clock (the seed is printed on failure). */
static uint64_t rng_state;
static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
/* A random float in [-1, 1) that is never exactly zero. */
static float next_float(void)
{
    float v = (float)((double)(next_u64() >> 11) * 0x1p-52 - 1.0);
    return v == 0.0f ? 0.5f : v;
}

/* Fills t with fresh random nonzero values. */
static void fill_random(cr_tensor *t)
{
    for (size_t i = 0; i < t->numel; i++) t->data[i] = next_float();
}

/* A file image: 8-byte little-endian length of header, header, then data_len bytes of data. */
static unsigned char *build_file(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t hlen = strlen(header);
    unsigned char *b = malloc(8 + hlen + data_len + 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, header, hlen);
    if (data_len) {
        if (data) memcpy(b + 8 + hlen, data, data_len);
        else memset(b + 8 + hlen, 0x3f, data_len);
    }
    *len = 8 + hlen + data_len;
    return b;
}

/* Parses header + data and returns the status (the file object, if any, is freed). */
static cr_status parse_header(const char *header, size_t data_len)
{
    size_t len;
    unsigned char *b = build_file(header, NULL, data_len, &len);
    cr_st_file *f = NULL;
    cr_status st = cr_st_parse(&f, b, len, "case.safetensors");
    if (st == CR_OK) assert_non_null(f);
    else assert_null(f);
    cr_st_free(f);
    free(b);
    return st;
}

/* ------------------------------------------------------------------ round trip */

/* Writes tensors of ranks 1..4 with metadata, reads them back and compares everything. */
static void safetensors__round_trip(void **state)
{
    (void)state;
    rng_state = (uint64_t)time(NULL) * 2654435761u | 1;
    uint64_t seed = rng_state;
    const char *names[] = {"conv1.weight", "conv1.bias", "x", "caf\xc3\xa9 \"q\"\\"};
    const int64_t shapes[][4] = {{5, 3, 3, 3}, {5}, {2, 3, 7, 11}, {1, 13}};
    const int ranks[] = {4, 1, 4, 2};
    enum { N = 4 };
    cr_tensor t[N], back;
    char dir[512], path[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_st");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    cr_st_writer *w;
    assert_cr_ok(cr_st_writer_new(&w));
    for (int i = 0; i < N; i++) {
        assert_cr_ok(cr_tensor_alloc(&t[i], ranks[i], shapes[i]));
        fill_random(&t[i]);
        assert_cr_ok(cr_st_writer_add(w, names[i], &t[i]));
    }
    assert_cr_ok(cr_st_writer_meta(w, "format", "pt"));
    assert_cr_ok(cr_st_writer_meta(w, "note", "line\nbreak \x01 tab\t \"quoted\" \\ \xe2\x82\xac"));
    assert_cr_ok(cr_st_writer_meta(w, "empty", ""));
    assert_cr_ok(cr_st_writer_save(w, path));
    cr_st_writer_free(w);
    struct stat sb;
    assert_int_not_equal(stat(tmp, &sb), 0);  /* no temporary left behind */

    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    assert_int_equal(cr_st_count(f), N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(cr_st_name(f, i), names[i]);
        assert_true(cr_st_has(f, names[i]));
        assert_cr_ok(cr_st_get(f, names[i], &back));
        assert_true(cr_tensor_same_shape(&back, &t[i]));
        if (memcmp(back.data, t[i].data, t[i].numel * sizeof(float)) != 0)
            fail_msg("tensor '%s' differs after the round trip (seed %llu)", names[i],
                     (unsigned long long)seed);
        cr_tensor_free(&back);
        cr_tensor_free(&t[i]);
    }
    assert_null(cr_st_name(f, N));
    assert_false(cr_st_has(f, "conv1"));
    assert_string_equal(cr_st_meta(f, "format"), "pt");
    assert_string_equal(cr_st_meta(f, "note"), "line\nbreak \x01 tab\t \"quoted\" \\ \xe2\x82\xac");
    assert_string_equal(cr_st_meta(f, "empty"), "");
    assert_null(cr_st_meta(f, "missing"));
    assert_cr_fails(cr_st_get(f, "nope", &back), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "nope"));
    assert_null(back.data);
    cr_st_free(f);
    cr_test_remove_temp_dir(dir);
}

/* The file layout: header length a multiple of 8, space padded, data contiguous little-endian. */
static void safetensors__file_layout(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_st");
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    cr_tensor a, b;
    const int64_t sa[1] = {3}, sb[2] = {2, 1};
    assert_cr_ok(cr_tensor_alloc(&a, 1, sa));
    assert_cr_ok(cr_tensor_alloc(&b, 2, sb));
    a.data[0] = 1.0f, a.data[1] = -2.0f, a.data[2] = 0.5f;
    b.data[0] = 3.0f, b.data[1] = 0.25f;
    cr_st_writer *w;
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "a", &a));
    assert_cr_ok(cr_st_writer_add(w, "b", &b));
    assert_cr_ok(cr_st_writer_save(w, path));
    cr_st_writer_free(w);
    cr_tensor_free(&a);
    cr_tensor_free(&b);

    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(n, 8 + hlen + 5 * 4);
    assert_int_equal(buf[8], '{');
    char header[1024];
    assert_true(hlen < sizeof header);
    memcpy(header, buf + 8, hlen);
    header[hlen] = '\0';
    char *close = strrchr(header, '}');
    assert_non_null(close);
    for (char *c = close + 1; *c; c++) assert_int_equal(*c, ' ');
    assert_non_null(strstr(header, "\"data_offsets\":[0,12]"));
    assert_non_null(strstr(header, "\"data_offsets\":[12,20]"));
    assert_non_null(strstr(header, "\"shape\":[2,1]"));
    /* -2.0f is 0xC0000000, stored little-endian as the second element of "a". */
    const unsigned char minus_two[4] = {0x00, 0x00, 0x00, 0xC0};
    assert_memory_equal(buf + 8 + hlen + 4, minus_two, 4);
    cr_test_remove_temp_dir(dir);
}

/* The writer refuses bad names and keys; saving into a missing directory is CR_EIO. */
static void safetensors__writer_refuses(void **state)
{
    (void)state;
    cr_tensor t;
    const int64_t s[1] = {2};
    assert_cr_ok(cr_tensor_alloc(&t, 1, s));
    t.data[0] = 1.0f, t.data[1] = 2.0f;
    cr_st_writer *w;
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "t", &t));
    assert_cr_fails(cr_st_writer_add(w, "t", &t), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "duplicate"));
    assert_cr_fails(cr_st_writer_add(w, "", &t), CR_EINVAL);
    assert_cr_fails(cr_st_writer_add(w, "__metadata__", &t), CR_EINVAL);
    assert_cr_fails(cr_st_writer_add(w, "bad\xff", &t), CR_EINVAL);
    assert_cr_ok(cr_st_writer_meta(w, "k", "v"));
    assert_cr_fails(cr_st_writer_meta(w, "k", "w"), CR_EINVAL);
    const char *path = "/nonexistent-cr-dir/x.safetensors";
    assert_cr_fails(cr_st_writer_save(w, path), CR_EIO);
    assert_non_null(strstr(cr_last_error(), path));
    assert_non_null(strstr(cr_last_error(), "No such file"));
    assert_cr_fails(cr_st_load(&(cr_st_file *){NULL}, path), CR_EIO);
    assert_non_null(strstr(cr_last_error(), path));
    cr_st_writer_free(w);
    cr_tensor_free(&t);
}

/* ------------------------------------------------------------------ dtypes */

/* F64, F16 and BF16 data built by hand convert to the expected float32 values. */
static void safetensors__dtype_conversion(void **state)
{
    (void)state;
    /* F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), +inf, 1/3. */
    const uint16_t h[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x3555, 0x7E00};
    const float h_want[] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0x1p-14f, INFINITY, 0x1.554p-2f};
    /* BF16: 1, -5, 3.140625, -0. */
    const uint16_t bf[] = {0x3F80, 0xC0A0, 0x4049, 0x8000};
    const float bf_want[] = {1.0f, -5.0f, 3.140625f, -0.0f};
    /* F64: 1.5, pi (rounded to float32), 1e300 (overflows to inf), -1e-3. */
    const double d[] = {1.5, 3.141592653589793, 1e300, -1e-3};
    const float d_want[] = {1.5f, 3.14159274f, INFINITY, -0.001f};
    unsigned char data[16 + 8 + 32 + 4];
    size_t k = 0;
    for (size_t i = 0; i < 8; i++) data[k++] = (unsigned char)h[i], data[k++] = (unsigned char)(h[i] >> 8);
    for (size_t i = 0; i < 4; i++) data[k++] = (unsigned char)bf[i], data[k++] = (unsigned char)(bf[i] >> 8);
    for (size_t i = 0; i < 4; i++) {
        uint64_t bits;
        memcpy(&bits, &d[i], 8);
        for (int j = 0; j < 8; j++) data[k++] = (unsigned char)(bits >> (8 * j));
    }
    const unsigned char scalar[4] = {0x00, 0x00, 0x20, 0xC1}; /* -10.0f little-endian */
    memcpy(data + k, scalar, 4);
    k += 4;
    assert_int_equal(k, sizeof data);
    const char *header =
        "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,4],\"data_offsets\":[0,16]},"
        " \"bf\":{\"shape\":[4],\"dtype\":\"BF16\",\"data_offsets\":[16,24]},"
        " \"d\":{\"data_offsets\":[24,56],\"dtype\":\"F64\",\"shape\":[1,2,1,2]},"
        " \"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[56,60]}}   ";
    size_t len;
    unsigned char *file = build_file(header, data, sizeof data, &len);
    cr_st_file *f;
    assert_cr_ok(cr_st_parse(&f, file, len, "dtypes.safetensors"));
    free(file);  /* the parsed file must not depend on the caller's buffer */
    cr_tensor t;
    assert_cr_ok(cr_st_get(f, "h", &t));
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 2);
    assert_int_equal(t.shape[1], 4);
    for (int i = 0; i < 7; i++) assert_true(t.data[i] == h_want[i]);
    assert_true(isnan(t.data[7]));
    cr_tensor_free(&t);
    assert_cr_ok(cr_st_get(f, "bf", &t));
    for (int i = 0; i < 4; i++) assert_true(t.data[i] == bf_want[i]);
    assert_true(signbit(t.data[3]));
    cr_tensor_free(&t);
    assert_cr_ok(cr_st_get(f, "d", &t));
    assert_int_equal(t.ndim, 4);
    for (int i = 0; i < 4; i++) assert_true(t.data[i] == d_want[i]);
    cr_tensor_free(&t);
    assert_cr_ok(cr_st_get(f, "s", &t));  /* rank 0 becomes rank 1 of size 1 */
    assert_int_equal(t.ndim, 1);
    assert_int_equal(t.numel, 1);
    assert_true(t.data[0] == -10.0f);
    cr_tensor_free(&t);
    cr_st_free(f);
}

/* ------------------------------------------------------------------ typed tensors */

/* The whole file at path into a new buffer (*len bytes). */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

/* Element i of a typed tensor as the float64 PyTorch's .double() gives (F32/F16/BF16/F64
 * exactly, integers exactly). */
static double typed_as_double(const cr_dtensor *t, size_t i)
{
    switch (t->dtype) {
    case CR_DT_F32: return cr_dtensor_f32(t)[i];
    case CR_DT_F16: return cr_f16_to_f32(cr_dtensor_u16(t)[i]);
    case CR_DT_BF16: return cr_bf16_to_f32(cr_dtensor_u16(t)[i]);
    case CR_DT_F64: return cr_dtensor_f64(t)[i];
    case CR_DT_I8: return cr_dtensor_i8(t)[i];
    case CR_DT_U8: return cr_dtensor_u8(t)[i];
    case CR_DT_I32: return cr_dtensor_i32(t)[i];
    default: return (double)cr_dtensor_i64(t)[i];
    }
}

/* A file PyTorch's tensors were written into (reference/make_golden_dtypes.py): every dtype
 * reads back with its dtype and shape, equal to torch's float64 twin; the I64 counter of a
 * BatchNorm loads; and writing every tensor back typed reproduces the file byte for byte. */
static void safetensors__golden_every_dtype(void **state)
{
    (void)state;
    const char *gd = getenv("CR_GOLDEN_DIR");
    if (!gd || !*gd) fail_msg("CR_GOLDEN_DIR is not set: run the tests through meson test");
    char path[1024], dir[512], out[1024];
    snprintf(path, sizeof path, "%s/dtype_tensors.safetensors", gd);
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    static const struct { const char *name; cr_dtype dt; int ndim; } want[] = {
        {"bn.running_var", CR_DT_F32, 1}, {"bn.num_batches_tracked", CR_DT_I64, 0},
        {"conv.weight_q", CR_DT_I8, 4}, {"conv.weight_scale", CR_DT_F64, 1},
        {"conv.weight_zero_point", CR_DT_I64, 1}, {"act_q", CR_DT_U8, 4}, {"half", CR_DT_F16, 2},
        {"bfloat", CR_DT_BF16, 2}, {"double", CR_DT_F64, 1}, {"int32", CR_DT_I32, 1},
        {"int64", CR_DT_I64, 1}, {"mask", CR_DT_U8, 2}, {"scalar_f16", CR_DT_F16, 0},
        {"empty", CR_DT_F32, 2},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        cr_dtype dt;
        int ndim;
        assert_cr_ok(cr_st_info(f, want[k].name, &dt, &ndim, NULL));
        if (dt != want[k].dt || ndim != want[k].ndim)
            fail_msg("'%s': %s rank %d, expected %s rank %d", want[k].name, cr_dtype_name(dt), ndim,
                     cr_dtype_name(want[k].dt), want[k].ndim);
    }
    int checked = 0;
    for (int i = 0; i < cr_st_count(f); i++) {
        const char *name = cr_st_name(f, i);
        char twin[256];
        snprintf(twin, sizeof twin, "%s.f64", name);
        if (!cr_st_has(f, twin)) continue;
        cr_dtensor t, d;
        assert_cr_ok(cr_st_get_typed(f, name, &t));
        assert_cr_ok(cr_st_get_typed(f, twin, &d));
        assert_int_equal(d.numel, t.numel);
        for (size_t j = 0; j < t.numel; j++)
            if (typed_as_double(&t, j) != cr_dtensor_f64(&d)[j])
                fail_msg("'%s'[%zu] = %.17g, PyTorch %.17g", name, j, typed_as_double(&t, j),
                         cr_dtensor_f64(&d)[j]);
        cr_tensor ft;  /* the float32 reader agrees: float32 of torch's value */
        if (t.numel == 0) {
            assert_cr_fails(cr_st_get(f, name, &ft), CR_EINVAL);
        } else {
            assert_cr_ok(cr_st_get(f, name, &ft));
            for (size_t j = 0; j < t.numel; j++) {
                double v = cr_dtensor_f64(&d)[j];
                float w = fabs(v) > 0x1.fffffefffffffp127 ? (float)copysign(INFINITY, v) : (float)v;
                if (memcmp(&ft.data[j], &w, 4) != 0)
                    fail_msg("cr_st_get '%s'[%zu] = %a, expected %a", name, j, ft.data[j], w);
            }
            cr_tensor_free(&ft);
        }
        checked += t.numel > 0;
        cr_dtensor_free(&t);
        cr_dtensor_free(&d);
    }
    assert_true(checked >= 12);
    cr_dtensor c;
    assert_cr_ok(cr_st_get_typed(f, "bn.num_batches_tracked", &c));
    assert_true(c.ndim == 0 && c.numel == 1 && cr_dtensor_i64(&c)[0] == 3);
    cr_dtensor_free(&c);
    assert_cr_ok(cr_st_get_typed(f, "int64", &c));
    const int64_t i64[6] = {INT64_MIN, INT64_MAX, -1, 0, ((int64_t)1 << 53) + 1, 3};
    assert_memory_equal(cr_dtensor_i64(&c), i64, sizeof i64);
    cr_dtensor_free(&c);
    cr_tensor counter;
    assert_cr_ok(cr_st_get(f, "bn.num_batches_tracked", &counter));
    assert_true(counter.ndim == 1 && counter.numel == 1 && counter.data[0] == 3.0f);
    cr_tensor_free(&counter);

    /* Typed read, typed write, same bytes. */
    cr_test_temp_dir(dir, sizeof dir, "cr_st");
    snprintf(out, sizeof out, "%s/again.safetensors", dir);
    cr_st_writer *w;
    assert_cr_ok(cr_st_writer_new(&w));
    const char *keys[] = {"description", "act_q.scale", "act_q.zero_point", "torch_version"};
    for (int k = 0; k < 4; k++) assert_cr_ok(cr_st_writer_meta(w, keys[k], cr_st_meta(f, keys[k])));
    for (int i = 0; i < cr_st_count(f); i++) {
        assert_cr_ok(cr_st_get_typed(f, cr_st_name(f, i), &c));
        assert_cr_ok(cr_st_writer_add_typed(w, cr_st_name(f, i), &c));
        cr_dtensor_free(&c);
    }
    assert_cr_ok(cr_st_writer_save(w, out));
    cr_st_writer_free(w);
    size_t n1, n2;
    unsigned char *a = slurp(path, &n1), *b = slurp(out, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a);
    free(b);
    cr_st_free(f);
    cr_test_remove_temp_dir(dir);
}

/* Random tensors of every dtype (random bytes: NaN payloads, extreme integers), ranks
 * 0..4 and empty ones, written typed and read back bit for bit, beside float32 ones. */
static void safetensors__typed_round_trip(void **state)
{
    (void)state;
    uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_st");
    snprintf(path, sizeof path, "%s/typed.safetensors", dir);
    enum { N = 3 * CR_DT_COUNT };
    cr_dtensor t[N];
    cr_tensor plain;
    const int64_t ps[2] = {3, 5};
    assert_cr_ok(cr_tensor_alloc(&plain, 2, ps));
    fill_random(&plain);
    cr_st_writer *w;
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "plain", &plain));
    for (int i = 0; i < N; i++) {
        int ndim = (int)cr_rng_int(&r, 0, 4);
        int64_t shape[4];
        for (int d = 0; d < ndim; d++) shape[d] = cr_rng_int(&r, i % 3 == 2 ? 0 : 1, 5);
        assert_cr_ok(cr_dtensor_alloc(&t[i], (cr_dtype)(i % CR_DT_COUNT), ndim, shape));
        unsigned char *bytes = t[i].data;
        for (size_t j = 0; j < cr_dtensor_bytes(&t[i]); j++) bytes[j] = (unsigned char)cr_rng_next(&r);
        char name[32];
        snprintf(name, sizeof name, "t%d.%s", i, cr_dtype_name(t[i].dtype));
        assert_cr_ok(cr_st_writer_add_typed(w, name, &t[i]));
    }
    assert_cr_fails(cr_st_writer_add_typed(w, "plain", &t[0]), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "duplicate"));
    assert_cr_ok(cr_st_writer_save(w, path));
    cr_st_writer_free(w);

    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    assert_int_equal(cr_st_count(f), N + 1);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d.%s", i, cr_dtype_name(t[i].dtype));
        cr_dtensor back;
        assert_cr_ok(cr_st_get_typed(f, name, &back));
        if (back.dtype != t[i].dtype || back.ndim != t[i].ndim || back.numel != t[i].numel ||
            memcmp(back.shape, t[i].shape, sizeof back.shape) != 0 ||
            memcmp(back.data, t[i].data, cr_dtensor_bytes(&t[i])) != 0)
            fail_msg("'%s' differs after the round trip (CR_SEED=%llu)", name, (unsigned long long)seed);
        cr_dtensor_free(&back);
        cr_dtensor_free(&t[i]);
    }
    cr_dtensor back;
    assert_cr_ok(cr_st_get_typed(f, "plain", &back));
    assert_int_equal(back.dtype, CR_DT_F32);
    assert_memory_equal(back.data, plain.data, plain.numel * sizeof(float));
    cr_dtensor_free(&back);
    assert_cr_fails(cr_st_get_typed(f, "t0", &back), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "'t0'"));
    assert_cr_fails(cr_st_info(f, "nope", NULL, NULL, NULL), CR_EINVAL);
    cr_st_free(f);
    cr_tensor_free(&plain);
    cr_test_remove_temp_dir(dir);
}

/* Many tensors (20k, scaled by CR_TEST_SCALE): the writer refuses a late duplicate, every
 * name finds its own tensor after the round trip, near-miss names find nothing, and a
 * file with one duplicate among them all is refused. */
static void safetensors__many_tensors(void **state)
{
    (void)state;
    uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int n = cr_test_count(20000) < 100 ? 100 : cr_test_count(20000);
    char dir[512], path[1024], name[64];
    cr_test_temp_dir(dir, sizeof dir, "cr_st");
    snprintf(path, sizeof path, "%s/many.safetensors", dir);
    cr_st_writer *w;
    assert_cr_ok(cr_st_writer_new(&w));
    cr_dtensor t;
    assert_cr_ok(cr_dtensor_alloc(&t, CR_DT_I32, 0, NULL));
    for (int i = 0; i < n; i++) {
        /* Names share long prefixes, as a state dict's do; order is scrambled. */
        int k = (int)(((int64_t)i * 7919) % n);
        snprintf(name, sizeof name, "layer%d.block.%d.weight", k % 97, k);
        cr_dtensor_i32(&t)[0] = k;
        assert_cr_ok(cr_st_writer_add_typed(w, name, &t));
    }
    snprintf(name, sizeof name, "layer%d.block.%d.weight", (n / 2) % 97, n / 2);
    assert_cr_fails(cr_st_writer_add_typed(w, name, &t), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "duplicate"));
    assert_cr_ok(cr_st_writer_save(w, path));
    cr_st_writer_free(w);
    cr_dtensor_free(&t);

    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    assert_int_equal(cr_st_count(f), n);
    for (int j = 0; j < n; j++) {
        int k = (int)cr_rng_int(&r, 0, n - 1);
        snprintf(name, sizeof name, "layer%d.block.%d.weight", k % 97, k);
        assert_cr_ok(cr_st_get_typed(f, name, &t));
        if (cr_dtensor_i32(&t)[0] != k)
            fail_msg("'%s' holds %d (CR_SEED=%llu)", name, cr_dtensor_i32(&t)[0], (unsigned long long)seed);
        cr_dtensor_free(&t);
        snprintf(name, sizeof name, "layer%d.block.%d.weigh", k % 97, k);
        assert_false(cr_st_has(f, name));
        snprintf(name, sizeof name, "layer%d.block.%d.weight", k % 97 + 1, k);
        assert_false(cr_st_has(f, name));
    }
    assert_false(cr_st_has(f, ""));
    assert_false(cr_st_has(f, "layer0.block.0.weight."));
    assert_true(cr_st_has(f, "layer0.block.0.weight"));
    cr_st_free(f);
    cr_test_remove_temp_dir(dir);

    /* The same number of names, one of them twice (the second near the end). */
    size_t cap = (size_t)n * 80 + 64, hl = 0;
    char *header = malloc(cap);
    assert_non_null(header);
    hl += (size_t)snprintf(header + hl, cap - hl, "{");
    for (int i = 0; i < n; i++) {
        int k = i == n - 2 ? n / 3 : i;
        hl += (size_t)snprintf(header + hl, cap - hl, "%s\"n%d\":{\"dtype\":\"U8\",\"shape\":[1],"
                               "\"data_offsets\":[%d,%d]}", i ? "," : "", k, i, i + 1);
    }
    hl += (size_t)snprintf(header + hl, cap - hl, "}");
    assert_true(hl < cap);
    size_t len;
    unsigned char *file = build_file(header, NULL, (size_t)n, &len);
    char dup[32];
    snprintf(dup, sizeof dup, "'n%d'", n / 3);
    assert_cr_fails(cr_st_parse(&f, file, len, "dup.safetensors"), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "duplicate tensor name"));
    assert_non_null(strstr(cr_last_error(), dup));
    free(file);
    free(header);
}

/* Valid but unusual headers: escapes in names, an empty tensor, gaps, empty metadata. */
static void safetensors__unusual_but_valid(void **state)
{
    (void)state;
    const char *header =
        "{\"__metadata__\":{},\"caf\\u00e9 \\ud83d\\ude00 \\/\\t\":{\"dtype\":\"F32\",\"shape\":[1],"
        "\"data_offsets\":[8,12]},\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}}";
    size_t len;
    unsigned char *file = build_file(header, NULL, 16, &len);
    cr_st_file *f;
    assert_cr_ok(cr_st_parse(&f, file, len, "ok.safetensors"));
    assert_int_equal(cr_st_count(f), 2);
    assert_string_equal(cr_st_name(f, 0), "caf\xc3\xa9 \xf0\x9f\x98\x80 /\t");
    cr_tensor t;
    assert_cr_fails(cr_st_get(f, "e", &t), CR_EINVAL);  /* cr_tensor cannot be empty */
    assert_non_null(strstr(cr_last_error(), "'e'"));
    cr_st_free(f);
    free(file);
    assert_int_equal(parse_header("{}", 0), CR_OK);
    assert_int_equal(parse_header(" \n{ }\t\r\n ", 0), CR_OK);
}

/* ------------------------------------------------------------------ malformed */

/* One malformed header, the data section size that goes with it and a word the message must hold. */
typedef struct {
    const char *header;
    size_t data_len;
    const char *expect;
} bad_case;

/* Every malformed header is refused with CR_EFORMAT and a message naming the file and problem. */
static void safetensors__malformed_headers(void **state)
{
    (void)state;
#define T(name, extra) "{\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]" extra "}}"
    static const bad_case cases[] = {
        {"", 8, "unexpected end"},
        {"{\"a\":", 8, "invalid JSON"},
        {"[1, 2]", 8, "expected an object"},
        {"{} x", 8, "trailing characters"},
        {T("a", "") "}", 8, "trailing characters"},
        {T("a", ""), 4, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "begin > end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need"},
        {"{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "need"},
        {"{\"a\":{\"dtype\":\"U16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8,
         "unsupported dtype 'U16' (expected F32, F16, BF16, F64, I8, U8, I32 or I64)"},
        {"{\"a\":{\"dtype\":\"BOOL\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, "unsupported dtype 'BOOL'"},
        {"{\"a\":{\"dtype\":\"i32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unsupported dtype"},
        {"{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "need 2 x 8"},
        {"{\"a\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8, "need 4 x 1"},
        {"{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype is missing"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "shape is missing"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets is missing"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "rank 5"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape entry 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "shape entry 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"data_offsets\":[0,8]}}", 8, "overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551616]}}", 8,
         "64 bits"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8,
         "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[00,8]}}", 8, "leading zero"},
        {T("a", ",\"extra\":1"), 8, "unknown key"},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "duplicate key"},
        {"{\"a\":[1]}", 8, "expected an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "duplicate tensor name"},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "empty name"},
        {"{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "NUL"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__"},
        {"{\"__metadata__\":{\"k\":null}}", 0, "expected a string"},
        {"{\"__metadata__\":\"x\"}", 0, "__metadata__"},
        {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "duplicate __metadata__ key"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__"},
        {"{\"__metadata__\":{\"k\":[[[[[[[[[[[[[[[[[[\"deep\"]]]]]]]]]]]]]]]]]]}}", 0, "nesting"},
        {"{\"a\\x\":1}", 0, "unknown escape"},
        {"{\"a\\u12\":1}", 0, "hex digit"},
        {"{\"a\\ud800\":1}", 0, "surrogate"},
        {"{\"a\\udc00\":1}", 0, "surrogate"},
        {"{\"a\xff\":1}", 0, "UTF-8"},
        {"{\"a\xc0\xaf\":1}", 0, "UTF-8"},   /* overlong '/' */
        {"{\"a\xed\xa0\x80\":1}", 0, "UTF-8"}, /* encoded surrogate */
        {"{\"a\tb\":1}", 0, "control character"},
        {"{\"abc", 0, "unterminated string"},
        {"{\"a\" 1}", 0, "expected ':'"},
        {"{\"a\":1,}", 0, "expected a string key"},
        {"{\"__metadata__\":{\"k\":\"v\"} \"b\":1}", 0, "expected ',' or '}'"},
        {"{\"__metadata__\":{\"k\":[1,]}}", 0, "unexpected character"},
        {"{\"__metadata__\":{\"k\":[1 2]}}", 0, "expected ',' or ']'"},
        {"{\"__metadata__\":{\"k\":tru}}", 0, "unexpected character"},
        {"{\"__metadata__\":{\"k\":1.}}", 0, "after '.'"},
        {"{\"__metadata__\":{\"k\":1e}}", 0, "exponent"},
        {"{\"__metadata__\":{\"k\":-}}", 0, "expected a digit"},
        {"{\"__metadata__\":{\"k\":'v'}}", 0, "unexpected character"},
    };
#undef T
    int checked = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hlen = strlen(cases[i].header);
        unsigned char *b = malloc(8 + hlen + cases[i].data_len + 1);
        assert_non_null(b);
        for (int j = 0; j < 8; j++) b[j] = (unsigned char)((uint64_t)hlen >> (8 * j));
        memcpy(b + 8, cases[i].header, hlen);
        memset(b + 8 + hlen, 0x40, cases[i].data_len);
        cr_st_file *f = (cr_st_file *)&checked;  /* must be reset to NULL on failure */
        cr_status st = cr_st_parse(&f, b, 8 + hlen + cases[i].data_len, "bad.safetensors");
        free(b);
        if (st != CR_EFORMAT) {
            if (st == CR_OK) cr_st_free(f);
            fail_msg("case %zu (%s): got %s, expected CR_EFORMAT", i, cases[i].header, cr_status_name(st));
        }
        assert_null(f);
        if (!strstr(cr_last_error(), cases[i].expect) || !strstr(cr_last_error(), "bad.safetensors"))
            fail_msg("case %zu (%s): message '%s' lacks '%s' or the file name", i, cases[i].header,
                     cr_last_error(), cases[i].expect);
        checked++;
    }
    assert_true(checked > 50);
    /* A NUL after the JSON value is not whitespace. */
    unsigned char nul[8 + 6] = {6, 0, 0, 0, 0, 0, 0, 0, '{', '}', '\0', ' ', ' ', ' '};
    cr_st_file *f;
    assert_cr_fails(cr_st_parse(&f, nul, sizeof nul, "nul.st"), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "trailing characters"));
}

/* Bad length prefixes: too short, longer than the file, over the cap. */
static void safetensors__malformed_prefix(void **state)
{
    (void)state;
    cr_st_file *f;
    const unsigned char five[5] = {2, 0, 0, 0, 0};
    assert_cr_fails(cr_st_parse(&f, five, sizeof five, "short.st"), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "short.st"));
    assert_non_null(strstr(cr_last_error(), "too short"));
    assert_cr_fails(cr_st_parse(&f, NULL, 0, "empty.st"), CR_EFORMAT);

    unsigned char b[8 + 10] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    assert_cr_fails(cr_st_parse(&f, b, sizeof b, "long.st"), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "larger than"));
    b[0] = 11;  /* one byte more than there is */
    assert_cr_fails(cr_st_parse(&f, b, sizeof b, "long.st"), CR_EFORMAT);
    b[0] = 10;  /* exactly the file: valid, with an empty data section */
    assert_cr_ok(cr_st_parse(&f, b, sizeof b, "ok.st"));
    assert_int_equal(cr_st_count(f), 0);
    cr_st_free(f);
    b[0] = 0, b[7] = 0x80;  /* 2^63 */
    assert_cr_fails(cr_st_parse(&f, b, sizeof b, "huge.st"), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "exceeds the limit"));
    b[7] = 0, b[3] = 0x10;  /* 256 MiB: over the 100 MB cap */
    assert_cr_fails(cr_st_parse(&f, b, sizeof b, "huge.st"), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "exceeds the limit"));
}

/* Every truncation of a valid file is refused cleanly (never a crash or a read past the end). */
static void safetensors__every_truncation(void **state)
{
    (void)state;
    const char *header = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                         "\"data_offsets\":[0,8]}}";
    size_t len;
    unsigned char *full = build_file(header, NULL, 8, &len);
    for (size_t n = 0; n < len; n++) {
        unsigned char *b = malloc(n ? n : 1);  /* exact size, so ASan sees any overread */
        assert_non_null(b);
        memcpy(b, full, n);
        cr_st_file *f;
        cr_status st = cr_st_parse(&f, b, n, "cut.st");
        free(b);
        if (st != CR_EFORMAT) fail_msg("truncated to %zu of %zu bytes: got %s", n, len, cr_status_name(st));
    }
    cr_st_file *f;
    assert_cr_ok(cr_st_parse(&f, full, len, "full.st"));
    cr_st_free(f);
    free(full);
}

/* The JSON parser on its own: every kind of value, and the integer limits. */
static void safetensors__json_values(void **state)
{
    (void)state;
    const char text[] = " [true, false, null, -1.5e3, 0, 18446744073709551615, 2E+2, -0,"
                        " {\"k\": \"v\\n\\u20AC\"}, [], {}, \"\"] ";
    cr_json v;
    /* Not NUL-terminated: parse all but the final NUL. */
    assert_cr_ok(cr_json_parse(text, sizeof text - 1, "t", &v));
    assert_int_equal(v.type, CR_JSON_ARRAY);
    assert_int_equal(v.count, 12);
    const cr_json_type types[] = {CR_JSON_TRUE, CR_JSON_FALSE, CR_JSON_NULL, CR_JSON_NUMBER, CR_JSON_INT,
                                  CR_JSON_INT, CR_JSON_NUMBER, CR_JSON_NUMBER, CR_JSON_OBJECT,
                                  CR_JSON_ARRAY, CR_JSON_OBJECT, CR_JSON_STRING};
    for (size_t i = 0; i < 12; i++) assert_int_equal(v.u.items[i].type, types[i]);
    assert_true(v.u.items[4].u.integer == 0);
    assert_true(v.u.items[5].u.integer == UINT64_MAX);
    const cr_json *s = cr_json_get(&v.u.items[8], "k");
    assert_non_null(s);
    assert_int_equal(s->count, 5);
    assert_string_equal(s->u.string, "v\n\xe2\x82\xac");
    assert_null(cr_json_get(&v.u.items[8], "kk"));
    assert_int_equal(v.u.items[11].count, 0);
    cr_json_free(&v);

    /* A value cut short of its own text: "12" of "123" must give 12, not read on. */
    assert_cr_ok(cr_json_parse("123", 2, "t", &v));
    assert_true(v.type == CR_JSON_INT && v.u.integer == 12);
    cr_json_free(&v);
    assert_cr_fails(cr_json_parse("\"ab\"", 3, "t", &v), CR_EFORMAT);
    assert_cr_fails(cr_json_parse("tru", 3, "t", &v), CR_EFORMAT);
    assert_cr_fails(cr_json_parse("1 2", 3, "t", &v), CR_EFORMAT);

    /* 16 levels parse, 17 do not. */
    char deep[64];
    for (int depth = 16; depth <= 17; depth++) {
        memset(deep, '[', (size_t)depth);
        memset(deep + depth, ']', (size_t)depth);
        cr_status st = cr_json_parse(deep, 2 * (size_t)depth, "t", &v);
        assert_int_equal(st, depth == 16 ? CR_OK : CR_EFORMAT);
        cr_json_free(&v);
    }
    assert_true(cr_json_utf8_valid("\xf4\x8f\xbf\xbf", 4));
    assert_false(cr_json_utf8_valid("\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
    assert_false(cr_json_utf8_valid("\xe2\x82", 2));          /* cut short */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(safetensors__round_trip),
        cmocka_unit_test(safetensors__file_layout),
        cmocka_unit_test(safetensors__writer_refuses),
        cmocka_unit_test(safetensors__dtype_conversion),
        cmocka_unit_test(safetensors__golden_every_dtype),
        cmocka_unit_test(safetensors__typed_round_trip),
        cmocka_unit_test(safetensors__many_tensors),
        cmocka_unit_test(safetensors__unusual_but_valid),
        cmocka_unit_test(safetensors__malformed_headers),
        cmocka_unit_test(safetensors__malformed_prefix),
        cmocka_unit_test(safetensors__every_truncation),
        cmocka_unit_test(safetensors__json_values),
    };
    return cr_run_tests("safetensors", tests);
}
