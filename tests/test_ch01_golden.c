/* test_ch01_golden.c — suite ch01: chapter 1 reproduces PyTorch. */
#include <stdio.h>
#include <string.h>

#include "conv_harness.h"
#include "cr_test.h"
#include "direct.h"
#include "safetensors.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Every padded position maps to the input index PyTorch's F.pad copies there. */
static void pad_index__matches_pytorch(void **state)
{
    (void)state;
    char path[4096];
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir || !*dir) fail_msg("CR_GOLDEN_DIR is not set: run the tests through meson test");
    snprintf(path, sizeof path, "%s/pad_index.safetensors", dir);
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    int checked = 0;
    for (int i = 0; i < cr_st_count(f); i++) {
        const char *name = cr_st_name(f, i);
        char mode_name[16];
        int n, left, right;
        if (sscanf(name, "%15[a-z]_n%d_l%d_r%d", mode_name, &n, &left, &right) != 4)
            fail_msg("%s: unexpected tensor name '%s'", path, name);
        cr_pad_mode mode;
        assert_cr_ok(cr_pad_mode_parse(mode_name, &mode));
        cr_tensor t;
        assert_cr_ok(cr_st_get(f, name, &t));
        assert_int_equal(t.numel, (size_t)(left + n + right));
        for (int j = 0; j < left + n + right; j++) {
            int64_t want = (int64_t)t.data[j], got = cr_pad_index(j - left, n, mode);
            if (got != want)
                fail_msg("cr_pad_index(%d, %d, %s) = %lld; PyTorch's F.pad copies index %lld "
                         "(sequence %s)", j - left, n, mode_name, (long long)got,
                         (long long)want, name);
        }
        cr_tensor_free(&t);
        checked++;
    }
    cr_st_free(f);
    assert_true(checked >= 40);
}

/* A stub of cr_pad_index says it is one (through cr_todo) instead of a wrong index. */
static void pad_index__is_written(void **state)
{
    (void)state;
    (void)cr_fail(CR_OK, "%s", "");
    (void)cr_pad_index(-1, 4, CR_PAD_REFLECT);
    if (strstr(cr_last_error(), "coursework stub")) fail_msg("%s", cr_last_error());
}

/* The seven loops reproduce every golden case PyTorch made. */
static void direct_loops__golden_cases(void **state)
{
    (void)state;
    cr_check_conv_golden(cr_conv2d_direct, "chapter 1 (direct)", 1e-5, 40);
}

/* Two threads and one give the same bits: each output element has one writer. */
static void direct_loops__same_bits_any_threads(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, cr_seed_from_env());
    cr_conv_params p = cr_conv_params_default(8, 12, 3);
    p.groups = 4;
    cr_conv_set_padding(&p, 1, 2);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, 3, 11, 9));
    cr_tensor x, w, b, y1, y2;
    cr_conv_tensors_random(&s, &r, &x, &w, &b, &y1);
    assert_cr_ok(cr_tensor_alloc(&y2, 4, y1.shape));
    cr_tensor_poison(&y2);
    assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &y1));
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    assert_cr_ok(cr_conv2d_direct(&p, &x, &w, &b, &y2));
    assert_memory_equal(y1.data, y2.data, y1.numel * sizeof(float));
    cr_tensor_free(&x);
    cr_tensor_free(&w);
    cr_tensor_free(&b);
    cr_tensor_free(&y1);
    cr_tensor_free(&y2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pad_index__is_written),
        cmocka_unit_test(pad_index__matches_pytorch),
        cmocka_unit_test(direct_loops__golden_cases),
        cmocka_unit_test(direct_loops__same_bits_any_threads),
    };
    return cr_run_tests("ch01", tests);
}
