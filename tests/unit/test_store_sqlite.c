/*
 * test_store_sqlite.c — the SQLite store behind the store interface
 * (src/store/store_sqlite.c, sqlite_writer.c, statemap.c).
 *
 * Each test gets a fresh mkdtemp directory as data_dir and its own uv loop:
 * done() runs on the loop, so a test bumps, then runs the loop until it
 * returns, which it does exactly when every bump in flight is done (the
 * store references its async handle only while one is). Every test closes
 * its loop and checks uv_loop_close() succeeds: a handle left open fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/log.h"
#include "store/store.h"

struct fixture {
    char dir[64];
    char db[PATH_MAX];
    struct config cfg;
    uv_loop_t loop;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/nudge-test-sqlite-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    config_defaults(&f->cfg);
    snprintf(f->cfg.data_dir, sizeof(f->cfg.data_dir), "%s", f->dir);
    snprintf(f->db, sizeof(f->db), "%s/nudge.db", f->dir);
    uv_loop_init(&f->loop);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    int rc;

    /* Nothing may be left on the loop once the stores are closed. */
    rc = uv_loop_close(&f->loop);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc == 0 ? 0 : -1;
}

static struct store *open_ok(struct fixture *f)
{
    struct store *s = NULL;
    char err[1024] = "";

    if (store_sqlite_backend.open(&s, &f->cfg, &f->loop, err, sizeof(err)) != 0)
        fail_msg("open failed: %s", err);
    return s;
}

/* Expects open to fail; returns the message (static buffer). */
static const char *open_fails(struct fixture *f)
{
    static char err[1024];
    struct store *s = NULL;

    err[0] = '\0';
    if (store_sqlite_backend.open(&s, &f->cfg, &f->loop, err, sizeof(err)) == 0)
        fail_msg("open succeeded");
    assert_null(strchr(err, '\n'));
    return err;
}

struct done_log {
    int calls;
    int status;
    uint64_t states[8];
    size_t n;
};

static void on_done(void *arg, struct store_event *ev, size_t n, int status)
{
    struct done_log *d = arg;

    d->calls++;
    d->status = status;
    d->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        d->states[i] = ev[i].state;
}

/* Runs the loop until every bump in flight is done. */
static void settle(struct fixture *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static void bump_one(struct fixture *f, struct store *s, const char *user, const char *folder,
                     int want_status)
{
    struct store_event ev = {.user = user, .folder = folder};
    struct done_log d = {0};

    assert_int_equal(store_bump(s, &ev, 1, on_done, &d), 0);
    settle(f);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, want_status);
}

/* Runs SQL on the database file directly, as an operator with sqlite3 would. */
static void sql(const char *path, const char *text)
{
    sqlite3 *db;
    char *msg = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, text, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", text, msg);
    sqlite3_close(db);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    ssize_t n;

    assert_true(fd >= 0);
    n = read(fd, buf, cap);
    close(fd);
    assert_true(n >= 0);
    return (size_t)n;
}

struct seen {
    int n;
    uint64_t inbox, sent;
};

static void on_list(void *arg, const char *folder, uint64_t state)
{
    struct seen *s = arg;

    s->n++;
    if (strcmp(folder, "INBOX") == 0)
        s->inbox = state;
    if (strcmp(folder, "Sent") == 0)
        s->sent = state;
}

/* ---- tests ----------------------------------------------------------- */

static void test_open_creates_the_database(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    char wal[PATH_MAX + 8];
    struct stat st;

    assert_non_null(store_backend_find("sqlite"));
    assert_int_equal(stat(f->db, &st), 0);
    assert_int_equal(store_get(s, "alice", "INBOX"), 0);
    bump_one(f, s, "alice", "INBOX", 0);
    snprintf(wal, sizeof(wal), "%s-wal", f->db);
    assert_int_equal(stat(wal, &st), 0); /* WAL mode */
    store_close(s);
    /* Clean close: the WAL is checkpointed into the file and removed. */
    assert_int_equal(stat(f->db, &st), 0);
    assert_int_not_equal(stat(wal, &st), 0);
}

