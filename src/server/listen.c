/* listen.c — accepting connections under the global limits; see listen.h. */
#include "server/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "net/sockopt.h"
#include "server/conn.h"
#include "server/server.h"
#include "worker/mesh.h"
#include "worker/mesh_handlers.h"
#include "worker/worker.h"

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

static void on_readable(uv_poll_t *p, int status, int events);

static void pause_accepting(struct server *s, const char *why)
{
    if (s->listen_paused)
        return;
    s->listen_paused = 1;
    uv_poll_stop(&s->listen_poll);
    LOG(LOG_WARN, listen_paused, "reason=%s connections=%llu limit=%u", why,
        (unsigned long long)s->metrics.connections, s->max_conns);
}

static void resume_accepting(struct server *s)
{
    if (!s->listen_paused || s->stopping)
        return;
    s->listen_paused = 0;
    uv_poll_start(&s->listen_poll, UV_READABLE, on_readable);
    LOG(LOG_INFO, listen_resumed, "connections=%llu limit=%u",
        (unsigned long long)s->metrics.connections, s->max_conns);
}

static int shared_full(struct server *s)
{
    return s->wk && atomic_load(&s->wk->shared->connections) >= s->cfg->max_connections;
}

/* At our own ceiling, counting the sockets other workers are handing us. */
static int local_full(struct server *s)
{
    if (s->wk)
        return atomic_load(&s->wk->shared->held_by[s->wk->index]) >= s->max_conns;
    return s->metrics.connections >= s->max_conns;
}

static void on_fd_retry(uv_timer_t *t)
{
    struct server *s = t->data;

    if (shared_full(s)) {
        uv_timer_start(&s->listen_retry, on_fd_retry, SHARED_RETRY_MS, 0);
        return;
    }
    resume_accepting(s);
}

static size_t ip_size(const struct server *s)
{
    return sizeof(struct ip_count) + (s->wk ? s->wk->count * sizeof(uint32_t) : 0);
}

static struct ip_count *ip_lookup(struct server *s, const char *key, size_t klen, int create)
{
    struct ip_count *ip = strmap_get(&s->per_ip, key, klen);

    if (ip == NULL && create) {
        ip = xcalloc(1, ip_size(s));
        memcpy(ip->key, key, klen);
        ip->klen = (uint16_t)klen;
        strmap_put(&s->per_ip, ip->key, klen, ip);
    }
    return ip;
}

static void ip_drop_if_empty(struct server *s, struct ip_count *ip)
{
    if (ip->n == 0) {
        strmap_del(&s->per_ip, ip->key, ip->klen);
        free(ip);
    }
}

static unsigned self(const struct server *s)
{
    return s->wk ? s->wk->index : 0;
}

/* One connection of 'ip' left holder 'from' for 'to' (MESH_NOBODY: closed). */
static void ip_move_local(struct server *s, struct ip_count *ip, unsigned from, unsigned to)
{
    if (s->wk) {
        if (from < s->wk->count && ip->held[from] > 0)
            ip->held[from]--;
        if (to < s->wk->count)
            ip->held[to]++;
    }
    if (to == MESH_NOBODY && ip->n > 0)
        ip->n--;
    ip_drop_if_empty(s, ip);
}

/* Moves one of a foreign reference's connections at the worker counting it. */
static void ip_move_remote(struct server *s, struct ip_count *ref, unsigned to)
{
    struct mesh_ip_move mv = {.from = (uint16_t)self(s), .to = (uint16_t)to, .klen = (uint8_t)ref->klen};
    struct iovec iov = {.iov_base = &mv, .iov_len = sizeof(mv)};
    unsigned owner = ref->owner - 1u;

    memcpy(mv.key, ref->key, ref->klen);
    if (owner == self(s)) {
        struct ip_count *ip = ip_lookup(s, ref->key, ref->klen, 0);
        if (ip)
            ip_move_local(s, ip, self(s), to);
        return;
    }
    if (mesh_send(s, owner, MESH_IP_MOVE, 0, &iov, 1, -1) < 0)
        LOG(LOG_ERROR, handoff_failed, "to=%u reason=\"could not release an address count\"", owner);
}

void listen_ip_move(struct server *s, const struct mesh_ip_move *mv)
{
    struct ip_count *ip;

    if (mv->klen != 4 && mv->klen != 16)
        return;
    ip = ip_lookup(s, (const char *)mv->key, mv->klen, 0);
    if (ip)
        ip_move_local(s, ip, mv->from, mv->to);
}

void listen_peer_reset(struct server *s, unsigned peer)
{
    uint32_t pos = 0, n = 0, k = 0;
    const char *key;
    void *val;
    struct ip_count **gone;

    if (s->wk == NULL || peer >= s->wk->count)
        return;
    while (strmap_next(&s->per_ip, &pos, &key, &val))
        n++;
    gone = xcalloc(n ? n : 1, sizeof(*gone));
    pos = 0;
    while (strmap_next(&s->per_ip, &pos, &key, &val)) {
        struct ip_count *ip = val;
        ip->n -= ip->held[peer] < ip->n ? ip->held[peer] : ip->n;
        ip->held[peer] = 0;
        if (ip->n == 0)
            gone[k++] = ip;
    }
    for (uint32_t i = 0; i < k; i++)
        ip_drop_if_empty(s, gone[i]);
    free(gone);
}

void listen_ip_handoff(struct server *s, struct ip_count *ip, unsigned to)
{
    if (ip == NULL)
        return;
    if (ip->owner == 0) {
        ip_move_local(s, ip, self(s), to);
        return;
    }
    ip_move_remote(s, ip, to);
    free(ip);
}

struct ip_count *listen_ip_adopt(struct server *s, const struct mesh_handoff *h)
{
    struct ip_count *ip;

