/* test_atomic_write.c — suite lib: nothing lost, nothing misreported when writing
 * an output (issues 7 and 10; the rule is in lib/atomic_file.h).
 *
 *   test_atomic_write LAB     LAB: a lab binary (build/labs/lab02-im2col), run with
 *                             --quick --csv OUT and interrupted mid-run
 *
 * The library's writers (CSV, safetensors, PNG) write a unique temporary file
 * PATH.tmp.XXXXXX and rename it to PATH when complete; a device, FIFO or /dev/stdout
 * is written directly, a link is followed (the link stays), a directory is refused.
 * The interruption tests stop each writer between two writes, deterministically:
 * the lab is signalled once its temporary file exists; the safetensors and PNG
 * writers run in a child whose file size limit (RLIMIT_FSIZE) kills it with SIGXFSZ
 * after its first 4096 bytes. Then PATH must hold what it held before (nothing, or
 * the previous complete file). */
#include "cr_test.h"
#include "test_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "csv.h"
#include "png_io.h"
#include "safetensors.h"
#include "tensor.h"

static const char *lab_path;  /* argv[1] */

/* ------------------------------------------------------------------ helpers */

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Writes text to path (the "previous version" of an output). */
static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* True if path holds exactly text. */
static int holds_text(const char *path, const char *text)
{
    char buf[256] = "";
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strcmp(buf, text) == 0;
}

/* Writes into found (if non-NULL) the path of an entry of dir whose name starts with
 * prefix; returns how many such entries there are. */
static int find_prefixed(const char *dir, const char *prefix, char *found, size_t len)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            if (found && count == 0) snprintf(found, len, "%s/%s", dir, e->d_name);
            count++;
        }
    closedir(d);
    return count;
}

/* The number of entries of dir other than "." and "..". */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) count++;
    closedir(d);
    return count;
}

/* The whole contents of path (malloc'ed, NUL-terminated; *len receives the size),
 * or NULL if it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

/* The file type bits of path itself (lstat), or 0 if it does not exist. */
static mode_t file_type(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 ? (sb.st_mode & S_IFMT) : 0;
}

/* Fails the test unless the last error message contains needle. */
static void assert_error_says(const char *needle)
{
    if (!strstr(cr_last_error(), needle))
        fail_msg("expected the error to say '%s', got '%s'", needle, cr_last_error());
}

/* Waits for child pid; returns the signal that ended it (0 if it exited). */
static int wait_signal(pid_t pid)
{
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    assert_int_equal(r, pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* ------------------------------------------------------------------ the lab's CSV */

/* Starts LAB --quick --csv DIR/lab.csv (output to /dev/null), waits until its
 * temporary file DIR/lab.csv.tmp.XXXXXX appears (the CSV is open and being written)
 * and writes its path into tmp, sends sig, and returns the signal the lab died of. */
static int interrupt_lab(const char *dir, const char *out, char *tmp, size_t tmp_len, int sig)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        execl(lab_path, lab_path, "--quick", "--repeats", "1000", "--csv", out, (char *)NULL);
        _exit(127);
    }
    int seen = 0;
    for (int i = 0; i < 60000 / 5 && !seen; i++) {  /* up to a minute (slow sanitizer builds) */
        seen = find_prefixed(dir, "lab.csv.tmp.", tmp, tmp_len) > 0;
        if (!seen) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid)
                fail_msg("%s ended (status %d) before its CSV was open", lab_path, status);
            sleep_ms(5);
        }
    }
    if (!seen) {
        kill(pid, SIGKILL);
        wait_signal(pid);
        fail_msg("%s never created %s.tmp.XXXXXX", lab_path, out);
    }
    sleep_ms(50);  /* let it write a few rows */
    assert_int_equal(kill(pid, sig), 0);
    return wait_signal(pid);
}

/* SIGINT (Ctrl-C) mid-run: the lab removes its temporary file and dies of the
 * signal; OUT never appears. */
