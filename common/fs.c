/* Crash-safe file output and small file helpers (POSIX). */
#include "pile_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
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

struct pile_fs_lock {
    int fd;
};

/* The holder's record, read back for the refusal message: one line, made
 * printable (the file is ours, but a person may have written into it). */
static void read_holder(int fd, char *out, size_t cap)
{
    char buf[512];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    size_t k = 0;
    for (ssize_t i = 0; n > 0 && i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n') break;
        out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[k] = '\0';
}

int pile_fs_lock_open(pile_fs_lock **out, const char *dir, const char *tool, pile_err *err)
{
    *out = NULL;
    pile_buf path = {0};
    if (pile_fs_join(&path, dir, PILE_FS_LOCK_NAME)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = 0;
    int fd = open(path.data, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        rc = pile_err_sys(err, code_of(errno), errno, "cannot open lock file '%s'", path.data);
        goto done;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK) {
            char who[256];
            read_holder(fd, who, sizeof who);
            rc = pile_err_set(err, PILE_EBUSY, "folder '%s' is in use by %s (lock file '%s'); wait for it to end, or "
                              "use another folder", dir, who[0] ? who : "another process (it is starting)", path.data);
        } else {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot lock '%s'", path.data);
        }
        close(fd);
        goto done;
    }
    /* Ours now: record who we are for a second process's message. */
    char host[256] = "unknown host";
    if (gethostname(host, sizeof host) != 0) strcpy(host, "unknown host");
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    char when[64] = "unknown time";
    if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    char line[768];
    int len = snprintf(line, sizeof line, "%s (pid %ld on host %s, since %s)\n", tool, (long)getpid(), host, when);
    if (len < 0 || (size_t)len >= sizeof line) len = (int)strlen(line);
    /* The record is informative only: a failure to write it does not stop the run. */
    if (ftruncate(fd, 0) == 0 && pwrite(fd, line, (size_t)len, 0) < 0) { /* nothing to do */ }
    pile_fs_lock *l = malloc(sizeof *l);
    if (!l) {
        close(fd);
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto done;
    }
    l->fd = fd;
    *out = l;
done:
    pile_buf_free(&path);
    return rc;
}

void pile_fs_lock_close(pile_fs_lock *lock)
{
    if (!lock) return;
    close(lock->fd); /* closing the only descriptor releases the flock */
    free(lock);
}
