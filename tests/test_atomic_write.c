/* test_atomic_write.c — suite lib: an interrupted writer never leaves a truncated file
 * under the real name (issue 7).
 *
 *   test_atomic_write LAB     LAB: a lab binary (build/labs/lab02-im2col), run with
 *                             --quick --csv OUT and interrupted mid-run
 *
 * The library's writers (CSV, safetensors, PNG) write PATH.tmp and rename it to PATH
 * when complete. The tests interrupt each one between two writes, deterministically:
 * the lab is signalled once its PATH.tmp exists; the safetensors and PNG writers are
 * made to write into a FIFO at PATH.tmp, so that the child blocks after its first
 * bytes until the parent (the FIFO's reader) has seen them and killed it. Then PATH
 * must hold what it held before (nothing, or the previous complete file). */
#include "cr_test.h"
#include "test_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* Starts LAB --quick --csv out (output to /dev/null), waits until out.tmp appears
 * (the CSV is open and being written), sends sig, and returns the signal the lab
 * died of. */
static int interrupt_lab(const char *out, const char *tmp, int sig)
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
        seen = exists(tmp);
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
        fail_msg("%s never created %s", lab_path, tmp);
    }
    sleep_ms(50);  /* let it write a few rows */
    assert_int_equal(kill(pid, sig), 0);
    return wait_signal(pid);
}

/* SIGINT (Ctrl-C) mid-run: the lab removes OUT.tmp and dies of the signal; OUT
 * never appears. */
static void atomic__lab_csv_sigint(void **state)
{
    (void)state;
    char dir[512], out[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(out, sizeof out, "%s/lab.csv", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    assert_int_equal(interrupt_lab(out, tmp, SIGINT), SIGINT);
    assert_false(exists(out));
    assert_false(exists(tmp));
    cr_test_remove_temp_dir(dir);
}

/* SIGKILL mid-run (no handler can run): OUT.tmp may stay behind, but OUT keeps
 * its previous complete contents. */
static void atomic__lab_csv_sigkill(void **state)
{
    (void)state;
    char dir[512], out[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(out, sizeof out, "%s/lab.csv", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    write_text(out, "previous,complete\n");
    assert_int_equal(interrupt_lab(out, tmp, SIGKILL), SIGKILL);
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

/* Makes PATH.tmp a FIFO, starts a child writing PATH, reads the first bytes the
 * child writes into the FIFO, kills the child mid-file, and checks that PATH still
 * holds its previous contents. */
static void kill_writer_mid_file(writer_kind kind, const char *name)
{
    char dir[512], path[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    write_text(path, "previous version");
    assert_int_equal(mkfifo(tmp, 0600), 0);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child_write(kind, path);

    int fd = open(tmp, O_RDONLY);  /* blocks until the child opens PATH.tmp */
    assert_true(fd >= 0);
    char buf[512];
    ssize_t got = 0, n;
    while (got < 64 && (n = read(fd, buf, sizeof buf)) > 0) got += n;
    assert_true(got >= 64);  /* the child has begun: header written, data pending */
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(wait_signal(pid), SIGKILL);
    close(fd);

    if (!holds_text(path, "previous version"))
        fail_msg("%s: the previous file was replaced by a writer killed mid-file", path);
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

/* A write that fails (PATH.tmp is a link to /dev/full: no space left) returns CR_EIO,
 * removes PATH.tmp and leaves PATH as it was. */
static void atomic__failed_write_leaves_nothing(void **state)
{
    (void)state;
    if (!exists("/dev/full")) skip();
    char dir[512], path[1024], tmp[1100];
    cr_test_temp_dir(dir, sizeof dir, "cr_atomic");

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    write_text(path, "previous version");
    assert_int_equal(symlink("/dev/full", tmp), 0);
    cr_tensor t;
    cr_st_writer *w = NULL;
    assert_cr_ok(cr_tensor_alloc4(&t, 1, 1, 64, 64));
    cr_tensor_fill(&t, 2.0f);
    assert_cr_ok(cr_st_writer_new(&w));
    assert_cr_ok(cr_st_writer_add(w, "t", &t));
    assert_cr_fails(cr_st_writer_save(w, path), CR_EIO);
    cr_st_writer_free(w);
    cr_tensor_free(&t);
    assert_false(exists(tmp));
    assert_true(holds_text(path, "previous version"));

    snprintf(path, sizeof path, "%s/image.png", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(symlink("/dev/full", tmp), 0);
    uint8_t px[64 * 64];
    memset(px, 7, sizeof px);
    cr_image img = {64, 64, 1, px};
    assert_cr_fails(cr_png_write(path, &img), CR_EIO);
    assert_false(exists(tmp));
    assert_false(exists(path));
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
    };
    return cr_run_tests("atomic writes", tests);
}
