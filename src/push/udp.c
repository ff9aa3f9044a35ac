/*
 * udp.c — UDP new-mail datagrams: the shared socket, the registry of
 * registrations, the resend schedule, acks and ICMP errors. See udp.h for
 * the rules and docs/udp.md for the contract; the HTTP endpoints are in
 * udp_api.c.
 *
 * One shared socket, not one connected socket per registration. A
 * connected UDP socket would get its ICMP errors as a plain ECONNREFUSED,
 * but it costs a descriptor per registration, and descriptors are the scarce
 * resource of a push server (this machine: 20,000 per process). The shared
 * socket sets IP_RECVERR (and IPV6_RECVERR): the kernel then queues every
 * ICMP error for a datagram we sent on the socket's error queue, with the
 * destination it was sent to and the start of the datagram itself, which
 * holds the registration id. Reading that queue (MSG_ERRQUEUE) tells exactly
 * which registration's address is unreachable, at no cost per registration.
 *
 * libuv's uv_poll reports a socket with a pending error (POLLERR) as status
 * UV_EBADF and stops watching it; on_io drains the error queue and starts
 * watching again, which is all that POLLERR means here.
 *
 * Schedule: each registration has one deadline (its next resend or its
 * expiry, whichever is first) in a min-heap of its own behind one uv_timer,
 * like connections (server/deadline.h): nothing scans registrations per
 * tick, and 100k idle registrations cost nothing until one is due.
 *
 * Cost: a registration is ~200 bytes plus its folder names; a notify is one
 * HMAC and one sendto(); an ack is one parse, one hash lookup, one HMAC.
 */
#include "push/udp.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "push/datagram.h"
#include "server/server.h"
#include "worker/worker.h"
#include "shard/shard.h"

const char *const udp_sent_names[UDP_SENT_COUNT] = {
    [UDP_SENT_NOTIFY] = "notify",
    [UDP_SENT_RESEND] = "resend",
    [UDP_SENT_TEST] = "test",
};

const char *const udp_reject_names[UDP_REJECT_COUNT] = {
    [UDP_REJECT_MALFORMED] = "malformed",
    [UDP_REJECT_NOT_ACK] = "not-ack",
    [UDP_REJECT_UNKNOWN] = "unknown-registration",
    [UDP_REJECT_BAD_TAG] = "bad-tag",
    [UDP_REJECT_REPLAY] = "replay",
};

/* Datagrams read per readiness event: bounded so a flood cannot starve the loop. */
#define READ_BURST 64
/* One line per this long for rejected datagrams: a flood must not flood the log. */
#define REJECT_LOG_MS 10000
/*
 * Sequence numbers must keep growing across a restart, or every client would
 * take the datagrams after it for replays. Saving the number at every send
 * would write a record per datagram, so blocks are reserved instead: the
 * record holds a ceiling no datagram has passed, raised by SEQ_BLOCK (and
 * saved) whenever the sends reach it; after a restart numbering resumes at
 * the ceiling. At one resend a minute a block lasts 17 hours.
 */
#define SEQ_BLOCK 1024
/* A renewed expiry is saved only when it moved this far (a ping per minute must not write). */
#define EXPIRY_SAVE_SLACK_S 60

/* The server's UDP side: one per server, NULL when [udp] listen is empty. */
struct udp {
    int fd;
    int family;                 /* of the socket: AF_INET or AF_INET6 */
    uv_poll_t poll;
    uv_timer_t timer;
    int poll_open, timer_open, closing;
    uint64_t timer_at;          /* what the timer is armed for; 0: not armed */
    struct deadline_heap heap;  /* registrations by their next deadline */
    struct strmap regs;         /* 8-byte big-endian id -> struct udp_reg */
    struct sockaddr_storage bound;
    char addr[64];              /* the bound address, for logs and answers */
    uint64_t reject_log_at;     /* ms: the last udp_datagram_rejected line */
    uint64_t reject_suppressed; /* rejections not logged since */
};

static void on_timer(uv_timer_t *t);

static struct udp *udp_of(struct server *s)
{
    return s->udp;
}

/* ---- schedule -------------------------------------------------------- */

