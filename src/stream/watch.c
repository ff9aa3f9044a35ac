/*
 * watch.c — what an event stream watches; see watch.h.
 */
#include "stream/watch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#include "shard/shard.h"
#include "stream/state_id.h"

void watch_list_add(struct watch_list *l, const char *name, uint64_t state)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->f[i].name, name) == 0)
            return;
    if (l->n == l->max)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->f = xrealloc(l->f, l->cap * sizeof(*l->f));
    }
    l->f[l->n].name = name;
    l->f[l->n].state = state;
    l->n++;
}

void watch_list_on_folder(void *list, const char *folder, uint64_t state)
{
    (void)state;
    watch_list_add(list, folder, STATE_ID_UNKNOWN);
}

void watch_new_folders(struct store *st, struct device *d, size_t max)
{
    struct watch_list l = {.max = max};

    for (uint32_t i = 0; i < d->nfolders; i++)
        watch_list_add(&l, d->folders[i].name, d->folders[i].state);
    store_list(st, d->user->id, watch_list_on_folder, &l);
    if (l.n > d->nfolders)
        shard_set_folders(d, l.f, l.n);
    free(l.f);
}

int watch_changes(struct store *st, struct device *d, struct jsonw *w, const char *prefix)
{
    static const char head[] = "{\"@type\":\"StateChange\",\"changed\":{";
    int n = 0;

    for (uint32_t i = 0; i < d->nfolders; i++) {
        uint64_t now = store_get(st, d->user->id, d->folders[i].name);
        if (now == d->folders[i].state)
            continue;
        if (n++ == 0) {
            /* Only now: a stream woken for a folder it does not watch costs no buffer. */
            jw_init(w);
            jw_raw(w, prefix, strlen(prefix));
            jw_raw(w, head, sizeof(head) - 1);
            jw_key(w, d->user->id);
            jw_obj_begin(w);
        }
        jw_key(w, d->folders[i].name);
        jw_u64_str(w, now);
        d->folders[i].state = now;
    }
    if (n) {
        jw_obj_end(w);
        jw_raw(w, "}", 1);
    }
    return n;
}

void watch_state_id(const struct device *d, struct jsonw *w)
{
    /* Raw bytes only (state_id_entry), so straight into w: no copy per event. */
    jw_raw(w, STATE_ID_PREFIX, sizeof(STATE_ID_PREFIX) - 1);
    for (uint32_t i = 0; i < d->nfolders; i++)
        state_id_entry(w, d->folders[i].name, d->folders[i].state, i == 0);
}

struct device *watch_anonymous_device(struct shard *sh, struct user *u, uint64_t seed,
                                      uint64_t *draws)
{
    char id[48];

    for (;;) {
        uint64_t n = ++*draws;
        snprintf(id, sizeof(id), "stream-%016llx",
                 (unsigned long long)util_hash(seed ^ 0x5e5e, &n, sizeof(n)));
        if (shard_device(sh, u, id, 0) == NULL)
            return shard_device(sh, u, id, 1);
    }
}

unsigned watch_clamp_ping(const struct config *cfg, unsigned long n)
{
    if (n == 0)
        return 0;
    if (n < cfg->stream_ping_min)
        return cfg->stream_ping_min;
    return n > cfg->stream_ping_max ? cfg->stream_ping_max : (unsigned)n;
}

unsigned watch_default_ping(const struct config *cfg)
{
    return watch_clamp_ping(cfg, cfg->stream_ping ? cfg->stream_ping : cfg->heartbeat_max);
}

int watch_device_param(const struct http_req *r, const struct principal *who, char *dev,
                       size_t len, struct http_error *e)
{
    const char *why;
    long n;

    /* A ticket names its device; otherwise device= may, as for pings. */
    if (who->device[0]) {
        snprintf(dev, len, "%s", who->device);
        return 0;
    }
    n = r->query ? util_query_param(r->query, r->query_len, "device", dev, len) : -ENOENT;
    if (n == -EINVAL)
        return http_error_bad(e, "query parameter device is badly encoded or too long");
    if (n >= 0 && (why = check_device_id(dev, strlen(dev))) != NULL)
        return http_error_bad(e, "device %s", why);
    if (n < 0)
        dev[0] = '\0';
    return 0;
}

int watch_too_slow(const struct config *cfg, struct metrics *m, struct conn *c, struct device *d,
                   uint64_t *soft_since)
{
    size_t unsent = conn_unsent(c);
    uint64_t now = util_now_ms();
    const char *why = NULL;
    char q1[300], q2[300];

    if (unsent > cfg->stream_max_unsent) {
        why = "max_unsent";
    } else if (unsent > cfg->stream_soft_unsent) {
        if (*soft_since == 0)
            *soft_since = now;
        else if (now - *soft_since >= (uint64_t)cfg->stream_soft_seconds * 1000)
            why = "soft_unsent";
    } else {
        *soft_since = 0;
    }
    if (why == NULL)
        return 0;
    m->streams_slow++;
    LOG(LOG_WARN, stream_slow, "user=%s device=%s unsent=%zu limit=%s",
        log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id), unsent, why);
    conn_close(c, CONN_WHY_SLOW, why);
    return 1;
}
