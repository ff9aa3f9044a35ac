/*
 * loadgen.c — the benchmarks' load generator: holds many long-poll requests,
 * re-arms each one after its answer, and publishes, against nudged or
 * nginx+nchan alike (bench/compare.py drives it).
 *
 * Design. One parent process forks --procs children and then only relays:
 * it reads one command per line on standard input, sends it to every child
 * over a socketpair, reads one reply line from each, and prints one line that
 * sums them (keys named min_* take the minimum, max_* the maximum). Each child
 * is a single-threaded epoll loop over its share of every group of held
 * connections (connection j of a group belongs to child j % procs), so one
 * child holds at most ~15k descriptors: a process here may hold 20,000 at
 * most, and 1M connections need ~70 children.
 *
 * Requests come from templates given on the command line (--sub for a held
 * request, --pub for a publish), so the same program speaks nudge's
 * POST /v1/ping and nchan's GET /sub/<channel>. Placeholders: {user},
 * {device}, {token} (line {user} of --tokens), {seq} (the state or message
 * number the connection has seen, or the number a publish carries), {hb},
 * {resume} (nchan's If-Modified-Since/If-None-Match from the previous answer),
 * {ptoken}, {prefix}, {target}, {items} (a publish's batch: one --pub-item
 * per target, comma separated), {len} (the length of what follows the blank
 * line). --answer says how to read a held request's answer: "state" (nudge:
 * {"status":"changed","folders":{"INBOX":"<n>"}} delivers state n, "expired"
 * is a renewal) or "message" (nchan: a 200's body is the message number n,
 * 408 or 304 is a renewal), or "sse-state" / "sse-message" for a held
 * Server-Sent Events stream (nudge's GET /v1/stream, nchan's EventSource):
 * the request is sent once, its 200 text/event-stream head read, and then
 * every "data:" line of the never-ending body is a delivery of the number
 * in it, read as "state" (after "INBOX":") or as "message" (the data is the
 * message number); a state of 0 (a stream's first event before any publish)
 * delivers nothing. A stream that ends is reconnected (counted).
 * "ws-state" / "ws-message" hold a WebSocket (RFC 6455) instead: the --sub
 * template is the upgrade request, with {wskey} for its Sec-WebSocket-Key
 * (16 random bytes in base64, derived from the connection's index and a
 * per-process random seed, so it is recomputed to check the answer rather
 * than kept); the answer must be a 101 with Upgrade: websocket, the matching
 * Sec-WebSocket-Accept (SHA-1 + base64, OpenSSL's libcrypto) and, when the
 * template names a Sec-WebSocket-Protocol, that protocol. Then --ws-send's
 * text, if given, goes as one masked text frame (nudge's
 * WebSocketPushEnable), and every text frame the server sends is a delivery,
 * read as in the SSE modes (state after "INBOX":", or the message number);
 * a ping frame is answered with a pong of its payload, and counted as a
 * renewal; a close frame ends the stream (reconnected, counted). Neither
 * server fragments its messages: a fragment is an unexpected answer.
 *
 * Each connection binds to a source address among 127.0.0.2 .. 127.0.0.<K+1>
 * (--sources K) with IP_BIND_ADDRESS_NO_PORT, so the port is chosen at
 * connect time per 4-tuple and ~64k ports per source address are the only
 * limit. A connection costs 48 bytes here while idle: no buffer is kept
 * between requests (a partial read or write, rare on loopback, allocates
 * one until it completes), and its user and device are stored, not its
 * request.
 *
 * Commands (replies are "ok key=value ..." or "err why"):
 *   open G FIRST USERS DEVICES   open group G (0..7): USERS*DEVICES held
 *                                requests, connection j for user FIRST + j%USERS,
 *                                device j/USERS; replies once each has sent
 *                                its first request (opened=, failed=, ns=)
 *   hb H                         {hb} is H from now on
 *   wait G TARGET MS PATH        wait until every connection of G has seen
 *                                number TARGET, or MS ms; write each one's
 *                                delivery time (CLOCK_MONOTONIC ns, u64, 0 if
 *                                none) to PATH.<child>; replies conns=, done=,
 *                                lost=, dups=
 *   pub PREFIX FIRST MOD COUNT SEQ CONNS [BATCH]
 *                                COUNT publishes, the t-th for target
 *                                FIRST + t%MOD with {seq}=SEQ, over CONNS
 *                                keep-alive connections in all, BATCH
 *                                targets per request (default 1); replies
 *                                ok=, bad= (targets), min_t0= (first sent),
 *                                max_t1= (last answered)
 *   stats                        counters of every connection so far
 *   quit                         close everything and exit
 * Every wait is bounded by its MS; every connection gives up after
 * MAX_FAILS failures in a row; the parent exits when its input ends.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_GROUPS 8
#define MAX_PROCS 512
/* Connects in progress per child: enough to keep the server's accept loop
 * busy, few enough that a 4096-entry listen backlog shared by a few children
 * never overflows (an overflow drops the SYN and costs a 1 s retransmit). */
#define MAX_INFLIGHT 256
/* A connection that fails this often in a row (refused, reset, bad answer)
 * is given up, so a dead server cannot make the loop spin. */
#define MAX_FAILS 5
/* Requests and answers are a few hundred bytes; the read buffer takes many
 * answers' worth in one read() and a request always fits. */
#define RBUF_SIZE (64 * 1024)
#define REQ_SIZE 4096
/* --ws-send's text: one small client message (a JMAP WebSocketPushEnable). */
#define WS_SEND_MAX 1024
/* The GUID a WebSocket server appends to the client's key (RFC 6455 1.3). */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* A publish with a batch of events: 1000 events of ~40 bytes, with room. */
#define PUB_REQ_SIZE (512 * 1024)
#define PUB_BIT (1ULL << 63)
#define CTRL_ID (1ULL << 62)

/* ST_STREAM: an SSE subscriber whose 200 head (or a WebSocket whose 101) has
 * been read: what follows is events (frames). */
enum state { ST_NEW, ST_CONNECTING, ST_WAITING, ST_STREAM, ST_DEAD };
enum answer_mode { ANSWER_STATE, ANSWER_MESSAGE };

/* Bytes a connection could not write or has read only in part. */
struct pend {
    uint32_t len, off;
    char data[];
};

/* One held long-poll request; 48 bytes. */
struct conn {
    int fd;
    uint32_t user, device;
    uint32_t seen;   /* highest state or message number delivered */
    uint32_t msgs;   /* answers that delivered a new number */
    uint32_t lm;     /* nchan: Last-Modified of the last message (Unix time), 0: none */
    uint32_t etag;   /* nchan: its Etag */
    uint8_t state, group, fails, pend_out;
    uint64_t t_deliver; /* CLOCK_MONOTONIC ns of the last delivery */
    struct pend *pend;
};

struct pubc {
    int fd;
    int state;
    uint64_t target;  /* the first of the request's targets (the next ones are +procs each) */
    uint32_t nitems;  /* targets in the request in flight */
    int fails;
    struct pend *pend;
    int pend_out;
};

struct group {
    int used;
    uint32_t first_user, users, devices;
    size_t base, count; /* this child's connections: conns[base .. base+count) */
    uint64_t next_j;    /* next group-wide index to open (this child's share) */
    uint64_t total;     /* USERS * DEVICES over all children */
};

/* Totals since start, for "stats". */
struct counters {
    uint64_t answers, deliveries, renewals, errors, reconnects, gaps, dups, dead, failed_connects;
};

