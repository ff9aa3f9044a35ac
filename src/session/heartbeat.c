/* heartbeat.c — the adaptive heartbeat; see heartbeat.h for the rules. */
#include "session/heartbeat.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "server/server.h"
#include "shard/shard.h"

unsigned hb_hint(const struct server *s, const struct device *d)
{
    unsigned h = d->heartbeat_hint;

    if (h < s->cfg->heartbeat_min)
        h = s->cfg->heartbeat_min;
    if (h > s->cfg->heartbeat_max)
        h = s->cfg->heartbeat_max;
    return h;
}

void hb_init(struct server *s, struct device *d, unsigned requested)
{
    d->heartbeat_hint = requested;
    d->heartbeat_hint = hb_hint(s, d);
}

/* --- per-network averages -------------------------------------------------- */

static void net_check(struct server *s, struct hbnet *n)
{
    unsigned threshold = s->cfg->heartbeat_alert_average;
    uint64_t avg;

    if (n->counted == 0 || threshold == 0) {
        n->alerted = 0;
        return;
    }
    avg = n->hint_sum / n->counted;
    if (avg > threshold) {
        n->alerted = 0;
    } else if (!n->alerted) {
        n->alerted = 1;
        LOG(LOG_WARN, heartbeat_alert,
            "network=%s devices=%u average=%llu threshold=%u "
            "advice=\"devices here time out early: a middlebox idle timeout is short\"",
            n->name, n->counted, (unsigned long long)avg, threshold);
    }
}

/* Takes d's hint out of (or puts it into) its network's average. */
static void net_count(struct server *s, struct device *d, int sign)
{
    struct hbnet *n = d->net;

    if (n == NULL || d->heartbeat_ceiling == 0)
        return;
    if (sign > 0) {
        n->counted++;
        n->hint_sum += d->heartbeat_hint;
        net_check(s, n);
    } else {
        n->counted--;
        n->hint_sum -= d->heartbeat_hint;
    }
}

static struct hbnet *net_of(struct server *s, const struct sockaddr *peer)
{
    char key[8], ip[INET6_ADDRSTRLEN];
    size_t klen;
    struct hbnet *n;

    memset(key, 0, sizeof(key));
    if (peer->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)peer)->sin6_addr, 7); /* /56 */
        klen = 7;
    } else if (peer->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)peer)->sin_addr, 3); /* /24 */
        klen = 3;
    } else {
        return NULL;
    }
    n = strmap_get(&s->nets, key, klen);
    if (n)
        return n;
    n = xcalloc(1, sizeof(*n));
    memcpy(n->key, key, klen);
    n->klen = (uint8_t)klen;
    if (klen == 3) {
        struct in_addr a;
        memcpy(&a, key, 3);
        ((unsigned char *)&a)[3] = 0;
        snprintf(n->name, sizeof(n->name), "%s/24", inet_ntop(AF_INET, &a, ip, sizeof(ip)));
    } else {
        struct in6_addr a;
        memset(&a, 0, sizeof(a));
        memcpy(&a, key, 7);
        snprintf(n->name, sizeof(n->name), "%s/56", inet_ntop(AF_INET6, &a, ip, sizeof(ip)));
    }
    strmap_put(&s->nets, n->key, klen, n);
    return n;
}

static void net_move(struct server *s, struct device *d, struct hbnet *to)
{
    if (d->net == to)
        return;
    net_count(s, d, -1);
    if (d->net)
        d->net->devices--;
    d->net = to;
    if (to)
        to->devices++;
    net_count(s, d, +1);
}

void hb_forget(struct server *s, struct device *d)
{
    net_move(s, d, NULL);
}

void hb_free_nets(struct server *s)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while (strmap_next(&s->nets, &pos, &key, &val))
        free(val);
    strmap_free(&s->nets);
}

/* --- learning -------------------------------------------------------------- */

static void log_change(const struct device *d, const char *why, unsigned hb, unsigned before)
{
    char q1[300], q2[300];

    LOG(LOG_DEBUG, heartbeat_learned,
        "user=%s device=%s evidence=%s heartbeat=%u hint_before=%u hint=%u proven=%u ceiling=%u",
        log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id), why, hb, before,
        d->heartbeat_hint, d->heartbeat_good, d->heartbeat_ceiling);
}

