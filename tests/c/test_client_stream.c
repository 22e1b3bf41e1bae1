/* test_client_stream.c — streamed calls and the other endpoints
 * (docs/protocol-v2.md "Endpoints and streaming") against the independent
 * EHBP server tests/interop/ehbp_server.py: both suites, every framing the
 * peer offers (one event per frame, several per frame, events cut across
 * frames), both ways a stream may end, the truncated and the tampered
 * stream, cancel mid-stream (the peer sees the client go), two streams on
 * one engine announced through its fd, GET /v1/models in plaintext,
 * /v1/embeddings, the refusals (v1, bad paths and methods), and no copy of
 * the streamed text left in memory once every chunk is wiped. */
#include <poll.h>

#include <openssl/rand.h>

#include "check.h"
#include "memscan.h"
#include "peer.h"

#define EHBP_SCRIPT HUSH_TEST_INTEROP_DIR "/ehbp_server.py"
#define WAIT_MS 30000L /* a generous bound for what must happen, never asserted on */

static peer pq_peer, plain_peer;
/* For "auto" and "v1" clients, which would otherwise make an RSA key in the
 * background (still running at exit, it crashes in OpenSSL's clean-up):
 * 2048 bits, made once. */
static hush_keypair *shared_key;

static bool control(const peer *p, const char *json)
{
    long status = peer_http(p, "POST", "/__control", json, NULL, NULL);
    CHECK_EQ(status, 200);
    return status == 200;
}

/* A number from the control answer: "posts", or a member of "streams". */
static long long control_count(const peer *p, const char *name)
{
    char *body = NULL;
    size_t len = 0;
    long long n = -1;
    hush_json_doc *doc = NULL;
    if (peer_http(p, "POST", "/__control", "{}", &body, &len) == 200 &&
        hush_json_parse(body, len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) == HUSH_OK) {
        const hush_json_value *root = hush_json_doc_root(doc);
        const hush_json_value *v = strcmp(name, "posts") == 0
                                       ? hush_json_object_get(root, "posts", 5)
                                       : hush_json_object_get(
                                             hush_json_object_get(root, "streams", 7), name,
                                             strlen(name));
        int64_t got;
        if (hush_json_int64(v, &got, NULL) == HUSH_OK)
            n = got;
    }
    hush_json_doc_free(doc);
    free(body);
    return n;
}

static hush_client *new_client(const peer *p, const char *protocol)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = p->url;
    o.allow_http = true;
    o.protocol = protocol;
    o.client_key = protocol != NULL && strcmp(protocol, "v2") == 0 ? NULL : shared_key;
    o.max_retries = 0;
    o.breaker_threshold = 1000;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    return c;
}

/* A streamed chat request for `content` (no characters that need escaping). */
static hush_secbuf *stream_request(const char *content, bool usage)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"model\": \"m\", \"stream\": true,%s \"messages\": [{\"role\": \"user\", "
             "\"content\": \"%s\"}]}",
             usage ? " \"stream_options\": {\"include_usage\": true}," : "", content);
    return request_from_string(text);
}

static hush_call *start_stream(hush_client *c, hush_secbuf *req)
{
    hush_call *call = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_stream(c, req, NULL, &call, &err), &err);
    return call;
}

/* choices[0].delta.content of a chunk, or NULL. */
static const char *delta_content(const hush_json_doc *chunk, size_t *len)
{
    const hush_json_value *choice =
        hush_json_array_get(hush_json_object_get(hush_json_doc_root(chunk), "choices", 7), 0);
    const hush_json_value *delta = hush_json_object_get(choice, "delta", 5);
    return hush_json_string(hush_json_object_get(delta, "content", 7), len);
}

static const char *finish_reason(const hush_json_doc *chunk)
{
    const hush_json_value *choice =
        hush_json_array_get(hush_json_object_get(hush_json_doc_root(chunk), "choices", 7), 0);
    return hush_json_string(hush_json_object_get(choice, "finish_reason", 13), NULL);
}

