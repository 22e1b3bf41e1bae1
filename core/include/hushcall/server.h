/* hushcall/server.h — the server role of protocols v1 and v2, for gateways.
 *
 * A hush_server opens a sealed chat request with the server key, answers it
 * with its backend, and seals the answer to the client's key. The request
 * and the answer exist in plaintext only in secure memory, except that the
 * OpenAI backend hands them to libcurl, whose request and download buffers
 * are ordinary heap freed without wiping (docs/gateway.md says so to
 * operators). A server is immutable once made: one may serve any number of
 * threads, and hush_server_handle is blocking and reentrant. The one thing
 * a request changes is the borrowed TPM's session, which is why the TPM is
 * reached through a mutable pointer and takes its own lock; the const
 * server is never cast to take a lock.
 *
 * Failures of hush_server_handle set err->http_status to the status a
 * gateway should answer with and err->message to a detail safe to send
 * back: it never holds plaintext, and every way a package can fail to open
 * is the one message "Invalid encrypted payload". */
#ifndef HUSHCALL_SERVER_H
#define HUSHCALL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hushcall/envelope_v1.h"
#include "hushcall/envelope_v2.h"
#include "hushcall/error.h"
#include "hushcall/keys.h"
#include "hushcall/replay.h"
#include "hushcall/secmem.h"
#include "hushcall/tpm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hush_server hush_server;

typedef enum hush_backend {
    /* A deterministic chat.completion made from the request itself: the
     * reply is "echo: " followed by the text of the last "user" message
     * (docs/gateway.md gives the whole shape). Needs no model. */
    HUSH_BACKEND_ECHO = 0,
    /* The decrypted request is POSTed to an OpenAI-compatible
     * `<upstream_url>/chat/completions` (vLLM, Ollama, llama.cpp, ...); a
     * v2 request to its own path under upstream_url. */
    HUSH_BACKEND_OPENAI
} hush_backend;

#define HUSH_SERVER_DEFAULT_NAME "hushcall-gateway"
#define HUSH_SERVER_INVALID_PACKAGE "Invalid encrypted payload"
#define HUSH_SERVER_PAYLOAD_ID_MAX 128u /* longest X-Payload-ID accepted, in bytes */

/* Defaults that HUSH_SERVER_OPTIONS_INIT fills in. */
#define HUSH_SERVER_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define HUSH_SERVER_DEFAULT_TIMEOUT_MS 300000L
#define HUSH_SERVER_DEFAULT_MAX_ANSWER_BYTES (16u * 1024u * 1024u)

/* Strings are copied by hush_server_new; NULL means "not set". Fill it with
 * HUSH_SERVER_OPTIONS_INIT or hush_server_options_init before setting
 * fields: `version` tells a newer library which fields the caller knows. */
typedef struct hush_server_options {
    unsigned version;                  /* HUSH_SERVER_OPTIONS_VERSION */
    hush_keypair *key;                 /* required: the envelope key (a reference is taken) */
    hush_backend backend;
    const char *upstream_url;          /* OPENAI: base URL, e.g. "http://127.0.0.1:8000/v1" */
    const char *upstream_api_key;      /* OPENAI: sent as "Authorization: Bearer <key>" */
    const char *upstream_ca_file;      /* OPENAI: PEM bundle for an https upstream */
    /* OPENAI: allow a plain http:// upstream_url to a host that is not
     * loopback (127.0.0.0/8, ::1, localhost). Off: every request would
     * cross the network in clear. */
    bool allow_http_upstream;
    long upstream_connect_timeout_ms;  /* default 10,000 */
    long upstream_timeout_ms;          /* whole upstream exchange, default 300,000 */
    size_t max_package_bytes;          /* default HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES */
    size_t max_answer_bytes;           /* upstream answer; default 16 MiB */
    const char *server_name;           /* _metadata.server; default HUSH_SERVER_DEFAULT_NAME */
    /* Quote the answers whose request asks for it (attest) with this TPM
     * (borrowed: it must outlive the server); NULL for none, which refuses
     * the "maximum" tier. */
    hush_tpm *tpm;
    unsigned secmem_flags;             /* HUSH_SECMEM_NO_LOCK to skip mlock */
    /* ---- version 2 ---- */
    /* ECHO: the pause between the words of a streamed answer, so that
     * streaming is visible (demo, tests); 0 (the default) for none, at
     * most 60,000. */
    long echo_delay_ms;
} hush_server_options;

#define HUSH_SERVER_OPTIONS_VERSION 2u

