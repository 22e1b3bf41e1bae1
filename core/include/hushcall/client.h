/* hushcall/client.h — a client of one NOMYO-compatible endpoint.
 *
 * A hush_client holds what every request to an endpoint shares: the
 * configuration, the client's RSA key (loaded, or generated in the
 * background from the moment the client is made), the server keys fetched
 * from `/pki/public_key` (one fetch per base URL, however many calls race
 * for it), and the circuit breaker. It is immutable apart from those
 * internally locked caches, so one client may be used from any number of
 * threads at once.
 *
 * Requests run on a hush_engine (engine.h). hush_client_complete() is the
 * synchronous form: the same pipeline, submitted to the client's own engine
 * (started on first use) and waited on. */
#ifndef HUSHCALL_CLIENT_H
#define HUSHCALL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "hushcall/error.h"
#include "hushcall/json.h"
#include "hushcall/keys.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hush_client hush_client;
typedef struct hush_engine hush_engine;
typedef struct hush_call hush_call;

#define HUSH_DEFAULT_MAX_REQUEST_BYTES (10u * 1024u * 1024u)
#define HUSH_DEFAULT_MAX_RESPONSE_BYTES (16u * 1024u * 1024u)

/* Defaults that HUSH_CLIENT_OPTIONS_INIT fills in. */
#define HUSH_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define HUSH_CLIENT_DEFAULT_TIMEOUT_MS 300000L
#define HUSH_CLIENT_DEFAULT_MAX_RETRIES 2u
#define HUSH_CLIENT_DEFAULT_RETRY_BASE_MS 500L
#define HUSH_CLIENT_DEFAULT_RETRY_MAX_MS 30000L
#define HUSH_CLIENT_DEFAULT_BREAKER_THRESHOLD 5u
#define HUSH_CLIENT_DEFAULT_BREAKER_COOLDOWN_MS 30000L

/* Strings are copied by hush_client_new; NULL means "not set". Fill it with
 * HUSH_CLIENT_OPTIONS_INIT or hush_client_options_init before setting
 * fields: `version` tells a newer library which fields the caller knows. */
typedef struct hush_client_options {
    unsigned version;               /* HUSH_CLIENT_OPTIONS_VERSION */
    const char *base_url;           /* required: "https://host[:port][/prefix]" */
    const char *api_key;            /* sent as "Authorization: Bearer <key>" */
    bool allow_http;                /* permit an http:// base_url (local development only) */
    long connect_timeout_ms;        /* default 10,000 */
    long timeout_ms;                /* whole attempt, default 300,000 */
    unsigned max_retries;           /* of 429, 503 and connection failures; default 2 */
    long retry_base_ms;             /* first backoff, doubled per retry; default 500 */
    long retry_max_ms;              /* longest single wait, Retry-After included; default 30,000 */
    const char *ca_file;            /* PEM bundle to verify the server with */
    const char *ca_dir;             /* OpenSSL hashed certificate directory */
    const char *client_cert;        /* PEM certificate for mutual TLS */
    const char *client_cert_key;    /* its PEM private key */
    const char *tls_pin;            /* libcurl pin: "sha256//<base64>[;sha256//...]" */
    const char *server_key_fingerprint; /* "sha256:<hex>" of the envelope key */
    hush_keypair *client_key;       /* use this key (a reference is taken) ... */
    const char *key_dir;            /* ... or load it from here, or make and save it here */
    const char *key_password;       /* for key_dir */
    unsigned key_bits;              /* of a generated key; default 4096 */
    const char *security_tier;      /* "standard", "high" or "maximum" */
    /* Every answer's quote is verified (attest.h) and the outcome added as
     * _metadata.attestation: v1's _metadata.tpm_attestation, v2's
     * Hushcall-Attestation header (bound to the request's enc and the
     * answer's nonce). An answer whose quote does not verify is released
     * only when attestation is not required: it is required for the
     * "maximum" tier, and for every tier with this set (the requests then
     * carry "X-Attestation: required", so the server quotes). On v2 such a
     * call first fetches the server's key configs in a quote bound to a
     * fresh nonce and seals nothing until it verifies (docs/attestation.md
     * "Attest, then send"); it fails with HUSH_E_ATTESTATION otherwise.
     * Both need an attestation_policy that pins an AIK, else HUSH_E_ARGUMENT
     * from hush_client_new (or the call, for a per-call "maximum"). */
    bool require_attestation;
    const char *attestation_policy; /* attest.h policy file, loaded by hush_client_new */
    const char *user_agent;         /* default "hushcall/<version>" */
    size_t max_request_bytes;       /* default HUSH_DEFAULT_MAX_REQUEST_BYTES */
    size_t max_response_bytes;      /* default HUSH_DEFAULT_MAX_RESPONSE_BYTES */
    /* The circuit breaker counts consecutive calls that end in a connection
     * failure, a timeout, 429 or a 5xx (not 4xx, not envelope or pin errors);
     * at the threshold (> 0) it fails calls fast for the cool-down, then lets
     * one probe through: success closes it, failure opens it again. */
    unsigned breaker_threshold;     /* default 5 */
    long breaker_cooldown_ms;       /* default 30,000 */
    unsigned secmem_flags;          /* HUSH_SECMEM_NO_LOCK to skip mlock */
    /* ---- version 2: protocol v2 (docs/protocol-v2.md) ---- */
    /* "auto" (NULL: the default) speaks v2 when the server publishes key
     * configs and v1 when it publishes none, tiers and attestation included;
     * "v2" and "v1" only that one. */
    const char *protocol;
    /* Use only the post-quantum suite (X-Wing): refuse a server without it,
     * and a later config list that drops it (a downgrade), instead of
     * falling back to X25519 or v1. */
    bool require_pq;
    const char *v2_key_fingerprint; /* "sha256:<hex>" (hush_hpke_pubkey_fingerprint) of the v2 key */
} hush_client_options;

