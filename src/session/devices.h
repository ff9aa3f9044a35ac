/*
 * devices.h — device records: what of a device must outlive a restart (its
 * last ping parameters, its learned heartbeat, its UDP registration), saved
 * through the store whenever one of them changes, and loaded back at
 * start-up into the shard and the UDP registry.
 *
 * Saves are write-behind (store.h): a crash may lose the last few, which
 * costs a device one full-body ping, never a notification.
 */
#ifndef NUDGE_DEVICES_H
#define NUDGE_DEVICES_H

struct device;
struct shard;
struct store;
struct udp;

struct devices {
    struct store *store;
    struct shard *shard;
    struct udp *udp;            /* NULL when UDP is off */
};

/* 'udp' may be set later (it saves through us, so it is made after). */
void devices_init(struct devices *dv, struct store *store, struct shard *shard, struct udp *udp);

/* Hands d's record to the store, with its UDP registration when it has one. */
void devices_save(struct devices *dv, const struct device *d);

/* devices_save for callbacks (udp.h udp_save_fn): 'arg' is the struct devices. */
void devices_on_save(void *arg, struct device *d);

/* Start-up: every saved record back into the shard (and its registration into UDP). */
void devices_load(struct devices *dv);

#endif
