/*
 * shard.h — every piece of per-user state nudge keeps in memory besides
 * folder states (which are the store's): users, their devices, each
 * device's last ping parameters and its held ping.
 *
 * A shard is reached only through user ids, and nothing outside it keeps
 * per-user state, so a later issue can run one shard per worker process
 * with users partitioned by a hash of their id.
 *
 * Memory: a user is its id plus a small map; a device is ~130 bytes plus its
 * id and its folder list (names and states of its last ping), and its UDP
 * registration when it has one.
 */
#ifndef NUDGE_SHARD_H
#define NUDGE_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/strmap.h"
#include "store/store.h"

struct conn;
struct udp_reg;

struct user;

struct device {
    struct user *user;
    struct conn *held;              /* the connection holding this device's ping */
    struct store_folder *folders;   /* last ping's folders; names owned here */
    uint32_t nfolders;
    uint32_t heartbeat;             /* last ping's heartbeat in s; 0: none yet */
    uint32_t heartbeat_hint;        /* what the device is advised (session/heartbeat.c) */
    uint32_t heartbeat_good;        /* longest heartbeat proven on its path; 0: none */
    uint32_t heartbeat_ceiling;     /* a heartbeat that failed on its path; 0: none */
    uint32_t heartbeat_successes;   /* proofs at the hint since it last changed */
    uint32_t expired_heartbeat;     /* the expiry answered last, awaiting its proof; 0: none */
    uint32_t asked_under;           /* the hint the device knew when it sent its last ping */
    uint32_t expired_under;         /* the same, for the expired ping awaiting proof */
    int64_t ceiling_since;          /* Unix time the ceiling was learned */
    uint64_t expired_at;            /* ms (monotonic) of that expiry answer */
    struct hbnet *net;              /* the client network it last pinged from */
    uint64_t held_since;            /* ms (monotonic): when the held ping began */
    uint64_t last_request;          /* ms (monotonic): the device's last ping */
    struct udp_reg *udp;            /* its UDP registration (push/udp.h), or NULL */
    char id[];
};

struct user {
    struct strmap devices;
    uint32_t held;                  /* devices with a held ping */
    uint32_t udp;                   /* devices with a UDP registration */
    uint32_t probes;                /* probes held now (push/probe.c) */
    char id[];
};

struct shard {
    struct strmap users;
};

void shard_init(struct shard *sh);
/* Frees users and devices (held connections must be gone already). */
void shard_free(struct shard *sh);

/* The user with this id; created when 'create' (else NULL when unknown). */
struct user *shard_user(struct shard *sh, const char *id, int create);

/* The device of u with this id; created when 'create'. */
struct device *user_device(struct user *u, const char *id, int create);

/* Is d a session now: does it hold a ping or have a UDP registration? */
static inline int device_present(const struct device *d)
{
    return d->held != NULL || d->udp != NULL;
}

/* How many of u's devices are sessions now (walks u's devices). */
uint32_t user_sessions(const struct user *u);

/* Hands d's record to the store (write-behind) so it outlives a restart. */
void device_persist(struct store *s, const struct device *d);

/* Removes and frees d (it must hold no ping). */
void user_device_remove(struct user *u, struct device *d);

/* Replaces d's folder list with n entries copied from f. */
void device_set_folders(struct device *d, const struct store_folder *f, size_t n);

#endif
