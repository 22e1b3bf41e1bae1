/* test_tpm.c — hush_tpm against a software TPM (swtpm): quotes with both
 * key types and two PCR selections, every written field decoded with
 * tss2-mu and checked here, and each quote verified independently by
 * tpm2-tools' tpm2_checkquote (tests/interop/checkquote.sh). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
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

static hush_tpm *open_tpm_on(const swtpm *sim, const char *pcrs, hush_tpm_key_alg alg,
                             uint32_t handle)
{
    hush_tpm_options opts = tpm_options(sim->tcti, pcrs, alg, handle);
    hush_tpm *tpm = NULL;
    hush_error err;
    CHECK_OK(hush_tpm_open(&opts, &tpm, &err), &err);
    return tpm;
}

static hush_tpm *open_tpm(const char *pcrs, hush_tpm_key_alg alg, uint32_t handle)
{
    return open_tpm_on(&tpm_sim, pcrs, alg, handle);
}

/* {<the attestation members>} of hush_tpm_quote(payload_id), or of
 * hush_tpm_quote_bound(q) when payload_id is NULL, parsed; or NULL with
 * `*status` set. */
static hush_json_doc *attestation_doc(hush_tpm *tpm, const char *payload_id,
                                      const unsigned char *q, size_t q_len, hush_status *status,
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
        *status = payload_id != NULL ? hush_tpm_quote(tpm, payload_id, w, err)
                                     : hush_tpm_quote_bound(tpm, q, q_len, w, err);
    if (*status == HUSH_OK)
        *status = hush_json_write_object_end(w, err);
    if (*status == HUSH_OK)
        *status = hush_json_parse(hush_secbuf_data(buf), hush_secbuf_len(buf), NULL,
                                  HUSH_SECMEM_NO_LOCK, &doc, err);
    hush_json_writer_free(w);
    hush_secbuf_free(buf);
    return doc;
}

