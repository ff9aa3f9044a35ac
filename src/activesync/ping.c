/*
 * ping.c — the ActiveSync Ping (MS-ASCMD 2.2.1.13) as a session of its
 * device.
 *
 * A Ping names folder Ids and a heartbeat. Each Id names a nudge folder (the
 * same name, or the user's folder map); the device record keeps, per Id,
 * the state last reported to that device, so a change between two Pings
 * answers the next one at once (Status 2). A Status 2 counts as delivered
 * only when the device's next Ping comes within [heartbeat] grace: until
 * then the states before it are kept beside the record, and a late Ping
 * (the answer was eaten) gets them reported again.
 *
 * Holding, superseding, the per-user cap, reaping and the adaptive
 * heartbeat are the session and heartbeat modules', called exactly as
 * push/ping.c calls them; only the words of the answers differ. A publish
 * wakes these Pings through the holder's `changed` operation, which
 * push/ping.c calls for connections it does not hold itself.
 *
 * Cost: one pointer per device and per user (slots); an ActiveSync device
 * adds a struct as_dev (40 bytes, 48 with malloc's header) and, after a
 * Status 2, its previous states until the next Ping. What only some devices
 * need (unknown Ids, a battery-guarded answer) is a second allocation,
 * made when first needed.
 */
#include "activesync/ping.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "activesync/query.h"
#include "activesync/wbxml.h"
#include "auth/basic.h"
#include "auth/principal.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/strmap.h"
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
#include "worker/worker.h"

#define WBXML_TYPE "application/vnd.ms-sync.wbxml"
/* MS-ASHTTP 2.2.1.1.2.6: what nudge accepts in MS-ASProtocolVersion. */
#define AS_VERSIONS "2.5,12.0,12.1,14.0,14.1,16.0,16.1"
/*
 * Battery guard: a Ping within this many ms of an answer that was not a
 * change is "quick"; this many quick ones in a row and the device's Pings
 * are held to heartbeat min. A phone re-pinging after a real answer does so
 * within a second or two; one that waited its heartbeat never comes this soon.
 */
#define QUICK_MS 5000
#define QUICK_LIMIT 3

/* What few devices need: a FolderSync loop, a battery-guarded answer. */
struct as_extra {
    char *refused;           /* the Ids last answered Status 7, "\n"-joined; NULL: none */
    uint64_t ignore_until;   /* s (monotonic): the Ids in 'refused' are ignored until then */
    uint32_t refused_times;  /* how many Status 7 in a row for those Ids */
    uint32_t delayed_value;  /* battery guard: the HeartbeatInterval or MaxFolders of ... */
    uint8_t delayed_status;  /* ... the answer a held connection gets at its end */
};

/* What this module keeps for every ActiveSync device (the slot points to it). */
struct as_dev {
    uint64_t changed_at;     /* ms (monotonic) of the last Status 2; 0: none awaiting proof */
    uint64_t *prev;          /* states before that Status 2, one per folder; NULL: none */
    uint64_t plain_at;       /* ms of the last answer that was not a change */
    struct as_extra *extra;  /* NULL until needed */
    uint32_t guided_at;      /* s (monotonic) of the last heartbeat Status 5 */
    uint16_t nprev;          /* folders in prev ([activesync] max_folders <= 10000) */
    uint8_t quick;           /* quick Pings in a row (battery guard), saturating */
};

/* A user's folder map: Id -> nudge folder. */
struct as_map {
    struct strmap ids;       /* Id -> char * folder (one allocation: the folder, then the Id) */
};

static struct as_dev **dev_slot(const struct as_ping *ap, const struct device *d)
{
    return shard_slot(d, ap->dslot);
}

static struct as_map **map_slot(const struct as_ping *ap, const struct user *u)
{
    return shard_slot(u, ap->uslot);
}

static struct as_dev *as_dev_of(struct as_ping *ap, struct device *d)
{
    struct as_dev **s = dev_slot(ap, d);
    if (*s == NULL)
        *s = xcalloc(1, sizeof(**s));
    return *s;
}

static struct as_extra *extra_of(struct as_dev *x)
{
    if (x->extra == NULL)
        x->extra = xcalloc(1, sizeof(*x->extra));
    return x->extra;
}

static void dev_free(struct as_dev *x)
{
    if (x == NULL)
        return;
    free(x->prev);
    if (x->extra)
        free(x->extra->refused);
    free(x->extra);
    free(x);
}

static void map_free(struct as_map *m)
{
    uint32_t pos = 0;
    const char *k;
    void *v;

    if (m == NULL)
        return;
    while (strmap_next(&m->ids, &pos, &k, &v))
        free(v);
    strmap_free(&m->ids);
    free(m);
}

