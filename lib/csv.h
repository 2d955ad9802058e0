/* csv.h — CSV files with a provenance header.
 *
 * Layout: lines beginning with "# " hold provenance as "# key: value" (machine,
 * cpu, threads, compiler, flags, git, date, and any extra keys the caller adds),
 * then one header row of column names, then data rows, then optionally more
 * "# key: value" lines measured at the end (cr_csv_comment). The file is written
 * through atomic_file.h: to a unique temporary file "PATH.tmp.XXXXXX" renamed to
 * PATH on cr_csv_close (so an interrupted run never leaves a half-written file
 * under the real name), or directly when PATH is a device, FIFO or /dev/stdout;
 * a directory is refused and links are followed (see atomic_file.h). */
#ifndef CR_CSV_H
#define CR_CSV_H

#include <stdio.h>
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_csv cr_csv;

/* Opens PATH for writing (see atomic_file.h) and writes the provenance header:
 * program, machine (hostname), cpu (model name), threads, compiler, flags, git
 * revision, date (UTC, ISO 8601), followed by extra "key: value" lines if
 * extra != NULL (a NULL-terminated array of alternating keys and values). */
cr_status cr_csv_open(cr_csv **out, const char *path, const char *program, int threads,
                      const char *const *extra);
/* Writes the header row from a NULL-terminated array of column names. */
cr_status cr_csv_columns(cr_csv *c, const char *const *names);
/* Writes one row: a printf-style format for the whole row, without the newline; after
 * cr_csv_columns it must have the header's number of fields (no field holds a comma). */
cr_status cr_csv_row(cr_csv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes a "# key: value" comment line (after the rows: what was measured at the end). */
cr_status cr_csv_comment(cr_csv *c, const char *key, const char *value);
/* Writes the buffered lines out now (a full device or a FIFO reader learns at once). */
cr_status cr_csv_flush(cr_csv *c);
/* The temporary file the rows go to until close, or NULL when PATH is written directly. */
const char *cr_csv_temp_path(const cr_csv *c);
/* Flushes, fsyncs, closes and renames the temporary file to PATH; frees c. */
cr_status cr_csv_close(cr_csv *c);
/* Closes and deletes the temporary file without touching PATH (on errors); frees c. */
void cr_csv_abort(cr_csv *c);

/* Provenance values (also used by labs for their stdout banner). */
const char *cr_cpu_model(void);     /* "AMD EPYC 7B12" or "unknown" */
const char *cr_machine_name(void);  /* hostname */
const char *cr_build_compiler(void);/* compiler and version used to build the library */
const char *cr_build_flags(void);   /* optimisation flags */
const char *cr_git_revision(void);  /* "abc1234" or "abc1234-dirty" or "unknown" */

#ifdef __cplusplus
}
#endif

#endif
