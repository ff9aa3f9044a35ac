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

/* The device the body names, checked like every device id. NULL with e set. */
static const char *body_device(struct http_req *r, json_t **root, struct http_error *e)
{
    json_error_t je;
    json_t *dev;
    const char *device, *why;

    *root = NULL;
    if (r->body_len == 0) {
        http_error_bad(e, "the body must be a JSON object: {\"device\":\"...\"}");
        return NULL;
    }
    *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (*root == NULL) {
        http_error_bad(e, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(*root)) {
        http_error_bad(e, "the body must be a JSON object: {\"device\":\"...\"}");
        return NULL;
    }
    dev = json_object_get(*root, "device");
    if (dev == NULL) {
        http_error_bad(e, "device is required");
        return NULL;
    }
    if (!json_is_string(dev) || strlen(json_string_value(dev)) != json_string_length(dev)) {
        http_error_bad(e, "device must be a string");
        return NULL;
    }
    device = json_string_value(dev);
    if ((why = check_device_id(device, strlen(device))) != NULL) {
        http_error_bad(e, "device %s", why);
        return NULL;
    }
    return device;
}

void ticket_api_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct ticket_api *t = arg;
    int64_t expires = (int64_t)time(NULL) + t->cfg->auth_ticket_ttl;
    char ticket[TICKET_MAX + 1];
    struct http_error e;
    const char *device;
    struct jsonw w;
    json_t *root;
    size_t len;
    char *body;

    if ((device = body_device(r, &root, &e)) == NULL)
        goto refuse;
    if (ticket_sign(t->secret, who->subject, device, expires, token_now_ms(), ticket,
                    sizeof(ticket)) < 0) {
        http_error_set(&e, 503, "unavailable", "a ticket could not be signed");
        goto refuse;
    }
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "ticket");
    jw_str(&w, ticket);
    jw_key(&w, "expires");
    jw_u64(&w, (uint64_t)expires);
    jw_key(&w, "device");
    jw_str(&w, device);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    json_decref(root);
    /* A ticket is a credential: no cache may keep the answer. */
    conn_respond(c, 200, "Cache-Control: no-store\r\n", body, len);
    free(body);
    return;
refuse:
    json_decref(root);
    conn_respond_error(c, &e);
}
