/*
 * session.h — sessions, the per-user cap and the reaper.
 *
 * A session is a device that is present now: a connection holds its
 * request (a ping) or it has a UDP registration (or both: still one
 * session). A device never has two: its newer ping supersedes its older one
 * and a new registration replaces the old, so a device that reconnects
 * after a network drop never counts twice against its user.
 *
 * At [sessions] per_user_limit a new session first reaps the user's dead
 * ones: a held connection the kernel says is no longer established, whose
 * keepalive probes go unanswered, or whose written data has gone
 * unacknowledged (TCP_INFO), and a UDP registration that an ICMP error
 * suspended (its address is gone). Only when the user is still at the cap is the
 * new one refused (429, event 1301 naming every session). This is the fix
 * for the Exchange failure where a user whose VPN dropped was locked out
 * for two hours by sessions nobody could see were dead.
 *
 * This module keeps, per device, which connection holds it; the holder
 * (push/ping.c) says when it holds and lets go. The admin listing and
 * ending of sessions is admin/sessions_api.c.
 */
#ifndef NUDGE_SESSION_H
#define NUDGE_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "conn/conn.h"

struct config;
struct device;
struct devices;
struct heartbeat;
struct http_error;
struct jsonw;
struct metrics;
struct shard;
struct udp;
struct user;

/* What this module keeps per device (its shard slot). */
struct session_dev {
    struct conn *held;          /* the connection holding the device's ping, or NULL */
    uint64_t held_since;        /* ms (monotonic): when the held ping began */
    uint64_t last_request;      /* ms (monotonic): the device's last ping */
};

struct sessions {
    const struct config *cfg;
    struct shard *shard;
    struct metrics *metrics;
    struct heartbeat *hb;
    struct udp *udp;            /* NULL when UDP is off */
    struct devices *devices;
    size_t dslot;               /* of struct session_dev in each device */
    size_t uslot;               /* of the user's held count (uint32_t) */
};

/* Sets ss up and reserves its slots in sh (before any user exists). */
void sessions_init(struct sessions *ss, const struct config *cfg, struct shard *sh,
                   struct metrics *metrics, struct heartbeat *hb, struct udp *udp,
                   struct devices *devices);

/* This module's record of d. */
static inline struct session_dev *session_of(const struct sessions *ss, const struct device *d)
{
    return (struct session_dev *)((char *)d - ss->dslot);
}

/* How many of u's devices have a held connection. */
static inline uint32_t session_held_count(const struct sessions *ss, const struct user *u)
{
    return *(const uint32_t *)((const char *)u - ss->uslot);
}

/* Connection c holds d's request now (d held none). */
void session_hold(struct sessions *ss, struct device *d, struct conn *c);

/* d's held connection lets go of it; returns that connection (or NULL when none). */
struct conn *session_release(struct sessions *ss, struct device *d);

/*
 * A newer request of d takes over: the connection holding d's session is
 * answered by its own holder, in its own words (a ping "superseded", an
 * ActiveSync Status 1, a stream ends), which lets go of it. Returns 1 when
 * one was held.
 */
int session_supersede(struct sessions *ss, struct device *d);

/* Is d a session now: a held connection or a UDP registration? */
int session_present(const struct sessions *ss, const struct device *d);

/* How many of u's devices are sessions now (walks u's devices). */
uint32_t session_count(const struct sessions *ss, const struct user *u);

/* Sessions now, over every user (held pings and registrations, each device once). */
uint64_t sessions_now(const struct sessions *ss);

/*
 * May device d of user u open a session (hold a ping, register for UDP)
 * now? Yes at once when d is a session already. Returns 0 yes; -1 with e
 * set to the 429 session-limit answer.
 */
int session_admit(struct sessions *ss, struct user *u, struct device *d, struct http_error *e);

/*
 * The held connection of d closed before its answer for 'why' ('text' for
 * the log): the path or the peer failed, so the heartbeat learns from it
 * (unless an admin ended it); logged as event 1302.
 */
void session_closed(struct sessions *ss, struct device *d, enum conn_why why, const char *text);

/*
 * As session_closed for a stream or a WebSocket: logged the same, but no
 * evidence about the path, since it was not held for d's heartbeat.
 */
void session_stream_closed(struct sessions *ss, struct device *d, enum conn_why why,
                           const char *text);

/* Ends d's session (an admin asked): its held connection and its registration. 0, or -1: none. */
int session_end(struct sessions *ss, struct device *d);

/* Appends u's sessions to the JSON array being written in w; *count grows by their number. */
void session_list_user(const struct sessions *ss, struct jsonw *w, struct user *u, uint64_t now,
                       size_t *count);

#endif
