/*
 * server.h — one nudged worker: every module it runs, composed in one
 * place, and the orderly stop.
 *
 * This is the only file that knows every module. Each module gets, when it
 * is set up, pointers to exactly the modules it works with, so a module can
 * be read, tested and replaced with only those beside it; nothing reaches
 * the others through this struct. The order of the set-up in server.c is
 * the order of their dependencies.
 */
#ifndef NUDGE_SERVER_H
#define NUDGE_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "admin/admin.h"
#include "admin/revoke.h"
#include "admin/sessions_api.h"
#include "admin/status.h"
#include "auth/limit.h"
#include "auth/secret.h"
#include "common/config.h"
#include "common/metrics.h"
#include "conn/conn.h"
#include "conn/listen.h"
#include "push/events.h"
#include "push/ingest.h"
#include "push/login.h"
#include "push/ticket_api.h"
#include "activesync/ping.h"
#include "stream/sse.h"
#include "stream/ws.h"
#include "push/ping.h"
#include "push/probe.h"
#include "push/state.h"
#include "push/udp_api.h"
#include "server/handoff.h"
#include "server/router.h"
#include "session/devices.h"
#include "session/heartbeat.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "tls/tls.h"

struct mesh;
struct passwords;
struct udp;
struct worker_ctx;

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct secret secret;
    const struct worker_ctx *wk;   /* NULL: a single process owning every user */
    struct metrics metrics;
    struct store *store;
    struct shard shard;
    struct mesh *mesh;             /* NULL without workers */
    struct heartbeat hb;
    struct udp *udp;               /* NULL when [udp] listen is empty */
    struct devices devices;
    struct sessions sessions;
    struct conn_loop conns;
    struct listener listener;
    struct handoff handoff;
    struct ping ping;
    struct as_ping as_ping;
    struct sse sse;
    struct ws ws;
    struct probe probe;
    struct state state;
    struct events events;
    struct udp_api udp_api;
    struct ingest ingest;
    struct admin admin;
    struct sessions_api sessions_api;
    struct status status;
    struct passwords *passwords;   /* NULL: tokens only ([auth] passwords empty) */
    struct tls_server *tls;        /* NULL: no listener has the tls flag */
    struct auth_limit fail_ip, fail_user;
    _Atomic uint64_t *fail_slots;  /* without workers: the limits' own slots (2 tables) */
    struct login login;
    struct ticket_api ticket_api;
    struct ticket_spent *spent;    /* the used tickets of our users (auth/ticket.h) */
    struct revoke revoke;
    struct router router;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_timer;         /* bounds the drain at shutdown */
    uv_timer_t log_timer;          /* writes the counts of coalesced log lines */
    uint64_t stop_started;         /* uv_now() when the stop signal came */
};

/*
 * Sets up everything but the loop run: store, listener (bound; port 0 picks
 * one, logged as event 1001), signals, timers. 'cfg' and 'secret' must
 * outlive the server; 'wk' is NULL for a single process. Returns 0, or -1
 * after logging why and freeing everything it had made (the loop then only
 * needs uv_loop_close).
 */
int server_init(struct server *s, uv_loop_t *loop, const struct config *cfg,
                const struct secret *secret, const struct worker_ctx *wk);

/* Runs the loop until a stop signal has drained every connection. */
int server_run(struct server *s);

/* Frees what server_init made (after the loop stopped). */
void server_free(struct server *s);

#endif
