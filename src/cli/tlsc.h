/*
 * tlsc.h — the client side of TLS for nudge's subcommands (https:// URLs),
 * on OpenSSL's libssl.
 *
 * One process talks to one server, so the configuration is process-wide:
 * one SSL_CTX (trust store, verification on or off, TLS 1.2 minimum, ALPN
 * http/1.1) and the last session the server gave us, offered again on the
 * next connection so a reconnection (ping --loop, doctor) resumes instead
 * of paying a full handshake. A connection is one SSL object over the
 * caller's non-blocking socket; every wait is bounded by the caller's
 * deadline, as in httpc.
 *
 * Verification is on by default: the chain against the system store
 * (/etc/ssl/certs) or --cacert, and the certificate must name the URL's
 * host (DNS name, or IP address for a literal). A failure is one sentence
 * naming what failed and the certificate's subject, and the process
 * remembers it (tlsc_refused) so main() can exit with CLI_EXIT_TLS.
 */
#ifndef NUDGE_CLI_TLSC_H
#define NUDGE_CLI_TLSC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

/* What a handshake refused for a certificate returns (an errno, so strerror still reads). */
#define TLSC_EVERIFY EKEYREJECTED

/*
 * Builds the process-wide context: trust 'cacert' (a PEM file of CA or
 * self-signed certificates) instead of the system store when not NULL; with
 * 'insecure', check nothing (and warn once on stderr). Returns 0, or -1 with
 * the reason in err. Called once, before the first tlsc_connect.
 */
int tlsc_setup(const char *cacert, int insecure, char *err, size_t errlen);

/* Whether tlsc_setup has run. */
int tlsc_ready(void);

/*
 * Runs the handshake on the connected non-blocking socket 'fd' for 'host'
 * (SNI for names, never for IP literals; host name check for both) before
 * 'deadline' (util_now_ms time); 'authority' names the server in messages.
 * Returns 0 with *out set, or a negative errno with one sentence in err:
 * -TLSC_EVERIFY when the certificate was refused, -ETIMEDOUT, -EPROTO for
 * any other handshake failure.
 */
int tlsc_connect(int fd, const char *host, const char *authority, uint64_t deadline, SSL **out,
                 char *err, size_t errlen);

/*
 * The same in pieces, for a caller with its own poll() loop (probe's many
 * sockets): tlsc_new prepares the connection on 'fd' (NULL with err set);
 * each tlsc_handshake_step returns 1 when done, 0 to be called again once
 * fd is ready for *want (POLLIN or POLLOUT), or a negative errno with err
 * set as tlsc_connect says. Free with tlsc_close.
 */
SSL *tlsc_new(int fd, const char *host, char *err, size_t errlen);
int tlsc_handshake_step(SSL *ssl, const char *host, const char *authority, short *want,
                        char *err, size_t errlen);

/*
 * One read or write, never waiting: the bytes moved (> 0), 0 at the end of
 * the stream (read), -EAGAIN with *want set to what to poll for, or another
 * negative errno. A read may have more bytes than the socket shows: read
 * until -EAGAIN.
 */
ssize_t tlsc_read_step(SSL *ssl, char *buf, size_t len, short *want);
ssize_t tlsc_write_step(SSL *ssl, const char *buf, size_t len, short *want);

/*
 * Reads what is there (at most len bytes) before the deadline. Returns 0
 * with *got > 0, 0 with *got == 0 at the end of the stream, or a negative
 * errno (-ETIMEDOUT, -ECONNRESET, -EPROTO).
 */
int tlsc_recv(SSL *ssl, int fd, char *buf, size_t len, uint64_t deadline, size_t *got);

/* Writes all of buf before the deadline. Returns 0 or a negative errno. */
int tlsc_send_all(SSL *ssl, int fd, const char *buf, size_t len, uint64_t deadline);

/* Sends close_notify if it fits in the socket at once, and frees ssl (the caller closes fd). */
void tlsc_close(SSL *ssl);

/* Whether a certificate was refused in this process (main's exit code). */
int tlsc_refused(void);

/* The session kept for resumption (NULL: the server gave none); doctor reports it. */
SSL_SESSION *tlsc_session(void);

/*
 * The certificate's subject, one line (RFC 2253: "CN=localhost,O=Example"),
 * and a time as "2027-12-07 10:00:00 UTC".
 */
void tlsc_subject(X509 *x, char *out, size_t outlen);
void tlsc_issuer(X509 *x, char *out, size_t outlen);
void tlsc_time(const ASN1_TIME *t, char *out, size_t outlen);

#endif
