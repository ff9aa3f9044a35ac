/*
 * socket.c — the UDP socket: bind, reads, sends and the ICMP error queue;
 * see socket.h.
 *
 * libuv's uv_poll reports a socket with a pending error (POLLERR) as status
 * UV_EBADF and stops watching it; on_io drains the error queue and starts
 * watching again, which is all that POLLERR means here.
 */
#include "udp/socket.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "udp/datagram.h"

/* Datagrams read per readiness event: bounded so a flood cannot starve the loop. */
#define READ_BURST 64

socklen_t udp_sockaddr_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* The ICMP error in words, or NULL when it does not mean "this address is unreachable". */
static const char *unreachable_reason(const struct sock_extended_err *ee)
{
    if (ee->ee_origin == SO_EE_ORIGIN_ICMP && ee->ee_type == ICMP_DEST_UNREACH) {
        switch (ee->ee_code) {
        case ICMP_NET_UNREACH: return "ICMP network unreachable";
        case ICMP_HOST_UNREACH: return "ICMP host unreachable";
        case ICMP_PORT_UNREACH: return "ICMP port unreachable";
        case ICMP_NET_ANO:
        case ICMP_HOST_ANO:
        case ICMP_PKT_FILTERED: return "ICMP administratively prohibited";
        default: return "ICMP destination unreachable";
        }
    }
    if (ee->ee_origin == SO_EE_ORIGIN_ICMP6 && ee->ee_type == ICMP6_DST_UNREACH) {
        switch (ee->ee_code) {
        case ICMP6_DST_UNREACH_NOROUTE: return "ICMPv6 no route";
        case ICMP6_DST_UNREACH_ADMIN: return "ICMPv6 administratively prohibited";
        case ICMP6_DST_UNREACH_ADDR: return "ICMPv6 address unreachable";
        case ICMP6_DST_UNREACH_NOPORT: return "ICMPv6 port unreachable";
        default: return "ICMPv6 destination unreachable";
        }
    }
    return NULL;
}

/*
 * Reads the socket's error queue: each entry is an ICMP error for a
 * datagram we sent, with its destination (msg_name) and its first bytes.
 */
static void drain_errors(struct udp_socket *us)
{
    for (int i = 0; i < READ_BURST; i++) {
        uint8_t data[DGRAM_MAX];
        union {
            char buf[512];
            struct cmsghdr align;
        } ctrl;
        struct sockaddr_storage dst;
        struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
        struct msghdr msg = {
            .msg_name = &dst,
            .msg_namelen = sizeof(dst),
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = ctrl.buf,
            .msg_controllen = sizeof(ctrl.buf),
        };
        const struct sock_extended_err *ee = NULL;
        const char *why;
        ssize_t n = recvmsg(us->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);

        if (n < 0)
            return;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
            if ((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR))
                ee = (const struct sock_extended_err *)CMSG_DATA(cm);
        if (ee == NULL || (why = unreachable_reason(ee)) == NULL)
            continue;
        us->metrics->udp_unreachable++;
        if (msg.msg_namelen == 0)
            dst.ss_family = AF_UNSPEC;
        us->on_unreachable(us->arg, data, (size_t)n, (struct sockaddr *)&dst, why);
    }
}

int udp_socket_send(struct udp_socket *us, const uint8_t *buf, size_t len,
                    const struct sockaddr *to)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        ssize_t n = sendto(us->fd, buf, len, MSG_DONTWAIT, to, udp_sockaddr_len(to));
        char a[64], q[128];
        if (n == (ssize_t)len)
            return 0;
        if (n < 0 && attempt == 0 &&
            (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH)) {
            /* The kernel reports a queued ICMP error on the next call: read it, try again. */
            drain_errors(us);
            continue;
        }
        us->metrics->udp_send_errors++;
        LOG(LOG_WARN, udp_send_failed, "to=%s error=%s", util_format_addr(to, a, sizeof(a)),
            log_q(q, sizeof(q), n < 0 ? strerror(errno) : "short write"));
        return -1;
    }
    return -1;
}

static void read_datagrams(struct udp_socket *us)
{
    for (int i = 0; i < READ_BURST; i++) {
        uint8_t buf[DGRAM_MAX + 1];
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(us->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &flen);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            /* A pending ICMP error is also reported here, once: read it from the queue. */
            drain_errors(us);
            continue;
        }
        us->on_datagram(us->arg, buf, (size_t)n, (struct sockaddr *)&from);
    }
}

static void on_io(uv_poll_t *p, int status, int events)
{
    struct udp_socket *us = p->data;

    if (status < 0) {
        /* POLLERR: ICMP errors are queued. libuv stopped the handle; drain, then watch again. */
        drain_errors(us);
        read_datagrams(us);
        if (!us->closing)
            uv_poll_start(p, UV_READABLE, on_io);
        return;
    }
    if (events & UV_READABLE)
        read_datagrams(us);
}