/* The nudge folder an Id names for u, or NULL when none does (Status 7). */
static const char *folder_of(struct as_ping *ap, struct user *u, const char *id)
{
    struct as_map *m = *map_slot(ap, u);

    if (m == NULL)
        return check_folder_name(id, strlen(id)) ? NULL : id;
    return strmap_get(&m->ids, id, strlen(id));
}

/* ---- answers ---------------------------------------------------------- */

static void answer(struct as_ping *ap, struct conn *c, const struct as_ping_answer *a)
{
    size_t len;
    uint8_t *b = as_wbxml_encode_ping(a, &len);

    (void)ap;
    conn_respond_typed(c, 200, WBXML_TYPE, NULL, (const char *)b, len);
    free(b);
}

/* An answer that is not a change (the battery guard counts what follows it). */
static void answer_status1(struct as_ping *ap, struct conn *c)
{
    struct as_ping_answer a = {.status = 1};

    answer(ap, c, &a);
}

/* Writes a plain answer; of them only Status 8 is counted (pings_answered is per outcome). */
static void answer_plain_now(struct as_ping *ap, struct conn *c, const struct as_ping_answer *a)
{
    if (a->status == 8)
        ap->metrics->pings_answered[PING_STORE_ERROR]++;
    answer(ap, c, a);
}

/*
 * Holds c's plain answer a for 'ms' (the connection waits for nothing, it
 * is not a session), then writes it: the battery guard, and a device over
 * [ping] max_per_minute, since ActiveSync clients know no 429.
 */
static void hold_plain(struct as_ping *ap, struct conn *c, struct device *d,
                       const struct as_ping_answer *a, uint64_t ms)
{
    struct as_extra *ex = extra_of(as_dev_of(ap, d));

    ex->delayed_status = (uint8_t)a->status;
    ex->delayed_value = a->heartbeat ? a->heartbeat : a->max_folders;
    conn_hold(c, &ap->delayed, d, util_now_ms() + ms);
}

/*
 * An answer given at once that is not a change (Status 3 to 8). A device
 * under the battery guard gets it only after heartbeat min: its connection
 * is held (not as a session: it waits for nothing) and answered then.
 */
static void answer_plain(struct as_ping *ap, struct conn *c, struct device *d, unsigned status,
                         uint32_t heartbeat, uint32_t max_folders)
{
    struct as_ping_answer a = {.status = status, .heartbeat = heartbeat, .max_folders = max_folders};
    struct as_dev *x = d ? as_dev_of(ap, d) : NULL;

    if (x && x->quick >= QUICK_LIMIT) {
        hold_plain(ap, c, d, &a, (uint64_t)ap->cfg->heartbeat_min * 1000);
        return;
    }
    if (x)
        x->plain_at = util_now_ms();
    answer_plain_now(ap, c, &a);
}

/*
 * The Ids of d whose folder changed since the state last reported, into
 * *ids (malloc'd, the caller frees); returns their count.
 */
static size_t changed_ids(struct as_ping *ap, struct device *d, const char ***ids)
{
    size_t n = 0;

    *ids = NULL;
    for (uint32_t i = 0; i < d->nfolders; i++) {
        const char *f = folder_of(ap, d->user, d->folders[i].name);
        if (f == NULL || store_get(ap->store, d->user->id, f) == d->folders[i].state)
            continue;
        if (*ids == NULL)
            *ids = xcalloc(d->nfolders, sizeof(**ids));
        (*ids)[n++] = d->folders[i].name;
    }
    return n;
}

/*
 * Answers c Status 2 when a folder of d changed: the states reported
 * become the device's, the previous ones are kept until its next Ping
 * proves the answer arrived. Returns 1 when it answered.
 */
static int answer_if_changed(struct as_ping *ap, struct conn *c, struct device *d)
{
    struct as_dev *x = as_dev_of(ap, d);
    struct as_ping_answer a = {.status = 2};
    const char **ids;
    size_t n = changed_ids(ap, d, &ids);

    if (n == 0)
        return 0;
    free(x->prev);
    x->prev = xcalloc(d->nfolders, sizeof(*x->prev));
    x->nprev = (uint16_t)d->nfolders;
    for (uint32_t i = 0; i < d->nfolders; i++) {
        const char *f = folder_of(ap, d->user, d->folders[i].name);
        x->prev[i] = d->folders[i].state;
        if (f)
            d->folders[i].state = store_get(ap->store, d->user->id, f);
    }
    x->changed_at = util_now_ms();
    x->quick = 0;
    a.folders = ids;
    a.nfolders = n;
    ap->metrics->pings_answered[PING_CHANGED]++;
    answer(ap, c, &a);
    free(ids);
    devices_save(ap->devices, d);
    return 1;
}

/* ---- a held Ping's connection ------------------------------------------ */

static void unhold(struct as_ping *ap, struct device *d)
{
    if (session_release(ap->sessions, d))
        ap->metrics->pings_held--;
}

