/* envelope_v2.c — protocol v2's bodies: a request sealed into EHBP frames
 * under one HPKE context, the answer under keys derived from that context's
 * export (EHBP §4.4), and one incremental opener for both directions that
 * appends a frame's plaintext only after its tag checked. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hushcall/envelope_v2.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"

#define AUTH_FAILED "decryption failed: the body is not authentic for this exchange"
#define AEAD_NONCE_BYTES 12u
#define AEAD_KEY_BYTES 32u
#define EXPORT_BYTES 32u /* Nk of both AEADs */

#define EHBP_INFO "ehbp request"
#define EHBP_EXPORT_LABEL "ehbp response"
#define PQ_INFO "hushcall-v2 request"
#define PQ_EXPORT_LABEL "hushcall-v2 response"
#define PQ_INFO_BYTES (sizeof PQ_INFO + HUSH_V2_HDR_BYTES) /* the label, 0x00, hdr */
/* EVP lengths are ints, and a frame's length field is 32 bits: one cap for both. */
#define MAX_FRAME_CT_BYTES ((size_t)INT32_MAX)

struct hush_v2_exchange {
    hush_hpke_suite suite;
    uint8_t key_id;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len;
    hush__secret_block secret; /* Export(label, 32) */
};

/* The answer's AEAD key and nonce base, in secure memory. */
typedef struct response_keys {
    unsigned char key[AEAD_KEY_BYTES];
    unsigned char nonce[AEAD_NONCE_BYTES];
} response_keys;

struct hush_v2_opener {
    bool response;
    bool failed;
    hush_v2_limits limits;
    hush_secbuf *out;
    size_t out_start; /* out's length before this body */
    size_t total;
    unsigned char prefix[HUSH_V2_FRAME_PREFIX_BYTES];
    size_t prefix_have;
    size_t frame_len; /* of the frame being read, once its prefix is in */
    unsigned char *frame; /* a frame split across feeds (ciphertext) */
    size_t frame_have, frame_cap;
    /* request: one context per candidate key until a frame picks one */
    hush_hpke_ctx **ctxs;
    size_t n_ctxs, chosen;
    bool named; /* the request named its config (hdr) */
    hush_v2_exchange *ex;
    /* response */
    uint16_t aead_id;
    hush__secret_block keys; /* one response_keys */
    uint64_t seq;
};

/* ---- suites ---------------------------------------------------------------- */

static bool suite_is_pq(hush_hpke_suite suite) { return suite.kem_id == HUSH_HPKE_KEM_XWING; }

/* EHBP's suite exactly for X25519; X-Wing with HKDF-SHA256 and either AEAD. */
HUSH_MUST_USE
static hush_status check_v2_suite(hush_hpke_suite suite, hush_error *err)
{
    hush_status status = HUSH_OK;
    bool ehbp = suite.kem_id == HUSH_HPKE_KEM_X25519_SHA256 &&
                suite.aead_id == HUSH_HPKE_AEAD_AES_256_GCM;
    bool pq = suite.kem_id == HUSH_HPKE_KEM_XWING &&
              (suite.aead_id == HUSH_HPKE_AEAD_AES_256_GCM ||
               suite.aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305);
    HUSH_ENSURE((ehbp || pq) && suite.kdf_id == HUSH_HPKE_KDF_HKDF_SHA256, HUSH_E_UNSUPPORTED,
                "v2 suite 0x%04x/0x%04x/0x%04x not spoken", suite.kem_id, suite.kdf_id,
                suite.aead_id);
cleanup:
    return status;
}

/* The request's HPKE info into `info` (room for PQ_INFO_BYTES). */
static size_t request_info(hush_hpke_suite suite, uint8_t key_id, unsigned char *info)
{
    if (!suite_is_pq(suite)) {
        memcpy(info, EHBP_INFO, strlen(EHBP_INFO));
        return strlen(EHBP_INFO);
    }
    memcpy(info, PQ_INFO, sizeof PQ_INFO); /* with its NUL: the 0x00 separator */
    hush_v2_hdr_encode(key_id, suite, info + sizeof PQ_INFO);
    return PQ_INFO_BYTES;
}

static const char *export_label(hush_hpke_suite suite)
{
    return suite_is_pq(suite) ? PQ_EXPORT_LABEL : EHBP_EXPORT_LABEL;
}

