/*
 * ws.c — GET /v1/ws: JMAP push over a WebSocket (RFC 8887), a session of
 * its device. docs/streams.md.
 *
 *   GET /v1/ws?device=tab1            Upgrade: websocket
 *   Sec-WebSocket-Protocol: jmap      Sec-WebSocket-Version: 13
 *   -> 101, then the client sends
 *   {"@type":"WebSocketPushEnable","dataTypes":["INBOX"],"pushState":"1:INBOX=16"}
 *   <- {"@type":"StateChange","changed":{"alice":{"INBOX":"17"}},"pushState":"1:INBOX=17"}
 *
 * dataTypes are folder names (null: all of them, new ones too); pushState
 * is the state id an SSE stream uses as its event id (stream/state_id.h):
 * the states the client has. No history is kept, as for SSE.
 *
 * Frames from the client are libwslay's to read: masking, fragments,
 * control frames, ping/pong, the close handshake and its codes (1002 for
 * a protocol error, 1009 for a message over [stream] ws_max_message). Its
 * context costs 8.8 KB (two 4 KB buffers), ten held pings' worth, so a
 * WebSocket has one only while a client's message is half read: wsmsg_scan
 * tells where frames end, and the context is freed between messages. An
 * idle WebSocket costs what an SSE stream does. nudged frames what it
 * sends itself (unmasked, never fragmented): a frame head and the text.
 *
 * While libwslay runs (on_data), a write that fails closes the connection
 * and runs on_closed; the device's ws_dev is then only marked dead and
 * on_data frees it when libwslay has returned.
 */
#include "stream/ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "auth/principal.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "push/pingrate.h"
#include "session/heartbeat.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "stream/state_id.h"
#include "stream/watch.h"
#include "stream/wsmsg.h"

/* Close codes (RFC 6455 7.4.1). */
enum {
    CLOSE_NORMAL = 1000,
    CLOSE_GOING_AWAY = 1001,
    CLOSE_PROTOCOL = 1002,
    CLOSE_UNSUPPORTED = 1003,
    CLOSE_POLICY = 1008,
};

/* What a device with an open WebSocket has beside its record (its slot points to it). */
struct ws_dev {
    wslay_event_context_ptr cx; /* only while a client's message is half read */
    uint64_t soft_since;        /* ms the backlog went over soft_unsent; 0: it is not */
    struct wsmsg_scan scan;     /* where the client's frames end */
    uint16_t ping;              /* s between ping frames; 0: none */
    uint8_t enabled;            /* WebSocketPushEnable came (and no Disable after it) */
    uint8_t all;                /* dataTypes null: every folder, new ones too */
    uint8_t anonymous;          /* its device was made for it: removed at its end */
    uint8_t busy;               /* libwslay is running for it (on_data) */
    uint8_t dead;               /* the connection closed while busy: on_data frees it */
};

static struct ws_dev **dev_slot(const struct ws *w, const struct device *d)
{
    return shard_slot(d, w->dslot);
}

/* A WebSocket that only finishes its close: nothing holds it, nothing to tell. */
static const struct conn_holder closing_holder = {.name = "ws"};

/* ---- sending ------------------------------------------------------------ */

/* Sends one frame. 0, or -1 when the connection closed (its closed op ran). */
static int send_frame(struct conn *c, unsigned opcode, const char *payload, size_t len)
{
    unsigned char head[10];
    size_t hl = wsmsg_frame_head(head, opcode, len);
    char *frame;
    int rc;

    if (len < 512) {
        char small[522];
        memcpy(small, head, hl);
        memcpy(small + hl, payload, len);
        return conn_stream_send(c, small, hl + len);
    }
    frame = xmalloc(hl + len);
    memcpy(frame, head, hl);
    memcpy(frame + hl, payload, len);
    rc = conn_stream_send(c, frame, hl + len);
    free(frame);
    return rc;
}

/* Sends a text frame holding w's JSON (w is taken). 0, or -1: closed. */
static int send_json(struct conn *c, struct jsonw *w)
{
    size_t len;
    char *body = jw_take(w, &len);
    int rc = send_frame(c, WSMSG_TEXT, body, len);

    free(body);
    return rc;
}

