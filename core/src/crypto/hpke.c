/* hpke.c — HPKE contexts (RFC 9180 base mode): SetupBaseS/SetupBaseR, the
 * key schedule, Seal/Open with the sequence-number nonce, and Export.
 *
 * Two key schedules: RFC 9180 §5.1's for HKDF-SHA256, and the one-stage
 * SHAKE256 KDF's of draft-ietf-hpke-pq, where one LabeledDerive gives the
 * key, base nonce and exporter secret together. Every secret of a context
 * (the shared secret, the schedule's secret, key, base nonce, exporter
 * secret) lives in one secure buffer, wiped when the context is freed. */
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "hushcall/hpke.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"

#define HPKE_SUITE_ID_BYTES 10u /* "HPKE" || kem || kdf || aead */
#define HPKE_KEY_BYTES 32u      /* Nk of both AEADs */
#define HPKE_NONCE_BYTES 12u    /* Nn of both AEADs */
#define HPKE_MODE_BASE 0u
/* The longest exporter secret: SHAKE256's Nh. */
#define HPKE_MAX_NH HUSH_HPKE_SHAKE256_NH
/* EVP's lengths are ints. */
#define HPKE_MAX_MESSAGE ((size_t)INT_MAX - HUSH_HPKE_TAG_BYTES)

typedef struct ctx_secrets {
    unsigned char shared_secret[HUSH_HPKE_SECRET_BYTES];
    /* The schedule's intermediate: the HKDF `secret`, or the one-stage
     * KDF's Nk + Nn + Nh bytes before they are split. */
    unsigned char schedule[HPKE_KEY_BYTES + HPKE_NONCE_BYTES + HPKE_MAX_NH];
    unsigned char key[HPKE_KEY_BYTES];
    unsigned char base_nonce[HPKE_NONCE_BYTES];
    unsigned char exporter_secret[HPKE_MAX_NH];
} ctx_secrets;

struct hush_hpke_ctx {
    hush_hpke_suite suite;
    bool sender;
    uint64_t seq;
    size_t nk, nn, nh;
    hush__secret_block secrets_block; /* holds one ctx_secrets */
    ctx_secrets *secrets;
};

/* ---- suites ------------------------------------------------------------ */

hush_status hush_hpke_suite_check(hush_hpke_suite suite, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(suite.kem_id == HUSH_HPKE_KEM_X25519_SHA256 || suite.kem_id == HUSH_HPKE_KEM_XWING,
                HUSH_E_UNSUPPORTED, "HPKE KEM id 0x%04x is not supported", (unsigned)suite.kem_id);
    HUSH_ENSURE(suite.kdf_id == HUSH_HPKE_KDF_HKDF_SHA256 || suite.kdf_id == HUSH_HPKE_KDF_SHAKE256,
                HUSH_E_UNSUPPORTED, "HPKE KDF id 0x%04x is not supported", (unsigned)suite.kdf_id);
    HUSH_ENSURE(suite.aead_id == HUSH_HPKE_AEAD_AES_256_GCM ||
                    suite.aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305 ||
                    suite.aead_id == HUSH_HPKE_AEAD_EXPORT_ONLY,
                HUSH_E_UNSUPPORTED, "HPKE AEAD id 0x%04x is not supported",
                (unsigned)suite.aead_id);
cleanup:
    return status;
}

static bool one_stage(hush_hpke_suite suite) { return suite.kdf_id == HUSH_HPKE_KDF_SHAKE256; }
static bool export_only(hush_hpke_suite suite)
{
    return suite.aead_id == HUSH_HPKE_AEAD_EXPORT_ONLY;
}

static void put_u16(unsigned char out[2], size_t value)
{
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
}

static void hpke_suite_id(hush_hpke_suite suite, unsigned char out[HPKE_SUITE_ID_BYTES])
{
    memcpy(out, "HPKE", 4);
    put_u16(out + 4, suite.kem_id);
    put_u16(out + 6, suite.kdf_id);
    put_u16(out + 8, suite.aead_id);
}

