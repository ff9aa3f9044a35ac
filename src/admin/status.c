/*
 * status.c — GET /v1/admin/status and the page that polls it, GET /status;
 * see status.h and docs/status.md.
 *
 * A snapshot is one worker's figures in a fixed struct: its gauges, the
 * heartbeat hints of its devices in STATUS_BUCKETS buckets, its store's
 * health, its uptime and its ring of recent notable log lines (log.h),
 * about 8 KiB in all, sent whole in one mesh reply. Taking one walks every
 * device of the worker once (for the hints and the device count): O(devices),
 * some milliseconds at a million, paid per request, which a page polling
 * every few seconds can afford and nothing else calls.
 *
 * The page is src/admin/status.html, made a C array by the Makefile (xxd -i)
 * so that it is written and reviewed as HTML; its inline style and script
 * are allowed by their hashes, computed here once (http/csp.h).
 */
#include "admin/status.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/version.h"
#include "conn/conn.h"
#include "http/error.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "worker/mesh.h"
#include "worker/worker.h"

/* The page, from src/admin/status.html (build/gen/status_html.c). */
extern const unsigned char status_html[];
extern const unsigned int status_html_len;

/*
 * Upper bounds of the heartbeat buckets, in seconds. 60 and 1680 are the
 * defaults of [heartbeat] min and max (1680 s, 28 min, is Exchange's
 * ceiling); between them the idle timeouts NATs and firewalls commonly
 * have (2, 5, 10, 15, 20 min), where learned hints pile up. One more
 * bucket counts the hints above the last bound.
 */
static const uint32_t bounds[] = {60, 120, 300, 600, 900, 1200, 1680};
#define STATUS_BUCKETS (sizeof(bounds) / sizeof(bounds[0]) + 1)

/*
 * The events whose lines the status page shows: a user refused at the
 * session cap, a session that died unanswered (a dead peer), a network
 * whose heartbeats are alarmingly short, a stream closed for not reading.
 */
static const int notable[] = {EV_session_limit, EV_session_closed, EV_heartbeat_alert,
                              EV_stream_slow};

/* What the totals add up: every field a uint64_t, summed as an array. */
struct counts {
    uint64_t connections, pings_held, streams_held, websockets, udp_registrations, sessions, users;
    uint64_t devices;
    uint64_t events_applied;       /* a counter: the page shows its rate */
    uint64_t hints[STATUS_BUCKETS];
    uint64_t hints_none;           /* devices that hold no hint yet */
};

struct snap {
    struct counts c;
    int64_t pid;
    uint64_t uptime_ms;
    uint32_t up;
    uint32_t store_failing;
    uint32_t nrecent;
    uint32_t pad;
    struct log_recent recent[LOG_RECENT_LINES];
};

/* Bytes of a snapshot with n recent lines: what travels over the mesh. */
#define SNAP_LEN(n) (offsetof(struct snap, recent) + (size_t)(n) * sizeof(struct log_recent))

static void take_snapshot(struct status *st, struct snap *sn)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    memset(sn, 0, offsetof(struct snap, recent));
    sn->c.connections = st->metrics->connections;
    sn->c.pings_held = st->metrics->pings_held;
    sn->c.streams_held = st->metrics->streams_held;
    sn->c.websockets = st->metrics->ws_held;
    sn->c.udp_registrations = st->metrics->udp_registrations;
    sn->c.sessions = sessions_now(st->sessions);
    sn->c.users = st->shard->users.len;
    sn->c.events_applied = st->metrics->events_published;
    while (strmap_next(&st->shard->users, &pos, &key, &val)) {
        struct user *u = val;
        uint32_t dpos = 0;
        const char *dkey;
        void *dval;
        while (strmap_next(&u->devices, &dpos, &dkey, &dval)) {
            const struct device *d = dval;
            size_t b = 0;
            sn->c.devices++;
            if (d->heartbeat_hint == 0) {
                sn->c.hints_none++;
                continue;
            }
            while (b < STATUS_BUCKETS - 1 && d->heartbeat_hint > bounds[b])
                b++;
            sn->c.hints[b]++;
        }
    }
    sn->pid = (int64_t)getpid();
    sn->uptime_ms = util_now_ms() - st->started_ms;
    sn->up = 1;
    sn->store_failing = !store_healthy(st->store);
    sn->nrecent = (uint32_t)log_recent_copy(sn->recent, LOG_RECENT_LINES);
}

