/*
 * reshard.h — one SQLite file per worker, and moving users between them
 * when [server] workers changes.
 *
 * Shard 0 is the file a single process uses (<data_dir>/nudge.db or
 * [store] path); shard i > 0 is that path with ".shard<i>" appended. The
 * number of workers the files were last laid out for is kept in
 * "<path>.workers". When it differs from the current one (or files beyond
 * the current count exist), every row whose user belongs to another shard
 * (by the owner function the caller gives: worker_owner) is copied there and then deleted here, in two
 * transactions per pair of files: a crash between them leaves a copy in
 * both, and the next start finishes the move (states merge by max, so
 * nothing goes backwards). Files left empty past the count are removed.
 */
#ifndef NUDGE_RESHARD_H
#define NUDGE_RESHARD_H

#include <stddef.h>

struct config;

/* The most shard files there can be: one per worker, at most WORKERS_MAX (worker.h). */
#define RESHARD_MAX_SHARDS 256

/* Which of 'count' shards owns 'user' (worker/worker.h worker_owner). */
typedef unsigned (*reshard_owner_fn)(const char *user, size_t len, unsigned count);

/* The file of shard i (for the sqlite backend). */
void reshard_path(const struct config *c, unsigned shard, char *out, size_t outlen);

/*
 * Lays the shard files out for 'workers' (run before any worker opens its
 * store; a no-op for other backends or when nothing changed). 0, or -1
 * with err set.
 */
int reshard(const struct config *c, unsigned workers, reshard_owner_fn owner, char *err,
            size_t errlen);

#endif
