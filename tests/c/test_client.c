/* test_client.c — the synchronous client (hush_client_complete) against the
 * NOMYO peer (tests/interop/nomyo_peer.py): the round trip and what the server
 * sees, HTTP status mapping, retries and Retry-After, the circuit breaker,
 * server-key and TLS pinning, limits, key directories, threads and TLS.
 * Where a test must count the POSTs of a failed call it runs the call on an
 * engine, whose hush_call_payload_id names it in the peer's /_stats. */
#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>

#include <openssl/rand.h>

#include "check.h"
#include "memscan.h"
#include "peer.h"

#define API_KEY "sk-test-123"
#define WAIT_MS 60000L

static peer http_peer;
static hush_keypair *shared_key; /* 2048 bits; saves most clients a key generation */
static hush_engine *engine;      /* for calls whose payload id a test needs */
static char tmp_dir[256];
static peer tls_peer, mtls_peer;
static bool tls_ready;

static const char *tmp_path(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

/* A fresh client of the http peer: the shared key, no retries, a short
 * backoff and a breaker that only opens when a test asks for it. */
static void base_options(hush_client_options *o)
{
    *o = (hush_client_options)HUSH_CLIENT_OPTIONS_INIT;
    o->base_url = http_peer.url;
    o->allow_http = true;
    o->client_key = shared_key;
    o->max_retries = 0;
    o->retry_base_ms = 10;
    o->breaker_threshold = 1000;
}

static hush_client *new_client(const hush_client_options *o)
{
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(o, &c, &err), &err);
    CHECK(c != NULL);
    return c;
}

/* A policy file pinning an AIK none of the peers has, or with no pin at
 * all: requiring attestation needs the former. */
static const char *policy_file(const char *name, const char *json)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(fputs(json, f) >= 0);
        CHECK(fclose(f) == 0);
    }
    return path;
}

static const char *pinning_policy(void)
{
    return policy_file("pinning-policy.json",
                       "{\"aik_fingerprints\": [\"sha256:"
                       "00000000000000000000000000000000000000000000000000000000000000aa\"]}");
}

/* One synchronous chat completion. */
static hush_status complete(hush_client *c, const char *content, const char *x_test,
                            const hush_call_options *co, hush_json_doc **doc, hush_error *err)
{
    *doc = NULL;
    hush_error_clear(err);
    hush_secbuf *req = chat_request(content, x_test);
    CHECK(req != NULL);
    if (c == NULL || req == NULL) {
        hush_secbuf_free(req);
        return HUSH_E_INTERNAL; /* already reported */
    }
    return hush_client_complete(c, req, co, doc, err);
}

/* Expect a call to succeed with the echo of `content`; returns the response. */
static hush_json_doc *complete_ok(hush_client *c, const char *content, const char *x_test,
                                  const hush_call_options *co)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_OK(complete(c, content, x_test, co, &doc, &err), &err);
    CHECK(doc != NULL);
    if (doc != NULL && !response_echoes(doc, content)) {
        const char *got = response_content(doc);
        fprintf(stderr, "  expected \"echo: %s\", got \"%s\"\n", content, got ? got : "(none)");
        CHECK(response_echoes(doc, content));
    }
    return doc;
}

/* The outcome of one call run on the engine. */
typedef struct outcome {
    hush_status status;
    hush_error err;
    char payload_id[64];
    unsigned attempts;
    hush_json_doc *doc;
    char *details; /* copy of hush_call_error_details, NUL-terminated, or NULL */
} outcome;

static void run_on_engine(hush_client *c, const char *content, const char *x_test,
                          const hush_call_options *co, outcome *out)
{
    memset(out, 0, sizeof *out);
    out->status = HUSH_E_INTERNAL;
    hush_secbuf *req = chat_request(content, x_test);
    CHECK(req != NULL);
    if (c == NULL || req == NULL) {
        hush_secbuf_free(req);
        return;
    }
    hush_call *call = NULL;
    hush_status st = hush_engine_submit(engine, c, req, co, NULL, &call, &out->err);
    if (st != HUSH_OK) {
        out->status = st;
        return;
    }
    CHECK_OK(hush_call_wait(call, WAIT_MS, &out->err), &out->err);
    const char *id = hush_call_payload_id(call);
    if (id != NULL)
        snprintf(out->payload_id, sizeof out->payload_id, "%s", id);
    out->attempts = hush_call_attempts(call);
    out->status = hush_call_result(call, &out->doc, &out->err);
    size_t len = 0;
    const char *details = hush_call_error_details(call, &len);
    if (details != NULL) {
        out->details = malloc(len + 1);
        if (out->details != NULL) {
            memcpy(out->details, details, len);
            out->details[len] = '\0';
        }
    }
    hush_call_free(call);
}

static void outcome_clear(outcome *out)
{
    hush_json_doc_free(out->doc);
    free(out->details);
    out->doc = NULL;
    out->details = NULL;
}

static const hush_json_value *seen(const hush_json_doc *doc, const char *key)
{
    return json_member2(doc, "x_seen", key);
}

static bool seen_is(const hush_json_doc *doc, const char *key, const char *want)
{
    const char *got = hush_json_string(seen(doc, key), NULL);
    if (got != NULL && strcmp(got, want) == 0)
        return true;
    fprintf(stderr, "  x_seen.%s: expected \"%s\", got \"%s\"\n", key, want,
            got ? got : "(not a string)");
    return false;
}

static bool seen_null(const hush_json_doc *doc, const char *key)
{
    const hush_json_value *v = seen(doc, key);
    return v != NULL && hush_json_type_of(v) == HUSH_JSON_NULL;
}

/* ---- the round trip ------------------------------------------------------ */

