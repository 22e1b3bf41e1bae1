/* hushcall/replay.h — a bounded memory of the requests a gateway has opened,
 * so a captured request body is not answered a second time to someone else.
 *
 * A v1 request names the key its answer is sealed to in a clear header, so
 * anyone who saw one body (a TLS-terminating proxy, a body log) could send it
 * again under their own key and read the answer. The gateway therefore
 * remembers each opened request by a digest unique to it (SHA-256 of its
 * wrapped message key, hush_server_exchange_replay_key) together with a
 * digest of what it came with (the client key and payload id): the same
 * request again with the same binding is the client's own retry and is
 * allowed a few times; with another binding it is a replay.
 *
 * Entries are fixed-size records (16-byte digest prefixes, an expiry and a
 * count) in one ring in arrival order, indexed by an open-addressing table:
 * about 48 bytes an entry at capacity. When the ring is full the oldest entry
 * is forgotten first, whatever its expiry. Nothing in it is secret, so it
 * lives in ordinary memory. One cache may be used from any number of threads. */
#ifndef HUSHCALL_REPLAY_H
#define HUSHCALL_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_REPLAY_DIGEST_BYTES 32u
#define HUSH_REPLAY_DEFAULT_MAX_ENTRIES 1000000u
#define HUSH_REPLAY_DEFAULT_MAX_ANSWERS 3u
#define HUSH_REPLAY_MAX_ENTRIES_LIMIT (1u << 30)

typedef struct hush_replay_cache hush_replay_cache;

typedef enum hush_replay_verdict {
    HUSH_REPLAY_NEW = 0,  /* first sight: remembered until its expiry */
    HUSH_REPLAY_RETRY,    /* seen with the same binding, and may be answered again */
    HUSH_REPLAY_REPLAYED, /* seen with another binding: never answer it */
    HUSH_REPLAY_EXHAUSTED /* the same binding, but answered max_answers times already */
} hush_replay_verdict;

/* A cache of at most `max_entries` requests (1 to HUSH_REPLAY_MAX_ENTRIES_LIMIT),
 * each answered at most `max_answers` times (1 to 255). HUSH_E_ARGUMENT
 * outside those ranges. Memory is reserved for max_entries at once but the
 * kernel backs it only as entries arrive. */
HUSH_MUST_USE
hush_status hush_replay_cache_new(size_t max_entries, unsigned max_answers,
                                  hush_replay_cache **out, hush_error *err);
void hush_replay_cache_free(hush_replay_cache *cache); /* accepts NULL */

/* Look `digest` up and remember it. `binding` is a digest of what the
 * request came with; `now` and `expires` are the caller's clock in seconds
 * (an entry whose expiry is not after `now` is forgotten; expiries are
 * kept in whole seconds, rounded up, so Unix time fits). On NEW and RETRY
 * the answer count is raised; `*answers` (may be NULL) receives it, or the
 * count so far for the refusals. Every argument must be non-NULL but
 * `answers`; HUSH_E_ARGUMENT otherwise, and unless 0 <= now < expires < 2^32. */
HUSH_MUST_USE
hush_status hush_replay_cache_check_and_remember(hush_replay_cache *cache,
                                                 const unsigned char digest[HUSH_REPLAY_DIGEST_BYTES],
                                                 const unsigned char binding[HUSH_REPLAY_DIGEST_BYTES],
                                                 double now, double expires,
                                                 hush_replay_verdict *verdict, unsigned *answers,
                                                 hush_error *err);

typedef struct hush_replay_stats {
    size_t entries;        /* remembered now (expired ones not yet dropped included) */
    size_t max_entries;
    uint64_t evicted;      /* forgotten before their expiry because the cache was full */
    size_t bytes_reserved; /* the ring and the index at capacity */
} hush_replay_stats;

/* A snapshot, taken under the cache's lock. Accepts NULL `cache` (all
 * zero); `out` must not be NULL. */
void hush_replay_cache_stats(hush_replay_cache *cache, hush_replay_stats *out);

#ifdef __cplusplus
}
#endif
#endif
