/* test_client_attest.c — attest, then send (docs/attestation.md "Attest,
 * then send (protocol v2)"), the C client against the independent peer
 * tests/interop/ehbp_server.py started with --tpm on a swtpm: a verified
 * attest-then-send on both suites and on a stream, the verified configs
 * cached until they rotate, and every refusal with nothing sent (the peer
 * counts its POSTs): a quote for another nonce, over other configs, by an
 * AIK the policy does not pin, with a PCR outside the policy, and a server
 * with no attestation at all; per-answer quotes relayed from another
 * exchange (or missing) refused, the answer wiped unread.
 *
 * The AIK's fingerprint is computed here from the spec (SHA-256 of the
 * marshalled TPMT_PUBLIC inside aik_pubkey_b64's TPM2B_PUBLIC), not by
 * hushcall. */
#include <openssl/evp.h>

#include "check.h"
#include "peer.h"
#include "swtpm.h"

#include "hushcall/base64.h"

#define EHBP_SCRIPT HUSH_TEST_INTEROP_DIR "/ehbp_server.py"
#define AIK_HANDLE "0x81000002"
#define AIK_ATTRIBUTES "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
#define ZERO_NONCE "0000000000000000000000000000000000000000000000000000000000000000"

static swtpm tpm_sim;
static peer tpm_peer, bare_peer; /* with --tpm, and without (no attestation: 404) */
static char aik_fp[HUSH_FINGERPRINT_LEN];
static char dir[64];
static char pinned_policy[128], other_aik_policy[128], pcr_policy[128];
static char ca_file[128]; /* the TPM peer's CA: it serves HTTPS, so "maximum" may be asked */

/* ---- set-up ------------------------------------------------------------- */

static bool run_tool(const char *const argv[])
{
    int rc = run_program(argv);
    if (rc != 0)
        fprintf(stderr, "%s exited with %d (tpm2-tools is needed)\n", argv[0], rc);
    return rc == 0;
}

/* The peer's AIK: a restricted ECC signing key made persistent with
 * tpm2-tools before the peer starts. */
static bool make_aik(void)
{
    char ctx[128];
    snprintf(ctx, sizeof ctx, "%s/aik.ctx", dir);
    const char *create[] = {"tpm2_createprimary", "-Q", "-T", tpm_sim.tcti, "-C", "e", "-G",
                            "ecc256:ecdsa-sha256:null", "-a", AIK_ATTRIBUTES, "-c", ctx, NULL};
    const char *evict[] = {"tpm2_evictcontrol", "-Q", "-T", tpm_sim.tcti, "-C", "o", "-c", ctx,
                           AIK_HANDLE, NULL};
    const char *flush[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-t", NULL};
    return run_tool(create) && run_tool(evict) && run_tool(flush);
}

/* "sha256:" and the hex SHA-256 of the TPMT_PUBLIC in a TPM2B_PUBLIC (its
 * 2-byte size prefix dropped), as docs/attestation.md defines the fingerprint. */
static bool fingerprint_of(const char *b64, char out[HUSH_FINGERPRINT_LEN])
{
    unsigned char pub[2048], digest[32];
    size_t len = 0;
    unsigned int dlen = 0;
    if (hush_base64_decode(b64, strlen(b64), pub, sizeof pub, &len, NULL) != HUSH_OK || len < 3 ||
        (size_t)((pub[0] << 8) | pub[1]) != len - 2 ||
        EVP_Digest(pub + 2, len - 2, digest, &dlen, EVP_sha256(), NULL) != 1)
        return false;
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", digest[i]);
    return true;
}

/* The peer's AIK fingerprint, from one attestation it serves. */
static bool learn_aik_fingerprint(void)
{
    char *body = NULL;
    size_t len = 0;
    hush_json_doc *doc = NULL;
    bool ok = peer_http(&tpm_peer, "GET", "/.well-known/hushcall-attestation?nonce=" ZERO_NONCE,
                        NULL, &body, &len) == 200 &&
              hush_json_parse(body, len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) == HUSH_OK;
    const char *path[] = {"tpm_attestation", "aik_pubkey_b64", NULL};
    const char *b64 = ok ? json_path_string(doc, path) : NULL;
    ok = b64 != NULL && fingerprint_of(b64, aik_fp);
    if (!ok)
        fprintf(stderr, "setup: the peer's attestation has no readable aik_pubkey_b64\n");
    hush_json_doc_free(doc);
    free(body);
    return ok;
}

static bool write_policy(char *path, size_t cap, const char *name, const char *json)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    bool ok = f != NULL && fputs(json, f) >= 0;
    if (f != NULL)
        ok = fclose(f) == 0 && ok;
    return ok;
}

