/* tpm.c — TPM 2.0 quotes bound to one request, through tss2-esys.
 * A hush_tpm owns one TCTI and one ESYS context, used under its mutex; each
 * quote reads the selected PCRs, quotes them with SHA-256(payload_id)[:16]
 * as qualifying data, and checks the quote covers exactly the values read. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "hushcall/base64.h"
#include "hushcall/tpm.h"
#include "internal.h"

#define PCR_COUNT 24
#define PCR_SELECT_BYTES 3 /* PCR_COUNT bits */
#define QUALIFYING_BYTES 16
#define BOUND_QUALIFYING_MAX 32 /* a SHA-256 digest: hush_attest_*_qualifying */
#define PCR_BANKS_MAX 512 /* four banks of all 24 PCRs take 273 chars; as attest.c allows */
#define PERSISTENT_FIRST 0x81000000u
#define PERSISTENT_LAST 0x81FFFFFFu
#define EK_CERT_RSA_INDEX 0x01C00002u /* TCG EK Credential Profile 2.0 §2.2.1.4 */
#define EK_CERT_ECC_INDEX 0x01C0000Au
/* Random bytes in the template's unique field: a primary key derives from
 * the hierarchy seed and its template, so without them every "fresh" AIK
 * would be the same key. */
#define AIK_UNIQUE_BYTES 32

typedef struct pcr_bank {
    const char *name;
    TPMI_ALG_HASH alg;
    size_t size;
} pcr_bank;

static const pcr_bank PCR_BANKS[] = {
    {"sha1", TPM2_ALG_SHA1, TPM2_SHA1_DIGEST_SIZE},
    {"sha256", TPM2_ALG_SHA256, TPM2_SHA256_DIGEST_SIZE},
    {"sha384", TPM2_ALG_SHA384, TPM2_SHA384_DIGEST_SIZE},
    {"sha512", TPM2_ALG_SHA512, TPM2_SHA512_DIGEST_SIZE},
};
#define PCR_BANK_COUNT (sizeof PCR_BANKS / sizeof PCR_BANKS[0])

struct hush_tpm {
    pthread_mutex_t lock; /* one ESYS command at a time */
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    TPML_PCR_SELECTION selection;
    char pcr_banks[PCR_BANKS_MAX];
    hush_tpm_key_alg key_alg;
    ESYS_TR persistent; /* ESYS_TR_NONE for ephemeral AIKs */
    TPM2B_PUBLIC persistent_public;
};

/* The PCR values read for one quote, by bank (PCR_BANKS order) and index. */
typedef struct pcr_values {
    unsigned char value[PCR_BANK_COUNT][PCR_COUNT][TPM2_SHA512_DIGEST_SIZE];
    bool read[PCR_BANK_COUNT][PCR_COUNT];
} pcr_values;

/* Everything a quote produces, built before anything is written. */
typedef struct quote_result {
    pcr_values pcrs;
    unsigned char pub[sizeof(TPM2B_PUBLIC)];
    size_t pub_len;
    unsigned char attest[sizeof(TPM2B_ATTEST)];
    size_t attest_len;
    unsigned char sig[sizeof(TPMT_SIGNATURE)];
    size_t sig_len;
} quote_result;

HUSH_MUST_USE
static hush_status fail_tss(hush_error *err, hush_status code, const char *what, TSS2_RC rc)
{
    return hush__fail(err, code, "%s failed: %s", what, Tss2_RC_Decode(rc));
}

#define HUSH_TSS(call, what)                                         \
    do {                                                             \
        TSS2_RC hush__rc = (call);                                   \
        if (hush__rc != TSS2_RC_SUCCESS) {                           \
            status = fail_tss(err, HUSH_E_CRYPTO, (what), hush__rc); \
            goto cleanup;                                            \
        }                                                            \
    } while (0)

static const pcr_bank *bank_by_alg(TPMI_ALG_HASH alg, size_t *index)
{
    for (size_t i = 0; i < PCR_BANK_COUNT; i++) {
        if (PCR_BANKS[i].alg == alg) {
            if (index != NULL)
                *index = i;
            return &PCR_BANKS[i];
        }
    }
    return NULL;
}

static bool pcr_selected(const TPMS_PCR_SELECTION *s, unsigned pcr)
{
    return pcr / 8 < s->sizeofSelect && (s->pcrSelect[pcr / 8] & (1u << (pcr % 8))) != 0;
}

/* ---- the PCR selection string ------------------------------------------ */

HUSH_MUST_USE
static hush_status parse_bank_name(const char *s, size_t len, TPMS_PCR_SELECTION *out,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    for (size_t i = 0; i < PCR_BANK_COUNT; i++) {
        if (strlen(PCR_BANKS[i].name) == len && memcmp(PCR_BANKS[i].name, s, len) == 0) {
            out->hash = PCR_BANKS[i].alg;
            out->sizeofSelect = PCR_SELECT_BYTES;
            goto cleanup;
        }
    }
    HUSH_BAIL(HUSH_E_ARGUMENT,
              "PCR selection: unknown bank \"%.*s\" (sha1, sha256, sha384, sha512)",
              (int)(len > 16 ? 16 : len), s);
cleanup:
    return status;
}

/* "<i>,<j>,..." up to `end`: decimal indices 0..23, each at most once. */
HUSH_MUST_USE
static hush_status parse_indices(const char *s, const char *end, TPMS_PCR_SELECTION *out,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(s < end, HUSH_E_ARGUMENT, "PCR selection: a bank without indices");
    for (;;) {
        unsigned v = 0;
        size_t digits = 0;
        for (; s < end && *s >= '0' && *s <= '9' && digits < 3; s++, digits++)
            v = v * 10 + (unsigned)(*s - '0');
        HUSH_ENSURE(digits > 0 && (s == end || *s == ','), HUSH_E_ARGUMENT,
                    "PCR selection: an index is not a decimal number");
        HUSH_ENSURE(v < PCR_COUNT && (digits == 1 || v >= 10), HUSH_E_ARGUMENT,
                    "PCR selection: index %u is not in 0..23 (written without leading zeros)",
                    v);
        HUSH_ENSURE(!pcr_selected(out, v), HUSH_E_ARGUMENT,
                    "PCR selection: index %u appears twice", v);
        out->pcrSelect[v / 8] |= (unsigned char)(1u << (v % 8));
        if (s == end)
            break;
        s++; /* the comma, which must be followed by another index */
    }
cleanup:
    return status;
}

/* Appends "<bank>:<i>,<j>" in ascending order (the canonical form). */
HUSH_MUST_USE
static hush_status format_bank(const TPMS_PCR_SELECTION *sel, char *out, size_t cap,
                               size_t *len, hush_error *err)
{
    hush_status status = HUSH_OK;
    const char *sep = *len > 0 ? "+" : "";
    int n = snprintf(out + *len, cap - *len, "%s%s:", sep, bank_by_alg(sel->hash, NULL)->name);
    sep = "";
    for (unsigned i = 0; n >= 0 && (size_t)n < cap - *len && i < PCR_COUNT; i++) {
        if (!pcr_selected(sel, i))
            continue;
        int m = snprintf(out + *len + n, cap - *len - (size_t)n, "%s%u", sep, i);
        n = m < 0 ? m : n + m;
        sep = ",";
    }
    HUSH_ENSURE(n >= 0 && (size_t)n < cap - *len, HUSH_E_INTERNAL,
                "PCR selection does not fit its buffer");
    *len += (size_t)n;
cleanup:
    return status;
}

