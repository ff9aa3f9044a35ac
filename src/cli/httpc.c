/*
 * httpc.c — a blocking HTTP/1.1 client for nudge's subcommands (see httpc.h).
 *
 * Design: the socket is non-blocking, and every wait is a poll() bounded by
 * a deadline, so connect, write and read each have a timeout without
 * signals or threads. An answer is parsed by llhttp as it arrives; the
 * parser lives on the stack for the duration of one request (its 96 bytes
 * are not worth keeping), and stops at the end of the first complete answer.
 * For https:// the same bytes go through tlsc (the handshake right after the
 * TCP connect, then SSL_read / SSL_write with the same deadlines).
 *
 * Cost: one request is one malloc for the outgoing bytes and one growing
 * buffer for the answer's body (bounded at HTTPC_BODY_MAX). A kept-alive
 * connection holds only its file descriptor between requests.
 */
#include "cli/httpc.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <llhttp.h>

#include "cli/pollwait.h"
#include "cli/tlsc.h"
#include "common/util.h"
#include "common/version.h"

/* What one recv() may take; answers are small, so one read usually holds all of it. */
#define READ_CHUNK 16384
/* Header names we look at are short; longer names cannot be one of them. */
#define FIELD_MAX 32

int httpc_init(struct httpc *c, const char *url, unsigned read_timeout_ms, char *err,
               size_t errlen)
{
    const char *p, *hs, *he, *rest;
    size_t hlen, blen;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->read_timeout_ms = read_timeout_ms;

    if (strncasecmp(url, "https://", 8) == 0) {
        c->tls = 1;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        snprintf(err, errlen, "URL '%s': expected http://HOST[:PORT][/PATH] or https://...", url);
        return -EINVAL;
    }
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (he == NULL) {
            snprintf(err, errlen, "URL '%s': missing ']' after the IPv6 address", url);
            return -EINVAL;
        }
        rest = he + 1;
    } else {
        hs = p;
        he = p + strcspn(p, ":/?#@[]");
        rest = he;
    }
    hlen = (size_t)(he - hs);
    if (hlen == 0 || hlen >= sizeof(c->host)) {
        snprintf(err, errlen, "URL '%s': %s", url, hlen ? "host name too long" : "no host");
        return -EINVAL;
    }
    memcpy(c->host, hs, hlen);
    c->host[hlen] = '\0';

    if (*rest == ':') {
        char *end;
        unsigned long port;
        const char *ps = rest + 1;
        errno = 0;
        port = strtoul(ps, &end, 10);
        if (ps[0] < '0' || ps[0] > '9' || errno != 0 || port == 0 || port > 65535 ||
            (*end != '\0' && *end != '/')) {
            snprintf(err, errlen, "URL '%s': port must be a number from 1 to 65535", url);
            return -EINVAL;
        }
        snprintf(c->port, sizeof(c->port), "%lu", port);
        rest = end;
    } else {
        snprintf(c->port, sizeof(c->port), c->tls ? "443" : "80");
    }

    if (*rest != '\0' && *rest != '/') {
        snprintf(err, errlen,
                 "URL '%s': unexpected '%c' after the host (user info is not supported)", url,
                 *rest);
        return -EINVAL;
    }
    blen = strlen(rest);
    for (size_t i = 0; i < blen; i++) {
        unsigned char ch = (unsigned char)rest[i];
        if (ch <= ' ' || ch == 0x7f || ch == '?' || ch == '#') {
            snprintf(err, errlen,
                     "URL '%s': the path may not hold a query, a fragment, spaces or control "
                     "characters",
                     url);
            return -EINVAL;
        }
    }
    while (blen > 0 && rest[blen - 1] == '/')
        blen--;
    if (blen >= sizeof(c->base)) {
        snprintf(err, errlen, "URL '%s': path too long", url);
        return -EINVAL;
    }
    memcpy(c->base, rest, blen);
    c->base[blen] = '\0';

    /* An IPv6 literal is the only host with a ':' in it; it needs its brackets back. */
    snprintf(c->authority, sizeof(c->authority), strchr(c->host, ':') ? "[%s]:%s" : "%s:%s",
             c->host, c->port);
    return 0;
}

