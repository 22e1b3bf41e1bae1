/* hushcall/mlkem.h — ML-KEM-768 (FIPS 203), the lattice half of X-Wing.
 *
 * Byte-array functions in the libsodium manner: the caller owns every
 * buffer. Decapsulation keys, seeds and shared secrets are secrets: give
 * them secure memory (hushcall/secmem.h). Temporaries that hold secrets
 * inside a call are wiped before it returns.
 *
 * Built against OpenSSL >= 3.5 these run on OpenSSL's own ML-KEM-768;
 * otherwise on hushcall's implementation (core/src/crypto/mlkem.c), written
 * from FIPS 203 in constant time. hush_mlkem768_implementation() says which.
 * Both pass the same known-answer and cross-check tests. */
#ifndef HUSHCALL_MLKEM_H
#define HUSHCALL_MLKEM_H

#include <stddef.h>

#include "hushcall/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_MLKEM768_SEED_BYTES 64u           /* d || z (FIPS 203 Algorithm 16) */
#define HUSH_MLKEM768_ENCAPS_KEY_BYTES 1184u   /* ek */
#define HUSH_MLKEM768_DECAPS_KEY_BYTES 2400u   /* dk */
#define HUSH_MLKEM768_CIPHERTEXT_BYTES 1088u   /* c */
#define HUSH_MLKEM768_SHARED_SECRET_BYTES 32u  /* K */
#define HUSH_MLKEM768_MESSAGE_BYTES 32u        /* m, the encapsulation randomness */

/* ML-KEM.KeyGen_internal(d, z): the key pair a 64-byte seed d || z names. */
HUSH_MUST_USE
hush_status hush_mlkem768_keygen_from_seed(const unsigned char seed[HUSH_MLKEM768_SEED_BYTES],
                                           unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                           unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                           hush_error *err);

/* ML-KEM.KeyGen with a fresh seed from OpenSSL's private DRBG. */
HUSH_MUST_USE
hush_status hush_mlkem768_keygen(unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                 unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                 hush_error *err);

/* The encapsulation-key check of FIPS 203 §7.2 (every coefficient below q):
 * HUSH_E_KEY when it fails. Encapsulation runs it first. */
HUSH_MUST_USE
hush_status hush_mlkem768_check_encaps_key(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                           hush_error *err);

/* ML-KEM.Encaps_internal(ek, m): deterministic, for known answers and for
 * callers that derive m themselves (X-Wing's EncapsulateDerand). */
HUSH_MUST_USE
hush_status hush_mlkem768_encaps_derand(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                        const unsigned char m[HUSH_MLKEM768_MESSAGE_BYTES],
                                        unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                        unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                        hush_error *err);

/* ML-KEM.Encaps with a fresh m. HUSH_E_KEY for an ek failing §7.2. */
HUSH_MUST_USE
hush_status hush_mlkem768_encaps(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                 unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                 unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                 hush_error *err);

/* ML-KEM.Decaps. HUSH_E_KEY when dk fails the hash check of FIPS 203 §7.3.
 * A ciphertext that does not re-encrypt is not an error: it yields the
 * implicit-rejection secret J(z || c) and HUSH_OK, in the same time as a
 * good one. */
HUSH_MUST_USE
hush_status hush_mlkem768_decaps(const unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                 const unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                 unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                 hush_error *err);

/* "hushcall" or "openssl": which implementation this build uses. */
const char *hush_mlkem768_implementation(void);

#ifdef __cplusplus
}
#endif

#endif
