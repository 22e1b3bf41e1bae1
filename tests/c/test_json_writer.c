/* test_json_writer.c — the writer's structure checks, poisoning, escaping and
 * shortest doubles, compared byte for byte with what Python 3.11's json.dumps and
 * repr() print (hard-coded below), and parse -> write -> parse round trips. */
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* A marker that must never appear in an error message. */
#define MARKER "SECRETMARKER"

typedef struct fixture {
    hush_secbuf *buf;
    hush_json_writer *w;
    hush_error err;
} fixture;

static void open_writer(fixture *f, unsigned flags, unsigned max_depth)
{
    memset(f, 0, sizeof *f);
    CHECK_OK(hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &f->buf, &f->err), &f->err);
    CHECK_OK(hush_json_writer_new(f->buf, flags, max_depth, &f->w, &f->err), &f->err);
}

static void close_writer(fixture *f)
{
    hush_json_writer_free(f->w);
    hush_secbuf_free(f->buf);
}

static bool output_is_bytes(const fixture *f, const char *expected, size_t len)
{
    size_t got = hush_secbuf_len(f->buf);
    bool same = got == len && memcmp(hush_secbuf_data(f->buf), expected, len) == 0;
    if (!same)
        fprintf(stderr, "  wrote   %.*s\n  expected %.*s\n", (int)got,
                (const char *)hush_secbuf_data(f->buf), (int)len, expected);
    return same;
}

#define OUTPUT_IS(f, lit) output_is_bytes((f), (lit), sizeof(lit) - 1)
#define W(f, call) CHECK_OK(call, &(f)->err)

/* The message of a failed call must hold no content. */
static bool clean_message(const hush_error *err)
{
    return err->message[0] != '\0' && strstr(err->message, MARKER) == NULL;
}

/* ---- whole documents ---------------------------------------------------- */

/* json.dumps({"id": 12345, "name": "Zoë ☃ 😀", "tags": ["a", "b\"c", ""],
 *             "ok": True, "none": None, "ratio": 0.1, "big": 1e300, "neg": -0.0,
 *             "nested": {"empty_list": [], "empty_obj": {},
 *                        "deep": [[1, 2], {"k": "v"}]}}) */
static void write_sample(fixture *f)
{
    hush_json_writer *w = f->w;
    W(f, hush_json_write_object_begin(w, &f->err));
    W(f, hush_json_write_key(w, "id", 2, &f->err));
    W(f, hush_json_write_int64(w, 12345, &f->err));
    W(f, hush_json_write_key(w, "name", 4, &f->err));
    W(f, hush_json_write_string(w, "Zo\xC3\xAB \xE2\x98\x83 \xF0\x9F\x98\x80", 13, &f->err));
    W(f, hush_json_write_key(w, "tags", 4, &f->err));
    W(f, hush_json_write_array_begin(w, &f->err));
    W(f, hush_json_write_string(w, "a", 1, &f->err));
    W(f, hush_json_write_string(w, "b\"c", 3, &f->err));
    W(f, hush_json_write_string(w, "", 0, &f->err));
    W(f, hush_json_write_array_end(w, &f->err));
    W(f, hush_json_write_key(w, "ok", 2, &f->err));
    W(f, hush_json_write_bool(w, true, &f->err));
    W(f, hush_json_write_key(w, "none", 4, &f->err));
    W(f, hush_json_write_null(w, &f->err));
    W(f, hush_json_write_key(w, "ratio", 5, &f->err));
    W(f, hush_json_write_double(w, 0.1, &f->err));
    W(f, hush_json_write_key(w, "big", 3, &f->err));
    W(f, hush_json_write_double(w, 1e300, &f->err));
    W(f, hush_json_write_key(w, "neg", 3, &f->err));
    W(f, hush_json_write_double(w, -0.0, &f->err));
    W(f, hush_json_write_key(w, "nested", 6, &f->err));
    W(f, hush_json_write_object_begin(w, &f->err));
    W(f, hush_json_write_key(w, "empty_list", 10, &f->err));
    W(f, hush_json_write_array_begin(w, &f->err));
    W(f, hush_json_write_array_end(w, &f->err));
    W(f, hush_json_write_key(w, "empty_obj", 9, &f->err));
    W(f, hush_json_write_object_begin(w, &f->err));
    W(f, hush_json_write_object_end(w, &f->err));
    W(f, hush_json_write_key(w, "deep", 4, &f->err));
    W(f, hush_json_write_array_begin(w, &f->err));
    W(f, hush_json_write_array_begin(w, &f->err));
    W(f, hush_json_write_uint64(w, 1, &f->err));
    W(f, hush_json_write_int64(w, 2, &f->err));
    W(f, hush_json_write_array_end(w, &f->err));
    W(f, hush_json_write_object_begin(w, &f->err));
    W(f, hush_json_write_key(w, "k", 1, &f->err));
    W(f, hush_json_write_string(w, "v", 1, &f->err));
    W(f, hush_json_write_object_end(w, &f->err));
    W(f, hush_json_write_array_end(w, &f->err));
    W(f, hush_json_write_object_end(w, &f->err));
    CHECK(!hush_json_writer_complete(w));
    W(f, hush_json_write_object_end(w, &f->err));
    CHECK(hush_json_writer_complete(w));
}

