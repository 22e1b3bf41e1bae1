/* test_server_stream.c — the server's streamed answers and endpoints
 * (hush_server_exchange_stream, request paths, the plaintext pass-through):
 * echo streams opened with the client role of envelope_v2.h, one event per
 * emit; cancelling through emit; the echo's pause between words; the echo's
 * completions and embeddings (both encodings) and its 404; and, with the
 * openai backend on tests/interop/fake_openai.py, the upstream's event
 * stream, a stream cut mid-way, a status refused before the stream, paths
 * forwarded, a client that leaves closing the upstream request, and the
 * model list (hush_server_models). Events
 * are checked against OpenAI's chunk shapes, not against our own writer. */
#include "check.h"
#include "peer.h"

#define FAKE_SCRIPT HUSH_TEST_INTEROP_DIR "/fake_openai.py"
#define SMALL_FRAMES 16u
#define MAX_EVENTS 256
#define CHAT_PATH "/v1/chat/completions"
#define LEAVE_DEADLINE_MS 20000 /* generous: a test waits, it never times */

enum { XWING_ID = 2, X25519_ID = 1 };

static hush_hpke_keypair *xwing_key, *x25519_key;
static hush_server_v2_key ring[2];
static hush_keypair *v1_key;
static peer upstream;

/* ---- helpers ------------------------------------------------------------ */

static hush_server *new_server(hush_backend backend, long echo_delay_ms)
{
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    hush_server *s = NULL;
    hush_error err = {0};
    char base[128];
    o.key = v1_key;
    o.backend = backend;
    o.echo_delay_ms = echo_delay_ms;
    if (backend == HUSH_BACKEND_OPENAI) {
        snprintf(base, sizeof base, "%s/v1", upstream.url);
        o.upstream_url = base;
    }
    CHECK_OK(hush_server_new(&o, &s, &err), &err);
    return s;
}

/* One client's request, sealed, and what it keeps to open the answer. */
typedef struct sealed {
    char enc_hex[2 * HUSH_HPKE_MAX_ENC_BYTES + 1];
    char hdr_hex[HUSH_V2_HDR_HEX_LEN + 1];
    hush_secbuf *frames;
    hush_v2_exchange *ex;
} sealed;

static sealed seal(bool xwing, const char *json)
{
    sealed out = {0};
    hush_v2_keyconfig cfg = {
        .key_id = xwing ? XWING_ID : X25519_ID, .n_ciphers = 1,
        .ciphers = {{HUSH_HPKE_KDF_HKDF_SHA256,
                     xwing ? HUSH_HPKE_AEAD_CHACHA20_POLY1305 : HUSH_HPKE_AEAD_AES_256_GCM}}};
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    size_t enc_len = 0;
    hush_error err = {0};
    CHECK_OK(hush_hpke_keypair_public(xwing ? xwing_key : x25519_key, &cfg.pubkey, &err), &err);
    CHECK_OK(hush_secbuf_new(256, 0, HUSH_SECMEM_PUBLIC, &out.frames, &err), &err);
    CHECK_OK(hush_v2_request_seal(&cfg, 0, json, strlen(json), SMALL_FRAMES, out.frames, hdr,
                                  &out.ex, &err), &err);
    const unsigned char *enc = hush_v2_exchange_enc(out.ex, &enc_len);
    hush_v2_hex_format(enc, enc_len, out.enc_hex);
    hush_v2_hex_format(hdr, sizeof hdr, out.hdr_hex);
    hush_v2_keyconfig_clear(&cfg);
    return out;
}

static void sealed_clear(sealed *s)
{
    hush_secbuf_free(s->frames);
    hush_v2_exchange_free(s->ex);
}

/* The request as the gateway passes it: X-Wing ones name their config,
 * X25519 ones come as EHBP requests. */
static hush_server_v2_request request_of(const sealed *s, bool xwing, const char *path)
{
    hush_server_v2_request req = {
        .key_config = xwing ? s->hdr_hex : NULL,
        .key_config_len = xwing ? strlen(s->hdr_hex) : 0,
        .encapsulated_key = s->enc_hex,
        .encapsulated_key_len = strlen(s->enc_hex),
        .body = hush_secbuf_bytes(s->frames),
        .body_len = hush_secbuf_len(s->frames),
        .keys = ring,
        .key_count = 2,
        .path = path,
    };
    return req;
}

