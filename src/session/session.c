/*
 * session.c — sessions, the per-user cap with its reaper; see session.h
 * for the rules.
 *
 * Cost: nothing per tick. The reaper runs only when a user hits the cap,
 * and then asks the kernel about that user's sessions alone (one
 * getsockopt(TCP_INFO) each, at most per_user_limit of them).
 */
#include "session/session.h"

#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "http/error.h"
#include "net/sockopt.h"
#include "session/devices.h"
#include "session/heartbeat.h"
#include "shard/shard.h"
#include "udp/udp.h"

static uint32_t *held_count(struct sessions *ss, struct user *u)
{
    return (uint32_t *)shard_slot(u, ss->uslot);
}

void sessions_init(struct sessions *ss, const struct config *cfg, struct shard *sh,
                   struct metrics *metrics, struct heartbeat *hb, struct udp *udp,
                   struct devices *devices)
{
    ss->cfg = cfg;
    ss->shard = sh;
    ss->metrics = metrics;
    ss->hb = hb;
    ss->udp = udp;
    ss->devices = devices;
    ss->dslot = shard_device_slot(sh, sizeof(struct session_dev));
    ss->uslot = shard_user_slot(sh, sizeof(uint32_t));
}

void session_hold(struct sessions *ss, struct device *d, struct conn *c)
{
    session_of(ss, d)->held = c;
    (*held_count(ss, d->user))++;
}

struct conn *session_release(struct sessions *ss, struct device *d)
{
    struct session_dev *sd = session_of(ss, d);
    struct conn *c = sd->held;

    if (c) {
        sd->held = NULL;
        (*held_count(ss, d->user))--;
    }
    return c;
}

int session_supersede(struct sessions *ss, struct device *d)
{
    struct conn *old = session_of(ss, d)->held;
    const struct conn_holder *h;

    if (old == NULL)
        return 0;
    h = old->holder;
    if (h && h->superseded)
        h->superseded(h->ctx, old, old->hold_arg);
    else if (h && h->expired)
        h->expired(h->ctx, old, old->hold_arg);
    /* A holder that did neither must not keep the device: it is the newer request's now. */
    if (session_of(ss, d)->held == old)
        session_release(ss, d);
    return 1;
}

int session_present(const struct sessions *ss, const struct device *d)
{
    return session_of(ss, d)->held != NULL || udp_reg_of(ss->udp, d) != NULL;
}

uint32_t session_count(const struct sessions *ss, const struct user *u)
{
    uint32_t pos = 0, n = 0;
    const char *key;
    void *val;

    if (session_held_count(ss, u) == 0 && udp_user_count(ss->udp, u) == 0)
        return 0;
    while (strmap_next(&u->devices, &pos, &key, &val))
        n += session_present(ss, val) ? 1 : 0;
    return n;
}

uint64_t sessions_now(const struct sessions *ss)
{
    uint64_t both = 0;
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (ss->metrics->udp_registrations == 0)
        return ss->metrics->pings_held;
    /* Only the devices with both are counted twice by the two gauges: walk the users. */
    while (strmap_next(&ss->shard->users, &pos, &key, &val)) {
        struct user *u = val;
        uint32_t dpos = 0;
        void *dval;
        if (session_held_count(ss, u) == 0 || udp_user_count(ss->udp, u) == 0)
            continue;
        while (strmap_next(&u->devices, &dpos, &key, &dval))
            both += session_of(ss, dval)->held && udp_reg_of(ss->udp, dval);
    }
    return ss->metrics->pings_held + ss->metrics->udp_registrations - both;
}

/*
 * Closes u's held connections that the kernel reports dead, and ends the
 * suspended UDP registrations (an ICMP error said their address is gone) of
 * devices with no live held ping. Returns how many sessions that freed.
 */
static unsigned reap_dead(struct sessions *ss, struct user *u)
{
    const struct config *cfg = ss->cfg;
    /* Silent through the idle time and one whole probe interval: a probe went unanswered. */
    unsigned probe_ms = (cfg->keepalive_idle + cfg->keepalive_interval) * 1000;
    /* Written data unacknowledged for as long as keepalive would wait: not coming back. */
    unsigned stale_ms = cfg->keepalive_interval * cfg->keepalive_count * 1000;
    uint32_t pos = 0, before = session_count(ss, u), after;
    const char *key;
    void *val;

    while (strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        struct conn *held = session_of(ss, d)->held;
        char why[96];
        int fd;

        if (held && (fd = conn_fd(held)) >= 0 &&
            net_tcp_alive(fd, probe_ms, stale_ms, why, sizeof(why)) == 0)
            /* The close is deferred, but the hold is released at once (its holder is told). */
            conn_close(held, CONN_WHY_REAPED, why);
        /* A device with a live held ping is present whatever its registration says. */
        if (session_of(ss, d)->held == NULL)
            udp_reap_suspended(ss->udp, d);
    }
    after = session_count(ss, u);
    ss->metrics->sessions_reaped += before - after;
    return before - after;
}

/* "phone1 age=12s idle=3s, tablet age=..." for the session-limit event. */
static void describe_sessions(struct sessions *ss, struct user *u, uint64_t now, char *out,
                              size_t outlen)
{
    uint32_t pos = 0;
    const char *key;
    void *val;
    size_t n = 0;

    out[0] = '\0';
    while (strmap_next(&u->devices, &pos, &key, &val) && n + 1 < outlen) {
        struct device *d = val;
        struct session_dev *sd = session_of(ss, d);
        struct udp_reg *r = udp_reg_of(ss->udp, d);
        if (sd->held)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s age=%llus idle=%llus", n ? ", " : "",
                                  d->id, (unsigned long long)((now - sd->held_since) / 1000),
                                  (unsigned long long)((now - sd->last_request) / 1000));
        else if (r)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s udp age=%llus%s", n ? ", " : "",
                                  d->id, (unsigned long long)((now - r->created_ms) / 1000),
                                  r->suspended ? " suspended" : "");
    }
}

