/*
 * udpsock.c — the client's UDP socket (see udpsock.h). A few system calls
 * at start; nothing here is on a per-datagram path.
 */
#include "cli/udpsock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/httpc.h"
#include "common/util.h"

int udpsock_family(const struct httpc *http)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    struct addrinfo hints, *res = NULL;
    int family = AF_INET;

    if (http->fd >= 0 && getpeername(http->fd, (struct sockaddr *)&ss, &len) == 0)
        return ss.ss_family == AF_INET6 ? AF_INET6 : AF_INET;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(http->host, http->port, &hints, &res) == 0 && res != NULL)
        family = res->ai_family == AF_INET6 ? AF_INET6 : AF_INET;
    if (res != NULL)
        freeaddrinfo(res);
    return family;
}

int udpsock_bind(int family, unsigned port, unsigned *bound_port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, rc;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons((uint16_t)port);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons((uint16_t)port);
        len = sizeof(*a);
    }
    fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open a UDP socket: %s", strerror(errno));
        return rc;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot bind UDP port %u: %s", port, strerror(errno));
        goto fail;
    }
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        rc = -errno;
        snprintf(err, errlen, "getsockname on the UDP socket: %s", strerror(errno));
        goto fail;
    }
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
fail:
    close(fd);
    return rc;
}

int udpsock_peer(int family, const char *s, struct sockaddr_storage *out, socklen_t *outlen)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss, mapped;
    char err[128];

    if (s == NULL || util_parse_addr(s, &ss, err, sizeof(err)) < 0)
        return -1;
    if ((ss.ss_family == AF_INET && v4->sin_port == 0) ||
        (ss.ss_family == AF_INET6 && v6->sin6_port == 0))
        return -1;
    if (ss.ss_family == family) {
        *out = ss;
        *outlen = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        return 0;
    }
    if (family != AF_INET6 || ss.ss_family != AF_INET)
        return -1; /* an IPv6 server cannot be reached from an IPv4 socket */
    /* ::ffff:a.b.c.d, RFC 4291 2.5.5.2: how an IPv6 socket speaks to an IPv4 peer. */
    memset(&mapped, 0, sizeof(mapped));
    mapped.sin6_family = AF_INET6;
    mapped.sin6_port = v4->sin_port;
    mapped.sin6_addr.s6_addr[10] = 0xff;
    mapped.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&mapped.sin6_addr.s6_addr[12], &v4->sin_addr, 4);
    memset(out, 0, sizeof(*out));
    memcpy(out, &mapped, sizeof(mapped));
    *outlen = sizeof(mapped);
    return 0;
}
