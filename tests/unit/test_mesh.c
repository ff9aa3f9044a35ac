/*
 * test_mesh.c — the mesh as a transport, two workers in one process on a
 * real SOCK_SEQPACKET pair and one libuv loop: a registered message type
 * reaches its handler with its payload, a call gets its reply (in parts
 * too), messages of one loop turn leave as one batch and arrive in order, a
 * gather counts calls and the caller's own holds and ends once, and without
 * a mesh a gather still ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "common/metrics.h"
#include "worker/mesh.h"
#include "worker/worker.h"

#define MSG_ECHO (MESH_TYPE_FIRST + 1)
#define MSG_NOTE (MESH_TYPE_FIRST + 2)

static uv_loop_t loop;
static struct worker_ctx wk[2];
static struct metrics metrics[2];
static struct mesh *m[2];

/* What the handlers and callbacks saw. */
static char notes[256];
static size_t notes_len;
static int replies, parts, done, last_status;
static char reply[64];

static int setup(void **state)
{
    int sv[2];
    char err[128];

    (void)state;
    log_init(NULL, LOG_ERROR);
    uv_loop_init(&loop);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    memset(wk, 0, sizeof(wk));
    memset(metrics, 0, sizeof(metrics));
    for (unsigned i = 0; i < 2; i++) {
        wk[i].index = i;
        wk[i].count = 2;
        for (unsigned j = 0; j < WORKERS_MAX; j++)
            wk[i].mesh_fd[j] = -1;
    }
    wk[0].mesh_fd[1] = sv[0];
    wk[1].mesh_fd[0] = sv[1];
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(mesh_init(&m[i], &loop, &wk[i], 4096, &metrics[i], err, sizeof(err)), 0);
    notes_len = 0;
    replies = parts = done = 0;
    last_status = 99;
    reply[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (unsigned i = 0; i < 2; i++)
        mesh_stop(m[i]);
    uv_run(&loop, UV_RUN_NOWAIT);
    for (unsigned i = 0; i < 2; i++)
        mesh_free(m[i]);
    close(wk[0].mesh_fd[1]);
    close(wk[1].mesh_fd[0]);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* Runs the loop until 'cond' holds (or a bound of turns passes). */
#define RUN_UNTIL(cond)                                                  \
    do {                                                                 \
        for (int turn_ = 0; turn_ < 1000 && !(cond); turn_++)            \
            uv_run(&loop, UV_RUN_NOWAIT);                                \
    } while (0)

/* MSG_NOTE: appends the payload to notes. */
static void on_note(void *arg, unsigned from, uint32_t id, const char *p, size_t len, int fd)
{
    (void)arg;
    assert_int_equal(from, 0);
    assert_int_equal(id, 0);
    assert_int_equal(fd, -1);
    memcpy(notes + notes_len, p, len);
    notes_len += len;
}

/* MSG_ECHO: replies with the payload, in two parts when it starts with '2'. */
static void on_echo(void *arg, unsigned from, uint32_t id, const char *p, size_t len, int fd)
{
    struct mesh *self = arg;
    struct iovec iov = {.iov_base = (void *)p, .iov_len = len};

    (void)fd;
    if (len > 0 && p[0] == '2')
        mesh_reply(self, from, id, 1, &iov, 1);
    mesh_reply(self, from, id, 0, &iov, 1);
}

static void on_reply(void *arg, unsigned from, const char *p, size_t len, int status)
{
    (void)arg;
    assert_int_equal(from, 1);
    last_status = status;
    if (status == MESH_MORE) {
        parts++;
        return;
    }
    replies++;
    if (status == 0) {
        memcpy(reply, p, len);
        reply[len] = '\0';
    }
}

static void test_messages_arrive_in_order_as_one_batch(void **state)
{
    struct iovec a = {.iov_base = "one,", .iov_len = 4}, b = {.iov_base = "two,", .iov_len = 4},
                 c = {.iov_base = "three", .iov_len = 5};

    (void)state;
    mesh_on(m[1], MSG_NOTE, on_note, NULL);
    assert_int_equal(mesh_send(m[0], 1, MSG_NOTE, 0, &a, 1, -1), 0);
    assert_int_equal(mesh_send(m[0], 1, MSG_NOTE, 0, &b, 1, -1), 0);
    assert_int_equal(mesh_send(m[0], 1, MSG_NOTE, 0, &c, 1, -1), 0);
    assert_int_equal(notes_len, 0); /* nothing leaves before the loop turn ends */
    RUN_UNTIL(notes_len == 13);
    assert_int_equal(notes_len, 13);
    assert_memory_equal(notes, "one,two,three", 13);
    assert_int_equal(metrics[0].mesh_batches, 1);
    assert_int_equal(metrics[0].mesh_batched, 3);
}

static void test_call_gets_its_reply_in_parts(void **state)
{
    struct iovec one = {.iov_base = "1hello", .iov_len = 6},
                 two = {.iov_base = "2parts", .iov_len = 6};

    (void)state;
    mesh_on(m[1], MSG_ECHO, on_echo, m[1]);
    assert_int_equal(mesh_call(m[0], 1, MSG_ECHO, &one, 1, on_reply, NULL), 0);
    RUN_UNTIL(replies == 1);
    assert_int_equal(replies, 1);
    assert_int_equal(last_status, 0);
    assert_string_equal(reply, "1hello");
    assert_int_equal(mesh_call(m[0], 1, MSG_ECHO, &two, 1, on_reply, NULL), 0);
    RUN_UNTIL(replies == 2);
    assert_int_equal(parts, 1);
    assert_string_equal(reply, "2parts");
    /* A message type nobody registered is dropped, and the mesh goes on. */
    assert_int_equal(mesh_send(m[0], 1, MESH_TYPE_FIRST + 9, 0, &one, 1, -1), 0);
    assert_int_equal(mesh_call(m[0], 1, MSG_ECHO, &one, 1, on_reply, NULL), 0);
    RUN_UNTIL(replies == 3);
    assert_int_equal(replies, 3);
}

static void on_gather_part(void *arg, void *call_arg, unsigned from, const char *p, size_t len,
                           int status)
{
    (void)arg;
    (void)from;
    (void)p;
    (void)len;
    assert_string_equal(call_arg, "mine");
    if (status == 0)
        replies++;
    else if (status == MESH_MORE)
        parts++;
}

static void on_gather_done(void *arg)
{
    int *flag = arg;

    *flag += 1;
}

static void test_gather_ends_once_after_calls_and_holds(void **state)
{
    struct iovec two = {.iov_base = "2x", .iov_len = 2};
    struct mesh_gather *g;

    (void)state;
    mesh_on(m[1], MSG_ECHO, on_echo, m[1]);
    g = mesh_gather_new(m[0], on_gather_part, on_gather_done, &done);
    assert_int_equal(mesh_gather_call(g, 1, MSG_ECHO, &two, 1, "mine"), 0);
    mesh_gather_hold(g); /* the caller's own work, say a local commit */
    assert_int_equal(mesh_gather_call(g, 0, MSG_ECHO, &two, 1, "mine") < 0, 1); /* no peer 0 */
    mesh_gather_release(g); /* the builder's hold: calls are out */
    RUN_UNTIL(replies == 1);
    assert_int_equal(replies, 1);
    assert_int_equal(parts, 1);
    assert_int_equal(done, 0); /* the caller's own hold is still on */
    mesh_gather_release(g);
    assert_int_equal(done, 1);

    /* Without workers there is no mesh: a gather still counts and ends. */
    g = mesh_gather_new(NULL, on_gather_part, on_gather_done, &done);
    mesh_gather_all(g, MSG_ECHO, NULL, 0);
    assert_int_equal(mesh_gather_call(g, 1, MSG_ECHO, NULL, 0, "mine") < 0, 1);
    mesh_gather_release(g);
    assert_int_equal(done, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_messages_arrive_in_order_as_one_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_gets_its_reply_in_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gather_ends_once_after_calls_and_holds, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("mesh", tests, NULL, NULL);
}