/* The pinned policy, one pinning another AIK, one whose PCR 0 is not the
 * swtpm's (a fresh swtpm's PCR 0 is all zeros). */
static bool write_policies(void)
{
    char json[512];
    snprintf(json, sizeof json, "{\"aik_fingerprints\": [\"%s\"]}", aik_fp);
    bool ok = write_policy(pinned_policy, sizeof pinned_policy, "pinned.json", json);
    snprintf(json, sizeof json, "{\"aik_fingerprints\": [\"sha256:%064d\"]}", 0);
    ok = ok && write_policy(other_aik_policy, sizeof other_aik_policy, "other.json", json);
    snprintf(json, sizeof json,
             "{\"aik_fingerprints\": [\"%s\"], \"pcrs\": {\"sha256\": {\"0\": \"%s\"}}}", aik_fp,
             "1111111111111111111111111111111111111111111111111111111111111111");
    return ok && write_policy(pcr_policy, sizeof pcr_policy, "pcr.json", json);
}

/* ---- the peer's counters and controls ----------------------------------- */

/* A counter of the peer's control answer ("posts", "attestations"), -1 on failure. */
static long long peer_count(const peer *p, const char *name)
{
    char *body = NULL;
    size_t len = 0;
    hush_json_doc *doc = NULL;
    int64_t v = -1;
    if (peer_http(p, "POST", "/__control", "{}", &body, &len) == 200 &&
        hush_json_parse(body, len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) == HUSH_OK &&
        hush_json_int64(hush_json_object_get(hush_json_doc_root(doc), name, strlen(name)), &v,
                        NULL) != HUSH_OK)
        v = -1;
    hush_json_doc_free(doc);
    free(body);
    CHECK(v >= 0);
    return v;
}

static void control(const peer *p, const char *json)
{
    CHECK_EQ(peer_http(p, "POST", "/__control", json, NULL, NULL), 200);
}

/* ---- clients and calls ------------------------------------------------- */

static hush_client *attested_client(const peer *p, const char *protocol, const char *policy)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = p->url;
    o.allow_http = true;
    o.ca_file = p == &tpm_peer ? ca_file : NULL;
    o.protocol = protocol;
    o.require_pq = protocol == NULL; /* "auto" without an RSA key to make */
    o.require_attestation = true;
    o.attestation_policy = policy;
    o.max_retries = 0;
    o.breaker_threshold = 1000;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    return c;
}

/* One chat call, of the tier `tier` (NULL: the client's). */
static hush_status complete_tier(hush_client *c, const char *content, const char *tier,
                                 hush_json_doc **doc, hush_error *err)
{
    *doc = NULL;
    hush_error_clear(err);
    hush_secbuf *req = chat_request(content, NULL);
    if (c == NULL || req == NULL) {
        hush_secbuf_free(req);
        return HUSH_E_INTERNAL;
    }
    hush_call_options co = {.security_tier = tier};
    return hush_client_complete(c, req, &co, doc, err);
}

static hush_status complete(hush_client *c, const char *content, hush_json_doc **doc,
                            hush_error *err)
{
    return complete_tier(c, content, NULL, doc, err);
}

static bool attestation_bool(const hush_json_doc *doc, const char *name)
{
    const hush_json_value *v =
        hush_json_object_get(json_member2(doc, "_metadata", "attestation"), name, strlen(name));
    return hush_json_type_of(v) == HUSH_JSON_BOOL && hush_json_bool(v);
}

static const char *attestation_string(const hush_json_doc *doc, const char *name)
{
    const char *path[] = {"_metadata", "attestation", name, NULL};
    return json_path_string(doc, path);
}

