/*
 * conn.c — connection lifetime, reads, writes and the one-request-at-a-time
 * pipeline; see conn.h for the states a connection goes through.
 *
 * Writes try uv_try_write first: an answer is a few hundred bytes and the
 * socket buffer is almost always free, so the common case costs no write
 * request and no copy. Only a partial write allocates a uv_write_t.
 *
 * A connection that must close after its answer (error, Connection: close,
 * shutdown) is shut down for writing and then drained until the client
 * closes or a short linger time passes: closing with unread input would make
 * the kernel send RST, which can destroy the answer before the client reads it.
 *
 * Timers: one uv_timer for all connection deadlines (common/deadline.h), one
 * zero-delay timer that runs connections whose pipelined requests can go on
 * (deferred so that answering one connection from another's callback never
 * recurses into a third).
 */
#include "conn/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "http/error.h"
#include "http/response.h"
#include "tls/tls.h"

/* How long a closing connection waits for the client's FIN before closing anyway. */
#define LINGER_MS 2000

enum conn_flag {
    CONN_BUSY = 1 << 0,    /* a request is being handled (or held) */
    CONN_CLOSING = 1 << 1, /* uv_close called */
    CONN_LINGER = 1 << 2,  /* answered and shut down; draining input until EOF */
    CONN_RESUME = 1 << 3,  /* on the loop's resume list */
    CONN_HANDED = 1 << 4,  /* handed off to another worker: closed here, lives on there */
    CONN_ADOPTED = 1 << 5, /* accepted by another worker and handed here */
    CONN_HEAD = 1 << 6,    /* the request is a HEAD: its answer goes without the body */
    CONN_UPGRADED = 1 << 7, /* not HTTP any more: bytes go to the holder's data op */
};

const char *const conn_why_text[CONN_WHY_COUNT] = {
    [CONN_WHY_EOF] = "eof",
    [CONN_WHY_IO] = "",
    [CONN_WHY_IDLE] = "idle",
    [CONN_WHY_LINGER_DONE] = "linger done",
    [CONN_WHY_SHUTDOWN] = "shutdown",
    [CONN_WHY_HANDED_OFF] = "handed off",
    [CONN_WHY_NO_MEMORY] = "out of memory",
    [CONN_WHY_PIPELINE_FULL] = "too much pipelined data",
    [CONN_WHY_SHUTDOWN_FAILED] = "shutdown failed",
    [CONN_WHY_ENDED_BY_ADMIN] = "ended by an admin",
    [CONN_WHY_REAPED] = "reaped",
    [CONN_WHY_SLOW] = "slow reader",
    [CONN_WHY_TLS] = "tls",
};

/*
 * A held ping is a connection: every byte here is paid 100k times at 100k
 * held pings (bench/held_memory.py). 88 bytes beside libuv's handle today.
 */
_Static_assert(sizeof(struct conn) <= sizeof(uv_tcp_t) + 96, "struct conn grew: measure first");

struct write_req {
    uv_write_t req;
    char *buf;
};

static void on_close(uv_handle_t *h);
static void process(struct conn *c, const char *data, size_t len);
static void on_deadline(struct conn *c);

/* ---- the loop's timers ------------------------------------------------ */

static void deadlines_changed(struct conn_loop *cl);

static void on_deadline_timer(uv_timer_t *t)
{
    struct conn_loop *cl = t->data;
    uint64_t now = util_now_ms();
    struct deadline_node *n;

    cl->deadline_armed = 0;
    while ((n = deadline_peek(&cl->deadlines)) != NULL && n->at <= now) {
        struct conn *c = (struct conn *)((char *)n - offsetof(struct conn, deadline));
        deadline_clear(&cl->deadlines, n);
        on_deadline(c);
    }
    deadlines_changed(cl);
}

/* Re-arms the deadline timer after the earliest deadline may have changed. */
static void deadlines_changed(struct conn_loop *cl)
{
    struct deadline_node *n = deadline_peek(&cl->deadlines);
    uint64_t now;

    if (n == NULL) {
        if (cl->deadline_armed) {
            uv_timer_stop(&cl->deadline_timer);
            cl->deadline_armed = 0;
        }
        return;
    }
    if (cl->deadline_armed == n->at)
        return;
    now = util_now_ms();
    cl->deadline_armed = n->at;
    uv_timer_start(&cl->deadline_timer, on_deadline_timer, n->at > now ? n->at - now : 0, 0);
}

