/* hushpy.h — what the sources of hushcall._core share: the module state (every
 * type and exception class lives there, never in a C static), the one error
 * mapping, and the constructors each source offers the others.
 *
 * Rule for every source here: plaintext goes from Python objects straight into
 * secure memory (serialize.c) and from secure memory straight into the one
 * Python object a caller asked for (response.c); no other copy is made. */
#ifndef HUSHPY_H
#define HUSHPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <sys/types.h>

#include "hushcall/hushcall.h"

/* ---- compatibility with older CPythons ----------------------------------- */

/* Flags newer than the oldest CPython we build for (3.9): where missing they
 * are 0, so a type is merely mutable or instantiable there, as any 3.9 heap
 * type is. */
#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif
#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

/* The exception classes, defined in python/hushcall/errors.py (so they keep
 * NOMYO's constructor signatures) and looked up once when the module is
 * executed. The order matches hushpy_exc_names in module.c. */
typedef enum hushpy_exc {
    HUSHPY_EXC_BASE,              /* HushcallError */
    HUSHPY_EXC_API,               /* APIError */
    HUSHPY_EXC_AUTHENTICATION,    /* AuthenticationError (401) */
    HUSHPY_EXC_INVALID_REQUEST,   /* InvalidRequestError (400, and local size limits) */
    HUSHPY_EXC_FORBIDDEN,         /* ForbiddenError (403) */
    HUSHPY_EXC_RATE_LIMIT,        /* RateLimitError (429) */
    HUSHPY_EXC_SERVER,            /* ServerError (500) */
    HUSHPY_EXC_UNAVAILABLE,       /* ServiceUnavailableError (503) */
    HUSHPY_EXC_CONNECTION,        /* APIConnectionError */
    HUSHPY_EXC_TIMEOUT,           /* APITimeoutError(APIConnectionError) */
    HUSHPY_EXC_CIRCUIT_OPEN,      /* CircuitOpenError(APIConnectionError) */
    HUSHPY_EXC_SECURITY,          /* SecurityError */
    HUSHPY_EXC_INVALID_ARGUMENT,  /* InvalidArgumentError(HushcallError, ValueError) */
    HUSHPY_EXC_MALFORMED_JSON,    /* MalformedJSONError(HushcallError, ValueError) */
    HUSHPY_EXC_SECURE_MEMORY,     /* SecureMemoryError(HushcallError, MemoryError) */
    HUSHPY_EXC_CANCELLED,         /* CallCancelledError */
    HUSHPY_EXC_INCOMPLETE_STREAM, /* IncompleteStreamError(SecurityError) */
    HUSHPY_EXC_WIPED,             /* WipedError(HushcallError, ReferenceError) */
    HUSHPY_EXC_COUNT
} hushpy_exc;

typedef struct hushpy_state {
    PyTypeObject *secure_buffer_type; /* SecureBuffer: an encoded request */
    PyTypeObject *document_type;      /* _Document: owns one hush_json_doc */
    PyTypeObject *response_type;      /* Response: a view (document, node) */
    PyTypeObject *response_iter_type; /* _ResponseIterator */
    PyTypeObject *zstr_type;          /* ZeroOnFreeStr: str that zeroes itself when freed */
    PyTypeObject *client_type;        /* Client: a hush_client */
    PyTypeObject *engine_type;        /* Engine: a hush_engine */
    PyTypeObject *call_type;          /* Call: one hush_call of an Engine */
    PyTypeObject *stream_type;        /* Stream: a streamed call of a Client */
    PyTypeObject *keypair_type;       /* KeyPair: a hush_keypair */
    PyTypeObject *server_type;        /* Server: a hush_server, the gateway's core */
    PyTypeObject *exchange_type;      /* Exchange: a request a Server opened */
    PyTypeObject *replay_cache_type;  /* ReplayCache: a hush_replay_cache */
    PyTypeObject *tpm_type;           /* Tpm: a hush_tpm the Server quotes with */
    PyTypeObject *hpke_keypair_type;  /* HpkeKeypair: a hush_hpke_keypair (v2 server key) */
    PyObject *response_attrs;         /* frozenset: names that are Response's own attributes */
    PyObject *stream_end;             /* STREAM_END: Call.next_chunk()'s "ended complete" */
    PyObject *exc[HUSHPY_EXC_COUNT];
} hushpy_state;

/* ---- module.c ------------------------------------------------------------ */

/* Raise the exception class the table maps `status` to, with err's message
 * (never plaintext: hush_error messages hold none) and, for APIError and its
 * subclasses, status_code = err->http_status (None when no HTTP status was
 * received). `err` may be NULL. Always returns NULL. */
