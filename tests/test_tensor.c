/* test_tensor.c — suite lib: tensors, errors and the scratch pool. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cr_test.h"
#include "scratch.h"
#include "tensor.h"

static void tensor__alloc_shape_and_alignment(void **state)
{
    (void)state;
    cr_tensor t;
    assert_cr_ok(cr_tensor_alloc4(&t, 2, 3, 5, 7));
    assert_int_equal(t.ndim, 4);
    assert_int_equal(t.numel, 210);
    assert_int_equal((uintptr_t)t.data % CR_ALIGN, 0);
    cr_tensor_fill(&t, 2.5f);
    for (size_t i = 0; i < t.numel; i++) assert_true(t.data[i] == 2.5f);
    char buf[64];
    cr_tensor_shape_str(&t, buf, sizeof buf);
    assert_string_equal(buf, "[2, 3, 5, 7]");
    cr_tensor_poison(&t);
    assert_true(isnan(t.data[209]));
    cr_tensor_free(&t);
    assert_null(t.data);
    cr_tensor_free(&t); /* twice is harmless */
}

static void tensor__bad_shapes_refused(void **state)
{
    (void)state;
    cr_tensor t;
    const int64_t zero[2] = {3, 0};
    assert_cr_fails(cr_tensor_alloc(&t, 2, zero), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dimension 1"));
    assert_cr_fails(cr_tensor_alloc(&t, 5, zero), CR_EINVAL);
    assert_cr_fails(cr_tensor_alloc(&t, 0, zero), CR_EINVAL);
    const int64_t huge[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20}; /* 2^80 elements */
    assert_cr_fails(cr_tensor_alloc(&t, 4, huge), CR_EOVERFLOW);
    assert_null(t.data);
}

static void tensor__mul_checked(void **state)
{
    (void)state;
    size_t out = 0;
    assert_cr_ok(cr_mul_checked(1000, 1000, SIZE_MAX, "x", &out));
    assert_int_equal(out, 1000000);
    assert_cr_fails(cr_mul_checked(SIZE_MAX / 2, 3, SIZE_MAX, "the product", &out), CR_EOVERFLOW);
    assert_non_null(strstr(cr_last_error(), "the product"));
    assert_cr_fails(cr_mul_checked(11, 10, 100, "small limit", &out), CR_EOVERFLOW);
}

static void tensor__same_shape(void **state)
{
    (void)state;
    cr_tensor a, b, c;
    assert_cr_ok(cr_tensor_alloc4(&a, 1, 2, 3, 4));
    assert_cr_ok(cr_tensor_alloc4(&b, 1, 2, 3, 4));
    const int64_t s[3] = {2, 3, 4};
    assert_cr_ok(cr_tensor_alloc(&c, 3, s));
    assert_true(cr_tensor_same_shape(&a, &b));
    assert_false(cr_tensor_same_shape(&a, &c));
    cr_tensor_free(&a); cr_tensor_free(&b); cr_tensor_free(&c);
}

static void error__messages_and_names(void **state)
{
    (void)state;
    assert_int_equal(cr_fail(CR_EIO, "file %s: %d", "a.csv", 3), CR_EIO);
    assert_string_equal(cr_last_error(), "file a.csv: 3");
    assert_string_equal(cr_status_name(CR_EFORMAT), "CR_EFORMAT");
    assert_int_equal(cr_todo("gemm_naive"), CR_ETODO);
    assert_non_null(strstr(cr_last_error(), "gemm_naive"));
}

/* The scratch pool: a buffer given back is the one the next fitting request gets, a
 * larger request gets a new one, every buffer is aligned and as large as asked, two
 * buffers taken at once are distinct, and release leaves nothing kept. */
static void scratch__reuse_alignment_release(void **state)
{
    (void)state;
    cr_scratch_release();
    assert_int_equal(cr_scratch_kept_bytes(), 0);
    size_t c1 = 0, c2 = 0, c3 = 0;
    uint8_t *a = cr_scratch_get(1000, &c1);
    assert_non_null(a);
    assert_true(c1 >= 1000);
    assert_int_equal((uintptr_t)a % CR_ALIGN, 0);
    memset(a, 1, 1000);
    uint8_t *b = cr_scratch_get(1000, &c2);   /* a is taken: a new one */
    assert_non_null(b);
    assert_true(b != a);
    cr_scratch_put(a, c1);
    assert_int_equal(cr_scratch_kept_bytes(), c1);
    uint8_t *again = cr_scratch_get(600, &c3);   /* a fits */
    assert_ptr_equal(again, a);
    assert_int_equal(c3, c1);
    assert_int_equal(cr_scratch_kept_bytes(), 0);
    cr_scratch_put(again, c3);
    uint8_t *big = cr_scratch_get(5000, &c3);   /* nothing kept fits: a new one */
    assert_non_null(big);
    assert_true(c3 >= 5000);
    assert_int_equal((uintptr_t)big % CR_ALIGN, 0);
    memset(big, 2, 5000);
    cr_scratch_put(big, c3);
    cr_scratch_put(b, c2);
    cr_scratch_put(NULL, 0);   /* nothing */
    assert_true(cr_scratch_kept_bytes() >= c3 + c2);
    cr_scratch_release();
    assert_int_equal(cr_scratch_kept_bytes(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scratch__reuse_alignment_release),
        cmocka_unit_test(tensor__alloc_shape_and_alignment),
        cmocka_unit_test(tensor__bad_shapes_refused),
        cmocka_unit_test(tensor__mul_checked),
        cmocka_unit_test(tensor__same_shape),
        cmocka_unit_test(error__messages_and_names),
    };
    return cr_run_tests("tensor", tests);
}
