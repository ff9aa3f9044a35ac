/* sse.c — GET /v1/stream; see sse.h. */
#include "stream/sse.h"

#include "auth/principal.h"
#include "http/error.h"
#include "shard/shard.h"

void sse_init(struct sse *s, const struct config *cfg, struct store *store, struct shard *sh,
              struct metrics *metrics, struct sessions *sessions)
{
    s->cfg = cfg;
    s->store = store;
    s->shard = sh;
    s->metrics = metrics;
    s->sessions = sessions;
    s->dslot = shard_device_slot(sh, sizeof(void *));
}

void sse_free(struct sse *s)
{
    (void)s;
}

void sse_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct http_error e;

    (void)arg, (void)r, (void)who;
    http_error_set(&e, 501, "not-implemented", "streams are being built");
    conn_respond_error(c, &e);
}