static int send_close(struct conn *c, unsigned code, const char *reason)
{
    char p[125];
    size_t n = strlen(reason);

    if (n > sizeof(p) - 2)
        n = sizeof(p) - 2;
    p[0] = (char)(code >> 8);
    p[1] = (char)code;
    memcpy(p + 2, reason, n);
    return send_frame(c, WSMSG_CLOSE, p, n + 2);
}

/* Closes c when its client does not read (watch_too_slow). 1: closed. */
static int too_slow(struct ws *w, struct conn *c, struct device *d)
{
    return watch_too_slow(w->cfg, w->metrics, c, d, &(*dev_slot(w, d))->soft_since);
}

/* The next ping frame falls 'ping' seconds after the last frame sent. */
static void rearm(struct ws *w, struct conn *c, struct device *d)
{
    struct ws_dev *x = *dev_slot(w, d);

    conn_set_deadline(c, x->ping ? util_now_ms() + (uint64_t)x->ping * 1000 : 0);
}

/*
 * Sends a StateChange naming d's folders that moved since the client last
 * heard, with the pushState of what it has then. 1: sent, 0: nothing to
 * send, -1: the connection closed (d may be gone).
 */
static int send_changes(struct ws *w, struct conn *c, struct device *d)
{
    struct jsonw j, id;
    size_t len;
    char *text;

    if (watch_changes(w->store, d, &j, "") == 0)
        return 0;
    jw_init(&id);
    watch_state_id(d, &id);
    text = jw_take(&id, &len);
    jw_raw(&j, ",\"pushState\":", 13);
    jw_strn(&j, text, len);
    free(text);
    jw_raw(&j, "}", 1);
    w->metrics->stream_events++;
    if (send_json(c, &j) < 0 || too_slow(w, c, d))
        return -1;
    rearm(w, c, d);
    return 1;
}

/* ---- the end of a WebSocket --------------------------------------------- */

static void free_dev(struct ws_dev *x)
{
    if (x->cx)
        wslay_event_context_free(x->cx);
    free(x);
}

/*
 * Lets go of d's WebSocket: its session, and its ws_dev (kept for on_data
 * when libwslay is running: marked dead); the device too when it was made
 * for the WebSocket.
 */
static void forget(struct ws *w, struct conn *c, struct device *d)
{
    struct ws_dev *x = *dev_slot(w, d);
    int anonymous = x && x->anonymous;

    if (session_of(w->sessions, d)->held == c) {
        session_release(w->sessions, d);
        w->metrics->ws_held--;
    }
    if (x && x->busy)
        x->dead = 1;
    else if (x)
        free_dev(x);
    *dev_slot(w, d) = NULL;
    if (anonymous && !session_present(w->sessions, d)) {
        hb_forget(w->hb, d);
        shard_device_remove(w->shard, d);
    }
}

/* Ends d's WebSocket on c: forgotten first, then a close frame, then the TCP close. */
static void finish(struct ws *w, struct conn *c, struct device *d, unsigned code,
                   const char *reason)
{
    forget(w, c, d);
    conn_hold(c, &closing_holder, NULL, 0);
    if (send_close(c, code, reason) == 0)
        conn_stream_end(c);
}

static void on_closed(void *ctx, struct conn *c, void *arg, enum conn_why why, const char *text)
{
    struct ws *w = ctx;
    struct device *d = arg;

    if (!conn_stopping(c) && session_of(w->sessions, d)->held == c)
        session_stream_closed(w->sessions, d, why, text);
    forget(w, c, d);
}

static void on_shutdown(void *ctx, struct conn *c, void *arg)
{
    finish(ctx, c, arg, CLOSE_GOING_AWAY, "nudged is restarting: reconnect with your pushState");
}

static void on_superseded(void *ctx, struct conn *c, void *arg)
{
    struct device *d = arg;
    char q1[300], q2[300];

    LOG(LOG_INFO, ping_superseded, "user=%s device=%s ws=1", log_q(q1, sizeof(q1), d->user->id),
        log_q(q2, sizeof(q2), d->id));
    finish(ctx, c, d, CLOSE_NORMAL, "superseded by a newer session of this device");
}

/* An admin ended the session: a 1008 the client can show, then the close. */
static void on_ended(void *ctx, struct conn *c, void *arg)
{
    struct ws *w = ctx;
    struct device *d = arg;

    session_stream_closed(w->sessions, d, CONN_WHY_ENDED_BY_ADMIN, conn_why_text[CONN_WHY_ENDED_BY_ADMIN]);
    finish(w, c, d, CLOSE_POLICY, "ended by an admin");
}

