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

#ifdef __cplusplus
}
#endif

#endif
