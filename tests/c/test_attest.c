/* test_attest.c — hush_attest_verify against quotes made by swtpm and
 * tpm2-tools (tests/interop/tpm_vectors.py, committed under data/attest),
 * and against every way of spoiling them: flipped bits, truncation,
 * trailing bytes, missing members, other payload ids, policies. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "pinning.h"
#include "hushcall/attest.h"
#include "hushcall/base64.h"

#ifndef HUSH_TEST_DATA_DIR
#error "HUSH_TEST_DATA_DIR must name tests/c/data"
#endif

#define BLOB 4096
#define JSON_MAX 32768

enum { AIK, QUOTE, SIG, NBLOBS };
static const char *const BLOB_MEMBER[NBLOBS] = {"aik_pubkey_b64", "quote_b64", "signature_b64"};

typedef struct vec {
    char payload_id[128];
    char banks[128];
    size_t npcr;
    struct {
        char bank[8];
        char index[4];
        char hex[130];
    } pcr[64];
    unsigned char blob[NBLOBS][BLOB];
    size_t len[NBLOBS];
} vec;

static const char *const VECTORS[] = {"ecc_p256_ecdsa", "rsa2048_rsassa", "rsa2048_rsapss",
                                      "ecc_p256_multibank"};
#define NVECTORS (sizeof VECTORS / sizeof VECTORS[0])

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(JSON_MAX);
    *len = buf != NULL ? fread(buf, 1, JSON_MAX, f) : 0;
    fclose(f);
    return buf;
}

static bool copy_string(const hush_json_value *v, char *out, size_t cap)
{
    size_t len;
    const char *s = hush_json_string(v, &len);
    if (s == NULL || len >= cap)
        return false;
    memcpy(out, s, len + 1);
    return true;
}

static bool load_vec(const char *name, vec *v)
{
    char path[512];
    size_t len = 0;
    hush_json_doc *doc = NULL;
    bool ok = false;
    memset(v, 0, sizeof *v);
    snprintf(path, sizeof path, "%s/attest/%s.json", HUSH_TEST_DATA_DIR, name);
    char *text = read_text(path, &len);
    if (text == NULL || hush_json_parse(text, len, NULL, HUSH_SECMEM_PUBLIC, &doc, NULL) != HUSH_OK)
        goto done;
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *att = hush_json_object_get(root, "tpm_attestation", 15);
    if (!copy_string(hush_json_object_get(root, "payload_id", 10), v->payload_id,
                     sizeof v->payload_id) ||
        !copy_string(hush_json_object_get(att, "pcr_banks", 9), v->banks, sizeof v->banks))
        goto done;
    for (int b = 0; b < NBLOBS; b++) {
        size_t slen;
        const char *s = hush_json_string(
            hush_json_object_get(att, BLOB_MEMBER[b], strlen(BLOB_MEMBER[b])), &slen);
        if (s == NULL || hush_base64_decode(s, slen, v->blob[b], BLOB, &v->len[b], NULL) != HUSH_OK)
            goto done;
    }
    const hush_json_value *values = hush_json_object_get(att, "pcr_values", 10);
    for (size_t i = 0; i < hush_json_length(values); i++) {
        const char *bank;
        size_t bank_len;
        const hush_json_value *obj;
        hush_json_object_member(values, i, &bank, &bank_len, &obj);
        for (size_t j = 0; j < hush_json_length(obj); j++) {
            const char *index;
            size_t index_len;
            const hush_json_value *hex;
            hush_json_object_member(obj, j, &index, &index_len, &hex);
            if (v->npcr == 64 || bank_len >= 8 || index_len >= 4 ||
                !copy_string(hex, v->pcr[v->npcr].hex, sizeof v->pcr[0].hex))
                goto done;
            memcpy(v->pcr[v->npcr].bank, bank, bank_len + 1);
            memcpy(v->pcr[v->npcr].index, index, index_len + 1);
            v->npcr++;
        }
    }
    ok = true;
done:
    if (!ok)
        fprintf(stderr, "cannot load vector %s\n", path);
    hush_json_doc_free(doc);
    free(text);
    return ok;
}

/* Append to buf; the tests' JSON always fits. */
static void put(char *buf, size_t *pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char *buf, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, JSON_MAX - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos += (size_t)n;
    if (*pos >= JSON_MAX)
        abort();
}