static const EVP_CIPHER *aead_cipher(hush_hpke_suite suite)
{
    return suite.aead_id == HUSH_HPKE_AEAD_AES_256_GCM ? hush__aes_256_gcm()
                                                       : EVP_chacha20_poly1305();
}

/* ---- the key schedule --------------------------------------------------- */

/* RFC 9180 §5.1 with mode_base and the default (empty) psk and psk_id. */
HUSH_MUST_USE
static hush_status schedule_two_stage(hush_hpke_ctx *ctx, const unsigned char *suite_id,
                                      const void *info, size_t info_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    ctx_secrets *s = ctx->secrets;
    unsigned char context[1 + 2 * HUSH_HPKE_SECRET_BYTES]; /* mode || psk_id_hash || info_hash */
    const hush__span info_span = {info, info_len};
    const hush__span shared = {s->shared_secret, HUSH_HPKE_SECRET_BYTES};
    const hush__span ks_context = {context, sizeof context};

    context[0] = HPKE_MODE_BASE;
    HUSH_TRY(hush__hpke_labeled_extract(suite_id, HPKE_SUITE_ID_BYTES, NULL, 0, "psk_id_hash",
                                        NULL, 0, context + 1, err));
    HUSH_TRY(hush__hpke_labeled_extract(suite_id, HPKE_SUITE_ID_BYTES, NULL, 0, "info_hash",
                                        &info_span, 1, context + 1 + HUSH_HPKE_SECRET_BYTES, err));
    /* secret = LabeledExtract(shared_secret, "secret", psk): the shared
     * secret is the salt, the empty psk the input. */
    HUSH_TRY(hush__hpke_labeled_extract(suite_id, HPKE_SUITE_ID_BYTES, shared.data, shared.len,
                                        "secret", NULL, 0, s->schedule, err));
    if (ctx->nk > 0)
        HUSH_TRY(hush__hpke_labeled_expand(suite_id, HPKE_SUITE_ID_BYTES, s->schedule, "key",
                                           &ks_context, 1, s->key, ctx->nk, err));
    if (ctx->nn > 0)
        HUSH_TRY(hush__hpke_labeled_expand(suite_id, HPKE_SUITE_ID_BYTES, s->schedule,
                                           "base_nonce", &ks_context, 1, s->base_nonce, ctx->nn,
                                           err));
    HUSH_TRY(hush__hpke_labeled_expand(suite_id, HPKE_SUITE_ID_BYTES, s->schedule, "exp",
                                       &ks_context, 1, s->exporter_secret, ctx->nh, err));
cleanup:
    return status;
}

/* The one-stage KDF's schedule (draft-ietf-hpke-pq, from
 * draft-ietf-hpke-hpke): LabeledDerive(secrets, "secret", context,
 * Nk + Nn + Nh) with secrets = len(psk) || psk || len(ss) || ss and
 * context = mode || len(psk_id) || psk_id || len(info) || info. */
HUSH_MUST_USE
static hush_status schedule_one_stage(hush_hpke_ctx *ctx, const unsigned char *suite_id,
                                      const void *info, size_t info_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    ctx_secrets *s = ctx->secrets;
    unsigned char psk_len[2], ss_len[2], psk_id_len[2], info_len_bytes[2];
    unsigned char mode = HPKE_MODE_BASE;

    put_u16(psk_len, 0);
    put_u16(ss_len, HUSH_HPKE_SECRET_BYTES);
    put_u16(psk_id_len, 0);
    put_u16(info_len_bytes, info_len);
    const hush__span secrets[3] = {
        {psk_len, 2}, {ss_len, 2}, {s->shared_secret, HUSH_HPKE_SECRET_BYTES}};
    const hush__span context[4] = {
        {&mode, 1}, {psk_id_len, 2}, {info_len_bytes, 2}, {info, info_len}};
    size_t total = ctx->nk + ctx->nn + ctx->nh;

    HUSH_TRY(hush__hpke_labeled_derive(suite_id, HPKE_SUITE_ID_BYTES, secrets, 3, "secret",
                                       context, 4, s->schedule, total, err));
    memcpy(s->key, s->schedule, ctx->nk);
    memcpy(s->base_nonce, s->schedule + ctx->nk, ctx->nn);
    memcpy(s->exporter_secret, s->schedule + ctx->nk + ctx->nn, ctx->nh);
cleanup:
    return status;
}