/* ---- the answer ------------------------------------------------------- */

struct gather {
    struct conn *conn;     /* NULL once the admin went away */
    struct status *st;
    unsigned count;
    struct snap snap[];
};

static void hints_json(struct jsonw *w, const uint64_t *hints, uint64_t none)
{
    jw_key(w, "heartbeat_hints");
    jw_obj_begin(w);
    jw_key(w, "le");
    jw_arr_begin(w);
    for (size_t i = 0; i < STATUS_BUCKETS - 1; i++)
        jw_u64(w, bounds[i]);
    jw_arr_end(w);
    jw_key(w, "counts");
    jw_arr_begin(w);
    for (size_t i = 0; i < STATUS_BUCKETS; i++)
        jw_u64(w, hints[i]);
    jw_arr_end(w);
    jw_key(w, "none");
    jw_u64(w, none);
    jw_obj_end(w);
}

static void counts_json(struct jsonw *w, const struct counts *sn)
{
    jw_key(w, "connections");
    jw_u64(w, sn->connections);
    jw_key(w, "pings_held");
    jw_u64(w, sn->pings_held);
    jw_key(w, "streams_held");
    jw_u64(w, sn->streams_held);
    jw_key(w, "websockets");
    jw_u64(w, sn->websockets);
    jw_key(w, "udp_registrations");
    jw_u64(w, sn->udp_registrations);
    jw_key(w, "sessions");
    jw_u64(w, sn->sessions);
    jw_key(w, "users");
    jw_u64(w, sn->users);
    jw_key(w, "devices");
    jw_u64(w, sn->devices);
    jw_key(w, "events_applied");
    jw_u64(w, sn->events_applied);
    hints_json(w, sn->hints, sn->hints_none);
}

static const char *event_name(unsigned id)
{
    switch (id) {
#define EVENT_NAME(num, name, desc) \
    case num:                       \
        return #name;
        NUDGE_EVENTS(EVENT_NAME)
#undef EVENT_NAME
    }
    return "?";
}

/* A line of the merged log: which worker's, and where in its snapshot. */
struct line_ref {
    const struct log_recent *r;
    unsigned worker;
};

static int by_time(const void *a, const void *b)
{
    const struct line_ref *x = a, *y = b;

    if (x->r->ts_ms != y->r->ts_ms)
        return x->r->ts_ms < y->r->ts_ms ? -1 : 1;
    if (x->worker != y->worker)
        return x->worker < y->worker ? -1 : 1;
    /* One worker's lines are in its ring's order, which qsort must keep. */
    return x->r < y->r ? -1 : x->r > y->r;
}