static void set_deadline(struct conn *c, uint64_t at)
{
    deadline_set(&c->cl->deadlines, &c->deadline, at);
    deadlines_changed(c->cl);
}

static void resume(struct conn *c);

static void on_resume_timer(uv_timer_t *t)
{
    struct conn_loop *cl = t->data;

    while (cl->resume_head) {
        struct conn *c = cl->resume_head;
        cl->resume_head = c->resume_next;
        c->resume_next = NULL;
        resume(c);
    }
}

void conn_loop_init(struct conn_loop *cl, uv_loop_t *loop, const struct config *cfg,
                    struct metrics *metrics, int keep_raw, conn_request_fn on_request, void *arg)
{
    cl->loop = loop;
    cl->limits.max_header_bytes = cfg->max_header_bytes;
    cl->limits.max_body_bytes = cfg->max_body_bytes;
    cl->header_timeout = cfg->header_timeout;
    cl->keepalive_timeout = cfg->keepalive_timeout;
    cl->keep_raw = keep_raw;
    cl->stopping = 0;
    cl->metrics = metrics;
    cl->on_request = on_request;
    cl->request_arg = arg;
    cl->on_closed = NULL;
    cl->closed_arg = NULL;
    deadline_heap_init(&cl->deadlines);
    uv_timer_init(loop, &cl->deadline_timer);
    cl->deadline_timer.data = cl;
    cl->deadline_armed = 0;
    uv_timer_init(loop, &cl->resume_timer);
    cl->resume_timer.data = cl;
    cl->resume_head = NULL;
    cl->rest = NULL;
    cl->rest_len = 0;
    cl->dispatching = NULL;
}

void conn_loop_on_closed(struct conn_loop *cl, conn_closed_fn fn, void *arg)
{
    cl->on_closed = fn;
    cl->closed_arg = arg;
}

/* ---- addresses -------------------------------------------------------- */

int conn_peer_addr(struct conn *c, struct sockaddr_storage *ss)
{
    int n = sizeof(*ss);

    return uv_tcp_getpeername(&c->tcp, (struct sockaddr *)ss, &n);
}

int conn_local_addr(struct conn *c, struct sockaddr_storage *ss)
{
    int n = sizeof(*ss);

    return uv_tcp_getsockname(&c->tcp, (struct sockaddr *)ss, &n);
}

