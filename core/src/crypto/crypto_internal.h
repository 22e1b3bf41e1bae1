/* crypto_internal.h — the crypto layer's internals: the OpenSSL keys behind
 * the handles, and the v1 envelope's forms for the client and server roles. */
#ifndef HUSHCALL_CRYPTO_INTERNAL_H
#define HUSHCALL_CRYPTO_INTERNAL_H

#include <stdint.h>

#include "hushcall/envelope_v1.h"
#include "hushcall/keys.h"
#include "internal.h"

/* The OpenSSL key behind a handle (keys.c), borrowed: valid while the
 * handle is. For the envelope modules, which need the raw EVP_PKEY. */
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

#endif