static void test_states_become_visible_after_the_commit(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_event ev[3] = {
        {.user = "alice", .folder = "INBOX"},
        {.user = "alice", .folder = "INBOX"},
        {.user = "alice", .folder = "Sent"},
    };
    struct done_log d = {0};
    struct seen seen = {0};

    assert_int_equal(store_bump(s, ev, 3, on_done, &d), 0);
    /* Assigned at once, each event its own state... */
    assert_int_equal(ev[0].state, 1);
    assert_int_equal(ev[1].state, 2);
    assert_int_equal(ev[2].state, 1);
    /* ...but nobody sees them, and done() has not run, before the commit. */
    assert_int_equal(d.calls, 0);
    assert_int_equal(store_get(s, "alice", "INBOX"), 0);
    assert_int_equal(store_list(s, "alice", on_list, &seen), 0);
    settle(f);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(store_get(s, "alice", "INBOX"), 2);
    assert_int_equal(store_get(s, "alice", "Sent"), 1);
    assert_int_equal(store_get(s, "bob", "INBOX"), 0);
    assert_int_equal(store_list(s, "alice", on_list, &seen), 2);
    assert_int_equal(seen.inbox, 2);
    assert_int_equal(seen.sent, 1);
    store_close(s);
}

static void test_reopen_sees_the_states(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_event ev = {.user = "alice", .folder = "INBOX"};
    struct done_log d = {0};

    bump_one(f, s, "alice", "INBOX", 0);
    bump_one(f, s, "alice", "INBOX", 0);
    bump_one(f, s, "bob@example.org", "Sent", 0);
    store_close(s);

    s = open_ok(f);
    assert_int_equal(store_get(s, "alice", "INBOX"), 2);
    assert_int_equal(store_get(s, "bob@example.org", "Sent"), 1);
    assert_int_equal(store_get(s, "bob@example.org", "INBOX"), 0);
    /* The counter goes on from the stored state. */
    assert_int_equal(store_bump(s, &ev, 1, on_done, &d), 0);
    assert_int_equal(ev.state, 3);
    settle(f);
    assert_int_equal(store_get(s, "alice", "INBOX"), 3);
    store_close(s);
}

static void test_many_concurrent_batches_get_distinct_increasing_states(void **state)
{
    enum { N = 300 };
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_event *ev = calloc(N, sizeof(*ev));
    struct done_log *d = calloc(N, sizeof(*d));

    /* All queued before any commit is delivered: they wait in the same groups. */
    for (int i = 0; i < N; i++) {
        ev[i].user = "carol";
        ev[i].folder = i % 2 ? "INBOX" : "Archive";
        assert_int_equal(store_bump(s, &ev[i], 1, on_done, &d[i]), 0);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(ev[i].state, (uint64_t)(i / 2 + 1));
    settle(f);
    for (int i = 0; i < N; i++) {
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].status, 0);
    }
    assert_int_equal(store_get(s, "carol", "INBOX"), N / 2);
    assert_int_equal(store_get(s, "carol", "Archive"), N / 2);
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_get(s, "carol", "INBOX"), N / 2);
    store_close(s);
    free(ev);
    free(d);
}

struct loaded {
    int n;
    char user[64], device[64];
    uint32_t heartbeat, hint, nfolders;
    uint32_t max_ceiling, good;
    int64_t ceiling_since;
    char names[4][32];
    uint64_t states[4];
};

static void on_device(void *arg, const struct store_device *d)
{
    struct loaded *l = arg;

    l->n++;
    snprintf(l->user, sizeof(l->user), "%s", d->user);
    snprintf(l->device, sizeof(l->device), "%s", d->device);
    l->heartbeat = d->heartbeat;
    l->hint = d->heartbeat_hint;
    l->nfolders = d->nfolders;
    if (d->heartbeat_ceiling > l->max_ceiling) {
        l->max_ceiling = d->heartbeat_ceiling;
        l->good = d->heartbeat_good;
        l->ceiling_since = d->ceiling_since;
    }
    for (uint32_t i = 0; i < d->nfolders && i < 4; i++) {
        snprintf(l->names[i], sizeof(l->names[i]), "%s", d->folders[i].name);
        l->states[i] = d->folders[i].state;
    }
}

