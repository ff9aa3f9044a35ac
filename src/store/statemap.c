/*
 * statemap.c — the in-memory two-level map of folder states; see statemap.h.
 *
 * Cost per user: one node (a strmap header plus the id) and one slot in the
 * users map; per folder: a 16-byte node plus its name, and one 24-byte slot
 * in its user's map. Lookups hash twice (user, then folder); nothing
 * allocates except the first bump of a new user or folder.
 */
#include "store/statemap.h"

#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

struct statemap_user {
    struct strmap folders; /* folder name -> struct statemap_folder */
    char id[];
};

void statemap_init(struct statemap *m)
{
    strmap_init(&m->users);
    m->nfolders = 0;
}

void statemap_free(struct statemap *m)
{
    uint32_t pos = 0, fpos;
    const char *key;
    void *val;

    while (strmap_next(&m->users, &pos, &key, &val)) {
        struct statemap_user *u = val;
        fpos = 0;
        while (strmap_next(&u->folders, &fpos, &key, &val))
            free(val);
        strmap_free(&u->folders);
        free(u);
    }
    strmap_free(&m->users);
    m->nfolders = 0;
}

struct statemap_folder *statemap_find(const struct statemap *m, const char *user,
                                      const char *folder)
{
    struct statemap_user *u = strmap_get(&m->users, user, strlen(user));

    return u ? strmap_get(&u->folders, folder, strlen(folder)) : NULL;
}

struct statemap_folder *statemap_add(struct statemap *m, const char *user, const char *folder)
{
    size_t ulen = strlen(user), flen = strlen(folder);
    struct statemap_user *u = strmap_get(&m->users, user, ulen);
    struct statemap_folder *f;

    if (u == NULL) {
        u = xmalloc(sizeof(*u) + ulen + 1);
        memcpy(u->id, user, ulen + 1);
        strmap_init(&u->folders);
        strmap_put(&m->users, u->id, ulen, u);
    }
    f = strmap_get(&u->folders, folder, flen);
    if (f == NULL) {
        f = xmalloc(sizeof(*f) + flen + 1);
        f->assigned = 0;
        f->committed = 0;
        memcpy(f->name, folder, flen + 1);
        strmap_put(&u->folders, f->name, flen, f);
        m->nfolders++;
    }
    return f;
}

uint64_t statemap_get(const struct statemap *m, const char *user, const char *folder)
{
    struct statemap_folder *f = statemap_find(m, user, folder);

    return f ? f->committed : 0;
}

size_t statemap_list(const struct statemap *m, const char *user,
                     void (*cb)(void *arg, const char *folder, uint64_t state), void *arg)
{
    struct statemap_user *u = strmap_get(&m->users, user, strlen(user));
    uint32_t pos = 0;
    const char *key;
    void *val;
    size_t n = 0;

    if (u == NULL)
        return 0;
    while (strmap_next(&u->folders, &pos, &key, &val)) {
        const struct statemap_folder *f = val;
        if (f->committed == 0 || key[0] == STORE_INTERNAL)
            continue;
        cb(arg, key, f->committed);
        n++;
    }
    return n;
}