static void atomic__lab_csv_sigint(void **state)
{
    (void)state;
    char dir[512], out[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(out, sizeof out, "%s/lab.csv", dir);
    assert_int_equal(interrupt_lab(dir, out, tmp, sizeof tmp, SIGINT), SIGINT);
    assert_false(exists(out));
    if (exists(tmp)) fail_msg("%s was left behind after SIGINT", tmp);
    assert_int_equal(count_entries(dir), 0);
    cr_test_remove_temp_dir(dir);
}

/* SIGKILL mid-run (no handler can run): the temporary file may stay behind, but
 * OUT keeps its previous complete contents. */
static void atomic__lab_csv_sigkill(void **state)
{
    (void)state;
    char dir[512], out[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(out, sizeof out, "%s/lab.csv", dir);
    write_text(out, "previous,complete\n");
    assert_int_equal(interrupt_lab(dir, out, tmp, sizeof tmp, SIGKILL), SIGKILL);
    if (!holds_text(out, "previous,complete\n"))
        fail_msg("%s changed although the lab was killed before it finished", out);
    cr_test_remove_temp_dir(dir);
}

/* ------------------------------------------------------------------ library writers */

typedef enum { WRITE_SAFETENSORS, WRITE_PNG } writer_kind;

/* In a child: writes a large safetensors file or PNG to path, then exits 0. */
static void child_write(writer_kind kind, const char *path)
{
    cr_status st;
    if (kind == WRITE_SAFETENSORS) {
        cr_tensor t;
        cr_st_writer *w = NULL;
        if (cr_tensor_alloc4(&t, 1, 4, 256, 256) != CR_OK || cr_st_writer_new(&w) != CR_OK)
            _exit(3);
        cr_tensor_fill(&t, 1.5f);
        if (cr_st_writer_add(w, "a", &t) != CR_OK || cr_st_writer_add(w, "b", &t) != CR_OK)
            _exit(3);
        st = cr_st_writer_save(w, path);
        cr_st_writer_free(w);
        cr_tensor_free(&t);
    } else {
        cr_image img = {512, 512, 3, malloc(512 * 512 * 3)};
        if (!img.pixels) _exit(3);
        uint32_t x = 2463534242u;  /* xorshift32: noise, so the PNG stays large */
        for (size_t i = 0; i < 512 * 512 * 3; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            img.pixels[i] = (uint8_t)(x >> 24);
        }
        st = cr_png_write(path, &img);
        free(img.pixels);
    }
    _exit(st == CR_OK ? 0 : 4);
}

/* The size at which a writer child is stopped (RLIMIT_FSIZE). */
enum { CHILD_FSIZE = 4096 };

/* Starts a child writing PATH with its file size limited to CHILD_FSIZE bytes, so
 * that the kernel kills it (SIGXFSZ) mid-file; checks that PATH still holds its
 * previous contents and that the child's temporary file stopped at the limit. */
static void kill_writer_mid_file(writer_kind kind, const char *name)
{
    char dir[512], path[1024], prefix[300], tmp[1400];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(prefix, sizeof prefix, "%s.tmp.", name);
    write_text(path, "previous version");

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {CHILD_FSIZE, CHILD_FSIZE};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(5);
        child_write(kind, path);
    }
    assert_int_equal(wait_signal(pid), SIGXFSZ);
    if (!holds_text(path, "previous version"))
        fail_msg("%s: the previous file was replaced by a writer killed mid-file", path);
    assert_int_equal(find_prefixed(dir, prefix, tmp, sizeof tmp), 1);
    struct stat sb;
    assert_int_equal(stat(tmp, &sb), 0);
    if (sb.st_size != CHILD_FSIZE)
        fail_msg("%s holds %lld bytes, expected the writer to stop at %d", tmp,
                 (long long)sb.st_size, CHILD_FSIZE);
    cr_test_remove_temp_dir(dir);
}

static void atomic__safetensors_killed_mid_file(void **state)
{
    (void)state;
    kill_writer_mid_file(WRITE_SAFETENSORS, "model.safetensors");
}

static void atomic__png_killed_mid_file(void **state)
{
    (void)state;
    kill_writer_mid_file(WRITE_PNG, "image.png");
}

/* In a child with a 4096-byte file size limit and SIGXFSZ ignored (writes fail with
 * EFBIG, as on a full disk): every writer returns CR_EIO, removes its temporary file
 * and leaves PATH as it was. Exits 0, or 10+k naming the failed check k. */
static void child_write_too_big(const char *dir)
{
    char path[1024];
    struct rlimit rl = {CHILD_FSIZE, CHILD_FSIZE};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(9);
    signal(SIGXFSZ, SIG_IGN);

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_text(path, "previous version");
    cr_tensor t;
    cr_st_writer *w = NULL;
    if (cr_tensor_alloc4(&t, 1, 1, 64, 64) != CR_OK || cr_st_writer_new(&w) != CR_OK) _exit(9);
    cr_tensor_fill(&t, 2.0f);
    if (cr_st_writer_add(w, "t", &t) != CR_OK) _exit(9);
    if (cr_st_writer_save(w, path) != CR_EIO) _exit(10);
    if (!strstr(cr_last_error(), "File too large")) _exit(11);
    cr_st_writer_free(w);
    cr_tensor_free(&t);
    if (!holds_text(path, "previous version")) _exit(12);

    snprintf(path, sizeof path, "%s/image.png", dir);
    static uint8_t px[256 * 256];
    uint32_t x = 88172645u;
    for (size_t i = 0; i < sizeof px; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        px[i] = (uint8_t)(x >> 24);
    }
    cr_image img = {256, 256, 1, px};
    if (cr_png_write(path, &img) != CR_EIO) _exit(13);
    if (exists(path)) _exit(14);

    snprintf(path, sizeof path, "%s/out.csv", dir);
    cr_csv *c = NULL;
    if (cr_csv_open(&c, path, "p", 1, NULL) != CR_OK) _exit(15);
    cr_status st = CR_OK;
    for (int i = 0; i < 1000 && st == CR_OK; i++)
        st = cr_csv_row(c, "%d,a row of some length to fill the limit", i);
    if (st == CR_OK) {
        if (cr_csv_close(c) != CR_EIO) _exit(17);  /* the error shows at the last flush */
    } else {
        if (st != CR_EIO) _exit(16);  /* or as soon as stdio flushes a full buffer */
        cr_csv_abort(c);
    }
    if (!strstr(cr_last_error(), "File too large")) _exit(16);
    if (exists(path)) _exit(18);
    _exit(0);
}

/* A write that fails (the file size limit: EFBIG) returns CR_EIO, removes the
 * temporary file and leaves PATH as it was. */
static void atomic__failed_write_leaves_nothing(void **state)
{
    (void)state;
    char dir[512];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child_write_too_big(dir);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the writer child failed check %d (see child_write_too_big)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    assert_int_equal(count_entries(dir), 1);  /* model.safetensors, unchanged */
    cr_test_remove_temp_dir(dir);
}

/* /dev/full as the target (a device: written directly) gives CR_EIO "No space left
 * on device" for every writer, and stays a character device. */
static void atomic__dev_full_is_a_clear_error(void **state)
{
    (void)state;
    if (file_type("/dev/full") != S_IFCHR) skip();
    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, "/dev/full", "p", 1, NULL));
    assert_null(cr_csv_temp_path(c));
    assert_cr_ok(cr_csv_row(c, "1,2"));
    assert_cr_fails(cr_csv_close(c), CR_EIO);
    assert_error_says("No space left on device");

    cr_tensor t;
    cr_st_writer *w = NULL;
    assert_cr_ok(cr_tensor_alloc4(&t, 1, 1, 64, 64));
    cr_tensor_fill(&t, 2.0f);
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "t", &t));
    assert_cr_fails(cr_st_writer_save(w, "/dev/full"), CR_EIO);
    assert_error_says("No space left on device");
    cr_st_writer_free(w);
    cr_tensor_free(&t);
    assert_int_equal(file_type("/dev/full"), S_IFCHR);
}

