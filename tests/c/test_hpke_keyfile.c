/* test_hpke_keyfile.c — HPKE private key files: round trips for both KEMs
 * with and without a password under both kdfs, the file guarantees (0600,
 * no temporary file left, existing files, symlinks, loose permissions),
 * password failures, and files built by hand from the documented format
 * (docs/crypto.md), valid and malformed, so the reader is held to the
 * format rather than to its own writer. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "check.h"
#include "tempfiles.h"

/* Distinctive, so a message that leaked it would be found. */
#define PASSWORD "Quokka-Marmalade-7731"
#define OTHER_PASSWORD "Wombat-Chutney-4410"
#define KEY_NAME "server.hpke"

static const uint16_t kems[] = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KEM_XWING};

/* ---- helpers ----------------------------------------------------------- */

static hush_hpke_keypair *generate(uint16_t kem)
{
    hush_hpke_keypair *kp = NULL;
    hush_error err;
    CHECK_OK(hush_hpke_keypair_generate(kem, &kp, &err), &err);
    return kp;
}

static bool same_private_key(const hush_hpke_keypair *a, const hush_hpke_keypair *b)
{
    hush_secbuf *sa = NULL, *sb = NULL;
    bool same = hush_hpke_keypair_private(a, &sa, NULL) == HUSH_OK &&
                hush_hpke_keypair_private(b, &sb, NULL) == HUSH_OK &&
                hush_secbuf_len(sa) == hush_secbuf_len(sb) &&
                CRYPTO_memcmp(hush_secbuf_bytes(sa), hush_secbuf_bytes(sb), hush_secbuf_len(sa)) ==
                    0;
    hush_secbuf_free(sa);
    hush_secbuf_free(sb);
    return same;
}

static bool fingerprint_of(const hush_hpke_keypair *kp, char out[HUSH_FINGERPRINT_LEN])
{
    hush_hpke_pubkey *pk = NULL;
    bool ok = hush_hpke_keypair_public(kp, &pk, NULL) == HUSH_OK &&
              hush_hpke_pubkey_fingerprint(pk, out, NULL) == HUSH_OK;
    hush_hpke_pubkey_free(pk);
    return ok;
}

/* Entries in `dir` besides . and .. */
static int entries_in(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        count += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return count;
}

/* A file in the format docs/crypto.md gives, from a body built by hand:
 * the BEGIN line, base64 in lines of 64, the END line. */
static bool write_armoured(const char *path, const unsigned char *body, size_t len)
{
    unsigned char b64[1024];
    char text[2048];
    int n = EVP_EncodeBlock(b64, body, (int)len);
    if (n < 0 || len > 600)
        return false;
    size_t at = (size_t)snprintf(text, sizeof text, "-----BEGIN HUSHCALL HPKE PRIVATE KEY-----\n");
    for (int i = 0; i < n; i += 64) {
        int chunk = n - i < 64 ? n - i : 64;
        memcpy(text + at, b64 + i, (size_t)chunk);
        at += (size_t)chunk;
        text[at++] = '\n';
    }
    at += (size_t)snprintf(text + at, sizeof text - at,
                           "-----END HUSHCALL HPKE PRIVATE KEY-----\n");
    return write_file(path, text, at, 0600);
}

/* An unprotected body: magic, version, KEM, protection 0, key length, key. */
static size_t clear_body(unsigned char *out, unsigned version, uint16_t kem, uint16_t key_len,
                         unsigned char fill)
{
    size_t at = 0;
    memcpy(out, "HHPK", 4);
    at = 4;
    out[at++] = (unsigned char)version;
    out[at++] = (unsigned char)(kem >> 8);
    out[at++] = (unsigned char)kem;
    out[at++] = 0;
    out[at++] = (unsigned char)(key_len >> 8);
    out[at++] = (unsigned char)key_len;
    memset(out + at, fill, key_len);
    return at + key_len;
}

/* ---- round trips ------------------------------------------------------- */

