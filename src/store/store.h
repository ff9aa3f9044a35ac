/*
 * store.h — where folder states live: a struct of function pointers chosen
 * by name ([store] backend), like OpenSMTPD's scheduler backends.
 *
 * Reads are synchronous and must be served from memory (they sit on the ping
 * path). A bump is asynchronous: the backend assigns the new states and
 * calls 'done' once they are durable (at once for the memory backend; after
 * the group commit for SQLite). Callers wake held pings and acknowledge a
 * publish only in 'done', so no client ever learns a state that a crash
 * could take back, and get() returns the new states only from 'done' on.
 */
#ifndef NUDGE_STORE_H
#define NUDGE_STORE_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct store;
struct uv_loop_s;

struct store_event {
    const char *user;   /* borrowed for the duration of the bump */
    const char *folder;
    const char *type;   /* the publisher's event type, or NULL; not stored */
    const char *meta;   /* the publisher's other fields as a JSON object's text, or NULL; not stored */
    uint64_t at_least;  /* the new state is at least this (0 for a publish: one more) */
    uint64_t state;     /* out: the folder's new state */
};

/*
 * Folders whose name starts with this byte are nudge's own per-user
 * counters, not mail folders: the time before which a user's tokens are
 * revoked (auth/token.h TOKEN_REVOKED_FOLDER). They live, move between
 * shard files and survive a crash as folder states do; no client can name
 * one (push/check.h refuses control characters), and list() leaves them out.
 */
#define STORE_INTERNAL '\x01'


/*
 * A device's record: what must survive a restart so that an empty-body ping
 * after it still works, its learned heartbeat and its UDP registration. All
 * pointers are borrowed for the duration of the call.
 */
struct store_folder {
    const char *name;
    uint64_t state;               /* the state the device holds */
};

/*
 * A device's UDP registration (push/udp.c), saved with its record so it
 * outlives a restart. 'folders' holds the states the device is known to hold.
 */
struct store_udp {
    uint64_t id;
    const uint8_t *key;           /* 32 bytes */
    const char *address;          /* where datagrams go: "192.0.2.7:40001", "[::1]:40001" */
    int64_t expires;              /* Unix time, s */
    uint64_t seq;                 /* no datagram of it was sent with a higher sequence number */
    int suspended;                /* an ICMP error said the address is unreachable */
    uint32_t nfolders;
    const struct store_folder *folders;
};

struct store_device {
    const char *user;
    const char *device;
    uint32_t heartbeat;           /* last ping's heartbeat, s */
    uint32_t heartbeat_hint;      /* last advised heartbeat, s */
    uint32_t heartbeat_good;      /* longest heartbeat proven on the device's path, s; 0: none */
    uint32_t heartbeat_ceiling;   /* a heartbeat that failed on its path, s; 0: none */
    int64_t ceiling_since;        /* Unix time the ceiling was learned */
    uint32_t nfolders;
    const struct store_folder *folders; /* the last ping's folders */
    const struct store_udp *udp;  /* its UDP registration, or NULL */
};

typedef void (*store_device_cb)(void *arg, const struct store_device *d);

/*
 * A user's record of one kind: a module's own data about the user that must
 * outlive a restart (the ActiveSync folder map: kind "activesync.folders"),
 * as text the module writes and reads itself.
 */
typedef void (*store_record_cb)(void *arg, const char *user, const char *kind, const char *data);

/* status: 0, or a negative errno when the bump could not be made durable. */
typedef void (*store_done_cb)(void *arg, struct store_event *ev, size_t n, int status);
typedef void (*store_list_cb)(void *arg, const char *folder, uint64_t state);

