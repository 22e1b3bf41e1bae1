/* server.c — Server: the server role of protocols v1 and v2 (hush_server,
 * server.h) for the gateway. Python hands it the sealed request as it came off the
 * wire and gets the sealed answer back; the plaintext between the two never
 * becomes a Python object. handle() runs with the GIL released, so a pool
 * of threads answers requests in parallel. */
#include "hushpy.h"

#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    hush_server *server; /* NULL only if __init__ failed */
    PyObject *tpm;       /* the Tpm the server borrows, kept alive here; or NULL */
} ServerObject;

/* Seconds as milliseconds; None leaves the default in `*out_ms`. */
static int seconds_option(PyObject *obj, const char *name, long *out_ms)
{
    if (obj == Py_None)
        return 0;
    double s = PyFloat_AsDouble(obj);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (!isfinite(s) || s <= 0 || s > 86400.0) {
        PyErr_Format(PyExc_ValueError, "%s must be between 0 and 86400 seconds", name);
        return -1;
    }
    *out_ms = (long)ceil(s * 1000.0);
    return 0;
}

/* A count of bytes; None leaves the default in `*out`. */
static int size_option(PyObject *obj, const char *name, size_t *out)
{
    if (obj == Py_None)
        return 0;
    Py_ssize_t n = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "%s must be at least 1", name);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

static int server_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"key", "backend", "upstream_url", "upstream_api_key", "upstream_ca_file",
                        "upstream_timeout", "upstream_connect_timeout", "max_package_bytes",
                        "max_answer_bytes", "server_name", "secure_memory", "tpm",
                        "allow_http_upstream", "echo_delay_ms", NULL};
    PyObject *key_obj, *backend_obj = NULL, *url = Py_None, *api_key = Py_None, *ca = Py_None;
    PyObject *timeout = Py_None, *connect_timeout = Py_None, *max_package = Py_None;
    PyObject *max_answer = Py_None, *name = Py_None, *tpm = Py_None;
    int secure_memory = 1, allow_http_upstream = 0;
    long echo_delay_ms = 0;
    if (self->server != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Server is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$UOOOOOOOOpOpl:Server", keywords, &key_obj,
                                     &backend_obj, &url, &api_key, &ca, &timeout,
                                     &connect_timeout, &max_package, &max_answer, &name,
                                     &secure_memory, &tpm, &allow_http_upstream, &echo_delay_ms))
        return -1;

    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    o.key = hushpy_keypair_get(st, key_obj);
    if (o.key == NULL)
        return -1;
    const char *backend = backend_obj != NULL ? PyUnicode_AsUTF8(backend_obj) : "echo";
    if (backend == NULL)
        return -1;
    if (strcmp(backend, "echo") == 0) {
        o.backend = HUSH_BACKEND_ECHO;
    } else if (strcmp(backend, "openai") == 0) {
        o.backend = HUSH_BACKEND_OPENAI;
    } else {
        PyErr_SetString(PyExc_ValueError, "backend must be \"echo\" or \"openai\"");
        return -1;
    }
    if (hushpy_str_option(url, "upstream_url", &o.upstream_url) < 0 ||
        hushpy_str_option(api_key, "upstream_api_key", &o.upstream_api_key) < 0 ||
        hushpy_str_option(ca, "upstream_ca_file", &o.upstream_ca_file) < 0 ||
        hushpy_str_option(name, "server_name", &o.server_name) < 0 ||
        seconds_option(timeout, "upstream_timeout", &o.upstream_timeout_ms) < 0 ||
        seconds_option(connect_timeout, "upstream_connect_timeout",
                       &o.upstream_connect_timeout_ms) < 0 ||
        size_option(max_package, "max_package_bytes", &o.max_package_bytes) < 0 ||
        size_option(max_answer, "max_answer_bytes", &o.max_answer_bytes) < 0)
        return -1;
    if (!secure_memory)
        o.secmem_flags = HUSH_SECMEM_NO_LOCK;
    o.allow_http_upstream = allow_http_upstream;
    o.echo_delay_ms = echo_delay_ms; /* hush_server_new checks its range */
    if (tpm != Py_None && (o.tpm = hushpy_tpm_get(st, tpm)) == NULL)
        return -1;

    hush_error err;
    hush_status status = hush_server_new(&o, &self->server, &err);
    if (status != HUSH_OK) {
        hushpy_raise(st, status, &err);
        return -1;
    }
    if (o.tpm != NULL) {
        Py_INCREF(tpm);
        self->tpm = tpm;
    }
    return 0;
}

