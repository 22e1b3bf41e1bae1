/* test_envelope_v2.c — protocol v2's codec (docs/protocol-v2.md): key
 * configs, header values, and framed bodies both ways for both suites,
 * then every malformed input the issue lists. The independent check from
 * the spec (pyca, pyhpke, tinfoil-ehbp) is tests/c/cross_ehbp.py. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hushcall/envelope_v2.h"
#include "hushcall/hpke.h"

#define X25519 HUSH_HPKE_KEM_X25519_SHA256
#define XWING HUSH_HPKE_KEM_XWING
#define AES HUSH_HPKE_AEAD_AES_256_GCM
#define CHACHA HUSH_HPKE_AEAD_CHACHA20_POLY1305

/* ---- fixtures ------------------------------------------------------------- */

typedef struct server_key {
    hush_hpke_keypair *kp;
    hush_v2_keyconfig cfg;
} server_key;

/* A key from DeriveKeyPair(ikm = 32 bytes of `seed`) and its config,
 * listing `aead` (and for X-Wing the other AEAD after it). */
static void server_key_make(uint16_t kem, unsigned char seed, uint8_t key_id, uint16_t aead,
                            server_key *sk)
{
    unsigned char ikm[32];
    hush_error err;
    memset(ikm, seed, sizeof ikm);
    memset(sk, 0, sizeof *sk);
    CHECK_OK(hush_hpke_keypair_derive(kem, ikm, sizeof ikm, &sk->kp, &err), &err);
    CHECK_OK(hush_hpke_keypair_public(sk->kp, &sk->cfg.pubkey, &err), &err);
    sk->cfg.key_id = key_id;
    sk->cfg.ciphers[sk->cfg.n_ciphers++] = (hush_v2_cipher){HUSH_HPKE_KDF_HKDF_SHA256, aead};
    if (kem == XWING)
        sk->cfg.ciphers[sk->cfg.n_ciphers++] =
            (hush_v2_cipher){HUSH_HPKE_KDF_HKDF_SHA256, aead == AES ? CHACHA : AES};
}

static void server_key_free(server_key *sk)
{
    hush_v2_keyconfig_clear(&sk->cfg);
    hush_hpke_keypair_free(sk->kp);
}

static hush_secbuf *public_buf(void)
{
    hush_secbuf *b = NULL;
    hush_error err;
    CHECK_OK(hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &b, &err), &err);
    return b;
}

static hush_secbuf *secret_buf(void)
{
    hush_secbuf *b = NULL;
    hush_error err;
    CHECK_OK(hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    return b;
}

static unsigned char *pattern(size_t len)
{
    unsigned char *p = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 7 + 3);
    return p;
}

/* Open `body` as a request to `keys`, fed in slices of `step` (0: all at
 * once). Returns the status; *ex and *key_index on success. */
static hush_status open_request(const unsigned char *hdr, const hush_v2_exchange *client,
                                hush_hpke_keypair *const *keys, size_t count,
                                const hush_v2_limits *limits, const unsigned char *body,
                                size_t len, size_t step, hush_secbuf *out,
                                hush_v2_exchange **ex, size_t *key_index)
{
    hush_error err;
    hush_v2_opener *o = NULL;
    size_t enc_len = 0;
    const unsigned char *enc = hush_v2_exchange_enc(client, &enc_len);
    hush_status s = hush_v2_request_opener_new(hdr, enc, enc_len, keys, count, limits, out, &o,
                                               &err);
    for (size_t done = 0; s == HUSH_OK && done < len;) {
        size_t n = step == 0 || len - done < step ? len - done : step;
        s = hush_v2_opener_feed(o, body + done, n, &err);
        done += n;
    }
    if (s == HUSH_OK)
        s = hush_v2_opener_finish(o, ex, key_index, &err);
    hush_v2_opener_free(o);
    return s;
}

static hush_status open_response(const hush_v2_exchange *ex, const unsigned char *nonce,
                                 const hush_v2_limits *limits, const unsigned char *body,
                                 size_t len, size_t step, hush_secbuf *out)
{
    hush_error err;
    hush_v2_opener *o = NULL;
    hush_status s = hush_v2_response_opener_new(ex, nonce, limits, out, &o, &err);
    for (size_t done = 0; s == HUSH_OK && done < len;) {
        size_t n = step == 0 || len - done < step ? len - done : step;
        s = hush_v2_opener_feed(o, body + done, n, &err);
        done += n;
    }
    if (s == HUSH_OK)
        s = hush_v2_opener_finish(o, NULL, NULL, &err);
    hush_v2_opener_free(o);
    return s;
}

