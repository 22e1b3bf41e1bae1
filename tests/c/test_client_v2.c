/* test_client_v2.c — the client's protocol v2 (docs/protocol-v2.md) against
 * the independent EHBP server tests/interop/ehbp_server.py, which shares no
 * code with the core: both suites, a plain EHBP server, every way its
 * answers can misbehave (each must fail closed, releasing nothing), key
 * rotation (422, one refetch, a fresh seal), require_pq, a downgrade, the
 * v2 key pin, and retries that seal afresh (the peer answers a reused enc
 * with 409). */
#include "check.h"
#include "peer.h"

#include "hushcall/envelope_v2.h"

#define EHBP_SCRIPT HUSH_TEST_INTEROP_DIR "/ehbp_server.py"

static peer pq_peer, plain_peer;
/* For "auto" clients, which make an RSA key in the background (v1 might be
 * needed) unless given one: 2048 bits, made once. */
static hush_keypair *shared_key;

static void v2_options(hush_client_options *o, const peer *p, const char *protocol)
{
    *o = (hush_client_options)HUSH_CLIENT_OPTIONS_INIT;
    o->base_url = p->url;
    o->allow_http = true;
    o->protocol = protocol;
    o->client_key = protocol != NULL && strcmp(protocol, "v2") == 0 ? NULL : shared_key;
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

static hush_status complete(hush_client *c, const char *content, hush_json_doc **doc,
                            hush_error *err)
{
    *doc = NULL;
    hush_error_clear(err);
    hush_secbuf *req = chat_request(content, NULL);
    CHECK(req != NULL);
    if (c == NULL || req == NULL) {
        hush_secbuf_free(req);
        return HUSH_E_INTERNAL;
    }
    return hush_client_complete(c, req, NULL, doc, err);
}

static const char *meta_string(const hush_json_doc *doc, const char *name)
{
    const char *path[] = {"_metadata", name, NULL};
    return json_path_string(doc, path);
}

/* An integer member a.b, or -1. */
static long number_at(const hush_json_doc *doc, const char *a, const char *b)
{
    const hush_json_value *v = json_member2(doc, a, b);
    size_t len = 0;
    const char *text = v != NULL ? hush_json_number_text(v, &len) : NULL;
    return text != NULL && hush_json_is_integer(v) ? strtol(text, NULL, 10) : -1;
}

#define CHECK_STR_EQ(got, want)                                                          \
    do {                                                                                 \
        const char *check_g_ = (got);                                                    \
        CHECK(check_g_ != NULL && strcmp(check_g_, (want)) == 0);                        \
        if (check_g_ == NULL || strcmp(check_g_, (want)) != 0)                           \
            fprintf(stderr, "  got \"%s\", want \"%s\"\n", check_g_ ? check_g_ : "(null)", \
                    (want));                                                             \
    } while (0)

/* A call that must succeed with the echo, under `suite` (the peer's _peer.suite). */
static void expect_v2_echo(hush_client *c, const char *content, const char *peer_suite,
                           const char *suite_name)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_OK(complete(c, content, &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, content));
    if (doc == NULL)
        return;
    const char *peer_path[] = {"_peer", "suite", NULL};
    CHECK_STR_EQ(json_path_string(doc, peer_path), peer_suite);
    CHECK_STR_EQ(meta_string(doc, "protocol"), "v2");
    CHECK_STR_EQ(meta_string(doc, "suite"), suite_name);
    CHECK_EQ(number_at(doc, "_metadata", "status"), 200);
    CHECK_EQ(number_at(doc, "_metadata", "key_id"), number_at(doc, "_peer", "key_id"));
    const char *fp = meta_string(doc, "server_key_fingerprint");
    CHECK(fp != NULL && strncmp(fp, "sha256:", 7) == 0 && strlen(fp) == 71);
    hush_json_doc_free(doc);
}