/* Parses "<bank>:<i>,...[+<bank>:...]" strictly into `out` and writes its
 * canonical form (indices ascending) to `canon`. */
HUSH_MUST_USE
static hush_status parse_pcr_selection(const char *text, TPML_PCR_SELECTION *out, char *canon,
                                       size_t cap, hush_error *err)
{
    hush_status status = HUSH_OK;
    memset(out, 0, sizeof *out);
    size_t canon_len = 0;
    const char *s = text;
    HUSH_ENSURE(*s != '\0', HUSH_E_ARGUMENT, "PCR selection is empty");
    for (;;) {
        const char *end = strchr(s, '+');
        if (end == NULL)
            end = s + strlen(s);
        const char *colon = memchr(s, ':', (size_t)(end - s));
        HUSH_ENSURE(colon != NULL, HUSH_E_ARGUMENT,
                    "PCR selection: expected \"<bank>:<indices>\" between '+'");
        HUSH_ENSURE(out->count < PCR_BANK_COUNT, HUSH_E_ARGUMENT,
                    "PCR selection: more banks than there are");
        TPMS_PCR_SELECTION *sel = &out->pcrSelections[out->count];
        HUSH_TRY(parse_bank_name(s, (size_t)(colon - s), sel, err));
        for (uint32_t i = 0; i < out->count; i++) {
            HUSH_ENSURE(out->pcrSelections[i].hash != sel->hash, HUSH_E_ARGUMENT,
                        "PCR selection: bank %s appears twice", bank_by_alg(sel->hash, NULL)->name);
        }
        HUSH_TRY(parse_indices(colon + 1, end, sel, err));
        out->count++;
        HUSH_TRY(format_bank(sel, canon, cap, &canon_len, err));
        if (*end == '\0')
            break;
        s = end + 1;
    }
cleanup:
    return status;
}

/* ---- reading PCRs ------------------------------------------------------- */

/* Records the values one PCR_Read returned and clears them from `left`. */
HUSH_MUST_USE
static hush_status take_pcr_values(const TPML_PCR_SELECTION *got, const TPML_DIGEST *values,
                                   TPML_PCR_SELECTION *left, pcr_values *out, size_t *taken,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    uint32_t k = 0;
    for (uint32_t i = 0; i < got->count; i++) {
        const TPMS_PCR_SELECTION *g = &got->pcrSelections[i];
        size_t b = 0;
        const pcr_bank *bank = bank_by_alg(g->hash, &b);
        TPMS_PCR_SELECTION *l = NULL;
        for (uint32_t j = 0; j < left->count; j++) {
            if (left->pcrSelections[j].hash == g->hash)
                l = &left->pcrSelections[j];
        }
        for (unsigned pcr = 0; pcr < PCR_COUNT; pcr++) {
            if (!pcr_selected(g, pcr))
                continue;
            HUSH_ENSURE(bank != NULL && l != NULL && pcr_selected(l, pcr), HUSH_E_CRYPTO,
                        "TPM2_PCR_Read returned a PCR that was not asked for");
            HUSH_ENSURE(k < values->count && values->digests[k].size == bank->size,
                        HUSH_E_CRYPTO, "TPM2_PCR_Read returned malformed PCR values");
            memcpy(out->value[b][pcr], values->digests[k].buffer, bank->size);
            out->read[b][pcr] = true;
            l->pcrSelect[pcr / 8] &= (unsigned char)~(1u << (pcr % 8));
            k++;
        }
    }
    HUSH_ENSURE(k == values->count, HUSH_E_CRYPTO,
                "TPM2_PCR_Read returned more values than PCRs");
    *taken = k;
cleanup:
    return status;
}

static bool selection_empty(const TPML_PCR_SELECTION *sel)
{
    for (uint32_t i = 0; i < sel->count; i++) {
        for (unsigned j = 0; j < sel->pcrSelections[i].sizeofSelect; j++) {
            if (sel->pcrSelections[i].pcrSelect[j] != 0)
                return false;
        }
    }
    return true;
}

/* Reads every selected PCR. TPM2_PCR_Read answers at most 8 digests per
 * call, so ask again for what is left until nothing is. */
HUSH_MUST_USE
static hush_status read_pcrs(hush_tpm *tpm, pcr_values *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPML_PCR_SELECTION left = tpm->selection;
    TPML_PCR_SELECTION *got = NULL;
    TPML_DIGEST *values = NULL;
    memset(out, 0, sizeof *out);
    while (!selection_empty(&left)) {
        UINT32 counter;
        HUSH_TSS(Esys_PCR_Read(tpm->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &left,
                               &counter, &got, &values),
                 "TPM2_PCR_Read");
        size_t taken = 0;
        HUSH_TRY(take_pcr_values(got, values, &left, out, &taken, err));
        /* Nothing read: the TPM has not allocated a bank that is asked for. */
        HUSH_ENSURE(taken > 0, HUSH_E_ARGUMENT,
                    "PCR selection: the TPM has no PCR bank for part of \"%s\"",
                    tpm->pcr_banks);
        Esys_Free(got);
        Esys_Free(values);
        got = NULL;
        values = NULL;
    }
cleanup:
    Esys_Free(got);
    Esys_Free(values);
    return status;
}

/* The digest a quote over `pcrs` must carry: the hash (`alg`) of the
 * selected values concatenated in selection order. */
HUSH_MUST_USE
static hush_status pcr_digest(const hush_tpm *tpm, const pcr_values *pcrs, TPMI_ALG_HASH alg,
                              unsigned char *out, unsigned *out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MD_CTX *ctx = NULL;
    const pcr_bank *hash = bank_by_alg(alg, NULL);
    HUSH_ENSURE(hash != NULL, HUSH_E_UNSUPPORTED, "the AIK's signing hash is not SHA-1/2");
    const EVP_MD *md = alg == TPM2_ALG_SHA256 ? hush__sha256() : EVP_get_digestbyname(hash->name);
    HUSH_OSSL(md != NULL, "EVP_get_digestbyname");
    HUSH_OSSL((ctx = EVP_MD_CTX_new()) != NULL, "EVP_MD_CTX_new");
    HUSH_OSSL(EVP_DigestInit_ex(ctx, md, NULL), "EVP_DigestInit_ex");
    for (uint32_t i = 0; i < tpm->selection.count; i++) {
        const TPMS_PCR_SELECTION *sel = &tpm->selection.pcrSelections[i];
        size_t b = 0;
        const pcr_bank *bank = bank_by_alg(sel->hash, &b);
        for (unsigned pcr = 0; pcr < PCR_COUNT; pcr++) {
            if (pcr_selected(sel, pcr))
                HUSH_OSSL(EVP_DigestUpdate(ctx, pcrs->value[b][pcr], bank->size),
                          "EVP_DigestUpdate");
        }
    }
    HUSH_OSSL(EVP_DigestFinal_ex(ctx, out, out_len), "EVP_DigestFinal_ex");
cleanup:
    EVP_MD_CTX_free(ctx);
    return status;
}

