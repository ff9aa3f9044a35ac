/*
 * cmd_doctor.c — `nudge doctor`: checks, from where it runs, what a device
 * needs from nudged, and prints one line per check with the fix for what is
 * wrong:
 *
 *   1. server   GET /healthz answers {"status":"ok"}; plain HTTP off loopback
 *      TLS      (https:// only) protocol, cipher, ALPN, each certificate of
 *               the chain with its expiry, the chain's verification, the
 *               host name, and whether a second connection resumes
 *   2. token    GET /v1/state?folders=INBOX takes the token as a user's
 *   3. clock    the answers' Date header against the local clock
 *   4. UDP      POST /v1/udp/test: does the test datagram arrive?
 *   5. ping     the heartbeat bounds (a ping refused as out of range), then a
 *               ping that must be answered at once, timed
 *   6. idle timeout (--probe): the path's, measured as `nudge probe` does,
 *               against the heartbeat max
 *
 * A check that needs what an earlier one learnt is not printed when that
 * one failed: nothing follows an unreachable server, only the clock follows
 * a refused token, and the probe needs the ping's heartbeat max.
 *
 * Every request goes over one kept-alive connection (httpc), each bounded by
 * DOCTOR_HTTP_TIMEOUT_MS; the probe opens its own. Cost: a handful of
 * requests and one UDP socket, a few seconds (--udp-timeout) at most
 * without --probe; with it, about 3 times the heartbeat max.
 */
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "cli/tlsc.h"
#include "cli/udpsock.h"
#include "common/util.h"
#include "udp/datagram.h"

enum {
    OPT_DEVICE = CLI_OPT_FIRST_OWN,
    OPT_PORT,
    OPT_UDP_TIMEOUT,
    OPT_PROBE,
    OPT_PROBE_MIN,
    OPT_PROBE_MAX,
    OPT_PROBE_PRECISION,
    OPT_USER,
};

#define DOCTOR_DEFAULT_DEVICE "nudge-doctor"
/* Each of these requests is answered at once by a healthy nudged; 10 s is a sick one. */
#define DOCTOR_HTTP_TIMEOUT_MS 10000
/* A test datagram crosses any sane path in well under a second; 3 s forgives a slow one. */
#define DOCTOR_UDP_TIMEOUT_S 3
/* Longer than a minute, the datagram is not coming. */
#define DOCTOR_UDP_TIMEOUT_MAX_S 60
/* Clock skew: within 30 s nobody notices; past 5 minutes tokens visibly misbehave. */
#define SKEW_OK_S 30
#define SKEW_WARN_S 300
/* What clients do without notifications (DESIGN.md, section 8). */
#define POLL_FALLBACK_S 60
/* Random bytes in the test datagram's nonce, sent as hex (the nonce holds at most 64 bytes). */
#define NONCE_BYTES 16
#define DEVICE_MAX 128
#define REASON_MAX 512
#define ADDR_STR_MAX (INET6_ADDRSTRLEN + 16)
/* Two weeks: time to notice the warning and renew before devices start refusing. */
#define CERT_WARN_DAYS 14
#define CERT_NAME_MAX 256

enum level { LVL_OK, LVL_WARN, LVL_FAIL };

struct doctor {
    struct httpc http;
    const char *token;
    const char *device;
    const char *cacert;        /* --cacert / $NUDGE_CACERT, for the TLS report */
    int insecure;              /* --insecure */
    unsigned udp_port;
    unsigned udp_timeout;
    int probe;
    struct cli_probe_opts probe_opts;
    int probe_max_given;
    int failed;                /* some check FAILed */

    time_t date;               /* the last answer's Date header, -1: none */
    time_t date_local;         /* the local clock when that answer arrived */
    uint64_t inbox_state;      /* from check 2 */
    unsigned hb_min, hb_max;   /* from check 5 */
};

