/* A one-line progress display for long jobs: done of total, MB/s, items/s,
 * ETA, redrawn in place at most a few times a second. Single-threaded: call it
 * from the thread that owns the counters. */
#ifndef PILE_PROGRESS_H
#define PILE_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_progress pile_progress;

/* out: where to draw (usually stderr); enabled == 0 makes every call a no-op.
 * total_bytes: the input size, 0 if unknown (then no ETA). NULL on OOM. */
pile_progress *pile_progress_create(FILE *out, int enabled, uint64_t total_bytes);
void pile_progress_free(pile_progress *p);

/* Redraws if at least 250 ms passed since the last draw (or force != 0).
 * bytes: input bytes done; docs and tokens: counts so far. */
void pile_progress_update(pile_progress *p, uint64_t bytes, uint64_t docs, uint64_t tokens, int force);

/* A short note shown at the end of the line from the next draw on (copied;
 * at most 63 bytes kept; NULL or "" for none). */
void pile_progress_note(pile_progress *p, const char *note);
/* Ends the line (prints a newline if anything was drawn). */
void pile_progress_finish(pile_progress *p);

/* Monotonic seconds, for wall-time summaries. */
double pile_now(void);
/* CPU seconds the calling thread has used: stage costs that a loaded machine
 * (time spent descheduled) does not inflate. */
double pile_cpu_now(void);

#ifdef __cplusplus
}
#endif

#endif