static void arm(struct udp *u)
{
    struct deadline_node *n = deadline_peek(&u->heap);
    uint64_t now;

    if (u->closing)
        return;
    if (n == NULL) {
        if (u->timer_at) {
            uv_timer_stop(&u->timer);
            u->timer_at = 0;
        }
        return;
    }
    if (u->timer_at == n->at)
        return;
    now = util_now_ms();
    u->timer_at = n->at;
    uv_timer_start(&u->timer, on_timer, n->at > now ? n->at - now : 0, 0);
}

/* Puts r's deadline at its next resend or its expiry, whichever is first. */
static void schedule(struct udp *u, struct udp_reg *r)
{
    uint64_t at = r->expires_ms;

    if (r->resend_at && !r->suspended && r->resend_at < at)
        at = r->resend_at;
    deadline_set(&u->heap, &r->deadline, at);
    arm(u);
}

/* ---- sending --------------------------------------------------------- */

static void drain_errors(struct server *s);

/* "1.2.3.4:5" of a registration's address. */
static const char *reg_addr(const struct udp_reg *r, char *buf, size_t len)
{
    return util_format_addr(&r->addr.sa, buf, len);
}

static socklen_t sa_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/*
 * Sends buf[0..len) to 'to'. An error pending on the socket (the kernel
 * reports a queued ICMP error on the next call) is drained and the send
 * tried once more. 0, or -1 after counting and logging the failure.
 */
static int send_to(struct server *s, const uint8_t *buf, size_t len, const struct sockaddr *to)
{
    struct udp *u = udp_of(s);

    for (int attempt = 0; attempt < 2; attempt++) {
        ssize_t n = sendto(u->fd, buf, len, MSG_DONTWAIT, to, sa_len(to));
        char a[64], q[128];
        if (n == (ssize_t)len)
            return 0;
        if (n < 0 && attempt == 0 &&
            (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH)) {
            drain_errors(s);
            continue;
        }
        s->metrics.udp_send_errors++;
        LOG(LOG_WARN, udp_send_failed, "to=%s error=%s", util_format_addr(to, a, sizeof(a)),
            log_q(q, sizeof(q), n < 0 ? strerror(errno) : "short write"));
        return -1;
    }
    return -1;
}

static void save(struct server *s, struct udp_reg *r);

static void send_notify(struct server *s, struct udp_reg *r, uint32_t i, uint64_t state,
                        enum udp_sent_kind kind)
{
    uint8_t buf[DGRAM_MAX];
    struct dgram d = {
        .type = DGRAM_NOTIFY,
        .reg_id = r->id,
        .seq = ++r->seq,
        .state = state,
        .folder = r->folders[i].name,
        .folder_len = strlen(r->folders[i].name),
    };
    size_t n;

    if (r->seq > r->seq_reserved) {
        r->seq_reserved += SEQ_BLOCK;
        save(s, r);
    }
    n = dgram_encode(&d, r->key, buf);
    r->notified[i] = state;
    if (n == 0 || send_to(s, buf, n, &r->addr.sa) < 0)
        return;
    r->sent++;
    s->metrics.udp_sent[kind]++;
}

/*
 * Sends a notify for every folder of r that is newer than the device holds
 * and (unless 'again') newer than what was already sent, and restarts the
 * resend count when anything went out.
 */
static void notify_pending(struct server *s, struct udp_reg *r, int again)
{
    struct udp *u = udp_of(s);
    struct store *st = s->store;
    const char *user = r->device->user->id;
    int sent = 0;

    if (r->suspended)
        return;
    for (uint32_t i = 0; i < r->nfolders; i++) {
        uint64_t now = store_get(st, user, r->folders[i].name);
        if (now <= r->folders[i].state || (!again && now <= r->notified[i]))
            continue;
        send_notify(s, r, i, now, UDP_SENT_NOTIFY);
        sent = 1;
    }
    if (!sent)
        return;
    r->resends = 0;
    r->resend_at = s->cfg->udp_max_resends ? util_now_ms() + s->cfg->udp_resend_interval * 1000ull : 0;
    schedule(u, r);
}

static int has_pending(struct server *s, const struct udp_reg *r)
{
    const char *user = r->device->user->id;

    for (uint32_t i = 0; i < r->nfolders; i++)
        if (store_get(s->store, user, r->folders[i].name) > r->folders[i].state)
            return 1;
    return 0;
}

