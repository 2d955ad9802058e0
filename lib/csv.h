/* csv.h — CSV files with a provenance header.
 *
 * Layout: lines beginning with "# " hold provenance as "# key: value" (machine,
 * cpu, threads, compiler, flags, git, date, and any extra keys the caller adds),
 * then one header row of column names, then data rows. The file is written to
 * "PATH.tmp" and renamed to PATH on cr_csv_close, so an interrupted run never
 * leaves a half-written file under the real name. */
#ifndef CR_CSV_H
#define CR_CSV_H

#include <stdio.h>
#include "error.h"

typedef struct cr_csv cr_csv;

/* Opens PATH for writing (via PATH.tmp) and writes the provenance header:
 * program, machine (hostname), cpu (model name), threads, compiler, flags, git
 * revision, date (UTC, ISO 8601), followed by extra "key: value" lines if
 * extra != NULL (a NULL-terminated array of alternating keys and values). */
cr_status cr_csv_open(cr_csv **out, const char *path, const char *program, int threads,
                      const char *const *extra);
/* Writes the header row from a NULL-terminated array of column names. */
cr_status cr_csv_columns(cr_csv *c, const char *const *names);
/* Writes one row: a printf-style format for the whole row, without the newline. */
cr_status cr_csv_row(cr_csv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Flushes, closes and renames PATH.tmp to PATH. */
cr_status cr_csv_close(cr_csv *c);
/* Closes and deletes PATH.tmp without touching PATH (on errors). */
void cr_csv_abort(cr_csv *c);

/* Provenance values (also used by labs for their stdout banner). */
const char *cr_cpu_model(void);     /* "AMD EPYC 7B12" or "unknown" */
const char *cr_machine_name(void);  /* hostname */
const char *cr_build_compiler(void);/* compiler and version used to build the library */
const char *cr_build_flags(void);   /* optimisation flags */
const char *cr_git_revision(void);  /* "abc1234" or "abc1234-dirty" or "unknown" */

#endif
