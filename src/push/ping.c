/*
 * ping.c — POST /v1/ping: the long-poll channel ("Direct Push").
 *
 * A ping presents the folder states a device holds. If any differs from
 * the server's, it is answered at once with those folders; otherwise it is
 * held until one of them changes or its heartbeat ends. A device has at most
 * one held ping: a newer one supersedes it (the device reconnected, maybe
 * because the path ate the older one).
 *
 * What a held ping costs: its connection (see conn.h) and a pointer from its
 * device (session.h); the folders and states it waits on are the device's
 * saved parameters, which the empty-body form of the next ping reuses anyway.
 * Waking is per user: a publish looks only at that user's devices.
 */
#include "push/ping.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/principal.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "push/pingrate.h"
#include "session/devices.h"
#include "session/heartbeat.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "udp/udp.h"

/* d's ping is held by c from now until its heartbeat ends. */
static void hold(struct ping *p, struct device *d, struct conn *c, unsigned heartbeat)
{
    session_hold(p->sessions, d, c);
    p->metrics->pings_held++;
    conn_hold(c, &p->holder, d, util_now_ms() + (uint64_t)heartbeat * 1000);
}

/* Forgets that d's ping is held (its connection is being answered or closed). */
static void unhold(struct ping *p, struct device *d)
{
    if (session_release(p->sessions, d))
        p->metrics->pings_held--;
}

static void answer_status(struct ping *p, struct conn *c, struct device *d, enum ping_outcome o)
{
    struct jsonw w;
    size_t len;
    char *body;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, ping_outcome_names[o]);
    jw_key(&w, "heartbeat_hint");
    jw_u64(&w, hb_hint(p->hb, d));
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    p->metrics->pings_answered[o]++;
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

/*
 * Answers c with the folders of d whose server state differs from the
 * device's, and records that the device now knows them. Returns how many
 * differed; when none, answers nothing.
 */
static int answer_if_changed(struct ping *p, struct conn *c, struct device *d)
{
    struct jsonw w;
    int changed = 0;
    size_t len;
    char *body;

    for (uint32_t i = 0; i < d->nfolders; i++) {
        uint64_t now = store_get(p->store, d->user->id, d->folders[i].name);
        if (now == d->folders[i].state)
            continue;
        if (changed++ == 0) {
            jw_init(&w);
            jw_obj_begin(&w);
            jw_key(&w, "status");
            jw_str(&w, "changed");
            jw_key(&w, "folders");
            jw_obj_begin(&w);
        }
        jw_key(&w, d->folders[i].name);
        jw_u64_str(&w, now);
        d->folders[i].state = now;
        udp_knows(p->udp, d, d->folders[i].name, now);
    }
    if (changed == 0)
        return 0;
    devices_save(p->devices, d);
    jw_obj_end(&w);
    jw_key(&w, "heartbeat_hint");
    jw_u64(&w, hb_hint(p->hb, d));
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    p->metrics->pings_answered[PING_CHANGED]++;
    conn_respond(c, 200, NULL, body, len);
    free(body);
    return changed;
}

/* ---- a held ping's connection --------------------------------------- */

/* The heartbeat ended with nothing changed: answer "expired". */
static void on_expired(void *ctx, struct conn *c, void *arg)
{
    struct ping *p = ctx;
    struct device *d = arg;

    unhold(p, d);
    hb_on_expired(p->hb, d, d->heartbeat);
    answer_status(p, c, d, PING_EXPIRED);
}

/* The held connection closed unanswered: the device lost its path (or an admin ended it). */
static void on_closed(void *ctx, struct conn *c, void *arg, enum conn_why why, const char *text)
{
    struct ping *p = ctx;
    struct device *d = arg;

    if (!conn_stopping(c))
        session_closed(p->sessions, d, why, text);
    unhold(p, d);
}