static struct {
    /* configuration (shared by all children) */
    struct in_addr host;
    int port, procs, sources;
    char *sub_tpl, *pub_tpl;
    enum answer_mode mode;
    int sse; /* --answer sse-state / sse-message: the held request is an event stream */
    int ws;  /* --answer ws-state / ws-message: the held request is a WebSocket */
    char *ws_send;       /* --ws-send: the text frame sent after the 101, or NULL */
    size_t ws_send_len;
    char ws_proto[64];   /* the Sec-WebSocket-Protocol the --sub template asks for, or "" */
    uint64_t ws_seed;    /* this process's random seed of the keys */
    uint64_t mask_rng;   /* the frames' masking keys (xorshift64) */
    char *tokens;
    uint32_t *tok_off;
    size_t ntokens;
    char *ptoken;
    uint32_t hb;
    /* this child */
    int id, ctrl, ep;
    struct conn *conns;
    size_t nconns, cap;
    struct group groups[MAX_GROUPS];
    struct counters c;
    int inflight;
    char *rbuf;
    char ctrl_buf[1024];
    size_t ctrl_len;
    /* the command in progress */
    enum { CMD_NONE, CMD_OPEN, CMD_WAIT, CMD_PUB } cmd;
    int cmd_group;
    uint64_t opened, open_failed, t_cmd;
    uint32_t wait_target;
    uint64_t wait_deadline, wait_done;
    char wait_path[512];
    /* publishing */
    struct pubc *pubs;
    int npubs;
    char pub_prefix[64];
    uint64_t pub_first, pub_mod, pub_count, pub_next, pub_ok, pub_bad, pub_answered, pub_total;
    uint32_t pub_seq, pub_batch;
    char *pub_item_tpl;
    char *pub_buf;
    uint64_t pub_t0, pub_t1;
} G;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        die("out of memory (%zu bytes)", n);
    return p;
}