/* A resend is due: every folder still pending goes again, with its latest state. */
static void resend(struct server *s, struct udp_reg *r, uint64_t now)
{
    const char *user = r->device->user->id;
    char q1[300], q2[300];
    int sent = 0;

    for (uint32_t i = 0; i < r->nfolders; i++) {
        uint64_t cur = store_get(s->store, user, r->folders[i].name);
        if (cur <= r->folders[i].state)
            continue;
        send_notify(s, r, i, cur, UDP_SENT_RESEND);
        sent = 1;
    }
    if (!sent || r->suspended) { /* caught up meanwhile, or the send found it unreachable */
        r->resend_at = 0;
        return;
    }
    if (++r->resends < s->cfg->udp_max_resends) {
        r->resend_at = now + s->cfg->udp_resend_interval * 1000ull;
        return;
    }
    r->resend_at = 0;
    s->metrics.udp_resends_exhausted++;
    LOG(LOG_INFO, udp_resends_exhausted, "user=%s device=%s id=%llu resends=%u",
        log_q(q1, sizeof(q1), user), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, r->resends);
}

/* ---- registry -------------------------------------------------------- */

static void save(struct server *s, struct udp_reg *r)
{
    r->saved_expires = r->expires_at;
    device_persist(s->store, r->device);
}

static void reg_free(struct udp_reg *r)
{
    for (uint32_t i = 0; i < r->nfolders; i++)
        free((char *)r->folders[i].name);
    free(r->folders);
    free(r->notified);
    free(r);
}

/* Unlinks r from the registry and its device; frees it. */
static void reg_remove(struct server *s, struct udp_reg *r)
{
    struct udp *u = udp_of(s);

    deadline_clear(&u->heap, &r->deadline);
    strmap_del(&u->regs, (const char *)r->idkey, sizeof(r->idkey));
    r->device->udp = NULL;
    r->device->user->udp--;
    s->metrics.udp_registrations--;
    reg_free(r);
}

static void log_ended(const struct udp_reg *r, const char *why)
{
    char q1[300], q2[300], q3[200], a[64];

    LOG(LOG_INFO, udp_ended, "user=%s device=%s id=%llu address=%s why=%s",
        log_q(q1, sizeof(q1), r->device->user->id), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), log_q(q3, sizeof(q3), why));
}

void udp_end(struct server *s, struct device *d, const char *why)
{
    struct udp_reg *r = d->udp;

    if (r == NULL || s->udp == NULL)
        return;
    log_ended(r, why);
    reg_remove(s, r);
    device_persist(s->store, d);
}

static void set_idkey(struct udp_reg *r)
{
    for (int i = 0; i < 8; i++)
        r->idkey[i] = (uint8_t)(r->id >> (56 - 8 * i));
}

/*
 * A new registration of d (any old one must be gone), linked in. 'f' are
 * the folders and the states the device holds. Returns NULL only when no
 * random bytes could be had for its id and key.
 */
static struct udp_reg *reg_new(struct server *s, struct device *d, const struct sockaddr *to,
                               const struct store_folder *f, size_t n, uint64_t id,
                               const uint8_t *key)
{
    struct udp *u = udp_of(s);
    struct udp_reg *r = xcalloc(1, sizeof(*r));

    r->device = d;
    if (key) {
        memcpy(r->key, key, sizeof(r->key));
    } else if (RAND_bytes(r->key, sizeof(r->key)) != 1) {
        free(r);
        return NULL;
    }
    /* A random id, never 0 and unique here; the key, not the id, is the secret. */
    r->id = id;
    set_idkey(r);
    while (r->id == 0 || strmap_get(&u->regs, (const char *)r->idkey, sizeof(r->idkey)) != NULL) {
        if (RAND_bytes((unsigned char *)&r->id, sizeof(r->id)) != 1) {
            free(r);
            return NULL;
        }
        set_idkey(r);
    }
    memcpy(&r->addr, to, sa_len(to));
    r->folders = xcalloc(n ? n : 1, sizeof(*r->folders));
    r->notified = xcalloc(n ? n : 1, sizeof(*r->notified));
    for (size_t i = 0; i < n; i++) {
        r->folders[i].name = xstrdup(f[i].name);
        r->folders[i].state = f[i].state;
        r->notified[i] = f[i].state;
    }
    r->nfolders = (uint32_t)n;
    r->created_ms = util_now_ms();
    strmap_put(&u->regs, (const char *)r->idkey, sizeof(r->idkey), r);
    d->udp = r;
    d->user->udp++;
    s->metrics.udp_registrations++;
    return r;
}

