/* test_server.c — the server role (hush_server_handle): echo answers opened
 * and checked member by member, every way a request can be refused with its
 * exact status and message, the openai backend against
 * tests/interop/fake_openai.py (forwarding, every upstream failure), and
 * one server shared by many threads. */
#include <pthread.h>

#include "check.h"
#include "peer.h"

#define FAKE_SCRIPT HUSH_TEST_INTEROP_DIR "/fake_openai.py"
#define UPSTREAM_KEY "sekret-upstream-key"
#define CANARY "CANARY-7f3a91"
#define THREADS 8
#define PER_THREAD 10

static hush_keypair *server_key; /* RSA-4096, as a gateway has */
static hush_keypair *client_key; /* RSA-2048 */
static hush_keypair *other_key;  /* RSA-2048, neither of the above */
static char *client_pem;
static size_t client_pem_len;
static peer upstream;            /* fake_openai.py --api-key UPSTREAM_KEY */

static const char EC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER/YThJy8YxKz7nYJ+0epkVYmP/cV\n"
    "hW1eoHjcH14SZFERWUndQkVJ7GnKLIXSTb5ortfhw5zplFkurjbnJE+akw==\n"
    "-----END PUBLIC KEY-----\n";

static const char RSA1024_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCzVkb7T1Qqu7Fq6elUYiILEn9z\n"
    "9Jg+2isQUbUMazWjZ8C2TKfX3lOyPWICEaGwwmzQ29EkPXRbtqFUuMUA9iXxvt4x\n"
    "InuvUDOQq5ZZTu45zwgPdAO8ZqMW2vShlPKUP5I0jsBuxhvrY423Lkq1kVExpQaA\n"
    "BCnDyvMwRjAxjfUvqQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

/* ---- helpers ------------------------------------------------------------ */

static hush_server *new_server(hush_server_options *o)
{
    hush_server *s = NULL;
    hush_error err = {0};
    if (o->key == NULL)
        o->key = server_key;
    CHECK_OK(hush_server_new(o, &s, &err), &err);
    return s;
}

static hush_server *echo_server(void)
{
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    return new_server(&o);
}

/* `json` sealed to `to` (the server key unless given). */
static hush_secbuf *seal_to(const hush_keypair *to, const char *json)
{
    hush_pubkey *pk = NULL;
    hush_secbuf *package = NULL;
    hush_error err = {0};
    CHECK_OK(hush_pubkey_from_keypair(to != NULL ? to : server_key, &pk, &err), &err);
    CHECK_OK(hush_envelope_v1_seal(pk, json, strlen(json), HUSH_V1_NO_PROCESSED_AT, &package,
                                   &err), &err);
    hush_pubkey_free(pk);
    return package;
}

static hush_server_request request_for(const hush_secbuf *package, const char *payload_id,
                                       const char *tier)
{
    hush_server_request req = {
        .package = package != NULL ? hush_secbuf_bytes(package) : NULL,
        .package_len = package != NULL ? hush_secbuf_len(package) : 0,
        .client_public_key = client_pem,
        .client_public_key_len = client_pem_len,
        .payload_id = payload_id,
        .security_tier = tier,
    };
    return req;
}

/* Seal `json`, handle it, and return the status; `out` holds the answer. */
static hush_status handle_json(const hush_server *s, const char *json, const char *payload_id,
                               const char *tier, hush_server_answer *out, hush_error *err)
{
    hush_secbuf *package = seal_to(NULL, json);
    hush_server_request req = request_for(package, payload_id, tier);
    hush_status status = hush_server_handle(s, &req, out, err);
    hush_secbuf_free(package);
    return status;
}

/* True when `s` is "YYYY-MM-DDTHH:MM:SS.ffffff+00:00". */
/* processed_at as the server role writes it: Unix seconds, an integer, not
 * in the future. */
static bool is_unix_seconds(const hush_json_doc *processed_at)
{
    hush_error err;
    int64_t seconds = 0;
    const hush_json_value *v = hush_json_doc_root(processed_at);
    return hush_json_is_integer(v) && hush_json_int64(v, &seconds, &err) == HUSH_OK &&
           seconds > 1700000000 && seconds <= (int64_t)time(NULL);
}

/* Open a sealed answer with the client key and parse it; NULL on failure. */
static hush_json_doc *open_answer(const hush_server_answer *a)
{
    hush_envelope_v1_opened opened = {0};
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    if (a->package == NULL) {
        CHECK(a->package != NULL);
        return NULL;
    }
    CHECK_OK(hush_envelope_v1_open(client_key, hush_secbuf_data(a->package),
                                   hush_secbuf_len(a->package), 0, &opened, &err),
             &err);
    if (opened.plaintext != NULL) {
        CHECK(is_unix_seconds(opened.processed_at));
        CHECK_OK(hush_json_parse(hush_secbuf_data(opened.plaintext),
                                 hush_secbuf_len(opened.plaintext), NULL, HUSH_SECMEM_DEFAULT,
                                 &doc, &err),
                 &err);
    }
    hush_envelope_v1_opened_clear(&opened);
    return doc;
}

