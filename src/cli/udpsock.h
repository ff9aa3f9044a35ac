/*
 * udpsock.h — the client's UDP socket, shared by `nudge listen` (datagrams
 * and acks) and `nudge doctor` (the test datagram): which address family to
 * use, binding, and the server's UDP address as this socket can reach it.
 */
#ifndef NUDGE_CLI_UDPSOCK_H
#define NUDGE_CLI_UDPSOCK_H

#include <stddef.h>
#include <sys/socket.h>

struct httpc;

/*
 * The address family to receive the server's datagrams on: that of the
 * open connection to it (datagrams go to the address the server saw the
 * request come from), else that of its host's first address, else AF_INET.
 */
int udpsock_family(const struct httpc *http);

/*
 * Opens a non-blocking UDP socket of 'family' bound to the wildcard
 * address and 'port' (0: any free port). Returns the fd with *bound_port
 * set, or a negative errno with one line in err ("cannot bind UDP port
 * 40001: Address already in use").
 */
int udpsock_bind(int family, unsigned port, unsigned *bound_port, char *err, size_t errlen);

/*
 * Parses the server's "HOST:PORT" ("198.51.100.1:8080", "[::1]:8080", as
 * the answers to POST /v1/udp and /v1/udp/test give it) into an address a
 * socket of 'family' can send to: an IPv4 address is IPv4-mapped for an
 * IPv6 socket. Returns 0, or -1 when it is not such an address (or has
 * port 0).
 */
int udpsock_peer(int family, const char *s, struct sockaddr_storage *out, socklen_t *outlen);

#endif
