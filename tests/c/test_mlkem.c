/* test_mlkem.c — ML-KEM-768 against every entry of NIST's known answers
 * (cryptography-vectors' kat_MLKEM_768.rsp: keys from d || z, encapsulation
 * from msg, decapsulation of ct and of the invalid ct_n, whose answer is the
 * implicit-rejection secret), the key checks of FIPS 203 §7.2 and §7.3, the
 * rejection secret recomputed as J(z || c) with OpenSSL's SHAKE256, random
 * round trips. The live cross-check with pyca cryptography is
 * tests/c/cross_pyca.py. */
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "check.h"
#include "crypto/crypto_internal.h"
#include "hushcall/mlkem.h"

#define KAT_FILE HUSH_TEST_VECTORS_DIR "/asymmetric/MLKEM/kat_MLKEM_768.rsp"
#define KAT_ENTRIES 1000 /* the file's count = 0 .. 999 */
#define DK_HASH_OFFSET (3 * 384 + HUSH_MLKEM768_ENCAPS_KEY_BYTES)
#define DK_Z_OFFSET (DK_HASH_OFFSET + 32)

/* One known-answer entry; `have` counts the fields read so far. */
typedef struct {
    unsigned char z[32], d[32], msg[32];
    unsigned char pk[HUSH_MLKEM768_ENCAPS_KEY_BYTES], sk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32];
    unsigned char ct_n[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss_n[32];
    int have;
} kat_entry;

static bool hex_to_bytes(const char *hex, unsigned char *out, size_t len)
{
    if (strlen(hex) != 2 * len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = (unsigned char)v;
    }
    return true;
}

/* Store `name = hex` in the entry; false for a field of the wrong size. */
static bool kat_field(kat_entry *e, const char *name, const char *hex)
{
    struct {
        const char *name;
        unsigned char *dst;
        size_t len;
    } fields[] = {
        {"z", e->z, 32},       {"d", e->d, 32},
        {"msg", e->msg, 32},   {"pk", e->pk, sizeof e->pk},
        {"sk", e->sk, sizeof e->sk}, {"ct", e->ct, sizeof e->ct},
        {"ss", e->ss, 32},     {"ct_n", e->ct_n, sizeof e->ct_n},
        {"ss_n", e->ss_n, 32},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(name, fields[i].name) == 0) {
            e->have++;
            return hex_to_bytes(hex, fields[i].dst, fields[i].len);
        }
    }
    return true; /* count, seed: not inputs of the _internal functions */
}

static void kat_check_entry(const kat_entry *e, int count)
{
    hush_error err;
    unsigned char seed[HUSH_MLKEM768_SEED_BYTES];
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32], ss2[32], ss_n[32];
    memcpy(seed, e->d, 32);
    memcpy(seed + 32, e->z, 32);
    CHECK_OK(hush_mlkem768_keygen_from_seed(seed, ek, dk, &err), &err);
    CHECK_OK(hush_mlkem768_encaps_derand(e->pk, e->msg, ct, ss, &err), &err);
    CHECK_OK(hush_mlkem768_decaps(e->sk, e->ct, ss2, &err), &err);
    CHECK_OK(hush_mlkem768_decaps(e->sk, e->ct_n, ss_n, &err), &err);
    bool ok = memcmp(ek, e->pk, sizeof ek) == 0 && memcmp(dk, e->sk, sizeof dk) == 0 &&
              memcmp(ct, e->ct, sizeof ct) == 0 && memcmp(ss, e->ss, 32) == 0 &&
              memcmp(ss2, e->ss, 32) == 0 && memcmp(ss_n, e->ss_n, 32) == 0;
    if (!ok)
        fprintf(stderr, "known answer count = %d differs\n", count);
    CHECK(ok);
}

