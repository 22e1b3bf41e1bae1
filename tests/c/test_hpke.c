/* test_hpke.c — HPKE (RFC 9180 base mode) against the published vectors:
 * RFC 9180's HPKE/test-vectors.json and draft-ietf-hpke-pq's
 * HPKE/hpke-pq-test-vectors.json from the installed cryptography-vectors
 * package, then every way a caller or an attacker can get it wrong. The
 * live cross-check with pyca cryptography is tests/c/cross_pyca.py. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "check.h"
#include "crypto/crypto_internal.h"
#include "hushcall/hpke.h"
#include "hushcall/json.h"

#define VECTORS_MAX_BYTES (64u * 1024u * 1024u)

/* ---- vector files ------------------------------------------------------ */

typedef struct blob {
    unsigned char *data; /* never NULL once read, so empty fields pass as buffers */
    size_t len;
} blob;

static hush_json_doc *load_vectors(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", HUSH_TEST_VECTORS_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s: is cryptography-vectors installed? (make deps)\n", path);
        return NULL;
    }
    char *text = malloc(VECTORS_MAX_BYTES);
    size_t len = text != NULL ? fread(text, 1, VECTORS_MAX_BYTES, f) : 0;
    fclose(f);
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_json_limits limits = {VECTORS_MAX_BYTES, 0};
    if (text == NULL || len == 0 || len == VECTORS_MAX_BYTES ||
        hush_json_parse(text, len, &limits, HUSH_SECMEM_PUBLIC, &doc, &err) != HUSH_OK)
        fprintf(stderr, "cannot parse %s\n", path);
    free(text);
    return doc;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The hex string member `key` of `obj`, decoded; a failed check when it is
 * missing or not hex. */
static blob hex_field(const hush_json_value *obj, const char *key)
{
    blob b = {NULL, 0};
    size_t len = 0;
    const char *text = hush_json_string(hush_json_object_get(obj, key, strlen(key)), &len);
    CHECK(text != NULL && len % 2 == 0);
    if (text == NULL || len % 2 != 0)
        return b;
    b.data = calloc(len / 2 + 1, 1);
    b.len = len / 2;
    for (size_t i = 0; i < b.len; i++) {
        int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
        CHECK(hi >= 0 && lo >= 0);
        b.data[i] = (unsigned char)(hi << 4 | (lo & 15));
    }
    return b;
}

static int64_t int_field(const hush_json_value *obj, const char *key)
{
    int64_t value = -1;
    hush_error err;
    CHECK_OK(hush_json_int64(hush_json_object_get(obj, key, strlen(key)), &value, &err), &err);
    return value;
}

static bool blob_eq(blob b, const void *data, size_t len)
{
    return b.data != NULL && b.len == len && memcmp(b.data, data, len) == 0;
}

/* ---- one vector -------------------------------------------------------- */

typedef struct vector_counts {
    int vectors;
    int encryptions;
    int exports;
} vector_counts;

/* DeriveKeyPair(ikm) of the vector gives its sk and pk. */
static hush_hpke_keypair *check_derived_pair(uint16_t kem, blob ikm, blob sk, blob pk)
{
    hush_error err;
    hush_hpke_keypair *kp = NULL;
    hush_secbuf *priv = NULL;
    hush_hpke_pubkey *pub = NULL;
    CHECK_OK(hush_hpke_keypair_derive(kem, ikm.data, ikm.len, &kp, &err), &err);
    CHECK_OK(hush_hpke_keypair_private(kp, &priv, &err), &err);
    CHECK(blob_eq(sk, hush_secbuf_bytes(priv), hush_secbuf_len(priv)));
    CHECK_OK(hush_hpke_keypair_public(kp, &pub, &err), &err);
    size_t pub_len = 0;
    const unsigned char *pub_bytes = hush_hpke_pubkey_bytes(pub, &pub_len);
    CHECK(pub_bytes != NULL && blob_eq(pk, pub_bytes, pub_len));
    hush_hpke_pubkey_free(pub);
    hush_secbuf_free(priv);
    return kp;
}

static void check_encryptions(const hush_json_value *list, hush_hpke_ctx *sender,
                              hush_hpke_ctx *recipient, vector_counts *counts)
{
    hush_error err;
    for (size_t i = 0; i < hush_json_length(list); i++) {
        const hush_json_value *e = hush_json_array_get(list, i);
        blob aad = hex_field(e, "aad"), pt = hex_field(e, "pt"), ct = hex_field(e, "ct");
        unsigned char *out = malloc(pt.len + HUSH_HPKE_TAG_BYTES);
        unsigned char *back = malloc(pt.len + 1);
        size_t out_len = 0, back_len = 0;
        CHECK_OK(hush_hpke_seal(sender, aad.data, aad.len, pt.data, pt.len, out,
                                pt.len + HUSH_HPKE_TAG_BYTES, &out_len, &err),
                 &err);
        CHECK(blob_eq(ct, out, out_len));
        CHECK_OK(hush_hpke_open(recipient, aad.data, aad.len, ct.data, ct.len, back, pt.len + 1,
                                &back_len, &err),
                 &err);
        CHECK(blob_eq(pt, back, back_len));
        counts->encryptions++;
        free(back);
        free(out);
        free(aad.data);
        free(pt.data);
        free(ct.data);
    }
}