static bool buf_equals(const hush_secbuf *b, const unsigned char *data, size_t len)
{
    return hush_secbuf_len(b) == len && (len == 0 || memcmp(hush_secbuf_bytes(b), data, len) == 0);
}

/* One sealed request and its answer, for the tamper tests. */
typedef struct exchange_fixture {
    server_key key;
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    hush_v2_exchange *client;
    hush_secbuf *request;
    hush_secbuf *response;
    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    unsigned char *body;
    size_t len;
} exchange_fixture;

static void fixture_make(uint16_t kem, uint16_t aead, size_t len, size_t frame, exchange_fixture *f)
{
    hush_error err;
    hush_v2_exchange *server = NULL;
    hush_secbuf *opened = secret_buf();
    memset(f, 0, sizeof *f);
    server_key_make(kem, 0x42, 7, aead, &f->key);
    f->body = pattern(len);
    f->len = len;
    f->request = public_buf();
    f->response = public_buf();
    CHECK_OK(hush_v2_request_seal(&f->key.cfg, 0, f->body, len, frame, f->request, f->hdr,
                                  &f->client, &err),
             &err);
    CHECK_OK(open_request(kem == XWING ? f->hdr : NULL, f->client, &f->key.kp, 1, NULL,
                          hush_secbuf_bytes(f->request), hush_secbuf_len(f->request), 0, opened,
                          &server, NULL),
             NULL);
    CHECK_OK(hush_v2_response_seal(server, f->body, len, frame, f->response, f->nonce, &err),
             &err);
    hush_v2_exchange_free(server);
    hush_secbuf_free(opened);
}

static void fixture_free(exchange_fixture *f)
{
    server_key_free(&f->key);
    hush_v2_exchange_free(f->client);
    hush_secbuf_free(f->request);
    hush_secbuf_free(f->response);
    free(f->body);
}

/* ---- key configs ----------------------------------------------------------- */

static void test_keyconfig_round_trip(void)
{
    hush_error err;
    server_key x, w;
    hush_secbuf *bytes = public_buf(), *list = public_buf();
    hush_v2_keyconfig one, *many = NULL;
    size_t count = 0, pk_len = 0, got_len = 0;

    server_key_make(X25519, 1, 3, AES, &x);
    server_key_make(XWING, 2, 9, CHACHA, &w);
    CHECK_OK(hush_v2_keyconfig_encode(&x.cfg, bytes, &err), &err);
    CHECK_EQ(hush_secbuf_len(bytes), 1 + 2 + 32 + 2 + 4);
    CHECK_OK(hush_v2_keyconfig_parse(hush_secbuf_bytes(bytes), hush_secbuf_len(bytes), &one, &err),
             &err);
    CHECK_EQ(one.key_id, 3);
    CHECK_EQ(one.n_ciphers, 1);
    CHECK_EQ(one.ciphers[0].aead_id, AES);
    const unsigned char *pk = hush_hpke_pubkey_bytes(x.cfg.pubkey, &pk_len);
    const unsigned char *got = hush_hpke_pubkey_bytes(one.pubkey, &got_len);
    CHECK(pk_len == got_len && memcmp(pk, got, pk_len) == 0);
    hush_v2_keyconfig_clear(&one);

    hush_v2_keyconfig both[2] = {w.cfg, x.cfg};
    CHECK_OK(hush_v2_keyconfigs_encode(both, 2, list, &err), &err);
    CHECK_EQ(hush_secbuf_len(list), 2 + 1 + 2 + 1216 + 2 + 8 + 2 + 1 + 2 + 32 + 2 + 4);
    CHECK_OK(hush_v2_keyconfigs_parse(hush_secbuf_bytes(list), hush_secbuf_len(list), &many,
                                      &count, &err),
             &err);
    CHECK_EQ(count, 2);
    if (count == 2) {
        CHECK_EQ(many[0].key_id, 9);
        CHECK_EQ(hush_hpke_pubkey_kem(many[0].pubkey), XWING);
        CHECK_EQ(many[0].n_ciphers, 2);
        CHECK_EQ(many[0].ciphers[0].aead_id, CHACHA);
        CHECK_EQ(many[0].ciphers[1].aead_id, AES);
        CHECK_EQ(hush_hpke_pubkey_kem(many[1].pubkey), X25519);
    }
    hush_v2_keyconfigs_free(many, count);
    hush_secbuf_free(bytes);
    hush_secbuf_free(list);
    server_key_free(&x);
    server_key_free(&w);
}

