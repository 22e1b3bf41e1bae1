/* hushcall/secmem.h — locked, dump-excluded, zeroed-on-free memory for plaintext.
 *
 * Two shapes: an arena (many small allocations freed together, used for a
 * decrypted JSON document) and a growable buffer (a request being serialized,
 * a plaintext being decrypted). Both are page-granular mmap regions with
 * PROT_NONE guard pages on both sides, mlock'ed, MADV_DONTDUMP and
 * MADV_WIPEONFORK where the kernel has them, and zeroed before munmap.
 * When mlock is refused (RLIMIT_MEMLOCK) the memory still works, is still
 * zeroed and excluded from dumps, and reports itself as not locked. */
#ifndef HUSHCALL_SECMEM_H
#define HUSHCALL_SECMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for arenas and buffers. */
#define HUSH_SECMEM_DEFAULT 0u
#define HUSH_SECMEM_NO_LOCK 1u /* skip mlock (the user opted out); still guarded and wiped */
#define HUSH_SECMEM_PUBLIC 2u  /* not secret (ciphertext, packages): ordinary heap memory */

/* ---- arena ------------------------------------------------------------ */

typedef struct hush_arena hush_arena;

/* Create an empty arena. The arena owns every byte it hands out. */
HUSH_MUST_USE
hush_status hush_arena_new(unsigned flags, hush_arena **out, hush_error *err);

/* Allocate `size` zeroed bytes aligned to 16. Thread-safe. The memory lives
 * until hush_arena_wipe or hush_arena_free. */
HUSH_MUST_USE
hush_status hush_arena_alloc(hush_arena *arena, size_t size, void **out, hush_error *err);

/* Copy `len` bytes into the arena (a NUL is appended, not counted). */
HUSH_MUST_USE
hush_status hush_arena_strdup(hush_arena *arena, const void *data, size_t len,
                              char **out, hush_error *err);

/* Zero every byte the arena holds and forget all allocations; the arena
 * stays usable. Pointers handed out before are invalid afterwards.
 * Accepts NULL. */
void hush_arena_wipe(hush_arena *arena);

/* Wipe, then unmap. Accepts NULL. */
void hush_arena_free(hush_arena *arena);

/* True when every region of the arena is mlock'ed; false for NULL. */
bool hush_arena_is_locked(const hush_arena *arena);

/* Bytes mapped for payload (guard pages and headers excluded); 0 for NULL. */
size_t hush_arena_mapped_bytes(const hush_arena *arena);

/* ---- growable buffer -------------------------------------------------- */

typedef struct hush_secbuf hush_secbuf;

/* Create a buffer with room for at least `capacity` bytes. `max_size` caps
 * its growth (0 means no cap beyond address space): growing past it fails
 * with HUSH_E_LIMIT and leaves the buffer as it was. */
HUSH_MUST_USE
hush_status hush_secbuf_new(size_t capacity, size_t max_size, unsigned flags, hush_secbuf **out,
                            hush_error *err);

/* Make room for `extra` more bytes. Growth maps a new region, copies, and
 * zeroes the old region before unmapping it: no stale copy is left.
 *
 * A buffer keeps a high-water mark: the largest length it ever had and the
 * end of every room reserved (callers write into that room directly). Clear
 * and shrink wipe up to the mark, not just up to the current length. */
HUSH_MUST_USE
hush_status hush_secbuf_reserve(hush_secbuf *buf, size_t extra, hush_error *err);

HUSH_MUST_USE
hush_status hush_secbuf_append(hush_secbuf *buf, const void *data, size_t len, hush_error *err);
HUSH_MUST_USE
hush_status hush_secbuf_append_byte(hush_secbuf *buf, unsigned char byte, hush_error *err);

/* The bytes written so far, to write into (after a reserve); NULL for a
 * NULL buffer. The pointer is invalidated by any growth. */
unsigned char *hush_secbuf_data(hush_secbuf *buf);
/* The same bytes, read-only: what a const buffer gives out. */
const unsigned char *hush_secbuf_bytes(const hush_secbuf *buf);
size_t hush_secbuf_len(const hush_secbuf *buf);      /* 0 for NULL */
size_t hush_secbuf_capacity(const hush_secbuf *buf); /* 0 for NULL */

/* Declare that `len` bytes were written directly into hush_secbuf_data()
 * (after a reserve). Fails with HUSH_E_ARGUMENT past the capacity. A length
 * below the high-water mark shrinks the buffer: every byte past `len` up to
 * the mark is zeroed, so it cannot be had back by growing again. */
HUSH_MUST_USE
hush_status hush_secbuf_set_len(hush_secbuf *buf, size_t len, hush_error *err);

/* Zero everything up to the high-water mark and set the length to 0;
 * capacity is kept. Accepts NULL. */
void hush_secbuf_clear(hush_secbuf *buf);

bool hush_secbuf_is_locked(const hush_secbuf *buf); /* false for NULL */

/* Zero the whole region, then unmap. Accepts NULL. (A HUSH_SECMEM_PUBLIC
 * buffer, not secret by its flag, is freed without zeroing.) */
void hush_secbuf_free(hush_secbuf *buf);

/* ---- zeroing and reporting ------------------------------------------- */

/* Zero memory in a way the compiler cannot remove. Accepts NULL. */
void hush_memzero(void *ptr, size_t len);

typedef struct hush_memory_protection {
    const char *platform;       /* "linux" */
    bool mlock_available;       /* no region has failed to lock so far */
    bool dump_exclusion;        /* MADV_DONTDUMP is applied */
    bool wipe_on_fork;          /* MADV_WIPEONFORK is applied */
    bool openssl_secure_heap;   /* OpenSSL keeps private-key bignums in its secure heap */
    uint64_t locked_bytes;      /* bytes hushcall holds locked right now */
    uint64_t mapped_bytes;      /* bytes hushcall holds in secure regions right now */
    uint64_t lock_failures;     /* regions that could not be locked, since start */
} hush_memory_protection;

/* Process-wide figures. They are statistics only (atomic counters): nothing
 * in hushcall decides anything from them. Accepts NULL (does nothing). */
void hush_memory_protection_info(hush_memory_protection *out);

#ifdef __cplusplus
}
#endif
#endif
