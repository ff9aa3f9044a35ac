/*
 * store_sqlite.c — the durable store: one SQLite database file in WAL mode
 * (<data_dir>/nudge.db, or [store] path). See docs/store.md.
 *
 * Reads never touch the disk: every folder state is loaded into the shared
 * statemap at open and served from there. Writes never block the loop: a
 * bump assigns the new states in memory ('assigned'), queues the batch for
 * the writer thread (sqlite_writer.c, group commit) and returns; when the
 * commit is done the writer wakes the loop through a uv_async handle, whose
 * callback makes the states visible ('committed') and calls done(). So a
 * publish is answered, and held pings are woken, only once its states are
 * on disk; a state a client has seen is never taken back by a crash.
 *
 * Sync modes ([store] sync), both with the WAL:
 *   full    the WAL is fsynced at every commit that holds publishes. An
 *           acknowledged publish survives a crash of nudged, of the kernel
 *           and a power loss.
 *   normal  no fsync at commit (only at checkpoints). An acknowledged
 *           publish survives a crash of nudged (the WAL is in the kernel's
 *           page cache), but a power loss or kernel crash can take back the
 *           last commits, and with them states clients were already told.
 *           Clients then present states the server no longer has; they are
 *           answered at once and resync, but a change published after the
 *           restart can get a number a client already saw and be missed.
 *
 * Start-up never repairs or recreates anything: the file is read first
 * (a file that is not a database fails before anything is written), then
 * checked with PRAGMA quick_check (a full read, so about a second per few
 * hundred MB), then its application_id and user_version say whether it is
 * nudge's and which schema it has. A fresh empty file gets the schema. Any
 * failure names the path, SQLite's message and what to do.
 *
 * The file is also flock()ed for as long as the store is open, so a second
 * nudged pointed at the same database refuses to start instead of handing
 * out the same states twice. (flock, not fcntl: SQLite uses fcntl locks on
 * the file, and the two kinds do not interact on Linux. Our descriptor is
 * closed only after every SQLite connection, because closing any descriptor
 * of a file drops the process's fcntl locks on it.)
 *
 * Threads: the loop thread owns the statemap, the async handle and a
 * reading connection (start-up checks, device_load); the writer thread owns
 * the writing connection. They share only the writer's queues.
 *
 * Memory: the statemap (see statemap.h) plus, per bump in flight, one
 * allocation of 56 bytes plus a pointer per event; per device record queued,
 * its copy until written; SQLite's page cache (at most about 2 MiB per
 * connection by default), released on the reading connection after loading.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <uv.h>

#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "store/sqlite_writer.h"
#include "store/statemap.h"
#include "store/store.h"

/* PRAGMA application_id marks the file as nudge's: "nudg" in ASCII. */
#define NUDGE_APPLICATION_ID 0x6e756467
/* PRAGMA user_version: the schema below; older files are migrated at open (SQL_MIGRATE). */
#define SCHEMA_VERSION 4
/*
 * How long a statement waits for a lock another process holds (a sqlite3
 * shell running .backup, say) before failing. Longer than any backup step,
 * short enough that a stuck disk shows up as failed publishes, not silence.
 */
#define BUSY_TIMEOUT_MS 5000
/*
 * After a checkpoint the WAL is cut back to this many bytes (64 MiB), so one
 * burst of writes does not keep its disk space for good.
 */
#define WAL_SIZE_LIMIT "67108864"

#define WHAT_TO_DO                                                                                 \
    "move it away to start empty (states restart at 0 and clients resync), or restore a backup"

/* A module's own record of a user, text it writes and reads itself (version 4). */
#define SQL_USER_RECORDS                                                                           \
    "CREATE TABLE user_records ("                                                                  \
    "  user TEXT NOT NULL,"                                                                        \
    "  kind TEXT NOT NULL,"                                                                        \
    "  data TEXT NOT NULL,"                                                                        \
    "  PRIMARY KEY (user, kind)"                                                                   \
    ") STRICT, WITHOUT ROWID;"

