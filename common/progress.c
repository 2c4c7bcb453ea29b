/* Progress line: rates are averaged since start, which is steady enough for
 * multi-minute jobs and needs no smoothing state. */
#include "pile_progress.h"

#include <stdlib.h>
#include <time.h>

struct pile_progress {
    FILE *out;
    int enabled;
    int drawn;
    uint64_t total;
    double start;
    double last;
    char note[64];
};

double pile_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double pile_cpu_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

pile_progress *pile_progress_create(FILE *out, int enabled, uint64_t total_bytes)
{
    pile_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->out = out;
    p->enabled = enabled;
    p->total = total_bytes;
    p->start = p->last = pile_now();
    return p;
}

void pile_progress_free(pile_progress *p)
{
    free(p);
}

void pile_progress_note(pile_progress *p, const char *note)
{
    if (p) snprintf(p->note, sizeof p->note, "%s", note ? note : "");
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    unsigned long t = (unsigned long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%02lu:%02lu", t / 60, t % 60);
}

void pile_progress_update(pile_progress *p, uint64_t bytes, uint64_t docs, uint64_t tokens, int force)
{
    if (!p || !p->enabled) return;
    double now = pile_now();
    if (!force && now - p->last < 0.25) return;
    p->last = now;
    double el = now - p->start;
    if (el <= 0) el = 1e-9;
    double mbs = (double)bytes / 1e6 / el;
    char eta[32];
    if (p->total && bytes > 0) fmt_eta(eta, sizeof eta, el * ((double)p->total / (double)bytes - 1.0));
    else snprintf(eta, sizeof eta, "--:--");
    if (p->total)
        fprintf(p->out, "\r%.1f/%.1f MB (%4.1f%%)  %.1f MB/s  %.0f docs/s  %.2fM tok/s  ETA %s%s%s   ",
                (double)bytes / 1e6, (double)p->total / 1e6, 100.0 * (double)bytes / (double)p->total, mbs,
                (double)docs / el, (double)tokens / el / 1e6, eta, p->note[0] ? "  " : "", p->note);
    else
        fprintf(p->out, "\r%.1f MB  %.1f MB/s  %.0f docs/s  %.2fM tok/s%s%s   ", (double)bytes / 1e6, mbs,
                (double)docs / el, (double)tokens / el / 1e6, p->note[0] ? "  " : "", p->note);
    fflush(p->out);
    p->drawn = 1;
}

void pile_progress_finish(pile_progress *p)
{
    if (p && p->enabled && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
    }
}