/* A context for `suite` whose shared secret the caller writes into
 * (*out)->secrets->shared_secret before calling key_schedule. */
HUSH_MUST_USE
static hush_status ctx_new(hush_hpke_suite suite, bool sender, hush_hpke_ctx **out,
                           hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = calloc(1, sizeof *ctx);
    HUSH_ENSURE(ctx != NULL, HUSH_E_NOMEM, "out of memory");
    ctx->suite = suite;
    ctx->sender = sender;
    ctx->nk = export_only(suite) ? 0 : HPKE_KEY_BYTES;
    ctx->nn = export_only(suite) ? 0 : HPKE_NONCE_BYTES;
    ctx->nh = one_stage(suite) ? HUSH_HPKE_SHAKE256_NH : HUSH_HPKE_SECRET_BYTES;
    HUSH_TRY(hush__secret_block_new(sizeof(ctx_secrets), &ctx->secrets_block, err));
    ctx->secrets = ctx->secrets_block.data;
    *out = ctx;
    ctx = NULL;
cleanup:
    hush_hpke_ctx_free(ctx);
    return status;
}

/* KeySchedule over the shared secret already in the context; the shared
 * secret and the intermediate are wiped once the outputs exist. */
HUSH_MUST_USE
static hush_status key_schedule(hush_hpke_ctx *ctx, const void *info, size_t info_len,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char suite_id[HPKE_SUITE_ID_BYTES];
    hpke_suite_id(ctx->suite, suite_id);
    if (one_stage(ctx->suite))
        HUSH_TRY(schedule_one_stage(ctx, suite_id, info, info_len, err));
    else
        HUSH_TRY(schedule_two_stage(ctx, suite_id, info, info_len, err));
cleanup:
    hush_memzero(ctx->secrets->shared_secret, sizeof ctx->secrets->shared_secret);
    hush_memzero(ctx->secrets->schedule, sizeof ctx->secrets->schedule);
    return status;
}

/* ---- setup ------------------------------------------------------------- */

HUSH_MUST_USE
static hush_status check_setup(hush_hpke_suite suite, uint16_t key_kem, const void *info,
                               size_t info_len, const char *function, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_hpke_suite_check(suite, err));
    HUSH_ENSURE(key_kem == suite.kem_id, HUSH_E_ARGUMENT,
                "%s: the key is for KEM 0x%04x, the suite's KEM is 0x%04x", function,
                (unsigned)key_kem, (unsigned)suite.kem_id);
    HUSH_ENSURE(info != NULL || info_len == 0, HUSH_E_ARGUMENT, "%s: info is NULL", function);
    HUSH_ENSURE(info_len <= HUSH_HPKE_MAX_INFO_BYTES, HUSH_E_LIMIT,
                "%s: info of %zu bytes exceeds %u", function, info_len, HUSH_HPKE_MAX_INFO_BYTES);
cleanup:
    return status;
}

/* SetupBaseS, with the KEM's randomness given (ikmE) or fresh (NULL). */
HUSH_MUST_USE
static hush_status setup_sender(hush_hpke_suite suite, const hush_hpke_pubkey *pkR,
                                const void *ikmE, size_t ikmE_len, const void *info,
                                size_t info_len, unsigned char *enc, size_t enc_cap,
                                size_t *enc_len, hush_hpke_ctx **out, const char *function,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = NULL;
    size_t need = 0;

    HUSH_ENSURE(pkR != NULL && enc != NULL && enc_len != NULL && out != NULL, HUSH_E_ARGUMENT,
                "%s: NULL argument", function);
    *out = NULL;
    *enc_len = 0;
    HUSH_TRY(check_setup(suite, hush_hpke_pubkey_kem(pkR), info, info_len, function, err));
    need = hush_hpke_kem_enc_bytes(suite.kem_id);
    HUSH_ENSURE(enc_cap >= need, HUSH_E_ARGUMENT, "%s: enc capacity %zu is too small for %zu",
                function, enc_cap, need);
    HUSH_TRY(hush__init(err));
    HUSH_TRY(ctx_new(suite, true, &ctx, err));
    HUSH_TRY(hush__hpke_encap(pkR, ikmE, ikmE_len, enc, ctx->secrets->shared_secret, err));
    HUSH_TRY(key_schedule(ctx, info, info_len, err));
    *enc_len = need;
    *out = ctx;
    ctx = NULL;
cleanup:
    hush_hpke_ctx_free(ctx);
    return status;
}