static void round_trip(uint16_t kem, const char *password, hush_key_kdf kdf)
{
    char dir[64], path[128], before[HUSH_FINGERPRINT_LEN], after[HUSH_FINGERPRINT_LEN];
    hush_hpke_keypair *kp = generate(kem), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_OK(hush_hpke_keypair_save_file(kp, path, password, kdf, 0, &err), &err);
    CHECK_EQ(file_mode(path), 0600);
    CHECK_EQ(entries_in(dir), 1); /* no temporary file left behind */
    CHECK_OK(hush_hpke_keypair_load_file(path, password, &loaded, &err), &err);
    CHECK_EQ(hush_hpke_keypair_kem(loaded), kem);
    CHECK(same_private_key(kp, loaded));
    CHECK(fingerprint_of(kp, before) && fingerprint_of(loaded, after));
    CHECK(strcmp(before, after) == 0);
    size_t len = 0;
    char *text = read_file(path, &len);
    CHECK(text != NULL && strncmp(text, "-----BEGIN HUSHCALL HPKE PRIVATE KEY-----\n", 42) == 0);
    CHECK(text != NULL && strstr(text, PASSWORD) == NULL);
    free(text);
    hush_hpke_keypair_free(loaded);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static void test_round_trip_in_the_clear(void)
{
    for (size_t i = 0; i < sizeof kems / sizeof kems[0]; i++)
        round_trip(kems[i], NULL, HUSH_KDF_SCRYPT);
}

static void test_round_trip_pbkdf2(void)
{
    for (size_t i = 0; i < sizeof kems / sizeof kems[0]; i++)
        round_trip(kems[i], PASSWORD, HUSH_KDF_PBKDF2);
}

static void test_round_trip_scrypt(void)
{
    for (size_t i = 0; i < sizeof kems / sizeof kems[0]; i++)
        round_trip(kems[i], PASSWORD, HUSH_KDF_SCRYPT);
}

/* Saved twice with the same password, the files differ: fresh salt and
 * nonce every time. */
static void test_fresh_salt_and_nonce(void)
{
    char dir[64], a[128], b[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_X25519_SHA256);
    hush_error err;
    make_temp_dir(dir);
    join(a, sizeof a, dir, "a");
    join(b, sizeof b, dir, "b");
    CHECK_OK(hush_hpke_keypair_save_file(kp, a, PASSWORD, HUSH_KDF_PBKDF2, 0, &err), &err);
    CHECK_OK(hush_hpke_keypair_save_file(kp, b, PASSWORD, HUSH_KDF_PBKDF2, 0, &err), &err);
    char *ta = read_file(a, NULL), *tb = read_file(b, NULL);
    CHECK(ta != NULL && tb != NULL && strcmp(ta, tb) != 0);
    free(ta);
    free(tb);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

/* ---- the file's guarantees ---------------------------------------------- */

static void test_existing_file_refused_or_replaced(void)
{
    char dir[64], path[128];
    hush_hpke_keypair *first = generate(HUSH_HPKE_KEM_X25519_SHA256);
    hush_hpke_keypair *second = generate(HUSH_HPKE_KEM_XWING), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_OK(hush_hpke_keypair_save_file(first, path, NULL, HUSH_KDF_SCRYPT, 0, &err), &err);
    char *original = read_file(path, NULL);
    CHECK_STATUS(hush_hpke_keypair_save_file(second, path, NULL, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_EXISTS, &err);
    char *unchanged = read_file(path, NULL);
    CHECK(original != NULL && unchanged != NULL && strcmp(original, unchanged) == 0);
    CHECK_EQ(entries_in(dir), 1);
    /* With the flag the new key takes the name in one rename. */
    CHECK_OK(hush_hpke_keypair_save_file(second, path, NULL, HUSH_KDF_SCRYPT,
                                         HUSH_KEYS_SAVE_OVERWRITE, &err),
             &err);
    CHECK_EQ(file_mode(path), 0600);
    CHECK_EQ(entries_in(dir), 1);
    CHECK_OK(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), &err);
    CHECK_EQ(hush_hpke_keypair_kem(loaded), HUSH_HPKE_KEM_XWING);
    CHECK(same_private_key(second, loaded));
    free(original);
    free(unchanged);
    hush_hpke_keypair_free(loaded);
    hush_hpke_keypair_free(second);
    hush_hpke_keypair_free(first);
    remove_tree(dir);
}

static void test_mode_exact_whatever_the_umask(void)
{
    char dir[64], path[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_X25519_SHA256);
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    mode_t old = umask(0);
    CHECK_OK(hush_hpke_keypair_save_file(kp, path, NULL, HUSH_KDF_SCRYPT, 0, &err), &err);
    umask(old);
    CHECK_EQ(file_mode(path), 0600);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static void test_symlink_refused(void)
{
    char dir[64], path[128], real[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_X25519_SHA256), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    join(real, sizeof real, dir, "real.hpke");
    CHECK_OK(hush_hpke_keypair_save_file(kp, real, NULL, HUSH_KDF_SCRYPT, 0, &err), &err);
    CHECK(symlink(real, path) == 0);
    CHECK_STATUS(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), HUSH_E_PERMISSIONS,
                 &err);
    CHECK(strstr(err.message, "symbolic link") != NULL);
    CHECK(loaded == NULL);
    /* Nor is a symlink written through: the name is taken. */
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, path, NULL, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_EXISTS, &err);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static void test_loose_permissions_refused(void)
{
    static const mode_t loose[] = {0644, 0640, 0604, 0620, 0602};
    char dir[64], path[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_XWING), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_OK(hush_hpke_keypair_save_file(kp, path, NULL, HUSH_KDF_SCRYPT, 0, &err), &err);
    for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
        CHECK(chmod(path, loose[i]) == 0);
        CHECK_STATUS(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), HUSH_E_PERMISSIONS,
                     &err);
        CHECK(strstr(err.message, "chmod 600") != NULL);
        CHECK(loaded == NULL);
    }
    CHECK(chmod(path, 0400) == 0); /* read-only for the owner is fine */
    CHECK_OK(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), &err);
    hush_hpke_keypair_free(loaded);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static void test_missing_file_and_directory(void)
{
    char dir[64], path[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_X25519_SHA256), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_STATUS(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), HUSH_E_NOT_FOUND, &err);
    join(path, sizeof path, dir, "absent/" KEY_NAME);
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, path, NULL, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_NOT_FOUND, &err);
    join(path, sizeof path, dir, "");
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, path, NULL, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_EQ(entries_in(dir), 0);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

