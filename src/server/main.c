/*
 * main.c — nudged: read the settings, prepare data_dir and the secret, run
 * the server until a stop signal has drained it. Everything else lives in
 * the modules; this file only wires them together.
 */
#include <errno.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "auth/secret.h"
#include "common/config.h"
#include "common/log.h"
#include "common/strmap.h"
#include "common/util.h"
#include "common/version.h"
#include "server/privs.h"
#include "server/reload.h"
#include "server/server.h"
#include "store/reshard.h"
#include "tls/tls.h"
#include "server/supervisor.h"
#include "worker/worker.h"

/* mkdir -p with mode 0700: data_dir holds the secret. */
static int make_dirs(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(buf)) {
        snprintf(err, errlen, "data_dir '%s' is empty or too long", path);
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
                snprintf(err, errlen, "cannot create directory %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    return 0;
}

/* A set-up where no device gets a datagram, which nothing else would say. */
static void check_udp_pairing(const struct config *cfg)
{
    char addr[CONFIG_STR_MAX], q[CONFIG_STR_MAX + 8];

    if (config_udp_loopback_only(cfg, addr, sizeof(addr)))
        LOG(LOG_WARN, udp_loopback_only, "listen=%s udp=%s note=\"set [udp] listen to an "
            "address devices reach, or empty to turn UDP off\"",
            log_q(q, sizeof(q), addr), cfg->udp_listen);
}

int main(int argc, char **argv)
{
    static struct config cfg; /* static: it outlives the server, and it is large */
    static struct server srv;
    enum config_action action;
    struct secret secret;
    struct tls_server *tls = NULL; /* lives as long as the process */
    enum log_level level = LOG_INFO;
    char err[PATH_MAX + 256], q[PATH_MAX + 300], path[PATH_MAX];
    uint64_t seed;
    uv_loop_t loop;
    int created = 0;
    unsigned workers;

    if (config_from_args(&cfg, argc, argv, &action, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudged: %s\n", err);
        LOG(LOG_ERROR, config_error, "reason=%s", log_q(q, sizeof(q), err));
        return 2;
    }
    switch (action) {
    case CONFIG_HELP:
        config_usage(stdout, argv[0]);
        return 0;
    case CONFIG_VERSION:
        printf("nudged %s\n", NUDGE_VERSION);
        return 0;
    case CONFIG_PRINT:
        config_print(&cfg, stdout);
        return 0;
    case CONFIG_RUN:
        break;
    }
    log_level_parse(cfg.log_level, &level);
    log_init(stderr, level);
    /* A client that goes away mid-write must not kill the server. */
    signal(SIGPIPE, SIG_IGN);
    /* Nor a reload that arrives before the loop listens for it. */
    signal(SIGHUP, SIG_IGN);
    reload_init(argc, argv);

    /* Who we run as first: then every file below is created as that user. */
    if (privs_drop(cfg.user, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        fprintf(stderr, "nudged: %s\n", err);
        return 1;
    }
    if (log_open(cfg.log_target, cfg.log_file, cfg.log_burst, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        fprintf(stderr, "nudged: %s\n", err);
        return 1;
    }
    privs_log();
    check_udp_pairing(&cfg);

    if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1) {
        LOG(LOG_ERROR, startup_failed, "reason=\"no random bytes for the hash seed\"");
        return 1;
    }
    strmap_seed(seed);

    if (make_dirs(cfg.data_dir, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        return 1;
    }
    config_secret_path(&cfg, path, sizeof(path));
    if (secret_load(path, 1, &created, &secret, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        fprintf(stderr, "nudged: %s\n", err);
        return 1;
    }
    if (created)
        LOG(LOG_INFO, secret_created, "path=%s", log_q(q, sizeof(q), path));

    /* Loaded once here: every worker, and every worker restarted later, inherits it. */
    if (config_listen_any(&cfg) & CONFIG_LISTEN_TLS) {
        char what[300];
        if (tls_server_new(&tls, cfg.tls_cert, cfg.tls_key, secret.key, sizeof(secret.key), err,
                           sizeof(err)) < 0) {
            LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
            fprintf(stderr, "nudged: %s\n", err);
            return 1;
        }
        tls_server_describe(tls, what, sizeof(what));
        LOG(LOG_INFO, tls_loaded, "%s", what);
    }

    workers = cfg.workers ? cfg.workers : uv_available_parallelism();
    if (workers > WORKERS_MAX)
        workers = WORKERS_MAX;
    if (workers > 1)
        return supervisor_run(&cfg, &secret, tls, workers);
    if (reshard(&cfg, 1, worker_owner, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        fprintf(stderr, "nudged: %s\n", err);
        return 1;
    }

    uv_loop_init(&loop);
    if (server_init(&srv, &loop, &cfg, &secret, tls, NULL) < 0) {
        uv_loop_close(&loop);
        return 1;
    }
    privs_bound();
    LOG(LOG_INFO, started, "version=%s store=%s heartbeat_min=%u heartbeat_max=%u", NUDGE_VERSION,
        cfg.store_backend, cfg.heartbeat_min, cfg.heartbeat_max);
    config_describe_derived(&cfg, err, sizeof(err));
    LOG(LOG_INFO, network_settings, "%s", err);
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s", srv.listener.addr);
    server_run(&srv);
    server_free(&srv);
    if (uv_loop_close(&loop) != 0)
        LOG(LOG_WARN, stopped, "note=\"handles still open at exit\"");
    LOG(LOG_INFO, stopped, "exit=0");
    return 0;
}
