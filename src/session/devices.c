/* devices.c — device records saved and loaded; see devices.h. */
#include "session/devices.h"

#include "common/log.h"
#include "shard/shard.h"
#include "store/store.h"
#include "udp/udp.h"

void devices_init(struct devices *dv, struct store *store, struct shard *shard, struct udp *udp)
{
    dv->store = store;
    dv->shard = shard;
    dv->udp = udp;
}

void devices_save(struct devices *dv, const struct device *d)
{
    const struct udp_reg *r = udp_reg_of(dv->udp, d);
    struct store_device sd;
    struct store_udp udp;
    char addr[64];

    shard_record(d, &sd);
    if (r) {
        udp_record(r, &udp, addr, sizeof(addr));
        sd.udp = &udp;
    }
    store_device_save(dv->store, &sd);
}

void devices_on_save(void *arg, struct device *d)
{
    devices_save(arg, d);
}

/* One saved record: the device's last ping parameters, its heartbeat, its registration. */
static void on_device_loaded(void *arg, const struct store_device *sd)
{
    struct devices *dv = arg;
    struct user *u = shard_user(dv->shard, sd->user, 1);
    struct device *d = shard_device(dv->shard, u, sd->device, 1);

    shard_set_folders(d, sd->folders, sd->nfolders);
    d->heartbeat = sd->heartbeat;
    d->heartbeat_hint = sd->heartbeat_hint;
    d->heartbeat_good = sd->heartbeat_good;
    d->heartbeat_ceiling = sd->heartbeat_ceiling;
    d->ceiling_since = sd->ceiling_since;
    if (sd->udp == NULL)
        return;
    if (dv->udp) {
        udp_restore(dv->udp, d, sd->udp);
        return;
    }
    {
        char q1[300], q2[300];
        LOG(LOG_INFO, udp_ended, "user=%s device=%s id=%llu address=%s why=%s",
            log_q(q1, sizeof(q1), u->id), log_q(q2, sizeof(q2), d->id),
            (unsigned long long)sd->udp->id, sd->udp->address,
            "\"UDP is off ([udp] listen is empty)\"");
        devices_save(dv, d); /* without the registration */
    }
}

void devices_load(struct devices *dv)
{
    store_device_load(dv->store, on_device_loaded, dv);
}
