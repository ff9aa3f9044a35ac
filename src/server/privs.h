/*
 * privs.h — [server] user: a nudged started as root becomes that user
 * before it opens a file, keeping only CAP_NET_BIND_SERVICE, and drops
 * that too once its sockets are bound. Everything it creates (data_dir,
 * the secret, the store's files) then belongs to the user, and what runs
 * with requests from the network holds no privilege at all.
 */
#ifndef NUDGE_PRIVS_H
#define NUDGE_PRIVS_H

#include <stddef.h>

/*
 * Becomes 'user' (its uid, primary group and supplementary groups), still
 * able to bind ports below 1024. An empty user: nothing (a warning when
 * running as root). Not root and 'user' not who we are: an error. 0 or -1
 * with err set.
 */
int privs_drop(const char *user, char *err, size_t errlen);

/* Logs who we became (event 1011), or warns that we run as root; once the log is open. */
void privs_log(void);

/* The sockets are bound: gives up the last capability. No-op when privs_drop did nothing. */
void privs_bound(void);

#endif
