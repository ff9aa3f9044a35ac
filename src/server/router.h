/*
 * router.h — maps (method, path) to a handler and checks the credential the
 * route needs before calling it: a bearer token (its kind, its MAC, its
 * expiry, and for a user token its user's revocation time), or a user's
 * mail password in HTTP Basic ([auth] passwords; for every user endpoint
 * when [auth] basic = yes, always for POST /v1/login). A user's request is
 * moved to the worker owning the user (worker_route) before its credential
 * is checked: by the token's subject, or by the login a Basic credential
 * names (and again by the name the password backend answers, when that
 * differs).
 *
 * Browser routes (an EventSource cannot send an Authorization header) also
 * take the login cookie, only from an allowed Origin, and a single-use
 * ticket in the query (auth/ticket.h), routed by its user and redeemed by
 * the owner. Requests from an Origin in [http] cors_origins get CORS
 * headers on every answer, and their preflights are answered here.
 *
 * A password is checked by the backend, later: the request waits (conn_wait)
 * and its handler runs when the answer comes. Wrong passwords are counted
 * per client address and per user (auth/limit.h); past a limit, sign-ins
 * are answered 429 before any password is looked at.
 */
#ifndef NUDGE_ROUTER_H
#define NUDGE_ROUTER_H

#include "common/config.h"

struct auth_limit;
struct config;
struct conn;
struct http_req;
struct metrics;
struct passwords;
struct secret;
struct store;
struct ticket_spent;
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
    ROUTE_LOGIN,           /* struct login */
    ROUTE_REVOKE,          /* struct revoke */
    ROUTE_ACTIVESYNC,      /* struct as_ping */
    ROUTE_STREAM,          /* struct sse */
    ROUTE_TICKET,          /* struct ticket_api */
    ROUTE_WS,              /* struct ws */
    ROUTE_STATUS,          /* struct status */
    ROUTE_TARGET_COUNT,
};

struct router {
    const struct config *cfg;
    const struct secret *secret;
    struct metrics *metrics;
    const struct worker_route *route;  /* to the owner of a user; NULL: all ours */
    struct store *store;               /* users' token revocation times */
    struct passwords *passwords;       /* NULL: tokens only */
    struct auth_limit *fail_ip, *fail_user; /* failed sign-ins per address, per user */
    struct auth_limit *bad_tokens;     /* forged tokens per address; NULL: none (set after init) */
    int basic;                         /* [auth] basic = yes */
    struct ticket_spent *spent;        /* the used tickets of our users */
    void *to[ROUTE_TARGET_COUNT];
    /*
     * [http] cors_origins, and for each the header lines every answer to a
     * request from it carries (http_req.answer_extra points here).
     */
    unsigned ncors;
    char cors_origin[CONFIG_CORS_MAX][CONFIG_STR_MAX];
    char cors_lines[CONFIG_CORS_MAX][CONFIG_STR_MAX + 96];
};

/*
 * Sets rt up; to[t] is the module of route target t (enum route_target).
 * Everything it points to must outlive it.
 */
void router_init(struct router *rt, const struct config *cfg, const struct secret *secret,
                 struct metrics *metrics, const struct worker_route *route, struct store *store,
                 struct passwords *passwords, struct auth_limit *fail_ip,
                 struct auth_limit *fail_user, struct ticket_spent *spent,
                 void *const to[ROUTE_TARGET_COUNT]);

/* Dispatches a complete request; the handler answers (now or later). */
void router_dispatch(struct router *rt, struct conn *c, struct http_req *r);

#endif