static void set_expiry(struct server *s, struct udp_reg *r)
{
    r->expires_ms = util_now_ms() + s->cfg->udp_ttl * 1000ull;
    r->expires_at = (int64_t)time(NULL) + s->cfg->udp_ttl;
}

struct udp_reg *udp_register(struct server *s, struct device *d, const struct sockaddr *to,
                             const struct store_folder *f, size_t n)
{
    struct udp_reg *r;
    char q1[300], q2[300], a[64];

    if (d->udp) {
        log_ended(d->udp, "replaced by a new registration");
        reg_remove(s, d->udp);
    }
    r = reg_new(s, d, to, f, n, 0, NULL);
    if (r == NULL)
        return NULL;
    set_expiry(s, r);
    r->seq_reserved = SEQ_BLOCK;
    save(s, r);
    LOG(LOG_INFO, udp_registered, "user=%s device=%s id=%llu address=%s folders=%u ttl=%u",
        log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), r->nfolders, s->cfg->udp_ttl);
    schedule(udp_of(s), r);
    notify_pending(s, r, 0);
    return r;
}

void udp_restore(struct server *s, struct device *d, const struct store_udp *sr)
{
    struct udp *u = udp_of(s);
    struct sockaddr_storage ss;
    struct udp_reg *r;
    int64_t left = sr->expires - (int64_t)time(NULL);
    char err[160], q1[300], q2[300];

    if (u == NULL || left <= 0 || util_parse_addr(sr->address, &ss, err, sizeof(err)) < 0 ||
        udp_target(s, &ss) < 0) {
        /* Expired while nudged was down, UDP is off now, or the address no longer fits. */
        LOG(LOG_INFO, udp_ended, "user=%s device=%s id=%llu address=%s why=%s",
            log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id),
            (unsigned long long)sr->id, sr->address,
            u == NULL ? "\"UDP is off ([udp] listen is empty)\""
            : left <= 0 ? "\"expired while nudged was stopped\""
                        : "\"its address does not fit the UDP socket\"");
        device_persist(s->store, d); /* without the registration */
        return;
    }
    r = reg_new(s, d, (struct sockaddr *)&ss, sr->folders, sr->nfolders, sr->id, sr->key);
    if (r == NULL)
        return;
    r->suspended = (uint8_t)(sr->suspended != 0);
    r->expires_at = sr->expires;
    r->expires_ms = util_now_ms() + (uint64_t)left * 1000;
    /* Numbering resumes above anything sent before the stop; older acks are stale. */
    r->seq = r->acked_seq = sr->seq;
    r->seq_reserved = sr->seq + SEQ_BLOCK;
    save(s, r);
    schedule(u, r);
    /* Changes the device had not caught up with when nudged stopped go out again. */
    notify_pending(s, r, 1);
}

void udp_on_change(struct server *s, struct user *u)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (s->udp == NULL || u->udp == 0)
        return;
    while (strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        if (d->udp)
            notify_pending(s, d->udp, 0);
    }
}

void udp_knows(struct server *s, struct device *d, const char *folder, uint64_t state)
{
    struct udp_reg *r = d->udp;

    if (r == NULL || s->udp == NULL)
        return;
    for (uint32_t i = 0; i < r->nfolders; i++) {
        if (strcmp(r->folders[i].name, folder) != 0 || state <= r->folders[i].state)
            continue;
        r->folders[i].state = state;
        if (r->resend_at && !has_pending(s, r)) {
            r->resend_at = 0;
            schedule(udp_of(s), r);
        }
        save(s, r);
        return;
    }
}

void udp_caught_up(struct server *s, struct user *u, const char *folder, uint64_t state)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (s->udp == NULL || u->udp == 0)
        return;
    while (strmap_next(&u->devices, &pos, &key, &val))
        if (((struct device *)val)->udp)
            udp_knows(s, val, folder, state);
}

