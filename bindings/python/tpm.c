/* tpm.c — Tpm: a connection to a TPM 2.0 (hush_tpm, tpm.h) for the
 * gateway, which hands it to Server(tpm=...) to quote the answers it asks
 * quotes for (handle(..., attest=True)). Opening
 * talks to the TPM, so it runs with the GIL released. */
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

static PyType_Slot tpm_slots[] = {
    {Py_tp_init, tpm_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, tpm_dealloc},
    {Py_tp_getset, tpm_getset},
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
