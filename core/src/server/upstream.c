/* upstream.c — the openai backend: the decrypted request POSTed as it is to
 * an OpenAI-compatible `/chat/completions`, the answer read into locked
 * memory and written into ours. Each call has its own curl handle, so the
 * server stays immutable and calls never wait on one another.
 *
 * What libcurl copies: CURLOPT_POSTFIELDS only points at the locked body,
 * but to send it libcurl copies it into its own heap buffers (a body under
 * 64 KiB is appended to the buffer holding the request head, a larger one
 * goes through its upload buffer), and the answer lands in its download
 * buffer before on_body copies it out; over https OpenSSL's record buffers
 * hold the same bytes. Those are ordinary heap, freed without zeroing: the
 * plaintext of this leg may linger there (docs/gateway.md says so). The
 * Authorization line is ours to wipe, and is. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "hushcall/json.h"
#include "hushcall/json_writer.h"
#include "hushcall/secmem.h"
#include "internal.h"
#include "client/transfer.h"
#include "mem/mem_internal.h"
#include "backend.h"

#define ANSWER_INITIAL_BYTES 16384u
#define AUTH_HEADER_MAX 1024u

/* The answer as it arrives, capped at max_answer_bytes. */
typedef struct answer_sink {
    hush_secbuf *buf;
    bool too_large;
    bool nomem;
} answer_sink;

static size_t on_body(char *data, size_t size, size_t count, void *user)
{
    answer_sink *sink = user;
    size_t n = size * count;
    hush_status status = hush_secbuf_append(sink->buf, data, n, NULL);
    sink->too_large = status == HUSH_E_LIMIT;
    sink->nomem = status != HUSH_OK && status != HUSH_E_LIMIT;
    return status == HUSH_OK ? n : 0; /* 0 makes curl stop with CURLE_WRITE_ERROR */
}

HUSH_MUST_USE
static hush_status make_headers(const hush__upstream_config *cfg, struct curl_slist **out,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    char auth[AUTH_HEADER_MAX];
    HUSH_TRY(hush__header_add(out, "Content-Type: application/json", NULL, err));
    HUSH_TRY(hush__header_add(out, "Accept: application/json", NULL, err));
    HUSH_TRY(hush__header_add(out, "Expect:", NULL, err)); /* no 100-continue round trip */
    if (cfg->api_key != NULL) {
        int n = snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->api_key);
        HUSH_ENSURE(n > 0 && (size_t)n < sizeof auth, HUSH_E_INTERNAL,
                    "upstream_api_key is too long");
        HUSH_TRY(hush__header_add(out, auth, NULL, err));
    }
cleanup:
    hush_memzero(auth, sizeof auth);
    return status;
}

/* The shared safety options (transfer.c), then this exchange's own. */
HUSH_MUST_USE
static hush_status set_options(CURL *easy, const hush__upstream_config *cfg,
                               struct curl_slist *headers, const void *body, size_t len,
                               answer_sink *sink, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush__curl_endpoint endpoint = {
        .connect_timeout_ms = cfg->connect_timeout_ms,
        .timeout_ms = cfg->timeout_ms,
        .ca_file = cfg->ca_file,
    };
    CURLcode rc = CURLE_OK;
    HUSH_TRY(hush__curl_setup(easy, &endpoint, "upstream request", true, err));
#define SET(opt, val) \
    if (rc == CURLE_OK) \
        rc = curl_easy_setopt(easy, opt, val)
    SET(CURLOPT_URL, cfg->url);
    SET(CURLOPT_HTTPHEADER, headers);
    /* Pointed at, not copied here; libcurl copies it to send it (see the top). */
    SET(CURLOPT_POSTFIELDS, body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, sink);
#undef SET
    HUSH_ENSURE(rc == CURLE_OK, HUSH_E_INTERNAL, "could not set up the upstream request (%s)",
                curl_easy_strerror(rc));
cleanup:
    return status;
}