const char *conn_peer(struct conn *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;

    if (conn_peer_addr(c, &ss) != 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    return util_format_addr((struct sockaddr *)&ss, buf, len);
}

int conn_fd(struct conn *c)
{
    uv_os_fd_t fd;

    return uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 ? fd : -1;
}

/* ---- closing ---------------------------------------------------------- */

/* The log text of a close: the reason's text, its detail, or both. */
static const char *why_text(enum conn_why why, const char *detail, char *buf, size_t len)
{
    const char *text = conn_why_text[why];

    if (detail == NULL || detail[0] == '\0')
        return text;
    if (text[0] == '\0')
        return detail;
    snprintf(buf, len, "%s: %s", text, detail);
    return buf;
}

void conn_close(struct conn *c, enum conn_why why, const char *detail)
{
    const struct conn_holder *h = c->holder;
    char peer[64], q[192], text[160];

    if (c->flags & CONN_CLOSING)
        return;
    c->flags |= CONN_CLOSING;
    LOG(LOG_DEBUG, conn_closed, "peer=%s why=%s", conn_peer(c, peer, sizeof(peer)),
        log_q(q, sizeof(q), why_text(why, detail, text, sizeof(text))));
    deadline_clear(&c->cl->deadlines, &c->deadline);
    if (h) {
        /* The holder outlives us or goes with us: either way it must forget c now. */
        c->holder = NULL;
        if (h->closed)
            h->closed(h->ctx, c, c->hold_arg, why, why_text(why, detail, text, sizeof(text)));
        c->hold_arg = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void unlink_resume(struct conn *c)
{
    struct conn **pp = &c->cl->resume_head;

    while (*pp && *pp != c)
        pp = &(*pp)->resume_next;
    if (*pp)
        *pp = c->resume_next;
    c->flags &= (uint8_t)~CONN_RESUME;
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct conn_loop *cl = c->cl;

    if (c->flags & CONN_RESUME)
        unlink_resume(c);
    cl->metrics->connections--;
    if (cl->on_closed)
        cl->on_closed(cl->closed_arg, c->counted, (c->flags & CONN_HANDED) != 0);
    http_req_free(c->req);
    tls_conn_free(c->tls);
    free(c->pending);
    free(c);
}

void conn_handed_off(struct conn *c)
{
    c->counted = NULL; /* it travelled with the socket */
    c->flags |= CONN_HANDED;
    conn_close(c, CONN_WHY_HANDED_OFF, NULL);
}

/* ---- writing ---------------------------------------------------------- */

static void after_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

static void after_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = req->handle->data;

    free(w->buf);
    free(w);
    c->writes--;
    if (status < 0 && !(c->flags & CONN_CLOSING))
        conn_close(c, CONN_WHY_IO, uv_strerror(status));
}

/* Queues at[0..len), which lies in 'owned' (freed once written), behind what is in flight. */
static void queue_write(struct conn *c, char *owned, char *at, size_t len)
{
    uv_buf_t b = uv_buf_init(at, (unsigned)len);
    struct write_req *w = malloc(sizeof(*w));
    int n;

    if (w == NULL) {
        free(owned);
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return;
    }
    w->buf = owned;
    n = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, after_write);
    if (n < 0) {
        free(owned);
        free(w);
        conn_close(c, CONN_WHY_IO, uv_strerror(n));
        return;
    }
    c->writes++;
}

/*
 * Writes what the kernel takes now; returns how much, or -1 when c closed
 * (a socket error). Nothing overtakes bytes in flight.
 */
static int try_write(struct conn *c, const char *buf, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    int n;

    c->cl->metrics->bytes_sent += len;
    n = c->writes ? UV_EAGAIN : uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c, CONN_WHY_IO, uv_strerror(n));
        return -1;
    }
    return n < 0 ? 0 : n;
}

/* Writes buf[0..len), bytes for the socket as they are, and takes ownership of buf. */
static void write_raw(struct conn *c, char *buf, size_t len)
{
    int n;

    if (c->flags & CONN_CLOSING) {
        free(buf);
        return;
    }
    n = try_write(c, buf, len);
    if (n < 0 || n == (int)len) {
        free(buf);
        return;
    }
    queue_write(c, buf, buf + n, len - (size_t)n);
}

/* TLS: buf[0..len) sealed into records, in a buffer that replaces it. -1: c closed. */
static int seal(struct conn *c, const char *buf, size_t len, char **out, size_t *out_len)
{
    if (!tls_conn_ready(c->tls)) {
        conn_close(c, CONN_WHY_TLS, "an answer before the handshake completed");
        return -1;
    }
    if (tls_conn_seal(c->tls, buf, len, out, out_len) < 0) {
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return -1;
    }
    return 0;
}

/* Writes buf[0..len) of the answer (sealed first on TLS) and takes ownership of buf. */
static void conn_write(struct conn *c, char *buf, size_t len)
{
    char *sealed;
    size_t slen;

    if (c->tls && !(c->flags & CONN_CLOSING)) {
        int rc = seal(c, buf, len, &sealed, &slen);
        free(buf);
        if (rc < 0)
            return;
        buf = sealed;
        len = slen;
    }
    write_raw(c, buf, len);
}

/* tls_out's send: handshake flights and key updates. */
static int tls_send(void *arg, char *owned, size_t len)
{
    struct conn *c = arg;

    write_raw(c, owned, len);
    return c->flags & CONN_CLOSING ? -1 : 0;
}

static void start_linger(struct conn *c)
{
    uv_shutdown_t *req = malloc(sizeof(*req));

    c->flags |= CONN_LINGER;
    /* TLS: the answer's end is said before the TCP one, so clients see a clean close. */
    if (c->tls && tls_conn_ready(c->tls)) {
        char *alert;
        size_t alen;
        if (tls_conn_close_notify(c->tls, &alert, &alen) == 0)
            write_raw(c, alert, alen);
        if (c->flags & CONN_CLOSING) {
            free(req);
            return;
        }
    }
    if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, after_shutdown) < 0) {
        free(req);
        conn_close(c, CONN_WHY_SHUTDOWN_FAILED, NULL);
        return;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    set_deadline(c, util_now_ms() + LINGER_MS);
}