/* The ping interval passed with nothing sent: a ping frame keeps the path open. */
static void on_ping_due(void *ctx, struct conn *c, void *arg)
{
    struct ws *w = ctx;
    struct device *d = arg;

    if (too_slow(w, c, d))
        return;
    if (send_frame(c, WSMSG_PING, "", 0) < 0)
        return;
    rearm(w, c, d);
}

/* A folder of the user changed (push/ping.c's wake). */
static void on_changed(void *ctx, struct conn *c, void *arg, const struct store_event *e, size_t n)
{
    struct ws *w = ctx;
    struct device *d = arg;
    struct ws_dev *x = *dev_slot(w, d);

    (void)e;
    (void)n;
    if (x == NULL || !x->enabled)
        return;
    if (x->all)
        watch_new_folders(w->store, d, w->cfg->ping_max_folders);
    send_changes(w, c, d);
}

/* ---- the client's messages ---------------------------------------------- */

/* WebSocketPushEnable: what to watch, from what the client has. 0, or -1: closed. */
static int push_enable(struct ws *w, struct conn *c, struct device *d, const struct wsmsg *m)
{
    struct ws_dev *x = *dev_slot(w, d);
    struct watch_list l = {.max = w->cfg->ping_max_folders};
    int rc = 0;

    for (size_t i = 0; i < m->ntypes; i++)
        watch_list_add(&l, m->types[i], STATE_ID_UNKNOWN);
    if (m->all)
        store_list(w->store, d->user->id, watch_list_on_folder, &l);
    if (m->push_state) {
        /* Everything since that state, or everything when it cannot be read. */
        state_id_read(m->push_state, l.f, l.n);
    } else {
        /* No pushState: the client has what is current; it hears of what comes next. */
        for (size_t i = 0; i < l.n; i++)
            l.f[i].state = store_get(w->store, d->user->id, l.f[i].name);
    }
    shard_set_folders(d, l.f, l.n);
    free(l.f);
    x->enabled = 1;
    x->all = (uint8_t)m->all;
    if (send_changes(w, c, d) < 0)
        rc = -1;
    return rc;
}

/* A whole text message from the client. */
static void on_text(struct ws *w, const uint8_t *msg, size_t len)
{
    struct conn *c = w->cur_c;
    struct device *d = w->cur_d;
    struct ws_dev *x = w->cur_x;
    struct wsmsg m;

    /* Text is UTF-8 here: libwslay closes 1007 before a message that is not reaches us. */
    w->metrics->ws_messages++;
    wsmsg_parse((const char *)msg, len, w->cfg->ping_max_folders, &m);
    switch (m.type) {
    case WSMSG_PUSH_ENABLE:
        push_enable(w, c, d, &m);
        break;
    case WSMSG_PUSH_DISABLE:
        x->enabled = 0;
        break;
    case WSMSG_ERROR: {
        struct jsonw j;
        w->metrics->ws_request_errors++;
        jw_init(&j);
        wsmsg_request_error(&j, &m);
        send_json(c, &j);
        break;
    }
    }
    wsmsg_free(&m);
}

/* ---- libwslay's callbacks ------------------------------------------------ */