    /* held_by was counted for us by the sender (conn.c, hand_off). */
    if (h->ip_owner == MESH_NOBODY || (h->klen != 4 && h->klen != 16))
        return NULL;
    if (h->ip_owner == self(s)) {
        ip = ip_lookup(s, (const char *)h->key, h->klen, 1);
        if (ip->n == 0)
            ip->n = 1; /* its count was dropped by a reset meanwhile: count it again */
        return ip;
    }
    ip = xcalloc(1, sizeof(*ip));
    ip->owner = (uint16_t)(h->ip_owner + 1u);
    ip->klen = h->klen;
    memcpy(ip->key, h->key, h->klen);
    return ip;
}

static struct ip_count *ip_enter(struct server *s, const struct sockaddr_storage *ss, int *over)
{
    const char *key;
    size_t klen;
    struct ip_count *ip;

    *over = 0;
    if (s->cfg->max_per_ip == 0)
        return NULL;
    if (ss->ss_family == AF_INET6) {
        key = (const char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        klen = 16;
    } else {
        key = (const char *)&((const struct sockaddr_in *)ss)->sin_addr;
        klen = 4;
    }
    ip = ip_lookup(s, key, klen, 1);
    ip->n++;
    if (s->wk)
        ip->held[self(s)]++;
    *over = ip->n > s->cfg->max_per_ip;
    return ip;
}

void listen_conn_closed(struct server *s, struct ip_count *ip, int handed_off)
{
    if (s->wk) {
        atomic_fetch_sub(&s->wk->shared->held_by[self(s)], 1);
        if (!handed_off)
            atomic_fetch_sub(&s->wk->shared->connections, 1);
    }
    if (ip && ip->owner) {
        ip_move_remote(s, ip, MESH_NOBODY);
        free(ip);
    } else if (ip) {
        ip_move_local(s, ip, self(s), MESH_NOBODY);
    }
    if (s->listen_paused && !local_full(s) && !shared_full(s) &&
        !uv_is_active((uv_handle_t *)&s->listen_retry))
        resume_accepting(s);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    struct server *s = p->data;
    char q[128];

    (void)events;
    if (status < 0) {
        LOG(LOG_WARN, accept_error, "error=%s", log_q(q, sizeof(q), uv_strerror(status)));
        return;
    }
    for (int i = 0; i < ACCEPT_BURST && !s->listen_paused; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        struct ip_count *ip;
        int over, fd;

        if (local_full(s)) {
            pause_accepting(s, "max_connections");
            return;
        }
        /* With workers, reserve a place under the shared limit first, so it stays exact. */
        if (s->wk && atomic_fetch_add(&s->wk->shared->connections, 1) >= s->cfg->max_connections) {
            atomic_fetch_sub(&s->wk->shared->connections, 1);
            pause_accepting(s, "max_connections");
            uv_timer_start(&s->listen_retry, on_fd_retry, SHARED_RETRY_MS, 0);
            return;
        }
        fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && s->wk)
            atomic_fetch_sub(&s->wk->shared->connections, 1);
        if (fd >= 0 && s->wk)
            atomic_fetch_add(&s->wk->shared->held_by[self(s)], 1);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                pause_accepting(s, errno == EMFILE ? "\"out of descriptors (EMFILE)\""
                                                   : "\"out of kernel resources\"");
                uv_timer_start(&s->listen_retry, on_fd_retry, FD_RETRY_MS, 0);
                return;
            }
            LOG(LOG_WARN, accept_error, "error=%s", log_q(q, sizeof(q), strerror(errno)));
            return;
        }
        ip = ip_enter(s, &ss, &over);
        conn_accept_fd(s, fd, ip, over);
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

int listen_start(struct server *s, char *err, size_t errlen)
{
    struct sockaddr_storage addr, bound;
    socklen_t len = sizeof(bound);
    int one = 1, fd, rc;

    if (s->wk) {
        /* The supervisor made it (SO_REUSEPORT, one per worker): see supervisor.c. */
        fd = s->wk->listen_fd;
        goto bound;
    }
    if (util_parse_addr(s->cfg->listen, &addr, err, errlen) < 0)
        return -1;
    fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr,
             addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                        : sizeof(struct sockaddr_in)) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", s->cfg->listen, strerror(errno));
        close(fd);
        return -1;
    }
    if ((rc = net_set_listener(fd, s->cfg)) < 0) {
        snprintf(err, errlen, "cannot set TCP options on %s: %s", s->cfg->listen, strerror(-rc));
        close(fd);
        return -1;
    }
bound:
    getsockname(fd, (struct sockaddr *)&bound, &len);
    util_format_addr((struct sockaddr *)&bound, s->addr, sizeof(s->addr));
    s->listen_fd = fd;
    s->max_conns = effective_max(s->cfg);
    strmap_init(&s->per_ip);
    uv_poll_init(s->loop, &s->listen_poll, fd);
    s->listen_poll.data = s;
    uv_timer_init(s->loop, &s->listen_retry);
    s->listen_retry.data = s;
    uv_poll_start(&s->listen_poll, UV_READABLE, on_readable);
    return 0;
}

static void on_poll_closed(uv_handle_t *h)
{
    struct server *s = h->data;

    close(s->listen_fd);
    s->listen_fd = -1;
}

void listen_stop(struct server *s)
{
    if (s->listen_fd < 0 || uv_is_closing((uv_handle_t *)&s->listen_poll))
        return;
    s->listen_paused = 1;
    uv_close((uv_handle_t *)&s->listen_poll, on_poll_closed);
    if (!uv_is_closing((uv_handle_t *)&s->listen_retry))
        uv_close((uv_handle_t *)&s->listen_retry, NULL);
}
