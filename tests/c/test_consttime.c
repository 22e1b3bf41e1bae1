/* test_consttime.c — run under valgrind memcheck by ctest: the secret
 * inputs of ML-KEM and X-Wing decapsulation and encapsulation and of
 * OpenSSL's X25519 are marked undefined (VALGRIND_MAKE_MEM_UNDEFINED), so any branch or
 * memory index that depends on them is reported and valgrind's error exit
 * code fails the test. Outputs are marked defined only after each
 * operation, before they are compared with the expected values.
 *
 * `test_consttime leaky` runs the same harness on a function that branches
 * on a secret byte: the negative control, which must fail. */
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <valgrind/memcheck.h>

#include "check.h"
#include "crypto/crypto_internal.h"

#define ITERATIONS 2 /* valgrind is slow; the paths do not depend on the key */
#define MLKEM_DK_PKE_BYTES (3 * 384)
#define MLKEM_DK_Z_OFFSET (HUSH_MLKEM768_DECAPS_KEY_BYTES - 32)

#define SECRET(ptr, len) VALGRIND_MAKE_MEM_UNDEFINED((ptr), (len))
#define DECLASSIFY(ptr, len) VALGRIND_MAKE_MEM_DEFINED((ptr), (len))

/* An ML-KEM dk's secret parts: s (dk_pke) and z. ek and H(ek) are public. */
static void mlkem_dk_secret(unsigned char *dk)
{
    SECRET(dk, MLKEM_DK_PKE_BYTES);
    SECRET(dk + MLKEM_DK_Z_OFFSET, 32);
}

static void mlkem_dk_public(unsigned char *dk)
{
    DECLASSIFY(dk, HUSH_MLKEM768_DECAPS_KEY_BYTES);
}

static void test_mlkem_decaps(void)
{
    hush_error err;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32], got[32];
    for (int i = 0; i < ITERATIONS; i++) {
        CHECK_OK(hush_mlkem768_keygen(ek, dk, &err), &err);
        CHECK_OK(hush_mlkem768_encaps(ek, ct, ss, &err), &err);
        /* a good ciphertext, then one that fails re-encryption */
        for (int bad = 0; bad < 2; bad++) {
            ct[100] ^= (unsigned char)bad;
            mlkem_dk_secret(dk);
            CHECK_OK(hush_mlkem768_decaps(dk, ct, got, &err), &err);
            mlkem_dk_public(dk);
            DECLASSIFY(got, sizeof got);
            CHECK((memcmp(got, ss, 32) == 0) == (bad == 0));
            ct[100] ^= (unsigned char)bad;
        }
    }
}

/* Encapsulation's secret is m (and everything derived from it). */
static void test_mlkem_encaps(void)
{
    hush_error err;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32], got[32];
    unsigned char m[HUSH_MLKEM768_MESSAGE_BYTES];
    for (int i = 0; i < ITERATIONS; i++) {
        CHECK_OK(hush_mlkem768_keygen(ek, dk, &err), &err);
        CHECK(RAND_bytes(m, sizeof m) == 1);
        SECRET(m, sizeof m);
        CHECK_OK(hush_mlkem768_encaps_derand(ek, m, ct, ss, &err), &err);
        DECLASSIFY(m, sizeof m);
        DECLASSIFY(ct, sizeof ct);
        DECLASSIFY(ss, sizeof ss);
        CHECK_OK(hush_mlkem768_decaps(dk, ct, got, &err), &err);
        CHECK(memcmp(got, ss, 32) == 0);
    }
}

/* X-Wing encapsulation's secret is eseed: ML-KEM's m and the ephemeral
 * X25519 key. */
static void test_xwing_encaps(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32], got[32];
    unsigned char eseed[HUSH_XWING_ENCAPS_SEED_BYTES];
    for (int i = 0; i < ITERATIONS; i++) {
        CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
        CHECK(RAND_bytes(eseed, sizeof eseed) == 1);
        SECRET(eseed, sizeof eseed);
        CHECK_OK(hush_xwing_encaps_derand(pk, eseed, ct, ss, &err), &err);
        DECLASSIFY(eseed, sizeof eseed);
        DECLASSIFY(ct, sizeof ct);
        DECLASSIFY(ss, sizeof ss);
        CHECK_OK(hush_xwing_decaps(sk, ct, got, &err), &err);
        CHECK(memcmp(got, ss, 32) == 0);
    }
}

