/* engine.c — the request pipeline: one I/O thread on curl_multi, a worker
 * pool for the envelope cryptography, and an eventfd announcing completions.
 * Every call, synchronous or not, goes through here. It knows a call's
 * client only as the plan and hooks the client handed it (pipeline.h);
 * curl handle setup is in transfer.c, statuses and backoff in retry.c, a
 * call's life and accessors in call.c.
 *
 * The I/O thread owns a call's progress; workers get a call only inside a
 * job and hand results back as events, so no field of a call is written by
 * two threads. A call finishes exactly once, in finish(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "hushcall/base64.h"
#include "hushcall/engine.h"
#include "hushcall/envelope_v1.h"
#include "hushcall/json.h"
#include "hushcall/secmem.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"
#include "pipeline.h"

#define POLL_MAX_MS 1000
#define KEY_BODY_MAX (64u * 1024u)
#define ERROR_DETAILS_MAX (64u * 1024u)
#define PACKAGE_OVERHEAD 8192u

typedef enum event_kind { EV_START, EV_RESUME, EV_SEALED, EV_OPENED, EV_CANCEL } event_kind;

/* Work handed to the I/O thread. Holds a reference to its call. */
typedef struct event {
    struct event *next;
    event_kind kind;
    hush_call *call;
    hush_status status;
    hush_error error;
    hush_secbuf *package;    /* EV_SEALED */
    hush_secbuf *request;    /* EV_SEALED of v2: the plaintext back, for a re-seal */
    hush_v2_exchange *exchange; /* EV_SEALED of v2 */
    hush_json_doc *response; /* EV_OPENED */
} event;

typedef enum job_kind { JOB_SEAL, JOB_OPEN } job_kind;

/* Work handed to a worker. Holds a reference to its call and owns its data. */
typedef struct job {
    struct job *next;
    job_kind kind;
    hush_call *call;
    hush_secbuf *request;  /* JOB_SEAL: the plaintext */
    unsigned char *body;   /* JOB_OPEN: the sealed answer */
    size_t body_len;
} job;

/* One HTTP exchange of a call. */
typedef struct transfer {
    CURL *easy;
    struct curl_slist *headers;
    hush_call *call;
    /* The easy handle uses the client's curl share until it is cleaned up,
     * which may be after the call (and its reference) is gone. */
    hush_client *client;
    const hush__call_hooks *hooks;
    bool is_fetch;
    unsigned char *body;
    size_t len, cap, limit;
    size_t sent;             /* of a v2 POST's frames, read out by send_frames */
    bool too_large;
    /* A streamed answer: its head checked, or why it was given up. */
    bool stream_began;
    hush_status stream_status;
    hush_error stream_error;
    char errbuf[CURL_ERROR_SIZE];
} transfer;

/* A crypto thread, with secure space of its own for message keys so that
 * sealing maps no memory per message. */
typedef struct worker {
    hush_engine *engine;
    pthread_t thread;
    hush_secbuf *key_space;
} worker;

struct hush_engine {
    CURLM *multi;
    pthread_t io_thread;
    worker *workers;
    unsigned worker_count;
    int notify_fd;

    pthread_mutex_t lock; /* guards everything down to `live` */
    pthread_cond_t job_ready;
    event *inbox, *inbox_tail;
    job *jobs, *jobs_tail;
    hush_call *completed, *completed_tail;
    bool stopping;     /* refuse submissions; the I/O thread winds down */
    bool workers_stop;

    hush_call *live; /* I/O thread only: every call not yet finished */
};

/* ---- queues ------------------------------------------------------------- */

static void free_event(event *ev)
{
    hush_secbuf_free(ev->package);
    hush_secbuf_free(ev->request);
    hush_v2_exchange_free(ev->exchange);
    hush_json_doc_free(ev->response);
    hush__call_release(ev->call);
    free(ev);
}

/* Queue an event for the I/O thread. A start is refused once the engine is
 * stopping: checked under the same lock the I/O thread's last look at the
 * queue takes, so no call can slip in after it and never finish. */
static bool post_event(hush_engine *e, event *ev)
{
    pthread_mutex_lock(&e->lock);
    bool refused = ev->kind == EV_START && e->stopping;
    if (!refused) {
        if (e->inbox_tail != NULL)
            e->inbox_tail->next = ev;
        else
            e->inbox = ev;
        e->inbox_tail = ev;
    }
    pthread_mutex_unlock(&e->lock);
    if (!refused)
        curl_multi_wakeup(e->multi);
    return !refused;
}

/* Post an event about `call`; false when there is no memory for it, or
 * (a start) when the engine is stopping. */
static bool post(hush_engine *e, event_kind kind, hush_call *call, hush_status status,
                 const hush_error *error, hush_secbuf *package, hush_json_doc *response)
{
    event *ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return false;
    ev->kind = kind;
    ev->call = hush__call_retain(call);
    ev->status = status;
    if (error != NULL)
        ev->error = *error;
    ev->package = package;
    ev->response = response;
    if (!post_event(e, ev)) {
        ev->package = NULL; /* the caller keeps what it offered */
        ev->response = NULL;
        free_event(ev);
        return false;
    }
    return true;
}

static void free_job(job *j)
{
    hush_secbuf_free(j->request);
    free(j->body);
    hush__call_release(j->call);
    free(j);
}

static void push_job(hush_engine *e, job *j)
{
    pthread_mutex_lock(&e->lock);
    if (e->jobs_tail != NULL)
        e->jobs_tail->next = j;
    else
        e->jobs = j;
    e->jobs_tail = j;
    pthread_cond_signal(&e->job_ready);
    pthread_mutex_unlock(&e->lock);
}

/* ---- finishing ---------------------------------------------------------- */

static void unlink_live(hush_engine *e, hush_call *call)
{
    if (call->live_prev != NULL)
        call->live_prev->live_next = call->live_next;
    else if (e->live == call)
        e->live = call->live_next;
    if (call->live_next != NULL)
        call->live_next->live_prev = call->live_prev;
    call->live_prev = call->live_next = NULL;
}

static void free_transfer(hush_engine *e, transfer *t)
{
    if (t == NULL)
        return;
    curl_multi_remove_handle(e->multi, t->easy);
    curl_easy_cleanup(t->easy);
    hush__free_header_list(t->headers); /* its Authorization line holds the API key */
    free(t->body);
    t->hooks->release(t->client);
    free(t);
}

/* Keep a JSON error body as the call's details (servers put `detail` there).
 * Only JSON: anything else could be a proxy's page, not the server's word. */
static void keep_error_details(hush_call *call, const transfer *t)
{
    if (t == NULL || t->len == 0 || t->len > ERROR_DETAILS_MAX)
        return;
    hush_json_doc *doc = NULL;
    if (hush_json_parse(t->body, t->len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) != HUSH_OK)
        return;
    hush_json_doc_free(doc);
    call->error_details = malloc(t->len + 1);
    if (call->error_details != NULL) {
        memcpy(call->error_details, t->body, t->len);
        call->error_details[t->len] = '\0';
        call->error_details_len = t->len;
    }
}

