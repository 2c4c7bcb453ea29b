/* Error codes and the caller-supplied error record every library function fills.
 * Shaped after libuv's negative error codes: 0 is success, a negative PILE_E*
 * says what kind of failure, and the record carries the detail a person needs
 * (file, line or offset, what was wrong). Libraries never print or exit. */
#ifndef PILE_ERROR_H
#define PILE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    PILE_OK = 0,
    PILE_EIO = -1,       /* a system call failed (the message names it) */
    PILE_ENOMEM = -2,    /* allocation failed */
    PILE_EINVAL = -3,    /* bad argument or option */
    PILE_EFORMAT = -4,   /* input is not in the expected format */
    PILE_ECORRUPT = -5,  /* a checksum or invariant does not hold */
    PILE_ETRUNC = -6,    /* input ends early */
    PILE_ENOENT = -7,    /* a file or entry does not exist */
    PILE_EVERSION = -8,  /* a format version this build cannot read */
    PILE_EMISMATCH = -9, /* inputs or settings disagree (e.g. resume with other options) */
    PILE_ELIMIT = -10,   /* a configured limit was exceeded */
    PILE_EBUSY = -11,    /* a resource is held by another process (a folder's lock) */
};

#define PILE_ERR_MSG_MAX 1024

/* Plain value struct: callers usually put one on the stack. */
typedef struct pile_err {
    int code;
    char msg[PILE_ERR_MSG_MAX];
} pile_err;

/* Sets the record (err may be NULL) and returns code, so that error paths read
 * `return pile_err_set(err, PILE_EFORMAT, "bad magic in '%s'", path);`.
 * Messages follow git's style: lowercase, the failure first, subjects quoted.
 * err->msg may itself be an argument, to add context to an inner error. */
int pile_err_set(pile_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like pile_err_set, and appends ": <strerror(errnum)>". */
int pile_err_sys(pile_err *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Clears the record to "no error". */
void pile_err_clear(pile_err *err);

/* A short static name for a code ("format error"), for logs. */
const char *pile_strerror(int code);

/* Keep error paths short (zstd lib/common/error_private.h style). */
#define PILE_FORWARD_IF_ERR(expr)          \
    do {                                   \
        int pile__rc_ = (expr);            \
        if (pile__rc_ < 0) return pile__rc_; \
    } while (0)

#define PILE_RETURN_IF(cond, err, code, ...)                \
    do {                                                    \
        if (cond) return pile_err_set((err), (code), __VA_ARGS__); \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