static void check_exports(const hush_json_value *list, const hush_hpke_ctx *sender,
                          const hush_hpke_ctx *recipient, vector_counts *counts)
{
    hush_error err;
    for (size_t i = 0; i < hush_json_length(list); i++) {
        const hush_json_value *e = hush_json_array_get(list, i);
        blob context = hex_field(e, "exporter_context"), value = hex_field(e, "exported_value");
        size_t len = (size_t)int_field(e, "L");
        unsigned char *a = malloc(len + 1), *b = malloc(len + 1);
        CHECK_OK(hush_hpke_export(sender, context.data, context.len, a, len, &err), &err);
        CHECK_OK(hush_hpke_export(recipient, context.data, context.len, b, len, &err), &err);
        CHECK(blob_eq(value, a, len));
        CHECK(blob_eq(value, b, len));
        counts->exports++;
        free(a);
        free(b);
        free(context.data);
        free(value.data);
    }
}

static void run_vector(const hush_json_value *v, vector_counts *counts)
{
    hush_error err;
    hush_hpke_suite suite = {(uint16_t)int_field(v, "kem_id"), (uint16_t)int_field(v, "kdf_id"),
                             (uint16_t)int_field(v, "aead_id")};
    blob info = hex_field(v, "info"), ikmR = hex_field(v, "ikmR"), ikmE = hex_field(v, "ikmE");
    blob skRm = hex_field(v, "skRm"), pkRm = hex_field(v, "pkRm"), enc = hex_field(v, "enc");
    unsigned char enc_out[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len = 0;
    hush_hpke_pubkey *pkR = NULL;
    hush_hpke_ctx *sender = NULL, *recipient = NULL;

    hush_hpke_keypair *kpR = check_derived_pair(suite.kem_id, ikmR, skRm, pkRm);
    if (suite.kem_id == HUSH_HPKE_KEM_X25519_SHA256) {
        /* DHKEM's ephemeral key is DeriveKeyPair(ikmE) too. */
        blob skEm = hex_field(v, "skEm"), pkEm = hex_field(v, "pkEm");
        hush_hpke_keypair_free(check_derived_pair(suite.kem_id, ikmE, skEm, pkEm));
        free(skEm.data);
        free(pkEm.data);
    }
    CHECK_OK(hush_hpke_pubkey_from_bytes(suite.kem_id, pkRm.data, pkRm.len, &pkR, &err), &err);
    CHECK_OK(hush_hpke_setup_base_s_derand(suite, pkR, ikmE.data, ikmE.len, info.data, info.len,
                                           enc_out, sizeof enc_out, &enc_len, &sender, &err),
             &err);
    CHECK(blob_eq(enc, enc_out, enc_len));
    CHECK_OK(hush_hpke_setup_base_r(suite, kpR, enc.data, enc.len, info.data, info.len,
                                    &recipient, &err),
             &err);
    if (sender != NULL && recipient != NULL) {
        const hush_json_value *encryptions = hush_json_object_get(v, "encryptions", 11);
        CHECK(hush_json_type_of(encryptions) == HUSH_JSON_ARRAY);
        check_encryptions(encryptions, sender, recipient, counts);
        const hush_json_value *exports = hush_json_object_get(v, "exports", 7);
        CHECK(hush_json_length(exports) > 0);
        check_exports(exports, sender, recipient, counts);
    }
    counts->vectors++;
    hush_hpke_ctx_free(sender);
    hush_hpke_ctx_free(recipient);
    hush_hpke_pubkey_free(pkR);
    hush_hpke_keypair_free(kpR);
    free(info.data);
    free(ikmR.data);
    free(ikmE.data);
    free(skRm.data);
    free(pkRm.data);
    free(enc.data);
}

/* ---- known answers ----------------------------------------------------- */

static bool rfc9180_selected(const hush_json_value *v)
{
    int64_t aead = int_field(v, "aead_id");
    return int_field(v, "mode") == 0 && int_field(v, "kem_id") == HUSH_HPKE_KEM_X25519_SHA256 &&
           int_field(v, "kdf_id") == HUSH_HPKE_KDF_HKDF_SHA256 &&
           (aead == HUSH_HPKE_AEAD_AES_256_GCM || aead == HUSH_HPKE_AEAD_CHACHA20_POLY1305 ||
            aead == HUSH_HPKE_AEAD_EXPORT_ONLY);
}

/* Every base-mode DHKEM(X25519, HKDF-SHA256) entry for our AEADs: one each
 * for AES-256-GCM, ChaCha20-Poly1305 and export-only, with 257 encryptions
 * for each AEAD and 3 exports for each entry. */
static void test_rfc9180_vectors(void)
{
    hush_json_doc *doc = load_vectors("HPKE/test-vectors.json");
    CHECK(doc != NULL);
    const hush_json_value *root = hush_json_doc_root(doc);
    vector_counts counts = {0, 0, 0};
    for (size_t i = 0; i < hush_json_length(root); i++) {
        const hush_json_value *v = hush_json_array_get(root, i);
        if (rfc9180_selected(v))
            run_vector(v, &counts);
    }
    CHECK_EQ(counts.vectors, 3);
    CHECK_EQ(counts.encryptions, 2 * 257);
    CHECK_EQ(counts.exports, 3 * 3);
    hush_json_doc_free(doc);
}

/* Every X-Wing entry of draft-ietf-hpke-pq's vectors: HKDF-SHA256 and the
 * one-stage SHAKE256 KDF, both with ChaCha20-Poly1305. */
static void test_xwing_vectors(void)
{
    hush_json_doc *doc = load_vectors("HPKE/hpke-pq-test-vectors.json");
    CHECK(doc != NULL);
    const hush_json_value *root = hush_json_doc_root(doc);
    vector_counts counts = {0, 0, 0};
    int one_stage = 0;
    for (size_t i = 0; i < hush_json_length(root); i++) {
        const hush_json_value *v = hush_json_array_get(root, i);
        if (int_field(v, "kem_id") != HUSH_HPKE_KEM_XWING)
            continue;
        CHECK_EQ(int_field(v, "mode"), 0);
        one_stage += int_field(v, "kdf_id") == HUSH_HPKE_KDF_SHAKE256;
        run_vector(v, &counts);
    }
    CHECK_EQ(counts.vectors, 2);
    CHECK_EQ(one_stage, 1);
    CHECK_EQ(counts.encryptions, 2 * 10);
    CHECK_EQ(counts.exports, 2 * 5);
    hush_json_doc_free(doc);
}

/* ---- keys -------------------------------------------------------------- */

static const hush_hpke_suite X25519_AES = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KDF_HKDF_SHA256,
                                           HUSH_HPKE_AEAD_AES_256_GCM};

