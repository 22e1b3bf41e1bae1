/* test_keys.c — RSA key pairs: generation, PEM round trips with and without
 * a password, the file checks a private key must pass, atomic key
 * directories, fingerprints recomputed independently, and the keys that
 * must be refused. Every test works in its own directory under /tmp. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "check.h"
#include "tempfiles.h"

/* Distinctive, so a message that leaked it would be found. */
#define PASSWORD "Quokka-Marmalade-7731"
#define OTHER_PASSWORD "Wombat-Chutney-4410"

static hush_keypair *shared_key; /* 2048 bits, made once: generation is slow */

/* ---- helpers ----------------------------------------------------------- */

/* True when `dir` holds exactly the key files (`count` of them: 0 or 2). */
static bool dir_holds_only_keys(const char *dir, int count)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    int seen = 0;
    bool only_keys = true;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        seen++;
        if (strcmp(de->d_name, HUSH_PRIVATE_KEY_FILE) != 0 &&
            strcmp(de->d_name, HUSH_PUBLIC_KEY_FILE) != 0) {
            fprintf(stderr, "unexpected file %s in %s\n", de->d_name, dir);
            only_keys = false;
        }
    }
    closedir(d);
    return only_keys && seen == count;
}

static bool same_fingerprint(const hush_keypair *a, const hush_keypair *b)
{
    char fa[HUSH_FINGERPRINT_LEN], fb[HUSH_FINGERPRINT_LEN];
    return hush_keypair_fingerprint(a, fa, NULL) == HUSH_OK &&
           hush_keypair_fingerprint(b, fb, NULL) == HUSH_OK && strcmp(fa, fb) == 0;
}

/* PEM text of a key made with OpenSSL directly, in the given structure
 * ("PrivateKeyInfo", "SubjectPublicKeyInfo", "type-specific"). */
static char *openssl_pem(EVP_PKEY *pkey, int selection, const char *structure)
{
    unsigned char *data = NULL;
    size_t len = 0;
    OSSL_ENCODER_CTX *ctx =
        OSSL_ENCODER_CTX_new_for_pkey(pkey, selection, "PEM", structure, NULL);
    char *pem = NULL;
    if (ctx != NULL && OSSL_ENCODER_to_data(ctx, &data, &len) == 1) {
        pem = calloc(1, len + 1);
        if (pem != NULL)
            memcpy(pem, data, len);
    }
    OPENSSL_free(data);
    OSSL_ENCODER_CTX_free(ctx);
    return pem;
}

static char *private_pkcs8_pem(EVP_PKEY *pkey)
{
    return openssl_pem(pkey, OSSL_KEYMGMT_SELECT_KEYPAIR, "PrivateKeyInfo");
}

static char *public_spki_pem(EVP_PKEY *pkey)
{
    return openssl_pem(pkey, EVP_PKEY_PUBLIC_KEY, "SubjectPublicKeyInfo");
}

/* The key derivation OID inside an ENCRYPTED PRIVATE KEY PEM. */
static PBE2PARAM *pbes2_of(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509_SIG *sig = PEM_read_bio_PKCS8(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (sig == NULL)
        return NULL;
    const X509_ALGOR *alg = NULL;
    X509_SIG_get0(sig, &alg, NULL);
    PBE2PARAM *pbe2 = OBJ_obj2nid(alg->algorithm) == NID_pbes2
                          ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter)
                          : NULL;
    X509_SIG_free(sig);
    return pbe2;
}

/* ---- generation -------------------------------------------------------- */

static void test_generate_2048(void)
{
    hush_error err;
    CHECK_OK(hush_keypair_generate(2048, &shared_key, &err), &err);
    CHECK(shared_key != NULL);
    CHECK_EQ(hush_keypair_bits(shared_key), 2048);
}

static void test_generate_default_is_4096(void)
{
    hush_keypair *kp = NULL;
    hush_error err;
    CHECK_OK(hush_keypair_generate(0, &kp, &err), &err);
    CHECK_EQ(hush_keypair_bits(kp), 4096);
    hush_keypair_free(kp);
}

static void test_generate_refuses_bad_sizes(void)
{
    hush_keypair *kp = shared_key; /* must be reset to NULL */
    hush_error err;
    CHECK_STATUS(hush_keypair_generate(1024, &kp, &err), HUSH_E_KEY, &err);
    CHECK(strstr(err.message, "2048") != NULL);
    CHECK(kp == NULL);
    CHECK_STATUS(hush_keypair_generate(2047, &kp, &err), HUSH_E_KEY, &err);
    CHECK_STATUS(hush_keypair_generate(HUSH_RSA_MAX_BITS + 1, &kp, &err), HUSH_E_KEY, &err);
    CHECK_STATUS(hush_keypair_generate(2048, NULL, &err), HUSH_E_ARGUMENT, &err);
}