static hush_status parse_bare(const unsigned char *data, size_t len)
{
    hush_v2_keyconfig cfg;
    hush_error err;
    hush_status s = hush_v2_keyconfig_parse(data, len, &cfg, &err);
    if (s == HUSH_OK)
        hush_v2_keyconfig_clear(&cfg);
    CHECK(s == HUSH_OK || cfg.pubkey == NULL);
    return s;
}

static hush_status parse_list(const unsigned char *data, size_t len, size_t *count)
{
    hush_v2_keyconfig *cfgs = NULL;
    hush_error err;
    hush_status s = hush_v2_keyconfigs_parse(data, len, &cfgs, count, &err);
    hush_v2_keyconfigs_free(cfgs, *count);
    return s;
}

static void test_keyconfig_malformed(void)
{
    hush_error err;
    server_key x;
    hush_secbuf *b = public_buf();
    unsigned char c[64], l[192];
    size_t n, count = 99;

    server_key_make(X25519, 1, 3, AES, &x);
    CHECK_OK(hush_v2_keyconfig_encode(&x.cfg, b, &err), &err);
    n = hush_secbuf_len(b);
    memcpy(c, hush_secbuf_bytes(b), n);
    CHECK_OK(parse_bare(c, n), NULL);
    for (size_t cut = 0; cut < n; cut++) /* every truncation */
        CHECK_STATUS(parse_bare(c, cut), HUSH_E_FORMAT, NULL);
    c[n] = 0;
    CHECK_STATUS(parse_bare(c, n + 1), HUSH_E_FORMAT, NULL); /* trailing byte */

    unsigned char odd[64];
    memcpy(odd, c, n);
    odd[36] = 3; /* suite list of 3 bytes */
    CHECK_STATUS(parse_bare(odd, n - 1), HUSH_E_FORMAT, NULL);
    odd[36] = 0; /* empty suite list */
    CHECK_STATUS(parse_bare(odd, n - 4), HUSH_E_FORMAT, NULL);

    unsigned char kem[64];
    memcpy(kem, c, n);
    kem[2] = 0x21; /* X448's id, unknown here */
    CHECK_STATUS(parse_bare(kem, n), HUSH_E_UNSUPPORTED, NULL);
    kem[2] = 0x20;
    kem[1] = 0x64, kem[2] = 0x7a; /* X-Wing's id with X25519's 32-byte key */
    CHECK_STATUS(parse_bare(kem, n), HUSH_E_FORMAT, NULL);

    unsigned char suites[64];
    memcpy(suites, c, n);
    suites[40] = 0xff, suites[39] = 0xff; /* AEAD export-only: not usable */
    CHECK_STATUS(parse_bare(suites, n), HUSH_E_UNSUPPORTED, NULL);

    /* In a list: unknown KEM and unusable suites skipped, the rest kept. */
    size_t at = 0;
    l[at++] = 0, l[at++] = (unsigned char)n;
    kem[1] = 0x00, kem[2] = 0x21; /* an unknown KEM */
    memcpy(l + at, kem, n), at += n;
    l[at++] = 0, l[at++] = (unsigned char)n;
    memcpy(l + at, suites, n), at += n;
    l[at++] = 0, l[at++] = (unsigned char)n;
    memcpy(l + at, c, n), at += n;
    CHECK_OK(parse_list(l, at, &count), NULL);
    CHECK_EQ(count, 1);
    for (size_t cut = 1; cut < at; cut++) {
        if (cut == 2 + n || cut == 2 * (2 + n))
            continue; /* ends between entries: a shorter, valid list */
        CHECK_STATUS(parse_list(l, cut, &count), HUSH_E_FORMAT, NULL);
    }
    CHECK_OK(parse_list(l, 0, &count), NULL);
    CHECK_EQ(count, 0);
    l[2 * (2 + n) + 1] = (unsigned char)(n + 1); /* the entry claims a trailing byte */
    l[at] = 0;
    CHECK_STATUS(parse_list(l, at + 1, &count), HUSH_E_FORMAT, NULL);

    hush_secbuf_free(b);
    server_key_free(&x);
}

