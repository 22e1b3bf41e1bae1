/* test_replay.c — the gateway's replay cache (replay.h): verdicts, answer
 * counts, expiry, eviction of the oldest when full, argument checks, a
 * long random run compared step by step with a plain list that models the
 * same rules, and many threads on one cache. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define NOW 1000000.0
#define WINDOW 60.0

static void digest_of(unsigned n, unsigned char out[HUSH_REPLAY_DIGEST_BYTES])
{
    memset(out, 0, HUSH_REPLAY_DIGEST_BYTES);
    /* Spread over the bytes the cache keeps and hashes, as SHA-256 would. */
    uint64_t x = (uint64_t)n * UINT64_C(0x9E3779B97F4A7C15) + 1;
    for (unsigned i = 0; i < HUSH_REPLAY_DIGEST_BYTES; i++) {
        x ^= x >> 29;
        x *= UINT64_C(0xBF58476D1CE4E5B9);
        out[i] = (unsigned char)(x >> 56);
    }
}

static hush_replay_verdict check(hush_replay_cache *c, unsigned digest, unsigned binding,
                                 double now, unsigned *answers)
{
    unsigned char d[HUSH_REPLAY_DIGEST_BYTES], b[HUSH_REPLAY_DIGEST_BYTES];
    hush_replay_verdict verdict = (hush_replay_verdict)-1;
    hush_error err;
    digest_of(digest, d);
    digest_of(binding + 0x10000000u, b);
    CHECK_OK(hush_replay_cache_check_and_remember(c, d, b, now, now + WINDOW, &verdict, answers,
                                                  &err),
             &err);
    return verdict;
}

static void test_retry_then_exhausted(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    unsigned answers = 0;
    CHECK_OK(hush_replay_cache_new(100, 3, &c, &err), &err);
    CHECK_EQ(check(c, 1, 7, NOW, &answers), HUSH_REPLAY_NEW);
    CHECK_EQ(answers, 1);
    CHECK_EQ(check(c, 1, 7, NOW + 1, &answers), HUSH_REPLAY_RETRY);
    CHECK_EQ(answers, 2);
    CHECK_EQ(check(c, 1, 7, NOW + 2, &answers), HUSH_REPLAY_RETRY);
    CHECK_EQ(answers, 3);
    CHECK_EQ(check(c, 1, 7, NOW + 3, &answers), HUSH_REPLAY_EXHAUSTED);
    CHECK_EQ(answers, 3);
    CHECK_EQ(check(c, 1, 7, NOW + 4, &answers), HUSH_REPLAY_EXHAUSTED);
    /* Another request is untouched by the first's count. */
    CHECK_EQ(check(c, 2, 7, NOW + 4, &answers), HUSH_REPLAY_NEW);
    hush_replay_cache_free(c);
}

static void test_other_binding_is_a_replay(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    unsigned answers = 0;
    CHECK_OK(hush_replay_cache_new(100, 3, &c, &err), &err);
    CHECK_EQ(check(c, 5, 1, NOW, &answers), HUSH_REPLAY_NEW);
    CHECK_EQ(check(c, 5, 2, NOW, &answers), HUSH_REPLAY_REPLAYED);
    CHECK_EQ(answers, 1);
    /* A refused replay neither rebinds the entry nor spends the owner's retries. */
    CHECK_EQ(check(c, 5, 2, NOW, &answers), HUSH_REPLAY_REPLAYED);
    CHECK_EQ(check(c, 5, 1, NOW, &answers), HUSH_REPLAY_RETRY);
    CHECK_EQ(answers, 2);
    hush_replay_cache_free(c);
}

static void test_expiry(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    hush_replay_stats stats;
    CHECK_OK(hush_replay_cache_new(100, 3, &c, &err), &err);
    CHECK_EQ(check(c, 9, 1, NOW, NULL), HUSH_REPLAY_NEW);
    CHECK_EQ(check(c, 9, 2, NOW + WINDOW - 1, NULL), HUSH_REPLAY_REPLAYED);
    /* At its expiry an entry is forgotten: the same digest is new again. */
    CHECK_EQ(check(c, 9, 2, NOW + WINDOW, NULL), HUSH_REPLAY_NEW);
    hush_replay_cache_stats(c, &stats);
    CHECK_EQ(stats.entries, 1);
    CHECK_EQ(stats.evicted, 0);
    hush_replay_cache_free(c);
}