static void test_refcount(void)
{
    hush_keypair *again = hush_keypair_ref(shared_key);
    CHECK(again == shared_key);
    hush_keypair_free(again); /* shared_key stays usable */
    CHECK_EQ(hush_keypair_bits(shared_key), 2048);
    hush_keypair_free(NULL);
    hush_pubkey_free(NULL);
    CHECK(hush_keypair_ref(NULL) == NULL);
}

/* ---- fingerprints ------------------------------------------------------ */

static void test_fingerprint_matches_independent_computation(void)
{
    hush_error err;
    char fp[HUSH_FINGERPRINT_LEN];
    CHECK_OK(hush_keypair_fingerprint(shared_key, fp, &err), &err);

    /* Recompute from the public PEM with OpenSSL alone. */
    char *pem = NULL;
    size_t pem_len = 0;
    CHECK_OK(hush_keypair_public_pem(shared_key, &pem, &pem_len, &err), &err);
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    CHECK(pkey != NULL);
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(pkey, &der);
    unsigned char md[32];
    unsigned md_len = 0;
    CHECK(EVP_Digest(der, (size_t)der_len, md, &md_len, EVP_sha256(), NULL) == 1);
    char expected[HUSH_FINGERPRINT_LEN] = "sha256:";
    for (unsigned i = 0; i < md_len; i++)
        snprintf(expected + 7 + 2 * i, 3, "%02x", md[i]);
    CHECK(strcmp(fp, expected) == 0);

    CHECK_EQ(strlen(fp), HUSH_FINGERPRINT_LEN - 1);
    CHECK(strncmp(fp, "sha256:", 7) == 0);
    CHECK(strspn(fp + 7, "0123456789abcdef") == 64);

    OPENSSL_free(der);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    free(pem);
}

/* ---- PEM round trips --------------------------------------------------- */

static void test_private_pem_unencrypted(void)
{
    hush_secbuf *pem = NULL;
    hush_keypair *back = NULL;
    hush_error err;
    CHECK_OK(hush_keypair_private_pem(shared_key, NULL, HUSH_KDF_PBKDF2, &pem, &err), &err);
    const char *text = (const char *)hush_secbuf_data(pem);
    CHECK(strncmp(text, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);
    /* Unencrypted, a password given anyway is not an error. */
    CHECK_OK(hush_keypair_from_pem(text, hush_secbuf_len(pem), PASSWORD, &back, &err), &err);
    CHECK(same_fingerprint(back, shared_key));
    hush_keypair_free(back);
    hush_secbuf_free(pem);
}

/* Export with `kdf`, check the PBES2 envelope (AES-256-CBC under `kdf_nid`)
 * and that OpenSSL alone reads the file back; the caller checks the KDF's
 * own parameters in the returned PBE2PARAM. */
static PBE2PARAM *exported_pbes2(hush_key_kdf kdf, int kdf_nid)
{
    hush_secbuf *pem = NULL;
    hush_error err;
    CHECK_OK(hush_keypair_private_pem(shared_key, PASSWORD, kdf, &pem, &err), &err);
    CHECK_OK(hush_secbuf_append_byte(pem, 0, &err), &err);
    const char *text = (const char *)hush_secbuf_data(pem);
    CHECK(strncmp(text, "-----BEGIN ENCRYPTED PRIVATE KEY-----\n", 38) == 0);

    PBE2PARAM *pbe2 = pbes2_of(text);
    CHECK(pbe2 != NULL);
    if (pbe2 != NULL) {
        CHECK_EQ(OBJ_obj2nid(pbe2->keyfunc->algorithm), kdf_nid);
        CHECK_EQ(OBJ_obj2nid(pbe2->encryption->algorithm), NID_aes_256_cbc);
    }
    /* Readable by OpenSSL on its own (what "readable everywhere" means). */
    BIO *bio = BIO_new_mem_buf(text, -1);
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)PASSWORD);
    CHECK(pkey != NULL && EVP_PKEY_get_bits(pkey) == 2048);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    hush_secbuf_free(pem);
    return pbe2;
}

static void test_pbkdf2_pem_parameters(void)
{
    PBE2PARAM *pbe2 = exported_pbes2(HUSH_KDF_PBKDF2, NID_id_pbkdf2);
    PBKDF2PARAM *kdf = pbe2 == NULL ? NULL
        : ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM), pbe2->keyfunc->parameter);
    CHECK(kdf != NULL);
    if (kdf != NULL) {
        CHECK_EQ(ASN1_INTEGER_get(kdf->iter), 600000);
        CHECK(kdf->salt->type == V_ASN1_OCTET_STRING &&
              ASN1_STRING_length(kdf->salt->value.octet_string) >= 16);
        CHECK(kdf->prf != NULL && OBJ_obj2nid(kdf->prf->algorithm) == NID_hmacWithSHA256);
    }
    PBKDF2PARAM_free(kdf);
    PBE2PARAM_free(pbe2);
}

