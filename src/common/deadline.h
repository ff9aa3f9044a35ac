/*
 * deadline.h — a min-heap of deadlines behind one timer: the connections of
 * a loop use one (conn/conn.c), the UDP registrations another (udp/udp.c).
 *
 * Each connection has at most one deadline at a time (the request timeout,
 * the keep-alive idle timeout or its held ping's heartbeat), so it embeds
 * one 16-byte node instead of a 152-byte uv_timer_t. Its owner arms a
 * single uv_timer for the earliest deadline; nothing scans connections per
 * tick, so 100k idle connections cost nothing until one of them is due.
 * Insert, remove and moving a deadline earlier are O(log n); moving one
 * later is O(1), the heap catches up when that slot reaches the top
 * (deadline.c).
 */
#ifndef NUDGE_DEADLINE_H
#define NUDGE_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

struct deadline_node {
    uint64_t at;  /* ms, monotonic */
    uint32_t idx; /* position in the heap + 1; 0 when not in the heap */
};

struct deadline_slot {
    uint64_t key;               /* <= node->at: where the slot sits in the heap */
    struct deadline_node *node;
};

struct deadline_heap {
    struct deadline_slot *slots;
    uint32_t len, cap;
};

void deadline_heap_init(struct deadline_heap *h);
void deadline_heap_free(struct deadline_heap *h);

/* Sets (or moves) n's deadline to 'at'. */
void deadline_set(struct deadline_heap *h, struct deadline_node *n, uint64_t at);

/* Removes n if it is in the heap. */
void deadline_clear(struct deadline_heap *h, struct deadline_node *n);

/* The node with the earliest deadline, or NULL. */
struct deadline_node *deadline_peek(struct deadline_heap *h);

#endif