/* ---- header values ------------------------------------------------------------ */

static void test_header_values(void)
{
    hush_error err;
    unsigned char hdr[HUSH_V2_HDR_BYTES], back[HUSH_V2_HDR_BYTES];
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES], nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    char hex[2 * HUSH_HPKE_MAX_ENC_BYTES + 1];
    size_t enc_len = 0;
    hush_hpke_suite suite = {XWING, HUSH_HPKE_KDF_HKDF_SHA256, CHACHA}, got;
    uint8_t key_id = 0;

    hush_v2_hdr_encode(0xab, suite, hdr);
    hush_v2_hex_format(hdr, sizeof hdr, hex);
    CHECK(strcmp(hex, "ab647a00010003") == 0);
    CHECK_OK(hush_v2_hdr_parse_hex(hex, strlen(hex), back, &err), &err);
    hush_v2_hdr_decode(back, &key_id, &got);
    CHECK(key_id == 0xab && got.kem_id == XWING && got.kdf_id == 1 && got.aead_id == CHACHA);
    CHECK_STATUS(hush_v2_hdr_parse_hex("AB647A00010003", 14, back, &err), HUSH_E_FORMAT, &err);
    CHECK(strstr(err.message, "Hushcall-Key-Config") != NULL);
    CHECK_STATUS(hush_v2_hdr_parse_hex(hex, 12, back, &err), HUSH_E_FORMAT, &err);
    CHECK_STATUS(hush_v2_hdr_parse_hex("ab647a0001000g", 14, back, &err), HUSH_E_FORMAT, &err);

    for (size_t i = 0; i < 64; i++)
        hex[i] = "0123456789abcdef"[i % 16];
    CHECK_OK(hush_v2_enc_parse_hex(X25519, hex, 64, enc, &enc_len, &err), &err);
    CHECK_EQ(enc_len, 32);
    CHECK_EQ(enc[1], 0x23);
    CHECK_STATUS(hush_v2_enc_parse_hex(X25519, hex, 62, enc, &enc_len, &err), HUSH_E_FORMAT, &err);
    CHECK_STATUS(hush_v2_enc_parse_hex(X25519, hex, 63, enc, &enc_len, &err), HUSH_E_FORMAT, &err);
    CHECK_STATUS(hush_v2_enc_parse_hex(XWING, hex, 64, enc, &enc_len, &err), HUSH_E_FORMAT, &err);
    CHECK(strstr(err.message, "Ehbp-Encapsulated-Key") != NULL);
    hex[5] = 'F';
    CHECK_STATUS(hush_v2_enc_parse_hex(X25519, hex, 64, enc, &enc_len, &err), HUSH_E_FORMAT, &err);
    hex[5] = ' ';
    CHECK_STATUS(hush_v2_enc_parse_hex(X25519, hex, 64, enc, &enc_len, &err), HUSH_E_FORMAT, &err);
    for (size_t i = 0; i < 2 * 1120; i++)
        hex[i] = "0123456789abcdef"[i % 16];
    CHECK_OK(hush_v2_enc_parse_hex(XWING, hex, 2 * 1120, enc, &enc_len, &err), &err);
    CHECK_EQ(enc_len, 1120);

    CHECK_OK(hush_v2_nonce_parse_hex(hex, 64, nonce, &err), &err);
    CHECK_STATUS(hush_v2_nonce_parse_hex(hex, 66, nonce, &err), HUSH_E_FORMAT, &err);
    CHECK(strstr(err.message, "Ehbp-Response-Nonce") != NULL);
    CHECK_STATUS(hush_v2_nonce_parse_hex(hex, 0, nonce, &err), HUSH_E_FORMAT, &err);
}

/* ---- round trips ------------------------------------------------------------ */