static void test_scrypt_pem_parameters(void)
{
    PBE2PARAM *pbe2 = exported_pbes2(HUSH_KDF_SCRYPT, NID_id_scrypt);
    SCRYPT_PARAMS *kdf = pbe2 == NULL ? NULL
        : ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), pbe2->keyfunc->parameter);
    CHECK(kdf != NULL);
    if (kdf != NULL) {
        CHECK_EQ(ASN1_INTEGER_get(kdf->costParameter), 1 << 14);
        CHECK_EQ(ASN1_INTEGER_get(kdf->blockSize), 8);
        CHECK_EQ(ASN1_INTEGER_get(kdf->parallelizationParameter), 5);
        CHECK(ASN1_STRING_length(kdf->salt) >= 16);
    }
    SCRYPT_PARAMS_free(kdf);
    PBE2PARAM_free(pbe2);
}

/* Our scrypt PEM with its parameters replaced, as a hostile file would. */
static char *with_scrypt_params(const char *pem, uint64_t n, uint64_t p)
{
    BIO *in = BIO_new_mem_buf(pem, -1), *out = BIO_new(BIO_s_mem());
    X509_SIG *sig = PEM_read_bio_PKCS8(in, NULL, NULL, NULL);
    X509_ALGOR *alg = NULL;
    ASN1_OCTET_STRING *ct = NULL;
    X509_SIG_getm(sig, &alg, &ct);
    PBE2PARAM *pbe2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
    SCRYPT_PARAMS *kdf =
        ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), pbe2->keyfunc->parameter);
    ASN1_INTEGER_set_uint64(kdf->costParameter, n);
    ASN1_INTEGER_set_uint64(kdf->parallelizationParameter, p);
    ASN1_TYPE_pack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), kdf, &pbe2->keyfunc->parameter);
    ASN1_TYPE_pack_sequence(ASN1_ITEM_rptr(PBE2PARAM), pbe2, &alg->parameter);
    PEM_write_bio_PKCS8(out, sig);
    char *data = NULL;
    long len = BIO_get_mem_data(out, &data);
    char *copy = calloc(1, (size_t)len + 1);
    memcpy(copy, data, (size_t)len);
    SCRYPT_PARAMS_free(kdf);
    PBE2PARAM_free(pbe2);
    X509_SIG_free(sig);
    BIO_free(out);
    BIO_free(in);
    return copy;
}

static void test_hostile_scrypt_parameters_refused(void)
{
    hush_secbuf *pem = NULL;
    hush_keypair *kp = NULL;
    hush_error err;
    CHECK_OK(hush_keypair_private_pem(shared_key, PASSWORD, HUSH_KDF_SCRYPT, &pem, &err), &err);
    CHECK_OK(hush_secbuf_append_byte(pem, 0, &err), &err);
    const char *text = (const char *)hush_secbuf_data(pem);

    char *huge_n = with_scrypt_params(text, 1u << 22, 1); /* 4 GiB */
    CHECK_STATUS(hush_keypair_from_pem(huge_n, strlen(huge_n), PASSWORD, &kp, &err), HUSH_E_LIMIT,
                 &err);
    char *huge_p = with_scrypt_params(text, 1u << 14, 1u << 20); /* 16 GiB of blocks */
    CHECK_STATUS(hush_keypair_from_pem(huge_p, strlen(huge_p), PASSWORD, &kp, &err), HUSH_E_LIMIT,
                 &err);
    /* Malformed costs cannot derive the key: as a damaged file. */
    char *odd_n = with_scrypt_params(text, 3, 1);
    CHECK_STATUS(hush_keypair_from_pem(odd_n, strlen(odd_n), PASSWORD, &kp, &err),
                 HUSH_E_PASSWORD, &err);
    /* Smaller N than we write is fine to read, but derives another key. */
    char *small_n = with_scrypt_params(text, 1u << 10, 1);
    CHECK_STATUS(hush_keypair_from_pem(small_n, strlen(small_n), PASSWORD, &kp, &err),
                 HUSH_E_PASSWORD, &err);
    CHECK(kp == NULL);
    free(small_n);
    free(odd_n);
    free(huge_p);
    free(huge_n);
    hush_secbuf_free(pem);
}

