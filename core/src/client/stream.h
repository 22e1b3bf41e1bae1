/* stream.h — a streamed v2 answer (docs/protocol-v2.md "Endpoints and
 * streaming"): its frames opened as they arrive into one locked buffer,
 * the text/event-stream cut into events there, each event's data parsed
 * into a chunk document of its own, and the queue those wait in.
 *
 * A stream is driven by one thread (the engine's I/O thread); a chunk
 * queue is guarded by whoever owns it (the call's lock). */
#ifndef HUSHCALL_STREAM_H
#define HUSHCALL_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "hushcall/envelope_v2.h"
#include "hushcall/error.h"
#include "hushcall/json.h"

/* ---- chunk queues -------------------------------------------------------- */

typedef struct hush__chunk {
    struct hush__chunk *next;
    hush_json_doc *doc;
} hush__chunk;

typedef struct hush__chunk_queue {
    hush__chunk *head, *tail;
} hush__chunk_queue;

/* Move every chunk of `more` to the end of `q`; `more` is left empty. */
void hush__chunks_splice(hush__chunk_queue *q, hush__chunk_queue *more);
/* The oldest chunk's document (the caller's now), or NULL when empty. */
hush_json_doc *hush__chunks_pop(hush__chunk_queue *q);
/* Wipe and free every chunk. */
void hush__chunks_wipe(hush__chunk_queue *q);

/* ---- streams ------------------------------------------------------------- */

typedef struct hush__stream hush__stream;

/* A stream whose plaintext is capped at `max_bytes` (HUSH_E_LIMIT past it),
 * in memory of `secmem_flags`. */
HUSH_MUST_USE
hush_status hush__stream_new(size_t max_bytes, unsigned secmem_flags, hush__stream **out,
                             hush_error *err);
/* Wipe everything the stream holds, its parsed chunks included. Accepts NULL. */
void hush__stream_free(hush__stream *s);

/* The answer's head arrived: open its frames with the exchange's answer
 * keys under the (checked) Ehbp-Response-Nonce. */
HUSH_MUST_USE
hush_status hush__stream_begin(hush__stream *s, const hush_v2_exchange *ex,
                               const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                               hush_error *err);

/* A slice of the body: frames opened (HUSH_E_AUTH when one fails, the
 * stream then refuses everything), complete events parsed into chunks
 * (HUSH_E_FORMAT for an event whose data is not JSON), the consumed
 * plaintext wiped. */
HUSH_MUST_USE
hush_status hush__stream_feed(hush__stream *s, const void *data, size_t len, hush_error *err);

/* The chunks parsed since the last take, moved into `q`. */
void hush__stream_take(hush__stream *s, hush__chunk_queue *q);

/* The body ended: HUSH_OK when the stream reached its own end (`data:
 * [DONE]`, or every choice seen has a finish_reason), HUSH_E_TRUNCATED
 * otherwise (HUSH_E_FORMAT inside a frame is a truncation too). */
HUSH_MUST_USE
hush_status hush__stream_end(hush__stream *s, hush_error *err);

#endif