static void schedule_resume(struct conn *c)
{
    struct conn_loop *cl = c->cl;

    if (c->flags & CONN_RESUME)
        return;
    c->flags |= CONN_RESUME;
    c->resume_next = cl->resume_head;
    cl->resume_head = c;
    uv_timer_start(&cl->resume_timer, on_resume_timer, 0, 0);
}

/* The current request is answered: back to idle, or on to the next one. */
static void end_request(struct conn *c)
{
    http_req_free(c->req);
    c->req = NULL;
    c->holder = NULL;
    c->hold_arg = NULL;
    c->flags &= (uint8_t)~(CONN_BUSY | CONN_HEAD);
    if (!c->keep_alive) {
        start_linger(c);
        return;
    }
    set_deadline(c, util_now_ms() + (uint64_t)c->cl->keepalive_timeout * 1000);
    if (c->pending_len)
        schedule_resume(c);
}

/*
 * The handler's header lines *extra followed by those the dispatcher set
 * for every answer to the request (http_req.answer_extra): when both are
 * there, *extra becomes a malloc'd join, also left in *joined for the
 * caller to free. conn knows nothing of what they say (the router's CORS
 * lines). 0, or -1 when out of memory.
 */
static int answer_headers(const struct conn *c, const char **extra, char **joined)
{
    const char *more = c->req ? c->req->answer_extra : NULL;
    size_t a, b;

    *joined = NULL;
    if (more == NULL || more[0] == '\0')
        return 0;
    if (*extra == NULL || (*extra)[0] == '\0') {
        *extra = more;
        return 0;
    }
    a = strlen(*extra);
    b = strlen(more);
    if ((*joined = malloc(a + b + 1)) == NULL)
        return -1;
    memcpy(*joined, *extra, a);
    memcpy(*joined + a, more, b + 1);
    *extra = *joined;
    return 0;
}

void conn_respond_typed(struct conn *c, int status, const char *ctype, const char *extra,
                        const char *body, size_t len)
{
    struct metrics *m = c->cl->metrics;
    size_t outlen;
    char *out, *joined;

    if (c->flags & (CONN_CLOSING | CONN_LINGER))
        return;
    if (c->cl->stopping)
        c->keep_alive = 0;
    if (status >= 500)
        m->responses_5xx++;
    else if (status >= 400)
        m->responses_4xx++;
    if (answer_headers(c, &extra, &joined) < 0)
        out = NULL;
    else
        out = http_response_build(status, ctype, extra, body, len, c->keep_alive,
                                  (c->flags & CONN_HEAD) != 0, &outlen);
    free(joined);
    if (out == NULL) {
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return;
    }
    conn_write(c, out, outlen);
    end_request(c);
}

void conn_respond(struct conn *c, int status, const char *extra, const char *body, size_t len)
{
    conn_respond_typed(c, status, "application/json", extra, body, len);
}

void conn_respond_error(struct conn *c, const struct http_error *e)
{
    size_t len;
    char *body = http_error_body(e, &len);

    conn_respond(c, e->status, e->extra[0] ? e->extra : NULL, body, len);
    free(body);
}

void conn_reject(struct conn *c, const struct http_error *e)
{
    c->flags |= CONN_BUSY;
    c->keep_alive = 0;
    conn_respond_error(c, e);
}

void conn_stream_begin(struct conn *c, int status, const char *ctype, const char *extra,
                       const struct conn_holder *h, void *arg, uint64_t deadline_ms)
{
    size_t len;
    char *head, *joined;

    /* The head is made while the request (and its answer_extra) is still there. */
    head = answer_headers(c, &extra, &joined) < 0 ? NULL
                                                  : http_stream_head(status, ctype, extra, &len);
    free(joined);
    c->keep_alive = 0;
    conn_hold(c, h, arg, deadline_ms);
    if (c->flags & (CONN_CLOSING | CONN_LINGER)) {
        free(head);
        return;
    }
    if (head == NULL) {
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return;
    }
    conn_write(c, head, len);
}

