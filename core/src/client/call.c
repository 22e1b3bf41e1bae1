/* call.c — a call's life and the public hush_call_* accessors. The engine
 * owns a call's progress; this file owns its reference count and what the
 * caller may read once it is done. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/rand.h>

#include "hushcall/json.h"
#include "internal.h"
#include "mem/mem_internal.h"
#include "pipeline.h"

hush_call *hush__call_retain(hush_call *call)
{
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    return call;
}

void hush__call_release(hush_call *call)
{
    if (call == NULL || atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1)
        return;
    hush_secbuf_free(call->request);
    hush_secbuf_free(call->package);
    hush_pubkey_free(call->server_key);
    hush_v2_keyconfig_clear(&call->v2_config);
    hush_v2_exchange_free(call->v2_exchange);
    hush_json_doc_free(call->response);
    hush__stream_free(call->stream);
    hush__chunks_wipe(&call->chunks);
    free(call->path);
    free(call->error_details);
    free(call->answer_attestation);
    hush__free_secret_string(call->api_key);
    free(call->tier);
    hush__free_secret_string(call->base_url); /* a URL may carry user:password@ */
    call->plan->hooks->release(call->client);
    pthread_cond_destroy(&call->finished);
    pthread_mutex_destroy(&call->lock);
    free(call);
}

/* A random (version 4) UUID, as X-Payload-ID. */
HUSH_MUST_USE
static hush_status make_payload_id(char out[HUSH_PAYLOAD_ID_LEN + 1], hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char b[16];
    HUSH_OSSL(RAND_bytes(b, sizeof b) == 1, "RAND_bytes");
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, HUSH_PAYLOAD_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
cleanup:
    return status;
}

hush_status hush__call_new(hush_client *client, const hush__transfer_plan *plan, void *user_data,
                           bool announce, hush_call **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_call *call = NULL;
    pthread_condattr_t attr;
    *out = NULL;
    HUSH_ENSURE((call = calloc(1, sizeof *call)) != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&call->refs, 1); /* the caller's; the engine takes its own when started */
    atomic_init(&call->user_released, false);
    pthread_mutex_init(&call->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&call->finished, &attr);
    pthread_condattr_destroy(&attr);
    call->plan = plan;
    call->client = plan->hooks->retain(client);
    call->user_data = user_data;
    call->announce = announce;
    call->stage = STAGE_QUEUED;
    *out = call; /* released by the caller from here on, whatever follows */
    HUSH_TRY(make_payload_id(call->payload_id, err));
cleanup:
    return status;
}

/* ---- calls, for the caller --------------------------------------------- */

bool hush_call_done(hush_call *call)
{
    if (call == NULL)
        return false;
    pthread_mutex_lock(&call->lock);
    bool done = call->done;
    pthread_mutex_unlock(&call->lock);
    return done;
}

hush_status hush_call_wait(hush_call *call, long timeout_ms, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(call != NULL, HUSH_E_ARGUMENT, "hush_call_wait: call is NULL");
    struct timespec deadline = hush__after_ms(hush__now(), timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&call->lock);
    while (!call->done && status == HUSH_OK) {
        if (timeout_ms < 0)
            pthread_cond_wait(&call->finished, &call->lock);
        else if (pthread_cond_timedwait(&call->finished, &call->lock, &deadline) == ETIMEDOUT &&
                 !call->done)
            status = hush__fail(err, HUSH_E_TIMEOUT, "the call is not done after %ld ms",
                                timeout_ms);
    }
    pthread_mutex_unlock(&call->lock);
cleanup:
    return status;
}

hush_status hush_call_result(hush_call *call, hush_json_doc **response, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(call != NULL, HUSH_E_ARGUMENT, "hush_call_result: call is NULL");
    if (response != NULL)
        *response = NULL;
    pthread_mutex_lock(&call->lock);
    status = call->done ? call->status : HUSH_E_ARGUMENT;
    if (!call->done)
        status = hush__fail(err, HUSH_E_ARGUMENT, "the call is not done yet");
    else if (status != HUSH_OK && err != NULL)
        *err = call->error;
    else if (err != NULL)
        hush_error_clear(err);
    if (call->done && status == HUSH_OK && response != NULL) {
        *response = call->response;
        call->response = NULL;
    }
    pthread_mutex_unlock(&call->lock);
cleanup:
    return status;
}

const char *hush_call_error_details(hush_call *call, size_t *len)
{
    /* Once done, the details are final: read without the lock. */
    if (!hush_call_done(call) || call->error_details == NULL)
        return NULL;
    if (len != NULL)
        *len = call->error_details_len;
    return call->error_details;
}

const char *hush_call_payload_id(const hush_call *call) { return call ? call->payload_id : NULL; }
void *hush_call_user_data(hush_call *call) { return call ? call->user_data : NULL; }

unsigned hush_call_attempts(hush_call *call)
{
    if (call == NULL)
        return 0;
    /* Written by the I/O thread; final once the call is done. */
    pthread_mutex_lock(&call->lock);
    unsigned attempts = call->done ? call->attempts : 0;
    pthread_mutex_unlock(&call->lock);
    return attempts;
}

void hush_call_cancel(hush_call *call)
{
    if (call == NULL)
        return;
    /* Posting under the call's lock: the call cannot finish meanwhile, so
     * its engine is still there to take the event. */
    pthread_mutex_lock(&call->lock);
    if (!call->done)
        hush__call_post_cancel(call);
    pthread_mutex_unlock(&call->lock);
}

hush_status hush_call_next_chunk(hush_call *call, long timeout_ms, hush_json_doc **chunk,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(call != NULL && chunk != NULL, HUSH_E_ARGUMENT,
                "hush_call_next_chunk: NULL argument");
    *chunk = NULL;
    HUSH_ENSURE(call->is_stream, HUSH_E_ARGUMENT,
                "hush_call_next_chunk: not a streamed call (hush_call_options.stream)");
    struct timespec deadline = hush__after_ms(hush__now(), timeout_ms > 0 ? timeout_ms : 0);
    bool timed_out = false;
    pthread_mutex_lock(&call->lock);
    /* Chunks first, whatever the ending: a failure after them (a cut
     * stream, a cancel) comes once they are taken. A forged frame wiped
     * them when the call failed. */
    while ((*chunk = hush__chunks_pop(&call->chunks)) == NULL && !call->done && !timed_out) {
        if (timeout_ms < 0)
            pthread_cond_wait(&call->finished, &call->lock);
        else
            timed_out = timeout_ms == 0 ||
                        pthread_cond_timedwait(&call->finished, &call->lock, &deadline) ==
                            ETIMEDOUT;
    }
    if (*chunk != NULL || !call->done)
        status = *chunk != NULL ? HUSH_OK
                                : hush__fail(err, HUSH_E_TIMEOUT,
                                             "no chunk arrived within %ld ms", timeout_ms);
    else if ((status = call->status) != HUSH_OK && err != NULL)
        *err = call->error;
    if (status == HUSH_OK && err != NULL)
        hush_error_clear(err);
    pthread_mutex_unlock(&call->lock);
cleanup:
    return status;
}

void hush_call_free(hush_call *call)
{
    if (call == NULL)
        return;
    atomic_store(&call->user_released, true);
    hush_call_cancel(call);
    hush__call_release(call);
}