/* /dev/null as the target of every writer: written directly, stays a char device
 * (as root a rename would have replaced it by a regular file). */
static void atomic__device_node_stays_a_device(void **state)
{
    (void)state;
    if (file_type("/dev/null") != S_IFCHR) skip();
    assert_cr_ok(cr_afile_check("/dev/null", "CSV"));
    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, "/dev/null", "p", 1, NULL));
    assert_null(cr_csv_temp_path(c));
    assert_cr_ok(cr_csv_columns(c, (const char *const[]){"a", "b", NULL}));
    assert_cr_ok(cr_csv_row(c, "1,2"));
    assert_cr_ok(cr_csv_close(c));
    assert_int_equal(file_type("/dev/null"), S_IFCHR);

    cr_tensor t;
    cr_st_writer *w = NULL;
    assert_cr_ok(cr_tensor_alloc4(&t, 1, 2, 3, 5));
    cr_tensor_fill(&t, 0.25f);
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "t", &t));
    assert_cr_ok(cr_st_writer_save(w, "/dev/null"));
    cr_st_writer_free(w);
    cr_tensor_free(&t);
    assert_int_equal(file_type("/dev/null"), S_IFCHR);

    uint8_t px[3 * 4 * 5] = {1, 2, 3};
    cr_image img = {4, 5, 3, px};
    assert_cr_ok(cr_png_write("/dev/null", &img));
    assert_int_equal(file_type("/dev/null"), S_IFCHR);
}

