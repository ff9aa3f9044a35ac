/*
 * cmd_listen.c — `nudge listen`: behaves as one device that hears about
 * folder changes from UDP datagrams (docs/udp.md), and says so plainly when
 * it has to fall back to polling.
 *
 * Start: GET /v1/state?device=ID&folders=... learns the folders' current
 * states, a UDP socket is bound (the family of the connection to the
 * server, any free port unless --port), and POST /v1/udp registers it with
 * those states. The answer's id and key check every datagram; its "server"
 * address is where acks go.
 *
 * Then one poll() loop (ppoll, so SIGINT/SIGTERM end it without a race)
 * waits on the UDP socket until the next timer: the state poll every
 * --poll-interval seconds, the registration's renewal at 80% of its TTL,
 * the end of --duration. A datagram is parsed, its registration id and tag
 * checked with the registration's key, its sequence number through the
 * replay check; a notify that survives moves the folder's state forward
 * (printed when it is news) and is acked with the state now held. A poll
 * that shows a folder newer than held means no datagram told us: after a
 * short grace for one in flight, that is reported once as UDP being
 * blocked, and the change is printed as learned by polling. A registration
 * that fails does not end the command: it keeps polling, which is what a
 * real client does.
 *
 * Every wait is bounded: HTTP requests by LISTEN_HTTP_TIMEOUT_MS, the UDP
 * wait by the next timer. Memory: the folder list (bounded by argc) and
 * one query string built once; a datagram is read into a stack buffer.
 * Output lines are flushed one by one: tests read them through a pipe.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "cli/udpsock.h"
#include "common/log.h"
#include "common/util.h"
#include "udp/datagram.h"

enum {
    OPT_DEVICE = CLI_OPT_FIRST_OWN,
    OPT_FOLDER,
    OPT_PORT,
    OPT_HOST,
    OPT_POLL_INTERVAL,
    OPT_COUNT,
    OPT_DURATION,
    OPT_NO_ACK,
    OPT_USER,
};

/* Outlook's fallback cadence without notifications (DESIGN.md, section 8). */
#define LISTEN_DEFAULT_POLL_S 60
/* A day between polls is already no fallback at all. */
#define LISTEN_POLL_MAX_S 86400
/* Every request here is answered at once by nudged; 15 s covers a loaded one. */
#define LISTEN_HTTP_TIMEOUT_MS 15000
/* Renew at 80% of the TTL: a failed renewal still leaves a fifth of it to retry. */
#define RENEW_PERCENT 80
/* A registration that failed for a reason that may pass (network, 5xx) is retried this often. */
#define REGISTER_RETRY_S 60
/*
 * nudged sends a notify when the change happens, before any poll can see
 * it; a poll that shows a change whose datagram has not arrived a second
 * later was not told by UDP. The grace only covers the two racing on the
 * way.
 */
#define UDP_GRACE_MS 1000
/* Device ids and folder names: the server's limits (docs/api.md). */
#define DEVICE_MAX 128
#define FOLDER_MAX 255
/* More than any datagram (DGRAM_MAX): a longer one is reported by its length. */
#define RECV_MAX 2048
/* "[v6 address%scope]:65535" */
#define ADDR_STR_MAX (INET6_ADDRSTRLEN + 16)
/* Error sentences quoted from an answer. */
#define REASON_MAX 512

struct lfolder {
    const char *name;
    uint64_t state;   /* the state this device holds */
    int known;        /* state is the server's (0 and unknown until a poll or registration) */
};

struct registration {
    uint64_t id;
    uint8_t key[DGRAM_KEY_LEN];
    uint64_t last_seq;               /* the replay check's high-water mark */
    struct sockaddr_storage server;  /* where acks go */
    socklen_t server_len;            /* 0: cannot ack (address family mismatch) */
    unsigned ttl;
    uint64_t renew_at_ms;
    uint64_t expires_at_ms;
};

struct listener {
    const char *device;
    struct lfolder *folders;
    size_t nfolders;
    unsigned port;             /* --port, 0: any */
    const char *host;          /* --host, sent as the registration's "host" */
    unsigned poll_interval;
    unsigned long count;       /* --count, 0: no limit */
    unsigned long changes;     /* changed lines printed */
    unsigned duration;         /* --duration, 0: none */
    int no_ack;