static hush_json_doc *quote_doc(hush_tpm *tpm, const char *payload_id, hush_status *status,
                                hush_error *err)
{
    return attestation_doc(tpm, payload_id, NULL, 0, status, err);
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

/* tpm2_checkquote on the blobs with `qualifying` (1..32 bytes); true when
 * it accepts the quote. */
static bool tpm2_checkquote(const unsigned char *pub, size_t pub_len, const TPM2B_ATTEST *attest,
                            const unsigned char *sig, size_t sig_len,
                            const unsigned char *values, size_t values_len, const char *banks,
                            const unsigned char *qualifying, size_t qualifying_len)
{
    char pub_path[128], msg_path[128], sig_path[128], pcr_path[128], hex[65];
    for (size_t i = 0; i < qualifying_len && i < 32; i++)
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

/* Everything about one attestation quoted with `q` as qualifying data;
 * `aik_b64` (may be NULL) receives the AIK member for comparisons. */
static void check_bound_attestation(const hush_json_doc *doc, const unsigned char *q,
                                    size_t q_len, const expected_selection *sel,
                                    TPMI_ALG_PUBLIC key_type, bool restricted, char *aik_b64,
                                    size_t aik_cap)
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
    CHECK_EQ(info.magic, TPM2_GENERATED_VALUE);
    CHECK_EQ(info.type, TPM2_ST_ATTEST_QUOTE);
    CHECK(info.extraData.size == q_len && memcmp(info.extraData.buffer, q, q_len) == 0);
    check_quoted_selection(&info.attested.quote.pcrSelect, sel);
    unsigned char digest[32];
    EVP_Digest(values, values_len, digest, NULL, EVP_sha256(), NULL);
    CHECK(info.attested.quote.pcrDigest.size == 32 &&
          memcmp(info.attested.quote.pcrDigest.buffer, digest, 32) == 0);

    /* The independent verifier: accepts this quote, refuses another nonce. */
    CHECK(tpm2_checkquote(pub_raw, pub_len, &attest, sig_raw, sig_len, values, values_len,
                          sel->banks, q, q_len));
    unsigned char other[32];
    memcpy(other, q, q_len);
    other[q_len - 1] ^= 1;
    CHECK(!tpm2_checkquote(pub_raw, pub_len, &attest, sig_raw, sig_len, values, values_len,
                           sel->banks, other, q_len));
}

/* The same for a quote of one request: SHA-256(payload_id)[:16]. */
static void check_attestation(const hush_json_doc *doc, const char *payload_id,
                              const expected_selection *sel, TPMI_ALG_PUBLIC key_type,
                              bool restricted, char *aik_b64, size_t aik_cap)
{
    unsigned char q[16];
    qualifying_data(payload_id, q);
    check_bound_attestation(doc, q, sizeof q, sel, key_type, restricted, aik_b64, aik_cap);
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

/* An ECC signing key made persistent with tpm2-tools at `handle` of `sim`. */
static bool make_persistent_key_on(const swtpm *sim, const char *handle,
                                   const char *attributes)
{
    char ctx[128];
    snprintf(ctx, sizeof ctx, "%s/primary-%s-%d.ctx", files_dir, handle, sim->port);
    const char *create[] = {"tpm2_createprimary", "-Q", "-T", sim->tcti, "-C", "e", "-G",
                            "ecc256:ecdsa-sha256:null", "-a", attributes, "-c", ctx, NULL};
    const char *evict[] = {"tpm2_evictcontrol", "-Q", "-T", sim->tcti, "-C", "o", "-c", ctx,
                           handle, NULL};
    /* tpm2-tools leaves its transient objects loaded in a TPM without a
     * resource manager; free the slots for hush_tpm's own keys. */
    const char *flush[] = {"tpm2_flushcontext", "-T", sim->tcti, "-t", NULL};
    return run_tool(create) && run_tool(evict) && run_tool(flush);
}

static bool make_persistent_key(const char *handle, const char *attributes)
{
    return make_persistent_key_on(&tpm_sim, handle, attributes);
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


/* ---- quotes with the caller's qualifying data ---------------------------- */

/* hush_tpm_quote_bound quotes exactly the bytes given (1 and 32 of them,
 * both key types): the same members as a request's quote, and
 * tpm2_checkquote accepts them with those bytes and refuses other ones. */
static void test_quote_bound(void)
{
    static const hush_tpm_key_alg algs[] = {HUSH_TPM_KEY_ECC_P256, HUSH_TPM_KEY_RSA_2048};
    static const size_t lengths[] = {32, 1};
    for (size_t i = 0; i < 2; i++) {
        hush_tpm *tpm = open_tpm(NULL, algs[i], 0);
        if (tpm == NULL)
            return;
        unsigned char q[32];
        for (size_t k = 0; k < sizeof q; k++)
            q[k] = (unsigned char)(0xA0 + k + i);
        hush_status st;
        hush_error err;
        hush_json_doc *doc = attestation_doc(tpm, NULL, q, lengths[i], &st, &err);
        CHECK_OK(st, &err);
        check_bound_attestation(doc, q, lengths[i], &DEFAULT_SELECTION,
                                algs[i] == HUSH_TPM_KEY_ECC_P256 ? TPM2_ALG_ECC : TPM2_ALG_RSA,
                                true, NULL, 0);
        hush_json_doc_free(doc);
        hush_tpm_close(tpm);
    }
}

/* No qualifying data, more than 32 bytes or NULLs: HUSH_E_ARGUMENT, and
 * nothing written into the caller's object. */
static void test_quote_bound_arguments(void)
{
    hush_tpm *tpm = open_tpm(NULL, HUSH_TPM_KEY_ECC_P256, 0);
    if (tpm == NULL)
        return;
    hush_secbuf *buf = NULL;
    hush_json_writer *w = NULL;
    hush_error err;
    CHECK_OK(hush_secbuf_new(256, 0, HUSH_SECMEM_PUBLIC, &buf, &err), &err);
    CHECK_OK(hush_json_writer_new(buf, HUSH_JSON_WRITE_COMPACT, 0, &w, &err), &err);
    CHECK_OK(hush_json_write_object_begin(w, &err), &err);
    unsigned char q[33] = {1};
    CHECK_STATUS(hush_tpm_quote_bound(tpm, q, 0, w, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_tpm_quote_bound(tpm, q, 33, w, &err), HUSH_E_ARGUMENT, &err);
    CHECK(strstr(err.message, "33 bytes") != NULL);
    CHECK_STATUS(hush_tpm_quote_bound(tpm, NULL, 16, w, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_tpm_quote_bound(tpm, q, 16, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_tpm_quote_bound(NULL, q, 16, w, &err), HUSH_E_ARGUMENT, &err);
    CHECK_EQ(hush_secbuf_len(buf), 1);
    CHECK_OK(hush_tpm_quote_bound(tpm, q, 32, w, &err), &err);
    CHECK(hush_secbuf_len(buf) > 1);
    hush_json_writer_free(w);
    hush_secbuf_free(buf);
    hush_tpm_close(tpm);
}

/* ---- enrolment: EK certificate, AIK, ActivateCredential ------------------ */

static swtpm ek_sim, other_sim; /* manufactured: EK certificates from ek_ca */
static swtpm_ek_ca ek_ca;
#define AIK_HANDLE 0x81000002u
#define AIK_ATTRIBUTES "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
#define EK_CERT_RSA_NV "0x01c00002"

static void files_path(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", files_dir, name);
}

/* What tpm2-tools says about ek_sim, read before any hush_tpm holds it
 * (swtpm serves one connection at a time): the EK certificate
 * (tpm2_nvread), the EK (tpm2_createek) and the AIK (tpm2_readpublic). */
static bool read_ek_sim_with_tools(void)
{
    char cert[128], ek_ctx[128], ek_pub[128], aik[128];
    files_path("ek-cert.der", cert, sizeof cert);
    files_path("ek.ctx", ek_ctx, sizeof ek_ctx);
    files_path("ek.pub", ek_pub, sizeof ek_pub);
    files_path("aik.tss", aik, sizeof aik);
    const char *nvread[] = {"tpm2_nvread", "-T", ek_sim.tcti, "-o", cert, EK_CERT_RSA_NV, NULL};
    const char *createek[] = {"tpm2_createek", "-T", ek_sim.tcti, "-G", "rsa", "-c", ek_ctx,
                              "-u", ek_pub, NULL};
    const char *flush[] = {"tpm2_flushcontext", "-T", ek_sim.tcti, "-t", NULL};
    const char *readpublic[] = {"tpm2_readpublic", "-Q", "-T", ek_sim.tcti, "-c", "0x81000002",
                                "-o", aik, NULL};
    return run_tool(nvread) && run_tool(createek) && run_tool(flush) && run_tool(readpublic);
}

/* Two manufactured TPMs, each with a persistent AIK. */
static bool manufacture(void)
{
    return swtpm_ek_ca_init(&ek_ca) && swtpm_start_manufactured(&ek_sim, &ek_ca) &&
           swtpm_start_manufactured(&other_sim, &ek_ca) &&
           make_persistent_key_on(&ek_sim, "0x81000002", AIK_ATTRIBUTES) &&
           make_persistent_key_on(&other_sim, "0x81000002", AIK_ATTRIBUTES) &&
           read_ek_sim_with_tools();
}

static unsigned char *read_binary(const char *name, size_t *len)
{
    char path[128];
    files_path(name, path, sizeof path);
    unsigned char *data = (unsigned char *)read_text_file(path, len);
    CHECK(data != NULL);
    return data;
}

/* The certificate's DER SubjectPublicKeyInfo, into `out`; its length or 0. */
static size_t ek_certificate_spki(hush_tpm *tpm, unsigned char *out, size_t cap)
{
    unsigned char *der = NULL;
    size_t len = 0, spki_len = 0;
    hush_error err;
    CHECK_OK(hush_tpm_ek_certificate(tpm, &der, &len, &err), &err);
    const unsigned char *p = der;
    X509 *cert = der != NULL ? d2i_X509(NULL, &p, (long)len) : NULL;
    CHECK(cert != NULL);
    int n = cert != NULL ? i2d_PUBKEY(X509_get0_pubkey(cert), NULL) : -1;
    unsigned char *at = out;
    if (n > 0 && (size_t)n <= cap && i2d_PUBKEY(X509_get0_pubkey(cert), &at) == n)
        spki_len = (size_t)n;
    CHECK(spki_len > 0);
    X509_free(cert);
    free(der);
    return spki_len;
}

/* The AIK's name (Part 1 §16): nameAlg, then that hash of its TPMT_PUBLIC
 * (the marshalled TPM2B_PUBLIC without its size). SHA-256 only. */
static size_t aik_name(hush_tpm *tpm, unsigned char out[2 + 32])
{
    unsigned char pub[1024];
    size_t len = 0;
    hush_error err;
    CHECK_OK(hush_tpm_aik_public(tpm, pub, sizeof pub, &len, &err), &err);
    CHECK(len > 6 && pub[4] == 0x00 && pub[5] == 0x0b); /* size, type, nameAlg SHA-256 */
    if (len <= 6)
        return 0;
    out[0] = 0x00;
    out[1] = 0x0b;
    EVP_Digest(pub + 2, len - 2, out + 2, NULL, EVP_sha256(), NULL);
    return 2 + 32;
}

/* A credential of `secret` for `name` to the EK of `ek_tpm`'s certificate. */
static void make_credential(hush_tpm *ek_tpm, const unsigned char *name, size_t name_len,
                            const unsigned char *secret, size_t secret_len, hush_credential *out)
{
    unsigned char spki[1024];
    size_t spki_len = ek_certificate_spki(ek_tpm, spki, sizeof spki);
    hush_error err;
    CHECK_OK(hush_credential_make(spki, spki_len, name, name_len, secret, secret_len, out, &err),
             &err);
}

/* hush_tpm_activate_credential gives back exactly `secret`. */
static void check_activates(hush_tpm *tpm, const unsigned char *id_object, size_t id_len,
                            const unsigned char *encrypted_secret, size_t es_len,
                            const unsigned char *secret, size_t secret_len)
{
    hush_secbuf *got = NULL;
    hush_error err;
    CHECK_OK(hush_tpm_activate_credential(tpm, id_object, id_len, encrypted_secret, es_len, &got,
                                          &err),
             &err);
    CHECK(hush_secbuf_len(got) == secret_len &&
          memcmp(hush_secbuf_data(got), secret, secret_len) == 0);
    hush_secbuf_free(got);
}

/* The TPM refuses the credential with one opaque error, and still quotes. */
static void check_refused(hush_tpm *tpm, const hush_credential *c)
{
    hush_secbuf *got = (hush_secbuf *)c; /* must be reset to NULL */
    hush_error err;
    CHECK_STATUS(hush_tpm_activate_credential(tpm, c->id_object, c->id_object_len,
                                              c->encrypted_secret, c->encrypted_secret_len, &got,
                                              &err),
                 HUSH_E_AUTH, &err);
    CHECK(got == NULL);
    CHECK(strcmp(err.message, "the credential did not activate") == 0);
    unsigned char q[32] = {0x5a};
    hush_status st;
    hush_json_doc *doc = attestation_doc(tpm, NULL, q, sizeof q, &st, &err);
    CHECK_OK(st, &err);
    CHECK_EQ(hush_json_length(hush_json_doc_root(doc)), 6);
    hush_json_doc_free(doc);
}

/* The certificate is the bytes `tpm2_nvread 0x01c00002` reads, a whole
 * X.509 certificate whose key is the EK that tpm2_createek makes. */
static void test_ek_certificate(void)
{
    size_t nv_len = 0, ek_len = 0;
    unsigned char *nv = read_binary("ek-cert.der", &nv_len);
    unsigned char *ek_raw = read_binary("ek.pub", &ek_len);
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    unsigned char *der = NULL;
    size_t len = 0;
    hush_error err;
    if (tpm != NULL)
        CHECK_OK(hush_tpm_ek_certificate(tpm, &der, &len, &err), &err);
    CHECK(der != NULL && nv != NULL && len == nv_len && memcmp(der, nv, len) == 0);

    const unsigned char *p = der;
    X509 *cert = der != NULL ? d2i_X509(NULL, &p, (long)len) : NULL;
    CHECK(cert != NULL && p == der + len);
    TPM2B_PUBLIC ek;
    memset(&ek, 0, sizeof ek);
    size_t off = 0;
    CHECK(ek_raw != NULL &&
          Tss2_MU_TPM2B_PUBLIC_Unmarshal(ek_raw, ek_len, &off, &ek) == TSS2_RC_SUCCESS);
    BIGNUM *n = NULL;
    unsigned char modulus[256];
    CHECK(cert != NULL && EVP_PKEY_get_bn_param(X509_get0_pubkey(cert), "n", &n) == 1 &&
          BN_bn2binpad(n, modulus, sizeof modulus) == sizeof modulus);
    CHECK(ek.publicArea.type == TPM2_ALG_RSA && ek.publicArea.unique.rsa.size == 256 &&
          memcmp(ek.publicArea.unique.rsa.buffer, modulus, 256) == 0);
    BN_free(n);
    X509_free(cert);
    free(der);
    free(ek_raw);
    free(nv);
    hush_tpm_close(tpm);
}

/* An unmanufactured TPM has no EK certificate: HUSH_E_NOT_FOUND, for the
 * certificate and for activation alike, and the TPM still quotes. */
static void test_ek_certificate_missing(void)
{
    hush_tpm *tpm = open_tpm(NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE); /* test_persistent_key's */
    if (tpm == NULL)
        return;
    unsigned char *der = (unsigned char *)&tpm; /* must be reset to NULL */
    size_t len = 1;
    hush_error err;
    CHECK_STATUS(hush_tpm_ek_certificate(tpm, &der, &len, &err), HUSH_E_NOT_FOUND, &err);
    CHECK(der == NULL && len == 0);
    hush_credential c;
    unsigned char name[34], secret[32] = {7};
    hush_tpm *ek_tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    if (ek_tpm != NULL) {
        make_credential(ek_tpm, name, aik_name(tpm, name), secret, sizeof secret, &c);
        hush_secbuf *got = NULL;
        CHECK_STATUS(hush_tpm_activate_credential(tpm, c.id_object, c.id_object_len,
                                                  c.encrypted_secret, c.encrypted_secret_len,
                                                  &got, &err),
                     HUSH_E_NOT_FOUND, &err);
        CHECK(got == NULL);
    }
    CHECK_STATUS(hush_tpm_ek_certificate(tpm, NULL, &len, &err), HUSH_E_ARGUMENT, &err);
    hush_json_doc *doc = quote_ok(tpm, "still quoting");
    check_attestation(doc, "still quoting", &DEFAULT_SELECTION, TPM2_ALG_ECC, true, NULL, 0);
    hush_json_doc_free(doc);
    hush_tpm_close(ek_tpm);
    hush_tpm_close(tpm);
}

/* The AIK's public area is what `tpm2_readpublic -o` writes for its handle,
 * and what the quotes carry; a buffer too small is refused. */
static void test_aik_public(void)
{
    size_t tools_len = 0;
    unsigned char *tools = read_binary("aik.tss", &tools_len);
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    unsigned char pub[1024];
    size_t len = 0;
    hush_error err;
    if (tpm != NULL)
        CHECK_OK(hush_tpm_aik_public(tpm, pub, sizeof pub, &len, &err), &err);
    CHECK(tools != NULL && len == tools_len && memcmp(pub, tools, len) == 0);
    unsigned char q[32] = {1};
    hush_status st;
    hush_json_doc *doc = tpm != NULL ? attestation_doc(tpm, NULL, q, sizeof q, &st, &err) : NULL;
    unsigned char quoted[1024];
    size_t quoted_len = doc != NULL ? member_blob(doc, "aik_pubkey_b64", quoted, sizeof quoted)
                                    : 0;
    CHECK(quoted_len == len && memcmp(quoted, pub, len) == 0);
    if (tpm != NULL)
        CHECK_STATUS(hush_tpm_aik_public(tpm, pub, len - 1, &len, &err), HUSH_E_LIMIT, &err);
    hush_json_doc_free(doc);
    free(tools);
    hush_tpm_close(tpm);
}

/* An ephemeral AIK cannot be enrolled: both calls say so. */
static void test_ephemeral_aik_is_not_enrolled(void)
{
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, 0);
    if (tpm == NULL)
        return;
    unsigned char buf[1024];
    size_t len = 0;
    hush_secbuf *got = NULL;
    hush_error err;
    CHECK_STATUS(hush_tpm_aik_public(tpm, buf, sizeof buf, &len, &err), HUSH_E_UNSUPPORTED,
                 &err);
    CHECK_STATUS(hush_tpm_activate_credential(tpm, buf, 4, buf, 4, &got, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK(got == NULL);
    hush_tpm_close(tpm);
}

/* A credential made by credential.h (TPM2_MakeCredential in software) for
 * this AIK to this EK activates, secrets of 32 and 1 bytes alike. */
static void test_activate_hush_credential(void)
{
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    if (tpm == NULL)
        return;
    unsigned char name[34], secret[32];
    size_t name_len = aik_name(tpm, name);
    CHECK(RAND_bytes(secret, sizeof secret) == 1);
    hush_credential c;
    make_credential(tpm, name, name_len, secret, sizeof secret, &c);
    check_activates(tpm, c.id_object, c.id_object_len, c.encrypted_secret,
                    c.encrypted_secret_len, secret, sizeof secret);
    make_credential(tpm, name, name_len, secret, 1, &c);
    check_activates(tpm, c.id_object, c.id_object_len, c.encrypted_secret,
                    c.encrypted_secret_len, secret, 1);
    hush_tpm_close(tpm);
}

/* tpm2-tools' tpm2_makecredential (no TPM: -T none) for the AIK's name to
 * tpm2_createek's EK: its file is magic 0xBADCC0DE, version 1, then the
 * TPM2B_ID_OBJECT and the TPM2B_ENCRYPTED_SECRET. */
static void test_activate_tpm2_makecredential(void)
{
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    if (tpm == NULL)
        return;
    unsigned char name[34], secret[32];
    size_t name_len = aik_name(tpm, name);
    char name_hex[2 * sizeof name + 1], secret_path[128], ek_pub[128], out_path[128];
    for (size_t i = 0; i < name_len; i++)
        snprintf(name_hex + 2 * i, 3, "%02x", name[i]);
    CHECK(RAND_bytes(secret, sizeof secret) == 1);
    CHECK(write_file("secret.bin", secret, sizeof secret, secret_path, sizeof secret_path));
    files_path("ek.pub", ek_pub, sizeof ek_pub);
    files_path("cred.bin", out_path, sizeof out_path);
    const char *make[] = {"tpm2_makecredential", "-Q", "-T", "none", "-u", ek_pub, "-s",
                          secret_path, "-n", name_hex, "-o", out_path, NULL};
    CHECK(run_tool(make));
    size_t len = 0;
    unsigned char *blob = read_binary("cred.bin", &len);
    static const unsigned char header[8] = {0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1};
    CHECK(blob != NULL && len > 12 && memcmp(blob, header, 8) == 0);
    if (blob != NULL && len > 12) {
        size_t id_len = 2 + ((size_t)blob[8] << 8 | blob[9]);
        CHECK(8 + id_len < len);
        check_activates(tpm, blob + 8, id_len, blob + 8 + id_len, len - 8 - id_len, secret,
                        sizeof secret);
    }
    free(blob);
    hush_tpm_close(tpm);
}

/* Refused, each with the same opaque HUSH_E_AUTH, the TPM quoting after
 * each: a tampered credential (in its HMAC, in its encrypted secret, in its
 * seed), one made for another AIK's name, one made to another TPM's EK. */
static void test_activate_refusals(void)
{
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    hush_tpm *other = open_tpm_on(&other_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    if (tpm == NULL || other == NULL)
        goto done;
    unsigned char name[34], other_name[34], secret[32] = {0x42};
    size_t name_len = aik_name(tpm, name);
    CHECK(aik_name(other, other_name) == name_len && memcmp(name, other_name, name_len) != 0);
    hush_credential good, c;
    make_credential(tpm, name, name_len, secret, sizeof secret, &good);
    const size_t tampered_at[] = {4, good.id_object_len - 1}; /* in the HMAC, in the secret */
    for (size_t i = 0; i < 2; i++) {
        c = good;
        c.id_object[tampered_at[i]] ^= 0x01;
        check_refused(tpm, &c);
    }
    c = good;
    c.encrypted_secret[c.encrypted_secret_len / 2] ^= 0x01;
    check_refused(tpm, &c);
    make_credential(tpm, other_name, name_len, secret, sizeof secret, &c);
    check_refused(tpm, &c);
    make_credential(other, name, name_len, secret, sizeof secret, &c);
    check_refused(tpm, &c);
    check_activates(tpm, good.id_object, good.id_object_len, good.encrypted_secret,
                    good.encrypted_secret_len, secret, sizeof secret);
done:
    hush_tpm_close(other);
    hush_tpm_close(tpm);
}

/* Blobs that are not one whole TPM2B each: HUSH_E_FORMAT before the TPM
 * is asked; NULLs: HUSH_E_ARGUMENT. */
static void test_activate_junk(void)
{
    hush_tpm *tpm = open_tpm_on(&ek_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    if (tpm == NULL)
        return;
    unsigned char name[34], secret[32] = {9};
    hush_credential good;
    make_credential(tpm, name, aik_name(tpm, name), secret, sizeof secret, &good);
    static const unsigned char too_long[] = {0xff, 0xff, 1, 2, 3};
    static const unsigned char empty[] = {0x00, 0x00};
    unsigned char trailing[sizeof good.id_object + 1];
    memcpy(trailing, good.id_object, good.id_object_len);
    trailing[good.id_object_len] = 0;
    const struct {
        const unsigned char *id, *es;
        size_t id_len, es_len;
    } junk[] = {
        {too_long, good.encrypted_secret, sizeof too_long, good.encrypted_secret_len},
        {good.id_object, too_long, good.id_object_len, sizeof too_long},
        {empty, good.encrypted_secret, sizeof empty, good.encrypted_secret_len},
        {good.id_object, empty, good.id_object_len, sizeof empty},
        {trailing, good.encrypted_secret, good.id_object_len + 1, good.encrypted_secret_len},
        {good.id_object, good.encrypted_secret, 1, good.encrypted_secret_len},
        {good.id_object, good.encrypted_secret, good.id_object_len, 0},
    };
    hush_error err;
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        hush_secbuf *got = NULL;
        CHECK_STATUS(hush_tpm_activate_credential(tpm, junk[i].id, junk[i].id_len, junk[i].es,
                                                  junk[i].es_len, &got, &err),
                     HUSH_E_FORMAT, &err);
        CHECK(got == NULL);
    }
    hush_secbuf *got = NULL;
    CHECK_STATUS(hush_tpm_activate_credential(tpm, NULL, 4, empty, 2, &got, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_tpm_activate_credential(tpm, empty, 2, empty, 2, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    check_activates(tpm, good.id_object, good.id_object_len, good.encrypted_secret,
                    good.encrypted_secret_len, secret, sizeof secret);
    hush_tpm_close(tpm);
}

/* ---- a P-256 EK certificate --------------------------------------------- */

#define EK_CERT_ECC_NV "0x01c0000a"
#define EK_CERT_PADDING 64 /* bytes of index past the certificate, as some TPMs have */

/* Installs at 0x01c0000a of other_sim (with platform auth, as a
 * manufacturer does) a certificate for the P-256 public key in `key_pem`,
 * signed by the test CA's key, in an index larger than it; its DER goes to
 * `der_name`. */
static bool install_p256_certificate(const char *key_pem, const char *der_name)
{
    char der[128], signer[128], size[16];
    files_path(der_name, der, sizeof der);
    snprintf(signer, sizeof signer, "%s/signkey.pem", ek_ca.dir);
    const char *issue[] = {"openssl", "x509", "-new", "-force_pubkey", key_pem, "-key", signer,
                           "-subj", "/CN=hushcall test P-256 EK", "-days", "1", "-outform",
                           "DER", "-out", der, NULL};
    if (!run_tool(issue))
        return false;
    size_t len = 0;
    unsigned char *cert = read_binary(der_name, &len);
    free(cert);
    snprintf(size, sizeof size, "%zu", len + EK_CERT_PADDING);
    const char *undefine[] = {"tpm2_nvundefine", "-Q", "-T", other_sim.tcti, "-C", "p",
                              EK_CERT_ECC_NV, NULL};
    const char *define[] = {"tpm2_nvdefine", "-Q", "-T", other_sim.tcti, "-C", "p", "-s", size,
                            "-a", "ppwrite|ppread|ownerread|authread|no_da|platformcreate",
                            EK_CERT_ECC_NV, NULL};
    const char *write[] = {"tpm2_nvwrite", "-Q", "-T", other_sim.tcti, "-C", "p", "-i", der,
                           EK_CERT_ECC_NV, NULL};
    run_program(undefine); /* there may be none yet */
    return cert != NULL && run_tool(define) && run_tool(write);
}

/* Activation with other_sim's certificate as it stands: `expect` (and the
 * secret when HUSH_OK). */
static void activate_on_other(hush_status expect)
{
    hush_tpm *tpm = open_tpm_on(&other_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    if (tpm == NULL)
        return;
    unsigned char name[34], secret[32] = {0x33};
    hush_credential c;
    make_credential(tpm, name, aik_name(tpm, name), secret, sizeof secret, &c);
    if (expect == HUSH_OK) {
        check_activates(tpm, c.id_object, c.id_object_len, c.encrypted_secret,
                        c.encrypted_secret_len, secret, sizeof secret);
    } else {
        hush_secbuf *got = NULL;
        hush_error err;
        CHECK_STATUS(hush_tpm_activate_credential(tpm, c.id_object, c.id_object_len,
                                                  c.encrypted_secret, c.encrypted_secret_len,
                                                  &got, &err),
                     expect, &err);
        CHECK(got == NULL);
    }
    hush_tpm_close(tpm);
}

/* Without its RSA certificate a TPM's P-256 one (NV 0x01c0000a) is used,
 * trimmed to its DER length in a larger index; the L-2 EK that
 * tpm2_createek makes activates a credential made to it, while a
 * certificate naming another key is HUSH_E_KEY. Runs last: it changes
 * other_sim. */
static void test_activate_p256_ek(void)
{
    char ek_pem[128], ek_ctx[128], other_key[128], other_pem[128];
    files_path("ek-ecc.pem", ek_pem, sizeof ek_pem);
    files_path("ek-ecc.ctx", ek_ctx, sizeof ek_ctx);
    files_path("not-the-ek.key", other_key, sizeof other_key);
    files_path("not-the-ek.pem", other_pem, sizeof other_pem);
    const char *createek[] = {"tpm2_createek", "-T", other_sim.tcti, "-G", "ecc", "-c", ek_ctx,
                              "-u", ek_pem, "-f", "pem", NULL};
    const char *flush[] = {"tpm2_flushcontext", "-T", other_sim.tcti, "-t", NULL};
    const char *undefine[] = {"tpm2_nvundefine", "-Q", "-T", other_sim.tcti, "-C", "p",
                              EK_CERT_RSA_NV, NULL};
    const char *genpkey[] = {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                             "ec_paramgen_curve:P-256", "-out", other_key, NULL};
    const char *pubout[] = {"openssl", "pkey", "-in", other_key, "-pubout", "-out", other_pem,
                            NULL};
    CHECK(run_tool(createek) && run_tool(flush) && run_tool(undefine) && run_tool(genpkey) &&
          run_tool(pubout));

    CHECK(install_p256_certificate(other_pem, "not-the-ek.der"));
    activate_on_other(HUSH_E_KEY);

    CHECK(install_p256_certificate(ek_pem, "ek-ecc.der"));
    size_t want_len = 0, len = 0;
    unsigned char *want = read_binary("ek-ecc.der", &want_len), *der = NULL;
    hush_tpm *tpm = open_tpm_on(&other_sim, NULL, HUSH_TPM_KEY_ECC_P256, AIK_HANDLE);
    hush_error err;
    if (tpm != NULL)
        CHECK_OK(hush_tpm_ek_certificate(tpm, &der, &len, &err), &err);
    CHECK(der != NULL && want != NULL && len == want_len && memcmp(der, want, len) == 0);
    hush_tpm_close(tpm);
    free(der);
    free(want);
    activate_on_other(HUSH_OK);
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
        RUN_TEST(test_quote_bound);
        RUN_TEST(test_quote_bound_arguments);
    }
    if (!manufacture()) {
        fprintf(stderr, "FAIL: no manufactured software TPM (swtpm_setup, swtpm_localca and "
                        "tpm2-tools are needed)\n");
        check_tests_failed++;
    } else {
        RUN_TEST(test_ek_certificate);
        RUN_TEST(test_ek_certificate_missing);
        RUN_TEST(test_aik_public);
        RUN_TEST(test_ephemeral_aik_is_not_enrolled);
        RUN_TEST(test_activate_hush_credential);
        RUN_TEST(test_activate_tpm2_makecredential);
        RUN_TEST(test_activate_refusals);
        RUN_TEST(test_activate_junk);
        RUN_TEST(test_activate_p256_ek);
    }
    swtpm_stop(&other_sim);
    swtpm_stop(&ek_sim);
    swtpm_ek_ca_remove(&ek_ca);
    swtpm_stop(&tpm_sim);
    remove_tree(files_dir);
    return check_report();
}
