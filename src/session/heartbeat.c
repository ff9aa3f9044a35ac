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
#include "common/config.h"
#include "shard/shard.h"

void hb_init(struct heartbeat *hb, const struct config *cfg, struct shard *sh)
{
    hb->cfg = cfg;
    strmap_init(&hb->nets);
    hb->slot = shard_device_slot(sh, sizeof(struct hb_device));
}

unsigned hb_hint(const struct heartbeat *hb, const struct device *d)
{
    unsigned h = d->heartbeat_hint;

    if (h < hb->cfg->heartbeat_min)
        h = hb->cfg->heartbeat_min;
    if (h > hb->cfg->heartbeat_max)
        h = hb->cfg->heartbeat_max;
    return h;
}

void hb_first_hint(const struct heartbeat *hb, struct device *d, unsigned requested)
{
    d->heartbeat_hint = requested;
    d->heartbeat_hint = hb_hint(hb, d);
}

/* --- per-network averages -------------------------------------------------- */

static void net_check(struct heartbeat *hb, struct hbnet *n)
{
    unsigned threshold = hb->cfg->heartbeat_alert_average;
    uint64_t avg;

    if (n->counted == 0 || threshold == 0) {
        n->alerted = 0;
        return;
    }
    /* Too few to speak for the path: the alert waits (and, once logged, stays logged). */
    if (n->counted < hb->cfg->heartbeat_alert_min_devices)
        return;
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
static void net_count(struct heartbeat *hb, struct device *d, int sign)
{
    struct hbnet *n = hb_device(hb, d)->net;

    if (n == NULL || d->heartbeat_ceiling == 0)
        return;
    if (sign > 0) {
        n->counted++;
        n->hint_sum += d->heartbeat_hint;
        net_check(hb, n);
    } else {
        n->counted--;
        n->hint_sum -= d->heartbeat_hint;
    }
}

static struct hbnet *net_of(struct heartbeat *hb, const struct sockaddr *peer)
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
    n = strmap_get(&hb->nets, key, klen);
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
    strmap_put(&hb->nets, n->key, klen, n);
    return n;
}

static void net_move(struct heartbeat *hb, struct device *d, struct hbnet *to)
{
    struct hb_device *e = hb_device(hb, d);

    if (e->net == to)
        return;
    net_count(hb, d, -1);
    if (e->net)
        e->net->devices--;
    e->net = to;
    if (to)
        to->devices++;
    net_count(hb, d, +1);
}

void hb_forget(struct heartbeat *hb, struct device *d)
{
    net_move(hb, d, NULL);
}

void hb_free(struct heartbeat *hb)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while (strmap_next(&hb->nets, &pos, &key, &val))
        free(val);
    strmap_free(&hb->nets);
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
static void success(struct heartbeat *hbm, struct device *d, unsigned hb, unsigned under)
{
    const struct config *cfg = hbm->cfg;
    struct hb_device *e = hb_device(hbm, d);
    unsigned before = d->heartbeat_hint, next;

    if (hb > d->heartbeat_good)
        d->heartbeat_good = hb;
    /* Followed the advice: at least the hint it knew, or the hint now if that fell since. */
    if (hb < (under < d->heartbeat_hint ? under : d->heartbeat_hint) || hb < d->heartbeat_good)
        return; /* proves less than what is known already */
    if (++e->successes < cfg->heartbeat_sample_size)
        return;
    e->successes = 0;
    net_count(hbm, d, -1);
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
    net_count(hbm, d, +1);
    log_change(d, "success", hb, before);
}

static void failure(struct heartbeat *hbm, struct device *d, unsigned hb, const char *why)
{
    unsigned before = d->heartbeat_hint, min = hbm->cfg->heartbeat_min;

    net_count(hbm, d, -1);
    if (d->heartbeat_ceiling == 0 || hb < d->heartbeat_ceiling ||
        (int64_t)time(NULL) - d->ceiling_since >= (int64_t)hbm->cfg->heartbeat_ceiling_retry) {
        d->heartbeat_ceiling = hb;
        d->ceiling_since = (int64_t)time(NULL);
    }
    /* A heartbeat once proven that now fails: the path changed; that proof is void. */
    if (d->heartbeat_good >= hb)
        d->heartbeat_good = 0;
    d->heartbeat_hint = d->heartbeat_good ? d->heartbeat_good : (hb / 2 > min ? hb / 2 : min);
    hb_device(hbm, d)->successes = 0;
    net_count(hbm, d, +1);
    log_change(d, why, hb, before);
}

int hb_on_ping(struct heartbeat *hb, struct device *d, const struct sockaddr *peer,
               int superseding)
{
    struct hb_device *e = hb_device(hb, d);
    uint64_t now = util_now_ms();
    unsigned before_hint = d->heartbeat_hint, before_good = d->heartbeat_good;
    unsigned before_ceiling = d->heartbeat_ceiling;
    unsigned known = d->heartbeat_hint; /* what this ping's sender was told last */

    net_move(hb, d, peer ? net_of(hb, peer) : NULL);
    if (superseding) {
        failure(hb, d, d->heartbeat, "new_ping_while_held");
    } else if (e->expired_heartbeat) {
        uint64_t gap = now - e->expired_at;
        if (gap <= (uint64_t)hb->cfg->heartbeat_grace * 1000)
            success(hb, d, e->expired_heartbeat, e->expired_under);
        else if (gap <= (uint64_t)hb->cfg->heartbeat_max * 1000)
            failure(hb, d, e->expired_heartbeat, "late_ping_after_expiry");
    }
    e->expired_heartbeat = 0;
    e->asked_under = known;
    return d->heartbeat_hint != before_hint || d->heartbeat_good != before_good ||
           d->heartbeat_ceiling != before_ceiling;
}

void hb_on_expired(struct heartbeat *hb, struct device *d, unsigned seconds)
{
    struct hb_device *e = hb_device(hb, d);

    e->expired_heartbeat = seconds;
    e->expired_under = e->asked_under;
    e->expired_at = util_now_ms();
}

void hb_on_lost(struct heartbeat *hb, struct device *d)
{
    hb_device(hb, d)->expired_heartbeat = 0;
    failure(hb, d, d->heartbeat, "connection_lost_while_held");
}
