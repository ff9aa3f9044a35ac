/*
 * sqlite_writer.c — the SQLite store's writer thread; see sqlite_writer.h.
 *
 * One round: take both queues (bump batches, device records) under the
 * lock, then without it run
 *
 *     BEGIN IMMEDIATE; one UPSERT per event and per device record; COMMIT
 *
 * and append the batches to the done list. The round size is whatever piled
 * up while the previous commit ran, which is what makes it a group commit:
 * an idle server commits each publish at once (one fsync of latency), a
 * busy one spreads each fsync over every publish that arrived meanwhile,
 * with no timer and no tuning knob.
 *
 * Durability per round: a round that holds publishes runs with the
 * configured synchronous level ([store] sync: FULL fsyncs the WAL at
 * commit). A round of device records alone runs with NORMAL: nothing waits
 * for it (device records are write-behind), it survives a crash of the
 * process as it is, and the next FULL commit's fsync of the WAL covers it
 * against power loss as well, since the WAL is one sequential file.
 *
 * Folder states are written as max(stored, new): a state only grows, so a
 * round holding several bumps of one folder, in any order, leaves the
 * largest. Device records are upserted column by column rather than
 * replaced, so columns that later issues add keep their values.
 *
 * Health: each round stores whether it failed in an atomic flag that the
 * loop reads for store_healthy() (a Ping is answered ActiveSync Status 8
 * while it is set). Any later round that commits clears it, so the store is
 * healthy again with the first write that succeeds, whoever makes it.
 *
 * Costs: per round two mutex round-trips and one transaction; per event
 * one prepared-statement step (no allocation: strings are bound in place);
 * per device record the copy made by the caller, freed here.
 */
#include "store/sqlite_writer.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static const char SQL_PUT_STATE[] =
    "INSERT INTO folder_states (user, folder, state) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (user, folder) DO UPDATE SET state = max(state, excluded.state)";

static const char SQL_PUT_DEVICE[] =
    "INSERT INTO devices (user, device, heartbeat, heartbeat_hint, folders, heartbeat_good, "
    "heartbeat_ceiling, ceiling_since, udp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
    "ON CONFLICT (user, device) DO UPDATE SET heartbeat = excluded.heartbeat, "
    "heartbeat_hint = excluded.heartbeat_hint, folders = excluded.folders, "
    "heartbeat_good = excluded.heartbeat_good, heartbeat_ceiling = excluded.heartbeat_ceiling, "
    "ceiling_since = excluded.ceiling_since, udp = excluded.udp";

static const char SQL_PUT_RECORD[] =
    "INSERT INTO user_records (user, kind, data) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (user, kind) DO UPDATE SET data = excluded.data";

static const char SQL_DEL_RECORD[] = "DELETE FROM user_records WHERE user = ?1 AND kind = ?2";

static void free_records(struct sqlite_record_rec *r)
{
    while (r) {
        struct sqlite_record_rec *next = r->next;
        free(r);
        r = next;
    }
}

static void free_devices(struct sqlite_device_rec *d)
{
    while (d) {
        struct sqlite_device_rec *next = d->next;
        free(d->folders);
        free(d->udp);
        free(d);
        d = next;
    }
}

/* The writer's prepared statements: text, and where the handle goes. */
static const struct {
    const char *sql;
    size_t offset;
} statements[] = {
    {SQL_PUT_STATE, offsetof(struct sqlite_writer, put_state)},
    {SQL_PUT_DEVICE, offsetof(struct sqlite_writer, put_device)},
    {SQL_PUT_RECORD, offsetof(struct sqlite_writer, put_record)},
    {SQL_DEL_RECORD, offsetof(struct sqlite_writer, del_record)},
    {"BEGIN IMMEDIATE", offsetof(struct sqlite_writer, begin)},
    {"COMMIT", offsetof(struct sqlite_writer, commit)},
    {"ROLLBACK", offsetof(struct sqlite_writer, rollback)},
    {"PRAGMA synchronous = NORMAL", offsetof(struct sqlite_writer, sync_set[0])},
    {"PRAGMA synchronous = FULL", offsetof(struct sqlite_writer, sync_set[1])},
};

#define NSTATEMENTS (sizeof(statements) / sizeof(statements[0]))

static sqlite3_stmt **stmt_of(struct sqlite_writer *w, size_t i)
{
    return (sqlite3_stmt **)((char *)w + statements[i].offset);
}

