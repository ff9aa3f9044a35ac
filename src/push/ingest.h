/*
 * ingest.h — PUT /v1/ingest/dovecot: new mail from Dovecot's push_notification
 * OX driver, with its HTTP Basic credentials ([ingest]) and a window that
 * takes a retried delivery for what it is (see ingest.c).
 */
#ifndef NUDGE_INGEST_H
#define NUDGE_INGEST_H

struct conn;
struct http_req;
struct principal;
struct server;

/* Sets up the duplicate window (server_init). */
void ingest_init(struct server *s);
/* Frees it (server_free; no request may be in flight). */
void ingest_free(struct server *s);

/* The route handler (PUT, and POST for senders that cannot PUT). */
void ingest_dovecot_handle(struct conn *c, struct http_req *r, const struct principal *who);

#endif