/* A newer ping (or stream) of the device took over: answer "superseded" at once. */
static void on_superseded(void *ctx, struct conn *c, void *arg)
{
    struct ping *p = ctx;
    struct device *d = arg;
    char q1[300], q2[300];

    unhold(p, d);
    LOG(LOG_INFO, ping_superseded, "user=%s device=%s", log_q(q1, sizeof(q1), d->user->id),
        log_q(q2, sizeof(q2), d->id));
    answer_status(p, c, d, PING_SUPERSEDED);
}

/* nudged stops: answer 503 shutting-down, and the device comes back after Retry-After. */
static void on_shutdown(void *ctx, struct conn *c, void *arg)
{
    struct ping *p = ctx;
    struct http_error e;

    unhold(p, arg);
    p->metrics->pings_answered[PING_SHUTTING_DOWN]++;
    http_error_set(&e, 503, "shutting-down", NULL);
    http_error_header(&e, "Retry-After: %u", p->cfg->shutdown_retry_after);
    conn_close_after_answer(c);
    conn_respond_error(c, &e);
}

void ping_init(struct ping *p, const struct config *cfg, struct store *store, struct shard *shard,
               struct metrics *metrics, struct heartbeat *hb, struct sessions *sessions,
               struct devices *devices, struct udp *udp)
{
    p->cfg = cfg;
    p->store = store;
    p->shard = shard;
    p->metrics = metrics;
    p->hb = hb;
    p->sessions = sessions;
    p->devices = devices;
    p->udp = udp;
    p->rate = NULL;
    p->holder = (struct conn_holder){
        .expired = on_expired,
        .closed = on_closed,
        .shutdown = on_shutdown,
        .superseded = on_superseded,
        .ctx = p,
        .name = "ping",
        .heartbeat = 1,
    };
}

void ping_wake_user(struct ping *p, struct user *u, const struct store_event *e, size_t n)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while (session_held_count(p->sessions, u) > 0 && strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        struct conn *c = session_of(p->sessions, d)->held;
        if (c == NULL)
            continue;
        /* Held by another kind (an ActiveSync Ping, a stream): its holder answers in its own words. */
        if (c->holder != &p->holder) {
            if (c->holder->changed)
                c->holder->changed(c->holder->ctx, c, c->hold_arg, e, n);
            continue;
        }
        session_release(p->sessions, d);
        if (answer_if_changed(p, c, d) == 0) {
            session_hold(p->sessions, d, c); /* another folder of this user changed: keep holding */
        } else {
            p->metrics->pings_held--;
            /* The change came while it waited: the re-ping it causes is the publisher's doing. */
            if (p->rate)
                pingrate_changed(p->rate, d);
        }
    }
}

/* ---- the request ------------------------------------------------------ */

/* The parsed, checked request: borrowed views into the JSON tree. */
struct ping_params {
    const char *device;
    long long heartbeat;   /* 0: not given */
    size_t nfolders;       /* 0: not given */
    struct store_folder *folders;
    char device_q[DEVICE_ID_MAX * 3 + 1]; /* ?device=, decoded */
};

/* 400 heartbeat-out-of-range with the bounds. */
static int out_of_range(const struct config *cfg, struct http_error *e)
{
    http_error_set(e, 400, "heartbeat-out-of-range", NULL);
    http_error_num(e, "min", cfg->heartbeat_min);
    http_error_num(e, "max", cfg->heartbeat_max);
    return -1;
}

/* Parses and checks the folders object. 0, or -1 with e set. */
static int parse_folders(const struct config *cfg, json_t *folders, struct ping_params *pp,
                         struct http_error *e)
{
    const char *name;
    json_t *val;
    size_t i = 0, n;

