/*
 * state.c — GET /v1/state: the polling fallback.
 *
 * Answers current folder states with a strong ETag (a hash of the exact
 * body), so a client polling every minute gets a bodiless 304 while nothing
 * changed. Folders are sorted by name so the same states always give the
 * same body and ETag.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "http/request.h"
#include "push/handlers.h"
#include "push/udp.h"
#include "server/conn.h"
#include "server/router.h"
#include "server/server.h"

struct folder_state {
    char *name;
    uint64_t state;
};

struct folder_list {
    struct folder_state *v;
    size_t n, cap;
};

static void add(struct folder_list *l, char *name, uint64_t state)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n].name = name;
    l->v[l->n].state = state;
    l->n++;
}

static void on_listed(void *arg, const char *folder, uint64_t state)
{
    add(arg, xstrdup(folder), state);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct folder_state *)a)->name, ((const struct folder_state *)b)->name);
}

/* FNV-1a, 64 bits: the ETag only has to change when the body does. */
static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Does an If-None-Match list ("a", W/"b", *) name this ETag? Weak comparison (RFC 9110 13.1.2). */
static int etag_matches(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm;

    while (*p) {
        const char *end;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        end = p;
        if (*end == '"') {
            end = strchr(end + 1, '"');
            if (end == NULL)
                return 0;
            end++;
        } else {
            while (*end && *end != ',')
                end++;
        }
        if ((size_t)(end - p) == elen && memcmp(p, etag, elen) == 0)
            return 1;
        p = end;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

/* Splits ?folders=a,b on commas, then decodes each name. 0, or -1 after answering. */
static int parse_folders(struct conn *c, const char *raw, long rawlen, struct store *st,
                         const char *user, struct folder_list *l)
{
    const char *p = raw, *end = raw + rawlen;

    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        char *name = xstrndup(p, (size_t)(stop - p));
        long n = util_url_decode(name, (size_t)(stop - p));
        const char *why = n < 0 ? "is badly URL-encoded" : check_folder_name(name, (size_t)n);
        int dup = 0;

        if (why) {
            char msg[128];
            snprintf(msg, sizeof(msg), "folders: a folder name %s", why);
            free(name);
            conn_respond_error(c, 400, "bad-request", msg);
            return -1;
        }
        for (size_t i = 0; i < l->n && !dup; i++)
            dup = strcmp(l->v[i].name, name) == 0;
        if (dup)
            free(name);
        else
            add(l, name, store_get(st, user, name));
        if (l->n > c->srv->cfg->ping_max_folders) {
            char body[96];
            int len = snprintf(body, sizeof(body), "{\"status\":\"too-many-folders\",\"max\":%u}",
                               c->srv->cfg->ping_max_folders);
            conn_respond(c, 400, NULL, body, (size_t)len);
            return -1;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

void state_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct store *st = c->srv->store;
    struct folder_list l = {0};
    const char *raw, *inm;
    long rawlen = util_query_raw(r->query, r->query_len, "folders", &raw);
    char etag[24], extra[64], device[3 * DEVICE_ID_MAX + 1];
    long dlen;
    struct jsonw w;
    size_t len;
    char *body = NULL;

    c->srv->metrics.state_reads++;
    dlen = util_query_param(r->query, r->query_len, "device", device, sizeof(device));
    if (dlen == -EINVAL || (dlen >= 0 && check_device_id(device, (size_t)dlen) != NULL)) {
        conn_respond_error(c, 400, "bad-request",
                           "query parameter device is badly encoded or not a valid device id");
        goto done;
    }
    if (rawlen >= 0) {
        if (parse_folders(c, raw, rawlen, st, who->subject, &l) < 0)
            goto done;
    } else {
        store_list(st, who->subject, on_listed, &l);
    }
    if (l.n > 1)
        qsort(l.v, l.n, sizeof(*l.v), by_name);
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "folders");
    jw_obj_begin(&w);
    for (size_t i = 0; i < l.n; i++) {
        jw_key(&w, l.v[i].name);
        jw_u64_str(&w, l.v[i].state);
    }
    jw_obj_end(&w);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    snprintf(etag, sizeof(etag), "\"%016llx\"", (unsigned long long)fnv1a(body, len));
    snprintf(extra, sizeof(extra), "ETag: %s\r\nCache-Control: no-cache\r\n", etag);
    /* ?device=D: the device holds these states once it has this answer (a 304 included). */
    if (dlen >= 0) {
        struct user *u = shard_user(&c->srv->shard, who->subject, 0);
        struct device *d = u ? user_device(u, device, 0) : NULL;
        if (d && d->udp)
            for (size_t i = 0; i < l.n; i++)
                udp_knows(c->srv, d, l.v[i].name, l.v[i].state);
    }
    inm = http_req_header(r, HDR_IF_NONE_MATCH);
    if (inm && etag_matches(inm, etag))
        conn_respond(c, 304, extra, NULL, 0);
    else
        conn_respond(c, 200, extra, body, len);
done:
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i].name);
    free(l.v);
    free(body);
}
