/* test_conv_desc.c — suite lib: the convolution descriptor against PyTorch's rules. */
#include <stdio.h>
#include <string.h>

#include "conv_desc.h"
#include "conv_harness.h"
#include "cr_test.h"

/* Output sizes equal the sizes PyTorch produced for every golden case, and
 * padding='same' resolves to the pads PyTorch used. */
static void conv_desc__shapes_match_pytorch(void **state)
{
    (void)state;
    char **paths;
    int n = cr_golden_list("conv_", &paths), same = 0;
    assert_true(n >= 40);
    for (int i = 0; i < n; i++) {
        cr_golden_conv c;
        cr_golden_conv_load(paths[i], &c);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &c.p, c.x.shape[0], c.x.shape[2], c.x.shape[3]));
        if (s.h_out != c.y.shape[2] || s.w_out != c.y.shape[3])
            fail_msg("%s: output %lldx%lld, PyTorch made %lldx%lld", c.name, (long long)s.h_out,
                     (long long)s.w_out, (long long)c.y.shape[2], (long long)c.y.shape[3]);
        assert_int_equal(s.y_numel, c.y.numel);
        assert_int_equal(s.w_numel, c.w.numel);
        if (strcmp(c.padding_spec, "same") == 0) {
            cr_conv_params q = c.p;
            q.pad_top = q.pad_bottom = q.pad_left = q.pad_right = 99;
            assert_cr_ok(cr_conv_set_padding_same(&q));
            if (q.pad_top != c.p.pad_top || q.pad_bottom != c.p.pad_bottom ||
                q.pad_left != c.p.pad_left || q.pad_right != c.p.pad_right)
                fail_msg("%s: padding='same' gave %lld/%lld/%lld/%lld, PyTorch %lld/%lld/%lld/%lld",
                         c.name, (long long)q.pad_top, (long long)q.pad_bottom,
                         (long long)q.pad_left, (long long)q.pad_right, (long long)c.p.pad_top,
                         (long long)c.p.pad_bottom, (long long)c.p.pad_left, (long long)c.p.pad_right);
            same++;
        }
        cr_golden_conv_free(&c);
    }
    cr_free_list(paths, n);
    assert_true(same >= 3);
}

/* Expects cr_conv_shape_init to fail with status and a message containing needle. */
static void expect_refused(const cr_conv_params *p, int64_t n, int64_t h, int64_t w,
                           cr_status status, const char *needle)
{
    cr_conv_shape s;
    cr_status st = cr_conv_shape_init(&s, p, n, h, w);
    if (st != status)
        fail_msg("expected %s mentioning '%s', got %s: %s", cr_status_name(status), needle,
                 cr_status_name(st), cr_last_error());
    if (!strstr(cr_last_error(), needle))
        fail_msg("message '%s' does not mention '%s'", cr_last_error(), needle);
}

static void conv_desc__bad_parameters_named(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(6, 8, 3);
    p.groups = 4;
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "in_channels");       /* 4 does not divide 6 */
    p = cr_conv_params_default(8, 6, 3);
    p.groups = 4;
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "out_channels");
    p = cr_conv_params_default(8, 8, 3);
    p.groups = 0;
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "groups");
    p = cr_conv_params_default(3, 4, 3);
    p.stride_w = 0;
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "stride_w");
    p = cr_conv_params_default(3, 4, 3);
    p.dilation_h = 0;
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "dilation_h");
    p = cr_conv_params_default(3, 4, 3);
    p.pad_left = -1;
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "pad_left");
    p = cr_conv_params_default(3, 4, 0);
    expect_refused(&p, 1, 8, 8, CR_EINVAL, "kernel_h");
    p = cr_conv_params_default(3, 4, 3);
    expect_refused(&p, 0, 8, 8, CR_EINVAL, "batch");
    expect_refused(&p, 1, 8, -3, CR_EINVAL, "input width");
}

static void conv_desc__kernel_larger_than_padded_input(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(1, 1, 5);
    expect_refused(&p, 1, 4, 9, CR_EINVAL, "height");
    p.dilation_w = 3;   /* span 13 > 9 */
    expect_refused(&p, 1, 9, 9, CR_EINVAL, "dilated kernel size 13");
    cr_conv_set_padding(&p, 1, 2);  /* height 4 + 2 = 6 >= 5: valid with padding */
    p.dilation_w = 1;
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 4, 1));
    assert_int_equal(s.h_out, 2);
    assert_int_equal(s.w_out, 1);
}

static void conv_desc__padding_mode_limits(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(1, 1, 3);
    p.pad_mode = CR_PAD_REFLECT;
    cr_conv_set_padding(&p, 4, 1);
    expect_refused(&p, 1, 4, 8, CR_EINVAL, "reflect padding 4 on height");
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 5, 8));
    p.pad_mode = CR_PAD_CIRCULAR;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 4, 8));   /* pad == size wraps once: fine */
    expect_refused(&p, 1, 3, 8, CR_EINVAL, "circular padding 4 on height");
    p.pad_mode = CR_PAD_REPLICATE;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 1, 1));   /* replicate has no limit */
    p.pad_mode = (cr_pad_mode)7;
    expect_refused(&p, 1, 4, 8, CR_EINVAL, "pad_mode");
}

