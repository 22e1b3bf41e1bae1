/* test_server_v2.c — the server role of protocol v2 (hush_server_open_v2,
 * then hush_server_exchange_answer): round trips of every suite through
 * the echo backend, opened with the client role of envelope_v2.h; each bad
 * input of issue 14 with the status EHBP §5 prescribes, and, with the
 * openai backend on tests/interop/fake_openai.py, that none of them reaches
 * the upstream. */
#include "check.h"
#include "peer.h"

#define FAKE_SCRIPT HUSH_TEST_INTEROP_DIR "/fake_openai.py"
#define CHAT "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi there\"}]}"
#define SMALL_FRAMES 16u /* several frames per request */

enum { XWING_ID = 2, X25519_ID = 1, OLD_X25519_ID = 7, N_KEYS = 3 };

static hush_hpke_keypair *xwing_key, *x25519_key, *old_x25519_key, *stranger_key;
static hush_server_v2_key ring[N_KEYS]; /* newest first, as a gateway passes them */
static hush_keypair *v1_key;             /* a server needs its v1 key as well */
static peer upstream;

/* ---- helpers ------------------------------------------------------------ */

static hush_server *new_server(hush_backend backend, size_t max_package)
{
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    hush_server *s = NULL;
    hush_error err = {0};
    char base[128];
    o.key = v1_key;
    o.backend = backend;
    if (backend == HUSH_BACKEND_OPENAI) {
        snprintf(base, sizeof base, "%s/v1", upstream.url);
        o.upstream_url = base;
    }
    if (max_package != 0)
        o.max_package_bytes = max_package;
    CHECK_OK(hush_server_new(&o, &s, &err), &err);
    return s;
}

/* A client's sealed request: what goes on the wire, and what it keeps. */
typedef struct sealed {
    char enc_hex[2 * HUSH_HPKE_MAX_ENC_BYTES + 1];
    char hdr_hex[HUSH_V2_HDR_HEX_LEN + 1];
    hush_secbuf *frames;
    hush_v2_exchange *ex;
} sealed;

