/* test_error.c — status strings and the explicit error out-parameter. */
#include "check.h"
/* The core's error-flow macros, tested as a core function uses them. */
#include "../../core/src/internal.h"

static void test_every_status_has_its_own_description(void)
{
    for (int a = HUSH_OK; a <= HUSH_E_INTERNAL; a++) {
        const char *sa = hush_strerror((hush_status)a);
        CHECK(sa != NULL && strcmp(sa, "unknown status") != 0);
        for (int b = a + 1; b <= HUSH_E_INTERNAL; b++)
            CHECK(strcmp(sa, hush_strerror((hush_status)b)) != 0);
    }
    CHECK(strcmp(hush_strerror((hush_status)999), "unknown status") == 0);
}

static void test_every_status_has_its_own_kind(void)
{
    for (int a = HUSH_OK; a <= HUSH_E_INTERNAL; a++) {
        const char *ka = hush_status_kind((hush_status)a);
        CHECK(ka != NULL && strcmp(ka, "unknown") != 0);
        for (const char *c = ka; *c != '\0'; c++)
            CHECK((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_');
        for (int b = a + 1; b <= HUSH_E_INTERNAL; b++)
            CHECK(strcmp(ka, hush_status_kind((hush_status)b)) != 0);
    }
    CHECK(strcmp(hush_status_kind(HUSH_E_RATE_LIMITED), "rate_limited") == 0);
    CHECK(strcmp(hush_status_kind((hush_status)999), "unknown") == 0);
}

static void test_clear_resets_everything(void)
{
    hush_error err;
    memset(&err, 0x55, sizeof err);
    hush_error_clear(&err);
    CHECK_EQ(err.code, HUSH_OK);
    CHECK_EQ(err.http_status, 0);
    CHECK_EQ(err.offset, -1);
    CHECK_EQ(err.message[0], '\0');
    hush_error_clear(NULL);
}

static void test_failures_fill_the_caller_error_or_none(void)
{
    hush_error err;
    hush_error_clear(&err);
    hush_arena *a = NULL;
    CHECK_STATUS(hush_arena_new(0, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_EQ(err.code, HUSH_E_ARGUMENT);
    CHECK(strlen(err.message) > 0);
    CHECK_EQ(err.offset, -1);
    /* NULL means "no details wanted"; the status still comes back. */
    CHECK_EQ(hush_arena_new(0, NULL, NULL), HUSH_E_ARGUMENT);
    /* Parse errors carry the offset. */
    const hush_json_value *root;
    CHECK_OK(hush_arena_new(0, &a, &err), &err);
    CHECK_STATUS(hush_json_parse_into(a, "[1,,2]", 6, NULL, &root, &err), HUSH_E_JSON, &err);
    CHECK_EQ(err.offset, 3);
    hush_arena_free(a);
}

/* Each error-flow macro leaves through the one cleanup label (counted in
 * *cleanups) with the status and message core/src/internal.h promises. */
HUSH_MUST_USE
static hush_status ensure_ref(const void *p, int *cleanups, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE_REF(p, "ensure_ref: p is NULL");
cleanup:
    (*cleanups)++;
    return status;
}

HUSH_MUST_USE
static hush_status try_as(const char *b64, int *cleanups, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char out[3];
    size_t n;
    HUSH_TRY_AS(hush_base64_decode(b64, strlen(b64), out, sizeof out, &n, err), HUSH_E_FORMAT,
                "opaque");
cleanup:
    (*cleanups)++;
    return status;
}

HUSH_MUST_USE
static hush_status bail_with(int *cleanups, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_JSON, 7, "at seven"));
cleanup:
    (*cleanups)++;
    return status;
}

HUSH_MUST_USE
static hush_status bail(int *cleanups, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_BAIL(HUSH_E_LIMIT, "limit %d", 3);
cleanup:
    (*cleanups)++;
    return status;
}

static void test_error_flow_macros_leave_through_cleanup(void)
{
    hush_error err;
    int cleanups = 0;
    int x = 0;

    CHECK_OK(ensure_ref(&x, &cleanups, &err), &err);
    CHECK_STATUS(ensure_ref(NULL, &cleanups, &err), HUSH_E_ARGUMENT, &err);
    CHECK(strcmp(err.message, "ensure_ref: p is NULL") == 0);

    CHECK_OK(try_as("AAAA", &cleanups, &err), &err);
    /* The callee's HUSH_E_BASE64 and its offset-bearing message are replaced. */
    CHECK_STATUS(try_as("A!AA", &cleanups, &err), HUSH_E_FORMAT, &err);
    CHECK(strcmp(err.message, "opaque") == 0);

    /* The constructor's status, message and offset are kept. */
    CHECK_STATUS(bail_with(&cleanups, &err), HUSH_E_JSON, &err);
    CHECK(strcmp(err.message, "at seven") == 0);
    CHECK_EQ(err.offset, 7);

    CHECK_STATUS(bail(&cleanups, &err), HUSH_E_LIMIT, &err);
    CHECK(strcmp(err.message, "limit 3") == 0);
    CHECK_EQ(bail(&cleanups, NULL), HUSH_E_LIMIT);
    CHECK_EQ(cleanups, 7);
}

int main(void)
{
    RUN_TEST(test_every_status_has_its_own_description);
    RUN_TEST(test_every_status_has_its_own_kind);
    RUN_TEST(test_clear_resets_everything);
    RUN_TEST(test_failures_fill_the_caller_error_or_none);
    RUN_TEST(test_error_flow_macros_leave_through_cleanup);
    return check_report();
}
