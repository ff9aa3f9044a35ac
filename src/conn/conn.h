/*
 * conn.h — one client connection: its life, its reads and writes, and the
 * one request it handles at a time; and the connections of one loop.
 *
 * A connection is in one of three situations:
 *   idle     no request in progress: holds no buffer, no parser; its deadline
 *            is the keep-alive timeout;
 *   reading  a struct http_req collects the request; deadline: the request
 *            timeout ([server] header_timeout), 408 when it passes;
 *   held     its request was handed to a holder that answers it later (a
 *            ping waiting for a change, a probe, a publish waiting for the
 *            store): again no parser and no buffer; deadline: the holder's.
 * Bytes that arrive while a request is being handled or held (pipelining)
 * are kept in 'pending' and parsed once the answer is written.
 *
 * A connection does not know who holds it. A holder gives its operations
 * when it holds (conn_hold): the connection tells it when the deadline
 * passes, when the connection closes before the answer, and when the
 * server stops. Who handles a complete request is the loop's callback,
 * given by whoever made the loop (server/server.c). This is nginx's
 * request cleanup (ngx_http_cleanup_add) and OpenSMTPD's session
 * callbacks, with one holder at a time.
 *
 * Closing is deferred: conn_close marks the connection and calls uv_close;
 * the memory is freed in the close callback, never under another callback.
 */
#ifndef NUDGE_CONN_H
#define NUDGE_CONN_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <uv.h>

#include "common/deadline.h"
#include "http/request.h"

struct config;
struct conn;
struct http_error;
struct metrics;
struct store_event;
struct tls_conn;
struct tls_server;

/* Why a connection closed: an enum to decide on, with a text for the log line. */
enum conn_why {
    CONN_WHY_EOF,             /* the client closed */
    CONN_WHY_IO,              /* a socket error; its text is the detail */
    CONN_WHY_IDLE,            /* keep-alive timeout */
    CONN_WHY_LINGER_DONE,     /* answered, shut down, drained */
    CONN_WHY_SHUTDOWN,        /* nudged stops */
    CONN_WHY_HANDED_OFF,      /* it lives on in another worker */
    CONN_WHY_NO_MEMORY,
    CONN_WHY_PIPELINE_FULL,   /* more pipelined bytes than one request's worth */
    CONN_WHY_SHUTDOWN_FAILED, /* shutdown(2) for the linger failed */
    CONN_WHY_ENDED_BY_ADMIN,  /* an admin ended its session */
    CONN_WHY_REAPED,          /* its session was found dead at the session cap */
    CONN_WHY_SLOW,            /* a stream's client did not take what it was sent */
    CONN_WHY_TLS,             /* a TLS handshake failed or a record was bad; the detail says why */
    CONN_WHY_COUNT,
};

/* The log text of each reason ("eof", "ended by an admin", ...; "" for CONN_WHY_IO). */
extern const char *const conn_why_text[CONN_WHY_COUNT];

/*
 * The operations of whoever holds a connection's request (conn_hold). Each
 * is called with the holder's 'ctx', the connection and the 'arg' given to
 * conn_hold. A holder that answers (conn_respond) lets go silently.
 */
