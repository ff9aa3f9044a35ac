/*
 * ws.h — GET /v1/ws: a user's folder changes over a WebSocket (RFC 6455)
 * with JMAP's WebSocket push (RFC 8887 4.3.5): the client enables push with
 * WebSocketPushEnable, nudged sends a StateChange with a pushState on every
 * change, and a client that comes back with its last pushState gets every
 * change since at once. A session of its device like a held ping or an
 * SSE stream. docs/streams.md.
 */
#ifndef NUDGE_STREAM_WS_H
#define NUDGE_STREAM_WS_H

#include <stddef.h>
#include <stdint.h>

#include "conn/conn.h"

struct config;
struct heartbeat;
struct http_req;
struct metrics;
struct pingrate;
struct principal;
struct sessions;
struct shard;
struct store;
struct ws_dev;

struct ws {
    const struct config *cfg;
    struct store *store;
    struct shard *shard;
    struct metrics *metrics;
    struct sessions *sessions;
    struct heartbeat *hb;
    struct pingrate *rate;       /* [ping] max_per_minute; NULL: none (set after init) */
    uint64_t seed, draws;        /* the names of anonymous devices */
    size_t dslot;                /* struct ws_dev * per device (NULL: no WebSocket) */
    struct conn_holder holder;   /* an open WebSocket */
    /* While a client's bytes are handed to libwslay: what it reads, and for whom. */
    const unsigned char *in;
    size_t in_len;
    struct conn *cur_c;
    struct device *cur_d;
    struct ws_dev *cur_x;
};

/* Sets w up and reserves its slot in sh (before any user exists). */
void ws_init(struct ws *w, const struct config *cfg, struct store *store, struct shard *sh,
             struct metrics *metrics, struct sessions *sessions, struct heartbeat *hb);

/* Frees what the slots point to (before shard_free). */
void ws_free(struct ws *w);

/* GET /v1/ws (a user's credential, checked by the router): the handshake. */
void ws_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
