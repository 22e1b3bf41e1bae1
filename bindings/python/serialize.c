/* serialize.c — encode(): a request walked in C and written as compact JSON
 * straight into a locked hush_secbuf, and SecureBuffer, the object that owns
 * the result until a call consumes it or it is wiped.
 *
 * No Python code runs during the walk (subclasses of dict are the one
 * exception: their items() is honoured, as json.dumps does), and no copy of a
 * string is made in the interpreter's heap: ASCII strings and strings whose
 * UTF-8 form is already cached are read in place; others are encoded into a
 * locked scratch buffer that is zeroed after every string, so the walk never
 * leaves a UTF-8 cache behind in the caller's objects. Paths for error
 * messages ("messages[2].content") are built only when an error is raised. */
#include "hushpy.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#define ENCODE_FIRST_CAPACITY 4096u

/* ---- SecureBuffer -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    hush_secbuf *buf; /* NULL once wiped or taken */
    pid_t pid;        /* the process whose secure memory holds the bytes */
    Py_ssize_t pins;  /* readers that released the GIL (decode); wipe() waits for none */
} SecureBufferObject;

static hushpy_state *buffer_state(PyObject *self)
{
    return PyType_GetModuleState(Py_TYPE(self));
}

/* 0 when the bytes can be used; -1 with WipedError set otherwise. */
static int buffer_check(SecureBufferObject *self)
{
    if (self->buf == NULL) {
        hushpy_raise_wiped(buffer_state((PyObject *)self),
                           "this SecureBuffer was wiped or consumed; its bytes are gone");
        return -1;
    }
    if (self->pid != getpid()) {
        /* MADV_WIPEONFORK has zeroed the child's copy of the region. */
        hushpy_raise_wiped(buffer_state((PyObject *)self),
                           "this SecureBuffer belongs to the parent process: secure memory is "
                           "not inherited across fork()");
        return -1;
    }
    return 0;
}

static void buffer_release(SecureBufferObject *self)
{
    hush_secbuf *buf = self->buf;
    self->buf = NULL;
    hush_secbuf_free(buf); /* zeroes, then unmaps */
}

static void buffer_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    buffer_release((SecureBufferObject *)op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static Py_ssize_t buffer_length(PyObject *op)
{
    SecureBufferObject *self = (SecureBufferObject *)op;
    if (buffer_check(self) < 0)
        return -1;
    return (Py_ssize_t)hush_secbuf_len(self->buf);
}

static PyObject *buffer_wipe(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SecureBufferObject *self = (SecureBufferObject *)op;
    if (self->pins > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "this SecureBuffer is being read by decode() in another thread");
        return NULL;
    }
    buffer_release(self);
    Py_RETURN_NONE;
}

static PyObject *buffer_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(op);
    return op;
}

static PyObject *buffer_exit(PyObject *op, PyObject *Py_UNUSED(args))
{
    PyObject *r = buffer_wipe(op, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

/* Deliberately named: the one way to copy the plaintext into Python bytes. */
static PyObject *buffer_unsafe_bytes(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SecureBufferObject *self = (SecureBufferObject *)op;
    if (buffer_check(self) < 0)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)hush_secbuf_data(self->buf),
                                     (Py_ssize_t)hush_secbuf_len(self->buf));
}

static PyObject *buffer_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    (void)op;
    PyErr_SetString(PyExc_TypeError,
                    "a SecureBuffer cannot be pickled or copied: its bytes stay in locked memory");
    return NULL;
}

static PyObject *buffer_get_locked(PyObject *op, void *Py_UNUSED(closure))
{
    SecureBufferObject *self = (SecureBufferObject *)op;
    return PyBool_FromLong(self->buf != NULL && hush_secbuf_is_locked(self->buf));
}

static PyObject *buffer_get_wiped(PyObject *op, void *Py_UNUSED(closure))
{
    SecureBufferObject *self = (SecureBufferObject *)op;
    return PyBool_FromLong(self->buf == NULL || self->pid != getpid());
}

static PyObject *buffer_repr(PyObject *op)
{
    SecureBufferObject *self = (SecureBufferObject *)op;
    if (self->buf == NULL || self->pid != getpid())
        return PyUnicode_FromString("<hushcall.SecureBuffer (wiped)>");
    return PyUnicode_FromFormat("<hushcall.SecureBuffer len=%zu locked=%s>",
                                hush_secbuf_len(self->buf),
                                hush_secbuf_is_locked(self->buf) ? "True" : "False");
}