/* What a client saw of a stream: each emit's frames opened as they came
 * (one opener for the whole body), each emit's plaintext kept apart. */
typedef struct received {
    hush_v2_opener *opener; /* NULL: a plaintext stream */
    hush_secbuf *plain;
    char *events[MAX_EVENTS];
    size_t n_events;
    int polls;        /* emit(NULL, 0) calls */
    int stop_after;   /* return 1 after this many events (0: never) */
    bool stop_on_poll; /* return 1 on the first poll after an event */
    bool bad_frames;  /* frames that did not open as whole frames of one event */
} received;

static int on_emit(void *ctx, const void *frames, size_t len)
{
    received *r = ctx;
    if (frames == NULL) {
        r->polls++;
        return r->stop_on_poll && r->n_events > 0;
    }
    size_t before = hush_secbuf_len(r->plain);
    hush_error err = {0};
    if (r->opener != NULL)
        r->bad_frames |= hush_v2_opener_feed(r->opener, frames, len, &err) != HUSH_OK;
    else
        r->bad_frames |= hush_secbuf_append(r->plain, frames, len, &err) != HUSH_OK;
    size_t got = hush_secbuf_len(r->plain) - before;
    const char *text = (const char *)hush_secbuf_bytes(r->plain) + before;
    /* Whole frames of exactly one event: it ends the plaintext it added. */
    r->bad_frames |= got < 2 || memcmp(text + got - 2, "\n\n", 2) != 0 ||
                     strstr(text, "\n\n") != text + got - 2;
    if (r->n_events < MAX_EVENTS)
        r->events[r->n_events++] = strndup(text, got);
    return r->stop_after > 0 && (int)r->n_events >= r->stop_after;
}

static void received_init(received *r, const sealed *s, const unsigned char *nonce)
{
    hush_error err = {0};
    CHECK_OK(hush_secbuf_new(256, 0, HUSH_SECMEM_DEFAULT, &r->plain, &err), &err);
    if (s != NULL)
        CHECK_OK(hush_v2_response_opener_new(s->ex, nonce, NULL, r->plain, &r->opener, &err),
                 &err);
}

static void received_clear(received *r)
{
    hush_v2_opener_free(r->opener);
    hush_secbuf_free(r->plain);
    for (size_t i = 0; i < r->n_events; i++)
        free(r->events[i]);
    memset(r, 0, sizeof *r);
}

/* The nonce comes before the first emit, so the opener is made in the
 * first emit; this wrapper holds what that needs. */
typedef struct stream_client {
    received r;
    const sealed *s;
    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    bool ready;
} stream_client;

static int client_emit(void *ctx, const void *frames, size_t len)
{
    stream_client *c = ctx;
    if (!c->ready && frames != NULL) {
        received_init(&c->r, c->s, c->nonce);
        c->ready = true;
    }
    return c->ready ? on_emit(&c->r, frames, len) : 0;
}

/* Open `json` at `path` on `srv` and stream it into `c`. */
static hush_status run_stream(const hush_server *srv, bool xwing, const char *path,
                              const char *json, stream_client *c, hush_error *err)
{
    sealed s = seal(xwing, json);
    hush_server_v2_request req = request_of(&s, xwing, path);
    hush_server_exchange *x = NULL;
    c->s = &s;
    hush_status status = hush_server_open_v2(srv, &req, &x, err);
    if (status == HUSH_OK) {
        CHECK(hush_server_exchange_is_stream(x));
        status = hush_server_exchange_stream(x, c->nonce, client_emit, c, err);
    }
    hush_server_exchange_free(x);
    if (c->ready)
        CHECK(!c->r.bad_frames);
    hush_v2_opener_free(c->r.opener); /* the exchange it opens under goes now */
    c->r.opener = NULL;
    c->s = NULL;
    sealed_clear(&s);
    return status;
}

/* An event's JSON (after "data: "), parsed; NULL for [DONE] or anything else. */
static hush_json_doc *event_json(const char *event)
{
    hush_json_doc *doc = NULL;
    CHECK(strncmp(event, "data: ", 6) == 0);
    if (strncmp(event, "data: [DONE]", 12) == 0)
        return NULL;
    hush_error err = {0};
    CHECK_OK(hush_json_parse(event + 6, strlen(event + 6), NULL, HUSH_SECMEM_NO_LOCK, &doc, &err),
             &err);
    return doc;
}