    if (!json_is_object(folders))
        return http_error_bad(e, "folders must be an object mapping folder names to state strings");
    n = json_object_size(folders);
    if (n > cfg->ping_max_folders) {
        http_error_set(e, 400, "too-many-folders", NULL);
        http_error_num(e, "max", cfg->ping_max_folders);
        return -1;
    }
    if (n == 0)
        return http_error_bad(e, "folders must name at least one folder");
    pp->folders = xcalloc(n, sizeof(*pp->folders));
    json_object_foreach(folders, name, val) {
        const char *why = check_folder_name(name, strlen(name));
        char q[80];
        if (why)
            return http_error_bad(e, "folder name %s %s", log_q(q, sizeof(q), name), why);
        if (!json_is_string(val) ||
            util_parse_u64(json_string_value(val), json_string_length(val), &pp->folders[i].state) < 0)
            return http_error_bad(e, "folders.%s: state must be a decimal string such as \"17\"",
                               log_q(q, sizeof(q), name));
        pp->folders[i++].name = name;
    }
    pp->nfolders = n;
    return 0;
}

/* Parses the body (or the query for an empty body). 0, or -1 with e set. */
static int parse_ping(const struct config *cfg, struct http_req *r, json_t **root,
                      struct ping_params *pp, struct http_error *e)
{
    char *device_q = pp->device_q;
    const char *why;
    json_error_t je;
    json_t *v;
    long qlen = -ENOENT;

    if (r->query)
        qlen = util_query_param(r->query, r->query_len, "device", device_q, sizeof(pp->device_q));
    if (qlen == -EINVAL)
        return http_error_bad(e, "query parameter device is badly encoded or too long");
    if (r->body_len == 0) {
        if (qlen < 0)
            return http_error_bad(e, "an empty ping must name its device: POST /v1/ping?device=ID");
        pp->device = device_q;
    } else {
        *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
        if (*root == NULL)
            return http_error_bad(e, "malformed JSON at line %d column %d: %s", je.line, je.column,
                               je.text);
        if (!json_is_object(*root))
            return http_error_bad(e, "the body must be a JSON object");
        v = json_object_get(*root, "device");
        if (v == NULL)
            return http_error_bad(e, "device is required");
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return http_error_bad(e, "device must be a string");
        pp->device = json_string_value(v);
        if (qlen >= 0 && strcmp(device_q, pp->device) != 0)
            return http_error_bad(e, "device differs between the query and the body");
        v = json_object_get(*root, "heartbeat");
        if (v != NULL) {
            if (!json_is_integer(v))
                return http_error_bad(e, "heartbeat must be a whole number of seconds");
            pp->heartbeat = json_integer_value(v);
            if (pp->heartbeat < cfg->heartbeat_min || pp->heartbeat > cfg->heartbeat_max)
                return out_of_range(cfg, e);
        }
        v = json_object_get(*root, "folders");
        if (v != NULL && parse_folders(cfg, v, pp, e) < 0)
            return -1;
    }
    why = check_device_id(pp->device, strlen(pp->device));
    if (why)
        return http_error_bad(e, "device %s", why);
    return 0;
}

/*
 * Does f[0..n) present a folder at an older state than the server last
 * told d? A client replaying old states gets "changed" at once every time:
 * such an answer is no news and does not make its next ping free.
 */
static int presents_older(const struct device *d, const struct store_folder *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < d->nfolders; j++)
            if (strcmp(d->folders[j].name, f[i].name) == 0) {
                if (f[i].state < d->folders[j].state)
                    return 1;
                break;
            }
    return 0;
}

/* 429 ping-rate-limited: d re-pinged more than [ping] max_per_minute. */
static void rate_limited(struct ping *p, struct http_error *e, unsigned wait)
{
    http_error_set(e, 429, "ping-rate-limited",
                   "this device sent more than %u requests in a minute with nothing changed "
                   "in between; wait for Retry-After",
                   p->rate->max);
    http_error_num(e, "retry_after", wait);
    http_error_header(e, "Retry-After: %u", wait);
}

