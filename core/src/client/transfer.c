/* transfer.c — curl easy-handle setup shared by the engine and the
 * gateway's upstream (transfer.h). */
#include <stdio.h>

#include "hushcall/secmem.h"
#include "hushcall/version.h"
#include "internal.h"
#include "mem/mem_internal.h"
#include "transfer.h"

#define HEADER_LINE_MAX 1024u

hush_status hush__curl_setup(CURL *easy, const hush__curl_endpoint *ep, const char *what,
                             bool with_reason, hush_error *err)
{
    hush_status status = HUSH_OK;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    if (rc == CURLE_OK) \
        rc = curl_easy_setopt(easy, opt, val)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, ep->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, ep->timeout_ms);
    SET(CURLOPT_USERAGENT, ep->user_agent != NULL ? ep->user_agent : "hushcall/" HUSHCALL_VERSION);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (ep->ca_file != NULL)
        SET(CURLOPT_CAINFO, ep->ca_file);
    if (ep->ca_dir != NULL)
        SET(CURLOPT_CAPATH, ep->ca_dir);
    if (ep->client_cert != NULL)
        SET(CURLOPT_SSLCERT, ep->client_cert);
    if (ep->client_cert_key != NULL)
        SET(CURLOPT_SSLKEY, ep->client_cert_key);
    if (ep->tls_pin != NULL)
        SET(CURLOPT_PINNEDPUBLICKEY, ep->tls_pin);
#undef SET
    HUSH_ENSURE(rc == CURLE_OK || !with_reason, HUSH_E_INTERNAL, "could not set up the %s (%s)",
                what, curl_easy_strerror(rc));
    HUSH_ENSURE(rc == CURLE_OK, HUSH_E_INTERNAL, "could not set up the %s", what);
cleanup:
    return status;
}

hush_status hush__header_add(struct curl_slist **list, const char *name, const char *value,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    char line[HEADER_LINE_MAX];
    const char *whole = name; /* a whole line needs no copy of ours */
    struct curl_slist *grown = NULL;
    line[0] = '\0';
    if (value != NULL) {
        int n = snprintf(line, sizeof line, "%s: %s", name, value);
        HUSH_ENSURE(n > 0 && (size_t)n < sizeof line, HUSH_E_INTERNAL,
                    "the %s header is too long", name);
        whole = line;
    }
    HUSH_ENSURE((grown = curl_slist_append(*list, whole)) != NULL, HUSH_E_NOMEM, "out of memory");
    *list = grown;
cleanup:
    hush_memzero(line, sizeof line);
    return status;
}

void hush__free_header_list(struct curl_slist *list)
{
    for (struct curl_slist *line = list; line != NULL; line = line->next)
        hush__wipe_string(line->data);
    curl_slist_free_all(list);
}
