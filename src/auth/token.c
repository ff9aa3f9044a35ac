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

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

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

/* The 6-bit value of a base64url character, or -1. */
static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Decodes in[0..n) into out[outmax]. Strict: only the base64url alphabet,
 * no padding, no length of the form 4k+1 (it cannot come from any input),
 * and the unused low bits of the last character must be zero, so every byte
 * string has exactly one encoding. Returns the decoded length, or -1.
 */
static long b64_decode(const char *in, size_t n, unsigned char *out, size_t outmax)
{
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (n % 4 == 1 || n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1) > outmax)
        return -1;
    for (; i < n; i++) {
        int v = b64_value(in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits (2 or 4) are padding inside the last character. */
    if (acc != 0)
        return -1;
    return (long)o;
}

/*
 * The HMAC-SHA256 context keyed with the last secret used, and that key (a
 * process signs and checks with one secret; another key replaces it). The
 * lock makes the template safe to share between threads; each MAC works on
 * its own copy.
 */
static pthread_mutex_t mac_lock = PTHREAD_MUTEX_INITIALIZER;
static EVP_MAC_CTX *mac_template;
static unsigned char mac_template_key[SECRET_BYTES];

/* A fresh HMAC-SHA256 context keyed with s, for one MAC; NULL on failure. */
static EVP_MAC_CTX *mac_ctx_new(const struct secret *s)
{
    EVP_MAC_CTX *ctx = NULL;

    pthread_mutex_lock(&mac_lock);
    if (mac_template == NULL || CRYPTO_memcmp(mac_template_key, s->key, SECRET_BYTES) != 0) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *t = alg ? EVP_MAC_CTX_new(alg) : NULL;

        EVP_MAC_free(alg); /* the context holds its own reference */
        if (t == NULL || EVP_MAC_init(t, s->key, SECRET_BYTES, params) != 1) {
            EVP_MAC_CTX_free(t);
            goto out;
        }
        EVP_MAC_CTX_free(mac_template);
        mac_template = t;
        memcpy(mac_template_key, s->key, SECRET_BYTES);
    }
    ctx = EVP_MAC_CTX_dup(mac_template);
out:
    pthread_mutex_unlock(&mac_lock);
    return ctx;
}

