/* echo.c — the echo backend: deterministic answers made from the request
 * itself, so a gateway can be tried without a model: chat completions,
 * completions (both also streamed, word by word) and embeddings. The shape
 * and the word counts follow docs/gateway.md (and tests/interop/
 * nomyo_peer.py's echo). Replies, vectors and events are built in locked
 * memory: the request's arena, or the stream's event buffer. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "hushcall/base64.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "backend.h"

#define REPLY_PREFIX "echo: "
#define CHAT_PATH "/v1/chat/completions"
#define COMPLETIONS_PATH "/v1/completions"
#define EMBEDDINGS_PATH "/v1/embeddings"
#define EMBEDDING_DEFAULT_DIMENSIONS 8
#define EMBEDDING_MAX_DIMENSIONS 4096
#define POLL_SLICE_MS 100L /* the longest the stream sleeps without asking for its client */
#define DONE_EVENT "data: [DONE]\n\n"
#define EVENT_INITIAL_BYTES 512u

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

static bool is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static void count_words(word_count *wc, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool space = is_space(c);
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

/* What an answer is named by: its id prefix and its object type. */
typedef struct echo_kind {
    const char *id_prefix;
    const char *object;
} echo_kind;

static const echo_kind CHAT_ANSWER = {"chatcmpl-", "chat.completion"};
static const echo_kind CHAT_CHUNK = {"chatcmpl-", "chat.completion.chunk"};
static const echo_kind COMPLETION = {"cmpl-", "text_completion"};

/* The request's "model", or "echo". */
static const char *model_of(const hush_json_value *request, size_t *len)
{
    const char *model = hush_json_string(hush_json_object_get(request, "model", 5), len);
    if (model != NULL)
        return model;
    *len = 4;
    return "echo";
}

HUSH_MUST_USE
static hush_status write_head(hush_json_writer *w, const hush_json_value *request,
                              const char *payload_id, echo_kind kind, time_t created,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    /* The payload id is a header, not plaintext: the stack will do. */
    char id[sizeof "chatcmpl-" + HUSH_SERVER_PAYLOAD_ID_MAX];
    int id_len = snprintf(id, sizeof id, "%s%s", kind.id_prefix, payload_id);
    size_t model_len;
    const char *model = model_of(request, &model_len);
    HUSH_ENSURE(id_len > 0 && (size_t)id_len < sizeof id, HUSH_E_INTERNAL,
                "payload id longer than %u bytes", HUSH_SERVER_PAYLOAD_ID_MAX);
    HUSH_TRY(hush_json_write_key(w, "id", 2, err));
    HUSH_TRY(hush_json_write_string(w, id, (size_t)id_len, err));
    HUSH_TRY(hush_json_write_key(w, "object", 6, err));
    HUSH_TRY(hush_json_write_string(w, kind.object, strlen(kind.object), err));
    HUSH_TRY(hush_json_write_key(w, "created", 7, err));
    HUSH_TRY(hush_json_write_int64(w, (int64_t)created, err));
    HUSH_TRY(hush_json_write_key(w, "model", 5, err));
    HUSH_TRY(hush_json_write_string(w, model, model_len, err));
cleanup:
    return status;
}

/* ---- what the echo says ---------------------------------------------------- */

/* The reply and the word counts of one chat or completions request. */
typedef struct echo_text {
    char *reply; /* in the arena */
    size_t len;
    size_t prompt_words;
    size_t completion_words;
} echo_text;

/* Chat: "echo: " and the last user message; Python counts each message on
 * its own, so no word spans two messages. */
HUSH_MUST_USE
static hush_status chat_text(const hush_json_value *request, hush_arena *arena, echo_text *out,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *messages = hush_json_object_get(request, "messages", 8);
    const hush_json_value *last_user = NULL;
    word_count prompt = {0, false}, completion = {0, false};
    for (size_t i = 0; i < hush_json_length(messages); i++) {
        const hush_json_value *m = hush_json_array_get(messages, i);
        if (member_is(m, "role", "user"))
            last_user = m;
        prompt.in_word = false;
        message_text(m, count_piece, &prompt);
    }
    HUSH_TRY(make_reply(last_user, arena, &out->reply, &out->len, err));
    count_words(&completion, out->reply, out->len);
    out->prompt_words = prompt.words;
    out->completion_words = completion.words;
cleanup:
    return status;
}

/* Completions: "echo: " and the prompt, a string or the first string of a
 * list (the echo answers one prompt). */
HUSH_MUST_USE
static hush_status completion_text(const hush_json_value *request, hush_arena *arena,
                                   echo_text *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *prompt = hush_json_object_get(request, "prompt", 6);
    word_count words = {0, false}, completion = {0, false};
    size_t len = 0, prefix = strlen(REPLY_PREFIX);
    const char *text;
    void *mem;
    if (hush_json_type_of(prompt) == HUSH_JSON_ARRAY)
        prompt = hush_json_array_get(prompt, 0);
    text = hush_json_string(prompt, &len);
    HUSH_ENSURE(text != NULL || prompt == NULL, HUSH_E_BAD_REQUEST,
                "prompt must be a string or a list of strings");
    HUSH_TRY(hush_arena_alloc(arena, prefix + len + 1, &mem, err));
    out->reply = mem;
    memcpy(out->reply, REPLY_PREFIX, prefix);
    if (len > 0)
        memcpy(out->reply + prefix, text, len);
    out->len = prefix + len;
    count_words(&words, text != NULL ? text : "", len);
    count_words(&completion, out->reply, out->len);
    out->prompt_words = words.words;
    out->completion_words = completion.words;
cleanup:
    return status;
}

bool hush__echo_answers(const char *path)
{
    return strcmp(path, CHAT_PATH) == 0 || strcmp(path, COMPLETIONS_PATH) == 0 ||
           strcmp(path, EMBEDDINGS_PATH) == 0;
}

/* ---- whole answers ----------------------------------------------------------- */

HUSH_MUST_USE
static hush_status write_completion_choices(hush_json_writer *w, const char *reply, size_t len,
                                            hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_key(w, "choices", 7, err));
    HUSH_TRY(hush_json_write_array_begin(w, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "index", 5, err));
    HUSH_TRY(hush_json_write_int64(w, 0, err));
    HUSH_TRY(hush_json_write_key(w, "text", 4, err));
    HUSH_TRY(hush_json_write_string(w, reply, len, err));
    HUSH_TRY(hush_json_write_key(w, "logprobs", 8, err));
    HUSH_TRY(hush_json_write_null(w, err));
    HUSH_TRY(hush_json_write_key(w, "finish_reason", 13, err));
    HUSH_TRY(hush_json_write_string(w, "stop", 4, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
    HUSH_TRY(hush_json_write_array_end(w, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_text_answer(const hush_json_value *request, bool chat,
                                     const char *payload_id, hush_arena *arena,
                                     hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    echo_text text = {0};
    if (chat)
        HUSH_TRY(chat_text(request, arena, &text, err));
    else
        HUSH_TRY(completion_text(request, arena, &text, err));
    HUSH_TRY(write_head(w, request, payload_id, chat ? CHAT_ANSWER : COMPLETION, time(NULL),
                        err));
    if (chat)
        HUSH_TRY(write_choices(w, text.reply, text.len, err));
    else
        HUSH_TRY(write_completion_choices(w, text.reply, text.len, err));
    HUSH_TRY(write_usage(w, text.prompt_words, text.completion_words, err));
cleanup:
    return status;
}

/* ---- embeddings ---------------------------------------------------------------- */

/* The options of an embeddings request. */
typedef struct embedding_request {
    const hush_json_value *inputs; /* a string, or an array of strings */
    size_t count;
    size_t dimensions;
    bool base64;
} embedding_request;

HUSH_MUST_USE
static hush_status read_embedding_request(const hush_json_value *request, embedding_request *out,
                                          hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *input = hush_json_object_get(request, "input", 5);
    const hush_json_value *dims = hush_json_object_get(request, "dimensions", 10);
    const hush_json_value *format = hush_json_object_get(request, "encoding_format", 15);
    int64_t n = EMBEDDING_DEFAULT_DIMENSIONS;
    bool is_list = hush_json_type_of(input) == HUSH_JSON_ARRAY;
    out->inputs = input;
    out->count = is_list ? hush_json_length(input) : 1;
    HUSH_ENSURE(hush_json_type_of(input) == HUSH_JSON_STRING || (is_list && out->count > 0),
                HUSH_E_BAD_REQUEST, "input must be a string or a non-empty list of strings");
    for (size_t i = 0; is_list && i < out->count; i++)
        HUSH_ENSURE(hush_json_type_of(hush_json_array_get(input, i)) == HUSH_JSON_STRING,
                    HUSH_E_BAD_REQUEST, "input must be a string or a non-empty list of strings");
    if (dims != NULL && hush_json_type_of(dims) != HUSH_JSON_NULL)
        HUSH_ENSURE(hush_json_int64(dims, &n, NULL) == HUSH_OK && n >= 1 &&
                        n <= EMBEDDING_MAX_DIMENSIONS,
                    HUSH_E_BAD_REQUEST, "dimensions must be an integer from 1 to %d",
                    EMBEDDING_MAX_DIMENSIONS);
    out->dimensions = (size_t)n;
    out->base64 = member_is(request, "encoding_format", "base64");
    HUSH_ENSURE(format == NULL || hush_json_type_of(format) == HUSH_JSON_NULL || out->base64 ||
                    member_is(request, "encoding_format", "float"),
                HUSH_E_BAD_REQUEST, "encoding_format must be \"float\" or \"base64\"");
cleanup:
    return status;
}

/* The vector of one input: SHA-256(counter || input) for each 8 values,
 * each 32-bit word mapped to [-1, 1) as a float32 (so both encodings give
 * the same numbers). `digest` is 32 bytes of scratch in locked memory. */
HUSH_MUST_USE
static hush_status embed(const char *text, size_t len, float *vector, size_t dims,
                         unsigned char *digest, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    HUSH_OSSL(md != NULL, "SHA-256 context");
    for (size_t i = 0; i < dims; i++) {
        if (i % 8 == 0) {
            unsigned char counter[4] = {(unsigned char)(i >> 27), (unsigned char)(i >> 19),
                                        (unsigned char)(i >> 11), (unsigned char)(i >> 3)};
            HUSH_OSSL(EVP_DigestInit_ex(md, hush__sha256(), NULL) == 1 &&
                          EVP_DigestUpdate(md, counter, sizeof counter) == 1 &&
                          EVP_DigestUpdate(md, text, len) == 1 &&
                          EVP_DigestFinal_ex(md, digest, NULL) == 1,
                      "SHA-256 of an embedding input");
        }
        const unsigned char *b = digest + 4 * (i % 8);
        uint32_t word = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        vector[i] = (float)((double)word / 2147483648.0 - 1.0);
    }
cleanup:
    EVP_MD_CTX_free(md);
    return status;
}

/* The vector as OpenAI's base64: the little-endian float32s, encoded. */
HUSH_MUST_USE
static hush_status write_base64_vector(hush_json_writer *w, const float *vector, size_t dims,
                                       hush_arena *arena, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t raw_len = dims * 4, text_len = hush_base64_encoded_len(raw_len);
    unsigned char *raw;
    char *text;
    void *mem;
    HUSH_TRY(hush_arena_alloc(arena, raw_len + text_len + 1, &mem, err));
    raw = mem;
    text = (char *)raw + raw_len;
    for (size_t i = 0; i < dims; i++) {
        uint32_t bits;
        memcpy(&bits, &vector[i], 4);
        for (size_t k = 0; k < 4; k++)
            raw[4 * i + k] = (unsigned char)(bits >> (8 * k));
    }
    HUSH_TRY(hush_base64_encode(raw, raw_len, text, text_len + 1, &text_len, err));
    HUSH_TRY(hush_json_write_string(w, text, text_len, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_vector(hush_json_writer *w, const embedding_request *req,
                                const float *vector, hush_arena *arena, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (req->base64) {
        HUSH_TRY(write_base64_vector(w, vector, req->dimensions, arena, err));
        goto cleanup;
    }
    HUSH_TRY(hush_json_write_array_begin(w, err));
    for (size_t i = 0; i < req->dimensions; i++)
        HUSH_TRY(hush_json_write_double(w, (double)vector[i], err));
    HUSH_TRY(hush_json_write_array_end(w, err));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status write_embedding(hush_json_writer *w, const embedding_request *req, size_t index,
                                   float *vector, unsigned char *digest, hush_arena *arena,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *input = hush_json_type_of(req->inputs) == HUSH_JSON_ARRAY
                                       ? hush_json_array_get(req->inputs, index)
                                       : req->inputs;
    size_t len;
    const char *text = hush_json_string(input, &len);
    HUSH_TRY(embed(text, len, vector, req->dimensions, digest, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "object", 6, err));
    HUSH_TRY(hush_json_write_string(w, "embedding", 9, err));
    HUSH_TRY(hush_json_write_key(w, "index", 5, err));
    HUSH_TRY(hush_json_write_uint64(w, index, err));
    HUSH_TRY(hush_json_write_key(w, "embedding", 9, err));
    HUSH_TRY(write_vector(w, req, vector, arena, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

static size_t input_words(const embedding_request *req)
{
    word_count words = {0, false};
    for (size_t i = 0; i < req->count; i++) {
        const hush_json_value *input = hush_json_type_of(req->inputs) == HUSH_JSON_ARRAY
                                           ? hush_json_array_get(req->inputs, i)
                                           : req->inputs;
        size_t len;
        const char *text = hush_json_string(input, &len);
        words.in_word = false;
        count_words(&words, text, len);
    }
    return words.words;
}

HUSH_MUST_USE
static hush_status write_embeddings(const hush_json_value *request, hush_arena *arena,
                                    hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    embedding_request req = {0};
    size_t model_len, words;
    const char *model = model_of(request, &model_len);
    void *scratch;
    HUSH_TRY(read_embedding_request(request, &req, err));
    /* One vector at a time, and its digest, in locked memory. */
    HUSH_TRY(hush_arena_alloc(arena, req.dimensions * sizeof(float) + 32, &scratch, err));
    HUSH_TRY(hush_json_write_key(w, "object", 6, err));
    HUSH_TRY(hush_json_write_string(w, "list", 4, err));
    HUSH_TRY(hush_json_write_key(w, "data", 4, err));
    HUSH_TRY(hush_json_write_array_begin(w, err));
    for (size_t i = 0; i < req.count; i++)
        HUSH_TRY(write_embedding(w, &req, i, scratch,
                                 (unsigned char *)scratch + req.dimensions * sizeof(float), arena,
                                 err));
    HUSH_TRY(hush_json_write_array_end(w, err));
    HUSH_TRY(hush_json_write_key(w, "model", 5, err));
    HUSH_TRY(hush_json_write_string(w, model, model_len, err));
    words = input_words(&req);
    HUSH_TRY(hush_json_write_key(w, "usage", 5, err));
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "prompt_tokens", 13, err));
    HUSH_TRY(hush_json_write_uint64(w, words, err));
    HUSH_TRY(hush_json_write_key(w, "total_tokens", 12, err));
    HUSH_TRY(hush_json_write_uint64(w, words, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

hush_status hush__echo_write(const hush_json_value *request, const char *path,
                             const char *payload_id, hush_arena *arena, hush_json_writer *w,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(hush__echo_answers(path), HUSH_E_NOT_FOUND, "Unknown path");
    if (strcmp(path, EMBEDDINGS_PATH) == 0)
        HUSH_TRY(write_embeddings(request, arena, w, err));
    else
        HUSH_TRY(write_text_answer(request, strcmp(path, CHAT_PATH) == 0, payload_id, arena, w,
                                   err));
cleanup:
    return status;
}

/* ---- streamed answers ------------------------------------------------------------ */

/* One streamed echo: what every chunk repeats, and the locked buffer each
 * event is written into before the sink seals it. */
typedef struct echo_stream {
    const hush_json_value *request;
    const char *payload_id;
    bool chat;
    time_t created;
    hush_secbuf *event;
    const hush__event_sink *sink;
} echo_stream;

/* A chunk's one choice: the role chunk (chat), a piece of the reply, or
 * (piece NULL) the stop chunk. */
HUSH_MUST_USE
static hush_status write_chunk_choice(hush_json_writer *w, bool chat, bool role,
                                      const char *piece, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    bool stop = !role && piece == NULL;
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(hush_json_write_key(w, "index", 5, err));
    HUSH_TRY(hush_json_write_int64(w, 0, err));
    if (chat) {
        HUSH_TRY(hush_json_write_key(w, "delta", 5, err));
        HUSH_TRY(hush_json_write_object_begin(w, err));
        if (role) {
            HUSH_TRY(hush_json_write_key(w, "role", 4, err));
            HUSH_TRY(hush_json_write_string(w, "assistant", 9, err));
        }
        if (!stop) {
            HUSH_TRY(hush_json_write_key(w, "content", 7, err));
            HUSH_TRY(hush_json_write_string(w, role ? "" : piece, role ? 0 : len, err));
        }
        HUSH_TRY(hush_json_write_object_end(w, err));
    } else {
        HUSH_TRY(hush_json_write_key(w, "text", 4, err));
        HUSH_TRY(hush_json_write_string(w, stop ? "" : piece, stop ? 0 : len, err));
        HUSH_TRY(hush_json_write_key(w, "logprobs", 8, err));
        HUSH_TRY(hush_json_write_null(w, err));
    }
    HUSH_TRY(hush_json_write_key(w, "finish_reason", 13, err));
    if (stop)
        HUSH_TRY(hush_json_write_string(w, "stop", 4, err));
    else
        HUSH_TRY(hush_json_write_null(w, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* What one chunk carries: a choice (role, piece or stop) or the usage. */
typedef struct chunk_content {
    bool role;
    const char *piece; /* NULL with !role and !usage: the stop chunk */
    size_t len;
    const echo_text *usage; /* the usage chunk, with empty choices */
} chunk_content;

HUSH_MUST_USE
static hush_status write_chunk(echo_stream *es, hush_json_writer *w, const chunk_content *c,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_json_write_object_begin(w, err));
    HUSH_TRY(write_head(w, es->request, es->payload_id, es->chat ? CHAT_CHUNK : COMPLETION,
                        es->created, err));
    HUSH_TRY(hush_json_write_key(w, "choices", 7, err));
    HUSH_TRY(hush_json_write_array_begin(w, err));
    if (c->usage == NULL)
        HUSH_TRY(write_chunk_choice(w, es->chat, c->role, c->piece, c->len, err));
    HUSH_TRY(hush_json_write_array_end(w, err));
    if (c->usage != NULL)
        HUSH_TRY(write_usage(w, c->usage->prompt_words, c->usage->completion_words, err));
    HUSH_TRY(hush_json_write_object_end(w, err));
cleanup:
    return status;
}

/* `data: <chunk>\n\n` written into the locked event buffer and handed to the sink. */
HUSH_MUST_USE
static hush_status send_chunk(echo_stream *es, const chunk_content *c, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_writer *w = NULL;
    hush_secbuf_clear(es->event);
    HUSH_TRY(hush_secbuf_append(es->event, "data: ", 6, err));
    HUSH_TRY(hush_json_writer_new(es->event, HUSH_JSON_WRITE_COMPACT, 0, &w, err));
    HUSH_TRY(write_chunk(es, w, c, err));
    HUSH_TRY(hush_secbuf_append(es->event, "\n\n", 2, err));
    HUSH_TRY(es->sink->event(es->sink->ctx, hush_secbuf_bytes(es->event),
                             hush_secbuf_len(es->event), err));
cleanup:
    hush_json_writer_free(w);
    hush_secbuf_clear(es->event);
    return status;
}

/* Sleep `ms` in slices, asking the sink between them whether the client
 * is still there. */
HUSH_MUST_USE
static hush_status pause_between_words(const hush__event_sink *sink, long ms, hush_error *err)
{
    hush_status status = HUSH_OK;
    while (ms > 0) {
        long slice = ms < POLL_SLICE_MS ? ms : POLL_SLICE_MS;
        struct timespec ts = {slice / 1000, (slice % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        ms -= slice;
        HUSH_TRY(sink->poll(sink->ctx, err));
    }
cleanup:
    return status;
}

/* The length of the piece at the start of `s`: spaces, one word and the
 * spaces after it, so the pieces concatenate to the reply. */
static size_t next_piece(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_space((unsigned char)s[i]))
        i++;
    while (i < len && !is_space((unsigned char)s[i]))
        i++;
    while (i < len && is_space((unsigned char)s[i]))
        i++;
    return i;
}

HUSH_MUST_USE
static hush_status stream_words(echo_stream *es, const echo_text *text, long delay_ms,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t at = 0;
    while (at < text->len) {
        size_t n = next_piece(text->reply + at, text->len - at);
        chunk_content piece = {.piece = text->reply + at, .len = n};
        if (at > 0)
            HUSH_TRY(pause_between_words(es->sink, delay_ms, err));
        HUSH_TRY(send_chunk(es, &piece, err));
        at += n;
    }
cleanup:
    return status;
}

hush_status hush__echo_stream(const hush_json_value *request, const char *path,
                              const char *payload_id, long delay_ms, unsigned secmem_flags,
                              hush_arena *arena, const hush__event_sink *sink, hush_error *err)
{
    hush_status status = HUSH_OK;
    echo_stream es = {request, payload_id, strcmp(path, CHAT_PATH) == 0, time(NULL), NULL, sink};
    echo_text text = {0};
    const hush_json_value *options = hush_json_object_get(request, "stream_options", 14);
    const hush_json_value *include = hush_json_object_get(options, "include_usage", 13);
    static const chunk_content role = {.role = true}, stop = {0};
    HUSH_ENSURE(hush__echo_answers(path), HUSH_E_NOT_FOUND, "Unknown path");
    HUSH_ENSURE(strcmp(path, EMBEDDINGS_PATH) != 0, HUSH_E_BAD_REQUEST,
                "embeddings are not streamed");
    if (es.chat)
        HUSH_TRY(chat_text(request, arena, &text, err));
    else
        HUSH_TRY(completion_text(request, arena, &text, err));
    HUSH_TRY(hush_secbuf_new(EVENT_INITIAL_BYTES, 0, secmem_flags, &es.event, err));
    if (es.chat)
        HUSH_TRY(send_chunk(&es, &role, err));
    HUSH_TRY(stream_words(&es, &text, delay_ms, err));
    HUSH_TRY(send_chunk(&es, &stop, err));
    if (hush_json_bool(include)) {
        chunk_content usage = {.usage = &text};
        HUSH_TRY(send_chunk(&es, &usage, err));
    }
    HUSH_TRY(sink->event(sink->ctx, (const unsigned char *)DONE_EVENT, strlen(DONE_EVENT), err));
cleanup:
    hush_secbuf_free(es.event);
    return status;
}
