/* crypto_internal.h — the crypto layer's internals: the OpenSSL keys behind
 * the handles, and the v1 envelope's forms for the client and server roles. */
#ifndef HUSHCALL_CRYPTO_INTERNAL_H
#define HUSHCALL_CRYPTO_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "hushcall/envelope_v1.h"
#include "hushcall/hpke.h"
#include "hushcall/keys.h"
#include "hushcall/mlkem.h"
#include "hushcall/xwing.h"
#include "internal.h"

/* The OpenSSL key behind a handle (keys.c), borrowed: valid while the
 * handle is. For the envelope modules, which need the raw EVP_PKEY. */
/* hush_keypair_generate, stopped early (HUSH_E_CANCELLED) once *abandon
 * turns true: a client freed while its key is still being made. */
HUSH_MUST_USE
hush_status hush__keypair_generate_abandonable(unsigned bits, const atomic_bool *abandon,
                                               hush_keypair **out, hush_error *err);
EVP_PKEY *hush__keypair_pkey(const hush_keypair *kp);
EVP_PKEY *hush__pubkey_pkey(const hush_pubkey *pk);

/* ---- password protection of private-key files (keys.c, hpke_keyfile.c) -- */

/* The costs of hush_key_kdf, the same for every kind of key file. */
#define HUSH_KEY_PBKDF2_ITERATIONS 600000u
/* OWASP's scrypt settings trade memory for passes: N=2^14, r=8, p=5 is
 * rated as N=2^17, r=8, p=1, and its 16 MiB stay within the 32 MiB that
 * OpenSSL's own PKCS#8 code allows, so the files are plain PBES2 that
 * OpenSSL, `openssl pkey` and Python's cryptography all read. */
#define HUSH_KEY_SCRYPT_N (1u << 14)
#define HUSH_KEY_SCRYPT_R 8u
#define HUSH_KEY_SCRYPT_P 5u
#define HUSH_KEY_SALT_BYTES 16u
/* OpenSSL reads PEM passwords through a PEM_BUFSIZE (1024) buffer; the
 * same limit holds for every key file. */
#define HUSH_KEY_PASSWORD_MAX 1024u

/* ---- hpke_keyfile.c: the key file format on raw keys --------------------- */

/* The armoured text of a key file for KEM `kem_id` and its serialized
 * private key `sk`, protected under `password` with `kdf` (NULL: in the
 * clear), into a new secure buffer. */
HUSH_MUST_USE
hush_status hush__hpke_keyfile_encode(uint16_t kem_id, const unsigned char *sk, size_t sk_len,
                                      const char *password, hush_key_kdf kdf, hush_secbuf **text,
                                      hush_error *err);

/* The inverse: the KEM and the private key (a new secure buffer) a key
 * file's text holds. HUSH_E_KEY naming what is malformed, HUSH_E_PASSWORD
 * for a missing or wrong password (or a damaged encrypted key). */
HUSH_MUST_USE
hush_status hush__hpke_keyfile_decode(const unsigned char *text, size_t len,
                                      const char *password, uint16_t *kem_id, hush_secbuf **sk,
                                      hush_error *err);

/* ---- HPKE internals (hpke_kdf.c, hpke_keys.c), for hpke.c --------------- */

/* A piece of a labeled input: the labeled functions hash their inputs in
 * parts, so a secret is never copied into a concatenation buffer. */
typedef struct hush__span {
    const void *data;
    size_t len;
} hush__span;

#define HUSH_HPKE_SECRET_BYTES 32u    /* Nsecret of both KEMs; Nh of HKDF-SHA256 */
#define HUSH_HPKE_SHAKE256_NH 64u     /* Nh of the one-stage SHAKE256 KDF */

/* HMAC-SHA256(key, parts...): the plain HKDF steps of v2's response key
 * (envelope_v2.c) use it as the labeled ones do. */
HUSH_MUST_USE
hush_status hush__hmac_sha256(const unsigned char *key, size_t key_len, const hush__span *parts,
                              size_t n_parts, unsigned char out[HUSH_HPKE_SECRET_BYTES],
                              hush_error *err);

/* RFC 9180 §4 over HKDF-SHA256: LabeledExtract(salt, label, ikm parts) and
 * LabeledExpand(prk, label, info parts, L), with `suite_id` ("KEM"||id or
 * "HPKE"||ids). L is at most 255 * 32. */
HUSH_MUST_USE
hush_status hush__hpke_labeled_extract(const unsigned char *suite_id, size_t suite_id_len,
                                       const void *salt, size_t salt_len, const char *label,
                                       const hush__span *ikm, size_t ikm_parts,
                                       unsigned char prk[HUSH_HPKE_SECRET_BYTES], hush_error *err);
HUSH_MUST_USE
hush_status hush__hpke_labeled_expand(const unsigned char *suite_id, size_t suite_id_len,
                                      const unsigned char prk[HUSH_HPKE_SECRET_BYTES],
                                      const char *label, const hush__span *info, size_t info_parts,
                                      unsigned char *out, size_t len, hush_error *err);
/* The one-stage KDF's LabeledDerive(ikm parts, label, context parts, L) over
 * SHAKE256 (draft-ietf-hpke-pq); L at most 65535. */
HUSH_MUST_USE
hush_status hush__hpke_labeled_derive(const unsigned char *suite_id, size_t suite_id_len,
                                      const hush__span *ikm, size_t ikm_parts, const char *label,
                                      const hush__span *context, size_t context_parts,
                                      unsigned char *out, size_t len, hush_error *err);

/* The KEM's Encap(pkR) into `enc` (room for hush_hpke_kem_enc_bytes) and a
 * 32-byte shared secret; `ikmE` NULL for fresh randomness, else DHKEM's
 * DeriveKeyPair input or X-Wing's 64-byte eseed. HUSH_E_KEY for a public
 * key no secret can be agreed with. */
HUSH_MUST_USE
hush_status hush__hpke_encap(const hush_hpke_pubkey *pkR, const void *ikmE, size_t ikmE_len,
                             unsigned char *enc, unsigned char ss[HUSH_HPKE_SECRET_BYTES],
                             hush_error *err);
/* The KEM's Decap(enc, skR); every failure is one opaque HUSH_E_AUTH. */
HUSH_MUST_USE
hush_status hush__hpke_decap(const hush_hpke_keypair *skR, const void *enc, size_t enc_len,
                             unsigned char ss[HUSH_HPKE_SECRET_BYTES], hush_error *err);

/* Move a context's sequence number (hpke.c), so a test reaches the end of
 * the counter without sealing 2^64 messages. */
void hush__hpke_ctx_set_seq(hush_hpke_ctx *ctx, uint64_t seq);

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