/* Queue the call for drain (call lock held; the engine's lock is taken
 * inside it, as the lock order allows): once at a time, and only while the
 * caller holds it. The queue keeps a reference until drained. */
static void announce_locked(hush_engine *e, hush_call *call)
{
    if (!call->announce || atomic_load(&call->user_released))
        return;
    pthread_mutex_lock(&e->lock);
    if (!call->in_completed) {
        call->in_completed = true;
        hush__call_retain(call);
        if (e->completed_tail != NULL)
            e->completed_tail->done_next = call;
        else
            e->completed = call;
        e->completed_tail = call;
        uint64_t one = 1;
        ssize_t ignored = write(e->notify_fd, &one, sizeof one); /* cannot overflow: reset on drain */
        (void)ignored;
    }
    pthread_mutex_unlock(&e->lock);
}

/* End a call: release what it holds in the pipeline, publish the outcome,
 * announce it, drop the engine's reference. */
static void finish(hush_engine *e, hush_call *call, hush_status status, const hush_error *error,
                   hush_json_doc *response)
{
    free_transfer(e, call->transfer); /* still attached only when cancelled mid-exchange */
    call->transfer = NULL;
    unlink_live(e, call);
    const hush__call_hooks *hooks = call->plan->hooks;
    if (call->stage == STAGE_KEYS)
        hooks->forget(call->client, call);
    if (call->stage == STAGE_FETCHING || (call->stage == STAGE_BACKOFF && call->backoff_fetch))
        (void)hooks->fetch_done(call->client, call, NULL, NULL, NULL); /* hand the fetch over */
    call->stage = STAGE_DONE;
    hush_secbuf_free(call->request);
    call->request = NULL;
    hush_secbuf_free(call->package);
    call->package = NULL;
    hush_v2_exchange_free(call->v2_exchange);
    call->v2_exchange = NULL;
    hush__stream_free(call->stream); /* what was opened and not yet cut into chunks */
    call->stream = NULL;
    int http_status = error != NULL ? error->http_status : 0;
    hooks->record(call->client, status, http_status, call->is_probe);

    pthread_mutex_lock(&call->lock);
    call->done = true;
    call->status = status;
    if (error != NULL && status != HUSH_OK)
        call->error = *error;
    else
        hush_error_clear(&call->error);
    call->response = response;
    if (status == HUSH_E_AUTH)
        hush__chunks_wipe(&call->chunks); /* nothing of a forged stream is released */
    /* Queued for drain before anyone can see it done: once hush_call_wait
     * returns, the fd is readable. */
    announce_locked(e, call);
    pthread_cond_broadcast(&call->finished);
    pthread_mutex_unlock(&call->lock);
    hush__call_release(call);
}

static void fail(hush_engine *e, hush_call *call, hush_status status, const hush_error *error)
{
    finish(e, call, status, error, NULL);
}

static void fail_with(hush_engine *e, hush_call *call, hush_status code, const char *message)
{
    hush_error err;
    hush_error_clear(&err);
    fail(e, call, hush__fail(&err, code, "%s", message), &err);
}

/* ---- transfers ---------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t count, void *userdata)
{
    transfer *t = userdata;
    size_t n = size * count;
    if (n > t->limit - t->len) {
        t->too_large = true;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 16384;
        while (cap < t->len + n)
            cap *= 2;
        unsigned char *grown = realloc(t->body, cap);
        if (grown == NULL)
            return 0;
        t->body = grown;
        t->cap = cap;
    }
    memcpy(t->body + t->len, data, n);
    t->len += n;
    return n;
}

/* ---- streamed answers (I/O thread) ------------------------------------- */

/* Hand the chunks the stream parsed to the caller, and announce them. */
static void publish_chunks(hush_engine *e, hush_call *call)
{
    hush__chunk_queue fresh = {0};
    hush__stream_take(call->stream, &fresh);
    if (fresh.head == NULL)
        return;
    pthread_mutex_lock(&call->lock);
    hush__chunks_splice(&call->chunks, &fresh);
    announce_locked(e, call);
    pthread_cond_broadcast(&call->finished);
    pthread_mutex_unlock(&call->lock);
}