void cmd_doctor_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge doctor [--device ID] [--port P] [--udp-timeout SECONDS]\n"
            "                    [--probe [--probe-min S] [--probe-max S] [--probe-precision P%%]]\n"
            "                    [SERVER OPTIONS]\n"
            "\n"
            "Checks what a device needs from nudged, from where it runs, and prints one\n"
            "line per check: OK, WARN (works, but read on) or FAIL, with the fix:\n"
            "  OK   server: http://127.0.0.1:8080 answered /healthz in 1 ms (plain HTTP,\n"
            "       loopback)\n"
            "  OK   token: accepted as a user token\n"
            "  OK   clock: within 0 s of the server's\n"
            "  OK   UDP: the test datagram from 127.0.0.1:8080 arrived in 1 ms\n"
            "  OK   ping: answered in 2 ms; heartbeat min 60 s, max 1680 s, heartbeat_hint 60 s\n"
            "The checks, in order:\n"
            "  1 server   GET /healthz; WARN for plain HTTP to an address that is not\n"
            "             loopback (tokens cross the network in the clear)\n"
            "    TLS      https:// only: protocol, cipher and ALPN; each certificate of the\n"
            "             chain (subject, issuer, not after): WARN under %d days left,\n"
            "             FAIL expired or not yet valid; the chain's verification (FAIL\n"
            "             when devices would refuse it, also with --insecure); the host\n"
            "             name; resumption (WARN when a second connection does not resume)\n"
            "  2 token    GET /v1/state with the token\n"
            "  3 clock    the server's Date header: OK within %d s, WARN up to %d s, else FAIL\n"
            "  4 UDP      POST /v1/udp/test: a test datagram must arrive within --udp-timeout;\n"
            "             WARN when the server has UDP off\n"
            "  5 ping     learns the heartbeat bounds, then times a ping answered at once\n"
            "  6 idle timeout (only with --probe) measures the path's idle timeout as\n"
            "             'nudge probe' does; FAIL when it does not outlast the heartbeat max\n"
            "Checks that need an earlier one's result are not printed when it failed:\n"
            "none after an unreachable server, only the clock after a refused token,\n"
            "no idle timeout after a failed ping.\n"
            "\n"
            "  --device ID           the device id of the ping (default %s)\n"
            "  --port P              the UDP port for the test datagram (default 0: any)\n"
            "  --udp-timeout SECONDS how long to wait for it (default %d, 1 to %d)\n"
            "  --probe               also measure the path's idle timeout (takes about 3\n"
            "                        times the heartbeat max: run it where the clients are)\n"
            "  --probe-min SECONDS   the shortest probe (default 1)\n"
            "  --probe-max SECONDS   the longest probe (default: the server's heartbeat max,\n"
            "                        enough to prove that heartbeats survive)\n"
            "  --probe-precision P%%  as nudge probe --precision (default 5%%)\n"
            "  --user ID             the user to mint a token for with -c or --secret-file\n"
            "  -h, --help            show this help\n"
            "\n"
            "Server options:\n" CLI_SERVER_HELP
            "\n"
            "Exit status: 0 no check failed (WARN is fine); 1 a check failed; 2 usage;\n"
            "3 the https server's certificate was refused.\n",
            CERT_WARN_DAYS, SKEW_OK_S, SKEW_WARN_S, DOCTOR_DEFAULT_DEVICE, DOCTOR_UDP_TIMEOUT_S,
            DOCTOR_UDP_TIMEOUT_MAX_S);
}

