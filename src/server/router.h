/*
 * router.h — maps (method, path) to a handler and checks the credential the
 * route needs before calling it.
 */
#ifndef NUDGE_ROUTER_H
#define NUDGE_ROUTER_H

#include "auth/token.h"

struct conn;
struct http_req;

/* Who sent a request, from its bearer token. */
struct principal {
    enum token_kind kind;      /* 0 for routes that need no credential */
    char subject[TOKEN_SUBJECT_MAX + 1];
};

typedef void (*route_handler)(struct conn *c, struct http_req *r, const struct principal *who);

/* Dispatches a complete request; the handler answers (now or later). */
void router_dispatch(struct conn *c, struct http_req *r);

#endif
