/* test_lab_load.c — suite lib: what the labs record about the machine besides the
 * numbers (issue 10): the load and CPU steal parsed from /proc text, the "busy"
 * rule, the provenance line, and the OpenMP team size really obtained; and the
 * helpers labs 4, 6, 7 and 8 share (median, p90, VmHWM; batch lists, FPN sizes).
 *
 *   test_lab_load            runs the tests
 *   test_lab_load --team N   (used by the tests) prints "threads asked" after
 *                            lab_init(--threads N), then exits */
#include "cr_test.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cr_config.h"
#include "lab_common.h"
#include "rng.h"
#include "test_files.h"

static const char *self_path;  /* argv[0], re-run with --team */

/* A /proc/stat as Linux 6.x writes it (cpu0 and cpu1 differ from the sum on
 * purpose, so that reading the wrong line is seen). */
static const char stat_text[] =
    "cpu  4705 356 584 3699176 2331 0 35 123 0 0\n"
    "cpu0 1000 100 100 900000 500 0 10 7 0 0\n"
    "cpu1 3705 256 484 2799176 1831 0 25 116 0 0\n"
    "intr 1234 5 6\n"
    "ctxt 987654\n";

/* The "cpu " line is summed over its first eight fields; steal is the eighth. */
static void load__parses_the_cpu_line(void **state)
{
    (void)state;
    lab_cpu_times t;
    assert_int_equal(lab_parse_cpu_times(stat_text, &t), 1);
    assert_true(t.ok);
    assert_int_equal(t.total, 4705ULL + 356 + 584 + 3699176 + 2331 + 0 + 35 + 123);
    assert_int_equal(t.steal, 123);
}

/* The "cpu " line need not be the first; guest fields are not added twice. */
static void load__finds_the_line_anywhere(void **state)
{
    (void)state;
    lab_cpu_times t;
    assert_int_equal(lab_parse_cpu_times("btime 1\ncpu 10 20 30 40 50 60 70 80 90 100\n", &t), 1);
    assert_int_equal(t.total, 360);
    assert_int_equal(t.steal, 80);
}

/* An old kernel's four fields: no steal counter, steal reads 0. */
static void load__old_kernel_has_no_steal(void **state)
{
    (void)state;
    lab_cpu_times t;
    assert_int_equal(lab_parse_cpu_times("cpu 5 6 7 8\n", &t), 1);
    assert_int_equal(t.total, 26);
    assert_int_equal(t.steal, 0);
}

/* Text without a usable "cpu " line is refused (ok = 0), not read as zeros. */
static void load__refuses_bad_text(void **state)
{
    (void)state;
    lab_cpu_times t;
    assert_int_equal(lab_parse_cpu_times("", &t), 0);
    assert_false(t.ok);
    assert_int_equal(lab_parse_cpu_times("cpu0 1 2 3 4 5 6 7 8\n", &t), 0);
    assert_int_equal(lab_parse_cpu_times("cpu 1 2 x\n", &t), 0);
    assert_false(t.ok);
}

/* Steal percent over an interval: 30 stolen ticks of 600 is 5%. */
static void load__steal_percent(void **state)
{
    (void)state;
    lab_cpu_times a = {1000, 40, 1}, b = {1600, 70, 1};
    assert_float_equal(lab_steal_percent(&a, &b), 5.0, 1e-12);
    lab_cpu_times c = {1600, 100, 1};
    assert_float_equal(lab_steal_percent(&a, &c), 10.0, 1e-12);
    lab_cpu_times unknown = {0, 0, 0};
    assert_true(lab_steal_percent(&a, &unknown) < 0);
    assert_true(lab_steal_percent(&a, &a) < 0);  /* no time passed */
}

/* The load average is the first number of /proc/loadavg. */
static void load__parses_loadavg(void **state)
{
    (void)state;
    double l = -1;
    assert_int_equal(lab_parse_loadavg("1.90 0.82 0.31 3/412 12345\n", &l), 1);
    assert_float_equal(l, 1.90, 1e-12);
    assert_int_equal(lab_parse_loadavg("", &l), 0);
    assert_int_equal(lab_parse_loadavg("busy", &l), 0);
    assert_float_equal(l, 1.90, 1e-12);
}

