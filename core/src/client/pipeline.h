/* pipeline.h — what the client (client.c), the engine (engine.c) and the
 * response builder (response.c) share about a request in flight.
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
#include "hushcall/keys.h"

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
} server_key;

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
    hush_client *client; /* a reference */
    void *user_data;
    bool announce;       /* submitted through hush_engine_submit */
    char payload_id[HUSH_PAYLOAD_ID_LEN + 1];
    char *api_key, *tier, *base_url; /* this call's effective settings */
    bool is_probe;       /* the circuit breaker's half-open probe */

    /* Touched only by the I/O thread (and by workers while they own the call). */
    call_stage stage;
    hush_secbuf *request; /* plaintext until sealed */
    hush_secbuf *package; /* sealed body, reused by retries */
    hush_pubkey *server_key;
    server_key *fetch_entry;  /* the entry this call fetches or waits on */
    uint64_t waited_fetch_id; /* the fetch it waited for */
    hush_call *waiter_next;   /* guarded by the client's lock */
    hush_call *live_prev, *live_next;
    hush_call *done_next;     /* in the engine's completed queue (engine lock) */
    void *transfer;           /* the curl easy handle while sending */
    unsigned attempts, fetch_attempts;
    struct timespec wake_at;  /* BACKOFF */
    bool backoff_fetch;       /* the retry is of the key fetch */

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
};

/* ---- client.c, for the engine --------------------------------------- */

/* Fill a call's api_key, tier and base_url from the overrides and the
 * client's options, checked as hush_client_new checks the options. */
HUSH_MUST_USE
hush_status hush__client_call_settings(hush_client *client, const hush_call_options *opts,
                                       hush_call *call, hush_error *err);
/* A call's reference to its client (not the caller's handle). */
hush_client *hush__client_retain(hush_client *client);
void hush__client_release(hush_client *client);

/* Get a call the keys it needs before sealing. HUSH_OK and neither flag:
 * the client key is ready and call->server_key is set. *wait: the call is
 * linked as a waiter and will be resumed. *fetch: this call must fetch the
 * server key (call->fetch_entry says which). Anything else: a failure. */
HUSH_MUST_USE
hush_status hush__client_keys_for(hush_client *client, hush_call *call, bool *wait, bool *fetch,
                                  hush_error *err);
/* The fetch this call made has ended: store the key (or the failure) and
 * resume every waiter. `key` is taken over. */
void hush__client_fetch_done(hush_client *client, hush_call *call, hush_pubkey *key,
                             const hush_error *failure);
/* Unlink a cancelled call from whatever waiter list holds it; a call that
 * was fetching hands the fetch over to its waiters. */
void hush__client_forget(hush_client *client, hush_call *call);
/* The circuit breaker: may this call go out, and how did it end. */
HUSH_MUST_USE
hush_status hush__client_admit(hush_client *client, bool *is_probe, hush_error *err);
void hush__client_record(hush_client *client, hush_status outcome, int http_status,
                         bool is_probe);

/* ---- engine.c, for the client ----------------------------------------- */

/* Re-examine a waiting call (a key it waited for is ready or failed). */
void hush__call_resume(hush_call *call);
HUSH_MUST_USE
hush_status hush__engine_submit(hush_engine *engine, hush_client *client, hush_secbuf *request,
                                const hush_call_options *opts, void *user_data, bool announce,
                                hush_call **out, hush_error *err);

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

/* ---- header lists (engine.c; the server's upstream uses it too) ------ */

/* Wipe every line of a curl header list (curl_slist_append copies the
 * line, an "Authorization: Bearer" one included), then free the list
 * (engine.c, where the client's lists are built; the upstream's too). */
struct curl_slist;
void hush__free_header_list(struct curl_slist *list);

#endif