/* The answer's Hushcall-Attestation header, kept on the call (NULL: none). */
static bool keep_answer_attestation(CURL *easy, hush_call *call)
{
    struct curl_header *h = NULL;
    free(call->answer_attestation); /* an earlier attempt's */
    call->answer_attestation = NULL;
    if (curl_easy_header(easy, "Hushcall-Attestation", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return true;
    call->answer_attestation = strdup(h->value);
    return call->answer_attestation != NULL;
}

/* What a v2 answer of this call is judged and reported by. */
static hush__v2_answer v2_answer_of(const hush_call *call)
{
    return (hush__v2_answer){
        .exchange = call->v2_exchange,
        .nonce = call->v2_nonce,
        .fingerprint = call->v2_fingerprint,
        .http_status = 200,
        .attestation = call->answer_attestation,
        .rule = {.policy = call->plan->attest_policy, .required = call->attestation_required},
        .key_config_verified = call->v2_attested,
    };
}

/* A stream that requires attestation: its quote checked at the head,
 * before any frame is opened or chunk released. */
HUSH_MUST_USE
static hush_status check_stream_quote(transfer *t)
{
    hush_call *call = t->call;
    if (!keep_answer_attestation(t->easy, call))
        return hush__fail(&t->stream_error, HUSH_E_NOMEM, "out of memory");
    hush__v2_answer answer = v2_answer_of(call);
    return hush__v2_answer_attest(&answer, call->plan->secmem_flags, &t->stream_error);
}

/* The head of a 200 to a streamed call: opened only with a valid
 * Ehbp-Response-Nonce (EHBP §5.3: fail closed), as v2_answered does. */
static bool begin_stream(transfer *t)
{
    hush_call *call = t->call;
    struct curl_header *h = NULL;
    if (curl_easy_header(t->easy, "Ehbp-Response-Nonce", 0, CURLH_HEADER, -1, &h) != CURLHE_OK ||
        hush_v2_nonce_parse_hex(h->value, strlen(h->value), call->v2_nonce, NULL) != HUSH_OK) {
        t->stream_status = hush__fail(&t->stream_error, HUSH_E_AUTH,
                                      "the server's answer has no valid Ehbp-Response-Nonce: it "
                                      "cannot be authenticated, and nothing of it was released");
        return false;
    }
    if (call->attestation_required) {
        t->stream_status = check_stream_quote(t);
        if (t->stream_status != HUSH_OK)
            return false;
    }
    t->stream_status = hush__stream_begin(call->stream, call->v2_exchange, call->v2_nonce,
                                          &t->stream_error);
    t->stream_began = t->stream_status == HUSH_OK; /* never retried from here on */
    return t->stream_began;
}

/* libcurl's write callback of a streamed call: each slice opened at once,
 * its complete events handed out as chunks. Another status than 200 is
 * kept whole, as any error answer is. */
static size_t on_stream_body(char *data, size_t size, size_t count, void *userdata)
{
    transfer *t = userdata;
    size_t n = size * count;
    if (!t->stream_began) {
        long http = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &http);
        if (http != 200)
            return on_body(data, size, count, userdata);
        if (!begin_stream(t))
            return 0; /* makes curl fail the transfer: the reason is in the transfer */
    }
    t->stream_status = hush__stream_feed(t->call->stream, data, n, &t->stream_error);
    if (t->stream_status != HUSH_OK)
        return 0;
    publish_chunks(t->call->engine, t->call);
    return n;
}

/* "Authorization: Bearer <api_key>" when the call has a key; the list
 * wipes it when freed, and the line built here is wiped at once. */
HUSH_MUST_USE
static hush_status add_authorization(const hush_call *call, struct curl_slist **list)
{
    hush_status status = HUSH_OK;
    hush_error *err = NULL; /* any failure is reported as the set-up failing */
    char bearer[512];
    if (call->api_key == NULL)
        return HUSH_OK;
    int n = snprintf(bearer, sizeof bearer, "Bearer %s", call->api_key);
    HUSH_ENSURE(n > 0 && (size_t)n < sizeof bearer, HUSH_E_INTERNAL, "api_key is too long");
    HUSH_TRY(hush__header_add(list, "Authorization", bearer, err));
cleanup:
    hush_memzero(bearer, sizeof bearer);
    return status;
}

/* The headers of a POST: the client's key, the payload id, the tier and
 * the API key (wiped with the list). */
HUSH_MUST_USE
static hush_status build_post_headers(const hush_call *call, struct curl_slist **list)
{
    hush_status status = HUSH_OK;
    hush_error *err = NULL; /* any failure is reported as the set-up failing */
    HUSH_TRY(hush__header_add(list, call->key_header, NULL, err));
    HUSH_TRY(hush__header_add(list, "X-Payload-ID", call->payload_id, err));
    HUSH_TRY(hush__header_add(list, "Content-Type", "application/octet-stream", err));
    HUSH_TRY(hush__header_add(list, "Expect", "", err)); /* no 100-continue round trip */
    if (call->tier != NULL)
        HUSH_TRY(hush__header_add(list, "X-Security-Tier", call->tier, err));
    /* a gateway quotes a standard-tier answer only when asked */
    if (call->plan->ask_attestation)
        HUSH_TRY(hush__header_add(list, "X-Attestation", "required", err));
    HUSH_TRY(add_authorization(call, list));
cleanup:
    return status;
}

/* The headers of a v2 POST (docs/protocol-v2.md "A request"): enc, the
 * config it was sealed to when the server named its configs, chunked
 * framing (EHBP wants no Content-Length), the tier and the ask for a quote
 * (docs/attestation.md "Per-answer quotes"), and the API key. */
HUSH_MUST_USE
static hush_status build_v2_headers(const hush_call *call, struct curl_slist **list)
{
    hush_status status = HUSH_OK;
    hush_error *err = NULL; /* any failure is reported as the set-up failing */
    static const char enc_name[] = "Ehbp-Encapsulated-Key: ";
    char hdr_hex[HUSH_V2_HDR_HEX_LEN + 1];
    char enc_line[sizeof enc_name + 2 * HUSH_HPKE_MAX_ENC_BYTES]; /* X-Wing's is long */
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    size_t enc_len;
    const unsigned char *enc = hush_v2_exchange_enc(call->v2_exchange, &enc_len);
    memcpy(enc_line, enc_name, sizeof enc_name - 1);
    hush_v2_hex_format(enc, enc_len, enc_line + sizeof enc_name - 1);
    HUSH_TRY(hush__header_add(list, enc_line, NULL, err)); /* a whole line */
    if (call->v2_named) {
        hush_v2_hdr_encode(hush_v2_exchange_key_id(call->v2_exchange),
                           hush_v2_exchange_suite(call->v2_exchange), hdr);
        hush_v2_hex_format(hdr, sizeof hdr, hdr_hex);
        HUSH_TRY(hush__header_add(list, "Hushcall-Key-Config", hdr_hex, err));
    }
    HUSH_TRY(hush__header_add(list, "Content-Type", "application/json", err));
    HUSH_TRY(hush__header_add(list, "Transfer-Encoding", "chunked", err));
    if (call->tier != NULL)
        HUSH_TRY(hush__header_add(list, "X-Security-Tier", call->tier, err));
    if (call->attestation_required || call->plan->ask_attestation)
        HUSH_TRY(hush__header_add(list, "X-Attestation", "required", err));
    HUSH_TRY(hush__header_add(list, "Expect", "", err)); /* no 100-continue round trip */
    HUSH_TRY(add_authorization(call, list));
cleanup:
    return status;
}

/* libcurl's read callback of a v2 POST: the sealed frames, sent chunked. */
static size_t send_frames(char *buffer, size_t size, size_t count, void *userdata)
{
    transfer *t = userdata;
    const unsigned char *frames = hush_secbuf_data(t->call->package);
    size_t left = hush_secbuf_len(t->call->package) - t->sent;
    size_t n = size * count < left ? size * count : left;
    memcpy(buffer, frames + t->sent, n);
    t->sent += n;
    return n;
}

static const char *fetch_path(hush__fetch_kind kind)
{
    switch (kind) {
    case FETCH_V2_LIST:
        return "/.well-known/hushcall-hpke-keys";
    case FETCH_V2_BARE:
        return "/.well-known/hpke-keys";
    case FETCH_V2_ATTESTED:
        return "/.well-known/hushcall-attestation";
    case FETCH_V1_KEY:
        break;
    }
    return "/pki/public_key";
}

static const char *transfer_path(const hush_call *call, const transfer *t)
{
    if (t->is_fetch)
        return fetch_path(call->fetch_kind);
    if (call->path != NULL)
        return call->path;
    return call->v2 ? "/v1/chat/completions" : "/v1/chat/secure_completion";
}

/* The headers of a bodyless GET: the API key alone (wiped with the list). */
HUSH_MUST_USE
static hush_status build_get_headers(const hush_call *call, struct curl_slist **list)
{
    hush_status status = HUSH_OK;
    hush_error *err = NULL; /* any failure is reported as the set-up failing */
    HUSH_TRY(hush__header_add(list, "Accept", "application/json", err));
    HUSH_TRY(add_authorization(call, list));
cleanup:
    return status;
}

/* A fresh nonce for the call's attested fetch, as its query "?nonce=<hex>". */
HUSH_MUST_USE
static hush_status fresh_nonce_query(hush_call *call, char query[])
{
    hush_status status = HUSH_OK;
    hush_error *err = NULL; /* any failure is reported as the set-up failing */
    HUSH_OSSL(RAND_bytes(call->attest_nonce, sizeof call->attest_nonce) == 1, "RAND_bytes");
    memcpy(query, "?nonce=", sizeof "?nonce=" - 1);
    hush_v2_hex_format(call->attest_nonce, sizeof call->attest_nonce,
                       query + sizeof "?nonce=" - 1);
cleanup:
    return status;
}

/* The easy handle of one exchange: shared options, then this one's own. */
HUSH_MUST_USE
static hush_status set_up_easy(hush_call *call, transfer *t)
{
    hush_status status = HUSH_OK;
    hush_error *err = NULL; /* any failure is reported as the set-up failing */
    char url[2048], query[sizeof "?nonce=" + 2 * HUSH_ATTEST_NONCE_BYTES] = "";
    if (t->is_fetch && call->fetch_kind == FETCH_V2_ATTESTED)
        HUSH_TRY(fresh_nonce_query(call, query));
    snprintf(url, sizeof url, "%s%s%s", call->base_url, transfer_path(call, t), query);
    CURLcode rc = CURLE_OK;
    HUSH_ENSURE((t->easy = curl_easy_init()) != NULL, HUSH_E_INTERNAL, "curl_easy_init");
    HUSH_TRY(hush__curl_setup(t->easy, &call->plan->endpoint, "HTTP transfer", false, err));
#define SET(opt, val) \
    if (rc == CURLE_OK) \
        rc = curl_easy_setopt(t->easy, opt, val)
    SET(CURLOPT_PRIVATE, t);
    SET(CURLOPT_SHARE, call->plan->share);
    SET(CURLOPT_WRITEFUNCTION, call->is_stream && !t->is_fetch ? on_stream_body : on_body);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SET(CURLOPT_URL, url);
    if (t->is_fetch) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (call->plain_get) {
        HUSH_TRY(build_get_headers(call, &t->headers));
        SET(CURLOPT_HTTPHEADER, t->headers);
        SET(CURLOPT_HTTPGET, 1L);
    } else if (call->v2) {
        HUSH_TRY(build_v2_headers(call, &t->headers));
        SET(CURLOPT_HTTPHEADER, t->headers);
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_READFUNCTION, send_frames);
        SET(CURLOPT_READDATA, t);
    } else {
        HUSH_TRY(build_post_headers(call, &t->headers));
        SET(CURLOPT_HTTPHEADER, t->headers);
        SET(CURLOPT_POSTFIELDS, hush_secbuf_data(call->package));
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)hush_secbuf_len(call->package));
    }
