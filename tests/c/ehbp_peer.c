/* ehbp_peer.c — hushcall's side of tests/c/cross_ehbp.py: protocol v2's
 * codec through the public API only (hushcall/envelope_v2.h), one command a
 * line on stdin, one answer a line on stdout. Fields are lowercase hex, "-"
 * for empty; numbers are hex too.
 *
 *   keygen KEM KEYID IKM AEAD...             -> ok SK CONFIG   (DeriveKeyPair(IKM), bare config)
 *   parse_config CONFIG                      -> ok KEYID KEM PK CIPHERS (kdf||aead each)
 *   parse_list LIST                          -> ok KEYID... (the configs kept, in order)
 *   seal_request CONFIG CIPHER FRAME BODY [IKME] -> ok HDR ENC FRAMES (keeps the exchange)
 *   open_response NONCE FRAMES               -> ok BODY        (the kept client exchange)
 *   open_request KEM SK HDR ENC FRAMES       -> ok BODY        (HDR "-" for EHBP; keeps it)
 *   seal_response FRAME BODY [NONCE]         -> ok NONCE FRAMES (the kept server exchange)
 *
 * A failure answers "fail KIND" (hush_status_kind) and the peer carries on.
 * Lines and the plaintexts decoded from them live in secure memory. */
#include "line_peer.h"

typedef struct peer_state {
    hush_v2_exchange *client; /* the last request sealed */
    hush_v2_exchange *server; /* the last request opened */
} peer_state;

static void put_ciphers(const hush_v2_keyconfig *cfg)
{
    unsigned char ids[4 * HUSH_V2_MAX_SUITES];
    for (size_t i = 0; i < cfg->n_ciphers; i++) {
        ids[4 * i] = (unsigned char)(cfg->ciphers[i].kdf_id >> 8);
        ids[4 * i + 1] = (unsigned char)cfg->ciphers[i].kdf_id;
        ids[4 * i + 2] = (unsigned char)(cfg->ciphers[i].aead_id >> 8);
        ids[4 * i + 3] = (unsigned char)cfg->ciphers[i].aead_id;
    }
    put_hex(ids, 4 * cfg->n_ciphers);
}

/* ---- configs --------------------------------------------------------------- */

static hush_status cmd_keygen(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_keypair *kp = NULL;
    hush_secbuf *ikm = NULL, *sk = NULL, *config = NULL;
    hush_v2_keyconfig cfg = {0};
    uint16_t kem = (uint16_t)hex_num(cmd->field[1]);
    TRY(cmd->count >= 5 && cmd->count - 4 <= HUSH_V2_MAX_SUITES ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[3], &ikm, err));
    TRY(hush_hpke_keypair_derive(kem, hush_secbuf_bytes(ikm), hush_secbuf_len(ikm), &kp, err));
    TRY(hush_hpke_keypair_private(kp, &sk, err));
    TRY(hush_hpke_keypair_public(kp, &cfg.pubkey, err));
    cfg.key_id = (uint8_t)hex_num(cmd->field[2]);
    for (size_t i = 4; i < cmd->count; i++)
        cfg.ciphers[cfg.n_ciphers++] =
            (hush_v2_cipher){HUSH_HPKE_KDF_HKDF_SHA256, (uint16_t)hex_num(cmd->field[i])};
    TRY(hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &config, err));
    TRY(hush_v2_keyconfig_encode(&cfg, config, err));
    fputs("ok", stdout);
    put_hex(hush_secbuf_bytes(sk), hush_secbuf_len(sk));
    put_hex(hush_secbuf_bytes(config), hush_secbuf_len(config));
cleanup:
    hush_v2_keyconfig_clear(&cfg);
    hush_secbuf_free(config);
    hush_secbuf_free(sk);
    hush_secbuf_free(ikm);
    hush_hpke_keypair_free(kp);
    return status;
}

static hush_status load_config(const char *hex, hush_v2_keyconfig *cfg, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *bytes = NULL;
    TRY(unhex(hex, &bytes, err));
    TRY(hush_v2_keyconfig_parse(hush_secbuf_bytes(bytes), hush_secbuf_len(bytes), cfg, err));
cleanup:
    hush_secbuf_free(bytes);
    return status;
}

