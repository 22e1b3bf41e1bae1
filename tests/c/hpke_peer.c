/* hpke_peer.c — hushcall's side of tests/c/cross_pyca.py: HPKE and ML-KEM-768
 * through the public API only, driven one command a line on stdin, one
 * answer a line on stdout. Fields are lowercase hex, "-" for empty; ids are
 * hex too (kem kdf aead, e.g. 647a 0001 0003).
 *
 *   keygen KEM                                  -> ok SK PK
 *   public KEM SK                               -> ok PK
 *   seal KEM KDF AEAD PK INFO AAD PT...         -> ok ENC CT...   (one context, in sequence)
 *   open KEM KDF AEAD SK ENC INFO AAD CT...     -> ok PT...       (one context, in sequence)
 *   export_s KEM KDF AEAD PK INFO CTX L         -> ok ENC SECRET
 *   export_r KEM KDF AEAD SK ENC INFO CTX L     -> ok SECRET
 *   mlkem_keygen [SEED]                         -> ok EK DK
 *   mlkem_encaps EK                             -> ok CT SS
 *   mlkem_decaps DK CT                          -> ok SS
 *
 * A failure answers "fail KIND" (hush_status_kind: "auth" for HPKE's opaque
 * refusal), and the peer carries on with the next line. Lines, and the
 * plaintexts and secrets decoded from them, live in secure memory. */
#include "line_peer.h"

#define LINE_MAX_BYTES (8u << 20)

/* The suite's ids as hex. */
static uint16_t hex_id(const char *hex) { return (uint16_t)hex_num(hex); }

/* ---- HPKE ----------------------------------------------------------------- */

static hush_hpke_suite suite_of(command *cmd)
{
    hush_hpke_suite suite = {hex_id(cmd->field[1]), hex_id(cmd->field[2]),
                             hex_id(cmd->field[3])};
    return suite;
}

static hush_status cmd_keygen(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_keypair *kp = NULL;
    hush_hpke_pubkey *pk = NULL;
    hush_secbuf *sk = NULL;
    size_t pk_len = 0;
    TRY(hush_hpke_keypair_generate(hex_id(cmd->field[1]), &kp, err));
    TRY(hush_hpke_keypair_private(kp, &sk, err));
    TRY(hush_hpke_keypair_public(kp, &pk, err));
    const unsigned char *pk_bytes = hush_hpke_pubkey_bytes(pk, &pk_len);
    fputs("ok", stdout);
    put_hex(hush_secbuf_bytes(sk), hush_secbuf_len(sk));
    put_hex(pk_bytes, pk_len);
cleanup:
    hush_secbuf_free(sk);
    hush_hpke_pubkey_free(pk);
    hush_hpke_keypair_free(kp);
    return status;
}

static hush_status load_keypair(uint16_t kem, const char *hex, hush_hpke_keypair **kp,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *sk = NULL;
    TRY(unhex(hex, &sk, err));
    TRY(hush_hpke_keypair_from_private(kem, hush_secbuf_bytes(sk), hush_secbuf_len(sk), kp, err));
cleanup:
    hush_secbuf_free(sk);
    return status;
}

static hush_status load_pubkey(uint16_t kem, const char *hex, hush_hpke_pubkey **pk,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *bytes = NULL;
    TRY(unhex(hex, &bytes, err));
    TRY(hush_hpke_pubkey_from_bytes(kem, hush_secbuf_bytes(bytes), hush_secbuf_len(bytes), pk,
                                    err));
cleanup:
    hush_secbuf_free(bytes);
    return status;
}

static hush_status cmd_public(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_keypair *kp = NULL;
    hush_hpke_pubkey *pk = NULL;
    size_t pk_len = 0;
    TRY(load_keypair(hex_id(cmd->field[1]), cmd->field[2], &kp, err));
    TRY(hush_hpke_keypair_public(kp, &pk, err));
    const unsigned char *pk_bytes = hush_hpke_pubkey_bytes(pk, &pk_len);
    fputs("ok", stdout);
    put_hex(pk_bytes, pk_len);
cleanup:
    hush_hpke_pubkey_free(pk);
    hush_hpke_keypair_free(kp);
    return status;
}

