/*
 * server.h — one nudged event loop: the listener, every connection, the
 * deadline heap, the shard of users and the store.
 *
 * Nothing here is global: a later issue runs one server per worker process,
 * each owning its own users.
 */
#ifndef NUDGE_SERVER_H
#define NUDGE_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "auth/secret.h"
#include "common/config.h"
#include "http/request.h"
#include "server/deadline.h"
#include "server/metrics.h"
#include "shard/shard.h"
#include "store/store.h"

struct conn;
struct ingest;
struct mesh;
struct udp;
struct worker_ctx;

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct secret secret;
    struct http_limits limits;
    struct store *store;
    struct shard shard;
    struct metrics metrics;
    struct udp *udp;           /* push/udp.c; NULL when [udp] listen is empty */
    struct ingest *ingest;     /* push/ingest.c: the duplicate window */
    const struct worker_ctx *wk; /* worker/worker.h; NULL: a single process owning every user */
    struct mesh *mesh;         /* worker/mesh.h; NULL without workers */
    unsigned handoff_to;       /* set by conn_handoff during a dispatch: the worker + 1 */

    int listen_fd;             /* see listen.h */
    uv_poll_t listen_poll;
    uv_timer_t listen_retry;   /* resumes accepting after EMFILE */
    int listen_paused;
    unsigned max_conns;        /* max_connections within the descriptor limit */
    struct strmap per_ip;      /* raw address -> struct ip_count, with max_per_ip */
    struct strmap nets;        /* client network prefix -> struct hbnet (heartbeat.h) */
    uv_timer_t deadline_timer; /* armed for the earliest connection deadline */
    uint64_t deadline_armed;   /* when it is armed for, 0: not armed */
    uv_timer_t resume_timer;   /* runs connections with pipelined requests waiting */
    struct conn *resume_head;
    uv_signal_t sig_term, sig_int;
    uv_timer_t stop_timer;     /* bounds the drain at shutdown */
    struct deadline_heap deadlines;

    int stopping;
    uint64_t stop_started;     /* uv_now() when the stop signal came */
    char addr[64];             /* the bound address, "127.0.0.1:8080" */
    /*
     * One read buffer for all connections: libuv calls alloc then read
     * synchronously, and on_read consumes or copies every byte before
     * returning, so idle connections never own a read buffer.
     */
    char rbuf[64 * 1024];
};

/*
 * Sets up everything but the loop run: store, listener (bound; port 0 picks
 * one, logged as event 1001), signals, timers. 'cfg' and 'secret' must
 * outlive the server. Returns 0, or -1 after logging why.
 */
int server_init(struct server *s, uv_loop_t *loop, const struct config *cfg,
                const struct secret *secret, const struct worker_ctx *wk);

/* Runs the loop until a stop signal has drained every connection. */
int server_run(struct server *s);

/* Frees what server_init made (after the loop stopped). */
void server_free(struct server *s);

/* Runs the resume list on the next loop iteration. */
void server_resume_soon(struct server *s);

/* Re-arms the deadline timer after the earliest deadline may have changed. */
void server_deadlines_changed(struct server *s);

#endif
