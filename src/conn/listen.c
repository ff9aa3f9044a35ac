/* listen.c — accepting connections under the global limits; see listen.h. */
#include "conn/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "net/sockopt.h"
#include "worker/mesh.h"
#include "worker/worker.h"

_Static_assert(LISTEN_MAX == CONFIG_LISTEN_MAX, "one socket per [server] listen address");
_Static_assert(LISTEN_MAX == sizeof(((struct worker_ctx *)0)->listen_fd) / sizeof(int),
               "a worker is given one socket per address");

/* Backlog for listen(): room for a burst of devices reconnecting after a network blip. */
#define LISTEN_BACKLOG 4096
/*
 * Descriptors kept back from max_connections: the listener, the store's
 * files, log, signals, the loop's own. Without a reserve, accept would take
 * the last descriptor and the store could not open its journal.
 */
#define FD_RESERVE 64
/* Accepts per readiness event: bounded so a flood cannot starve held pings' timers. */
#define ACCEPT_BURST 128
/* After EMFILE/ENFILE, look again after this long. */
#define FD_RETRY_MS 1000
/* At the shared max_connections, look again after this long (other workers' closes). */
#define SHARED_RETRY_MS 100
/* What a client over max_per_ip is told to wait before it tries again. */
#define OVER_IP_RETRY_S 30

/*
 * Per-address connection count (only kept when max_per_ip is set). With
 * workers, held[w] says how many worker w holds, so the counts of a worker
 * that died can be taken back out. A worker holding a connection from an
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

/* The payload of LISTEN_MSG_IP_MOVE: a connection from 'key' moved from 'from' to 'to' (MESH_NOBODY: it closed). */
struct ip_move {
    uint16_t from, to;
    uint8_t klen;
    uint8_t pad[3];
    uint8_t key[16];
};

static void on_readable(uv_poll_t *p, int status, int events);

static void pause_accepting(struct listener *l, const char *why)
{
    if (l->paused)
        return;
    l->paused = 1;
    for (unsigned i = 0; i < l->nsocks; i++)
        uv_poll_stop(&l->socks[i].poll);
    LOG(LOG_WARN, listen_paused, "reason=%s connections=%llu limit=%u", why,
        (unsigned long long)l->metrics->connections, l->max_conns);
}

static void resume_accepting(struct listener *l)
{
    if (!l->paused || l->stopped || l->conns->stopping)
        return;
    l->paused = 0;
    for (unsigned i = 0; i < l->nsocks; i++)
        uv_poll_start(&l->socks[i].poll, UV_READABLE, on_readable);
    LOG(LOG_INFO, listen_resumed, "connections=%llu limit=%u",
        (unsigned long long)l->metrics->connections, l->max_conns);
}

static int shared_full(struct listener *l)
{
    return l->wk && atomic_load(&l->wk->shared->connections) >= l->cfg->max_connections;
}

/* At our own ceiling, counting the sockets other workers are handing us. */
static int local_full(struct listener *l)
{
    if (l->wk)
        return atomic_load(&l->wk->shared->held_by[l->wk->index]) >= l->max_conns;
    return l->metrics->connections >= l->max_conns;
}

static void on_fd_retry(uv_timer_t *t)
{
    struct listener *l = t->data;

    if (shared_full(l)) {
        uv_timer_start(&l->retry, on_fd_retry, SHARED_RETRY_MS, 0);
        return;
    }
    resume_accepting(l);
}

static size_t ip_size(const struct listener *l)
{
    return sizeof(struct ip_count) + (l->wk ? l->wk->count * sizeof(uint32_t) : 0);
}

static struct ip_count *ip_lookup(struct listener *l, const char *key, size_t klen, int create)
{
    struct ip_count *ip = strmap_get(&l->per_ip, key, klen);

    if (ip == NULL && create) {
        ip = xcalloc(1, ip_size(l));
        memcpy(ip->key, key, klen);
        ip->klen = (uint16_t)klen;
        strmap_put(&l->per_ip, ip->key, klen, ip);
    }
    return ip;
}

