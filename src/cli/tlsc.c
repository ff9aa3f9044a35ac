/*
 * tlsc.c — nudge's TLS client (see tlsc.h): one SSL_CTX for the process,
 * the handshake with verification and its error sentences, reads and writes
 * over a non-blocking socket with deadlines, and the session kept for
 * resumption.
 *
 * Why a verify callback: when OpenSSL refuses the chain, the peer
 * certificate is not kept on the session, and SSL_get_verify_result alone
 * does not say which certificate failed. The callback records the first
 * failure (error, depth, subject, validity) so the sentence can name it.
 * The record is made and read within the one SSL_connect call that met the
 * failure, so a file-scope record is enough, even for probe's parallel
 * handshakes (one thread).
 */
#include "cli/tlsc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cli/pollwait.h"
#include "common/util.h"

#define NAME_MAX_LEN 256

static SSL_CTX *ctx;
static SSL_SESSION *saved_session;
static int refused;

/* The first verification failure of the handshake under way. */
static struct {
    int error;                 /* X509_V_ERR_*, X509_V_OK: none */
    int depth;                 /* 0: the server's own certificate */
    char subject[NAME_MAX_LEN];
    char not_before[32], not_after[32];
} failure;

void tlsc_subject(X509 *x, char *out, size_t outlen)
{
    BIO *b = BIO_new(BIO_s_mem());
    int n;

    out[0] = '\0';
    if (b == NULL)
        return;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        n = BIO_read(b, out, (int)outlen - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

void tlsc_issuer(X509 *x, char *out, size_t outlen)
{
    BIO *b = BIO_new(BIO_s_mem());
    int n;

    out[0] = '\0';
    if (b == NULL)
        return;
    if (X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        n = BIO_read(b, out, (int)outlen - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

void tlsc_time(const ASN1_TIME *t, char *out, size_t outlen)
{
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
        strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, outlen, "(unreadable)");
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
    X509 *x = X509_STORE_CTX_get_current_cert(store);

    if (ok || failure.error != X509_V_OK)
        return ok;
    failure.error = X509_STORE_CTX_get_error(store);
    failure.depth = X509_STORE_CTX_get_error_depth(store);
    if (x != NULL) {
        tlsc_subject(x, failure.subject, sizeof(failure.subject));
        tlsc_time(X509_get0_notBefore(x), failure.not_before, sizeof(failure.not_before));
        tlsc_time(X509_get0_notAfter(x), failure.not_after, sizeof(failure.not_after));
    }
    return ok;
}

/* Keeps the newest session (a TLS 1.3 ticket arrives after the handshake). */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    SSL_SESSION_free(saved_session);
    saved_session = sess;
    return 1; /* we hold the reference now */
}

int tlsc_ready(void)
{
    return ctx != NULL;
}

int tlsc_refused(void)
{
    return refused;
}

SSL_SESSION *tlsc_session(void)
{
    return saved_session;
}

/*
 * The reason of the last queued OpenSSL error, for sentences ("certificate
 * verify failed" from "error:0A000086:SSL routines::certificate verify
 * failed"); clears the queue.
 */
static const char *ssl_reason(void)
{
    static char buf[256];
    unsigned long e = ERR_peek_last_error();
    char *p;

    if (e == 0)
        return "no reason given";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    p = strrchr(buf, ':');
    return p && p[1] ? p + 1 : buf;
}

int tlsc_setup(const char *cacert, int insecure, char *err, size_t errlen)
{
    static const unsigned char alpn[] = "\x08http/1.1";

    /*
     * OpenSSL writes to the socket with write(), not send(MSG_NOSIGNAL): a
     * server gone away would kill us with SIGPIPE instead of an EPIPE.
     */
    signal(SIGPIPE, SIG_IGN);
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: cannot create a context: %s", ssl_reason());
        return -1;
    }
    /* TLS 1.0 and 1.1 are deprecated (RFC 8996); nudged and any sane proxy speak 1.2+. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /*
     * Answers are framed by Content-Length or chunking, and read_answer
     * accepts the end of the stream as the end of an answer only for one
     * framed by the close; so a peer that closes without close_notify (many
     * do on keep-alive timeouts) reads as a plain end of stream.
     */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    if (cacert != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, cacert, NULL) != 1) {
            snprintf(err, errlen, "--cacert %s: cannot load it as PEM certificates: %s", cacert,
                     ssl_reason());
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "TLS: cannot load the system's certificates: %s", ssl_reason());
        goto fail;
    }
    /*
     * With --insecure the chain is still verified and the result kept
     * (doctor reports it), but a failure does not stop the handshake.
     */
    SSL_CTX_set_verify(ctx, insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, verify_cb);
    if (insecure)
        fprintf(stderr, "nudge: warning: --insecure: the server's certificate is not checked; "
                        "anyone on the path can read and change this connection\n");
    return 0;
fail:
    SSL_CTX_free(ctx);
    ctx = NULL;
    return -1;
}