    struct httpc http;
    const char *token;
    char *state_path;          /* /v1/state?device=..&folders=.. */
    char etag[HTTPC_ETAG_MAX];

    int fd;                    /* the UDP socket */
    int family;
    unsigned local_port;

    int registered;
    struct registration reg;
    uint64_t replaced_id;      /* the registration the current one replaced, 0: none */
    uint64_t next_register_ms; /* when unregistered: the next attempt, 0: never */
    int failure_said;          /* the fallback line of the current failure is printed */
    int blocked_said;          /* the "UDP seems blocked" line is printed */
    int fatal;                 /* a poll was refused for good (401, 403): exit 1 */
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

void cmd_listen_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge listen --device ID [--folder NAME ...] [--port P] [--host ADDR]\n"
            "                    [--poll-interval SECONDS] [--count N] [--duration SECONDS]\n"
            "                    [--no-ack] [SERVER OPTIONS]\n"
            "\n"
            "Acts as a device that hears about changes by UDP datagrams (POST /v1/udp,\n"
            "docs/udp.md): binds a UDP socket, registers it, checks every datagram's tag\n"
            "and sequence number, acks each notify, and polls GET /v1/state as a fallback.\n"
            "Lines on standard output, flushed at once:\n"
            "  registered id=9203781125375421577 address=192.0.2.7:40001\n"
            "             server=198.51.100.1:8080 ttl=3600 port=40001   (one line; again\n"
            "                                                   after every renewal)\n"
            "  changed INBOX=18 via=udp seq=4\n"
            "  fallback polling every 60 s: the state moved but no datagram arrived (UDP\n"
            "           from the server seems blocked)                       (one line, once)\n"
            "  fallback polling every 60 s: registration failed: HTTP 501 udp-disabled: ...\n"
            "  changed INBOX=19 via=poll\n"
            "A datagram that fails a check is ignored, with one line on standard error:\n"
            "  nudge listen: rejected datagram from 198.51.100.1:8080: bad tag ...\n"
            "\n"
            "  --device ID           the device's id (required)\n"
            "  --folder NAME         a folder to hear about (default INBOX); repeatable. Its\n"
            "                        state is learned from the server at start\n"
            "  --port P              the UDP port to receive on (default 0: any free one)\n"
            "  --host ADDR           the address nudged should send to, when it is not the\n"
            "                        address it sees the requests come from (the server\n"
            "                        must allow it: [udp] allowed_hosts)\n"
            "  --poll-interval SECONDS\n"
            "                        poll GET /v1/state this often, whatever UDP does\n"
            "                        (default %d, at least 1)\n"
            "  --count N             exit 0 after N changed lines\n"
            "  --duration SECONDS    exit 0 after this long\n"
            "  --no-ack              do not ack notifies (nudged then resends them)\n"
            "  --user ID             the user to mint a token for with -c or --secret-file\n"
            "  -h, --help            show this help\n"
            "\n"
            "Server options:\n" CLI_SERVER_HELP
            "\n"
            "The registration is renewed at %d%% of its TTL (a new id and key each time)\n"
            "and retried every %d s after a failure that may pass; it is ended with\n"
            "DELETE /v1/udp/ID on exit (--count, --duration, SIGINT, SIGTERM).\n"
            "Exit status: 0 stopped as asked; 1 the UDP socket could not be bound or the\n"
            "server refused the token; 2 usage.\n",
            LISTEN_DEFAULT_POLL_S, RENEW_PERCENT, REGISTER_RETRY_S);
}

/* Prints one line on standard output and flushes it. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int count_reached(const struct listener *l)
{
    return l->count > 0 && l->changes >= l->count;
}

/* Prints "changed NAME=STATE via=..." and counts it. */
static void print_change(struct listener *l, const struct lfolder *f, const char *via)
{
    char nbuf[2 * FOLDER_MAX + 8];

    say("changed %s=%llu via=%s", log_q(nbuf, sizeof(nbuf), f->name),
        (unsigned long long)f->state, via);
    l->changes++;
}

static struct lfolder *find_folder(struct listener *l, const char *name, size_t len)
{
    for (size_t i = 0; i < l->nfolders; i++)
        if (strlen(l->folders[i].name) == len && memcmp(l->folders[i].name, name, len) == 0)
            return &l->folders[i];
    return NULL;
}

