/* hushcall/xwing.h — X-Wing (draft-connolly-cfrg-xwing-kem), the hybrid KEM
 * X25519 + ML-KEM-768; HPKE KEM id 0x647A ("MLKEM768-X25519" in
 * draft-ietf-hpke-pq).
 *
 * A private key is a 32-byte seed, expanded with SHAKE256 into the ML-KEM
 * and X25519 keys on use; the shared secret is SHA3-256 over the two
 * component secrets, the X25519 ciphertext and public key, and the X-Wing
 * label. Byte-array functions: private keys and shared secrets belong in
 * secure memory. */
#ifndef HUSHCALL_XWING_H
#define HUSHCALL_XWING_H

#include <stddef.h>

#include "hushcall/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_XWING_PRIVATE_KEY_BYTES 32u    /* the seed */
#define HUSH_XWING_PUBLIC_KEY_BYTES 1216u   /* ML-KEM-768 ek || X25519 public key */
#define HUSH_XWING_CIPHERTEXT_BYTES 1120u   /* ML-KEM-768 c || X25519 ephemeral public key */
#define HUSH_XWING_SHARED_SECRET_BYTES 32u
#define HUSH_XWING_ENCAPS_SEED_BYTES 64u    /* EncapsulateDerand's eseed */

/* GenerateKeyPair: a fresh seed and its public key. */
HUSH_MUST_USE
hush_status hush_xwing_keygen(unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES],
                              unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES], hush_error *err);

/* The public key a seed names (GenerateKeyPairDerand's public half). */
HUSH_MUST_USE
hush_status hush_xwing_public_key(const unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES],
                                  unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES], hush_error *err);

/* EncapsulateDerand(pk, eseed): deterministic, for known answers. HUSH_E_KEY
 * when the ML-KEM part of pk fails FIPS 203 §7.2. */
HUSH_MUST_USE
hush_status hush_xwing_encaps_derand(const unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES],
                                     const unsigned char eseed[HUSH_XWING_ENCAPS_SEED_BYTES],
                                     unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                                     unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES],
                                     hush_error *err);

/* Encapsulate with fresh randomness. */
HUSH_MUST_USE
hush_status hush_xwing_encaps(const unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES],
                              unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                              unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES], hush_error *err);

/* Decapsulate. Like ML-KEM, a ciphertext that does not fit gives a
 * pseudorandom secret and HUSH_OK, never a distinguishable error. */
HUSH_MUST_USE
hush_status hush_xwing_decaps(const unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES],
                              const unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                              unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES], hush_error *err);

#ifdef __cplusplus
}
#endif

#endif