static void test_device_records_round_trip(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    const struct store_folder first[1] = {{"INBOX", 3}};
    const struct store_folder folders[2] = {{"INBOX", 17}, {"Dossier \"été\"\\x", 18446744073709551615u}};
    struct store_device d = {
        .user = "alice@example.org", .device = "phone 1", .heartbeat = 480, .heartbeat_hint = 470,
        .nfolders = 1, .folders = first,
    };
    struct loaded l = {0};

    store_device_save(s, &d);
    /* A newer record of the same device replaces the older one. */
    d.nfolders = 2;
    d.folders = folders;
    d.heartbeat = 900;
    store_device_save(s, &d);
    store_close(s); /* flushes the queue */

    s = open_ok(f);
    assert_int_equal(store_device_load(s, on_device, &l), 1);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.user, "alice@example.org");
    assert_string_equal(l.device, "phone 1");
    assert_int_equal(l.heartbeat, 900);
    assert_int_equal(l.hint, 470);
    assert_int_equal(l.nfolders, 2);
    for (int i = 0; i < 2; i++) {
        int j = strcmp(l.names[0], "INBOX") == 0 ? i : 1 - i; /* order is not promised */
        assert_string_equal(l.names[j], folders[i].name);
        assert_int_equal(l.states[j], folders[i].state);
    }
    store_close(s);
}

static void test_bad_device_record_is_skipped(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    const struct store_folder folders[1] = {{"INBOX", 1}};
    struct store_device d = {.user = "u", .device = "good", .heartbeat = 60, .heartbeat_hint = 60,
                             .nfolders = 1, .folders = folders};
    struct loaded l = {0};

    store_device_save(s, &d);
    store_close(s);
    sql(f->db, "INSERT INTO devices (user, device, heartbeat, heartbeat_hint, folders) "
               "VALUES ('u', 'bad', 60, 60, 'not json')");
    s = open_ok(f);
    assert_int_equal(store_device_load(s, on_device, &l), 1);
    assert_string_equal(l.device, "good");
    store_close(s);
}

struct loaded_udp {
    int n, with_udp;
    uint64_t id, seq;
    uint8_t key[32];
    char address[64];
    int64_t expires;
    int suspended;
    uint32_t nfolders;
    char name[32];
    uint64_t state;
};

static void on_udp_device(void *arg, const struct store_device *d)
{
    struct loaded_udp *l = arg;

    l->n++;
    if (d->udp == NULL)
        return;
    l->with_udp++;
    l->id = d->udp->id;
    l->seq = d->udp->seq;
    memcpy(l->key, d->udp->key, 32);
    snprintf(l->address, sizeof(l->address), "%s", d->udp->address);
    l->expires = d->udp->expires;
    l->suspended = d->udp->suspended;
    l->nfolders = d->udp->nfolders;
    if (d->udp->nfolders)
        snprintf(l->name, sizeof(l->name), "%s", d->udp->folders[0].name), l->state = d->udp->folders[0].state;
}

/* A UDP registration is saved with its device record and read back whole. */
static void test_udp_registration_round_trip(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    const struct store_folder folders[1] = {{"INBOX", 7}};
    uint8_t key[32];
    struct store_udp udp = {.id = 18446744073709551557u, .key = key, .address = "[::1]:40001",
                            .expires = 1800000000, .seq = 2048, .suspended = 1, .nfolders = 1,
                            .folders = folders};
    struct store_device d = {.user = "u", .device = "desk", .heartbeat = 0, .heartbeat_hint = 0,
                             .nfolders = 0, .folders = NULL, .udp = &udp};
    struct loaded_udp l = {0};

    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(255 - i * 3);
    store_device_save(s, &d);
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_device_load(s, on_udp_device, &l), 1);
    assert_int_equal(l.with_udp, 1);
    assert_true(l.id == udp.id);
    assert_true(l.seq == 2048);
    assert_memory_equal(l.key, key, 32);
    assert_string_equal(l.address, "[::1]:40001");
    assert_int_equal(l.expires, 1800000000);
    assert_int_equal(l.suspended, 1);
    assert_int_equal(l.nfolders, 1);
    assert_string_equal(l.name, "INBOX");
    assert_int_equal(l.state, 7);
    /* Saved again without it: the registration is gone. */
    d.udp = NULL;
    store_device_save(s, &d);
    store_close(s);
    s = open_ok(f);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_device_load(s, on_udp_device, &l), 1);
    assert_int_equal(l.with_udp, 0);
    store_close(s);
}