/* A call that must fail with `expected`, releasing no answer. */
static void expect_failure(hush_client *c, const char *content, hush_status expected)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_status st = complete(c, content, &doc, &err);
    if (st != expected)
        fprintf(stderr, "  expected %s, got %s (%s)\n", hush_strerror(expected),
                hush_strerror(st), err.message);
    CHECK_EQ(st, expected);
    CHECK(doc == NULL);
    hush_json_doc_free(doc);
}

/* The fingerprint of the peer's config of KEM `kem`, read from its list. */
static bool peer_fingerprint(const peer *p, uint16_t kem, char fp[HUSH_FINGERPRINT_LEN])
{
    char *body = NULL;
    size_t len = 0;
    hush_v2_keyconfig *cfgs = NULL;
    size_t count = 0;
    bool found = false;
    CHECK_EQ(peer_http(p, "GET", "/.well-known/hushcall-hpke-keys", NULL, &body, &len), 200);
    hush_error err = {0};
    if (body != NULL && hush_v2_keyconfigs_parse(body, len, &cfgs, &count, &err) == HUSH_OK)
        for (size_t i = 0; i < count && !found; i++)
            found = hush_hpke_pubkey_kem(cfgs[i].pubkey) == kem &&
                    hush_hpke_pubkey_fingerprint(cfgs[i].pubkey, fp, &err) == HUSH_OK;
    hush_v2_keyconfigs_free(cfgs, count);
    free(body);
    CHECK(found);
    return found;
}

/* ---- the suites ---------------------------------------------------------- */

static void test_auto_prefers_pq(void)
{
    hush_client_options o;
    v2_options(&o, &pq_peer, NULL); /* "auto", the default */
    hush_client *c = new_client(&o);
    expect_v2_echo(c, "hello pq", "pq", "xwing-chacha20poly1305");
    expect_v2_echo(c, "cached configs", "pq", "xwing-chacha20poly1305");
    hush_client_free(c);
}

static void test_plain_ehbp_server(void)
{
    hush_client_options o;
    v2_options(&o, &plain_peer, "v2");
    hush_client *c = new_client(&o);
    expect_v2_echo(c, "hello ehbp", "ehbp", "ehbp-x25519-aes256gcm");
    hush_client_free(c);
}

static void test_require_pq_refuses_plain_ehbp(void)
{
    hush_client_options o;
    v2_options(&o, &plain_peer, NULL);
    o.require_pq = true;
    hush_client *c = new_client(&o);
    expect_failure(c, "must not be sent", HUSH_E_KEY);
    hush_client_free(c);
}

static void test_v2_refused_without_configs(void)
{
    /* The NOMYO peer publishes no v2 configs: "v2" fails, "auto" would use v1. */
    peer nomyo;
    const char *args[] = {"--bits", "2048", NULL};
    CHECK(peer_start(&nomyo, false, args));
    hush_client_options o;
    v2_options(&o, &nomyo, "v2");
    hush_client *c = new_client(&o);
    expect_failure(c, "no v2 here", HUSH_E_UNSUPPORTED);
    hush_client_free(c);
    CHECK(peer_stat(&nomyo, "completions") == 0);

    /* "auto" speaks v1 there, and remembers it: one key fetch for two calls. */
    hush_error err = {0};
    v2_options(&o, &nomyo, "auto");
    c = new_client(&o);
    for (int i = 0; i < 2; i++) {
        hush_json_doc *doc = NULL;
        CHECK_OK(complete(c, "v1 it is", &doc, &err), &err);
        CHECK(doc != NULL && response_echoes(doc, "v1 it is"));
        CHECK(doc != NULL && meta_string(doc, "protocol") == NULL);
        hush_json_doc_free(doc);
    }
    CHECK_EQ(peer_stat(&nomyo, "completions"), 2);
    CHECK_EQ(peer_stat(&nomyo, "pubkey_fetches"), 1);
    hush_client_free(c);

    /* require_pq never falls back to v1 (the configs' 404s end the call),
     * so it makes no RSA key either. */
    v2_options(&o, &nomyo, "auto");
    o.require_pq = true;
    c = new_client(&o);
    char *pem = NULL;
    CHECK_STATUS(hush_client_public_pem(c, &pem, &err), HUSH_E_ARGUMENT, &err);
    CHECK(pem == NULL);
    expect_failure(c, "no fallback", HUSH_E_UNSUPPORTED);
    CHECK_EQ(peer_stat(&nomyo, "completions"), 2);
    hush_client_free(c);
    CHECK(peer_stop(&nomyo));
}

