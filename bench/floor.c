/*
 * floor.c — the fastest fan-out this machine can do over loopback TCP, with
 * no server in the way: the floor under compare.py's fan-out rows.
 *
 * It is the same shape as a compare.py fan-out, with everything that is not
 * the kernel's taken out. N connections are held from --clients processes
 * (each connection bound to one of 127.0.0.2 .. 127.0.0.<K+1>) to --servers
 * processes (one listener each, the connection j going to server j % W). At
 * "go" every server writes one fixed answer (--bytes, an HTTP 200 of that
 * size) to each of its connections in one tight loop, never reading first:
 * the best order a server could choose. Every client reads its answers as
 * they come and, with --repoll, writes a re-poll request (--req-bytes) at
 * once, as a device does; the servers read and drop those after their
 * writes. A device's latency is from "go" (CLOCK_MONOTONIC, written by the
 * parent in shared memory before it wakes the servers) to its read.
 *
 * The rounds (--rounds) each print one line:
 *   round=R conns=N got=M p50_ms= p99_ms= max_ms= server_cpu_us= client_cpu_us=
 * where the last two are the CPU (utime+stime) of all the servers and of all
 * the clients over the round, per connection. A connection that never gets its answer
 * within --limit ms counts in N but not in M, and the run exits 1.
 *
 * Every loop is bounded by --limit; everything is on 127.0.0.0/8.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_PROCS 256
#define MAX_ROUNDS 16
#define MAX_INFLIGHT 256

/* What the processes share: the start of the round and where they stand. */
struct shared {
    volatile uint64_t t0[MAX_ROUNDS];
    volatile uint64_t accepted, connected, clients_done, servers_idle;
    volatile uint64_t cpu_ns[MAX_PROCS * 2];
    uint64_t lat[]; /* one per connection: ns after t0, 0 if none this round */
};

static struct {
    uint64_t conns;
    int servers, clients, sources, rounds, repoll;
    size_t bytes, req_bytes;
    int limit_ms;
    struct shared *sh;
    char *answer, *request;
} O = { .conns = 10000, .servers = 2, .clients = 2, .sources = 64, .rounds = 3,
        .repoll = 1, .bytes = 150, .req_bytes = 260, .limit_ms = 60000 };

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "floor: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull
         + ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* A fixed message of exactly n bytes: an HTTP head padded by its body. */
static char *make_message(const char *head_fmt, size_t n)
{
    char *m = malloc(n + 1);
    if (!m)
        die("out of memory");
    char head[256];
    int hl = snprintf(head, sizeof(head), head_fmt, 0), prev = -1;
    /* The head holds the body's length, whose digits move the head: settle.
     * Just past a power of ten it cannot (a body of 100 needs a head one
     * longer, which leaves 99): then no message has exactly n bytes. */
    for (int tries = 0; hl != prev; tries++) {
        if (hl < 0 || (size_t)hl + 8 > n)
            die("--bytes/--req-bytes %zu is too small for an HTTP message", n);
        if (tries == 4)
            die("--bytes/--req-bytes %zu: no HTTP message is exactly that long; try %zu", n, n + 1);
        prev = hl;
        hl = snprintf(head, sizeof(head), head_fmt, (int)(n - (size_t)prev));
    }
    memcpy(m, head, (size_t)hl);
    memset(m + hl, 'x', n - (size_t)hl);
    m[n] = 0;
    return m;
}

static void add_fd(int ep, int fd, uint64_t id)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = id };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void wait_for(volatile uint64_t *v, uint64_t target, uint64_t deadline, const char *what)
{
    while (__atomic_load_n(v, __ATOMIC_ACQUIRE) < target) {
        if (now_ns() > deadline)
            die("timed out waiting for %s (%llu of %llu)", what,
                (unsigned long long)*v, (unsigned long long)target);
        usleep(1000);
    }
}

/* Server k: accepts its share, then at each round writes every answer and
 * reads what comes back. */