/* Busy: load above the thread count or more than 5% stolen; unknowns (-1) are not. */
static void load__busy_rule(void **state)
{
    (void)state;
    assert_false(lab_machine_busy(1.9, 0.0, 2));
    assert_true(lab_machine_busy(2.1, 0.0, 2));
    assert_false(lab_machine_busy(0.5, 5.0, 2));
    assert_true(lab_machine_busy(0.5, 5.1, 2));
    assert_false(lab_machine_busy(-1, -1, 1));
}

/* The timing commands' spin: only with a known load below the CPU count. */
static void load__spin_only_when_quiet(void **state)
{
    (void)state;
    assert_int_equal(lab_spin_for_load(0.3, 2), LAB_QUIET_SPINCOUNT);
    assert_int_equal(lab_spin_for_load(1.99, 2), LAB_QUIET_SPINCOUNT);
    assert_int_equal(lab_spin_for_load(2.0, 2), 0);
    assert_int_equal(lab_spin_for_load(4.7, 2), 0);
    assert_int_equal(lab_spin_for_load(-1, 2), 0);    /* load unknown */
    assert_int_equal(lab_spin_for_load(0.3, -1), 0);  /* CPU count unknown */
}

/* The policy as the labs print it and write it into a CSV field: no comma. */
static void load__wait_policy_string(void **state)
{
    (void)state;
    char buf[64];
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
    lab_wait_policy_str(buf, sizeof buf);
    assert_string_equal(buf, "(unset)");
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    lab_wait_policy_str(buf, sizeof buf);
    assert_string_equal(buf, "PASSIVE");
    setenv("GOMP_SPINCOUNT", "10000", 1);
    lab_wait_policy_str(buf, sizeof buf);
    assert_string_equal(buf, "PASSIVE;GOMP_SPINCOUNT=10000");
    setenv("OMP_WAIT_POLICY", "active,passive", 1);   /* a comma would cut the CSV row */
    lab_wait_policy_str(buf, sizeof buf);
    assert_string_equal(buf, "active;passive;GOMP_SPINCOUNT=10000");
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
}

/* The provenance line, with "unknown" for what could not be read. */
static void load__provenance_line(void **state)
{
    (void)state;
    lab_load before = {0.12, {1000, 40, 1}}, after = {1.9, {1600, 40, 1}};
    char buf[128];
    lab_load_str(&before, &after, buf, sizeof buf);
    assert_string_equal(buf, "before 0.12, after 1.90; steal 0.0%");
    lab_load none = {-1, {0, 0, 0}};
    lab_load_str(&none, &after, buf, sizeof buf);
    assert_string_equal(buf, "before unknown, after 1.90; steal unknown");
}

/* Runs this program with --team asked under OMP_THREAD_LIMIT=limit; returns what
 * it printed ("threads asked"). */
static void run_team(int asked, const char *limit, char *out, size_t len)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        if (limit) setenv("OMP_THREAD_LIMIT", limit, 1);
        else unsetenv("OMP_THREAD_LIMIT");
        char n[16];
        snprintf(n, sizeof n, "%d", asked);
        execl(self_path, self_path, "--team", n, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], out, len - 1);
    close(fd[0]);
    out[got > 0 ? got : 0] = '\0';
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Under OMP_THREAD_LIMIT=1, --threads 4 records 1 thread (and 4 asked); without a
 * limit, --threads 3 gets 3. */
static void load__records_the_real_team_size(void **state)
{
    (void)state;
    if (!CR_HAVE_OPENMP) skip();
    char out[64];
    run_team(4, "1", out, sizeof out);
    assert_string_equal(out, "1 4\n");
    run_team(3, NULL, out, sizeof out);
    assert_string_equal(out, "3 3\n");
}

