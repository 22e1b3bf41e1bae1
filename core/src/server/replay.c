/* replay.c — the gateway's memory of opened requests (replay.h): a ring of
 * fixed-size records in arrival order, so the oldest is always the next to
 * go, and a linear-probing index over it with backward-shift deletion, so no
 * tombstones accumulate. The index hashes the digest with a per-cache random
 * salt: digests are SHA-256 outputs, but a client can grind requests, and a
 * salt it cannot see keeps it from lining entries up in one probe run. */
#include <math.h> /* isfinite, a macro: no libm */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "hushcall/replay.h"
#include "internal.h"

/* A prefix of each digest is kept: 128 bits make an accidental or forced
 * collision as hard as a second preimage of the full hash needs to be here. */
#define KEPT_BYTES 16u
#define MAX_ANSWERS_LIMIT 255u
#define NO_SLOT 0u /* index cells hold slot + 1 */

typedef struct record {
    unsigned char digest[KEPT_BYTES];
    unsigned char binding[KEPT_BYTES];
    uint32_t expires; /* whole seconds of the caller's clock, rounded up */
    uint8_t answers;
} record;

struct hush_replay_cache {
    pthread_mutex_t lock;
    record *ring;     /* max_entries records; [head, head + count) are live */
    size_t max_entries;
    size_t head;
    size_t count;
    uint32_t *index;  /* index_mask + 1 cells of slot + 1, or NO_SLOT */
    size_t index_mask;
    unsigned index_shift;
    uint64_t salt;
    unsigned max_answers;
    uint64_t evicted;
};

static size_t index_home(const hush_replay_cache *c, const unsigned char *digest)
{
    uint64_t v;
    memcpy(&v, digest, sizeof v);
    return (size_t)(((v ^ c->salt) * UINT64_C(0x9E3779B97F4A7C15)) >> c->index_shift);
}

/* The index cell that points at `digest`'s record, or the empty cell where it would go. */
static size_t index_find(const hush_replay_cache *c, const unsigned char *digest, bool *found)
{
    size_t i = index_home(c, digest);
    for (; c->index[i] != NO_SLOT; i = (i + 1) & c->index_mask) {
        if (memcmp(c->ring[c->index[i] - 1].digest, digest, KEPT_BYTES) == 0) {
            *found = true;
            return i;
        }
    }
    *found = false;
    return i;
}

/* Empty cell `hole`, moving later members of its probe run back into it
 * (Knuth's algorithm R), so every lookup still finds what it probes for. */
static void index_remove(hush_replay_cache *c, size_t hole)
{
    size_t j = hole;
    for (;;) {
        j = (j + 1) & c->index_mask;
        if (c->index[j] == NO_SLOT)
            break;
        size_t home = index_home(c, c->ring[c->index[j] - 1].digest);
        /* Cell j may move to the hole only if its home is not cyclically in (hole, j]. */
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            c->index[hole] = c->index[j];
            hole = j;
        }
    }
    c->index[hole] = NO_SLOT;
}

/* Forget the oldest record; counted as evicted when it had not yet expired. */
static void drop_oldest(hush_replay_cache *c, double now)
{
    record *oldest = &c->ring[c->head];
    bool found;
    size_t cell = index_find(c, oldest->digest, &found);
    if (found)
        index_remove(c, cell);
    if ((double)oldest->expires > now)
        c->evicted++;
    memset(oldest, 0, sizeof *oldest);
    c->head = (c->head + 1) % c->max_entries;
    c->count--;
}

static void drop_expired(hush_replay_cache *c, double now)
{
    while (c->count > 0 && (double)c->ring[c->head].expires <= now)
        drop_oldest(c, now);
}

static void remember(hush_replay_cache *c, size_t cell, const unsigned char *digest,
                     const unsigned char *binding, uint32_t expires, double now)
{
    if (c->count == c->max_entries) {
        drop_oldest(c, now);
        bool found;
        cell = index_find(c, digest, &found); /* the removal may have moved the run */
    }
    size_t slot = (c->head + c->count) % c->max_entries;
    record *r = &c->ring[slot];
    memcpy(r->digest, digest, KEPT_BYTES);
    memcpy(r->binding, binding, KEPT_BYTES);
    r->expires = expires;
    r->answers = 1;
    c->index[cell] = (uint32_t)slot + 1;
    c->count++;
}

static size_t index_cells_for(size_t max_entries, unsigned *bits)
{
    size_t cells = 8;
    *bits = 3;
    while (cells < 2 * max_entries) { /* load factor at most 1/2 */
        cells <<= 1;
        (*bits)++;
    }
    return cells;
}

