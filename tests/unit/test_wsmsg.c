/*
 * test_wsmsg.c — the WebSocket wire of /v1/ws (stream/wsmsg.h): RFC 6455's
 * own accept-key example, frame heads at the length boundaries, the frame
 * scanner against every split of a stream of frames, UTF-8 edge cases (of
 * util_utf8_valid, which the fuzz target filters messages with), and
 * each client message read or refused with the right JMAP error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/jsonw.h"
#include "common/util.h"
#include "stream/wsmsg.h"

static void test_accept_key(void **state)
{
    char out[29];

    (void)state;
    /* RFC 6455 1.3. */
    assert_int_equal(wsmsg_accept("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(wsmsg_accept("dGhlIHNhbXBsZSBub25jZQ=", out), -1);   /* 23 characters */
    assert_int_equal(wsmsg_accept("dGhlIHNhbXBsZSBub25jZQAA", out), -1);  /* 18 bytes */
    assert_int_equal(wsmsg_accept("dGhlIHNhbXBsZSBub25j!Q==", out), -1);  /* not base64 */
    assert_int_equal(wsmsg_accept("", out), -1);
}

static void test_tokens(void **state)
{
    (void)state;
    assert_true(wsmsg_has_token("jmap", "jmap"));
    assert_true(wsmsg_has_token("chat, JMAP ,x", "jmap"));
    assert_true(wsmsg_has_token("keep-alive,Upgrade", "upgrade"));
    assert_false(wsmsg_has_token("jmapx, xjmap", "jmap"));
    assert_false(wsmsg_has_token("", "jmap"));
    assert_false(wsmsg_has_token(" , ,", "jmap"));
}

static void test_frame_heads(void **state)
{
    unsigned char h[10];

    (void)state;
    assert_int_equal(wsmsg_frame_head(h, WSMSG_TEXT, 125), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 125);
    assert_int_equal(wsmsg_frame_head(h, WSMSG_TEXT, 126), 4);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2] << 8 | h[3], 126);
    assert_int_equal(wsmsg_frame_head(h, WSMSG_CLOSE, 65535), 4);
    assert_int_equal(h[0], 0x88);
    assert_int_equal(wsmsg_frame_head(h, WSMSG_TEXT, 65536), 10);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[7], 1);
    assert_int_equal(h[8] | h[9], 0);
}