#undef SET
    HUSH_ENSURE(rc == CURLE_OK, HUSH_E_INTERNAL, "curl_easy_setopt");
cleanup:
    hush_memzero(url, sizeof url); /* curl copied it, user:password@ included */
    return status;
}

/* POST the sealed package (or GET the server key) on the I/O thread. */
static void start_transfer(hush_engine *e, hush_call *call, bool is_fetch)
{
    /* The stage first: should setting up fail, finish() must know this call
     * held the key fetch, and hand it over. */
    call->stage = is_fetch ? STAGE_FETCHING : STAGE_SENDING;
    transfer *t = calloc(1, sizeof *t);
    if (t == NULL) {
        fail_with(e, call, HUSH_E_NOMEM, "out of memory");
        return;
    }
    t->call = call;
    t->hooks = call->plan->hooks;
    t->client = t->hooks->retain(call->client);
    t->is_fetch = is_fetch;
    t->limit = is_fetch ? KEY_BODY_MAX
                        : call->plan->max_response_bytes / 3 * 4 + PACKAGE_OVERHEAD;
    call->transfer = t;
    if (is_fetch)
        call->fetch_attempts++;
    else
        call->attempts++;
    if (set_up_easy(call, t) != HUSH_OK || curl_multi_add_handle(e->multi, t->easy) != CURLM_OK)
        fail_with(e, call, HUSH_E_INTERNAL, "could not set up the HTTP transfer");
}

/* ---- classifying an exchange ------------------------------------------ */

/* Schedule a retry under the plan's policy (retry.c); false when none. */
static bool schedule_retry(hush_call *call, bool is_fetch, long server_wait_ms)
{
    long wait;
    unsigned done = is_fetch ? call->fetch_attempts : call->attempts;
    if (!hush__retry_delay(&call->plan->retry, done, server_wait_ms, &wait))
        return false;
    call->wake_at = hush__after_ms(hush__now(), wait);
    call->backoff_fetch = is_fetch;
    call->stage = STAGE_BACKOFF;
    return true;
}

/* The fetched body as an RSA key; HUSH_E_KEY, with the parser's reason. */
HUSH_MUST_USE
static hush_status read_server_key(const transfer *t, hush_pubkey **key, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_error parse;
    hush_error_clear(&parse);
    HUSH_ENSURE(hush_pubkey_from_pem(t->body, t->len, key, &parse) == HUSH_OK, HUSH_E_KEY,
                "the server's /pki/public_key is not a usable RSA key (%s)", parse.message);
cleanup:
    return status;
}

/* The fetched body as the server key, checked against the pin. */
HUSH_MUST_USE
static hush_status accept_server_key(hush_call *call, const transfer *t, hush_pubkey **key,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    char fp[HUSH_FINGERPRINT_LEN];
    const char *pin = call->plan->server_key_fingerprint;
    HUSH_TRY(read_server_key(t, key, err));
    if (pin != NULL) {
        HUSH_TRY(hush_pubkey_fingerprint(*key, fp, err));
        HUSH_ENSURE(strcmp(fp, pin) == 0, HUSH_E_PIN,
                    "the server's envelope key does not match the pinned fingerprint; "
                    "nothing was sent");
    }
cleanup:
    if (status != HUSH_OK) {
        hush_pubkey_free(*key);
        *key = NULL;
    }
    return status;
}

/* The fetched body as v2 key configs: hushcall's list, or EHBP's one bare
 * config (whose requests name no config). */
HUSH_MUST_USE
static hush_status read_v2_configs(const hush_call *call, const transfer *t, hush__fetched *got,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    if (call->fetch_kind == FETCH_V2_LIST) {
        HUSH_TRY(hush_v2_keyconfigs_parse(t->body, t->len, &got->v2, &got->v2_count, err));
        HUSH_ENSURE(got->v2_count > 0, HUSH_E_KEY,
                    "the server's %s lists no key config hushcall speaks", fetch_path(FETCH_V2_LIST));
        got->v2_named = true;
    } else {
        HUSH_ENSURE((got->v2 = calloc(1, sizeof *got->v2)) != NULL, HUSH_E_NOMEM, "out of memory");
        got->v2_count = 1;
        HUSH_TRY(hush_v2_keyconfig_parse(t->body, t->len, got->v2, err));
    }
cleanup:
    return status;
}

#define NOT_ATTESTED "the server's key configs are not attested: "