/* Prints one check's line; a FAIL marks the run failed. */
static void report(struct doctor *d, enum level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct doctor *d, enum level lvl, const char *fmt, ...)
{
    static const char *const prefix[] = {"OK   ", "WARN ", "FAIL "};
    va_list ap;

    fputs(prefix[lvl], stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (lvl == LVL_FAIL)
        d->failed = 1;
}

/* One request; remembers the answer's Date for the clock check. Returns httpc's result. */
static int request(struct doctor *d, const char *method, const char *path, const char *token,
                   const char *body, struct httpc_response *resp, char *err, size_t errlen)
{
    int rc = httpc_request(&d->http, method, path, token, body, body ? strlen(body) : 0, resp,
                           err, errlen);

    if (rc == 0 && resp->date != -1) {
        d->date = resp->date;
        d->date_local = time(NULL);
    }
    return rc;
}

/* Whether the open connection's peer is a loopback address (127/8, ::1, ::ffff:127/104). */
static int peer_is_loopback(const struct doctor *d)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (d->http.fd < 0 || getpeername(d->http.fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* -- 1. server ------------------------------------------------------------------ */

static int check_server(struct doctor *d, const char *url)
{
    struct httpc_response resp;
    char err[512], why[REASON_MAX];
    uint64_t t0 = util_now_ms(), ms;
    json_t *root;
    int ok;

    int rc = request(d, "GET", "/healthz", NULL, NULL, &resp, err, sizeof(err));

    if (rc == -TLSC_EVERIFY) {
        /* The sentence names what failed and has its own fix. */
        report(d, LVL_FAIL, "server: %s", err);
        return -1;
    }
    if (rc < 0) {
        report(d, LVL_FAIL, "server: %s; fix: check --url, and that nudged runs and listens "
                            "there ([server] listen%s)",
               err, d->http.tls ? " with tls" : "");
        return -1;
    }
    ms = util_now_ms() - t0;
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    ok = resp.status == 200 &&
         json_is_string(json_object_get(root, "status")) &&
         strcmp(json_string_value(json_object_get(root, "status")), "ok") == 0;
    json_decref(root);
    if (!ok) {
        cli_describe_answer(&resp, why, sizeof(why));
        httpc_response_free(&resp);
        report(d, LVL_FAIL, "server: GET /healthz answered %s, not {\"status\":\"ok\"}; fix: "
                            "check that --url names nudged (host, port and path)",
               why);
        return -1;
    }
    httpc_response_free(&resp);
    if (d->http.tls)
        report(d, LVL_OK, "server: %s answered /healthz in %llu ms (TLS)", url,
               (unsigned long long)ms);
    else if (peer_is_loopback(d))
        report(d, LVL_OK, "server: %s answered /healthz in %llu ms (plain HTTP, loopback)", url,
               (unsigned long long)ms);
    else
        report(d, LVL_WARN, "server: %s answered /healthz in %llu ms over plain HTTP, to an "
                            "address that is not loopback: tokens cross the network in the "
                            "clear; fix: give nudged a tls listener ([server] listen = "
                            "0.0.0.0:443 tls, [tls] cert and key) or a TLS-terminating "
                            "proxy, and use https://",
               url, (unsigned long long)ms);
    return 0;
}

/* -- 1b. TLS ------------------------------------------------------------------ */

/* One certificate of the chain: its names, dates and what they mean. */
static void report_cert(struct doctor *d, int i, X509 *x)
{
    char subject[CERT_NAME_MAX], issuer[CERT_NAME_MAX], after[40];
    const ASN1_TIME *na = X509_get0_notAfter(x);
    int days = 0, secs = 0;

    tlsc_subject(x, subject, sizeof(subject));
    tlsc_issuer(x, issuer, sizeof(issuer));
    tlsc_time(na, after, sizeof(after));
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        char before[40];
        tlsc_time(X509_get0_notBefore(x), before, sizeof(before));
        report(d, LVL_FAIL, "certificate %d: subject %s, issuer %s: not valid before %s; fix: "
                            "check both clocks, or the certificate's dates",
               i, subject, issuer, before);
        return;
    }
    if (ASN1_TIME_diff(&days, &secs, NULL, na) != 1) {
        report(d, LVL_FAIL, "certificate %d: subject %s: its not-after date cannot be read", i,
               subject);
        return;
    }
    if (days < 0 || secs < 0 || (days == 0 && secs == 0))
        report(d, LVL_FAIL, "certificate %d: subject %s, issuer %s, not after %s: expired %d "
                            "days ago; fix: renew it",
               i, subject, issuer, after, days < 0 ? -days : 0);
    else if (days < CERT_WARN_DAYS)
        report(d, LVL_WARN, "certificate %d: subject %s, issuer %s, not after %s: %d days left; "
                            "fix: renew it before devices start refusing it",
               i, subject, issuer, after, days);
    else
        report(d, LVL_OK, "certificate %d: subject %s, issuer %s, not after %s (%d days left)",
               i, subject, issuer, after, days);
}

/* Whether the leaf names the URL's host: DNS names for a name, IP addresses for a literal. */
static int names_host(X509 *leaf, const char *host)
{
    unsigned char ip[16];

    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)
        return X509_check_ip_asc(leaf, host, 0) == 1;
    return X509_check_host(leaf, host, 0, 0, NULL) == 1;
}

/*
 * Reports the TLS of the connection check_server opened (the first of the
 * process, so a full handshake with the whole chain), then reconnects with
 * the session it left, to tell whether resumption works.
 */
static void check_tls(struct doctor *d)
{
    SSL *ssl = d->http.ssl;
    STACK_OF(X509) *chain;
    X509 *leaf;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    long vr;
    SSL_SESSION *sess;
    struct httpc_response resp;
    char err[512];
    int offered, rc;

    if (ssl == NULL) {
        /* The handshake was verified all the same; only the report needs the connection. */
        report(d, LVL_WARN, "TLS: verified, but not reported: the server closed the "
                            "connection after /healthz (keep-alive off?)");
        return;
    }
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    report(d, LVL_OK, "TLS: %s, cipher %s, ALPN %.*s", SSL_get_version(ssl),
           SSL_get_cipher_name(ssl), alpn_len ? (int)alpn_len : 4,
           alpn_len ? (const char *)alpn : "none");
    chain = SSL_get_peer_cert_chain(ssl);
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++)
        report_cert(d, i, sk_X509_value(chain, i));

    vr = SSL_get_verify_result(ssl);
    if (!d->insecure)
        report(d, LVL_OK, "chain: verified against %s", d->cacert ? d->cacert : "the system store");
    else if (vr == X509_V_OK)
        report(d, LVL_WARN, "chain: not enforced (--insecure), but it verifies against the "
                            "system store; fix: drop --insecure");
    else
        report(d, LVL_FAIL, "chain: not enforced (--insecure); devices that verify refuse it: "
                            "%s; fix: a certificate from a CA the devices trust",
               X509_verify_cert_error_string(vr));

    leaf = SSL_get0_peer_certificate(ssl);
    if (leaf != NULL && names_host(leaf, d->http.host))
        report(d, LVL_OK, "host name: the certificate names %s", d->http.host);
    else
        report(d, LVL_FAIL, "host name: the certificate does not name %s; fix: a certificate "
                            "for the name devices use, or that name in --url",
               d->http.host);

    sess = tlsc_session();
    offered = sess != NULL && SSL_SESSION_has_ticket(sess);
    httpc_close(&d->http);
    rc = request(d, "GET", "/healthz", NULL, NULL, &resp, err, sizeof(err));
    if (rc < 0) {
        report(d, LVL_FAIL, "resumption: reconnecting failed: %s", err);
        return;
    }
    httpc_response_free(&resp);
    if (d->http.ssl != NULL && SSL_session_reused(d->http.ssl))
        report(d, LVL_OK, "resumption: %s; a second connection resumed it",
               offered ? "the server offered a session ticket" : "the server kept the session");
    else
        report(d, LVL_WARN, "resumption: %s; a second connection paid a full handshake; fix: "
                            "enable session tickets or a session cache on the server",
               offered ? "the server offered a session ticket, but did not resume it"
                       : "the server offered no session ticket");
}

