/*
 * conn.h — one client connection: its life, its reads and writes, and the
 * one request it handles at a time.
 *
 * A connection is in one of three situations:
 *   idle     no request in progress: holds no buffer, no parser; its deadline
 *            is the keep-alive timeout;
 *   reading  a struct http_req collects the request; deadline: the request
 *            timeout ([server] header_timeout), 408 when it passes;
 *   held     a ping waits for a change: again no parser and no buffer, only
 *            a pointer to its device; deadline: the heartbeat.
 * Bytes that arrive while a request is being handled or held (pipelining)
 * are kept in 'pending' and parsed once the answer is written.
 *
 * Closing is deferred: conn_close marks the connection and calls uv_close;
 * the memory is freed in the close callback, never under another callback.
 */
#ifndef NUDGE_CONN_H
#define NUDGE_CONN_H

#include <stdint.h>
#include <uv.h>

#include "server/deadline.h"

struct server;
struct http_req;
struct device;
struct ip_count;

enum conn_flag {
    CONN_BUSY = 1 << 0,    /* a request is being handled (or held) */
    CONN_HELD = 1 << 1,    /* a ping is held: 'held' is its device */
    CONN_CLOSING = 1 << 2, /* uv_close called */
    CONN_LINGER = 1 << 3,  /* answered and shut down; draining input until EOF */
    CONN_RESUME = 1 << 4,  /* on the server's resume list */
    CONN_WAITING = 1 << 5, /* handler waits for an async result (store commit) */
    CONN_PROBE = 1 << 6,   /* a probe is held: 'probe' is its record */
    CONN_HANDED = 1 << 7,  /* handed off to another worker: closed here, lives on there */
};

struct probe;

struct conn {
    uv_tcp_t tcp;
    struct server *srv;
    struct http_req *req;   /* request being read or handled, else NULL */
    char *pending;          /* bytes received behind the current request */
    uint32_t pending_len;
    uint16_t writes;        /* uv_write requests in flight */
    uint8_t flags;
    uint8_t keep_alive;     /* of the request being handled */
    struct deadline_node deadline;
    union {
        struct device *held;  /* with CONN_HELD */
        struct probe *probe;  /* with CONN_PROBE */
    };
    struct conn *resume_next;
    void *waiter;           /* with CONN_WAITING: the handler's job, told if we close */
    struct ip_count *ip;    /* its address's count, with [server] max_per_ip */
};

/*
 * Takes over an accepted socket: sets keepalive options, starts reading.
 * 'ip' is its address's count (or NULL); 'over_ip_limit' answers it 429
 * too-many-connections and closes it.
 */
void conn_accept_fd(struct server *s, int fd, struct ip_count *ip, int over_ip_limit);

/*
 * Answers the current request: writes the response (JSON body; 'extra' are
 * header lines ending in "\r\n", or NULL), ends the request, and moves on to
 * the next pipelined request or to idle. Takes ownership of nothing.
 */
void conn_respond(struct conn *c, int status, const char *extra, const char *body, size_t len);

/* conn_respond with a string literal body: its length is counted by the compiler. */
#define CONN_RESPOND_LITERAL(c, status, extra, lit) \
    conn_respond((c), (status), (extra), "" lit, sizeof(lit) - 1)

/* As conn_respond, with a small JSON error body {"status":...,"error":...}. */
void conn_respond_error(struct conn *c, int status, const char *word, const char *error);

/* As conn_respond with an explicit Content-Type (e.g. Prometheus text). */
void conn_respond_typed(struct conn *c, int status, const char *ctype, const char *extra,
                        const char *body, size_t len);

/*
 * Holds the current request (a ping) until 'deadline_ms' (monotonic ms):
 * frees the parser; conn_on_held_expired fires at the deadline unless the
 * holder answers first with conn_respond.
 */
void conn_hold(struct conn *c, struct device *d, uint64_t deadline_ms);

/*
 * Holds the current request (a probe) until 'deadline_ms'; probe_expired
 * fires then. The connection owns 'p' from here (freed with probe_end).
 */
void conn_hold_probe(struct conn *c, struct probe *p, uint64_t deadline_ms);

/* Marks the request as waiting for an async result; 'waiter' is told of a close. */
void conn_wait(struct conn *c, void *waiter);

/*
 * Moves the connection to worker 'to', which owns the user the current
 * request is for (worker/worker.h). Call it from a handler instead of
 * answering: once the handler returns, the socket and the bytes of this
 * request and of any that follow are sent to 'to', which parses them again
 * and answers; the connection is closed here.
 */
void conn_handoff(struct conn *c, unsigned to);

/* Is the user 'user' another worker's? Then *to is that worker. */
int conn_user_elsewhere(struct conn *c, const char *user, size_t len, unsigned *to);

/* Closes now; 'why' is logged at debug level. */
void conn_close(struct conn *c, const char *why);

/* Called by the server when a connection's deadline passes. */
void conn_on_deadline(struct conn *c);

/* Called by the server's resume timer for connections with pending bytes. */
void conn_resume(struct conn *c);

/* The peer address as "1.2.3.4:5678" (for logs). */
const char *conn_peer(struct conn *c, char *buf, size_t len);

#endif
