/* upstream.c — the openai backend: the decrypted request POSTed as it is to
 * the same path of an OpenAI-compatible server, the answer read into locked
 * memory and written into ours, or (a stream) cut into its events as they
 * arrive. Each call has its own curl handle, so the server stays immutable
 * and calls never wait on one another.
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
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
#define API_PREFIX "/v1" /* of a request's path; the base URL ends in it */
#define POLL_MS 100L      /* the longest a stream goes without asking for its client */

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
static hush_status make_headers(const hush__upstream_config *cfg, bool stream,
                                struct curl_slist **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    char auth[AUTH_HEADER_MAX];
    HUSH_TRY(hush__header_add(out, "Content-Type: application/json", NULL, err));
    HUSH_TRY(hush__header_add(out, stream ? "Accept: text/event-stream" : "Accept: application/json",
                              NULL, err));
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

/* "<base><path after /v1>": /v1/embeddings goes to <base>/embeddings. The
 * URL may carry user:password@, so it is freed with
 * hush__free_secret_string. */
HUSH_MUST_USE
static hush_status make_url(const hush__upstream_config *cfg, const char *path, char **out,
                            hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t prefix = strlen(API_PREFIX);
    HUSH_ENSURE(strncmp(path, API_PREFIX "/", prefix + 1) == 0, HUSH_E_INTERNAL,
                "an upstream path must start with /v1/");
    size_t size = strlen(cfg->url) + strlen(path + prefix) + 1;
    HUSH_ENSURE((*out = malloc(size)) != NULL, HUSH_E_NOMEM, "out of memory");
    snprintf(*out, size, "%s%s", cfg->url, path + prefix);
cleanup:
    return status;
}

/* The shared safety options (transfer.c), then this exchange's own. */
HUSH_MUST_USE
static hush_status set_options(CURL *easy, const hush__upstream_config *cfg, const char *url,
                               struct curl_slist *headers, const void *body, size_t len,
                               curl_write_callback on_data, void *sink, hush_error *err)
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
    SET(CURLOPT_URL, url);
    SET(CURLOPT_HTTPHEADER, headers);
    /* Pointed at, not copied here; libcurl copies it to send it (see the top). */
    SET(CURLOPT_POSTFIELDS, body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    SET(CURLOPT_WRITEFUNCTION, on_data);
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

hush_status hush__upstream_write(const hush__upstream_config *cfg, const char *path,
                                 const void *body, size_t len, hush_arena *arena,
                                 hush_json_writer *w, int *upstream_status, hush_error *err)
{
    hush_status status = HUSH_OK;
    CURL *easy = NULL;
    struct curl_slist *headers = NULL;
    char *url = NULL;
    answer_sink sink = {0};
    long http = 0;
    CURLcode rc;
    size_t initial = cfg->max_answer_bytes < ANSWER_INITIAL_BYTES ? cfg->max_answer_bytes
                                                                  : ANSWER_INITIAL_BYTES;

    *upstream_status = 0;
    HUSH_TRY(hush_secbuf_new(initial, cfg->max_answer_bytes, cfg->secmem_flags, &sink.buf, err));
    HUSH_ENSURE((easy = curl_easy_init()) != NULL, HUSH_E_NOMEM, "could not create a curl handle");
    HUSH_TRY(make_url(cfg, path, &url, err));
    HUSH_TRY(make_headers(cfg, false, &headers, err));
    HUSH_TRY(set_options(easy, cfg, url, headers, body, len, on_body, &sink, err));
    rc = curl_easy_perform(easy);
    HUSH_ENSURE(curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http) == CURLE_OK,
                HUSH_E_INTERNAL, "could not read the upstream's status");
    *upstream_status = (int)http;
    HUSH_TRY(check_exchange(rc, http, &sink, err));
    HUSH_TRY(write_answer(sink.buf, cfg->max_answer_bytes, arena, w, err));
cleanup:
    hush__free_header_list(headers); /* its Authorization line holds the upstream key */
    curl_easy_cleanup(easy);
    hush__free_secret_string(url);
    hush_secbuf_free(sink.buf);
    return status;
}

/* ---- a bodyless GET ---------------------------------------------------------- */

hush_status hush__upstream_get(const hush__upstream_config *cfg, const char *path,
                               hush_secbuf *answer, int *upstream_status, hush_error *err)
{
    hush_status status = HUSH_OK;
    CURL *easy = NULL;
    struct curl_slist *headers = NULL;
    char *url = NULL;
    answer_sink sink = {.buf = answer};
    long http = 0;
    CURLcode rc;

    *upstream_status = 0;
    HUSH_ENSURE((easy = curl_easy_init()) != NULL, HUSH_E_NOMEM, "could not create a curl handle");
    HUSH_TRY(make_url(cfg, path, &url, err));
    HUSH_TRY(make_headers(cfg, false, &headers, err));
    HUSH_TRY(set_options(easy, cfg, url, headers, NULL, 0, on_body, &sink, err));
    HUSH_ENSURE(curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) == CURLE_OK, HUSH_E_INTERNAL,
                "could not set up the upstream request");
    rc = curl_easy_perform(easy);
    HUSH_ENSURE(curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http) == CURLE_OK,
                HUSH_E_INTERNAL, "could not read the upstream's status");
    *upstream_status = (int)http;
    HUSH_TRY(check_exchange(rc, http, &sink, err));
