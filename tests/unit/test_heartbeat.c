/*
 * test_heartbeat.c — the adaptive heartbeat's rules, step by step, on the
 * heartbeat module and a shard of its own: raises after sample_size proofs, the fall
 * back to the proven heartbeat with the failed one as a ceiling, closing in
 * on a ceiling without reaching it, ceilings that expire, halving when
 * nothing was proven, and the per-network average.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/log.h"
#include "session/heartbeat.h"
#include "shard/shard.h"

static struct heartbeat hb;
static struct shard shard;
static struct config cfg;

static int setup(void **state)
{
    (void)state;
    log_init(NULL, LOG_ERROR);
    config_defaults(&cfg);
    cfg.heartbeat_min = 60;
    cfg.heartbeat_max = 1680;
    cfg.heartbeat_increment = 60;
    cfg.heartbeat_sample_size = 2;
    cfg.heartbeat_grace = 30;
    cfg.heartbeat_ceiling_retry = 86400;
    cfg.heartbeat_alert_average = 540;
    cfg.heartbeat_alert_min_devices = 2;
    shard_init(&shard);
    hb_init(&hb, &cfg, &shard);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    shard_free(&shard);
    hb_free(&hb);
    return 0;
}

static struct sockaddr_in peer(const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

/* The device pings with heartbeat hb, it expires, and (after 'gap_ms') it pings again. */
static void cycle(struct device *d, unsigned seconds, uint64_t gap_ms, const char *ip)
{
    struct sockaddr_in a = peer(ip);

    d->heartbeat = seconds;
    hb_on_expired(&hb, d, seconds);
    hb_device(&hb, d)->expired_at -= gap_ms; /* as if the next ping came gap_ms after the answer */
    hb_on_ping(&hb, d, (struct sockaddr *)&a, 0);
}

static struct device *new_device(const char *user, const char *id, unsigned seconds,
                                 const char *ip)
{
    struct user *u = shard_user(&shard, user, 1);
    struct device *d = shard_device(&shard, u, id, 1);
    struct sockaddr_in a = peer(ip);

    hb_first_hint(&hb, d, seconds);
    hb_on_ping(&hb, d, (struct sockaddr *)&a, 0);
    return d;
}

static void test_raise_after_sample_then_fall_back(void **state)
{
    struct device *d = new_device("u1", "phone", 60, "10.0.0.5");

    (void)state;
    assert_int_equal(hb_hint(&hb, d), 60);
    cycle(d, 60, 100, "10.0.0.5");
    assert_int_equal(d->heartbeat_hint, 60); /* one proof of two */
    cycle(d, 60, 100, "10.0.0.5");
    assert_int_equal(d->heartbeat_hint, 120);
    cycle(d, 120, 100, "10.0.0.5");
    cycle(d, 120, 100, "10.0.0.5");
    assert_int_equal(d->heartbeat_hint, 180);
    /* 180 is eaten: the next ping comes 90 s after the answer (> grace 30). */
    cycle(d, 180, 90000, "10.0.0.5");
    assert_int_equal(d->heartbeat_hint, 120);
    assert_int_equal(d->heartbeat_ceiling, 180);
    assert_int_equal(d->heartbeat_good, 120);
    /* Closing in: halfway to the ceiling, never on it. */
    cycle(d, 120, 100, "10.0.0.5");
    cycle(d, 120, 100, "10.0.0.5");
    assert_int_equal(d->heartbeat_hint, 150);
    for (int i = 0; i < 20; i++)
        cycle(d, d->heartbeat_hint, 100, "10.0.0.5");
    assert_true(d->heartbeat_hint < 180 && d->heartbeat_hint >= 170);
}