static void round_trip(uint16_t kem, uint16_t aead, size_t len, size_t frame, size_t step)
{
    hush_error err;
    server_key k;
    unsigned char hdr[HUSH_V2_HDR_BYTES], nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    hush_v2_exchange *client = NULL, *server = NULL;
    hush_secbuf *req = public_buf(), *resp = public_buf(), *in = secret_buf(), *out = secret_buf();
    unsigned char *body = pattern(len);
    size_t key_index = 9;

    server_key_make(kem, 5, 0x11, aead, &k);
    CHECK_OK(hush_v2_request_seal(&k.cfg, 0, body, len, frame, req, hdr, &client, &err), &err);
    hush_hpke_suite s = hush_v2_exchange_suite(client);
    CHECK(s.kem_id == kem && s.aead_id == aead);
    size_t frames = frame == 0 ? 1 : (len + frame - 1) / frame;
    if (len > 0 && frame > 0)
        CHECK_EQ(hush_secbuf_len(req), len + frames * 20);
    CHECK_OK(open_request(kem == XWING ? hdr : NULL, client, &k.kp, 1, NULL,
                          hush_secbuf_bytes(req), hush_secbuf_len(req), step, in, &server,
                          &key_index),
             NULL);
    CHECK(buf_equals(in, body, len));
    CHECK_EQ(key_index, 0);
    CHECK(hush_v2_exchange_key_id(server) == (kem == XWING ? 0x11 : 0));
    unsigned char d1[HUSH_V2_DIGEST_BYTES], d2[HUSH_V2_DIGEST_BYTES];
    hush_v2_exchange_digest(client, d1);
    hush_v2_exchange_digest(server, d2);
    CHECK(memcmp(d1, d2, sizeof d1) == 0);

    CHECK_OK(hush_v2_response_seal(server, body, len, frame, resp, nonce, &err), &err);
    CHECK_OK(open_response(client, nonce, NULL, hush_secbuf_bytes(resp), hush_secbuf_len(resp),
                           step, out),
             NULL);
    CHECK(buf_equals(out, body, len));

    hush_v2_exchange_free(client);
    hush_v2_exchange_free(server);
    hush_secbuf_free(req);
    hush_secbuf_free(resp);
    hush_secbuf_free(in);
    hush_secbuf_free(out);
    server_key_free(&k);
    free(body);
}

static void test_round_trips(void)
{
    static const struct {
        uint16_t kem, aead;
    } suites[] = {{X25519, AES}, {XWING, CHACHA}, {XWING, AES}};
    static const size_t lengths[] = {0, 1, 100, 4096};
    for (size_t s = 0; s < 3; s++)
        for (size_t i = 0; i < 4; i++) {
            round_trip(suites[s].kem, suites[s].aead, lengths[i], 0, 0);
            round_trip(suites[s].kem, suites[s].aead, lengths[i], 1000, 0); /* multi-frame */
            round_trip(suites[s].kem, suites[s].aead, lengths[i], 1000, 1); /* byte by byte */
            round_trip(suites[s].kem, suites[s].aead, lengths[i], 33, 7);
        }
}

static void test_x25519_config_refuses_other_aead(void)
{
    hush_error err;
    server_key k;
    hush_v2_exchange *ex = NULL;
    hush_secbuf *req = public_buf();
    server_key_make(X25519, 5, 1, CHACHA, &k); /* EHBP is AES-256-GCM only */
    CHECK_STATUS(hush_v2_request_seal(&k.cfg, 0, "x", 1, 0, req, NULL, &ex, &err),
                 HUSH_E_UNSUPPORTED, &err);
    CHECK(ex == NULL);
    CHECK_EQ(hush_secbuf_len(req), 0);
    CHECK_STATUS(hush_v2_request_seal(&k.cfg, 1, "x", 1, 0, req, NULL, &ex, &err),
                 HUSH_E_ARGUMENT, &err);
    hush_secbuf_free(req);
    server_key_free(&k);
}

/* ---- framing -------------------------------------------------------------- */

/* `body`'s frames with a zero-length frame before, between and after each. */
static size_t with_empty_frames(const unsigned char *body, size_t len, unsigned char *out)
{
    size_t at = 0;
    for (size_t i = 0; i < len;) {
        memset(out + at, 0, 4), at += 4;
        size_t flen = (size_t)body[i] << 24 | (size_t)body[i + 1] << 16 |
                      (size_t)body[i + 2] << 8 | body[i + 3];
        memcpy(out + at, body + i, 4 + flen), at += 4 + flen, i += 4 + flen;
    }
    memset(out + at, 0, 4), at += 4;
    return at;
}