static void test_kdf_and_password_arguments(void)
{
    hush_secbuf *pem = NULL;
    hush_error err;
    CHECK_STATUS(hush_keypair_private_pem(shared_key, PASSWORD, (hush_key_kdf)7, &pem, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(pem == NULL);
    /* Longer than OpenSSL can read back: refused rather than written. */
    char long_password[PEM_BUFSIZE + 2];
    memset(long_password, 'p', sizeof long_password - 1);
    long_password[sizeof long_password - 1] = '\0';
    CHECK_STATUS(hush_keypair_private_pem(shared_key, long_password, HUSH_KDF_PBKDF2, &pem, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(pem == NULL);
}

/* ---- key directories --------------------------------------------------- */

static void check_round_trip(const char *password, hush_key_kdf kdf)
{
    char dir[64], keydir[128];
    hush_keypair *back = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(keydir, sizeof keydir, dir, "keys");
    CHECK_OK(hush_keypair_save_dir(shared_key, keydir, password, kdf, HUSH_KEYS_SAVE_DEFAULT,
                                   &err),
             &err);
    CHECK(dir_holds_only_keys(keydir, 2));

    CHECK_OK(hush_keypair_load_dir(keydir, password, &back, &err), &err);
    CHECK(back != NULL && same_fingerprint(back, shared_key));
    CHECK_EQ(hush_keypair_bits(back), 2048);
    hush_keypair_free(back);
    remove_tree(dir);
}

static void test_save_load_unencrypted(void) { check_round_trip(NULL, HUSH_KDF_PBKDF2); }
static void test_save_load_pbkdf2(void) { check_round_trip(PASSWORD, HUSH_KDF_PBKDF2); }
static void test_save_load_scrypt(void) { check_round_trip(PASSWORD, HUSH_KDF_SCRYPT); }

static void check_modes_under_umask(mode_t mask)
{
    char dir[64], keydir[128], path[192];
    hush_error err;
    make_temp_dir(dir);
    join(keydir, sizeof keydir, dir, "keys");
    mode_t old = umask(mask);
    CHECK_OK(hush_keypair_save_dir(shared_key, keydir, NULL, HUSH_KDF_PBKDF2,
                                   HUSH_KEYS_SAVE_DEFAULT, &err),
             &err);
    umask(old);
    CHECK_EQ(file_mode(keydir), 0700);
    join(path, sizeof path, keydir, HUSH_PRIVATE_KEY_FILE);
    CHECK_EQ(file_mode(path), 0600);
    join(path, sizeof path, keydir, HUSH_PUBLIC_KEY_FILE);
    CHECK_EQ(file_mode(path), 0644);
    remove_tree(dir);
}

static void test_file_modes_exact_whatever_the_umask(void)
{
    check_modes_under_umask(0);
    check_modes_under_umask(077);
    check_modes_under_umask(0777);
}

static void test_save_into_existing_dir(void)
{
    char dir[64];
    hush_keypair *back = NULL;
    hush_error err;
    make_temp_dir(dir); /* exists already, mode 0700 from mkdtemp */
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), &err);
    CHECK_OK(hush_keypair_load_dir(dir, NULL, &back, &err), &err);
    CHECK(dir_holds_only_keys(dir, 2));
    hush_keypair_free(back);
    remove_tree(dir);
}

static void test_existing_files_refused_without_overwrite(void)
{
    char dir[64], priv[128], pub[128];
    hush_keypair *other = NULL, *back = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(priv, sizeof priv, dir, HUSH_PRIVATE_KEY_FILE);
    join(pub, sizeof pub, dir, HUSH_PUBLIC_KEY_FILE);
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), &err);
    char *priv_before = read_file(priv, NULL), *pub_before = read_file(pub, NULL);

    CHECK_OK(hush_keypair_generate(2048, &other, &err), &err);
    CHECK_STATUS(hush_keypair_save_dir(other, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), HUSH_E_EXISTS,
                 &err);
    char *priv_after = read_file(priv, NULL), *pub_after = read_file(pub, NULL);
    CHECK(priv_after != NULL && strcmp(priv_before, priv_after) == 0);
    CHECK(pub_after != NULL && strcmp(pub_before, pub_after) == 0);
    CHECK(dir_holds_only_keys(dir, 2));
    free(priv_after);
    free(pub_after);

    /* One existing file is enough to refuse, and nothing else is written. */
    CHECK(unlink(priv) == 0);
    CHECK_STATUS(hush_keypair_save_dir(other, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), HUSH_E_EXISTS,
                 &err);
    CHECK(access(priv, F_OK) != 0);
    pub_after = read_file(pub, NULL);
    CHECK(pub_after != NULL && strcmp(pub_before, pub_after) == 0);
    free(pub_after);

    /* With overwrite both are replaced, modes still exact. */
    CHECK_OK(hush_keypair_save_dir(other, dir, PASSWORD, HUSH_KDF_PBKDF2,
                                   HUSH_KEYS_SAVE_OVERWRITE, &err),
             &err);
    CHECK_OK(hush_keypair_load_dir(dir, PASSWORD, &back, &err), &err);
    CHECK(back != NULL && same_fingerprint(back, other));
    pub_after = read_file(pub, NULL);
    CHECK(pub_after != NULL && strcmp(pub_before, pub_after) != 0);
    CHECK_EQ(file_mode(priv), 0600);
    CHECK_EQ(file_mode(pub), 0644);
    CHECK(dir_holds_only_keys(dir, 2));
    CHECK_STATUS(hush_keypair_save_dir(other, dir, NULL, HUSH_KDF_PBKDF2, 0x80, &err),
                 HUSH_E_ARGUMENT, &err);

    free(pub_after);
    free(priv_before);
    free(pub_before);
    hush_keypair_free(back);
    hush_keypair_free(other);
    remove_tree(dir);
}

