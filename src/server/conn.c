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
 */
#include "server/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "http/request.h"
#include "http/response.h"
#include "push/ping.h"
#include "push/probe.h"
#include "net/sockopt.h"
#include "server/listen.h"
#include "server/router.h"
#include "session/session.h"
#include "server/server.h"
#include "worker/mesh.h"
#include "worker/mesh_handlers.h"
#include "worker/worker.h"

/* How long a closing connection waits for the client's FIN before closing anyway. */
#define LINGER_MS 2000

struct write_req {
    uv_write_t req;
    char *buf;
};

static void on_close(uv_handle_t *h);
static void process(struct conn *c, const char *data, size_t len);

static void set_deadline(struct conn *c, uint64_t at)
{
    deadline_set(&c->srv->deadlines, &c->deadline, at);
    server_deadlines_changed(c->srv);
}

const char *conn_peer(struct conn *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);

    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &n) != 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    return util_format_addr((struct sockaddr *)&ss, buf, len);
}

void conn_close(struct conn *c, const char *why)
{
    char peer[64], q[128];

    if (c->flags & CONN_CLOSING)
        return;
    c->flags |= CONN_CLOSING;
    LOG(LOG_DEBUG, conn_closed, "peer=%s why=%s", conn_peer(c, peer, sizeof(peer)),
        log_q(q, sizeof(q), why));
    deadline_clear(&c->srv->deadlines, &c->deadline);
    if (c->flags & CONN_HELD) {
        if (!c->srv->stopping)
            session_closed(c->srv, c->held, why);
        ping_conn_closed(c);
        c->flags &= (uint8_t)~CONN_HELD;
        c->held = NULL;
        c->srv->metrics.pings_held--;
    }
    if (c->flags & CONN_PROBE) {
        c->flags &= (uint8_t)~CONN_PROBE;
        probe_end(c->probe);
        c->probe = NULL;
    }
    if (c->waiter) {
        /* The async job outlives us: tell it there is nobody to answer. */
        *(struct conn **)c->waiter = NULL;
        c->waiter = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void unlink_resume(struct conn *c)
{
    struct conn **pp = &c->srv->resume_head;

    while (*pp && *pp != c)
        pp = &(*pp)->resume_next;
    if (*pp)
        *pp = c->resume_next;
    c->flags &= (uint8_t)~CONN_RESUME;
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (c->flags & CONN_RESUME)
        unlink_resume(c);
    c->srv->metrics.connections--;
    listen_conn_closed(c->srv, c->ip, (c->flags & CONN_HANDED) != 0);
    http_req_free(c->req);
    free(c->pending);
    free(c);
}

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
        conn_close(c, uv_strerror(status));
}

/* Writes buf[0..len) and takes ownership of buf. */
static void conn_write(struct conn *c, char *buf, size_t len)
{
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    struct write_req *w;
    int n;

    if (c->flags & CONN_CLOSING) {
        free(buf);
        return;
    }
    c->srv->metrics.bytes_sent += len;
    n = c->writes ? UV_EAGAIN : uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len) {
        free(buf);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        free(buf);
        conn_close(c, uv_strerror(n));
        return;
    }
    if (n < 0)
        n = 0;
    w = malloc(sizeof(*w));
    if (w == NULL) {
        free(buf);
        conn_close(c, "out of memory");
        return;
    }
    w->buf = buf;
    b = uv_buf_init(buf + n, (unsigned)(len - (size_t)n));
    n = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, after_write);
    if (n < 0) {
        free(buf);
        free(w);
        conn_close(c, uv_strerror(n));
        return;
    }
    c->writes++;
}

static void start_linger(struct conn *c)
{
    uv_shutdown_t *req = malloc(sizeof(*req));

    c->flags |= CONN_LINGER;
    if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, after_shutdown) < 0) {
        free(req);
        conn_close(c, "shutdown failed");
        return;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    set_deadline(c, util_now_ms() + LINGER_MS);
}

static void schedule_resume(struct conn *c)
{
    struct server *s = c->srv;

    if (c->flags & CONN_RESUME)
        return;
    c->flags |= CONN_RESUME;
    c->resume_next = s->resume_head;
    s->resume_head = c;
    server_resume_soon(s);
}

