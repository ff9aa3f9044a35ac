/*
 * test_net.c — the options set on a listener reach every connection it
 * accepts (nudged sets them nowhere else), and the
 * reaper's liveness check tells a live connection from one the peer closed.
 * Real loopback sockets, no mocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/config.h"
#include "net/sockopt.h"

/* A connected pair over 127.0.0.1: *client and *server (the accepted side); cfg: the listener's options. */
static void tcp_pair_with(int *client, int *server, const struct config *cfg)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    if (cfg)
        assert_int_equal(net_set_listener(l, cfg), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*client, (struct sockaddr *)&a, sizeof(a)), 0);
    *server = accept(l, NULL, NULL);
    assert_true(*server >= 0);
    close(l);
}

static void tcp_pair(int *client, int *server)
{
    tcp_pair_with(client, server, NULL);
}

static int get_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);
    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

static void test_keepalive_options(void **state)
{
    struct config c;
    int cl, sv;

    (void)state;
    config_defaults(&c);
    c.keepalive_idle = 7;
    c.keepalive_interval = 3;
    c.keepalive_count = 5;
    c.user_timeout = 0;
    tcp_pair_with(&cl, &sv, &c);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_NODELAY), 1);
    assert_int_equal(get_int(sv, SOL_SOCKET, SO_KEEPALIVE), 1);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_KEEPIDLE), 7);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_KEEPINTVL), 3);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_KEEPCNT), 5);
    /* Derived: idle + interval * count, in ms. */
    assert_int_equal(net_user_timeout(&c), 22);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_USER_TIMEOUT), 22000);
    close(cl);
    close(sv);
    c.user_timeout = 9;
    tcp_pair_with(&cl, &sv, &c);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_USER_TIMEOUT), 9000);
    /* And without them, the kernel's defaults: the test sees what the listener gave. */
    close(cl);
    close(sv);
    tcp_pair(&cl, &sv);
    assert_int_equal(get_int(sv, SOL_SOCKET, SO_KEEPALIVE), 0);
    assert_int_equal(get_int(sv, IPPROTO_TCP, TCP_NODELAY), 0);
    close(cl);
    close(sv);
}

static void test_alive_until_peer_closes(void **state)
{
    char why[96] = "";
    int cl, sv;

    (void)state;
    tcp_pair(&cl, &sv);
    assert_int_equal(net_tcp_alive(sv, 10000, 10000, why, sizeof(why)), 1);
    close(cl);
    /* The FIN arrives at once on loopback; allow the kernel a moment anyway. */
    for (int i = 0; i < 100 && net_tcp_alive(sv, 10000, 10000, why, sizeof(why)) == 1; i++)
        usleep(10000);
    assert_int_equal(net_tcp_alive(sv, 10000, 10000, why, sizeof(why)), 0);
    assert_string_equal(why, "socket state CLOSE_WAIT");
    close(sv);
    assert_true(net_tcp_alive(sv, 10000, 10000, why, sizeof(why)) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_options),
        cmocka_unit_test(test_alive_until_peer_closes),
    };
    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
