/*
 * probe.h — GET /v1/probe?hold=N: a request held N seconds on a socket with
 * TCP keepalive off, so that nothing crosses the path while it waits. If a
 * middlebox on the path drops flows idle for less than N seconds, the answer
 * never arrives; `nudge probe` uses that to measure the path's idle timeout.
 */
#ifndef NUDGE_PROBE_H
#define NUDGE_PROBE_H

#include <stddef.h>

#include "conn/conn.h"

struct config;
struct http_req;
struct metrics;
struct principal;
struct shard;

/*
 * Limits: [probe] max_per_user probes of one user at once (a probe ladder
 * needs a handful) and [probe] max_held in all on this worker. A probe is a
 * connection held for up to an hour with keepalive off, which nothing else
 * nudge holds is: without a total, users could park that many sockets.
 */
/* [probe] max_per_user's default: `nudge probe` keeps its ladder within it. */
#define PROBE_MAX_PER_USER 16

struct probe {
    const struct config *cfg;
    struct shard *shard;
    struct metrics *metrics;
    size_t uslot;               /* of the user's count of probes held (uint32_t) */
    struct conn_holder holder;
};

/* Sets pr up and reserves its slot in sh's users (before any user exists). */
void probe_init(struct probe *pr, const struct config *cfg, struct shard *sh,
                struct metrics *metrics);

/* The route handler; 'arg' is the struct probe. */
void probe_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