static void test_zero_length_frames(void)
{
    exchange_fixture f;
    hush_secbuf *out = secret_buf();
    fixture_make(XWING, CHACHA, 300, 100, &f);
    size_t rlen = hush_secbuf_len(f.request), plen = hush_secbuf_len(f.response);
    unsigned char *req = malloc(rlen + 64), *resp = malloc(plen + 64);
    rlen = with_empty_frames(hush_secbuf_bytes(f.request), rlen, req);
    plen = with_empty_frames(hush_secbuf_bytes(f.response), plen, resp);
    CHECK_OK(open_request(f.hdr, f.client, &f.key.kp, 1, NULL, req, rlen, 3, out, NULL, NULL),
             NULL);
    CHECK(buf_equals(out, f.body, f.len));
    hush_secbuf_clear(out);
    CHECK_OK(open_response(f.client, f.nonce, NULL, resp, plen, 5, out), NULL);
    CHECK(buf_equals(out, f.body, f.len));
    free(req);
    free(resp);
    hush_secbuf_free(out);
    fixture_free(&f);
}

/* A failed opener leaves nothing in out: its length is back where it was,
 * and every byte it had written is zero. */
static void check_nothing_released(hush_secbuf *out, size_t before)
{
    hush_error err;
    CHECK_EQ(hush_secbuf_len(out), before);
    size_t cap = hush_secbuf_capacity(out);
    CHECK_OK(hush_secbuf_set_len(out, cap, &err), &err);
    const unsigned char *p = hush_secbuf_bytes(out);
    size_t nonzero = 0;
    for (size_t i = before; i < cap; i++)
        nonzero += p[i] != 0;
    CHECK_EQ(nonzero, 0);
    CHECK_OK(hush_secbuf_set_len(out, before, &err), &err);
}

static void test_tampering_refused(void)
{
    exchange_fixture fx[2];
    fixture_make(X25519, AES, 250, 100, &fx[0]);
    fixture_make(XWING, CHACHA, 250, 100, &fx[1]);
    for (size_t which = 0; which < 2; which++) {
        exchange_fixture *f = &fx[which];
        const unsigned char *hdr = which == 1 ? f->hdr : NULL;
        size_t rlen = hush_secbuf_len(f->request), plen = hush_secbuf_len(f->response);
        unsigned char *req = malloc(rlen), *resp = malloc(plen);
        hush_secbuf *out = secret_buf();
        CHECK_OK(hush_secbuf_append(out, "kept", 4, NULL), NULL);
        /* One flipped bit anywhere; the first frame's failure under the
         * only key of an EHBP request is "no key" (the 422). */
        for (size_t i = 0; i < rlen; i++) {
            memcpy(req, hush_secbuf_bytes(f->request), rlen);
            req[i] ^= (unsigned char)(1u << (i % 8));
            hush_status s = open_request(hdr, f->client, &f->key.kp, 1, NULL, req, rlen,
                                         i % 2 ? 0 : 17, out, NULL, NULL);
            CHECK(s == HUSH_E_AUTH || s == HUSH_E_LIMIT || s == HUSH_E_FORMAT ||
                  (s == HUSH_E_KEY && hdr == NULL && i < 120));
            check_nothing_released(out, 4);
        }
        for (size_t i = 0; i < plen; i++) {
            memcpy(resp, hush_secbuf_bytes(f->response), plen);
            resp[i] ^= (unsigned char)(1u << (i % 8));
            hush_status s = open_response(f->client, f->nonce, NULL, resp, plen, i % 2 ? 0 : 13,
                                          out);
            CHECK(s == HUSH_E_AUTH || s == HUSH_E_LIMIT || s == HUSH_E_FORMAT);
            check_nothing_released(out, 4);
        }
        /* Truncated anywhere inside a prefix or a frame. */
        for (size_t cut = 1; cut < plen; cut++) {
            if (cut == 120 || cut == 240)
                continue; /* a frame boundary: a shorter, authentic body (EHBP has no end marker) */
            hush_status s = open_response(f->client, f->nonce, NULL, hush_secbuf_bytes(f->response),
                                          cut, 0, out);
            CHECK_EQ(s, HUSH_E_FORMAT);
            check_nothing_released(out, 4);
        }
        /* Frames reordered: the second frame first. */
        memcpy(resp, hush_secbuf_bytes(f->response) + 120, 120);
        memcpy(resp + 120, hush_secbuf_bytes(f->response), 120);
        memcpy(resp + 240, hush_secbuf_bytes(f->response) + 240, plen - 240);
        CHECK_EQ(open_response(f->client, f->nonce, NULL, resp, plen, 0, out), HUSH_E_AUTH);
        memcpy(req, hush_secbuf_bytes(f->request) + 120, 120);
        memcpy(req + 120, hush_secbuf_bytes(f->request), 120);
        memcpy(req + 240, hush_secbuf_bytes(f->request) + 240, rlen - 240);
        hush_status s = open_request(hdr, f->client, &f->key.kp, 1, NULL, req, rlen, 0, out,
                                     NULL, NULL);
        CHECK_EQ(s, hdr == NULL ? HUSH_E_KEY : HUSH_E_AUTH);
        check_nothing_released(out, 4);
        /* A wrong response nonce. */
        unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
        memcpy(nonce, f->nonce, sizeof nonce);
        nonce[31] ^= 1;
        CHECK_EQ(open_response(f->client, nonce, NULL, hush_secbuf_bytes(f->response), plen, 0,
                               out),
                 HUSH_E_AUTH);
        check_nothing_released(out, 4);
        free(req);
        free(resp);
        hush_secbuf_free(out);
    }
    /* An answer for another request's enc. */
    exchange_fixture g;
    hush_secbuf *out = secret_buf();
    fixture_make(X25519, AES, 250, 100, &g);
    CHECK_EQ(open_response(g.client, fx[0].nonce, NULL, hush_secbuf_bytes(fx[0].response),
                           hush_secbuf_len(fx[0].response), 0, out),
             HUSH_E_AUTH);
    check_nothing_released(out, 0);
    fixture_free(&g);
    hush_secbuf_free(out);
    fixture_free(&fx[0]);
    fixture_free(&fx[1]);
}