/* Seconds until the first of u's sessions ends by itself (its heartbeat). */
static unsigned first_end_s(struct sessions *ss, struct user *u, uint64_t now)
{
    uint32_t pos = 0;
    const char *key;
    void *val;
    uint64_t first = UINT64_MAX;

    while (strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        struct conn *held = session_of(ss, d)->held;
        struct udp_reg *r = udp_reg_of(ss->udp, d);
        uint64_t at = held ? conn_deadline(held) : 0;
        if (at && at < first)
            first = at;
        if (r && !held && r->expires_ms < first)
            first = r->expires_ms;
    }
    if (first == UINT64_MAX || first <= now)
        return 1;
    return (unsigned)((first - now + 999) / 1000);
}

int session_admit(struct sessions *ss, struct user *u, struct device *d, struct http_error *e)
{
    unsigned limit = ss->cfg->sessions_per_user_limit;
    uint64_t now = util_now_ms();
    char list[1200], q1[300], q2[300], q3[1300];

    /* A device never has two sessions: its new one replaces its old. */
    if (session_present(ss, d) || session_held_count(ss, u) + udp_user_count(ss->udp, u) < limit ||
        session_count(ss, u) < limit)
        return 0;
    reap_dead(ss, u);
    if (session_count(ss, u) < limit)
        return 0;
    ss->metrics->sessions_refused++;
    describe_sessions(ss, u, now, list, sizeof(list));
    LOG(LOG_WARN, session_limit, "user=%s device=%s limit=%u sessions=%s",
        log_q(q1, sizeof(q1), u->id), log_q(q2, sizeof(q2), d->id), limit,
        log_q(q3, sizeof(q3), list));
    http_error_set(e, 429, "session-limit", NULL);
    http_error_num(e, "limit", limit);
    http_error_header(e, "Retry-After: %u", first_end_s(ss, u, now));
    return -1;
}

void session_closed(struct sessions *ss, struct device *d, enum conn_why why, const char *text)
{
    char q1[300], q2[300], q3[200];

    /*
     * Only a connection the path killed is evidence: a reset or a socket error
     * (a middlebox's RST, keepalive giving up), or one found dead by the
     * reaper. A client that closed its own ping (FIN), an admin's end, nudged
     * stopping and the rest say nothing about the path's idle timeout.
     */
    if (why == CONN_WHY_IO || why == CONN_WHY_REAPED) {
        hb_on_lost(ss->hb, d);
        devices_save(ss->devices, d);
    }
    LOG(LOG_INFO, session_closed, "user=%s device=%s why=%s", log_q(q1, sizeof(q1), d->user->id),
        log_q(q2, sizeof(q2), d->id), log_q(q3, sizeof(q3), text));
}

int session_end(struct sessions *ss, struct device *d)
{
    struct conn *held = session_of(ss, d)->held;

    if (!session_present(ss, d))
        return -1;
    if (held && held->holder && held->holder->ended)
        held->holder->ended(held->holder->ctx, held, held->hold_arg);
    else if (held)
        conn_close(held, CONN_WHY_ENDED_BY_ADMIN, NULL);
    udp_end(ss->udp, d, conn_why_text[CONN_WHY_ENDED_BY_ADMIN]);
    return 0;
}

static void add_session(const struct sessions *ss, struct jsonw *w, struct device *d, uint64_t now)
{
    const struct session_dev *sd = session_of(ss, d);
    const struct udp_reg *r = udp_reg_of(ss->udp, d);
    char peer[64];

    jw_obj_begin(w);
    jw_key(w, "user");
    jw_str(w, d->user->id);
    jw_key(w, "device");
    jw_str(w, d->id);
    jw_key(w, "kind");
    if (sd->held) {
        const char *name = sd->held->holder && sd->held->holder->name ? sd->held->holder->name
                                                                       : "ping";
        char kind[32];
        snprintf(kind, sizeof(kind), "%s%s", name, r ? "+udp" : "");
        jw_str(w, kind);
    } else {
        jw_str(w, "udp");
    }
    if (sd->held) {
        jw_key(w, "remote");
        jw_str(w, conn_peer(sd->held, peer, sizeof(peer)));
        jw_key(w, "age");
        jw_u64(w, (now - sd->held_since) / 1000);
        jw_key(w, "last_activity");
        jw_u64(w, (now - sd->last_request) / 1000);
        jw_key(w, "heartbeat");
        jw_u64(w, d->heartbeat);
    } else {
        /* A registration alone: its remote is where its datagrams go. */
        jw_key(w, "remote");
        jw_str(w, util_format_addr(&r->addr.sa, peer, sizeof(peer)));
        jw_key(w, "age");
        jw_u64(w, (now - r->created_ms) / 1000);
    }
    if (r) {
        jw_key(w, "udp");
        udp_describe(r, w, now);
    }
    jw_obj_end(w);
}

void session_list_user(const struct sessions *ss, struct jsonw *w, struct user *u, uint64_t now,
                       size_t *count)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while ((session_held_count(ss, u) || udp_user_count(ss->udp, u)) &&
           strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        if (session_present(ss, d)) {
            add_session(ss, w, d, now);
            (*count)++;
        }
    }
}
