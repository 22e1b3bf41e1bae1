/* fuzz_keyconfig_v2.c — protocol v2's key-config parsers on arbitrary bytes.
 * The first byte chooses the bare parser (even) or the list parser (odd);
 * the rest is the input. Nothing may crash or over-read; a refusal is
 * HUSH_E_FORMAT or HUSH_E_UNSUPPORTED and leaves nothing behind; a config
 * taken holds a public key of its KEM and at least one suite, and encodes
 * back to bytes the parser takes again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/envelope_v2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_config(const hush_v2_keyconfig *cfg)
{
    hush_secbuf *bytes = NULL;
    hush_v2_keyconfig again;
    if (cfg->pubkey == NULL || cfg->n_ciphers == 0 || cfg->n_ciphers > HUSH_V2_MAX_SUITES)
        abort();
    if (hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &bytes, NULL) != HUSH_OK ||
        hush_v2_keyconfig_encode(cfg, bytes, NULL) != HUSH_OK ||
        hush_v2_keyconfig_parse(hush_secbuf_bytes(bytes), hush_secbuf_len(bytes), &again, NULL) !=
            HUSH_OK)
        abort();
    if (again.key_id != cfg->key_id || again.n_ciphers != cfg->n_ciphers ||
        memcmp(again.ciphers, cfg->ciphers, cfg->n_ciphers * sizeof cfg->ciphers[0]) != 0)
        abort();
    hush_v2_keyconfig_clear(&again);
    hush_secbuf_free(bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hush_error err;
    if (size < 1)
        return 0;
    bool list = data[0] & 1;
    data++, size--;
    if (!list) {
        hush_v2_keyconfig cfg;
        hush_status s = hush_v2_keyconfig_parse(data, size, &cfg, &err);
        if (s == HUSH_OK)
            check_config(&cfg);
        else if ((s != HUSH_E_FORMAT && s != HUSH_E_UNSUPPORTED) || cfg.pubkey != NULL)
            abort();
        hush_v2_keyconfig_clear(&cfg);
        return 0;
    }
    hush_v2_keyconfig *cfgs = NULL;
    size_t count = 0;
    hush_status s = hush_v2_keyconfigs_parse(data, size, &cfgs, &count, &err);
    if (s != HUSH_OK && (s != HUSH_E_FORMAT || cfgs != NULL || count != 0))
        abort();
    for (size_t i = 0; i < count; i++)
        check_config(&cfgs[i]);
    hush_v2_keyconfigs_free(cfgs, count);
    return 0;
}
