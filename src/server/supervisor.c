/* supervisor.c — start, watch, restart and stop the workers; see supervisor.h. */
#include "server/supervisor.h"

#include <errno.h>
#include <linux/filter.h>
#include <openssl/rand.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "auth/secret.h"
#include "common/config.h"
#include "common/log.h"
#include "common/strmap.h"
#include "common/util.h"
#include "common/version.h"
#include "conn/listen.h"
#include "net/sockopt.h"
#include "server/privs.h"
#include "server/reload.h"
#include "server/server.h"
#include "store/reshard.h"
#include "worker/mesh.h"
#include "worker/worker.h"

_Static_assert(WORKERS_MAX <= RESHARD_MAX_SHARDS, "every worker needs a shard file reshard can see");

/* Backlog of each worker's listener (as listen.c's own). */
#define LISTEN_BACKLOG 4096
/* Restart back-off: from 100 ms, doubling while a worker dies within QUICK_DEATH_MS, to 5 s. */
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 5000
#define QUICK_DEATH_MS 10000
/* At a stop, workers still running after this long are killed. */
#define STOP_KILL_MS 15000
/*
 * Each mesh socket's send buffer: a message must fit it whole, and the
 * largest is a handed-off request (headers + body). SO_SNDBUFFORCE passes
 * net.core.wmem_max when we may.
 */
#define MESH_MIN_SNDBUF (1024 * 1024)

struct wslot {
    pid_t pid;            /* 0: not running */
    uint64_t started;     /* ms, monotonic */
    uint64_t restart_at;  /* ms; 0: none due */
    unsigned quick_deaths;
    unsigned restarts;
    int ever_started;     /* it logged that it listens (shared->pid set by the worker) */
};

struct sup {
    struct config *cfg;
    const struct secret *secret;
    unsigned n;
    unsigned nlisten;                         /* [server] listen's addresses */
    int listen_fd[WORKERS_MAX][LISTEN_MAX];   /* [worker][address] */
    int (*mesh)[WORKERS_MAX];   /* mesh[i][j]: i's end of the pair (i, j) */
    struct worker_shared *shared;
    struct wslot w[WORKERS_MAX];
    int stopping;
    uint64_t stop_deadline;
    int exit_code;
};

static int make_listeners(struct sup *sp, char *err, size_t errlen)
{
    char addr[CONFIG_STR_MAX];

    sp->nlisten = config_listen_count(sp->cfg);
    for (unsigned a = 0; a < sp->nlisten; a++) {
        struct sockaddr_storage ss;
        config_listen_addr(sp->cfg, a, addr, sizeof(addr));
        /* Shared with SO_REUSEPORT, a port another nudged holds would be joined, not refused. */
        if (util_parse_addr(addr, &ss, err, errlen) == 0 && listen_probe_free(&ss, err, errlen) < 0)
            return -1;
        for (unsigned i = 0; i < sp->n; i++) {
            int fd = listen_bind(addr, 1, sp->cfg, err, errlen);
            if (fd < 0)
                return -1;
            sp->listen_fd[i][a] = fd;
            if (i == 0) {
                /* Port 0 picked a port: the other workers join that one. */
                socklen_t len = sizeof(ss);
                getsockname(fd, (struct sockaddr *)&ss, &len);
                util_format_addr((struct sockaddr *)&ss, addr, sizeof(addr));
            }
        }
    }
    /*
     * Steer by client address: every connection from one address reaches
     * the same worker, which therefore counts all of them ([server]
     * max_per_ip stays exact). The program reads the source address from
     * the IP header (SKF_NET_OFF) and returns it modulo the group's size,
     * an index in the order the sockets joined the group: worker i's is i.
     */
    {
        struct sock_filter code[] = {
            BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF),
            BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 2),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 20), /* IPv6 src, last word */
            BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12), /* IPv4 src */
            BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, sp->n),
            BPF_STMT(BPF_RET | BPF_A, 0),
        };
        struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
        for (unsigned a = 0; a < sp->nlisten; a++)
            if (setsockopt(sp->listen_fd[0][a], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
                           sizeof(prog)) < 0) {
                char q[128];
                LOG(LOG_WARN, reuseport_steering, "error=%s",
                    log_q(q, sizeof(q), strerror(errno)));
            }
    }
    return 0;
}

