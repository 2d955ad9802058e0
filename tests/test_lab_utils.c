/* test_lab_utils.c — the labs' helpers: argument parsing, CSV with provenance,
 * timing (median, bench loop). Suite: lib. */
#include "cr_test.h"
#include "test_files.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "csv.h"
#include "progress.h"
#include "timing.h"

/* ---- helpers ------------------------------------------------------------- */

/* Fails the test unless haystack contains needle, showing both. */
#define assert_contains(haystack, needle)                                           \
    do {                                                                            \
        if (!strstr((haystack), (needle)))                                          \
            fail_msg("expected '%s' to contain '%s'", (haystack), (needle));        \
    } while (0)

/* True if a file exists at path. */
static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Reads a whole (small) file into a malloc'd NUL-terminated string. */
static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open '%s' to read it back", path);
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The options the args tests parse: a flag, a ranged int, an unranged int, a
 * string and a double. */
typedef struct {
    int quick, threads, count;
    const char *csv;
    double scale;
    cr_arg table[5];
} opts;

/* Fills o with defaults and its option table. */
static void opts_init(opts *o)
{
    o->quick = 0;
    o->threads = 2;
    o->count = 7;
    o->csv = NULL;
    o->scale = 1.0;
    const cr_arg table[5] = {
        {"quick", CR_ARG_FLAG, &o->quick, NULL, "small run", 0, -1},
        {"threads", CR_ARG_INT, &o->threads, "N", "threads", 1, 64},
        {"count", CR_ARG_INT, &o->count, "N", "a count", 1, 0},
        {"csv", CR_ARG_STRING, &o->csv, "FILE", "write results", 0, -1},
        {"scale", CR_ARG_DOUBLE, &o->scale, "X", "a scale", 0, -1},
    };
    memcpy(o->table, table, sizeof table);
}

/* Parses a NULL-terminated argument list (program name added) against o. */
static cr_status parse(opts *o, const char *const *args, int *help_shown)
{
    char *argv[16] = {"prog"};
    int argc = 1;
    for (; args[argc - 1]; argc++) argv[argc] = (char *)args[argc - 1];
    return cr_args_parse(argc, argv, o->table, 5, "prog", "a test program", help_shown);
}

/* Parses args, expects CR_EINVAL and a message holding want. */
static void expect_error(const char *const *args, const char *want)
{
    opts o;
    opts_init(&o);
    int help = 0;
    assert_cr_fails(parse(&o, args, &help), CR_EINVAL);
    assert_contains(cr_last_error(), want);
    assert_int_equal(help, 0);
}

/* ---- args ---------------------------------------------------------------- */

/* "--name value" and "--name=value" both set every kind of value. */
static void args__both_value_syntaxes(void **state)
{
    (void)state;
    opts o;
    opts_init(&o);
    int help = -1;
    const char *a1[] = {"--quick", "--threads", "4", "--csv", "out.csv", "--scale", "0.25",
                        "--count", "-3", NULL};
    assert_cr_ok(parse(&o, a1, &help));
    assert_int_equal(help, 0);
    assert_int_equal(o.quick, 1);
    assert_int_equal(o.threads, 4);
    assert_int_equal(o.count, -3);
    assert_string_equal(o.csv, "out.csv");
    assert_true(o.scale == 0.25);

    opts_init(&o);
    const char *a2[] = {"--threads=64", "--csv=x=y.csv", "--scale=-2e3", "--count=0", NULL};
    assert_cr_ok(parse(&o, a2, &help));
    assert_int_equal(o.quick, 0);
    assert_int_equal(o.threads, 64);
    assert_int_equal(o.count, 0);
    assert_string_equal(o.csv, "x=y.csv");
    assert_true(o.scale == -2000.0);
}

/* No arguments leaves every default as it was. */
static void args__defaults_kept(void **state)
{
    (void)state;
    opts o;
    opts_init(&o);
    const char *none[] = {NULL};
    assert_cr_ok(parse(&o, none, NULL));
    assert_int_equal(o.threads, 2);
    assert_int_equal(o.quick, 0);
    assert_null(o.csv);
}

/* An option not in the table is refused, with or without "=value". */
static void args__unknown_option(void **state)
{
    (void)state;
    expect_error((const char *const[]){"--foo", NULL}, "unknown option '--foo' (see --help)");
    expect_error((const char *const[]){"--foo=3", NULL}, "unknown option '--foo'");
    expect_error((const char *const[]){"-x", NULL}, "unknown option '-x'");
    expect_error((const char *const[]){"--thread", "2", NULL}, "unknown option '--thread'");
}

