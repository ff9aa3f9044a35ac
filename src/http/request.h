/*
 * request.h — one HTTP/1.1 request being read, parsed by llhttp.
 *
 * A connection allocates a struct http_req when the first byte of a request
 * arrives and frees it once the request is answered or held, so an idle or
 * held connection carries no parser (llhttp_t alone is 96 bytes) and no
 * buffers. Only the parts nudge uses are kept: method, URL, a handful of
 * headers, the body. Everything is bounded: the request line and headers by
 * max_header_bytes (431), the body by max_body_bytes (413). Chunked request
 * bodies are refused (411): every client of nudge knows its body's length.
 */
#ifndef NUDGE_HTTP_REQUEST_H
#define NUDGE_HTTP_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

struct http_limits {
    uint32_t max_header_bytes;
    uint32_t max_body_bytes;
};

/* The headers nudge reads; all others are parsed and dropped. */
enum http_header {
    HDR_AUTHORIZATION,
    HDR_IF_NONE_MATCH,
    HDR_EXPECT,
    HDR_CONTENT_TYPE,
    HDR_AS_PROTOCOL_VERSION, /* MS-ASProtocolVersion (ActiveSync) */
    HDR_LAST_EVENT_ID,       /* an EventSource resuming (stream/sse.c) */
    HDR_COOKIE,              /* repeated ones are joined with "; " */
    HDR_ORIGIN,
    HDR_UPGRADE,             /* a WebSocket handshake (RFC 6455 4.1, stream/ws.c) */
    HDR_WS_KEY,              /* Sec-WebSocket-Key */
    HDR_WS_VERSION,          /* Sec-WebSocket-Version */
    HDR_WS_PROTOCOL,         /* Sec-WebSocket-Protocol */
    HDR_COUNT,
    HDR_OTHER = HDR_COUNT,
};

struct http_req {
    llhttp_t parser;
    const struct http_limits *lim;
    uint32_t head_bytes;   /* bytes fed before the headers ended */
    uint8_t headers_done;
    uint8_t complete;
    uint8_t keep_alive;
    uint8_t send_continue; /* client sent Expect: 100-continue; caller answers it once */
    uint8_t method;        /* llhttp_method_t */
    uint8_t cur_hdr;       /* enum http_header of the header being read */
    uint8_t field_len;
    uint8_t field_long;    /* field name longer than 'field': not one of ours */
    char field[24];
    int err_status;        /* set with HTTP_ERROR */
    char err_reason[128];
    char *url;
    uint32_t url_len;
    char *hdr[HDR_COUNT];  /* NUL-terminated values, or NULL when absent */
    uint32_t hdr_len[HDR_COUNT];
    char *body;            /* NUL-terminated (for convenience), or NULL when empty */
    uint32_t body_len;
    uint32_t body_cap;
    /* Set when complete: views into url (not NUL-terminated). */
    const char *path;
    size_t path_len;
    const char *query;     /* after '?', or NULL */
    size_t query_len;
    /*
     * Header lines (each ending in "\r\n") that every answer to this request
     * carries besides its handler's, set by whoever dispatches it (the
     * router's CORS lines); NULL: none. Not owned: it must outlive the
     * request (the router's are made once at start).
     */
    const char *answer_extra;
    /* With workers, the request's bytes as received, to hand it off (server/conn.c). */
    char *raw;
    uint32_t raw_len, raw_cap;
};

enum http_feed {
    HTTP_NEED_MORE = 0, /* all bytes used, request not complete yet */
    HTTP_DONE,          /* a whole request: see *used for where the next one starts */
    HTTP_ERROR,         /* err_status / err_reason tell why; the connection must close */
};

/* A new request reader; lim must outlive it. Returns NULL when out of memory. */
struct http_req *http_req_new(const struct http_limits *lim);
void http_req_free(struct http_req *r);

/*
 * Feeds data[0..len). Sets *used to the bytes consumed: all of them unless a
 * request completed (HTTP_DONE) in the middle, in which case the rest belongs
 * to the next pipelined request. Do not feed again after DONE or ERROR.
 */
enum http_feed http_req_feed(struct http_req *r, const char *data, size_t len, size_t *used);

/* Header value or NULL. */
static inline const char *http_req_header(const struct http_req *r, enum http_header h)
{
    return r->hdr[h];
}

/* "GET", "POST", ... */
const char *http_method_str(unsigned method);

#endif
