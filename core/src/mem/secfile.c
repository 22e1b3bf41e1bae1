/* secfile.c — private-key files on disk, for every kind of key: the safe
 * open and read (ssh's rules, into secure memory) and the staged atomic
 * write (temporary file beside the final name, fsync, link or rename).
 * The RSA key directories (crypto/keys.c) and the HPKE key files
 * (crypto/hpke_keyfile.c) both go through here. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "hushcall/secmem.h"
#include "internal.h"
#include "mem/mem_internal.h"

const char *hush__shown_path(const char *path, char buf[HUSH_PATH_SHOWN_MAX + 1])
{
    size_t len = strlen(path);
    if (len <= HUSH_PATH_SHOWN_MAX)
        return path;
    snprintf(buf, HUSH_PATH_SHOWN_MAX + 1, "...%s", path + len - (HUSH_PATH_SHOWN_MAX - 3));
    return buf;
}

hush_status hush__fail_open(const char *path, int errnum, hush_error *err)
{
    char buf[HUSH_PATH_SHOWN_MAX + 1];
    const char *shown = hush__shown_path(path, buf);
    if (errnum == ELOOP)
        return hush__fail(err, HUSH_E_PERMISSIONS, "%s is a symbolic link; refusing to follow it",
                          shown);
    if (errnum == ENOENT)
        return hush__fail(err, HUSH_E_NOT_FOUND, "%s does not exist", shown);
    return hush__fail(err, HUSH_E_IO, "cannot open %s: %s", shown, strerror(errnum));
}

/* ---- reading ------------------------------------------------------------ */

/* ssh's rule: a private key only its owner can reach. */
HUSH_MUST_USE
static hush_status check_private_key_file(int fd, const char *shown, size_t max, hush_error *err)
{
    hush_status status = HUSH_OK;
    struct stat st;
    HUSH_ENSURE(fstat(fd, &st) == 0, HUSH_E_IO, "cannot stat %s: %s", shown, strerror(errno));
    HUSH_ENSURE(S_ISREG(st.st_mode), HUSH_E_PERMISSIONS, "%s is not a regular file", shown);
    HUSH_ENSURE(st.st_uid == geteuid(), HUSH_E_PERMISSIONS,
                "%s is owned by uid %u, not by the current user (uid %u)", shown,
                (unsigned)st.st_uid, (unsigned)geteuid());
    HUSH_ENSURE((st.st_mode & 077) == 0, HUSH_E_PERMISSIONS,
                "permissions %04o for '%s' are too open: the private key must not be "
                "accessible by others; run: chmod 600 %s",
                (unsigned)(st.st_mode & 07777), shown, shown);
    HUSH_ENSURE(st.st_size <= (off_t)max, HUSH_E_LIMIT, "%s is larger than %zu bytes", shown,
                max);
cleanup:
    return status;
}

