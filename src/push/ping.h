/*
 * ping.h — POST /v1/ping, the long-poll ("Direct Push") channel, and the
 * wake-up of held pings when a folder changes.
 */
#ifndef NUDGE_PING_H
#define NUDGE_PING_H

#include "conn/conn.h"

struct config;
struct devices;
struct heartbeat;
struct http_req;
struct metrics;
struct pingrate;
struct principal;
struct sessions;
struct shard;
struct store;
struct udp;
struct user;

struct ping {
    const struct config *cfg;
    struct store *store;
    struct shard *shard;
    struct metrics *metrics;
    struct heartbeat *hb;
    struct sessions *sessions;
    struct devices *devices;
    struct udp *udp;            /* NULL when UDP is off */
    struct pingrate *rate;      /* [ping] max_per_minute; NULL: none (set after init) */
    struct conn_holder holder;  /* what a held ping's connection calls */
};

/* Sets p up with the modules it works with; all must outlive it. */
void ping_init(struct ping *p, const struct config *cfg, struct store *store, struct shard *shard,
               struct metrics *metrics, struct heartbeat *hb, struct sessions *sessions,
               struct devices *devices, struct udp *udp);

/* The route handler; 'arg' is the struct ping. */
void ping_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/* Answers every held ping of u whose folders changed since the device's states. */
void ping_wake_user(struct ping *p, struct user *u, const struct store_event *e, size_t n);

#endif