/* The attestation's key_configs, base64-decoded into `*configs` (malloc'd). */
HUSH_MUST_USE
static hush_status decode_attested_configs(const hush_json_value *root, unsigned char **configs,
                                           size_t *len, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t text_len = 0;
    const char *text = hush_json_string(hush_json_object_get(root, "key_configs", 11), &text_len);
    HUSH_ENSURE(text != NULL && text_len > 0, HUSH_E_ATTESTATION,
                NOT_ATTESTED "the answer has no key_configs string; nothing was sent");
    HUSH_ENSURE((*configs = malloc(hush_base64_decoded_max(text_len) + 1)) != NULL, HUSH_E_NOMEM,
                "out of memory");
    HUSH_ENSURE(hush_base64_decode(text, text_len, *configs, hush_base64_decoded_max(text_len) + 1,
                                   len, NULL) == HUSH_OK && *len > 0,
                HUSH_E_ATTESTATION, NOT_ATTESTED "key_configs is not base64; nothing was sent");
cleanup:
    return status;
}

/* The body of an attested fetch: the quote over the call's nonce and the
 * configs served, verified under the policy before the configs are parsed
 * (docs/attestation.md "What the clients do"). */
HUSH_MUST_USE
static hush_status read_attested_configs(const hush_call *call, const transfer *t,
                                         hush__fetched *got, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_doc *doc = NULL;
    unsigned char *configs = NULL;
    size_t configs_len = 0;
    unsigned char qualifying[HUSH_ATTEST_QUALIFYING_BYTES];
    hush_attest_result verdict;
    HUSH_ENSURE(hush_json_parse(t->body, t->len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) == HUSH_OK &&
                    hush_json_type_of(hush_json_doc_root(doc)) == HUSH_JSON_OBJECT,
                HUSH_E_ATTESTATION, NOT_ATTESTED "the answer is not a JSON object; nothing was sent");
    const hush_json_value *root = hush_json_doc_root(doc);
    HUSH_TRY(decode_attested_configs(root, &configs, &configs_len, err));
    HUSH_TRY(hush_attest_key_config_qualifying(call->attest_nonce, configs, configs_len,
                                               qualifying, err));
    HUSH_TRY(hush_attest_verify_bound(hush_json_object_get(root, "tpm_attestation", 15),
                                      qualifying, call->plan->attest_policy, &verdict, err));
    HUSH_ENSURE(verdict.verified, HUSH_E_ATTESTATION, NOT_ATTESTED "%s; nothing was sent",
                verdict.reason);
    HUSH_TRY(hush_v2_keyconfigs_parse(configs, configs_len, &got->v2, &got->v2_count, err));
    HUSH_ENSURE(got->v2_count > 0, HUSH_E_KEY,
                "the server's attested key configs hold none hushcall speaks");
    got->v2_named = true;
    got->attested = true;
cleanup:
    free(configs);
    hush_json_doc_free(doc);
    return status;
}

/* What a successful fetch found, by its kind. */
HUSH_MUST_USE
static hush_status read_fetched(hush_call *call, const transfer *t, hush__fetched *got,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    got->v2_absent = call->v2_fell_back;
    if (call->fetch_kind == FETCH_V1_KEY)
        return accept_server_key(call, t, &got->v1_key, err);
    if (call->fetch_kind == FETCH_V2_ATTESTED)
        return read_attested_configs(call, t, got, err);
    /* "auto" looked past a missing attestation: v2 here, but unattested */
    HUSH_ENSURE(!call->attest_missing, HUSH_E_ATTESTATION,
                NOT_ATTESTED "the server publishes v2 key configs but no attestation of them "
                "(%s: HTTP 404); nothing was sent",
                fetch_path(FETCH_V2_ATTESTED));
    HUSH_TRY(read_v2_configs(call, t, got, err));
cleanup:
    return status;
}

static void free_fetched(hush__fetched *got)
{
    hush_pubkey_free(got->v1_key);
    hush_v2_keyconfigs_free(got->v2, got->v2_count);
    *got = (hush__fetched){0};
}

/* After a 404 of a v2 config path: the next place to look, false when none
 * is left ("v2" and require_pq never fall back to v1). */
static bool next_fetch_kind(const hush__transfer_plan *plan, hush__fetch_kind *kind)
{
    if (*kind == FETCH_V2_ATTESTED && plan->protocol == PROTOCOL_AUTO) {
        *kind = FETCH_V2_LIST; /* a server without v2 may still attest on v1 */
        return true;
    }
    if (*kind == FETCH_V2_LIST) {
        *kind = FETCH_V2_BARE;
        return true;
    }
    if (*kind == FETCH_V2_BARE && plan->protocol == PROTOCOL_AUTO && !plan->require_pq) {
        *kind = FETCH_V1_KEY;
        return true;
    }
    return false;
}

static void advance_keys(hush_engine *e, hush_call *call);

/* An attested fetch the server answered with an error: the configs are
 * not attested, whatever the status (a 404: it has no TPM). */
HUSH_MUST_USE
static hush_status not_attested_http(hush_error *err, long http)
{
    hush_status status = hush__fail(err, HUSH_E_ATTESTATION,
                                    NOT_ATTESTED "%s answered HTTP %ld; nothing was sent",
                                    fetch_path(FETCH_V2_ATTESTED), http);
    err->http_status = (int)http;
    return status;
}

static void fetch_done(hush_engine *e, hush_call *call, transfer *t, long http,
                       hush_status status, hush_error *err, long wait_ms, bool retryable)
{
    hush__fetched got = {0};
    hush_error failure;
    if (http == 404 && call->fetch_kind != FETCH_V1_KEY) {
        call->attest_missing = call->attest_missing || call->fetch_kind == FETCH_V2_ATTESTED;
        if (next_fetch_kind(call->plan, &call->fetch_kind)) {
            call->v2_fell_back = call->fetch_kind == FETCH_V1_KEY;
            call->fetch_attempts = 0; /* another resource, not a retry: a fresh budget */
            start_transfer(e, call, true); /* still this call's fetch */
            return;
        }
        if (call->fetch_kind != FETCH_V2_ATTESTED)
            status = hush__fail(err, HUSH_E_UNSUPPORTED,
                                "the server publishes no v2 key config (%s and %s: HTTP 404) and "
                                "%s; nothing was sent",
                                fetch_path(FETCH_V2_LIST), fetch_path(FETCH_V2_BARE),
                                call->plan->require_pq ? "require_pq is set"
                                                       : "protocol is \"v2\"");
    }
    if (status == HUSH_OK)
        status = read_fetched(call, t, &got, err);
    if (status != HUSH_OK && retryable && schedule_retry(call, true, wait_ms))
        return;
    if (status != HUSH_OK && call->fetch_kind == FETCH_V2_ATTESTED && http != 200 && http != 0)
        status = not_attested_http(err, http);
    call->stage = STAGE_KEYS; /* no longer the fetcher, whatever happens next */
    if (status != HUSH_OK)
        free_fetched(&got);
    failure = *err;
    status = call->plan->hooks->fetch_done(call->client, call, status == HUSH_OK ? &got : NULL,
                                           status == HUSH_OK ? NULL : &failure, err);
    if (status == HUSH_OK)
        advance_keys(e, call); /* v1 after "auto" found no v2 may still wait for the client key */
    else
        fail(e, call, status, err);
}

