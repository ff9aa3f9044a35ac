/*
 * supervisor.h — the parent process with [server] workers > 1.
 *
 * It prepares what the workers share, before any of them runs: the shard
 * files for this number of workers (store/reshard.c), one SO_REUSEPORT
 * listener per worker with a BPF program that steers each client address
 * to one worker, the mesh of socket pairs (mesh.h) and the shared
 * counters (worker.h). Then it forks the workers, restarts one that dies
 * (after a back-off that grows while it keeps dying quickly), forwards
 * SIGTERM/SIGINT, and at a stop waits for every worker to drain.
 *
 * It keeps its copies of every listener and every mesh socket open, so a
 * restarting worker loses nothing: connections wait in its listener's
 * backlog and messages in its sockets until the new process reads them.
 */
#ifndef NUDGE_SUPERVISOR_H
#define NUDGE_SUPERVISOR_H

struct config;
struct secret;
struct tls_server;

/*
 * Runs the workers until a stop signal has drained them. Returns the exit
 * code. 'tls' (NULL without tls listeners) is inherited by every worker
 * forked, and reloaded here too on SIGHUP.
 */
int supervisor_run(struct config *cfg, const struct secret *secret, struct tls_server *tls,
                   unsigned workers);

#endif