/* -- 2. token ------------------------------------------------------------------- */

static int check_token(struct doctor *d)
{
    struct httpc_response resp;
    char err[512], why[REASON_MAX];
    json_t *root, *v;
    const char *s;

    if (request(d, "GET", "/v1/state?folders=INBOX", d->token, NULL, &resp, err,
                sizeof(err)) < 0) {
        report(d, LVL_FAIL, "token: GET /v1/state: %s", err);
        return -1;
    }
    if (resp.status != 200) {
        cli_describe_answer(&resp, why, sizeof(why));
        if (resp.status == 401)
            report(d, LVL_FAIL, "token: refused (%s); fix: mint a new one with nudge token "
                                "--user ID against this server's secret",
                   why);
        else if (resp.status == 403)
            report(d, LVL_FAIL, "token: this is not a user token: mint one with nudge token "
                                "--user");
        else
            report(d, LVL_FAIL, "token: GET /v1/state answered %s", why);
        httpc_response_free(&resp);
        return -1;
    }
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    v = json_object_get(json_object_get(root, "folders"), "INBOX");
    s = json_string_value(v);
    /* A folder nobody published to has state 0 and may be left out. */
    d->inbox_state = 0;
    if (v != NULL && (s == NULL || util_parse_u64(s, strlen(s), &d->inbox_state) < 0)) {
        json_decref(root);
        httpc_response_free(&resp);
        report(d, LVL_FAIL, "token: accepted, but GET /v1/state answered an INBOX state that "
                            "is not a decimal number");
        return -1;
    }
    json_decref(root);
    httpc_response_free(&resp);
    report(d, LVL_OK, "token: accepted as a user token (INBOX state %llu)",
           (unsigned long long)d->inbox_state);
    return 0;
}

/* -- 3. clock ------------------------------------------------------------------- */