static bool string_is(const hush_json_value *v, const char *want)
{
    const char *got = hush_json_string(v, NULL);
    if (got == NULL || strcmp(got, want) != 0) {
        fprintf(stderr, "  expected \"%s\", got %s%s%s\n", want, got ? "\"" : "",
                got ? got : "no string", got ? "\"" : "");
        return false;
    }
    return true;
}

static int64_t int_member(const hush_json_doc *doc, const char *a, const char *b)
{
    int64_t v = -1;
    CHECK_OK(hush_json_int64(json_member2(doc, a, b), &v, NULL), NULL);
    return v;
}

static const hush_json_value *root_member(const hush_json_doc *doc, const char *key)
{
    return hush_json_object_get(hush_json_doc_root(doc), key, strlen(key));
}

static int64_t int_member_of(const hush_json_value *object, const char *key)
{
    int64_t v = -1;
    CHECK_OK(hush_json_int64(hush_json_object_get(object, key, strlen(key)), &v, NULL), NULL);
    return v;
}

/* `_metadata` as ours: server, backend, tier, memory_protection and, with
 * no TPM, tpm_attestation {"is_available": false}. */
static void check_metadata(const hush_json_doc *doc, const char *server, const char *backend,
                           const char *tier)
{
    const hush_json_value *meta = root_member(doc, "_metadata");
    const hush_json_value *mp = hush_json_object_get(meta, "memory_protection", 17);
    CHECK(string_is(hush_json_object_get(meta, "server", 6), server));
    CHECK(string_is(hush_json_object_get(meta, "backend", 7), backend));
    CHECK(string_is(hush_json_object_get(meta, "security_tier", 13), tier));
    CHECK_EQ(hush_json_length(meta), 5);
    const hush_json_value *tpm = hush_json_object_get(meta, "tpm_attestation", 15);
    CHECK_EQ(hush_json_length(tpm), 1);
    CHECK_EQ(hush_json_type_of(hush_json_object_get(tpm, "is_available", 12)), HUSH_JSON_BOOL);
    CHECK(!hush_json_bool(hush_json_object_get(tpm, "is_available", 12)));
    CHECK_EQ(hush_json_type_of(mp), HUSH_JSON_OBJECT);
    CHECK(string_is(hush_json_object_get(mp, "platform", 8), "linux"));
    CHECK_EQ(hush_json_type_of(hush_json_object_get(mp, "mlock_available", 15)), HUSH_JSON_BOOL);
    CHECK_EQ(hush_json_type_of(hush_json_object_get(mp, "dump_exclusion", 14)), HUSH_JSON_BOOL);
    CHECK_EQ(hush_json_type_of(hush_json_object_get(mp, "wipe_on_fork", 12)), HUSH_JSON_BOOL);
    CHECK_EQ(hush_json_type_of(hush_json_object_get(mp, "openssl_secure_heap", 19)),
             HUSH_JSON_BOOL);
    CHECK_EQ(hush_json_type_of(hush_json_object_get(mp, "request_locked", 14)), HUSH_JSON_BOOL);
    CHECK(int_member_of(mp, "request_bytes") > 0);
    CHECK(int_member_of(mp, "answer_bytes") > 0);
    CHECK_EQ(hush_json_length(mp), 8); /* no process-wide counter among them */
}

/* An echo answer: id, model, content, usage, the rest of the shape. */
static void check_echo(const hush_json_doc *doc, const char *payload_id, const char *model,
                       const char *content, int64_t prompt, int64_t completion)
{
    char id[256];
    snprintf(id, sizeof id, "chatcmpl-%s", payload_id);
    CHECK(string_is(root_member(doc, "id"), id));
    CHECK(string_is(root_member(doc, "object"), "chat.completion"));
    CHECK(string_is(root_member(doc, "model"), model));
    int64_t created = 0;
    CHECK_OK(hush_json_int64(root_member(doc, "created"), &created, NULL), NULL);
    CHECK(created > 1700000000 && created <= (int64_t)time(NULL));
    const hush_json_value *choice = hush_json_array_get(root_member(doc, "choices"), 0);
    CHECK_EQ(hush_json_length(root_member(doc, "choices")), 1);
    CHECK(hush_json_is_integer(hush_json_object_get(choice, "index", 5)));
    CHECK(string_is(hush_json_object_get(choice, "finish_reason", 13), "stop"));
    CHECK(string_is(hush_json_object_get(hush_json_object_get(choice, "message", 7), "role", 4),
                    "assistant"));
    CHECK(string_is(
        hush_json_object_get(hush_json_object_get(choice, "message", 7), "content", 7), content));
    CHECK_EQ(int_member(doc, "usage", "prompt_tokens"), prompt);
    CHECK_EQ(int_member(doc, "usage", "completion_tokens"), completion);
    CHECK_EQ(int_member(doc, "usage", "total_tokens"), prompt + completion);
    /* id, object, created, model, choices, usage, _metadata: nothing else. */
    CHECK_EQ(hush_json_length(hush_json_doc_root(doc)), 7);
}