static void test_full_cache_forgets_oldest_first(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    hush_replay_stats stats;
    CHECK_OK(hush_replay_cache_new(4, 3, &c, &err), &err);
    for (unsigned d = 1; d <= 4; d++)
        CHECK_EQ(check(c, d, 1, NOW, NULL), HUSH_REPLAY_NEW);
    CHECK_EQ(check(c, 5, 1, NOW, NULL), HUSH_REPLAY_NEW); /* pushes 1 out */
    hush_replay_cache_stats(c, &stats);
    CHECK_EQ(stats.entries, 4);
    CHECK_EQ(stats.max_entries, 4);
    CHECK_EQ(stats.evicted, 1);
    CHECK(stats.bytes_reserved >= 4 * 37);
    for (unsigned d = 2; d <= 5; d++)
        CHECK_EQ(check(c, d, 2, NOW, NULL), HUSH_REPLAY_REPLAYED);
    CHECK_EQ(check(c, 1, 2, NOW, NULL), HUSH_REPLAY_NEW); /* forgotten; pushes 2 out */
    CHECK_EQ(check(c, 2, 2, NOW, NULL), HUSH_REPLAY_NEW);
    hush_replay_cache_stats(c, &stats);
    CHECK_EQ(stats.evicted, 3);
    hush_replay_cache_free(c);
}

