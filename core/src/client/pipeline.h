/* pipeline.h — what the client (client.c), the engine (engine.c with
 * call.c, retry.c and transfer.c) and the response builder (response.c)
 * share about a request in flight.
 *
 * Lock order: client lock, then call lock, then engine lock; never the
 * reverse. A cancel posts to the engine while holding the call's lock, so
 * the call cannot finish (and its engine cannot be freed) under it. */
#ifndef HUSHCALL_PIPELINE_H
#define HUSHCALL_PIPELINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "hushcall/attest.h"
#include "hushcall/client.h"
#include "hushcall/engine.h"
#include "hushcall/envelope_v2.h"
#include "hushcall/hpke.h"
#include "hushcall/keys.h"
#include "hushcall/secmem.h"
#include "stream.h"
#include "transfer.h"

#define HUSH_PAYLOAD_ID_LEN 36

/* The server key of one base URL, fetched once however many calls race. */
typedef struct server_key {
    struct server_key *next;
    char *base_url;
    hush_pubkey *key;            /* NULL until fetched */
    bool fetching;               /* a call is fetching it now */
    uint64_t fetch_id;           /* increases with every fetch started */
    uint64_t failed_fetch_id;    /* the fetch whose failure `failure` holds */
    hush_error failure;
    hush_call *waiters;          /* linked through waiter_next */
    /* v2: the configs of the last fetch, the one calls use, and what was seen */
    hush_v2_keyconfig *v2;       /* NULL until fetched (or after a 422) */
    size_t v2_count, v2_pick, v2_cipher;
    bool v2_named;               /* from the hushcall list: requests name their config */
    bool v2_absent;              /* "auto" found no v2 here and uses v1 */
    bool saw_pq;                 /* some fetch offered X-Wing: dropping it is a downgrade */
    bool v2_attested;            /* `v2` came from a verified key-config attestation */
    uint64_t v2_generation;      /* increases with every config list stored */
} server_key;

/* The protocols a client speaks (hush_client_options.protocol). */
typedef enum hush__protocol { PROTOCOL_AUTO, PROTOCOL_V1, PROTOCOL_V2 } hush__protocol;

/* What a call fetches: v1's key, v2's config list, EHBP's bare config, or
 * the config list inside a quote bound to the call's nonce (docs/attestation.md). */
typedef enum hush__fetch_kind {
    FETCH_V1_KEY,
    FETCH_V2_LIST,
    FETCH_V2_BARE,
    FETCH_V2_ATTESTED
} hush__fetch_kind;

/* What a fetch found, handed to the client (taken over). */
typedef struct hush__fetched {
    hush_pubkey *v1_key;
    hush_v2_keyconfig *v2;
    size_t v2_count;
    bool v2_named;
    bool v2_absent; /* the v1 key, fetched because the server has no v2 configs */
    bool attested;  /* the v2 configs came with a quote that verified */
} hush__fetched;

/* ---- the engine's interface: what a call hands it ----------------------
 *
 * The dependency runs one way: client.c knows the engine, the engine (I/O
 * loop, workers, curl) knows nothing of the client's options, keys or
 * breaker. A client fills one transfer plan (its endpoint options, retry
 * policy, limits and the hooks below) and points each call at it; the
 * engine reads the plan and the call, and reaches the client only through
 * the hooks, function pointers rather than symbols, so the engine links
 * and reasons without client.c. The hooks are exactly the moments the
 * client must see: keys wanted, a key fetch over, a call forgotten, an
 * outcome for the breaker, and the reference that keeps the plan alive. */
