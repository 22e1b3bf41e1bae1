/* server.c — the server role of protocol v1: check a received request, open
 * it with the server key into one arena (locked memory), let the backend
 * write the answer into a locked buffer, add `_metadata` and seal it to the
 * client's key. Every failure carries the HTTP status a gateway answers
 * with and a message safe to send back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "hushcall/hushcall.h"
#include "internal.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_TIMEOUT_MS 300000L
#define ANSWER_INITIAL_BYTES 4096u
#define API_KEY_MAX 512u
#define CHAT_COMPLETIONS "/chat/completions"
#define BAD_CLIENT_KEY "X-Public-Key is not an RSA public key of at least 2048 bits"
#define NO_TPM_FOR_MAXIMUM \
    "Security tier 'maximum' requires TPM attestation, which this gateway does not offer"

struct hush_server {
    hush_keypair *key;
    hush_backend backend;
    char *server_name;
    size_t max_package_bytes;
    unsigned secmem_flags;
    char *upstream_url; /* "<base>/chat/completions" */
    char *upstream_api_key;
    char *upstream_ca_file;
    hush__upstream_config upstream; /* borrows the three strings above */
    hush_tpm *tpm;                  /* borrowed; NULL for none */
};

void hush_server_options_init(hush_server_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->backend = HUSH_BACKEND_ECHO;
    opts->upstream_connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    opts->upstream_timeout_ms = DEFAULT_TIMEOUT_MS;
    opts->max_package_bytes = HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES;
    opts->max_answer_bytes = HUSH_DEFAULT_MAX_RESPONSE_BYTES;
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

static hush_status check_options(const hush_server_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(o->key != NULL, HUSH_E_ARGUMENT, "key is required");
    HUSH_ENSURE(o->backend == HUSH_BACKEND_ECHO || o->backend == HUSH_BACKEND_OPENAI,
                HUSH_E_ARGUMENT, "backend %d is not known", (int)o->backend);
    HUSH_ENSURE(o->max_package_bytes > 0 && o->max_answer_bytes > 0, HUSH_E_ARGUMENT,
                "size limits must be positive");
    if (o->backend == HUSH_BACKEND_OPENAI) {
        const char *url = o->upstream_url;
        HUSH_ENSURE(url != NULL && (has_scheme(url, "http://") || has_scheme(url, "https://")),
                    HUSH_E_ARGUMENT,
                    "the openai backend needs an http:// or https:// upstream_url");
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

static hush_status copy_string(const char *s, char **out, hush_error *err)
{
    if (s == NULL)
        return HUSH_OK;
    if ((*out = strdup(s)) == NULL)
        return hush__fail(err, HUSH_E_NOMEM, "out of memory");
    return HUSH_OK;
}

/* "<base>/chat/completions", one trailing slash of the base dropped. */
static hush_status make_upstream_url(const char *base, char **out, hush_error *err)
{
    size_t n = strlen(base);
    if (n > 0 && base[n - 1] == '/')
        n--;
    size_t size = n + sizeof CHAT_COMPLETIONS;
    if ((*out = malloc(size)) == NULL)
        return hush__fail(err, HUSH_E_NOMEM, "out of memory");
    snprintf(*out, size, "%.*s%s", (int)n, base, CHAT_COMPLETIONS);
    return HUSH_OK;
}

static hush_status copy_upstream(hush_server *s, const hush_server_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__upstream_config *u = &s->upstream;
    u->connect_timeout_ms = o->upstream_connect_timeout_ms;
    u->timeout_ms = o->upstream_timeout_ms;
    u->max_answer_bytes = o->max_answer_bytes;
    u->secmem_flags = o->secmem_flags;
    if (o->backend != HUSH_BACKEND_OPENAI)
        return HUSH_OK;
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
    if (server->upstream_api_key != NULL)
        hush_memzero(server->upstream_api_key, strlen(server->upstream_api_key));
    free(server->upstream_api_key);
    free(server->upstream_url);
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
    HUSH_TRY(hush__init(err));
    HUSH_TRY(check_options(opts, err));
    HUSH_ENSURE((s = calloc(1, sizeof *s)) != NULL, HUSH_E_NOMEM, "out of memory");
    s->backend = opts->backend;
    s->max_package_bytes = opts->max_package_bytes;
    s->secmem_flags = opts->secmem_flags;
    s->tpm = opts->tpm;
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
    case HUSH_E_KEY:
    case HUSH_E_BAD_REQUEST: return 400;
    case HUSH_E_UNAVAILABLE: return 503;
    case HUSH_E_TIMEOUT: return 504;
    case HUSH_E_HTTP: return 502;
    default: return 500;
    }
}

/* Payload ids and tiers are echoed into the answer: printable ASCII only. */
static bool is_printable(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

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

static hush_status client_key(const hush_server_request *req, hush_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_E_KEY;
    if (req->client_public_key != NULL)
        status = hush_pubkey_from_pem(req->client_public_key, req->client_public_key_len, out,
                                      err);
    if (status == HUSH_OK || status == HUSH_E_NOMEM)
        return status;
    return hush__fail(err, HUSH_E_KEY, BAD_CLIENT_KEY);
}

/* Open and parse the request into `arena`. Every way a package can be bad
 * is one message, so a client learns nothing about which check it failed. */
static hush_status open_request(const hush_server *s, const hush_server_request *req,
                                hush_arena *arena, const unsigned char **text, size_t *len,
                                const hush_json_value **root, hush_error *err)
{
    unsigned char *plaintext = NULL;
    const void *package = req->package != NULL ? req->package : "";
    hush_status status =
        hush__envelope_v1_open_in(s->key, package, req->package_len, s->max_package_bytes,
                                  arena, &plaintext, len, NULL, err);
    if (status == HUSH_OK) {
        hush_json_limits limits = {.max_bytes = *len};
        status = hush_json_parse_into(arena, plaintext, *len, &limits, root, err);
    }
    if (status == HUSH_OK && hush_json_type_of(*root) != HUSH_JSON_OBJECT)
        status = HUSH_E_TYPE;
    if (status == HUSH_E_NOMEM || status == HUSH_E_CRYPTO)
        return status;
    if (status != HUSH_OK)
        return hush__fail(err, HUSH_E_BAD_REQUEST, HUSH_SERVER_INVALID_PACKAGE);
    *text = plaintext;
    return HUSH_OK;
}

static hush_status check_stream(const hush_json_value *request, hush_error *err)
{
    const hush_json_value *stream = hush_json_object_get(request, "stream", 6);
    if (hush_json_type_of(stream) == HUSH_JSON_BOOL && hush_json_bool(stream))
        return hush__fail(err, HUSH_E_BAD_REQUEST, "stream is not supported");
    return HUSH_OK;
}

/* ---- _metadata ---------------------------------------------------------- */

static hush_status put_string(hush_json_writer *w, const char *key, const char *value,
                              hush_error *err)
{
    hush_status status = hush_json_write_key(w, key, strlen(key), err);
    return status == HUSH_OK ? hush_json_write_string(w, value, strlen(value), err) : status;
}

static hush_status put_bool(hush_json_writer *w, const char *key, bool value, hush_error *err)
{
    hush_status status = hush_json_write_key(w, key, strlen(key), err);
    return status == HUSH_OK ? hush_json_write_bool(w, value, err) : status;
}

static hush_status put_uint(hush_json_writer *w, const char *key, uint64_t value,
                            hush_error *err)
{
    hush_status status = hush_json_write_key(w, key, strlen(key), err);
    return status == HUSH_OK ? hush_json_write_uint64(w, value, err) : status;
}

/* The names the Python binding's get_memory_protection_info() uses. */
static hush_status write_memory_protection(hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    HUSH_TRY(hush_json_write_key(w, "memory_protection", 17, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(put_string(w, "platform", info.platform, err));
    HUSH_TRY(put_bool(w, "mlock_available", info.mlock_available, err));
    HUSH_TRY(put_uint(w, "locked_bytes", info.locked_bytes, err));
    HUSH_TRY(put_uint(w, "lock_failures", info.lock_failures, err));
    HUSH_TRY(put_bool(w, "dump_exclusion", info.dump_exclusion, err));
    HUSH_TRY(put_bool(w, "wipe_on_fork", info.wipe_on_fork, err));
    HUSH_TRY(put_bool(w, "openssl_secure_heap", info.openssl_secure_heap, err));
    HUSH_TRY(put_uint(w, "mapped_bytes", info.mapped_bytes, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* A quote bound to this request, or NOMYO's word for having no TPM. A TPM
 * that fails to quote fails the request: an answer that should carry a
 * quote must not go out without one. */
static hush_status write_tpm_attestation(const hush_server *s, const char *payload_id,
                                         hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, "tpm_attestation", 15, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    if (s->tpm == NULL) {
        HUSH_TRY(put_bool(w, "is_available", false, err));
    } else if (hush_tpm_quote(s->tpm, payload_id, w, err) != HUSH_OK) {
        status = hush__fail(err, HUSH_E_UNAVAILABLE, "TPM attestation failed");
        goto cleanup;
    }
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

static hush_status write_metadata(const hush_server *s, const char *tier,
                                  const char *payload_id, hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, "_metadata", 9, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(put_string(w, "server", s->server_name, err));
    HUSH_TRY(put_string(w, "backend", s->backend == HUSH_BACKEND_ECHO ? "echo" : "openai", err));
    HUSH_TRY(put_string(w, "security_tier", tier != NULL ? tier : "standard", err));
    HUSH_TRY(write_memory_protection(w, err));
    HUSH_TRY(write_tpm_attestation(s, payload_id, w, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* ---- the whole exchange ------------------------------------------------- */

/* What one call holds; everything plaintext is in `arena` or `answer`. */
typedef struct exchange {
    hush_pubkey *client;
    hush_arena *arena;
    hush_secbuf *answer;
    hush_json_writer *writer;
} exchange;

static void exchange_free(exchange *x)
{
    hush_json_writer_free(x->writer);
    hush_secbuf_free(x->answer);
    hush_arena_free(x->arena);
    hush_pubkey_free(x->client);
}

static hush_status write_answer(const hush_server *s, const hush_server_request *req,
                                const unsigned char *text, size_t len,
                                const hush_json_value *request, exchange *x,
                                hush_server_answer *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    double start = now_ms();
    HUSH_TRY(hush_secbuf_new(&x->answer, ANSWER_INITIAL_BYTES, 0, s->secmem_flags, err));
    HUSH_TRY(hush_json_writer_new(&x->writer, x->answer, HUSH_JSON_WRITE_COMPACT, 0, err));
    HUSH_TRY(hush_json_write_object_begin(x->writer, err));
    if (s->backend == HUSH_BACKEND_ECHO)
        HUSH_TRY(hush__echo_write(request, req->payload_id, x->arena, x->writer, err));
    else
        HUSH_TRY(hush__upstream_write(&s->upstream, text, len, x->arena, x->writer,
                                      &out->upstream_status, err));
    out->backend_ms = now_ms() - start;
    HUSH_TRY(write_metadata(s, req->security_tier, req->payload_id, x->writer, err));
    HUSH_TRY(hush_json_write_object_end(x->writer, err));
cleanup:
    return status;
}

hush_status hush_server_handle(const hush_server *server, const hush_server_request *req,
                               hush_server_answer *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    exchange x = {0};
    const unsigned char *text = NULL;
    size_t len = 0;
    const hush_json_value *request = NULL;
    double start;

    HUSH_ENSURE(server != NULL && req != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_server_handle: NULL argument");
    memset(out, 0, sizeof *out);
    HUSH_TRY(hush__init(err));
    HUSH_TRY(check_request(server, req, err));
    HUSH_TRY(client_key(req, &x.client, err));
    start = now_ms();
    HUSH_TRY(hush_arena_new(&x.arena, server->secmem_flags, err));
    HUSH_TRY(open_request(server, req, x.arena, &text, &len, &request, err));
    HUSH_TRY(check_stream(request, err));
    out->open_ms = now_ms() - start;
    HUSH_TRY(write_answer(server, req, text, len, request, &x, out, err));
    start = now_ms();
    /* processed_at in Unix seconds, the int NOMYO's API reference documents */
    HUSH_TRY(hush_envelope_v1_seal(x.client, hush_secbuf_data(x.answer), hush_secbuf_len(x.answer),
                                   (int64_t)time(NULL), &out->package, err));
    out->seal_ms = now_ms() - start;
cleanup:
    exchange_free(&x);
    if (status != HUSH_OK && out != NULL)
        memset(out, 0, sizeof *out);
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