/* Templates are given with C escapes (\r \n \\) so they fit in one argument. */
static char *unescape(const char *s)
{
    char *out = xmalloc(strlen(s) + 1), *o = out;
    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            *o++ = *s == 'r' ? '\r' : *s == 'n' ? '\n' : *s;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

/* Tokens file: one token per line, line k for user k. Loaded before the
 * fork, so every child shares the pages. */
static void load_tokens(const char *path)
{
    FILE *f = fopen(path, "r");
    long size;
    size_t cap = 1024;

    if (f == NULL)
        die("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    G.tokens = xmalloc((size_t)size + 1);
    if (fread(G.tokens, 1, (size_t)size, f) != (size_t)size)
        die("cannot read %s", path);
    fclose(f);
    G.tokens[size] = '\0';
    G.tok_off = xmalloc(cap * sizeof(uint32_t));
    for (long i = 0; i < size;) {
        if (G.ntokens == cap)
            G.tok_off = realloc(G.tok_off, (cap *= 2) * sizeof(uint32_t));
        G.tok_off[G.ntokens++] = (uint32_t)i;
        char *nl = memchr(G.tokens + i, '\n', (size_t)(size - i));
        if (nl == NULL)
            break;
        *nl = '\0';
        i = nl - G.tokens + 1;
    }
}

/* ---------------------------------------------------------------- requests */

struct vars {
    uint32_t user, device, seq, lm, etag;
    const char *prefix;
    uint64_t target;
    const char *items; /* {items}: the publish's events, already expanded */
    size_t items_len;
    const char *wskey; /* {wskey}: the connection's Sec-WebSocket-Key, or NULL */
};

static size_t put(char *out, size_t at, size_t cap, const char *s, size_t n)
{
    if (at + n < cap)
        memcpy(out + at, s, n);
    return at + n;
}

static size_t put_u(char *out, size_t at, size_t cap, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    return put(out, at, cap, num, (size_t)n);
}

/* Expands 'tpl' into 'out' with {len} = 'len'. Returns the length (which
 * may exceed cap: the caller checks). */
static size_t expand(const char *tpl, const struct vars *v, size_t len, char *out, size_t cap)
{
    size_t at = 0;
    for (const char *p = tpl; *p;) {
        if (*p != '{') {
            const char *q = strchr(p, '{');
            size_t n = q ? (size_t)(q - p) : strlen(p);
            at = put(out, at, cap, p, n);
            p += n;
            continue;
        }
        /* A placeholder is {lowercase letters}; any other brace (JSON) is literal. */
        const char *end = p + 1;
        while (*end >= 'a' && *end <= 'z')
            end++;
        if (*end != '}' || end == p + 1) {
            at = put(out, at, cap, p, 1);
            p++;
            continue;
        }
        size_t n = (size_t)(end - p + 1);
        if (n == 6 && memcmp(p, "{user}", 6) == 0) {
            at = put_u(out, at, cap, v->user);
        } else if (n == 8 && memcmp(p, "{device}", 8) == 0) {
            at = put_u(out, at, cap, v->device);
        } else if (n == 5 && memcmp(p, "{seq}", 5) == 0) {
            at = put_u(out, at, cap, v->seq);
        } else if (n == 4 && memcmp(p, "{hb}", 4) == 0) {
            at = put_u(out, at, cap, G.hb);
        } else if (n == 5 && memcmp(p, "{len}", 5) == 0) {
            at = put_u(out, at, cap, len);
        } else if (n == 8 && memcmp(p, "{target}", 8) == 0) {
            at = put_u(out, at, cap, v->target);
        } else if (n == 8 && memcmp(p, "{prefix}", 8) == 0) {
            at = put(out, at, cap, v->prefix, strlen(v->prefix));
        } else if (n == 8 && memcmp(p, "{ptoken}", 8) == 0) {
            at = put(out, at, cap, G.ptoken ? G.ptoken : "", G.ptoken ? strlen(G.ptoken) : 0);
        } else if (n == 7 && memcmp(p, "{token}", 7) == 0) {
            if (v->user >= G.ntokens)
                die("no token for user %u (the tokens file has %zu)", v->user, G.ntokens);
            const char *t = G.tokens + G.tok_off[v->user];
            at = put(out, at, cap, t, strlen(t));
        } else if (n == 7 && memcmp(p, "{wskey}", 7) == 0) {
            at = put(out, at, cap, v->wskey ? v->wskey : "", v->wskey ? strlen(v->wskey) : 0);
        } else if (n == 7 && memcmp(p, "{items}", 7) == 0) {
            at = put(out, at, cap, v->items ? v->items : "", v->items_len);
        } else if (n == 8 && memcmp(p, "{resume}", 8) == 0) {
            if (v->lm != 0) {
                char line[96];
                time_t t = (time_t)v->lm;
                struct tm tm;
                gmtime_r(&t, &tm);
                size_t k = strftime(line, sizeof(line),
                                    "If-Modified-Since: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
                at = put(out, at, cap, line, k);
                k = (size_t)snprintf(line, sizeof(line), "If-None-Match: %u\r\n", v->etag);
                at = put(out, at, cap, line, k);
            }
        } else {
            at = put(out, at, cap, p, n);
        }
        p = end + 1;
    }
    return at;
}

/* A whole request from 'tpl': expanded once to learn the body's length, then with it. */
static size_t build(const char *tpl, const struct vars *v, char *out, size_t cap)
{
    size_t n = expand(tpl, v, 0, out, cap);
    if (n >= cap)
        die("a request is longer than %zu bytes", cap);
    char *blank = memmem(out, n, "\r\n\r\n", 4);
    size_t body = blank ? n - (size_t)(blank + 4 - out) : 0;
    n = expand(tpl, v, body, out, cap);
    if (n >= cap)
        die("a request is longer than %zu bytes", cap);
    return n;
}

/* ---------------------------------------------------------------- answers */

struct resp {
    int status;
    int close;
    const char *body;
    size_t body_len;
    uint32_t lm, etag;
    int has_lm;
};

static int header_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && strncasecmp(line, name, k) == 0 && line[k] == ':';
}

static const char *header_value(const char *line, size_t n, size_t name_len, size_t *vlen)
{
    const char *v = line + name_len + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    *vlen = (size_t)(e - v);
    return v;
}

/* Parses one response at 'b'. Returns its length, 0 if incomplete, -1 if
 * malformed or chunked (neither server sends chunked answers here). */
static long parse_response(const char *b, size_t n, struct resp *r)
{
    const char *hend = memmem(b, n, "\r\n\r\n", 4);
    long cl = -1;

    memset(r, 0, sizeof(*r));
    if (hend == NULL)
        return n > 16384 ? -1 : 0;
    if (n < 12 || memcmp(b, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(b + 9);
    const char *line = (const char *)memchr(b, '\n', (size_t)(hend + 2 - b)) + 1;
    while (line < hend + 2) {
        const char *eol = memmem(line, (size_t)(hend + 2 - line), "\r\n", 2);
        size_t len = (size_t)(eol - line), vlen;
        const char *v;
        if (header_is(line, len, "Content-Length")) {
            v = header_value(line, len, 14, &vlen);
            cl = strtol(v, NULL, 10);
        } else if (header_is(line, len, "Connection")) {
            v = header_value(line, len, 10, &vlen);
            r->close = vlen >= 5 && strncasecmp(v, "close", 5) == 0;
        } else if (header_is(line, len, "Transfer-Encoding")) {
            return -1;
        } else if (header_is(line, len, "Last-Modified")) {
            char date[64];
            struct tm tm;
            v = header_value(line, len, 13, &vlen);
            if (vlen < sizeof(date)) {
                memcpy(date, v, vlen);
                date[vlen] = '\0';
                memset(&tm, 0, sizeof(tm));
                if (strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL) {
                    r->lm = (uint32_t)timegm(&tm);
                    r->has_lm = 1;
                }
            }
        } else if (header_is(line, len, "Etag")) {
            v = header_value(line, len, 4, &vlen);
            if (vlen > 0 && *v == '"')
                v++;
            r->etag = (uint32_t)strtoul(v, NULL, 10);
        }
        line = eol + 2;
    }
    if (cl < 0)
        cl = 0;
    size_t total = (size_t)(hend + 4 - b) + (size_t)cl;
    if (total > n)
        return total > RBUF_SIZE ? -1 : 0;
    r->body = hend + 4;
    r->body_len = (size_t)cl;
    return (long)total;
}

/* nudge: the number after "INBOX":" in the body, or 0. */
static uint32_t json_state(const char *body, size_t n)
{
    const char *p = memmem(body, n, "\"INBOX\":\"", 9);
    return p ? (uint32_t)strtoul(p + 9, NULL, 10) : 0;
}

/* ------------------------------------------------------------- connections */

static void send_sub(struct conn *c);
static void reconnect(struct conn *c);
static void deliver(struct conn *c, uint32_t n);

static void ep_set(int fd, uint32_t events, uint64_t id, int op)
{
    struct epoll_event ev = {.events = events, .data.u64 = id};
    if (epoll_ctl(G.ep, op, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* A non-blocking socket connecting from source address number 'src'.
 * Returns the fd (connecting or connected), or -1. */
static int dial(uint64_t src, int *connected)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    from.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(src % (uint64_t)G.sources));
    if (bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0) {
        close(fd);
        return -1;
    }
    to.sin_addr = G.host;
    to.sin_port = htons((uint16_t)G.port);
    *connected = 0;
    if (connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0) {
        *connected = 1;
    } else if (errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void conn_drop_pend(struct conn *c)
{
    free(c->pend);
    c->pend = NULL;
    c->pend_out = 0;
}

static void conn_fail(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    conn_drop_pend(c);
    if (c->state == ST_CONNECTING)
        G.inflight--;
    if (++c->fails >= MAX_FAILS) {
        c->state = ST_DEAD;
        G.c.dead++;
        return;
    }
    G.c.reconnects++;
    reconnect(c);
}

static uint64_t conn_id(const struct conn *c)
{
    return (uint64_t)(c - G.conns);
}

static void conn_start(struct conn *c, uint64_t src)
{
    int connected;
    c->fd = dial(src, &connected);
    if (c->fd < 0) {
        G.c.failed_connects++;
        c->state = ST_DEAD;
        G.c.dead++;
        return;
    }
    if (connected) {
        c->state = ST_WAITING;
        ep_set(c->fd, EPOLLIN, conn_id(c), EPOLL_CTL_ADD);
        send_sub(c);
    } else {
        c->state = ST_CONNECTING;
        G.inflight++;
        ep_set(c->fd, EPOLLOUT, conn_id(c), EPOLL_CTL_ADD);
    }
}

static void reconnect(struct conn *c)
{
    conn_start(c, conn_id(c) + c->fails);
}

/* Writes 'n' bytes of 'req'; keeps what the socket did not take. 0, or -1 on error. */
static int write_or_keep(int fd, const char *req, size_t n, struct pend **pend, int *pend_out)
{
    ssize_t w = send(fd, req, n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN)
        return -1;
    if (w < 0)
        w = 0;
    if ((size_t)w < n) {
        *pend = xmalloc(sizeof(struct pend) + n - (size_t)w);
        (*pend)->len = (uint32_t)(n - (size_t)w);
        (*pend)->off = 0;
        memcpy((*pend)->data, req + w, n - (size_t)w);
        *pend_out = 1;
    }
    return 0;
}

static void ws_key(const struct conn *c, char out[25]);

static void send_sub(struct conn *c)
{
    char req[REQ_SIZE], key[25];
    struct vars v = {.user = c->user, .device = c->device, .seq = c->seen, .lm = c->lm,
                     .etag = c->etag, .prefix = ""};
    if (G.ws) {
        ws_key(c, key);
        v.wskey = key;
    }
    size_t n = build(G.sub_tpl, &v, req, sizeof(req));

    if (write_or_keep(c->fd, req, n, &c->pend, (int[]){0}) < 0) {
        conn_fail(c);
        return;
    }
    if (c->pend != NULL) {
        c->pend_out = 1;
        ep_set(c->fd, EPOLLOUT, conn_id(c), EPOLL_CTL_MOD);
    }
}

/* Counts one answer of a held request. Returns 0, or -1 for an answer that
 * is neither a delivery nor a renewal (an error: the caller counts it as a
 * failure, so a request the server keeps refusing is given up). */
static int on_answer(struct conn *c, const struct resp *r)
{
    uint32_t n = 0;
    int delivered = 0;

    G.c.answers++;
    if (G.mode == ANSWER_STATE) {
        if (r->status == 200 && memmem(r->body, r->body_len, "\"status\":\"changed\"", 18)) {
            n = json_state(r->body, r->body_len);
            delivered = 1;
        } else if (r->status == 200 && memmem(r->body, r->body_len, "\"status\":\"expired\"", 18)) {
            G.c.renewals++;
        } else {
            G.c.errors++;
            if (G.c.errors <= 3)
                fprintf(stderr, "loadgen[%d]: unexpected answer %d: %.*s\n", G.id, r->status,
                        (int)(r->body_len > 200 ? 200 : r->body_len), r->body);
            return -1;
        }
    } else {
        if (r->status == 200) {
            n = (uint32_t)strtoul(r->body, NULL, 10);
            delivered = 1;
            if (r->has_lm) {
                c->lm = r->lm;
                c->etag = r->etag;
            }
        } else if (r->status == 408 || r->status == 304) {
            G.c.renewals++;
        } else {
            G.c.errors++;
            if (G.c.errors <= 3)
                fprintf(stderr, "loadgen[%d]: unexpected answer %d\n", G.id, r->status);
            return -1;
        }
    }
    if (!delivered)
        return 0;
    deliver(c, n);
    return 0;
}

/* Number n has reached c (an answer or a stream's event). */
static void deliver(struct conn *c, uint32_t n)
{
    if (n <= c->seen) {
        G.c.dups++;
        return;
    }
    /* A message stream must not skip a number; folder states may (one
     * answer tells of every change since the state presented). */
    if (G.mode == ANSWER_MESSAGE && n > c->seen + 1)
        G.c.gaps += n - c->seen - 1;
    if (G.cmd == CMD_WAIT && G.cmd_group == c->group && c->seen < G.wait_target &&
        n >= G.wait_target)
        G.wait_done++;
    c->seen = n;
    c->msgs++;
    c->t_deliver = now_ns();
    G.c.deliveries++;
}

/* An SSE subscriber's bytes, G.rbuf[0 .. have): the head (ST_WAITING), then
 * events, one delivery per data: line. A partial line is kept for the next read. */
static void on_stream_bytes(struct conn *c, size_t have)
{
    char *b = G.rbuf, *end = G.rbuf + have;

    if (c->state == ST_WAITING) {
        struct resp r;
        long used = parse_response(b, have, &r);
        if (used == 0) {
            c->pend = xmalloc(sizeof(struct pend) + have);
            c->pend->len = (uint32_t)have;
            c->pend->off = 0;
            memcpy(c->pend->data, b, have);
            return;
        }
        const char *hend = used > 0 ? memmem(b, have, "\r\n\r\n", 4) : NULL;
        if (used < 0 || r.status != 200 || hend == NULL ||
            memmem(b, (size_t)(hend - b), "text/event-stream", 17) == NULL) {
            G.c.answers++;
            G.c.errors++;
            if (G.c.errors <= 3)
                fprintf(stderr, "loadgen[%d]: not a stream: %.*s\n", G.id,
                        (int)(have > 300 ? 300 : have), b);
            conn_fail(c);
            return;
        }
        G.c.answers++;
        c->state = ST_STREAM;
        c->fails = 0;
        b = (char *)hend + 4;
    }
    for (;;) {
        char *nl = memchr(b, '\n', (size_t)(end - b));
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - b);
        if (len > 5 && memcmp(b, "data:", 5) == 0) {
            uint32_t n;
            if (G.mode == ANSWER_STATE) {
                n = json_state(b + 5, len - 5);
            } else {
                const char *v = b + 5;
                while (v < nl && *v == ' ')
                    v++;
                n = (uint32_t)strtoul(v, NULL, 10);
            }
            if (n > 0)
                deliver(c, n);
        }
        b = nl + 1;
    }
    if (b < end) {
        if (end - b > 16384) { /* no event line is this long */
            G.c.errors++;
            conn_fail(c);
            return;
        }
        c->pend = xmalloc(sizeof(struct pend) + (size_t)(end - b));
        c->pend->len = (uint32_t)(end - b);
        c->pend->off = 0;
        memcpy(c->pend->data, b, (size_t)(end - b));
    }
}

/* ------------------------------------------------------------- WebSockets */

/* splitmix64: a well-mixed 64-bit value of x (the keys from the seed). */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* c's Sec-WebSocket-Key: 16 bytes from this process's seed and c's index, in
 * base64 (24 characters and a NUL). The same for every handshake of c, so
 * nothing is stored per connection to check the server's answer. */
static void ws_key(const struct conn *c, char out[25])
{
    unsigned char raw[16];
    uint64_t a = mix64(G.ws_seed ^ conn_id(c)), b = mix64(a ^ G.ws_seed);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
}

/* The Sec-WebSocket-Accept a server must answer 'key' with (RFC 6455 4.2.2):
 * base64(SHA-1(key + GUID)), 28 characters and a NUL. */
static void ws_accept(const char *key, char out[29])
{
    char buf[64];
    unsigned char md[SHA_DIGEST_LENGTH];
    int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)buf, (size_t)n, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

/* The value of header 'name' in the head b[0 .. n), or NULL. */
static const char *find_header(const char *b, size_t n, const char *name, size_t *vlen)
{
    const char *end = b + n, *line = memchr(b, '\n', n);
    size_t k = strlen(name);
    while (line != NULL && ++line < end) {
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        if (eol == NULL || eol == line)
            return NULL;
        size_t len = (size_t)(eol - line);
        if (header_is(line, len, name))
            return header_value(line, len, k, vlen);
        line = memchr(line, '\n', (size_t)(end - line));
    }
    return NULL;
}

/* Is the head b[0 .. n) the 101 that accepts c's handshake? */
static int ws_head_ok(const struct conn *c, const char *b, size_t n, int status)
{
    char key[25], want[29];
    size_t vlen;
    const char *v;

    if (status != 101)
        return 0;
    v = find_header(b, n, "Upgrade", &vlen);
    if (v == NULL || vlen != 9 || strncasecmp(v, "websocket", 9) != 0)
        return 0;
    ws_key(c, key);
    ws_accept(key, want);
    v = find_header(b, n, "Sec-WebSocket-Accept", &vlen);
    if (v == NULL || vlen != 28 || memcmp(v, want, 28) != 0)
        return 0;
    if (G.ws_proto[0] != '\0') {
        v = find_header(b, n, "Sec-WebSocket-Protocol", &vlen);
        if (v == NULL || vlen != strlen(G.ws_proto) || memcmp(v, G.ws_proto, vlen) != 0)
            return 0;
    }
    return 1;
}

/* Sends one masked frame (a client's frames are masked, RFC 6455 5.3) of
 * opcode op and payload p[0 .. n), n <= WS_SEND_MAX. 0, or -1 when the
 * socket did not take all of it: the frames sent here are a few dozen
 * bytes on an otherwise quiet socket, so a short write means the connection
 * is broken (and a kept half-frame could not share c->pend with a half-read
 * frame). */
static int ws_send_frame(struct conn *c, unsigned op, const char *p, size_t n)
{
    unsigned char f[8 + WS_SEND_MAX];
    size_t at = 0;
    G.mask_rng ^= G.mask_rng << 13;
    G.mask_rng ^= G.mask_rng >> 7;
    G.mask_rng ^= G.mask_rng << 17;
    uint32_t mask = (uint32_t)G.mask_rng;

    f[at++] = (unsigned char)(0x80 | op); /* FIN: one frame per message */
    if (n < 126) {
        f[at++] = (unsigned char)(0x80 | n);
    } else {
        f[at++] = 0x80 | 126;
        f[at++] = (unsigned char)(n >> 8);
        f[at++] = (unsigned char)n;
    }
    memcpy(f + at, &mask, 4);
    for (size_t i = 0; i < n; i++)
        f[at + 4 + i] = (unsigned char)p[i] ^ f[at + (i & 3)];
    at += 4 + n;
    ssize_t w = send(c->fd, f, at, MSG_NOSIGNAL);
    return w == (ssize_t)at ? 0 : -1;
}

/* The decimal number at p[0 .. n) (spaces before it skipped), or 0. */
static uint32_t parse_u32(const unsigned char *p, size_t n)
{
    uint32_t v = 0;
    size_t i = 0;
    while (i < n && p[i] == ' ')
        i++;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        v = v * 10 + (uint32_t)(p[i] - '0');
    return v;
}

/* Keeps the unread bytes p[0 .. n) of c for its next read. */
static void keep_in(struct conn *c, const void *p, size_t n)
{
    c->pend = xmalloc(sizeof(struct pend) + n);
    c->pend->len = (uint32_t)n;
    c->pend->off = 0;
    memcpy(c->pend->data, p, n);
}

static void ws_unexpected(struct conn *c, const char *why, const void *p, size_t n)
{
    G.c.errors++;
    if (G.c.errors <= 3)
        fprintf(stderr, "loadgen[%d]: %s: %.*s\n", G.id, why, (int)(n > 300 ? 300 : n),
                (const char *)p);
    conn_fail(c);
}

/* A WebSocket's bytes, G.rbuf[0 .. have): the 101 head (ST_WAITING), then
 * the server's frames, unmasked; a partial frame is kept for the next read. */
static void on_ws_bytes(struct conn *c, size_t have)
{
    unsigned char *b = (unsigned char *)G.rbuf, *end = b + have;

    if (c->state == ST_WAITING) {
        struct resp r;
        long used = parse_response(G.rbuf, have, &r);
        if (used == 0) {
            keep_in(c, b, have);
            return;
        }
        G.c.answers++;
        if (used < 0 || !ws_head_ok(c, G.rbuf, (size_t)used, r.status)) {
            ws_unexpected(c, "not a WebSocket", b, have);
            return;
        }
        /* c->fails is reset by the first good frame, not here: a server that
         * accepts and then sends what cannot be read must not be reconnected
         * forever (nchan sends its oldest message again on each one). */
        c->state = ST_STREAM;
        b += used;
        if (G.ws_send != NULL && ws_send_frame(c, 0x1, G.ws_send, G.ws_send_len) < 0) {
            conn_fail(c);
            return;
        }
    }
    while (end - b >= 2) {
        unsigned op = b[0] & 0x0f;
        uint64_t len = b[1] & 0x7f;
        size_t hl = 2;
        if ((b[1] & 0x80) || (b[0] & 0x70)) {
            ws_unexpected(c, "a masked frame or reserved bits from the server", b,
                          (size_t)(end - b));
            return;
        }
        if (len == 126) {
            if (end - b < 4)
                break;
            len = (uint64_t)b[2] << 8 | b[3];
            hl = 4;
        } else if (len == 127) {
            if (end - b < 10)
                break;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | b[i];
            hl = 10;
        }
        /* Both servers' messages are a few hundred bytes: a frame must fit in the read buffer. */
        if (len > RBUF_SIZE / 2) {
            ws_unexpected(c, "a frame too long", b, (size_t)(end - b));
            return;
        }
        if ((uint64_t)(end - b) < hl + len)
            break;
        const unsigned char *pl = b + hl;
        if (op == 0x1 || op == 0x2) {
            if (!(b[0] & 0x80)) {
                ws_unexpected(c, "a fragmented message", pl, (size_t)len);
                return;
            }
            uint32_t n = G.mode == ANSWER_STATE ? json_state((const char *)pl, (size_t)len)
                                                : parse_u32(pl, (size_t)len);
            if (n > 0)
                deliver(c, n);
        } else if (op == 0x9) {
            G.c.renewals++;
            if (len > 125 || ws_send_frame(c, 0xA, (const char *)pl, (size_t)len) < 0) {
                conn_fail(c);
                return;
            }
        } else if (op == 0x8) {
            conn_fail(c); /* the server closes: reconnect, counted */
            return;
        } else if (op != 0xA) {
            ws_unexpected(c, "a frame of unknown opcode", b, (size_t)(end - b));
            return;
        }
        c->fails = 0; /* a good frame */
        b += hl + (size_t)len;
    }
    if (b < end)
        keep_in(c, b, (size_t)(end - b));
}

static void on_conn(struct conn *c, uint32_t events)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            conn_fail(c);
            return;
        }
        G.inflight--;
        c->state = ST_WAITING;
        ep_set(c->fd, EPOLLIN, conn_id(c), EPOLL_CTL_MOD);
        send_sub(c);
        return;
    }
    if (c->state != ST_WAITING && c->state != ST_STREAM)
        return;
    if (c->pend_out) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            conn_fail(c);
            return;
        }
        struct pend *p = c->pend;
        ssize_t w = send(c->fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            conn_fail(c);
            return;
        }
        if (w > 0)
            p->off += (uint32_t)w;
        if (p->off == p->len) {
            conn_drop_pend(c);
            ep_set(c->fd, EPOLLIN, conn_id(c), EPOLL_CTL_MOD);
        }
        return;
    }
    /* Read: into the shared buffer, after any partial answer kept earlier. */
    size_t have = 0;
    if (c->pend != NULL) {
        have = c->pend->len;
        memcpy(G.rbuf, c->pend->data, have);
        conn_drop_pend(c);
    }
    ssize_t r = read(c->fd, G.rbuf + have, RBUF_SIZE - have);
    if (r < 0 && errno == EAGAIN && have == 0)
        return;
    if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
        conn_fail(c); /* closed or reset: reconnect and ping again */
        return;
    }
    if (r > 0)
        have += (size_t)r;
    if (G.sse) {
        on_stream_bytes(c, have);
        return;
    }
    if (G.ws) {
        on_ws_bytes(c, have);
        return;
    }
    struct resp resp;
    long used = parse_response(G.rbuf, have, &resp);
    if (used < 0) {
        G.c.errors++;
        conn_fail(c);
        return;
    }
    if (used == 0) {
        c->pend = xmalloc(sizeof(struct pend) + have);
        c->pend->len = (uint32_t)have;
        c->pend->off = 0;
        memcpy(c->pend->data, G.rbuf, have);
        return;
    }
    if (on_answer(c, &resp) < 0) {
        conn_fail(c);
        return;
    }
    c->fails = 0;
    if (resp.close) {
        close(c->fd);
        c->fd = -1;
        G.c.reconnects++;
        reconnect(c);
        return;
    }
    send_sub(c); /* the device keeps polling */
}