/* Median and p90 of small hand-worked lists, given unsorted; the list comes back sorted. */
static void latency__median_p90_by_hand(void **state)
{
    (void)state;
    double med, p90;
    double four[] = {7, 1, 5, 3};   /* median (3+5)/2; p90: rank ceil(3.6) = 4 */
    lab_median_p90(four, 4, &med, &p90);
    assert_true(med == 4.0 && p90 == 7.0);
    assert_true(four[0] == 1 && four[1] == 3 && four[2] == 5 && four[3] == 7);
    double five[] = {9, 2, 7, 4, 5};   /* median 5; p90: rank ceil(4.5) = 5 */
    lab_median_p90(five, 5, &med, &p90);
    assert_true(med == 5.0 && p90 == 9.0);
    double ten[] = {10, 3, 8, 1, 6, 9, 2, 7, 4, 5};   /* median 5.5; p90: rank 9 */
    lab_median_p90(ten, 10, &med, NULL);
    assert_true(med == 5.5);
    lab_median_p90(ten, 10, &med, &p90);
    assert_true(p90 == 9.0);
    double one[] = {0.25};
    lab_median_p90(one, 1, &med, &p90);
    assert_true(med == 0.25 && p90 == 0.25);
    lab_median_p90(one, 0, &med, &p90);
    assert_true(isnan(med) && isnan(p90));
}

/* A shuffled 1..n for random n: median (n+1)/2, p90 the smallest rank k with
 * 10k >= 9n (nearest rank, in integers), and t sorted afterwards. */
static void latency__median_p90_shuffled(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    printf("seed %llu\n", (unsigned long long)seed);
    cr_rng r;
    cr_rng_seed(&r, seed);
    double t[1000];
    for (int c = 0, cases = cr_test_count(200); c < cases; c++) {
        const int n = (int)cr_rng_int(&r, 1, 1000);
        for (int i = 0; i < n; i++) t[i] = i + 1;
        for (int i = n - 1; i > 0; i--) {
            const int j = (int)cr_rng_int(&r, 0, i);
            const double v = t[i];
            t[i] = t[j];
            t[j] = v;
        }
        int k = 1;
        while (10 * k < 9 * n) k++;
        double med, p90;
        lab_median_p90(t, n, &med, &p90);
        if (med != (n + 1) / 2.0 || p90 != k)
            fail_msg("n %d: median %g (want %g), p90 %g (want %d); CR_SEED=%llu replays", n, med,
                     (n + 1) / 2.0, p90, k, (unsigned long long)seed);
        for (int i = 0; i < n; i++)
            if (t[i] != i + 1) fail_msg("n %d: t[%d] = %g after sorting (CR_SEED=%llu)", n, i, t[i],
                                        (unsigned long long)seed);
    }
}

/* The comparison orders, and VmHWM is read (Linux) and stays readable after a reset. */
static void latency__cmp_and_hwm(void **state)
{
    (void)state;
    const double a = -1.5, b = 2.0;
    assert_int_equal(lab_cmp_double(&a, &b), -1);
    assert_int_equal(lab_cmp_double(&b, &a), 1);
    assert_int_equal(lab_cmp_double(&a, &a), 0);
    const double before = lab_vm_hwm_mib();
    assert_true(before > 0);
    if (lab_reset_hwm()) {
        const double after = lab_vm_hwm_mib();
        assert_true(after > 0 && after <= before + 1);
    }
}

/* Batch lists: the counts and limits hold, and every malformed list is refused. */
static void parse__batch_lists(void **state)
{
    (void)state;
    int v[4] = {0};
    assert_int_equal(lab_parse_batches("3,17,256", v, 4, 256), 3);
    assert_true(v[0] == 3 && v[1] == 17 && v[2] == 256);
    assert_int_equal(lab_parse_batches("5", v, 1, 8), 1);
    assert_int_equal(v[0], 5);
    const char *bad[] = {"", "1,,2", ",1", "1x", "1;2", "0", "257", "1,2,3,4,5", "-1"};
    for (int i = 0; i < LAB_COUNT(bad); i++)
        if (lab_parse_batches(bad[i], v, 4, 256) != 0) fail_msg("'%s' was taken", bad[i]);
    assert_int_equal(lab_parse_batches(NULL, v, 4, 256), 0);
}

