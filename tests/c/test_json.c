/* test_json.c — the strict parser: every value type, the DOM accessors, and each
 * class of malformed input at the offset it must be reported. Inputs are copied
 * to exact-size heap buffers so AddressSanitizer catches any over-read. */
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "memscan.h"

/* A marker that must never appear in an error message. */
#define MARKER "SECRETMARKER"

static hush_status parse_copy(const char *text, size_t len, const hush_json_limits *limits,
                              hush_json_doc **doc, hush_error *err)
{
    char *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        return HUSH_E_NOMEM;
    if (len > 0)
        memcpy(copy, text, len);
    hush_error_clear(err);
    hush_status status = hush_json_parse(copy, len, limits, HUSH_SECMEM_DEFAULT, doc, err);
    free(copy);
    return status;
}

/* Parse and expect failure `code` at `offset`, with no content in the message. */
static bool fails_at_with(const char *text, size_t len, const hush_json_limits *limits,
                          hush_status code, int64_t offset)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_status status = parse_copy(text, len, limits, &doc, &err);
    bool ok = status == code && err.code == code && err.offset == offset && doc == NULL &&
              err.message[0] != '\0' && strstr(err.message, MARKER) == NULL;
    if (!ok)
        fprintf(stderr, "  %zu-byte input: got %s at %lld (%s); expected %s at %lld\n", len,
                hush_strerror(status), (long long)err.offset, err.message, hush_strerror(code),
                (long long)offset);
    hush_json_doc_free(doc);
    return ok;
}

#define FAILS_AT(lit, code, offset) fails_at_with((lit), sizeof(lit) - 1, NULL, (code), (offset))
#define JSON_ERROR_AT(lit, offset) FAILS_AT(lit, HUSH_E_JSON, offset)

static bool parses_with(const char *text, size_t len, const hush_json_limits *limits)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_status status = parse_copy(text, len, limits, &doc, &err);
    if (status != HUSH_OK)
        fprintf(stderr, "  %zu-byte input rejected at %lld: %s\n", len, (long long)err.offset,
                err.message);
    hush_json_doc_free(doc);
    return status == HUSH_OK;
}

#define PARSES(lit) parses_with((lit), sizeof(lit) - 1, NULL)

/* A document from a literal; NULL (and a failed check) when it does not parse. */
static hush_json_doc *parse_ok(const char *text)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    CHECK_OK(parse_copy(text, strlen(text), NULL, &doc, &err), &err);
    return doc;
}

static bool string_is(const hush_json_value *v, const char *expected, size_t expected_len)
{
    size_t len = 0;
    const char *s = hush_json_string(v, &len);
    return s != NULL && len == expected_len && memcmp(s, expected, len) == 0 && s[len] == '\0';
}

#define STRING_IS(v, lit) string_is((v), (lit), sizeof(lit) - 1)

static const hush_json_value *get(const hush_json_value *object, const char *key)
{
    return hush_json_object_get(object, key, strlen(key));
}

/* ---- values and accessors ----------------------------------------------- */

static void test_every_value_type(void)
{
    hush_json_doc *doc = parse_ok("{\"n\":null,\"t\":true,\"f\":false,\"i\":42,\"d\":-1.5e3,"
                                  "\"s\":\"hi\",\"a\":[1,\"two\",[]],\"o\":{}}");
    const hush_json_value *root = hush_json_doc_root(doc);
    size_t len = 0;

    CHECK(hush_json_doc_arena(doc) != NULL);
    CHECK_EQ(hush_json_type_of(root), HUSH_JSON_OBJECT);
    CHECK_EQ(hush_json_length(root), 8);
    CHECK_EQ(hush_json_type_of(get(root, "n")), HUSH_JSON_NULL);
    CHECK_EQ(hush_json_type_of(get(root, "t")), HUSH_JSON_BOOL);
    CHECK(hush_json_bool(get(root, "t")));
    CHECK(!hush_json_bool(get(root, "f")));
    CHECK(!hush_json_bool(get(root, "n")));
    CHECK_EQ(hush_json_type_of(get(root, "i")), HUSH_JSON_NUMBER);
    CHECK(hush_json_is_integer(get(root, "i")));
    CHECK(!hush_json_is_integer(get(root, "d")));
    const char *text = hush_json_number_text(get(root, "d"), &len);
    CHECK(text != NULL && len == 6 && strcmp(text, "-1.5e3") == 0);
    CHECK(STRING_IS(get(root, "s"), "hi"));
    const hush_json_value *a = get(root, "a");
    CHECK_EQ(hush_json_type_of(a), HUSH_JSON_ARRAY);
    CHECK_EQ(hush_json_length(a), 3);
    CHECK(STRING_IS(hush_json_array_get(a, 1), "two"));
    CHECK_EQ(hush_json_length(hush_json_array_get(a, 2)), 0);
    CHECK(hush_json_array_get(a, 3) == NULL);
    CHECK_EQ(hush_json_type_of(get(root, "o")), HUSH_JSON_OBJECT);
    CHECK_EQ(hush_json_length(get(root, "o")), 0);
    CHECK(get(get(root, "o"), "x") == NULL);
    CHECK(get(root, "missing") == NULL);
    hush_json_doc_free(doc);

    /* Scalars are documents too. */
    CHECK(PARSES("\"only a string\""));
    CHECK(PARSES("  -0.0e-0  "));
    CHECK(PARSES("null"));
}

