/*
 * ticket_api.h — POST /v1/ticket: a signed-in client (a user token, or
 * HTTP Basic where [auth] basic allows) asks for a single-use ticket bound
 * to one of its devices, for a browser's EventSource or WebSocket, which
 * can put it in the URL but cannot send an Authorization header. The
 * format and the single use are auth/ticket.h's; the router redeems them.
 * POST /v1/admin/tickets is the same for an admin, for any user.
 */
#ifndef NUDGE_TICKET_API_H
#define NUDGE_TICKET_API_H

struct config;
struct conn;
struct http_req;
struct metrics;
struct principal;
struct secret;

struct ticket_api {
    const struct config *cfg;
    const struct secret *secret;
    struct metrics *metrics;
};

void ticket_api_init(struct ticket_api *t, const struct config *cfg, const struct secret *secret,
                     struct metrics *metrics);

/*
 * The route handler: body {"device":"D"}, answer
 * {"ticket":"t1....","expires":<unix s>,"device":"D"} with
 * Cache-Control: no-store. 'arg' is the struct ticket_api.
 */
void ticket_api_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

/*
 * POST /v1/admin/tickets (admin credential): body {"user":"U","device":"D"},
 * answer {"ticket":...,"expires":...,"user":"U","device":"D"}: a ticket
 * for any user, so the status page can watch that user's stream
 * (docs/status.md). Minted where it arrives: redeeming routes by the user.
 */
void ticket_api_admin_handle(void *arg, struct conn *c, struct http_req *r,
                             const struct principal *who);

#endif
