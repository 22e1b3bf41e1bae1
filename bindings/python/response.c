/* response.c — decode() and the Response view: a decrypted JSON document stays
 * in its locked arena, and Python sees it through views that convert only the
 * leaf a caller reads. A _Document owns the hush_json_doc; every view (and
 * iterator) shares it, so wipe() on any of them, or the last one being
 * collected, zeroes the arena and every view taken from it goes dead at once.
 *
 * Strings leave the arena as ZeroOnFreeStr: a str subclass that zeroes its
 * characters (and any UTF-8 or wchar_t form cached in it) when it is freed, so
 * a leaf the caller has dropped leaves nothing behind in the heap. It is made
 * from a temporary exact str that is zeroed before release, because CPython
 * builds str subclass instances by copying one. */
#include "hushpy.h"

#include <string.h>
#include <unistd.h>

#define REPR_MAX_KEYS 32
#define REPR_MAX_METADATA_CHARS 128

static const char WIPED_MESSAGE[] = "this response was wiped; its views are no longer valid";
static const char FORKED_MESSAGE[] =
    "this response belongs to the parent process: secure memory is not inherited across fork()";

/* ---- ZeroOnFreeStr --------------------------------------------------------- */

static void zstr_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    void *data = PyUnicode_DATA(self); /* NULL if construction failed half way */
    if (data != NULL)
        hush_memzero(data, (size_t)PyUnicode_GET_LENGTH(self) * PyUnicode_KIND(self));
    if (!PyUnicode_IS_COMPACT_ASCII(self)) {
        /* Forms CPython caches on demand (PyUnicode_AsUTF8, encode("utf-8")). */
        PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)self;
        if (c->utf8 != NULL && c->utf8 != data)
            hush_memzero(c->utf8, (size_t)c->utf8_length);
#if PY_VERSION_HEX < 0x030C0000
        if (c->_base.wstr != NULL && (void *)c->_base.wstr != data)
            hush_memzero(c->_base.wstr, (size_t)c->wstr_length * sizeof(wchar_t));
#endif
    }
    PyUnicode_Type.tp_dealloc(self);
    Py_DECREF(tp);
}

static PyType_Slot zstr_slots[] = {
    {Py_tp_dealloc, zstr_dealloc},
    {Py_tp_doc, (void *)PyDoc_STR(
         "A str read from a hushcall response. It is an ordinary str in every way,\n"
         "except that its characters are zeroed when it is freed. Copies made from it\n"
         "(slicing, str(), formatting, printing) are ordinary strs and are not.")},
    {0, NULL},
};

PyType_Spec hushpy_zstr_spec = {
    .name = "hushcall._core.ZeroOnFreeStr",
    .basicsize = 0,
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = zstr_slots,
};

/* One code point of valid UTF-8 (the parser checked it): its length, or 0 if
 * it is not there after all. */
static size_t utf8_next(const unsigned char *p, size_t left, Py_UCS4 *cp)
{
    if (left == 0)
        return 0;
    unsigned char b = p[0];
    size_t n = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                            : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || n > left)
        return 0;
    Py_UCS4 c = n == 1 ? b : n == 2 ? (b & 0x1Fu) : n == 3 ? (b & 0x0Fu) : (b & 0x07u);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3Fu);
    }
    *cp = c;
    return n;
}

PyObject *hushpy_zstr_from_utf8(hushpy_state *st, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    Py_ssize_t count = 0;
    Py_UCS4 maxchar = 0, cp = 0;
    for (size_t at = 0; at < len;) {
        size_t n = utf8_next(p + at, len - at, &cp);
        if (n == 0) {
            PyErr_SetString(PyExc_SystemError, "hushcall: invalid UTF-8 in a parsed document");
            return NULL;
        }
        if (cp > maxchar)
            maxchar = cp;
        count++;
        at += n;
    }
    /* Exactly sized from the start: no resize, so no stale partial copy. */
    PyObject *tmp = PyUnicode_New(count, maxchar);
    if (tmp == NULL)
        return NULL;
    int kind = PyUnicode_KIND(tmp);
    void *data = PyUnicode_DATA(tmp);
    if (maxchar < 0x80) {
        memcpy(data, s, len);
    } else {
        Py_ssize_t i = 0;
        for (size_t at = 0; at < len; i++) {
            at += utf8_next(p + at, len - at, &cp);
            PyUnicode_WRITE(kind, data, i, cp);
        }
    }
    PyObject *result = PyObject_CallOneArg((PyObject *)st->zstr_type, tmp);
    if (count > 0)
        hush_memzero(data, (size_t)count * (size_t)kind);
    Py_DECREF(tmp);
    return result;
}

