/* keys.c — RSA key pairs and public keys: generation, PKCS#8 / SPKI PEM,
 * key files and key directories. Private-key PEM text is built in OpenSSL's
 * secure heap and handed out in a hush_secbuf; key files are checked as ssh
 * checks them and written atomically. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "hushcall/keys.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"

#define RSA_PUBLIC_EXPONENT 65537u
#define KEY_FILE_MAX (1u << 20)

struct hush_keypair {
    atomic_uint refcount;
    EVP_PKEY *pkey;
};

struct hush_pubkey {
    atomic_uint refcount;
    EVP_PKEY *pkey;
};

/* ---- handles ----------------------------------------------------------- */

HUSH_MUST_USE
static hush_status keypair_wrap(EVP_PKEY **pkey, hush_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_keypair *kp = malloc(sizeof *kp);
    HUSH_ENSURE(kp != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&kp->refcount, 1);
    kp->pkey = *pkey;
    *pkey = NULL;
    *out = kp;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status pubkey_wrap(EVP_PKEY **pkey, hush_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_pubkey *pk = malloc(sizeof *pk);
    HUSH_ENSURE(pk != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&pk->refcount, 1);
    pk->pkey = *pkey;
    *pkey = NULL;
    *out = pk;
cleanup:
    return status;
}

hush_keypair *hush_keypair_ref(hush_keypair *kp)
{
    if (kp != NULL)
        atomic_fetch_add_explicit(&kp->refcount, 1, memory_order_relaxed);
    return kp;
}

void hush_keypair_free(hush_keypair *kp)
{
    /* acq_rel: every other holder's use happens before the free. */
    if (kp == NULL || atomic_fetch_sub_explicit(&kp->refcount, 1, memory_order_acq_rel) != 1)
        return;
    EVP_PKEY_free(kp->pkey);
    free(kp);
}

hush_pubkey *hush_pubkey_ref(hush_pubkey *pk)
{
    if (pk != NULL)
        atomic_fetch_add_explicit(&pk->refcount, 1, memory_order_relaxed);
    return pk;
}

void hush_pubkey_free(hush_pubkey *pk)
{
    if (pk == NULL || atomic_fetch_sub_explicit(&pk->refcount, 1, memory_order_acq_rel) != 1)
        return;
    EVP_PKEY_free(pk->pkey);
    free(pk);
}

EVP_PKEY *hush__keypair_pkey(const hush_keypair *kp) { return kp != NULL ? kp->pkey : NULL; }
EVP_PKEY *hush__pubkey_pkey(const hush_pubkey *pk) { return pk != NULL ? pk->pkey : NULL; }

unsigned hush_keypair_bits(const hush_keypair *kp)
{
    int bits = kp != NULL ? EVP_PKEY_get_bits(kp->pkey) : 0;
    return bits > 0 ? (unsigned)bits : 0;
}

unsigned hush_pubkey_bits(const hush_pubkey *pk)
{
    int bits = pk != NULL ? EVP_PKEY_get_bits(pk->pkey) : 0;
    return bits > 0 ? (unsigned)bits : 0;
}

/* Every key hushcall accepts is RSA of a sensible size. */
HUSH_MUST_USE
static hush_status check_rsa_key(const EVP_PKEY *pkey, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(EVP_PKEY_is_a(pkey, "RSA"), HUSH_E_KEY, "not an RSA key");
    int bits = EVP_PKEY_get_bits(pkey);
    HUSH_ENSURE(bits >= (int)HUSH_RSA_MIN_BITS, HUSH_E_KEY,
                "RSA key of %d bits is too small (minimum %u)", bits, HUSH_RSA_MIN_BITS);
    HUSH_ENSURE(bits <= (int)HUSH_RSA_MAX_BITS, HUSH_E_KEY,
                "RSA key of %d bits is too large (maximum %u)", bits, HUSH_RSA_MAX_BITS);
cleanup:
    return status;
}

/* ---- generation -------------------------------------------------------- */

/* OpenSSL's progress callback during key generation: returning 0 stops it. */
static int keygen_continue(EVP_PKEY_CTX *ctx)
{
    const atomic_bool *abandon = EVP_PKEY_CTX_get_app_data(ctx);
    return !atomic_load_explicit(abandon, memory_order_relaxed);
}

hush_status hush_keypair_generate(unsigned bits, hush_keypair **out, hush_error *err)
{
    return hush__keypair_generate_abandonable(bits, NULL, out, err);
}

hush_status hush__keypair_generate_abandonable(unsigned bits, const atomic_bool *abandon,
                                               hush_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *e = NULL;
    EVP_PKEY *pkey = NULL;

    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_keypair_generate: out is NULL");
    *out = NULL;
    if (bits == 0)
        bits = HUSH_RSA_DEFAULT_BITS;
    HUSH_ENSURE(bits >= HUSH_RSA_MIN_BITS, HUSH_E_KEY,
                "RSA keys of %u bits are too small (minimum %u)", bits, HUSH_RSA_MIN_BITS);
    HUSH_ENSURE(bits <= HUSH_RSA_MAX_BITS, HUSH_E_KEY,
                "RSA keys of %u bits are too large (maximum %u)", bits, HUSH_RSA_MAX_BITS);
    /* The secure heap must exist before the private bignums are made. */
    HUSH_TRY(hush__init(err));

    HUSH_OSSL((ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) != NULL,
              "creating an RSA key context");
    HUSH_OSSL(EVP_PKEY_keygen_init(ctx) > 0, "EVP_PKEY_keygen_init");
    HUSH_OSSL(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) > 0, "setting the RSA key size");
    HUSH_OSSL((e = BN_new()) != NULL && BN_set_word(e, RSA_PUBLIC_EXPONENT) == 1,
              "setting the RSA public exponent");
    HUSH_OSSL(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, e) > 0, "setting the RSA public exponent");
    if (abandon != NULL) {
        EVP_PKEY_CTX_set_app_data(ctx, (void *)abandon); /* read only, by keygen_continue */
        EVP_PKEY_CTX_set_cb(ctx, keygen_continue);
    }
    int generated = EVP_PKEY_generate(ctx, &pkey);
    if (generated <= 0 && abandon != NULL && atomic_load(abandon)) {
        ERR_clear_error(); /* OpenSSL's record of the stop we asked for */
        HUSH_BAIL(HUSH_E_CANCELLED, "key generation was abandoned");
    }
    HUSH_OSSL(generated > 0, "generating an RSA key");
    HUSH_TRY(keypair_wrap(&pkey, out, err));