static void on_expired(void *ctx, struct conn *c, void *arg)
{
    struct as_ping *ap = ctx;
    struct device *d = arg;

    unhold(ap, d);
    hb_on_expired(ap->hb, d, d->heartbeat);
    ap->metrics->pings_answered[PING_EXPIRED]++;
    answer_status1(ap, c);
}

static void on_closed(void *ctx, struct conn *c, void *arg, enum conn_why why, const char *text)
{
    struct as_ping *ap = ctx;
    struct device *d = arg;

    if (!conn_stopping(c))
        session_closed(ap->sessions, d, why, text);
    unhold(ap, d);
}

/* nudged stops: HTTP 503 with Retry-After, as /v1/ping; the phone retries then. */
static void on_shutdown(void *ctx, struct conn *c, void *arg)
{
    struct as_ping *ap = ctx;
    struct http_error e;

    unhold(ap, arg);
    ap->metrics->pings_answered[PING_SHUTTING_DOWN]++;
    http_error_set(&e, 503, "shutting-down", NULL);
    http_error_header(&e, "Retry-After: %u", ap->cfg->shutdown_retry_after);
    conn_close_after_answer(c);
    conn_respond_error(c, &e);
}

/* A newer Ping of the device took over: Status 1 at once, as Exchange answers it. */
static void on_superseded(void *ctx, struct conn *c, void *arg)
{
    struct as_ping *ap = ctx;
    struct device *d = arg;
    char q1[300], q2[300];

    unhold(ap, d);
    LOG(LOG_INFO, ping_superseded, "user=%s device=%s", log_q(q1, sizeof(q1), d->user->id),
        log_q(q2, sizeof(q2), d->id));
    ap->metrics->pings_answered[PING_SUPERSEDED]++;
    answer_status1(ap, c);
}

/* A guarded device's delayed answer is due. */
static void on_delayed_expired(void *ctx, struct conn *c, void *arg)
{
    struct as_ping *ap = ctx;
    struct as_dev *x = *dev_slot(ap, arg);
    struct as_extra *ex = extra_of(x);
    struct as_ping_answer a = {.status = ex->delayed_status ? ex->delayed_status : 1};

    if (a.status == 5)
        a.heartbeat = ex->delayed_value;
    if (a.status == 6)
        a.max_folders = ex->delayed_value;
    x->plain_at = util_now_ms();
    answer_plain_now(ap, c, &a);
}

static void on_delayed_closed(void *ctx, struct conn *c, void *arg, enum conn_why why,
                              const char *text)
{
    (void)ctx, (void)c, (void)arg, (void)why, (void)text;
}

static void on_shutdown_delayed(void *ctx, struct conn *c, void *arg)
{
    struct as_ping *ap = ctx;
    struct http_error e;

    (void)arg;
    http_error_set(&e, 503, "shutting-down", NULL);
    http_error_header(&e, "Retry-After: %u", ap->cfg->shutdown_retry_after);
    conn_close_after_answer(c);
    conn_respond_error(c, &e);
}

/* A folder of the user changed (push/ping.c's wake): answer if it is one of ours. */
static void on_changed(void *ctx, struct conn *c, void *arg, const struct store_event *e,
                       size_t n)
{
    struct as_ping *ap = ctx;
    struct device *d = arg;
    const char **ids;

    (void)e, (void)n;
    if (changed_ids(ap, d, &ids) == 0)
        return;
    free(ids);
    unhold(ap, d);
    answer_if_changed(ap, c, d);
    /* The change came while it waited: the Ping it causes is not counted against the device. */
    if (ap->rate)
        pingrate_changed(ap->rate, d);
}

void as_ping_init(struct as_ping *ap, const struct config *cfg, struct store *store,
                  struct shard *sh, struct metrics *metrics, struct heartbeat *hb,
                  struct sessions *sessions, struct devices *devices,
                  const struct worker_route *route)
{
    ap->cfg = cfg;
    ap->store = store;
    ap->shard = sh;
    ap->metrics = metrics;
    ap->hb = hb;
    ap->sessions = sessions;
    ap->devices = devices;
    ap->route = route;
    ap->rate = NULL;
    ap->dslot = shard_device_slot(sh, sizeof(struct as_dev *));
    ap->uslot = shard_user_slot(sh, sizeof(struct as_map *));
    ap->holder = (struct conn_holder){
        .expired = on_expired,
        .closed = on_closed,
        .shutdown = on_shutdown,
        .changed = on_changed,
        .superseded = on_superseded,
        .ctx = ap,
        .name = "activesync",
        .heartbeat = 1,
    };
    ap->delayed = (struct conn_holder){
        .expired = on_delayed_expired,
        .closed = on_delayed_closed,
        .shutdown = on_shutdown_delayed,
        .ctx = ap,
    };
}

