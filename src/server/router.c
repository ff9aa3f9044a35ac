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

#include "common/jsonw.h"
#include "common/log.h"
#include "http/request.h"
#include "push/handlers.h"
#include "push/ingest.h"
#include "push/ping.h"
#include "push/probe.h"
#include "push/udp.h"
#include "server/conn.h"
#include "server/server.h"
#include "session/session.h"

struct route {
    const char *path;
    int prefix;            /* path is a prefix (the rest is the handler's) */
    unsigned method;       /* llhttp_method_t */
    enum token_kind need;  /* 0: no credential */
    route_handler fn;
};

static const struct route routes[] = {
    {"/v1/ping", 0, HTTP_POST, TOKEN_USER, ping_handle},
    {"/v1/state", 0, HTTP_GET, TOKEN_USER, state_handle},
    {"/v1/probe", 0, HTTP_GET, TOKEN_USER, probe_handle},
    {"/v1/udp", 0, HTTP_POST, TOKEN_USER, udp_register_handle},
    {"/v1/udp/test", 0, HTTP_POST, TOKEN_USER, udp_test_handle},
    {"/v1/udp/", 1, HTTP_DELETE, TOKEN_USER, udp_delete_handle},
    {"/v1/events", 0, HTTP_POST, TOKEN_PUBLISHER, events_handle},
    /* HTTP Basic, checked by the handler: the credential Dovecot's driver can send. */
    {"/v1/ingest/dovecot", 0, HTTP_PUT, 0, ingest_dovecot_handle},
    {"/v1/ingest/dovecot", 0, HTTP_POST, 0, ingest_dovecot_handle},
    {"/v1/admin/sessions", 0, HTTP_GET, TOKEN_ADMIN, sessions_list_handle},
    {"/v1/admin/sessions/", 1, HTTP_DELETE, TOKEN_ADMIN, sessions_end_handle},
    {"/v1/admin/workers", 0, HTTP_GET, TOKEN_ADMIN, admin_workers},
    {"/healthz", 0, HTTP_GET, 0, admin_healthz},
    {"/metrics", 0, HTTP_GET, TOKEN_ADMIN, admin_metrics},
};

static const char *kind_name(enum token_kind k)
{
    switch (k) {
    case TOKEN_USER: return "user";
    case TOKEN_PUBLISHER: return "publisher";
    case TOKEN_ADMIN: return "admin";
    }
    return "?";
}

static void unauthorized(struct conn *c, const char *why, int token_sent)
{
    char extra[256], peer[64], q[96];
    struct jsonw w;
    size_t len;
    char *body;

    c->srv->metrics.auth_failures++;
    LOG(LOG_INFO, auth_failed, "peer=%s reason=%s", conn_peer(c, peer, sizeof(peer)),
        log_q(q, sizeof(q), why));
    /* RFC 6750 section 3: no error attribute when no credential was sent. */
    if (token_sent)
        snprintf(extra, sizeof(extra),
                 "WWW-Authenticate: Bearer realm=\"nudge\", error=\"invalid_token\", "
                 "error_description=\"%s\"\r\n",
                 why);
    else
        snprintf(extra, sizeof(extra), "WWW-Authenticate: Bearer realm=\"nudge\"\r\n");
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, "unauthorized");
    jw_key(&w, "error");
    jw_str(&w, why);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 401, extra, body, len);
    free(body);
}

/*
 * Checks the bearer token against the route's need. 0: go on; -1: answered,
 * or handed off. A user's requests are served by the worker owning the user
 * (worker/worker.h): the owner is read off the token's subject before the
 * MAC is checked, and the request handed over unchecked. The owner checks it
 * (and answers 401 or 403 itself), so a moved request costs one HMAC, and
 * every request one parse of its token.
 */
static int authenticate(struct conn *c, struct http_req *r, const struct route *rt,
                        struct principal *who)
{
    const char *h = http_req_header(r, HDR_AUTHORIZATION);
    struct token_fields f;
    enum token_status st;
    unsigned to;
    size_t n;

    who->kind = 0;
    who->subject[0] = '\0';
    if (rt->need == 0)
        return 0;
    if (h == NULL || h[0] == '\0') {
        unauthorized(c, "missing bearer token", 0);
        return -1;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        unauthorized(c, "expected Authorization: Bearer <token>", 1);
        return -1;
    }
    h += 7;
    while (*h == ' ')
        h++;
    n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    st = token_parse(h, n, &f);
    if (st == TOKEN_OK && rt->need == TOKEN_USER && f.kind == TOKEN_USER &&
        conn_user_elsewhere(c, f.subject, f.subject_len, &to)) {
        conn_handoff(c, to);
        return -1;
    }
    if (st == TOKEN_OK)
        st = token_check(&c->srv->secret, h, &f, (int64_t)time(NULL));
    if (st != TOKEN_OK) {
        unauthorized(c, token_status_str(st), 1);
        return -1;
    }
    who->kind = f.kind;
    memcpy(who->subject, f.subject, f.subject_len + 1);
    if (who->kind != rt->need) {
        char msg[96], peer[64], q[300];
        snprintf(msg, sizeof(msg), "this endpoint needs a %s token, not a %s token",
                 kind_name(rt->need), kind_name(who->kind));
        LOG(LOG_INFO, auth_forbidden, "peer=%s subject=%s path=%s",
            conn_peer(c, peer, sizeof(peer)), log_q(q, sizeof(q), who->subject), rt->path);
        conn_respond_error(c, 403, "forbidden", msg);
        return -1;
    }
    return 0;
}

void router_dispatch(struct conn *c, struct http_req *r)
{
    const struct route *path_match = NULL;
    struct principal who;
    char allow[64];

    if (c->srv->stopping) {
        char extra[64];
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", c->srv->cfg->shutdown_retry_after);
        CONN_RESPOND_LITERAL(c, 503, extra, "{\"status\":\"shutting-down\"}");
        return;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *rt = &routes[i];
        size_t plen = strlen(rt->path);
        if (rt->prefix ? r->path_len <= plen || memcmp(rt->path, r->path, plen) != 0
                       : plen != r->path_len || memcmp(rt->path, r->path, plen) != 0)
            continue;
        path_match = rt;
        if (rt->method != r->method)
            continue;
        if (authenticate(c, r, rt, &who) < 0)
            return;
        rt->fn(c, r, &who);
        return;
    }
    if (path_match) {
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", http_method_str(path_match->method));
        CONN_RESPOND_LITERAL(c, 405, allow, "{\"status\":\"method-not-allowed\"}");
        return;
    }
    CONN_RESPOND_LITERAL(c, 404, NULL, "{\"status\":\"not-found\"}");
}
