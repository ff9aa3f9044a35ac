/*
 * ingest.c — PUT /v1/ingest/dovecot: Dovecot's push_notification OX driver
 * publishes new mail here, unchanged (docs/dovecot.md).
 *
 * The driver sends one request per delivery into INBOX, with HTTP Basic
 * credentials from its URL and a JSON body:
 *   {"user":"alice","event":"messageNew","folder":"INBOX",
 *    "imap-uidvalidity":1795312227,"imap-uid":2,"from":"...","subject":"...",...}
 * Each becomes one "new" event for (user, folder), applied exactly like a
 * publish (events.c): answered once the store has committed it.
 *
 * Dovecot retries a request that timed out, so the same delivery can come
 * twice. A delivery is named by (user, folder, uidvalidity, uid), which IMAP
 * never reuses for another message; the first one is remembered for
 * [ingest] dedup_window seconds and a repeat is answered with the state the
 * first one got, without a second bump. A repeat that arrives while the
 * first is still being committed (the case a timeout produces: the first
 * was slow) waits for it and gets the same answer, so a failed commit is
 * never reported as a success to the retry.
 *
 * Memory: the window is a FIFO (every entry lives equally long, so arrival
 * order is expiry order) plus a hash map; at most [ingest] dedup_max
 * entries of ~64 bytes plus the user and folder names. Cost per request: one
 * map lookup, the expired entries at the head of the queue, one bump.
 */
#include "push/ingest.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/basic.h"
#include "auth/principal.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "push/events.h"
#include "store/store.h"
#include "worker/worker.h"

struct ingest_job;

/* A delivery seen in the window. */
struct dedup_entry {
    struct dedup_entry *next;   /* the next to expire */
    uint64_t expires;           /* ms, monotonic */
    uint64_t state;             /* the state the delivery got (once committed) */
    struct ingest_job *pending; /* the delivery's job while its commit is pending */
    int dead;                   /* its commit failed: out of the map, freed at its turn */
    size_t klen;
    char key[];                 /* "<uidvalidity>:<uid>:<folder>\0<user>" */
};

/* A repeat waiting for the first delivery's commit. */
struct waiter {
    struct conn *conn;          /* NULL once that request's sender went away */
    struct waiter *next;
};

struct ingest_job {
    struct conn *conn;          /* NULL once Dovecot hung up */
    struct ingest *g;
    struct store_event ev;
    struct dedup_entry *entry;  /* NULL without uidvalidity and uid */
    struct waiter *waiters;
    char *user, *folder;
    char *meta;                 /* ev.meta: what a stream may pass on, or NULL */
};

/*
 * What of the OX driver's body a stream asking for metadata gets: the
 * sender, subject, snippet and unseen count (not IMAP's internals).
 */
static char *ingest_meta(json_t *root)
{
    static const char *const keys[] = {"from", "subject", "snippet", "unseen"};
    json_t *m = NULL, *v;
    char *text;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if ((v = json_object_get(root, keys[i])) == NULL)
            continue;
        if (m == NULL)
            m = json_object();
        json_object_set(m, keys[i], v);
    }
    if (m == NULL)
        return NULL;
    text = json_dumps(m, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(m);
    return text;
}

void ingest_init(struct ingest *g, const struct config *cfg, struct store *store,
                 struct metrics *metrics, struct events *events, const struct worker_route *route)
{
    g->cfg = cfg;
    g->store = store;
    g->metrics = metrics;
    g->events = events;
    g->route = route;
    strmap_init(&g->map);
    g->head = g->tail = NULL;
    g->count = 0;
}

void ingest_free(struct ingest *g)
{
    while (g->head) {
        struct dedup_entry *e = g->head;
        g->head = e->next;
        free(e);
    }
    strmap_free(&g->map);
}

/* Drops entries that expired, and the oldest beyond dedup_max (never one still pending). */
static void expire(struct ingest *g, uint64_t now)
{
    while (g->head && !g->head->pending &&
           (g->head->expires <= now || g->count > g->cfg->ingest_dedup_max)) {
        struct dedup_entry *e = g->head;
        g->head = e->next;
        if (g->head == NULL)
            g->tail = NULL;
        if (!e->dead)
            strmap_del(&g->map, e->key, e->klen);
        g->count--;
        free(e);
    }
}

