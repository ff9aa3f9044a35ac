/*
 * ping.h — POST /Microsoft-Server-ActiveSync?Cmd=Ping: the ActiveSync Ping
 * as a session of its device (held, superseded, reaped, its heartbeat
 * learned by the session and heartbeat modules, exactly as /v1/ping), and
 * the publisher's folder-map and synced endpoints. docs/activesync.md.
 */
#ifndef NUDGE_AS_PING_H
#define NUDGE_AS_PING_H

#include <stddef.h>

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
struct worker_route;

struct as_ping {
    const struct config *cfg;
    struct store *store;
    struct shard *shard;
    struct metrics *metrics;
    struct heartbeat *hb;
    struct sessions *sessions;
    struct devices *devices;
    const struct worker_route *route; /* NULL: one process */
    struct pingrate *rate;            /* [ping] max_per_minute; NULL: none (set after init) */
    size_t dslot;                     /* struct as_dev * per device (NULL: not ActiveSync) */
    size_t uslot;                     /* struct as_map * per user (NULL: Ids name folders) */
    struct conn_holder holder;        /* a held Ping */
    struct conn_holder delayed;       /* a battery-guarded answer waiting for its time */
};

/* Sets ap up and reserves its slots in sh (before any user exists). */
void as_ping_init(struct as_ping *ap, const struct config *cfg, struct store *store,
                  struct shard *sh, struct metrics *metrics, struct heartbeat *hb,
                  struct sessions *sessions, struct devices *devices,
                  const struct worker_route *route);

/* Brings back the folder maps the store saved (at start, after the slots are reserved). */
void as_ping_load(struct as_ping *ap);

/* Frees what the slots point to (before shard_free). */
void as_ping_free(struct as_ping *ap);

/* POST /Microsoft-Server-ActiveSync (HTTP Basic, checked by the router). */
void as_ping_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/* OPTIONS /Microsoft-Server-ActiveSync: the versions and the one command served. */
void as_options_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/* PUT, GET, DELETE /v1/activesync/folders/USER (publisher token). */
void as_folders_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/* POST /v1/activesync/synced/USER {"device": D, "folders": [Id...]} (publisher token). */
void as_synced_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