static const char SQL_SCHEMA[] =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE folder_states ("
    "  user TEXT NOT NULL,"
    "  folder TEXT NOT NULL,"
    "  state INTEGER NOT NULL CHECK (state >= 0),"
    "  PRIMARY KEY (user, folder)"
    ") STRICT, WITHOUT ROWID;"
    /* folders: the device's last ping, a JSON object of folder name -> state string. */
    "CREATE TABLE devices ("
    "  user TEXT NOT NULL,"
    "  device TEXT NOT NULL,"
    "  heartbeat INTEGER NOT NULL,"
    "  heartbeat_hint INTEGER NOT NULL,"
    "  folders TEXT NOT NULL,"
    /* The adaptive heartbeat: what the device's path has proven and refused (version 2). */
    "  heartbeat_good INTEGER NOT NULL DEFAULT 0,"
    "  heartbeat_ceiling INTEGER NOT NULL DEFAULT 0,"
    "  ceiling_since INTEGER NOT NULL DEFAULT 0,"
    /* The UDP registration as one JSON object, '' for none (version 3). */
    "  udp TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (user, device)"
    ") STRICT, WITHOUT ROWID;"
    SQL_USER_RECORDS
    "PRAGMA application_id = 1853187175;" /* NUDGE_APPLICATION_ID in decimal */
    "PRAGMA user_version = 4;"            /* SCHEMA_VERSION */
    "COMMIT;";

/* Each step takes a file from version N (the index + 1) to N + 1, in one transaction. */
static const char *const SQL_MIGRATE[] = {
    "BEGIN IMMEDIATE;"
    "ALTER TABLE devices ADD COLUMN heartbeat_good INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN heartbeat_ceiling INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN ceiling_since INTEGER NOT NULL DEFAULT 0;"
    "PRAGMA user_version = 2;"
    "COMMIT;",
    "BEGIN IMMEDIATE;"
    "ALTER TABLE devices ADD COLUMN udp TEXT NOT NULL DEFAULT '';"
    "PRAGMA user_version = 3;"
    "COMMIT;",
    "BEGIN IMMEDIATE;"
    SQL_USER_RECORDS
    "PRAGMA user_version = 4;"
    "COMMIT;",
};

/* A bump on its way through the writer; w first so the writer's pointer is ours. */
struct sq_batch {
    struct sqlite_batch w;
    struct store_event *ev;
    store_done_cb done;
    void *arg;
    struct statemap_folder *node[]; /* node[i]: ev[i]'s folder, to set 'committed' */
};

struct sq_store {
    struct store base;
    struct statemap states;
    struct sqlite_writer writer;
    sqlite3 *rdb;         /* loop thread: start-up checks and device_load */
    uv_loop_t *loop;
    uv_async_t async;     /* writer -> loop: batches are done */
    int async_open;
    size_t inflight;      /* bumps not yet done; the async handle is referenced while > 0 */
    int lock_fd;
    char path[PATH_MAX];
};

/*
 * err = "PATH: DOING: SQLite says: MSG" and, by kind of failure, what to do.
 * 'db' may be NULL (then 'rc' alone gives the message).
 */
static void db_error(char *err, size_t errlen, const char *path, sqlite3 *db, int rc,
                     const char *doing)
{
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int sys = db ? sqlite3_system_errno(db) : 0;

    switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        snprintf(err, errlen,
                 "%s: SQLite says: %s: the file is not a nudge database or is damaged; " WHAT_TO_DO,
                 path, msg);
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        snprintf(err, errlen,
                 "%s: %s: SQLite says: %s: another process holds the database locked (a sqlite3 "
                 "shell with a transaction open?); end it and start nudged again",
                 path, doing, msg);
        break;
    default:
        snprintf(err, errlen,
                 "%s: %s: SQLite says: %s%s%s; check that the file and its directory exist and "
                 "that nudged may read and write them",
                 path, doing, msg, sys ? ": " : "", sys ? strerror(sys) : "");
        break;
    }
}

