/* transfer.h — curl easy-handle setup that every HTTP exchange of the core
 * shares: the client's engine and the gateway's upstream (server/). One
 * place for the safety options (no redirects, http(s) only, peer and host
 * verified, no signals) and for header lines that may carry a secret. */
#ifndef HUSHCALL_TRANSFER_H
#define HUSHCALL_TRANSFER_H

#include <curl/curl.h>

#include "hushcall/error.h"

/* What an exchange's endpoint needs beyond the safety options; NULL
 * strings are left unset. */
typedef struct hush__curl_endpoint {
    long connect_timeout_ms;
    long timeout_ms;
    const char *user_agent; /* NULL: "hushcall/<version>" */
    const char *ca_file, *ca_dir;
    const char *client_cert, *client_cert_key;
    const char *tls_pin;    /* CURLOPT_PINNEDPUBLICKEY */
} hush__curl_endpoint;

/* Set the safety options and `endpoint`'s on `easy`. On failure
 * HUSH_E_INTERNAL "could not set up the <what>" (with curl's reason when
 * `with_reason`). */
HUSH_MUST_USE
hush_status hush__curl_setup(CURL *easy, const hush__curl_endpoint *endpoint, const char *what,
                             bool with_reason, hush_error *err);

/* Append "name: value" (at most 1 KiB), or `name` alone as a whole line
 * of any length when value is NULL. The line may carry an API key: our
 * copy on the stack is wiped once curl has made its own. HUSH_E_NOMEM, or
 * HUSH_E_INTERNAL naming `name` when the line is too long. */
HUSH_MUST_USE
hush_status hush__header_add(struct curl_slist **list, const char *name, const char *value,
                             hush_error *err);

/* Wipe every line of a curl header list (curl_slist_append copies the
 * line, an "Authorization: Bearer" one included), then free the list. */
void hush__free_header_list(struct curl_slist *list);

#endif
