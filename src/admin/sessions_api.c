/*
 * sessions_api.c — the sessions admin API; see sessions_api.h.
 *
 * A listing of every session is gathered from every worker (each answers
 * its own in parts of at most half a mesh message), a listing for one user
 * and an end are served by the worker owning that user.
 */
#include "admin/sessions_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/jsonw.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "session/session.h"
#include "shard/shard.h"
#include "worker/mesh.h"
#include "worker/worker.h"

/* A URL-encoded id may take three bytes per byte. */
#define USER_ID_BUF (3 * USER_ID_MAX + 1)

/* Every session of this worker as "[...]" text; *count gets how many. */
static char *local_sessions(struct sessions_api *a, size_t *len, size_t *count)
{
    uint64_t now = util_now_ms();
    uint32_t pos = 0;
    const char *key;
    void *val;
    struct jsonw w;

    jw_init(&w);
    jw_arr_begin(&w);
    while (strmap_next(&a->shard->users, &pos, &key, &val))
        session_list_user(a->sessions, &w, val, now, count);
    jw_arr_end(&w);
    return jw_take(&w, len);
}

/* A listing gathered from every worker: each part is a JSON array's items. */
struct list_job {
    struct conn *conn;      /* NULL once the admin went away */
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

static void on_listed(void *arg)
{
    struct list_job *j = arg;

    if (j->conn) {
        j->len += (size_t)snprintf(j->buf + j->len, j->cap - j->len, "],\"count\":%llu}",
                                   (unsigned long long)j->count);
        conn_respond(j->conn, 200, NULL, j->buf, j->len);
    }
    free(j->buf);
    free(j);
}

static void on_part(void *arg, void *call_arg, unsigned from, const char *p, size_t len,
                    int status)
{
    struct list_job *j = arg;
    uint64_t n;

    (void)call_arg;
    (void)from;
    if (status >= 0 && len >= sizeof(n)) {
        memcpy(&n, p, sizeof(n));
        j->count += n;
        list_add(j, p + sizeof(n), len - sizeof(n));
    }
}

static void list_all_workers(struct sessions_api *a, struct conn *c)
{
    struct list_job *j = xcalloc(1, sizeof(*j));
    size_t len, count = 0;
    char *mine = local_sessions(a, &len, &count);
    struct mesh_gather *g;

    j->cap = 4096 + len;
    j->buf = xmalloc(j->cap);
    j->len = (size_t)snprintf(j->buf, j->cap, "{\"sessions\":[");
    j->count = count;
    list_add(j, mine, len);
    free(mine);
    j->conn = c;
    conn_wait(c, &j->conn);
    g = mesh_gather_new(a->mesh, on_part, on_listed, j);
    mesh_gather_all(g, SESSIONS_API_MSG_LIST, NULL, 0);
    mesh_gather_release(g);
}

/* Sends one part of a listing: "[items]" with its count. */
static void send_part(struct sessions_api *a, unsigned to, uint32_t id, struct jsonw *w,
                      uint64_t n, int more)
{
    size_t len;
    char *text;
    struct iovec iov[2];

    jw_arr_end(w);
    text = jw_take(w, &len);
    iov[0] = (struct iovec){.iov_base = &n, .iov_len = sizeof(n)};
    iov[1] = (struct iovec){.iov_base = text, .iov_len = len};
    mesh_reply(a->mesh, to, id, more, iov, 2);
    free(text);
}

/* SESSIONS_API_MSG_LIST: replies with this worker's sessions, in parts. */
static void on_list_msg(void *arg, unsigned from, uint32_t id, const char *p, size_t len, int fd)
{
    struct sessions_api *a = arg;
    /* Parts of at most half a message: a user's sessions are added whole, ~300 bytes each. */
    size_t half = (mesh_max_payload(a->mesh) - sizeof(uint64_t)) / 2, count = 0;
    uint64_t now = util_now_ms();
    uint32_t pos = 0;
    const char *key;
    void *val;
    struct jsonw w;

    (void)p;
    (void)len;
    if (fd >= 0)
        close(fd);
    jw_init(&w);
    jw_arr_begin(&w);
    while (strmap_next(&a->shard->users, &pos, &key, &val)) {
        session_list_user(a->sessions, &w, val, now, &count);
        if (w.len > half) {
            send_part(a, from, id, &w, count, 1);
            count = 0;
            jw_init(&w);
            jw_arr_begin(&w);
        }
    }
    send_part(a, from, id, &w, count, 0);
}

void sessions_api_init(struct sessions_api *a, struct sessions *sessions, struct shard *shard,
                       const struct worker_ctx *wk, struct mesh *mesh,
                       const struct worker_route *route)
{
    a->sessions = sessions;
    a->shard = shard;
    a->wk = wk;
    a->mesh = mesh;
    a->route = route;
    mesh_on(mesh, SESSIONS_API_MSG_LIST, on_list_msg, a);
}

void sessions_list_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct sessions_api *a = arg;
    uint64_t now = util_now_ms();
    char user[USER_ID_BUF];
    struct http_error e;
    struct jsonw w;
    size_t count = 0, len;
    long ulen = util_query_param(r->query, r->query_len, "user", user, sizeof(user));
    char *body;