static void check_clock(struct doctor *d)
{
    long long skew, abs_skew;
    const char *dir, *effect;
    enum level lvl;

    if (d->date == -1) {
        report(d, LVL_WARN, "clock: not compared: the server's answers carry no Date header "
                            "it could be read from; fix: compare 'date -u' on both machines");
        return;
    }
    /* The header has whole seconds, so the skew is known to about a second. */
    skew = (long long)d->date_local - (long long)d->date;
    abs_skew = skew < 0 ? -skew : skew;
    if (abs_skew <= SKEW_OK_S) {
        report(d, LVL_OK, "clock: within %lld s of the server's", abs_skew);
        return;
    }
    /* A token minted here expires at local time + TTL, which the server reads as its own. */
    dir = skew > 0 ? "ahead of" : "behind";
    effect = skew > 0 ? "late" : "early";
    lvl = abs_skew <= SKEW_WARN_S ? LVL_WARN : LVL_FAIL;
    report(d, lvl, "clock: this machine is %lld s %s the server: tokens minted here expire %lld "
                   "s %s; fix: keep both clocks in sync with NTP (chrony, systemd-timesyncd)",
           abs_skew, dir, abs_skew, effect);
}

/* -- 4. UDP --------------------------------------------------------------------- */

/*
 * Waits up to d->udp_timeout seconds for the test datagram carrying 'nonce'.
 * Returns 0 with *from and *ms set, or -1; *others counts the datagrams that
 * were not it.
 */
static int wait_test_datagram(struct doctor *d, int fd, const char *nonce, uint64_t t0,
                              char *from, size_t fromlen, uint64_t *ms, unsigned *others)
{
    uint64_t end = t0 + (uint64_t)d->udp_timeout * 1000;
    size_t nlen = strlen(nonce);

    for (;;) {
        uint64_t now = util_now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uint8_t buf[DGRAM_MAX + 1];
        struct sockaddr_storage ss;
        socklen_t slen = sizeof(ss);
        struct dgram g;
        char whybuf[128];
        const char *why;
        ssize_t n;

        if (now >= end)
            return -1;
        if (poll(&pfd, 1, (int)(end - now)) <= 0)
            continue;
        n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &slen);
        if (n < 0)
            continue;
        if (dgram_parse(buf, (size_t)n, &g, whybuf, sizeof(whybuf), &why) == 0 &&
            g.type == DGRAM_TEST && g.folder_len == nlen && memcmp(g.folder, nonce, nlen) == 0 &&
            dgram_verify(buf, (size_t)n, dgram_test_key)) {
            *ms = util_now_ms() - t0;
            util_format_addr((struct sockaddr *)&ss, from, fromlen);
            return 0;
        }
        (*others)++;
    }
}