/* A failure with exactly this status, HTTP status and message, and an
 * empty answer. */
static void check_refused(hush_status got, const hush_error *err, const hush_server_answer *out,
                          hush_status code, int http, const char *message)
{
    CHECK_EQ(got, code);
    CHECK_EQ(err->code, code);
    CHECK_EQ(err->http_status, http);
    if (strcmp(err->message, message) != 0) {
        fprintf(stderr, "  message \"%s\", expected \"%s\"\n", err->message, message);
        CHECK(strcmp(err->message, message) == 0);
    }
    CHECK(strstr(err->message, CANARY) == NULL);
    CHECK(out->package == NULL && out->upstream_status == 0 && out->open_ms == 0);
}

/* ---- echo --------------------------------------------------------------- */

static void test_echo_round_trip(void)
{
    hush_server *s = echo_server();
    hush_server_answer out;
    hush_error err = {0};
    const char *json = "{\"model\": \"m1\", \"messages\": [{\"role\": \"system\", \"content\": "
                       "\"be  brief\"}, {\"role\": \"user\", \"content\": \"first one\"}, "
                       "{\"role\": \"user\", \"content\": \"hello \\t there\\nworld\"}]}";
    CHECK_OK(handle_json(s, json, "pid-1", NULL, &out, &err), &err);
    CHECK_EQ(out.upstream_status, 0);
    CHECK(out.open_ms > 0 && out.backend_ms >= 0 && out.seal_ms > 0);
    hush_json_doc *doc = open_answer(&out);
    if (doc != NULL) {
        /* Words: 2 + 2 + 3 in the prompt; "echo:", hello, there, world. */
        check_echo(doc, "pid-1", "m1", "echo: hello \t there\nworld", 7, 4);
        check_metadata(doc, HUSH_SERVER_DEFAULT_NAME, "echo", "standard");
    }
    hush_json_doc_free(doc);
    hush_server_answer_clear(&out);
    CHECK(out.package == NULL);
    hush_server_free(s);
}

static void test_echo_parts_and_no_user(void)
{
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    o.server_name = "gw-test";
    hush_server *s = new_server(&o);
    hush_server_answer out;
    hush_error err = {0};
    /* Text parts are joined with nothing between them: "ab" + "cd ef". */
    const char *parts = "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                        "\"text\": \"ab\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": "
                        "\"x y z\"}}, {\"type\": \"text\", \"text\": \"cd ef\"}, {\"text\": \"no "
                        "type\"}]}, {\"role\": \"assistant\", \"content\": null}], \"model\": 7}";
    CHECK_OK(handle_json(s, parts, "p2", "high", &out, &err), &err);
    hush_json_doc *doc = open_answer(&out);
    if (doc != NULL) {
        check_echo(doc, "p2", "echo", "echo: abcd ef", 2, 3);
        check_metadata(doc, "gw-test", "echo", "high");
    }
    hush_json_doc_free(doc);
    hush_server_answer_clear(&out);

    const char *no_user = "{\"model\": \"m\", \"messages\": [{\"role\": \"system\", \"content\": "
                          "\"a b c\"}, \"not a message\", {\"role\": \"user\"}]}";
    CHECK_OK(handle_json(s, no_user, "p3", NULL, &out, &err), &err);
    doc = open_answer(&out);
    if (doc != NULL)
        check_echo(doc, "p3", "m", "echo: ", 3, 1);
    hush_json_doc_free(doc);
    hush_server_answer_clear(&out);

    CHECK_OK(handle_json(s, "{\"messages\": {\"role\": \"user\"}}", "p4", "high", &out, &err),
             &err);
    doc = open_answer(&out);
    if (doc != NULL) {
        check_echo(doc, "p4", "echo", "echo: ", 0, 1);
        check_metadata(doc, "gw-test", "echo", "high");
    }
    hush_json_doc_free(doc);
    hush_server_answer_clear(&out);

    /* Without a TPM, "maximum" is refused before the package is opened. */
    CHECK_STATUS(handle_json(s, "{}", "p5", "maximum", &out, &err), HUSH_E_UNAVAILABLE, &err);
    CHECK_EQ(err.http_status, 503);
    CHECK(strstr(err.message, "requires TPM attestation") != NULL && out.package == NULL);
    hush_server_free(s);
}

/* ---- refusals ----------------------------------------------------------- */

static void check_invalid_package(const hush_server *s, const void *package, size_t len)
{
    hush_server_request req = request_for(NULL, "bad", NULL);
    req.package = package;
    req.package_len = len;
    hush_server_answer out;
    hush_error err = {0};
    check_refused(hush_server_handle(s, &req, &out, &err), &err, &out, HUSH_E_BAD_REQUEST, 400,
                  HUSH_SERVER_INVALID_PACKAGE);
}