/* Seal `json` to `key` as config `key_id` with `aead` (the client role). */
static sealed seal(const hush_hpke_keypair *key, uint8_t key_id, uint16_t aead, const char *json)
{
    sealed out = {0};
    hush_v2_keyconfig cfg = {.key_id = key_id, .n_ciphers = 1,
                             .ciphers = {{HUSH_HPKE_KDF_HKDF_SHA256, aead}}};
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    size_t enc_len = 0;
    hush_error err = {0};
    CHECK_OK(hush_hpke_keypair_public(key, &cfg.pubkey, &err), &err);
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

/* The request as the gateway passes it; `named` sends Hushcall-Key-Config. */
static hush_server_v2_request request_of(const sealed *s, bool named)
{
    hush_server_v2_request req = {
        .key_config = named ? s->hdr_hex : NULL,
        .key_config_len = named ? strlen(s->hdr_hex) : 0,
        .encapsulated_key = s->enc_hex,
        .encapsulated_key_len = strlen(s->enc_hex),
        .body = hush_secbuf_bytes(s->frames),
        .body_len = hush_secbuf_len(s->frames),
        .keys = ring,
        .key_count = N_KEYS,
    };
    return req;
}

/* Open an answer's frames with the client's exchange; NULL on failure. */
static hush_json_doc *open_answer(const sealed *s, const hush_server_answer *a)
{
    hush_secbuf *plain = NULL;
    hush_v2_opener *op = NULL;
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    CHECK_OK(hush_secbuf_new(256, 0, HUSH_SECMEM_DEFAULT, &plain, &err), &err);
    CHECK_OK(hush_v2_response_opener_new(s->ex, a->response_nonce, NULL, plain, &op, &err), &err);
    if (op != NULL && a->package != NULL) {
        CHECK_OK(hush_v2_opener_feed(op, hush_secbuf_bytes(a->package),
                                     hush_secbuf_len(a->package), &err), &err);
        CHECK_OK(hush_v2_opener_finish(op, NULL, NULL, &err), &err);
        CHECK_OK(hush_json_parse(hush_secbuf_bytes(plain), hush_secbuf_len(plain), NULL,
                                 HUSH_SECMEM_DEFAULT, &doc, &err), &err);
    }
    hush_v2_opener_free(op);
    hush_secbuf_free(plain);
    return doc;
}

static const char *reply_of(const hush_json_doc *doc)
{
    const hush_json_value *choice = hush_json_array_get(
        hush_json_object_get(hush_json_doc_root(doc), "choices", 7), 0);
    const hush_json_value *message = hush_json_object_get(choice, "message", 7);
    return hush_json_string(hush_json_object_get(message, "content", 7), NULL);
}

/* "chatcmpl-v2-" and the first 16 bytes of SHA-256(enc) in hex. */
static void expected_id(const sealed *s, char *out)
{
    unsigned char digest[HUSH_V2_DIGEST_BYTES];
    hush_v2_exchange_digest(s->ex, digest);
    memcpy(out, "chatcmpl-v2-", 12);
    hush_v2_hex_format(digest, 16, out + 12);
}

/* ---- round trips --------------------------------------------------------- */

static void round_trip(const hush_hpke_keypair *key, uint8_t key_id, uint16_t aead, bool named,
                       size_t want_index)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    sealed s = seal(key, key_id, aead, CHAT);
    hush_server_v2_request req = request_of(&s, named);
    hush_server_exchange *x = NULL;
    hush_server_answer out = {0};
    hush_error err = {0};
    uint8_t got_id = 0;
    size_t got_index = 99;
    unsigned char digest[HUSH_REPLAY_DIGEST_BYTES], binding[HUSH_REPLAY_DIGEST_BYTES];
    unsigned char want_digest[HUSH_V2_DIGEST_BYTES];
    unsigned char zeros[HUSH_V2_RESPONSE_NONCE_BYTES] = {0};

    CHECK_OK(hush_server_open_v2(srv, &req, &x, &err), &err);
    if (x != NULL) {
        CHECK(hush_server_exchange_v2_key(x, &got_id, &got_index));
        CHECK_EQ(got_id, key_id);
        CHECK_EQ(got_index, want_index);
        hush_server_exchange_replay_key(x, digest, binding);
        hush_v2_exchange_digest(s.ex, want_digest);
        CHECK(memcmp(digest, want_digest, sizeof digest) == 0);
        CHECK_OK(hush_server_exchange_answer(x, &out, &err), &err);
        CHECK(memcmp(out.response_nonce, zeros, sizeof zeros) != 0);
        hush_json_doc *doc = open_answer(&s, &out);
        char id[12 + 32 + 1];
        expected_id(&s, id);
        CHECK(doc != NULL && reply_of(doc) != NULL && strcmp(reply_of(doc), "echo: hi there") == 0);
        CHECK(doc != NULL && hush_json_object_get(hush_json_doc_root(doc), "_metadata", 9) == NULL);
        const char *got = hush_json_string(
            hush_json_object_get(hush_json_doc_root(doc), "id", 2), NULL);
        CHECK(got != NULL && strcmp(got, id) == 0);
        hush_json_doc_free(doc);
    }
    hush_server_answer_clear(&out);
    hush_server_exchange_free(x);
    sealed_clear(&s);
    hush_server_free(srv);
}

static void test_round_trips(void)
{
    round_trip(x25519_key, X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM, false, 1);  /* EHBP */
    round_trip(x25519_key, X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM, true, 1);
    round_trip(xwing_key, XWING_ID, HUSH_HPKE_AEAD_CHACHA20_POLY1305, true, 0);
    round_trip(xwing_key, XWING_ID, HUSH_HPKE_AEAD_AES_256_GCM, true, 0);
    /* An EHBP request to the older live X25519 key finds it. */
    round_trip(old_x25519_key, OLD_X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM, false, 2);
}

/* Two seals of one request have different replay keys; the binding names
 * the key, so it differs between keys and not between requests. */