/* How the transport ended, once the HTTP status had nothing to say. */
HUSH_MUST_USE
static hush_status check_transport(CURLcode rc, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(rc != CURLE_COULDNT_RESOLVE_HOST && rc != CURLE_COULDNT_CONNECT,
                HUSH_E_UNAVAILABLE, "Upstream unavailable");
    HUSH_ENSURE(rc != CURLE_OPERATION_TIMEDOUT, HUSH_E_TIMEOUT, "Upstream timed out");
    HUSH_ENSURE(rc == CURLE_OK, HUSH_E_HTTP, "Upstream request failed");
cleanup:
    return status;
}

/* The gateway's verdict on one exchange. An HTTP status decides first: an
 * error body that was too large or cut short is still that error. */
HUSH_MUST_USE
static hush_status check_exchange(CURLcode rc, long http, const answer_sink *sink,
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(http != 429 && http != 503, HUSH_E_UNAVAILABLE, "Upstream busy (HTTP %ld)", http);
    HUSH_ENSURE(http == 0 || (http >= 200 && http <= 299), HUSH_E_HTTP,
                "Upstream answered HTTP %ld", http);
    HUSH_ENSURE(!sink->too_large, HUSH_E_HTTP, "Upstream answer too large");
    HUSH_ENSURE(!sink->nomem, HUSH_E_NOMEM, "out of memory");
    HUSH_TRY(check_transport(rc, err));
cleanup:
    return status;
}

/* The upstream's members, less its `_metadata`, into our answer. */
HUSH_MUST_USE
static hush_status write_answer(const hush_secbuf *answer, size_t max, hush_arena *arena,
                                hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *root = NULL;
    hush_json_limits limits = {.max_bytes = max};
    const char *key;
    size_t key_len;
    const hush_json_value *value;
    HUSH_ENSURE(hush_json_parse_into(arena, hush_secbuf_bytes(answer), hush_secbuf_len(answer),
                                     &limits, &root, NULL) == HUSH_OK &&
                    hush_json_type_of(root) == HUSH_JSON_OBJECT,
                HUSH_E_HTTP, "Upstream answer is not a JSON object");
    for (size_t i = 0; hush_json_object_member(root, i, &key, &key_len, &value); i++) {
        if (key_len == 9 && memcmp(key, "_metadata", 9) == 0)
            continue;
        HUSH_TRY(hush_json_write_key(w, key, key_len, err));
        HUSH_TRY(hush_json_write_value(w, value, err));
    }
cleanup:
    return status;
}

hush_status hush__upstream_write(const hush__upstream_config *cfg, const void *body, size_t len,
                                 hush_arena *arena, hush_json_writer *w, int *upstream_status,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    CURL *easy = NULL;
    struct curl_slist *headers = NULL;
    answer_sink sink = {0};
    long http = 0;
    CURLcode rc;
    size_t initial = cfg->max_answer_bytes < ANSWER_INITIAL_BYTES ? cfg->max_answer_bytes
                                                                  : ANSWER_INITIAL_BYTES;

    *upstream_status = 0;
    HUSH_TRY(hush_secbuf_new(initial, cfg->max_answer_bytes, cfg->secmem_flags, &sink.buf, err));
    HUSH_ENSURE((easy = curl_easy_init()) != NULL, HUSH_E_NOMEM, "could not create a curl handle");
    HUSH_TRY(make_headers(cfg, &headers, err));
    HUSH_TRY(set_options(easy, cfg, headers, body, len, &sink, err));
    rc = curl_easy_perform(easy);
    HUSH_ENSURE(curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http) == CURLE_OK,
                HUSH_E_INTERNAL, "could not read the upstream's status");
    *upstream_status = (int)http;
    HUSH_TRY(check_exchange(rc, http, &sink, err));
    HUSH_TRY(write_answer(sink.buf, cfg->max_answer_bytes, arena, w, err));
cleanup:
    hush__free_header_list(headers); /* its Authorization line holds the upstream key */
    curl_easy_cleanup(easy);
    hush_secbuf_free(sink.buf);
    return status;
}