int udp_socket_open(struct udp_socket *us, uv_loop_t *loop, const struct config *cfg,
                    unsigned port_offset, struct metrics *metrics, udp_datagram_fn on_datagram,
                    udp_unreachable_fn on_unreachable, void *arg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int on = 1, rc;

    memset(us, 0, sizeof(*us));
    us->fd = -1;
    us->metrics = metrics;
    us->on_datagram = on_datagram;
    us->on_unreachable = on_unreachable;
    us->arg = arg;
    if (util_parse_addr(cfg->udp_listen, &ss, err, errlen) < 0)
        return -1;
    /*
     * With workers, worker i binds [udp] listen's port + i: each sends its own
     * users' datagrams from its own socket, so acks (sent back to where a
     * datagram came from) and ICMP errors reach the owner without a detour.
     */
    if (port_offset > 0) {
        uint16_t *port = ss.ss_family == AF_INET6 ? &((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : &((struct sockaddr_in *)&ss)->sin_port;
        if (*port != 0) {
            unsigned p = ntohs(*port) + port_offset;
            if (p > 65535) {
                snprintf(err, errlen, "[udp] listen %s: port + worker %u is past 65535",
                         cfg->udp_listen, port_offset);
                return -1;
            }
            *port = htons((uint16_t)p);
        }
    }
    us->family = ss.ss_family;
    us->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (us->fd < 0) {
        snprintf(err, errlen, "[udp] listen %s: cannot make a UDP socket: %s", cfg->udp_listen,
                 strerror(errno));
        return -1;
    }
    /* ICMP errors for what we send are queued for us (see the header). */
    if (ss.ss_family == AF_INET6) {
        rc = setsockopt(us->fd, SOL_IPV6, IPV6_RECVERR, &on, sizeof(on));
        /* IPv4-mapped peers of a dual-stack socket report through IP_RECVERR. */
        if (rc == 0)
            setsockopt(us->fd, SOL_IP, IP_RECVERR, &on, sizeof(on));
    } else {
        rc = setsockopt(us->fd, SOL_IP, IP_RECVERR, &on, sizeof(on));
    }
    if (rc < 0) {
        snprintf(err, errlen, "[udp] listen %s: cannot ask for ICMP errors (IP_RECVERR): %s",
                 cfg->udp_listen, strerror(errno));
        return -1;
    }
    /*
     * Acks arrive while the loop is busy sending a fan-out (thousands of
     * notifies in one turn), and the kernel charges each ~50-byte ack about
     * 800 bytes of buffer (its skb): the default 208 KiB holds ~256, and the
     * rest would be dropped (costing a resend each). SO_RCVBUFFORCE passes
     * net.core.rmem_max when nudged may (root); otherwise SO_RCVBUF gets
     * what rmem_max allows.
     */
    {
        int want = (int)cfg->udp_receive_buffer;
        if (setsockopt(us->fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) < 0)
            setsockopt(us->fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    }
    if (bind(us->fd, (struct sockaddr *)&ss, udp_sockaddr_len((struct sockaddr *)&ss)) < 0) {
        int e = errno;
        char a[64], which[320] = "";

        /* Name the port that failed: worker i's is the base port + i, not the one configured. */
        util_format_addr((struct sockaddr *)&ss, a, sizeof(a));
        if (port_offset > 0)
            snprintf(which, sizeof(which), " (worker %u binds [udp] listen %s + %u)",
                     port_offset, cfg->udp_listen, port_offset);
        snprintf(err, errlen, "[udp] listen: cannot bind UDP %s%s: %s%s", a, which, strerror(e),
                 e == EADDRINUSE ? "; another program uses this UDP port: set [udp] listen or "
                                   "--udp-listen to a free port (workers use it and the ports "
                                   "after it, one each)"
                 : e == EACCES ? "; ports below 1024 need root or CAP_NET_BIND_SERVICE: set "
                                 "[udp] listen or --udp-listen"
                 : e == EADDRNOTAVAIL ? "; no interface has this address: set [udp] listen or "
                                        "--udp-listen"
                                      : "");
        return -1;
    }
    getsockname(us->fd, (struct sockaddr *)&us->bound, &len);
    util_format_addr((struct sockaddr *)&us->bound, us->addr, sizeof(us->addr));
    uv_poll_init(loop, &us->poll, us->fd);
    us->poll.data = us;
    us->poll_open = 1;
    uv_poll_start(&us->poll, UV_READABLE, on_io);
    return 0;
}

void udp_socket_stop(struct udp_socket *us)
{
    if (us->closing)
        return;
    us->closing = 1;
    if (us->poll_open)
        uv_close((uv_handle_t *)&us->poll, NULL);
}

void udp_socket_close(struct udp_socket *us)
{
    if (us->fd >= 0)
        close(us->fd);
    us->fd = -1;
}

int udp_socket_fit(const struct udp_socket *us, struct sockaddr_storage *ss)
{
    if (us->family == ss->ss_family)
        return 0;
    if (us->family == AF_INET6 && ss->ss_family == AF_INET) {
        /* A dual-stack socket reaches IPv4 peers at their IPv4-mapped address. */
        struct sockaddr_in in = *(struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        memset(in6, 0, sizeof(*in6));
        in6->sin6_family = AF_INET6;
        in6->sin6_port = in.sin_port;
        in6->sin6_addr.s6_addr[10] = 0xff;
        in6->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&in6->sin6_addr.s6_addr[12], &in.sin_addr, 4);
        return 0;
    }
    if (us->family == AF_INET && ss->ss_family == AF_INET6) {
        struct sockaddr_in6 in6 = *(struct sockaddr_in6 *)ss;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(&in6.sin6_addr, mapped, 12) == 0) {
            struct sockaddr_in *in = (struct sockaddr_in *)ss;
            memset(in, 0, sizeof(*in));
            in->sin_family = AF_INET;
            in->sin_port = in6.sin6_port;
            memcpy(&in->sin_addr, &in6.sin6_addr.s6_addr[12], 4);
            return 0;
        }
    }
    return -1;
}
