/* fuzz_xwing_decaps.c — libFuzzer target for X-Wing on arbitrary bytes.
 * The first byte picks what the rest is:
 *   0: a ciphertext for a fixed seed;
 *   1: a 32-byte seed, then a ciphertext;
 *   2: a public key to encapsulate to.
 * Short inputs are padded with zeros. Decapsulation must give HUSH_OK (or
 * HUSH_E_KEY for a low-order X25519 share), encapsulation HUSH_OK or
 * HUSH_E_KEY (a failing ML-KEM key or a low-order X25519 key); anything
 * else aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/xwing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void take(unsigned char *out, size_t len, const uint8_t **data, size_t *size)
{
    size_t n = *size < len ? *size : len;
    memset(out, 0, len);
    if (n > 0)
        memcpy(out, *data, n);
    *data += n;
    *size -= n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES] = {0};
    unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES], ct[HUSH_XWING_CIPHERTEXT_BYTES];
    unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES];
    hush_error err;
    hush_status status;
    if (size == 0)
        return 0;
    unsigned mode = data[0] % 3;
    data++;
    size--;
    if (mode == 2) {
        take(pk, sizeof pk, &data, &size);
        status = hush_xwing_encaps(pk, ct, ss, &err);
    } else {
        if (mode == 1)
            take(sk, sizeof sk, &data, &size);
        take(ct, sizeof ct, &data, &size);
        status = hush_xwing_decaps(sk, ct, ss, &err);
    }
    if (status != HUSH_OK && status != HUSH_E_KEY)
        abort();
    return 0;
}