static void revive(struct server *s, struct udp_reg *r, const char *why)
{
    char q1[300], q2[300], a[64];

    r->suspended = 0;
    LOG(LOG_INFO, udp_revived, "user=%s device=%s id=%llu address=%s why=%s",
        log_q(q1, sizeof(q1), r->device->user->id), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), why);
    save(s, r);
    notify_pending(s, r, 1);
}

void udp_device_present(struct server *s, struct device *d)
{
    struct udp_reg *r = d->udp;

    if (r == NULL || s->udp == NULL)
        return;
    set_expiry(s, r);
    schedule(udp_of(s), r);
    if (r->suspended)
        revive(s, r, "ping");
    else if (r->expires_at - r->saved_expires >= EXPIRY_SAVE_SLACK_S)
        save(s, r);
}

static void suspend(struct server *s, struct udp_reg *r, const char *why)
{
    char q1[300], q2[300], q3[128], a[64];

    r->suspended = 1;
    r->resend_at = 0;
    schedule(udp_of(s), r);
    save(s, r);
    LOG(LOG_INFO, udp_suspended, "user=%s device=%s id=%llu address=%s reason=%s",
        log_q(q1, sizeof(q1), r->device->user->id), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), log_q(q3, sizeof(q3), why));
}

int udp_reap_suspended(struct server *s, struct device *d)
{
    if (d->udp == NULL || !d->udp->suspended)
        return 0;
    udp_end(s, d, "reaped: suspended (its address was unreachable)");
    return 1;
}

/* ---- the timer ------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct server *s = t->data;
    struct udp *u = udp_of(s);
    uint64_t now = util_now_ms();
    struct deadline_node *n;

    u->timer_at = 0;
    while ((n = deadline_peek(&u->heap)) != NULL && n->at <= now) {
        struct udp_reg *r = (struct udp_reg *)((char *)n - offsetof(struct udp_reg, deadline));
        deadline_clear(&u->heap, n);
        if (now >= r->expires_ms) {
            udp_end(s, r->device, "expired");
            continue;
        }
        if (r->resend_at && now >= r->resend_at)
            resend(s, r, now);
        schedule(u, r);
    }
    arm(u);
}

/* ---- receiving: acks and ICMP errors ---------------------------------- */

static void reject(struct server *s, enum udp_reject why, const struct sockaddr *from,
                   const char *detail)
{
    struct udp *u = udp_of(s);
    uint64_t now = util_now_ms();
    char a[64], q[200];

    s->metrics.udp_rejected[why]++;
    if (u->reject_log_at && now - u->reject_log_at < REJECT_LOG_MS) {
        u->reject_suppressed++;
        return;
    }
    LOG(LOG_INFO, udp_datagram_rejected, "from=%s reason=%s detail=%s suppressed=%llu",
        util_format_addr(from, a, sizeof(a)), udp_reject_names[why], log_q(q, sizeof(q), detail),
        (unsigned long long)u->reject_suppressed);
    u->reject_log_at = now;
    u->reject_suppressed = 0;
}

static void on_datagram(struct server *s, const uint8_t *buf, size_t len,
                        const struct sockaddr *from)
{
    struct udp *u = udp_of(s);
    struct udp_reg *r;
    struct dgram d;
    char whybuf[96], folder[DGRAM_FOLDER_MAX + 1];
    const char *why;
    uint64_t now;

    if (len > DGRAM_MAX) {
        reject(s, UDP_REJECT_MALFORMED, from, "longer than any nudge datagram");
        return;
    }
    if (dgram_parse(buf, len, &d, whybuf, sizeof(whybuf), &why) < 0) {
        reject(s, UDP_REJECT_MALFORMED, from, why);
        return;
    }
    if (d.type != DGRAM_ACK) {
        reject(s, UDP_REJECT_NOT_ACK, from, dgram_type_name(d.type));
        return;
    }
    r = strmap_get(&u->regs, (const char *)buf + 4, 8);
    if (r == NULL) {
        reject(s, UDP_REJECT_UNKNOWN, from, "no such registration (ended, or replaced)");
        return;
    }
    if (!dgram_verify(buf, len, r->key)) {
        reject(s, UDP_REJECT_BAD_TAG, from, "the tag does not verify with the registration's key");
        return;
    }
    if (d.seq > r->seq) {
        reject(s, UDP_REJECT_REPLAY, from, "acks a sequence number never sent");
        return;
    }
    if (d.seq <= r->acked_seq) {
        reject(s, UDP_REJECT_REPLAY, from, "acks a sequence number already acked");
        return;
    }
    r->acked_seq = d.seq;
    s->metrics.udp_acks++;
    if (r->suspended)
        revive(s, r, "ack");
    memcpy(folder, d.folder, d.folder_len);
    folder[d.folder_len] = '\0';
    /* A client cannot hold a state the server never had: claiming one must not mute it. */
    now = store_get(s->store, r->device->user->id, folder);
    udp_knows(s, r->device, folder, d.state < now ? d.state : now);
}