void as_ping_free(struct as_ping *ap)
{
    uint32_t upos = 0;
    const char *k;
    void *uv;

    while (strmap_next(&ap->shard->users, &upos, &k, &uv)) {
        struct user *u = uv;
        uint32_t dpos = 0;
        void *dv;
        map_free(*map_slot(ap, u));
        *map_slot(ap, u) = NULL;
        while (strmap_next(&u->devices, &dpos, &k, &dv)) {
            dev_free(*dev_slot(ap, dv));
            *dev_slot(ap, dv) = NULL;
        }
    }
}

/* ---- the request -------------------------------------------------------- */

/* "DOMAIN\user" -> "user" (MS-ASHTTP: the User may carry the Windows domain). */
static const char *strip_domain(const char *s)
{
    const char *b = strrchr(s, '\\');
    return b ? b + 1 : s;
}

/* The version the client speaks, from the base64 query or the header. 0, or -1 with e set. */
static int check_version(const struct as_query *q, const struct http_req *r, struct http_error *e)
{
    const char *h = http_req_header(r, HDR_AS_PROTOCOL_VERSION);
    char v[16];
    size_t n;

    if (q->base64) {
        if (as_query_version_text(q->version, v, sizeof(v)) < 0)
            v[0] = '\0';
    } else if (h == NULL || h[0] == '\0') {
        return http_error_set(e, 400, "bad-request",
                              "MS-ASProtocolVersion is required (one of " AS_VERSIONS ")");
    } else {
        snprintf(v, sizeof(v), "%s", h);
    }
    static const char versions[] = AS_VERSIONS;
    n = strlen(v);
    for (const char *p = versions; n > 0 && (p = strstr(p, v)) != NULL; p += n)
        if ((p == versions || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return 0;
    return http_error_set(e, 400, "bad-request",
                          "MS-ASProtocolVersion %.16s is not served (one of " AS_VERSIONS ")",
                          v[0] ? v : "(none)");
}

/* Is the query's User the signed-in one? Compared without a DOMAIN\ prefix, ignoring case. */
static int same_user(const struct http_req *r, const struct as_query *q, const char *subject)
{
    const char *h = http_req_header(r, HDR_AUTHORIZATION);
    struct basic_credential bc;
    const char *why;
    int same;

    if (q->user[0] == '\0')
        return 1;
    if (strcasecmp(strip_domain(q->user), subject) == 0)
        return 1;
    if (h == NULL || basic_decode(h, &bc, &why) < 0)
        return 0;
    same = strcasecmp(strip_domain(q->user), strip_domain(bc.user)) == 0;
    basic_wipe(&bc);
    return same;
}

/* The Ids of f[0..n) that name no folder, "\n"-joined (malloc'd), or NULL when all do. */
static char *unknown_ids(struct as_ping *ap, struct user *u, const struct as_folder *f, size_t n)
{
    char *out = NULL;
    size_t len = 0;

    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(f[i].id);
        if (folder_of(ap, u, f[i].id))
            continue;
        out = xrealloc(out, len + l + 2);
        memcpy(out + len, f[i].id, l);
        len += l;
        out[len++] = '\n';
        out[len] = '\0';
    }
    return out;
}

/* Is Id listed in the "\n"-joined list? */
static int listed(const char *list, const char *id)
{
    size_t l = strlen(id);

    for (const char *p = list; p && *p; p = strchr(p, '\n') + 1)
        if (strncmp(p, id, l) == 0 && p[l] == '\n')
            return 1;
    return 0;
}

/*
 * Status 7 or not: the unknown Ids of the request, unless they are the
 * same as the last two answers' (the FolderSync loop), which are then
 * ignored for a while. Drops ignored Ids from f. 1: answer 7 now.
 */
static int refuse_unknown(struct as_ping *ap, struct device *d, struct as_folder *f, size_t *n)
{
    struct as_dev *dev = as_dev_of(ap, d);
    struct as_extra *x = dev->extra;
    uint64_t now = util_now_ms() / 1000;
    char *unk;
    size_t k = 0;

    if (x && x->refused && x->ignore_until > now) {
        for (size_t i = 0; i < *n; i++)
            if (!listed(x->refused, f[i].id))
                f[k++] = f[i];
        *n = k;
    }
    unk = unknown_ids(ap, d->user, f, *n);
    if (unk == NULL)
        return 0;
    x = extra_of(dev);
    if (x->refused && strcmp(unk, x->refused) == 0) {
        x->refused_times++;
    } else {
        free(x->refused);
        x->refused = unk;
        unk = NULL;
        x->refused_times = 1;
        x->ignore_until = 0;
    }
    free(unk);
    if (x->refused_times > 2 && ap->cfg->as_unknown_folder_ignore) {
        char q1[300], q2[300], q3[600];
        x->ignore_until = now + ap->cfg->as_unknown_folder_ignore;
        LOG(LOG_INFO, as_folders_ignored, "user=%s device=%s ids=%s seconds=%u",
            log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id),
            log_q(q3, sizeof(q3), x->refused), ap->cfg->as_unknown_folder_ignore);
        return refuse_unknown(ap, d, f, n);
    }
    return 1;
}

