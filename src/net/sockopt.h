/*
 * sockopt.h — TCP socket options every client connection gets, and the
 * liveness check the session reaper uses.
 *
 * They are set once, on the listening socket: Linux copies a listener's
 * socket options (TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT,
 * TCP_USER_TIMEOUT) into every connection it accepts, so a new connection
 * costs no setsockopt at all (five system calls each before, ~9% of the
 * server's CPU while 25k connections a second came in).
 *
 * Why not uv_tcp_keepalive: Debian's libuv 1.44 sets only the idle time and
 * leaves the probe interval and count at the kernel's defaults (75 s x 9),
 * so a dead peer would hold its session for idle + 11 minutes. We set all
 * three, and TCP_USER_TIMEOUT so unacknowledged data (an answer written to
 * a vanished client) gives up as fast as keepalive does.
 */
#ifndef NUDGE_SOCKOPT_H
#define NUDGE_SOCKOPT_H

#include <stddef.h>

struct config;

/* The TCP_USER_TIMEOUT in force, s: [network] user_timeout, or the keepalive budget. */
unsigned net_user_timeout(const struct config *c);

/*
 * On a listening socket, for the connections it accepts: TCP_NODELAY,
 * SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT and TCP_USER_TIMEOUT. 0 or -errno.
 */
int net_set_listener(int fd, const struct config *c);

/*
 * Asks the kernel (TCP_INFO) whether the connection on fd still looks alive.
 * Returns 1 alive; 0 dead, with the reason in why[] ("state CLOSE_WAIT",
 * "2 keepalive probes unanswered", "data unacknowledged for 31 s");
 * -errno when the kernel would not say.
 * 'probe_ms': keepalive probes out and nothing heard for longer than this
 * counts as dead; 'stale_ms': unacknowledged data older than this does too.
 */
int net_tcp_alive(int fd, unsigned probe_ms, unsigned stale_ms, char *why, size_t whylen);

#endif