static void conv_desc__sizes_that_overflow(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(1 << 20, 1 << 20, 1);
    expect_refused(&p, 1 << 20, 1 << 10, 1 << 10, CR_EOVERFLOW, "input elements");
    p = cr_conv_params_default(1, (int64_t)1 << 23, (int64_t)1 << 23);
    cr_conv_set_padding(&p, (int64_t)1 << 23, (int64_t)1 << 23); /* a 1x1 input, padded */
    expect_refused(&p, 1, 1, 1, CR_EOVERFLOW, "weight elements");
    p = cr_conv_params_default(1, 1, 1);
    expect_refused(&p, 1, (int64_t)1 << 40, 1, CR_EINVAL, "input height");
}

static void conv_desc__same_padding_rules(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(1, 1, 4);
    p.dilation_w = 3;
    assert_cr_ok(cr_conv_set_padding_same(&p));
    assert_int_equal(p.pad_top, 1);    /* total 3: 1 before, 2 after */
    assert_int_equal(p.pad_bottom, 2);
    assert_int_equal(p.pad_left, 4);   /* total 9: 4 before, 5 after */
    assert_int_equal(p.pad_right, 5);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 10, 11));
    assert_int_equal(s.h_out, 10);
    assert_int_equal(s.w_out, 11);
    p.stride_h = 2;
    assert_cr_fails(cr_conv_set_padding_same(&p), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "stride"));
}

/* Found by tests/fuzz (corpus/conv_desc/crash-same-padding-overflow): a huge kernel or
 * dilation made dilation*(kernel-1) overflow int64 (undefined behaviour) before the
 * sizes were checked; now refused with a message. */
static void conv_desc__same_padding_huge_sizes(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(1, 1, 3);
    p.kernel_w = INT64_MAX;
    p.dilation_w = 4;
    assert_cr_fails(cr_conv_set_padding_same(&p), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "at most"));
    p = cr_conv_params_default(1, 1, 3);
    p.dilation_h = (int64_t)1 << 40;
    assert_cr_fails(cr_conv_set_padding_same(&p), CR_EINVAL);
    p = cr_conv_params_default(1, 1, (int64_t)1 << 24);  /* the largest accepted */
    p.dilation_h = p.dilation_w = (int64_t)1 << 24;
    assert_cr_ok(cr_conv_set_padding_same(&p));
    assert_int_equal(p.pad_top + p.pad_bottom, ((int64_t)1 << 24) * (((int64_t)1 << 24) - 1));
}

static void conv_desc__bind_names_the_tensor(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    p.groups = 2;
    cr_tensor x, w, y, b;
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 4, 7, 7));
    assert_cr_ok(cr_tensor_alloc4(&w, 6, 4, 3, 3));   /* should be 6 x 2 x 3 x 3 */
    assert_cr_ok(cr_tensor_alloc4(&y, 2, 6, 5, 5));
    const int64_t bs[1] = {6};
    assert_cr_ok(cr_tensor_alloc(&b, 1, bs));
    cr_conv_shape s;
    assert_cr_fails(cr_conv_bind(&s, &p, &x, &w, &b, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "tensor w: expected shape [6, 2, 3, 3], got [6, 4, 3, 3]"));
    p.groups = 1;
    assert_cr_ok(cr_conv_bind(&s, &p, &x, &w, &b, &y));
    assert_cr_fails(cr_conv_bind(&s, &p, &x, &w, NULL, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "tensor b"));
    p.bias = false;
    assert_cr_fails(cr_conv_bind(&s, &p, &x, &w, &b, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "bias=false"));
    p.in_channels = 5;
    assert_cr_fails(cr_conv_bind(&s, &p, &x, &w, NULL, &y), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "in_channels"));
    cr_tensor_free(&x); cr_tensor_free(&w); cr_tensor_free(&y); cr_tensor_free(&b);
}

static void conv_desc__flops_and_names(void **state)
{
    (void)state;
    cr_conv_params p = cr_conv_params_default(128, 128, 3);
    p.groups = 32;
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 1, 56, 56));
    assert_true(cr_conv_flops(&s) == 2.0 * 128 * 56 * 56 * 4 * 9);
    cr_pad_mode m;
    assert_cr_ok(cr_pad_mode_parse("circular", &m));
    assert_int_equal(m, CR_PAD_CIRCULAR);
    assert_string_equal(cr_pad_mode_name(CR_PAD_REFLECT), "reflect");
    assert_cr_fails(cr_pad_mode_parse("mirror", &m), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "mirror"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv_desc__shapes_match_pytorch),
        cmocka_unit_test(conv_desc__bad_parameters_named),
        cmocka_unit_test(conv_desc__kernel_larger_than_padded_input),
        cmocka_unit_test(conv_desc__padding_mode_limits),
        cmocka_unit_test(conv_desc__sizes_that_overflow),
        cmocka_unit_test(conv_desc__same_padding_rules),
        cmocka_unit_test(conv_desc__same_padding_huge_sizes),
        cmocka_unit_test(conv_desc__bind_names_the_tensor),
        cmocka_unit_test(conv_desc__flops_and_names),
    };
    return cr_run_tests("conv_desc", tests);
}