/* The vector as a tpm_attestation object; `omit` leaves out a member,
 * `replace` gives it the raw JSON `with` instead. */
static size_t vec_json(const vec *v, const char *omit, const char *replace, const char *with,
                       char *buf)
{
    size_t pos = 0;
    put(buf, &pos, "{\"is_available\":true");
    const char *names[] = {"pcr_banks", "pcr_values", "aik_pubkey_b64", "quote_b64",
                           "signature_b64"};
    for (int m = 0; m < 5; m++) {
        if (omit != NULL && strcmp(omit, names[m]) == 0)
            continue;
        put(buf, &pos, ",\"%s\":", names[m]);
        if (replace != NULL && strcmp(replace, names[m]) == 0) {
            put(buf, &pos, "%s", with);
        } else if (m == 0) {
            put(buf, &pos, "\"%s\"", v->banks);
        } else if (m == 1) {
            put(buf, &pos, "{");
            for (size_t i = 0; i < v->npcr; i++) {
                bool first_of_bank = i == 0 || strcmp(v->pcr[i].bank, v->pcr[i - 1].bank) != 0;
                if (first_of_bank)
                    put(buf, &pos, "%s\"%s\":{", i == 0 ? "" : "},", v->pcr[i].bank);
                put(buf, &pos, "%s\"%s\":\"%s\"", first_of_bank ? "" : ",", v->pcr[i].index,
                    v->pcr[i].hex);
            }
            put(buf, &pos, "%s}", v->npcr > 0 ? "}" : "");
        } else {
            char b64[2 * BLOB];
            size_t b64_len;
            if (hush_base64_encode(v->blob[m - 2], v->len[m - 2], b64, sizeof b64, &b64_len,
                                   NULL) != HUSH_OK)
                abort();
            put(buf, &pos, "\"%s\"", b64);
        }
    }
    put(buf, &pos, "}");
    return pos;
}

static hush_status verify_json(const char *json, size_t len, const char *payload_id,
                               const hush_attest_policy *policy, hush_attest_result *r)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    if (hush_json_parse(json, len, NULL, HUSH_SECMEM_PUBLIC, &doc, &err) != HUSH_OK) {
        fprintf(stderr, "test JSON does not parse: %s\n", err.message);
        return HUSH_E_INTERNAL;
    }
    hush_status s = hush_attest_verify(hush_json_doc_root(doc), payload_id, policy, r, &err);
    hush_json_doc_free(doc);
    return s;
}

static hush_status verify_vec_with(const vec *v, const char *omit, const char *replace,
                                   const char *with, const char *payload_id,
                                   const hush_attest_policy *policy, hush_attest_result *r)
{
    static char json[JSON_MAX];
    size_t len = vec_json(v, omit, replace, with, json);
    return verify_json(json, len, payload_id, policy, r);
}

