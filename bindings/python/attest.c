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

int hushpy_attest_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, attest_methods);
}
