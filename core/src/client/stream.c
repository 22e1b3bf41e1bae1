/* stream.c — a streamed v2 answer, opened and cut into chunk documents as
 * it arrives (stream.h). The events are read as WHATWG's text/event-stream
 * defines them: lines end at \n, \r\n or \r; `data` fields are joined with
 * \n; comments (':') and other fields are ignored; a blank line ends an
 * event. Plaintext stays in two locked buffers (the opened bytes not yet
 * consumed, the event's data), wiped as soon as a line is consumed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/secmem.h"
#include "internal.h"
#include "mem/mem_internal.h"
#include "stream.h"

#define CHOICES_TRACKED 64u /* choice indexes whose finish_reason is tracked */
#define STREAM_BUFFER_START 4096u /* a few events; the buffers grow up to the cap */

struct hush__stream {
    hush_secbuf *text;      /* opened, not yet consumed */
    hush_secbuf *data;      /* the event being read: its data lines, each + \n */
    hush_v2_opener *opener; /* NULL until the answer's head arrived */
    size_t max_bytes;
    unsigned secmem_flags;
    bool bom_checked;       /* a leading U+FEFF is dropped, once */
    bool skip_lf;           /* the last line ended at a \r: a \n next is its end too */
    bool done;              /* `data: [DONE]` seen */
    uint64_t choices_seen, choices_finished;
    bool choices_untracked; /* an index past CHOICES_TRACKED: only [DONE] ends it */
    hush__chunk_queue ready;
};

/* ---- chunk queues -------------------------------------------------------- */

void hush__chunks_splice(hush__chunk_queue *q, hush__chunk_queue *more)
{
    if (more->head == NULL)
        return;
    if (q->tail != NULL)
        q->tail->next = more->head;
    else
        q->head = more->head;
    q->tail = more->tail;
    more->head = more->tail = NULL;
}

hush_json_doc *hush__chunks_pop(hush__chunk_queue *q)
{
    hush__chunk *c = q->head;
    if (c == NULL)
        return NULL;
    q->head = c->next;
    if (q->head == NULL)
        q->tail = NULL;
    hush_json_doc *doc = c->doc;
    free(c);
    return doc;
}

void hush__chunks_wipe(hush__chunk_queue *q)
{
    hush_json_doc *doc;
    while ((doc = hush__chunks_pop(q)) != NULL)
        hush_json_doc_free(doc);
}

/* ---- streams ------------------------------------------------------------- */

hush_status hush__stream_new(size_t max_bytes, unsigned secmem_flags, hush__stream **out,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__stream *s = NULL;
    *out = NULL;
    HUSH_ENSURE((s = calloc(1, sizeof *s)) != NULL, HUSH_E_NOMEM, "out of memory");
    s->max_bytes = max_bytes;
    s->secmem_flags = secmem_flags;
    size_t start = max_bytes < STREAM_BUFFER_START ? max_bytes : STREAM_BUFFER_START;
    HUSH_TRY(hush_secbuf_new(start, max_bytes, secmem_flags, &s->text, err));
    HUSH_TRY(hush_secbuf_new(start, max_bytes, secmem_flags, &s->data, err));
    *out = s;
    s = NULL;
cleanup:
    hush__stream_free(s);
    return status;
}

void hush__stream_free(hush__stream *s)
{
    if (s == NULL)
        return;
    hush_v2_opener_free(s->opener);
    hush_secbuf_free(s->text);
    hush_secbuf_free(s->data);
    hush__chunks_wipe(&s->ready);
    free(s);
}

hush_status hush__stream_begin(hush__stream *s, const hush_v2_exchange *ex,
                               const unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                               hush_error *err)
{
    hush_v2_limits limits = {.max_total_bytes = s->max_bytes};
    return hush_v2_response_opener_new(ex, nonce, &limits, s->text, &s->opener, err);
}

/* Which choices the chunk has seen and which of them finished. */
static void track_choices(hush__stream *s, const hush_json_value *root)
{
    const hush_json_value *choices = hush_json_object_get(root, "choices", 7);
    size_t n = hush_json_type_of(choices) == HUSH_JSON_ARRAY ? hush_json_length(choices) : 0;
    for (size_t i = 0; i < n; i++) {
        const hush_json_value *choice = hush_json_array_get(choices, i);
        int64_t index = (int64_t)i;
        const hush_json_value *given = hush_json_object_get(choice, "index", 5);
        if (given != NULL && hush_json_int64(given, &index, NULL) != HUSH_OK)
            index = -1;
        if (index < 0 || index >= (int64_t)CHOICES_TRACKED) {
            s->choices_untracked = true;
            continue;
        }
        uint64_t bit = UINT64_C(1) << index;
        s->choices_seen |= bit;
        if (hush_json_type_of(hush_json_object_get(choice, "finish_reason", 13)) !=
            HUSH_JSON_NULL)
            s->choices_finished |= bit;
    }
}

