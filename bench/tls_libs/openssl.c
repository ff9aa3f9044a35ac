/*
 * openssl.c: OpenSSL 3.0 (libssl-dev) for the TLS library benchmark
 * (tlsb.h). Server: the certificate chain and key given, the one version
 * asked for, stateless tickets unless --no-tickets (then OpenSSL's internal
 * server session cache keeps each session), SSL_MODE_RELEASE_BUFFERS on
 * --release-buffers. Client: no verification (the bench measures the server).
 */
#include "tlsb.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

static SSL_CTX *sctx, *cctx;

static int setup(const struct tlsb_opts *o)
{
    int v = o->tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    sctx = SSL_CTX_new(TLS_server_method());
    cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx)
        return -1;
    SSL_CTX_set_min_proto_version(sctx, v);
    SSL_CTX_set_max_proto_version(sctx, v);
    SSL_CTX_set_min_proto_version(cctx, v);
    SSL_CTX_set_max_proto_version(cctx, v);
    if (SSL_CTX_use_certificate_chain_file(sctx, o->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(sctx, o->key, SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    if (o->release_buffers)
        SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
    if (o->no_tickets)
        SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET);
    /* Large enough that no session is evicted during a run of N. */
    SSL_CTX_sess_set_cache_size(sctx, 1 << 20);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    return 0;
}

static void *server_new(int fd)
{
    SSL *s = SSL_new(sctx);
    SSL_set_fd(s, fd);
    SSL_set_accept_state(s);
    return s;
}

static void *client_new(int fd, void *session)
{
    SSL *c = SSL_new(cctx);
    SSL_set_fd(c, fd);
    if (session)
        SSL_set_session(c, session);
    SSL_set_connect_state(c);
    return c;
}

static int step(void *p)
{
    SSL *s = p;
    int r = SSL_do_handshake(s);
    if (r == 1)
        return 1;
    int e = SSL_get_error(s, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_print_errors_fp(stderr);
    return -1;
}

static void client_pump(void *c)
{
    char buf[256];
    SSL_read(c, buf, sizeof buf);   /* WANT_READ after the tickets */
    ERR_clear_error();
}

static void *client_session(void *c) { return SSL_get1_session(c); }
static void session_free(void *s) { SSL_SESSION_free(s); }
static int server_resumed(void *s) { return SSL_session_reused(s); }
/* As after a clean close: SSL_free of a connection not shut down marks its
 * session not resumable, and a returning client's ticket would be refused. */
static void ssl_free(void *s)
{
    SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(s);
}

int main(int argc, char **argv)
{
    static const struct tlsb_lib lib = {
        "openssl", setup, server_new, client_new, step, step, client_pump,
        client_session, session_free, server_resumed, ssl_free, ssl_free,
    };
    return tlsb_main(&lib, argc, argv);
}
