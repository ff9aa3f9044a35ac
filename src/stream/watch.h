/*
 * watch.h — what an event stream watches, shared by its transports (SSE in
 * sse.c, WebSocket in ws.c): the folders, which of them changed since the
 * client last heard, and the device the stream is a session of.
 *
 * The states a client has live in its device's folder list (struct device
 * folders): a stream keeps no copy and no history.
 */
#ifndef NUDGE_STREAM_WATCH_H
#define NUDGE_STREAM_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct config;
struct conn;
struct device;
struct http_error;
struct http_req;
struct jsonw;
struct metrics;
struct principal;
struct shard;
struct user;

/* A growing list of folders, the names borrowed (shard_set_folders copies them). */
struct watch_list {
    struct store_folder *f;
    size_t n, cap, max;
};

/* Adds 'name' with 'state' unless listed already or the list is full (max). */
void watch_list_add(struct watch_list *l, const char *name, uint64_t state);

/* A store_list callback: adds each folder as unknown to the client. */
void watch_list_on_folder(void *list, const char *folder, uint64_t state);

/*
 * A stream of every folder (types=*, dataTypes null): folders the user has
 * now that d does not watch yet are added, unknown to the client, so that
 * the next change names them. At most 'max' folders in all.
 */
void watch_new_folders(struct store *st, struct device *d, size_t max);

/*
 * When folders of d moved since the client last heard: starts w (jw_init)
 * with 'prefix' and a StateChange object naming them, and records that the
 * client has them now:
 *   <prefix>{"@type":"StateChange","changed":{"<user>":{"<folder>":"<state>",...}}
 * (the object itself left open, for the transport's members). Returns how
 * many folders it named; 0: w was not started (nothing to say, nothing to free).
 */
int watch_changes(struct store *st, struct device *d, struct jsonw *w, const char *prefix);

/* Appends the state id of what d's client has now (stream/state_id.h). */
void watch_state_id(const struct device *d, struct jsonw *w);

/*
 * A device of its own for a stream that named none: "stream-" and a
 * number drawn from seed and *draws, unused by u. Created.
 */
struct device *watch_anonymous_device(struct shard *sh, struct user *u, uint64_t seed,
                                      uint64_t *draws);

/* A client's ping interval N, clamped to [stream] ping_min..ping_max (RFC 8620 lets the server); 0 stays 0. */
unsigned watch_clamp_ping(const struct config *cfg, unsigned long n);

/* The ping interval of a stream that asked for none: [stream] ping, else derived as the heartbeat max is. */
unsigned watch_default_ping(const struct config *cfg);

/*
 * The device a stream request names into dev[0..len): its ticket's, else
 * the device= query parameter (checked as for pings), else "" (the stream
 * gets a device of its own). 0, or -1 with a 400 in e.
 */
int watch_device_param(const struct http_req *r, const struct principal *who, char *dev,
                       size_t len, struct http_error *e);

/*
 * Closes c, d's stream, when its client does not take what it is sent:
 * the backlog passed [stream] max_unsent, or stayed over soft_unsent for
 * soft_seconds (*soft_since: when it went over, 0: it is not). Logs event
 * 1900. 1 when it closed c (nothing more may be done with c or d).
 */
int watch_too_slow(const struct config *cfg, struct metrics *m, struct conn *c, struct device *d,
                   uint64_t *soft_since);

#endif