/* ---- _Document ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    hush_json_doc *doc; /* NULL once wiped */
    pid_t pid;          /* the process whose secure memory holds the arena */
    Py_ssize_t pins;    /* C code walking nodes right now; wiping waits for them */
    bool wipe_pending;  /* wipe() was asked while pinned: dead to every view already */
} DocumentObject;

static void document_wipe_now(DocumentObject *d)
{
    hush_json_doc *doc = d->doc;
    d->doc = NULL;
    d->wipe_pending = false;
    hush_json_doc_free(doc); /* zeroes every region of the arena, then unmaps it */
}

/* A Python finalizer run by an allocation inside a walk may call wipe(): the
 * nodes the walk holds must outlive it, so the wipe happens at unpin. */
static void document_wipe(DocumentObject *d)
{
    if (d->pins > 0)
        d->wipe_pending = true;
    else
        document_wipe_now(d);
}

static void document_unpin(DocumentObject *d)
{
    if (--d->pins == 0 && d->wipe_pending)
        document_wipe_now(d);
}

static void document_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    document_wipe_now((DocumentObject *)op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot document_slots[] = {
    {Py_tp_dealloc, document_dealloc},
    {Py_tp_doc, (void *)PyDoc_STR("Owns one decrypted document in locked memory (internal).")},
    {0, NULL},
};

PyType_Spec hushpy_document_spec = {
    .name = "hushcall._core._Document",
    .basicsize = sizeof(DocumentObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = document_slots,
};

/* ---- Response: views ------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    DocumentObject *owner;       /* NULL only after tp_clear */
    const hush_json_value *node; /* in owner's arena */
} ResponseObject;

typedef struct {
    PyObject_HEAD
    ResponseObject *view;
    size_t index;
} ResponseIterObject;

static hushpy_state *state_of(PyObject *self)
{
    return PyType_GetModuleState(Py_TYPE(self));
}

static bool view_live(const ResponseObject *self)
{
    const DocumentObject *d = self->owner;
    return d != NULL && d->doc != NULL && !d->wipe_pending && d->pid == getpid();
}

/* Every reader starts here: WipedError if the document is gone, else the
 * document is pinned until view_leave. */
static int view_enter(ResponseObject *self)
{
    if (!view_live(self)) {
        bool forked = self->owner != NULL && self->owner->doc != NULL &&
                      self->owner->pid != getpid();
        hushpy_raise_wiped(state_of((PyObject *)self), forked ? FORKED_MESSAGE : WIPED_MESSAGE);
        return -1;
    }
    self->owner->pins++;
    return 0;
}

static void view_leave(ResponseObject *self)
{
    document_unpin(self->owner);
}

static PyObject *view_new(hushpy_state *st, DocumentObject *owner, const hush_json_value *node)
{
    ResponseObject *v = (ResponseObject *)st->response_type->tp_alloc(st->response_type, 0);
    if (v == NULL)
        return NULL;
    Py_INCREF(owner);
    v->owner = owner;
    v->node = node;
    return (PyObject *)v;
}

PyObject *hushpy_response_from_doc(hushpy_state *st, hush_json_doc *doc)
{
    DocumentObject *d = (DocumentObject *)st->document_type->tp_alloc(st->document_type, 0);
    if (d == NULL) {
        hush_json_doc_free(doc);
        return NULL;
    }
    d->doc = doc;
    d->pid = getpid();
    d->pins = 0;
    d->wipe_pending = false;
    PyObject *view = view_new(st, d, hush_json_doc_root(doc));
    Py_DECREF(d);
    return view;
}

/* ---- leaves ---------------------------------------------------------------- */

static PyObject *number_to_python(hushpy_state *st, const hush_json_value *v)
{
    hush_error err;
    hush_error_clear(&err);
    size_t len;
    const char *text = hush_json_number_text(v, &len);
    if (hush_json_is_integer(v)) {
        int64_t i;
        if (hush_json_int64(v, &i, &err) == HUSH_OK)
            return PyLong_FromLongLong((long long)i);
        return PyLong_FromString(text, NULL, 10); /* past int64: the text is NUL-terminated */
    }
    double d;
    hush_status status = hush_json_double(v, &d, &err);
    if (status == HUSH_E_LIMIT) /* past the double range: infinity, as json.loads gives */
        return PyFloat_FromDouble(text[0] == '-' ? -Py_HUGE_VAL : Py_HUGE_VAL);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return PyFloat_FromDouble(d);
}

/* A leaf as a Python object, or a container as a view sharing `owner`. */
static PyObject *node_to_python(hushpy_state *st, DocumentObject *owner, const hush_json_value *v)
{
    size_t len;
    const char *s;
    switch (hush_json_type_of(v)) {
    case HUSH_JSON_NULL:
        Py_RETURN_NONE;
    case HUSH_JSON_BOOL:
        return PyBool_FromLong(hush_json_bool(v));
    case HUSH_JSON_NUMBER:
        return number_to_python(st, v);
    case HUSH_JSON_STRING:
        s = hush_json_string(v, &len);
        return hushpy_zstr_from_utf8(st, s, len);
    case HUSH_JSON_ARRAY:
    case HUSH_JSON_OBJECT:
        return view_new(st, owner, v);
    }
    PyErr_SetString(PyExc_SystemError, "hushcall: unknown JSON type");
    return NULL;
}

/* The plain-Python copy to_dict() makes. */
static PyObject *deep_copy(hushpy_state *st, const hush_json_value *v)
{
    hush_json_type type = hush_json_type_of(v);
    if (type != HUSH_JSON_ARRAY && type != HUSH_JSON_OBJECT)
        return node_to_python(st, NULL, v);
    if (Py_EnterRecursiveCall(" while copying a hushcall Response"))
        return NULL;
    PyObject *out = NULL;
    size_t n = hush_json_length(v);
    if (type == HUSH_JSON_ARRAY) {
        out = PyList_New((Py_ssize_t)n);
        for (size_t i = 0; out != NULL && i < n; i++) {
            PyObject *item = deep_copy(st, hush_json_array_get(v, i));
            if (item == NULL)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, (Py_ssize_t)i, item);
        }
    } else {
        out = PyDict_New();
        const char *key;
        size_t key_len;
        const hush_json_value *member;
        for (size_t i = 0; out != NULL && hush_json_object_member(v, i, &key, &key_len, &member);
             i++) {
            PyObject *k = hushpy_zstr_from_utf8(st, key, key_len);
            PyObject *value = k != NULL ? deep_copy(st, member) : NULL;
            if (value == NULL || PyDict_SetItem(out, k, value) < 0)
                Py_CLEAR(out);
            Py_XDECREF(k);
            Py_XDECREF(value);
        }
    }
    Py_LeaveRecursiveCall();
    return out;
}