/* The device's new folder list: an Id it listed before keeps its reported state. */
static void set_folders(struct as_ping *ap, struct device *d, const struct as_folder *f, size_t n)
{
    struct store_folder *nf = xcalloc(n ? n : 1, sizeof(*nf));

    for (size_t i = 0; i < n; i++) {
        const char *fold = folder_of(ap, d->user, f[i].id);
        nf[i].name = f[i].id;
        nf[i].state = fold ? store_get(ap->store, d->user->id, fold) : 0;
        for (uint32_t j = 0; j < d->nfolders; j++)
            if (strcmp(d->folders[j].name, f[i].id) == 0)
                nf[i].state = d->folders[j].state;
    }
    shard_set_folders(d, nf, n);
    free(nf);
}

/* The states of an unproven Status 2: kept (the Ping came in time) or restored (it came late). */
static void judge_delivery(struct as_ping *ap, struct device *d)
{
    struct as_dev *x = as_dev_of(ap, d);

    if (x->prev == NULL)
        return;
    if (util_now_ms() - x->changed_at > (uint64_t)ap->cfg->heartbeat_grace * 1000 &&
        x->nprev == d->nfolders)
        for (uint32_t i = 0; i < d->nfolders; i++)
            d->folders[i].state = x->prev[i];
    free(x->prev);
    x->prev = NULL;
    x->nprev = 0;
}