static void server_dealloc(PyObject *op)
{
    ServerObject *self = (ServerObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_server_free(self->server); /* before the Tpm it borrows */
    self->server = NULL;
    Py_CLEAR(self->tpm);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* Raise the table's exception for `status`, with `http_status` set to the
 * status the gateway should answer (err->http_status, else 500). */
static PyObject *raise_for_gateway(hushpy_state *st, hush_status status, const hush_error *err)
{
    hushpy_raise(st, status, err);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *code = PyLong_FromLong(err->http_status != 0 ? err->http_status : 500);
    if (code == NULL || PyObject_SetAttrString(value, "http_status", code) < 0) {
        Py_XDECREF(code);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return NULL;
    }
    Py_DECREF(code);
    PyErr_Restore(type, value, tb);
    return NULL;
}

static PyObject *timings(const hush_server_answer *answer)
{
    return Py_BuildValue("{s:d,s:d,s:d,s:i}", "open_ms", answer->open_ms, "backend_ms",
                         answer->backend_ms, "seal_ms", answer->seal_ms, "upstream_status",
                         answer->upstream_status);
}

/* v2: (Ehbp-Response-Nonce as lowercase hex, the frames). */
static PyObject *v2_sealed(const hush_server_answer *answer, PyObject *frames)
{
    char nonce[2 * HUSH_V2_RESPONSE_NONCE_BYTES + 1];
    hush_v2_hex_format(answer->response_nonce, sizeof answer->response_nonce, nonce);
    return Py_BuildValue("(sO)", nonce, frames);
}

/* (sealed answer, timings), the sealed answer of a v2 request being
 * (nonce hex, frames); the answer struct is cleared. */
static PyObject *sealed_answer(hush_server_answer *answer, bool v2)
{
    PyObject *result = NULL;
    PyObject *sealed = PyBytes_FromStringAndSize((const char *)hush_secbuf_data(answer->package),
                                                 (Py_ssize_t)hush_secbuf_len(answer->package));
    if (v2 && sealed != NULL)
        Py_SETREF(sealed, v2_sealed(answer, sealed));
    PyObject *times = timings(answer);
    if (sealed != NULL && times != NULL)
        result = PyTuple_Pack(2, sealed, times);
    Py_XDECREF(sealed);
    Py_XDECREF(times);
    hush_server_answer_clear(answer);
    return result;
}

/* handle()'s and open()'s arguments as a request, with `package` held (the
 * caller releases it). Header values that are not UTF-8 text are a
 * ValueError naming the argument, never the codec's message quoting them;
 * the strings stay alive in the caller's frame. */
static int request_args(ServerObject *self, PyObject *args, PyObject *kwargs, const char *format,
                        Py_buffer *package, hush_server_request *req)
{
    char *keywords[] = {"package", "public_key", "payload_id", "security_tier", "attest", NULL};
    PyObject *public_key_obj, *payload_id_obj, *tier_obj = Py_None;
    const char *public_key, *payload_id, *tier;
    int attest = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, package, &public_key_obj,
                                     &payload_id_obj, &tier_obj, &attest))
        return -1;
    if (hushpy_str_option(public_key_obj, "public_key", &public_key) < 0 ||
        hushpy_str_option(payload_id_obj, "payload_id", &payload_id) < 0 ||
        hushpy_str_option(tier_obj, "security_tier", &tier) < 0) {
        PyBuffer_Release(package);
        return -1;
    }
    if (self->server == NULL) {
        PyBuffer_Release(package);
        PyErr_SetString(PyExc_RuntimeError, "Server was not initialised");
        return -1;
    }
    *req = (hush_server_request){
        .package = package->buf,
        .package_len = (size_t)package->len,
        .client_public_key = public_key,
        .client_public_key_len = public_key != NULL ? strlen(public_key) : 0,
        .payload_id = payload_id,
        .security_tier = tier,
        .attest = attest != 0,
    };
    return 0;
}