/* -------------------------------------------------------------- publishing */

static void pub_send(struct pubc *p);

static void pub_dial(struct pubc *p, int index)
{
    int connected;
    p->fd = dial((uint64_t)index + 7, &connected);
    if (p->fd < 0)
        die("publisher cannot connect: %s", strerror(errno));
    p->state = connected ? ST_WAITING : ST_CONNECTING;
    ep_set(p->fd, connected ? EPOLLIN : EPOLLOUT, PUB_BIT | (uint64_t)index, EPOLL_CTL_ADD);
    if (connected)
        pub_send(p);
}

/* Gives p the next (up to) pub_batch targets of this child. */
static void pub_take(struct pubc *p)
{
    uint64_t left = (G.pub_count - G.pub_next + (uint64_t)G.procs - 1) / (uint64_t)G.procs;
    p->target = G.pub_next;
    p->nitems = (uint32_t)(left < G.pub_batch ? left : G.pub_batch);
    G.pub_next += (uint64_t)p->nitems * (uint64_t)G.procs;
}

/* Takes the next targets and sends their publish; or closes p when none is left. */
static void pub_next(struct pubc *p)
{
    if (G.pub_next >= G.pub_count) {
        close(p->fd);
        p->fd = -1;
        p->state = ST_DEAD;
        return;
    }
    pub_take(p);
    pub_send(p);
}

