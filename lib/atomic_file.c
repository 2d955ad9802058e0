/* atomic_file.c — an output file written through a unique temporary file and a
 * rename, or directly when the target is a device, FIFO or open descriptor; see
 * atomic_file.h for the rule. */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_LINK_HOPS 40  /* as the kernel's ELOOP limit */

struct cr_afile {
    FILE *f;
    char *label;  /* "CSV 'PATH'" or "PATH": the start of every message */
    char *target; /* the file that receives the bytes (links followed) */
    char *temp;   /* the temporary file, or NULL when writing directly */
    char *dir;    /* the target's directory (for the fsync after rename) */
};

/* What path names, once its links are followed. */
typedef struct {
    char *target; /* malloc'ed */
    int direct;   /* 1: write target directly (device, FIFO, descriptor name) */
    int exists;   /* 1: target exists (a regular file unless direct) */
    mode_t mode;  /* target's permission bits when it exists */
} resolved;

/* ---- small string helpers -------------------------------------------------- */

/* Duplicates s with malloc (strdup is not C11). */
static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* a followed by b in one malloc'ed string. */
static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

/* The directory part of path ("." without a slash, "/" for "/name"), malloc'ed. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return dup_string(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

/* True if path names an open descriptor rather than a file of its own. */
static int is_descriptor_name(const char *path)
{
    return strcmp(path, "/dev/stdout") == 0 || strcmp(path, "/dev/stderr") == 0 ||
           strncmp(path, "/dev/fd/", 8) == 0 || strncmp(path, "/proc/", 6) == 0;
}

/* "what 'path'" or "path", the prefix of the messages about path (malloc'ed). */
static char *make_label(const char *path, const char *what)
{
    if (!what) return dup_string(path);
    size_t n = strlen(what) + strlen(path) + 4;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s '%s'", what, path);
    return s;
}

/* ---- what the path names ----------------------------------------------------- */

/* Follows the links of path's last component one by one (a relative link is taken
 * from the link's directory) and says what the final name is; fails with CR_EINVAL
 * for a directory or a link loop, CR_EIO when a name cannot be examined. */
static cr_status resolve(const char *path, const char *label, resolved *r)
{
    memset(r, 0, sizeof *r);
    char *cur = dup_string(path);
    if (!cur) return cr_fail(CR_ENOMEM, "%s: out of memory", label);
    for (int hop = 0;; hop++) {
        if (is_descriptor_name(cur)) {
            struct stat sb;
            if (stat(cur, &sb) != 0) {
                cr_status st = cr_fail(CR_EIO, "%s: cannot open '%s': %s", label, cur,
                                       strerror(errno));
                free(cur);
                return st;
            }
            r->direct = r->exists = 1;
            break;
        }
        struct stat sb;
        if (lstat(cur, &sb) != 0) {
            if (errno == ENOENT) break; /* a new file (its directory is checked later) */
            cr_status st = cr_fail(CR_EIO, "%s: cannot examine '%s': %s", label, cur,
                                   strerror(errno));
            free(cur);
            return st;
        }
        if (S_ISLNK(sb.st_mode)) {
            if (hop >= MAX_LINK_HOPS) {
                free(cur);
                return cr_fail(CR_EINVAL, "%s: more than %d symbolic links to follow",
                               label, MAX_LINK_HOPS);
            }
            char link[4096];
            ssize_t n = readlink(cur, link, sizeof link - 1);
            if (n < 0 || (size_t)n >= sizeof link - 1) {
                cr_status st = cr_fail(CR_EIO, "%s: cannot read the link '%s': %s", label,
                                       cur, n < 0 ? strerror(errno) : "target too long");
                free(cur);
                return st;
            }
            link[n] = '\0';
            char *next;
            if (link[0] == '/') {
                next = dup_string(link);
            } else {
                char *dir = dir_of(cur);
                char *dir_slash = dir ? concat(dir, "/") : NULL;
                next = dir_slash ? concat(dir_slash, link) : NULL;
                free(dir);
                free(dir_slash);
            }
            free(cur);
            if (!next) return cr_fail(CR_ENOMEM, "%s: out of memory", label);
            cur = next;
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            free(cur);
            return cr_fail(CR_EINVAL, "%s: is a directory, expected a file name", label);
        }
        r->exists = 1;
        r->direct = !S_ISREG(sb.st_mode);
        r->mode = sb.st_mode & 07777;
        break;
    }
    r->target = cur;
    return CR_OK;
}

/* The process's umask, read without changing it where /proc allows. */
static mode_t current_umask(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        unsigned mask;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Umask: %o", &mask) == 1) {
                fclose(f);
                return (mode_t)mask;
            }
        fclose(f);
    }
    mode_t m = umask(022);
    umask(m);
    return m;
}

/* Creates a fresh "DIR/NAME.tmp.XXXXXX" next to target; *fd and *temp receive it. */
static cr_status make_temp(const char *target, const char *dir, const char *label, int *fd,
                           char **temp)
{
    char *t = concat(target, ".tmp.XXXXXX");
    if (!t) return cr_fail(CR_ENOMEM, "%s: out of memory", label);
    int d = mkstemp(t);
    if (d < 0) {
        cr_status st = cr_fail(CR_EIO, "%s: cannot create a temporary file in '%s': %s",
                               label, dir, strerror(errno));
        free(t);
        return st;
    }
    *fd = d;
    *temp = t;
    return CR_OK;
}

/* ---- the public functions ------------------------------------------------------ */