/* A record whose registration cannot be read is skipped, not half-loaded. */
static void test_unreadable_udp_registration_skips_the_record(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct loaded_udp l = {0};

    store_close(s);
    sql(f->db, "INSERT INTO devices (user, device, heartbeat, heartbeat_hint, folders, udp) "
               "VALUES ('u', 'a', 60, 60, '{}', '{\"id\":\"1\",\"key\":\"zz\"}'),"
               "('u', 'b', 60, 60, '{}', '')");
    s = open_ok(f);
    assert_int_equal(store_device_load(s, on_udp_device, &l), 1);
    assert_int_equal(l.with_udp, 0);
    store_close(s);
}

/* User records (the ActiveSync folder map): saved, replaced, deleted, in order, across a reopen. */
struct records {
    int n;
    char text[4][128];
};

static void on_record(void *arg, const char *user, const char *kind, const char *data)
{
    struct records *r = arg;

    if (r->n < 4)
        snprintf(r->text[r->n], sizeof(r->text[0]), "%s|%s|%s", user, kind, data);
    r->n++;
}

static void test_user_records_survive_a_reopen(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct records r = {0};

    store_record_save(s, "alice", "activesync.folders", "{\"folders\":{\"1\":\"INBOX\"}}");
    store_record_save(s, "alice", "activesync.folders", "{\"folders\":{\"2\":\"Sent\"}}");
    store_record_save(s, "bob", "activesync.folders", "{}");
    /* A put then a delete queued together leave none. */
    store_record_save(s, "carol", "activesync.folders", "{}");
    store_record_save(s, "carol", "activesync.folders", NULL);
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_record_load(s, on_record, &r), 2);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.text[0], "alice|activesync.folders|{\"folders\":{\"2\":\"Sent\"}}");
    assert_string_equal(r.text[1], "bob|activesync.folders|{}");
    store_record_save(s, "bob", "activesync.folders", NULL);
    store_close(s);
    s = open_ok(f);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_record_load(s, on_record, &r), 1);
    assert_string_equal(r.text[0], "alice|activesync.folders|{\"folders\":{\"2\":\"Sent\"}}");
    store_close(s);
}

/* A version-3 file (before user records) opens migrated, and then keeps them. */
static void test_version_3_file_gets_user_records(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct records r = {0};

    store_close(s);
    sql(f->db, "DROP TABLE user_records; PRAGMA user_version = 3;");
    s = open_ok(f);
    assert_int_equal(store_record_load(s, on_record, &r), 0);
    store_record_save(s, "dave", "activesync.folders", "{}");
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_record_load(s, on_record, &r), 1);
    assert_string_equal(r.text[0], "dave|activesync.folders|{}");
    store_close(s);
}

/* A version-1 file (before the adaptive heartbeat) opens, migrated, with its records. */
static void test_version_1_file_is_migrated(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct loaded l = {0};
    const struct store_folder folders[1] = {{"INBOX", 3}};
    struct store_device d = {.user = "u", .device = "new", .heartbeat = 60, .heartbeat_hint = 120,
                             .heartbeat_good = 120, .heartbeat_ceiling = 300,
                             .ceiling_since = 1795000000, .nfolders = 1, .folders = folders};

    store_close(s);
    /* Rebuild the file as version 1 had it (no user records), with one old record. */
    sql(f->db, "DROP TABLE devices; DROP TABLE user_records;"
               "CREATE TABLE devices (user TEXT NOT NULL, device TEXT NOT NULL, heartbeat INTEGER "
               "NOT NULL, heartbeat_hint INTEGER NOT NULL, folders TEXT NOT NULL, PRIMARY KEY "
               "(user, device)) STRICT, WITHOUT ROWID;"
               "INSERT INTO devices VALUES ('u', 'old', 90, 90, '{\"INBOX\":\"2\"}');"
               "PRAGMA user_version = 1;");
    s = open_ok(f);
    assert_int_equal(store_device_load(s, on_device, &l), 1);
    assert_string_equal(l.device, "old");
    /* New columns work after the migration, and survive a reopen. */
    store_device_save(s, &d);
    store_close(s);
    s = open_ok(f);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_device_load(s, on_device, &l), 2);
    assert_int_equal(l.max_ceiling, 300);
    assert_int_equal(l.good, 120);
    assert_int_equal(l.ceiling_since, 1795000000);
    store_close(s);
}