/* ---- passwords ---------------------------------------------------------- */

static void wrong_or_missing_password(hush_key_kdf kdf)
{
    char dir[64], path[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_XWING), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_OK(hush_hpke_keypair_save_file(kp, path, PASSWORD, kdf, 0, &err), &err);
    CHECK_STATUS(hush_hpke_keypair_load_file(path, OTHER_PASSWORD, &loaded, &err),
                 HUSH_E_PASSWORD, &err);
    CHECK(strstr(err.message, OTHER_PASSWORD) == NULL && strstr(err.message, PASSWORD) == NULL);
    CHECK_STATUS(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), HUSH_E_PASSWORD, &err);
    CHECK(strstr(err.message, "password is needed") != NULL);
    CHECK_STATUS(hush_hpke_keypair_load_file(path, "", &loaded, &err), HUSH_E_PASSWORD, &err);
    CHECK(loaded == NULL);
    /* Nothing was lost: the right password still opens it. */
    CHECK_OK(hush_hpke_keypair_load_file(path, PASSWORD, &loaded, &err), &err);
    CHECK(same_private_key(kp, loaded));
    hush_hpke_keypair_free(loaded);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static void test_wrong_or_missing_password_pbkdf2(void)
{
    wrong_or_missing_password(HUSH_KDF_PBKDF2);
}

static void test_wrong_or_missing_password_scrypt(void)
{
    wrong_or_missing_password(HUSH_KDF_SCRYPT);
}

