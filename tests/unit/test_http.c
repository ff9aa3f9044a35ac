/* test_http.c — request reading (llhttp glue, limits) and response building. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/cookie.h"
#include "http/error.h"
#include "http/request.h"
#include "http/response.h"

static const struct http_limits lim = {.max_header_bytes = 1024, .max_body_bytes = 64};

static enum http_feed feed_all(struct http_req *r, const char *s, size_t *used)
{
    return http_req_feed(r, s, strlen(s), used);
}

static void test_simple_get(void **state)
{
    const char *req = "GET /v1/state?folders=INBOX,Sent HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer abc\r\n\r\n";
    struct http_req *r = http_req_new(&lim);
    size_t used;

    (void)state;
    assert_int_equal(feed_all(r, req, &used), HTTP_DONE);
    assert_int_equal(used, strlen(req));
    assert_int_equal(r->method, HTTP_GET);
    assert_int_equal(r->path_len, strlen("/v1/state"));
    assert_memory_equal(r->path, "/v1/state", r->path_len);
    assert_int_equal(r->query_len, strlen("folders=INBOX,Sent"));
    assert_string_equal(http_req_header(r, HDR_AUTHORIZATION), "Bearer abc");
    assert_null(http_req_header(r, HDR_IF_NONE_MATCH));
    assert_true(r->keep_alive);
    assert_int_equal(r->body_len, 0);
    http_req_free(r);
}

static void test_body_and_pipelining(void **state)
{
    const char *two = "POST /v1/ping HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                      "GET /healthz HTTP/1.1\r\n\r\n";
    struct http_req *r = http_req_new(&lim);
    size_t used, first = strlen("POST /v1/ping HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");

    (void)state;
    assert_int_equal(feed_all(r, two, &used), HTTP_DONE);
    assert_int_equal(used, first);
    assert_int_equal(r->body_len, 5);
    assert_string_equal(r->body, "hello");
    http_req_free(r);
    r = http_req_new(&lim);
    assert_int_equal(http_req_feed(r, two + used, strlen(two) - used, &used), HTTP_DONE);
    assert_memory_equal(r->path, "/healthz", r->path_len);
    http_req_free(r);
}

static void test_byte_by_byte(void **state)
{
    const char *req = "POST /v1/events HTTP/1.1\r\nContent-Length: 2\r\nIf-None-Match: \"a\"\r\n"
                      "If-None-Match: \"b\"\r\n\r\n{}";
    struct http_req *r = http_req_new(&lim);
    size_t used, n = strlen(req);

    (void)state;
    for (size_t i = 0; i < n - 1; i++) {
        assert_int_equal(http_req_feed(r, req + i, 1, &used), HTTP_NEED_MORE);
        assert_int_equal(used, 1);
    }
    assert_int_equal(http_req_feed(r, req + n - 1, 1, &used), HTTP_DONE);
    assert_string_equal(r->body, "{}");
    /* Repeated If-None-Match headers join into one list. */
    assert_string_equal(http_req_header(r, HDR_IF_NONE_MATCH), "\"a\",\"b\"");
    http_req_free(r);
}

static void expect_error(const char *req, int status)
{
    struct http_req *r = http_req_new(&lim);
    size_t used;

    assert_int_equal(http_req_feed(r, req, strlen(req), &used), HTTP_ERROR);
    assert_int_equal(r->err_status, status);
    assert_true(strlen(r->err_reason) > 0);
    http_req_free(r);
}