static void test_known_answers(void)
{
    FILE *f = fopen(KAT_FILE, "r");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    kat_entry *e = calloc(1, sizeof *e);
    static char line[8192];
    char name[16];
    int entries = 0;
    while (e != NULL && fgets(line, sizeof line, f) != NULL) {
        static char hex[8192];
        if (sscanf(line, "%15s = %8191s", name, hex) != 2)
            continue;
        if (strcmp(name, "count") == 0) {
            memset(e, 0, sizeof *e);
            continue;
        }
        CHECK(kat_field(e, name, hex));
        if (e->have == 9) {
            kat_check_entry(e, entries);
            entries++;
            e->have = 0;
        }
    }
    fclose(f);
    free(e);
    CHECK_EQ(entries, KAT_ENTRIES);
}

static void fresh_pair(unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                       unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES])
{
    hush_error err;
    CHECK_OK(hush_mlkem768_keygen(ek, dk, &err), &err);
}

static void test_random_round_trips(void)
{
    hush_error err;
    for (int i = 0; i < 20; i++) {
        unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
        unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32], ss2[32];
        fresh_pair(ek, dk);
        CHECK_OK(hush_mlkem768_check_encaps_key(ek, &err), &err);
        CHECK_OK(hush_mlkem768_encaps(ek, ct, ss, &err), &err);
        CHECK_OK(hush_mlkem768_decaps(dk, ct, ss2, &err), &err);
        CHECK(memcmp(ss, ss2, 32) == 0);
    }
}

/* SHAKE256(z || c, 32), FIPS 203's J, computed here with OpenSSL. */
static void rejection_secret(const unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                             const unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                             unsigned char out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    CHECK(ctx != NULL && EVP_DigestInit_ex(ctx, EVP_shake256(), NULL) == 1 &&
          EVP_DigestUpdate(ctx, dk + DK_Z_OFFSET, 32) == 1 &&
          EVP_DigestUpdate(ctx, ct, HUSH_MLKEM768_CIPHERTEXT_BYTES) == 1 &&
          EVP_DigestFinalXOF(ctx, out, 32) == 1);
    EVP_MD_CTX_free(ctx);
}

static void test_flipped_ciphertext_gives_rejection_secret(void)
{
    hush_error err;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32], got[32], expected[32];
    fresh_pair(ek, dk);
    CHECK_OK(hush_mlkem768_encaps(ek, ct, ss, &err), &err);
    /* a bit in u and a bit in v: both must fail re-encryption */
    size_t positions[] = {0, 700 * 8 + 3, HUSH_MLKEM768_CIPHERTEXT_BYTES * 8 - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        ct[positions[i] / 8] ^= (unsigned char)(1u << (positions[i] % 8));
        CHECK_OK(hush_mlkem768_decaps(dk, ct, got, &err), &err);
        rejection_secret(dk, ct, expected);
        CHECK(memcmp(got, ss, 32) != 0);
        CHECK(memcmp(got, expected, 32) == 0);
        ct[positions[i] / 8] ^= (unsigned char)(1u << (positions[i] % 8));
    }
    CHECK_OK(hush_mlkem768_decaps(dk, ct, got, &err), &err);
    CHECK(memcmp(got, ss, 32) == 0);
}

/* Sets coefficient `index` of the first polynomial of ek's t to `value`
 * (ByteEncode12: two 12-bit values in three bytes, little-endian). */
static void set_coefficient(unsigned char *ek, size_t index, unsigned value)
{
    unsigned char *b = ek + 3 * (index / 2);
    if (index % 2 == 0) {
        b[0] = (unsigned char)value;
        b[1] = (unsigned char)((b[1] & 0xf0) | (value >> 8));
    } else {
        b[1] = (unsigned char)((b[1] & 0x0f) | ((value & 15) << 4));
        b[2] = (unsigned char)(value >> 4);
    }
}