/* What a stream handed out: the chunks' contents joined, their count, the
 * finish_reason seen, whether a usage chunk came, and how it ended. */
typedef struct taken {
    char text[1024];
    size_t len;
    int chunks;
    bool stopped, usage, roles_first;
    hush_status end;
    hush_error err;
} taken;

static void take_chunk(taken *t, hush_json_doc *chunk)
{
    size_t len = 0;
    const char *piece = delta_content(chunk, &len);
    if (t->chunks == 0) {
        const hush_json_value *choice = hush_json_array_get(
            hush_json_object_get(hush_json_doc_root(chunk), "choices", 7), 0);
        const char *role = hush_json_string(
            hush_json_object_get(hush_json_object_get(choice, "delta", 5), "role", 4), NULL);
        t->roles_first = role != NULL && strcmp(role, "assistant") == 0;
    }
    if (piece != NULL && t->len + len < sizeof t->text) {
        memcpy(t->text + t->len, piece, len);
        t->len += len;
        t->text[t->len] = '\0';
    }
    const char *finish = finish_reason(chunk);
    if (finish != NULL && strcmp(finish, "stop") == 0)
        t->stopped = true;
    if (hush_json_object_get(hush_json_doc_root(chunk), "usage", 5) != NULL)
        t->usage = true;
    t->chunks++;
    hush_json_doc_free(chunk);
}

/* Every chunk until the stream ends (waiting as long as it takes). */
static void take_all(hush_call *call, taken *t)
{
    memset(t, 0, sizeof *t);
    for (;;) {
        hush_json_doc *chunk = NULL;
        t->end = hush_call_next_chunk(call, -1, &chunk, &t->err);
        if (t->end != HUSH_OK || chunk == NULL)
            break;
        take_chunk(t, chunk);
    }
}

/* ---- complete streams ---------------------------------------------------- */

static void expect_echo_stream(hush_client *c, const char *content, bool usage)
{
    taken t;
    hush_call *call = start_stream(c, stream_request(content, usage));
    take_all(call, &t);
    CHECK_STATUS(t.end, HUSH_OK, &t.err);
    char want[512];
    snprintf(want, sizeof want, "echo: %s", content);
    CHECK(strcmp(t.text, want) == 0);
    if (strcmp(t.text, want) != 0)
        fprintf(stderr, "  got \"%s\", want \"%s\"\n", t.text, want);
    /* role, "echo:", one per word, the finish chunk (and usage) */
    int words = 1;
    for (const char *p = content; *p; p++)
        words += *p == ' ';
    CHECK_EQ(t.chunks, 1 + 1 + words + 1 + (usage ? 1 : 0));
    CHECK(t.roles_first && t.stopped);
    CHECK(t.usage == usage);
    /* Ended complete, and stays so. */
    hush_json_doc *chunk = NULL;
    hush_error err = {0};
    CHECK_OK(hush_call_next_chunk(call, 0, &chunk, &err), &err);
    CHECK(chunk == NULL);
    hush_call_free(call);
}

static void test_suites_and_framings(void)
{
    static const char *const framings[] = {
        "{\"stream\": {}}",
        "{\"stream\": {\"framing\": \"batch\", \"batch\": 3}}",
        "{\"stream\": {\"framing\": \"split\", \"split\": 5}}",
        "{\"stream\": {\"framing\": \"split\", \"split\": 1, \"eol\": \"\\r\\n\"}}",
        "{\"stream\": {\"framing\": \"batch\", \"eol\": \"\\r\", \"comments\": true}}",
    };
    const peer *peers[] = {&pq_peer, &plain_peer};
    for (size_t p = 0; p < 2; p++) {
        hush_client *c = new_client(peers[p], "v2");
        for (size_t f = 0; f < sizeof framings / sizeof *framings; f++) {
            control(peers[p], framings[f]);
            expect_echo_stream(c, "one two three four", false);
            expect_echo_stream(c, "with usage", true);
        }
        control(peers[p], "{\"stream\": {}}");
        hush_client_free(c);
    }
}