static void test_type_names(void)
{
    CHECK(strcmp(hush_json_type_name(HUSH_JSON_NULL), "null") == 0);
    CHECK(strcmp(hush_json_type_name(HUSH_JSON_BOOL), "boolean") == 0);
    CHECK(strcmp(hush_json_type_name(HUSH_JSON_NUMBER), "number") == 0);
    CHECK(strcmp(hush_json_type_name(HUSH_JSON_STRING), "string") == 0);
    CHECK(strcmp(hush_json_type_name(HUSH_JSON_ARRAY), "array") == 0);
    CHECK(strcmp(hush_json_type_name(HUSH_JSON_OBJECT), "object") == 0);
}

static void test_accessors_on_wrong_types_and_null(void)
{
    hush_json_doc *doc = parse_ok("[\"s\", 1, {\"k\": 2}]");
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *s = hush_json_array_get(root, 0);
    const hush_json_value *n = hush_json_array_get(root, 1);
    const char *key = NULL;
    size_t len = 99;
    int64_t i = 7;
    double d = 7;
    hush_error err;

    CHECK(hush_json_string(n, &len) == NULL);
    CHECK(hush_json_number_text(s, &len) == NULL);
    CHECK(hush_json_array_get(s, 0) == NULL);
    CHECK(get(root, "k") == NULL); /* an array is not an object */
    CHECK_EQ(hush_json_length(s), 0);
    CHECK(!hush_json_object_member(root, 0, &key, &len, NULL));
    CHECK(!hush_json_object_member(hush_json_array_get(root, 2), 1, &key, &len, NULL));
    CHECK(hush_json_object_member(hush_json_array_get(root, 2), 0, &key, &len, NULL));
    CHECK(len == 1 && strcmp(key, "k") == 0);
    CHECK_STATUS(hush_json_int64(s, &i, &err), HUSH_E_TYPE, &err);
    CHECK_STATUS(hush_json_double(s, &d, &err), HUSH_E_TYPE, &err);
    CHECK_EQ(i, 7);

    /* NULL answers as a value of the wrong type, so lookups chain safely. */
    CHECK(hush_json_string(NULL, &len) == NULL);
    CHECK(hush_json_array_get(NULL, 0) == NULL);
    CHECK(get(NULL, "k") == NULL);
    CHECK(get(get(root, "a"), "b") == NULL);
    CHECK_EQ(hush_json_length(NULL), 0);
    CHECK(!hush_json_bool(NULL));
    CHECK(!hush_json_is_integer(NULL));
    CHECK(hush_json_doc_root(NULL) == NULL);
    CHECK_STATUS(hush_json_int64(NULL, &i, &err), HUSH_E_TYPE, &err);
    hush_json_doc_free(NULL);
    hush_json_doc_free(doc);
}

static void test_key_order_is_kept(void)
{
    static const char *const order[] = {"zebra", "apple", "mango", "", "banana"};
    hush_json_doc *doc = parse_ok("{\"zebra\":0,\"apple\":1,\"mango\":2,\"\":3,\"banana\":4}");
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *value;
    const char *key;
    size_t key_len;
    int64_t n;

    for (size_t i = 0; i < 5; i++) {
        CHECK(hush_json_object_member(root, i, &key, &key_len, &value));
        CHECK(key_len == strlen(order[i]) && strcmp(key, order[i]) == 0);
        CHECK_OK(hush_json_int64(value, &n, NULL), NULL);
        CHECK_EQ(n, (int64_t)i);
        CHECK(get(root, order[i]) == value);
    }
    CHECK(!hush_json_object_member(root, 5, &key, &key_len, &value));
    CHECK(hush_json_object_get(root, NULL, 0) == get(root, ""));
    hush_json_doc_free(doc);
}