static void test_invalid_packages(void)
{
    hush_server *s = echo_server();
    const char *chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"" CANARY "\"}]}";
    check_invalid_package(s, "not a package " CANARY, strlen("not a package " CANARY));
    check_invalid_package(s, "", 0);

    hush_secbuf *other = seal_to(other_key, chat);
    check_invalid_package(s, hush_secbuf_data(other), hush_secbuf_len(other));
    hush_secbuf_free(other);

    /* One base64 character of the ciphertext changed: the tag fails. */
    hush_secbuf *sealed = seal_to(NULL, chat);
    char *text = (char *)hush_secbuf_data(sealed);
    size_t len = hush_secbuf_len(sealed);
    char *copy = malloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    char *ct = strstr(copy, "\"ciphertext\": \"");
    CHECK(ct != NULL);
    if (ct != NULL) {
        ct += strlen("\"ciphertext\": \"");
        *ct = *ct == 'A' ? 'B' : 'A';
        check_invalid_package(s, copy, len);
    }
    free(copy);
    hush_secbuf_free(sealed);

    const char *not_objects[] = {"{\"messages\": [" CANARY, "[1, \"" CANARY "\"]",
                                 "\"" CANARY "\"", "null"};
    for (size_t i = 0; i < sizeof not_objects / sizeof *not_objects; i++) {
        hush_secbuf *p = seal_to(NULL, not_objects[i]);
        check_invalid_package(s, hush_secbuf_data(p), hush_secbuf_len(p));
        hush_secbuf_free(p);
    }
    hush_server_free(s);
}

static void test_bad_requests(void)
{
    hush_server *s = echo_server();
    hush_server_answer out;
    hush_error err = {0};
    const char *chat = "{\"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": "
                       "\"" CANARY "\"}]}";
    check_refused(handle_json(s, chat, "p", NULL, &out, &err), &err, &out, HUSH_E_BAD_REQUEST,
                  400, "stream is not supported");
    /* "stream": false is fine. */
    CHECK_OK(handle_json(s, "{\"stream\": false}", "p", NULL, &out, &err), &err);
    hush_server_answer_clear(&out);

    hush_secbuf *package = seal_to(NULL, "{\"messages\": []}");
    hush_server_request req = request_for(package, NULL, NULL);
    check_refused(hush_server_handle(s, &req, &out, &err), &err, &out, HUSH_E_BAD_REQUEST, 400,
                  "Missing X-Payload-ID header");
    req.payload_id = "";
    check_refused(hush_server_handle(s, &req, &out, &err), &err, &out, HUSH_E_BAD_REQUEST, 400,
                  "Missing X-Payload-ID header");
    char long_id[HUSH_SERVER_PAYLOAD_ID_MAX + 2];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    req.payload_id = long_id;
    CHECK_STATUS(hush_server_handle(s, &req, &out, &err), HUSH_E_BAD_REQUEST, &err);
    CHECK_EQ(err.http_status, 400);
    long_id[HUSH_SERVER_PAYLOAD_ID_MAX] = '\0'; /* exactly the limit is fine */
    CHECK_OK(hush_server_handle(s, &req, &out, &err), &err);
    hush_server_answer_clear(&out);
    req.payload_id = "p";
    req.security_tier = "extreme";
    check_refused(hush_server_handle(s, &req, &out, &err), &err, &out, HUSH_E_BAD_REQUEST, 400,
                  "Invalid security tier");
    req.security_tier = NULL;

    const char *bad_keys[] = {"garbage", EC_PEM, RSA1024_PEM, NULL};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        req.client_public_key = bad_keys[i];
        req.client_public_key_len = bad_keys[i] != NULL ? strlen(bad_keys[i]) : 0;
        check_refused(hush_server_handle(s, &req, &out, &err), &err, &out, HUSH_E_KEY, 400,
                      "X-Public-Key is not an RSA public key of at least 2048 bits");
    }
    hush_secbuf_free(package);
    hush_server_free(s);

    /* 1000 bytes of plaintext make a package of well over 1000 bytes. */
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    o.max_package_bytes = 1000;
    s = new_server(&o);
    char big[1100];
    int n = snprintf(big, sizeof big, "{\"content\": \"" CANARY "%0980d\"}", 0);
    CHECK(n > 1000 && (size_t)n < sizeof big);
    check_refused(handle_json(s, big, "p", NULL, &out, &err), &err, &out, HUSH_E_LIMIT, 413,
                  "Request body too large");
    hush_server_free(s);
}

