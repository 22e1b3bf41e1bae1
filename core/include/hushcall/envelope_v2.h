/* hushcall/envelope_v2.h — protocol v2's bytes (docs/protocol-v2.md): key
 * configs (RFC 9458 §3), the 7-byte hdr, the header values, and EHBP's
 * framed bodies in both directions over hpke.h. No HTTP here: header values
 * come in and go out as strings and bytes.
 *
 * Suites: a config's KEM picks the labels. X25519 (0x0020) is EHBP exactly
 * (info "ehbp request", export "ehbp response", AES-256-GCM both ways);
 * X-Wing (0x647A) is the post-quantum suite (info "hushcall-v2 request" ||
 * 0x00 || hdr, export "hushcall-v2 response", the chosen AEAD both ways).
 *
 * Secrets: the exported secret and the response key live in secure memory;
 * plaintext is written only into a hush_secbuf the caller gives (make it
 * secure), a frame only after its tag checked. Every cryptographic failure
 * is one opaque HUSH_E_AUTH, and an opener that failed has wiped all the
 * plaintext it had written. */
#ifndef HUSHCALL_ENVELOPE_V2_H
#define HUSHCALL_ENVELOPE_V2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"
#include "hushcall/hpke.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_V2_HDR_BYTES 7u              /* key_id(1) kem(2) kdf(2) aead(2) */
#define HUSH_V2_HDR_HEX_LEN 14u           /* without the NUL */
#define HUSH_V2_RESPONSE_NONCE_BYTES 32u  /* max(Nn, Nk) */
#define HUSH_V2_DIGEST_BYTES 32u          /* SHA-256 of enc: the replay key */
#define HUSH_V2_FRAME_PREFIX_BYTES 4u
#define HUSH_V2_MAX_SUITES 8u             /* usable suites kept per config */
#define HUSH_V2_DEFAULT_FRAME_BYTES (64u * 1024u)         /* plaintext per sealed frame */
#define HUSH_V2_DEFAULT_MAX_FRAME_BYTES (1u << 20)       /* a frame's length field */
#define HUSH_V2_DEFAULT_MAX_TOTAL_BYTES (64u * 1024u * 1024u) /* plaintext per body */

/* ---- key configs ------------------------------------------------------ */

typedef struct hush_v2_cipher {
    uint16_t kdf_id;
    uint16_t aead_id;
} hush_v2_cipher;

/* One key config. `pubkey` is a reference the config owns: released by
 * hush_v2_keyconfig_clear / hush_v2_keyconfigs_free. Parsers keep only the
 * suites hushcall speaks (HKDF-SHA256 with AES-256-GCM or
 * ChaCha20-Poly1305), in the order listed. */
typedef struct hush_v2_keyconfig {
    uint8_t key_id;
    hush_hpke_pubkey *pubkey;
    size_t n_ciphers;
    hush_v2_cipher ciphers[HUSH_V2_MAX_SUITES];
} hush_v2_keyconfig;

/* Append one config's bytes (RFC 9458 §3.1) to `out`. */
HUSH_MUST_USE
hush_status hush_v2_keyconfig_encode(const hush_v2_keyconfig *cfg, hush_secbuf *out,
                                     hush_error *err);

/* Append the list form (§3.2: each config after its 2-byte length). */
HUSH_MUST_USE
hush_status hush_v2_keyconfigs_encode(const hush_v2_keyconfig *cfgs, size_t count,
                                      hush_secbuf *out, hush_error *err);

/* Parse one bare config (what /.well-known/hpke-keys holds). HUSH_E_FORMAT
 * naming the field for truncation, a wrong Npk, an odd or empty suite list
 * or trailing bytes; HUSH_E_UNSUPPORTED for an unknown KEM or a config
 * without a suite hushcall speaks. */
HUSH_MUST_USE
hush_status hush_v2_keyconfig_parse(const void *data, size_t len, hush_v2_keyconfig *out,
                                    hush_error *err);

/* Parse the list form into a new array (*count configs; NULL when 0),
 * skipping configs with an unknown KEM or only unknown suites; anything
 * malformed is HUSH_E_FORMAT. Free with hush_v2_keyconfigs_free. */
HUSH_MUST_USE
hush_status hush_v2_keyconfigs_parse(const void *data, size_t len, hush_v2_keyconfig **out,
                                     size_t *count, hush_error *err);