static hush_status cmd_parse_config(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_keyconfig cfg = {0};
    size_t pk_len = 0;
    TRY(load_config(cmd->field[1], &cfg, err));
    const unsigned char *pk = hush_hpke_pubkey_bytes(cfg.pubkey, &pk_len);
    printf("ok %02x %04x", cfg.key_id, hush_hpke_pubkey_kem(cfg.pubkey));
    put_hex(pk, pk_len);
    put_ciphers(&cfg);
cleanup:
    hush_v2_keyconfig_clear(&cfg);
    return status;
}

static hush_status cmd_parse_list(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *bytes = NULL;
    hush_v2_keyconfig *cfgs = NULL;
    size_t count = 0;
    TRY(unhex(cmd->field[1], &bytes, err));
    TRY(hush_v2_keyconfigs_parse(hush_secbuf_bytes(bytes), hush_secbuf_len(bytes), &cfgs, &count,
                                 err));
    fputs("ok", stdout);
    if (count == 0)
        fputs(" -", stdout);
    for (size_t i = 0; i < count; i++)
        printf(" %02x", cfgs[i].key_id);
cleanup:
    hush_v2_keyconfigs_free(cfgs, count);
    hush_secbuf_free(bytes);
    return status;
}

/* ---- client role ------------------------------------------------------------- */

static hush_status cmd_seal_request(command *cmd, peer_state *st, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_keyconfig cfg = {0};
    hush_secbuf *body = NULL, *ikm = NULL, *frames = NULL;
    unsigned char hdr[HUSH_V2_HDR_BYTES];
    size_t cipher = hex_num(cmd->field[2]), frame = hex_num(cmd->field[3]), enc_len = 0;
    TRY(cmd->count >= 5 ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(load_config(cmd->field[1], &cfg, err));
    TRY(unhex(cmd->field[4], &body, err));
    TRY(hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &frames, err));
    hush_v2_exchange_free(st->client);
    st->client = NULL;
    if (cmd->count > 5) {
        TRY(unhex(cmd->field[5], &ikm, err));
        TRY(hush_v2_request_seal_derand(&cfg, cipher, hush_secbuf_bytes(ikm), hush_secbuf_len(ikm),
                                        hush_secbuf_bytes(body), hush_secbuf_len(body), frame,
                                        frames, hdr, &st->client, err));
    } else {
        TRY(hush_v2_request_seal(&cfg, cipher, hush_secbuf_bytes(body), hush_secbuf_len(body),
                                 frame, frames, hdr, &st->client, err));
    }
    const unsigned char *enc = hush_v2_exchange_enc(st->client, &enc_len);
    fputs("ok", stdout);
    put_hex(hdr, sizeof hdr);
    put_hex(enc, enc_len);
    put_hex(hush_secbuf_bytes(frames), hush_secbuf_len(frames));
cleanup:
    hush_v2_keyconfig_clear(&cfg);
    hush_secbuf_free(frames);
    hush_secbuf_free(ikm);
    hush_secbuf_free(body);
    return status;
}

static hush_status cmd_open_response(command *cmd, peer_state *st, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *nonce = NULL, *frames = NULL, *out = NULL;
    hush_v2_opener *opener = NULL;
    TRY(cmd->count == 3 && st->client != NULL ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[1], &nonce, err));
    TRY(hush_secbuf_len(nonce) == HUSH_V2_RESPONSE_NONCE_BYTES ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[2], &frames, err));
    TRY(hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &out, err));
    TRY(hush_v2_response_opener_new(st->client, hush_secbuf_bytes(nonce), NULL, out, &opener,
                                    err));
    TRY(hush_v2_opener_feed(opener, hush_secbuf_bytes(frames), hush_secbuf_len(frames), err));
    TRY(hush_v2_opener_finish(opener, NULL, NULL, err));
    fputs("ok", stdout);
    put_hex(hush_secbuf_bytes(out), hush_secbuf_len(out));
cleanup:
    hush_v2_opener_free(opener);
    hush_secbuf_free(out);
    hush_secbuf_free(frames);
    hush_secbuf_free(nonce);
    return status;
}

/* ---- server role -------------------------------------------------------------- */