/* The UTF-8 of a key the caller gave; NULL (no error set) for a non-str or a
 * str UTF-8 cannot hold, which can be no member's name. */
static const char *key_utf8(PyObject *key, Py_ssize_t *len)
{
    if (!PyUnicode_Check(key))
        return NULL;
    const char *s = PyUnicode_AsUTF8AndSize(key, len);
    if (s == NULL)
        PyErr_Clear();
    return s;
}

/* KeyError(key), with a tuple key kept whole as dict does. */
static void set_key_error(PyObject *key)
{
    PyObject *args = PyTuple_Pack(1, key);
    if (args != NULL) {
        PyErr_SetObject(PyExc_KeyError, args);
        Py_DECREF(args);
    }
}

static const char *type_word(const hush_json_value *v)
{
    return hush_json_type_name(hush_json_type_of(v));
}

/* ---- mapping and sequence protocol ------------------------------------------ */

static Py_ssize_t response_length(PyObject *op)
{
    ResponseObject *self = (ResponseObject *)op;
    if (view_enter(self) < 0)
        return -1;
    hush_json_type type = hush_json_type_of(self->node);
    Py_ssize_t n = (Py_ssize_t)hush_json_length(self->node);
    const char *word = type_word(self->node);
    view_leave(self);
    if (type != HUSH_JSON_ARRAY && type != HUSH_JSON_OBJECT) {
        PyErr_Format(PyExc_TypeError, "a JSON %s has no len()", word);
        return -1;
    }
    return n;
}