static void post_open_job(hush_engine *e, hush_call *call, transfer *t);

/* EHBP §5.4's key-config problem: the one 422 worth a refetch. */
static bool is_key_config_problem(const transfer *t)
{
    static const char type[] = "urn:ietf:params:ehbp:error:key-config";
    const char *content_type = NULL;
    hush_json_doc *doc = NULL;
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &content_type);
    if (content_type == NULL ||
        strncmp(content_type, "application/problem+json", strlen("application/problem+json")) != 0 ||
        t->len == 0 || t->len > ERROR_DETAILS_MAX ||
        hush_json_parse(t->body, t->len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) != HUSH_OK)
        return false;
    const hush_json_value *v = hush_json_object_get(hush_json_doc_root(doc), "type", 4);
    size_t len = 0;
    const char *s = v != NULL ? hush_json_string(v, &len) : NULL;
    bool is = s != NULL && len == sizeof type - 1 && memcmp(s, type, len) == 0;
    hush_json_doc_free(doc);
    return is;
}

/* A 200 to a v2 POST: opened only with a valid Ehbp-Response-Nonce (EHBP
 * §5.3: fail closed), which the answer's key derives from. */
static void v2_answered(hush_engine *e, hush_call *call, transfer *t)
{
    struct curl_header *h = NULL;
    hush_error err;
    hush_error_clear(&err);
    if (curl_easy_header(t->easy, "Ehbp-Response-Nonce", 0, CURLH_HEADER, -1, &h) != CURLHE_OK ||
        hush_v2_nonce_parse_hex(h->value, strlen(h->value), call->v2_nonce, &err) != HUSH_OK) {
        fail_with(e, call, HUSH_E_AUTH,
                  "the server's answer has no valid Ehbp-Response-Nonce: it cannot be "
                  "authenticated, and nothing of it was released");
        return;
    }
    if (!keep_answer_attestation(t->easy, call)) {
        fail_with(e, call, HUSH_E_NOMEM, "out of memory");
        return;
    }
    post_open_job(e, call, t);
}

/* A streamed answer ended (its head was a 200, or it was given up while
 * being read): complete, truncated, or failed. Never retried: chunks of it
 * may have been handed out. */
static void stream_ended(hush_engine *e, hush_call *call, transfer *t, CURLcode rc)
{
    hush_error err;
    hush_error_clear(&err);
    hush_status status = t->stream_status;
    if (status != HUSH_OK)
        err = t->stream_error;
    else if (!t->stream_began && !begin_stream(t)) /* an empty body calls no write callback */
        status = t->stream_status, err = t->stream_error;
    else if (rc != CURLE_OK)
        status = hush__fail(&err, HUSH_E_TRUNCATED, "the streamed answer was cut short (%s)",
                            curl_easy_strerror(rc));
    else
        status = hush__stream_end(call->stream, &err);
    if (status == HUSH_OK || status == HUSH_E_TRUNCATED)
        err.http_status = 200;
    finish(e, call, status, &err, NULL);
}

/* The plaintext answer of a bodyless GET, parsed into secure memory. */
static void plain_answered(hush_engine *e, hush_call *call, transfer *t)
{
    hush_error err;
    hush_error_clear(&err);
    hush_json_doc *doc = NULL;
    hush_status status = hush__response_plain(t->body, t->len, 200,
                                              call->plan->max_response_bytes,
                                              call->plan->secmem_flags, &doc, &err);
    finish(e, call, status, &err, doc);
}

/* An exchange ended. The transfer is detached from its call first: the
 * call may finish (and be freed) below, the transfer is freed last. */
static void transfer_done(hush_engine *e, transfer *t, CURLcode rc)
{
    hush_call *call = t->call;
    call->transfer = NULL;
    hush_error err;
    hush_error_clear(&err);
    long http = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &http);
    hush_status status = HUSH_OK;
    bool retryable = false;
    long wait_ms = -1;

    if (rc != CURLE_OK) {
        status = hush__status_for_curl(rc, t->too_large);
        retryable = status == HUSH_E_CONNECTION;
        if (status == HUSH_E_LIMIT)
            status = hush__fail(&err, status, "the server's answer exceeds %zu bytes", t->limit);
        else
            status = hush__fail(&err, status, "%s: %s", curl_easy_strerror(rc),
                                t->errbuf[0] ? t->errbuf : "no detail");
    } else if (http != 200) {
        status = hush__status_for_http(http);
        retryable = http == 429 || http == 503;
        wait_ms = hush__retry_after_ms(t->easy);
        status = hush__fail(&err, status, "the server answered HTTP %ld (%s)", http,
                   hush_strerror(status));
        err.http_status = (int)http;
    }

    if (t->is_fetch) {
        fetch_done(e, call, t, http, status, &err, wait_ms, retryable);
    } else if (call->is_stream && (t->stream_began || t->stream_status != HUSH_OK ||
                                   (rc == CURLE_OK && http == 200))) {
        stream_ended(e, call, t, rc);
    } else if (call->plain_get && status == HUSH_OK) {
        plain_answered(e, call, t);
    } else if (call->v2 && status == HUSH_OK) {
        v2_answered(e, call, t);
    } else if (call->v2 && http == 422 && !call->v2_refetched && is_key_config_problem(t)) {
        /* Our config is stale (the server rotated): fetch once, seal afresh. */
        call->v2_refetched = true;
        call->plan->hooks->v2_stale(call->client, call);
        advance_keys(e, call);
    } else if (status == HUSH_OK) {
        post_open_job(e, call, t);
    } else if (!retryable || !schedule_retry(call, false, wait_ms)) {
        keep_error_details(call, t);
        fail(e, call, status, &err);
    }
    free_transfer(e, t);
}

/* ---- the call's progress (I/O thread) --------------------------------- */

static void post_seal_job(hush_engine *e, hush_call *call)
{
    job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        fail_with(e, call, HUSH_E_NOMEM, "out of memory");
        return;
    }
    j->kind = JOB_SEAL;
    j->call = hush__call_retain(call);
    j->request = call->request; /* the worker owns the plaintext now */
    call->request = NULL;
    call->stage = STAGE_SEALING;
    push_job(e, j);
}

static void post_open_job(hush_engine *e, hush_call *call, transfer *t)
{
    job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        fail_with(e, call, HUSH_E_NOMEM, "out of memory");
        return;
    }
    j->kind = JOB_OPEN;
    j->call = hush__call_retain(call);
    j->body = t->body; /* the job owns the sealed answer now */
    j->body_len = t->len;
    t->body = NULL;
    call->stage = STAGE_OPENING;
    push_job(e, j);
}

