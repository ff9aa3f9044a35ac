/* pingrate.c — requests per device per minute; see pingrate.h. */
#include "push/pingrate.h"

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "shard/shard.h"

/* One minute: the unit the option is stated in, and long enough to see a loop. */
#define WINDOW_S 60

/* What each device keeps (its slot): 8 bytes. */
struct pingrate_dev {
    uint32_t window;            /* the window's number (monotonic s / WINDOW_S) */
    uint16_t count;             /* requests counted in it, saturating */
    uint8_t logged;             /* event 1303 written for this window */
    uint8_t free_next;          /* the last answer told a change: the next request is free */
};

static struct pingrate_dev *dev_of(const struct pingrate *pr, struct device *d)
{
    return shard_slot(d, pr->dslot);
}

void pingrate_init(struct pingrate *pr, const struct config *cfg, struct shard *sh,
                   struct metrics *metrics)
{
    pr->max = cfg->ping_max_per_minute;
    pr->metrics = metrics;
    pr->dslot = shard_device_slot(sh, sizeof(struct pingrate_dev));
}

unsigned pingrate_count(struct pingrate *pr, struct device *d, const char *what)
{
    struct pingrate_dev *x = dev_of(pr, d);
    uint64_t now = util_now_ms() / 1000;
    uint32_t w = (uint32_t)(now / WINDOW_S);
    unsigned wait;

    if (pr->max == 0)
        return 0;
    if (x->window != w) {
        x->window = w;
        x->count = 0;
        x->logged = 0;
    }
    if (x->free_next) {
        x->free_next = 0;
        return 0;
    }
    if (x->count < UINT16_MAX)
        x->count++;
    if (x->count <= pr->max)
        return 0;
    wait = (unsigned)(((uint64_t)w + 1) * WINDOW_S - now);
    if (wait == 0)
        wait = 1;
    pr->metrics->pings_rate_limited++;
    if (!x->logged) {
        char q1[300], q2[300];
        x->logged = 1;
        LOG(LOG_WARN, ping_rate_limited, "user=%s device=%s what=%s max_per_minute=%u retry_after=%u",
            log_q(q1, sizeof(q1), d->user->id), log_q(q2, sizeof(q2), d->id), what, pr->max,
            wait);
    }
    return wait;
}

void pingrate_changed(struct pingrate *pr, struct device *d)
{
    if (pr->max)
        dev_of(pr, d)->free_next = 1;
}
