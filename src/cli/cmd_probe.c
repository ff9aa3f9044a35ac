/*
 * cmd_probe.c — `nudge probe`: measures the idle timeout of the network path
 * to nudged, the longest a TCP flow may stay silent before a middlebox (NAT,
 * stateful firewall, carrier gateway) forgets it and drops its packets.
 *
 * How: GET /v1/probe?hold=N is held N seconds by nudged on a socket with
 * keepalive off, then answered; this client's socket has keepalive off too,
 * so nothing crosses the path while it waits. If the path forgets flows idle
 * for less than N seconds, the answer is dropped on the way and never
 * arrives: the middlebox drops silently, so a lost probe is only seen by the
 * client's own read timeout, hold * 1.2 + 2 s (the slack absorbs a loaded
 * server and a few retransmissions of the answer on a lossy path).
 *
 * Search: a ladder of holds growing by half each rung from --min up to
 * --max, then bisection of the bracket between the longest surviving and
 * the shortest lost hold, in parallel batches, until (lost - survived) /
 * lost <= --precision or the two are one second apart (holds are whole
 * seconds). Every probe is its own connection, at most PROBE_MAX_PER_USER
 * at once (the server's limit per user).
 *
 * Time: a lost probe costs its hold * 1.2 + 2 s, so waiting for the ladder
 * and then for a bisection round would cost up to 4 times the timeout. Two
 * things keep a run within about 3 times the timeout T it finds:
 *   - Only LADDER_WINDOW rungs are in flight at once, each started when a
 *     rung LADDER_WINDOW below it comes back, i.e. 1.5^-5 = 13% of its hold
 *     late. A whole ladder at once would leave the long rungs' server slots
 *     occupied for up to an hour (below) and starve the bisection.
 *   - A probe that has not come back by its hold + SUSPECT_GRACE is taken
 *     as the likely upper bound and the next round starts at once, without
 *     waiting for its read timeout; only the final bracket waits for lost
 *     probes to be certain. The ladder's first lost rung D <= 1.5 T is
 *     suspected at about 1.13 D, the bisection's shortest lost probe is
 *     certain about 1.2 T + 2 s later: 2.9 T + 2 s at worst. Measured in
 *     tests/netlab: 2.5 T at T = 40 s, 2.8 T at 240 s.
 *
 * Server slots: the server counts a probe until it has answered it or seen
 * the client close. Closing a probe whose flow may already be dead tells
 * the server nothing (the FIN is dropped too), so its slot stays taken
 * until its hold ends; closing one younger than the longest surviving hold
 * is safe. The slot table below models this, so the
 * client never asks for more than the server will hold, and a 429 (another
 * probe of the same user running) only delays it.
 *
 * https://: each probe does its TLS handshake (resuming the session of the
 * ones before: tlsc) before its request leaves, so the flow is idle, as for
 * plain HTTP, from the request's last byte; a TLS idle flow is what the
 * middleboxes of an https deployment see.
 *
 * The measurement is also `nudge doctor --probe`'s (cli_probe_measure in
 * cli.h): the same search, its result lines sent nowhere, the errors
 * named after the command running it.
 *
 * Cost: one thread, poll() over at most 16 sockets, each with a 96-byte
 * llhttp parser and a small bounded answer buffer, all in one allocation of
 * about 45 KiB made at start; a run makes at most PROBE_MAX_PROBES probes.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "cli/tlsc.h"
#include "common/util.h"
#include "push/probe.h"

enum {
    OPT_MIN = CLI_OPT_FIRST_OWN,
    OPT_MAX,
    OPT_PRECISION,
    OPT_USER,
};

/* At most this many probes at once: the server refuses more per user (push/probe.h). */
#define PROBE_SLOTS PROBE_MAX_PER_USER
/* --max: an hour, the longest idle timeout worth knowing (holds stop at the ceiling). */
#define PROBE_DEFAULT_MAX 3600
/* The longest hold the server accepts: the heartbeat ceiling (push/probe.c). */
#define PROBE_HOLD_CEILING CLI_PROBE_HOLD_CEILING
/* --precision 5%: a 240 s timeout is bracketed within 12 s. */
#define PROBE_DEFAULT_PRECISION 0.05
/*
 * Ladder rungs grow by half: fine enough that the first lost rung is at
 * most 1.5 times the timeout, coarse enough to climb from 1 s to an hour in
 * 21 rungs.
 */
#define LADDER_NUM 3
#define LADDER_DEN 2
/* Rungs in flight at once: each starts 1.5^-5 = 13% of its hold late (see the header). */
#define LADDER_WINDOW 5
/*
 * A probe not back by hold + 1 s + 5% is suspected lost: nudged answers to
 * the millisecond, and a path that delays answers by seconds is rare; a
 * wrong suspicion costs only a round of probes, never a wrong result.
 */
#define SUSPECT_GRACE_MS(hold) (1000 + (uint64_t)(hold) * 50)
/* The read timeout that declares a probe lost: hold * 1.2 + 2 s (see the header). */
#define LOST_AFTER_MS(hold) ((uint64_t)(hold) * 1200 + 2000)
/* nudged lets go of a probe when it answers it; a second more covers a loaded server. */
#define SERVER_ANSWER_MS 1000
/* A FIN from us reaches nudged and frees its probe within a second. */
#define SERVER_CLOSE_MS 1000
/* After a 429 too-many-probes, wait this long before asking again. */
#define BUSY_RETRY_MS 1000
/*
 * A run asks for at most this many probes: the ladder is 21 rungs and a few
 * bisection rounds follow, so hitting it means the path answers erratically.
 */
