/* deadline.c — binary min-heap keyed by deadline; see deadline.h. */
#include "server/deadline.h"

#include <stdlib.h>

#include "common/xalloc.h"

void deadline_heap_init(struct deadline_heap *h)
{
    h->nodes = NULL;
    h->len = h->cap = 0;
}

void deadline_heap_free(struct deadline_heap *h)
{
    for (uint32_t i = 0; i < h->len; i++)
        h->nodes[i]->idx = 0;
    free(h->nodes);
    deadline_heap_init(h);
}

static void place(struct deadline_heap *h, uint32_t i, struct deadline_node *n)
{
    h->nodes[i] = n;
    n->idx = i + 1;
}

static void sift_up(struct deadline_heap *h, uint32_t i)
{
    struct deadline_node *n = h->nodes[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->nodes[parent]->at <= n->at)
            break;
        place(h, i, h->nodes[parent]);
        i = parent;
    }
    place(h, i, n);
}

static void sift_down(struct deadline_heap *h, uint32_t i)
{
    struct deadline_node *n = h->nodes[i];

    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = n->at;
        if (l < h->len && h->nodes[l]->at < best) {
            m = l;
            best = h->nodes[l]->at;
        }
        if (r < h->len && h->nodes[r]->at < best)
            m = r;
        if (m == i)
            break;
        place(h, i, h->nodes[m]);
        i = m;
    }
    place(h, i, n);
}

void deadline_set(struct deadline_heap *h, struct deadline_node *n, uint64_t at)
{
    if (n->idx) {
        uint64_t old = n->at;
        n->at = at;
        if (at < old)
            sift_up(h, n->idx - 1);
        else
            sift_down(h, n->idx - 1);
        return;
    }
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->nodes = xrealloc(h->nodes, h->cap * sizeof(*h->nodes));
    }
    n->at = at;
    place(h, h->len++, n);
    sift_up(h, h->len - 1);
}

void deadline_clear(struct deadline_heap *h, struct deadline_node *n)
{
    uint32_t i;
    struct deadline_node *last;

    if (n->idx == 0)
        return;
    i = n->idx - 1;
    n->idx = 0;
    last = h->nodes[--h->len];
    if (i == h->len)
        return;
    place(h, i, last);
    /* The moved node may belong above or below its new place. */
    if (i > 0 && h->nodes[(i - 1) / 2]->at > last->at)
        sift_up(h, i);
    else
        sift_down(h, i);
}