static void test_limits(void)
{
    exchange_fixture f;
    hush_secbuf *out = secret_buf();
    fixture_make(XWING, AES, 250, 100, &f);
    const unsigned char *req = hush_secbuf_bytes(f.request);
    size_t rlen = hush_secbuf_len(f.request);
    hush_v2_limits frame_cap = {115, 0}, exact = {116, 250}, total_cap = {0, 249};
    CHECK_EQ(open_request(f.hdr, f.client, &f.key.kp, 1, &frame_cap, req, rlen, 0, out, NULL,
                          NULL),
             HUSH_E_LIMIT);
    check_nothing_released(out, 0);
    CHECK_OK(open_request(f.hdr, f.client, &f.key.kp, 1, &exact, req, rlen, 0, out, NULL, NULL),
             NULL);
    hush_secbuf_clear(out);
    CHECK_EQ(open_request(f.hdr, f.client, &f.key.kp, 1, &total_cap, req, rlen, 1, out, NULL,
                          NULL),
             HUSH_E_LIMIT);
    check_nothing_released(out, 0);
    CHECK_EQ(open_response(f.client, f.nonce, &total_cap, hush_secbuf_bytes(f.response),
                           hush_secbuf_len(f.response), 0, out),
             HUSH_E_LIMIT);
    check_nothing_released(out, 0);
    /* A frame cap past what a length field and EVP take is the caller's mistake. */
    hush_v2_limits huge = {(size_t)INT32_MAX + 1, 0};
    CHECK_EQ(open_response(f.client, f.nonce, &huge, hush_secbuf_bytes(f.response),
                           hush_secbuf_len(f.response), 0, out),
             HUSH_E_ARGUMENT);
    CHECK_EQ(hush_secbuf_len(out), 0);
    /* A frame too short to hold a tag. */
    unsigned char tiny[4 + 15] = {0, 0, 0, 15};
    CHECK_EQ(open_response(f.client, f.nonce, NULL, tiny, sizeof tiny, 0, out), HUSH_E_AUTH);
    hush_secbuf_free(out);
    fixture_free(&f);
}

/* ---- keys ------------------------------------------------------------------- */