static void test_replay_keys(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    unsigned char d[3][HUSH_REPLAY_DIGEST_BYTES], b[3][HUSH_REPLAY_DIGEST_BYTES];
    const hush_hpke_keypair *keys[3] = {x25519_key, x25519_key, xwing_key};
    const uint8_t ids[3] = {X25519_ID, X25519_ID, XWING_ID};
    hush_error err = {0};
    for (int i = 0; i < 3; i++) {
        sealed s = seal(keys[i], ids[i], HUSH_HPKE_AEAD_AES_256_GCM, CHAT);
        hush_server_v2_request req = request_of(&s, true);
        hush_server_exchange *x = NULL;
        CHECK_OK(hush_server_open_v2(srv, &req, &x, &err), &err);
        if (x != NULL)
            hush_server_exchange_replay_key(x, d[i], b[i]);
        hush_server_exchange_free(x);
        sealed_clear(&s);
    }
    CHECK(memcmp(d[0], d[1], sizeof d[0]) != 0);
    CHECK(memcmp(b[0], b[1], sizeof b[0]) == 0);
    CHECK(memcmp(b[0], b[2], sizeof b[0]) != 0);
    hush_server_free(srv);
}

/* ---- bad input ------------------------------------------------------------ */

static long upstream_count(void)
{
    char *text = NULL;
    size_t len = 0;
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    int64_t count = -1;
    CHECK_EQ(peer_http(&upstream, "GET", "/_last", NULL, &text, &len), 200);
    if (text != NULL)
        CHECK_OK(hush_json_parse(text, len, NULL, HUSH_SECMEM_NO_LOCK, &doc, &err), &err);
    if (doc != NULL)
        CHECK_OK(hush_json_int64(hush_json_object_get(hush_json_doc_root(doc), "count", 5),
                                 &count, &err), &err);
    hush_json_doc_free(doc);
    free(text);
    return (long)count;
}

/* `req` is refused with `code`, `http` and `message`, leaving no exchange. */
static void check_refused(const hush_server *srv, const hush_server_v2_request *req,
                          hush_status code, int http, const char *message, const char *what)
{
    hush_server_exchange *x = (hush_server_exchange *)&x; /* must be cleared */
    hush_error err = {0};
    hush_status got = hush_server_open_v2(srv, req, &x, &err);
    if (got != code || err.http_status != http || strcmp(err.message, message) != 0)
        fprintf(stderr, "  %s: status %d, HTTP %d, \"%s\"\n", what, (int)got, err.http_status,
                err.message);
    CHECK_EQ(got, code);
    CHECK_EQ(err.http_status, http);
    CHECK(strcmp(err.message, message) == 0);
    CHECK(x == NULL);
}

static void check_invalid(const hush_server *srv, const hush_server_v2_request *req,
                          const char *what)
{
    check_refused(srv, req, HUSH_E_BAD_REQUEST, 400, HUSH_SERVER_INVALID_PACKAGE, what);
}

static void check_unknown_key(const hush_server *srv, const hush_server_v2_request *req,
                              const char *what)
{
    check_refused(srv, req, HUSH_E_KEY, 422, "Unknown or expired key configuration", what);
}

/* The request of `s` with its body replaced by `body`. */
static void with_body(hush_server_v2_request *req, const unsigned char *body, size_t len)
{
    req->body = body;
    req->body_len = len;
}