static PyObject *array_slice(hushpy_state *st, ResponseObject *self, PyObject *slice)
{
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(slice, &start, &stop, &step) < 0)
        return NULL;
    Py_ssize_t n = PySlice_AdjustIndices((Py_ssize_t)hush_json_length(self->node), &start, &stop,
                                         step);
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0, at = start; list != NULL && i < n; i++, at += step) {
        PyObject *item = node_to_python(st, self->owner, hush_json_array_get(self->node, (size_t)at));
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *response_subscript(PyObject *op, PyObject *key)
{
    ResponseObject *self = (ResponseObject *)op;
    hushpy_state *st = state_of(op);
    if (view_enter(self) < 0)
        return NULL;
    PyObject *result = NULL;
    switch (hush_json_type_of(self->node)) {
    case HUSH_JSON_OBJECT: {
        Py_ssize_t len;
        const char *k = key_utf8(key, &len);
        const hush_json_value *member = k != NULL ? hush_json_object_get(self->node, k, (size_t)len)
                                                  : NULL;
        if (member != NULL)
            result = node_to_python(st, self->owner, member);
        else
            set_key_error(key);
        break;
    }
    case HUSH_JSON_ARRAY: {
        if (PySlice_Check(key)) {
            result = array_slice(st, self, key);
            break;
        }
        if (!PyIndex_Check(key)) {
            PyErr_Format(PyExc_TypeError,
                         "Response array indices must be integers or slices, not %.100s",
                         Py_TYPE(key)->tp_name);
            break;
        }
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            break;
        Py_ssize_t n = (Py_ssize_t)hush_json_length(self->node);
        if (i < 0)
            i += n;
        if (i < 0 || i >= n)
            PyErr_SetString(PyExc_IndexError, "Response array index out of range");
        else
            result = node_to_python(st, self->owner, hush_json_array_get(self->node, (size_t)i));
        break;
    }
    default:
        PyErr_Format(PyExc_TypeError, "a JSON %s is not subscriptable", type_word(self->node));
        break;
    }
    view_leave(self);
    return result;
}

static int response_contains(PyObject *op, PyObject *x)
{
    ResponseObject *self = (ResponseObject *)op;
    hushpy_state *st = state_of(op);
    if (view_enter(self) < 0)
        return -1;
    int found = 0;
    hush_json_type type = hush_json_type_of(self->node);
    if (type == HUSH_JSON_OBJECT) {
        Py_ssize_t len;
        const char *k = key_utf8(x, &len);
        found = k != NULL && hush_json_object_get(self->node, k, (size_t)len) != NULL;
    } else if (type == HUSH_JSON_ARRAY) {
        /* As list.__contains__: equality, one element at a time. */
        size_t n = hush_json_length(self->node);
        for (size_t i = 0; i < n && found == 0; i++) {
            PyObject *item = node_to_python(st, self->owner, hush_json_array_get(self->node, i));
            if (item == NULL) {
                found = -1;
                break;
            }
            found = PyObject_RichCompareBool(item, x, Py_EQ);
            Py_DECREF(item);
        }
    } else {
        PyErr_Format(PyExc_TypeError, "a JSON %s does not support 'in'", type_word(self->node));
        found = -1;
    }
    view_leave(self);
    return found;
}

/* ---- attribute access: resp.choices[0].message.content ----------------------- */

/* Names never looked up as members: special methods (copy, pickle and the
 * rest probe them), and IPython's display hooks, so that no display path can
 * be handed a member's content. */
static bool reserved_name(const char *s, Py_ssize_t len)
{
    if (len >= 4 && s[0] == '_' && s[1] == '_' && s[len - 1] == '_' && s[len - 2] == '_')
        return true;
    return strncmp(s, "_repr_", 6) == 0 || strncmp(s, "_ipython_", 9) == 0;
}

static PyObject *response_getattro(PyObject *op, PyObject *name)
{
    ResponseObject *self = (ResponseObject *)op;
    hushpy_state *st = state_of(op);
    if (!PyUnicode_Check(name))
        return PyObject_GenericGetAttr(op, name);
    int own = PySet_Contains(st->response_attrs, name);
    if (own < 0)
        return NULL;
    Py_ssize_t len;
    const char *s = own ? NULL : PyUnicode_AsUTF8AndSize(name, &len);
    if (s == NULL) {
        if (!own)
            PyErr_Clear();
        return PyObject_GenericGetAttr(op, name); /* real attributes win */
    }
    if (reserved_name(s, len))
        return PyObject_GenericGetAttr(op, name);

    if (view_enter(self) < 0)
        return NULL;
    PyObject *result = NULL;
    const hush_json_value *member = hush_json_object_get(self->node, s, (size_t)len);
    if (member != NULL)
        result = node_to_python(st, self->owner, member);
    else if (hush_json_type_of(self->node) == HUSH_JSON_OBJECT)
        PyErr_Format(PyExc_AttributeError,
                     "'Response' object has no attribute or member '%U'", name);
    else
        PyErr_Format(PyExc_AttributeError, "'Response' object (a JSON %s) has no attribute '%U'",
                     type_word(self->node), name);
    view_leave(self);
    return result;
}

/* ---- methods ----------------------------------------------------------------- */

static PyObject *response_get(PyObject *op, PyObject *args)
{
    ResponseObject *self = (ResponseObject *)op;
    PyObject *key, *dflt = Py_None;
    if (!PyArg_UnpackTuple(args, "get", 1, 2, &key, &dflt))
        return NULL;
    if (view_enter(self) < 0)
        return NULL;
    const hush_json_value *found = NULL;
    hush_json_type type = hush_json_type_of(self->node);
    if (type == HUSH_JSON_OBJECT) {
        Py_ssize_t len;
        const char *k = key_utf8(key, &len);
        if (k != NULL)
            found = hush_json_object_get(self->node, k, (size_t)len);
    } else if (type == HUSH_JSON_ARRAY && PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, NULL); /* clamps: huge means out of range */
        if (i == -1 && PyErr_Occurred()) {
            view_leave(self);
            return NULL;
        }
        Py_ssize_t n = (Py_ssize_t)hush_json_length(self->node);
        if (i < 0)
            i += n;
        if (i >= 0 && i < n)
            found = hush_json_array_get(self->node, (size_t)i);
    }
    PyObject *result;
    if (found != NULL) {
        result = node_to_python(state_of(op), self->owner, found);
    } else {
        Py_INCREF(dflt);
        result = dflt;
    }
    view_leave(self);
    return result;
}