/* A body that ends after the finish_reason chunk, without [DONE], is complete. */
static void test_finish_reason_ends_stream(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    /* role, "echo:", a, b, finish: five events, [DONE] cut off */
    control(&pq_peer, "{\"stream\": {\"truncate\": 5}}");
    taken t;
    hush_call *call = start_stream(c, stream_request("a b", false));
    take_all(call, &t);
    CHECK_STATUS(t.end, HUSH_OK, &t.err);
    CHECK_EQ(t.chunks, 5);
    CHECK(t.stopped);
    hush_call_free(call);
    control(&pq_peer, "{\"stream\": {}}");
    hush_client_free(c);
}

/* ---- broken streams ------------------------------------------------------ */

static void test_truncated_stream(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    control(&pq_peer, "{\"stream\": {\"truncate\": 3, \"framing\": \"split\", \"split\": 9}}");
    taken t;
    hush_call *call = start_stream(c, stream_request("a b c d", false));
    take_all(call, &t);
    /* every authenticated chunk first, then the truncation, and again */
    CHECK_EQ(t.chunks, 3);
    CHECK(strcmp(t.text, "echo: a") == 0);
    CHECK_STATUS(t.end, HUSH_E_TRUNCATED, &t.err);
    hush_json_doc *chunk = NULL;
    hush_error err = {0};
    CHECK_STATUS(hush_call_next_chunk(call, 0, &chunk, &err), HUSH_E_TRUNCATED, &err);
    CHECK(chunk == NULL);
    CHECK_EQ(hush_status_kind(err.code)[0], 't');
    hush_call_free(call);
    control(&pq_peer, "{\"stream\": {}}");
    hush_client_free(c);
}

static void test_tampered_frame(void)
{
    hush_client *c = new_client(&plain_peer, "v2");
    control(&plain_peer, "{\"stream\": {\"tamper\": 3}}");
    hush_call *call = start_stream(c, stream_request("a b c d e f", false));
    hush_error err = {0};
    CHECK_OK(hush_call_wait(call, -1, &err), &err);
    /* Frames 0..2 were authentic and queued; the forged one wiped them. */
    hush_json_doc *chunk = NULL;
    CHECK_STATUS(hush_call_next_chunk(call, 0, &chunk, &err), HUSH_E_AUTH, &err);
    CHECK(chunk == NULL);
    CHECK_STATUS(hush_call_next_chunk(call, -1, &chunk, &err), HUSH_E_AUTH, &err);
    hush_call_free(call);

    /* Taken as they come: the chunks before the forged frame, then the failure. */
    call = start_stream(c, stream_request("a b c d e f", false));
    taken t;
    take_all(call, &t);
    CHECK(t.chunks <= 3);
    CHECK_STATUS(t.end, HUSH_E_AUTH, &t.err);
    hush_call_free(call);
    control(&plain_peer, "{\"stream\": {}}");
    /* the client stays usable */
    expect_echo_stream(c, "after the forgery", false);
    hush_client_free(c);
}

static void test_refused_heads_release_nothing(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    const char *modes[] = {"{\"misbehave\": \"strip-nonce\"}",
                           "{\"misbehave\": \"plaintext-502\"}"};
    const hush_status expected[] = {HUSH_E_AUTH, HUSH_E_HTTP}; /* 502: no status of its own */
    for (size_t i = 0; i < 2; i++) {
        control(&pq_peer, modes[i]);
        taken t;
        hush_call *call = start_stream(c, stream_request("never shown", false));
        take_all(call, &t);
        CHECK_EQ(t.chunks, 0);
        CHECK_STATUS(t.end, expected[i], &t.err);
        if (i == 1)
            CHECK_EQ(t.err.http_status, 502);
        hush_call_free(call);
    }
    hush_client_free(c);
}