static void put_u32(unsigned char out[4], size_t value)
{
    out[0] = (unsigned char)(value >> 24);
    out[1] = (unsigned char)(value >> 16);
    out[2] = (unsigned char)(value >> 8);
    out[3] = (unsigned char)value;
}

static hush_v2_limits effective_limits(const hush_v2_limits *given)
{
    hush_v2_limits l = {HUSH_V2_DEFAULT_MAX_FRAME_BYTES, HUSH_V2_DEFAULT_MAX_TOTAL_BYTES};
    if (given != NULL && given->max_frame_bytes != 0)
        l.max_frame_bytes = given->max_frame_bytes;
    if (given != NULL && given->max_total_bytes != 0)
        l.max_total_bytes = given->max_total_bytes;
    return l;
}

/* ---- exchanges ---------------------------------------------------------------- */

HUSH_MUST_USE
static hush_status exchange_new(hush_hpke_suite suite, uint8_t key_id, hush_v2_exchange **out,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_exchange *ex = calloc(1, sizeof *ex);

    HUSH_ENSURE(ex != NULL, HUSH_E_NOMEM, "out of memory for a v2 exchange");
    ex->suite = suite;
    ex->key_id = key_id;
    HUSH_TRY(hush__secret_block_new(EXPORT_BYTES, &ex->secret, err));
    *out = ex;
    ex = NULL;
cleanup:
    hush_v2_exchange_free(ex);
    return status;
}

/* Take the context's export into the exchange (the context can go then). */
HUSH_MUST_USE
static hush_status exchange_export(hush_v2_exchange *ex, const hush_hpke_ctx *ctx, hush_error *err)
{
    const char *label = export_label(ex->suite);
    return hush_hpke_export(ctx, label, strlen(label), ex->secret.data, EXPORT_BYTES, err);
}

hush_hpke_suite hush_v2_exchange_suite(const hush_v2_exchange *ex)
{
    hush_hpke_suite none = {0, 0, 0};
    return ex != NULL ? ex->suite : none;
}

uint8_t hush_v2_exchange_key_id(const hush_v2_exchange *ex) { return ex != NULL ? ex->key_id : 0; }

const unsigned char *hush_v2_exchange_enc(const hush_v2_exchange *ex, size_t *len)
{
    if (len != NULL)
        *len = ex != NULL ? ex->enc_len : 0;
    return ex != NULL ? ex->enc : NULL;
}

void hush_v2_exchange_digest(const hush_v2_exchange *ex, unsigned char out[HUSH_V2_DIGEST_BYTES])
{
    unsigned int n = 0;
    /* SHA-256 of public bytes cannot fail short of a broken OpenSSL; a
     * zeroed digest then matches nothing a real enc has. */
    if (ex == NULL || hush__init(NULL) != HUSH_OK ||
        EVP_Digest(ex->enc, ex->enc_len, out, &n, hush__sha256(), NULL) != 1)
        memset(out, 0, HUSH_V2_DIGEST_BYTES);
}

void hush_v2_exchange_free(hush_v2_exchange *ex)
{
    if (ex == NULL)
        return;
    hush__secret_block_free(&ex->secret);
    free(ex);
}

/* ---- the answer's keys (EHBP §4.4: plain HKDF-SHA256, not HPKE-labeled) ---- */

/* HKDF-Expand(prk, label, L) for L <= 32: one block, T(1). */
HUSH_MUST_USE
static hush_status expand_one(const unsigned char *prk, const char *label, unsigned char *out,
                              size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    static const unsigned char one = 1;
    hush__span parts[] = {{label, strlen(label)}, {&one, 1}};
    unsigned char block[HUSH_HPKE_SECRET_BYTES];

    HUSH_TRY(hush__hmac_sha256(prk, HUSH_HPKE_SECRET_BYTES, parts, 2, block, err));
    memcpy(out, block, len);
cleanup:
    hush_memzero(block, sizeof block);
    return status;
}

