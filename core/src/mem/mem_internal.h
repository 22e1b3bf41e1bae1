/* mem_internal.h — the secure-memory layer's internals: credentials held
 * in ordinary C strings, and the bounded file reader. */
#ifndef HUSHCALL_MEM_INTERNAL_H
#define HUSHCALL_MEM_INTERNAL_H

#include "hushcall/secmem.h"
#include "internal.h"

/* ---- credentials on the ordinary heap (secmem.c) ------------------------ */

/* The one wipe for a credential held in a C string (an API key, a key
 * password, a header line carrying one): zero it up to its NUL. */
void hush__wipe_string(char *s);
/* Wipe, then free: every heap copy of a credential ends here. Accepts NULL. */
void hush__free_secret_string(char *s);

/* ---- files (fileread.c) ------------------------------------------------ */

/* Read the rest of `fd` into a new buffer of `secmem_flags`, refusing more
 * than `max` bytes even if the file grows while it is read. Messages name
 * the file as `what` (a path to show, or a description). */
HUSH_MUST_USE
hush_status hush__secbuf_read_fd(int fd, const char *what, size_t max, unsigned secmem_flags,
                                 hush_secbuf **out, hush_error *err);

#endif
