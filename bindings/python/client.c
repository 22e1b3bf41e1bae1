/* client.c — Client, Engine and Call: the C client (client.h) and the
 * asynchronous engine (engine.h) as heap types. Requests are encoded straight
 * into locked memory (serialize.c) and handed over to the core; answers come
 * back as Response views (response.c). The GIL is released around every call
 * that may block: key generation, the synchronous request, engine shutdown.
 *
 * An in-flight Call is kept alive by its Engine (a strong reference in the
 * engine's `inflight` set; the Call's PyObject* is the hush_call's user_data),
 * so drain() can always map a finished hush_call back to its Python object.
 * A streamed Call is announced by drain() whenever chunks wait on it, so it
 * stays in `inflight` until it is done.
 *
 * Stream is a streamed call of a Client on the client's own engine, iterated
 * synchronously: each next() waits (GIL released) for the next chunk. */
#include "hushpy.h"

#include <stdlib.h>
#include <string.h>

#define DRAIN_BATCH 64

typedef struct {
    PyObject_HEAD
    hush_client *client;
    size_t max_request_bytes; /* encode() refuses more before any copy is made */
} ClientObject;

typedef struct {
    PyObject_HEAD
    hush_engine *engine; /* NULL once closed */
    PyObject *inflight;  /* set of Call objects submitted and not yet drained */
} EngineObject;

/* A hush_call that waits may use with the GIL released: closing it then
 * (from another thread) cancels it at once and leaves the free to the
 * last wait. */
typedef struct held_call {
    hush_call *call;     /* NULL once closed (or never submitted) */
    hush_call *deferred; /* closed while a wait ran without the GIL: freed after it */
    int busy;            /* waits in progress with the GIL released */
} held_call;

/* Take the call out of `h`: freed now, or cancelled and left to the wait. */
static void held_release(held_call *h)
{
    hush_call *call = h->call;
    h->call = NULL;
    if (call == NULL)
        return;
    if (h->busy > 0) {
        hush_call_cancel(call);
        h->deferred = call;
    } else {
        hush_call_free(call);
    }
}

/* A wait is over: the last one frees a call closed under it. */
static void held_wait_done(held_call *h)
{
    if (--h->busy == 0 && h->deferred != NULL) {
        hush_call_free(h->deferred);
        h->deferred = NULL;
    }
}

typedef struct {
    PyObject_HEAD
    held_call held;
    bool stream;      /* submitted with stream=True: drained until done */
    PyObject *engine; /* EngineObject */
    PyObject *client; /* ClientObject */
} CallObject;

/* Where a Stream is: chunks still to come, or why none will. */
typedef enum stream_state {
    STREAM_OPEN,   /* chunks may still come */
    STREAM_ENDED,  /* ended complete: next() stops */
    STREAM_FAILED, /* failed: next() raises the failure again */
    STREAM_CLOSED  /* closed (cancelled) by its owner: next() stops */
} stream_state;

typedef struct {
    PyObject_HEAD
    held_call held;
    stream_state state;
    PyObject *client;    /* ClientObject: its engine runs the call */
} StreamObject;

static hushpy_state *type_state(PyObject *self)
{
    return PyType_GetModuleState(Py_TYPE(self));
}

/* ---- shared helpers ------------------------------------------------------- */

/* Milliseconds from a number of seconds (None: keep `*out`). */
static int seconds_to_ms(PyObject *value, const char *name, long *out)
{
    if (value == NULL || value == Py_None)
        return 0;
    double s = PyFloat_AsDouble(value);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (!(s > 0.0) || s > 86400.0 * 365.0) {
        PyErr_Format(PyExc_ValueError, "%s must be a positive number of seconds", name);
        return -1;
    }
    long ms = (long)(s * 1000.0 + 0.5);
    *out = ms > 0 ? ms : 1;
    return 0;
}

/* The request as a hush_secbuf: a SecureBuffer is consumed as it is, anything
 * else is encoded (serialize.c) with the client's size limit. */
static hush_secbuf *request_secbuf(hushpy_state *st, PyObject *module, ClientObject *client,
                                   PyObject *request)
{
    if (hushpy_is_secure_buffer(st, request))
        return hushpy_secure_buffer_take(st, request);
    PyObject *args = PyTuple_Pack(1, request);
    if (args == NULL)
        return NULL;
    PyObject *kwargs = Py_BuildValue("{s:n}", "max_bytes", (Py_ssize_t)client->max_request_bytes);
    if (kwargs == NULL) {
        Py_DECREF(args);
        return NULL;
    }
    PyObject *buffer = hushpy_encode(module, args, kwargs);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    if (buffer == NULL)
        return NULL;
    hush_secbuf *buf = hushpy_secure_buffer_take(st, buffer);
    Py_DECREF(buffer); /* left wiped: nothing to zero twice */
    return buf;
}