static hush_status verify_vec(const vec *v, const hush_attest_policy *policy,
                              hush_attest_result *r)
{
    return verify_vec_with(v, NULL, NULL, NULL, v->payload_id, policy, r);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Not verified, for one of the reasons listed (as prefixes). */
static bool refused_for(const hush_attest_result *r, const char *const *reasons)
{
    if (r->verified)
        return false;
    for (size_t i = 0; reasons[i] != NULL; i++)
        if (starts_with(r->reason, reasons[i]))
            return true;
    fprintf(stderr, "unexpected reason: %s\n", r->reason);
    return false;
}

static vec vecs[NVECTORS];
/* Per vector: a policy pinning its AIK, the only way a quote verifies. */
static hush_attest_policy *pins[NVECTORS];

/* Checks out in every respect but the pin: reported, not vouched for. */
static bool unpinned(const hush_attest_result *r)
{
    if (!r->verified && strcmp(r->reason, HUSH_ATTEST_UNPINNED_AIK) == 0)
        return true;
    fprintf(stderr, "expected \"unpinned aik\", got verified=%d: %s\n", r->verified, r->reason);
    return false;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_vectors_verify(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        hush_attest_result r;
        hush_error err;
        CHECK(load_vec(VECTORS[i], &vecs[i]));
        /* Without a pin the quote checks out, and is still not verified. */
        CHECK_OK(verify_vec(&vecs[i], NULL, &r), &err);
        CHECK(unpinned(&r));
        CHECK(strlen(r.aik_fingerprint) == HUSH_FINGERPRINT_LEN - 1);
        CHECK(starts_with(r.aik_fingerprint, "sha256:"));
        pins[i] = pinning_policy(r.aik_fingerprint);
        CHECK_OK(verify_vec(&vecs[i], pins[i], &r), &err);
        if (!r.verified)
            fprintf(stderr, "%s: %s\n", VECTORS[i], r.reason);
        CHECK(r.verified);
        CHECK(strcmp(r.reason, "ok") == 0);
    }
}

/* A policy with PCR values but no AIK pins nothing: still unpinned. */
static void test_unpinned_policies(void)
{
    hush_attest_result r;
    hush_attest_policy *p = NULL;
    CHECK_OK(hush_attest_policy_parse("{}", 2, &p, NULL), NULL);
    CHECK(!hush_attest_policy_pins_aik(p));
    CHECK_OK(verify_vec(&vecs[0], p, &r), NULL);
    CHECK(unpinned(&r));
    hush_attest_policy_free(p);
    CHECK_OK(hush_attest_policy_parse("{\"aik_fingerprints\":[]}", 23, &p, NULL), NULL);
    CHECK(!hush_attest_policy_pins_aik(p));
    CHECK_OK(verify_vec(&vecs[0], p, &r), NULL);
    CHECK(unpinned(&r));
    hush_attest_policy_free(p);
    CHECK(!hush_attest_policy_pins_aik(NULL));
    CHECK(hush_attest_policy_pins_aik(pins[0]));
    /* A quote that fails says why, pinned or not: the pin is checked last. */
    CHECK_OK(verify_vec_with(&vecs[0], NULL, NULL, NULL, "chatcmpl-another", NULL, &r), NULL);
    CHECK(strcmp(r.reason, "wrong qualifying data") == 0);
}

/* A gateway with a TPM that was not asked to quote says so. */
static void test_not_quoted(void)
{
    hush_attest_result r;
    const char *not_quoted = "{\"is_available\":true,\"quoted\":false}";
    CHECK_OK(verify_json(not_quoted, strlen(not_quoted), "id", pins[0], &r), NULL);
    CHECK(!r.verified && strcmp(r.reason, "not quoted") == 0);
    CHECK(r.aik_fingerprint[0] == '\0');
    const char *odd = "{\"is_available\":true,\"quoted\":\"no\"}";
    CHECK_OK(verify_json(odd, strlen(odd), "id", pins[0], &r), NULL);
    CHECK(!r.verified && strcmp(r.reason, "malformed quoted") == 0);
    /* "quoted": true adds nothing to a real quote. */
    static char json[JSON_MAX];
    size_t len = vec_json(&vecs[0], NULL, NULL, NULL, json);
    const char *prefix = "{\"is_available\":true";
    CHECK(strncmp(json, prefix, strlen(prefix)) == 0);
    char *with = malloc(len + 32);
    CHECK(with != NULL);
    if (with == NULL)
        return;
    int n = snprintf(with, len + 32, "%s,\"quoted\":true%s", prefix, json + strlen(prefix));
    CHECK_OK(verify_json(with, (size_t)n, vecs[0].payload_id, pins[0], &r), NULL);
    CHECK(r.verified);
    free(with);
}

static void test_wrong_payload_id(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        hush_attest_result r;
        CHECK_OK(verify_vec_with(&vecs[i], NULL, NULL, NULL, "chatcmpl-another", NULL, &r), NULL);
        CHECK(!r.verified);
        CHECK(strcmp(r.reason, "wrong qualifying data") == 0);
        CHECK(r.aik_fingerprint[0] != '\0');
        CHECK_OK(verify_vec_with(&vecs[i], NULL, NULL, NULL, "", NULL, &r), NULL);
        CHECK(strcmp(r.reason, "wrong qualifying data") == 0);
    }
}

static void test_flipped_quote_and_signature(void)
{
    static const char *const quote_reasons[] = {"bad signature", "malformed quote_b64", NULL};
    static const char *const sig_reasons[] = {"bad signature", "malformed signature_b64",
                                              "unsupported signature", NULL};
    for (size_t i = 0; i < NVECTORS; i++) {
        for (int b = QUOTE; b <= SIG; b++) {
            vec v = vecs[i];
            for (size_t at = 0; at < v.len[b]; at++) {
                hush_attest_result r;
                v.blob[b][at] ^= (unsigned char)(1u << (at % 8));
                CHECK_OK(verify_vec(&v, NULL, &r), NULL);
                CHECK(refused_for(&r, b == QUOTE ? quote_reasons : sig_reasons));
                v.blob[b][at] ^= (unsigned char)(1u << (at % 8));
            }
        }
    }
}