/* prk = HKDF-Extract(enc || nonce, secret); key and nonce base from it. */
HUSH_MUST_USE
static hush_status derive_response_keys(const hush_v2_exchange *ex,
                                        const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        hush__secret_block *keys, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char salt[HUSH_HPKE_MAX_ENC_BYTES + HUSH_V2_RESPONSE_NONCE_BYTES];
    hush__span secret = {ex->secret.data, EXPORT_BYTES};
    hush__secret_block prk = {0};
    response_keys *k;

    memcpy(salt, ex->enc, ex->enc_len);
    memcpy(salt + ex->enc_len, nonce, HUSH_V2_RESPONSE_NONCE_BYTES);
    HUSH_TRY(hush__secret_block_new(HUSH_HPKE_SECRET_BYTES, &prk, err));
    HUSH_TRY(hush__secret_block_new(sizeof(response_keys), keys, err));
    HUSH_TRY(hush__hmac_sha256(salt, ex->enc_len + HUSH_V2_RESPONSE_NONCE_BYTES, &secret, 1,
                               prk.data, err));
    k = keys->data;
    HUSH_TRY(expand_one(prk.data, "key", k->key, sizeof k->key, err));
    HUSH_TRY(expand_one(prk.data, "nonce", k->nonce, sizeof k->nonce, err));
cleanup:
    hush__secret_block_free(&prk);
    if (status != HUSH_OK)
        hush__secret_block_free(keys);
    return status;
}

static const EVP_CIPHER *aead_cipher(uint16_t aead_id)
{
    return aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305 ? EVP_chacha20_poly1305()
                                                       : hush__aes_256_gcm();
}

/* nonce base XOR I2OSP(seq, 12) */
static void frame_nonce(const response_keys *k, uint64_t seq, unsigned char out[AEAD_NONCE_BYTES])
{
    memcpy(out, k->nonce, AEAD_NONCE_BYTES);
    for (size_t i = 0; i < 8; i++)
        out[AEAD_NONCE_BYTES - 1 - i] ^= (unsigned char)(seq >> (8 * i));
}

/* One response frame: pt (len > 0, at most a frame's size) into ct || tag. */
HUSH_MUST_USE
static hush_status response_frame_seal(uint16_t aead_id, const response_keys *k, uint64_t seq,
                                       const unsigned char *pt, size_t len, unsigned char *ct,
                                       hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char nonce[AEAD_NONCE_BYTES];
    int outl = 0;

    frame_nonce(k, seq, nonce);
    HUSH_OSSL(ctx != NULL, "AEAD context");
    HUSH_OSSL(EVP_EncryptInit_ex(ctx, aead_cipher(aead_id), NULL, k->key, nonce) == 1,
              "AEAD init");
    HUSH_OSSL(EVP_EncryptUpdate(ctx, ct, &outl, pt, (int)len) == 1, "AEAD encrypt");
    HUSH_OSSL(EVP_EncryptFinal_ex(ctx, ct + outl, &outl) == 1, "AEAD final");
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, HUSH_HPKE_TAG_BYTES, ct + len) == 1,
              "AEAD tag");
cleanup:
    EVP_CIPHER_CTX_free(ctx);
    return status;
}

/* One response frame's ct || tag into pt; HUSH_E_AUTH (pt zeroed) unless
 * the tag checks. */
HUSH_MUST_USE
static hush_status response_frame_open(uint16_t aead_id, const response_keys *k, uint64_t seq,
                                       const unsigned char *ct, size_t ct_len, unsigned char *pt,
                                       hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char nonce[AEAD_NONCE_BYTES];
    size_t len = ct_len - HUSH_HPKE_TAG_BYTES;
    int outl = 0;

    frame_nonce(k, seq, nonce);
    HUSH_OSSL(ctx != NULL, "AEAD context");
    HUSH_OSSL(EVP_DecryptInit_ex(ctx, aead_cipher(aead_id), NULL, k->key, nonce) == 1,
              "AEAD init");
    HUSH_OSSL(EVP_DecryptUpdate(ctx, pt, &outl, ct, (int)len) == 1, "AEAD decrypt");
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, HUSH_HPKE_TAG_BYTES,
                                  (void *)(ct + len)) == 1,
              "AEAD tag");
    HUSH_ENSURE(EVP_DecryptFinal_ex(ctx, pt + outl, &outl) == 1, HUSH_E_AUTH, AUTH_FAILED);
cleanup:
    if (status != HUSH_OK)
        hush_memzero(pt, len);
    EVP_CIPHER_CTX_free(ctx);
    return status;
}

/* ---- sealing ---------------------------------------------------------------- */

/* Reserve one frame of `len` plaintext in `frames`: its prefix is written,
 * *ct points where its ciphertext goes. */
