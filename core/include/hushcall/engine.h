/* hushcall/engine.h — the asynchronous request engine.
 *
 * One I/O thread drives libcurl's multi interface for every call of the
 * engine (connections, DNS and TLS sessions are reused across calls); a
 * small worker pool does the envelope cryptography, so an RSA private-key
 * operation never runs on the I/O thread or on the caller's event loop.
 * hush_engine_submit returns at once; completions are announced on a file
 * descriptor any event loop can watch (an eventfd), and collected with
 * hush_engine_drain. Hundreds of calls in flight need no thread per call.
 *
 * A call's life: it waits for the client's key and the server's key, is
 * sealed on a worker, sent by the I/O thread (retried after 429, 503 and
 * connection failures, with backoff that honours Retry-After), and its
 * answer is opened on a worker. Cancelling, or freeing the engine, ends a
 * call with HUSH_E_CANCELLED wherever it is. */
#ifndef HUSHCALL_ENGINE_H
#define HUSHCALL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "hushcall/client.h"
#include "hushcall/error.h"
#include "hushcall/json.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_ENGINE_DEFAULT_WORKERS 2u

/* Fill it with HUSH_ENGINE_OPTIONS_INIT or hush_engine_options_init before
 * setting fields: `version` tells a newer library which fields the caller
 * knows. */
typedef struct hush_engine_options {
    unsigned version; /* HUSH_ENGINE_OPTIONS_VERSION */
    unsigned workers; /* crypto threads; 0 means HUSH_ENGINE_DEFAULT_WORKERS */
} hush_engine_options;

#define HUSH_ENGINE_OPTIONS_VERSION 1u

/* The defaults, as an initializer for a declaration. */
#define HUSH_ENGINE_OPTIONS_INIT \
    { .version = HUSH_ENGINE_OPTIONS_VERSION, .workers = HUSH_ENGINE_DEFAULT_WORKERS }

/* Fill `opts` with HUSH_ENGINE_OPTIONS_INIT, for callers that cannot use the
 * macro (bindings). `version` is the HUSH_ENGINE_OPTIONS_VERSION the caller
 * was compiled with; HUSH_E_ARGUMENT for NULL or a version this library does
 * not know, leaving `opts` untouched. */
HUSH_MUST_USE
hush_status hush_engine_options_init(hush_engine_options *opts, unsigned version, hush_error *err);

/* Start the I/O thread and the workers. `opts` may be NULL (the defaults);
 * HUSH_E_ARGUMENT for an opts->version of 0 or one this library does not
 * know. */
HUSH_MUST_USE
hush_status hush_engine_new(const hush_engine_options *opts, hush_engine **out, hush_error *err);

/* Cancel every call still in flight, wait for them to end, stop the
 * threads. Calls the caller still holds stay valid (and done). */
void hush_engine_free(hush_engine *engine); /* accepts NULL */

/* Readable while completed calls wait to be drained. Level-triggered:
 * hush_engine_drain resets it once the queue is empty. -1 for NULL. */
int hush_engine_fd(const hush_engine *engine);

/* Start a call of `client` on `engine`. `request` (JSON, secure memory) is
 * taken over, on success or failure. What can be known at once fails here
 * with nothing sent: a request over the size limit (HUSH_E_LIMIT), an open
 * circuit (HUSH_E_CIRCUIT_OPEN), a bad override. `user_data` is returned
 * by hush_call_user_data. The caller owns one reference to `*call`; after
 * a failure `*call` is NULL. A key fetch that fails ends every call waiting
 * for it with the fetch's status (HUSH_E_UNAVAILABLE after repeated 503s,
 * HUSH_E_KEY for an unusable key, HUSH_E_PIN for a fingerprint mismatch). */
HUSH_MUST_USE
hush_status hush_engine_submit(hush_engine *engine, hush_client *client, hush_secbuf *request,
                               const hush_call_options *opts, void *user_data, hush_call **call,
                               hush_error *err);

