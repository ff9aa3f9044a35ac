/*
 * router.c — the route table and the credential check in front of it.
 *
 * Routes are few and fixed, so a linear table is both the fastest and the
 * most readable dispatch. Every route names the token kind it needs; the
 * check happens here, once, so no handler can forget it.
 */
#include "server/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "admin/admin.h"
#include "admin/sessions_api.h"
#include "auth/principal.h"
#include "auth/secret.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/events.h"
#include "push/ingest.h"
#include "push/ping.h"
#include "push/probe.h"
#include "push/state.h"
#include "push/udp_api.h"
#include "worker/worker.h"

typedef void (*route_handler)(void *arg, struct conn *c, struct http_req *r,
                              const struct principal *who);

struct route {
    const char *path;
    int prefix;            /* path is a prefix (the rest is the handler's) */
    unsigned method;       /* llhttp_method_t */
    enum token_kind need;  /* 0: no credential */
    route_handler fn;
    enum route_target target; /* the handler's module */
};

static const struct route routes[] = {
    {"/v1/ping", 0, HTTP_POST, TOKEN_USER, ping_handle, ROUTE_PING},
    {"/v1/state", 0, HTTP_GET, TOKEN_USER, state_handle, ROUTE_STATE},
    {"/v1/probe", 0, HTTP_GET, TOKEN_USER, probe_handle, ROUTE_PROBE},
    {"/v1/udp", 0, HTTP_POST, TOKEN_USER, udp_register_handle, ROUTE_UDP},
    {"/v1/udp/test", 0, HTTP_POST, TOKEN_USER, udp_test_handle, ROUTE_UDP},
    {"/v1/udp/", 1, HTTP_DELETE, TOKEN_USER, udp_delete_handle, ROUTE_UDP},
    {"/v1/events", 0, HTTP_POST, TOKEN_PUBLISHER, events_handle, ROUTE_EVENTS},
    /* HTTP Basic, checked by the handler: the credential Dovecot's driver can send. */
    {"/v1/ingest/dovecot", 0, HTTP_PUT, 0, ingest_dovecot_handle, ROUTE_INGEST},
    {"/v1/ingest/dovecot", 0, HTTP_POST, 0, ingest_dovecot_handle, ROUTE_INGEST},
    {"/v1/admin/sessions", 0, HTTP_GET, TOKEN_ADMIN, sessions_list_handle, ROUTE_SESSIONS},
    {"/v1/admin/sessions/", 1, HTTP_DELETE, TOKEN_ADMIN, sessions_end_handle, ROUTE_SESSIONS},
    {"/v1/admin/workers", 0, HTTP_GET, TOKEN_ADMIN, admin_workers, ROUTE_ADMIN},
    {"/healthz", 0, HTTP_GET, 0, admin_healthz, ROUTE_ADMIN},
    {"/metrics", 0, HTTP_GET, TOKEN_ADMIN, admin_metrics, ROUTE_ADMIN},
};

void router_init(struct router *rt, const struct config *cfg, const struct secret *secret,
                 struct metrics *metrics, const struct worker_route *route,
                 void *const to[ROUTE_TARGET_COUNT])
{
    rt->cfg = cfg;
    rt->secret = secret;
    rt->metrics = metrics;
    rt->route = route;
    memcpy(rt->to, to, sizeof(rt->to));
}

static const char *kind_name(enum token_kind k)
{
    switch (k) {
    case TOKEN_USER: return "user";
    case TOKEN_PUBLISHER: return "publisher";
    case TOKEN_ADMIN: return "admin";
    }
    return "?";
}

