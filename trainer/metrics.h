/* Training metrics, written two ways into the run folder:
 *  - metrics.jsonl: one JSON object per line {"step": N, "tag": value, ...,
 *    "time": unix seconds}, appended and flushed per record;
 *  - a TensorBoard event file events.out.tfevents.<unix time>.<host>.pile:
 *    TFRecord framing (u64 length, masked CRC-32C of the length, the
 *    record, masked CRC-32C of the record) around Event protocol buffers
 *    (file_version "brain.Event:2" first, then one Summary of simple_value
 *    scalars per record), hand-encoded: no protobuf dependency for four
 *    fields. TensorBoard and W&B's TensorBoard sync read it.
 *
 * Also the memory report: the process's resident set size. */
#ifndef PILE_METRICS_H
#define PILE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_metrics pile_metrics;

/* Opens (creating dir if needed) metrics.jsonl for appending and a new
 * event file. With resume_step >= 0, lines of metrics.jsonl whose step is
 * above resume_step are dropped first (they belong to the run after the
 * checkpoint being resumed, which will be redone), and the event file
 * starts with a SessionLog START at step resume_step + 1, on which
 * TensorBoard drops the older files' points from that step on. */
int pile_metrics_open(pile_metrics **out, const char *dir, int64_t resume_step, pile_err *err);
void pile_metrics_close(pile_metrics *m); /* flushes; accepts NULL */

/* One record: n scalars with names tags[i] (e.g. "train/loss") at step. */
int pile_metrics_write(pile_metrics *m, int64_t step, const char *const *tags, const double *values, size_t n,
                       pile_err *err);

/* CRC-32C (Castagnoli) and TFRecord's mask of it, exposed for the tests. */
uint32_t pile_crc32c(const void *data, size_t n);
uint32_t pile_crc32c_mask(uint32_t crc);

/* Resident set size of this process in bytes (0 if unknown). */
uint64_t pile_rss_bytes(void);

#ifdef __cplusplus
}
#endif

#endif