/* Runs a query whose first row's first column is an integer. SQLITE_OK or the error. */
static int query_int(sqlite3 *db, const char *sql, sqlite3_int64 *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_ERROR; /* no row where one was expected */
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Same for a text result, copied into out[outlen]. */
static int query_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const unsigned char *t = sqlite3_column_text(st, 0);
            snprintf(out, outlen, "%s", t ? (const char *)t : "");
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_ERROR;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int open_db(const char *path, sqlite3 **db, int flags, char *err, size_t errlen)
{
    /* NOMUTEX: each connection is used by one thread only (see the header). */
    int rc = sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL);

    if (rc != SQLITE_OK) {
        db_error(err, errlen, path, *db, rc, "cannot open the database");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
    return 0;
}

/* How long a start waits for another nudged's lock before refusing. */
#define LOCK_WAIT_MS 1000

/* One nudged per database: see the header. */
static int take_lock(struct sq_store *s, char *err, size_t errlen)
{
    s->lock_fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        snprintf(err, errlen,
                 "%s: cannot open the database: %s; check that its directory exists and that "
                 "nudged may read and write there",
                 s->path, strerror(errno));
        return -1;
    }
    /*
     * A nudged that was just killed may still be exiting (its workers die a
     * moment after the supervisor): wait up to LOCK_WAIT_MS for its lock.
     */
    for (int waited = 0; flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0; waited += 20) {
        if (errno == EWOULDBLOCK && waited < LOCK_WAIT_MS) {
            usleep(20 * 1000);
            continue;
        }
        if (errno == EWOULDBLOCK)
            snprintf(err, errlen,
                     "%s: another nudged is using this database; stop it, or give this one its "
                     "own [server] data_dir or [store] path",
                     s->path);
        else
            snprintf(err, errlen, "%s: cannot lock the database: %s", s->path, strerror(errno));
        return -1;
    }
    return 0;
}

int store_sqlite_lockable(const char *path, char *err, size_t errlen)
{
    static struct sq_store probe; /* only path and lock_fd are used */
    int rc;

    snprintf(probe.path, sizeof(probe.path), "%s", path);
    probe.lock_fd = -1;
    rc = take_lock(&probe, err, errlen);
    if (probe.lock_fd >= 0)
        close(probe.lock_fd);
    probe.lock_fd = -1;
    return rc;
}

/*
 * Reads and checks the file without writing to it. *fresh is set for an
 * empty database (no schema yet). 0, or -1 with err set.
 */
static int check_db(struct sq_store *s, int *fresh, char *err, size_t errlen)
{
    sqlite3_int64 objects, app_id, version;
    char result[512];
    int rc;

    /* The first read: a file that is not a database fails here. */
    rc = query_int(s->rdb, "SELECT count(*) FROM sqlite_master", &objects);
    if (rc != SQLITE_OK) {
        db_error(err, errlen, s->path, s->rdb, rc, "cannot read the database");
        return -1;
    }
    rc = query_text(s->rdb, "PRAGMA quick_check(1)", result, sizeof(result));
    if (rc != SQLITE_OK) {
        db_error(err, errlen, s->path, s->rdb, rc, "cannot check the database");
        return -1;
    }
    if (strcmp(result, "ok") != 0) {
        /* Its report is several lines ("*** in database main ***", then the finding). */
        for (char *p = result; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        snprintf(err, errlen,
                 "%s: SQLite says: quick_check found damage: %s: the file is not a nudge database "
                 "or is damaged; " WHAT_TO_DO,
                 s->path, result);
        return -1;
    }
    if ((rc = query_int(s->rdb, "PRAGMA application_id", &app_id)) != SQLITE_OK ||
        (rc = query_int(s->rdb, "PRAGMA user_version", &version)) != SQLITE_OK) {
        db_error(err, errlen, s->path, s->rdb, rc, "cannot read the database header");
        return -1;
    }
    if (app_id == 0 && objects == 0) {
        *fresh = 1;
        return 0;
    }
    if (app_id != NUDGE_APPLICATION_ID) {
        snprintf(err, errlen,
                 "%s: this SQLite database is not nudge's (application_id %lld, nudge's is %d); "
                 "set [store] path to another file, or move this one away to start empty",
                 s->path, (long long)app_id, NUDGE_APPLICATION_ID);
        return -1;
    }
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s: written by a newer nudged (schema version %lld, this nudged knows up to %d); "
                 "run that version, or restore a backup this version wrote",
                 s->path, (long long)version, SCHEMA_VERSION);
        return -1;
    }
    if (version < 1) {
        snprintf(err, errlen,
                 "%s: nudge's database without a schema version (user_version %lld): the file "
                 "is damaged; " WHAT_TO_DO,
                 s->path, (long long)version);
        return -1;
    }
    *fresh = 0;
    return 0;
}

