/*
 * events.c — POST /v1/events: the mail server reports folder changes.
 *
 * A batch is checked whole before anything is applied, so a rejected batch
 * changes nothing. The store then bumps every event's folder and calls back
 * once the new states are durable; only then are held pings woken and the
 * publisher answered, so nobody is ever told a state a crash could undo.
 * The request waits in a small job that survives the publisher hanging up.
 *
 * With workers, each event goes to the worker owning its user: the batch is
 * still checked whole here, then split into one bump per owner (messages
 * of at most a few hundred KiB each, worker/mesh.h), and answered once every
 * part has been committed, with the states in the batch's order. Atomicity
 * is per worker: if one part fails (the owner restarted), the publisher is
 * answered 503 and retries the batch; the parts that did commit are bumped
 * once more, which costs their devices one extra sync and loses nothing.
 */
#include "push/events.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/principal.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "push/ping.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "udp/udp.h"
#include "worker/mesh.h"
#include "worker/worker.h"

struct publish_job {
    struct conn *conn;        /* NULL once the publisher went away */
    struct events *ev;
    json_t *root;             /* owns the strings e[] points into */
    struct store_event *e;
    size_t n;
    char **metas;             /* e[i].meta's text, owned here; NULL when no event has any */
    /* With workers: whether a part failed, the local part and the gather counting the parts. */
    int failed;
    struct store_event *lev;
    size_t *lidx, ln;
    struct mesh_gather *gather;
};

/* A part sent to another worker: which of job->e it carries. */
struct bump_part {
    struct publish_job *job;
    size_t n;
    size_t idx[];
};

static void job_free(struct publish_job *job)
{
    for (size_t i = 0; job->metas && i < job->n; i++)
        free(job->metas[i]);
    free(job->metas);
    json_decref(job->root);
    free(job->e);
    free(job->lev);
    free(job->lidx);
    free(job);
}

/*
 * Checks event e, element i of the array (-1: the body is one event); fills
 * ev. NULL when fine, else the message (in msg). The "events[i]." prefix of
 * a message is written only when there is one: it is an snprintf per event.
 */
static const char *check_event(json_t *e, long i, struct store_event *ev, char *msg,
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
    char prefix[40] = "";

    if (!json_is_object(e)) {
        if (i >= 0)
            snprintf(msg, msglen, "events[%ld]: must be an object", i);
        else
            snprintf(msg, msglen, "the event must be an object");
        return msg;
    }
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        json_t *v = json_object_get(e, fields[f].key);
        const char *why;
        if (v == NULL && !fields[f].required)
            continue;
        if (v == NULL)
            why = "is required";
        else if (!json_is_string(v))
            why = "must be a string";
        else if ((why = fields[f].check(json_string_value(v), json_string_length(v))) == NULL)
            continue;
        if (i >= 0)
            snprintf(prefix, sizeof(prefix), "events[%ld].", i);
        snprintf(msg, msglen, "%s%s: %s", prefix, fields[f].key, why);
        return msg;
    }
    ev->user = json_string_value(json_object_get(e, "user"));
    ev->folder = json_string_value(json_object_get(e, "folder"));
    ev->type = json_string_value(json_object_get(e, "type"));
    return NULL;
}

/*
 * The publisher's fields of event el beyond user, folder and type (from,
 * subject, unseen, ...) as a JSON object's text, kept in job->metas[i] for
 * the streams that pass them on; NULL when there are none.
 */