struct conn_holder {
    /* The hold's deadline passed: answer or close. NULL: holds have no deadline. */
    void (*expired)(void *ctx, struct conn *c, void *arg);
    /*
     * The connection closes before the holder answered; 'text' is the log
     * text of 'why' with its detail. The holder must forget c.
     */
    void (*closed)(void *ctx, struct conn *c, void *arg, enum conn_why why, const char *text);
    /* The server stops: answer (the answer closes) or close. NULL: let it finish. */
    void (*shutdown)(void *ctx, struct conn *c, void *arg);
    /*
     * What the held request waits for may have happened (a folder of its
     * user changed): the holder looks and answers or keeps holding. NULL:
     * its module is woken otherwise. Called by the module that saw the
     * change, never by conn.c. e[0..n) are the events that changed it, when
     * known (a stream passes their publishers' metadata on); else NULL, 0.
     */
    void (*changed)(void *ctx, struct conn *c, void *arg, const struct store_event *e, size_t n);
    /*
     * A newer session of the same device takes over: answer in your own
     * words (a ping "superseded", a stream ends) and let go. NULL: expired
     * is called instead. Called by the module whose request supersedes.
     */
    void (*superseded)(void *ctx, struct conn *c, void *arg);
    /*
     * An admin ends the session (or revoked its user's tokens): say so in
     * your own words (a WebSocket closes 1008) and close. NULL: the
     * connection is closed (CONN_WHY_ENDED_BY_ADMIN). Called by session.c.
     */
    void (*ended)(void *ctx, struct conn *c, void *arg);
    /*
     * Bytes from the client of an upgraded connection (conn_upgrade): the
     * holder parses its own protocol. Ignored otherwise.
     */
    void (*data)(void *ctx, struct conn *c, void *arg, const char *buf, size_t len);
    void *ctx;
    /* What holds it, for listings ("ping", "activesync", "stream"); NULL: unnamed. */
    const char *name;
    /*
     * 1: a held ping, held for a heartbeat its device chose, so a newer
     * request of the device while it is held says something about the
     * path (session/heartbeat.c); 0: a stream or a WebSocket, which a
     * newer request ends without teaching anything.
     */
    int heartbeat;
};

/* A complete request on c: answer it (now or later), hold it, or hand it away. */
typedef void (*conn_request_fn)(void *arg, struct conn *c, struct http_req *r);

/* What the layer that accepted a connection keeps for it (listen.c), told when it closes. */
typedef void (*conn_closed_fn)(void *arg, void *counted, int handed_off);

/* The connections of one event loop. */
struct conn_loop {
    uv_loop_t *loop;
    struct http_limits limits;
    unsigned header_timeout;     /* s */
    unsigned keepalive_timeout;  /* s */
    int keep_raw;                /* keep each request's bytes, to move it (workers) */
    int stopping;
    struct metrics *metrics;
    conn_request_fn on_request;
    void *request_arg;
    conn_closed_fn on_closed;
    void *closed_arg;
    struct deadline_heap deadlines;
    uv_timer_t deadline_timer;   /* armed for the earliest deadline */
    uint64_t deadline_armed;     /* when it is armed for, 0: not armed */
    uv_timer_t resume_timer;     /* runs connections with pipelined requests waiting */
    struct tls_server *tls;      /* the context of TLS listeners' handshakes, or NULL */
    struct conn *resume_head;
    /* While a request is dispatched: its connection, and the bytes read behind it. */
    struct conn *dispatching;
    const char *rest;
    size_t rest_len;
    /*
     * One read buffer for all connections: libuv calls alloc then read
     * synchronously, and on_read consumes or copies every byte before
     * returning, so idle connections never own a read buffer.
     */
    char rbuf[64 * 1024];
};

struct conn {
    uv_tcp_t tcp;
    struct conn_loop *cl;
    struct http_req *req;   /* request being read or handled, else NULL */
    char *pending;          /* bytes received behind the current request */
    uint32_t pending_len;
    uint16_t writes;        /* uv_write requests in flight */
    uint8_t flags;          /* conn.c */
    uint8_t keep_alive;     /* of the request being handled */
    struct deadline_node deadline;
    const struct conn_holder *holder; /* who holds the request, or NULL */
    void *hold_arg;
    struct conn *resume_next;
    void *counted;          /* the acceptor's record of it (listen.c), or NULL */
    struct tls_conn *tls;   /* its TLS state (src/tls/), or NULL for plain HTTP */
};

/*
 * Sets up the connections of 'loop' with cfg's timeouts and request limits;
 * each complete request goes to on_request(arg, ...). 'keep_raw' keeps each
 * request's bytes so that it can be moved (conn_unanswered). 'metrics' and
 * 'cfg' must outlive cl.
 */
