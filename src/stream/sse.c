/*
 * sse.c — GET /v1/stream: a user's folder changes as Server-Sent Events
 * (WHATWG HTML "Server-sent events"), with the semantics of JMAP's
 * EventSource push (RFC 8620 7.3). docs/streams.md.
 *
 *   GET /v1/stream?types=INBOX,Sent&closeafter=no&ping=60&device=tab1
 *
 *   : nudge
 *   retry: 7341
 *
 *   event: state
 *   id: 1:INBOX=17,Sent=3
 *   data: {"@type":"StateChange","changed":{"alice":{"INBOX":"17","Sent":"3"}}}
 *
 * No event history is kept. The id of a state event lists the states the
 * client has after it; an EventSource sends it back as Last-Event-ID when
 * it reconnects, and the stream starts with one event naming every folder
 * whose state moved since (all of them when the id is missing or cannot be
 * read). Folder states outlive a restart in the SQLite store, so resuming
 * works across one too.
 *
 * A stream is a session of its device, as a held ping is: the per-user
 * cap, supersede, reaping and the admin list are session/session.c's. The
 * states last sent live in the device's folder list (struct device
 * folders), so a stream costs one small struct sse_dev beside the
 * connection. A stream without a device= gets a device of its own, made
 * for it and removed when it ends.
 *
 * Output: each event is offered to the kernel at once (conn_stream_send);
 * only what it does not take is kept. A stream whose client does not read
 * is closed (event 1900) when its backlog passes [stream] max_unsent, or
 * stays over soft_unsent for soft_seconds; it resumes with Last-Event-ID
 * and loses nothing, because the id is the truth, not the backlog.
 */
#include "stream/sse.h"

#include <errno.h>
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
#include "session/heartbeat.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "stream/state_id.h"
#include "stream/watch.h"

/* The pseudo-type in types= that asks for publishers' metadata as "meta" events. */
#define META_TYPE "@meta"
/* A state not known to the client: any folder with it is reported. */
#define UNKNOWN STATE_ID_UNKNOWN
/* Appends a string literal (its length counted by the compiler). */
#define RAW(w, lit) jw_raw((w), "" lit, sizeof(lit) - 1)


/* What a device with an open stream has beside its record (its slot points to it). */
struct sse_dev {
    uint64_t soft_since;     /* ms the backlog went over soft_unsent; 0: it is not */
    uint16_t ping;           /* s between ping events; 0: none */
    uint8_t all;             /* types=*: every folder of the user, new ones too */
    uint8_t closeafter;      /* closeafter=state: end after the first state event */
    uint8_t meta;            /* types named @meta */
    uint8_t anonymous;       /* its device was made for this stream: removed at its end */
};

static struct sse_dev **dev_slot(const struct sse *s, const struct device *d)
{
    return shard_slot(d, s->dslot);
}

/* ---- sending ------------------------------------------------------------ */

/* The jittered retry: field, in ms: [stream] retry to twice it. */
static uint64_t retry_ms(struct sse *s)
{
    uint64_t base = (uint64_t)s->cfg->stream_retry * 1000, n = ++s->draws;

    return base + util_hash(s->seed, &n, sizeof(n)) % (base + 1);
}

/* Closes c when its client does not read (watch_too_slow). 1: closed. */
static int too_slow(struct sse *s, struct conn *c, struct device *d)
{
    return watch_too_slow(s->cfg, s->metrics, c, d, &(*dev_slot(s, d))->soft_since);
}

/* The next ping falls 'ping' seconds after the last event sent (RFC 8620). */
static void rearm(struct sse *s, struct conn *c, struct device *d)
{
    struct sse_dev *x = *dev_slot(s, d);

    conn_set_deadline(c, x->ping ? util_now_ms() + (uint64_t)x->ping * 1000 : 0);
}


/*
 * Sends one state event naming the folders of d whose state moved since the
 * client last heard (and records that it has them now). Returns how many
 * were named (0: nothing sent), or -1 when the connection closed on the
 * way (its closed op ran: d may be gone).
 */
static int send_changes(struct sse *s, struct conn *c, struct device *d)
{
    struct jsonw w;
    size_t len;
    char *body;
    int n, rc;

    if ((n = watch_changes(s->store, d, &w, "event: state\ndata: ")) == 0)
        return 0;
    RAW(&w, "}\nid: ");
    watch_state_id(d, &w);
    RAW(&w, "\n\n");
    body = jw_take(&w, &len);
    s->metrics->stream_events++;
    rc = conn_stream_send(c, body, len);
    free(body);
    return rc < 0 ? -1 : n;
}

/*
 * Sends the publishers' metadata of the user's events in e[0..n) as "meta"
 * events (no id: a hint, and never in the way of resuming): only folders
 * the stream watches, only this user's, and only when the stream asked.
 * 0, or -1 when the connection closed on the way (d may be gone).
 */