struct store_backend {
    const char *name;
    /*
     * Opens the store from the config; callbacks (done) will run on 'loop'.
     * 0, or -1 with err set to one line: what failed, where, what to do.
     */
    int (*open)(struct store **out, const struct config *c, struct uv_loop_s *loop, char *err,
                size_t errlen);
    /* Frees everything; no callback fires afterwards. */
    void (*close)(struct store *s);
    /* The committed state of (user, folder); 0 when none. */
    uint64_t (*get)(struct store *s, const char *user, const char *folder);
    /* Calls cb for each folder of the user with a state (not STORE_INTERNAL ones); returns the count. */
    size_t (*list)(struct store *s, const char *user, store_list_cb cb, void *arg);
    /*
     * Bumps each event's folder by one, or to its at_least when that is more
     * (events may repeat a folder: each counts).
     * ev[] must stay valid until done() runs. Returns 0 when done() will be
     * called (perhaps before bump returns), or a negative errno (no call).
     */
    int (*bump)(struct store *s, struct store_event *ev, size_t n, store_done_cb done, void *arg);
    /*
     * Saves a device record, replacing the previous one (write-behind: not
     * waited for; a crash may lose the last few, which costs a client one
     * full-body ping, never a notification). The record is copied.
     */
    void (*device_save)(struct store *s, const struct store_device *d);
    /* Calls cb for every saved device record (at start-up). Returns the count. */
    size_t (*device_load)(struct store *s, store_device_cb cb, void *arg);
    /*
     * Saves the user's record of 'kind' (data NULL: deletes it), write-behind
     * and in order with device records. NULL on a backend that keeps nothing
     * across a restart (memory).
     */
    void (*record_save)(struct store *s, const char *user, const char *kind, const char *data);
    /* Calls cb for every saved user record (at start-up). Returns the count. */
    size_t (*record_load)(struct store *s, store_record_cb cb, void *arg);
    /*
     * Optional (NULL: always healthy). 0 once a write failed (a bump
     * answered -EIO, or device records lost) and until a later write
     * commits; 1 otherwise, also before the first write. Any bump or
     * device_save is such a later write, so health comes back with the
     * first one that succeeds. Called on the ping path: it must cost no
     * more than a load.
     */
    int (*healthy)(struct store *s);
};

/* The backend registered under 'name', or NULL. */
const struct store_backend *store_backend_find(const char *name);

/* "sqlite, memory" (later also "redis"): for messages listing the choices. */
const char *store_backend_names(void);

struct store {
    const struct store_backend *be;
};

static inline uint64_t store_get(struct store *s, const char *user, const char *folder)
{
    return s->be->get(s, user, folder);
}

static inline size_t store_list(struct store *s, const char *user, store_list_cb cb, void *arg)
{
    return s->be->list(s, user, cb, arg);
}

static inline int store_bump(struct store *s, struct store_event *ev, size_t n, store_done_cb done,
                             void *arg)
{
    return s->be->bump(s, ev, n, done, arg);
}

static inline void store_device_save(struct store *s, const struct store_device *d)
{
    s->be->device_save(s, d);
}

static inline size_t store_device_load(struct store *s, store_device_cb cb, void *arg)
{
    return s->be->device_load(s, cb, arg);
}

static inline void store_record_save(struct store *s, const char *user, const char *kind,
                                     const char *data)
{
    if (s->be->record_save)
        s->be->record_save(s, user, kind, data);
}

static inline size_t store_record_load(struct store *s, store_record_cb cb, void *arg)
{
    return s->be->record_load ? s->be->record_load(s, cb, arg) : 0;
}

/* Is the store writing? See 'healthy' above; a backend without the op always is. */
static inline int store_healthy(struct store *s)
{
    return s->be->healthy == NULL || s->be->healthy(s);
}

static inline void store_close(struct store *s)
{
    if (s)
        s->be->close(s);
}

/*
 * Could a store open 'path' now, or does another nudged hold it? 0, or -1
 * with err set (store_sqlite.c; the supervisor asks before it forks).
 */
int store_sqlite_lockable(const char *path, char *err, size_t errlen);

extern const struct store_backend store_mem_backend;
extern const struct store_backend store_sqlite_backend;

#endif