static void test_round_trip(void)
{
    hush_client_options o;
    base_options(&o);
    o.client_key = NULL; /* generated in the background, 2048 bits for speed */
    o.key_bits = 2048;
    o.api_key = API_KEY;
    o.security_tier = "high";
    hush_client *c = new_client(&o);
    hush_json_doc *doc = complete_ok(c, "hello", NULL, NULL);
    if (doc != NULL) {
        CHECK(strcmp(response_content(doc), "echo: hello") == 0);
        const char *model[] = {"model", NULL};
        const char *m = json_path_string(doc, model);
        CHECK(m != NULL && strcmp(m, "test-model") == 0);

        /* _metadata as nomyo adds it, over what the server put there. */
        const char *id = response_payload_id(doc);
        CHECK(looks_like_uuid4(id));
        /* The peer sends Unix seconds as an int, as NOMYO does: a number stays a number. */
        const hush_json_value *pa = json_member2(doc, "_metadata", "processed_at");
        CHECK(hush_json_type_of(pa) == HUSH_JSON_NUMBER && hush_json_is_integer(pa));
        const hush_json_value *enc = json_member2(doc, "_metadata", "is_encrypted");
        CHECK(hush_json_type_of(enc) == HUSH_JSON_BOOL && hush_json_bool(enc));
        const char *alg =
            hush_json_string(json_member2(doc, "_metadata", "encryption_algorithm"), NULL);
        CHECK(alg != NULL && strcmp(alg, "hybrid-aes256-rsa4096") == 0);
        const char *server = hush_json_string(json_member2(doc, "_metadata", "server"), NULL);
        CHECK(server != NULL && strcmp(server, "nomyo-peer") == 0);

        /* The payload id in _metadata is the X-Payload-ID the server saw. */
        const char *sid = hush_json_string(seen(doc, "payload_id"), NULL);
        CHECK(id != NULL && sid != NULL && strcmp(id, sid) == 0);
        const char *rid[] = {"id", NULL};
        const char *chat_id = json_path_string(doc, rid);
        CHECK(id != NULL && chat_id != NULL && strncmp(chat_id, "chatcmpl-", 9) == 0 &&
              strcmp(chat_id + 9, id) == 0);

        /* What the server saw. */
        CHECK(seen_is(doc, "content_type", "application/octet-stream"));
        CHECK(seen_is(doc, "authorization", "Bearer " API_KEY));
        CHECK(seen_is(doc, "security_tier", "high"));
        const char *ua = hush_json_string(seen(doc, "user_agent"), NULL);
        CHECK(ua != NULL && strncmp(ua, "hushcall/", 9) == 0);
        /* The request reached the server as it was written. */
        const hush_json_value *keys = seen(doc, "request_keys");
        bool has_model = false, has_messages = false;
        for (size_t i = 0; i < hush_json_length(keys); i++) {
            const char *k = hush_json_string(hush_json_array_get(keys, i), NULL);
            has_model |= k != NULL && strcmp(k, "model") == 0;
            has_messages |= k != NULL && strcmp(k, "messages") == 0;
        }
        CHECK(has_model && has_messages);
    }
    hush_json_doc_free(doc);

    /* A second call gets a new payload id. */
    hush_json_doc *doc2 = complete_ok(c, "hello again", NULL, NULL);
    const char *id2 = response_payload_id(doc2);
    CHECK(looks_like_uuid4(id2));
    hush_json_doc_free(doc2);

    /* The generated key is the size asked for. */
    char *pem = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_public_pem(c, &pem, &err), &err);
    hush_pubkey *pk = NULL;
    if (pem != NULL)
        CHECK_OK(hush_pubkey_from_pem(pem, strlen(pem), &pk, &err), &err);
    CHECK_EQ(hush_pubkey_bits(pk), 2048);
    hush_pubkey_free(pk);
    free(pem);
    hush_client_free(c);
}

static void test_no_api_key_no_tier(void)
{
    hush_client_options o;
    base_options(&o);
    hush_client *c = new_client(&o);
    hush_json_doc *doc = complete_ok(c, "anonymous", NULL, NULL);
    if (doc != NULL) {
        CHECK(seen_null(doc, "authorization"));
        CHECK(seen_null(doc, "security_tier"));
        CHECK(seen_is(doc, "content_type", "application/octet-stream"));
    }
    hush_json_doc_free(doc);
    hush_client_free(c);
}

static void test_call_overrides_win(void)
{
    hush_client_options o;
    base_options(&o);
    o.api_key = "client-key";
    o.security_tier = "standard";
    hush_client *c = new_client(&o);
    hush_call_options co = {.api_key = "call-key", .security_tier = "high"};
    hush_json_doc *doc = complete_ok(c, "overridden", NULL, &co);
    if (doc != NULL) {
        CHECK(seen_is(doc, "authorization", "Bearer call-key"));
        CHECK(seen_is(doc, "security_tier", "high"));
    }
    hush_json_doc_free(doc);
    /* The override was for that call only. */
    doc = complete_ok(c, "not overridden", NULL, NULL);
    if (doc != NULL) {
        CHECK(seen_is(doc, "authorization", "Bearer client-key"));
        CHECK(seen_is(doc, "security_tier", "standard"));
    }
    hush_json_doc_free(doc);
    /* Overriding one field keeps the client's other one. */
    hush_call_options only_key = {.api_key = "other-call-key"};
    doc = complete_ok(c, "half overridden", NULL, &only_key);
    if (doc != NULL) {
        CHECK(seen_is(doc, "authorization", "Bearer other-call-key"));
        CHECK(seen_is(doc, "security_tier", "standard"));
    }
    hush_json_doc_free(doc);
    hush_client_free(c);
}

/* A peer that checks the bearer: a wrong key is a 401, the right override passes. */
static void test_api_key_checked_by_server(void)
{
    peer keyed;
    const char *args[] = {"--bits", "2048", "--api-key", "right-key", NULL};
    bool started = peer_start(&keyed, false, args);
    CHECK(started);
    if (!started)
        return;
    hush_client_options o;
    base_options(&o);
    o.base_url = keyed.url;
    o.api_key = "wrong-key";
    hush_client *c = new_client(&o);
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "who am i", NULL, NULL, &doc, &err), HUSH_E_UNAUTHORIZED, &err);
    CHECK_EQ(err.http_status, 401);
    CHECK(doc == NULL);
    hush_call_options co = {.api_key = "right-key"};
    hush_json_doc_free(complete_ok(c, "right key", NULL, &co));
    hush_client_free(c);

    o.api_key = NULL;
    c = new_client(&o);
    CHECK_STATUS(complete(c, "no key", NULL, NULL, &doc, &err), HUSH_E_UNAUTHORIZED, &err);
    CHECK_EQ(err.http_status, 401);
    hush_client_free(c);
    CHECK(peer_stop(&keyed));
}

/* ---- HTTP errors ---------------------------------------------------------- */

static void test_http_status_mapping(void)
{
    static const struct {
        int http;
        hush_status want;
    } cases[] = {
        {400, HUSH_E_BAD_REQUEST}, {401, HUSH_E_UNAUTHORIZED}, {403, HUSH_E_FORBIDDEN},
        {404, HUSH_E_HTTP},        {429, HUSH_E_RATE_LIMITED}, {500, HUSH_E_SERVER},
        {503, HUSH_E_UNAVAILABLE}, {418, HUSH_E_HTTP},
    };
    hush_client_options o;
    base_options(&o);
    hush_client *c = new_client(&o);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char x_test[128];
        snprintf(x_test, sizeof x_test, "{\"status\": %d, \"detail\": \"injected %d\"}",
                 cases[i].http, cases[i].http);
        hush_json_doc *doc = NULL;
        hush_error err;
        hush_status st = complete(c, "status", x_test, NULL, &doc, &err);
        if (st != cases[i].want || err.http_status != cases[i].http)
            fprintf(stderr, "  HTTP %d: got %s, http_status %d (%s)\n", cases[i].http,
                    hush_strerror(st), err.http_status, err.message);
        CHECK_EQ(st, cases[i].want);
        CHECK_EQ(err.code, cases[i].want);
        CHECK_EQ(err.http_status, cases[i].http);
        CHECK(doc == NULL);
        hush_json_doc_free(doc);
    }
    hush_client_free(c);
}

