/* attest.c — protocol v2's attestation for Python: the two qualifying-data
 * formulas and quote verification (attest.h), and Enrolment, the client's
 * side of enrolling an AIK by its TPM's EK certificate (enroll.h). Added to
 * the module by its own exec slot, so the other sources need not know it. */
#include "hushpy.h"

#include <string.h>

/* ---- qualifying data ------------------------------------------------------ */

/* A bytes argument of exactly `want` bytes, or -1 with ValueError set. */
static int exact_length(const Py_buffer *buf, size_t want, const char *name)
{
    if ((size_t)buf->len != want) {
        PyErr_Format(PyExc_ValueError, "%s must be %zu bytes", name, want);
        return -1;
    }
    return 0;
}

static PyObject *qualifying_result(hushpy_state *st, hush_status status, const hush_error *err,
                                   const unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES])
{
    if (status != HUSH_OK)
        return hushpy_raise(st, status, err);
    return PyBytes_FromStringAndSize((const char *)out, HUSH_ATTEST_QUALIFYING_BYTES);
}

static PyObject *key_config_qualifying(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"nonce", "configs", NULL};
    Py_buffer nonce, configs;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*:attest_key_config_qualifying", keywords,
                                     &nonce, &configs))
        return NULL;
    if (exact_length(&nonce, HUSH_ATTEST_NONCE_BYTES, "nonce") == 0) {
        unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES];
        hush_error err;
        hush_status status = hush_attest_key_config_qualifying(nonce.buf, configs.buf,
                                                               (size_t)configs.len, out, &err);
        result = qualifying_result(st, status, &err, out);
    }
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&configs);
    return result;
}

static PyObject *answer_qualifying(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"enc", "response_nonce", NULL};
    Py_buffer enc, response_nonce;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*:attest_answer_qualifying", keywords,
                                     &enc, &response_nonce))
        return NULL;
    if (exact_length(&response_nonce, 32, "response_nonce") == 0) {
        unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES];
        hush_error err;
        hush_status status = hush_attest_answer_qualifying(enc.buf, (size_t)enc.len,
                                                           response_nonce.buf, out, &err);
        result = qualifying_result(st, status, &err, out);
    }
    PyBuffer_Release(&enc);
    PyBuffer_Release(&response_nonce);
    return result;
}

/* ---- verify_bound ----------------------------------------------------------- */

static PyObject *result_dict(const hush_attest_result *r)
{
    PyObject *fingerprint = Py_None;
    if (r->aik_fingerprint[0] != '\0')
        fingerprint = PyUnicode_FromString(r->aik_fingerprint);
    else
        Py_INCREF(fingerprint);
    if (fingerprint == NULL)
        return NULL;
    return Py_BuildValue("{sOsssN}", "verified", r->verified ? Py_True : Py_False, "reason",
                         r->reason, "aik_fingerprint", fingerprint);
}

/* The quote object and the policy arrive as JSON text (str or bytes); both
 * are public, so they are parsed into ordinary memory. */
static PyObject *verify_bound(PyObject *module, PyObject *args, PyObject *kwargs)
{
    hushpy_state *st = PyModule_GetState(module);
    char *keywords[] = {"tpm_attestation", "qualifying", "policy", NULL};
    const char *att_text, *policy_text = NULL;
    Py_ssize_t att_len, policy_len = 0;
    Py_buffer qualifying;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#y*|z#:attest_verify_bound", keywords,
                                     &att_text, &att_len, &qualifying, &policy_text, &policy_len))
        return NULL;
    PyObject *result = NULL;
    hush_json_doc *doc = NULL;
    hush_attest_policy *policy = NULL;
    hush_attest_result verdict;
    hush_error err;
    hush_status status = HUSH_OK;
    if (exact_length(&qualifying, HUSH_ATTEST_QUALIFYING_BYTES, "qualifying") < 0)
        goto done;
    if (policy_text != NULL)
        status = hush_attest_policy_parse(policy_text, (size_t)policy_len, &policy, &err);
    if (status == HUSH_OK)
        status = hush_json_parse(att_text, (size_t)att_len, NULL, HUSH_SECMEM_PUBLIC, &doc, &err);
    if (status == HUSH_OK)
        status = hush_attest_verify_bound(hush_json_doc_root(doc), qualifying.buf, policy,
                                          &verdict, &err);
    result = status == HUSH_OK ? result_dict(&verdict) : hushpy_raise(st, status, &err);
