/*
 * test_auth.c — the HTTP Basic decoder (src/auth/basic.c) and the failure
 * limits (src/auth/limit.c).
 *
 * Basic: every header is decoded from an exact-size heap copy, so ASan
 * catches a read past its end; each refusal names its reason. Limits: the
 * windows, the once-per-window report and the independence of keys, with
 * the clock given by the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/basic.h"
#include "auth/limit.h"

/* Decodes a NUL-terminated copy of s that ends exactly at its NUL. */
static int decode(const char *s, struct basic_credential *c, const char **why)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    int rc;

    assert_non_null(copy);
    memcpy(copy, s, n);
    *why = NULL;
    rc = basic_decode(copy, c, why);
    free(copy);
    return rc;
}

static void test_basic_ok(void **state)
{
    struct basic_credential c;
    const char *why;

    (void)state;
    /* alice:secret */
    assert_int_equal(decode("Basic YWxpY2U6c2VjcmV0", &c, &why), 0);
    assert_string_equal(c.user, "alice");
    assert_int_equal(c.user_len, 5);
    assert_string_equal(c.password, "secret");
    assert_int_equal(c.password_len, 6);

    /* The scheme is case-insensitive; the password may hold ':' (only the first one splits). */
    assert_int_equal(decode("bAsIc YTpiOmM=", &c, &why), 0); /* a:b:c */
    assert_string_equal(c.user, "a");
    assert_string_equal(c.password, "b:c");

    /* An empty password is a password (the backend says no to it). */
    assert_int_equal(decode("Basic Ym9iOg==", &c, &why), 0); /* bob: */
    assert_string_equal(c.user, "bob");
    assert_int_equal(c.password_len, 0);

    /* UTF-8 user: "jörg:pw" */
    assert_int_equal(decode("Basic asO2cmc6cHc=", &c, &why), 0);
    assert_string_equal(c.user, "j\xc3\xb6rg");

    basic_wipe(&c);
    assert_int_equal(c.password[0], '\0');
    assert_int_equal(c.password_len, 0);
}

static void test_basic_is(void **state)
{
    (void)state;
    assert_true(basic_is("Basic abc"));
    assert_true(basic_is("basic abc"));
    assert_false(basic_is("Bearer v2.u.x"));
    assert_false(basic_is("Basicabc"));
    assert_false(basic_is(""));
    assert_false(basic_is(NULL));
}

static void refused(const char *header, const char *reason)
{
    struct basic_credential c;
    const char *why;

    assert_int_equal(decode(header, &c, &why), -1);
    assert_non_null(why);
    if (strstr(why, reason) == NULL)
        fail_msg("'%s': expected a reason with '%s', got '%s'", header, reason, why);
}

static void test_basic_refused(void **state)
{
    char big[2100];

    (void)state;
    refused("Bearer YWxpY2U6c2VjcmV0", "expected Authorization: Basic");
    refused("Basic", "expected Authorization: Basic");
    refused("Basic ", "not valid base64");
    refused("Basic YWxpY2U6c2VjcmV0!", "not valid base64");
    refused("Basic YWxpY2U6c2VjcmV", "not valid base64");   /* not a multiple of 4 */
    refused("Basic YW=pY2U6", "not valid base64");          /* '=' inside */
    refused("Basic YWxpY2U=", "no ':'");                    /* alice */
    refused("Basic OnNlY3JldA==", "names no user");         /* :secret */
    refused("Basic YQFiOnB3", "control character");                          /* a\x01b:pw, control character */
    refused("Basic YQBiOnB3", "control character");                          /* a\0b:pw, NUL */
    refused("Basic YTpwAHc=", "NUL byte");                          /* a:p\0w, NUL in the password */

    /* A user of 256 bytes, a password of 1025, and a header longer than any valid one. */
    memcpy(big, "Basic ", 6);
    memset(big + 6, 'Y', sizeof(big) - 7);
    big[sizeof(big) - 1] = '\0';
    refused(big, "too long");
}

static void long_field(size_t ulen, size_t plen, int ok)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = ulen + 1 + plen, i, o = 6;
    unsigned char *raw = malloc(n);
    char *h = malloc(6 + 4 * (n / 3 + 1) + 1);
    struct basic_credential c;
    const char *why;

    assert_non_null(raw);
    assert_non_null(h);
    memset(raw, 'u', ulen);
    raw[ulen] = ':';
    memset(raw + ulen + 1, 'p', plen);
    memcpy(h, "Basic ", 6);
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        h[o++] = tbl[v >> 18];
        h[o++] = tbl[(v >> 12) & 63];
        h[o++] = tbl[(v >> 6) & 63];
        h[o++] = tbl[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)raw[i] << 16;
        h[o++] = tbl[v >> 18];
        h[o++] = tbl[(v >> 12) & 63];
        h[o++] = '=';
        h[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8;
        h[o++] = tbl[v >> 18];
        h[o++] = tbl[(v >> 12) & 63];
        h[o++] = tbl[(v >> 6) & 63];
        h[o++] = '=';
    }
    h[o] = '\0';
    assert_int_equal(decode(h, &c, &why), ok ? 0 : -1);
    if (ok) {
        assert_int_equal(c.user_len, ulen);
        assert_int_equal(c.password_len, plen);
    } else {
        assert_non_null(why);
    }
    free(raw);
    free(h);
}