    (void)who;
    if (ulen == -EINVAL) {
        /* Either an escape that does not decode or more than three bytes of encoding a byte. */
        http_error_bad(&e, "query parameter user is badly encoded (a broken %%XX escape) or "
                           "longer than %d bytes", USER_ID_MAX);
        http_error_num(&e, "max_user_bytes", USER_ID_MAX);
        conn_respond_error(c, &e);
        return;
    }
    /*
     * The buffer holds the encoded value, three bytes per byte, so a decoded
     * id may still be too long: no user can have it, and an empty list would
     * read as "no sessions" instead of "this is not a user id".
     */
    if (ulen == 0 || ulen > USER_ID_MAX) {
        http_error_bad(&e, "query parameter user is %ld bytes decoded; a user id is 1..%d bytes",
                       ulen, USER_ID_MAX);
        http_error_num(&e, "max_user_bytes", USER_ID_MAX);
        conn_respond_error(c, &e);
        return;
    }
    if (ulen >= 0 && worker_route(a->route, c, user, (size_t)ulen))
        return;
    if (ulen < 0 && a->wk) {
        list_all_workers(a, c);
        return;
    }
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "sessions");
    jw_arr_begin(&w);
    if (ulen >= 0) {
        struct user *u = shard_user(a->shard, user, 0);
        if (u)
            session_list_user(a->sessions, &w, u, now, &count);
    } else {
        uint32_t pos = 0;
        const char *key;
        void *val;
        while (strmap_next(&a->shard->users, &pos, &key, &val))
            session_list_user(a->sessions, &w, val, now, &count);
    }
    jw_arr_end(&w);
    jw_key(&w, "count");
    jw_u64(&w, count);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

void sessions_end_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    static const char prefix[] = "/v1/admin/sessions/";
    struct sessions_api *a = arg;
    const char *rest = r->path + sizeof(prefix) - 1;
    size_t restlen = r->path_len - (sizeof(prefix) - 1);
    const char *slash = memchr(rest, '/', restlen);
    char user[USER_ID_BUF], device[USER_ID_BUF];
    struct http_error e;
    long ulen, dlen;
    struct user *u;
    struct device *d;
    struct jsonw w;
    size_t len;
    char *body;

    (void)who;
    if (slash == NULL || memchr(slash + 1, '/', restlen - (size_t)(slash + 1 - rest)) != NULL ||
        (size_t)(slash - rest) >= sizeof(user) || restlen - (size_t)(slash - rest) > sizeof(device)) {
        http_error_bad(&e, "expected /v1/admin/sessions/USER/DEVICE (encode a '/' inside as %%2F)");
        goto refuse;
    }
    memcpy(user, rest, (size_t)(slash - rest));
    ulen = util_url_decode(user, (size_t)(slash - rest));
    dlen = (long)(restlen - (size_t)(slash - rest) - 1);
    memcpy(device, slash + 1, (size_t)dlen);
    dlen = util_url_decode(device, (size_t)dlen);
    if (ulen <= 0 || dlen <= 0) {
        http_error_bad(&e, "user and device must be non-empty and URL-encoded");
        goto refuse;
    }
    if (worker_route(a->route, c, user, (size_t)ulen))
        return;
    u = shard_user(a->shard, user, 0);
    d = u ? shard_device(a->shard, u, device, 0) : NULL;
    if (d == NULL || session_end(a->sessions, d) < 0) {
        http_error_set(&e, 404, "no-session", "that user and device hold no session");
        goto refuse;
    }
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
    return;
refuse:
    conn_respond_error(c, &e);
}