static void run_server(int k, int lfd)
{
    uint64_t share = O.conns / (uint64_t)O.servers + ((uint64_t)k < O.conns % (uint64_t)O.servers);
    int *fds = malloc(share * sizeof(int));
    if (!fds)
        die("out of memory");
    uint64_t n = 0;
    uint64_t deadline = now_ns() + (uint64_t)O.limit_ms * 1000000ull;
    while (n < share) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                if (now_ns() > deadline)
                    die("server %d: accepted %llu of %llu", k, (unsigned long long)n,
                        (unsigned long long)share);
                usleep(200);
                continue;
            }
            die("accept: %s", strerror(errno));
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fds[n++] = fd;
        __atomic_add_fetch(&O.sh->accepted, 1, __ATOMIC_RELEASE);
    }
    int ep = epoll_create1(0);
    for (uint64_t i = 0; i < n; i++)
        add_fd(ep, fds[i], i);
    static char buf[65536];
    struct epoll_event evs[512];
    for (int r = 0; r < O.rounds; r++) {
        wait_for(&O.sh->t0[r], 1, now_ns() + 600ull * 1000000000ull, "go");
        uint64_t c0 = cpu_ns();
        for (uint64_t i = 0; i < n; i++) {
            ssize_t w = write(fds[i], O.answer, O.bytes);
            if (w != (ssize_t)O.bytes)
                die("server %d: write: %s", k, w < 0 ? strerror(errno) : "short");
        }
        /* The re-polls: read until every client says the round is done. */
        uint64_t end = now_ns() + (uint64_t)O.limit_ms * 1000000ull;
        while (__atomic_load_n(&O.sh->clients_done, __ATOMIC_ACQUIRE) < (uint64_t)(O.clients * (r + 1))
               && now_ns() < end) {
            int m = epoll_wait(ep, evs, 512, 5);
            for (int e = 0; e < m; e++)
                while (read(fds[evs[e].data.u64], buf, sizeof(buf)) == (ssize_t)sizeof(buf))
                    ;
        }
        O.sh->cpu_ns[k] += cpu_ns() - c0;
        __atomic_add_fetch(&O.sh->servers_idle, 1, __ATOMIC_RELEASE);
    }
    exit(0);
}

struct cconn {
    int fd;
    uint32_t got; /* bytes of this round's answer read so far */
    uint64_t j;   /* the connection's index, for its latency */
};

/* Client k: connections j = k, k + clients, ...; at each round reads every
 * answer, notes its time, re-polls. */