/* A sender's context to the public key in field 4, with info in field 5. */
static hush_status sender(command *cmd, unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES],
                          size_t *enc_len, hush_hpke_ctx **ctx, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_pubkey *pk = NULL;
    hush_secbuf *info = NULL;
    hush_hpke_suite suite = suite_of(cmd);
    TRY(load_pubkey(suite.kem_id, cmd->field[4], &pk, err));
    TRY(unhex(cmd->field[5], &info, err));
    TRY(hush_hpke_setup_base_s(suite, pk, hush_secbuf_bytes(info), hush_secbuf_len(info), enc,
                               HUSH_HPKE_MAX_ENC_BYTES, enc_len, ctx, err));
cleanup:
    hush_secbuf_free(info);
    hush_hpke_pubkey_free(pk);
    return status;
}

/* A recipient's context: key in field 4, enc in 5, info in 6. */
static hush_status recipient(command *cmd, hush_hpke_ctx **ctx, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_keypair *kp = NULL;
    hush_secbuf *enc = NULL, *info = NULL;
    hush_hpke_suite suite = suite_of(cmd);
    TRY(load_keypair(suite.kem_id, cmd->field[4], &kp, err));
    TRY(unhex(cmd->field[5], &enc, err));
    TRY(unhex(cmd->field[6], &info, err));
    TRY(hush_hpke_setup_base_r(suite, kp, hush_secbuf_bytes(enc), hush_secbuf_len(enc),
                               hush_secbuf_bytes(info), hush_secbuf_len(info), ctx, err));
cleanup:
    hush_secbuf_free(info);
    hush_secbuf_free(enc);
    hush_hpke_keypair_free(kp);
    return status;
}

/* Seal or open fields[first..] in turn, answering only when all went. */
static hush_status run_messages(command *cmd, hush_hpke_ctx *ctx, bool seal, size_t first,
                                const hush_secbuf *aad, hush_secbuf *answer, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *in = NULL, *out = NULL;
    for (size_t i = first; i < cmd->count; i++) {
        size_t out_len = 0;
        TRY(unhex(cmd->field[i], &in, err));
        size_t cap = hush_secbuf_len(in) + HUSH_HPKE_TAG_BYTES;
        TRY(hush_secbuf_new(cap, 0, HUSH_SECMEM_DEFAULT, &out, err));
        TRY(hush_secbuf_reserve(out, cap, err));
        if (seal)
            TRY(hush_hpke_seal(ctx, hush_secbuf_bytes(aad), hush_secbuf_len(aad),
                               hush_secbuf_bytes(in), hush_secbuf_len(in), hush_secbuf_data(out),
                               cap, &out_len, err));
        else
            TRY(hush_hpke_open(ctx, hush_secbuf_bytes(aad), hush_secbuf_len(aad),
                               hush_secbuf_bytes(in), hush_secbuf_len(in), hush_secbuf_data(out),
                               cap, &out_len, err));
        /* The answer holds each result behind a 4-byte length. */
        unsigned char len_be[4] = {(unsigned char)(out_len >> 24), (unsigned char)(out_len >> 16),
                                   (unsigned char)(out_len >> 8), (unsigned char)out_len};
        TRY(hush_secbuf_append(answer, len_be, sizeof len_be, err));
        TRY(hush_secbuf_append(answer, hush_secbuf_bytes(out), out_len, err));
        hush_secbuf_free(in);
        hush_secbuf_free(out);
        in = out = NULL;
    }
cleanup:
    hush_secbuf_free(in);
    hush_secbuf_free(out);
    return status;
}

static void put_results(const hush_secbuf *answer)
{
    const unsigned char *p = hush_secbuf_bytes(answer);
    size_t left = hush_secbuf_len(answer);
    while (left >= 4) {
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        put_hex(p + 4, len);
        p += 4 + len;
        left -= 4 + len;
    }
}

static hush_status cmd_seal(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = NULL;
    hush_secbuf *aad = NULL, *answer = NULL;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len = 0;
    TRY(sender(cmd, enc, &enc_len, &ctx, err));
    TRY(unhex(cmd->field[6], &aad, err));
    TRY(hush_secbuf_new(4096, 0, HUSH_SECMEM_DEFAULT, &answer, err));
    TRY(run_messages(cmd, ctx, true, 7, aad, answer, err));
    fputs("ok", stdout);
    put_hex(enc, enc_len);
    put_results(answer);
cleanup:
    hush_secbuf_free(answer);
    hush_secbuf_free(aad);
    hush_hpke_ctx_free(ctx);
    return status;
}