hush_status hush_hpke_setup_base_s(hush_hpke_suite suite, const hush_hpke_pubkey *pkR,
                                   const void *info, size_t info_len, unsigned char *enc,
                                   size_t enc_cap, size_t *enc_len, hush_hpke_ctx **out,
                                   hush_error *err)
{
    return setup_sender(suite, pkR, NULL, 0, info, info_len, enc, enc_cap, enc_len, out,
                        "hush_hpke_setup_base_s", err);
}

hush_status hush_hpke_setup_base_s_derand(hush_hpke_suite suite, const hush_hpke_pubkey *pkR,
                                          const void *ikmE, size_t ikmE_len, const void *info,
                                          size_t info_len, unsigned char *enc, size_t enc_cap,
                                          size_t *enc_len, hush_hpke_ctx **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(ikmE != NULL, HUSH_E_ARGUMENT, "hush_hpke_setup_base_s_derand: ikmE is NULL");
    HUSH_TRY(setup_sender(suite, pkR, ikmE, ikmE_len, info, info_len, enc, enc_cap, enc_len, out,
                          "hush_hpke_setup_base_s_derand", err));
cleanup:
    return status;
}

hush_status hush_hpke_setup_base_r(hush_hpke_suite suite, const hush_hpke_keypair *skR,
                                   const void *enc, size_t enc_len, const void *info,
                                   size_t info_len, hush_hpke_ctx **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = NULL;

    HUSH_ENSURE(skR != NULL && enc != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_setup_base_r: NULL argument");
    *out = NULL;
    HUSH_TRY(check_setup(suite, hush_hpke_keypair_kem(skR), info, info_len,
                         "hush_hpke_setup_base_r", err));
    HUSH_TRY(hush__init(err));
    HUSH_TRY(ctx_new(suite, false, &ctx, err));
    HUSH_TRY(hush__hpke_decap(skR, enc, enc_len, ctx->secrets->shared_secret, err));
    HUSH_TRY(key_schedule(ctx, info, info_len, err));
    *out = ctx;
    ctx = NULL;
cleanup:
    hush_hpke_ctx_free(ctx);
    return status;
}

/* ---- seal and open ----------------------------------------------------- */

/* base_nonce XOR I2OSP(seq, Nn). */
static void message_nonce(const hush_hpke_ctx *ctx, unsigned char nonce[HPKE_NONCE_BYTES])
{
    memcpy(nonce, ctx->secrets->base_nonce, HPKE_NONCE_BYTES);
    for (size_t i = 0; i < 8; i++)
        nonce[HPKE_NONCE_BYTES - 1 - i] ^= (unsigned char)(ctx->seq >> (8 * i));
}

/* The checks Seal and Open share: the role, an AEAD to use, a sequence
 * number left to spend. */
HUSH_MUST_USE
static hush_status check_message_call(const hush_hpke_ctx *ctx, bool sealing,
                                      const char *function, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(ctx != NULL, HUSH_E_ARGUMENT, "%s: ctx is NULL", function);
    HUSH_ENSURE(ctx->sender == sealing, HUSH_E_ARGUMENT, "%s: the context is a %s's", function,
                ctx->sender ? "sender" : "recipient");
    HUSH_ENSURE(!export_only(ctx->suite), HUSH_E_UNSUPPORTED,
                "%s: the suite's AEAD is export-only", function);
    /* RFC 9180 §5.2 stops at 2^96 - 1 messages; our counter at 2^64 - 1. */
    HUSH_ENSURE(ctx->seq != UINT64_MAX, HUSH_E_LIMIT, "%s: the sequence number is exhausted",
                function);
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status aead_seal(const hush_hpke_ctx *ctx, const unsigned char *aad, size_t aad_len,
                             const unsigned char *pt, size_t pt_len, unsigned char *ct,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *c = NULL;
    unsigned char nonce[HPKE_NONCE_BYTES];
    int n = 0;

    message_nonce(ctx, nonce);
    HUSH_OSSL((c = EVP_CIPHER_CTX_new()) != NULL, "creating a cipher context");
    HUSH_OSSL(EVP_EncryptInit_ex(c, aead_cipher(ctx->suite), NULL, ctx->secrets->key, nonce) == 1,
              "AEAD init");
    HUSH_OSSL(aad_len == 0 || EVP_EncryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1, "AEAD aad");
    HUSH_OSSL(pt_len == 0 || EVP_EncryptUpdate(c, ct, &n, pt, (int)pt_len) == 1, "AEAD encrypt");
    HUSH_OSSL(EVP_EncryptFinal_ex(c, ct + pt_len, &n) == 1, "AEAD final");
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, HUSH_HPKE_TAG_BYTES, ct + pt_len) == 1,
              "AEAD tag");
cleanup:
    EVP_CIPHER_CTX_free(c);
    return status;
}

