/*
 * cookie.h — finding one cookie in a request's Cookie header (RFC 6265
 * section 5.4: "name=value" pairs separated by "; "). The request joins
 * repeated Cookie headers with "; " (request.h HDR_COOKIE), so one scan
 * sees them all.
 */
#ifndef NUDGE_HTTP_COOKIE_H
#define NUDGE_HTTP_COOKIE_H

#include <stddef.h>

/*
 * Finds the first cookie named 'name' (compared exactly: cookie names are
 * case-sensitive) in header[0..len). On success points *val at its value
 * inside header, without the optional surrounding double quotes, sets
 * *vlen and returns 0; -1 when there is none. Pairs without '=' are
 * skipped, as browsers do. Never reads past len.
 */
int http_cookie_find(const char *header, size_t len, const char *name, const char **val,
                     size_t *vlen);

#endif
