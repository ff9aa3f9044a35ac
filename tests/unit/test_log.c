/*
 * test_log.c — the log's ring of recent notable lines (common/log.h): only
 * the kept events go in, the newest LOG_RECENT_LINES stay in order, a line
 * is cut at a character boundary, and what it keeps is valid UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static struct log_recent got[LOG_RECENT_LINES + 8];

/* The log writes to a scratch file: the tests read the ring, not the lines. */
static int setup(void **state)
{
    static FILE *sink;

    (void)state;
    if (sink == NULL)
        sink = tmpfile();
    log_init(sink, LOG_DEBUG);
    log_recent_keep(NULL, 0);
    /* Pushes out whatever an earlier test kept: a fresh ring of one other event. */
    {
        int ids[] = {EV_started};
        log_recent_keep(ids, 1);
        for (int i = 0; i < LOG_RECENT_LINES; i++)
            log_event(LOG_INFO, EV_started, "started", "%s", "");
    }
    return 0;
}

static void test_only_kept_events_go_in(void **state)
{
    int ids[] = {EV_session_limit, EV_stream_slow};
    size_t n, before;

    (void)state;
    before = log_recent_copy(got, LOG_RECENT_LINES);
    log_recent_keep(ids, 2);
    log_event(LOG_WARN, EV_session_limit, "session_limit", "user=%s", "alice");
    log_event(LOG_INFO, EV_conn_closed, "conn_closed", "why=eof");
    log_event(LOG_INFO, EV_stream_slow, "stream_slow", "device=tab1");
    n = log_recent_copy(got, LOG_RECENT_LINES);
    assert_int_equal(n, LOG_RECENT_LINES);
    assert_int_equal(before, LOG_RECENT_LINES);
    assert_int_equal(got[n - 2].event, EV_session_limit);
    assert_int_equal(got[n - 2].level, LOG_WARN);
    assert_string_equal(got[n - 2].text, "level=warn event=1301 name=session_limit user=alice");
    assert_int_equal(got[n - 1].event, EV_stream_slow);
    assert_string_equal(got[n - 1].text, "level=info event=1900 name=stream_slow device=tab1");
    assert_true(got[n - 1].ts_ms >= got[n - 2].ts_ms);
    assert_true(got[n - 1].ts_ms > 1600000000000LL);
}

static void test_ring_keeps_the_newest_in_order(void **state)
{
    int ids[] = {EV_session_closed};
    size_t n;
    char want[64];

    (void)state;
    log_recent_keep(ids, 1);
    for (int i = 0; i < LOG_RECENT_LINES + 5; i++)
        log_event(LOG_INFO, EV_session_closed, "session_closed", "n=%d", i);
    n = log_recent_copy(got, LOG_RECENT_LINES + 8);
    assert_int_equal(n, LOG_RECENT_LINES);
    for (size_t i = 0; i < n; i++) {
        snprintf(want, sizeof(want), "level=info event=1302 name=session_closed n=%zu", i + 5);
        assert_string_equal(got[i].text, want);
    }
    /* Fewer asked for: the newest of them. */
    n = log_recent_copy(got, 2);
    assert_int_equal(n, 2);
    assert_string_equal(got[1].text, "level=info event=1302 name=session_closed n=52");
}

static void test_below_threshold_is_not_kept(void **state)
{
    int ids[] = {EV_heartbeat_alert};
    size_t n;

    (void)state;
    log_recent_keep(ids, 1);
    log_set_level(LOG_WARN);
    log_event(LOG_INFO, EV_heartbeat_alert, "heartbeat_alert", "net=10.0.0.0/24");
    log_set_level(LOG_DEBUG);
    n = log_recent_copy(got, LOG_RECENT_LINES);
    assert_int_not_equal(got[n - 1].event, EV_heartbeat_alert);
}

static void test_long_line_is_cut_whole_characters(void **state)
{
    int ids[] = {EV_session_limit};
    char user[400];
    size_t n, len;

    (void)state;
    /* "é" is two bytes: the cut must fall between two of them, never inside one. */
    for (size_t i = 0; i + 2 < sizeof(user); i += 2)
        memcpy(user + i, "\xc3\xa9", 2);
    user[sizeof(user) - 2] = '\0';
    log_recent_keep(ids, 1);
    log_event(LOG_WARN, EV_session_limit, "session_limit", "user=%s", user);
    n = log_recent_copy(got, LOG_RECENT_LINES);
    len = strlen(got[n - 1].text);
    assert_true(len <= LOG_RECENT_TEXT - 1);
    assert_true(len >= LOG_RECENT_TEXT - 2);
    assert_memory_equal(got[n - 1].text, "level=warn event=1301 name=session_limit user=\xc3\xa9", 48);
    /* The prefix is 46 bytes, so a whole number of characters ends on an even count past it. */
    assert_int_equal((len - 46) % 2, 0);
}

static void test_utf8_copy_replaces_what_is_not_utf8(void **state)
{
    char out[64];
    size_t n;

    (void)state;
    n = log_utf8_copy(out, sizeof(out), "ok \xe2\x82\xac \xf0\x9f\x98\x80", 11);
    assert_int_equal(n, 11);
    assert_memory_equal(out, "ok \xe2\x82\xac \xf0\x9f\x98\x80", 12);
    /* A lone continuation byte, an overlong '/', a surrogate, past U+10FFFF, 0xff. */
    n = log_utf8_copy(out, sizeof(out), "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xf4\x90\x80\x80" "e\xff",
                      16);
    assert_string_equal(out, "a?b??c???d????e?");
    assert_int_equal(n, 16);
    /* A sequence cut short by the end of the input. */
    n = log_utf8_copy(out, sizeof(out), "x\xe2\x82", 3);
    assert_string_equal(out, "x??");
    /* A character that does not fit is left out whole. */
    n = log_utf8_copy(out, 4, "ab\xe2\x82\xac", 5);
    assert_string_equal(out, "ab");
    assert_int_equal(n, 2);
    n = log_utf8_copy(out, 1, "abc", 3);
    assert_int_equal(n, 0);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_only_kept_events_go_in, setup),
        cmocka_unit_test_setup(test_ring_keeps_the_newest_in_order, setup),
        cmocka_unit_test_setup(test_below_threshold_is_not_kept, setup),
        cmocka_unit_test_setup(test_long_line_is_cut_whole_characters, setup),
        cmocka_unit_test(test_utf8_copy_replaces_what_is_not_utf8),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