static bool str_is(const char *got, const char *want)
{
    if (got != NULL && strcmp(got, want) == 0)
        return true;
    fprintf(stderr, "  got \"%s\", want \"%s\"\n", got ? got : "(null)", want);
    return false;
}

/* A call that must come back verified, its config attested, under `suite`. */
static void expect_verified(hush_client *c, const char *content, const char *suite)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_OK(complete(c, content, &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, content));
    if (doc == NULL)
        return;
    const char *suite_path[] = {"_metadata", "suite", NULL};
    CHECK(str_is(json_path_string(doc, suite_path), suite));
    CHECK(attestation_bool(doc, "verified"));
    CHECK(attestation_bool(doc, "key_config_verified"));
    CHECK(str_is(attestation_string(doc, "aik_fingerprint"), aik_fp));
    const hush_json_value *pcrs = hush_json_object_get(
        json_member2(doc, "_metadata", "attestation"), "pcrs", 4);
    CHECK(hush_json_type_of(hush_json_object_get(pcrs, "sha256", 6)) == HUSH_JSON_OBJECT);
    hush_json_doc_free(doc);
}

/* A call refused with HUSH_E_ATTESTATION whose message holds `reason`, no
 * answer released, and `posts` new POSTs at the peer (0: nothing sent). */
static void expect_refused(hush_client *c, const peer *p, const char *reason, long long posts)
{
    long long before = peer_count(p, "posts");
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_STATUS(complete(c, "must stay secret", &doc, &err), HUSH_E_ATTESTATION, &err);
    CHECK(doc == NULL);
    CHECK(strstr(err.message, reason) != NULL);
    if (strstr(err.message, reason) == NULL)
        fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err.message, reason);
    CHECK(strstr(err.message, "must stay secret") == NULL);
    CHECK_EQ(peer_count(p, "posts") - before, posts);
    hush_json_doc_free(doc);
}

/* ---- attest, then send --------------------------------------------------- */

static void test_verified_both_suites(void)
{
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    expect_verified(c, "sealed to xwing", "xwing-chacha20poly1305");
    hush_client_free(c);

    /* X25519 alone in the list served (and attested): EHBP's suite. */
    control(&tpm_peer, "{\"drop_pq\": true}");
    c = attested_client(&tpm_peer, "v2", pinned_policy);
    expect_verified(c, "sealed to x25519", "ehbp-x25519-aes256gcm");
    hush_client_free(c);
    control(&tpm_peer, "{\"rotate\": true}");

    /* "auto" speaks v2 for an attested call (no fallback to NOMYO's v1). */
    c = attested_client(&tpm_peer, NULL, pinned_policy);
    expect_verified(c, "auto", "xwing-chacha20poly1305");
    hush_client_free(c);
}

/* The stream's chunks joined; its end status in *end. */
static void read_stream(hush_call *call, char *text, size_t cap, int *chunks, hush_status *end,
                        hush_error *err)
{
    hush_json_doc *chunk = NULL;
    size_t used = 0;
    *chunks = 0;
    text[0] = '\0';
    while ((*end = hush_call_next_chunk(call, -1, &chunk, err)) == HUSH_OK && chunk != NULL) {
        const hush_json_value *choice = hush_json_array_get(
            hush_json_object_get(hush_json_doc_root(chunk), "choices", 7), 0);
        size_t len = 0;
        const char *piece = hush_json_string(
            hush_json_object_get(hush_json_object_get(choice, "delta", 5), "content", 7), &len);
        if (piece != NULL && used + len < cap) {
            memcpy(text + used, piece, len);
            used += len;
            text[used] = '\0';
        }
        (*chunks)++;
        hush_json_doc_free(chunk);
    }
}

static hush_call *start_stream(hush_client *c, const char *content)
{
    char json[256];
    snprintf(json, sizeof json,
             "{\"model\": \"m\", \"stream\": true, \"messages\": [{\"role\": \"user\", "
             "\"content\": \"%s\"}]}",
             content);
    hush_call *call = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_stream(c, request_from_string(json), NULL, &call, &err), &err);
    return call;
}

