/* args.h — command-line parsing for the labs: long options, typed values,
 * --help generated from the table, and clear errors for bad arguments. */
#ifndef CR_ARGS_H
#define CR_ARGS_H

#include <stdio.h>
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CR_ARG_FLAG, CR_ARG_INT, CR_ARG_STRING, CR_ARG_DOUBLE } cr_arg_kind;

typedef struct {
    const char *name;     /* long name without dashes, e.g. "threads" */
    cr_arg_kind kind;
    void *value;          /* int* (FLAG and INT), const char** (STRING), double* (DOUBLE) */
    const char *meta;     /* value placeholder in --help, e.g. "N" (NULL for flags) */
    const char *help;     /* one line */
    long long min, max;   /* accepted range for INT (ignored when min > max) */
} cr_arg;

/* Parses argv against the table (n entries). "--name value" and "--name=value"
 * are accepted. On "--help" prints usage to stdout and returns CR_OK with
 * *help_shown = 1. Unknown options, missing or malformed values and values out
 * of range fail with CR_EINVAL and a message naming the option and what was
 * expected. Positional arguments are refused. */
cr_status cr_args_parse(int argc, char **argv, const cr_arg *table, int n,
                        const char *program, const char *summary, int *help_shown);

/* Prints the usage text (program, summary, one line per option) to f. */
void cr_args_usage(FILE *f, const cr_arg *table, int n, const char *program,
                   const char *summary);

#ifdef __cplusplus
}
#endif

#endif