/* Whether `method` names a bodyless request (docs/protocol-v2.md: sent and
 * answered in plaintext, EHBP §7.4). */
static bool method_is_bodyless(const char *method)
{
    return method != NULL && strcmp(method, "GET") == 0;
}

/* The body of a call to `method`: NULL for a bodyless one (whose `request`
 * must be None), else the request as request_secbuf makes it. 0, or -1 with
 * an exception set. */
static int call_body(hushpy_state *st, PyObject *module, ClientObject *client, PyObject *request,
                     const char *method, hush_secbuf **body)
{
    *body = NULL;
    if (method_is_bodyless(method)) {
        if (request != Py_None) {
            PyErr_Format(PyExc_TypeError, "a %s request has no body: request must be None",
                         method);
            return -1;
        }
        return 0;
    }
    if (request == Py_None) {
        PyErr_SetString(PyExc_TypeError, "request must be a dict or a SecureBuffer (only a "
                                         "GET is bodyless)");
        return -1;
    }
    *body = request_secbuf(st, module, client, request);
    return *body != NULL ? 0 : -1;
}

/* ---- results, shared by Client.complete, Call.result and the streams ---- */

/* The server's JSON error body as a dict (json.loads), or None. */
static PyObject *error_details(hush_call *call)
{
    size_t len = 0;
    const char *text = hush_call_error_details(call, &len);
    if (text == NULL || len == 0)
        Py_RETURN_NONE;
    PyObject *json = PyImport_ImportModule("json");
    if (json == NULL)
        return NULL;
    PyObject *value = PyObject_CallMethod(json, "loads", "s#", text, (Py_ssize_t)len);
    Py_DECREF(json);
    if (value == NULL || !PyDict_Check(value)) {
        /* Not a JSON object: keep the text as the detail, as nomyo does. */
        PyErr_Clear();
        Py_XDECREF(value);
        return Py_BuildValue("{s:s#}", "detail", text, (Py_ssize_t)len);
    }
    return value;
}

/* Raise a call's failure `status`, with the server's JSON error body as
 * error_details. Always returns NULL. */
static PyObject *raise_call_failure(hushpy_state *st, hush_call *call, hush_status status,
                                    const hush_error *err)
{
    PyObject *details = error_details(call);
    if (details == NULL)
        return NULL;
    hushpy_raise_details(st, status, err, details == Py_None ? NULL : details);
    Py_DECREF(details);
    return NULL;
}

/* A done call's answer as a Response, or its failure raised. */
static PyObject *result_of(hushpy_state *st, hush_call *call)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_status status = hush_call_result(call, &doc, &err);
    if (status != HUSH_OK)
        return raise_call_failure(st, call, status, &err);
    if (doc == NULL)
        return hushpy_raise_wiped(st, "the result of this call was already taken");
    return hushpy_response_from_doc(st, doc);
}

/* ---- Client --------------------------------------------------------------- */

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyType_GetModuleState(type);
    char *keywords[] = {"base_url", "api_key", "allow_http", "timeout", "connect_timeout",
                        "max_retries", "security_tier", "key_dir", "password", "ca_file",
                        "tls_pin", "server_key_fingerprint", "secure_memory",
                        "max_request_bytes", "key_bits", "client_key", "require_attestation",
                        "attestation_policy", "protocol", "require_pq", "v2_key_fingerprint",
                        NULL};
    const char *base_url, *api_key = NULL, *security_tier = NULL, *key_dir = NULL,
                          *password = NULL, *ca_file = NULL, *tls_pin = NULL,
                          *fingerprint = NULL, *policy = NULL, *protocol = NULL,
                          *v2_fingerprint = NULL;
    int allow_http = 0, secure_memory = 1, max_retries = 2, key_bits = 0;
    int require_attestation = 0, require_pq = 0;
    PyObject *timeout = Py_None, *connect_timeout = Py_None, *max_request = Py_None,
             *client_key = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|$zpOOizzzzzzpOiOpzzpz:Client", keywords,
                                     &base_url, &api_key, &allow_http, &timeout,
                                     &connect_timeout, &max_retries, &security_tier, &key_dir,
                                     &password, &ca_file, &tls_pin, &fingerprint,
                                     &secure_memory, &max_request, &key_bits, &client_key,
                                     &require_attestation, &policy, &protocol, &require_pq,
                                     &v2_fingerprint))
        return NULL;

    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = base_url;
    o.api_key = api_key;
    o.allow_http = allow_http != 0;
    if (seconds_to_ms(timeout, "timeout", &o.timeout_ms) < 0 ||
        seconds_to_ms(connect_timeout, "connect_timeout", &o.connect_timeout_ms) < 0)
        return NULL;
    if (max_retries < 0) {
        PyErr_SetString(PyExc_ValueError, "max_retries must not be negative");
        return NULL;
    }
    o.max_retries = (unsigned)max_retries;
    o.security_tier = security_tier;
    o.key_dir = key_dir;
    o.key_password = password;
    o.ca_file = ca_file;
    o.tls_pin = tls_pin;
    o.server_key_fingerprint = fingerprint;
    o.require_attestation = require_attestation != 0;
    o.attestation_policy = policy;
    o.protocol = protocol;
    o.require_pq = require_pq != 0;
    o.v2_key_fingerprint = v2_fingerprint;
    if (!secure_memory)
        o.secmem_flags = HUSH_SECMEM_NO_LOCK;
    if (key_bits < 0) {
        PyErr_SetString(PyExc_ValueError, "key_bits must not be negative");
        return NULL;
    }
    o.key_bits = (unsigned)key_bits;
    if (client_key != Py_None) {
        /* Borrowed: hush_client_new takes its own reference. */
        o.client_key = hushpy_keypair_get(st, client_key);
        if (o.client_key == NULL)
            return NULL;
    }
    if (max_request != Py_None) {
        Py_ssize_t n = PyNumber_AsSsize_t(max_request, PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 1) {
            PyErr_SetString(PyExc_ValueError, "max_request_bytes must be at least 1");
            return NULL;
        }
        o.max_request_bytes = (size_t)n;
    }

    ClientObject *self = (ClientObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->max_request_bytes = o.max_request_bytes;

    /* A key_dir key may take a password derivation to load. The strings are
     * borrowed from args/kwargs, which the caller keeps alive. */
    hush_client *client = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_client_new(&o, &client, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK) {
        Py_DECREF(self);
        return hushpy_raise(st, status, &err);
    }
    self->client = client;
    return (PyObject *)self;
}