static void test_argument_refusals(void)
{
    char dir[64], path[128], long_password[1100];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_X25519_SHA256), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, path, PASSWORD, (hush_key_kdf)7, 0, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, path, NULL, HUSH_KDF_SCRYPT, 0x10, &err),
                 HUSH_E_ARGUMENT, &err);
    memset(long_password, 'p', sizeof long_password - 1);
    long_password[sizeof long_password - 1] = '\0';
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, path, long_password, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_save_file(NULL, path, NULL, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_save_file(kp, NULL, NULL, HUSH_KDF_SCRYPT, 0, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_load_file(NULL, NULL, &loaded, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_hpke_keypair_load_file(path, NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_EQ(entries_in(dir), 0);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

/* ---- the format, from the documentation ---------------------------------- */

/* A file built by hand from the format loads to the key it holds. */
static void test_hand_built_file_loads(void)
{
    char dir[64], path[128];
    unsigned char body[128], sk[32];
    hush_hpke_keypair *loaded = NULL, *expected = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    for (size_t i = 0; i < sizeof kems / sizeof kems[0]; i++) {
        size_t len = clear_body(body, 1, kems[i], 32, 0x5a);
        memset(sk, 0x5a, sizeof sk);
        CHECK(write_armoured(path, body, len));
        CHECK_OK(hush_hpke_keypair_load_file(path, NULL, &loaded, &err), &err);
        CHECK_OK(hush_hpke_keypair_from_private(kems[i], sk, sizeof sk, &expected, &err), &err);
        CHECK_EQ(hush_hpke_keypair_kem(loaded), kems[i]);
        CHECK(same_private_key(expected, loaded));
        hush_hpke_keypair_free(loaded);
        hush_hpke_keypair_free(expected);
        loaded = expected = NULL;
    }
    remove_tree(dir);
}

/* The armoured body of the file at `path`, decoded into `body`; its length. */
static size_t read_body(const char *path, unsigned char body[256])
{
    char *text = read_file(path, NULL);
    char b64[512] = "";
    char *line = text != NULL ? strchr(text, '\n') : NULL;
    while (line != NULL && strncmp(line + 1, "-----END", 8) != 0) {
        char *next = strchr(line + 1, '\n');
        if (next == NULL || strlen(b64) + (size_t)(next - line) >= sizeof b64)
            break;
        strncat(b64, line + 1, (size_t)(next - line - 1));
        line = next;
    }
    free(text);
    int n = EVP_DecodeBlock(body, (const unsigned char *)b64, (int)strlen(b64));
    return n > 0 ? (size_t)n - (strlen(b64) - strcspn(b64, "=")) : 0;
}

/* A protected file opens by the format's recipe, done here with OpenSSL:
 * the KDF over the password and the header's salt keys AES-256-GCM with the
 * header's nonce over the key field, the header being the AAD. Header:
 * magic 4, version 1, KEM 2, protection 1, the KDF's costs (PBKDF2:
 * iterations 4; scrypt: log2 N 1, r 4, p 4), salt 16, nonce 12, key length
 * 2; then the key (32) and the tag (16). */
static void file_opens_by_the_documented_recipe(hush_key_kdf kdf)
{
    char dir[64], path[128];
    unsigned char body[256], key[32], sk[32];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_XWING), *expected = NULL;
    hush_error err;
    bool scrypt = kdf == HUSH_KDF_SCRYPT;
    size_t salt = scrypt ? 17 : 12, header = salt + 16 + 12 + 2;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_OK(hush_hpke_keypair_save_file(kp, path, PASSWORD, kdf, 0, &err), &err);
    size_t len = read_body(path, body);
    CHECK_EQ(len, header + 32 + 16);
    CHECK(memcmp(body, scrypt ? "HHPK\x01\x64\x7a\x01" : "HHPK\x01\x64\x7a\x02", 8) == 0);
    if (scrypt) /* N = 2^14, r = 8, p = 5 */
        CHECK(memcmp(body + 8, "\x0e\x00\x00\x00\x08\x00\x00\x00\x05", 9) == 0);
    else /* 600000 iterations */
        CHECK(memcmp(body + 8, "\x00\x09\x27\xc0", 4) == 0);
    CHECK(body[header - 2] == 0 && body[header - 1] == 32);
    if (len == header + 32 + 16) {
        int derived = scrypt ? EVP_PBE_scrypt(PASSWORD, strlen(PASSWORD), body + salt, 16,
                                              1u << 14, 8, 5, 64u << 20, key, sizeof key)
                             : PKCS5_PBKDF2_HMAC(PASSWORD, (int)strlen(PASSWORD), body + salt,
                                                 16, 600000, EVP_sha256(), sizeof key, key);
        CHECK_EQ(derived, 1);
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        int outl = 0;
        bool ok = ctx != NULL &&
                  EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, body + salt + 16) == 1 &&
                  EVP_DecryptUpdate(ctx, NULL, &outl, body, (int)header) == 1 &&
                  EVP_DecryptUpdate(ctx, sk, &outl, body + header, 32) == 1 &&
                  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, body + header + 32) == 1 &&
                  EVP_DecryptFinal_ex(ctx, sk + 32, &outl) == 1;
        CHECK(ok);
        EVP_CIPHER_CTX_free(ctx);
        CHECK_OK(hush_hpke_keypair_from_private(HUSH_HPKE_KEM_XWING, sk, sizeof sk, &expected,
                                                &err),
                 &err);
        CHECK(same_private_key(kp, expected));
    }
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(sk, sizeof sk);
    hush_hpke_keypair_free(expected);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static void test_pbkdf2_file_opens_by_the_documented_recipe(void)
{
    file_opens_by_the_documented_recipe(HUSH_KDF_PBKDF2);
}

static void test_scrypt_file_opens_by_the_documented_recipe(void)
{
    file_opens_by_the_documented_recipe(HUSH_KDF_SCRYPT);
}

/* Load `path` expecting HUSH_E_KEY with `needle` in the message. */
static void expect_malformed(const char *path, const char *needle)
{
    hush_hpke_keypair *loaded = NULL;
    hush_error err;
    CHECK_STATUS(hush_hpke_keypair_load_file(path, PASSWORD, &loaded, &err), HUSH_E_KEY, &err);
    if (strstr(err.message, needle) == NULL) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.message, needle);
        check_failures_in_test++;
    }
    CHECK(loaded == NULL);
}

