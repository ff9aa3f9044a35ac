/*
 * router.c — the route table and the credential check in front of it.
 *
 * Routes are few and fixed, so a linear table is both the fastest and the
 * most readable dispatch. Every route names the token kind it needs; the
 * check happens here, once, so no handler can forget it.
 *
 * CORS is here too, for the same reason: the router sees every request
 * before its handler answers. For a request whose Origin is in [http]
 * cors_origins it points http_req.answer_extra at that origin's header
 * lines (made once in router_init), and conn.c appends them to whatever
 * answer the request gets, a handler's, an error or a stream's head,
 * without knowing what they say. No handler changes, struct conn does not
 * grow (the pointer lives in the request, which a held connection has
 * freed: a held ping answered later gets no CORS lines, which only a
 * browser's fetch would need, and browsers stream rather than hold pings).
 * A preflight (OPTIONS with an Origin) is answered here without a handler.
 */
#include "server/router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <time.h>

#include "admin/admin.h"
#include "admin/revoke.h"
#include "activesync/ping.h"
#include "admin/sessions_api.h"
#include "admin/status.h"
#include "auth/basic.h"
#include "auth/limit.h"
#include "auth/passwd.h"
#include "auth/principal.h"
#include "auth/secret.h"
#include "auth/ticket.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/cookie.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "push/events.h"
#include "push/ingest.h"
#include "push/login.h"
#include "push/ping.h"
#include "push/probe.h"
#include "push/state.h"
#include "push/ticket_api.h"
#include "push/udp_api.h"
#include "store/store.h"
#include "stream/sse.h"
#include "stream/ws.h"
#include "worker/worker.h"

/* What a client whose password could not be checked is told to wait. */
#define UNAVAILABLE_RETRY_S 5

typedef void (*route_handler)(void *arg, struct conn *c, struct http_req *r,
                              const struct principal *who);

struct route {
    const char *path;
    int prefix;            /* path is a prefix (the rest is the handler's) */
    unsigned method;       /* llhttp_method_t */
    enum token_kind need;  /* 0: no credential */
    route_handler fn;
    enum route_target target; /* the handler's module */
    int password;          /* a user's password in HTTP Basic, nothing else (sign-in) */
    /*
     * A GET route whose HEAD is answered by the same handler, the connection
     * dropping the body (conn.c): only routes that read and change nothing,
     * so a load balancer's HEAD costs what its GET would. Not /v1/probe: it
     * holds the connection for a measurement.
     */
    int head;
    /*
     * A route a browser's EventSource or WebSocket calls, which cannot set
     * an Authorization header: the login cookie and a single-use ticket in
     * the query are accepted too (docs/streams.md).
     */
    int browser;
};