static void advance_keys(hush_engine *e, hush_call *call)
{
    bool wait, fetch;
    hush_error err;
    hush_error_clear(&err);
    call->stage = STAGE_KEYS;
    hush_status status = call->plan->hooks->keys_for(call->client, call, &wait, &fetch, &err);
    if (status != HUSH_OK)
        fail(e, call, status, &err);
    else if (fetch)
        start_transfer(e, call, true);
    else if (!wait)
        post_seal_job(e, call);
}

static void handle_event(hush_engine *e, event *ev)
{
    hush_call *call = ev->call;
    if (call->stage == STAGE_DONE)
        return; /* cancelled meanwhile: whatever the event carries is dropped */
    switch (ev->kind) {
    case EV_START:
        call->live_next = e->live;
        if (e->live != NULL)
            e->live->live_prev = call;
        e->live = call;
        if (call->plain_get)
            start_transfer(e, call, false); /* plaintext: no keys to wait for */
        else
            advance_keys(e, call);
        break;
    case EV_RESUME:
        if (call->stage == STAGE_KEYS)
            advance_keys(e, call);
        break;
    case EV_SEALED:
        if (ev->status != HUSH_OK) {
            fail(e, call, ev->status, &ev->error);
            break;
        }
        hush_secbuf_free(call->package); /* a v2 re-seal's predecessor */
        call->package = ev->package;
        ev->package = NULL;
        if (call->v2) {
            call->request = ev->request; /* kept: every retry seals afresh */
            ev->request = NULL;
            hush_v2_exchange_free(call->v2_exchange);
            call->v2_exchange = ev->exchange;
            ev->exchange = NULL;
        }
        start_transfer(e, call, false);
        break;
    case EV_OPENED:
        finish(e, call, ev->status, &ev->error, ev->response);
        ev->response = NULL;
        break;
    case EV_CANCEL:
        fail_with(e, call, HUSH_E_CANCELLED, "the call was cancelled");
        break;
    }
}

static long next_wake_ms(hush_engine *e, struct timespec now)
{
    long wait = POLL_MAX_MS;
    for (hush_call *c = e->live; c != NULL; c = c->live_next)
        if (c->stage == STAGE_BACKOFF) {
            long ms = hush__ms_between(now, c->wake_at);
            if (ms < wait)
                wait = ms < 0 ? 0 : ms;
        }
    return wait;
}

static void fire_due_retries(hush_engine *e)
{
    struct timespec now = hush__now();
    for (hush_call *c = e->live, *next; c != NULL; c = next) {
        next = c->live_next; /* start_transfer may finish (and unlink) the call */
        if (c->stage != STAGE_BACKOFF || hush__ms_between(now, c->wake_at) > 0)
            continue;
        if (c->v2 && !c->backoff_fetch)
            post_seal_job(e, c); /* a fresh seal, never a replay of the last one */
        else
            start_transfer(e, c, c->backoff_fetch);
    }
}

static void collect_transfers(hush_engine *e)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        transfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        transfer_done(e, t, msg->data.result);
    }
}

static event *take_inbox(hush_engine *e, bool *stopping)
{
    pthread_mutex_lock(&e->lock);
    event *events = e->inbox;
    e->inbox = e->inbox_tail = NULL;
    *stopping = e->stopping;
    pthread_mutex_unlock(&e->lock);
    return events;
}

static void *io_main(void *arg)
{
    hush_engine *e = arg;
    for (;;) {
        bool stopping;
        for (event *ev = take_inbox(e, &stopping), *next; ev != NULL; ev = next) {
            next = ev->next;
            handle_event(e, ev);
            free_event(ev);
        }
        if (stopping)
            break;
        fire_due_retries(e);
        int running;
        curl_multi_perform(e->multi, &running);
        collect_transfers(e);
        curl_multi_poll(e->multi, NULL, 0, (int)next_wake_ms(e, hush__now()), NULL);
    }
    /* Shutting down: every call still in flight ends cancelled. */
    while (e->live != NULL)
        fail_with(e, e->live, HUSH_E_CANCELLED, "the engine shut down");
    return NULL;
}

/* ---- workers ------------------------------------------------------------ */

/* Seal a v2 request to the call's config; the plaintext goes back to the
 * call with the frames, for a re-seal on retry or after a 422. */
static void run_seal_v2(hush_engine *e, job *j)
{
    hush_call *call = j->call;
    hush_error err;
    hush_error_clear(&err);
    hush_secbuf *frames = NULL;
    hush_v2_exchange *exchange = NULL;
    size_t len = hush_secbuf_len(j->request);
    hush_status status = hush_secbuf_new(len + len / 16 + 64, 0, HUSH_SECMEM_PUBLIC, &frames, &err);
    if (status == HUSH_OK)
        status = hush_v2_request_seal(&call->v2_config, call->v2_cipher,
                                      hush_secbuf_data(j->request), len, 0, frames, NULL,
                                      &exchange, &err);
    event *ev = calloc(1, sizeof *ev);
    if (ev == NULL) {
        hush_secbuf_free(frames);
        hush_v2_exchange_free(exchange);
        return; /* without memory the call waits for its cancel, as a failed post does */
    }
    *ev = (event){.kind = EV_SEALED, .call = hush__call_retain(call), .status = status,
                  .error = err, .package = frames, .request = j->request, .exchange = exchange};
    j->request = NULL;
    if (!post_event(e, ev))
        free_event(ev);
}

static void run_seal(hush_engine *e, worker *w, job *j)
{
    hush_call *call = j->call;
    hush_error err;
    hush_error_clear(&err);
    hush_secbuf *package = NULL;
    hush_status status = hush__envelope_v1_seal_with(
        call->server_key, hush_secbuf_data(j->request), hush_secbuf_len(j->request),
        HUSH_V1_NO_PROCESSED_AT, hush_secbuf_data(w->key_space), &package, &err);
    hush_secbuf_free(j->request); /* the plaintext is not needed again: retries resend the package */
    j->request = NULL;
    if (!post(e, EV_SEALED, call, status, &err, package, NULL))
        hush_secbuf_free(package);
}

