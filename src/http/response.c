/* response.c — see response.h. */
#include "http/response.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The Date header, formatted at most once a second (it is on every answer). */
static const char *date_header(void)
{
    static char buf[64];
    static time_t last;
    time_t now = time(NULL);
    struct tm tm;

    if (now != last) {
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

#define PUT(lit) (memcpy(at, lit, sizeof(lit) - 1), at += sizeof(lit) - 1)
#define PUTN(s, len) (memcpy(at, s, len), at += (len))

/*
 * Fixed bytes of a head at most: every literal a head may hold, a status code and a
 * Content-Length of UTIL_U64_DIGITS each, the longest Connection value.
 */
#define HEAD_LITERALS                                                                              \
    "HTTP/1.1  \r\nDate: \r\nContent-Type: \r\nContent-Length: \r\nConnection: keep-alive\r\n\r\n"
#define HEAD_FIXED_MAX (sizeof(HEAD_LITERALS) - 1 + 2 * UTIL_U64_DIGITS)

/*
 * The head is written straight into the answer's buffer, sized by a bound:
 * one allocation and no format parsing, since every answer to a device and
 * to a publisher goes through here (four snprintf calls were ~3,600
 * instructions an answer).
 */
/* Writes "HTTP/1.1 <status> <text>\r\nDate: <date>\r\n" at 'at'; returns the end. */
static char *put_start(char *at, int status, const char *text, size_t text_len, const char *date,
                       size_t date_len)
{
    PUT("HTTP/1.1 ");
    at += util_u64_dec(at, status < 0 ? 0 : (uint64_t)status);
    PUT(" ");
    PUTN(text, text_len);
    PUT("\r\nDate: ");
    PUTN(date, date_len);
    PUT("\r\n");
    return at;
}

char *http_stream_head(int status, const char *ctype, const char *extra, size_t *outlen)
{
    const char *text = http_status_text(status), *date = date_header();
    size_t text_len = strlen(text), date_len = strlen(date);
    size_t ctype_len = strlen(ctype), extra_len = extra ? strlen(extra) : 0;
    char *out, *at;

    out = malloc(HEAD_FIXED_MAX + text_len + date_len + ctype_len + extra_len);
    if (out == NULL)
        return NULL;
    at = put_start(out, status, text, text_len, date, date_len);
    PUT("Content-Type: ");
    PUTN(ctype, ctype_len);
    PUT("\r\nConnection: close\r\n");
    if (extra_len)
        PUTN(extra, extra_len);
    PUT("\r\n");
    *outlen = (size_t)(at - out);
    return out;
}

char *http_response_build(int status, const char *ctype, const char *extra, const char *body,
                          size_t body_len, int keep_alive, int head_only, size_t *outlen)
{
    /* RFC 9110 8.6: no Content-Length in a 1xx or 204 (a CORS preflight's answer), nor a 304 here. */
    int bodyless = status == 304 || status == 204 || (status >= 100 && status < 200);
    const char *text = http_status_text(status), *date = date_header();
    const char *conn = keep_alive ? "keep-alive" : "close";
    size_t text_len = strlen(text), date_len = strlen(date);
    size_t ctype_len = ctype ? strlen(ctype) : 0, extra_len = extra ? strlen(extra) : 0;
    char *out, *at;

    if (bodyless)
        body_len = 0;
    out = malloc(HEAD_FIXED_MAX + text_len + date_len + ctype_len + extra_len + body_len);
    if (out == NULL)
        return NULL;
    at = put_start(out, status, text, text_len, date, date_len);
    if (!bodyless) {
        if (ctype) {
            PUT("Content-Type: ");
            PUTN(ctype, ctype_len);
            PUT("\r\n");
        }
        PUT("Content-Length: ");
        at += util_u64_dec(at, body_len);
        PUT("\r\n");
    }
    if (status >= 200) {
        PUT("Connection: ");
        PUTN(conn, strlen(conn));
        PUT("\r\n");
    }
    if (extra_len)
        PUTN(extra, extra_len);
    PUT("\r\n");
    if (body_len && !head_only)
        PUTN(body, body_len);
    *outlen = (size_t)(at - out);
    return out;
}