static void test_basic_limits(void **state)
{
    (void)state;
    long_field(BASIC_USER_MAX, BASIC_PASSWORD_MAX, 1);
    long_field(BASIC_USER_MAX + 1, 1, 0);
    long_field(1, BASIC_PASSWORD_MAX + 1, 0);
}

static _Atomic uint64_t slots[AUTH_LIMIT_SLOTS];

static void test_limit_window(void **state)
{
    struct auth_limit l;
    const uint64_t t0 = 1800000000 - 1800000000 % 300; /* a window's start */

    (void)state;
    memset((void *)slots, 0, sizeof(slots));
    auth_limit_init(&l, slots, 42, 3, 300);
    assert_int_equal(auth_limit_check(&l, "1.2.3.4", 7, t0), 0);
    assert_int_equal(auth_limit_fail(&l, "1.2.3.4", 7, t0), 0);
    assert_int_equal(auth_limit_fail(&l, "1.2.3.4", 7, t0 + 1), 0);
    assert_int_equal(auth_limit_check(&l, "1.2.3.4", 7, t0 + 1), 0);
    /* The third failure reaches the limit: reported once, with the wait to the window's end. */
    assert_int_equal(auth_limit_fail(&l, "1.2.3.4", 7, t0 + 10), 290);
    assert_int_equal(auth_limit_check(&l, "1.2.3.4", 7, t0 + 10), 290);
    assert_int_equal(auth_limit_fail(&l, "1.2.3.4", 7, t0 + 11), 0);
    assert_int_equal(auth_limit_check(&l, "1.2.3.4", 7, t0 + 299), 1);
    /* Another key is not affected. */
    assert_int_equal(auth_limit_check(&l, "1.2.3.5", 7, t0 + 10), 0);
    /* The next window starts from nothing. */
    assert_int_equal(auth_limit_check(&l, "1.2.3.4", 7, t0 + 300), 0);
    assert_int_equal(auth_limit_fail(&l, "1.2.3.4", 7, t0 + 300), 0);
    assert_int_equal(auth_limit_check(&l, "1.2.3.4", 7, t0 + 301), 0);
}

static void test_limit_off(void **state)
{
    struct auth_limit l;

    (void)state;
    memset((void *)slots, 0, sizeof(slots));
    auth_limit_init(&l, slots, 1, 0, 300);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(auth_limit_fail(&l, "x", 1, 1000), 0);
    assert_int_equal(auth_limit_check(&l, "x", 1, 1000), 0);
}

/* A second limit over the same table: its own max, the window and seed of the first. */
static void test_limit_share(void **state)
{
    struct auth_limit pw, tok;
    const uint64_t t0 = 1800000000 - 1800000000 % 300;

    (void)state;
    memset((void *)slots, 0, sizeof(slots));
    auth_limit_init(&pw, slots, 7, 2, 300);
    auth_limit_share(&tok, &pw, 5);
    assert_int_equal(tok.window, 300);
    assert_int_equal(tok.seed, 7);
    for (int i = 0; i < 4; i++)
        assert_int_equal(auth_limit_fail(&tok, "T1234", 5, t0), 0);
    assert_int_equal(auth_limit_check(&tok, "T1234", 5, t0), 0);
    assert_int_equal(auth_limit_fail(&tok, "T1234", 5, t0), 300);
    assert_int_equal(auth_limit_check(&tok, "T1234", 5, t0 + 100), 200);
    /* The tagged key is not the untagged one: the first limit's count is untouched. */
    assert_int_equal(auth_limit_check(&pw, "1234", 4, t0 + 100), 0);
}

static void test_limit_shared(void **state)
{
    struct auth_limit a, b;
    const uint64_t t0 = 3000;

    (void)state;
    /* Two sharers of one table (two workers) with one seed count as one. */
    memset((void *)slots, 0, sizeof(slots));
    auth_limit_init(&a, slots, 7, 2, 60);
    auth_limit_init(&b, slots, 7, 2, 60);
    assert_int_equal(auth_limit_fail(&a, "alice", 5, t0), 0);
    assert_int_equal(auth_limit_fail(&b, "alice", 5, t0), 60);
    assert_int_equal(auth_limit_check(&a, "alice", 5, t0), 60);
    /* Keys are compared as bytes: the caller folds case. */
    assert_int_equal(auth_limit_check(&a, "Alice", 5, t0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_ok),
        cmocka_unit_test(test_basic_is),
        cmocka_unit_test(test_basic_refused),
        cmocka_unit_test(test_basic_limits),
        cmocka_unit_test(test_limit_window),
        cmocka_unit_test(test_limit_off),
        cmocka_unit_test(test_limit_shared),
        cmocka_unit_test(test_limit_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