static int same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

/* The ICMP error in words, or NULL when it does not mean "this address is unreachable". */
static const char *unreachable_reason(const struct sock_extended_err *ee)
{
    if (ee->ee_origin == SO_EE_ORIGIN_ICMP && ee->ee_type == ICMP_DEST_UNREACH) {
        switch (ee->ee_code) {
        case ICMP_NET_UNREACH: return "ICMP network unreachable";
        case ICMP_HOST_UNREACH: return "ICMP host unreachable";
        case ICMP_PORT_UNREACH: return "ICMP port unreachable";
        case ICMP_NET_ANO:
        case ICMP_HOST_ANO:
        case ICMP_PKT_FILTERED: return "ICMP administratively prohibited";
        default: return "ICMP destination unreachable";
        }
    }
    if (ee->ee_origin == SO_EE_ORIGIN_ICMP6 && ee->ee_type == ICMP6_DST_UNREACH) {
        switch (ee->ee_code) {
        case ICMP6_DST_UNREACH_NOROUTE: return "ICMPv6 no route";
        case ICMP6_DST_UNREACH_ADMIN: return "ICMPv6 administratively prohibited";
        case ICMP6_DST_UNREACH_ADDR: return "ICMPv6 address unreachable";
        case ICMP6_DST_UNREACH_NOPORT: return "ICMPv6 port unreachable";
        default: return "ICMPv6 destination unreachable";
        }
    }
    return NULL;
}

/*
 * Reads the socket's error queue: each entry is an ICMP error for a
 * datagram we sent, with its destination (msg_name) and its first bytes
 * (the data), whose bytes 4..11 are the registration id.
 */
static void drain_errors(struct server *s)
{
    struct udp *u = udp_of(s);

    for (int i = 0; i < READ_BURST; i++) {
        uint8_t data[DGRAM_MAX];
        union {
            char buf[512];
            struct cmsghdr align;
        } ctrl;
        struct sockaddr_storage dst;
        struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
        struct msghdr msg = {
            .msg_name = &dst,
            .msg_namelen = sizeof(dst),
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = ctrl.buf,
            .msg_controllen = sizeof(ctrl.buf),
        };
        const struct sock_extended_err *ee = NULL;
        struct udp_reg *r = NULL;
        const char *why;
        ssize_t n = recvmsg(u->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);

        if (n < 0)
            return;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
            if ((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR))
                ee = (const struct sock_extended_err *)CMSG_DATA(cm);
        if (ee == NULL || (why = unreachable_reason(ee)) == NULL)
            continue;
        s->metrics.udp_unreachable++;
        if (n >= 12 && data[0] == 'n' && data[1] == 'd')
            r = strmap_get(&u->regs, (const char *)data + 4, 8);
        /* The id names the registration; the address guards against a stale or forged quote. */
        if (r && !r->suspended && msg.msg_namelen > 0 &&
            same_addr((struct sockaddr *)&dst, &r->addr.sa))
            suspend(s, r, why);
    }
}

static void read_datagrams(struct server *s)
{
    struct udp *u = udp_of(s);

    for (int i = 0; i < READ_BURST; i++) {
        uint8_t buf[DGRAM_MAX + 1];
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(u->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &flen);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            /* A pending ICMP error is also reported here, once: read it from the queue. */
            drain_errors(s);
            continue;
        }
        on_datagram(s, buf, (size_t)n, (struct sockaddr *)&from);
    }
}