static void run_client(int k, const uint16_t *ports)
{
    uint64_t share = 0;
    for (uint64_t j = (uint64_t)k; j < O.conns; j += (uint64_t)O.clients)
        share++;
    struct cconn *cs = calloc(share ? share : 1, sizeof(*cs));
    if (!cs)
        die("out of memory");
    int ep = epoll_create1(0);
    uint64_t opened = 0, established = 0;
    uint64_t deadline = now_ns() + (uint64_t)O.limit_ms * 1000000ull;
    struct epoll_event evs[512];
    /* Connect with at most MAX_INFLIGHT in progress, so the listen queues
     * never overflow (a dropped SYN costs a 1 s retransmit). */
    while (established < share) {
        while (opened < share && opened - established < MAX_INFLIGHT) {
            uint64_t j = (uint64_t)k + opened * (uint64_t)O.clients;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0)
                die("socket: %s", strerror(errno));
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            struct sockaddr_in src = { .sin_family = AF_INET };
            src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(j / (uint64_t)O.servers % (uint64_t)O.sources));
            if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
                die("bind: %s", strerror(errno));
            struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(ports[j % (uint64_t)O.servers]) };
            dst.sin_addr.s_addr = htonl(0x7f000001u);
            if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS)
                die("connect: %s", strerror(errno));
            cs[opened] = (struct cconn){ .fd = fd, .j = j };
            struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = opened };
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                die("epoll_ctl: %s", strerror(errno));
            opened++;
        }
        int m = epoll_wait(ep, evs, 512, 100);
        for (int e = 0; e < m; e++) {
            struct cconn *c = &cs[evs[e].data.u64];
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err)
                die("connect: %s", strerror(err));
            struct epoll_event ev = { .events = EPOLLIN, .data.u64 = evs[e].data.u64 };
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            established++;
        }
        if (now_ns() > deadline)
            die("client %d: connected %llu of %llu", k, (unsigned long long)established,
                (unsigned long long)share);
    }
    __atomic_add_fetch(&O.sh->connected, share, __ATOMIC_RELEASE);
    static char buf[65536];
    for (int r = 0; r < O.rounds; r++) {
        wait_for(&O.sh->t0[r], 1, now_ns() + 600ull * 1000000000ull, "go");
        uint64_t t0 = O.sh->t0[r], c0 = cpu_ns(), done = 0;
        uint64_t end = now_ns() + (uint64_t)O.limit_ms * 1000000ull;
        for (uint64_t i = 0; i < share; i++)
            cs[i].got = 0;
        while (done < share && now_ns() < end) {
            int m = epoll_wait(ep, evs, 512, 100);
            for (int e = 0; e < m; e++) {
                struct cconn *c = &cs[evs[e].data.u64];
                ssize_t n = read(c->fd, buf, sizeof(buf));
                if (n <= 0)
                    die("client %d: read: %s", k, n < 0 ? strerror(errno) : "closed");
                c->got += (uint32_t)n;
                if (c->got < O.bytes)
                    continue;
                if (c->got > O.bytes)
                    die("client %d: more than one answer on a connection", k);
                O.sh->lat[c->j] = now_ns() - t0;
                done++;
                if (O.repoll && write(c->fd, O.request, O.req_bytes) != (ssize_t)O.req_bytes)
                    die("client %d: write: %s", k, strerror(errno));
            }
        }
        O.sh->cpu_ns[MAX_PROCS + k] += cpu_ns() - c0;
        __atomic_add_fetch(&O.sh->clients_done, 1, __ATOMIC_RELEASE);
        wait_for(&O.sh->servers_idle, (uint64_t)(O.servers * (r + 1)), now_ns() + 600ull * 1000000000ull,
                 "the servers");
    }
    exit(0);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(int rc)
{
    fprintf(rc ? stderr : stdout,
            "usage: floor [--conns N] [--servers W] [--clients L] [--sources K] [--rounds R]\n"
            "             [--bytes B] [--req-bytes B] [--no-repoll] [--limit MS]\n"
            "Holds N loopback TCP connections from L client processes to W server\n"
            "processes and times one fixed answer to each, R times (see the top of floor.c).\n");
    exit(rc);
}

