/* secmem.c — guarded, locked, dump-excluded regions, and the arena and
 * growable buffer built on them. Every region is zeroed before it is
 * unmapped; growth copies into a new region and zeroes the old one. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "hushcall/secmem.h"
#include "internal.h"
#include "mem/mem_internal.h"

/* Process-wide statistics for hush_memory_protection_info(). Counters only:
 * no decision in hushcall reads them. */
static atomic_uint_fast64_t stat_locked_bytes;
static atomic_uint_fast64_t stat_mapped_bytes;
static atomic_uint_fast64_t stat_lock_failures;
static atomic_uint_fast64_t stat_dontdump_failures;
static atomic_uint_fast64_t stat_wipeonfork_failures;

#define ARENA_FIRST_CHUNK (16u * 1024u)
#define ARENA_SMALL_FIRST_CHUNK 2048u
#define ARENA_MAX_CHUNK (1024u * 1024u)
#define ARENA_ALIGN 16u

void hush_memzero(void *ptr, size_t len)
{
    if (ptr != NULL && len > 0)
        OPENSSL_cleanse(ptr, len);
}

/* ---- credentials on the ordinary heap ---------------------------------- */

void hush__wipe_string(char *s)
{
    if (s != NULL)
        hush_memzero(s, strlen(s));
}

void hush__free_secret_string(char *s)
{
    hush__wipe_string(s);
    free(s);
}

/* ---- regions ---------------------------------------------------------- */

/* A payload of whole pages between two PROT_NONE guard pages. */
typedef struct region {
    unsigned char *payload;
    size_t len;
    bool locked;
    bool heap; /* HUSH_SECMEM_PUBLIC: plain malloc, none of the protections */
    bool secure_heap; /* HUSH__SECMEM_SMALL: a block of OpenSSL's secure heap */
} region;

/* Straight to the kernel: AddressSanitizer replaces mlock/munlock with
 * no-ops, which would make the sanitizer runs test unlocked memory. */
static int lock_pages(void *p, size_t len) { return (int)syscall(SYS_mlock, p, len); }
static void unlock_pages(void *p, size_t len) { syscall(SYS_munlock, p, len); }

static size_t round_to_pages(size_t n, size_t page)
{
    return (n + page - 1) / page * page;
}

HUSH_MUST_USE
static hush_status region_map(region *r, size_t min_len, unsigned flags, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *base = MAP_FAILED;
    size_t total = 0;
    HUSH_TRY(hush__init(err));
    size_t page = hush__page_size();
    if (min_len == 0)
        min_len = 1;
    if (flags & HUSH_SECMEM_PUBLIC) {
        /* Public bytes need no syscalls: mapping, locking and guarding a
         * region costs more than a whole request's other work. */
        *r = (region){.payload = malloc(min_len), .len = min_len, .heap = true};
        HUSH_ENSURE(r->payload != NULL, HUSH_E_NOMEM, "out of memory for %zu bytes", min_len);
        goto cleanup;
    }
    if ((flags & HUSH__SECMEM_SMALL) && hush__openssl_secure_heap()) {
        unsigned char *block = OPENSSL_secure_zalloc(min_len); /* NULL when the heap is full */
        if (block != NULL) {
            *r = (region){.payload = block, .len = min_len, .secure_heap = true,
                          .locked = hush__openssl_secure_heap_locked()};
            goto cleanup;
        }
    }
    HUSH_ENSURE(min_len <= SIZE_MAX - 3 * page, HUSH_E_LIMIT,
                "secure region of %zu bytes is too large", min_len);
    size_t len = round_to_pages(min_len, page);
    total = len + 2 * page;

    base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    HUSH_ENSURE(base != MAP_FAILED, HUSH_E_NOMEM, "could not map %zu bytes of secure memory",
                len);
    HUSH_ENSURE(mprotect(base, page, PROT_NONE) == 0 &&
                    mprotect(base + page + len, page, PROT_NONE) == 0,
                HUSH_E_NOMEM, "could not set up guard pages");
    *r = (region){.payload = base + page, .len = len};

    /* Dump exclusion and wipe-on-fork are best effort: older kernels lack
     * them, and the region is still zeroed on free. */
    if (madvise(r->payload, len, MADV_DONTDUMP) != 0)
        atomic_fetch_add(&stat_dontdump_failures, 1);
#ifdef MADV_WIPEONFORK
    if (madvise(r->payload, len, MADV_WIPEONFORK) != 0)
        atomic_fetch_add(&stat_wipeonfork_failures, 1);
#else
    atomic_fetch_add(&stat_wipeonfork_failures, 1);
#endif

    r->locked = false;
    if (!(flags & HUSH_SECMEM_NO_LOCK)) {
        if (lock_pages(r->payload, len) == 0) {
            r->locked = true;
            atomic_fetch_add(&stat_locked_bytes, len);
        } else {
            atomic_fetch_add(&stat_lock_failures, 1);
        }
    }
    atomic_fetch_add(&stat_mapped_bytes, len);
    base = MAP_FAILED; /* the region owns the mapping now */
cleanup:
    if (base != MAP_FAILED)
        munmap(base, total);
    return status;
}