static hush_status cmd_open(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = NULL;
    hush_secbuf *aad = NULL, *answer = NULL;
    TRY(recipient(cmd, &ctx, err));
    TRY(unhex(cmd->field[7], &aad, err));
    TRY(hush_secbuf_new(4096, 0, HUSH_SECMEM_DEFAULT, &answer, err));
    TRY(run_messages(cmd, ctx, false, 8, aad, answer, err));
    fputs("ok", stdout);
    put_results(answer);
cleanup:
    hush_secbuf_free(answer);
    hush_secbuf_free(aad);
    hush_hpke_ctx_free(ctx);
    return status;
}

/* Export(exporter_context in `ctx_hex`, L in decimal) of `ctx` into a new
 * secure buffer. */
static hush_status export_secret(const hush_hpke_ctx *ctx, const char *ctx_hex,
                                 const char *len_dec, hush_secbuf **secret, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *context = NULL;
    size_t len = strtoul(len_dec, NULL, 10);
    TRY(unhex(ctx_hex, &context, err));
    TRY(hush_secbuf_new(len + 1, 0, HUSH_SECMEM_DEFAULT, secret, err));
    TRY(hush_secbuf_reserve(*secret, len, err));
    TRY(hush_hpke_export(ctx, hush_secbuf_bytes(context), hush_secbuf_len(context),
                         hush_secbuf_data(*secret), len, err));
    TRY(hush_secbuf_set_len(*secret, len, err));
cleanup:
    hush_secbuf_free(context);
    return status;
}

static hush_status cmd_export_s(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = NULL;
    hush_secbuf *secret = NULL;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len = 0;
    TRY(cmd->count == 8 ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(sender(cmd, enc, &enc_len, &ctx, err));
    TRY(export_secret(ctx, cmd->field[6], cmd->field[7], &secret, err));
    fputs("ok", stdout);
    put_hex(enc, enc_len);
    put_hex(hush_secbuf_bytes(secret), hush_secbuf_len(secret));
cleanup:
    hush_secbuf_free(secret);
    hush_hpke_ctx_free(ctx);
    return status;
}

static hush_status cmd_export_r(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_ctx *ctx = NULL;
    hush_secbuf *secret = NULL;
    TRY(cmd->count == 9 ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(recipient(cmd, &ctx, err));
    TRY(export_secret(ctx, cmd->field[7], cmd->field[8], &secret, err));
    fputs("ok", stdout);
    put_hex(hush_secbuf_bytes(secret), hush_secbuf_len(secret));
cleanup:
    hush_secbuf_free(secret);
    hush_hpke_ctx_free(ctx);
    return status;
}

/* ---- ML-KEM-768 ------------------------------------------------------------ */

static hush_status cmd_mlkem_keygen(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *seed = NULL, *dk = NULL;
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES];
    TRY(hush_secbuf_new(HUSH_MLKEM768_DECAPS_KEY_BYTES, 0, HUSH_SECMEM_DEFAULT, &dk, err));
    TRY(hush_secbuf_reserve(dk, HUSH_MLKEM768_DECAPS_KEY_BYTES, err));
    if (cmd->count == 2) {
        TRY(unhex(cmd->field[1], &seed, err));
        TRY(hush_secbuf_len(seed) == HUSH_MLKEM768_SEED_BYTES ? HUSH_OK : HUSH_E_ARGUMENT);
        TRY(hush_mlkem768_keygen_from_seed(hush_secbuf_bytes(seed), ek, hush_secbuf_data(dk),
                                           err));
    } else {
        TRY(hush_mlkem768_keygen(ek, hush_secbuf_data(dk), err));
    }
    fputs("ok", stdout);
    put_hex(ek, sizeof ek);
    put_hex(hush_secbuf_data(dk), HUSH_MLKEM768_DECAPS_KEY_BYTES);
cleanup:
    hush_secbuf_free(dk);
    hush_secbuf_free(seed);
    return status;
}

static hush_status cmd_mlkem_encaps(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *ek = NULL, *ss = NULL;
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES];
    TRY(cmd->count == 2 ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[1], &ek, err));
    TRY(hush_secbuf_len(ek) == HUSH_MLKEM768_ENCAPS_KEY_BYTES ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(hush_secbuf_new(HUSH_MLKEM768_SHARED_SECRET_BYTES, 0, HUSH_SECMEM_DEFAULT, &ss, err));
    TRY(hush_secbuf_reserve(ss, HUSH_MLKEM768_SHARED_SECRET_BYTES, err));
    TRY(hush_mlkem768_encaps(hush_secbuf_bytes(ek), ct, hush_secbuf_data(ss), err));
    fputs("ok", stdout);
    put_hex(ct, sizeof ct);
    put_hex(hush_secbuf_data(ss), HUSH_MLKEM768_SHARED_SECRET_BYTES);
cleanup:
    hush_secbuf_free(ss);
    hush_secbuf_free(ek);
    return status;
}

