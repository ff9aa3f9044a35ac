/*
 * shard.h — the users and devices a worker keeps in memory, as plain data:
 * who they are, each device's last ping parameters and its learned
 * heartbeat (the device record the store saves). Folder states are the
 * store's.
 *
 * The shard knows nothing of what uses it. A module above that keeps
 * something per user or per device (a held connection, a UDP registration,
 * heartbeat evidence, a probe count) reserves a slot at start-up, before the
 * first user exists, and finds its slot from the user or device pointer:
 * the slots lie in the same allocation, right before the struct, so they
 * cost no pointer and no second allocation (a held ping's device is part of
 * the memory per held ping). Slots are zeroed when their user or device is
 * made. This is nginx's per-module request context, laid out in place.
 *
 * Memory: a user is its id plus a small map and its slots; a device is ~56
 * bytes plus its id, its slots and its folder list.
 */
#ifndef NUDGE_SHARD_H
#define NUDGE_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/strmap.h"
#include "store/store.h"

struct user;

struct device {
    struct user *user;
    struct store_folder *folders;   /* last ping's folders; names owned here */
    uint32_t nfolders;
    uint32_t heartbeat;             /* last ping's heartbeat in s; 0: none yet */
    uint32_t heartbeat_hint;        /* what the device is advised (session/heartbeat.c) */
    uint32_t heartbeat_good;        /* longest heartbeat proven on its path; 0: none */
    uint32_t heartbeat_ceiling;     /* a heartbeat that failed on its path; 0: none */
    int64_t ceiling_since;          /* Unix time the ceiling was learned */
    char id[];
};

struct user {
    struct strmap devices;
    char id[];
};

struct shard {
    struct strmap users;
    size_t user_ext, device_ext;    /* slot bytes before each user, each device */
};

void shard_init(struct shard *sh);
/* Frees users and devices (nothing may point into them any more). */
void shard_free(struct shard *sh);

/*
 * Reserves 'size' bytes per user (per device) for a module above and
 * returns the slot's offset, for shard_slot(). Only before the first user
 * is made: slots change the layout of every user and device.
 */
size_t shard_user_slot(struct shard *sh, size_t size);
size_t shard_device_slot(struct shard *sh, size_t size);

/* The slot at 'offset' of a user or device (what shard_*_slot returned). */
static inline void *shard_slot(const void *user_or_device, size_t offset)
{
    return (char *)user_or_device - offset;
}

/*
 * For a device slot holding a pointer (offset from shard_device_slot):
 * calls drop(pointer) for every device whose slot is not NULL and clears
 * it. What a module that keeps a struct per device does at its end.
 */
void shard_drop_device_slots(struct shard *sh, size_t offset, void (*drop)(void *));

/* The user with this id; created when 'create' (else NULL when unknown). */
struct user *shard_user(struct shard *sh, const char *id, int create);

/* The device of u with this id; created when 'create' (else NULL when unknown). */
struct device *shard_device(struct shard *sh, struct user *u, const char *id, int create);

/* Removes and frees d. */
void shard_device_remove(struct shard *sh, struct device *d);

/* Replaces d's folder list with n entries copied from f. */
void shard_set_folders(struct device *d, const struct store_folder *f, size_t n);

/* The store's record of d, pointing into d (its UDP registration left NULL). */
void shard_record(const struct device *d, struct store_device *out);

#endif