/* The bytes written to a FIFO in fifo_test: lines "row i of a FIFO test", more than a
 * pipe buffer holds, so the writer must wait for its reader. */
static char *fifo_payload(size_t *len)
{
    size_t cap = 300000, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    for (int i = 0; n + 64 < cap; i++) n += (size_t)snprintf(s + n, cap - n, "row %d of a FIFO test\n", i);
    *len = n;
    return s;
}

/* A FIFO as the target: written directly (no temporary file, the FIFO stays), and a
 * reader process receives exactly the bytes written. */
static void atomic__fifo_is_written_directly(void **state)
{
    (void)state;
    char dir[512], fifo[1024], got[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(fifo, sizeof fifo, "%s/pipe.csv", dir);
    snprintf(got, sizeof got, "%s/got", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {  /* the reader: copies the FIFO into DIR/got */
        int in = open(fifo, O_RDONLY), out = open(got, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0) _exit(3);
        char buf[8192];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0)
            if (write(out, buf, (size_t)n) != n) _exit(4);
        _exit(n == 0 && close(out) == 0 ? 0 : 5);
    }
    size_t len;
    char *payload = fifo_payload(&len);  /* after the fork: the child holds no heap block */
    cr_afile *af = NULL;
    assert_cr_ok(cr_afile_open(&af, fifo, NULL));  /* blocks until the reader opens */
    assert_null(cr_afile_temp_path(af));
    assert_int_equal(fwrite(payload, 1, len, cr_afile_stream(af)), len);
    assert_cr_ok(cr_afile_commit(af));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    size_t got_len = 0;
    char *text = read_file(got, &got_len);
    assert_non_null(text);
    assert_int_equal(got_len, len);
    assert_memory_equal(text, payload, len);
    assert_int_equal(file_type(fifo), S_IFIFO);
    assert_int_equal(count_entries(dir), 2);  /* the FIFO and got: no temporary file */
    free(text);
    free(payload);
    cr_test_remove_temp_dir(dir);
}

/* Writes a one-row CSV to path, whose row is row. */
static void write_csv(const char *path, const char *row)
{
    cr_csv *c = NULL;
    assert_cr_ok(cr_csv_open(&c, path, "p", 1, NULL));
    assert_cr_ok(cr_csv_columns(c, (const char *const[]){"x", NULL}));
    assert_cr_ok(cr_csv_row(c, "%s", row));
    assert_cr_ok(cr_csv_close(c));
}

/* True if the file at path is a CSV of ours ending with the row row. */
static int csv_ends_with(const char *path, const char *row)
{
    char *text = read_file(path, NULL);
    if (!text) return 0;
    char want[128];
    snprintf(want, sizeof want, "x\n%s\n", row);
    size_t n = strlen(text), m = strlen(want);
    int ok = strncmp(text, "# program: p\n", 13) == 0 && n >= m && strcmp(text + n - m, want) == 0;
    free(text);
    return ok;
}

/* Asserts that link is still a symbolic link reading target. */
static void assert_link(const char *link, const char *target)
{
    char buf[1024];
    assert_int_equal(file_type(link), S_IFLNK);
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, target);
}

