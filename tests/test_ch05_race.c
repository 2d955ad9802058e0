/* test_ch05_race.c — suite ch05: the CUDA emulator's race detector finds the races of
 * chapters/05-cuda/emu/race_demo.cu and names them (kernel, memory, byte, both threads),
 * and passes the same kernels with their barriers. The chapter's own kernels run under
 * the detector in test_ch05_emu_race (tests/test_ch05.c against the race build).
 *
 * The schedule is fixed per test (CR_EMU_SCHEDULE), so the first race reported, and its
 * message, are known in advance; the kernels are deterministic, so no seed is needed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cr_test.h"

int race_demo_run(const char *name, int threads, float *host, int n, char *msg, size_t len);
unsigned long long cr_emu_race_bytes_checked(void);

enum { N = 64 };

/* Runs kernel name under schedule and returns its cudaError_t; msg gets the message. */
static int run(const char *name, const char *schedule, int threads, float *out, char *msg,
               size_t len)
{
    setenv("CR_EMU_SCHEDULE", schedule, 1);
    const int e = race_demo_run(name, threads, out, N, msg, len);
    assert_int_not_equal(e, -1);
    return e;
}

/* Fails unless msg holds every one of the n strings in want. */
static void expect_message(const char *msg, const char *const *want, int n)
{
    for (int i = 0; i < n; i++)
        if (!strstr(msg, want[i]))
            fail_msg("the race report lacks \"%s\"; it reads: \"%s\"", want[i], msg);
}

/* Expects the launch of name under schedule to fail with a message holding want[0..n). */
static void expect_race(const char *name, const char *schedule, int threads,
                        const char *const *want, int n)
{
    float out[N];
    char msg[1024];
    const int e = run(name, schedule, threads, out, msg, sizeof msg);
    if (e == 0) fail_msg("%s under the %s schedule: no race reported", name, schedule);
    assert_int_equal(e, 719);   /* cudaErrorLaunchFailure, as a GPU's failed kernel */
    expect_message(msg, want, n);
}

static void race_detector__shared_read_before_neighbour_writes(void **state)
{
    (void)state;
    const char *fwd[] = {"kernel shift_no_sync: a race on shared array s at byte 4 (element 1",
                         "thread (1, 0, 0) of block (0, 0, 0) writes it",
                         "thread (0, 0, 0) of block (0, 0, 0) read it"};
    expect_race("shift_no_sync", "forward", N, fwd, 3);
    const char *rev[] = {"kernel shift_no_sync: a race on shared array s at byte 252 (element 63",
                         "thread (62, 0, 0) of block (0, 0, 0) reads it",
                         "thread (63, 0, 0) of block (0, 0, 0) wrote it"};
    expect_race("shift_no_sync", "reverse", N, rev, 3);
    const char *rnd[] = {"kernel shift_no_sync: a race on shared array s at byte "};
    expect_race("shift_no_sync", "random", N, rnd, 1);
}

static void race_detector__tree_sum_without_its_barrier(void **state)
{
    (void)state;
    const char *want[] = {"kernel tree_sum_no_sync: a race on shared array s at byte 4 ",
                          "thread (1, 0, 0) of block (0, 0, 0) writes it",
                          "thread (0, 0, 0) of block (0, 0, 0) and other threads of its block "
                          "read it"};
    expect_race("tree_sum_no_sync", "forward", N, want, 3);
}

static void race_detector__warp_exchange_without_syncwarp(void **state)
{
    (void)state;
    const char *want[] = {"kernel warp_swap_no_sync: a race on shared array s at byte 4 ",
                          "thread (1, 0, 0) of block (0, 0, 0) writes it"};
    expect_race("warp_swap_no_sync", "forward", 32, want, 2);
}

static void race_detector__two_blocks_write_one_float(void **state)
{
    (void)state;
    const char *want[] = {"kernel blocks_same_output: a race on device memory: the 256-byte "
                          "allocation at ", " at byte 0 (element 0",
                          "thread (0, 0, 0) of block (1, 0, 0) writes it",
                          "thread (0, 0, 0) of block (0, 0, 0) wrote it"};
    expect_race("blocks_same_output", "forward", 32, want, 4);
    const char *inplace[] = {"kernel shift_in_place: a race on device memory", " at byte 4 ",
                             "thread (1, 0, 0) of block (0, 0, 0) writes it",
                             "thread (0, 0, 0) of block (0, 0, 0) read it"};
    expect_race("shift_in_place", "forward", 32, inplace, 4);
}

/* The same kernels with their barriers (or atomics): no report, and the right values. */
static void race_detector__correct_kernels_pass(void **state)
{
    (void)state;
    float out[N];
    char msg[1024];
    const char *schedules[] = {"forward", "reverse", "random", "compare"};
    for (int s = 0; s < 4; s++) {
        const unsigned long long before = cr_emu_race_bytes_checked();
        if (run("shift_synced", schedules[s], N, out, msg, sizeof msg) != 0)
            fail_msg("shift_synced (%s): %s", schedules[s], msg);
        for (int t = 0; t < N; t++) assert_float_equal(out[t], t + 1 < N ? t + 2 : 0, 0);
        if (cr_emu_race_bytes_checked() == before)
            fail_msg("the race detector checked nothing: is this the race build?");
        if (run("tree_sum_synced", schedules[s], N, out, msg, sizeof msg) != 0)
            fail_msg("tree_sum_synced (%s): %s", schedules[s], msg);
        assert_float_equal(out[0], N * (N + 1) / 2, 0);
        if (run("warp_swap_synced", schedules[s], 32, out, msg, sizeof msg) != 0)
            fail_msg("warp_swap_synced (%s): %s", schedules[s], msg);
        for (int t = 0; t < 32; t++) assert_float_equal(out[t], (t ^ 1) + 1, 0);
        if (run("blocks_atomic_sum", schedules[s], 32, out, msg, sizeof msg) != 0)
            fail_msg("blocks_atomic_sum (%s): %s", schedules[s], msg);
        assert_float_equal(out[0], 2 * 32 * 33 / 2, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(race_detector__shared_read_before_neighbour_writes),
        cmocka_unit_test(race_detector__tree_sum_without_its_barrier),
        cmocka_unit_test(race_detector__warp_exchange_without_syncwarp),
        cmocka_unit_test(race_detector__two_blocks_write_one_float),
        cmocka_unit_test(race_detector__correct_kernels_pass),
    };
    return cr_run_tests("ch05_race", tests);
}
