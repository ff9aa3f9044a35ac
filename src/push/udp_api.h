/*
 * udp_api.h — the HTTP side of UDP notifications: POST /v1/udp (register),
 * DELETE /v1/udp/{device} (end), POST /v1/udp/test (a reachability test).
 */
#ifndef NUDGE_UDP_API_H
#define NUDGE_UDP_API_H

struct config;
struct conn;
struct http_req;
struct principal;
struct sessions;
struct shard;
struct store;
struct udp;

struct udp_api {
    const struct config *cfg;
    struct store *store;
    struct shard *shard;
    struct sessions *sessions;
    struct udp *udp;            /* NULL when UDP is off: the endpoints answer 501 */
};

/* Sets a up with the modules it works with; all must outlive it. */
void udp_api_init(struct udp_api *a, const struct config *cfg, struct store *store,
                  struct shard *shard, struct sessions *sessions, struct udp *udp);

/* The route handlers (user tokens); 'arg' is the struct udp_api. */
void udp_register_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);
void udp_delete_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);
void udp_test_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
