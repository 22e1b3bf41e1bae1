/* engine.c — the request pipeline: one I/O thread on curl_multi, a worker
 * pool for the envelope cryptography, and an eventfd announcing completions.
 * Every call, synchronous or not, goes through here.
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

#include "hushcall/client.h"
#include "hushcall/engine.h"
#include "hushcall/envelope_v1.h"
#include "hushcall/json.h"
#include "hushcall/secmem.h"
#include "hushcall/version.h"
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
    bool is_fetch;
    unsigned char *body;
    size_t len, cap, limit;
    bool too_large;
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

/* ---- calls -------------------------------------------------------------- */

static hush_call *call_retain(hush_call *call)
{
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    return call;
}

static void call_release(hush_call *call)
{
    if (call == NULL || atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1)
        return;
    hush_secbuf_free(call->request);
    hush_secbuf_free(call->package);
    hush_pubkey_free(call->server_key);
    hush_json_doc_free(call->response);
    free(call->error_details);
    hush__free_secret_string(call->api_key);
    free(call->tier);
    hush__free_secret_string(call->base_url); /* a URL may carry user:password@ */
    hush__client_release(call->client);
    pthread_cond_destroy(&call->finished);
    pthread_mutex_destroy(&call->lock);
    free(call);
}

/* A random (version 4) UUID, as X-Payload-ID. */
static hush_status make_payload_id(char out[HUSH_PAYLOAD_ID_LEN + 1], hush_error *err)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return hush__fail_openssl(err, HUSH_E_CRYPTO, "RAND_bytes");
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, HUSH_PAYLOAD_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return HUSH_OK;
}

/* ---- queues ------------------------------------------------------------- */

static void free_event(event *ev)
{
    hush_secbuf_free(ev->package);
    hush_json_doc_free(ev->response);
    call_release(ev->call);
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
    ev->call = call_retain(call);
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
    call_release(j->call);
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
    hush__client_release(t->client);
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

/* End a call: release what it holds in the pipeline, publish the outcome,
 * announce it, drop the engine's reference. */
static void finish(hush_engine *e, hush_call *call, hush_status status, const hush_error *error,
                   hush_json_doc *response)
{
    free_transfer(e, call->transfer); /* still attached only when cancelled mid-exchange */
    call->transfer = NULL;
    unlink_live(e, call);
    if (call->stage == STAGE_KEYS)
        hush__client_forget(call->client, call);
    if (call->stage == STAGE_FETCHING || (call->stage == STAGE_BACKOFF && call->backoff_fetch))
        hush__client_fetch_done(call->client, call, NULL, NULL); /* hand the fetch over */
    call->stage = STAGE_DONE;
    hush_secbuf_free(call->request);
    call->request = NULL;
    hush_secbuf_free(call->package);
    call->package = NULL;
    int http_status = error != NULL ? error->http_status : 0;
    hush__client_record(call->client, status, http_status, call->is_probe);

    pthread_mutex_lock(&call->lock);
    call->done = true;
    call->status = status;
    if (error != NULL && status != HUSH_OK)
        call->error = *error;
    else
        hush_error_clear(&call->error);
    call->response = response;
    /* Queued for drain (engine lock inside the call's, as the lock order
     * allows) before anyone can see it done: once hush_call_wait returns,
     * the fd is readable, and a drained call is always done. */
    if (call->announce && !atomic_load(&call->user_released)) {
        pthread_mutex_lock(&e->lock);
        call_retain(call);
        if (e->completed_tail != NULL)
            e->completed_tail->done_next = call;
        else
            e->completed = call;
        e->completed_tail = call;
        uint64_t one = 1;
        ssize_t ignored = write(e->notify_fd, &one, sizeof one); /* cannot overflow: reset on drain */
        (void)ignored;
        pthread_mutex_unlock(&e->lock);
    }
    pthread_cond_broadcast(&call->finished);
    pthread_mutex_unlock(&call->lock);
    call_release(call);
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

void hush__free_header_list(struct curl_slist *list)
{
    for (struct curl_slist *line = list; line != NULL; line = line->next)
        hush__wipe_string(line->data);
    curl_slist_free_all(list);
}

/* The line may carry the API key: it is wiped once curl has copied it. */
static bool add_header(struct curl_slist **list, const char *name, const char *value)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *grown = NULL;
    if (n > 0 && (size_t)n < sizeof line)
        grown = curl_slist_append(*list, line);
    hush_memzero(line, sizeof line);
    if (grown == NULL)
        return false;
    *list = grown;
    return true;
}

/* Options every exchange with the endpoint gets: timeouts, TLS, no redirects. */
static CURLcode set_common_options(CURL *easy, const hush_client_options *o, transfer *t)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    if (rc == CURLE_OK) \
        rc = curl_easy_setopt(easy, opt, val)
    SET(CURLOPT_PRIVATE, t);
    SET(CURLOPT_SHARE, t->call->client->share);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    SET(CURLOPT_USERAGENT, o->user_agent != NULL ? o->user_agent : "hushcall/" HUSHCALL_VERSION);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (o->ca_file != NULL)
        SET(CURLOPT_CAINFO, o->ca_file);
    if (o->ca_dir != NULL)
        SET(CURLOPT_CAPATH, o->ca_dir);
    if (o->client_cert != NULL)
        SET(CURLOPT_SSLCERT, o->client_cert);
    if (o->client_cert_key != NULL)
        SET(CURLOPT_SSLKEY, o->client_cert_key);
    if (o->tls_pin != NULL)
        SET(CURLOPT_PINNEDPUBLICKEY, o->tls_pin);
#undef SET
    return rc;
}

