/*
 * session.c — the per-user cap with its reaper, and the sessions admin API;
 * see session.h for the rules.
 *
 * Cost: nothing per tick. The reaper runs only when a user hits the cap,
 * and then asks the kernel about that user's sessions alone (one
 * getsockopt(TCP_INFO) each, at most per_user_limit of them).
 */
#include "session/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "http/request.h"
#include "net/sockopt.h"
#include "server/conn.h"
#include "server/router.h"
#include "server/server.h"
#include "push/handlers.h"
#include "push/udp.h"
#include "session/heartbeat.h"
#include "shard/shard.h"
#include "worker/mesh.h"
#include "worker/mesh_handlers.h"
#include "worker/worker.h"

/* A URL-encoded id may take three bytes per byte. */
#define USER_ID_BUF (3 * USER_ID_MAX + 1)

/*
 * Closes u's held connections that the kernel reports dead, and ends the
 * suspended UDP registrations (an ICMP error said their address is gone) of
 * devices with no live held ping. Returns how many sessions that freed.
 */
static unsigned reap_dead(struct server *s, struct user *u)
{
    const struct config *cfg = s->cfg;
    /* Silent through the idle time and one whole probe interval: a probe went unanswered. */
    unsigned probe_ms = (cfg->keepalive_idle + cfg->keepalive_interval) * 1000;
    /* Written data unacknowledged for as long as keepalive would wait: not coming back. */
    unsigned stale_ms = cfg->keepalive_interval * cfg->keepalive_count * 1000;
    uint32_t pos = 0, before = user_sessions(u), after;
    const char *key;
    void *val;

    while (strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        char why[96], reason[128];
        uv_os_fd_t fd;

        if (d->held && uv_fileno((uv_handle_t *)&d->held->tcp, &fd) == 0 &&
            net_tcp_alive(fd, probe_ms, stale_ms, why, sizeof(why)) == 0) {
            snprintf(reason, sizeof(reason), "reaped: %s", why);
            /* The close is deferred, but the hold is released at once. */
            conn_close(d->held, reason);
        }
        /* A device with a live held ping is present whatever its registration says. */
        if (d->held == NULL)
            udp_reap_suspended(s, d);
    }
    after = user_sessions(u);
    s->metrics.sessions_reaped += before - after;
    return before - after;
}

/* "phone1 age=12s idle=3s, tablet age=..." for the session-limit event. */
static void describe_sessions(struct user *u, uint64_t now, char *out, size_t outlen)
{
    uint32_t pos = 0;
    const char *key;
    void *val;
    size_t n = 0;

    out[0] = '\0';
    while (strmap_next(&u->devices, &pos, &key, &val) && n + 1 < outlen) {
        struct device *d = val;
        if (d->held)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s age=%llus idle=%llus", n ? ", " : "",
                                  d->id, (unsigned long long)((now - d->held_since) / 1000),
                                  (unsigned long long)((now - d->last_request) / 1000));
        else if (d->udp)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s udp age=%llus%s", n ? ", " : "",
                                  d->id, (unsigned long long)((now - d->udp->created_ms) / 1000),
                                  d->udp->suspended ? " suspended" : "");
    }
}

/* Seconds until the first of u's sessions ends by itself (its heartbeat). */
static unsigned first_end_s(struct user *u, uint64_t now)
{
    uint32_t pos = 0;
    const char *key;
    void *val;
    uint64_t first = UINT64_MAX;

    while (strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        if (d->held && d->held->deadline.idx && d->held->deadline.at < first)
            first = d->held->deadline.at;
        if (d->udp && !d->held && d->udp->expires_ms < first)
            first = d->udp->expires_ms;
    }
    if (first == UINT64_MAX || first <= now)
        return 1;
    return (unsigned)((first - now + 999) / 1000);
}

int session_admit(struct server *s, struct conn *c, struct user *u, struct device *d)
{
    unsigned limit = s->cfg->sessions_per_user_limit;
    uint64_t now = util_now_ms();
    char extra[48], body[96], list[1200], q1[300], q2[300], q3[1300];
    int n;

    /* A device never has two sessions: its new one replaces its old. */
    if (device_present(d) || u->held + u->udp < limit || user_sessions(u) < limit)
        return 0;
    reap_dead(s, u);
    if (user_sessions(u) < limit)
        return 0;
    s->metrics.sessions_refused++;
    describe_sessions(u, now, list, sizeof(list));
    LOG(LOG_WARN, session_limit, "user=%s device=%s limit=%u sessions=%s",
        log_q(q1, sizeof(q1), u->id), log_q(q2, sizeof(q2), d->id), limit,
        log_q(q3, sizeof(q3), list));
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", first_end_s(u, now));
    n = snprintf(body, sizeof(body), "{\"status\":\"session-limit\",\"limit\":%u}", limit);
    conn_respond(c, 429, extra, body, (size_t)n);
    return -1;
}

