/* progress.h — a one-line progress display on stderr for long lab runs.
 * On a terminal the line is redrawn in place; otherwise a line is printed at
 * most every few seconds, so logs stay short. */
#ifndef CR_PROGRESS_H
#define CR_PROGRESS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *label;
    long total;
    long done;
    double start, last_draw;
    int tty;
} cr_progress;

/* Starts a progress line for total steps. */
void cr_progress_begin(cr_progress *p, const char *label, long total);
/* Marks one more step done; what is a short description of the current step (may be NULL). */
void cr_progress_step(cr_progress *p, const char *what);
/* Finishes the line (prints elapsed time). */
void cr_progress_end(cr_progress *p);

#ifdef __cplusplus
}
#endif

#endif