static void test_python_mode_equals_json_dumps(void)
{
    fixture f;
    open_writer(&f, HUSH_JSON_WRITE_PYTHON, 0);
    write_sample(&f);
    CHECK(OUTPUT_IS(&f, "{\"id\": 12345, \"name\": \"Zo\\u00eb \\u2603 \\ud83d\\ude00\", "
                        "\"tags\": [\"a\", \"b\\\"c\", \"\"], \"ok\": true, \"none\": null, "
                        "\"ratio\": 0.1, \"big\": 1e+300, \"neg\": -0.0, \"nested\": "
                        "{\"empty_list\": [], \"empty_obj\": {}, \"deep\": [[1, 2], "
                        "{\"k\": \"v\"}]}}"));
    close_writer(&f);
}

static void test_spaced_equals_json_dumps_without_ensure_ascii(void)
{
    fixture f;
    open_writer(&f, HUSH_JSON_WRITE_SPACED, 0);
    write_sample(&f);
    CHECK(OUTPUT_IS(&f, "{\"id\": 12345, \"name\": \"Zo\xC3\xAB \xE2\x98\x83 \xF0\x9F\x98\x80\", "
                        "\"tags\": [\"a\", \"b\\\"c\", \"\"], \"ok\": true, \"none\": null, "
                        "\"ratio\": 0.1, \"big\": 1e+300, \"neg\": -0.0, \"nested\": "
                        "{\"empty_list\": [], \"empty_obj\": {}, \"deep\": [[1, 2], "
                        "{\"k\": \"v\"}]}}"));
    close_writer(&f);
}

static void test_compact_output(void)
{
    fixture f;
    open_writer(&f, HUSH_JSON_WRITE_COMPACT, 0);
    write_sample(&f);
    CHECK(OUTPUT_IS(&f, "{\"id\":12345,\"name\":\"Zo\xC3\xAB \xE2\x98\x83 \xF0\x9F\x98\x80\","
                        "\"tags\":[\"a\",\"b\\\"c\",\"\"],\"ok\":true,\"none\":null,"
                        "\"ratio\":0.1,\"big\":1e+300,\"neg\":-0.0,\"nested\":"
                        "{\"empty_list\":[],\"empty_obj\":{},\"deep\":[[1,2],{\"k\":\"v\"}]}}"));
    close_writer(&f);
}

static void test_scalar_documents(void)
{
    fixture f;
    open_writer(&f, 0, 0);
    CHECK(!hush_json_writer_complete(f.w));
    W(&f, hush_json_write_string(f.w, "x", 1, &f.err));
    CHECK(hush_json_writer_complete(f.w));
    CHECK(OUTPUT_IS(&f, "\"x\""));
    close_writer(&f);

    open_writer(&f, 0, 0);
    W(&f, hush_json_write_array_begin(f.w, &f.err));
    CHECK(!hush_json_writer_complete(f.w));
    W(&f, hush_json_write_array_end(f.w, &f.err));
    CHECK(hush_json_writer_complete(f.w));
    CHECK(OUTPUT_IS(&f, "[]"));
    close_writer(&f);
}

/* ---- escaping ----------------------------------------------------------- */

/* The quoted, escaped form of bytes 0x00..0x1F followed by " \ / as
 * json.dumps writes it; DEL comes after, escaped or not by mode. */
