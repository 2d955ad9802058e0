/* csv.c — CSV files with a provenance header, written through atomic_file.h (a
 * unique temporary file renamed to PATH on close, or PATH itself when it is a
 * device, FIFO or open descriptor) so that no half-written file carries the name. */
#include "csv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "cr_config.h"
#include "git_rev.h"

struct cr_csv {
    cr_afile *af; /* the output (temporary file or direct target) */
    FILE *f;      /* its stream */
    char *path;   /* the name the caller gave */
    size_t ncols; /* fields in the header row (0 until cr_csv_columns) */
};

/* ---- provenance values ------------------------------------------------- */

/* Replaces CR and LF in s by spaces and trims trailing blanks, in place. */
static void one_line(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
}

/* The "model name" field of /proc/cpuinfo, or "unknown"; read once. */
const char *cr_cpu_model(void)
{
    static char model[256];
    if (model[0]) return model;
    snprintf(model, sizeof model, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return model;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        one_line(v);
        if (*v) snprintf(model, sizeof model, "%s", v);
        break;
    }
    fclose(f);
    return model;
}

/* The host name (gethostname), or "unknown"; read once. */
const char *cr_machine_name(void)
{
    static char name[256];
    if (name[0]) return name;
    if (gethostname(name, sizeof name - 1) != 0 || !name[0])
        snprintf(name, sizeof name, "unknown");
    name[sizeof name - 1] = '\0';
    one_line(name);
    return name;
}

/* Compiler and version, as meson recorded them in cr_config.h. */
const char *cr_build_compiler(void) { return CR_BUILD_COMPILER; }

/* Optimisation flags, as meson recorded them in cr_config.h. */
const char *cr_build_flags(void) { return CR_BUILD_FLAGS; }

/* The git revision from the generated git_rev.h ("unknown" outside a checkout). */
const char *cr_git_revision(void)
{
    const char *rev = CR_GIT_REVISION;
    return rev[0] ? rev : "unknown";
}

/* The current time as UTC ISO 8601 ("2024-05-01T12:34:56Z") into buf. */
static void utc_now(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "unknown");
}

/* ---- the file ------------------------------------------------------------ */

/* Duplicates s with malloc (strdup is not C11). */
static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Frees c and its name (the output must be committed or aborted already). */
static void csv_free(cr_csv *c)
{
    free(c->path);
    free(c);
}

/* The file the rows go to now: the temporary file, or the target when direct. */
static const char *where(const cr_csv *c)
{
    const char *t = cr_afile_temp_path(c->af);
    return t ? t : cr_afile_target(c->af);
}

/* Fails with CR_EIO naming the file and errno's message. */
static cr_status io_error(const cr_csv *c, const char *what, int err)
{
    return cr_fail(CR_EIO, "CSV '%s': cannot %s '%s': %s", c->path, what, where(c),
                   strerror(err));
}

/* Writes "# key: value" with newlines in key and value turned into spaces. */
static cr_status write_meta(cr_csv *c, const char *key, const char *value)
{
    char k[128], v[1024];
    snprintf(k, sizeof k, "%s", key ? key : "");
    snprintf(v, sizeof v, "%s", value ? value : "");
    one_line(k);
    one_line(v);
    if (fprintf(c->f, "# %s: %s\n", k, v) < 0) return io_error(c, "write", errno);
    return CR_OK;
}

/* Writes the provenance lines: program, machine, cpu, threads, compiler, flags,
 * git, date, then the caller's extra key/value pairs. */
static cr_status write_provenance(cr_csv *c, const char *program, int threads,
                                  const char *const *extra)
{
    char threads_s[32], date[64];
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    utc_now(date, sizeof date);
    const char *meta[][2] = {
        {"program", program ? program : "unknown"},
        {"machine", cr_machine_name()},
        {"cpu", cr_cpu_model()},
        {"threads", threads_s},
        {"compiler", cr_build_compiler()},
        {"flags", cr_build_flags()},
        {"git", cr_git_revision()},
        {"date", date},
    };
    for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++) {
        cr_status st = write_meta(c, meta[i][0], meta[i][1]);
        if (st != CR_OK) return st;
    }
    for (size_t i = 0; extra && extra[i]; i += 2) {
        cr_status st = write_meta(c, extra[i], extra[i + 1]);
        if (st != CR_OK) return st;
        if (!extra[i + 1]) break; /* odd count: the last key had no value */
    }
    return CR_OK;
}

