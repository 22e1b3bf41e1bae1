/* test_engine.c — the asynchronous engine against the NOMYO peer
 * (tests/interop/nomyo_peer.py): hundreds of calls in flight collected
 * through the engine's fd, cancellation, waiting with a timeout, shutdown
 * with calls outstanding, calls freed before they finish, limits at
 * submit, and what a call reports about itself. */
#include <poll.h>
#include <pthread.h>

#include "check.h"
#include "peer.h"

#define WAIT_MS 60000L
#define MANY 256

static peer http_peer;
static hush_keypair *shared_key; /* 2048 bits, for the extra clients */
static hush_client *client;      /* key_bits 2048, two retries, 10 ms backoff */

static hush_engine *new_engine(unsigned workers)
{
    hush_engine *e = NULL;
    hush_error err = {0};
    hush_engine_options eo = HUSH_ENGINE_OPTIONS_INIT;
    eo.workers = workers;
    CHECK_OK(hush_engine_new(workers != 0 ? &eo : NULL, &e, &err), &err);
    CHECK(e != NULL);
    if (e != NULL)
        CHECK(hush_engine_fd(e) >= 0);
    return e;
}

static hush_call *submit(hush_engine *e, hush_client *c, const char *content, const char *x_test,
                         void *user_data)
{
    hush_secbuf *req = chat_request(content, x_test);
    CHECK(req != NULL);
    if (e == NULL || c == NULL || req == NULL) {
        hush_secbuf_free(req);
        return NULL;
    }
    hush_call *call = NULL;
    hush_error err = {0};
    CHECK_OK(hush_engine_submit(e, c, req, NULL, user_data, &call, &err), &err);
    CHECK(call != NULL);
    return call;
}