static const struct route routes[] = {
    {"/v1/ping", 0, HTTP_POST, TOKEN_USER, ping_handle, ROUTE_PING, 0, 0, 0},
    {"/v1/state", 0, HTTP_GET, TOKEN_USER, state_handle, ROUTE_STATE, 0, 1, 0},
    {"/v1/probe", 0, HTTP_GET, TOKEN_USER, probe_handle, ROUTE_PROBE, 0, 0, 0},
    {"/v1/udp", 0, HTTP_POST, TOKEN_USER, udp_register_handle, ROUTE_UDP, 0, 0, 0},
    {"/v1/udp/test", 0, HTTP_POST, TOKEN_USER, udp_test_handle, ROUTE_UDP, 0, 0, 0},
    {"/v1/udp/", 1, HTTP_DELETE, TOKEN_USER, udp_delete_handle, ROUTE_UDP, 0, 0, 0},
    {"/v1/events", 0, HTTP_POST, TOKEN_PUBLISHER, events_handle, ROUTE_EVENTS, 0, 0, 0},
    /* The status page's test notification: an admin publishes as a publisher would (docs/status.md). */
    {"/v1/admin/events", 0, HTTP_POST, TOKEN_ADMIN, events_handle, ROUTE_EVENTS, 0, 0, 0},
    /* HTTP Basic, checked by the handler: the credential Dovecot's driver can send. */
    {"/v1/ingest/dovecot", 0, HTTP_PUT, 0, ingest_dovecot_handle, ROUTE_INGEST, 0, 0, 0},
    {"/v1/ingest/dovecot", 0, HTTP_POST, 0, ingest_dovecot_handle, ROUTE_INGEST, 0, 0, 0},
    {"/v1/admin/sessions", 0, HTTP_GET, TOKEN_ADMIN, sessions_list_handle, ROUTE_SESSIONS, 0, 1, 0},
    {"/v1/admin/sessions/", 1, HTTP_DELETE, TOKEN_ADMIN, sessions_end_handle, ROUTE_SESSIONS, 0, 0, 0},
    {"/v1/admin/workers", 0, HTTP_GET, TOKEN_ADMIN, admin_workers, ROUTE_ADMIN, 0, 1, 0},
    {"/healthz", 0, HTTP_GET, 0, admin_healthz, ROUTE_ADMIN, 0, 1, 0},
    {"/metrics", 0, HTTP_GET, TOKEN_ADMIN, admin_metrics, ROUTE_ADMIN, 0, 1, 0},
    /* The status page (docs/status.md): the page is public, what it shows needs the admin token. */
    {"/status", 0, HTTP_GET, 0, status_page_handle, ROUTE_STATUS, 0, 1, 0},
    {"/v1/admin/status", 0, HTTP_GET, TOKEN_ADMIN, status_handle, ROUTE_STATUS, 0, 1, 0},
    {"/v1/login", 0, HTTP_POST, TOKEN_USER, login_handle, ROUTE_LOGIN, 1, 0, 0},
    /* A single-use ticket for a browser route (auth/ticket.h): a user credential, not a cookie. */
    {"/v1/ticket", 0, HTTP_POST, TOKEN_USER, ticket_api_handle, ROUTE_TICKET, 0, 0, 0},
    /* The same for any user, for an admin watching that user's stream (the status page). */
    {"/v1/admin/tickets", 0, HTTP_POST, TOKEN_ADMIN, ticket_api_admin_handle, ROUTE_TICKET, 0, 0, 0},
    {"/v1/admin/tokens/", 1, HTTP_DELETE, TOKEN_ADMIN, revoke_handle, ROUTE_REVOKE, 0, 0, 0},
    /* ActiveSync (docs/activesync.md): the password in HTTP Basic, as phones send it. */
    {"/Microsoft-Server-ActiveSync", 0, HTTP_POST, TOKEN_USER, as_ping_handle, ROUTE_ACTIVESYNC, 1, 0, 0},
    {"/Microsoft-Server-ActiveSync", 0, HTTP_OPTIONS, 0, as_options_handle, ROUTE_ACTIVESYNC, 0, 0, 0},
    {"/v1/activesync/folders/", 1, HTTP_PUT, TOKEN_PUBLISHER, as_folders_handle, ROUTE_ACTIVESYNC, 0, 0, 0},
    {"/v1/activesync/folders/", 1, HTTP_GET, TOKEN_PUBLISHER, as_folders_handle, ROUTE_ACTIVESYNC, 0, 0, 0},
    {"/v1/activesync/folders/", 1, HTTP_DELETE, TOKEN_PUBLISHER, as_folders_handle, ROUTE_ACTIVESYNC, 0, 0, 0},
    {"/v1/activesync/synced/", 1, HTTP_POST, TOKEN_PUBLISHER, as_synced_handle, ROUTE_ACTIVESYNC, 0, 0, 0},
    /* Event streams for web and desktop clients (docs/streams.md). */
    {"/v1/stream", 0, HTTP_GET, TOKEN_USER, sse_handle, ROUTE_STREAM, 0, 0, 1},
    {"/v1/ws", 0, HTTP_GET, TOKEN_USER, ws_handle, ROUTE_WS, 0, 0, 1},
};