void httpc_close(struct httpc *c)
{
    tlsc_close(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->reused = 0;
}

void httpc_response_free(struct httpc_response *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

long httpc_query_escape(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (o + (plain ? 1 : 3) >= outlen)
            return -ENOSPC;
        if (plain) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    if (o >= outlen)
        return -ENOSPC;
    out[o] = '\0';
    return (long)o;
}

/* Two decimal digits at s, or -1. */
static int two_digits(const char *s)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* The index of the 3-letter name at s in 'names' (3 letters each), or -1. */
static int name_index(const char *s, const char *names, int count)
{
    for (int i = 0; i < count; i++)
        if (memcmp(s, names + 3 * i, 3) == 0)
            return i;
    return -1;
}

time_t httpc_parse_date(const char *s)
{
    /* Parsed by hand: strptime's %a and %b follow the locale, the header never does. */
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    int year_hi, year_lo;

    /* "Wed, 02 Dec 2026 08:00:00 GMT": exactly 29 bytes. */
    if (strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
        s[16] != ' ' || s[19] != ':' || s[22] != ':' || strcmp(s + 25, " GMT") != 0 ||
        name_index(s, days, 7) < 0)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_mon = name_index(s + 8, months, 12);
    tm.tm_mday = two_digits(s + 5);
    year_hi = two_digits(s + 12);
    year_lo = two_digits(s + 14);
    tm.tm_hour = two_digits(s + 17);
    tm.tm_min = two_digits(s + 20);
    tm.tm_sec = two_digits(s + 23);
    /* 60: a leap second; timegm carries it into the next minute. */
    if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || year_hi < 0 || year_lo < 0 ||
        tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60)
        return -1;
    tm.tm_year = year_hi * 100 + year_lo - 1900;
    return timegm(&tm);
}

/* Connects to one resolved address within the connect timeout. Returns the fd or -errno. */
static int connect_addr(const struct addrinfo *ai)
{
    int fd, rc, soerr = 0;
    socklen_t slen = sizeof(soerr);

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        rc = -errno;
        goto fail;
    }
    rc = pollwait_fd(fd, POLLOUT, util_now_ms() + HTTPC_CONNECT_TIMEOUT_MS);
    if (rc < 0)
        goto fail;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) < 0) {
        rc = -errno;
        goto fail;
    }
    if (soerr != 0) {
        rc = -soerr;
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

/* Resolves the host and connects to the first address that answers. */
static int httpc_connect(struct httpc *c, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    int rc, fd = -ECONNREFUSED;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /*
     * No AI_ADDRCONFIG: glibc does not count loopback addresses for it, so in
     * a network namespace with only lo it would refuse even "127.0.0.1".
     */
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", c->host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = connect_addr(ai);
        if (fd >= 0)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (fd == -ETIMEDOUT)
            snprintf(err, errlen, "cannot connect to %s: no answer within %d s", c->authority,
                     HTTPC_CONNECT_TIMEOUT_MS / 1000);
        else
            snprintf(err, errlen, "cannot connect to %s: %s", c->authority, strerror(-fd));
        return fd;
    }
    c->fd = fd;
    c->reused = 0;
    if (c->tls) {
        /* A command without the server options (token --revoke): $NUDGE_CACERT or the system's. */
        const char *cacert = getenv("NUDGE_CACERT");

        if (!tlsc_ready() && tlsc_setup(cacert && cacert[0] ? cacert : NULL, 0, err, errlen) < 0) {
            httpc_close(c);
            return -EPROTO;
        }
        rc = tlsc_connect(fd, c->host, c->authority, util_now_ms() + HTTPC_CONNECT_TIMEOUT_MS,
                          &c->ssl, err, errlen);
        if (rc < 0) {
            httpc_close(c);
            return rc;
        }
    }
    return 0;
}

