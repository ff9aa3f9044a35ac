/* mesh.c — messages between worker processes; see mesh.h. */
#include "worker/mesh.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/strmap.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "worker/worker.h"

/* Messages read per readiness event: bounded so one busy peer cannot starve the loop. */
#define READ_BURST 64

/*
 * Messages queued in one loop turn without a descriptor leave together, as
 * one MESH_BATCH packet of frames, when the turn ends (a uv_prepare, which
 * runs just before the loop waits): with 32 publishers, one packet and one
 * wake-up of the peer carried a dozen bumps instead of one each. A frame is
 * an 8-byte prefix (the length of what follows, and zeros), the message,
 * and zeros to the next multiple of 8, so every message the receiver
 * dispatches from a batch is as aligned as one read alone.
 */
#define BATCH_MAX 256     /* frames per packet: bounds the iovec array (2 per frame) */
#define FRAME_PREFIX 8
#define FRAME_PAD(len) ((8 - (len) % 8) % 8)

struct mesh_out {
    struct mesh_out *next;
    int fd;               /* dup'ed descriptor to send with it, or -1 */
    size_t len;           /* of data: the header and the payload */
    uint32_t frame[2];    /* a batch frame's prefix: len, 0; right before data */
    char data[];
};

_Static_assert(offsetof(struct mesh_out, data) ==
                   offsetof(struct mesh_out, frame) + FRAME_PREFIX,
               "a frame's prefix must lie right before its message");

struct mesh_peer {
    struct mesh *m;
    unsigned index;
    int fd;
    uv_poll_t poll;
    int poll_open;
    int want_write;
    struct mesh_out *head, *tail;
};

struct mesh_callrec {
    struct mesh_callrec *prev, *next; /* in order of deadline (all wait equally long) */
    uint32_t id;
    unsigned to;
    unsigned type;
    uint64_t deadline;
    mesh_reply_cb cb;
    void *arg;
};

struct mesh_handler {
    mesh_msg_fn fn;
    void *arg;
};

struct mesh {
    struct mesh_peer *peers;     /* [count]; ours has fd -1 */
    unsigned count;
    struct strmap calls;         /* id (4 bytes) -> struct mesh_callrec */
    struct mesh_callrec *first, *last;
    uint32_t next_id;
    uv_timer_t timer;
    int timer_open;
    uv_prepare_t prepare;        /* sends what this loop turn queued (see BATCH_MAX) */
    int prepare_open;
    char *rbuf;                  /* one receive buffer for every peer */
    size_t rbuf_len;
    size_t max_msg;              /* largest message the sockets take (their send buffer) */
    struct metrics *metrics;
    struct mesh_handler on[MESH_TYPE_MAX];
    void (*on_reset)(void *arg, unsigned peer);
    void *reset_arg;
};

static void peer_poll(struct mesh_peer *p);

size_t mesh_max_payload(const struct mesh *m)
{
    return m->max_msg - sizeof(struct mesh_hdr) - sizeof(uint32_t);
}

void mesh_on(struct mesh *m, unsigned type, mesh_msg_fn fn, void *arg)
{
    if (m == NULL)
        return;
    if (type < MESH_TYPE_FIRST || type >= MESH_TYPE_MAX || m->on[type].fn != NULL) {
        /* Two modules chose one number, or one outside the range: a build error in effect. */
        fprintf(stderr, "nudged: mesh message type %u is out of range or taken twice\n", type);
        abort();
    }
    m->on[type].fn = fn;
    m->on[type].arg = arg;
}

void mesh_on_reset(struct mesh *m, void (*fn)(void *arg, unsigned peer), void *arg)
{
    if (m == NULL)
        return;
    m->on_reset = fn;
    m->reset_arg = arg;
}

/* ---- calls ------------------------------------------------------------ */

static void call_unlink(struct mesh *m, struct mesh_callrec *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        m->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        m->last = c->prev;
    strmap_del(&m->calls, (const char *)&c->id, sizeof(c->id));
}

static void on_timer(uv_timer_t *t);

static void rearm(struct mesh *m)
{
    uint64_t now = util_now_ms();

    if (!m->timer_open)
        return;
    if (m->first == NULL) {
        uv_timer_stop(&m->timer);
        return;
    }
    uv_timer_start(&m->timer, on_timer, m->first->deadline > now ? m->first->deadline - now : 0, 0);
}