/* ---- keys ---------------------------------------------------------------- */

/* The scheme to quote with: the key's own, or for a key without one
 * (TPM2_ALG_NULL) ECDSA / RSASSA with SHA-256. */
HUSH_MUST_USE
static hush_status signing_scheme(const TPMT_PUBLIC *pub, TPMT_SIG_SCHEME *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    memset(out, 0, sizeof *out);
    TPMI_ALG_SIG_SCHEME key_scheme;
    TPMI_ALG_HASH key_hash;
    if (pub->type == TPM2_ALG_ECC) {
        key_scheme = pub->parameters.eccDetail.scheme.scheme;
        key_hash = pub->parameters.eccDetail.scheme.details.anySig.hashAlg;
        out->scheme = TPM2_ALG_ECDSA;
    } else if (pub->type == TPM2_ALG_RSA) {
        key_scheme = pub->parameters.rsaDetail.scheme.scheme;
        key_hash = pub->parameters.rsaDetail.scheme.details.anySig.hashAlg;
        out->scheme = TPM2_ALG_RSASSA;
    } else {
        HUSH_BAIL(HUSH_E_ARGUMENT, "the AIK is neither an RSA nor an ECC key");
    }
    /* Only a restricted key vouches that what it signed came from the TPM
     * (an unrestricted one signs anything TPM2_Sign is given), and clients
     * refuse quotes from any other. */
    HUSH_ENSURE((pub->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) != 0 &&
                    (pub->objectAttributes & TPMA_OBJECT_RESTRICTED) != 0 &&
                    (pub->objectAttributes & TPMA_OBJECT_DECRYPT) == 0,
                HUSH_E_ARGUMENT, "the AIK is not a restricted signing key");
    out->details.any.hashAlg = TPM2_ALG_SHA256;
    if (key_scheme == TPM2_ALG_NULL)
        goto cleanup;
    HUSH_ENSURE(key_scheme == TPM2_ALG_ECDSA || key_scheme == TPM2_ALG_RSASSA ||
                    key_scheme == TPM2_ALG_RSAPSS,
                HUSH_E_UNSUPPORTED,
                "the AIK's signing scheme 0x%04x is not ECDSA, RSASSA or RSAPSS",
                (unsigned)key_scheme);
    out->scheme = key_scheme;
    out->details.any.hashAlg = key_hash;
cleanup:
    return status;
}

static void aik_template(hush_tpm_key_alg alg, TPM2B_PUBLIC *t)
{
    memset(t, 0, sizeof *t);
    t->publicArea.nameAlg = TPM2_ALG_SHA256;
    t->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                     TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                     TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED |
                                     TPMA_OBJECT_SIGN_ENCRYPT;
    if (alg == HUSH_TPM_KEY_ECC_P256) {
        TPMS_ECC_PARMS *p = &t->publicArea.parameters.eccDetail;
        t->publicArea.type = TPM2_ALG_ECC;
        p->symmetric.algorithm = TPM2_ALG_NULL;
        p->scheme.scheme = TPM2_ALG_ECDSA;
        p->scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
        p->curveID = TPM2_ECC_NIST_P256;
        p->kdf.scheme = TPM2_ALG_NULL;
    } else {
        TPMS_RSA_PARMS *p = &t->publicArea.parameters.rsaDetail;
        t->publicArea.type = TPM2_ALG_RSA;
        p->symmetric.algorithm = TPM2_ALG_NULL;
        p->scheme.scheme = TPM2_ALG_RSASSA;
        p->scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
        p->keyBits = 2048;
        p->exponent = 0; /* the default, 65537 */
    }
}

/* A primary key of `tmpl` in the endorsement hierarchy (empty auth). */
HUSH_MUST_USE
static hush_status create_endorsement_primary(hush_tpm *tpm, const TPM2B_PUBLIC *tmpl,
                                              ESYS_TR *key, TPM2B_PUBLIC **pub, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_SENSITIVE_CREATE sensitive;
    memset(&sensitive, 0, sizeof sensitive);
    TPM2B_DATA outside_info = {.size = 0};
    TPML_PCR_SELECTION creation_pcrs = {.count = 0};
    HUSH_TSS(Esys_CreatePrimary(tpm->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &sensitive, tmpl, &outside_info, &creation_pcrs,
                                key, pub, NULL, NULL, NULL),
             "TPM2_CreatePrimary (endorsement hierarchy)");
cleanup:
    return status;
}

/* A fresh restricted signing key in the endorsement hierarchy (flushed by
 * the caller). */
HUSH_MUST_USE
static hush_status create_aik(hush_tpm *tpm, ESYS_TR *key, TPM2B_PUBLIC **pub, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_PUBLIC tmpl;
    aik_template(tpm->key_alg, &tmpl);
    unsigned char nonce[AIK_UNIQUE_BYTES];
    HUSH_OSSL(RAND_bytes(nonce, sizeof nonce) == 1, "RAND_bytes");
    if (tpm->key_alg == HUSH_TPM_KEY_ECC_P256) {
        memcpy(tmpl.publicArea.unique.ecc.x.buffer, nonce, sizeof nonce);
        tmpl.publicArea.unique.ecc.x.size = sizeof nonce;
    } else {
        memcpy(tmpl.publicArea.unique.rsa.buffer, nonce, sizeof nonce);
        tmpl.publicArea.unique.rsa.size = sizeof nonce;
    }
    HUSH_TRY(create_endorsement_primary(tpm, &tmpl, key, pub, err));
cleanup:
    return status;
}

/* TPM_RC_HANDLE (of any handle or parameter): nothing is stored there. */
static bool nothing_at_handle(TSS2_RC rc)
{
    return (rc & TPM2_RC_FMT1) != 0 && (rc & 0x3Fu) == (TPM2_RC_HANDLE & 0x3Fu);
}

/* Finds the key at `handle` and keeps its public area. */
HUSH_MUST_USE
static hush_status load_persistent(hush_tpm *tpm, uint32_t handle, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_PUBLIC *pub = NULL;
    TSS2_RC rc = Esys_TR_FromTPMPublic(tpm->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, &tpm->persistent);
    if (rc != TSS2_RC_SUCCESS) {
        tpm->persistent = ESYS_TR_NONE;
        HUSH_BAIL(nothing_at_handle(rc) ? HUSH_E_ARGUMENT : HUSH_E_CRYPTO,
                  "no usable persistent key at 0x%08x: %s", (unsigned)handle, Tss2_RC_Decode(rc));
    }
    HUSH_TSS(Esys_ReadPublic(tpm->esys, tpm->persistent, ESYS_TR_NONE, ESYS_TR_NONE,
                             ESYS_TR_NONE, &pub, NULL, NULL),
             "TPM2_ReadPublic (persistent AIK)");
    tpm->persistent_public = *pub;
    TPMT_SIG_SCHEME scheme;
    HUSH_TRY(signing_scheme(&pub->publicArea, &scheme, err));
cleanup:
    Esys_Free(pub);
    return status;
}

/* ---- quoting -------------------------------------------------------------- */