static PyMethodDef buffer_methods[] = {
    {"wipe", buffer_wipe, METH_NOARGS,
     PyDoc_STR("wipe($self, /)\n--\n\nZero and release the bytes. Idempotent.")},
    {"_unsafe_bytes", buffer_unsafe_bytes, METH_NOARGS,
     PyDoc_STR("_unsafe_bytes($self, /)\n--\n\n"
               "Copy the bytes into an ordinary bytes object (tests only: the copy is not "
               "locked or zeroed).")},
    {"__enter__", buffer_enter, METH_NOARGS, PyDoc_STR("__enter__($self, /)\n--\n\n")},
    {"__exit__", buffer_exit, METH_VARARGS,
     PyDoc_STR("__exit__($self, /, *exc_info)\n--\n\nWipe.")},
    {"__reduce__", buffer_reduce, METH_NOARGS, PyDoc_STR("__reduce__($self, /)\n--\n\n")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef buffer_getset[] = {
    {"locked", buffer_get_locked, NULL, PyDoc_STR("True when the bytes are mlock'ed."), NULL},
    {"wiped", buffer_get_wiped, NULL, PyDoc_STR("True once the bytes are gone."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot buffer_slots[] = {
    {Py_tp_dealloc, buffer_dealloc},
    {Py_tp_repr, buffer_repr},
    {Py_tp_methods, buffer_methods},
    {Py_tp_getset, buffer_getset},
    {Py_mp_length, buffer_length},
    {Py_tp_doc, (void *)PyDoc_STR(
         "An encoded request: compact JSON in locked, guarded memory that is zeroed when\n"
         "wiped or collected. Made by encode(); there is no way to read the bytes back\n"
         "into Python except _unsafe_bytes(), which exists for tests.")},
    {0, NULL},
};

PyType_Spec hushpy_secure_buffer_spec = {
    .name = "hushcall._core.SecureBuffer",
    .basicsize = sizeof(SecureBufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = buffer_slots,
};

static PyObject *buffer_new(hushpy_state *st, hush_secbuf *buf)
{
    SecureBufferObject *self =
        (SecureBufferObject *)st->secure_buffer_type->tp_alloc(st->secure_buffer_type, 0);
    if (self == NULL) {
        hush_secbuf_free(buf);
        return NULL;
    }
    self->buf = buf;
    self->pid = getpid();
    self->pins = 0;
    return (PyObject *)self;
}

bool hushpy_is_secure_buffer(hushpy_state *st, PyObject *obj)
{
    return Py_IS_TYPE(obj, st->secure_buffer_type);
}

int hushpy_secure_buffer_pin(hushpy_state *st, PyObject *obj, const unsigned char **data,
                             size_t *len)
{
    (void)st;
    SecureBufferObject *self = (SecureBufferObject *)obj;
    if (buffer_check(self) < 0)
        return -1;
    self->pins++;
    *data = hush_secbuf_data(self->buf);
    *len = hush_secbuf_len(self->buf);
    return 0;
}

void hushpy_secure_buffer_unpin(PyObject *obj)
{
    ((SecureBufferObject *)obj)->pins--;
}

hush_secbuf *hushpy_secure_buffer_take(hushpy_state *st, PyObject *obj)
{
    if (!hushpy_is_secure_buffer(st, obj)) {
        PyErr_Format(PyExc_TypeError, "expected a SecureBuffer, got %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    SecureBufferObject *self = (SecureBufferObject *)obj;
    if (buffer_check(self) < 0)
        return NULL;
    if (self->pins > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "this SecureBuffer is being read by decode() in another thread");
        return NULL;
    }
    hush_secbuf *buf = self->buf;
    self->buf = NULL;
    return buf;
}

/* ---- the walk ------------------------------------------------------------ */

/* One step of the path from the top-level value: a dict key (borrowed; the
 * walk holds a reference while the step is on the stack) or a list index. */
typedef struct path_step {
    PyObject *key;
    Py_ssize_t index;
} path_step;

typedef struct walker {
    hushpy_state *st;
    hush_json_writer *w;
    hush_secbuf *scratch; /* UTF-8 of non-ASCII strings; zeroed after each */
    size_t max_bytes;
    unsigned max_depth;
    path_step *path;      /* max_depth + 1 steps */
    hush_error err;
} walker;

/* "messages[2].content"; "<root>" for the top-level value. */
static PyObject *path_text(walker *wk, unsigned depth)
{
    if (depth == 0)
        return PyUnicode_FromString("<root>");
    PyObject *parts = PyList_New(0), *part = NULL, *empty = NULL, *text = NULL;
    if (parts == NULL)
        return NULL;
    for (unsigned i = 0; i < depth; i++) {
        const path_step *s = &wk->path[i];
        if (s->key == NULL)
            part = PyUnicode_FromFormat("[%zd]", s->index);
        else if (PyUnicode_IsIdentifier(s->key) == 1)
            part = i == 0 ? (Py_INCREF(s->key), s->key) : PyUnicode_FromFormat(".%U", s->key);
        else
            part = PyUnicode_FromFormat("[%R]", s->key);
        if (part == NULL || PyList_Append(parts, part) < 0)
            goto done;
        Py_CLEAR(part);
    }
    empty = PyUnicode_FromString("");
    if (empty != NULL)
        text = PyUnicode_Join(empty, parts);
done:
    Py_XDECREF(part);
    Py_XDECREF(empty);
    Py_DECREF(parts);
    return text;
}

/* Raise `exc_type("<path>: <detail>")`. Returns -1. */
static int fail_at(walker *wk, unsigned depth, PyObject *exc_type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *detail = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (detail == NULL)
        return -1;
    PyObject *path = path_text(wk, depth);
    if (path != NULL)
        PyErr_Format(exc_type, "%U: %U", path, detail);
    Py_XDECREF(path);
    Py_DECREF(detail);
    return -1;
}

/* A writer call failed: the size limit becomes InvalidRequestError (before
 * anything is sent); anything else goes through the one table. */
static int writer_failed(walker *wk, hush_status status)
{
    if (status == HUSH_E_LIMIT) {
        snprintf(wk->err.message, sizeof wk->err.message,
                 "the encoded request is larger than max_bytes (%zu bytes)", wk->max_bytes);
        wk->err.http_status = 0;
        wk->err.offset = -1;
    }
    hushpy_raise(wk->st, status, &wk->err);
    return -1;
}

/* The class name as __name__ spells it ("set", "Decimal"), without running
 * any Python code. */
static const char *type_name(PyObject *obj)
{
    const char *name = Py_TYPE(obj)->tp_name;
    const char *dot = strrchr(name, '.');
    return dot != NULL ? dot + 1 : name;
}

/* Zero a str this walk made (an int's digits) before releasing it. */
static void release_own_str(PyObject *s)
{
    if (Py_REFCNT(s) == 1 && PyUnicode_IS_COMPACT_ASCII(s))
        hush_memzero(PyUnicode_DATA(s), (size_t)PyUnicode_GET_LENGTH(s));
    Py_DECREF(s);
}

/* The UTF-8 of `s` without creating a cache inside it: ASCII and cached forms
 * are read in place, others are encoded into the locked scratch buffer. The
 * caller clears the scratch buffer after use. -1 with ValueError (naming the
 * path) for a lone surrogate, which UTF-8 cannot hold. */
static int str_utf8(walker *wk, unsigned depth, PyObject *s, const char **out, size_t *out_len,
                    const char *what)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) /* legacy strings from deprecated APIs; a no-op after 3.11 */
        return -1;
#endif
    if (PyUnicode_IS_COMPACT_ASCII(s)) {
        *out = (const char *)PyUnicode_DATA(s);
        *out_len = (size_t)PyUnicode_GET_LENGTH(s);
        return 0;
    }
    PyCompactUnicodeObject *compact = (PyCompactUnicodeObject *)s;
    if (compact->utf8 != NULL) {
        *out = compact->utf8;
        *out_len = (size_t)compact->utf8_length;
        return 0;
    }

    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    size_t need = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF) {
            char where[48];
            snprintf(where, sizeof where, "U+%04X at index %zd", (unsigned)c, i);
            return fail_at(wk, depth, PyExc_ValueError,
                           "%s is not valid UTF-8 text: it holds a lone surrogate (%s), as "
                           "surrogateescape decoding leaves", what, where);
        }
        need += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    }
    hush_status status;
    if (wk->scratch == NULL) {
        status = hush_secbuf_new(need, wk->max_bytes, HUSH_SECMEM_DEFAULT, &wk->scratch, &wk->err);
        if (status != HUSH_OK)
            return writer_failed(wk, status);
    }
    status = hush_secbuf_reserve(wk->scratch, need, &wk->err);
    if (status != HUSH_OK)
        return writer_failed(wk, status);
    unsigned char *p = hush_secbuf_data(wk->scratch);
    size_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            p[at++] = (unsigned char)c;
        } else if (c < 0x800) {
            p[at++] = (unsigned char)(0xC0 | (c >> 6));
            p[at++] = (unsigned char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            p[at++] = (unsigned char)(0xE0 | (c >> 12));
            p[at++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            p[at++] = (unsigned char)(0x80 | (c & 0x3F));
        } else {
            p[at++] = (unsigned char)(0xF0 | (c >> 18));
            p[at++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            p[at++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            p[at++] = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    status = hush_secbuf_set_len(wk->scratch, at, &wk->err);
    if (status != HUSH_OK)
        return writer_failed(wk, status);
    *out = (const char *)p;
    *out_len = at;
    return 0;
}

static int walk_value(walker *wk, PyObject *obj, unsigned depth);

static int write_str(walker *wk, PyObject *s, unsigned depth)
{
    const char *utf8;
    size_t len;
    if (str_utf8(wk, depth, s, &utf8, &len, "string") < 0)
        return -1;
    hush_status status = hush_json_write_string(wk->w, utf8, len, &wk->err);
    hush_secbuf_clear(wk->scratch); /* accepts NULL; zeroes what str_utf8 wrote */
    return status == HUSH_OK ? 0 : writer_failed(wk, status);
}

static int write_int(walker *wk, PyObject *obj, unsigned depth)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    hush_status status;
    if (!overflow) {
        status = hush_json_write_int64(wk->w, (int64_t)v, &wk->err);
        return status == HUSH_OK ? 0 : writer_failed(wk, status);
    }
    /* int.__repr__ itself, as json.dumps uses: a subclass's __str__ (IntEnum)
     * is not the number. */
    PyObject *text = PyLong_Type.tp_repr(obj);
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) { /* sys.set_int_max_str_digits */
            PyErr_Clear();
            return fail_at(wk, depth, PyExc_ValueError,
                           "integer has more digits than this interpreter converts to text");
        }
        return -1;
    }
    Py_ssize_t len;
    const char *digits = PyUnicode_AsUTF8AndSize(text, &len); /* ASCII: read in place */
    if (digits == NULL) {
        release_own_str(text);
        return -1;
    }
    status = hush_json_write_number_text(wk->w, digits, (size_t)len, &wk->err);
    release_own_str(text);
    return status == HUSH_OK ? 0 : writer_failed(wk, status);
}

static int write_float(walker *wk, PyObject *obj, unsigned depth)
{
    double d = PyFloat_AS_DOUBLE(obj);
    if (isnan(d))
        return fail_at(wk, depth, PyExc_ValueError, "NaN cannot be written as JSON");
    if (isinf(d))
        return fail_at(wk, depth, PyExc_ValueError, "%s cannot be written as JSON",
                       d > 0 ? "Infinity" : "-Infinity");
    hush_status status = hush_json_write_double(wk->w, d, &wk->err);
    return status == HUSH_OK ? 0 : writer_failed(wk, status);
}

/* One member of an object at `depth` (the object's own path has `depth` steps). */
static int walk_member(walker *wk, PyObject *key, PyObject *value, unsigned depth)
{
    if (!PyUnicode_Check(key))
        return fail_at(wk, depth, PyExc_TypeError, "dict keys must be str, not %s",
                       type_name(key));
    wk->path[depth] = (path_step){.key = key, .index = 0};
    const char *utf8;
    size_t len;
    if (str_utf8(wk, depth + 1, key, &utf8, &len, "dict key") < 0)
        return -1;
    hush_status status = hush_json_write_key(wk->w, utf8, len, &wk->err);
    hush_secbuf_clear(wk->scratch);
    if (status != HUSH_OK)
        return writer_failed(wk, status);
    return walk_value(wk, value, depth + 1);
}

static int walk_dict(walker *wk, PyObject *dict, unsigned depth)
{
    hush_status status = hush_json_write_object_begin(wk->w, &wk->err);
    if (status != HUSH_OK)
        return writer_failed(wk, status);

    if (PyDict_CheckExact(dict)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(dict, &pos, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            int rc = walk_member(wk, key, value, depth);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0)
                return -1;
        }
    } else {
        /* A subclass (OrderedDict after move_to_end) may order or filter its
         * items differently from its underlying storage: ask it, as json does. */
        PyObject *items = PyMapping_Items(dict);
        if (items == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
                Py_DECREF(items);
                return fail_at(wk, depth, PyExc_TypeError,
                               "items() of a %s must give (key, value) pairs", type_name(dict));
            }
            if (walk_member(wk, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), depth) < 0) {
                Py_DECREF(items);
                return -1;
            }
        }
        Py_DECREF(items);
    }
    status = hush_json_write_object_end(wk->w, &wk->err);
    return status == HUSH_OK ? 0 : writer_failed(wk, status);
}

static int walk_sequence(walker *wk, PyObject *seq, unsigned depth)
{
    hush_status status = hush_json_write_array_begin(wk->w, &wk->err);
    if (status != HUSH_OK)
        return writer_failed(wk, status);
    bool is_list = PyList_Check(seq);
    /* The size is read on every turn: nothing here runs Python code, but the
     * walk must stay memory-safe even if something did. */
    for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq)); i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(seq, i) : PyTuple_GET_ITEM(seq, i);
        Py_INCREF(item);
        wk->path[depth] = (path_step){.key = NULL, .index = i};
        int rc = walk_value(wk, item, depth + 1);
        Py_DECREF(item);
        if (rc < 0)
            return -1;
    }
    status = hush_json_write_array_end(wk->w, &wk->err);
    return status == HUSH_OK ? 0 : writer_failed(wk, status);
}

