/*
 * handoff.h — moving a connection to the worker that owns the user of its
 * request (docs/architecture.md, "Workers").
 *
 * The socket travels with SCM_RIGHTS in one mesh message, with the bytes
 * read so far that are not yet answered (that request and any pipelined
 * behind it) and the reference of its address's count (listen.h); the owner
 * parses them again and answers, and the connection lives there. Handlers
 * ask for it through a struct worker_route (worker/worker.h), so they need
 * not know how it is done.
 */
#ifndef NUDGE_HANDOFF_H
#define NUDGE_HANDOFF_H

#include "worker/worker.h"

struct conn_loop;
struct listener;
struct mesh;
struct metrics;

/* The mesh message carrying a connection (mesh.h numbering). */
#define HANDOFF_MSG 16

struct config;

struct handoff {
    const struct config *cfg;
    const struct worker_ctx *wk;   /* NULL: a single process, nothing moves */
    struct mesh *mesh;
    struct listener *listener;
    struct conn_loop *conns;
    struct metrics *metrics;
    struct worker_route route;     /* what handlers are given */
};

/* Sets h up and registers the receiving end of HANDOFF_MSG. */
void handoff_init(struct handoff *h, const struct config *cfg, const struct worker_ctx *wk,
                  struct mesh *mesh, struct listener *listener, struct conn_loop *conns,
                  struct metrics *metrics);

#endif
