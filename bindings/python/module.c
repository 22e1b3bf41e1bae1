/* module.c — hushcall._core: multi-phase initialisation, the module state that
 * holds every type and exception class (no C statics that change), the one
 * table mapping hush_status to an exception class, and the module functions.
 *
 * The exception classes are written in Python (python/hushcall/errors.py) so
 * that they keep NOMYO's constructors and __str__; this file only decides which
 * class each status raises, in exactly one place. */
#include "hushpy.h"

#include <string.h>

/* ---- the error mapping --------------------------------------------------- */

/* Names in python/hushcall/errors.py, in hushpy_exc order. */
static const char *const hushpy_exc_names[HUSHPY_EXC_COUNT] = {
    [HUSHPY_EXC_BASE] = "HushcallError",
    [HUSHPY_EXC_API] = "APIError",
    [HUSHPY_EXC_AUTHENTICATION] = "AuthenticationError",
    [HUSHPY_EXC_INVALID_REQUEST] = "InvalidRequestError",
    [HUSHPY_EXC_FORBIDDEN] = "ForbiddenError",
    [HUSHPY_EXC_RATE_LIMIT] = "RateLimitError",
    [HUSHPY_EXC_SERVER] = "ServerError",
    [HUSHPY_EXC_UNAVAILABLE] = "ServiceUnavailableError",
    [HUSHPY_EXC_CONNECTION] = "APIConnectionError",
    [HUSHPY_EXC_TIMEOUT] = "APITimeoutError",
    [HUSHPY_EXC_CIRCUIT_OPEN] = "CircuitOpenError",
    [HUSHPY_EXC_SECURITY] = "SecurityError",
    [HUSHPY_EXC_INVALID_ARGUMENT] = "InvalidArgumentError",
    [HUSHPY_EXC_MALFORMED_JSON] = "MalformedJSONError",
    [HUSHPY_EXC_SECURE_MEMORY] = "SecureMemoryError",
    [HUSHPY_EXC_CANCELLED] = "CallCancelledError",
    [HUSHPY_EXC_INCOMPLETE_STREAM] = "IncompleteStreamError",
    [HUSHPY_EXC_WIPED] = "WipedError",
};

typedef struct hushpy_status_entry {
    const char *name; /* the C enumerator, for tests and messages */
    hushpy_exc exc;   /* exc.kind is the core's hush_status_kind(), as in the Lua binding */
} hushpy_status_entry;

#define ENTRY(status, exc) [HUSH_E_##status] = {"HUSH_E_" #status, HUSHPY_EXC_##exc}

/* THE table: every hush_status to one exception class. Decisions beyond the
 * HTTP statuses (docs in errors.py):
 *   ARGUMENT, TYPE, BASE64 -> InvalidArgumentError (a HushcallError and a ValueError)
 *   JSON                   -> MalformedJSONError (a HushcallError and a ValueError; .offset)
 *   NOMEM                  -> SecureMemoryError (a HushcallError and a MemoryError)
 *   LIMIT                  -> InvalidRequestError, status_code None: refused before any I/O
 *   KEY, PASSWORD, PERMISSIONS, CRYPTO, FORMAT, UNSUPPORTED, AUTH, PIN,
 *   ATTESTATION            -> SecurityError
 *   TIMEOUT                -> APITimeoutError, CIRCUIT_OPEN -> CircuitOpenError (both
 *                             APIConnectionErrors), TLS -> APIConnectionError
 *   CANCELLED              -> CallCancelledError (not asyncio.CancelledError: the engine
 *                             shutting down is not this task being cancelled; the asyncio
 *                             layer raises asyncio's own when it cancelled the call itself)
 *   TRUNCATED              -> IncompleteStreamError (a SecurityError: a stream cut short)
 *   NOT_FOUND, IO, EXISTS, INTERNAL -> HushcallError */