/* The value at `depth` (its path is wk->path[0 .. depth-1]). */
static int walk_value(walker *wk, PyObject *obj, unsigned depth)
{
    hush_status status;
    if (obj == Py_None) {
        status = hush_json_write_null(wk->w, &wk->err);
        return status == HUSH_OK ? 0 : writer_failed(wk, status);
    }
    /* bool before int: bool is an int subclass. */
    if (PyBool_Check(obj)) {
        status = hush_json_write_bool(wk->w, obj == Py_True, &wk->err);
        return status == HUSH_OK ? 0 : writer_failed(wk, status);
    }
    if (PyLong_Check(obj))
        return write_int(wk, obj, depth);
    if (PyFloat_Check(obj))
        return write_float(wk, obj, depth);
    if (PyUnicode_Check(obj))
        return write_str(wk, obj, depth);

    bool is_dict = PyDict_Check(obj);
    if (!is_dict && !PyList_Check(obj) && !PyTuple_Check(obj))
        return fail_at(wk, depth, PyExc_TypeError, "object of type '%s' is not JSON serializable",
                       type_name(obj));
    /* Depth is the only cycle check needed: a cycle nests without end. */
    if (depth >= wk->max_depth)
        return fail_at(wk, depth, PyExc_ValueError,
                       "nesting too deep: more than %u levels (is there a reference cycle?)",
                       wk->max_depth);
    return is_dict ? walk_dict(wk, obj, depth) : walk_sequence(wk, obj, depth);
}

