/* test_error.c — status strings and the explicit error out-parameter. */
#include "check.h"

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

int main(void)
{
    RUN_TEST(test_every_status_has_its_own_description);
    RUN_TEST(test_every_status_has_its_own_kind);
    RUN_TEST(test_clear_resets_everything);
    RUN_TEST(test_failures_fill_the_caller_error_or_none);
    return check_report();
}
