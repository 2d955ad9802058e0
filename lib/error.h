/* error.h — status codes and the last error message.
 *
 * Every library function that can fail returns a cr_status. On failure it also
 * records a human-readable message (which argument, what was expected) that
 * cr_last_error() returns until the next failure on the same thread. */
#ifndef CR_ERROR_H
#define CR_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CR_OK = 0,
    CR_EINVAL,    /* an argument is out of its domain */
    CR_ENOMEM,    /* an allocation failed */
    CR_EOVERFLOW, /* a size computation would overflow */
    CR_EIO,       /* reading or writing a file failed */
    CR_EFORMAT,   /* a file is malformed */
    CR_ETODO      /* a coursework stub: the student has not written this yet */
} cr_status;

/* Records status and a printf-style message for the calling thread; returns status. */
cr_status cr_fail(cr_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the last failure on this thread ("" if none). */
const char *cr_last_error(void);
/* The status of this thread's last cr_fail (for builders that return an index, -1 on
 * failure, and leave the reason here); CR_OK if nothing failed yet. */
cr_status cr_last_status(void);

/* A short name for a status ("CR_EINVAL", ...). */
const char *cr_status_name(cr_status status);

/* Marks a coursework stub: fails with CR_ETODO naming the unfinished task. */
cr_status cr_todo(const char *task);

#ifdef __cplusplus
}
#endif

#endif
