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
 *
 * The mesh is a transport: it frames, batches, passes descriptors, matches
 * replies to calls and times them out, and knows no message but its own
 * (MESH_RESET, MESH_BATCH, MESH_REPLY). A module that sends a message
 * numbers its type in its own header, from MESH_TYPE_FIRST, and registers
 * the receiving end with mesh_on() at start-up; a number taken twice is a
 * start-up failure, not a silent clash.
 */
#ifndef NUDGE_MESH_H
#define NUDGE_MESH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

struct mesh;
struct metrics;
struct worker_ctx;

enum mesh_own_type {
    MESH_RESET = 1,       /* from the supervisor, as a worker that died */
    MESH_BATCH,           /* several messages without descriptors, as frames (mesh.c) */
    MESH_REPLY,           /* the answer to a call: flags (MESH_MORE) then the payload */
    MESH_TYPE_FIRST = 16, /* the first number a module may give its messages */
    MESH_TYPE_MAX = 64,   /* one past the last */
};

struct mesh_hdr {
    uint32_t type;
    uint32_t id;          /* a call's id; 0 for plain messages */
};

#define MESH_NOBODY 0xffffu

#define MESH_CALL_TIMEOUT_MS 5000

/*
 * The receiving end of a message type: 'id' is the call's (0 for a plain
 * message); 'fd' is a descriptor that came with it, now the handler's to
 * close or keep, or -1.
 */
typedef void (*mesh_msg_fn)(void *arg, unsigned from, uint32_t id, const char *p, size_t len,
                            int fd);

/*
 * status: 0 with the reply's (last) payload; MESH_MORE with one part of a
 * reply that continues; or a negative errno (p NULL) and no more calls.
 */
typedef void (*mesh_reply_cb)(void *arg, unsigned from, const char *p, size_t len, int status);

#define MESH_MORE 1

/*
 * Starts reading the peers' sockets of worker 'wk'. 'max_request' is the
 * largest client request (headers and body) a message may have to carry.
 * Counts its batches in 'metrics'. 0 with *out set, or -1 with err.
 */
int mesh_init(struct mesh **out, uv_loop_t *loop, const struct worker_ctx *wk, size_t max_request,
              struct metrics *metrics, char *err, size_t errlen);
/* Closes the handles (at stop); pending calls fail with -ECANCELED. */
void mesh_stop(struct mesh *m);
void mesh_free(struct mesh *m);

/* Registers the receiving end of 'type' (MESH_TYPE_FIRST..MESH_TYPE_MAX-1); once per type. */
void mesh_on(struct mesh *m, unsigned type, mesh_msg_fn fn, void *arg);

/* 'fn' runs when a peer restarted (MESH_RESET), after its calls have failed. */
void mesh_on_reset(struct mesh *m, void (*fn)(void *arg, unsigned peer), void *arg);

/* Largest payload a message can carry. */
size_t mesh_max_payload(const struct mesh *m);

/*
 * Sends a message; 'fd' >= 0 travels with it (the caller keeps its own
 * descriptor). 0, or a negative errno (-EMSGSIZE: too big; nothing sent).
 */
int mesh_send(struct mesh *m, unsigned to, unsigned type, uint32_t id, const struct iovec *iov,
              int iovcnt, int fd);

/* Answers call 'id' of worker 'to'; 'more': further parts follow (MESH_MORE to the caller). */
int mesh_reply(struct mesh *m, unsigned to, uint32_t id, int more, const struct iovec *iov,
               int iovcnt);

/*
 * Sends a request. 0: cb runs later (never from inside this call), until a
 * final status; or a negative errno and cb never runs.
 */
int mesh_call(struct mesh *m, unsigned to, unsigned type, const struct iovec *iov, int iovcnt,
              mesh_reply_cb cb, void *arg);

/*
 * A gather: several calls (to every other worker, or one part each to a few)
 * and perhaps work of the caller's own, with one callback when all are done.
 * on_part runs for each part of each answer, as a mesh_reply_cb does, with
 * the call's own 'call_arg'; on_done runs once, after the last, and the
 * gather is freed then. mesh_gather_new holds the gather once for its
 * builder, so nothing ends while calls are still being made: release that
 * hold when the last call is out (on_done may run right then). Works with
 * m NULL (no workers): every call fails, the holds still count.
 */
typedef void (*mesh_part_cb)(void *arg, void *call_arg, unsigned from, const char *p, size_t len,
                             int status);
typedef void (*mesh_done_cb)(void *arg);
struct mesh_gather;

struct mesh_gather *mesh_gather_new(struct mesh *m, mesh_part_cb on_part, mesh_done_cb on_done,
                                    void *arg);
/* One more call in the gather. 0, or a negative errno (on_part never runs for it). */
int mesh_gather_call(struct mesh_gather *g, unsigned to, unsigned type, const struct iovec *iov,
                     int iovcnt, void *call_arg);
/* The same call to every other worker; one that cannot be sent is left out. */
void mesh_gather_all(struct mesh_gather *g, unsigned type, const struct iovec *iov, int iovcnt);
/* The caller has work of its own outstanding: done waits for one more release. */
void mesh_gather_hold(struct mesh_gather *g);
/* One hold ends; at the last, on_done runs and g is freed. */
void mesh_gather_release(struct mesh_gather *g);

#endif