static void finish_call(struct mesh *m, struct mesh_callrec *c, const char *p, size_t len,
                        int status)
{
    call_unlink(m, c);
    c->cb(c->arg, c->to, p, len, status);
    free(c);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh *m = t->data;
    uint64_t now = util_now_ms();

    while (m->first && m->first->deadline <= now) {
        struct mesh_callrec *c = m->first;
        LOG(LOG_WARN, mesh_call_failed, "peer=%u type=%u reason=timeout", c->to, c->type);
        finish_call(m, c, NULL, 0, -ETIMEDOUT);
    }
    rearm(m);
}

/* Every call to 'to' fails: the worker restarted and will never answer them. */
static void fail_calls_to(struct mesh *m, unsigned to, int status)
{
    struct mesh_callrec *c = m->first, *next;

    for (; c; c = next) {
        next = c->next;
        if (c->to == to || to == MESH_NOBODY)
            finish_call(m, c, NULL, 0, status);
    }
    rearm(m);
}

/* ---- sending ---------------------------------------------------------- */

static int send_iov(struct mesh_peer *p, struct iovec *iov, size_t iovcnt, int fd)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = iovcnt};
    ssize_t n;

    if (fd >= 0) {
        struct cmsghdr *ch;
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        ch = CMSG_FIRSTHDR(&msg);
        ch->cmsg_level = SOL_SOCKET;
        ch->cmsg_type = SCM_RIGHTS;
        ch->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(ch), &fd, sizeof(int));
    }
    do
        n = sendmsg(p->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return 0;
}

/* Sends the first *count messages of the queue as one packet; *count: how many went (or would). */
static int send_head(struct mesh_peer *p, size_t *count)
{
    static const char zeros[8];
    struct iovec iov[1 + 2 * BATCH_MAX];
    struct mesh_hdr bh = {.type = MESH_BATCH, .id = 0};
    struct mesh_out *o = p->head;
    size_t n = 0, bytes = sizeof(bh), k = 1;

    for (; o && o->fd < 0 && n < BATCH_MAX; o = o->next, n++) {
        size_t need = FRAME_PREFIX + o->len + FRAME_PAD(o->len);
        if (bytes + need > p->m->max_msg)
            break;
        bytes += need;
    }
    if (n <= 1) {
        /* One message, or one with a descriptor, or one too big to frame: alone, as it is. */
        struct iovec one = {.iov_base = p->head->data, .iov_len = p->head->len};
        *count = 1;
        return send_iov(p, &one, 1, p->head->fd);
    }
    iov[0] = (struct iovec){.iov_base = &bh, .iov_len = sizeof(bh)};
    o = p->head;
    for (size_t i = 0; i < n; i++, o = o->next) {
        o->frame[0] = (uint32_t)o->len;
        o->frame[1] = 0;
        iov[k++] = (struct iovec){.iov_base = o->frame, .iov_len = FRAME_PREFIX + o->len};
        if (FRAME_PAD(o->len))
            iov[k++] = (struct iovec){.iov_base = (void *)zeros, .iov_len = FRAME_PAD(o->len)};
    }
    *count = n;
    p->m->metrics->mesh_batches++;
    p->m->metrics->mesh_batched += n;
    return send_iov(p, iov, k, -1);
}

static void flush(struct mesh_peer *p)
{
    while (p->head) {
        size_t n = 0;
        int rc = send_head(p, &n);
        if (rc == -EAGAIN || rc == -ENOBUFS)
            break;
        if (rc < 0) {
            char q[96];
            LOG(LOG_ERROR, mesh_call_failed, "peer=%u reason=%s", p->index,
                log_q(q, sizeof(q), strerror(-rc)));
        }
        while (n-- > 0) {
            struct mesh_out *o = p->head;
            p->head = o->next;
            if (o->fd >= 0)
                close(o->fd);
            free(o);
        }
        if (p->head == NULL)
            p->tail = NULL;
    }
    peer_poll(p);
}

/* The loop turn ends: whatever it queued goes now, to every peer that can take it. */
static void on_prepare(uv_prepare_t *h)
{
    struct mesh *m = h->data;

    uv_prepare_stop(h);
    for (unsigned i = 0; i < m->count; i++)
        if (m->peers[i].head && !m->peers[i].want_write)
            flush(&m->peers[i]);
}

