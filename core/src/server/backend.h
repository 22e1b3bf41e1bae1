/* backend.h — what the server role (server.c) shares with its backends:
 * echo.c answers from the request itself, upstream.c asks an
 * OpenAI-compatible server. A backend writes the members of the answer's
 * root object; server.c opened it and adds `_metadata` after them. */
#ifndef HUSHCALL_BACKEND_H
#define HUSHCALL_BACKEND_H

#include <stddef.h>

#include "hushcall/json_writer.h"
#include "hushcall/server.h"

/* The parts of the server options the upstream needs (strings borrowed
 * from the server, which outlives every call). */
typedef struct hush__upstream_config {
    const char *url;      /* "<base>/chat/completions" */
    const char *api_key;  /* NULL: no Authorization header */
    const char *ca_file;
    long connect_timeout_ms;
    long timeout_ms;
    size_t max_answer_bytes;
    unsigned secmem_flags; /* for the buffer the answer is read into */
} hush__upstream_config;

/* The echo chat.completion for `request` (a parsed JSON object): id, object,
 * created, model, choices and usage. Working text goes to `arena`. */
HUSH_MUST_USE
hush_status hush__echo_write(const hush_json_value *request, const char *payload_id,
                             hush_arena *arena, hush_json_writer *w, hush_error *err);

/* POST `len` bytes of `body` (locked memory, sent as they are) to the
 * upstream and write the members of its answer except `_metadata`. The
 * answer is parsed into `arena`. *upstream_status is the upstream's HTTP
 * status, 0 when none came. Failures carry the gateway's status code
 * (HUSH_E_UNAVAILABLE, HUSH_E_TIMEOUT, HUSH_E_HTTP) and a message that
 * names only statuses: never the upstream's body. */
HUSH_MUST_USE
hush_status hush__upstream_write(const hush__upstream_config *cfg, const void *body, size_t len,
                                 hush_arena *arena, hush_json_writer *w, int *upstream_status,
                                 hush_error *err);

#endif