/* The newest STATUS_LOG_LINES lines of every worker that answered, oldest first. */
static void log_json(struct jsonw *w, const struct gather *g)
{
    size_t total = 0, n = 0, first;
    struct line_ref *refs;

    for (unsigned i = 0; i < g->count; i++)
        if (g->snap[i].up)
            total += g->snap[i].nrecent;
    refs = malloc((total ? total : 1) * sizeof(*refs));
    jw_key(w, "log");
    jw_arr_begin(w);
    if (refs == NULL)
        goto done;
    for (unsigned i = 0; i < g->count; i++)
        for (uint32_t k = 0; g->snap[i].up && k < g->snap[i].nrecent; k++)
            refs[n++] = (struct line_ref){&g->snap[i].recent[k], i};
    qsort(refs, n, sizeof(*refs), by_time);
    first = n > STATUS_LOG_LINES ? n - STATUS_LOG_LINES : 0;
    for (size_t i = first; i < n; i++) {
        const struct log_recent *r = refs[i].r;
        time_t secs = (time_t)(r->ts_ms / 1000);
        struct tm tm;
        char ts[40];
        gmtime_r(&secs, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(ts + strlen(ts), sizeof(ts) - strlen(ts), ".%03dZ", (int)(r->ts_ms % 1000));
        jw_obj_begin(w);
        jw_key(w, "time");
        jw_str(w, ts);
        jw_key(w, "ts_ms");
        jw_u64(w, (uint64_t)r->ts_ms);
        jw_key(w, "worker");
        jw_u64(w, refs[i].worker);
        jw_key(w, "level");
        jw_str(w, log_level_name((enum log_level)r->level));
        jw_key(w, "event");
        jw_u64(w, r->event);
        jw_key(w, "name");
        jw_str(w, event_name(r->event));
        jw_key(w, "line");
        /* NUL-terminated and valid UTF-8 by the ring's copy (log.h); re-terminated after the mesh. */
        jw_strn(w, r->text, strnlen(r->text, sizeof(r->text)));
        jw_obj_end(w);
    }
done:
    jw_arr_end(w);
    free(refs);
}

static void answer(struct gather *g)
{
    struct counts total;
    uint64_t uptime_ms = 0;
    unsigned failing = 0;
    struct jsonw w;
    struct timeval tv;
    size_t len;
    char *body;

    memset(&total, 0, sizeof(total));
    gettimeofday(&tv, NULL);
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "version");
    jw_str(&w, NUDGE_VERSION);
    jw_key(&w, "time_ms");
    jw_u64(&w, (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000);
    jw_key(&w, "workers");
    jw_arr_begin(&w);
    for (unsigned i = 0; i < g->count; i++) {
        const struct snap *sn = &g->snap[i];
        jw_obj_begin(&w);
        jw_key(&w, "worker");
        jw_u64(&w, i);
        jw_key(&w, "up");
        jw_bool(&w, (int)sn->up);
        if (sn->up) {
            jw_key(&w, "pid");
            jw_u64(&w, (uint64_t)sn->pid);
            jw_key(&w, "uptime_s");
            jw_u64(&w, sn->uptime_ms / 1000);
            jw_key(&w, "store");
            jw_str(&w, sn->store_failing ? "failing" : "ok");
            counts_json(&w, &sn->c);
            for (size_t k = 0; k < sizeof(total) / sizeof(uint64_t); k++)
                ((uint64_t *)&total)[k] += ((const uint64_t *)&sn->c)[k];
            if (sn->uptime_ms > uptime_ms)
                uptime_ms = sn->uptime_ms;
            failing += sn->store_failing;
        }
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_key(&w, "total");
    jw_obj_begin(&w);
    counts_json(&w, &total);
    jw_obj_end(&w);
    /* The longest-running worker's: nudged's own unless every worker restarted since. */
    jw_key(&w, "uptime_s");
    jw_u64(&w, uptime_ms / 1000);
    jw_key(&w, "store");
    jw_str(&w, failing ? "failing" : "ok");
    log_json(&w, g);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(g->conn, 200, "Cache-Control: no-store\r\n", body, len);
    free(body);
}

static void on_gathered(void *arg)
{
    struct gather *g = arg;

    if (g->conn)
        answer(g);
    free(g);
}

static void on_snapshot(void *arg, void *call_arg, unsigned from, const char *p, size_t len,
                        int status)
{
    struct gather *g = arg;
    struct snap *sn;
    uint32_t n;

    (void)call_arg;
    if (status != 0 || from >= g->count || len < SNAP_LEN(0))
        return;
    sn = &g->snap[from];
    memcpy(&n, p + offsetof(struct snap, nrecent), sizeof(n));
    if (n > LOG_RECENT_LINES || len != SNAP_LEN(n))
        return;
    memcpy(sn, p, len);
    for (uint32_t i = 0; i < n; i++)
        sn->recent[i].text[LOG_RECENT_TEXT - 1] = '\0';
}

void status_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct status *st = arg;
    unsigned count = st->wk ? st->wk->count : 1;
    struct gather *g = calloc(1, sizeof(*g) + count * sizeof(struct snap));
    struct mesh_gather *mg;

    (void)r;
    (void)who;
    if (g == NULL) {
        struct http_error e;
        http_error_set(&e, 503, "unavailable", "out of memory");
        conn_respond_error(c, &e);
        return;
    }
    g->st = st;
    g->count = count;
    g->conn = c;
    take_snapshot(st, &g->snap[st->wk ? st->wk->index : 0]);
    conn_wait(c, &g->conn);
    mg = mesh_gather_new(st->mesh, on_snapshot, on_gathered, g);
    /* A worker that cannot be asked (restarting) is shown as down. */
    mesh_gather_all(mg, STATUS_MSG_SNAPSHOT, NULL, 0);
    mesh_gather_release(mg);
}

/* STATUS_MSG_SNAPSHOT: replies with this worker's snapshot. */
static void on_snapshot_msg(void *arg, unsigned from, uint32_t id, const char *p, size_t len,
                            int fd)
{
    struct status *st = arg;
    struct snap *sn = malloc(sizeof(*sn));
    struct iovec iov;
    size_t max;

    (void)p;
    (void)len;
    if (fd >= 0)
        close(fd);
    if (sn == NULL)
        return; /* the asker times out and shows this worker as down */
    take_snapshot(st, sn);
    /* A mesh whose sockets take less than a whole ring gets the newest lines that fit. */
    max = mesh_max_payload(st->mesh);
    while (sn->nrecent > 0 && SNAP_LEN(sn->nrecent) > max) {
        memmove(sn->recent, sn->recent + 1, (sn->nrecent - 1) * sizeof(sn->recent[0]));
        sn->nrecent--;
    }
    iov = (struct iovec){.iov_base = sn, .iov_len = SNAP_LEN(sn->nrecent)};
    mesh_reply(st->mesh, from, id, 0, &iov, 1);
    free(sn);
}

/* ---- the page --------------------------------------------------------- */

void status_page_handle(void *arg, struct conn *c, struct http_req *r,
                        const struct principal *who)
{
    struct status *st = arg;
    char extra[HTTP_CSP_MAX + 256];

    (void)r;
    (void)who;
    /*
     * no-cache: a browser may keep the page but asks again (an upgrade
     * changes it); nosniff and no-referrer because the page handles an
     * admin token, which must not leak into another site's logs.
     */
    snprintf(extra, sizeof(extra),
             "%sCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
             "Referrer-Policy: no-referrer\r\n",
             st->csp);
    conn_respond_typed(c, 200, "text/html; charset=utf-8", extra, (const char *)status_html,
                       status_html_len);
}

int status_init(struct status *st, struct metrics *metrics, struct sessions *sessions,
                struct shard *shard, struct store *store, const struct worker_ctx *wk,
                struct mesh *mesh, char *err, size_t errlen)
{
    st->metrics = metrics;
    st->sessions = sessions;
    st->shard = shard;
    st->store = store;
    st->wk = wk;
    st->mesh = mesh;
    st->started_ms = util_now_ms();
    if (http_csp_inline((const char *)status_html, status_html_len, st->csp, sizeof(st->csp)) <
        0) {
        snprintf(err, errlen, "the status page's inline blocks cannot be hashed (a broken build)");
        return -1;
    }
    log_recent_keep(notable, sizeof(notable) / sizeof(notable[0]));
    if (mesh)
        mesh_on(mesh, STATUS_MSG_SNAPSHOT, on_snapshot_msg, st);
    return 0;
}
