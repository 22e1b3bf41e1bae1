/* mlkem_fresh.c — ML-KEM-768 with fresh randomness: the seed or m drawn
 * from OpenSSL's private DRBG, then the deterministic functions of
 * whichever implementation the build chose (mlkem.c or mlkem_openssl.c). */
#include <openssl/rand.h>

#include "crypto/crypto_internal.h"
#include "hushcall/mlkem.h"
#include "hushcall/secmem.h"

hush_status hush_mlkem768_keygen(unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                 unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char seed[HUSH_MLKEM768_SEED_BYTES];
    HUSH_TRY(hush__init(err));
    HUSH_OSSL(RAND_priv_bytes(seed, sizeof seed) == 1, "RAND_priv_bytes");
    HUSH_TRY(hush_mlkem768_keygen_from_seed(seed, ek, dk, err));
cleanup:
    hush_memzero(seed, sizeof seed);
    return status;
}

hush_status hush_mlkem768_encaps(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                 unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                 unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char m[HUSH_MLKEM768_MESSAGE_BYTES];
    HUSH_TRY(hush__init(err));
    HUSH_OSSL(RAND_priv_bytes(m, sizeof m) == 1, "RAND_priv_bytes");
    HUSH_TRY(hush_mlkem768_encaps_derand(ek, m, ct, ss, err));
cleanup:
    hush_memzero(m, sizeof m);
    return status;
}
