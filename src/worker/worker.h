/*
 * worker.h — what a worker process knows about the others: its index, how
 * many there are, its listening socket, its ends of the mesh, and the few
 * counters all workers share. See docs/architecture.md, "Workers".
 *
 * Users are partitioned among workers by worker_owner(): a stable hash of
 * the user id (FNV-1a 64, the same in every build and on every machine, so
 * the shard files on disk stay valid across restarts and upgrades) modulo
 * the number of workers. Each worker owns its users entirely: states,
 * devices, sessions, held pings and UDP registrations live in that one
 * process, so the per-user rules (supersede, caps) need no lock.
 *
 * With [server] workers = 1 there is no supervisor, no mesh and no shared
 * memory: server.wk is NULL and every user is local.
 */
#ifndef NUDGE_WORKER_H
#define NUDGE_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "auth/limit.h"

#define WORKERS_MAX 256

/*
 * Counters shared by all workers (one anonymous MAP_SHARED page set made by
 * the supervisor before it forks). 'connections' is the total checked
 * against [server] max_connections; 'held_by[w]' is worker w's part of it,
 * so the supervisor can take a dead worker's connections back out.
 */
struct worker_shared {
    _Atomic uint64_t connections;
    _Atomic uint64_t held_by[WORKERS_MAX];
    _Atomic int32_t pid[WORKERS_MAX];
    /* Failed password sign-ins per address and per user (auth/limit.h), counted for all. */
    uint64_t signin_seed;
    _Atomic uint64_t signin_fail_ip[AUTH_LIMIT_SLOTS];
    _Atomic uint64_t signin_fail_user[AUTH_LIMIT_SLOTS];
};

struct worker_ctx {
    unsigned index;          /* this worker, 0..count-1 */
    unsigned count;
    int listen_fd[8];        /* this worker's SO_REUSEPORT listeners, one per [server] listen address */
    int mesh_fd[WORKERS_MAX];/* SOCK_SEQPACKET to worker i; -1 for ourselves */
    struct worker_shared *shared;
};

/* The worker that owns 'user' among 'count' (count >= 1). */
unsigned worker_owner(const char *user, size_t len, unsigned count);

struct conn;

/*
 * How a handler moves a request to the worker owning the user it is about
 * (server/handoff.c implements it; NULL in a single process). elsewhere()
 * returns 1 when 'user' is another worker's and the connection was handed
 * there (or, when that failed, answered 503), 0 when the user is ours.
 */
struct worker_route {
    int (*elsewhere)(void *arg, struct conn *c, const char *user, size_t len);
    void *arg;
};

/* route->elsewhere, or 0 (ours) without workers. */
static inline int worker_route(const struct worker_route *route, struct conn *c, const char *user,
                               size_t len)
{
    return route && route->elsewhere ? route->elsewhere(route->arg, c, user, len) : 0;
}

#endif