HUSH_MUST_USE
static hush_status frame_reserve(hush_secbuf *frames, size_t len, unsigned char **ct,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t ct_len = len + HUSH_HPKE_TAG_BYTES;
    size_t at = hush_secbuf_len(frames);

    HUSH_TRY(hush_secbuf_reserve(frames, HUSH_V2_FRAME_PREFIX_BYTES + ct_len, err));
    put_u32(hush_secbuf_data(frames) + at, ct_len);
    HUSH_TRY(hush_secbuf_set_len(frames, at + HUSH_V2_FRAME_PREFIX_BYTES + ct_len, err));
    *ct = hush_secbuf_data(frames) + at + HUSH_V2_FRAME_PREFIX_BYTES;
cleanup:
    return status;
}

static size_t frame_size(size_t frame_bytes)
{
    return frame_bytes != 0 ? frame_bytes : HUSH_V2_DEFAULT_FRAME_BYTES;
}

HUSH_MUST_USE
static hush_status request_seal(const hush_v2_keyconfig *cfg, size_t cipher, const void *ikmE,
                                size_t ikmE_len, const unsigned char *body, size_t len,
                                size_t frame_bytes, hush_secbuf *frames,
                                unsigned char hdr[HUSH_V2_HDR_BYTES], hush_v2_exchange **exchange,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_exchange *ex = NULL;
    hush_hpke_ctx *ctx = NULL;
    hush_hpke_suite suite;
    unsigned char info[PQ_INFO_BYTES], *ct;
    size_t info_len, start = 0, chunk = frame_size(frame_bytes), ct_len = 0;

    HUSH_ENSURE(cfg != NULL && cfg->pubkey != NULL && frames != NULL && exchange != NULL &&
                    (body != NULL || len == 0),
                HUSH_E_ARGUMENT, "hush_v2_request_seal: NULL argument");
    *exchange = NULL;
    start = hush_secbuf_len(frames);
    HUSH_ENSURE(cipher < cfg->n_ciphers, HUSH_E_ARGUMENT, "cipher %zu not in the config", cipher);
    HUSH_ENSURE(chunk <= MAX_FRAME_CT_BYTES - HUSH_HPKE_TAG_BYTES, HUSH_E_ARGUMENT,
                "frame size too large");
    suite = (hush_hpke_suite){hush_hpke_pubkey_kem(cfg->pubkey), cfg->ciphers[cipher].kdf_id,
                              cfg->ciphers[cipher].aead_id};
    HUSH_TRY(check_v2_suite(suite, err));
    HUSH_TRY(exchange_new(suite, cfg->key_id, &ex, err));
    info_len = request_info(suite, cfg->key_id, info);
    if (ikmE == NULL)
        HUSH_TRY(hush_hpke_setup_base_s(suite, cfg->pubkey, info, info_len, ex->enc,
                                        sizeof ex->enc, &ex->enc_len, &ctx, err));
    else
        HUSH_TRY(hush_hpke_setup_base_s_derand(suite, cfg->pubkey, ikmE, ikmE_len, info, info_len,
                                               ex->enc, sizeof ex->enc, &ex->enc_len, &ctx, err));
    for (size_t done = 0; done < len; done += chunk) {
        size_t n = len - done < chunk ? len - done : chunk;
        HUSH_TRY(frame_reserve(frames, n, &ct, err));
        HUSH_TRY(hush_hpke_seal(ctx, NULL, 0, body + done, n, ct, n + HUSH_HPKE_TAG_BYTES, &ct_len,
                                err));
    }
    HUSH_TRY(exchange_export(ex, ctx, err));
    if (hdr != NULL)
        hush_v2_hdr_encode(cfg->key_id, suite, hdr);
    *exchange = ex;
    ex = NULL;
cleanup:
    hush_hpke_ctx_free(ctx);
    hush_v2_exchange_free(ex);
    if (status != HUSH_OK && frames != NULL)
        HUSH_IGNORE(hush_secbuf_set_len(frames, start, NULL)); /* shrinking cannot fail */
    return status;
}

hush_status hush_v2_request_seal(const hush_v2_keyconfig *cfg, size_t cipher, const void *body,
                                 size_t len, size_t frame_bytes, hush_secbuf *frames,
                                 unsigned char hdr[HUSH_V2_HDR_BYTES],
                                 hush_v2_exchange **exchange, hush_error *err)
{
    return request_seal(cfg, cipher, NULL, 0, body, len, frame_bytes, frames, hdr, exchange, err);
}

