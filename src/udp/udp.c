/*
 * udp.c — UDP new-mail datagrams: the registry of registrations, the
 * resend schedule, acks, and what an ICMP error means for a registration.
 * See udp.h for the rules and docs/udp.md for the contract; the socket is
 * socket.c, the HTTP endpoints push/udp_api.c.
 *
 * Schedule: each registration has one deadline (its next resend or its
 * expiry, whichever is first) in a min-heap of its own behind one uv_timer,
 * like connections (common/deadline.h): nothing scans registrations per
 * tick, and 100k idle registrations cost nothing until one is due.
 *
 * Cost: a registration is ~200 bytes plus its folder names; a notify is one
 * HMAC and one sendto(); an ack is one parse, one hash lookup, one HMAC.
 */
#include "udp/udp.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "shard/shard.h"
#include "udp/datagram.h"

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

static void on_timer(uv_timer_t *t);

/* The slots: a device's registration, a user's count of them. */
static struct udp_reg **reg_slot(struct udp *u, struct device *d)
{
    return (struct udp_reg **)shard_slot(d, u->dslot);
}

static uint32_t *count_slot(struct udp *u, struct user *user)
{
    return (uint32_t *)shard_slot(user, u->uslot);
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

/* "1.2.3.4:5" of a registration's address. */
static const char *reg_addr(const struct udp_reg *r, char *buf, size_t len)
{
    return util_format_addr(&r->addr.sa, buf, len);
}

static void save(struct udp *u, struct udp_reg *r);

static void send_notify(struct udp *u, struct udp_reg *r, uint32_t i, uint64_t state,
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
        save(u, r);
    }
    n = dgram_encode(&d, r->key, buf);
    r->notified[i] = state;
    if (n == 0 || udp_socket_send(&u->sock, buf, n, &r->addr.sa) < 0)
        return;
    r->sent++;
    u->metrics->udp_sent[kind]++;
}

/*
 * Sends a notify for every folder of r that is newer than the device holds
 * and (unless 'again') newer than what was already sent, and restarts the
 * resend count when anything went out.
 */
static void notify_pending(struct udp *u, struct udp_reg *r, int again)
{
    const char *user = r->device->user->id;
    int sent = 0;

    if (r->suspended)
        return;
    for (uint32_t i = 0; i < r->nfolders; i++) {
        uint64_t now = store_get(u->store, user, r->folders[i].name);
        if (now <= r->folders[i].state || (!again && now <= r->notified[i]))
            continue;
        send_notify(u, r, i, now, UDP_SENT_NOTIFY);
        sent = 1;
    }
    if (!sent)
        return;
    r->resends = 0;
    r->resend_at =
        u->cfg->udp_max_resends ? util_now_ms() + u->cfg->udp_resend_interval * 1000ull : 0;
    schedule(u, r);
}

static int has_pending(struct udp *u, const struct udp_reg *r)
{
    const char *user = r->device->user->id;

    for (uint32_t i = 0; i < r->nfolders; i++)
        if (store_get(u->store, user, r->folders[i].name) > r->folders[i].state)
            return 1;
    return 0;
}

/* A resend is due: every folder still pending goes again, with its latest state. */
static void resend(struct udp *u, struct udp_reg *r, uint64_t now)
{
    const char *user = r->device->user->id;
    char q1[300], q2[300];
    int sent = 0;

    for (uint32_t i = 0; i < r->nfolders; i++) {
        uint64_t cur = store_get(u->store, user, r->folders[i].name);
        if (cur <= r->folders[i].state)
            continue;
        send_notify(u, r, i, cur, UDP_SENT_RESEND);
        sent = 1;
    }
    if (!sent || r->suspended) { /* caught up meanwhile, or the send found it unreachable */
        r->resend_at = 0;
        return;
    }
    if (++r->resends < u->cfg->udp_max_resends) {
        r->resend_at = now + u->cfg->udp_resend_interval * 1000ull;
        return;
    }
    r->resend_at = 0;
    u->metrics->udp_resends_exhausted++;
    LOG(LOG_INFO, udp_resends_exhausted, "user=%s device=%s id=%llu resends=%u",
        log_q(q1, sizeof(q1), user), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, r->resends);
}