void session_closed(struct server *s, struct device *d, const char *why)
{
    char q1[300], q2[300], q3[200];

    /* The path or the peer failed before the heartbeat ended; an admin's end proves nothing. */
    if (strcmp(why, SESSION_ENDED_BY_ADMIN) != 0)
        hb_on_lost(s, d);

    LOG(LOG_INFO, session_closed, "user=%s device=%s why=%s", log_q(q1, sizeof(q1), d->user->id),
        log_q(q2, sizeof(q2), d->id), log_q(q3, sizeof(q3), why));
}

static void add_session(struct jsonw *w, struct device *d, uint64_t now)
{
    char peer[64];

    jw_obj_begin(w);
    jw_key(w, "user");
    jw_str(w, d->user->id);
    jw_key(w, "device");
    jw_str(w, d->id);
    jw_key(w, "kind");
    jw_str(w, d->held && d->udp ? "ping+udp" : d->held ? "ping" : "udp");
    if (d->held) {
        jw_key(w, "remote");
        jw_str(w, conn_peer(d->held, peer, sizeof(peer)));
        jw_key(w, "age");
        jw_u64(w, (now - d->held_since) / 1000);
        jw_key(w, "last_activity");
        jw_u64(w, (now - d->last_request) / 1000);
        jw_key(w, "heartbeat");
        jw_u64(w, d->heartbeat);
    } else {
        /* A registration alone: its remote is where its datagrams go. */
        jw_key(w, "remote");
        jw_str(w, util_format_addr(&d->udp->addr.sa, peer, sizeof(peer)));
        jw_key(w, "age");
        jw_u64(w, (now - d->udp->created_ms) / 1000);
    }
    if (d->udp) {
        jw_key(w, "udp");
        udp_describe(d->udp, w, now);
    }
    jw_obj_end(w);
}

static void add_user_sessions(struct jsonw *w, struct user *u, uint64_t now, size_t *count)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while ((u->held || u->udp) && strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        if (device_present(d)) {
            add_session(w, d, now);
            (*count)++;
        }
    }
}

/* Every session of this worker as "[...]" text; *count gets how many. */
static char *local_sessions(struct server *s, size_t *len, size_t *count)
{
    uint64_t now = util_now_ms();
    uint32_t pos = 0;
    const char *key;
    void *val;
    struct jsonw w;

    jw_init(&w);
    jw_arr_begin(&w);
    while (strmap_next(&s->shard.users, &pos, &key, &val))
        add_user_sessions(&w, val, now, count);
    jw_arr_end(&w);
    return jw_take(&w, len);
}

/* A listing gathered from every worker: each part is a JSON array's items. */
struct list_job {
    struct conn *conn;      /* first: conn_close clears it (conn_wait) */
    unsigned left;
    uint64_t count;
    char *buf;              /* "{\"sessions\":[" + items so far */
    size_t len, cap;
    int items;              /* any item in buf yet */
};

static void list_add(struct list_job *j, const char *arr, size_t len)
{
    /* 'arr' is "[...]" (or a run of items from a part of one): strip the brackets. */
    if (len >= 1 && arr[0] == '[') {
        arr++;
        len--;
    }
    if (len >= 1 && arr[len - 1] == ']')
        len--;
    if (len == 0)
        return;
    if (j->len + len + 64 > j->cap) {
        while (j->len + len + 64 > j->cap)
            j->cap *= 2;
        j->buf = xrealloc(j->buf, j->cap);
    }
    if (j->items)
        j->buf[j->len++] = ',';
    memcpy(j->buf + j->len, arr, len);
    j->len += len;
    j->items = 1;
}

static void list_done(struct list_job *j)
{
    if (--j->left > 0)
        return;
    if (j->conn) {
        j->len += (size_t)snprintf(j->buf + j->len, j->cap - j->len, "],\"count\":%llu}",
                                   (unsigned long long)j->count);
        conn_respond(j->conn, 200, NULL, j->buf, j->len);
    }
    free(j->buf);
    free(j);
}

static void on_sessions_part(void *arg, unsigned from, const char *p, size_t len, int status)
{
    struct list_job *j = arg;
    uint64_t n;

    (void)from;
    if (status >= 0 && len >= sizeof(n)) {
        memcpy(&n, p, sizeof(n));
        j->count += n;
        list_add(j, p + sizeof(n), len - sizeof(n));
    }
    if (status != MESH_MORE)
        list_done(j);
}

static void list_all_workers(struct conn *c)
{
    struct server *s = c->srv;
    struct list_job *j = xcalloc(1, sizeof(*j));
    size_t len, count = 0;
    char *mine = local_sessions(s, &len, &count);

    j->cap = 4096 + len;
    j->buf = xmalloc(j->cap);
    j->len = (size_t)snprintf(j->buf, j->cap, "{\"sessions\":[");
    j->count = count;
    list_add(j, mine, len);
    free(mine);
    j->conn = c;
    j->left = 1;
    conn_wait(c, j);
    for (unsigned i = 0; i < s->wk->count; i++) {
        if (i == s->wk->index)
            continue;
        j->left++;
        if (mesh_call(s, i, MESH_SESSIONS, NULL, 0, on_sessions_part, j) < 0)
            j->left--;
    }
    list_done(j);
}