static void test_nested_access_and_typed_lookup(void)
{
    hush_json_doc *doc = parse_ok("{\"data\":{\"items\":[{\"id\":7,\"token\":\"" MARKER
                                  "\"}]},\"count\":1}");
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *data = NULL, *items = NULL, *token = NULL;
    hush_error err;
    int64_t id = 0;

    CHECK_OK(hush_json_object_get_typed(root, "data", HUSH_JSON_OBJECT, &data, &err), &err);
    CHECK_OK(hush_json_object_get_typed(data, "items", HUSH_JSON_ARRAY, &items, &err), &err);
    const hush_json_value *first = hush_json_array_get(items, 0);
    CHECK_OK(hush_json_int64(get(first, "id"), &id, &err), &err);
    CHECK_EQ(id, 7);

    /* Errors name the key and the types, never the value. */
    CHECK_STATUS(hush_json_object_get_typed(first, "token", HUSH_JSON_NUMBER, &token, &err),
                 HUSH_E_TYPE, &err);
    CHECK(token == NULL);
    CHECK(strstr(err.message, "token") != NULL);
    CHECK(strstr(err.message, "number") != NULL && strstr(err.message, "string") != NULL);
    CHECK(strstr(err.message, MARKER) == NULL);
    CHECK_STATUS(hush_json_object_get_typed(first, "absent", HUSH_JSON_STRING, &token, &err),
                 HUSH_E_NOT_FOUND, &err);
    CHECK(strstr(err.message, "absent") != NULL);
    CHECK_STATUS(hush_json_object_get_typed(items, "id", HUSH_JSON_NUMBER, &token, &err),
                 HUSH_E_TYPE, &err);
    CHECK(strstr(err.message, "array") != NULL);
    CHECK_STATUS(hush_json_object_get_typed(root, NULL, HUSH_JSON_NUMBER, &token, &err),
                 HUSH_E_ARGUMENT, &err);
    hush_json_doc_free(doc);
}