/* Decrypt into `pt`; any failure is HUSH_E_AUTH (an OpenSSL one as well:
 * one opaque answer for every open that does not succeed). */
HUSH_MUST_USE
static hush_status aead_open(const hush_hpke_ctx *ctx, const unsigned char *aad, size_t aad_len,
                             const unsigned char *ct, size_t pt_len, unsigned char *pt,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *c = NULL;
    unsigned char nonce[HPKE_NONCE_BYTES];
    unsigned char tag[HUSH_HPKE_TAG_BYTES];
    unsigned char final_block[HUSH_HPKE_TAG_BYTES]; /* an AEAD's final writes nothing */
    int n = 0;

    message_nonce(ctx, nonce);
    memcpy(tag, ct + pt_len, sizeof tag);
    bool opened =
        (c = EVP_CIPHER_CTX_new()) != NULL &&
        EVP_DecryptInit_ex(c, aead_cipher(ctx->suite), NULL, ctx->secrets->key, nonce) == 1 &&
        (aad_len == 0 || EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1) &&
        (pt_len == 0 || EVP_DecryptUpdate(c, pt, &n, ct, (int)pt_len) == 1) &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, sizeof tag, tag) == 1 &&
        EVP_DecryptFinal_ex(c, final_block, &n) == 1;
    if (!opened) {
        ERR_clear_error();
        HUSH_BAIL(HUSH_E_AUTH, "authentication failed");
    }
cleanup:
    EVP_CIPHER_CTX_free(c);
    return status;
}

hush_status hush_hpke_seal(hush_hpke_ctx *ctx, const void *aad, size_t aad_len, const void *pt,
                           size_t pt_len, unsigned char *ct, size_t ct_cap, size_t *ct_len,
                           hush_error *err)
{
    hush_status status = HUSH_OK;
    if (ct_len != NULL)
        *ct_len = 0;
    HUSH_TRY(check_message_call(ctx, true, "hush_hpke_seal", err));
    HUSH_ENSURE((aad != NULL || aad_len == 0) && (pt != NULL || pt_len == 0) && ct != NULL &&
                    ct_len != NULL,
                HUSH_E_ARGUMENT, "hush_hpke_seal: NULL argument");
    HUSH_ENSURE(pt_len <= HPKE_MAX_MESSAGE && aad_len <= INT_MAX, HUSH_E_LIMIT,
                "hush_hpke_seal: plaintext or aad longer than %zu bytes", HPKE_MAX_MESSAGE);
    HUSH_ENSURE(ct_cap >= pt_len + HUSH_HPKE_TAG_BYTES, HUSH_E_ARGUMENT,
                "hush_hpke_seal: ct capacity %zu is too small for %zu", ct_cap,
                pt_len + HUSH_HPKE_TAG_BYTES);
    HUSH_TRY(aead_seal(ctx, aad, aad_len, pt, pt_len, ct, err));
    ctx->seq++;
    *ct_len = pt_len + HUSH_HPKE_TAG_BYTES;
cleanup:
    return status;
}

