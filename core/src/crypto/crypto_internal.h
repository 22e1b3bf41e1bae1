/* crypto_internal.h — the crypto layer's internals: the OpenSSL keys behind
 * the handles, and the v1 envelope's forms for the client and server roles. */
#ifndef HUSHCALL_CRYPTO_INTERNAL_H
#define HUSHCALL_CRYPTO_INTERNAL_H

#include <stdint.h>

#include "hushcall/envelope_v1.h"
#include "hushcall/keys.h"
#include "hushcall/mlkem.h"
#include "hushcall/xwing.h"
#include "internal.h"

/* The OpenSSL key behind a handle (keys.c), borrowed: valid while the
 * handle is. For the envelope modules, which need the raw EVP_PKEY. */
EVP_PKEY *hush__keypair_pkey(const hush_keypair *kp);
EVP_PKEY *hush__pubkey_pkey(const hush_pubkey *pk);

/* ---- envelope_v1.c, for the engine -------------------------------------- */

/* hush_envelope_v1_seal with the message key made in `key`: secure space
 * the caller keeps (a worker's), zeroed before returning. */
HUSH_MUST_USE
hush_status hush__envelope_v1_seal_with(const hush_pubkey *recipient, const void *plaintext,
                                        size_t len, int64_t processed_at,
                                        unsigned char key[HUSH_V1_KEY_BYTES],
                                        hush_secbuf **package, hush_error *err);


#define HUSH_V1_DIGEST_BYTES 32u

/* hush_envelope_v1_open, decrypting into `arena` instead of a new buffer,
 * so an answer, its plaintext and its document share one locked region.
 * `*processed_at` (when processed_at is not NULL) is the package's
 * processed_at, also in `arena`; NULL when absent or null.
 * `wrapped_key_digest` (NULL for none) receives SHA-256 of the wrapped
 * message key once the package has opened: fresh for every message, and
 * no one without the message key can make another package that opens
 * with it, so it names this message (the gateway's replay key). */
HUSH_MUST_USE
hush_status hush__envelope_v1_open_in(const hush_keypair *recipient, const void *package,
                                      size_t len, size_t max_package_bytes, hush_arena *arena,
                                      unsigned char **plaintext, size_t *plaintext_len,
                                      const hush_json_value **processed_at,
                                      unsigned char wrapped_key_digest[HUSH_V1_DIGEST_BYTES],
                                      hush_error *err);

/* ---- mlkem.c ------------------------------------------------------------ */

/* SampleNTT (FIPS 203 Algorithm 7) of SHAKE128(seed), seed = rho || j || i,
 * squeezing `first_bytes` (at most 504) first and longer outputs after
 * that should they run short. Public data only; for the tests, which
 * prove the fallback by starting it short. */
HUSH_MUST_USE
hush_status hush__mlkem768_sample_ntt(EVP_MD_CTX *ctx, const unsigned char seed[34],
                                      size_t first_bytes, int16_t out[256], hush_error *err);

/* ---- xwing.c ------------------------------------------------------------ */

#define HUSH_X25519_KEY_BYTES 32u

/* An X-Wing private key expanded once from its seed, for a holder that
 * decapsulates many times (HPKE's recipient). Secret as a whole: place it
 * in secure memory and wipe it (hush_memzero) when done. */
typedef struct hush_xwing_expanded {
    unsigned char mlkem_dk[HUSH_MLKEM768_DECAPS_KEY_BYTES];
    unsigned char x25519_sk[HUSH_X25519_KEY_BYTES];
    unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES]; /* ML-KEM ek || X25519 public key */
} hush_xwing_expanded;

/* expandDecapsulationKey: SHAKE256(seed, 96) split into ML-KEM's d || z and
 * the X25519 private key, and the public key they make. */
HUSH_MUST_USE
hush_status hush__xwing_expand(const unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES],
                               hush_xwing_expanded *out, hush_error *err);

/* Decapsulate with an expanded key; as hush_xwing_decaps. */
HUSH_MUST_USE
hush_status hush__xwing_decaps_expanded(const hush_xwing_expanded *key,
                                        const unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                                        unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES],
                                        hush_error *err);

#endif