static long parse_num(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        die("%s: '%s' is not a number from %ld to %ld", opt, s, lo, hi);
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        { "conns", 1, 0, 'n' },     { "servers", 1, 0, 'w' }, { "clients", 1, 0, 'l' },
        { "sources", 1, 0, 'k' },   { "rounds", 1, 0, 'r' },  { "bytes", 1, 0, 'b' },
        { "req-bytes", 1, 0, 'q' }, { "no-repoll", 0, 0, 'R' },
        { "limit", 1, 0, 't' },     { "help", 0, 0, 'h' },    { 0, 0, 0, 0 }
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'n': O.conns = (uint64_t)parse_num("--conns", optarg, 1, 4000000); break;
        case 'w': O.servers = (int)parse_num("--servers", optarg, 1, MAX_PROCS); break;
        case 'l': O.clients = (int)parse_num("--clients", optarg, 1, MAX_PROCS); break;
        case 'k': O.sources = (int)parse_num("--sources", optarg, 1, 250); break;
        case 'r': O.rounds = (int)parse_num("--rounds", optarg, 1, MAX_ROUNDS); break;
        case 'b': O.bytes = (size_t)parse_num("--bytes", optarg, 1, 60000); break;
        case 'q': O.req_bytes = (size_t)parse_num("--req-bytes", optarg, 1, 60000); break;
        case 'R': O.repoll = 0; break;
        case 't': O.limit_ms = (int)parse_num("--limit", optarg, 100, 3600000); break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (optind != argc)
        die("unexpected argument '%s'", argv[optind]);
    O.answer = make_message("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            "Content-Length: %d\r\n\r\n", O.bytes);
    O.request = make_message("POST /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                             O.req_bytes);
    size_t shsize = sizeof(struct shared) + O.conns * sizeof(uint64_t);
    O.sh = mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (O.sh == MAP_FAILED)
        die("mmap: %s", strerror(errno));

    uint16_t ports[MAX_PROCS];
    int lfds[MAX_PROCS];
    for (int k = 0; k < O.servers; k++) {
        lfds[k] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = { .sin_family = AF_INET };
        a.sin_addr.s_addr = htonl(0x7f000001u);
        socklen_t al = sizeof(a);
        if (lfds[k] < 0 || bind(lfds[k], (struct sockaddr *)&a, sizeof(a)) < 0
            || listen(lfds[k], 4096) < 0 || getsockname(lfds[k], (struct sockaddr *)&a, &al) < 0)
            die("listener: %s", strerror(errno));
        ports[k] = ntohs(a.sin_port);
    }
    pid_t pids[MAX_PROCS * 2];
    int np = 0;
    for (int k = 0; k < O.servers + O.clients; k++) {
        pid_t p = fork();
        if (p < 0)
            die("fork: %s", strerror(errno));
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (k < O.servers) {
                for (int i = 0; i < O.servers; i++)
                    if (i != k)
                        close(lfds[i]);
                run_server(k, lfds[k]);
            }
            for (int i = 0; i < O.servers; i++)
                close(lfds[i]);
            run_client(k - O.servers, ports);
        }
        pids[np++] = p;
    }
    for (int k = 0; k < O.servers; k++)
        close(lfds[k]);
    uint64_t deadline = now_ns() + (uint64_t)O.limit_ms * 1000000ull;
    wait_for(&O.sh->connected, O.conns, deadline, "the connections");
    wait_for(&O.sh->accepted, O.conns, deadline, "the accepts");
    uint64_t *sorted = malloc(O.conns * sizeof(uint64_t));
    if (!sorted)
        die("out of memory");
    int rc = 0;
    for (int r = 0; r < O.rounds; r++) {
        usleep(300 * 1000); /* let the last round's acks and re-polls settle */
        memset(O.sh->lat, 0, O.conns * sizeof(uint64_t));
        uint64_t srv0 = 0, cli0 = 0;
        for (int i = 0; i < MAX_PROCS; i++) {
            srv0 += O.sh->cpu_ns[i];
            cli0 += O.sh->cpu_ns[MAX_PROCS + i];
        }
        __atomic_store_n(&O.sh->t0[r], now_ns(), __ATOMIC_RELEASE);
        wait_for(&O.sh->servers_idle, (uint64_t)(O.servers * (r + 1)),
                 now_ns() + (uint64_t)O.limit_ms * 2000000ull, "the round");
        uint64_t got = 0, srv1 = 0, cli1 = 0;
        for (uint64_t j = 0; j < O.conns; j++)
            if (O.sh->lat[j])
                sorted[got++] = O.sh->lat[j];
        for (int i = 0; i < MAX_PROCS; i++) {
            srv1 += O.sh->cpu_ns[i];
            cli1 += O.sh->cpu_ns[MAX_PROCS + i];
        }
        qsort(sorted, got, sizeof(uint64_t), cmp_u64);
        double p50 = got ? sorted[got / 2] / 1e6 : 0, p99 = got ? sorted[(got * 99) / 100 - (got >= 100)] / 1e6 : 0;
        double mx = got ? sorted[got - 1] / 1e6 : 0;
        printf("round=%d conns=%llu got=%llu p50_ms=%.1f p99_ms=%.1f max_ms=%.1f "
               "server_cpu_us=%.2f client_cpu_us=%.2f\n",
               r, (unsigned long long)O.conns, (unsigned long long)got, p50, p99, mx,
               (double)(srv1 - srv0) / 1e3 / (double)O.conns,
               (double)(cli1 - cli0) / 1e3 / (double)O.conns);
        fflush(stdout);
        if (got != O.conns)
            rc = 1;
    }
    for (int i = 0; i < np; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = 1;
    }
    return rc;
}