int mesh_send(struct mesh *m, unsigned to, unsigned type, uint32_t id, const struct iovec *iov,
              int iovcnt, int fd)
{
    struct mesh_peer *p;
    struct mesh_hdr h = {.type = type, .id = id};
    struct mesh_out *o;
    size_t len = sizeof(h);
    char *at;
    int rc;

    if (m == NULL || to >= m->count || m->peers[to].fd < 0)
        return -EINVAL;
    p = &m->peers[to];
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > m->max_msg)
        return -EMSGSIZE;
    o = malloc(sizeof(*o) + len);
    if (o == NULL)
        return -ENOMEM;
    o->next = NULL;
    o->fd = -1;
    o->len = len;
    at = o->data;
    memcpy(at, &h, sizeof(h));
    at += sizeof(h);
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len == 0)
            continue; /* its base may be NULL (no pending bytes) */
        memcpy(at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    if (fd >= 0) {
        /*
         * A descriptor goes now, behind what is queued for this peer (order
         * is kept per peer): queuing it would cost a dup and a close.
         */
        if (p->head && !p->want_write)
            flush(p);
        if (p->head == NULL) {
            struct iovec one = {.iov_base = o->data, .iov_len = o->len};
            rc = send_iov(p, &one, 1, fd);
            if (rc == 0 || (rc != -EAGAIN && rc != -ENOBUFS)) {
                free(o);
                return rc;
            }
        }
        if ((o->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            rc = -errno;
            free(o);
            return rc;
        }
    }
    if (p->tail)
        p->tail->next = o;
    else
        p->head = o;
    p->tail = o;
    if (fd >= 0)
        peer_poll(p);
    else if (m->prepare_open)
        uv_prepare_start(&m->prepare, on_prepare);
    return 0;
}

int mesh_reply(struct mesh *m, unsigned to, uint32_t id, int more, const struct iovec *iov,
               int iovcnt)
{
    struct iovec all[8];
    uint32_t flags = more ? MESH_MORE : 0;

    if (iovcnt > 7)
        return -EINVAL;
    all[0] = (struct iovec){.iov_base = &flags, .iov_len = sizeof(flags)};
    for (int i = 0; i < iovcnt; i++)
        all[i + 1] = iov[i];
    return mesh_send(m, to, MESH_REPLY, id, all, iovcnt + 1, -1);
}

int mesh_call(struct mesh *m, unsigned to, unsigned type, const struct iovec *iov, int iovcnt,
              mesh_reply_cb cb, void *arg)
{
    struct mesh_callrec *c;
    int rc;

    if (m == NULL)
        return -EINVAL;
    if (++m->next_id == 0)
        m->next_id = 1;
    rc = mesh_send(m, to, type, m->next_id, iov, iovcnt, -1);
    if (rc < 0)
        return rc;
    c = xcalloc(1, sizeof(*c));
    c->id = m->next_id;
    c->to = to;
    c->type = type;
    c->cb = cb;
    c->arg = arg;
    c->deadline = util_now_ms() + MESH_CALL_TIMEOUT_MS;
    c->prev = m->last;
    if (m->last)
        m->last->next = c;
    else
        m->first = c;
    m->last = c;
    strmap_put(&m->calls, (const char *)&c->id, sizeof(c->id), c);
    if (m->first == c)
        rearm(m);
    return 0;
}

/* ---- gathers ---------------------------------------------------------- */

struct mesh_gather {
    struct mesh *m;
    mesh_part_cb on_part;
    mesh_done_cb on_done;
    void *arg;
    unsigned holds;
};

/* One call of a gather: the mesh's callback argument. */
struct gather_call {
    struct mesh_gather *g;
    void *arg;
};

struct mesh_gather *mesh_gather_new(struct mesh *m, mesh_part_cb on_part, mesh_done_cb on_done,
                                    void *arg)
{
    struct mesh_gather *g = xcalloc(1, sizeof(*g));

    g->m = m;
    g->on_part = on_part;
    g->on_done = on_done;
    g->arg = arg;
    g->holds = 1;
    return g;
}

void mesh_gather_hold(struct mesh_gather *g)
{
    g->holds++;
}

void mesh_gather_release(struct mesh_gather *g)
{
    if (--g->holds > 0)
        return;
    g->on_done(g->arg);
    free(g);
}

static void on_gather_reply(void *arg, unsigned from, const char *p, size_t len, int status)
{
    struct gather_call *gc = arg;
    struct mesh_gather *g = gc->g;

    g->on_part(g->arg, gc->arg, from, p, len, status);
    if (status == MESH_MORE)
        return;
    free(gc);
    mesh_gather_release(g);
}

int mesh_gather_call(struct mesh_gather *g, unsigned to, unsigned type, const struct iovec *iov,
                     int iovcnt, void *call_arg)
{
    struct gather_call *gc;
    int rc;

    if (g->m == NULL)
        return -EINVAL;
    gc = xmalloc(sizeof(*gc));
    gc->g = g;
    gc->arg = call_arg;
    g->holds++;
    rc = mesh_call(g->m, to, type, iov, iovcnt, on_gather_reply, gc);
    if (rc < 0) {
        g->holds--;
        free(gc);
    }
    return rc;
}

void mesh_gather_all(struct mesh_gather *g, unsigned type, const struct iovec *iov, int iovcnt)
{
    for (unsigned i = 0; g->m && i < g->m->count; i++)
        if (g->m->peers[i].fd >= 0)
            mesh_gather_call(g, i, type, iov, iovcnt, NULL);
}

/* ---- receiving -------------------------------------------------------- */

static void dispatch(struct mesh *m, unsigned from, const struct mesh_hdr *h, const char *p,
                     size_t len, int fd);

/* A MESH_BATCH packet: its frames, each dispatched as if read alone (see BATCH_MAX). */
static void dispatch_batch(struct mesh *m, unsigned from, const char *p, size_t len)
{
    while (len > 0) {
        uint32_t flen;
        struct mesh_hdr h;
        size_t step;

        memcpy(&flen, p, sizeof(flen));
        step = len >= FRAME_PREFIX ? FRAME_PREFIX + (size_t)flen + FRAME_PAD((size_t)flen) : 0;
        if (step == 0 || flen < sizeof(h) || step > len) {
            LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"malformed batch\" bytes=%zu", from,
                len);
            return;
        }
        memcpy(&h, p + FRAME_PREFIX, sizeof(h));
        if (h.type == MESH_BATCH)
            LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"type %u inside a batch\"", from,
                h.type);
        else
            dispatch(m, from, &h, p + FRAME_PREFIX + sizeof(h), flen - sizeof(h), -1);
        p += step;
        len -= step;
    }
}