static void unauthorized(struct router *rt, struct conn *c, const char *why, int token_sent)
{
    char peer[64], q[96];
    struct http_error e;

    rt->metrics->auth_failures++;
    LOG(LOG_INFO, auth_failed, "peer=%s reason=%s", conn_peer(c, peer, sizeof(peer)),
        log_q(q, sizeof(q), why));
    http_error_set(&e, 401, "unauthorized", "%s", why);
    /* RFC 6750 section 3: no error attribute when no credential was sent. */
    if (token_sent)
        http_error_header(&e,
                          "WWW-Authenticate: Bearer realm=\"nudge\", error=\"invalid_token\", "
                          "error_description=\"%s\"",
                          why);
    else
        http_error_header(&e, "WWW-Authenticate: Bearer realm=\"nudge\"");
    conn_respond_error(c, &e);
}

/*
 * Checks the bearer token against the route's need. 0: go on; -1: answered,
 * or handed off. A user's requests are served by the worker owning the user
 * (worker/worker.h): the owner is read off the token's subject before the
 * MAC is checked, and the request handed over unchecked. The owner checks it
 * (and answers 401 or 403 itself), so a moved request costs one HMAC, and
 * every request one parse of its token.
 */
static int authenticate(struct router *rt, struct conn *c, struct http_req *r,
                        const struct route *route, struct principal *who)
{
    const char *h = http_req_header(r, HDR_AUTHORIZATION);
    struct token_fields f;
    enum token_status st;
    size_t n;

    who->kind = 0;
    who->subject[0] = '\0';
    if (route->need == 0)
        return 0;
    if (h == NULL || h[0] == '\0') {
        unauthorized(rt, c, "missing bearer token", 0);
        return -1;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        unauthorized(rt, c, "expected Authorization: Bearer <token>", 1);
        return -1;
    }
    h += 7;
    while (*h == ' ')
        h++;
    n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    st = token_parse(h, n, &f);
    if (st == TOKEN_OK && route->need == TOKEN_USER && f.kind == TOKEN_USER &&
        worker_route(rt->route, c, f.subject, f.subject_len))
        return -1;
    if (st == TOKEN_OK)
        st = token_check(rt->secret, h, &f, (int64_t)time(NULL));
    if (st != TOKEN_OK) {
        unauthorized(rt, c, token_status_str(st), 1);
        return -1;
    }
    who->kind = f.kind;
    memcpy(who->subject, f.subject, f.subject_len + 1);
    if (who->kind != route->need) {
        char peer[64], q[300];
        struct http_error e;
        http_error_set(&e, 403, "forbidden", "this endpoint needs a %s token, not a %s token",
                       kind_name(route->need), kind_name(who->kind));
        LOG(LOG_INFO, auth_forbidden, "peer=%s subject=%s path=%s",
            conn_peer(c, peer, sizeof(peer)), log_q(q, sizeof(q), who->subject), route->path);
        conn_respond_error(c, &e);
        return -1;
    }
    return 0;
}

void router_dispatch(struct router *rt, struct conn *c, struct http_req *r)
{
    const struct route *path_match = NULL;
    struct principal who;
    struct http_error e;

    if (conn_stopping(c)) {
        http_error_set(&e, 503, "shutting-down", NULL);
        http_error_header(&e, "Retry-After: %u", rt->cfg->shutdown_retry_after);
        conn_respond_error(c, &e);
        return;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *route = &routes[i];
        size_t plen = strlen(route->path);
        if (route->prefix ? r->path_len <= plen || memcmp(route->path, r->path, plen) != 0
                          : plen != r->path_len || memcmp(route->path, r->path, plen) != 0)
            continue;
        path_match = route;
        if (route->method != r->method)
            continue;
        if (authenticate(rt, c, r, route, &who) < 0)
            return;
        route->fn(rt->to[route->target], c, r, &who);
        return;
    }
    if (path_match) {
        http_error_set(&e, 405, "method-not-allowed", NULL);
        http_error_header(&e, "Allow: %s", http_method_str(path_match->method));
        conn_respond_error(c, &e);
        return;
    }
    http_error_set(&e, 404, "not-found", NULL);
    conn_respond_error(c, &e);
}
