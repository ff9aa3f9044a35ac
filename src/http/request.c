/*
 * request.c — llhttp glue: collects a request's URL, the headers listed in
 * request.h and its body, enforcing the limits as bytes arrive.
 *
 * The parser is paused in on_message_complete so that http_req_feed returns
 * right after one request, leaving pipelined bytes to the caller: the caller
 * answers requests strictly one at a time, in order, and a held ping keeps
 * the requests behind it waiting (HTTP/1.1 answers in request order).
 */
#include "http/request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const header_names[HDR_COUNT] = {
    [HDR_AUTHORIZATION] = "authorization",
    [HDR_IF_NONE_MATCH] = "if-none-match",
    [HDR_EXPECT] = "expect",
    [HDR_CONTENT_TYPE] = "content-type",
    [HDR_AS_PROTOCOL_VERSION] = "ms-asprotocolversion",
    [HDR_LAST_EVENT_ID] = "last-event-id",
    [HDR_COOKIE] = "cookie",
    [HDR_ORIGIN] = "origin",
    [HDR_UPGRADE] = "upgrade",
    [HDR_WS_KEY] = "sec-websocket-key",
    [HDR_WS_VERSION] = "sec-websocket-version",
    [HDR_WS_PROTOCOL] = "sec-websocket-protocol",
};

static struct http_req *req_of(llhttp_t *p)
{
    return (struct http_req *)p->data;
}

/* The sentences of a 505: what is spoken here, and what to do. */
#define HTTP_ONLY_H1 "HTTP version not supported: only HTTP/1.0 and HTTP/1.1 are spoken here"
#define HTTP_NO_H2 "HTTP/2 is not spoken here: use HTTP/1.1 (nudged speaks HTTP/1.0 and 1.1 only)"

static int fail(struct http_req *r, int status, const char *reason)
{
    if (r->err_status == 0) {
        r->err_status = status;
        snprintf(r->err_reason, sizeof(r->err_reason), "%s", reason);
    }
    return HPE_USER;
}

/* Appends to a growing buffer, NUL-terminated, bounded by 'max'. */
static int append(char **buf, uint32_t *len, const char *at, size_t n, size_t max)
{
    char *p;

    if (*len + n > max)
        return -1;
    p = realloc(*buf, *len + n + 1);
    if (p == NULL)
        return -1;
    memcpy(p + *len, at, n);
    *len += (uint32_t)n;
    p[*len] = '\0';
    *buf = p;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);

    if (append(&r->url, &r->url_len, at, n, r->lim->max_header_bytes) < 0)
        return fail(r, 431, "request line too long");
    return 0;
}

/* RFC 9110 5.6.2 tchar: what a header name may contain. */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);

    /* llhttp lets a space inside a name through; a name is a token, nothing else. */
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)at[i]))
            return fail(r, 400, "malformed request: invalid character in a header name");

    if (r->field_len + n >= sizeof(r->field)) {
        r->field_long = 1;
        return 0;
    }
    memcpy(r->field + r->field_len, at, n);
    r->field_len = (uint8_t)(r->field_len + n);
    return 0;
}

