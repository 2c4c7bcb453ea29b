/* File-system helpers for crash-safe output: every file a tool publishes is
 * written under a temporary name, fsynced, renamed into place, and its folder
 * fsynced, so a reader sees either the old file or the whole new one. */
#ifndef PILE_FS_H
#define PILE_FS_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes data to `path` atomically (path.tmp, fsync, rename, fsync folder). */
int pile_fs_write_atomic(const char *path, const void *data, size_t len, pile_err *err);

/* fsync the folder holding `path` (or `path` itself when it is a folder). */
int pile_fs_fsync_dir(const char *path, pile_err *err);

/* mkdir -p. */
int pile_fs_mkdirs(const char *path, pile_err *err);

/* Reads a whole (small) file into out (appends). */
int pile_fs_read_file(const char *path, pile_buf *out, pile_err *err);

/* Size of a file in bytes, or a negative PILE_E* code. */
int pile_fs_size(const char *path, uint64_t *size, pile_err *err);

/* 1 if path is a folder, 0 if not (or absent). */
int pile_fs_is_dir(const char *path);

/* Joins a and b with one '/', into out (cleared first, NUL-terminated);
 * an empty a gives b unchanged. 0 or PILE_ENOMEM. */
int pile_fs_join(pile_buf *out, const char *a, const char *b);

/* One writer per folder: an advisory lock (flock(2)) on <dir>/.pile.lock,
 * held until pile_fs_lock_close or the process's end (the kernel releases a
 * dead process's lock, so a lock never outlives its holder and needs no
 * cleanup). The file records who holds it (tool, pid, host, start time) for
 * the message a second process gets. The descriptor is close-on-exec.
 * Advisory: it keeps out other pile tools, not other programs. */
typedef struct pile_fs_lock pile_fs_lock;

#define PILE_FS_LOCK_NAME ".pile.lock"

/* Takes the lock of folder `dir` (which must exist) for `tool` (a short
 * name such as "pile-prep"), without waiting. When another process holds
 * it: PILE_EBUSY with a message naming the folder and the holder ("folder
 * 'o' is in use by pile-prep (pid 123 on host h, since 2026-12-03
 * 10:00:00 UTC)"). */
int pile_fs_lock_open(pile_fs_lock **out, const char *dir, const char *tool, pile_err *err);
/* Releases the lock (the file stays: removing it would race with a process
 * that has just opened it). Accepts NULL. */
void pile_fs_lock_close(pile_fs_lock *lock);

#ifdef __cplusplus
}
#endif

#endif