/* WAL (persistent in the file) and, for a fresh file, the schema. 0 or -1 + err. */
static int prepare_db(struct sq_store *s, int fresh, char *err, size_t errlen)
{
    char mode[32];
    int rc;

    rc = query_text(s->rdb, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
    if (rc != SQLITE_OK) {
        db_error(err, errlen, s->path, s->rdb, rc, "cannot switch to WAL mode");
        return -1;
    }
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, errlen,
                 "%s: cannot switch to WAL mode (SQLite kept '%s'); put the database on a local "
                 "file system ([store] path)",
                 s->path, mode);
        return -1;
    }
    if (!fresh) {
        sqlite3_int64 version;
        rc = query_int(s->rdb, "PRAGMA user_version", &version);
        while (rc == SQLITE_OK && version >= 1 && version < SCHEMA_VERSION) {
            rc = sqlite3_exec(s->rdb, SQL_MIGRATE[version - 1], NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                db_error(err, errlen, s->path, s->rdb, rc, "cannot migrate the schema");
                if (!sqlite3_get_autocommit(s->rdb))
                    sqlite3_exec(s->rdb, "ROLLBACK", NULL, NULL, NULL);
                return -1;
            }
            LOG(LOG_INFO, store_opened, "path=%s migrated_from=%lld migrated_to=%lld",
                s->path, (long long)version, (long long)version + 1);
            version++;
        }
    }
    if (fresh) {
        rc = sqlite3_exec(s->rdb, SQL_SCHEMA, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            db_error(err, errlen, s->path, s->rdb, rc, "cannot create the schema");
            if (!sqlite3_get_autocommit(s->rdb))
                sqlite3_exec(s->rdb, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

/* Every stored folder state into the statemap, as both assigned and committed. */
static int load_states(struct sq_store *s, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->rdb, "SELECT user, folder, state FROM folder_states", -1, &st,
                                NULL);

    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *user = (const char *)sqlite3_column_text(st, 0);
        const char *folder = (const char *)sqlite3_column_text(st, 1);
        sqlite3_int64 state = sqlite3_column_int64(st, 2);
        struct statemap_folder *f;

        if (user == NULL || folder == NULL) {
            rc = SQLITE_NOMEM;
            break;
        }
        f = statemap_add(&s->states, user, folder);
        f->assigned = f->committed = (uint64_t)state; /* the schema's CHECK keeps it >= 0 */
        rc = SQLITE_OK;
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    if (rc != SQLITE_OK)
        db_error(err, errlen, s->path, s->rdb, rc, "cannot read the folder states");
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Writer thread: batches are done; the loop picks them up in on_async. */
static void on_writer_done(void *arg)
{
    struct sq_store *s = arg;

    uv_async_send(&s->async);
}

static void on_async(uv_async_t *h)
{
    struct sq_store *s = h->data;
    struct sqlite_batch *list = sqlite_writer_take_done(&s->writer), *wb, *next;

    /*
     * First make the whole group visible, then answer: a ping woken by one
     * batch's done() already sees every state of the group.
     */
    for (wb = list; wb; wb = wb->next) {
        struct sq_batch *b = (struct sq_batch *)wb;
        if (wb->status != 0)
            continue;
        for (size_t i = 0; i < wb->n; i++)
            if (b->node[i]->committed < b->ev[i].state)
                b->node[i]->committed = b->ev[i].state;
    }
    for (wb = list; wb; wb = next) {
        struct sq_batch *b = (struct sq_batch *)wb;
        next = wb->next;
        b->done(b->arg, b->ev, wb->n, wb->status);
        free(b);
        if (--s->inflight == 0)
            uv_unref((uv_handle_t *)&s->async);
    }
}

/*
 * Releases everything open() made, in an order that keeps the locks right.
 * Runs the loop once (UV_RUN_NOWAIT) to finish closing the async handle, so
 * it must not be called from inside a loop callback.
 */
static void teardown(struct sq_store *s, int log_close)
{
    struct sqlite_batch *left = sqlite_writer_stop(&s->writer);
    size_t undelivered = 0;
    char q[PATH_MAX + 64];

    /* Written, but the loop stopped before their done(): see sq_close. */
    while (left) {
        struct sqlite_batch *next = left->next;
        free((struct sq_batch *)left);
        left = next;
        undelivered++;
    }
    if (log_close)
        LOG(undelivered ? LOG_WARN : LOG_INFO, store_closed,
            "path=%s commits=%llu batches=%llu devices=%llu undelivered=%zu",
            log_q(q, sizeof(q), s->path), (unsigned long long)s->writer.commits,
            (unsigned long long)s->writer.batches, (unsigned long long)s->writer.devices,
            undelivered);
    sqlite3_close(s->rdb);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* after every connection: see the header */
    if (s->async_open) {
        uv_close((uv_handle_t *)&s->async, NULL);
        uv_run(s->loop, UV_RUN_NOWAIT);
    }
    statemap_free(&s->states);
    free(s);
}

static int sq_open(struct store **out, const struct config *c, struct uv_loop_s *loop, char *err,
                   size_t errlen)
{
    struct sq_store *s = xcalloc(1, sizeof(*s));
    uint64_t started = util_now_ms();
    sqlite3 *wdb = NULL;
    char q[PATH_MAX + 64];
    int fresh = 0, rc;

    s->base.be = &store_sqlite_backend;
    s->loop = loop;
    s->lock_fd = -1;
    statemap_init(&s->states);
    config_store_path(c, s->path, sizeof(s->path));

    if (loop == NULL) {
        snprintf(err, errlen, "%s: the sqlite store needs an event loop", s->path);
        goto fail;
    }
    if (take_lock(s, err, errlen) < 0)
        goto fail;
    if (open_db(s->path, &s->rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err, errlen) < 0)
        goto fail;
    if (check_db(s, &fresh, err, errlen) < 0 || prepare_db(s, fresh, err, errlen) < 0 ||
        load_states(s, err, errlen) < 0)
        goto fail;
    sqlite3_db_release_memory(s->rdb);

    if (open_db(s->path, &wdb, SQLITE_OPEN_READWRITE, err, errlen) < 0)
        goto fail;
    rc = sqlite3_exec(wdb, "PRAGMA journal_size_limit = " WAL_SIZE_LIMIT, NULL, NULL,
                      NULL);
    if (rc != SQLITE_OK) {
        db_error(err, errlen, s->path, wdb, rc, "cannot set up the writing connection");
        goto fail;
    }
    rc = uv_async_init(loop, &s->async, on_async);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot set up the writer's wake-up: %s", s->path,
                 uv_strerror(rc));
        goto fail;
    }
    s->async.data = s;
    s->async_open = 1;
    /* Referenced only while a bump is in flight: an idle store must not keep the loop alive. */
    uv_unref((uv_handle_t *)&s->async);
    if (sqlite_writer_start(&s->writer, wdb, strcmp(c->store_sync, "full") == 0, s->path,
                            on_writer_done, s, err, errlen) < 0)
        goto fail;
    wdb = NULL; /* the writer's now */

    LOG(LOG_INFO, store_opened, "backend=sqlite path=%s sync=%s folders=%zu ms=%llu",
        log_q(q, sizeof(q), s->path), c->store_sync, s->states.nfolders,
        (unsigned long long)(util_now_ms() - started));
    *out = &s->base;
    return 0;
fail:
    sqlite3_close(wdb);
    teardown(s, 0);
    return -1;
}

/*
 * Called after the loop has stopped. uv_run returns only once every bump's
 * done() ran (the async handle is referenced while one is in flight), so
 * nothing is normally left; a batch that is (the caller stopped the loop
 * itself) is written but its done() is not called, per the interface.
 */
static void sq_close(struct store *st)
{
    teardown((struct sq_store *)st, 1);
}

static uint64_t sq_get(struct store *st, const char *user, const char *folder)
{
    return statemap_get(&((struct sq_store *)st)->states, user, folder);
}

static size_t sq_list(struct store *st, const char *user, store_list_cb cb, void *arg)
{
    return statemap_list(&((struct sq_store *)st)->states, user, cb, arg);
}

static int sq_bump(struct store *st, struct store_event *ev, size_t n, store_done_cb done,
                   void *arg)
{
    struct sq_store *s = (struct sq_store *)st;
    struct sq_batch *b;

    if (n > (SIZE_MAX - sizeof(*b)) / sizeof(b->node[0]))
        return -EINVAL;
    b = malloc(sizeof(*b) + n * sizeof(b->node[0]));
    if (b == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct statemap_folder *f = statemap_add(&s->states, ev[i].user, ev[i].folder);
        ev[i].state = f->assigned = statemap_next_state(f, ev[i].at_least);
        b->node[i] = f;
    }
    b->w.ev = ev;
    b->w.n = n;
    b->ev = ev;
    b->done = done;
    b->arg = arg;
    if (s->inflight++ == 0)
        uv_ref((uv_handle_t *)&s->async);
    sqlite_writer_put_batch(&s->writer, &b->w);
    return 0;
}

/*
 * The registration as {"id":"...","key":"<64 hex digits>","address":"...",
 * "expires":N,"seq":"1024","suspended":0,"folders":{"INBOX":"17"}}, or ""
 * for none.
 * The id is a string: JSON numbers beyond 2^53 are not safe everywhere.
 */
static char *udp_json(const struct store_udp *u)
{
    static const char hex[] = "0123456789abcdef";
    char key[2 * 32 + 1];
    struct jsonw w;
    size_t len;

    if (u == NULL)
        return xstrdup("");
    for (int i = 0; i < 32; i++) {
        key[2 * i] = hex[u->key[i] >> 4];
        key[2 * i + 1] = hex[u->key[i] & 15];
    }
    key[64] = '\0';
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "id");
    jw_u64_str(&w, u->id);
    jw_key(&w, "key");
    jw_str(&w, key);
    jw_key(&w, "address");
    jw_str(&w, u->address);
    jw_key(&w, "expires");
    jw_u64(&w, u->expires > 0 ? (uint64_t)u->expires : 0);
    jw_key(&w, "seq");
    jw_u64_str(&w, u->seq);
    jw_key(&w, "suspended");
    jw_u64(&w, u->suspended ? 1 : 0);
    jw_key(&w, "folders");
    jw_obj_begin(&w);
    for (uint32_t i = 0; i < u->nfolders; i++) {
        jw_key(&w, u->folders[i].name);
        jw_u64_str(&w, u->folders[i].state);
    }
    jw_obj_end(&w);
    jw_obj_end(&w);
    return jw_take(&w, &len);
}

