/* pile-prep as a library: raw JSON-lines files (the Pile's .jsonl.zst, or
 * plain, or gzip) to packed, memory-mappable shards (shards/pile_shards.h),
 * in parallel, deterministic (the output never depends on the thread count)
 * and resumable after a crash (OUT/manifest.json records the finished shards
 * and where to go on).
 *
 * The library never prints: warnings go through a caller-supplied callback,
 * the progress line to a caller-supplied FILE (or nowhere). */
#ifndef PILE_PREP_H
#define PILE_PREP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pile_buf.h"
#include "pile_error.h"
#include "pile_shards.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PILE_PREP_VERSION "0.1.0"
/* Version of OUT/manifest.json; a manifest of another version is not resumed. */
#define PILE_PREP_MANIFEST_VERSION 1

/* ---------------------------------------------------------------- inputs */

/* One input file. */
typedef struct pile_prep_input {
    char *path;           /* as given, or as found under a folder given (owned) */
    pile_split split;     /* by the words of its name, or by a rule (pile_prep_inputs_set_split) */
    uint64_t size;        /* bytes on disk */
    int64_t mtime_ns;     /* modification time, nanoseconds since the epoch */
    uint64_t dev, ino;    /* what the file is: duplicates and resumes compare these, not the spelling */
    unsigned name_splits; /* bit 1 << PILE_SPLIT_VAL / _TEST for each split word its name has */
    char *rule;           /* the rule that set split ("--val 'x*'"), NULL: the name did (owned) */
} pile_prep_input;

#define PILE_PREP_NOTES_MAX 10 /* passed-over files named in pile_prep_inputs.notes; the rest counted */

/* A list of inputs; zero-initialise, free with pile_prep_inputs_free. */
typedef struct pile_prep_inputs {
    pile_prep_input *v;
    size_t n, cap;
    pile_buf notes; /* "passed over 'PATH': why" lines for what a walk did not take (the first PILE_PREP_NOTES_MAX) */
    size_t n_notes; /* how many there were in all */
} pile_prep_inputs;

/* Adds `path`: a file is added as it is (whatever its name); a folder is
 * walked recursively and its input files are added sorted by path (byte
 * order), so the order never depends on the file system. Input files are
 * *.jsonl and *.json, plain or compressed (.zst, .zstd, .gz), names in any
 * case. A walk passes over (with a note) a pile-prep output folder, a plain
 * .json file that holds one JSON document rather than JSON lines, and data
 * in other compressions (.jsonl.xz). A missing path is PILE_ENOENT ("cannot
 * open 'x': No such file or directory"); so is a folder without any input
 * file. An input that cannot be read (no permission, a dangling symbolic
 * link, a FIFO or another file that is not regular) fails here, before any
 * work, naming it.
 *
 * The split is told by the words of the name (separated by '_', '-', '.',
 * '/' and the ends, any case): val, valid or validation -> val, test ->
 * test, else train; for a file found in a folder walk, the words of its
 * file name, else of the nearest folder between it and the folder given
 * (validation/part-0.jsonl.gz is val). A name with words of both is left
 * to a rule: pile_prep_run refuses it otherwise. */
int pile_prep_inputs_add(pile_prep_inputs *list, const char *path, pile_err *err);

/* Puts every input `pattern` names into `split`, whatever its name says
 * (the --train / --val / --test options): an existing file names itself
 * (compared as files: device and inode) and an existing folder every input
 * under it; a file or folder not among the inputs yet is added first.
 * Anything else is a glob (fnmatch(3)) over each input's path as found, or
 * over its file name alone when the pattern has no '/'. Call after adding
 * the inputs. An input named by rules of two splits is PILE_EINVAL naming
 * both; a pattern that names no input is PILE_ENOENT. */
int pile_prep_inputs_set_split(pile_prep_inputs *list, pile_split split, const char *pattern, pile_err *err);
void pile_prep_inputs_free(pile_prep_inputs *list);

/* One machine's share of the inputs (--partition K/N, Slurm array jobs). */
typedef struct pile_prep_partition {
    uint32_t index, count;          /* partition index (1-based) of count */
    size_t inputs_total;            /* distinct input files before the selection */
    size_t inputs_selected;         /* ... and in this partition */
    uint64_t bytes_total, bytes_selected; /* their sizes on disk */
    uint64_t inputs_xxh3;           /* XXH3-64 of every input's split, file name and size, in order:
                                       partitions of one set of inputs share it */
} pile_prep_partition;

/* Keeps in `list` only the inputs of partition `index` (1 to count) of
 * `count`, and fills *out. Whole files are dealt out (one zstd frame
 * decompresses on one core anyway), balanced by size: split by split
 * (train, val, test), each split's files largest first (ties in list
 * order) go to the partition with the fewest bytes so far (ties: the
 * lowest index), so the assignment depends only on the list (names,
 * order, sizes, splits) and is the same on every machine given the same
 * command. A file listed twice (another spelling) counts once and stays
 * with its first spelling. More partitions than distinct files is
 * PILE_EINVAL (some would be empty), as is an index out of range. Call
 * after pile_prep_inputs_set_split. */
int pile_prep_inputs_partition(pile_prep_inputs *list, uint32_t index, uint32_t count, pile_prep_partition *out,
                               pile_err *err);

/* The split the words of a file name tell (only the last path component
 * counts): val, test, or train (no split word, or words of both). */
pile_split pile_prep_split_of(const char *path);
/* "train", "val", "test". */
const char *pile_prep_split_name(pile_split split);

/* --------------------------------------------------------------- running */

/* Receives one warning line (no trailing newline): skipped or repaired lines
 * (the first few), truncated files, resume notes. Called from the thread that
 * called pile_prep_run. */
