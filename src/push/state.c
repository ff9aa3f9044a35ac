/*
 * state.c — GET /v1/state: the polling fallback.
 *
 * Answers current folder states with a strong ETag (a hash of the exact
 * body), so a client polling every minute gets a bodiless 304 while nothing
 * changed. Folders are sorted by name so the same states always give the
 * same body and ETag.
 */
#include "push/state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/principal.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "shard/shard.h"
#include "store/store.h"
#include "udp/udp.h"

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

/* Splits ?folders=a,b on commas, then decodes each name. 0, or -1 with e set. */
static int parse_folders(const struct state *sv, const char *raw, long rawlen, const char *user,
                         struct folder_list *l, struct http_error *e)
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
            free(name);
            return http_error_bad(e, "folders: a folder name %s", why);
        }
        for (size_t i = 0; i < l->n && !dup; i++)
            dup = strcmp(l->v[i].name, name) == 0;
        if (dup)
            free(name);
        else
            add(l, name, store_get(sv->store, user, name));
        if (l->n > sv->cfg->ping_max_folders) {
            http_error_set(e, 400, "too-many-folders", NULL);
            http_error_num(e, "max", sv->cfg->ping_max_folders);
            return -1;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

void state_init(struct state *sv, const struct config *cfg, struct store *store,
                struct shard *shard, struct metrics *metrics, struct udp *udp)
{
    sv->cfg = cfg;
    sv->store = store;
    sv->shard = shard;
    sv->metrics = metrics;
    sv->udp = udp;
}

void state_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct state *sv = arg;
    struct folder_list l = {0};
    struct http_error e;
    const char *raw, *inm;
    long rawlen = util_query_raw(r->query, r->query_len, "folders", &raw);
    char etag[24], extra[64], device[3 * DEVICE_ID_MAX + 1];
    long dlen;
    struct jsonw w;
    size_t len;
    char *body = NULL;

    sv->metrics->state_reads++;
    dlen = util_query_param(r->query, r->query_len, "device", device, sizeof(device));
    if (dlen == -EINVAL || (dlen >= 0 && check_device_id(device, (size_t)dlen) != NULL)) {
        http_error_bad(&e, "query parameter device is badly encoded or not a valid device id");
        conn_respond_error(c, &e);
        goto done;
    }
    if (rawlen >= 0) {
        if (parse_folders(sv, raw, rawlen, who->subject, &l, &e) < 0) {
            conn_respond_error(c, &e);
            goto done;
        }
    } else {
        store_list(sv->store, who->subject, on_listed, &l);
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
        struct user *u = shard_user(sv->shard, who->subject, 0);
        struct device *d = u ? shard_device(sv->shard, u, device, 0) : NULL;
        if (d && udp_reg_of(sv->udp, d))
            for (size_t i = 0; i < l.n; i++)
                udp_knows(sv->udp, d, l.v[i].name, l.v[i].state);
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