static void ip_drop_if_empty(struct listener *l, struct ip_count *ip)
{
    if (ip->n == 0) {
        strmap_del(&l->per_ip, ip->key, ip->klen);
        free(ip);
    }
}

static unsigned self(const struct listener *l)
{
    return l->wk ? l->wk->index : 0;
}

/* One connection of 'ip' left holder 'from' for 'to' (MESH_NOBODY: closed). */
static void ip_move_local(struct listener *l, struct ip_count *ip, unsigned from, unsigned to)
{
    if (l->wk) {
        if (from < l->wk->count && ip->held[from] > 0)
            ip->held[from]--;
        if (to < l->wk->count)
            ip->held[to]++;
    }
    if (to == MESH_NOBODY && ip->n > 0)
        ip->n--;
    ip_drop_if_empty(l, ip);
}

/* Moves one of a foreign reference's connections at the worker counting it. */
static void ip_move_remote(struct listener *l, struct ip_count *ref, unsigned to)
{
    struct ip_move mv = {.from = (uint16_t)self(l), .to = (uint16_t)to, .klen = (uint8_t)ref->klen};
    struct iovec iov = {.iov_base = &mv, .iov_len = sizeof(mv)};
    unsigned owner = ref->owner - 1u;

    memcpy(mv.key, ref->key, ref->klen);
    if (owner == self(l)) {
        struct ip_count *ip = ip_lookup(l, ref->key, ref->klen, 0);
        if (ip)
            ip_move_local(l, ip, self(l), to);
        return;
    }
    if (mesh_send(l->mesh, owner, LISTEN_MSG_IP_MOVE, 0, &iov, 1, -1) < 0)
        LOG(LOG_ERROR, handoff_failed, "to=%u reason=\"could not release an address count\"", owner);
}

/* LISTEN_MSG_IP_MOVE: one of the connections we count changed holder. */
static void on_ip_move(void *arg, unsigned from, uint32_t id, const char *p, size_t len, int fd)
{
    struct listener *l = arg;
    struct ip_move mv;
    struct ip_count *ip;

    (void)from;
    (void)id;
    if (fd >= 0)
        close(fd);
    if (len != sizeof(mv))
        return;
    memcpy(&mv, p, sizeof(mv));
    if (mv.klen != 4 && mv.klen != 16)
        return;
    ip = ip_lookup(l, (const char *)mv.key, mv.klen, 0);
    if (ip)
        ip_move_local(l, ip, mv.from, mv.to);
}

/* A worker restarted: drop the per-address counts of the connections it held. */
static void on_peer_reset(void *arg, unsigned peer)
{
    struct listener *l = arg;
    uint32_t pos = 0, n = 0, k = 0;
    const char *key;
    void *val;
    struct ip_count **gone;

    if (l->wk == NULL || peer >= l->wk->count)
        return;
    while (strmap_next(&l->per_ip, &pos, &key, &val))
        n++;
    gone = xcalloc(n ? n : 1, sizeof(*gone));
    pos = 0;
    while (strmap_next(&l->per_ip, &pos, &key, &val)) {
        struct ip_count *ip = val;
        ip->n -= ip->held[peer] < ip->n ? ip->held[peer] : ip->n;
        ip->held[peer] = 0;
        if (ip->n == 0)
            gone[k++] = ip;
    }
    for (uint32_t i = 0; i < k; i++)
        ip_drop_if_empty(l, gone[i]);
    free(gone);
}

int listen_reserve(struct listener *l, unsigned to)
{
    /*
     * The owner's part of the count is reserved before the socket travels,
     * so sockets on their way are counted too. At its descriptor ceiling
     * (every worker has the same one) it could not take the socket.
     */
    if (atomic_fetch_add(&l->wk->shared->held_by[to], 1) >= l->max_conns) {
        atomic_fetch_sub(&l->wk->shared->held_by[to], 1);
        return -1;
    }
    return 0;
}