/* POST the sealed package (or GET the server key) on the I/O thread. */
static void start_transfer(hush_engine *e, hush_call *call, bool is_fetch)
{
    const hush_client_options *o = &call->client->opts;
    char url[2048];
    transfer *t = calloc(1, sizeof *t);
    if (t == NULL) {
        call->stage = is_fetch ? STAGE_FETCHING : STAGE_SENDING;
        fail_with(e, call, HUSH_E_NOMEM, "out of memory");
        return;
    }
    /* The stage first: should setting up fail, finish() must know this call
     * held the key fetch, and hand it over. */
    call->stage = is_fetch ? STAGE_FETCHING : STAGE_SENDING;
    t->call = call;
    t->client = hush__client_retain(call->client);
    t->is_fetch = is_fetch;
    t->limit = is_fetch ? KEY_BODY_MAX : o->max_response_bytes / 3 * 4 + PACKAGE_OVERHEAD;
    call->transfer = t;
    snprintf(url, sizeof url, "%s%s", call->base_url,
             is_fetch ? "/pki/public_key" : "/v1/chat/secure_completion");
    bool ok = (t->easy = curl_easy_init()) != NULL &&
              set_common_options(t->easy, o, t) == CURLE_OK &&
              curl_easy_setopt(t->easy, CURLOPT_URL, url) == CURLE_OK;
    hush_memzero(url, sizeof url); /* curl copied it, user:password@ included */
    if (ok && is_fetch) {
        call->fetch_attempts++;
        ok = curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    } else if (ok) {
        call->attempts++;
        pthread_mutex_lock(&call->client->lock); /* the key header is set once, under the lock */
        struct curl_slist *keyed = curl_slist_append(NULL, call->client->key_header);
        pthread_mutex_unlock(&call->client->lock);
        t->headers = keyed;
        ok = keyed != NULL && add_header(&t->headers, "X-Payload-ID", call->payload_id) &&
             add_header(&t->headers, "Content-Type", "application/octet-stream") &&
             add_header(&t->headers, "Expect", "") /* no 100-continue round trip */ &&
             (call->tier == NULL || add_header(&t->headers, "X-Security-Tier", call->tier)) &&
             /* a gateway quotes a standard-tier answer only when asked */
             (!call->client->opts.require_attestation ||
              add_header(&t->headers, "X-Attestation", "required"));
        if (ok && call->api_key != NULL) {
            char bearer[512];
            int n = snprintf(bearer, sizeof bearer, "Bearer %s", call->api_key);
            ok = n > 0 && (size_t)n < sizeof bearer && add_header(&t->headers, "Authorization", bearer);
            hush_memzero(bearer, sizeof bearer);
        }
        ok = ok && curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers) == CURLE_OK &&
             curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, hush_secbuf_data(call->package)) ==
                 CURLE_OK &&
             curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                              (curl_off_t)hush_secbuf_len(call->package)) == CURLE_OK;
    }
    if (!ok || curl_multi_add_handle(e->multi, t->easy) != CURLM_OK)
        fail_with(e, call, HUSH_E_INTERNAL, "could not set up the HTTP transfer");
}

