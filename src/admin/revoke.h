/*
 * revoke.h — DELETE /v1/admin/tokens/{user} (the user URL-encoded): every
 * token of that user issued until now is refused from now on, across
 * restarts and workers, without touching anyone else's; the user's sessions
 * (held pings, UDP registrations) are ended, so nothing the old tokens
 * opened lives on. The time is kept as the user's TOKEN_REVOKED_FOLDER
 * counter (auth/token.h), committed before the answer.
 */
#ifndef NUDGE_REVOKE_H
#define NUDGE_REVOKE_H

struct conn;
struct http_req;
struct metrics;
struct principal;
struct sessions;
struct shard;
struct store;
struct worker_route;

struct revoke {
    struct store *store;
    struct shard *shard;
    struct sessions *sessions;
    struct metrics *metrics;
    const struct worker_route *route;  /* to the owner of the user */
};

void revoke_init(struct revoke *rv, struct store *store, struct shard *shard,
                 struct sessions *sessions, struct metrics *metrics,
                 const struct worker_route *route);

/* The route handler (admin credential); 'arg' is the struct revoke. */
void revoke_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