hush_status hush_replay_cache_new(size_t max_entries, unsigned max_answers,
                                  hush_replay_cache **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_replay_cache *c = NULL;
    unsigned bits;
    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_replay_cache_new: NULL argument");
    *out = NULL;
    HUSH_ENSURE(max_entries >= 1 && max_entries <= HUSH_REPLAY_MAX_ENTRIES_LIMIT,
                HUSH_E_ARGUMENT, "max_entries must be between 1 and %u",
                HUSH_REPLAY_MAX_ENTRIES_LIMIT);
    HUSH_ENSURE(max_answers >= 1 && max_answers <= MAX_ANSWERS_LIMIT, HUSH_E_ARGUMENT,
                "max_answers must be between 1 and %u", MAX_ANSWERS_LIMIT);
    HUSH_ENSURE((c = calloc(1, sizeof *c)) != NULL, HUSH_E_NOMEM, "out of memory");
    size_t cells = index_cells_for(max_entries, &bits);
    c->max_entries = max_entries;
    c->max_answers = max_answers;
    c->index_mask = cells - 1;
    c->index_shift = 64 - bits;
    /* calloc of this size maps fresh zero pages: memory is backed as it is used. */
    c->ring = calloc(max_entries, sizeof *c->ring);
    c->index = calloc(cells, sizeof *c->index);
    HUSH_ENSURE(c->ring != NULL && c->index != NULL, HUSH_E_NOMEM,
                "out of memory for a replay cache of %zu entries", max_entries);
    HUSH_OSSL(RAND_bytes((unsigned char *)&c->salt, sizeof c->salt) == 1, "random index salt");
    HUSH_ENSURE(pthread_mutex_init(&c->lock, NULL) == 0, HUSH_E_INTERNAL,
                "cannot initialise the replay cache's lock");
    *out = c;
    c = NULL;
cleanup:
    if (c != NULL) {
        free(c->ring);
        free(c->index);
        free(c);
    }
    return status;
}

void hush_replay_cache_free(hush_replay_cache *cache)
{
    if (cache == NULL)
        return;
    pthread_mutex_destroy(&cache->lock);
    free(cache->ring);
    free(cache->index);
    free(cache);
}

static hush_replay_verdict check_locked(hush_replay_cache *c, const unsigned char *digest,
                                        const unsigned char *binding, double now,
                                        uint32_t expires, unsigned *answers)
{
    bool found;
    drop_expired(c, now);
    size_t cell = index_find(c, digest, &found);
    if (!found) {
        remember(c, cell, digest, binding, expires, now);
        *answers = 1;
        return HUSH_REPLAY_NEW;
    }
    record *r = &c->ring[c->index[cell] - 1];
    if ((double)r->expires <= now) { /* outlived its window: as good as new */
        memcpy(r->binding, binding, KEPT_BYTES);
        r->expires = expires;
        r->answers = 1;
        *answers = 1;
        return HUSH_REPLAY_NEW;
    }
    *answers = r->answers;
    if (memcmp(r->binding, binding, KEPT_BYTES) != 0)
        return HUSH_REPLAY_REPLAYED;
    if (r->answers >= c->max_answers)
        return HUSH_REPLAY_EXHAUSTED;
    *answers = ++r->answers;
    return HUSH_REPLAY_RETRY;
}

hush_status hush_replay_cache_check_and_remember(hush_replay_cache *cache,
                                                 const unsigned char digest[HUSH_REPLAY_DIGEST_BYTES],
                                                 const unsigned char binding[HUSH_REPLAY_DIGEST_BYTES],
                                                 double now, double expires,
                                                 hush_replay_verdict *verdict, unsigned *answers,
                                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned seen = 0;
    HUSH_ENSURE(cache != NULL && digest != NULL && binding != NULL && verdict != NULL,
                HUSH_E_ARGUMENT, "hush_replay_cache_check_and_remember: NULL argument");
    HUSH_ENSURE(isfinite(now) && isfinite(expires) && now >= 0 && expires > now &&
                    expires < 4294967296.0,
                HUSH_E_ARGUMENT, "times must satisfy 0 <= now < expires < 2^32 seconds");
    uint32_t whole = (uint32_t)expires; /* rounded up: kept at least until `expires` */
    if ((double)whole < expires)
        whole++;
    pthread_mutex_lock(&cache->lock);
    *verdict = check_locked(cache, digest, binding, now, whole, &seen);
    pthread_mutex_unlock(&cache->lock);
    if (answers != NULL)
        *answers = seen;
cleanup:
    return status;
}

void hush_replay_cache_stats(hush_replay_cache *cache, hush_replay_stats *out)
{
    memset(out, 0, sizeof *out);
    if (cache == NULL)
        return;
    pthread_mutex_lock(&cache->lock);
    out->entries = cache->count;
    out->max_entries = cache->max_entries;
    out->evicted = cache->evicted;
    out->bytes_reserved = cache->max_entries * sizeof *cache->ring +
                          (cache->index_mask + 1) * sizeof *cache->index;
    pthread_mutex_unlock(&cache->lock);
}