static void pub_send(struct pubc *p)
{
    char *req = G.pub_buf, *items = G.pub_buf + PUB_REQ_SIZE;
    struct vars v = {.seq = G.pub_seq, .prefix = G.pub_prefix,
                     .target = G.pub_first + p->target % G.pub_mod};
    size_t at = 0;
    /* {items}: one --pub-item per target, comma separated (a batch of events). */
    for (uint32_t k = 0; G.pub_item_tpl != NULL && k < p->nitems; k++) {
        struct vars iv = v;
        iv.target = G.pub_first + (p->target + (uint64_t)k * (uint64_t)G.procs) % G.pub_mod;
        if (k > 0)
            at = put(items, at, PUB_REQ_SIZE, ",", 1);
        at += expand(G.pub_item_tpl, &iv, 0, items + at, at < PUB_REQ_SIZE ? PUB_REQ_SIZE - at : 0);
        if (at >= PUB_REQ_SIZE)
            die("a batch of %u events is longer than %d bytes", p->nitems, PUB_REQ_SIZE);
    }
    v.items = items;
    v.items_len = at;
    size_t n = build(G.pub_tpl, &v, req, PUB_REQ_SIZE);
    if (G.pub_t0 == 0)
        G.pub_t0 = now_ns();
    if (write_or_keep(p->fd, req, n, &p->pend, &p->pend_out) < 0)
        die("publisher: write: %s", strerror(errno));
    if (p->pend != NULL)
        ep_set(p->fd, EPOLLOUT, PUB_BIT | (uint64_t)(p - G.pubs), EPOLL_CTL_MOD);
}

