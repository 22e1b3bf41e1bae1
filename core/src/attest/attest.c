/* attest.c — checking NOMYO's tpm_attestation: a TPM 2.0 quote over PCRs,
 * bound to one request by its qualifying data. The blobs are unmarshalled
 * with tss2-mu (every length checked, no trailing bytes), the signature is
 * verified with OpenSSL's EVP interface, and an optional policy pins PCR
 * values and the keys allowed to sign. A quote that fails is a result with
 * a reason, not an error. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "hushcall/attest.h"
#include "hushcall/base64.h"
#include "attest_internal.h"
#include "internal.h"
#include "codec/codec_internal.h"
#include "mem/mem_internal.h"

/* Each blob is a few hundred bytes from a real TPM; the largest TPMS_ATTEST
 * a quote can carry is well under this. Anything bigger is refused unread. */
#define BLOB_MAX 4096u
#define BLOB_CAP (BLOB_MAX + 4u) /* >= hush_base64_decoded_max of BLOB_MAX's encoding */
#define PCR_COUNT 24u            /* PCRs 0..23, the PC client platform's */
#define DIGEST_MAX 64u
#define QUALIFYING_BYTES 16u
#define PCR_BANKS_MAX_CHARS 512u
#define POLICY_FILE_MAX (1u << 20)
#define MIN_RSA_BITS 2048u

/* ---- PCR banks ---------------------------------------------------------- */

typedef struct bank_info {
    const char *name; /* NOMYO's and tpm2-tools' spelling */
    TPMI_ALG_HASH alg;
    size_t digest_len;
    const char *md; /* OpenSSL's digest name */
} bank_info;

static const bank_info BANKS[] = {
    {"sha1", TPM2_ALG_SHA1, 20, "SHA1"},
    {"sha256", TPM2_ALG_SHA256, 32, "SHA256"},
    {"sha384", TPM2_ALG_SHA384, 48, "SHA384"},
    {"sha512", TPM2_ALG_SHA512, 64, "SHA512"},
};
#define BANK_COUNT (sizeof BANKS / sizeof BANKS[0])

static int bank_by_name(const char *s, size_t len)
{
    for (size_t i = 0; i < BANK_COUNT; i++)
        if (strlen(BANKS[i].name) == len && memcmp(BANKS[i].name, s, len) == 0)
            return (int)i;
    return -1;
}

static int bank_by_alg(TPMI_ALG_HASH alg)
{
    for (size_t i = 0; i < BANK_COUNT; i++)
        if (BANKS[i].alg == alg)
            return (int)i;
    return -1;
}

/* A PCR selection in order: the digest covers banks in this order. */
typedef struct pcr_selection {
    size_t count;
    int bank[BANK_COUNT];
    uint32_t mask[BANK_COUNT]; /* bit i: PCR i */
} pcr_selection;

/* One PCR index, "0".."23" in decimal without leading zeros; -1 otherwise. */
static int read_index(hush_reader *r)
{
    int c = hush_reader_next(r);
    if (c < '0' || c > '9')
        return -1;
    int v = c - '0';
    c = hush_reader_peek(r);
    if (c >= '0' && c <= '9') {
        if (v == 0)
            return -1;
        hush_reader_next(r);
        v = v * 10 + (c - '0');
    }
    return v < (int)PCR_COUNT ? v : -1;
}

/* A whole string that is one PCR index (a pcr_values or policy key). */
static int parse_index(const char *s, size_t len)
{
    hush_reader r;
    hush_reader_init(&r, s, len);
    int v = read_index(&r);
    return hush_reader_done(&r) ? v : -1;
}

/* "<bank>:<i>,<j>[+<bank>:...]"; no empty parts, no repeated bank or index. */
static bool parse_pcr_banks(const char *s, size_t len, pcr_selection *sel)
{
    hush_reader r;
    memset(sel, 0, sizeof *sel);
    if (len == 0 || len > PCR_BANKS_MAX_CHARS)
        return false;
    hush_reader_init(&r, s, len);
    do {
        size_t name_len = 0;
        const unsigned char *name;
        int c;
        while ((c = hush_reader_peek_at(&r, name_len)) != -1 && c != ':')
            name_len++;
        if (sel->count == BANK_COUNT || !hush_reader_take(&r, name_len, &name) ||
            hush_reader_next(&r) != ':')
            return false;
        int bank = bank_by_name((const char *)name, name_len);
        if (bank < 0)
            return false;
        for (size_t i = 0; i < sel->count; i++)
            if (sel->bank[i] == bank)
                return false;
        uint32_t mask = 0;
        do {
            int index = read_index(&r);
            if (index < 0 || (mask & (1u << index)) != 0)
                return false;
            mask |= 1u << index;
        } while (hush_reader_peek(&r) == ',' && hush_reader_next(&r) == ',');
        sel->bank[sel->count] = bank;
        sel->mask[sel->count] = mask;
        sel->count++;
        if (hush_reader_done(&r))
            return true;
    } while (hush_reader_next(&r) == '+');
    return false;
}