static void test_arguments(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    unsigned char d[HUSH_REPLAY_DIGEST_BYTES] = {1}, b[HUSH_REPLAY_DIGEST_BYTES] = {2};
    hush_replay_verdict v;
    CHECK_STATUS(hush_replay_cache_new(0, 3, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_new(10, 0, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_new(10, 256, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_new((size_t)HUSH_REPLAY_MAX_ENTRIES_LIMIT + 1, 3, &c, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_new(10, 3, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_replay_cache_new(10, 3, &c, &err), &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(NULL, d, b, NOW, NOW + 1, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, NULL, b, NOW, NOW + 1, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, d, NULL, NOW, NOW + 1, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, d, b, NOW, NOW + 1, NULL, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, d, b, NOW, NOW, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, d, b, -1.0, NOW, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, d, b, NOW, 5e9, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_replay_cache_check_and_remember(c, d, b, NOW, 0.0 / 0.0, &v, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    hush_replay_stats stats;
    hush_replay_cache_stats(c, &stats);
    CHECK_EQ(stats.entries, 0); /* nothing refused was remembered */
    hush_replay_cache_stats(NULL, &stats);
    CHECK_EQ(stats.max_entries, 0);
    hush_replay_cache_free(c);
    hush_replay_cache_free(NULL);
}

/* ---- the same rules, the slow and obvious way --------------------------- */

#define MODEL_CAP 64u
#define MAX_ANSWERS 3u

typedef struct model_entry {
    unsigned digest, binding, answers;
    double expires;
} model_entry;

typedef struct model {
    model_entry e[MODEL_CAP]; /* e[0] is the oldest arrival */
    unsigned n;
    unsigned evicted;
} model;

static void model_drop_front(model *m, double now)
{
    if (m->e[0].expires > now)
        m->evicted++;
    memmove(&m->e[0], &m->e[1], (m->n - 1) * sizeof m->e[0]);
    m->n--;
}

static hush_replay_verdict model_check(model *m, unsigned digest, unsigned binding, double now,
                                       double expires)
{
    while (m->n > 0 && m->e[0].expires <= now)
        model_drop_front(m, now);
    for (unsigned i = 0; i < m->n; i++) {
        model_entry *e = &m->e[i];
        if (e->digest != digest)
            continue;
        if (e->expires <= now) {
            *e = (model_entry){digest, binding, 1, expires};
            return HUSH_REPLAY_NEW;
        }
        if (e->binding != binding)
            return HUSH_REPLAY_REPLAYED;
        if (e->answers >= MAX_ANSWERS)
            return HUSH_REPLAY_EXHAUSTED;
        e->answers++;
        return HUSH_REPLAY_RETRY;
    }
    if (m->n == MODEL_CAP)
        model_drop_front(m, now);
    m->e[m->n++] = (model_entry){digest, binding, 1, expires};
    return HUSH_REPLAY_NEW;
}

/* 200,000 random steps over a small pool of digests, with windows of
 * different lengths and a clock that moves in uneven steps: every verdict
 * and count must match the model, which exercises the index's removals
 * (a full ring, expiries out of order) far more than traffic would. */
static void test_matches_a_model(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    model m = {0};
    double now = 100.0;
    unsigned mismatches = 0;
    uint64_t rng = 42;
    CHECK_OK(hush_replay_cache_new(MODEL_CAP, MAX_ANSWERS, &c, &err), &err);
    for (unsigned step = 0; step < 200000 && c != NULL; step++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        unsigned r = (unsigned)(rng >> 33);
        unsigned digest = r % 160, binding = (r >> 8) % 2;
        if ((r >> 20) % 16 == 0)
            now += 1;
        double expires = now + 1 + (r >> 12) % 30; /* whole seconds, as now is */
        unsigned char d[HUSH_REPLAY_DIGEST_BYTES], b[HUSH_REPLAY_DIGEST_BYTES];
        digest_of(digest, d);
        digest_of(binding + 0x10000000u, b);
        hush_replay_verdict got;
        if (hush_replay_cache_check_and_remember(c, d, b, now, expires, &got, NULL, &err) !=
                HUSH_OK ||
            got != model_check(&m, digest, binding, now, expires))
            mismatches++;
    }
    CHECK_EQ(mismatches, 0);
    hush_replay_stats stats;
    hush_replay_cache_stats(c, &stats);
    CHECK_EQ(stats.entries, m.n);
    CHECK_EQ(stats.evicted, m.evicted);
    CHECK(m.evicted > 0); /* the run did fill the ring */
    hush_replay_cache_free(c);
}

/* ---- threads -------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 5000u

typedef struct worker {
    hush_replay_cache *cache;
    unsigned base;
    unsigned wrong;
} worker;

static void *worker_run(void *arg)
{
    worker *w = arg;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        unsigned answers;
        if (check(w->cache, w->base + i, 1, NOW, &answers) != HUSH_REPLAY_NEW ||
            check(w->cache, w->base + i, 1, NOW, &answers) != HUSH_REPLAY_RETRY ||
            check(w->cache, w->base + i, 2, NOW, &answers) != HUSH_REPLAY_REPLAYED)
            w->wrong++;
    }
    return NULL;
}

static void test_threads_share_one_cache(void)
{
    hush_replay_cache *c = NULL;
    hush_error err;
    pthread_t tid[THREADS];
    worker w[THREADS];
    CHECK_OK(hush_replay_cache_new(THREADS * PER_THREAD, 3, &c, &err), &err);
    for (unsigned t = 0; t < THREADS; t++) {
        w[t] = (worker){c, t * PER_THREAD, 0};
        CHECK_EQ(pthread_create(&tid[t], NULL, worker_run, &w[t]), 0);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(tid[t], NULL);
        CHECK_EQ(w[t].wrong, 0);
    }
    hush_replay_stats stats;
    hush_replay_cache_stats(c, &stats);
    CHECK_EQ(stats.entries, THREADS * PER_THREAD);
    CHECK_EQ(stats.evicted, 0);
    hush_replay_cache_free(c);
}

int main(void)
{
    RUN_TEST(test_retry_then_exhausted);
    RUN_TEST(test_other_binding_is_a_replay);
    RUN_TEST(test_expiry);
    RUN_TEST(test_full_cache_forgets_oldest_first);
    RUN_TEST(test_arguments);
    RUN_TEST(test_matches_a_model);
    RUN_TEST(test_threads_share_one_cache);
    return check_report();
}