static void test_bad_options(void)
{
    hush_client_options o;
    v2_options(&o, &pq_peer, "v3");
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
    v2_options(&o, &pq_peer, "v1");
    o.require_pq = true;
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
    v2_options(&o, &pq_peer, NULL);
    o.v2_key_fingerprint = "sha256:xyz";
    CHECK_STATUS(hush_client_new(&o, &c, &err), HUSH_E_ARGUMENT, &err);
    CHECK(c == NULL);

    /* A v2 client makes no RSA key, so it has none to show. */
    v2_options(&o, &pq_peer, "v2");
    c = new_client(&o);
    char *pem = NULL;
    CHECK_STATUS(hush_client_public_pem(c, &pem, &err), HUSH_E_ARGUMENT, &err);
    CHECK(pem == NULL);
    hush_client_free(c);
}

/* A tier travels on v2 too (X-Security-Tier, docs/attestation.md): "auto"
 * no longer falls back to v1 for it, and "v2" sends it. */
static void test_tier_on_v2(void)
{
    const char *protocols[] = {NULL, "v2"};
    for (size_t i = 0; i < 2; i++) {
        hush_client_options o;
        v2_options(&o, &pq_peer, protocols[i]);
        o.security_tier = "high";
        hush_client *c = new_client(&o);
        expect_v2_echo(c, "tiered", "pq", "xwing-chacha20poly1305");
        hush_client_free(c);
    }
}

/* ---- pins ---------------------------------------------------------------- */

static void test_pin(void)
{
    char fp[HUSH_FINGERPRINT_LEN];
    if (!peer_fingerprint(&pq_peer, HUSH_HPKE_KEM_XWING, fp))
        return;
    hush_client_options o;
    v2_options(&o, &pq_peer, "v2");
    o.v2_key_fingerprint = fp;
    hush_client *c = new_client(&o);
    expect_v2_echo(c, "pinned", "pq", "xwing-chacha20poly1305");
    hush_client_free(c);

    o.v2_key_fingerprint =
        "sha256:00000000000000000000000000000000000000000000000000000000000000aa";
    c = new_client(&o);
    expect_failure(c, "wrong pin", HUSH_E_PIN);
    hush_client_free(c);
}

/* ---- misbehaving answers --------------------------------------------------- */

static void test_misbehaving_answers_fail_closed(void)
{
    static const struct {
        const char *mode;
        hush_status expected;
    } cases[] = {
        {"strip-nonce", HUSH_E_AUTH},   {"bad-nonce", HUSH_E_AUTH},
        {"flip-bit", HUSH_E_AUTH},      {"truncate", HUSH_E_FORMAT},
        {"plaintext-502", HUSH_E_HTTP}, {"oversize-frame", HUSH_E_LIMIT},
        {"other-enc", HUSH_E_AUTH},
    };
    const peer *peers[] = {&pq_peer, &plain_peer};
    for (size_t p = 0; p < 2; p++) {
        hush_client_options o;
        v2_options(&o, peers[p], "v2");
        hush_client *c = new_client(&o);
        expect_v2_echo(c, "before", p == 0 ? "pq" : "ehbp",
                       p == 0 ? "xwing-chacha20poly1305" : "ehbp-x25519-aes256gcm");
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            char order[128];
            snprintf(order, sizeof order, "{\"misbehave\": \"%s\"}", cases[i].mode);
            CHECK(peer_http(peers[p], "POST", "/__control", order, NULL, NULL) == 200);
            fprintf(stderr, "  %s: ", cases[i].mode);
            expect_failure(c, "secret answer", cases[i].expected);
            fprintf(stderr, "ok\n");
        }
        /* The client stays usable. */
        expect_v2_echo(c, "after", p == 0 ? "pq" : "ehbp",
                       p == 0 ? "xwing-chacha20poly1305" : "ehbp-x25519-aes256gcm");
        hush_client_free(c);
    }
}