static void test_malformed_bodies_refused(void)
{
    char dir[64], path[128];
    unsigned char body[128];
    size_t len;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);

    len = clear_body(body, 2, HUSH_HPKE_KEM_X25519_SHA256, 32, 1);
    CHECK(write_armoured(path, body, len));
    expect_malformed(path, "unknown version 2");

    len = clear_body(body, 1, 0x0010, 32, 1); /* DHKEM(P-256): not ours */
    CHECK(write_armoured(path, body, len));
    expect_malformed(path, "unknown KEM 0x0010");

    len = clear_body(body, 1, HUSH_HPKE_KEM_XWING, 31, 1);
    CHECK(write_armoured(path, body, len));
    expect_malformed(path, "key of 31 bytes");

    len = clear_body(body, 1, HUSH_HPKE_KEM_XWING, 32, 1);
    body[len++] = 0; /* one byte of trailing data */
    CHECK(write_armoured(path, body, len));
    expect_malformed(path, "1 bytes after the key");

    len = clear_body(body, 1, HUSH_HPKE_KEM_XWING, 32, 1);
    CHECK(write_armoured(path, body, len - 1)); /* the key cut short */
    expect_malformed(path, "cut short");
    CHECK(write_armoured(path, body, 6)); /* cut inside the header */
    expect_malformed(path, "cut short");

    len = clear_body(body, 1, HUSH_HPKE_KEM_XWING, 32, 1);
    body[7] = 9; /* protection */
    CHECK(write_armoured(path, body, len));
    expect_malformed(path, "unknown protection 9");

    len = clear_body(body, 1, HUSH_HPKE_KEM_XWING, 32, 1);
    body[0] = 'X';
    CHECK(write_armoured(path, body, len));
    expect_malformed(path, "bad magic");
    remove_tree(dir);
}

/* A saved file with text changed, cut or added: `edit` gets the file's text
 * and returns the length to write. */