/* The current request is answered: back to idle, or on to the next one. */
static void end_request(struct conn *c)
{
    struct server *s = c->srv;

    http_req_free(c->req);
    c->req = NULL;
    if (c->flags & CONN_HELD) {
        c->flags &= (uint8_t)~CONN_HELD;
        c->held = NULL;
        s->metrics.pings_held--;
    }
    if (c->flags & CONN_PROBE) {
        c->flags &= (uint8_t)~CONN_PROBE;
        probe_end(c->probe);
        c->probe = NULL;
    }
    c->flags &= (uint8_t)~(CONN_BUSY | CONN_WAITING);
    c->waiter = NULL;
    if (!c->keep_alive) {
        start_linger(c);
        return;
    }
    set_deadline(c, util_now_ms() + (uint64_t)s->cfg->keepalive_timeout * 1000);
    if (c->pending_len)
        schedule_resume(c);
}

void conn_respond_typed(struct conn *c, int status, const char *ctype, const char *extra,
                        const char *body, size_t len)
{
    size_t outlen;
    char *out;

    if (c->flags & (CONN_CLOSING | CONN_LINGER))
        return;
    if (c->srv->stopping)
        c->keep_alive = 0;
    if (status >= 500)
        c->srv->metrics.responses_5xx++;
    else if (status >= 400)
        c->srv->metrics.responses_4xx++;
    out = http_response_build(status, ctype, extra, body, len, c->keep_alive, &outlen);
    if (out == NULL) {
        conn_close(c, "out of memory");
        return;
    }
    conn_write(c, out, outlen);
    end_request(c);
}

void conn_respond(struct conn *c, int status, const char *extra, const char *body, size_t len)
{
    conn_respond_typed(c, status, "application/json", extra, body, len);
}

void conn_respond_error(struct conn *c, int status, const char *word, const char *error)
{
    struct jsonw w;
    size_t len;
    char *body;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, word);
    if (error) {
        jw_key(&w, "error");
        jw_str(&w, error);
    }
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, status, NULL, body, len);
    free(body);
}

void conn_hold(struct conn *c, struct device *d, uint64_t deadline_ms)
{
    http_req_free(c->req);
    c->req = NULL;
    c->flags |= CONN_HELD;
    c->held = d;
    c->srv->metrics.pings_held++;
    set_deadline(c, deadline_ms);
}

void conn_hold_probe(struct conn *c, struct probe *p, uint64_t deadline_ms)
{
    http_req_free(c->req);
    c->req = NULL;
    c->flags |= CONN_PROBE;
    c->probe = p;
    set_deadline(c, deadline_ms);
}

void conn_wait(struct conn *c, void *waiter)
{
    c->flags |= CONN_WAITING;
    c->waiter = waiter;
}

/* A request could not be read: answer why and close. */
static void refuse_request(struct conn *c, int status, const char *reason)
{
    static const struct {
        int status;
        const char *word;
    } words[] = {
        {400, "bad-request"},     {408, "request-timeout"},   {411, "length-required"},
        {413, "body-too-large"},  {431, "headers-too-large"}, {503, "unavailable"},
    };
    const char *word = "bad-request";
    char peer[64], q[192];

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (words[i].status == status)
            word = words[i].word;
    LOG(LOG_INFO, bad_request, "peer=%s status=%d reason=%s",
        conn_peer(c, peer, sizeof(peer)), status, log_q(q, sizeof(q), reason));
    c->flags |= CONN_BUSY;
    c->keep_alive = 0;
    conn_respond_error(c, status, word, reason);
}