/* ---- registry -------------------------------------------------------- */

static void save(struct udp *u, struct udp_reg *r)
{
    r->saved_expires = r->expires_at;
    u->save(u->save_arg, r->device);
}

/*
 * Registrations per target address, for [udp] max_per_address: one entry
 * per address with any, so a flood of registrations aimed at one address
 * is refused however many users make it. The key is the address bytes
 * (the port left out: a victim has many).
 */
struct addr_count {
    uint32_t n;
    uint8_t len;
    char key[17];
};

static size_t addr_key(const struct sockaddr *sa, char key[17])
{
    if (sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        key[4] = '\0';
        return 4;
    }
    memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    key[16] = '\0';
    return 16;
}

static void addr_count_add(struct udp *u, const struct sockaddr *sa, int delta)
{
    char key[17];
    size_t len = addr_key(sa, key);
    struct addr_count *ac = strmap_get(&u->by_addr, key, len);

    if (ac == NULL) {
        if (delta < 0)
            return;
        ac = xcalloc(1, sizeof(*ac));
        memcpy(ac->key, key, sizeof(key));
        ac->len = (uint8_t)len;
        strmap_put(&u->by_addr, ac->key, len, ac);
    }
    if (delta > 0) {
        ac->n++;
    } else if (--ac->n == 0) {
        strmap_del(&u->by_addr, ac->key, ac->len);
        free(ac);
    }
}

unsigned udp_addr_count(const struct udp *u, const struct sockaddr *sa)
{
    char key[17];
    size_t len = addr_key(sa, key);
    const struct addr_count *ac = strmap_get(&u->by_addr, key, len);

    return ac ? ac->n : 0;
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
static void reg_remove(struct udp *u, struct udp_reg *r)
{
    deadline_clear(&u->heap, &r->deadline);
    strmap_del(&u->regs, (const char *)r->idkey, sizeof(r->idkey));
    *reg_slot(u, r->device) = NULL;
    (*count_slot(u, r->device->user))--;
    addr_count_add(u, &r->addr.sa, -1);
    u->metrics->udp_registrations--;
    reg_free(r);
}

static void log_ended(const struct udp_reg *r, const char *why)
{
    char q1[300], q2[300], q3[200], a[64];

    LOG(LOG_INFO, udp_ended, "user=%s device=%s id=%llu address=%s why=%s",
        log_q(q1, sizeof(q1), r->device->user->id), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), log_q(q3, sizeof(q3), why));
}

void udp_end(struct udp *u, struct device *d, const char *why)
{
    struct udp_reg *r = udp_reg_of(u, d);

    if (r == NULL)
        return;
    log_ended(r, why);
    reg_remove(u, r);
    u->save(u->save_arg, d);
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
static struct udp_reg *reg_new(struct udp *u, struct device *d, const struct sockaddr *to,
                               const struct store_folder *f, size_t n, uint64_t id,
                               const uint8_t *key)
{
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
    memcpy(&r->addr, to, udp_sockaddr_len(to));
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
    *reg_slot(u, d) = r;
    (*count_slot(u, d->user))++;
    addr_count_add(u, &r->addr.sa, 1);
    u->metrics->udp_registrations++;
    return r;
}

static void set_expiry(struct udp *u, struct udp_reg *r)
{
    r->expires_ms = util_now_ms() + u->cfg->udp_ttl * 1000ull;
    r->expires_at = (int64_t)time(NULL) + u->cfg->udp_ttl;
}

struct udp_reg *udp_register(struct udp *u, struct device *d, const struct sockaddr *to,
                             const struct store_folder *f, size_t n)
{
    struct udp_reg *r, *old = udp_reg_of(u, d);
    char q1[300], q2[300], a[64];

    if (old) {
        log_ended(old, "replaced by a new registration");
        reg_remove(u, old);
    }
    r = reg_new(u, d, to, f, n, 0, NULL);
    if (r == NULL)
        return NULL;
    set_expiry(u, r);
    r->seq_reserved = SEQ_BLOCK;
    save(u, r);
    LOG(LOG_INFO, udp_registered, "user=%s device=%s id=%llu address=%s folders=%u ttl=%u",
        log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), r->nfolders, u->cfg->udp_ttl);
    schedule(u, r);
    notify_pending(u, r, 0);
    return r;
}

