/*
 * passwd_dovecot.c — the "dovecot" password backend: Dovecot's
 * authentication service over its client socket (the auth-client listener
 * that Postfix uses for SMTP AUTH), protocol version 1.
 *
 * One connection per worker, on the worker's loop, kept open and
 * reconnected with a back-off (100 ms, doubling to 5 s) when Dovecot goes
 * away; checks are multiplexed over it by id:
 *
 *   C: VERSION 1 2          C: CPID <pid>
 *   S: VERSION 1 2   S: MECH PLAIN ...   S: SPID / CUID / COOKIE   S: DONE
 *   C: AUTH <id> PLAIN service=nudge no-penalty [secured] [rip=<addr>] resp=<base64 of "\0user\0password">
 *   S: OK <id> user=<name> ...   or   FAIL <id> [temp] [code=temp_fail] ...
 *
 * (fields separated by TABs, lines by LF; Dovecot escapes TAB, LF and NUL
 * inside a value with \001). The user name OK answers is the one nudge acts
 * for. A FAIL that says "temp" is the backend failing, not the password:
 * PASSWD_UNAVAILABLE. A check waits at most [auth] timeout; while Dovecot
 * is away, checks are answered PASSWD_UNAVAILABLE at once (the client gets
 * 503 and Retry-After) and the connection is tried again in the back-off.
 *
 * 'secured' is sent when the client's password did not cross a network in
 * clear (nudged has no TLS yet: a loopback client), so Dovecot's
 * disable_plaintext_auth keeps its meaning. 'rip' lets Dovecot log by the
 * real client address. 'no-penalty': nudge limits wrong passwords itself,
 * per address and per user, with a 429 the client can read (router.c);
 * Dovecot's penalty on top would hold each of them up to 15 s more, on
 * connections nudge keeps open meanwhile. Dovecot's auth_failure_delay
 * still applies.
 */
#include "auth/passwd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/config.h"
#include "common/log.h"
#include "common/strmap.h"
#include "common/util.h"
#include "common/xalloc.h"

/* Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH: no line of the protocol is longer. */
#define LINE_MAX_BYTES 16384
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

enum state {
    DOWN,         /* not connected; the retry timer runs */
    CONNECTING,
    HANDSHAKE,    /* connected, waiting for DONE */
    READY,
    STOPPED,
};

struct check {
    struct check *prev, *next;   /* in order of deadline: every check waits equally long */
    uint32_t id;
    char idkey[4];               /* id's bytes: its key in the map */
    uint64_t deadline;           /* ms */
    passwd_done_fn done;
    void *arg;
    char *line;                  /* the AUTH line, kept until sent (during the handshake) */
    size_t line_len;
};

struct dovecot {
    uv_loop_t *loop;
    char path[CONFIG_STR_MAX];
    enum state state;
    uv_pipe_t pipe;
    int pipe_open;
    uv_connect_t connect_req;
    uv_timer_t retry;            /* the back-off before the next connection */
    uv_timer_t timeout;          /* the earliest check deadline */
    uv_timer_t soon;             /* answers checks refused at once, after the call returns */
    unsigned backoff_ms;
    uint64_t timeout_ms;
    int plain_offered;
    int said_down;               /* the outage is logged (once) */
    uint32_t next_id;
    struct strmap checks;        /* id -> struct check, sent or waiting to be */
    struct check *first, *last;
    struct check *refused;       /* answered PASSWD_UNAVAILABLE on the next turn */
    char *rbuf;
    size_t rlen;
};

static void try_connect(struct dovecot *d);

/* ---- checks --------------------------------------------------------- */

static void unlink_check(struct dovecot *d, struct check *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        d->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        d->last = c->prev;
    strmap_del(&d->checks, c->idkey, sizeof(c->idkey));
}

static void finish(struct dovecot *d, struct check *c, enum passwd_status st, const char *user)
{
    unlink_check(d, c);
    if (c->line) {
        OPENSSL_cleanse(c->line, c->line_len);
        free(c->line);
    }
    c->done(c->arg, st, user);
    free(c);
}

static void on_timeout(uv_timer_t *t);

static void arm_timeout(struct dovecot *d)
{
    uint64_t now = util_now_ms();

    if (d->first == NULL || d->state == STOPPED) {
        uv_timer_stop(&d->timeout);
        return;
    }
    uv_timer_start(&d->timeout, on_timeout, d->first->deadline > now ? d->first->deadline - now : 0,
                   0);
}

