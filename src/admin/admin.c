/*
 * admin.c — GET /healthz, GET /metrics (Prometheus text format 0.0.4) and
 * GET /v1/admin/workers.
 *
 * With workers, /metrics and /v1/admin/workers gather every worker's
 * counters over the mesh (a snapshot each, a few hundred bytes) and show
 * the totals, then the per-worker figures; a worker that does not answer
 * (restarting) is shown as down and left out of the totals.
 */
#include "admin/admin.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/jsonw.h"
#include "common/metrics.h"
#include "conn/conn.h"
#include "http/error.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "worker/mesh.h"
#include "worker/worker.h"

void admin_healthz(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    (void)arg;
    (void)r;
    (void)who;
    CONN_RESPOND_LITERAL(c, 200, NULL, "{\"status\":\"ok\"}");
}

struct text {
    char *buf;
    size_t len, cap;
};

static void unavailable(struct conn *c)
{
    struct http_error e;

    http_error_set(&e, 503, "unavailable", "out of memory");
    conn_respond_error(c, &e);
}

static void emit(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len)
            break;
        t->cap *= 2;
        t->buf = realloc(t->buf, t->cap);
        if (t->buf == NULL)
            abort();
    }
    t->len += (size_t)n;
}

static void metric(struct text *t, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    emit(t, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name, v);
}

/*
 * Every counter of m, as Prometheus text appended to t. store_failing: how
 * many workers' stores are failing (0 or 1 without workers).
 */
