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
 */
#ifndef NUDGE_LISTEN_H
#define NUDGE_LISTEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;

/*
 * Per-address connection count (only kept when max_per_ip is set).
 *
 * With workers, the kernel steers every connection from one address to the
 * same worker (a reuseport BPF program, supervisor.c), and that worker
 * keeps the address's count even for the connections it hands off:
 * held[w] says how many worker w holds, so the counts of a worker that
 * died can be taken back out. A worker holding a connection from an
 * address another worker counts has a reference instead: owner is that
 * worker's index + 1, n and held unused.
 */
struct ip_count {
    uint32_t n;
    uint16_t klen;
    uint16_t owner;    /* 0: our count; else the counting worker + 1 */
    char key[16];      /* the raw address bytes: 4 for IPv4, 16 for IPv6 */
    uint32_t held[];   /* [workers] with workers, else empty */
};

struct mesh_handoff;

/* Binds and starts accepting. 0, or -1 with err set. */
int listen_start(struct server *s, char *err, size_t errlen);

/* Stops accepting for good (shutdown) and closes the socket. */
void listen_stop(struct server *s);

/*
 * A connection ended: its address's count goes down (here or at the worker
 * counting it), and accepting resumes if a limit had paused it.
 * 'handed_off': it lives on in another worker (no longer ours, but still
 * counted against max_connections).
 */
void listen_conn_closed(struct server *s, struct ip_count *ip, int handed_off);

/* A connection counted under 'ip' was handed to worker 'to'; frees a reference. */
void listen_ip_handoff(struct server *s, struct ip_count *ip, unsigned to);

/* A connection handed to us: its address's count reference (or NULL). Counts it as ours. */
struct ip_count *listen_ip_adopt(struct server *s, const struct mesh_handoff *h);

#endif