/* Checks path as cr_afile_open would treat it, leaving nothing behind. */
cr_status cr_afile_check(const char *path, const char *what)
{
    if (!path || !path[0]) return cr_fail(CR_EINVAL, "%s: empty file name", what ? what : "output");
    char *label = make_label(path, what);
    if (!label) return cr_fail(CR_ENOMEM, "%s: out of memory", path);
    resolved r;
    cr_status st = resolve(path, label, &r);
    if (st == CR_OK && r.direct) {
        if (access(r.target, W_OK) != 0)
            st = cr_fail(CR_EIO, "%s: cannot write '%s': %s", label, r.target, strerror(errno));
    } else if (st == CR_OK) {
        char *dir = dir_of(r.target), *temp = NULL;
        int fd = -1;
        st = dir ? make_temp(r.target, dir, label, &fd, &temp)
                 : cr_fail(CR_ENOMEM, "%s: out of memory", label);
        if (st == CR_OK) {
            close(fd);
            unlink(temp);
        }
        free(temp);
        free(dir);
    }
    free(r.target);
    free(label);
    return st;
}

/* Frees a and its strings (the stream must be closed already). */
static void afile_free(cr_afile *a)
{
    free(a->label);
    free(a->target);
    free(a->temp);
    free(a->dir);
    free(a);
}

/* Opens the target directly (no O_CREAT, no O_TRUNC: appending to what exists). */
static cr_status open_direct(cr_afile *a)
{
    int fd = open(a->target, O_WRONLY | O_APPEND);
    if (fd < 0)
        return cr_fail(CR_EIO, "%s: cannot open '%s' for writing: %s", a->label, a->target,
                       strerror(errno));
    a->f = fdopen(fd, "w");
    if (!a->f) {
        int err = errno;
        close(fd);
        return cr_fail(CR_EIO, "%s: cannot open '%s': %s", a->label, a->target, strerror(err));
    }
    return CR_OK;
}

/* Creates the temporary file with the target's permission bits (or 0666 less umask). */
static cr_status open_temp(cr_afile *a, const resolved *r)
{
    int fd;
    cr_status st = make_temp(a->target, a->dir, a->label, &fd, &a->temp);
    if (st != CR_OK) return st;
    mode_t mode = r->exists ? r->mode : (mode_t)(0666 & ~current_umask());
    if (fchmod(fd, mode) != 0 || !(a->f = fdopen(fd, "w"))) {
        int err = errno;
        close(fd);
        unlink(a->temp);
        return cr_fail(CR_EIO, "%s: cannot prepare '%s': %s", a->label, a->temp, strerror(err));
    }
    return CR_OK;
}

/* Opens path under the rule of atomic_file.h. */
cr_status cr_afile_open(cr_afile **out, const char *path, const char *what)
{
    if (!out) return cr_fail(CR_EINVAL, "cr_afile_open: out is NULL");
    *out = NULL;
    if (!path || !path[0]) return cr_fail(CR_EINVAL, "%s: empty file name", what ? what : "output");
    cr_afile *a = calloc(1, sizeof *a);
    if (!a || !(a->label = make_label(path, what))) {
        free(a);
        return cr_fail(CR_ENOMEM, "%s: out of memory", path);
    }
    resolved r;
    cr_status st = resolve(path, a->label, &r);
    a->target = r.target;
    if (st == CR_OK && !(a->dir = dir_of(a->target)))
        st = cr_fail(CR_ENOMEM, "%s: out of memory", a->label);
    if (st == CR_OK) st = r.direct ? open_direct(a) : open_temp(a, &r);
    if (st != CR_OK) {
        afile_free(a);
        return st;
    }
    *out = a;
    return CR_OK;
}

/* The stream the caller writes to. */
FILE *cr_afile_stream(const cr_afile *a) { return a->f; }

/* The temporary file's path, NULL when writing directly. */
const char *cr_afile_temp_path(const cr_afile *a) { return a->temp; }

/* The file that receives the bytes (links followed). */
const char *cr_afile_target(const cr_afile *a) { return a->target; }

/* fsyncs the directory dir so that a rename in it is durable; errors are ignored
 * (some file systems refuse fsync on a directory). */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* Flushes and closes the stream, fsyncing a temporary file first; 0 or an errno. */
static int finish_stream(cr_afile *a)
{
    int err = 0;
    if (fflush(a->f) != 0 || ferror(a->f)) err = errno ? errno : EIO;
    if (!err && a->temp && fsync(fileno(a->f)) != 0) err = errno;
    if (fclose(a->f) != 0 && !err) err = errno;
    a->f = NULL;
    return err;
}

/* Flush, fsync, close, rename, fsync the directory; see atomic_file.h. */
cr_status cr_afile_commit(cr_afile *a)
{
    if (!a) return cr_fail(CR_EINVAL, "cr_afile_commit: NULL argument");
    cr_status st = CR_OK;
    errno = 0;
    int err = finish_stream(a);
    if (err)
        st = cr_fail(CR_EIO, "%s: cannot write '%s': %s", a->label,
                     a->temp ? a->temp : a->target, strerror(err));
    else if (a->temp && rename(a->temp, a->target) != 0)
        st = cr_fail(CR_EIO, "%s: cannot rename '%s' to '%s': %s", a->label, a->temp,
                     a->target, strerror(errno));
    else if (a->temp)
        sync_dir(a->dir);
    if (st != CR_OK && a->temp) unlink(a->temp);
    afile_free(a);
    return st;
}

/* Closes and removes the temporary file; the target is untouched. */
void cr_afile_abort(cr_afile *a)
{
    if (!a) return;
    if (a->f) fclose(a->f);
    if (a->temp) unlink(a->temp);
    afile_free(a);
}
