/*
 * test_csp.c — the Content-Security-Policy of a page with inline blocks
 * (http/csp.h): each bare <style> and <script> block is named by the
 * SHA-256 of exactly the bytes between its tags, a page without one allows
 * none, and what cannot be hashed is refused rather than half-written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "http/csp.h"

/* printf 'body{}' | openssl dgst -sha256 -binary | base64 */
#define H_STYLE "'sha256-fJgEClQWV1hGkK4qHMO0KotTsVnMYMXTq7/suurGyUo='"
/* printf 'go()' | openssl dgst -sha256 -binary | base64 */
#define H_GO "'sha256-5KYv+PUboo5h+0+YAtGRPbwv5d/QxzHslP4YGnUaxRw='"
/* printf 'x=1;' | openssl dgst -sha256 -binary | base64 */
#define H_X "'sha256-RzC/gtEPO0pMibFM2UIEE8qSNdoNsZxwwHmx0KeQQBQ='"

#define HEAD "Content-Security-Policy: default-src 'none'; connect-src 'self'; img-src 'self'; "
#define TAIL "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"

static void test_blocks_are_hashed_between_their_tags(void **state)
{
    static const char page[] = "<html><style>body{}</style><p>hi</p><script>go()</script>"
                               "<script>x=1;</script></html>";
    char out[HTTP_CSP_MAX];
    int n;

    (void)state;
    n = http_csp_inline(page, sizeof(page) - 1, out, sizeof(out));
    assert_string_equal(out, HEAD "style-src " H_STYLE "; script-src " H_GO " " H_X TAIL);
    assert_int_equal(n, (int)strlen(out));
}

static void test_no_block_allows_none(void **state)
{
    static const char page[] = "<p>plain</p><script src=x.js></script>";
    char out[HTTP_CSP_MAX];

    (void)state;
    /* A tag with attributes is not a bare block: it is not hashed (nor allowed). */
    assert_true(http_csp_inline(page, sizeof(page) - 1, out, sizeof(out)) > 0);
    assert_string_equal(out, HEAD "style-src 'none'; script-src 'none'" TAIL);
}

static void test_unclosed_or_too_many_or_no_room_is_refused(void **state)
{
    static const char open[] = "<script>go()";
    static const char many[] = "<style>a</style><style>a</style><style>a</style><style>a</style>"
                               "<style>a</style>";
    static const char ok[] = "<script>go()</script>";
    char out[HTTP_CSP_MAX];

    (void)state;
    assert_int_equal(http_csp_inline(open, sizeof(open) - 1, out, sizeof(out)), -1);
    assert_int_equal(http_csp_inline(many, sizeof(many) - 1, out, sizeof(out)), -1);
    assert_int_equal(http_csp_inline(ok, sizeof(ok) - 1, out, 100), -1);
    assert_int_equal(http_csp_inline(ok, sizeof(ok) - 1, out, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_are_hashed_between_their_tags),
        cmocka_unit_test(test_no_block_allows_none),
        cmocka_unit_test(test_unclosed_or_too_many_or_no_room_is_refused),
    };
    return cmocka_run_group_tests_name("csp", tests, NULL, NULL);
}
