/*
 * mesh.h — messages between worker processes.
 *
 * Every pair of workers shares one AF_UNIX SOCK_SEQPACKET socket pair,
 * made by the supervisor before it forks. SEQPACKET keeps message
 * boundaries and sends a message whole or not at all, so a worker that dies
 * halfway through reading can never leave its successor a torn stream: the
 * supervisor keeps both ends of every pair open, and a restarted worker
 * reads, on the same sockets, whatever was sent to it meanwhile.
 *
 * A message is a struct mesh_hdr and a payload; a client connection moves
 * with SCM_RIGHTS on a MESH_HANDOFF message. A call (mesh_call) is a
 * request with an id whose reply carries the same id; the callback runs
 * once: with the reply, or with a negative errno when the peer restarted
 * (MESH_RESET, written by the supervisor as the dead worker) or did not
 * answer within MESH_CALL_TIMEOUT_MS.
 *
 * Sends never block. A message without a descriptor is queued and leaves
 * when the loop turn ends, packed with the others of that turn for the same
 * peer into one MESH_BATCH packet; a message with a descriptor goes at
 * once, after them. One the socket cannot take now stays queued (with a
 * dup of its descriptor) and is written when the socket is writable again.
 * Messages to one peer arrive in the order they were sent.
 */
#ifndef NUDGE_MESH_H
#define NUDGE_MESH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct server;

enum mesh_type {
    MESH_HANDOFF = 1,     /* fd + struct mesh_handoff + the bytes read from the client */
    MESH_IP_MOVE,         /* struct mesh_ip_move: a max_per_ip count changed holder */
    MESH_RESET,           /* from the supervisor, as a worker that died */
    MESH_BUMP,            /* events for the receiver's users (push/events.c) */
    MESH_BUMP_REPLY,
    MESH_METRICS,         /* the receiver's counters (server/admin.c) */
    MESH_METRICS_REPLY,
    MESH_SESSIONS,        /* the receiver's sessions (session/session.c) */
    MESH_SESSIONS_REPLY,
    MESH_BATCH,           /* several messages without descriptors, as frames (mesh.c) */
    MESH_TYPE_COUNT,
};

struct mesh_hdr {
    uint32_t type;
    uint32_t id;          /* a call's id; 0 for plain messages */
};

/* The head of a MESH_HANDOFF payload; the client's bytes follow. */
struct mesh_handoff {
    uint16_t ip_owner;    /* the worker counting its address for max_per_ip; 0xffff: none */
    uint8_t klen;         /* 4, 16, or 0 */
    uint8_t pad;
    uint8_t key[16];
};

#define MESH_NOBODY 0xffffu

/* A connection from address 'key' moved from worker 'from' to 'to' (MESH_NOBODY: it closed). */
struct mesh_ip_move {
    uint16_t from, to;
    uint8_t klen;
    uint8_t pad[3];
    uint8_t key[16];
};

#define MESH_CALL_TIMEOUT_MS 5000

/*
 * status: 0 with the reply's (last) payload; MESH_MORE with one part of a
 * reply that continues; or a negative errno (p NULL) and no more calls.
 */
typedef void (*mesh_reply_cb)(void *arg, unsigned from, const char *p, size_t len, int status);

#define MESH_MORE 1

/* Starts reading the peers' sockets (s->wk set). 0, or -1 with err. */
int mesh_init(struct server *s, char *err, size_t errlen);
/* Closes the handles (at stop); pending calls fail with -ECANCELED. */
void mesh_stop(struct server *s);
void mesh_free(struct server *s);

/* Largest payload a message can carry. */
size_t mesh_max_payload(const struct server *s);

/*
 * Sends a message; 'fd' >= 0 travels with it (the caller keeps its own
 * descriptor). 0, or a negative errno (-EMSGSIZE: too big; nothing sent).
 */
int mesh_send(struct server *s, unsigned to, unsigned type, uint32_t id, const struct iovec *iov,
              int iovcnt, int fd);

/* Answers call 'id' of worker 'to'; 'more': further parts follow (MESH_MORE to the caller). */
int mesh_reply(struct server *s, unsigned to, unsigned type, uint32_t id, int more,
               const struct iovec *iov, int iovcnt);

/*
 * Sends a request. 0: cb runs later (never from inside this call), until a
 * final status; or a negative errno and cb never runs.
 */
int mesh_call(struct server *s, unsigned to, unsigned type, const struct iovec *iov, int iovcnt,
              mesh_reply_cb cb, void *arg);

#endif
