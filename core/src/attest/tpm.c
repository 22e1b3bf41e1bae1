/* tpm.c — TPM 2.0 quotes bound to one request, through tss2-esys.
 * A hush_tpm owns one TCTI and one ESYS context, used under its mutex; each
 * quote reads the selected PCRs, quotes them with SHA-256(payload_id)[:16]
 * as qualifying data, and checks the quote covers exactly the values read. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

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
#define PCR_BANKS_MAX 512 /* four banks of all 24 PCRs take 273 chars; as attest.c allows */
#define PERSISTENT_FIRST 0x81000000u
#define PERSISTENT_LAST 0x81FFFFFFu
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
    TPM2B_SENSITIVE_CREATE sensitive;
    memset(&sensitive, 0, sizeof sensitive);
    TPM2B_DATA outside_info = {.size = 0};
    TPML_PCR_SELECTION creation_pcrs = {.count = 0};
    HUSH_TSS(Esys_CreatePrimary(tpm->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &sensitive, &tmpl, &outside_info, &creation_pcrs,
                                key, pub, NULL, NULL, NULL),
             "TPM2_CreatePrimary (endorsement hierarchy AIK)");
cleanup:
    return status;
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
        /* TPM_RC_HANDLE: nothing is stored at that handle. */
        bool missing = (rc & TPM2_RC_FMT1) != 0 && (rc & 0x3Fu) == (TPM2_RC_HANDLE & 0x3Fu);
        HUSH_BAIL(missing ? HUSH_E_ARGUMENT : HUSH_E_CRYPTO,
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

hush_status hush_tpm_quote(hush_tpm *tpm, const char *payload_id, hush_json_writer *w,
                           hush_error *err)
{
    hush_status status = HUSH_OK;
    quote_result *q = NULL;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE(tpm != NULL && payload_id != NULL && w != NULL, HUSH_E_ARGUMENT,
                "hush_tpm_quote: NULL argument");
    TPM2B_DATA qualifying;
    HUSH_TRY(qualifying_data(payload_id, &qualifying, err));
    q = calloc(1, sizeof *q);
    HUSH_ENSURE(q != NULL, HUSH_E_NOMEM, "out of memory");
    pthread_mutex_lock(&tpm->lock);
    hush_status quoted = quote_locked(tpm, &qualifying, q, err);
    pthread_mutex_unlock(&tpm->lock);
    HUSH_TRY(quoted);
    HUSH_TRY(write_attestation(tpm, q, w, err));
cleanup:
    free(q);
    return status;
}