static void finalize_all(struct sqlite_writer *w)
{
    for (size_t i = 0; i < NSTATEMENTS; i++) {
        sqlite3_finalize(*stmt_of(w, i));
        *stmt_of(w, i) = NULL;
    }
}

/* Runs a prepared statement to its end. SQLITE_OK or SQLite's error code. */
static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    /* Every parameter is bound again before the next step: no need to clear them. */
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Writes one round in one transaction. 0, or -EIO after logging why. */
static int write_round(struct sqlite_writer *w, struct sqlite_batch *todo,
                       struct sqlite_device_rec *devs, struct sqlite_record_rec *recs,
                       size_t nbatches, size_t ndevices)
{
    int full = todo != NULL && w->sync_full;
    char msg[256], q1[600], q2[300];
    int rc = SQLITE_OK;

    /* Outside the transaction: SQLite ignores a synchronous change inside one. */
    if (full != w->cur_full) {
        rc = step_done(w->sync_set[full]);
        if (rc != SQLITE_OK)
            goto fail;
        w->cur_full = full;
    }
    rc = step_done(w->begin);
    if (rc != SQLITE_OK)
        goto fail;
    for (struct sqlite_batch *b = todo; b && rc == SQLITE_OK; b = b->next) {
        for (size_t i = 0; i < b->n && rc == SQLITE_OK; i++) {
            sqlite3_bind_text(w->put_state, 1, b->ev[i].user, -1, SQLITE_STATIC);
            sqlite3_bind_text(w->put_state, 2, b->ev[i].folder, -1, SQLITE_STATIC);
            sqlite3_bind_int64(w->put_state, 3, (sqlite3_int64)b->ev[i].state);
            rc = step_done(w->put_state);
        }
    }
    for (struct sqlite_device_rec *d = devs; d && rc == SQLITE_OK; d = d->next) {
        sqlite3_bind_text(w->put_device, 1, d->user, -1, SQLITE_STATIC);
        sqlite3_bind_text(w->put_device, 2, d->device, -1, SQLITE_STATIC);
        sqlite3_bind_int64(w->put_device, 3, d->heartbeat);
        sqlite3_bind_int64(w->put_device, 4, d->heartbeat_hint);
        sqlite3_bind_text(w->put_device, 5, d->folders, -1, SQLITE_STATIC);
        sqlite3_bind_int64(w->put_device, 6, d->heartbeat_good);
        sqlite3_bind_int64(w->put_device, 7, d->heartbeat_ceiling);
        sqlite3_bind_int64(w->put_device, 8, d->ceiling_since);
        sqlite3_bind_text(w->put_device, 9, d->udp, -1, SQLITE_STATIC);
        rc = step_done(w->put_device);
    }
    /* In the order they were queued: a put then a delete of one record leaves none. */
    for (struct sqlite_record_rec *r = recs; r && rc == SQLITE_OK; r = r->next) {
        sqlite3_stmt *st = r->data ? w->put_record : w->del_record;
        sqlite3_bind_text(st, 1, r->user, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->kind, -1, SQLITE_STATIC);
        if (r->data)
            sqlite3_bind_text(st, 3, r->data, -1, SQLITE_STATIC);
        rc = step_done(st);
    }
    if (rc == SQLITE_OK)
        rc = step_done(w->commit);
    if (rc != SQLITE_OK)
        goto fail;
    w->commits++;
    w->batches += nbatches;
    w->devices += ndevices;
    /*
     * Health before the log line, here and below: whoever reads the line
     * (an operator, a test) then finds store_healthy() saying the same.
     */
    atomic_store_explicit(&w->failing, 0, memory_order_relaxed);
    if (w->failed_rounds) {
        /* One line when it ends; store_write_failed told of each failed round. */
        LOG(LOG_INFO, store_write_recovered, "path=%s failed_rounds=%llu",
            log_q(q1, sizeof(q1), w->path), (unsigned long long)w->failed_rounds);
        w->failed_rounds = 0;
    }
    return 0;
fail:
    snprintf(msg, sizeof(msg), "%s", sqlite3_errmsg(w->db));
    /* Some errors (I/O, full disk) end the transaction themselves. */
    if (!sqlite3_get_autocommit(w->db))
        step_done(w->rollback);
    atomic_store_explicit(&w->failing, 1, memory_order_relaxed);
    w->failed_rounds++;
    LOG(LOG_ERROR, store_write_failed, "path=%s error=%s code=%d batches=%zu devices=%zu",
        log_q(q1, sizeof(q1), w->path), log_q(q2, sizeof(q2), msg), rc, nbatches, ndevices);
    return -EIO;
}