static const hush_json_value *choice0(const hush_json_doc *doc)
{
    return hush_json_array_get(hush_json_object_get(hush_json_doc_root(doc), "choices", 7), 0);
}

static bool is_null_member(const hush_json_value *obj, const char *key)
{
    const hush_json_value *v = hush_json_object_get(obj, key, strlen(key));
    return v != NULL && hush_json_type_of(v) == HUSH_JSON_NULL;
}

static bool member_equals(const hush_json_value *obj, const char *key, const char *want)
{
    const char *got = hush_json_string(hush_json_object_get(obj, key, strlen(key)), NULL);
    return got != NULL && strcmp(got, want) == 0;
}

/* The concatenated delta contents (chat) or texts, and checks of the
 * shapes every chunk must have; the [DONE] event must be the last. */
typedef struct stream_summary {
    char text[1024];
    int roles, stops, usages, content_chunks;
    long long usage_total;
    bool done_last;
} stream_summary;

static void summarize_chunk(const hush_json_doc *doc, bool chat, stream_summary *sum)
{
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *c = choice0(doc);
    const hush_json_value *usage = hush_json_object_get(root, "usage", 5);
    CHECK(member_equals(root, "object", chat ? "chat.completion.chunk" : "text_completion"));
    if (c == NULL) { /* the usage chunk: empty choices */
        CHECK_EQ(hush_json_length(hush_json_object_get(root, "choices", 7)), 0);
        int64_t total = -1;
        hush_error err = {0};
        CHECK_OK(hush_json_int64(hush_json_object_get(usage, "total_tokens", 12), &total, &err),
                 &err);
        sum->usage_total = total;
        sum->usages++;
        return;
    }
    const hush_json_value *delta = hush_json_object_get(c, "delta", 5);
    const char *piece = hush_json_string(
        chat ? hush_json_object_get(delta, "content", 7) : hush_json_object_get(c, "text", 4),
        NULL);
    if (chat && member_equals(delta, "role", "assistant"))
        sum->roles++;
    if (member_equals(c, "finish_reason", "stop"))
        sum->stops++;
    else
        CHECK(is_null_member(c, "finish_reason"));
    if (piece != NULL && piece[0] != '\0') {
        sum->content_chunks++;
        strncat(sum->text, piece, sizeof sum->text - strlen(sum->text) - 1);
    }
}

static stream_summary summarize(const received *r, bool chat)
{
    stream_summary sum = {0};
    for (size_t i = 0; i < r->n_events; i++) {
        hush_json_doc *doc = event_json(r->events[i]);
        if (doc == NULL) {
            sum.done_last = i + 1 == r->n_events && strcmp(r->events[i], "data: [DONE]\n\n") == 0;
            continue;
        }
        summarize_chunk(doc, chat, &sum);
        hush_json_doc_free(doc);
    }
    return sum;
}

/* The fake upstream's /_last, parsed. */
static hush_json_doc *upstream_last(void)
{
    char *text = NULL;
    size_t len = 0;
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    CHECK_EQ(peer_http(&upstream, "GET", "/_last", NULL, &text, &len), 200);
    if (text != NULL)
        CHECK_OK(hush_json_parse(text, len, NULL, HUSH_SECMEM_NO_LOCK, &doc, &err), &err);
    free(text);
    return doc;
}

static long long upstream_stat(const char *group, const char *name)
{
    hush_json_doc *doc = upstream_last();
    int64_t n = -1;
    hush_error err = {0};
    const hush_json_value *v = group != NULL ? json_member2(doc, group, name)
                                             : hush_json_object_get(hush_json_doc_root(doc), name,
                                                                    strlen(name));
    CHECK_OK(hush_json_int64(v, &n, &err), &err);
    hush_json_doc_free(doc);
    return n;
}

/* ---- echo streams ----------------------------------------------------------- */

#define CHAT_STREAM(content, extra)                                                       \
    "{\"model\":\"m\",\"stream\":true" extra ",\"messages\":[{\"role\":\"user\",\"content\":\"" \
    content "\"}]}"