/* The defaults (and NULLs), as an initializer for a declaration. */
#define HUSH_SERVER_OPTIONS_INIT                                                \
    {                                                                           \
        .version = HUSH_SERVER_OPTIONS_VERSION, .backend = HUSH_BACKEND_ECHO,   \
        .upstream_connect_timeout_ms = HUSH_SERVER_DEFAULT_CONNECT_TIMEOUT_MS,  \
        .upstream_timeout_ms = HUSH_SERVER_DEFAULT_TIMEOUT_MS,                  \
        .max_package_bytes = HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES,                 \
        .max_answer_bytes = HUSH_SERVER_DEFAULT_MAX_ANSWER_BYTES,               \
    }

/* Fill `opts` with HUSH_SERVER_OPTIONS_INIT, for callers that cannot use the
 * macro (bindings). `version` is the HUSH_SERVER_OPTIONS_VERSION the caller
 * was compiled with; HUSH_E_ARGUMENT for NULL or a version this library does
 * not know, leaving `opts` untouched. */
HUSH_MUST_USE
hush_status hush_server_options_init(hush_server_options *opts, unsigned version, hush_error *err);

/* Check the options and make a server. HUSH_E_ARGUMENT for an
 * opts->version of 0 or one this library does not know, a missing key,
 * an unknown backend, a size limit or timeout that is not positive, an
 * OPENAI backend without an http(s) upstream_url, a plain http:// one to a
 * host that is not loopback without allow_http_upstream, or an
 * upstream_api_key that is not 1 to 512 printable ASCII characters without
 * spaces, or (version 2) an echo_delay_ms outside 0 to 60,000. */
HUSH_MUST_USE
hush_status hush_server_new(const hush_server_options *opts, hush_server **out, hush_error *err);
void hush_server_free(hush_server *server); /* accepts NULL */

/* One POST /v1/chat/secure_completion, as the gateway received it. The
 * gateway checks the API key and the tier before it reads the body. */
typedef struct hush_server_request {
    const void *package;            /* the request body */
    size_t package_len;
    const char *client_public_key;  /* X-Public-Key, percent-decoded: PEM */
    size_t client_public_key_len;
    const char *payload_id;         /* X-Payload-ID: required, printable ASCII, at most
                                       HUSH_SERVER_PAYLOAD_ID_MAX bytes */
    const char *security_tier;      /* X-Security-Tier: "standard", "high", "maximum";
                                       NULL means "standard" */
    bool attest;                    /* quote this answer with the server's TPM (each quote
                                       is a TPM round trip; the gateway decides) */
} hush_server_request;

typedef struct hush_server_answer {
    hush_secbuf *package;  /* the sealed answer: ciphertext, not locked; caller frees.
                              v2: the frames of the answer's body */
    /* v2 only: the Ehbp-Response-Nonce's bytes (zeros for a v1 answer) */
    unsigned char response_nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    int upstream_status;   /* the upstream's HTTP status; 0 for the echo backend */
    double open_ms;        /* opening and parsing the request */
    double backend_ms;     /* the backend's work, upstream round trip included */
    double seal_ms;        /* writing and sealing the answer */
} hush_server_answer;

/* Answer one request. The answer is the backend's chat.completion with a
 * `_metadata` object (replacing any the upstream sent): "server",
 * "backend" ("echo" or "openai"), "security_tier", "memory_protection"
 * (this request's facts: "platform", "mlock_available", "request_locked",
 * "dump_exclusion", "wipe_on_fork", "openssl_secure_heap", and the
 * "request_bytes" and "answer_bytes" mapped for this request; never
 * process-wide counters) and "tpm_attestation" (a quote bound to the
 * payload id when req->attest, tpm.h; {"is_available": true, "quoted":
 * false} with a TPM when not asked; {"is_available": false} without a
 * TPM). The package's processed_at is the Unix time in seconds (an integer).
 *
 * Errors (err->http_status in brackets):
 *   HUSH_E_LIMIT [413]        the package is larger than max_package_bytes
 *   HUSH_E_KEY [400]          the client public key is not RSA of 2048+ bits
 *   HUSH_E_BAD_REQUEST [400]  no payload id, or one that is not printable ASCII
 *                             of at most HUSH_SERVER_PAYLOAD_ID_MAX bytes; a tier
 *                             not "standard", "high" or "maximum"; the package
 *                             does not open, or its plaintext is not a JSON
 *                             object (one message); "stream": true (not
 *                             supported over v1)
 *   HUSH_E_UNAVAILABLE [503]  the upstream cannot be reached, or answered 429/503;
 *                             "maximum" asked of a server without a TPM, or the
 *                             TPM could not quote
 *   HUSH_E_TIMEOUT [504]      the upstream did not answer in time
 *   HUSH_E_HTTP [502]         the upstream answered another non-2xx status, or
 *                             something not a JSON object, or too much
 *   HUSH_E_NOMEM, HUSH_E_CRYPTO, HUSH_E_INTERNAL [500]
 * On failure `out` is left empty. */