void as_ping_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct as_ping *ap = arg;
    const struct config *cfg = ap->cfg;
    struct as_ping_req pq = {0};
    struct as_query q;
    struct http_error e;
    struct user *u;
    struct device *d;
    struct session_dev *sd;
    struct as_dev *x;
    struct as_folder *folders = NULL;
    size_t nfolders = 0;
    char err[256];
    unsigned heartbeat, wait;
    int created = 0, guarded = 0, superseding = 0;
    uint64_t now;

    if (as_query_parse(r->query, r->query_len, &q, err, sizeof(err)) < 0) {
        http_error_bad(&e, "%s", err);
        goto refuse;
    }
    if (q.cmd != AS_CMD_PING) {
        http_error_set(&e, 501, "not-implemented",
                       "nudge answers only Cmd=Ping; route Cmd=%s to your ActiveSync server",
                       q.cmd_name);
        goto refuse;
    }
    if (check_version(&q, r, &e) < 0)
        goto refuse;
    if (!same_user(r, &q, who->subject)) {
        http_error_set(&e, 403, "forbidden", "User in the query is not the signed-in user");
        goto refuse;
    }
    if (check_device_id(q.device, strlen(q.device)) != NULL) {
        http_error_bad(&e, "DeviceId %s", check_device_id(q.device, strlen(q.device)));
        goto refuse;
    }
    u = shard_user(ap->shard, who->subject, 1);
    d = shard_device(ap->shard, u, q.device, 0);
    /*
     * The battery guard counts on a record: a device answered at once every
     * time (a heartbeat it never fixes) must not escape it by never being
     * held. Bounded by the session cap, so made-up DeviceIds cannot grow
     * memory; a Ping refused at the cap forgets the record again (below).
     */
    if (d == NULL && u->devices.len < cfg->sessions_per_user_limit) {
        d = shard_device(ap->shard, u, q.device, 1);
        created = 1;
    }
    now = util_now_ms();
    /* The battery guard: Pings that come within seconds of answers given at once. */
    if (d && (x = *dev_slot(ap, d)) != NULL) {
        if (x->plain_at && now - x->plain_at < QUICK_MS) {
            if (x->quick < UINT8_MAX && ++x->quick == QUICK_LIMIT) {
                char q1[300], q2[300];
                LOG(LOG_WARN, as_battery_guard, "user=%s device=%s quick=%u heartbeat=%u",
                    log_q(q1, sizeof(q1), u->id), log_q(q2, sizeof(q2), d->id), x->quick,
                    cfg->heartbeat_min);
            }
        } else {
            x->quick = 0;
        }
        x->plain_at = 0;
    }
    /*
     * Over [ping] max_per_minute: held until the minute ends and answered
     * Status 1 (nothing changed), which costs the phone nothing it would
     * not have spent waiting; its next Ping is counted in a new minute.
     */
    if (d && ap->rate && (wait = pingrate_count(ap->rate, d, "activesync")) > 0) {
        struct as_ping_answer a = {.status = 1};
        hold_plain(ap, c, d, &a, (uint64_t)wait * 1000);
        goto done;
    }
    if (r->body_len > 0) {
        /* Room for what the body could hold, but never more than max_folders + 1. */
        pq.cap = r->body_len / 4 < cfg->as_max_folders + 1 ? r->body_len / 4 : cfg->as_max_folders + 1;
        pq.folders = folders = xcalloc(pq.cap ? pq.cap : 1, sizeof(*folders));
        if (as_wbxml_decode_ping((const uint8_t *)r->body, r->body_len, &pq, err, sizeof(err)) < 0) {
            char q1[300];
            LOG(LOG_DEBUG, bad_request, "user=%s reason=%s", log_q(q1, sizeof(q1), u->id), err);
            answer_plain(ap, c, d, 4, 0, 0);
            goto done;
        }
        if (pq.nfolders > cfg->as_max_folders) {
            answer_plain(ap, c, d, 6, 0, cfg->as_max_folders);
            goto done;
        }
        nfolders = pq.nfolders;
    }
    heartbeat = pq.heartbeat ? pq.heartbeat : (d ? d->heartbeat : 0);
    if (heartbeat == 0 || (nfolders == 0 && (d == NULL || d->nfolders == 0))) {
        answer_plain(ap, c, d, 3, 0, 0);
        goto done;
    }
    if (heartbeat < cfg->heartbeat_min || heartbeat > cfg->heartbeat_max) {
        answer_plain(ap, c, d, 5, heartbeat < cfg->heartbeat_min ? cfg->heartbeat_min
                                                                 : cfg->heartbeat_max, 0);
        goto done;
    }
    if (d == NULL) {
        d = shard_device(ap->shard, u, q.device, 1);
        created = 1;
    }
    x = as_dev_of(ap, d);
    if (nfolders && refuse_unknown(ap, d, folders, &nfolders)) {
        answer_plain(ap, c, d, 7, 0, 0);
        goto done;
    }
    guarded = x->quick >= QUICK_LIMIT;
    sd = session_of(ap->sessions, d);
    if (d->heartbeat == 0)
        hb_first_hint(ap->hb, d, heartbeat);
    {
        struct sockaddr_storage peer;
        /* Only a held ping's early end tells about the path, not a stream's. */
        int held_ping = sd->held && sd->held->holder && sd->held->holder->heartbeat;
        if (conn_peer_addr(c, &peer) != 0)
            peer.ss_family = AF_UNSPEC;
        hb_on_ping(ap->hb, d, (struct sockaddr *)&peer, held_ping);
    }
    judge_delivery(ap, d);
    superseding = session_supersede(ap->sessions, d);
    if (nfolders)
        set_folders(ap, d, folders, nfolders);
    d->heartbeat = heartbeat;
    sd->last_request = now;
    if (answer_if_changed(ap, c, d))
        goto done;
    /*
     * The store is failing (its last write round did not commit): holding
     * the Ping would promise a wake-up that no publish can give, since
     * publishes are answered 503 until a write commits. Status 8 says so and
     * the client retries. The record is saved anyway: that write is the retry
     * that brings health back once the disk does, with no publisher needed.
     * A change already committed is still answered 2 above: it is true.
     */
    if (!store_healthy(ap->store)) {
        devices_save(ap->devices, d);
        answer_plain(ap, c, d, 8, 0, 0);
        goto done;
    }
    /*
     * Heartbeat guidance: the path was proven unable to carry what it asks.
     * Not on a Ping that superseded another: that is the device's retry,
     * which the older one's Status 1 answered; its next Ping hears it.
     */
    if (!guarded && !superseding && cfg->as_guidance_interval && d->heartbeat_ceiling &&
        hb_hint(ap->hb, d) < heartbeat &&
        (x->guided_at == 0 || now / 1000 - x->guided_at >= cfg->as_guidance_interval)) {
        char q1[300], q2[300];
        x->guided_at = (uint32_t)(now / 1000);
        LOG(LOG_INFO, as_heartbeat_guided, "user=%s device=%s asked=%u hint=%u",
            log_q(q1, sizeof(q1), u->id), log_q(q2, sizeof(q2), d->id), heartbeat,
            hb_hint(ap->hb, d));
        devices_save(ap->devices, d);
        answer_plain(ap, c, d, 5, hb_hint(ap->hb, d), 0);
        goto done;
    }
    if (session_admit(ap->sessions, u, d, &e) < 0) {
        /*
         * ActiveSync clients know no 429: the cap is HTTP 503 with
         * Retry-After (MS-ASHTTP 2.2.2.1.1: the server is busy), and a
         * device this Ping created is forgotten again.
         */
        http_error_set(&e, 503, "session-limit",
                       "the user has [sessions] per_user_limit sessions already");
        http_error_header(&e, "Retry-After: %u", cfg->heartbeat_min);
        if (created) {
            hb_forget(ap->hb, d);
            dev_free(*dev_slot(ap, d));
            shard_device_remove(ap->shard, d);
        }
        goto refuse;
    }
    devices_save(ap->devices, d);
    sd->held_since = now;
    session_hold(ap->sessions, d, c);
    ap->metrics->pings_held++;
    /* A guarded device is held to the minimum heartbeat whatever it asked. */
    conn_hold(c, &ap->holder, d,
              now + (uint64_t)(guarded ? cfg->heartbeat_min : heartbeat) * 1000);
    goto done;
