/* hushcall/hpke.h — Hybrid Public Key Encryption (RFC 9180), base mode.
 *
 * Suites: KEM DHKEM(X25519, HKDF-SHA256) 0x0020 or X-Wing 0x647A; KDF
 * HKDF-SHA256 0x0001 (and the one-stage SHAKE256 KDF 0x0011 of
 * draft-ietf-hpke-pq, for X-Wing); AEAD AES-256-GCM 0x0002,
 * ChaCha20-Poly1305 0x0003 or export-only 0xFFFF.
 *
 * Ownership: every hush_hpke_*_new/generate/derive/load/setup result is the
 * caller's and is released with the matching _free (each accepts NULL).
 * Key pairs and public keys are immutable and reference counted (_ref), so
 * one may be shared by many threads; a context is one conversation and is
 * not to be used from two threads at once.
 *
 * Secrets: private keys, shared secrets, the key schedule's outputs and the
 * AEAD keys live only in secure memory and are wiped when their holder is
 * freed. Open writes plaintext into a buffer the caller supplies: give it
 * secure memory. Every authentication failure is one opaque HUSH_E_AUTH. */
#ifndef HUSHCALL_HPKE_H
#define HUSHCALL_HPKE_H

#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"
#include "hushcall/keys.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_HPKE_KEM_X25519_SHA256 0x0020u
#define HUSH_HPKE_KEM_XWING 0x647Au
#define HUSH_HPKE_KDF_HKDF_SHA256 0x0001u
#define HUSH_HPKE_KDF_SHAKE256 0x0011u
#define HUSH_HPKE_AEAD_AES_256_GCM 0x0002u
#define HUSH_HPKE_AEAD_CHACHA20_POLY1305 0x0003u
#define HUSH_HPKE_AEAD_EXPORT_ONLY 0xFFFFu

#define HUSH_HPKE_TAG_BYTES 16u
#define HUSH_HPKE_MAX_ENC_BYTES 1120u         /* X-Wing's ciphertext */
#define HUSH_HPKE_MAX_PUBLIC_KEY_BYTES 1216u  /* X-Wing's public key */
#define HUSH_HPKE_MAX_PRIVATE_KEY_BYTES 32u   /* both KEMs */
#define HUSH_HPKE_MAX_INFO_BYTES 65535u
#define HUSH_HPKE_MAX_EXPORT_BYTES 8160u      /* 255 * Nh for HKDF-SHA256 */

typedef struct hush_hpke_suite {
    uint16_t kem_id;
    uint16_t kdf_id;
    uint16_t aead_id;
} hush_hpke_suite;

/* HUSH_OK when hushcall speaks the suite, else HUSH_E_UNSUPPORTED naming
 * the id it does not. */
HUSH_MUST_USE
hush_status hush_hpke_suite_check(hush_hpke_suite suite, hush_error *err);

/* Sizes for a KEM (0 for one hushcall does not speak). */
size_t hush_hpke_kem_enc_bytes(uint16_t kem_id);
size_t hush_hpke_kem_public_key_bytes(uint16_t kem_id);
size_t hush_hpke_kem_private_key_bytes(uint16_t kem_id);

/* ---- keys -------------------------------------------------------------- */

typedef struct hush_hpke_keypair hush_hpke_keypair; /* a recipient's private + public key */
typedef struct hush_hpke_pubkey hush_hpke_pubkey;   /* a recipient's public key */

/* GenerateKeyPair for `kem_id`, from OpenSSL's private DRBG. */
HUSH_MUST_USE
hush_status hush_hpke_keypair_generate(uint16_t kem_id, hush_hpke_keypair **out, hush_error *err);

/* DeriveKeyPair(ikm) (RFC 9180 §7.1.3; X-Wing's as draft-ietf-hpke-pq
 * defines it). `ikm` is secret; at least Nsk bytes. */
HUSH_MUST_USE
hush_status hush_hpke_keypair_derive(uint16_t kem_id, const void *ikm, size_t ikm_len,
                                     hush_hpke_keypair **out, hush_error *err);

/* DeserializePrivateKey: `sk` is Nsk bytes (X25519 scalar, X-Wing seed). */
HUSH_MUST_USE
hush_status hush_hpke_keypair_from_private(uint16_t kem_id, const void *sk, size_t sk_len,
                                           hush_hpke_keypair **out, hush_error *err);

/* SerializePrivateKey into a new secure buffer the caller frees. */
HUSH_MUST_USE
hush_status hush_hpke_keypair_private(const hush_hpke_keypair *kp, hush_secbuf **out,
                                      hush_error *err);

/* The public half, as a new reference the caller frees. */
HUSH_MUST_USE
hush_status hush_hpke_keypair_public(const hush_hpke_keypair *kp, hush_hpke_pubkey **out,
                                     hush_error *err);

uint16_t hush_hpke_keypair_kem(const hush_hpke_keypair *kp); /* 0 for NULL */
hush_hpke_keypair *hush_hpke_keypair_ref(hush_hpke_keypair *kp); /* accepts NULL */
void hush_hpke_keypair_free(hush_hpke_keypair *kp);             /* accepts NULL */

/* DeserializePublicKey: HUSH_E_KEY for the wrong length or, for X-Wing, an
 * ML-KEM part failing FIPS 203 §7.2. */
HUSH_MUST_USE
hush_status hush_hpke_pubkey_from_bytes(uint16_t kem_id, const void *pk, size_t len,
                                        hush_hpke_pubkey **out, hush_error *err);

