/*
 * revoke.c — revoking a user's tokens; see revoke.h. The answer:
 *
 *   {"status":"revoked","user":"alice","before":1765072800123,"sessions":2}
 *
 * 'before' is the revocation time in Unix ms: tokens issued at or before it
 * are refused ("token revoked"); 'sessions' how many were ended.
 */
#include "admin/revoke.h"

#include <stdlib.h>
#include <string.h>

#include "auth/token.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "worker/worker.h"

/* A revocation waiting for the store's commit. */
struct job {
    struct conn *conn;          /* NULL once the admin went away */
    struct revoke *rv;
    struct store_event ev;
    char user[USER_ID_MAX + 1];
};

void revoke_init(struct revoke *rv, struct store *store, struct shard *shard,
                 struct sessions *sessions, struct metrics *metrics,
                 const struct worker_route *route)
{
    rv->store = store;
    rv->shard = shard;
    rv->sessions = sessions;
    rv->metrics = metrics;
    rv->route = route;
}

/* Ends every session of 'user' (nothing a revoked token opened stays). Returns how many. */
static unsigned end_sessions(struct revoke *rv, const char *user)
{
    struct user *u = shard_user(rv->shard, user, 0);
    uint32_t pos = 0;
    const char *key;
    void *val;
    unsigned n = 0;

    while (u && strmap_next(&u->devices, &pos, &key, &val))
        n += session_end(rv->sessions, val) == 0;
    return n;
}

static void on_committed(void *arg, struct store_event *ev, size_t n, int status)
{
    struct job *j = arg;
    struct http_error e;
    unsigned ended;
    struct jsonw w;
    size_t len;
    char *body, q[300];

    (void)n;
    if (status < 0) {
        if (j->conn) {
            http_error_set(&e, 503, "store-error", "the store could not commit the revocation");
            conn_respond_error(j->conn, &e);
        }
        free(j);
        return;
    }
    ended = end_sessions(j->rv, j->user);
    j->rv->metrics->tokens_revoked++;
    LOG(LOG_INFO, tokens_revoked, "user=%s before=%llu sessions=%u", log_q(q, sizeof(q), j->user),
        (unsigned long long)ev->state, ended);
    if (j->conn) {
        jw_init(&w);
        jw_obj_begin(&w);
        jw_key(&w, "status");
        jw_str(&w, "revoked");
        jw_key(&w, "user");
        jw_str(&w, j->user);
        jw_key(&w, "before");
        jw_u64(&w, ev->state);
        jw_key(&w, "sessions");
        jw_u64(&w, ended);
        jw_obj_end(&w);
        body = jw_take(&w, &len);
        conn_respond(j->conn, 200, NULL, body, len);
        free(body);
    }
    free(j);
}

void revoke_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    static const char prefix[] = "/v1/admin/tokens/";
    struct revoke *rv = arg;
    size_t rawlen = r->path_len - (sizeof(prefix) - 1);
    char user[3 * USER_ID_MAX + 1];
    struct http_error e;
    struct job *j;
    long ulen;

    (void)who;
    if (rawlen >= sizeof(user) || memchr(r->path + sizeof(prefix) - 1, '/', rawlen) != NULL) {
        http_error_bad(&e, "expected DELETE /v1/admin/tokens/USER (the user URL-encoded)");
        goto refuse;
    }
    memcpy(user, r->path + sizeof(prefix) - 1, rawlen);
    user[rawlen] = '\0';
    ulen = util_url_decode(user, rawlen);
    if (ulen < 0 || strlen(user) != (size_t)ulen || check_user_id(user, (size_t)ulen) != NULL) {
        http_error_bad(&e, "the user in the path is badly encoded or not a valid user id");
        goto refuse;
    }
    if (worker_route(rv->route, c, user, (size_t)ulen))
        return;
    j = xcalloc(1, sizeof(*j));
    j->rv = rv;
    memcpy(j->user, user, (size_t)ulen + 1);
    j->ev.user = j->user;
    j->ev.folder = TOKEN_REVOKED_FOLDER;
    /* Now, in ms; a clock that went back still moves the counter forward by one. */
    j->ev.at_least = (uint64_t)token_now_ms();
    j->conn = c;
    conn_wait(c, &j->conn);
    if (store_bump(rv->store, &j->ev, 1, on_committed, j) < 0) {
        http_error_set(&e, 503, "store-error", "the store refused the revocation");
        conn_respond_error(c, &e);
        free(j);
    }
    return;
refuse:
    conn_respond_error(c, &e);
}