static void check_udp(struct doctor *d)
{
    struct httpc_response resp;
    char err[512], why[REASON_MAX], nonce[2 * NONCE_BYTES + 1], from[ADDR_STR_MAX];
    char body[128], server[ADDR_STR_MAX * 2] = "?", public_listen[ADDR_STR_MAX * 2] = "";
    unsigned char rnd[NONCE_BYTES];
    unsigned port = 0, others = 0;
    uint64_t t0, ms = 0;
    json_t *root;
    int fd, arrived;

    fd = udpsock_bind(udpsock_family(&d->http), d->udp_port, &port, err, sizeof(err));
    if (fd < 0) {
        report(d, LVL_FAIL, "UDP: %s; fix: pick another --port", err);
        return;
    }
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        report(d, LVL_FAIL, "UDP: no random bytes for the nonce (OpenSSL RAND_bytes failed)");
        goto done;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
    snprintf(body, sizeof(body), "{\"port\":%u,\"nonce\":\"%s\"}", port, nonce);
    t0 = util_now_ms();
    if (request(d, "POST", "/v1/udp/test", d->token, body, &resp, err, sizeof(err)) < 0) {
        report(d, LVL_FAIL, "UDP: POST /v1/udp/test: %s", err);
        goto done;
    }
    if (resp.status == 501) {
        httpc_response_free(&resp);
        report(d, LVL_WARN, "UDP notifications are off on the server ([udp] listen is empty): "
                            "clients poll every %d s; fix: set [udp] listen on nudged to offer "
                            "them",
               POLL_FALLBACK_S);
        goto done;
    }
    if (resp.status != 200) {
        cli_describe_answer(&resp, why, sizeof(why));
        httpc_response_free(&resp);
        report(d, LVL_FAIL, "UDP: POST /v1/udp/test answered %s", why);
        goto done;
    }
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    if (json_is_string(json_object_get(root, "from")))
        snprintf(server, sizeof(server), "%s", json_string_value(json_object_get(root, "from")));
    if (json_is_string(json_object_get(root, "loopback_only")))
        snprintf(public_listen, sizeof(public_listen), "%s",
                 json_string_value(json_object_get(root, "loopback_only")));
    json_decref(root);
    httpc_response_free(&resp);
    arrived = wait_test_datagram(d, fd, nonce, t0, from, sizeof(from), &ms, &others) == 0;
    if (arrived && public_listen[0]) {
        report(d, LVL_WARN, "UDP: the test datagram from %s arrived in %llu ms, but only over "
                            "loopback: nudged listens for TCP on %s while its UDP socket is on "
                            "loopback, so devices on other hosts get no datagrams and poll "
                            "every %d s; fix: set [udp] listen to an address they reach",
               from, (unsigned long long)ms, public_listen, POLL_FALLBACK_S);
        goto done;
    }
    if (arrived) {
        report(d, LVL_OK, "UDP: the test datagram from %s arrived in %llu ms (port %u)", from,
               (unsigned long long)ms, port);
        goto done;
    }
    report(d, LVL_FAIL, "UDP from server to this client is blocked: clients will fall back to "
                        "polling every %d s (no test datagram from %s to port %u within %u s%s); "
                        "fix: open UDP from the server's address and port (%s) to the clients, "
                        "or check [udp] listen on nudged (an address the clients can get "
                        "datagrams from)",
           POLL_FALLBACK_S, server, port, d->udp_timeout,
           others ? ", only datagrams without this nonce and its tag" : "", server);
done:
    close(fd);
}

/* -- 5. ping -------------------------------------------------------------------- */

/* Reads an unsigned JSON integer field. Returns 0 or -1. */
static int json_uint(const json_t *o, const char *key, unsigned *out)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 86400)
        return -1;
    *out = (unsigned)json_integer_value(v);
    return 0;
}

/* The ping body: the device, a heartbeat and INBOX at 'state'. NULL when out of memory. */
static char *ping_body(const struct doctor *d, unsigned heartbeat, uint64_t state)
{
    json_t *o = json_object(), *folders = json_object();
    char st[24], *body = NULL;

    snprintf(st, sizeof(st), "%llu", (unsigned long long)state);
    if (o != NULL && folders != NULL && json_object_set_new(o, "device", json_string(d->device)) == 0 &&
        json_object_set_new(o, "heartbeat", json_integer(heartbeat)) == 0 &&
        json_object_set_new(folders, "INBOX", json_string(st)) == 0 &&
        json_object_set(o, "folders", folders) == 0)
        body = json_dumps(o, JSON_COMPACT);
    json_decref(folders);
    json_decref(o);
    return body;
}

