/* atomic_file.h — writing an output file so that nothing is lost and nothing is
 * misreported: the CSV, PNG and safetensors writers all go through it.
 *
 * The rule, decided from what PATH names when the file is opened:
 *   - a directory: refused (CR_EINVAL, "is a directory, expected a file name");
 *   - a symbolic link: followed, link by link, to the file it names; that file is
 *     written (or created, for a dangling link) and the link stays a link;
 *   - an existing file that is not a regular file (a device such as /dev/null or
 *     /dev/full, a FIFO, a socket) or a name of an open descriptor (/dev/stdout,
 *     /dev/stderr, /dev/fd/N, /proc/self/fd/N): written directly, opened without
 *     O_CREAT or O_TRUNC (appending); it is never replaced by a regular file. A
 *     direct write cannot be undone: a failure reports the error, and what was
 *     already written has gone to the device or the reader;
 *   - otherwise (a regular file or no file yet): the bytes go to a fresh temporary
 *     file "NAME.tmp.XXXXXX" (mkstemp) in the target's directory, which on commit
 *     is flushed, fsync'ed and renamed onto the target, and the directory is
 *     fsync'ed where the file system allows it. Readers see the old file or the new
 *     one, never a half; two writers of the same path each rename their own whole
 *     file, so the last one to finish wins and the file is always one writer's
 *     whole content. The new file gets the replaced file's permission bits, or
 *     0666 less the umask for a new file.
 */
#ifndef CR_ATOMIC_FILE_H
#define CR_ATOMIC_FILE_H

#include <stdio.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_afile cr_afile;

/* Checks that path could be written by cr_afile_open, without writing it: refuses a
 * directory, follows links, and for a regular or new target creates and at once
 * removes a temporary file in its directory (so nothing is left behind). what names
 * the output in messages ("CSV" gives "CSV 'PATH': ..."; NULL gives "PATH: ..."). */
cr_status cr_afile_check(const char *path, const char *what);

/* Opens path for writing under the rule above; *out receives the handle (NULL on
 * failure). what names the output in messages, as for cr_afile_check. */
cr_status cr_afile_open(cr_afile **out, const char *path, const char *what);

/* The stream to write to (valid until commit or abort). */
FILE *cr_afile_stream(const cr_afile *a);

/* The temporary file's path, or NULL when the target is written directly. */
const char *cr_afile_temp_path(const cr_afile *a);

/* The file that receives the bytes: path with its links followed (or path itself). */
const char *cr_afile_target(const cr_afile *a);

/* Flushes, fsyncs and closes the stream and renames the temporary file onto the
 * target (fsyncing the directory); frees a in every case. On failure the temporary
 * file is removed, the target keeps its previous contents, and CR_EIO names the
 * step that failed and errno's message. */
cr_status cr_afile_commit(cr_afile *a);

/* Closes the stream and removes the temporary file, leaving the target as it was;
 * frees a (NULL is fine). */
void cr_afile_abort(cr_afile *a);

#ifdef __cplusplus
}
#endif

#endif
