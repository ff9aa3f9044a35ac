/*
 * sse.h — GET /v1/stream: a Server-Sent Events stream of a user's folder
 * changes with JMAP push semantics (RFC 8620 7.3), resumable with
 * Last-Event-ID from the folder states alone; a session of its device like
 * a held ping. docs/streams.md.
 */
#ifndef NUDGE_STREAM_SSE_H
#define NUDGE_STREAM_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "conn/conn.h"

struct config;
struct devices;
struct heartbeat;
struct store_event;
struct http_req;
struct metrics;
struct pingrate;
struct principal;
struct sessions;
struct shard;
struct store;

struct sse {
    const struct config *cfg;
    struct store *store;
    struct shard *shard;
    struct metrics *metrics;
    struct sessions *sessions;
    struct heartbeat *hb;
    struct pingrate *rate;       /* [ping] max_per_minute; NULL: none (set after init) */
    uint64_t seed, draws;        /* jitter and the names of anonymous devices */
    size_t dslot;                /* struct sse_dev * per device (NULL: no stream) */
    struct conn_holder holder;   /* a stream */
};

/* Sets s up and reserves its slot in sh (before any user exists). */
void sse_init(struct sse *s, const struct config *cfg, struct store *store, struct shard *sh,
              struct metrics *metrics, struct sessions *sessions, struct heartbeat *hb);

/* Frees what the slots point to (before shard_free). */
void sse_free(struct sse *s);

/* Is r a request for a stream (GET /v1/stream)? */
int sse_is_stream(const struct http_req *r);

/*
 * Answers c, a stream request that cannot be served now (nudged drains,
 * the worker owning its user cannot take it): a 200 whose body is a
 * retry: of about 'retry_s' seconds (jittered up to twice it) and its
 * end. A WHATWG EventSource reconnects after a 200 ends and gives up for
 * good on any other status, so never a 503 here.
 */
void sse_come_back(struct conn *c, unsigned retry_s);

/* GET /v1/stream (a user's credential, checked by the router). */
void sse_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