static void test_stream(void)
{
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    char text[512];
    int chunks;
    hush_status end;
    hush_error err;
    hush_call *call = start_stream(c, "a quoted stream");
    read_stream(call, text, sizeof text, &chunks, &end, &err);
    CHECK_OK(end, &err);
    CHECK(chunks > 2);
    CHECK(str_is(text, "echo: a quoted stream"));
    hush_call_free(call);

    /* A relayed quote: refused at the head, not one chunk released. */
    control(&tpm_peer, "{\"attest\": {\"relay_answer\": true}}");
    call = start_stream(c, "a relayed stream");
    read_stream(call, text, sizeof text, &chunks, &end, &err);
    CHECK_STATUS(end, HUSH_E_ATTESTATION, &err);
    CHECK_EQ(chunks, 0);
    CHECK(strstr(err.message, "wrong qualifying data") != NULL);
    hush_call_free(call);
    control(&tpm_peer, "{\"attest\": {}}");
    hush_client_free(c);
}

/* ---- refusals before anything is sent ------------------------------------- */

static void test_replayed_quote_refused(void)
{
    control(&tpm_peer, "{\"attest\": {\"stale_nonce\": true}}");
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    expect_refused(c, &tpm_peer, "wrong qualifying data", 0);
    control(&tpm_peer, "{\"attest\": {}}");
    /* The failure is not cached: the next call attests afresh, and passes. */
    expect_verified(c, "honest again", "xwing-chacha20poly1305");
    hush_client_free(c);
}

static void test_other_configs_refused(void)
{
    control(&tpm_peer, "{\"attest\": {\"other_configs\": true}}");
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    expect_refused(c, &tpm_peer, "wrong qualifying data", 0);
    hush_client_free(c);
    control(&tpm_peer, "{\"attest\": {}}");
}

static void test_policy_refusals(void)
{
    hush_client *c = attested_client(&tpm_peer, "v2", other_aik_policy);
    expect_refused(c, &tpm_peer, "aik not in policy", 0);
    hush_client_free(c);
    c = attested_client(&tpm_peer, "v2", pcr_policy);
    expect_refused(c, &tpm_peer, "pcr value not in policy", 0);
    hush_client_free(c);
}

/* A server without a TPM (404), or one that stops attesting: nothing sent,
 * "v2" and "auto" alike ("auto" finds v2 configs and no attestation). */
static void test_no_attestation_refused(void)
{
    const char *protocols[] = {"v2", NULL};
    for (size_t i = 0; i < 2; i++) {
        hush_client *c = attested_client(&bare_peer, protocols[i], pinned_policy);
        expect_refused(c, &bare_peer, "not attested", 0);
        hush_client_free(c);
    }
    control(&tpm_peer, "{\"attest\": {\"unavailable\": true}}");
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    expect_refused(c, &tpm_peer, "HTTP 404", 0);
    hush_client_free(c);
    control(&tpm_peer, "{\"attest\": {}}");
}

/* ---- per-answer quotes ----------------------------------------------------- */

static void test_answer_quotes(void)
{
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    expect_verified(c, "a first exchange", "xwing-chacha20poly1305");
    /* The previous exchange's quote on this answer: sent, then refused. */
    control(&tpm_peer, "{\"attest\": {\"relay_answer\": true}}");
    expect_refused(c, &tpm_peer, "wrong qualifying data", 1);
    control(&tpm_peer, "{\"attest\": {\"no_answer_quote\": true}}");
    expect_refused(c, &tpm_peer, "no attestation", 1);
    control(&tpm_peer, "{\"attest\": {}}");
    expect_verified(c, "usable after", "xwing-chacha20poly1305");
    hush_client_free(c);
}

/* A tier that asks for a quote without requiring one: the relayed quote is
 * reported, not enforced, and the plain fetch is reported unattested. */