/* A decimal state string of a JSON answer, or -1. */
static int json_state(const json_t *v, uint64_t *out)
{
    const char *s = json_string_value(v);

    if (s == NULL)
        return -1;
    return util_parse_u64(s, strlen(s), out) < 0 ? -1 : 0;
}

/* -- the UDP socket ----------------------------------------------------------- */

/* Binds the UDP socket in the server connection's family (or --host's). Returns 0 or -1. */
static int bind_udp(struct listener *l)
{
    char err[256];
    unsigned char addr[sizeof(struct in6_addr)];
    int fd;

    l->family = udpsock_family(&l->http);
    if (l->host != NULL)
        l->family = inet_pton(AF_INET6, l->host, addr) == 1 ? AF_INET6 : AF_INET;
    fd = udpsock_bind(l->family, l->port, &l->local_port, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "nudge listen: %s\n", err);
        return -1;
    }
    l->fd = fd;
    return 0;
}

/* -- HTTP: polls and the registration ------------------------------------------- */

/* Builds /v1/state?device=..&folders=A,B once. Returns 0 or -1 (printed). */
static int build_state_path(struct listener *l)
{
    /* Every byte may become %XX; the commas and the fixed parts fit in 64. */
    size_t cap = 3 * strlen(l->device) + 64, n;
    char *p;

    for (size_t i = 0; i < l->nfolders; i++)
        cap += 3 * strlen(l->folders[i].name) + 1;
    p = malloc(cap);
    if (p == NULL) {
        fprintf(stderr, "nudge listen: out of memory\n");
        return -1;
    }
    n = (size_t)snprintf(p, cap, "/v1/state?device=");
    n += (size_t)httpc_query_escape(l->device, p + n, cap - n);
    n += (size_t)snprintf(p + n, cap - n, "&folders=");
    for (size_t i = 0; i < l->nfolders; i++) {
        if (i > 0)
            p[n++] = ',';
        /* A ',' inside a name is escaped (%2C): the server splits on the bare ones. */
        n += (size_t)httpc_query_escape(l->folders[i].name, p + n, cap - n);
    }
    p[n] = '\0';
    l->state_path = p;
    return 0;
}

/* Handles UDP datagrams for up to 'ms' milliseconds (forward declaration). */
static void udp_wait(struct listener *l, unsigned ms);

/*
 * One GET /v1/state. 'first' (the poll at start) only learns the states.
 * Later polls print the folders that moved past what is held. Returns 0,
 * or -1 when the server refused the token (l->fatal set) or the answer
 * made no sense; network errors and 5xx are printed and return 0.
 */