static bool fd_readable(hush_engine *e, int timeout_ms)
{
    struct pollfd pfd = {.fd = hush_engine_fd(e), .events = POLLIN};
    int rc;
    do {
        rc = poll(&pfd, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    return rc > 0 && (pfd.revents & POLLIN) != 0;
}

/* Expect a done call to have succeeded with the echo of `content`. */
static void check_call_echo(hush_call *call, const char *content)
{
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    CHECK(hush_call_done(call));
    CHECK_OK(hush_call_result(call, &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, content));
    hush_json_doc_free(doc);
}

/* ---- many calls on one engine -------------------------------------------- */

typedef struct slot {
    int index;
    bool drained;
} slot;

static void test_many_calls(void)
{
    hush_engine *e = new_engine(0);
    if (e == NULL)
        return;
    static slot slots[MANY];
    static hush_call *calls[MANY];
    size_t submitted = 0;
    for (int i = 0; i < MANY; i++) {
        char content[32];
        snprintf(content, sizeof content, "call %d", i);
        slots[i] = (slot){.index = i, .drained = false};
        calls[i] = submit(e, client, content, NULL, &slots[i]);
        if (calls[i] != NULL)
            submitted++;
    }
    CHECK_EQ(submitted, MANY);

    size_t done = 0, failed = 0, stray = 0;
    long long deadline = now_ms() + 180000;
    while (done < submitted && now_ms() < deadline) {
        if (!fd_readable(e, 1000))
            continue;
        hush_call *batch[64];
        size_t n = hush_engine_drain(e, batch, 64);
        for (size_t j = 0; j < n; j++) {
            slot *s = hush_call_user_data(batch[j]);
            if (s < slots || s >= slots + MANY || s->drained || calls[s->index] != batch[j]) {
                stray++; /* not ours, or announced twice: leave it alone */
                continue;
            }
            s->drained = true;
            char content[32];
            snprintf(content, sizeof content, "call %d", s->index);
            hush_json_doc *doc = NULL;
            hush_error err = {0};
            hush_status st = hush_call_result(batch[j], &doc, &err);
            if (!hush_call_done(batch[j]) || st != HUSH_OK || !response_echoes(doc, content)) {
                if (failed++ < 5)
                    fprintf(stderr, "  call %d: %s (%s)\n", s->index, hush_strerror(st),
                            err.message);
            }
            hush_json_doc_free(doc);
            hush_call_free(batch[j]);
            calls[s->index] = NULL;
            done++;
        }
    }
    CHECK_EQ(done, submitted);
    CHECK_EQ(failed, 0);
    CHECK_EQ(stray, 0);
    /* Everything drained: the fd is quiet and there is nothing more. */
    hush_call *extra[4];
    CHECK(!fd_readable(e, 0));
    CHECK_EQ(hush_engine_drain(e, extra, 4), 0);
    for (int i = 0; i < MANY; i++)
        hush_call_free(calls[i]); /* only after a failure */
    hush_engine_free(e);
}

/* ---- cancellation --------------------------------------------------------- */

static void test_cancel(void)
{
    hush_engine *e = new_engine(1);
    hush_call *call = submit(e, client, "cancel me", "{\"delay_ms\": 5000}", NULL);
    if (call == NULL) {
        hush_engine_free(e);
        return;
    }
    sleep_ms(100);
    CHECK(!hush_call_done(call));
    hush_call_cancel(call);
    hush_error err = {0};
    /* Done long before the 5 s delay could have ended. */
    CHECK_OK(hush_call_wait(call, 3000, &err), &err);
    CHECK(hush_call_done(call));
    hush_json_doc *doc = NULL;
    CHECK_STATUS(hush_call_result(call, &doc, &err), HUSH_E_CANCELLED, &err);
    CHECK(doc == NULL);
    /* A cancelled call the caller still holds is announced like any other. */
    CHECK(fd_readable(e, 3000));
    hush_call *batch[4];
    size_t n = hush_engine_drain(e, batch, 4);
    CHECK_EQ(n, 1);
    CHECK(n >= 1 && batch[0] == call);
    CHECK(!fd_readable(e, 0));
    /* Cancelling a done call changes nothing. */
    hush_call_cancel(call);
    CHECK_STATUS(hush_call_result(call, &doc, &err), HUSH_E_CANCELLED, &err);
    hush_call_free(call);

    /* Cancelled at once, before anything was sent. */
    call = submit(e, client, "cancel at once", NULL, NULL);
    hush_call_cancel(call);
    CHECK_OK(hush_call_wait(call, 3000, &err), &err);
    hush_status st = hush_call_result(call, &doc, &err);
    /* It may have won the race and finished; then it finished properly. */
    if (st == HUSH_OK)
        CHECK(doc != NULL && response_echoes(doc, "cancel at once"));
    else
        CHECK_STATUS(st, HUSH_E_CANCELLED, &err);
    hush_json_doc_free(doc);
    hush_call_free(call);
    hush_engine_free(e);
}

static void test_wait_timeout(void)
{
    hush_engine *e = new_engine(0);
    hush_call *call = submit(e, client, "slow answer", "{\"delay_ms\": 1500}", NULL);
    if (call == NULL) {
        hush_engine_free(e);
        return;
    }
    hush_error err = {0};
    CHECK_STATUS(hush_call_wait(call, 100, &err), HUSH_E_TIMEOUT, &err);
    CHECK(!hush_call_done(call));
    hush_json_doc *doc = NULL;
    CHECK_STATUS(hush_call_result(call, &doc, &err), HUSH_E_ARGUMENT, &err); /* not done yet */
    CHECK(doc == NULL);
    /* The call went on and completes. */
    CHECK_OK(hush_call_wait(call, WAIT_MS, &err), &err);
    check_call_echo(call, "slow answer");
    /* The document passed over once; later results give NULL. */
    doc = NULL;
    CHECK_OK(hush_call_result(call, &doc, &err), &err);
    CHECK(doc == NULL);
    hush_json_doc_free(doc);
    CHECK_EQ(hush_call_attempts(call), 1);
    hush_call_free(call);
    hush_engine_free(e);
}

/* ---- shutdown and freeing ------------------------------------------------- */

static void test_shutdown_cancels(void)
{
    enum { N = 20 };
    hush_engine *e = new_engine(0);
    hush_call *calls[N];
    int tags[N];
    for (int i = 0; i < N; i++) {
        char content[32];
        snprintf(content, sizeof content, "shutdown %d", i);
        tags[i] = i;
        calls[i] = submit(e, client, content, "{\"delay_ms\": 5000}", &tags[i]);
    }
    sleep_ms(200);
    hush_engine_free(e); /* does not wait for the 5 s delays: cancels */
    for (int i = 0; i < N; i++) {
        if (calls[i] == NULL)
            continue;
        hush_error err = {0};
        hush_json_doc *doc = NULL;
        CHECK(hush_call_done(calls[i]));
        CHECK_OK(hush_call_wait(calls[i], 0, &err), &err);
        CHECK_STATUS(hush_call_result(calls[i], &doc, &err), HUSH_E_CANCELLED, &err);
        CHECK(doc == NULL);
        CHECK(hush_call_user_data(calls[i]) == &tags[i]);
        CHECK(looks_like_uuid4(hush_call_payload_id(calls[i])));
        hush_call_free(calls[i]);
    }
    /* The client outlives the engine and works on a new one. */
    e = new_engine(0);
    hush_call *call = submit(e, client, "after shutdown", NULL, NULL);
    hush_error err = {0};
    CHECK_OK(hush_call_wait(call, WAIT_MS, &err), &err);
    check_call_echo(call, "after shutdown");
    hush_call_free(call);
    hush_engine_free(e);
}

/* Submissions racing the engine's shutdown: each one is either refused
 * with HUSH_E_CANCELLED or accepted and then ends; none is left hanging. */
typedef struct racer {
    hush_engine *engine;
    hush_call *calls[4096];
    int accepted, refused;
} racer;

static void *submit_until_refused(void *arg)
{
    racer *r = arg;
    while (r->accepted < 4096) {
        hush_call *call = NULL;
        hush_error err = {0};
        hush_status s = hush_engine_submit(r->engine, client, chat_request("race", NULL), NULL,
                                           NULL, &call, &err);
        if (s != HUSH_OK) {
            if (s == HUSH_E_CANCELLED)
                r->refused++;
            break;
        }
        r->calls[r->accepted++] = call;
    }
    return NULL;
}

static void test_submit_racing_shutdown(void)
{
    static racer r;
    memset(&r, 0, sizeof r);
    r.engine = new_engine(0);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, submit_until_refused, &r) == 0);
    sleep_ms(100);
    hush_engine_free(r.engine);
    pthread_join(thread, NULL);
    CHECK(r.accepted > 0);
    CHECK_EQ(r.refused, 1); /* the submitter stopped on the shutdown, not on anything else */
    for (int i = 0; i < r.accepted; i++) {
        hush_error err = {0};
        CHECK_OK(hush_call_wait(r.calls[i], 0, &err), &err); /* done already: nothing hangs */
        hush_call_free(r.calls[i]);
    }
}