/* The defaults server.h documents, field by field. */
static void check_server_defaults(const hush_server_options *o)
{
    CHECK_EQ(o->version, HUSH_SERVER_OPTIONS_VERSION);
    CHECK(o->key == NULL);
    CHECK_EQ(o->backend, HUSH_BACKEND_ECHO);
    CHECK(o->upstream_url == NULL && o->upstream_api_key == NULL && o->upstream_ca_file == NULL);
    CHECK(!o->allow_http_upstream);
    CHECK_EQ(o->upstream_connect_timeout_ms, 10000);
    CHECK_EQ(o->upstream_timeout_ms, 300000);
    CHECK_EQ(o->max_package_bytes, 16 * 1024 * 1024);
    CHECK_EQ(o->max_answer_bytes, 16 * 1024 * 1024);
    CHECK(o->server_name == NULL && o->tpm == NULL);
    CHECK_EQ(o->secmem_flags, 0);
    CHECK_EQ(o->echo_delay_ms, 0);
}

/* A version 1 caller's struct ends before echo_delay_ms: init writes no
 * further, and hush_server_new reads no further. */
static void test_server_options_version_1(void)
{
    hush_server_options o;
    hush_error err = {0};
    memset(&o, 0xa5, sizeof o);
    CHECK_OK(hush_server_options_init(&o, 1, &err), &err);
    CHECK_EQ(o.version, 1);
    CHECK_EQ(o.upstream_timeout_ms, 300000);
    CHECK_EQ(o.echo_delay_ms, (long)0xa5a5a5a5a5a5a5a5UL); /* untouched */
    o.key = server_key;
    hush_server_free(new_server(&o));

    /* Version 2 reads it, and refuses a pause that is not 0 to 60 s. */
    hush_server_options v2 = HUSH_SERVER_OPTIONS_INIT;
    hush_server *s = NULL;
    v2.key = server_key;
    v2.echo_delay_ms = -1;
    CHECK_STATUS(hush_server_new(&v2, &s, &err), HUSH_E_ARGUMENT, &err);
    CHECK(strstr(err.message, "echo_delay_ms") != NULL);
    v2.echo_delay_ms = 60001;
    CHECK_STATUS(hush_server_new(&v2, &s, &err), HUSH_E_ARGUMENT, &err);
    CHECK(s == NULL);
}

static void test_server_options_init(void)
{
    hush_server_options from_macro = HUSH_SERVER_OPTIONS_INIT;
    check_server_defaults(&from_macro);
    hush_server_options o;
    memset(&o, 0xa5, sizeof o);
    hush_error err = {0};
    CHECK_OK(hush_server_options_init(&o, HUSH_SERVER_OPTIONS_VERSION, &err), &err);
    check_server_defaults(&o);

    CHECK_STATUS(hush_server_options_init(NULL, HUSH_SERVER_OPTIONS_VERSION, &err),
                 HUSH_E_ARGUMENT, &err);
    const unsigned unknown[] = {0, HUSH_SERVER_OPTIONS_VERSION + 1};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        o.upstream_timeout_ms = 1234;
        CHECK_STATUS(hush_server_options_init(&o, unknown[i], &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_server_options") != NULL);
        CHECK_EQ(o.upstream_timeout_ms, 1234); /* untouched: its size is not known */
    }

    /* hush_server_new refuses a version it does not know, by name. */
    o = (hush_server_options)HUSH_SERVER_OPTIONS_INIT;
    o.key = server_key;
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        o.version = unknown[i];
        hush_server *s = (hush_server *)&o; /* must be set to NULL on failure */
        CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_server_options") != NULL);
        CHECK(s == NULL);
    }
    o.version = HUSH_SERVER_OPTIONS_VERSION;
    hush_server_free(new_server(&o));
}

static void test_server_new_errors(void)
{
    hush_server_options o;
    hush_server *s = (hush_server *)&o; /* must be set to NULL on failure */
    hush_error err = {0};
    o = (hush_server_options)HUSH_SERVER_OPTIONS_INIT;
    CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
    CHECK(s == NULL);

    o.key = server_key;
    o.backend = HUSH_BACKEND_OPENAI;
    CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
    const char *bad_urls[] = {"ftp://127.0.0.1/v1", "127.0.0.1:8000/v1", "http://", ""};
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        o.upstream_url = bad_urls[i];
        CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
        CHECK(s == NULL);
    }
    o.upstream_url = "http://127.0.0.1:1/v1";
    o.upstream_api_key = "two\r\nX-Injected: yes";
    CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
    CHECK(strstr(err.message, "X-Injected") == NULL);
    o.upstream_api_key = NULL;
    o.backend = (hush_backend)7;
    CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
    o.backend = HUSH_BACKEND_OPENAI;
    o.upstream_timeout_ms = 0;
    CHECK_STATUS(hush_server_new(&o, &s, &err), HUSH_E_ARGUMENT, &err);
    o.upstream_timeout_ms = 1000;
    CHECK_OK(hush_server_new(&o, &s, &err), &err);
    hush_server_free(s);
    hush_server_free(NULL);
    hush_server_answer_clear(NULL);

    /* The server holds its own reference to the key. */
    hush_keypair *key = hush_keypair_ref(server_key);
    o = (hush_server_options)HUSH_SERVER_OPTIONS_INIT;
    o.key = key;
    CHECK_OK(hush_server_new(&o, &s, &err), &err);
    hush_keypair_free(key);
    hush_server_answer out;
    CHECK_OK(handle_json(s, "{}", "p", NULL, &out, &err), &err);
    hush_server_answer_clear(&out);
    hush_server_free(s);
}