static void bad_headers(const hush_server *srv, sealed *s)
{
    hush_server_v2_request req = request_of(s, false);
    char enc[sizeof s->enc_hex];
    memcpy(enc, s->enc_hex, sizeof enc);
    char *letter = strpbrk(enc, "abcdef");
    CHECK(letter != NULL);
    if (letter != NULL)
        *letter = (char)(*letter - 'a' + 'A'); /* EHBP's hex is lowercase */
    req.encapsulated_key = enc;
    check_invalid(srv, &req, "enc in uppercase hex");
    enc[0] = 'g';
    check_invalid(srv, &req, "enc not hex");
    req.encapsulated_key = s->enc_hex;
    req.encapsulated_key_len -= 2;
    check_invalid(srv, &req, "enc one byte short");
    req.encapsulated_key = NULL;
    req.encapsulated_key_len = 0;
    check_invalid(srv, &req, "no enc");
    static const char low_order[] = "0000000000000000000000000000000000000000000000000000000000000000";
    req.encapsulated_key = low_order;
    req.encapsulated_key_len = strlen(low_order);
    check_unknown_key(srv, &req, "a low-order X25519 share: as a first frame no key opens");

    req = request_of(s, true);
    req.key_config_len = 12;
    check_invalid(srv, &req, "hdr too short");
    req = request_of(s, true);
    char hdr[sizeof s->hdr_hex];
    memcpy(hdr, s->hdr_hex, sizeof hdr);
    memcpy(hdr, "09", 2); /* a key id the ring does not have */
    req.key_config = hdr;
    check_unknown_key(srv, &req, "hdr naming no live key");
    memcpy(hdr, s->hdr_hex, sizeof hdr);
    memcpy(hdr + 10, "0003", 4); /* X25519 with ChaCha20-Poly1305: a config never offered */
    check_unknown_key(srv, &req, "hdr naming a suite not offered");
    memcpy(hdr, s->hdr_hex, sizeof hdr);
    memcpy(hdr + 6, "0002", 4); /* HKDF-SHA384 */
    check_unknown_key(srv, &req, "hdr naming another KDF");
    req = request_of(s, false);
    req.key_count = 0;
    check_unknown_key(srv, &req, "no live keys");
}

static void bad_bodies(const hush_server *srv, sealed *s, sealed *named)
{
    hush_server_v2_request req = request_of(s, false);
    size_t len = hush_secbuf_len(s->frames);
    unsigned char *body = malloc(len + 8);
    memcpy(body, hush_secbuf_bytes(s->frames), len);

    with_body(&req, body, len - 1);
    check_invalid(srv, &req, "a truncated frame");
    with_body(&req, body, 2);
    check_invalid(srv, &req, "a truncated length prefix");
    static const unsigned char huge[] = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
    with_body(&req, huge, sizeof huge);
    check_invalid(srv, &req, "a frame over the cap");

    body[len - 1] ^= 0x01; /* the last frame's tag */
    with_body(&req, body, len);
    check_invalid(srv, &req, "a flipped bit in a later frame");
    body[len - 1] ^= 0x01;
    body[4] ^= 0x80; /* the first frame: no key opens it, EHBP §5.4.2's 422 */
    check_unknown_key(srv, &req, "a flipped bit in an EHBP request's first frame");
    free(body);

    req = request_of(named, true);
    len = hush_secbuf_len(named->frames);
    body = malloc(len);
    memcpy(body, hush_secbuf_bytes(named->frames), len);
    body[4] ^= 0x80;
    with_body(&req, body, len);
    check_invalid(srv, &req, "a flipped bit in a named request");
    free(body);

    sealed stranger = seal(stranger_key, X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM, CHAT);
    req = request_of(&stranger, false);
    check_unknown_key(srv, &req, "an EHBP request to a key not in the ring");
    sealed_clear(&stranger);
}

static void bad_plaintexts(const hush_server *srv)
{
    static const char *const not_objects[] = {"hello", "[1,2]", "{\"a\":", ""};
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++) {
        sealed s = seal(xwing_key, XWING_ID, HUSH_HPKE_AEAD_CHACHA20_POLY1305, not_objects[i]);
        hush_server_v2_request req = request_of(&s, true);
        check_invalid(srv, &req, not_objects[i]);
        sealed_clear(&s);
    }
    /* A stream is opened (v2 streams), but answer() is not how it is answered. */
    sealed s = seal(x25519_key, X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM,
                    "{\"model\":\"m\",\"stream\":true,\"messages\":[]}");
    hush_server_v2_request req = request_of(&s, false);
    hush_server_exchange *x = NULL;
    hush_server_answer out = {0};
    hush_error err = {0};
    CHECK_OK(hush_server_open_v2(srv, &req, &x, &err), &err);
    CHECK(hush_server_exchange_is_stream(x));
    CHECK_STATUS(hush_server_exchange_answer(x, &out, &err), HUSH_E_ARGUMENT, &err);
    hush_server_exchange_free(x);
    sealed_clear(&s);
}

