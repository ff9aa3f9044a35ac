/*
 * cookie.c — see cookie.h. One pass over the header, nothing allocated or
 * copied: the value is a view into the request. Leading and trailing
 * spaces and tabs of each pair are dropped (browsers send "a=1; b=2",
 * hand-written clients sometimes "a=1;b=2" or "a = 1").
 */
#include "http/cookie.h"

#include <string.h>

static int blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

int http_cookie_find(const char *header, size_t len, const char *name, const char **val,
                     size_t *vlen)
{
    size_t nlen = strlen(name), i = 0;

    if (header == NULL)
        return -1;
    while (i < len) {
        size_t start, end, eq;
        const char *semi = memchr(header + i, ';', len - i);

        end = semi ? (size_t)(semi - header) : len;
        start = i;
        i = end + 1;
        while (start < end && blank(header[start]))
            start++;
        while (end > start && blank(header[end - 1]))
            end--;
        eq = start;
        while (eq < end && header[eq] != '=')
            eq++;
        if (eq == end)
            continue; /* no '=': not a pair */
        {
            size_t kend = eq, vstart = eq + 1;
            while (kend > start && blank(header[kend - 1]))
                kend--;
            while (vstart < end && blank(header[vstart]))
                vstart++;
            if (kend - start != nlen || memcmp(header + start, name, nlen) != 0)
                continue;
            /* A cookie-value may be wrapped in double quotes (RFC 6265 4.1.1). */
            if (end - vstart >= 2 && header[vstart] == '"' && header[end - 1] == '"') {
                vstart++;
                end--;
            }
            *val = header + vstart;
            *vlen = end - vstart;
            return 0;
        }
    }
    return -1;
}