static void test_ceiling_expires(void **state)
{
    struct device *d = new_device("u2", "phone", 300, "10.0.1.5");

    (void)state;
    cycle(d, 300, 90000, "10.0.1.5"); /* fails with nothing proven: half */
    assert_int_equal(d->heartbeat_hint, 150);
    assert_int_equal(d->heartbeat_ceiling, 300);
    d->ceiling_since = (int64_t)time(NULL) - 86401; /* a day later */
    cycle(d, 150, 100, "10.0.1.5");
    cycle(d, 150, 100, "10.0.1.5");
    assert_int_equal(d->heartbeat_ceiling, 0);
    assert_int_equal(d->heartbeat_hint, 210);
}

static void test_away_device_is_no_evidence_and_supersede_is(void **state)
{
    struct device *d = new_device("u3", "phone", 600, "10.0.2.5");
    struct sockaddr_in a = peer("10.0.2.5");

    (void)state;
    /* Back after two hours: it was away, not failed. */
    cycle(d, 600, 7200 * 1000ull, "10.0.2.5");
    assert_int_equal(d->heartbeat_hint, 600);
    assert_int_equal(d->heartbeat_ceiling, 0);
    /* A new ping while the 600 s one is held: the path ate something. */
    d->heartbeat = 600;
    hb_on_ping(&hb, d, (struct sockaddr *)&a, 1);
    assert_int_equal(d->heartbeat_ceiling, 600);
    assert_int_equal(d->heartbeat_hint, 300);
}

static void test_network_average(void **state)
{
    struct device *a = new_device("n1", "a", 600, "192.0.2.10");
    struct device *b = new_device("n2", "b", 600, "192.0.2.20");
    struct device *c = new_device("n3", "c", 600, "198.51.100.7");
    struct hbnet *net = hb_device(&hb, a)->net;

    (void)state;
    assert_ptr_equal(hb_device(&hb, a)->net, hb_device(&hb, b)->net);
    assert_ptr_not_equal(hb_device(&hb, a)->net, hb_device(&hb, c)->net);
    assert_string_equal(net->name, "192.0.2.0/24");
    assert_int_equal(net->devices, 2);
    assert_int_equal(net->counted, 0); /* nobody has hit a middlebox yet */
    cycle(a, 600, 90000, "192.0.2.10");
    /* One device with a ceiling is below alert_min_devices (2): it speaks for itself only. */
    assert_int_equal(net->counted, 1);
    assert_false(net->alerted);
    cycle(b, 600, 90000, "192.0.2.20");
    assert_int_equal(net->counted, 2);
    assert_int_equal(net->hint_sum, 600);
    assert_true(net->alerted);
    assert_false(hb_device(&hb, c)->net->alerted);
    /* A device moving to another network takes its hint along. */
    cycle(b, 300, 100, "198.51.100.9");
    assert_int_equal(net->devices, 1);
    assert_int_equal(net->counted, 1);
    assert_int_equal(net->hint_sum, 300);
    hb_forget(&hb, a);
    assert_int_equal(net->devices, 0);
    assert_int_equal(net->counted, 0);
}

/* Once logged, the alert stays logged while the population dips below the minimum. */
static void test_alert_waits_for_the_population(void **state)
{
    struct device *d[4];
    struct hbnet *net;
    char id[16];

    (void)state;
    cfg.heartbeat_alert_min_devices = 3;
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof(id), "d%d", i);
        d[i] = new_device("pop", id, 600, "203.0.113.5");
    }
    net = hb_device(&hb, d[0])->net;
    cycle(d[0], 600, 90000, "203.0.113.5");
    cycle(d[1], 600, 90000, "203.0.113.5");
    assert_int_equal(net->counted, 2);
    assert_false(net->alerted);
    cycle(d[2], 600, 90000, "203.0.113.5");
    assert_int_equal(net->counted, 3);
    assert_true(net->alerted);
    hb_forget(&hb, d[2]);
    assert_true(net->alerted);
    cycle(d[3], 600, 90000, "203.0.113.5");
    assert_true(net->alerted);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_raise_after_sample_then_fall_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ceiling_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_away_device_is_no_evidence_and_supersede_is, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_network_average, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alert_waits_for_the_population, setup, teardown),
    };
    return cmocka_run_group_tests_name("heartbeat", tests, NULL, NULL);
}
