/*
 * session.h — sessions, the per-user cap, the reaper, and the admin API.
 *
 * A session is a device that is present now: it holds a ping or has a UDP
 * registration (or both: still one session). A device never has two: its
 * newer ping supersedes its older one and a new registration replaces the
 * old, so a device that reconnects after a network drop never counts twice
 * against its user.
 *
 * At [sessions] per_user_limit a new session first reaps the user's dead
 * ones: a held connection the kernel says is no longer established, whose
 * keepalive probes go unanswered, or whose written data has gone
 * unacknowledged (TCP_INFO), and a UDP registration that an ICMP error
 * suspended (its address is gone). Only when the user is still at the cap is the
 * new one refused (429, event 1301 naming every session). This is the fix
 * for the Exchange failure where a user whose VPN dropped was locked out
 * for two hours by sessions nobody could see were dead.
 */
#ifndef NUDGE_SESSION_H
#define NUDGE_SESSION_H

struct conn;
struct device;
struct http_req;
struct principal;
struct server;
struct user;

/*
 * May device d of user u open a session (hold a ping, register for UDP)
 * now? Yes at once when d is a session already. Returns 0 yes; -1 after
 * answering c with 429 session-limit.
 */
int session_admit(struct server *s, struct conn *c, struct user *u, struct device *d);

/* The reason an admin's DELETE gives (it does not count against the device's path). */
#define SESSION_ENDED_BY_ADMIN "ended by an admin"

/* The held connection of d is closing for 'why' (not an answer): learn from it, log it. */
void session_closed(struct server *s, struct device *d, const char *why);

/* GET /v1/admin/sessions[?user=U] */
void sessions_list_handle(struct conn *c, struct http_req *r, const struct principal *who);
/* DELETE /v1/admin/sessions/{user}/{device} (each part URL-encoded) */
void sessions_end_handle(struct conn *c, struct http_req *r, const struct principal *who);

#endif
