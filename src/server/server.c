/*
 * server.c — the listener, the shared timers and the orderly stop.
 *
 * Timers: one uv_timer for all connection deadlines (see deadline.h), one
 * zero-delay timer that runs connections whose pipelined requests can go on
 * (deferred so that answering one connection from another's callback never
 * recurses into a third), one that bounds the drain at shutdown.
 *
 * Stop (SIGTERM/SIGINT): close the listener, answer every held ping 503
 * shutting-down (Retry-After), close idle connections, let requests in
 * progress finish with Connection: close, and leave the loop when the last
 * connection is gone or after STOP_GRACE_MS, whichever is first.
 */
#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "push/ingest.h"
#include "push/ping.h"
#include "push/udp.h"
#include "server/conn.h"
#include "server/listen.h"
#include "session/heartbeat.h"
#include "worker/mesh.h"

/* Longest drain at shutdown: answers are small, so this is only for stuck peers. */
#define STOP_GRACE_MS 2000

static void on_deadline_timer(uv_timer_t *t)
{
    struct server *s = t->data;
    uint64_t now = util_now_ms();
    struct deadline_node *n;

    s->deadline_armed = 0;
    while ((n = deadline_peek(&s->deadlines)) != NULL && n->at <= now) {
        struct conn *c = (struct conn *)((char *)n - offsetof(struct conn, deadline));
        deadline_clear(&s->deadlines, n);
        conn_on_deadline(c);
    }
    server_deadlines_changed(s);
}

void server_deadlines_changed(struct server *s)
{
    struct deadline_node *n = deadline_peek(&s->deadlines);
    uint64_t now;

    if (n == NULL) {
        if (s->deadline_armed) {
            uv_timer_stop(&s->deadline_timer);
            s->deadline_armed = 0;
        }
        return;
    }
    if (s->deadline_armed == n->at)
        return;
    now = util_now_ms();
    s->deadline_armed = n->at;
    uv_timer_start(&s->deadline_timer, on_deadline_timer, n->at > now ? n->at - now : 0, 0);
}

static void on_resume_timer(uv_timer_t *t)
{
    struct server *s = t->data;

    while (s->resume_head) {
        struct conn *c = s->resume_head;
        s->resume_head = c->resume_next;
        c->resume_next = NULL;
        conn_resume(c);
    }
}

void server_resume_soon(struct server *s)
{
    uv_timer_start(&s->resume_timer, on_resume_timer, 0, 0);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Leaves the loop: closes the server's own handles so uv_run returns. */
static void finish_stop(struct server *s)
{
    close_handle((uv_handle_t *)&s->deadline_timer);
    close_handle((uv_handle_t *)&s->resume_timer);
    close_handle((uv_handle_t *)&s->stop_timer);
    close_handle((uv_handle_t *)&s->sig_term);
    close_handle((uv_handle_t *)&s->sig_int);
    listen_stop(s);
    udp_stop(s);
    mesh_stop(s);
}

static void walk_stop(uv_handle_t *h, void *arg)
{
    struct server *s = arg;
    struct conn *c;

    (void)s;
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    c = h->data;
    if (c->flags & CONN_HELD)
        ping_shutdown(c);
    else if (c->flags & CONN_PROBE)
        conn_close(c, "shutdown"); /* a probe measures the path; there is nothing to answer */
    else if (!(c->flags & CONN_BUSY) && c->req == NULL && !(c->flags & CONN_LINGER))
        conn_close(c, "shutdown");
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h))
        conn_close(h->data, "shutdown");
}

static void on_stop_tick(uv_timer_t *t)
{
    struct server *s = t->data;

    if (s->metrics.connections > 0 && uv_now(s->loop) - s->stop_started < STOP_GRACE_MS)
        return;
    uv_walk(s->loop, walk_close, s);
    finish_stop(s);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;
    char q[64];

    if (s->stopping)
        return;
    s->stopping = 1;
    LOG(LOG_INFO, stopping, "signal=%s held=%llu connections=%llu",
        log_q(q, sizeof(q), strsignal(signum)),
        (unsigned long long)s->metrics.pings_held, (unsigned long long)s->metrics.connections);
    listen_stop(s);
    uv_walk(s->loop, walk_stop, s);
    s->stop_started = uv_now(s->loop);
    /* Check every 50 ms whether the drain is over. */
    uv_timer_start(&s->stop_timer, on_stop_tick, 50, 50);
}

/* Start-up: rebuild the device records the store kept (last ping parameters). */
static void on_device_loaded(void *arg, const struct store_device *sd)
{
    struct server *s = arg;
    struct user *u = shard_user(&s->shard, sd->user, 1);
    struct device *d = user_device(u, sd->device, 1);

    device_set_folders(d, sd->folders, sd->nfolders);
    d->heartbeat = sd->heartbeat;
    d->heartbeat_hint = sd->heartbeat_hint;
    d->heartbeat_good = sd->heartbeat_good;
    d->heartbeat_ceiling = sd->heartbeat_ceiling;
    d->ceiling_since = sd->ceiling_since;
    if (sd->udp)
        udp_restore(s, d, sd->udp);
}

int server_init(struct server *s, uv_loop_t *loop, const struct config *cfg,
                const struct secret *secret, const struct worker_ctx *wk)
{
    const struct store_backend *be;
    char err[512];

    memset(s, 0, sizeof(*s));
    s->listen_fd = -1;
    s->loop = loop;
    s->cfg = cfg;
    s->secret = *secret;
    s->wk = wk;
    s->limits.max_header_bytes = cfg->max_header_bytes;
    s->limits.max_body_bytes = cfg->max_body_bytes;
    deadline_heap_init(&s->deadlines);
    shard_init(&s->shard);
    ingest_init(s);

    be = store_backend_find(cfg->store_backend);
    if (be == NULL) {
        LOG(LOG_ERROR, startup_failed, "reason=\"unknown store backend\" backend=%s",
            log_q(err, sizeof(err), cfg->store_backend));
        return -1;
    }
    if (be->open(&s->store, cfg, loop, err, sizeof(err)) < 0) {
        char q[600];
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        return -1;
    }

    /* The UDP socket first: device records bring registrations, which may have datagrams due. */
    if (udp_init(s, err, sizeof(err)) < 0) {
        char q[600];
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        return -1;
    }
    store_device_load(s->store, on_device_loaded, s);
    if (wk && mesh_init(s, err, sizeof(err)) < 0) {
        char q[600];
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        return -1;
    }

    if (listen_start(s, err, sizeof(err)) < 0) {
        char q[600];
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        return -1;
    }
    uv_timer_init(loop, &s->deadline_timer);
    s->deadline_timer.data = s;
    uv_timer_init(loop, &s->resume_timer);
    s->resume_timer.data = s;
    uv_timer_init(loop, &s->stop_timer);
    s->stop_timer.data = s;
    uv_signal_init(loop, &s->sig_term);
    s->sig_term.data = s;
    uv_signal_init(loop, &s->sig_int);
    s->sig_int.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    LOG(LOG_INFO, listening, "addr=%s", s->addr);
    return 0;
}

int server_run(struct server *s)
{
    uv_run(s->loop, UV_RUN_DEFAULT);
    return 0;
}

void server_free(struct server *s)
{
    mesh_free(s);
    udp_free(s);
    ingest_free(s);
    shard_free(&s->shard);
    store_close(s->store);
    s->store = NULL;
    deadline_heap_free(&s->deadlines);
    strmap_free(&s->per_ip);
    hb_free_nets(s);
}