static void test_save_dir_refusals(void)
{
    char dir[64], path[128], link[128];
    hush_error err;
    make_temp_dir(dir);
    /* Only the last component is created. */
    join(path, sizeof path, dir, "missing/keys");
    CHECK_STATUS(hush_keypair_save_dir(shared_key, path, NULL, HUSH_KDF_PBKDF2, 0, &err),
                 HUSH_E_IO, &err);
    /* A symlinked key directory is not followed, and nothing is written. */
    join(path, sizeof path, dir, "real");
    join(link, sizeof link, dir, "link");
    CHECK(mkdir(path, 0700) == 0 && symlink(path, link) == 0);
    CHECK_STATUS(hush_keypair_save_dir(shared_key, link, NULL, HUSH_KDF_PBKDF2, 0, &err),
                 HUSH_E_PERMISSIONS, &err);
    CHECK(dir_holds_only_keys(path, 0));
    /* A file where the directory should be. */
    join(path, sizeof path, dir, "file");
    CHECK(write_file(path, "x", 1, 0600));
    CHECK_STATUS(hush_keypair_save_dir(shared_key, path, NULL, HUSH_KDF_PBKDF2, 0, &err),
                 HUSH_E_IO, &err);
    remove_tree(dir);
}

/* ---- loading: passwords ------------------------------------------------ */

static void check_password_failures(hush_key_kdf kdf)
{
    char dir[64];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, PASSWORD, kdf, 0, &err), &err);

    CHECK_STATUS(hush_keypair_load_dir(dir, OTHER_PASSWORD, &kp, &err), HUSH_E_PASSWORD, &err);
    CHECK(strstr(err.message, "wrong password") != NULL);
    CHECK(strstr(err.message, OTHER_PASSWORD) == NULL);
    CHECK(kp == NULL);

    CHECK_STATUS(hush_keypair_load_dir(dir, NULL, &kp, &err), HUSH_E_PASSWORD, &err);
    CHECK(strstr(err.message, "password is needed") != NULL);
    CHECK(kp == NULL);

    CHECK_STATUS(hush_keypair_load_dir(dir, "", &kp, &err), HUSH_E_PASSWORD, &err);
    remove_tree(dir);
}

static void test_wrong_or_missing_password_pbkdf2(void)
{
    check_password_failures(HUSH_KDF_PBKDF2);
}

static void test_wrong_or_missing_password_scrypt(void)
{
    check_password_failures(HUSH_KDF_SCRYPT);
}

/* ---- loading: file checks ---------------------------------------------- */

static void test_loose_permissions_refused(void)
{
    static const mode_t loose[] = {0644, 0640, 0604, 0660, 0610, 0601};
    static const mode_t owner_only[] = {0600, 0400, 0700};
    char dir[64], priv[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(priv, sizeof priv, dir, HUSH_PRIVATE_KEY_FILE);
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, PASSWORD, HUSH_KDF_PBKDF2, 0, &err), &err);
    for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
        CHECK(chmod(priv, loose[i]) == 0);
        CHECK_STATUS(hush_keypair_load_file(priv, PASSWORD, &kp, &err), HUSH_E_PERMISSIONS,
                     &err);
        CHECK(strstr(err.message, "chmod 600") != NULL);
        CHECK(strstr(err.message, priv) != NULL);
        CHECK(strstr(err.message, PASSWORD) == NULL);
        char octal[8];
        snprintf(octal, sizeof octal, "%04o", (unsigned)loose[i]);
        CHECK(strstr(err.message, octal) != NULL);
    }
    /* Owner-only modes pass, odd as 0700 is (ssh accepts them too). */
    for (size_t i = 0; i < sizeof owner_only / sizeof owner_only[0]; i++) {
        CHECK(chmod(priv, owner_only[i]) == 0);
        CHECK_OK(hush_keypair_load_file(priv, PASSWORD, &kp, &err), &err);
        hush_keypair_free(kp);
    }
    remove_tree(dir);
}