static void render_totals(struct text *t, const struct metrics *m, uint64_t sessions,
                          uint64_t store_failing)
{
    metric(t, "nudge_connections", "gauge", "Open client connections.", m->connections);
    metric(t, "nudge_connections_accepted_total", "counter", "Connections accepted.",
           m->connections_total);
    metric(t, "nudge_connections_refused_total", "counter",
           "Connections refused for [server] max_per_ip.", m->connections_refused);
    metric(t, "nudge_sessions", "gauge", "Sessions now (held pings and UDP registrations).",
           sessions);
    metric(t, "nudge_sessions_refused_total", "counter",
           "Sessions refused at [sessions] per_user_limit (429).", m->sessions_refused);
    metric(t, "nudge_sessions_reaped_total", "counter",
           "Dead sessions closed to make room under the per-user limit.", m->sessions_reaped);
    metric(t, "nudge_requests_total", "counter", "HTTP requests received.", m->requests_total);
    metric(t, "nudge_responses_4xx_total", "counter", "Answers with a 4xx status.",
           m->responses_4xx);
    metric(t, "nudge_responses_5xx_total", "counter", "Answers with a 5xx status.",
           m->responses_5xx);
    metric(t, "nudge_auth_failures_total", "counter", "Requests refused with 401.",
           m->auth_failures);
    metric(t, "nudge_bytes_received_total", "counter", "Bytes read from clients.",
           m->bytes_received);
    metric(t, "nudge_bytes_sent_total", "counter", "Bytes written to clients.", m->bytes_sent);
    metric(t, "nudge_pings_held", "gauge", "Pings held now.", m->pings_held);
    metric(t, "nudge_streams_held", "gauge", "Event streams open now.", m->streams_held);
    metric(t, "nudge_streams_opened_total", "counter", "Event streams opened.", m->streams_opened);
    metric(t, "nudge_stream_events_total", "counter", "State events sent on streams.",
           m->stream_events);
    metric(t, "nudge_streams_slow_total", "counter",
           "Streams closed because their client did not read (event 1900).", m->streams_slow);
    metric(t, "nudge_tls_handshakes_total", "counter", "TLS handshakes completed.",
           m->tls_handshakes);
    metric(t, "nudge_tls_failures_total", "counter",
           "TLS handshakes that failed and records refused (event 1150).", m->tls_failures);
    metric(t, "nudge_ws_held", "gauge", "WebSockets (JMAP push, /v1/ws) open now.", m->ws_held);
    metric(t, "nudge_ws_opened_total", "counter", "WebSockets opened.", m->ws_opened);
    metric(t, "nudge_ws_messages_total", "counter", "Text messages from WebSocket clients.",
           m->ws_messages);
    metric(t, "nudge_ws_request_errors_total", "counter",
           "Client messages answered with a RequestError (not JSON, unknown @type, ...).",
           m->ws_request_errors);
    emit(t, "# HELP nudge_pings_answered_total Pings answered, by outcome.\n"
             "# TYPE nudge_pings_answered_total counter\n");
    for (int i = 0; i < PING_OUTCOME_COUNT; i++)
        emit(t, "nudge_pings_answered_total{status=\"%s\"} %" PRIu64 "\n", ping_outcome_names[i],
             m->pings_answered[i]);
    metric(t, "nudge_events_published_total", "counter", "Events applied from publishers.",
           m->events_published);
    metric(t, "nudge_publish_batches_total", "counter", "Publish requests applied.",
           m->publish_batches);
    metric(t, "nudge_state_reads_total", "counter", "GET /v1/state requests.", m->state_reads);
    metric(t, "nudge_ingest_events_total", "counter",
           "Deliveries from Dovecot's push driver applied (PUT /v1/ingest/dovecot).",
           m->ingest_events);
    metric(t, "nudge_ingest_duplicates_total", "counter",
           "Retried deliveries answered with the first one's state, without a bump.",
           m->ingest_duplicates);
    metric(t, "nudge_udp_registrations", "gauge", "UDP registrations now.", m->udp_registrations);
    emit(t, "# HELP nudge_udp_datagrams_sent_total UDP datagrams sent, by kind.\n"
             "# TYPE nudge_udp_datagrams_sent_total counter\n");
    for (int i = 0; i < UDP_SENT_COUNT; i++)
        emit(t, "nudge_udp_datagrams_sent_total{kind=\"%s\"} %" PRIu64 "\n", udp_sent_names[i],
             m->udp_sent[i]);
    metric(t, "nudge_udp_acks_total", "counter", "Ack datagrams accepted.", m->udp_acks);
    emit(t, "# HELP nudge_udp_datagrams_rejected_total Datagrams received and dropped, by reason.\n"
             "# TYPE nudge_udp_datagrams_rejected_total counter\n");
    for (int i = 0; i < UDP_REJECT_COUNT; i++)
        emit(t, "nudge_udp_datagrams_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
             udp_reject_names[i], m->udp_rejected[i]);
    metric(t, "nudge_udp_unreachable_total", "counter",
           "ICMP destination-unreachable errors for datagrams sent.", m->udp_unreachable);
    metric(t, "nudge_udp_send_errors_total", "counter", "Datagrams the socket refused to send.",
           m->udp_send_errors);
    metric(t, "nudge_udp_resends_exhausted_total", "counter",
           "Changes resent [udp] max_resends times without the device catching up.",
           m->udp_resends_exhausted);
    metric(t, "nudge_logins_total", "counter", "Tokens handed out by POST /v1/login.", m->logins);
    emit(t, "# HELP nudge_password_checks_total Sign-ins with a password, by result.\n"
             "# TYPE nudge_password_checks_total counter\n");
    for (int i = 0; i < PASSWORD_RESULT_COUNT; i++)
        emit(t, "nudge_password_checks_total{result=\"%s\"} %" PRIu64 "\n",
             password_result_names[i], m->password_checks[i]);
    metric(t, "nudge_password_cache_hits_total", "counter",
           "Password sign-ins answered from the cache of verified passwords.",
           m->password_cache_hits);
    metric(t, "nudge_password_backend_requests_total", "counter",
           "Passwords asked of the backend ([auth] passwords).", m->password_backend_requests);
    metric(t, "nudge_signins_limited_total", "counter",
           "Password sign-ins refused 429 for too many failures.", m->signins_limited);
    metric(t, "nudge_tokens_revoked_total", "counter", "Users whose tokens an admin revoked.",
           m->tokens_revoked);
    metric(t, "nudge_store_failing", "gauge",
           "Stores whose last write failed (publishes 503, ActiveSync Status 8) until one commits.",
           store_failing);
}

/* ---- gathering over the workers ------------------------------------- */

struct snapshot {
    struct metrics m;
    uint64_t sessions;
    uint64_t users;
    int64_t pid;
    uint32_t up;
    uint32_t store_failing;  /* 1: the worker's last write round failed */
};

/* A scrape waiting for every worker's snapshot. */
struct gather {
    struct conn *conn;     /* NULL once the scraper went away */
    struct admin *a;
    int json;              /* /v1/admin/workers rather than /metrics */
    struct snapshot snap[];
};

static void take_snapshot(struct admin *a, struct snapshot *sn)
{
    memset(sn, 0, sizeof(*sn));
    sn->m = *a->metrics;
    sn->sessions = sessions_now(a->sessions);
    sn->users = a->shard->users.len;
    sn->pid = (int64_t)getpid();
    sn->up = 1;
    sn->store_failing = !store_healthy(a->store);
}