enum listing { LIST_KEYS, LIST_VALUES, LIST_ITEMS };

static PyObject *response_listing(ResponseObject *self, enum listing what, const char *method)
{
    hushpy_state *st = state_of((PyObject *)self);
    if (view_enter(self) < 0)
        return NULL;
    PyObject *list = NULL;
    hush_json_type type = hush_json_type_of(self->node);
    size_t n = hush_json_length(self->node);
    if (type == HUSH_JSON_ARRAY && what == LIST_VALUES) {
        list = PyList_New((Py_ssize_t)n);
        for (size_t i = 0; list != NULL && i < n; i++) {
            PyObject *item = node_to_python(st, self->owner, hush_json_array_get(self->node, i));
            if (item == NULL)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        }
    } else if (type == HUSH_JSON_OBJECT) {
        list = PyList_New((Py_ssize_t)n);
        const char *key;
        size_t key_len;
        const hush_json_value *member;
        for (size_t i = 0; list != NULL && i < n; i++) {
            PyObject *entry = NULL, *k = NULL, *v = NULL;
            hush_json_object_member(self->node, i, &key, &key_len, &member);
            if (what != LIST_VALUES)
                k = hushpy_zstr_from_utf8(st, key, key_len);
            if (what != LIST_KEYS && (what == LIST_VALUES || k != NULL))
                v = node_to_python(st, self->owner, member);
            if (what == LIST_KEYS)
                entry = k, k = NULL;
            else if (what == LIST_VALUES)
                entry = v, v = NULL;
            else if (k != NULL && v != NULL)
                entry = PyTuple_Pack(2, k, v);
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (entry == NULL)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, (Py_ssize_t)i, entry);
        }
    } else {
        PyErr_Format(PyExc_TypeError, "%s() needs a JSON object%s; this Response is a JSON %s",
                     method, what == LIST_VALUES ? " or array" : "", type_word(self->node));
    }
    view_leave(self);
    return list;
}

static PyObject *response_keys(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return response_listing((ResponseObject *)op, LIST_KEYS, "keys");
}

static PyObject *response_values(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return response_listing((ResponseObject *)op, LIST_VALUES, "values");
}

static PyObject *response_items(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return response_listing((ResponseObject *)op, LIST_ITEMS, "items");
}

static PyObject *response_to_dict(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ResponseObject *self = (ResponseObject *)op;
    if (view_enter(self) < 0)
        return NULL;
    PyObject *copy = deep_copy(state_of(op), self->node);
    view_leave(self);
    return copy;
}

static PyObject *response_wipe(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ResponseObject *self = (ResponseObject *)op;
    if (self->owner != NULL)
        document_wipe(self->owner);
    Py_RETURN_NONE;
}

static PyObject *response_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(op);
    return op;
}

static PyObject *response_exit(PyObject *op, PyObject *Py_UNUSED(args))
{
    ResponseObject *self = (ResponseObject *)op;
    if (self->owner != NULL)
        document_wipe(self->owner);
    Py_RETURN_FALSE;
}

static PyObject *response_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    (void)op;
    PyErr_SetString(PyExc_TypeError,
                    "a Response cannot be pickled or copied: its content stays in locked memory; "
                    "to_dict() makes an explicit plain copy");
    return NULL;
}

static PyObject *response_get_wiped(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(!view_live((ResponseObject *)op));
}

/* Read now, not at decode: the arena is whole once parsed, and a wiped
 * document holds nothing to be locked. */
static PyObject *response_get_locked(PyObject *op, void *Py_UNUSED(closure))
{
    ResponseObject *self = (ResponseObject *)op;
    if (!view_live(self))
        Py_RETURN_FALSE;
    return PyBool_FromLong(hush_arena_is_locked(hush_json_doc_arena(self->owner->doc)));
}

/* ---- repr: shape and _metadata, never content ---------------------------------- */

static int append_str(PyObject *parts, PyObject *s)
{
    if (s == NULL)
        return -1;
    int rc = PyList_Append(parts, s);
    Py_DECREF(s);
    return rc;
}

