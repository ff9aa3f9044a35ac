/*
 * status.h — the status page: GET /status, one HTML page embedded in the
 * binary (src/admin/status.html, made a C array at build time), and GET
 * /v1/admin/status, the JSON it polls (docs/status.md).
 *
 * The JSON is gathered from every worker over the mesh, as /metrics is:
 * each answers one snapshot (its counts, its devices' heartbeat hints
 * bucketed, its store's health, its recent notable log lines), and the
 * asking worker sums them and merges the lines by time.
 */
#ifndef NUDGE_STATUS_H
#define NUDGE_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "http/csp.h"

struct config;
struct conn;
struct http_req;
struct mesh;
struct metrics;
struct principal;
struct sessions;
struct shard;
struct store;
struct worker_ctx;

/* The mesh message asking a worker for its status snapshot (mesh.h numbering). */
#define STATUS_MSG_SNAPSHOT 21

/* Lines of the merged log in an answer: the newest of every worker's. */
#define STATUS_LOG_LINES 50

struct status {
    struct metrics *metrics;
    struct sessions *sessions;
    struct shard *shard;
    struct store *store;           /* this worker's: its health */
    const struct worker_ctx *wk;   /* NULL: a single process */
    struct mesh *mesh;             /* NULL without workers */
    uint64_t started_ms;           /* CLOCK_MONOTONIC when this worker started */
    char csp[HTTP_CSP_MAX];        /* the page's Content-Security-Policy line */
};

/*
 * Sets st up, registers its mesh message and names the events whose lines
 * the log keeps (common/log.h). 0, or -1 with err set (the embedded page's
 * policy cannot be written: a broken build).
 */
int status_init(struct status *st, struct metrics *metrics, struct sessions *sessions,
                struct shard *shard, struct store *store, const struct worker_ctx *wk,
                struct mesh *mesh, char *err, size_t errlen);

/* GET /v1/admin/status (admin credential); 'arg' is the struct status. */
void status_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/* GET and HEAD /status: the page (no credential: it asks for the admin token itself). */
void status_page_handle(void *arg, struct conn *c, struct http_req *r,
                        const struct principal *who);

#endif