static void test_echo_chat_stream(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    stream_client c = {0};
    hush_error err = {0};
    CHECK_OK(run_stream(srv, false, NULL,
                        CHAT_STREAM("hi  there friend",
                                    ",\"stream_options\":{\"include_usage\":true}"),
                        &c, &err), &err);
    stream_summary sum = summarize(&c.r, true);
    /* The text the whole answer would give, word by word. */
    CHECK(strcmp(sum.text, "echo: hi  there friend") == 0);
    CHECK_EQ(sum.content_chunks, 4);
    CHECK_EQ(sum.roles, 1);
    CHECK_EQ(sum.stops, 1);
    CHECK_EQ(sum.usages, 1);
    CHECK_EQ(sum.usage_total, 3 + 4);
    CHECK(sum.done_last);
    CHECK_EQ(c.r.n_events, 1 + 4 + 1 + 1 + 1);
    received_clear(&c.r);
    hush_server_free(srv);
}

static void test_echo_completions_stream_xwing(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    stream_client c = {0};
    hush_error err = {0};
    CHECK_OK(run_stream(srv, true, "/v1/completions",
                        "{\"model\":\"m\",\"stream\":true,\"prompt\":\"say this\"}", &c, &err),
             &err);
    stream_summary sum = summarize(&c.r, false);
    CHECK(strcmp(sum.text, "echo: say this") == 0);
    CHECK_EQ(sum.stops, 1);
    CHECK_EQ(sum.usages, 0); /* not asked for */
    CHECK(sum.done_last);
    received_clear(&c.r);
    hush_server_free(srv);
}

/* With a pause between words the stream asks for its client while it
 * waits, and a client that leaves stops it: HUSH_E_CANCELLED, nothing after. */
static void test_echo_delay_and_cancel(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 250);
    stream_client c = {0};
    hush_error err = {0};
    c.r.stop_after = 3; /* the role chunk and two words */
    CHECK_STATUS(run_stream(srv, false, NULL, CHAT_STREAM("a b c d e f g h i j", ""), &c, &err),
                 HUSH_E_CANCELLED, &err);
    CHECK_EQ(c.r.n_events, 3);
    CHECK(c.r.polls >= 2); /* 250 ms in slices of at most 100 */
    received_clear(&c.r);

    stream_client quiet = {0};
    quiet.r.stop_on_poll = true;
    CHECK_STATUS(run_stream(srv, false, NULL, CHAT_STREAM("a b c d e f g h i j", ""), &quiet,
                            &err), HUSH_E_CANCELLED, &err);
    CHECK_EQ(quiet.r.n_events, 2); /* the role chunk and the first word */
    CHECK_EQ(quiet.r.polls, 1);
    received_clear(&quiet.r);
    hush_server_free(srv);
}

/* ---- echo endpoints ----------------------------------------------------------- */

/* A whole answer at `path`, opened; NULL when refused (status in *status). */
static hush_json_doc *answer_at(const hush_server *srv, const char *path, const char *json,
                                hush_status *status, hush_error *err)
{
    sealed s = seal(false, json);
    hush_server_v2_request req = request_of(&s, false, path);
    hush_server_exchange *x = NULL;
    hush_server_answer out = {0};
    hush_json_doc *doc = NULL;
    *status = hush_server_open_v2(srv, &req, &x, err);
    if (*status == HUSH_OK)
        *status = hush_server_exchange_answer(x, &out, err);
    if (*status == HUSH_OK) {
        received r = {0};
        hush_error e = {0};
        received_init(&r, &s, out.response_nonce);
        CHECK_OK(hush_v2_opener_feed(r.opener, hush_secbuf_bytes(out.package),
                                     hush_secbuf_len(out.package), &e), &e);
        CHECK_OK(hush_json_parse(hush_secbuf_bytes(r.plain), hush_secbuf_len(r.plain), NULL,
                                 HUSH_SECMEM_NO_LOCK, &doc, &e), &e);
        received_clear(&r);
    }
    hush_server_answer_clear(&out);
    hush_server_exchange_free(x);
    sealed_clear(&s);
    return doc;
}

static const hush_json_value *embedding_of(const hush_json_doc *doc, size_t i)
{
    const hush_json_value *item =
        hush_json_array_get(hush_json_object_get(hush_json_doc_root(doc), "data", 4), i);
    return hush_json_object_get(item, "embedding", 9);
}