static void test_freed_call_not_drained(void)
{
    hush_engine *e = new_engine(0);
    if (e == NULL)
        return;
    hush_error err = {0};
    /* Freed at once, freed while in flight, and freed when done but not drained. */
    hush_call_free(submit(e, client, "freed at once", NULL, NULL));
    hush_call *in_flight = submit(e, client, "freed in flight", "{\"delay_ms\": 500}", NULL);
    sleep_ms(50);
    hush_call_free(in_flight);
    hush_call *finished = submit(e, client, "freed when done", NULL, NULL);
    CHECK_OK(hush_call_wait(finished, WAIT_MS, &err), &err);
    hush_call_free(finished);
    hush_call *kept = submit(e, client, "kept", NULL, NULL);
    CHECK_OK(hush_call_wait(kept, WAIT_MS, &err), &err);
    sleep_ms(800); /* past the in-flight call's delay */

    CHECK(fd_readable(e, 1000));
    hush_call *batch[8];
    size_t n = hush_engine_drain(e, batch, 8);
    CHECK_EQ(n, 1);
    CHECK(n >= 1 && batch[0] == kept);
    CHECK_EQ(hush_engine_drain(e, batch, 8), 0);
    CHECK(!fd_readable(e, 0));
    check_call_echo(kept, "kept");
    hush_call_free(kept);
    hush_engine_free(e);
}

