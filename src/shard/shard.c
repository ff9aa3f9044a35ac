/* shard.c — users and devices in memory, with the slots of the layers above; see shard.h. */
#include "shard/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

/* Slots keep the alignment malloc gives the struct after them (they hold pointers, u64). */
#define SLOT_ALIGN 8

void shard_init(struct shard *sh)
{
    strmap_init(&sh->users);
    sh->user_ext = 0;
    sh->device_ext = 0;
}

static void device_free(struct shard *sh, struct device *d)
{
    for (uint32_t i = 0; i < d->nfolders; i++)
        free((char *)d->folders[i].name);
    free(d->folders);
    free((char *)d - sh->device_ext);
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
            device_free(sh, dval);
        strmap_free(&u->devices);
        free((char *)u - sh->user_ext);
    }
    strmap_free(&sh->users);
}

static size_t reserve(struct shard *sh, size_t *ext, size_t size)
{
    if (sh->users.len > 0) {
        /* A broken start-up order: existing users would have no room for the slot. */
        fprintf(stderr, "nudged: shard slot reserved after users exist\n");
        abort();
    }
    *ext += (size + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    return *ext;
}

size_t shard_user_slot(struct shard *sh, size_t size)
{
    return reserve(sh, &sh->user_ext, size);
}

size_t shard_device_slot(struct shard *sh, size_t size)
{
    return reserve(sh, &sh->device_ext, size);
}

struct user *shard_user(struct shard *sh, const char *id, int create)
{
    size_t n = strlen(id);
    struct user *u = strmap_get(&sh->users, id, n);

    if (u == NULL && create) {
        char *base = xcalloc(1, sh->user_ext + sizeof(*u) + n + 1);
        u = (struct user *)(base + sh->user_ext);
        memcpy(u->id, id, n + 1);
        strmap_init(&u->devices);
        strmap_put(&sh->users, u->id, n, u);
    }
    return u;
}

struct device *shard_device(struct shard *sh, struct user *u, const char *id, int create)
{
    size_t n = strlen(id);
    struct device *d = strmap_get(&u->devices, id, n);

    if (d == NULL && create) {
        char *base = xcalloc(1, sh->device_ext + sizeof(*d) + n + 1);
        d = (struct device *)(base + sh->device_ext);
        memcpy(d->id, id, n + 1);
        d->user = u;
        strmap_put(&u->devices, d->id, n, d);
    }
    return d;
}

void shard_device_remove(struct shard *sh, struct device *d)
{
    strmap_del(&d->user->devices, d->id, strlen(d->id));
    device_free(sh, d);
}

void shard_set_folders(struct device *d, const struct store_folder *src, size_t n)
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

void shard_record(const struct device *d, struct store_device *out)
{
    *out = (struct store_device){
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
}

void shard_drop_device_slots(struct shard *sh, size_t offset, void (*drop)(void *))
{
    uint32_t upos = 0;
    const char *k;
    void *uv;

    while (strmap_next(&sh->users, &upos, &k, &uv)) {
        struct user *u = uv;
        uint32_t dpos = 0;
        void *dv;
        while (strmap_next(&u->devices, &dpos, &k, &dv)) {
            void **slot = shard_slot(dv, offset);
            if (*slot)
                drop(*slot);
            *slot = NULL;
        }
    }
}