static const hushpy_status_entry hushpy_status_table[] = {
    [HUSH_OK] = {"HUSH_OK", HUSHPY_EXC_BASE}, /* never raised */
    ENTRY(ARGUMENT, INVALID_ARGUMENT),
    ENTRY(NOMEM, SECURE_MEMORY),
    ENTRY(LIMIT, INVALID_REQUEST),
    ENTRY(JSON, MALFORMED_JSON),
    ENTRY(TYPE, INVALID_ARGUMENT),
    ENTRY(NOT_FOUND, BASE),
    ENTRY(BASE64, INVALID_ARGUMENT),
    ENTRY(KEY, SECURITY),
    ENTRY(PASSWORD, SECURITY),
    ENTRY(PERMISSIONS, SECURITY),
    ENTRY(IO, BASE),
    ENTRY(EXISTS, BASE),
    ENTRY(CRYPTO, SECURITY),
    ENTRY(FORMAT, SECURITY),
    ENTRY(UNSUPPORTED, SECURITY),
    ENTRY(AUTH, SECURITY),
    ENTRY(PIN, SECURITY),
    ENTRY(ATTESTATION, SECURITY),
    ENTRY(BAD_REQUEST, INVALID_REQUEST),
    ENTRY(UNAUTHORIZED, AUTHENTICATION),
    ENTRY(FORBIDDEN, FORBIDDEN),
    ENTRY(RATE_LIMITED, RATE_LIMIT),
    ENTRY(SERVER, SERVER),
    ENTRY(UNAVAILABLE, UNAVAILABLE),
    ENTRY(HTTP, API),
    ENTRY(CONNECTION, CONNECTION),
    ENTRY(TIMEOUT, TIMEOUT),
    ENTRY(TLS, CONNECTION),
    ENTRY(CIRCUIT_OPEN, CIRCUIT_OPEN),
    ENTRY(CANCELLED, CANCELLED),
    ENTRY(TRUNCATED, INCOMPLETE_STREAM),
    ENTRY(INTERNAL, BASE),
};
#undef ENTRY

#define HUSHPY_STATUS_COUNT (sizeof hushpy_status_table / sizeof hushpy_status_table[0])
/* A status added to error.h after HUSH_E_INTERNAL must be added above. */
_Static_assert(HUSHPY_STATUS_COUNT == (size_t)HUSH_E_INTERNAL + 1,
               "hushpy_status_table must map every hush_status");

static const hushpy_status_entry *status_entry(hush_status status)
{
    if ((size_t)status >= HUSHPY_STATUS_COUNT || hushpy_status_table[status].name == NULL)
        return NULL;
    return &hushpy_status_table[status];
}

/* Build and raise `cls(message, ...)`, then set kind/offset. For APIError and
 * its subclasses the NOMYO signature (message, status_code, error_details). */
