/* test_store.c — the memory store behind the store interface, and strmap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/strmap.h"
#include "store/store.h"

static int done_calls;
static int done_status;

static void on_done(void *arg, struct store_event *ev, size_t n, int status)
{
    (void)ev;
    (void)n;
    *(int *)arg += 1;
    done_calls++;
    done_status = status;
}

static struct store *open_mem(void)
{
    struct config c;
    struct store *s = NULL;
    char err[128];

    config_defaults(&c);
    assert_non_null(store_backend_find("memory"));
    assert_null(store_backend_find("nope"));
    assert_int_equal(store_backend_find("memory")->open(&s, &c, NULL, err, sizeof(err)), 0);
    return s;
}

struct seen {
    int n;
    uint64_t inbox, sent;
};

static void on_list(void *arg, const char *folder, uint64_t state)
{
    struct seen *s = arg;
    s->n++;
    if (strcmp(folder, "INBOX") == 0)
        s->inbox = state;
    if (strcmp(folder, "Sent") == 0)
        s->sent = state;
}

static void test_unknown_is_zero(void **state)
{
    struct store *s = open_mem();
    struct seen seen = {0};

    (void)state;
    assert_int_equal(store_get(s, "alice", "INBOX"), 0);
    assert_int_equal(store_list(s, "alice", on_list, &seen), 0);
    assert_int_equal(seen.n, 0);
    store_close(s);
}

static void test_bump_counts_each_event(void **state)
{
    struct store *s = open_mem();
    struct store_event ev[3] = {
        {.user = "alice", .folder = "INBOX"},
        {.user = "alice", .folder = "INBOX"},
        {.user = "alice", .folder = "Sent"},
    };
    struct seen seen = {0};
    int calls = 0;

    (void)state;
    done_calls = 0;
    assert_int_equal(store_bump(s, ev, 3, on_done, &calls), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(done_status, 0);
    assert_int_equal(ev[0].state, 1);
    assert_int_equal(ev[1].state, 2);
    assert_int_equal(ev[2].state, 1);
    assert_int_equal(store_get(s, "alice", "INBOX"), 2);
    assert_int_equal(store_get(s, "bob", "INBOX"), 0);
    assert_int_equal(store_list(s, "alice", on_list, &seen), 2);
    assert_int_equal(seen.inbox, 2);
    assert_int_equal(seen.sent, 1);
    /* Nothing here writes, so nothing can fail: the store has no health op. */
    assert_true(store_healthy(s));
    store_close(s);
}

static void test_users_are_separate(void **state)
{
    struct store *s = open_mem();
    struct store_event ev = {.user = "a@example.org", .folder = "INBOX"};
    int calls = 0;

    (void)state;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(store_bump(s, &ev, 1, on_done, &calls), 0);
    assert_int_equal(calls, 1000);
    assert_int_equal(store_get(s, "a@example.org", "INBOX"), 1000);
    assert_int_equal(store_get(s, "a@example.or", "INBOX"), 0);
    assert_int_equal(store_get(s, "a@example.org", "INBOX "), 0);
    store_close(s);
}

static void test_strmap_grow_delete(void **state)
{
    struct strmap m;
    char (*keys)[16] = malloc(5000 * sizeof(*keys));

    (void)state;
    strmap_init(&m);
    for (int i = 0; i < 5000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        assert_null(strmap_put(&m, keys[i], strlen(keys[i]), &keys[i]));
    }
    assert_int_equal(strmap_len(&m), 5000);
    for (int i = 0; i < 5000; i += 2)
        assert_ptr_equal(strmap_del(&m, keys[i], strlen(keys[i])), &keys[i]);
    assert_int_equal(strmap_len(&m), 2500);
    for (int i = 0; i < 5000; i++) {
        void *v = strmap_get(&m, keys[i], strlen(keys[i]));
        if (i % 2)
            assert_ptr_equal(v, &keys[i]);
        else
            assert_null(v);
    }
    /* Reinsert over tombstones; iteration sees each live key once. */
    for (int i = 0; i < 5000; i += 2)
        assert_null(strmap_put(&m, keys[i], strlen(keys[i]), &keys[i]));
    uint32_t pos = 0, count = 0;
    const char *k;
    void *v;
    while (strmap_next(&m, &pos, &k, &v))
        count++;
    assert_int_equal(count, 5000);
    strmap_free(&m);
    free(keys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_is_zero),
        cmocka_unit_test(test_bump_counts_each_event),
        cmocka_unit_test(test_users_are_separate),
        cmocka_unit_test(test_strmap_grow_delete),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
