/*
 * admin.h — GET /healthz, GET /metrics (Prometheus text format 0.0.4) and
 * GET /v1/admin/workers.
 */
#ifndef NUDGE_ADMIN_H
#define NUDGE_ADMIN_H

struct conn;
struct http_req;
struct mesh;
struct metrics;
struct principal;
struct sessions;
struct shard;
struct store;
struct worker_ctx;

/* The mesh message asking a worker for its counters (mesh.h numbering). */
#define ADMIN_MSG_METRICS 19

struct admin {
    struct metrics *metrics;
    struct sessions *sessions;
    struct shard *shard;
    struct store *store;           /* this worker's: its health is a gauge */
    const struct worker_ctx *wk;   /* NULL: a single process */
    struct mesh *mesh;             /* NULL without workers */
};

/* Sets a up and registers its mesh message. */
void admin_init(struct admin *a, struct metrics *metrics, struct sessions *sessions,
                struct shard *shard, struct store *store, const struct worker_ctx *wk,
                struct mesh *mesh);

/* The route handlers; 'arg' is the struct admin. */
void admin_healthz(void *arg, struct conn *c, struct http_req *r, const struct principal *who);
void admin_metrics(void *arg, struct conn *c, struct http_req *r, const struct principal *who);
/* Per-worker figures and totals. */
void admin_workers(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