/* A symbolic link as the target is followed: the file it names is replaced (or
 * created, for a dangling link), through a chain of links too, and every link stays
 * a link; a link to /dev/null leaves the device a device. */
static void atomic__symlink_is_followed(void **state)
{
    (void)state;
    char dir[512], real[1024], link[1024], chain[1024], dangling[1024], fresh[1024],
        devlink[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(real, sizeof real, "%s/real.csv", dir);
    snprintf(link, sizeof link, "%s/link.csv", dir);
    snprintf(chain, sizeof chain, "%s/chain.csv", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling.csv", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.csv", dir);
    snprintf(devlink, sizeof devlink, "%s/null.csv", dir);
    write_text(real, "old\n");
    assert_int_equal(symlink("real.csv", link), 0);     /* relative */
    assert_int_equal(symlink(link, chain), 0);          /* absolute, to a link */
    assert_int_equal(symlink("fresh.csv", dangling), 0);
    assert_int_equal(symlink("/dev/null", devlink), 0);

    write_csv(link, "via link");
    assert_link(link, "real.csv");
    assert_true(csv_ends_with(real, "via link"));
    write_csv(chain, "via chain");
    assert_link(chain, link);
    assert_link(link, "real.csv");
    assert_true(csv_ends_with(real, "via chain"));
    write_csv(dangling, "via dangling");
    assert_link(dangling, "fresh.csv");
    assert_int_equal(file_type(fresh), S_IFREG);
    assert_true(csv_ends_with(fresh, "via dangling"));
    write_csv(devlink, "via devlink");
    assert_link(devlink, "/dev/null");
    if (file_type("/dev/null") == S_IFCHR) assert_int_equal(file_type("/dev/null"), S_IFCHR);
    assert_int_equal(count_entries(dir), 6);  /* no temporary file left */
    cr_test_remove_temp_dir(dir);
}

/* A link loop is refused clearly rather than followed forever. */
static void atomic__symlink_loop_is_refused(void **state)
{
    (void)state;
    char dir[512], a[1024], b[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(a, sizeof a, "%s/a.csv", dir);
    snprintf(b, sizeof b, "%s/b.csv", dir);
    assert_int_equal(symlink("b.csv", a), 0);
    assert_int_equal(symlink("a.csv", b), 0);
    cr_csv *c = NULL;
    assert_cr_fails(cr_csv_open(&c, a, "p", 1, NULL), CR_EINVAL);
    assert_error_says("symbolic links");
    assert_null(c);
    assert_int_equal(count_entries(dir), 2);
    cr_test_remove_temp_dir(dir);
}

/* A directory as the target is refused by every writer and by the early check,
 * with "is a directory", and nothing is created in it. */
static void atomic__directory_is_refused(void **state)
{
    (void)state;
    char dir[512];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    assert_cr_fails(cr_afile_check(dir, "CSV"), CR_EINVAL);
    assert_error_says("is a directory");
    cr_csv *c = NULL;
    assert_cr_fails(cr_csv_open(&c, dir, "p", 1, NULL), CR_EINVAL);
    assert_error_says("is a directory");
    assert_null(c);

    cr_tensor t;
    cr_st_writer *w = NULL;
    assert_cr_ok(cr_tensor_alloc4(&t, 1, 1, 2, 3));
    cr_tensor_fill(&t, 0.5f);
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "t", &t));
    assert_cr_fails(cr_st_writer_save(w, dir), CR_EINVAL);
    assert_error_says("is a directory");
    cr_st_writer_free(w);
    cr_tensor_free(&t);

    uint8_t px[6] = {9, 8, 7, 6, 5, 4};
    cr_image img = {3, 2, 1, px};
    assert_cr_fails(cr_png_write(dir, &img), CR_EINVAL);
    assert_error_says("is a directory");
    assert_int_equal(file_type(dir), S_IFDIR);
    assert_int_equal(count_entries(dir), 0);
    cr_test_remove_temp_dir(dir);
}