/* The plaintext of a stream is capped: the chunks within the cap, then HUSH_E_LIMIT. */
static void test_stream_limit(void)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = pq_peer.url;
    o.allow_http = true;
    o.protocol = "v2";
    o.max_response_bytes = 1024;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    taken t;
    hush_call *call = start_stream(
        c, stream_request("a b c d e f g h i j k l m n o p q r s t u v w x y z", false));
    take_all(call, &t);
    CHECK(t.chunks > 0 && t.chunks < 28);
    CHECK_STATUS(t.end, HUSH_E_LIMIT, &t.err);
    hush_call_free(call);
    hush_client_free(c);
}

static void test_cancel_mid_stream(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    long long gone_before = control_count(&pq_peer, "client_gone");
    control(&pq_peer, "{\"stream\": {\"delay_ms\": 100}}");
    hush_call *call = start_stream(
        c, stream_request("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19",
                          false));
    hush_error err = {0};
    for (int i = 0; i < 2; i++) {
        hush_json_doc *chunk = NULL;
        CHECK_OK(hush_call_next_chunk(call, -1, &chunk, &err), &err);
        CHECK(chunk != NULL);
        hush_json_doc_free(chunk);
    }
    hush_call_cancel(call);
    CHECK_OK(hush_call_wait(call, -1, &err), &err);
    hush_json_doc *chunk = NULL;
    hush_status st;
    while ((st = hush_call_next_chunk(call, 0, &chunk, &err)) == HUSH_OK && chunk != NULL)
        hush_json_doc_free(chunk); /* any that arrived before the cancel */
    CHECK_EQ(st, HUSH_E_CANCELLED);
    hush_call_free(call);
    /* The peer notices the closed connection at its next event. */
    long long deadline = now_ms() + WAIT_MS;
    while (control_count(&pq_peer, "client_gone") <= gone_before && now_ms() < deadline)
        sleep_ms(50);
    CHECK_EQ(control_count(&pq_peer, "client_gone"), gone_before + 1);

    /* hush_call_free of a live stream ends it too. */
    call = start_stream(c, stream_request("x1 x2 x3 x4 x5 x6 x7 x8 x9 x10 x11 x12", false));
    CHECK_OK(hush_call_next_chunk(call, -1, &chunk, &err), &err);
    hush_json_doc_free(chunk);
    hush_call_free(call);
    deadline = now_ms() + WAIT_MS;
    while (control_count(&pq_peer, "client_gone") <= gone_before + 1 && now_ms() < deadline)
        sleep_ms(50);
    CHECK_EQ(control_count(&pq_peer, "client_gone"), gone_before + 2);
    control(&pq_peer, "{\"stream\": {}}");
    hush_client_free(c);
}

/* ---- an engine with two streams ------------------------------------------ */

