/*
 * token.c — signing and checking bearer tokens (format in token.h and
 * docs/auth.md).
 *
 * Design: a token is parsed strictly, field by field, into fixed buffers on
 * the stack; nothing is allocated. Any deviation from the one canonical
 * spelling is TOKEN_MALFORMED, so a token has exactly one valid form and a
 * cache or log keyed by the token text cannot be fooled by an equivalent
 * spelling. Only once the shape is right is the HMAC computed and compared in
 * constant time (CRYPTO_memcmp); expiry is judged last, so an expired token
 * with a forged MAC reports "bad signature", not "expired".
 *
 * base64url (RFC 4648 section 5, no padding) is written here rather than
 * taken from OpenSSL: EVP_DecodeBlock speaks the '+/' alphabet, wants
 * padding and accepts non-canonical trailing bits.
 *
 * Cost: one HMAC-SHA256 over at most ~370 bytes per verification, a few
 * microseconds; every request with a token pays it once. OpenSSL 3's one-shot
 * HMAC() looks up the HMAC algorithm and then SHA-256 by name in its provider
 * tables on every call, which cost more than the hashing itself (11% of a
 * worker's CPU while it accepted pings). So the keyed context is made once
 * per secret and copied for each MAC: a copy shares the fetched digest and
 * starts from the key's precomputed pads.
 */
#include "auth/token.h"

#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define MAC_BYTES 32
/* base64url of 32 bytes without padding: ceil(32 * 4 / 3) = 43 characters. */
#define MAC_B64_LEN 43
/* base64url of TOKEN_SUBJECT_MAX (255) bytes: 255 / 3 * 4 = 340 characters. */
#define SUBJECT_B64_MAX 340
/* INT64_MAX has 19 decimal digits. */
#define EXPIRES_DIGITS_MAX 19
/* A key id: 4 bytes in lower-case hexadecimal. */
#define KEY_ID_LEN 8

/*
 * Longest duration token_parse_duration accepts: 100 years of 365.25 days
 * (36525 days).
 * Anything longer is a typo (a token that should never expire uses expires
 * 0), and the bound keeps now + duration far from int64 overflow in callers.
 */
#define DURATION_MAX ((int64_t)36525 * 86400)

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Length of the unpadded base64url encoding of n bytes. */
static size_t b64_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Encodes in[0..n) into out (b64_encoded_len(n) bytes, no NUL written). */
static void b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
    }
}

/*
 * Each base64url character's 6-bit value plus one; 0 for every other byte.
 * A table, since the branches of a range test mispredict on every token
 * (it was a few percent of a worker taking new connections).
 */
#define B64(c, v) [(unsigned char)(c)] = (v) + 1
static const unsigned char b64_table[256] = {
    B64('A', 0), B64('B', 1), B64('C', 2), B64('D', 3), B64('E', 4), B64('F', 5),
    B64('G', 6), B64('H', 7), B64('I', 8), B64('J', 9), B64('K', 10), B64('L', 11),
    B64('M', 12), B64('N', 13), B64('O', 14), B64('P', 15), B64('Q', 16), B64('R', 17),
    B64('S', 18), B64('T', 19), B64('U', 20), B64('V', 21), B64('W', 22), B64('X', 23),
    B64('Y', 24), B64('Z', 25), B64('a', 26), B64('b', 27), B64('c', 28), B64('d', 29),
    B64('e', 30), B64('f', 31), B64('g', 32), B64('h', 33), B64('i', 34), B64('j', 35),
    B64('k', 36), B64('l', 37), B64('m', 38), B64('n', 39), B64('o', 40), B64('p', 41),
    B64('q', 42), B64('r', 43), B64('s', 44), B64('t', 45), B64('u', 46), B64('v', 47),
    B64('w', 48), B64('x', 49), B64('y', 50), B64('z', 51), B64('0', 52), B64('1', 53),
    B64('2', 54), B64('3', 55), B64('4', 56), B64('5', 57), B64('6', 58), B64('7', 59),
    B64('8', 60), B64('9', 61), B64('-', 62), B64('_', 63),
};
#undef B64