/* Calls keep their client alive. */
static void test_call_keeps_client(void)
{
    hush_engine *e = new_engine(0);
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = http_peer.url;
    o.allow_http = true;
    o.client_key = shared_key;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    hush_call *call = submit(e, c, "client freed", "{\"delay_ms\": 200}", NULL);
    hush_client_free(c);
    CHECK_OK(hush_call_wait(call, WAIT_MS, &err), &err);
    check_call_echo(call, "client freed");
    hush_call_free(call);
    hush_engine_free(e);
}

/* ---- submit-time failures ------------------------------------------------- */

static void test_submit_oversized(void)
{
    hush_engine *e = new_engine(0);
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = http_peer.url;
    o.allow_http = true;
    o.client_key = shared_key;
    o.max_request_bytes = 1000;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    char big[2001];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    hush_secbuf *req = request_from_string(big);
    CHECK(req != NULL);
    hush_call *call = NULL;
    int tag = 7;
    /* The request is taken over even on failure: not freed here. */
    CHECK_STATUS(hush_engine_submit(e, c, req, NULL, &tag, &call, &err), HUSH_E_LIMIT, &err);
    CHECK(call == NULL);
    hush_call_free(call);
    /* Nothing was started, so nothing is announced. */
    hush_call *batch[2];
    CHECK(!fd_readable(e, 200));
    CHECK_EQ(hush_engine_drain(e, batch, 2), 0);
    hush_client_free(c);
    hush_engine_free(e);
}

/* ---- what a call reports -------------------------------------------------- */

