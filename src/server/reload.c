/* reload.c — what SIGHUP changes; see reload.h. */
#include "server/reload.h"

#include <string.h>

#include "auth/passwd.h"
#include "common/config.h"
#include "common/log.h"
#include "store/reshard.h"
#include "tls/tls.h"

static int saved_argc;
static char **saved_argv;
/* The level in force: a second reload compares against it, not against the start. */
static char level_now[16];

void reload_init(int argc, char **argv)
{
    saved_argc = argc;
    saved_argv = argv;
}

void reload_run(const struct config *running, struct passwords *passwords, struct tls_server *tls,
                int worker)
{
    /* static: two large structs, and a reload runs on the loop, never twice at once. */
    static struct config fresh, now;
    enum config_action action;
    enum log_level level;
    char err[1024], q[1100], changed[512], q2[600];
    const char *log = "-", *tls_now = "-";

    if (config_from_args(&fresh, saved_argc, saved_argv, &action, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, reload_failed, "reason=%s", log_q(q, sizeof(q), err));
        return;
    }
    /* A worker runs on its shard's file: the same setting, seen from that worker. */
    if (worker >= 0)
        reshard_path(&fresh, (unsigned)worker, fresh.store_path, sizeof(fresh.store_path));
    now = *running;
    if (level_now[0] != '\0')
        memcpy(now.log_level, level_now, sizeof(level_now));
    if (strcmp(now.log_level, fresh.log_level) != 0 &&
        log_level_parse(fresh.log_level, &level) == 0) {
        /* Written before the change, so that it shows even when the new level is quieter. */
        LOG(LOG_WARN, reloaded, "log_level=%s was=%s", fresh.log_level, now.log_level);
        log_set_level(level);
        memcpy(level_now, fresh.log_level, sizeof(level_now));
        memcpy(now.log_level, fresh.log_level, sizeof(level_now));
    }
    if (strcmp(running->log_target, "file") == 0) {
        if (log_reopen(err, sizeof(err)) < 0)
            LOG(LOG_ERROR, reload_failed, "reason=%s", log_q(q, sizeof(q), err));
        else
            log = "reopened";
    }
    if (passwords != NULL)
        passwd_reload(passwords);
    /* New handshakes get the new certificate; established connections hold no certificate. */
    if (tls != NULL) {
        if (tls_server_reload(tls, fresh.tls_cert, fresh.tls_key, err, sizeof(err)) < 0) {
            LOG(LOG_ERROR, reload_failed, "reason=%s", log_q(q, sizeof(q), err));
            tls_now = "kept";
        } else {
            char what[300];
            tls_server_describe(tls, what, sizeof(what));
            LOG(LOG_INFO, tls_loaded, "%s", what);
            tls_now = "reloaded";
        }
    }
    if (config_diff(&now, &fresh, changed, sizeof(changed)) == 0)
        memcpy(changed, "-", 2);
    LOG(LOG_INFO, reloaded, "log_level=%s log=%s passwords=%s tls=%s restart_needed=%s",
        now.log_level, log, passwords ? "reread" : "-", tls_now, log_q(q2, sizeof(q2), changed));
}
