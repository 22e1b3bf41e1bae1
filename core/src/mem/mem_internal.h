/* mem_internal.h — the secure-memory layer's internals: credentials held
 * in ordinary C strings, the bounded file reader, and private-key files. */
#ifndef HUSHCALL_MEM_INTERNAL_H
#define HUSHCALL_MEM_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "hushcall/secmem.h"
#include "internal.h"

/* ---- credentials on the ordinary heap (secmem.c) ------------------------ */

/* The one wipe for a credential held in a C string (an API key, a key
 * password, a header line carrying one): zero it up to its NUL. */
void hush__wipe_string(char *s);
/* Wipe, then free: every heap copy of a credential ends here. Accepts NULL. */
void hush__free_secret_string(char *s);

/* ---- small secrets (secmem.c) -------------------------------------------- */

/* A few hundred secret bytes that live as long as one object (an HPKE
 * context's keys). A region of its own costs eight system calls (map,
 * guard, lock, advise, unmap: ~20 us), more than the cryptography around
 * it; OpenSSL's secure heap, set up by hush__init, is one locked,
 * dump-excluded region with guard pages at its ends, whose blocks are
 * cleared when freed. So a block comes from there, and from a region of
 * its own (hush_secbuf) when that heap is absent or full. */
typedef struct hush__secret_block {
    void *data;          /* `size` zeroed bytes */
    size_t size;
    hush_secbuf *region; /* the fallback's region, else NULL */
} hush__secret_block;

HUSH_MUST_USE
hush_status hush__secret_block_new(size_t size, hush__secret_block *out, hush_error *err);
/* Zero the block and give it back; a zeroed struct is accepted (nothing to do). */
void hush__secret_block_free(hush__secret_block *block);

/* ---- small arenas (secmem.c) -------------------------------------------- */

/* A flag for hush_arena_new (and so hush_json_parse): an arena for a small
 * document made many times a second (a streamed chunk). Mapping, locking
 * and guarding a region of its own costs ~40 us, more than everything else
 * a chunk needs; so its chunks come from OpenSSL's secure heap (locked,
 * dump-excluded, guarded at its ends, cleared on free) while it has room,
 * starting small, and from regions of their own once it is full. */
#define HUSH__SECMEM_SMALL 0x100u

/* ---- files (fileread.c) ------------------------------------------------ */

/* Read the rest of `fd` into a new buffer of `secmem_flags`, refusing more
 * than `max` bytes even if the file grows while it is read. Messages name
 * the file as `what` (a path to show, or a description). */
HUSH_MUST_USE
hush_status hush__secbuf_read_fd(int fd, const char *what, size_t max, unsigned secmem_flags,
                                 hush_secbuf **out, hush_error *err);

/* ---- private-key files (secfile.c) --------------------------------------- */

/* Paths are shown in messages at most this long (the tail is kept), so two
 * fit in one HUSH_ERROR_MESSAGE_MAX message with its text. */
#define HUSH_PATH_SHOWN_MAX 60

/* `path`, or "..." and its tail when it is long (paths are not secret). */
const char *hush__shown_path(const char *path, char buf[HUSH_PATH_SHOWN_MAX + 1]);

/* The failure for open(2) of `path` failing with `errnum`: a symlink is
 * HUSH_E_PERMISSIONS, a missing file HUSH_E_NOT_FOUND, the rest HUSH_E_IO. */
HUSH_MUST_USE
hush_status hush__fail_open(const char *path, int errnum, hush_error *err);

/* Read a whole private-key file of at most `max` bytes into new secure
 * memory, refusing (HUSH_E_PERMISSIONS) a symlink, anything but a regular
 * file, a file of another owner or one group or others may reach. */
HUSH_MUST_USE
hush_status hush__private_key_file_read(const char *path, size_t max, hush_secbuf **out,
                                        hush_error *err);

/* Write `data` to `path` (mode 0600) as hush__staged_* do, the directory
 * synced after. HUSH_E_EXISTS when the name is taken, unless `overwrite`,
 * which replaces the file atomically. On failure nothing new is left. */
HUSH_MUST_USE
hush_status hush__private_key_file_write(const char *path, const void *data, size_t len,
                                         bool overwrite, hush_error *err);

/* One file on its way into a directory: written under a temporary name
 * beside its final one, then put in place. Zero-initialise, set name and
 * mode. */
typedef struct hush_staged_file {
    const char *name;
    mode_t mode;
    char temp[NAME_MAX + 1];
    bool temp_exists;
    bool placed;
} hush_staged_file;

/* Open directory `dir` (refusing a symlink) into *dfd, which the caller
 * closes; with `create`, make its last component (0700) when absent. */
HUSH_MUST_USE
hush_status hush__dir_open(const char *dir, bool create, int *dfd, hush_error *err);

/* HUSH_E_EXISTS when any of the files' names is taken in `dfd`. */
HUSH_MUST_USE
hush_status hush__staged_refuse_existing(int dfd, const char *dir, const hush_staged_file *files,
                                         size_t count, hush_error *err);

/* Write `data` to a fresh temporary file beside `f`'s name, durably. */
HUSH_MUST_USE
hush_status hush__staged_write(int dfd, const char *dir, hush_staged_file *f, const void *data,
                               size_t len, hush_error *err);

/* Give the temporary file its final name: rename with `overwrite`, else a
 * link that fails (HUSH_E_EXISTS) when the name was taken meanwhile. */
HUSH_MUST_USE
hush_status hush__staged_place(int dfd, const char *dir, hush_staged_file *f, bool overwrite,
                               hush_error *err);

/* After a failure: no temporary files, and without overwrite no new files
 * either (they were ours: the names were free when we began). */
void hush__staged_undo(int dfd, hush_staged_file *files, size_t count, bool overwrite);

#endif