#define PROBE_MAX_PROBES 400
/* An answer is a small JSON object; anything bigger is not nudged's. */
#define ANSWER_MAX 1024
/* Bytes of an error answer quoted in a message. */
#define ERROR_BODY_MAX 200
/* The request: method, path, Host, User-Agent, Authorization, Connection. */
#define REQUEST_MAX (HTTPC_BASE_MAX + HTTPC_HOST_MAX + TOKEN_MAX + 256)

enum slot_state {
    SLOT_FREE,       /* nothing: a probe may start here */
    SLOT_CONNECTING, /* non-blocking connect in progress */
    SLOT_HANDSHAKING, /* https: connected, TLS handshake in progress */
    SLOT_SENDING,    /* connected, request partly sent */
    SLOT_WAITING,    /* request sent: the flow is idle, waiting for the answer */
    SLOT_STUCK,      /* closed by us, but nudged may still count the probe until free_at */
};

struct slot {
    enum slot_state state;
    int fd;
    SSL *ssl;              /* https: the probe's TLS, NULL otherwise */
    short want;            /* https: what OpenSSL waits for (POLLIN / POLLOUT) */
    unsigned hold;
    uint64_t sent_ms;      /* the request's last byte left: the flow's idle time counts from here */
    uint64_t deadline_ms;  /* connect deadline, then the read timeout */
    uint64_t free_at_ms;   /* SLOT_STUCK: when nudged has surely let go of the probe */
    char req[REQUEST_MAX];
    size_t req_len, req_off;
    llhttp_t parser;
    int status;            /* the answer's HTTP status, once complete */
    int complete;          /* a whole answer arrived */
    int too_big;           /* the body passed ANSWER_MAX */
    char body[ANSWER_MAX + 1];
    size_t body_len;
};

/* The outcome of one run. */
enum verdict {
    VERDICT_NONE,    /* still searching */
    VERDICT_BRACKET, /* alive < timeout <= lost (alive 0: below --min) */
    VERDICT_NO_TIMEOUT, /* the longest hold survived */
};

struct probe_run {
    const char *cmd;              /* the command running it, for error messages */
    FILE *out;                    /* result lines go here; NULL: nowhere (doctor) */
    struct httpc http;            /* host, port, base and authority parsed from --url */
    struct sockaddr_storage addr; /* the address that accepted a connection */
    socklen_t addrlen;
    const char *token;
    unsigned min, top;            /* the shortest and longest hold tried */
    unsigned max_asked;           /* --max as given (top is it, capped at the ceiling) */
    double precision;
    unsigned alive;               /* the longest hold that survived; 0: none yet */
    unsigned lost[PROBE_MAX_PROBES]; /* every hold that was lost, in order */
    size_t nlost;
    unsigned launched;
    uint64_t busy_until_ms;       /* after a 429: launch nothing before */
    int busy_noted;
    uint64_t t0;
    struct slot slots[PROBE_SLOTS];
};

static llhttp_settings_t parser_settings;

void cmd_probe_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge probe [--min SECONDS] [--max SECONDS] [--precision P%%]\n"
            "                   [SERVER OPTIONS]\n"
            "\n"
            "Measures the idle timeout of the network path to nudged: how long a TCP\n"
            "connection may stay silent before a NAT or firewall on the way forgets it.\n"
            "Holds probes of different lengths in parallel (GET /v1/probe?hold=N, each on\n"
            "its own connection with keepalive off, at most %d at once): a ladder from\n"
            "--min growing by half, then bisection. A probe whose answer does not arrive\n"
            "within its hold * 1.2 + 2 s is lost. One line per result, then a summary:\n"
            "  probe 211 s: survived\n"
            "  probe 316 s: lost (no answer within 382 s)\n"
            "  bracket: flows idle for 237 s survive; 246 s do not\n"
            "  heartbeat: 214 s recommended (237 s less a 23 s margin)\n"
            "  keepalive: idle 118 s recommended\n"
            "  nudged.conf: [network] idle_timeout = 237\n"
            "  took 678 s, 30 probes\n"
            "A run takes about 3 times the timeout it finds (--max when there is none).\n"
            "\n"
            "  --min SECONDS         the shortest hold tried (default 1)\n"
            "  --max SECONDS         the longest hold tried (default %d; holds stop at\n"
            "                        %d s, the server's ceiling)\n"
            "  --precision P%%        stop when (lost - survived) / lost <= P (default %g%%;\n"
            "                        holds are whole seconds, so 1 s apart also stops)\n"
            "  --user ID             the user to mint a token for with -c or --secret-file\n"
            "  -h, --help            show this help\n"
            "\n"
            "Server options:\n" CLI_SERVER_HELP
            "\n"
            "Run it from the clients' network, not the server's. See docs/networks.md.\n"
            "Exit status: 0 a bracket was found (or no timeout up to --max); 1 the server\n"
            "could not be reached or refused the probes; 2 usage.\n",
            PROBE_SLOTS, PROBE_DEFAULT_MAX, PROBE_HOLD_CEILING, PROBE_DEFAULT_PRECISION * 100);
}

