/*
 * router.h — maps (method, path) to a handler and checks the credential the
 * route needs before calling it. A user's request is moved to the worker
 * owning the user (worker_route) before its token's MAC is checked.
 */
#ifndef NUDGE_ROUTER_H
#define NUDGE_ROUTER_H

struct config;
struct conn;
struct http_req;
struct metrics;
struct secret;
struct worker_route;

/* The modules the routes lead to: each route's handler gets its own as 'arg'. */
enum route_target {
    ROUTE_PING,            /* struct ping */
    ROUTE_STATE,           /* struct state */
    ROUTE_PROBE,           /* struct probe */
    ROUTE_UDP,             /* struct udp_api */
    ROUTE_EVENTS,          /* struct events */
    ROUTE_INGEST,          /* struct ingest */
    ROUTE_SESSIONS,        /* struct sessions_api */
    ROUTE_ADMIN,           /* struct admin */
    ROUTE_TARGET_COUNT,
};

struct router {
    const struct config *cfg;
    const struct secret *secret;
    struct metrics *metrics;
    const struct worker_route *route;  /* to the owner of a user; NULL: all ours */
    void *to[ROUTE_TARGET_COUNT];
};

/*
 * Sets rt up; to[t] is the module of route target t (enum route_target).
 * Everything it points to must outlive it.
 */
void router_init(struct router *rt, const struct config *cfg, const struct secret *secret,
                 struct metrics *metrics, const struct worker_route *route,
                 void *const to[ROUTE_TARGET_COUNT]);

/* Dispatches a complete request; the handler answers (now or later). */
void router_dispatch(struct router *rt, struct conn *c, struct http_req *r);

#endif