hush_status hush_hpke_open(hush_hpke_ctx *ctx, const void *aad, size_t aad_len, const void *ct,
                           size_t ct_len, unsigned char *pt, size_t pt_cap, size_t *pt_len,
                           hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = 0;
    if (pt_len != NULL)
        *pt_len = 0;
    HUSH_TRY(check_message_call(ctx, false, "hush_hpke_open", err));
    HUSH_ENSURE((aad != NULL || aad_len == 0) && (ct != NULL || ct_len == 0) && pt_len != NULL,
                HUSH_E_ARGUMENT, "hush_hpke_open: NULL argument");
    HUSH_ENSURE(ct_len >= HUSH_HPKE_TAG_BYTES, HUSH_E_AUTH, "authentication failed");
    len = ct_len - HUSH_HPKE_TAG_BYTES;
    HUSH_ENSURE(pt != NULL || len == 0, HUSH_E_ARGUMENT, "hush_hpke_open: pt is NULL");
    HUSH_ENSURE(len <= HPKE_MAX_MESSAGE && aad_len <= INT_MAX, HUSH_E_LIMIT,
                "hush_hpke_open: ciphertext or aad longer than %zu bytes", HPKE_MAX_MESSAGE);
    HUSH_ENSURE(pt_cap >= len, HUSH_E_ARGUMENT, "hush_hpke_open: pt capacity %zu is too small for %zu",
                pt_cap, len);
    HUSH_TRY(aead_open(ctx, aad, aad_len, ct, len, pt, err));
    ctx->seq++;
    *pt_len = len;
cleanup:
    if (status == HUSH_E_AUTH && pt != NULL)
        hush_memzero(pt, len); /* nothing unauthenticated is left behind */
    return status;
}

/* ---- export ------------------------------------------------------------ */

hush_status hush_hpke_export(const hush_hpke_ctx *ctx, const void *exporter_context,
                             size_t context_len, unsigned char *out, size_t out_len,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char suite_id[HPKE_SUITE_ID_BYTES];
    const hush__span context = {exporter_context, context_len};

    HUSH_ENSURE(ctx != NULL && (exporter_context != NULL || context_len == 0) &&
                    (out != NULL || out_len == 0),
                HUSH_E_ARGUMENT, "hush_hpke_export: NULL argument");
    HUSH_ENSURE(out_len <= HUSH_HPKE_MAX_EXPORT_BYTES, HUSH_E_LIMIT,
                "hush_hpke_export: %zu bytes exceed the limit of %u", out_len,
                HUSH_HPKE_MAX_EXPORT_BYTES);
    hpke_suite_id(ctx->suite, suite_id);
    if (one_stage(ctx->suite))
        HUSH_TRY(hush__hpke_labeled_derive(suite_id, sizeof suite_id,
                                           &(hush__span){ctx->secrets->exporter_secret, ctx->nh},
                                           1, "sec", &context, 1, out, out_len, err));
    else
        HUSH_TRY(hush__hpke_labeled_expand(suite_id, sizeof suite_id,
                                           ctx->secrets->exporter_secret, "sec", &context, 1, out,
                                           out_len, err));
cleanup:
    return status;
}

void hush__hpke_ctx_set_seq(hush_hpke_ctx *ctx, uint64_t seq) { ctx->seq = seq; }

hush_hpke_suite hush_hpke_ctx_suite(const hush_hpke_ctx *ctx)
{
    hush_hpke_suite none = {0, 0, 0};
    return ctx != NULL ? ctx->suite : none;
}

void hush_hpke_ctx_free(hush_hpke_ctx *ctx)
{
    if (ctx == NULL)
        return;
    hush__secret_block_free(&ctx->secrets_block); /* zeroes every secret */
    free(ctx);
}
