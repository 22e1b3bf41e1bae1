/* fuzz_attest.c — hush_attest_verify on arbitrary input. The first byte
 * picks the mode: 0 treats the rest as JSON (a tpm_attestation object, or a
 * test vector {"payload_id", "tpm_attestation"}); 1, 2, 3 place the rest as
 * the raw AIK, quote or signature blob into an otherwise valid quote made by
 * swtpm. Nothing may crash or over-read, a refusal is never an error, and a
 * quote blob other than the one the TPM signed must never verify. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/hushcall.h"
#include "hushcall/attest.h"
#include "hushcall/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* tests/c/data/attest/ecc_p256_ecdsa.json */
#define PAYLOAD_ID "chatcmpl-vector-ecc-0001"
#define PCR_BANKS "sha256:0,7,10"
#define PCR_VALUES                                                                           \
    "{\"sha256\":{\"0\":\"61fbc99085666ab80fb6cc43c9f61aebe2439237c0f0c88d808554e32790c417\"," \
    "\"7\":\"6970af09540a39dbd6ec5201fe3692efc0b18e9771480b2dea41cbd25def5f14\","             \
    "\"10\":\"6e6b7f5da85a48b915ca44210c8a44813d83e6f409ec7210d88aca7c1ef5bcd4\"}}"
static const char *const BLOBS[3] = {
    "AFgAIwALAAUAcgAAABAAGAALAAMAEAAghIsngh6RuypU05+WIFli6XPeGJXmNsSFAmsDwdzx3qMAINVpjHk4te45eT7"
    "gxa6ZiKD1ttACrqtuEENys8JN/Kw0",
    "AIH/VENHgBgAIgALgv8CrD/IaPz8631ByyieGadoX6oxJuz8omzFGMoWV4IAEO63NDYpAWK00XgP9nq8h2kAAAAAAAA"
    "AtwAAAAEAAAAAASAZECMAFjY2AAAAAQALA4EEAAAgP8x3MyYQZMIxXpj/8ALvuC6cx0EZc4Lxw2UvNalvpwE=",
    "ABgACwAgiHu7h7KVQnTOaFIcIFRSeyVH3BGzjzHfBVriFpksIF8AIONqDGNkZVYYptfyY9CqFd7/XUFoDgTrDM3t+Pw"
    "g5xqQ",
};
enum { AIK, QUOTE, SIG };

static void check_result(hush_status s, const hush_attest_result *r)
{
    if (s != HUSH_OK && s != HUSH_E_NOMEM)
        abort();
    if (memchr(r->reason, '\0', sizeof r->reason) == NULL || r->reason[0] == '\0')
        abort();
    if (memchr(r->aik_fingerprint, '\0', sizeof r->aik_fingerprint) == NULL)
        abort();
    if (r->verified != (strcmp(r->reason, "ok") == 0))
        abort();
}

static void fuzz_json(const uint8_t *data, size_t size)
{
    hush_json_doc *doc = NULL;
    hush_attest_result r;
    if (hush_json_parse(data, size, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) != HUSH_OK)
        return;
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *att = hush_json_object_get(root, "tpm_attestation", 15);
    const char *payload_id = hush_json_string(hush_json_object_get(root, "payload_id", 10), NULL);
    if (att == NULL || payload_id == NULL) {
        att = root;
        payload_id = PAYLOAD_ID;
    }
    check_result(hush_attest_verify(att, payload_id, NULL, &r, NULL), &r);
    hush_json_doc_free(doc);
}

static void fuzz_blob(int which, const uint8_t *data, size_t size)
{
    size_t b64_cap = hush_base64_encoded_len(size) + 1;
    char *b64 = malloc(b64_cap);
    size_t b64_len = 0;
    if (b64 == NULL || hush_base64_encode(data, size, b64, b64_cap, &b64_len, NULL) != HUSH_OK) {
        free(b64);
        return;
    }
    const char *blob[3] = {BLOBS[0], BLOBS[1], BLOBS[2]};
    blob[which] = b64;
    size_t cap = b64_len + 2048;
    char *json = malloc(cap);
    hush_json_doc *doc = NULL;
    if (json == NULL)
        abort();
    int n = snprintf(json, cap,
                     "{\"is_available\":true,\"pcr_banks\":\"" PCR_BANKS "\",\"pcr_values\":"
                     PCR_VALUES ",\"aik_pubkey_b64\":\"%s\",\"quote_b64\":\"%s\","
                     "\"signature_b64\":\"%s\"}",
                     blob[AIK], blob[QUOTE], blob[SIG]);
    if (n < 0 || (size_t)n >= cap ||
        hush_json_parse(json, (size_t)n, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) != HUSH_OK)
        abort();
    hush_attest_result r;
    check_result(hush_attest_verify(hush_json_doc_root(doc), PAYLOAD_ID, NULL, &r, NULL), &r);
    /* The signature covers the quote: any other quote checking out (which,
     * with no policy pinning its AIK, is "unpinned aik") is a forgery. (An
     * altered AIK may still check out when only its unsigned fields changed,
     * and an ECDSA signature (r, n - s) is as valid as (r, s).) */
    if (which == QUOTE && strcmp(r.reason, HUSH_ATTEST_UNPINNED_AIK) == 0 &&
        strcmp(b64, BLOBS[QUOTE]) != 0)
        abort();
    hush_json_doc_free(doc);
    free(json);
    free(b64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int mode = data[0] % 4;
    if (mode == 0)
        fuzz_json(data + 1, size - 1);
    else
        fuzz_blob(mode - 1, data + 1, size - 1);
    return 0;
}