void listen_unreserve(struct listener *l, unsigned to)
{
    atomic_fetch_sub(&l->wk->shared->held_by[to], 1);
}

void listen_ref_of(struct listener *l, const void *counted, struct listen_ref *ref)
{
    const struct ip_count *ip = counted;

    memset(ref, 0, sizeof(*ref));
    ref->owner = MESH_NOBODY;
    if (ip == NULL)
        return;
    ref->owner = (uint16_t)(ip->owner ? ip->owner - 1u : self(l));
    ref->klen = (uint8_t)ip->klen;
    memcpy(ref->key, ip->key, ip->klen);
}

void listen_moved(struct listener *l, void *counted, unsigned to)
{
    struct ip_count *ip = counted;

    if (ip == NULL)
        return;
    if (ip->owner == 0) {
        ip_move_local(l, ip, self(l), to);
        return;
    }
    ip_move_remote(l, ip, to);
    free(ip);
}

void *listen_adopt(struct listener *l, const struct listen_ref *ref)
{
    struct ip_count *ip;

    /* held_by was counted for us by the sender (listen_reserve). */
    if (ref->owner == MESH_NOBODY || (ref->klen != 4 && ref->klen != 16))
        return NULL;
    if (ref->owner == self(l)) {
        ip = ip_lookup(l, (const char *)ref->key, ref->klen, 1);
        if (ip->n == 0)
            ip->n = 1; /* its count was dropped by a reset meanwhile: count it again */
        return ip;
    }
    ip = xcalloc(1, sizeof(*ip));
    ip->owner = (uint16_t)(ref->owner + 1u);
    ip->klen = ref->klen;
    memcpy(ip->key, ref->key, ref->klen);
    return ip;
}

static struct ip_count *ip_enter(struct listener *l, const struct sockaddr_storage *ss, int *over)
{
    const char *key;
    size_t klen;
    struct ip_count *ip;

    *over = 0;
    if (l->cfg->max_per_ip == 0)
        return NULL;
    if (ss->ss_family == AF_INET6) {
        key = (const char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        klen = 16;
    } else {
        key = (const char *)&((const struct sockaddr_in *)ss)->sin_addr;
        klen = 4;
    }
    ip = ip_lookup(l, key, klen, 1);
    ip->n++;
    if (l->wk)
        ip->held[self(l)]++;
    *over = ip->n > l->cfg->max_per_ip;
    return ip;
}

/* A connection ended (conn.h on_closed): its counts go down, accepting may resume. */
static void on_conn_closed(void *arg, void *counted, int handed_off)
{
    struct listener *l = arg;
    struct ip_count *ip = counted;

    if (l->wk) {
        atomic_fetch_sub(&l->wk->shared->held_by[self(l)], 1);
        if (!handed_off)
            atomic_fetch_sub(&l->wk->shared->connections, 1);
    }
    if (ip && ip->owner) {
        ip_move_remote(l, ip, MESH_NOBODY);
        free(ip);
    } else if (ip) {
        ip_move_local(l, ip, self(l), MESH_NOBODY);
    }
    if (l->paused && !local_full(l) && !shared_full(l) &&
        !uv_is_active((uv_handle_t *)&l->retry))
        resume_accepting(l);
}

/* A client over max_per_ip: answered 429 and closed. */
static void refuse_over_ip(struct listener *l, struct conn *c, const struct ip_count *ip)
{
    char peer[64];
    struct http_error e;

    l->metrics->connections_refused++;
    if (ip->n == l->cfg->max_per_ip + 1) /* once per address going over, not per client */
        LOG(LOG_INFO, conn_refused, "peer=%s limit=%u", conn_peer(c, peer, sizeof(peer)),
            l->cfg->max_per_ip);
    http_error_set(&e, 429, "too-many-connections", NULL);
    http_error_num(&e, "limit", l->cfg->max_per_ip);
    http_error_header(&e, "Retry-After: %d", OVER_IP_RETRY_S);
    conn_reject(c, &e);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    struct listen_sock *ls = p->data;
    struct listener *l = ls->l;
    char q[128];

    (void)events;
    if (status < 0) {
        LOG(LOG_WARN, accept_error, "error=%s", log_q(q, sizeof(q), uv_strerror(status)));
        return;
    }
    for (int i = 0; i < ACCEPT_BURST && !l->paused; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        struct ip_count *ip;
        struct conn *c;
        int over, fd;

        if (local_full(l)) {
            pause_accepting(l, "max_connections");
            return;
        }
        /* With workers, reserve a place under the shared limit first, so it stays exact. */
        if (l->wk && atomic_fetch_add(&l->wk->shared->connections, 1) >= l->cfg->max_connections) {
            atomic_fetch_sub(&l->wk->shared->connections, 1);
            pause_accepting(l, "max_connections");
            uv_timer_start(&l->retry, on_fd_retry, SHARED_RETRY_MS, 0);
            return;
        }
        fd = accept4(ls->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && l->wk)
            atomic_fetch_sub(&l->wk->shared->connections, 1);
        if (fd >= 0 && l->wk)
            atomic_fetch_add(&l->wk->shared->held_by[self(l)], 1);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                pause_accepting(l, errno == EMFILE ? "\"out of descriptors (EMFILE)\""
                                                   : "\"out of kernel resources\"");
                uv_timer_start(&l->retry, on_fd_retry, FD_RETRY_MS, 0);
                return;
            }
            LOG(LOG_WARN, accept_error, "error=%s", log_q(q, sizeof(q), strerror(errno)));
            return;
        }
        ip = ip_enter(l, &ss, &over);
        c = conn_open(l->conns, fd, ip);
        if (c && (ls->flags & CONFIG_LISTEN_TLS) && conn_start_tls(c) < 0)
            continue;
        /* On TLS the refusal cannot be answered before a handshake: it is a close. */
        if (c && over)
            refuse_over_ip(l, c, ip);
    }
}

