/* fuzz_mlkem_decaps.c — libFuzzer target for ML-KEM-768 decapsulation on
 * arbitrary bytes. The first byte picks what the rest is:
 *   0: a ciphertext for a fixed good key: must decapsulate (HUSH_OK);
 *   1: a decapsulation key then a ciphertext: HUSH_OK or HUSH_E_KEY;
 *   2: as 1, with the key's H(ek) recomputed so it passes the hash check:
 *      arbitrary s and ek (coefficients up to 4095) reach the arithmetic
 *      and must decapsulate (HUSH_OK); OpenSSL's ML-KEM (>= 3.5 builds)
 *      may refuse such a key in its pairwise test (HUSH_E_KEY).
 * Short inputs are padded with zeros. Any other status aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "hushcall/mlkem.h"

#define DK_EK_OFFSET (3 * 384)
#define DK_HASH_OFFSET (DK_EK_OFFSET + HUSH_MLKEM768_ENCAPS_KEY_BYTES)

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

static void fix_ek_hash(unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES])
{
    unsigned int len = 0;
    if (EVP_Digest(dk + DK_EK_OFFSET, HUSH_MLKEM768_ENCAPS_KEY_BYTES, dk + DK_HASH_OFFSET, &len,
                   EVP_sha3_256(), NULL) != 1 || len != 32)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES], ct[HUSH_MLKEM768_CIPHERTEXT_BYTES];
    unsigned char seed[HUSH_MLKEM768_SEED_BYTES] = {0}, ss[32], again[32];
    hush_error err;
    if (size == 0)
        return 0;
    unsigned mode = data[0] % 3;
    data++;
    size--;
    if (mode == 0) {
        if (hush_mlkem768_keygen_from_seed(seed, ek, dk, &err) != HUSH_OK)
            abort();
    } else {
        take(dk, sizeof dk, &data, &size);
        if (mode == 2)
            fix_ek_hash(dk);
    }
    take(ct, sizeof ct, &data, &size);
    hush_status status = hush_mlkem768_decaps(dk, ct, ss, &err);
    bool openssl = strcmp(hush_mlkem768_implementation(), "openssl") == 0;
    if (status == HUSH_E_KEY && (mode == 1 || (mode == 2 && openssl)))
        return 0;
    if (status != HUSH_OK)
        abort();
    /* the same inputs, the same secret */
    if (hush_mlkem768_decaps(dk, ct, again, &err) != HUSH_OK || memcmp(ss, again, 32) != 0)
        abort();
    return 0;
}