static PyObject *server_handle(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    Py_buffer package;
    hush_server_request req;
    if (request_args(self, args, kwargs, "y*OO|O$p:handle", &package, &req) < 0)
        return NULL;
    hush_server_answer answer = {0};
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_handle(self->server, &req, &answer, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&package);
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    return sealed_answer(&answer, false);
}

/* ---- Exchange: a request opened and not yet answered -------------------- */

typedef struct {
    PyObject_HEAD
    hush_server_exchange *exchange; /* NULL once answered or closed */
    PyObject *v2_key;               /* v2: (key id, index into open_v2's keys); else None */
    PyObject *server;               /* the Server it borrows, kept alive here */
    int busy;                       /* answer() or stream() is running without the GIL */
    bool plain;                     /* open_plaintext's: answered as v2's, unsealed */
    bool is_stream;
    PyObject *response_nonce;       /* stream(): the nonce's hex from the first frame on */
} ExchangeObject;

static int exchange_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((ExchangeObject *)op)->server);
    return 0;
}

static int exchange_clear(PyObject *op)
{
    Py_CLEAR(((ExchangeObject *)op)->server);
    Py_CLEAR(((ExchangeObject *)op)->v2_key);
    Py_CLEAR(((ExchangeObject *)op)->response_nonce);
    return 0;
}