typedef struct hush__call_hooks {
    /* Get a call the keys it needs before sealing. HUSH_OK and neither
     * flag: call->v2 and its config, or (v1) call->client_key, key_header
     * and server_key are set. *wait:
     * the call is linked as a waiter and will be resumed. *fetch: this call
     * must fetch the server key. Anything else: a failure. */
    hush_status (*keys_for)(hush_client *client, hush_call *call, bool *wait, bool *fetch,
                            hush_error *err);
    /* The fetch this call made has ended: store what it found (taken
     * over, NULL: nothing) or the failure, resume every waiter. Neither:
     * the fetcher gave up. Not HUSH_OK when what it found is refused (v2
     * configs under require_pq or the pin): every waiter fails so too. The
     * call then asks keys_for again. */
    hush_status (*fetch_done)(hush_client *client, hush_call *call, hush__fetched *got,
                              const hush_error *failure, hush_error *err);
    /* The server answered 422 key-config to this call's v2 config: forget
     * the configs it used, so that the call's next keys_for fetches anew. */
    void (*v2_stale)(hush_client *client, hush_call *call);
    /* Unlink a finished call from whatever waiter list holds it. */
    void (*forget)(hush_client *client, hush_call *call);
    /* How the call ended, for the circuit breaker. */
    void (*record)(hush_client *client, hush_status outcome, int http_status, bool is_probe);
    /* References that keep the client (and so the plan and the curl share)
     * alive while a call or an easy handle uses them. */
    hush_client *(*retain)(hush_client *client);
    void (*release)(hush_client *client);
} hush__call_hooks;

/* The retry policy of retry.c. */
typedef struct hush__retry_policy {
    unsigned max_retries;
    long retry_base_ms, retry_max_ms;
} hush__retry_policy;

/* Everything a client's calls share, fixed when the client is made. */
typedef struct hush__transfer_plan {
    hush__curl_endpoint endpoint;
    CURLSH *share;                     /* DNS and TLS sessions */
    hush__retry_policy retry;
    size_t max_response_bytes;
    unsigned secmem_flags;
    bool ask_attestation;              /* send X-Attestation: required */
    const char *server_key_fingerprint; /* the pin of the envelope key, or NULL */
    hush__protocol protocol;
    bool require_pq;
    const char *v2_key_fingerprint;     /* the pin of the v2 key, or NULL */
    const hush_attest_policy *attest_policy;
    const hush__call_hooks *hooks;
} hush__transfer_plan;

typedef enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN } breaker_state;

struct hush_client {
    atomic_uint refs;         /* calls, the key generator, and the caller's handles (one) */
    atomic_uint handles;      /* the caller's: hush_client_new, hush_client_ref */
    hush_client_options opts; /* strings point into owned copies below */
    char *owned[16];          /* the copied option strings */
    size_t owned_count;

    pthread_mutex_t lock;     /* guards everything below */
    pthread_cond_t key_ready; /* for hush_client_public_pem */
    hush_keypair *key;
    char *key_pem;            /* public PEM */
    char *key_header;         /* "X-Public-Key: <percent-encoded PEM>" */
    bool key_pending;         /* generation still running */
    pthread_t key_thread;     /* the generator, joined or detached by hush_client_free */
    bool key_thread_started;
    atomic_bool abandon_key;  /* the generator stops early: nothing will need the key */
    hush_status key_status;   /* its failure, when it failed */
    hush_error key_error;
    hush_call *key_waiters;

    server_key *server_keys;
    hush_attest_policy *attest_policy; /* NULL without attestation_policy */

    breaker_state breaker;
    unsigned failures;        /* consecutive */
    struct timespec open_until;
    bool probe_in_flight;

    hush_engine *sync_engine; /* started by the first hush_client_complete */
    hush__transfer_plan plan; /* what its calls hand the engine */

    /* DNS results and TLS sessions shared by every engine the client's calls
     * run on (connections stay per engine: libcurl does not share those
     * across threads). One lock per kind of data, as libcurl asks. */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
};

typedef enum call_stage {
    STAGE_QUEUED,   /* submitted, not yet seen by the I/O thread */
    STAGE_KEYS,     /* waiting for the client key or a server key */
    STAGE_FETCHING, /* this call is fetching the server key */
    STAGE_SEALING,  /* on a worker */
    STAGE_SENDING,  /* on the wire */
    STAGE_BACKOFF,  /* waiting to retry */
    STAGE_OPENING,  /* on a worker */
    STAGE_DONE
} call_stage;

