/* hpke_keys.c — HpkeKeypair: a server's HPKE key pair for protocol v2
 * (hush_hpke_keypair, hpke.h) as a heap type, and hpke_pubkey_fingerprint.
 * An HpkeKeypair is immutable, so the gateway may share one among threads.
 * The private key never becomes a Python object: only the KEM, the public
 * key and its fingerprint can be read. Generating, loading (a password
 * derivation) and saving run with the GIL released. */
#include "hushpy.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    hush_hpke_keypair *kp;  /* never NULL once made */
    hush_hpke_pubkey *pub;  /* its public half, kept for public_bytes() */
} HpkeKeypairObject;

/* An HpkeKeypair owning `kp` (taken over on success or failure). */
static PyObject *hpke_keypair_wrap(PyTypeObject *type, hush_hpke_keypair *kp)
{
    hushpy_state *st = PyType_GetModuleState(type);
    hush_hpke_pubkey *pub = NULL;
    hush_error err;
    hush_status status = hush_hpke_keypair_public(kp, &pub, &err);
    if (status != HUSH_OK) {
        hush_hpke_keypair_free(kp);
        return hushpy_raise(st, status, &err);
    }
    HpkeKeypairObject *self = (HpkeKeypairObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        hush_hpke_pubkey_free(pub);
        hush_hpke_keypair_free(kp);
        return NULL;
    }
    self->kp = kp;
    self->pub = pub;
    return (PyObject *)self;
}

static void hpke_keypair_dealloc(PyObject *op)
{
    HpkeKeypairObject *self = (HpkeKeypairObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_hpke_pubkey_free(self->pub);
    hush_hpke_keypair_free(self->kp); /* wipes the private key */
    self->pub = NULL;
    self->kp = NULL;
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* A KEM id the core speaks, or -1 with ValueError set. */
static int kem_arg(long kem, uint16_t *out)
{
    if (kem < 0 || kem > 0xFFFF || hush_hpke_kem_public_key_bytes((uint16_t)kem) == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "kem must be HPKE_KEM_X25519_SHA256 (0x0020) or HPKE_KEM_XWING (0x647A)");
        return -1;
    }
    *out = (uint16_t)kem;
    return 0;
}

/* A password, borrowed from `obj`; None and "" are NULL (no password), as
 * for KeyPair. */
static int password_arg(PyObject *obj, const char **out)
{
    if (hushpy_str_option(obj, "password", out) < 0)
        return -1;
    if (*out != NULL && (*out)[0] == '\0')
        *out = NULL;
    return 0;
}

static int kdf_arg(const char *name, hush_key_kdf *out)
{
    if (strcmp(name, "pbkdf2") == 0)
        *out = HUSH_KDF_PBKDF2;
    else if (strcmp(name, "scrypt") == 0)
        *out = HUSH_KDF_SCRYPT;
    else {
        PyErr_SetString(PyExc_ValueError, "kdf must be 'pbkdf2' or 'scrypt'");
        return -1;
    }
    return 0;
}

static PyObject *hpke_keypair_generate(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    hushpy_state *st = PyType_GetModuleState(type);
    if (st == NULL)
        return NULL;
    char *keywords[] = {"kem", NULL};
    long kem_value;
    uint16_t kem;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "l:generate", keywords, &kem_value) ||
        kem_arg(kem_value, &kem) < 0)
        return NULL;
    hush_hpke_keypair *kp = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_hpke_keypair_generate(kem, &kp, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return hpke_keypair_wrap(type, kp);
}