/* A value option at the end, or followed by another option, misses its value. */
static void args__missing_value(void **state)
{
    (void)state;
    expect_error((const char *const[]){"--csv", NULL}, "--csv: missing value (expected FILE)");
    expect_error((const char *const[]){"--threads", "--quick", NULL},
                 "--threads: missing value (expected N)");
    expect_error((const char *const[]){"--csv=", NULL}, "--csv: missing value (expected FILE)");
}

/* Integers are parsed whole: trailing junk, empty, blanks and overflow are refused. */
static void args__int_strict(void **state)
{
    (void)state;
    expect_error((const char *const[]){"--count", "12abc", NULL},
                 "--count: expected an integer, got '12abc'");
    expect_error((const char *const[]){"--count=", NULL}, "--count: expected an integer, got ''");
    expect_error((const char *const[]){"--count", " 12", NULL}, "--count: expected an integer");
    expect_error((const char *const[]){"--count", "1.5", NULL}, "--count: expected an integer");
    expect_error((const char *const[]){"--count", "99999999999999999999", NULL},
                 "got '99999999999999999999'");
    expect_error((const char *const[]){"--count", "3000000000", NULL},
                 "--count: expected an integer"); /* fits long long, not int */
}

/* Integers outside the table's range are refused with the range in the message. */
static void args__int_range(void **state)
{
    (void)state;
    expect_error((const char *const[]){"--threads", "0", NULL},
                 "--threads: expected an integer in 1..64, got '0'");
    expect_error((const char *const[]){"--threads=65", NULL},
                 "--threads: expected an integer in 1..64, got '65'");
    expect_error((const char *const[]){"--threads", "x", NULL},
                 "--threads: expected an integer in 1..64, got 'x'");
    opts o;
    opts_init(&o);
    assert_cr_ok(parse(&o, (const char *const[]){"--threads", "1", NULL}, NULL));
    assert_int_equal(o.threads, 1);
}

/* Doubles are parsed whole and must be finite. */
static void args__double_strict(void **state)
{
    (void)state;
    expect_error((const char *const[]){"--scale", "abc", NULL}, "--scale: expected a number, got 'abc'");
    expect_error((const char *const[]){"--scale", "1e999", NULL}, "--scale: expected a number");
    expect_error((const char *const[]){"--scale", "nan", NULL}, "--scale: expected a number");
    expect_error((const char *const[]){"--scale", "2x", NULL}, "--scale: expected a number");
}

/* A flag takes no "=value". */
static void args__flag_takes_no_value(void **state)
{
    (void)state;
    expect_error((const char *const[]){"--quick=1", NULL}, "--quick: takes no value");
}

/* Positional arguments are refused. */
static void args__positional_refused(void **state)
{
    (void)state;
    expect_error((const char *const[]){"extra", NULL}, "unexpected argument 'extra'");
    expect_error((const char *const[]){"--threads", "2", "3", NULL}, "unexpected argument '3'");
}

/* --help prints the usage to stdout, sets *help_shown and stops parsing. */
static void args__help(void **state)
{
    (void)state;
    char dir[64], path[96];
    cr_test_temp_dir(dir, sizeof dir, "cr_test_lab_utils");
    snprintf(path, sizeof path, "%s/help.txt", dir);

    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDOUT_FILENO);
    opts o;
    opts_init(&o);
    int help = 0;
    cr_status st = parse(&o, (const char *const[]){"--help", "--bogus", NULL}, &help);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(fd);

    assert_cr_ok(st);
    assert_int_equal(help, 1);
    char *text = read_all(path);
    assert_contains(text, "usage: prog [options]");
    assert_contains(text, "a test program");
    assert_contains(text, "--threads N");
    assert_contains(text, "[1..64]");
    assert_contains(text, "--csv FILE");
    assert_contains(text, "--quick");
    assert_contains(text, "--help");
    free(text);
    remove(path);
    rmdir(dir);
}

/* ---- csv ----------------------------------------------------------------- */

