/*
 * probe.c — the path idle-timeout probe; see probe.h.
 *
 * Keepalive is switched off on the probe's socket (and TCP_USER_TIMEOUT does
 * not matter: nothing is written while it waits), so the flow is truly idle
 * for N seconds. The connection is not reused afterwards for anything that
 * needs keepalive: the answer closes it.
 */
#include "push/probe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/util.h"
#include "http/request.h"
#include "push/handlers.h"
#include "server/conn.h"
#include "server/router.h"
#include "server/server.h"

struct probe {
    struct user *user;
    unsigned hold;
};

void probe_end(struct probe *p)
{
    if (p->user->probes > 0)
        p->user->probes--;
    free(p);
}

void probe_expired(struct conn *c)
{
    char body[48];
    int n = snprintf(body, sizeof(body), "{\"held\":%u}", c->probe->hold);

    /* Keepalive is off on this socket: do not let it idle on as a keep-alive connection. */
    c->keep_alive = 0;
    conn_respond(c, 200, NULL, body, (size_t)n);
}

void probe_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct server *s = c->srv;
    unsigned ceiling = 3540; /* the heartbeat ceiling: no heartbeat can be longer */
    char val[16], msg[128];
    long n = util_query_param(r->query, r->query_len, "hold", val, sizeof(val));
    uint64_t hold;
    struct user *u;
    struct probe *p;
    uv_os_fd_t fd;
    int off = 0;

    if (n < 0 || util_parse_u64(val, (size_t)n, &hold) < 0 || hold < 1 || hold > ceiling) {
        snprintf(msg, sizeof(msg), "hold must be a whole number of seconds from 1 to %u", ceiling);
        conn_respond_error(c, 400, "bad-request", msg);
        return;
    }
    u = shard_user(&s->shard, who->subject, 1);
    if (u->probes >= PROBE_MAX_PER_USER) {
        snprintf(msg, sizeof(msg), "at most %d probes per user at once", PROBE_MAX_PER_USER);
        conn_respond_error(c, 429, "too-many-probes", msg);
        return;
    }
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &off, sizeof(off)) < 0) {
        conn_respond_error(c, 503, "unavailable", "cannot switch keepalive off");
        return;
    }
    p = malloc(sizeof(*p));
    if (p == NULL) {
        conn_respond_error(c, 503, "unavailable", "out of memory");
        return;
    }
    p->user = u;
    p->hold = (unsigned)hold;
    u->probes++;
    conn_hold_probe(c, p, util_now_ms() + hold * 1000);
}
