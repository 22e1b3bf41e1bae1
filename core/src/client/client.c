/* client.c — what every request to one endpoint shares: validated options,
 * the client's key (generated off the caller's path), the server keys (one
 * fetch per base URL however many calls race for it), the circuit breaker,
 * and the synchronous call, which is the engine's pipeline waited on. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/attest.h"
#include "hushcall/client.h"
#include "hushcall/engine.h"
#include "hushcall/keys.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"
#include "pipeline.h"

hush_status hush_client_options_init(hush_client_options *opts, unsigned version, hush_error *err)
{
    static const hush_client_options defaults = HUSH_CLIENT_OPTIONS_INIT;
    /* A version 1 caller's struct ends before `protocol`: write no further. */
    size_t size = version >= 2 ? sizeof defaults : offsetof(hush_client_options, protocol);
    hush_status status = hush__options_init(opts, &defaults, size, "hush_client_options",
                                            version, HUSH_CLIENT_OPTIONS_VERSION, err);
    if (status == HUSH_OK)
        opts->version = version;
    return status;
}

/* ---- validation --------------------------------------------------------- */

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool tier_is(const char *tier, const char *name)
{
    return tier != NULL && strcmp(tier, name) == 0;
}

/* The tiers NOMYO defines; `maximum` never travels over plain HTTP. */
HUSH_MUST_USE
static hush_status check_tier(const char *tier, const char *base_url, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(tier == NULL || tier_is(tier, "standard") || tier_is(tier, "high") ||
                    tier_is(tier, "maximum"),
                HUSH_E_ARGUMENT, "security_tier must be \"standard\", \"high\" or \"maximum\"");
    HUSH_ENSURE(!tier_is(tier, "maximum") || !starts_with(base_url, "http://"), HUSH_E_ARGUMENT,
                "security_tier \"maximum\" is refused over http://: use https");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status check_base_url(const char *url, bool allow_http, hush_error *err)
{
    hush_status status = HUSH_OK;
    bool https = false, http = false;
    HUSH_ENSURE(url != NULL && url[0] != '\0', HUSH_E_ARGUMENT, "base_url is required");
    https = starts_with(url, "https://") && url[8] != '\0';
    http = starts_with(url, "http://") && url[7] != '\0';
    HUSH_ENSURE(https || http, HUSH_E_ARGUMENT, "base_url must start with https:// (or http://)");
    HUSH_ENSURE(https || allow_http, HUSH_E_ARGUMENT,
                "base_url uses http://, which leaves the transport unprotected; "
                "set allow_http to true for local development only");
cleanup:
    return status;
}

/* "sha256:" and 64 lowercase hex digits, as hush_pubkey_fingerprint writes it. */
static bool is_fingerprint(const char *fp)
{
    bool ok = strlen(fp) == HUSH_FINGERPRINT_LEN - 1 && starts_with(fp, "sha256:");
    for (size_t i = 7; ok && fp[i] != '\0'; i++)
        ok = (fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f');
    return ok;
}

HUSH_MUST_USE
static hush_status check_fingerprint(const char *fp, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(fp == NULL || is_fingerprint(fp), HUSH_E_ARGUMENT,
                "server_key_fingerprint must be \"sha256:\" and 64 lowercase hex digits");
cleanup:
    return status;
}

/* "auto" (or NULL), "v1" or "v2". */
static bool protocol_from_name(const char *name, hush__protocol *out)
{
    if (name == NULL || strcmp(name, "auto") == 0)
        *out = PROTOCOL_AUTO;
    else if (strcmp(name, "v1") == 0)
        *out = PROTOCOL_V1;
    else if (strcmp(name, "v2") == 0)
        *out = PROTOCOL_V2;
    else
        return false;
    return true;
}

HUSH_MUST_USE
static hush_status check_v2_options(const hush_client_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__protocol protocol;
    HUSH_ENSURE(protocol_from_name(o->protocol, &protocol), HUSH_E_ARGUMENT,
                "protocol must be \"auto\", \"v1\" or \"v2\"");
    HUSH_ENSURE(!o->require_pq || protocol != PROTOCOL_V1, HUSH_E_ARGUMENT,
                "require_pq needs protocol \"auto\" or \"v2\": v1 has no post-quantum suite");
    HUSH_ENSURE(o->v2_key_fingerprint == NULL || is_fingerprint(o->v2_key_fingerprint),
                HUSH_E_ARGUMENT,
                "v2_key_fingerprint must be \"sha256:\" and 64 lowercase hex digits");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status check_options(const hush_client_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(check_base_url(o->base_url, o->allow_http, err));
    HUSH_TRY(check_tier(o->security_tier, o->base_url, err));
    HUSH_TRY(check_fingerprint(o->server_key_fingerprint, err));
    HUSH_TRY(check_v2_options(o, err));
    HUSH_ENSURE(o->tls_pin == NULL || starts_with(o->tls_pin, "sha256//"), HUSH_E_ARGUMENT,
                "tls_pin must be in libcurl's form \"sha256//<base64>\"");
    HUSH_ENSURE(o->connect_timeout_ms > 0 && o->timeout_ms > 0, HUSH_E_ARGUMENT,
                "timeouts must be positive");
    HUSH_ENSURE(o->retry_base_ms >= 0 && o->retry_max_ms >= o->retry_base_ms, HUSH_E_ARGUMENT,
                "retry_base_ms must be between 0 and retry_max_ms");
    HUSH_ENSURE(o->max_request_bytes > 0 && o->max_response_bytes > 0, HUSH_E_ARGUMENT,
                "size limits must be positive");
    HUSH_ENSURE(o->breaker_threshold > 0 && o->breaker_cooldown_ms >= 0, HUSH_E_ARGUMENT,
                "breaker_threshold must be positive");
    HUSH_ENSURE(o->key_bits == 0 || o->key_bits >= HUSH_RSA_MIN_BITS, HUSH_E_KEY,
                "key_bits must be at least %u", HUSH_RSA_MIN_BITS);
    HUSH_ENSURE(o->client_key == NULL || o->key_dir == NULL, HUSH_E_ARGUMENT,
                "give client_key or key_dir, not both");
cleanup:
    return status;
}

/* Requiring attestation means something only when a quote can be verified,
 * and only a quote by a pinned AIK can (attest.h). */
HUSH_MUST_USE
static hush_status check_attestation_pinned(const hush_client *c, const char *tier,
                                            hush_error *err)
{
    hush_status status = HUSH_OK;
    bool wanted = c->opts.require_attestation || tier_is(tier, "maximum");
    HUSH_ENSURE(!wanted || hush_attest_policy_pins_aik(c->attest_policy), HUSH_E_ARGUMENT,
                "%s needs an attestation_policy that pins an AIK (aik_fingerprints)",
                c->opts.require_attestation ? "require_attestation" : "security_tier \"maximum\"");
cleanup:
    return status;
}

static void fill_plan(hush_client *c);

/* ---- lifetime ----------------------------------------------------------- */

static hush_client *client_retain(hush_client *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

static void client_destroy(hush_client *c)
{
    if (c->share != NULL) {
        curl_share_cleanup(c->share); /* no transfer uses it: they all held a reference */
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&c->share_locks[i]);
    }
    for (server_key *sk = c->server_keys, *next; sk != NULL; sk = next) {
        next = sk->next;
        hush_pubkey_free(sk->key);
        hush_v2_keyconfigs_free(sk->v2, sk->v2_count);
        hush__free_secret_string(sk->base_url); /* a URL may carry user:password@ */
        free(sk);
    }
    hush_attest_policy_free(c->attest_policy);
    hush_keypair_free(c->key);
    hush_keypair_free(c->opts.client_key);
    free(c->key_pem);
    free(c->key_header);
    /* The api_key and key_password are among them: every copy is wiped. */
    for (size_t i = 0; i < c->owned_count; i++)
        hush__free_secret_string(c->owned[i]);
    pthread_cond_destroy(&c->key_ready);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Calls, the key generator and the caller's handle each hold a reference;
 * the last one frees the memory and nothing else (never an engine). */
static void client_release(hush_client *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        client_destroy(c);
}

/* The caller's handles together hold one reference. */
hush_client *hush_client_ref(hush_client *client)
{
    if (client != NULL)
        atomic_fetch_add_explicit(&client->handles, 1, memory_order_relaxed);
    return client;
}

/* The caller let go of the client. A key still being made that no call
 * can need any more (only the caller's and the generator's references are
 * left, and no new call can start) is abandoned and its thread joined, so
 * that no thread of ours is left running OpenSSL when the process exits;
 * one that calls in flight wait for is left to finish on its own. */
static void settle_generator(hush_client *client)
{
    if (!client->key_thread_started)
        return;
    pthread_mutex_lock(&client->lock);
    bool pending = client->key_pending;
    bool needed = pending && atomic_load(&client->refs) > 2;
    pthread_mutex_unlock(&client->lock);
    if (!needed) {
        atomic_store(&client->abandon_key, true);
        pthread_join(client->key_thread, NULL);
    } else {
        pthread_detach(client->key_thread);
    }
    client->key_thread_started = false;
}

void hush_client_free(hush_client *client)
{
    if (client == NULL ||
        atomic_fetch_sub_explicit(&client->handles, 1, memory_order_acq_rel) != 1)
        return;
    /* The caller's thread, not an engine's, shuts the synchronous engine
     * down, so an engine never has to join itself. */
    pthread_mutex_lock(&client->lock);
    hush_engine *sync_engine = client->sync_engine;
    client->sync_engine = NULL;
    pthread_mutex_unlock(&client->lock);
    hush_engine_free(sync_engine);
    settle_generator(client);
    client_release(client);
}

HUSH_MUST_USE
static hush_status copy_option(hush_client *c, const char **field, hush_error *err)
{
    hush_status status = HUSH_OK;
    char *copy = NULL;
    if (*field != NULL) {
        HUSH_ENSURE((copy = strdup(*field)) != NULL, HUSH_E_NOMEM, "out of memory");
        c->owned[c->owned_count++] = copy;
        *field = copy;
    }
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status copy_options(hush_client *c, const hush_client_options *o, hush_error *err)
{
    hush_status status = HUSH_OK;
    /* A version 1 struct ends before `protocol`: the rest keeps calloc's zeros. */
    memcpy(&c->opts, o,
           o->version >= 2 ? sizeof *o : offsetof(hush_client_options, protocol));
    const char **strings[] = {
        &c->opts.base_url, &c->opts.api_key, &c->opts.ca_file, &c->opts.ca_dir,
        &c->opts.client_cert, &c->opts.client_cert_key, &c->opts.tls_pin,
        &c->opts.server_key_fingerprint, &c->opts.key_dir, &c->opts.key_password,
        &c->opts.security_tier, &c->opts.user_agent, &c->opts.attestation_policy,
        &c->opts.protocol, &c->opts.v2_key_fingerprint,
    };
    _Static_assert(sizeof strings / sizeof *strings <= sizeof c->owned / sizeof *c->owned,
                   "room for every copied option");
    c->opts.client_key = NULL; /* taken with a reference below */
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        HUSH_TRY(copy_option(c, strings[i], err));
    /* A trailing slash would double up in "{base}/pki/public_key". */
    char *base = (char *)c->opts.base_url;
    for (size_t n = strlen(base); n > 0 && base[n - 1] == '/'; n--)
        base[n - 1] = '\0';
    if (c->opts.key_bits == 0)
        c->opts.key_bits = HUSH_RSA_DEFAULT_BITS;
    if (o->client_key != NULL)
        c->opts.client_key = hush_keypair_ref(o->client_key);
cleanup:
    return status;
}

/* ---- the curl share ----------------------------------------------------- */

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *user)
{
    (void)handle, (void)access;
    pthread_mutex_lock(&((hush_client *)user)->share_locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *user)
{
    (void)handle;
    pthread_mutex_unlock(&((hush_client *)user)->share_locks[data]);
}

HUSH_MUST_USE
static hush_status start_share(hush_client *c, hush_error *err)
{
    hush_status status = HUSH_OK;
    CURLSH *share = NULL;
    CURLSHcode rc = CURLSHE_OK;
    HUSH_ENSURE((share = curl_share_init()) != NULL, HUSH_E_NOMEM,
                "could not create the curl share");
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    c->share = share; /* cleaned up with the client from here on */
#define SET(opt, val) \
    if (rc == CURLSHE_OK) \
        rc = curl_share_setopt(share, opt, val)
    SET(CURLSHOPT_LOCKFUNC, share_lock);
    SET(CURLSHOPT_UNLOCKFUNC, share_unlock);
    SET(CURLSHOPT_USERDATA, c);
    SET(CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    SET(CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
#undef SET
    HUSH_ENSURE(rc == CURLSHE_OK, HUSH_E_INTERNAL, "could not set up the curl share");
cleanup:
    return status;
}

/* ---- the client key ----------------------------------------------------- */

/* X-Public-Key carries the PEM as urllib.parse.quote writes it: letters,
 * digits, "_.-~" and "/" as they are, every other byte as %XX. */
static char *percent_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(s);
    char *out = malloc(3 * len + 1), *p = out;
    if (out == NULL)
        return NULL;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("_.-~/", c) != NULL) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}

/* Install a ready key (client lock held). */
HUSH_MUST_USE
static hush_status install_key(hush_client *c, hush_keypair *key, hush_error *err)
{
    hush_status status = HUSH_OK;
    char *pem = NULL, *quoted = NULL;
    size_t len;
    HUSH_TRY(hush_keypair_public_pem(key, &pem, &len, err));
    HUSH_ENSURE((quoted = percent_encode(pem)) != NULL, HUSH_E_NOMEM, "out of memory");
    size_t header_len = strlen("X-Public-Key: ") + strlen(quoted) + 1;
    HUSH_ENSURE((c->key_header = malloc(header_len)) != NULL, HUSH_E_NOMEM, "out of memory");
    snprintf(c->key_header, header_len, "X-Public-Key: %s", quoted);
    c->key = key;
    c->key_pem = pem;
    pem = NULL;
cleanup:
    free(pem);
    free(quoted);
    return status;
}

/* Resume every call in a waiter list (client lock held). */
static void resume_all(hush_call *waiters)
{
    while (waiters != NULL) {
        hush_call *next = waiters->waiter_next;
        waiters->waiter_next = NULL;
        hush__call_resume(waiters);
        waiters = next;
    }
}

static void *generate_key(void *arg)
{
    hush_client *c = arg;
    hush_error err;
    hush_keypair *key = NULL;
    hush_status status =
        hush__keypair_generate_abandonable(c->opts.key_bits, &c->abandon_key, &key, &err);
    if (status == HUSH_OK && c->opts.key_dir != NULL)
        status = hush_keypair_save_dir(key, c->opts.key_dir, c->opts.key_password,
                                       HUSH_KDF_PBKDF2, HUSH_KEYS_SAVE_DEFAULT, &err);

    pthread_mutex_lock(&c->lock);
    if (status == HUSH_OK)
        status = install_key(c, key, &err);
    if (status != HUSH_OK) {
        hush_keypair_free(key);
        c->key_status = status;
        c->key_error = err;
    }
    c->key_pending = false;
    hush_call *waiters = c->key_waiters;
    c->key_waiters = NULL;
    resume_all(waiters);
    pthread_cond_broadcast(&c->key_ready);
    pthread_mutex_unlock(&c->lock);
    client_release(c);
    return NULL;
}

/* The key saved in key_dir; *key stays NULL (and HUSH_OK) when there is
 * none yet, so that one is generated. */
HUSH_MUST_USE
static hush_status load_saved_key(const hush_client *c, hush_keypair **key, hush_error *err)
{
    hush_status status = hush_keypair_load_dir(c->opts.key_dir, c->opts.key_password, key, err);
    if (status == HUSH_E_NOT_FOUND) {
        *key = NULL;
        status = HUSH_OK;
    }
    return status;
}

/* Generate the key on a thread of its own, off the caller's path. */
HUSH_MUST_USE
static hush_status start_generator(hush_client *c, hush_error *err)
{
    hush_status status = HUSH_OK;
    c->key_pending = true;
    client_retain(c); /* the thread's */
    HUSH_ENSURE(pthread_create(&c->key_thread, NULL, generate_key, c) == 0, HUSH_E_INTERNAL,
                "could not start key generation");
    c->key_thread_started = true;
cleanup:
    if (status != HUSH_OK) {
        c->key_pending = false;
        client_release(c);
    }
    return status;
}

/* A given key, a key_dir's key, or a generator thread started now. */
HUSH_MUST_USE
static hush_status start_key(hush_client *c, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_keypair *key = NULL;
    if (c->opts.client_key != NULL)
        key = hush_keypair_ref(c->opts.client_key);
    else if (c->opts.key_dir != NULL)
        HUSH_TRY(load_saved_key(c, &key, err));
    if (key == NULL) {
        HUSH_TRY(start_generator(c, err));
    } else {
        HUSH_TRY(install_key(c, key, err));
        key = NULL; /* the client's now */
    }
cleanup:
    hush_keypair_free(key);
    return status;
}

hush_status hush_client_new(const hush_client_options *opts, hush_client **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_client *c = NULL;
    HUSH_ENSURE(opts != NULL && out != NULL, HUSH_E_ARGUMENT, "hush_client_new: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__check_options_version("hush_client_options", opts->version,
                                         HUSH_CLIENT_OPTIONS_VERSION, err));
    HUSH_TRY(check_options(opts, err));
    HUSH_TRY(hush__init(err));
    HUSH_ENSURE((c = calloc(1, sizeof *c)) != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&c->refs, 1);
    atomic_init(&c->handles, 1);
    atomic_init(&c->abandon_key, false);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->key_ready, NULL);
    HUSH_TRY(copy_options(c, opts, err));
    if (c->opts.attestation_policy != NULL)
        HUSH_TRY(hush_attest_policy_load(c->opts.attestation_policy, &c->attest_policy, err));
    HUSH_TRY(check_attestation_pinned(c, c->opts.security_tier, err));
    HUSH_TRY(start_share(c, err));
    fill_plan(c);
    /* v2 has no client key (the answer's key is derived), and a require_pq
     * client never speaks v1: only the others make an RSA key. */
    if (c->plan.protocol != PROTOCOL_V2 && !c->plan.require_pq)
        HUSH_TRY(start_key(c, err));
    *out = c;
    c = NULL;
cleanup:
    if (c != NULL)
        client_release(c);
    return status;
}

hush_status hush_client_public_pem(hush_client *c, char **pem, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(c != NULL && pem != NULL, HUSH_E_ARGUMENT,
                "hush_client_public_pem: NULL argument");
    pthread_mutex_lock(&c->lock);
    while (c->key_pending)
        pthread_cond_wait(&c->key_ready, &c->lock);
    status = c->key_status;
    if (status == HUSH_OK && c->key_pem == NULL)
        status = hush__fail(err, HUSH_E_ARGUMENT,
                            "a protocol \"v2\" or require_pq client has no RSA key");
    else if (status != HUSH_OK && err != NULL)
        *err = c->key_error;
    else if (status == HUSH_OK && (*pem = strdup(c->key_pem)) == NULL)
        status = hush__fail(err, HUSH_E_NOMEM, "out of memory");
    pthread_mutex_unlock(&c->lock);
cleanup:
    return status;
}

/* ---- one call's settings ---------------------------------------------- */

#define PATH_MAX_LEN 256
#define CHAT_PATH "/v1/chat/completions"

/* "/v1/" and printable ASCII after it: no space, query, fragment or "..". */
HUSH_MUST_USE
static hush_status check_path(const char *path, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = strlen(path);
    HUSH_ENSURE(starts_with(path, "/v1/") && len > 4 && len <= PATH_MAX_LEN, HUSH_E_ARGUMENT,
                "path must start with \"/v1/\" and be at most %d characters", PATH_MAX_LEN);
    for (size_t i = 0; i < len; i++)
        HUSH_ENSURE(path[i] > ' ' && path[i] < 0x7f && path[i] != '?' && path[i] != '#',
                    HUSH_E_ARGUMENT,
                    "path must be printable ASCII without spaces, '?' or '#' (at byte %zu)", i);
    HUSH_ENSURE(strstr(path, "..") == NULL, HUSH_E_ARGUMENT, "path must not contain \"..\"");
cleanup:
    return status;
}

/* The endpoint of a call: its path, method and whether it streams. */
HUSH_MUST_USE
static hush_status call_endpoint(const hush_client *c, const hush_call_options *o,
                                 const hush_secbuf *request, hush_call *call, hush_error *err)
{
    hush_status status = HUSH_OK;
    bool is_get = o->method != NULL && strcmp(o->method, "GET") == 0;
    HUSH_ENSURE(o->method == NULL || is_get || strcmp(o->method, "POST") == 0, HUSH_E_ARGUMENT,
                "method must be \"POST\" or \"GET\"");
    HUSH_ENSURE(is_get == (request == NULL), HUSH_E_ARGUMENT,
                is_get ? "a GET has no request body (pass NULL)" : "a POST needs a request body");
    HUSH_ENSURE(!(is_get && o->stream), HUSH_E_ARGUMENT, "a GET cannot be streamed");
    if (o->path != NULL)
        HUSH_TRY(check_path(o->path, err));
    call->plain_get = is_get;
    call->is_stream = o->stream;
    if (o->path != NULL && strcmp(o->path, CHAT_PATH) != 0)
        HUSH_ENSURE((call->path = strdup(o->path)) != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_ENSURE(c->plan.protocol != PROTOCOL_V1 || (call->path == NULL && !o->stream && !is_get),
                HUSH_E_UNSUPPORTED,
                "protocol \"v1\" (NOMYO's) has chat completions alone and cannot stream; "
                "nothing was sent");
    if (o->stream)
        HUSH_TRY(hush__stream_new(c->plan.max_response_bytes, c->plan.secmem_flags,
                                  &call->stream, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status dup_setting(const char *override, const char *fallback, char **out,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    const char *v = override != NULL ? override : fallback;
    *out = NULL;
    HUSH_ENSURE(v == NULL || (*out = strdup(v)) != NULL, HUSH_E_NOMEM, "out of memory");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status call_settings(hush_client *c, const hush_call_options *o,
                                 const hush_secbuf *request, hush_call *call, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_call_options none = {0};
    if (o == NULL)
        o = &none;
    const char *base_url = o->base_url != NULL ? o->base_url : c->opts.base_url;
    HUSH_TRY(check_base_url(base_url, c->opts.allow_http, err));
    const char *tier = o->security_tier != NULL ? o->security_tier : c->opts.security_tier;
    HUSH_TRY(check_tier(tier, base_url, err));
    HUSH_TRY(check_attestation_pinned(c, tier, err));
    HUSH_TRY(call_endpoint(c, o, request, call, err));
    call->attestation_required =
        c->opts.require_attestation || (tier != NULL && strcmp(tier, "maximum") == 0);
    HUSH_TRY(dup_setting(o->api_key, c->opts.api_key, &call->api_key, err));
    HUSH_TRY(dup_setting(o->security_tier, c->opts.security_tier, &call->tier, err));
    HUSH_TRY(dup_setting(base_url, NULL, &call->base_url, err));
    for (size_t n = strlen(call->base_url); n > 0 && call->base_url[n - 1] == '/'; n--)
        call->base_url[n - 1] = '\0';
cleanup:
    return status;
}

/* ---- server keys -------------------------------------------------------- */

/* A new, unlinked entry for `base_url`. */
HUSH_MUST_USE
static hush_status new_server_key(const char *base_url, server_key **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    server_key *sk = NULL;
    HUSH_ENSURE((sk = calloc(1, sizeof *sk)) != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_ENSURE((sk->base_url = strdup(base_url)) != NULL, HUSH_E_NOMEM, "out of memory");
    *out = sk;
    sk = NULL;
cleanup:
    free(sk);
    return status;
}

/* The entry of `base_url`, made on first use (client lock held). */
HUSH_MUST_USE
static hush_status find_server_key(hush_client *c, const char *base_url, server_key **out,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    server_key *sk = c->server_keys;
    while (sk != NULL && strcmp(sk->base_url, base_url) != 0)
        sk = sk->next;
    if (sk == NULL) {
        HUSH_TRY(new_server_key(base_url, &sk, err));
        sk->next = c->server_keys;
        c->server_keys = sk;
    }
    *out = sk;
cleanup:
    return status;
}

static void push_waiter(hush_call **list, hush_call *call)
{
    call->waiter_next = *list;
    *list = call;
}

/* A failure stored for every call that asks after it (client lock held). */
HUSH_MUST_USE
static hush_status stored_failure(hush_status code, const hush_error *stored, hush_error *err)
{
    if (err != NULL)
        *err = *stored;
    return code;
}

/* ---- v2 key configs ----------------------------------------------------- */

static bool is_pq(const hush_v2_keyconfig *cfg)
{
    return hush_hpke_pubkey_kem(cfg->pubkey) == HUSH_HPKE_KEM_XWING;
}

/* How much a client likes a config's cipher: X-Wing with ChaCha20-Poly1305
 * first, X-Wing with AES-256-GCM, then X25519 (EHBP's suite); 0: unusable. */
static int preference(const hush_v2_keyconfig *cfg, size_t cipher, bool require_pq)
{
    if (!is_pq(cfg))
        return require_pq ? 0 : 1;
    return cfg->ciphers[cipher].aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305 ? 3 : 2;
}

/* Whether a config's key is the pinned one (no pin: every key is). */
HUSH_MUST_USE
static hush_status matches_pin(const hush_v2_keyconfig *cfg, const char *pin, bool *match,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    char fp[HUSH_FINGERPRINT_LEN];
    *match = pin == NULL;
    if (pin != NULL) {
        HUSH_TRY(hush_hpke_pubkey_fingerprint(cfg->pubkey, fp, err));
        *match = strcmp(fp, pin) == 0;
    }
cleanup:
    return status;
}

/* The config and cipher a call uses among `got`, under require_pq and the pin. */
HUSH_MUST_USE
static hush_status pick_v2_config(const hush__transfer_plan *plan, const hush__fetched *got,
                                  size_t *pick, size_t *cipher, hush_error *err)
{
    hush_status status = HUSH_OK;
    int best = 0;
    bool any_pq = false, pinned = false;
    for (size_t i = 0; i < got->v2_count; i++) {
        bool match;
        any_pq = any_pq || is_pq(&got->v2[i]);
        HUSH_TRY(matches_pin(&got->v2[i], plan->v2_key_fingerprint, &match, err));
        pinned = pinned || match;
        for (size_t j = 0; match && j < got->v2[i].n_ciphers; j++) {
            int p = preference(&got->v2[i], j, plan->require_pq);
            if (p > best) {
                best = p;
                *pick = i;
                *cipher = j;
            }
        }
    }
    HUSH_ENSURE(any_pq || !plan->require_pq, HUSH_E_KEY,
                "the server offers no post-quantum (X-Wing) key config and require_pq is set; "
                "nothing was sent");
    HUSH_ENSURE(pinned, HUSH_E_PIN,
                "no v2 key config of the server matches v2_key_fingerprint; nothing was sent");
    HUSH_ENSURE(best > 0, HUSH_E_KEY, "no v2 key config of the server is usable here");
cleanup:
    return status;
}

/* Keep a fetched config list for the entry (client lock held), refusing
 * one that drops the post-quantum suite an earlier one offered. */
HUSH_MUST_USE
static hush_status store_v2_configs(hush_client *c, server_key *sk, hush__fetched *got,
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t pick = 0, cipher = 0;
    bool has_pq = false;
    for (size_t i = 0; i < got->v2_count; i++)
        has_pq = has_pq || is_pq(&got->v2[i]);
    HUSH_ENSURE(has_pq || !sk->saw_pq || !c->plan.require_pq, HUSH_E_KEY,
                "the server's key configs no longer offer the post-quantum suite they offered "
                "before: downgrade refused (require_pq); nothing was sent");
    HUSH_TRY(pick_v2_config(&c->plan, got, &pick, &cipher, err));
    hush_v2_keyconfigs_free(sk->v2, sk->v2_count);
    sk->v2 = got->v2;
    sk->v2_count = got->v2_count;
    got->v2 = NULL;
    got->v2_count = 0;
    sk->v2_pick = pick;
    sk->v2_cipher = cipher;
    sk->v2_named = got->v2_named;
    sk->saw_pq = sk->saw_pq || has_pq;
    sk->v2_attested = got->attested;
    sk->v2_generation++;
cleanup:
    return status;
}

/* Point a call at the entry's chosen config (client lock held). */
HUSH_MUST_USE
static hush_status use_v2_config(hush_call *call, server_key *sk, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_v2_keyconfig *cfg = &sk->v2[sk->v2_pick];
    HUSH_TRY(hush_hpke_pubkey_fingerprint(cfg->pubkey, call->v2_fingerprint, err));
    hush_v2_keyconfig_clear(&call->v2_config); /* a config from before a 422 */
    call->v2_config = *cfg;
    call->v2_config.pubkey = hush_hpke_pubkey_ref(cfg->pubkey);
    call->v2_cipher = sk->v2_cipher;
    call->v2_named = sk->v2_named;
    call->v2_attested = sk->v2_attested;
    call->v2_generation = sk->v2_generation;
    call->v2 = true;
cleanup:
    return status;
}

/* The client's RSA key, which only v1 needs (client lock held): set on the
 * call, or the call waits for its generation, or fails with it. */
HUSH_MUST_USE
static hush_status client_key_for(hush_client *c, hush_call *call, bool *wait, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (c->key_pending) {
        push_waiter(&c->key_waiters, call);
        *wait = true;
    } else if (c->key_status != HUSH_OK) {
        status = stored_failure(c->key_status, &c->key_error, err);
    } else {
        call->client_key = c->key; /* both set once, before key_pending went false */
        call->key_header = c->key_header;
    }
    return status;
}

/* The entry's cached key, or a wait for the fetch running, or its failure,
 * or a new fetch: v1's key, or v2's configs first when v2 is wanted (in a
 * quote over the call's nonce when it requires attestation). */
HUSH_MUST_USE
static hush_status cached_or_fetch(hush_call *call, server_key *sk, bool uses_v1, bool *wait,
                                   bool *fetch, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (uses_v1 && sk->key != NULL) {
        call->server_key = hush_pubkey_ref(sk->key);
    } else if (sk->fetching) {
        call->waited_fetch_id = sk->fetch_id;
        push_waiter(&sk->waiters, call);
        *wait = true;
    } else if (call->waited_fetch_id != 0 && call->waited_fetch_id == sk->failed_fetch_id &&
               (sk->failure.code != HUSH_E_ATTESTATION || call->attestation_required)) {
        /* The fetch this call waited for failed: so does the call (unless
         * only its attestation did, which this call does not need). */
        status = stored_failure(sk->failure.code, &sk->failure, err);
    } else {
        sk->fetching = true;
        sk->fetch_id++;
        call->fetch_kind = uses_v1                     ? FETCH_V1_KEY
                           : call->attestation_required ? FETCH_V2_ATTESTED
                                                        : FETCH_V2_LIST;
        call->v2_fell_back = false;
        call->attest_missing = false;
        *fetch = true;
    }
    return status;
}

/* Whether the entry's v2 configs may seal this call: one that requires
 * attestation takes only configs an attested fetch stored. */
static bool v2_usable(const hush_call *call, const server_key *sk)
{
    return sk->v2 != NULL && (sk->v2_attested || !call->attestation_required);
}

/* The engine's keys_for hook (pipeline.h). A v2 call needs the server's
 * configs alone (attested ones when it requires attestation); a v1 call
 * (protocol "v1", or "auto" where the server has no v2) needs the client's
 * key first, then the server's. */
HUSH_MUST_USE
static hush_status keys_for(hush_client *c, hush_call *call, bool *wait, bool *fetch,
                            hush_error *err)
{
    hush_status status = HUSH_OK;
    server_key *sk = NULL;
    bool wants_v2 = c->plan.protocol != PROTOCOL_V1;
    *wait = *fetch = false;
    pthread_mutex_lock(&c->lock);
    HUSH_TRY(find_server_key(c, call->base_url, &sk, err));
    call->fetch_entry = sk;
    bool uses_v1 = !wants_v2 || sk->v2_absent;
    call->v2 = false; /* until a config is chosen: after a 422 the server may have none */
    HUSH_ENSURE(!(uses_v1 && !(wants_v2 && sk->v2 != NULL)) ||
                    (call->path == NULL && !call->is_stream),
                HUSH_E_UNSUPPORTED,
                "this call goes out over protocol v1 (%s), which has chat completions alone and "
                "cannot stream; nothing was sent",
                wants_v2 ? "the server publishes no v2 key config" : "protocol \"v1\"");
    if (wants_v2 && v2_usable(call, sk)) {
        HUSH_TRY(use_v2_config(call, sk, err));
    } else {
        if (uses_v1 && call->client_key == NULL)
            HUSH_TRY(client_key_for(c, call, wait, err));
        if (!*wait)
            HUSH_TRY(cached_or_fetch(call, sk, uses_v1, wait, fetch, err));
    }
cleanup:
    pthread_mutex_unlock(&c->lock);
    return status;
}

/* The hook's part for a fetch that found something (client lock held). */
HUSH_MUST_USE
static hush_status store_fetched(hush_client *c, server_key *sk,
                                 hush__fetched *got, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (got->v2 != NULL) {
        HUSH_TRY(store_v2_configs(c, sk, got, err));
    } else {
        hush_pubkey_free(sk->key);
        sk->key = got->v1_key;
        got->v1_key = NULL;
        sk->v2_absent = sk->v2_absent || got->v2_absent;
    }
cleanup:
    return status;
}

static hush_status fetch_done(hush_client *c, hush_call *call, hush__fetched *got,
                              const hush_error *failure, hush_error *err)
{
    hush_status status = HUSH_OK;
    server_key *sk = call->fetch_entry;
    pthread_mutex_lock(&c->lock);
    sk->fetching = false;
    if (got != NULL)
        status = store_fetched(c, sk, got, err);
    else if (failure != NULL)
        status = stored_failure(failure->code, failure, err);
    if (status != HUSH_OK) {
        /* Every call that waited for this fetch fails the same way. */
        sk->failed_fetch_id = sk->fetch_id;
        sk->failure = err != NULL ? *err : *failure;
    }
    /* Without a key or a failure (the fetcher was cancelled) the waiters
     * find no fetch running and one of them starts another. */
    hush_call *waiters = sk->waiters;
    sk->waiters = NULL;
    resume_all(waiters);
    pthread_mutex_unlock(&c->lock);
    if (got != NULL) {
        hush_pubkey_free(got->v1_key);
        hush_v2_keyconfigs_free(got->v2, got->v2_count);
    }
    return status;
}

static void v2_stale(hush_client *c, hush_call *call)
{
    server_key *sk = call->fetch_entry;
    pthread_mutex_lock(&c->lock);
    if (sk->v2 != NULL && sk->v2_generation == call->v2_generation) {
        hush_v2_keyconfigs_free(sk->v2, sk->v2_count);
        sk->v2 = NULL;
        sk->v2_count = 0;
    }
    pthread_mutex_unlock(&c->lock);
}

static bool unlink_waiter(hush_call **list, hush_call *call)
{
    for (hush_call **p = list; *p != NULL; p = &(*p)->waiter_next)
        if (*p == call) {
            *p = call->waiter_next;
            call->waiter_next = NULL;
            return true;
        }
    return false;
}

static void forget(hush_client *c, hush_call *call)
{
    pthread_mutex_lock(&c->lock);
    if (!unlink_waiter(&c->key_waiters, call) && call->fetch_entry != NULL)
        unlink_waiter(&call->fetch_entry->waiters, call);
    pthread_mutex_unlock(&c->lock);
}

/* ---- circuit breaker ---------------------------------------------------- */

/* Outcomes that say the endpoint is unwell, not that the request was bad. */
static bool counts_as_failure(hush_status outcome, int http_status)
{
    return outcome == HUSH_E_CONNECTION || outcome == HUSH_E_TIMEOUT ||
           outcome == HUSH_E_RATE_LIMITED || http_status >= 500;
}

HUSH_MUST_USE
static hush_status admit(hush_client *c, bool *is_probe, hush_error *err)
{
    hush_status status = HUSH_OK;
    *is_probe = false;
    pthread_mutex_lock(&c->lock);
    if (c->breaker == BREAKER_OPEN) {
        long wait_ms = hush__ms_between(hush__now(), c->open_until);
        if (wait_ms > 0 || c->probe_in_flight) {
            status = hush__fail(err, HUSH_E_CIRCUIT_OPEN,
                                "circuit open after %u consecutive failures: failing fast for "
                                "another %ld ms",
                                c->failures, wait_ms > 0 ? wait_ms : 0);
        } else {
            /* Half open: one call goes out to see whether the endpoint recovered. */
            c->probe_in_flight = true;
            *is_probe = true;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return status;
}

static void record(hush_client *c, hush_status outcome, int http_status, bool is_probe)
{
    pthread_mutex_lock(&c->lock);
    if (is_probe)
        c->probe_in_flight = false;
    if (outcome == HUSH_OK) {
        c->failures = 0;
        c->breaker = BREAKER_CLOSED;
    } else if (counts_as_failure(outcome, http_status)) {
        c->failures++;
        if (is_probe || c->failures >= c->opts.breaker_threshold) {
            c->breaker = BREAKER_OPEN;
            c->open_until = hush__after_ms(hush__now(), c->opts.breaker_cooldown_ms);
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/* ---- submitting --------------------------------------------------------- */

/* Hand a built call to the engine; one refused never went out, so a probe
 * it held is given back to the breaker. */
HUSH_MUST_USE
static hush_status start_call(hush_engine *e, hush_client *c, hush_call *call,
                              hush_secbuf *request, hush_error *err)
{
    hush_status status = hush__engine_start(e, call, request, err);
    if (status != HUSH_OK)
        record(c, HUSH_E_CANCELLED, 0, call->is_probe);
    return status;
}

/* A call with this client's settings, admitted by the breaker, started on
 * `e`. `request` is taken over, even on failure. */
HUSH_MUST_USE
static hush_status submit(hush_engine *e, hush_client *c, hush_secbuf *request,
                          const hush_call_options *opts, void *user_data, bool announce,
                          hush_call **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_call *call = NULL;
    hush_secbuf *handed = NULL;
    bool is_probe = false;
    HUSH_ENSURE(e != NULL && c != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_engine_submit: NULL argument");
    *out = NULL;
    HUSH_ENSURE(hush_secbuf_len(request) <= c->opts.max_request_bytes, HUSH_E_LIMIT,
                "request of %zu bytes exceeds the limit of %zu bytes; nothing was sent",
                hush_secbuf_len(request), c->opts.max_request_bytes);
    HUSH_TRY(hush__call_new(c, &c->plan, user_data, announce, &call, err));
    HUSH_TRY(call_settings(c, opts, request, call, err));
    HUSH_TRY(admit(c, &is_probe, err));
    call->is_probe = is_probe;
    handed = request;
    request = NULL; /* the engine's now, whatever it answers */
    HUSH_TRY(start_call(e, c, call, handed, err));
    *out = call;
    call = NULL;
cleanup:
    hush_secbuf_free(request);
    hush__call_release(call);
    return status;
}

hush_status hush_engine_submit(hush_engine *e, hush_client *client, hush_secbuf *request,
                               const hush_call_options *opts, void *user_data, hush_call **out,
                               hush_error *err)
{
    return submit(e, client, request, opts, user_data, true, out, err);
}

/* ---- the synchronous call ----------------------------------------------- */

HUSH_MUST_USE
static hush_status sync_engine(hush_client *c, hush_engine **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    pthread_mutex_lock(&c->lock);
    if (c->sync_engine == NULL)
        status = hush_engine_new(NULL, &c->sync_engine, err);
    *out = c->sync_engine;
    pthread_mutex_unlock(&c->lock);
    return status;
}

hush_status hush_client_complete_call(hush_client *c, hush_secbuf *request,
                                      const hush_call_options *opts, hush_call **call,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_engine *engine = NULL;
    hush_secbuf *handed = NULL;
    HUSH_ENSURE(c != NULL && call != NULL, HUSH_E_ARGUMENT,
                "hush_client_complete_call: NULL argument");
    *call = NULL;
    HUSH_TRY(sync_engine(c, &engine, err));
    handed = request;
    request = NULL; /* submit takes it over, whatever it answers */
    HUSH_TRY(submit(engine, c, handed, opts, NULL, false, call, err));
    HUSH_TRY(hush_call_wait(*call, -1, err));
cleanup:
    hush_secbuf_free(request);
    if (status != HUSH_OK && call != NULL) {
        hush_call_free(*call);
        *call = NULL;
    }
    return status;
}

hush_status hush_client_stream(hush_client *c, hush_secbuf *request,
                               const hush_call_options *opts, hush_call **call, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_engine *engine = NULL;
    hush_secbuf *handed = NULL;
    hush_call_options streamed = opts != NULL ? *opts : (hush_call_options){0};
    streamed.stream = true;
    HUSH_ENSURE(c != NULL && call != NULL, HUSH_E_ARGUMENT, "hush_client_stream: NULL argument");
    *call = NULL;
    HUSH_TRY(sync_engine(c, &engine, err));
    handed = request;
    request = NULL; /* submit takes it over, whatever it answers */
    HUSH_TRY(submit(engine, c, handed, &streamed, NULL, false, call, err));
cleanup:
    hush_secbuf_free(request);
    return status;
}

hush_status hush_client_complete(hush_client *c, hush_secbuf *request,
                                 const hush_call_options *opts, hush_json_doc **response,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_call *call = NULL;
    hush_secbuf *handed = NULL;
    HUSH_ENSURE(response != NULL, HUSH_E_ARGUMENT, "hush_client_complete: NULL argument");
    *response = NULL;
    handed = request;
    request = NULL; /* hush_client_complete_call takes it over */
    HUSH_TRY(hush_client_complete_call(c, handed, opts, &call, err));
    HUSH_TRY(hush_call_result(call, response, err));
cleanup:
    hush_secbuf_free(request);
    hush_call_free(call);
    return status;
}

/* ---- what the engine is handed ---------------------------------------- */

static const hush__call_hooks client_hooks = {
    .keys_for = keys_for,
    .fetch_done = fetch_done,
    .v2_stale = v2_stale,
    .forget = forget,
    .record = record,
    .retain = client_retain,
    .release = client_release,
};

/* Once the options are copied and the share exists: the plan points into both. */
static void fill_plan(hush_client *c)
{
    const hush_client_options *o = &c->opts;
    hush__protocol protocol = PROTOCOL_AUTO;
    protocol_from_name(o->protocol, &protocol); /* checked by check_options */
    c->plan = (hush__transfer_plan){
        .endpoint = {
            .connect_timeout_ms = o->connect_timeout_ms,
            .timeout_ms = o->timeout_ms,
            .user_agent = o->user_agent,
            .ca_file = o->ca_file,
            .ca_dir = o->ca_dir,
            .client_cert = o->client_cert,
            .client_cert_key = o->client_cert_key,
            .tls_pin = o->tls_pin,
        },
        .share = c->share,
        .retry = {o->max_retries, o->retry_base_ms, o->retry_max_ms},
        .max_response_bytes = o->max_response_bytes,
        .secmem_flags = o->secmem_flags,
        .ask_attestation = o->require_attestation,
        .server_key_fingerprint = o->server_key_fingerprint,
        .protocol = protocol,
        .require_pq = o->require_pq,
        .v2_key_fingerprint = o->v2_key_fingerprint,
        .attest_policy = c->attest_policy,
        .hooks = &client_hooks,
    };
}