/*
 * 'under' is the hint the device knew when it sent the ping now proven: it
 * followed the advice if hb >= under (it could not know of a raise that the
 * proof of its previous ping caused on arrival).
 */
static void success(struct server *s, struct device *d, unsigned hb, unsigned under)
{
    const struct config *cfg = s->cfg;
    unsigned before = d->heartbeat_hint, next;

    if (hb > d->heartbeat_good)
        d->heartbeat_good = hb;
    /* Followed the advice: at least the hint it knew, or the hint now if that fell since. */
    if (hb < (under < d->heartbeat_hint ? under : d->heartbeat_hint) || hb < d->heartbeat_good)
        return; /* proves less than what is known already */
    if (++d->heartbeat_successes < cfg->heartbeat_sample_size)
        return;
    d->heartbeat_successes = 0;
    net_count(s, d, -1);
    if (d->heartbeat_ceiling &&
        (int64_t)time(NULL) - d->ceiling_since >= (int64_t)cfg->heartbeat_ceiling_retry)
        d->heartbeat_ceiling = 0; /* old news: the path may have changed */
    next = d->heartbeat_hint + cfg->heartbeat_increment;
    if (d->heartbeat_ceiling && next >= d->heartbeat_ceiling)
        next = (d->heartbeat_hint + d->heartbeat_ceiling) / 2; /* close in on it */
    if (next > cfg->heartbeat_max)
        next = cfg->heartbeat_max;
    if (next > d->heartbeat_hint)
        d->heartbeat_hint = next;
    net_count(s, d, +1);
    log_change(d, "success", hb, before);
}

static void failure(struct server *s, struct device *d, unsigned hb, const char *why)
{
    unsigned before = d->heartbeat_hint, min = s->cfg->heartbeat_min;

    net_count(s, d, -1);
    if (d->heartbeat_ceiling == 0 || hb < d->heartbeat_ceiling ||
        (int64_t)time(NULL) - d->ceiling_since >= (int64_t)s->cfg->heartbeat_ceiling_retry) {
        d->heartbeat_ceiling = hb;
        d->ceiling_since = (int64_t)time(NULL);
    }
    /* A heartbeat once proven that now fails: the path changed; that proof is void. */
    if (d->heartbeat_good >= hb)
        d->heartbeat_good = 0;
    d->heartbeat_hint = d->heartbeat_good ? d->heartbeat_good : (hb / 2 > min ? hb / 2 : min);
    d->heartbeat_successes = 0;
    net_count(s, d, +1);
    log_change(d, why, hb, before);
}

int hb_on_ping(struct server *s, struct device *d, const struct sockaddr *peer, int superseding)
{
    uint64_t now = util_now_ms();
    unsigned before_hint = d->heartbeat_hint, before_good = d->heartbeat_good;
    unsigned before_ceiling = d->heartbeat_ceiling;
    unsigned known = d->heartbeat_hint; /* what this ping's sender was told last */

    net_move(s, d, peer ? net_of(s, peer) : NULL);
    if (superseding) {
        failure(s, d, d->heartbeat, "new_ping_while_held");
    } else if (d->expired_heartbeat) {
        uint64_t gap = now - d->expired_at;
        if (gap <= (uint64_t)s->cfg->heartbeat_grace * 1000)
            success(s, d, d->expired_heartbeat, d->expired_under);
        else if (gap <= (uint64_t)s->cfg->heartbeat_max * 1000)
            failure(s, d, d->expired_heartbeat, "late_ping_after_expiry");
    }
    d->expired_heartbeat = 0;
    d->asked_under = known;
    return d->heartbeat_hint != before_hint || d->heartbeat_good != before_good ||
           d->heartbeat_ceiling != before_ceiling;
}

void hb_on_expired(struct device *d, unsigned hb)
{
    d->expired_heartbeat = hb;
    d->expired_under = d->asked_under;
    d->expired_at = util_now_ms();
}

void hb_on_lost(struct server *s, struct device *d)
{
    d->expired_heartbeat = 0;
    failure(s, d, d->heartbeat, "connection_lost_while_held");
    device_persist(s->store, d);
}
