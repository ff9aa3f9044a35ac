/*
 * reload.h — SIGHUP: read the configuration again, as it was given (the
 * same command line and file), and apply what can change under running
 * connections: the log level, the log file (reopened, for logrotate), the
 * password file (read again now rather than at its next use). Anything
 * else that changed is named in the log line as needing a restart; a
 * configuration that no longer reads is logged and changes nothing.
 */
#ifndef NUDGE_RELOAD_H
#define NUDGE_RELOAD_H

struct config;
struct passwords;
struct tls_server;

/* Remembers the command line to read again (main's argc and argv, which outlive the server). */
void reload_init(int argc, char **argv);

/*
 * Reloads in this process. 'running' is the configuration it runs with;
 * 'passwords' its password backend, or NULL; 'worker' its index (its store
 * file is its shard's), or -1 for the supervisor or a single process.
 */
void reload_run(const struct config *running, struct passwords *passwords, struct tls_server *tls,
                int worker);

#endif