refuse:
    conn_respond_error(c, &e);
done:
    free(folders);
}

void as_options_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    (void)arg;
    (void)r;
    (void)who;
    CONN_RESPOND_LITERAL(c, 200,
                         "MS-ASProtocolVersions: " AS_VERSIONS "\r\n"
                         "MS-ASProtocolCommands: Ping\r\n"
                         "MS-Server-ActiveSync: 14.1\r\n",
                         "");
}

/* ---- the publisher's endpoints -------------------------------------------- */

/* The user of /v1/activesync/<what>/USER into user; 0, or -1 with e set. */
static int path_user(const struct http_req *r, const char *prefix, char *user, size_t cap,
                     struct http_error *e)
{
    size_t plen = strlen(prefix), rawlen = r->path_len - plen;
    long ulen;

    if (rawlen == 0 || rawlen >= cap || memchr(r->path + plen, '/', rawlen) != NULL)
        return http_error_bad(e, "expected %sUSER (the user URL-encoded)", prefix);
    memcpy(user, r->path + plen, rawlen);
    user[rawlen] = '\0';
    ulen = util_url_decode(user, rawlen);
    if (ulen < 0 || strlen(user) != (size_t)ulen || check_user_id(user, (size_t)ulen) != NULL)
        return http_error_bad(e, "the user in the path is badly encoded or not a valid user id");
    return 0;
}