static int keep_pending(struct conn *c, const char *data, size_t len)
{
    struct server *s = c->srv;
    size_t max = (size_t)s->limits.max_header_bytes + s->limits.max_body_bytes;
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

void conn_handoff(struct conn *c, unsigned to)
{
    c->srv->handoff_to = to + 1;
}

int conn_user_elsewhere(struct conn *c, const char *user, size_t len, unsigned *to)
{
    const struct worker_ctx *wk = c->srv->wk;

    if (wk == NULL)
        return 0;
    *to = worker_owner(user, len, wk->count);
    return *to != wk->index;
}

/*
 * Sends the socket, this request's bytes and those after it ('rest', then
 * any kept in 'pending') to worker 'to', and closes it here. When the
 * message cannot be sent the client is answered 503 and nothing is lost.
 */
static void hand_off(struct conn *c, unsigned to, const char *rest, size_t restlen)
{
    struct server *s = c->srv;
    struct mesh_handoff h;
    struct iovec iov[4];
    int rc, fd = -1;

    memset(&h, 0, sizeof(h));
    h.ip_owner = MESH_NOBODY;
    iov[0] = (struct iovec){.iov_base = &h, .iov_len = sizeof(h)};
    iov[1] = (struct iovec){.iov_base = c->req->raw, .iov_len = c->req->raw_len};
    iov[2] = (struct iovec){.iov_base = (void *)rest, .iov_len = restlen};
    iov[3] = (struct iovec){.iov_base = c->pending, .iov_len = c->pending_len};
    if (c->ip) {
        h.ip_owner = (uint16_t)(c->ip->owner ? c->ip->owner - 1u : s->wk->index);
        h.klen = (uint8_t)c->ip->klen;
        memcpy(h.key, c->ip->key, c->ip->klen);
    }
    /*
     * The owner's part of the count is reserved here, before the socket
     * travels, so sockets on their way are counted too. At its descriptor
     * ceiling (every worker has the same one) it could not take the socket:
     * refuse here, with an answer, rather than have the kernel drop it.
     */
    if (atomic_fetch_add(&s->wk->shared->held_by[to], 1) >= s->max_conns) {
        static uint64_t said; /* one line per second, not one per refused client */
        uint64_t now = util_now_ms();
        char q[96];
        atomic_fetch_sub(&s->wk->shared->held_by[to], 1);
        s->metrics.connections_refused++;
        if (now - said >= 1000) {
            said = now;
            LOG(LOG_WARN, handoff_failed, "to=%u reason=%s limit=%u", to,
                log_q(q, sizeof(q), "the owner is at its connection limit"), s->max_conns);
        }
        c->keep_alive = 0;
        conn_respond_error(c, 503, "unavailable",
                           "the worker owning this user is at its connection limit; retry later");
        return;
    }
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
        sizeof(h) + c->req->raw_len + restlen + c->pending_len > mesh_max_payload(s))
        rc = -EMSGSIZE;
    else
        rc = mesh_send(s, to, MESH_HANDOFF, 0, iov, 4, fd);
    if (rc == 0) {
        listen_ip_handoff(s, c->ip, to);
        c->ip = NULL;
    } else {
        atomic_fetch_sub(&s->wk->shared->held_by[to], 1);
    }
    if (rc < 0) {
        char q[96];
        LOG(LOG_ERROR, handoff_failed, "to=%u reason=%s", to, log_q(q, sizeof(q), strerror(-rc)));
        c->keep_alive = 0;
        conn_respond_error(c, 503, "unavailable",
                           "this request could not be passed to the worker owning its user");
        return;
    }
    s->metrics.handoffs_sent++;
    c->flags |= CONN_HANDED;
    conn_close(c, "handed off");
}

static void process(struct conn *c, const char *data, size_t len)
{
    struct server *s = c->srv;

    while (len > 0 && !(c->flags & (CONN_BUSY | CONN_CLOSING | CONN_LINGER))) {
        enum http_feed r;
        size_t used;

        if (c->req == NULL) {
            c->req = http_req_new(&s->limits);
            if (c->req == NULL) {
                conn_close(c, "out of memory");
                return;
            }
            set_deadline(c, util_now_ms() + (uint64_t)s->cfg->header_timeout * 1000);
        }
        r = http_req_feed(c->req, data, len, &used);
        if (s->wk && r != HTTP_ERROR && keep_raw(c->req, data, used) < 0) {
            conn_close(c, "out of memory");
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
        c->keep_alive = c->req->keep_alive;
        s->metrics.requests_total++;
        router_dispatch(c, c->req);
        if (s->handoff_to) {
            unsigned to = s->handoff_to - 1;
            s->handoff_to = 0;
            hand_off(c, to, data, len);
            return;
        }
    }
    if (len > 0 && (c->flags & CONN_BUSY) && !(c->flags & (CONN_CLOSING | CONN_LINGER)) &&
        keep_pending(c, data, len) < 0)
        conn_close(c, "too much pipelined data");
}

void conn_resume(struct conn *c)
{
    char *buf = c->pending;
    size_t len = c->pending_len;

    c->flags &= (uint8_t)~CONN_RESUME;
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
    buf->base = c->srv->rbuf;
    buf->len = sizeof(c->srv->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;

    if (nread == 0 || (c->flags & CONN_CLOSING))
        return;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "eof" : uv_strerror((int)nread));
        return;
    }
    c->srv->metrics.bytes_received += (uint64_t)nread;
    if (c->flags & CONN_LINGER)
        return; /* drained and dropped */
    if (c->flags & CONN_BUSY) {
        if (keep_pending(c, buf->base, (size_t)nread) < 0)
            conn_close(c, "too much pipelined data");
        return;
    }
    process(c, buf->base, (size_t)nread);
}