done:
    hush_json_doc_free(doc);
    hush_attest_policy_free(policy);
    PyBuffer_Release(&qualifying);
    return result;
}

static PyMethodDef attest_methods[] = {
    {"attest_key_config_qualifying", (PyCFunction)(void (*)(void))key_config_qualifying,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("attest_key_config_qualifying($module, /, nonce, configs)\n--\n\n"
               "The 32-byte qualifying data of a key-config attestation:\n"
               "SHA-256(\"hushcall-v2 key attestation\" || 0x00 || nonce || configs),\n"
               "nonce 32 bytes, configs the served key-config list.")},
    {"attest_answer_qualifying", (PyCFunction)(void (*)(void))answer_qualifying,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("attest_answer_qualifying($module, /, enc, response_nonce)\n--\n\n"
               "The 32-byte qualifying data of an answer's quote:\n"
               "SHA-256(\"hushcall-v2 answer attestation\" || 0x00 || response_nonce || enc).")},
    {"attest_verify_bound", (PyCFunction)(void (*)(void))verify_bound,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("attest_verify_bound($module, /, tpm_attestation, qualifying, policy=None)\n--\n\n"
               "Verify a tpm_attestation object (its JSON text) whose qualifying data must\n"
               "be `qualifying`, under a policy (its JSON text, or None). Returns\n"
               "{\"verified\": bool, \"reason\": str, \"aik_fingerprint\": str or None}; a\n"
               "quote that fails is a verdict, malformed JSON or policy an exception.")},
    {NULL, NULL, 0, NULL},
};

/* ---- Enrolment ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    hush_enrolment *enrolment; /* NULL only if __init__ failed */
} EnrolmentObject;

static int enrolment_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    EnrolmentObject *self = (EnrolmentObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"ek_certificate", "ek_ca_file", "aik_public", NULL};
    Py_buffer cert, aik;
    PyObject *ca_file = NULL;
    if (self->enrolment != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Enrolment is already begun");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O&y*:Enrolment", keywords, &cert,
                                     PyUnicode_FSConverter, &ca_file, &aik))
        return -1;
    hush_error err;
    hush_status status;
    const char *ca_path = PyBytes_AS_STRING(ca_file);
    /* Reads the CA file and encrypts to the EK: no Python objects touched. */
    Py_BEGIN_ALLOW_THREADS
    status = hush_enrolment_begin(cert.buf, (size_t)cert.len, ca_path, aik.buf, (size_t)aik.len,
                                  &self->enrolment, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&cert);
    PyBuffer_Release(&aik);
    Py_DECREF(ca_file);
    if (status != HUSH_OK) {
        hushpy_raise(st, status, &err);
        return -1;
    }
    return 0;
}