static void test_key_choice(void)
{
    hush_error err;
    server_key keys[3], other;
    hush_v2_exchange *client = NULL, *server = NULL;
    hush_secbuf *req = public_buf(), *out = secret_buf();
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    size_t index = 9;

    for (size_t i = 0; i < 3; i++)
        server_key_make(X25519, (unsigned char)(10 + i), (uint8_t)i, AES, &keys[i]);
    server_key_make(X25519, 20, 0, AES, &other);
    hush_hpke_keypair *live[3] = {keys[0].kp, keys[1].kp, keys[2].kp};
    CHECK_OK(hush_v2_request_seal(&keys[1].cfg, 0, "hello", 5, 0, req, hdr, &client, &err), &err);
    /* An EHBP request: the first frame picks its key among the live ones. */
    CHECK_OK(open_request(NULL, client, live, 3, NULL, hush_secbuf_bytes(req),
                          hush_secbuf_len(req), 2, out, &server, &index),
             NULL);
    CHECK_EQ(index, 1);
    CHECK(buf_equals(out, (const unsigned char *)"hello", 5));
    hush_secbuf_clear(out);
    /* Under none of them: the key-config answer, not an auth failure. */
    hush_hpke_keypair *stale[2] = {keys[0].kp, other.kp};
    CHECK_EQ(open_request(NULL, client, stale, 2, NULL, hush_secbuf_bytes(req),
                          hush_secbuf_len(req), 0, out, NULL, NULL),
             HUSH_E_KEY);
    check_nothing_released(out, 0);
    /* A PQ request to the wrong key, named by its hdr: opaque. */
    server_key w1, w2;
    hush_v2_exchange *pq = NULL;
    server_key_make(XWING, 30, 4, CHACHA, &w1);
    server_key_make(XWING, 31, 4, CHACHA, &w2);
    hush_secbuf_clear(req);
    CHECK_OK(hush_v2_request_seal(&w1.cfg, 0, "hello", 5, 0, req, hdr, &pq, &err), &err);
    CHECK_EQ(open_request(hdr, pq, &w2.kp, 1, NULL, hush_secbuf_bytes(req), hush_secbuf_len(req),
                          0, out, NULL, NULL),
             HUSH_E_AUTH);
    /* The hdr names another AEAD than the one sealed with. */
    hdr[6] = 0x02;
    CHECK_EQ(open_request(hdr, pq, &w1.kp, 1, NULL, hush_secbuf_bytes(req), hush_secbuf_len(req),
                          0, out, NULL, NULL),
             HUSH_E_AUTH);
    /* ... or a key id other than the one bound into info. */
    hdr[6] = 0x03, hdr[0] = 5;
    CHECK_EQ(open_request(hdr, pq, &w1.kp, 1, NULL, hush_secbuf_bytes(req), hush_secbuf_len(req),
                          0, out, NULL, NULL),
             HUSH_E_AUTH);
    /* A key of the other KEM is the caller's mistake. */
    hdr[0] = 4;
    CHECK_EQ(open_request(hdr, pq, &keys[0].kp, 1, NULL, hush_secbuf_bytes(req),
                          hush_secbuf_len(req), 0, out, NULL, NULL),
             HUSH_E_ARGUMENT);
    check_nothing_released(out, 0);

    hush_v2_exchange_free(pq);
    server_key_free(&w1);
    server_key_free(&w2);
    hush_v2_exchange_free(client);
    hush_v2_exchange_free(server);
    for (size_t i = 0; i < 3; i++)
        server_key_free(&keys[i]);
    server_key_free(&other);
    hush_secbuf_free(req);
    hush_secbuf_free(out);
}

static void test_failed_opener_refuses_more(void)
{
    exchange_fixture f;
    hush_error err;
    hush_v2_opener *o = NULL;
    hush_secbuf *out = secret_buf();
    unsigned char junk[40] = {0, 0, 0, 36};
    fixture_make(XWING, CHACHA, 50, 0, &f);
    CHECK_OK(hush_v2_response_opener_new(f.client, f.nonce, NULL, out, &o, &err), &err);
    CHECK_STATUS(hush_v2_opener_feed(o, junk, sizeof junk, &err), HUSH_E_AUTH, &err);
    CHECK(strstr(err.message, "not authentic") != NULL);
    CHECK_STATUS(hush_v2_opener_feed(o, hush_secbuf_bytes(f.response),
                                     hush_secbuf_len(f.response), &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_v2_opener_finish(o, NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_EQ(hush_secbuf_len(out), 0);
    hush_v2_opener_free(o);
    hush_secbuf_free(out);
    fixture_free(&f);
}

int main(void)
{
    RUN_TEST(test_keyconfig_round_trip);
    RUN_TEST(test_keyconfig_malformed);
    RUN_TEST(test_header_values);
    RUN_TEST(test_round_trips);
    RUN_TEST(test_x25519_config_refuses_other_aead);
    RUN_TEST(test_zero_length_frames);
    RUN_TEST(test_tampering_refused);
    RUN_TEST(test_limits);
    RUN_TEST(test_key_choice);
    RUN_TEST(test_failed_opener_refuses_more);
    return check_report();
}
