/*
 * server.c — one worker's modules set up in the order of their
 * dependencies, its requests routed, and the orderly stop.
 *
 * Stop (SIGTERM/SIGINT): close the listener, answer every held ping 503
 * shutting-down (Retry-After), close idle connections, let requests in
 * progress finish with Connection: close, and leave the loop when the last
 * connection is gone or after STOP_GRACE_MS, whichever is first.
 */
#include "server/server.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>
#include <systemd/sd-daemon.h>

#include "auth/passwd.h"
#include "auth/ticket.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "server/reload.h"
#include "udp/udp.h"
#include "worker/mesh.h"
#include "worker/worker.h"

/* Longest drain at shutdown: answers are small, so this is only for stuck peers. */
#define STOP_GRACE_MS 2000

/* Every complete request on one of our connections (conn.h conn_request_fn). */
static void on_request(void *arg, struct conn *c, struct http_req *r)
{
    struct server *s = arg;

    router_dispatch(&s->router, c, r);
}

/* Leaves the loop: closes the server's own handles so uv_run returns. */
static void finish_stop(struct server *s)
{
    uv_close((uv_handle_t *)&s->stop_timer, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
    uv_close((uv_handle_t *)&s->log_timer, NULL);
    conn_loop_close(&s->conns);
    passwd_stop(s->passwords);
    listen_stop(&s->listener);
    udp_stop(s->udp);
    mesh_stop(s->mesh);
}

static void on_stop_tick(uv_timer_t *t)
{
    struct server *s = t->data;

    if (s->metrics.connections > 0 && uv_now(s->loop) - s->stop_started < STOP_GRACE_MS)
        return;
    conn_loop_close_all(&s->conns);
    finish_stop(s);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;
    char q[64];

    if (s->conns.stopping)
        return;
    LOG(LOG_INFO, stopping, "signal=%s held=%llu connections=%llu",
        log_q(q, sizeof(q), strsignal(signum)),
        (unsigned long long)s->metrics.pings_held, (unsigned long long)s->metrics.connections);
    if (s->wk == NULL)
        sd_notify(0, "STOPPING=1");
    listen_stop(&s->listener);
    conn_loop_stop(&s->conns);
    s->stop_started = uv_now(s->loop);
    /* Check every 50 ms whether the drain is over. */
    uv_timer_start(&s->stop_timer, on_stop_tick, 50, 50);
}

/* SIGHUP: reload what can change under running connections (reload.h). */
static void on_hup(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;

    (void)signum;
    /* With workers the supervisor tells systemd; alone, this process is the service. */
    if (s->wk == NULL)
        sd_notify(0, "RELOADING=1");
    reload_run(s->cfg, s->passwords, s->tls, s->wk ? (int)s->wk->index : -1);
    if (s->wk == NULL)
        sd_notify(0, "READY=1");
}

static void on_log_tick(uv_timer_t *t)
{
    (void)t;
    log_flush();
}

static void log_failure(const char *err)
{
    char q[600];

    LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
}

/*
 * Undoes a server_init that failed part-way: every stop below is safe for a
 * module that never started (NULL, or nothing bound), and one turn of the
 * loop lets the closed handles go before their memory is freed.
 */
static int discard(struct server *s)
{
    conn_loop_close(&s->conns);
    passwd_stop(s->passwords);
    listen_stop(&s->listener);
    udp_stop(s->udp);
    mesh_stop(s->mesh);
    uv_run(s->loop, UV_RUN_NOWAIT);
    server_free(s);
    return -1;
}

int server_init(struct server *s, uv_loop_t *loop, const struct config *cfg,
                const struct secret *secret, const struct worker_ctx *wk)
{
    const struct store_backend *be;
    const struct worker_route *route;
    char err[512];

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    s->secret = *secret;
    s->wk = wk;
    shard_init(&s->shard);
    /* First, so that a failure below always finds its timers to close. */
    conn_loop_init(&s->conns, loop, cfg, &s->metrics, wk != NULL, on_request, s);

    be = store_backend_find(cfg->store_backend);
    if (be == NULL) {
        LOG(LOG_ERROR, startup_failed, "reason=\"unknown store backend\" backend=%s",
            log_q(err, sizeof(err), cfg->store_backend));
        goto fail;
    }
    if (be->open(&s->store, cfg, loop, err, sizeof(err)) < 0)
        goto fail_err;

    /* Every module keeping something per user or device reserves its slot before the first. */
    hb_init(&s->hb, cfg, &s->shard);
    probe_init(&s->probe, &s->shard);
    devices_init(&s->devices, s->store, &s->shard, NULL);
    /* The UDP socket before the records: they bring registrations, which may have datagrams due. */
    if (udp_init(&s->udp, loop, cfg, wk ? wk->index : 0, s->store, &s->shard, &s->metrics,
                 devices_on_save, &s->devices, err, sizeof(err)) < 0)
        goto fail_err;
    s->devices.udp = s->udp;
    sessions_init(&s->sessions, cfg, &s->shard, &s->metrics, &s->hb, s->udp, &s->devices);
    /* Its slots too; its route to other workers is set once the mesh is up. */
    as_ping_init(&s->as_ping, cfg, s->store, &s->shard, &s->metrics, &s->hb, &s->sessions,
                 &s->devices, NULL);
    sse_init(&s->sse, cfg, s->store, &s->shard, &s->metrics, &s->sessions, &s->hb);
    ws_init(&s->ws, cfg, s->store, &s->shard, &s->metrics, &s->sessions, &s->hb);
    devices_load(&s->devices);
    as_ping_load(&s->as_ping);

    if (config_listen_any(cfg) & CONFIG_LISTEN_TLS) {
        char what[300];
        if (tls_server_new(&s->tls, cfg->tls_cert, cfg->tls_key, secret->key, sizeof(secret->key),
                           err, sizeof(err)) < 0)
            goto fail_err;
        conn_loop_set_tls(&s->conns, s->tls);
        tls_server_describe(s->tls, what, sizeof(what));
        LOG(LOG_INFO, tls_loaded, "%s", what);
    }
    /* A moved TLS connection carries its keys and an incomplete record beside its request. */
    if (wk && mesh_init(&s->mesh, loop, wk,
                        (size_t)cfg->max_header_bytes + cfg->max_body_bytes +
                            (s->tls ? TLS_EXPORT_MAX + 4 : 0),
                        &s->metrics, err, sizeof(err)) < 0)
        goto fail_err;
    if (listen_start(&s->listener, loop, cfg, &s->conns, &s->metrics, wk, s->mesh, err,
                     sizeof(err)) < 0)
        goto fail_err;
    handoff_init(&s->handoff, cfg, wk, s->mesh, &s->listener, &s->conns, &s->metrics);
    /* Without workers every user is ours: nothing to route. */
    route = wk ? &s->handoff.route : NULL;

    s->as_ping.route = route;
    ping_init(&s->ping, cfg, s->store, &s->shard, &s->metrics, &s->hb, &s->sessions, &s->devices,
              s->udp);
    state_init(&s->state, cfg, s->store, &s->shard, &s->metrics, s->udp);
    events_init(&s->events, s->store, &s->shard, &s->metrics, wk, s->mesh, &s->ping, s->udp);
    udp_api_init(&s->udp_api, cfg, s->store, &s->shard, &s->sessions, s->udp);
    ingest_init(&s->ingest, cfg, s->store, &s->metrics, &s->events, route);
    admin_init(&s->admin, &s->metrics, &s->sessions, &s->shard, s->store, wk, s->mesh);
    sessions_api_init(&s->sessions_api, &s->sessions, &s->shard, wk, s->mesh, route);
    if (status_init(&s->status, &s->metrics, &s->sessions, &s->shard, s->store, wk, s->mesh, err,
                    sizeof(err)) < 0)
        goto fail_err;
    login_init(&s->login, cfg, &s->secret, &s->metrics);
    ticket_api_init(&s->ticket_api, cfg, &s->secret, &s->metrics);
    /* From now: a ticket issued before this worker started may have been used already. */
    s->spent = ticket_spent_new(cfg->auth_tickets_max, token_now_ms());
    revoke_init(&s->revoke, s->store, &s->shard, &s->sessions, &s->metrics, route);
    if (cfg->auth_passwords[0] &&
        passwd_open(&s->passwords, cfg->auth_passwords, loop, cfg, &s->metrics, err,
                    sizeof(err)) < 0)
        goto fail_err;
    if (wk) {
        auth_limit_init(&s->fail_ip, wk->shared->signin_fail_ip, wk->shared->signin_seed,
                        cfg->auth_max_failures_ip, cfg->auth_failure_window);
        auth_limit_init(&s->fail_user, wk->shared->signin_fail_user, wk->shared->signin_seed,
                        cfg->auth_max_failures_user, cfg->auth_failure_window);
    } else {
        uint64_t seed;
        if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1) {
            snprintf(err, sizeof(err), "no random bytes for the sign-in limits");
            goto fail_err;
        }
        s->fail_slots = xcalloc(2 * AUTH_LIMIT_SLOTS, sizeof(*s->fail_slots));
        auth_limit_init(&s->fail_ip, s->fail_slots, seed, cfg->auth_max_failures_ip,
                        cfg->auth_failure_window);
        auth_limit_init(&s->fail_user, s->fail_slots + AUTH_LIMIT_SLOTS, seed,
                        cfg->auth_max_failures_user, cfg->auth_failure_window);
    }
    {
        void *to[ROUTE_TARGET_COUNT] = {
            [ROUTE_PING] = &s->ping,
            [ROUTE_STATE] = &s->state,
            [ROUTE_PROBE] = &s->probe,
            [ROUTE_UDP] = &s->udp_api,
            [ROUTE_EVENTS] = &s->events,
            [ROUTE_INGEST] = &s->ingest,
            [ROUTE_SESSIONS] = &s->sessions_api,
            [ROUTE_ADMIN] = &s->admin,
            [ROUTE_LOGIN] = &s->login,
            [ROUTE_REVOKE] = &s->revoke,
            [ROUTE_ACTIVESYNC] = &s->as_ping,
            [ROUTE_STREAM] = &s->sse,
            [ROUTE_WS] = &s->ws,
            [ROUTE_TICKET] = &s->ticket_api,
            [ROUTE_STATUS] = &s->status,
        };
        router_init(&s->router, cfg, &s->secret, &s->metrics, route, s->store, s->passwords,
                    &s->fail_ip, &s->fail_user, s->spent, to);
    }

    uv_timer_init(loop, &s->stop_timer);
    s->stop_timer.data = s;
    uv_signal_init(loop, &s->sig_term);
    s->sig_term.data = s;
    uv_signal_init(loop, &s->sig_int);
    s->sig_int.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_init(loop, &s->sig_hup);
    s->sig_hup.data = s;
    uv_signal_start(&s->sig_hup, on_hup, SIGHUP);
    uv_timer_init(loop, &s->log_timer);
    uv_timer_start(&s->log_timer, on_log_tick, 1000, 1000);
    /* It must not keep a draining loop alive. */
    uv_unref((uv_handle_t *)&s->log_timer);
    LOG(LOG_INFO, listening, "addr=%s", s->listener.addr);
    return 0;
fail_err:
    log_failure(err);
fail:
    return discard(s);
}

int server_run(struct server *s)
{
    uv_run(s->loop, UV_RUN_DEFAULT);
    return 0;
}

void server_free(struct server *s)
{
    mesh_free(s->mesh);
    s->mesh = NULL;
    udp_free(s->udp);
    s->udp = NULL;
    ingest_free(&s->ingest);
    if (s->as_ping.shard)
        as_ping_free(&s->as_ping);
    if (s->sse.shard)
        sse_free(&s->sse);
    if (s->ws.shard)
        ws_free(&s->ws);
    shard_free(&s->shard);
    store_close(s->store);
    s->store = NULL;
    conn_loop_free(&s->conns);
    listen_free(&s->listener);
    hb_free(&s->hb);
    passwd_free(s->passwords);
    s->passwords = NULL;
    tls_server_free(s->tls);
    s->tls = NULL;
    free(s->fail_slots);
    ticket_spent_free(s->spent);
}