HUSH_MUST_USE
hush_status hush_server_handle(const hush_server *server, const hush_server_request *req,
                               hush_server_answer *out, hush_error *err);

/* Free the package and clear the struct. Accepts NULL. */
void hush_server_answer_clear(hush_server_answer *answer);

/* ---- the same in two phases, for a gateway that decides in between ----
 *
 * hush_server_handle is hush_server_open, then hush_server_exchange_answer.
 * A gateway that must refuse a replayed request before its backend runs
 * opens it first, looks its replay key up (replay.h), and only then has it
 * answered or frees it unanswered. */
typedef struct hush_server_exchange hush_server_exchange;

/* Check and open one request into locked memory: every check and failure
 * of hush_server_handle up to the backend, with the same statuses. The
 * exchange borrows `server` (which must outlive it) and copies what it
 * needs of `req`. */
HUSH_MUST_USE
hush_status hush_server_open(const hush_server *server, const hush_server_request *req,
                             hush_server_exchange **out, hush_error *err);

/* The request's replay key (SHA-256 of its wrapped message key, unique to
 * the message) and binding (SHA-256 over the client key's fingerprint and
 * the payload id): what a gateway remembers to tell a client's own retry
 * from a replay under another key. `x` must not be NULL. */
void hush_server_exchange_replay_key(const hush_server_exchange *x,
                                     unsigned char digest[HUSH_REPLAY_DIGEST_BYTES],
                                     unsigned char binding[HUSH_REPLAY_DIGEST_BYTES]);

/* Run the backend and seal the answer, as hush_server_handle does. An
 * exchange is answered once: the request's plaintext is wiped when this
 * returns, whatever the outcome, and a second call is HUSH_E_ARGUMENT, as
 * is one for an exchange that asks for a stream
 * (hush_server_exchange_is_stream). */
HUSH_MUST_USE
hush_status hush_server_exchange_answer(hush_server_exchange *x, hush_server_answer *out,
                                        hush_error *err);

/* ---- protocol v2 (docs/protocol-v2.md) ----------------------------------
 *
 * The same two phases for a v2 request: hush_server_open_v2, then
 * hush_server_exchange_answer, which answers with the backend's JSON as it
 * is (a v2 client assembles its own _metadata) sealed with
 * hush_v2_response_seal: frames in answer->package, the nonce in
 * answer->response_nonce. The echo backend names its answer
 * "chatcmpl-v2-" and the first 16 bytes of the replay key in hex. */

/* One live key the gateway offers: its config's key id and its pair. */
typedef struct hush_server_v2_key {
    uint8_t key_id;
    hush_hpke_keypair *keypair; /* borrowed for the call */
} hush_server_v2_key;

/* One v2 POST /v1/<path>, as the gateway received it. */
typedef struct hush_server_v2_request {
    const char *key_config;        /* Hushcall-Key-Config (hex); NULL for an EHBP request */
    size_t key_config_len;
    const char *encapsulated_key;  /* Ehbp-Encapsulated-Key (hex), required */
    size_t encapsulated_key_len;
    const void *body;              /* the framed body */
    size_t body_len;
    /* The live keys, newest first. A request naming its config is opened
     * under the one of them with its key id and KEM; an EHBP request under
     * the X25519 ones, the first frame picking the key. */
    const hush_server_v2_key *keys;
    size_t key_count;
    /* The request's path, "/v1/..." (the upstream gets the same path under
     * its base URL); NULL is "/v1/chat/completions". The echo backend
     * answers chat completions, completions and embeddings; another path
     * is HUSH_E_NOT_FOUND [404]. */
    const char *path;
} hush_server_v2_request;

/* Check and open one v2 request into locked memory. The body must be a
 * JSON object. Errors (err->http_status):
 *   HUSH_E_LIMIT [413]        the body is longer than max_package_bytes
 *   HUSH_E_KEY [422]          the named config (key id, KEM, suite) is not
 *                             among `keys` and their offered suites, or no
 *                             live X25519 key opens an EHBP request's
 *                             first frame (the key-config problem)
 *   HUSH_E_BAD_REQUEST [400]  a malformed header, a body that does not
 *                             open (framing, authentication, a frame over
 *                             the cap) or is not a JSON object: one message,
 *                             HUSH_SERVER_INVALID_PACKAGE
 *   HUSH_E_NOMEM, HUSH_E_CRYPTO, HUSH_E_INTERNAL [500]
 * Nothing of the body reaches the backend before hush_server_exchange_answer. */
