/*
 * util.h — small parsing helpers shared by nudged, nudge and the tests.
 */
#ifndef NUDGE_UTIL_H
#define NUDGE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/*
 * Parses "HOST:PORT" where HOST is an IPv4 literal, "[IPv6]" or empty (all
 * IPv4 addresses), and PORT is 0..65535 (0: any free port). Names are not
 * resolved: a listener binds to an address. Returns 0, or -EINVAL with a
 * reason in err.
 */
int util_parse_addr(const char *s, struct sockaddr_storage *out, char *err, size_t errlen);

/* Whether ss is a loopback address (127/8, ::1). */
int util_is_loopback(const struct sockaddr_storage *ss);

/* Formats an address as "1.2.3.4:80" or "[::1]:80". Returns out. */
char *util_format_addr(const struct sockaddr *sa, char *out, size_t outlen);

/*
 * Parses a decimal uint64 state counter: digits only, no sign, no spaces,
 * no leading zeros except "0" itself, at most 20 digits without overflow.
 * Returns 0, or -EINVAL.
 */
int util_parse_u64(const char *s, size_t len, uint64_t *out);

/* The value of one hexadecimal digit, or -1. */
int util_hex_value(char c);

/* The value of one lower-case hexadecimal digit (0-9, a-f), or -1. */
int util_hex_lower(char c);

/*
 * A seeded 64-bit hash of p[0..n): multiply-xorshift over 8-byte words. Not
 * a cryptographic PRF, but with a secret seed nobody outside can predict
 * where a key lands (strmap's buckets, the sign-in limiter's slots).
 */
static inline uint64_t util_hash(uint64_t seed, const void *p, size_t n)
{
    const char *s = p;
    uint64_t h = seed ^ (n * 0xff51afd7ed558ccdull);
    uint64_t w;

    /* Inline: every hash map lookup pays it (it was strmap.c's own before it was shared). */
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 32;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    return h;
}

/* Decodes %XX and '+' (as space) in place; returns the new length, or -EINVAL on a bad escape. */
long util_url_decode(char *s, size_t len);

/*
 * Finds parameter 'name' in a query string "a=1&b=2" (without '?'); on success
 * copies its URL-decoded value into out[outlen] and returns its length;
 * -ENOENT when absent, -EINVAL when it does not decode or fit.
 */
long util_query_param(const char *query, size_t qlen, const char *name, char *out, size_t outlen);

/*
 * Finds parameter 'name' in a query string and points *val at its raw
 * (still URL-encoded) value. Returns the raw length, or -ENOENT.
 */
long util_query_raw(const char *query, size_t qlen, const char *name, const char **val);

/*
 * Address prefix lists: "10.0.0.0/8,192.168.1.7,fd00::/8" (a bare address is
 * a /32 or /128; spaces around commas are allowed). util_prefix_list_check
 * returns 0, or -EINVAL with the reason in err ("'10.0.0.0/33': prefix
 * length must be 0 to 32"). util_prefix_list_match returns 1 when 'sa' (an
 * IPv4 or IPv6 address; an IPv4-mapped IPv6 address counts as IPv4) lies in
 * one of the prefixes of a list that util_prefix_list_check accepted, else 0.
 */
int util_prefix_list_check(const char *list, char *err, size_t errlen);
int util_prefix_list_match(const char *list, const struct sockaddr *sa);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t util_now_ms(void);

/*
 * The length of the well-formed UTF-8 sequence at s[0..n) (n > 0), or 0
 * when there is none there (RFC 3629: no overlongs, no surrogates, nothing
 * past U+10FFFF).
 */
size_t util_utf8_seq(const unsigned char *s, size_t n);

/* Is s[0..n) well-formed UTF-8? */
int util_utf8_valid(const unsigned char *s, size_t n);

/* Writes v in decimal at out (room for UTIL_U64_DIGITS), no NUL; returns the length. */
#define UTIL_U64_DIGITS 20
size_t util_u64_dec(char *out, uint64_t v);

#endif