void udp_restore(struct udp *u, struct device *d, const struct store_udp *sr)
{
    struct sockaddr_storage ss;
    struct udp_reg *r;
    int64_t left = sr->expires - (int64_t)time(NULL);
    char err[160];

    if (left <= 0 || util_parse_addr(sr->address, &ss, err, sizeof(err)) < 0 ||
        udp_target(u, &ss) < 0) {
        char q1[300], q2[300];
        /* Expired while nudged was down, or the address no longer fits. */
        LOG(LOG_INFO, udp_ended, "user=%s device=%s id=%llu address=%s why=%s",
            log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id),
            (unsigned long long)sr->id, sr->address,
            left <= 0 ? "\"expired while nudged was stopped\""
                      : "\"its address does not fit the UDP socket\"");
        u->save(u->save_arg, d); /* without the registration */
        return;
    }
    r = reg_new(u, d, (struct sockaddr *)&ss, sr->folders, sr->nfolders, sr->id, sr->key);
    if (r == NULL)
        return;
    r->suspended = (uint8_t)(sr->suspended != 0);
    r->expires_at = sr->expires;
    r->expires_ms = util_now_ms() + (uint64_t)left * 1000;
    /* Numbering resumes above anything sent before the stop; older acks are stale. */
    r->seq = r->acked_seq = sr->seq;
    r->seq_reserved = sr->seq + SEQ_BLOCK;
    save(u, r);
    schedule(u, r);
    /* Changes the device had not caught up with when nudged stopped go out again. */
    notify_pending(u, r, 1);
}

void udp_on_change(struct udp *u, struct user *user)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (udp_user_count(u, user) == 0)
        return;
    while (strmap_next(&user->devices, &pos, &key, &val)) {
        struct udp_reg *r = udp_reg_of(u, val);
        if (r)
            notify_pending(u, r, 0);
    }
}

void udp_knows(struct udp *u, struct device *d, const char *folder, uint64_t state)
{
    struct udp_reg *r = udp_reg_of(u, d);

    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->nfolders; i++) {
        if (strcmp(r->folders[i].name, folder) != 0 || state <= r->folders[i].state)
            continue;
        r->folders[i].state = state;
        if (r->resend_at && !has_pending(u, r)) {
            r->resend_at = 0;
            schedule(u, r);
        }
        save(u, r);
        return;
    }
}

void udp_caught_up(struct udp *u, struct user *user, const char *folder, uint64_t state)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (udp_user_count(u, user) == 0)
        return;
    while (strmap_next(&user->devices, &pos, &key, &val))
        if (udp_reg_of(u, val))
            udp_knows(u, val, folder, state);
}

static void revive(struct udp *u, struct udp_reg *r, const char *why)
{
    char q1[300], q2[300], a[64];

    r->suspended = 0;
    LOG(LOG_INFO, udp_revived, "user=%s device=%s id=%llu address=%s why=%s",
        log_q(q1, sizeof(q1), r->device->user->id), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), why);
    save(u, r);
    notify_pending(u, r, 1);
}

void udp_device_present(struct udp *u, struct device *d)
{
    struct udp_reg *r = udp_reg_of(u, d);

    if (r == NULL)
        return;
    set_expiry(u, r);
    schedule(u, r);
    if (r->suspended)
        revive(u, r, "ping");
    else if (r->expires_at - r->saved_expires >= EXPIRY_SAVE_SLACK_S)
        save(u, r);
}

