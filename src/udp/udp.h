/*
 * udp.h — UDP new-mail datagrams: registrations, the resend schedule, acks
 * and what ICMP errors mean for them (see docs/udp.md). The socket is
 * socket.h, the wire format datagram.h, the HTTP endpoints push/udp_api.c.
 *
 * A registration belongs to one device (this module's slot in the device)
 * and is a session of its user. It names an address, the folders to hear about and,
 * per folder, the state the device is known to hold. A folder is pending
 * while the store's state is newer than that: the device is sent a notify
 * at once, then again every [udp] resend_interval (at most max_resends
 * times per change) until it catches up (ping, poll, ack), an ICMP error
 * says its address is unreachable (the registration is suspended), or the
 * registration ends.
 */
#ifndef NUDGE_UDP_H
#define NUDGE_UDP_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/deadline.h"
#include "common/strmap.h"
#include "store/store.h"
#include "udp/socket.h"

struct config;
struct device;
struct jsonw;
struct metrics;
struct shard;
struct user;

struct udp_reg {
    struct device *device;
    struct deadline_node deadline; /* the next resend or the expiry, whichever is first */
    uint64_t id;
    uint8_t idkey[8];              /* id, big-endian: its key in the registry */
    uint8_t key[32];
    uint8_t suspended;             /* an ICMP error said the address is unreachable */
    uint32_t resends;              /* resends of the pending change so far */
    uint64_t seq;                  /* the last sequence number sent */
    uint64_t seq_reserved;         /* saved: no sequence number above it was used */
    uint64_t acked_seq;            /* the highest sequence number acked */
    uint64_t resend_at;            /* ms (monotonic); 0: nothing to resend */
    uint64_t expires_ms;           /* ms (monotonic) */
    int64_t expires_at;            /* the same in Unix time, s (persisted) */
    int64_t saved_expires;         /* expires_at as last saved */
    uint64_t created_ms;
    uint64_t sent;                 /* datagrams sent to it, for the sessions list */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } addr;
    uint32_t nfolders;
    struct store_folder *folders;  /* names owned; state: what the device holds */
    uint64_t *notified;            /* per folder: the newest state sent */
};

/* A device record changed (a registration began, ended, moved on): save it. */
typedef void (*udp_save_fn)(void *arg, struct device *d);

/* A worker's UDP side. */
struct udp {
    const struct config *cfg;
    struct store *store;
    struct metrics *metrics;
    struct udp_socket sock;
    uv_timer_t timer;
    int timer_open, closing;
    uint64_t timer_at;          /* what the timer is armed for; 0: not armed */
    struct deadline_heap heap;  /* registrations by their next deadline */
    struct strmap regs;         /* 8-byte big-endian id -> struct udp_reg */
    struct strmap by_addr;      /* target address bytes -> its registrations' count */
    size_t dslot, uslot;        /* its slots in devices (the registration) and users (a count) */
    udp_save_fn save;
    void *save_arg;
    uint64_t reject_log_at;     /* ms: the last udp_datagram_rejected line */
    uint64_t reject_suppressed; /* rejections not logged since */
};

/*
 * Opens the UDP socket ([udp] listen; with it empty, *out is NULL and
 * nothing else happens) on port + 'worker_index', reserves the module's
 * slots in sh, logs event 1600 with the bound address. Call before device
 * records are loaded (they may bring registrations). 'save' is how a device
 * record is saved. 0, or -1 with err set.
 */
int udp_init(struct udp **out, uv_loop_t *loop, const struct config *cfg, unsigned worker_index,
             struct store *store, struct shard *sh, struct metrics *metrics, udp_save_fn save,
             void *save_arg, char *err, size_t errlen);

/* Closes the socket's handles (at stop; registrations stay saved). */
void udp_stop(struct udp *u);

/* Frees every registration and the socket (after the loop ended). */
void udp_free(struct udp *u);

/* d's registration, or NULL (also when UDP is off). */
static inline struct udp_reg *udp_reg_of(const struct udp *u, const struct device *d)
{
    return u ? *(struct udp_reg **)((char *)d - u->dslot) : NULL;
}

/* How many of u's devices have a registration (0 when UDP is off). */
static inline uint32_t udp_user_count(const struct udp *u, const struct user *user)
{
    return u ? *(const uint32_t *)((const char *)user - u->uslot) : 0;
}

/* Registrations on this worker whose datagrams go to sa's address (any port). */
unsigned udp_addr_count(const struct udp *u, const struct sockaddr *sa);

/* A stored registration of d (at start-up): rebuilt, and pending folders sent. */
void udp_restore(struct udp *u, struct device *d, const struct store_udp *r);

/* Folders of 'user' changed (after the store committed): notify its registered devices. */
void udp_on_change(struct udp *u, struct user *user);

/*
 * Device d showed it holds 'state' of 'folder' (a ping presented or was
 * answered with it, a poll answered it). Stops that folder's resends when
 * it has caught up.
 */
void udp_knows(struct udp *u, struct device *d, const char *folder, uint64_t state);

/*
 * The user has the mail of 'folder' up to 'state' (a "read" or "expunge"
 * event): every registration of 'user' takes it as known, so nothing is sent
 * for it and its resends stop.
 */
void udp_caught_up(struct udp *u, struct user *user, const char *folder, uint64_t state);

/* Device d pinged: it is present, so its registration is renewed and, if suspended, revived. */
void udp_device_present(struct udp *u, struct device *d);

/* Ends d's registration (if any), logs event 1603 with 'why' and saves the device record. */
void udp_end(struct udp *u, struct device *d, const char *why);

/*
 * Registers d for datagrams to 'to' (an address udp_target accepted), for the
 * folders f[0..n) with the states the device holds; replaces d's old
 * registration. Sends at once what the device is behind on. Returns the
 * registration, or NULL when no random bytes could be had for its key.
 * The caller has admitted the session.
 */
struct udp_reg *udp_register(struct udp *u, struct device *d, const struct sockaddr *to,
                             const struct store_folder *f, size_t n);

/*
 * Fits 'ss' to the UDP socket's family (an IPv4 address becomes IPv4-mapped
 * on an IPv6 socket, and back). 0, or -1 when the socket cannot reach it.
 */
int udp_target(struct udp *u, struct sockaddr_storage *ss);

/* Sends a test datagram carrying nonce[0..len) to 'to'. 0, or -1 (logged). */
int udp_send_test(struct udp *u, const struct sockaddr *to, const char *nonce, size_t len);

/* The socket's bound address as text (and in *out when not NULL). */
const char *udp_bound_addr(struct udp *u, struct sockaddr_storage *out);

/* At the session cap: ends d's registration if it is suspended. Returns 1 if it did. */
int udp_reap_suspended(struct udp *u, struct device *d);

/* The registration's JSON for the sessions list: {"id":...,"address":...,...}. */
void udp_describe(const struct udp_reg *r, struct jsonw *w, uint64_t now);

/* Fills a store record of r (pointers into r). */
void udp_record(const struct udp_reg *r, struct store_udp *out, char *addrbuf, size_t addrlen);

#endif