int conn_stream_send(struct conn *c, const char *buf, size_t len)
{
    char *copy;
    int n;

    if (c->flags & (CONN_CLOSING | CONN_LINGER))
        return -1;
    if (len == 0)
        return 0;
    if (c->tls) {
        char *sealed;
        size_t slen;
        if (seal(c, buf, len, &sealed, &slen) < 0)
            return -1;
        write_raw(c, sealed, slen);
        return c->flags & CONN_CLOSING ? -1 : 0;
    }
    n = try_write(c, buf, len);
    if (n < 0)
        return -1;
    if (n == (int)len)
        return 0;
    copy = malloc(len - (size_t)n);
    if (copy == NULL) {
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return -1;
    }
    memcpy(copy, buf + n, len - (size_t)n);
    queue_write(c, copy, copy, len - (size_t)n);
    return c->flags & CONN_CLOSING ? -1 : 0;
}

void conn_stream_end(struct conn *c)
{
    if (c->flags & (CONN_CLOSING | CONN_LINGER))
        return;
    c->keep_alive = 0;
    end_request(c);
}

size_t conn_unsent(const struct conn *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

void conn_upgrade(struct conn *c, const struct conn_holder *h, void *arg, uint64_t deadline_ms)
{
    c->keep_alive = 0;
    conn_hold(c, h, arg, deadline_ms);
    c->flags |= CONN_UPGRADED;
    /* Bytes that came while the request was being handled: to the holder, from the loop. */
    if (c->pending_len)
        schedule_resume(c);
}

/* Hands bytes of an upgraded connection to its holder. */
static void deliver(struct conn *c, const char *buf, size_t len)
{
    const struct conn_holder *h = c->holder;

    if (h && h->data && len > 0)
        h->data(h->ctx, c, c->hold_arg, buf, len);
}

void conn_set_deadline(struct conn *c, uint64_t deadline_ms)
{
    if (deadline_ms) {
        set_deadline(c, deadline_ms);
    } else {
        deadline_clear(&c->cl->deadlines, &c->deadline);
        deadlines_changed(c->cl);
    }
}

void conn_hold(struct conn *c, const struct conn_holder *h, void *arg, uint64_t deadline_ms)
{
    http_req_free(c->req);
    c->req = NULL;
    c->holder = h;
    c->hold_arg = arg;
    if (deadline_ms) {
        set_deadline(c, deadline_ms);
    } else {
        deadline_clear(&c->cl->deadlines, &c->deadline);
        deadlines_changed(c->cl);
    }
}

/* A waiting job's connection closed: the job must not answer it. */
static void on_waiter_closed(void *ctx, struct conn *c, void *arg, enum conn_why why,
                             const char *text)
{
    (void)ctx;
    (void)c;
    (void)why;
    (void)text;
    *(struct conn **)arg = NULL;
}

static const struct conn_holder waiter = {.closed = on_waiter_closed};

void conn_wait(struct conn *c, struct conn **slot)
{
    /* The request stays: a job may go on with it (a handler run once a password is checked). */
    c->holder = &waiter;
    c->hold_arg = slot;
    deadline_clear(&c->cl->deadlines, &c->deadline);
    deadlines_changed(c->cl);
}

uint64_t conn_deadline(const struct conn *c)
{
    return c->deadline.idx ? c->deadline.at : 0;
}

void conn_unanswered(struct conn *c, struct iovec iov[3])
{
    iov[0] = (struct iovec){.iov_base = c->req ? c->req->raw : NULL,
                            .iov_len = c->req ? c->req->raw_len : 0};
    /* The rest of the read is c's only while c's request is being dispatched. */
    if (c->cl->dispatching == c)
        iov[1] = (struct iovec){.iov_base = (void *)c->cl->rest, .iov_len = c->cl->rest_len};
    else
        iov[1] = (struct iovec){.iov_base = NULL, .iov_len = 0};
    iov[2] = (struct iovec){.iov_base = c->pending, .iov_len = c->pending_len};
}

/* ---- reading ---------------------------------------------------------- */

/* A request could not be read: answer why and close. */
static void refuse_request(struct conn *c, int status, const char *reason)
{
    static const struct {
        int status;
        const char *word;
    } words[] = {
        {400, "bad-request"},     {408, "request-timeout"},   {411, "length-required"},
        {413, "body-too-large"},  {431, "headers-too-large"}, {503, "unavailable"},
        {505, "http-version-not-supported"},
    };
    const char *word = "bad-request";
    char peer[64], q[192];
    struct http_error e;

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (words[i].status == status)
            word = words[i].word;
    LOG(LOG_INFO, bad_request, "peer=%s status=%d reason=%s",
        conn_peer(c, peer, sizeof(peer)), status, log_q(q, sizeof(q), reason));
    http_error_set(&e, status, word, "%s", reason);
    conn_reject(c, &e);
}

static int keep_pending(struct conn *c, const char *data, size_t len)
{
    size_t max = (size_t)c->cl->limits.max_header_bytes + c->cl->limits.max_body_bytes;
    char *p;

    /* A client may pipeline behind a held ping, but only about one request's worth. */
    if (c->pending_len + len > max)
        return -1;
    p = realloc(c->pending, c->pending_len + len);
    if (p == NULL)
        return -1;
    memcpy(p + c->pending_len, data, len);
    c->pending = p;
    c->pending_len += (uint32_t)len;
    return 0;
}

/* Keeps a copy of the request's bytes (with workers) so it can be handed off. */
static int keep_raw(struct http_req *r, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (r->raw_len + len > r->raw_cap) {
        size_t cap = r->raw_cap ? r->raw_cap : 512;
        char *p;
        while (cap < r->raw_len + len)
            cap *= 2;
        p = realloc(r->raw, cap);
        if (p == NULL)
            return -1;
        r->raw = p;
        r->raw_cap = (uint32_t)cap;
    }
    memcpy(r->raw + r->raw_len, data, len);
    r->raw_len += (uint32_t)len;
    return 0;
}

static void process(struct conn *c, const char *data, size_t len)
{
    struct conn_loop *cl = c->cl;

    while (len > 0 && !(c->flags & (CONN_BUSY | CONN_CLOSING | CONN_LINGER))) {
        enum http_feed r;
        size_t used;

        if (c->req == NULL) {
            c->req = http_req_new(&cl->limits);
            if (c->req == NULL) {
                conn_close(c, CONN_WHY_NO_MEMORY, NULL);
                return;
            }
            set_deadline(c, util_now_ms() + (uint64_t)cl->header_timeout * 1000);
        }
        r = http_req_feed(c->req, data, len, &used);
        if (cl->keep_raw && r != HTTP_ERROR && keep_raw(c->req, data, used) < 0) {
            conn_close(c, CONN_WHY_NO_MEMORY, NULL);
            return;
        }
        data += used;
        len -= used;
        if (r == HTTP_ERROR) {
            refuse_request(c, c->req->err_status, c->req->err_reason);
            return;
        }
        if (r == HTTP_NEED_MORE) {
            if (c->req->send_continue) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                char *b = malloc(sizeof(cont) - 1);
                c->req->send_continue = 0;
                if (b) {
                    memcpy(b, cont, sizeof(cont) - 1);
                    conn_write(c, b, sizeof(cont) - 1);
                }
            }
            return;
        }
        c->flags |= CONN_BUSY;
        if (c->req->method == HTTP_HEAD)
            c->flags |= CONN_HEAD;
        c->keep_alive = c->req->keep_alive;
        cl->metrics->requests_total++;
        /* What follows this request in the read, should the handler move the connection. */
        cl->rest = data;
        cl->rest_len = len;
        cl->dispatching = c;
        cl->on_request(cl->request_arg, c, c->req);
        cl->dispatching = NULL;
        cl->rest = NULL;
        cl->rest_len = 0;
        if ((c->flags & (CONN_UPGRADED | CONN_CLOSING | CONN_LINGER)) == CONN_UPGRADED) {
            deliver(c, data, len);
            return;
        }
    }
    if (len > 0 && (c->flags & CONN_BUSY) && !(c->flags & (CONN_CLOSING | CONN_LINGER)) &&
        keep_pending(c, data, len) < 0)
        conn_close(c, CONN_WHY_PIPELINE_FULL, NULL);
}

