/* progress.c — a one-line progress display on stderr: redrawn in place at most
 * ~10 times a second on a terminal, one plain line at most every 5 s otherwise. */
#include "progress.h"

#include <stdio.h>
#include <unistd.h>

#include "timing.h"

#define TTY_PERIOD 0.1  /* seconds between redraws on a terminal */
#define LOG_PERIOD 5.0  /* seconds between lines when stderr is a file or pipe */

/* Formats a duration as "4.2s", "3m07s" or "1h02m" into buf. */
static void format_duration(double s, char *buf, size_t len)
{
    if (s < 0) s = 0;
    if (s < 60)
        snprintf(buf, len, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, len, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
}

/* Writes "label: done/total (pct%)  elapsed E  ETA T  what" to stderr; on a
 * terminal it overwrites the current line, otherwise it ends with a newline. */
static void draw(cr_progress *p, const char *what, double now)
{
    double elapsed = now - p->start;
    double pct = p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0;
    char el[32], eta[32] = "?";
    format_duration(elapsed, el, sizeof el);
    if (p->done > 0 && p->total > 0)
        format_duration(elapsed * (double)(p->total - p->done) / (double)p->done, eta,
                        sizeof eta);
    fprintf(stderr, "%s%s: %ld/%ld (%3.0f%%)  elapsed %s  ETA %s%s%.40s%s",
            p->tty ? "\r" : "", p->label ? p->label : "progress", p->done, p->total, pct,
            el, eta, what ? "  " : "", what ? what : "", p->tty ? "\033[K" : "\n");
    fflush(stderr);
    p->last_draw = now;
}

/* Starts a progress line for total steps (draws it at once on a terminal). */
void cr_progress_begin(cr_progress *p, const char *label, long total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->start = cr_now();
    p->last_draw = p->start;
    p->tty = isatty(fileno(stderr));
    if (p->tty) draw(p, NULL, p->start);
}

/* Counts one step and redraws if the period for this kind of output has passed. */
void cr_progress_step(cr_progress *p, const char *what)
{
    p->done++;
    double now = cr_now();
    double period = p->tty ? TTY_PERIOD : LOG_PERIOD;
    if (now - p->last_draw >= period) draw(p, what, now);
}

/* Ends the line: "label: done/total in E" (on a terminal, replacing the live line). */
void cr_progress_end(cr_progress *p)
{
    char el[32];
    format_duration(cr_now() - p->start, el, sizeof el);
    fprintf(stderr, "%s%s: %ld/%ld done in %s%s\n", p->tty ? "\r" : "",
            p->label ? p->label : "progress", p->done, p->total, el, p->tty ? "\033[K" : "");
    fflush(stderr);
}
