/*
 * statemap.h — folder states in memory: user id -> folder name -> state.
 * Shared by every store backend: reads (get, list) are always served from
 * here, whatever keeps the states durable behind it.
 *
 * Each folder has two numbers:
 *   assigned   the last state handed out by a bump. Concurrent batches that
 *              wait for the same commit each get their own, increasing state.
 *   committed  the last state known durable. get and list return this one,
 *              so nobody learns a state that a crash could take back.
 * The memory backend sets both at once; the SQLite backend sets 'assigned'
 * when a batch is queued and 'committed' when its group commit is done.
 *
 * Shape: a two-level strmap. The user id is stored once, in its user node;
 * a folder node is 16 bytes of states plus its name (one allocation each).
 * Nodes are never removed while the map lives, so a pointer to a folder node
 * stays valid until statemap_free (backends keep them across a commit).
 *
 * Not thread-safe: only the loop thread touches it.
 */
#ifndef NUDGE_STATEMAP_H
#define NUDGE_STATEMAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/strmap.h"
#include "store/store.h"

struct statemap_folder {
    uint64_t assigned;  /* last state handed out; >= committed */
    uint64_t committed; /* last durable state: what readers see */
    char name[];
};

struct statemap {
    struct strmap users; /* user id -> struct statemap_user (private) */
    size_t nfolders;     /* folder nodes, for start-up logs and tests */
};

void statemap_init(struct statemap *m);
/* Frees every node; the map can be initialised again afterwards. */
void statemap_free(struct statemap *m);

/* The folder node of (user, folder), or NULL when it has none. */
struct statemap_folder *statemap_find(const struct statemap *m, const char *user,
                                      const char *folder);

/* The folder node of (user, folder), created with both states 0 when new. */
struct statemap_folder *statemap_add(struct statemap *m, const char *user, const char *folder);

/* The committed state of (user, folder); 0 when none. */
uint64_t statemap_get(const struct statemap *m, const char *user, const char *folder);

/*
 * Calls cb(arg, folder, committed) for each folder of 'user' whose committed
 * state is not 0 (a folder whose first bump is not yet durable does not
 * exist for readers), internal counters left out (store.h STORE_INTERNAL).
 * Returns the number of calls.
 */
size_t statemap_list(const struct statemap *m, const char *user,
                     void (*cb)(void *arg, const char *folder, uint64_t state), void *arg);

/* The state a bump gives f: one more than the last handed out, or at_least when higher. */
static inline uint64_t statemap_next_state(const struct statemap_folder *f, uint64_t at_least)
{
    return f->assigned + 1 > at_least ? f->assigned + 1 : at_least;
}

#endif
