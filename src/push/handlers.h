/*
 * handlers.h — the route handlers besides ping (ping.h), and the checks on
 * names that every handler applies the same way.
 */
#ifndef NUDGE_HANDLERS_H
#define NUDGE_HANDLERS_H

#include <stddef.h>

struct conn;
struct http_req;
struct principal;

/* GET /v1/state (state.c). */
void state_handle(struct conn *c, struct http_req *r, const struct principal *who);
/* POST /v1/events (events.c). */
void events_handle(struct conn *c, struct http_req *r, const struct principal *who);
/* GET /healthz, GET /metrics (server/admin.c). */
void admin_healthz(struct conn *c, struct http_req *r, const struct principal *who);
void admin_metrics(struct conn *c, struct http_req *r, const struct principal *who);
/* GET /v1/admin/workers (server/admin.c): per-worker figures and totals. */
void admin_workers(struct conn *c, struct http_req *r, const struct principal *who);

#define DEVICE_ID_MAX 128
#define FOLDER_NAME_MAX 255
#define USER_ID_MAX 255

/*
 * Name checks (validate.c). Each returns NULL when s[0..len) is acceptable,
 * else a reason fit for an error message ("must be 1 to 255 bytes").
 * Names are 1..max bytes with no control characters (and so no NUL).
 */
const char *check_device_id(const char *s, size_t len);
const char *check_folder_name(const char *s, size_t len);
const char *check_user_id(const char *s, size_t len);
/* Event types: 1..32 of a-z, 0-9, '-', '_'. */
const char *check_event_type(const char *s, size_t len);

#endif