/* ---- rotation, retries ------------------------------------------------------- */

static void test_rotation_refetches_once(void)
{
    const peer *peers[] = {&pq_peer, &plain_peer};
    for (size_t p = 0; p < 2; p++) {
        hush_client_options o;
        v2_options(&o, peers[p], "v2");
        hush_client *c = new_client(&o);
        const char *suite = p == 0 ? "pq" : "ehbp";
        const char *name = p == 0 ? "xwing-chacha20poly1305" : "ehbp-x25519-aes256gcm";
        expect_v2_echo(c, "old key", suite, name);
        CHECK(peer_http(peers[p], "POST", "/__control", "{\"rotate\": true}", NULL, NULL) == 200);
        expect_v2_echo(c, "new key", suite, name); /* 422, refetch, fresh seal */
        hush_client_free(c);
    }
}

static void test_retry_seals_afresh(void)
{
    hush_client_options o;
    v2_options(&o, &pq_peer, "v2");
    o.max_retries = 1;
    hush_client *c = new_client(&o);
    CHECK(peer_http(&pq_peer, "POST", "/__control", "{\"misbehave\": \"unavailable-503\"}", NULL,
                    NULL) == 200);
    /* The peer opened (and remembered) the first seal's enc: a resend of it
     * would get 409. */
    expect_v2_echo(c, "retried", "pq", "xwing-chacha20poly1305");
    hush_client_free(c);

    o.max_retries = 0;
    c = new_client(&o);
    CHECK(peer_http(&pq_peer, "POST", "/__control", "{\"misbehave\": \"unavailable-503\"}", NULL,
                    NULL) == 200);
    expect_failure(c, "not retried", HUSH_E_UNAVAILABLE);
    hush_client_free(c);
}

static void test_downgrade_refused(void)
{
    hush_client_options o;
    v2_options(&o, &pq_peer, NULL);
    o.require_pq = true;
    hush_client *c = new_client(&o);
    expect_v2_echo(c, "pq first", "pq", "xwing-chacha20poly1305");
    CHECK(peer_http(&pq_peer, "POST", "/__control", "{\"drop_pq\": true}", NULL, NULL) == 200);
    /* Our X-Wing key is gone there: 422, refetch, and only X25519 is offered. */
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "must not be sent", &doc, &err), HUSH_E_KEY, &err);
    CHECK(doc == NULL);
    CHECK(strstr(err.message, "downgrade") != NULL);
    hush_client_free(c);

    /* Without require_pq the same list is used as it is (X25519). */
    o.require_pq = false;
    c = new_client(&o);
    expect_v2_echo(c, "x25519 now", "ehbp", "ehbp-x25519-aes256gcm");
    hush_client_free(c);
    CHECK(peer_http(&pq_peer, "POST", "/__control", "{\"rotate\": true}", NULL, NULL) == 200);
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
    RUN_TEST(test_auto_prefers_pq);
    RUN_TEST(test_plain_ehbp_server);
    RUN_TEST(test_require_pq_refuses_plain_ehbp);
    RUN_TEST(test_v2_refused_without_configs);
    RUN_TEST(test_bad_options);
    RUN_TEST(test_tier_on_v2);
    RUN_TEST(test_pin);
    RUN_TEST(test_misbehaving_answers_fail_closed);
    RUN_TEST(test_rotation_refetches_once);
    RUN_TEST(test_retry_seals_afresh);
    RUN_TEST(test_downgrade_refused);
    bool stopped = peer_stop(&pq_peer) & peer_stop(&plain_peer);
    CHECK(stopped);
    hush_keypair_free(shared_key);
    curl_global_cleanup();
    return check_report();
}