struct hush_call {
    atomic_uint refs;
    hush_engine *engine;
    hush_client *client; /* a reference; the engine only hands it back to the hooks */
    const hush__transfer_plan *plan; /* the client's */
    void *user_data;
    bool announce;       /* submitted through hush_engine_submit */
    char payload_id[HUSH_PAYLOAD_ID_LEN + 1];
    char *api_key, *tier, *base_url; /* this call's effective settings */
    bool is_probe;       /* the circuit breaker's half-open probe */
    bool attestation_required; /* an answer whose quote fails is withheld */
    char *path;          /* the endpoint ("/v1/..."); NULL: chat completions */
    bool plain_get;      /* a bodyless GET, sent and answered in plaintext */
    bool is_stream;      /* answered as an event stream (hush_call_next_chunk) */

    /* Touched only by the I/O thread (and by workers while they own the call). */
    call_stage stage;
    hush_secbuf *request; /* plaintext until sealed */
    hush_secbuf *package; /* sealed body, reused by retries */
    hush_pubkey *server_key;
    const hush_keypair *client_key; /* the client's, set with key_header by keys_for */
    const char *key_header;   /* "X-Public-Key: ..." */
    server_key *fetch_entry;  /* the entry this call fetches or waits on */
    uint64_t waited_fetch_id; /* the fetch it waited for */
    hush_call *waiter_next;   /* guarded by the client's lock */
    hush_call *live_prev, *live_next;
    hush_call *done_next;     /* in the engine's completed queue (engine lock) */
    void *transfer;           /* the curl easy handle while sending */
    unsigned attempts, fetch_attempts;
    struct timespec wake_at;  /* BACKOFF */
    bool backoff_fetch;       /* the retry is of the key fetch */
    hush__fetch_kind fetch_kind;

    /* v2: the config this call seals to (keys_for sets it), its exchange */
    bool v2;
    hush_v2_keyconfig v2_config; /* its pubkey a reference of the call's */
    size_t v2_cipher;
    bool v2_named;
    uint64_t v2_generation;
    bool v2_refetched;           /* a 422 made it fetch once already */
    bool v2_fell_back;           /* this fetch reached v1's key through two 404s */
    bool attest_missing;         /* "auto": no attestation (404); is there v2 at all? */
    bool v2_attested;            /* the config it seals to was attested */
    unsigned char attest_nonce[HUSH_ATTEST_NONCE_BYTES]; /* of its attested fetch */
    char *answer_attestation;    /* the v2 answer's Hushcall-Attestation header, or NULL */
    char v2_fingerprint[HUSH_FINGERPRINT_LEN];
    hush_v2_exchange *v2_exchange;
    unsigned char v2_nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    hush__stream *stream;     /* a streamed call's answer, opened as it arrives */

    /* The outcome, guarded by `lock`. */
    pthread_mutex_t lock;
    pthread_cond_t finished;
    bool done;
    atomic_bool user_released; /* read by drain, which must not take this lock */
    hush_status status;
    hush_error error;
    char *error_details;
    size_t error_details_len;
    hush_json_doc *response;
    hush__chunk_queue chunks;  /* a stream's chunks not yet taken */
    bool in_completed;         /* queued for drain (guarded by the engine's lock) */
};

/* ---- call.c ------------------------------------------------------------- */

/* A new call (one reference: the caller's) bound to `client`'s plan, with a
 * fresh payload id; the client's settings are the caller's to fill. */
HUSH_MUST_USE
hush_status hush__call_new(hush_client *client, const hush__transfer_plan *plan, void *user_data,
                           bool announce, hush_call **out, hush_error *err);
hush_call *hush__call_retain(hush_call *call);
void hush__call_release(hush_call *call);

/* ---- engine.c ----------------------------------------------------------- */

/* Hand a call to the engine with its plaintext request (taken over, even on
 * failure). HUSH_E_CANCELLED when the engine is stopping or out of memory. */
HUSH_MUST_USE
hush_status hush__engine_start(hush_engine *engine, hush_call *call, hush_secbuf *request,
                               hush_error *err);
/* Re-examine a waiting call (a key it waited for is ready or failed). */
void hush__call_resume(hush_call *call);
/* Ask the engine to end the call cancelled (call lock held, call not done). */
void hush__call_post_cancel(hush_call *call);