static PyObject *raise_class(hushpy_state *st, PyObject *cls, const char *kind,
                             const char *message, int http_status, int64_t offset,
                             PyObject *error_details)
{
    PyObject *msg = NULL, *args = NULL, *kwargs = NULL, *exc = NULL, *value = NULL;

    /* Messages are ASCII in practice; a name cut mid-character by the
     * 256-byte limit must not turn into a second error. */
    msg = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
    if (msg == NULL)
        goto done;
    args = PyTuple_Pack(1, msg);
    if (args == NULL)
        goto done;
    int is_api = PyObject_IsSubclass(cls, st->exc[HUSHPY_EXC_API]);
    if (is_api < 0)
        goto done;
    if (is_api) {
        kwargs = PyDict_New();
        if (kwargs == NULL)
            goto done;
        if (http_status != 0) {
            value = PyLong_FromLong(http_status);
            if (value == NULL)
                goto done;
        } else {
            Py_INCREF(Py_None);
            value = Py_None;
        }
        if (PyDict_SetItemString(kwargs, "status_code", value) < 0)
            goto done;
        if (PyDict_SetItemString(kwargs, "error_details",
                                 error_details != NULL ? error_details : Py_None) < 0)
            goto done;
    }
    exc = PyObject_Call(cls, args, kwargs);
    if (exc == NULL)
        goto done;
    Py_CLEAR(value);
    value = PyUnicode_FromString(kind);
    if (value == NULL || PyObject_SetAttrString(exc, "kind", value) < 0)
        goto done;
    if (offset >= 0) {
        Py_CLEAR(value);
        value = PyLong_FromLongLong(offset);
        if (value == NULL || PyObject_SetAttrString(exc, "offset", value) < 0)
            goto done;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
done:
    Py_XDECREF(msg);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(exc);
    Py_XDECREF(value);
    return NULL;
}

PyObject *hushpy_raise_details(hushpy_state *st, hush_status status, const hush_error *err,
                               PyObject *error_details)
{
    const hushpy_status_entry *entry = status_entry(status);
    if (entry == NULL || status == HUSH_OK) {
        PyErr_Format(PyExc_SystemError, "hushcall: raising for status %d, which is not an error",
                     (int)status);
        return NULL;
    }
    const char *message = err != NULL && err->message[0] != '\0' ? err->message
                                                                 : hush_strerror(status);
    return raise_class(st, st->exc[entry->exc], hush_status_kind(status), message,
                       err != NULL ? err->http_status : 0, err != NULL ? err->offset : -1,
                       error_details);
}

PyObject *hushpy_raise(hushpy_state *st, hush_status status, const hush_error *err)
{
    return hushpy_raise_details(st, status, err, NULL);
}

PyObject *hushpy_raise_wiped(hushpy_state *st, const char *message)
{
    return raise_class(st, st->exc[HUSHPY_EXC_WIPED], "wiped", message, 0, -1, NULL);
}

/* ---- module functions ---------------------------------------------------- */

static int set_item(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *get_memory_protection_info(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (set_item(d, "platform", PyUnicode_FromString(info.platform)) < 0 ||
        set_item(d, "mlock_available", PyBool_FromLong(info.mlock_available)) < 0 ||
        set_item(d, "locked_bytes", PyLong_FromUnsignedLongLong(info.locked_bytes)) < 0 ||
        set_item(d, "lock_failures", PyLong_FromUnsignedLongLong(info.lock_failures)) < 0 ||
        set_item(d, "dump_exclusion", PyBool_FromLong(info.dump_exclusion)) < 0 ||
        set_item(d, "wipe_on_fork", PyBool_FromLong(info.wipe_on_fork)) < 0 ||
        set_item(d, "openssl_secure_heap", PyBool_FromLong(info.openssl_secure_heap)) < 0 ||
        set_item(d, "mapped_bytes", PyLong_FromUnsignedLongLong(info.mapped_bytes)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* Zero a variable's value where the C environment holds it (for a variable
 * set at exec, the block /proc/<pid>/environ shows), then unset it. For
 * secrets read once at start-up, before other threads touch the
 * environment: getenv and unsetenv are not thread-safe. */
static PyObject *wipe_environment_variable(PyObject *module, PyObject *arg)
{
    (void)module;
    const char *name;
    if (hushpy_str_option(arg, "name", &name) < 0)
        return NULL;
    if (name == NULL || name[0] == '\0' || strchr(name, '=') != NULL) {
        PyErr_SetString(PyExc_ValueError, "name must be a variable name");
        return NULL;
    }
    char *value = getenv(name);
    if (value != NULL)
        hush_memzero(value, strlen(value));
    if (unsetenv(name) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* Test hook: raise what the table maps `code` to, as the core would. */
static PyObject *raise_status(PyObject *module, PyObject *args, PyObject *kwargs)
{
    char *keywords[] = {"code", "message", "http_status", "offset", NULL};
    int code, http_status = 0;
    long long offset = -1;
    const char *message = "";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|siL:_raise_status", keywords, &code,
                                     &message, &http_status, &offset))
        return NULL;
    if (code <= HUSH_OK || (size_t)code >= HUSHPY_STATUS_COUNT) {
        PyErr_Format(PyExc_ValueError, "%d is not a hush_status error code", code);
        return NULL;
    }
    hush_error err;
    hush_error_clear(&err);
    err.code = (hush_status)code;
    err.http_status = http_status;
    err.offset = offset;
    snprintf(err.message, sizeof err.message, "%s", message);
    return hushpy_raise(PyModule_GetState(module), (hush_status)code, &err);
}

/* Test hook: the table as [(code, "HUSH_E_...", kind, class), ...]. */
static PyObject *status_table(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    hushpy_state *st = PyModule_GetState(module);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (size_t i = 1; i < HUSHPY_STATUS_COUNT; i++) {
        const hushpy_status_entry *e = &hushpy_status_table[i];
        PyObject *row = Py_BuildValue("(nssO)", (Py_ssize_t)i, e->name,
                                      hush_status_kind((hush_status)i), st->exc[e->exc]);
        if (row == NULL || PyList_Append(list, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(row);
    }
    return list;
}

static PyMethodDef hushpy_methods[] = {
    {"get_memory_protection_info", get_memory_protection_info, METH_NOARGS,
     PyDoc_STR("get_memory_protection_info($module, /)\n--\n\n"
               "Process-wide figures about hushcall's secure memory: whether mlock works,\n"
               "bytes locked and mapped now, lock failures so far, dump exclusion,\n"
               "wipe-on-fork and OpenSSL's secure heap.")},
    {"wipe_environment_variable", wipe_environment_variable, METH_O,
     PyDoc_STR("wipe_environment_variable($module, name, /)\n--\n\n"
               "Zero the variable's value in the C environment (the block\n"
               "/proc/<pid>/environ shows, for one set at exec) and unset it. os.environ\n"
               "keeps its own copy: pop that too. Call it before other threads run.")},
    {"encode", (PyCFunction)(void (*)(void))hushpy_encode, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("encode($module, /, obj, *, max_bytes=10485760, max_depth=64)\n--\n\n"
               "Serialize dicts, lists, tuples, str, int, float, bool and None as compact\n"
               "JSON straight into locked memory. TypeError/ValueError name the path of a\n"
               "value that cannot be written; InvalidRequestError when over max_bytes.")},
    {"decode", (PyCFunction)(void (*)(void))hushpy_decode, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("decode($module, /, data, *, max_bytes=16777216, max_depth=64)\n--\n\n"
               "Parse JSON from a SecureBuffer (or any bytes-like object) into a document\n"
               "in locked memory and return a Response view over it.")},
    {"hpke_pubkey_fingerprint", (PyCFunction)(void (*)(void))hushpy_hpke_pubkey_fingerprint,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("hpke_pubkey_fingerprint($module, /, kem, public_bytes)\n--\n\n"
               "\"sha256:<hex>\" of an HPKE public key, as HpkeKeypair.fingerprint gives\n"
               "it; SecurityError when the bytes are not a valid key for the KEM.")},
    {"v2_key_configs", (PyCFunction)(void (*)(void))hushpy_v2_key_configs,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("v2_key_configs($module, /, keys, *, bare=False)\n--\n\n"
               "The RFC 9458 key configs of (key_id, HpkeKeypair) pairs as a gateway\n"
               "publishes them (docs/protocol-v2.md): X25519 with EHBP's one suite,\n"
               "X-Wing with ChaCha20-Poly1305 then AES-256-GCM. The list form (each\n"
               "config after its 2-byte length), or with bare=True exactly one config.")},
    {"_raise_status", (PyCFunction)(void (*)(void))raise_status, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("_raise_status($module, /, code, message='', http_status=0, offset=-1)\n--\n\n"
               "Test hook: raise the exception a hush_status maps to.")},
    {"_status_table", status_table, METH_NOARGS,
     PyDoc_STR("_status_table($module, /)\n--\n\n"
               "Test hook: the hush_status -> exception class table.")},
    {NULL, NULL, 0, NULL},
};

/* ---- state and initialisation -------------------------------------------- */

static int hushpy_traverse(PyObject *module, visitproc visit, void *arg)
{
    hushpy_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_VISIT(st->secure_buffer_type);
    Py_VISIT(st->document_type);
    Py_VISIT(st->response_type);
    Py_VISIT(st->response_iter_type);
    Py_VISIT(st->zstr_type);
    Py_VISIT(st->client_type);
    Py_VISIT(st->engine_type);
    Py_VISIT(st->call_type);
    Py_VISIT(st->stream_type);
    Py_VISIT(st->keypair_type);
    Py_VISIT(st->server_type);
    Py_VISIT(st->exchange_type);
    Py_VISIT(st->replay_cache_type);
    Py_VISIT(st->tpm_type);
    Py_VISIT(st->hpke_keypair_type);
    Py_VISIT(st->response_attrs);
    Py_VISIT(st->stream_end);
    for (int i = 0; i < HUSHPY_EXC_COUNT; i++)
        Py_VISIT(st->exc[i]);
    return 0;
}

static int hushpy_clear(PyObject *module)
{
    hushpy_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_CLEAR(st->secure_buffer_type);
    Py_CLEAR(st->document_type);
    Py_CLEAR(st->response_type);
    Py_CLEAR(st->response_iter_type);
    Py_CLEAR(st->zstr_type);
    Py_CLEAR(st->client_type);
    Py_CLEAR(st->engine_type);
    Py_CLEAR(st->call_type);
    Py_CLEAR(st->stream_type);
    Py_CLEAR(st->keypair_type);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->exchange_type);
    Py_CLEAR(st->replay_cache_type);
    Py_CLEAR(st->tpm_type);
    Py_CLEAR(st->hpke_keypair_type);
    Py_CLEAR(st->response_attrs);
    Py_CLEAR(st->stream_end);
    for (int i = 0; i < HUSHPY_EXC_COUNT; i++)
        Py_CLEAR(st->exc[i]);
    return 0;
}

static void hushpy_free(void *module)
{
    hushpy_clear((PyObject *)module);
}

static int load_exceptions(hushpy_state *st)
{
    PyObject *errors = PyImport_ImportModule("hushcall.errors");
    if (errors == NULL)
        return -1;
    for (int i = 0; i < HUSHPY_EXC_COUNT; i++) {
        PyObject *cls = PyObject_GetAttrString(errors, hushpy_exc_names[i]);
        if (cls == NULL) {
            Py_DECREF(errors);
            return -1;
        }
        if (!PyExceptionClass_Check(cls) ||
            (i != HUSHPY_EXC_BASE && PyObject_IsSubclass(cls, st->exc[HUSHPY_EXC_BASE]) != 1)) {
            PyErr_Format(PyExc_ImportError,
                         "hushcall.errors.%s must be a subclass of HushcallError",
                         hushpy_exc_names[i]);
            Py_DECREF(cls);
            Py_DECREF(errors);
            return -1;
        }
        st->exc[i] = cls;
    }
    Py_DECREF(errors);
    return 0;
}

/* The names Response answers itself; anything else is looked up as a JSON
 * member. Computed once: the type is immutable. */
static int load_response_attrs(hushpy_state *st)
{
    PyObject *names = PyObject_Dir((PyObject *)st->response_type);
    if (names == NULL)
        return -1;
    st->response_attrs = PyFrozenSet_New(names);
    Py_DECREF(names);
    return st->response_attrs == NULL ? -1 : 0;
}

/* Every hush_status has a row in the table (a gap would raise the base class
 * silently). */
static int exec_check_status_table(PyObject *module)
{
    (void)module;
    for (size_t i = 1; i < HUSHPY_STATUS_COUNT; i++) {
        if (hushpy_status_table[i].name == NULL) {
            PyErr_Format(PyExc_SystemError, "hush_status %zu has no exception class", i);
            return -1;
        }
    }
    return 0;
}

static int exec_exceptions(PyObject *module)
{
    return load_exceptions(PyModule_GetState(module));
}

/* Make the type from `spec`, add it to the module and keep it in `*slot`. */
static int add_type_to(PyObject *module, PyTypeObject **slot, PyType_Spec *spec,
                       PyObject *base)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, base);
    if (*slot == NULL)
        return -1;
    return PyModule_AddType(module, *slot); /* a new reference: the state keeps ours */
}

static int exec_types(PyObject *module)
{
    hushpy_state *st = PyModule_GetState(module);
    if (add_type_to(module, &st->secure_buffer_type, &hushpy_secure_buffer_spec, NULL) < 0 ||
        add_type_to(module, &st->document_type, &hushpy_document_spec, NULL) < 0 ||
        add_type_to(module, &st->response_type, &hushpy_response_spec, NULL) < 0 ||
        add_type_to(module, &st->response_iter_type, &hushpy_response_iter_spec, NULL) < 0 ||
        add_type_to(module, &st->zstr_type, &hushpy_zstr_spec, (PyObject *)&PyUnicode_Type) < 0 ||
        add_type_to(module, &st->client_type, &hushpy_client_spec, NULL) < 0 ||
        add_type_to(module, &st->engine_type, &hushpy_engine_spec, NULL) < 0 ||
        add_type_to(module, &st->call_type, &hushpy_call_spec, NULL) < 0 ||
        add_type_to(module, &st->stream_type, &hushpy_stream_spec, NULL) < 0 ||
        add_type_to(module, &st->keypair_type, &hushpy_keypair_spec, NULL) < 0 ||
        add_type_to(module, &st->server_type, &hushpy_server_spec, NULL) < 0 ||
        add_type_to(module, &st->exchange_type, &hushpy_exchange_spec, NULL) < 0 ||
        add_type_to(module, &st->replay_cache_type, &hushpy_replay_cache_spec, NULL) < 0 ||
        add_type_to(module, &st->tpm_type, &hushpy_tpm_spec, NULL) < 0 ||
        add_type_to(module, &st->hpke_keypair_type, &hushpy_hpke_keypair_spec, NULL) < 0)
        return -1;
    return load_response_attrs(st);
}

/* STREAM_END, a unique object: what Call.next_chunk() returns once a stream
 * ended complete (None means "no chunk yet"). */
static int exec_stream_end(PyObject *module)
{
    hushpy_state *st = PyModule_GetState(module);
    st->stream_end = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (st->stream_end == NULL)
        return -1;
    Py_INCREF(st->stream_end);
    if (PyModule_AddObject(module, "STREAM_END", st->stream_end) < 0) {
        Py_DECREF(st->stream_end);
        return -1;
    }
    return 0;
}

static int exec_constants(PyObject *module)
{
    if (PyModule_AddStringConstant(module, "__version__", HUSHCALL_VERSION) < 0 ||
        PyModule_AddIntConstant(module, "DEFAULT_MAX_REQUEST_BYTES",
                                HUSH_DEFAULT_MAX_REQUEST_BYTES) < 0 ||
        PyModule_AddIntConstant(module, "DEFAULT_MAX_RESPONSE_BYTES",
                                HUSH_JSON_DEFAULT_MAX_BYTES) < 0 ||
        PyModule_AddIntConstant(module, "DEFAULT_MAX_DEPTH", HUSH_JSON_DEFAULT_MAX_DEPTH) < 0 ||
        PyModule_AddIntConstant(module, "MAX_DEPTH_LIMIT", HUSH_JSON_MAX_DEPTH_LIMIT) < 0 ||
        PyModule_AddIntConstant(module, "HPKE_KEM_X25519_SHA256", HUSH_HPKE_KEM_X25519_SHA256) < 0 ||
        PyModule_AddIntConstant(module, "HPKE_KEM_XWING", HUSH_HPKE_KEM_XWING) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot hushpy_slots[] = {
    /* In order: the exception classes before the types that raise them. */
    {Py_mod_exec, exec_check_status_table},
    {Py_mod_exec, exec_exceptions},
    {Py_mod_exec, exec_types},
    {Py_mod_exec, exec_constants},
    {Py_mod_exec, exec_stream_end},
    {Py_mod_exec, hushpy_attest_exec},
#ifdef Py_mod_multiple_interpreters
    /* The core is reentrant and keeps no per-interpreter state. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* A free-threaded CPython keeps the GIL on while this module is loaded.
     * The core is thread-safe, but some of these objects' own fields are
     * guarded only by the GIL: SecureBuffer's and _Document's pin counts and
     * _Document's wipe_pending (pin, unpin and wipe each read-then-write them),
     * Call's, Stream's and Exchange's busy counts and deferred frees, and Engine's
     * handle and inflight set (close() clears them while submit() and
     * drain() use them). Declaring Py_MOD_GIL_NOT_USED needs each of those
     * under a per-object lock (Py_BEGIN_CRITICAL_SECTION) first. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef hushpy_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hushcall._core",
    .m_doc = "The C core of hushcall: secure-memory JSON in and out of Python.",
    .m_size = sizeof(hushpy_state),
    .m_methods = hushpy_methods,
    .m_slots = hushpy_slots,
    .m_traverse = hushpy_traverse,
    .m_clear = hushpy_clear,
    .m_free = hushpy_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&hushpy_module);
}

int hushpy_check_limits(Py_ssize_t max_bytes, int max_depth)
{
    if (max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "max_bytes must be at least 1");
        return -1;
    }
    if (max_depth < 1 || max_depth > (int)HUSH_JSON_MAX_DEPTH_LIMIT) {
        PyErr_Format(PyExc_ValueError, "max_depth must be between 1 and %u",
                     HUSH_JSON_MAX_DEPTH_LIMIT);
        return -1;
    }
    return 0;
}

int hushpy_str_option(PyObject *obj, const char *name, const char **out)
{
    *out = NULL;
    if (obj == NULL || obj == Py_None)
        return 0;
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str or None, not %.200s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        /* A lone surrogate (an undecodable header byte, say): the codec's
         * message would quote the text, so name the field only. */
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s is not valid UTF-8 text", name);
        return -1;
    }
    if (s == NULL)
        return -1;
    if ((size_t)len != strlen(s)) {
        PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters", name);
        return -1;
    }
    *out = s;
    return 0;
}