hush_status hush_v2_request_seal_derand(const hush_v2_keyconfig *cfg, size_t cipher,
                                        const void *ikmE, size_t ikmE_len, const void *body,
                                        size_t len, size_t frame_bytes, hush_secbuf *frames,
                                        unsigned char hdr[HUSH_V2_HDR_BYTES],
                                        hush_v2_exchange **exchange, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(ikmE != NULL, HUSH_E_ARGUMENT, "hush_v2_request_seal_derand: NULL ikmE");
    HUSH_TRY(request_seal(cfg, cipher, ikmE, ikmE_len, body, len, frame_bytes, frames, hdr,
                          exchange, err));
cleanup:
    return status;
}

/* `len` bytes of `body` sealed as frames of at most `chunk` plaintext,
 * numbered on from *seq, appended to `frames`. */
HUSH_MUST_USE
static hush_status response_frames_seal(uint16_t aead_id, const response_keys *k, uint64_t *seq,
                                        const unsigned char *pt, size_t len, size_t chunk,
                                        hush_secbuf *frames, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *ct;
    for (size_t done = 0; done < len; done += chunk, (*seq)++) {
        size_t n = len - done < chunk ? len - done : chunk;
        HUSH_TRY(frame_reserve(frames, n, &ct, err));
        HUSH_TRY(response_frame_seal(aead_id, k, *seq, pt + done, n, ct, err));
    }
cleanup:
    return status;
}

hush_status hush_v2_response_seal_with_nonce(const hush_v2_exchange *ex, const void *body,
                                             size_t len, size_t frame_bytes, hush_secbuf *frames,
                                             const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                             hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__secret_block keys = {0};
    size_t start = 0, chunk = frame_size(frame_bytes);
    uint64_t seq = 0;

    HUSH_ENSURE(ex != NULL && frames != NULL && nonce != NULL && (body != NULL || len == 0),
                HUSH_E_ARGUMENT, "hush_v2_response_seal: NULL argument");
    HUSH_ENSURE(chunk <= MAX_FRAME_CT_BYTES - HUSH_HPKE_TAG_BYTES, HUSH_E_ARGUMENT,
                "frame size too large");
    start = hush_secbuf_len(frames);
    HUSH_TRY(hush__init(err));
    HUSH_TRY(derive_response_keys(ex, nonce, &keys, err));
    HUSH_TRY(response_frames_seal(ex->suite.aead_id, keys.data, &seq, body, len, chunk, frames,
                                  err));
cleanup:
    hush__secret_block_free(&keys);
    if (status != HUSH_OK && frames != NULL)
        HUSH_IGNORE(hush_secbuf_set_len(frames, start, NULL)); /* shrinking cannot fail */
    return status;
}

hush_status hush_v2_response_seal(const hush_v2_exchange *ex, const void *body, size_t len,
                                  size_t frame_bytes, hush_secbuf *frames,
                                  unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(nonce != NULL, HUSH_E_ARGUMENT, "hush_v2_response_seal: NULL nonce");
    HUSH_TRY(hush__init(err));
    HUSH_OSSL(RAND_bytes(nonce, HUSH_V2_RESPONSE_NONCE_BYTES) == 1, "random response nonce");
    HUSH_TRY(hush_v2_response_seal_with_nonce(ex, body, len, frame_bytes, frames, nonce, err));
cleanup:
    return status;
}

/* ---- a streamed answer ---------------------------------------------------------- */

struct hush_v2_response_sealer {
    uint16_t aead_id;
    hush__secret_block keys; /* response_keys */
    uint64_t seq;            /* the next frame's number */
};