static void on_pub(struct pubc *p, uint32_t events)
{
    int index = (int)(p - G.pubs);
    if (p->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0)
            die("publisher cannot connect: %s", strerror(err));
        p->state = ST_WAITING;
        ep_set(p->fd, EPOLLIN, PUB_BIT | (uint64_t)index, EPOLL_CTL_MOD);
        pub_send(p);
        return;
    }
    if (p->state != ST_WAITING)
        return;
    if (p->pend_out) {
        struct pend *q = p->pend;
        ssize_t w = send(p->fd, q->data + q->off, q->len - q->off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            die("publisher: write: %s", strerror(errno));
        if (w > 0)
            q->off += (uint32_t)w;
        if (q->off == q->len) {
            free(q);
            p->pend = NULL;
            p->pend_out = 0;
            ep_set(p->fd, EPOLLIN, PUB_BIT | (uint64_t)index, EPOLL_CTL_MOD);
        }
        return;
    }
    (void)events;
    size_t have = 0;
    if (p->pend != NULL) {
        have = p->pend->len;
        memcpy(G.rbuf, p->pend->data, have);
        free(p->pend);
        p->pend = NULL;
    }
    ssize_t r = read(p->fd, G.rbuf + have, RBUF_SIZE - have);
    if (r < 0 && errno == EAGAIN)
        return;
    if (r <= 0) {
        /* The server closed a keep-alive connection: publish this target again on a new one. */
        close(p->fd);
        if (++p->fails > MAX_FAILS)
            die("publisher: the server keeps closing the connection");
        pub_dial(p, index);
        return;
    }
    have += (size_t)r;
    struct resp resp;
    long used = parse_response(G.rbuf, have, &resp);
    if (used < 0)
        die("publisher: malformed answer");
    if (used == 0) {
        p->pend = xmalloc(sizeof(struct pend) + have);
        p->pend->len = (uint32_t)have;
        p->pend->off = 0;
        memcpy(p->pend->data, G.rbuf, have);
        return;
    }
    p->fails = 0;
    G.pub_answered += p->nitems;
    if (resp.status >= 200 && resp.status < 300) {
        G.pub_ok += p->nitems;
    } else {
        G.pub_bad += p->nitems;
        if (G.pub_bad <= 3 * p->nitems)
            fprintf(stderr, "loadgen[%d]: publish answered %d: %.*s\n", G.id, resp.status,
                    (int)(resp.body_len > 200 ? 200 : resp.body_len), resp.body);
    }
    G.pub_t1 = now_ns();
    if (resp.close) {
        /* Answered, but no more on this connection: the next target goes on a new one. */
        close(p->fd);
        p->fd = -1;
        p->state = ST_DEAD;
        if (G.pub_next < G.pub_count) {
            pub_take(p);
            pub_dial(p, index);
        }
        return;
    }
    pub_next(p);
}

/* ---------------------------------------------------------------- commands */

static void reply(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (write(G.ctrl, line, (size_t)n) != n)
        exit(1);
}

static void open_more(void)
{
    struct group *g = &G.groups[G.cmd_group];
    while (G.inflight < MAX_INFLIGHT && g->next_j < g->total) {
        uint64_t j = g->next_j;
        g->next_j += (uint64_t)G.procs;
        struct conn *c = &G.conns[g->base + g->count++];
        memset(c, 0, sizeof(*c));
        c->fd = -1;
        c->group = (uint8_t)G.cmd_group;
        c->user = g->first_user + (uint32_t)(j % g->users);
        c->device = (uint32_t)(j / g->users);
        conn_start(c, j);
    }
}

static void check_command(void)
{
    uint64_t now;
    switch (G.cmd) {
    case CMD_NONE:
        return;
    case CMD_OPEN: {
        struct group *g = &G.groups[G.cmd_group];
        open_more();
        if (g->next_j < g->total || G.inflight > 0)
            return;
        uint64_t dead = 0;
        for (size_t i = 0; i < g->count; i++)
            dead += G.conns[g->base + i].state == ST_DEAD;
        G.cmd = CMD_NONE;
        reply("ok opened=%zu failed=%llu max_ns=%llu", g->count - dead, (unsigned long long)dead,
              (unsigned long long)(now_ns() - G.t_cmd));
        return;
    }
    case CMD_WAIT: {
        struct group *g = &G.groups[G.cmd_group];
        now = now_ns();
        if (G.wait_done < g->count && now < G.wait_deadline)
            return;
        uint64_t lost = 0, dead = 0;
        char path[600];
        FILE *f = NULL;
        if (strcmp(G.wait_path, "-") != 0) {
            snprintf(path, sizeof(path), "%s.%d", G.wait_path, G.id);
            f = fopen(path, "wb");
            if (f == NULL)
                die("cannot write %s: %s", path, strerror(errno));
        }
        for (size_t i = 0; i < g->count; i++) {
            struct conn *c = &G.conns[g->base + i];
            uint64_t t = c->seen >= G.wait_target ? c->t_deliver : 0;
            if (c->seen < G.wait_target)
                lost += G.wait_target - c->seen;
            dead += c->state == ST_DEAD;
            if (f != NULL)
                fwrite(&t, sizeof(t), 1, f);
        }
        if (f != NULL)
            fclose(f);
        G.cmd = CMD_NONE;
        reply("ok conns=%zu done=%llu short=%llu lost=%llu gaps=%llu dups=%llu dead=%llu "
              "max_ns=%llu",
              g->count, (unsigned long long)G.wait_done,
              (unsigned long long)(g->count - G.wait_done), (unsigned long long)lost,
              (unsigned long long)G.c.gaps, (unsigned long long)G.c.dups,
              (unsigned long long)dead, (unsigned long long)(now - G.t_cmd));
        return;
    }
    case CMD_PUB:
        if (G.pub_answered < G.pub_total)
            return;
        for (int i = 0; i < G.npubs; i++)
            if (G.pubs[i].fd >= 0) {
                close(G.pubs[i].fd);
                G.pubs[i].fd = -1;
            }
        free(G.pubs);
        G.pubs = NULL;
        G.npubs = 0;
        G.cmd = CMD_NONE;
        reply("ok ok=%llu bad=%llu min_t0=%llu max_t1=%llu", (unsigned long long)G.pub_ok,
              (unsigned long long)G.pub_bad,
              (unsigned long long)(G.pub_t0 ? G.pub_t0 : UINT64_MAX),
              (unsigned long long)G.pub_t1);
        return;
    }
}