/* HMAC-SHA256 of data[0..n) under the secret. Returns 0, or -1. */
static int mac_compute(const struct secret *s, const char *data, size_t n,
                       unsigned char mac[MAC_BYTES])
{
    EVP_MAC_CTX *ctx = mac_ctx_new(s);
    size_t maclen = 0;
    int ok;

    if (ctx == NULL)
        return -1;
    ok = EVP_MAC_update(ctx, (const unsigned char *)data, n) == 1 &&
         EVP_MAC_final(ctx, mac, &maclen, MAC_BYTES) == 1 && maclen == MAC_BYTES;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

/*
 * On top of token.h: a negative 'expires' is -EINVAL (the format has no
 * sign), and a failure inside OpenSSL's HMAC (it does not allocate for
 * SHA-256 in practice) is -EIO.
 */
int token_sign(const struct secret *s, enum token_kind kind, const char *subject,
               int64_t expires, char *out, size_t outlen)
{
    unsigned char mac[MAC_BYTES];
    char digits[EXPIRES_DIGITS_MAX + 1];
    size_t sublen, need, n = 0;
    int dlen;

    if (kind != TOKEN_USER && kind != TOKEN_PUBLISHER && kind != TOKEN_ADMIN)
        return -EINVAL;
    if (subject == NULL || expires < 0)
        return -EINVAL;
    sublen = strnlen(subject, TOKEN_SUBJECT_MAX + 1);
    if (sublen == 0 || sublen > TOKEN_SUBJECT_MAX)
        return -EINVAL;
    dlen = snprintf(digits, sizeof(digits), "%lld", (long long)expires);
    /* "v1." kind "." b64 "." digits "." mac NUL */
    need = 3 + 1 + 1 + b64_encoded_len(sublen) + 1 + (size_t)dlen + 1 + MAC_B64_LEN + 1;
    if (need > outlen)
        return -ENOSPC;

    memcpy(out, "v1.", 3);
    n = 3;
    out[n++] = (char)kind;
    out[n++] = '.';
    b64_encode((const unsigned char *)subject, sublen, out + n);
    n += b64_encoded_len(sublen);
    out[n++] = '.';
    memcpy(out + n, digits, (size_t)dlen);
    n += (size_t)dlen;
    if (mac_compute(s, out, n, mac) != 0)
        return -EIO;
    out[n++] = '.';
    b64_encode(mac, MAC_BYTES, out + n);
    n += MAC_B64_LEN;
    out[n] = '\0';
    return (int)n;
}

/*
 * Parses the expiry field: decimal digits only, no sign, no leading zero
 * except "0" itself, at most INT64_MAX. Returns 0, or -1.
 */
static int parse_expires(const char *p, size_t n, int64_t *out)
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

/*
 * On top of token.h: kind, subject and expires may each be NULL when the
 * caller does not want them; a non-NULL subject buffer too small for the
 * subject makes the token TOKEN_MALFORMED (callers pass 256 bytes). A failure
 * inside OpenSSL's HMAC is reported as TOKEN_BAD_SIGNATURE: fail closed.
 */
enum token_status token_verify(const struct secret *s, const char *tok, size_t len, int64_t now,
                               enum token_kind *kind, char *subject, size_t subjlen,
                               int64_t *expires)
{
    unsigned char sub[TOKEN_SUBJECT_MAX];
    unsigned char mac[MAC_BYTES], want[MAC_BYTES];
    const char *end, *sub_b64, *dot, *exp_txt;
    size_t signed_len;
    long sublen;
    int64_t exp;
    char k;

    if (tok == NULL || len < 5 || len > TOKEN_MAX || memcmp(tok, "v1.", 3) != 0)
        return TOKEN_MALFORMED;
    end = tok + len;
    k = tok[3];
    if ((k != TOKEN_USER && k != TOKEN_PUBLISHER && k != TOKEN_ADMIN) || tok[4] != '.')
        return TOKEN_MALFORMED;

    /* Subject: base64url up to the next dot, 1..255 bytes without NUL. */
    sub_b64 = tok + 5;
    dot = memchr(sub_b64, '.', (size_t)(end - sub_b64));
    if (dot == NULL || dot - sub_b64 > SUBJECT_B64_MAX)
        return TOKEN_MALFORMED;
    sublen = b64_decode(sub_b64, (size_t)(dot - sub_b64), sub, sizeof(sub));
    if (sublen < 1 || memchr(sub, '\0', (size_t)sublen) != NULL)
        return TOKEN_MALFORMED;

    /* Expiry: canonical decimal up to the next dot. */
    exp_txt = dot + 1;
    dot = memchr(exp_txt, '.', (size_t)(end - exp_txt));
    if (dot == NULL || parse_expires(exp_txt, (size_t)(dot - exp_txt), &exp) != 0)
        return TOKEN_MALFORMED;

    /* MAC: exactly 43 characters to the end, no further dot. */
    signed_len = (size_t)(dot - tok);
    if (end - (dot + 1) != MAC_B64_LEN ||
        b64_decode(dot + 1, MAC_B64_LEN, mac, sizeof(mac)) != MAC_BYTES)
        return TOKEN_MALFORMED;
    if (subject != NULL && (size_t)sublen >= subjlen)
        return TOKEN_MALFORMED;

    if (mac_compute(s, tok, signed_len, want) != 0 || CRYPTO_memcmp(mac, want, MAC_BYTES) != 0)
        return TOKEN_BAD_SIGNATURE;
    if (exp != 0 && exp < now)
        return TOKEN_EXPIRED;

    if (kind != NULL)
        *kind = (enum token_kind)k;
    if (subject != NULL) {
        memcpy(subject, sub, (size_t)sublen);
        subject[sublen] = '\0';
    }
    if (expires != NULL)
        *expires = exp;
    return TOKEN_OK;
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
