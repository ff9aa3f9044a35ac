/* test_deadline.c — the connection deadline heap keeps its order under churn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "server/deadline.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_churn),
    };
    return cmocka_run_group_tests_name("deadline", tests, NULL, NULL);
}