hush_status hush__private_key_file_read(const char *path, size_t max, hush_secbuf **out,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    char buf[HUSH_PATH_SHOWN_MAX + 1];
    const char *shown = hush__shown_path(path, buf);
    /* O_NONBLOCK: opening a FIFO planted in place of the key must not hang;
     * it is refused as not a regular file. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        HUSH_BAIL_WITH(hush__fail_open(path, errno, err));
    HUSH_TRY(check_private_key_file(fd, shown, max, err));
    HUSH_TRY(hush__secbuf_read_fd(fd, shown, max, HUSH_SECMEM_DEFAULT, out, err));
cleanup:
    if (fd >= 0)
        close(fd);
    return status;
}

/* ---- staged writes ------------------------------------------------------ */

hush_status hush__dir_open(const char *dir, bool create, int *dfd, hush_error *err)
{
    hush_status status = HUSH_OK;
    char buf[HUSH_PATH_SHOWN_MAX + 1];
    const char *shown = hush__shown_path(dir, buf);
    /* Only the last component is created: a missing parent is more likely
     * a typo than a wish for a new tree. */
    bool created = create && mkdir(dir, 0700) == 0;
    HUSH_ENSURE(!create || created || errno == EEXIST, HUSH_E_IO,
                "cannot create the key directory %s: %s", shown, strerror(errno));
    *dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (*dfd < 0) {
        /* Linux says ENOTDIR, not ELOOP, for a symlink with O_DIRECTORY. */
        int errnum = errno;
        struct stat st;
        if (errnum == ENOTDIR && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
            errnum = ELOOP;
        HUSH_BAIL_WITH(hush__fail_open(dir, errnum, err));
    }
    /* The umask may have taken bits from mkdir's mode; be exact. The caller
     * closes *dfd whatever happens. */
    HUSH_ENSURE(!created || fchmod(*dfd, 0700) == 0, HUSH_E_IO, "cannot chmod %s: %s", shown,
                strerror(errno));
cleanup:
    return status;
}

hush_status hush__staged_refuse_existing(int dfd, const char *dir, const hush_staged_file *files,
                                         size_t count, hush_error *err)
{
    hush_status status = HUSH_OK;
    char buf[HUSH_PATH_SHOWN_MAX + 1];
    const char *shown = hush__shown_path(dir, buf);
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        HUSH_ENSURE(fstatat(dfd, files[i].name, &st, AT_SYMLINK_NOFOLLOW) != 0, HUSH_E_EXISTS,
                    "%s/%s already exists (HUSH_KEYS_SAVE_OVERWRITE replaces it)", shown,
                    files[i].name);
        HUSH_ENSURE(errno == ENOENT, HUSH_E_IO, "cannot stat %s/%s: %s", shown, files[i].name,
                    strerror(errno));
    }
cleanup:
    return status;
}

static bool write_all(int fd, const unsigned char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

hush_status hush__staged_write(int dfd, const char *dir, hush_staged_file *f, const void *data,
                               size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    char buf[HUSH_PATH_SHOWN_MAX + 1];
    const char *shown = hush__shown_path(dir, buf);
    unsigned char rnd[6];
    int fd = -1;

    HUSH_OSSL(RAND_bytes(rnd, sizeof rnd) == 1, "RAND_bytes");
    int n = snprintf(f->temp, sizeof f->temp, ".%s.%02x%02x%02x%02x%02x%02x", f->name, rnd[0],
                     rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    HUSH_ENSURE(n > 0 && (size_t)n < sizeof f->temp, HUSH_E_ARGUMENT,
                "file name %s is too long to stage", f->name);
    fd = openat(dfd, f->temp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, f->mode);
    HUSH_ENSURE(fd >= 0, HUSH_E_IO, "cannot create a file in %s: %s", shown, strerror(errno));
    f->temp_exists = true;
    /* Exact mode whatever the umask. */
    HUSH_ENSURE(fchmod(fd, f->mode) == 0, HUSH_E_IO, "cannot chmod a file in %s: %s", shown,
                strerror(errno));
    HUSH_ENSURE(write_all(fd, data, len), HUSH_E_IO, "cannot write %s/%s: %s", shown, f->name,
                strerror(errno));
    HUSH_ENSURE(fsync(fd) == 0, HUSH_E_IO, "cannot fsync %s/%s: %s", shown, f->name,
                strerror(errno));
cleanup:
    if (fd >= 0 && close(fd) != 0 && status == HUSH_OK)
        status = hush__fail(err, HUSH_E_IO, "cannot close %s/%s: %s", shown, f->name,
                            strerror(errno));
    return status;
}

/* Without overwrite, linkat fails atomically when the name was taken since
 * hush__staged_refuse_existing looked. */
hush_status hush__staged_place(int dfd, const char *dir, hush_staged_file *f, bool overwrite,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    char buf[HUSH_PATH_SHOWN_MAX + 1];
    const char *shown = hush__shown_path(dir, buf);
    if (overwrite) {
        HUSH_ENSURE(renameat(dfd, f->temp, dfd, f->name) == 0, HUSH_E_IO,
                    "cannot rename into %s/%s: %s", shown, f->name, strerror(errno));
        f->temp_exists = false;
    } else {
        HUSH_ENSURE(linkat(dfd, f->temp, dfd, f->name, 0) == 0,
                    errno == EEXIST ? HUSH_E_EXISTS : HUSH_E_IO, "cannot create %s/%s: %s",
                    shown, f->name, strerror(errno));
        f->placed = true;
        HUSH_ENSURE(unlinkat(dfd, f->temp, 0) == 0, HUSH_E_IO,
                    "cannot remove a temporary file in %s: %s", shown, strerror(errno));
        f->temp_exists = false;
    }
    f->placed = true;
cleanup:
    return status;
}

void hush__staged_undo(int dfd, hush_staged_file *files, size_t count, bool overwrite)
{
    for (size_t i = 0; i < count; i++) {
        if (files[i].temp_exists)
            unlinkat(dfd, files[i].temp, 0);
        if (files[i].placed && !overwrite)
            unlinkat(dfd, files[i].name, 0);
    }
}

/* `path` split into a malloc'd directory ("." when it has none) and the
 * final name, which points into `path`. */
HUSH_MUST_USE
static hush_status split_path(const char *path, char **dir, const char **name, hush_error *err)
{
    hush_status status = HUSH_OK;
    const char *slash = strrchr(path, '/');
    *name = slash != NULL ? slash + 1 : path;
    HUSH_ENSURE(**name != '\0' && strcmp(*name, ".") != 0 && strcmp(*name, "..") != 0,
                HUSH_E_ARGUMENT, "a key file path must end in a file name");
    size_t dir_len = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
    *dir = strndup(slash != NULL ? path : ".", slash != NULL ? dir_len : 1);
    HUSH_ENSURE(*dir != NULL, HUSH_E_NOMEM, "out of memory");
cleanup:
    return status;
}

hush_status hush__private_key_file_write(const char *path, const void *data, size_t len,
                                         bool overwrite, hush_error *err)
{
    hush_status status = HUSH_OK;
    char *dir = NULL;
    int dfd = -1;
    hush_staged_file file = {.mode = 0600};

    HUSH_TRY(split_path(path, &dir, &file.name, err));
    HUSH_TRY(hush__dir_open(dir, false, &dfd, err));
    if (!overwrite)
        HUSH_TRY(hush__staged_refuse_existing(dfd, dir, &file, 1, err));
    HUSH_TRY(hush__staged_write(dfd, dir, &file, data, len, err));
    HUSH_TRY(hush__staged_place(dfd, dir, &file, overwrite, err));
    HUSH_ENSURE(fsync(dfd) == 0, HUSH_E_IO, "cannot fsync the key file's directory: %s",
                strerror(errno));
cleanup:
    if (status != HUSH_OK && dfd >= 0)
        hush__staged_undo(dfd, &file, 1, overwrite);
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return status;
}