static void resume(struct conn *c)
{
    char *buf = c->pending;
    size_t len = c->pending_len;

    c->flags &= (uint8_t)~CONN_RESUME;
    if ((c->flags & (CONN_UPGRADED | CONN_CLOSING | CONN_LINGER)) == CONN_UPGRADED && len) {
        c->pending = NULL;
        c->pending_len = 0;
        deliver(c, buf, len);
        free(buf);
        return;
    }
    if (c->flags & (CONN_CLOSING | CONN_BUSY | CONN_LINGER) || len == 0)
        return;
    c->pending = NULL;
    c->pending_len = 0;
    process(c, buf, len);
    free(buf);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)suggested;
    buf->base = c->cl->rbuf;
    buf->len = sizeof(c->cl->rbuf);
}

/* Bytes of the connection's own protocol (after TLS), to where they belong now. */
static void received(struct conn *c, const char *data, size_t len)
{
    if (c->flags & CONN_UPGRADED) {
        deliver(c, data, len);
        return;
    }
    if (c->flags & CONN_BUSY) {
        if (keep_pending(c, data, len) < 0)
            conn_close(c, CONN_WHY_PIPELINE_FULL, NULL);
        return;
    }
    process(c, data, len);
}

/*
 * TLS: every complete record of the read is opened first, so that a request
 * handed to another worker takes all the bytes behind it (and an incomplete
 * record travels inside the TLS state).
 */