static void test_engine_announces_chunks(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    hush_engine *e = NULL;
    hush_error err = {0};
    CHECK_OK(hush_engine_new(NULL, &e, &err), &err);
    control(&pq_peer, "{\"stream\": {\"delay_ms\": 20}}");
    hush_call_options streamed = {.stream = true};
    hush_call *calls[2] = {NULL, NULL};
    taken t[2];
    memset(t, 0, sizeof t);
    CHECK_OK(hush_engine_submit(e, c, stream_request("a1 a2 a3 a4 a5", false), &streamed,
                                &t[0], &calls[0], &err),
             &err);
    CHECK_OK(hush_engine_submit(e, c, stream_request("b1 b2 b3", false), &streamed, &t[1],
                                &calls[1], &err),
             &err);
    bool ended[2] = {false, false};
    int announcements = 0;
    long long deadline = now_ms() + WAIT_MS;
    while (!(ended[0] && ended[1]) && now_ms() < deadline) {
        struct pollfd pfd = {.fd = hush_engine_fd(e), .events = POLLIN};
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        hush_call *ready[8];
        size_t n = hush_engine_drain(e, ready, 8);
        CHECK(n <= 2);
        if (n == 2)
            CHECK(ready[0] != ready[1]); /* a call is queued once at a time */
        for (size_t i = 0; i < n; i++) {
            announcements++;
            taken *mine = hush_call_user_data(ready[i]);
            size_t k = (size_t)(mine - t);
            hush_json_doc *chunk = NULL;
            hush_status st;
            while ((st = hush_call_next_chunk(ready[i], 0, &chunk, &mine->err)) == HUSH_OK &&
                   chunk != NULL)
                take_chunk(mine, chunk);
            if (st != HUSH_E_TIMEOUT) {
                mine->end = st;
                ended[k] = true;
            }
        }
    }
    CHECK(ended[0] && ended[1]);
    CHECK_STATUS(t[0].end, HUSH_OK, &t[0].err);
    CHECK_STATUS(t[1].end, HUSH_OK, &t[1].err);
    CHECK(strcmp(t[0].text, "echo: a1 a2 a3 a4 a5") == 0);
    CHECK(strcmp(t[1].text, "echo: b1 b2 b3") == 0);
    CHECK(announcements > 2); /* announced as chunks came, not only at the end */
    hush_call_free(calls[0]);
    hush_call_free(calls[1]);
    CHECK_EQ(hush_engine_drain(e, calls, 2), 0);
    hush_engine_free(e);
    control(&pq_peer, "{\"stream\": {}}");
    hush_client_free(c);
}

/* ---- the other endpoints ------------------------------------------------- */

static void test_not_a_stream(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    hush_call *call = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_complete_call(c, chat_request("plain", NULL), NULL, &call, &err), &err);
    hush_json_doc *chunk = NULL;
    CHECK_STATUS(hush_call_next_chunk(call, 0, &chunk, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_call_next_chunk(NULL, 0, &chunk, &err), HUSH_E_ARGUMENT, &err);
    hush_call_free(call);
    hush_client_free(c);
}

static void test_get_models_in_plaintext(void)
{
    const char *protocols[] = {"v2", NULL};
    for (size_t i = 0; i < 2; i++) {
        hush_client *c = new_client(&pq_peer, protocols[i]);
        hush_call_options o = {.path = "/v1/models", .method = "GET"};
        hush_json_doc *doc = NULL;
        hush_error err = {0};
        CHECK_OK(hush_client_complete(c, NULL, &o, &doc, &err), &err);
        const hush_json_value *first =
            hush_json_array_get(hush_json_object_get(hush_json_doc_root(doc), "data", 4), 0);
        const char *id = hush_json_string(hush_json_object_get(first, "id", 2), NULL);
        CHECK(id != NULL && strcmp(id, "echo") == 0);
        const hush_json_value *encrypted = json_member2(doc, "_metadata", "is_encrypted");
        CHECK(hush_json_type_of(encrypted) == HUSH_JSON_BOOL && !hush_json_bool(encrypted));
        hush_json_doc_free(doc);
        hush_client_free(c);
    }
}

static void test_embeddings(void)
{
    hush_client *c = new_client(&plain_peer, "v2");
    hush_call_options o = {.path = "/v1/embeddings"};
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_complete(
                 c, request_from_string("{\"model\": \"m\", \"input\": [\"abc\", \"def\"]}"), &o,
                 &doc, &err),
             &err);
    const hush_json_value *data = hush_json_object_get(hush_json_doc_root(doc), "data", 4);
    CHECK_EQ(hush_json_length(data), 2);
    const hush_json_value *vector =
        hush_json_object_get(hush_json_array_get(data, 1), "embedding", 9);
    CHECK_EQ(hush_json_length(vector), 8);
    const char *object = hush_json_string(hush_json_object_get(hush_json_doc_root(doc),
                                                               "object", 6), NULL);
    CHECK(object != NULL && strcmp(object, "list") == 0);
    const hush_json_value *encrypted = json_member2(doc, "_metadata", "is_encrypted");
    CHECK(hush_json_bool(encrypted));
    hush_json_doc_free(doc);
    hush_client_free(c);
}