cleanup:
    hush__free_header_list(headers); /* its Authorization line holds the upstream key */
    curl_easy_cleanup(easy);
    hush__free_secret_string(url);
    return status;
}

/* ---- a streamed answer ------------------------------------------------------ */

/* The upstream's event stream as it arrives: the bytes of events not yet
 * whole, in locked memory. Until the status is known to be 2xx, the body
 * is kept whole (an error answer is judged by its status only). */
typedef struct event_reader {
    CURL *easy;
    hush_secbuf *buf;
    const hush__event_sink *sink;
    bool decided;  /* the status was read */
    bool streaming; /* it is 2xx: events go out as they complete */
    hush_status failed; /* what a callback stopped the transfer with */
    hush_error err;
} event_reader;

/* Where the first event in `data` ends, after its blank line; 0 for none yet. */
static size_t event_end(const unsigned char *data, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (data[i] == '\n' && data[i + 1] == '\n')
            return i + 2;
        if (i + 3 < len && memcmp(data + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    }
    return 0;
}

/* Hand every whole event in the buffer to the sink, keeping the rest. */
HUSH_MUST_USE
static hush_status pass_events(event_reader *r, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t end;
    while ((end = event_end(hush_secbuf_bytes(r->buf), hush_secbuf_len(r->buf))) > 0) {
        size_t rest = hush_secbuf_len(r->buf) - end;
        HUSH_TRY(r->sink->event(r->sink->ctx, hush_secbuf_bytes(r->buf), end, err));
        memmove(hush_secbuf_data(r->buf), hush_secbuf_data(r->buf) + end, rest);
        HUSH_TRY(hush_secbuf_set_len(r->buf, rest, err));
    }
cleanup:
    return status;
}

static size_t on_events(char *data, size_t size, size_t count, void *user)
{
    event_reader *r = user;
    size_t n = size * count;
    if (!r->decided) {
        long http = 0;
        r->decided = true;
        r->streaming = curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http) == CURLE_OK &&
                       http >= 200 && http <= 299;
    }
    r->failed = hush_secbuf_append(r->buf, data, n, &r->err);
    if (r->failed == HUSH_OK && r->streaming)
        r->failed = pass_events(r, &r->err);
    return r->failed == HUSH_OK ? n : 0; /* 0 makes curl stop with CURLE_WRITE_ERROR */
}

static double monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Run the transfer, asking the sink for its client at least every
 * POLL_MS, so a client that left closes the upstream request at once.
 * *rc is the transfer's own result. */