/* The early check accepts a new file in a writable directory and leaves nothing
 * behind; it refuses a missing directory naming it. */
static void atomic__check_leaves_nothing(void **state)
{
    (void)state;
    char dir[512], path[1024], missing[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(path, sizeof path, "%s/out.csv", dir);
    snprintf(missing, sizeof missing, "%s/no/such/dir/out.csv", dir);
    assert_cr_ok(cr_afile_check(path, "CSV"));
    assert_int_equal(count_entries(dir), 0);
    assert_cr_fails(cr_afile_check(missing, "CSV"), CR_EIO);
    assert_error_says("cannot create a temporary file in");
    assert_error_says("No such file or directory");
    assert_int_equal(count_entries(dir), 0);
    cr_test_remove_temp_dir(dir);
}

/* Runs LAB --quick --csv csv with stderr into err (a file); returns its exit status
 * (or -signal). */
static int run_lab_csv(const char *csv, const char *err)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (null < 0 || e < 0) _exit(126);
        dup2(null, STDOUT_FILENO);
        dup2(e, STDERR_FILENO);
        execl(lab_path, lab_path, "--quick", "--csv", csv, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* The lab refuses --csv DIR and --csv MISSING/out.csv at argument time (exit 2, the
 * usage code that only lab_init returns, so before any measurement), naming the
 * problem, and leaves no file behind. */
static void atomic__lab_refuses_bad_csv_early(void **state)
{
    (void)state;
    char dir[512], target[512], missing[1024], err[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    cr_test_temp_dir(target, sizeof target, "cr_atomic_target");
    snprintf(missing, sizeof missing, "%s/missing/out.csv", target);
    snprintf(err, sizeof err, "%s/stderr", dir);

    assert_int_equal(run_lab_csv(target, err), 2);
    char *text = read_file(err, NULL);
    assert_non_null(text);
    if (!strstr(text, "is a directory")) fail_msg("lab said '%s'", text);
    free(text);
    assert_int_equal(count_entries(target), 0);

    assert_int_equal(run_lab_csv(missing, err), 2);
    text = read_file(err, NULL);
    assert_non_null(text);
    if (!strstr(text, "No such file or directory")) fail_msg("lab said '%s'", text);
    free(text);
    assert_int_equal(count_entries(target), 0);
    cr_test_remove_temp_dir(target);
    cr_test_remove_temp_dir(dir);
}

/* ---- two writers of one path ---------------------------------------------------- */

/* Lines per version of writer w (different, so a mix of two is never whole). */
static int writer_lines(int w) { return w == 0 ? 300 : 517; }

/* In a child: writes path count times through cr_afile, version i of writer w
 * being writer_lines(w) lines "w,i,j"; exits 0, or 3 on any failure. */
static void child_write_versions(const char *path, int w, int count)
{
    for (int i = 0; i < count; i++) {
        cr_afile *af = NULL;
        if (cr_afile_open(&af, path, NULL) != CR_OK) _exit(3);
        FILE *f = cr_afile_stream(af);
        for (int j = 0; j < writer_lines(w); j++) fprintf(f, "%d,%d,%d\n", w, i, j);
        if (cr_afile_commit(af) != CR_OK) _exit(3);
    }
    _exit(0);
}

/* True if text is one writer's whole version: writer_lines(w) lines "w,i,j", j = 0..,
 * with one w and one i. */
static int whole_version(const char *text)
{
    int w, i, j, n = 0;
    if (sscanf(text, "%d,%d,", &w, &i) != 2 || (w != 0 && w != 1)) return 0;
    const char *p = text;
    while (*p) {
        int w2, i2, used = 0;
        if (sscanf(p, "%d,%d,%d\n%n", &w2, &i2, &j, &used) != 3 || used == 0) return 0;
        if (w2 != w || i2 != i || j != n || p[used - 1] != '\n') return 0;
        p += used;
        n++;
    }
    return n == writer_lines(w);
}

/* Two processes write the same path many times at once: every version a reader
 * sees meanwhile, and the final file, is exactly one writer's whole content, and no
 * temporary file is left. */
static void atomic__two_writers_never_mix(void **state)
{
    (void)state;
    char dir[512], path[1024];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(path, sizeof path, "%s/shared.csv", dir);
    const int count = cr_test_count(60);
    pid_t pid[2];
    fflush(NULL);
    for (int w = 0; w < 2; w++) {
        pid[w] = fork();
        assert_true(pid[w] >= 0);
        if (pid[w] == 0) child_write_versions(path, w, count);
    }
    int reads = 0, running = 2;
    int status[2] = {0, 0};
    while (running > 0) {
        char *text = read_file(path, NULL);
        if (text) {
            if (!whole_version(text)) {
                kill(pid[0], SIGKILL);
                kill(pid[1], SIGKILL);
                fail_msg("a reader saw a mixed or partial version of %s:\n%.200s", path, text);
            }
            reads++;
            free(text);
        }
        running = 0;
        for (int w = 0; w < 2; w++)
            if (pid[w] > 0) {
                if (waitpid(pid[w], &status[w], WNOHANG) == pid[w]) pid[w] = 0;
                else running++;
            }
    }
    for (int w = 0; w < 2; w++)
        if (!WIFEXITED(status[w]) || WEXITSTATUS(status[w]) != 0)
            fail_msg("writer %d failed (status %d)", w, status[w]);
    char *text = read_file(path, NULL);
    assert_non_null(text);
    if (!whole_version(text)) fail_msg("the final %s is not one writer's whole content", path);
    free(text);
    print_message("two writers x %d versions each; %d reads saw whole versions\n", count, reads);
    assert_int_equal(count_entries(dir), 1);
    cr_test_remove_temp_dir(dir);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LAB (a lab binary, e.g. build/labs/lab02-im2col)\n", argv[0]);
        return 2;
    }
    lab_path = argv[1];
    signal(SIGPIPE, SIG_IGN);  /* the FIFO's reader goes away before the killed writer */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(atomic__lab_csv_sigint),
        cmocka_unit_test(atomic__lab_csv_sigkill),
        cmocka_unit_test(atomic__safetensors_killed_mid_file),
        cmocka_unit_test(atomic__png_killed_mid_file),
        cmocka_unit_test(atomic__failed_write_leaves_nothing),
        cmocka_unit_test(atomic__dev_full_is_a_clear_error),
        cmocka_unit_test(atomic__device_node_stays_a_device),
        cmocka_unit_test(atomic__fifo_is_written_directly),
        cmocka_unit_test(atomic__symlink_is_followed),
        cmocka_unit_test(atomic__symlink_loop_is_refused),
        cmocka_unit_test(atomic__directory_is_refused),
        cmocka_unit_test(atomic__check_leaves_nothing),
        cmocka_unit_test(atomic__lab_refuses_bad_csv_early),
        cmocka_unit_test(atomic__two_writers_never_mix),
    };
    return cr_run_tests("atomic writes", tests);
}