/* The call accessors answer for a NULL call instead of dereferencing it. */
static void test_null_call_refused(void)
{
    hush_error err;
    hush_json_doc *doc = NULL;
    size_t len = 7;
    CHECK(!hush_call_done(NULL));
    CHECK_EQ(hush_call_attempts(NULL), 0);
    CHECK(hush_call_error_details(NULL, &len) == NULL);
    CHECK_EQ(len, 7); /* untouched */
    CHECK(hush_call_payload_id(NULL) == NULL);
    CHECK(hush_call_user_data(NULL) == NULL);
    CHECK_STATUS(hush_call_wait(NULL, 0, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_call_result(NULL, &doc, &err), HUSH_E_ARGUMENT, &err);
    CHECK_EQ(hush_engine_fd(NULL), -1);
    hush_call_cancel(NULL);
    hush_call_free(NULL);
    hush_engine_free(NULL);
}

static void test_payload_id_and_attempts(void)
{
    hush_engine *e = new_engine(0);
    int tag = 42;
    hush_call *retried = submit(e, client, "retried once", "{\"status\": 429, \"times\": 1}", &tag);
    hush_call *plain = submit(e, client, "plain", NULL, NULL);
    hush_error err = {0};
    CHECK_OK(hush_call_wait(retried, WAIT_MS, &err), &err);
    CHECK_OK(hush_call_wait(plain, WAIT_MS, &err), &err);

    const char *id = hush_call_payload_id(retried);
    CHECK(looks_like_uuid4(id));
    CHECK(looks_like_uuid4(hush_call_payload_id(plain)));
    CHECK(id != NULL && hush_call_payload_id(plain) != NULL &&
          strcmp(id, hush_call_payload_id(plain)) != 0);
    CHECK_EQ(hush_call_attempts(retried), 2);
    CHECK_EQ(hush_call_attempts(plain), 1);
    CHECK(hush_call_user_data(retried) == &tag);
    CHECK(hush_call_user_data(plain) == NULL);
    CHECK_EQ(peer_payload_posts(&http_peer, id), 2);

    hush_json_doc *doc = NULL;
    CHECK_OK(hush_call_result(retried, &doc, &err), &err);
    CHECK(response_echoes(doc, "retried once"));
    const char *meta_id = response_payload_id(doc);
    CHECK(id != NULL && meta_id != NULL && strcmp(id, meta_id) == 0);
    hush_json_doc_free(doc);
    check_call_echo(plain, "plain");

    /* A failed call counts its attempts too. */
    hush_call *failing = submit(e, client, "429 always", "{\"status\": 429}", NULL);
    CHECK_OK(hush_call_wait(failing, WAIT_MS, &err), &err);
    CHECK_STATUS(hush_call_result(failing, &doc, &err), HUSH_E_RATE_LIMITED, &err);
    CHECK_EQ(err.http_status, 429);
    CHECK_EQ(hush_call_attempts(failing), 3); /* max_retries 2 */
    CHECK_EQ(peer_payload_posts(&http_peer, hush_call_payload_id(failing)), 3);

    hush_call_free(failing);
    hush_call_free(retried);
    hush_call_free(plain);
    hush_engine_free(e);
}

/* HUSH_ENGINE_OPTIONS_INIT and hush_engine_options_init give the defaults
 * engine.h documents; a version 0 or newer than this library's is refused by
 * name, by both. */
static void test_options_versions(void)
{
    hush_engine_options from_macro = HUSH_ENGINE_OPTIONS_INIT;
    hush_engine_options o;
    memset(&o, 0xa5, sizeof o);
    hush_error err = {0};
    CHECK_OK(hush_engine_options_init(&o, HUSH_ENGINE_OPTIONS_VERSION, &err), &err);
    CHECK_EQ(from_macro.version, 1);
    CHECK_EQ(o.version, 1);
    CHECK_EQ(from_macro.workers, 2);
    CHECK_EQ(o.workers, 2);
    CHECK_STATUS(hush_engine_options_init(NULL, HUSH_ENGINE_OPTIONS_VERSION, &err),
                 HUSH_E_ARGUMENT, &err);

    const unsigned unknown[] = {0, HUSH_ENGINE_OPTIONS_VERSION + 1};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        o.workers = 3;
        CHECK_STATUS(hush_engine_options_init(&o, unknown[i], &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_engine_options") != NULL);
        CHECK_EQ(o.workers, 3); /* untouched: its size is not known */

        o.version = unknown[i];
        hush_engine *e = (hush_engine *)&o; /* must be set to NULL on failure */
        CHECK_STATUS(hush_engine_new(&o, &e, &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_engine_options") != NULL);
        CHECK(e == NULL);
        o.version = HUSH_ENGINE_OPTIONS_VERSION;
    }
    hush_engine *e = NULL;
    CHECK_OK(hush_engine_new(&o, &e, &err), &err);
    hush_engine_free(e);
}

int main(void)
{
    hush_error err = {0};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *args[] = {"--bits", "2048", NULL};
    if (!peer_start(&http_peer, false, args)) {
        fprintf(stderr, "the NOMYO peer did not start: is `make deps` done?\n");
        return 1;
    }
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = http_peer.url;
    o.allow_http = true;
    o.key_bits = 2048;
    o.max_retries = 2;
    o.retry_base_ms = 10;
    o.breaker_threshold = 1000;
    if (hush_keypair_generate(2048, &shared_key, &err) != HUSH_OK ||
        hush_client_new(&o, &client, &err) != HUSH_OK) {
        fprintf(stderr, "setup failed: %s\n", err.message);
        hush_keypair_free(shared_key);
        peer_stop(&http_peer);
        return 1;
    }

    RUN_TEST(test_options_versions);
    RUN_TEST(test_many_calls);
    RUN_TEST(test_cancel);
    RUN_TEST(test_wait_timeout);
    RUN_TEST(test_shutdown_cancels);
    RUN_TEST(test_submit_racing_shutdown);
    RUN_TEST(test_freed_call_not_drained);
    RUN_TEST(test_call_keeps_client);
    RUN_TEST(test_submit_oversized);
    RUN_TEST(test_payload_id_and_attempts);
    RUN_TEST(test_null_call_refused);

    hush_client_free(client);
    hush_keypair_free(shared_key);
    bool peer_ok = peer_stop(&http_peer);
    curl_global_cleanup();
    int rc = check_report();
    return peer_ok ? rc : 1;
}