/* The quote's TPML_PCR_SELECTION in the same form; false for a bank we do
 * not know or a PCR past 23. */
static bool selection_from_tpm(const TPML_PCR_SELECTION *tpml, pcr_selection *sel)
{
    memset(sel, 0, sizeof *sel);
    if (tpml->count > BANK_COUNT)
        return false;
    for (UINT32 i = 0; i < tpml->count; i++) {
        const TPMS_PCR_SELECTION *ps = &tpml->pcrSelections[i];
        int bank = bank_by_alg(ps->hash);
        if (bank < 0 || ps->sizeofSelect > TPM2_PCR_SELECT_MAX)
            return false;
        uint32_t mask = 0;
        for (unsigned b = 0; b < ps->sizeofSelect; b++)
            mask |= (uint32_t)ps->pcrSelect[b] << (8 * b);
        if ((mask >> PCR_COUNT) != 0)
            return false;
        sel->bank[i] = bank;
        sel->mask[i] = mask;
    }
    sel->count = tpml->count;
    return true;
}

static bool selection_equal(const pcr_selection *a, const pcr_selection *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (a->bank[i] != b->bank[i] || a->mask[i] != b->mask[i])
            return false;
    return true;
}

/* ---- hex ------------------------------------------------------------------- */

/* Exactly `n` bytes of hex (2n characters). PCR values are public. */
static bool hex_decode(const char *s, size_t len, unsigned char *out, size_t n)
{
    if (len != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hush__hex_digit((unsigned char)s[2 * i]);
        int lo = hush__hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* ---- the policy ------------------------------------------------------------ */

struct hush_attest_policy {
    bool pcr_set[BANK_COUNT][PCR_COUNT];
    unsigned char pcr[BANK_COUNT][PCR_COUNT][DIGEST_MAX];
    size_t aik_count;
    char (*aik)[HUSH_FINGERPRINT_LEN];
};

HUSH_MUST_USE
static hush_status policy_pcrs(hush_attest_policy *p, const hush_json_value *pcrs, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(hush_json_type_of(pcrs) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "policy: \"pcrs\" must be an object");
    for (size_t i = 0; i < hush_json_length(pcrs); i++) {
        const char *key;
        size_t key_len;
        const hush_json_value *bank_obj;
        hush_json_object_member(pcrs, i, &key, &key_len, &bank_obj);
        int bank = bank_by_name(key, key_len);
        HUSH_ENSURE(bank >= 0, HUSH_E_FORMAT, "policy: \"pcrs\" has an unknown bank");
        HUSH_ENSURE(hush_json_type_of(bank_obj) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                    "policy: \"pcrs\".%s must be an object", BANKS[bank].name);
        for (size_t j = 0; j < hush_json_length(bank_obj); j++) {
            const char *ikey;
            size_t ikey_len, hex_len;
            const hush_json_value *v;
            hush_json_object_member(bank_obj, j, &ikey, &ikey_len, &v);
            int index = parse_index(ikey, ikey_len);
            HUSH_ENSURE(index >= 0, HUSH_E_FORMAT, "policy: \"pcrs\".%s has a bad PCR index",
                        BANKS[bank].name);
            const char *hex = hush_json_string(v, &hex_len);
            HUSH_ENSURE(hex != NULL && hex_decode(hex, hex_len, p->pcr[bank][index],
                                                  BANKS[bank].digest_len),
                        HUSH_E_FORMAT, "policy: \"pcrs\".%s.%d must be %zu bytes of hex",
                        BANKS[bank].name, index, BANKS[bank].digest_len);
            p->pcr_set[bank][index] = true;
        }
    }
cleanup:
    return status;
}

static bool fingerprint_well_formed(const char *s, size_t len)
{
    if (len != HUSH_FINGERPRINT_LEN - 1 || memcmp(s, "sha256:", 7) != 0)
        return false;
    for (size_t i = 7; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

HUSH_MUST_USE
static hush_status policy_aiks(hush_attest_policy *p, const hush_json_value *list, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(hush_json_type_of(list) == HUSH_JSON_ARRAY, HUSH_E_FORMAT,
                "policy: \"aik_fingerprints\" must be an array");
    size_t n = hush_json_length(list);
    if (n > 0) {
        p->aik = calloc(n, sizeof *p->aik);
        HUSH_ENSURE(p->aik != NULL, HUSH_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = hush_json_string(hush_json_array_get(list, i), &len);
        HUSH_ENSURE(s != NULL && fingerprint_well_formed(s, len), HUSH_E_FORMAT,
                    "policy: \"aik_fingerprints\"[%zu] must be \"sha256:\" and 64 lowercase hex", i);
        memcpy(p->aik[i], s, len + 1);
        p->aik_count++;
    }
cleanup:
    return status;
}

hush_status hush_attest_policy_parse(const void *json, size_t len, hush_attest_policy **out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_doc *doc = NULL;
    hush_attest_policy *p = NULL;

    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(out != NULL && (json != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_attest_policy_parse: NULL argument");
    *out = NULL;
    HUSH_TRY(hush_json_parse(json, len, NULL, HUSH_SECMEM_PUBLIC, &doc, err));
    const hush_json_value *root = hush_json_doc_root(doc);
    HUSH_ENSURE(hush_json_type_of(root) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "policy: must be a JSON object");
    p = calloc(1, sizeof *p);
    HUSH_ENSURE(p != NULL, HUSH_E_NOMEM, "out of memory");
    for (size_t i = 0; i < hush_json_length(root); i++) {
        const char *key;
        size_t key_len;
        const hush_json_value *v;
        hush_json_object_member(root, i, &key, &key_len, &v);
        if (key_len == 4 && memcmp(key, "pcrs", 4) == 0)
            HUSH_TRY(policy_pcrs(p, v, err));
        else if (key_len == 16 && memcmp(key, "aik_fingerprints", 16) == 0)
            HUSH_TRY(policy_aiks(p, v, err));
        else
            HUSH_BAIL(HUSH_E_FORMAT,
                      "policy: unknown member (only \"pcrs\" and \"aik_fingerprints\" are known)");
    }
    *out = p;
    p = NULL;
cleanup:
    hush_attest_policy_free(p);
    hush_json_doc_free(doc);
    return status;
}

hush_status hush_attest_policy_load(const char *path, hush_attest_policy **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *data = NULL;
    int fd = -1;

    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(path != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_attest_policy_load: NULL argument");
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    HUSH_ENSURE(fd >= 0, errno == ENOENT ? HUSH_E_NOT_FOUND : HUSH_E_IO,
                "cannot open the attestation policy (%s)", strerror(errno));
    /* Policies are public: ordinary heap. */
    HUSH_TRY(hush__secbuf_read_fd(fd, "the attestation policy", POLICY_FILE_MAX,
                                  HUSH_SECMEM_PUBLIC, &data, err));
    HUSH_TRY(hush_attest_policy_parse(hush_secbuf_data(data), hush_secbuf_len(data), out, err));
cleanup:
    if (fd >= 0)
        close(fd);
    hush_secbuf_free(data);
    return status;
}

bool hush_attest_policy_pins_aik(const hush_attest_policy *policy)
{
    return policy != NULL && policy->aik_count > 0;
}

void hush_attest_policy_free(hush_attest_policy *policy)
{
    if (policy == NULL)
        return;
    free(policy->aik);
    free(policy);
}

/* ---- verification ---------------------------------------------------------- */

/* Everything one verification reads, on the heap (the tss2 structures are
 * several KiB) and freed at the end. */
typedef struct quote_check {
    unsigned char aik_blob[BLOB_CAP], quote_blob[BLOB_CAP], sig_blob[BLOB_CAP];
    size_t aik_len, quote_len, sig_len;
    TPM2B_PUBLIC aik;
    TPM2B_ATTEST quoted;
    TPMS_ATTEST attest;
    TPMT_SIGNATURE sig;
    pcr_selection banks; /* from pcr_banks */
    unsigned char pcr[BANK_COUNT][PCR_COUNT][DIGEST_MAX];
    const bank_info *sig_hash;
    EVP_PKEY *pkey;
} quote_check;

/* Record why the quote is not verified; returns false so checks read
 * `if (!ok) return reject(...)`. */
static bool reject(hush_attest_result *out, const char *fmt, ...) HUSH_PRINTF(2, 3);
static bool reject(hush_attest_result *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
    out->verified = false;
    return false;
}

/* The string member `name`, base64-decoded into `buf`. */
static bool decode_member(const hush_json_value *att, const char *name, unsigned char *buf,
                          size_t *len, hush_attest_result *out)
{
    size_t slen;
    const char *s = hush_json_string(hush_json_object_get(att, name, strlen(name)), &slen);
    if (s == NULL || slen == 0 || hush_base64_decoded_max(slen) > BLOB_CAP ||
        hush_base64_decode(s, slen, buf, BLOB_CAP, len, NULL) != HUSH_OK || *len > BLOB_MAX)
        return reject(out, "malformed %s", name);
    return true;
}

static bool unmarshal_blobs(quote_check *q, hush_attest_result *out)
{
    size_t off = 0;
    /* TPM2B_PUBLIC: its size must cover exactly the rest of the blob. */
    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(q->aik_blob, q->aik_len, &off, &q->aik) != TSS2_RC_SUCCESS ||
        off != q->aik_len || (size_t)q->aik.size + 2 != q->aik_len)
        return reject(out, "malformed aik_pubkey_b64");
    off = 0;
    if (Tss2_MU_TPM2B_ATTEST_Unmarshal(q->quote_blob, q->quote_len, &off, &q->quoted) !=
            TSS2_RC_SUCCESS ||
        off != q->quote_len || (size_t)q->quoted.size + 2 != q->quote_len ||
        q->quoted.size > sizeof q->quoted.attestationData)
        return reject(out, "malformed quote_b64");
    off = 0;
    if (Tss2_MU_TPMS_ATTEST_Unmarshal(q->quoted.attestationData, q->quoted.size, &off,
                                      &q->attest) != TSS2_RC_SUCCESS ||
        off != q->quoted.size)
        return reject(out, "malformed quote_b64");
    /* Only a TPM-generated quote; a restricted key signs nothing else. */
    if (q->attest.magic != TPM2_GENERATED_VALUE || q->attest.type != TPM2_ST_ATTEST_QUOTE)
        return reject(out, "malformed quote_b64 (not a TPM quote)");
    off = 0;
    if (Tss2_MU_TPMT_SIGNATURE_Unmarshal(q->sig_blob, q->sig_len, &off, &q->sig) !=
            TSS2_RC_SUCCESS ||
        off != q->sig_len)
        return reject(out, "malformed signature_b64");
    return true;
}

hush_status hush__aik_fingerprint(const unsigned char *tpmt_public, size_t len,
                                  char out[HUSH_FINGERPRINT_LEN], hush_error *err)
{
    static const char hex[] = "0123456789abcdef";
    hush_status status = HUSH_OK;
    unsigned char digest[32];
    unsigned digest_len = 0;
    HUSH_OSSL(EVP_Digest(tpmt_public, len, digest, &digest_len, hush__sha256(), NULL) == 1 &&
                  digest_len == sizeof digest,
              "SHA-256");
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < sizeof digest; i++) {
        out[7 + 2 * i] = hex[digest[i] >> 4];
        out[8 + 2 * i] = hex[digest[i] & 15];
    }
    out[HUSH_FINGERPRINT_LEN - 1] = '\0';
cleanup:
    return status;
}

/* An EVP_PKEY from key material that arrived over the wire. A key OpenSSL
 * will not build is a malformed AIK, not an error of ours. */
static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY_CTX *check = NULL;
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto cleanup;
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_public_check(check) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
cleanup:
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_pkey(const TPMT_PUBLIC *pub)
{
    const TPMS_RSA_PARMS *rp = &pub->parameters.rsaDetail;
    const TPM2B_PUBLIC_KEY_RSA *n = &pub->unique.rsa;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    /* The modulus must be as long as the key claims, and not weak. */
    if (rp->keyBits < MIN_RSA_BITS || rp->keyBits % 8 != 0 || n->size != rp->keyBits / 8 ||
        n->size > sizeof n->buffer)
        return NULL;
    bn_n = BN_bin2bn(n->buffer, n->size, NULL);
    bn_e = BN_new();
    bld = OSSL_PARAM_BLD_new();
    if (bn_n == NULL || bn_e == NULL || bld == NULL ||
        BN_set_word(bn_e, rp->exponent != 0 ? rp->exponent : 65537u) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1)
        goto cleanup;
    pkey = pkey_from_params("RSA", bld);
cleanup:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pkey;
}

static EVP_PKEY *ecc_pkey(const TPMT_PUBLIC *pub)
{
    const TPMS_ECC_POINT *pt = &pub->unique.ecc;
    const char *group;
    size_t field;
    switch (pub->parameters.eccDetail.curveID) {
    case TPM2_ECC_NIST_P256:
        group = "P-256";
        field = 32;
        break;
    case TPM2_ECC_NIST_P384:
        group = "P-384";
        field = 48;
        break;
    default:
        return NULL;
    }
    if (pt->x.size == 0 || pt->x.size > field || pt->y.size == 0 || pt->y.size > field)
        return NULL;
    /* Uncompressed SEC 1 point; a TPM may drop leading zero bytes. */
    unsigned char point[1 + 2 * 48] = {0x04};
    memcpy(point + 1 + field - pt->x.size, pt->x.buffer, pt->x.size);
    memcpy(point + 1 + 2 * field - pt->y.size, pt->y.buffer, pt->y.size);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld != NULL &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * field) == 1)
        pkey = pkey_from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

static bool load_aik(quote_check *q, hush_attest_result *out)
{
    const TPMT_PUBLIC *pub = &q->aik.publicArea;
    /* Only a restricted signing key vouches that what it signed began
     * with TPM_GENERATED_VALUE, i.e. was made by the TPM. */
    const TPMA_OBJECT need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
    if ((pub->objectAttributes & need) != need ||
        (pub->objectAttributes & TPMA_OBJECT_DECRYPT) != 0)
        return reject(out, "aik is not a restricted signing key");
    if (pub->type == TPM2_ALG_RSA)
        q->pkey = rsa_pkey(pub);
    else if (pub->type == TPM2_ALG_ECC)
        q->pkey = ecc_pkey(pub);
    if (q->pkey == NULL) {
        ERR_clear_error(); /* the wire's fault, not ours: leave no stale errors */
        return reject(out, "malformed aik_pubkey_b64");
    }
    return true;
}

/* (r, s) as a DER ECDSA-Sig-Value, the form EVP verifies. */
static bool ecdsa_der(const TPMS_SIGNATURE_ECC *e, unsigned char **der, int *der_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(e->signatureR.buffer, e->signatureR.size, NULL);
    BIGNUM *s = BN_bin2bn(e->signatureS.buffer, e->signatureS.size, NULL);
    bool ok = false;
    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
        goto cleanup;
    r = s = NULL; /* owned by sig now */
    *der = NULL;
    *der_len = i2d_ECDSA_SIG(sig, der);
    ok = *der_len > 0;
cleanup:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return ok;
}

/* The scheme must fit the key type and name a hash we accept (not SHA-1). */
static bool signature_scheme(quote_check *q, hush_attest_result *out)
{
    TPMI_ALG_HASH hash;
    TPMI_ALG_PUBLIC key_type;
    switch (q->sig.sigAlg) {
    case TPM2_ALG_RSASSA:
        hash = q->sig.signature.rsassa.hash;
        key_type = TPM2_ALG_RSA;
        break;
    case TPM2_ALG_RSAPSS:
        hash = q->sig.signature.rsapss.hash;
        key_type = TPM2_ALG_RSA;
        break;
    case TPM2_ALG_ECDSA:
        hash = q->sig.signature.ecdsa.hash;
        key_type = TPM2_ALG_ECC;
        break;
    default:
        return reject(out, "unsupported signature scheme");
    }
    if (key_type != q->aik.publicArea.type)
        return reject(out, "bad signature (scheme does not fit the aik)");
    int bank = bank_by_alg(hash);
    if (bank < 0 || BANKS[bank].alg == TPM2_ALG_SHA1)
        return reject(out, "unsupported signature hash");
    q->sig_hash = &BANKS[bank];
    return true;
}

HUSH_MUST_USE
static hush_status check_signature(quote_check *q, bool *ok, hush_attest_result *out,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MD_CTX *mctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *der = NULL;
    const unsigned char *sig;
    size_t sig_len;
    int der_len = 0;

    *ok = false;
    if (!signature_scheme(q, out))
        goto cleanup;
    if (q->sig.sigAlg == TPM2_ALG_ECDSA) {
        HUSH_ENSURE(ecdsa_der(&q->sig.signature.ecdsa, &der, &der_len), HUSH_E_NOMEM,
                    "out of memory encoding an ECDSA signature");
        sig = der;
        sig_len = (size_t)der_len;
    } else {
        /* rsassa and rsapss share TPMS_SIGNATURE_RSA */
        sig = q->sig.signature.rsassa.sig.buffer;
        sig_len = q->sig.signature.rsassa.sig.size;
    }
    mctx = EVP_MD_CTX_new();
    HUSH_ENSURE(mctx != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_OSSL(EVP_DigestVerifyInit_ex(mctx, &pctx, q->sig_hash->md, NULL, NULL, q->pkey, NULL),
              "starting signature verification");
    if (q->sig.sigAlg == TPM2_ALG_RSAPSS) {
        /* TPMs differ on the salt (digest length or the maximum); PSS
         * records it, so take whatever the signature says. */
        HUSH_OSSL(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), "RSA-PSS padding");
        HUSH_OSSL(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO), "RSA-PSS salt");
    }
    if (EVP_DigestVerify(mctx, sig, sig_len, q->quoted.attestationData, q->quoted.size) == 1)
        *ok = true;
    else {
        ERR_clear_error();
        reject(out, "bad signature");
    }
cleanup:
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    return status;
}

static bool check_qualifying_data(const quote_check *q, const unsigned char *qualifying,
                                  size_t qualifying_len, hush_attest_result *out)
{
    if (q->attest.extraData.size != qualifying_len ||
        memcmp(q->attest.extraData.buffer, qualifying, qualifying_len) != 0)
        return reject(out, "wrong qualifying data");
    return true;
}

/* SHA-256(label || 0x00 || fixed || rest): the v2 qualifying data. */
HUSH_MUST_USE
static hush_status labelled_digest(const char *label, const void *fixed, size_t fixed_len,
                                   const void *rest, size_t rest_len,
                                   unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    static const unsigned char zero = 0;
    unsigned digest_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    HUSH_ENSURE(ctx != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_OSSL(EVP_DigestInit_ex(ctx, hush__sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(ctx, label, strlen(label)) == 1 &&
                  EVP_DigestUpdate(ctx, &zero, 1) == 1 &&
                  EVP_DigestUpdate(ctx, fixed, fixed_len) == 1 &&
                  EVP_DigestUpdate(ctx, rest, rest_len) == 1 &&
                  EVP_DigestFinal_ex(ctx, out, &digest_len) == 1 &&
                  digest_len == HUSH_ATTEST_QUALIFYING_BYTES,
              "SHA-256 of the qualifying data");
cleanup:
    EVP_MD_CTX_free(ctx);
    return status;
}

hush_status hush_attest_key_config_qualifying(const unsigned char nonce[HUSH_ATTEST_NONCE_BYTES],
                                              const void *configs, size_t configs_len,
                                              unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES],
                                              hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(nonce != NULL && configs != NULL && configs_len > 0 && out != NULL,
                HUSH_E_ARGUMENT, "hush_attest_key_config_qualifying: NULL or empty argument");
    HUSH_TRY(labelled_digest(HUSH_ATTEST_KEY_CONFIG_LABEL, nonce, HUSH_ATTEST_NONCE_BYTES,
                             configs, configs_len, out, err));
cleanup:
    return status;
}

hush_status hush_attest_answer_qualifying(const void *enc, size_t enc_len,
                                          const unsigned char response_nonce[32],
                                          unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES],
                                          hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(enc != NULL && enc_len > 0 && response_nonce != NULL && out != NULL,
                HUSH_E_ARGUMENT, "hush_attest_answer_qualifying: NULL or empty argument");
    HUSH_TRY(labelled_digest(HUSH_ATTEST_ANSWER_LABEL, response_nonce, 32, enc, enc_len, out,
                             err));
cleanup:
    return status;
}

/* pcr_values: exactly the selected banks, each with exactly the selected
 * indices, each the bank's digest length in hex. */
static bool read_pcr_values(quote_check *q, const hush_json_value *values, hush_attest_result *out)
{
    if (hush_json_type_of(values) != HUSH_JSON_OBJECT || hush_json_length(values) != q->banks.count)
        return reject(out, "malformed pcr_values");
    for (size_t b = 0; b < q->banks.count; b++) {
        const bank_info *bank = &BANKS[q->banks.bank[b]];
        const hush_json_value *obj = hush_json_object_get(values, bank->name, strlen(bank->name));
        uint32_t want = q->banks.mask[b], seen = 0;
        if (hush_json_type_of(obj) != HUSH_JSON_OBJECT)
            return reject(out, "malformed pcr_values");
        for (size_t i = 0; i < hush_json_length(obj); i++) {
            const char *key, *hex;
            size_t key_len, hex_len;
            const hush_json_value *v;
            hush_json_object_member(obj, i, &key, &key_len, &v);
            int index = parse_index(key, key_len);
            hex = hush_json_string(v, &hex_len);
            if (index < 0 || (want & (1u << index)) == 0 || hex == NULL ||
                !hex_decode(hex, hex_len, q->pcr[q->banks.bank[b]][index], bank->digest_len))
                return reject(out, "malformed pcr_values");
            seen |= 1u << index;
        }
        if (seen != want)
            return reject(out, "malformed pcr_values");
    }
    return true;
}

/* TPM2_Quote's pcrDigest: the hash of the signing scheme over the selected
 * PCRs, banks in selection order, indices ascending. */
HUSH_MUST_USE
static hush_status check_pcr_digest(const quote_check *q, bool *ok, hush_attest_result *out,
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    EVP_MD *md = NULL;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();

    *ok = false;
    HUSH_ENSURE(mctx != NULL, HUSH_E_NOMEM, "out of memory");
    md = EVP_MD_fetch(NULL, q->sig_hash->md, NULL);
    HUSH_OSSL(md != NULL, "fetching the PCR digest's hash");
    HUSH_OSSL(EVP_DigestInit_ex2(mctx, md, NULL), "PCR digest");
    for (size_t b = 0; b < q->banks.count; b++) {
        int bank = q->banks.bank[b];
        for (unsigned i = 0; i < PCR_COUNT; i++)
            if (q->banks.mask[b] & (1u << i))
                HUSH_OSSL(EVP_DigestUpdate(mctx, q->pcr[bank][i], BANKS[bank].digest_len),
                          "PCR digest");
    }
    HUSH_OSSL(EVP_DigestFinal_ex(mctx, digest, &digest_len), "PCR digest");
    const TPM2B_DIGEST *quoted = &q->attest.attested.quote.pcrDigest;
    if (quoted->size == digest_len && memcmp(quoted->buffer, digest, digest_len) == 0)
        *ok = true;
    else
        reject(out, "pcr digest mismatch");
cleanup:
    EVP_MD_free(md);
    EVP_MD_CTX_free(mctx);
    return status;
}

/* Every PCR the policy names must be quoted with its value: a PCR the
 * quote leaves out cannot be shown to match, so it fails too. */
static bool check_policy_pcrs(const quote_check *q, const hush_attest_policy *policy,
                              hush_attest_result *out)
{
    if (policy == NULL)
        return true;
    for (size_t bank = 0; bank < BANK_COUNT; bank++) {
        uint32_t quoted = 0;
        for (size_t b = 0; b < q->banks.count; b++)
            if (q->banks.bank[b] == (int)bank)
                quoted = q->banks.mask[b];
        for (unsigned i = 0; i < PCR_COUNT; i++) {
            if (!policy->pcr_set[bank][i])
                continue;
            if ((quoted & (1u << i)) == 0 ||
                memcmp(policy->pcr[bank][i], q->pcr[bank][i], BANKS[bank].digest_len) != 0)
                return reject(out, "pcr value not in policy: %s:%u", BANKS[bank].name, i);
        }
    }
    return true;
}

/* A key that arrives with the quote vouches only for itself: the quote
 * proves something about a TPM only when the policy names its AIK. */
static bool check_aik_pinned(const hush_attest_policy *policy, const char *fingerprint,
                             hush_attest_result *out)
{
    if (!hush_attest_policy_pins_aik(policy))
        return reject(out, HUSH_ATTEST_UNPINNED_AIK);
    for (size_t i = 0; i < policy->aik_count; i++)
        if (strcmp(policy->aik[i], fingerprint) == 0)
            return true;
    return reject(out, "aik not in policy");
}

HUSH_MUST_USE
static hush_status verify_quote(quote_check *q, const hush_json_value *att,
                                const unsigned char *qualifying, size_t qualifying_len,
                                const hush_attest_policy *policy, hush_attest_result *out,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    bool ok;
    size_t banks_len;
    const char *banks = hush_json_string(hush_json_object_get(att, "pcr_banks", 9), &banks_len);
    const hush_json_value *values = hush_json_object_get(att, "pcr_values", 10);

    if (banks == NULL || !parse_pcr_banks(banks, banks_len, &q->banks)) {
        reject(out, "malformed pcr_banks");
        goto cleanup;
    }
    if (hush_json_type_of(values) != HUSH_JSON_OBJECT) {
        reject(out, "malformed pcr_values");
        goto cleanup;
    }
    if (!decode_member(att, "aik_pubkey_b64", q->aik_blob, &q->aik_len, out) ||
        !decode_member(att, "quote_b64", q->quote_blob, &q->quote_len, out) ||
        !decode_member(att, "signature_b64", q->sig_blob, &q->sig_len, out) ||
        !unmarshal_blobs(q, out))
        goto cleanup;
    HUSH_TRY(hush__aik_fingerprint(q->aik_blob + 2, q->aik_len - 2, out->aik_fingerprint, err));
    if (!load_aik(q, out))
        goto cleanup;
    HUSH_TRY(check_signature(q, &ok, out, err));
    if (!ok || !check_qualifying_data(q, qualifying, qualifying_len, out))
        goto cleanup;
    pcr_selection quoted;
    if (!selection_from_tpm(&q->attest.attested.quote.pcrSelect, &quoted) ||
        !selection_equal(&quoted, &q->banks)) {
        reject(out, "pcr selection mismatch");
        goto cleanup;
    }
    if (!read_pcr_values(q, values, out))
        goto cleanup;
    HUSH_TRY(check_pcr_digest(q, &ok, out, err));
    if (!ok || !check_policy_pcrs(q, policy, out) ||
        !check_aik_pinned(policy, out->aik_fingerprint, out))
        goto cleanup;
    out->verified = true;
    snprintf(out->reason, sizeof out->reason, "ok");
cleanup:
    return status;
}

/* The checks common to both protocols, for a quote whose qualifying data
 * must be `qualifying`. */
HUSH_MUST_USE
static hush_status verify_attestation(const hush_json_value *tpm_attestation,
                                      const unsigned char *qualifying, size_t qualifying_len,
                                      const hush_attest_policy *policy, hush_attest_result *out,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    quote_check *q = NULL;

    memset(out, 0, sizeof *out);
    if (tpm_attestation == NULL) {
        reject(out, "no attestation");
        goto cleanup;
    }
    if (hush_json_type_of(tpm_attestation) != HUSH_JSON_OBJECT) {
        reject(out, "malformed tpm_attestation");
        goto cleanup;
    }
    const hush_json_value *avail = hush_json_object_get(tpm_attestation, "is_available", 12);
    if (!hush_json_bool(avail)) {
        reject(out, hush_json_type_of(avail) == HUSH_JSON_BOOL || avail == NULL
                        ? "tpm not available"
                        : "malformed is_available");
        goto cleanup;
    }
    /* Our gateway's word for an answer it chose not to quote. */
    const hush_json_value *quoted = hush_json_object_get(tpm_attestation, "quoted", 6);
    bool quoted_is_bool = hush_json_type_of(quoted) == HUSH_JSON_BOOL;
    if (quoted != NULL && (!quoted_is_bool || !hush_json_bool(quoted))) {
        reject(out, quoted_is_bool ? "not quoted" : "malformed quoted");
        goto cleanup;
    }
    q = calloc(1, sizeof *q);
    HUSH_ENSURE(q != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_TRY(verify_quote(q, tpm_attestation, qualifying, qualifying_len, policy, out, err));
cleanup:
    if (status != HUSH_OK && q != NULL) {
        /* verify_quote failed: an error, not a verdict, so leave no
         * half-filled result */
        out->verified = false;
        snprintf(out->reason, sizeof out->reason, "error");
    }
    if (q != NULL) {
        EVP_PKEY_free(q->pkey);
        free(q);
    }
    return status;
}

hush_status hush_attest_verify(const hush_json_value *tpm_attestation, const char *payload_id,
                               const hush_attest_policy *policy, hush_attest_result *out,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char digest[32];
    unsigned digest_len = 0;

    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(payload_id != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_attest_verify: NULL argument");
    /* NOMYO's binding: the first 16 bytes of SHA-256(payload_id) */
    HUSH_OSSL(EVP_Digest(payload_id, strlen(payload_id), digest, &digest_len, hush__sha256(),
                         NULL) == 1 &&
                  digest_len == sizeof digest,
              "EVP_Digest(SHA-256)");
    HUSH_TRY(verify_attestation(tpm_attestation, digest, QUALIFYING_BYTES, policy, out, err));
cleanup:
    return status;
}

hush_status hush_attest_verify_bound(const hush_json_value *tpm_attestation,
                                     const unsigned char qualifying[HUSH_ATTEST_QUALIFYING_BYTES],
                                     const hush_attest_policy *policy, hush_attest_result *out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(qualifying != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_attest_verify_bound: NULL argument");
    HUSH_TRY(verify_attestation(tpm_attestation, qualifying, HUSH_ATTEST_QUALIFYING_BYTES, policy,
                                out, err));
cleanup:
    return status;
}
