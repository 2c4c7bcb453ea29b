/* pile_log (log.h): formatting a message for the caller's callback. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void pile_log_write(const pile_log *log, pile_log_level level, const char *msg, size_t len)
{
    if (log && log->fn) log->fn(log->ctx, level, msg, len);
}

void pile_log_printf(const pile_log *log, pile_log_level level, const char *fmt, ...)
{
    if (!log || !log->fn) return;
    /* most messages fit the stack; a long one (paths, an inner error) is
     * formatted again into the heap, and cut to the stack's size only if
     * that fails */
    char small[512];
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    char *big = n >= (int)sizeof small ? malloc((size_t)n + 1) : NULL;
    if (big) vsnprintf(big, (size_t)n + 1, fmt, again);
    va_end(again);
    if (n < 0) {
        small[0] = '\0';
        n = 0;
    }
    const char *msg = big ? big : small;
    size_t len = big || (size_t)n < sizeof small ? (size_t)n : sizeof small - 1;
    log->fn(log->ctx, level, msg, len);
    free(big);
}