static void answer(struct conn *c, const char *user, const char *folder, uint64_t state,
                   int duplicate)
{
    struct jsonw w;
    size_t len;
    char *body;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "states");
    jw_arr_begin(&w);
    jw_obj_begin(&w);
    jw_key(&w, "user");
    jw_str(&w, user);
    jw_key(&w, "folder");
    jw_str(&w, folder);
    jw_key(&w, "state");
    jw_u64_str(&w, state);
    jw_obj_end(&w);
    jw_arr_end(&w);
    if (duplicate) {
        jw_key(&w, "duplicate");
        jw_bool(&w, 1);
    }
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

static void store_error(struct conn *c, const char *msg)
{
    struct http_error e;

    http_error_set(&e, 503, "store-error", "%s", msg);
    conn_respond_error(c, &e);
}

static void on_bumped(void *arg, struct store_event *ev, size_t n, int status)
{
    struct ingest_job *job = arg;
    struct ingest *g = job->g;
    struct waiter *w, *next;

    if (status == 0) {
        g->metrics->ingest_events++;
        g->metrics->publish_batches++;
        events_applied(g->events, ev, n);
    }
    if (job->entry) {
        job->entry->pending = NULL;
        job->entry->state = ev->state;
        if (status < 0) {
            /* Forget it, so that Dovecot's retry is applied, not taken for a repeat. */
            strmap_del(&g->map, job->entry->key, job->entry->klen);
            job->entry->dead = 1;
        }
    }
    if (job->conn) {
        if (status < 0)
            store_error(job->conn, "the store could not commit the event");
        else
            answer(job->conn, job->user, job->folder, ev->state, 0);
    }
    for (w = job->waiters; w; w = next) {
        next = w->next;
        if (w->conn && status < 0)
            store_error(w->conn, "the store could not commit the event");
        else if (w->conn)
            answer(w->conn, job->user, job->folder, ev->state, 1);
        free(w);
    }
    free(job->user);
    free(job->folder);
    free(job->meta);
    free(job);
}

