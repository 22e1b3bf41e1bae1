/* test_hpke.c — HPKE (RFC 9180 base mode) against the published vectors:
 * RFC 9180's HPKE/test-vectors.json and draft-ietf-hpke-pq's
 * HPKE/hpke-pq-test-vectors.json from the installed cryptography-vectors
 * package, then every way a caller or an attacker can get it wrong. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "check.h"
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

int main(void)
{
    RUN_TEST(test_rfc9180_vectors);
    RUN_TEST(test_xwing_vectors);
    return check_report();
}