/* A header that may repeat: its values are joined into one. */
static int joined(unsigned h)
{
    return h == HDR_IF_NONE_MATCH || h == HDR_COOKIE || h == HDR_WS_PROTOCOL;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct http_req *r = req_of(p);

    r->cur_hdr = HDR_OTHER;
    if (!r->field_long) {
        r->field[r->field_len] = '\0';
        for (int i = 0; i < HDR_COUNT; i++) {
            if (strcasecmp(r->field, header_names[i]) == 0) {
                r->cur_hdr = (uint8_t)i;
                break;
            }
        }
    }
    r->field_len = 0;
    r->field_long = 0;
    if (r->cur_hdr != HDR_OTHER && r->hdr[r->cur_hdr] != NULL && !joined(r->cur_hdr))
        return fail(r, 400, "duplicate header");
    if (r->cur_hdr != HDR_OTHER && joined(r->cur_hdr) && r->hdr[r->cur_hdr] != NULL) {
        /*
         * Repeated If-None-Match and Sec-WebSocket-Protocol headers are one
         * comma-separated list (RFC 9110 5.3, RFC 6455 11.3.4); repeated
         * Cookie headers one "; "-separated list (RFC 6265 5.4).
         */
        const char *sep = r->cur_hdr == HDR_COOKIE ? "; " : ",";
        if (append(&r->hdr[r->cur_hdr], &r->hdr_len[r->cur_hdr], sep, strlen(sep),
                   r->lim->max_header_bytes) < 0)
            return fail(r, 431, "headers too large");
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);

    if (r->cur_hdr == HDR_OTHER)
        return 0;
    if (append(&r->hdr[r->cur_hdr], &r->hdr_len[r->cur_hdr], at, n, r->lim->max_header_bytes) < 0)
        return fail(r, 431, "headers too large");
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct http_req *r = req_of(p);

    /* An empty value leaves no callback: make sure a present header is non-NULL. */
    if (r->cur_hdr != HDR_OTHER && r->hdr[r->cur_hdr] == NULL &&
        append(&r->hdr[r->cur_hdr], &r->hdr_len[r->cur_hdr], "", 0, 1) < 0)
        return fail(r, 431, "headers too large");
    r->cur_hdr = HDR_OTHER;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct http_req *r = req_of(p);

    r->headers_done = 1;
    r->method = (uint8_t)p->method;
    if (p->http_major == 0) {
        /* No version on the request line: llhttp calls it HTTP/0.9, a malformed request. */
        fail(r, 400, "malformed request: only HTTP/1.0 and HTTP/1.1 are spoken here");
        return -1;
    }
    if (p->http_major != 1 || p->http_minor > 1) {
        /* A well-formed request in a version we do not speak: RFC 9110 15.6.6. */
        fail(r, 505, p->http_major == 2 ? HTTP_NO_H2 : HTTP_ONLY_H1);
        return -1;
    }
    if (p->flags & (F_CHUNKED | F_TRANSFER_ENCODING)) {
        fail(r, 411, "chunked request bodies are not supported: send Content-Length");
        return -1;
    }
    if (p->content_length > r->lim->max_body_bytes && (p->flags & F_CONTENT_LENGTH)) {
        char reason[96];
        snprintf(reason, sizeof(reason), "body of %llu bytes is over the limit of %u",
                 (unsigned long long)p->content_length, r->lim->max_body_bytes);
        fail(r, 413, reason);
        return -1;
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
        r->body_cap = (uint32_t)p->content_length;
        r->body = malloc(r->body_cap + 1);
        if (r->body == NULL) {
            fail(r, 503, "out of memory");
            return -1;
        }
        r->body[0] = '\0';
        if (r->hdr[HDR_EXPECT] != NULL && strcasecmp(r->hdr[HDR_EXPECT], "100-continue") == 0)
            r->send_continue = 1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);

    /* llhttp never passes more than Content-Length bytes; check anyway. */
    if (r->body == NULL || r->body_len + n > r->body_cap)
        return fail(r, 400, "body longer than Content-Length");
    memcpy(r->body + r->body_len, at, n);
    r->body_len += (uint32_t)n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct http_req *r = req_of(p);

    r->complete = 1;
    r->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

struct http_req *http_req_new(const struct http_limits *lim)
{
    struct http_req *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->lim = lim;
    r->cur_hdr = HDR_OTHER;
    llhttp_init(&r->parser, HTTP_REQUEST, &settings);
    r->parser.data = r;
    return r;
}

void http_req_free(struct http_req *r)
{
    if (r == NULL)
        return;
    free(r->url);
    for (int i = 0; i < HDR_COUNT; i++)
        free(r->hdr[i]);
    free(r->body);
    free(r->raw);
    free(r);
}

static void split_url(struct http_req *r)
{
    const char *q;

    r->path = r->url ? r->url : "";
    r->path_len = r->url_len;
    q = r->url ? memchr(r->url, '?', r->url_len) : NULL;
    if (q) {
        r->path_len = (size_t)(q - r->url);
        r->query = q + 1;
        r->query_len = r->url_len - r->path_len - 1;
    }
}

/* One line, printable: llhttp's reasons are fixed English sentences. */
static void parse_error(struct http_req *r)
{
    const char *reason = llhttp_get_error_reason(&r->parser);
    llhttp_errno_t e = llhttp_get_errno(&r->parser);
    char buf[128];

    /*
     * llhttp stops at HTTP/2's connection preface ("PRI * HTTP/2.0") and
     * refuses a version it does not know (HTTP/9.9) before the headers: both
     * are a client speaking another HTTP, answered as such, not as a parser's
     * inner words.
     */
    if (e == HPE_PAUSED_H2_UPGRADE) {
        fail(r, 505, HTTP_NO_H2);
        return;
    }
    if (e == HPE_INVALID_VERSION) {
        fail(r, 505, HTTP_ONLY_H1);
        return;
    }
    snprintf(buf, sizeof(buf), "malformed request: %s", reason ? reason : "parse error");
    fail(r, 400, buf);
}

enum http_feed http_req_feed(struct http_req *r, const char *data, size_t len, size_t *used)
{
    size_t off = 0;

    *used = 0;
    while (off < len) {
        size_t chunk = len - off;
        llhttp_errno_t e;

        /* Before the headers end, feed no more than the header budget allows. */
        if (!r->headers_done) {
            size_t budget = r->lim->max_header_bytes - r->head_bytes;
            if (budget == 0) {
                fail(r, 431, "request line and headers exceed the limit");
                return HTTP_ERROR;
            }
            if (chunk > budget)
                chunk = budget;
        }
        e = llhttp_execute(&r->parser, data + off, chunk);
        if (e == HPE_PAUSED) {
            const char *stop = llhttp_get_error_pos(&r->parser);
            *used = off + (size_t)(stop - (data + off));
            split_url(r);
            return HTTP_DONE;
        }
        if (e != HPE_OK) {
            if (r->err_status == 0)
                parse_error(r);
            *used = len;
            return HTTP_ERROR;
        }
        if (!r->headers_done)
            r->head_bytes += (uint32_t)chunk;
        off += chunk;
    }
    *used = len;
    return HTTP_NEED_MORE;
}

const char *http_method_str(unsigned method)
{
    return llhttp_method_name((llhttp_method_t)method);
}