/* ---- classifying an exchange ------------------------------------------ */

static hush_status status_for_http(long code)
{
    switch (code) {
    case 400: return HUSH_E_BAD_REQUEST;
    case 401: return HUSH_E_UNAUTHORIZED;
    case 403: return HUSH_E_FORBIDDEN;
    case 429: return HUSH_E_RATE_LIMITED;
    case 500: return HUSH_E_SERVER;
    case 503: return HUSH_E_UNAVAILABLE;
    default: return HUSH_E_HTTP;
    }
}

static hush_status status_for_curl(CURLcode rc, const transfer *t)
{
    if (t->too_large)
        return HUSH_E_LIMIT;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return HUSH_E_TIMEOUT;
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: return HUSH_E_PIN;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED: return HUSH_E_TLS;
    case CURLE_OUT_OF_MEMORY: return HUSH_E_NOMEM;
    default: return HUSH_E_CONNECTION;
    }
}

/* Retry-After in milliseconds (delta seconds or an HTTP date), or -1. */
static long retry_after_ms(CURL *easy)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return -1;
    char *end;
    long seconds = strtol(h->value, &end, 10);
    if (end != h->value && *end == '\0' && seconds >= 0)
        return seconds > LONG_MAX / 1000 ? LONG_MAX : seconds * 1000;
    time_t when = curl_getdate(h->value, NULL);
    if (when < 0)
        return -1;
    double delta = difftime(when, time(NULL));
    return delta > 0 ? (long)(delta * 1000) : 0;
}

/* Schedule a retry; false when none is left or the server asks for a
 * longer wait than retry_max_ms allows (retrying early would be rude). */
static bool schedule_retry(hush_call *call, bool is_fetch, long server_wait_ms)
{
    const hush_client_options *o = &call->client->opts;
    unsigned done = is_fetch ? call->fetch_attempts : call->attempts;
    if (done > o->max_retries)
        return false;
    if (server_wait_ms > o->retry_max_ms)
        return false;
    /* Exponential backoff with jitter: half the step fixed, half random. */
    long step = o->retry_base_ms;
    for (unsigned i = 1; i < done && step < o->retry_max_ms; i++)
        step *= 2;
    if (step > o->retry_max_ms)
        step = o->retry_max_ms;
    unsigned short r = 0;
    RAND_bytes((unsigned char *)&r, sizeof r);
    long wait = step / 2 + (long)((double)(step - step / 2) * r / 65535.0);
    if (server_wait_ms > wait)
        wait = server_wait_ms;
    call->wake_at = hush__after_ms(hush__now(), wait);
    call->backoff_fetch = is_fetch;
    call->stage = STAGE_BACKOFF;
    return true;
}

/* The fetched body as the server key, checked against the pin. */
static hush_status accept_server_key(hush_call *call, const transfer *t, hush_pubkey **key,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    char fp[HUSH_FINGERPRINT_LEN];
    const char *pin = call->client->opts.server_key_fingerprint;
    if (hush_pubkey_from_pem(t->body, t->len, key, err) != HUSH_OK)
        return hush__fail(err, HUSH_E_KEY, "the server's /pki/public_key is not a usable RSA key "
                          "(%s)", err != NULL ? err->message : "");
    if (pin == NULL)
        return HUSH_OK;
    HUSH_TRY(hush_pubkey_fingerprint(*key, fp, err));
    HUSH_ENSURE(strcmp(fp, pin) == 0, HUSH_E_PIN,
                "the server's envelope key does not match the pinned fingerprint; "
                "nothing was sent");
cleanup:
    if (status != HUSH_OK) {
        hush_pubkey_free(*key);
        *key = NULL;
    }
    return status;
}

static void post_seal_job(hush_engine *e, hush_call *call);

static void fetch_done(hush_engine *e, hush_call *call, transfer *t, hush_status status,
                       hush_error *err, long wait_ms, bool retryable)
{
    hush_pubkey *key = NULL;
    if (status == HUSH_OK)
        status = accept_server_key(call, t, &key, err);
    if (status != HUSH_OK && retryable && schedule_retry(call, true, wait_ms))
        return;
    call->stage = STAGE_KEYS; /* no longer the fetcher, whatever happens next */
    hush__client_fetch_done(call->client, call, key, status == HUSH_OK ? NULL : err);
    if (status == HUSH_OK)
        post_seal_job(e, call);
    else
        fail(e, call, status, err);
}

