/* tpm.c — Tpm: a connection to a TPM 2.0 (hush_tpm, tpm.h) for the
 * gateway, which hands it to Server(tpm=...) to quote the answers it asks
 * quotes for (handle(..., attest=True)), quotes its v2 key configs
 * (quote_bound) and serves AIK enrolment (ek_certificate, aik_public,
 * activate_credential). Every call that talks to the TPM runs with the GIL
 * released: the hush_tpm serialises them under its own lock. */
#include "hushpy.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    hush_tpm *tpm; /* NULL only if __init__ failed */
} TpmObject;

hush_tpm *hushpy_tpm_get(hushpy_state *st, PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, st->tpm_type) || ((TpmObject *)obj)->tpm == NULL) {
        PyErr_Format(PyExc_TypeError, "tpm must be an opened hushcall._core.Tpm, not %.200s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((TpmObject *)obj)->tpm;
}

static int tpm_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    TpmObject *self = (TpmObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"tcti", "pcrs", "key_alg", "persistent_handle", NULL};
    const char *tcti, *pcrs = NULL, *key_alg = "ecc";
    unsigned long handle = 0;
    if (self->tpm != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Tpm is already open");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|$zsk:Tpm", keywords, &tcti, &pcrs,
                                     &key_alg, &handle))
        return -1;
    hush_tpm_options o = HUSH_TPM_OPTIONS_INIT;
    o.tcti = tcti;
    o.pcrs = pcrs;
    o.persistent_handle = (uint32_t)handle;
    if (strcmp(key_alg, "ecc") == 0) {
        o.key_alg = HUSH_TPM_KEY_ECC_P256;
    } else if (strcmp(key_alg, "rsa") == 0) {
        o.key_alg = HUSH_TPM_KEY_RSA_2048;
    } else {
        PyErr_SetString(PyExc_ValueError, "key_alg must be \"ecc\" or \"rsa\"");
        return -1;
    }
    if (handle > 0xffffffffUL) {
        PyErr_SetString(PyExc_ValueError, "persistent_handle must fit in 32 bits");
        return -1;
    }
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_tpm_open(&o, &self->tpm, &err);
    Py_END_ALLOW_THREADS
    if (status != HUSH_OK) {
        hushpy_raise(st, status, &err);
        return -1;
    }
    return 0;
}

