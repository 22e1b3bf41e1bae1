/* seal_open.c — the placeholder behind `make demo`: one message sealed and
 * opened through the core, with timings and the memory protection report.
 * It prints sizes and shapes, never the decrypted text. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hushcall/hushcall.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int fail(const char *what, const hush_error *err)
{
    fprintf(stderr, "%s: %s (%s)\n", what, hush_strerror(err->code), err->message);
    return 1;
}

int main(void)
{
    static const char request[] =
        "{\"model\": \"demo\", \"messages\": [{\"role\": \"user\", "
        "\"content\": \"Summarise this patient record.\"}]}";
    hush_error err;
    hush_keypair *server = NULL;
    hush_pubkey *server_pub = NULL;
    hush_secbuf *package = NULL;
    hush_envelope_v1_opened opened = {0};
    hush_json_doc *doc = NULL;
    int rc = 1;

    double t0 = now_ms();
    if (hush_keypair_generate(HUSH_RSA_DEFAULT_BITS, &server, &err) != HUSH_OK ||
        hush_pubkey_from_keypair(server, &server_pub, &err) != HUSH_OK) {
        rc = fail("key generation", &err);
        goto done;
    }
    double t1 = now_ms();
    if (hush_envelope_v1_seal(server_pub, request, strlen(request), NULL, &package, &err) !=
        HUSH_OK) {
        rc = fail("seal", &err);
        goto done;
    }
    double t2 = now_ms();
    if (hush_envelope_v1_open(server, hush_secbuf_data(package), hush_secbuf_len(package), 0,
                              &opened, &err) != HUSH_OK) {
        rc = fail("open", &err);
        goto done;
    }
    double t3 = now_ms();
    if (hush_json_parse(hush_secbuf_data(opened.plaintext), hush_secbuf_len(opened.plaintext),
                        NULL, HUSH_SECMEM_DEFAULT, &doc, &err) != HUSH_OK) {
        rc = fail("parse", &err);
        goto done;
    }
    const hush_json_value *messages =
        hush_json_object_get(hush_json_doc_root(doc), "messages", 8);
    char fingerprint[HUSH_FINGERPRINT_LEN];
    if (hush_pubkey_fingerprint(server_pub, fingerprint, &err) != HUSH_OK) {
        rc = fail("fingerprint", &err);
        goto done;
    }
    bool same = hush_secbuf_len(opened.plaintext) == strlen(request) &&
                memcmp(hush_secbuf_data(opened.plaintext), request, strlen(request)) == 0;

    printf("hushcall %s — NOMYO v1 envelope, sealed and opened in-process\n", HUSHCALL_VERSION);
    printf("  server key        RSA-%u %s\n", hush_keypair_bits(server), fingerprint);
    printf("  request           %zu bytes of JSON, %zu message(s)\n", strlen(request),
           hush_json_length(messages));
    printf("  package           %zu bytes: %.72s...\n", hush_secbuf_len(package),
           (const char *)hush_secbuf_data(package));
    printf("  opened            %zu bytes in locked memory (%s), round trip %s\n",
           hush_secbuf_len(opened.plaintext),
           hush_secbuf_is_locked(opened.plaintext) ? "mlock'ed" : "NOT locked",
           same ? "identical" : "DIFFERENT");
    printf("  timings           keygen %.1f ms, seal %.2f ms, open %.2f ms\n", t1 - t0, t2 - t1,
           t3 - t2);
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    printf("  memory            locked %llu bytes, dump exclusion %s, wipe on fork %s, "
           "OpenSSL secure heap %s\n",
           (unsigned long long)info.locked_bytes, info.dump_exclusion ? "yes" : "no",
           info.wipe_on_fork ? "yes" : "no", info.openssl_secure_heap ? "yes" : "no");
    rc = same ? 0 : 1;
done:
    hush_json_doc_free(doc);
    hush_envelope_v1_opened_clear(&opened);
    hush_secbuf_free(package);
    hush_pubkey_free(server_pub);
    hush_keypair_free(server);
    return rc;
}