#define ESCAPED_CONTROLS                                                                  \
    "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r"    \
    "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019" \
    "\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\\"\\\\/"

static void test_escaping_table(void)
{
    char all[0x20 + 4];
    for (int i = 0; i < 0x20; i++)
        all[i] = (char)i;
    memcpy(all + 0x20, "\"\\/\x7F", 4);
    fixture f;

    /* json.dumps(s, ensure_ascii=False): DEL stays as it is. */
    open_writer(&f, 0, 0);
    W(&f, hush_json_write_string(f.w, all, sizeof all, &f.err));
    CHECK(OUTPUT_IS(&f, ESCAPED_CONTROLS "\x7F\""));
    close_writer(&f);

    /* json.dumps(s): DEL is escaped too. */
    open_writer(&f, HUSH_JSON_WRITE_ASCII, 0);
    W(&f, hush_json_write_string(f.w, all, sizeof all, &f.err));
    CHECK(OUTPUT_IS(&f, ESCAPED_CONTROLS "\\u007f\""));
    close_writer(&f);
}

static void test_ascii_mode_uses_surrogate_pairs(void)
{
    /* json.dumps("\u00e9\u0800\uffff\U00010000\U0010FFFF\x7f~") */
    static const char text[] = "\xC3\xA9\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80"
                               "\xF4\x8F\xBF\xBF\x7F~";
    fixture f;
    open_writer(&f, HUSH_JSON_WRITE_ASCII, 0);
    W(&f, hush_json_write_array_begin(f.w, &f.err));
    W(&f, hush_json_write_string(f.w, text, sizeof text - 1, &f.err));
    W(&f, hush_json_write_string(f.w, "a\0b", 3, &f.err));
    W(&f, hush_json_write_array_end(f.w, &f.err));
    CHECK(OUTPUT_IS(&f, "[\"\\u00e9\\u0800\\uffff\\ud800\\udc00\\udbff\\udfff\\u007f~\","
                        "\"a\\u0000b\"]"));
    close_writer(&f);
}

static void expect_utf8_refused(const char *bytes, size_t len, bool as_key)
{
    fixture f;
    open_writer(&f, 0, 0);
    if (as_key) {
        W(&f, hush_json_write_object_begin(f.w, &f.err));
        CHECK_STATUS(hush_json_write_key(f.w, bytes, len, &f.err), HUSH_E_ARGUMENT, &f.err);
    } else {
        CHECK_STATUS(hush_json_write_string(f.w, bytes, len, &f.err), HUSH_E_ARGUMENT, &f.err);
    }
    CHECK(strstr(f.err.message, "invalid UTF-8") != NULL);
    CHECK(clean_message(&f.err));
    CHECK(!hush_json_writer_complete(f.w));
    close_writer(&f);
}

#define REFUSED(lit, as_key) expect_utf8_refused((lit), sizeof(lit) - 1, (as_key))

static void test_invalid_utf8_refused(void)
{
    REFUSED(MARKER "\xC0\x80", false);              /* overlong */
    REFUSED(MARKER "\xE0\x80\xAF", false);          /* overlong 3-byte */
    REFUSED(MARKER "\xED\xA0\x80", false);          /* encoded surrogate */
    REFUSED(MARKER "\xF4\x90\x80\x80", false);      /* past U+10FFFF */
    REFUSED(MARKER "\xF5\x80\x80\x80", false);
    REFUSED(MARKER "\xE2\x82", false);              /* truncated */
    REFUSED(MARKER "\x80" MARKER, false);           /* stray continuation */
    REFUSED(MARKER "\xC3", true);
    REFUSED("\xFF" MARKER, true);
}

/* ---- structure and poisoning -------------------------------------------- */

typedef enum step { BEGIN_OBJECT, END_OBJECT, BEGIN_ARRAY, END_ARRAY, KEY, VALUE } step;

static hush_status run_step(hush_json_writer *w, step s, hush_error *err)
{
    switch (s) {
    case BEGIN_OBJECT: return hush_json_write_object_begin(w, err);
    case END_OBJECT: return hush_json_write_object_end(w, err);
    case BEGIN_ARRAY: return hush_json_write_array_begin(w, err);
    case END_ARRAY: return hush_json_write_array_end(w, err);
    case KEY: return hush_json_write_key(w, "k", 1, err);
    case VALUE: return hush_json_write_int64(w, 1, err);
    }
    return HUSH_E_INTERNAL;
}

