/*
 * sqlite_writer.h — the SQLite store's writer thread: group commit.
 *
 * The event loop never waits on the disk. It queues bump batches and device
 * records here and goes on; one thread owning its own connection takes
 * everything queued, writes it in ONE transaction, and hands the batches
 * back (sqlite_writer_take_done) after the commit, calling 'notify' so the
 * loop knows to look. While one commit waits for its fsync, the next
 * publishes pile up and share the following one: under load many publishes
 * cost one fsync.
 *
 * Order: everything is taken from one FIFO under one lock and commits happen
 * one after another, so an item is durable no later than anything queued
 * after it. In particular a device record is durable once any publish queued
 * after it has been acknowledged.
 *
 * Knows nothing of libuv or of the in-memory states: store_sqlite.c owns both.
 */
#ifndef NUDGE_SQLITE_WRITER_H
#define NUDGE_SQLITE_WRITER_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* One bump: the caller embeds it in its own record (ev must outlive the write). */
struct sqlite_batch {
    struct sqlite_batch *next;
    const struct store_event *ev;
    size_t n;
    int status; /* set by the writer: 0, or -EIO when the commit failed */
};

/* One device record, copied: one allocation plus the folders' JSON text. */
struct sqlite_device_rec {
    struct sqlite_device_rec *next;
    uint32_t heartbeat;
    uint32_t heartbeat_hint;
    uint32_t heartbeat_good;
    uint32_t heartbeat_ceiling;
    int64_t ceiling_since;
    char *folders;      /* {"INBOX":"17",...}, malloc'd, freed by the writer */
    char *udp;          /* the UDP registration as JSON, "" for none; malloc'd, freed by the writer */
    const char *device; /* points into user[] */
    char user[];        /* user id, NUL, device id, NUL */
};

/* One user record (store.h), copied: one allocation, or data NULL to delete it. */
struct sqlite_record_rec {
    struct sqlite_record_rec *next;
    const char *kind;   /* points into user[] */
    const char *data;   /* points into user[], or NULL: delete */
    char user[];        /* user id, NUL, kind, NUL, data, NUL */
};

struct sqlite_writer {
    sqlite3 *db;                 /* the writer thread's own connection */
    /* Prepared once: a round runs no SQL text through the parser. */
    sqlite3_stmt *put_state, *put_device, *put_record, *del_record, *begin, *commit, *rollback,
        *sync_set[2];
    int sync_full;               /* [store] sync for commits that hold publishes */
    int cur_full;                /* the connection's setting now (-1: unknown) */
    const char *path;            /* for log lines; outlives the writer */
    void (*notify)(void *arg);   /* runs on the writer thread after batches are done */
    void *notify_arg;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Under mu: */
    struct sqlite_batch *todo, **todo_tail;
    struct sqlite_device_rec *devs, **devs_tail;
    struct sqlite_record_rec *recs, **recs_tail;
    struct sqlite_batch *done, **done_tail;
    int stop;
    /* Writer thread only; read by the owner after sqlite_writer_stop. */
    uint64_t commits, batches, devices;
    uint64_t failed_rounds;      /* writer thread only: rounds failed since the last commit */
    /*
     * Set by the writer thread after each round: 1 when it failed, 0 when it
     * committed. Read by the loop without the lock (sqlite_writer_failing):
     * nothing else is read along with it, so relaxed order is enough.
     */
    atomic_int failing;
};

/*
 * Prepares the statements on 'db' (a read-write connection to a database
 * with nudge's schema) and starts the thread, which then owns 'db'.
 * sync_full: commits holding batches use synchronous=FULL, else NORMAL.
 * Returns 0, or -1 with err set (db is then still the caller's to close).
 */
int sqlite_writer_start(struct sqlite_writer *w, sqlite3 *db, int sync_full, const char *path,
                        void (*notify)(void *arg), void *notify_arg, char *err, size_t errlen);

/* Queues a batch (not copied: b and its events must live until taken back). */
void sqlite_writer_put_batch(struct sqlite_writer *w, struct sqlite_batch *b);

/* Queues a device record; the writer frees it (and its folders) once written. */
void sqlite_writer_put_device(struct sqlite_writer *w, struct sqlite_device_rec *d);

/* Queues a user record; the writer frees it once written. */
void sqlite_writer_put_record(struct sqlite_writer *w, struct sqlite_record_rec *r);

/*
 * Did the last write round fail? 0 before the first round. One relaxed
 * atomic load: cheap enough for every ping.
 */
static inline int sqlite_writer_failing(struct sqlite_writer *w)
{
    return atomic_load_explicit(&w->failing, memory_order_relaxed);
}

/* Takes every committed (or failed) batch, oldest first; NULL when none. */
struct sqlite_batch *sqlite_writer_take_done(struct sqlite_writer *w);

/*
 * Writes everything still queued, stops the thread and closes its
 * connection. Returns the finished batches nobody took yet (oldest first),
 * which are the caller's again. Safe on a writer that never started.
 */
struct sqlite_batch *sqlite_writer_stop(struct sqlite_writer *w);

#endif