/* Opens PATH through atomic_file.h and writes the provenance header. */
cr_status cr_csv_open(cr_csv **out, const char *path, const char *program, int threads,
                      const char *const *extra)
{
    if (!out) return cr_fail(CR_EINVAL, "cr_csv_open: out is NULL");
    *out = NULL;
    if (!path || !path[0]) return cr_fail(CR_EINVAL, "cr_csv_open: empty path");
    cr_csv *c = calloc(1, sizeof *c);
    if (!c) return cr_fail(CR_ENOMEM, "cr_csv_open: out of memory");
    c->path = dup_string(path);
    if (!c->path) {
        csv_free(c);
        return cr_fail(CR_ENOMEM, "cr_csv_open: out of memory");
    }
    cr_status st = cr_afile_open(&c->af, path, "CSV");
    if (st != CR_OK) {
        csv_free(c);
        return st;
    }
    c->f = cr_afile_stream(c->af);
    st = write_provenance(c, program, threads, extra);
    if (st != CR_OK) {
        cr_csv_abort(c);
        return st;
    }
    *out = c;
    return CR_OK;
}

/* Writes the header row: names joined by commas (none may hold a newline). */
cr_status cr_csv_columns(cr_csv *c, const char *const *names)
{
    if (!c || !names) return cr_fail(CR_EINVAL, "cr_csv_columns: NULL argument");
    for (size_t i = 0; names[i]; i++) {
        if (strpbrk(names[i], "\r\n"))
            return cr_fail(CR_EINVAL, "CSV '%s': column name %zu holds a newline", c->path, i);
        if (fprintf(c->f, "%s%s", i ? "," : "", names[i]) < 0)
            return io_error(c, "write", errno);
    }
    if (fputc('\n', c->f) == EOF) return io_error(c, "write", errno);
    size_t n = 0;
    while (names[n]) n++;
    c->ncols = n;
    return CR_OK;
}

/* The fields of one unquoted CSV line: its commas plus one. */
static size_t field_count(const char *row)
{
    size_t n = 1;
    for (const char *p = row; *p; p++) n += *p == ',';
    return n;
}

/* Formats one row (printf-style, no newline), refuses rows that hold a newline or,
 * after cr_csv_columns, a field count other than the header's (fields are never
 * quoted: a comma inside a note would split it), and writes it followed by '\n'. */
cr_status cr_csv_row(cr_csv *c, const char *fmt, ...)
{
    if (!c || !fmt) return cr_fail(CR_EINVAL, "cr_csv_row: NULL argument");
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return cr_fail(CR_EINVAL, "CSV '%s': cannot format row '%s'", c->path, fmt);
    char *row = malloc((size_t)n + 1);
    if (!row) return cr_fail(CR_ENOMEM, "CSV '%s': out of memory for a row", c->path);
    va_start(ap, fmt);
    vsnprintf(row, (size_t)n + 1, fmt, ap);
    va_end(ap);

    cr_status st = CR_OK;
    if (strpbrk(row, "\r\n"))
        st = cr_fail(CR_EINVAL, "CSV '%s': a row must be one line, got '%s'", c->path, row);
    else if (c->ncols && field_count(row) != c->ncols)
        st = cr_fail(CR_EINVAL,
                     "CSV '%s': a row must have %zu fields like the header, got %zu "
                     "(a comma inside a field?): '%s'", c->path, c->ncols, field_count(row), row);
    else if (fputs(row, c->f) == EOF || fputc('\n', c->f) == EOF)
        st = io_error(c, "write", errno);
    free(row);
    return st;
}

/* Writes a "# key: value" comment line after the rows (provenance measured at the
 * end of a run); newlines in key and value become spaces. */
cr_status cr_csv_comment(cr_csv *c, const char *key, const char *value)
{
    if (!c || !key) return cr_fail(CR_EINVAL, "cr_csv_comment: NULL argument");
    return write_meta(c, key, value);
}

/* Hands the buffered lines to the file now, so that a device that refuses them
 * (/dev/full) or a FIFO's reader sees them at once rather than at close. */
cr_status cr_csv_flush(cr_csv *c)
{
    if (!c) return cr_fail(CR_EINVAL, "cr_csv_flush: NULL argument");
    if (fflush(c->f) != 0) return io_error(c, "write", errno);
    return CR_OK;
}

/* The temporary file the rows go to, or NULL when PATH is written directly. */
const char *cr_csv_temp_path(const cr_csv *c) { return c ? cr_afile_temp_path(c->af) : NULL; }

/* Flushes, fsyncs and closes the output, renaming the temporary file to PATH;
 * frees c in every case (on failure the temporary file is removed and PATH is left
 * as it was). */
cr_status cr_csv_close(cr_csv *c)
{
    if (!c) return cr_fail(CR_EINVAL, "cr_csv_close: NULL argument");
    cr_status st = cr_afile_commit(c->af);
    csv_free(c);
    return st;
}

/* Closes and deletes the temporary file without touching PATH; frees c (NULL is fine). */
void cr_csv_abort(cr_csv *c)
{
    if (!c) return;
    cr_afile_abort(c->af);
    csv_free(c);
}