static void respond_json(struct conn *c, struct jsonw *w)
{
    size_t len;
    char *body = jw_take(w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

static void write_map(struct jsonw *w, const struct as_map *m)
{
    uint32_t pos = 0;
    const char *k;
    void *v;

    jw_init(w);
    jw_obj_begin(w);
    jw_key(w, "folders");
    jw_obj_begin(w);
    while (m && strmap_next(&m->ids, &pos, &k, &v)) {
        jw_key(w, k);
        jw_str(w, v);
    }
    jw_obj_end(w);
    jw_obj_end(w);
}

/* The store's record kind the folder map is saved under (store.h). */
#define MAP_RECORD "activesync.folders"

/* Parses {"folders": {Id: folder}} (a PUT's body, or a saved record) into a new map; NULL with e set. */
static struct as_map *parse_map(const struct config *cfg, const char *text, size_t len,
                                struct http_error *e)
{
    struct as_map *m = NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    json_t *fo, *val;
    const char *id;

    if (root == NULL) {
        http_error_bad(e, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        goto fail;
    }
    fo = json_object_get(root, "folders");
    if (!json_is_object(fo)) {
        http_error_bad(e, "expected {\"folders\": {\"<Id>\": \"<nudge folder>\", ...}}");
        goto fail;
    }
    if (json_object_size(fo) > 10 * (size_t)cfg->as_max_folders) {
        http_error_bad(e, "a folder map names at most 10 * [activesync] max_folders Ids");
        goto fail;
    }
    m = xcalloc(1, sizeof(*m));
    strmap_init(&m->ids);
    json_object_foreach(fo, id, val) {
        size_t il = strlen(id), fl;
        char *ent;
        if (il == 0 || il > AS_ID_MAX || memchr(id, '\n', il)) {
            http_error_bad(e, "folder Ids are 1 to %d bytes without newlines", AS_ID_MAX);
            goto fail;
        }
        if (!json_is_string(val) || check_folder_name(json_string_value(val),
                                                      json_string_length(val)) != NULL ||
            strlen(json_string_value(val)) != json_string_length(val)) {
            http_error_bad(e, "folders.%.64s must be a nudge folder name", id);
            goto fail;
        }
        fl = json_string_length(val);
        ent = xmalloc(fl + il + 2);
        memcpy(ent, json_string_value(val), fl + 1);
        memcpy(ent + fl + 1, id, il + 1);
        strmap_put(&m->ids, ent + fl + 1, il, ent);
    }
    json_decref(root);
    return m;
fail:
    map_free(m);
    json_decref(root);
    return NULL;
}

/* A saved record at start-up: the folder maps are ours. */
static void on_record_loaded(void *arg, const char *user, const char *kind, const char *data)
{
    struct as_ping *ap = arg;
    struct http_error e;
    struct as_map *m;
    struct user *u;

    if (strcmp(kind, MAP_RECORD) != 0)
        return;
    if (check_user_id(user, strlen(user)) != NULL ||
        (m = parse_map(ap->cfg, data, strlen(data), &e)) == NULL) {
        char q1[300], q2[300];
        /* A map that no longer reads (max_folders lowered, say): Ids name folders until a PUT. */
        LOG(LOG_WARN, store_record_skipped, "user=%s device=- reason=%s",
            log_q(q1, sizeof(q1), user),
            log_q(q2, sizeof(q2), "the ActiveSync folder map does not read any more"));
        return;
    }
    u = shard_user(ap->shard, user, 1);
    map_free(*map_slot(ap, u));
    *map_slot(ap, u) = m;
}

void as_ping_load(struct as_ping *ap)
{
    store_record_load(ap->store, on_record_loaded, ap);
}

void as_folders_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct as_ping *ap = arg;
    char user[3 * USER_ID_MAX + 1];
    struct http_error e;
    struct user *u;
    struct jsonw w;

    (void)who;
    if (path_user(r, "/v1/activesync/folders/", user, sizeof(user), &e) < 0)
        goto refuse;
    if (worker_route(ap->route, c, user, strlen(user)))
        return;
    u = shard_user(ap->shard, user, r->method == HTTP_PUT);
    if (r->method == HTTP_PUT) {
        struct as_map *m = parse_map(ap->cfg, r->body ? r->body : "", r->body_len, &e);
        size_t len;
        char *text;
        if (m == NULL)
            goto refuse;
        map_free(*map_slot(ap, u));
        *map_slot(ap, u) = m;
        /* Saved as it is answered, so that a restart brings back exactly this map. */
        write_map(&w, m);
        text = jw_take(&w, &len);
        store_record_save(ap->store, u->id, MAP_RECORD, text);
        conn_respond(c, 200, NULL, text, len);
        free(text);
        return;
    }
    if (u == NULL || *map_slot(ap, u) == NULL) {
        http_error_set(&e, 404, "not-found", "no folder map for this user: Ids name folders");
        goto refuse;
    }
    if (r->method == HTTP_DELETE) {
        map_free(*map_slot(ap, u));
        *map_slot(ap, u) = NULL;
        store_record_save(ap->store, u->id, MAP_RECORD, NULL);
        CONN_RESPOND_LITERAL(c, 200, NULL, "{\"folders\":null}");
        return;
    }
    write_map(&w, *map_slot(ap, u));
    respond_json(c, &w);
    return;
refuse:
    conn_respond_error(c, &e);
}

void as_synced_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct as_ping *ap = arg;
    char user[3 * USER_ID_MAX + 1];
    struct http_error e;
    json_error_t je;
    json_t *root = NULL, *dv, *fo, *v;
    struct user *u;
    struct device *d;
    struct jsonw w;
    size_t i, cleared = 0;

    (void)who;
    if (path_user(r, "/v1/activesync/synced/", user, sizeof(user), &e) < 0)
        goto refuse;
    if (worker_route(ap->route, c, user, strlen(user)))
        return;
    root = json_loadb(r->body ? r->body : "", r->body_len, 0, &je);
    dv = json_object_get(root, "device");
    fo = json_object_get(root, "folders");
    if (root == NULL || !json_is_string(dv) || !json_is_array(fo)) {
        http_error_bad(&e, "expected {\"device\": \"D\", \"folders\": [\"<Id>\", ...]}");
        goto refuse;
    }
    u = shard_user(ap->shard, user, 0);
    d = u ? shard_device(ap->shard, u, json_string_value(dv), 0) : NULL;
    if (d == NULL || *dev_slot(ap, d) == NULL) {
        http_error_set(&e, 404, "not-found", "no ActiveSync device of that id for this user");
        goto refuse;
    }
    json_array_foreach(fo, i, v) {
        struct as_dev *x = *dev_slot(ap, d);
        if (!json_is_string(v)) {
            http_error_bad(&e, "folders[%zu] must be a string", i);
            goto refuse;
        }
        for (uint32_t j = 0; j < d->nfolders; j++) {
            const char *f;
            if (strcmp(d->folders[j].name, json_string_value(v)) != 0)
                continue;
            f = folder_of(ap, u, d->folders[j].name);
            /* The device holds the folder as it is now: nothing to report, nothing to repeat. */
            if (f)
                d->folders[j].state = store_get(ap->store, u->id, f);
            if (x->prev && j < x->nprev)
                x->prev[j] = d->folders[j].state;
            cleared++;
        }
    }
    devices_save(ap->devices, d);
    json_decref(root);
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "cleared");
    jw_u64(&w, cleared);
    jw_obj_end(&w);
    respond_json(c, &w);
    return;
refuse:
    json_decref(root);
    conn_respond_error(c, &e);
}
