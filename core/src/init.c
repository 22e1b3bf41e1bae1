/* init.c — the library's only process-wide state, set once under pthread_once. */
#include <pthread.h>
#include <unistd.h>

#include <openssl/crypto.h>

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
static size_t page_size;

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
        secure_heap = CRYPTO_secure_malloc_init(OPENSSL_SECURE_HEAP_BYTES,
                                                OPENSSL_SECURE_HEAP_MIN_ALLOC) != 0;
    init_status = HUSH_OK;
}

hush_status hush__init(hush_error *err)
{
    if (pthread_once(&init_once, init_once_fn) != 0)
        return hush__fail(err, HUSH_E_INTERNAL, "one-time initialisation failed");
    if (init_status != HUSH_OK)
        return hush__fail(err, init_status, "could not create the C locale");
    return HUSH_OK;
}

locale_t hush__c_locale(void) { return c_locale; }
bool hush__openssl_secure_heap(void) { return secure_heap; }
size_t hush__page_size(void) { return page_size; }