void router_init(struct router *rt, const struct config *cfg, const struct secret *secret,
                 struct metrics *metrics, const struct worker_route *route, struct store *store,
                 struct passwords *passwords, struct auth_limit *fail_ip,
                 struct auth_limit *fail_user, struct ticket_spent *spent,
                 void *const to[ROUTE_TARGET_COUNT])
{
    char why[256];
    int n;

    rt->cfg = cfg;
    rt->secret = secret;
    rt->metrics = metrics;
    rt->route = route;
    rt->store = store;
    rt->passwords = passwords;
    rt->fail_ip = fail_ip;
    rt->fail_user = fail_user;
    rt->basic = strcmp(cfg->auth_basic, "yes") == 0 && passwords != NULL;
    rt->spent = spent;
    memcpy(rt->to, to, sizeof(rt->to));
    /* config_check refused a bad list: what is left cannot fail. */
    n = config_cors_origins(cfg->http_cors_origins, rt->cors_origin, CONFIG_CORS_MAX, why,
                            sizeof(why));
    rt->ncors = n > 0 ? (unsigned)n : 0;
    for (unsigned i = 0; i < rt->ncors; i++) {
        /* Pieces copied, not snprintf'd: GCC sees the source in the same struct as an overlap. */
        static const char head[] = "Access-Control-Allow-Origin: ";
        static const char tail[] = "\r\nAccess-Control-Allow-Credentials: true\r\n"
                                   "Vary: Origin\r\n";
        char *at = rt->cors_lines[i];
        size_t olen = strlen(rt->cors_origin[i]);
        _Static_assert(sizeof(head) + sizeof(tail) + CONFIG_STR_MAX <=
                           sizeof(rt->cors_lines[0]) + 2,
                       "cors_lines must hold the longest origin's lines");
        memcpy(at, head, sizeof(head) - 1);
        at += sizeof(head) - 1;
        memcpy(at, rt->cors_origin[i], olen);
        at += olen;
        memcpy(at, tail, sizeof(tail));
    }
}

/* The index of 'origin' in [http] cors_origins, or -1 (also for NULL). */
static int cors_index(const struct router *rt, const char *origin)
{
    if (origin == NULL)
        return -1;
    for (unsigned i = 0; i < rt->ncors; i++)
        if (strcmp(rt->cors_origin[i], origin) == 0)
            return (int)i;
    return -1;
}