static PyObject *hpke_keypair_load(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    hushpy_state *st = PyType_GetModuleState(type);
    if (st == NULL)
        return NULL;
    char *keywords[] = {"path", "password", NULL};
    PyObject *path = NULL, *password_obj = Py_None;
    const char *password;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|O:load", keywords, PyUnicode_FSConverter,
                                     &path, &password_obj))
        return NULL;
    if (password_arg(password_obj, &password) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    hush_hpke_keypair *kp = NULL;
    hush_error err;
    hush_status status;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    status = hush_hpke_keypair_load_file(p, password, &kp, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return hpke_keypair_wrap(type, kp);
}

static PyObject *hpke_keypair_save(PyObject *op, PyObject *args, PyObject *kwargs)
{
    HpkeKeypairObject *self = (HpkeKeypairObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"path", "password", "kdf", "overwrite", NULL};
    PyObject *path = NULL, *password_obj = Py_None;
    const char *kdf_name = "pbkdf2", *password;
    int overwrite = 0;
    hush_key_kdf kdf;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|O$sp:save", keywords,
                                     PyUnicode_FSConverter, &path, &password_obj, &kdf_name,
                                     &overwrite))
        return NULL;
    if (password_arg(password_obj, &password) < 0 || kdf_arg(kdf_name, &kdf) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    hush_error err;
    hush_status status;
    const char *p = PyBytes_AS_STRING(path);
    unsigned flags = overwrite ? HUSH_KEYS_SAVE_OVERWRITE : HUSH_KEYS_SAVE_DEFAULT;
    Py_BEGIN_ALLOW_THREADS
    status = hush_hpke_keypair_save_file(self->kp, p, password, kdf, flags, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    Py_RETURN_NONE;
}

static PyObject *hpke_keypair_public_bytes(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    size_t len = 0;
    const unsigned char *bytes = hush_hpke_pubkey_bytes(((HpkeKeypairObject *)op)->pub, &len);
    return PyBytes_FromStringAndSize((const char *)bytes, (Py_ssize_t)len);
}

static PyObject *pubkey_fingerprint(hushpy_state *st, const hush_hpke_pubkey *pub)
{
    char fp[HUSH_FINGERPRINT_LEN];
    hush_error err;
    hush_status status = hush_hpke_pubkey_fingerprint(pub, fp, &err);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return PyUnicode_FromString(fp);
}

static PyObject *hpke_keypair_get_fingerprint(PyObject *op, void *Py_UNUSED(closure))
{
    return pubkey_fingerprint(PyType_GetModuleState(Py_TYPE(op)),
                              ((HpkeKeypairObject *)op)->pub);
}

static PyObject *hpke_keypair_get_kem(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(hush_hpke_keypair_kem(((HpkeKeypairObject *)op)->kp));
}

static PyObject *hpke_keypair_repr(PyObject *op)
{
    HpkeKeypairObject *self = (HpkeKeypairObject *)op;
    char fp[HUSH_FINGERPRINT_LEN];
    hush_error err;
    if (hush_hpke_pubkey_fingerprint(self->pub, fp, &err) != HUSH_OK)
        strcpy(fp, "?");
    return PyUnicode_FromFormat("<hushcall._core.HpkeKeypair kem=0x%04x %s>",
                                (unsigned)hush_hpke_keypair_kem(self->kp), fp);
}

hush_hpke_keypair *hushpy_hpke_keypair_get(hushpy_state *st, PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, st->hpke_keypair_type)) {
        PyErr_SetString(PyExc_TypeError, "expected an HpkeKeypair");
        return NULL;
    }
    return ((HpkeKeypairObject *)obj)->kp;
}

/* The suites a gateway offers with a key of `kem` (docs/protocol-v2.md):
 * EHBP's one for X25519, ChaCha20-Poly1305 then AES-256-GCM for X-Wing. */
static void offered_suites(uint16_t kem, hush_v2_keyconfig *cfg)
{
    cfg->ciphers[0] = (hush_v2_cipher){HUSH_HPKE_KDF_HKDF_SHA256, HUSH_HPKE_AEAD_AES_256_GCM};
    cfg->n_ciphers = 1;
    if (kem != HUSH_HPKE_KEM_XWING)
        return;
    cfg->ciphers[0].aead_id = HUSH_HPKE_AEAD_CHACHA20_POLY1305;
    cfg->ciphers[1] = (hush_v2_cipher){HUSH_HPKE_KDF_HKDF_SHA256, HUSH_HPKE_AEAD_AES_256_GCM};
    cfg->n_ciphers = 2;
}

/* One (key_id, HpkeKeypair) pair as a config borrowing the pair's public
 * key; -1 with TypeError/ValueError set. */
static int config_of(hushpy_state *st, PyObject *item, hush_v2_keyconfig *cfg)
{
    PyObject *pair_obj;
    int key_id;
    if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "iO", &key_id, &pair_obj)) {
        PyErr_SetString(PyExc_TypeError, "keys must be (key_id, HpkeKeypair) pairs");
        return -1;
    }
    if (key_id < 0 || key_id > 255) {
        PyErr_SetString(PyExc_ValueError, "key_id must be between 0 and 255");
        return -1;
    }
    if (hushpy_hpke_keypair_get(st, pair_obj) == NULL)
        return -1;
    HpkeKeypairObject *pair = (HpkeKeypairObject *)pair_obj;
    cfg->key_id = (uint8_t)key_id;
    cfg->pubkey = pair->pub; /* borrowed: never cleared here */
    offered_suites(hush_hpke_keypair_kem(pair->kp), cfg);
    return 0;
}