static void sq_device_save(struct store *st, const struct store_device *d)
{
    struct sq_store *s = (struct sq_store *)st;
    size_t ulen = strlen(d->user), dlen = strlen(d->device), len;
    struct sqlite_device_rec *r = malloc(sizeof(*r) + ulen + dlen + 2);
    struct jsonw w;

    if (r == NULL)
        return; /* write-behind: a lost record costs the device one full ping */
    r->heartbeat = d->heartbeat;
    r->heartbeat_hint = d->heartbeat_hint;
    r->heartbeat_good = d->heartbeat_good;
    r->heartbeat_ceiling = d->heartbeat_ceiling;
    r->ceiling_since = d->ceiling_since;
    memcpy(r->user, d->user, ulen + 1);
    memcpy(r->user + ulen + 1, d->device, dlen + 1);
    r->device = r->user + ulen + 1;
    jw_init(&w);
    jw_obj_begin(&w);
    for (uint32_t i = 0; i < d->nfolders; i++) {
        jw_key(&w, d->folders[i].name);
        jw_u64_str(&w, d->folders[i].state);
    }
    jw_obj_end(&w);
    r->folders = jw_take(&w, &len);
    r->udp = udp_json(d->udp);
    sqlite_writer_put_device(&s->writer, r);
}

/* Reads a JSON object of folder -> decimal state into a new array (names borrowed from o). */
static struct store_folder *read_folders(json_t *o, uint32_t *n, const char **why)
{
    struct store_folder *f;
    const char *name;
    json_t *v;
    size_t i = 0;