int cli_probe_parse_precision(const char *cmd, const char *name, const char *arg, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (end != arg && *end == '%')
        end++;
    /* Below 0.1% the whole-second limit decides anyway; above 50% a bracket says little. */
    if (end == arg || *end != '\0' || errno != 0 || !(v >= 0.1 && v <= 50))
        return cli_usage_error(cmd, "%s '%s': expected a percentage from 0.1%% to 50%%", name,
                               arg);
    *out = v / 100;
    return 0;
}

/* -- answers ----------------------------------------------------------------- */

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct slot *s = p->data;

    if (len > ANSWER_MAX - s->body_len) {
        s->too_big = 1;
        return -1;
    }
    memcpy(s->body + s->body_len, at, len);
    s->body_len += len;
    s->body[s->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct slot *s = p->data;

    if (p->status_code < 200) { /* an interim 1xx: the real answer follows */
        s->body_len = 0;
        return 0;
    }
    s->status = p->status_code;
    s->complete = 1;
    return HPE_PAUSED;
}

/* -- output ------------------------------------------------------------------ */

/* A result line on r->out, flushed at once; nothing when r->out is NULL (doctor). */
static void say(const struct probe_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const struct probe_run *r, const char *fmt, ...)
{
    va_list ap;

    if (r->out == NULL)
        return;
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fputc('\n', r->out);
    fflush(r->out);
}

/* "nudge CMD: ..." on stderr, CMD the command running the measurement. */
static void errorf(const struct probe_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void errorf(const struct probe_run *r, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nudge %s: ", r->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* "HTTP 401 unauthorized: bad signature", or the start of a body that is not nudged's JSON. */
static void describe_error(const struct slot *s, char *out, size_t outlen)
{
    json_t *root = json_loadb(s->body, s->body_len, 0, NULL);
    const char *status = json_string_value(json_object_get(root, "status"));
    const char *error = json_string_value(json_object_get(root, "error"));

    if (status != NULL)
        snprintf(out, outlen, "HTTP %d %s%s%s", s->status, status, error ? ": " : "",
                 error ? error : "");
    else
        snprintf(out, outlen, "HTTP %d %.*s", s->status,
                 (int)(s->body_len < ERROR_BODY_MAX ? s->body_len : ERROR_BODY_MAX), s->body);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            *c = ' ';
    json_decref(root);
}

/* -- connections ------------------------------------------------------------- */

/*
 * Connects one socket to 'sa', non-blocking, keepalive off. Returns the fd
 * (connect may still be in progress: EINPROGRESS is not an error) or -errno.
 */
static int start_connect(const struct sockaddr *sa, socklen_t salen)
{
    int fd, off = 0;

    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /*
     * Off is Linux's default, but the measurement depends on it: a keepalive
     * probe would refresh the middlebox's state and hide the timeout.
     */
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &off, sizeof(off)) < 0 ||
        (connect(fd, sa, salen) < 0 && errno != EINPROGRESS)) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* The connect started on fd is done: 0, or the negative errno it failed with. */
static int connect_result(int fd)
{
    int soerr = 0;
    socklen_t slen = sizeof(soerr);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) < 0)
        return -errno;
    return -soerr;
}

/*
 * Resolves the URL's host and keeps the first address that accepts a TCP
 * connection within HTTPC_CONNECT_TIMEOUT_MS (that connection is closed at
 * once). Every probe then connects there. Returns 0, or -1 after printing
 * why to stderr.
 */
