/*
 * tlsb.c: main() of the TLS library benchmarks (tlsb.h says what and why).
 * Usage: tls-LIB --cert C --key K [--tls 1.2|1.3] [--n N] [--seconds S]
 *                [--release-buffers] [--no-tickets] [--mode new|mem|hs|all]
 * Prints one "key=value ..." line per measurement, for bench/tls_libs/run.sh.
 */
#define _GNU_SOURCE
#include "tlsb.h"

#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Bytes malloc has handed out and not had back: arena plus mmapped chunks.
 * Freed memory (the clients') does not count, whatever the fragmentation. */
static size_t live_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static int pair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
        return -1;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    return 0;
}

/* One handshake, client and server in turn; adds the server's CPU to *srv_cpu.
 * Returns the server object (kept) or NULL; *cl gets the client. */
static void *handshake(const struct tlsb_lib *lib, int fds[2], void *session,
                       void **cl, double *srv_cpu)
{
    double t = now_cpu();
    void *s = lib->server_new(fds[0]);
    *srv_cpu += now_cpu() - t;
    void *c = lib->client_new(fds[1], session);
    int sd = 0, cd = 0;
    if (!s || !c)
        goto fail;
    for (int i = 0; i < 100 && !(sd && cd); i++) {
        if (!cd && (cd = lib->client_step(c)) < 0)
            goto fail;
        if (!sd) {
            t = now_cpu();
            sd = lib->server_step(s);
            *srv_cpu += now_cpu() - t;
            if (sd < 0)
                goto fail;
        }
    }
    if (!(sd && cd))
        goto fail;
    lib->client_pump(c);
    *cl = c;
    return s;
fail:
    fprintf(stderr, "%s: handshake failed\n", lib->name);
    exit(1);
}

static void close_pair(const struct tlsb_lib *lib, int fds[2], void *s, void *c)
{
    if (c)
        lib->client_free(c);
    if (s)
        lib->server_free(s);
    close(fds[0]);
    close(fds[1]);
}

static void run_mem(const struct tlsb_lib *lib, const struct tlsb_opts *o, int n)
{
    double cpu = 0;
    int (*fds)[2] = calloc(n, sizeof *fds);
    void **srv = calloc(n, sizeof *srv);
    /* Warm-up: the library's one-time allocations (tables, ticket keys,
     * caches of the context) happen before the first reading. */
    for (int i = 0; i < 50; i++) {
        int f[2];
        void *c;
        pair(f);
        void *s = handshake(lib, f, NULL, &c, &cpu);
        close_pair(lib, f, s, c);
    }
    size_t m0 = live_bytes();
    long r0 = rss_kib();
    for (int i = 0; i < n; i++) {
        void *c;
        if (pair(fds[i]) < 0) {
            perror("socketpair");
            exit(1);
        }
        srv[i] = handshake(lib, fds[i], NULL, &c, &cpu);
        lib->client_free(c);
        close(fds[i][1]);
    }
    size_t m1 = live_bytes();
    long r1 = rss_kib();
    printf("lib=%s tls=%s mode=mem release_buffers=%d no_tickets=%d n=%d "
           "bytes_per_conn=%.0f rss_bytes_per_conn=%.0f\n",
           lib->name, o->tls13 ? "1.3" : "1.2", o->release_buffers, o->no_tickets, n,
           (double)(m1 - m0) / n, (double)(r1 - r0) * 1024 / n);
    for (int i = 0; i < n; i++) {
        lib->server_free(srv[i]);
        close(fds[i][0]);
    }
    free(srv);
    free(fds);
}

/* The server object alone, before any handshake: what the library pays per
 * connection before the handshake's own state. */
