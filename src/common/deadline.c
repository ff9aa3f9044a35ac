/*
 * deadline.c — binary min-heap keyed by deadline; see deadline.h.
 *
 * Each heap slot holds its key beside the node pointer, so sifting compares
 * keys in one array instead of following a pointer into every connection
 * (a cache miss per level). A deadline moved later is not sifted at all:
 * the slot keeps its earlier key and only the node's 'at' changes; when
 * that slot reaches the top, deadline_peek gives it the real key and sifts
 * it down once. A held ping's connection moves its deadline later on every
 * answer and re-poll, so most moves cost nothing; profiled at 100k held
 * pings, sifting on every move was 4% of a worker's CPU during a fan-out.
 */
#include "common/deadline.h"

#include <stdlib.h>

#include "common/xalloc.h"

void deadline_heap_init(struct deadline_heap *h)
{
    h->slots = NULL;
    h->len = h->cap = 0;
}

void deadline_heap_free(struct deadline_heap *h)
{
    for (uint32_t i = 0; i < h->len; i++)
        h->slots[i].node->idx = 0;
    free(h->slots);
    deadline_heap_init(h);
}

static void place(struct deadline_heap *h, uint32_t i, struct deadline_slot sl)
{
    h->slots[i] = sl;
    sl.node->idx = i + 1;
}

static void sift_up(struct deadline_heap *h, uint32_t i)
{
    struct deadline_slot sl = h->slots[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->slots[parent].key <= sl.key)
            break;
        place(h, i, h->slots[parent]);
        i = parent;
    }
    place(h, i, sl);
}

static void sift_down(struct deadline_heap *h, uint32_t i)
{
    struct deadline_slot sl = h->slots[i];

    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = sl.key;
        if (l < h->len && h->slots[l].key < best) {
            m = l;
            best = h->slots[l].key;
        }
        if (r < h->len && h->slots[r].key < best)
            m = r;
        if (m == i)
            break;
        place(h, i, h->slots[m]);
        i = m;
    }
    place(h, i, sl);
}

void deadline_set(struct deadline_heap *h, struct deadline_node *n, uint64_t at)
{
    n->at = at;
    if (n->idx) {
        struct deadline_slot *sl = &h->slots[n->idx - 1];
        if (at >= sl->key)
            return; /* later: the slot keeps its key until it reaches the top */
        sl->key = at;
        sift_up(h, n->idx - 1);
        return;
    }
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->slots = xrealloc(h->slots, h->cap * sizeof(*h->slots));
    }
    place(h, h->len++, (struct deadline_slot){.key = at, .node = n});
    sift_up(h, h->len - 1);
}

void deadline_clear(struct deadline_heap *h, struct deadline_node *n)
{
    uint32_t i;
    struct deadline_slot last;

    if (n->idx == 0)
        return;
    i = n->idx - 1;
    n->idx = 0;
    last = h->slots[--h->len];
    if (i == h->len)
        return;
    place(h, i, last);
    /* The moved slot may belong above or below its new place. */
    if (i > 0 && h->slots[(i - 1) / 2].key > last.key)
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct deadline_node *deadline_peek(struct deadline_heap *h)
{
    /* Every key is at most its node's deadline: once the top's key is its
     * deadline, no node in the heap is due earlier. */
    while (h->len && h->slots[0].key < h->slots[0].node->at) {
        h->slots[0].key = h->slots[0].node->at;
        sift_down(h, 0);
    }
    return h->len ? h->slots[0].node : NULL;
}
