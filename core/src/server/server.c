/* server.c — the server role of protocols v1 and v2: check a received
 * request, open it with the server key into one arena (locked memory), let
 * the backend write the answer into a locked buffer, and seal it: v1 adds
 * `_metadata` and seals to the client's key, v2 seals to the request's HPKE
 * context. Every failure carries the HTTP status a gateway answers with and
 * a message safe to send back. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "hushcall/client.h"
#include "hushcall/envelope_v1.h"
#include "hushcall/json.h"
#include "hushcall/json_writer.h"
#include "hushcall/keys.h"
#include "hushcall/replay.h"
#include "hushcall/server.h"
#include "hushcall/tpm.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"
#include "backend.h"

#define ANSWER_INITIAL_BYTES 4096u
#define API_KEY_MAX 512u
#define CHAT_COMPLETIONS "/v1/chat/completions" /* a request's path when it names none */
#define PATH_MAX_BYTES 256u
#define UNKNOWN_PATH "Unknown path"
#define EVENT_FRAMES_INITIAL_BYTES 1024u
#define BAD_CLIENT_KEY "X-Public-Key is not an RSA public key of at least 2048 bits"
#define V2_UNKNOWN_KEY "Unknown or expired key configuration"
#define V2_BINDING_LABEL "hushcall-v2 key" /* what a v2 replay binding hashes, with the key id */
#define V2_PAYLOAD_ID_BYTES 16u            /* of the replay key, named in the echo's id */
#define NO_TPM_FOR_MAXIMUM \
    "Security tier 'maximum' requires TPM attestation, which this gateway does not offer"

struct hush_server {
    hush_keypair *key;
    hush_backend backend;
    char *server_name;
    size_t max_package_bytes;
    unsigned secmem_flags;
    long echo_delay_ms;
    char *upstream_url; /* the base, without a trailing slash */
    char *upstream_api_key;
    char *upstream_ca_file;
    hush__upstream_config upstream; /* borrows the three strings above */
    hush_tpm *tpm;                  /* borrowed; NULL for none */
};

/* A server answers as much as a client accepts by default. */
_Static_assert(HUSH_SERVER_DEFAULT_MAX_ANSWER_BYTES == HUSH_DEFAULT_MAX_RESPONSE_BYTES,
               "the server's default answer limit follows the client's response limit");

hush_status hush_server_options_init(hush_server_options *opts, unsigned version, hush_error *err)
{
    static const hush_server_options defaults = HUSH_SERVER_OPTIONS_INIT;
    /* A version 1 caller's struct ends before `echo_delay_ms`: write no further. */
    size_t size = version >= 2 ? sizeof defaults : offsetof(hush_server_options, echo_delay_ms);
    hush_status status = hush__options_init(opts, &defaults, size, "hush_server_options",
                                            version, HUSH_SERVER_OPTIONS_VERSION, err);
    if (status == HUSH_OK)
        opts->version = version;
    return status;
}

/* ---- making a server ---------------------------------------------------- */

static bool has_scheme(const char *url, const char *scheme)
{
    size_t n = strlen(scheme);
    return strncmp(url, scheme, n) == 0 && url[n] != '\0';
}

/* The key becomes a header line: printable ASCII only, so it cannot add
 * another header or end the request's head. */
static bool is_header_safe(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (s[n] < 0x21 || s[n] > 0x7e)
            return false;
    return n > 0 && n <= API_KEY_MAX;
}

/* The host of an http(s) URL: after the scheme and any userinfo, before
 * the port, path, query or fragment; an IPv6 literal without its brackets.
 * False when it does not fit in `host`. */
static bool url_host(const char *url, char *host, size_t size)
{
    const char *start = strstr(url, "://") + 3;
    size_t authority = strcspn(start, "/?#");
    for (size_t i = authority; i > 0; i--)
        if (start[i - 1] == '@') {
            authority -= i;
            start += i;
            break;
        }
    size_t len;
    if (authority > 0 && start[0] == '[') {
        const char *close = memchr(start, ']', authority);
        if (close == NULL)
            return false;
        start++;
        len = (size_t)(close - start);
    } else {
        const char *colon = memchr(start, ':', authority);
        len = colon != NULL ? (size_t)(colon - start) : authority;
    }
    if (len == 0 || len >= size)
        return false;
    memcpy(host, start, len);
    host[len] = '\0';
    return true;
}

/* 127.0.0.0/8, ::1 or localhost: plaintext that never leaves this machine.
 * Anything unusual (127.1, a decimal address) counts as not loopback. */
