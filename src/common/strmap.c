/* strmap.c — see strmap.h. */
#include "common/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/xalloc.h"

static char tomb_marker;
#define STRMAP_TOMB (&tomb_marker)

static uint64_t strmap_seed_value = 0x9e3779b97f4a7c15ull;

void strmap_seed(uint64_t seed)
{
    strmap_seed_value = seed | 1;
}

/* The seeded hash (util.h): with a secret seed a key's bucket cannot be predicted from outside. */
static uint32_t hash_bytes(const char *s, size_t n)
{
    return (uint32_t)util_hash(strmap_seed_value, s, n);
}

void strmap_init(struct strmap *m)
{
    memset(m, 0, sizeof(*m));
}

void strmap_free(struct strmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static struct strmap_slot *find(const struct strmap *m, const char *key, size_t klen, uint32_t h)
{
    uint32_t mask = m->cap - 1;

    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        struct strmap_slot *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->key != STRMAP_TOMB && s->hash == h && s->klen == klen &&
            memcmp(s->key, key, klen) == 0)
            return s;
    }
}

void *strmap_get(const struct strmap *m, const char *key, size_t klen)
{
    struct strmap_slot *s;

    if (m->len == 0)
        return NULL;
    s = find(m, key, klen, hash_bytes(key, klen));
    return s ? s->val : NULL;
}

static void resize(struct strmap *m, uint32_t cap)
{
    struct strmap_slot *old = m->slots;
    uint32_t oldcap = m->cap;

    m->slots = xcalloc(cap, sizeof(*m->slots));
    m->cap = cap;
    m->used = m->len;
    for (uint32_t i = 0; i < oldcap; i++) {
        struct strmap_slot *s = &old[i];
        if (s->key == NULL || s->key == STRMAP_TOMB)
            continue;
        uint32_t j = s->hash & (cap - 1);
        while (m->slots[j].key != NULL)
            j = (j + 1) & (cap - 1);
        m->slots[j] = *s;
    }
    free(old);
}

void *strmap_put(struct strmap *m, const char *key, size_t klen, void *val)
{
    uint32_t h = hash_bytes(key, klen);
    struct strmap_slot *s, *tomb = NULL;

    if (m->len) {
        s = find(m, key, klen, h);
        if (s) {
            void *prev = s->val;
            s->val = val;
            s->key = key;
            return prev;
        }
    }
    if ((m->used + 1) * 4 >= m->cap * 3) {
        /* Grow only when live entries need it; otherwise rehash away tombstones. */
        uint32_t cap = m->cap ? m->cap : 4;
        while ((m->len + 1) * 2 >= cap)
            cap *= 2;
        resize(m, cap);
    }
    for (uint32_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        s = &m->slots[i];
        if (s->key == STRMAP_TOMB && tomb == NULL)
            tomb = s;
        if (s->key == NULL)
            break;
    }
    if (tomb)
        s = tomb;
    else
        m->used++;
    s->key = key;
    s->val = val;
    s->hash = h;
    s->klen = (uint32_t)klen;
    m->len++;
    return NULL;
}

void *strmap_del(struct strmap *m, const char *key, size_t klen)
{
    struct strmap_slot *s;
    void *val;

    if (m->len == 0)
        return NULL;
    s = find(m, key, klen, hash_bytes(key, klen));
    if (s == NULL)
        return NULL;
    val = s->val;
    s->key = STRMAP_TOMB;
    s->val = NULL;
    m->len--;
    return val;
}

int strmap_next(const struct strmap *m, uint32_t *pos, const char **key, void **val)
{
    while (*pos < m->cap) {
        struct strmap_slot *s = &m->slots[(*pos)++];
        if (s->key != NULL && s->key != STRMAP_TOMB) {
            *key = s->key;
            *val = s->val;
            return 1;
        }
    }
    return 0;
}