#define HUSH_CLIENT_OPTIONS_VERSION 2u

/* The defaults (and NULLs), as an initializer for a declaration. */
#define HUSH_CLIENT_OPTIONS_INIT                                        \
    {                                                                   \
        .version = HUSH_CLIENT_OPTIONS_VERSION,                         \
        .connect_timeout_ms = HUSH_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS,   \
        .timeout_ms = HUSH_CLIENT_DEFAULT_TIMEOUT_MS,                   \
        .max_retries = HUSH_CLIENT_DEFAULT_MAX_RETRIES,                 \
        .retry_base_ms = HUSH_CLIENT_DEFAULT_RETRY_BASE_MS,             \
        .retry_max_ms = HUSH_CLIENT_DEFAULT_RETRY_MAX_MS,               \
        .key_bits = HUSH_RSA_DEFAULT_BITS,                              \
        .max_request_bytes = HUSH_DEFAULT_MAX_REQUEST_BYTES,            \
        .max_response_bytes = HUSH_DEFAULT_MAX_RESPONSE_BYTES,          \
        .breaker_threshold = HUSH_CLIENT_DEFAULT_BREAKER_THRESHOLD,     \
        .breaker_cooldown_ms = HUSH_CLIENT_DEFAULT_BREAKER_COOLDOWN_MS, \
    }

/* Fill `opts` with HUSH_CLIENT_OPTIONS_INIT, for callers that cannot use the
 * macro (bindings). `version` is the HUSH_CLIENT_OPTIONS_VERSION the caller
 * was compiled with; HUSH_E_ARGUMENT for NULL or a version this library does
 * not know, leaving `opts` untouched. */
HUSH_MUST_USE
hush_status hush_client_options_init(hush_client_options *opts, unsigned version, hush_error *err);

/* Check the options and make a client. An opts->version of 0 or one this
 * library does not know, an http:// base_url without
 * allow_http, a bad tier or fingerprint, or a key_dir whose key cannot be
 * loaded fail here, before any request. With neither client_key nor a
 * key_dir holding a key, key generation starts in the background now. */
HUSH_MUST_USE
hush_status hush_client_new(const hush_client_options *opts, hush_client **out, hush_error *err);

/* Reference counting: calls keep their client alive. Accepts NULL (and
 * returns it). */
hush_client *hush_client_ref(hush_client *client);
void hush_client_free(hush_client *client); /* accepts NULL */

/* Per-call overrides; any field may be NULL (zero-initialize the struct:
 * fields are added at its end). */
typedef struct hush_call_options {
    const char *api_key;
    const char *security_tier;
    const char *base_url; /* another endpoint of the same kind (its key is cached separately) */
    /* ---- the endpoint (docs/protocol-v2.md "Endpoints and streaming") ---- */
    /* The request path, "/v1/..." without query; NULL is chat completions.
     * Any path but chat completions needs protocol v2: a call that would
     * go out over v1 fails with HUSH_E_UNSUPPORTED, nothing sent. */
    const char *path;
    /* NULL or "POST": the request is sealed. "GET": a bodyless request
     * (`request` must be NULL), sent and answered in plaintext as EHBP §7.4
     * requires; its answer's _metadata says "is_encrypted": false. */
    const char *method;
    /* The answer is a server-sent event stream: take its chunks with
     * hush_call_next_chunk (engine.h). The request should itself ask for
     * one ("stream": true); v2 only (HUSH_E_UNSUPPORTED over v1). */
    bool stream;
} hush_call_options;

/* Send one chat completion request (JSON, in secure memory) and wait for
 * the decrypted answer. `request` is taken over by the call, on success or
 * failure. `*response` is the answer with `_metadata` added (payload_id,
 * processed_at, is_encrypted, encryption_algorithm); free it with
 * hush_json_doc_free. */
HUSH_MUST_USE
hush_status hush_client_complete(hush_client *client, hush_secbuf *request,
                                 const hush_call_options *opts, hush_json_doc **response,
                                 hush_error *err);

/* As hush_client_complete, but hand back the finished call rather than its
 * answer alone, so that a failure's hush_call_error_details can be read
 * too: HUSH_OK means `*call` is done (hush_call_result tells its outcome);
 * the caller frees it. A failure to start the call is returned as such,
 * with `*call` NULL. */
HUSH_MUST_USE
hush_status hush_client_complete_call(hush_client *client, hush_secbuf *request,
                                      const hush_call_options *opts, hush_call **call,
                                      hush_error *err);

/* Start a streamed call (as if opts->stream were set; opts may be NULL) on
 * the client's own engine and return it at once, or fail as
 * hush_engine_submit does. Take its chunks with hush_call_next_chunk
 * (engine.h); hush_call_free cancels a stream not yet ended. */
HUSH_MUST_USE
hush_status hush_client_stream(hush_client *client, hush_secbuf *request,
                               const hush_call_options *opts, hush_call **call, hush_error *err);

/* The client's public key PEM (as sent in X-Public-Key), waiting for key
 * generation if it is still running. Malloc'd; the caller frees it. */
HUSH_MUST_USE
hush_status hush_client_public_pem(hush_client *client, char **pem, hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
