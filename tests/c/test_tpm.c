/* test_tpm.c — hush_tpm against a software TPM (swtpm): quotes with both
 * key types and two PCR selections, every written field decoded with
 * tss2-mu and checked here, and each quote verified independently by
 * tpm2-tools' tpm2_checkquote (tests/interop/checkquote.sh). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <tss2/tss2_mu.h>

#include "check.h"
#include "pinning.h"
#include "peer.h"
#include "swtpm.h"

#include "hushcall/hushcall.h"

#define CHECKQUOTE_SCRIPT HUSH_TEST_INTEROP_DIR "/checkquote.sh"
#define CUSTOM_PCRS "sha256:0,1,2+sha1:7"
#define PERSISTENT_HANDLE "0x81000002"
#define THREADS 8
#define QUOTES_PER_THREAD 3

static swtpm tpm_sim;
static char files_dir[64]; /* blobs for tpm2_checkquote */

/* PCRs the tests extend, so the quoted values are not all zero. */
static const unsigned EXTENDED_PCRS[] = {0, 1, 2, 7, 10};
#define EXTENDED_COUNT (sizeof EXTENDED_PCRS / sizeof EXTENDED_PCRS[0])

/* ---- expectations ------------------------------------------------------- */

static const char *bank_name(TPMI_ALG_HASH alg)
{
    return alg == TPM2_ALG_SHA1 ? "sha1" : alg == TPM2_ALG_SHA256 ? "sha256" : "?";
}

static const EVP_MD *bank_md(TPMI_ALG_HASH alg)
{
    return alg == TPM2_ALG_SHA1 ? EVP_sha1() : EVP_sha256();
}

/* What is extended into PCR `pcr` of a bank: H("hush pcr <pcr>"). */
static void extend_data(TPMI_ALG_HASH alg, unsigned pcr, unsigned char *out, unsigned *len)
{
    char text[32];
    snprintf(text, sizeof text, "hush pcr %u", pcr);
    EVP_Digest(text, strlen(text), out, len, bank_md(alg), NULL);
}

/* A PCR's value after the tests' one extension (or zero when none):
 * H(zeros || data), computed here rather than read back. */
static void expected_pcr(TPMI_ALG_HASH alg, unsigned pcr, unsigned char *out, unsigned *len)
{
    unsigned char buf[2 * EVP_MAX_MD_SIZE];
    unsigned size = (unsigned)EVP_MD_get_size(bank_md(alg)), dlen;
    memset(out, 0, size);
    *len = size;
    for (size_t i = 0; i < EXTENDED_COUNT; i++) {
        if (EXTENDED_PCRS[i] != pcr)
            continue;
        memset(buf, 0, size);
        extend_data(alg, pcr, buf + size, &dlen);
        EVP_Digest(buf, 2 * size, out, len, bank_md(alg), NULL);
    }
}

typedef struct expected_selection {
    const char *banks; /* canonical pcr_banks */
    size_t count;
    struct {
        TPMI_ALG_HASH alg;
        unsigned pcrs[24];
        size_t n;
    } bank[2];
} expected_selection;

static const expected_selection DEFAULT_SELECTION = {
    "sha256:0,7,10", 1, {{TPM2_ALG_SHA256, {0, 7, 10}, 3}}};
static const expected_selection CUSTOM_SELECTION = {
    CUSTOM_PCRS, 2, {{TPM2_ALG_SHA256, {0, 1, 2}, 3}, {TPM2_ALG_SHA1, {7}, 1}}};

/* ---- tools -------------------------------------------------------------- */

static bool run_tool(const char *const argv[])
{
    int rc = run_program(argv);
    if (rc != 0)
        fprintf(stderr, "%s exited with %d\n", argv[0], rc);
    return rc == 0;
}

static bool extend_pcrs(void)
{
    bool ok = true;
    for (size_t i = 0; i < EXTENDED_COUNT && ok; i++) {
        unsigned char d1[EVP_MAX_MD_SIZE], d256[EVP_MAX_MD_SIZE];
        unsigned l1, l256;
        extend_data(TPM2_ALG_SHA1, EXTENDED_PCRS[i], d1, &l1);
        extend_data(TPM2_ALG_SHA256, EXTENDED_PCRS[i], d256, &l256);
        char spec[256];
        int n = snprintf(spec, sizeof spec, "%u:sha1=", EXTENDED_PCRS[i]);
        for (unsigned k = 0; k < l1; k++)
            n += snprintf(spec + n, sizeof spec - (size_t)n, "%02x", d1[k]);
        n += snprintf(spec + n, sizeof spec - (size_t)n, ",sha256=");
        for (unsigned k = 0; k < l256; k++)
            n += snprintf(spec + n, sizeof spec - (size_t)n, "%02x", d256[k]);
        const char *argv[] = {"tpm2_pcrextend", "-T", tpm_sim.tcti, spec, NULL};
        ok = run_tool(argv);
    }
    return ok;
}