static void sum(struct metrics *total, const struct metrics *m)
{
    /* Every field is a uint64_t counter or gauge (metrics.h): add them as an array. */
    uint64_t *t = (uint64_t *)total;
    const uint64_t *v = (const uint64_t *)m;

    for (size_t i = 0; i < sizeof(*m) / sizeof(uint64_t); i++)
        t[i] += v[i];
}

static void per_worker(struct text *t, const struct gather *g, const char *name, const char *type,
                       const char *help, size_t offset)
{
    emit(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (unsigned i = 0; i < g->a->wk->count; i++) {
        const struct snapshot *sn = &g->snap[i];
        uint64_t v;
        if (!sn->up)
            continue;
        memcpy(&v, (const char *)sn + offset, sizeof(v));
        emit(t, "%s{worker=\"%u\"} %" PRIu64 "\n", name, i, v);
    }
}

static void answer_metrics(struct gather *g)
{
    struct text t = {.buf = malloc(8192), .len = 0, .cap = 8192};
    struct metrics total;
    uint64_t sessions = 0, store_failing = 0;
    unsigned count = g->a->wk->count;

    if (t.buf == NULL) {
        unavailable(g->conn);
        return;
    }
    memset(&total, 0, sizeof(total));
    for (unsigned i = 0; i < count; i++)
        if (g->snap[i].up) {
            sum(&total, &g->snap[i].m);
            sessions += g->snap[i].sessions;
            store_failing += g->snap[i].store_failing;
        }
    render_totals(&t, &total, sessions, store_failing);
    metric(&t, "nudge_workers", "gauge", "Worker processes configured ([server] workers).", count);
    emit(&t, "# HELP nudge_worker_up Whether the worker answered this scrape.\n"
             "# TYPE nudge_worker_up gauge\n");
    for (unsigned i = 0; i < count; i++)
        emit(&t, "nudge_worker_up{worker=\"%u\"} %u\n", i, g->snap[i].up);
    emit(&t, "# HELP nudge_worker_store_failing Whether the worker's last store write failed.\n"
             "# TYPE nudge_worker_store_failing gauge\n");
    for (unsigned i = 0; i < count; i++)
        if (g->snap[i].up)
            emit(&t, "nudge_worker_store_failing{worker=\"%u\"} %u\n", i,
                 g->snap[i].store_failing);
    per_worker(&t, g, "nudge_worker_connections", "gauge", "Open client connections, by worker.",
               offsetof(struct snapshot, m.connections));
    per_worker(&t, g, "nudge_worker_pings_held", "gauge", "Pings held now, by worker.",
               offsetof(struct snapshot, m.pings_held));
    per_worker(&t, g, "nudge_worker_sessions", "gauge", "Sessions now, by worker.",
               offsetof(struct snapshot, sessions));
    per_worker(&t, g, "nudge_worker_users", "gauge", "Users the worker keeps in memory.",
               offsetof(struct snapshot, users));
    per_worker(&t, g, "nudge_worker_udp_registrations", "gauge",
               "UDP registrations now, by worker.", offsetof(struct snapshot, m.udp_registrations));
    per_worker(&t, g, "nudge_worker_events_applied_total", "counter",
               "Events applied to the worker's users (its own publishes and others').",
               offsetof(struct snapshot, m.events_published));
    per_worker(&t, g, "nudge_worker_handoffs_sent_total", "counter",
               "Connections passed to the worker owning their user.",
               offsetof(struct snapshot, m.handoffs_sent));
    per_worker(&t, g, "nudge_worker_handoffs_received_total", "counter",
               "Connections received from other workers.",
               offsetof(struct snapshot, m.handoffs_received));
    per_worker(&t, g, "nudge_worker_mesh_batches_total", "counter",
               "Packets to other workers that carried several messages, by sender.",
               offsetof(struct snapshot, m.mesh_batches));
    per_worker(&t, g, "nudge_worker_mesh_batched_messages_total", "counter",
               "Messages to other workers that went in those packets, by sender.",
               offsetof(struct snapshot, m.mesh_batched));
    conn_respond_typed(g->conn, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, t.buf, t.len);
    free(t.buf);
}

static void snapshot_json(struct jsonw *w, const struct snapshot *sn, uint64_t sessions)
{
    jw_key(w, "connections");
    jw_u64(w, sn->m.connections);
    jw_key(w, "pings_held");
    jw_u64(w, sn->m.pings_held);
    jw_key(w, "sessions");
    jw_u64(w, sessions);
    jw_key(w, "users");
    jw_u64(w, sn->users);
    jw_key(w, "udp_registrations");
    jw_u64(w, sn->m.udp_registrations);
    jw_key(w, "events_applied");
    jw_u64(w, sn->m.events_published);
    jw_key(w, "handoffs_sent");
    jw_u64(w, sn->m.handoffs_sent);
    jw_key(w, "handoffs_received");
    jw_u64(w, sn->m.handoffs_received);
    jw_key(w, "mesh_batches");
    jw_u64(w, sn->m.mesh_batches);
    jw_key(w, "mesh_batched_messages");
    jw_u64(w, sn->m.mesh_batched);
}

static void answer_workers(struct gather *g)
{
    unsigned count = g->a->wk ? g->a->wk->count : 1;
    struct snapshot total;
    struct jsonw w;
    size_t len;
    char *body;

    memset(&total, 0, sizeof(total));
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "workers");
    jw_arr_begin(&w);
    for (unsigned i = 0; i < count; i++) {
        const struct snapshot *sn = &g->snap[i];
        jw_obj_begin(&w);
        jw_key(&w, "worker");
        jw_u64(&w, i);
        jw_key(&w, "up");
        jw_bool(&w, (int)sn->up);
        if (sn->up) {
            jw_key(&w, "pid");
            jw_u64(&w, (uint64_t)sn->pid);
            snapshot_json(&w, sn, sn->sessions);
            sum(&total.m, &sn->m);
            total.sessions += sn->sessions;
            total.users += sn->users;
        }
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_key(&w, "total");
    jw_obj_begin(&w);
    snapshot_json(&w, &total, total.sessions);
    jw_obj_end(&w);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(g->conn, 200, NULL, body, len);
    free(body);
}

/* Every worker answered (or is down): answer the scrape. */
static void on_gathered(void *arg)
{
    struct gather *g = arg;

    if (g->conn) {
        if (g->json)
            answer_workers(g);
        else
            answer_metrics(g);
    }
    free(g);
}

static void on_snapshot(void *arg, void *call_arg, unsigned from, const char *p, size_t len,
                        int status)
{
    struct gather *g = arg;

    (void)call_arg;
    if (status == 0 && len == sizeof(struct snapshot))
        memcpy(&g->snap[from], p, sizeof(struct snapshot));
}

/* Asks every other worker for its snapshot; the answer goes out when all are in. */
static void gather(struct admin *a, struct conn *c, int json)
{
    unsigned count = a->wk ? a->wk->count : 1;
    struct gather *g = calloc(1, sizeof(*g) + count * sizeof(struct snapshot));
    struct mesh_gather *mg;

    if (g == NULL) {
        unavailable(c);
        return;
    }
    g->a = a;
    g->json = json;
    g->conn = c;
    take_snapshot(a, &g->snap[a->wk ? a->wk->index : 0]);
    conn_wait(c, &g->conn);
    mg = mesh_gather_new(a->mesh, on_snapshot, on_gathered, g);
    /* A worker that cannot be asked (restarting) is shown as down. */
    mesh_gather_all(mg, ADMIN_MSG_METRICS, NULL, 0);
    mesh_gather_release(mg);
}

void admin_metrics(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct admin *a = arg;
    struct text t;

    (void)r;
    (void)who;
    if (a->wk) {
        gather(a, c, 0);
        return;
    }
    t.buf = malloc(4096);
    t.len = 0;
    t.cap = 4096;
    if (t.buf == NULL) {
        unavailable(c);
        return;
    }
    render_totals(&t, a->metrics, sessions_now(a->sessions), !store_healthy(a->store));
    conn_respond_typed(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, t.buf, t.len);
    free(t.buf);
}

void admin_workers(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    (void)r;
    (void)who;
    gather(arg, c, 1);
}

/* ADMIN_MSG_METRICS: replies with this worker's snapshot. */
static void on_metrics_msg(void *arg, unsigned from, uint32_t id, const char *p, size_t len, int fd)
{
    struct admin *a = arg;
    struct snapshot sn;
    struct iovec iov = {.iov_base = &sn, .iov_len = sizeof(sn)};

    (void)p;
    (void)len;
    if (fd >= 0)
        close(fd);
    take_snapshot(a, &sn);
    mesh_reply(a->mesh, from, id, 0, &iov, 1);
}

void admin_init(struct admin *a, struct metrics *metrics, struct sessions *sessions,
                struct shard *shard, struct store *store, const struct worker_ctx *wk,
                struct mesh *mesh)
{
    a->metrics = metrics;
    a->sessions = sessions;
    a->shard = shard;
    a->store = store;
    a->wk = wk;
    a->mesh = mesh;
    mesh_on(mesh, ADMIN_MSG_METRICS, on_metrics_msg, a);
}
