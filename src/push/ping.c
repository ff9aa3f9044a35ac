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
 * device; the folders and states it waits on are the device's saved
 * parameters, which the empty-body form of the next ping reuses anyway.
 * Waking is per user: a publish looks only at that user's devices.
 */
#include "push/ping.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "http/request.h"
#include "push/handlers.h"
#include "push/udp.h"
#include "server/conn.h"
#include "server/router.h"
#include "session/heartbeat.h"
#include "session/session.h"
#include "server/server.h"

const char *const ping_outcome_names[PING_OUTCOME_COUNT] = {
    [PING_CHANGED] = "changed",
    [PING_EXPIRED] = "expired",
    [PING_SUPERSEDED] = "superseded",
    [PING_SHUTTING_DOWN] = "shutting-down",
};

/* Forgets that d's ping is held (its connection is being answered or closed). */
static void unhold(struct device *d)
{
    if (d->held) {
        d->held = NULL;
        d->user->held--;
    }
}

static void answer_status(struct conn *c, struct device *d, enum ping_outcome o)
{
    struct jsonw w;
    size_t len;
    char *body;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, ping_outcome_names[o]);
    jw_key(&w, "heartbeat_hint");
    jw_u64(&w, hb_hint(c->srv, d));
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    c->srv->metrics.pings_answered[o]++;
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

/*
 * Answers c with the folders of d whose server state differs from the
 * device's, and records that the device now knows them. Returns how many
 * differed; when none, answers nothing.
 */
static int answer_if_changed(struct conn *c, struct device *d)
{
    struct store *st = c->srv->store;
    struct jsonw w;
    int changed = 0;
    size_t len;
    char *body;

    for (uint32_t i = 0; i < d->nfolders; i++) {
        uint64_t now = store_get(st, d->user->id, d->folders[i].name);
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
        udp_knows(c->srv, d, d->folders[i].name, now);
    }
    if (changed == 0)
        return 0;
    device_persist(c->srv->store, d);
    jw_obj_end(&w);
    jw_key(&w, "heartbeat_hint");
    jw_u64(&w, hb_hint(c->srv, d));
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    c->srv->metrics.pings_answered[PING_CHANGED]++;
    conn_respond(c, 200, NULL, body, len);
    free(body);
    return changed;
}

void ping_expired(struct conn *c)
{
    struct device *d = c->held;

    unhold(d);
    hb_on_expired(d, d->heartbeat);
    answer_status(c, d, PING_EXPIRED);
}

void ping_conn_closed(struct conn *c)
{
    unhold(c->held);
}

void ping_shutdown(struct conn *c)
{
    char extra[48];

    unhold(c->held);
    c->srv->metrics.pings_answered[PING_SHUTTING_DOWN]++;
    c->keep_alive = 0;
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", c->srv->cfg->shutdown_retry_after);
    CONN_RESPOND_LITERAL(c, 503, extra, "{\"status\":\"shutting-down\"}");
}

void ping_wake_user(struct server *s, struct user *u)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    (void)s;
    while (u->held > 0 && strmap_next(&u->devices, &pos, &key, &val)) {
        struct device *d = val;
        struct conn *c = d->held;
        if (c == NULL)
            continue;
        d->held = NULL;
        u->held--;
        if (answer_if_changed(c, d) == 0) {
            /* Another folder of this user changed: keep holding. */
            d->held = c;
            u->held++;
        }
    }
}

static void bad_request(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad_request(struct conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    conn_respond_error(c, 400, "bad-request", msg);
}

static void out_of_range(struct conn *c)
{
    const struct config *cfg = c->srv->cfg;
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"status\":\"heartbeat-out-of-range\",\"min\":%u,\"max\":%u}",
                     cfg->heartbeat_min, cfg->heartbeat_max);
    conn_respond(c, 400, NULL, body, (size_t)n);
}

/* The parsed, checked request: borrowed views into the JSON tree. */
struct ping_params {
    const char *device;
    long long heartbeat;   /* 0: not given */
    size_t nfolders;       /* 0: not given */
    struct store_folder *folders;
    char device_q[DEVICE_ID_MAX * 3 + 1]; /* ?device=, decoded */
};

/* Parses and checks the folders object. 0, or -1 after answering. */
static int parse_folders(struct conn *c, json_t *folders, struct ping_params *p)
{
    const struct config *cfg = c->srv->cfg;
    const char *name;
    json_t *val;
    size_t i = 0, n;

    if (!json_is_object(folders)) {
        bad_request(c, "folders must be an object mapping folder names to state strings");
        return -1;
    }
    n = json_object_size(folders);
    if (n > cfg->ping_max_folders) {
        char body[96];
        int len = snprintf(body, sizeof(body), "{\"status\":\"too-many-folders\",\"max\":%u}",
                           cfg->ping_max_folders);
        conn_respond(c, 400, NULL, body, (size_t)len);
        return -1;
    }
    if (n == 0) {
        bad_request(c, "folders must name at least one folder");
        return -1;
    }
    p->folders = xcalloc(n, sizeof(*p->folders));
    json_object_foreach(folders, name, val) {
        const char *why = check_folder_name(name, strlen(name));
        char q[80];
        if (why) {
            bad_request(c, "folder name %s %s", log_q(q, sizeof(q), name), why);
            return -1;
        }
        if (!json_is_string(val) ||
            util_parse_u64(json_string_value(val), json_string_length(val), &p->folders[i].state) < 0) {
            bad_request(c, "folders.%s: state must be a decimal string such as \"17\"",
                        log_q(q, sizeof(q), name));
            return -1;
        }
        p->folders[i++].name = name;
    }
    p->nfolders = n;
    return 0;
}

