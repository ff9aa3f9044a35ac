/*
 * metrics.h — the counters behind GET /metrics. Plain integers bumped on the
 * loop thread: no atomics, no locks, no allocation.
 *
 * One struct per worker, owned by its server (server/server.h), and handed
 * by pointer to each module that counts something; admin/admin.c renders it
 * and sums the workers' copies field by field. Every field is a uint64_t,
 * which that sum relies on.
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
    PING_STORE_ERROR,    /* ActiveSync Status 8: the store is failing (store_healthy) */
    PING_OUTCOME_COUNT,
};

/* What a UDP datagram was sent as; labels of nudge_udp_datagrams_sent_total. */
enum udp_sent_kind {
    UDP_SENT_NOTIFY,
    UDP_SENT_RESEND,
    UDP_SENT_TEST,
    UDP_SENT_COUNT,
};

/* Why a datagram nudged received was dropped; labels of nudge_udp_datagrams_rejected_total. */
enum udp_reject {
    UDP_REJECT_MALFORMED,
    UDP_REJECT_NOT_ACK,
    UDP_REJECT_UNKNOWN,
    UDP_REJECT_BAD_TAG,
    UDP_REJECT_REPLAY,
    UDP_REJECT_COUNT,
};

/* How a password sign-in ended; labels of nudge_password_checks_total. */
enum password_result {
    PASSWORD_OK,
    PASSWORD_REFUSED,
    PASSWORD_UNAVAILABLE,
    PASSWORD_RESULT_COUNT,
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
    uint64_t udp_registrations;    /* gauge */
    uint64_t udp_sent[UDP_SENT_COUNT];
    uint64_t udp_acks;
    uint64_t udp_rejected[UDP_REJECT_COUNT];
    uint64_t udp_unreachable;      /* ICMP errors that suspended a registration or came after */
    uint64_t udp_send_errors;
    uint64_t udp_resends_exhausted;
    uint64_t ingest_events;        /* deliveries from Dovecot applied */
    uint64_t ingest_duplicates;    /* retried deliveries answered without a bump */
    uint64_t handoffs_sent;        /* connections passed to the worker owning their user */
    uint64_t handoffs_received;
    uint64_t remote_events;        /* events other workers sent us to apply */
    uint64_t mesh_batches;         /* mesh packets sent carrying several messages */
    uint64_t mesh_batched;         /* the messages in them */
    uint64_t logins;               /* tokens handed out by POST /v1/login */
    uint64_t password_checks[PASSWORD_RESULT_COUNT]; /* sign-ins with a password, by result */
    uint64_t password_cache_hits;  /* of them, answered from the cache */
    uint64_t password_backend_requests; /* questions asked of the backend */
    uint64_t signins_limited;      /* sign-ins refused 429 for too many failures */
    uint64_t tokens_revoked;       /* users whose tokens an admin revoked */
    uint64_t streams_held;         /* gauge: event streams open now */
    uint64_t streams_opened;
    uint64_t stream_events;        /* state events sent on streams (SSE and WebSocket) */
    uint64_t streams_slow;         /* streams closed for not reading (event 1900) */
    uint64_t tls_handshakes;       /* TLS handshakes completed (conn.c) */
    uint64_t tls_failures;         /* TLS handshakes or records refused (event 1150) */
    uint64_t ws_held;              /* gauge: WebSockets open now (stream/ws.c) */
    uint64_t ws_opened;
    uint64_t ws_messages;          /* text messages from WebSocket clients */
    uint64_t ws_request_errors;    /* of them, answered with a RequestError */
};

extern const char *const ping_outcome_names[PING_OUTCOME_COUNT];
extern const char *const udp_sent_names[UDP_SENT_COUNT];
extern const char *const udp_reject_names[UDP_REJECT_COUNT];
extern const char *const password_result_names[PASSWORD_RESULT_COUNT];

#endif