void conn_on_deadline(struct conn *c)
{
    if (c->flags & CONN_CLOSING)
        return;
    if (c->flags & CONN_LINGER) {
        conn_close(c, "linger done");
    } else if (c->flags & CONN_HELD) {
        ping_expired(c);
    } else if (c->flags & CONN_PROBE) {
        probe_expired(c);
    } else if (c->flags & CONN_BUSY) {
        /* Waiting on the store: it always answers; look again shortly. */
        set_deadline(c, util_now_ms() + 1000);
    } else if (c->req != NULL) {
        LOG(LOG_INFO, request_timeout, "timeout=%u", c->srv->cfg->header_timeout);
        refuse_request(c, 408, "request not received in time");
    } else {
        conn_close(c, "idle");
    }
}

void conn_accept_fd(struct server *s, int fd, struct ip_count *ip, int over_ip_limit)
{
    struct conn *c = calloc(1, sizeof(*c));
    char q[128], peer[64];
    int err;

    if (c == NULL) {
        LOG(LOG_ERROR, accept_error, "error=\"out of memory\"");
        close(fd);
        listen_conn_closed(s, ip, 0);
        return;
    }
    c->srv = s;
    c->ip = ip;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    s->metrics.connections++;
    err = uv_tcp_open(&c->tcp, fd);
    if (err < 0) {
        LOG(LOG_WARN, accept_error, "error=%s", log_q(q, sizeof(q), uv_strerror(err)));
        close(fd);
        c->flags |= CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    s->metrics.connections_total++;
    /* TCP_NODELAY and keepalive came from the listener (net/sockopt.h). */
    c->keep_alive = 1;
    err = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (err < 0) {
        conn_close(c, uv_strerror(err));
        return;
    }
    if (over_ip_limit) {
        char extra[32], body[96];
        int n = snprintf(body, sizeof(body), "{\"status\":\"too-many-connections\",\"limit\":%u}",
                         s->cfg->max_per_ip);
        s->metrics.connections_refused++;
        if (ip->n == s->cfg->max_per_ip + 1) /* once per address going over, not per client */
            LOG(LOG_INFO, conn_refused, "peer=%s limit=%u", conn_peer(c, peer, sizeof(peer)),
                s->cfg->max_per_ip);
        snprintf(extra, sizeof(extra), "Retry-After: 30\r\n");
        c->flags |= CONN_BUSY;
        c->keep_alive = 0;
        conn_respond(c, 429, extra, body, (size_t)n);
        return;
    }
    /* The first request must arrive within the request timeout. */
    set_deadline(c, util_now_ms() + (uint64_t)s->cfg->header_timeout * 1000);
}

void conn_adopt(struct server *s, int fd, unsigned from, const struct mesh_handoff *h,
                const char *bytes, size_t len)
{
    struct conn *c = calloc(1, sizeof(*c));
    char q[128];
    int err;

    (void)from;
    if (c == NULL) {
        LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"out of memory\"", from);
        close(fd);
        listen_conn_closed(s, listen_ip_adopt(s, h), 0);
        return;
    }
    c->srv = s;
    c->ip = listen_ip_adopt(s, h);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    s->metrics.connections++;
    s->metrics.handoffs_received++;
    err = uv_tcp_open(&c->tcp, fd);
    if (err < 0) {
        LOG(LOG_WARN, handoff_failed, "from=%u reason=%s", from, log_q(q, sizeof(q), uv_strerror(err)));
        close(fd);
        c->flags |= CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    /* TCP_NODELAY and keepalive travel with the socket (net/sockopt.h). */
    c->keep_alive = 1;
    err = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (err < 0) {
        conn_close(c, uv_strerror(err));
        return;
    }
    set_deadline(c, util_now_ms() + (uint64_t)s->cfg->header_timeout * 1000);
    process(c, bytes, len);
}
