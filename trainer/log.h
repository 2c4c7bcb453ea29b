/* pile_log: how the trainer's library code tells the user something. It
 * never prints: each progress line, note, warning and result goes to a
 * callback that the caller installs (pile_trainer.c prints them on stderr
 * and stdout; a test collects them), passed down in a plain struct, so
 * there is no global logger. */
#ifndef PILE_LOG_H
#define PILE_LOG_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a message is, which decides how a printer shows it. The texts
 * carry no program name and no "warning: ": a printer adds what it wants
 * (pile-trainer: "pile-trainer: " before INFO, "pile-trainer: warning: "
 * before WARN). */
typedef enum pile_log_level {
    PILE_LOG_PROGRESS = 0, /* the periodic progress line: a terminal redraws it in place */
    PILE_LOG_RECORD = 1,   /* a line of the job's own record: a validation's result, where a run stopped */
    PILE_LOG_INFO = 2,     /* what the job is doing: its setup, resuming, checkpoints written or removed */
    PILE_LOG_WARN = 3,     /* something the user should know or fix; the job goes on */
    PILE_LOG_RESULT = 4,   /* the job's product, for stdout: text as it is, its newlines included */
} pile_log_level;

/* msg[0..len) is the text, msg[len] == '\0'. PROGRESS, RECORD, INFO and
 * WARN texts are one line without its newline; RESULT text may be any
 * part of the output (sample's continuation comes piece by piece as it is
 * generated, and may hold any byte, NUL included). msg lives until the
 * callback returns. Called from the thread that called the library. */
typedef void (*pile_log_fn)(void *ctx, pile_log_level level, const char *msg, size_t len);

typedef struct pile_log {
    pile_log_fn fn; /* NULL: every message dropped */
    void *ctx;      /* handed to fn */
    /* A stop signal (SIGINT, SIGTERM, SIGHUP) during training is
     * acknowledged at once, from the signal handler, where fn may not run
     * (only async-signal-safe calls may): that one line is written with
     * write(2) to signal_fd (0: not written; fd 0 is stdin, never one),
     * after a newline when progress_in_place. */
    int signal_fd;
    int progress_in_place; /* fn leaves a PROGRESS line open, to redraw it in place (a terminal) */
} pile_log;

/* Formats a message and hands it to log->fn (log or log->fn NULL: nothing). */
void pile_log_printf(const pile_log *log, pile_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Hands msg[0..len) to log->fn as it is; msg[len] must be '\0'. */
void pile_log_write(const pile_log *log, pile_log_level level, const char *msg, size_t len);

#ifdef __cplusplus
}
#endif

#endif
