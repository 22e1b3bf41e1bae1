/* server.c — Server: the server role of protocol v1 (hush_server, server.h)
 * for the gateway. Python hands it the sealed request as it came off the
 * wire and gets the sealed answer back; the plaintext between the two never
 * becomes a Python object. handle() runs with the GIL released, so a pool
 * of threads answers requests in parallel. */
#include "hushpy.h"

#include <math.h>
#include <string.h>

#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

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
                        "allow_http_upstream", NULL};
    PyObject *key_obj, *backend_obj = NULL, *url = Py_None, *api_key = Py_None, *ca = Py_None;
    PyObject *timeout = Py_None, *connect_timeout = Py_None, *max_package = Py_None;
    PyObject *max_answer = Py_None, *name = Py_None, *tpm = Py_None;
    int secure_memory = 1, allow_http_upstream = 0;
    if (self->server != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Server is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$UOOOOOOOOpOp:Server", keywords, &key_obj,
                                     &backend_obj, &url, &api_key, &ca, &timeout,
                                     &connect_timeout, &max_package, &max_answer, &name,
                                     &secure_memory, &tpm, &allow_http_upstream))
        return -1;

    hush_server_options o;
    hush_server_options_init(&o);
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

static PyObject *server_handle(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ServerObject *self = (ServerObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"package", "public_key", "payload_id", "security_tier", NULL};
    Py_buffer package;
    PyObject *public_key_obj, *payload_id_obj, *tier_obj = Py_None;
    const char *public_key, *payload_id, *tier;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*OO|O:handle", keywords, &package,
                                     &public_key_obj, &payload_id_obj, &tier_obj))
        return NULL;
    /* Header values: one that is not UTF-8 text is a ValueError naming the
     * header, never the codec's message quoting it. */
    if (hushpy_str_option(public_key_obj, "public_key", &public_key) < 0 ||
        hushpy_str_option(payload_id_obj, "payload_id", &payload_id) < 0 ||
        hushpy_str_option(tier_obj, "security_tier", &tier) < 0) {
        PyBuffer_Release(&package);
        return NULL;
    }
    if (self->server == NULL) {
        PyBuffer_Release(&package);
        PyErr_SetString(PyExc_RuntimeError, "Server was not initialised");
        return NULL;
    }

    hush_server_request req = {
        .package = package.buf,
        .package_len = (size_t)package.len,
        .client_public_key = public_key,
        .client_public_key_len = public_key != NULL ? strlen(public_key) : 0,
        .payload_id = payload_id,
        .security_tier = tier,
    };
    hush_server_answer answer = {0};
    hush_error err;
    hush_status status;
    /* The arguments stay alive in the caller's frame; the buffer is held. */
    Py_BEGIN_ALLOW_THREADS
    status = hush_server_handle(self->server, &req, &answer, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&package);
    if (status != HUSH_OK)
        return raise_for_gateway(st, status, &err);

    PyObject *result = NULL;
    PyObject *sealed = PyBytes_FromStringAndSize((const char *)hush_secbuf_data(answer.package),
                                                 (Py_ssize_t)hush_secbuf_len(answer.package));
    PyObject *times = timings(&answer);
    if (sealed != NULL && times != NULL)
        result = PyTuple_Pack(2, sealed, times);
    Py_XDECREF(sealed);
    Py_XDECREF(times);
    hush_server_answer_clear(&answer);
    return result;
}

static PyMethodDef server_methods[] = {
    {"handle", (PyCFunction)(void (*)(void))server_handle, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("handle(package, public_key, payload_id, security_tier=None) -> (bytes, dict)\n--\n\n"
               "Answer one sealed request (GIL released): open it with the server key,\n"
               "run the backend, seal the answer to public_key (the percent-decoded\n"
               "X-Public-Key PEM). Returns the sealed answer and the core's timings\n"
               "(open_ms, backend_ms, seal_ms, upstream_status). A failure raises the\n"
               "usual hushcall exception with http_status set to the status to answer;\n"
               "its message is safe to send back. A str argument that is not UTF-8\n"
               "text (a lone surrogate) raises ValueError naming it.")},
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
         "       secure_memory=True, tpm=None, allow_http_upstream=False)\n\n"
         "The server role of protocol v1 (hush_server): what the gateway runs each\n"
         "request through. Immutable and thread-safe.")},
    {0, NULL},
};

PyType_Spec hushpy_server_spec = {
    .name = "hushcall._core.Server",
    .basicsize = sizeof(ServerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = server_slots,
};
