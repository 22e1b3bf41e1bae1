/* differential_client.c — the C client's side of tests/python/test_differential.py.
 *
 *   differential_client KEY_DIR BASE_URL VARIANT...
 *
 * Sends one chat request per variant to BASE_URL/v/VARIANT with the client
 * key in KEY_DIR and prints one JSON line per variant: {"variant": ...,
 * "ok": true, "answer": <the opened document>} or {"variant": ..., "ok":
 * false, "kind": ..., "message": ...}. The answer leaves locked memory here
 * on purpose: the test compares it with what the nomyo client opened. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/hushcall.h"

/* HUSH_TRY's shape, for a program that sees only the public headers. */
#define TRY(expr)                  \
    do {                           \
        status = (expr);           \
        if (status != HUSH_OK)     \
            goto cleanup;          \
    } while (0)

#define REQUEST \
    "{\"model\": \"differential\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}"

static hush_status write_line(const char *variant, const hush_json_doc *answer,
                              const hush_error *failure, hush_status failed, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *out = NULL;
    hush_json_writer *w = NULL;
    TRY(hush_secbuf_new(4096, 0, HUSH_SECMEM_DEFAULT, &out, err));
    TRY(hush_json_writer_new(out, HUSH_JSON_WRITE_COMPACT, 0, &w, err));
    TRY(hush_json_write_object_begin(w, err));
    TRY(hush_json_write_key(w, "variant", 7, err));
    TRY(hush_json_write_string(w, variant, strlen(variant), err));
    TRY(hush_json_write_key(w, "ok", 2, err));
    TRY(hush_json_write_bool(w, answer != NULL, err));
    if (answer != NULL) {
        TRY(hush_json_write_key(w, "answer", 6, err));
        TRY(hush_json_write_value(w, hush_json_doc_root(answer), err));
    } else {
        const char *kind = hush_status_kind(failed);
        TRY(hush_json_write_key(w, "kind", 4, err));
        TRY(hush_json_write_string(w, kind, strlen(kind), err));
        TRY(hush_json_write_key(w, "message", 7, err));
        TRY(hush_json_write_string(w, failure->message, strlen(failure->message), err));
    }
    TRY(hush_json_write_object_end(w, err));
    fwrite(hush_secbuf_data(out), 1, hush_secbuf_len(out), stdout);
    fputc('\n', stdout);
cleanup:
    hush_json_writer_free(w);
    hush_secbuf_free(out);
    return status;
}

static hush_status request_variant(hush_client *client, const char *base_url, const char *variant,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *request = NULL;
    hush_json_doc *answer = NULL;
    hush_error failure;
    char url[1024];
    snprintf(url, sizeof url, "%s/v/%s", base_url, variant);
    hush_call_options opts = {.base_url = url};
    TRY(hush_secbuf_new(sizeof REQUEST, 0, HUSH_SECMEM_DEFAULT, &request, err));
    TRY(hush_secbuf_append(request, REQUEST, strlen(REQUEST), err));
    hush_error_clear(&failure);
    hush_status failed = hush_client_complete(client, request, &opts, &answer, &failure);
    request = NULL; /* taken over by the call */
    TRY(write_line(variant, failed == HUSH_OK ? answer : NULL, &failure, failed, err));
cleanup:
    hush_secbuf_free(request);
    hush_json_doc_free(answer);
    return status;
}

int main(int argc, char **argv)
{
    hush_error err;
    hush_client *client = NULL;
    hush_client_options opts;
    int rc = 1;
    if (argc < 4) {
        fprintf(stderr, "usage: %s KEY_DIR BASE_URL VARIANT...\n", argv[0]);
        return 2;
    }
    hush_error_clear(&err);
    opts = (hush_client_options)HUSH_CLIENT_OPTIONS_INIT;
    opts.base_url = argv[2];
    opts.allow_http = true;
    opts.key_dir = argv[1];
    opts.max_retries = 0;
    if (hush_client_new(&opts, &client, &err) != HUSH_OK)
        goto done;
    for (int i = 3; i < argc; i++)
        if (request_variant(client, argv[2], argv[i], &err) != HUSH_OK)
            goto done;
    rc = 0;
done:
    if (rc != 0)
        fprintf(stderr, "differential_client: %s\n", err.message);
    hush_client_free(client);
    return rc;
}