/*
 * Decodes in[0..n) into out[outmax]. Strict: only the base64url alphabet,
 * no padding, no length of the form 4k+1 (it cannot come from any input),
 * and the unused low bits of the last character must be zero, so every byte
 * string has exactly one encoding. Returns the decoded length, or -1.
 * Four characters at a time: every request carries a token.
 */
static long b64_decode(const char *in, size_t n, unsigned char *out, size_t outmax)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0, tail = n % 4;
    uint32_t v;

    if (tail == 1 || n / 4 * 3 + (tail == 0 ? 0 : tail - 1) > outmax)
        return -1;
    for (; i + 4 <= n; i += 4) {
        unsigned a = b64_table[s[i]], b = b64_table[s[i + 1]], c = b64_table[s[i + 2]],
                 d = b64_table[s[i + 3]];
        if (a == 0 || b == 0 || c == 0 || d == 0)
            return -1;
        v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    if (tail == 0)
        return (long)o;
    v = 0;
    for (size_t k = 0; k < tail; k++) {
        unsigned t = b64_table[s[i + k]];
        if (t == 0)
            return -1;
        v = v << 6 | (t - 1);
    }
    /* Two characters hold one byte and 4 bits of padding, three hold two and 2 bits. */
    if (tail == 2) {
        if (v & 0xf)
            return -1;
        out[o++] = (unsigned char)(v >> 4);
    } else {
        if (v & 0x3)
            return -1;
        out[o++] = (unsigned char)(v >> 10);
        out[o++] = (unsigned char)(v >> 2);
    }
    return (long)o;
}

/*
 * Each thread keeps one HMAC-SHA256 context, keyed with the last secret it
 * used (a process signs and checks with one secret; another key replaces
 * it). A MAC restarts it with EVP_MAC_init and a NULL key, which for HMAC
 * reuses the key already set (OpenSSL 3.0.3+, openssl/openssl#18100) and
 * allocates nothing: a context duplicated and freed for every MAC cost more
 * than the hashing. A thread's context is freed when the thread ends
 * (mac_key's destructor).
 */
static __thread EVP_MAC_CTX *mac_ctx;
static __thread unsigned char mac_ctx_key[SECRET_BYTES];
static __thread int mac_ctx_keyed; /* mac_ctx holds mac_ctx_key */
static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static pthread_key_t mac_key;
static int mac_key_ok;

static void mac_ctx_free(void *ctx)
{
    EVP_MAC_CTX_free(ctx);
}

static void mac_key_init(void)
{
    mac_key_ok = pthread_key_create(&mac_key, mac_ctx_free) == 0;
}

/* This thread's context, keyed with key and ready for a MAC; NULL on failure. */
static EVP_MAC_CTX *mac_ctx_for(const unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *alg;

    if (mac_ctx_keyed && CRYPTO_memcmp(mac_ctx_key, key, SECRET_BYTES) == 0)
        return EVP_MAC_init(mac_ctx, NULL, 0, NULL) == 1 ? mac_ctx : NULL;
    if (mac_ctx == NULL) {
        pthread_once(&mac_once, mac_key_init);
        alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
        mac_ctx = alg ? EVP_MAC_CTX_new(alg) : NULL;
        EVP_MAC_free(alg); /* the context holds its own reference */
        if (mac_ctx == NULL)
            return NULL;
        if (mac_key_ok)
            pthread_setspecific(mac_key, mac_ctx);
    }
    mac_ctx_keyed = 0;
    if (EVP_MAC_init(mac_ctx, key, SECRET_BYTES, params) != 1)
        return NULL;
    memcpy(mac_ctx_key, key, SECRET_BYTES);
    mac_ctx_keyed = 1;
    return mac_ctx;
}