static int check_ping(struct doctor *d)
{
    struct httpc_response resp;
    char err[512], why[REASON_MAX], *body;
    const char *status;
    json_t *root;
    uint64_t t0, ms, other;
    unsigned hint = 0;
    int rc = -1;

    /*
     * Heartbeat 0 lies below every server's min ([heartbeat] min is at least
     * 1), so the answer is always the bounds, whatever they are.
     */
    body = ping_body(d, 0, d->inbox_state);
    if (body == NULL) {
        report(d, LVL_FAIL, "ping: out of memory");
        return -1;
    }
    if (request(d, "POST", "/v1/ping", d->token, body, &resp, err, sizeof(err)) < 0) {
        free(body);
        report(d, LVL_FAIL, "ping: POST /v1/ping: %s", err);
        return -1;
    }
    free(body);
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    status = json_string_value(json_object_get(root, "status"));
    if (resp.status != 400 || status == NULL || strcmp(status, "heartbeat-out-of-range") != 0 ||
        json_uint(root, "min", &d->hb_min) < 0 || json_uint(root, "max", &d->hb_max) < 0 ||
        d->hb_min == 0 || d->hb_min > d->hb_max) {
        cli_describe_answer(&resp, why, sizeof(why));
        report(d, LVL_FAIL, "ping: a ping with heartbeat 0 was answered %s, not 400 "
                            "heartbeat-out-of-range with the server's bounds",
               why);
        goto done;
    }
    json_decref(root);
    root = NULL;
    httpc_response_free(&resp);

    /* A state the server does not hold: it must answer "changed" at once, not hold the ping. */
    other = d->inbox_state == UINT64_MAX ? d->inbox_state - 1 : d->inbox_state + 1;
    body = ping_body(d, d->hb_min, other);
    if (body == NULL) {
        report(d, LVL_FAIL, "ping: out of memory");
        return -1;
    }
    /* Should the server hold it after all, it answers when the heartbeat ends. */
    d->http.read_timeout_ms = DOCTOR_HTTP_TIMEOUT_MS + d->hb_min * 1000u;
    t0 = util_now_ms();
    rc = request(d, "POST", "/v1/ping", d->token, body, &resp, err, sizeof(err));
    ms = util_now_ms() - t0;
    d->http.read_timeout_ms = DOCTOR_HTTP_TIMEOUT_MS;
    free(body);
    if (rc < 0) {
        report(d, LVL_FAIL, "ping: POST /v1/ping: %s", err);
        return -1;
    }
    rc = -1;
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    status = json_string_value(json_object_get(root, "status"));
    if (resp.status != 200 || status == NULL || strcmp(status, "changed") != 0 ||
        json_uint(root, "heartbeat_hint", &hint) < 0) {
        cli_describe_answer(&resp, why, sizeof(why));
        report(d, LVL_FAIL, "ping: a ping presenting INBOX=%llu (the server has %llu) was "
                            "answered %s after %llu ms, not at once with \"changed\" and a "
                            "heartbeat_hint",
               (unsigned long long)other, (unsigned long long)d->inbox_state, why,
               (unsigned long long)ms);
        goto done;
    }
    report(d, LVL_OK, "ping: answered in %llu ms; heartbeat min %u s, max %u s, heartbeat_hint "
                      "%u s",
           (unsigned long long)ms, d->hb_min, d->hb_max, hint);
    rc = 0;
done:
    json_decref(root);
    httpc_response_free(&resp);
    return rc;
}

/* -- 6. idle timeout (--probe) --------------------------------------------------- */

static void check_idle_timeout(struct doctor *d)
{
    struct cli_probe_opts o = d->probe_opts;
    struct cli_probe_result res;
    unsigned m = d->hb_max;

    if (!d->probe_max_given)
        o.max = m;
    if (o.min > o.max)
        o.min = o.max;
    if (cli_probe_measure("doctor", &d->http, d->token, &o, NULL, &res) < 0) {
        report(d, LVL_FAIL, "idle timeout: not measured: the probe failed (the reason is on "
                            "standard error)");
        return;
    }
    if (res.alive >= m) {
        report(d, LVL_OK, "idle timeout: connections idle for %u s survive%s, the heartbeat max "
                          "is %u s (%u probes, %llu s)",
               res.alive, res.no_timeout ? " (the longest probe)" : "", m, res.probes,
               (unsigned long long)(res.took_ms / 1000));
    } else if (res.no_timeout) {
        report(d, LVL_WARN, "idle timeout: connections idle for %u s survive, but heartbeats may "
                            "last %u s: not proven; fix: raise --probe-max to %u",
               res.alive, m, m);
    } else if (res.alive == 0) {
        report(d, LVL_FAIL, "the path forgets idle connections in under %u s (the shortest "
                            "probe) but heartbeats may last %u s: measure it with a lower "
                            "--probe-min, then set [network] idle_timeout on nudged",
               res.lost, m);
    } else {
        report(d, LVL_FAIL, "the path forgets idle connections after about %u s but heartbeats "
                            "may last %u s: set [network] idle_timeout = %u on nudged",
               res.alive, m, res.alive);
    }
}

/* What on_option fills: the checks' settings, and what only start-up needs. */
struct doctor_args {
    struct doctor *d;
    const char *user;
    int probe_opt; /* one of --probe-min, --probe-max, --probe-precision was given */
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct doctor_args *a = arg;
    struct doctor *d = a->d;
    uint64_t v;