/* A scalar of _metadata as repr would show it; containers by shape only. */
static PyObject *metadata_value_repr(const hush_json_value *v)
{
    size_t len;
    const char *text;
    switch (hush_json_type_of(v)) {
    case HUSH_JSON_NULL:
        return PyUnicode_FromString("None");
    case HUSH_JSON_BOOL:
        return PyUnicode_FromString(hush_json_bool(v) ? "True" : "False");
    case HUSH_JSON_NUMBER:
        text = hush_json_number_text(v, &len);
        return PyUnicode_FromStringAndSize(text, (Py_ssize_t)len);
    case HUSH_JSON_STRING: {
        text = hush_json_string(v, &len);
        PyObject *s = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "replace");
        if (s == NULL)
            return NULL;
        if (PyUnicode_GET_LENGTH(s) > REPR_MAX_METADATA_CHARS) {
            PyObject *cut = PyUnicode_Substring(s, 0, REPR_MAX_METADATA_CHARS);
            Py_DECREF(s);
            if (cut == NULL)
                return NULL;
            PyObject *r = PyUnicode_FromFormat("%R...", cut);
            Py_DECREF(cut);
            return r;
        }
        PyObject *r = PyObject_Repr(s);
        Py_DECREF(s);
        return r;
    }
    case HUSH_JSON_ARRAY:
        return PyUnicode_FromFormat("<array len=%zu>", hush_json_length(v));
    case HUSH_JSON_OBJECT:
        return PyUnicode_FromFormat("<object len=%zu>", hush_json_length(v));
    }
    return PyUnicode_FromString("?");
}

static int repr_metadata(PyObject *parts, const hush_json_value *meta)
{
    if (hush_json_type_of(meta) != HUSH_JSON_OBJECT)
        return append_str(parts, PyUnicode_FromFormat(" _metadata=<%s>", type_word(meta)));
    if (append_str(parts, PyUnicode_FromString(" _metadata={")) < 0)
        return -1;
    const char *key;
    size_t key_len;
    const hush_json_value *value;
    for (size_t i = 0; hush_json_object_member(meta, i, &key, &key_len, &value); i++) {
        PyObject *k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)key_len, "replace");
        PyObject *v = k != NULL ? metadata_value_repr(value) : NULL;
        int rc = v != NULL ? append_str(parts, PyUnicode_FromFormat("%s%R: %U", i ? ", " : "", k, v))
                           : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (rc < 0)
            return -1;
    }
    return append_str(parts, PyUnicode_FromString("}"));
}

static int repr_keys(PyObject *parts, const hush_json_value *object)
{
    if (append_str(parts, PyUnicode_FromString(" keys=[")) < 0)
        return -1;
    const char *key;
    size_t key_len;
    size_t i = 0;
    for (; i < REPR_MAX_KEYS && hush_json_object_member(object, i, &key, &key_len, NULL); i++) {
        PyObject *k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)key_len, "replace");
        if (k == NULL || append_str(parts, PyUnicode_FromFormat("%s%R", i ? ", " : "", k)) < 0) {
            Py_XDECREF(k);
            return -1;
        }
        Py_DECREF(k);
    }
    if (i < hush_json_length(object) &&
        append_str(parts, PyUnicode_FromFormat(", ... (%zu in all)", hush_json_length(object))) < 0)
        return -1;
    return append_str(parts, PyUnicode_FromString("]"));
}

static PyObject *response_repr(PyObject *op)
{
    ResponseObject *self = (ResponseObject *)op;
    if (!view_live(self))
        return PyUnicode_FromString("<hushcall.Response (wiped)>");
    if (view_enter(self) < 0)
        return NULL;
    PyObject *parts = PyList_New(0), *result = NULL, *empty = NULL;
    const hush_json_value *node = self->node;
    hush_json_type type = hush_json_type_of(node);
    if (parts == NULL)
        goto done;
    if (append_str(parts, PyUnicode_FromFormat("<hushcall.Response %s", type_word(node))) < 0)
        goto done;
    if (type == HUSH_JSON_OBJECT) {
        if (repr_keys(parts, node) < 0)
            goto done;
        const hush_json_value *meta = hush_json_object_get(node, "_metadata", 9);
        if (meta != NULL && node == hush_json_doc_root(self->owner->doc) &&
            repr_metadata(parts, meta) < 0)
            goto done;
    } else if (type == HUSH_JSON_ARRAY) {
        if (append_str(parts, PyUnicode_FromFormat(" len=%zu", hush_json_length(node))) < 0)
            goto done;
    }
    if (append_str(parts, PyUnicode_FromString(">")) < 0)
        goto done;
    empty = PyUnicode_FromString("");
    if (empty != NULL)
        result = PyUnicode_Join(empty, parts);
done:
    Py_XDECREF(parts);
    Py_XDECREF(empty);
    view_leave(self);
    return result;
}

