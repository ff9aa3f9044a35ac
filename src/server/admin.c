/*
 * admin.c — GET /healthz and GET /metrics (Prometheus text format 0.0.4).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "push/handlers.h"
#include "server/conn.h"
#include "server/server.h"

void admin_healthz(struct conn *c, struct http_req *r, const struct principal *who)
{
    (void)r;
    (void)who;
    CONN_RESPOND_LITERAL(c, 200, NULL, "{\"status\":\"ok\"}");
}

/* Devices that hold a ping or a UDP registration (one session each). */
static uint64_t sessions_now(struct server *s)
{
    uint64_t both = 0;
    uint32_t pos = 0;
    const char *key;
    void *val;

    if (s->metrics.udp_registrations == 0)
        return s->metrics.pings_held;
    /* Only the devices with both are counted twice by the two gauges: walk the users. */
    while (strmap_next(&s->shard.users, &pos, &key, &val)) {
        struct user *u = val;
        uint32_t dpos = 0;
        void *dval;
        if (u->held == 0 || u->udp == 0)
            continue;
        while (strmap_next(&u->devices, &dpos, &key, &dval)) {
            struct device *d = dval;
            both += d->held && d->udp;
        }
    }
    return s->metrics.pings_held + s->metrics.udp_registrations - both;
}

struct text {
    char *buf;
    size_t len, cap;
};

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

void admin_metrics(struct conn *c, struct http_req *r, const struct principal *who)
{
    const struct metrics *m = &c->srv->metrics;
    struct text t = {.buf = malloc(4096), .len = 0, .cap = 4096};

    (void)r;
    (void)who;
    if (t.buf == NULL) {
        conn_respond_error(c, 503, "unavailable", "out of memory");
        return;
    }
    metric(&t, "nudge_connections", "gauge", "Open client connections.", m->connections);
    metric(&t, "nudge_connections_accepted_total", "counter", "Connections accepted.",
           m->connections_total);
    metric(&t, "nudge_connections_refused_total", "counter",
           "Connections refused for [server] max_per_ip.", m->connections_refused);
    metric(&t, "nudge_sessions", "gauge", "Sessions now (held pings and UDP registrations).",
           sessions_now(c->srv));
    metric(&t, "nudge_sessions_refused_total", "counter",
           "Sessions refused at [sessions] per_user_limit (429).", m->sessions_refused);
    metric(&t, "nudge_sessions_reaped_total", "counter",
           "Dead sessions closed to make room under the per-user limit.", m->sessions_reaped);
    metric(&t, "nudge_requests_total", "counter", "HTTP requests received.", m->requests_total);
    metric(&t, "nudge_responses_4xx_total", "counter", "Answers with a 4xx status.",
           m->responses_4xx);
    metric(&t, "nudge_responses_5xx_total", "counter", "Answers with a 5xx status.",
           m->responses_5xx);
    metric(&t, "nudge_auth_failures_total", "counter", "Requests refused with 401.",
           m->auth_failures);
    metric(&t, "nudge_bytes_received_total", "counter", "Bytes read from clients.",
           m->bytes_received);
    metric(&t, "nudge_bytes_sent_total", "counter", "Bytes written to clients.", m->bytes_sent);
    metric(&t, "nudge_pings_held", "gauge", "Pings held now.", m->pings_held);
    emit(&t, "# HELP nudge_pings_answered_total Pings answered, by outcome.\n"
             "# TYPE nudge_pings_answered_total counter\n");
    for (int i = 0; i < PING_OUTCOME_COUNT; i++)
        emit(&t, "nudge_pings_answered_total{status=\"%s\"} %" PRIu64 "\n", ping_outcome_names[i],
             m->pings_answered[i]);
    metric(&t, "nudge_events_published_total", "counter", "Events applied from publishers.",
           m->events_published);
    metric(&t, "nudge_publish_batches_total", "counter", "Publish requests applied.",
           m->publish_batches);
    metric(&t, "nudge_state_reads_total", "counter", "GET /v1/state requests.", m->state_reads);
    metric(&t, "nudge_ingest_events_total", "counter",
           "Deliveries from Dovecot's push driver applied (PUT /v1/ingest/dovecot).",
           m->ingest_events);
    metric(&t, "nudge_ingest_duplicates_total", "counter",
           "Retried deliveries answered with the first one's state, without a bump.",
           m->ingest_duplicates);
    metric(&t, "nudge_udp_registrations", "gauge", "UDP registrations now.", m->udp_registrations);
    emit(&t, "# HELP nudge_udp_datagrams_sent_total UDP datagrams sent, by kind.\n"
             "# TYPE nudge_udp_datagrams_sent_total counter\n");
    for (int i = 0; i < UDP_SENT_COUNT; i++)
        emit(&t, "nudge_udp_datagrams_sent_total{kind=\"%s\"} %" PRIu64 "\n", udp_sent_names[i],
             m->udp_sent[i]);
    metric(&t, "nudge_udp_acks_total", "counter", "Ack datagrams accepted.", m->udp_acks);
    emit(&t, "# HELP nudge_udp_datagrams_rejected_total Datagrams received and dropped, by reason.\n"
             "# TYPE nudge_udp_datagrams_rejected_total counter\n");
    for (int i = 0; i < UDP_REJECT_COUNT; i++)
        emit(&t, "nudge_udp_datagrams_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
             udp_reject_names[i], m->udp_rejected[i]);
    metric(&t, "nudge_udp_unreachable_total", "counter",
           "ICMP destination-unreachable errors for datagrams sent.", m->udp_unreachable);
    metric(&t, "nudge_udp_send_errors_total", "counter", "Datagrams the socket refused to send.",
           m->udp_send_errors);
    metric(&t, "nudge_udp_resends_exhausted_total", "counter",
           "Changes resent [udp] max_resends times without the device catching up.",
           m->udp_resends_exhausted);
    conn_respond_typed(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, t.buf, t.len);
    free(t.buf);
}