static void test_errors(void **state)
{
    char big[2048];

    (void)state;
    expect_error("GARBAGE\r\n\r\n", 400);
    /* Another HTTP, well formed: 505, with HTTP/2's preface told to use HTTP/1.1. */
    expect_error("GET / HTTP/9.9\r\n\r\n", 505);
    expect_error("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    expect_error("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    expect_error("GET /\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 413);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400);
    /* Headers over the limit: 431 even when no single header is long. */
    memset(big, 0, sizeof(big));
    strcpy(big, "GET / HTTP/1.1\r\n");
    while (strlen(big) < 1500)
        strcat(big, "X-Filler: 0123456789\r\n");
    strcat(big, "\r\n");
    expect_error(big, 431);
}

static void test_header_limit_exact(void **state)
{
    /* A head of exactly the limit is fine; the body after it does not count. */
    char req[1100];
    struct http_req *r = http_req_new(&lim);
    size_t used;
    int n = snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nContent-Length: 3\r\nX: ");

    (void)state;
    while (n < 1024 - 4)
        req[n++] = 'a';
    memcpy(req + n, "\r\n\r\nabc", 8);
    assert_int_equal(http_req_feed(r, req, strlen(req), &used), HTTP_DONE);
    assert_string_equal(r->body, "abc");
    http_req_free(r);
}

static void test_keep_alive_rules(void **state)
{
    struct http_req *r = http_req_new(&lim);
    size_t used;

    (void)state;
    assert_int_equal(feed_all(r, "GET / HTTP/1.0\r\n\r\n", &used), HTTP_DONE);
    assert_false(r->keep_alive);
    http_req_free(r);
    r = http_req_new(&lim);
    assert_int_equal(feed_all(r, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &used), HTTP_DONE);
    assert_false(r->keep_alive);
    http_req_free(r);
}

static void test_expect_continue(void **state)
{
    struct http_req *r = http_req_new(&lim);
    size_t used;

    (void)state;
    assert_int_equal(feed_all(r, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
                              &used),
                     HTTP_NEED_MORE);
    assert_true(r->send_continue);
    assert_int_equal(feed_all(r, "body", &used), HTTP_DONE);
    http_req_free(r);
}

static void test_response(void **state)
{
    size_t len;
    char *out = http_response_build(200, "application/json", "ETag: \"x\"\r\n", "{}", 2, 1, 0, &len);

    (void)state;
    assert_non_null(out);
    assert_true(len > 2);
    assert_memory_equal(out, "HTTP/1.1 200 OK\r\n", 17);
    assert_non_null(memmem(out, len, "Content-Length: 2\r\n", 19));
    assert_non_null(memmem(out, len, "Connection: keep-alive\r\n", 24));
    assert_non_null(memmem(out, len, "ETag: \"x\"\r\n\r\n{}", 15));
    assert_memory_equal(out + len - 6, "\r\n\r\n{}", 6);
    free(out);
    out = http_response_build(304, "application/json", NULL, "{}", 2, 0, 0, &len);
    assert_null(memmem(out, len, "Content-Length", 14));
    assert_non_null(memmem(out, len, "Connection: close\r\n", 19));
    assert_memory_equal(out + len - 4, "\r\n\r\n", 4);
    free(out);
    /* HEAD: the GET's head, Content-Length included, and no body. */
    out = http_response_build(200, "application/json", NULL, "{\"a\":1}", 7, 1, 1, &len);
    assert_non_null(memmem(out, len, "Content-Length: 7\r\n", 19));
    assert_memory_equal(out + len - 4, "\r\n\r\n", 4);
    assert_null(memmem(out, len, "{", 1));
    free(out);
    assert_string_equal(http_status_text(501), "Not Implemented");
    assert_string_equal(http_status_text(505), "HTTP Version Not Supported");
}

/* Every answer, byte for byte, against the same head written with snprintf. */
static void test_response_exact(void **state)
{
    static const struct {
        int status;
        const char *ctype, *extra;
        size_t body_len;
        int keep_alive;
    } cases[] = {
        {200, "application/json", NULL, 0, 1},
        {200, NULL, "ETag: \"7\"\r\nX-A: b\r\n", 1234, 0},
        {100, "text/plain", NULL, 5, 1},
        {304, "application/json", "ETag: \"x\"\r\n", 9, 1},
        {503, "application/json", "Retry-After: 5\r\n", 27, 0},
        {599, "text/event-stream", NULL, 100000, 1},
    };
    static char body[100000];

    (void)state;
    memset(body, 'b', sizeof(body));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int bodyless = cases[i].status == 304 || cases[i].status < 200;
        size_t len, n, blen = bodyless ? 0 : cases[i].body_len;
        char *out = http_response_build(cases[i].status, cases[i].ctype, cases[i].extra, body,
                                        cases[i].body_len, cases[i].keep_alive, 0, &len);
        char want[1024], date[64];
        const char *d;

        assert_non_null(out);
        d = memmem(out, len, "\r\nDate: ", 8);
        assert_non_null(d);
        assert_int_equal(sscanf(d + 8, "%63[^\r]", date), 1);
        n = (size_t)snprintf(want, sizeof(want), "HTTP/1.1 %d %s\r\nDate: %s\r\n", cases[i].status,
                             http_status_text(cases[i].status), date);
        if (!bodyless) {
            if (cases[i].ctype)
                n += (size_t)snprintf(want + n, sizeof(want) - n, "Content-Type: %s\r\n",
                                      cases[i].ctype);
            n += (size_t)snprintf(want + n, sizeof(want) - n, "Content-Length: %zu\r\n", blen);
        }
        if (cases[i].status >= 200)
            n += (size_t)snprintf(want + n, sizeof(want) - n, "Connection: %s\r\n",
                                  cases[i].keep_alive ? "keep-alive" : "close");
        n += (size_t)snprintf(want + n, sizeof(want) - n, "%s\r\n",
                              cases[i].extra ? cases[i].extra : "");
        assert_int_equal(len, n + blen);
        assert_memory_equal(out, want, n);
        if (blen)
            assert_memory_equal(out + n, body, blen);
        free(out);
    }
}

/* Errors as values: the body's keys in order, numbers, header lines, and a cut that never tears one. */
static void test_error_values(void **state)
{
    struct http_error e;
    size_t len;
    char *body;

    (void)state;
    assert_int_equal(http_error_bad(&e, "folders.%s: state must be a decimal string", "INBOX"), -1);
    assert_int_equal(e.status, 400);
    body = http_error_body(&e, &len);
    assert_string_equal(body, "{\"status\":\"bad-request\",\"error\":\"folders.INBOX: state must be "
                              "a decimal string\"}");
    assert_int_equal(len, strlen(body));
    free(body);
    assert_string_equal(e.extra, "");

    http_error_set(&e, 400, "heartbeat-out-of-range", NULL);
    http_error_num(&e, "min", 60);
    http_error_num(&e, "max", 1680);
    http_error_num(&e, "dropped", 1); /* beyond HTTP_ERROR_NUMS */
    body = http_error_body(&e, &len);
    assert_string_equal(body, "{\"status\":\"heartbeat-out-of-range\",\"min\":60,\"max\":1680}");
    free(body);

    http_error_set(&e, 429, "session-limit", NULL);
    http_error_num(&e, "limit", 32);
    http_error_header(&e, "Retry-After: %u", 5u);
    http_error_header(&e, "X-Two: %s", "yes");
    assert_string_equal(e.extra, "Retry-After: 5\r\nX-Two: yes\r\n");
    /* A line that does not fit is left out whole: a cut header would corrupt the head. */
    {
        char big[400];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        http_error_header(&e, "X-Big: %s", big);
        assert_string_equal(e.extra, "Retry-After: 5\r\nX-Two: yes\r\n");
    }
    /* Quotes and control bytes in a message are escaped, so the body stays JSON. */
    http_error_set(&e, 401, "unauthorized", "bad \"token\"\n");
    body = http_error_body(&e, &len);
    assert_string_equal(body, "{\"status\":\"unauthorized\",\"error\":\"bad \\\"token\\\"\\u000a\"}");
    free(body);
}

/* The value of cookie 'name' in h, as a string ("" when absent: "(none)"). */
static const char *cookie(const char *h, const char *name)
{
    static char out[256];
    const char *v;
    size_t n;

    if (http_cookie_find(h, strlen(h), name, &v, &n) < 0)
        return "(none)";
    snprintf(out, sizeof(out), "%.*s", (int)n, v);
    return out;
}

static void test_cookie_find(void **state)
{
    const char *v;
    size_t n;

    (void)state;
    assert_string_equal(cookie("nudge_token=abc", "nudge_token"), "abc");
    assert_string_equal(cookie("a=1; nudge_token=v2.u.x; b=2", "nudge_token"), "v2.u.x");
    assert_string_equal(cookie("a=1;nudge_token=x;b=2", "nudge_token"), "x");
    assert_string_equal(cookie(" nudge_token = x ", "nudge_token"), "x");
    assert_string_equal(cookie("nudge_token=\"q\"", "nudge_token"), "q");
    assert_string_equal(cookie("nudge_token=", "nudge_token"), "");
    /* The first one wins (browsers send the most specific path first). */
    assert_string_equal(cookie("nudge_token=1; nudge_token=2", "nudge_token"), "1");
    /* Names are exact: no prefix, no suffix, no case folding; pairs without '=' skipped. */
    assert_string_equal(cookie("xnudge_token=1; nudge_tokenx=2; NUDGE_TOKEN=3", "nudge_token"),
                        "(none)");
    assert_string_equal(cookie("nudge_token; a=b", "nudge_token"), "(none)");
    assert_string_equal(cookie("a=nudge_token=1", "nudge_token"), "(none)");
    assert_string_equal(cookie("", "nudge_token"), "(none)");
    assert_string_equal(cookie(";;;", "nudge_token"), "(none)");
    assert_string_equal(cookie("\"=\"", "\""), "\"");
    /* Never past len. */
    assert_int_equal(http_cookie_find("nudge_token=abc", 13, "nudge_token", &v, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(http_cookie_find("nudge_token=abc", 11, "nudge_token", &v, &n), -1);
    assert_int_equal(http_cookie_find(NULL, 0, "nudge_token", &v, &n), -1);
}

/* A 204 (a CORS preflight's answer) has no Content-Length and no body (RFC 9110 8.6). */
static void test_no_content_has_no_length(void **state)
{
    size_t len;
    char *built = http_response_build(204, "application/json", "X-A: 1\r\n", "{}", 2, 1, 0, &len);
    char *out;

    (void)state;
    assert_non_null(built);
    /* The answer is bytes, not a string: a NUL-terminated copy for strstr. */
    out = strndup(built, len);
    free(built);
    assert_non_null(out);
    assert_null(strstr(out, "Content-Length"));
    assert_null(strstr(out, "Content-Type"));
    assert_non_null(strstr(out, "X-A: 1\r\n\r\n"));
    assert_int_equal(len, (size_t)(strstr(out, "\r\n\r\n") - out) + 4);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_cookie_find),
        cmocka_unit_test(test_no_content_has_no_length),
        cmocka_unit_test(test_body_and_pipelining),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_header_limit_exact),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_response_exact),
        cmocka_unit_test(test_error_values),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