static void on_timeout(uv_timer_t *t)
{
    struct dovecot *d = t->data;
    uint64_t now = util_now_ms();

    while (d->first && d->first->deadline <= now) {
        char q[64];
        LOG(LOG_WARN, passwords_unavailable, "backend=dovecot reason=%s",
            log_q(q, sizeof(q), "a check timed out ([auth] timeout)"));
        finish(d, d->first, PASSWD_UNAVAILABLE, NULL);
    }
    arm_timeout(d);
}

/* Every check fails: the connection is gone (or nudged stops). */
static void fail_all(struct dovecot *d)
{
    while (d->first)
        finish(d, d->first, PASSWD_UNAVAILABLE, NULL);
    arm_timeout(d);
}

static void on_soon(uv_timer_t *t)
{
    struct dovecot *d = t->data;

    while (d->refused) {
        struct check *c = d->refused;
        d->refused = c->next;
        c->done(c->arg, PASSWD_UNAVAILABLE, NULL);
        free(c);
    }
}

/* ---- the connection -------------------------------------------------- */

struct write_req {
    uv_write_t req;
    char *buf;
    size_t len;
};

static void after_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;

    (void)status; /* a failed write shows as a failed read: the connection is lost there */
    OPENSSL_cleanse(w->buf, w->len);
    free(w->buf);
    free(w);
}

/* Writes buf[0..len) and takes ownership of it. */
static void send_line(struct dovecot *d, char *buf, size_t len)
{
    struct write_req *w = xmalloc(sizeof(*w));
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);

    w->buf = buf;
    w->len = len;
    if (uv_write(&w->req, (uv_stream_t *)&d->pipe, &b, 1, after_write) < 0) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        free(w);
    }
}

static void on_retry(uv_timer_t *t)
{
    try_connect(t->data);
}

static void on_closed(uv_handle_t *h)
{
    struct dovecot *d = h->data;

    d->pipe_open = 0;
    if (d->state != STOPPED) {
        d->state = DOWN;
        uv_timer_start(&d->retry, on_retry, d->backoff_ms, 0);
        d->backoff_ms = d->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d->backoff_ms * 2;
    }
}

/* The connection is lost or unusable: say so once, fail what waits, try again later. */
static void lost(struct dovecot *d, const char *why)
{
    char q1[200], q2[300];

    if (!d->said_down) {
        LOG(LOG_WARN, passwords_unavailable, "backend=dovecot socket=%s reason=%s",
            log_q(q2, sizeof(q2), d->path), log_q(q1, sizeof(q1), why));
        d->said_down = 1;
    }
    if (d->state != STOPPED)
        d->state = DOWN;
    fail_all(d);
    d->rlen = 0;
    if (d->pipe_open && !uv_is_closing((uv_handle_t *)&d->pipe))
        uv_close((uv_handle_t *)&d->pipe, on_closed);
    else if (!d->pipe_open && d->state == DOWN)
        on_closed((uv_handle_t *)&d->pipe);
}

/* Undoes Dovecot's \001 escapes in place (TAB, LF, CR, NUL, \001 itself). */
static void unescape(char *s)
{
    char *o = s;

    for (; *s; s++) {
        if (*s != '\001' || s[1] == '\0') {
            *o++ = *s;
            continue;
        }
        s++;
        switch (*s) {
        case 't': *o++ = '\t'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case '1': *o++ = '\001'; break;
        case '0': *o++ = '\0'; break; /* a NUL ends the name: it cannot be a user id */
        default: *o++ = *s; break;
        }
    }
    *o = '\0';
}

/* The value of optional parameter 'name' among fields[0..n), or NULL; a boolean gives "". */
static const char *param(char **fields, int n, const char *name)
{
    size_t nl = strlen(name);

    for (int i = 0; i < n; i++) {
        if (strncmp(fields[i], name, nl) != 0)
            continue;
        if (fields[i][nl] == '=')
            return fields[i] + nl + 1;
        if (fields[i][nl] == '\0')
            return "";
    }
    return NULL;
}

static void send_check(struct dovecot *d, struct check *c)
{
    send_line(d, c->line, c->line_len);
    c->line = NULL;
    c->line_len = 0;
}