static int poll_states(struct listener *l, int first)
{
    struct httpc_response resp;
    char err[512], hdr[HTTPC_ETAG_MAX + 32] = "", reason[REASON_MAX];
    json_t *root = NULL, *folders;
    int moved = 0, rc = 0;

    if (l->etag[0] != '\0')
        snprintf(hdr, sizeof(hdr), "If-None-Match: %s\r\n", l->etag);
    if (httpc_request_hdr(&l->http, "GET", l->state_path, l->token, hdr[0] ? hdr : NULL, NULL,
                          0, &resp, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge listen: poll: %s\n", err);
        return 0;
    }
    if (resp.status == 304)
        goto done;
    if (resp.status != 200) {
        cli_describe_answer(&resp, reason, sizeof(reason));
        fprintf(stderr, "nudge listen: poll: %s\n", reason);
        if (resp.status == 401 || resp.status == 403) {
            l->fatal = 1;
            rc = -1;
        }
        goto done;
    }
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    folders = json_object_get(root, "folders");
    if (!json_is_object(folders)) {
        fprintf(stderr, "nudge listen: poll: an answer without a folders object\n");
        goto done;
    }
    /* An ETag is only worth presenting once its answer has been taken in. */
    memcpy(l->etag, resp.etag, sizeof(l->etag));
    for (size_t i = 0; i < l->nfolders; i++) {
        struct lfolder *f = &l->folders[i];
        json_t *v = json_object_get(folders, f->name);
        uint64_t s;
        /* A folder nobody published to may be left out: its state is 0. */
        if (v == NULL)
            s = 0;
        else if (json_state(v, &s) < 0)
            continue;
        if (first || !f->known) {
            f->state = s;
            f->known = 1;
        } else if (s > f->state) {
            moved = 1;
        }
    }
    if (!moved)
        goto done;
    /*
     * When registered, give a datagram racing with this answer its chance:
     * a change it reports is news from UDP, not from the poll.
     */
    if (l->registered)
        udp_wait(l, UDP_GRACE_MS);
    for (size_t i = 0; i < l->nfolders && !count_reached(l); i++) {
        struct lfolder *f = &l->folders[i];
        uint64_t s;
        if (json_state(json_object_get(folders, f->name), &s) < 0 || s <= f->state)
            continue;
        if (l->registered && !l->blocked_said) {
            say("fallback polling every %u s: the state moved but no datagram arrived (UDP "
                "from the server seems blocked)",
                l->poll_interval);
            l->blocked_said = 1;
        }
        f->state = s;
        print_change(l, f, "poll");
    }
done:
    json_decref(root);
    httpc_response_free(&resp);
    return rc;
}

/* The POST /v1/udp body: states when they are known, else the names only. */
static char *register_body(const struct listener *l)
{
    json_t *o = json_object(), *folders;
    int known = 1;
    char *body = NULL;

    for (size_t i = 0; i < l->nfolders; i++)
        known &= l->folders[i].known;
    folders = known ? json_object() : json_array();
    if (o == NULL || folders == NULL || json_object_set_new(o, "folders", folders) < 0 ||
        json_object_set_new(o, "device", json_string(l->device)) < 0 ||
        json_object_set_new(o, "port", json_integer(l->local_port)) < 0)
        goto done;
    if (l->host != NULL && json_object_set_new(o, "host", json_string(l->host)) < 0)
        goto done;
    for (size_t i = 0; i < l->nfolders; i++) {
        const struct lfolder *f = &l->folders[i];
        char st[24];
        snprintf(st, sizeof(st), "%llu", (unsigned long long)f->state);
        if (known ? json_object_set_new(folders, f->name, json_string(st)) < 0
                  : json_array_append_new(folders, json_string(f->name)) < 0)
            goto done;
    }
    body = json_dumps(o, JSON_COMPACT);
done:
    json_decref(o);
    return body;
}

/* Decodes the answer's standard base64 key into exactly 32 bytes. Returns 0 or -1. */
static int decode_key(const char *b64, uint8_t key[DGRAM_KEY_LEN])
{
    /* 32 bytes are 44 base64 characters, the last one '=' padding. */
    unsigned char out[33];

    if (b64 == NULL || strlen(b64) != 44 || b64[43] != '=' || b64[42] == '=')
        return -1;
    if (EVP_DecodeBlock(out, (const unsigned char *)b64, 44) != 33)
        return -1;
    memcpy(key, out, DGRAM_KEY_LEN);
    return 0;
}

/*
 * Takes a 200 answer to POST /v1/udp into 'r'. Returns 0, or -1 with why
 * in 'reason'.
 */
static int take_registration(struct listener *l, const struct httpc_response *resp,
                             struct registration *r, char *reason, size_t rlen)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *id_s = json_string_value(json_object_get(root, "id"));
    const char *address = json_string_value(json_object_get(root, "address"));
    const char *server = json_string_value(json_object_get(root, "server"));
    json_t *ttl = json_object_get(root, "ttl"), *folders = json_object_get(root, "folders");
    char abuf[ADDR_STR_MAX * 2 + 8], sbuf[ADDR_STR_MAX * 2 + 8];
    uint64_t now = util_now_ms();
    int rc = -1;

    memset(r, 0, sizeof(*r));
    if (id_s == NULL || util_parse_u64(id_s, strlen(id_s), &r->id) < 0 || r->id == 0) {
        snprintf(reason, rlen, "the answer has no registration id");
        goto done;
    }
    if (decode_key(json_string_value(json_object_get(root, "key")), r->key) < 0) {
        snprintf(reason, rlen, "the answer's key is not 32 bytes of standard base64");
        goto done;
    }
    if (!json_is_integer(ttl) || json_integer_value(ttl) < 1 ||
        json_integer_value(ttl) > 30 * 86400) {
        snprintf(reason, rlen, "the answer's ttl is not a number of seconds");
        goto done;
    }
    r->ttl = (unsigned)json_integer_value(ttl);
    if (udpsock_peer(l->family, server, &r->server, &r->server_len) < 0) {
        /* Datagrams may still arrive; only acks cannot go. */
        fprintf(stderr, "nudge listen: the server's UDP address %s cannot be reached from "
                        "this socket: no acks will be sent\n",
                server ? server : "(missing)");
        r->server_len = 0;
    }
    r->renew_at_ms = now + (uint64_t)r->ttl * 1000 * RENEW_PERCENT / 100;
    r->expires_at_ms = now + (uint64_t)r->ttl * 1000;
    /* Folders whose state was unknown take the server's (they were registered by name). */
    if (json_is_object(folders)) {
        for (size_t i = 0; i < l->nfolders; i++) {
            struct lfolder *f = &l->folders[i];
            uint64_t s;
            if (!f->known && json_state(json_object_get(folders, f->name), &s) == 0) {
                f->state = s;
                f->known = 1;
            }
        }
    }
    say("registered id=%llu address=%s server=%s ttl=%u port=%u", (unsigned long long)r->id,
        log_q(abuf, sizeof(abuf), address ? address : "?"),
        log_q(sbuf, sizeof(sbuf), server ? server : "?"), r->ttl, l->local_port);
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/*
 * Registers, or renews the registration (POST /v1/udp). On failure prints
 * the fallback line (once per run of failures) and schedules the next try.
 */
static void do_register(struct listener *l)
{
    struct httpc_response resp;
    struct registration r;
    char err[512], reason[REASON_MAX];
    char *body = register_body(l);
    uint64_t now = util_now_ms();
    unsigned retry_s = REGISTER_RETRY_S;
    int retry = 1;

    if (body == NULL) {
        snprintf(reason, sizeof(reason), "out of memory");
        goto failed;
    }
    if (httpc_request(&l->http, "POST", "/v1/udp", l->token, body, strlen(body), &resp, err,
                      sizeof(err)) < 0) {
        snprintf(reason, sizeof(reason), "%s", err);
        goto failed;
    }
    if (resp.status != 200) {
        cli_describe_answer(&resp, reason, sizeof(reason));
        /* Only overload and server trouble may pass; a refusal stays a refusal. */
        retry = resp.status == 429 || resp.status >= 500;
        if (resp.status == 501)
            retry = 0; /* udp-disabled: [udp] listen is empty, a restart at least away */
        if (resp.status == 429 && resp.retry_after > 0 && resp.retry_after < 3600)
            retry_s = (unsigned)resp.retry_after;
        httpc_response_free(&resp);
        goto failed;
    }
    if (take_registration(l, &resp, &r, reason, sizeof(reason)) < 0) {
        httpc_response_free(&resp);
        retry = 0;
        goto failed;
    }
    httpc_response_free(&resp);
    free(body);
    if (l->registered && l->reg.id != r.id)
        l->replaced_id = l->reg.id;
    l->reg = r;
    l->registered = 1;
    l->failure_said = 0;
    return;
failed:
    free(body);
    if (!l->failure_said)
        say("fallback polling every %u s: registration failed: %s", l->poll_interval, reason);
    l->failure_said = 1;
    if (l->registered) {
        /*
         * A failed renewal: the registration lives on until its TTL. Try again
         * before then (within half of what is left) if the failure may pass;
         * else keep it to its end, when the loop lets it go.
         */
        uint64_t left = l->reg.expires_at_ms > now ? l->reg.expires_at_ms - now : 0;
        uint64_t wait = retry ? (uint64_t)retry_s * 1000 : left;
        if (retry && wait > left / 2)
            wait = left / 2;
        if (wait < 1000)
            wait = 1000; /* never spin on a registration about to expire */
        l->reg.renew_at_ms = now + wait;
    }
    l->next_register_ms = retry ? now + (uint64_t)retry_s * 1000 : 0;
}

/* Ends the registration: DELETE /v1/udp/{device}. Failures are only reported. */
static void unregister(struct listener *l)
{
    struct httpc_response resp;
    char err[512], reason[REASON_MAX], *path;
    size_t cap = 3 * strlen(l->device) + sizeof("/v1/udp/");

    path = malloc(cap);
    if (path == NULL)
        return;
    memcpy(path, "/v1/udp/", 8);
    httpc_query_escape(l->device, path + 8, cap - 8);
    if (httpc_request(&l->http, "DELETE", path, l->token, NULL, 0, &resp, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge listen: ending the registration: %s\n", err);
    } else {
        if (resp.status != 200 && resp.status != 404) {
            cli_describe_answer(&resp, reason, sizeof(reason));
            fprintf(stderr, "nudge listen: ending the registration: %s\n", reason);
        }
        httpc_response_free(&resp);
    }
    free(path);
    l->registered = 0;
}

/* -- datagrams -------------------------------------------------------------------- */

static void reject(const char *from, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reject(const char *from, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nudge listen: rejected datagram from %s: ", from);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/*
 * Acks a notify with the state now held, to where the notify came from:
 * with several workers, the one that sent it (it owns the registration,
 * which may have moved since the registration named an address).
 * Failures are reported, never fatal.
 */
static void send_ack(struct listener *l, const struct dgram *d, const struct lfolder *f,
                     const struct sockaddr *src, socklen_t srclen)
{
    struct dgram ack = {
        .type = DGRAM_ACK,
        .reg_id = d->reg_id,
        .seq = d->seq,
        .state = f->state,
        .folder = f->name,
        .folder_len = strlen(f->name),
    };
    uint8_t out[DGRAM_MAX];
    size_t n = dgram_encode(&ack, l->reg.key, out);

    if (n == 0 || l->reg.server_len == 0)
        return;
    if (src == NULL || srclen == 0) {
        src = (const struct sockaddr *)&l->reg.server;
        srclen = l->reg.server_len;
    }
    if (sendto(l->fd, out, n, 0, src, srclen) < 0)
        fprintf(stderr, "nudge listen: sending an ack: %s\n", strerror(errno));
}

/* Checks one datagram and acts on it. */
static void on_datagram(struct listener *l, const uint8_t *buf, size_t len, const char *from,
                        const struct sockaddr *src, socklen_t srclen)
{
    struct dgram d;
    char whybuf[128], nbuf[2 * FOLDER_MAX + 8], name[FOLDER_MAX + 1];
    const char *why;
    struct lfolder *f;
    uint64_t last;

    if (dgram_parse(buf, len, &d, whybuf, sizeof(whybuf), &why) < 0) {
        reject(from, "%s", why);
        return;
    }
    if (d.type != DGRAM_NOTIFY) {
        reject(from, "a %s datagram, where only notifies are expected", dgram_type_name(d.type));
        return;
    }
    if (!l->registered) {
        reject(from, "registration %llu: this client holds no registration now",
               (unsigned long long)d.reg_id);
        return;
    }
    if (d.reg_id != l->reg.id) {
        if (d.reg_id == l->replaced_id)
            reject(from, "registration %llu, which this client has since replaced with %llu",
                   (unsigned long long)d.reg_id, (unsigned long long)l->reg.id);
        else
            reject(from, "registration %llu is not this client's (%llu)",
                   (unsigned long long)d.reg_id, (unsigned long long)l->reg.id);
        return;
    }
    if (!dgram_verify(buf, len, l->reg.key)) {
        reject(from, "bad tag (not signed with this registration's key)");
        return;
    }
    last = l->reg.last_seq;
    if (dgram_replay_check(&l->reg.last_seq, d.seq) < 0) {
        reject(from, "sequence number %llu replayed or out of order (%llu seen)",
               (unsigned long long)d.seq, (unsigned long long)last);
        return;
    }
    memcpy(name, d.folder, d.folder_len);
    name[d.folder_len] = '\0';
    f = find_folder(l, d.folder, d.folder_len);
    if (f == NULL) {
        reject(from, "folder %s was not registered by this client",
               log_q(nbuf, sizeof(nbuf), name));
        return;
    }
    if (!f->known || d.state > f->state) {
        int news = f->known;
        f->state = d.state;
        f->known = 1;
        if (news && !count_reached(l)) {
            say("changed %s=%llu via=udp seq=%llu", log_q(nbuf, sizeof(nbuf), f->name),
                (unsigned long long)f->state, (unsigned long long)d.seq);
            l->changes++;
        }
    }
    if (!l->no_ack)
        send_ack(l, &d, f, src, srclen);
}

/* Reads every datagram waiting on the socket. */
static void udp_drain(struct listener *l)
{
    uint8_t buf[RECV_MAX];
    char from[ADDR_STR_MAX];

    for (;;) {
        struct sockaddr_storage ss;
        socklen_t slen = sizeof(ss);
        ssize_t n = recvfrom(l->fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &slen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /*
             * EAGAIN: all read. Anything else (an ICMP error queued by an ack
             * to a port that is gone) is no reason to stop listening.
             */
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "nudge listen: receiving: %s\n", strerror(errno));
            return;
        }
        util_format_addr((struct sockaddr *)&ss, from, sizeof(from));
        on_datagram(l, buf, (size_t)n, from, (struct sockaddr *)&ss, slen);
    }
}

static void udp_wait(struct listener *l, unsigned ms)
{
    uint64_t end = util_now_ms() + ms;

    for (;;) {
        uint64_t now = util_now_ms();
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        int n;

        if (now >= end || stop_signal)
            return;
        n = poll(&pfd, 1, (int)(end - now));
        if (n > 0)
            udp_drain(l);
    }
}

/* -- the loop ------------------------------------------------------------------------ */

/* The earliest of a and b, ignoring zeros. */
static uint64_t earliest(uint64_t a, uint64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* Runs until --count, --duration or a signal. Returns the exit code. */
static int run(struct listener *l)
{
    uint64_t start = util_now_ms(), end_at = 0, next_poll;
    sigset_t block, orig;
    struct sigaction sa;

    /*
     * SIGINT and SIGTERM are blocked except inside ppoll, so one that arrives
     * while a request is under way ends the wait that follows instead of
     * being lost between the check and the wait.
     */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &orig);

    if (l->duration > 0)
        end_at = start + (uint64_t)l->duration * 1000;
    if (poll_states(l, 1) < 0)
        goto done;
    if (bind_udp(l) < 0) {
        l->fatal = 1;
        goto done;
    }
    do_register(l);
    next_poll = util_now_ms() + (uint64_t)l->poll_interval * 1000;

    while (!stop_signal && !count_reached(l) && !l->fatal) {
        uint64_t now = util_now_ms(), next;
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        struct timespec ts;

        if (end_at != 0 && now >= end_at)
            break;
        if (l->registered && now >= l->reg.expires_at_ms) {
            /* Expired (renewals failed, or a wait outlasted a short TTL): register anew. */
            l->registered = 0;
            l->replaced_id = l->reg.id;
            l->next_register_ms = now;
        }
        if (l->registered && now >= l->reg.renew_at_ms)
            do_register(l);
        else if (!l->registered && l->next_register_ms != 0 && now >= l->next_register_ms)
            do_register(l);
        if (now >= next_poll) {
            poll_states(l, 0);
            next_poll = util_now_ms() + (uint64_t)l->poll_interval * 1000;
            continue; /* the poll took time and may have reached --count */
        }
        next = earliest(next_poll, end_at);
        next = earliest(next, l->registered ? l->reg.renew_at_ms : l->next_register_ms);
        now = util_now_ms();
        next = next > now ? next - now : 0;
        ts.tv_sec = (time_t)(next / 1000);
        ts.tv_nsec = (long)(next % 1000) * 1000000;
        if (ppoll(&pfd, 1, &ts, &orig) > 0)
            udp_drain(l);
    }
done:
    if (l->registered)
        unregister(l);
    sigprocmask(SIG_SETMASK, &orig, NULL);
    return l->fatal ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* Folder names: the server's rules (1..255 bytes, no control characters). */
static int check_folder(const char *cmd, const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > FOLDER_MAX)
        return cli_usage_error(cmd, "--folder: a folder name is 1 to %d bytes", FOLDER_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < ' ' || name[i] == 0x7f)
            return cli_usage_error(cmd, "--folder: control characters are not allowed in a "
                                        "folder name");
    return 0;
}

/* What on_option fills: the listener itself, and what only start-up needs. */
struct listen_args {
    struct listener *l;
    const char *user;
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct listen_args *a = arg;
    struct listener *l = a->l;
    unsigned char addr[sizeof(struct in6_addr)];
    uint64_t v;

    switch (opt) {
    case OPT_DEVICE:
        l->device = value;
        break;
    case OPT_FOLDER:
        if (check_folder(cmd, value) != 0)
            return CLI_EXIT_USAGE;
        if (find_folder(l, value, strlen(value)) != NULL)
            return cli_usage_error(cmd, "--folder '%s' is given twice", value);
        l->folders[l->nfolders++].name = value;
        break;
    case OPT_PORT:
        if (cli_parse_number(cmd, "--port", value, 0, 65535, &v) != 0)
            return CLI_EXIT_USAGE;
        l->port = (unsigned)v;
        break;
    case OPT_HOST:
        if (inet_pton(AF_INET, value, addr) != 1 && inet_pton(AF_INET6, value, addr) != 1)
            return cli_usage_error(cmd, "--host '%s': expected an IPv4 or IPv6 address (no "
                                        "name, no brackets, no port)",
                                   value);
        l->host = value;
        break;
    case OPT_POLL_INTERVAL:
        if (cli_parse_number(cmd, "--poll-interval", value, 1, LISTEN_POLL_MAX_S, &v) != 0)
            return CLI_EXIT_USAGE;
        l->poll_interval = (unsigned)v;
        break;
    case OPT_COUNT:
        if (cli_parse_number(cmd, "--count", value, 1, UINT32_MAX, &v) != 0)
            return CLI_EXIT_USAGE;
        l->count = (unsigned long)v;
        break;
    case OPT_DURATION:
        /* A year: longer is "forever", which is leaving --duration out. */
        if (cli_parse_number(cmd, "--duration", value, 1, 366 * 86400, &v) != 0)
            return CLI_EXIT_USAGE;
        l->duration = (unsigned)v;
        break;
    case OPT_NO_ACK:
        l->no_ack = 1;
        break;
    case OPT_USER:
        a->user = value;
        break;
    }
    return 0;
}

int cmd_listen(int argc, char **argv)
{
    static const struct option options[] = {
        {"device", required_argument, NULL, OPT_DEVICE},
        {"folder", required_argument, NULL, OPT_FOLDER},
        {"port", required_argument, NULL, OPT_PORT},
        {"host", required_argument, NULL, OPT_HOST},
        {"poll-interval", required_argument, NULL, OPT_POLL_INTERVAL},
        {"count", required_argument, NULL, OPT_COUNT},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"no-ack", no_argument, NULL, OPT_NO_ACK},
        {"user", required_argument, NULL, OPT_USER},
        {NULL, 0, NULL, 0},
    };
    static struct lfolder inbox = {.name = "INBOX"};
    const char *cmd = "listen";
    struct listener l;
    struct listen_args a = {.l = &l};
    struct cli_server srv;
    char token[TOKEN_MAX], err[512];
    int rc;

    memset(&l, 0, sizeof(l));
    l.fd = -1;
    l.http.fd = -1;
    l.poll_interval = LISTEN_DEFAULT_POLL_S;
    /* argc bounds the number of --folder options. */
    l.folders = calloc((size_t)argc, sizeof(*l.folders));
    if (l.folders == NULL) {
        fprintf(stderr, "nudge listen: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = cli_parse_args(cmd, argc, argv, options, &srv, cmd_listen_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        goto done;
    if (l.device == NULL) {
        rc = cli_usage_error(cmd, "--device ID is required");
        goto done;
    }
    if (l.device[0] == '\0' || strlen(l.device) > DEVICE_MAX) {
        rc = cli_usage_error(cmd, "--device: a device id is 1 to %d bytes", DEVICE_MAX);
        goto done;
    }
    for (const char *c = l.device; *c; c++) {
        if ((unsigned char)*c < ' ' || *c == 0x7f) {
            rc = cli_usage_error(cmd, "--device: control characters are not allowed in a "
                                      "device id");
            goto done;
        }
    }
    if (l.nfolders == 0) {
        free(l.folders);
        l.folders = &inbox;
        l.nfolders = 1;
    }
    if ((rc = cli_check_mint_user(&srv, cmd, a.user)) != 0)
        goto done;
    if (httpc_init(&l.http, srv.url, LISTEN_HTTP_TIMEOUT_MS, err, sizeof(err)) < 0) {
        rc = cli_usage_error(cmd, "%s", err);
        goto done;
    }
    rc = cli_server_token(&srv, cmd, TOKEN_USER, a.user, CLI_USER_TTL, token);
    if (rc != CLI_EXIT_OK)
        goto done;
    l.token = token;
    rc = CLI_EXIT_FAIL;
    if (build_state_path(&l) < 0)
        goto done;
    rc = run(&l);
done:
    httpc_close(&l.http);
    if (l.fd >= 0)
        close(l.fd);
    free(l.state_path);
    if (l.folders != &inbox)
        free(l.folders);
    return rc;
}