/* A bit flipped in the AIK either spoils the key (refused) or touches what
 * the signature does not cover (nameAlg, attributes, authPolicy): then the
 * quote still verifies, but under another fingerprint, which a policy
 * pinning the AIK refuses. */
static void test_flipped_aik(void)
{
    static const char *const reasons[] = {"bad signature", "malformed aik_pubkey_b64",
                                          "aik is not a restricted signing key", NULL};
    for (size_t i = 0; i < NVECTORS; i++) {
        hush_attest_result good;
        CHECK_OK(verify_vec(&vecs[i], NULL, &good), NULL);
        char policy_json[256];
        hush_attest_policy *policy = NULL;
        snprintf(policy_json, sizeof policy_json, "{\"aik_fingerprints\":[\"%s\"]}",
                 good.aik_fingerprint);
        CHECK_OK(hush_attest_policy_parse(policy_json, strlen(policy_json), &policy, NULL), NULL);
        vec v = vecs[i];
        for (size_t at = 0; at < v.len[AIK]; at++) {
            hush_attest_result r;
            v.blob[AIK][at] ^= (unsigned char)(1u << (at % 8));
            CHECK_OK(verify_vec(&v, NULL, &r), NULL);
            if (strcmp(r.reason, HUSH_ATTEST_UNPINNED_AIK) == 0)
                CHECK(strcmp(r.aik_fingerprint, good.aik_fingerprint) != 0);
            else
                CHECK(refused_for(&r, reasons));
            CHECK_OK(verify_vec(&v, policy, &r), NULL);
            CHECK(!r.verified);
            v.blob[AIK][at] ^= (unsigned char)(1u << (at % 8));
        }
        hush_attest_policy_free(policy);
    }
}

static void test_flipped_pcr_value(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        for (size_t p = 0; p < vecs[i].npcr; p++) {
            vec v = vecs[i];
            hush_attest_result r;
            char *c = &v.pcr[p].hex[p % strlen(v.pcr[p].hex)];
            *c = *c == '0' ? '1' : '0';
            CHECK_OK(verify_vec(&v, NULL, &r), NULL);
            CHECK(!r.verified);
            CHECK(strcmp(r.reason, "pcr digest mismatch") == 0);
        }
    }
}

static void test_truncated_blobs(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        for (int b = 0; b < NBLOBS; b++) {
            vec v = vecs[i];
            char reason[64];
            snprintf(reason, sizeof reason, "malformed %s", BLOB_MEMBER[b]);
            for (size_t len = 0; len < vecs[i].len[b]; len++) {
                hush_attest_result r;
                v.len[b] = len;
                CHECK_OK(verify_vec(&v, NULL, &r), NULL);
                CHECK(!r.verified);
                CHECK(starts_with(r.reason, reason));
            }
        }
    }
}

static void test_trailing_bytes(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        for (int b = 0; b < NBLOBS; b++) {
            vec v = vecs[i];
            hush_attest_result r;
            char reason[64];
            snprintf(reason, sizeof reason, "malformed %s", BLOB_MEMBER[b]);
            v.blob[b][v.len[b]++] = 0;
            CHECK_OK(verify_vec(&v, NULL, &r), NULL);
            CHECK(!r.verified);
            CHECK(starts_with(r.reason, reason));
        }
        /* A byte inside the TPM2B_ATTEST, after the TPMS_ATTEST. */
        vec v = vecs[i];
        hush_attest_result r;
        unsigned size = (unsigned)v.blob[QUOTE][0] << 8 | v.blob[QUOTE][1];
        size++;
        v.blob[QUOTE][0] = (unsigned char)(size >> 8);
        v.blob[QUOTE][1] = (unsigned char)size;
        v.blob[QUOTE][v.len[QUOTE]++] = 0;
        CHECK_OK(verify_vec(&v, NULL, &r), NULL);
        CHECK(starts_with(r.reason, "malformed quote_b64"));
        /* And inside the TPM2B_PUBLIC. */
        v = vecs[i];
        size = ((unsigned)v.blob[AIK][0] << 8 | v.blob[AIK][1]) + 1;
        v.blob[AIK][0] = (unsigned char)(size >> 8);
        v.blob[AIK][1] = (unsigned char)size;
        v.blob[AIK][v.len[AIK]++] = 0;
        CHECK_OK(verify_vec(&v, NULL, &r), NULL);
        CHECK(starts_with(r.reason, "malformed aik_pubkey_b64"));
    }
}