/* Does d's saved folder list equal f[0..n) (names and states, in order)? */
static int same_folders(const struct device *d, const struct store_folder *f, size_t n)
{
    if (d->nfolders != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (d->folders[i].state != f[i].state || strcmp(d->folders[i].name, f[i].name) != 0)
            return 0;
    return 1;
}

void ping_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct ping *p = arg;
    const struct config *cfg = p->cfg;
    struct ping_params pp = {0};
    struct http_error e;
    json_t *root = NULL;
    struct user *u;
    struct device *d = NULL;
    struct session_dev *sd;
    unsigned heartbeat, wait;
    int dirty, created, news;

    if (parse_ping(cfg, r, &root, &pp, &e) < 0)
        goto refuse;
    u = shard_user(p->shard, who->subject, 1);
    d = shard_device(p->shard, u, pp.device, 0);
    /* A new device has counted nothing yet: only a known one can be over its rate. */
    if (d && p->rate && (wait = pingrate_count(p->rate, d, "ping")) > 0) {
        rate_limited(p, &e, wait);
        d = NULL; /* refused before anything of it changed: no renewal either */
        goto refuse;
    }
    heartbeat = pp.heartbeat ? (unsigned)pp.heartbeat : (d ? d->heartbeat : 0);
    if (heartbeat == 0 || (pp.nfolders == 0 && (d == NULL || d->nfolders == 0))) {
        http_error_set(&e, 400, "missing-parameters", NULL);
        goto refuse;
    }
    /* A saved heartbeat is checked against today's bounds, which may have changed. */
    if (heartbeat < cfg->heartbeat_min || heartbeat > cfg->heartbeat_max) {
        out_of_range(cfg, &e);
        goto refuse;
    }
    dirty = d == NULL || d->heartbeat != heartbeat ||
            (pp.nfolders && !same_folders(d, pp.folders, pp.nfolders));
    created = d == NULL;
    news = created || !pp.nfolders || !presents_older(d, pp.folders, pp.nfolders);
    if (created) {
        d = shard_device(p->shard, u, pp.device, 1);
        if (p->rate)
            pingrate_count(p->rate, d, "ping");
    }
    sd = session_of(p->sessions, d);
    if (d->heartbeat == 0) /* new, or known so far only by its UDP registration */
        hb_first_hint(p->hb, d, heartbeat);
    /* Judge what this ping proves about the path before it replaces the last one. */
    {
        struct sockaddr_storage peer;
        /* Only a held ping's early end tells about the path, not a stream's. */
        int held_ping = sd->held && sd->held->holder && sd->held->holder->heartbeat;
        if (conn_peer_addr(c, &peer) != 0)
            peer.ss_family = AF_UNSPEC;
        if (hb_on_ping(p->hb, d, (struct sockaddr *)&peer, held_ping))
            dirty = 1;
    }
    session_supersede(p->sessions, d);
    if (pp.nfolders)
        shard_set_folders(d, pp.folders, pp.nfolders);
    d->heartbeat = heartbeat;
    sd->last_request = util_now_ms();
    /* The states a ping presents are the states its device holds. */
    for (uint32_t i = 0; udp_reg_of(p->udp, d) && i < d->nfolders; i++)
        udp_knows(p->udp, d, d->folders[i].name, d->folders[i].state);
    if (answer_if_changed(p, c, d) > 0) {
        if (news && p->rate)
            pingrate_changed(p->rate, d);
        goto done;
    }
    if (session_admit(p->sessions, u, d, &e) < 0) {
        /*
         * Refused: a device this ping created is forgotten again, or a client
         * inventing a new id per retry would grow memory without bound.
         */
        if (created) {
            hb_forget(p->hb, d);
            shard_device_remove(p->shard, d);
            d = NULL;
        }
        goto refuse;
    }
    /* Most pings repeat the last one: write the record only when it changed. */
    if (dirty)
        devices_save(p->devices, d);
    sd->held_since = sd->last_request;
    hold(p, d, c, heartbeat);
    goto done;
refuse:
    conn_respond_error(c, &e);
done:
    /*
     * A ping proves its device present: its registration is renewed (and
     * revived). Last, so that a revived one is sent only what the answer
     * did not tell.
     */
    if (d && udp_reg_of(p->udp, d))
        udp_device_present(p->udp, d);
    free(pp.folders);
    json_decref(root);
}