/* Float vectors: `dims` numbers in [-1, 1). */
static void float_vector(const hush_json_value *v, size_t dims, float *out)
{
    hush_error err = {0};
    CHECK_EQ(hush_json_length(v), dims);
    for (size_t i = 0; i < dims && i < hush_json_length(v); i++) {
        double d = 2;
        CHECK_OK(hush_json_double(hush_json_array_get(v, i), &d, &err), &err);
        CHECK(d >= -1.0 && d < 1.0);
        out[i] = (float)d;
    }
}

/* OpenAI's base64: little-endian float32s. */
static void base64_vector(const hush_json_value *v, size_t dims, float *out)
{
    size_t len = 0, raw_len = 0;
    const char *text = hush_json_string(v, &len);
    unsigned char raw[64 * 4];
    hush_error err = {0};
    CHECK(text != NULL);
    if (text == NULL)
        return;
    CHECK_OK(hush_base64_decode(text, len, raw, sizeof raw, &raw_len, &err), &err);
    CHECK_EQ(raw_len, dims * 4);
    for (size_t i = 0; i < dims && 4 * i + 3 < raw_len; i++) {
        uint32_t bits = (uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8 |
                        (uint32_t)raw[4 * i + 2] << 16 | (uint32_t)raw[4 * i + 3] << 24;
        memcpy(&out[i], &bits, 4);
    }
}

static void test_echo_embeddings(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    hush_status status;
    hush_error err = {0};
    float a[8], b[8], a_again[8], a64[8], five[5];
    hush_json_doc *doc = answer_at(srv, "/v1/embeddings",
                                   "{\"model\":\"e\",\"input\":[\"alpha\",\"beta\"]}", &status,
                                   &err);
    CHECK_OK(status, &err);
    CHECK(doc != NULL && member_equals(hush_json_doc_root(doc), "object", "list"));
    float_vector(embedding_of(doc, 0), 8, a); /* 8 by default */
    float_vector(embedding_of(doc, 1), 8, b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    hush_json_doc_free(doc);

    doc = answer_at(srv, "/v1/embeddings",
                    "{\"input\":\"alpha\",\"encoding_format\":\"float\"}", &status, &err);
    float_vector(embedding_of(doc, 0), 8, a_again); /* deterministic */
    CHECK(memcmp(a, a_again, sizeof a) == 0);
    hush_json_doc_free(doc);

    doc = answer_at(srv, "/v1/embeddings", "{\"input\":\"alpha\",\"encoding_format\":\"base64\"}",
                    &status, &err);
    base64_vector(embedding_of(doc, 0), 8, a64); /* the same numbers */
    CHECK(memcmp(a, a64, sizeof a) == 0);
    hush_json_doc_free(doc);

    doc = answer_at(srv, "/v1/embeddings", "{\"input\":\"alpha\",\"dimensions\":5}", &status, &err);
    float_vector(embedding_of(doc, 0), 5, five);
    hush_json_doc_free(doc);

    static const char *const bad[] = {"{\"input\":5}", "{\"input\":[]}",
                                      "{\"input\":\"x\",\"dimensions\":0}",
                                      "{\"input\":\"x\",\"encoding_format\":\"int8\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(answer_at(srv, "/v1/embeddings", bad[i], &status, &err) == NULL);
        CHECK_EQ(status, HUSH_E_BAD_REQUEST);
        CHECK_EQ(err.http_status, 400);
    }
    hush_server_free(srv);
}

static void test_echo_completions_and_paths(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    hush_status status;
    hush_error err = {0};
    hush_json_doc *doc = answer_at(srv, "/v1/completions", "{\"model\":\"m\",\"prompt\":\"one two\"}",
                                   &status, &err);
    CHECK_OK(status, &err);
    CHECK(doc != NULL && member_equals(hush_json_doc_root(doc), "object", "text_completion"));
    CHECK(doc != NULL && member_equals(choice0(doc), "text", "echo: one two"));
    CHECK(doc != NULL && member_equals(choice0(doc), "finish_reason", "stop"));
    hush_json_doc_free(doc);

    static const char *const unknown[] = {"/v1/audio/speech", "/v1/../v1/embeddings", "/v2/x",
                                          "/v1/chat//completions"};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        CHECK(answer_at(srv, unknown[i], "{}", &status, &err) == NULL);
        CHECK_EQ(status, HUSH_E_NOT_FOUND);
        CHECK_EQ(err.http_status, 404);
    }
    /* Embeddings have no stream. */
    stream_client c = {0};
    CHECK_STATUS(run_stream(srv, false, "/v1/embeddings", "{\"input\":\"x\",\"stream\":true}", &c,
                            &err), HUSH_E_BAD_REQUEST, &err);
    CHECK_EQ(err.http_status, 400);
    CHECK_EQ(c.r.n_events, 0);
    received_clear(&c.r);
    hush_server_free(srv);
}

/* The pass-through answers in plaintext, through the same stream. */
static void test_plaintext_pass_through(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    const char *json = CHAT_STREAM("plain words", "");
    hush_server_exchange *x = NULL;
    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    received r = {0};
    hush_error err = {0};
    CHECK_OK(hush_server_open_plaintext(srv, NULL, json, strlen(json), &x, &err), &err);
    CHECK(hush_server_exchange_is_stream(x));
    received_init(&r, NULL, NULL);
    CHECK_OK(hush_server_exchange_stream(x, nonce, on_emit, &r, &err), &err);
    stream_summary sum = summarize(&r, true);
    CHECK(strcmp(sum.text, "echo: plain words") == 0);
    CHECK(sum.done_last && !r.bad_frames);
    received_clear(&r);
    hush_server_exchange_free(x);

    CHECK_STATUS(hush_server_open_plaintext(srv, "/v1/nothing", "{}", 2, &x, &err),
                 HUSH_E_NOT_FOUND, &err);
    CHECK_STATUS(hush_server_open_plaintext(srv, NULL, "[1]", 3, &x, &err), HUSH_E_BAD_REQUEST,
                 &err);
    CHECK(x == NULL);
    hush_server_free(srv);
}

/* ---- the upstream's streams ------------------------------------------------------ */

static void test_upstream_stream(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_OPENAI, 0);
    stream_client c = {0};
    hush_error err = {0};
    CHECK_OK(run_stream(srv, true, NULL, CHAT_STREAM("a b c d", ""), &c, &err), &err);
    stream_summary sum = summarize(&c.r, true);
    CHECK(strcmp(sum.text, "upstream: a b c d") == 0);
    CHECK_EQ(sum.content_chunks, 5); /* one event per frame, as they came */
    CHECK_EQ(sum.stops, 1);
    CHECK(sum.done_last);
    received_clear(&c.r);

    stream_client comp = {0};
    CHECK_OK(run_stream(srv, false, "/v1/completions",
                        "{\"model\":\"m\",\"stream\":true,\"prompt\":\"x y\"}", &comp, &err),
             &err);
    sum = summarize(&comp.r, false);
    CHECK(strcmp(sum.text, "upstream: x y") == 0);
    CHECK(sum.done_last);
    received_clear(&comp.r);
    hush_server_free(srv);
}