static hush_status cmd_open_request(command *cmd, peer_state *st, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *sk = NULL, *hdr = NULL, *enc = NULL, *frames = NULL, *out = NULL;
    hush_hpke_keypair *kp = NULL;
    hush_v2_opener *opener = NULL;
    TRY(cmd->count == 6 ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[2], &sk, err));
    TRY(hush_hpke_keypair_from_private((uint16_t)hex_num(cmd->field[1]), hush_secbuf_bytes(sk),
                                       hush_secbuf_len(sk), &kp, err));
    TRY(unhex(cmd->field[3], &hdr, err));
    TRY(hush_secbuf_len(hdr) == 0 || hush_secbuf_len(hdr) == HUSH_V2_HDR_BYTES ? HUSH_OK
                                                                                : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[4], &enc, err));
    TRY(unhex(cmd->field[5], &frames, err));
    TRY(hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &out, err));
    TRY(hush_v2_request_opener_new(hush_secbuf_len(hdr) > 0 ? hush_secbuf_bytes(hdr) : NULL,
                                   hush_secbuf_bytes(enc), hush_secbuf_len(enc), &kp, 1, NULL, out,
                                   &opener, err));
    TRY(hush_v2_opener_feed(opener, hush_secbuf_bytes(frames), hush_secbuf_len(frames), err));
    hush_v2_exchange_free(st->server);
    st->server = NULL;
    TRY(hush_v2_opener_finish(opener, &st->server, NULL, err));
    fputs("ok", stdout);
    put_hex(hush_secbuf_bytes(out), hush_secbuf_len(out));
cleanup:
    hush_v2_opener_free(opener);
    hush_hpke_keypair_free(kp);
    hush_secbuf_free(out);
    hush_secbuf_free(frames);
    hush_secbuf_free(enc);
    hush_secbuf_free(hdr);
    hush_secbuf_free(sk);
    return status;
}

static hush_status cmd_seal_response(command *cmd, peer_state *st, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *body = NULL, *given = NULL, *frames = NULL;
    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES];
    TRY(cmd->count >= 3 && st->server != NULL ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[2], &body, err));
    TRY(hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &frames, err));
    if (cmd->count > 3) {
        TRY(unhex(cmd->field[3], &given, err));
        TRY(hush_secbuf_len(given) == sizeof nonce ? HUSH_OK : HUSH_E_ARGUMENT);
        memcpy(nonce, hush_secbuf_bytes(given), sizeof nonce);
        TRY(hush_v2_response_seal_with_nonce(st->server, hush_secbuf_bytes(body),
                                             hush_secbuf_len(body), hex_num(cmd->field[1]),
                                             frames, nonce, err));
    } else {
        TRY(hush_v2_response_seal(st->server, hush_secbuf_bytes(body), hush_secbuf_len(body),
                                  hex_num(cmd->field[1]), frames, nonce, err));
    }
    fputs("ok", stdout);
    put_hex(nonce, sizeof nonce);
    put_hex(hush_secbuf_bytes(frames), hush_secbuf_len(frames));
cleanup:
    hush_secbuf_free(frames);
    hush_secbuf_free(given);
    hush_secbuf_free(body);
    return status;
}

/* ---- main ------------------------------------------------------------------- */

static hush_status dispatch(command *cmd, peer_state *st, hush_error *err)
{
    const char *name = cmd->count > 0 ? cmd->field[0] : "";
    if (cmd->count < 2)
        return HUSH_E_ARGUMENT;
    if (strcmp(name, "keygen") == 0)
        return cmd_keygen(cmd, err);
    if (strcmp(name, "parse_config") == 0)
        return cmd_parse_config(cmd, err);
    if (strcmp(name, "parse_list") == 0)
        return cmd_parse_list(cmd, err);
    if (strcmp(name, "seal_request") == 0)
        return cmd_seal_request(cmd, st, err);
    if (strcmp(name, "open_response") == 0)
        return cmd_open_response(cmd, st, err);
    if (strcmp(name, "open_request") == 0)
        return cmd_open_request(cmd, st, err);
    if (strcmp(name, "seal_response") == 0)
        return cmd_seal_response(cmd, st, err);
    return HUSH_E_ARGUMENT;
}

int main(void)
{
    hush_error err;
    command cmd = {0};
    peer_state st = {0};
    if (hush_secbuf_new(4096, 0, HUSH_SECMEM_DEFAULT, &cmd.line, &err) != HUSH_OK)
        return 1;
    while (read_line(&cmd, &err)) {
        split_fields(&cmd);
        hush_status status = dispatch(&cmd, &st, &err);
        if (status != HUSH_OK)
            printf("fail %s", hush_status_kind(status));
        putchar('\n');
        fflush(stdout);
    }
    hush_v2_exchange_free(st.client);
    hush_v2_exchange_free(st.server);
    hush_secbuf_free(cmd.line);
    return 0;
}