static void run_open(hush_engine *e, job *j)
{
    hush_call *call = j->call;
    const hush__transfer_plan *plan = call->plan;
    hush_error err;
    hush_error_clear(&err);
    hush_json_doc *doc = NULL;
    if (call->v2) {
        hush__v2_answer answer = v2_answer_of(call);
        hush_status status = hush__response_open_v2(&answer, j->body, j->body_len,
                                                    plan->max_response_bytes, plan->secmem_flags,
                                                    &doc, &err);
        if (!post(e, EV_OPENED, call, status, &err, NULL, doc))
            hush_json_doc_free(doc);
        return;
    }
    hush__attest_rule rule = {
        .policy = plan->attest_policy,
        .required = call->attestation_required,
    };
    hush_status status = hush__response_open(call->client_key, j->body, j->body_len,
                                             plan->max_response_bytes, call->payload_id, &rule,
                                             plan->secmem_flags, &doc, &err);
    if (!post(e, EV_OPENED, call, status, &err, NULL, doc))
        hush_json_doc_free(doc);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    hush_engine *e = w->engine;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        while (e->jobs == NULL && !e->workers_stop)
            pthread_cond_wait(&e->job_ready, &e->lock);
        if (e->workers_stop)
            break;
        job *j = e->jobs;
        e->jobs = j->next;
        if (e->jobs == NULL)
            e->jobs_tail = NULL;
        pthread_mutex_unlock(&e->lock);
        if (j->kind == JOB_SEAL && j->call->v2)
            run_seal_v2(e, j);
        else if (j->kind == JOB_SEAL)
            run_seal(e, w, j);
        else
            run_open(e, j);
        free_job(j);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ---- the engine --------------------------------------------------------- */

static void stop_workers(hush_engine *e, unsigned started)
{
    pthread_mutex_lock(&e->lock);
    e->workers_stop = true;
    pthread_cond_broadcast(&e->job_ready);
    pthread_mutex_unlock(&e->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(e->workers[i].thread, NULL);
}

static void engine_release_resources(hush_engine *e)
{
    for (event *ev = e->inbox, *next; ev != NULL; ev = next) {
        next = ev->next;
        free_event(ev);
    }
    for (job *j = e->jobs, *next; j != NULL; j = next) {
        next = j->next;
        free_job(j);
    }
    for (hush_call *c = e->completed, *next; c != NULL; c = next) {
        next = c->done_next;
        hush__call_release(c);
    }
    if (e->multi != NULL)
        curl_multi_cleanup(e->multi);
    if (e->notify_fd >= 0)
        close(e->notify_fd);
    pthread_cond_destroy(&e->job_ready);
    pthread_mutex_destroy(&e->lock);
    for (unsigned i = 0; e->workers != NULL && i < e->worker_count; i++)
        hush_secbuf_free(e->workers[i].key_space);
    free(e->workers);
    free(e);
}

hush_status hush_engine_options_init(hush_engine_options *opts, unsigned version, hush_error *err)
{
    static const hush_engine_options defaults = HUSH_ENGINE_OPTIONS_INIT;
    return hush__options_init(opts, &defaults, sizeof defaults, "hush_engine_options", version,
                              HUSH_ENGINE_OPTIONS_VERSION, err);
}

hush_status hush_engine_new(const hush_engine_options *opts, hush_engine **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_engine *e = NULL;
    unsigned started = 0;

    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_engine_new: out is NULL");
    *out = NULL;
    if (opts != NULL)
        HUSH_TRY(hush__check_options_version("hush_engine_options", opts->version,
                                             HUSH_ENGINE_OPTIONS_VERSION, err));
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE((e = calloc(1, sizeof *e)) != NULL, HUSH_E_NOMEM, "out of memory");
    e->notify_fd = -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->job_ready, NULL);
    e->worker_count =
        opts != NULL && opts->workers > 0 ? opts->workers : HUSH_ENGINE_DEFAULT_WORKERS;
    HUSH_ENSURE((e->workers = calloc(e->worker_count, sizeof *e->workers)) != NULL, HUSH_E_NOMEM,
                "out of memory");
    HUSH_ENSURE((e->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) >= 0, HUSH_E_INTERNAL,
                "eventfd failed: %s", strerror(errno));
    HUSH_ENSURE((e->multi = curl_multi_init()) != NULL, HUSH_E_INTERNAL, "curl_multi_init failed");
    for (unsigned i = 0; i < e->worker_count; i++) {
        e->workers[i].engine = e;
        HUSH_TRY(hush_secbuf_new(HUSH_V1_KEY_BYTES, HUSH_V1_KEY_BYTES, HUSH_SECMEM_DEFAULT,
                                 &e->workers[i].key_space, err));
    }
    for (; started < e->worker_count; started++)
        HUSH_ENSURE(pthread_create(&e->workers[started].thread, NULL, worker_main,
                                   &e->workers[started]) == 0,
                    HUSH_E_INTERNAL, "could not start a worker thread");
    HUSH_ENSURE(pthread_create(&e->io_thread, NULL, io_main, e) == 0, HUSH_E_INTERNAL,
                "could not start the I/O thread");
    *out = e;
    e = NULL;
cleanup:
    if (e != NULL) {
        stop_workers(e, started);
        engine_release_resources(e);
    }
    return status;
}

void hush_engine_free(hush_engine *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    pthread_mutex_unlock(&e->lock);
    curl_multi_wakeup(e->multi);
    pthread_join(e->io_thread, NULL);
    stop_workers(e, e->worker_count);
    engine_release_resources(e);
}

int hush_engine_fd(const hush_engine *e) { return e != NULL ? e->notify_fd : -1; }

size_t hush_engine_drain(hush_engine *e, hush_call **calls, size_t max)
{
    size_t n = 0;
    hush_call *released = NULL;
    pthread_mutex_lock(&e->lock);
    while (e->completed != NULL && n < max) {
        hush_call *c = e->completed;
        e->completed = c->done_next;
        c->done_next = NULL;
        c->in_completed = false; /* a stream's later chunks announce it again */
        /* The queue's reference goes; the caller's stays, unless the caller
         * let go meanwhile, in which case the call is not theirs to see. */
        bool theirs = !atomic_load(&c->user_released);
        if (theirs && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
            /* Freed by the caller just now: ours was the last reference. Take
             * it back so the release below frees the call. */
            atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
            theirs = false;
        }
        if (theirs) {
            calls[n++] = c;
        } else {
            c->done_next = released; /* released after unlocking */
            released = c;
        }
    }
    if (e->completed == NULL) {
        e->completed_tail = NULL;
        uint64_t count;
        ssize_t ignored = read(e->notify_fd, &count, sizeof count); /* level back to "not readable" */
        (void)ignored;
    }
    pthread_mutex_unlock(&e->lock);
    while (released != NULL) {
        hush_call *next = released->done_next;
        hush__call_release(released);
        released = next;
    }
    return n;
}

/* ---- submitting --------------------------------------------------------- */

hush_status hush__engine_start(hush_engine *e, hush_call *call, hush_secbuf *request,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    call->engine = e;
    call->request = request; /* the call owns it now: freed with the call */
    hush__call_retain(call); /* the engine's, until finish() */
    if (!post(e, EV_START, call, HUSH_OK, NULL, NULL, NULL)) {
        hush__call_release(call);
        status = hush__fail(err, HUSH_E_CANCELLED, "the engine is shutting down (or out of memory)");
    }
    return status;
}

void hush__call_resume(hush_call *call)
{
    /* Called under the client's lock; a failed post leaves the call waiting
     * until it is cancelled, which is all that can be done without memory. */
    post(call->engine, EV_RESUME, call, HUSH_OK, NULL, NULL, NULL);
}

void hush__call_post_cancel(hush_call *call)
{
    post(call->engine, EV_CANCEL, call, HUSH_E_CANCELLED, NULL, NULL, NULL);
}