static bool is_loopback_url(const char *url)
{
    char host[256];
    struct in_addr v4;
    struct in6_addr v6;
    if (!url_host(url, host, sizeof host))
        return false;
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
        return true;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

HUSH_MUST_USE
static hush_status check_options(const hush_server_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(o->key != NULL, HUSH_E_ARGUMENT, "key is required");
    HUSH_ENSURE(o->backend == HUSH_BACKEND_ECHO || o->backend == HUSH_BACKEND_OPENAI,
                HUSH_E_ARGUMENT, "backend %d is not known", (int)o->backend);
    HUSH_ENSURE(o->max_package_bytes > 0 && o->max_answer_bytes > 0, HUSH_E_ARGUMENT,
                "size limits must be positive");
    HUSH_ENSURE(o->version < 2 || (o->echo_delay_ms >= 0 && o->echo_delay_ms <= 60000),
                HUSH_E_ARGUMENT, "echo_delay_ms must be from 0 to 60000");
    if (o->backend == HUSH_BACKEND_OPENAI) {
        const char *url = o->upstream_url;
        HUSH_ENSURE(url != NULL && (has_scheme(url, "http://") || has_scheme(url, "https://")),
                    HUSH_E_ARGUMENT,
                    "the openai backend needs an http:// or https:// upstream_url");
        HUSH_ENSURE(!has_scheme(url, "http://") || o->allow_http_upstream ||
                        is_loopback_url(url),
                    HUSH_E_ARGUMENT,
                    "upstream_url: plain http:// to a host that is not loopback sends every "
                    "request in clear; use https:// or allow_http_upstream");
        HUSH_ENSURE(o->upstream_connect_timeout_ms > 0 && o->upstream_timeout_ms > 0,
                    HUSH_E_ARGUMENT, "upstream timeouts must be positive");
        HUSH_ENSURE(o->upstream_api_key == NULL || is_header_safe(o->upstream_api_key),
                    HUSH_E_ARGUMENT,
                    "upstream_api_key must be 1 to %u printable ASCII characters without spaces",
                    API_KEY_MAX);
    }
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status copy_string(const char *s, char **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (s == NULL)
        goto cleanup;
    *out = strdup(s);
    HUSH_ENSURE(*out != NULL, HUSH_E_NOMEM, "out of memory");
cleanup:
    return status;
}

/* The base URL, one trailing slash dropped: a request's path follows it. */
HUSH_MUST_USE
static hush_status make_upstream_url(const char *base, char **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t n = strlen(base);
    if (n > 0 && base[n - 1] == '/')
        n--;
    *out = strndup(base, n);
    HUSH_ENSURE(*out != NULL, HUSH_E_NOMEM, "out of memory");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status copy_upstream(hush_server *s, const hush_server_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__upstream_config *u = &s->upstream;
    u->connect_timeout_ms = o->upstream_connect_timeout_ms;
    u->timeout_ms = o->upstream_timeout_ms;
    u->max_answer_bytes = o->max_answer_bytes;
    u->secmem_flags = o->secmem_flags;
    if (o->backend != HUSH_BACKEND_OPENAI)
        goto cleanup;
    HUSH_TRY(make_upstream_url(o->upstream_url, &s->upstream_url, err));
    HUSH_TRY(copy_string(o->upstream_api_key, &s->upstream_api_key, err));
    HUSH_TRY(copy_string(o->upstream_ca_file, &s->upstream_ca_file, err));
    u->url = s->upstream_url;
    u->api_key = s->upstream_api_key;
    u->ca_file = s->upstream_ca_file;
cleanup:
    return status;
}

void hush_server_free(hush_server *server)
{
    if (server == NULL)
        return;
    hush__free_secret_string(server->upstream_api_key);
    hush__free_secret_string(server->upstream_url); /* a URL may carry user:password@ */
    free(server->upstream_ca_file);
    free(server->server_name);
    hush_keypair_free(server->key);
    free(server);
}

hush_status hush_server_new(const hush_server_options *opts, hush_server **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_server *s = NULL;
    HUSH_ENSURE(opts != NULL && out != NULL, HUSH_E_ARGUMENT, "hush_server_new: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__check_options_version("hush_server_options", opts->version,
                                         HUSH_SERVER_OPTIONS_VERSION, err));
    HUSH_TRY(hush__init(err));
    HUSH_TRY(check_options(opts, err));
    HUSH_ENSURE((s = calloc(1, sizeof *s)) != NULL, HUSH_E_NOMEM, "out of memory");
    s->backend = opts->backend;
    s->max_package_bytes = opts->max_package_bytes;
    s->secmem_flags = opts->secmem_flags;
    s->tpm = opts->tpm;
    s->echo_delay_ms = opts->version >= 2 ? opts->echo_delay_ms : 0;
    HUSH_TRY(copy_string(opts->server_name != NULL ? opts->server_name : HUSH_SERVER_DEFAULT_NAME,
                         &s->server_name, err));
    HUSH_TRY(copy_upstream(s, opts, err));
    s->key = hush_keypair_ref(opts->key);
    *out = s;
    s = NULL;
cleanup:
    hush_server_free(s);
    return status;
}

/* ---- one request -------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The status a gateway answers with for each failure hush_server_handle reports. */
static int http_status_for(hush_status status)
{
    switch (status) {
    case HUSH_E_LIMIT: return 413;
    case HUSH_E_NOT_FOUND: return 404;
    case HUSH_E_KEY:
    case HUSH_E_BAD_REQUEST: return 400;
    case HUSH_E_UNAVAILABLE: return 503;
    case HUSH_E_TIMEOUT: return 504;
    case HUSH_E_HTTP: return 502;
    default: return 500;
    }
}

/* The status a gateway answers a v2 request with: a key-config problem is
 * EHBP's 422, everything else as v1. */
static int v2_http_status_for(hush_status status)
{
    return status == HUSH_E_KEY ? 422 : http_status_for(status);
}

/* Payload ids and tiers are echoed into the answer: printable ASCII only. */
static bool is_printable(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

HUSH_MUST_USE
static hush_status check_request(const hush_server *s, const hush_server_request *req,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    const char *tier = req->security_tier;
    HUSH_ENSURE(req->package != NULL || req->package_len == 0, HUSH_E_ARGUMENT,
                "hush_server_handle: NULL package");
    HUSH_ENSURE(req->payload_id != NULL && req->payload_id[0] != '\0', HUSH_E_BAD_REQUEST,
                "Missing X-Payload-ID header");
    HUSH_ENSURE(strlen(req->payload_id) <= HUSH_SERVER_PAYLOAD_ID_MAX &&
                    is_printable(req->payload_id),
                HUSH_E_BAD_REQUEST, "X-Payload-ID must be at most %u printable ASCII characters",
                HUSH_SERVER_PAYLOAD_ID_MAX);
    HUSH_ENSURE(tier == NULL || strcmp(tier, "standard") == 0 || strcmp(tier, "high") == 0 ||
                    strcmp(tier, "maximum") == 0,
                HUSH_E_BAD_REQUEST, "Invalid security tier");
    HUSH_ENSURE(tier == NULL || strcmp(tier, "maximum") != 0 || s->tpm != NULL,
                HUSH_E_UNAVAILABLE, NO_TPM_FOR_MAXIMUM);
    HUSH_ENSURE(req->package_len <= s->max_package_bytes, HUSH_E_LIMIT, "Request body too large");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status client_key(const hush_server_request *req, hush_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(req->client_public_key != NULL, HUSH_E_KEY, BAD_CLIENT_KEY);
    hush_status read = hush_pubkey_from_pem(req->client_public_key, req->client_public_key_len,
                                            out, err);
    /* Running out of memory is ours to report; any other failure is the
     * client's key, in one message. */
    if (read == HUSH_E_NOMEM)
        HUSH_BAIL_WITH(read);
    HUSH_ENSURE(read == HUSH_OK, HUSH_E_KEY, BAD_CLIENT_KEY);
cleanup:
    return status;
}

/* Open the package and parse its plaintext, which must be a JSON object. */
HUSH_MUST_USE
static hush_status open_and_parse(const hush_server *s, const hush_server_request *req,
                                  hush_arena *arena, unsigned char **plaintext, size_t *len,
                                  const hush_json_value **root,
                                  unsigned char replay_key[HUSH_REPLAY_DIGEST_BYTES],
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    const void *package = req->package != NULL ? req->package : "";
    HUSH_TRY(hush__envelope_v1_open_in(s->key, package, req->package_len, s->max_package_bytes,
                                       arena, plaintext, len, NULL, replay_key, err));
    hush_json_limits limits = {.max_bytes = *len};
    HUSH_TRY(hush_json_parse_into(arena, *plaintext, *len, &limits, root, err));
    HUSH_ENSURE(hush_json_type_of(*root) == HUSH_JSON_OBJECT, HUSH_E_TYPE,
                "request is not a JSON object");
cleanup:
    return status;
}

/* Open and parse the request into `arena`. Every way a package can be bad
 * is one message, so a client learns nothing about which check it failed. */
HUSH_MUST_USE
static hush_status open_request(const hush_server *s, const hush_server_request *req,
                                hush_arena *arena, const unsigned char **text, size_t *len,
                                const hush_json_value **root,
                                unsigned char replay_key[HUSH_REPLAY_DIGEST_BYTES],
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *plaintext = NULL;
    hush_status opened = open_and_parse(s, req, arena, &plaintext, len, root, replay_key, err);
    /* Our own failures are reported as they are; every fault of the
     * package is the one opaque message. */
    if (opened == HUSH_E_NOMEM || opened == HUSH_E_CRYPTO)
        HUSH_BAIL_WITH(opened);
    HUSH_ENSURE(opened == HUSH_OK, HUSH_E_BAD_REQUEST, HUSH_SERVER_INVALID_PACKAGE);
    *text = plaintext;
cleanup:
    return status;
}

static bool asks_stream(const hush_json_value *request)
{
    const hush_json_value *stream = hush_json_object_get(request, "stream", 6);
    return hush_json_type_of(stream) == HUSH_JSON_BOOL && hush_json_bool(stream);
}

/* v1 (NOMYO's protocol) has no streamed answers. */
HUSH_MUST_USE
static hush_status check_stream(const hush_json_value *request, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(!asks_stream(request), HUSH_E_BAD_REQUEST, "stream is not supported");
cleanup:
    return status;
}

/* ---- an opened request -------------------------------------------------- */

/* Everything between opening a request and sealing its answer. The
 * plaintext request and its document are in `arena` (locked); the strings
 * the answer echoes are copied, so the caller's request may be gone. */
struct hush_server_exchange {
    const hush_server *server;
    hush_pubkey *client;
    hush_arena *arena;
    const unsigned char *text; /* the request's plaintext, in arena */
    size_t len;
    const hush_json_value *request;
    char payload_id[HUSH_SERVER_PAYLOAD_ID_MAX + 1];
    const char *tier; /* a literal, or NULL for none named */
    bool attest;      /* quote the answer with the server's TPM */
    unsigned char replay_key[HUSH_REPLAY_DIGEST_BYTES];
    unsigned char replay_binding[HUSH_REPLAY_DIGEST_BYTES];
    double open_ms;
    bool answered;
    /* v2 and plaintext: the request's path (NULL: chat completions) and
     * whether it asks for a streamed answer. */
    char *path;
    bool stream;
    bool plain; /* a plaintext pass-through: nothing to open or seal */
    /* v2 only (v2 != NULL): the HPKE exchange the answer is sealed to, the
     * request's plaintext (secure memory; `text` points into it; a
     * plaintext pass-through keeps its copy there too) and the key that
     * opened it. */
    hush_v2_exchange *v2;
    hush_secbuf *v2_plaintext;
    uint8_t v2_key_id;
    size_t v2_key_index;
};

/* ---- _metadata ---------------------------------------------------------- */

HUSH_MUST_USE
static hush_status put_string(hush_json_writer *w, const char *key, const char *value,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, key, strlen(key), err));
    HUSH_TRY(hush_json_write_string(w, value, strlen(value), err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_bool(hush_json_writer *w, const char *key, bool value, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, key, strlen(key), err));
    HUSH_TRY(hush_json_write_bool(w, value, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_uint(hush_json_writer *w, const char *key, uint64_t value,
                            hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, key, strlen(key), err));
    HUSH_TRY(hush_json_write_uint64(w, value, err));
cleanup:
    return status;
}

/* This request's facts only: never process-wide counters, which would tell
 * one client about the traffic of others. The request's arena holds its
 * plaintext (and, for the openai backend, the upstream's answer); the answer
 * buffer holds the answer being written. Sizes are as mapped so far. */
HUSH_MUST_USE
static hush_status write_memory_protection(const hush_arena *arena, const hush_secbuf *answer,
                                           hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    bool locked = hush_arena_is_locked(arena) && hush_secbuf_is_locked(answer);
    uint64_t request_bytes = hush_arena_mapped_bytes(arena);
    uint64_t answer_bytes = hush_secbuf_capacity(answer);
    HUSH_TRY(hush_json_write_key(w, "memory_protection", 17, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(put_string(w, "platform", info.platform, err));
    HUSH_TRY(put_bool(w, "mlock_available", info.mlock_available, err));
    HUSH_TRY(put_bool(w, "request_locked", locked, err));
    HUSH_TRY(put_bool(w, "dump_exclusion", info.dump_exclusion, err));
    HUSH_TRY(put_bool(w, "wipe_on_fork", info.wipe_on_fork, err));
    HUSH_TRY(put_bool(w, "openssl_secure_heap", info.openssl_secure_heap, err));
    HUSH_TRY(put_uint(w, "request_bytes", request_bytes, err));
    HUSH_TRY(put_uint(w, "answer_bytes", answer_bytes, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* A quote bound to this request when it asks for one, NOMYO's word for
 * having no TPM, or ours for not quoting ("quoted": false: each quote is a
 * TPM round trip under one lock). A TPM that fails to quote fails the
 * request: an answer that should carry a quote must not go out without one. */
HUSH_MUST_USE
static hush_status write_tpm_attestation(const hush_server_exchange *x, hush_json_writer *w,
                                         hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_tpm *tpm = x->server->tpm;
    HUSH_TRY(hush_json_write_key(w, "tpm_attestation", 15, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    if (tpm == NULL) {
        HUSH_TRY(put_bool(w, "is_available", false, err));
    } else if (!x->attest) {
        HUSH_TRY(put_bool(w, "is_available", true, err));
        HUSH_TRY(put_bool(w, "quoted", false, err));
    } else {
        HUSH_TRY_AS(hush_tpm_quote(tpm, x->payload_id, w, err), HUSH_E_UNAVAILABLE,
                    "TPM attestation failed");
    }
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_metadata(const hush_server_exchange *x, const hush_secbuf *answer,
                                  hush_json_writer *w,
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_server *s = x->server;
    HUSH_TRY(hush_json_write_key(w, "_metadata", 9, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(put_string(w, "server", s->server_name, err));
    HUSH_TRY(put_string(w, "backend", s->backend == HUSH_BACKEND_ECHO ? "echo" : "openai", err));
    HUSH_TRY(put_string(w, "security_tier", x->tier != NULL ? x->tier : "standard", err));
    HUSH_TRY(write_memory_protection(x->arena, answer, w, err));
    HUSH_TRY(write_tpm_attestation(x, w, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

void hush_server_exchange_free(hush_server_exchange *x)
{
    if (x == NULL)
        return;
    hush_arena_free(x->arena); /* wipes the request */
    hush_secbuf_free(x->v2_plaintext);
    hush_v2_exchange_free(x->v2);
    hush_pubkey_free(x->client);
    free(x->path);
    free(x);
}

/* The tier as a literal that outlives the request (check_request vetted it). */
static const char *tier_literal(const char *tier)
{
    static const char *const tiers[] = {"standard", "high", "maximum"};
    for (size_t i = 0; tier != NULL && i < sizeof tiers / sizeof tiers[0]; i++)
        if (strcmp(tier, tiers[i]) == 0)
            return tiers[i];
    return NULL;
}

/* SHA-256 over the client key's fingerprint and the payload id: what a
 * retry of this request comes with, and a replay under another key not. */
HUSH_MUST_USE
static hush_status replay_binding(const hush_server_exchange *x, unsigned char *out,
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    char fingerprint[HUSH_FINGERPRINT_LEN];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    HUSH_OSSL(md != NULL, "SHA-256 context");
    HUSH_TRY(hush_pubkey_fingerprint(x->client, fingerprint, err));
    HUSH_OSSL(EVP_DigestInit_ex(md, hush__sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(md, fingerprint, strlen(fingerprint)) == 1 &&
                  EVP_DigestUpdate(md, "\n", 1) == 1 && /* a payload id holds no newline */
                  EVP_DigestUpdate(md, x->payload_id, strlen(x->payload_id)) == 1 &&
                  EVP_DigestFinal_ex(md, out, NULL) == 1,
              "SHA-256 of the replay binding");
cleanup:
    EVP_MD_CTX_free(md);
    return status;
}

hush_status hush_server_open(const hush_server *server, const hush_server_request *req,
                             hush_server_exchange **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_server_exchange *x = NULL;
    double start;
    HUSH_ENSURE(server != NULL && req != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_server_open: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__init(err));
    HUSH_TRY(check_request(server, req, err));
    HUSH_ENSURE((x = calloc(1, sizeof *x)) != NULL, HUSH_E_NOMEM, "out of memory");
    x->server = server;
    x->tier = tier_literal(req->security_tier);
    x->attest = req->attest;
    memcpy(x->payload_id, req->payload_id, strlen(req->payload_id) + 1); /* length checked */
    HUSH_TRY(client_key(req, &x->client, err));
    start = now_ms();
    HUSH_TRY(hush_arena_new(server->secmem_flags, &x->arena, err));
    HUSH_TRY(open_request(server, req, x->arena, &x->text, &x->len, &x->request, x->replay_key,
                          err));
    HUSH_TRY(check_stream(x->request, err));
    HUSH_TRY(replay_binding(x, x->replay_binding, err));
    x->open_ms = now_ms() - start;
    *out = x;
    x = NULL;
cleanup:
    hush_server_exchange_free(x);
    if (status != HUSH_OK && err != NULL)
        err->http_status = http_status_for(status);
    return status;
}

void hush_server_exchange_replay_key(const hush_server_exchange *x,
                                     unsigned char digest[HUSH_REPLAY_DIGEST_BYTES],
                                     unsigned char binding[HUSH_REPLAY_DIGEST_BYTES])
{
    memcpy(digest, x->replay_key, HUSH_REPLAY_DIGEST_BYTES);
    memcpy(binding, x->replay_binding, HUSH_REPLAY_DIGEST_BYTES);
}

/* ---- answering it ------------------------------------------------------- */

static const char *exchange_path(const hush_server_exchange *x)
{
    return x->path != NULL ? x->path : CHAT_COMPLETIONS;
}

HUSH_MUST_USE
static hush_status write_answer(const hush_server_exchange *x, const hush_secbuf *answer,
                                hush_json_writer *w,
                                hush_server_answer *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_server *s = x->server;
    double start = now_ms();
    HUSH_TRY(hush_json_write_object_begin(w, err));
    if (s->backend == HUSH_BACKEND_ECHO)
        HUSH_TRY(hush__echo_write(x->request, exchange_path(x), x->payload_id, x->arena, w,
                                  err));
    else
        HUSH_TRY(hush__upstream_write(&s->upstream, exchange_path(x), x->text, x->len, x->arena,
                                      w, &out->upstream_status, err));
    out->backend_ms = now_ms() - start;
    if (x->v2 == NULL && !x->plain) /* a v2 client assembles its own */
        HUSH_TRY(write_metadata(x, answer, w, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* The answer's frames and response nonce, sealed to the request's context. */
HUSH_MUST_USE
static hush_status seal_v2_answer(const hush_server_exchange *x, const hush_secbuf *answer,
                                  hush_server_answer *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = hush_secbuf_len(answer);
    HUSH_TRY(hush_secbuf_new(len + len / 16 + 64, 0, HUSH_SECMEM_PUBLIC, &out->package, err));
    HUSH_TRY(hush_v2_response_seal(x->v2, hush_secbuf_bytes(answer), len, 0, out->package,
                                   out->response_nonce, err));
cleanup:
    return status;
}

/* A plaintext pass-through's answer as it is, for the caller to send. */
HUSH_MUST_USE
static hush_status copy_plain_answer(const hush_secbuf *answer, hush_server_answer *out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = hush_secbuf_len(answer);
    HUSH_TRY(hush_secbuf_new(len + 1, 0, HUSH_SECMEM_PUBLIC, &out->package, err));
    HUSH_TRY(hush_secbuf_append(out->package, hush_secbuf_bytes(answer), len, err));
cleanup:
    return status;
}

hush_status hush_server_exchange_answer(hush_server_exchange *x, hush_server_answer *out,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *answer = NULL;
    hush_json_writer *writer = NULL;
    double start;

    HUSH_ENSURE(x != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_server_exchange_answer: NULL argument");
    memset(out, 0, sizeof *out);
    HUSH_ENSURE(!x->answered, HUSH_E_ARGUMENT, "this request has been answered already");
    HUSH_ENSURE(!x->stream, HUSH_E_ARGUMENT,
                "a request for a stream is answered with hush_server_exchange_stream");
    x->answered = true;
    out->open_ms = x->open_ms;
    HUSH_TRY(hush_secbuf_new(ANSWER_INITIAL_BYTES, 0, x->server->secmem_flags, &answer, err));
    HUSH_TRY(hush_json_writer_new(answer, HUSH_JSON_WRITE_COMPACT, 0, &writer, err));
    HUSH_TRY(write_answer(x, answer, writer, out, err));
    start = now_ms();
    if (x->plain)
        HUSH_TRY(copy_plain_answer(answer, out, err));
    else if (x->v2 != NULL)
        HUSH_TRY(seal_v2_answer(x, answer, out, err));
    else /* processed_at in Unix seconds, the int NOMYO's API reference documents */
        HUSH_TRY(hush_envelope_v1_seal(x->client, hush_secbuf_data(answer),
                                       hush_secbuf_len(answer), (int64_t)time(NULL),
                                       &out->package, err));
    out->seal_ms = now_ms() - start;
cleanup:
    hush_json_writer_free(writer);
    hush_secbuf_free(answer);
    if (x != NULL) { /* the request's plaintext is no longer needed, whatever happened */
        hush_arena_free(x->arena);
        x->arena = NULL;
        hush_secbuf_free(x->v2_plaintext);
        x->v2_plaintext = NULL;
    }
    if (status != HUSH_OK && out != NULL) {
        hush_secbuf_free(out->package);
        memset(out, 0, sizeof *out);
    }
    if (status != HUSH_OK && err != NULL)
        err->http_status = x != NULL && (x->v2 != NULL || x->plain) ? v2_http_status_for(status)
                                                                    : http_status_for(status);
    return status;
}

hush_status hush_server_handle(const hush_server *server, const hush_server_request *req,
                               hush_server_answer *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_server_exchange *x = NULL;
    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_server_handle: NULL argument");
    memset(out, 0, sizeof *out);
    HUSH_TRY(hush_server_open(server, req, &x, err));
    HUSH_TRY(hush_server_exchange_answer(x, out, err));
cleanup:
    hush_server_exchange_free(x);
    if (status != HUSH_OK && err != NULL)
        err->http_status = http_status_for(status);
    return status;
}

void hush_server_answer_clear(hush_server_answer *answer)
{
    if (answer == NULL)
        return;
    hush_secbuf_free(answer->package);
    memset(answer, 0, sizeof *answer);
}

/* ---- protocol v2 ---------------------------------------------------------- */

/* A path the upstream's URL can take as it is: "/v1/" and then letters,
 * digits, "-", "_", "." and "/", no empty or dot-dot segment. */
static bool is_api_path(const char *path)
{
    size_t n = strlen(path);
    if (n <= 4 || n > PATH_MAX_BYTES || strncmp(path, "/v1/", 4) != 0 ||
        strstr(path, "//") != NULL || strstr(path, "/..") != NULL)
        return false;
    return strspn(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") ==
           n;
}

/* The request's path, checked (404 for one this server cannot answer),
 * copied into the exchange. */
HUSH_MUST_USE
static hush_status take_path(const hush_server *s, const char *path, hush_server_exchange *x,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    if (path == NULL)
        path = CHAT_COMPLETIONS;
    HUSH_ENSURE(is_api_path(path) && (s->backend != HUSH_BACKEND_ECHO || hush__echo_answers(path)),
                HUSH_E_NOT_FOUND, UNKNOWN_PATH);
    HUSH_ENSURE((x->path = strdup(path)) != NULL, HUSH_E_NOMEM, "out of memory");
cleanup:
    return status;
}

/* A suite the gateway offers with a key of its KEM (docs/protocol-v2.md):
 * a named config with another is a config the gateway does not have. */
static bool v2_suite_offered(hush_hpke_suite suite)
{
    bool aes = suite.aead_id == HUSH_HPKE_AEAD_AES_256_GCM;
    bool chacha = suite.aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305;
    return suite.kdf_id == HUSH_HPKE_KDF_HKDF_SHA256 &&
           ((suite.kem_id == HUSH_HPKE_KEM_X25519_SHA256 && aes) ||
            (suite.kem_id == HUSH_HPKE_KEM_XWING && (aes || chacha)));
}

/* The keys a v2 request may open under, by index into req->keys: the one
 * its config names (key id, KEM and an offered suite), or every X25519 key
 * for an EHBP request. HUSH_E_KEY when there is none. */
HUSH_MUST_USE
static hush_status v2_candidates(const hush_server_v2_request *req, const unsigned char *hdr,
                                 hush_hpke_keypair **keys, size_t *index, size_t *count,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    uint8_t key_id = 0;
    hush_hpke_suite suite = {.kem_id = HUSH_HPKE_KEM_X25519_SHA256};
    if (hdr != NULL)
        hush_v2_hdr_decode(hdr, &key_id, &suite);
    *count = 0;
    HUSH_ENSURE(hdr == NULL || v2_suite_offered(suite), HUSH_E_KEY, V2_UNKNOWN_KEY);
    for (size_t i = 0; i < req->key_count && (hdr == NULL || *count == 0); i++) {
        const hush_server_v2_key *k = &req->keys[i];
        if (k->keypair == NULL || hush_hpke_keypair_kem(k->keypair) != suite.kem_id ||
            (hdr != NULL && k->key_id != key_id))
            continue;
        keys[*count] = k->keypair;
        index[*count] = i;
        (*count)++;
    }
    HUSH_ENSURE(*count > 0, HUSH_E_KEY, V2_UNKNOWN_KEY);
cleanup:
    return status;
}

/* Open the framed body into x->v2_plaintext under the candidate keys and
 * keep the exchange and the key that opened it. */
HUSH_MUST_USE
static hush_status v2_open_body(const hush_server *s, const hush_server_v2_request *req,
                                hush_server_exchange *x, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len = 0, count = 0, chosen = 0;
    hush_hpke_suite suite = {.kem_id = HUSH_HPKE_KEM_X25519_SHA256};
    uint8_t named_id = 0;
    hush_hpke_keypair **keys = NULL;
    size_t *index = NULL;
    hush_v2_opener *opener = NULL;
    hush_v2_limits limits = {.max_total_bytes = s->max_package_bytes};
    bool named = req->key_config != NULL;

    if (named) {
        HUSH_TRY(hush_v2_hdr_parse_hex(req->key_config, req->key_config_len, hdr, err));
        hush_v2_hdr_decode(hdr, &named_id, &suite);
    }
    HUSH_ENSURE(req->key_count > 0, HUSH_E_KEY, V2_UNKNOWN_KEY);
    keys = calloc(req->key_count, sizeof *keys);
    index = calloc(req->key_count, sizeof *index);
    HUSH_ENSURE(keys != NULL && index != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_TRY(v2_candidates(req, named ? hdr : NULL, keys, index, &count, err));
    HUSH_TRY(hush_v2_enc_parse_hex(suite.kem_id, req->encapsulated_key,
                                   req->encapsulated_key_len, enc, &enc_len, err));
    HUSH_TRY(hush_secbuf_new(req->body_len, s->max_package_bytes, s->secmem_flags,
                             &x->v2_plaintext, err));
    hush_status setup = hush_v2_request_opener_new(named ? hdr : NULL, enc, enc_len, keys, count,
                                                   &limits, x->v2_plaintext, &opener, err);
    /* A share no key decapsulates (a low-order point) answers as a first
     * frame no key opens: which step failed is no oracle (EHBP §5.4.4). */
    HUSH_ENSURE(named || setup != HUSH_E_AUTH, HUSH_E_KEY, V2_UNKNOWN_KEY);
    HUSH_TRY(setup);
    HUSH_TRY(hush_v2_opener_feed(opener, req->body != NULL ? req->body : "", req->body_len,
                                 err));
    HUSH_TRY(hush_v2_opener_finish(opener, &x->v2, &chosen, err));
    x->v2_key_index = index[chosen];
    x->v2_key_id = req->keys[x->v2_key_index].key_id;
cleanup:
    hush_v2_opener_free(opener);
    free(keys);
    free(index);
    return status;
}

/* Open the body and parse its plaintext, a JSON object, into x->arena.
 * Every fault of the request is one opaque message, except a key the
 * gateway does not have (the client refetches the configs). */
HUSH_MUST_USE
static hush_status v2_open_request(const hush_server *s, const hush_server_v2_request *req,
                                   hush_server_exchange *x, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_status opened = v2_open_body(s, req, x, err);
    if (opened == HUSH_E_NOMEM || opened == HUSH_E_CRYPTO || opened == HUSH_E_ARGUMENT)
        HUSH_BAIL_WITH(opened);
    HUSH_ENSURE(opened != HUSH_E_KEY, HUSH_E_KEY, V2_UNKNOWN_KEY);
    HUSH_ENSURE(opened == HUSH_OK, HUSH_E_BAD_REQUEST, HUSH_SERVER_INVALID_PACKAGE);
    x->text = hush_secbuf_bytes(x->v2_plaintext);
    x->len = hush_secbuf_len(x->v2_plaintext);
    hush_json_limits limits = {.max_bytes = x->len};
    hush_status parsed = hush_json_parse_into(x->arena, x->text, x->len, &limits, &x->request,
                                              err);
    if (parsed == HUSH_E_NOMEM)
        HUSH_BAIL_WITH(parsed);
    HUSH_ENSURE(parsed == HUSH_OK && hush_json_type_of(x->request) == HUSH_JSON_OBJECT,
                HUSH_E_BAD_REQUEST, HUSH_SERVER_INVALID_PACKAGE);
cleanup:
    return status;
}

/* The replay key (SHA-256 of enc), its binding (SHA-256 over the key id),
 * and the echo's payload id made from the replay key. */
HUSH_MUST_USE
static hush_status v2_identify(hush_server_exchange *x, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    HUSH_OSSL(md != NULL, "SHA-256 context");
    hush_v2_exchange_digest(x->v2, x->replay_key);
    HUSH_OSSL(EVP_DigestInit_ex(md, hush__sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(md, V2_BINDING_LABEL, sizeof V2_BINDING_LABEL) == 1 &&
                  EVP_DigestUpdate(md, &x->v2_key_id, 1) == 1 &&
                  EVP_DigestFinal_ex(md, x->replay_binding, NULL) == 1,
              "SHA-256 of the replay binding");
    memcpy(x->payload_id, "v2-", 3);
    hush_v2_hex_format(x->replay_key, V2_PAYLOAD_ID_BYTES, x->payload_id + 3);
cleanup:
    EVP_MD_CTX_free(md);
    return status;
}

hush_status hush_server_open_v2(const hush_server *server, const hush_server_v2_request *req,
                                hush_server_exchange **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_server_exchange *x = NULL;
    double start = now_ms();
    HUSH_ENSURE(server != NULL && req != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_server_open_v2: NULL argument");
    *out = NULL;
    HUSH_ENSURE((req->body != NULL || req->body_len == 0) && (req->keys != NULL ||
                    req->key_count == 0),
                HUSH_E_ARGUMENT, "hush_server_open_v2: NULL body or keys");
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(req->body_len <= server->max_package_bytes, HUSH_E_LIMIT,
                "Request body too large");
    HUSH_ENSURE(req->encapsulated_key != NULL, HUSH_E_BAD_REQUEST, HUSH_SERVER_INVALID_PACKAGE);
    HUSH_ENSURE((x = calloc(1, sizeof *x)) != NULL, HUSH_E_NOMEM, "out of memory");
    x->server = server;
    HUSH_TRY(take_path(server, req->path, x, err));
    HUSH_TRY(hush_arena_new(server->secmem_flags, &x->arena, err));
    HUSH_TRY(v2_open_request(server, req, x, err));
    x->stream = asks_stream(x->request);
    HUSH_TRY(v2_identify(x, err));
    x->open_ms = now_ms() - start;
    *out = x;
    x = NULL;
cleanup:
    hush_server_exchange_free(x);
    if (status != HUSH_OK && err != NULL)
        err->http_status = v2_http_status_for(status);
    return status;
}

bool hush_server_exchange_v2_key(const hush_server_exchange *x, uint8_t *key_id,
                                 size_t *key_index)
{
    if (x == NULL || x->v2 == NULL)
        return false;
    *key_id = x->v2_key_id;
    *key_index = x->v2_key_index;
    return true;
}

bool hush_server_exchange_is_stream(const hush_server_exchange *x)
{
    return x != NULL && (x->v2 != NULL || x->plain) && x->stream;
}

/* ---- streamed answers ------------------------------------------------------ */

/* Where a stream's events go: sealed (or, plaintext, copied) into `frames`
 * and handed to the caller's emit. */
typedef struct stream_out {
    hush_v2_response_sealer *sealer; /* NULL for a plaintext pass-through */
    hush_secbuf *frames;
    hush_server_emit_fn emit;
    void *ctx;
} stream_out;

static hush_status emit_event(void *ctx, const unsigned char *text, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    stream_out *o = ctx;
    hush_secbuf_clear(o->frames);
    if (o->sealer != NULL)
        HUSH_TRY(hush_v2_response_sealer_seal(o->sealer, text, len, o->frames, err));
    else
        HUSH_TRY(hush_secbuf_append(o->frames, text, len, err));
    HUSH_ENSURE(o->emit(o->ctx, hush_secbuf_bytes(o->frames), hush_secbuf_len(o->frames)) == 0,
                HUSH_E_CANCELLED, "the client closed the stream");
cleanup:
    hush_secbuf_clear(o->frames);
    return status;
}

static hush_status poll_client(void *ctx, hush_error *err)
{
    hush_status status = HUSH_OK;
    stream_out *o = ctx;
    HUSH_ENSURE(o->emit(o->ctx, NULL, 0) == 0, HUSH_E_CANCELLED, "the client closed the stream");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status run_stream(hush_server_exchange *x, stream_out *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_server *s = x->server;
    const hush__event_sink sink = {emit_event, poll_client, out};
    int upstream_status = 0;
    if (s->backend == HUSH_BACKEND_ECHO)
        HUSH_TRY(hush__echo_stream(x->request, exchange_path(x), x->payload_id,
                                   s->echo_delay_ms, s->secmem_flags, x->arena, &sink, err));
    else
        HUSH_TRY(hush__upstream_stream(&s->upstream, exchange_path(x), x->text, x->len, &sink,
                                       &upstream_status, err));
cleanup:
    return status;
}

hush_status hush_server_exchange_stream(hush_server_exchange *x,
                                        unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        hush_server_emit_fn emit, void *ctx, hush_error *err)
{
    hush_status status = HUSH_OK;
    stream_out out = {.emit = emit, .ctx = ctx};
    HUSH_ENSURE(x != NULL && nonce != NULL && emit != NULL, HUSH_E_ARGUMENT,
                "hush_server_exchange_stream: NULL argument");
    HUSH_ENSURE(!x->answered, HUSH_E_ARGUMENT, "this request has been answered already");
    HUSH_ENSURE(hush_server_exchange_is_stream(x), HUSH_E_ARGUMENT,
                "this request does not ask for a stream");
    x->answered = true;
    memset(nonce, 0, HUSH_V2_RESPONSE_NONCE_BYTES);
    if (!x->plain)
        HUSH_TRY(hush_v2_response_sealer_new(x->v2, nonce, &out.sealer, err));
    /* A plaintext pass-through's events are plaintext: locked like the rest. */
    HUSH_TRY(hush_secbuf_new(EVENT_FRAMES_INITIAL_BYTES, 0,
                             x->plain ? x->server->secmem_flags : HUSH_SECMEM_PUBLIC, &out.frames,
                             err));
    HUSH_TRY(run_stream(x, &out, err));
cleanup:
    hush_v2_response_sealer_free(out.sealer);
    hush_secbuf_free(out.frames);
    if (x != NULL) { /* the request's plaintext is no longer needed, whatever happened */
        hush_arena_free(x->arena);
        x->arena = NULL;
        hush_secbuf_free(x->v2_plaintext);
        x->v2_plaintext = NULL;
    }
    if (status != HUSH_OK && err != NULL)
        err->http_status = v2_http_status_for(status);
    return status;
}

/* ---- plaintext pass-through --------------------------------------------------- */

HUSH_MUST_USE
static hush_status plain_parse(const hush_server *s, const void *body, size_t len,
                               hush_server_exchange *x, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_limits limits = {.max_bytes = len};
    HUSH_TRY(hush_secbuf_new(len + 1, 0, s->secmem_flags, &x->v2_plaintext, err));
    HUSH_TRY(hush_secbuf_append(x->v2_plaintext, body, len, err));
    x->text = hush_secbuf_bytes(x->v2_plaintext);
    x->len = len;
    hush_status parsed = hush_json_parse_into(x->arena, x->text, x->len, &limits, &x->request,
                                              err);
    if (parsed == HUSH_E_NOMEM)
        HUSH_BAIL_WITH(parsed);
    HUSH_ENSURE(parsed == HUSH_OK && hush_json_type_of(x->request) == HUSH_JSON_OBJECT,
                HUSH_E_BAD_REQUEST, "request is not a JSON object");
cleanup:
    return status;
}

hush_status hush_server_open_plaintext(const hush_server *server, const char *path,
                                       const void *body, size_t len,
                                       hush_server_exchange **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_server_exchange *x = NULL;
    double start = now_ms();
    HUSH_ENSURE(server != NULL && out != NULL && (body != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_server_open_plaintext: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(len <= server->max_package_bytes, HUSH_E_LIMIT, "Request body too large");
    HUSH_ENSURE((x = calloc(1, sizeof *x)) != NULL, HUSH_E_NOMEM, "out of memory");
    x->server = server;
    x->plain = true;
    memcpy(x->payload_id, "plain", sizeof "plain");
    HUSH_TRY(take_path(server, path, x, err));
    HUSH_TRY(hush_arena_new(server->secmem_flags, &x->arena, err));
    HUSH_TRY(plain_parse(server, body != NULL ? body : "", len, x, err));
    x->stream = asks_stream(x->request);
    x->open_ms = now_ms() - start;
    *out = x;
    x = NULL;
cleanup:
    hush_server_exchange_free(x);
    if (status != HUSH_OK && err != NULL)
        err->http_status = v2_http_status_for(status);
    return status;
}

/* ---- the model list ------------------------------------------------------------- */

#define ECHO_MODELS \
    "{\"object\":\"list\",\"data\":[{\"id\":\"echo\",\"object\":\"model\",\"created\":0," \
    "\"owned_by\":\"hushcall\"}]}"
#define MODELS_PATH "/v1/models"

hush_status hush_server_models(const hush_server *server, hush_secbuf **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *answer = NULL;
    int upstream_status = 0;
    const hush_json_value *root = NULL;
    hush_json_doc *doc = NULL;
    HUSH_ENSURE(server != NULL && out != NULL, HUSH_E_ARGUMENT, "hush_server_models: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__init(err));
    HUSH_TRY(hush_secbuf_new(ANSWER_INITIAL_BYTES, server->upstream.max_answer_bytes,
                             HUSH_SECMEM_PUBLIC, &answer, err));
    if (server->backend == HUSH_BACKEND_ECHO) {
        HUSH_TRY(hush_secbuf_append(answer, ECHO_MODELS, strlen(ECHO_MODELS), err));
    } else {
        HUSH_TRY(hush__upstream_get(&server->upstream, MODELS_PATH, answer, &upstream_status,
                                    err));
        HUSH_ENSURE(hush_json_parse(hush_secbuf_bytes(answer), hush_secbuf_len(answer), NULL,
                                    HUSH_SECMEM_NO_LOCK, &doc, NULL) == HUSH_OK &&
                        hush_json_type_of(root = hush_json_doc_root(doc)) == HUSH_JSON_OBJECT,
                    HUSH_E_HTTP, "Upstream answer is not a JSON object");
    }
    *out = answer;
    answer = NULL;
cleanup:
    hush_json_doc_free(doc);
    hush_secbuf_free(answer);
    if (status != HUSH_OK && err != NULL)
        err->http_status = http_status_for(status);
    return status;
}
