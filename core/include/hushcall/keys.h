/* hushcall/keys.h — RSA key pairs: generation, PEM import/export, key directories.
 *
 * A hush_keypair holds an RSA private key (and its public half); a
 * hush_pubkey holds only a public key (a server's envelope key). Both are
 * immutable once made, so one may be shared by many threads.
 * Private-key PEM text only ever passes through secure memory. Key files are
 * written atomically (temporary file, fsync, rename) and opened with
 * O_NOFOLLOW; a private key file readable by group or others is refused, as
 * ssh refuses one. Key directory layout matches the `nomyo` client:
 * `private_key.pem` (0600, PKCS#8) and `public_key.pem` (0644, SPKI).
 * Every function that makes a handle sets `*out` to NULL on entry, so it
 * is NULL after any failure. */
#ifndef HUSHCALL_KEYS_H
#define HUSHCALL_KEYS_H

#include <stddef.h>

#include "hushcall/error.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_RSA_DEFAULT_BITS 4096u
#define HUSH_RSA_MIN_BITS 2048u
#define HUSH_RSA_MAX_BITS 16384u
/* "sha256:" + 64 hex digits + NUL */
#define HUSH_FINGERPRINT_LEN 72u

#define HUSH_PRIVATE_KEY_FILE "private_key.pem"
#define HUSH_PUBLIC_KEY_FILE "public_key.pem"

typedef struct hush_keypair hush_keypair;
typedef struct hush_pubkey hush_pubkey;

/* How a password protects an exported private key (PKCS#8 PBES2, AES-256-CBC). */
/* Both use a 16-byte random salt; passwords are at most 1024 bytes (what
 * OpenSSL can read back). */
typedef enum hush_key_kdf {
    HUSH_KDF_PBKDF2 = 0, /* PBKDF2-HMAC-SHA256, 600,000 iterations; readable everywhere */
    HUSH_KDF_SCRYPT      /* scrypt N=2^14, r=8, p=5 (OWASP's peer of N=2^17, p=1; 16 MiB) */
} hush_key_kdf;

/* Flags for hush_keypair_save_dir. */
#define HUSH_KEYS_SAVE_DEFAULT 0u
#define HUSH_KEYS_SAVE_OVERWRITE 1u /* replace existing key files (atomically) */

/* Generate an RSA key pair; bits 0 means HUSH_RSA_DEFAULT_BITS. Fewer than
 * HUSH_RSA_MIN_BITS is refused with HUSH_E_KEY. */
HUSH_MUST_USE
hush_status hush_keypair_generate(unsigned bits, hush_keypair **out, hush_error *err);

/* Parse a PKCS#8 (or traditional RSA) private key in PEM. `password` may be
 * NULL for an unencrypted key. HUSH_E_PASSWORD when one is needed or wrong;
 * HUSH_E_KEY when the key is not RSA or is too small. */
HUSH_MUST_USE
hush_status hush_keypair_from_pem(const void *pem, size_t len, const char *password,
                                  hush_keypair **out, hush_error *err);

/* Load a private key file. Refused with HUSH_E_PERMISSIONS when it is a
 * symlink, not a regular file, not owned by the caller, or readable or
 * writable by group or others (the message names the chmod fix). */
HUSH_MUST_USE
hush_status hush_keypair_load_file(const char *private_key_path, const char *password,
                                   hush_keypair **out, hush_error *err);

/* Load `dir`/private_key.pem. */
HUSH_MUST_USE
hush_status hush_keypair_load_dir(const char *dir, const char *password,
                                  hush_keypair **out, hush_error *err);

/* Write `dir`/private_key.pem (0600) and `dir`/public_key.pem (0644); the
 * directory is created 0700 when absent (its parent must exist; a symlinked
 * directory is refused with HUSH_E_PERMISSIONS). The private key is placed
 * first, so a crash never leaves a public key without its private half. With a password the private key is
 * encrypted with `kdf`; without one it is written in the clear (as nomyo
 * allows, but not recommended). Existing files are refused with
 * HUSH_E_EXISTS unless HUSH_KEYS_SAVE_OVERWRITE is set. */
HUSH_MUST_USE
hush_status hush_keypair_save_dir(const hush_keypair *kp, const char *dir, const char *password,
                                  hush_key_kdf kdf, unsigned flags, hush_error *err);

/* PKCS#8 PEM of the private key into a new secure buffer (caller frees). */
HUSH_MUST_USE
hush_status hush_keypair_private_pem(const hush_keypair *kp, const char *password,
                                     hush_key_kdf kdf, hush_secbuf **out, hush_error *err);

/* SubjectPublicKeyInfo PEM of the public half: a malloc'd NUL-terminated
 * string the caller frees with free() (public keys are not secret). */
HUSH_MUST_USE
hush_status hush_keypair_public_pem(const hush_keypair *kp, char **out, size_t *out_len,
                                    hush_error *err);

unsigned hush_keypair_bits(const hush_keypair *kp); /* 0 for NULL */

/* "sha256:<hex>" over the DER SubjectPublicKeyInfo of the public half. */
HUSH_MUST_USE
hush_status hush_keypair_fingerprint(const hush_keypair *kp, char out[HUSH_FINGERPRINT_LEN],
                                     hush_error *err);

/* A new reference-counted handle to the same key; each handle is freed.
 * Accepts NULL (and returns it). */
hush_keypair *hush_keypair_ref(hush_keypair *kp);
void hush_keypair_free(hush_keypair *kp); /* accepts NULL */

/* Parse a SubjectPublicKeyInfo ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY")
 * public key in PEM. Only RSA keys of HUSH_RSA_MIN_BITS to HUSH_RSA_MAX_BITS
 * are accepted; a private key PEM is refused. */
HUSH_MUST_USE
hush_status hush_pubkey_from_pem(const void *pem, size_t len, hush_pubkey **out, hush_error *err);

/* The public half of a key pair as a hush_pubkey (a copy holding no
 * private material). */
HUSH_MUST_USE
hush_status hush_pubkey_from_keypair(const hush_keypair *kp, hush_pubkey **out, hush_error *err);

HUSH_MUST_USE
hush_status hush_pubkey_pem(const hush_pubkey *pk, char **out, size_t *out_len, hush_error *err);
unsigned hush_pubkey_bits(const hush_pubkey *pk); /* 0 for NULL */
HUSH_MUST_USE
hush_status hush_pubkey_fingerprint(const hush_pubkey *pk, char out[HUSH_FINGERPRINT_LEN],
                                    hush_error *err);
hush_pubkey *hush_pubkey_ref(hush_pubkey *pk); /* as hush_keypair_ref; accepts NULL */
void hush_pubkey_free(hush_pubkey *pk); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