void hush_v2_keyconfig_clear(hush_v2_keyconfig *cfg);                 /* accepts NULL */
void hush_v2_keyconfigs_free(hush_v2_keyconfig *cfgs, size_t count);   /* accepts NULL */

/* ---- header values ------------------------------------------------------ */

/* hdr = key_id || kem || kdf || aead (RFC 9458 §4.3). */
void hush_v2_hdr_encode(uint8_t key_id, hush_hpke_suite suite,
                        unsigned char out[HUSH_V2_HDR_BYTES]);
void hush_v2_hdr_decode(const unsigned char hdr[HUSH_V2_HDR_BYTES], uint8_t *key_id,
                        hush_hpke_suite *suite);

/* Lowercase hex of `len` bytes into `out` (room for 2*len+1, NUL-terminated). */
void hush_v2_hex_format(const void *data, size_t len, char *out);

/* Strict parsers of header values: exactly the right length, lowercase hex
 * only, else HUSH_E_FORMAT naming the header. */
HUSH_MUST_USE
hush_status hush_v2_hdr_parse_hex(const char *text, size_t len,
                                  unsigned char hdr[HUSH_V2_HDR_BYTES], hush_error *err);
/* `Ehbp-Encapsulated-Key`: hush_hpke_kem_enc_bytes(kem_id) bytes into
 * `enc` (room for HUSH_HPKE_MAX_ENC_BYTES); `*enc_len` their count. */
HUSH_MUST_USE
hush_status hush_v2_enc_parse_hex(uint16_t kem_id, const char *text, size_t len,
                                  unsigned char *enc, size_t *enc_len, hush_error *err);
/* `Ehbp-Response-Nonce`. */
HUSH_MUST_USE
hush_status hush_v2_nonce_parse_hex(const char *text, size_t len,
                                    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                    hush_error *err);

/* ---- exchanges ------------------------------------------------------------ */

/* What one request leaves for its answer (either role): the suite, the
 * key id, enc, and Export(label, 32) in secure memory. */
typedef struct hush_v2_exchange hush_v2_exchange;

hush_hpke_suite hush_v2_exchange_suite(const hush_v2_exchange *ex); /* zeros for NULL */
uint8_t hush_v2_exchange_key_id(const hush_v2_exchange *ex);
/* enc, valid while `ex` is; `*len` its length. */
const unsigned char *hush_v2_exchange_enc(const hush_v2_exchange *ex, size_t *len);
/* SHA-256 of enc: fresh for every seal, so the server's replay key. */
void hush_v2_exchange_digest(const hush_v2_exchange *ex,
                             unsigned char out[HUSH_V2_DIGEST_BYTES]);
void hush_v2_exchange_free(hush_v2_exchange *ex); /* wipes; accepts NULL */

/* Limits of an opener; 0 in a field takes its default. */
typedef struct hush_v2_limits {
    size_t max_frame_bytes; /* a frame's length field (ciphertext) */
    size_t max_total_bytes; /* plaintext of the whole body */
} hush_v2_limits;

/* ---- client role ---------------------------------------------------------- */

/* Seal `len` bytes of `body` (keep them in secure memory) for config `cfg`
 * under its cipher `cipher` (an index into cfg->ciphers): frames of at most
 * `frame_bytes` plaintext (0: HUSH_V2_DEFAULT_FRAME_BYTES) appended to
 * `frames` (ciphertext: public memory is fine). *exchange keeps what the
 * answer needs; hush_v2_exchange_enc gives enc for the header, and `hdr`
 * (when not NULL) gets the Hushcall-Key-Config value's bytes. */
HUSH_MUST_USE
hush_status hush_v2_request_seal(const hush_v2_keyconfig *cfg, size_t cipher, const void *body,
                                 size_t len, size_t frame_bytes, hush_secbuf *frames,
                                 unsigned char hdr[HUSH_V2_HDR_BYTES],
                                 hush_v2_exchange **exchange, hush_error *err);

/* As hush_v2_request_seal with the KEM's randomness given (hpke.h's
 * _derand): for known-answer tests and documented examples only. */
HUSH_MUST_USE
hush_status hush_v2_request_seal_derand(const hush_v2_keyconfig *cfg, size_t cipher,
                                        const void *ikmE, size_t ikmE_len, const void *body,
                                        size_t len, size_t frame_bytes, hush_secbuf *frames,
                                        unsigned char hdr[HUSH_V2_HDR_BYTES],
                                        hush_v2_exchange **exchange, hush_error *err);

