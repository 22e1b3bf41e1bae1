/* retry.c — how an exchange ended, and whether and when it is tried again:
 * HTTP and curl outcomes as statuses, Retry-After, and exponential backoff
 * with jitter. Pure policy: no call, client or engine state. */
#include <limits.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "pipeline.h"

hush_status hush__status_for_http(long code)
{
    switch (code) {
    case 400: return HUSH_E_BAD_REQUEST;
    case 401: return HUSH_E_UNAUTHORIZED;
    case 403: return HUSH_E_FORBIDDEN;
    case 429: return HUSH_E_RATE_LIMITED;
    case 500: return HUSH_E_SERVER;
    case 503: return HUSH_E_UNAVAILABLE;
    default: return HUSH_E_HTTP;
    }
}

hush_status hush__status_for_curl(CURLcode rc, bool too_large)
{
    if (too_large)
        return HUSH_E_LIMIT;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return HUSH_E_TIMEOUT;
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: return HUSH_E_PIN;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED: return HUSH_E_TLS;
    case CURLE_OUT_OF_MEMORY: return HUSH_E_NOMEM;
    default: return HUSH_E_CONNECTION;
    }
}

long hush__retry_after_ms(CURL *easy)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return -1;
    char *end;
    long seconds = strtol(h->value, &end, 10);
    if (end != h->value && *end == '\0' && seconds >= 0)
        return seconds > LONG_MAX / 1000 ? LONG_MAX : seconds * 1000;
    time_t when = curl_getdate(h->value, NULL);
    if (when < 0)
        return -1;
    double delta = difftime(when, time(NULL));
    return delta > 0 ? (long)(delta * 1000) : 0;
}

bool hush__retry_delay(const hush__retry_policy *p, unsigned done, long server_wait_ms,
                       long *wait_ms)
{
    if (done > p->max_retries)
        return false;
    if (server_wait_ms > p->retry_max_ms)
        return false;
    /* Exponential backoff with jitter: half the step fixed, half random. */
    long step = p->retry_base_ms;
    for (unsigned i = 1; i < done && step < p->retry_max_ms; i++)
        step *= 2;
    if (step > p->retry_max_ms)
        step = p->retry_max_ms;
    unsigned short r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) {
        ERR_clear_error(); /* no jitter then: the fixed half alone */
        r = 0;
    }
    long wait = step / 2 + (long)((double)(step - step / 2) * r / 65535.0);
    *wait_ms = server_wait_ms > wait ? server_wait_ms : wait;
    return true;
}
