/* response.c — see response.h. */
#include "http/response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

char *http_response_build(int status, const char *ctype, const char *extra, const char *body,
                          size_t body_len, int keep_alive, size_t *outlen)
{
    int bodyless = status == 304 || (status >= 100 && status < 200);
    char head[512];
    size_t extra_len = extra ? strlen(extra) : 0;
    int n;
    char *out;

    if (bodyless)
        body_len = 0;
    n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                 http_status_text(status), date_header());
    if (!bodyless) {
        if (ctype)
            n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Type: %s\r\n", ctype);
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n", body_len);
    }
    if (status >= 200)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: %s\r\n",
                      keep_alive ? "keep-alive" : "close");
    out = malloc((size_t)n + extra_len + 2 + body_len);
    if (out == NULL)
        return NULL;
    memcpy(out, head, (size_t)n);
    if (extra_len)
        memcpy(out + n, extra, extra_len);
    memcpy(out + n + extra_len, "\r\n", 2);
    if (body_len)
        memcpy(out + n + extra_len + 2, body, body_len);
    *outlen = (size_t)n + extra_len + 2 + body_len;
    return out;
}