/* One line from Dovecot (NUL-terminated, without its LF). */
static void on_line(struct dovecot *d, char *line)
{
    char *fields[32];
    int n = 0;

    for (char *p = line; n < (int)(sizeof(fields) / sizeof(fields[0]));) {
        fields[n++] = p;
        p = strchr(p, '\t');
        if (p == NULL)
            break;
        *p++ = '\0';
    }
    if (d->state == HANDSHAKE) {
        if (strcmp(fields[0], "VERSION") == 0) {
            if (n < 2 || strcmp(fields[1], "1") != 0)
                lost(d, "Dovecot speaks another major version of the auth protocol");
        } else if (strcmp(fields[0], "MECH") == 0) {
            if (n >= 2 && strcmp(fields[1], "PLAIN") == 0)
                d->plain_offered = 1;
        } else if (strcmp(fields[0], "DONE") == 0) {
            char q[300];
            if (!d->plain_offered) {
                lost(d, "Dovecot does not offer the PLAIN mechanism (auth_mechanisms)");
                return;
            }
            d->state = READY;
            d->backoff_ms = BACKOFF_MIN_MS;
            d->said_down = 0;
            LOG(LOG_INFO, passwords_ready, "backend=dovecot socket=%s", log_q(q, sizeof(q), d->path));
            for (struct check *c = d->first; c; c = c->next)
                if (c->line)
                    send_check(d, c);
        }
        /* SPID, CUID, COOKIE: nothing nudge needs. */
        return;
    }
    if (n >= 2 && (strcmp(fields[0], "OK") == 0 || strcmp(fields[0], "FAIL") == 0 ||
                   strcmp(fields[0], "CONT") == 0)) {
        uint32_t id;
        uint64_t v;
        struct check *c;
        if (util_parse_u64(fields[1], strlen(fields[1]), &v) < 0 || v > UINT32_MAX)
            return;
        id = (uint32_t)v;
        c = strmap_get(&d->checks, (const char *)&id, sizeof(id));
        if (c == NULL)
            return; /* timed out meanwhile */
        if (fields[0][0] == 'O') {
            char *user = (char *)param(fields + 2, n - 2, "user");
            if (user)
                unescape(user);
            finish(d, c, user && user[0] ? PASSWD_OK : PASSWD_FAIL, user);
        } else if (fields[0][0] == 'F') {
            const char *code = param(fields + 2, n - 2, "code");
            int temp = param(fields + 2, n - 2, "temp") != NULL ||
                       (code && strcmp(code, "temp_fail") == 0);
            finish(d, c, temp ? PASSWD_UNAVAILABLE : PASSWD_FAIL, NULL);
        } else {
            /* PLAIN with its initial response needs no continuation: this is not a PLAIN we know. */
            finish(d, c, PASSWD_FAIL, NULL);
        }
        arm_timeout(d);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct dovecot *d = h->data;

    (void)suggested;
    buf->base = d->rbuf + d->rlen;
    buf->len = LINE_MAX_BYTES + 1 - d->rlen;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct dovecot *d = s->data;
    char *start, *lf;

    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        lost(d, nread == UV_EOF ? "Dovecot closed the connection" : uv_strerror((int)nread));
        return;
    }
    d->rlen += (size_t)nread;
    start = d->rbuf;
    while ((lf = memchr(start, '\n', d->rlen - (size_t)(start - d->rbuf))) != NULL) {
        *lf = '\0';
        on_line(d, start);
        if (d->state == DOWN || d->state == STOPPED)
            return;
        start = lf + 1;
    }
    d->rlen -= (size_t)(start - d->rbuf);
    memmove(d->rbuf, start, d->rlen);
    if (d->rlen > LINE_MAX_BYTES)
        lost(d, "a line from Dovecot is longer than the protocol allows");
}