static void test_xwing_decaps(void)
{
    hush_error err;
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES], pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES], ss[32], got[32];
    hush_xwing_expanded key;
    for (int i = 0; i < ITERATIONS; i++) {
        CHECK_OK(hush_xwing_keygen(sk, pk, &err), &err);
        CHECK_OK(hush_xwing_encaps(pk, ct, ss, &err), &err);
        /* Expanding samples the public matrix from rho, by rejection:
         * that runs on public data, so the secrets are marked after it. */
        CHECK_OK(hush__xwing_expand(sk, &key, &err), &err);
        mlkem_dk_secret(key.mlkem_dk);
        SECRET(key.x25519_sk, sizeof key.x25519_sk);
        CHECK_OK(hush__xwing_decaps_expanded(&key, ct, got, &err), &err);
        DECLASSIFY(&key, sizeof key);
        DECLASSIFY(got, sizeof got);
        CHECK(memcmp(got, ss, 32) == 0);
    }
    hush_memzero(&key, sizeof key);
}

/* X25519 through OpenSSL: the private key secret, the shared secret
 * compared with the peer's computation. */
static void x25519_agree(const unsigned char sk[32], const unsigned char peer[32],
                         unsigned char out[32])
{
    size_t len = 32;
    EVP_PKEY *ours = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
    EVP_PKEY *theirs = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, 32);
    EVP_PKEY_CTX *ctx = ours != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, ours, NULL) : NULL;
    CHECK(ctx != NULL && theirs != NULL && EVP_PKEY_derive_init(ctx) == 1 &&
          EVP_PKEY_derive_set_peer(ctx, theirs) == 1 && EVP_PKEY_derive(ctx, out, &len) == 1 &&
          len == 32);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(theirs);
    EVP_PKEY_free(ours);
}

static void x25519_public(const unsigned char sk[32], unsigned char pk[32])
{
    size_t len = 32;
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
    CHECK(key != NULL && EVP_PKEY_get_raw_public_key(key, pk, &len) == 1 && len == 32);
    EVP_PKEY_free(key);
}

static void test_x25519(void)
{
    unsigned char a[32], b[32], pub_a[32], pub_b[32], ab[32], ba[32];
    for (int i = 0; i < ITERATIONS; i++) {
        CHECK(RAND_bytes(a, 32) == 1 && RAND_bytes(b, 32) == 1);
        x25519_public(a, pub_a);
        x25519_public(b, pub_b);
        SECRET(a, sizeof a);
        x25519_agree(a, pub_b, ab);
        DECLASSIFY(a, sizeof a);
        DECLASSIFY(ab, sizeof ab);
        x25519_agree(b, pub_a, ba);
        CHECK(memcmp(ab, ba, 32) == 0);
    }
}

/* The negative control: a comparison that stops at the first differing
 * byte, the classic leak. noinline keeps its name in valgrind's report. */
__attribute__((noinline)) static bool leaky_equal(const unsigned char *a, const unsigned char *b,
                                                  size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static void test_leaky_control(void)
{
    unsigned char secret[32], guess[32] = {0};
    CHECK(RAND_bytes(secret, sizeof secret) == 1);
    SECRET(secret, sizeof secret);
    bool equal = leaky_equal(secret, guess, sizeof secret);
    DECLASSIFY(secret, sizeof secret);
    CHECK(equal == (memcmp(secret, guess, sizeof secret) == 0));
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "leaky") == 0) {
        RUN_TEST(test_leaky_control);
        return check_report();
    }
    RUN_TEST(test_mlkem_decaps);
    RUN_TEST(test_mlkem_encaps);
    RUN_TEST(test_xwing_decaps);
    RUN_TEST(test_xwing_encaps);
    RUN_TEST(test_x25519);
    return check_report();
}
