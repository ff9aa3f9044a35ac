/*
 * pingrate.h — requests per device per minute: [ping] max_per_minute.
 *
 * A client that re-pings in a tight loop (a bug, a retry without back-off)
 * costs a parse, a store lookup and often a device record write per turn.
 * Each device counts its pings, ActiveSync Pings and stream and WebSocket
 * connection attempts in fixed one-minute windows; past the limit the
 * request is refused 429 with Retry-After until the window ends, or, where
 * the protocol has no answer the client understands (ActiveSync), held.
 *
 * A ping that follows an answer telling a change is not counted: re-pinging
 * at once after each change is what a well-behaved client does, and how
 * often it happens is the publishers' doing, not the client's. So the limit
 * only meets requests that come back without anything having happened.
 *
 * The count is 8 bytes in each device's shard slot: no allocation, no table.
 * It is logged once per device per window (event 1303), and [log] burst
 * bounds the lines of many offenders together.
 */
#ifndef NUDGE_PINGRATE_H
#define NUDGE_PINGRATE_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct device;
struct metrics;
struct shard;

struct pingrate {
    unsigned max;               /* requests per device per window; 0: no limit */
    size_t dslot;               /* of struct pingrate_dev in each device */
    struct metrics *metrics;
};

/* Sets pr up and reserves its device slot in sh (before any user exists). */
void pingrate_init(struct pingrate *pr, const struct config *cfg, struct shard *sh,
                   struct metrics *metrics);

/*
 * Counts one request of d ('what' names its kind for the log: ping,
 * activesync, stream, ws). Returns 0 when it is within the limit, else the
 * seconds until d's window ends (at least 1), the Retry-After to send.
 */
unsigned pingrate_count(struct pingrate *pr, struct device *d, const char *what);

/* d was just answered with a change: its next request is not counted. */
void pingrate_changed(struct pingrate *pr, struct device *d);

#endif