/* Move up to `max` completed calls into `calls` and return how many. They
 * are the pointers hush_engine_submit gave (no new reference): the caller
 * still frees each once. A call the caller already freed is not announced.
 * `engine` must not be NULL, nor `calls` unless `max` is 0. */
size_t hush_engine_drain(hush_engine *engine, hush_call **calls, size_t max);

/* The accessors below take a non-const call: the I/O thread writes a call
 * while it runs, so reading one means taking its lock. Each requires a call
 * from hush_engine_submit, or accepts NULL where it says so. */

/* Whether the call is done; false for NULL. */
bool hush_call_done(hush_call *call);

/* Wait until the call is done; `timeout_ms` < 0 waits for ever.
 * HUSH_E_TIMEOUT when it is not done in time (the call goes on). */
HUSH_MUST_USE
hush_status hush_call_wait(hush_call *call, long timeout_ms, hush_error *err);

/* The outcome of a done call (HUSH_E_ARGUMENT while it is not). On success
 * the response document passes to the caller; asking again gives the same
 * status and a NULL document. On an HTTP error, err->http_status is set. */
HUSH_MUST_USE
hush_status hush_call_result(hush_call *call, hush_json_doc **response, hush_error *err);

/* The server's JSON error body of a failed call (its `detail` and the
 * rest), or NULL (also for a NULL call). Owned by the call. */
const char *hush_call_error_details(hush_call *call, size_t *len);

/* The X-Payload-ID (a UUIDv4), fixed from submission on. NULL for NULL. */
const char *hush_call_payload_id(const hush_call *call);
unsigned hush_call_attempts(hush_call *call); /* POSTs sent, retries included; 0 for NULL */
/* The caller's pointer given to hush_engine_submit; NULL for a NULL call. */
void *hush_call_user_data(hush_call *call);

/* Ask the call to stop; it ends with HUSH_E_CANCELLED unless it is done.
 * Accepts NULL. */
void hush_call_cancel(hush_call *call);

/* ---- streamed calls (hush_call_options.stream) -----------------------------
 *
 * A streamed answer is opened frame by frame as it arrives (on the I/O
 * thread): its plaintext is a text/event-stream, and each event's `data`
 * is parsed into its own document in secure memory, queued on the call
 * for the caller to take. The stream is complete at `data: [DONE]`, or
 * when its body ends after a chunk with a non-null finish_reason in a
 * choice; a body that ends otherwise is HUSH_E_TRUNCATED (EHBP itself has
 * no end marker, so a cut connection would otherwise look like a short
 * answer). The plaintext of one stream is capped by max_response_bytes;
 * a stream is never retried once an answer began.
 *
 * hush_engine_drain announces a streamed call whenever chunks wait on it
 * (once per batch: after draining it, take chunks with timeout 0 until
 * HUSH_E_TIMEOUT) and when it is done, so a call may be drained several
 * times; it stays the caller's until freed. */

/* The next chunk of a streamed call:
 *   HUSH_OK, *chunk set      a chunk (the caller frees it: hush_json_doc_free)
 *   HUSH_OK, *chunk NULL     the stream ended complete (and stays ended)
 *   HUSH_E_TIMEOUT           none arrived within `timeout_ms` (0: do not
 *                            wait, < 0: wait for ever); the call goes on
 *   HUSH_E_TRUNCATED         the body ended without the stream's end, after
 *                            every authenticated chunk was taken
 *   HUSH_E_AUTH              a frame failed to authenticate: at once, chunks
 *                            not yet taken are wiped, nothing after is released
 *   HUSH_E_ARGUMENT          not a streamed call (or NULL)
 *   anything else            the call's failure (HTTP status, connection,
 *                            cancellation), with err filled as by
 *                            hush_call_result.
 * A failure is returned again by every later call. */
HUSH_MUST_USE
hush_status hush_call_next_chunk(hush_call *call, long timeout_ms, hush_json_doc **chunk,
                                 hush_error *err);

/* Release the caller's reference (from hush_engine_submit). An unfinished
 * call is cancelled first. Accepts NULL. */
void hush_call_free(hush_call *call);

#ifdef __cplusplus
}
#endif
#endif
