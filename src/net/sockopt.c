/* sockopt.c — see sockopt.h. */
#include "net/sockopt.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

#include "common/config.h"

static int set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

static int set_keepalive(int fd, const struct config *c)
{
    int rc;

    if ((rc = set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1)) < 0 ||
        (rc = set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)c->keepalive_idle)) < 0 ||
        (rc = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, (int)c->keepalive_interval)) < 0 ||
        (rc = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, (int)c->keepalive_count)) < 0)
        return rc;
    /*
     * TCP_USER_TIMEOUT (ms) also overrides keepalive's own count when both are
     * set (tcp(7)), so it must not be longer than the keepalive budget, or a
     * dead peer would outlive keepalive_count. Unset, it matches that budget.
     */
    return set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (int)(net_user_timeout(c) * 1000));
}

int net_set_listener(int fd, const struct config *c)
{
    /* Answers are single small writes: send them now, not after Nagle's delay. */
    int rc = set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);

    return rc < 0 ? rc : set_keepalive(fd, c);
}

unsigned net_user_timeout(const struct config *c)
{
    if (c->user_timeout)
        return c->user_timeout;
    return c->keepalive_idle + c->keepalive_interval * c->keepalive_count;
}

static const char *state_name(unsigned st)
{
    static const char *const names[] = {
        "?",         "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
        "TIME_WAIT", "CLOSE",       "CLOSE_WAIT", "LAST_ACK", "LISTEN",    "CLOSING",
    };
    return st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

int net_tcp_alive(int fd, unsigned probe_ms, unsigned stale_ms, char *why, size_t whylen)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -errno;
    if (ti.tcpi_state != TCP_ESTABLISHED) {
        snprintf(why, whylen, "socket state %s", state_name(ti.tcpi_state));
        return 0;
    }
    /*
     * A probe is "out" for one round trip even on a healthy path, so a probe
     * counts only when the peer has also been silent past probe_ms (the
     * caller passes keepalive idle + interval: one whole interval unanswered).
     */
    if (ti.tcpi_probes > 0 && ti.tcpi_last_ack_recv > probe_ms) {
        snprintf(why, whylen, "%u keepalive probe%s unanswered", (unsigned)ti.tcpi_probes,
                 ti.tcpi_probes == 1 ? "" : "s");
        return 0;
    }
    /* Data in flight that the peer has not acknowledged for a long time: it is gone. */
    if (ti.tcpi_unacked > 0 && ti.tcpi_last_ack_recv > stale_ms) {
        snprintf(why, whylen, "data unacknowledged for %u s", ti.tcpi_last_ack_recv / 1000);
        return 0;
    }
    return 1;
}