/* The sentence for a refused certificate, with the fix that fits. */
static void describe_refusal(long vr, const char *host, const char *authority, char *err,
                             size_t errlen)
{
    const char *what, *fix;
    char extra[320] = ""; /* ", which does not name " and a host of up to 255 bytes */

    switch (vr) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        what = "certificate has expired";
        fix = "renew the server's certificate";
        snprintf(extra, sizeof(extra), ", not after %s", failure.not_after);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        what = "certificate is not yet valid";
        fix = "check both clocks, or the certificate's dates";
        snprintf(extra, sizeof(extra), ", not before %s", failure.not_before);
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        what = "host name mismatch";
        fix = "use the name the certificate is for in --url, or a certificate naming this "
              "host";
        snprintf(extra, sizeof(extra), ", which does not name %s", host);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        what = "unknown issuer";
        fix = "trust its CA with --cacert FILE (or the certificate itself if self-signed)";
        break;
    default:
        what = X509_verify_cert_error_string(vr);
        fix = "check the server's certificate chain";
        break;
    }
    snprintf(err, errlen, "TLS: the certificate of %s is refused: %s (%s: subject %s%s); fix: %s",
             authority, what, failure.depth == 0 ? "the server's certificate" : "a CA in its chain",
             failure.subject[0] ? failure.subject : "(empty)", extra, fix);
}

SSL *tlsc_new(int fd, const char *host, char *err, size_t errlen)
{
    unsigned char ipbuf[sizeof(struct in6_addr)];
    int is_ip = inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1;
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "TLS: cannot start a connection: %s", ssl_reason());
        goto fail;
    }
    /* RFC 6066 3: SNI carries host names only, never address literals. */
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1
              : SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1) {
        snprintf(err, errlen, "TLS: cannot set up the host name check for '%s'", host);
        goto fail;
    }
    if (saved_session != NULL)
        SSL_set_session(ssl, saved_session);
    return ssl;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* The poll() events OpenSSL waits for after error 'e', 0 when it waits for none. */
static short want_of(int e)
{
    return e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
}

/* What a handshake failure's reason usually means, for the sentence ("" when unsure). */
static const char *handshake_hint(const char *why)
{
    if (strstr(why, "wrong version number") || strstr(why, "packet length too long") ||
        strstr(why, "http request"))
        return " (the server does not speak TLS there: is it a plain http:// port?)";
    if (strstr(why, "protocol version") || strstr(why, "unsupported protocol") ||
        strstr(why, "no protocols available"))
        return " (nudge speaks TLS 1.2 and 1.3 only; the server offers neither)";
    return "";
}