static void test_long_path_message_still_names_the_fix(void)
{
    char dir[64], deep[512], priv[600];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    snprintf(deep, sizeof deep, "%s/%s", dir,
             "a-rather-long-directory-name-for-keys-that-goes-on/and-on-and-on-for-a-while-yet");
    char parent[512];
    snprintf(parent, sizeof parent, "%s/%s", dir,
             "a-rather-long-directory-name-for-keys-that-goes-on");
    CHECK(mkdir(parent, 0700) == 0);
    CHECK_OK(hush_keypair_save_dir(shared_key, deep, NULL, HUSH_KDF_PBKDF2, 0, &err), &err);
    join(priv, sizeof priv, deep, HUSH_PRIVATE_KEY_FILE);
    CHECK(chmod(priv, 0644) == 0);
    CHECK_STATUS(hush_keypair_load_file(priv, NULL, &kp, &err), HUSH_E_PERMISSIONS, &err);
    CHECK(strstr(err.message, "chmod 600") != NULL);
    CHECK(strlen(err.message) < HUSH_ERROR_MESSAGE_MAX - 1);
    remove_tree(dir);
}

static void test_symlink_refused(void)
{
    char dir[64], priv[128], real[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), &err);
    join(priv, sizeof priv, dir, HUSH_PRIVATE_KEY_FILE);
    join(real, sizeof real, dir, "real.pem");
    CHECK(rename(priv, real) == 0 && symlink(real, priv) == 0);
    CHECK_STATUS(hush_keypair_load_dir(dir, NULL, &kp, &err), HUSH_E_PERMISSIONS, &err);
    CHECK(strstr(err.message, "symbolic link") != NULL);
    CHECK(kp == NULL);
    remove_tree(dir);
}

static void test_missing_file(void)
{
    char dir[64], path[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    CHECK_STATUS(hush_keypair_load_dir(dir, NULL, &kp, &err), HUSH_E_NOT_FOUND, &err);
    join(path, sizeof path, dir, "nowhere");
    CHECK_STATUS(hush_keypair_load_dir(path, NULL, &kp, &err), HUSH_E_NOT_FOUND, &err);
    CHECK(kp == NULL);
    remove_tree(dir);
}

static void test_not_a_regular_file(void)
{
    char dir[64], path[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, HUSH_PRIVATE_KEY_FILE);
    CHECK(mkdir(path, 0700) == 0);
    CHECK_STATUS(hush_keypair_load_file(path, NULL, &kp, &err), HUSH_E_PERMISSIONS, &err);
    CHECK(rmdir(path) == 0);
    /* A FIFO must be refused, not block the caller. */
    CHECK(mkfifo(path, 0600) == 0);
    CHECK_STATUS(hush_keypair_load_file(path, NULL, &kp, &err), HUSH_E_PERMISSIONS, &err);
    remove_tree(dir);
}

static void test_foreign_owner_refused(void)
{
    if (geteuid() != 0)
        return; /* only root can give a file away */
    char dir[64], priv[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), &err);
    join(priv, sizeof priv, dir, HUSH_PRIVATE_KEY_FILE);
    CHECK(chown(priv, 12345, 12345) == 0);
    CHECK_STATUS(hush_keypair_load_file(priv, NULL, &kp, &err), HUSH_E_PERMISSIONS, &err);
    CHECK(strstr(err.message, "owned by") != NULL);
    remove_tree(dir);
}

