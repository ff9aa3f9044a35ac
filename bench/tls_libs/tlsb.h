/*
 * tlsb.h: the measuring driver that bench/tls_libs/{openssl,wolfssl,gnutls}.c
 * share (bench/README.md, "TLS libraries"). Each library file fills one
 * struct tlsb_lib; tlsb.c owns main(): options, the socketpairs, the
 * in-process handshakes (client and server driven in turn on non-blocking
 * AF_UNIX socketpairs) and the two measurements:
 *   mem: live malloc bytes (mallinfo2) of N idle server-side connections
 *        after their handshakes, the clients freed;
 *   hs:  the server side's thread CPU time per full and per resumed handshake.
 * Keeping the driver in one place is what makes the three libraries' rows
 * comparable: same sockets, same order, same clock.
 */
#ifndef TLSB_H
#define TLSB_H

struct tlsb_opts {
    const char *cert, *key;
    int tls13;            /* 1: TLS 1.3 only, 0: TLS 1.2 only */
    int release_buffers;  /* OpenSSL SSL_MODE_RELEASE_BUFFERS */
    int no_tickets;       /* OpenSSL SSL_OP_NO_TICKET (stateful session cache instead) */
};

struct tlsb_lib {
    const char *name;
    int (*setup)(const struct tlsb_opts *o);
    void *(*server_new)(int fd);
    void *(*client_new)(int fd, void *session);
    /* 1 done, 0 wants I/O, -1 failed */
    int (*server_step)(void *s);
    int (*client_step)(void *c);
    /* after the handshake: read what the server sent (TLS 1.3 tickets) */
    void (*client_pump)(void *c);
    void *(*client_session)(void *c);   /* a resumable session, or NULL */
    void (*session_free)(void *sess);
    int (*server_resumed)(void *s);
    void (*server_free)(void *s);
    void (*client_free)(void *c);
};

int tlsb_main(const struct tlsb_lib *lib, int argc, char **argv);

#endif