static int send_meta(struct conn *c, struct device *d, const struct store_event *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct jsonw w;
        size_t len, mlen;
        char *body;
        int watched = 0, rc;

        if (e[i].meta == NULL || strcmp(e[i].user, d->user->id) != 0)
            continue;
        for (uint32_t k = 0; k < d->nfolders && !watched; k++)
            watched = strcmp(d->folders[k].name, e[i].folder) == 0;
        if (!watched)
            continue;
        jw_init(&w);
        RAW(&w, "event: meta\ndata: ");
        jw_obj_begin(&w);
        jw_key(&w, "folder");
        jw_str(&w, e[i].folder);
        jw_key(&w, "state");
        jw_u64_str(&w, e[i].state);
        if (e[i].type) {
            jw_key(&w, "type");
            jw_str(&w, e[i].type);
        }
        /* The publisher's fields, as it sent them: an object whose members follow ours. */
        mlen = strlen(e[i].meta);
        if (mlen > 2 && e[i].meta[0] == '{') {
            RAW(&w, ",");
            jw_raw(&w, e[i].meta + 1, mlen - 2);
        }
        jw_obj_end(&w);
        RAW(&w, "\n\n");
        body = jw_take(&w, &len);
        rc = conn_stream_send(c, body, len);
        free(body);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ---- the holder -------------------------------------------------------- */

/* A stream that only says when to come back: nothing holds it, nothing to tell. */
static const struct conn_holder come_back_holder = {.name = "stream"};

/* Frees what the stream kept; the device too when it was made for the stream. */
static void forget(struct sse *s, struct conn *c, struct device *d)
{
    struct sse_dev *x = *dev_slot(s, d);
    int anonymous = x && x->anonymous;

    if (session_of(s->sessions, d)->held == c) {
        session_release(s->sessions, d);
        s->metrics->streams_held--;
    }
    free(x);
    *dev_slot(s, d) = NULL;
    if (anonymous && !session_present(s->sessions, d)) {
        hb_forget(s->hb, d);
        shard_device_remove(s->shard, d);
    }
}

/* The ping interval passed with no event: a ping event (RFC 8620), and the next one armed. */
static void on_ping_due(void *ctx, struct conn *c, void *arg)
{
    struct sse *s = ctx;
    struct device *d = arg;
    struct sse_dev *x = *dev_slot(s, d);
    char ev[64];
    int n;

    if (too_slow(s, c, d))
        return;
    n = snprintf(ev, sizeof(ev), "event: ping\ndata: {\"interval\":%u}\n\n", x->ping);
    if (conn_stream_send(c, ev, (size_t)n) < 0)
        return;
    rearm(s, c, d);
}

static void on_closed(void *ctx, struct conn *c, void *arg, enum conn_why why, const char *text)
{
    struct sse *s = ctx;
    struct device *d = arg;

    if (!conn_stopping(c) && session_of(s->sessions, d)->held == c)
        session_stream_closed(s->sessions, d, why, text);
    forget(s, c, d);
}

/*
 * Ends d's stream on c with a retry: the client comes back (or moves on)
 * after it. The stream is forgotten first and c handed to a holder that
 * knows nothing, so that a write failing now cannot reach d, which may be gone.
 */
static void finish(struct sse *s, struct conn *c, struct device *d, uint64_t ms)
{
    char ev[48];
    int n = snprintf(ev, sizeof(ev), "retry: %llu\n\n", (unsigned long long)ms);

    forget(s, c, d);
    conn_hold(c, &come_back_holder, NULL, 0);
    if (conn_stream_send(c, ev, (size_t)n) == 0)
        conn_stream_end(c);
}

/* nudged stops: a 200 that sends retry: and ends, never a 503 an EventSource gives up on. */
static void on_shutdown(void *ctx, struct conn *c, void *arg)
{
    struct sse *s = ctx;
    struct device *d = arg;

    /* Spread over the restart: the server is back in shutdown_retry_after seconds or so. */
    finish(s, c, d, (uint64_t)s->cfg->shutdown_retry_after * 1000 + retry_ms(s));
}

/* A newer stream or ping of the same device took over: this one ends. */
static void on_superseded(void *ctx, struct conn *c, void *arg)
{
    struct sse *s = ctx;
    struct device *d = arg;
    char q1[300], q2[300];

    LOG(LOG_INFO, ping_superseded, "user=%s device=%s stream=1", log_q(q1, sizeof(q1), d->user->id),
        log_q(q2, sizeof(q2), d->id));
    finish(s, c, d, retry_ms(s));
}

/*
 * Sends what changed for d's stream on c (after e[0..n), when known).
 * Returns 1 when an event went and the ping timer restarted, 0 when
 * nothing did, -1 when the stream ended (d may be gone).
 */
static int update(struct sse *s, struct conn *c, struct device *d, const struct store_event *e,
                  size_t n)
{
    struct sse_dev *x = *dev_slot(s, d);

    int sent;

    if (x->all)
        watch_new_folders(s->store, d, s->cfg->ping_max_folders);
    if (x->meta && send_meta(c, d, e, n) < 0)
        return -1;
    if ((sent = send_changes(s, c, d)) <= 0)
        return sent;
    if (too_slow(s, c, d))
        return -1;
    if (x->closeafter) {
        finish(s, c, d, retry_ms(s));
        return -1;
    }
    rearm(s, c, d);
    return 1;
}

/* A folder of the user changed (push/ping.c's wake). */
static void on_changed(void *ctx, struct conn *c, void *arg, const struct store_event *e, size_t n)
{
    update(ctx, c, arg, e, n);
}

void sse_init(struct sse *s, const struct config *cfg, struct store *store, struct shard *sh,
              struct metrics *metrics, struct sessions *sessions, struct heartbeat *hb)
{
    s->cfg = cfg;
    s->store = store;
    s->shard = sh;
    s->metrics = metrics;
    s->sessions = sessions;
    s->hb = hb;
    s->rate = NULL;
    s->seed = util_now_ms() ^ (uint64_t)(uintptr_t)s;
    s->dslot = shard_device_slot(sh, sizeof(struct sse_dev *));
    s->holder = (struct conn_holder){
        .expired = on_ping_due,
        .closed = on_closed,
        .shutdown = on_shutdown,
        .changed = on_changed,
        .superseded = on_superseded,
        .ctx = s,
        .name = "stream",
    };
}

void sse_free(struct sse *s)
{
    shard_drop_device_slots(s->shard, s->dslot, free);
}

/* ---- the request -------------------------------------------------------- */

/* What the query and headers ask for. */
struct sse_params {
    struct watch_list types;  /* named folders (borrowed from 'buf') */
    int all, meta, closeafter;
    unsigned ping;
    char device[DEVICE_ID_MAX * 3 + 1];
    char *buf;                 /* the decoded types= value */
};

static int parse_params(const struct config *cfg, const struct http_req *r,
                        const struct principal *who, struct sse_params *sp, struct http_error *e)
{
    char v[16];
    const char *raw, *why;
    long n;

    sp->types.max = cfg->ping_max_folders;
    sp->ping = watch_default_ping(cfg);
    /* types: decoded first (clients send %2C and %2A as well as , and *), then split. */
    n = r->query ? util_query_raw(r->query, r->query_len, "types", &raw) : -ENOENT;
    if (n < 0) {
        sp->all = 1;
    } else {
        sp->buf = xmalloc((size_t)n + 1);
        memcpy(sp->buf, raw, (size_t)n);
        sp->buf[n] = '\0';
        n = util_url_decode(sp->buf, (size_t)n);
        if (n < 0)
            return http_error_bad(e, "types is badly percent-encoded");
        sp->buf[n] = '\0';
        for (char *p = sp->buf, *next; p; p = next) {
            next = strchr(p, ',');
            if (next)
                *next++ = '\0';
            if (*p == '\0')
                continue;
            if (strcmp(p, "*") == 0) {
                sp->all = 1;
            } else if (strcmp(p, META_TYPE) == 0) {
                sp->meta = 1;
            } else if ((why = check_folder_name(p, strlen(p))) != NULL) {
                return http_error_bad(e, "types: folder %.64s %s", p, why);
            } else if (sp->types.n == sp->types.max) {
                return http_error_bad(e, "types names more than [ping] max_folders (%u) folders",
                                      cfg->ping_max_folders);
            } else {
                watch_list_add(&sp->types, p, UNKNOWN);
            }
        }
        if (!sp->all && sp->types.n == 0)
            return http_error_bad(e, "types names no folder: give folder names, or * for all");
    }
    n = r->query ? util_query_param(r->query, r->query_len, "closeafter", v, sizeof(v)) : -ENOENT;
    if (n >= 0 && strcmp(v, "state") == 0)
        sp->closeafter = 1;
    else if (n == -EINVAL || (n >= 0 && strcmp(v, "no") != 0))
        return http_error_bad(e, "closeafter must be state or no");
    n = r->query ? util_query_param(r->query, r->query_len, "ping", v, sizeof(v)) : -ENOENT;
    if (n >= 0) {
        char *end;
        unsigned long p;
        errno = 0;
        p = strtoul(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0)
            return http_error_bad(e, "ping must be a whole number of seconds");
        sp->ping = watch_clamp_ping(cfg, p);
    } else if (n == -EINVAL) {
        return http_error_bad(e, "ping must be a whole number of seconds");
    }
    return watch_device_param(r, who, sp->device, sizeof(sp->device), e);
}


int sse_is_stream(const struct http_req *r)
{
    static const char path[] = "/v1/stream";

    return r && r->method == HTTP_GET && r->path_len == sizeof(path) - 1 &&
           memcmp(r->path, path, sizeof(path) - 1) == 0;
}

void sse_come_back(struct conn *c, unsigned retry_s)
{
    static uint64_t draws;
    uint64_t base = (uint64_t)retry_s * 1000, n = ++draws;
    uint64_t ms = base + util_hash(util_now_ms(), &n, sizeof(n)) % (base + 1);
    char ev[48];
    int len = snprintf(ev, sizeof(ev), ": nudge\nretry: %llu\n\n", (unsigned long long)ms);

    conn_stream_begin(c, 200, "text/event-stream", "Cache-Control: no-cache\r\n",
                      &come_back_holder, NULL, 0);
    if (conn_stream_send(c, ev, (size_t)len) == 0)
        conn_stream_end(c);
}

/* The stream must not start: 204 for good when streams are off. */
static int refused_for_good(const struct config *cfg, struct conn *c)
{
    if (strcmp(cfg->stream_enabled, "no") != 0)
        return 0;
    conn_respond(c, 204, "Cache-Control: no-store\r\n", NULL, 0);
    return 1;
}

void sse_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct sse *s = arg;
    const struct config *cfg = s->cfg;
    struct sse_params sp = {0};
    const char *last;
    struct http_error e;
    struct session_dev *sd;
    struct sse_dev *x;
    struct user *u;
    struct device *d;
    int created = 0;
    unsigned wait;
    char extra[128];

    if (refused_for_good(cfg, c))
        return;
    if (conn_stopping(c)) {
        sse_come_back(c, cfg->shutdown_retry_after);
        return;
    }
    if (parse_params(cfg, r, who, &sp, &e) < 0)
        goto refuse;
    u = shard_user(s->shard, who->subject, 1);
    if (sp.device[0]) {
        d = shard_device(s->shard, u, sp.device, 0);
        /*
         * Over [ping] max_per_minute: told to come back when the minute
         * ends. Not 429: an EventSource given an error stops for good.
         */
        if (d && s->rate && (wait = pingrate_count(s->rate, d, "stream")) > 0) {
            sse_come_back(c, wait);
            return;
        }
        if (d == NULL) {
            d = shard_device(s->shard, u, sp.device, 1);
            created = 1;
        }
    } else {
        d = watch_anonymous_device(s->shard, u, s->seed, &s->draws);
        created = 1;
    }
    sd = session_of(s->sessions, d);
    /* The device's older session ends in its own words (a ping "superseded", a stream ends). */
    session_supersede(s->sessions, d);
    if (session_admit(s->sessions, u, d, &e) < 0) {
        if (created) {
            hb_forget(s->hb, d);
            shard_device_remove(s->shard, d);
        }
        goto refuse;
    }
    /* What the stream watches, with what the client says it has. */
    if (sp.all)
        store_list(s->store, u->id, watch_list_on_folder, &sp.types);
    last = http_req_header(r, HDR_LAST_EVENT_ID);
    if (last && last[0])
        state_id_read(last, sp.types.f, sp.types.n);
    shard_set_folders(d, sp.types.f, sp.types.n);
    x = xcalloc(1, sizeof(*x));
    x->ping = (uint16_t)sp.ping;
    x->all = (uint8_t)sp.all;
    x->meta = (uint8_t)sp.meta;
    x->closeafter = (uint8_t)sp.closeafter;
    x->anonymous = (uint8_t)(sp.device[0] == '\0');
    *dev_slot(s, d) = x;
    sd->last_request = sd->held_since = util_now_ms();
    session_hold(s->sessions, d, c);
    s->metrics->streams_held++;
    s->metrics->streams_opened++;
    /* Never compressed, never buffered by a proxy (nginx honours X-Accel-Buffering). */
    snprintf(extra, sizeof(extra), "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    conn_stream_begin(c, 200, "text/event-stream", extra, &s->holder, d, 0);
    {
        /* The first bytes at once: a comment, and when to come back after a drop. */
        char head[64];
        int n = snprintf(head, sizeof(head), ": nudge\nretry: %llu\n\n",
                         (unsigned long long)retry_ms(s));
        if (conn_stream_send(c, head, (size_t)n) < 0)
            goto done; /* closed: its closed op forgot the stream */
    }
    /* Everything the client missed, or everything when it said nothing readable. */
    if (update(s, c, d, NULL, 0) == 0)
        rearm(s, c, d);
    goto done;
refuse:
    conn_respond_error(c, &e);
done:
    free(sp.types.f);
    free(sp.buf);
}