/* ---- refusals ------------------------------------------------------------ */

static void test_v1_refuses_endpoints_and_streams(void)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = pq_peer.url;
    o.allow_http = true;
    o.protocol = "v1";
    o.client_key = shared_key;
    hush_error err = {0};
    hush_client *c = NULL;
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    long long posts = control_count(&pq_peer, "posts");
    hush_call *call = NULL;
    CHECK_STATUS(hush_client_stream(c, stream_request("no", false), NULL, &call, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK(call == NULL);
    hush_call_options emb = {.path = "/v1/embeddings"};
    hush_json_doc *doc = NULL;
    CHECK_STATUS(hush_client_complete(c, request_from_string("{\"input\": \"x\"}"), &emb, &doc,
                                      &err),
                 HUSH_E_UNSUPPORTED, &err);
    hush_call_options get = {.path = "/v1/models", .method = "GET"};
    CHECK_STATUS(hush_client_complete(c, NULL, &get, &doc, &err), HUSH_E_UNSUPPORTED, &err);
    CHECK(doc == NULL);
    CHECK_EQ(control_count(&pq_peer, "posts"), posts); /* nothing was sent */
    hush_client_free(c);
}

static void test_bad_paths_and_methods(void)
{
    hush_client *c = new_client(&pq_peer, "v2");
    char long_path[400];
    memset(long_path, 'a', sizeof long_path - 1);
    memcpy(long_path, "/v1/", 4);
    long_path[sizeof long_path - 1] = '\0';
    const char *bad[] = {"/v2/chat", "/v1/", "v1/x", "/v1/a b", "/v1/a?b=1", "/v1/a#b",
                         "/v1/../admin", "/v1/\x01", "/v1/caf\xc3\xa9", long_path};
    long long posts = control_count(&pq_peer, "posts");
    hush_error err = {0};
    hush_json_doc *doc = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hush_call_options o = {.path = bad[i]};
        CHECK_STATUS(hush_client_complete(c, chat_request("x", NULL), &o, &doc, &err),
                     HUSH_E_ARGUMENT, &err);
    }
    const hush_call_options methods[] = {{.method = "PUT"}, {.method = "get"},
                                         {.method = "DELETE"}};
    for (size_t i = 0; i < 3; i++)
        CHECK_STATUS(hush_client_complete(c, chat_request("x", NULL), &methods[i], &doc, &err),
                     HUSH_E_ARGUMENT, &err);
    hush_call_options get = {.path = "/v1/models", .method = "GET"};
    CHECK_STATUS(hush_client_complete(c, chat_request("a body", NULL), &get, &doc, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_client_complete(c, NULL, NULL, &doc, &err), HUSH_E_ARGUMENT, &err);
    CHECK(doc == NULL);
    CHECK_EQ(control_count(&pq_peer, "posts"), posts);
    /* still usable */
    expect_echo_stream(c, "still fine", false);
    hush_client_free(c);
}

/* ---- plaintext residue --------------------------------------------------- */

#define SECRET_LEN 24

/* A word made at run time, kept masked (memscan.h): the test's reference
 * is never itself a match. */
static void make_secret_word(unsigned char masked[SECRET_LEN])
{
    unsigned char raw[SECRET_LEN];
    CHECK(RAND_bytes(raw, sizeof raw) == 1);
    for (size_t i = 0; i < SECRET_LEN; i++)
        masked[i] = (unsigned char)(('a' + raw[i] % 26) ^ MEMSCAN_MASK);
    hush_memzero(raw, sizeof raw);
}

/* A streamed request whose user text is the secret word three times,
 * written straight into secure memory from its masked form. */
static hush_secbuf *secret_request(const unsigned char masked[SECRET_LEN])
{
    static const char head[] = "{\"model\": \"m\", \"stream\": true, \"messages\": "
                               "[{\"role\": \"user\", \"content\": \"";
    hush_secbuf *buf = NULL;
    bool ok = hush_secbuf_new(256, 0, HUSH_SECMEM_DEFAULT, &buf, NULL) == HUSH_OK &&
              hush_secbuf_append(buf, head, strlen(head), NULL) == HUSH_OK;
    for (int w = 0; ok && w < 3; w++) {
        if (w > 0)
            ok = hush_secbuf_append_byte(buf, ' ', NULL) == HUSH_OK;
        for (size_t i = 0; ok && i < SECRET_LEN; i++)
            ok = hush_secbuf_append_byte(buf, masked[i] ^ MEMSCAN_MASK, NULL) == HUSH_OK;
    }
    ok = ok && hush_secbuf_append(buf, "\"}]}", 4, NULL) == HUSH_OK;
    CHECK(ok);
    return buf;
}

static void test_no_plaintext_residue(void)
{
    unsigned char masked[SECRET_LEN];
    make_secret_word(masked);
    hush_client *c = new_client(&pq_peer, "v2");
    control(&pq_peer, "{\"stream\": {\"framing\": \"split\", \"split\": 11}}");
    hush_call *call = start_stream(c, secret_request(masked));
    int chunks = 0, found_in_chunks = 0;
    hush_json_doc *chunk = NULL;
    hush_error err = {0};
    while (hush_call_next_chunk(call, -1, &chunk, &err) == HUSH_OK && chunk != NULL) {
        chunks++;
        size_t len = 0;
        const char *piece = delta_content(chunk, &len);
        if (piece != NULL && len >= SECRET_LEN)
            found_in_chunks += memscan_matches((const unsigned char *)piece + (len - SECRET_LEN),
                                               masked, SECRET_LEN);
        hush_json_doc_free(chunk);
    }
    CHECK_EQ(err.code, HUSH_OK);
    CHECK_EQ(chunks, 6); /* role, "echo:", three words, finish; [DONE] ends it */
    CHECK_EQ(found_in_chunks, 3); /* the word was there to be found */
    hush_call_free(call);
    control(&pq_peer, "{\"stream\": {}}");
    CHECK_EQ(memscan_count(masked, SECRET_LEN), 0);
    hush_client_free(c);
    CHECK_EQ(memscan_count(masked, SECRET_LEN), 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    hush_error err = {0};
    if (hush_keypair_generate(2048, &shared_key, &err) != HUSH_OK) {
        fprintf(stderr, "setup failed: %s\n", err.message);
        return 1;
    }
    const char *plain[] = {"--plain-ehbp", NULL};
    if (!peer_start_script(&pq_peer, EHBP_SCRIPT, false, NULL) ||
        !peer_start_script(&plain_peer, EHBP_SCRIPT, false, plain)) {
        fprintf(stderr, "the EHBP peer did not start: is `make deps` done?\n");
        peer_stop(&pq_peer);
        return 1;
    }
    RUN_TEST(test_suites_and_framings);
    RUN_TEST(test_finish_reason_ends_stream);
    RUN_TEST(test_truncated_stream);
    RUN_TEST(test_tampered_frame);
    RUN_TEST(test_refused_heads_release_nothing);
    RUN_TEST(test_stream_limit);
    RUN_TEST(test_cancel_mid_stream);
    RUN_TEST(test_engine_announces_chunks);
    RUN_TEST(test_not_a_stream);
    RUN_TEST(test_get_models_in_plaintext);
    RUN_TEST(test_embeddings);
    RUN_TEST(test_v1_refuses_endpoints_and_streams);
    RUN_TEST(test_bad_paths_and_methods);
    RUN_TEST(test_no_plaintext_residue);
    bool stopped = peer_stop(&pq_peer) & peer_stop(&plain_peer);
    CHECK(stopped);
    hush_keypair_free(shared_key);
    curl_global_cleanup();
    return check_report();
}