hush_status hush_v2_response_sealer_new(const hush_v2_exchange *ex,
                                        unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        hush_v2_response_sealer **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_response_sealer *s = NULL;
    HUSH_ENSURE(ex != NULL && nonce != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_v2_response_sealer_new: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE((s = calloc(1, sizeof *s)) != NULL, HUSH_E_NOMEM, "out of memory");
    s->aead_id = ex->suite.aead_id;
    HUSH_OSSL(RAND_bytes(nonce, HUSH_V2_RESPONSE_NONCE_BYTES) == 1, "random response nonce");
    HUSH_TRY(derive_response_keys(ex, nonce, &s->keys, err));
    *out = s;
    s = NULL;
cleanup:
    hush_v2_response_sealer_free(s);
    return status;
}

hush_status hush_v2_response_sealer_seal(hush_v2_response_sealer *sealer, const void *body,
                                         size_t len, hush_secbuf *frames, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t start = 0;
    HUSH_ENSURE(sealer != NULL && frames != NULL && (body != NULL || len == 0),
                HUSH_E_ARGUMENT, "hush_v2_response_sealer_seal: NULL argument");
    start = hush_secbuf_len(frames);
    HUSH_TRY(response_frames_seal(sealer->aead_id, sealer->keys.data, &sealer->seq, body, len,
                                  HUSH_V2_DEFAULT_FRAME_BYTES, frames, err));
cleanup:
    if (status != HUSH_OK && frames != NULL)
        HUSH_IGNORE(hush_secbuf_set_len(frames, start, NULL)); /* shrinking cannot fail */
    return status;
}

void hush_v2_response_sealer_free(hush_v2_response_sealer *sealer)
{
    if (sealer == NULL)
        return;
    hush__secret_block_free(&sealer->keys);
    free(sealer);
}

/* ---- openers ------------------------------------------------------------------- */

HUSH_MUST_USE
static hush_status opener_new(bool response, const hush_v2_limits *limits, hush_secbuf *out,
                              hush_v2_opener **opener, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_opener *o = NULL;
    hush_v2_limits l = effective_limits(limits);

    HUSH_ENSURE(out != NULL && opener != NULL, HUSH_E_ARGUMENT, "v2 opener: NULL argument");
    *opener = NULL;
    HUSH_ENSURE(l.max_frame_bytes <= MAX_FRAME_CT_BYTES, HUSH_E_ARGUMENT,
                "max_frame_bytes over %zu", MAX_FRAME_CT_BYTES);
    HUSH_TRY(hush__init(err));
    o = calloc(1, sizeof *o);
    HUSH_ENSURE(o != NULL, HUSH_E_NOMEM, "out of memory for a v2 opener");
    o->response = response;
    o->limits = l;
    o->out = out;
    o->out_start = hush_secbuf_len(out);
    o->chosen = SIZE_MAX;
    *opener = o;
cleanup:
    return status;
}

hush_status hush_v2_response_opener_new(const hush_v2_exchange *ex,
                                        const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        const hush_v2_limits *limits, hush_secbuf *out,
                                        hush_v2_opener **opener, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_opener *o = NULL;

    HUSH_ENSURE(ex != NULL && nonce != NULL, HUSH_E_ARGUMENT,
                "hush_v2_response_opener_new: NULL argument");
    HUSH_TRY(opener_new(true, limits, out, &o, err));
    HUSH_TRY(derive_response_keys(ex, nonce, &o->keys, err));
    o->aead_id = ex->suite.aead_id;
    *opener = o;
    o = NULL;
cleanup:
    hush_v2_opener_free(o);
    return status;
}

hush_status hush_v2_request_opener_new(const unsigned char *hdr, const unsigned char *enc,
                                       size_t enc_len, hush_hpke_keypair *const *keys,
                                       size_t count, const hush_v2_limits *limits,
                                       hush_secbuf *out, hush_v2_opener **opener,
                                       hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_opener *o = NULL;
    hush_hpke_suite suite = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KDF_HKDF_SHA256,
                             HUSH_HPKE_AEAD_AES_256_GCM};
    uint8_t key_id = 0;
    unsigned char info[PQ_INFO_BYTES];
    size_t info_len;

    HUSH_ENSURE(enc != NULL && keys != NULL && count > 0, HUSH_E_ARGUMENT,
                "hush_v2_request_opener_new: NULL argument or no key");
    HUSH_ENSURE(hdr == NULL || count == 1, HUSH_E_ARGUMENT,
                "a request naming its config opens under that one key");
    HUSH_ENSURE(enc_len <= HUSH_HPKE_MAX_ENC_BYTES, HUSH_E_FORMAT,
                "Ehbp-Encapsulated-Key: too long");
    if (hdr != NULL)
        hush_v2_hdr_decode(hdr, &key_id, &suite);
    HUSH_TRY(check_v2_suite(suite, err));
    HUSH_TRY(opener_new(false, limits, out, &o, err));
    o->named = hdr != NULL;
    HUSH_TRY(exchange_new(suite, key_id, &o->ex, err));
    memcpy(o->ex->enc, enc, enc_len);
    o->ex->enc_len = enc_len;
    o->ctxs = calloc(count, sizeof *o->ctxs);
    HUSH_ENSURE(o->ctxs != NULL, HUSH_E_NOMEM, "out of memory for %zu contexts", count);
    o->n_ctxs = count;
    info_len = request_info(suite, key_id, info);
    for (size_t i = 0; i < count; i++) {
        HUSH_ENSURE(hush_hpke_keypair_kem(keys[i]) == suite.kem_id, HUSH_E_ARGUMENT,
                    "key %zu is not of the request's KEM", i);
        HUSH_TRY_AS(hush_hpke_setup_base_r(suite, keys[i], enc, enc_len, info, info_len,
                                           &o->ctxs[i], NULL),
                    HUSH_E_AUTH, AUTH_FAILED);
    }
    if (hdr != NULL)
        o->chosen = 0; /* named: a failure is the body's, not the key's */
    *opener = o;
    o = NULL;
cleanup:
    hush_v2_opener_free(o);
    return status;
}