HUSH_MUST_USE
static hush_status run_transfer(CURLM *multi, CURL *easy, const hush__event_sink *sink,
                                CURLcode *rc, hush_error *err)
{
    hush_status status = HUSH_OK;
    int running = 1, left = 0;
    double polled = monotonic_ms();
    CURLMsg *msg;
    HUSH_ENSURE(curl_multi_add_handle(multi, easy) == CURLM_OK, HUSH_E_INTERNAL,
                "could not start the upstream request");
    while (running) {
        HUSH_ENSURE(curl_multi_perform(multi, &running) == CURLM_OK, HUSH_E_INTERNAL,
                    "upstream transfer failed");
        if (running)
            HUSH_ENSURE(curl_multi_poll(multi, NULL, 0, (int)(POLL_MS / 2), NULL) == CURLM_OK,
                        HUSH_E_INTERNAL, "upstream transfer failed");
        if (monotonic_ms() - polled >= (double)POLL_MS) {
            HUSH_TRY(sink->poll(sink->ctx, err));
            polled = monotonic_ms();
        }
    }
    *rc = CURLE_OK;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy)
            *rc = msg->data.result;
cleanup:
    return status;
}

/* The verdict on a streamed exchange once the transfer ended: a callback's
 * own failure (the client left, an event over the limit) first, then the
 * status and transport as for a whole answer; a stream cut short after
 * its head is the upstream failing. */
HUSH_MUST_USE
static hush_status check_stream(event_reader *r, CURLcode rc, long http, hush_error *err)
{
    hush_status status = HUSH_OK;
    answer_sink verdict = {.too_large = r->failed == HUSH_E_LIMIT && !r->streaming,
                           .nomem = r->failed != HUSH_OK && r->failed != HUSH_E_LIMIT &&
                                    !r->streaming};
    if (r->failed != HUSH_OK && r->streaming) {
        if (err != NULL)
            *err = r->err;
        HUSH_BAIL_WITH(r->failed == HUSH_E_LIMIT ? HUSH_E_HTTP : r->failed);
    }
    HUSH_TRY(check_exchange(rc, http, &verdict, err));
cleanup:
    return status;
}

hush_status hush__upstream_stream(const hush__upstream_config *cfg, const char *path,
                                  const void *body, size_t len, const hush__event_sink *sink,
                                  int *upstream_status, hush_error *err)
{
    hush_status status = HUSH_OK;
    CURLM *multi = NULL;
    struct curl_slist *headers = NULL;
    char *url = NULL;
    event_reader reader = {.sink = sink};
    long http = 0;
    CURLcode rc = CURLE_OK;
    size_t initial = cfg->max_answer_bytes < ANSWER_INITIAL_BYTES ? cfg->max_answer_bytes
                                                                  : ANSWER_INITIAL_BYTES;

    *upstream_status = 0;
    /* One event at a time is held, at most max_answer_bytes of it. */
    HUSH_TRY(hush_secbuf_new(initial, cfg->max_answer_bytes, cfg->secmem_flags, &reader.buf,
                             err));
    HUSH_ENSURE((reader.easy = curl_easy_init()) != NULL && (multi = curl_multi_init()) != NULL,
                HUSH_E_NOMEM, "could not create a curl handle");
    HUSH_TRY(make_url(cfg, path, &url, err));
    HUSH_TRY(make_headers(cfg, true, &headers, err));
    HUSH_TRY(set_options(reader.easy, cfg, url, headers, body, len, on_events, &reader, err));
    HUSH_TRY(run_transfer(multi, reader.easy, sink, &rc, err));
    HUSH_ENSURE(curl_easy_getinfo(reader.easy, CURLINFO_RESPONSE_CODE, &http) == CURLE_OK,
                HUSH_E_INTERNAL, "could not read the upstream's status");
    *upstream_status = (int)http;
    HUSH_TRY(check_stream(&reader, rc, http, err));
    /* What follows the last blank line is the stream's last event. */
    if (hush_secbuf_len(reader.buf) > 0)
        HUSH_TRY(sink->event(sink->ctx, hush_secbuf_bytes(reader.buf),
                             hush_secbuf_len(reader.buf), err));
cleanup:
    if (multi != NULL && reader.easy != NULL)
        (void)curl_multi_remove_handle(multi, reader.easy); /* closes the request; nothing to do if it fails */
    (void)curl_multi_cleanup(multi); /* nothing to do if it fails */
    curl_easy_cleanup(reader.easy);
    hush__free_header_list(headers); /* its Authorization line holds the upstream key */
    hush__free_secret_string(url);
    hush_secbuf_free(reader.buf);
    return status;
}