static void test_error_details(void)
{
    hush_client_options o;
    base_options(&o);
    hush_client *c = new_client(&o);
    static const struct {
        int http;
        hush_status want;
    } cases[] = {{400, HUSH_E_BAD_REQUEST}, {503, HUSH_E_UNAVAILABLE}, {418, HUSH_E_HTTP}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char x_test[128];
        snprintf(x_test, sizeof x_test,
                 "{\"status\": %d, \"detail\": \"model field wrong %d\"}", cases[i].http,
                 cases[i].http);
        char want[64];
        snprintf(want, sizeof want, "model field wrong %d", cases[i].http);
        outcome r;
        run_on_engine(c, "details", x_test, NULL, &r);
        CHECK_STATUS(r.status, cases[i].want, &r.err);
        CHECK_EQ(r.err.http_status, cases[i].http);
        CHECK(r.doc == NULL);
        CHECK(r.details != NULL && strstr(r.details, want) != NULL);
        if (r.details == NULL || strstr(r.details, want) == NULL)
            fprintf(stderr, "  details: %s\n", r.details ? r.details : "(NULL)");
        outcome_clear(&r);
    }
    hush_client_free(c);
}

/* The synchronous form hands back the finished call, details and all. */
static void test_complete_call_keeps_details(void)
{
    hush_client_options o;
    base_options(&o);
    hush_client *c = new_client(&o);
    hush_call *call = NULL;
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_secbuf *req =
        chat_request("sync details", "{\"status\": 401, \"detail\": \"key 7 revoked\"}");
    CHECK_OK(hush_client_complete_call(c, req, NULL, &call, &err), &err);
    CHECK(call != NULL && hush_call_done(call));
    CHECK_STATUS(hush_call_result(call, &doc, &err), HUSH_E_UNAUTHORIZED, &err);
    CHECK(doc == NULL);
    size_t len = 0;
    const char *details = hush_call_error_details(call, &len);
    CHECK(details != NULL && len > 0 && strstr(details, "key 7 revoked") != NULL);
    hush_call_free(call);
    /* A call that cannot start is refused as such, with no call. */
    CHECK_STATUS(hush_client_complete_call(c, NULL, NULL, &call, &err), HUSH_E_ARGUMENT, &err);
    CHECK(call == NULL);
    req = chat_request("ok", NULL);
    CHECK_OK(hush_client_complete_call(c, req, NULL, &call, &err), &err);
    CHECK_OK(hush_call_result(call, &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, "ok"));
    hush_json_doc_free(doc);
    hush_call_free(call);
    hush_client_free(c);
}

static void test_non_json_error_body(void)
{
    hush_client_options o;
    base_options(&o);
    hush_client *c = new_client(&o);
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "html", "{\"status\": 503, \"body\": \"<html>gateway down</html>\"}",
                          NULL, &doc, &err),
                 HUSH_E_UNAVAILABLE, &err);
    CHECK_EQ(err.http_status, 503);
    CHECK_STATUS(complete(c, "plain", "{\"status\": 403, \"body\": \"forbidden, plainly\"}", NULL,
                          &doc, &err),
                 HUSH_E_FORBIDDEN, &err);
    CHECK_EQ(err.http_status, 403);
    CHECK_STATUS(complete(c, "empty", "{\"status\": 500, \"body\": \"\"}", NULL, &doc, &err),
                 HUSH_E_SERVER, &err);
    CHECK_EQ(err.http_status, 500);
    CHECK(doc == NULL);
    hush_client_free(c);
}

/* ---- retries -------------------------------------------------------------- */

static hush_client *retrying_client(unsigned retries)
{
    hush_client_options o;
    base_options(&o);
    o.max_retries = retries;
    return new_client(&o);
}

static void test_retry_429_then_success(void)
{
    hush_client *c = retrying_client(2);
    hush_json_doc *doc =
        complete_ok(c, "after 429", "{\"status\": 429, \"detail\": \"slow\", \"times\": 2}", NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, response_payload_id(doc)), 3);
    hush_json_doc_free(doc);
    hush_client_free(c);
}

static void test_retry_429_exhausted(void)
{
    hush_client *c = retrying_client(2);
    outcome r;
    run_on_engine(c, "429 thrice", "{\"status\": 429, \"detail\": \"slow\", \"times\": 3}", NULL,
                  &r);
    CHECK_STATUS(r.status, HUSH_E_RATE_LIMITED, &r.err);
    CHECK_EQ(r.err.http_status, 429);
    CHECK_EQ(r.attempts, 3);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 3);
    outcome_clear(&r);
    /* The synchronous form gives the same answer. */
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "429 thrice", "{\"status\": 429, \"times\": 3}", NULL, &doc, &err),
                 HUSH_E_RATE_LIMITED, &err);
    CHECK(doc == NULL);
    hush_client_free(c);
}

static void test_retry_503(void)
{
    hush_client *c = retrying_client(2);
    hush_json_doc *doc = complete_ok(c, "after 503", "{\"status\": 503, \"times\": 2}", NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, response_payload_id(doc)), 3);
    hush_json_doc_free(doc);
    outcome r;
    run_on_engine(c, "503 thrice", "{\"status\": 503, \"times\": 3}", NULL, &r);
    CHECK_STATUS(r.status, HUSH_E_UNAVAILABLE, &r.err);
    CHECK_EQ(r.err.http_status, 503);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 3);
    outcome_clear(&r);
    hush_client_free(c);
}

/* 500 and 400 are answers, not transient failures: one POST, although a
 * retry would have succeeded (times 1). */
static void test_no_retry_500_400(void)
{
    hush_client *c = retrying_client(2);
    outcome r;
    run_on_engine(c, "500 once", "{\"status\": 500, \"times\": 1}", NULL, &r);
    CHECK_STATUS(r.status, HUSH_E_SERVER, &r.err);
    CHECK_EQ(r.attempts, 1);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 1);
    outcome_clear(&r);
    run_on_engine(c, "400 once", "{\"status\": 400, \"times\": 1}", NULL, &r);
    CHECK_STATUS(r.status, HUSH_E_BAD_REQUEST, &r.err);
    CHECK_EQ(r.attempts, 1);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 1);
    outcome_clear(&r);
    hush_client_free(c);
}

static void test_retry_after_drop(void)
{
    hush_client *c = retrying_client(2);
    hush_json_doc *doc = complete_ok(c, "after drop", "{\"drop\": true, \"times\": 1}", NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, response_payload_id(doc)), 2);
    hush_json_doc_free(doc);
    hush_client_free(c);
}

/* With a 10 ms backoff only Retry-After can put a second between the two
 * POSTs; measured on the server's clock. */
