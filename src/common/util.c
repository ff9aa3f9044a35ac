/* util.c — see util.h. */
#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int util_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    return ss->ss_family == AF_INET6 &&
           IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

int util_parse_addr(const char *s, struct sockaddr_storage *out, char *err, size_t errlen)
{
    char host[64];
    const char *colon, *hs = s, *he;
    char *end;
    unsigned long port;

    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        he = strchr(s, ']');
        if (he == NULL || he[1] != ':') {
            snprintf(err, errlen, "'%s': expected [IPv6]:PORT", s);
            return -EINVAL;
        }
        hs = s + 1;
        colon = he + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "'%s': expected HOST:PORT", s);
            return -EINVAL;
        }
        he = colon;
    }
    if ((size_t)(he - hs) >= sizeof(host)) {
        snprintf(err, errlen, "'%s': host part too long", s);
        return -EINVAL;
    }
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port > 65535 || colon[1] == '-' ||
        colon[1] == '+' || colon[1] == ' ') {
        snprintf(err, errlen, "'%s': port must be a number from 0 to 65535", s);
        return -EINVAL;
    }
    if (s[0] == '[') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
            snprintf(err, errlen, "'%s': '%s' is not an IPv6 address", s, host);
            return -EINVAL;
        }
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)out;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        if (host[0] == '\0')
            a4->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
            snprintf(err, errlen, "'%s': '%s' is not an IPv4 address (names are not resolved)", s,
                     host);
            return -EINVAL;
        }
    }
    return 0;
}

char *util_format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(a6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%u", ip, ntohs(a4->sin_port));
    } else {
        snprintf(out, outlen, "-");
    }
    return out;
}

int util_parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned d;
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int util_hex_lower(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int util_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long util_url_decode(char *s, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi, lo;
            if (i + 2 >= len)
                return -EINVAL;
            hi = util_hex_value(s[i + 1]);
            lo = util_hex_value(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -EINVAL; /* %00 would truncate a C string */
            s[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '+') {
            s[o++] = ' ';
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = '\0';
    return (long)o;
}

long util_query_raw(const char *query, size_t qlen, const char *name, const char **val)
{
    size_t nlen = strlen(name);
    const char *p = query, *end = query + qlen;

    while (query && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) >= nlen + 1 && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            *val = p + nlen + 1;
            return (long)((size_t)(stop - p) - nlen - 1);
        }
        if ((size_t)(stop - p) == nlen && memcmp(p, name, nlen) == 0) {
            *val = stop;
            return 0;
        }
        p = stop + 1;
    }
    return -ENOENT;
}

long util_query_param(const char *query, size_t qlen, const char *name, char *out, size_t outlen)
{
    const char *val;
    long vlen = util_query_raw(query, qlen, name, &val);

    if (vlen < 0)
        return vlen;
    if ((size_t)vlen >= outlen)
        return -EINVAL;
    memcpy(out, val, (size_t)vlen);
    out[vlen] = '\0';
    return util_url_decode(out, (size_t)vlen);
}

uint64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One prefix of a list: family, 16 address bytes (IPv4 in the first 4), length in bits. */
struct prefix {
    int family;
    uint8_t addr[16];
    unsigned bits;
};

/* Parses item[0..len) as ADDR or ADDR/BITS. 0, or -EINVAL with err set. */
static int parse_prefix(const char *item, size_t len, struct prefix *p, char *err, size_t errlen)
{
    char buf[INET6_ADDRSTRLEN + 8];
    char *slash;
    unsigned max;

    if (len == 0 || len >= sizeof(buf)) {
        snprintf(err, errlen, "'%.*s': expected an address or ADDRESS/BITS", (int)(len > 60 ? 60 : len),
                 item);
        return -EINVAL;
    }
    memcpy(buf, item, len);
    buf[len] = '\0';
    slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    memset(p, 0, sizeof(*p));
    if (inet_pton(AF_INET, buf, p->addr) == 1) {
        p->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, p->addr) == 1) {
        p->family = AF_INET6;
        max = 128;
    } else {
        snprintf(err, errlen, "'%s': not an IPv4 or IPv6 address (names are not resolved)", buf);
        return -EINVAL;
    }
    p->bits = max;
    if (slash) {
        char *end;
        unsigned long b;
        errno = 0;
        b = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || errno != 0 || b > max) {
            *slash = '/';
            snprintf(err, errlen, "'%s': prefix length must be 0 to %u", buf, max);
            return -EINVAL;
        }
        p->bits = (unsigned)b;
    }
    return 0;
}

/* Calls fn for each item of the list; stops at the first non-zero return, which it returns. */
static int each_prefix(const char *list, int (*fn)(const struct prefix *, void *), void *arg,
                       char *err, size_t errlen)
{
    const char *p = list;

    while (*p) {
        const char *end = strchr(p, ',');
        size_t len;
        struct prefix px;
        int rc;

        if (end == NULL)
            end = p + strlen(p);
        while (p < end && *p == ' ')
            p++;
        len = (size_t)(end - p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (parse_prefix(p, len, &px, err, errlen) < 0)
            return -EINVAL;
        rc = fn(&px, arg);
        if (rc)
            return rc;
        p = *end ? end + 1 : end;
        if (*end && *p == '\0') {
            snprintf(err, errlen, "the list ends with a comma");
            return -EINVAL;
        }
    }
    return 0;
}

static int accept_any(const struct prefix *p, void *arg)
{
    (void)p;
    (void)arg;
    return 0;
}

int util_prefix_list_check(const char *list, char *err, size_t errlen)
{
    return each_prefix(list, accept_any, NULL, err, errlen) < 0 ? -EINVAL : 0;
}

struct match_arg {
    int family;
    const uint8_t *addr;
};

static int prefix_contains(const struct prefix *p, void *arg)
{
    const struct match_arg *m = arg;
    unsigned full = p->bits / 8, rest = p->bits % 8;

    if (p->family != m->family)
        return 0;
    if (memcmp(p->addr, m->addr, full) != 0)
        return 0;
    if (rest && ((p->addr[full] ^ m->addr[full]) & (uint8_t)(0xff << (8 - rest))) != 0)
        return 0;
    return 1;
}

int util_prefix_list_match(const char *list, const struct sockaddr *sa)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    struct match_arg m;
    char err[160];

    if (sa->sa_family == AF_INET) {
        m.family = AF_INET;
        m.addr = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        m.family = memcmp(a, mapped, 12) == 0 ? AF_INET : AF_INET6;
        m.addr = m.family == AF_INET ? a + 12 : a;
    } else {
        return 0;
    }
    return each_prefix(list, prefix_contains, &m, err, sizeof(err)) == 1;
}

/* Without snprintf: numbers are written into every answer and JSON body. */
size_t util_u64_dec(char *out, uint64_t v)
{
    char tmp[UTIL_U64_DIGITS];
    size_t n = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t util_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    /* The second byte's range rules out overlongs, surrogates and what lies past U+10FFFF. */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

int util_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0, len; i < n; i += len)
        if ((len = util_utf8_seq(s + i, n - i)) == 0)
            return 0;
    return 1;
}