static hush_status cmd_mlkem_decaps(command *cmd, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *dk = NULL, *ct = NULL, *ss = NULL;
    TRY(cmd->count == 3 ? HUSH_OK : HUSH_E_ARGUMENT);
    TRY(unhex(cmd->field[1], &dk, err));
    TRY(unhex(cmd->field[2], &ct, err));
    TRY(hush_secbuf_len(dk) == HUSH_MLKEM768_DECAPS_KEY_BYTES &&
                hush_secbuf_len(ct) == HUSH_MLKEM768_CIPHERTEXT_BYTES
            ? HUSH_OK
            : HUSH_E_ARGUMENT);
    TRY(hush_secbuf_new(HUSH_MLKEM768_SHARED_SECRET_BYTES, 0, HUSH_SECMEM_DEFAULT, &ss, err));
    TRY(hush_secbuf_reserve(ss, HUSH_MLKEM768_SHARED_SECRET_BYTES, err));
    TRY(hush_mlkem768_decaps(hush_secbuf_bytes(dk), hush_secbuf_bytes(ct), hush_secbuf_data(ss),
                             err));
    fputs("ok", stdout);
    put_hex(hush_secbuf_data(ss), HUSH_MLKEM768_SHARED_SECRET_BYTES);
cleanup:
    hush_secbuf_free(ss);
    hush_secbuf_free(ct);
    hush_secbuf_free(dk);
    return status;
}

/* ---- the loop ----------------------------------------------------------------- */

typedef hush_status (*handler)(command *cmd, hush_error *err);

static const struct {
    const char *name;
    size_t min_fields;
    handler run;
} commands[] = {
    {"keygen", 2, cmd_keygen},         {"public", 3, cmd_public},
    {"seal", 7, cmd_seal},             {"open", 8, cmd_open},
    {"export_s", 8, cmd_export_s},     {"export_r", 9, cmd_export_r},
    {"mlkem_keygen", 1, cmd_mlkem_keygen}, {"mlkem_encaps", 2, cmd_mlkem_encaps},
    {"mlkem_decaps", 3, cmd_mlkem_decaps},
};

static hush_status dispatch(command *cmd, hush_error *err)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd->field[0], commands[i].name) == 0 && cmd->count >= commands[i].min_fields)
            return commands[i].run(cmd, err);
    return HUSH_E_ARGUMENT;
}

int main(void)
{
    hush_error err;
    command cmd = {0};
    if (hush_secbuf_new(4096, LINE_MAX_BYTES, HUSH_SECMEM_DEFAULT, &cmd.line, &err) != HUSH_OK) {
        fprintf(stderr, "hpke_peer: %s\n", err.message);
        return 1;
    }
    while (read_line(&cmd, &err)) {
        split_fields(&cmd);
        if (cmd.count == 0)
            continue;
        hush_status status = dispatch(&cmd, &err);
        /* Commands print only once all has gone well, so this is the
         * whole answer. */
        if (status != HUSH_OK)
            printf("fail %s", hush_status_kind(status));
        putchar('\n');
        fflush(stdout);
    }
    hush_secbuf_free(cmd.line);
    return 0;
}
