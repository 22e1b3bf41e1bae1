/* error.c — filling the explicit hush_error out-parameter. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "internal.h"

const char *hush_strerror(hush_status code)
{
    switch (code) {
    case HUSH_OK: return "success";
    case HUSH_E_ARGUMENT: return "invalid argument";
    case HUSH_E_NOMEM: return "out of memory";
    case HUSH_E_LIMIT: return "limit exceeded";
    case HUSH_E_JSON: return "malformed JSON";
    case HUSH_E_TYPE: return "wrong JSON type";
    case HUSH_E_NOT_FOUND: return "not found";
    case HUSH_E_BASE64: return "malformed base64";
    case HUSH_E_KEY: return "unusable key";
    case HUSH_E_PASSWORD: return "wrong or missing password";
    case HUSH_E_PERMISSIONS: return "insecure file permissions";
    case HUSH_E_IO: return "I/O error";
    case HUSH_E_EXISTS: return "already exists";
    case HUSH_E_CRYPTO: return "cryptographic library failure";
    case HUSH_E_FORMAT: return "malformed envelope";
    case HUSH_E_UNSUPPORTED: return "unsupported version or algorithm";
    case HUSH_E_AUTH: return "authentication failed";
    case HUSH_E_PIN: return "pinned key mismatch";
    case HUSH_E_ATTESTATION: return "attestation missing or not verified";
    case HUSH_E_BAD_REQUEST: return "bad request";
    case HUSH_E_UNAUTHORIZED: return "unauthorized";
    case HUSH_E_FORBIDDEN: return "forbidden";
    case HUSH_E_RATE_LIMITED: return "rate limited";
    case HUSH_E_SERVER: return "server error";
    case HUSH_E_UNAVAILABLE: return "service unavailable";
    case HUSH_E_HTTP: return "unexpected HTTP status";
    case HUSH_E_CONNECTION: return "connection failed";
    case HUSH_E_TIMEOUT: return "timed out";
    case HUSH_E_TLS: return "TLS failure";
    case HUSH_E_CIRCUIT_OPEN: return "circuit open";
    case HUSH_E_CANCELLED: return "cancelled";
    case HUSH_E_TRUNCATED: return "stream truncated";
    case HUSH_E_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *hush_status_kind(hush_status code)
{
    switch (code) {
    case HUSH_OK: return "ok";
    case HUSH_E_ARGUMENT: return "argument";
    case HUSH_E_NOMEM: return "nomem";
    case HUSH_E_LIMIT: return "limit";
    case HUSH_E_JSON: return "json";
    case HUSH_E_TYPE: return "type";
    case HUSH_E_NOT_FOUND: return "not_found";
    case HUSH_E_BASE64: return "base64";
    case HUSH_E_KEY: return "key";
    case HUSH_E_PASSWORD: return "password";
    case HUSH_E_PERMISSIONS: return "permissions";
    case HUSH_E_IO: return "io";
    case HUSH_E_EXISTS: return "exists";
    case HUSH_E_CRYPTO: return "crypto";
    case HUSH_E_FORMAT: return "format";
    case HUSH_E_UNSUPPORTED: return "unsupported";
    case HUSH_E_AUTH: return "auth";
    case HUSH_E_PIN: return "pin";
    case HUSH_E_ATTESTATION: return "attestation";
    case HUSH_E_BAD_REQUEST: return "bad_request";
    case HUSH_E_UNAUTHORIZED: return "unauthorized";
    case HUSH_E_FORBIDDEN: return "forbidden";
    case HUSH_E_RATE_LIMITED: return "rate_limited";
    case HUSH_E_SERVER: return "server";
    case HUSH_E_UNAVAILABLE: return "unavailable";
    case HUSH_E_HTTP: return "http";
    case HUSH_E_CONNECTION: return "connection";
    case HUSH_E_TIMEOUT: return "timeout";
    case HUSH_E_TLS: return "tls";
    case HUSH_E_CIRCUIT_OPEN: return "circuit_open";
    case HUSH_E_CANCELLED: return "cancelled";
    case HUSH_E_TRUNCATED: return "truncated";
    case HUSH_E_INTERNAL: return "internal";
    }
    return "unknown";
}

void hush_error_clear(hush_error *err)
{
    if (err == NULL)
        return;
    err->code = HUSH_OK;
    err->http_status = 0;
    err->offset = -1;
    err->message[0] = '\0';
}

/* Fills `err` (if any); the callers return `code` themselves. */
static void fill_error(hush_error *err, hush_status code, int64_t offset, const char *fmt,
                       va_list ap)
{
    if (err == NULL)
        return;
    err->code = code;
    err->offset = offset;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

hush_status hush__fail(hush_error *err, hush_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fill_error(err, code, -1, fmt, ap);
    va_end(ap);
    return code;
}

hush_status hush__fail_at(hush_error *err, hush_status code, size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fill_error(err, code, offset > INT64_MAX ? INT64_MAX : (int64_t)offset, fmt, ap);
    va_end(ap);
    return code;
}

hush_status hush__fail_openssl(hush_error *err, hush_status code, const char *what)
{
    /* OpenSSL's reason strings name what failed, never data: safe to show. */
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    if (reason != NULL)
        return hush__fail(err, code, "%s failed (%s)", what, reason);
    return hush__fail(err, code, "%s failed", what);
}

hush_status hush__check_options_version(const char *struct_name, unsigned version, unsigned newest,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(version != 0, HUSH_E_ARGUMENT,
                "%s: version is 0 (fill it with its _INIT macro or init function)", struct_name);
    HUSH_ENSURE(version <= newest, HUSH_E_ARGUMENT,
                "%s: unknown version %u (this library knows 1 to %u)", struct_name, version,
                newest);
cleanup:
    return status;
}

hush_status hush__options_init(void *opts, const void *defaults, size_t size,
                               const char *struct_name, unsigned version, unsigned newest,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(opts != NULL, HUSH_E_ARGUMENT, "%s_init: opts is NULL", struct_name);
    HUSH_TRY(hush__check_options_version(struct_name, version, newest, err));
    memcpy(opts, defaults, size);
cleanup:
    return status;
}
