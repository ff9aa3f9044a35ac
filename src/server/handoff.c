/* handoff.c — connections moved to the worker owning their user; see handoff.h. */
#include "server/handoff.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "conn/conn.h"
#include "conn/listen.h"
#include "stream/sse.h"
#include "http/error.h"
#include "tls/tls.h"
#include "worker/mesh.h"

/* One line per this long when owners are full, not one per refused client. */
#define FULL_LOG_MS 1000

/*
 * Sends the socket and the bytes not yet answered to worker 'to', and
 * closes it here. When the message cannot be sent the client is answered
 * 503 and nothing is lost.
 */
static void hand_off(struct handoff *h, struct conn *c, unsigned to)
{
    /* A TLS connection's keys and sequence numbers travel with it (src/tls/tls.h). */
    static char tls[TLS_EXPORT_MAX];
    struct listen_ref ref;
    struct http_error e;
    struct iovec iov[6];
    size_t total = 0;
    uint32_t tls_len;
    long n;
    int rc, fd;

    listen_ref_of(h->listener, c->counted, &ref);
    n = conn_tls_export(c, tls, sizeof(tls));
    tls_len = n > 0 ? (uint32_t)n : 0;
    iov[0] = (struct iovec){.iov_base = &ref, .iov_len = sizeof(ref)};
    iov[1] = (struct iovec){.iov_base = &tls_len, .iov_len = sizeof(tls_len)};
    iov[2] = (struct iovec){.iov_base = tls, .iov_len = tls_len};
    conn_unanswered(c, &iov[3]);
    for (int i = 0; i < 6; i++)
        total += iov[i].iov_len;
    /* At its descriptor ceiling the owner could not take the socket: refuse here, with an answer. */
    if (listen_reserve(h->listener, to) < 0) {
        static uint64_t said;
        uint64_t now = util_now_ms();
        char q[96];
        h->metrics->connections_refused++;
        if (now - said >= FULL_LOG_MS) {
            said = now;
            LOG(LOG_WARN, handoff_failed, "to=%u reason=%s limit=%u", to,
                log_q(q, sizeof(q), "the owner is at its connection limit"),
                h->listener->max_conns);
        }
        if (sse_is_stream(c->req)) {
            sse_come_back(c, h->cfg->stream_retry);
            return;
        }
        http_error_set(&e, 503, "unavailable",
                       "the worker owning this user is at its connection limit; retry later");
        conn_close_after_answer(c);
        conn_respond_error(c, &e);
        return;
    }
    fd = conn_fd(c);
    if (fd < 0 || n < 0 || total > mesh_max_payload(h->mesh))
        rc = -EMSGSIZE;
    else
        rc = mesh_send(h->mesh, to, HANDOFF_MSG, 0, iov, 6, fd);
    if (rc < 0) {
        char q[96];
        listen_unreserve(h->listener, to);
        LOG(LOG_ERROR, handoff_failed, "to=%u reason=%s", to, log_q(q, sizeof(q), strerror(-rc)));
        if (sse_is_stream(c->req)) {
            sse_come_back(c, h->cfg->stream_retry);
            return;
        }
        http_error_set(&e, 503, "unavailable",
                       "this request could not be passed to the worker owning its user");
        conn_close_after_answer(c);
        conn_respond_error(c, &e);
        return;
    }
    listen_moved(h->listener, c->counted, to);
    h->metrics->handoffs_sent++;
    conn_handed_off(c);
}

/* worker_route's elsewhere(): is 'user' another worker's? Then c goes there. */
static int elsewhere(void *arg, struct conn *c, const char *user, size_t len)
{
    struct handoff *h = arg;
    unsigned to;

    if (h->wk == NULL)
        return 0;
    to = worker_owner(user, len, h->wk->count);
    if (to == h->wk->index)
        return 0;
    hand_off(h, c, to);
    return 1;
}

/* HANDOFF_MSG: takes over the socket and processes the bytes read so far. */
static void on_handoff_msg(void *arg, unsigned from, uint32_t id, const char *p, size_t len,
                           int fd)
{
    struct handoff *h = arg;
    struct listen_ref ref;
    uint32_t tls_len = 0;
    void *counted;
    char q[128];
    int rc;

    (void)id;
    if (len >= sizeof(ref) + sizeof(tls_len))
        memcpy(&tls_len, p + sizeof(ref), sizeof(tls_len));
    if (fd < 0 || len < sizeof(ref) + sizeof(tls_len) ||
        tls_len > len - sizeof(ref) - sizeof(tls_len)) {
        LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"handoff without a connection\"", from);
        if (fd >= 0)
            close(fd);
        return;
    }
    memcpy(&ref, p, sizeof(ref));
    counted = listen_adopt(h->listener, &ref);
    p += sizeof(ref) + sizeof(tls_len);
    len -= sizeof(ref) + sizeof(tls_len);
    rc = conn_adopt(h->conns, fd, counted, p + tls_len, len - tls_len, p, tls_len);
    if (rc != -ENOMEM)
        h->metrics->handoffs_received++;
    if (rc < 0)
        LOG(rc == -ENOMEM ? LOG_ERROR : LOG_WARN, handoff_failed, "from=%u reason=%s", from,
            log_q(q, sizeof(q), rc == -ENOMEM ? "out of memory" : uv_strerror(rc)));
}

void handoff_init(struct handoff *h, const struct config *cfg, const struct worker_ctx *wk,
                  struct mesh *mesh, struct listener *listener, struct conn_loop *conns,
                  struct metrics *metrics)
{
    h->cfg = cfg;
    h->wk = wk;
    h->mesh = mesh;
    h->listener = listener;
    h->conns = conns;
    h->metrics = metrics;
    h->route = (struct worker_route){.elsewhere = elsewhere, .arg = h};
    mesh_on(mesh, HANDOFF_MSG, on_handoff_msg, h);
}
