/* fuzz_frames_v2.c — protocol v2's incremental frame opener on arbitrary
 * bytes, both directions, for one fixed exchange per suite: the server key
 * is DeriveKeyPair(32 bytes of 0x42), the request sealed with the KEM
 * randomness 32 (X25519) or 64 (X-Wing) bytes of 0x24 and key id 0x2a, the
 * answer under a response nonce of 32 zero bytes, so the seed corpus can
 * hold genuine bodies. The input is
 *   mode (1 byte) || the framed body (the rest)
 * mode bit 0: request (server role) or answer (client role); bit 1: X25519
 * or X-Wing (ChaCha20-Poly1305); bits 2-7: the slice size fed at a time
 * (+1). Nothing may crash or over-read; a refusal leaves the output buffer
 * at its length before and zeroed past it; an accepted body is whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/envelope_v2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hush_hpke_keypair *keys[2];
static hush_v2_exchange *clients[2];
static const uint16_t kems[2] = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KEM_XWING};
static const uint16_t aeads[2] = {HUSH_HPKE_AEAD_AES_256_GCM, HUSH_HPKE_AEAD_CHACHA20_POLY1305};
static const hush_v2_limits limits = {4096, 16384};

static void make_exchanges(void)
{
    unsigned char ikm[32], ikmE[64];
    memset(ikm, 0x42, sizeof ikm);
    memset(ikmE, 0x24, sizeof ikmE);
    for (size_t i = 0; i < 2; i++) {
        hush_v2_keyconfig cfg = {.key_id = 0x2a, .n_ciphers = 1};
        hush_secbuf *frames = NULL;
        cfg.ciphers[0] = (hush_v2_cipher){HUSH_HPKE_KDF_HKDF_SHA256, aeads[i]};
        if (hush_hpke_keypair_derive(kems[i], ikm, sizeof ikm, &keys[i], NULL) != HUSH_OK ||
            hush_hpke_keypair_public(keys[i], &cfg.pubkey, NULL) != HUSH_OK ||
            hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &frames, NULL) != HUSH_OK ||
            hush_v2_request_seal_derand(&cfg, 0, ikmE, i == 0 ? 32 : 64, "", 0, 0, frames, NULL,
                                        &clients[i], NULL) != HUSH_OK)
            abort();
        hush_v2_keyconfig_clear(&cfg);
        hush_secbuf_free(frames);
    }
}

static hush_status open_body(bool request, size_t suite, const uint8_t *body, size_t len,
                             size_t slice, hush_secbuf *out)
{
    static const unsigned char zero_nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    hush_hpke_suite s = {kems[suite], HUSH_HPKE_KDF_HKDF_SHA256, aeads[suite]};
    hush_v2_opener *o = NULL;
    hush_error err;
    size_t enc_len = 0;
    const unsigned char *enc = hush_v2_exchange_enc(clients[suite], &enc_len);
    hush_status st;
    hush_v2_hdr_encode(0x2a, s, hdr);
    if (request)
        st = hush_v2_request_opener_new(suite == 1 ? hdr : NULL, enc, enc_len, &keys[suite], 1,
                                        &limits, out, &o, &err);
    else
        st = hush_v2_response_opener_new(clients[suite], zero_nonce, &limits, out, &o, &err);
    if (st != HUSH_OK)
        abort();
    for (size_t done = 0; st == HUSH_OK && done < len; done += slice) {
        size_t n = len - done < slice ? len - done : slice;
        st = hush_v2_opener_feed(o, body + done, n, &err);
    }
    if (st == HUSH_OK)
        st = hush_v2_opener_finish(o, NULL, NULL, &err);
    hush_v2_opener_free(o);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys[0] == NULL)
        make_exchanges();
    if (size < 1)
        return 0;
    bool request = data[0] & 1;
    size_t suite = (data[0] >> 1) & 1, slice = (size_t)(data[0] >> 2) + 1;
    hush_secbuf *out = NULL;
    if (hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &out, NULL) != HUSH_OK ||
        hush_secbuf_append(out, "kept", 4, NULL) != HUSH_OK)
        abort();
    hush_status st = open_body(request, suite, data + 1, size - 1, slice, out);
    if (st == HUSH_OK) {
        if (hush_secbuf_len(out) < 4 || hush_secbuf_len(out) - 4 > limits.max_total_bytes)
            abort();
    } else {
        if (st != HUSH_E_AUTH && st != HUSH_E_KEY && st != HUSH_E_LIMIT && st != HUSH_E_FORMAT)
            abort();
        size_t cap = hush_secbuf_capacity(out);
        if (hush_secbuf_len(out) != 4 || hush_secbuf_set_len(out, cap, NULL) != HUSH_OK)
            abort();
        for (size_t i = 4; i < cap; i++)
            if (hush_secbuf_bytes(out)[i] != 0)
                abort();
    }
    if (memcmp(hush_secbuf_bytes(out), "kept", 4) != 0)
        abort();
    hush_secbuf_free(out);
    return 0;
}
