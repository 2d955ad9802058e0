/* args.c — command-line parsing for the labs: long options ("--name value" or
 * "--name=value"), typed and range-checked values, and a generated --help. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The table entry whose name is the len bytes at name, or NULL. */
static const cr_arg *find_option(const cr_arg *table, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return &table[i];
    return NULL;
}

/* The placeholder for an option's value in messages ("N", "FILE", or "a value"). */
static const char *meta_of(const cr_arg *a)
{
    return a->meta ? a->meta : "a value";
}

/* The accepted range of an INT option: the table's when min <= max, else int's. */
static void int_range(const cr_arg *a, long long *lo, long long *hi)
{
    if (a->min <= a->max) {
        *lo = a->min;
        *hi = a->max;
    } else {
        *lo = INT_MIN;
        *hi = INT_MAX;
    }
    if (*lo < INT_MIN) *lo = INT_MIN;
    if (*hi > INT_MAX) *hi = INT_MAX;
}

/* Parses text as a whole decimal integer within a's range into *(int *)a->value. */
static cr_status parse_int(const cr_arg *a, const char *text)
{
    long long lo, hi;
    int_range(a, &lo, &hi);
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    int malformed = !text[0] || isspace((unsigned char)text[0]) || *end != '\0';
    if (malformed || errno == ERANGE || v < lo || v > hi) {
        if (a->min <= a->max)
            return cr_fail(CR_EINVAL, "--%s: expected an integer in %lld..%lld, got '%s'",
                           a->name, lo, hi, text);
        return cr_fail(CR_EINVAL, "--%s: expected an integer, got '%s'", a->name, text);
    }
    *(int *)a->value = (int)v;
    return CR_OK;
}

/* Parses text as a whole finite number into *(double *)a->value. */
static cr_status parse_double(const cr_arg *a, const char *text)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (!text[0] || isspace((unsigned char)text[0]) || *end != '\0' || errno == ERANGE ||
        !isfinite(v))
        return cr_fail(CR_EINVAL, "--%s: expected a number, got '%s'", a->name, text);
    *(double *)a->value = v;
    return CR_OK;
}

/* Stores text as a's value according to its kind. */
static cr_status set_value(const cr_arg *a, const char *text)
{
    switch (a->kind) {
    case CR_ARG_INT:    return parse_int(a, text);
    case CR_ARG_DOUBLE: return parse_double(a, text);
    case CR_ARG_STRING:
        if (!text[0])
            return cr_fail(CR_EINVAL, "--%s: missing value (expected %s)", a->name, meta_of(a));
        *(const char **)a->value = text;
        return CR_OK;
    case CR_ARG_FLAG:
        break;
    }
    return cr_fail(CR_EINVAL, "--%s: bad option kind in the table", a->name);
}

/* Parses argv[1..argc-1] against the table; see args.h for the contract. */
cr_status cr_args_parse(int argc, char **argv, const cr_arg *table, int n,
                        const char *program, const char *summary, int *help_shown)
{
    if (help_shown) *help_shown = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cr_args_usage(stdout, table, n, program, summary);
            if (help_shown) *help_shown = 1;
            return CR_OK;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (arg[0] == '-' && arg[1])
                return cr_fail(CR_EINVAL, "unknown option '%s' (see --help)", arg);
            return cr_fail(CR_EINVAL, "unexpected argument '%s': this program takes options "
                           "only (see --help)", arg);
        }

        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cr_arg *a = find_option(table, n, name, len);
        if (!a)
            return cr_fail(CR_EINVAL, "unknown option '--%.*s' (see --help)", (int)len, name);

        if (a->kind == CR_ARG_FLAG) {
            if (eq)
                return cr_fail(CR_EINVAL, "--%s: takes no value, got '%s'", a->name, eq + 1);
            *(int *)a->value = 1;
            continue;
        }

        const char *text;
        if (eq) {
            text = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            text = argv[++i];
        } else {
            return cr_fail(CR_EINVAL, "--%s: missing value (expected %s)", a->name, meta_of(a));
        }
        cr_status st = set_value(a, text);
        if (st != CR_OK) return st;
    }
    return CR_OK;
}

/* Writes an option's current value as " (default X)" into buf, or "" if it has none
 * (flags, NULL strings, and INT values outside their range). */
static void default_str(const cr_arg *a, char *buf, size_t len)
{
    buf[0] = '\0';
    switch (a->kind) {
    case CR_ARG_INT: { /* a value outside the range means "chosen later": no default */
        int v = *(const int *)a->value;
        if (a->min > a->max || (v >= a->min && v <= a->max))
            snprintf(buf, len, " (default %d)", v);
        break;
    }
    case CR_ARG_DOUBLE:
        snprintf(buf, len, " (default %g)", *(const double *)a->value);
        break;
    case CR_ARG_STRING:
        if (*(const char *const *)a->value)
            snprintf(buf, len, " (default %s)", *(const char *const *)a->value);
        break;
    case CR_ARG_FLAG:
        break;
    }
}

/* Prints "usage: PROGRAM [options]", the summary, and one line per option with
 * its placeholder, help, range and default; --help comes last. */
void cr_args_usage(FILE *f, const cr_arg *table, int n, const char *program,
                   const char *summary)
{
    fprintf(f, "usage: %s [options]\n", program ? program : "program");
    if (summary && summary[0]) fprintf(f, "%s\n", summary);
    fprintf(f, "\noptions:\n");
    for (int i = 0; i < n; i++) {
        const cr_arg *a = &table[i];
        char left[64], range[64] = "", def[96];
        if (a->kind == CR_ARG_FLAG)
            snprintf(left, sizeof left, "--%s", a->name);
        else
            snprintf(left, sizeof left, "--%s %s", a->name, meta_of(a));
        if (a->kind == CR_ARG_INT && a->min <= a->max)
            snprintf(range, sizeof range, " [%lld..%lld]", a->min, a->max);
        default_str(a, def, sizeof def);
        fprintf(f, "  %-18s %s%s%s\n", left, a->help ? a->help : "", range, def);
    }
    fprintf(f, "  %-18s %s\n", "--help", "print this help and exit");
}