static void test_encaps_key_modulus_check(void)
{
    hush_error err;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32];
    unsigned char m[32] = {7};
    fresh_pair(ek, dk);
    set_coefficient(ek, 0, 3328); /* q - 1: still valid */
    CHECK_OK(hush_mlkem768_check_encaps_key(ek, &err), &err);
    unsigned bad[] = {3329, 4095};
    size_t where[] = {1, 254};
    for (size_t i = 0; i < 2; i++) {
        unsigned char copy[sizeof ek];
        memcpy(copy, ek, sizeof ek);
        set_coefficient(copy, where[i], bad[i]);
        CHECK_STATUS(hush_mlkem768_check_encaps_key(copy, &err), HUSH_E_KEY, &err);
        CHECK_STATUS(hush_mlkem768_encaps(copy, ct, ss, &err), HUSH_E_KEY, &err);
        CHECK_STATUS(hush_mlkem768_encaps_derand(copy, m, ct, ss, &err), HUSH_E_KEY, &err);
    }
    /* the last polynomial too: the check covers all k of them */
    ek[3 * 384 - 1] = 0xff;
    ek[3 * 384 - 2] |= 0xf0;
    CHECK_STATUS(hush_mlkem768_check_encaps_key(ek, &err), HUSH_E_KEY, &err);
}

static void test_decaps_key_hash_check(void)
{
    hush_error err;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES], ss[32], got[32];
    fresh_pair(ek, dk);
    CHECK_OK(hush_mlkem768_encaps(ek, ct, ss, &err), &err);
    dk[DK_HASH_OFFSET + 5] ^= 1; /* H(ek) */
    CHECK_STATUS(hush_mlkem768_decaps(dk, ct, got, &err), HUSH_E_KEY, &err);
    dk[DK_HASH_OFFSET + 5] ^= 1;
    dk[3 * 384 + 10] ^= 1; /* the ek H(ek) covers */
    CHECK_STATUS(hush_mlkem768_decaps(dk, ct, got, &err), HUSH_E_KEY, &err);
    dk[3 * 384 + 10] ^= 1;
    CHECK_OK(hush_mlkem768_decaps(dk, ct, got, &err), &err);
    CHECK(memcmp(got, ss, 32) == 0);
}

static void test_null_arguments(void)
{
    hush_error err;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES] = {0}, ct[HUSH_MLKEM768_CIPHERTEXT_BYTES];
    unsigned char ss[32];
    CHECK_STATUS(hush_mlkem768_keygen(NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_mlkem768_encaps(ek, ct, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_mlkem768_decaps(NULL, ct, ss, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_mlkem768_check_encaps_key(NULL, &err), HUSH_E_ARGUMENT, &err);
}

#ifdef HUSH_TEST_MLKEM_OWN
/* A first squeeze of one block (112 candidates) never fills a polynomial,
 * so the longer squeezes must carry on to the same one as three blocks. */
static void test_sample_ntt_fallback(void)
{
    hush_error err;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char seed[34];
    int16_t full[256], fallback[256];
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    fresh_pair(ek, dk); /* the library's one-time init fetches SHAKE128 */
    for (int i = 0; i < 34; i++)
        seed[i] = (unsigned char)(i * 37 + 1);
    CHECK(ctx != NULL);
    CHECK_OK(hush__mlkem768_sample_ntt(ctx, seed, 504, full, &err), &err);
    CHECK_OK(hush__mlkem768_sample_ntt(ctx, seed, 168, fallback, &err), &err);
    CHECK_STATUS(hush__mlkem768_sample_ntt(ctx, seed, 0, fallback, &err), HUSH_E_ARGUMENT, &err);
    CHECK(memcmp(full, fallback, sizeof full) == 0);
    for (int i = 0; i < 256; i++)
        CHECK(full[i] >= 0 && full[i] < 3329);
    EVP_MD_CTX_free(ctx);
}

#endif

/* The implementation the build chose (CMake: OpenSSL >= 3.5 or not). */
static void test_implementation_name(void)
{
    CHECK(strcmp(hush_mlkem768_implementation(), HUSH_TEST_MLKEM_IMPLEMENTATION) == 0);
}

int main(void)
{
    RUN_TEST(test_known_answers);
    RUN_TEST(test_random_round_trips);
    RUN_TEST(test_flipped_ciphertext_gives_rejection_secret);
    RUN_TEST(test_encaps_key_modulus_check);
    RUN_TEST(test_decaps_key_hash_check);
    RUN_TEST(test_null_arguments);
#ifdef HUSH_TEST_MLKEM_OWN
    RUN_TEST(test_sample_ntt_fallback);
#endif
    RUN_TEST(test_implementation_name);
    return check_report();
}
