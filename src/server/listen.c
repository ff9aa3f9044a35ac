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
#include "server/conn.h"
#include "server/server.h"

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

static void on_fd_retry(uv_timer_t *t)
{
    resume_accepting(t->data);
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
    ip = strmap_get(&s->per_ip, key, klen);
    if (ip == NULL) {
        ip = xcalloc(1, sizeof(*ip));
        memcpy(ip->key, key, klen);
        ip->klen = (uint32_t)klen;
        strmap_put(&s->per_ip, ip->key, klen, ip);
    }
    ip->n++;
    *over = ip->n > s->cfg->max_per_ip;
    return ip;
}

void listen_conn_closed(struct server *s, struct ip_count *ip)
{
    if (ip && --ip->n == 0) {
        strmap_del(&s->per_ip, ip->key, ip->klen);
        free(ip);
    }
    if (s->listen_paused && s->metrics.connections < s->max_conns &&
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

        if (s->metrics.connections >= s->max_conns) {
            pause_accepting(s, "max_connections");
            return;
        }
        fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
    int one = 1, fd;

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
