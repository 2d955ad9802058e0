/* fuzz_args.c — libFuzzer target: cr_args_parse with a table like the labs'.
 *
 * The input is split at NUL bytes into argv[1..] (at most 32 arguments). Every
 * argument list must parse or fail with CR_EINVAL and a message; a parsed INT
 * must lie in its range, a parsed DOUBLE must be finite, a parsed STRING must
 * point into argv. --help prints to stdout, which goes to /dev/null here. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        if (!freopen("/dev/null", "w", stdout)) abort();
        quiet = 1;
    }
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "lab-fuzz";
    for (size_t i = 0; i <= size && argc <= MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;

    /* The labs' common options (lab_common.c) plus one of each other kind. */
    int quick = 0, threads = 7, repeats = 0, size_opt = -5, seed = 0;
    const char *csv = NULL, *layer = NULL;
    double tol = 1e-5;
    const cr_arg table[] = {
        {"quick", CR_ARG_FLAG, &quick, NULL, "a small run", 0, -1},
        {"csv", CR_ARG_STRING, &csv, "FILE", "write the results as CSV", 0, -1},
        {"threads", CR_ARG_INT, &threads, "N", "OpenMP threads", 1, 64},
        {"repeats", CR_ARG_INT, &repeats, "N", "timed runs per case", 1, 1000},
        {"layer", CR_ARG_STRING, &layer, "NAME", "one standard layer", 0, -1},
        {"size", CR_ARG_INT, &size_opt, "N", "matrix size", 1, 1LL << 40},
        {"seed", CR_ARG_INT, &seed, "N", "any int", 1, 0},
        {"tol", CR_ARG_DOUBLE, &tol, "X", "relative tolerance", 0, -1},
    };
    const int n = (int)(sizeof table / sizeof table[0]);
    int help = -1;
    cr_status st = cr_args_parse(argc, argv, table, n, "lab-fuzz", "fuzzing", &help);
    if (st != CR_OK) {
        if (st != CR_EINVAL || !cr_last_error()[0] || help != 0) abort();
    } else {
        if (help != 0 && help != 1) abort();
        if (quick != 0 && quick != 1) abort();
        if (threads < 1 || threads > 64) abort();
        if (repeats != 0 && (repeats < 1 || repeats > 1000)) abort();
        if (size_opt != -5 && size_opt < 1) abort();
        if (!isfinite(tol)) abort();
        const char *strs[2] = {csv, layer};
        for (int k = 0; k < 2; k++) {
            if (!strs[k]) continue;
            if (strs[k] < buf || strs[k] > buf + size || !strs[k][0]) abort();
        }
    }
    free(buf);
    return 0;
}