static void dispatch(struct mesh *m, unsigned from, const struct mesh_hdr *h, const char *p,
                     size_t len, int fd)
{
    if (h->type == MESH_REPLY) {
        struct mesh_callrec *c = strmap_get(&m->calls, (const char *)&h->id, sizeof(h->id));
        uint32_t flags = 0;
        if (len >= sizeof(flags))
            memcpy(&flags, p, sizeof(flags));
        /* A reply to a call that timed out or was reset meanwhile is dropped. */
        if (c && c->to == from && len >= sizeof(flags)) {
            if (flags & MESH_MORE)
                c->cb(c->arg, from, p + sizeof(flags), len - sizeof(flags), MESH_MORE);
            else
                finish_call(m, c, p + sizeof(flags), len - sizeof(flags), 0);
        }
    } else if (h->type == MESH_RESET) {
        LOG(LOG_INFO, worker_peer_reset, "peer=%u", from);
        fail_calls_to(m, from, -ECONNRESET);
        if (m->on_reset)
            m->on_reset(m->reset_arg, from);
    } else if (h->type == MESH_BATCH) {
        if (fd < 0) {
            dispatch_batch(m, from, p, len);
            return;
        }
        LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"a batch with a descriptor\"", from);
    } else if (h->type < MESH_TYPE_MAX && m->on[h->type].fn) {
        /* The descriptor is the handler's now. */
        m->on[h->type].fn(m->on[h->type].arg, from, h->id, p, len, fd);
        return;
    } else {
        LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"unknown message type %u\"", from, h->type);
    }
    if (fd >= 0)
        close(fd);
}

static void read_peer(struct mesh_peer *p)
{
    struct mesh *m = p->m;

    for (int i = 0; i < READ_BURST; i++) {
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * 4)];
        } ctl;
        struct iovec iov = {.iov_base = m->rbuf, .iov_len = m->rbuf_len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        struct mesh_hdr h;
        int fd = -1;
        ssize_t n = recvmsg(p->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                char q[96];
                LOG(LOG_ERROR, handoff_failed, "from=%u reason=%s", p->index,
                    log_q(q, sizeof(q), strerror(errno)));
            }
            return;
        }
        if (n == 0)
            return; /* the supervisor keeps both ends: only an empty message reads as 0 */
        for (struct cmsghdr *ch = CMSG_FIRSTHDR(&msg); ch; ch = CMSG_NXTHDR(&msg, ch)) {
            if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
                continue;
            size_t nfd = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t k = 0; k < nfd; k++) {
                int got;
                memcpy(&got, CMSG_DATA(ch) + k * sizeof(int), sizeof(int));
                if (fd < 0)
                    fd = got;
                else
                    close(got);
            }
        }
        if ((msg.msg_flags & MSG_CTRUNC) && fd < 0) {
            /* The kernel closed the socket it could not give us: its client sees a reset. */
            LOG(LOG_ERROR, handoff_failed,
                "from=%u reason=\"a handed-off connection was lost: out of descriptors\"", p->index);
            continue;
        }
        if ((msg.msg_flags & MSG_TRUNC) || (size_t)n < sizeof(h)) {
            LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"message truncated\" bytes=%zd",
                p->index, n);
            if (fd >= 0)
                close(fd);
            continue;
        }
        memcpy(&h, m->rbuf, sizeof(h));
        dispatch(m, p->index, &h, m->rbuf + sizeof(h), (size_t)n - sizeof(h), fd);
    }
}

