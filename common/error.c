/* The error record: formatting only, no global state. */
#include "pile_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Formats through a copy so that the old message may be an argument
 * ("cannot export 'x': %s", err->msg): vsnprintf into its own source is UB. */
static void vset(pile_err *err, int code, const char *fmt, va_list ap)
{
    char msg[PILE_ERR_MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    err->code = code;
    memcpy(err->msg, msg, sizeof msg);
}

int pile_err_set(pile_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vset(err, code, fmt, ap);
        va_end(ap);
    }
    return code;
}

int pile_err_sys(pile_err *err, int code, int errnum, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vset(err, code, fmt, ap);
        va_end(ap);
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, ": %s", strerror(errnum));
    }
    return code;
}

void pile_err_clear(pile_err *err)
{
    if (err) {
        err->code = PILE_OK;
        err->msg[0] = '\0';
    }
}

const char *pile_strerror(int code)
{
    switch (code) {
    case PILE_OK: return "success";
    case PILE_EIO: return "i/o error";
    case PILE_ENOMEM: return "out of memory";
    case PILE_EINVAL: return "invalid argument";
    case PILE_EFORMAT: return "format error";
    case PILE_ECORRUPT: return "corrupt data";
    case PILE_ETRUNC: return "truncated input";
    case PILE_ENOENT: return "not found";
    case PILE_EVERSION: return "unsupported version";
    case PILE_EMISMATCH: return "mismatch";
    case PILE_ELIMIT: return "limit exceeded";
    case PILE_EBUSY: return "in use";
    default: return "unknown error";
    }
}