static void client_dealloc(PyObject *op)
{
    ClientObject *self = (ClientObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_client *client = self->client;
    self->client = NULL;
    if (client != NULL) {
        /* The last reference may stop the client's own engine: a join. */
        Py_BEGIN_ALLOW_THREADS
        hush_client_free(client);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *client_complete(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ClientObject *self = (ClientObject *)op;
    hushpy_state *st = type_state(op);
    char *keywords[] = {"request", "api_key", "security_tier", "base_url", "path", "method",
                        NULL};
    PyObject *request;
    hush_call_options co = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$zzzzz:complete", keywords, &request,
                                     &co.api_key, &co.security_tier, &co.base_url, &co.path,
                                     &co.method))
        return NULL;
    PyObject *module = PyType_GetModule(Py_TYPE(op));
    if (module == NULL)
        return NULL;
    hush_secbuf *buf = NULL;
    if (call_body(st, module, self, request, co.method, &buf) < 0)
        return NULL;

    hush_call *call = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_client_complete_call(self->client, buf, &co, &call, &err); /* takes buf */
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    PyObject *result = result_of(st, call);
    hush_call_free(call);
    return result;
}

static PyObject *stream_new_for(hushpy_state *st, PyObject *client, hush_call *call);

static PyObject *client_stream(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ClientObject *self = (ClientObject *)op;
    hushpy_state *st = type_state(op);
    char *keywords[] = {"request", "api_key", "security_tier", "base_url", "path", NULL};
    PyObject *request;
    hush_call_options co = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$zzzz:stream", keywords, &request,
                                     &co.api_key, &co.security_tier, &co.base_url, &co.path))
        return NULL;
    co.stream = true;
    PyObject *module = PyType_GetModule(Py_TYPE(op));
    if (module == NULL)
        return NULL;
    hush_secbuf *buf = NULL;
    if (call_body(st, module, self, request, NULL, &buf) < 0)
        return NULL;

    /* Returns at once: the call runs on the client's own engine. */
    hush_call *call = NULL;
    hush_error err;
    hush_status status = hush_client_stream(self->client, buf, &co, &call, &err); /* takes buf */
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return stream_new_for(st, op, call);
}

static PyObject *client_public_key_pem(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ClientObject *self = (ClientObject *)op;
    char *pem = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_client_public_pem(self->client, &pem, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK)
        return hushpy_raise(type_state(op), status, &err);
    PyObject *text = PyUnicode_FromString(pem);
    free(pem);
    return text;
}