PyObject *hushpy_raise(hushpy_state *st, hush_status status, const hush_error *err);

/* encode()'s and decode()'s limits: 0, or -1 with ValueError set. */
int hushpy_check_limits(Py_ssize_t max_bytes, int max_depth);
/* A str argument `name` as UTF-8, borrowed from `obj` (which the caller keeps
 * alive); None (or NULL) is NULL. Other types raise TypeError, embedded NULs
 * ValueError; either way -1. */
int hushpy_str_option(PyObject *obj, const char *name, const char **out);
/* As hushpy_raise, also setting APIError.error_details (borrowed; may be NULL). */
PyObject *hushpy_raise_details(hushpy_state *st, hush_status status, const hush_error *err,
                               PyObject *error_details);
/* Raise WipedError with `message`. Always returns NULL. */
PyObject *hushpy_raise_wiped(hushpy_state *st, const char *message);

/* ---- serialize.c --------------------------------------------------------- */

extern PyType_Spec hushpy_secure_buffer_spec;
PyObject *hushpy_encode(PyObject *module, PyObject *args, PyObject *kwargs);
/* True when `obj` is a SecureBuffer of this module. */
bool hushpy_is_secure_buffer(hushpy_state *st, PyObject *obj);
/* The bytes of a live SecureBuffer, pinned against wipe() until
 * hushpy_secure_buffer_unpin (so they may be read without the GIL). Sets
 * WipedError and returns -1 when the buffer was wiped. */
int hushpy_secure_buffer_pin(hushpy_state *st, PyObject *obj, const unsigned char **data,
                             size_t *len);
void hushpy_secure_buffer_unpin(PyObject *obj);
/* Take the hush_secbuf out of a SecureBuffer (which is left wiped), for a
 * call that consumes it (hush_client_complete, hush_engine_submit). NULL
 * with WipedError set when there is none, or a BufferError while pinned. */
hush_secbuf *hushpy_secure_buffer_take(hushpy_state *st, PyObject *obj);

/* ---- response.c ---------------------------------------------------------- */

extern PyType_Spec hushpy_document_spec;
extern PyType_Spec hushpy_response_spec;
extern PyType_Spec hushpy_response_iter_spec;
extern PyType_Spec hushpy_zstr_spec;
PyObject *hushpy_decode(PyObject *module, PyObject *args, PyObject *kwargs);
/* A Response over `doc`, which it takes over on success or failure. */
PyObject *hushpy_response_from_doc(hushpy_state *st, hush_json_doc *doc);
/* A ZeroOnFreeStr from `len` bytes of valid UTF-8; the one copy made. */
PyObject *hushpy_zstr_from_utf8(hushpy_state *st, const char *s, size_t len);

/* ---- client.c ------------------------------------------------------------ */

extern PyType_Spec hushpy_client_spec;
extern PyType_Spec hushpy_engine_spec;
extern PyType_Spec hushpy_call_spec;
extern PyType_Spec hushpy_stream_spec;

/* ---- keys.c -------------------------------------------------------------- */

extern PyType_Spec hushpy_keypair_spec;
/* The hush_keypair of a KeyPair (borrowed: valid while `obj` lives), or NULL
 * with TypeError set when `obj` is not one. */
hush_keypair *hushpy_keypair_get(hushpy_state *st, PyObject *obj);

/* ---- hpke_keys.c --------------------------------------------------------- */

extern PyType_Spec hushpy_hpke_keypair_spec;
PyObject *hushpy_hpke_pubkey_fingerprint(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *hushpy_v2_key_configs(PyObject *module, PyObject *args, PyObject *kwargs);
/* The hush_hpke_keypair of an HpkeKeypair (borrowed: valid while `obj`
 * lives), or NULL with TypeError set when `obj` is not one. */
hush_hpke_keypair *hushpy_hpke_keypair_get(hushpy_state *st, PyObject *obj);

/* ---- server.c ------------------------------------------------------------ */

extern PyType_Spec hushpy_server_spec;
extern PyType_Spec hushpy_exchange_spec;

/* ---- replay.c ------------------------------------------------------------ */

extern PyType_Spec hushpy_replay_cache_spec;

/* ---- tpm.c --------------------------------------------------------------- */

extern PyType_Spec hushpy_tpm_spec;
/* The hush_tpm of an opened Tpm (borrowed: valid while `obj` lives), or NULL
 * with TypeError set. */
hush_tpm *hushpy_tpm_get(hushpy_state *st, PyObject *obj);

/* ---- attest.c ------------------------------------------------------------ */

/* The module's exec slot for attest.c: its functions and Enrolment. */
int hushpy_attest_exec(PyObject *module);

#endif