/* The event's data, parsed into a chunk of its own (or the end marker). */
HUSH_MUST_USE
static hush_status dispatch(hush__stream *s, hush_error *err)
{
    hush_status status = HUSH_OK;
    static const char done_marker[] = "[DONE]";
    hush_json_doc *doc = NULL;
    hush__chunk *chunk = NULL;
    size_t len = hush_secbuf_len(s->data);
    const unsigned char *text = hush_secbuf_bytes(s->data);
    if (len == 0 || s->done) /* no data field, or past the end: nothing to hand out */
        goto cleanup;
    len--; /* the last data line's \n */
    if (len == sizeof done_marker - 1 && memcmp(text, done_marker, len) == 0) {
        s->done = true;
        goto cleanup;
    }
    hush_json_limits limits = {.max_bytes = s->max_bytes};
    HUSH_TRY(hush_json_parse(text, len, &limits, s->secmem_flags | HUSH__SECMEM_SMALL, &doc,
                             err));
    HUSH_ENSURE(hush_json_type_of(hush_json_doc_root(doc)) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "a streamed event's data is not a JSON object");
    track_choices(s, hush_json_doc_root(doc));
    HUSH_ENSURE((chunk = calloc(1, sizeof *chunk)) != NULL, HUSH_E_NOMEM, "out of memory");
    chunk->doc = doc;
    doc = NULL;
    hush__chunk_queue one = {chunk, chunk};
    hush__chunks_splice(&s->ready, &one);
cleanup:
    hush_json_doc_free(doc);
    hush_secbuf_clear(s->data);
    return status;
}

/* One line of the event stream, without its end. */
HUSH_MUST_USE
static hush_status read_line(hush__stream *s, const unsigned char *line, size_t len,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    if (len == 0)
        return dispatch(s, err);
    if (line[0] == ':')
        return HUSH_OK; /* a comment */
    const unsigned char *colon = memchr(line, ':', len);
    size_t name_len = colon != NULL ? (size_t)(colon - line) : len;
    if (name_len != 4 || memcmp(line, "data", 4) != 0)
        return HUSH_OK; /* event, id, retry: nothing a chunk needs */
    const unsigned char *value = colon != NULL ? colon + 1 : line + len;
    size_t value_len = (size_t)(line + len - value);
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    HUSH_TRY(hush_secbuf_append(s->data, value, value_len, err));
    HUSH_TRY(hush_secbuf_append_byte(s->data, '\n', err));
cleanup:
    return status;
}

/* Where the line starting at `from` ends (its \r or \n), or `len`. */
static size_t line_end(const unsigned char *text, size_t from, size_t len)
{
    for (size_t i = from; i < len; i++)
        if (text[i] == '\n' || text[i] == '\r')
            return i;
    return len;
}

/* Read every complete line of the opened text, then wipe what was read. */
HUSH_MUST_USE
static hush_status cut_events(hush__stream *s, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *text = hush_secbuf_data(s->text);
    size_t len = hush_secbuf_len(s->text), pos = 0;
    if (!s->bom_checked && len >= 3) {
        if (memcmp(text, "\xEF\xBB\xBF", 3) == 0)
            pos = 3;
        s->bom_checked = true;
    }
    while (pos < len) {
        if (s->skip_lf) {
            s->skip_lf = false;
            if (text[pos] == '\n') {
                pos++;
                continue;
            }
        }
        size_t end = line_end(text, pos, len);
        if (end == len)
            break; /* the rest of this line is still on its way */
        HUSH_TRY(read_line(s, text + pos, end - pos, err));
        s->skip_lf = text[end] == '\r';
        pos = end + 1;
    }
cleanup:
    /* What was read goes: the rest moves to the front, the tail is zeroed. */
    memmove(text, text + pos, len - pos);
    HUSH_IGNORE(hush_secbuf_set_len(s->text, len - pos, NULL)); /* shrinking cannot fail */
    return status;
}

/* After a failure nothing more is handed out. */
static void wipe_all(hush__stream *s)
{
    hush_secbuf_clear(s->text);
    hush_secbuf_clear(s->data);
    hush__chunks_wipe(&s->ready);
}

hush_status hush__stream_feed(hush__stream *s, const void *data, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(s->opener != NULL, HUSH_E_INTERNAL, "a stream fed before it began");
    HUSH_TRY(hush_v2_opener_feed(s->opener, data, len, err));
    HUSH_TRY(cut_events(s, err));
cleanup:
    if (status != HUSH_OK)
        wipe_all(s);
    return status;
}

void hush__stream_take(hush__stream *s, hush__chunk_queue *q) { hush__chunks_splice(q, &s->ready); }

static bool every_choice_finished(const hush__stream *s)
{
    return !s->choices_untracked && s->choices_seen != 0 &&
           (s->choices_seen & ~s->choices_finished) == 0;
}

hush_status hush__stream_end(hush__stream *s, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_error inner;
    hush_error_clear(&inner);
    HUSH_ENSURE(s->opener != NULL, HUSH_E_INTERNAL, "a stream ended before it began");
    HUSH_ENSURE(hush_v2_opener_finish(s->opener, NULL, NULL, &inner) == HUSH_OK, HUSH_E_TRUNCATED,
                "the streamed answer ends inside a frame: it was cut short");
    /* An event not ended by a blank line is dropped, as WHATWG says. */
    HUSH_ENSURE(s->done || every_choice_finished(s), HUSH_E_TRUNCATED,
                "the streamed answer ended without its end (data: [DONE], or a finish_reason "
                "in every choice): it was cut short");
cleanup:
    hush_secbuf_clear(s->text);
    hush_secbuf_clear(s->data);
    return status;
}