void conn_loop_init(struct conn_loop *cl, uv_loop_t *loop, const struct config *cfg,
                    struct metrics *metrics, int keep_raw, conn_request_fn on_request, void *arg);

/* Who is told when a connection it counted closes (the listener). */
void conn_loop_on_closed(struct conn_loop *cl, conn_closed_fn fn, void *arg);

/*
 * The server stops: every held request's holder is told (shutdown), idle
 * connections close, requests in progress finish with Connection: close.
 */
void conn_loop_stop(struct conn_loop *cl);

/* Closes every connection now (the end of the drain). */
void conn_loop_close_all(struct conn_loop *cl);

/* Closes the loop's timers (after the connections). */
void conn_loop_close(struct conn_loop *cl);

/* Frees what conn_loop_init made (after the loop ran its close callbacks). */
void conn_loop_free(struct conn_loop *cl);

/*
 * Takes over socket 'fd' and starts reading; 'counted' is the acceptor's
 * record, given back through on_closed. Returns the connection, or NULL
 * when it could not be set up (fd closed, on_closed told).
 */
struct conn *conn_open(struct conn_loop *cl, int fd, void *counted);

/*
 * Takes over socket 'fd' that another worker accepted and started reading:
 * bytes[0..len) are what it read (requests not yet answered, decrypted),
 * parsed here; tls[0..tls_len) its TLS state (conn_tls_export), if any.
 * 0, or a negative errno when it could not be set up (fd closed, on_closed
 * told; the caller logs it).
 */
int conn_adopt(struct conn_loop *cl, int fd, void *counted, const char *bytes, size_t len,
               const void *tls, size_t tls_len);

/*
 * c speaks TLS from its first byte (a listener with the tls flag): its
 * handshake runs on cl's TLS context (conn_loop_set_tls). Call right after
 * conn_open. 0, or -1 when it could not start (c is closed).
 */
int conn_start_tls(struct conn *c);

/* The TLS context new handshakes use; the loop does not own it. */
void conn_loop_set_tls(struct conn_loop *cl, struct tls_server *tls);

/* 1 when c speaks TLS. */
int conn_is_tls(const struct conn *c);

/*
 * c's TLS state as bytes for conn_adopt in another worker: their length
 * (at most TLS_EXPORT_MAX), 0 for a plain connection, -1 when it cannot move.
 */
long conn_tls_export(const struct conn *c, void *buf, size_t len);

/* 1 when c came from another worker (conn_adopt), 0 when this one accepted it. */
int conn_adopted(const struct conn *c);

/*
 * Answers the current request: writes the response (JSON body; 'extra' are
 * header lines ending in "\r\n", or NULL, followed by the request's
 * answer_extra lines when it has them), ends the request, and moves on to
 * the next pipelined request or to idle. Takes ownership of nothing.
 */
void conn_respond(struct conn *c, int status, const char *extra, const char *body, size_t len);

/* conn_respond with a string literal body: its length is counted by the compiler. */
#define CONN_RESPOND_LITERAL(c, status, extra, lit) \
    conn_respond((c), (status), (extra), "" lit, sizeof(lit) - 1)

/* As conn_respond with an explicit Content-Type (e.g. Prometheus text). */
void conn_respond_typed(struct conn *c, int status, const char *ctype, const char *extra,
                        const char *body, size_t len);

/* Answers the error e (http/error.h): its status, headers and JSON body. */
void conn_respond_error(struct conn *c, const struct http_error *e);

/*
 * Answers e and closes: for a connection that must not be served (over a
 * limit) or a request that cannot be read.
 */
void conn_reject(struct conn *c, const struct http_error *e);

/*
 * Hands the current request to holder h: frees the parser; the holder's
 * operations run with 'arg' until it answers. 'deadline_ms' (monotonic ms)
 * is when h->expired runs; 0: no deadline.
 */
