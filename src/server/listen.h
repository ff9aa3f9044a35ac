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

/* Per-address connection count (only kept when max_per_ip is set). */
struct ip_count {
    uint32_t n;
    uint32_t klen;
    char key[16]; /* the raw address bytes: 4 for IPv4, 16 for IPv6 */
};

/* Binds and starts accepting. 0, or -1 with err set. */
int listen_start(struct server *s, char *err, size_t errlen);

/* Stops accepting for good (shutdown) and closes the socket. */
void listen_stop(struct server *s);

/* A connection ended: resume accepting if a limit had paused it. */
void listen_conn_closed(struct server *s, struct ip_count *ip);

#endif