/* The provenance lines, the extra keys, the header and the rows read back as written. */
static void csv__header_and_rows(void **state)
{
    (void)state;
    char dir[64], path[96];
    cr_test_temp_dir(dir, sizeof dir, "cr_test_lab_utils");
    snprintf(path, sizeof path, "%s/out.csv", dir);

    const char *const extra[] = {"seed", "42", "note", "a, b\nc", NULL};
    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, path, "test_prog", 3, extra));
    assert_cr_ok(cr_csv_columns(c, (const char *const[]){"case", "ms", "gflops", NULL}));
    assert_cr_ok(cr_csv_row(c, "%s,%.3f,%d", "a_3x3_64", 1.5, 7));
    assert_cr_ok(cr_csv_row(c, "b,%d,%d", 2, 8));
    assert_cr_ok(cr_csv_close(c));

    char *text = read_all(path);
    const char *keys[] = {"# program: test_prog\n", "# machine: ", "# cpu: ",
                          "# threads: 3\n", "# compiler: ", "# flags: ", "# git: ",
                          "# date: ", "# seed: 42\n", "# note: a, b c\n"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) assert_contains(text, keys[i]);
    assert_contains(text, "\ncase,ms,gflops\na_3x3_64,1.500,7\nb,2,8\n");

    /* Every line before the header is a "# key: value" line. */
    char *header = strstr(text, "case,ms,gflops");
    for (char *line = text; line < header; line = strchr(line, '\n') + 1)
        assert_true(strncmp(line, "# ", 2) == 0 && strstr(line, ": ") != NULL);

    /* The date is UTC ISO 8601: 2024-05-01T12:34:56Z. */
    int y, mo, d, h, mi, s;
    char z = 0;
    assert_int_equal(sscanf(strstr(text, "# date: "), "# date: %4d-%2d-%2dT%2d:%2d:%2d%c",
                            &y, &mo, &d, &h, &mi, &s, &z), 7);
    assert_int_equal(z, 'Z');
    assert_true(y >= 2024 && mo >= 1 && mo <= 12);
    free(text);
    remove(path);
    rmdir(dir);
}

/* Until close the rows live in a temporary PATH.tmp.XXXXXX and PATH does not exist;
 * close renames. */
static void csv__tmp_then_rename(void **state)
{
    (void)state;
    char dir[64], path[96], tmp[112];
    cr_test_temp_dir(dir, sizeof dir, "cr_test_lab_utils");
    snprintf(path, sizeof path, "%s/out.csv", dir);

    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, path, "p", 1, NULL));
    assert_non_null(cr_csv_temp_path(c));
    snprintf(tmp, sizeof tmp, "%s", cr_csv_temp_path(c));
    assert_int_equal(strncmp(tmp, path, strlen(path)), 0);
    assert_cr_ok(cr_csv_columns(c, (const char *const[]){"x", NULL}));
    assert_cr_ok(cr_csv_row(c, "1"));
    assert_false(file_exists(path));
    assert_true(file_exists(tmp));
    assert_cr_ok(cr_csv_close(c));
    assert_true(file_exists(path));
    assert_false(file_exists(tmp));
    remove(path);
    rmdir(dir);
}

/* Abort removes the temporary file and leaves an existing PATH untouched. */
static void csv__abort_leaves_nothing(void **state)
{
    (void)state;
    char dir[64], path[96], tmp[112];
    cr_test_temp_dir(dir, sizeof dir, "cr_test_lab_utils");
    snprintf(path, sizeof path, "%s/out.csv", dir);

    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, path, "p", 1, NULL));
    snprintf(tmp, sizeof tmp, "%s", cr_csv_temp_path(c));
    assert_cr_ok(cr_csv_row(c, "1,2"));
    cr_csv_abort(c);
    assert_false(file_exists(path));
    assert_false(file_exists(tmp));

    FILE *f = fopen(path, "w");
    fputs("old results\n", f);
    fclose(f);
    assert_cr_ok(cr_csv_open(&c, path, "p", 1, NULL));
    snprintf(tmp, sizeof tmp, "%s", cr_csv_temp_path(c));
    assert_true(file_exists(tmp));
    cr_csv_abort(c);
    assert_false(file_exists(tmp));
    char *text = read_all(path);
    assert_string_equal(text, "old results\n");
    free(text);
    cr_csv_abort(NULL); /* a no-op */
    remove(path);
    rmdir(dir);
}

/* A path in a directory that does not exist fails with CR_EIO naming the path. */
static void csv__unwritable_directory(void **state)
{
    (void)state;
    const char *path = "/nonexistent-cr-dir/sub/out.csv";
    cr_csv *c = (cr_csv *)&c; /* must be reset to NULL */
    assert_cr_fails(cr_csv_open(&c, path, "p", 1, NULL), CR_EIO);
    assert_null(c);
    assert_contains(cr_last_error(), path);
    assert_contains(cr_last_error(), "No such file or directory");
}