/* SerializePublicKey: the key's bytes, valid while `pk` is; `*len` gets
 * their length. NULL (and 0) for NULL. */
const unsigned char *hush_hpke_pubkey_bytes(const hush_hpke_pubkey *pk, size_t *len);
uint16_t hush_hpke_pubkey_kem(const hush_hpke_pubkey *pk); /* 0 for NULL */

/* "sha256:" and 64 hex digits: SHA-256 over the KEM id (2 bytes, big
 * endian) followed by the serialized public key, so the same bytes under
 * another KEM do not share a fingerprint. docs/crypto.md gives the formula
 * for other languages. */
HUSH_MUST_USE
hush_status hush_hpke_pubkey_fingerprint(const hush_hpke_pubkey *pk,
                                         char out[HUSH_FINGERPRINT_LEN], hush_error *err);

hush_hpke_pubkey *hush_hpke_pubkey_ref(hush_hpke_pubkey *pk); /* accepts NULL */
void hush_hpke_pubkey_free(hush_hpke_pubkey *pk);            /* accepts NULL */

/* ---- key files (the server's private key) ------------------------------- */

/* Write the private key to `path` as the RSA key files are written: mode
 * 0600, staged beside it and renamed into place, HUSH_E_EXISTS unless
 * HUSH_KEYS_SAVE_OVERWRITE. With a password the key is encrypted under a
 * key derived with `kdf`; NULL writes it in the clear. The format is in
 * docs/crypto.md. */
HUSH_MUST_USE
hush_status hush_hpke_keypair_save_file(const hush_hpke_keypair *kp, const char *path,
                                        const char *password, hush_key_kdf kdf, unsigned flags,
                                        hush_error *err);

/* Read a key written by hush_hpke_keypair_save_file, refusing a symlink or
 * a file others may read (HUSH_E_PERMISSIONS), a wrong or missing password
 * (HUSH_E_PASSWORD) and anything malformed (HUSH_E_KEY). */
HUSH_MUST_USE
hush_status hush_hpke_keypair_load_file(const char *path, const char *password,
                                        hush_hpke_keypair **out, hush_error *err);

/* ---- contexts ----------------------------------------------------------- */

typedef struct hush_hpke_ctx hush_hpke_ctx;

/* SetupBaseS(pkR, info): a sender's context, and in `enc` (room for
 * `enc_cap` bytes) the encapsulated key to send; `*enc_len` its length. */
HUSH_MUST_USE
hush_status hush_hpke_setup_base_s(hush_hpke_suite suite, const hush_hpke_pubkey *pkR,
                                   const void *info, size_t info_len, unsigned char *enc,
                                   size_t enc_cap, size_t *enc_len, hush_hpke_ctx **out,
                                   hush_error *err);

/* SetupBaseS with the KEM's encapsulation randomness given (DeriveKeyPair's
 * ikmE for DHKEM, EncapsulateDerand's eseed for X-Wing): for known-answer
 * tests only; a real sender uses hush_hpke_setup_base_s. */
HUSH_MUST_USE
hush_status hush_hpke_setup_base_s_derand(hush_hpke_suite suite, const hush_hpke_pubkey *pkR,
                                          const void *ikmE, size_t ikmE_len, const void *info,
                                          size_t info_len, unsigned char *enc, size_t enc_cap,
                                          size_t *enc_len, hush_hpke_ctx **out, hush_error *err);

/* SetupBaseR(enc, skR, info): the recipient's context. A malformed `enc`
 * is HUSH_E_AUTH like any other failure to agree on a key. */
HUSH_MUST_USE
hush_status hush_hpke_setup_base_r(hush_hpke_suite suite, const hush_hpke_keypair *skR,
                                   const void *enc, size_t enc_len, const void *info,
                                   size_t info_len, hush_hpke_ctx **out, hush_error *err);

/* Seal (sender contexts only): `ct` gets pt_len + HUSH_HPKE_TAG_BYTES bytes
 * (`ct_cap` must allow them); the sequence number then advances. */
HUSH_MUST_USE
hush_status hush_hpke_seal(hush_hpke_ctx *ctx, const void *aad, size_t aad_len, const void *pt,
                           size_t pt_len, unsigned char *ct, size_t ct_cap, size_t *ct_len,
                           hush_error *err);

/* Open (recipient contexts only): `pt` gets ct_len - HUSH_HPKE_TAG_BYTES
 * bytes. On failure (HUSH_E_AUTH) `pt` is zeroed and the sequence number
 * stays where it was, so the next message still opens. */
HUSH_MUST_USE
hush_status hush_hpke_open(hush_hpke_ctx *ctx, const void *aad, size_t aad_len, const void *ct,
                           size_t ct_len, unsigned char *pt, size_t pt_cap, size_t *pt_len,
                           hush_error *err);

/* Export(exporter_context, L) into `out` (`out_len` = L bytes, at most
 * HUSH_HPKE_MAX_EXPORT_BYTES): a secret, so give `out` secure memory. */
HUSH_MUST_USE
hush_status hush_hpke_export(const hush_hpke_ctx *ctx, const void *exporter_context,
                             size_t context_len, unsigned char *out, size_t out_len,
                             hush_error *err);

hush_hpke_suite hush_hpke_ctx_suite(const hush_hpke_ctx *ctx); /* zeros for NULL */
void hush_hpke_ctx_free(hush_hpke_ctx *ctx); /* wipes; accepts NULL */

#ifdef __cplusplus
}
#endif

#endif
