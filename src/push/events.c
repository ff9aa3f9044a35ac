/*
 * events.c — POST /v1/events: the mail server reports folder changes.
 *
 * A batch is checked whole before anything is applied, so a rejected batch
 * changes nothing. The store then bumps every event's folder and calls back
 * once the new states are durable; only then are held pings woken and the
 * publisher answered, so nobody is ever told a state a crash could undo.
 * The request waits in a small job that survives the publisher hanging up.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "http/request.h"
#include "push/handlers.h"
#include "push/ping.h"
#include "push/udp.h"
#include "server/conn.h"
#include "server/router.h"
#include "server/server.h"

struct publish_job {
    struct conn *conn;        /* first: conn_close clears it if the publisher goes */
    struct server *srv;
    json_t *root;             /* owns the strings ev[] points into */
    struct store_event *ev;
    size_t n;
};

static void job_free(struct publish_job *job)
{
    json_decref(job->root);
    free(job->ev);
    free(job);
}

/* Checks element i; fills ev. NULL when fine, else the message (in msg). */
static const char *check_event(json_t *e, const char *prefix, struct store_event *ev, char *msg,
                               size_t msglen)
{
    static const struct {
        const char *key;
        const char *(*check)(const char *, size_t);
        int required;
    } fields[] = {
        {"user", check_user_id, 1},
        {"folder", check_folder_name, 1},
        {"type", check_event_type, 0},
    };

    if (!json_is_object(e)) {
        size_t plen = strlen(prefix);
        if (plen)
            snprintf(msg, msglen, "%.*s: must be an object", (int)(plen - 1), prefix);
        else
            snprintf(msg, msglen, "the event must be an object");
        return msg;
    }
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        json_t *v = json_object_get(e, fields[f].key);
        const char *why;
        if (v == NULL && !fields[f].required)
            continue;
        if (v == NULL) {
            snprintf(msg, msglen, "%s%s: is required", prefix, fields[f].key);
            return msg;
        }
        if (!json_is_string(v)) {
            snprintf(msg, msglen, "%s%s: must be a string", prefix, fields[f].key);
            return msg;
        }
        why = fields[f].check(json_string_value(v), json_string_length(v));
        if (why) {
            snprintf(msg, msglen, "%s%s: %s", prefix, fields[f].key, why);
            return msg;
        }
    }
    ev->user = json_string_value(json_object_get(e, "user"));
    ev->folder = json_string_value(json_object_get(e, "folder"));
    ev->type = json_string_value(json_object_get(e, "type"));
    return NULL;
}

/* Types after which the user has the mail: UDP need not announce it (udp.h). */
static int seen_type(const char *type)
{
    return type && (strcmp(type, "read") == 0 || strcmp(type, "expunge") == 0 ||
                    strcmp(type, "trash") == 0);
}

void events_applied(struct server *s, struct store_event *ev, size_t n)
{
    struct user *last = NULL;

    s->metrics.events_published += n;
    for (size_t i = 0; i < n; i++) {
        struct user *u;
        if (!seen_type(ev[i].type))
            continue;
        u = shard_user(&s->shard, ev[i].user, 0);
        if (u && u->udp)
            udp_caught_up(s, u, ev[i].folder, ev[i].state);
    }
    for (size_t i = 0; i < n; i++) {
        struct user *u = shard_user(&s->shard, ev[i].user, 0);
        if (u == NULL || u == last)
            continue;
        /* Each looks at all of the user's folders: once per run of the user's events. */
        last = u;
        if (u->held)
            ping_wake_user(s, u);
        if (u->udp)
            udp_on_change(s, u);
    }
}

static void on_bumped(void *arg, struct store_event *ev, size_t n, int status)
{
    struct publish_job *job = arg;
    struct server *s = job->srv;
    struct jsonw w;
    size_t len;
    char *body;

    if (status < 0) {
        if (job->conn)
            conn_respond_error(job->conn, 503, "store-error", "the store could not commit the events");
        job_free(job);
        return;
    }
    s->metrics.publish_batches++;
    events_applied(s, ev, n);
    if (job->conn) {
        jw_init(&w);
        jw_obj_begin(&w);
        jw_key(&w, "states");
        jw_arr_begin(&w);
        for (size_t i = 0; i < n; i++) {
            jw_obj_begin(&w);
            jw_key(&w, "user");
            jw_str(&w, ev[i].user);
            jw_key(&w, "folder");
            jw_str(&w, ev[i].folder);
            jw_key(&w, "state");
            jw_u64_str(&w, ev[i].state);
            jw_obj_end(&w);
        }
        jw_arr_end(&w);
        jw_obj_end(&w);
        body = jw_take(&w, &len);
        conn_respond(job->conn, 200, NULL, body, len);
        free(body);
    }
    job_free(job);
}

static void reject(struct conn *c, const char *msg)
{
    char q[600];

    LOG(LOG_INFO, publish_rejected, "reason=%s", log_q(q, sizeof(q), msg));
    conn_respond_error(c, 400, "bad-request", msg);
}

void events_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct publish_job *job = NULL;
    json_error_t e;
    json_t *root;
    size_t n;
    char msg[512];
    int rc;

    (void)who;
    if (r->body_len == 0) {
        reject(c, "the body must be an event object or an array of events");
        return;
    }
    root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
    if (root == NULL) {
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", e.line, e.column,
                 e.text);
        reject(c, msg);
        return;
    }
    n = json_is_array(root) ? json_array_size(root) : 1;
    if (!json_is_array(root) && !json_is_object(root)) {
        reject(c, "the body must be an event object or an array of events");
        goto fail;
    }
    if (n == 0) {
        reject(c, "the array holds no events");
        goto fail;
    }
    job = xcalloc(1, sizeof(*job));
    job->ev = xcalloc(n, sizeof(*job->ev));
    job->n = n;
    job->srv = c->srv;
    job->root = root;
    for (size_t i = 0; i < n; i++) {
        char prefix[40] = "";
        json_t *el = json_is_array(root) ? json_array_get(root, i) : root;
        if (json_is_array(root))
            snprintf(prefix, sizeof(prefix), "events[%zu].", i);
        if (check_event(el, prefix, &job->ev[i], msg, sizeof(msg)) != NULL) {
            reject(c, msg);
            job_free(job);
            return;
        }
    }
    job->conn = c;
    conn_wait(c, job);
    rc = store_bump(c->srv->store, job->ev, job->n, on_bumped, job);
    if (rc < 0) {
        conn_respond_error(c, 503, "store-error", "the store refused the events");
        job_free(job);
    }
    return;
fail:
    json_decref(root);
}