/* Another path goes to the upstream's same path under its base URL. */
static void test_upstream_paths(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_OPENAI, 0);
    hush_status status;
    hush_error err = {0};
    hush_json_doc *doc = answer_at(srv, "/v1/embeddings", "{\"model\":\"e\",\"input\":\"q\"}",
                                   &status, &err);
    CHECK_OK(status, &err);
    float v[2];
    float_vector(embedding_of(doc, 0), 2, v);
    CHECK(v[0] == 0.5f && v[1] == -0.25f);
    hush_json_doc_free(doc);
    hush_json_doc *last = upstream_last();
    CHECK(last != NULL && member_equals(hush_json_doc_root(last), "path", "/v1/embeddings"));
    hush_json_doc_free(last);
    hush_server_free(srv);
}

/* A status refused before the stream is the gateway's usual answer, with no
 * frame sent; a stream cut mid-way ends in an error after its frames. */
static void test_upstream_failures(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_OPENAI, 0);
    hush_error err = {0};
    static const struct {
        const char *model;
        hush_status status;
        int http;
    } refused[] = {{"fail-503", HUSH_E_UNAVAILABLE, 503}, {"fail-500", HUSH_E_HTTP, 502}};
    for (size_t i = 0; i < 2; i++) {
        char json[256];
        stream_client c = {0};
        snprintf(json, sizeof json,
                 "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"secret words\"}]}",
                 refused[i].model);
        CHECK_STATUS(run_stream(srv, false, NULL, json, &c, &err), refused[i].status, &err);
        CHECK_EQ(err.http_status, refused[i].http);
        CHECK(strstr(err.message, "secret") == NULL);
        CHECK_EQ(c.r.n_events, 0);
        received_clear(&c.r);
    }
    stream_client cut = {0};
    CHECK_STATUS(run_stream(srv, false, NULL,
                            "{\"model\":\"stream-reset\",\"stream\":true,\"messages\":[{\"role\":"
                            "\"user\",\"content\":\"a b c d\"}]}",
                            &cut, &err), HUSH_E_HTTP, &err);
    CHECK_EQ(cut.r.n_events, 2); /* what came before the cut went out */
    received_clear(&cut.r);
    hush_server_free(srv);
}