static void suspend(struct udp *u, struct udp_reg *r, const char *why)
{
    char q1[300], q2[300], q3[128], a[64];

    r->suspended = 1;
    r->resend_at = 0;
    schedule(u, r);
    save(u, r);
    LOG(LOG_INFO, udp_suspended, "user=%s device=%s id=%llu address=%s reason=%s",
        log_q(q1, sizeof(q1), r->device->user->id), log_q(q2, sizeof(q2), r->device->id),
        (unsigned long long)r->id, reg_addr(r, a, sizeof(a)), log_q(q3, sizeof(q3), why));
}

int udp_reap_suspended(struct udp *u, struct device *d)
{
    struct udp_reg *r = udp_reg_of(u, d);

    if (r == NULL || !r->suspended)
        return 0;
    udp_end(u, d, "reaped: suspended (its address was unreachable)");
    return 1;
}

/* ---- the timer ------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct udp *u = t->data;
    uint64_t now = util_now_ms();
    struct deadline_node *n;

    u->timer_at = 0;
    while ((n = deadline_peek(&u->heap)) != NULL && n->at <= now) {
        struct udp_reg *r = (struct udp_reg *)((char *)n - offsetof(struct udp_reg, deadline));
        deadline_clear(&u->heap, n);
        if (now >= r->expires_ms) {
            udp_end(u, r->device, "expired");
            continue;
        }
        if (r->resend_at && now >= r->resend_at)
            resend(u, r, now);
        schedule(u, r);
    }
    arm(u);
}

/* ---- receiving: acks and ICMP errors ---------------------------------- */

