/*
 * test_shard.c — the shard's users and devices as plain data, and the slots
 * the layers above reserve in them: each slot is its own, zeroed, stays put
 * while the maps grow, and survives alongside its neighbours; devices come
 * and go without disturbing the others; the record a device gives the store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "shard/shard.h"

struct two_words {
    uint64_t a, b;
};

static void test_slots_are_separate_and_zeroed(void **state)
{
    struct shard sh;
    size_t d1, d2, u1;
    struct user *u;
    struct device *d, *e;

    (void)state;
    shard_init(&sh);
    d1 = shard_device_slot(&sh, sizeof(struct two_words));
    d2 = shard_device_slot(&sh, 3); /* rounded up: the next slot stays aligned */
    u1 = shard_user_slot(&sh, sizeof(uint32_t));
    assert_int_equal(d1, 16);
    assert_int_equal(d2, 24);
    assert_int_equal(u1, 8);
    u = shard_user(&sh, "alice", 1);
    d = shard_device(&sh, u, "phone", 1);
    e = shard_device(&sh, u, "tablet", 1);
    assert_int_equal(((struct two_words *)shard_slot(d, d1))->a, 0);
    assert_int_equal(((struct two_words *)shard_slot(d, d1))->b, 0);
    assert_int_equal(*(uint8_t *)shard_slot(d, d2), 0);
    assert_int_equal(*(uint32_t *)shard_slot(u, u1), 0);
    ((struct two_words *)shard_slot(d, d1))->a = 7;
    ((struct two_words *)shard_slot(d, d1))->b = 8;
    memset(shard_slot(d, d2), 0xab, 3);
    *(uint32_t *)shard_slot(u, u1) = 42;
    /* The struct itself is untouched by its slots, and the other device by this one's. */
    assert_string_equal(d->id, "phone");
    assert_ptr_equal(d->user, u);
    assert_int_equal(((struct two_words *)shard_slot(e, d1))->a, 0);
    assert_int_equal(*(uint8_t *)shard_slot(e, d2), 0);
    /* Many more users and devices: the maps grow, the objects do not move. */
    for (int i = 0; i < 2000; i++) {
        char id[32];
        snprintf(id, sizeof(id), "u%d", i);
        shard_device(&sh, shard_user(&sh, id, 1), "d", 1);
    }
    assert_ptr_equal(shard_user(&sh, "alice", 0), u);
    assert_ptr_equal(shard_device(&sh, u, "phone", 0), d);
    assert_int_equal(((struct two_words *)shard_slot(d, d1))->b, 8);
    assert_int_equal(*(uint8_t *)shard_slot(d, d2 - 2), 0xab);
    assert_int_equal(*(uint32_t *)shard_slot(u, u1), 42);
    shard_free(&sh);
}

static void test_devices_come_and_go(void **state)
{
    struct shard sh;
    struct user *u;
    struct device *d;

    (void)state;
    shard_init(&sh);
    shard_device_slot(&sh, 40);
    u = shard_user(&sh, "bob", 1);
    assert_null(shard_user(&sh, "nobody", 0));
    assert_null(shard_device(&sh, u, "phone", 0));
    d = shard_device(&sh, u, "phone", 1);
    shard_device(&sh, u, "desk", 1);
    assert_ptr_equal(shard_device(&sh, u, "phone", 1), d); /* no second device of one id */
    shard_device_remove(&sh, d);
    assert_null(shard_device(&sh, u, "phone", 0));
    assert_non_null(shard_device(&sh, u, "desk", 0));
    assert_int_equal(strmap_len(&u->devices), 1);
    shard_free(&sh);
}

static void test_record_mirrors_the_device(void **state)
{
    const struct store_folder f[2] = {{"INBOX", 17}, {"Sent", 3}};
    struct store_device rec;
    struct shard sh;
    struct device *d;

    (void)state;
    shard_init(&sh);
    d = shard_device(&sh, shard_user(&sh, "carol", 1), "phone", 1);
    shard_set_folders(d, f, 2);
    d->heartbeat = 480;
    d->heartbeat_hint = 540;
    d->heartbeat_good = 480;
    d->heartbeat_ceiling = 900;
    d->ceiling_since = 1700000000;
    shard_record(d, &rec);
    assert_string_equal(rec.user, "carol");
    assert_string_equal(rec.device, "phone");
    assert_int_equal(rec.heartbeat, 480);
    assert_int_equal(rec.heartbeat_hint, 540);
    assert_int_equal(rec.heartbeat_good, 480);
    assert_int_equal(rec.heartbeat_ceiling, 900);
    assert_int_equal(rec.ceiling_since, 1700000000);
    assert_int_equal(rec.nfolders, 2);
    assert_string_equal(rec.folders[1].name, "Sent");
    assert_int_equal(rec.folders[0].state, 17);
    assert_null(rec.udp);
    /* The folders are copied, not borrowed. */
    assert_ptr_not_equal(d->folders[0].name, f[0].name);
    shard_free(&sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_are_separate_and_zeroed),
        cmocka_unit_test(test_devices_come_and_go),
        cmocka_unit_test(test_record_mirrors_the_device),
    };
    return cmocka_run_group_tests_name("shard", tests, NULL, NULL);
}