PyObject *hushpy_encode(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"obj", "max_bytes", "max_depth", NULL};
    PyObject *obj;
    Py_ssize_t max_bytes = (Py_ssize_t)HUSH_DEFAULT_MAX_REQUEST_BYTES;
    int max_depth = (int)HUSH_JSON_DEFAULT_MAX_DEPTH;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$ni:encode", keywords, &obj, &max_bytes,
                                     &max_depth))
        return NULL;
    if (hushpy_check_limits(max_bytes, max_depth) < 0)
        return NULL;

    walker wk = {.st = st, .max_bytes = (size_t)max_bytes, .max_depth = (unsigned)max_depth};
    hush_secbuf *buf = NULL;
    PyObject *result = NULL;
    hush_status status;
    hush_error_clear(&wk.err);

    size_t first = (size_t)max_bytes < ENCODE_FIRST_CAPACITY ? (size_t)max_bytes
                                                              : ENCODE_FIRST_CAPACITY;
    status = hush_secbuf_new(first, (size_t)max_bytes, HUSH_SECMEM_DEFAULT, &buf, &wk.err);
    if (status != HUSH_OK) {
        writer_failed(&wk, status);
        goto done;
    }
    status = hush_json_writer_new(buf, HUSH_JSON_WRITE_COMPACT, (unsigned)max_depth, &wk.w,
                                  &wk.err);
    if (status != HUSH_OK) {
        writer_failed(&wk, status);
        goto done;
    }
    wk.path = PyMem_Calloc((size_t)max_depth + 1, sizeof *wk.path);
    if (wk.path == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (walk_value(&wk, obj, 0) < 0)
        goto done;
    if (!hush_json_writer_complete(wk.w)) {
        PyErr_SetString(PyExc_SystemError, "hushcall: the JSON writer did not complete");
        goto done;
    }
    result = buffer_new(st, buf); /* takes buf over, even on failure */
    buf = NULL;
done:
    PyMem_Free(wk.path);
    hush_json_writer_free(wk.w);
    hush_secbuf_free(wk.scratch);
    hush_secbuf_free(buf);
    return result;
}