static void exchange_dealloc(PyObject *op)
{
    ExchangeObject *self = (ExchangeObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    hush_server_exchange_free(self->exchange); /* busy is 0: answer() holds a reference */
    self->exchange = NULL;
    exchange_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int exchange_check(ExchangeObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this request is being answered");
        return -1;
    }
    if (self->exchange == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this request has been answered or closed");
        return -1;
    }
    return 0;
}

static PyObject *exchange_replay_key(PyObject *op, void *Py_UNUSED(closure))
{
    ExchangeObject *self = (ExchangeObject *)op;
    unsigned char digest[HUSH_REPLAY_DIGEST_BYTES], binding[HUSH_REPLAY_DIGEST_BYTES];
    if (exchange_check(self) < 0)
        return NULL;
    hush_server_exchange_replay_key(self->exchange, digest, binding);
    return Py_BuildValue("(y#y#)", (const char *)digest, (Py_ssize_t)sizeof digest,
                         (const char *)binding, (Py_ssize_t)sizeof binding);
}


static PyObject *exchange_answer(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ExchangeObject *self = (ExchangeObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    if (exchange_check(self) < 0)
        return NULL;
    hush_server_answer answer = {0};
    hush_error err;
    hush_status status;
    hush_server_exchange *x = self->exchange;
    bool v2 = self->v2_key != Py_None || self->plain;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_exchange_answer(x, &answer, &err);
    hush_server_exchange_free(x); /* answered once: nothing left to keep */
    Py_END_ALLOW_THREADS
    self->busy = 0;
    self->exchange = NULL;
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    return sealed_answer(&answer, v2);
}

/* ---- a streamed answer ---- */

/* The Python emit of one stream, called from the stream's thread. */
typedef struct stream_emit {
    ExchangeObject *exchange;
    const unsigned char *nonce; /* filled by the core before the first frame */
    PyObject *emit;
    PyObject *failure[3]; /* the exception emit raised (it stops the stream), or NULLs */
} stream_emit;

/* The nonce's hex on the exchange, for emit to send with the response head. */
static int publish_nonce(stream_emit *e)
{
    char hex[2 * HUSH_V2_RESPONSE_NONCE_BYTES + 1];
    if (e->exchange->response_nonce != NULL)
        return 0;
    hush_v2_hex_format(e->nonce, HUSH_V2_RESPONSE_NONCE_BYTES, hex);
    e->exchange->response_nonce = PyUnicode_FromString(hex);
    return e->exchange->response_nonce != NULL ? 0 : -1;
}

/* emit(frames) or emit(None), with the GIL; a truthy return or an
 * exception stops the stream. */
static int call_emit(void *ctx, const void *frames, size_t len)
{
    stream_emit *e = ctx;
    int stop = 1;
    PyObject *arg = NULL, *result = NULL;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (frames == NULL || publish_nonce(e) == 0)
        arg = frames != NULL ? PyBytes_FromStringAndSize(frames, (Py_ssize_t)len)
                             : Py_NewRef(Py_None);
    if (arg != NULL)
        result = PyObject_CallOneArg(e->emit, arg);
    if (result != NULL)
        stop = PyObject_IsTrue(result);
    if (stop < 0 || result == NULL) {
        stop = 1;
        if (e->failure[0] == NULL)
            PyErr_Fetch(&e->failure[0], &e->failure[1], &e->failure[2]);
        PyErr_Clear();
    }
    Py_XDECREF(result);
    Py_XDECREF(arg);
    PyGILState_Release(gil);
    return stop;
}

static PyObject *exchange_stream(PyObject *op, PyObject *emit)
{
    ExchangeObject *self = (ExchangeObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    if (exchange_check(self) < 0)
        return NULL;
    if (!PyCallable_Check(emit)) {
        PyErr_SetString(PyExc_TypeError, "emit must be callable");
        return NULL;
    }
    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    char nonce_hex[2 * HUSH_V2_RESPONSE_NONCE_BYTES + 1];
    stream_emit e = {self, nonce, emit, {NULL, NULL, NULL}};
    hush_error err;
    hush_status status;
    hush_server_exchange *x = self->exchange;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_exchange_stream(x, nonce, call_emit, &e, &err);
    hush_server_exchange_free(x); /* answered once: nothing left to keep */
    Py_END_ALLOW_THREADS
    self->busy = 0;
    self->exchange = NULL;
    if (e.failure[0] != NULL) { /* emit's own exception says more than "cancelled" */
        PyErr_Restore(e.failure[0], e.failure[1], e.failure[2]);
        return NULL;
    }
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    hush_v2_hex_format(nonce, sizeof nonce, nonce_hex);
    return PyUnicode_FromString(nonce_hex);
}

static PyObject *exchange_is_stream(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((ExchangeObject *)op)->is_stream);
}

static PyObject *exchange_response_nonce(PyObject *op, void *Py_UNUSED(closure))
{
    PyObject *nonce = ((ExchangeObject *)op)->response_nonce;
    return Py_NewRef(nonce != NULL ? nonce : Py_None);
}

static PyObject *exchange_v2_key(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(((ExchangeObject *)op)->v2_key);
}

static PyObject *exchange_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ExchangeObject *self = (ExchangeObject *)op;
    if (!self->busy) { /* else answer() frees it when it returns */
        hush_server_exchange_free(self->exchange);
        self->exchange = NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef exchange_methods[] = {
    {"answer", exchange_answer, METH_NOARGS,
     PyDoc_STR("answer($self, /)\n--\n\n"
               "Run the backend and seal the answer (GIL released): the second half of\n"
               "Server.handle. Returns (sealed answer, timings); a v2 request's sealed\n"
               "answer is (Ehbp-Response-Nonce hex, frames). An exchange is answered\n"
               "once; its plaintext is wiped when this returns, whatever the outcome.")},
    {"stream", exchange_stream, METH_O,
     PyDoc_STR("stream($self, emit, /)\n--\n\n"
               "Answer a request for a stream (is_stream) with the GIL released: each\n"
               "event of the backend's answer is sealed as it is made and handed to\n"
               "emit(frames: bytes), with the GIL held, on this thread; emit(None) asks\n"
               "at least every 100 ms while the backend is quiet whether to go on. A\n"
               "truthy return (or an exception, raised again here) stops the stream\n"
               "and closes the backend's request (HUSH_E_CANCELLED). Returns the\n"
               "Ehbp-Response-Nonce hex (zeros for a plaintext exchange), which\n"
               "response_nonce holds from the first emit of frames on, for the\n"
               "response head. A failure before the first frame raises with\n"
               "http_status; one after it raises the same way, the body then ends.")},
    {"close", exchange_close, METH_NOARGS,
     PyDoc_STR("close($self, /)\n--\n\n"
               "Wipe and drop the opened request without answering it. Idempotent; while\n"
               "answer() runs it leaves the request to answer(), which wipes it.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef exchange_getset[] = {
    {"replay_key", exchange_replay_key, NULL,
     PyDoc_STR("(digest, binding): SHA-256 of the request's wrapped message key, unique\n"
               "to it, and SHA-256 over the client key's fingerprint and the payload id.\n"
               "What a replay store remembers (ReplayCache.check_and_remember). v2:\n"
               "SHA-256 of enc, and SHA-256 over the key id that opened it."),
     NULL},
    {"is_stream", exchange_is_stream, NULL,
     PyDoc_STR("True when the request asks for a streamed answer (\"stream\": true over v2\n"
               "or the plaintext pass-through): answer it with stream(), not answer()."),
     NULL},
    {"response_nonce", exchange_response_nonce, NULL,
     PyDoc_STR("stream(): the Ehbp-Response-Nonce hex, from the first emit of frames on;\n"
               "None before."),
     NULL},
    {"v2_key", exchange_v2_key, NULL,
     PyDoc_STR("v2: (key id, index into open_v2's keys) of the key that opened the\n"
               "request; None for a v1 request."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot exchange_slots[] = {
    {Py_tp_dealloc, exchange_dealloc},
    {Py_tp_traverse, exchange_traverse},
    {Py_tp_clear, exchange_clear},
    {Py_tp_methods, exchange_methods},
    {Py_tp_getset, exchange_getset},
    {Py_tp_doc, (void *)PyDoc_STR(
         "A request Server.open has checked and opened into locked memory, not yet\n"
         "answered: its plaintext never becomes a Python object.")},
    {0, NULL},
};

PyType_Spec hushpy_exchange_spec = {
    .name = "hushcall._core.Exchange",
    .basicsize = sizeof(ExchangeObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = exchange_slots,
};

/* An Exchange owning `x`, keeping `server` alive; `x` is freed on failure. */
static PyObject *wrap_exchange(hushpy_state *st, PyObject *server, hush_server_exchange *x,
                               bool plain)
{
    uint8_t key_id;
    size_t index;
    PyObject *v2_key = hush_server_exchange_v2_key(x, &key_id, &index)
                           ? Py_BuildValue("(in)", (int)key_id, (Py_ssize_t)index)
                           : Py_NewRef(Py_None);
    ExchangeObject *ex = v2_key != NULL ? PyObject_GC_New(ExchangeObject, st->exchange_type)
                                        : NULL;
    if (ex == NULL) {
        Py_XDECREF(v2_key);
        hush_server_exchange_free(x);
        return NULL;
    }
    ex->is_stream = hush_server_exchange_is_stream(x);
    ex->response_nonce = NULL;
    ex->plain = plain;
    ex->exchange = x;
    ex->busy = 0;
    ex->v2_key = v2_key;
    ex->server = Py_NewRef(server);
    PyObject_GC_Track((PyObject *)ex);
    return (PyObject *)ex;
}

/* Open a v2 request with the GIL released, into an Exchange. */
static PyObject *open_v2(hushpy_state *st, PyObject *server, const hush_server_v2_request *req)
{
    hush_server_exchange *x = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_open_v2(((ServerObject *)server)->server, req, &x, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    return wrap_exchange(st, server, x, false);
}

static PyObject *server_open(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    Py_buffer package;
    hush_server_request req;
    if (request_args(self, args, kwargs, "y*OO|O$p:open", &package, &req) < 0)
        return NULL;
    hush_server_exchange *x = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_open(self->server, &req, &x, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&package);
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    return wrap_exchange(st, op, x, false);
}

/* open_v2()'s keys, a tuple of (key_id, HpkeKeypair), as the core's
 * (borrowed from `seq`, an immutable tuple the caller keeps alive while the
 * GIL is released); -1 with an exception set. */
static int v2_keys_arg(hushpy_state *st, PyObject *seq, hush_server_v2_key *keys)
{
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *pair;
        int key_id;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "iO", &key_id, &pair) ||
            key_id < 0 || key_id > 255) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "keys must be (key_id 0..255, HpkeKeypair) pairs");
            return -1;
        }
        if ((keys[i].keypair = hushpy_hpke_keypair_get(st, pair)) == NULL)
            return -1;
        keys[i].key_id = (uint8_t)key_id;
    }
    return 0;
}

/* A header value: str (ASCII hex is checked by the core) or None. */
static int header_arg(PyObject *obj, const char *name, const char **text, size_t *len)
{
    if (hushpy_str_option(obj, name, text) < 0)
        return -1;
    *len = *text != NULL ? strlen(*text) : 0;
    return 0;
}

static PyObject *server_open_v2(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"encapsulated_key", "body", "keys", "key_config", "path", NULL};
    PyObject *enc_obj, *keys_obj, *hdr_obj = Py_None, *path = Py_None, *seq = NULL;
    PyObject *result = NULL;
    Py_buffer body = {0};
    hush_server_v2_key *keys = NULL;
    hush_server_v2_request req = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy*O|OO:open_v2", keywords, &enc_obj, &body,
                                     &keys_obj, &hdr_obj, &path))
        return NULL;
    if (self->server == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Server was not initialised");
        goto cleanup;
    }
    if (header_arg(enc_obj, "encapsulated_key", &req.encapsulated_key,
                   &req.encapsulated_key_len) < 0 ||
        header_arg(hdr_obj, "key_config", &req.key_config, &req.key_config_len) < 0 ||
        hushpy_str_option(path, "path", &req.path) < 0 ||
        (seq = PySequence_Tuple(keys_obj)) == NULL) /* a list could change without the GIL */
        goto cleanup;
    req.key_count = (size_t)PySequence_Fast_GET_SIZE(seq);
    if ((keys = PyMem_Calloc(req.key_count + 1, sizeof *keys)) == NULL) {
        PyErr_NoMemory();
        goto cleanup;
    }
    if (v2_keys_arg(st, seq, keys) < 0)
        goto cleanup;
    req.keys = keys;
    req.body = body.buf;
    req.body_len = (size_t)body.len;
    result = open_v2(st, op, &req);
cleanup:
    PyMem_Free(keys);
    Py_XDECREF(seq);
    PyBuffer_Release(&body);
    return result;
}

static PyObject *server_open_plaintext(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"path", "body", NULL};
    PyObject *path_obj;
    const char *path;
    Py_buffer body = {0};
    hush_server_exchange *x = NULL;
    hush_error err;
    hush_status status;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy*:open_plaintext", keywords, &path_obj,
                                     &body))
        return NULL;
    if (hushpy_str_option(path_obj, "path", &path) < 0 || self->server == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "Server was not initialised");
        PyBuffer_Release(&body);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_open_plaintext(self->server, path, body.buf, (size_t)body.len, &x, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&body);
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    return wrap_exchange(st, op, x, true);
}