void conn_hold(struct conn *c, const struct conn_holder *h, void *arg, uint64_t deadline_ms);

/*
 * The current request waits for a job that answers it later through *slot,
 * which holds c (a publish waiting for the store, a scrape waiting for the
 * other workers, a password being checked): if c closes first, *slot
 * becomes NULL and the job answers nobody. The request stays (c->req), for
 * a job that goes on with it; no deadline. A conn_hold with a holder whose
 * only operation is that cleanup (nginx's ngx_http_cleanup_add).
 */
void conn_wait(struct conn *c, struct conn **slot);

/*
 * A streamed answer (an event stream): writes the head (status, ctype,
 * 'extra' header lines and the request's answer_extra, Connection: close,
 * no length) and holds the
 * request with h as conn_hold does. The holder then writes the body with
 * conn_stream_send and ends it with conn_stream_end, after which the
 * connection closes once its bytes are out. A stream costs no buffer while
 * the kernel takes what is sent: only bytes it refused are kept.
 */
void conn_stream_begin(struct conn *c, int status, const char *ctype, const char *extra,
                       const struct conn_holder *h, void *arg, uint64_t deadline_ms);

/*
 * Sends buf[0..len) on a stream (copied only if the kernel does not take it
 * all now). 0, or -1 when the connection is closed: then its holder's
 * closed op has run (it may have freed what it held) and nothing more may
 * be done with c or the hold's arg.
 */
int conn_stream_send(struct conn *c, const char *buf, size_t len);

/* Ends a stream: the connection closes once the body is out. */
void conn_stream_end(struct conn *c);

/* Bytes sent but not yet taken by the kernel (a slow reader's backlog). */
size_t conn_unsent(const struct conn *c);

/*
 * The connection leaves HTTP (a WebSocket after its 101, RFC 6455): held by
 * h as conn_hold does, and from now on every byte the client sends, those
 * already read behind the request included, goes to h->data. The holder
 * writes its protocol with conn_stream_send (the 101 answer first) and ends
 * it with conn_stream_end.
 */
void conn_upgrade(struct conn *c, const struct conn_holder *h, void *arg, uint64_t deadline_ms);

/* Moves the current hold's deadline (monotonic ms; 0: none). */
void conn_set_deadline(struct conn *c, uint64_t deadline_ms);

/* The answer to the current request is the connection's last (Connection: close). */
static inline void conn_close_after_answer(struct conn *c)
{
    c->keep_alive = 0;
}

/* When the current hold's deadline falls (monotonic ms); 0 when it has none. */
uint64_t conn_deadline(const struct conn *c);

/*
 * The bytes of c not yet answered, for moving it to another process: the
 * current request's (kept with keep_raw), those read behind it in the read
 * being dispatched, those kept pending. Fills iov[0..3) (parts may be
 * empty). Valid until the request callback returns, or, outside it, until
 * the loop reads again.
 */
void conn_unanswered(struct conn *c, struct iovec iov[3]);

/*
 * c now lives in another process (its socket was sent there, with its
 * acceptor's record, which c forgets): close it here quietly.
 */
void conn_handed_off(struct conn *c);

/* Closes now; 'detail' (or NULL) follows the reason's text in the log line. */
void conn_close(struct conn *c, enum conn_why why, const char *detail);

/* The socket's descriptor, or -1. */
int conn_fd(struct conn *c);

/* Is the server stopping (conn_loop_stop ran)? */
static inline int conn_stopping(const struct conn *c)
{
    return c->cl->stopping;
}

/* The peer address as "1.2.3.4:5678" (for logs); "-" when unknown. */
const char *conn_peer(struct conn *c, char *buf, size_t len);

/* The peer's (local) address into *ss. 0, or a negative errno. */
int conn_peer_addr(struct conn *c, struct sockaddr_storage *ss);
int conn_local_addr(struct conn *c, struct sockaddr_storage *ss);

#endif
