/* error.c — the last error message, one per thread. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_message[512];
static _Thread_local cr_status last_status = CR_OK;

cr_status cr_fail(cr_status status, const char *fmt, ...)
{
    last_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    return status;
}

const char *cr_last_error(void) { return last_message; }

cr_status cr_last_status(void) { return last_status; }

const char *cr_status_name(cr_status status)
{
    switch (status) {
    case CR_OK:        return "CR_OK";
    case CR_EINVAL:    return "CR_EINVAL";
    case CR_ENOMEM:    return "CR_ENOMEM";
    case CR_EOVERFLOW: return "CR_EOVERFLOW";
    case CR_EIO:       return "CR_EIO";
    case CR_EFORMAT:   return "CR_EFORMAT";
    case CR_ETODO:     return "CR_ETODO";
    }
    return "CR_E?";
}

cr_status cr_todo(const char *task)
{
    return cr_fail(CR_ETODO, "task '%s' is not written yet (coursework stub)", task);
}