static void test_wrong_magic_and_type(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        vec v = vecs[i];
        hush_attest_result r;
        v.blob[QUOTE][2 + 3] ^= 1; /* magic 0xff544347 → 0xff544346 */
        CHECK_OK(verify_vec(&v, NULL, &r), NULL);
        CHECK(strcmp(r.reason, "malformed quote_b64 (not a TPM quote)") == 0);
        v = vecs[i];
        v.blob[QUOTE][2 + 5] = 0x17; /* TPM_ST_ATTEST_CERTIFY */
        CHECK_OK(verify_vec(&v, NULL, &r), NULL);
        CHECK(!r.verified);
        CHECK(starts_with(r.reason, "malformed quote_b64"));
    }
}

static void test_pcr_banks(void)
{
    static const struct {
        const char *banks;
        const char *reason;
    } cases[] = {
        {"\"sha256:0,7\"", "pcr selection mismatch"},
        {"\"sha256:0,7,10,11\"", "pcr selection mismatch"},
        {"\"sha384:0,7,10\"", "pcr selection mismatch"},
        {"\"sha1:0,7,10\"", "pcr selection mismatch"},
        {"\"sha256:0,7,10+sha1:0\"", "pcr selection mismatch"},
        {"\"sha256:\"", "malformed pcr_banks"},
        {"\"sha256:0,,7\"", "malformed pcr_banks"},
        {"\"sha256:0,07,10\"", "malformed pcr_banks"},
        {"\"sha256:0,7,24\"", "malformed pcr_banks"},
        {"\"sha256:0,7,7,10\"", "malformed pcr_banks"},
        {"\"sha256:0,7,10+\"", "malformed pcr_banks"},
        {"\"sha256:0+sha256:7\"", "malformed pcr_banks"},
        {"\"md5:0,7,10\"", "malformed pcr_banks"},
        {"\"sha256:0,7,10x\"", "malformed pcr_banks"},
        {"\"sha256:0,7,100\"", "malformed pcr_banks"},
        {"\"sha256:0,7,10++sha1:0\"", "malformed pcr_banks"},
        {"\":0,7,10\"", "malformed pcr_banks"},
        {"\"sha256 0,7,10\"", "malformed pcr_banks"},
        {"\"\"", "malformed pcr_banks"},
        {"7", "malformed pcr_banks"},
        {"null", "malformed pcr_banks"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        hush_attest_result r;
        CHECK_OK(verify_vec_with(&vecs[0], NULL, "pcr_banks", cases[c].banks, vecs[0].payload_id,
                                 NULL, &r),
                 NULL);
        CHECK(!r.verified);
        if (strcmp(r.reason, cases[c].reason) != 0)
            fprintf(stderr, "pcr_banks %s: %s\n", cases[c].banks, r.reason);
        CHECK(strcmp(r.reason, cases[c].reason) == 0);
    }
    /* The same banks in the other order select the same PCRs, but the
     * digest covers them in the quote's order. */
    hush_attest_result r;
    CHECK_OK(verify_vec_with(&vecs[3], NULL, "pcr_banks", "\"sha256:0,7,10+sha1:0,16\"",
                             vecs[3].payload_id, NULL, &r),
             NULL);
    CHECK(strcmp(r.reason, "pcr selection mismatch") == 0);
    CHECK_OK(verify_vec_with(&vecs[3], NULL, "pcr_banks", "\"sha1:16,0+sha256:10,0,7\"",
                             vecs[3].payload_id, pins[3], &r),
             NULL);
    CHECK(r.verified);
}

static void test_pcr_values(void)
{
    const vec *v = &vecs[0];
    const char *h = v->pcr[0].hex;
    char with[1024];
    const char *const templates[] = {
        "{}",
        "[]",
        "\"x\"",
        "{\"sha256\":{}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\"}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"10\":\"%s\",\"11\":\"%s\"}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"010\":\"%s\"}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"10\":\"%.62s\"}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"10\":\"%s00\"}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"10\":\"%.63sg\"}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"10\":7}}",
        "{\"sha256\":{\"0\":\"%s\",\"7\":\"%s\",\"10\":\"%s\"},\"sha1\":{}}",
    };
    for (size_t c = 0; c < sizeof templates / sizeof templates[0]; c++) {
        hush_attest_result r;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
        snprintf(with, sizeof with, templates[c], h, h, h, h);
#pragma GCC diagnostic pop
        CHECK_OK(verify_vec_with(v, NULL, "pcr_values", with, v->payload_id, NULL, &r), NULL);
        CHECK(!r.verified);
        if (strcmp(r.reason, "malformed pcr_values") != 0)
            fprintf(stderr, "pcr_values case %zu: %s\n", c, r.reason);
        CHECK(strcmp(r.reason, "malformed pcr_values") == 0);
    }
}

static void test_missing_members(void)
{
    const char *members[] = {"pcr_banks", "pcr_values", "aik_pubkey_b64", "quote_b64",
                             "signature_b64"};
    for (size_t m = 0; m < 5; m++) {
        hush_attest_result r;
        char reason[64];
        snprintf(reason, sizeof reason, "malformed %s", members[m]);
        CHECK_OK(verify_vec_with(&vecs[1], members[m], NULL, NULL, vecs[1].payload_id, NULL, &r),
                 NULL);
        CHECK(!r.verified);
        CHECK(strcmp(r.reason, reason) == 0);
        CHECK_OK(verify_vec_with(&vecs[1], NULL, members[m], "12", vecs[1].payload_id, NULL, &r),
                 NULL);
        CHECK(strcmp(r.reason, reason) == 0);
        if (m >= 2) { /* not base64, and base64 too large */
            CHECK_OK(verify_vec_with(&vecs[1], NULL, members[m], "\"AAA*\"", vecs[1].payload_id,
                                     NULL, &r),
                     NULL);
            CHECK(strcmp(r.reason, reason) == 0);
            static char big[8200];
            big[0] = '"';
            memset(big + 1, 'A', 8192);
            big[8193] = '"';
            big[8194] = '\0';
            CHECK_OK(verify_vec_with(&vecs[1], NULL, members[m], big, vecs[1].payload_id, NULL,
                                     &r),
                     NULL);
            CHECK(strcmp(r.reason, reason) == 0);
        }
    }
}

static void test_no_attestation(void)
{
    hush_attest_result r;
    hush_error err;
    CHECK_OK(hush_attest_verify(NULL, "id", NULL, &r, &err), &err);
    CHECK(!r.verified);
    CHECK(strcmp(r.reason, "no attestation") == 0);
    CHECK(r.aik_fingerprint[0] == '\0');
    const char *off = "{\"is_available\": false}";
    CHECK_OK(verify_json(off, strlen(off), "id", NULL, &r), NULL);
    CHECK(strcmp(r.reason, "tpm not available") == 0);
    CHECK_OK(verify_json("{}", 2, "id", NULL, &r), NULL);
    CHECK(strcmp(r.reason, "tpm not available") == 0);
    CHECK_OK(verify_json("[]", 2, "id", NULL, &r), NULL);
    CHECK(!r.verified);
    CHECK_OK(verify_json("{\"is_available\":1}", 18, "id", NULL, &r), NULL);
    CHECK(!r.verified);
    CHECK_STATUS(hush_attest_verify(NULL, NULL, NULL, &r, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_attest_verify(NULL, "id", NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
}

static void test_mixed_up_signatures(void)
{
    /* ECDSA signature with an RSA AIK, an RSASSA one with the PSS key's. */
    vec v = vecs[1];
    hush_attest_result r;
    memcpy(v.blob[SIG], vecs[0].blob[SIG], vecs[0].len[SIG]);
    v.len[SIG] = vecs[0].len[SIG];
    CHECK_OK(verify_vec(&v, NULL, &r), NULL);
    CHECK(!r.verified && starts_with(r.reason, "bad signature"));
    v = vecs[2];
    memcpy(v.blob[SIG], vecs[1].blob[SIG], vecs[1].len[SIG]);
    CHECK_OK(verify_vec(&v, NULL, &r), NULL);
    CHECK(!r.verified && starts_with(r.reason, "bad signature"));
    /* A quote with another vector's AIK. */
    v = vecs[0];
    memcpy(v.blob[AIK], vecs[3].blob[AIK], vecs[3].len[AIK]);
    v.len[AIK] = vecs[3].len[AIK];
    CHECK_OK(verify_vec(&v, NULL, &r), NULL);
    CHECK(!r.verified && strcmp(r.reason, "bad signature") == 0);
}

static hush_attest_policy *policy_from(const vec *v, const char *change_index, const char *extra)
{
    char json[4096];
    size_t pos = 0;
    put(json, &pos, "{\"pcrs\":{");
    for (size_t i = 0; i < v->npcr; i++) {
        bool first = i == 0 || strcmp(v->pcr[i].bank, v->pcr[i - 1].bank) != 0;
        if (first)
            put(json, &pos, "%s\"%s\":{", i == 0 ? "" : "},", v->pcr[i].bank);
        char hex[130];
        strcpy(hex, v->pcr[i].hex);
        if (change_index != NULL && strcmp(change_index, v->pcr[i].index) == 0)
            hex[0] = hex[0] == 'f' ? 'e' : 'f';
        put(json, &pos, "%s\"%s\":\"%s\"", first ? "" : ",", v->pcr[i].index, hex);
    }
    put(json, &pos, "}}%s}", extra != NULL ? extra : "");
    hush_attest_policy *p = NULL;
    hush_error err;
    CHECK_OK(hush_attest_policy_parse(json, pos, &p, &err), &err);
    return p;
}

static void test_policies(void)
{
    for (size_t i = 0; i < NVECTORS; i++) {
        const vec *v = &vecs[i];
        hush_attest_result r, good;
        CHECK_OK(verify_vec(v, NULL, &good), NULL);

        /* PCR values alone pin no AIK. */
        hush_attest_policy *p = policy_from(v, NULL, NULL);
        CHECK_OK(verify_vec(v, p, &r), NULL);
        CHECK(unpinned(&r));
        hush_attest_policy_free(p);

        p = policy_from(v, "7", NULL);
        CHECK_OK(verify_vec(v, p, &r), NULL);
        CHECK(!r.verified);
        CHECK(strcmp(r.reason, "pcr value not in policy: sha256:7") == 0);
        hush_attest_policy_free(p);

        char extra[256];
        snprintf(extra, sizeof extra, ",\"aik_fingerprints\":[\"sha256:%064d\",\"%s\"]", 0,
                 good.aik_fingerprint);
        p = policy_from(v, NULL, extra);
        CHECK_OK(verify_vec(v, p, &r), NULL);
        CHECK(r.verified);
        hush_attest_policy_free(p);

        snprintf(extra, sizeof extra, ",\"aik_fingerprints\":[\"sha256:%064d\"]", 0);
        p = policy_from(v, NULL, extra);
        CHECK_OK(verify_vec(v, p, &r), NULL);
        CHECK(!r.verified);
        CHECK(strcmp(r.reason, "aik not in policy") == 0);
        CHECK(strcmp(r.aik_fingerprint, good.aik_fingerprint) == 0);
        hush_attest_policy_free(p);
    }
    /* A PCR the policy names but the quote does not cover fails. */
    hush_attest_policy *p = NULL;
    char json[256];
    snprintf(json, sizeof json, "{\"pcrs\":{\"sha256\":{\"16\":\"%s\"}}}", vecs[0].pcr[0].hex);
    CHECK_OK(hush_attest_policy_parse(json, strlen(json), &p, NULL), NULL);
    hush_attest_result r;
    CHECK_OK(verify_vec(&vecs[0], p, &r), NULL);
    CHECK(strcmp(r.reason, "pcr value not in policy: sha256:16") == 0);
    hush_attest_policy_free(p);
}

static void test_policy_parse_errors(void)
{
    const char *bad[] = {
        "[]",
        "\"pcrs\"",
        "{\"pcrs\":{},\"extra\":1}",
        "{\"pcr\":{}}",
        "{\"pcrs\":[]}",
        "{\"pcrs\":{\"md5\":{}}}",
        "{\"pcrs\":{\"sha256\":[]}}",
        "{\"pcrs\":{\"sha256\":{\"24\":\"00\"}}}",
        "{\"pcrs\":{\"sha256\":{\"07\":\"00\"}}}",
        "{\"pcrs\":{\"sha256\":{\"7\":\"00\"}}}",
        "{\"pcrs\":{\"sha1\":{\"7\":\"000000000000000000000000000000000000000g\"}}}",
        "{\"pcrs\":{\"sha1\":{\"7\":\"00000000000000000000000000000000000000000000000000\"}}}",
        "{\"pcrs\":{\"sha1\":{\"7\":7}}}",
        "{\"aik_fingerprints\":\"sha256:00\"}",
        "{\"aik_fingerprints\":[\"sha256:00\"]}",
        "{\"aik_fingerprints\":[7]}",
        "{\"aik_fingerprints\":[\"sha384:0000000000000000000000000000000000000000000000000000"
        "000000000000\"]}",
        "{\"aik_fingerprints\":[\"sha256:ABCDEF0000000000000000000000000000000000000000000000"
        "000000000000\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hush_attest_policy *p = (hush_attest_policy *)1;
        hush_error err;
        CHECK_STATUS(hush_attest_policy_parse(bad[i], strlen(bad[i]), &p, &err), HUSH_E_FORMAT,
                     &err);
        CHECK(p == NULL);
    }
    hush_attest_policy *p = NULL;
    hush_error err;
    CHECK_STATUS(hush_attest_policy_parse("{", 1, &p, &err), HUSH_E_JSON, &err);
    CHECK_STATUS(hush_attest_policy_parse("{}", 2, NULL, &err), HUSH_E_ARGUMENT, &err);
    /* Upper-case PCR hex is fine (tpm2_pcrread prints it so). */
    const char *upper = "{\"pcrs\":{\"sha1\":{\"7\":\"ABCDEF0000000000000000000000000000000000\"}}}";
    CHECK_OK(hush_attest_policy_parse(upper, strlen(upper), &p, &err), &err);
    hush_attest_policy_free(p);
    hush_attest_policy_free(NULL);
}

static void test_policy_load(void)
{
    char path[] = "/tmp/hush-attest-policy-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    char extra[256];
    hush_attest_result good, r;
    CHECK_OK(verify_vec(&vecs[2], NULL, &good), NULL);
    int n = snprintf(extra, sizeof extra, "{\"aik_fingerprints\":[\"%s\"]}", good.aik_fingerprint);
    CHECK(write(fd, extra, (size_t)n) == n);
    close(fd);
    hush_attest_policy *p = NULL;
    hush_error err;
    CHECK_OK(hush_attest_policy_load(path, &p, &err), &err);
    CHECK_OK(verify_vec(&vecs[2], p, &r), NULL);
    CHECK(r.verified);
    CHECK_OK(verify_vec(&vecs[1], p, &r), NULL);
    CHECK(strcmp(r.reason, "aik not in policy") == 0);
    hush_attest_policy_free(p);

    /* Larger than 1 MiB: refused before parsing. */
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        for (int i = 0; i < (1 << 20) + 1; i++)
            fputc(' ', f);
        fclose(f);
    }
    CHECK_STATUS(hush_attest_policy_load(path, &p, &err), HUSH_E_LIMIT, &err);
    CHECK(p == NULL);
    unlink(path);
    CHECK_STATUS(hush_attest_policy_load(path, &p, &err), HUSH_E_NOT_FOUND, &err);
    CHECK_STATUS(hush_attest_policy_load(NULL, &p, &err), HUSH_E_ARGUMENT, &err);
}

int main(void)
{
    RUN_TEST(test_vectors_verify);
    RUN_TEST(test_wrong_payload_id);
    RUN_TEST(test_flipped_quote_and_signature);
    RUN_TEST(test_flipped_aik);
    RUN_TEST(test_flipped_pcr_value);
    RUN_TEST(test_truncated_blobs);
    RUN_TEST(test_trailing_bytes);
    RUN_TEST(test_wrong_magic_and_type);
    RUN_TEST(test_pcr_banks);
    RUN_TEST(test_pcr_values);
    RUN_TEST(test_missing_members);
    RUN_TEST(test_no_attestation);
    RUN_TEST(test_mixed_up_signatures);
    RUN_TEST(test_policies);
    RUN_TEST(test_policy_parse_errors);
    RUN_TEST(test_policy_load);
    RUN_TEST(test_unpinned_policies);
    RUN_TEST(test_not_quoted);
    for (size_t i = 0; i < NVECTORS; i++)
        hush_attest_policy_free(pins[i]);
    return check_report();
}
