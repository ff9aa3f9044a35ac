/*
 * udp.h — UDP new-mail datagrams: registrations, the resend schedule, acks,
 * ICMP errors, and the HTTP endpoints that manage them (see docs/udp.md).
 *
 * A registration belongs to one device (struct device 'udp') and is a
 * session of its user. It names an address, the folders to hear about and,
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

#include "server/deadline.h"
#include "store/store.h"

struct conn;
struct device;
struct http_req;
struct jsonw;
struct principal;
struct server;
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

/*
 * Opens the UDP socket ([udp] listen; nothing when empty) with ICMP error
 * reporting, logs event 1600 with the bound address. Call before device
 * records are loaded (they may bring registrations). 0, or -1 with err set.
 */
int udp_init(struct server *s, char *err, size_t errlen);

/* Closes the socket's handles (at stop; registrations stay saved). */
void udp_stop(struct server *s);

/* Frees every registration and the socket (after the loop ended). */
void udp_free(struct server *s);

/* A stored registration of d (at start-up): rebuilt, and pending folders sent. */
void udp_restore(struct server *s, struct device *d, const struct store_udp *r);

/* Folders of u changed (after the store committed): notify its registered devices. */
void udp_on_change(struct server *s, struct user *u);

/*
 * Device d showed it holds 'state' of 'folder' (a ping presented or was
 * answered with it, a poll answered it). Stops that folder's resends when
 * it has caught up.
 */
void udp_knows(struct server *s, struct device *d, const char *folder, uint64_t state);

/*
 * The user has the mail of 'folder' up to 'state' (a "read" or "expunge"
 * event): every registration of u takes it as known, so nothing is sent
 * for it and its resends stop.
 */
void udp_caught_up(struct server *s, struct user *u, const char *folder, uint64_t state);

/* Device d pinged: it is present, so its registration is renewed and, if suspended, revived. */
void udp_device_present(struct server *s, struct device *d);

/* Ends d's registration (if any), logs event 1603 with 'why' and saves the device record. */
void udp_end(struct server *s, struct device *d, const char *why);

/*
 * Registers d for datagrams to 'to' (an address udp_target accepted), for the
 * folders f[0..n) with the states the device holds; replaces d's old
 * registration. Sends at once what the device is behind on. Returns the
 * registration, or NULL when no random bytes could be had for its key.
 * The caller has admitted the session.
 */
struct udp_reg *udp_register(struct server *s, struct device *d, const struct sockaddr *to,
                             const struct store_folder *f, size_t n);

/*
 * Fits 'ss' to the UDP socket's family (an IPv4 address becomes IPv4-mapped
 * on an IPv6 socket, and back). 0, or -1 when the socket cannot reach it.
 */
int udp_target(struct server *s, struct sockaddr_storage *ss);

/* Sends a test datagram carrying nonce[0..len) to 'to'. 0, or -1 (logged). */
int udp_send_test(struct server *s, const struct sockaddr *to, const char *nonce, size_t len);

/* The socket's bound address as text (and in *out when not NULL). */
const char *udp_bound_addr(struct server *s, struct sockaddr_storage *out);

/* At the session cap: ends d's registration if it is suspended. Returns 1 if it did. */
int udp_reap_suspended(struct server *s, struct device *d);

/* The registration's JSON for the sessions list: {"id":...,"address":...,...}. */
void udp_describe(const struct udp_reg *r, struct jsonw *w, uint64_t now);

/* Fills a store record of r (pointers into r). */
void udp_record(const struct udp_reg *r, struct store_udp *out, char *addrbuf, size_t addrlen);

/* POST /v1/udp, DELETE /v1/udp/{device}, POST /v1/udp/test (user tokens). */
void udp_register_handle(struct conn *c, struct http_req *r, const struct principal *who);
void udp_delete_handle(struct conn *c, struct http_req *r, const struct principal *who);
void udp_test_handle(struct conn *c, struct http_req *r, const struct principal *who);

#endif