/* Sends one part of a listing: "[items]" with its count. */
static void send_part(struct server *s, unsigned to, uint32_t id, struct jsonw *w, uint64_t n,
                      int more)
{
    size_t len;
    char *text;
    struct iovec iov[2];

    jw_arr_end(w);
    text = jw_take(w, &len);
    iov[0] = (struct iovec){.iov_base = &n, .iov_len = sizeof(n)};
    iov[1] = (struct iovec){.iov_base = text, .iov_len = len};
    mesh_reply(s, to, MESH_SESSIONS_REPLY, id, more, iov, 2);
    free(text);
}

void sessions_remote(struct server *s, unsigned from, uint32_t id, const char *p, size_t len)
{
    /* Parts of at most half a message: a user's sessions are added whole, ~300 bytes each. */
    size_t half = (mesh_max_payload(s) - sizeof(uint64_t)) / 2, count = 0;
    uint64_t now = util_now_ms();
    uint32_t pos = 0;
    const char *key;
    void *val;
    struct jsonw w;

    (void)p;
    (void)len;
    jw_init(&w);
    jw_arr_begin(&w);
    while (strmap_next(&s->shard.users, &pos, &key, &val)) {
        add_user_sessions(&w, val, now, &count);
        if (w.len > half) {
            send_part(s, from, id, &w, count, 1);
            count = 0;
            jw_init(&w);
            jw_arr_begin(&w);
        }
    }
    send_part(s, from, id, &w, count, 0);
}

void sessions_list_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct server *s = c->srv;
    uint64_t now = util_now_ms();
    char user[USER_ID_BUF];
    struct jsonw w;
    size_t count = 0, len;
    long ulen = util_query_param(r->query, r->query_len, "user", user, sizeof(user));
    char *body;
    unsigned to;

    (void)who;
    if (ulen == -EINVAL) {
        conn_respond_error(c, 400, "bad-request", "query parameter user is badly encoded or too long");
        return;
    }
    if (ulen >= 0 && conn_user_elsewhere(c, user, (size_t)ulen, &to)) {
        conn_handoff(c, to);
        return;
    }
    if (ulen < 0 && s->wk) {
        list_all_workers(c);
        return;
    }
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "sessions");
    jw_arr_begin(&w);
    if (ulen >= 0) {
        struct user *u = shard_user(&s->shard, user, 0);
        if (u)
            add_user_sessions(&w, u, now, &count);
    } else {
        uint32_t pos = 0;
        const char *key;
        void *val;
        while (strmap_next(&s->shard.users, &pos, &key, &val))
            add_user_sessions(&w, val, now, &count);
    }
    jw_arr_end(&w);
    jw_key(&w, "count");
    jw_u64(&w, count);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

void sessions_end_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    static const char prefix[] = "/v1/admin/sessions/";
    const char *rest = r->path + sizeof(prefix) - 1;
    size_t restlen = r->path_len - (sizeof(prefix) - 1);
    const char *slash = memchr(rest, '/', restlen);
    char user[USER_ID_BUF], device[USER_ID_BUF];
    long ulen, dlen;
    struct user *u;
    struct device *d;
    struct jsonw w;
    size_t len;
    char *body;

    (void)who;
    if (slash == NULL || memchr(slash + 1, '/', restlen - (size_t)(slash + 1 - rest)) != NULL ||
        (size_t)(slash - rest) >= sizeof(user) || restlen - (size_t)(slash - rest) > sizeof(device)) {
        conn_respond_error(c, 400, "bad-request",
                           "expected /v1/admin/sessions/USER/DEVICE (encode a '/' inside as %2F)");
        return;
    }
    memcpy(user, rest, (size_t)(slash - rest));
    ulen = util_url_decode(user, (size_t)(slash - rest));
    dlen = (long)(restlen - (size_t)(slash - rest) - 1);
    memcpy(device, slash + 1, (size_t)dlen);
    dlen = util_url_decode(device, (size_t)dlen);
    if (ulen <= 0 || dlen <= 0) {
        conn_respond_error(c, 400, "bad-request", "user and device must be non-empty and URL-encoded");
        return;
    }
    {
        unsigned to;
        if (conn_user_elsewhere(c, user, (size_t)ulen, &to)) {
            conn_handoff(c, to);
            return;
        }
    }
    u = shard_user(&c->srv->shard, user, 0);
    d = u ? user_device(u, device, 0) : NULL;
    if (d == NULL || !device_present(d)) {
        conn_respond_error(c, 404, "no-session", "that user and device hold no session");
        return;
    }
    if (d->held)
        conn_close(d->held, SESSION_ENDED_BY_ADMIN);
    udp_end(c->srv, d, SESSION_ENDED_BY_ADMIN);
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, "ended");
    jw_key(&w, "user");
    jw_str(&w, user);
    jw_key(&w, "device");
    jw_str(&w, device);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}