static void test_corrupt_file_is_refused_and_left_alone(void **state)
{
    struct fixture *f = *state;
    char garbage[8192], back[9000];
    const char *err;

    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (char)(i * 7 + 3);
    write_file(f->db, garbage, sizeof(garbage));
    err = open_fails(f);
    if (strncmp(err, f->db, strlen(f->db)) != 0 || strstr(err, ": SQLite says: ") == NULL ||
        strstr(err, "not a nudge database or is damaged") == NULL ||
        strstr(err, "move it away to start empty") == NULL ||
        strstr(err, "restore a backup") == NULL)
        fail_msg("unexpected message: %s", err);
    assert_int_equal(read_file(f->db, back, sizeof(back)), sizeof(garbage));
    assert_memory_equal(back, garbage, sizeof(garbage));
}

static void test_damaged_page_is_found_at_open(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    char name[32], buf[1 << 16];
    size_t n;
    int fd;

    /* Enough rows for the table to span several pages. */
    for (int i = 0; i < 400; i++) {
        struct store_event ev = {.user = "dave", .folder = name};
        struct done_log d = {0};
        snprintf(name, sizeof(name), "folder%03d", i);
        assert_int_equal(store_bump(s, &ev, 1, on_done, &d), 0);
        settle(f);
    }
    store_close(s);
    n = read_file(f->db, buf, sizeof(buf));
    assert_true(n >= 4 * 4096);
    /*
     * Scribble over page 2, the root of folder_states (created first), and
     * leave the file header alone: the file still opens as a database, and
     * only reading the tables finds the damage.
     */
    fd = open(f->db, O_WRONLY);
    assert_true(fd >= 0);
    memset(buf, 0x5a, 4096);
    assert_int_equal(pwrite(fd, buf, 4096, 4096), 4096);
    close(fd);
    const char *err = open_fails(f);
    if (strncmp(err, f->db, strlen(f->db)) != 0 || strstr(err, "damaged") == NULL ||
        strstr(err, "move it away") == NULL)
        fail_msg("unexpected message: %s", err);
}

static void test_another_programs_database_is_refused(void **state)
{
    struct fixture *f = *state;
    const char *err;

    sql(f->db, "CREATE TABLE t (x)");
    err = open_fails(f);
    if (strncmp(err, f->db, strlen(f->db)) != 0 || strstr(err, "not nudge's") == NULL)
        fail_msg("unexpected message: %s", err);
}

static void test_newer_schema_is_refused(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    const char *err;

    store_close(s);
    sql(f->db, "PRAGMA user_version = 99");
    err = open_fails(f);
    if (strstr(err, "written by a newer nudged (schema version 99") == NULL)
        fail_msg("unexpected message: %s", err);
}

static void test_second_store_on_one_file_is_refused(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    const char *err = open_fails(f);

    if (strncmp(err, f->db, strlen(f->db)) != 0 || strstr(err, "another nudged") == NULL)
        fail_msg("unexpected message: %s", err);
    store_close(s);
    /* Once the first is closed the file is free again. */
    s = open_ok(f);
    store_close(s);
}

static void test_missing_directory_is_reported(void **state)
{
    struct fixture *f = *state;
    const char *err;

    snprintf(f->cfg.store_path, sizeof(f->cfg.store_path), "%s/no/such/dir/nudge.db", f->dir);
    err = open_fails(f);
    if (strstr(err, "/no/such/dir/nudge.db: ") == NULL || strstr(err, "directory") == NULL)
        fail_msg("unexpected message: %s", err);
}

static void test_store_path_option(void **state)
{
    struct fixture *f = *state;
    struct store *s;
    struct stat st;

    snprintf(f->cfg.store_path, sizeof(f->cfg.store_path), "%s/elsewhere.db", f->dir);
    s = open_ok(f);
    bump_one(f, s, "erin", "INBOX", 0);
    store_close(s);
    assert_int_equal(stat(f->cfg.store_path, &st), 0);
    assert_int_not_equal(stat(f->db, &st), 0);
}