static void test_retry_after_honoured(void)
{
    hush_client *c = retrying_client(2);
    hush_json_doc *doc = complete_ok(
        c, "retry after", "{\"status\": 429, \"retry_after\": 1, \"times\": 1}", NULL);
    double at[4] = {0};
    CHECK_EQ(peer_arrivals(&http_peer, response_payload_id(doc), at, 4), 2);
    if (at[1] - at[0] < 0.9)
        fprintf(stderr, "  the retry came %.3f s after the 429\n", at[1] - at[0]);
    CHECK(at[1] - at[0] >= 0.9);
    hush_json_doc_free(doc);
    hush_client_free(c);
}

/* ---- circuit breaker ------------------------------------------------------ */

static void test_circuit_breaker(void)
{
    hush_client_options o;
    base_options(&o);
    o.breaker_threshold = 3;
    o.breaker_cooldown_ms = 2000; /* wide enough for a loaded sanitizer run */
    hush_client *c = new_client(&o);
    hush_json_doc *doc = NULL;
    hush_error err;
    /* Counted before the failures, so nothing slow stands between the third
     * failure and the calls that must find the circuit open. */
    long long before = peer_stat(&http_peer, "completions");
    CHECK(before >= 0);
    for (int i = 0; i < 3; i++) {
        CHECK_STATUS(complete(c, "failing", "{\"status\": 503}", NULL, &doc, &err),
                     HUSH_E_UNAVAILABLE, &err);
    }
    CHECK_STATUS(complete(c, "fails fast", NULL, NULL, &doc, &err), HUSH_E_CIRCUIT_OPEN, &err);
    CHECK(doc == NULL);
    /* On the engine too: refused at submit. */
    hush_call *call = NULL;
    hush_secbuf *req = chat_request("fails fast", NULL);
    CHECK_STATUS(hush_engine_submit(engine, c, req, NULL, NULL, &call, &err),
                 HUSH_E_CIRCUIT_OPEN, &err);
    CHECK(call == NULL);
    hush_call_free(call);
    before += 3; /* the three failures reached the peer; the refused calls did not */
    CHECK_EQ(peer_stat(&http_peer, "completions"), before);

    sleep_ms(2300);
    hush_json_doc_free(complete_ok(c, "probe", NULL, NULL));   /* the probe */
    hush_json_doc_free(complete_ok(c, "closed", NULL, NULL));  /* closed again */
    CHECK_EQ(peer_stat(&http_peer, "completions"), before + 2);
    hush_client_free(c);
}

/* ---- the server's envelope key ------------------------------------------- */

static void test_server_key_pin_wrong(void)
{
    hush_client_options o;
    base_options(&o);
    o.server_key_fingerprint =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    hush_client *c = new_client(&o);
    outcome r;
    run_on_engine(c, "pinned wrong", NULL, NULL, &r);
    CHECK_STATUS(r.status, HUSH_E_PIN, &r.err);
    CHECK(r.doc == NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 0);
    outcome_clear(&r);
    /* The synchronous form too. */
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "pinned wrong", NULL, NULL, &doc, &err), HUSH_E_PIN, &err);
    hush_client_free(c);
}

static void test_server_key_pin_right(void)
{
    char *pem = NULL;
    size_t len = 0;
    CHECK_EQ(peer_http(&http_peer, "GET", "/pki/public_key", NULL, &pem, &len), 200);
    hush_pubkey *pk = NULL;
    hush_error err = {0};
    char fp[HUSH_FINGERPRINT_LEN] = "";
    if (pem != NULL) {
        CHECK_OK(hush_pubkey_from_pem(pem, len, &pk, &err), &err);
        CHECK_OK(hush_pubkey_fingerprint(pk, fp, &err), &err);
    }
    hush_client_options o;
    base_options(&o);
    o.server_key_fingerprint = fp;
    hush_client *c = new_client(&o);
    hush_json_doc_free(complete_ok(c, "pinned right", NULL, NULL));
    hush_client_free(c);
    hush_pubkey_free(pk);
    free(pem);
}

static void test_server_key_pin_malformed(void)
{
    static const char *const bad[] = {
        "sha256:xyz",
        "sha256:00000000000000000000000000000000000000000000000000000000000000",   /* 62 */
        "sha256:000000000000000000000000000000000000000000000000000000000000000000", /* 66 */
        "md5:00000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "sha256:000000000000000000000000000000000000000000000000000000000000000g",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hush_client_options o;
        base_options(&o);
        o.server_key_fingerprint = bad[i];
        hush_client *c = NULL;
        hush_error err = {0};
        hush_status st = hush_client_new(&o, &c, &err);
        if (st != HUSH_E_ARGUMENT)
            fprintf(stderr, "  fingerprint \"%s\" gave %s\n", bad[i], hush_strerror(st));
        CHECK_EQ(st, HUSH_E_ARGUMENT);
        CHECK(c == NULL);
        hush_client_free(c);
    }
}

static void test_bad_server_keys(void)
{
    static const char *const modes[] = {"garbage", "small", "ec"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        CHECK(peer_reset(&http_peer));
        char control[64];
        snprintf(control, sizeof control, "{\"pubkey_mode\": \"%s\"}", modes[i]);
        CHECK(peer_control(&http_peer, control));
        hush_client_options o;
        base_options(&o);
        o.max_retries = 2;
        hush_client *c = new_client(&o);
        hush_json_doc *doc = NULL;
        hush_error err;
        hush_status st = complete(c, "bad key", NULL, NULL, &doc, &err);
        if (st != HUSH_E_KEY)
            fprintf(stderr, "  pubkey_mode %s gave %s (%s)\n", modes[i], hush_strerror(st),
                    err.message);
        CHECK_EQ(st, HUSH_E_KEY);
        CHECK(doc == NULL);
        CHECK(peer_stat(&http_peer, "pubkey_fetches") >= 1);
        CHECK_EQ(peer_stat(&http_peer, "completions"), 0);
        hush_json_doc_free(doc);
        hush_client_free(c);
    }
    CHECK(peer_reset(&http_peer));
}

static void test_pubkey_fetch_retried(void)
{
    CHECK(peer_reset(&http_peer));
    CHECK(peer_control(&http_peer, "{\"pubkey_fail_times\": 1}"));
    hush_client *c = retrying_client(1);
    hush_json_doc_free(complete_ok(c, "key on second try", NULL, NULL));
    CHECK_EQ(peer_stat(&http_peer, "pubkey_fetches"), 2);
    CHECK_EQ(peer_stat(&http_peer, "completions"), 1);
    /* The key is cached: a second call fetches nothing. */
    hush_json_doc_free(complete_ok(c, "cached key", NULL, NULL));
    CHECK_EQ(peer_stat(&http_peer, "pubkey_fetches"), 2);
    hush_client_free(c);
    CHECK(peer_reset(&http_peer));
}

/* ---- refused configurations ---------------------------------------------- */

static void test_http_refused(void)
{
    hush_client_options o;
    base_options(&o);
    o.allow_http = false;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK(c == NULL);
    CHECK(strstr(err.message, "allow_http") != NULL);
    hush_client_free(c);
}

/* A tier refused by hush_client_new, and as a per-call override by the
 * synchronous call and at hush_engine_submit. */
