/*
 * fuzz_ws_msg.c — what a WebSocket client can send /v1/ws (stream/wsmsg.c):
 *   - the bytes as frames: wsmsg_scan, fed one byte at a time, must say
 *     "between frames" exactly when libwslay (the reader nudged uses) has
 *     just finished a frame, for as long as libwslay accepts the input;
 *   - the bytes as a text message: wsmsg_parse never crashes, an error
 *     always has its URN and a detail, an enable names at most the limit;
 *   - the bytes as a handshake key: wsmsg_accept never reads past it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "common/jsonw.h"
#include "common/util.h"
#include "stream/wsmsg.h"

struct feed {
    const uint8_t *p;
    size_t n;
    unsigned ended; /* frames libwslay finished */
};

static ssize_t recv_cb(wslay_event_context_ptr cx, uint8_t *buf, size_t len, int flags, void *u)
{
    struct feed *f = u;
    size_t k = len < f->n ? len : f->n;

    (void)flags;
    if (k == 0) {
        wslay_event_set_error(cx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(buf, f->p, k);
    f->p += k;
    f->n -= k;
    return (ssize_t)k;
}

static ssize_t send_cb(wslay_event_context_ptr cx, const uint8_t *d, size_t len, int flags,
                       void *u)
{
    (void)cx, (void)d, (void)flags, (void)u;
    return (ssize_t)len;
}

static void frame_end(wslay_event_context_ptr cx, void *u)
{
    (void)cx;
    ((struct feed *)u)->ended++;
}

static void frames(const uint8_t *data, size_t size)
{
    struct wslay_event_callbacks cb = {.recv_callback = recv_cb, .send_callback = send_cb,
                                       .on_frame_recv_end_callback = frame_end};
    struct feed f = {0};
    struct wsmsg_scan s = {0};
    wslay_event_context_ptr cx;
    unsigned scanned = 0;

    if (wslay_event_context_server_init(&cx, &cb, &f) != 0)
        return;
    wslay_event_config_set_max_recv_msg_length(cx, 1 << 16); /* as nudged: bounded */
    for (size_t i = 0; i < size; i++) {
        int was_mid = s.have != 0;
        f.p = data + i;
        f.n = 1;
        wsmsg_scan(&s, data + i, 1);
        if (s.bad)
            break;
        if (wslay_event_recv(cx) != 0 || !wslay_event_get_read_enabled(cx))
            break;
        /* Every frame has a head of 2 bytes or more: it ends when the scan leaves one. */
        if (was_mid && s.have == 0)
            scanned++;
        if (scanned != f.ended)
            abort();
    }
    wslay_event_context_free(cx);
}

static void message(const uint8_t *data, size_t size)
{
    struct wsmsg m;

    if (!util_utf8_valid(data, size))
        return;
    wsmsg_parse((const char *)data, size, 8, &m);
    if (m.type == WSMSG_ERROR) {
        struct jsonw w;
        size_t len;
        if (m.err_type == NULL || m.detail[0] == '\0')
            abort();
        jw_init(&w);
        wsmsg_request_error(&w, &m);
        free(jw_take(&w, &len));
    } else if (m.type == WSMSG_PUSH_ENABLE) {
        if (m.ntypes > 8 || (!m.all && m.ntypes == 0))
            abort();
    }
    wsmsg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char key[32], out[29];

    frames(data, size);
    message(data, size);
    if (size < sizeof(key)) {
        memcpy(key, data, size);
        key[size] = '\0';
        wsmsg_accept(key, out);
    }
    return 0;
}