static void *writer_main(void *arg)
{
    struct sqlite_writer *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct sqlite_batch *todo, *last = NULL;
        struct sqlite_device_rec *devs;
        struct sqlite_record_rec *recs;
        size_t nbatches = 0, ndevices = 0;
        int status;

        while (w->todo == NULL && w->devs == NULL && w->recs == NULL && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->todo == NULL && w->devs == NULL && w->recs == NULL)
            break; /* stopping, and everything is written */
        todo = w->todo;
        devs = w->devs;
        recs = w->recs;
        w->todo = NULL;
        w->todo_tail = &w->todo;
        w->devs = NULL;
        w->devs_tail = &w->devs;
        w->recs = NULL;
        w->recs_tail = &w->recs;
        pthread_mutex_unlock(&w->mu);

        for (struct sqlite_batch *b = todo; b; b = b->next, nbatches++)
            last = b;
        for (struct sqlite_device_rec *d = devs; d; d = d->next)
            ndevices++;
        status = write_round(w, todo, devs, recs, nbatches, ndevices);
        free_devices(devs);
        free_records(recs);
        for (struct sqlite_batch *b = todo; b; b = b->next)
            b->status = status;

        pthread_mutex_lock(&w->mu);
        if (todo) {
            *w->done_tail = todo;
            w->done_tail = &last->next;
            pthread_mutex_unlock(&w->mu);
            w->notify(w->notify_arg);
            pthread_mutex_lock(&w->mu);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int sqlite_writer_start(struct sqlite_writer *w, sqlite3 *db, int sync_full, const char *path,
                        void (*notify)(void *arg), void *notify_arg, char *err, size_t errlen)
{
    sigset_t all, old;
    int rc;

    memset(w, 0, sizeof(*w));
    atomic_init(&w->failing, 0);
    w->db = db;
    w->sync_full = sync_full;
    w->cur_full = -1;
    w->path = path;
    w->notify = notify;
    w->notify_arg = notify_arg;
    w->todo_tail = &w->todo;
    w->devs_tail = &w->devs;
    w->recs_tail = &w->recs;
    w->done_tail = &w->done;
    for (size_t i = 0; i < NSTATEMENTS; i++) {
        if (sqlite3_prepare_v3(db, statements[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                               stmt_of(w, i), NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: cannot prepare '%s': SQLite says: %s", path,
                     statements[i].sql, sqlite3_errmsg(db));
            goto fail;
        }
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    /*
     * The thread blocks every signal: libuv's signal handles expect to be
     * told on the loop thread, and a disk write must not be interrupted.
     */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot start the writer thread: %s", path, strerror(rc));
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        goto fail;
    }
    return 0;
fail:
    finalize_all(w);
    w->db = NULL;
    return -1;
}

void sqlite_writer_put_batch(struct sqlite_writer *w, struct sqlite_batch *b)
{
    b->next = NULL;
    pthread_mutex_lock(&w->mu);
    *w->todo_tail = b;
    w->todo_tail = &b->next;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void sqlite_writer_put_device(struct sqlite_writer *w, struct sqlite_device_rec *d)
{
    d->next = NULL;
    pthread_mutex_lock(&w->mu);
    *w->devs_tail = d;
    w->devs_tail = &d->next;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void sqlite_writer_put_record(struct sqlite_writer *w, struct sqlite_record_rec *r)
{
    r->next = NULL;
    pthread_mutex_lock(&w->mu);
    *w->recs_tail = r;
    w->recs_tail = &r->next;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

struct sqlite_batch *sqlite_writer_take_done(struct sqlite_writer *w)
{
    struct sqlite_batch *b;

    pthread_mutex_lock(&w->mu);
    b = w->done;
    w->done = NULL;
    w->done_tail = &w->done;
    pthread_mutex_unlock(&w->mu);
    return b;
}

struct sqlite_batch *sqlite_writer_stop(struct sqlite_writer *w)
{
    struct sqlite_batch *left;

    if (w->db == NULL)
        return NULL;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    finalize_all(w);
    sqlite3_close(w->db);
    w->db = NULL;
    left = w->done; /* the thread is gone: no lock needed */
    w->done = NULL;
    w->done_tail = &w->done;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    return left;
}
