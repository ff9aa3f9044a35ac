/*
 * ticket_api.c — POST /v1/ticket; see ticket_api.h. Minting is stateless
 * (a signature and 16 random bytes): only redeeming remembers anything,
 * on the worker owning the user. A ticket lives [auth] ticket_ttl (60 s
 * by default, at most TICKET_TTL_MAX): long enough for a page to open its
 * stream, short enough that a ticket seen in a URL later is worth nothing.
 */
#include "push/ticket_api.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "auth/principal.h"
#include "auth/ticket.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/metrics.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"

_Static_assert(PRINCIPAL_DEVICE_MAX == TICKET_DEVICE_MAX,
               "a ticket's device must fit the principal's");

void ticket_api_init(struct ticket_api *t, const struct config *cfg, const struct secret *secret,
                     struct metrics *metrics)
{
    t->cfg = cfg;
    t->secret = secret;
    t->metrics = metrics;
}

/*
 * The string member 'name' of the body's object, checked by 'check' (the
 * rules of push/check.h). NULL with e set.
 */
static const char *body_id(json_t *root, const char *name,
                           const char *(*check)(const char *, size_t), struct http_error *e)
{
    json_t *v = json_object_get(root, name);
    const char *s, *why;

    if (v == NULL) {
        http_error_bad(e, "%s is required", name);
        return NULL;
    }
    /* A string with a NUL inside is no id: its length and strlen differ. */
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        http_error_bad(e, "%s must be a string", name);
        return NULL;
    }
    s = json_string_value(v);
    if ((why = check(s, strlen(s))) != NULL) {
        http_error_bad(e, "%s %s", name, why);
        return NULL;
    }
    return s;
}

/*
 * The body as a JSON object into *root (the caller's to json_decref, even
 * on failure), its "device" into *device and, when 'user' is not NULL, its
 * "user" into *user. 0, or -1 with e set.
 */
static int body_ids(struct http_req *r, json_t **root, const char **user, const char **device,
                    struct http_error *e)
{
    const char *shape = user ? "{\"user\":\"...\",\"device\":\"...\"}" : "{\"device\":\"...\"}";
    json_error_t je;

    *root = NULL;
    if (r->body_len == 0) {
        http_error_bad(e, "the body must be a JSON object: %s", shape);
        return -1;
    }
    *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (*root == NULL) {
        http_error_bad(e, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        return -1;
    }
    if (!json_is_object(*root)) {
        http_error_bad(e, "the body must be a JSON object: %s", shape);
        return -1;
    }
    if (user && (*user = body_id(*root, "user", check_user_id, e)) == NULL)
        return -1;
    if ((*device = body_id(*root, "device", check_device_id, e)) == NULL)
        return -1;
    return 0;
}

/* Signs a ticket for (user, device) and answers it, or the reason it could not be. */
static void answer_ticket(struct ticket_api *t, struct conn *c, const char *user,
                          const char *device, int name_user)
{
    int64_t expires = (int64_t)time(NULL) + t->cfg->auth_ticket_ttl;
    char ticket[TICKET_MAX + 1];
    struct http_error e;
    struct jsonw w;
    size_t len;
    char *body;

    if (ticket_sign(t->secret, user, device, expires, token_now_ms(), ticket, sizeof(ticket)) < 0) {
        http_error_set(&e, 503, "unavailable", "a ticket could not be signed");
        conn_respond_error(c, &e);
        return;
    }
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "ticket");
    jw_str(&w, ticket);
    jw_key(&w, "expires");
    jw_u64(&w, (uint64_t)expires);
    if (name_user) {
        jw_key(&w, "user");
        jw_str(&w, user);
    }
    jw_key(&w, "device");
    jw_str(&w, device);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    /* A ticket is a credential: no cache may keep the answer. */
    conn_respond(c, 200, "Cache-Control: no-store\r\n", body, len);
    free(body);
}

void ticket_api_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct http_error e;
    const char *device;
    json_t *root;

    if (body_ids(r, &root, NULL, &device, &e) < 0)
        conn_respond_error(c, &e);
    else
        answer_ticket(arg, c, who->subject, device, 0);
    json_decref(root);
}

void ticket_api_admin_handle(void *arg, struct conn *c, struct http_req *r,
                             const struct principal *who)
{
    const char *user, *device;
    struct http_error e;
    json_t *root;

    (void)who;
    if (body_ids(r, &root, &user, &device, &e) < 0)
        conn_respond_error(c, &e);
    else
        answer_ticket(arg, c, user, device, 1);
    json_decref(root);
}
