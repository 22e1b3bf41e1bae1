/* echo.c — the echo backend: a deterministic chat.completion made from the
 * request itself, so a gateway can be tried without a model. The shape and
 * the word counts follow docs/gateway.md (and tests/interop/nomyo_peer.py's
 * echo). The reply is built in the request's arena: locked memory. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "backend.h"

#define REPLY_PREFIX "echo: "

/* True when obj[key] is the string `want`. */
static bool member_is(const hush_json_value *obj, const char *key, const char *want)
{
    size_t len;
    const char *s = hush_json_string(hush_json_object_get(obj, key, strlen(key)), &len);
    return s != NULL && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* Words as Python's str.split() finds them, over text given in pieces.
 * Only ASCII whitespace separates (Python also splits on Unicode spaces
 * such as U+00A0; an echo count need not). */
typedef struct word_count {
    size_t words;
    bool in_word;
} word_count;

static void count_words(word_count *wc, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool space = c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
        if (!space && !wc->in_word)
            wc->words++;
        wc->in_word = !space;
    }
}

/* The pieces of a message's text: its string content, or the "text" of
 * each {"type": "text"} part of a list. Calls `each` on every piece. */
typedef void (*text_piece_fn)(void *ctx, const char *s, size_t len);

static void message_text(const hush_json_value *message, text_piece_fn each, void *ctx)
{
    const hush_json_value *content = hush_json_object_get(message, "content", 7);
    size_t len;
    const char *s = hush_json_string(content, &len);
    if (s != NULL) {
        each(ctx, s, len);
        return;
    }
    for (size_t i = 0; i < hush_json_length(content); i++) {
        const hush_json_value *part = hush_json_array_get(content, i);
        s = hush_json_string(hush_json_object_get(part, "text", 4), &len);
        if (member_is(part, "type", "text") && s != NULL)
            each(ctx, s, len);
    }
}

static void count_piece(void *ctx, const char *s, size_t len)
{
    count_words(ctx, s, len);
}

typedef struct text_sink {
    char *dst; /* NULL while measuring */
    size_t len;
} text_sink;

static void copy_piece(void *ctx, const char *s, size_t len)
{
    text_sink *t = ctx;
    if (t->dst != NULL)
        memcpy(t->dst + t->len, s, len);
    t->len += len;
}

/* "echo: " and the text of the last user message (none: ""), in the arena. */
HUSH_MUST_USE
static hush_status make_reply(const hush_json_value *last_user, hush_arena *arena, char **out,
                              size_t *out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    text_sink sink = {NULL, strlen(REPLY_PREFIX)};
    void *mem;
    if (last_user != NULL)
        message_text(last_user, copy_piece, &sink);
    HUSH_TRY(hush_arena_alloc(arena, sink.len + 1, &mem, err));
    sink.dst = mem;
    sink.len = strlen(REPLY_PREFIX);
    memcpy(sink.dst, REPLY_PREFIX, sink.len);
    if (last_user != NULL)
        message_text(last_user, copy_piece, &sink);
    *out = sink.dst;
    *out_len = sink.len;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_choices(hush_json_writer *w, const char *reply, size_t len,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, "choices", 7, err));
    HUSH_TRY(hush_json_write_array_begin(w, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "index", 5, err));
    HUSH_TRY(hush_json_write_int64(w, 0, err));
    HUSH_TRY(hush_json_write_key(w, "message", 7, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "role", 4, err));
    HUSH_TRY(hush_json_write_string(w, "assistant", 9, err));
    HUSH_TRY(hush_json_write_key(w, "content", 7, err));
    HUSH_TRY(hush_json_write_string(w, reply, len, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
    HUSH_TRY(hush_json_write_key(w, "finish_reason", 13, err));
    HUSH_TRY(hush_json_write_string(w, "stop", 4, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
    HUSH_TRY(hush_json_write_array_end(w, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_usage(hush_json_writer *w, size_t prompt, size_t completion,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, "usage", 5, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "prompt_tokens", 13, err));
    HUSH_TRY(hush_json_write_uint64(w, prompt, err));
    HUSH_TRY(hush_json_write_key(w, "completion_tokens", 17, err));
    HUSH_TRY(hush_json_write_uint64(w, completion, err));
    HUSH_TRY(hush_json_write_key(w, "total_tokens", 12, err));
    HUSH_TRY(hush_json_write_uint64(w, prompt + completion, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_head(hush_json_writer *w, const hush_json_value *request,
                              const char *payload_id, hush_error *err)
{
    hush_status status = HUSH_OK;
    /* The payload id is a header, not plaintext: the stack will do. */
    char id[sizeof "chatcmpl-" + HUSH_SERVER_PAYLOAD_ID_MAX];
    int id_len = snprintf(id, sizeof id, "chatcmpl-%s", payload_id);
    size_t model_len;
    const char *model = hush_json_string(hush_json_object_get(request, "model", 5), &model_len);
    if (model == NULL) {
        model = "echo";
        model_len = 4;
    }
    HUSH_ENSURE(id_len > 0 && (size_t)id_len < sizeof id, HUSH_E_INTERNAL,
                "payload id longer than %u bytes", HUSH_SERVER_PAYLOAD_ID_MAX);
    HUSH_TRY(hush_json_write_key(w, "id", 2, err));
    HUSH_TRY(hush_json_write_string(w, id, (size_t)id_len, err));
    HUSH_TRY(hush_json_write_key(w, "object", 6, err));
    HUSH_TRY(hush_json_write_string(w, "chat.completion", 15, err));
    HUSH_TRY(hush_json_write_key(w, "created", 7, err));
    HUSH_TRY(hush_json_write_int64(w, (int64_t)time(NULL), err));
    HUSH_TRY(hush_json_write_key(w, "model", 5, err));
    HUSH_TRY(hush_json_write_string(w, model, model_len, err));
cleanup:
    return status;
}

hush_status hush__echo_write(const hush_json_value *request, const char *payload_id,
                             hush_arena *arena, hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *messages = hush_json_object_get(request, "messages", 8);
    const hush_json_value *last_user = NULL;
    word_count prompt = {0, false}, completion = {0, false};
    char *reply;
    size_t reply_len;
    /* Python counts each message on its own: no word spans two messages. */
    for (size_t i = 0; i < hush_json_length(messages); i++) {
        const hush_json_value *m = hush_json_array_get(messages, i);
        if (member_is(m, "role", "user"))
            last_user = m;
        prompt.in_word = false;
        message_text(m, count_piece, &prompt);
    }
    HUSH_TRY(make_reply(last_user, arena, &reply, &reply_len, err));
    count_words(&completion, reply, reply_len);
    HUSH_TRY(write_head(w, request, payload_id, err));
    HUSH_TRY(write_choices(w, reply, reply_len, err));
    HUSH_TRY(write_usage(w, prompt.words, completion.words, err));
cleanup:
    return status;
}