static void region_unmap(region *r)
{
    if (r->payload == NULL)
        return;
    if (r->heap) {
        free(r->payload);
        *r = (region){0};
        return;
    }
    if (r->secure_heap) {
        OPENSSL_secure_clear_free(r->payload, r->len);
        *r = (region){0};
        return;
    }
    size_t page = hush__page_size();
    hush_memzero(r->payload, r->len);
    if (r->locked) {
        unlock_pages(r->payload, r->len);
        atomic_fetch_sub(&stat_locked_bytes, r->len);
    }
    atomic_fetch_sub(&stat_mapped_bytes, r->len);
    munmap(r->payload - page, r->len + 2 * page);
    r->payload = NULL;
    r->len = 0;
    r->locked = false;
}

/* ---- arena ------------------------------------------------------------ */

/* Chunks carry their own header at the start of their payload, so an
 * arena needs no ordinary heap memory at all. */
typedef struct chunk {
    struct chunk *next;
    region mem;
    size_t used; /* bytes of mem.payload in use, header included */
} chunk;

struct hush_arena {
    pthread_mutex_t lock;
    unsigned flags;
    chunk *chunks; /* newest first; the first chunk ever is last and holds this struct */
    size_t next_chunk_size;
};

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

HUSH_MUST_USE
static hush_status chunk_new(size_t payload, unsigned flags, chunk **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    region r;
    size_t header = align_up(sizeof(chunk));
    HUSH_ENSURE(payload <= SIZE_MAX - header, HUSH_E_LIMIT,
                "arena allocation of %zu bytes is too large", payload);
    HUSH_TRY(region_map(&r, header + payload, flags, err));
    chunk *c = (chunk *)r.payload;
    c->next = NULL;
    c->mem = r;
    c->used = header;
    *out = c;
cleanup:
    return status;
}

hush_status hush_arena_new(unsigned flags, hush_arena **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    chunk *first = NULL;
    HUSH_ENSURE_REF(out, "hush_arena_new: out is NULL");
    *out = NULL;
    size_t first_size = flags & HUSH__SECMEM_SMALL ? ARENA_SMALL_FIRST_CHUNK : ARENA_FIRST_CHUNK;
    HUSH_TRY(chunk_new(align_up(sizeof(hush_arena)) + first_size, flags, &first, err));
    hush_arena *a = (hush_arena *)(first->mem.payload + first->used);
    first->used += align_up(sizeof(hush_arena));
    HUSH_ENSURE(pthread_mutex_init(&a->lock, NULL) == 0, HUSH_E_INTERNAL,
                "could not initialise the arena lock");
    a->flags = flags;
    a->chunks = first;
    a->next_chunk_size = first_size * 2;
    *out = a;
    first = NULL; /* the arena owns it now */
cleanup:
    if (first != NULL) {
        region r = first->mem;
        region_unmap(&r);
    }
    return status;
}

hush_status hush_arena_alloc(hush_arena *a, size_t size, void **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    bool locked = false;
    HUSH_ENSURE(a != NULL && out != NULL, HUSH_E_ARGUMENT, "hush_arena_alloc: NULL argument");
    HUSH_ENSURE(size <= SIZE_MAX - ARENA_ALIGN, HUSH_E_LIMIT,
                "arena allocation of %zu bytes is too large", size);
    size_t need = align_up(size == 0 ? 1 : size);

    pthread_mutex_lock(&a->lock);
    locked = true;
    chunk *c = a->chunks;
    if (c->mem.len - c->used < need) {
        size_t payload = need > a->next_chunk_size ? need : a->next_chunk_size;
        chunk *fresh = NULL;
        HUSH_TRY(chunk_new(payload, a->flags, &fresh, err));
        fresh->next = a->chunks;
        a->chunks = fresh;
        c = fresh;
        if (a->next_chunk_size < ARENA_MAX_CHUNK)
            a->next_chunk_size *= 2;
    }
    /* Fresh pages are zero, and wipe zeroes what was used: no memset. */
    *out = c->mem.payload + c->used;
    c->used += need;
cleanup:
    if (locked)
        pthread_mutex_unlock(&a->lock);
    return status;
}