static void read_tls(struct conn *c, char *data, size_t len)
{
    struct tls_out out = {.send = tls_send, .arg = c};
    const char *why = NULL;
    char *plain, peer[64], q[128];
    size_t plain_len;
    int was_ready = tls_conn_ready(c->tls);
    long rc = tls_conn_input(c->tls, data, len, &plain, &plain_len, &out, &why);

    if (c->flags & CONN_CLOSING)
        return;
    if (!was_ready && tls_conn_ready(c->tls))
        c->cl->metrics->tls_handshakes++;
    if (rc == TLS_ERROR) {
        LOG(LOG_INFO, tls_failed, "peer=%s reason=%s", conn_peer(c, peer, sizeof(peer)),
            log_q(q, sizeof(q), why ? why : "?"));
        c->cl->metrics->tls_failures++;
        conn_close(c, CONN_WHY_TLS, why);
        return;
    }
    if (plain_len > 0)
        received(c, plain, plain_len);
    if (!(c->flags & CONN_CLOSING))
        tls_conn_done(c->tls);
    if (rc == TLS_EOF && !(c->flags & CONN_CLOSING))
        conn_close(c, CONN_WHY_EOF, NULL);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;

    if (nread == 0 || (c->flags & CONN_CLOSING))
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            conn_close(c, CONN_WHY_EOF, NULL);
        else
            conn_close(c, CONN_WHY_IO, uv_strerror((int)nread));
        return;
    }
    c->cl->metrics->bytes_received += (uint64_t)nread;
    if (c->flags & CONN_LINGER)
        return; /* drained and dropped */
    if (c->tls) {
        read_tls(c, buf->base, (size_t)nread);
        return;
    }
    received(c, buf->base, (size_t)nread);
}

static void on_deadline(struct conn *c)
{
    if (c->flags & CONN_CLOSING)
        return;
    if (c->flags & CONN_LINGER) {
        conn_close(c, CONN_WHY_LINGER_DONE, NULL);
    } else if (c->holder && c->holder->expired) {
        c->holder->expired(c->holder->ctx, c, c->hold_arg);
    } else if (c->flags & CONN_BUSY) {
        /* A handler is still working on it and always answers: look again shortly. */
        set_deadline(c, util_now_ms() + 1000);
    } else if (c->req != NULL) {
        LOG(LOG_INFO, request_timeout, "timeout=%u", c->cl->header_timeout);
        refuse_request(c, 408, "request not received in time");
    } else {
        conn_close(c, CONN_WHY_IDLE, NULL);
    }
}

/* ---- opening ---------------------------------------------------------- */

