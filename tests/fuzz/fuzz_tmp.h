/* The temporary folder of a fuzz target that needs real files: one per
 * process, made on first use in $TMPDIR (else /dev/shm, where fsync costs
 * nothing, else /tmp) and removed with everything in it when the process
 * exits: libFuzzer ends a timed run, a -runs=N run and the replay of a crash
 * file with exit(). A crash or an interrupt ends it with _Exit and leaves
 * the folder; tools/fuzz.sh points TMPDIR at a folder of its own and removes
 * that too. Header-only: each target is one translation unit. */
#ifndef PILE_FUZZ_TMP_H
#define PILE_FUZZ_TMP_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_tmp_path[512];

static int fuzz_tmp_unlink(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void fuzz_tmp_remove(void)
{
    if (fuzz_tmp_path[0]) nftw(fuzz_tmp_path, fuzz_tmp_unlink, 16, FTW_DEPTH | FTW_PHYS);
}

/* The folder, "<base>/<name>.XXXXXX"; aborts when it cannot be made. */
static const char *fuzz_tmp_dir(const char *name)
{
    if (!fuzz_tmp_path[0]) {
        const char *env = getenv("TMPDIR");
        const char *base = env && *env ? env : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_tmp_path, sizeof fuzz_tmp_path, "%s/%s.XXXXXX", base, name);
        if (!mkdtemp(fuzz_tmp_path)) {
            perror(fuzz_tmp_path);
            abort();
        }
        atexit(fuzz_tmp_remove);
    }
    return fuzz_tmp_path;
}

#endif