static void tpm_dealloc(PyObject *op)
{
    TpmObject *self = (TpmObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_tpm_close(self->tpm);
    self->tpm = NULL;
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *tpm_get_pcr_banks(PyObject *op, void *Py_UNUSED(closure))
{
    TpmObject *self = (TpmObject *)op;
    if (self->tpm == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(hush_tpm_pcr_banks(self->tpm));
}

static PyGetSetDef tpm_getset[] = {
    {"pcr_banks", tpm_get_pcr_banks, NULL,
     PyDoc_STR("The quoted PCR selection, \"sha256:0,7,10\"."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};


/* The opened hush_tpm, or NULL with an exception set. */
static hush_tpm *opened(PyObject *op)
{
    TpmObject *self = (TpmObject *)op;
    if (self->tpm == NULL)
        PyErr_SetString(PyExc_RuntimeError, "Tpm is not open");
    return self->tpm;
}

/* {"is_available": true, ...}: the members hush_tpm_quote_bound writes, in
 * an object of their own. */
static hush_status quote_bound_text(hush_tpm *tpm, const Py_buffer *qualifying,
                                    hush_secbuf **text, hush_error *err)
{
    hush_json_writer *w = NULL;
    hush_status status = hush_secbuf_new(4096, 0, HUSH_SECMEM_PUBLIC, text, err);
    if (status == HUSH_OK)
        status = hush_json_writer_new(*text, HUSH_JSON_WRITE_COMPACT, 0, &w, err);
    if (status == HUSH_OK)
        status = hush_json_write_object_begin(w, err);
    if (status == HUSH_OK)
        status = hush_tpm_quote_bound(tpm, qualifying->buf, (size_t)qualifying->len, w, err);
    if (status == HUSH_OK)
        status = hush_json_write_object_end(w, err);
    hush_json_writer_free(w);
    return status;
}

static PyObject *tpm_quote_bound(PyObject *op, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"qualifying", NULL};
    Py_buffer qualifying;
    hush_tpm *tpm = opened(op);
    if (tpm == NULL ||
        !PyArg_ParseTupleAndKeywords(args, kwargs, "y*:quote_bound", keywords, &qualifying))
        return NULL;
    hush_secbuf *text = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = quote_bound_text(tpm, &qualifying, &text, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&qualifying);
    PyObject *result = status == HUSH_OK
                           ? PyUnicode_FromStringAndSize((const char *)hush_secbuf_data(text),
                                                         (Py_ssize_t)hush_secbuf_len(text))
                           : hushpy_raise(st, status, &err);
    hush_secbuf_free(text);
    return result;
}

static PyObject *tpm_ek_certificate(PyObject *op, PyObject *Py_UNUSED(args))
{
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    hush_tpm *tpm = opened(op);
    if (tpm == NULL)
        return NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_tpm_ek_certificate(tpm, &der, &len, &err);
    Py_END_ALLOW_THREADS
    PyObject *result = status == HUSH_OK
                           ? PyBytes_FromStringAndSize((const char *)der, (Py_ssize_t)len)
                           : hushpy_raise(st, status, &err);
    free(der);
    return result;
}

static PyObject *tpm_aik_public(PyObject *op, PyObject *Py_UNUSED(args))
{
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    hush_tpm *tpm = opened(op);
    if (tpm == NULL)
        return NULL;
    unsigned char pub[1024]; /* tpm.h: always enough */
    size_t len = 0;
    hush_error err;
    hush_status status = hush_tpm_aik_public(tpm, pub, sizeof pub, &len, &err);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    return PyBytes_FromStringAndSize((const char *)pub, (Py_ssize_t)len);
}

static PyObject *tpm_activate_credential(PyObject *op, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"id_object", "encrypted_secret", NULL};
    Py_buffer id_object, encrypted_secret;
    hush_tpm *tpm = opened(op);
    if (tpm == NULL || !PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*:activate_credential",
                                                    keywords, &id_object, &encrypted_secret))
        return NULL;
    hush_secbuf *secret = NULL;
    hush_error err;
    hush_status status;
    Py_BEGIN_ALLOW_THREADS
    status = hush_tpm_activate_credential(tpm, id_object.buf, (size_t)id_object.len,
                                          encrypted_secret.buf, (size_t)encrypted_secret.len,
                                          &secret, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&id_object);
    PyBuffer_Release(&encrypted_secret);
    /* A one-time challenge that goes back to the client in clear anyway:
     * bytes are fine for it. */
    PyObject *result = status == HUSH_OK
                           ? PyBytes_FromStringAndSize((const char *)hush_secbuf_data(secret),
                                                       (Py_ssize_t)hush_secbuf_len(secret))
                           : hushpy_raise(st, status, &err);
    hush_secbuf_free(secret);
    return result;
}

static PyMethodDef tpm_methods[] = {
    {"quote_bound", (PyCFunction)(void (*)(void))tpm_quote_bound, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("quote_bound($self, /, qualifying)\n--\n\n"
               "Quote the PCRs with qualifying (1..32 bytes: on v2 the key-config or answer\n"
               "qualifying data) and return the JSON object text\n"
               "{\"is_available\": true, \"pcr_banks\", \"pcr_values\", \"aik_pubkey_b64\",\n"
               "\"quote_b64\", \"signature_b64\"}. InvalidArgumentError for 0 or more than 32\n"
               "bytes.")},
    {"ek_certificate", tpm_ek_certificate, METH_NOARGS,
     PyDoc_STR("ek_certificate($self, /)\n--\n\n"
               "The TPM's EK certificate (DER) from NV 0x01C00002 (RSA-2048), else\n"
               "0x01C0000A (P-256). HushcallError (kind \"not_found\") when it holds neither.")},
    {"aik_public", tpm_aik_public, METH_NOARGS,
     PyDoc_STR("aik_public($self, /)\n--\n\n"
               "The persistent AIK's public area, a marshalled TPM2B_PUBLIC (the form of\n"
               "aik_pubkey_b64). SecurityError (kind \"unsupported\") for an ephemeral AIK.")},
    {"activate_credential", (PyCFunction)(void (*)(void))tpm_activate_credential,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("activate_credential($self, /, id_object, encrypted_secret)\n--\n\n"
               "TPM2_ActivateCredential of a credential made for the persistent AIK to the\n"
               "EK of ek_certificate() (the marshalled TPM2B_ID_OBJECT and\n"
               "TPM2B_ENCRYPTED_SECRET); returns the secret. SecurityError of kind \"auth\"\n"
               "when the TPM refuses the credential, \"format\" for blobs that do not\n"
               "unmarshal, \"unsupported\" for an ephemeral AIK.")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tpm_slots[] = {
    {Py_tp_init, tpm_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, tpm_dealloc},
    {Py_tp_getset, tpm_getset},
    {Py_tp_methods, tpm_methods},
    {Py_tp_doc, (void *)PyDoc_STR(
         "Tpm(tcti, *, pcrs=None, key_alg='ecc', persistent_handle=0)\n--\n\n"
         "A TPM 2.0 reached through a tss2 TCTI (\"swtpm:host=127.0.0.1,port=2321\",\n"
         "\"device:/dev/tpmrm0\"), quoting pcrs (default \"sha256:0,7,10\") with a fresh\n"
         "AIK per quote (key_alg \"ecc\" or \"rsa\") or the key at persistent_handle.")},
    {0, NULL},
};

PyType_Spec hushpy_tpm_spec = {
    .name = "hushcall._core.Tpm",
    .basicsize = sizeof(TpmObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tpm_slots,
};