/* Jupyter: the same redacted text, escaped. */
static PyObject *response_repr_html(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *text = PyObject_Repr(op);
    if (text == NULL)
        return NULL;
    PyObject *html = PyImport_ImportModule("html");
    PyObject *escaped = html != NULL ? PyObject_CallMethod(html, "escape", "O", text) : NULL;
    PyObject *result = escaped != NULL ? PyUnicode_FromFormat("<pre>%U</pre>", escaped) : NULL;
    Py_XDECREF(html);
    Py_XDECREF(escaped);
    Py_DECREF(text);
    return result;
}

/* IPython's pretty printer: _repr_pretty_(p, cycle). */
static PyObject *response_repr_pretty(PyObject *op, PyObject *args)
{
    PyObject *printer, *cycle;
    if (!PyArg_UnpackTuple(args, "_repr_pretty_", 2, 2, &printer, &cycle))
        return NULL;
    PyObject *text = PyObject_Repr(op);
    if (text == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethod(printer, "text", "O", text);
    Py_DECREF(text);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* ---- iteration ----------------------------------------------------------------- */

static PyObject *response_iter(PyObject *op)
{
    ResponseObject *self = (ResponseObject *)op;
    hushpy_state *st = state_of(op);
    if (view_enter(self) < 0)
        return NULL;
    hush_json_type type = hush_json_type_of(self->node);
    const char *word = type_word(self->node);
    view_leave(self);
    if (type != HUSH_JSON_ARRAY && type != HUSH_JSON_OBJECT) {
        PyErr_Format(PyExc_TypeError, "a JSON %s is not iterable", word);
        return NULL;
    }
    ResponseIterObject *it =
        (ResponseIterObject *)st->response_iter_type->tp_alloc(st->response_iter_type, 0);
    if (it == NULL)
        return NULL;
    Py_INCREF(self);
    it->view = self;
    it->index = 0;
    return (PyObject *)it;
}

/* Objects iterate over their keys, arrays over their elements. */
static PyObject *response_iter_next(PyObject *op)
{
    ResponseIterObject *it = (ResponseIterObject *)op;
    ResponseObject *view = it->view;
    if (view == NULL)
        return NULL;
    if (view_enter(view) < 0)
        return NULL;
    hushpy_state *st = state_of(op);
    PyObject *result = NULL;
    const char *key;
    size_t key_len;
    if (hush_json_type_of(view->node) == HUSH_JSON_OBJECT) {
        if (hush_json_object_member(view->node, it->index, &key, &key_len, NULL)) {
            it->index++;
            result = hushpy_zstr_from_utf8(st, key, key_len);
        }
    } else if (it->index < hush_json_length(view->node)) {
        result = node_to_python(st, view->owner, hush_json_array_get(view->node, it->index++));
    }
    view_leave(view);
    if (result == NULL && !PyErr_Occurred())
        Py_CLEAR(it->view); /* exhausted: stays exhausted */
    return result;
}

static int response_iter_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((ResponseIterObject *)op)->view);
    return 0;
}

static int response_iter_clear(PyObject *op)
{
    Py_CLEAR(((ResponseIterObject *)op)->view);
    return 0;
}

static void response_iter_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    response_iter_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot response_iter_slots[] = {
    {Py_tp_dealloc, response_iter_dealloc},
    {Py_tp_traverse, response_iter_traverse},
    {Py_tp_clear, response_iter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, response_iter_next},
    {0, NULL},
};

PyType_Spec hushpy_response_iter_spec = {
    .name = "hushcall._core._ResponseIterator",
    .basicsize = sizeof(ResponseIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = response_iter_slots,
};

/* ---- the Response type ------------------------------------------------------------ */

static int response_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((ResponseObject *)op)->owner);
    return 0;
}

static int response_clear(PyObject *op)
{
    ResponseObject *self = (ResponseObject *)op;
    self->node = NULL;
    Py_CLEAR(self->owner);
    return 0;
}

