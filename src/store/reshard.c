/* reshard.c — moving users between shard files; see reshard.h. */
#include "store/reshard.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "store/store.h"

void reshard_path(const struct config *c, unsigned shard, char *out, size_t outlen)
{
    char base[PATH_MAX];

    int n;

    config_store_path(c, base, sizeof(base));
    if (shard == 0)
        n = snprintf(out, outlen, "%s", base);
    else
        n = snprintf(out, outlen, "%s.shard%u", base, shard);
    if (n < 0 || (size_t)n >= outlen)
        out[0] = '\0'; /* too long: opening "" fails with a message naming it */
}

static int exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* Opens (creating, migrating, checking) the file through the backend, as a worker will. */
static int prepare(const struct config *c, const char *path, char *err, size_t errlen)
{
    static struct config copy; /* large: not on the stack */
    struct store *st = NULL;
    uv_loop_t loop;
    int rc;

    copy = *c;
    snprintf(copy.store_path, sizeof(copy.store_path), "%s", path);
    uv_loop_init(&loop);
    rc = store_sqlite_backend.open(&st, &copy, &loop, err, errlen);
    if (rc == 0)
        store_close(st);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    return rc;
}

/* The partition the rows are moved by: the owner function over n shards. */
struct partition {
    reshard_owner_fn owner;
    unsigned n;
};

static void owner_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const struct partition *pt = sqlite3_user_data(ctx);
    const unsigned char *u = sqlite3_value_text(argv[0]);
    int len = sqlite3_value_bytes(argv[0]);

    (void)argc;
    sqlite3_result_int(ctx, (int)pt->owner((const char *)u, (size_t)(u ? len : 0), pt->n));
}