cleanup:
    EVP_PKEY_free(pkey);
    BN_free(e);
    EVP_PKEY_CTX_free(ctx);
    return status;
}

/* ---- password failures ------------------------------------------------ */

HUSH_MUST_USE
static hush_status fail_wrong_password(hush_error *err)
{
    ERR_clear_error();
    return hush__fail(err, HUSH_E_PASSWORD, "wrong password (or damaged key file)");
}

HUSH_MUST_USE
static hush_status fail_password_needed(hush_error *err)
{
    ERR_clear_error();
    return hush__fail(err, HUSH_E_PASSWORD, "private key is encrypted: a password is needed");
}

/* ---- private PEM export ------------------------------------------------ */

/* PBES2 parameters with a fresh 16-byte salt (OpenSSL 3.0 would pick 8,
 * under NIST's minimum) and a fresh IV: AES-256-CBC under `kdf`. */
static X509_ALGOR *pbes2_algorithm(hush_key_kdf kdf)
{
    unsigned char salt[HUSH_KEY_SALT_BYTES];
    if (RAND_bytes(salt, sizeof salt) != 1)
        return NULL;
    if (kdf == HUSH_KDF_SCRYPT)
        return PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), salt, sizeof salt, NULL,
                                     HUSH_KEY_SCRYPT_N, HUSH_KEY_SCRYPT_R, HUSH_KEY_SCRYPT_P);
    return PKCS5_pbe2_set_iv(EVP_aes_256_cbc(), HUSH_KEY_PBKDF2_ITERATIONS, salt, sizeof salt,
                             NULL, NID_hmacWithSHA256);
}