static PyMethodDef client_methods[] = {
    {"complete", (PyCFunction)(void (*)(void))client_complete, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("complete($self, /, request, *, api_key=None, security_tier=None,\n"
               "         base_url=None, path=None, method=None)\n--\n\n"
               "Encode `request` (a dict, or a SecureBuffer, which is consumed) into locked\n"
               "memory, send it sealed and wait for the decrypted answer, with the GIL\n"
               "released. `path` is the endpoint (\"/v1/...\"; None: chat completions,\n"
               "any other needs protocol v2); method \"GET\" sends a bodyless request\n"
               "(request None) in plaintext, as EHBP §7.4 requires.")},
    {"stream", (PyCFunction)(void (*)(void))client_stream, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("stream($self, /, request, *, api_key=None, security_tier=None,\n"
               "       base_url=None, path=None)\n--\n\n"
               "Start a streamed call (protocol v2; the request should say \"stream\": true)\n"
               "and return its Stream at once: iterate it for the chunks.")},
    {"public_key_pem", client_public_key_pem, METH_NOARGS,
     PyDoc_STR("public_key_pem($self, /)\n--\n\n"
               "The client's public key (as sent in X-Public-Key), waiting for key\n"
               "generation if it is still running.")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot client_slots[] = {
    {Py_tp_new, client_new},
    {Py_tp_dealloc, client_dealloc},
    {Py_tp_methods, client_methods},
    {Py_tp_doc, (void *)PyDoc_STR(
         "Client(base_url, *, api_key=None, allow_http=False, timeout=None,\n"
         "       connect_timeout=None, max_retries=2, security_tier=None, key_dir=None,\n"
         "       password=None, ca_file=None, tls_pin=None, server_key_fingerprint=None,\n"
         "       secure_memory=True, max_request_bytes=None, key_bits=0, client_key=None,\n"
         "       require_attestation=False, attestation_policy=None, protocol=None,\n"
         "       require_pq=False, v2_key_fingerprint=None)\n--\n\n"
         "A client of one NOMYO-compatible endpoint (hush_client). Timeouts are in\n"
         "seconds. client_key (a KeyPair) is used instead of a key_dir or generated key.\n"
         "Every answer's TPM quote is verified into _metadata.attestation (verified\n"
         "only when attestation_policy, a policy file, pins its AIK); an answer whose\n"
         "quote fails is refused (SecurityError) for the maximum tier, and for every\n"
         "tier with require_attestation, both of which need such a policy.\n"
         "Safe to use from any number of threads at once.")},
    {0, NULL},
};

PyType_Spec hushpy_client_spec = {
    .name = "hushcall._core.Client",
    .basicsize = sizeof(ClientObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = client_slots,
};

/* ---- Call ----------------------------------------------------------------- */

static int call_check(CallObject *self)
{
    if (self->held.call == NULL) {
        PyErr_SetString(PyExc_ValueError, "this Call was closed");
        return -1;
    }
    return 0;
}

/* Free the hush_call (cancelling it when unfinished) and drop the engine's
 * in-flight reference, if any: a freed call is never drained. */
static void call_release(CallObject *self)
{
    if (self->held.call == NULL)
        return;
    held_release(&self->held);
    EngineObject *engine = (EngineObject *)self->engine;
    if (engine != NULL && engine->inflight != NULL) {
        if (PySet_Discard(engine->inflight, (PyObject *)self) < 0)
            PyErr_WriteUnraisable((PyObject *)self);
    }
}

static int call_traverse(PyObject *op, visitproc visit, void *arg)
{
    CallObject *self = (CallObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->engine);
    Py_VISIT(self->client);
    return 0;
}

static int call_clear(PyObject *op)
{
    CallObject *self = (CallObject *)op;
    Py_CLEAR(self->engine);
    Py_CLEAR(self->client);
    return 0;
}

static void call_dealloc(PyObject *op)
{
    CallObject *self = (CallObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    /* Not in the engine's set any more (that would keep it alive). */
    hush_call *call = self->held.call;
    self->held.call = NULL;
    hush_call_free(call);
    hush_call_free(self->held.deferred); /* busy is 0: a wait() holds a reference */
    self->held.deferred = NULL;
    call_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *call_done(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CallObject *self = (CallObject *)op;
    if (call_check(self) < 0)
        return NULL;
    return PyBool_FromLong(hush_call_done(self->held.call));
}

static PyObject *call_cancel(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CallObject *self = (CallObject *)op;
    if (self->held.call != NULL)
        hush_call_cancel(self->held.call);
    Py_RETURN_NONE;
}

static PyObject *call_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CallObject *self = (CallObject *)op;
    if (self->held.call != NULL) {
        Py_INCREF(op); /* the set may hold the last reference */
        call_release(self);
        Py_DECREF(op);
    }
    Py_RETURN_NONE;
}

static PyObject *call_result(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CallObject *self = (CallObject *)op;
    hushpy_state *st = type_state(op);
    if (call_check(self) < 0)
        return NULL;
    if (!hush_call_done(self->held.call)) {
        PyErr_SetString(PyExc_RuntimeError, "the call is not done yet");
        return NULL;
    }
    return result_of(st, self->held.call);
}

static PyObject *call_wait(PyObject *op, PyObject *args, PyObject *kwargs)
{
    CallObject *self = (CallObject *)op;
    char *keywords[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:wait", keywords, &timeout))
        return NULL;
    if (call_check(self) < 0)
        return NULL;
    long ms = -1;
    if (timeout != Py_None) {
        double s = PyFloat_AsDouble(timeout);
        if (s == -1.0 && PyErr_Occurred())
            return NULL;
        ms = s <= 0.0 ? 0 : (long)(s * 1000.0 + 0.5);
    }
    hush_error err;
    hush_status status;
    hush_call *call = self->held.call;
    /* close() from another thread meanwhile defers the free (busy). */
    self->held.busy++;
    Py_BEGIN_ALLOW_THREADS
    status = hush_call_wait(call, ms, &err);
    Py_END_ALLOW_THREADS
    held_wait_done(&self->held);
    if (status == HUSH_E_TIMEOUT)
        Py_RETURN_FALSE;
    if (status != HUSH_OK)
        return hushpy_raise(type_state(op), status, &err);
    Py_RETURN_TRUE;
}

/* A streamed call's next chunk, waiting up to `timeout_ms` (GIL held when 0):
 * a Response, NULL with nothing set when none arrived in time, or NULL with
 * an exception. `*ended` is set when the stream ended complete. */
static PyObject *next_chunk_of(hushpy_state *st, hush_call *call, long timeout_ms, bool *ended)
{
    hush_json_doc *chunk = NULL;
    hush_error err;
    hush_status status;
    *ended = false;
    if (timeout_ms == 0) {
        status = hush_call_next_chunk(call, 0, &chunk, &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        status = hush_call_next_chunk(call, timeout_ms, &chunk, &err);
        Py_END_ALLOW_THREADS
    }
    if (status == HUSH_E_TIMEOUT)
        return NULL;
    if (status != HUSH_OK)
        return raise_call_failure(st, call, status, &err);
    if (chunk == NULL) {
        *ended = true;
        return NULL;
    }
    return hushpy_response_from_doc(st, chunk);
}

static PyObject *call_next_chunk(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CallObject *self = (CallObject *)op;
    hushpy_state *st = type_state(op);
    if (call_check(self) < 0)
        return NULL;
    if (!self->stream) {
        PyErr_SetString(PyExc_ValueError, "next_chunk() needs a call submitted with stream=True");
        return NULL;
    }
    bool ended;
    PyObject *chunk = next_chunk_of(st, self->held.call, 0, &ended);
    if (chunk != NULL || PyErr_Occurred())
        return chunk;
    PyObject *result = ended ? st->stream_end : Py_None;
    Py_INCREF(result);
    return result;
}

static PyObject *call_get_payload_id(PyObject *op, void *Py_UNUSED(closure))
{
    CallObject *self = (CallObject *)op;
    if (call_check(self) < 0)
        return NULL;
    return PyUnicode_FromString(hush_call_payload_id(self->held.call));
}

static PyObject *call_get_attempts(PyObject *op, void *Py_UNUSED(closure))
{
    CallObject *self = (CallObject *)op;
    if (call_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(hush_call_attempts(self->held.call));
}

static PyObject *call_repr(PyObject *op)
{
    CallObject *self = (CallObject *)op;
    if (self->held.call == NULL)
        return PyUnicode_FromString("<hushcall._core.Call closed>");
    return PyUnicode_FromFormat("<hushcall._core.Call %s %s>", hush_call_payload_id(self->held.call),
                                hush_call_done(self->held.call) ? "done" : "pending");
}

static PyMethodDef call_methods[] = {
    {"done", call_done, METH_NOARGS,
     PyDoc_STR("done($self, /)\n--\n\n"
               "True once the call has finished.")},
    {"cancel", call_cancel, METH_NOARGS,
     PyDoc_STR("cancel($self, /)\n--\n\n"
               "Ask the call to stop; it ends with CallCancelledError unless "
               "it is done.")},
    {"result", call_result, METH_NOARGS,
     PyDoc_STR("result($self, /)\n--\n\n"
               "The answer of a done call, or raise its error (APIError subclasses carry\n"
               "status_code and error_details, the server's JSON error body). The answer\n"
               "can be taken once.")},
    {"next_chunk", call_next_chunk, METH_NOARGS,
     PyDoc_STR("next_chunk($self, /)\n--\n\n"
               "A streamed call's next chunk, without waiting: a Response; None when none\n"
               "has arrived yet (the call goes on: wait for the next drain); STREAM_END\n"
               "once the stream ended complete. Raises the call's failure, again on every\n"
               "later call: IncompleteStreamError when the stream was cut short after\n"
               "its last chunk, SecurityError at once for a frame that fails to\n"
               "authenticate.")},
    {"wait", (PyCFunction)(void (*)(void))call_wait, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("wait($self, /, timeout=None)\n--\n\n"
               "Block (GIL released) until the call is done or `timeout` seconds pass.")},
    {"close", call_close, METH_NOARGS,
     PyDoc_STR("close($self, /)\n--\n\nCancel the call if unfinished and release it.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef call_getset[] = {
    {"payload_id", call_get_payload_id, NULL, PyDoc_STR("The X-Payload-ID (a UUIDv4)."), NULL},
    {"attempts", call_get_attempts, NULL, PyDoc_STR("POSTs sent so far, retries included."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot call_slots[] = {
    {Py_tp_dealloc, call_dealloc},
    {Py_tp_traverse, call_traverse},
    {Py_tp_clear, call_clear},
    {Py_tp_repr, call_repr},
    {Py_tp_methods, call_methods},
    {Py_tp_getset, call_getset},
    {Py_tp_doc, (void *)PyDoc_STR("One request submitted to an Engine (hush_call).")},
    {0, NULL},
};

PyType_Spec hushpy_call_spec = {
    .name = "hushcall._core.Call",
    .basicsize = sizeof(CallObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = call_slots,
};

/* ---- Stream --------------------------------------------------------------- */

/* How long one wait of next() lasts before it checks for signals, so that
 * Ctrl-C interrupts a stream whose server is quiet. */
#define STREAM_POLL_MS 200

static PyObject *stream_new_for(hushpy_state *st, PyObject *client, hush_call *call)
{
    StreamObject *self = (StreamObject *)st->stream_type->tp_alloc(st->stream_type, 0);
    if (self == NULL) {
        hush_call_free(call); /* cancels it */
        return NULL;
    }
    self->held.call = call;
    self->state = STREAM_OPEN;
    Py_INCREF(client);
    self->client = client;
    return (PyObject *)self;
}

/* Cancel and free the call (after the next() waiting on it, if any). */
static void stream_release(StreamObject *self)
{
    held_release(&self->held);
}

static int stream_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((StreamObject *)op)->client);
    return 0;
}

static int stream_clear(PyObject *op)
{
    Py_CLEAR(((StreamObject *)op)->client);
    return 0;
}

static void stream_dealloc(PyObject *op)
{
    StreamObject *self = (StreamObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    /* An abandoned stream is cancelled here: hush_call_free cancels it. */
    hush_call_free(self->held.call);
    self->held.call = NULL;
    hush_call_free(self->held.deferred); /* busy is 0: a next() holds a reference */
    self->held.deferred = NULL;
    stream_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* One wait for a chunk, with close() from another thread deferring the free. */
static PyObject *stream_wait_once(StreamObject *self, hushpy_state *st, bool *ended)
{
    hush_call *call = self->held.call;
    self->held.busy++;
    PyObject *chunk = next_chunk_of(st, call, STREAM_POLL_MS, ended);
    held_wait_done(&self->held);
    return chunk;
}

static PyObject *stream_next(PyObject *op)
{
    StreamObject *self = (StreamObject *)op;
    hushpy_state *st = type_state(op);
    while (self->held.call != NULL && self->state != STREAM_ENDED) {
        bool ended;
        PyObject *chunk = stream_wait_once(self, st, &ended);
        if (self->held.call == NULL) { /* closed while we waited: what came is dropped */
            Py_XDECREF(chunk);
            PyErr_Clear();
            break;
        }
        if (chunk != NULL)
            return chunk;
        if (PyErr_Occurred()) {
            self->state = STREAM_FAILED;
            return NULL;
        }
        if (ended) {
            self->state = STREAM_ENDED;
            break;
        }
        if (PyErr_CheckSignals() < 0)
            return NULL; /* the stream goes on: next() may be called again */
    }
    return NULL; /* StopIteration */
}

static PyObject *stream_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    StreamObject *self = (StreamObject *)op;
    if (self->held.call != NULL && self->state == STREAM_OPEN)
        self->state = STREAM_CLOSED;
    stream_release(self);
    Py_RETURN_NONE;
}

static PyObject *stream_cancel(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    StreamObject *self = (StreamObject *)op;
    if (self->held.call != NULL)
        hush_call_cancel(self->held.call);
    Py_RETURN_NONE;
}

static PyObject *stream_get_done(PyObject *op, void *Py_UNUSED(closure))
{
    StreamObject *self = (StreamObject *)op;
    return PyBool_FromLong(self->held.call == NULL || self->state != STREAM_OPEN);
}

static PyObject *stream_get_payload_id(PyObject *op, void *Py_UNUSED(closure))
{
    StreamObject *self = (StreamObject *)op;
    if (self->held.call == NULL) {
        PyErr_SetString(PyExc_ValueError, "this Stream was closed");
        return NULL;
    }
    return PyUnicode_FromString(hush_call_payload_id(self->held.call));
}

static PyObject *stream_repr(PyObject *op)
{
    StreamObject *self = (StreamObject *)op;
    static const char *const names[] = {
        [STREAM_OPEN] = "open",
        [STREAM_ENDED] = "ended",
        [STREAM_FAILED] = "failed",
        [STREAM_CLOSED] = "closed",
    };
    if (self->held.call == NULL)
        return PyUnicode_FromFormat("<hushcall._core.Stream %s>", names[self->state]);
    return PyUnicode_FromFormat("<hushcall._core.Stream %s %s>",
                                hush_call_payload_id(self->held.call), names[self->state]);
}

static PyMethodDef stream_methods[] = {
    {"close", stream_close, METH_NOARGS,
     PyDoc_STR("close($self, /)\n--\n\n"
               "End the stream: cancel the call if unfinished (the server sees the\n"
               "connection close) and release it; iteration stops. Idempotent.")},
    {"cancel", stream_cancel, METH_NOARGS,
     PyDoc_STR("cancel($self, /)\n--\n\n"
               "Ask the call to stop; iteration then raises CallCancelledError unless the\n"
               "stream had ended.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"done", stream_get_done, NULL,
     PyDoc_STR("True once no chunk will come: ended, failed or closed."), NULL},
    {"payload_id", stream_get_payload_id, NULL, PyDoc_STR("The X-Payload-ID (a UUIDv4)."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_repr, stream_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, stream_next},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_doc, (void *)PyDoc_STR(
         "A streamed call of a Client (Client.stream): an iterator of its chunks, each\n"
         "a Response over its own locked document. next() waits with the GIL\n"
         "released and raises the call's failure: IncompleteStreamError when the\n"
         "stream was cut short (after its last authentic chunk), SecurityError at once\n"
         "for a frame that fails to authenticate. Freeing it cancels the call.")},
    {0, NULL},
};

PyType_Spec hushpy_stream_spec = {
    .name = "hushcall._core.Stream",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = stream_slots,
};

/* ---- Engine --------------------------------------------------------------- */

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyType_GetModuleState(type);
    char *keywords[] = {"workers", NULL};
    int workers = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$i:Engine", keywords, &workers))
        return NULL;
    if (workers < 0) {
        PyErr_SetString(PyExc_ValueError, "workers must not be negative");
        return NULL;
    }
    EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->inflight = PySet_New(NULL);
    if (self->inflight == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    hush_engine_options eo = HUSH_ENGINE_OPTIONS_INIT;
    eo.workers = (unsigned)workers;
    hush_engine *engine = NULL;
    hush_error err;
    hush_status status = hush_engine_new(&eo, &engine, &err);
    if (status != HUSH_OK) {
        Py_DECREF(self);
        return hushpy_raise(st, status, &err);
    }
    self->engine = engine;
    return (PyObject *)self;
}

/* Stop the engine (cancelling and waiting for calls in flight, GIL released)
 * and drop the in-flight references: those calls are done now, but will
 * never be drained. */
static void engine_shutdown(EngineObject *self)
{
    hush_engine *engine = self->engine;
    self->engine = NULL;
    if (engine == NULL)
        return; /* closed already, or being closed by another thread */
    Py_BEGIN_ALLOW_THREADS
    hush_engine_free(engine);
    Py_END_ALLOW_THREADS
    if (self->inflight != NULL)
        PySet_Clear(self->inflight);
}

static int engine_traverse(PyObject *op, visitproc visit, void *arg)
{
    EngineObject *self = (EngineObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->inflight);
    return 0;
}

static int engine_clear(PyObject *op)
{
    EngineObject *self = (EngineObject *)op;
    Py_CLEAR(self->inflight);
    return 0;
}

static void engine_dealloc(PyObject *op)
{
    EngineObject *self = (EngineObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    engine_shutdown(self);
    engine_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int engine_check(EngineObject *self)
{
    if (self->engine == NULL) {
        PyErr_SetString(PyExc_ValueError, "this Engine is closed");
        return -1;
    }
    return 0;
}

static PyObject *engine_fileno(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    EngineObject *self = (EngineObject *)op;
    if (engine_check(self) < 0)
        return NULL;
    return PyLong_FromLong(hush_engine_fd(self->engine));
}

static PyObject *engine_submit(PyObject *op, PyObject *args, PyObject *kwargs)
{
    EngineObject *self = (EngineObject *)op;
    hushpy_state *st = type_state(op);
    char *keywords[] = {"client", "request", "api_key", "security_tier", "base_url", "path",
                        "method", "stream", NULL};
    PyObject *client, *request;
    hush_call_options co = {0};
    int stream = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O|$zzzzzp:submit", keywords,
                                     st->client_type, &client, &request, &co.api_key,
                                     &co.security_tier, &co.base_url, &co.path, &co.method,
                                     &stream))
        return NULL;
    co.stream = stream != 0;
    if (engine_check(self) < 0)
        return NULL;
    PyObject *module = PyType_GetModule(Py_TYPE(op));
    if (module == NULL)
        return NULL;

    CallObject *call = (CallObject *)st->call_type->tp_alloc(st->call_type, 0);
    if (call == NULL)
        return NULL;
    Py_INCREF(op);
    call->engine = op;
    Py_INCREF(client);
    call->client = client;
    call->stream = co.stream;

    hush_secbuf *buf = NULL;
    if (call_body(st, module, (ClientObject *)client, request, co.method, &buf) < 0 ||
        engine_check(self) < 0) { /* encoding may run Python code */
        hush_secbuf_free(buf);
        Py_DECREF(call);
        return NULL;
    }
    /* Submit with the GIL held: it returns at once, and drain() (which needs
     * the GIL) cannot see the call before it is in `inflight`. */
    hush_error err;
    hush_status status = hush_engine_submit(self->engine, ((ClientObject *)client)->client, buf,
                                            &co, call, &call->held.call, &err);
    if (status != HUSH_OK) {
        call->held.call = NULL;
        Py_DECREF(call);
        return hushpy_raise(st, status, &err);
    }
    if (PySet_Add(self->inflight, (PyObject *)call) < 0) {
        Py_DECREF(call); /* frees (cancels) the call: it is never announced */
        return NULL;
    }
    return (PyObject *)call;
}

static PyObject *engine_drain(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    EngineObject *self = (EngineObject *)op;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    if (self->engine == NULL)
        return list;
    hush_call *done[DRAIN_BATCH];
    bool failed = false;
    for (;;) {
        size_t n = hush_engine_drain(self->engine, done, DRAIN_BATCH);
        for (size_t i = 0; i < n; i++) {
            PyObject *call = hush_call_user_data(done[i]);
            /* Still referenced by `inflight`: calls are freed only when closed,
             * and a freed call is never announced. Every drained call leaves
             * the set once done, even after an error, so none is kept for
             * ever; a stream not yet done stays for its next announcement. */
            if (!failed && PyList_Append(list, call) < 0)
                failed = true;
            if (((CallObject *)call)->stream && !hush_call_done(done[i]))
                continue;
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            if (PySet_Discard(self->inflight, call) < 0)
                PyErr_Clear();
            PyErr_Restore(type, value, tb);
        }
        if (failed) {
            Py_DECREF(list);
            return NULL;
        }
        if (n < DRAIN_BATCH)
            break;
    }
    return list;
}

static PyObject *engine_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    engine_shutdown((EngineObject *)op);
    Py_RETURN_NONE;
}

static PyObject *engine_get_closed(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((EngineObject *)op)->engine == NULL);
}

static PyObject *engine_get_pending(PyObject *op, void *Py_UNUSED(closure))
{
    EngineObject *self = (EngineObject *)op;
    return PyLong_FromSsize_t(self->inflight != NULL ? PySet_GET_SIZE(self->inflight) : 0);
}

static PyMethodDef engine_methods[] = {
    {"fileno", engine_fileno, METH_NOARGS,
     PyDoc_STR("fileno($self, /)\n--\n\nReadable while finished calls wait to be drained "
               "(level-triggered).")},
    {"submit", (PyCFunction)(void (*)(void))engine_submit, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("submit($self, /, client, request, *, api_key=None, security_tier=None,\n"
               "       base_url=None, path=None, method=None, stream=False)\n--\n\n"
               "Encode `request` into locked memory and start the call; returns at once.\n"
               "A request over the client's size limit fails here, with nothing sent.\n"
               "path and method as Client.complete has them; a stream=True call is\n"
               "drained whenever chunks wait on it: take them with Call.next_chunk().")},
    {"drain", engine_drain, METH_NOARGS,
     PyDoc_STR("drain($self, /)\n--\n\nThe calls that finished since the last drain.")},
    {"close", engine_close, METH_NOARGS,
     PyDoc_STR("close($self, /)\n--\n\n"
               "Cancel every call in flight, wait for them (GIL released) and "
               "stop the engine's threads. Idempotent.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef engine_getset[] = {
    {"closed", engine_get_closed, NULL, PyDoc_STR("True once close() was called."), NULL},
    {"pending", engine_get_pending, NULL, PyDoc_STR("Calls submitted and not yet drained."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot engine_slots[] = {
    {Py_tp_new, engine_new},
    {Py_tp_dealloc, engine_dealloc},
    {Py_tp_traverse, engine_traverse},
    {Py_tp_clear, engine_clear},
    {Py_tp_methods, engine_methods},
    {Py_tp_getset, engine_getset},
    {Py_tp_doc, (void *)PyDoc_STR(
         "Engine(*, workers=0)\n--\n\n"
         "The asynchronous request engine (hush_engine): one I/O thread and a few crypto\n"
         "workers. Watch fileno() in an event loop and call drain() when it is readable.")},
    {0, NULL},
};

PyType_Spec hushpy_engine_spec = {
    .name = "hushcall._core.Engine",
    .basicsize = sizeof(EngineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = engine_slots,
};