static void reject(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A delivery refused: logged, answered 400. */
static void reject(struct conn *c, const char *fmt, ...)
{
    struct http_error e;
    char q[600];
    va_list ap;

    http_error_set(&e, 400, "bad-request", NULL);
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    LOG(LOG_INFO, publish_rejected, "source=dovecot reason=%s", log_q(q, sizeof(q), e.msg));
    conn_respond_error(c, &e);
}

/* Checks "Authorization: Basic base64(user:password)" in constant time. 1 when it matches. */
static int basic_ok(const struct config *cfg, const char *h)
{
    size_t ul = strlen(cfg->ingest_basic_user), pl = strlen(cfg->ingest_basic_password);
    struct basic_credential bc;
    const char *why;
    int ok;

    if (basic_decode(h, &bc, &why) < 0)
        return 0;
    ok = bc.user_len == ul && bc.password_len == pl;
    /* Both compared whatever the first says: the time taken tells nothing of which was wrong. */
    ok &= CRYPTO_memcmp(bc.user, cfg->ingest_basic_user, ok ? ul : 0) == 0;
    ok &= CRYPTO_memcmp(bc.password, cfg->ingest_basic_password, ok ? pl : 0) == 0;
    basic_wipe(&bc);
    return ok;
}

/* An optional whole number >= min; -1 absent, -2 wrong, else 0 with *out set. */
static int opt_uint(json_t *root, const char *key, long long min, uint64_t *out)
{
    json_t *v = json_object_get(root, key);

    if (v == NULL)
        return -1;
    if (!json_is_integer(v) || json_integer_value(v) < min)
        return -2;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

void ingest_dovecot_handle(void *arg, struct conn *c, struct http_req *r,
                           const struct principal *who)
{
    struct ingest *g = arg;
    const struct config *cfg = g->cfg;
    struct http_error e;
    struct dedup_entry *entry = NULL;
    struct ingest_job *job;
    const char *user, *folder, *event, *why;
    json_t *root = NULL, *v;
    json_error_t je;
    uint64_t uidv = 0, uid = 0, now = util_now_ms();
    char key[40 + FOLDER_NAME_MAX + USER_ID_MAX + 2], peer[64], q[64];
    int has_uidv, has_uid;
    size_t klen = 0;

    (void)who;
    if (cfg->ingest_basic_user[0] == '\0' && cfg->ingest_basic_password[0] == '\0') {
        http_error_set(&e, 501, "ingest-disabled",
                       "the Dovecot ingest is off: set [ingest] basic_user and basic_password");
        conn_respond_error(c, &e);
        return;
    }
    if (!basic_ok(cfg, http_req_header(r, HDR_AUTHORIZATION))) {
        g->metrics->auth_failures++;
        LOG(LOG_INFO, auth_failed, "peer=%s reason=%s", conn_peer(c, peer, sizeof(peer)),
            log_q(q, sizeof(q), "ingest: wrong or missing Basic credentials"));
        http_error_set(&e, 401, "unauthorized",
                       "wrong or missing Basic credentials ([ingest] basic_user and basic_password)");
        http_error_header(&e, "WWW-Authenticate: Basic realm=\"nudge\"");
        conn_respond_error(c, &e);
        return;
    }
    if (r->body_len == 0) {
        reject(c, "the body must be the push driver's JSON object");
        return;
    }
    root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        reject(c, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        return;
    }
    if (!json_is_object(root)) {
        reject(c, "the body must be a JSON object");
        goto done;
    }
    v = json_object_get(root, "user");
    user = json_string_value(v);
    if (user == NULL || strlen(user) != json_string_length(v)) {
        reject(c, "user: must be a string (the mailbox owner)");
        goto done;
    }
    if ((why = check_user_id(user, strlen(user))) != NULL) {
        reject(c, "user: %s", why);
        goto done;
    }
    /* The owner of the user keeps its duplicate window: the request goes there whole. */
    if (worker_route(g->route, c, user, strlen(user)))
        goto done;
    v = json_object_get(root, "folder");
    folder = json_string_value(v);
    if (folder == NULL || strlen(folder) != json_string_length(v)) {
        reject(c, "folder: must be a string");
        goto done;
    }
    if ((why = check_folder_name(folder, strlen(folder))) != NULL) {
        reject(c, "folder: %s", why);
        goto done;
    }
    event = json_string_value(json_object_get(root, "event"));
    if (event == NULL) {
        reject(c, "event: must be a string (\"messageNew\")");
        goto done;
    }
    if (strcmp(event, "messageNew") != 0) {
        char shown[64];
        reject(c, "event: %s is not an event of the OX push driver (it sends messageNew)",
               log_q(shown, sizeof(shown), event));
        goto done;
    }
    has_uidv = opt_uint(root, "imap-uidvalidity", 0, &uidv);
    has_uid = opt_uint(root, "imap-uid", 1, &uid);
    if (has_uidv == -2 || has_uid == -2) {
        reject(c, "%s: must be a whole number", has_uidv == -2 ? "imap-uidvalidity" : "imap-uid");
        goto done;
    }

    expire(g, now);
    if (has_uidv == 0 && has_uid == 0 && cfg->ingest_dedup_window > 0) {
        int n = snprintf(key, sizeof(key), "%llu:%llu:%s", (unsigned long long)uidv,
                         (unsigned long long)uid, folder);
        memcpy(key + n + 1, user, strlen(user) + 1);
        klen = (size_t)n + 1 + strlen(user);
        entry = strmap_get(&g->map, key, klen);
        if (entry && entry->pending) {
            /* The first is still being committed: answer both alike. */
            struct waiter *w = xcalloc(1, sizeof(*w));
            w->conn = c;
            w->next = entry->pending->waiters;
            entry->pending->waiters = w;
            g->metrics->ingest_duplicates++;
            json_decref(root);
            conn_wait(c, &w->conn);
            return;
        }
        if (entry) {
            g->metrics->ingest_duplicates++;
            answer(c, user, folder, entry->state, 1);
            goto done;
        }
        entry = xcalloc(1, sizeof(*entry) + klen + 1);
        memcpy(entry->key, key, klen + 1);
        entry->klen = klen;
        entry->expires = now + cfg->ingest_dedup_window * 1000ull;
        strmap_put(&g->map, entry->key, klen, entry);
        if (g->tail)
            g->tail->next = entry;
        else
            g->head = entry;
        g->tail = entry;
        g->count++;
    }
    job = xcalloc(1, sizeof(*job));
    job->g = g;
    job->user = xstrdup(user);
    job->folder = xstrdup(folder);
    job->ev.user = job->user;
    job->ev.folder = job->folder;
    job->ev.type = "new";
    job->ev.meta = job->meta = ingest_meta(root);
    job->entry = entry;
    job->conn = c;
    if (entry)
        entry->pending = job;
    json_decref(root);
    root = NULL;
    conn_wait(c, &job->conn);
    if (store_bump(g->store, &job->ev, 1, on_bumped, job) < 0) {
        if (entry) {
            entry->pending = NULL;
            strmap_del(&g->map, entry->key, entry->klen);
            entry->dead = 1;
        }
        store_error(c, "the store refused the event");
        free(job->user);
        free(job->folder);
        free(job->meta);
        free(job);
    }
done:
    json_decref(root);
}