static void post_open_job(hush_engine *e, hush_call *call, transfer *t);

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
        status = status_for_curl(rc, t);
        retryable = status == HUSH_E_CONNECTION;
        if (status == HUSH_E_LIMIT)
            status = hush__fail(&err, status, "the server's answer exceeds %zu bytes", t->limit);
        else
            status = hush__fail(&err, status, "%s: %s", curl_easy_strerror(rc),
                                t->errbuf[0] ? t->errbuf : "no detail");
    } else if (http != 200) {
        status = status_for_http(http);
        retryable = http == 429 || http == 503;
        wait_ms = retry_after_ms(t->easy);
        status = hush__fail(&err, status, "the server answered HTTP %ld (%s)", http,
                   hush_strerror(status));
        err.http_status = (int)http;
    }

    if (t->is_fetch) {
        fetch_done(e, call, t, status, &err, wait_ms, retryable);
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
    j->call = call_retain(call);
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
    j->call = call_retain(call);
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
    hush_status status = hush__client_keys_for(call->client, call, &wait, &fetch, &err);
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
        call->package = ev->package;
        ev->package = NULL;
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
        if (c->stage == STAGE_BACKOFF && hush__ms_between(now, c->wake_at) <= 0)
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
    const hush_client_options *o = &call->client->opts;
    hush_error err;
    hush_error_clear(&err);
    hush_json_doc *doc = NULL;
    hush__attest_rule rule = {
        .policy = call->client->attest_policy,
        .required = o->require_attestation ||
                    (call->tier != NULL && strcmp(call->tier, "maximum") == 0),
    };
    hush_status status = hush__response_open(call->client->key, j->body, j->body_len,
                                             o->max_response_bytes, call->payload_id, &rule,
                                             o->secmem_flags, &doc, &err);
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
        if (j->kind == JOB_SEAL)
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
        call_release(c);
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
    hush_status status = HUSH_OK;
    HUSH_ENSURE(opts != NULL, HUSH_E_ARGUMENT, "hush_engine_options_init: opts is NULL");
    HUSH_TRY(hush__check_options_version("hush_engine_options", version,
                                         HUSH_ENGINE_OPTIONS_VERSION, err));
    *opts = (hush_engine_options)HUSH_ENGINE_OPTIONS_INIT;
cleanup:
    return status;
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
        call_release(released);
        released = next;
    }
    return n;
}

/* ---- submitting --------------------------------------------------------- */

