/*
 * store_mem.c — folder states in memory only: lost on restart. For tests,
 * benchmarks, and deployments that accept that clients resync after a
 * restart (a client presenting states the server no longer knows is answered
 * "changed" at once only when they differ, so a restart to zero is seen).
 *
 * Two-level map: user id -> struct mem_user -> folder name -> struct
 * mem_folder. Each name is stored once, inside its own node.
 */
#include <stdlib.h>
#include <string.h>

#include "common/strmap.h"
#include "common/xalloc.h"
#include "store/store.h"

struct mem_folder {
    uint64_t state;
    char name[];
};

struct mem_user {
    struct strmap folders;
    char id[];
};

struct mem_store {
    struct store base;
    struct strmap users;
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
    strmap_init(&m->users);
    *out = &m->base;
    return 0;
}

static void mem_close(struct store *s)
{
    struct mem_store *m = (struct mem_store *)s;
    uint32_t pos = 0, fpos;
    const char *key;
    void *val;

    while (strmap_next(&m->users, &pos, &key, &val)) {
        struct mem_user *u = val;
        fpos = 0;
        while (strmap_next(&u->folders, &fpos, &key, &val))
            free(val);
        strmap_free(&u->folders);
        free(u);
    }
    strmap_free(&m->users);
    free(m);
}

static struct mem_folder *find_folder(struct mem_store *m, const char *user, const char *folder)
{
    struct mem_user *u = strmap_get(&m->users, user, strlen(user));
    return u ? strmap_get(&u->folders, folder, strlen(folder)) : NULL;
}

static uint64_t mem_get(struct store *s, const char *user, const char *folder)
{
    struct mem_folder *f = find_folder((struct mem_store *)s, user, folder);
    return f ? f->state : 0;
}

static size_t mem_list(struct store *s, const char *user, store_list_cb cb, void *arg)
{
    struct mem_store *m = (struct mem_store *)s;
    struct mem_user *u = strmap_get(&m->users, user, strlen(user));
    uint32_t pos = 0;
    const char *key;
    void *val;
    size_t n = 0;

    if (u == NULL)
        return 0;
    while (strmap_next(&u->folders, &pos, &key, &val)) {
        cb(arg, key, ((struct mem_folder *)val)->state);
        n++;
    }
    return n;
}

static int mem_bump(struct store *s, struct store_event *ev, size_t n, store_done_cb done, void *arg)
{
    struct mem_store *m = (struct mem_store *)s;

    for (size_t i = 0; i < n; i++) {
        size_t ulen = strlen(ev[i].user), flen = strlen(ev[i].folder);
        struct mem_user *u = strmap_get(&m->users, ev[i].user, ulen);
        struct mem_folder *f;

        if (u == NULL) {
            u = xmalloc(sizeof(*u) + ulen + 1);
            memcpy(u->id, ev[i].user, ulen + 1);
            strmap_init(&u->folders);
            strmap_put(&m->users, u->id, ulen, u);
        }
        f = strmap_get(&u->folders, ev[i].folder, flen);
        if (f == NULL) {
            f = xmalloc(sizeof(*f) + flen + 1);
            f->state = 0;
            memcpy(f->name, ev[i].folder, flen + 1);
            strmap_put(&u->folders, f->name, flen, f);
        }
        ev[i].state = ++f->state;
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
};