static void test_tier_reports_quote(void)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = tpm_peer.url;
    o.ca_file = ca_file;
    o.protocol = "v2";
    o.security_tier = "high";
    o.attestation_policy = pinned_policy;
    o.max_retries = 0;
    hush_client *c = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    long long attestations = peer_count(&tpm_peer, "attestations");
    hush_json_doc *doc = NULL;
    CHECK_OK(complete(c, "tiered", &doc, &err), &err);
    CHECK(doc != NULL && attestation_bool(doc, "verified"));
    CHECK(doc != NULL && !attestation_bool(doc, "key_config_verified"));
    hush_json_doc_free(doc);
    CHECK_EQ(peer_count(&tpm_peer, "attestations") - attestations, 0);

    control(&tpm_peer, "{\"attest\": {\"relay_answer\": true}}");
    CHECK_OK(complete(c, "tiered, relayed", &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, "tiered, relayed"));
    CHECK(doc != NULL && !attestation_bool(doc, "verified"));
    CHECK(doc != NULL && str_is(attestation_string(doc, "reason"), "wrong qualifying data"));
    hush_json_doc_free(doc);
    control(&tpm_peer, "{\"attest\": {}}");
    hush_client_free(c);
}

/* ---- the cache ------------------------------------------------------------- */

static void test_cache_until_rotation(void)
{
    hush_client *c = attested_client(&tpm_peer, "v2", pinned_policy);
    long long before = peer_count(&tpm_peer, "attestations");
    expect_verified(c, "one", "xwing-chacha20poly1305");
    expect_verified(c, "two", "xwing-chacha20poly1305");
    CHECK_EQ(peer_count(&tpm_peer, "attestations") - before, 1);

    /* Rotated: the old config gets 422, and the new one is attested before use. */
    control(&tpm_peer, "{\"rotate\": true}");
    expect_verified(c, "three", "xwing-chacha20poly1305");
    CHECK_EQ(peer_count(&tpm_peer, "attestations") - before, 2);

    /* A new config that does not verify is never used. */
    control(&tpm_peer, "{\"rotate\": true}");
    control(&tpm_peer, "{\"attest\": {\"other_configs\": true}}");
    expect_refused(c, &tpm_peer, "wrong qualifying data", 1); /* the 422'd POST alone */
    control(&tpm_peer, "{\"attest\": {}}");
    hush_client_free(c);
}

/* Whether a call of `tier` succeeds with its config attested or not. */
static void expect_config_verified(hush_client *c, const char *tier, bool attested)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_OK(complete_tier(c, "tiered call", tier, &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, "tiered call"));
    CHECK(doc != NULL && attestation_bool(doc, "key_config_verified") == attested);
    hush_json_doc_free(doc);
}

/* Configs fetched plainly (by a call that needed no attestation) do not
 * serve a "maximum" call: it attests first, and its configs then serve all. */
static void test_plain_fetch_not_trusted(void)
{
    hush_client *c = NULL;
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = tpm_peer.url;
    o.ca_file = ca_file;
    o.protocol = "v2";
    o.attestation_policy = pinned_policy;
    o.max_retries = 0;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    long long before = peer_count(&tpm_peer, "attestations");
    expect_config_verified(c, NULL, false);
    CHECK_EQ(peer_count(&tpm_peer, "attestations") - before, 0);
    expect_config_verified(c, "maximum", true);
    CHECK_EQ(peer_count(&tpm_peer, "attestations") - before, 1);
    expect_config_verified(c, NULL, true); /* the attested configs serve everyone */
    hush_client_free(c);

    /* A failed attestation leaves the plain configs to the calls that need none. */
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    expect_config_verified(c, NULL, false);
    control(&tpm_peer, "{\"attest\": {\"other_configs\": true}}");
    long long posts = peer_count(&tpm_peer, "posts");
    hush_json_doc *doc = NULL;
    CHECK_STATUS(complete_tier(c, "must stay secret", "maximum", &doc, &err), HUSH_E_ATTESTATION,
                 &err);
    CHECK(doc == NULL);
    CHECK_EQ(peer_count(&tpm_peer, "posts") - posts, 0);
    control(&tpm_peer, "{\"attest\": {}}");
    expect_config_verified(c, NULL, false);
    hush_client_free(c);
}

/* An attested fetch that fails is the failure of the calls that need it
 * alone: a plain call that waited on it fetches for itself and goes out. */