static void edited_file_refused(size_t (*edit)(char *text, size_t len), const char *password,
                                hush_status expected, const char *needle)
{
    char dir[64], path[128];
    hush_hpke_keypair *kp = generate(HUSH_HPKE_KEM_XWING), *loaded = NULL;
    hush_error err;
    make_temp_dir(dir);
    join(path, sizeof path, dir, KEY_NAME);
    CHECK_OK(hush_hpke_keypair_save_file(kp, path, password, HUSH_KDF_PBKDF2, 0, &err), &err);
    size_t len = 0;
    char *text = read_file(path, &len);
    CHECK(text != NULL);
    if (text != NULL) {
        len = edit(text, len);
        CHECK(write_file(path, text, len, 0600));
        CHECK_STATUS(hush_hpke_keypair_load_file(path, password, &loaded, &err), expected, &err);
        if (strstr(err.message, needle) == NULL) {
            fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.message, needle);
            check_failures_in_test++;
        }
        CHECK(loaded == NULL);
    }
    free(text);
    hush_hpke_keypair_free(kp);
    remove_tree(dir);
}

static size_t add_trailing_garbage(char *text, size_t len)
{
    memcpy(text + len, "garbage\n", 8);
    return len + 8;
}

static size_t cut_end_line(char *text, size_t len)
{
    (void)text;
    return len - 10;
}

static size_t cut_to_begin_line(char *text, size_t len)
{
    (void)len;
    return (size_t)(strchr(text, '\n') - text) + 1;
}

/* A base64 character of the key field (in the last line) changed. */
static size_t change_key_character(char *text, size_t len)
{
    char *end = strstr(text, "-----END");
    char *c = end - 5;
    *c = *c == 'A' ? 'B' : 'A';
    return len;
}

/* A character of the header (in the salt, on the first line) changed. */
static size_t change_header_character(char *text, size_t len)
{
    char *c = strchr(text, '\n') + 1 + 20;
    *c = *c == 'A' ? 'B' : 'A';
    return len;
}

static size_t break_base64(char *text, size_t len)
{
    strchr(text, '\n')[3] = '*';
    return len;
}

static size_t join_two_lines(char *text, size_t len)
{
    char *first_nl = strchr(strchr(text, '\n') + 1, '\n');
    memmove(first_nl, first_nl + 1, len - (size_t)(first_nl - text) - 1);
    return len - 1;
}

static void test_edited_files_refused(void)
{
    /* An encrypted X-Wing key: 90 bytes of body, two lines of base64. */
    edited_file_refused(add_trailing_garbage, PASSWORD, HUSH_E_KEY, "after the END line");
    edited_file_refused(cut_end_line, PASSWORD, HUSH_E_KEY, "no END line");
    edited_file_refused(cut_to_begin_line, PASSWORD, HUSH_E_KEY, "no END line");
    edited_file_refused(break_base64, PASSWORD, HUSH_E_KEY, "base64");
    edited_file_refused(join_two_lines, PASSWORD, HUSH_E_KEY, "a line of 120 characters");
    /* Encrypted: the key field and the header are authenticated. */
    edited_file_refused(change_key_character, PASSWORD, HUSH_E_PASSWORD, "wrong password");
    edited_file_refused(change_header_character, PASSWORD, HUSH_E_PASSWORD, "wrong password");
}

int main(void)
{
    RUN_TEST(test_round_trip_in_the_clear);
    RUN_TEST(test_round_trip_pbkdf2);
    RUN_TEST(test_round_trip_scrypt);
    RUN_TEST(test_fresh_salt_and_nonce);
    RUN_TEST(test_existing_file_refused_or_replaced);
    RUN_TEST(test_mode_exact_whatever_the_umask);
    RUN_TEST(test_symlink_refused);
    RUN_TEST(test_loose_permissions_refused);
    RUN_TEST(test_missing_file_and_directory);
    RUN_TEST(test_wrong_or_missing_password_pbkdf2);
    RUN_TEST(test_wrong_or_missing_password_scrypt);
    RUN_TEST(test_argument_refusals);
    RUN_TEST(test_hand_built_file_loads);
    RUN_TEST(test_pbkdf2_file_opens_by_the_documented_recipe);
    RUN_TEST(test_scrypt_file_opens_by_the_documented_recipe);
    RUN_TEST(test_malformed_bodies_refused);
    RUN_TEST(test_edited_files_refused);
    return check_report();
}