HUSH_MUST_USE
static hush_status write_encrypted_pkcs8(BIO *bio, PKCS8_PRIV_KEY_INFO *p8inf,
                                         const char *password, hush_key_kdf kdf, hush_error *err)
{
    hush_status status = HUSH_OK;
    X509_ALGOR *alg = NULL;
    X509_SIG *sig = NULL;
    HUSH_OSSL((alg = pbes2_algorithm(kdf)) != NULL, "encoding the password parameters");
    HUSH_OSSL((sig = PKCS8_set0_pbe(password, (int)strlen(password), p8inf, alg)) != NULL,
              "encrypting the private key");
    alg = NULL; /* owned by sig now */
    HUSH_OSSL(PEM_write_bio_PKCS8(bio, sig) == 1, "writing the encrypted private key");
cleanup:
    X509_ALGOR_free(alg);
    X509_SIG_free(sig);
    return status;
}

/* Copy what a memory BIO holds into a new secure buffer. */
HUSH_MUST_USE
static hush_status bio_to_secbuf(BIO *bio, hush_secbuf **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *buf = NULL;
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    HUSH_OSSL(len > 0 && data != NULL, "reading the PEM text");
    HUSH_TRY(hush_secbuf_new((size_t)len, 0, HUSH_SECMEM_DEFAULT, &buf, err));
    HUSH_TRY(hush_secbuf_append(buf, data, (size_t)len, err));
    *out = buf;
    buf = NULL;
cleanup:
    hush_secbuf_free(buf);
    return status;
}