static void test_racing_plain_call_survives(void)
{
    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = tpm_peer.url;
    o.ca_file = ca_file;
    o.protocol = "v2";
    o.attestation_policy = pinned_policy;
    o.max_retries = 0;
    hush_client *c = NULL;
    hush_engine *e = NULL;
    hush_call *attested = NULL, *plain = NULL;
    hush_error err = {0};
    CHECK_OK(hush_client_new(&o, &c, &err), &err);
    CHECK_OK(hush_engine_new(NULL, &e, &err), &err);
    control(&tpm_peer, "{\"attest\": {\"other_configs\": true}}");
    hush_call_options maximum = {.security_tier = "maximum"};
    CHECK_OK(hush_engine_submit(e, c, chat_request("must stay secret", NULL), &maximum, NULL,
                                &attested, &err),
             &err);
    CHECK_OK(hush_engine_submit(e, c, chat_request("plain", NULL), NULL, NULL, &plain, &err),
             &err);
    hush_json_doc *doc = NULL;
    CHECK_OK(hush_call_wait(attested, -1, &err), &err);
    CHECK_STATUS(hush_call_result(attested, &doc, &err), HUSH_E_ATTESTATION, &err);
    CHECK(doc == NULL);
    CHECK_OK(hush_call_wait(plain, -1, &err), &err);
    CHECK_OK(hush_call_result(plain, &doc, &err), &err);
    CHECK(doc != NULL && response_echoes(doc, "plain"));
    CHECK(doc != NULL && !attestation_bool(doc, "key_config_verified"));
    hush_json_doc_free(doc);
    control(&tpm_peer, "{\"attest\": {}}");
    hush_call_free(attested);
    hush_call_free(plain);
    hush_engine_free(e);
    hush_client_free(c);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    setenv("TSS2_LOG", "all+none", 1);
    snprintf(dir, sizeof dir, "/tmp/hush-client-attest-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char tcti_arg[80];
    bool ready = swtpm_start(&tpm_sim) && make_aik();
    if (ready) {
        char cert[128], key[128];
        snprintf(tcti_arg, sizeof tcti_arg, "%s", tpm_sim.tcti);
        snprintf(cert, sizeof cert, "%s/server.pem", dir);
        snprintf(key, sizeof key, "%s/server.key", dir);
        snprintf(ca_file, sizeof ca_file, "%s/ca.pem", dir);
        const char *with_tpm[] = {"--tpm", tcti_arg, "--aik-handle", AIK_HANDLE,
                                  "--tls-cert", cert, "--tls-key", key, NULL};
        ready = peer_make_test_ca(dir) &&
                peer_start_script(&tpm_peer, EHBP_SCRIPT, true, with_tpm) &&
                peer_start_script(&bare_peer, EHBP_SCRIPT, false, NULL);
        snprintf(tpm_peer.ca_file, sizeof tpm_peer.ca_file, "%s", ca_file);
        ready = ready && learn_aik_fingerprint() && write_policies();
    }
    if (!ready) {
        fprintf(stderr, "FAIL: set-up (swtpm, tpm2-tools, the EHBP peer with --tpm)\n");
        peer_stop(&tpm_peer);
        peer_stop(&bare_peer);
        swtpm_stop(&tpm_sim);
        remove_tree(dir);
        return 1;
    }
    RUN_TEST(test_verified_both_suites);
    RUN_TEST(test_stream);
    RUN_TEST(test_replayed_quote_refused);
    RUN_TEST(test_other_configs_refused);
    RUN_TEST(test_policy_refusals);
    RUN_TEST(test_no_attestation_refused);
    RUN_TEST(test_answer_quotes);
    RUN_TEST(test_tier_reports_quote);
    RUN_TEST(test_cache_until_rotation);
    RUN_TEST(test_plain_fetch_not_trusted);
    RUN_TEST(test_racing_plain_call_survives);
    bool stopped = peer_stop(&tpm_peer) & peer_stop(&bare_peer);
    CHECK(stopped);
    swtpm_stop(&tpm_sim);
    remove_tree(dir);
    curl_global_cleanup();
    return check_report();
}