static void check_tier_refused(const char *tier)
{
    hush_client_options o;
    base_options(&o);
    o.security_tier = tier;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK(c == NULL);
    hush_client_free(c);

    base_options(&o);
    c = new_client(&o);
    hush_call_options co = {.security_tier = tier};
    hush_json_doc *doc = NULL;
    CHECK_STATUS(complete(c, tier, NULL, &co, &doc, &err), HUSH_E_ARGUMENT, &err);
    CHECK(doc == NULL);
    hush_call *call = NULL;
    CHECK_STATUS(hush_engine_submit(engine, c, chat_request(tier, NULL), &co, NULL, &call, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(call == NULL);
    hush_call_free(call);
    hush_client_free(c);
}

static void test_maximum_tier_needs_https(void) { check_tier_refused("maximum"); }

static void test_unknown_tier_refused(void) { check_tier_refused("ultra"); }

/* Only a quote by a pinned AIK can verify, so requiring attestation (or the
 * maximum tier) without a policy that pins one is refused up front. */
static void test_required_attestation_needs_a_pin(void)
{
    const char *unpinned = policy_file("unpinned-policy.json", "{\"pcrs\": {}}");
    for (int with_policy = 0; with_policy < 2; with_policy++) {
        hush_client_options o;
        base_options(&o);
        o.require_attestation = true;
        o.attestation_policy = with_policy ? unpinned : NULL;
        hush_client *c = NULL;
        hush_error err = {0};
        CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
        CHECK(c == NULL && strstr(err.message, "require_attestation") != NULL &&
              strstr(err.message, "aik_fingerprints") != NULL);
    }
    /* The maximum tier (https, so the tier check passes), for the client and per call. */
    hush_client_options o;
    base_options(&o);
    o.base_url = "https://127.0.0.1:9";
    o.security_tier = "maximum";
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK(c == NULL && strstr(err.message, "maximum") != NULL &&
          strstr(err.message, "aik_fingerprints") != NULL);
    o.security_tier = NULL;
    c = new_client(&o);
    hush_call_options co = {.security_tier = "maximum"};
    hush_json_doc *doc = NULL;
    CHECK_STATUS(complete(c, "never sent", NULL, &co, &doc, &err), HUSH_E_ARGUMENT, &err);
    CHECK(doc == NULL && strstr(err.message, "aik_fingerprints") != NULL);
    hush_client_free(c);
    /* With a pin both are accepted. */
    o.attestation_policy = pinning_policy();
    o.require_attestation = true;
    o.security_tier = "maximum";
    c = new_client(&o);
    hush_client_free(c);
}

static void test_oversized_request(void)
{
    CHECK(peer_reset(&http_peer));
    hush_client_options o;
    base_options(&o);
    o.max_request_bytes = 1000;
    hush_client *c = new_client(&o);
    char big[2001];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    hush_secbuf *req = request_from_string(big);
    CHECK_EQ(hush_secbuf_len(req), 2000);
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    CHECK_STATUS(hush_client_complete(c, req, NULL, &doc, &err), HUSH_E_LIMIT, &err);
    CHECK(doc == NULL);
    CHECK_EQ(peer_stat(&http_peer, "completions"), 0);
    CHECK_EQ(peer_stat(&http_peer, "pubkey_fetches"), 0);
    /* A request under the limit still goes. */
    hush_json_doc_free(complete_ok(c, "small enough", NULL, NULL));
    hush_client_free(c);
}

/* ---- envelope faults, timeouts, connections ------------------------------- */

static void test_envelope_faults(void)
{
    hush_client *c = retrying_client(2);
    outcome r;
    run_on_engine(c, "garbage", "{\"garbage\": true}", NULL, &r);
    CHECK_STATUS(r.status, HUSH_E_FORMAT, &r.err);
    CHECK(r.doc == NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 1); /* not retried */
    outcome_clear(&r);
    run_on_engine(c, "wrong key", "{\"wrong_key\": true}", NULL, &r);
    CHECK_STATUS(r.status, HUSH_E_AUTH, &r.err);
    CHECK(r.doc == NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, r.payload_id), 1);
    outcome_clear(&r);
    /* The synchronous form maps them the same. */
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "garbage", "{\"garbage\": true}", NULL, &doc, &err), HUSH_E_FORMAT,
                 &err);
    CHECK_STATUS(complete(c, "wrong key", "{\"wrong_key\": true}", NULL, &doc, &err),
                 HUSH_E_AUTH, &err);
    CHECK(doc == NULL);
    hush_client_free(c);
}

static void test_timeout(void)
{
    hush_client_options o;
    base_options(&o);
    o.timeout_ms = 300;
    hush_client *c = new_client(&o);
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "slow", "{\"delay_ms\": 2000}", NULL, &doc, &err), HUSH_E_TIMEOUT,
                 &err);
    CHECK(doc == NULL);
    hush_client_free(c);
}

static void test_connection_refused(void)
{
    int port = unused_port();
    CHECK(port > 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    hush_client_options o;
    base_options(&o);
    o.base_url = url;
    hush_client *c = new_client(&o);
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "nobody home", NULL, NULL, &doc, &err), HUSH_E_CONNECTION, &err);
    CHECK(doc == NULL);
    hush_client_free(c);
}

/* ---- key directories ------------------------------------------------------ */