static void run_new(const struct tlsb_lib *lib, const struct tlsb_opts *o, int n)
{
    int (*fds)[2] = calloc(n, sizeof *fds);
    void **srv = calloc(n, sizeof *srv);
    size_t m0 = live_bytes();
    for (int i = 0; i < n; i++) {
        pair(fds[i]);
        srv[i] = lib->server_new(fds[i][0]);
    }
    size_t m1 = live_bytes();
    printf("lib=%s tls=%s mode=new n=%d bytes_per_conn=%.0f\n", lib->name,
           o->tls13 ? "1.3" : "1.2", n, (double)(m1 - m0) / n);
    for (int i = 0; i < n; i++) {
        lib->server_free(srv[i]);
        close(fds[i][0]);
        close(fds[i][1]);
    }
    free(srv);
    free(fds);
}

static void run_hs(const struct tlsb_lib *lib, const struct tlsb_opts *o, double seconds,
                   int resume)
{
    double cpu = 0, t0;
    long count = 0, resumed = 0;
    void *session = NULL;
    if (resume) {
        int f[2];
        void *c;
        pair(f);
        void *s = handshake(lib, f, NULL, &c, &cpu);
        session = lib->client_session(c);
        close_pair(lib, f, s, c);
        if (!session) {
            printf("lib=%s tls=%s mode=hs resume=1 error=no-session\n", lib->name,
                   o->tls13 ? "1.3" : "1.2");
            return;
        }
    }
    cpu = 0;
    t0 = now_wall();
    while (now_wall() - t0 < seconds) {
        int f[2];
        void *c;
        pair(f);
        void *s = handshake(lib, f, session, &c, &cpu);
        count++;
        if (resume) {
            resumed += lib->server_resumed(s) ? 1 : 0;
            /* the newest ticket for the next one, as a returning client has */
            void *next = lib->client_session(c);
            if (next) {
                lib->session_free(session);
                session = next;
            }
        }
        close_pair(lib, f, s, c);
    }
    double wall = now_wall() - t0;
    printf("lib=%s tls=%s mode=hs resume=%d handshakes=%ld resumed=%ld server_cpu_s=%.3f "
           "server_hs_per_cpu_s=%.0f pairs_per_wall_s=%.0f\n",
           lib->name, o->tls13 ? "1.3" : "1.2", resume, count, resumed, cpu, count / cpu,
           count / wall);
    if (session)
        lib->session_free(session);
}

int tlsb_main(const struct tlsb_lib *lib, int argc, char **argv)
{
    struct tlsb_opts o = { .tls13 = 1 };
    int n = 2000;
    double seconds = 3;
    const char *mode = "all";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--cert") && v)
            o.cert = v, i++;
        else if (!strcmp(a, "--key") && v)
            o.key = v, i++;
        else if (!strcmp(a, "--tls") && v)
            o.tls13 = !strcmp(v, "1.3"), i++;
        else if (!strcmp(a, "--n") && v)
            n = atoi(v), i++;
        else if (!strcmp(a, "--seconds") && v)
            seconds = atof(v), i++;
        else if (!strcmp(a, "--mode") && v)
            mode = v, i++;
        else if (!strcmp(a, "--release-buffers"))
            o.release_buffers = 1;
        else if (!strcmp(a, "--no-tickets"))
            o.no_tickets = 1;
        else {
            fprintf(stderr, "usage: %s --cert C --key K [--tls 1.2|1.3] [--n N] [--seconds S] "
                    "[--release-buffers] [--no-tickets] [--mode new|mem|hs|all]\n", argv[0]);
            return 2;
        }
    }
    if (!o.cert || !o.key) {
        fprintf(stderr, "%s: --cert and --key are required\n", argv[0]);
        return 2;
    }
    if (lib->setup(&o) < 0) {
        fprintf(stderr, "%s: setup failed\n", lib->name);
        return 1;
    }
    if (!strcmp(mode, "new") || !strcmp(mode, "all"))
        run_new(lib, &o, n);
    if (!strcmp(mode, "mem") || !strcmp(mode, "all"))
        run_mem(lib, &o, n);
    if (!strcmp(mode, "hs") || !strcmp(mode, "all")) {
        run_hs(lib, &o, seconds, 0);
        run_hs(lib, &o, seconds, 1);
    }
    return 0;
}