    switch (opt) {
    case OPT_DEVICE:
        d->device = value;
        break;
    case OPT_PORT:
        if (cli_parse_number(cmd, "--port", value, 0, 65535, &v) != 0)
            return CLI_EXIT_USAGE;
        d->udp_port = (unsigned)v;
        break;
    case OPT_UDP_TIMEOUT:
        if (cli_parse_number(cmd, "--udp-timeout", value, 1, DOCTOR_UDP_TIMEOUT_MAX_S, &v) != 0)
            return CLI_EXIT_USAGE;
        d->udp_timeout = (unsigned)v;
        break;
    case OPT_PROBE:
        d->probe = 1;
        break;
    case OPT_PROBE_MIN:
        if (cli_parse_number(cmd, "--probe-min", value, 1, CLI_PROBE_HOLD_CEILING, &v) != 0)
            return CLI_EXIT_USAGE;
        d->probe_opts.min = (unsigned)v;
        a->probe_opt = 1;
        break;
    case OPT_PROBE_MAX:
        if (cli_parse_number(cmd, "--probe-max", value, 1, CLI_PROBE_MAX_MAX, &v) != 0)
            return CLI_EXIT_USAGE;
        d->probe_opts.max = (unsigned)v;
        d->probe_max_given = 1;
        a->probe_opt = 1;
        break;
    case OPT_PROBE_PRECISION:
        if (cli_probe_parse_precision(cmd, "--probe-precision", value,
                                      &d->probe_opts.precision) != 0)
            return CLI_EXIT_USAGE;
        a->probe_opt = 1;
        break;
    case OPT_USER:
        a->user = value;
        break;
    }
    return 0;
}

int cmd_doctor(int argc, char **argv)
{
    static const struct option options[] = {
        {"device", required_argument, NULL, OPT_DEVICE},
        {"port", required_argument, NULL, OPT_PORT},
        {"udp-timeout", required_argument, NULL, OPT_UDP_TIMEOUT},
        {"probe", no_argument, NULL, OPT_PROBE},
        {"probe-min", required_argument, NULL, OPT_PROBE_MIN},
        {"probe-max", required_argument, NULL, OPT_PROBE_MAX},
        {"probe-precision", required_argument, NULL, OPT_PROBE_PRECISION},
        {"user", required_argument, NULL, OPT_USER},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "doctor";
    struct doctor d;
    struct doctor_args a = {.d = &d};
    struct cli_server srv;
    char token[TOKEN_MAX], err[512];
    int rc;

    memset(&d, 0, sizeof(d));
    d.http.fd = -1;
    d.device = DOCTOR_DEFAULT_DEVICE;
    d.udp_timeout = DOCTOR_UDP_TIMEOUT_S;
    d.date = -1;
    cli_probe_defaults(&d.probe_opts);
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = cli_parse_args(cmd, argc, argv, options, &srv, cmd_doctor_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        return rc;
    if (a.probe_opt && !d.probe)
        return cli_usage_error(cmd, "--probe-min, --probe-max and --probe-precision go with "
                                    "--probe");
    if (d.probe_max_given && d.probe_opts.min > d.probe_opts.max)
        return cli_usage_error(cmd, "--probe-min (%u) is greater than --probe-max (%u)",
                               d.probe_opts.min, d.probe_opts.max);
    if (d.device[0] == '\0' || strlen(d.device) > DEVICE_MAX)
        return cli_usage_error(cmd, "--device: a device id is 1 to %d bytes", DEVICE_MAX);
    for (const char *c = d.device; *c; c++)
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            return cli_usage_error(cmd, "--device: control characters are not allowed in a "
                                        "device id");
    if (cli_check_mint_user(&srv, cmd, a.user) != 0)
        return CLI_EXIT_USAGE;
    rc = cli_server_token(&srv, cmd, TOKEN_USER, a.user, CLI_USER_TTL, token);
    if (rc != CLI_EXIT_OK)
        return rc;
    d.token = token;
    d.cacert = srv.cacert;
    d.insecure = srv.insecure;
    if (httpc_init(&d.http, srv.url, DOCTOR_HTTP_TIMEOUT_MS, err, sizeof(err)) < 0)
        return cli_usage_error(cmd, "%s", err);

    if (check_server(&d, srv.url) == 0) {
        if (d.http.tls)
            check_tls(&d);
        int token_ok = check_token(&d) == 0;
        check_clock(&d);
        if (token_ok) {
            check_udp(&d);
            if (check_ping(&d) == 0 && d.probe)
                check_idle_timeout(&d);
        }
    }
    httpc_close(&d.http);
    return d.failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
