/* test_xwing.c — X-Wing against every entry with KEM id 0x647A of
 * cryptography-vectors' HPKE/hpke-pq-test-vectors.json (public key from
 * the seed skRm, EncapsulateDerand from ikmE, decapsulation of enc), read
 * with the core's own JSON parser; random round trips; a modified
 * ciphertext; a public key whose ML-KEM part fails FIPS 203 §7.2; and the
 * expanded-key form HPKE uses agreeing with the seed form. */
#include <stdlib.h>

#include "check.h"
#include "crypto/crypto_internal.h"
#include "hushcall/xwing.h"

#define PQ_VECTORS HUSH_TEST_VECTORS_DIR "/HPKE/hpke-pq-test-vectors.json"
#define XWING_KEM_ID 0x647A

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long size;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)size)) == NULL ||
        fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    if (f != NULL)
        fclose(f);
    *len = buf != NULL ? (size_t)size : 0;
    return buf;
}

/* The hex string member `name` of `entry` as exactly `len` bytes. */
static bool hex_member(const hush_json_value *entry, const char *name, unsigned char *out,
                       size_t len)
{
    size_t hex_len = 0;
    const char *hex = hush_json_string(hush_json_object_get(entry, name, strlen(name)), &hex_len);
    if (hex == NULL || hex_len != 2 * len) {
        fprintf(stderr, "vector member %s missing or not %zu bytes\n", name, len);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = (unsigned char)v;
    }
    return true;
}

static void check_vector(const hush_json_value *entry)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char eseed[HUSH_XWING_ENCAPS_SEED_BYTES], enc[HUSH_XWING_CIPHERTEXT_BYTES];
    unsigned char expected_ss[HUSH_XWING_SHARED_SECRET_BYTES];
    unsigned char got_pk[HUSH_XWING_PUBLIC_KEY_BYTES], got_ct[HUSH_XWING_CIPHERTEXT_BYTES];
    unsigned char got_ss[HUSH_XWING_SHARED_SECRET_BYTES], got_ss2[HUSH_XWING_SHARED_SECRET_BYTES];
    bool parsed = hex_member(entry, "skRm", sk, sizeof sk) &&
                  hex_member(entry, "pkRm", pk, sizeof pk) &&
                  hex_member(entry, "ikmE", eseed, sizeof eseed) &&
                  hex_member(entry, "enc", enc, sizeof enc) &&
                  hex_member(entry, "shared_secret", expected_ss, sizeof expected_ss);
    CHECK(parsed);
    if (!parsed)
        return;
    CHECK_OK(hush_xwing_public_key(sk, got_pk, &err), &err);
    CHECK(memcmp(got_pk, pk, sizeof pk) == 0);
    CHECK_OK(hush_xwing_encaps_derand(pk, eseed, got_ct, got_ss, &err), &err);
    CHECK(memcmp(got_ct, enc, sizeof enc) == 0);
    CHECK(memcmp(got_ss, expected_ss, sizeof expected_ss) == 0);
    CHECK_OK(hush_xwing_decaps(sk, enc, got_ss2, &err), &err);
    CHECK(memcmp(got_ss2, expected_ss, sizeof expected_ss) == 0);
}

static void test_hpke_pq_vectors(void)
{
    hush_error err;
    size_t len = 0;
    unsigned char *text = read_file(PQ_VECTORS, &len);
    hush_json_doc *doc = NULL;
    CHECK(text != NULL);
    if (text == NULL)
        return;
    CHECK_OK(hush_json_parse(text, len, NULL, HUSH_SECMEM_PUBLIC, &doc, &err), &err);
    const hush_json_value *root = hush_json_doc_root(doc);
    size_t checked = 0;
    for (size_t i = 0; i < hush_json_length(root); i++) {
        const hush_json_value *entry = hush_json_array_get(root, i);
        int64_t kem_id = 0;
        CHECK_OK(hush_json_int64(hush_json_object_get(entry, "kem_id", 6), &kem_id, &err), &err);
        if (kem_id != XWING_KEM_ID)
            continue;
        check_vector(entry);
        checked++;
    }
    CHECK(checked >= 2); /* cryptography-vectors 48.0.0 has two */
    hush_json_doc_free(doc);
    free(text);
}