static void on_io(uv_poll_t *p, int status, int events)
{
    struct server *s = p->data;

    if (status < 0) {
        /* POLLERR: ICMP errors are queued. libuv stopped the handle; drain, then watch again. */
        drain_errors(s);
        read_datagrams(s);
        if (!s->udp->closing)
            uv_poll_start(p, UV_READABLE, on_io);
        return;
    }
    if (events & UV_READABLE)
        read_datagrams(s);
}

/* ---- set-up ---------------------------------------------------------- */

int udp_init(struct server *s, char *err, size_t errlen)
{
    const struct config *cfg = s->cfg;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    struct udp *u;
    int on = 1, rc;

    if (cfg->udp_listen[0] == '\0')
        return 0;
    if (util_parse_addr(cfg->udp_listen, &ss, err, errlen) < 0)
        return -1;
    /*
     * With workers, worker i binds [udp] listen's port + i: each sends its own
     * users' datagrams from its own socket, so acks (sent back to where a
     * datagram came from) and ICMP errors reach the owner without a detour.
     */
    if (s->wk && s->wk->index > 0) {
        uint16_t *port = ss.ss_family == AF_INET6 ? &((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : &((struct sockaddr_in *)&ss)->sin_port;
        if (*port != 0) {
            unsigned p = ntohs(*port) + s->wk->index;
            if (p > 65535) {
                snprintf(err, errlen, "[udp] listen %s: port + worker %u is past 65535",
                         cfg->udp_listen, s->wk->index);
                return -1;
            }
            *port = htons((uint16_t)p);
        }
    }
    u = xcalloc(1, sizeof(*u));
    u->fd = -1;
    deadline_heap_init(&u->heap);
    strmap_init(&u->regs);
    s->udp = u;
    u->family = ss.ss_family;
    u->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0) {
        snprintf(err, errlen, "[udp] listen %s: cannot make a UDP socket: %s", cfg->udp_listen,
                 strerror(errno));
        return -1;
    }
    /* ICMP errors for what we send are queued for us (see the header). */
    if (ss.ss_family == AF_INET6) {
        rc = setsockopt(u->fd, SOL_IPV6, IPV6_RECVERR, &on, sizeof(on));
        /* IPv4-mapped peers of a dual-stack socket report through IP_RECVERR. */
        if (rc == 0)
            setsockopt(u->fd, SOL_IP, IP_RECVERR, &on, sizeof(on));
    } else {
        rc = setsockopt(u->fd, SOL_IP, IP_RECVERR, &on, sizeof(on));
    }
    if (rc < 0) {
        snprintf(err, errlen, "[udp] listen %s: cannot ask for ICMP errors (IP_RECVERR): %s",
                 cfg->udp_listen, strerror(errno));
        return -1;
    }
    /*
     * Acks arrive while the loop is busy sending a fan-out (thousands of
     * notifies in one turn), and the kernel charges each ~50-byte ack about
     * 800 bytes of buffer (its skb): the default 208 KiB holds ~256, and the
     * rest would be dropped (costing a resend each). SO_RCVBUFFORCE passes
     * net.core.rmem_max when nudged may (root); otherwise SO_RCVBUF gets
     * what rmem_max allows.
     */
    {
        int want = (int)cfg->udp_receive_buffer;
        if (setsockopt(u->fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) < 0)
            setsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    }
    if (bind(u->fd, (struct sockaddr *)&ss, sa_len((struct sockaddr *)&ss)) < 0) {
        snprintf(err, errlen, "[udp] listen %s: cannot bind: %s%s", cfg->udp_listen,
                 strerror(errno),
                 errno == EADDRINUSE ? " (another program uses this UDP port; set [udp] listen)"
                                     : "");
        return -1;
    }
    getsockname(u->fd, (struct sockaddr *)&u->bound, &len);
    util_format_addr((struct sockaddr *)&u->bound, u->addr, sizeof(u->addr));
    uv_poll_init(s->loop, &u->poll, u->fd);
    u->poll.data = s;
    u->poll_open = 1;
    uv_poll_start(&u->poll, UV_READABLE, on_io);
    uv_timer_init(s->loop, &u->timer);
    u->timer.data = s;
    u->timer_open = 1;
    LOG(LOG_INFO, udp_listening, "addr=%s resend_interval=%u max_resends=%u ttl=%u", u->addr,
        cfg->udp_resend_interval, cfg->udp_max_resends, cfg->udp_ttl);
    return 0;
}

void udp_stop(struct server *s)
{
    struct udp *u = udp_of(s);

    if (u == NULL || u->closing)
        return;
    u->closing = 1;
    if (u->poll_open)
        uv_close((uv_handle_t *)&u->poll, NULL);
    if (u->timer_open)
        uv_close((uv_handle_t *)&u->timer, NULL);
}

void udp_free(struct server *s)
{
    struct udp *u = udp_of(s);
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (u == NULL)
        return;
    /* The heap points into the registrations: let go of it first. */
    deadline_heap_free(&u->heap);
    while (strmap_next(&u->regs, &pos, &key, &val)) {
        struct udp_reg *r = val;
        r->device->udp = NULL;
        r->device->user->udp--;
        reg_free(r);
    }
    strmap_free(&u->regs);
    if (u->fd >= 0)
        close(u->fd);
    free(u);
    s->udp = NULL;
}

/* ---- for the HTTP side and the sessions list ---------------------------- */

int udp_target(struct server *s, struct sockaddr_storage *ss)
{
    struct udp *u = udp_of(s);

    if (u->family == ss->ss_family)
        return 0;
    if (u->family == AF_INET6 && ss->ss_family == AF_INET) {
        /* A dual-stack socket reaches IPv4 peers at their IPv4-mapped address. */
        struct sockaddr_in in = *(struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        memset(in6, 0, sizeof(*in6));
        in6->sin6_family = AF_INET6;
        in6->sin6_port = in.sin_port;
        in6->sin6_addr.s6_addr[10] = 0xff;
        in6->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&in6->sin6_addr.s6_addr[12], &in.sin_addr, 4);
        return 0;
    }
    if (u->family == AF_INET && ss->ss_family == AF_INET6) {
        struct sockaddr_in6 in6 = *(struct sockaddr_in6 *)ss;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(&in6.sin6_addr, mapped, 12) == 0) {
            struct sockaddr_in *in = (struct sockaddr_in *)ss;
            memset(in, 0, sizeof(*in));
            in->sin_family = AF_INET;
            in->sin_port = in6.sin6_port;
            memcpy(&in->sin_addr, &in6.sin6_addr.s6_addr[12], 4);
            return 0;
        }
    }
    return -1;
}