static PyObject *server_models(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    hush_secbuf *answer = NULL;
    hush_error err;
    hush_status status;
    if (self->server == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Server was not initialised");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_models(self->server, &answer, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);
    PyObject *result = PyBytes_FromStringAndSize((const char *)hush_secbuf_bytes(answer),
                                                 (Py_ssize_t)hush_secbuf_len(answer));
    hush_secbuf_free(answer);
    return result;
}

static PyMethodDef server_methods[] = {
    {"handle", (PyCFunction)(void (*)(void))server_handle, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("handle($self, /, package, public_key, payload_id, security_tier=None, *,\n"
               "       attest=False)\n--\n\n"
               "Answer one sealed request (GIL released): open it with the server key,\n"
               "run the backend, seal the answer to public_key (the percent-decoded\n"
               "X-Public-Key PEM), quoting it with the server's TPM when attest is true.\n"
               "Returns the sealed answer and the core's timings\n"
               "(open_ms, backend_ms, seal_ms, upstream_status). A failure raises the\n"
               "usual hushcall exception with http_status set to the status to answer;\n"
               "its message is safe to send back. A str argument that is not UTF-8\n"
               "text (a lone surrogate) raises ValueError naming it.")},
    {"open", (PyCFunction)(void (*)(void))server_open, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("open($self, /, package, public_key, payload_id, security_tier=None, *,\n"
               "     attest=False)\n--\n\n"
               "The first half of handle (GIL released): check the request and open it\n"
               "into locked memory. Returns an Exchange, whose replay_key a gateway\n"
               "looks up before it calls answer(). Arguments and failures as handle's.")},
    {"models", server_models, METH_NOARGS,
     PyDoc_STR("models($self, /)\n--\n\n"
               "GET /v1/models's answer, in plaintext (GIL released): the echo's model\n"
               "list, or the upstream's own, as JSON bytes. Failures raise with\n"
               "http_status (503, 504, 502).")},
    {"open_plaintext", (PyCFunction)(void (*)(void))server_open_plaintext,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("open_plaintext($self, /, path, body)\n--\n\n"
               "A plaintext request (the gateway's --allow-plaintext, for comparison only:\n"
               "its plaintext is in Python's heap) at `path` (\"/v1/...\"), through the same\n"
               "backend and stream as a sealed one. Returns an Exchange whose answer()\n"
               "gives ((zeros hex, the JSON answer), timings) and whose stream() emits\n"
               "each event in plaintext. Failures raise with http_status: 404 for a\n"
               "path the backend does not answer, 400 for a body not a JSON object.")},
    {"open_v2", (PyCFunction)(void (*)(void))server_open_v2, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("open_v2($self, /, encapsulated_key, body, keys, key_config=None,\n"
               "        path=None)\n--\n\n"
               "Check and open a v2 request (GIL released) into locked memory: the\n"
               "Ehbp-Encapsulated-Key and optional Hushcall-Key-Config header values\n"
               "(str), the framed body, and the live keys as (key_id, HpkeKeypair)\n"
               "pairs, newest first. Returns an Exchange whose answer() gives\n"
               "((nonce hex, frames), timings). Failures raise with http_status: 422\n"
               "for an unknown or expired key, 400 (one message) for anything malformed\n"
               "or that fails to open, 413 over max_package_bytes, 404 for a path the\n"
               "backend does not answer (path: \"/v1/...\", None for chat completions).")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot server_slots[] = {
    {Py_tp_init, server_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, server_dealloc},
    {Py_tp_methods, server_methods},
    {Py_tp_doc, (void *)PyDoc_STR(
         "Server(key, *, backend='echo', upstream_url=None, upstream_api_key=None,\n"
         "       upstream_ca_file=None, upstream_timeout=None, upstream_connect_timeout=None,\n"
         "       max_package_bytes=None, max_answer_bytes=None, server_name=None,\n"
         "       secure_memory=True, tpm=None, allow_http_upstream=False, echo_delay_ms=0)\n"
         "--\n\n"
         "The server role of protocols v1 and v2 (hush_server): what the gateway runs each\n"
         "request through. Immutable and thread-safe.")},
    {0, NULL},
};

PyType_Spec hushpy_server_spec = {
    .name = "hushcall._core.Server",
    .basicsize = sizeof(ServerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = server_slots,
};
