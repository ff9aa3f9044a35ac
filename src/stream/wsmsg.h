/*
 * wsmsg.h — the WebSocket wire of /v1/ws, without a connection: the
 * handshake's accept key (RFC 6455 4.2.2), the frames nudged sends, where
 * the client's frames end, and the client's JMAP messages (RFC 8887
 * 4.3: WebSocketPushEnable, WebSocketPushDisable, Request) and the
 * RequestError that answers a bad one. Pure functions, fuzzed
 * (fuzz/fuzz_ws_msg.c). Frame parsing itself (masking, fragments, control
 * frames, close codes) is libwslay's, in ws.c.
 */
#ifndef NUDGE_STREAM_WSMSG_H
#define NUDGE_STREAM_WSMSG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct jsonw;

/* Opcodes (RFC 6455 5.2). */
enum { WSMSG_TEXT = 0x1, WSMSG_CLOSE = 0x8, WSMSG_PING = 0x9 };

/*
 * The Sec-WebSocket-Accept value for client key 'key' into out (28
 * characters and a NUL). 0, or -1 when key is not the base64 of 16 bytes.
 */
int wsmsg_accept(const char *key, char out[29]);

/* Does the comma-separated token list 'list' name 'token' (case-insensitively)? */
int wsmsg_has_token(const char *list, const char *token);

/* The head of an unmasked frame (a server's) of 'len' payload bytes into out; its length. */
size_t wsmsg_frame_head(unsigned char out[10], unsigned opcode, uint64_t len);

/*
 * Where the client's frames end: fed every byte the client sends, it knows
 * whether the bytes so far end between frames, outside a fragmented
 * message. Then libwslay holds nothing (ws.c frees its context: 8.8 KB).
 */
struct wsmsg_scan {
    uint64_t left;   /* payload bytes until the frame ends */
    uint8_t have;    /* bytes of the frame's head seen */
    uint8_t b0, b1;  /* its first two bytes */
    uint8_t frag;    /* a fragmented data message is open */
    uint8_t bad;     /* a control frame RFC 6455 5.5 forbids (wsmsg_scan_bad): stopped there */
};

/*
 * Feeds p[0..n). A fragmented control frame, or one over 125 bytes, stops
 * the scan (s->bad): libwslay would close without a status code, and such a
 * peer is owed 1002 with the reason (ws.c sends it).
 */
void wsmsg_scan(struct wsmsg_scan *s, const unsigned char *p, size_t n);

/* Why s stopped (s->bad): the reason of the 1002 close. */
const char *wsmsg_scan_bad(const struct wsmsg_scan *s);

static inline int wsmsg_scan_idle(const struct wsmsg_scan *s)
{
    return s->have == 0 && !s->frag;
}

enum wsmsg_type {
    WSMSG_ERROR,        /* answered with a RequestError (err_type, detail) */
    WSMSG_PUSH_ENABLE,
    WSMSG_PUSH_DISABLE,
};

/* A client's message, read. */
struct wsmsg {
    enum wsmsg_type type;
    const char *err_type;   /* WSMSG_ERROR: the error's URN */
    char detail[200];       /* WSMSG_ERROR: what was wrong */
    const char *request_id; /* a Request's id, echoed as requestId; or NULL */
    int all;                /* dataTypes null or absent: every folder */
    const char **types;     /* the folders named (malloc'd array; strings in root) */
    size_t ntypes;
    const char *push_state; /* or NULL */
    json_t *root;
};

/*
 * Reads the text message buf[0..len) (valid UTF-8) into m: a push enable
 * naming at most max_types folders (checked as folder names), a push
 * disable, or an error to answer (notJSON, notRequest, limit, and
 * unknownCapability for a JMAP Request: nudge serves push only). Always
 * fills m; wsmsg_free it after.
 */
void wsmsg_parse(const char *buf, size_t len, size_t max_types, struct wsmsg *m);

void wsmsg_free(struct wsmsg *m);

/* Appends the RequestError object for m (WSMSG_ERROR) to w (RFC 8887 4.3.4). */
void wsmsg_request_error(struct jsonw *w, const struct wsmsg *m);

#endif
