/*
 * metrics.h — the counters behind GET /metrics. Plain integers bumped on the
 * loop thread: no atomics, no locks, no allocation.
 */
#ifndef NUDGE_METRICS_H
#define NUDGE_METRICS_H

#include <stdint.h>

/* How a ping ended; labels of nudge_pings_answered_total. */
enum ping_outcome {
    PING_CHANGED,
    PING_EXPIRED,
    PING_SUPERSEDED,
    PING_SHUTTING_DOWN,
    PING_OUTCOME_COUNT,
};

struct metrics {
    uint64_t connections;          /* gauge */
    uint64_t connections_total;
    uint64_t connections_refused;  /* over max_per_ip */
    uint64_t sessions_refused;     /* 429 session-limit */
    uint64_t sessions_reaped;      /* dead sessions closed to make room */
    uint64_t requests_total;
    uint64_t responses_4xx;
    uint64_t responses_5xx;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t pings_held;           /* gauge */
    uint64_t pings_answered[PING_OUTCOME_COUNT];
    uint64_t events_published;
    uint64_t publish_batches;
    uint64_t state_reads;
    uint64_t auth_failures;
};

extern const char *const ping_outcome_names[PING_OUTCOME_COUNT];

#endif
