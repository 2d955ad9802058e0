/* cr_test.h — what every cmocka test file of the project shares.
 *
 * Test names: a test function's name starts with the coursework task it grades,
 * then two underscores (direct_loops__golden_cases). Setting CR_TEST_FILTER to
 * "TASK__*" runs one task's tests only; the kits' graders do that.
 * CR_TEST_SCALE (default 1) scales the count of randomized cases: sanitizer and
 * valgrind runs set it below 1, never to 0. */
#ifndef CR_TEST_H
#define CR_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <setjmp.h>
#include <cmocka.h>

#include "error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Fails the current test with the library's message unless expr returns CR_OK. */
#define assert_cr_ok(expr)                                                          \
    do {                                                                            \
        cr_status st_ = (expr);                                                     \
        if (st_ != CR_OK)                                                           \
            fail_msg("%s returned %s: %s", #expr, cr_status_name(st_), cr_last_error()); \
    } while (0)

/* Fails unless expr returns the given failure status. */
#define assert_cr_fails(expr, status)                                               \
    do {                                                                            \
        cr_status st_ = (expr);                                                     \
        if (st_ != (status))                                                        \
            fail_msg("%s returned %s, expected %s", #expr, cr_status_name(st_),     \
                     cr_status_name(status));                                       \
    } while (0)

/* n scaled by CR_TEST_SCALE, at least 1. */
static inline int cr_test_count(int n)
{
    const char *s = getenv("CR_TEST_SCALE");
    double scale = s ? atof(s) : 1.0;
    if (!(scale > 0)) scale = 1.0;
    int m = (int)(n * scale);
    return m < 1 ? 1 : m;
}

/* Sets the OpenMP thread count for the next parallel regions (no-op without OpenMP). */
static inline void cr_test_set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Runs a group of tests after applying CR_TEST_FILTER. */
#define cr_run_tests(name, tests)                                                   \
    (getenv("CR_TEST_FILTER") ? cmocka_set_test_filter(getenv("CR_TEST_FILTER")) : (void)0, \
     cmocka_run_group_tests_name(name, tests, NULL, NULL))

#endif