static void on_connect(uv_connect_t *req, int status)
{
    struct dovecot *d = req->data;
    char hello[64];
    int n;

    if (d->state == STOPPED)
        return;
    if (status < 0) {
        lost(d, uv_strerror(status));
        return;
    }
    d->state = HANDSHAKE;
    d->plain_offered = 0;
    /* Minor version 2: what Dovecot 2.3 speaks; minor versions may differ freely. */
    n = snprintf(hello, sizeof(hello), "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
    send_line(d, xstrndup(hello, (size_t)n), (size_t)n);
    uv_read_start((uv_stream_t *)&d->pipe, on_alloc, on_read);
}

static void try_connect(struct dovecot *d)
{
    if (d->state == STOPPED)
        return;
    uv_pipe_init(d->loop, &d->pipe, 0);
    d->pipe.data = d;
    d->pipe_open = 1;
    d->state = CONNECTING;
    d->connect_req.data = d;
    uv_pipe_connect(&d->connect_req, &d->pipe, d->path, on_connect);
}

/* ---- the backend ------------------------------------------------------ */

static int dv_open(void **out, const char *path, uv_loop_t *loop, const struct config *cfg,
                   char *err, size_t errlen)
{
    struct dovecot *d;

    if (path[0] != '/' || strlen(path) >= sizeof(d->path)) {
        snprintf(err, errlen,
                 "%s: expected the absolute path of Dovecot's auth-client socket (shorter "
                 "than %zu bytes)",
                 path, sizeof(d->path));
        return -1;
    }
    d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    snprintf(d->path, sizeof(d->path), "%s", path);
    d->backoff_ms = BACKOFF_MIN_MS;
    d->timeout_ms = (uint64_t)cfg->auth_timeout * 1000;
    d->rbuf = xmalloc(LINE_MAX_BYTES + 1);
    strmap_init(&d->checks);
    uv_timer_init(loop, &d->retry);
    d->retry.data = d;
    uv_timer_init(loop, &d->timeout);
    d->timeout.data = d;
    uv_timer_init(loop, &d->soon);
    d->soon.data = d;
    /* Connected from the start, so the first check finds it ready. */
    try_connect(d);
    *out = d;
    return 0;
}

static void dv_verify(void *be, const struct passwd_request *rq, passwd_done_fn done, void *arg)
{
    struct dovecot *d = be;
    struct check *c = xcalloc(1, sizeof(*c));
    size_t ul = strlen(rq->user), pl = strlen(rq->password), plain = 1 + ul + 1 + pl;
    unsigned char *raw;
    char *line;
    int head;

    c->done = done;
    c->arg = arg;
    if (d->state == DOWN || d->state == STOPPED) {
        /* Not now: answered on the next loop turn, never from inside this call. */
        c->next = d->refused;
        d->refused = c;
        uv_timer_start(&d->soon, on_soon, 0, 0);
        return;
    }
    if (++d->next_id == 0)
        d->next_id = 1;
    c->id = d->next_id;
    memcpy(c->idkey, &c->id, sizeof(c->id));
    c->deadline = util_now_ms() + d->timeout_ms;
    /* "\0user\0password": no authorization identity, then the login and its password. */
    raw = xmalloc(plain);
    raw[0] = '\0';
    memcpy(raw + 1, rq->user, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, rq->password, pl);
    line = xmalloc(256 + 4 * ((plain + 2) / 3) + 2);
    head = snprintf(line, 256, "AUTH\t%u\tPLAIN\tservice=nudge\tno-penalty%s%s%s\tresp=", c->id,
                    rq->secured ? "\tsecured" : "", rq->peer ? "\trip=" : "",
                    rq->peer ? rq->peer : "");
    c->line_len = (size_t)head + (size_t)EVP_EncodeBlock((unsigned char *)line + head, raw,
                                                          (int)plain);
    line[c->line_len++] = '\n';
    c->line = line;
    OPENSSL_cleanse(raw, plain);
    free(raw);
    c->prev = d->last;
    if (d->last)
        d->last->next = c;
    else
        d->first = c;
    d->last = c;
    strmap_put(&d->checks, c->idkey, sizeof(c->idkey), c);
    if (d->first == c)
        arm_timeout(d);
    if (d->state == READY)
        send_check(d, c);
}

static void dv_stop(void *be)
{
    struct dovecot *d = be;

    d->state = STOPPED;
    fail_all(d);
    on_soon(&d->soon);
    if (!uv_is_closing((uv_handle_t *)&d->retry))
        uv_close((uv_handle_t *)&d->retry, NULL);
    if (!uv_is_closing((uv_handle_t *)&d->timeout))
        uv_close((uv_handle_t *)&d->timeout, NULL);
    if (!uv_is_closing((uv_handle_t *)&d->soon))
        uv_close((uv_handle_t *)&d->soon, NULL);
    if (d->pipe_open && !uv_is_closing((uv_handle_t *)&d->pipe))
        uv_close((uv_handle_t *)&d->pipe, on_closed);
}

static void dv_free(void *be)
{
    struct dovecot *d = be;

    if (d == NULL)
        return;
    strmap_free(&d->checks);
    free(d->rbuf);
    free(d);
}

const struct passwd_backend passwd_dovecot_backend = {
    .name = "dovecot",
    .open = dv_open,
    .verify = dv_verify,
    .reload = NULL,
    .generation = NULL,
    .stop = dv_stop,
    .free = dv_free,
};