/* The plain-http matrix: loopback is allowed, any other host only with
 * allow_http_upstream; https is always allowed. Userinfo, ports and
 * brackets must not fool the host check. */
static void test_http_upstream_needs_loopback(void)
{
    static const struct {
        const char *url;
        bool allowed;
    } cases[] = {
        {"http://127.0.0.1:8000/v1", true},
        {"http://127.9.8.7/v1", true},
        {"http://localhost:8000/v1", true},
        {"http://LOCALHOST/v1", true},
        {"http://[::1]:8000/v1", true},
        {"http://[0:0:0:0:0:0:0:1]/v1", true},
        {"http://user:pw@127.0.0.1:8000/v1", true},
        {"http://127.0.0.1", true},
        {"https://llm.example.com/v1", true},
        {"https://10.0.0.5:8443/v1", true},
        {"http://10.0.0.5:8000/v1", false},
        {"http://llm.example.com/v1", false},
        {"http://127.0.0.1@llm.example.com/v1", false},
        {"http://127.0.0.1:8000@10.0.0.5/v1", false},
        {"http://localhost.example.com/v1", false},
        {"http://127.0.0.1.example.com/v1", false},
        {"http://[::2]:8000/v1", false},
        {"http://[::ffff:10.0.0.5]/v1", false},
        {"http://128.0.0.1/v1", false},
        {"http://2130706433/v1", false}, /* 127.0.0.1 in decimal: unusual, refused */
        {"http://[::1/v1", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int allow = 0; allow <= 1; allow++) {
            hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
            o.key = server_key;
            o.backend = HUSH_BACKEND_OPENAI;
            o.upstream_url = cases[i].url;
            o.allow_http_upstream = allow;
            hush_server *s = NULL;
            hush_error err = {0};
            hush_status status = hush_server_new(&o, &s, &err);
            bool want = cases[i].allowed || allow;
            if ((status == HUSH_OK) != want)
                fprintf(stderr, "  %s with allow_http_upstream=%d: %s\n", cases[i].url, allow,
                        status == HUSH_OK ? "accepted" : err.message);
            CHECK_EQ(status == HUSH_OK, want);
            if (status != HUSH_OK)
                CHECK(strstr(err.message, "allow_http_upstream") != NULL);
            hush_server_free(s);
        }
    }
}

/* ---- memory_protection tells of this request only ------------------------ */

/* The `_metadata.memory_protection` of `json` answered by `s`, as text. */
static bool memory_protection_of(const hush_server *s, const char *json, char *out, size_t size)
{
    hush_server_answer answer;
    hush_error err = {0};
    CHECK_OK(handle_json(s, json, "mp", NULL, &answer, &err), &err);
    hush_json_doc *doc = open_answer(&answer);
    hush_server_answer_clear(&answer);
    const hush_json_value *mp = json_member2(doc, "_metadata", "memory_protection");
    bool ok = false;
    if (mp != NULL) {
        hush_secbuf *text = NULL;
        hush_json_writer *w = NULL;
        ok = hush_secbuf_new(256, 0, HUSH_SECMEM_DEFAULT, &text, &err) == HUSH_OK &&
             hush_json_writer_new(text, HUSH_JSON_WRITE_COMPACT, 0, &w, &err) == HUSH_OK &&
             hush_json_write_value(w, mp, &err) == HUSH_OK && hush_secbuf_len(text) < size;
        if (ok)
            snprintf(out, size, "%.*s", (int)hush_secbuf_len(text),
                     (const char *)hush_secbuf_data(text));
        hush_json_writer_free(w);
        hush_secbuf_free(text);
    }
    hush_json_doc_free(doc);
    CHECK(ok);
    return ok;
}

/* The same request reports the same figures whatever else the process is
 * doing: before and after 20 larger requests, and while other secure memory
 * (another request's, say) is held. A larger request reports more bytes. */
static void test_memory_protection_is_per_request(void)
{
    hush_server *s = echo_server();
    const char *small = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    static char large[200000];
    int n = snprintf(large, sizeof large,
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%0*d\"}]}",
                     150000, 7);
    CHECK(n > 150000 && (size_t)n < sizeof large);
    char before[512] = "", after[512] = "", big[512] = "";
    memory_protection_of(s, small, before, sizeof before);
    hush_arena *held = NULL;
    void *p = NULL;
    hush_error err = {0};
    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &held, &err), &err);
    CHECK_OK(hush_arena_alloc(held, 1u << 20, &p, &err), &err);
    for (int i = 0; i < 20; i++)
        memory_protection_of(s, large, big, sizeof big);
    memory_protection_of(s, small, after, sizeof after);
    hush_arena_free(held);
    CHECK(before[0] != '\0');
    if (strcmp(before, after) != 0)
        fprintf(stderr, "  before: %s\n  after:  %s\n", before, after);
    CHECK(strcmp(before, after) == 0);
    CHECK(strstr(before, "\"request_bytes\":") != NULL);
    CHECK(strcmp(before, big) != 0); /* the figures are the request's own */
    hush_server_free(s);
}

