/* fuzz_json.c — libFuzzer target for the JSON parser and writer: whatever parses
 * must serialize, reparse and serialize to the same bytes (compact and Python
 * style alike) and find every member again by key. Any disagreement aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/hushcall.h"

#define FUZZ_MAX_BYTES (64u * 1024u)
#define FUZZ_MAX_DEPTH 32u

static const hush_json_limits limits = {FUZZ_MAX_BYTES, FUZZ_MAX_DEPTH};

/* Serialize `root` into a fresh buffer; a valid DOM must always serialize. */
static hush_secbuf *serialize(const hush_json_value *root, unsigned flags)
{
    hush_secbuf *buf = NULL;
    hush_json_writer *w = NULL;
    if (hush_secbuf_new(256, 0, HUSH_SECMEM_NO_LOCK, &buf, NULL) != HUSH_OK)
        abort();
    if (hush_json_writer_new(buf, flags, FUZZ_MAX_DEPTH, &w, NULL) != HUSH_OK ||
        hush_json_write_value(w, root, NULL) != HUSH_OK || !hush_json_writer_complete(w))
        abort();
    hush_json_writer_free(w);
    return buf;
}

static hush_json_doc *reparse(const hush_secbuf *buf)
{
    hush_json_doc *doc = NULL;
    if (hush_json_parse(hush_secbuf_bytes(buf), hush_secbuf_len(buf), NULL, HUSH_SECMEM_NO_LOCK,
                        &doc, NULL) != HUSH_OK)
        abort();
    return doc;
}

static void require_same(const hush_secbuf *a, const hush_secbuf *b)
{
    if (hush_secbuf_len(a) != hush_secbuf_len(b) ||
        memcmp(hush_secbuf_bytes(a), hush_secbuf_bytes(b), hush_secbuf_len(a)) != 0)
        abort();
}

/* Every member of every object is found by its key; numbers convert or
 * fail cleanly. */
static void check_lookups(const hush_json_value *v)
{
    const char *key;
    size_t key_len;
    const hush_json_value *member;
    int64_t i;
    double d;

    for (size_t n = 0; hush_json_object_member(v, n, &key, &key_len, &member); n++) {
        if (hush_json_object_get(v, key, key_len) != member)
            abort();
        check_lookups(member);
    }
    for (size_t n = 0; n < hush_json_length(v); n++)
        check_lookups(hush_json_array_get(v, n));
    if (hush_json_type_of(v) == HUSH_JSON_NUMBER) {
        hush_status s = hush_json_int64(v, &i, NULL);
        if (s != HUSH_OK && s != HUSH_E_TYPE && s != HUSH_E_LIMIT)
            abort();
        s = hush_json_double(v, &d, NULL);
        if (s != HUSH_OK && s != HUSH_E_LIMIT)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); /* called by libFuzzer */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    if (hush_json_parse(data, size, &limits, HUSH_SECMEM_NO_LOCK, &doc, &err) != HUSH_OK) {
        /* A parse error always points inside the input, or just past it. */
        if (err.code != HUSH_E_JSON && err.code != HUSH_E_LIMIT && err.code != HUSH_E_NOMEM)
            abort();
        if (err.code == HUSH_E_JSON && (err.offset < 0 || (uint64_t)err.offset > size))
            abort();
        return 0;
    }
    check_lookups(hush_json_doc_root(doc));

    hush_secbuf *first = serialize(hush_json_doc_root(doc), HUSH_JSON_WRITE_COMPACT);
    hush_json_doc *again = reparse(first);
    hush_secbuf *second = serialize(hush_json_doc_root(again), HUSH_JSON_WRITE_COMPACT);
    require_same(first, second);

    /* Python style escapes differently; it must still mean the same. */
    hush_secbuf *python = serialize(hush_json_doc_root(doc), HUSH_JSON_WRITE_PYTHON);
    hush_json_doc *from_python = reparse(python);
    hush_secbuf *third = serialize(hush_json_doc_root(from_python), HUSH_JSON_WRITE_COMPACT);
    require_same(first, third);

    hush_secbuf_free(third);
    hush_json_doc_free(from_python);
    hush_secbuf_free(python);
    hush_secbuf_free(second);
    hush_json_doc_free(again);
    hush_secbuf_free(first);
    hush_json_doc_free(doc);
    return 0;
}