static const char *keep_meta(struct publish_job *job, size_t i, json_t *el)
{
    json_t *m = NULL, *v;
    const char *k;

    json_object_foreach(el, k, v) {
        if (strcmp(k, "user") == 0 || strcmp(k, "folder") == 0 || strcmp(k, "type") == 0)
            continue;
        if (m == NULL)
            m = json_object();
        json_object_set(m, k, v);
    }
    if (m == NULL)
        return NULL;
    if (job->metas == NULL)
        job->metas = xcalloc(job->n, sizeof(*job->metas));
    job->metas[i] = json_dumps(m, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(m);
    return job->metas[i];
}

/* Types after which the user has the mail: UDP need not announce it (udp.h). */
static int seen_type(const char *type)
{
    return type && (strcmp(type, "read") == 0 || strcmp(type, "expunge") == 0 ||
                    strcmp(type, "trash") == 0);
}

void events_applied(struct events *ev, struct store_event *e, size_t n)
{
    struct user *last = NULL;

    ev->metrics->events_published += n;
    for (size_t i = 0; i < n; i++) {
        struct user *u;
        if (!seen_type(e[i].type))
            continue;
        u = shard_user(ev->shard, e[i].user, 0);
        if (u && udp_user_count(ev->udp, u))
            udp_caught_up(ev->udp, u, e[i].folder, e[i].state);
    }
    for (size_t i = 0, run; i < n; i += run) {
        struct user *u = shard_user(ev->shard, e[i].user, 0);
        /* Each looks at all of the user's folders: once per run of the user's events. */
        for (run = 1; i + run < n && strcmp(e[i + run].user, e[i].user) == 0; run++)
            ;
        if (u == NULL || u == last)
            continue;
        last = u;
        if (session_held_count(ev->ping->sessions, u))
            ping_wake_user(ev->ping, u, e + i, run);
        if (udp_user_count(ev->udp, u))
            udp_on_change(ev->udp, u);
    }
}

static void answer_states(struct publish_job *job)
{
    struct jsonw w;
    size_t len;
    char *body;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "states");
    jw_arr_begin(&w);
    for (size_t i = 0; i < job->n; i++) {
        jw_obj_begin(&w);
        jw_key(&w, "user");
        jw_str(&w, job->e[i].user);
        jw_key(&w, "folder");
        jw_str(&w, job->e[i].folder);
        jw_key(&w, "state");
        jw_u64_str(&w, job->e[i].state);
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(job->conn, 200, NULL, body, len);
    free(body);
}

static void answer_error(struct conn *c, int status, const char *word, const char *msg)
{
    struct http_error e;

    http_error_set(&e, status, word, "%s", msg);
    conn_respond_error(c, &e);
}

static void on_bumped(void *arg, struct store_event *e, size_t n, int status)
{
    struct publish_job *job = arg;

    if (status < 0) {
        if (job->conn)
            answer_error(job->conn, 503, "store-error", "the store could not commit the events");
        job_free(job);
        return;
    }
    job->ev->metrics->publish_batches++;
    events_applied(job->ev, e, n);
    if (job->conn)
        answer_states(job);
    job_free(job);
}

/* ---- with workers: one part per owner -------------------------------- */

/* Every part is in (the gather is done): answer the publisher. */
static void on_parts_done(void *arg)
{
    struct publish_job *job = arg;

    if (job->failed) {
        if (job->conn)
            answer_error(job->conn, 503, "store-error",
                         "some events could not be committed (a worker restarted): retry "
                         "the batch; events applied twice only cost an extra sync");
    } else {
        job->ev->metrics->publish_batches++;
        if (job->conn)
            answer_states(job);
    }
    job_free(job);
}

static void on_local_bumped(void *arg, struct store_event *e, size_t n, int status)
{
    struct publish_job *job = arg;

    if (status < 0) {
        job->failed = 1;
    } else {
        events_applied(job->ev, e, n);
        for (size_t k = 0; k < n; k++)
            job->e[job->lidx[k]].state = e[k].state;
    }
    mesh_gather_release(job->gather);
}

/* An owner's answer to one part: the new states of its events, in order. */
static void on_part(void *arg, void *call_arg, unsigned from, const char *p, size_t len,
                    int status)
{
    struct publish_job *job = arg;
    struct bump_part *part = call_arg;
    int32_t rstatus;

    (void)from;
    if (status == MESH_MORE)
        return; /* bump replies come whole */
    if (status < 0 || len != sizeof(rstatus) + part->n * sizeof(uint64_t)) {
        job->failed = 1;
    } else {
        memcpy(&rstatus, p, sizeof(rstatus));
        if (rstatus < 0)
            job->failed = 1;
        for (size_t k = 0; k < part->n && rstatus >= 0; k++)
            memcpy(&job->e[part->idx[k]].state, p + sizeof(rstatus) + k * sizeof(uint64_t),
                   sizeof(uint64_t));
    }
    free(part);
}

/* Sends buf (events idx[0..n) of the job) to worker 'to' as one part. */
static void send_part(struct publish_job *job, unsigned to, const char *buf, size_t blen,
                      const size_t *idx, size_t n)
{
    struct bump_part *part = xmalloc(sizeof(*part) + n * sizeof(size_t));
    uint32_t count = (uint32_t)n;
    struct iovec iov[2] = {{.iov_base = &count, .iov_len = sizeof(count)},
                           {.iov_base = (void *)buf, .iov_len = blen}};

    part->job = job;
    part->n = n;
    memcpy(part->idx, idx, n * sizeof(size_t));
    if (mesh_gather_call(job->gather, to, EVENTS_MSG_BUMP, iov, 2, part) < 0) {
        char q[64];
        LOG(LOG_ERROR, handoff_failed, "to=%u reason=%s", to, log_q(q, sizeof(q), "cannot send events"));
        job->failed = 1;
        free(part);
    }
}

/* Splits the checked batch by owner; answers when every part is committed. */
static void distribute(struct publish_job *job)
{
    struct events *ev = job->ev;
    const struct worker_ctx *wk = ev->wk;
    size_t max = mesh_max_payload(ev->mesh) - sizeof(uint32_t);
    /* A reply holds 8 bytes per event: keep the count within one message too. */
    size_t max_n = (mesh_max_payload(ev->mesh) - sizeof(int32_t)) / sizeof(uint64_t);
    unsigned *owner = xcalloc(job->n, sizeof(*owner));
    size_t *idx = xcalloc(job->n, sizeof(*idx));
    size_t remote_bytes = 0;
    char *buf;

    /* Held for us until every part is out: a part may finish at once. */
    job->gather = mesh_gather_new(ev->mesh, on_part, on_parts_done, job);
    job->lev = xcalloc(job->n, sizeof(*job->lev));
    job->lidx = xcalloc(job->n, sizeof(*job->lidx));
    for (size_t i = 0; i < job->n; i++) {
        const struct store_event *e = &job->e[i];
        owner[i] = worker_owner(e->user, strlen(e->user), wk->count);
        if (owner[i] == wk->index) {
            job->lev[job->ln] = job->e[i];
            job->lidx[job->ln++] = i;
        } else {
            remote_bytes += strlen(e->user) + strlen(e->folder) + 4 +
                            (e->type ? strlen(e->type) : 0) + (e->meta ? strlen(e->meta) : 0);
        }
    }
    /* The parts are built in one buffer of the size they need, at most one
     * message: a publish of one event needs ~30 bytes, and asking malloc for
     * the whole message size (~77 KiB) each time made it consolidate its
     * free lists on every publish (8% of a worker's CPU under load). */
    buf = xmalloc(remote_bytes < max ? (remote_bytes ? remote_bytes : 1) : max);
    for (unsigned w = 0; w < wk->count; w++) {
        size_t blen = 0, n = 0;
        if (w == wk->index)
            continue;
        for (size_t i = 0; i < job->n; i++) {
            const struct store_event *e = &job->e[i];
            size_t ul, fl, tl, ml, need;
            if (owner[i] != w)
                continue;
            ul = strlen(e->user) + 1;
            fl = strlen(e->folder) + 1;
            tl = (e->type ? strlen(e->type) : 0) + 1;
            ml = (e->meta ? strlen(e->meta) : 0) + 1;
            need = ul + fl + tl + ml;
            if (n > 0 && (blen + need > max || n == max_n)) {
                send_part(job, w, buf, blen, idx, n);
                blen = n = 0;
            }
            memcpy(buf + blen, e->user, ul);
            memcpy(buf + blen + ul, e->folder, fl);
            if (e->type)
                memcpy(buf + blen + ul + fl, e->type, tl);
            else
                buf[blen + ul + fl] = '\0';
            if (e->meta)
                memcpy(buf + blen + ul + fl + tl, e->meta, ml);
            else
                buf[blen + ul + fl + tl] = '\0';
            blen += need;
            idx[n++] = i;
        }
        if (n > 0)
            send_part(job, w, buf, blen, idx, n);
    }
    free(buf);
    free(idx);
    free(owner);
    if (job->ln > 0) {
        mesh_gather_hold(job->gather);
        if (store_bump(ev->store, job->lev, job->ln, on_local_bumped, job) < 0) {
            job->failed = 1;
            mesh_gather_release(job->gather);
        }
    }
    mesh_gather_release(job->gather);
}

/* The other side: events for our users from the worker the publish reached. */
struct remote_bump {
    struct events *ev;
    unsigned from;
    uint32_t id;
    size_t n;
    char *buf;
    struct store_event e[];
};

static void reply_bump(struct events *ev, unsigned to, uint32_t id, int32_t status,
                       const struct store_event *e, size_t n)
{
    uint64_t *states = xcalloc(n ? n : 1, sizeof(*states));
    struct iovec iov[2] = {{.iov_base = &status, .iov_len = sizeof(status)},
                           {.iov_base = states, .iov_len = status < 0 ? 0 : n * sizeof(*states)}};

    for (size_t k = 0; k < n && status >= 0; k++)
        states[k] = e[k].state;
    if (mesh_reply(ev->mesh, to, id, 0, iov, 2) < 0)
        LOG(LOG_ERROR, handoff_failed, "to=%u reason=\"cannot answer a bump\"", to);
    free(states);
}

static void on_remote_done(void *arg, struct store_event *e, size_t n, int status)
{
    struct remote_bump *rb = arg;

    if (status == 0) {
        rb->ev->metrics->remote_events += n;
        events_applied(rb->ev, e, n);
    }
    reply_bump(rb->ev, rb->from, rb->id, status < 0 ? status : 0, e, n);
    free(rb->buf);
    free(rb);
}

/* EVENTS_MSG_BUMP: applies the events, replies with their new states. */
static void on_bump_msg(void *arg, unsigned from, uint32_t id, const char *p, size_t len, int fd)
{
    struct events *ev = arg;
    struct remote_bump *rb;
    uint32_t n;
    const char *at, *end;

    if (fd >= 0)
        close(fd);
    if (len < sizeof(n))
        goto bad;
    memcpy(&n, p, sizeof(n));
    if (n == 0 || n > len)
        goto bad;
    rb = xcalloc(1, sizeof(*rb) + n * sizeof(struct store_event));
    rb->ev = ev;
    rb->from = from;
    rb->id = id;
    rb->n = n;
    rb->buf = xmalloc(len - sizeof(n));
    memcpy(rb->buf, p + sizeof(n), len - sizeof(n));
    at = rb->buf;
    end = rb->buf + (len - sizeof(n));
    for (uint32_t k = 0; k < n; k++) {
        const char *f[4];
        for (int j = 0; j < 4; j++) {
            const char *z = at < end ? memchr(at, '\0', (size_t)(end - at)) : NULL;
            if (z == NULL) {
                free(rb->buf);
                free(rb);
                goto bad;
            }
            f[j] = at;
            at = z + 1;
        }
        rb->e[k].user = f[0];
        rb->e[k].folder = f[1];
        rb->e[k].type = f[2][0] ? f[2] : NULL;
        rb->e[k].meta = f[3][0] ? f[3] : NULL;
    }
    if (store_bump(ev->store, rb->e, rb->n, on_remote_done, rb) < 0) {
        reply_bump(ev, from, id, -EIO, NULL, 0);
        free(rb->buf);
        free(rb);
    }
    return;
bad:
    LOG(LOG_ERROR, handoff_failed, "from=%u reason=\"malformed bump message\"", from);
    reply_bump(ev, from, id, -EINVAL, NULL, 0);
}

void events_init(struct events *ev, struct store *store, struct shard *shard,
                 struct metrics *metrics, const struct worker_ctx *wk, struct mesh *mesh,
                 struct ping *ping, struct udp *udp)
{
    ev->store = store;
    ev->shard = shard;
    ev->metrics = metrics;
    ev->wk = wk;
    ev->mesh = mesh;
    ev->ping = ping;
    ev->udp = udp;
    mesh_on(mesh, EVENTS_MSG_BUMP, on_bump_msg, ev);
}

/* A publish refused whole: logged, answered 400, nothing applied. */
static void reject(struct conn *c, const char *msg)
{
    char q[600];

    LOG(LOG_INFO, publish_rejected, "reason=%s", log_q(q, sizeof(q), msg));
    answer_error(c, 400, "bad-request", msg);
}

void events_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct events *ev = arg;
    struct publish_job *job = NULL;
    json_error_t je;
    json_t *root;
    size_t n;
    char msg[512];
    int rc;

    (void)who;
    if (r->body_len == 0) {
        reject(c, "the body must be an event object or an array of events");
        return;
    }
    root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
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
    job->e = xcalloc(n, sizeof(*job->e));
    job->n = n;
    job->ev = ev;
    job->root = root;
    for (size_t i = 0; i < n; i++) {
        json_t *el = json_is_array(root) ? json_array_get(root, i) : root;
        if (check_event(el, json_is_array(root) ? (long)i : -1, &job->e[i], msg, sizeof(msg)) !=
            NULL) {
            reject(c, msg);
            job_free(job);
            return;
        }
        job->e[i].meta = keep_meta(job, i, el);
    }
    job->conn = c;
    conn_wait(c, &job->conn);
    if (ev->wk) {
        distribute(job);
        return;
    }
    rc = store_bump(ev->store, job->e, job->n, on_bumped, job);
    if (rc < 0) {
        answer_error(c, 503, "store-error", "the store refused the events");
        job_free(job);
    }
    return;
fail:
    json_decref(root);
}