hush_status hush__engine_submit(hush_engine *e, hush_client *client, hush_secbuf *request,
                                const hush_call_options *opts, void *user_data, bool announce,
                                hush_call **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_call *call = NULL;
    bool is_probe = false;

    HUSH_ENSURE(e != NULL && client != NULL && request != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_engine_submit: NULL argument");
    *out = NULL;
    HUSH_ENSURE(hush_secbuf_len(request) <= client->opts.max_request_bytes, HUSH_E_LIMIT,
                "request of %zu bytes exceeds the limit of %zu bytes; nothing was sent",
                hush_secbuf_len(request), client->opts.max_request_bytes);
    HUSH_ENSURE((call = calloc(1, sizeof *call)) != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&call->refs, 2); /* the caller's, and the engine's until finish() */
    atomic_init(&call->user_released, false);
    pthread_mutex_init(&call->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&call->finished, &attr);
    pthread_condattr_destroy(&attr);
    call->engine = e;
    call->client = hush__client_retain(client);
    call->user_data = user_data;
    call->announce = announce;
    call->stage = STAGE_QUEUED;
    HUSH_TRY(hush__client_call_settings(client, opts, call, err));
    HUSH_TRY(make_payload_id(call->payload_id, err));
    HUSH_TRY(hush__client_admit(client, &is_probe, err));
    call->is_probe = is_probe;
    call->request = request;
    request = NULL;

    if (!post(e, EV_START, call, HUSH_OK, NULL, NULL, NULL)) {
        hush__client_record(client, HUSH_E_CANCELLED, 0, is_probe);
        status = hush__fail(err, HUSH_E_CANCELLED, "the engine is shutting down (or out of memory)");
        goto cleanup;
    }
    *out = call;
    call = NULL;
cleanup:
    hush_secbuf_free(request);
    if (call != NULL) {
        atomic_store(&call->refs, 1);
        call_release(call);
    }
    return status;
}

hush_status hush_engine_submit(hush_engine *e, hush_client *client, hush_secbuf *request,
                               const hush_call_options *opts, void *user_data, hush_call **out,
                               hush_error *err)
{
    return hush__engine_submit(e, client, request, opts, user_data, true, out, err);
}

void hush__call_resume(hush_call *call)
{
    /* Called under the client's lock; a failed post leaves the call waiting
     * until it is cancelled, which is all that can be done without memory. */
    post(call->engine, EV_RESUME, call, HUSH_OK, NULL, NULL, NULL);
}

/* ---- calls, for the caller --------------------------------------------- */

bool hush_call_done(hush_call *call)
{
    if (call == NULL)
        return false;
    pthread_mutex_lock(&call->lock);
    bool done = call->done;
    pthread_mutex_unlock(&call->lock);
    return done;
}

hush_status hush_call_wait(hush_call *call, long timeout_ms, hush_error *err)
{
    if (call == NULL)
        return hush__fail(err, HUSH_E_ARGUMENT, "hush_call_wait: call is NULL");
    struct timespec deadline = hush__after_ms(hush__now(), timeout_ms > 0 ? timeout_ms : 0);
    hush_status status = HUSH_OK;
    pthread_mutex_lock(&call->lock);
    while (!call->done && status == HUSH_OK) {
        if (timeout_ms < 0)
            pthread_cond_wait(&call->finished, &call->lock);
        else if (pthread_cond_timedwait(&call->finished, &call->lock, &deadline) == ETIMEDOUT &&
                 !call->done)
            status = hush__fail(err, HUSH_E_TIMEOUT, "the call is not done after %ld ms",
                                timeout_ms);
    }
    pthread_mutex_unlock(&call->lock);
    return status;
}

hush_status hush_call_result(hush_call *call, hush_json_doc **response, hush_error *err)
{
    if (call == NULL)
        return hush__fail(err, HUSH_E_ARGUMENT, "hush_call_result: call is NULL");
    if (response != NULL)
        *response = NULL;
    pthread_mutex_lock(&call->lock);
    hush_status status = call->done ? call->status : HUSH_E_ARGUMENT;
    if (!call->done)
        status = hush__fail(err, HUSH_E_ARGUMENT, "the call is not done yet");
    else if (status != HUSH_OK && err != NULL)
        *err = call->error;
    else if (err != NULL)
        hush_error_clear(err);
    if (call->done && status == HUSH_OK && response != NULL) {
        *response = call->response;
        call->response = NULL;
    }
    pthread_mutex_unlock(&call->lock);
    return status;
}

const char *hush_call_error_details(hush_call *call, size_t *len)
{
    /* Once done, the details are final: read without the lock. */
    if (!hush_call_done(call) || call->error_details == NULL)
        return NULL;
    if (len != NULL)
        *len = call->error_details_len;
    return call->error_details;
}

const char *hush_call_payload_id(const hush_call *call) { return call ? call->payload_id : NULL; }
void *hush_call_user_data(hush_call *call) { return call ? call->user_data : NULL; }

unsigned hush_call_attempts(hush_call *call)
{
    if (call == NULL)
        return 0;
    /* Written by the I/O thread; final once the call is done. */
    pthread_mutex_lock(&call->lock);
    unsigned attempts = call->done ? call->attempts : 0;
    pthread_mutex_unlock(&call->lock);
    return attempts;
}

void hush_call_cancel(hush_call *call)
{
    if (call == NULL)
        return;
    /* Posting under the call's lock: the call cannot finish meanwhile, so
     * its engine is still there to take the event. */
    pthread_mutex_lock(&call->lock);
    if (!call->done)
        post(call->engine, EV_CANCEL, call, HUSH_E_CANCELLED, NULL, NULL, NULL);
    pthread_mutex_unlock(&call->lock);
}

void hush_call_free(hush_call *call)
{
    if (call == NULL)
        return;
    atomic_store(&call->user_released, true);
    hush_call_cancel(call);
    call_release(call);
}
