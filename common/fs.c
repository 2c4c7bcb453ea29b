/* Crash-safe file output and small file helpers (POSIX). */
#include "pile_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The PILE_E* code for a failed system call's errno. */
static int code_of(int errnum)
{
    return errnum == ENOENT ? PILE_ENOENT : errnum == ENOMEM ? PILE_ENOMEM : PILE_EIO;
}

int pile_fs_fsync_dir(const char *path, pile_err *err)
{
    /* No allocation here: callers fsync the folder after a rename, when a
     * failure could only mislead (the file is already in place). */
    char dir[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof dir) return pile_err_set(err, PILE_EINVAL, "cannot fsync the folder of '%s': path too long", path);
    memcpy(dir, path, n + 1);
    if (!pile_fs_is_dir(path)) {
        char *slash = strrchr(dir, '/');
        if (!slash) strcpy(dir, ".");
        else if (slash == dir) dir[1] = '\0';
        else *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return pile_err_sys(err, code_of(errno), errno, "cannot open folder '%s'", dir);
    int rc = 0;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot fsync folder '%s'", dir);
    close(fd);
    return rc;
}

int pile_fs_write_atomic(const char *path, const void *data, size_t len, pile_err *err)
{
    pile_buf tmp = {0};
    if (pile_buf_printf(&tmp, "%s.tmp", path)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = 0;
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", tmp.data);
        goto out;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", tmp.data);
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!rc && fsync(fd) != 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot fsync '%s'", tmp.data);
    if (close(fd) != 0 && !rc) rc = pile_err_sys(err, PILE_EIO, errno, "cannot close '%s'", tmp.data);
    if (!rc && rename(tmp.data, path) != 0)
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", tmp.data, path);
    if (rc) unlink(tmp.data);
    if (!rc) rc = pile_fs_fsync_dir(path, err);
out:
    pile_buf_free(&tmp);
    return rc;
}

int pile_fs_mkdirs(const char *path, pile_err *err)
{
    if (!*path) return pile_err_set(err, PILE_EINVAL, "cannot create folder '': empty path");
    char *copy = strdup(path);
    if (!copy) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = 0;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                rc = pile_err_sys(err, PILE_EIO, errno, "cannot create folder '%s'", copy);
                break;
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    if (!rc && !pile_fs_is_dir(path))
        rc = pile_err_set(err, PILE_EIO, "cannot create folder '%s': a file is in the way", path);
    free(copy);
    return rc;
}

int pile_fs_read_file(const char *path, pile_buf *out, pile_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return pile_err_sys(err, code_of(errno), errno, "cannot open '%s'", path);
    int rc = 0;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (pile_buf_append(out, chunk, n)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", path);
            break;
        }
    }
    if (!rc && ferror(f)) rc = pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", path);
    fclose(f);
    return rc;
}

int pile_fs_size(const char *path, uint64_t *size, pile_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return pile_err_sys(err, code_of(errno), errno, "cannot stat '%s'", path);
    *size = (uint64_t)st.st_size;
    return 0;
}

int pile_fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int pile_fs_join(pile_buf *out, const char *a, const char *b)
{
    out->len = 0;
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/') la--;
    /* "" joins to b itself (the current folder), never to "/b"; "/" needs no second slash */
    int slash = la > 0 && a[la - 1] != '/';
    if (pile_buf_append(out, a, la) || pile_buf_append(out, "/", (size_t)slash) || pile_buf_append_str(out, b) ||
        pile_buf_reserve(out, 1))
        return PILE_ENOMEM;
    out->data[out->len] = '\0';
    return 0;
}