static void response_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    response_clear(op); /* the last view going takes the document, which wipes */
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef response_methods[] = {
    {"get", response_get, METH_VARARGS,
     PyDoc_STR("get($self, key, default=None, /)\n--\n\n"
               "A member (or, for an array, an element) or default.")},
    {"keys", response_keys, METH_NOARGS,
     PyDoc_STR("keys($self, /)\n--\n\nThe member names of an object, as a list.")},
    {"values", response_values, METH_NOARGS,
     PyDoc_STR("values($self, /)\n--\n\n"
               "The member values of an object, or the elements of an array, as a list.")},
    {"items", response_items, METH_NOARGS,
     PyDoc_STR("items($self, /)\n--\n\nThe (name, value) pairs of an object, as a list.")},
    {"to_dict", response_to_dict, METH_NOARGS,
     PyDoc_STR("to_dict($self, /)\n--\n\n"
               "An explicit deep copy into plain dicts and lists (strings are ZeroOnFreeStr).\n"
               "The copy is not wiped with the response.")},
    {"wipe", response_wipe, METH_NOARGS,
     PyDoc_STR("wipe($self, /)\n--\n\n"
               "Zero the document in locked memory; every view taken from it goes dead.\n"
               "Idempotent.")},
    {"__enter__", response_enter, METH_NOARGS, PyDoc_STR("__enter__($self, /)\n--\n\n")},
    {"__exit__", response_exit, METH_VARARGS,
     PyDoc_STR("__exit__($self, /, *exc_info)\n--\n\nWipe.")},
    {"__reduce__", response_reduce, METH_NOARGS, PyDoc_STR("__reduce__($self, /)\n--\n\n")},
    {"_repr_html_", response_repr_html, METH_NOARGS, PyDoc_STR("_repr_html_($self, /)\n--\n\n")},
    {"_repr_pretty_", response_repr_pretty, METH_VARARGS,
     PyDoc_STR("_repr_pretty_($self, p, cycle, /)\n--\n\n")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef response_getset[] = {
    {"wiped", response_get_wiped, NULL,
     PyDoc_STR("True once the document is gone (wiped, collected, or from a parent process)."),
     NULL},
    {"locked", response_get_locked, NULL,
     PyDoc_STR("True when the document's memory is mlock'ed. False when the kernel refused\n"
               "(RLIMIT_MEMLOCK): still guarded, wiped and kept out of core dumps, but it\n"
               "may be swapped. False once wiped."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot response_slots[] = {
    {Py_tp_dealloc, response_dealloc},
    {Py_tp_traverse, response_traverse},
    {Py_tp_clear, response_clear},
    {Py_tp_repr, response_repr},
    {Py_tp_getattro, response_getattro},
    {Py_tp_iter, response_iter},
    {Py_tp_methods, response_methods},
    {Py_tp_getset, response_getset},
    {Py_mp_length, response_length},
    {Py_mp_subscript, response_subscript},
    {Py_sq_contains, response_contains},
    {Py_tp_doc, (void *)PyDoc_STR(
         "A view over a decrypted JSON document held in locked memory.\n\n"
         "resp['choices'][0]['message']['content'] and resp.choices[0].message.content\n"
         "both work; objects and arrays come back as further views, and only the leaf you\n"
         "read becomes a Python object. wipe() (or leaving a with block, or the last view\n"
         "being collected) zeroes the document, after which every view raises WipedError.\n"
         "repr() shows the shape and _metadata only, never content.")},
    {0, NULL},
};

PyType_Spec hushpy_response_spec = {
    .name = "hushcall._core.Response",
    .basicsize = sizeof(ResponseObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = response_slots,
};

/* ---- decode -------------------------------------------------------------------------- */

PyObject *hushpy_decode(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"data", "max_bytes", "max_depth", NULL};
    PyObject *data;
    Py_ssize_t max_bytes = (Py_ssize_t)HUSH_JSON_DEFAULT_MAX_BYTES;
    int max_depth = (int)HUSH_JSON_DEFAULT_MAX_DEPTH;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$ni:decode", keywords, &data, &max_bytes,
                                     &max_depth))
        return NULL;
    if (hushpy_check_limits(max_bytes, max_depth) < 0)
        return NULL;

    const unsigned char *bytes;
    size_t len;
    Py_buffer view;
    bool is_secure = hushpy_is_secure_buffer(st, data);
    if (is_secure) {
        if (hushpy_secure_buffer_pin(st, data, &bytes, &len) < 0)
            return NULL;
    } else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "decode() takes a SecureBuffer or a bytes-like object, not %.100s",
                             Py_TYPE(data)->tp_name);
            }
            return NULL;
        }
        bytes = view.buf;
        len = (size_t)view.len;
    }

    hush_json_limits limits = {.max_bytes = (size_t)max_bytes, .max_depth = (unsigned)max_depth};
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_status status;
    hush_error_clear(&err);
    /* Secure memory to secure memory; the buffer is pinned (or exported) so no
     * other thread can free it meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    status = hush_json_parse(bytes, len, &limits, HUSH_SECMEM_DEFAULT, &doc, &err);
    Py_END_ALLOW_THREADS

    if (is_secure)
        hushpy_secure_buffer_unpin(data);
    else
        PyBuffer_Release(&view);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return hushpy_response_from_doc(st, doc);
}