/* FPN sizes: multiples of 32 in 32..8192 are taken as H, W; the rest refused. */
static void parse__fpn_sizes(void **state)
{
    (void)state;
    int64_t h = 0, w = 0;
    assert_int_equal(lab_parse_fpn_size("t", "size", "384x480", &h, &w), 1);
    assert_true(h == 384 && w == 480);
    assert_int_equal(lab_parse_fpn_size("t", "size", "32x8192", &h, &w), 1);
    assert_true(h == 32 && w == 8192);
    const char *bad[] = {"", "384", "384x470", "16x32", "8224x32", "384x480x", "x480", "384*480"};
    for (int i = 0; i < LAB_COUNT(bad); i++) {
        h = w = 7;
        if (lab_parse_fpn_size("t", "size", bad[i], &h, &w) != 0 || h != 7 || w != 7)
            fail_msg("'%s' was taken", bad[i]);
    }
    assert_int_equal(lab_parse_fpn_size("t", "size", NULL, &h, &w), 0);
}

/* A lab run whose CSV refused a row (a comma in a note) writes no CSV and fails, where
 * the same run without that row writes it: a file missing rows never passes for whole. */
static void csv__refused_row_fails_the_run(void **state)
{
    (void)state;
    char dir[64], path[96];
    cr_test_temp_dir(dir, sizeof dir, "cr_test_lab_load");
    snprintf(path, sizeof path, "%s/out.csv", dir);
    char *argv[] = {"t", "--csv", path, NULL};
    const char *const cols[] = {"case", "note", NULL};
    for (int bad = 0; bad < 2; bad++) {
        lab_ctx ctx;
        assert_int_equal(lab_init(&ctx, 3, argv, "t", "csv refusal", NULL, 0), LAB_RUN);
        assert_cr_ok(lab_csv_begin(&ctx, cols, NULL));
        assert_cr_ok(lab_csv_row(&ctx, "a,plain note"));
        if (bad) assert_cr_fails(lab_csv_row(&ctx, "b,%s", "direct, flat"), CR_EINVAL);
        assert_cr_ok(lab_csv_row(&ctx, "c,another"));
        assert_int_equal(lab_finish(&ctx, LAB_EXIT_OK), bad ? LAB_EXIT_FAILED : LAB_EXIT_OK);
        assert_int_equal(access(path, F_OK) == 0, !bad);
        remove(path);
    }
    assert_int_equal(rmdir(dir), 0);   /* no temporary file left behind either */
}

/* --team N: lab_init with --threads N, then prints "threads threads_asked". */
static int team_child(const char *n)
{
    char *argv[] = {"test_lab_load", "--threads", (char *)n, NULL};
    lab_ctx ctx;
    if (lab_init(&ctx, 3, argv, "test_lab_load", "team size", NULL, 0) != LAB_RUN) return 3;
    printf("%d %d\n", ctx.threads, ctx.threads_asked);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--team") == 0) return team_child(argv[2]);
    self_path = argv[0];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(load__parses_the_cpu_line),
        cmocka_unit_test(load__finds_the_line_anywhere),
        cmocka_unit_test(load__old_kernel_has_no_steal),
        cmocka_unit_test(load__refuses_bad_text),
        cmocka_unit_test(load__steal_percent),
        cmocka_unit_test(load__parses_loadavg),
        cmocka_unit_test(load__busy_rule),
        cmocka_unit_test(load__spin_only_when_quiet),
        cmocka_unit_test(load__wait_policy_string),
        cmocka_unit_test(load__provenance_line),
        cmocka_unit_test(load__records_the_real_team_size),
        cmocka_unit_test(latency__median_p90_by_hand),
        cmocka_unit_test(latency__median_p90_shuffled),
        cmocka_unit_test(latency__cmp_and_hwm),
        cmocka_unit_test(parse__batch_lists),
        cmocka_unit_test(parse__fpn_sizes),
        cmocka_unit_test(csv__refused_row_fails_the_run),
    };
    return cr_run_tests("lab load and threads", tests);
}
