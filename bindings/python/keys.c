/* keys.c — KeyPair: a client RSA key pair (hush_keypair, keys.h) as a heap
 * type. A KeyPair is immutable, so one may be shared by any number of clients
 * and threads. Key generation, loading (a password derivation) and saving
 * run with the GIL released. The private key never becomes a Python object:
 * only the public PEM, the fingerprint and the size can be read. */
#include "hushpy.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    hush_keypair *kp; /* never NULL once made */
} KeyPairObject;

hush_keypair *hushpy_keypair_get(hushpy_state *st, PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, st->keypair_type)) {
        PyErr_Format(PyExc_TypeError, "client_key must be a hushcall._core.KeyPair, not %.200s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((KeyPairObject *)obj)->kp;
}

/* A KeyPair owning `kp` (taken over on success or failure). */
static PyObject *keypair_wrap(PyTypeObject *type, hush_keypair *kp)
{
    KeyPairObject *self = (KeyPairObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        hush_keypair_free(kp);
        return NULL;
    }
    self->kp = kp;
    return (PyObject *)self;
}

static void keypair_dealloc(PyObject *op)
{
    KeyPairObject *self = (KeyPairObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_keypair_free(self->kp);
    self->kp = NULL;
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* A password (borrowed from `obj`, which the caller keeps alive); None and
 * "" are NULL: "" means no password, as in nomyo. */
static int password_arg(PyObject *obj, const char **out)
{
    if (hushpy_str_option(obj, "password", out) < 0)
        return -1;
    if (*out != NULL && (*out)[0] == '\0')
        *out = NULL;
    return 0;
}

static PyObject *keypair_generate(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    hushpy_state *st = PyType_GetModuleState(type);
    if (st == NULL)
        return NULL;
    char *keywords[] = {"bits", NULL};
    int bits = (int)HUSH_RSA_DEFAULT_BITS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|i:generate", keywords, &bits))
        return NULL;
    if (bits < (int)HUSH_RSA_MIN_BITS || bits > (int)HUSH_RSA_MAX_BITS) {
        PyErr_Format(PyExc_ValueError, "bits must be between %u and %u", HUSH_RSA_MIN_BITS,
                     HUSH_RSA_MAX_BITS);
        return NULL;
    }
    hush_keypair *kp = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_keypair_generate((unsigned)bits, &kp, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return keypair_wrap(type, kp);
}

static PyObject *keypair_load(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    hushpy_state *st = PyType_GetModuleState(type);
    if (st == NULL)
        return NULL;
    char *keywords[] = {"private_key_path", "password", NULL};
    PyObject *path = NULL, *password_obj = Py_None;
    const char *password;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|O:load", keywords, PyUnicode_FSConverter,
                                     &path, &password_obj))
        return NULL;
    if (password_arg(password_obj, &password) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    hush_keypair *kp = NULL;
    hush_error err;
    hush_status status;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    status = hush_keypair_load_file(p, password, &kp, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return keypair_wrap(type, kp);
}

static PyObject *keypair_save(PyObject *op, PyObject *args, PyObject *kwargs)
{
    KeyPairObject *self = (KeyPairObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"key_dir", "password", "overwrite", NULL};
    PyObject *dir = NULL, *password_obj = Py_None;
    int overwrite = 0;
    const char *password;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|O$p:save", keywords, PyUnicode_FSConverter,
                                     &dir, &password_obj, &overwrite))
        return NULL;
    if (password_arg(password_obj, &password) < 0) {
        Py_DECREF(dir);
        return NULL;
    }
    hush_error err;
    hush_status status;
    const char *d = PyBytes_AS_STRING(dir);
    unsigned flags = overwrite ? HUSH_KEYS_SAVE_OVERWRITE : HUSH_KEYS_SAVE_DEFAULT;
    Py_BEGIN_ALLOW_THREADS
    status = hush_keypair_save_dir(self->kp, d, password, HUSH_KDF_PBKDF2, flags, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(dir);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    Py_RETURN_NONE;
}

static PyObject *keypair_public_pem(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    KeyPairObject *self = (KeyPairObject *)op;
    char *pem = NULL;
    size_t len = 0;
    hush_error err;
    hush_status status = hush_keypair_public_pem(self->kp, &pem, &len, &err);
    if (status != HUSH_OK)
        return hushpy_raise(PyType_GetModuleState(Py_TYPE(op)), status, &err);
    PyObject *text = PyUnicode_FromStringAndSize(pem, (Py_ssize_t)len);
    free(pem);
    return text;
}

static PyObject *keypair_get_fingerprint(PyObject *op, void *Py_UNUSED(closure))
{
    KeyPairObject *self = (KeyPairObject *)op;
    char fp[HUSH_FINGERPRINT_LEN];
    hush_error err;
    hush_status status = hush_keypair_fingerprint(self->kp, fp, &err);
    if (status != HUSH_OK)
        return hushpy_raise(PyType_GetModuleState(Py_TYPE(op)), status, &err);
    return PyUnicode_FromString(fp);
}

static PyObject *keypair_get_bits(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(hush_keypair_bits(((KeyPairObject *)op)->kp));
}

static PyObject *keypair_repr(PyObject *op)
{
    KeyPairObject *self = (KeyPairObject *)op;
    char fp[HUSH_FINGERPRINT_LEN];
    hush_error err;
    if (hush_keypair_fingerprint(self->kp, fp, &err) != HUSH_OK)
        strcpy(fp, "?");
    return PyUnicode_FromFormat("<hushcall._core.KeyPair RSA-%u %s>", hush_keypair_bits(self->kp),
                                fp);
}

static PyMethodDef keypair_methods[] = {
    {"generate", (PyCFunction)(void (*)(void))keypair_generate,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     PyDoc_STR("generate($type, /, bits=4096)\n--\n\n"
               "Generate an RSA key pair (GIL released; about a second at 4096 bits).")},
    {"load", (PyCFunction)(void (*)(void))keypair_load, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     PyDoc_STR("load($type, /, private_key_path, password=None)\n--\n\n"
               "Load a PEM private key file (PKCS#8 or traditional RSA), GIL released.\n"
               "A symlink, a file not owned by the caller, or one readable or writable by\n"
               "group or others is refused with SecurityError (the message names the\n"
               "chmod fix); a missing or wrong password raises SecurityError too.")},
    {"save", (PyCFunction)(void (*)(void))keypair_save, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("save($self, /, key_dir, password=None, *, overwrite=False)\n--\n\n"
               "Write key_dir/private_key.pem (0600, PKCS#8; with a password encrypted\n"
               "with PBKDF2-HMAC-SHA256 and AES-256-CBC) and key_dir/public_key.pem\n"
               "(0644), atomically, as the nomyo client lays them out. key_dir is\n"
               "created 0700 when absent. Existing files are refused unless overwrite.")},
    {"public_pem", keypair_public_pem, METH_NOARGS,
     PyDoc_STR("public_pem($self, /)\n--\n\nThe public key as SubjectPublicKeyInfo PEM.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef keypair_getset[] = {
    {"fingerprint", keypair_get_fingerprint, NULL,
     PyDoc_STR("\"sha256:<hex>\" over the DER SubjectPublicKeyInfo."), NULL},
    {"bits", keypair_get_bits, NULL, PyDoc_STR("The RSA modulus size in bits."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot keypair_slots[] = {
    {Py_tp_dealloc, keypair_dealloc},
    {Py_tp_repr, keypair_repr},
    {Py_tp_methods, keypair_methods},
    {Py_tp_getset, keypair_getset},
    {Py_tp_doc, (void *)PyDoc_STR(
         "A client RSA key pair (hush_keypair): made with KeyPair.generate() or\n"
         "KeyPair.load(), given to Client(client_key=...). Immutable; the private key\n"
         "stays in the core and is never exposed to Python.")},
    {0, NULL},
};

PyType_Spec hushpy_keypair_spec = {
    .name = "hushcall._core.KeyPair",
    .basicsize = sizeof(KeyPairObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = keypair_slots,
};