/* Writes all of buf before the deadline. Returns 0 or a negative errno. */
static int send_plain(int fd, const char *buf, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = pollwait_fd(fd, POLLOUT, deadline);
            if (rc < 0)
                return rc;
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

static int send_all(const struct httpc *c, const char *buf, size_t len, uint64_t deadline)
{
    if (c->ssl != NULL)
        return tlsc_send_all(c->ssl, c->fd, buf, len, deadline);
    return send_plain(c->fd, buf, len, deadline);
}

/*
 * Reads what is there before the deadline: 0 with *got > 0, 0 with
 * *got == 0 at the end of the stream, or a negative errno.
 */
static int recv_some(const struct httpc *c, char *buf, size_t len, uint64_t deadline,
                     size_t *got)
{
    *got = 0;
    if (c->ssl != NULL)
        return tlsc_recv(c->ssl, c->fd, buf, len, deadline, got);
    for (;;) {
        ssize_t n;
        int rc = pollwait_fd(c->fd, POLLIN, deadline);

        if (rc < 0)
            return rc;
        n = recv(c->fd, buf, len, 0);
        if (n >= 0) {
            *got = (size_t)n;
            return 0;
        }
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
    }
}

/* State of one answer being parsed; llhttp's 'data' points here. */
struct parse {
    struct httpc_response *resp;
    size_t body_cap;
    char field[FIELD_MAX];
    size_t field_len;       /* > sizeof(field) - 1 means "too long to be one we want" */
    char value[HTTPC_ETAG_MAX];
    size_t value_len;
    int done;               /* a final (non-1xx) answer is complete */
    int keep_alive;         /* llhttp says the connection may carry another request */
    int too_big;            /* the body passed HTTPC_BODY_MAX */
    int oom;
};

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct parse *ps = p->data;
    if (ps->field_len + len < sizeof(ps->field))
        memcpy(ps->field + ps->field_len, at, len);
    ps->field_len += len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct parse *ps = p->data;
    if (ps->value_len + len < sizeof(ps->value))
        memcpy(ps->value + ps->value_len, at, len);
    ps->value_len += len;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct parse *ps = p->data;
    size_t flen = ps->field_len, vlen = ps->value_len;

    ps->field_len = ps->value_len = 0;
    if (flen >= sizeof(ps->field) || vlen >= sizeof(ps->value))
        return 0;
    ps->field[flen] = '\0';
    ps->value[vlen] = '\0';
    if (strcasecmp(ps->field, "ETag") == 0) {
        memcpy(ps->resp->etag, ps->value, vlen + 1);
    } else if (strcasecmp(ps->field, "Date") == 0) {
        ps->resp->date = httpc_parse_date(ps->value);
    } else if (strcasecmp(ps->field, "Retry-After") == 0) {
        /* Only the delta-seconds form; an HTTP-date counts as absent (-1). */
        char *end;
        long v;
        errno = 0;
        v = strtol(ps->value, &end, 10);
        if (ps->value[0] >= '0' && ps->value[0] <= '9' && *end == '\0' && errno == 0)
            ps->resp->retry_after = v;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct parse *ps = p->data;
    struct httpc_response *r = ps->resp;

    if (len > HTTPC_BODY_MAX - r->body_len) {
        ps->too_big = 1;
        return -1;
    }
    if (r->body_len + len + 1 > ps->body_cap) {
        size_t cap = ps->body_cap ? ps->body_cap : 1024;
        char *nb;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        nb = realloc(r->body, cap);
        if (nb == NULL) {
            ps->oom = 1;
            return -1;
        }
        r->body = nb;
        ps->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct parse *ps = p->data;

    if (p->status_code < 200) {
        /* An interim 1xx answer: the real one follows on the same connection. */
        ps->resp->etag[0] = '\0';
        ps->resp->retry_after = -1;
        ps->resp->date = -1;
        ps->resp->body_len = 0;
        return 0;
    }
    ps->resp->status = p->status_code;
    ps->keep_alive = llhttp_should_keep_alive(p);
    ps->done = 1;
    /* Stop here: any bytes after this answer are not ours to parse. */
    return HPE_PAUSED;
}

/*
 * Reads and parses one answer. Returns 0 when complete, or a negative errno
 * with err set. *got_bytes tells the caller whether the server sent anything
 * (the retry rule in httpc.h).
 */
static int read_answer(struct httpc *c, struct httpc_response *resp, int *keep_alive,
                       size_t *got_bytes, char *err, size_t errlen)
{
    static llhttp_settings_t settings;
    static int settings_ready;
    llhttp_t parser;
    struct parse ps;
    char buf[READ_CHUNK];
    uint64_t deadline = util_now_ms() + c->read_timeout_ms;

    if (!settings_ready) {
        llhttp_settings_init(&settings);
        settings.on_header_field = on_header_field;
        settings.on_header_value = on_header_value;
        settings.on_header_value_complete = on_header_value_complete;
        settings.on_body = on_body;
        settings.on_message_complete = on_message_complete;
        settings_ready = 1;
    }
    memset(&ps, 0, sizeof(ps));
    ps.resp = resp;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    parser.data = &ps;
    *got_bytes = 0;

    for (;;) {
        size_t n;
        llhttp_errno_t pe;
        int rc = recv_some(c, buf, sizeof(buf), deadline, &n);

        if (rc == -ETIMEDOUT) {
            snprintf(err, errlen, "no answer from %s within %u s", c->authority,
                     (c->read_timeout_ms + 999) / 1000);
            return rc;
        }
        if (rc < 0) {
            snprintf(err, errlen, "reading from %s: %s", c->authority,
                     rc == -EPROTO && c->ssl ? "TLS error" : strerror(-rc));
            return rc;
        }
        if (n == 0) {
            /* End of stream: complete only for an answer framed by the close itself. */
            if (*got_bytes > 0)
                (void)llhttp_finish(&parser); /* completes it through on_message_complete */
            if (ps.done) {
                *keep_alive = 0;
                return 0;
            }
            snprintf(err, errlen, "%s closed the connection %s", c->authority,
                     *got_bytes ? "in the middle of its answer" : "without answering");
            return -ECONNRESET;
        }
        *got_bytes += n;
        pe = llhttp_execute(&parser, buf, n);
        if (ps.done) {
            *keep_alive = ps.keep_alive;
            return 0;
        }
        if (pe != HPE_OK) {
            if (ps.too_big)
                snprintf(err, errlen, "answer from %s is larger than %d bytes", c->authority,
                         HTTPC_BODY_MAX);
            else if (ps.oom)
                snprintf(err, errlen, "out of memory reading the answer from %s", c->authority);
            else
                snprintf(err, errlen, "bad HTTP answer from %s: %s", c->authority,
                         llhttp_get_error_reason(&parser) ? llhttp_get_error_reason(&parser)
                                                          : llhttp_errno_name(pe));
            return ps.oom ? -ENOMEM : -EPROTO;
        }
    }
}

/* Request line, Host, User-Agent, then the optional Authorization and body headers. */
#define REQUEST_HEAD "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: nudge/%s\r\n%s%s%s%s%s\r\n"

/* Builds the request's bytes in one buffer so they leave in one write. */
static char *build_request(const struct httpc *c, const char *method, const char *path,
                           const char *token, const char *headers, const char *body,
                           size_t body_len, size_t *outlen)
{
    const char *auth = token ? "Authorization: Bearer " : "", *auth_end = token ? "\r\n" : "";
    char clen[96] = ""; /* the two body headers; the length has at most 20 digits */
    char *req;
    int hlen;

    if (token == NULL)
        token = "";
    /* A POST without a body still says Content-Length: 0, as the API asks of every body. */
    if (body_len > 0 || strcmp(method, "POST") == 0)
        snprintf(clen, sizeof(clen), "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                 body_len);
    if (headers == NULL)
        headers = "";
    hlen = snprintf(NULL, 0, REQUEST_HEAD, method, c->base, path, c->authority, NUDGE_VERSION,
                    auth, token, auth_end, headers, clen);
    if (hlen < 0)
        return NULL;
    req = malloc((size_t)hlen + 1 + body_len);
    if (req == NULL)
        return NULL;
    snprintf(req, (size_t)hlen + 1, REQUEST_HEAD, method, c->base, path, c->authority,
             NUDGE_VERSION, auth, token, auth_end, headers, clen);
    if (body_len > 0)
        memcpy(req + hlen, body, body_len);
    *outlen = (size_t)hlen + body_len;
    return req;
}

int httpc_request(struct httpc *c, const char *method, const char *path, const char *token,
                  const char *body, size_t body_len, struct httpc_response *resp, char *err,
                  size_t errlen)
{
    return httpc_request_hdr(c, method, path, token, NULL, body, body_len, resp, err, errlen);
}

int httpc_request_hdr(struct httpc *c, const char *method, const char *path, const char *token,
                      const char *headers, const char *body, size_t body_len,
                      struct httpc_response *resp, char *err, size_t errlen)
{
    size_t reqlen = 0;
    char *req;
    int rc = -EINVAL;

    memset(resp, 0, sizeof(*resp));
    req = build_request(c, method, path, token, headers, body, body_len, &reqlen);
    if (req == NULL) {
        snprintf(err, errlen, "out of memory building the request");
        return -ENOMEM;
    }
    /* At most two attempts: the second only after a kept-alive connection proved stale. */
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t got = 0;
        int keep_alive = 0, was_reused;

        if (c->fd < 0) {
            rc = httpc_connect(c, err, errlen);
            if (rc < 0)
                break;
        }
        was_reused = c->reused;
        memset(resp, 0, sizeof(*resp));
        resp->retry_after = -1;
        resp->date = -1;
        rc = send_all(c, req, reqlen, util_now_ms() + c->read_timeout_ms);
        if (rc < 0) {
            if (rc == -ETIMEDOUT)
                snprintf(err, errlen, "sending to %s: timed out", c->authority);
            else
                snprintf(err, errlen, "sending to %s: %s", c->authority, strerror(-rc));
        } else {
            rc = read_answer(c, resp, &keep_alive, &got, err, errlen);
        }
        if (rc == 0) {
            if (resp->body == NULL) {
                resp->body = malloc(1);
                if (resp->body == NULL) {
                    snprintf(err, errlen, "out of memory");
                    rc = -ENOMEM;
                    httpc_close(c);
                    break;
                }
                resp->body[0] = '\0';
            }
            if (keep_alive)
                c->reused = 1;
            else
                httpc_close(c);
            break;
        }
        httpc_response_free(resp);
        httpc_close(c);
        if (!was_reused || got > 0 || rc == -ETIMEDOUT)
            break;
    }
    free(req);
    return rc;
}