static void reject(struct udp *u, enum udp_reject why, const struct sockaddr *from,
                   const char *detail)
{
    uint64_t now = util_now_ms();
    char a[64], q[200];

    u->metrics->udp_rejected[why]++;
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

/* A datagram arrived on the socket: an ack, or something to reject. */
static void on_datagram(void *arg, const uint8_t *buf, size_t len, const struct sockaddr *from)
{
    struct udp *u = arg;
    struct udp_reg *r;
    struct dgram d;
    char whybuf[96], folder[DGRAM_FOLDER_MAX + 1];
    const char *why;
    uint64_t now;

    if (len > DGRAM_MAX) {
        reject(u, UDP_REJECT_MALFORMED, from, "longer than any nudge datagram");
        return;
    }
    if (dgram_parse(buf, len, &d, whybuf, sizeof(whybuf), &why) < 0) {
        reject(u, UDP_REJECT_MALFORMED, from, why);
        return;
    }
    if (d.type != DGRAM_ACK) {
        reject(u, UDP_REJECT_NOT_ACK, from, dgram_type_name(d.type));
        return;
    }
    r = strmap_get(&u->regs, (const char *)buf + 4, 8);
    if (r == NULL) {
        reject(u, UDP_REJECT_UNKNOWN, from, "no such registration (ended, or replaced)");
        return;
    }
    if (!dgram_verify(buf, len, r->key)) {
        reject(u, UDP_REJECT_BAD_TAG, from, "the tag does not verify with the registration's key");
        return;
    }
    if (d.seq > r->seq) {
        reject(u, UDP_REJECT_REPLAY, from, "acks a sequence number never sent");
        return;
    }
    if (d.seq <= r->acked_seq) {
        reject(u, UDP_REJECT_REPLAY, from, "acks a sequence number already acked");
        return;
    }
    r->acked_seq = d.seq;
    u->metrics->udp_acks++;
    if (r->suspended)
        revive(u, r, "ack");
    memcpy(folder, d.folder, d.folder_len);
    folder[d.folder_len] = '\0';
    /* A client cannot hold a state the server never had: claiming one must not mute it. */
    now = store_get(u->store, r->device->user->id, folder);
    udp_knows(u, r->device, folder, d.state < now ? d.state : now);
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

/*
 * An ICMP error for a datagram we sent: its first bytes quote the datagram,
 * whose bytes 4..11 are the registration id.
 */
static void on_unreachable(void *arg, const uint8_t *data, size_t len, const struct sockaddr *dst,
                           const char *why)
{
    struct udp *u = arg;
    struct udp_reg *r = NULL;

    if (len >= 12 && data[0] == 'n' && data[1] == 'd')
        r = strmap_get(&u->regs, (const char *)data + 4, 8);
    /* The id names the registration; the address guards against a stale or forged quote. */
    if (r && !r->suspended && same_addr(dst, &r->addr.sa))
        suspend(u, r, why);
}

/* ---- set-up ---------------------------------------------------------- */

int udp_init(struct udp **out, uv_loop_t *loop, const struct config *cfg, unsigned worker_index,
             struct store *store, struct shard *sh, struct metrics *metrics, udp_save_fn save,
             void *save_arg, char *err, size_t errlen)
{
    struct udp *u;

    *out = NULL;
    if (cfg->udp_listen[0] == '\0')
        return 0;
    u = xcalloc(1, sizeof(*u));
    u->cfg = cfg;
    u->store = store;
    u->metrics = metrics;
    u->save = save;
    u->save_arg = save_arg;
    deadline_heap_init(&u->heap);
    strmap_init(&u->regs);
    strmap_init(&u->by_addr);
    if (udp_socket_open(&u->sock, loop, cfg, worker_index, metrics, on_datagram, on_unreachable, u,
                        err, errlen) < 0) {
        udp_socket_close(&u->sock);
        deadline_heap_free(&u->heap);
        strmap_free(&u->regs);
        strmap_free(&u->by_addr);
        free(u);
        return -1;
    }
    u->dslot = shard_device_slot(sh, sizeof(struct udp_reg *));
    u->uslot = shard_user_slot(sh, sizeof(uint32_t));
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    u->timer_open = 1;
    LOG(LOG_INFO, udp_listening, "addr=%s resend_interval=%u max_resends=%u ttl=%u", u->sock.addr,
        cfg->udp_resend_interval, cfg->udp_max_resends, cfg->udp_ttl);
    *out = u;
    return 0;
}

void udp_stop(struct udp *u)
{
    if (u == NULL || u->closing)
        return;
    u->closing = 1;
    udp_socket_stop(&u->sock);
    if (u->timer_open)
        uv_close((uv_handle_t *)&u->timer, NULL);
}

void udp_free(struct udp *u)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (u == NULL)
        return;
    /* The heap points into the registrations: let go of it first. */
    deadline_heap_free(&u->heap);
    while (strmap_next(&u->regs, &pos, &key, &val)) {
        struct udp_reg *r = val;
        *reg_slot(u, r->device) = NULL;
        (*count_slot(u, r->device->user))--;
        reg_free(r);
    }
    pos = 0;
    while (strmap_next(&u->by_addr, &pos, &key, &val))
        free(val);
    strmap_free(&u->by_addr);
    strmap_free(&u->regs);
    udp_socket_close(&u->sock);
    free(u);
}

/* ---- for the HTTP side and the sessions list ---------------------------- */

int udp_target(struct udp *u, struct sockaddr_storage *ss)
{
    return udp_socket_fit(&u->sock, ss);
}

int udp_send_test(struct udp *u, const struct sockaddr *to, const char *nonce, size_t len)
{
    uint8_t buf[DGRAM_MAX];
    struct dgram d = {.type = DGRAM_TEST, .folder = nonce, .folder_len = len};
    size_t n = dgram_encode(&d, dgram_test_key, buf);

    if (n == 0 || udp_socket_send(&u->sock, buf, n, to) < 0)
        return -1;
    u->metrics->udp_sent[UDP_SENT_TEST]++;
    return 0;
}

const char *udp_bound_addr(struct udp *u, struct sockaddr_storage *out)
{
    if (out)
        *out = u->sock.bound;
    return u->sock.addr;
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