static void test_oversized_file_refused(void)
{
    char dir[64], path[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, "big.pem");
    size_t len = (1u << 20) + 1;
    char *junk = malloc(len);
    memset(junk, 'A', len);
    CHECK(write_file(path, junk, len, 0600));
    CHECK_STATUS(hush_keypair_load_file(path, NULL, &kp, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(hush_keypair_from_pem(junk, len, NULL, &kp, &err), HUSH_E_LIMIT, &err);
    free(junk);
    remove_tree(dir);
}

/* ---- loading: keys that are not usable --------------------------------- */

static void check_pem_file_refused(const char *pem, const char *expected_message)
{
    char dir[64], path[128];
    hush_keypair *kp = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, HUSH_PRIVATE_KEY_FILE);
    CHECK(write_file(path, pem, strlen(pem), 0600));
    CHECK_STATUS(hush_keypair_load_dir(dir, NULL, &kp, &err), HUSH_E_KEY, &err);
    if (expected_message != NULL && strcmp(err.message, expected_message) != 0) {
        fprintf(stderr, "message \"%s\", expected \"%s\"\n", err.message, expected_message);
        CHECK(false);
    }
    CHECK(kp == NULL);
    remove_tree(dir);
}

static void test_small_rsa_key_refused(void)
{
    EVP_PKEY *small = EVP_RSA_gen(1024);
    CHECK(small != NULL);
    char *pem = private_pkcs8_pem(small);
    CHECK(pem != NULL);
    check_pem_file_refused(pem, "RSA key of 1024 bits is too small (minimum 2048)");
    free(pem);
    EVP_PKEY_free(small);
}

static void test_ec_key_refused(void)
{
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    CHECK(ec != NULL);
    char *pem = private_pkcs8_pem(ec);
    CHECK(pem != NULL);
    check_pem_file_refused(pem, "not an RSA key");
    free(pem);
    EVP_PKEY_free(ec);
}

static void test_garbage_refused(void)
{
    check_pem_file_refused("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
                           NULL);
    check_pem_file_refused("this is not PEM at all\n", NULL);
    check_pem_file_refused("", NULL);
    check_pem_file_refused("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n"
                           "-----END ENCRYPTED PRIVATE KEY-----\n",
                           NULL);
}

static void test_traditional_rsa_private_key_accepted(void)
{
    hush_keypair *back = NULL;
    hush_error err;
    EVP_PKEY *pkey = NULL;
    hush_secbuf *pkcs8 = NULL;
    CHECK_OK(hush_keypair_private_pem(shared_key, NULL, HUSH_KDF_PBKDF2, &pkcs8, &err), &err);
    BIO *bio = BIO_new_mem_buf(hush_secbuf_data(pkcs8), (int)hush_secbuf_len(pkcs8));
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    char *pem = openssl_pem(pkey, OSSL_KEYMGMT_SELECT_KEYPAIR, "type-specific");
    CHECK(pem != NULL && strncmp(pem, "-----BEGIN RSA PRIVATE KEY-----", 31) == 0);
    CHECK_OK(hush_keypair_from_pem(pem, strlen(pem), NULL, &back, &err), &err);
    CHECK(back != NULL && same_fingerprint(back, shared_key));
    hush_keypair_free(back);
    free(pem);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    hush_secbuf_free(pkcs8);
}

/* ---- public keys ------------------------------------------------------- */

static void test_pubkey_from_saved_file(void)
{
    char dir[64], path[128];
    hush_pubkey *pk = NULL;
    hush_error err;
    make_temp_dir(dir);
    CHECK_OK(hush_keypair_save_dir(shared_key, dir, NULL, HUSH_KDF_PBKDF2, 0, &err), &err);
    join(path, sizeof path, dir, HUSH_PUBLIC_KEY_FILE);
    size_t len = 0;
    char *pem = read_file(path, &len);
    CHECK(pem != NULL && strncmp(pem, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
    CHECK_OK(hush_pubkey_from_pem(pem, len, &pk, &err), &err);
    CHECK_EQ(hush_pubkey_bits(pk), 2048);

    char fp_pub[HUSH_FINGERPRINT_LEN], fp_pair[HUSH_FINGERPRINT_LEN];
    CHECK_OK(hush_pubkey_fingerprint(pk, fp_pub, &err), &err);
    CHECK_OK(hush_keypair_fingerprint(shared_key, fp_pair, &err), &err);
    CHECK(strcmp(fp_pub, fp_pair) == 0);

    char *again = NULL;
    size_t again_len = 0;
    CHECK_OK(hush_pubkey_pem(pk, &again, &again_len, &err), &err);
    CHECK(again != NULL && again_len == len && strcmp(again, pem) == 0);

    hush_pubkey *ref = hush_pubkey_ref(pk);
    CHECK(ref == pk);
    hush_pubkey_free(ref);
    free(again);
    free(pem);
    hush_pubkey_free(pk);
    remove_tree(dir);
}

static void test_pubkey_from_keypair(void)
{
    hush_pubkey *pk = NULL;
    hush_error err;
    CHECK_OK(hush_pubkey_from_keypair(shared_key, &pk, &err), &err);
    CHECK_EQ(hush_pubkey_bits(pk), 2048);
    char fp_pub[HUSH_FINGERPRINT_LEN], fp_pair[HUSH_FINGERPRINT_LEN];
    CHECK_OK(hush_pubkey_fingerprint(pk, fp_pub, &err), &err);
    CHECK_OK(hush_keypair_fingerprint(shared_key, fp_pair, &err), &err);
    CHECK(strcmp(fp_pub, fp_pair) == 0);
    hush_pubkey_free(pk);
}

static void test_pubkey_pkcs1_accepted(void)
{
    char *spki = NULL;
    size_t spki_len = 0;
    hush_pubkey *pk = NULL;
    hush_error err;
    CHECK_OK(hush_keypair_public_pem(shared_key, &spki, &spki_len, &err), &err);
    BIO *bio = BIO_new_mem_buf(spki, (int)spki_len);
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    char *pkcs1 = openssl_pem(pkey, EVP_PKEY_PUBLIC_KEY, "type-specific");
    CHECK(pkcs1 != NULL && strncmp(pkcs1, "-----BEGIN RSA PUBLIC KEY-----", 30) == 0);
    CHECK_OK(hush_pubkey_from_pem(pkcs1, strlen(pkcs1), &pk, &err), &err);
    CHECK_EQ(hush_pubkey_bits(pk), 2048);
    hush_pubkey_free(pk);
    free(pkcs1);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    free(spki);
}

static void test_pubkey_refusals(void)
{
    hush_pubkey *pk = NULL;
    hush_error err;

    EVP_PKEY *small = EVP_RSA_gen(1024);
    char *pem = public_spki_pem(small);
    CHECK_STATUS(hush_pubkey_from_pem(pem, strlen(pem), &pk, &err), HUSH_E_KEY, &err);
    CHECK(strcmp(err.message, "RSA key of 1024 bits is too small (minimum 2048)") == 0);
    free(pem);
    EVP_PKEY_free(small);

    EVP_PKEY *ec = EVP_EC_gen("P-256");
    pem = public_spki_pem(ec);
    CHECK_STATUS(hush_pubkey_from_pem(pem, strlen(pem), &pk, &err), HUSH_E_KEY, &err);
    CHECK(strcmp(err.message, "not an RSA key") == 0);
    free(pem);
    EVP_PKEY_free(ec);

    /* A private key is not a public key. */
    hush_secbuf *priv = NULL;
    CHECK_OK(hush_keypair_private_pem(shared_key, NULL, HUSH_KDF_PBKDF2, &priv, &err), &err);
    CHECK_STATUS(hush_pubkey_from_pem(hush_secbuf_data(priv), hush_secbuf_len(priv), &pk, &err),
                 HUSH_E_KEY, &err);
    hush_secbuf_free(priv);

    static const char garbage[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    CHECK_STATUS(hush_pubkey_from_pem(garbage, sizeof garbage - 1, &pk, &err), HUSH_E_KEY, &err);
    CHECK(pk == NULL);
}

static void test_null_arguments(void)
{
    hush_keypair *kp = NULL;
    hush_pubkey *pk = NULL;
    char fp[HUSH_FINGERPRINT_LEN];
    char *pem = NULL;
    hush_error err;
    CHECK_STATUS(hush_keypair_from_pem(NULL, 0, NULL, &kp, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_keypair_load_file(NULL, NULL, &kp, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_keypair_load_dir(NULL, NULL, &kp, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_keypair_save_dir(NULL, "/tmp", NULL, HUSH_KDF_PBKDF2, 0, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_keypair_fingerprint(NULL, fp, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_keypair_public_pem(NULL, &pem, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_pubkey_from_pem(NULL, 0, &pk, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_pubkey_from_keypair(NULL, &pk, &err), HUSH_E_ARGUMENT, &err);
    CHECK_EQ(hush_keypair_bits(NULL), 0);
    CHECK_EQ(hush_pubkey_bits(NULL), 0);
}

int main(void)
{
    RUN_TEST(test_generate_2048);
    if (shared_key == NULL)
        return check_report();
    RUN_TEST(test_generate_default_is_4096);
    RUN_TEST(test_generate_refuses_bad_sizes);
    RUN_TEST(test_refcount);
    RUN_TEST(test_fingerprint_matches_independent_computation);
    RUN_TEST(test_private_pem_unencrypted);
    RUN_TEST(test_pbkdf2_pem_parameters);
    RUN_TEST(test_scrypt_pem_parameters);
    RUN_TEST(test_hostile_scrypt_parameters_refused);
    RUN_TEST(test_kdf_and_password_arguments);
    RUN_TEST(test_save_load_unencrypted);
    RUN_TEST(test_save_load_pbkdf2);
    RUN_TEST(test_save_load_scrypt);
    RUN_TEST(test_file_modes_exact_whatever_the_umask);
    RUN_TEST(test_save_into_existing_dir);
    RUN_TEST(test_existing_files_refused_without_overwrite);
    RUN_TEST(test_save_dir_refusals);
    RUN_TEST(test_wrong_or_missing_password_pbkdf2);
    RUN_TEST(test_wrong_or_missing_password_scrypt);
    RUN_TEST(test_loose_permissions_refused);
    RUN_TEST(test_long_path_message_still_names_the_fix);
    RUN_TEST(test_symlink_refused);
    RUN_TEST(test_missing_file);
    RUN_TEST(test_not_a_regular_file);
    RUN_TEST(test_foreign_owner_refused);
    RUN_TEST(test_oversized_file_refused);
    RUN_TEST(test_small_rsa_key_refused);
    RUN_TEST(test_ec_key_refused);
    RUN_TEST(test_garbage_refused);
    RUN_TEST(test_traditional_rsa_private_key_accepted);
    RUN_TEST(test_pubkey_from_saved_file);
    RUN_TEST(test_pubkey_from_keypair);
    RUN_TEST(test_pubkey_pkcs1_accepted);
    RUN_TEST(test_pubkey_refusals);
    RUN_TEST(test_null_arguments);
    hush_keypair_free(shared_key);
    return check_report();
}