/* Every step but the last succeeds; the last fails with HUSH_E_ARGUMENT. */
static bool misuse_refused(const step *steps, size_t count)
{
    fixture f;
    bool ok = true;
    open_writer(&f, 0, 0);
    for (size_t i = 0; i + 1 < count; i++)
        ok &= run_step(f.w, steps[i], &f.err) == HUSH_OK;
    ok &= run_step(f.w, steps[count - 1], &f.err) == HUSH_E_ARGUMENT;
    ok &= f.err.code == HUSH_E_ARGUMENT && clean_message(&f.err);
    ok &= !hush_json_writer_complete(f.w);
    if (!ok)
        fprintf(stderr, "  misuse sequence of %zu steps: %s\n", count, f.err.message);
    close_writer(&f);
    return ok;
}

#define MISUSE(...) \
    misuse_refused((const step[]){__VA_ARGS__}, sizeof((const step[]){__VA_ARGS__}) / sizeof(step))

static void test_structure_misuse(void)
{
    CHECK(MISUSE(KEY));                                   /* key outside an object */
    CHECK(MISUSE(BEGIN_ARRAY, KEY));                      /* key in an array */
    CHECK(MISUSE(BEGIN_OBJECT, VALUE));                   /* value without a key */
    CHECK(MISUSE(BEGIN_OBJECT, KEY, VALUE, VALUE));       /* second value for one key */
    CHECK(MISUSE(BEGIN_OBJECT, KEY, KEY));                /* key after key */
    CHECK(MISUSE(BEGIN_OBJECT, KEY, END_OBJECT));         /* key left without a value */
    CHECK(MISUSE(BEGIN_OBJECT, BEGIN_ARRAY));             /* container without a key */
    CHECK(MISUSE(END_OBJECT));                            /* end without begin */
    CHECK(MISUSE(END_ARRAY));
    CHECK(MISUSE(BEGIN_OBJECT, END_ARRAY));               /* mismatched end */
    CHECK(MISUSE(BEGIN_ARRAY, END_OBJECT));
    CHECK(MISUSE(BEGIN_ARRAY, END_ARRAY, END_ARRAY));     /* unbalanced */
    CHECK(MISUSE(VALUE, VALUE));                          /* two top-level values */
    CHECK(MISUSE(BEGIN_OBJECT, END_OBJECT, BEGIN_ARRAY));
    CHECK(MISUSE(BEGIN_ARRAY, END_ARRAY, KEY));
}

static void test_poisoning(void)
{
    fixture f;
    hush_error later;
    open_writer(&f, 0, 0);
    W(&f, hush_json_write_object_begin(f.w, &f.err));
    /* The first failure, with no error out-parameter at all. */
    CHECK_STATUS(hush_json_write_int64(f.w, 1, NULL), HUSH_E_ARGUMENT, NULL);
    size_t len = hush_secbuf_len(f.buf);

    /* Calls that would be valid now all report that first failure. */
    hush_error_clear(&later);
    CHECK_STATUS(hush_json_write_key(f.w, "k", 1, &later), HUSH_E_ARGUMENT, &later);
    CHECK(strstr(later.message, "key") != NULL);
    char first_message[HUSH_ERROR_MESSAGE_MAX];
    memcpy(first_message, later.message, sizeof first_message);
    CHECK_STATUS(hush_json_write_string(f.w, "v", 1, &later), HUSH_E_ARGUMENT, &later);
    CHECK(strcmp(later.message, first_message) == 0);
    CHECK_STATUS(hush_json_write_object_end(f.w, &later), HUSH_E_ARGUMENT, &later);
    CHECK_STATUS(hush_json_write_double(f.w, NAN, &later), HUSH_E_ARGUMENT, &later);
    CHECK(strcmp(later.message, first_message) == 0);
    CHECK_STATUS(hush_json_write_value(f.w, NULL, &later), HUSH_E_ARGUMENT, &later);
    CHECK_EQ(hush_secbuf_len(f.buf), len); /* nothing more was written */
    CHECK(!hush_json_writer_complete(f.w));
    close_writer(&f);

    /* A limit failure poisons with its own status. */
    hush_secbuf *small = NULL;
    hush_json_writer *w = NULL;
    CHECK_OK(hush_secbuf_new(4, 8, HUSH_SECMEM_DEFAULT, &small, &later), &later);
    CHECK_OK(hush_json_writer_new(small, 0, 0, &w, &later), &later);
    CHECK_STATUS(hush_json_write_string(w, MARKER, strlen(MARKER), &later), HUSH_E_LIMIT,
                 &later);
    CHECK(clean_message(&later));
    CHECK_STATUS(hush_json_write_null(w, &later), HUSH_E_LIMIT, &later);
    CHECK(!hush_json_writer_complete(w));
    hush_json_writer_free(w);
    hush_secbuf_free(small);
}