static void command(char *line)
{
    char word[16];
    G.t_cmd = now_ns();
    if (sscanf(line, "%15s", word) != 1) {
        reply("err empty command");
        return;
    }
    if (strcmp(word, "open") == 0) {
        unsigned gi, first, users, devices;
        if (sscanf(line, "open %u %u %u %u", &gi, &first, &users, &devices) != 4 ||
            gi >= MAX_GROUPS || users == 0 || devices == 0 || G.groups[gi].used) {
            reply("err usage: open G FIRST USERS DEVICES (G 0..7, unused)");
            return;
        }
        struct group *g = &G.groups[gi];
        g->used = 1;
        g->first_user = first;
        g->users = users;
        g->devices = devices;
        g->total = (uint64_t)users * devices;
        g->next_j = (uint64_t)G.id;
        size_t share = (size_t)((g->total + (uint64_t)G.procs - 1) / (uint64_t)G.procs);
        if (G.nconns + share > G.cap) {
            G.cap = G.nconns + share;
            G.conns = realloc(G.conns, G.cap * sizeof(struct conn));
            if (G.conns == NULL)
                die("out of memory for %zu connections", G.cap);
        }
        memset(G.conns + G.nconns, 0, share * sizeof(struct conn));
        g->base = G.nconns;
        g->count = 0;
        G.nconns += share;
        G.cmd = CMD_OPEN;
        G.cmd_group = (int)gi;
    } else if (strcmp(word, "hb") == 0) {
        if (sscanf(line, "hb %u", &G.hb) != 1)
            reply("err usage: hb SECONDS");
        else
            reply("ok");
    } else if (strcmp(word, "wait") == 0) {
        unsigned gi, target;
        unsigned long long ms;
        if (sscanf(line, "wait %u %u %llu %511s", &gi, &target, &ms, G.wait_path) != 4 ||
            gi >= MAX_GROUPS || !G.groups[gi].used) {
            reply("err usage: wait G TARGET MS PATH (G opened)");
            return;
        }
        struct group *g = &G.groups[gi];
        G.wait_target = target;
        G.wait_done = 0;
        for (size_t i = 0; i < g->count; i++)
            G.wait_done += G.conns[g->base + i].seen >= target;
        G.wait_deadline = G.t_cmd + ms * 1000000ULL;
        G.cmd = CMD_WAIT;
        G.cmd_group = (int)gi;
    } else if (strcmp(word, "pub") == 0) {
        unsigned long long first, mod, count;
        unsigned seq, conns, batch = 1;
        int got = sscanf(line, "pub %63s %llu %llu %llu %u %u %u", G.pub_prefix, &first, &mod,
                         &count, &seq, &conns, &batch);
        if (got < 6 || mod == 0 || conns == 0 || batch == 0 ||
            (batch > 1 && G.pub_item_tpl == NULL)) {
            reply("err usage: pub PREFIX FIRST MOD COUNT SEQ CONNS [BATCH] (BATCH > 1 needs "
                  "--pub-item)");
            return;
        }
        G.pub_batch = batch;
        G.pub_first = first;
        G.pub_mod = mod;
        G.pub_count = count;
        G.pub_seq = seq;
        G.pub_next = (uint64_t)G.id;
        G.pub_total = count > (uint64_t)G.id ? (count - (uint64_t)G.id + (uint64_t)G.procs - 1) /
                                                   (uint64_t)G.procs
                                             : 0;
        G.pub_ok = G.pub_bad = G.pub_answered = 0;
        G.pub_t0 = G.pub_t1 = 0;
        /* This child's part of CONNS, at least one while it has targets. */
        G.npubs = (int)(conns / (unsigned)G.procs + ((unsigned)G.id < conns % (unsigned)G.procs));
        if (G.npubs == 0 && G.pub_total > 0)
            G.npubs = 1;
        if ((uint64_t)G.npubs > (G.pub_total + batch - 1) / batch)
            G.npubs = (int)((G.pub_total + batch - 1) / batch);
        G.pubs = calloc((size_t)G.npubs + 1, sizeof(struct pubc));
        G.cmd = CMD_PUB;
        for (int i = 0; i < G.npubs; i++) {
            struct pubc *p = &G.pubs[i];
            pub_take(p);
            pub_dial(p, i);
        }
    } else if (strcmp(word, "stats") == 0) {
        uint64_t open = 0, waiting = 0, streams = 0;
        for (size_t i = 0; i < G.nconns; i++) {
            open += G.conns[i].fd >= 0 && G.conns[i].state != ST_NEW;
            waiting += G.conns[i].state == ST_WAITING || G.conns[i].state == ST_STREAM;
            streams += G.conns[i].state == ST_STREAM;
        }
        reply("ok open=%llu waiting=%llu streams=%llu answers=%llu deliveries=%llu renewals=%llu "
              "errors=%llu reconnects=%llu gaps=%llu dups=%llu dead=%llu failed_connects=%llu",
              (unsigned long long)open, (unsigned long long)waiting, (unsigned long long)streams,
              (unsigned long long)G.c.answers, (unsigned long long)G.c.deliveries,
              (unsigned long long)G.c.renewals, (unsigned long long)G.c.errors,
              (unsigned long long)G.c.reconnects, (unsigned long long)G.c.gaps,
              (unsigned long long)G.c.dups, (unsigned long long)G.c.dead,
              (unsigned long long)G.c.failed_connects);
    } else if (strcmp(word, "quit") == 0) {
        reply("ok");
        exit(0);
    } else {
        reply("err unknown command '%s'", word);
    }
}

static void on_ctrl(void)
{
    ssize_t r = read(G.ctrl, G.ctrl_buf + G.ctrl_len, sizeof(G.ctrl_buf) - 1 - G.ctrl_len);
    if (r <= 0)
        exit(0); /* the parent is gone */
    G.ctrl_len += (size_t)r;
    char *nl;
    while ((nl = memchr(G.ctrl_buf, '\n', G.ctrl_len)) != NULL) {
        *nl = '\0';
        command(G.ctrl_buf);
        size_t rest = G.ctrl_len - (size_t)(nl + 1 - G.ctrl_buf);
        memmove(G.ctrl_buf, nl + 1, rest);
        G.ctrl_len = rest;
    }
}

static void child_loop(void)
{
    struct epoll_event evs[512];
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    G.rbuf = xmalloc(RBUF_SIZE);
    G.pub_buf = xmalloc(2 * PUB_REQ_SIZE);
    ep_set(G.ctrl, EPOLLIN, CTRL_ID, EPOLL_CTL_ADD);
    for (;;) {
        int timeout = -1;
        if (G.cmd == CMD_WAIT) {
            uint64_t now = now_ns();
            timeout = now >= G.wait_deadline ? 0 : (int)((G.wait_deadline - now) / 1000000 + 1);
        }
        int n = epoll_wait(G.ep, evs, 512, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint64_t id = evs[i].data.u64;
            if (id == CTRL_ID)
                on_ctrl();
            else if (id & PUB_BIT)
                on_pub(&G.pubs[id & ~PUB_BIT], evs[i].events);
            else
                on_conn(&G.conns[id], evs[i].events);
        }
        check_command();
    }
}