/* ---- retry.c ------------------------------------------------------------ */

hush_status hush__status_for_http(long code);
hush_status hush__status_for_curl(CURLcode rc, bool too_large);
/* Retry-After in milliseconds (delta seconds or an HTTP date), or -1. */
long hush__retry_after_ms(CURL *easy);
/* The wait before retry number `done` (attempts made so far); false when
 * none is left or the server asks for a longer wait than retry_max_ms
 * allows (retrying early would be rude). */
bool hush__retry_delay(const hush__retry_policy *policy, unsigned done, long server_wait_ms,
                       long *wait_ms);

/* ---- response.c -------------------------------------------------------- */

/* How an answer's TPM quote is judged: under `policy` (may be NULL), and
 * whether an answer whose quote does not verify may be released at all. */
typedef struct hush__attest_rule {
    const hush_attest_policy *policy;
    bool required;
} hush__attest_rule;

/* Open a sealed answer into a document with `_metadata` merged in as the
 * nomyo client does it: the server's members kept, then payload_id,
 * processed_at (null when absent), is_encrypted and encryption_algorithm,
 * and ours: attestation, the verdict on the server's tpm_attestation. A
 * required attestation that does not verify is HUSH_E_ATTESTATION, and the
 * answer is wiped unread. One arena holds everything; the raw plaintext in
 * it is zeroed once parsed. */
HUSH_MUST_USE
hush_status hush__response_open(const hush_keypair *key, const void *package, size_t len,
                                size_t max_response_bytes, const char *payload_id,
                                const hush__attest_rule *rule, unsigned secmem_flags,
                                hush_json_doc **out, hush_error *err);

/* What a v2 answer is opened with and reported by (_metadata). */
typedef struct hush__v2_answer {
    const hush_v2_exchange *exchange;
    const unsigned char *nonce;
    const char *fingerprint;
    long http_status;
    const char *attestation;      /* its Hushcall-Attestation header, or NULL */
    hush__attest_rule rule;       /* how that quote is judged */
    bool key_config_verified;     /* the request was sealed to an attested config */
} hush__v2_answer;

/* Judge a v2 answer's quote, bound to its exchange (enc and response
 * nonce): HUSH_E_ATTESTATION when it is required and does not verify.
 * For streams, at the head, before any chunk is opened. */
HUSH_MUST_USE
hush_status hush__v2_answer_attest(const hush__v2_answer *answer, unsigned secmem_flags,
                                   hush_error *err);

/* Open a v2 answer (EHBP frames) into a document whose `_metadata` is the
 * server's, with ours added: protocol "v2", suite, key_id,
 * server_key_fingerprint, status, is_encrypted, and attestation (the
 * verdict on its quote, as v1's, with key_config_verified). A required
 * quote that does not verify is HUSH_E_ATTESTATION before any frame is
 * opened. The body is fed to the opener whole, once received, into a
 * locked buffer; nothing of it is released unless every frame
 * authenticates. */
HUSH_MUST_USE
hush_status hush__response_open_v2(const hush__v2_answer *answer, const void *body, size_t len,
                                   size_t max_response_bytes, unsigned secmem_flags,
                                   hush_json_doc **out, hush_error *err);

/* A plaintext answer (a bodyless GET, EHBP §7.4) parsed into secure memory,
 * with `_metadata` saying so: the server's members, then status and
 * is_encrypted false. HUSH_E_FORMAT unless it is a JSON object. */
HUSH_MUST_USE
hush_status hush__response_plain(const void *body, size_t len, long http_status,
                                 size_t max_response_bytes, unsigned secmem_flags,
                                 hush_json_doc **out, hush_error *err);

/* ---- time ------------------------------------------------------------- */

static inline struct timespec hush__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static inline struct timespec hush__after_ms(struct timespec t, long ms)
{
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Milliseconds from `from` to `to`, negative when `to` has passed. */
static inline long hush__ms_between(struct timespec from, struct timespec to)
{
    return (long)(to.tv_sec - from.tv_sec) * 1000 + (to.tv_nsec - from.tv_nsec) / 1000000L;
}

#endif