static void test_depth_limit(void)
{
    fixture f;
    open_writer(&f, 0, 2);
    W(&f, hush_json_write_array_begin(f.w, &f.err));
    W(&f, hush_json_write_array_begin(f.w, &f.err));
    CHECK_STATUS(hush_json_write_object_begin(f.w, &f.err), HUSH_E_LIMIT, &f.err);
    CHECK_STATUS(hush_json_write_array_end(f.w, &f.err), HUSH_E_LIMIT, &f.err);
    close_writer(&f);

    open_writer(&f, 0, 0);
    for (unsigned i = 0; i < HUSH_JSON_DEFAULT_MAX_DEPTH; i++)
        CHECK_OK(hush_json_write_array_begin(f.w, &f.err), &f.err);
    CHECK_STATUS(hush_json_write_array_begin(f.w, &f.err), HUSH_E_LIMIT, &f.err);
    close_writer(&f);
}

static void test_writer_arguments(void)
{
    hush_secbuf *buf = NULL;
    hush_json_writer *w = NULL;
    hush_error err;

    CHECK_OK(hush_secbuf_new(16, 0, HUSH_SECMEM_DEFAULT, &buf, &err), &err);
    CHECK_STATUS(hush_json_writer_new(NULL, 0, 0, &w, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_json_writer_new(buf, 0, 0, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_json_writer_new(buf, 4, 0, &w, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_json_writer_new(buf, 0, HUSH_JSON_MAX_DEPTH_LIMIT + 1, &w, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK(w == NULL);
    CHECK_OK(hush_json_writer_new(buf, 0, HUSH_JSON_MAX_DEPTH_LIMIT, &w, &err), &err);
    CHECK_STATUS(hush_json_write_string(w, NULL, 1, &err), HUSH_E_ARGUMENT, &err);
    hush_json_writer_free(w);

    CHECK_STATUS(hush_json_write_null(NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK(!hush_json_writer_complete(NULL));
    hush_json_writer_free(NULL);
    hush_secbuf_free(buf);
}

/* ---- numbers ------------------------------------------------------------ */

static void test_integers(void)
{
    fixture f;
    open_writer(&f, 0, 0);
    W(&f, hush_json_write_array_begin(f.w, &f.err));
    W(&f, hush_json_write_int64(f.w, INT64_MIN, &f.err));
    W(&f, hush_json_write_int64(f.w, INT64_MAX, &f.err));
    W(&f, hush_json_write_uint64(f.w, UINT64_MAX, &f.err));
    W(&f, hush_json_write_int64(f.w, 0, &f.err));
    W(&f, hush_json_write_int64(f.w, -1, &f.err));
    W(&f, hush_json_write_uint64(f.w, 10, &f.err));
    W(&f, hush_json_write_array_end(f.w, &f.err));
    CHECK(OUTPUT_IS(&f, "[-9223372036854775808,9223372036854775807,18446744073709551615,0,-1,"
                        "10]"));
    close_writer(&f);
}

static bool double_written_as(double v, const char *expected)
{
    fixture f;
    open_writer(&f, 0, 0);
    bool ok = hush_json_write_double(f.w, v, &f.err) == HUSH_OK &&
              output_is_bytes(&f, expected, strlen(expected));
    close_writer(&f);
    return ok;
}

static void test_shortest_doubles_match_python_repr(void)
{
    CHECK(double_written_as(0.1, "0.1"));
    CHECK(double_written_as(1.0, "1.0"));
    CHECK(double_written_as(0.0, "0.0"));
    CHECK(double_written_as(-0.0, "-0.0"));
    CHECK(double_written_as(0.5, "0.5"));
    CHECK(double_written_as(-2.5, "-2.5"));
    CHECK(double_written_as(1e300, "1e+300"));
    CHECK(double_written_as(5e-324, "5e-324"));
    CHECK(double_written_as(123456789012345680.0, "1.2345678901234568e+17"));
    CHECK(double_written_as(1e16, "1e+16"));
    CHECK(double_written_as(1e15, "1000000000000000.0"));
    CHECK(double_written_as(100000.0, "100000.0"));
    CHECK(double_written_as(1e-5, "1e-05"));
    CHECK(double_written_as(0.0001, "0.0001"));
    CHECK(double_written_as(2.5e-7, "2.5e-07"));
    CHECK(double_written_as(1.7976931348623157e308, "1.7976931348623157e+308"));
    CHECK(double_written_as(2.2250738585072014e-308, "2.2250738585072014e-308"));
    CHECK(double_written_as(2.0 / 3.0, "0.6666666666666666"));
    CHECK(double_written_as(0.1 + 0.2, "0.30000000000000004"));
    CHECK(double_written_as(-1.5e-10, "-1.5e-10"));
    CHECK(double_written_as(9007199254740993.0, "9007199254740992.0"));
    CHECK(double_written_as(1e22, "1e+22"));
    CHECK(double_written_as(1e23, "1e+23"));
    /* A power of two whose closest short decimal lies below it, outside
     * its narrower lower rounding interval: Python picks the one above. */
    CHECK(double_written_as(0x1p-1017, "7.120236347223045e-307"));
}

static void test_non_finite_doubles_refused(void)
{
    static const double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        fixture f;
        open_writer(&f, 0, 0);
        CHECK_STATUS(hush_json_write_double(f.w, bad[i], &f.err), HUSH_E_ARGUMENT, &f.err);
        CHECK_EQ(hush_secbuf_len(f.buf), 0);
        CHECK(!hush_json_writer_complete(f.w));
        close_writer(&f);
    }
}

static void test_doubles_ignore_process_locale(void)
{
    bool comma = check_use_comma_locale();
    CHECK(double_written_as(1.5, "1.5"));
    CHECK(double_written_as(-0.001, "-0.001"));
    CHECK(double_written_as(6.02214076e23, "6.02214076e+23"));
    if (comma)
        CHECK(strcmp(localeconv()->decimal_point, ",") == 0); /* and it is restored */
    setlocale(LC_ALL, "C");
}

static bool number_text_result(const char *text, hush_status code)
{
    fixture f;
    open_writer(&f, 0, 0);
    hush_status status = hush_json_write_number_text(f.w, text, strlen(text), &f.err);
    bool ok = status == code &&
              (code != HUSH_OK || output_is_bytes(&f, text, strlen(text))) &&
              (code == HUSH_OK || clean_message(&f.err));
    if (!ok)
        fprintf(stderr, "  number text of %zu bytes: %s\n", strlen(text), hush_strerror(status));
    close_writer(&f);
    return ok;
}

static void test_number_text(void)
{
    static const char *const valid[] = {"0", "-0", "1.5e-3", "1E+2", "0.0",
                                        "123456789012345678901234567890"};
    static const char *const invalid[] = {"", "01", "-01", "+1", ".5", "1.", "1e", "1e+",
                                          "-", "0x1", "NaN", "Infinity", "1 ", " 1", "1,2",
                                          MARKER};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
        CHECK(number_text_result(valid[i], HUSH_OK));
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        CHECK(number_text_result(invalid[i], HUSH_E_ARGUMENT));

    fixture f;
    open_writer(&f, 0, 0);
    CHECK_STATUS(hush_json_write_number_text(f.w, NULL, 1, &f.err), HUSH_E_ARGUMENT, &f.err);
    close_writer(&f);
}

/* ---- DOM subtrees and round trips --------------------------------------- */

static hush_json_doc *parse_bytes(const void *text, size_t len)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_OK(hush_json_parse(text, len, NULL, HUSH_SECMEM_DEFAULT, &doc, &err), &err);
    return doc;
}

static void test_round_trip(void)
{
    static const char input[] =
        "{\"b\": [1E+2, -0.0, 12345678901234567890123, {\"x\": \"\\u00e9\\/\\n\\ud83d\\ude00\"}],"
        " \"a\": {}, \"c\": [[]], \"d\": \"\", \"e\": true, \"f\": null, \"\\u0000\": 0}";
    static const char compact[] =
        "{\"b\":[1E+2,-0.0,12345678901234567890123,{\"x\":\"\xC3\xA9/\\n\xF0\x9F\x98\x80\"}],"
        "\"a\":{},\"c\":[[]],\"d\":\"\",\"e\":true,\"f\":null,\"\\u0000\":0}";
    hush_json_doc *first = parse_bytes(input, sizeof input - 1);
    fixture once, twice, python;

    open_writer(&once, 0, 0);
    W(&once, hush_json_write_value(once.w, hush_json_doc_root(first), &once.err));
    CHECK(hush_json_writer_complete(once.w));
    CHECK(OUTPUT_IS(&once, compact)); /* member order and number text kept */

    hush_json_doc *second = parse_bytes(hush_secbuf_data(once.buf), hush_secbuf_len(once.buf));
    open_writer(&twice, 0, 0);
    W(&twice, hush_json_write_value(twice.w, hush_json_doc_root(second), &twice.err));
    CHECK(output_is_bytes(&twice, (const char *)hush_secbuf_data(once.buf),
                          hush_secbuf_len(once.buf)));

    open_writer(&python, HUSH_JSON_WRITE_PYTHON, 0);
    W(&python, hush_json_write_value(python.w, hush_json_doc_root(second), &python.err));
    CHECK(OUTPUT_IS(&python, "{\"b\": [1E+2, -0.0, 12345678901234567890123, "
                             "{\"x\": \"\\u00e9/\\n\\ud83d\\ude00\"}], \"a\": {}, \"c\": [[]], "
                             "\"d\": \"\", \"e\": true, \"f\": null, \"\\u0000\": 0}"));

    close_writer(&once);
    close_writer(&twice);
    close_writer(&python);
    hush_json_doc_free(first);
    hush_json_doc_free(second);
}

static void test_write_value_as_a_member(void)
{
    hush_json_doc *doc = parse_bytes("[1,{\"k\":\"v\"}]", 13);
    fixture f;
    open_writer(&f, HUSH_JSON_WRITE_SPACED, 0);
    W(&f, hush_json_write_object_begin(f.w, &f.err));
    W(&f, hush_json_write_key(f.w, "doc", 3, &f.err));
    W(&f, hush_json_write_value(f.w, hush_json_doc_root(doc), &f.err));
    W(&f, hush_json_write_key(f.w, "second", 6, &f.err));
    W(&f, hush_json_write_value(f.w, hush_json_array_get(hush_json_doc_root(doc), 1), &f.err));
    W(&f, hush_json_write_object_end(f.w, &f.err));
    CHECK(OUTPUT_IS(&f, "{\"doc\": [1, {\"k\": \"v\"}], \"second\": {\"k\": \"v\"}}"));
    close_writer(&f);

    /* A subtree deeper than the writer allows is refused. */
    open_writer(&f, 0, 1);
    CHECK_STATUS(hush_json_write_value(f.w, hush_json_doc_root(doc), &f.err), HUSH_E_LIMIT,
                 &f.err);
    close_writer(&f);
    hush_json_doc_free(doc);
}

int main(void)
{
    RUN_TEST(test_python_mode_equals_json_dumps);
    RUN_TEST(test_spaced_equals_json_dumps_without_ensure_ascii);
    RUN_TEST(test_compact_output);
    RUN_TEST(test_scalar_documents);
    RUN_TEST(test_escaping_table);
    RUN_TEST(test_ascii_mode_uses_surrogate_pairs);
    RUN_TEST(test_invalid_utf8_refused);
    RUN_TEST(test_structure_misuse);
    RUN_TEST(test_poisoning);
    RUN_TEST(test_depth_limit);
    RUN_TEST(test_writer_arguments);
    RUN_TEST(test_integers);
    RUN_TEST(test_shortest_doubles_match_python_repr);
    RUN_TEST(test_non_finite_doubles_refused);
    RUN_TEST(test_doubles_ignore_process_locale);
    RUN_TEST(test_number_text);
    RUN_TEST(test_round_trip);
    RUN_TEST(test_write_value_as_a_member);
    return check_report();
}