static void enrolment_dealloc(PyObject *op)
{
    EnrolmentObject *self = (EnrolmentObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_enrolment_free(self->enrolment); /* wipes the secret */
    self->enrolment = NULL;
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* The credential of a begun enrolment, or NULL with RuntimeError set. */
static const hush_credential *enrolment_credential(PyObject *op)
{
    const hush_credential *c = hush_enrolment_credential(((EnrolmentObject *)op)->enrolment);
    if (c == NULL)
        PyErr_SetString(PyExc_RuntimeError, "Enrolment was never begun");
    return c;
}

static PyObject *enrolment_get_id_object(PyObject *op, void *Py_UNUSED(closure))
{
    const hush_credential *c = enrolment_credential(op);
    return c == NULL ? NULL
                     : PyBytes_FromStringAndSize((const char *)c->id_object,
                                                 (Py_ssize_t)c->id_object_len);
}

static PyObject *enrolment_get_encrypted_secret(PyObject *op, void *Py_UNUSED(closure))
{
    const hush_credential *c = enrolment_credential(op);
    return c == NULL ? NULL
                     : PyBytes_FromStringAndSize((const char *)c->encrypted_secret,
                                                 (Py_ssize_t)c->encrypted_secret_len);
}

static PyObject *enrolment_get_aik_fingerprint(PyObject *op, void *Py_UNUSED(closure))
{
    if (enrolment_credential(op) == NULL)
        return NULL;
    return PyUnicode_FromString(hush_enrolment_aik_fingerprint(((EnrolmentObject *)op)->enrolment));
}

static PyObject *enrolment_finish(PyObject *op, PyObject *args, PyObject *kwargs)
{
    EnrolmentObject *self = (EnrolmentObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"secret", NULL};
    Py_buffer secret;
    if (enrolment_credential(op) == NULL ||
        !PyArg_ParseTupleAndKeywords(args, kwargs, "y*:finish", keywords, &secret))
        return NULL;
    hush_error err;
    hush_status status =
        hush_enrolment_finish(self->enrolment, secret.buf, (size_t)secret.len, &err);
    PyBuffer_Release(&secret);
    if (status != HUSH_OK)
        return hushpy_raise(st, status, &err);
    Py_RETURN_NONE;
}

static PyGetSetDef enrolment_getset[] = {
    {"id_object", enrolment_get_id_object, NULL,
     PyDoc_STR("The credential's TPM2B_ID_OBJECT, marshalled (size prefix included)."), NULL},
    {"encrypted_secret", enrolment_get_encrypted_secret, NULL,
     PyDoc_STR("The credential's TPM2B_ENCRYPTED_SECRET, marshalled."), NULL},
    {"aik_fingerprint", enrolment_get_aik_fingerprint, NULL,
     PyDoc_STR("\"sha256:<hex>\" of the AIK, as a policy's aik_fingerprints lists it."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef enrolment_methods[] = {
    {"finish", (PyCFunction)(void (*)(void))enrolment_finish, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("finish($self, /, secret)\n--\n\n"
               "Compare the secret the server's TPM recovered with the one sent (constant\n"
               "time). SecurityError (kind \"attestation\") when they differ; an enrolment\n"
               "finishes once (InvalidArgumentError after).")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot enrolment_slots[] = {
    {Py_tp_init, enrolment_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, enrolment_dealloc},
    {Py_tp_getset, enrolment_getset},
    {Py_tp_methods, enrolment_methods},
    {Py_tp_doc, (void *)PyDoc_STR(
         "Enrolment(ek_certificate, ek_ca_file, aik_public)\n--\n\n"
         "Enrol an AIK by its TPM's EK certificate (docs/attestation.md): checks the\n"
         "DER certificate chains to the PEM CA file and that the AIK (a marshalled\n"
         "TPM2B_PUBLIC) is a restricted signing key fixed to its TPM, then makes a\n"
         "credential of a fresh secret for the AIK's name to the EK.")},
    {0, NULL},
};

static PyType_Spec enrolment_spec = {
    .name = "hushcall._core.Enrolment",
    .basicsize = sizeof(EnrolmentObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = enrolment_slots,
};

int hushpy_attest_exec(PyObject *module)
{
    if (PyModule_AddFunctions(module, attest_methods) < 0)
        return -1;
    PyObject *type = PyType_FromModuleAndSpec(module, &enrolment_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddType(module, (PyTypeObject *)type);
    Py_DECREF(type); /* the module holds it */
    return rc;
}