/* HMAC-SHA256 of data[0..n) under key[SECRET_BYTES]. Returns 0, or -1. */
static int mac_compute(const unsigned char *key, const char *data, size_t n,
                       unsigned char mac[MAC_BYTES])
{
    EVP_MAC_CTX *ctx = mac_ctx_for(key);
    size_t maclen = 0;

    if (ctx == NULL)
        return -1;
    if (EVP_MAC_update(ctx, (const unsigned char *)data, n) != 1 ||
        EVP_MAC_final(ctx, mac, &maclen, MAC_BYTES) != 1 || maclen != MAC_BYTES)
        return -1;
    return 0;
}

int64_t token_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes v in decimal at out (no NUL); returns the length. v >= 0. */
static size_t put_decimal(char *out, int64_t v)
{
    char digits[EXPIRES_DIGITS_MAX + 1];
    size_t n = 0, k = 0;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        out[k++] = digits[--n];
    return k;
}

int token_sign(const struct secret *s, enum token_kind kind, const char *subject,
               int64_t expires, char *out, size_t outlen)
{
    return token_sign_at(s, kind, subject, expires, token_now_ms(), out, outlen);
}

/*
 * On top of token.h: a negative 'expires' or issue time is -EINVAL (the
 * format has no sign), and a failure inside OpenSSL's HMAC (it does not
 * allocate for SHA-256 in practice) is -EIO.
 */
int token_sign_at(const struct secret *s, enum token_kind kind, const char *subject,
                  int64_t expires, int64_t issued_ms, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[MAC_BYTES];
    size_t sublen, need, n = 0;

    if (kind != TOKEN_USER && kind != TOKEN_PUBLISHER && kind != TOKEN_ADMIN)
        return -EINVAL;
    if (subject == NULL || expires < 0 || issued_ms < 0)
        return -EINVAL;
    sublen = strnlen(subject, TOKEN_SUBJECT_MAX + 1);
    if (sublen == 0 || sublen > TOKEN_SUBJECT_MAX)
        return -EINVAL;
    /* "v2." kind "." b64 "." expires "." issued "." key id "." mac NUL, digits at their longest */
    need = 3 + 1 + 1 + b64_encoded_len(sublen) + 1 + EXPIRES_DIGITS_MAX + 1 +
           EXPIRES_DIGITS_MAX + 1 + KEY_ID_LEN + 1 + MAC_B64_LEN + 1;
    {
        /* The exact length, so that a buffer of exactly that size works. */
        char tmp[2 * (EXPIRES_DIGITS_MAX + 1)];
        need -= 2 * EXPIRES_DIGITS_MAX;
        need += put_decimal(tmp, expires) + put_decimal(tmp, issued_ms);
    }
    if (need > outlen)
        return -ENOSPC;

    memcpy(out, "v2.", 3);
    n = 3;
    out[n++] = (char)kind;
    out[n++] = '.';
    b64_encode((const unsigned char *)subject, sublen, out + n);
    n += b64_encoded_len(sublen);
    out[n++] = '.';
    n += put_decimal(out + n, expires);
    out[n++] = '.';
    n += put_decimal(out + n, issued_ms);
    out[n++] = '.';
    for (int i = 0; i < KEY_ID_LEN; i++)
        out[n++] = hex[(s->id >> (28 - 4 * i)) & 15];
    if (mac_compute(s->key, out, n, mac) != 0)
        return -EIO;
    out[n++] = '.';
    b64_encode(mac, MAC_BYTES, out + n);
    n += MAC_B64_LEN;
    out[n] = '\0';
    return (int)n;
}

