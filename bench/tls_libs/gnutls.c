/*
 * gnutls.c: GnuTLS 3.7 (libgnutls28-dev) for the TLS library benchmark
 * (tlsb.h). Server: the one version asked for (priority string NORMAL with
 * only that version), session tickets with a key generated at start
 * (gnutls_session_ticket_enable_server; GnuTLS has no server session cache
 * of its own, so without tickets a server resumes nothing).
 */
#include "tlsb.h"

#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>

static gnutls_certificate_credentials_t scred, ccred;
static gnutls_priority_t prio;
static gnutls_datum_t ticket_key;

static int setup(const struct tlsb_opts *o)
{
    const char *err = NULL;
    if (gnutls_global_init() < 0 ||
        gnutls_certificate_allocate_credentials(&scred) < 0 ||
        gnutls_certificate_allocate_credentials(&ccred) < 0)
        return -1;
    if (gnutls_certificate_set_x509_key_file(scred, o->cert, o->key, GNUTLS_X509_FMT_PEM) < 0)
        return -1;
    if (gnutls_priority_init(&prio, o->tls13 ? "NORMAL:-VERS-ALL:+VERS-TLS1.3"
                                             : "NORMAL:-VERS-ALL:+VERS-TLS1.2", &err) < 0) {
        fprintf(stderr, "gnutls: priority at %s\n", err);
        return -1;
    }
    if (gnutls_session_ticket_key_generate(&ticket_key) < 0)
        return -1;
    return 0;
}

static void *session_new(int fd, unsigned flags, gnutls_certificate_credentials_t cred)
{
    gnutls_session_t s;
    if (gnutls_init(&s, flags | GNUTLS_NONBLOCK) < 0)
        return NULL;
    gnutls_priority_set(s, prio);
    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_transport_set_int(s, fd);
    return s;
}

static void *server_new(int fd)
{
    gnutls_session_t s = session_new(fd, GNUTLS_SERVER, scred);
    if (s)
        gnutls_session_ticket_enable_server(s, &ticket_key);
    return s;
}

static void *client_new(int fd, void *session)
{
    gnutls_session_t c = session_new(fd, GNUTLS_CLIENT, ccred);
    gnutls_datum_t *d = session;
    if (c && d)
        gnutls_session_set_data(c, d->data, d->size);
    return c;
}

static int step(void *s)
{
    int r = gnutls_handshake(s);
    if (r == GNUTLS_E_SUCCESS)
        return 1;
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
        return 0;
    fprintf(stderr, "gnutls: %s\n", gnutls_strerror(r));
    return -1;
}

static void client_pump(void *c)
{
    char buf[256];
    gnutls_record_recv(c, buf, sizeof buf);   /* E_AGAIN after the tickets */
}

static void *client_session(void *c)
{
    gnutls_datum_t *d = malloc(sizeof *d);
    if (d && gnutls_session_get_data2(c, d) == 0)
        return d;
    free(d);
    return NULL;
}

static void session_free(void *p)
{
    gnutls_datum_t *d = p;
    gnutls_free(d->data);
    free(d);
}

static int server_resumed(void *s) { return gnutls_session_is_resumed(s); }
static void sess_free(void *s) { gnutls_deinit(s); }

int main(int argc, char **argv)
{
    static const struct tlsb_lib lib = {
        "gnutls", setup, server_new, client_new, step, step, client_pump,
        client_session, session_free, server_resumed, sess_free, sess_free,
    };
    return tlsb_main(&lib, argc, argv);
}