int tlsc_handshake_step(SSL *ssl, const char *host, const char *authority, short *want,
                        char *err, size_t errlen)
{
    int r, e;

    memset(&failure, 0, sizeof(failure));
    failure.error = X509_V_OK;
    ERR_clear_error();
    r = SSL_connect(ssl);
    if (r == 1)
        return 1;
    e = SSL_get_error(ssl, r);
    *want = want_of(e);
    if (*want != 0)
        return 0;
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
        describe_refusal(SSL_get_verify_result(ssl), host, authority, err, errlen);
        ERR_clear_error();
        refused = 1;
        return -TLSC_EVERIFY;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        snprintf(err, errlen, "TLS handshake with %s: the connection was closed%s%s", authority,
                 errno ? ": " : "", errno ? strerror(errno) : "");
    else {
        const char *why = ssl_reason();
        snprintf(err, errlen, "TLS handshake with %s failed: %s%s", authority, why,
                 handshake_hint(why));
    }
    ERR_clear_error();
    return -EPROTO;
}

ssize_t tlsc_read_step(SSL *ssl, char *buf, size_t len, short *want)
{
    size_t n = 0;
    int e;

    ERR_clear_error();
    if (SSL_read_ex(ssl, buf, len, &n) == 1)
        return (ssize_t)n;
    e = SSL_get_error(ssl, 0);
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    *want = want_of(e);
    if (*want != 0)
        return -EAGAIN;
    /* With SSL_OP_IGNORE_UNEXPECTED_EOF a bare close is ZERO_RETURN; this is worse. */
    if (e == SSL_ERROR_SYSCALL && errno != 0)
        return -errno;
    ERR_clear_error();
    return -EPROTO;
}

ssize_t tlsc_write_step(SSL *ssl, const char *buf, size_t len, short *want)
{
    size_t n = 0;
    int e;

    ERR_clear_error();
    if (SSL_write_ex(ssl, buf, len, &n) == 1)
        return (ssize_t)n;
    e = SSL_get_error(ssl, 0);
    *want = want_of(e);
    if (*want != 0)
        return -EAGAIN;
    if (e == SSL_ERROR_SYSCALL && errno != 0)
        return -errno;
    ERR_clear_error();
    return -EPIPE;
}

int tlsc_connect(int fd, const char *host, const char *authority, uint64_t deadline, SSL **out,
                 char *err, size_t errlen)
{
    SSL *ssl = tlsc_new(fd, host, err, errlen);
    short want = 0;
    int rc;

    if (ssl == NULL)
        return -EPROTO;
    while ((rc = tlsc_handshake_step(ssl, host, authority, &want, err, errlen)) == 0) {
        rc = pollwait_fd(fd, want, deadline);
        if (rc < 0) {
            snprintf(err, errlen, "TLS handshake with %s: %s", authority,
                     rc == -ETIMEDOUT ? "no answer in time" : strerror(-rc));
            break;
        }
    }
    if (rc < 0) {
        SSL_free(ssl);
        return rc;
    }
    *out = ssl;
    return 0;
}

int tlsc_recv(SSL *ssl, int fd, char *buf, size_t len, uint64_t deadline, size_t *got)
{
    *got = 0;
    for (;;) {
        short want = 0;
        ssize_t n = tlsc_read_step(ssl, buf, len, &want);
        int rc;

        if (n >= 0) {
            *got = (size_t)n;
            return 0;
        }
        if (n != -EAGAIN)
            return (int)n;
        rc = pollwait_fd(fd, want, deadline);
        if (rc < 0)
            return rc;
    }
}

int tlsc_send_all(SSL *ssl, int fd, const char *buf, size_t len, uint64_t deadline)
{
    while (len > 0) {
        short want = 0;
        ssize_t n = tlsc_write_step(ssl, buf, len, &want);
        int rc;

        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n != -EAGAIN)
            return n < 0 ? (int)n : -EPIPE;
        rc = pollwait_fd(fd, want, deadline);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void tlsc_close(SSL *ssl)
{
    if (ssl == NULL)
        return;
    /* One try: a close_notify that does not fit at once is not worth waiting for. */
    (void)SSL_shutdown(ssl);
    ERR_clear_error();
    SSL_free(ssl);
}
