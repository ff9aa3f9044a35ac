/* state.h — GET /v1/state: the polling fallback (see state.c). */
#ifndef NUDGE_STATE_H
#define NUDGE_STATE_H

struct config;
struct conn;
struct http_req;
struct metrics;
struct principal;
struct shard;
struct store;
struct udp;

struct state {
    const struct config *cfg;
    struct store *store;
    struct shard *shard;
    struct metrics *metrics;
    struct udp *udp;            /* NULL when UDP is off */
};

/* Sets sv up with the modules it reads; all must outlive it. */
void state_init(struct state *sv, const struct config *cfg, struct store *store,
                struct shard *shard, struct metrics *metrics, struct udp *udp);

/* The route handler; 'arg' is the struct state. */
void state_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
