/*
 * strmap.h — an open-addressing hash map from strings to pointers.
 *
 * The map does not own keys or values: a key points into its value (a
 * user's id, a device's name), so an entry costs one 24-byte slot and no
 * extra allocation. Linear probing, grown at 3/4 load, deletions leave
 * tombstones that a grow or rehash clears.
 *
 * Keys come from clients (user ids, folder names), so the hash is seeded
 * with random bytes at start-up: an attacker cannot precompute colliding keys.
 */
#ifndef NUDGE_STRMAP_H
#define NUDGE_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct strmap_slot {
    const char *key; /* NULL: empty; STRMAP_TOMB: deleted */
    void *val;
    uint32_t hash;
    uint32_t klen;
};

struct strmap {
    struct strmap_slot *slots;
    uint32_t cap; /* power of two, or 0 */
    uint32_t len;
    uint32_t used; /* len + tombstones */
};

/* Seeds the hash for the whole process; call once at start (tests may skip it). */
void strmap_seed(uint64_t seed);

void strmap_init(struct strmap *m);
/* Frees the slot array; keys and values stay the caller's. */
void strmap_free(struct strmap *m);

/* Returns the value for key[0..klen), or NULL. */
void *strmap_get(const struct strmap *m, const char *key, size_t klen);

/*
 * Inserts or replaces. 'key' (NUL-terminated, klen bytes) must stay valid as
 * long as the entry exists. Returns the replaced value or NULL.
 */
void *strmap_put(struct strmap *m, const char *key, size_t klen, void *val);

/* Removes and returns the value for key, or NULL. */
void *strmap_del(struct strmap *m, const char *key, size_t klen);

/*
 * Iteration: start with *pos = 0; returns 1 with *key and *val set, or 0 at the
 * end. The map must not change during an iteration.
 */
int strmap_next(const struct strmap *m, uint32_t *pos, const char **key, void **val);

static inline uint32_t strmap_len(const struct strmap *m)
{
    return m->len;
}

#endif
