/*
 * sessions_api.h — the sessions admin API: GET /v1/admin/sessions[?user=U]
 * lists sessions (gathered from every worker), DELETE
 * /v1/admin/sessions/{user}/{device} ends one (each part URL-encoded).
 */
#ifndef NUDGE_SESSIONS_API_H
#define NUDGE_SESSIONS_API_H

struct conn;
struct http_req;
struct mesh;
struct principal;
struct sessions;
struct shard;
struct worker_ctx;
struct worker_route;

/* The mesh message asking a worker for its sessions (mesh.h numbering). */
#define SESSIONS_API_MSG_LIST 20

struct sessions_api {
    struct sessions *sessions;
    struct shard *shard;
    const struct worker_ctx *wk;        /* NULL: a single process */
    struct mesh *mesh;                  /* NULL without workers */
    const struct worker_route *route;   /* to the owner of a named user */
};

/* Sets a up and registers its mesh message. */
void sessions_api_init(struct sessions_api *a, struct sessions *sessions, struct shard *shard,
                       const struct worker_ctx *wk, struct mesh *mesh,
                       const struct worker_route *route);

/* The route handlers (admin credential); 'arg' is the struct sessions_api. */
void sessions_list_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);
void sessions_end_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