/* A new temporary dir/out.csv (names into dir and path) opened with its header row. */
static cr_csv *open_with_columns(char dir[64], char path[96], const char *const *columns)
{
    cr_test_temp_dir(dir, 64, "cr_test_lab_utils");
    snprintf(path, 96, "%s/out.csv", dir);
    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, path, "p", 1, NULL));
    assert_cr_ok(cr_csv_columns(c, columns));
    return c;
}

/* A row holding a newline is refused (CR_EINVAL) and nothing of it is written. */
static void csv__row_with_newline_refused(void **state)
{
    (void)state;
    char dir[64], path[96];
    cr_csv *c = open_with_columns(dir, path, (const char *const[]){"a", "b", NULL});
    assert_cr_fails(cr_csv_row(c, "1,%s", "two\nlines"), CR_EINVAL);
    assert_contains(cr_last_error(), "one line");
    assert_cr_fails(cr_csv_row(c, "1,2\r"), CR_EINVAL);
    assert_cr_fails(cr_csv_columns(c, (const char *const[]){"a\n", NULL}), CR_EINVAL);
    assert_cr_ok(cr_csv_row(c, "3,4"));
    assert_cr_ok(cr_csv_close(c));
    char *text = read_all(path);
    assert_contains(text, "\na,b\n3,4\n");
    assert_null(strstr(text, "two"));
    free(text);
    remove(path);
    rmdir(dir);
}

/* After the header, a row with more or fewer fields than it (a note holding a comma, a
 * missing column) is refused, names both counts and writes nothing; empty fields count. */
static void csv__row_field_count_checked(void **state)
{
    (void)state;
    char dir[64], path[96];
    cr_csv *c = open_with_columns(dir, path, (const char *const[]){"case", "ms", "note", NULL});
    assert_cr_fails(cr_csv_row(c, "a,1.0,%s", "direct, flat"), CR_EINVAL);
    assert_contains(cr_last_error(), "3 fields");
    assert_contains(cr_last_error(), "got 4");
    assert_cr_fails(cr_csv_row(c, "a,1.0"), CR_EINVAL);
    assert_contains(cr_last_error(), "got 2");
    assert_cr_ok(cr_csv_row(c, "b,,"));
    assert_cr_ok(cr_csv_row(c, "c,2.0,direct/flat"));
    assert_cr_ok(cr_csv_close(c));
    char *text = read_all(path);
    assert_contains(text, "\ncase,ms,note\nb,,\nc,2.0,direct/flat\n");
    assert_null(strstr(text, "flat\na"));
    assert_null(strstr(text, "\na,"));
    free(text);
    remove(path);
    rmdir(dir);
}

/* The provenance getters return one-line, non-empty strings. */
static void csv__provenance_values(void **state)
{
    (void)state;
    const char *values[] = {cr_cpu_model(), cr_machine_name(), cr_build_compiler(),
                            cr_build_flags(), cr_git_revision()};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        assert_non_null(values[i]);
        assert_true(values[i][0] != '\0');
        assert_null(strpbrk(values[i], "\r\n"));
    }
}

/* ---- timing -------------------------------------------------------------- */

/* The median of an odd count is the middle value; the input is not reordered. */
static void timing__median_odd(void **state)
{
    (void)state;
    double v[] = {5.0, 1.0, 4.0, 2.0, 3.0};
    assert_true(cr_median(v, 5) == 3.0);
    assert_true(v[0] == 5.0 && v[4] == 3.0);
    double one[] = {7.5};
    assert_true(cr_median(one, 1) == 7.5);
}

/* The median of an even count is the mean of the middle two. */
static void timing__median_even(void **state)
{
    (void)state;
    double v[] = {10.0, 1.0, 4.0, 2.0};
    assert_true(cr_median(v, 4) == 3.0);
    double two[] = {2.0, 1.0};
    assert_true(cr_median(two, 2) == 1.5);
}

/* Counts calls and fails (returns fail_code) on call number fail_at (0: never). */
typedef struct {
    int calls, fail_at, fail_code;
} bench_ctx;

/* The benchmarked function: counts its calls. */
static int count_calls(void *p)
{
    bench_ctx *c = p;
    c->calls++;
    return c->calls == c->fail_at ? c->fail_code : 0;
}

