/* no_tpm.c — tpm.h, attest.h and enroll.h in a build without tpm2-tss
 * (-DHUSH_WITH_TPM=OFF), compiled instead of tpm.c, attest.c and enroll.c:
 * the same functions, refusing with HUSH_E_UNSUPPORTED. No policy can be
 * loaded, so a client refuses require_attestation and security_tier "maximum". */
#include <stdio.h>

#include "hushcall/attest.h"
#include "hushcall/enroll.h"
#include "hushcall/tpm.h"
#include "internal.h"

#define UNSUPPORTED "built without TPM support"

HUSH_MUST_USE
static hush_status unsupported(const char *what, hush_error *err)
{
    return hush__fail(err, HUSH_E_UNSUPPORTED, "%s: " UNSUPPORTED, what);
}

hush_status hush_tpm_open(const hush_tpm_options *opts, hush_tpm **out, hush_error *err)
{
    (void)opts;
    if (out != NULL)
        *out = NULL;
    return unsupported("hush_tpm_open", err);
}

void hush_tpm_close(hush_tpm *tpm)
{
    (void)tpm; /* none can exist */
}

const char *hush_tpm_pcr_banks(const hush_tpm *tpm)
{
    (void)tpm;
    return "";
}

hush_status hush_tpm_quote(hush_tpm *tpm, const char *payload_id, hush_json_writer *w,
                           hush_error *err)
{
    (void)tpm, (void)payload_id, (void)w;
    return unsupported("hush_tpm_quote", err);
}

hush_status hush_tpm_quote_bound(hush_tpm *tpm, const void *qualifying, size_t len,
                                 hush_json_writer *w, hush_error *err)
{
    (void)tpm, (void)qualifying, (void)len, (void)w;
    return unsupported("hush_tpm_quote_bound", err);
}

hush_status hush_tpm_ek_certificate(hush_tpm *tpm, unsigned char **der, size_t *len,
                                    hush_error *err)
{
    (void)tpm;
    if (der != NULL)
        *der = NULL;
    if (len != NULL)
        *len = 0;
    return unsupported("hush_tpm_ek_certificate", err);
}

hush_status hush_tpm_aik_public(hush_tpm *tpm, unsigned char *out, size_t cap, size_t *len,
                                hush_error *err)
{
    (void)tpm, (void)out, (void)cap;
    if (len != NULL)
        *len = 0;
    return unsupported("hush_tpm_aik_public", err);
}

hush_status hush_tpm_activate_credential(hush_tpm *tpm, const void *id_object, size_t id_len,
                                         const void *encrypted_secret, size_t secret_len,
                                         hush_secbuf **secret, hush_error *err)
{
    (void)tpm, (void)id_object, (void)id_len, (void)encrypted_secret, (void)secret_len;
    if (secret != NULL)
        *secret = NULL;
    return unsupported("hush_tpm_activate_credential", err);
}

hush_status hush_attest_policy_parse(const void *json, size_t len, hush_attest_policy **out,
                                     hush_error *err)
{
    (void)json, (void)len;
    if (out != NULL)
        *out = NULL;
    return unsupported("hush_attest_policy_parse", err);
}

hush_status hush_attest_policy_load(const char *path, hush_attest_policy **out, hush_error *err)
{
    (void)path;
    if (out != NULL)
        *out = NULL;
    return unsupported("hush_attest_policy_load", err);
}

void hush_attest_policy_free(hush_attest_policy *policy)
{
    (void)policy; /* none can exist */
}

bool hush_attest_policy_pins_aik(const hush_attest_policy *policy)
{
    (void)policy;
    return false;
}

/* v2's bindings cannot be checked here either: the qualifying data is
 * refused, and a quote is reported as hush_attest_verify reports one. */
hush_status hush_attest_key_config_qualifying(const unsigned char nonce[HUSH_ATTEST_NONCE_BYTES],
                                              const void *configs, size_t configs_len,
                                              unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES],
                                              hush_error *err)
{
    (void)nonce, (void)configs, (void)configs_len, (void)out;
    return unsupported("hush_attest_key_config_qualifying", err);
}

hush_status hush_attest_answer_qualifying(const void *enc, size_t enc_len,
                                          const unsigned char response_nonce[32],
                                          unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES],
                                          hush_error *err)
{
    (void)enc, (void)enc_len, (void)response_nonce, (void)out;
    return unsupported("hush_attest_answer_qualifying", err);
}

hush_status hush_attest_verify_bound(const hush_json_value *tpm_attestation,
                                     const unsigned char qualifying[HUSH_ATTEST_QUALIFYING_BYTES],
                                     const hush_attest_policy *policy, hush_attest_result *out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    (void)policy;
    HUSH_ENSURE(qualifying != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_attest_verify_bound: NULL argument");
    *out = (hush_attest_result){ .verified = false };
    snprintf(out->reason, sizeof out->reason, "%s",
             tpm_attestation == NULL ? "no attestation" : UNSUPPORTED);
cleanup:
    return status;
}

/* Every answer passes through here, so this one reports rather than fails:
 * a quote that cannot be checked is not verified, and says why. Nothing can
 * require it (no policy loads), so the answer is still released. */
hush_status hush_attest_verify(const hush_json_value *tpm_attestation, const char *payload_id,
                               const hush_attest_policy *policy, hush_attest_result *out,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    (void)policy;
    HUSH_ENSURE(payload_id != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_attest_verify: NULL argument");
    *out = (hush_attest_result){ .verified = false };
    snprintf(out->reason, sizeof out->reason, "%s",
             tpm_attestation == NULL ? "no attestation" : UNSUPPORTED);
cleanup:
    return status;
}

hush_status hush_enrolment_begin(const void *ek_cert, size_t ek_cert_len, const char *ek_ca_file,
                                 const void *aik_public, size_t aik_public_len,
                                 hush_enrolment **out, hush_error *err)
{
    (void)ek_cert, (void)ek_cert_len, (void)ek_ca_file, (void)aik_public, (void)aik_public_len;
    if (out != NULL)
        *out = NULL;
    return unsupported("hush_enrolment_begin", err);
}

const hush_credential *hush_enrolment_credential(const hush_enrolment *e)
{
    (void)e; /* none can exist */
    return NULL;
}

const char *hush_enrolment_aik_fingerprint(const hush_enrolment *e)
{
    (void)e;
    return NULL;
}

hush_status hush_enrolment_finish(hush_enrolment *e, const void *secret, size_t secret_len,
                                  hush_error *err)
{
    (void)e, (void)secret, (void)secret_len;
    return unsupported("hush_enrolment_finish", err);
}

void hush_enrolment_free(hush_enrolment *e)
{
    (void)e;
}
