/*
 * store_mem.c — folder states in memory only: lost on restart. For tests,
 * benchmarks, and deployments that accept that clients resync after a
 * restart (a client presenting states the server no longer knows is answered
 * "changed" at once only when they differ, so a restart to zero is seen).
 *
 * A thin backend over the shared statemap (statemap.h): a bump is "durable"
 * as soon as it is made, so 'assigned' and 'committed' move together and
 * done() runs before bump returns. Device records live in the shard only.
 */
#include <stdlib.h>

#include "common/xalloc.h"
#include "store/statemap.h"
#include "store/store.h"

struct mem_store {
    struct store base;
    struct statemap states;
};

static int mem_open(struct store **out, const struct config *c, struct uv_loop_s *loop, char *err,
                    size_t errlen)
{
    struct mem_store *m = xcalloc(1, sizeof(*m));

    (void)c;
    (void)loop;
    (void)err;
    (void)errlen;
    m->base.be = &store_mem_backend;
    statemap_init(&m->states);
    *out = &m->base;
    return 0;
}

static void mem_close(struct store *s)
{
    struct mem_store *m = (struct mem_store *)s;

    statemap_free(&m->states);
    free(m);
}

static uint64_t mem_get(struct store *s, const char *user, const char *folder)
{
    return statemap_get(&((struct mem_store *)s)->states, user, folder);
}

static size_t mem_list(struct store *s, const char *user, store_list_cb cb, void *arg)
{
    return statemap_list(&((struct mem_store *)s)->states, user, cb, arg);
}

static int mem_bump(struct store *s, struct store_event *ev, size_t n, store_done_cb done, void *arg)
{
    struct mem_store *m = (struct mem_store *)s;

    for (size_t i = 0; i < n; i++) {
        struct statemap_folder *f = statemap_add(&m->states, ev[i].user, ev[i].folder);
        ev[i].state = f->committed = f->assigned = statemap_next_state(f, ev[i].at_least);
    }
    done(arg, ev, n, 0);
    return 0;
}

/* The shard keeps device records in memory already; nothing to add here. */
static void mem_device_save(struct store *s, const struct store_device *d)
{
    (void)s;
    (void)d;
}

static size_t mem_device_load(struct store *s, store_device_cb cb, void *arg)
{
    (void)s;
    (void)cb;
    (void)arg;
    return 0;
}

const struct store_backend store_mem_backend = {
    .name = "memory",
    .open = mem_open,
    .close = mem_close,
    .get = mem_get,
    .list = mem_list,
    .bump = mem_bump,
    .device_save = mem_device_save,
    .device_load = mem_device_load,
    /* No .healthy: nothing here writes, so nothing can fail (store_healthy says 1). */
};