int token_parse_decimal(const char *p, size_t n, int64_t *out)
{
    int64_t v = 0;

    if (n == 0 || n > EXPIRES_DIGITS_MAX || (n > 1 && p[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d;
        if (p[i] < '0' || p[i] > '9')
            return -1;
        d = p[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

_Static_assert(TOKEN_MAC_BYTES == MAC_BYTES, "token.h and token.c must agree on the MAC's size");

/* The lower-case hexadecimal key id hex[0..8), or -1. */
static int parse_key_id(const char *hex, size_t n, uint32_t *out)
{
    uint32_t v = 0;

    if (n != KEY_ID_LEN)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d = util_hex_lower(hex[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* The next field of [p, end) up to a dot: *field and its length, p moved past the dot. -1: none. */
static long next_field(const char **p, const char *end, const char **field)
{
    const char *dot = memchr(*p, '.', (size_t)(end - *p));
    long n;

    if (dot == NULL)
        return -1;
    *field = *p;
    n = (long)(dot - *p);
    *p = dot + 1;
    return n;
}

enum token_status token_parse(const char *tok, size_t len, struct token_fields *f)
{
    const char *end, *p, *field;
    long sublen, n;
    char k;

    if (tok == NULL || len < 5 || len > TOKEN_MAX || tok[0] != 'v' || tok[2] != '.' ||
        (tok[1] != '1' && tok[1] != '2'))
        return TOKEN_MALFORMED;
    f->version = tok[1] - '0';
    end = tok + len;
    k = tok[3];
    if ((k != TOKEN_USER && k != TOKEN_PUBLISHER && k != TOKEN_ADMIN) || tok[4] != '.')
        return TOKEN_MALFORMED;
    f->kind = (enum token_kind)k;
    p = tok + 5;

    /* Subject: base64url up to the next dot, 1..255 bytes without NUL. */
    n = next_field(&p, end, &field);
    if (n < 0 || n > SUBJECT_B64_MAX)
        return TOKEN_MALFORMED;
    sublen = b64_decode(field, (size_t)n, (unsigned char *)f->subject, TOKEN_SUBJECT_MAX);
    if (sublen < 1 || memchr(f->subject, '\0', (size_t)sublen) != NULL)
        return TOKEN_MALFORMED;
    f->subject[sublen] = '\0';
    f->subject_len = (size_t)sublen;

    /* Expiry: canonical decimal up to the next dot. */
    n = next_field(&p, end, &field);
    if (n < 0 || token_parse_decimal(field, (size_t)n, &f->expires) != 0)
        return TOKEN_MALFORMED;

    f->issued_ms = 0;
    f->key_id = 0;
    if (f->version == 2) {
        /* Issue time (canonical decimal, ms) and the signing key's id. */
        n = next_field(&p, end, &field);
        if (n < 0 || token_parse_decimal(field, (size_t)n, &f->issued_ms) != 0)
            return TOKEN_MALFORMED;
        n = next_field(&p, end, &field);
        if (n < 0 || parse_key_id(field, (size_t)n, &f->key_id) != 0)
            return TOKEN_MALFORMED;
    }

    /* MAC: exactly 43 characters to the end, no further dot. */
    f->signed_len = (size_t)(p - 1 - tok);
    if (end - p != MAC_B64_LEN || b64_decode(p, MAC_B64_LEN, f->mac, sizeof(f->mac)) != MAC_BYTES)
        return TOKEN_MALFORMED;
    return TOKEN_OK;
}

/* Does key[SECRET_BYTES] sign tok's f? */
static int mac_matches(const unsigned char *key, const char *tok, const struct token_fields *f)
{
    unsigned char want[MAC_BYTES];

    return mac_compute(key, tok, f->signed_len, want) == 0 &&
           CRYPTO_memcmp(f->mac, want, MAC_BYTES) == 0;
}

/*
 * A failure inside OpenSSL's HMAC is reported as TOKEN_BAD_SIGNATURE: fail
 * closed. A v2 token is checked with the key its id names, one MAC; a v1
 * token (no id) with the current key, then the previous one.
 */
enum token_status token_check(const struct secret *s, const char *tok,
                              const struct token_fields *f, int64_t now)
{
    int ok;

    if (f->version == 2)
        ok = (f->key_id == s->id && mac_matches(s->key, tok, f)) ||
             (s->has_previous && f->key_id == s->previous_id && f->key_id != s->id &&
              mac_matches(s->previous, tok, f));
    else
        ok = mac_matches(s->key, tok, f) || (s->has_previous && mac_matches(s->previous, tok, f));
    if (!ok)
        return TOKEN_BAD_SIGNATURE;
    if (f->expires != 0 && f->expires < now)
        return TOKEN_EXPIRED;
    return TOKEN_OK;
}

enum token_status token_revocation(const struct token_fields *f, uint64_t revoked_ms)
{
    if (f->kind == TOKEN_USER && revoked_ms != 0 && (uint64_t)f->issued_ms <= revoked_ms)
        return TOKEN_REVOKED;
    return TOKEN_OK;
}

/*
 * On top of token.h: kind, subject and expires may each be NULL when the
 * caller does not want them; a non-NULL subject buffer too small for the
 * subject makes the token TOKEN_MALFORMED (callers pass 256 bytes).
 */
enum token_status token_verify(const struct secret *s, const char *tok, size_t len, int64_t now,
                               enum token_kind *kind, char *subject, size_t subjlen,
                               int64_t *expires)
{
    struct token_fields f;
    enum token_status st;

    if (token_parse(tok, len, &f) != TOKEN_OK)
        return TOKEN_MALFORMED;
    if (subject != NULL && f.subject_len >= subjlen)
        return TOKEN_MALFORMED;
    if ((st = token_check(s, tok, &f, now)) != TOKEN_OK)
        return st;
    if (kind != NULL)
        *kind = f.kind;
    if (subject != NULL)
        memcpy(subject, f.subject, f.subject_len + 1);
    if (expires != NULL)
        *expires = f.expires;
    return TOKEN_OK;
}

size_t token_b64_len(size_t n)
{
    return b64_encoded_len(n);
}

void token_b64_encode(const unsigned char *in, size_t n, char *out)
{
    b64_encode(in, n, out);
}

long token_b64_decode(const char *in, size_t n, unsigned char *out, size_t outmax)
{
    return b64_decode(in, n, out, outmax);
}

int token_mac(const unsigned char *key, const char *data, size_t n,
              unsigned char mac[TOKEN_MAC_BYTES])
{
    return mac_compute(key, data, n, mac);
}

const char *token_status_str(enum token_status st)
{
    switch (st) {
    case TOKEN_OK:
        return "ok";
    case TOKEN_MALFORMED:
        return "malformed token";
    case TOKEN_BAD_SIGNATURE:
        return "bad signature";
    case TOKEN_EXPIRED:
        return "token expired";
    case TOKEN_REVOKED:
        return "token revoked";
    }
    return "unknown token status";
}

/*
 * On top of token.h: digits then at most one unit letter (s, m, h, d, w;
 * lower case only), no sign, spaces or fractions; leading zeros are allowed
 * ("090s" is 90 s). The result is at most DURATION_MAX (100 years).
 */
int token_parse_duration(const char *s, int64_t *seconds)
{
    int64_t v = 0, unit = 1;
    size_t i = 0;

    if (s == NULL)
        return -EINVAL;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        v = v * 10 + (s[i] - '0');
        if (v > DURATION_MAX)
            return -EINVAL;
    }
    if (i == 0)
        return -EINVAL;
    switch (s[i]) {
    case '\0':
        break;
    case 's':
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    case 'w':
        unit = 7 * 86400;
        break;
    default:
        return -EINVAL;
    }
    if (s[i] != '\0' && s[i + 1] != '\0')
        return -EINVAL;
    /* v <= DURATION_MAX (~3.2e9) and unit <= 604800: the product fits int64. */
    v *= unit;
    if (v == 0 || v > DURATION_MAX)
        return -EINVAL;
    *seconds = v;
    return 0;
}
