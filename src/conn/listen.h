/*
 * listen.h — the listening socket, and the global connection limits.
 *
 * nudged owns its listening socket (a uv_poll on a plain fd, accept4 in a
 * loop) instead of uv_listen, because libuv cannot pause accepting: at
 * [server] max_connections, or when the process runs out of descriptors,
 * we stop polling the socket so new clients wait in the kernel's backlog
 * instead of being accepted and dropped, and resume when a connection ends.
 * Each transition is logged once (events 1104 and 1105), never once per
 * refused client.
 *
 * [server] max_per_ip counts connections per client address in a hash map;
 * a client over it is answered 429 too-many-connections and closed.
 *
 * With workers, the kernel steers every connection from one address to the
 * same worker (a reuseport BPF program, server/supervisor.c), and that
 * worker keeps the address's count even for the connections it hands off
 * (the holder tells it, LISTEN_MSG_IP_MOVE, when one moves on or closes).
 * max_connections is a counter shared by all workers, reserved before each
 * accept, with each worker's part kept so a dead worker's can be taken out.
 */
#ifndef NUDGE_LISTEN_H
#define NUDGE_LISTEN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/strmap.h"

struct config;
struct conn_loop;
struct mesh;
struct metrics;
struct worker_ctx;

/* The mesh message that moves an address's count between holders (mesh.h numbering). */
#define LISTEN_MSG_IP_MOVE 17

/* Most listening sockets: [server] listen's addresses (config.h CONFIG_LISTEN_MAX). */
#define LISTEN_MAX 8

struct listener;

/* One listening socket of the listener. */
struct listen_sock {
    struct listener *l;
    int fd;
    uv_poll_t poll;
    char addr[64];                 /* the bound address, "127.0.0.1:8080" */
    unsigned flags;                /* CONFIG_LISTEN_*: what its connections speak first */
};

struct listener {
    const struct config *cfg;
    struct conn_loop *conns;
    struct metrics *metrics;
    const struct worker_ctx *wk;   /* NULL: a single process */
    struct mesh *mesh;             /* NULL without workers */
    unsigned nsocks;
    struct listen_sock socks[LISTEN_MAX];
    uv_timer_t retry;              /* resumes accepting after EMFILE */
    int paused;
    int stopped;
    unsigned max_conns;            /* max_connections within the descriptor limit */
    struct strmap per_ip;          /* raw address -> struct ip_count, with max_per_ip; every socket's */
    char addr[LISTEN_MAX * 66];    /* the bound addresses, "127.0.0.1:8080,[::1]:8080" */
};

/*
 * A listening TCP socket bound to addr (one entry of [server] listen),
 * non-blocking, with the listener's TCP options; SO_REUSEPORT when
 * 'reuseport' (one per worker). An IPv6 address listens on IPv6 only, so
 * that "0.0.0.0:8080, [::]:8080" works. The fd, or -1 with err naming the
 * address, the protocol and the option to change.
 */
int listen_bind(const char *addr, int reuseport, const struct config *cfg, char *err,
                size_t errlen);

/*
 * Which worker counts a connection's address and which address it is: what
 * travels with a handed-off connection so its new holder can report back.
 */
struct listen_ref {
    uint16_t owner;       /* the worker counting its address; MESH_NOBODY: none */
    uint8_t klen;         /* 4, 16, or 0 */
    uint8_t pad;
    uint8_t key[16];
};

/*
 * Binds (or, with workers, takes the supervisor's socket) and starts
 * accepting into 'conns'. 0, or -1 with err set. Registers its mesh message.
 */
int listen_start(struct listener *l, uv_loop_t *loop, const struct config *cfg,
                 struct conn_loop *conns, struct metrics *metrics, const struct worker_ctx *wk,
                 struct mesh *mesh, char *err, size_t errlen);

/*
 * Writes into err why the TCP listener could not bind or listen on 'addr'
 * (errno 'errnum'): the protocol, the exact address and the option that
 * sets it, so the line names the socket that failed and what to change.
 */
void listen_bind_error(const struct sockaddr *addr, int errnum, char *err, size_t errlen);

/*
 * Whether the TCP address 'addr' is free for us alone: binds a plain socket
 * (no SO_REUSEPORT) and closes it. Workers' listeners share their port with
 * SO_REUSEPORT, and so would another nudged of the same user: without this
 * look a second nudged would join the first one's port and take half its
 * connections. 0, or -1 with err set as listen_bind_error does. Port 0 is
 * always free.
 */
int listen_probe_free(const struct sockaddr_storage *addr, char *err, size_t errlen);

/* Stops accepting for good (shutdown) and closes the socket. */
void listen_stop(struct listener *l);

/* Frees the per-address table (after the loop ended). */
void listen_free(struct listener *l);

/*
 * A connection is about to be handed to worker 'to': reserves its place
 * under 'to's descriptor ceiling. 0, or -1 when 'to' is full (nothing
 * reserved; answer the client instead).
 */
int listen_reserve(struct listener *l, unsigned to);

/* The reservation is not needed: the connection did not travel. */
void listen_unreserve(struct listener *l, unsigned to);

/* What to send with a connection whose record is 'counted' (conn.h). */
void listen_ref_of(struct listener *l, const void *counted, struct listen_ref *ref);

/* The connection with record 'counted' went to worker 'to': its count follows it. */
void listen_moved(struct listener *l, void *counted, unsigned to);

/* A connection handed to us with 'ref': its record (for conn_adopt), or NULL. */
void *listen_adopt(struct listener *l, const struct listen_ref *ref);

#endif
