/*
 * heartbeat.h — the adaptive heartbeat: per device, learn the longest
 * heartbeat its network path lets through, and advise it in every answer
 * (heartbeat_hint).
 *
 * Evidence, gathered from what the server sees anyway:
 *   success  a held ping expired, was answered, and the device's next ping
 *            came within [heartbeat] grace: the answer got through, so a
 *            flow idle that long survives this path;
 *   failure  the device's next ping after an expiry came later than grace
 *            (but within a heartbeat max: longer is a device that was away,
 *            not evidence), which is what a device does when a middlebox ate
 *            the answer: it waited, timed out and reconnected; or the device
 *            pinged again while its previous ping was still held; or the
 *            held connection died before its heartbeat ended.
 * After sample_size successes at or above the hint, the hint rises by
 * increment (never to or past a known ceiling: then halfway to it). A failure
 * makes the failed heartbeat the ceiling and falls back to the longest one
 * proven (or half the failed one when none is), so the hint settles just
 * below the path's idle timeout. Ceilings expire after ceiling_retry:
 * networks change. The learned values live in the device record (store).
 *
 * Per client network (/24 for IPv4, /56 for IPv6) the hints of devices that
 * have hit a ceiling are averaged; at or below [heartbeat] alert_average
 * (Exchange's 540 s, event 1040) event 1311 names the network once, when at
 * least [heartbeat] alert_min_devices of them count.
 *
 * The learned values (hint, proven, ceiling) are the device's data
 * (shard.h) and saved with its record; the evidence awaiting a verdict and
 * the device's network live in this module's slot of each device. Nothing
 * here writes to the store: a caller told "changed" saves the record.
 */
#ifndef NUDGE_HEARTBEAT_H
#define NUDGE_HEARTBEAT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/strmap.h"

struct config;
struct device;
struct shard;

/* Per-network figures (kept in heartbeat->nets). */
struct hbnet {
    uint32_t devices;      /* devices whose last ping came from here */
    uint32_t counted;      /* of them, those with a learned ceiling */
    uint64_t hint_sum;     /* sum of the counted devices' hints */
    uint8_t alerted;       /* event 1311 logged and the average still low */
    uint8_t klen;
    char key[8];           /* address prefix bytes */
    char name[48];         /* "10.1.2.0/24" */
};

/* What this module keeps per device (its shard slot). */
struct hb_device {
    uint32_t successes;            /* proofs at the hint since it last changed */
    uint32_t expired_heartbeat;    /* the expiry answered last, awaiting its proof; 0: none */
    uint32_t asked_under;          /* the hint the device knew when it sent its last ping */
    uint32_t expired_under;        /* the same, for the expired ping awaiting proof */
    uint64_t expired_at;           /* ms (monotonic) of that expiry answer */
    struct hbnet *net;             /* the client network it last pinged from */
};

struct heartbeat {
    const struct config *cfg;
    struct strmap nets;            /* client network prefix -> struct hbnet */
    size_t slot;                   /* of struct hb_device in each device */
};

/* Sets hb up and reserves its slot in sh's devices (before any user exists). */
void hb_init(struct heartbeat *hb, const struct config *cfg, struct shard *sh);

/* Frees the per-network table. */
void hb_free(struct heartbeat *hb);

/* This module's record of d. */
static inline struct hb_device *hb_device(const struct heartbeat *hb, const struct device *d)
{
    return (struct hb_device *)((char *)d - hb->slot);
}

/*
 * A ping from d arrived from 'peer' (before it is answered or held). The
 * device's previous heartbeat is d->heartbeat; 'superseding' when its
 * previous ping is still held. Judges the pending evidence. Returns 1 when
 * the learned values changed (the record should be saved).
 */
int hb_on_ping(struct heartbeat *hb, struct device *d, const struct sockaddr *peer,
               int superseding);

/* A new device's first hint: what it asked, within the bounds. */
void hb_first_hint(const struct heartbeat *hb, struct device *d, unsigned requested);

/* d's held ping (heartbeat 'seconds') expires now and is answered: await the proof. */
void hb_on_expired(struct heartbeat *hb, struct device *d, unsigned seconds);

/*
 * d's held ping died before its heartbeat ended (the path or the peer is
 * gone). The learned values change: save the record.
 */
void hb_on_lost(struct heartbeat *hb, struct device *d);

/* d is forgotten (a refused new device): leave its network. */
void hb_forget(struct heartbeat *hb, struct device *d);

/* The hint to send: the learned one, within today's bounds. */
unsigned hb_hint(const struct heartbeat *hb, const struct device *d);

#endif