/* Parses the body (or the query for an empty body). 0, or -1 after answering. */
static int parse_ping(struct conn *c, struct http_req *r, json_t **root, struct ping_params *p)
{
    char *device_q = p->device_q;
    const char *why;
    json_error_t e;
    json_t *v;
    long qlen = -ENOENT;

    if (r->query)
        qlen = util_query_param(r->query, r->query_len, "device", device_q,
                                sizeof(p->device_q));
    if (qlen == -EINVAL) {
        bad_request(c, "query parameter device is badly encoded or too long");
        return -1;
    }
    if (r->body_len == 0) {
        if (qlen < 0) {
            bad_request(c, "an empty ping must name its device: POST /v1/ping?device=ID");
            return -1;
        }
        p->device = device_q;
    } else {
        *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
        if (*root == NULL) {
            bad_request(c, "malformed JSON at line %d column %d: %s", e.line, e.column, e.text);
            return -1;
        }
        if (!json_is_object(*root)) {
            bad_request(c, "the body must be a JSON object");
            return -1;
        }
        v = json_object_get(*root, "device");
        if (v == NULL) {
            bad_request(c, "device is required");
            return -1;
        }
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            bad_request(c, "device must be a string");
            return -1;
        }
        p->device = json_string_value(v);
        if (qlen >= 0 && strcmp(device_q, p->device) != 0) {
            bad_request(c, "device differs between the query and the body");
            return -1;
        }
        v = json_object_get(*root, "heartbeat");
        if (v != NULL) {
            if (!json_is_integer(v)) {
                bad_request(c, "heartbeat must be a whole number of seconds");
                return -1;
            }
            p->heartbeat = json_integer_value(v);
            if (p->heartbeat < c->srv->cfg->heartbeat_min ||
                p->heartbeat > c->srv->cfg->heartbeat_max) {
                out_of_range(c);
                return -1;
            }
        }
        v = json_object_get(*root, "folders");
        if (v != NULL && parse_folders(c, v, p) < 0)
            return -1;
    }
    why = check_device_id(p->device, strlen(p->device));
    if (why) {
        bad_request(c, "device %s", why);
        return -1;
    }
    return 0;
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

void ping_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct server *s = c->srv;
    struct ping_params p = {0};
    json_t *root = NULL;
    struct user *u;
    struct device *d = NULL;
    unsigned heartbeat;
    int dirty, created;

    if (parse_ping(c, r, &root, &p) < 0)
        goto done;
    u = shard_user(&s->shard, who->subject, 1);
    d = user_device(u, p.device, 0);
    heartbeat = p.heartbeat ? (unsigned)p.heartbeat : (d ? d->heartbeat : 0);
    if (heartbeat == 0 || (p.nfolders == 0 && (d == NULL || d->nfolders == 0))) {
        CONN_RESPOND_LITERAL(c, 400, NULL, "{\"status\":\"missing-parameters\"}");
        goto done;
    }
    /* A saved heartbeat is checked against today's bounds, which may have changed. */
    if (heartbeat < s->cfg->heartbeat_min || heartbeat > s->cfg->heartbeat_max) {
        out_of_range(c);
        goto done;
    }
    dirty = d == NULL || d->heartbeat != heartbeat ||
            (p.nfolders && !same_folders(d, p.folders, p.nfolders));
    created = d == NULL;
    if (created)
        d = user_device(u, p.device, 1);
    if (d->heartbeat == 0) /* new, or known so far only by its UDP registration */
        hb_init(s, d, heartbeat);
    /* Judge what this ping proves about the path before it replaces the last one. */
    {
        struct sockaddr_storage peer;
        int len = sizeof(peer);
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &len) != 0)
            peer.ss_family = AF_UNSPEC;
        if (hb_on_ping(s, d, (struct sockaddr *)&peer, d->held != NULL))
            dirty = 1;
    }
    if (d->held) {
        struct conn *old = d->held;
        char q1[300], q2[300];
        unhold(d);
        LOG(LOG_INFO, ping_superseded, "user=%s device=%s", log_q(q1, sizeof(q1), u->id),
            log_q(q2, sizeof(q2), d->id));
        answer_status(old, d, PING_SUPERSEDED);
    }
    if (p.nfolders)
        device_set_folders(d, p.folders, p.nfolders);
    d->heartbeat = heartbeat;
    d->last_request = util_now_ms();
    /* The states a ping presents are the states its device holds. */
    for (uint32_t i = 0; d->udp && i < d->nfolders; i++)
        udp_knows(s, d, d->folders[i].name, d->folders[i].state);
    if (answer_if_changed(c, d) > 0)
        goto done;
    if (session_admit(s, c, u, d) < 0) {
        /*
         * Refused: a device this ping created is forgotten again, or a client
         * inventing a new id per retry would grow memory without bound.
         */
        if (created) {
            hb_forget(s, d);
            user_device_remove(u, d);
            d = NULL;
        }
        goto done;
    }
    /* Most pings repeat the last one: write the record only when it changed. */
    if (dirty)
        device_persist(s->store, d);
    d->held_since = d->last_request;
    d->held = c;
    u->held++;
    conn_hold(c, d, util_now_ms() + (uint64_t)heartbeat * 1000);
done:
    /*
     * A ping proves its device present: its registration is renewed (and
     * revived). Last, so that a revived one is sent only what the answer
     * did not tell.
     */
    if (d && d->udp)
        udp_device_present(s, d);
    free(p.folders);
    json_decref(root);
}