HUSH_MUST_USE
static hush_status qualifying_data(const char *payload_id, TPM2B_DATA *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char digest[EVP_MAX_MD_SIZE];
    HUSH_OSSL(EVP_Digest(payload_id, strlen(payload_id), digest, NULL, hush__sha256(), NULL),
              "EVP_Digest(SHA-256)");
    out->size = QUALIFYING_BYTES;
    memcpy(out->buffer, digest, QUALIFYING_BYTES);
cleanup:
    return status;
}

static bool same_selection(const TPML_PCR_SELECTION *a, const TPML_PCR_SELECTION *b)
{
    if (a->count != b->count)
        return false;
    for (uint32_t i = 0; i < a->count; i++) {
        const TPMS_PCR_SELECTION *x = &a->pcrSelections[i], *y = &b->pcrSelections[i];
        if (x->hash != y->hash)
            return false;
        for (unsigned pcr = 0; pcr < PCR_COUNT; pcr++) {
            if (pcr_selected(x, pcr) != pcr_selected(y, pcr))
                return false;
        }
    }
    return true;
}

/* Whether `quoted` is a quote of our selection with our qualifying data
 * over exactly the values in `pcrs`. */
HUSH_MUST_USE
static hush_status quote_covers(const hush_tpm *tpm, const TPM2B_ATTEST *quoted,
                                const TPM2B_DATA *qualifying, TPMI_ALG_HASH hash_alg,
                                const pcr_values *pcrs, bool *covers, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPMS_ATTEST attest;
    size_t off = 0;
    HUSH_TSS(Tss2_MU_TPMS_ATTEST_Unmarshal(quoted->attestationData, quoted->size, &off, &attest),
             "unmarshalling the quote");
    const TPMS_QUOTE_INFO *info = &attest.attested.quote;
    HUSH_ENSURE(off == quoted->size && attest.magic == TPM2_GENERATED_VALUE &&
                    attest.type == TPM2_ST_ATTEST_QUOTE &&
                    attest.extraData.size == qualifying->size &&
                    memcmp(attest.extraData.buffer, qualifying->buffer, qualifying->size) == 0 &&
                    same_selection(&info->pcrSelect, &tpm->selection),
                HUSH_E_CRYPTO, "the TPM's quote does not match the request");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    HUSH_TRY(pcr_digest(tpm, pcrs, hash_alg, digest, &digest_len, err));
    *covers = info->pcrDigest.size == digest_len &&
              memcmp(info->pcrDigest.buffer, digest, digest_len) == 0;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status marshal_quote(const TPM2B_PUBLIC *pub, const TPM2B_ATTEST *quoted,
                                 const TPMT_SIGNATURE *sig, quote_result *q, hush_error *err)
{
    hush_status status = HUSH_OK;
    q->pub_len = q->attest_len = q->sig_len = 0;
    HUSH_TSS(Tss2_MU_TPM2B_PUBLIC_Marshal(pub, q->pub, sizeof q->pub, &q->pub_len),
             "marshalling the AIK public key");
    HUSH_TSS(Tss2_MU_TPM2B_ATTEST_Marshal(quoted, q->attest, sizeof q->attest, &q->attest_len),
             "marshalling the quote");
    HUSH_TSS(Tss2_MU_TPMT_SIGNATURE_Marshal(sig, q->sig, sizeof q->sig, &q->sig_len),
             "marshalling the signature");
cleanup:
    return status;
}

/* One read of the PCRs and one quote with `key`; `*covers` says whether
 * the quote is over the values read (a PCR may be extended in between). */
HUSH_MUST_USE
static hush_status quote_once(hush_tpm *tpm, ESYS_TR key, const TPM2B_PUBLIC *pub,
                              const TPM2B_DATA *qualifying, quote_result *q, bool *covers,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_ATTEST *quoted = NULL;
    TPMT_SIGNATURE *sig = NULL;
    TPMT_SIG_SCHEME scheme;
    HUSH_TRY(signing_scheme(&pub->publicArea, &scheme, err));
    HUSH_TRY(read_pcrs(tpm, &q->pcrs, err));
    HUSH_TSS(Esys_Quote(tpm->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, qualifying,
                        &scheme, &tpm->selection, &quoted, &sig),
             "TPM2_Quote");
    HUSH_TRY(quote_covers(tpm, quoted, qualifying, scheme.details.any.hashAlg, &q->pcrs, covers,
                          err));
    HUSH_TRY(marshal_quote(pub, quoted, sig, q, err));
cleanup:
    Esys_Free(quoted);
    Esys_Free(sig);
    return status;
}

/* The quote under the lock: the key, the quote (again once if a PCR
 * changed between reading and quoting), and the ephemeral key flushed. */
HUSH_MUST_USE
static hush_status quote_locked(hush_tpm *tpm, const TPM2B_DATA *qualifying, quote_result *q,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    ESYS_TR key = tpm->persistent;
    TPM2B_PUBLIC *created = NULL;
    if (key == ESYS_TR_NONE)
        HUSH_TRY(create_aik(tpm, &key, &created, err));
    const TPM2B_PUBLIC *pub = created != NULL ? created : &tpm->persistent_public;
    bool covers = false;
    HUSH_TRY(quote_once(tpm, key, pub, qualifying, q, &covers, err));
    if (!covers)
        HUSH_TRY(quote_once(tpm, key, pub, qualifying, q, &covers, err));
    HUSH_ENSURE(covers, HUSH_E_CRYPTO, "the PCRs changed during two quotes in a row");
cleanup:
    if (created != NULL) {
        TSS2_RC rc = Esys_FlushContext(tpm->esys, key);
        if (rc != TSS2_RC_SUCCESS && status == HUSH_OK)
            status = fail_tss(err, HUSH_E_CRYPTO, "TPM2_FlushContext (AIK)", rc);
        Esys_Free(created);
    }
    return status;
}

/* ---- writing the result ------------------------------------------------- */

HUSH_MUST_USE
static hush_status write_key(hush_json_writer *w, const char *key, hush_error *err)
{
    return hush_json_write_key(w, key, strlen(key), err);
}

HUSH_MUST_USE
static hush_status write_string_member(hush_json_writer *w, const char *key, const char *value,
                                       hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(write_key(w, key, err));
    HUSH_TRY(hush_json_write_string(w, value, strlen(value), err));
cleanup:
    return status;
}

/* "pcr_values": {"<bank>": {"<index>": "<hex>", ...}, ...} */
HUSH_MUST_USE
static hush_status write_pcr_values(const hush_tpm *tpm, const pcr_values *pcrs,
                                    hush_json_writer *w, hush_error *err)
{
    static const char hex[] = "0123456789abcdef";
    hush_status status = HUSH_OK;
    HUSH_TRY(write_key(w, "pcr_values", err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    for (uint32_t i = 0; i < tpm->selection.count; i++) {
        const TPMS_PCR_SELECTION *sel = &tpm->selection.pcrSelections[i];
        size_t b = 0;
        const pcr_bank *bank = bank_by_alg(sel->hash, &b);
        HUSH_TRY(write_key(w, bank->name, err));
        HUSH_TRY(hush_json_write_object_begin(w, err));
        for (unsigned pcr = 0; pcr < PCR_COUNT; pcr++) {
            if (!pcr_selected(sel, pcr))
                continue;
            char index[4], text[2 * 64 + 1];
            snprintf(index, sizeof index, "%u", pcr);
            for (size_t k = 0; k < bank->size; k++) {
                text[2 * k] = hex[pcrs->value[b][pcr][k] >> 4];
                text[2 * k + 1] = hex[pcrs->value[b][pcr][k] & 15];
            }
            text[2 * bank->size] = '\0';
            HUSH_TRY(write_string_member(w, index, text, err));
        }
        HUSH_TRY(hush_json_write_object_end(w, err));
    }
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* The three blobs in base64, in one allocation: NUL-separated strings. */
HUSH_MUST_USE
static hush_status encode_blobs(const quote_result *q, char **out, const char *b64[3],
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    const unsigned char *blob[3] = {q->pub, q->attest, q->sig};
    size_t len[3] = {q->pub_len, q->attest_len, q->sig_len};
    size_t total = 0;
    for (int i = 0; i < 3; i++)
        total += hush_base64_encoded_len(len[i]) + 1;
    char *buf = malloc(total);
    HUSH_ENSURE(buf != NULL, HUSH_E_NOMEM, "out of memory");
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        HUSH_TRY(hush_base64_encode(blob[i], len[i], buf + at, total - at, &n, err));
        b64[i] = buf + at;
        at += n + 1;
    }
    *out = buf;
    buf = NULL;
cleanup:
    free(buf);
    return status;
}

HUSH_MUST_USE
static hush_status write_attestation(const hush_tpm *tpm, const quote_result *q,
                                     hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    char *blobs = NULL;
    const char *b64[3];
    HUSH_TRY(encode_blobs(q, &blobs, b64, err));
    HUSH_TRY(write_key(w, "is_available", err));
    HUSH_TRY(hush_json_write_bool(w, true, err));
    HUSH_TRY(write_string_member(w, "pcr_banks", tpm->pcr_banks, err));
    HUSH_TRY(write_pcr_values(tpm, &q->pcrs, w, err));
    HUSH_TRY(write_string_member(w, "aik_pubkey_b64", b64[0], err));
    HUSH_TRY(write_string_member(w, "quote_b64", b64[1], err));
    HUSH_TRY(write_string_member(w, "signature_b64", b64[2], err));
cleanup:
    free(blobs);
    return status;
}

/* ---- enrolment: the EK certificate and TPM2_ActivateCredential --------- */

/* The most one TPM2_NV_Read gives: TPM_PT_NV_BUFFER_MAX, at most what a
 * TPM2B_MAX_NV_BUFFER holds. */
HUSH_MUST_USE
static hush_status nv_buffer_max(hush_tpm *tpm, size_t *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPMS_CAPABILITY_DATA *caps = NULL;
    TPMI_YES_NO more;
    HUSH_TSS(Esys_GetCapability(tpm->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                TPM2_CAP_TPM_PROPERTIES, TPM2_PT_NV_BUFFER_MAX, 1, &more, &caps),
             "TPM2_GetCapability (TPM_PT_NV_BUFFER_MAX)");
    const TPML_TAGGED_TPM_PROPERTY *props = &caps->data.tpmProperties;
    HUSH_ENSURE(props->count >= 1 && props->tpmProperty[0].property == TPM2_PT_NV_BUFFER_MAX &&
                    props->tpmProperty[0].value > 0,
                HUSH_E_CRYPTO, "the TPM does not report TPM_PT_NV_BUFFER_MAX");
    *out = props->tpmProperty[0].value < TPM2_MAX_NV_BUFFER_SIZE ? props->tpmProperty[0].value
                                                                 : TPM2_MAX_NV_BUFFER_SIZE;
cleanup:
    Esys_Free(caps);
    return status;
}

/* Reads an NV index's contents with the authorisation its attributes allow:
 * the index's own (empty) auth value when TPMA_NV_AUTHREAD is set, as
 * tpm2_nvread does by default, else the owner's; in chunks the TPM takes. */
HUSH_MUST_USE
static hush_status nv_read_all(hush_tpm *tpm, ESYS_TR index, unsigned char **out, size_t *len,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_NV_PUBLIC *pub = NULL;
    TPM2B_MAX_NV_BUFFER *chunk = NULL;
    unsigned char *buf = NULL;
    HUSH_TSS(Esys_NV_ReadPublic(tpm->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub,
                                NULL),
             "TPM2_NV_ReadPublic (EK certificate)");
    TPMA_NV attributes = pub->nvPublic.attributes;
    size_t size = pub->nvPublic.dataSize;
    HUSH_ENSURE((attributes & TPMA_NV_WRITTEN) != 0 && size > 0, HUSH_E_NOT_FOUND,
                "the EK certificate's NV index holds nothing");
    ESYS_TR auth = (attributes & TPMA_NV_AUTHREAD) != 0    ? index
                   : (attributes & TPMA_NV_OWNERREAD) != 0 ? ESYS_TR_RH_OWNER
                                                           : ESYS_TR_NONE;
    HUSH_ENSURE(auth != ESYS_TR_NONE, HUSH_E_UNSUPPORTED,
                "the EK certificate's NV index is readable by neither its own nor the owner's "
                "authorisation");
    size_t max = 0;
    HUSH_TRY(nv_buffer_max(tpm, &max, err));
    buf = malloc(size);
    HUSH_ENSURE(buf != NULL, HUSH_E_NOMEM, "out of memory");
    for (size_t at = 0; at < size; at += max) {
        UINT16 want = (UINT16)(size - at < max ? size - at : max);
        HUSH_TSS(Esys_NV_Read(tpm->esys, auth, index, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, want, (UINT16)at, &chunk),
                 "TPM2_NV_Read (EK certificate)");
        HUSH_ENSURE(chunk->size == want, HUSH_E_CRYPTO, "TPM2_NV_Read returned %u bytes, not %u",
                    (unsigned)chunk->size, (unsigned)want);
        memcpy(buf + at, chunk->buffer, want);
        Esys_Free(chunk);
        chunk = NULL;
    }
    *out = buf;
    *len = size;
    buf = NULL;
cleanup:
    Esys_Free(pub);
    Esys_Free(chunk);
    free(buf);
    return status;
}

/* The length of the DER SEQUENCE that starts `der`, its header included:
 * some TPMs store the certificate padded to the index's size. */
HUSH_MUST_USE
static hush_status der_length(const unsigned char *der, size_t len, size_t *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(len >= 2 && der[0] == 0x30, HUSH_E_FORMAT, "the EK certificate is not DER");
    size_t header = 2, body = der[1];
    if (der[1] & 0x80) {
        size_t n = der[1] & 0x7Fu;
        HUSH_ENSURE(n >= 1 && n <= 3 && len >= 2 + n, HUSH_E_FORMAT,
                    "the EK certificate's DER length is malformed");
        body = 0;
        for (size_t i = 0; i < n; i++)
            body = body << 8 | der[2 + i];
        header += n;
    }
    HUSH_ENSURE(body <= len - header, HUSH_E_FORMAT,
                "the EK certificate is longer than its NV index");
    *out = header + body;
cleanup:
    return status;
}

/* The EK certificate (RSA first, then P-256) and the index it came from;
 * HUSH_E_NOT_FOUND when neither index exists. Under the lock. */
HUSH_MUST_USE
static hush_status read_ek_certificate(hush_tpm *tpm, unsigned char **der, size_t *len,
                                       TPM2_HANDLE *found, hush_error *err)
{
    static const TPM2_HANDLE indices[] = {EK_CERT_RSA_INDEX, EK_CERT_ECC_INDEX};
    hush_status status = HUSH_OK;
    ESYS_TR index = ESYS_TR_NONE;
    *der = NULL;
    for (size_t i = 0; i < sizeof indices / sizeof indices[0] && index == ESYS_TR_NONE; i++) {
        TSS2_RC rc = Esys_TR_FromTPMPublic(tpm->esys, indices[i], ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, &index);
        if (rc != TSS2_RC_SUCCESS) {
            index = ESYS_TR_NONE;
            HUSH_ENSURE(nothing_at_handle(rc), HUSH_E_CRYPTO,
                        "looking up the EK certificate's NV index 0x%08x failed: %s",
                        (unsigned)indices[i], Tss2_RC_Decode(rc));
            continue;
        }
        *found = indices[i];
    }
    HUSH_ENSURE(index != ESYS_TR_NONE, HUSH_E_NOT_FOUND,
                "the TPM holds no EK certificate (NV 0x%08x or 0x%08x)",
                (unsigned)EK_CERT_RSA_INDEX, (unsigned)EK_CERT_ECC_INDEX);
    HUSH_TRY(nv_read_all(tpm, index, der, len, err));
    HUSH_TRY(der_length(*der, *len, len, err));
cleanup:
    if (index != ESYS_TR_NONE)
        Esys_TR_Close(tpm->esys, &index); /* forgets the index; it stays in the TPM */
    if (status != HUSH_OK) {
        free(*der);
        *der = NULL;
    }
    return status;
}

/* The TCG default EK template (EK Credential Profile 2.0 B.3.3): L-1,
 * RSA-2048, or L-2, NIST P-256; the same EK the certificate names. */
static void ek_template(bool rsa, TPM2B_PUBLIC *t)
{
    /* PolicySecret(TPM_RH_ENDORSEMENT) */
    static const unsigned char policy[TPM2_SHA256_DIGEST_SIZE] = {
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
        0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
        0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
    static const TPMT_SYM_DEF_OBJECT aes128_cfb = {
        .algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
    memset(t, 0, sizeof *t);
    TPMT_PUBLIC *p = &t->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                          TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    p->authPolicy.size = sizeof policy;
    memcpy(p->authPolicy.buffer, policy, sizeof policy);
    if (rsa) {
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric = aes128_cfb;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = 2048;
        p->parameters.rsaDetail.exponent = 0;
        p->unique.rsa.size = 256;
    } else {
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric = aes128_cfb;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        p->unique.ecc.x.size = 32;
        p->unique.ecc.y.size = 32;
    }
}

HUSH_MUST_USE
static hush_status create_ek(hush_tpm *tpm, bool rsa, ESYS_TR *ek, TPM2B_PUBLIC **pub,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_PUBLIC tmpl;
    ek_template(rsa, &tmpl);
    HUSH_TRY(create_endorsement_primary(tpm, &tmpl, ek, pub, err));
cleanup:
    return status;
}

/* Whether the big-endian `bn` equals the TPM's `value` (which may drop
 * leading zeros). */
static bool bn_equals(const BIGNUM *bn, const unsigned char *value, size_t len)
{
    unsigned char buf[512];
    return len <= sizeof buf && BN_num_bytes(bn) <= (int)len &&
           BN_bn2binpad(bn, buf, (int)len) == (int)len && memcmp(buf, value, len) == 0;
}

/* Whether the certificate's public key parameter `name` equals `value`. */
static bool param_equals(const EVP_PKEY *key, const char *name, const unsigned char *value,
                         size_t len)
{
    BIGNUM *bn = NULL;
    bool same = EVP_PKEY_get_bn_param(key, name, &bn) == 1 && bn_equals(bn, value, len);
    BN_free(bn);
    return same;
}

/* The EK made from the template must be the key its certificate names:
 * otherwise a credential made to the certificate would never activate. */
HUSH_MUST_USE
static hush_status ek_matches_certificate(const unsigned char *der, size_t len,
                                          const TPMT_PUBLIC *ek, hush_error *err)
{
    hush_status status = HUSH_OK;
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)len);
    HUSH_ENSURE(cert != NULL, HUSH_E_FORMAT, "the EK certificate does not parse as X.509");
    const EVP_PKEY *key = X509_get0_pubkey(cert);
    bool same = false;
    if (key != NULL && ek->type == TPM2_ALG_RSA && EVP_PKEY_is_a(key, "RSA")) {
        static const unsigned char f4[] = {0x01, 0x00, 0x01}; /* exponent 0 means 65537 */
        same = param_equals(key, OSSL_PKEY_PARAM_RSA_N, ek->unique.rsa.buffer,
                            ek->unique.rsa.size) &&
               param_equals(key, OSSL_PKEY_PARAM_RSA_E, f4, sizeof f4);
    } else if (key != NULL && ek->type == TPM2_ALG_ECC && EVP_PKEY_is_a(key, "EC")) {
        same = param_equals(key, OSSL_PKEY_PARAM_EC_PUB_X, ek->unique.ecc.x.buffer,
                            ek->unique.ecc.x.size) &&
               param_equals(key, OSSL_PKEY_PARAM_EC_PUB_Y, ek->unique.ecc.y.buffer,
                            ek->unique.ecc.y.size);
    }
    HUSH_ENSURE(same, HUSH_E_KEY, "the EK does not match its certificate");
cleanup:
    X509_free(cert);
    return status;
}

/* A policy session satisfying the EK's policy: PolicySecret(endorsement). */
HUSH_MUST_USE
static hush_status start_ek_session(hush_tpm *tpm, ESYS_TR *session, hush_error *err)
{
    hush_status status = HUSH_OK;
    TPMT_SYM_DEF symmetric = {.algorithm = TPM2_ALG_NULL};
    HUSH_TSS(Esys_StartAuthSession(tpm->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &symmetric,
                                   TPM2_ALG_SHA256, session),
             "TPM2_StartAuthSession (EK policy)");
    HUSH_TSS(Esys_PolicySecret(tpm->esys, ESYS_TR_RH_ENDORSEMENT, *session, ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, NULL, NULL, NULL, 0, NULL, NULL),
             "TPM2_PolicySecret (endorsement)");
cleanup:
    return status;
}

/* The TPM's refusals of the credential itself (Part 3 §12.5): its HMAC, the
 * seed's decryption, a size or point that cannot be right. */
static bool credential_refused(TSS2_RC rc)
{
    static const TPM2_RC refusals[] = {TPM2_RC_INTEGRITY, TPM2_RC_VALUE, TPM2_RC_SIZE,
                                       TPM2_RC_ECC_POINT, TPM2_RC_INSUFFICIENT};
    if (rc == TPM2_RC_NO_RESULT)
        return true;
    if ((rc & ~(TSS2_RC)0xFFF) != 0 || (rc & TPM2_RC_FMT1) == 0 || (rc & TPM2_RC_P) == 0)
        return false; /* not the TPM's, or not about a parameter */
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        if ((rc & 0xBFu) == refusals[i])
            return true;
    }
    return false;
}

/* libtpms (swtpm) answers a seed that does not RSA-OAEP-decrypt with
 * TPM_RC_FAILURE rather than the spec's TPM_RC_VALUE, without entering
 * failure mode. So TPM_RC_FAILURE is a refusal of the credential only when
 * TPM2_GetTestResult then says the TPM is working; a TPM that really
 * failed stays HUSH_E_CRYPTO. */
static bool still_working(hush_tpm *tpm)
{
    TPM2B_MAX_BUFFER *data = NULL;
    TPM2_RC result = TPM2_RC_FAILURE;
    TSS2_RC rc = Esys_GetTestResult(tpm->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &data,
                                    &result);
    Esys_Free(data);
    return rc == TSS2_RC_SUCCESS && result == TPM2_RC_SUCCESS;
}

HUSH_MUST_USE
static hush_status activate(hush_tpm *tpm, ESYS_TR ek, ESYS_TR session,
                            const TPM2B_ID_OBJECT *id_object,
                            const TPM2B_ENCRYPTED_SECRET *encrypted_secret, hush_secbuf **secret,
                            hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_DIGEST *recovered = NULL;
    TSS2_RC rc = Esys_ActivateCredential(tpm->esys, tpm->persistent, ek, ESYS_TR_PASSWORD,
                                         session, ESYS_TR_NONE, id_object, encrypted_secret,
                                         &recovered);
    HUSH_ENSURE(!credential_refused(rc) && !(rc == TPM2_RC_FAILURE && still_working(tpm)),
                HUSH_E_AUTH, "the credential did not activate");
    HUSH_TSS(rc, "TPM2_ActivateCredential");
    HUSH_ENSURE(recovered->size > 0, HUSH_E_CRYPTO, "TPM2_ActivateCredential gave no secret");
    HUSH_TRY(hush_secbuf_new(recovered->size, recovered->size, HUSH_SECMEM_DEFAULT, secret, err));
    HUSH_TRY(hush_secbuf_append(*secret, recovered->buffer, recovered->size, err));
cleanup:
    if (recovered != NULL)
        hush_memzero(recovered, sizeof *recovered);
    Esys_Free(recovered);
    if (status != HUSH_OK) {
        hush_secbuf_free(*secret);
        *secret = NULL;
    }
    return status;
}

/* Flushes a transient object or session; its failure is reported only when
 * nothing failed before. */
HUSH_MUST_USE
static hush_status flush_transient(hush_tpm *tpm, ESYS_TR handle, const char *what,
                                   hush_status status, hush_error *err)
{
    if (handle == ESYS_TR_NONE)
        return status;
    TSS2_RC rc = Esys_FlushContext(tpm->esys, handle);
    if (rc != TSS2_RC_SUCCESS && status == HUSH_OK)
        return fail_tss(err, HUSH_E_CRYPTO, what, rc);
    return status;
}

/* The EK remade and checked against its certificate, its policy
 * satisfied, the credential activated; the EK and the session flushed on
 * every path. Under the lock. */
HUSH_MUST_USE
static hush_status activate_locked(hush_tpm *tpm, const TPM2B_ID_OBJECT *id_object,
                                   const TPM2B_ENCRYPTED_SECRET *encrypted_secret,
                                   hush_secbuf **secret, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *cert = NULL;
    size_t cert_len = 0;
    TPM2_HANDLE index = 0;
    ESYS_TR ek = ESYS_TR_NONE, session = ESYS_TR_NONE;
    TPM2B_PUBLIC *ek_public = NULL;
    HUSH_TRY(read_ek_certificate(tpm, &cert, &cert_len, &index, err));
    HUSH_TRY(create_ek(tpm, index == EK_CERT_RSA_INDEX, &ek, &ek_public, err));
    HUSH_TRY(ek_matches_certificate(cert, cert_len, &ek_public->publicArea, err));
    HUSH_TRY(start_ek_session(tpm, &session, err));
    HUSH_TRY(activate(tpm, ek, session, id_object, encrypted_secret, secret, err));
cleanup:
    status = flush_transient(tpm, session, "TPM2_FlushContext (EK policy session)", status, err);
    status = flush_transient(tpm, ek, "TPM2_FlushContext (EK)", status, err);
    Esys_Free(ek_public);
    free(cert);
    return status;
}

/* The two blobs as TPM2_ActivateCredential takes them; each must be one
 * whole TPM2B. */
HUSH_MUST_USE
static hush_status unmarshal_credential(const void *id_object, size_t id_len,
                                        const void *encrypted_secret, size_t secret_len,
                                        TPM2B_ID_OBJECT *blob, TPM2B_ENCRYPTED_SECRET *seed,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    memset(blob, 0, sizeof *blob); /* tss2-mu fills only a TPM2B of size 0 */
    memset(seed, 0, sizeof *seed);
    size_t off = 0;
    HUSH_ENSURE(Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(id_object, id_len, &off, blob) ==
                        TSS2_RC_SUCCESS &&
                    off == id_len && blob->size > 0,
                HUSH_E_FORMAT, "id_object is not a TPM2B_ID_OBJECT");
    off = 0;
    HUSH_ENSURE(Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(encrypted_secret, secret_len, &off,
                                                         seed) == TSS2_RC_SUCCESS &&
                    off == secret_len && seed->size > 0,
                HUSH_E_FORMAT, "encrypted_secret is not a TPM2B_ENCRYPTED_SECRET");
cleanup:
    return status;
}

/* ---- the public API ----------------------------------------------------- */

HUSH_MUST_USE
static hush_status connect_tpm(hush_tpm *tpm, const char *tcti, hush_error *err)
{
    hush_status status = HUSH_OK;
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti, &tpm->tcti);
    if (rc != TSS2_RC_SUCCESS) {
        tpm->tcti = NULL;
        HUSH_BAIL(HUSH_E_CONNECTION, "cannot open the TPM through TCTI \"%.64s\": %s", tcti,
                  Tss2_RC_Decode(rc));
    }
    HUSH_TSS(Esys_Initialize(&tpm->esys, tpm->tcti, NULL), "Esys_Initialize");
cleanup:
    return status;
}

/* Refuses a bank the TPM has not allocated now rather than at the first
 * request, by reading the selection once. */
HUSH_MUST_USE
static hush_status check_banks(hush_tpm *tpm, hush_error *err)
{
    hush_status status = HUSH_OK;
    pcr_values *probe = malloc(sizeof *probe);
    HUSH_ENSURE(probe != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_TRY(read_pcrs(tpm, probe, err));
cleanup:
    free(probe);
    return status;
}

hush_status hush_tpm_options_init(hush_tpm_options *opts, unsigned version, hush_error *err)
{
    static const hush_tpm_options defaults = HUSH_TPM_OPTIONS_INIT;
    return hush__options_init(opts, &defaults, sizeof defaults, "hush_tpm_options", version,
                              HUSH_TPM_OPTIONS_VERSION, err);
}

hush_status hush_tpm_open(const hush_tpm_options *opts, hush_tpm **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_tpm *tpm = NULL;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(opts != NULL && out != NULL && opts->tcti != NULL, HUSH_E_ARGUMENT,
                "hush_tpm_open: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__check_options_version("hush_tpm_options", opts->version,
                                         HUSH_TPM_OPTIONS_VERSION, err));
    HUSH_ENSURE(opts->key_alg == HUSH_TPM_KEY_ECC_P256 || opts->key_alg == HUSH_TPM_KEY_RSA_2048,
                HUSH_E_ARGUMENT, "hush_tpm_open: unknown key algorithm %d", (int)opts->key_alg);
    HUSH_ENSURE(opts->persistent_handle == 0 || (opts->persistent_handle >= PERSISTENT_FIRST &&
                                                 opts->persistent_handle <= PERSISTENT_LAST),
                HUSH_E_ARGUMENT, "persistent handle 0x%08x is not in 0x81000000..0x81ffffff",
                (unsigned)opts->persistent_handle);
    tpm = calloc(1, sizeof *tpm);
    HUSH_ENSURE(tpm != NULL, HUSH_E_NOMEM, "out of memory");
    int rc = pthread_mutex_init(&tpm->lock, NULL);
    if (rc != 0) {
        free(tpm); /* not a hush_tpm for hush_tpm_close yet */
        tpm = NULL;
        HUSH_BAIL(HUSH_E_NOMEM, "pthread_mutex_init failed (%d)", rc);
    }
    tpm->persistent = ESYS_TR_NONE;
    tpm->key_alg = opts->key_alg;
    HUSH_TRY(parse_pcr_selection(opts->pcrs != NULL ? opts->pcrs : HUSH_TPM_DEFAULT_PCRS,
                                 &tpm->selection, tpm->pcr_banks, sizeof tpm->pcr_banks, err));
    HUSH_TRY(connect_tpm(tpm, opts->tcti, err));
    if (opts->persistent_handle != 0)
        HUSH_TRY(load_persistent(tpm, opts->persistent_handle, err));
    HUSH_TRY(check_banks(tpm, err));
    *out = tpm;
    tpm = NULL;
cleanup:
    hush_tpm_close(tpm);
    return status;
}

void hush_tpm_close(hush_tpm *tpm)
{
    if (tpm == NULL)
        return;
    /* A persistent key stays in the TPM; Esys_Finalize only forgets it. */
    if (tpm->esys != NULL)
        Esys_Finalize(&tpm->esys);
    if (tpm->tcti != NULL)
        Tss2_TctiLdr_Finalize(&tpm->tcti);
    pthread_mutex_destroy(&tpm->lock);
    free(tpm);
}

const char *hush_tpm_pcr_banks(const hush_tpm *tpm)
{
    return tpm != NULL ? tpm->pcr_banks : NULL;
}

/* The quote under the lock, then its members written: what hush_tpm_quote
 * and hush_tpm_quote_bound share once the qualifying data is known. */
HUSH_MUST_USE
static hush_status quote_and_write(hush_tpm *tpm, const TPM2B_DATA *qualifying,
                                   hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    quote_result *q = calloc(1, sizeof *q);
    HUSH_ENSURE(q != NULL, HUSH_E_NOMEM, "out of memory");
    pthread_mutex_lock(&tpm->lock);
    hush_status quoted = quote_locked(tpm, qualifying, q, err);
    pthread_mutex_unlock(&tpm->lock);
    HUSH_TRY(quoted);
    HUSH_TRY(write_attestation(tpm, q, w, err));
cleanup:
    free(q);
    return status;
}

hush_status hush_tpm_quote(hush_tpm *tpm, const char *payload_id, hush_json_writer *w,
                           hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(tpm != NULL && payload_id != NULL && w != NULL, HUSH_E_ARGUMENT,
                "hush_tpm_quote: NULL argument");
    TPM2B_DATA qualifying;
    HUSH_TRY(qualifying_data(payload_id, &qualifying, err));
    HUSH_TRY(quote_and_write(tpm, &qualifying, w, err));
cleanup:
    return status;
}

hush_status hush_tpm_quote_bound(hush_tpm *tpm, const void *qualifying, size_t len,
                                 hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(tpm != NULL && qualifying != NULL && w != NULL, HUSH_E_ARGUMENT,
                "hush_tpm_quote_bound: NULL argument");
    HUSH_ENSURE(len >= 1 && len <= BOUND_QUALIFYING_MAX, HUSH_E_ARGUMENT,
                "hush_tpm_quote_bound: qualifying data of %zu bytes (1..%d)", len,
                BOUND_QUALIFYING_MAX);
    TPM2B_DATA data = {.size = (UINT16)len};
    memcpy(data.buffer, qualifying, len);
    HUSH_TRY(quote_and_write(tpm, &data, w, err));
cleanup:
    return status;
}

hush_status hush_tpm_ek_certificate(hush_tpm *tpm, unsigned char **der, size_t *len,
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(tpm != NULL && der != NULL && len != NULL, HUSH_E_ARGUMENT,
                "hush_tpm_ek_certificate: NULL argument");
    *der = NULL;
    *len = 0;
    TPM2_HANDLE index;
    pthread_mutex_lock(&tpm->lock);
    hush_status read = read_ek_certificate(tpm, der, len, &index, err);
    pthread_mutex_unlock(&tpm->lock);
    HUSH_TRY(read);
cleanup:
    return status;
}

hush_status hush_tpm_aik_public(hush_tpm *tpm, unsigned char *out, size_t cap, size_t *len,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(tpm != NULL && out != NULL && len != NULL, HUSH_E_ARGUMENT,
                "hush_tpm_aik_public: NULL argument");
    HUSH_ENSURE(tpm->persistent != ESYS_TR_NONE, HUSH_E_UNSUPPORTED,
                "the AIK is ephemeral: a key made for one quote cannot be enrolled");
    /* persistent_public is set once at open: no lock needed */
    unsigned char buf[sizeof(TPM2B_PUBLIC)];
    size_t n = 0;
    HUSH_TSS(Tss2_MU_TPM2B_PUBLIC_Marshal(&tpm->persistent_public, buf, sizeof buf, &n),
             "marshalling the AIK public key");
    HUSH_ENSURE(n <= cap, HUSH_E_LIMIT, "the AIK public area (%zu bytes) does not fit %zu", n,
                cap);
    memcpy(out, buf, n);
    *len = n;
cleanup:
    return status;
}

hush_status hush_tpm_activate_credential(hush_tpm *tpm, const void *id_object, size_t id_len,
                                         const void *encrypted_secret, size_t secret_len,
                                         hush_secbuf **secret, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(tpm != NULL && id_object != NULL && encrypted_secret != NULL && secret != NULL,
                HUSH_E_ARGUMENT, "hush_tpm_activate_credential: NULL argument");
    *secret = NULL;
    HUSH_ENSURE(tpm->persistent != ESYS_TR_NONE, HUSH_E_UNSUPPORTED,
                "the AIK is ephemeral: a key made for one quote cannot be enrolled");
    TPM2B_ID_OBJECT blob;
    TPM2B_ENCRYPTED_SECRET seed;
    HUSH_TRY(unmarshal_credential(id_object, id_len, encrypted_secret, secret_len, &blob, &seed,
                                  err));
    pthread_mutex_lock(&tpm->lock);
    hush_status activated = activate_locked(tpm, &blob, &seed, secret, err);
    pthread_mutex_unlock(&tpm->lock);
    HUSH_TRY(activated);
cleanup:
    return status;
}