/* ---- the openai backend ------------------------------------------------- */

static hush_server *openai_server(const char *base, const char *api_key, long timeout_ms,
                                  size_t max_answer)
{
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    o.backend = HUSH_BACKEND_OPENAI;
    o.upstream_url = base;
    o.upstream_api_key = api_key;
    if (timeout_ms != 0)
        o.upstream_timeout_ms = timeout_ms;
    if (max_answer != 0)
        o.max_answer_bytes = max_answer;
    return new_server(&o);
}

static char *upstream_base(const char *suffix)
{
    static char base[128];
    snprintf(base, sizeof base, "%s/v1%s", upstream.url, suffix);
    return base;
}

/* The request fake_openai.py answers as `model` says, with the canary. */
static void chat_for(char *out, size_t size, const char *model)
{
    snprintf(out, size,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"say " CANARY
             "\"}],  \"temperature\": 0.50, \"x\": \"\\u00e9\"}",
             model);
}

static void test_openai_forwards(void)
{
    /* One trailing slash on the base is dropped. */
    hush_server *s = openai_server(upstream_base("/"), UPSTREAM_KEY, 0, 0);
    hush_server_answer out;
    hush_error err = {0};
    char chat[512];
    chat_for(chat, sizeof chat, "llama-test");
    CHECK_OK(handle_json(s, chat, "fwd-1", "high", &out, &err), &err);
    CHECK_EQ(out.upstream_status, 200);
    CHECK(out.backend_ms > 0);
    hush_json_doc *doc = open_answer(&out);
    if (doc != NULL) {
        CHECK(response_content(doc) != NULL &&
              strcmp(response_content(doc), "upstream: say " CANARY) == 0);
        CHECK(string_is(root_member(doc, "model"), "llama-test"));
        const char *id = hush_json_string(root_member(doc, "id"), NULL);
        CHECK(id != NULL && strncmp(id, "chatcmpl-fake-", 14) == 0);
        CHECK_EQ(int_member(doc, "usage", "total_tokens"), 3);
        /* The upstream's _metadata is replaced by ours, which comes last. */
        check_metadata(doc, HUSH_SERVER_DEFAULT_NAME, "openai", "high");
        const char *key = NULL;
        size_t key_len = 0, n = hush_json_length(hush_json_doc_root(doc));
        CHECK(hush_json_object_member(hush_json_doc_root(doc), n - 1, &key, &key_len, NULL));
        CHECK(key != NULL && strcmp(key, "_metadata") == 0);
    }
    hush_json_doc_free(doc);
    hush_server_answer_clear(&out);

    /* The upstream got the plaintext byte for byte, and the bearer key. */
    hush_json_doc *last = NULL;
    char *text = NULL;
    size_t len = 0;
    CHECK_EQ(peer_http(&upstream, "GET", "/_last", NULL, &text, &len), 200);
    if (text != NULL)
        CHECK_OK(hush_json_parse(text, len, NULL, HUSH_SECMEM_NO_LOCK, &last, &err), &err);
    if (last != NULL) {
        CHECK(string_is(root_member(last, "body"), chat));
        CHECK(string_is(root_member(last, "authorization"), "Bearer " UPSTREAM_KEY));
    }
    hush_json_doc_free(last);
    free(text);
    hush_server_free(s);
}

static void check_upstream_failure(const hush_server *s, const char *model, hush_status code,
                                   int http, const char *message)
{
    hush_server_answer out;
    hush_error err = {0};
    char chat[512];
    chat_for(chat, sizeof chat, model);
    hush_status got = handle_json(s, chat, "fail", NULL, &out, &err);
    check_refused(got, &err, &out, code, http, message);
    if (got != code)
        fprintf(stderr, "  (model %s)\n", model);
    hush_server_answer_clear(&out);
}