static void test_bad_input_reaches_no_backend(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_OPENAI, 0);
    sealed s = seal(x25519_key, X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM, CHAT);
    sealed named = seal(xwing_key, XWING_ID, HUSH_HPKE_AEAD_CHACHA20_POLY1305, CHAT);
    long before = upstream_count();
    bad_headers(srv, &s);
    bad_bodies(srv, &s, &named);
    bad_plaintexts(srv);
    CHECK_EQ(upstream_count(), before);

    /* The same server still answers, and that one does reach the upstream. */
    hush_server_v2_request req = request_of(&named, true);
    hush_server_exchange *x = NULL;
    hush_server_answer out = {0};
    hush_error err = {0};
    CHECK_OK(hush_server_open_v2(srv, &req, &x, &err), &err);
    CHECK_OK(hush_server_exchange_answer(x, &out, &err), &err);
    CHECK_EQ(out.upstream_status, 200);
    hush_json_doc *doc = open_answer(&named, &out);
    CHECK(doc != NULL && reply_of(doc) != NULL && strcmp(reply_of(doc), "upstream: hi there") == 0);
    CHECK_EQ(upstream_count(), before + 1);
    hush_json_doc_free(doc);
    hush_server_answer_clear(&out);
    hush_server_exchange_free(x);
    sealed_clear(&named);
    sealed_clear(&s);
    hush_server_free(srv);
}

/* A body over max_package_bytes is 413 before anything is opened. */
static void test_body_over_the_limit(void)
{
    sealed s = seal(x25519_key, X25519_ID, HUSH_HPKE_AEAD_AES_256_GCM, CHAT);
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, hush_secbuf_len(s.frames) - 1);
    hush_server_v2_request req = request_of(&s, false);
    check_refused(srv, &req, HUSH_E_LIMIT, 413, "Request body too large", "over the limit");
    hush_server_free(srv);
    sealed_clear(&s);
}

/* An answer is given once; a v1 exchange names no v2 key. */
static void test_answered_once(void)
{
    hush_server *srv = new_server(HUSH_BACKEND_ECHO, 0);
    sealed s = seal(xwing_key, XWING_ID, HUSH_HPKE_AEAD_AES_256_GCM, CHAT);
    hush_server_v2_request req = request_of(&s, true);
    hush_server_exchange *x = NULL;
    hush_server_answer out = {0};
    hush_error err = {0};
    CHECK_OK(hush_server_open_v2(srv, &req, &x, &err), &err);
    CHECK_OK(hush_server_exchange_answer(x, &out, &err), &err);
    hush_server_answer_clear(&out);
    CHECK_STATUS(hush_server_exchange_answer(x, &out, &err), HUSH_E_ARGUMENT, &err);
    CHECK(out.package == NULL);
    hush_server_exchange_free(x);
    sealed_clear(&s);
    hush_server_free(srv);
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
        hush_hpke_keypair_generate(HUSH_HPKE_KEM_X25519_SHA256, &x25519_key, &err) != HUSH_OK ||
        hush_hpke_keypair_generate(HUSH_HPKE_KEM_X25519_SHA256, &old_x25519_key, &err) !=
            HUSH_OK ||
        hush_hpke_keypair_generate(HUSH_HPKE_KEM_X25519_SHA256, &stranger_key, &err) != HUSH_OK) {
        fprintf(stderr, "setup failed: %s\n", err.message);
        peer_stop(&upstream);
        return 1;
    }
    ring[0] = (hush_server_v2_key){XWING_ID, xwing_key};
    ring[1] = (hush_server_v2_key){X25519_ID, x25519_key};
    ring[2] = (hush_server_v2_key){OLD_X25519_ID, old_x25519_key};

    RUN_TEST(test_round_trips);
    RUN_TEST(test_replay_keys);
    RUN_TEST(test_bad_input_reaches_no_backend);
    RUN_TEST(test_body_over_the_limit);
    RUN_TEST(test_answered_once);

    hush_hpke_keypair_free(stranger_key);
    hush_hpke_keypair_free(old_x25519_key);
    hush_hpke_keypair_free(x25519_key);
    hush_hpke_keypair_free(xwing_key);
    hush_keypair_free(v1_key);
    bool upstream_ok = peer_stop(&upstream);
    curl_global_cleanup();
    int rc = check_report();
    return upstream_ok ? rc : 1;
}