/* A connection on fd. NULL with *err set when it could not be made (fd closed, on_closed told). */
static struct conn *conn_new(struct conn_loop *cl, int fd, void *counted, int *err)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        *err = -ENOMEM;
        close(fd);
        if (cl->on_closed)
            cl->on_closed(cl->closed_arg, counted, 0);
        return NULL;
    }
    c->cl = cl;
    c->counted = counted;
    uv_tcp_init(cl->loop, &c->tcp);
    c->tcp.data = c;
    cl->metrics->connections++;
    *err = uv_tcp_open(&c->tcp, fd);
    if (*err < 0) {
        close(fd);
        c->flags |= CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return NULL;
    }
    /* TCP_NODELAY and keepalive came from the listener, and travel with a handed-off socket. */
    c->keep_alive = 1;
    *err = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (*err < 0) {
        conn_close(c, CONN_WHY_IO, uv_strerror(*err));
        *err = 0; /* closed with its reason: nothing more to report */
        return NULL;
    }
    /* The first request must arrive within the request timeout. */
    set_deadline(c, util_now_ms() + (uint64_t)cl->header_timeout * 1000);
    return c;
}

struct conn *conn_open(struct conn_loop *cl, int fd, void *counted)
{
    char q[128];
    int err = 0;
    struct conn *c = conn_new(cl, fd, counted, &err);

    if (c == NULL && err == -ENOMEM)
        LOG(LOG_ERROR, accept_error, "error=\"out of memory\"");
    else if (c == NULL && err != 0)
        LOG(LOG_WARN, accept_error, "error=%s", log_q(q, sizeof(q), uv_strerror(err)));
    if (c)
        cl->metrics->connections_total++;
    return c;
}

int conn_adopt(struct conn_loop *cl, int fd, void *counted, const char *bytes, size_t len,
               const void *tls, size_t tls_len)
{
    int err = 0;
    struct conn *c = conn_new(cl, fd, counted, &err);

    if (c == NULL)
        return err;
    c->flags |= CONN_ADOPTED;
    if (tls_len > 0) {
        c->tls = tls_conn_import(tls, tls_len);
        if (c->tls == NULL) {
            conn_close(c, CONN_WHY_TLS, "its TLS state did not arrive whole");
            return -EPROTO;
        }
    }
    process(c, bytes, len);
    return 0;
}

int conn_start_tls(struct conn *c)
{
    if (c->cl->tls == NULL || (c->tls = tls_conn_new(c->cl->tls)) == NULL) {
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return -1;
    }
    return 0;
}

void conn_loop_set_tls(struct conn_loop *cl, struct tls_server *tls)
{
    cl->tls = tls;
}

int conn_is_tls(const struct conn *c)
{
    return c->tls != NULL;
}

long conn_tls_export(const struct conn *c, void *buf, size_t len)
{
    size_t n;

    if (c->tls == NULL)
        return 0;
    n = tls_conn_export(c->tls, buf, len);
    return n == 0 ? -1 : (long)n;
}

int conn_adopted(const struct conn *c)
{
    return (c->flags & CONN_ADOPTED) != 0;
}

/* ---- stopping --------------------------------------------------------- */

static void walk_stop(uv_handle_t *h, void *arg)
{
    struct conn *c;

    (void)arg;
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    c = h->data;
    if (c->holder) {
        if (c->holder->shutdown)
            c->holder->shutdown(c->holder->ctx, c, c->hold_arg);
    } else if (!(c->flags & CONN_BUSY) && c->req == NULL && !(c->flags & CONN_LINGER)) {
        conn_close(c, CONN_WHY_SHUTDOWN, NULL);
    }
}

void conn_loop_stop(struct conn_loop *cl)
{
    cl->stopping = 1;
    uv_walk(cl->loop, walk_stop, cl);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h))
        conn_close(h->data, CONN_WHY_SHUTDOWN, NULL);
}

void conn_loop_close_all(struct conn_loop *cl)
{
    uv_walk(cl->loop, walk_close, cl);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void conn_loop_close(struct conn_loop *cl)
{
    close_handle((uv_handle_t *)&cl->deadline_timer);
    close_handle((uv_handle_t *)&cl->resume_timer);
}

void conn_loop_free(struct conn_loop *cl)
{
    deadline_heap_free(&cl->deadlines);
}
