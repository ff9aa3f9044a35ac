/*
 * socket.h — the one UDP socket a worker sends its datagrams from and
 * reads acks on, with ICMP errors for what it sent reported per datagram.
 *
 * One shared socket, not one connected socket per registration. A
 * connected UDP socket would get its ICMP errors as a plain ECONNREFUSED,
 * but it costs a descriptor per registration, and descriptors are the scarce
 * resource of a push server (this machine: 20,000 per process). The shared
 * socket sets IP_RECVERR (and IPV6_RECVERR): the kernel then queues every
 * ICMP error for a datagram we sent on the socket's error queue, with the
 * destination it was sent to and the start of the datagram itself. Reading
 * that queue (MSG_ERRQUEUE) tells exactly which datagram's address is
 * unreachable, at no cost per registration.
 *
 * This file knows sockets, not registrations: what a datagram means is the
 * caller's (udp.c), told through two callbacks.
 */
#ifndef NUDGE_UDP_SOCKET_H
#define NUDGE_UDP_SOCKET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct config;
struct metrics;

/* A datagram arrived (at most 'len' bytes were read; longer ones have len past the buffer). */
typedef void (*udp_datagram_fn)(void *arg, const uint8_t *buf, size_t len,
                                const struct sockaddr *from);

/*
 * An ICMP error said 'dst' is unreachable for the datagram that began with
 * data[0..len); 'why' is the error in words.
 */
typedef void (*udp_unreachable_fn)(void *arg, const uint8_t *data, size_t len,
                                   const struct sockaddr *dst, const char *why);

struct udp_socket {
    int fd;
    int family;                 /* AF_INET or AF_INET6 */
    uv_poll_t poll;
    int poll_open, closing;
    struct sockaddr_storage bound;
    char addr[64];              /* the bound address, for logs and answers */
    struct metrics *metrics;
    udp_datagram_fn on_datagram;
    udp_unreachable_fn on_unreachable;
    void *arg;
};

/*
 * Opens the socket on [udp] listen, its port moved up by 'port_offset' (the
 * worker's index: each worker its own port), with ICMP error reporting and
 * cfg's receive buffer, and starts reading. 0, or -1 with err set.
 */
int udp_socket_open(struct udp_socket *us, uv_loop_t *loop, const struct config *cfg,
                    unsigned port_offset, struct metrics *metrics, udp_datagram_fn on_datagram,
                    udp_unreachable_fn on_unreachable, void *arg, char *err, size_t errlen);

/* Stops reading (at stop). */
void udp_socket_stop(struct udp_socket *us);

/* Closes the descriptor (after the loop ended). */
void udp_socket_close(struct udp_socket *us);

/*
 * Sends buf[0..len) to 'to'. An error pending on the socket is drained
 * (reported through on_unreachable) and the send tried once more. 0, or -1
 * after counting and logging the failure.
 */
int udp_socket_send(struct udp_socket *us, const uint8_t *buf, size_t len,
                    const struct sockaddr *to);

/*
 * Fits 'ss' to the socket's family (an IPv4 address becomes IPv4-mapped on
 * an IPv6 socket, and back). 0, or -1 when the socket cannot reach it.
 */
int udp_socket_fit(const struct udp_socket *us, struct sockaddr_storage *ss);

/* The length of a sockaddr of sa's family. */
socklen_t udp_sockaddr_len(const struct sockaddr *sa);

#endif
