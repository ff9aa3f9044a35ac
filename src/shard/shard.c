/* shard.c — users and devices in memory; see shard.h. */
#include "shard/shard.h"

#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "push/udp.h"

void shard_init(struct shard *sh)
{
    strmap_init(&sh->users);
}

static void device_free(struct device *d)
{
    for (uint32_t i = 0; i < d->nfolders; i++)
        free((char *)d->folders[i].name);
    free(d->folders);
    free(d);
}

void shard_free(struct shard *sh)
{
    uint32_t upos = 0, dpos;
    const char *key;
    void *uval, *dval;

    while (strmap_next(&sh->users, &upos, &key, &uval)) {
        struct user *u = uval;
        dpos = 0;
        while (strmap_next(&u->devices, &dpos, &key, &dval))
            device_free(dval);
        strmap_free(&u->devices);
        free(u);
    }
    strmap_free(&sh->users);
}

struct user *shard_user(struct shard *sh, const char *id, int create)
{
    size_t n = strlen(id);
    struct user *u = strmap_get(&sh->users, id, n);

    if (u == NULL && create) {
        u = xcalloc(1, sizeof(*u) + n + 1);
        memcpy(u->id, id, n + 1);
        strmap_init(&u->devices);
        strmap_put(&sh->users, u->id, n, u);
    }
    return u;
}

struct device *user_device(struct user *u, const char *id, int create)
{
    size_t n = strlen(id);
    struct device *d = strmap_get(&u->devices, id, n);

    if (d == NULL && create) {
        d = xcalloc(1, sizeof(*d) + n + 1);
        memcpy(d->id, id, n + 1);
        d->user = u;
        strmap_put(&u->devices, d->id, n, d);
    }
    return d;
}

uint32_t user_sessions(const struct user *u)
{
    uint32_t pos = 0, n = 0;
    const char *key;
    void *val;

    if (u->held == 0 && u->udp == 0)
        return 0;
    while (strmap_next(&u->devices, &pos, &key, &val))
        n += device_present(val) ? 1 : 0;
    return n;
}

void device_persist(struct store *s, const struct device *d)
{
    struct store_udp udp;
    char addr[64];

    struct store_device sd = {
        .user = d->user->id,
        .device = d->id,
        .heartbeat = d->heartbeat,
        .heartbeat_hint = d->heartbeat_hint,
        .heartbeat_good = d->heartbeat_good,
        .heartbeat_ceiling = d->heartbeat_ceiling,
        .ceiling_since = d->ceiling_since,
        .nfolders = d->nfolders,
        .folders = d->folders,
        .udp = NULL,
    };

    if (d->udp) {
        udp_record(d->udp, &udp, addr, sizeof(addr));
        sd.udp = &udp;
    }
    store_device_save(s, &sd);
}

void user_device_remove(struct user *u, struct device *d)
{
    strmap_del(&u->devices, d->id, strlen(d->id));
    device_free(d);
}

void device_set_folders(struct device *d, const struct store_folder *src, size_t n)
{
    struct store_folder *f = xcalloc(n, sizeof(*f));

    for (size_t i = 0; i < n; i++) {
        f[i].name = xstrdup(src[i].name);
        f[i].state = src[i].state;
    }
    for (uint32_t i = 0; i < d->nfolders; i++)
        free((char *)d->folders[i].name);
    free(d->folders);
    d->folders = f;
    d->nfolders = (uint32_t)n;
}
