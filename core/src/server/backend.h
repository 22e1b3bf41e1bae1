/* backend.h — what the server role (server.c) shares with its backends:
 * echo.c answers from the request itself, upstream.c asks an
 * OpenAI-compatible server. A backend writes the members of the answer's
 * root object; server.c opened it and adds `_metadata` after them. A
 * streamed answer goes to an event sink instead, one whole server-sent
 * event at a time. */
#ifndef HUSHCALL_BACKEND_H
#define HUSHCALL_BACKEND_H

#include <stddef.h>

#include "hushcall/json_writer.h"
#include "hushcall/server.h"

/* The parts of the server options the upstream needs (strings borrowed
 * from the server, which outlives every call). */
typedef struct hush__upstream_config {
    const char *url;      /* the base URL, "<...>/v1", without a trailing slash */
    const char *api_key;  /* NULL: no Authorization header */
    const char *ca_file;
    long connect_timeout_ms;
    long timeout_ms;
    size_t max_answer_bytes;
    unsigned secmem_flags; /* for the buffer the answer is read into */
} hush__upstream_config;

/* Where a streamed answer's events go (server.c seals and emits them). */
typedef struct hush__event_sink {
    /* One whole event, `data: ...` and its blank line, in locked memory;
     * HUSH_E_CANCELLED when the client has gone. */
    hush_status (*event)(void *ctx, const unsigned char *text, size_t len, hush_error *err);
    /* Whether the client is still there, asked at least every 100 ms while
     * the backend is quiet; HUSH_E_CANCELLED when not. */
    hush_status (*poll)(void *ctx, hush_error *err);
    void *ctx;
} hush__event_sink;

/* Whether the echo backend answers `path` ("/v1/..."). */
bool hush__echo_answers(const char *path);

/* The echo answer to `request` (a parsed JSON object) at `path`: a
 * chat.completion, a text_completion or an embeddings list, without
 * `_metadata`. Working text goes to `arena`. HUSH_E_BAD_REQUEST names a
 * field the echo cannot use; HUSH_E_NOT_FOUND for a path it does not answer. */
HUSH_MUST_USE
hush_status hush__echo_write(const hush_json_value *request, const char *path,
                             const char *payload_id, hush_arena *arena, hush_json_writer *w,
                             hush_error *err);

/* The echo answer streamed (chat or completions): OpenAI's chunks, one
 * per word of the text hush__echo_write would answer, `delay_ms` between
 * words, then the stop chunk, the usage chunk when
 * stream_options.include_usage, and `data: [DONE]`. */
HUSH_MUST_USE
hush_status hush__echo_stream(const hush_json_value *request, const char *path,
                              const char *payload_id, long delay_ms, unsigned secmem_flags,
                              hush_arena *arena, const hush__event_sink *sink, hush_error *err);

/* POST `len` bytes of `body` (locked memory, sent as they are) to the
 * upstream's `path` (cfg->url and the path after its "/v1") and write the
 * members of its answer except `_metadata`. The
 * answer is parsed into `arena`. *upstream_status is the upstream's HTTP
 * status, 0 when none came. Failures carry the gateway's status code
 * (HUSH_E_UNAVAILABLE, HUSH_E_TIMEOUT, HUSH_E_HTTP) and a message that
 * names only statuses: never the upstream's body. */
HUSH_MUST_USE
hush_status hush__upstream_write(const hush__upstream_config *cfg, const char *path,
                                 const void *body, size_t len, hush_arena *arena,
                                 hush_json_writer *w, int *upstream_status, hush_error *err);

/* GET the upstream's `path` (no body: nothing secret, EHBP §7.4) into
 * `answer` as it came; failures as hush__upstream_write's. */
HUSH_MUST_USE
hush_status hush__upstream_get(const hush__upstream_config *cfg, const char *path,
                               hush_secbuf *answer, int *upstream_status, hush_error *err);

/* The same POST answered as a stream: the upstream's text/event-stream is
 * read into locked memory and each event handed to `sink` as it completes.
 * A non-2xx status fails as hush__upstream_write does, before any event;
 * a transfer that breaks after events went out fails HUSH_E_HTTP; the
 * sink's HUSH_E_CANCELLED closes the upstream request at once. */
HUSH_MUST_USE
hush_status hush__upstream_stream(const hush__upstream_config *cfg, const char *path,
                                  const void *body, size_t len, const hush__event_sink *sink,
                                  int *upstream_status, hush_error *err);

#endif
