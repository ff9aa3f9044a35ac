/*
 * ingest.h — PUT /v1/ingest/dovecot: new mail from Dovecot's push_notification
 * OX driver, with its HTTP Basic credentials ([ingest]) and a window that
 * takes a retried delivery for what it is (see ingest.c).
 */
#ifndef NUDGE_INGEST_H
#define NUDGE_INGEST_H

#include <stdint.h>

#include "common/strmap.h"

struct config;
struct conn;
struct dedup_entry;
struct events;
struct http_req;
struct metrics;
struct principal;
struct store;
struct worker_route;

struct ingest {
    const struct config *cfg;
    struct store *store;
    struct metrics *metrics;
    struct events *events;              /* what a committed delivery sets off */
    const struct worker_route *route;   /* to the owner of the user; NULL: all ours */
    struct strmap map;                  /* the duplicate window: key -> struct dedup_entry */
    struct dedup_entry *head, *tail;
    uint32_t count;
};

/* Sets g up with an empty duplicate window. */
void ingest_init(struct ingest *g, const struct config *cfg, struct store *store,
                 struct metrics *metrics, struct events *events, const struct worker_route *route);
/* Frees the window (no request may be in flight). */
void ingest_free(struct ingest *g);

/* The route handler (PUT, and POST for senders that cannot PUT); 'arg' is the struct ingest. */
void ingest_dovecot_handle(void *arg, struct conn *c, struct http_req *r,
                           const struct principal *who);

#endif
