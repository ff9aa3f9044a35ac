/*
 * limit.h — failed sign-ins counted per key (a client address, a user) in
 * fixed windows, so a brute force is refused with 429 before it costs the
 * password backend anything.
 *
 * The counts live in a table of slots, one 64-bit word each (the window's
 * number in the high half, the failures in it in the low half), updated
 * with atomic operations: with workers the table is in memory all of them
 * share (worker.h), so the limits hold over the whole server whichever
 * worker a request reached. A key's slot is a seeded hash of it: the seed
 * is random per start, so nobody can aim a name at another user's slot;
 * two keys sharing a slot by chance share its count, which only ever makes
 * a limit stricter, and at 16k slots per table that takes many attackers.
 */
#ifndef NUDGE_LIMIT_H
#define NUDGE_LIMIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Slots per table: 128 KiB each. */
#define AUTH_LIMIT_SLOTS 16384

struct auth_limit {
    _Atomic uint64_t *slots;   /* [AUTH_LIMIT_SLOTS], private or shared */
    uint64_t seed;
    unsigned max;              /* failures per window; 0: no limit */
    unsigned window;           /* s */
};

/* Sets l up over slots[AUTH_LIMIT_SLOTS] (zeroed) with the hash seed every sharer uses. */
void auth_limit_init(struct auth_limit *l, _Atomic uint64_t *slots, uint64_t seed, unsigned max,
                     unsigned window);

/*
 * Sets l up as a second limit over like's slots and seed, with its own max
 * and like's window: what a caller keys apart (a tag byte before the key)
 * costs no second table, and with workers is shared as like's is.
 */
void auth_limit_share(struct auth_limit *l, const struct auth_limit *like, unsigned max);

/* Is key[0..len) over its limit at 'now' (s)? The seconds until it may try again, or 0. */
unsigned auth_limit_check(const struct auth_limit *l, const void *key, size_t len, uint64_t now);

/*
 * Counts one failure of key at 'now'. Returns the seconds to wait when this
 * failure reached the limit (the moment to log it, once per window), else 0.
 */
unsigned auth_limit_fail(struct auth_limit *l, const void *key, size_t len, uint64_t now);

#endif
