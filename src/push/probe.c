/*
 * probe.c — the path idle-timeout probe; see probe.h.
 *
 * Keepalive is switched off on the probe's socket (and TCP_USER_TIMEOUT does
 * not matter: nothing is written while it waits), so the flow is truly idle
 * for N seconds. The connection is not reused afterwards for anything that
 * needs keepalive: the answer closes it.
 */
#include "push/probe.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth/principal.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "http/error.h"
#include "http/request.h"
#include "shard/shard.h"

/* The Retry-After of a refused probe, s. */
#define PROBE_RETRY_S 60

/* The heartbeat ceiling: no heartbeat can be longer, so no probe need be. */
#define PROBE_HOLD_MAX 3540

/* One probe being held. */
struct held_probe {
    struct user *user;
    unsigned hold;
};

static uint32_t *probes_of(struct probe *pr, struct user *u)
{
    return (uint32_t *)shard_slot(u, pr->uslot);
}

/* The probe's connection is done with it (answered or closed). */
static void end(struct probe *pr, struct held_probe *hp)
{
    uint32_t *n = probes_of(pr, hp->user);

    if (*n > 0)
        (*n)--;
    if (pr->metrics->probes_held > 0)
        pr->metrics->probes_held--;
    free(hp);
}

/* Held its full time: answer {"held":N}. */
static void on_expired(void *ctx, struct conn *c, void *arg)
{
    struct held_probe *hp = arg;
    char body[48];
    int n = snprintf(body, sizeof(body), "{\"held\":%u}", hp->hold);

    end(ctx, hp);
    /* Keepalive is off on this socket: do not let it idle on as a keep-alive connection. */
    conn_close_after_answer(c);
    conn_respond(c, 200, NULL, body, (size_t)n);
}

static void on_closed(void *ctx, struct conn *c, void *arg, enum conn_why why, const char *text)
{
    (void)c;
    (void)why;
    (void)text;
    end(ctx, arg);
}

/* A probe measures the path; at a stop there is nothing to answer. */
static void on_shutdown(void *ctx, struct conn *c, void *arg)
{
    (void)ctx;
    (void)arg;
    conn_close(c, CONN_WHY_SHUTDOWN, NULL);
}

/*
 * 429 too-many-probes at one of the limits ('which' names it for the log).
 * Retry-After is a minute: probes end by themselves, the longest within
 * the hour, and a ladder that retries that soon loses little.
 */
static void refused(struct probe *pr, const struct user *u, struct http_error *e,
                    const char *which, unsigned max)
{
    char q[300];

    pr->metrics->probes_refused++;
    LOG(LOG_INFO, probe_limited, "user=%s limit=%s max=%u", log_q(q, sizeof(q), u->id), which,
        max);
    http_error_set(e, 429, "too-many-probes",
                   strcmp(which, "per_user") == 0 ? "at most %u probes per user at once"
                                                  : "at most %u probes at once on this server",
                   max);
    http_error_num(e, "max", max);
    http_error_header(e, "Retry-After: %u", PROBE_RETRY_S);
}

void probe_init(struct probe *pr, const struct config *cfg, struct shard *sh,
                struct metrics *metrics)
{
    pr->cfg = cfg;
    pr->shard = sh;
    pr->metrics = metrics;
    pr->uslot = shard_user_slot(sh, sizeof(uint32_t));
    pr->holder = (struct conn_holder){
        .expired = on_expired,
        .closed = on_closed,
        .shutdown = on_shutdown,
        .ctx = pr,
    };
}

void probe_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct probe *pr = arg;
    char val[16];
    long n = util_query_param(r->query, r->query_len, "hold", val, sizeof(val));
    struct http_error e;
    struct held_probe *hp;
    uint64_t hold;
    struct user *u;
    int off = 0, fd;

    if (n < 0 || util_parse_u64(val, (size_t)n, &hold) < 0 || hold < 1 || hold > PROBE_HOLD_MAX) {
        http_error_bad(&e, "hold must be a whole number of seconds from 1 to %u", PROBE_HOLD_MAX);
        goto refuse;
    }
    u = shard_user(pr->shard, who->subject, 1);
    if (*probes_of(pr, u) >= pr->cfg->probe_max_per_user) {
        refused(pr, u, &e, "per_user", pr->cfg->probe_max_per_user);
        goto refuse;
    }
    if (pr->metrics->probes_held >= pr->cfg->probe_max_held) {
        refused(pr, u, &e, "held", pr->cfg->probe_max_held);
        goto refuse;
    }
    fd = conn_fd(c);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &off, sizeof(off)) < 0) {
        http_error_set(&e, 503, "unavailable", "cannot switch keepalive off");
        goto refuse;
    }
    hp = malloc(sizeof(*hp));
    if (hp == NULL) {
        http_error_set(&e, 503, "unavailable", "out of memory");
        goto refuse;
    }
    hp->user = u;
    hp->hold = (unsigned)hold;
    (*probes_of(pr, u))++;
    pr->metrics->probes_held++;
    conn_hold(c, &pr->holder, hp, util_now_ms() + hold * 1000);
    return;
refuse:
    conn_respond_error(c, &e);
}