static void test_key_dir(void)
{
    char parent[] = "/tmp/hush-keydir-XXXXXX";
    CHECK(mkdtemp(parent) != NULL);
    char dir[128], priv[160], pub[160];
    snprintf(dir, sizeof dir, "%s/keys", parent);
    snprintf(priv, sizeof priv, "%s/" HUSH_PRIVATE_KEY_FILE, dir);
    snprintf(pub, sizeof pub, "%s/" HUSH_PUBLIC_KEY_FILE, dir);

    hush_client_options o;
    base_options(&o);
    o.client_key = NULL;
    o.key_dir = dir;
    o.key_password = "dir-password";
    o.key_bits = 2048;
    hush_client *a = new_client(&o);
    hush_json_doc_free(complete_ok(a, "with a key dir", NULL, NULL));
    struct stat st;
    CHECK(stat(priv, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600);
    CHECK(stat(pub, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0644);
    char *pem_a = NULL, *pem_b = NULL;
    hush_error err = {0};
    if (a != NULL)
        CHECK_OK(hush_client_public_pem(a, &pem_a, &err), &err);
    hush_client_free(a);

    /* The same directory gives the same key. */
    hush_client *b = new_client(&o);
    if (b != NULL)
        CHECK_OK(hush_client_public_pem(b, &pem_b, &err), &err);
    CHECK(pem_a != NULL && pem_b != NULL && strcmp(pem_a, pem_b) == 0);
    hush_json_doc_free(complete_ok(b, "same key", NULL, NULL));
    hush_client_free(b);
    /* And the key on disk is that key. */
    size_t len = 0;
    char *on_disk = read_text_file(pub, &len);
    hush_pubkey *disk_key = NULL, *client_pub = NULL;
    char fp_disk[HUSH_FINGERPRINT_LEN] = "d", fp_client[HUSH_FINGERPRINT_LEN] = "c";
    if (on_disk != NULL && pem_a != NULL &&
        hush_pubkey_from_pem(on_disk, len, &disk_key, &err) == HUSH_OK &&
        hush_pubkey_from_pem(pem_a, strlen(pem_a), &client_pub, &err) == HUSH_OK) {
        CHECK_OK(hush_pubkey_fingerprint(disk_key, fp_disk, &err), &err);
        CHECK_OK(hush_pubkey_fingerprint(client_pub, fp_client, &err), &err);
    }
    CHECK(strcmp(fp_disk, fp_client) == 0);
    hush_pubkey_free(disk_key);
    hush_pubkey_free(client_pub);
    free(on_disk);

    /* A wrong password for that directory fails at once. */
    o.key_password = "not-the-password";
    hush_client *c = NULL;
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_PASSWORD, &err);
    CHECK(c == NULL);
    hush_client_free(c);
    free(pem_a);
    free(pem_b);
    remove_tree(parent);
}

/* ---- threads -------------------------------------------------------------- */

#define THREADS 8
#define CALLS_PER_THREAD 16

typedef struct thread_job {
    hush_client *client;
    int index;
    int ok;
    hush_status first_failure;
} thread_job;

/* No CHECK here: the harness's counter is not thread-safe. */
static void *thread_main(void *arg)
{
    thread_job *job = arg;
    for (int i = 0; i < CALLS_PER_THREAD; i++) {
        char content[64];
        snprintf(content, sizeof content, "thread %d call %d", job->index, i);
        hush_secbuf *req = chat_request(content, NULL);
        hush_json_doc *doc = NULL;
        hush_error err = {0};
        hush_status st = req != NULL ? hush_client_complete(job->client, req, NULL, &doc, &err)
                                     : HUSH_E_NOMEM;
        if (st == HUSH_OK && response_echoes(doc, content))
            job->ok++;
        else if (job->first_failure == HUSH_OK)
            job->first_failure = st != HUSH_OK ? st : HUSH_E_INTERNAL;
        hush_json_doc_free(doc);
    }
    return NULL;
}

static void test_threads(void)
{
    hush_client_options o;
    base_options(&o);
    hush_client *c = new_client(&o);
    if (c == NULL)
        return;
    pthread_t threads[THREADS];
    thread_job jobs[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (thread_job){.client = c, .index = t, .ok = 0, .first_failure = HUSH_OK};
        CHECK(pthread_create(&threads[t], NULL, thread_main, &jobs[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        if (jobs[t].ok != CALLS_PER_THREAD)
            fprintf(stderr, "  thread %d: %d of %d right, first failure %s\n", t, jobs[t].ok,
                    CALLS_PER_THREAD, hush_strerror(jobs[t].first_failure));
        CHECK_EQ(jobs[t].ok, CALLS_PER_THREAD);
    }
    hush_client_free(c);
}

/* ---- TLS ------------------------------------------------------------------ */

static void tls_options(hush_client_options *o, const peer *p)
{
    base_options(o);
    o->base_url = p->url;
    o->allow_http = false;
}

static void test_tls_ca_file(void)
{
    CHECK(tls_ready);
    hush_client_options o;
    tls_options(&o, &tls_peer);
    o.ca_file = tmp_path("ca.pem");
    o.attestation_policy = pinning_policy(); /* "maximum" requires one */
    hush_client *c = new_client(&o);
    hush_json_doc_free(complete_ok(c, "over tls", NULL, NULL));
    /* "maximum" is sent over https, as a call override ... */
    hush_call_options co = {.security_tier = "maximum"};
    hush_json_doc *doc = NULL;
    hush_error err;
    long long before = peer_stat(&tls_peer, "completions");
    /* ... and reaches the server, whose answer (with no TPM quote) is then
     * refused unread: "maximum" releases only attested answers. */
    CHECK_STATUS(complete(c, "maximum over tls", NULL, &co, &doc, &err), HUSH_E_ATTESTATION, &err);
    CHECK(doc == NULL && strstr(err.message, "no attestation") != NULL);
    CHECK_EQ(peer_stat(&tls_peer, "completions"), before + 1);
    hush_client_free(c);
    /* The same for the client's own tier. */
    o.security_tier = "maximum";
    c = new_client(&o);
    CHECK_STATUS(complete(c, "maximum client", NULL, NULL, &doc, &err), HUSH_E_ATTESTATION, &err);
    CHECK(doc == NULL);
    hush_client_free(c);
}

static void tls_expect(hush_client_options *o, hush_status want)
{
    hush_client *c = new_client(o);
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "tls refused", NULL, NULL, &doc, &err), want, &err);
    CHECK(doc == NULL);
    hush_json_doc_free(doc);
    hush_client_free(c);
}

static void test_tls_other_ca(void)
{
    CHECK(tls_ready);
    hush_client_options o;
    tls_options(&o, &tls_peer);
    o.ca_file = tmp_path("other_ca.pem");
    tls_expect(&o, HUSH_E_TLS);
}

static void test_tls_system_store(void)
{
    CHECK(tls_ready);
    hush_client_options o;
    tls_options(&o, &tls_peer);
    tls_expect(&o, HUSH_E_TLS);
}

static void test_tls_pin(void)
{
    CHECK(tls_ready);
    char *pin = read_text_file(tmp_path("server_pin.txt"), NULL);
    CHECK(pin != NULL && strncmp(pin, "sha256//", 8) == 0);
    if (pin == NULL)
        return;
    pin[strcspn(pin, " \r\n")] = '\0';
    hush_client_options o;
    tls_options(&o, &tls_peer);
    o.ca_file = tmp_path("ca.pem");
    o.tls_pin = pin;
    hush_client *c = new_client(&o);
    hush_json_doc_free(complete_ok(c, "pinned tls", NULL, NULL));
    hush_client_free(c);
    /* The pin of 32 zero bytes matches nothing. */
    o.tls_pin = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    tls_expect(&o, HUSH_E_PIN);
    free(pin);
}

static void test_mutual_tls(void)
{
    CHECK(tls_ready);
    hush_client_options o;
    tls_options(&o, &mtls_peer);
    o.ca_file = tmp_path("ca.pem");
    hush_client *c = new_client(&o);
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_status st = complete(c, "no client cert", NULL, NULL, &doc, &err);
    if (st != HUSH_E_TLS && st != HUSH_E_CONNECTION)
        fprintf(stderr, "  without a client certificate: %s (%s)\n", hush_strerror(st),
                err.message);
    CHECK(st == HUSH_E_TLS || st == HUSH_E_CONNECTION);
    CHECK(doc == NULL);
    hush_client_free(c);

    o.client_cert = tmp_path("client.pem");
    o.client_cert_key = tmp_path("client.key");
    c = new_client(&o);
    hush_json_doc_free(complete_ok(c, "with client cert", NULL, NULL));
    hush_client_free(c);
}

/* ---- credentials leave no copy --------------------------------------------- */

#define CANARY_PREFIX "sk-canary-"
#define CANARY_LEN (sizeof CANARY_PREFIX - 1 + 32)
/* glibc writes its free-list links over the first 16 bytes of a freed
 * block: the scan looks for the rest, which a copy freed unwiped keeps. */
#define CANARY_TAIL_AT 16

/* An API key made at run time, with its masked form (memscan.h) so that
 * the scan never finds the test's own reference. The masked form ends
 * with the NUL: hushcall's copies are C strings, while libcurl's own wire
 * buffer has "\r\n" after the key (docs/security.md says what that means). */
static bool make_canary(char key[CANARY_LEN + 1], unsigned char masked[CANARY_LEN + 1])
{
    unsigned char random[16];
    if (RAND_bytes(random, sizeof random) != 1)
        return false;
    memcpy(key, CANARY_PREFIX, sizeof CANARY_PREFIX - 1);
    for (size_t i = 0; i < sizeof random; i++)
        snprintf(key + sizeof CANARY_PREFIX - 1 + 2 * i, 3, "%02x", random[i]);
    for (size_t i = 0; i <= CANARY_LEN; i++)
        masked[i] = (unsigned char)(key[i] ^ MEMSCAN_MASK);
    return true;
}

static long canary_copies(const unsigned char masked[CANARY_LEN + 1])
{
    return memscan_count(masked + CANARY_TAIL_AT, CANARY_LEN + 1 - CANARY_TAIL_AT);
}

/* The client's copy, the call's copy, the "Authorization: Bearer" line
 * and curl's header list holding it: all wiped once the client is freed. */
static void test_api_key_copies_wiped(void)
{
    char client_key[CANARY_LEN + 1], call_key[CANARY_LEN + 1];
    unsigned char client_masked[CANARY_LEN + 1], call_masked[CANARY_LEN + 1];
    CHECK(make_canary(client_key, client_masked) && make_canary(call_key, call_masked));
    hush_client_options o;
    base_options(&o);
    o.api_key = client_key;
    hush_client *c = new_client(&o);
    hush_memzero(client_key, sizeof client_key);
    CHECK_EQ(canary_copies(client_masked), 1); /* the client's own: the scan sees it */
    hush_json_doc_free(complete_ok(c, "first key", NULL, NULL));
    hush_call_options co = {.api_key = call_key};
    hush_json_doc_free(complete_ok(c, "second key", NULL, &co));
    hush_memzero(call_key, sizeof call_key);
    hush_client_free(c);
    CHECK_EQ(canary_copies(client_masked), 0);
    CHECK_EQ(canary_copies(call_masked), 0);
}

/* ---- defaults ------------------------------------------------------------- */

static void test_default_options(void)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    CHECK(o.base_url == NULL && o.api_key == NULL && o.client_key == NULL);
    o.base_url = http_peer.url;
    o.allow_http = true;
    hush_client *c = new_client(&o);
    hush_json_doc_free(complete_ok(c, "defaults", NULL, NULL));
    char *pem = NULL;
    hush_error err = {0};
    if (c != NULL)
        CHECK_OK(hush_client_public_pem(c, &pem, &err), &err);
    hush_pubkey *pk = NULL;
    if (pem != NULL)
        CHECK_OK(hush_pubkey_from_pem(pem, strlen(pem), &pk, &err), &err);
    CHECK_EQ(hush_pubkey_bits(pk), 4096);
    hush_pubkey_free(pk);
    free(pem);
    hush_client_free(c);
}

/* ---- versioned options ------------------------------------------------------- */

/* The defaults client.h documents, field by field. */
static void check_client_defaults(const hush_client_options *o)
{
    CHECK_EQ(o->version, 2);
    CHECK(o->base_url == NULL && o->api_key == NULL && !o->allow_http);
    CHECK_EQ(o->connect_timeout_ms, 10000);
    CHECK_EQ(o->timeout_ms, 300000);
    CHECK_EQ(o->max_retries, 2);
    CHECK_EQ(o->retry_base_ms, 500);
    CHECK_EQ(o->retry_max_ms, 30000);
    CHECK(o->ca_file == NULL && o->ca_dir == NULL && o->client_cert == NULL &&
          o->client_cert_key == NULL && o->tls_pin == NULL && o->server_key_fingerprint == NULL);
    CHECK(o->client_key == NULL && o->key_dir == NULL && o->key_password == NULL);
    CHECK_EQ(o->key_bits, 4096);
    CHECK(o->security_tier == NULL && !o->require_attestation && o->attestation_policy == NULL);
    CHECK(o->user_agent == NULL);
    CHECK_EQ(o->max_request_bytes, 10 * 1024 * 1024);
    CHECK_EQ(o->max_response_bytes, 16 * 1024 * 1024);
    CHECK_EQ(o->breaker_threshold, 5);
    CHECK_EQ(o->breaker_cooldown_ms, 30000);
    CHECK_EQ(o->secmem_flags, 0);
    CHECK(o->protocol == NULL && !o->require_pq && o->v2_key_fingerprint == NULL);
}

static void test_options_init(void)
{
    hush_client_options from_macro = HUSH_CLIENT_OPTIONS_INIT;
    check_client_defaults(&from_macro);
    hush_client_options o;
    memset(&o, 0xa5, sizeof o);
    hush_error err = {0};
    CHECK_OK(hush_client_options_init(&o, HUSH_CLIENT_OPTIONS_VERSION, &err), &err);
    check_client_defaults(&o);

    CHECK_STATUS(hush_client_options_init(NULL, HUSH_CLIENT_OPTIONS_VERSION, &err),
                 HUSH_E_ARGUMENT, &err);
    const unsigned unknown[] = {0, HUSH_CLIENT_OPTIONS_VERSION + 1};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        o.timeout_ms = 1234;
        CHECK_STATUS(hush_client_options_init(&o, unknown[i], &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_client_options") != NULL);
        CHECK_EQ(o.timeout_ms, 1234); /* untouched: its size is not known */
    }

    /* A version 1 caller's struct ends before `protocol`: nothing past it is written. */
    memset(&o, 0xa5, sizeof o);
    CHECK_OK(hush_client_options_init(&o, 1, &err), &err);
    CHECK_EQ(o.version, 1);
    CHECK_EQ(o.timeout_ms, 300000);
    const unsigned char *tail = (const unsigned char *)&o + offsetof(hush_client_options, protocol);
    CHECK(tail[0] == 0xa5 && tail[sizeof o.protocol - 1] == 0xa5);
}

/* A struct never filled by HUSH_CLIENT_OPTIONS_INIT (version 0), or filled
 * by a newer header, is refused by name; the right version then works. */
static void test_options_version_checked(void)
{
    hush_client_options o;
    base_options(&o);
    const unsigned unknown[] = {0, HUSH_CLIENT_OPTIONS_VERSION + 1};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        o.version = unknown[i];
        hush_client *c = (hush_client *)&o; /* must be set to NULL on failure */
        hush_error err = {0};
        CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_client_options") != NULL);
        CHECK(c == NULL);
    }
    o.version = HUSH_CLIENT_OPTIONS_VERSION;
    hush_client *c = new_client(&o);
    hush_json_doc_free(complete_ok(c, "versioned", NULL, NULL));
    hush_client_free(c);
}

/* ---- a key still being made when the client is freed ----------------------- */

/* The threads of this process, from /proc/self/task. */
static unsigned thread_count(void)
{
    unsigned n = 0;
    DIR *dir = opendir("/proc/self/task");
    CHECK(dir != NULL);
    if (dir == NULL)
        return 0;
    for (struct dirent *d; (d = readdir(dir)) != NULL;)
        n += d->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* Freed while its RSA-4096 key is being made, with no call that could need
 * it, a client stops the generation and joins its thread: none is left
 * inside OpenSSL when the process exits (whose clean-up would pull
 * OpenSSL's state from under it). */
static void test_freed_client_abandons_key_generation(void)
{
    hush_client_options o;
    base_options(&o);
    o.client_key = NULL;
    o.key_bits = 4096;
    unsigned before = thread_count();
    hush_client *c = new_client(&o);
    CHECK(thread_count() == before + 1); /* the generator: 4096 bits take a while */
    hush_client_free(c);
    CHECK_EQ(thread_count(), before);
}

/* A call in flight still gets the key it waits for after the caller freed
 * its client: the generation is only abandoned when nothing needs it. */
static void test_freed_client_finishes_key_for_calls(void)
{
    hush_client_options o;
    base_options(&o);
    o.client_key = NULL;
    o.key_bits = 2048;
    hush_client *c = new_client(&o);
    hush_secbuf *req = chat_request("the key still comes", NULL);
    hush_call *call = NULL;
    hush_error err = {0};
    CHECK_OK(hush_engine_submit(engine, c, req, NULL, NULL, &call, &err), &err);
    hush_client_free(c);
    CHECK_OK(hush_call_wait(call, WAIT_MS, &err), &err);
    hush_json_doc *doc = NULL;
    CHECK_OK(hush_call_result(call, &doc, &err), &err);
    CHECK(doc != NULL);
    hush_json_doc_free(doc);
    hush_call_free(call);
}

/* ---- main ----------------------------------------------------------------- */

static bool start_tls_peers(void)
{
    if (!peer_make_test_ca(tmp_dir))
        return false;
    const char *tls_args[] = {"--bits", "2048", "--tls-cert", tmp_path("server.pem"),
                              "--tls-key", tmp_path("server.key"), NULL};
    if (!peer_start(&tls_peer, true, tls_args))
        return false;
    snprintf(tls_peer.ca_file, sizeof tls_peer.ca_file, "%s", tmp_path("ca.pem"));
    const char *mtls_args[] = {"--bits", "2048", "--tls-cert", tmp_path("server.pem"),
                               "--tls-key", tmp_path("server.key"), "--tls-client-ca",
                               tmp_path("ca.pem"), NULL};
    if (!peer_start(&mtls_peer, true, mtls_args))
        return false;
    snprintf(mtls_peer.ca_file, sizeof mtls_peer.ca_file, "%s", tmp_path("ca.pem"));
    return true;
}

int main(void)
{
    int failed_setup = 0;
    hush_error err = {0};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/hush-client-XXXXXX");
    if (mkdtemp(tmp_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    const char *args[] = {"--bits", "2048", NULL};
    if (!peer_start(&http_peer, false, args)) {
        fprintf(stderr, "the NOMYO peer did not start: is `make deps` done?\n");
        remove_tree(tmp_dir);
        return 1;
    }
    if (hush_keypair_generate(2048, &shared_key, &err) != HUSH_OK ||
        hush_engine_new(NULL, &engine, &err) != HUSH_OK) {
        fprintf(stderr, "setup failed: %s\n", err.message);
        peer_stop(&http_peer);
        hush_keypair_free(shared_key);
        remove_tree(tmp_dir);
        return 1;
    }
    tls_ready = start_tls_peers();
    if (!tls_ready)
        fprintf(stderr, "the TLS peers did not start; the TLS tests fail\n");

    RUN_TEST(test_round_trip);
    RUN_TEST(test_no_api_key_no_tier);
    RUN_TEST(test_api_key_copies_wiped);
    RUN_TEST(test_call_overrides_win);
    RUN_TEST(test_api_key_checked_by_server);
    RUN_TEST(test_http_status_mapping);
    RUN_TEST(test_error_details);
    RUN_TEST(test_complete_call_keeps_details);
    RUN_TEST(test_non_json_error_body);
    RUN_TEST(test_retry_429_then_success);
    RUN_TEST(test_retry_429_exhausted);
    RUN_TEST(test_retry_503);
    RUN_TEST(test_no_retry_500_400);
    RUN_TEST(test_retry_after_drop);
    RUN_TEST(test_retry_after_honoured);
    RUN_TEST(test_circuit_breaker);
    RUN_TEST(test_server_key_pin_wrong);
    RUN_TEST(test_server_key_pin_right);
    RUN_TEST(test_server_key_pin_malformed);
    RUN_TEST(test_bad_server_keys);
    RUN_TEST(test_pubkey_fetch_retried);
    RUN_TEST(test_http_refused);
    RUN_TEST(test_maximum_tier_needs_https);
    RUN_TEST(test_required_attestation_needs_a_pin);
    RUN_TEST(test_unknown_tier_refused);
    RUN_TEST(test_oversized_request);
    RUN_TEST(test_envelope_faults);
    /* Leaves a delayed request running on the peer: after every test that
     * compares the peer's global counters. */
    RUN_TEST(test_timeout);
    RUN_TEST(test_connection_refused);
    RUN_TEST(test_key_dir);
    RUN_TEST(test_threads);
    RUN_TEST(test_tls_ca_file);
    RUN_TEST(test_tls_other_ca);
    RUN_TEST(test_tls_system_store);
    RUN_TEST(test_tls_pin);
    RUN_TEST(test_mutual_tls);
    RUN_TEST(test_default_options);
    RUN_TEST(test_options_init);
    RUN_TEST(test_options_version_checked);
    RUN_TEST(test_freed_client_abandons_key_generation);
    RUN_TEST(test_freed_client_finishes_key_for_calls);

    hush_engine_free(engine);
    hush_keypair_free(shared_key);
    if (!peer_stop(&http_peer))
        failed_setup++;
    if (tls_ready && !peer_stop(&tls_peer))
        failed_setup++;
    if (tls_ready && !peer_stop(&mtls_peer))
        failed_setup++;
    if (!tls_ready) {
        peer_stop(&tls_peer);
        peer_stop(&mtls_peer);
        failed_setup++;
    }
    remove_tree(tmp_dir);
    curl_global_cleanup();
    int rc = check_report();
    return failed_setup != 0 ? 1 : rc;
}