static ssize_t wslay_recv(wslay_event_context_ptr cx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    struct ws *w = user;
    size_t n = len < w->in_len ? len : w->in_len;

    (void)flags;
    if (n == 0 || w->cur_x->dead) {
        wslay_event_set_error(cx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(buf, w->in, n);
    w->in += n;
    w->in_len -= n;
    return (ssize_t)n;
}

static ssize_t wslay_send(wslay_event_context_ptr cx, const uint8_t *data, size_t len, int flags,
                          void *user)
{
    struct ws *w = user;

    (void)flags;
    if (w->cur_x->dead || conn_stream_send(w->cur_c, (const char *)data, len) < 0) {
        wslay_event_set_error(cx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void wslay_msg(wslay_event_context_ptr cx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    struct ws *w = user;
    static const char binary[] = "binary messages are not JMAP: send text";

    if (w->cur_x->dead)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME)
        on_text(w, arg->msg, arg->msg_length);
    else if (arg->opcode == WSLAY_BINARY_FRAME)
        wslay_event_queue_close(cx, CLOSE_UNSUPPORTED, (const uint8_t *)binary,
                                sizeof(binary) - 1);
    /* Pings are answered and closes echoed by libwslay itself; pongs need nothing. */
}

static const struct wslay_event_callbacks wslay_cbs = {
    .recv_callback = wslay_recv,
    .send_callback = wslay_send,
    .on_msg_recv_callback = wslay_msg,
};

/* Bytes from the client: to libwslay, with a context made for them if none is open. */
static void on_data(void *ctx, struct conn *c, void *arg, const char *buf, size_t len)
{
    struct ws *w = ctx;
    struct device *d = arg;
    struct ws_dev *x = *dev_slot(w, d);
    int rc;

    if (x == NULL)
        return;
    if (x->cx == NULL) {
        if (wslay_event_context_server_init(&x->cx, &wslay_cbs, w) != 0) {
            x->cx = NULL;
            conn_close(c, CONN_WHY_NO_MEMORY, NULL);
            return;
        }
        wslay_event_config_set_max_recv_msg_length(x->cx, w->cfg->stream_ws_max_message);
    }
    wsmsg_scan(&x->scan, (const unsigned char *)buf, len);
    if (x->scan.bad) {
        char why[160];
        snprintf(why, sizeof(why), "websocket close %u", CLOSE_PROTOCOL);
        session_stream_closed(w->sessions, d, CONN_WHY_EOF, why);
        finish(w, c, d, CLOSE_PROTOCOL, wsmsg_scan_bad(&x->scan));
        return;
    }
    w->in = (const unsigned char *)buf;
    w->in_len = len;
    w->cur_c = c;
    w->cur_d = d;
    w->cur_x = x;
    x->busy = 1;
    rc = wslay_event_recv(x->cx);
    if (!x->dead && wslay_event_want_write(x->cx))
        rc |= wslay_event_send(x->cx);
    x->busy = 0;
    w->cur_x = NULL;
    if (x->dead) {
        free_dev(x);
        return;
    }
    if (wslay_event_get_close_sent(x->cx)) {
        /* A close handshake (the client's, or ours for a bad frame): the TCP close follows. */
        char why[48];
        snprintf(why, sizeof(why), "websocket close %u",
                 wslay_event_get_close_received(x->cx)
                     ? (unsigned)wslay_event_get_status_code_received(x->cx)
                     : (unsigned)wslay_event_get_status_code_sent(x->cx));
        session_stream_closed(w->sessions, d, CONN_WHY_EOF, why);
        forget(w, c, d);
        conn_hold(c, &closing_holder, NULL, 0);
        conn_stream_end(c);
        return;
    }
    if (rc != 0) {
        conn_close(c, CONN_WHY_NO_MEMORY, NULL);
        return;
    }
    /* Between messages libwslay holds nothing: its 8.8 KB go back. */
    if (wsmsg_scan_idle(&x->scan) && !wslay_event_want_write(x->cx)) {
        wslay_event_context_free(x->cx);
        x->cx = NULL;
    }
}

/* ---- setup -------------------------------------------------------------- */

void ws_init(struct ws *w, const struct config *cfg, struct store *store, struct shard *sh,
             struct metrics *metrics, struct sessions *sessions, struct heartbeat *hb)
{
    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->store = store;
    w->shard = sh;
    w->metrics = metrics;
    w->sessions = sessions;
    w->hb = hb;
    w->seed = util_now_ms() ^ (uint64_t)(uintptr_t)w;
    w->rate = NULL;
    w->dslot = shard_device_slot(sh, sizeof(struct ws_dev *));
    w->holder = (struct conn_holder){
        .expired = on_ping_due,
        .closed = on_closed,
        .shutdown = on_shutdown,
        .changed = on_changed,
        .superseded = on_superseded,
        .ended = on_ended,
        .data = on_data,
        .ctx = w,
        .name = "ws",
    };
}

static void drop_dev(void *x)
{
    free_dev(x);
}

void ws_free(struct ws *w)
{
    shard_drop_device_slots(w->shard, w->dslot, drop_dev);
}

/* ---- the handshake (RFC 6455 4.2) ---------------------------------------- */

/* Is r a WebSocket handshake nudge can answer? 0, or -1 with the error in e. */
static int check_handshake(const struct http_req *r, struct http_error *e)
{
    const char *up = http_req_header(r, HDR_UPGRADE), *ver = http_req_header(r, HDR_WS_VERSION);
    const char *proto = http_req_header(r, HDR_WS_PROTOCOL);

    if (up == NULL || !wsmsg_has_token(up, "websocket") || !r->parser.upgrade) {
        http_error_set(e, 426, "upgrade-required",
                       "/v1/ws is a WebSocket: send Upgrade: websocket and Connection: Upgrade");
        http_error_header(e, "Upgrade: websocket");
        http_error_header(e, "Connection: Upgrade");
        return -1;
    }
    if (ver == NULL || strcmp(ver, "13") != 0) {
        http_error_set(e, 426, "upgrade-required",
                       "Sec-WebSocket-Version must be 13 (RFC 6455)");
        http_error_header(e, "Sec-WebSocket-Version: 13");
        return -1;
    }
    if (http_req_header(r, HDR_WS_KEY) == NULL)
        return http_error_bad(e, "Sec-WebSocket-Key is missing");
    if (proto == NULL || !wsmsg_has_token(proto, "jmap"))
        return http_error_bad(e, "Sec-WebSocket-Protocol must offer jmap (RFC 8887)");
    return 0;
}

void ws_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct ws *w = arg;
    const struct config *cfg = w->cfg;
    char device[DEVICE_ID_MAX * 3 + 1], accept[29], head[256];
    struct http_error e;
    struct ws_dev *x;
    struct user *u;
    struct device *d;
    int created = 0, n;
    unsigned wait;

    if (strcmp(cfg->stream_enabled, "no") == 0) {
        http_error_set(&e, 403, "forbidden", "event streams are turned off here ([stream] enabled = no)");
        goto refuse;
    }
    if (conn_stopping(c)) {
        http_error_set(&e, 503, "unavailable", "nudged is restarting: come back in a few seconds");
        http_error_header(&e, "Retry-After: %u", cfg->shutdown_retry_after);
        goto refuse;
    }
    if (check_handshake(r, &e) < 0)
        goto refuse;
    if (wsmsg_accept(http_req_header(r, HDR_WS_KEY), accept) < 0) {
        http_error_bad(&e, "Sec-WebSocket-Key must be the base64 of 16 bytes");
        goto refuse;
    }
    if (watch_device_param(r, who, device, sizeof(device), &e) < 0)
        goto refuse;
    u = shard_user(w->shard, who->subject, 1);
    if (device[0]) {
        d = shard_device(w->shard, u, device, 0);
        /* Over [ping] max_per_minute: the handshake is refused 429 with Retry-After. */
        if (d && w->rate && (wait = pingrate_count(w->rate, d, "ws")) > 0) {
            http_error_set(&e, 429, "ping-rate-limited",
                           "this device opened more than %u connections in a minute; wait for "
                           "Retry-After", w->rate->max);
            http_error_num(&e, "retry_after", wait);
            http_error_header(&e, "Retry-After: %u", wait);
            goto refuse;
        }
        if (d == NULL) {
            d = shard_device(w->shard, u, device, 1);
            created = 1;
        }
    } else {
        d = watch_anonymous_device(w->shard, u, w->seed, &w->draws);
        created = 1;
    }
    /* The device's older session ends in its own words (a ping "superseded", a stream ends). */
    session_supersede(w->sessions, d);
    if (session_admit(w->sessions, u, d, &e) < 0) {
        if (created) {
            hb_forget(w->hb, d);
            shard_device_remove(w->shard, d);
        }
        goto refuse;
    }
    x = xcalloc(1, sizeof(*x));
    x->ping = (uint16_t)watch_default_ping(cfg);
    x->anonymous = (uint8_t)(device[0] == '\0');
    *dev_slot(w, d) = x;
    session_of(w->sessions, d)->last_request = session_of(w->sessions, d)->held_since =
        util_now_ms();
    session_hold(w->sessions, d, c);
    w->metrics->ws_held++;
    w->metrics->ws_opened++;
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: jmap\r\n\r\n",
                 accept);
    conn_upgrade(c, &w->holder, d, x->ping ? util_now_ms() + (uint64_t)x->ping * 1000 : 0);
    conn_stream_send(c, head, (size_t)n); /* a failure closed it: its closed op forgot it */
    return;
refuse:
    conn_respond_error(c, &e);
}