static bool write_file(const char *name, const void *data, size_t len, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", files_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* ---- quoting into a document -------------------------------------------- */

/* Options from HUSH_TPM_OPTIONS_INIT with these fields set. */
static hush_tpm_options tpm_options(const char *tcti, const char *pcrs, hush_tpm_key_alg alg,
                                    uint32_t handle)
{
    hush_tpm_options opts = HUSH_TPM_OPTIONS_INIT;
    opts.tcti = tcti;
    opts.pcrs = pcrs;
    opts.key_alg = alg;
    opts.persistent_handle = handle;
    return opts;
}

static hush_tpm *open_tpm(const char *pcrs, hush_tpm_key_alg alg, uint32_t handle)
{
    hush_tpm_options opts = tpm_options(tpm_sim.tcti, pcrs, alg, handle);
    hush_tpm *tpm = NULL;
    hush_error err;
    CHECK_OK(hush_tpm_open(&opts, &tpm, &err), &err);
    return tpm;
}

/* {<the attestation members>} parsed, or NULL with `*status` set. */
static hush_json_doc *quote_doc(hush_tpm *tpm, const char *payload_id, hush_status *status,
                                hush_error *err)
{
    hush_secbuf *buf = NULL;
    hush_json_writer *w = NULL;
    hush_json_doc *doc = NULL;
    *status = hush_secbuf_new(4096, 0, HUSH_SECMEM_PUBLIC, &buf, err);
    if (*status == HUSH_OK)
        *status = hush_json_writer_new(buf, HUSH_JSON_WRITE_COMPACT, 0, &w, err);
    if (*status == HUSH_OK)
        *status = hush_json_write_object_begin(w, err);
    if (*status == HUSH_OK)
        *status = hush_tpm_quote(tpm, payload_id, w, err);
    if (*status == HUSH_OK)
        *status = hush_json_write_object_end(w, err);
    if (*status == HUSH_OK)
        *status = hush_json_parse(hush_secbuf_data(buf), hush_secbuf_len(buf), NULL,
                                  HUSH_SECMEM_NO_LOCK, &doc, err);
    hush_json_writer_free(w);
    hush_secbuf_free(buf);
    return doc;
}

static hush_json_doc *quote_ok(hush_tpm *tpm, const char *payload_id)
{
    hush_status st;
    hush_error err;
    hush_json_doc *doc = quote_doc(tpm, payload_id, &st, &err);
    CHECK_OK(st, &err);
    return doc;
}

/* ---- checking one attestation ------------------------------------------- */

static const char *member_string(const hush_json_doc *doc, const char *key)
{
    return hush_json_string(hush_json_object_get(hush_json_doc_root(doc), key, strlen(key)),
                            NULL);
}

/* Decodes a base64 member into `out` (capacity `cap`); its length or 0. */
static size_t member_blob(const hush_json_doc *doc, const char *key, unsigned char *out,
                          size_t cap)
{
    size_t len = 0, n = 0;
    const char *b64 = hush_json_string(
        hush_json_object_get(hush_json_doc_root(doc), key, strlen(key)), &len);
    CHECK(b64 != NULL && len > 0);
    if (b64 == NULL || hush_base64_decoded_max(len) > cap)
        return 0;
    hush_error err;
    CHECK_OK(hush_base64_decode(b64, len, out, cap, &n, &err), &err);
    return n;
}

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

/* Checks "pcr_values" against the model of the extended PCRs and collects
 * the values in selection order (for the digest and tpm2_checkquote). */
static size_t check_pcr_values(const hush_json_doc *doc, const expected_selection *sel,
                               unsigned char *values, size_t cap)
{
    const hush_json_value *pv = hush_json_object_get(hush_json_doc_root(doc), "pcr_values", 10);
    CHECK(hush_json_type_of(pv) == HUSH_JSON_OBJECT);
    CHECK_EQ(hush_json_length(pv), sel->count);
    size_t at = 0;
    for (size_t b = 0; b < sel->count && b < hush_json_length(pv); b++) {
        const char *key;
        size_t key_len;
        const hush_json_value *bank;
        CHECK(hush_json_object_member(pv, b, &key, &key_len, &bank));
        CHECK(strcmp(key, bank_name(sel->bank[b].alg)) == 0);
        CHECK(hush_json_type_of(bank) == HUSH_JSON_OBJECT);
        CHECK_EQ(hush_json_length(bank), sel->bank[b].n);
        for (size_t i = 0; i < sel->bank[b].n && i < hush_json_length(bank); i++) {
            const hush_json_value *v;
            char want_key[4];
            snprintf(want_key, sizeof want_key, "%u", sel->bank[b].pcrs[i]);
            CHECK(hush_json_object_member(bank, i, &key, &key_len, &v));
            CHECK(strcmp(key, want_key) == 0);
            unsigned char want[EVP_MAX_MD_SIZE];
            unsigned want_len;
            expected_pcr(sel->bank[b].alg, sel->bank[b].pcrs[i], want, &want_len);
            size_t hex_len = 0;
            const char *hex = hush_json_string(v, &hex_len);
            CHECK(hex != NULL && hex_len == 2 * want_len && is_lower_hex(hex, hex_len));
            if (hex == NULL || hex_len != 2 * want_len || at + want_len > cap)
                continue;
            for (unsigned k = 0; k < want_len; k++) {
                unsigned byte;
                sscanf(hex + 2 * k, "%2x", &byte);
                values[at + k] = (unsigned char)byte;
            }
            CHECK(memcmp(values + at, want, want_len) == 0);
            at += want_len;
        }
    }
    return at;
}

static void check_quoted_selection(const TPML_PCR_SELECTION *got, const expected_selection *sel)
{
    CHECK_EQ(got->count, sel->count);
    for (size_t b = 0; b < sel->count && b < got->count; b++) {
        const TPMS_PCR_SELECTION *s = &got->pcrSelections[b];
        unsigned char want[4] = {0};
        for (size_t i = 0; i < sel->bank[b].n; i++)
            want[sel->bank[b].pcrs[i] / 8] |= (unsigned char)(1u << (sel->bank[b].pcrs[i] % 8));
        CHECK_EQ(s->hash, sel->bank[b].alg);
        CHECK_EQ(s->sizeofSelect, 3);
        CHECK(memcmp(s->pcrSelect, want, 3) == 0);
    }
}

static void qualifying_data(const char *payload_id, unsigned char out[16])
{
    unsigned char d[32];
    EVP_Digest(payload_id, strlen(payload_id), d, NULL, EVP_sha256(), NULL);
    memcpy(out, d, 16);
}

/* tpm2_checkquote on the blobs with `qualifying` (16 bytes); true when it
 * accepts the quote. */
static bool tpm2_checkquote(const unsigned char *pub, size_t pub_len, const TPM2B_ATTEST *attest,
                            const unsigned char *sig, size_t sig_len,
                            const unsigned char *values, size_t values_len, const char *banks,
                            const unsigned char qualifying[16])
{
    char pub_path[128], msg_path[128], sig_path[128], pcr_path[128], hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", qualifying[i]);
    if (!write_file("aik.pub", pub, pub_len, pub_path, sizeof pub_path) ||
        !write_file("quote.msg", attest->attestationData, attest->size, msg_path,
                    sizeof msg_path) ||
        !write_file("quote.sig", sig, sig_len, sig_path, sizeof sig_path) ||
        !write_file("quote.pcrs", values, values_len, pcr_path, sizeof pcr_path)) {
        fprintf(stderr, "cannot write the quote files into %s\n", files_dir);
        return false;
    }
    const char *argv[] = {"/bin/sh", CHECKQUOTE_SCRIPT, pub_path, msg_path, sig_path,
                          pcr_path, banks, hex, NULL};
    return run_program(argv) == 0;
}

/* Everything about one attestation; `aik_b64` (may be NULL) receives the
 * AIK member for comparisons. */
static void check_attestation(const hush_json_doc *doc, const char *payload_id,
                              const expected_selection *sel, TPMI_ALG_PUBLIC key_type,
                              bool restricted, char *aik_b64, size_t aik_cap)
{
    CHECK(doc != NULL);
    if (doc == NULL)
        return;
    const hush_json_value *root = hush_json_doc_root(doc);
    CHECK_EQ(hush_json_length(root), 6);
    const hush_json_value *avail = hush_json_object_get(root, "is_available", 12);
    CHECK(hush_json_type_of(avail) == HUSH_JSON_BOOL && hush_json_bool(avail));
    const char *banks = member_string(doc, "pcr_banks");
    CHECK(banks != NULL && strcmp(banks, sel->banks) == 0);

    unsigned char values[24 * 2 * 64];
    size_t values_len = check_pcr_values(doc, sel, values, sizeof values);

    static unsigned char pub_raw[sizeof(TPM2B_PUBLIC)], attest_raw[sizeof(TPM2B_ATTEST)],
        sig_raw[sizeof(TPMT_SIGNATURE)];
    size_t pub_len = member_blob(doc, "aik_pubkey_b64", pub_raw, sizeof pub_raw);
    size_t attest_len = member_blob(doc, "quote_b64", attest_raw, sizeof attest_raw);
    size_t sig_len = member_blob(doc, "signature_b64", sig_raw, sizeof sig_raw);
    if (aik_b64 != NULL) {
        const char *a = member_string(doc, "aik_pubkey_b64");
        snprintf(aik_b64, aik_cap, "%s", a != NULL ? a : "");
    }

    TPM2B_PUBLIC pub;
    TPM2B_ATTEST attest;
    TPMS_ATTEST info;
    TPMT_SIGNATURE sig;
    /* tss2-mu refuses to unmarshal a TPM2B into one whose size is not 0. */
    memset(&pub, 0, sizeof pub);
    memset(&attest, 0, sizeof attest);
    memset(&info, 0, sizeof info);
    memset(&sig, 0, sizeof sig);
    size_t off = 0;
    CHECK(Tss2_MU_TPM2B_PUBLIC_Unmarshal(pub_raw, pub_len, &off, &pub) == TSS2_RC_SUCCESS);
    CHECK_EQ(off, pub_len);
    off = 0;
    CHECK(Tss2_MU_TPM2B_ATTEST_Unmarshal(attest_raw, attest_len, &off, &attest) ==
          TSS2_RC_SUCCESS);
    CHECK_EQ(off, attest_len);
    off = 0;
    CHECK(Tss2_MU_TPMT_SIGNATURE_Unmarshal(sig_raw, sig_len, &off, &sig) == TSS2_RC_SUCCESS);
    CHECK_EQ(off, sig_len);
    off = 0;
    CHECK(Tss2_MU_TPMS_ATTEST_Unmarshal(attest.attestationData, attest.size, &off, &info) ==
          TSS2_RC_SUCCESS);
    CHECK_EQ(off, attest.size);

    /* The key and the signature. */
    CHECK_EQ(pub.publicArea.type, key_type);
    TPMA_OBJECT need = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                       (restricted ? TPMA_OBJECT_RESTRICTED : 0);
    CHECK_EQ(pub.publicArea.objectAttributes & need, need);
    CHECK_EQ(sig.sigAlg, key_type == TPM2_ALG_ECC ? TPM2_ALG_ECDSA : TPM2_ALG_RSASSA);
    CHECK_EQ(sig.signature.any.hashAlg, TPM2_ALG_SHA256);

    /* The quote. */
    unsigned char q[16];
    qualifying_data(payload_id, q);
    CHECK_EQ(info.magic, TPM2_GENERATED_VALUE);
    CHECK_EQ(info.type, TPM2_ST_ATTEST_QUOTE);
    CHECK(info.extraData.size == 16 && memcmp(info.extraData.buffer, q, 16) == 0);
    check_quoted_selection(&info.attested.quote.pcrSelect, sel);
    unsigned char digest[32];
    EVP_Digest(values, values_len, digest, NULL, EVP_sha256(), NULL);
    CHECK(info.attested.quote.pcrDigest.size == 32 &&
          memcmp(info.attested.quote.pcrDigest.buffer, digest, 32) == 0);

    /* The independent verifier: accepts this quote, refuses another nonce. */
    CHECK(tpm2_checkquote(pub_raw, pub_len, &attest, sig_raw, sig_len, values, values_len,
                          sel->banks, q));
    q[0] ^= 1;
    CHECK(!tpm2_checkquote(pub_raw, pub_len, &attest, sig_raw, sig_len, values, values_len,
                           sel->banks, q));
}

/* ---- tests --------------------------------------------------------------- */

static void quote_and_check(const char *pcrs, const expected_selection *sel,
                            hush_tpm_key_alg alg)
{
    hush_tpm *tpm = open_tpm(pcrs, alg, 0);
    if (tpm == NULL)
        return;
    CHECK(strcmp(hush_tpm_pcr_banks(tpm), sel->banks) == 0);
    const char *payload_id = "6f1c3c4e-2a55-4bd5-9a3e-1f0a8c9b7d21";
    hush_json_doc *doc = quote_ok(tpm, payload_id);
    check_attestation(doc, payload_id, sel,
                      alg == HUSH_TPM_KEY_ECC_P256 ? TPM2_ALG_ECC : TPM2_ALG_RSA, true, NULL, 0);
    hush_json_doc_free(doc);
    hush_tpm_close(tpm);
}

static void test_quote_ecc_default(void)
{
    quote_and_check(NULL, &DEFAULT_SELECTION, HUSH_TPM_KEY_ECC_P256);
}

static void test_quote_ecc_custom(void)
{
    quote_and_check(CUSTOM_PCRS, &CUSTOM_SELECTION, HUSH_TPM_KEY_ECC_P256);
}

static void test_quote_rsa_default(void)
{
    quote_and_check(HUSH_TPM_DEFAULT_PCRS, &DEFAULT_SELECTION, HUSH_TPM_KEY_RSA_2048);
}

static void test_quote_rsa_custom(void)
{
    quote_and_check(CUSTOM_PCRS, &CUSTOM_SELECTION, HUSH_TPM_KEY_RSA_2048);
}

static void test_selection_is_canonical(void)
{
    hush_tpm *tpm = open_tpm("sha256:10,7,0", HUSH_TPM_KEY_ECC_P256, 0);
    if (tpm != NULL)
        CHECK(strcmp(hush_tpm_pcr_banks(tpm), "sha256:0,7,10") == 0);
    hush_tpm_close(tpm);
}

static void test_ephemeral_keys_differ(void)
{
    hush_tpm *tpm = open_tpm(NULL, HUSH_TPM_KEY_ECC_P256, 0);
    if (tpm == NULL)
        return;
    char a[1024], b[1024];
    hush_json_doc *d1 = quote_ok(tpm, "first");
    hush_json_doc *d2 = quote_ok(tpm, "second");
    check_attestation(d1, "first", &DEFAULT_SELECTION, TPM2_ALG_ECC, true, a, sizeof a);
    check_attestation(d2, "second", &DEFAULT_SELECTION, TPM2_ALG_ECC, true, b, sizeof b);
    CHECK(a[0] != '\0' && strcmp(a, b) != 0);
    hush_json_doc_free(d1);
    hush_json_doc_free(d2);
    hush_tpm_close(tpm);
}

static void test_bad_selections(void)
{
    static const char *const bad[] = {"",          "sha256:",       "sha256:24", "md5:0",
                                      "sha256:1,1", "sha256:0,x",   "sha256:0,", "sha256",
                                      ":0",         "sha256:0+",    "sha256:0+sha256:1",
                                      "sha256:07",  "sha256: 0",    "sha256:100000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hush_tpm_options opts = tpm_options(tpm_sim.tcti, bad[i], HUSH_TPM_KEY_ECC_P256, 0);
        hush_tpm *tpm = (hush_tpm *)&opts; /* must be reset to NULL */
        hush_error err;
        hush_status st = hush_tpm_open(&opts, &tpm, &err);
        if (st != HUSH_E_ARGUMENT)
            fprintf(stderr, "selection \"%s\": %s\n", bad[i], hush_strerror(st));
        CHECK_EQ(st, HUSH_E_ARGUMENT);
        CHECK(tpm == NULL);
        CHECK(strstr(err.message, "PCR selection") != NULL);
    }
}

static void test_bad_tcti(void)
{
    char tcti[64];
    snprintf(tcti, sizeof tcti, "swtpm:host=127.0.0.1,port=%d", unused_port());
    const char *const bad[] = {tcti, "no-such-tcti-module:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hush_tpm_options opts = tpm_options(bad[i], NULL, HUSH_TPM_KEY_ECC_P256, 0);
        hush_tpm *tpm = NULL;
        hush_error err;
        CHECK_STATUS(hush_tpm_open(&opts, &tpm, &err), HUSH_E_CONNECTION, &err);
        CHECK(tpm == NULL);
    }
    hush_tpm_options none = tpm_options(NULL, NULL, HUSH_TPM_KEY_ECC_P256, 0);
    hush_tpm *tpm = NULL;
    hush_error err;
    CHECK_STATUS(hush_tpm_open(&none, &tpm, &err), HUSH_E_ARGUMENT, &err);
}

/* The defaults tpm.h documents; a version 0 or newer than this library's is
 * refused by name before the TPM is touched; the right version opens. */
static void test_options_versions(void)
{
    hush_tpm_options from_macro = HUSH_TPM_OPTIONS_INIT;
    hush_tpm_options o;
    memset(&o, 0xa5, sizeof o);
    hush_error err = {0};
    CHECK_OK(hush_tpm_options_init(&o, HUSH_TPM_OPTIONS_VERSION, &err), &err);
    const hush_tpm_options *filled[] = {&from_macro, &o};
    for (size_t i = 0; i < 2; i++) {
        CHECK_EQ(filled[i]->version, 1);
        CHECK(filled[i]->tcti == NULL && filled[i]->pcrs == NULL);
        CHECK_EQ(filled[i]->key_alg, HUSH_TPM_KEY_ECC_P256);
        CHECK_EQ(filled[i]->persistent_handle, 0);
    }
    CHECK_STATUS(hush_tpm_options_init(NULL, HUSH_TPM_OPTIONS_VERSION, &err), HUSH_E_ARGUMENT,
                 &err);

    o.tcti = tpm_sim.tcti;
    const unsigned unknown[] = {0, HUSH_TPM_OPTIONS_VERSION + 1};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        hush_tpm_options untouched = o;
        CHECK_STATUS(hush_tpm_options_init(&o, unknown[i], &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_tpm_options") != NULL);
        CHECK(o.tcti == untouched.tcti && o.version == untouched.version);

        o.version = unknown[i];
        hush_tpm *tpm = (hush_tpm *)&o; /* must be set to NULL on failure */
        CHECK_STATUS(hush_tpm_open(&o, &tpm, &err), HUSH_E_ARGUMENT, &err);
        CHECK(strstr(err.message, "hush_tpm_options") != NULL);
        CHECK(tpm == NULL);
        o.version = HUSH_TPM_OPTIONS_VERSION;
    }
    hush_tpm *tpm = NULL;
    CHECK_OK(hush_tpm_open(&o, &tpm, &err), &err);
    hush_tpm_close(tpm);
}

static void test_bad_handles(void)
{
    static const uint32_t bad[] = {0x81000001u, 0x80000000u, 0x01000000u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hush_tpm_options opts = tpm_options(tpm_sim.tcti, NULL, HUSH_TPM_KEY_ECC_P256, bad[i]);
        hush_tpm *tpm = NULL;
        hush_error err;
        CHECK_STATUS(hush_tpm_open(&opts, &tpm, &err), HUSH_E_ARGUMENT, &err);
        CHECK(tpm == NULL);
    }
}

/* An ECC signing key made persistent with tpm2-tools at `handle`. */
static bool make_persistent_key(const char *handle, const char *attributes)
{
    char ctx[128];
    snprintf(ctx, sizeof ctx, "%s/primary-%s.ctx", files_dir, handle);
    const char *create[] = {"tpm2_createprimary", "-Q", "-T", tpm_sim.tcti, "-C", "e", "-G",
                            "ecc256:ecdsa-sha256:null", "-a", attributes, "-c", ctx, NULL};
    const char *evict[] = {"tpm2_evictcontrol", "-Q", "-T", tpm_sim.tcti, "-C", "o", "-c", ctx,
                           handle, NULL};
    /* tpm2-tools leaves its transient objects loaded in a TPM without a
     * resource manager; free the slots for hush_tpm's own keys. */
    const char *flush[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-t", NULL};
    return run_tool(create) && run_tool(evict) && run_tool(flush);
}

/* A restricted key at a persistent handle: hush_tpm quotes with it, the same
 * key each time. An unrestricted one is refused: clients would refuse its
 * quotes, since it could sign anything. */
static void test_persistent_key(void)
{
    CHECK(make_persistent_key(PERSISTENT_HANDLE,
                              "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|"
                              "restricted|sign"));
    CHECK(make_persistent_key("0x81000003",
                              "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"));
    hush_tpm_options unrestricted =
        tpm_options(tpm_sim.tcti, NULL, HUSH_TPM_KEY_ECC_P256, 0x81000003u);
    hush_tpm *refused = NULL;
    hush_error err;
    CHECK_STATUS(hush_tpm_open(&unrestricted, &refused, &err), HUSH_E_ARGUMENT, &err);
    CHECK(refused == NULL && strstr(err.message, "restricted") != NULL);

    hush_tpm *tpm = open_tpm(CUSTOM_PCRS, HUSH_TPM_KEY_RSA_2048, 0x81000002u);
    if (tpm == NULL)
        return;
    char a[1024], b[1024];
    hush_json_doc *d1 = quote_ok(tpm, "persistent one");
    hush_json_doc *d2 = quote_ok(tpm, "persistent two");
    check_attestation(d1, "persistent one", &CUSTOM_SELECTION, TPM2_ALG_ECC, true, a, sizeof a);
    check_attestation(d2, "persistent two", &CUSTOM_SELECTION, TPM2_ALG_ECC, true, b, sizeof b);
    CHECK(a[0] != '\0' && strcmp(a, b) == 0);
    hush_json_doc_free(d1);
    hush_json_doc_free(d2);
    hush_tpm_close(tpm);
}

typedef struct quote_job {
    hush_tpm *tpm;
    char payload_id[QUOTES_PER_THREAD][48];
    hush_json_doc *doc[QUOTES_PER_THREAD];
    hush_status status[QUOTES_PER_THREAD];
    hush_error err[QUOTES_PER_THREAD];
} quote_job;

static void *quote_thread(void *arg)
{
    quote_job *job = arg;
    for (int i = 0; i < QUOTES_PER_THREAD; i++)
        job->doc[i] = quote_doc(job->tpm, job->payload_id[i], &job->status[i], &job->err[i]);
    return NULL;
}

static void test_concurrent_quotes(void)
{
    hush_tpm *tpm = open_tpm(NULL, HUSH_TPM_KEY_ECC_P256, 0);
    if (tpm == NULL)
        return;
    static quote_job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) {
        memset(&jobs[t], 0, sizeof jobs[t]);
        jobs[t].tpm = tpm;
        for (int i = 0; i < QUOTES_PER_THREAD; i++)
            snprintf(jobs[t].payload_id[i], sizeof jobs[t].payload_id[i], "thread %d quote %d",
                     t, i);
        CHECK(pthread_create(&threads[t], NULL, quote_thread, &jobs[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < QUOTES_PER_THREAD; i++) {
            CHECK_OK(jobs[t].status[i], &jobs[t].err[i]);
            check_attestation(jobs[t].doc[i], jobs[t].payload_id[i], &DEFAULT_SELECTION,
                              TPM2_ALG_ECC, true, NULL, 0);
            hush_json_doc_free(jobs[t].doc[i]);
        }
    }
    hush_tpm_close(tpm);
}

/* One request answered by `server`, opened with the client's key. */
typedef struct served {
    hush_server *server;
    hush_pubkey *server_pub;
    hush_keypair *client_key;
    char *client_pem;
    size_t pem_len;
} served;

static hush_json_doc *serve_one(const served *sv, const char *payload_id, bool attest)
{
    hush_secbuf *request = NULL;
    hush_server_answer answer = {0};
    hush_envelope_v1_opened opened = {0};
    hush_json_doc *doc = NULL;
    hush_error err;
    const char *body = "{\"model\": \"m\", \"messages\": "
                       "[{\"role\": \"user\", \"content\": \"hi\"}]}";
    CHECK_OK(hush_envelope_v1_seal(sv->server_pub, body, strlen(body), HUSH_V1_NO_PROCESSED_AT,
                                   &request, &err), &err);
    hush_server_request req = {hush_secbuf_data(request), hush_secbuf_len(request),
                               sv->client_pem, sv->pem_len, payload_id, "standard", attest};
    CHECK_OK(hush_server_handle(sv->server, &req, &answer, &err), &err);
    CHECK_OK(hush_envelope_v1_open(sv->client_key, hush_secbuf_data(answer.package),
                                   hush_secbuf_len(answer.package), 0, &opened, &err),
             &err);
    CHECK_OK(hush_json_parse(hush_secbuf_data(opened.plaintext),
                             hush_secbuf_len(opened.plaintext), NULL, 0, &doc, &err),
             &err);
    hush_envelope_v1_opened_clear(&opened);
    hush_server_answer_clear(&answer);
    hush_secbuf_free(request);
    return doc;
}

static const hush_json_value *tpm_attestation_of(const hush_json_doc *doc)
{
    const hush_json_value *meta = hush_json_object_get(hush_json_doc_root(doc), "_metadata", 9);
    return hush_json_object_get(meta, "tpm_attestation", 15);
}

/* The whole server role with a persistent AIK: an answer asked to be
 * attested carries a quote that the client side's verifier accepts for this
 * request and no other, once the AIK is pinned; an answer not asked says
 * it was not quoted. */
static void test_server_answers_are_attested(void)
{
    /* the persistent key test_persistent_key made */
    hush_tpm *tpm = open_tpm(NULL, HUSH_TPM_KEY_ECC_P256, 0x81000002u);
    served sv = {0};
    hush_keypair *server_key = NULL;
    hush_error err;
    if (tpm == NULL)
        return;
    CHECK_OK(hush_keypair_generate(2048, &server_key, &err), &err);
    CHECK_OK(hush_keypair_generate(2048, &sv.client_key, &err), &err);
    CHECK_OK(hush_pubkey_from_keypair(server_key, &sv.server_pub, &err), &err);
    CHECK_OK(hush_keypair_public_pem(sv.client_key, &sv.client_pem, &sv.pem_len, &err), &err);
    hush_server_options o = HUSH_SERVER_OPTIONS_INIT;
    o.key = server_key;
    o.tpm = tpm;
    CHECK_OK(hush_server_new(&o, &sv.server, &err), &err);

    hush_json_doc *doc = serve_one(&sv, "attested-1", true);
    const hush_json_value *quote = tpm_attestation_of(doc);
    hush_attest_result result;
    CHECK_OK(hush_attest_verify(quote, "attested-1", NULL, &result, &err), &err);
    CHECK(!result.verified && strcmp(result.reason, HUSH_ATTEST_UNPINNED_AIK) == 0);
    hush_attest_policy *pinned = pinning_policy(result.aik_fingerprint);
    CHECK_OK(hush_attest_verify(quote, "attested-1", pinned, &result, &err), &err);
    CHECK(result.verified && strcmp(result.reason, "ok") == 0);
    CHECK_OK(hush_attest_verify(quote, "attested-2", pinned, &result, &err), &err);
    CHECK(!result.verified && strcmp(result.reason, "wrong qualifying data") == 0);
    hush_json_doc_free(doc);

    doc = serve_one(&sv, "not-asked", false);
    quote = tpm_attestation_of(doc);
    CHECK_EQ(hush_json_length(quote), 2);
    CHECK(hush_json_bool(hush_json_object_get(quote, "is_available", 12)));
    const hush_json_value *quoted = hush_json_object_get(quote, "quoted", 6);
    CHECK(hush_json_type_of(quoted) == HUSH_JSON_BOOL && !hush_json_bool(quoted));
    CHECK_OK(hush_attest_verify(quote, "not-asked", pinned, &result, &err), &err);
    CHECK(!result.verified && strcmp(result.reason, "not quoted") == 0);
    hush_json_doc_free(doc);

    hush_attest_policy_free(pinned);
    free(sv.client_pem);
    hush_server_free(sv.server);
    hush_pubkey_free(sv.server_pub);
    hush_keypair_free(sv.client_key);
    hush_keypair_free(server_key);
    hush_tpm_close(tpm);
}

static void test_null_arguments(void)
{
    hush_tpm *tpm = open_tpm(NULL, HUSH_TPM_KEY_ECC_P256, 0);
    if (tpm == NULL)
        return;
    hush_error err;
    CHECK_STATUS(hush_tpm_quote(tpm, NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
    hush_tpm_close(tpm);
    hush_tpm_close(NULL);
}

int main(void)
{
    snprintf(files_dir, sizeof files_dir, "/tmp/hush-tpm-test-XXXXXX");
    if (mkdtemp(files_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if (!swtpm_start(&tpm_sim)) {
        fprintf(stderr, "FAIL: no software TPM, so nothing could be tested\n");
        remove_tree(files_dir);
        return 1;
    }
    if (!extend_pcrs()) {
        fprintf(stderr, "FAIL: tpm2_pcrextend failed (tpm2-tools is needed)\n");
        check_tests_failed++;
    } else {
        RUN_TEST(test_quote_ecc_default);
        RUN_TEST(test_quote_ecc_custom);
        RUN_TEST(test_quote_rsa_default);
        RUN_TEST(test_quote_rsa_custom);
        RUN_TEST(test_selection_is_canonical);
        RUN_TEST(test_ephemeral_keys_differ);
        RUN_TEST(test_bad_selections);
        RUN_TEST(test_bad_tcti);
        RUN_TEST(test_bad_handles);
        RUN_TEST(test_options_versions);
        RUN_TEST(test_persistent_key);
        RUN_TEST(test_concurrent_quotes);
        RUN_TEST(test_server_answers_are_attested);
        RUN_TEST(test_null_arguments);
    }
    swtpm_stop(&tpm_sim);
    remove_tree(files_dir);
    return check_report();
}