/* ------------------------------------------------------------------ parent */

/* Sums the children's "ok k=v ..." replies into one line. */
static void aggregate(char replies[][1024], int n, FILE *out)
{
    char keys[32][32];
    unsigned long long vals[32];
    int nkeys = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(replies[i], "ok", 2) != 0) {
            fprintf(out, "%s\n", replies[i]);
            return;
        }
        char *save = NULL, *tok = strtok_r(replies[i] + 2, " \n", &save);
        for (; tok; tok = strtok_r(NULL, " \n", &save)) {
            char *eq = strchr(tok, '=');
            if (eq == NULL)
                continue;
            *eq = '\0';
            unsigned long long v = strtoull(eq + 1, NULL, 10);
            int k;
            for (k = 0; k < nkeys && strcmp(keys[k], tok) != 0; k++)
                ;
            if (k == nkeys) {
                if (nkeys == 32)
                    continue;
                snprintf(keys[nkeys], sizeof(keys[0]), "%s", tok);
                vals[nkeys++] = v;
            } else if (strncmp(tok, "min_", 4) == 0) {
                vals[k] = v < vals[k] ? v : vals[k];
            } else if (strncmp(tok, "max_", 4) == 0) {
                vals[k] = v > vals[k] ? v : vals[k];
            } else {
                vals[k] += v;
            }
        }
    }
    fprintf(out, "ok");
    for (int k = 0; k < nkeys; k++)
        fprintf(out, " %s=%llu", keys[k], vals[k]);
    fprintf(out, "\n");
}

static int read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0)
            return -1;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: loadgen --port PORT --sub TEMPLATE [--pub TEMPLATE [--pub-item TEMPLATE]]\n"
            "               [--answer state|message|sse-state|sse-message|ws-state|ws-message]\n"
            "               [--ws-send TEXT]\n"
            "               [--tokens FILE] [--ptoken TOKEN] [--procs P] [--sources K]\n"
            "               [--hb SECONDS] [--host ADDR]\n"
            "Reads commands on standard input (see the top of bench/loadgen.c).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},   {"host", required_argument, NULL, 'H'},
        {"sub", required_argument, NULL, 's'},    {"pub", required_argument, NULL, 'P'},
        {"answer", required_argument, NULL, 'a'}, {"tokens", required_argument, NULL, 't'},
        {"ptoken", required_argument, NULL, 'T'}, {"procs", required_argument, NULL, 'j'},
        {"sources", required_argument, NULL, 'k'}, {"hb", required_argument, NULL, 'b'},
        {"pub-item", required_argument, NULL, 'I'}, {"ws-send", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int opt;
    G.procs = 2;
    G.sources = 16;
    G.hb = 600;
    G.mode = ANSWER_STATE;
    inet_pton(AF_INET, "127.0.0.1", &G.host);
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'p': G.port = atoi(optarg); break;
        case 'H':
            if (inet_pton(AF_INET, optarg, &G.host) != 1)
                die("--host: an IPv4 address");
            break;
        case 's': G.sub_tpl = unescape(optarg); break;
        case 'P': G.pub_tpl = unescape(optarg); break;
        case 'a':
            if (strcmp(optarg, "state") == 0)
                G.mode = ANSWER_STATE;
            else if (strcmp(optarg, "message") == 0)
                G.mode = ANSWER_MESSAGE;
            else if (strcmp(optarg, "sse-state") == 0)
                G.mode = ANSWER_STATE, G.sse = 1;
            else if (strcmp(optarg, "sse-message") == 0)
                G.mode = ANSWER_MESSAGE, G.sse = 1;
            else if (strcmp(optarg, "ws-state") == 0)
                G.mode = ANSWER_STATE, G.ws = 1;
            else if (strcmp(optarg, "ws-message") == 0)
                G.mode = ANSWER_MESSAGE, G.ws = 1;
            else
                die("--answer: state, message, sse-state, sse-message, ws-state or ws-message");
            break;
        case 't': load_tokens(optarg); break;
        case 'T': G.ptoken = optarg; break;
        case 'I': G.pub_item_tpl = unescape(optarg); break;
        case 'W':
            G.ws_send = unescape(optarg);
            G.ws_send_len = strlen(G.ws_send);
            if (G.ws_send_len > WS_SEND_MAX)
                die("--ws-send: at most %d bytes", WS_SEND_MAX);
            break;
        case 'j': G.procs = atoi(optarg); break;
        case 'k': G.sources = atoi(optarg); break;
        case 'b': G.hb = (uint32_t)atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (G.port <= 0 || G.port > 65535 || G.sub_tpl == NULL || G.procs < 1 ||
        G.procs > MAX_PROCS || G.sources < 1 || G.sources > 250) {
        usage(stderr);
        return 2;
    }
    if (G.pub_tpl == NULL)
        G.pub_tpl = "";
    if (G.ws) {
        if (strstr(G.sub_tpl, "{wskey}") == NULL)
            die("--answer ws-*: the --sub template needs Sec-WebSocket-Key: {wskey}");
        /* The protocol asked for, which the 101 must name. */
        const char *p = strcasestr(G.sub_tpl, "\r\nSec-WebSocket-Protocol:");
        if (p != NULL) {
            p += 25;
            while (*p == ' ')
                p++;
            size_t k = strcspn(p, "\r, ");
            if (k >= sizeof(G.ws_proto))
                die("--sub: Sec-WebSocket-Protocol too long");
            memcpy(G.ws_proto, p, k);
            G.ws_proto[k] = '\0';
        }
    }

    /* Each child may hold up to the hard limit of descriptors. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    int ctrl[MAX_PROCS];
    pid_t pids[MAX_PROCS];
    pid_t parent = getpid();
    for (int i = 0; i < G.procs; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            die("socketpair: %s", strerror(errno));
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                exit(1);
            for (int k = 0; k < i; k++)
                close(ctrl[k]);
            close(sv[0]);
            G.id = i;
            G.ctrl = sv[1];
            /* Each child's own WebSocket keys and masks (RFC 6455 wants both unpredictable). */
            if (getrandom(&G.ws_seed, sizeof(G.ws_seed), 0) != sizeof(G.ws_seed) ||
                getrandom(&G.mask_rng, sizeof(G.mask_rng), 0) != sizeof(G.mask_rng))
                die("getrandom: %s", strerror(errno));
            G.mask_rng |= 1; /* xorshift's state must not be 0 */
            child_loop();
        }
        close(sv[1]);
        ctrl[i] = sv[0];
    }

    static char replies[MAX_PROCS][1024];
    char line[1024];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready procs=%d\n", G.procs);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        size_t n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') {
            printf("err command too long\n");
            continue;
        }
        for (int i = 0; i < G.procs; i++)
            if (write(ctrl[i], line, n) != (ssize_t)n)
                die("a child is gone");
        for (int i = 0; i < G.procs; i++)
            if (read_line(ctrl[i], replies[i], sizeof(replies[i])) < 0)
                die("child %d is gone", i);
        aggregate(replies, G.procs, stdout);
        if (strncmp(line, "quit", 4) == 0)
            break;
    }
    for (int i = 0; i < G.procs; i++) {
        close(ctrl[i]);
        waitpid(pids[i], NULL, 0);
    }
    return 0;
}
