/*
 * test_owner.c — which worker owns a user: the values are part of the
 * on-disk layout (shard files), so they must never change, and they must
 * spread users evenly. The same values are computed by the e2e harness
 * (harness.worker_of) from its own implementation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "store/reshard.h"
#include "worker/worker.h"

static unsigned own(const char *u, unsigned n)
{
    return worker_owner(u, strlen(u), n);
}

static void test_fixed_values(void **state)
{
    (void)state;
    /* Computed once; a change here moves every user of every deployment. */
    assert_int_equal(own("alice", 7), 5);
    assert_int_equal(own("bob", 7), 4);
    assert_int_equal(own("u12345", 64), 33);
    assert_int_equal(own("u12345", 3), 1);
    assert_int_equal(own("\xc3\xbc@example.org", 3), 1);
    assert_int_equal(own("\xc3\xbc@example.org", 64), 56);
    assert_int_equal(own("", 3), 0);
    /* One worker owns everybody. */
    assert_int_equal(own("alice", 1), 0);
    assert_int_equal(own("alice", 0), 0);
}

static void test_even_spread(void **state)
{
    enum { USERS = 60000 };
    static const unsigned counts[] = {2, 3, 4, 5, 8, 16};

    (void)state;
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
        unsigned n = counts[k], seen[16] = {0};
        char u[32];
        for (int i = 0; i < USERS; i++) {
            snprintf(u, sizeof(u), "user%d@example.org", i);
            seen[own(u, n)]++;
        }
        /* Within 3% of a fair share. */
        for (unsigned w = 0; w < n; w++) {
            assert_true(seen[w] > USERS / n * 97 / 100);
            assert_true(seen[w] < USERS / n * 103 / 100);
        }
    }
}

static void test_shard_paths(void **state)
{
    static struct config c;
    char out[PATH_MAX];

    (void)state;
    memset(&c, 0, sizeof(c));
    snprintf(c.data_dir, sizeof(c.data_dir), "/var/lib/nudge");
    reshard_path(&c, 0, out, sizeof(out));
    assert_string_equal(out, "/var/lib/nudge/nudge.db");
    reshard_path(&c, 2, out, sizeof(out));
    assert_string_equal(out, "/var/lib/nudge/nudge.db.shard2");
    snprintf(c.store_path, sizeof(c.store_path), "/srv/states.sqlite");
    reshard_path(&c, 11, out, sizeof(out));
    assert_string_equal(out, "/srv/states.sqlite.shard11");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_values),
        cmocka_unit_test(test_even_spread),
        cmocka_unit_test(test_shard_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