/* A client that leaves while the upstream is quiet closes the upstream
 * request: the fake sees its client go. */
static void test_upstream_cancel(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_OPENAI, 0);
    stream_client c = {0};
    hush_error err = {0};
    long long left = upstream_stat("streams", "client_left");
    c.r.stop_on_poll = true;
    CHECK_STATUS(run_stream(srv, false, NULL,
                            "{\"model\":\"stream-hang\",\"stream\":true,\"messages\":[{\"role\":"
                            "\"user\",\"content\":\"a b\"}]}",
                            &c, &err), HUSH_E_CANCELLED, &err);
    CHECK_EQ(c.r.n_events, 1);
    long long deadline = now_ms() + LEAVE_DEADLINE_MS;
    while (upstream_stat("streams", "client_left") == left && now_ms() < deadline)
        sleep_ms(50);
    CHECK_EQ(upstream_stat("streams", "client_left"), left + 1);
    received_clear(&c.r);
    hush_server_free(srv);
}

/* GET /v1/models: the echo's own list, or the upstream's as it answered. */
static void test_models(void)
{
    hush_server *servers[2] = {new_server(HUSH_BACKEND_ECHO, 0),
                               new_server(HUSH_BACKEND_OPENAI, 0)};
    static const char *const want[2] = {"echo", "fake-model"};
    for (size_t i = 0; i < 2; i++) {
        hush_secbuf *answer = NULL;
        hush_json_doc *doc = NULL;
        hush_error err = {0};
        CHECK_OK(hush_server_models(servers[i], &answer, &err), &err);
        if (answer != NULL)
            CHECK_OK(hush_json_parse(hush_secbuf_bytes(answer), hush_secbuf_len(answer), NULL,
                                     HUSH_SECMEM_NO_LOCK, &doc, &err), &err);
        const hush_json_value *first = hush_json_array_get(
            hush_json_object_get(hush_json_doc_root(doc), "data", 4), 0);
        CHECK(member_equals(first, "id", want[i]));
        hush_json_doc_free(doc);
        hush_secbuf_free(answer);
        hush_server_free(servers[i]);
    }
}

int main(void)
{
    hush_error err = {0};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!peer_start_script(&upstream, FAKE_SCRIPT, false, NULL)) {
        fprintf(stderr, "fake_openai.py did not start: is `make deps` done?\n");
        return 1;
    }
    if (hush_keypair_generate(2048, &v1_key, &err) != HUSH_OK ||
        hush_hpke_keypair_generate(HUSH_HPKE_KEM_XWING, &xwing_key, &err) != HUSH_OK ||
        hush_hpke_keypair_generate(HUSH_HPKE_KEM_X25519_SHA256, &x25519_key, &err) != HUSH_OK) {
        fprintf(stderr, "setup failed: %s\n", err.message);
        peer_stop(&upstream);
        return 1;
    }
    ring[0] = (hush_server_v2_key){XWING_ID, xwing_key};
    ring[1] = (hush_server_v2_key){X25519_ID, x25519_key};

    RUN_TEST(test_echo_chat_stream);
    RUN_TEST(test_echo_completions_stream_xwing);
    RUN_TEST(test_echo_delay_and_cancel);
    RUN_TEST(test_echo_embeddings);
    RUN_TEST(test_echo_completions_and_paths);
    RUN_TEST(test_plaintext_pass_through);
    RUN_TEST(test_upstream_stream);
    RUN_TEST(test_upstream_paths);
    RUN_TEST(test_upstream_failures);
    RUN_TEST(test_upstream_cancel);
    RUN_TEST(test_models);

    hush_hpke_keypair_free(x25519_key);
    hush_hpke_keypair_free(xwing_key);
    hush_keypair_free(v1_key);
    bool upstream_ok = peer_stop(&upstream);
    curl_global_cleanup();
    int rc = check_report();
    return upstream_ok ? rc : 1;
}
