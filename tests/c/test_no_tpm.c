/* test_no_tpm.c — a client-only build (-DHUSH_WITH_TPM=OFF): tpm.h and
 * attest.h keep their functions but refuse with HUSH_E_UNSUPPORTED, so a
 * client cannot be made to require attestation, while an answer's quote is
 * reported as unchecked rather than failing the call. Built only in that
 * configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

#define POLICY                              \
    "{\"aik_fingerprints\":[\"sha256:"      \
    "00000000000000000000000000000000"      \
    "00000000000000000000000000000000\"]}"

static char policy_path[64];

static void check_unsupported(hush_status status, const hush_error *err)
{
    CHECK_STATUS(status, HUSH_E_UNSUPPORTED, err);
    CHECK(strstr(err->message, "built without TPM support") != NULL);
}

static void test_tpm_refused(void)
{
    hush_tpm_options opts = {.tcti = "swtpm:host=127.0.0.1,port=2321"};
    hush_tpm *tpm = (hush_tpm *)&opts; /* must be overwritten */
    hush_error err = {0};
    check_unsupported(hush_tpm_open(&opts, &tpm, &err), &err);
    CHECK(tpm == NULL);
    hush_tpm_close(NULL);

    unsigned char q[32] = {0}, *der = q, pub[16];
    size_t len = 1;
    hush_secbuf *secret = (hush_secbuf *)&opts; /* must be overwritten */
    check_unsupported(hush_tpm_quote_bound(NULL, q, sizeof q, NULL, &err), &err);
    check_unsupported(hush_tpm_ek_certificate(NULL, &der, &len, &err), &err);
    CHECK(der == NULL && len == 0);
    len = 1;
    check_unsupported(hush_tpm_aik_public(NULL, pub, sizeof pub, &len, &err), &err);
    CHECK(len == 0);
    check_unsupported(hush_tpm_activate_credential(NULL, q, 2, q, 2, &secret, &err), &err);
    CHECK(secret == NULL);
}

static void test_policies_refused(void)
{
    hush_attest_policy *policy = (hush_attest_policy *)policy_path; /* must be overwritten */
    hush_error err = {0};
    check_unsupported(hush_attest_policy_parse(POLICY, strlen(POLICY), &policy, &err), &err);
    CHECK(policy == NULL);
    check_unsupported(hush_attest_policy_load(policy_path, &policy, &err), &err);
    CHECK(policy == NULL);
    CHECK(!hush_attest_policy_pins_aik(NULL));
    hush_attest_policy_free(NULL);
}

/* A quote, however well formed, cannot be checked: not verified, and why. */
static void test_enrolment_refused(void)
{
    hush_enrolment *e = (hush_enrolment *)policy_path; /* must be overwritten */
    hush_error err = {0};
    check_unsupported(hush_enrolment_begin("cert", 4, "ca.pem", "aik", 3, &e, &err), &err);
    CHECK(e == NULL);
    CHECK(hush_enrolment_credential(NULL) == NULL);
    hush_enrolment_free(NULL);
}

static void test_quotes_unchecked(void)
{
    hush_json_doc *doc = NULL;
    hush_error err = {0};
    const char *json = "{\"is_available\": true, \"quote_b64\": \"AA==\"}";
    CHECK_OK(hush_json_parse(json, strlen(json), NULL, 0, &doc, &err), &err);
    hush_attest_result result;
    CHECK_OK(hush_attest_verify(hush_json_doc_root(doc), "payload-1", NULL, &result, &err), &err);
    CHECK(!result.verified);
    CHECK(strcmp(result.reason, "built without TPM support") == 0);
    CHECK_OK(hush_attest_verify(NULL, "payload-1", NULL, &result, &err), &err);
    CHECK(!result.verified && strcmp(result.reason, "no attestation") == 0);
    CHECK_STATUS(hush_attest_verify(NULL, NULL, NULL, &result, &err), HUSH_E_ARGUMENT, &err);
    hush_json_doc_free(doc);
}

/* require_attestation and the maximum tier need a policy pinning an AIK,
 * and no policy loads. */
static void test_client_refuses_required_attestation(void)
{
    const char *tiers[] = {NULL, "maximum"};
    for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++) {
        hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
        o.base_url = "https://127.0.0.1:9";
        o.key_bits = 2048;
        o.require_attestation = tiers[i] == NULL;
        o.security_tier = tiers[i];
        o.attestation_policy = policy_path;
        hush_client *c = NULL;
        hush_error err = {0};
        check_unsupported(hush_client_new(&o, &c, &err), &err);
        CHECK(c == NULL);
    }
}

/* The policy a TPM build accepts, on disk for hush_attest_policy_load. */
static bool write_policy(void)
{
    snprintf(policy_path, sizeof policy_path, "/tmp/hush-no-tpm-XXXXXX");
    int fd = mkstemp(policy_path);
    if (fd < 0)
        return false;
    bool ok = write(fd, POLICY, strlen(POLICY)) == (ssize_t)strlen(POLICY);
    close(fd);
    return ok;
}

int main(void)
{
    if (!write_policy()) {
        fprintf(stderr, "cannot write a policy file in /tmp\n");
        return 1;
    }
    RUN_TEST(test_tpm_refused);
    RUN_TEST(test_policies_refused);
    RUN_TEST(test_enrolment_refused);
    RUN_TEST(test_quotes_unchecked);
    RUN_TEST(test_client_refuses_required_attestation);
    unlink(policy_path);
    return check_report();
}