HUSH_MUST_USE
hush_status hush_server_open_v2(const hush_server *server, const hush_server_v2_request *req,
                                hush_server_exchange **out, hush_error *err);

/* Which key opened a v2 exchange: its key id and its index in the request's
 * `keys`. False (and nothing written) for a v1 exchange. The replay key of a
 * v2 exchange (hush_server_exchange_replay_key) is SHA-256 of enc; its
 * binding is SHA-256 over the key id, so a gateway remembers it per key. */
bool hush_server_exchange_v2_key(const hush_server_exchange *x, uint8_t *key_id,
                                 size_t *key_index);

/* ---- streamed answers (docs/protocol-v2.md "Endpoints and streaming") ----
 *
 * A v2 request whose body has "stream": true is answered as a stream: the
 * backend's server-sent events (the upstream's, read into locked memory;
 * the echo's, word by word) are sealed one event per frame and handed out
 * as each is made, never the whole answer at once. */

/* Whether an opened exchange asks for a streamed answer; answer it with
 * hush_server_exchange_stream. False for NULL and for v1. */
bool hush_server_exchange_is_stream(const hush_server_exchange *x);

/* Where a streamed answer goes, on the thread running the stream: the
 * sealed frames of one event (len > 0), or (NULL, 0) at least every 100 ms
 * while the backend is quiet, to ask whether the client is still there.
 * Return 0 to go on, nonzero to stop: the backend's request is closed at
 * once and the stream ends HUSH_E_CANCELLED. The first call with frames
 * comes only after the backend accepted the request: send the response
 * head (200, text/event-stream, Ehbp-Response-Nonce) then. */
typedef int (*hush_server_emit_fn)(void *ctx, const void *frames, size_t len);

/* Run the backend as a stream and seal each event to the exchange's client.
 * `nonce` gets the Ehbp-Response-Nonce bytes before the first emit. A
 * failure before the first frame is one of hush_server_exchange_answer's
 * (err->http_status set: answer with it); a failure after it ends the
 * stream, and the gateway ends the body there (the client then reports a
 * truncated stream). Blocking: run it on a worker thread. Answered once,
 * like hush_server_exchange_answer. */
HUSH_MUST_USE
hush_status hush_server_exchange_stream(hush_server_exchange *x,
                                        unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        hush_server_emit_fn emit, void *ctx, hush_error *err);

/* ---- plaintext pass-through (for comparison only) ----------------------
 *
 * A request that is not sealed, answered in plaintext through the same
 * backend and streaming path: what a benchmark measures encryption
 * against. The caller's copies of the request and answer (the gateway's
 * are Python's heap) are not locked: never for real traffic, so the
 * gateway serves it only when told to (--allow-plaintext). Answer it with
 * hush_server_exchange_answer (answer->package holds the JSON as it is, no
 * `_metadata`) or, when hush_server_exchange_is_stream, with
 * hush_server_exchange_stream (each emit is one event in plaintext; the
 * nonce is zeros). `path` as hush_server_v2_request's. Errors
 * (err->http_status): HUSH_E_LIMIT [413], HUSH_E_NOT_FOUND [404],
 * HUSH_E_BAD_REQUEST [400] for a body that is not a JSON object,
 * HUSH_E_NOMEM, HUSH_E_INTERNAL [500]. */
HUSH_MUST_USE
hush_status hush_server_open_plaintext(const hush_server *server, const char *path,
                                       const void *body, size_t len,
                                       hush_server_exchange **out, hush_error *err);

/* GET /v1/models, answered in plaintext (a bodyless request, EHBP §7.4:
 * nothing secret): the echo backend's model ("echo"; it answers as any
 * model a request names), or the upstream's own GET <upstream_url>/models
 * as it came (a JSON object). *out is public memory; the caller frees it.
 * Errors as hush_server_handle's for the upstream (503, 504, 502). */
HUSH_MUST_USE
hush_status hush_server_models(const hush_server *server, hush_secbuf **out, hush_error *err);

/* Wipe and free an exchange, answered or not. Accepts NULL. */
void hush_server_exchange_free(hush_server_exchange *x);

#ifdef __cplusplus
}
#endif
#endif
