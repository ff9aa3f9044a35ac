/* test_deadline.c — the connection deadline heap keeps its order under churn and lazy moves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "common/deadline.h"

static void test_order_and_churn(void **state)
{
    enum { N = 2000 };
    struct deadline_heap h;
    struct deadline_node *nodes = calloc(N, sizeof(*nodes));
    uint64_t last = 0;
    unsigned seed = 7, popped = 0;

    (void)state;
    deadline_heap_init(&h);
    for (int i = 0; i < N; i++)
        deadline_set(&h, &nodes[i], (uint64_t)(rand_r(&seed) % 100000));
    /* Move some earlier, some later, remove some. */
    for (int i = 0; i < N; i += 3)
        deadline_set(&h, &nodes[i], (uint64_t)(rand_r(&seed) % 100000));
    for (int i = 1; i < N; i += 5)
        deadline_clear(&h, &nodes[i]);
    deadline_clear(&h, &nodes[1]); /* clearing twice is harmless */
    while (deadline_peek(&h)) {
        struct deadline_node *n = deadline_peek(&h);
        assert_true(n->at >= last);
        last = n->at;
        deadline_clear(&h, n);
        assert_int_equal(n->idx, 0);
        popped++;
    }
    assert_int_equal(popped, N - N / 5);
    deadline_heap_free(&h);
    free(nodes);
}

/*
 * Deadlines moved later stay where they were until they reach the top
 * (deadline.c): against a plain array, peek must still give the earliest
 * deadline after every step of a random mix of moves, inserts and removals,
 * and the due nodes must come out in order as a server's timer takes them.
 */
static void test_lazy_moves_match_a_plain_scan(void **state)
{
    enum { N = 500, STEPS = 20000 };
    struct deadline_heap h;
    struct deadline_node *nodes = calloc(N, sizeof(*nodes));
    uint64_t now = 0;
    unsigned seed = 11;

    (void)state;
    deadline_heap_init(&h);
    for (int step = 0; step < STEPS; step++) {
        struct deadline_node *n = &nodes[rand_r(&seed) % N], *top;
        unsigned op = (unsigned)rand_r(&seed) % 10;
        uint64_t want = UINT64_MAX;

        if (op < 6) /* mostly later, as connections re-arm */
            deadline_set(&h, n, now + 1 + (uint64_t)(rand_r(&seed) % 5000));
        else if (op < 8)
            deadline_set(&h, n, now + (uint64_t)(rand_r(&seed) % 50));
        else if (op < 9)
            deadline_clear(&h, n);
        else
            now += (uint64_t)(rand_r(&seed) % 100);
        for (int i = 0; i < N; i++)
            if (nodes[i].idx && nodes[i].at < want)
                want = nodes[i].at;
        top = deadline_peek(&h);
        if (want == UINT64_MAX) {
            assert_null(top);
            continue;
        }
        assert_non_null(top);
        assert_int_equal(top->at, want);
        /* The timer fires: everything due goes, earliest first. */
        if (op == 9) {
            uint64_t last = 0;
            while ((top = deadline_peek(&h)) != NULL && top->at <= now) {
                assert_true(top->at >= last);
                last = top->at;
                deadline_clear(&h, top);
            }
            for (int i = 0; i < N; i++)
                assert_true(nodes[i].idx == 0 || nodes[i].at > now);
        }
    }
    deadline_heap_free(&h);
    for (int i = 0; i < N; i++)
        assert_int_equal(nodes[i].idx, 0);
    free(nodes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_churn),
        cmocka_unit_test(test_lazy_moves_match_a_plain_scan),
    };
    return cmocka_run_group_tests_name("deadline", tests, NULL, NULL);
}