/* Keep only the chosen context. */
static void keep_context(hush_v2_opener *o, size_t chosen)
{
    for (size_t i = 0; i < o->n_ctxs; i++)
        if (i != chosen) {
            hush_hpke_ctx_free(o->ctxs[i]);
            o->ctxs[i] = NULL;
        }
    o->chosen = chosen;
}

/* A request frame under the chosen context, or (the first one of an EHBP
 * request) under the first candidate it opens with. */
HUSH_MUST_USE
static hush_status request_frame_open(hush_v2_opener *o, const unsigned char *ct, size_t ct_len,
                                      unsigned char *pt, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t pt_len = 0;

    if (o->chosen != SIZE_MAX) {
        HUSH_TRY_AS(hush_hpke_open(o->ctxs[o->chosen], NULL, 0, ct, ct_len, pt, ct_len, &pt_len,
                                   NULL),
                    HUSH_E_AUTH, AUTH_FAILED);
        goto cleanup;
    }
    for (size_t i = 0; i < o->n_ctxs; i++)
        if (hush_hpke_open(o->ctxs[i], NULL, 0, ct, ct_len, pt, ct_len, &pt_len, NULL) == HUSH_OK) {
            keep_context(o, i);
            goto cleanup;
        }
    HUSH_BAIL(HUSH_E_KEY, "the request opens under none of the live keys");
cleanup:
    return status;
}

/* Open one whole frame (ct_len >= 1) and append its plaintext to out. */
HUSH_MUST_USE
static hush_status open_frame(hush_v2_opener *o, const unsigned char *ct, size_t ct_len,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t at = hush_secbuf_len(o->out), len;
    unsigned char *pt;

    if (ct_len < HUSH_HPKE_TAG_BYTES)
        HUSH_BAIL(HUSH_E_AUTH, AUTH_FAILED);
    len = ct_len - HUSH_HPKE_TAG_BYTES;
    HUSH_ENSURE(len <= o->limits.max_total_bytes - o->total, HUSH_E_LIMIT,
                "body over its limit of %zu bytes", o->limits.max_total_bytes);
    HUSH_TRY(hush_secbuf_reserve(o->out, len + HUSH_HPKE_TAG_BYTES, err));
    pt = hush_secbuf_data(o->out) + at;
    if (o->response)
        HUSH_TRY(response_frame_open(o->aead_id, o->keys.data, o->seq, ct, ct_len, pt,
                                     err));
    else
        HUSH_TRY(request_frame_open(o, ct, ct_len, pt, err));
    o->seq++;
    o->total += len;
    HUSH_TRY(hush_secbuf_set_len(o->out, at + len, err));
cleanup:
    return status;
}

/* After any failure: nothing of this body stays in out, and nothing more opens. */
static void opener_fail(hush_v2_opener *o)
{
    o->failed = true;
    HUSH_IGNORE(hush_secbuf_set_len(o->out, o->out_start, NULL)); /* shrinking wipes; cannot fail */
    if (o->frame != NULL)
        hush_memzero(o->frame, o->frame_cap);
}

/* Consume the 4-byte prefix from data; true once it is whole. */
static bool take_prefix(hush_v2_opener *o, const unsigned char **data, size_t *len)
{
    while (o->prefix_have < HUSH_V2_FRAME_PREFIX_BYTES && *len > 0) {
        o->prefix[o->prefix_have++] = **data;
        (*data)++;
        (*len)--;
    }
    if (o->prefix_have < HUSH_V2_FRAME_PREFIX_BYTES)
        return false;
    o->frame_len = (size_t)o->prefix[0] << 24 | (size_t)o->prefix[1] << 16 |
                   (size_t)o->prefix[2] << 8 | o->prefix[3];
    return true;
}