    if (!json_is_object(o)) {
        *why = "folders is not a JSON object";
        return NULL;
    }
    f = calloc(json_object_size(o) + 1, sizeof(*f));
    if (f == NULL) {
        *why = "out of memory";
        return NULL;
    }
    json_object_foreach(o, name, v) {
        if (!json_is_string(v) ||
            util_parse_u64(json_string_value(v), json_string_length(v), &f[i].state) < 0) {
            *why = "a folder's state is not a decimal string";
            free(f);
            return NULL;
        }
        f[i++].name = name;
    }
    *n = (uint32_t)i;
    return f;
}

/*
 * Parses the udp column into u (strings borrowed from *root, folders
 * allocated into *folders). Returns 1 when there is a registration, 0 for
 * none, -1 with why set when it cannot be read.
 */
static int read_udp(const char *text, json_t **root, struct store_udp *u, uint8_t key[32],
                    struct store_folder **folders, const char **why)
{
    json_t *id, *k, *addr, *exp, *susp, *seq;
    uint64_t idv, seqv;

    if (text == NULL || text[0] == '\0')
        return 0;
    *root = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    id = json_object_get(*root, "id");
    k = json_object_get(*root, "key");
    addr = json_object_get(*root, "address");
    exp = json_object_get(*root, "expires");
    susp = json_object_get(*root, "suspended");
    seq = json_object_get(*root, "seq");
    if (!json_is_string(seq) ||
        util_parse_u64(json_string_value(seq), json_string_length(seq), &seqv) < 0 ||!json_is_string(id) || !json_is_string(k) || !json_is_string(addr) ||
        !json_is_integer(exp) || !json_is_integer(susp) ||
        util_parse_u64(json_string_value(id), json_string_length(id), &idv) < 0 || idv == 0 ||
        json_string_length(k) != 64) {
        *why = "its UDP registration is unreadable";
        return -1;
    }
    for (int i = 0; i < 32; i++) {
        int hi = util_hex_value(json_string_value(k)[2 * i]);
        int lo = util_hex_value(json_string_value(k)[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            *why = "its UDP registration key is not hexadecimal";
            return -1;
        }
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    *folders = read_folders(json_object_get(*root, "folders"), &u->nfolders, why);
    if (*folders == NULL)
        return -1;
    u->id = idv;
    u->key = key;
    u->address = json_string_value(addr);
    u->expires = json_integer_value(exp);
    u->seq = seqv;
    u->suspended = json_integer_value(susp) != 0;
    u->folders = *folders;
    return 1;
}

/* One row of the devices table -> cb. 0, or -1 with why set (the row is skipped). */
static int load_device(sqlite3_stmt *st, store_device_cb cb, void *arg, const char **why)
{
    struct store_device d = {0};
    struct store_udp udp = {0};
    struct store_folder *folders = NULL, *ufolders = NULL;
    json_t *uroot = NULL;
    uint8_t key[32];
    sqlite3_int64 hb = sqlite3_column_int64(st, 2), hint = sqlite3_column_int64(st, 3);
    sqlite3_int64 good = sqlite3_column_int64(st, 5), ceiling = sqlite3_column_int64(st, 6);
    const char *text = (const char *)sqlite3_column_text(st, 4);
    json_t *root = NULL;
    int has_udp;

    d.user = (const char *)sqlite3_column_text(st, 0);
    d.device = (const char *)sqlite3_column_text(st, 1);
    if (d.user == NULL || d.device == NULL || text == NULL) {
        *why = "out of memory";
        goto fail;
    }
    if (hb < 0 || hb > UINT32_MAX || hint < 0 || hint > UINT32_MAX || good < 0 ||
        good > UINT32_MAX || ceiling < 0 || ceiling > UINT32_MAX) {
        *why = "heartbeat out of range";
        goto fail;
    }
    root = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    folders = read_folders(root, &d.nfolders, why);
    if (folders == NULL)
        goto fail;
    has_udp = read_udp((const char *)sqlite3_column_text(st, 8), &uroot, &udp, key, &ufolders, why);
    if (has_udp < 0)
        goto fail;
    d.udp = has_udp ? &udp : NULL;
    d.heartbeat = (uint32_t)hb;
    d.heartbeat_hint = (uint32_t)hint;
    d.heartbeat_good = (uint32_t)good;
    d.heartbeat_ceiling = (uint32_t)ceiling;
    d.ceiling_since = sqlite3_column_int64(st, 7);
    d.folders = folders;
    cb(arg, &d);
    free(folders);
    free(ufolders);
    json_decref(root);
    json_decref(uroot);
    return 0;
fail:
    free(folders);
    free(ufolders);
    json_decref(root);
    json_decref(uroot);
    return -1;
}

static size_t sq_device_load(struct store *store, store_device_cb cb, void *arg)
{
    struct sq_store *s = (struct sq_store *)store;
    sqlite3_stmt *st = NULL;
    char q1[600], q2[300], q3[300];
    size_t count = 0;
    int rc;

    rc = sqlite3_prepare_v2(s->rdb,
                            "SELECT user, device, heartbeat, heartbeat_hint, folders, "
                            "heartbeat_good, heartbeat_ceiling, ceiling_since, udp FROM devices",
                            -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *why = NULL;
        rc = SQLITE_OK;
        if (load_device(st, cb, arg, &why) == 0) {
            count++;
            continue;
        }
        LOG(LOG_WARN, store_record_skipped, "user=%s device=%s reason=%s",
            log_q(q1, sizeof(q1), (const char *)sqlite3_column_text(st, 0)),
            log_q(q2, sizeof(q2), (const char *)sqlite3_column_text(st, 1)),
            log_q(q3, sizeof(q3), why));
    }
    if (rc != SQLITE_DONE) {
        /* quick_check passed at open, so this is a new failure: say so, keep what was read. */
        snprintf(q3, sizeof(q3), "the rest of the device records were not read: SQLite says: %s",
                 sqlite3_errmsg(s->rdb));
        LOG(LOG_WARN, store_record_skipped, "user=- device=- reason=%s",
            log_q(q1, sizeof(q1), q3));
    }
    sqlite3_finalize(st);
    sqlite3_db_release_memory(s->rdb);
    return count;
}

static void sq_record_save(struct store *st, const char *user, const char *kind, const char *data)
{
    struct sq_store *s = (struct sq_store *)st;
    size_t ulen = strlen(user), klen = strlen(kind), dlen = data ? strlen(data) : 0;
    struct sqlite_record_rec *r = malloc(sizeof(*r) + ulen + klen + dlen + 3);

    if (r == NULL) {
        char q1[300], q2[100];
        LOG(LOG_ERROR, store_write_failed, "path=%s error=\"out of memory\" user=%s kind=%s",
            s->path, log_q(q1, sizeof(q1), user), log_q(q2, sizeof(q2), kind));
        return;
    }
    memcpy(r->user, user, ulen + 1);
    memcpy(r->user + ulen + 1, kind, klen + 1);
    r->kind = r->user + ulen + 1;
    r->data = NULL;
    if (data) {
        memcpy(r->user + ulen + klen + 2, data, dlen + 1);
        r->data = r->user + ulen + klen + 2;
    }
    sqlite_writer_put_record(&s->writer, r);
}

static size_t sq_record_load(struct store *store, store_record_cb cb, void *arg)
{
    struct sq_store *s = (struct sq_store *)store;
    sqlite3_stmt *st = NULL;
    char q1[300];
    size_t count = 0;
    int rc;

    rc = sqlite3_prepare_v2(s->rdb, "SELECT user, kind, data FROM user_records", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        cb(arg, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           (const char *)sqlite3_column_text(st, 2));
        count++;
    }
    if (rc != SQLITE_DONE) {
        char why[300];
        snprintf(why, sizeof(why), "the rest of the user records were not read: SQLite says: %s",
                 sqlite3_errmsg(s->rdb));
        LOG(LOG_WARN, store_record_skipped, "user=- device=- reason=%s", log_q(q1, sizeof(q1), why));
    }
    sqlite3_finalize(st);
    return count;
}

/* Failing from a failed write round until one commits (sqlite_writer.c, "Health"). */
static int sq_healthy(struct store *st)
{
    return !sqlite_writer_failing(&((struct sq_store *)st)->writer);
}

const struct store_backend store_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .get = sq_get,
    .list = sq_list,
    .bump = sq_bump,
    .device_save = sq_device_save,
    .device_load = sq_device_load,
    .record_save = sq_record_save,
    .record_load = sq_record_load,
    .healthy = sq_healthy,
};