/* ---- openers (both directions) -------------------------------------------- */

/* An incremental opener of a framed body: feed it the body in slices of any
 * size; each frame's plaintext is appended to `out` once its tag checks.
 * Zero-length frames are skipped. A frame over max_frame_bytes, plaintext
 * over max_total_bytes (HUSH_E_LIMIT), a failed frame (HUSH_E_AUTH) or an
 * end inside a frame (hush_v2_opener_finish: HUSH_E_FORMAT) wipes what it
 * had appended to `out` and leaves the opener refusing everything after. */
typedef struct hush_v2_opener hush_v2_opener;

/* Client: open the answer to `ex` with the Ehbp-Response-Nonce's bytes. */
HUSH_MUST_USE
hush_status hush_v2_response_opener_new(const hush_v2_exchange *ex,
                                        const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        const hush_v2_limits *limits, hush_secbuf *out,
                                        hush_v2_opener **opener, hush_error *err);

/* Server: open a request sealed with `enc` to one of `keys` (count > 0).
 * With `hdr` (the Hushcall-Key-Config bytes) the caller passes the one key
 * it names and the hdr's suite is used; without (an EHBP request) the
 * suite is EHBP's, `keys` are the live X25519 keys newest first, and the
 * first non-empty frame picks the one it opens under. When it opens under
 * none, the status is HUSH_E_KEY (the 422 key-config answer), not
 * HUSH_E_AUTH. A body without a non-empty frame takes keys[0]. */
HUSH_MUST_USE
hush_status hush_v2_request_opener_new(const unsigned char *hdr, const unsigned char *enc,
                                       size_t enc_len, hush_hpke_keypair *const *keys,
                                       size_t count, const hush_v2_limits *limits,
                                       hush_secbuf *out, hush_v2_opener **opener,
                                       hush_error *err);

HUSH_MUST_USE
hush_status hush_v2_opener_feed(hush_v2_opener *opener, const void *data, size_t len,
                                hush_error *err);

/* The end of the body: HUSH_E_FORMAT inside a frame. For a request opener,
 * *exchange (when not NULL) then gets what the answer needs and `*key_index`
 * (when not NULL) which of the keys opened it. */
HUSH_MUST_USE
hush_status hush_v2_opener_finish(hush_v2_opener *opener, hush_v2_exchange **exchange,
                                  size_t *key_index, hush_error *err);

void hush_v2_opener_free(hush_v2_opener *opener); /* wipes; accepts NULL */

/* ---- server role: the answer ---------------------------------------------- */

/* Seal the answer to `ex`: a fresh response nonce into `nonce` (for
 * Ehbp-Response-Nonce), frames of at most `frame_bytes` plaintext (0: the
 * default) appended to `frames`. */
HUSH_MUST_USE
hush_status hush_v2_response_seal(const hush_v2_exchange *ex, const void *body, size_t len,
                                  size_t frame_bytes, hush_secbuf *frames,
                                  unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                  hush_error *err);

/* As hush_v2_response_seal with the nonce given: for known answers only. */
HUSH_MUST_USE
hush_status hush_v2_response_seal_with_nonce(const hush_v2_exchange *ex, const void *body,
                                             size_t len, size_t frame_bytes, hush_secbuf *frames,
                                             const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                             hush_error *err);

/* A streamed answer (docs/protocol-v2.md "Endpoints and streaming"): one
 * sealer per answer, a fresh nonce from hush_v2_response_sealer_new, then
 * each piece sealed as it is made, its frames (of at most
 * HUSH_V2_DEFAULT_FRAME_BYTES plaintext, so a piece under that is one
 * frame) numbered on from the last piece's. The frames of all pieces
 * together are the body hush_v2_response_seal would make of them. */
typedef struct hush_v2_response_sealer hush_v2_response_sealer;

HUSH_MUST_USE
hush_status hush_v2_response_sealer_new(const hush_v2_exchange *ex,
                                        unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                        hush_v2_response_sealer **out, hush_error *err);

/* Seal `len` bytes (len > 0; 0 appends nothing) of `body`, appended to `frames`. */
HUSH_MUST_USE
hush_status hush_v2_response_sealer_seal(hush_v2_response_sealer *sealer, const void *body,
                                         size_t len, hush_secbuf *frames, hush_error *err);

void hush_v2_response_sealer_free(hush_v2_response_sealer *sealer); /* wipes; accepts NULL */

#ifdef __cplusplus
}
#endif

#endif
