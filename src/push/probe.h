/*
 * probe.h — GET /v1/probe?hold=N: a request held N seconds on a socket with
 * TCP keepalive off, so that nothing crosses the path while it waits. If a
 * middlebox on the path drops flows idle for less than N seconds, the answer
 * never arrives; `nudge probe` uses that to measure the path's idle timeout.
 */
#ifndef NUDGE_PROBE_H
#define NUDGE_PROBE_H

struct conn;
struct http_req;
struct principal;
struct probe;

/* At most this many probes per user at once: a probe ladder needs a handful. */
#define PROBE_MAX_PER_USER 16

/* The route handler. */
void probe_handle(struct conn *c, struct http_req *r, const struct principal *who);

/* The probe on c has been held its full time: answer {"held":N}. */
void probe_expired(struct conn *c);

/* The probe's connection is done with it (answered or closed): free it. */
void probe_end(struct probe *p);

#endif
