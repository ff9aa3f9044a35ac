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
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
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
 * The head is measured, then written straight into the answer's buffer:
 * one allocation and no format parsing, since every answer to a device and
 * to a publisher goes through here (four snprintf calls were ~3,600
 * instructions an answer).
 */
char *http_response_build(int status, const char *ctype, const char *extra, const char *body,
                          size_t body_len, int keep_alive, size_t *outlen)
{
    int bodyless = status == 304 || (status >= 100 && status < 200);
    const char *text = http_status_text(status), *date = date_header();
    const char *conn = keep_alive ? "keep-alive" : "close";
    size_t text_len = strlen(text), date_len = strlen(date), conn_len = strlen(conn);
    size_t ctype_len = ctype ? strlen(ctype) : 0, extra_len = extra ? strlen(extra) : 0;
    uint64_t code = status < 0 ? 0 : (uint64_t)status;
    char digits[UTIL_U64_DIGITS];
    size_t len_digits, total;
    char *out, *at;

    if (bodyless)
        body_len = 0;
    len_digits = util_u64_dec(digits, body_len);
    total = sizeof("HTTP/1.1 ") - 1 + UTIL_U64_DIGITS + 1 + text_len + sizeof("\r\nDate: ") - 1 +
            date_len + 2;
    if (!bodyless) {
        if (ctype)
            total += sizeof("Content-Type: ") - 1 + ctype_len + 2;
        total += sizeof("Content-Length: ") - 1 + len_digits + 2;
    }
    if (status >= 200)
        total += sizeof("Connection: ") - 1 + conn_len + 2;
    total += extra_len + 2 + body_len;
    out = malloc(total);
    if (out == NULL)
        return NULL;
    at = out;
    PUT("HTTP/1.1 ");
    at += util_u64_dec(at, code);
    PUT(" ");
    PUTN(text, text_len);
    PUT("\r\nDate: ");
    PUTN(date, date_len);
    PUT("\r\n");
    if (!bodyless) {
        if (ctype) {
            PUT("Content-Type: ");
            PUTN(ctype, ctype_len);
            PUT("\r\n");
        }
        PUT("Content-Length: ");
        PUTN(digits, len_digits);
        PUT("\r\n");
    }
    if (status >= 200) {
        PUT("Connection: ");
        PUTN(conn, conn_len);
        PUT("\r\n");
    }
    if (extra_len)
        PUTN(extra, extra_len);
    PUT("\r\n");
    if (body_len)
        PUTN(body, body_len);
    *outlen = (size_t)(at - out);
    return out;
}