/* 403 for a request from an Origin not in [http] cors_origins; 'what' is refused. */
static void origin_refused(struct router *rt, struct conn *c, const struct route *route,
                           const char *origin, const char *what)
{
    char peer[64], q[300];
    struct http_error e;

    (void)rt;
    LOG(LOG_INFO, origin_refused, "peer=%s path=%s origin=%s what=%s",
        conn_peer(c, peer, sizeof(peer)), route ? route->path : "-",
        log_q(q, sizeof(q), origin), what);
    /* The origin is not echoed: the client knows it, and a page should not learn the list. */
    http_error_set(&e, 403, "origin-not-allowed",
                   "%s: this Origin is not in the server's [http] cors_origins", what);
    conn_respond_error(c, &e);
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

/* The Basic challenge (RFC 7617): the realm, and that user and password are UTF-8. */
#define BASIC_CHALLENGE "WWW-Authenticate: Basic realm=\"nudge\", charset=\"UTF-8\""

/*
 * 401 for a route's credential: a Bearer challenge (RFC 6750; with its
 * error only when a token was sent), and a Basic one when the route takes a
 * password too; a sign-in route takes only a password.
 */
static void unauthorized(struct router *rt, struct conn *c, const struct route *route,
                         const char *why, int token_sent)
{
    char peer[64], q[96];
    struct http_error e;

    rt->metrics->auth_failures++;
    LOG(LOG_INFO, auth_failed, "peer=%s reason=%s", conn_peer(c, peer, sizeof(peer)),
        log_q(q, sizeof(q), why));
    http_error_set(&e, 401, "unauthorized", "%s", why);
    if (route->password)
        ; /* no bearer token here */
    else if (token_sent)
        http_error_header(&e,
                          "WWW-Authenticate: Bearer realm=\"nudge\", error=\"invalid_token\", "
                          "error_description=\"%s\"",
                          why);
    else
        http_error_header(&e, "WWW-Authenticate: Bearer realm=\"nudge\"");
    if (route->password || (rt->basic && route->need == TOKEN_USER))
        http_error_header(&e, BASIC_CHALLENGE);
    conn_respond_error(c, &e);
}

/* ---- forged tokens per address ---------------------------------------- */

/*
 * The key of c's address in the bad-token count: a tag byte, so that it
 * never shares a count with the same address's wrong passwords, then the
 * address bytes. 0 when c has no address (a test socket pair).
 */
static size_t bad_token_key(struct conn *c, unsigned char key[17])
{
    struct sockaddr_storage ss;

    key[0] = 'T';
    if (conn_peer_addr(c, &ss) != 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        memcpy(key + 1, &((const struct sockaddr_in *)&ss)->sin_addr, 4);
        return 5;
    }
    if (ss.ss_family == AF_INET6) {
        memcpy(key + 1, &((const struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        return 17;
    }
    return 0;
}

/* Seconds until c's address may send a forged token again without 429; 0: not over. */
static unsigned bad_tokens_over(struct router *rt, struct conn *c)
{
    unsigned char key[17];
    size_t len;

    if (rt->bad_tokens == NULL || rt->bad_tokens->max == 0 || (len = bad_token_key(c, key)) == 0)
        return 0;
    return auth_limit_check(rt->bad_tokens, key, len, util_now_ms() / 1000);
}

/*
 * A forged token or ticket (malformed, or a wrong signature) came from c:
 * counted for its address. Under [auth] max_bad_tokens_per_ip it is the
 * usual 401; at the limit (event 1211, once per window) and past it, 429
 * with Retry-After and no auth_failed line, so a forger learns to wait and
 * cannot write the log full. A valid token from the same address still
 * passes: one NAT address hides many honest clients.
 */
static void bad_token(struct router *rt, struct conn *c, const struct route *route,
                      const char *why)
{
    unsigned char key[17];
    size_t len = rt->bad_tokens ? bad_token_key(c, key) : 0;
    uint64_t now = util_now_ms() / 1000;
    unsigned wait;
    struct http_error e;

    if (len == 0 || rt->bad_tokens->max == 0) {
        unauthorized(rt, c, route, why, 1);
        return;
    }
    if (auth_limit_fail(rt->bad_tokens, key, len, now)) {
        char peer[64];
        LOG(LOG_WARN, bad_tokens_limited, "peer=%s max=%u window=%u",
            conn_peer(c, peer, sizeof(peer)), rt->bad_tokens->max, rt->bad_tokens->window);
    }
    wait = auth_limit_check(rt->bad_tokens, key, len, now);
    if (wait == 0) {
        unauthorized(rt, c, route, why, 1);
        return;
    }
    rt->metrics->auth_failures++;
    rt->metrics->bad_tokens_limited++;
    http_error_set(&e, 429, "too-many-failures",
                   "too many forged or malformed tokens from this address; try again later");
    http_error_num(&e, "retry_after", wait);
    http_error_header(&e, "Retry-After: %u", wait);
    conn_respond_error(c, &e);
}

/* ---- passwords ----------------------------------------------------- */

/* A sign-in with a password waiting for the backend's answer. */
struct signin {
    struct conn *conn;                 /* NULL once the client went away */
    struct router *rt;
    const struct route *route;
    char login[BASIC_USER_MAX + 1];    /* the user as the client sent it */
    char limit_key[BASIC_USER_MAX + 1]; /* the same, lower case: one count for Alice and alice */
    size_t login_len;
    char peer[64];                     /* the client's address, without the port */
    unsigned char addr[16];            /* its bytes, the per-address count's key */
    size_t addr_len;
};

/* The client's address of c into s (text and bytes); 1 when it is a loopback address. */
static int peer_of(struct conn *c, struct signin *s)
{
    struct sockaddr_storage ss;
    int loopback = 0;

    s->peer[0] = '\0';
    s->addr_len = 0;
    if (conn_peer_addr(c, &ss) != 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        memcpy(s->addr, &in->sin_addr, 4);
        s->addr_len = 4;
        loopback = s->addr[0] == 127;
        inet_ntop(AF_INET, &in->sin_addr, s->peer, sizeof(s->peer));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        memcpy(s->addr, &in6->sin6_addr, 16);
        s->addr_len = 16;
        loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                   (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && s->addr[12] == 127);
        inet_ntop(AF_INET6, &in6->sin6_addr, s->peer, sizeof(s->peer));
    }
    return loopback;
}

/* Seconds before this address or this user may try a password again, or 0. */
static unsigned limited(struct router *rt, const struct signin *s)
{
    uint64_t now = util_now_ms() / 1000;
    unsigned a = auth_limit_check(rt->fail_ip, s->addr, s->addr_len, now);
    unsigned b = auth_limit_check(rt->fail_user, s->limit_key, s->login_len, now);

    return a > b ? a : b;
}

/* A wrong password: counted for the address and the user, logged, answered 401. */
static void refused(struct router *rt, struct conn *c, struct signin *s, int cached)
{
    uint64_t now = util_now_ms() / 1000;
    unsigned a = auth_limit_fail(rt->fail_ip, s->addr, s->addr_len, now);
    unsigned b = auth_limit_fail(rt->fail_user, s->limit_key, s->login_len, now);
    char q1[300], q2[80];
    struct http_error e;

    rt->metrics->password_checks[PASSWORD_REFUSED]++;
    LOG(LOG_INFO, password_refused, "user=%s peer=%s cached=%d",
        log_q(q1, sizeof(q1), s->login), log_q(q2, sizeof(q2), s->peer), cached);
    if (a)
        LOG(LOG_WARN, signin_limited, "key=address value=%s failures=%u retry_after=%u",
            log_q(q2, sizeof(q2), s->peer), rt->fail_ip->max, a);
    if (b)
        LOG(LOG_WARN, signin_limited, "key=user value=%s failures=%u retry_after=%u",
            log_q(q1, sizeof(q1), s->login), rt->fail_user->max, b);
    /* The same words whether the user exists or not. */
    http_error_set(&e, 401, "unauthorized", "wrong user or password");
    http_error_header(&e, BASIC_CHALLENGE);
    conn_respond_error(c, &e);
}

/* The password is right and 'user' is who the backend says it is: on to the handler. */
static void signed_in(struct router *rt, struct conn *c, const struct route *route,
                      const char *user)
{
    struct principal who = {0};
    struct http_error e;
    size_t len = strlen(user);

    rt->metrics->password_checks[PASSWORD_OK]++;
    if (check_user_id(user, len) != NULL) {
        http_error_set(&e, 503, "unavailable", "the password backend named a user nudge cannot serve");
        conn_respond_error(c, &e);
        return;
    }
    /*
     * The backend may name the user otherwise than the login did (Dovecot
     * rewrites names): the owner of that name serves the request. A token
     * is minted anywhere.
     */
    if (route->target != ROUTE_LOGIN && worker_route(rt->route, c, user, len))
        return;
    who.kind = TOKEN_USER;
    memcpy(who.subject, user, len + 1);
    route->fn(rt->to[route->target], c, c->req, &who);
}

static void unavailable(struct router *rt, struct conn *c)
{
    struct http_error e;

    rt->metrics->password_checks[PASSWORD_UNAVAILABLE]++;
    http_error_set(&e, 503, "unavailable",
                   "the password service is unavailable; try again shortly");
    http_error_header(&e, "Retry-After: %d", UNAVAILABLE_RETRY_S);
    conn_respond_error(c, &e);
}

/* The backend answered a sign-in that waited. */
static void on_checked(void *arg, enum passwd_status st, const char *user)
{
    struct signin *s = arg;
    struct conn *c = s->conn;

    if (c != NULL) {
        if (st == PASSWD_OK)
            signed_in(s->rt, c, s->route, user);
        else if (st == PASSWD_FAIL)
            refused(s->rt, c, s, 0);
        else
            unavailable(s->rt, c);
    }
    free(s);
}

/*
 * A request with a password in HTTP Basic: to the owner of its login, then
 * past the limits, then checked (from the cache, or waiting for the
 * backend). Answers, moves or holds c.
 */
static void password_signin(struct router *rt, struct conn *c, const struct route *route,
                            const char *header)
{
    char user[PASSWD_USER_MAX + 1];
    struct basic_credential bc;
    struct passwd_request rq;
    enum passwd_status st;
    struct signin *s;
    const char *why;
    unsigned wait;

    if (rt->passwords == NULL) {
        struct http_error e;
        http_error_set(&e, 501, "signin-disabled",
                       "signing in with a password is off on this server: set [auth] passwords");
        conn_respond_error(c, &e);
        return;
    }
    if (!basic_is(header)) {
        unauthorized(rt, c, route,
                     header == NULL || header[0] == '\0'
                         ? "missing credential: send Authorization: Basic (user:password)"
                         : "expected Authorization: Basic (user:password)",
                     0);
        return;
    }
    if (basic_decode(header, &bc, &why) < 0) {
        unauthorized(rt, c, route, why, 0);
        return;
    }
    /*
     * Checked by the owner of the login, so that its cache and its waiting
     * checks are in one place; a connection handed here already went
     * where its login or its user led, and going back could go round.
     */
    if (!conn_adopted(c) && worker_route(rt->route, c, bc.user, bc.user_len)) {
        basic_wipe(&bc);
        return;
    }
    s = xcalloc(1, sizeof(*s));
    s->rt = rt;
    s->route = route;
    memcpy(s->login, bc.user, bc.user_len + 1);
    s->login_len = bc.user_len;
    for (size_t i = 0; i < bc.user_len; i++)
        s->limit_key[i] = (char)((bc.user[i] >= 'A' && bc.user[i] <= 'Z') ? bc.user[i] + 32
                                                                        : bc.user[i]);
    rq.secured = peer_of(c, s);
    rq.user = bc.user;
    rq.password = bc.password;
    rq.peer = s->peer[0] ? s->peer : NULL;
    if ((wait = limited(rt, s)) > 0 && passwd_cached_ok(rt->passwords, &rq, user)) {
        /* A password verified before: a guesser does not lock its owner out. */
        basic_wipe(&bc);
        free(s);
        signed_in(rt, c, route, user);
        return;
    }
    if (wait > 0) {
        struct http_error e;
        rt->metrics->signins_limited++;
        http_error_set(&e, 429, "too-many-failures",
                       "too many wrong passwords from this address or for this user; try again "
                       "later");
        http_error_header(&e, "Retry-After: %u", wait);
        conn_respond_error(c, &e);
        basic_wipe(&bc);
        free(s);
        return;
    }
    st = passwd_check(rt->passwords, &rq, user, on_checked, s);
    basic_wipe(&bc);
    if (st == PASSWD_PENDING) {
        s->conn = c;
        conn_wait(c, &s->conn);
        return;
    }
    if (st == PASSWD_OK)
        signed_in(rt, c, route, user);
    else
        refused(rt, c, s, 1);
    free(s);
}

/*
 * Checks the token tok[0..n) (a bearer token, or the login cookie's) against
 * the route's need. 0: go on with *who set; -1: answered, or handed off. A
 * user's requests are served by the worker owning the user
 * (worker/worker.h): the owner is read off the token's subject before the
 * MAC is checked, and the request handed over unchecked. The owner checks it
 * (and answers 401 or 403 itself), so a moved request costs one HMAC, and
 * every request one parse of its token.
 */
static int check_token(struct router *rt, struct conn *c, const struct route *route,
                       const char *tok, size_t n, struct principal *who)
{
    struct token_fields f;
    enum token_status st;

    st = token_parse(tok, n, &f);
    /* From an address over the bad-token limit, the MAC first: a forgery is not handed anywhere. */
    if (st == TOKEN_OK && bad_tokens_over(rt, c))
        st = token_check(rt->secret, tok, &f, (int64_t)time(NULL));
    if (st == TOKEN_OK && route->need == TOKEN_USER && f.kind == TOKEN_USER &&
        worker_route(rt->route, c, f.subject, f.subject_len))
        return -1;
    if (st == TOKEN_OK)
        st = token_check(rt->secret, tok, &f, (int64_t)time(NULL));
    /* The owner of the user keeps the time before which its tokens are revoked. */
    if (st == TOKEN_OK && f.kind == TOKEN_USER)
        st = token_revocation(&f, store_get(rt->store, f.subject, TOKEN_REVOKED_FOLDER));
    if (st != TOKEN_OK) {
        /* Expired and revoked tokens were real: a stale client, not a forger. */
        if (st == TOKEN_MALFORMED || st == TOKEN_BAD_SIGNATURE)
            bad_token(rt, c, route, token_status_str(st));
        else
            unauthorized(rt, c, route, token_status_str(st), 1);
        return -1;
    }
    who->kind = f.kind;
    memcpy(who->subject, f.subject, f.subject_len + 1);
    if (who->kind != route->need) {
        char peer[64], q[300];
        struct http_error e;
        const char *need = kind_name(route->need), *got = kind_name(who->kind);
        /*
         * The kinds are user, publisher and admin: only "admin" takes "an"
         * ("a user": its u sounds like "you").
         */
        http_error_set(&e, 403, "forbidden", "this endpoint needs %s %s token, not %s %s token",
                       need[0] == 'a' ? "an" : "a", need, got[0] == 'a' ? "an" : "a", got);
        LOG(LOG_INFO, auth_forbidden, "peer=%s subject=%s path=%s",
            conn_peer(c, peer, sizeof(peer)), log_q(q, sizeof(q), who->subject), route->path);
        conn_respond_error(c, &e);
        return -1;
    }
    return 0;
}

/*
 * Redeems the ticket t[0..n) for a browser route, as check_token does a
 * token: routed to the owner of its user on what ticket_parse read, then
 * its MAC, expiry and the user's revocation time checked, then spent in
 * the owner's set of used tickets, which makes it single-use on every
 * worker. 0 with *who the ticket's user and device; -1: answered (401
 * naming the reason, never the ticket) or handed off.
 */
static int check_ticket(struct router *rt, struct conn *c, const struct route *route,
                        const char *t, size_t n, struct principal *who)
{
    struct ticket_fields f;
    enum ticket_status st;
    int64_t now = (int64_t)time(NULL);
    unsigned retry = 0;

    st = ticket_parse(t, n, &f);
    if (st == TICKET_OK && worker_route(rt->route, c, f.user, f.user_len))
        return -1;
    if (st == TICKET_OK)
        st = ticket_check(rt->secret, t, &f, now,
                          store_get(rt->store, f.user, TOKEN_REVOKED_FOLDER));
    if (st == TICKET_OK)
        st = ticket_spend(rt->spent, &f, now, &retry);
    if (st == TICKET_FULL) {
        struct http_error e;
        LOG(LOG_WARN, tickets_full, "max=%u retry_after=%u", rt->cfg->auth_tickets_max, retry);
        http_error_set(&e, 503, "unavailable", "%s", ticket_status_str(st));
        http_error_header(&e, "Retry-After: %u", retry);
        conn_respond_error(c, &e);
        return -1;
    }
    if (st != TICKET_OK) {
        if (st == TICKET_MALFORMED || st == TICKET_BAD_SIGNATURE)
            bad_token(rt, c, route, ticket_status_str(st));
        else
            unauthorized(rt, c, route, ticket_status_str(st), 1);
        return -1;
    }
    who->kind = TOKEN_USER;
    memcpy(who->subject, f.user, f.user_len + 1);
    memcpy(who->device, f.device, f.device_len + 1);
    return 0;
}

/*
 * A browser route's request without an Authorization header: a ticket in
 * the query (ticket=, never a header: a ticket is for URLs), else the login
 * cookie. The cookie is ambient authority (the browser sends it with any
 * request to us), so a request that names its Origin must name an allowed
 * one; SameSite=Strict already keeps other sites' pages from sending it,
 * the Origin check also covers sibling hosts of the same site. A request
 * without Origin is a same-origin GET (browsers send Origin on every
 * cross-origin one) or no browser at all.
 */
static int browser_credential(struct router *rt, struct conn *c, struct http_req *r,
                              const struct route *route, struct principal *who)
{
    char t[TICKET_MAX + 1];
    const char *cookie = http_req_header(r, HDR_COOKIE), *v, *origin;
    size_t vn;
    long n = -ENOENT;

    if (r->query != NULL)
        n = util_query_param(r->query, r->query_len, "ticket", t, sizeof(t));
    if (n == -EINVAL) {
        bad_token(rt, c, route, ticket_status_str(TICKET_MALFORMED));
        return -1;
    }
    if (n >= 0)
        return check_ticket(rt, c, route, t, (size_t)n, who);
    if (cookie == NULL ||
        http_cookie_find(cookie, r->hdr_len[HDR_COOKIE], LOGIN_COOKIE, &v, &vn) < 0) {
        unauthorized(rt, c, route, "missing bearer token", 0);
        return -1;
    }
    origin = http_req_header(r, HDR_ORIGIN);
    if (origin != NULL && cors_index(rt, origin) < 0) {
        origin_refused(rt, c, route, origin, "the login cookie is not accepted from this Origin");
        return -1;
    }
    return check_token(rt, c, route, v, vn, who);
}

/*
 * Checks the request's credential against the route's need. 0: go on;
 * -1: answered, or handed off (check_token).
 */
static int authenticate(struct router *rt, struct conn *c, struct http_req *r,
                        const struct route *route, struct principal *who)
{
    const char *h = http_req_header(r, HDR_AUTHORIZATION);
    size_t n;

    who->kind = 0;
    who->subject[0] = '\0';
    who->device[0] = '\0';
    if (route->need == 0)
        return 0;
    if (route->password || (rt->basic && route->need == TOKEN_USER && basic_is(h))) {
        password_signin(rt, c, route, h);
        return -1;
    }

    /* An explicit header wins over the cookie the browser sends by itself. */
    if ((h == NULL || h[0] == '\0') && route->browser)
        return browser_credential(rt, c, r, route, who);
    if (h == NULL || h[0] == '\0') {
        unauthorized(rt, c, route, "missing bearer token", 0);
        return -1;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        unauthorized(rt, c, route, "expected Authorization: Bearer <token>", 1);
        return -1;
    }
    h += 7;
    while (*h == ' ')
        h++;
    n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    return check_token(rt, c, route, h, n, who);
}

/* The methods a preflight may name for r's path ("GET, HEAD, POST"); 0 when no route has it. */
static size_t path_methods(const struct http_req *r, char *out, size_t outlen)
{
    unsigned seen = 0; /* bit per llhttp method below 32 */
    size_t len = 0;

    out[0] = '\0';
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *route = &routes[i];
        size_t plen = strlen(route->path);
        if (route->prefix ? r->path_len <= plen || memcmp(route->path, r->path, plen) != 0
                          : plen != r->path_len || memcmp(route->path, r->path, plen) != 0)
            continue;
        for (int k = 0; k < 2; k++) {
            unsigned m = k == 0 ? route->method : (route->head ? HTTP_HEAD : 32);
            if (m >= 32 || (seen & (1u << m)))
                continue;
            seen |= 1u << m;
            len += (size_t)snprintf(out + len, outlen - len, "%s%s", len ? ", " : "",
                                    http_method_str(m));
            if (len >= outlen)
                return outlen - 1;
        }
    }
    return len;
}

/*
 * A CORS preflight (OPTIONS with an Origin, Fetch standard 4.8): from an
 * allowed origin, 204 with what may be sent to this path (and the CORS
 * lines answer_extra adds); from any other, 403 and no CORS headers, so
 * the browser refuses the real request.
 */
static void preflight(struct router *rt, struct conn *c, struct http_req *r, int allowed)
{
    char methods[128], extra[384];
    struct http_error e;

    if (!allowed) {
        origin_refused(rt, c, NULL, http_req_header(r, HDR_ORIGIN), "CORS preflight refused");
        return;
    }
    if (path_methods(r, methods, sizeof(methods)) == 0) {
        http_error_set(&e, 404, "not-found", NULL);
        conn_respond_error(c, &e);
        return;
    }
    /*
     * Last-Event-ID: an EventSource resuming sends it. 600 s: browsers cap
     * the cache of a preflight near there anyway (Chromium at 2 h, Firefox
     * at 24 h), and a config change reaches pages within 10 minutes.
     */
    snprintf(extra, sizeof(extra),
             "Access-Control-Allow-Methods: %s\r\n"
             "Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n"
             "Access-Control-Max-Age: 600\r\n",
             methods);
    conn_respond(c, 204, extra, NULL, 0);
}

void router_dispatch(struct router *rt, struct conn *c, struct http_req *r)
{
    const struct route *path_match = NULL;
    const char *origin = http_req_header(r, HDR_ORIGIN);
    int cors = cors_index(rt, origin);
    struct principal who;
    struct http_error e;

    /* Every answer to an allowed origin carries its CORS lines, errors included. */
    r->answer_extra = cors >= 0 ? rt->cors_lines[cors] : NULL;
    if (r->method == HTTP_OPTIONS && origin != NULL) {
        preflight(rt, c, r, cors >= 0);
        return;
    }
    /* A stream's client gets a 200 that says when to come back (stream/sse.h), never a 503. */
    if (conn_stopping(c) && sse_is_stream(r)) {
        sse_come_back(c, rt->cfg->shutdown_retry_after);
        return;
    }
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
        if (route->method != r->method && !(r->method == HTTP_HEAD && route->head))
            continue;
        if (authenticate(rt, c, r, route, &who) < 0)
            return;
        route->fn(rt->to[route->target], c, r, &who);
        return;
    }
    if (path_match) {
        http_error_set(&e, 405, "method-not-allowed", NULL);
        http_error_header(&e, "Allow: %s%s", http_method_str(path_match->method),
                          path_match->head ? ", HEAD" : "");
        conn_respond_error(c, &e);
        return;
    }
    http_error_set(&e, 404, "not-found", NULL);
    conn_respond_error(c, &e);
}