static int make_mesh(struct sup *sp, char *err, size_t errlen)
{
    int want = (int)(sp->cfg->max_header_bytes + sp->cfg->max_body_bytes) * 2 + 65536;

    if (want < MESH_MIN_SNDBUF)
        want = MESH_MIN_SNDBUF;
    sp->mesh = calloc(sp->n, sizeof(*sp->mesh));
    if (sp->mesh == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < sp->n; i++)
        for (unsigned j = 0; j < WORKERS_MAX; j++)
            sp->mesh[i][j] = -1;
    for (unsigned i = 0; i < sp->n; i++)
        for (unsigned j = i + 1; j < sp->n; j++) {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                snprintf(err, errlen, "socketpair: %s", strerror(errno));
                return -1;
            }
            for (int k = 0; k < 2; k++)
                if (setsockopt(sv[k], SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof(want)) < 0)
                    setsockopt(sv[k], SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
            sp->mesh[i][j] = sv[0];
            sp->mesh[j][i] = sv[1];
        }
    return 0;
}

/* In the child: keep only worker i's descriptors, run its server, exit. */
static void run_worker(struct sup *sp, unsigned i, const sigset_t *old)
{
    static struct worker_ctx wk;
    static struct server srv;
    uv_loop_t loop;
    uint64_t seed;
    int rc;

    /*
     * If the supervisor dies, its workers die with it, as one process would:
     * nothing acknowledged is lost (the store commits first), and a new
     * nudged can take the files at once.
     */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(1);
    for (unsigned k = 0; k < sp->n; k++) {
        if (k != i)
            for (unsigned a = 0; a < sp->nlisten; a++)
                close(sp->listen_fd[k][a]);
        for (unsigned j = 0; j < sp->n; j++)
            if (k != i && sp->mesh[k][j] >= 0)
                close(sp->mesh[k][j]);
    }
    log_set_worker((int)i);
    wk.index = i;
    wk.count = sp->n;
    for (unsigned a = 0; a < LISTEN_MAX; a++)
        wk.listen_fd[a] = a < sp->nlisten ? sp->listen_fd[i][a] : -1;
    for (unsigned j = 0; j < WORKERS_MAX; j++)
        wk.mesh_fd[j] = j < sp->n ? sp->mesh[i][j] : -1;
    wk.shared = sp->shared;
    /* Each worker its own shard file; worker 0 keeps the single-process file. */
    reshard_path(sp->cfg, i, sp->cfg->store_path, sizeof(sp->cfg->store_path));
    if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) == 1)
        strmap_seed(seed);
    /*
     * SIGTERM stays blocked until server_init has installed its handlers: a
     * stop that arrives while the worker starts is then drained like any
     * other, instead of killing it by the default action.
     */
    uv_loop_init(&loop);
    if (server_init(&srv, &loop, sp->cfg, sp->secret, &wk) < 0) {
        uv_loop_close(&loop);
        _exit(1);
    }
    privs_bound();
    sigprocmask(SIG_SETMASK, old, NULL);
    atomic_store(&sp->shared->pid[i], (int32_t)getpid());
    LOG(LOG_INFO, started, "version=%s store=%s heartbeat_min=%u heartbeat_max=%u", NUDGE_VERSION,
        sp->cfg->store_backend, sp->cfg->heartbeat_min, sp->cfg->heartbeat_max);
    {
        char buf[512];
        config_describe_derived(sp->cfg, buf, sizeof(buf));
        LOG(LOG_INFO, network_settings, "%s", buf);
    }
    rc = server_run(&srv);
    server_free(&srv);
    uv_loop_close(&loop);
    LOG(LOG_INFO, stopped, "exit=%d", rc);
    _exit(rc == 0 ? 0 : 1);
}

