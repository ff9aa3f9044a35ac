/*
 * events.h — POST /v1/events, where the mail server reports folder
 * changes, and what every committed change sets off (events.c).
 */
#ifndef NUDGE_PUSH_EVENTS_H
#define NUDGE_PUSH_EVENTS_H

#include <stddef.h>

struct conn;
struct http_req;
struct mesh;
struct metrics;
struct ping;
struct principal;
struct shard;
struct store;
struct store_event;
struct udp;
struct worker_ctx;

/*
 * The mesh message carrying events for the receiver's users (mesh.h
 * numbering): a uint32 count, then per event user, folder, type and the
 * publisher's metadata (JSON text), each NUL-terminated ("" for none).
 */
#define EVENTS_MSG_BUMP 18

struct events {
    struct store *store;
    struct shard *shard;
    struct metrics *metrics;
    const struct worker_ctx *wk;   /* NULL: a single process */
    struct mesh *mesh;             /* NULL without workers */
    struct ping *ping;
    struct udp *udp;               /* NULL when UDP is off */
};

/* Sets ev up with the modules it works with, and registers its mesh message. */
void events_init(struct events *ev, struct store *store, struct shard *shard,
                 struct metrics *metrics, const struct worker_ctx *wk, struct mesh *mesh,
                 struct ping *ping, struct udp *udp);

/* The route handler; 'arg' is the struct events. */
void events_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/*
 * The store committed e[0..n): wakes the held pings of their users and
 * tells UDP registrations, in that order. Events of a type that says the
 * user has seen the mail ("read", "expunge", "trash") first mark their
 * folder caught up for UDP, so no datagram announces mail already read.
 */
void events_applied(struct events *ev, struct store_event *e, size_t n);

#endif