hush_status hush_arena_strdup(hush_arena *a, const void *data, size_t len, char **out,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    void *p = NULL;
    HUSH_ENSURE(out != NULL && (data != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_arena_strdup: NULL argument");
    HUSH_ENSURE(len != SIZE_MAX, HUSH_E_LIMIT, "string too large");
    HUSH_TRY(hush_arena_alloc(a, len + 1, &p, err));
    if (len > 0)
        memcpy(p, data, len);
    ((char *)p)[len] = '\0';
    *out = p;
cleanup:
    return status;
}

/* The offset in a chunk where handed-out memory starts. */
static size_t chunk_data_start(const chunk *c)
{
    size_t start = align_up(sizeof(chunk));
    if (c->next == NULL) /* the first chunk also holds the arena struct */
        start += align_up(sizeof(hush_arena));
    return start;
}

void hush_arena_wipe(hush_arena *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    for (chunk *c = a->chunks; c != NULL; c = c->next) {
        size_t start = chunk_data_start(c);
        hush_memzero(c->mem.payload + start, c->used - start);
        c->used = start;
    }
    pthread_mutex_unlock(&a->lock);
}

void hush_arena_free(hush_arena *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->lock);
    chunk *c = a->chunks;
    /* The arena struct lives in the last chunk: read the list before unmapping. */
    while (c != NULL) {
        chunk *next = c->next;
        region r = c->mem;
        region_unmap(&r);
        c = next;
    }
}

bool hush_arena_is_locked(const hush_arena *a)
{
    if (a == NULL)
        return false;
    for (const chunk *c = a->chunks; c != NULL; c = c->next)
        if (!c->mem.locked)
            return false;
    return true;
}

size_t hush_arena_mapped_bytes(const hush_arena *a)
{
    size_t total = 0;
    for (const chunk *c = a ? a->chunks : NULL; c != NULL; c = c->next)
        total += c->mem.len;
    return total;
}

/* ---- growable buffer -------------------------------------------------- */

struct hush_secbuf {
    region mem;
    size_t len;
    /* How far from the start the buffer may hold data: the largest length
     * ever set and the end of every room reserved (which callers write into
     * directly). Wipes reach this far, not just to len (s2n's stuffer). */
    size_t high_water;
    size_t max_size;
    unsigned flags;
};

hush_status hush_secbuf_new(size_t capacity, size_t max_size, unsigned flags, hush_secbuf **out,
                            hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *b = NULL;
    HUSH_ENSURE_REF(out, "hush_secbuf_new: out is NULL");
    *out = NULL;
    HUSH_ENSURE(max_size == 0 || capacity <= max_size, HUSH_E_LIMIT,
                "buffer of %zu bytes exceeds its limit of %zu", capacity, max_size);
    /* The struct holds only pointers and sizes, never plaintext. */
    b = calloc(1, sizeof *b);
    HUSH_ENSURE(b != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_TRY(region_map(&b->mem, capacity, flags, err));
    b->max_size = max_size;
    b->flags = flags;
    *out = b;
    b = NULL;
cleanup:
    free(b); /* a failed map left nothing in it */
    return status;
}

/* Pages are whole, but the cap is exact. */
static size_t usable_capacity(const hush_secbuf *b)
{
    return b->max_size != 0 && b->max_size < b->mem.len ? b->max_size : b->mem.len;
}

static void raise_high_water(hush_secbuf *b, size_t end)
{
    if (end > b->high_water)
        b->high_water = end;
}

hush_status hush_secbuf_reserve(hush_secbuf *b, size_t extra, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE_REF(b, "hush_secbuf_reserve: buffer is NULL");
    if (extra <= usable_capacity(b) - b->len) {
        raise_high_water(b, b->len + extra);
        goto cleanup;
    }
    HUSH_ENSURE(extra <= SIZE_MAX / 2 - b->len, HUSH_E_LIMIT, "buffer growth overflows");
    size_t need = b->len + extra;
    HUSH_ENSURE(b->max_size == 0 || need <= b->max_size, HUSH_E_LIMIT,
                "buffer would grow to %zu bytes, over its limit of %zu", need, b->max_size);
    size_t want = b->mem.len * 2 > need ? b->mem.len * 2 : need;
    if (b->max_size != 0 && want > b->max_size)
        want = b->max_size;

    region fresh;
    HUSH_TRY(region_map(&fresh, want, b->flags, err));
    memcpy(fresh.payload, b->mem.payload, b->len);
    region_unmap(&b->mem); /* zeroes the old copy before it goes */
    b->mem = fresh;
    raise_high_water(b, need);
cleanup:
    return status;
}

hush_status hush_secbuf_append(hush_secbuf *b, const void *data, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(data != NULL || len == 0, HUSH_E_ARGUMENT, "hush_secbuf_append: data is NULL");
    HUSH_TRY(hush_secbuf_reserve(b, len, err));
    if (len > 0)
        memcpy(b->mem.payload + b->len, data, len);
    b->len += len;
    raise_high_water(b, b->len);
cleanup:
    return status;
}

hush_status hush_secbuf_append_byte(hush_secbuf *b, unsigned char byte, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (b != NULL && b->len < usable_capacity(b)) {
        /* The common case: room already there, no call. */
        b->mem.payload[b->len++] = byte;
        raise_high_water(b, b->len);
        goto cleanup;
    }
    HUSH_TRY(hush_secbuf_append(b, &byte, 1, err));
cleanup:
    return status;
}

unsigned char *hush_secbuf_data(hush_secbuf *b) { return b ? b->mem.payload : NULL; }
const unsigned char *hush_secbuf_bytes(const hush_secbuf *b) { return b ? b->mem.payload : NULL; }
size_t hush_secbuf_len(const hush_secbuf *b) { return b ? b->len : 0; }
size_t hush_secbuf_capacity(const hush_secbuf *b) { return b ? usable_capacity(b) : 0; }
bool hush_secbuf_is_locked(const hush_secbuf *b) { return b != NULL && b->mem.locked; }

hush_status hush_secbuf_set_len(hush_secbuf *b, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(b != NULL && len <= usable_capacity(b), HUSH_E_ARGUMENT,
                "hush_secbuf_set_len: length past capacity");
    if (len < b->high_water) {
        /* Shrinking: what lay past the new end (written or reserved) goes now. */
        hush_memzero(b->mem.payload + len, b->high_water - len);
        b->high_water = len;
    }
    b->len = len;
cleanup:
    return status;
}

void hush_secbuf_clear(hush_secbuf *b)
{
    if (b == NULL)
        return;
    hush_memzero(b->mem.payload, b->high_water);
    b->len = 0;
    b->high_water = 0;
}

void hush_secbuf_free(hush_secbuf *b)
{
    if (b == NULL)
        return;
    region_unmap(&b->mem);
    free(b);
}

/* ---- reporting -------------------------------------------------------- */

void hush_memory_protection_info(hush_memory_protection *out)
{
    if (out == NULL)
        return;
    /* Best effort: if initialisation failed, the secure heap reads as
     * absent below, which is the truth; this call has no error to give. */
    HUSH_IGNORE(hush__init(NULL));
    out->platform = "linux";
    out->lock_failures = atomic_load(&stat_lock_failures);
    out->mlock_available = out->lock_failures == 0;
    out->dump_exclusion = atomic_load(&stat_dontdump_failures) == 0;
    out->wipe_on_fork = atomic_load(&stat_wipeonfork_failures) == 0;
    out->openssl_secure_heap = hush__openssl_secure_heap();
    out->locked_bytes = atomic_load(&stat_locked_bytes);
    out->mapped_bytes = atomic_load(&stat_mapped_bytes);
}

/* ---- small secrets ---------------------------------------------------- */

hush_status hush__secret_block_new(size_t size, hush__secret_block *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__secret_block block = {NULL, size, NULL};

    HUSH_ENSURE(size > 0 && out != NULL, HUSH_E_ARGUMENT, "secret block: no size or no output");
    if (hush__openssl_secure_heap())
        block.data = OPENSSL_secure_zalloc(size); /* NULL when the heap is full */
    if (block.data == NULL) {
        HUSH_TRY(hush_secbuf_new(size, size, HUSH_SECMEM_DEFAULT, &block.region, err));
        HUSH_TRY(hush_secbuf_reserve(block.region, size, err));
        HUSH_TRY(hush_secbuf_set_len(block.region, size, err));
        block.data = hush_secbuf_data(block.region);
    }
    *out = block;
    block.region = NULL;
cleanup:
    hush_secbuf_free(block.region);
    return status;
}

void hush__secret_block_free(hush__secret_block *block)
{
    if (block == NULL || block->data == NULL)
        return;
    if (block->region != NULL)
        hush_secbuf_free(block->region); /* zeroes before unmapping */
    else
        OPENSSL_secure_clear_free(block->data, block->size);
    block->data = NULL;
    block->region = NULL;
}