static void test_write_error_fails_the_batch_and_the_store_goes_on(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);

    /* An operator's trigger that refuses one user stands in for a failing disk. */
    sql(f->db, "CREATE TRIGGER refuse BEFORE INSERT ON folder_states WHEN NEW.user = 'boom' "
               "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END");
    bump_one(f, s, "boom", "INBOX", -EIO);
    assert_int_equal(store_get(s, "boom", "INBOX"), 0);
    bump_one(f, s, "fine", "INBOX", 0);
    assert_int_equal(store_get(s, "fine", "INBOX"), 1);
    store_close(s);
    sql(f->db, "DROP TRIGGER refuse");
    s = open_ok(f);
    assert_int_equal(store_get(s, "boom", "INBOX"), 0);
    assert_int_equal(store_get(s, "fine", "INBOX"), 1);
    /* The failed number was never shown to anyone, so after a restart it may be handed out. */
    bump_one(f, s, "boom", "INBOX", 0);
    assert_int_equal(store_get(s, "boom", "INBOX"), 1);
    store_close(s);
}

/*
 * Device records are write-behind: nothing calls back when their round has
 * run. Waits (bounded) until store_healthy() reads 'want'.
 */
static void wait_healthy(struct store *s, int want)
{
    for (int i = 0; i < 5000 && store_healthy(s) != want; i++)
        usleep(1000);
    assert_int_equal(store_healthy(s), want);
}

static void test_a_failed_device_save_makes_the_store_failing_until_one_commits(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    const struct store_folder folders[1] = {{"INBOX", 3}};
    struct store_device d = {
        .user = "gina", .device = "phone", .heartbeat = 480, .heartbeat_hint = 480,
        .nfolders = 1, .folders = folders,
    };
    struct loaded l = {0};

    assert_true(store_healthy(s)); /* no round has run yet */
    sql(f->db, "CREATE TRIGGER refuse BEFORE INSERT ON devices "
               "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END");
    store_device_save(s, &d);
    wait_healthy(s, 0);
    sql(f->db, "DROP TRIGGER refuse");
    assert_false(store_healthy(s)); /* nothing wrote since: it stays failing */
    /* The next save is the retry: its round commits and the store is healthy again. */
    d.heartbeat = 900;
    store_device_save(s, &d);
    wait_healthy(s, 1);
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_device_load(s, on_device, &l), 1);
    assert_int_equal(l.heartbeat, 900); /* the failed record was lost, the retry saved */
    store_close(s);
}

static void test_a_failed_bump_makes_the_store_failing_until_one_commits(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);

    sql(f->db, "CREATE TRIGGER refuse BEFORE INSERT ON folder_states WHEN NEW.user = 'boom' "
               "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END");
    /* The flag is set before the batch is handed back: done() already sees it. */
    bump_one(f, s, "boom", "INBOX", -EIO);
    assert_false(store_healthy(s));
    bump_one(f, s, "boom", "INBOX", -EIO);
    assert_false(store_healthy(s));
    /* Any write that commits clears it, whoever makes it. */
    bump_one(f, s, "fine", "INBOX", 0);
    assert_true(store_healthy(s));
    store_close(s);
}

static void test_sync_normal_works_too(void **state)
{
    struct fixture *f = *state;
    struct store *s;

    snprintf(f->cfg.store_sync, sizeof(f->cfg.store_sync), "normal");
    s = open_ok(f);
    bump_one(f, s, "frank", "INBOX", 0);
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_get(s, "frank", "INBOX"), 1);
    store_close(s);
}

int main(void)
{
    log_init(NULL, LOG_WARN); /* the store's info lines would bury cmocka's */
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_creates_the_database),
        T(test_states_become_visible_after_the_commit),
        T(test_reopen_sees_the_states),
        T(test_many_concurrent_batches_get_distinct_increasing_states),
        T(test_device_records_round_trip),
        T(test_bad_device_record_is_skipped),
        T(test_version_1_file_is_migrated),
        T(test_user_records_survive_a_reopen),
        T(test_version_3_file_gets_user_records),
        T(test_udp_registration_round_trip),
        T(test_unreadable_udp_registration_skips_the_record),
        T(test_corrupt_file_is_refused_and_left_alone),
        T(test_damaged_page_is_found_at_open),
        T(test_another_programs_database_is_refused),
        T(test_newer_schema_is_refused),
        T(test_second_store_on_one_file_is_refused),
        T(test_missing_directory_is_reported),
        T(test_store_path_option),
        T(test_write_error_fails_the_batch_and_the_store_goes_on),
        T(test_a_failed_device_save_makes_the_store_failing_until_one_commits),
        T(test_a_failed_bump_makes_the_store_failing_until_one_commits),
        T(test_sync_normal_works_too),
    };
#undef T
    return cmocka_run_group_tests_name("store_sqlite", tests, NULL, NULL);
}