/* Collect the rest of a frame split across feeds. */
HUSH_MUST_USE
static hush_status buffer_frame(hush_v2_opener *o, const unsigned char **data, size_t *len,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t want = o->frame_len - o->frame_have, n = *len < want ? *len : want;

    if (o->frame_cap < o->frame_len) {
        unsigned char *bigger = realloc(o->frame, o->frame_len);
        HUSH_ENSURE(bigger != NULL, HUSH_E_NOMEM, "out of memory for a %zu-byte frame",
                    o->frame_len);
        o->frame = bigger;
        o->frame_cap = o->frame_len;
    }
    memcpy(o->frame + o->frame_have, *data, n);
    o->frame_have += n;
    *data += n;
    *len -= n;
cleanup:
    return status;
}

static void next_frame(hush_v2_opener *o)
{
    o->prefix_have = 0;
    o->frame_have = 0;
    o->frame_len = 0;
}

HUSH_MUST_USE
static hush_status feed(hush_v2_opener *o, const unsigned char *data, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;

    while (len > 0) {
        if (o->prefix_have < HUSH_V2_FRAME_PREFIX_BYTES) {
            if (!take_prefix(o, &data, &len))
                break;
            if (o->frame_len == 0) { /* zero-length frames carry nothing */
                next_frame(o);
                continue;
            }
            HUSH_ENSURE(o->frame_len <= o->limits.max_frame_bytes, HUSH_E_LIMIT,
                        "frame of %zu bytes over the limit of %zu", o->frame_len,
                        o->limits.max_frame_bytes);
        }
        if (o->frame_have == 0 && len >= o->frame_len) { /* whole in this slice */
            HUSH_TRY(open_frame(o, data, o->frame_len, err));
            data += o->frame_len;
            len -= o->frame_len;
            next_frame(o);
            continue;
        }
        HUSH_TRY(buffer_frame(o, &data, &len, err));
        if (o->frame_have == o->frame_len) {
            HUSH_TRY(open_frame(o, o->frame, o->frame_len, err));
            next_frame(o);
        }
    }
cleanup:
    return status;
}

hush_status hush_v2_opener_feed(hush_v2_opener *opener, const void *data, size_t len,
                                hush_error *err)
{
    hush_status status = HUSH_OK;

    HUSH_ENSURE(opener != NULL && (data != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_v2_opener_feed: NULL argument");
    HUSH_ENSURE(!opener->failed, HUSH_E_ARGUMENT, "the v2 opener failed before");
    HUSH_TRY(feed(opener, data, len, err));
cleanup:
    if (status != HUSH_OK && opener != NULL)
        opener_fail(opener);
    return status;
}

hush_status hush_v2_opener_finish(hush_v2_opener *opener, hush_v2_exchange **exchange,
                                  size_t *key_index, hush_error *err)
{
    hush_status status = HUSH_OK;

    HUSH_ENSURE_REF(opener, "hush_v2_opener_finish: NULL opener");
    HUSH_ENSURE(!opener->failed, HUSH_E_ARGUMENT, "the v2 opener failed before");
    HUSH_ENSURE(opener->prefix_have == 0, HUSH_E_FORMAT, "the body ends inside a frame");
    if (opener->response)
        goto cleanup;
    if (opener->chosen == SIZE_MAX) /* no frame told: the newest key */
        keep_context(opener, 0);
    HUSH_TRY(exchange_export(opener->ex, opener->ctxs[opener->chosen], err));
    if (key_index != NULL)
        *key_index = opener->chosen;
    if (exchange != NULL) {
        *exchange = opener->ex;
        opener->ex = NULL;
    }
cleanup:
    if (status != HUSH_OK && opener != NULL)
        opener_fail(opener);
    return status;
}

void hush_v2_opener_free(hush_v2_opener *opener)
{
    if (opener == NULL)
        return;
    for (size_t i = 0; i < opener->n_ctxs; i++)
        hush_hpke_ctx_free(opener->ctxs[i]);
    free(opener->ctxs);
    hush_v2_exchange_free(opener->ex);
    hush__secret_block_free(&opener->keys);
    free(opener->frame);
    free(opener);
}