/* v2_key_configs(keys, *, bare=False): the configs a gateway publishes. */
PyObject *hushpy_v2_key_configs(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"keys", "bare", NULL};
    PyObject *keys, *result = NULL, *seq = NULL;
    int bare = 0;
    hush_v2_keyconfig *cfgs = NULL;
    hush_secbuf *out = NULL;
    hush_error err;
    hush_status status;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$p:v2_key_configs", keywords, &keys,
                                     &bare))
        return NULL;
    if ((seq = PySequence_Fast(keys, "keys must be a sequence")) == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (bare && n != 1) {
        PyErr_SetString(PyExc_ValueError, "a bare key config is exactly one key");
        goto cleanup;
    }
    if ((cfgs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof *cfgs)) == NULL) {
        PyErr_NoMemory();
        goto cleanup;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (config_of(st, PySequence_Fast_GET_ITEM(seq, i), &cfgs[i]) < 0)
            goto cleanup;
    status = hush_secbuf_new(256, 0, HUSH_SECMEM_PUBLIC, &out, &err);
    if (status == HUSH_OK)
        status = bare ? hush_v2_keyconfig_encode(&cfgs[0], out, &err)
                      : hush_v2_keyconfigs_encode(cfgs, (size_t)n, out, &err);
    if (status != HUSH_OK) {
        hushpy_raise(st, status, &err);
        goto cleanup;
    }
    result = PyBytes_FromStringAndSize((const char *)hush_secbuf_bytes(out),
                                       (Py_ssize_t)hush_secbuf_len(out));
cleanup:
    hush_secbuf_free(out);
    PyMem_Free(cfgs); /* the public keys are the pairs' own */
    Py_DECREF(seq);
    return result;
}

/* hpke_pubkey_fingerprint(kem, public_bytes): a client's view of a key
 * config's key, checked as DeserializePublicKey checks it. */
PyObject *hushpy_hpke_pubkey_fingerprint(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"kem", "public_bytes", NULL};
    long kem_value;
    uint16_t kem;
    Py_buffer key;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ly*:hpke_pubkey_fingerprint", keywords,
                                     &kem_value, &key))
        return NULL;
    PyObject *result = NULL;
    hush_hpke_pubkey *pub = NULL;
    hush_error err;
    hush_status status;
    if (kem_arg(kem_value, &kem) < 0)
        goto cleanup;
    status = hush_hpke_pubkey_from_bytes(kem, key.buf, (size_t)key.len, &pub, &err);
    if (status != HUSH_OK) {
        hushpy_raise(st, status, &err);
        goto cleanup;
    }
    result = pubkey_fingerprint(st, pub);
cleanup:
    hush_hpke_pubkey_free(pub);
    PyBuffer_Release(&key);
    return result;
}

static PyMethodDef hpke_keypair_methods[] = {
    {"generate", (PyCFunction)(void (*)(void))hpke_keypair_generate,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     PyDoc_STR("generate($type, /, kem)\n--\n\n"
               "Generate a key pair for HPKE_KEM_X25519_SHA256 or HPKE_KEM_XWING from\n"
               "OpenSSL's private DRBG (GIL released).")},
    {"load", (PyCFunction)(void (*)(void))hpke_keypair_load,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     PyDoc_STR("load($type, /, path, password=None)\n--\n\n"
               "Read an HPKE key file written by save() (GIL released). A symlink or a\n"
               "file others may read raises SecurityError, as does a wrong or missing\n"
               "password or a malformed file.")},
    {"save", (PyCFunction)(void (*)(void))hpke_keypair_save, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("save($self, /, path, password=None, *, kdf='pbkdf2', overwrite=False)\n--\n\n"
               "Write the private key to path (0600, staged beside it and renamed into\n"
               "place); with a password encrypted under a key derived with kdf\n"
               "('pbkdf2' or 'scrypt'). An existing file is refused unless overwrite.")},
    {"public_bytes", hpke_keypair_public_bytes, METH_NOARGS,
     PyDoc_STR("public_bytes($self, /)\n--\n\n"
               "The serialized public key (32 bytes for X25519, 1216 for X-Wing).")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hpke_keypair_getset[] = {
    {"fingerprint", hpke_keypair_get_fingerprint, NULL,
     PyDoc_STR("\"sha256:<hex>\" over the KEM id (2 bytes) and the public key."), NULL},
    {"kem", hpke_keypair_get_kem, NULL, PyDoc_STR("The HPKE KEM id (0x0020 or 0x647A)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot hpke_keypair_slots[] = {
    {Py_tp_dealloc, hpke_keypair_dealloc},
    {Py_tp_repr, hpke_keypair_repr},
    {Py_tp_methods, hpke_keypair_methods},
    {Py_tp_getset, hpke_keypair_getset},
    {Py_tp_doc, (void *)PyDoc_STR(
         "A server's HPKE key pair for protocol v2 (hush_hpke_keypair): made with\n"
         "HpkeKeypair.generate() or HpkeKeypair.load(). Immutable; the private key\n"
         "stays in the core's locked memory, is never exposed to Python, and is\n"
         "wiped when the last reference goes.")},
    {0, NULL},
};

PyType_Spec hushpy_hpke_keypair_spec = {
    .name = "hushcall._core.HpkeKeypair",
    .basicsize = sizeof(HpkeKeypairObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = hpke_keypair_slots,
};