/* cr_bench makes warmup + repeats calls and times the repeats. */
static void timing__bench_counts_calls(void **state)
{
    (void)state;
    bench_ctx ctx = {0, 0, 0};
    cr_bench_opts o = cr_bench_defaults();
    assert_int_equal(o.warmup, 1);
    assert_int_equal(o.repeats, 5);
    assert_int_equal(o.flush, 1);
    o.warmup = 2;
    o.repeats = 3;
    o.flush = 0;
    int st = -1;
    cr_bench_result r = cr_bench(count_calls, &ctx, &o, &st);
    assert_int_equal(st, 0);
    assert_int_equal(ctx.calls, 5);
    assert_int_equal(r.runs, 3);
    assert_true(r.min >= 0 && r.min <= r.median && r.median <= r.max);

    ctx.calls = 0; /* min_time keeps repeating, up to max_repeats */
    o.min_time = 1e9;
    o.max_repeats = 6;
    r = cr_bench(count_calls, &ctx, &o, NULL);
    assert_int_equal(r.runs, 6);
    assert_int_equal(ctx.calls, 8);
}

/* A nonzero return stops the loop and comes back through status_out. */
static void timing__bench_propagates_failure(void **state)
{
    (void)state;
    cr_bench_opts o = cr_bench_defaults();
    o.flush = 0;
    bench_ctx ctx = {0, 3, 7}; /* fails on the first timed run after one warm-up... */
    o.warmup = 1;
    o.repeats = 5;
    int st = 0;
    cr_bench_result r = cr_bench(count_calls, &ctx, &o, &st);
    assert_int_equal(st, 7);
    assert_int_equal(ctx.calls, 3);
    assert_int_equal(r.runs, 0);
    assert_true(r.median == 0.0);

    bench_ctx warm = {0, 1, -2}; /* ...or in the warm-up */
    r = cr_bench(count_calls, &warm, &o, &st);
    assert_int_equal(st, -2);
    assert_int_equal(warm.calls, 1);
    assert_int_equal(r.runs, 0);
}

/* cr_now never goes back; a cache flush takes measurable time. */
static void timing__now_and_flush(void **state)
{
    (void)state;
    double t0 = cr_now();
    cr_flush_cache();
    double t1 = cr_now();
    assert_true(t1 > t0);
}

/* Not on a terminal (stderr sent to a file), the progress line ends with one plain
 * summary line: no carriage returns or escape codes in a log. */
static void progress__plain_lines_off_a_terminal(void **state)
{
    (void)state;
    char dir[256], path[300];
    cr_test_temp_dir(dir, sizeof dir, "cr_test_lab_utils");
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(fileno(stderr));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    dup2(fileno(f), fileno(stderr));
    cr_progress p;
    cr_progress_begin(&p, "stack", 3);
    for (int i = 0; i < 3; i++) cr_progress_step(&p, "k=3");
    cr_progress_end(&p);
    fflush(stderr);
    dup2(saved, fileno(stderr));
    close(saved);
    fclose(f);
    char buf[512] = {0};
    f = fopen(path, "r");
    assert_non_null(f);
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    remove(path);
    rmdir(dir);
    assert_true(got > 0);
    assert_non_null(strstr(buf, "stack: 3/3 done in "));
    assert_null(strchr(buf, '\r'));
    assert_null(strchr(buf, '\033'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(args__both_value_syntaxes),
        cmocka_unit_test(args__defaults_kept),
        cmocka_unit_test(args__unknown_option),
        cmocka_unit_test(args__missing_value),
        cmocka_unit_test(args__int_strict),
        cmocka_unit_test(args__int_range),
        cmocka_unit_test(args__double_strict),
        cmocka_unit_test(args__flag_takes_no_value),
        cmocka_unit_test(args__positional_refused),
        cmocka_unit_test(args__help),
        cmocka_unit_test(csv__header_and_rows),
        cmocka_unit_test(csv__tmp_then_rename),
        cmocka_unit_test(csv__abort_leaves_nothing),
        cmocka_unit_test(csv__unwritable_directory),
        cmocka_unit_test(csv__row_with_newline_refused),
        cmocka_unit_test(csv__row_field_count_checked),
        cmocka_unit_test(csv__provenance_values),
        cmocka_unit_test(timing__median_odd),
        cmocka_unit_test(timing__median_even),
        cmocka_unit_test(timing__bench_counts_calls),
        cmocka_unit_test(timing__bench_propagates_failure),
        cmocka_unit_test(timing__now_and_flush),
        cmocka_unit_test(progress__plain_lines_off_a_terminal),
    };
    return cr_run_tests("lab_utils", tests);
}
