/* pinning.h — an attestation policy that pins one AIK, for the tests that
 * need a quote to count as verified (attest.h: verified only when pinned). */
#ifndef HUSH_TEST_PINNING_H
#define HUSH_TEST_PINNING_H

#include <stdio.h>
#include <string.h>

#include "check.h"
#include "hushcall/attest.h"

/* The policy {"aik_fingerprints": [fingerprint]}; NULL (and a failed check)
 * if it does not parse. The caller frees it. */
static inline hush_attest_policy *pinning_policy(const char *fingerprint)
{
    char json[256];
    hush_attest_policy *policy = NULL;
    snprintf(json, sizeof json, "{\"aik_fingerprints\":[\"%s\"]}", fingerprint);
    CHECK_OK(hush_attest_policy_parse(json, strlen(json), &policy, NULL), NULL);
    return policy;
}

#endif
