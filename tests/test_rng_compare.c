/* test_rng_compare.c — suite lib: the random generator and the comparison helpers. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compare.h"
#include "cr_test.h"
#include "rng.h"

static void rng__same_seed_same_stream(void **state)
{
    (void)state;
    cr_rng a, b, c;
    cr_rng_seed(&a, 42);
    cr_rng_seed(&b, 42);
    cr_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = cr_rng_next(&a);
        assert_true(x == cr_rng_next(&b));
        differ += x != cr_rng_next(&c);
    }
    assert_true(differ > 90);
}

static void rng__ranges_and_moments(void **state)
{
    (void)state;
    cr_rng r;
    cr_rng_seed(&r, 7);
    int hits[6] = {0};
    double sum = 0, sum2 = 0, nsum = 0, nsum2 = 0;
    const int n = 60000;
    for (int i = 0; i < n; i++) {
        int64_t v = cr_rng_int(&r, -2, 3);
        assert_true(v >= -2 && v <= 3);
        hits[v + 2]++;
        double u = cr_rng_uniform(&r);
        assert_true(u >= 0 && u < 1);
        sum += u;
        sum2 += u * u;
        double g = cr_rng_normal(&r);
        nsum += g;
        nsum2 += g * g;
        float f = cr_rng_uniform_f(&r, -1, 1);
        assert_true(f >= -1 && f < 1);
    }
    for (int k = 0; k < 6; k++) assert_true(abs(hits[k] - n / 6) < n / 60); /* within 10% */
    assert_true(fabs(sum / n - 0.5) < 0.01);
    assert_true(fabs(sum2 / n - 1.0 / 3) < 0.01);
    assert_true(fabs(nsum / n) < 0.02);
    assert_true(fabs(nsum2 / n - 1) < 0.03);
    assert_int_equal(cr_rng_int(&r, 5, 5), 5);
}

static void compare__relative_error_and_faults(void **state)
{
    (void)state;
    float ref[4] = {1, -2, 3, 4}, out[4] = {1, -2, 3, 4};
    cr_cmp c = cr_compare(out, ref, 4, 1e-4, 1e-6);
    assert_true(c.rel_l2 == 0 && c.n_bad == 0 && cr_cmp_ok(&c, 1e-7));
    out[2] = 3.3f;
    c = cr_compare(out, ref, 4, 1e-4, 1e-6);
    assert_int_equal(c.n_bad, 1);
    assert_int_equal(c.first_bad, 2);
    assert_int_equal(c.worst, 2);
    assert_true(fabs(c.rel_l2 - 0.3 / sqrt(30.0)) < 1e-6);
    assert_false(cr_cmp_ok(&c, 1e-2));
    out[2] = NAN;
    c = cr_compare(out, ref, 4, 1e-4, 1e-6);
    assert_false(cr_cmp_ok(&c, 1e9));
    assert_int_equal(c.n_bad, 1);
}

static void compare__prints_multi_index(void **state)
{
    (void)state;
    float ref[6] = {0}, out[6] = {0};
    out[5] = 1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    const long long shape[2] = {2, 3};
    cr_print_faults(f, out, ref, 6, shape, 2, 1e-4, 1e-6, 5);
    fclose(f);
    assert_non_null(strstr(buf, "[1,2]"));
    assert_non_null(strstr(buf, "got 1"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rng__same_seed_same_stream),
        cmocka_unit_test(rng__ranges_and_moments),
        cmocka_unit_test(compare__relative_error_and_faults),
        cmocka_unit_test(compare__prints_multi_index),
    };
    return cr_run_tests("rng_compare", tests);
}
