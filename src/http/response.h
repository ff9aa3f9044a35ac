/*
 * response.h — formats an HTTP/1.1 response into one buffer, so it can be
 * written with a single write() in the common case.
 */
#ifndef NUDGE_HTTP_RESPONSE_H
#define NUDGE_HTTP_RESPONSE_H

#include <stddef.h>

/* "OK", "Not Found", ... ("Unknown" for codes nudge does not send). */
const char *http_status_text(int status);

/*
 * Returns a malloc'd response: status line, Date, Content-Type (when 'ctype'
 * is non-NULL), Content-Length, Connection (keep-alive or close), the
 * caller's 'extra' header lines (each ending in "\r\n", may be NULL), a blank
 * line and the body. *outlen gets its length. NULL when out of memory.
 * 204, 304 and 1xx answers carry no Content-Length or body. With 'head_only' (the
 * answer to a HEAD) the head is the same, Content-Length included, and the
 * body is left out (RFC 9110 9.3.2).
 */
char *http_response_build(int status, const char *ctype, const char *extra, const char *body,
                          size_t body_len, int keep_alive, int head_only, size_t *outlen);

/*
 * The head of a streamed answer (an event stream): status line, Date,
 * Content-Type, Connection: close, the 'extra' lines, a blank line; no
 * Content-Length, so the body runs until the connection closes (RFC 9112
 * 6.3). malloc'd, *outlen its length; NULL when out of memory.
 */
char *http_stream_head(int status, const char *ctype, const char *extra, size_t *outlen);

#endif