int udp_send_test(struct server *s, const struct sockaddr *to, const char *nonce, size_t len)
{
    uint8_t buf[DGRAM_MAX];
    struct dgram d = {.type = DGRAM_TEST, .folder = nonce, .folder_len = len};
    size_t n = dgram_encode(&d, dgram_test_key, buf);

    if (n == 0 || send_to(s, buf, n, to) < 0)
        return -1;
    s->metrics.udp_sent[UDP_SENT_TEST]++;
    return 0;
}

const char *udp_bound_addr(struct server *s, struct sockaddr_storage *out)
{
    struct udp *u = udp_of(s);

    if (out)
        *out = u->bound;
    return u->addr;
}

void udp_record(const struct udp_reg *r, struct store_udp *out, char *addrbuf, size_t addrlen)
{
    out->id = r->id;
    out->key = r->key;
    out->address = reg_addr(r, addrbuf, addrlen);
    out->expires = r->expires_at;
    out->seq = r->seq_reserved;
    out->suspended = r->suspended;
    out->nfolders = r->nfolders;
    out->folders = r->folders;
}

void udp_describe(const struct udp_reg *r, struct jsonw *w, uint64_t now)
{
    char a[64];

    jw_obj_begin(w);
    jw_key(w, "id");
    jw_u64_str(w, r->id);
    jw_key(w, "address");
    jw_str(w, reg_addr(r, a, sizeof(a)));
    jw_key(w, "suspended");
    jw_bool(w, r->suspended);
    jw_key(w, "sent");
    jw_u64(w, r->sent);
    jw_key(w, "resends");
    jw_u64(w, r->resends);
    jw_key(w, "expires_in");
    jw_u64(w, r->expires_ms > now ? (r->expires_ms - now) / 1000 : 0);
    jw_obj_end(w);
}