static void test_parse_into_a_caller_arena(void)
{
    hush_arena *arena = NULL;
    const hush_json_value *one = NULL, *two = NULL;
    hush_json_limits too_deep = {0, HUSH_JSON_MAX_DEPTH_LIMIT + 1};
    hush_error err;

    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &arena, &err), &err);
    CHECK_OK(hush_json_parse_into(arena, "[1]", 3, NULL, &one, &err), &err);
    CHECK_OK(hush_json_parse_into(arena, "{\"a\":\"b\"}", 9, NULL, &two, &err), &err);
    CHECK_EQ(hush_json_length(one), 1);
    CHECK(STRING_IS(get(two, "a"), "b"));
    CHECK_STATUS(hush_json_parse_into(arena, "[1,]", 4, NULL, &one, &err), HUSH_E_JSON, &err);
    CHECK(one == NULL);
    CHECK_STATUS(hush_json_parse_into(NULL, "1", 1, NULL, &one, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_json_parse_into(arena, NULL, 1, NULL, &one, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_json_parse_into(arena, "1", 1, NULL, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_json_parse_into(arena, "1", 1, &too_deep, &one, &err), HUSH_E_ARGUMENT,
                 &err);
    CHECK_STATUS(hush_json_parse("1", 1, NULL, 0, NULL, &err), HUSH_E_ARGUMENT, &err);
    hush_arena_free(arena);
}

/* ---- numbers ------------------------------------------------------------ */

static hush_status int64_of(const char *text, int64_t *out, hush_error *err)
{
    hush_json_doc *doc = NULL;
    hush_status status = parse_copy(text, strlen(text), NULL, &doc, err);
    if (status == HUSH_OK)
        status = hush_json_int64(hush_json_doc_root(doc), out, err);
    hush_json_doc_free(doc);
    return status;
}

static hush_status double_of(const char *text, double *out, hush_error *err)
{
    hush_json_doc *doc = NULL;
    hush_status status = parse_copy(text, strlen(text), NULL, &doc, err);
    if (status == HUSH_OK)
        status = hush_json_double(hush_json_doc_root(doc), out, err);
    hush_json_doc_free(doc);
    return status;
}

static void test_int64_bounds(void)
{
    hush_error err;
    int64_t v = 0;

    CHECK_OK(int64_of("9223372036854775807", &v, &err), &err);
    CHECK(v == INT64_MAX);
    CHECK_OK(int64_of("-9223372036854775808", &v, &err), &err);
    CHECK(v == INT64_MIN);
    CHECK_OK(int64_of("-0", &v, &err), &err);
    CHECK_EQ(v, 0);
    CHECK_OK(int64_of("0", &v, &err), &err);
    CHECK_EQ(v, 0);
    CHECK_OK(int64_of("-42", &v, &err), &err);
    CHECK_EQ(v, -42);
    CHECK_STATUS(int64_of("9223372036854775808", &v, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(int64_of("-9223372036854775809", &v, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(int64_of("18446744073709551616", &v, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(int64_of("100000000000000000000000000000", &v, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(int64_of("1.0", &v, &err), HUSH_E_TYPE, &err);
    CHECK_STATUS(int64_of("1e3", &v, &err), HUSH_E_TYPE, &err);
    CHECK_STATUS(int64_of("\"12\"", &v, &err), HUSH_E_TYPE, &err);
    CHECK_STATUS(int64_of("12", NULL, &err), HUSH_E_ARGUMENT, &err);
}

static void test_double_values_and_range(void)
{
    hush_error err;
    double d = 0;

    CHECK_OK(double_of("0.1", &d, &err), &err);
    CHECK(d == 0.1);
    CHECK_OK(double_of("-1.5E+3", &d, &err), &err);
    CHECK(d == -1500.0);
    CHECK_OK(double_of("5e-324", &d, &err), &err);
    CHECK(d == 5e-324);
    CHECK_OK(double_of("1.7976931348623157e308", &d, &err), &err);
    CHECK(d == 1.7976931348623157e308);
    CHECK_OK(double_of("-0", &d, &err), &err);
    CHECK(d == 0.0 && signbit(d));
    CHECK_OK(double_of("1e-400", &d, &err), &err); /* underflow rounds to zero */
    CHECK(d == 0.0);
    CHECK_OK(double_of("12345678901234567890", &d, &err), &err);
    CHECK(d == 12345678901234567890.0);
    CHECK_STATUS(double_of("1e400", &d, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(double_of("-1e400", &d, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(double_of("1.8e308", &d, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(double_of("true", &d, &err), HUSH_E_TYPE, &err);
}

static void test_double_ignores_process_locale(void)
{
    hush_error err;
    double d = 0;
    if (check_use_comma_locale())
        CHECK(strtod("1.5", NULL) != 1.5); /* the process locale would get it wrong */

    CHECK_OK(double_of("1.5", &d, &err), &err);
    CHECK(d == 1.5);
    CHECK_OK(double_of("-2.25e2", &d, &err), &err);
    CHECK(d == -225.0);
    CHECK_OK(double_of("0.000123", &d, &err), &err);
    CHECK(d == 0.000123);
    setlocale(LC_ALL, "C");
}

static void test_number_grammar(void)
{
    CHECK(PARSES("[0, -0, 1, -1, 10, 0.5, -0.5, 1e5, 1E5, 1e+5, 1e-5, 1.25e-05, 0e0, 123456789]"));
    CHECK(PARSES("1234567890123456789012345678901234567890")); /* kept as text */
    CHECK(JSON_ERROR_AT("01", 1));
    CHECK(JSON_ERROR_AT("-01", 2));
    CHECK(JSON_ERROR_AT("[00]", 2));
    CHECK(JSON_ERROR_AT("+1", 0));
    CHECK(JSON_ERROR_AT(".5", 0));
    CHECK(JSON_ERROR_AT("[1.]", 3));
    CHECK(JSON_ERROR_AT("1.e5", 2));
    CHECK(JSON_ERROR_AT("[1e]", 3));
    CHECK(JSON_ERROR_AT("[1e+]", 4));
    CHECK(JSON_ERROR_AT("[-]", 2));
    CHECK(JSON_ERROR_AT("-", 1));
    CHECK(JSON_ERROR_AT("--1", 1));
    CHECK(JSON_ERROR_AT("0x10", 1));
    CHECK(JSON_ERROR_AT("NaN", 0));
    CHECK(JSON_ERROR_AT("Infinity", 0));
    CHECK(JSON_ERROR_AT("-Infinity", 1));
    CHECK(JSON_ERROR_AT("1.5.2", 3));
    CHECK(JSON_ERROR_AT("1 2", 2));
}

/* ---- strings ------------------------------------------------------------ */

static void test_string_escapes(void)
{
    hush_json_doc *doc =
        parse_ok("[\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\", \"\\u00e9\\u20AC\", \"a\\u0000b\", \"\"]");
    const hush_json_value *root = hush_json_doc_root(doc);

    CHECK(STRING_IS(hush_json_array_get(root, 0), "\" \\ / \b \f \n \r \t"));
    CHECK(STRING_IS(hush_json_array_get(root, 1), "\xC3\xA9\xE2\x82\xAC"));
    CHECK(STRING_IS(hush_json_array_get(root, 2), "a\0b")); /* length-delimited */
    CHECK(STRING_IS(hush_json_array_get(root, 3), ""));
    hush_json_doc_free(doc);

    /* Raw UTF-8 and DEL pass through untouched. */
    doc = parse_ok("\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\x7F\"");
    CHECK(STRING_IS(hush_json_doc_root(doc), "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\x7F"));
    hush_json_doc_free(doc);
}

static void test_surrogate_pairs(void)
{
    hush_json_doc *doc = parse_ok("[\"\\ud83d\\ude00\", \"\\uD800\\uDC00\", \"\\uDBFF\\uDFFF\"]");
    const hush_json_value *root = hush_json_doc_root(doc);

    CHECK(STRING_IS(hush_json_array_get(root, 0), "\xF0\x9F\x98\x80")); /* U+1F600 */
    CHECK(STRING_IS(hush_json_array_get(root, 1), "\xF0\x90\x80\x80")); /* U+10000 */
    CHECK(STRING_IS(hush_json_array_get(root, 2), "\xF4\x8F\xBF\xBF")); /* U+10FFFF */
    hush_json_doc_free(doc);
}

static void test_bad_escapes(void)
{
    CHECK(JSON_ERROR_AT("\"ab\\x\"", 3));
    CHECK(JSON_ERROR_AT("\"\\u12\"", 1));
    CHECK(JSON_ERROR_AT("\"\\u12G4\"", 1));
    CHECK(JSON_ERROR_AT("[\"\\uD800\"]", 2));        /* lone high surrogate */
    CHECK(JSON_ERROR_AT("[\"\\uDC00\\uD800\"]", 2)); /* low before high */
    CHECK(JSON_ERROR_AT("\"\\uD800\\u0041\"", 1));   /* high then not low */
    CHECK(JSON_ERROR_AT("\"\\uD800\\n\"", 1));
    CHECK(JSON_ERROR_AT("\"\\uD800\\uZZZZ\"", 7));
    CHECK(JSON_ERROR_AT("\"\\'\"", 1));
    CHECK(JSON_ERROR_AT("\"\\", 2));
}

static void test_control_characters_in_strings(void)
{
    CHECK(JSON_ERROR_AT("\"a\nb\"", 2));
    CHECK(JSON_ERROR_AT("\"\t\"", 1));
    CHECK(JSON_ERROR_AT("[\"ok\", \"\x1F\"]", 8));
    CHECK(JSON_ERROR_AT("\"\0\"", 1));
    CHECK(PARSES("\"\x7F\""));
}

static void test_invalid_utf8(void)
{
    CHECK(JSON_ERROR_AT("\"\xC0\x80\"", 1));             /* overlong NUL */
    CHECK(JSON_ERROR_AT("\"\xC1\xBF\"", 1));             /* overlong */
    CHECK(JSON_ERROR_AT("\"ab\xE0\x80\x80\"", 3));       /* overlong 3-byte */
    CHECK(JSON_ERROR_AT("\"\xF0\x80\x80\x80\"", 1));     /* overlong 4-byte */
    CHECK(JSON_ERROR_AT("\"\xED\xA0\x80\"", 1));         /* encoded U+D800 */
    CHECK(JSON_ERROR_AT("\"\xED\xBF\xBF\"", 1));         /* encoded U+DFFF */
    CHECK(JSON_ERROR_AT("\"\xF4\x90\x80\x80\"", 1));     /* U+110000 */
    CHECK(JSON_ERROR_AT("\"\xF5\x80\x80\x80\"", 1));
    CHECK(JSON_ERROR_AT("\"\xFF\"", 1));
    CHECK(JSON_ERROR_AT("\"\x80\"", 1));                 /* stray continuation */
    CHECK(JSON_ERROR_AT("\"\xE2\x82\"", 1));             /* truncated before the quote */
    CHECK(JSON_ERROR_AT("\"\xE2\x82", 1));               /* truncated at the end */
    CHECK(JSON_ERROR_AT("\"\xC3\"", 1));
    CHECK(JSON_ERROR_AT("{\"k\xF0\x9F\x98\":1}", 3));    /* in a key */
    CHECK(PARSES("\"\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\xF4\x8F\xBF\xBF\"")); /* edges */
}

static void test_unterminated_string_reports_earliest_problem(void)
{
    CHECK(JSON_ERROR_AT("\"abc", 4));
    CHECK(JSON_ERROR_AT("\"a\\qbc", 2));
    CHECK(JSON_ERROR_AT("\"a\x01", 2));
}

/* ---- structure ---------------------------------------------------------- */

static void test_structural_errors(void)
{
    CHECK(JSON_ERROR_AT("", 0));
    CHECK(JSON_ERROR_AT(" \t\r\n", 4));
    CHECK(JSON_ERROR_AT("[1,]", 3));
    CHECK(JSON_ERROR_AT("{\"a\":1,}", 7));
    CHECK(JSON_ERROR_AT("[1 2]", 3));
    CHECK(JSON_ERROR_AT("{\"a\" 1}", 5));
    CHECK(JSON_ERROR_AT("{\"a\":1 \"b\":2}", 7));
    CHECK(JSON_ERROR_AT("{a:1}", 1));
    CHECK(JSON_ERROR_AT("{'a':1}", 1));
    CHECK(JSON_ERROR_AT("[1]]", 3));
    CHECK(JSON_ERROR_AT("{\"a\":1}x", 7));
    CHECK(JSON_ERROR_AT("[] []", 3));
    CHECK(JSON_ERROR_AT("[1] // comment", 4));
    CHECK(JSON_ERROR_AT("/* comment */ [1]", 0));
    CHECK(JSON_ERROR_AT("[1, /* c */ 2]", 4));
    CHECK(JSON_ERROR_AT("[,1]", 1));
    CHECK(JSON_ERROR_AT("]", 0));
    CHECK(JSON_ERROR_AT("tru", 3));
    CHECK(JSON_ERROR_AT("trUe", 0));
    CHECK(JSON_ERROR_AT("nul", 3));
    CHECK(JSON_ERROR_AT("[nulL]", 1));
    CHECK(JSON_ERROR_AT("True", 0));
    CHECK(JSON_ERROR_AT("[\v1]", 1));           /* only four whitespace bytes */
    CHECK(JSON_ERROR_AT("\xC2\xA0" "1", 0));    /* no-break space */
    CHECK(JSON_ERROR_AT("\xEF\xBB\xBF{}", 0));  /* no byte-order mark */
    CHECK(JSON_ERROR_AT("{\"a\":1", 6));
    CHECK(PARSES(" \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n[ 1 , 2 ] \t\r\n} \t\r\n"));
}

static void test_every_truncation_fails(void)
{
    static const char doc[] =
        "{\"s\":\"a\\\"\\u00e9\\ud83d\\ude00\xC3\xA9\",\"n\":[-12.5e+3,0,true,false,null],"
        "\"o\":{\"k\":{}},\"e\":[]}";
    size_t len = sizeof doc - 1;
    CHECK(parses_with(doc, len, NULL));
    for (size_t cut = 0; cut < len; cut++) {
        hush_json_doc *parsed = NULL;
        hush_error err;
        hush_status status = parse_copy(doc, cut, NULL, &parsed, &err);
        if (status != HUSH_E_JSON || err.offset < 0 || (size_t)err.offset > cut)
            fprintf(stderr, "  prefix of %zu bytes: %s at %lld\n", cut, hush_strerror(status),
                    (long long)err.offset);
        CHECK_EQ(status, HUSH_E_JSON);
        CHECK(err.offset >= 0 && (size_t)err.offset <= cut);
        CHECK(parsed == NULL);
    }
}

static void test_size_limit(void)
{
    hush_json_limits limits = {10, 0};
    CHECK(parses_with("[1,2,3,45]", 10, &limits));
    CHECK(fails_at_with("[1,2,3,456]", 11, &limits, HUSH_E_LIMIT, -1));
    /* Checked before parsing: even garbage is refused for its size alone. */
    CHECK(fails_at_with("xxxxxxxxxxxxxxxx", 16, &limits, HUSH_E_LIMIT, -1));
}

/* `depth` nested arrays (or objects keyed "k") around a 0. */
static char *nested(unsigned depth, bool objects, size_t *len)
{
    size_t per = objects ? 6 : 2; /* {"k": ... } or [ ... ] */
    char *text = malloc(depth * per + 2);
    size_t n = 0;
    if (text == NULL)
        return NULL;
    for (unsigned i = 0; i < depth; i++) {
        memcpy(text + n, objects ? "{\"k\":" : "[", objects ? 5 : 1);
        n += objects ? 5 : 1;
    }
    text[n++] = '0';
    for (unsigned i = 0; i < depth; i++)
        text[n++] = objects ? '}' : ']';
    *len = n;
    return text;
}

static bool depth_result(unsigned depth, bool objects, const hush_json_limits *limits,
                         hush_status code, int64_t offset)
{
    size_t len = 0;
    char *text = nested(depth, objects, &len);
    bool ok = text != NULL && (code == HUSH_OK ? parses_with(text, len, limits)
                                               : fails_at_with(text, len, limits, code, offset));
    free(text);
    return ok;
}

static void test_depth_limit(void)
{
    hush_json_limits three = {0, 3};
    hush_json_limits deepest = {0, HUSH_JSON_MAX_DEPTH_LIMIT};

    CHECK(depth_result(HUSH_JSON_DEFAULT_MAX_DEPTH, false, NULL, HUSH_OK, -1));
    CHECK(depth_result(HUSH_JSON_DEFAULT_MAX_DEPTH + 1, false, NULL, HUSH_E_LIMIT, 64));
    CHECK(depth_result(HUSH_JSON_DEFAULT_MAX_DEPTH, true, NULL, HUSH_OK, -1));
    CHECK(depth_result(HUSH_JSON_DEFAULT_MAX_DEPTH + 1, true, NULL, HUSH_E_LIMIT, 64 * 5));
    CHECK(depth_result(3, false, &three, HUSH_OK, -1));
    CHECK(depth_result(4, false, &three, HUSH_E_LIMIT, 3));
    CHECK(depth_result(HUSH_JSON_MAX_DEPTH_LIMIT, false, &deepest, HUSH_OK, -1));
    CHECK(depth_result(HUSH_JSON_MAX_DEPTH_LIMIT + 1, true, &deepest, HUSH_E_LIMIT,
                       HUSH_JSON_MAX_DEPTH_LIMIT * 5));
    /* Scalars inside the deepest container do not count as a level. */
    CHECK(fails_at_with("[[[\"x\",{}]]]", 12, &three, HUSH_E_LIMIT, 7));
    CHECK(parses_with("[[[\"x\",1]]]", 11, &three));
}

/* ---- duplicate keys ----------------------------------------------------- */

static void test_duplicate_keys(void)
{
    CHECK(JSON_ERROR_AT("{\"a\":1,\"b\":2,\"a\":3}", 13));
    CHECK(JSON_ERROR_AT("{\"a\":1,\"\\u0061\":2}", 7)); /* equal once unescaped */
    CHECK(JSON_ERROR_AT("[{\"x\":{\"y\":1,\"y\":2}}]", 13));
    CHECK(JSON_ERROR_AT("{\"b\":1,\"a\":1,\"b\":2,\"a\":2}", 13)); /* the first repeat */
    CHECK(JSON_ERROR_AT("{\"\":1,\"\":2}", 6));
    CHECK(PARSES("{\"a\":1,\"A\":2,\"a\\u0000\":3,\"a\\u0000b\":4,\"ab\":5}"));
    CHECK(PARSES("[{\"a\":1},{\"a\":2}]")); /* the same key in sibling objects */

    hush_json_doc *doc = parse_ok("{\"a\":1,\"a\\u0000\":2,\"a\\u0000b\":3}");
    const hush_json_value *root = hush_json_doc_root(doc);
    int64_t v = 0;
    CHECK_OK(hush_json_int64(hush_json_object_get(root, "a\0b", 3), &v, NULL), NULL);
    CHECK_EQ(v, 3);
    CHECK_OK(hush_json_int64(hush_json_object_get(root, "a\0", 2), &v, NULL), NULL);
    CHECK_EQ(v, 2);
    CHECK(hush_json_object_get(root, "a\0c", 3) == NULL);
    hush_json_doc_free(doc);
}

#define BIG_OBJECT_KEYS 10000

/* {"k0":0,"k1":1,...}; with `repeat` set, the last key repeats key `repeat`. */
static char *big_object(size_t keys, long repeat, size_t *len, size_t *repeat_offset)
{
    size_t cap = keys * 32 + 16, n = 0;
    char *text = malloc(cap);
    if (text == NULL)
        return NULL;
    text[n++] = '{';
    for (size_t i = 0; i < keys; i++) {
        long name = repeat >= 0 && i == keys - 1 ? repeat : (long)i;
        if (i == keys - 1)
            *repeat_offset = n + (i > 0);
        n += (size_t)snprintf(text + n, cap - n, "%s\"k%ld\":%zu", i > 0 ? "," : "", name, i);
    }
    text[n++] = '}';
    *len = n;
    return text;
}

static void test_big_object(void)
{
    size_t len = 0, repeat_at = 0;
    hush_json_doc *doc = NULL;
    hush_error err;
    char *text = big_object(BIG_OBJECT_KEYS, -1, &len, &repeat_at);
    char key[32];
    int64_t v;
    bool all_found = true;

    CHECK(text != NULL);
    if (text == NULL)
        return;
    CHECK_OK(parse_copy(text, len, NULL, &doc, &err), &err);
    const hush_json_value *root = hush_json_doc_root(doc);
    CHECK_EQ(hush_json_length(root), BIG_OBJECT_KEYS);
    for (long i = 0; i < BIG_OBJECT_KEYS; i++) {
        int n = snprintf(key, sizeof key, "k%ld", i);
        all_found &= hush_json_int64(hush_json_object_get(root, key, (size_t)n), &v, NULL) ==
                         HUSH_OK && v == i;
    }
    CHECK(all_found);
    CHECK(get(root, "k10000") == NULL);
    hush_json_doc_free(doc);
    free(text);

    text = big_object(BIG_OBJECT_KEYS, 4321, &len, &repeat_at);
    CHECK(text != NULL && fails_at_with(text, len, NULL, HUSH_E_JSON, (int64_t)repeat_at));
    free(text);
}

/* ---- confidentiality of error messages ---------------------------------- */

static void test_messages_never_contain_input(void)
{
    /* Every failure below sits next to, or inside, the marker. */
    CHECK(JSON_ERROR_AT("{\"" MARKER "\":1,\"" MARKER "\":2}", 18));
    CHECK(JSON_ERROR_AT("[\"" MARKER "\\x\"]", 14));
    CHECK(JSON_ERROR_AT("[\"" MARKER "\xC0\x80\"]", 14));
    CHECK(JSON_ERROR_AT("[\"" MARKER "\"] " MARKER, 17));
    CHECK(JSON_ERROR_AT(MARKER, 0));
    CHECK(JSON_ERROR_AT("{\"" MARKER "\" " MARKER "}", 16));
    CHECK(JSON_ERROR_AT("[\"" MARKER "\n\"]", 14));
    CHECK(JSON_ERROR_AT("[\"" MARKER, 14));
    CHECK(JSON_ERROR_AT("[0" MARKER "]", 2));
    CHECK(JSON_ERROR_AT("{\"a\":[1,2,\"" MARKER "\",]}", 25));
}

/* ---- where plaintext lives --------------------------------------------- */

#define SECRET_LEN 48

/* Copies of the secret, counting its second half alone too: a freed heap
 * copy has its first bytes overwritten by the allocator's bookkeeping. */
static long secret_copies(const unsigned char *masked)
{
    long whole = memscan_count(masked, SECRET_LEN);
    long tail = memscan_count(masked + SECRET_LEN / 2, SECRET_LEN / 2);
    return whole == tail ? whole : -1;
}

/* A secret made on the fly, so no literal copy of it sits in the binary. */
static unsigned char secret_byte(size_t i) { return (unsigned char)('a' + (i * 7 + 3) % 26); }

static void test_plaintext_lives_only_in_secure_memory(void)
{
    /* The input spells the secret only as \u escapes: every plain copy in
     * memory is one the parser or the writer made. */
    char input[16 + SECRET_LEN * 6];
    unsigned char masked[SECRET_LEN];
    size_t n = (size_t)snprintf(input, sizeof input, "{\"k\":\"");
    for (size_t i = 0; i < SECRET_LEN; i++) {
        n += (size_t)snprintf(input + n, sizeof input - n, "\\u%04x", secret_byte(i));
        masked[i] = secret_byte(i) ^ MEMSCAN_MASK;
    }
    n += (size_t)snprintf(input + n, sizeof input - n, "\"}");

    hush_json_doc *doc = NULL;
    hush_secbuf *out = NULL;
    hush_json_writer *w = NULL;
    hush_error err;
    CHECK_OK(hush_json_parse(input, n, NULL, HUSH_SECMEM_DEFAULT, &doc, &err), &err);
    CHECK_EQ(secret_copies(masked), 1); /* the arena's copy */

    CHECK_OK(hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &out, &err), &err);
    CHECK_OK(hush_json_writer_new(out, HUSH_JSON_WRITE_COMPACT, 0, &w, &err), &err);
    CHECK_OK(hush_json_write_value(w, hush_json_doc_root(doc), &err), &err);
    hush_json_writer_free(w);
    CHECK_EQ(secret_copies(masked), 2); /* and the output buffer's */

    hush_json_doc_free(doc);
    hush_secbuf_free(out);
    CHECK_EQ(secret_copies(masked), 0);
}

int main(void)
{
    RUN_TEST(test_every_value_type);
    RUN_TEST(test_type_names);
    RUN_TEST(test_accessors_on_wrong_types_and_null);
    RUN_TEST(test_key_order_is_kept);
    RUN_TEST(test_nested_access_and_typed_lookup);
    RUN_TEST(test_parse_into_a_caller_arena);
    RUN_TEST(test_int64_bounds);
    RUN_TEST(test_double_values_and_range);
    RUN_TEST(test_double_ignores_process_locale);
    RUN_TEST(test_number_grammar);
    RUN_TEST(test_string_escapes);
    RUN_TEST(test_surrogate_pairs);
    RUN_TEST(test_bad_escapes);
    RUN_TEST(test_control_characters_in_strings);
    RUN_TEST(test_invalid_utf8);
    RUN_TEST(test_unterminated_string_reports_earliest_problem);
    RUN_TEST(test_structural_errors);
    RUN_TEST(test_every_truncation_fails);
    RUN_TEST(test_size_limit);
    RUN_TEST(test_depth_limit);
    RUN_TEST(test_duplicate_keys);
    RUN_TEST(test_big_object);
    RUN_TEST(test_messages_never_contain_input);
    RUN_TEST(test_plaintext_lives_only_in_secure_memory);
    return check_report();
}
