/* init.c — the library's only process-wide state, set once under pthread_once:
 * the page size, a "C" locale, OpenSSL's secure heap, the OpenSSL algorithms
 * every message uses, and libcurl's globals. */
#include <pthread.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"

/* OpenSSL keeps private-key bignums (RSA d, p, q, CRT values) in its secure
 * heap when one exists: mlock'ed, guarded, cleansed. 1 MiB holds a few
 * hundred RSA-4096 keys with their working space. */
#define OPENSSL_SECURE_HEAP_BYTES (1u << 20)
#define OPENSSL_SECURE_HEAP_MIN_ALLOC 32

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static hush_status init_status = HUSH_E_INTERNAL;
static locale_t c_locale;
static bool secure_heap;
static bool secure_heap_locked; /* set up by us, and mlock'ed (OpenSSL answered 1) */
static size_t page_size;
static EVP_MD *sha256;
static EVP_CIPHER *aes_256_gcm;
static EVP_MD *sha3_256, *sha3_512, *shake128, *shake256;
static EVP_MAC *hmac;

static void init_once_fn(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    page_size = ps > 0 ? (size_t)ps : 4096;

    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) {
        init_status = HUSH_E_NOMEM;
        return;
    }
    /* Another library in the process may have set the heap up already. */
    if (CRYPTO_secure_malloc_initialized())
        secure_heap = true;
    else
    {
        int rc = CRYPTO_secure_malloc_init(OPENSSL_SECURE_HEAP_BYTES,
                                           OPENSSL_SECURE_HEAP_MIN_ALLOC);
        secure_heap = rc != 0;
        secure_heap_locked = rc == 1;
    }
    /* Fetched once: OpenSSL 3 otherwise looks algorithms up by name on every
     * use of EVP_sha256() or EVP_aes_256_gcm(), on every message. */
    sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    aes_256_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    /* ML-KEM and X-Wing hash a few dozen times per operation. */
    sha3_256 = EVP_MD_fetch(NULL, "SHA3-256", NULL);
    sha3_512 = EVP_MD_fetch(NULL, "SHA3-512", NULL);
    shake128 = EVP_MD_fetch(NULL, "SHAKE-128", NULL);
    shake256 = EVP_MD_fetch(NULL, "SHAKE-256", NULL);
    /* HPKE's key schedule runs HMAC eight times per context. */
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (sha256 == NULL || aes_256_gcm == NULL || sha3_256 == NULL || sha3_512 == NULL ||
        shake128 == NULL || shake256 == NULL || hmac == NULL) {
        init_status = HUSH_E_CRYPTO;
        return;
    }
    /* libcurl's global state, before any thread uses it. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        init_status = HUSH_E_INTERNAL;
        return;
    }
    init_status = HUSH_OK;
}

hush_status hush__init(hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(pthread_once(&init_once, init_once_fn) == 0, HUSH_E_INTERNAL,
                "one-time initialisation failed");
    HUSH_ENSURE(init_status == HUSH_OK, init_status,
                "one-time initialisation failed (locale, OpenSSL algorithms or libcurl)");
cleanup:
    return status;
}

locale_t hush__c_locale(void) { return c_locale; }
bool hush__openssl_secure_heap(void) { return secure_heap; }
bool hush__openssl_secure_heap_locked(void) { return secure_heap_locked; }
size_t hush__page_size(void) { return page_size; }
const EVP_MD *hush__sha256(void) { return sha256; }
const EVP_CIPHER *hush__aes_256_gcm(void) { return aes_256_gcm; }
const EVP_MD *hush__sha3_256(void) { return sha3_256; }
const EVP_MD *hush__sha3_512(void) { return sha3_512; }
const EVP_MD *hush__shake128(void) { return shake128; }
const EVP_MD *hush__shake256(void) { return shake256; }
EVP_MAC *hush__hmac(void) { return hmac; }