/* A client frame: masked with a fixed key (the scanner only counts bytes). */
static size_t client_frame(unsigned char *out, unsigned b0, size_t len)
{
    size_t n = 0;

    out[n++] = (unsigned char)b0;
    if (len < 126) {
        out[n++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[n++] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(out + n, "\x01\x02\x03\x04", 4);
    n += 4;
    memset(out + n, 'a', len);
    return n + len;
}

static void test_scan_every_split(void **state)
{
    static unsigned char buf[70000 + 1000];
    size_t n = 0, ends[8], k = 0;

    (void)state;
    n += client_frame(buf + n, 0x81, 5);         /* text */
    ends[k++] = n;
    n += client_frame(buf + n, 0x01, 300);       /* text, not final: a fragment */
    n += client_frame(buf + n, 0x89, 0);         /* a ping inside the message */
    n += client_frame(buf + n, 0x80, 0);         /* the last fragment, empty */
    ends[k++] = n;
    n += client_frame(buf + n, 0x82, 70000);     /* binary, 64-bit length */
    ends[k++] = n;
    /* Fed in two pieces cut anywhere (and byte by byte), it is idle exactly at the ends. */
    for (size_t cut = 0; cut <= n; cut += (cut < 400 ? 1 : 997)) {
        struct wsmsg_scan s = {0};
        int idle_at_cut;
        wsmsg_scan(&s, buf, cut);
        idle_at_cut = wsmsg_scan_idle(&s);
        int expect = cut == 0;
        for (size_t i = 0; i < k; i++)
            expect |= cut == ends[i];
        assert_int_equal(idle_at_cut, expect);
        wsmsg_scan(&s, buf + cut, n - cut);
        assert_true(wsmsg_scan_idle(&s));
        assert_int_equal(s.bad, 0);
    }
    {
        struct wsmsg_scan s = {0};
        for (size_t i = 0; i < ends[1]; i++)
            wsmsg_scan(&s, buf + i, 1);
        assert_true(wsmsg_scan_idle(&s));
    }
}

static void test_scan_bad_control_frames(void **state)
{
    unsigned char buf[300];
    struct wsmsg_scan s = {0};
    size_t n = client_frame(buf, 0x09, 0); /* a ping without FIN */

    (void)state;
    wsmsg_scan(&s, buf, n);
    assert_int_equal(s.bad, 1);
    assert_non_null(strstr(wsmsg_scan_bad(&s), "fragmented"));
    memset(&s, 0, sizeof(s));
    n = client_frame(buf, 0x8a, 126); /* a pong over 125 bytes */
    wsmsg_scan(&s, buf, n);
    assert_int_equal(s.bad, 2);
    assert_non_null(strstr(wsmsg_scan_bad(&s), "125"));
}

static void test_utf8(void **state)
{
    (void)state;
#define U(s) util_utf8_valid((const unsigned char *)(s), sizeof(s) - 1)
    assert_true(U(""));
    assert_true(U("plain"));
    assert_true(U("\xc3\xa9t\xc3\xa9"));           /* été */
    assert_true(U("\xe2\x82\xac"));                /* € */
    assert_true(U("\xf0\x9f\x93\xa8"));            /* 📨 */
    assert_true(U("\xf4\x8f\xbf\xbf"));            /* U+10FFFF */
    assert_false(U("\xc0\xaf"));                   /* overlong / */
    assert_false(U("\xe0\x80\xaf"));               /* overlong, 3 bytes */
    assert_false(U("\xed\xa0\x80"));               /* a surrogate */
    assert_false(U("\xf4\x90\x80\x80"));           /* over U+10FFFF */
    assert_false(U("\xc3"));                       /* cut short */
    assert_false(U("\xe2\x82"));
    assert_false(U("\x80"));                       /* a lone continuation */
    assert_false(U("\xc3\x28"));                   /* a bad continuation */
    assert_false(U("\xff"));
#undef U
}

static void parse(const char *text, struct wsmsg *m)
{
    wsmsg_parse(text, strlen(text), 4, m);
}

static void expect_error(const char *text, const char *urn, const char *words)
{
    struct wsmsg m;

    parse(text, &m);
    assert_int_equal(m.type, WSMSG_ERROR);
    assert_string_equal(m.err_type, urn);
    if (strstr(m.detail, words) == NULL)
        fail_msg("%s: detail \"%s\" lacks \"%s\"", text, m.detail, words);
    wsmsg_free(&m);
}

static void test_parse_messages(void **state)
{
    struct wsmsg m;

    (void)state;
    parse("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":[\"INBOX\",\"Sent\"],"
          "\"pushState\":\"1:INBOX=3\"}", &m);
    assert_int_equal(m.type, WSMSG_PUSH_ENABLE);
    assert_int_equal(m.ntypes, 2);
    assert_string_equal(m.types[1], "Sent");
    assert_string_equal(m.push_state, "1:INBOX=3");
    assert_false(m.all);
    wsmsg_free(&m);
    parse("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":null}", &m);
    assert_int_equal(m.type, WSMSG_PUSH_ENABLE);
    assert_true(m.all);
    assert_null(m.push_state);
    wsmsg_free(&m);
    parse("{\"@type\":\"WebSocketPushEnable\"}", &m);
    assert_true(m.type == WSMSG_PUSH_ENABLE && m.all);
    wsmsg_free(&m);
    parse("{\"@type\":\"WebSocketPushDisable\"}", &m);
    assert_int_equal(m.type, WSMSG_PUSH_DISABLE);
    wsmsg_free(&m);

#define URN "urn:ietf:params:jmap:error:"
    expect_error("", URN "notJSON", "not JSON");
    expect_error("{\"@type\":", URN "notJSON", "not JSON");
    expect_error("{\"a\":1,\"a\":2}", URN "notJSON", "duplicate");
    expect_error("[]", URN "notRequest", "@type");
    expect_error("{\"@type\":7}", URN "notRequest", "@type");
    expect_error("{\"@type\":\"Nope\"}", URN "notRequest", "unknown @type Nope");
    expect_error("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":{}}", URN "notRequest",
                 "array of folder names");
    expect_error("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":[]}", URN "notRequest",
                 "names no folder");
    expect_error("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":[\"a\",null]}", URN "notRequest",
                 "dataTypes[1] is not a string");
    expect_error("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":[\"\"]}", URN "notRequest",
                 "dataTypes[0]");
    expect_error("{\"@type\":\"WebSocketPushEnable\",\"dataTypes\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
                 URN "limit", "max_folders (4)");
    expect_error("{\"@type\":\"WebSocketPushEnable\",\"pushState\":[]}", URN "notRequest",
                 "pushState must be a string");

    parse("{\"@type\":\"Request\",\"id\":\"R7\",\"using\":[],\"methodCalls\":[]}", &m);
    assert_int_equal(m.type, WSMSG_ERROR);
    assert_string_equal(m.err_type, URN "unknownCapability");
    assert_string_equal(m.request_id, "R7");
    {
        struct jsonw w;
        size_t len;
        char *text;
        jw_init(&w);
        wsmsg_request_error(&w, &m);
        text = jw_take(&w, &len);
        assert_non_null(strstr(text, "\"@type\":\"RequestError\""));
        assert_non_null(strstr(text, "\"requestId\":\"R7\""));
        assert_non_null(strstr(text, "\"status\":400"));
        free(text);
    }
    wsmsg_free(&m);
#undef URN
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_frame_heads),
        cmocka_unit_test(test_scan_every_split),
        cmocka_unit_test(test_scan_bad_control_frames),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_parse_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