static int exec(sqlite3 *db, const char *sql, const char *path, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: moving users between shard files: %s", path,
                 msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static const char DEVICE_COLUMNS[] = "user, device, heartbeat, heartbeat_hint, folders, "
                                     "heartbeat_good, heartbeat_ceiling, ceiling_since, udp";

/* Moves the rows of 'src' (shard k) that belong elsewhere; counts what moved. */
static int move_out(const struct config *c, const char *src, unsigned k, unsigned n,
                    reshard_owner_fn owner, long long *folders, long long *devices, char *err,
                    size_t errlen)
{
    struct partition pt = {.owner = owner, .n = n};
    sqlite3 *db = NULL;
    char sql[PATH_MAX * 2 + 1024], dst[PATH_MAX];
    int rc = -1;

    if (sqlite3_open_v2(src, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open for moving users: %s", src, sqlite3_errmsg(db));
        goto fail;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_create_function(db, "nudge_owner", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, &pt, owner_fn,
                            NULL, NULL);
    for (unsigned j = 0; j < n; j++) {
        char *qdst;
        if (j == k)
            continue;
        reshard_path(c, j, dst, sizeof(dst));
        qdst = sqlite3_mprintf("ATTACH %Q AS t", dst);
        if (exec(db, qdst, src, err, errlen) < 0) {
            sqlite3_free(qdst);
            goto fail;
        }
        sqlite3_free(qdst);
        /* Copy first, commit, then delete: a crash in between leaves copies, never a loss. */
        snprintf(sql, sizeof(sql),
                 "BEGIN IMMEDIATE;"
                 "INSERT INTO t.folder_states (user, folder, state) "
                 "  SELECT user, folder, state FROM main.folder_states WHERE nudge_owner(user) = %u "
                 "  ON CONFLICT (user, folder) DO UPDATE SET state = max(state, excluded.state);"
                 "INSERT OR REPLACE INTO t.devices (%s) SELECT %s FROM main.devices "
                 "  WHERE nudge_owner(user) = %u;"
                 "INSERT OR REPLACE INTO t.user_records (user, kind, data) "
                 "  SELECT user, kind, data FROM main.user_records WHERE nudge_owner(user) = %u;"
                 "COMMIT;",
                 j, DEVICE_COLUMNS, DEVICE_COLUMNS, j, j);
        if (exec(db, sql, src, err, errlen) < 0)
            goto fail;
        snprintf(sql, sizeof(sql),
                 "BEGIN IMMEDIATE;"
                 "DELETE FROM main.folder_states WHERE nudge_owner(user) = %u;", j);
        if (exec(db, sql, src, err, errlen) < 0)
            goto fail;
        *folders += sqlite3_changes(db);
        snprintf(sql, sizeof(sql), "DELETE FROM main.devices WHERE nudge_owner(user) = %u;", j);
        if (exec(db, sql, src, err, errlen) < 0)
            goto fail;
        *devices += sqlite3_changes(db);
        snprintf(sql, sizeof(sql), "DELETE FROM main.user_records WHERE nudge_owner(user) = %u;", j);
        if (exec(db, sql, src, err, errlen) < 0)
            goto fail;
        if (exec(db, "COMMIT; DETACH t;", src, err, errlen) < 0)
            goto fail;
    }
    rc = 0;
fail:
    sqlite3_close(db);
    return rc;
}

/* Is the file empty of rows (every table)? */
static int empty_file(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int empty = 0;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT (SELECT count(*) FROM folder_states) + "
                           "(SELECT count(*) FROM devices) + "
                           "(SELECT count(*) FROM user_records)",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        empty = sqlite3_column_int64(st, 0) == 0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return empty;
}

int reshard(const struct config *c, unsigned n, reshard_owner_fn owner, char *err, size_t errlen)
{
    char path[PATH_MAX + 16], marker[PATH_MAX + 16], q[PATH_MAX + 64];
    unsigned last = 0, highest = 0;
    int any_beyond = 0;
    FILE *f;

    if (strcmp(c->store_backend, "sqlite") != 0)
        return 0;
    reshard_path(c, 0, path, sizeof(path));
    if ((size_t)snprintf(marker, sizeof(marker), "%s.workers", path) >= sizeof(marker)) {
        snprintf(err, errlen, "[store] path is too long");
        return -1;
    }
    if ((f = fopen(marker, "r")) != NULL) {
        if (fscanf(f, "%u", &last) != 1)
            last = 0;
        fclose(f);
    }
    for (unsigned k = 1; k < RESHARD_MAX_SHARDS; k++) {
        reshard_path(c, k, path, sizeof(path));
        if (exists(path)) {
            highest = k;
            if (k >= n)
                any_beyond = 1;
        }
    }
    /* Another nudged on these files: say so once, before any worker tries. */
    for (unsigned k = 0; k < n || k <= highest; k++) {
        reshard_path(c, k, path, sizeof(path));
        if (exists(path) && store_sqlite_lockable(path, err, errlen) < 0)
            return -1;
    }
    /* Laid out for this count already, or one file and one process: nothing to move. */
    if (!any_beyond && (last == n || (last == 0 && n == 1 && highest == 0)))
        goto done;

    for (unsigned k = 0; k < n; k++) {
        reshard_path(c, k, path, sizeof(path));
        if (prepare(c, path, err, errlen) < 0)
            return -1;
    }
    for (unsigned k = 0; k <= highest; k++) {
        long long folders = 0, devices = 0;
        reshard_path(c, k, path, sizeof(path));
        if (!exists(path))
            continue;
        if (k >= n && prepare(c, path, err, errlen) < 0)
            return -1;
        if (move_out(c, path, k, n, owner, &folders, &devices, err, errlen) < 0)
            return -1;
        LOG(LOG_INFO, store_resharded, "file=%s workers=%u folders=%lld devices=%lld",
            log_q(q, sizeof(q), path), n, folders, devices);
        if (k >= n && empty_file(path)) {
            char side[PATH_MAX + 32];
            unlink(path);
            snprintf(side, sizeof(side), "%s-wal", path);
            unlink(side);
            snprintf(side, sizeof(side), "%s-shm", path);
            unlink(side);
        }
    }
done:
    if ((f = fopen(marker, "w")) == NULL) {
        snprintf(err, errlen, "%s: cannot write: %s", marker, strerror(errno));
        return -1;
    }
    fprintf(f, "%u\n", n);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", marker, strerror(errno));
        return -1;
    }
    return 0;
}
