/*
 * wolfssl.c: wolfSSL 5.5 as Debian builds it (libwolfssl-dev) for the TLS
 * library benchmark (tlsb.h). Server: the one version asked for, its
 * default session tickets (TLS 1.3 tickets; TLS 1.2 tickets when the client
 * asks, with wolfSSL's built-in ticket key callback). wolfSSL's server
 * session cache is a static array in the library, not malloc'd: it is not
 * in the live-bytes column, only in the RSS one as its pages are touched
 * (the two agree within 100 B a connection here, so it adds nothing that matters).
 */
#include "tlsb.h"

#include <stdio.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

static WOLFSSL_CTX *sctx, *cctx;
static int tls13;

static int setup(const struct tlsb_opts *o)
{
    tls13 = o->tls13;
    wolfSSL_Init();
    sctx = wolfSSL_CTX_new(o->tls13 ? wolfTLSv1_3_server_method() : wolfTLSv1_2_server_method());
    cctx = wolfSSL_CTX_new(o->tls13 ? wolfTLSv1_3_client_method() : wolfTLSv1_2_client_method());
    if (!sctx || !cctx)
        return -1;
    if (wolfSSL_CTX_use_certificate_chain_file(sctx, o->cert) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_use_PrivateKey_file(sctx, o->key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
        return -1;
    wolfSSL_CTX_set_verify(cctx, WOLFSSL_VERIFY_NONE, NULL);
    return 0;
}

static void *server_new(int fd)
{
    WOLFSSL *s = wolfSSL_new(sctx);
    wolfSSL_set_fd(s, fd);
    return s;
}

static void *client_new(int fd, void *session)
{
    WOLFSSL *c = wolfSSL_new(cctx);
    wolfSSL_set_fd(c, fd);
    if (!tls13)
        wolfSSL_UseSessionTicket(c);
    if (session)
        wolfSSL_set_session(c, session);
    return c;
}

static int result(WOLFSSL *s, int r)
{
    if (r == WOLFSSL_SUCCESS)
        return 1;
    int e = wolfSSL_get_error(s, r);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
        return 0;
    char buf[80];
    fprintf(stderr, "wolfssl: %s\n", wolfSSL_ERR_error_string(e, buf));
    return -1;
}

static int server_step(void *s) { return result(s, wolfSSL_accept(s)); }
static int client_step(void *c) { return result(c, wolfSSL_connect(c)); }

static void client_pump(void *c)
{
    char buf[256];
    wolfSSL_read(c, buf, sizeof buf);   /* WANT_READ after the tickets */
}

static void *client_session(void *c) { return wolfSSL_get1_session(c); }
static void session_free(void *s) { wolfSSL_SESSION_free(s); }
static int server_resumed(void *s) { return wolfSSL_session_reused(s); }
static void ssl_free(void *s) { wolfSSL_free(s); }

int main(int argc, char **argv)
{
    static const struct tlsb_lib lib = {
        "wolfssl", setup, server_new, client_new, server_step, client_step, client_pump,
        client_session, session_free, server_resumed, ssl_free, ssl_free,
    };
    return tlsb_main(&lib, argc, argv);
}