/* "sha256:" || hex(SHA-256(I2OSP(kem_id, 2) || pk)), computed here apart
 * from the library. */
static void expected_fingerprint(uint16_t kem, const unsigned char *pk, size_t len,
                                 char out[HUSH_FINGERPRINT_LEN])
{
    unsigned char *input = malloc(len + 2);
    unsigned char digest[32];
    input[0] = (unsigned char)(kem >> 8);
    input[1] = (unsigned char)kem;
    memcpy(input + 2, pk, len);
    CHECK(EVP_Digest(input, len + 2, digest, NULL, EVP_sha256(), NULL) == 1);
    strcpy(out, "sha256:");
    for (size_t i = 0; i < sizeof digest; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", digest[i]);
    free(input);
}

static void check_key_round_trip(uint16_t kem)
{
    hush_error err;
    hush_hpke_keypair *kp = NULL, *again = NULL;
    hush_hpke_pubkey *pub = NULL, *pub_again = NULL, *parsed = NULL;
    hush_secbuf *sk = NULL;
    char fingerprint[HUSH_FINGERPRINT_LEN], expected[HUSH_FINGERPRINT_LEN];
    size_t len = 0, len_again = 0;

    CHECK_OK(hush_hpke_keypair_generate(kem, &kp, &err), &err);
    CHECK_EQ(hush_hpke_keypair_kem(kp), kem);
    CHECK_OK(hush_hpke_keypair_private(kp, &sk, &err), &err);
    CHECK_EQ(hush_secbuf_len(sk), hush_hpke_kem_private_key_bytes(kem));
    CHECK_OK(hush_hpke_keypair_from_private(kem, hush_secbuf_bytes(sk), hush_secbuf_len(sk),
                                            &again, &err),
             &err);
    CHECK_OK(hush_hpke_keypair_public(kp, &pub, &err), &err);
    CHECK_OK(hush_hpke_keypair_public(again, &pub_again, &err), &err);
    const unsigned char *bytes = hush_hpke_pubkey_bytes(pub, &len);
    const unsigned char *bytes_again = hush_hpke_pubkey_bytes(pub_again, &len_again);
    CHECK_EQ(len, hush_hpke_kem_public_key_bytes(kem));
    CHECK(bytes != NULL && bytes_again != NULL && len == len_again &&
          memcmp(bytes, bytes_again, len) == 0);
    CHECK_OK(hush_hpke_pubkey_from_bytes(kem, bytes, len, &parsed, &err), &err);
    CHECK_EQ(hush_hpke_pubkey_kem(parsed), kem);
    CHECK_OK(hush_hpke_pubkey_fingerprint(parsed, fingerprint, &err), &err);
    expected_fingerprint(kem, bytes, len, expected);
    CHECK(strcmp(fingerprint, expected) == 0);
    /* A reference outlives the handle it came from. */
    hush_hpke_keypair *ref = hush_hpke_keypair_ref(kp);
    hush_hpke_keypair_free(kp);
    CHECK_EQ(hush_hpke_keypair_kem(ref), kem);
    hush_hpke_keypair_free(ref);
    hush_hpke_pubkey_free(hush_hpke_pubkey_ref(parsed));
    hush_hpke_pubkey_free(parsed);
    hush_hpke_pubkey_free(pub);
    hush_hpke_pubkey_free(pub_again);
    hush_hpke_keypair_free(again);
    hush_secbuf_free(sk);
}

static void test_keys(void)
{
    check_key_round_trip(HUSH_HPKE_KEM_X25519_SHA256);
    check_key_round_trip(HUSH_HPKE_KEM_XWING);
}

static void test_key_errors(void)
{
    hush_error err;
    unsigned char bytes[HUSH_HPKE_MAX_PUBLIC_KEY_BYTES] = {0};
    hush_hpke_pubkey *pk = NULL;
    hush_hpke_keypair *kp = NULL;
    char fingerprint[HUSH_FINGERPRINT_LEN];

    CHECK_STATUS(hush_hpke_pubkey_from_bytes(HUSH_HPKE_KEM_X25519_SHA256, bytes, 31, &pk, &err),
                 HUSH_E_KEY, &err);
    CHECK_STATUS(hush_hpke_pubkey_from_bytes(HUSH_HPKE_KEM_XWING, bytes, 32, &pk, &err),
                 HUSH_E_KEY, &err);
    /* An ML-KEM coefficient of 4095 >= q fails FIPS 203 §7.2. */
    memset(bytes, 0xff, sizeof bytes);
    CHECK_STATUS(hush_hpke_pubkey_from_bytes(HUSH_HPKE_KEM_XWING, bytes, sizeof bytes, &pk, &err),
                 HUSH_E_KEY, &err);
    CHECK_STATUS(hush_hpke_pubkey_from_bytes(0x0010, bytes, 65, &pk, &err), HUSH_E_UNSUPPORTED,
                 &err);
    CHECK(strstr(err.message, "0x0010") != NULL);
    CHECK(pk == NULL);
    CHECK_STATUS(hush_hpke_keypair_generate(0x0021, &kp, &err), HUSH_E_UNSUPPORTED, &err);
    CHECK_STATUS(hush_hpke_keypair_from_private(HUSH_HPKE_KEM_XWING, bytes, 31, &kp, &err),
                 HUSH_E_KEY, &err);
    CHECK_STATUS(hush_hpke_keypair_derive(HUSH_HPKE_KEM_X25519_SHA256, bytes, 31, &kp, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_derive(HUSH_HPKE_KEM_X25519_SHA256, NULL, 32, &kp, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_generate(HUSH_HPKE_KEM_X25519_SHA256, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_pubkey_fingerprint(NULL, fingerprint, &err), HUSH_E_ARGUMENT, &err);
    CHECK(kp == NULL);
    size_t len = 7;
    CHECK(hush_hpke_pubkey_bytes(NULL, &len) == NULL && len == 0);
    CHECK_EQ(hush_hpke_pubkey_kem(NULL), 0);
    CHECK_EQ(hush_hpke_keypair_kem(NULL), 0);
    CHECK_EQ(hush_hpke_kem_enc_bytes(0x0010), 0);
    CHECK_EQ(hush_hpke_kem_enc_bytes(HUSH_HPKE_KEM_XWING), HUSH_HPKE_MAX_ENC_BYTES);
    CHECK(hush_hpke_keypair_ref(NULL) == NULL && hush_hpke_pubkey_ref(NULL) == NULL);
    hush_hpke_keypair_free(NULL);
    hush_hpke_pubkey_free(NULL);
}

/* ---- contexts ---------------------------------------------------------- */

typedef struct conversation {
    hush_hpke_keypair *kp;
    hush_hpke_ctx *sender, *recipient;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len;
} conversation;

static const char INFO[] = "hushcall test conversation";

static void open_conversation(hush_hpke_suite suite, conversation *c)
{
    hush_error err;
    hush_hpke_pubkey *pk = NULL;
    memset(c, 0, sizeof *c);
    CHECK_OK(hush_hpke_keypair_generate(suite.kem_id, &c->kp, &err), &err);
    CHECK_OK(hush_hpke_keypair_public(c->kp, &pk, &err), &err);
    CHECK_OK(hush_hpke_setup_base_s(suite, pk, INFO, strlen(INFO), c->enc, sizeof c->enc,
                                    &c->enc_len, &c->sender, &err),
             &err);
    CHECK_EQ(c->enc_len, hush_hpke_kem_enc_bytes(suite.kem_id));
    CHECK_OK(hush_hpke_setup_base_r(suite, c->kp, c->enc, c->enc_len, INFO, strlen(INFO),
                                    &c->recipient, &err),
             &err);
    hush_hpke_pubkey_free(pk);
}

static void close_conversation(conversation *c)
{
    hush_hpke_ctx_free(c->sender);
    hush_hpke_ctx_free(c->recipient);
    hush_hpke_keypair_free(c->kp);
}

/* Three messages each way a suite allows, and matching exports. */
static void check_suite_round_trip(hush_hpke_suite suite)
{
    hush_error err;
    conversation c;
    open_conversation(suite, &c);
    CHECK(hush_hpke_ctx_suite(c.sender).aead_id == suite.aead_id);
    unsigned char ct[64 + HUSH_HPKE_TAG_BYTES], pt[64], previous[sizeof ct];
    for (int i = 0; i < 3; i++) {
        const char message[] = "the same plaintext every time";
        size_t ct_len = 0, pt_len = 0;
        CHECK_OK(hush_hpke_seal(c.sender, "aad", 3, message, sizeof message, ct, sizeof ct, &ct_len,
                                &err),
                 &err);
        CHECK_EQ(ct_len, sizeof message + HUSH_HPKE_TAG_BYTES);
        /* Each message has its own nonce. */
        CHECK(i == 0 || memcmp(previous, ct, ct_len) != 0);
        memcpy(previous, ct, ct_len);
        CHECK_OK(hush_hpke_open(c.recipient, "aad", 3, ct, ct_len, pt, sizeof pt, &pt_len, &err),
                 &err);
        CHECK(pt_len == sizeof message && memcmp(pt, message, pt_len) == 0);
    }
    unsigned char a[100], b[100];
    CHECK_OK(hush_hpke_export(c.sender, "ctx", 3, a, sizeof a, &err), &err);
    CHECK_OK(hush_hpke_export(c.recipient, "ctx", 3, b, sizeof b, &err), &err);
    CHECK(memcmp(a, b, sizeof a) == 0);
    close_conversation(&c);
}

static void test_every_suite_round_trips(void)
{
    const uint16_t kems[] = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KEM_XWING};
    const uint16_t kdfs[] = {HUSH_HPKE_KDF_HKDF_SHA256, HUSH_HPKE_KDF_SHAKE256};
    const uint16_t aeads[] = {HUSH_HPKE_AEAD_AES_256_GCM, HUSH_HPKE_AEAD_CHACHA20_POLY1305};
    for (size_t k = 0; k < 2; k++)
        for (size_t d = 0; d < 2; d++)
            for (size_t a = 0; a < 2; a++)
                check_suite_round_trip((hush_hpke_suite){kems[k], kdfs[d], aeads[a]});
}

/* A refused message changes nothing: pt is zeroed, the sequence number
 * stays, and the genuine message still opens afterwards. */
static void check_refused(hush_hpke_ctx *recipient, const void *aad, size_t aad_len,
                          const unsigned char *ct, size_t ct_len)
{
    hush_error err;
    unsigned char pt[64];
    size_t pt_len = 99;
    memset(pt, 0xaa, sizeof pt);
    CHECK_STATUS(hush_hpke_open(recipient, aad, aad_len, ct, ct_len, pt, sizeof pt, &pt_len, &err),
                 HUSH_E_AUTH, &err);
    CHECK_EQ(pt_len, 0);
    for (size_t i = 0; i + HUSH_HPKE_TAG_BYTES < ct_len && i < sizeof pt; i++)
        CHECK_EQ(pt[i], 0);
}

static void test_tampering_refused(void)
{
    hush_error err;
    conversation c;
    open_conversation(X25519_AES, &c);
    const char message[] = "attack at dawn";
    unsigned char ct[sizeof message + HUSH_HPKE_TAG_BYTES], bad[sizeof ct], pt[sizeof message];
    size_t ct_len = 0, pt_len = 0;
    CHECK_OK(hush_hpke_seal(c.sender, "aad", 3, message, sizeof message, ct, sizeof ct, &ct_len,
                            &err),
             &err);
    memcpy(bad, ct, sizeof ct);
    bad[0] ^= 1;
    check_refused(c.recipient, "aad", 3, bad, ct_len); /* body */
    memcpy(bad, ct, sizeof ct);
    bad[ct_len - 1] ^= 0x80;
    check_refused(c.recipient, "aad", 3, bad, ct_len); /* tag */
    check_refused(c.recipient, "aaD", 3, ct, ct_len);  /* aad */
    check_refused(c.recipient, NULL, 0, ct, ct_len);   /* no aad */
    check_refused(c.recipient, "aad", 3, ct, ct_len - 1);
    check_refused(c.recipient, "aad", 3, ct, HUSH_HPKE_TAG_BYTES - 1);
    CHECK_OK(hush_hpke_open(c.recipient, "aad", 3, ct, ct_len, pt, sizeof pt, &pt_len, &err), &err);
    CHECK(pt_len == sizeof message && memcmp(pt, message, pt_len) == 0);
    /* Opened once, it does not open again: the sequence number moved on. */
    check_refused(c.recipient, "aad", 3, ct, ct_len);
    close_conversation(&c);
}

static void test_wrong_info_or_key_refused(void)
{
    hush_error err;
    const uint16_t kems[] = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KEM_XWING};
    for (size_t k = 0; k < 2; k++) {
        hush_hpke_suite suite = {kems[k], HUSH_HPKE_KDF_HKDF_SHA256,
                                 HUSH_HPKE_AEAD_CHACHA20_POLY1305};
        conversation c;
        hush_hpke_keypair *other = NULL;
        hush_hpke_ctx *wrong_info = NULL, *wrong_key = NULL;
        open_conversation(suite, &c);
        unsigned char ct[5 + HUSH_HPKE_TAG_BYTES];
        size_t ct_len = 0;
        CHECK_OK(hush_hpke_seal(c.sender, NULL, 0, "hello", 5, ct, sizeof ct, &ct_len, &err), &err);
        CHECK_OK(hush_hpke_setup_base_r(suite, c.kp, c.enc, c.enc_len, "other", 5, &wrong_info,
                                        &err),
                 &err);
        check_refused(wrong_info, NULL, 0, ct, ct_len);
        /* Another key agrees on another secret (ML-KEM's implicit
         * rejection included), so the message does not open. */
        CHECK_OK(hush_hpke_keypair_generate(suite.kem_id, &other, &err), &err);
        CHECK_OK(hush_hpke_setup_base_r(suite, other, c.enc, c.enc_len, INFO, strlen(INFO),
                                        &wrong_key, &err),
                 &err);
        check_refused(wrong_key, NULL, 0, ct, ct_len);
        hush_hpke_ctx_free(wrong_info);
        hush_hpke_ctx_free(wrong_key);
        hush_hpke_keypair_free(other);
        close_conversation(&c);
    }
}

static void test_malformed_enc_refused(void)
{
    hush_error err;
    conversation c, xwing;
    hush_hpke_ctx *ctx = NULL;
    hush_hpke_suite xwing_suite = {HUSH_HPKE_KEM_XWING, HUSH_HPKE_KDF_HKDF_SHA256,
                                   HUSH_HPKE_AEAD_AES_256_GCM};
    open_conversation(X25519_AES, &c);
    open_conversation(xwing_suite, &xwing);
    CHECK_STATUS(hush_hpke_setup_base_r(X25519_AES, c.kp, c.enc, c.enc_len - 1, NULL, 0, &ctx,
                                        &err),
                 HUSH_E_AUTH, &err);
    CHECK_STATUS(hush_hpke_setup_base_r(X25519_AES, c.kp, xwing.enc, xwing.enc_len, NULL, 0, &ctx,
                                        &err),
                 HUSH_E_AUTH, &err);
    CHECK_STATUS(hush_hpke_setup_base_r(xwing_suite, xwing.kp, c.enc, c.enc_len, NULL, 0, &ctx,
                                        &err),
                 HUSH_E_AUTH, &err);
    CHECK_STATUS(hush_hpke_setup_base_r(xwing_suite, xwing.kp, xwing.enc, xwing.enc_len + 1, NULL,
                                        0, &ctx, &err),
                 HUSH_E_AUTH, &err);
    /* The all-zero X25519 point is of low order: DH gives zero (RFC 9180
     * §7.1.4), refused on both sides. */
    unsigned char zero[32] = {0};
    CHECK_STATUS(hush_hpke_setup_base_r(X25519_AES, c.kp, zero, sizeof zero, NULL, 0, &ctx, &err),
                 HUSH_E_AUTH, &err);
    CHECK(strcmp(err.message, "authentication failed") == 0);
    hush_hpke_pubkey *low_order = NULL;
    unsigned char enc[32];
    size_t enc_len = 0;
    CHECK_OK(hush_hpke_pubkey_from_bytes(HUSH_HPKE_KEM_X25519_SHA256, zero, sizeof zero,
                                         &low_order, &err),
             &err);
    CHECK_STATUS(hush_hpke_setup_base_s(X25519_AES, low_order, NULL, 0, enc, sizeof enc, &enc_len,
                                        &ctx, &err),
                 HUSH_E_KEY, &err);
    CHECK(ctx == NULL);
    hush_hpke_pubkey_free(low_order);
    close_conversation(&c);
    close_conversation(&xwing);
}

static void test_roles_and_export_only(void)
{
    hush_error err;
    conversation c, e;
    unsigned char buf[64], a[HUSH_HPKE_MAX_EXPORT_BYTES + 1], b[HUSH_HPKE_MAX_EXPORT_BYTES];
    size_t len = 0;
    open_conversation(X25519_AES, &c);
    CHECK_STATUS(hush_hpke_seal(c.recipient, NULL, 0, "x", 1, buf, sizeof buf, &len, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_open(c.sender, NULL, 0, buf, 17, buf, sizeof buf, &len, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_export(c.sender, NULL, 0, a, HUSH_HPKE_MAX_EXPORT_BYTES + 1, &err),
                 HUSH_E_LIMIT, &err);
    CHECK_OK(hush_hpke_export(c.sender, NULL, 0, a, HUSH_HPKE_MAX_EXPORT_BYTES, &err), &err);
    CHECK_OK(hush_hpke_export(c.recipient, NULL, 0, b, HUSH_HPKE_MAX_EXPORT_BYTES, &err), &err);
    CHECK(memcmp(a, b, HUSH_HPKE_MAX_EXPORT_BYTES) == 0);
    close_conversation(&c);

    open_conversation((hush_hpke_suite){HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KDF_HKDF_SHA256,
                                        HUSH_HPKE_AEAD_EXPORT_ONLY},
                      &e);
    CHECK_STATUS(hush_hpke_seal(e.sender, NULL, 0, "x", 1, buf, sizeof buf, &len, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK_STATUS(hush_hpke_open(e.recipient, NULL, 0, buf, 17, buf, sizeof buf, &len, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK_OK(hush_hpke_export(e.sender, "c", 1, a, 42, &err), &err);
    CHECK_OK(hush_hpke_export(e.recipient, "c", 1, b, 42, &err), &err);
    CHECK(memcmp(a, b, 42) == 0);
    close_conversation(&e);
}

static void test_arguments(void)
{
    hush_error err;
    conversation c;
    hush_hpke_ctx *ctx = NULL;
    hush_hpke_pubkey *pk = NULL;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES], buf[64];
    size_t len = 0;
    open_conversation(X25519_AES, &c);
    CHECK_OK(hush_hpke_keypair_public(c.kp, &pk, &err), &err);

    CHECK_OK(hush_hpke_suite_check(X25519_AES, &err), &err);
    CHECK_STATUS(hush_hpke_suite_check((hush_hpke_suite){0x0010, 1, 2}, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK_STATUS(hush_hpke_suite_check((hush_hpke_suite){0x0020, 0x0002, 2}, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK(strstr(err.message, "KDF id 0x0002") != NULL);
    CHECK_STATUS(hush_hpke_suite_check((hush_hpke_suite){0x0020, 1, 0x0001}, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK(strstr(err.message, "AEAD id 0x0001") != NULL);
    CHECK_STATUS(hush_hpke_setup_base_s((hush_hpke_suite){0x0020, 1, 0x0001}, pk, NULL, 0, enc,
                                        sizeof enc, &len, &ctx, &err),
                 HUSH_E_UNSUPPORTED, &err);
    /* A key of one KEM in a suite of the other. */
    CHECK_STATUS(hush_hpke_setup_base_s((hush_hpke_suite){HUSH_HPKE_KEM_XWING, 1, 2}, pk, NULL, 0,
                                        enc, sizeof enc, &len, &ctx, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_setup_base_s(X25519_AES, NULL, NULL, 0, enc, sizeof enc, &len, &ctx,
                                        &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_setup_base_s(X25519_AES, pk, NULL, 5, enc, sizeof enc, &len, &ctx,
                                        &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_setup_base_s(X25519_AES, pk, buf, HUSH_HPKE_MAX_INFO_BYTES + 1, enc,
                                        sizeof enc, &len, &ctx, &err),
                 HUSH_E_LIMIT, &err);
    CHECK_STATUS(hush_hpke_setup_base_s(X25519_AES, pk, NULL, 0, enc, 31, &len, &ctx, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(strstr(err.message, "enc capacity") != NULL);
    CHECK_STATUS(hush_hpke_setup_base_s_derand(X25519_AES, pk, NULL, 32, NULL, 0, enc, sizeof enc,
                                               &len, &ctx, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_setup_base_s_derand(X25519_AES, pk, buf, 31, NULL, 0, enc, sizeof enc,
                                               &len, &ctx, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_setup_base_r(X25519_AES, NULL, c.enc, c.enc_len, NULL, 0, &ctx, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(ctx == NULL);

    CHECK_STATUS(hush_hpke_seal(NULL, NULL, 0, "x", 1, buf, sizeof buf, &len, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_seal(c.sender, NULL, 0, "x", 1, buf, 16, &len, &err), HUSH_E_ARGUMENT,
                 &err);
    CHECK(strstr(err.message, "ct capacity") != NULL);
    CHECK_STATUS(hush_hpke_seal(c.sender, NULL, 0, NULL, 1, buf, sizeof buf, &len, &err),
                 HUSH_E_ARGUMENT, &err);
    /* The refused calls spent no sequence number: this one still opens. */
    size_t ct_len = 0;
    CHECK_OK(hush_hpke_seal(c.sender, NULL, 0, "xy", 2, buf, sizeof buf, &ct_len, &err), &err);
    unsigned char pt[2];
    CHECK_STATUS(hush_hpke_open(c.recipient, NULL, 0, buf, ct_len, pt, 1, &len, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(strstr(err.message, "pt capacity") != NULL);
    CHECK_STATUS(hush_hpke_open(c.recipient, NULL, 0, buf, ct_len, pt, sizeof pt, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_hpke_open(c.recipient, NULL, 0, buf, ct_len, pt, sizeof pt, &len, &err), &err);
    CHECK(len == 2 && memcmp(pt, "xy", 2) == 0);
    /* An empty message: pt may be NULL. */
    CHECK_OK(hush_hpke_seal(c.sender, NULL, 0, NULL, 0, buf, sizeof buf, &ct_len, &err), &err);
    CHECK_OK(hush_hpke_open(c.recipient, NULL, 0, buf, ct_len, NULL, 0, &len, &err), &err);
    CHECK_EQ(len, 0);
    CHECK_STATUS(hush_hpke_export(NULL, NULL, 0, buf, 1, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_export(c.sender, NULL, 0, NULL, 1, &err), HUSH_E_ARGUMENT, &err);
    hush_hpke_suite none = hush_hpke_ctx_suite(NULL);
    CHECK(none.kem_id == 0 && none.kdf_id == 0 && none.aead_id == 0);
    hush_hpke_ctx_free(NULL);
    hush_hpke_pubkey_free(pk);
    close_conversation(&c);
}

/* The last sequence number seals and opens; the one after is refused on
 * both sides, and the refusal spends nothing. */
static void test_sequence_number_exhausted(void)
{
    hush_error err;
    conversation c;
    unsigned char ct[1 + HUSH_HPKE_TAG_BYTES], pt[1];
    size_t ct_len = 0, pt_len = 0;
    open_conversation(X25519_AES, &c);
    hush__hpke_ctx_set_seq(c.sender, UINT64_MAX - 1);
    hush__hpke_ctx_set_seq(c.recipient, UINT64_MAX - 1);
    CHECK_OK(hush_hpke_seal(c.sender, NULL, 0, "z", 1, ct, sizeof ct, &ct_len, &err), &err);
    unsigned char next[sizeof ct];
    size_t next_len = 0;
    CHECK_STATUS(hush_hpke_seal(c.sender, NULL, 0, "z", 1, next, sizeof next, &next_len, &err),
                 HUSH_E_LIMIT, &err);
    CHECK(strstr(err.message, "sequence number") != NULL);
    CHECK_OK(hush_hpke_open(c.recipient, NULL, 0, ct, ct_len, pt, sizeof pt, &pt_len, &err),
             &err);
    CHECK(pt_len == 1 && pt[0] == 'z');
    CHECK_STATUS(hush_hpke_open(c.recipient, NULL, 0, ct, ct_len, pt, sizeof pt, &pt_len, &err),
                 HUSH_E_LIMIT, &err);
    close_conversation(&c);
}

/* Two senders to one key get different encapsulations and keys. */
static void test_fresh_encapsulation(void)
{
    hush_error err;
    conversation a, b;
    open_conversation(X25519_AES, &a);
    open_conversation(X25519_AES, &b);
    unsigned char ea[32], eb[32];
    CHECK_OK(hush_hpke_export(a.sender, NULL, 0, ea, sizeof ea, &err), &err);
    CHECK_OK(hush_hpke_export(b.sender, NULL, 0, eb, sizeof eb, &err), &err);
    CHECK(memcmp(a.enc, b.enc, 32) != 0 && memcmp(ea, eb, sizeof ea) != 0);
    close_conversation(&a);
    close_conversation(&b);
}

int main(void)
{
    RUN_TEST(test_rfc9180_vectors);
    RUN_TEST(test_xwing_vectors);
    RUN_TEST(test_keys);
    RUN_TEST(test_key_errors);
    RUN_TEST(test_every_suite_round_trips);
    RUN_TEST(test_tampering_refused);
    RUN_TEST(test_wrong_info_or_key_refused);
    RUN_TEST(test_malformed_enc_refused);
    RUN_TEST(test_roles_and_export_only);
    RUN_TEST(test_arguments);
    RUN_TEST(test_sequence_number_exhausted);
    RUN_TEST(test_fresh_encapsulation);
    return check_report();
}