static void test_random_round_trips(void)
{
    hush_error err;
    for (int i = 0; i < 10; i++) {
        unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
        unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32], ss2[32];
        CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
        CHECK_OK(hush_xwing_encaps(pk, ct, ss, &err), &err);
        CHECK_OK(hush_xwing_decaps(sk, ct, ss2, &err), &err);
        CHECK(memcmp(ss, ss2, 32) == 0);
    }
}

/* Either half of the ciphertext changed: a different secret, no error. */
static void test_modified_ciphertext(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32], got[32];
    CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
    CHECK_OK(hush_xwing_encaps(pk, ct, ss, &err), &err);
    size_t positions[] = {17, HUSH_XWING_CIPHERTEXT_BYTES - 5};
    for (size_t i = 0; i < 2; i++) {
        ct[positions[i]] ^= 0x04;
        CHECK_OK(hush_xwing_decaps(sk, ct, got, &err), &err);
        CHECK(memcmp(got, ss, 32) != 0);
        ct[positions[i]] ^= 0x04;
    }
    /* another key pair decapsulates to something else too */
    unsigned char other_sk[HUSH_XWING_PRIVATE_KEY_BYTES], other_pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    CHECK_OK(hush_xwing_keygen(other_sk, other_pk, &err), &err);
    CHECK_OK(hush_xwing_decaps(other_sk, ct, got, &err), &err);
    CHECK(memcmp(got, ss, 32) != 0);
}

static void test_mlkem_part_fails_modulus_check(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32];
    unsigned char eseed[HUSH_XWING_ENCAPS_SEED_BYTES] = {1, 2, 3};
    CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
    pk[0] = 0xff; /* first coefficient of t becomes 0x?ff | 0xf00 >= q */
    pk[1] |= 0x0f;
    CHECK_STATUS(hush_xwing_encaps(pk, ct, ss, &err), HUSH_E_KEY, &err);
    CHECK_STATUS(hush_xwing_encaps_derand(pk, eseed, ct, ss, &err), HUSH_E_KEY, &err);
}

/* A low-order X25519 point (here 0) as the ciphertext's X25519 part is
 * refused with HUSH_E_KEY: the result would be all zeros. */
static void test_low_order_x25519_share(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32];
    CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
    CHECK_OK(hush_xwing_encaps(pk, ct, ss, &err), &err);
    memset(ct + HUSH_XWING_CIPHERTEXT_BYTES - 32, 0, 32);
    CHECK_STATUS(hush_xwing_decaps(sk, ct, ss, &err), HUSH_E_KEY, &err);
    memset(pk + HUSH_XWING_PUBLIC_KEY_BYTES - 32, 0, 32);
    CHECK_STATUS(hush_xwing_encaps(pk, ct, ss, &err), HUSH_E_KEY, &err);
}

static void test_expanded_form_agrees(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32], got[32];
    hush_xwing_expanded *expanded = NULL;
    hush_arena *arena = NULL;
    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &arena, &err), &err);
    CHECK_OK(hush_arena_alloc(arena, sizeof *expanded, (void **)&expanded, &err), &err);
    if (expanded == NULL)
        return;
    CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
    CHECK_OK(hush__xwing_expand(sk, expanded, &err), &err);
    CHECK(memcmp(expanded->pk, pk, sizeof pk) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(hush_xwing_encaps(pk, ct, ss, &err), &err);
        CHECK_OK(hush__xwing_decaps_expanded(expanded, ct, got, &err), &err);
        CHECK(memcmp(got, ss, 32) == 0);
    }
    hush_arena_free(arena);
}

static void test_null_arguments(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES] = {0}, ct[HUSH_XWING_CIPHERTEXT_BYTES] = {0};
    unsigned char ss[32];
    CHECK_STATUS(hush_xwing_keygen(NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_xwing_public_key(sk, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_xwing_encaps(NULL, ct, ss, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_xwing_decaps(NULL, ct, ss, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_xwing_decaps(sk, ct, NULL, &err), HUSH_E_ARGUMENT, &err);
}

int main(void)
{
    RUN_TEST(test_hpke_pq_vectors);
    RUN_TEST(test_random_round_trips);
    RUN_TEST(test_modified_ciphertext);
    RUN_TEST(test_mlkem_part_fails_modulus_check);
    RUN_TEST(test_low_order_x25519_share);
    RUN_TEST(test_expanded_form_agrees);
    RUN_TEST(test_null_arguments);
    return check_report();
}