static void on_peer(uv_poll_t *handle, int status, int events)
{
    struct mesh_peer *p = handle->data;

    if (status < 0)
        return;
    if (events & UV_WRITABLE)
        flush(p);
    if (events & UV_READABLE)
        read_peer(p);
}

static void peer_poll(struct mesh_peer *p)
{
    int want = p->head != NULL;

    if (!p->poll_open || want == p->want_write)
        return;
    p->want_write = want;
    uv_poll_start(&p->poll, UV_READABLE | (want ? UV_WRITABLE : 0), on_peer);
}

/* ---- set-up ----------------------------------------------------------- */

int mesh_init(struct mesh **out, uv_loop_t *loop, const struct worker_ctx *wk, size_t max_request,
              struct metrics *metrics, char *err, size_t errlen)
{
    struct mesh *m;

    (void)err;
    (void)errlen;
    m = xcalloc(1, sizeof(*m));
    m->count = wk->count;
    m->metrics = metrics;
    m->peers = xcalloc(wk->count, sizeof(*m->peers));
    /* Room for the largest request a client may send, handed off with what follows it. */
    m->rbuf_len = max_request + 4096;
    if (m->rbuf_len < 64 * 1024)
        m->rbuf_len = 64 * 1024;
    m->rbuf = xmalloc(m->rbuf_len);
    m->max_msg = m->rbuf_len;
    strmap_init(&m->calls);
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->timer_open = 1;
    uv_prepare_init(loop, &m->prepare);
    m->prepare.data = m;
    m->prepare_open = 1;
    for (unsigned i = 0; i < wk->count; i++) {
        struct mesh_peer *p = &m->peers[i];
        p->m = m;
        p->index = i;
        p->fd = wk->mesh_fd[i];
        if (p->fd < 0)
            continue;
        {
            /* A message must fit the send buffer whole (less the kernel's 32-byte margin). */
            int sndbuf = 0;
            socklen_t sl = sizeof(sndbuf);
            if (getsockopt(p->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl) == 0 && sndbuf > 4096 &&
                (size_t)sndbuf - 1024 < m->max_msg)
                m->max_msg = (size_t)sndbuf - 1024;
        }
        uv_poll_init(loop, &p->poll, p->fd);
        p->poll.data = p;
        p->poll_open = 1;
        uv_poll_start(&p->poll, UV_READABLE, on_peer);
    }
    *out = m;
    return 0;
}

void mesh_stop(struct mesh *m)
{
    if (m == NULL)
        return;
    fail_calls_to(m, MESH_NOBODY, -ECANCELED);
    /* What the last turn queued (replies, counts moving) still goes, as far as it can now. */
    if (m->prepare_open) {
        on_prepare(&m->prepare);
        uv_close((uv_handle_t *)&m->prepare, NULL);
        m->prepare_open = 0;
    }
    for (unsigned i = 0; i < m->count; i++) {
        struct mesh_peer *p = &m->peers[i];
        if (p->poll_open && !uv_is_closing((uv_handle_t *)&p->poll))
            uv_close((uv_handle_t *)&p->poll, NULL);
    }
    if (m->timer_open && !uv_is_closing((uv_handle_t *)&m->timer))
        uv_close((uv_handle_t *)&m->timer, NULL);
    m->timer_open = 0;
}

void mesh_free(struct mesh *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->count; i++) {
        struct mesh_out *o = m->peers[i].head, *next;
        for (; o; o = next) {
            next = o->next;
            if (o->fd >= 0)
                close(o->fd);
            free(o);
        }
    }
    strmap_free(&m->calls);
    free(m->peers);
    free(m->rbuf);
    free(m);
}