static int start_worker(struct sup *sp, unsigned i, const sigset_t *old)
{
    pid_t pid;

    atomic_store(&sp->shared->pid[i], 0);
    pid = fork();
    if (pid < 0) {
        char q[128];
        LOG(LOG_ERROR, worker_exited, "worker=%u reason=%s", i,
            log_q(q, sizeof(q), strerror(errno)));
        return -1;
    }
    if (pid == 0)
        run_worker(sp, i, old);
    sp->w[i].pid = pid;
    sp->w[i].started = util_now_ms();
    sp->w[i].restart_at = 0;
    LOG(LOG_INFO, worker_started, "worker=%u pid=%d restarts=%u", i, (int)pid, sp->w[i].restarts);
    return 0;
}

/*
 * Worker i is gone: take its connections out of the shared count and tell
 * the others (as i, on i's ends of the mesh) that it will not answer what
 * they asked it.
 */
static void worker_gone(struct sup *sp, unsigned i)
{
    struct mesh_hdr h = {.type = MESH_RESET, .id = 0};
    uint64_t held = atomic_exchange(&sp->shared->held_by[i], 0);

    atomic_fetch_sub(&sp->shared->connections, held);
    for (unsigned j = 0; j < sp->n; j++)
        if (j != i && sp->mesh[i][j] >= 0)
            send(sp->mesh[i][j], &h, sizeof(h), MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void reap(struct sup *sp)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        uint64_t now = util_now_ms(), lived;
        unsigned i;
        for (i = 0; i < sp->n && sp->w[i].pid != pid; i++)
            ;
        if (i == sp->n)
            continue;
        lived = now - sp->w[i].started;
        sp->w[i].pid = 0;
        if (atomic_load(&sp->shared->pid[i]) != 0)
            sp->w[i].ever_started = 1;
        if (sp->stopping) {
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                sp->exit_code = 1;
            LOG(LOG_INFO, worker_exited, "worker=%u pid=%d status=%d signal=%d", i, (int)pid,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            continue;
        }
        worker_gone(sp, i);
        if (!sp->w[i].ever_started) {
            /* It never came up (store, UDP port): the configuration is wrong, not the luck. */
            LOG(LOG_ERROR, worker_exited,
                "worker=%u pid=%d status=%d signal=%d reason=\"it failed to start; stopping\"", i,
                (int)pid, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            sp->exit_code = 1;
            sp->stopping = 1;
            sp->stop_deadline = now + STOP_KILL_MS;
            for (unsigned k = 0; k < sp->n; k++)
                if (sp->w[k].pid > 0)
                    kill(sp->w[k].pid, SIGTERM);
            continue;
        }
        if (lived < QUICK_DEATH_MS)
            sp->w[i].quick_deaths++;
        else
            sp->w[i].quick_deaths = 0;
        {
            uint64_t delay = RESTART_MIN_MS;
            for (unsigned k = 1; k < sp->w[i].quick_deaths && delay < RESTART_MAX_MS; k++)
                delay *= 2;
            if (delay > RESTART_MAX_MS)
                delay = RESTART_MAX_MS;
            sp->w[i].restart_at = now + delay;
            sp->w[i].restarts++;
            LOG(LOG_WARN, worker_exited, "worker=%u pid=%d status=%d signal=%d restart_in=%llu", i,
                (int)pid, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0, (unsigned long long)delay);
        }
    }
}

static void begin_stop(struct sup *sp, int sig)
{
    char q[64];

    if (sp->stopping)
        return;
    sp->stopping = 1;
    sp->stop_deadline = util_now_ms() + STOP_KILL_MS;
    sd_notify(0, "STOPPING=1");
    LOG(LOG_INFO, stopping, "signal=%s workers=%u", log_q(q, sizeof(q), strsignal(sig)), sp->n);
    /* New clients are refused from now on, as with one process. */
    for (unsigned i = 0; i < sp->n; i++) {
        for (unsigned a = 0; a < sp->nlisten; a++) {
            close(sp->listen_fd[i][a]);
            sp->listen_fd[i][a] = -1;
        }
    }
    for (unsigned i = 0; i < sp->n; i++)
        if (sp->w[i].pid > 0)
            kill(sp->w[i].pid, sig);
}

int supervisor_run(struct config *cfg, const struct secret *secret, unsigned workers)
{
    static struct sup sp;
    sigset_t set, old;
    char err[PATH_MAX + 256], q[PATH_MAX + 300];
    int ready = 0;

    sp.cfg = cfg;
    sp.secret = secret;
    sp.n = workers;
    for (unsigned i = 0; i < WORKERS_MAX; i++)
        for (unsigned a = 0; a < LISTEN_MAX; a++)
            sp.listen_fd[i][a] = -1;
    if (reshard(cfg, workers, worker_owner, err, sizeof(err)) < 0 || make_listeners(&sp, err, sizeof(err)) < 0 ||
        make_mesh(&sp, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), err));
        fprintf(stderr, "nudged: %s\n", err);
        return 1;
    }
    sp.shared = mmap(NULL, sizeof(*sp.shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
    if (sp.shared == MAP_FAILED) {
        LOG(LOG_ERROR, startup_failed, "reason=%s", log_q(q, sizeof(q), strerror(errno)));
        return 1;
    }
    memset(sp.shared, 0, sizeof(*sp.shared));
    /* One seed for all workers: they count sign-in failures in the same slots. */
    if (RAND_bytes((unsigned char *)&sp.shared->signin_seed, sizeof(sp.shared->signin_seed)) != 1) {
        LOG(LOG_ERROR, startup_failed, "reason=\"no random bytes for the sign-in limits\"");
        return 1;
    }

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    LOG(LOG_INFO, workers_starting, "workers=%u listen=%s", workers, log_q(q, sizeof(q), cfg->listen));
    for (unsigned i = 0; i < workers; i++)
        if (start_worker(&sp, i, &old) < 0) {
            begin_stop(&sp, SIGTERM);
            sp.exit_code = 1;
            break;
        }

    for (;;) {
        uint64_t now = util_now_ms(), wait = 1000;
        struct timespec ts;
        siginfo_t si;
        unsigned running = 0;
        int sig;

        log_flush();
        if (!ready && !sp.stopping) {
            unsigned up = 0;
            for (unsigned i = 0; i < workers; i++)
                up += atomic_load(&sp.shared->pid[i]) != 0;
            if (up == workers) {
                ready = 1;
                sd_notifyf(0, "READY=1\nSTATUS=%u workers", workers);
            }
        }
        for (unsigned i = 0; i < workers; i++) {
            if (sp.w[i].pid > 0)
                running++;
            else if (!sp.stopping && sp.w[i].restart_at) {
                if (sp.w[i].restart_at <= now)
                    start_worker(&sp, i, &old);
                else if (sp.w[i].restart_at - now < wait)
                    wait = sp.w[i].restart_at - now;
                running += sp.w[i].pid > 0;
            }
        }
        if (sp.stopping && running == 0)
            break;
        if (sp.stopping && now >= sp.stop_deadline) {
            for (unsigned i = 0; i < workers; i++)
                if (sp.w[i].pid > 0)
                    kill(sp.w[i].pid, SIGKILL);
            sp.exit_code = 1;
        }
        if (!ready)
            wait = 20; /* readiness is looked for often until every worker is up */
        ts.tv_sec = (time_t)(wait / 1000);
        ts.tv_nsec = (long)(wait % 1000) * 1000000L;
        sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGCHLD || sig < 0)
            reap(&sp);
        else if (sig == SIGTERM || sig == SIGINT)
            begin_stop(&sp, sig);
        else if (sig == SIGHUP) {
            /* Each worker reloads itself and logs what it did; this process its own log. */
            sd_notify(0, "RELOADING=1");
            reload_run(cfg, NULL, NULL, -1);
            for (unsigned i = 0; i < workers; i++)
                if (sp.w[i].pid > 0)
                    kill(sp.w[i].pid, SIGHUP);
            sd_notify(0, "READY=1");
        }
    }
    LOG(LOG_INFO, stopped, "exit=%d workers=%u", sp.exit_code, workers);
    return sp.exit_code;
}