/* The connection limit in force: the configured one, within the descriptor limit. */
static unsigned effective_max(const struct config *c)
{
    struct rlimit rl;
    unsigned max = c->max_connections;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur > FD_RESERVE && rl.rlim_cur - FD_RESERVE < max) {
        max = (unsigned)(rl.rlim_cur - FD_RESERVE);
        LOG(LOG_WARN, listen_paused,
            "reason=\"max_connections is above the descriptor limit\" configured=%u "
            "rlimit_nofile=%llu limit=%u",
            c->max_connections, (unsigned long long)rl.rlim_cur, max);
    }
    return max;
}

int listen_bind(const char *addr, int reuseport, const struct config *cfg, char *err,
                size_t errlen)
{
    struct sockaddr_storage ss;
    char why[160];
    int one = 1, fd, rc;

    if (util_parse_addr(addr, &ss, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "[server] listen %s: %s", addr, why);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "[server] listen %s: cannot make a TCP socket: %s", addr,
                 strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        snprintf(err, errlen, "[server] listen %s: SO_REUSEPORT: %s", addr, strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                      : sizeof(struct sockaddr_in)) < 0) {
        listen_bind_error((struct sockaddr *)&ss, errno, err, errlen);
        goto fail;
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        listen_bind_error((struct sockaddr *)&ss, errno, err, errlen);
        goto fail;
    }
    if ((rc = net_set_listener(fd, cfg)) < 0) {
        snprintf(err, errlen, "[server] listen %s: cannot set TCP options: %s", addr,
                 strerror(-rc));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

int listen_start(struct listener *l, uv_loop_t *loop, const struct config *cfg,
                 struct conn_loop *conns, struct metrics *metrics, const struct worker_ctx *wk,
                 struct mesh *mesh, char *err, size_t errlen)
{
    char one[CONFIG_STR_MAX];
    size_t n = 0;

    memset(l, 0, sizeof(*l));
    l->cfg = cfg;
    l->conns = conns;
    l->metrics = metrics;
    l->wk = wk;
    l->mesh = mesh;
    strmap_init(&l->per_ip);
    for (unsigned i = 0; i < LISTEN_MAX; i++)
        l->socks[i].fd = -1;
    for (unsigned i = 0, flags; config_listen_entry(cfg, i, one, sizeof(one), &flags) == 0 &&
                                i < LISTEN_MAX; i++) {
        struct listen_sock *ls = &l->socks[i];
        struct sockaddr_storage bound;
        socklen_t len = sizeof(bound);

        ls->flags = flags;
        /* With workers the supervisor made them (SO_REUSEPORT, one per worker): supervisor.c. */
        int fd = wk ? wk->listen_fd[i] : listen_bind(one, 0, cfg, err, errlen);
        if (fd < 0)
            goto fail;
        ls->l = l;
        ls->fd = fd;
        l->nsocks = i + 1;
        getsockname(fd, (struct sockaddr *)&bound, &len);
        util_format_addr((struct sockaddr *)&bound, ls->addr, sizeof(ls->addr));
        n += (size_t)snprintf(l->addr + n, sizeof(l->addr) - n, "%s%s", i ? "," : "", ls->addr);
    }
    l->max_conns = effective_max(cfg);
    conn_loop_on_closed(conns, on_conn_closed, l);
    mesh_on(mesh, LISTEN_MSG_IP_MOVE, on_ip_move, l);
    mesh_on_reset(mesh, on_peer_reset, l);
    uv_timer_init(loop, &l->retry);
    l->retry.data = l;
    for (unsigned i = 0; i < l->nsocks; i++) {
        uv_poll_init(loop, &l->socks[i].poll, l->socks[i].fd);
        l->socks[i].poll.data = &l->socks[i];
        uv_poll_start(&l->socks[i].poll, UV_READABLE, on_readable);
    }
    return 0;
fail:
    for (unsigned i = 0; i < l->nsocks; i++)
        close(l->socks[i].fd);
    l->nsocks = 0;
    return -1;
}

void listen_bind_error(const struct sockaddr *addr, int errnum, char *err, size_t errlen)
{
    char a[64];

    util_format_addr(addr, a, sizeof(a));
    snprintf(err, errlen, "[server] listen: cannot listen on TCP %s: %s%s", a, strerror(errnum),
             errnum == EADDRINUSE ? " (another program listens on this TCP port; set [server] "
                                    "listen or --listen to a free one)"
             : errnum == EACCES   ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE; "
                                    "set [server] listen or --listen)"
             : errnum == EADDRNOTAVAIL ? " (no interface has this address; set [server] "
                                         "listen or --listen)"
                                       : "");
}

int listen_probe_free(const struct sockaddr_storage *addr, char *err, size_t errlen)
{
    socklen_t alen =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    uint16_t port = addr->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
                                                : ((const struct sockaddr_in *)addr)->sin_port;
    int one = 1, fd, rc = 0;

    if (port == 0)
        return 0;
    fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;   /* the real socket() reports it */
    /* SO_REUSEADDR as the listeners have it: a closed connection in TIME_WAIT does not count. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)addr, alen) < 0) {
        listen_bind_error((const struct sockaddr *)addr, errno, err, errlen);
        rc = -1;
    }
    close(fd);
    return rc;
}

static void on_poll_closed(uv_handle_t *h)
{
    struct listen_sock *ls = h->data;

    close(ls->fd);
    ls->fd = -1;
}

void listen_stop(struct listener *l)
{
    if (l->stopped)
        return;
    l->stopped = 1;
    l->paused = 1;
    for (unsigned i = 0; i < l->nsocks; i++)
        uv_close((uv_handle_t *)&l->socks[i].poll, on_poll_closed);
    if (l->nsocks > 0 && !uv_is_closing((uv_handle_t *)&l->retry))
        uv_close((uv_handle_t *)&l->retry, NULL);
}

void listen_free(struct listener *l)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while (strmap_next(&l->per_ip, &pos, &key, &val))
        free(val);
    strmap_free(&l->per_ip);
}