typedef void (*pile_prep_log_fn)(void *ctx, const char *msg);

typedef struct pile_prep_opts {
    const pile_prep_input *inputs; /* processed in split order (train, val, test), each split in list order */
    size_t n_inputs;
    const char *output_dir;     /* created if absent */
    const char *tokenizer_spec; /* anything pile_tokenizer_open takes; NULL: "bytes" */
    uint32_t max_length;        /* tokens per row; 0: 2048 */
    pile_pack pack;
    uint64_t shard_bytes;       /* target token-data bytes per shard; 0: 256 MiB */
    uint32_t window_rows;       /* best-fit: a window holds window_rows * max_length tokens; 0: 1024 */
    size_t max_line_bytes;      /* longer lines are skipped; 0: 64 MiB */
    const char *text_key;       /* dotted path of each line's text; NULL: "text" */
    const char *subset_key;     /* dotted path of its subset name; NULL: "meta.pile_set_name"; "": none */
    uint64_t zstd_memory;       /* largest zstd window read, bytes (rounded down to a power of two);
                                   0: what fits this machine beside the threads (pile_lines_window_fit) */
    int threads;                /* worker threads (parse + tokenize); <= 0: all cores */
    int strict;                 /* the first skipped line (or truncated file) is an error */
    int megatron;               /* also write OUT/<split>.bin/.idx at the end */
    int force;                  /* ignore (and remove) an earlier run's output instead of resuming */
    FILE *progress;             /* where to draw the progress line; NULL: no progress */
    pile_prep_log_fn log;       /* warnings; NULL: dropped */
    void *log_ctx;
    const pile_prep_partition *partition; /* the inputs are this partition's (recorded in the manifest's
                                             options); NULL: all inputs */
    uint64_t stop_after_shards; /* for tests: fail with PILE_ELIMIT once this run has finished this many
                                   shards, leaving the output as a crash would; 0: never */
} pile_prep_opts;

/* What a run did. Free with pile_prep_result_free. */
typedef struct pile_prep_result {
    int already_complete;      /* the manifest said the output was complete: nothing was done */
    int resumed;               /* an interrupted run was continued */
    uint64_t shards_kept;      /* shards from the interrupted run that were kept */
    /* the check of kept files (a resumed run, or a rerun of a finished one):
     * each recorded shard and Megatron file read whole and compared with the
     * manifest's checksums; damaged or missing ones are written again */
    uint64_t files_checked, bytes_checked, files_redone;
    double check_s;
    uint64_t lines, documents, skipped, tokens, rows, truncated_inputs;
    uint64_t input_bytes;      /* bytes on disk of the inputs read in this run */
    uint64_t jsonl_bytes;      /* decompressed JSONL bytes read in this run */
    double wall_s;             /* this run's wall time */
    int threads;               /* worker threads used */
    uint64_t zstd_window_max;  /* the zstd window bound used (opts->zstd_memory or its default) */
    uint64_t decoder_bytes;    /* the most memory one input's decompressor held (several inputs are read at
                                  once while their first frames' windows fit zstd_window_max together) */
    uint64_t peak_rss;         /* the process's peak resident memory, bytes */
    /* thread-seconds spent in each stage (sums over threads) */
    double read_s, parse_s, tokenize_s, pack_s;
    double write_s;            /* the part of pack_s spent in the shard writer (reserving and committing rows,
                                  waiting for room in its ring, finishing shards) */
    double copy_s;             /* the workers' copies of the ids into the rows (and best-fit's window) that the
                                  packing thread decided (pack_s has those it did itself, rarely) */
    /* CPU seconds of each stage's threads (sums): what a loaded machine does not inflate.
       Read once a chunk: a worker's CPU is shared between parse and tokenize, the packing
       thread's between pack and write, as their wall times are */
    double read_cpu, parse_cpu, tokenize_cpu, pack_cpu, write_cpu, copy_cpu;
    double bg_write_cpu;       /* the shard writers' background threads: checksums and disk writes */
    int readers;               /* the most inputs read at once (one reader thread each) */
    double pipeline_s;         /* wall time of reading, tokenizing and packing (the stage shares' base) */
    pile_buf summary;          /* the closing summary, several lines, for a person */
} pile_prep_result;

void pile_prep_result_free(pile_prep_result *res);

/* Runs the whole job. OUT is held with pile_fs_lock_open for the whole run
 * (another run on it: PILE_EBUSY naming the holder). If OUT/manifest.json
 * exists: with the same options and inputs the run resumes (or, if
 * complete, sets already_complete), after checking every kept file against
 * the checksums the manifest records and writing damaged or missing ones
 * again; with other options or inputs it fails with PILE_EMISMATCH unless
 * opts->force. Inputs are compared as files (device, inode, size, mtime),
 * not by how their paths are spelled. An input given twice (the same device
 * and inode: another spelling, a link) is read once, with a warning; in two
 * splits it is an error, as is a name with words of two splits and no rule.
 * Only files the manifest (or the interrupted run it describes) says
 * pile-prep wrote are ever removed or overwritten, --force included; a file
 * of another program where pile-prep would write is refused (PILE_EMISMATCH
 * naming it). The tokenizer's file(s) are copied into OUT/tokenizer/ and
 * the manifest records that copy's path, relative to OUT, so the folder is
 * self-contained. res may be NULL. Returns 0 or a negative PILE_E* with err
 * filled (a --strict failure is PILE_EFORMAT naming file:line and why; a
 * run in which every line was skipped is PILE_EFORMAT with the counts). */
int pile_prep_run(const pile_prep_opts *opts, pile_prep_result *res, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