static int pick_address(struct probe_run *r)
{
    struct addrinfo hints, *res = NULL;
    int rc, last = -ECONNREFUSED;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* No AI_ADDRCONFIG, as in httpc.c: it would refuse 127.0.0.1 in a namespace with only lo. */
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(r->http.host, r->http.port, &hints, &res);
    if (rc != 0) {
        errorf(r, "cannot resolve %s: %s\n", r->http.host,
                rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = start_connect(ai->ai_addr, ai->ai_addrlen);
        struct pollfd pfd;
        if (fd < 0) {
            last = fd;
            continue;
        }
        pfd.fd = fd;
        pfd.events = POLLOUT;
        do
            rc = poll(&pfd, 1, HTTPC_CONNECT_TIMEOUT_MS);
        while (rc < 0 && errno == EINTR);
        last = rc == 0 ? -ETIMEDOUT : rc < 0 ? -errno : connect_result(fd);
        close(fd);
        if (last == 0 && ai->ai_addrlen <= sizeof(r->addr)) {
            memcpy(&r->addr, ai->ai_addr, ai->ai_addrlen);
            r->addrlen = ai->ai_addrlen;
            freeaddrinfo(res);
            return 0;
        }
    }
    freeaddrinfo(res);
    if (last == -ETIMEDOUT)
        errorf(r, "cannot connect to %s: no answer within %d s\n",
                r->http.authority, HTTPC_CONNECT_TIMEOUT_MS / 1000);
    else
        errorf(r, "cannot connect to %s: %s\n", r->http.authority,
                strerror(-last));
    return -1;
}

/* Starts a probe of 'hold' seconds in the free slot 's'. Returns 0, or -1 after printing why. */
static int slot_start(struct probe_run *r, struct slot *s, unsigned hold, uint64_t now)
{
    int n, fd;

    n = snprintf(s->req, sizeof(s->req),
                 "GET %s/v1/probe?hold=%u HTTP/1.1\r\nHost: %s\r\nUser-Agent: nudge/%s\r\n"
                 "Authorization: Bearer %s\r\nConnection: close\r\n\r\n",
                 r->http.base, hold, r->http.authority, NUDGE_VERSION, r->token);
    if (n < 0 || (size_t)n >= sizeof(s->req)) {
        errorf(r, "the request does not fit %d bytes\n", REQUEST_MAX);
        return -1;
    }
    fd = start_connect((const struct sockaddr *)&r->addr, r->addrlen);
    if (fd < 0) {
        errorf(r, "cannot connect to %s: %s\n", r->http.authority,
                strerror(-fd));
        return -1;
    }
    s->state = SLOT_CONNECTING;
    s->fd = fd;
    s->ssl = NULL;
    s->hold = hold;
    s->req_len = (size_t)n;
    s->req_off = 0;
    s->sent_ms = 0;
    s->deadline_ms = now + HTTPC_CONNECT_TIMEOUT_MS;
    s->status = 0;
    s->complete = 0;
    s->too_big = 0;
    s->body_len = 0;
    s->body[0] = '\0';
    llhttp_init(&s->parser, HTTP_RESPONSE, &parser_settings);
    s->parser.data = s;
    r->launched++;
    return 0;
}

static int slot_pending(const struct slot *s)
{
    return s->state == SLOT_CONNECTING || s->state == SLOT_HANDSHAKING ||
           s->state == SLOT_SENDING || s->state == SLOT_WAITING;
}

/* A waiting probe past its hold + grace without an answer: probably lost. */
static int slot_suspect(const struct slot *s, uint64_t now)
{
    return s->state == SLOT_WAITING &&
           now >= s->sent_ms + s->hold * 1000ull + SUSPECT_GRACE_MS(s->hold);
}

/*
 * Closes the probe in 's'. The server lets go of it at once if our FIN
 * reaches it, which is certain only while the flow has been idle for less
 * than the longest hold known to survive; otherwise it holds the probe to
 * the end of its hold, and the slot stays taken until then.
 */
static void slot_close(struct probe_run *r, struct slot *s, uint64_t now)
{
    uint64_t idle_ms = s->state == SLOT_WAITING ? now - s->sent_ms : 0;
    int requested = s->state == SLOT_WAITING || (s->state == SLOT_SENDING && s->req_off > 0);

    tlsc_close(s->ssl);
    s->ssl = NULL;
    close(s->fd);
    s->fd = -1;
    if (!requested) {
        s->state = SLOT_FREE;
        return;
    }
    s->state = SLOT_STUCK;
    /* Half a second short of the surviving hold: the FIN surely still passes. */
    if (idle_ms + 500 < r->alive * 1000ull) {
        s->free_at_ms = now + SERVER_CLOSE_MS;
    } else {
        s->free_at_ms = s->sent_ms + s->hold * 1000ull + SERVER_ANSWER_MS;
        if (s->free_at_ms < now + SERVER_CLOSE_MS)
            s->free_at_ms = now + SERVER_CLOSE_MS;
    }
}

/* -- results ----------------------------------------------------------------- */

/* The shortest lost hold above the longest surviving one; 0 if none. */
static unsigned lost_bound(const struct probe_run *r)
{
    unsigned d = 0;

    for (size_t i = 0; i < r->nlost; i++)
        if (r->lost[i] > r->alive && (d == 0 || r->lost[i] < d))
            d = r->lost[i];
    return d;
}

static void record_alive(struct probe_run *r, unsigned hold)
{
    say(r, "probe %u s: survived", hold);
    for (size_t i = 0; i < r->nlost; i++)
        if (r->lost[i] <= hold && r->lost[i] > r->alive)
            say(r, "note: the %u s probe was lost, yet %u s survived: the path loses packets or "
                "its timeout varies",
                r->lost[i], hold);
    if (hold > r->alive)
        r->alive = hold;
}

static void record_lost(struct probe_run *r, unsigned hold, const char *why)
{
    say(r, "probe %u s: lost (%s)", hold, why);
    if (hold <= r->alive)
        say(r, "note: the %u s probe was lost, yet %u s survived: the path loses packets or its "
            "timeout varies",
            hold, r->alive);
    /* launched <= PROBE_MAX_PROBES bounds nlost. */
    if (r->nlost < PROBE_MAX_PROBES)
        r->lost[r->nlost++] = hold;
}

/* -- events on one slot -------------------------------------------------------- */

/*
 * Handles a complete answer. Returns 0 (a result or a retry later), or -1
 * after printing why the run cannot go on.
 */
static int on_answer(struct probe_run *r, struct slot *s, uint64_t now)
{
    char msg[ERROR_BODY_MAX + 128];
    unsigned hold = s->hold;

    if (s->status == 200) {
        json_t *root = json_loadb(s->body, s->body_len, 0, NULL);
        json_t *held = json_object_get(root, "held");
        int ok = json_is_integer(held) && json_integer_value(held) == (json_int_t)hold;
        json_decref(root);
        if (!ok) {
            describe_error(s, msg, sizeof(msg));
            errorf(r, "unexpected answer to a %u s probe: %s\n", hold, msg);
            return -1;
        }
        slot_close(r, s, now);
        s->state = SLOT_FREE; /* answered: nudged is done with it */
        record_alive(r, hold);
        return 0;
    }
    if (s->status == 429) {
        /* Not a result: nudged holds 16 probes of this user already. Ask again shortly. */
        slot_close(r, s, now);
        s->state = SLOT_FREE;
        r->busy_until_ms = now + BUSY_RETRY_MS;
        r->launched--;
        if (!r->busy_noted)
            errorf(r, "the server holds the most probes of this user already "
                            "(another probe running?); retrying every %d s\n",
                    BUSY_RETRY_MS / 1000);
        r->busy_noted = 1;
        return 0;
    }
    describe_error(s, msg, sizeof(msg));
    errorf(r, "%s refused a %u s probe: %s\n", r->http.authority, hold, msg);
    return -1;
}

/* One read on the probe's socket, plain or TLS: bytes, 0 at the end, -EAGAIN, or -errno. */
static ssize_t slot_recv(struct slot *s, char *buf, size_t len)
{
    ssize_t n;

    if (s->ssl != NULL)
        return tlsc_read_step(s->ssl, buf, len, &s->want);
    do
        n = recv(s->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

/* One write, plain or TLS: bytes written, -EAGAIN, or -errno. */
static ssize_t slot_send(struct slot *s, const char *buf, size_t len)
{
    ssize_t n;

    if (s->ssl != NULL)
        return tlsc_write_step(s->ssl, buf, len, &s->want);
    do
        n = send(s->fd, buf, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

static int on_writable(struct probe_run *r, struct slot *s, uint64_t now);

/*
 * https: starts or goes on with the probe's TLS handshake, then sends the
 * request. The handshake is over before the request leaves, so the idle
 * time measured starts, as for plain HTTP, at the request's last byte.
 * Returns 0 or -1 (fatal, printed: a refused certificate stops the run).
 */
static int on_handshake(struct probe_run *r, struct slot *s, uint64_t now)
{
    char err[512];
    int rc;

    if (s->ssl == NULL) {
        s->ssl = tlsc_new(s->fd, r->http.host, err, sizeof(err));
        if (s->ssl == NULL) {
            errorf(r, "%s\n", err);
            return -1;
        }
        s->state = SLOT_HANDSHAKING;
    }
    rc = tlsc_handshake_step(s->ssl, r->http.host, r->http.authority, &s->want, err,
                             sizeof(err));
    if (rc < 0) {
        errorf(r, "%s\n", err);
        return -1;
    }
    if (rc == 0)
        return 0;
    return on_writable(r, s, now);
}

/* Reads what arrived on a waiting probe. Returns 0 or -1 (fatal, printed). */
static int on_readable(struct probe_run *r, struct slot *s, uint64_t now)
{
    char buf[ANSWER_MAX];
    char why[96];
    ssize_t n;

again:
    n = slot_recv(s, buf, sizeof(buf));
    if (n == -EAGAIN)
        return 0;
    if (n > 0) {
        llhttp_errno_t pe = llhttp_execute(&s->parser, buf, (size_t)n);
        if (s->complete)
            return on_answer(r, s, now);
        if (pe != HPE_OK) {
            errorf(r, "bad HTTP answer from %s: %s\n", r->http.authority,
                    s->too_big ? "too large" : llhttp_errno_name(pe));
            return -1;
        }
        /* OpenSSL may hold more than the socket shows: poll would not say so. */
        if (s->ssl != NULL)
            goto again;
        return 0;
    }
    if (n == 0) {
        /* An answer framed by the close is complete now. */
        (void)llhttp_finish(&s->parser);
        if (s->complete)
            return on_answer(r, s, now);
    }
    /*
     * Closed or reset without an answer: something on the path ended the
     * flow (some middleboxes reset instead of dropping), or nudged stopped.
     * Either way this hold does not survive.
     */
    snprintf(why, sizeof(why), "%s after %.1f s without an answer",
             n == 0 ? "closed" : strerror((int)-n), (double)(now - s->sent_ms) / 1000);
    slot_close(r, s, now);
    record_lost(r, s->hold, why);
    return 0;
}

/* Sends what is left of the request. Returns 0 or -1 (fatal, printed). */
static int on_writable(struct probe_run *r, struct slot *s, uint64_t now)
{
    while (s->req_off < s->req_len) {
        ssize_t n = slot_send(s, s->req + s->req_off, s->req_len - s->req_off);
        if (n == -EAGAIN) {
            s->state = SLOT_SENDING;
            return 0;
        }
        if (n < 0) {
            errorf(r, "sending to %s: %s\n", r->http.authority, strerror((int)-n));
            return -1;
        }
        s->req_off += (size_t)n;
    }
    s->state = SLOT_WAITING;
    s->want = POLLIN;
    s->sent_ms = now;
    s->deadline_ms = now + LOST_AFTER_MS(s->hold);
    return 0;
}

/* One slot's poll result and deadline. Returns 0 or -1 (fatal, printed). */
static int slot_event(struct probe_run *r, struct slot *s, short revents, uint64_t now)
{
    char why[64];
    int rc;

    switch (s->state) {
    case SLOT_CONNECTING:
        if (revents != 0) {
            rc = connect_result(s->fd);
            if (rc < 0) {
                errorf(r, "cannot connect to %s: %s\n", r->http.authority,
                        strerror(-rc));
                return -1;
            }
            if (r->http.tls)
                return on_handshake(r, s, now);
            return on_writable(r, s, now);
        }
        if (now >= s->deadline_ms) {
            errorf(r, "cannot connect to %s: no answer within %d s\n",
                    r->http.authority, HTTPC_CONNECT_TIMEOUT_MS / 1000);
            return -1;
        }
        return 0;
    case SLOT_HANDSHAKING:
        if (revents != 0)
            return on_handshake(r, s, now);
        if (now >= s->deadline_ms) {
            errorf(r, "TLS handshake with %s: no answer within %d s\n", r->http.authority,
                   HTTPC_CONNECT_TIMEOUT_MS / 1000);
            return -1;
        }
        return 0;
    case SLOT_SENDING:
        if (revents != 0)
            return on_writable(r, s, now);
        return 0;
    case SLOT_WAITING:
        if (revents != 0)
            return on_readable(r, s, now);
        if (now >= s->deadline_ms) {
            snprintf(why, sizeof(why), "no answer within %llu s",
                     (unsigned long long)((LOST_AFTER_MS(s->hold) + 999) / 1000));
            slot_close(r, s, now);
            record_lost(r, s->hold, why);
        }
        return 0;
    case SLOT_STUCK:
        if (now >= s->free_at_ms)
            s->state = SLOT_FREE;
        return 0;
    case SLOT_FREE:
        return 0;
    }
    return 0;
}

/* -- the search ----------------------------------------------------------------- */

/* The rung above 'h' (1.5 times, at least one second more), capped at the top. */
static unsigned next_rung(const struct probe_run *r, unsigned h)
{
    unsigned long long n;

    if (h < r->min)
        return r->min;
    n = (unsigned long long)h * LADDER_NUM / LADDER_DEN;
    if (n <= h)
        n = h + 1;
    return n > r->top ? r->top : (unsigned)n;
}

/* Whether the bracket (low, high] is as narrow as asked. */
static int precise_enough(const struct probe_run *r, unsigned low, unsigned high)
{
    return high - low <= 1 || (double)(high - low) <= r->precision * high;
}

static struct slot *free_slot(struct probe_run *r)
{
    for (size_t i = 0; i < PROBE_SLOTS; i++)
        if (r->slots[i].state == SLOT_FREE)
            return &r->slots[i];
    return NULL;
}

static int launch(struct probe_run *r, unsigned hold, uint64_t now)
{
    struct slot *s = free_slot(r);

    if (r->launched >= PROBE_MAX_PROBES) {
        errorf(r, "no stable result after %d probes: the path loses "
                        "packets or its timeout varies\n",
                PROBE_MAX_PROBES);
        return -1;
    }
    return slot_start(r, s, hold, now);
}

/*
 * Decides what to do after every event: whether the search is over, which
 * probes no longer tell anything (closed), which to start. Returns a
 * verdict, or VERDICT_NONE to go on; -1 in *failed on a fatal error.
 */
static enum verdict plan(struct probe_run *r, uint64_t now, int *failed)
{
    unsigned alive = r->alive, lost = lost_bound(r), suspect = 0, upper, low, nfree = 0;
    unsigned highest = alive, ladder = 0, inside = 0;

    /* Below --min nothing is tried: min - 1 is the lower end when nothing survived. */
    low = alive > 0 ? alive : r->min - 1;
    if (alive >= r->top)
        return VERDICT_NO_TIMEOUT;
    if (lost != 0 && precise_enough(r, low, lost))
        return VERDICT_BRACKET;

    for (size_t i = 0; i < PROBE_SLOTS; i++) {
        struct slot *s = &r->slots[i];
        if (s->state == SLOT_STUCK && now >= s->free_at_ms)
            s->state = SLOT_FREE;
        if (slot_suspect(s, now) && s->hold > alive && (suspect == 0 || s->hold < suspect))
            suspect = s->hold;
    }
    upper = lost;
    if (suspect != 0 && (upper == 0 || suspect < upper))
        upper = suspect;

    /*
     * Close the probes that can no longer tell anything: those at or below a
     * surviving hold, those at or above a lost one. Those above a suspected
     * one will very likely be lost too: close them while that still frees
     * their server slot (their flow is younger than the surviving hold).
     */
    for (size_t i = 0; i < PROBE_SLOTS; i++) {
        struct slot *s = &r->slots[i];
        if (!slot_pending(s))
            continue;
        if (s->hold <= alive || (lost != 0 && s->hold >= lost) ||
            (upper != 0 && s->hold > upper &&
             (s->state != SLOT_WAITING || now - s->sent_ms + 500 < alive * 1000ull))) {
            slot_close(r, s, now);
            continue;
        }
        if (s->hold > highest)
            highest = s->hold;
        ladder++;
        if (upper != 0 && s->hold < upper && !slot_suspect(s, now))
            inside++;
    }
    for (size_t i = 0; i < PROBE_SLOTS; i++)
        nfree += r->slots[i].state == SLOT_FREE;
    if (now < r->busy_until_ms)
        return VERDICT_NONE;

    if (upper == 0) {
        /* Climbing: keep LADDER_WINDOW rungs above the longest survivor in flight. */
        while (nfree > 0 && ladder < LADDER_WINDOW && highest < r->top) {
            highest = next_rung(r, highest);
            if (launch(r, highest, now) < 0)
                goto fail;
            nfree--;
            ladder++;
        }
        return VERDICT_NONE;
    }
    /*
     * Bisecting (low, upper): when the round in flight is over, spread a new
     * one evenly over the open interval, as many probes as slots are free.
     */
    if (inside == 0 && !precise_enough(r, low, upper) && nfree > 0) {
        unsigned gap = upper - low, k = gap - 1 < nfree ? gap - 1 : nfree, prev = low;
        for (unsigned i = 1; i <= k; i++) {
            unsigned h = low + (unsigned)(((unsigned long long)gap * i + (k + 1) / 2) / (k + 1));
            if (h <= prev)
                h = prev + 1;
            if (h >= upper)
                break;
            if (launch(r, h, now) < 0)
                goto fail;
            prev = h;
        }
    }
    return VERDICT_NONE;
fail:
    *failed = 1;
    return VERDICT_NONE;
}

/* How long poll may sleep: until the next deadline, suspicion or freed slot, at most 1 s. */
static int poll_timeout(const struct probe_run *r, uint64_t now)
{
    uint64_t next = now + 1000;

    for (size_t i = 0; i < PROBE_SLOTS; i++) {
        const struct slot *s = &r->slots[i];
        uint64_t t = next;
        if (s->state == SLOT_STUCK)
            t = s->free_at_ms;
        else if (s->state == SLOT_WAITING && !slot_suspect(s, now))
            t = s->sent_ms + s->hold * 1000ull + SUSPECT_GRACE_MS(s->hold);
        else if (slot_pending(s))
            t = s->deadline_ms;
        if (t < next)
            next = t;
    }
    if (r->busy_until_ms > now && r->busy_until_ms < next)
        next = r->busy_until_ms;
    return next <= now ? 0 : (int)(next - now);
}

/*
 * nudged's bounds (src/common/config.c), which a recommendation must meet or
 * nudged refuses to start with it: [network] idle_timeout is 2 s or more, the
 * heartbeat max it derives is the timeout less a margin (120 s, 10% when
 * smaller, at least 1 s) up to 3540 s, and [heartbeat] min (default 60 s)
 * may not exceed that max. Below about 66 s the default min is too long.
 */
#define NUDGED_IDLE_TIMEOUT_MIN 2
#define NUDGED_HEARTBEAT_MIN_DEFAULT 60

/* Prints the bracket, the recommendations and the time taken. */
static void report(const struct probe_run *r, enum verdict v, uint64_t now)
{
    unsigned alive = r->alive, idle, margin, heartbeat, keepalive;
    int capped = v == VERDICT_NO_TIMEOUT;

    if (capped) {
        say(r, "bracket: no idle timeout up to %u s: flows idle for %u s survive%s; %u s is a "
            "lower bound, not the timeout (%s)",
            r->top, r->top, r->max_asked > r->top ? " (the server's longest probe)" : "", r->top,
            r->max_asked > r->top ? "heartbeats cannot be longer, so it is all nudged needs"
                                  : "raise --max to measure it");
    } else if (alive == 0) {
        say(r, "bracket: flows idle for %u s do not survive, the shortest probe (--min): the "
            "timeout is shorter",
            lost_bound(r));
        say(r, "no recommendation: %s", r->min > 1 ? "lower --min to measure it"
                                                : "this path keeps no idle connection");
    } else {
        say(r, "bracket: flows idle for %u s survive; %u s do not", alive, lost_bound(r));
    }
    if (alive > 0) {
        /* A 1 s path gets nudged's least idle_timeout, whose derived heartbeat is still 1 s. */
        idle = alive < NUDGED_IDLE_TIMEOUT_MIN ? NUDGED_IDLE_TIMEOUT_MIN : alive;
        /* nudged's rule ([network] idle_timeout): 120 s margin, 10% when smaller, at least 1 s. */
        margin = idle / 10 < 120 ? idle / 10 : 120;
        if (margin == 0)
            margin = 1;
        heartbeat = idle - margin;
        if (heartbeat > PROBE_HOLD_CEILING)
            heartbeat = PROBE_HOLD_CEILING;
        keepalive = idle / 2 < 300 ? idle / 2 : 300;
        if (keepalive == 0)
            keepalive = 1;
        say(r, "heartbeat: %u s recommended (%u s less a %u s margin)", heartbeat, idle, margin);
        say(r, "keepalive: idle %u s recommended", keepalive);
        if (capped)
            say(r, "nudged.conf: [network] idle_timeout = %u   ; at least: no timeout was found "
                "up to --max", idle);
        else
            say(r, "nudged.conf: [network] idle_timeout = %u", idle);
        if (heartbeat < NUDGED_HEARTBEAT_MIN_DEFAULT)
            say(r, "nudged.conf: [heartbeat] min = %u   ; the heartbeat max derived from this "
                "timeout is %u s, below the default min (%d s), which nudged would refuse",
                heartbeat, heartbeat, NUDGED_HEARTBEAT_MIN_DEFAULT);
    }
    say(r, "took %llu s, %u probes", (unsigned long long)((now - r->t0 + 500) / 1000), r->launched);
}

/* The event loop, once pick_address succeeded. Returns 0 with *verdict set, or -1 (printed). */
static int run(struct probe_run *r, enum verdict *verdict)
{
    struct pollfd pfds[PROBE_SLOTS];
    enum verdict v = VERDICT_NONE;
    int failed = 0;

    llhttp_settings_init(&parser_settings);
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    for (size_t i = 0; i < PROBE_SLOTS; i++) {
        r->slots[i].state = SLOT_FREE;
        r->slots[i].fd = -1;
        r->slots[i].ssl = NULL;
    }
    r->t0 = util_now_ms();

    for (;;) {
        uint64_t now = util_now_ms();
        int n;

        v = plan(r, now, &failed);
        if (failed || v != VERDICT_NONE)
            break;
        for (size_t i = 0; i < PROBE_SLOTS; i++) {
            const struct slot *s = &r->slots[i];
            pfds[i].fd = slot_pending(s) ? s->fd : -1;
            pfds[i].events = s->ssl != NULL && s->state != SLOT_CONNECTING ? s->want
                             : s->state == SLOT_WAITING ? POLLIN : POLLOUT;
            pfds[i].revents = 0;
        }
        n = poll(pfds, PROBE_SLOTS, poll_timeout(r, now));
        if (n < 0 && errno != EINTR) {
            errorf(r, "poll: %s\n", strerror(errno));
            failed = 1;
            break;
        }
        now = util_now_ms();
        for (size_t i = 0; i < PROBE_SLOTS && !failed; i++)
            if (slot_event(r, &r->slots[i], n > 0 ? pfds[i].revents : 0, now) < 0)
                failed = 1;
        if (failed)
            break;
    }
    for (size_t i = 0; i < PROBE_SLOTS; i++)
        if (r->slots[i].fd >= 0) {
            tlsc_close(r->slots[i].ssl);
            close(r->slots[i].fd);
        }
    *verdict = v;
    return failed ? -1 : 0;
}

/*
 * A run for 'cmd' against the server 'http' (parsed, no connection used)
 * with 'opts', writing result lines to 'out' (NULL: none). NULL when out of
 * memory (printed). Free it with free().
 */
static struct probe_run *probe_run_new(const char *cmd, const struct httpc *http,
                                       const char *token, const struct cli_probe_opts *opts,
                                       FILE *out)
{
    /* About 45 KiB, mostly the slots: on the heap rather than the stack. */
    struct probe_run *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        fprintf(stderr, "nudge %s: out of memory\n", cmd);
        return NULL;
    }
    r->cmd = cmd;
    r->out = out;
    r->http = *http;
    r->http.fd = -1;
    r->http.ssl = NULL; /* the caller's connection stays the caller's */
    r->token = token;
    r->min = opts->min;
    r->max_asked = opts->max;
    r->top = opts->max > PROBE_HOLD_CEILING ? PROBE_HOLD_CEILING : opts->max;
    r->precision = opts->precision;
    return r;
}

void cli_probe_defaults(struct cli_probe_opts *opts)
{
    opts->min = 1;
    opts->max = PROBE_DEFAULT_MAX;
    opts->precision = PROBE_DEFAULT_PRECISION;
}

int cli_probe_measure(const char *cmd, const struct httpc *http, const char *token,
                      const struct cli_probe_opts *opts, FILE *out, struct cli_probe_result *res)
{
    struct probe_run *r = probe_run_new(cmd, http, token, opts, out);
    enum verdict v = VERDICT_NONE;
    int rc = -1;

    memset(res, 0, sizeof(*res));
    if (r == NULL)
        return -1;
    if (pick_address(r) < 0 || run(r, &v) < 0)
        goto done;
    res->no_timeout = v == VERDICT_NO_TIMEOUT;
    res->alive = r->alive;
    res->lost = lost_bound(r);
    res->top = r->top;
    res->probes = r->launched;
    res->took_ms = util_now_ms() - r->t0;
    rc = 0;
done:
    free(r);
    return rc;
}

/* The run asked for, filled by on_option. */
struct probe_args {
    struct cli_probe_opts opts;
    const char *user;
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct probe_args *a = arg;
    uint64_t val;

    switch (opt) {
    case OPT_MIN:
        if (cli_parse_number(cmd, "--min", value, 1, PROBE_HOLD_CEILING, &val) != 0)
            return CLI_EXIT_USAGE;
        a->opts.min = (unsigned)val;
        break;
    case OPT_MAX:
        if (cli_parse_number(cmd, "--max", value, 1, CLI_PROBE_MAX_MAX, &val) != 0)
            return CLI_EXIT_USAGE;
        a->opts.max = (unsigned)val;
        break;
    case OPT_PRECISION:
        if (cli_probe_parse_precision(cmd, "--precision", value, &a->opts.precision) != 0)
            return CLI_EXIT_USAGE;
        break;
    case OPT_USER:
        a->user = value;
        break;
    }
    return 0;
}

int cmd_probe(int argc, char **argv)
{
    static const struct option options[] = {
        {"min", required_argument, NULL, OPT_MIN},
        {"max", required_argument, NULL, OPT_MAX},
        {"precision", required_argument, NULL, OPT_PRECISION},
        {"user", required_argument, NULL, OPT_USER},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "probe";
    struct probe_args a = {0};
    struct cli_server srv;
    struct probe_run *r = NULL;
    struct httpc http;
    enum verdict v = VERDICT_NONE;
    char token[TOKEN_MAX], err[512];
    int rc;

    cli_probe_defaults(&a.opts);
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = cli_parse_args(cmd, argc, argv, options, &srv, cmd_probe_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        return rc;
    if (a.opts.min > a.opts.max)
        return cli_usage_error(cmd, "--min (%u) is greater than --max (%u)", a.opts.min,
                               a.opts.max);
    if (cli_check_mint_user(&srv, cmd, a.user) != 0)
        return CLI_EXIT_USAGE;
    if (httpc_init(&http, srv.url, 0, err, sizeof(err)) < 0)
        return cli_usage_error(cmd, "%s", err);
    rc = cli_server_token(&srv, cmd, TOKEN_USER, a.user, CLI_USER_TTL, token);
    if (rc != CLI_EXIT_OK)
        return rc;
    r = probe_run_new(cmd, &http, token, &a.opts, stdout);
    if (r == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    if (pick_address(r) == 0 && run(r, &v) == 0) {
        report(r, v, util_now_ms());
        rc = CLI_EXIT_OK;
    }
    free(r);
    return rc;
}