hush_status hush_keypair_private_pem(const hush_keypair *kp, const char *password,
                                     hush_key_kdf kdf, hush_secbuf **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    PKCS8_PRIV_KEY_INFO *p8inf = NULL;
    BIO *bio = NULL;

    HUSH_ENSURE(kp != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_private_pem: NULL argument");
    *out = NULL;
    HUSH_ENSURE(kdf == HUSH_KDF_PBKDF2 || kdf == HUSH_KDF_SCRYPT, HUSH_E_ARGUMENT,
                "unknown key derivation function %d", (int)kdf);
    /* OpenSSL reads passwords through a PEM_BUFSIZE buffer: a longer one
     * would make a file nothing can open. */
    HUSH_ENSURE(password == NULL || strlen(password) <= PEM_BUFSIZE, HUSH_E_ARGUMENT,
                "password is longer than %d bytes", PEM_BUFSIZE);
    HUSH_TRY(hush__init(err));
    HUSH_OSSL((p8inf = EVP_PKEY2PKCS8(kp->pkey)) != NULL, "encoding the private key");
    /* Not BIO_s_mem: its buffer is ordinary heap. */
    HUSH_OSSL((bio = BIO_new(BIO_s_secmem())) != NULL, "creating a secure memory BIO");
    if (password != NULL)
        HUSH_TRY(write_encrypted_pkcs8(bio, p8inf, password, kdf, err));
    else
        HUSH_OSSL(PEM_write_bio_PKCS8_PRIV_KEY_INFO(bio, p8inf) == 1, "writing the private key");
    HUSH_TRY(bio_to_secbuf(bio, out, err));
cleanup:
    BIO_free(bio); /* a secure-heap BIO is cleansed when freed */
    PKCS8_PRIV_KEY_INFO_free(p8inf);
    return status;
}

/* ---- private PEM import ------------------------------------------------ */

/* What OpenSSL's password callback was given and what it did with it. */
typedef struct password_request {
    const char *password;
    bool asked;
    bool too_long;
} password_request;

static int supply_password(char *buf, int size, int rwflag, void *userdata)
{
    (void)rwflag;
    password_request *req = userdata;
    req->asked = true;
    if (req->password == NULL)
        return -1;
    size_t len = strlen(req->password);
    if (size < 0 || len > (size_t)size) {
        req->too_long = true;
        return -1;
    }
    memcpy(buf, req->password, len);
    return (int)len;
}

/* True when OpenSSL refused a key file's scrypt cost as too expensive.
 * Empties this thread's error queue either way. */
static bool scrypt_cost_refused(void)
{
    bool refused = false;
    unsigned long e;
    while ((e = ERR_get_error()) != 0)
        refused |= ERR_GET_REASON(e) == EVP_R_MEMORY_LIMIT_EXCEEDED;
    return refused;
}

HUSH_MUST_USE
static hush_status read_private_key(const void *pem, int len, const char *password,
                                    EVP_PKEY **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    password_request req = {password, false, false};
    BIO *bio = NULL;

    HUSH_OSSL((bio = BIO_new_mem_buf(pem, len)) != NULL, "BIO_new_mem_buf");
    *out = PEM_read_bio_PrivateKey(bio, NULL, supply_password, &req);
    if (*out != NULL)
        goto cleanup;
    if (req.asked && password == NULL)
        status = fail_password_needed(err);
    else if (req.too_long)
        status = hush__fail(err, HUSH_E_PASSWORD, "password is longer than %d bytes", PEM_BUFSIZE);
    else if (req.asked && scrypt_cost_refused())
        status = hush__fail(err, HUSH_E_LIMIT, "key file asks for more scrypt memory than allowed");
    else if (req.asked)
        status = fail_wrong_password(err);
    else
        status = hush__fail_openssl(err, HUSH_E_KEY, "reading the PEM private key");
cleanup:
    BIO_free(bio);
    return status;
}

hush_status hush_keypair_from_pem(const void *pem, size_t len, const char *password,
                                  hush_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *pkey = NULL;

    HUSH_ENSURE(pem != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_from_pem: NULL argument");
    *out = NULL;
    HUSH_ENSURE(len <= KEY_FILE_MAX, HUSH_E_LIMIT, "private key PEM of %zu bytes is too large",
                len);
    HUSH_TRY(hush__init(err));
    HUSH_TRY(read_private_key(pem, (int)len, password, &pkey, err));
    HUSH_TRY(check_rsa_key(pkey, err));
    HUSH_TRY(keypair_wrap(&pkey, out, err));
cleanup:
    EVP_PKEY_free(pkey);
    return status;
}

/* ---- key files ---------------------------------------------------------- */

hush_status hush_keypair_load_file(const char *private_key_path, const char *password,
                                   hush_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *pem = NULL;

    HUSH_ENSURE(private_key_path != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_load_file: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__private_key_file_read(private_key_path, KEY_FILE_MAX, &pem, err));
    HUSH_TRY(hush_keypair_from_pem(hush_secbuf_data(pem), hush_secbuf_len(pem), password, out,
                                   err));
cleanup:
    hush_secbuf_free(pem);
    return status;
}

/* `dir`/`name` in a new malloc'd string. */
HUSH_MUST_USE
static hush_status join_path(const char *dir, const char *name, char **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    *out = malloc(len);
    HUSH_ENSURE(*out != NULL, HUSH_E_NOMEM, "out of memory");
    snprintf(*out, len, "%s/%s", dir, name);
cleanup:
    return status;
}

hush_status hush_keypair_load_dir(const char *dir, const char *password, hush_keypair **out,
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    char *path = NULL;
    HUSH_ENSURE(dir != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_load_dir: NULL argument");
    *out = NULL;
    HUSH_TRY(join_path(dir, HUSH_PRIVATE_KEY_FILE, &path, err));
    HUSH_TRY(hush_keypair_load_file(path, password, out, err));
cleanup:
    free(path);
    return status;
}

/* ---- key directories --------------------------------------------------- */

hush_status hush_keypair_save_dir(const hush_keypair *kp, const char *dir, const char *password,
                                  hush_key_kdf kdf, unsigned flags, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *private_pem = NULL;
    char *public_pem = NULL;
    size_t public_len = 0;
    int dfd = -1;
    bool overwrite = (flags & HUSH_KEYS_SAVE_OVERWRITE) != 0;
    /* The private key goes in place first. A crash between the two renames
     * then leaves a new private key beside an old or missing public key,
     * which the private key can always regenerate; the other order could
     * leave a public key on disk (and handed out) whose private key was
     * never saved, so everything sealed to it would be lost. */
    hush_staged_file files[2] = {
        {.name = HUSH_PRIVATE_KEY_FILE, .mode = 0600},
        {.name = HUSH_PUBLIC_KEY_FILE, .mode = 0644},
    };

    HUSH_ENSURE(kp != NULL && dir != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_save_dir: NULL argument");
    HUSH_ENSURE((flags & ~HUSH_KEYS_SAVE_OVERWRITE) == 0, HUSH_E_ARGUMENT,
                "hush_keypair_save_dir: unknown flags 0x%x", flags);
    /* Both texts exist before the file system is touched. */
    HUSH_TRY(hush_keypair_private_pem(kp, password, kdf, &private_pem, err));
    HUSH_TRY(hush_keypair_public_pem(kp, &public_pem, &public_len, err));
    HUSH_TRY(hush__dir_open(dir, true, &dfd, err));
    if (!overwrite)
        HUSH_TRY(hush__staged_refuse_existing(dfd, dir, files, 2, err));
    HUSH_TRY(hush__staged_write(dfd, dir, &files[0], hush_secbuf_data(private_pem),
                                hush_secbuf_len(private_pem), err));
    HUSH_TRY(hush__staged_write(dfd, dir, &files[1], public_pem, public_len, err));
    HUSH_TRY(hush__staged_place(dfd, dir, &files[0], overwrite, err));
    HUSH_TRY(hush__staged_place(dfd, dir, &files[1], overwrite, err));
    HUSH_ENSURE(fsync(dfd) == 0, HUSH_E_IO, "cannot fsync the key directory: %s",
                strerror(errno));
cleanup:
    if (status != HUSH_OK && dfd >= 0)
        hush__staged_undo(dfd, files, 2, overwrite);
    if (dfd >= 0)
        close(dfd);
    free(public_pem);
    hush_secbuf_free(private_pem);
    return status;
}

/* ---- public keys ------------------------------------------------------- */

HUSH_MUST_USE
static hush_status public_pem(EVP_PKEY *pkey, char **out, size_t *out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    BIO *bio = NULL;
    char *data = NULL;

    HUSH_OSSL((bio = BIO_new(BIO_s_mem())) != NULL, "BIO_new");
    HUSH_OSSL(PEM_write_bio_PUBKEY(bio, pkey) == 1, "writing the public key");
    long len = BIO_get_mem_data(bio, &data);
    HUSH_OSSL(len > 0 && data != NULL, "reading the public key PEM");
    HUSH_ENSURE((*out = malloc((size_t)len + 1)) != NULL, HUSH_E_NOMEM, "out of memory");
    memcpy(*out, data, (size_t)len);
    (*out)[len] = '\0';
    if (out_len != NULL)
        *out_len = (size_t)len;
cleanup:
    BIO_free(bio);
    return status;
}

hush_status hush_keypair_public_pem(const hush_keypair *kp, char **out, size_t *out_len,
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(kp != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_public_pem: NULL argument");
    *out = NULL;
    HUSH_TRY(public_pem(kp->pkey, out, out_len, err));
cleanup:
    return status;
}

hush_status hush_pubkey_pem(const hush_pubkey *pk, char **out, size_t *out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(pk != NULL && out != NULL, HUSH_E_ARGUMENT, "hush_pubkey_pem: NULL argument");
    *out = NULL;
    HUSH_TRY(public_pem(pk->pkey, out, out_len, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status fingerprint(EVP_PKEY *pkey, char out[HUSH_FINGERPRINT_LEN], hush_error *err)
{
    static const char hex[] = "0123456789abcdef"; /* indexed by public bytes only */
    hush_status status = HUSH_OK;
    unsigned char *der = NULL;
    unsigned char digest[32];
    unsigned digest_len = 0;

    int der_len = i2d_PUBKEY(pkey, &der);
    HUSH_OSSL(der_len > 0, "encoding the public key");
    HUSH_OSSL(EVP_Digest(der, (size_t)der_len, digest, &digest_len, EVP_sha256(), NULL) == 1 &&
                  digest_len == sizeof digest,
              "SHA-256");
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < sizeof digest; i++) {
        out[7 + 2 * i] = hex[digest[i] >> 4];
        out[8 + 2 * i] = hex[digest[i] & 15];
    }
    out[HUSH_FINGERPRINT_LEN - 1] = '\0';
cleanup:
    OPENSSL_free(der);
    return status;
}

hush_status hush_keypair_fingerprint(const hush_keypair *kp, char out[HUSH_FINGERPRINT_LEN],
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(kp != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_keypair_fingerprint: NULL argument");
    HUSH_TRY(fingerprint(kp->pkey, out, err));
cleanup:
    return status;
}

hush_status hush_pubkey_fingerprint(const hush_pubkey *pk, char out[HUSH_FINGERPRINT_LEN],
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(pk != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_pubkey_fingerprint: NULL argument");
    HUSH_TRY(fingerprint(pk->pkey, out, err));
cleanup:
    return status;
}

hush_status hush_pubkey_from_pem(const void *pem, size_t len, hush_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    OSSL_DECODER_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    const unsigned char *data = pem;
    size_t left = len;

    HUSH_ENSURE(pem != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_pubkey_from_pem: NULL argument");
    *out = NULL;
    HUSH_ENSURE(len <= KEY_FILE_MAX, HUSH_E_LIMIT, "public key PEM of %zu bytes is too large", len);
    /* Any structure: SubjectPublicKeyInfo ("PUBLIC KEY") and PKCS#1
     * ("RSA PUBLIC KEY"). Selecting only public keys makes private-key PEM
     * fail here rather than be held in a public handle. */
    HUSH_OSSL((ctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY,
                                                   NULL, NULL)) != NULL,
              "creating a PEM decoder");
    if (OSSL_DECODER_from_data(ctx, &data, &left) != 1)
        HUSH_BAIL_WITH(hush__fail_openssl(err, HUSH_E_KEY, "reading the PEM public key"));
    HUSH_TRY(check_rsa_key(pkey, err));
    HUSH_TRY(pubkey_wrap(&pkey, out, err));
cleanup:
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(ctx);
    return status;
}

hush_status hush_pubkey_from_keypair(const hush_keypair *kp, hush_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *der = NULL;
    EVP_PKEY *pkey = NULL;

    HUSH_ENSURE(kp != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_pubkey_from_keypair: NULL argument");
    *out = NULL;
    /* Through DER, so the public handle holds no private half. */
    int der_len = i2d_PUBKEY(kp->pkey, &der);
    HUSH_OSSL(der_len > 0, "encoding the public key");
    const unsigned char *p = der;
    HUSH_OSSL((pkey = d2i_PUBKEY(NULL, &p, der_len)) != NULL, "decoding the public key");
    HUSH_TRY(pubkey_wrap(&pkey, out, err));
cleanup:
    EVP_PKEY_free(pkey);
    OPENSSL_free(der);
    return status;
}