static void test_openai_failures(void)
{
    hush_server *s = openai_server(upstream_base(""), UPSTREAM_KEY, 0, 4096);
    check_upstream_failure(s, "fail-500", HUSH_E_HTTP, 502, "Upstream answered HTTP 500");
    check_upstream_failure(s, "fail-404", HUSH_E_HTTP, 502, "Upstream answered HTTP 404");
    check_upstream_failure(s, "fail-503", HUSH_E_UNAVAILABLE, 503, "Upstream busy (HTTP 503)");
    check_upstream_failure(s, "fail-429", HUSH_E_UNAVAILABLE, 503, "Upstream busy (HTTP 429)");
    check_upstream_failure(s, "garbage", HUSH_E_HTTP, 502, "Upstream answer is not a JSON object");
    check_upstream_failure(s, "array", HUSH_E_HTTP, 502, "Upstream answer is not a JSON object");
    check_upstream_failure(s, "big-10000", HUSH_E_HTTP, 502, "Upstream answer too large");
    /* Under the limit the same kind of answer goes through. */
    hush_server_answer out;
    hush_error err = {0};
    CHECK_OK(handle_json(s, "{\"model\": \"big-1000\"}", "ok", NULL, &out, &err), &err);
    hush_server_answer_clear(&out);
    hush_server_free(s);

    /* Without the key the upstream refuses: 401 is a 502 to the client. */
    s = openai_server(upstream_base(""), NULL, 0, 0);
    check_upstream_failure(s, "llama", HUSH_E_HTTP, 502, "Upstream answered HTTP 401");
    hush_server_free(s);

    s = openai_server(upstream_base(""), UPSTREAM_KEY, 500, 0);
    long long start = now_ms();
    check_upstream_failure(s, "slow-3000", HUSH_E_TIMEOUT, 504, "Upstream timed out");
    CHECK(now_ms() - start < 2500);
    hush_server_free(s);

    char down[128];
    snprintf(down, sizeof down, "http://127.0.0.1:%d/v1", unused_port());
    s = openai_server(down, NULL, 0, 0);
    check_upstream_failure(s, "llama", HUSH_E_UNAVAILABLE, 503, "Upstream unavailable");
    hush_server_free(s);
}

/* ---- threads ------------------------------------------------------------ */

typedef struct worker {
    const hush_server *server;
    int index;
    int ok;
} worker;

static void *run_worker(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char chat[256], id[64], content[64];
        snprintf(content, sizeof content, "thread %d request %d", w->index, i);
        snprintf(chat, sizeof chat,
                 "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"%s\"}]}",
                 content);
        snprintf(id, sizeof id, "t%d-%d", w->index, i);
        hush_server_answer out;
        hush_error err = {0};
        if (handle_json(w->server, chat, id, NULL, &out, &err) != HUSH_OK) {
            fprintf(stderr, "thread %d: %s\n", w->index, err.message);
            continue;
        }
        hush_json_doc *doc = open_answer(&out);
        char want_id[80];
        snprintf(want_id, sizeof want_id, "chatcmpl-%s", id);
        const char *got_id = doc != NULL ? hush_json_string(root_member(doc, "id"), NULL) : NULL;
        if (doc != NULL && response_echoes(doc, content) && got_id != NULL &&
            strcmp(got_id, want_id) == 0)
            w->ok++;
        hush_json_doc_free(doc);
        hush_server_answer_clear(&out);
    }
    return NULL;
}

static void test_threads_share_a_server(void)
{
    hush_server *s = echo_server();
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker){s, i, 0};
        CHECK_EQ(pthread_create(&threads[i], NULL, run_worker, &workers[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        ok += workers[i].ok;
    }
    CHECK_EQ(ok, THREADS * PER_THREAD);
    hush_server_free(s);
}

int main(void)
{
    hush_error err = {0};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *args[] = {"--api-key", UPSTREAM_KEY, NULL};
    if (!peer_start_script(&upstream, FAKE_SCRIPT, false, args)) {
        fprintf(stderr, "fake_openai.py did not start: is `make deps` done?\n");
        return 1;
    }
    if (hush_keypair_generate(4096, &server_key, &err) != HUSH_OK ||
        hush_keypair_generate(2048, &client_key, &err) != HUSH_OK ||
        hush_keypair_generate(2048, &other_key, &err) != HUSH_OK ||
        hush_keypair_public_pem(client_key, &client_pem, &client_pem_len, &err) != HUSH_OK) {
        fprintf(stderr, "setup failed: %s\n", err.message);
        peer_stop(&upstream);
        return 1;
    }

    RUN_TEST(test_echo_round_trip);
    RUN_TEST(test_echo_parts_and_no_user);
    RUN_TEST(test_invalid_packages);
    RUN_TEST(test_bad_requests);
    RUN_TEST(test_server_new_errors);
    RUN_TEST(test_server_options_init);
    RUN_TEST(test_server_options_version_1);
    RUN_TEST(test_http_upstream_needs_loopback);
    RUN_TEST(test_memory_protection_is_per_request);
    RUN_TEST(test_openai_forwards);
    RUN_TEST(test_openai_failures);
    RUN_TEST(test_threads_share_a_server);

    free(client_pem);
    hush_keypair_free(other_key);
    hush_keypair_free(client_key);
    hush_keypair_free(server_key);
    bool upstream_ok = peer_stop(&upstream);
    curl_global_cleanup();
    int rc = check_report();
    return upstream_ok ? rc : 1;
}
