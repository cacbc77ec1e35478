/* atomic_file.c — see atomic_file.h. */
#include "atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define TMP_TAG ".tmp."

/* Length of the directory part of path including the final '/', 0 if none. */
static size_t dir_len(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? (size_t)(s - path) + 1 : 0;
}

/* The directory part of path ("." when it has none), malloc'ed; NULL when out of memory. */
static char *dir_of(const char *path) {
    size_t n = dir_len(path);
    char *d = malloc(n + 2);
    if (!d) return NULL;
    if (n) memcpy(d, path, n);
    else d[n++] = '.';
    d[n] = 0;
    return d;
}

/* The pid in "BASE.tmp.PID" if name is a temporary of base, else 0. */
static long temp_pid(const char *name, const char *base) {
    size_t bl = strlen(base), tl = strlen(TMP_TAG);
    if (strncmp(name, base, bl) != 0 || strncmp(name + bl, TMP_TAG, tl) != 0) return 0;
    const char *p = name + bl + tl;
    if (!*p) return 0;
    long pid = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || pid > 1L << 40) return 0;
        pid = pid * 10 + (*p - '0');
    }
    return pid;
}

/* Removes DEST.tmp.PID files whose process no longer exists. */
static void remove_stale(const char *dest) {
    char *dir = dir_of(dest);
    if (!dir) return;
    const char *base = dest + dir_len(dest);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            long pid = temp_pid(e->d_name, base);
            if (pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
            size_t n = strlen(dir) + strlen(e->d_name) + 2;
            char *p = malloc(n);
            if (p) {
                snprintf(p, n, "%s/%s", dir, e->d_name);
                unlink(p);
                free(p);
            }
        }
        closedir(d);
    }
    free(dir);
}

/* fsync of the directory holding path, so the rename itself is durable (best effort). */
static void sync_dir(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

static void release(atomic_file *a) {
    free(a->dest);
    free(a->tmp);
    a->fp = NULL;
    a->dest = a->tmp = NULL;
}

bool atomic_file_open(atomic_file *a, const char *dest) {
    memset(a, 0, sizeof *a);
    const size_t n = strlen(dest) + sizeof TMP_TAG + 24;
    a->dest = strdup(dest);
    a->tmp = malloc(n);
    if (!a->dest || !a->tmp) {
        release(a);
        errno = ENOMEM;
        return false;
    }
    snprintf(a->tmp, n, "%s" TMP_TAG "%ld", dest, (long)getpid());
    remove_stale(dest);
    a->fp = fopen(a->tmp, "wb");
    if (!a->fp) {
        int err = errno;
        release(a);
        errno = err;
        return false;
    }
    return true;
}

bool atomic_file_commit(atomic_file *a, bool ok) {
    if (!a->fp) {
        release(a);
        errno = EINVAL;
        return false;
    }
    int err = ok ? 0 : (errno ? errno : EIO);
    if (ok && (fflush(a->fp) != 0 || fsync(fileno(a->fp)) != 0)) {
        ok = false;
        err = errno;
    }
    if (fclose(a->fp) != 0 && ok) {
        ok = false;
        err = errno;
    }
    a->fp = NULL;
    if (ok && rename(a->tmp, a->dest) != 0) {
        ok = false;
        err = errno;
    }
    if (ok) sync_dir(a->dest);
    else remove(a->tmp);
    release(a);
    errno = ok ? 0 : err;
    return ok;
}

void atomic_file_abort(atomic_file *a) {
    if (a->fp) fclose(a->fp);
    if (a->tmp) remove(a->tmp);
    release(a);
}

bool atomic_file_is_temp(const char *name) {
    const char *s = strstr(name, TMP_TAG);
    while (s) {
        const char *p = s + strlen(TMP_TAG);
        if (*p && strspn(p, "0123456789") == strlen(p)) return true;
        s = strstr(s + 1, TMP_TAG);
    }
    return false;
}
