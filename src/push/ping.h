/*
 * ping.h — POST /v1/ping, the long-poll ("Direct Push") channel, and the
 * wake-up of held pings when a folder changes.
 */
#ifndef NUDGE_PING_H
#define NUDGE_PING_H

#include <stddef.h>

#include "server/metrics.h"

struct conn;
struct http_req;
struct principal;
struct server;
struct store_event;
struct user;

/* The route handler. */
void ping_handle(struct conn *c, struct http_req *r, const struct principal *who);

/* The held ping on c reached its heartbeat: answer "expired". */
void ping_expired(struct conn *c);

/* c closes while holding a ping: forget the hold. */
void ping_conn_closed(struct conn *c);

/* Answers every held ping of u whose folders changed since the device's states. */
void ping_wake_user(struct server *s, struct user *u);

/*
 * The store committed ev[0..n) (events.c): wakes the held pings of their
 * users and tells UDP registrations, in that order. Events of a type that
 * says the user has seen the mail ("read", "expunge", "trash") first mark
 * their folder caught up for UDP, so no datagram announces mail already read.
 */
void events_applied(struct server *s, struct store_event *ev, size_t n);

/* At shutdown: answers the held ping on c with 503 shutting-down. */
void ping_shutdown(struct conn *c);

#endif
