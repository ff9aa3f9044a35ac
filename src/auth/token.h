/*
 * token.h — signed bearer credentials.
 *
 * Format (documented in docs/auth.md):
 *
 *   v2.<kind>.<base64url(subject)>.<expires>.<issued>.<key id>.<base64url(mac)>
 *
 *   kind     'u' user, 'p' publisher, 'a' admin
 *   subject  the user id (any bytes but NUL, 1..255 bytes: e-mail addresses,
 *            names with dots or spaces), or a free label for p/a tokens
 *   expires  Unix time in seconds, decimal; 0 means "never"
 *   issued   Unix time in milliseconds, decimal: a user's tokens issued at or
 *            before the time an admin revoked them are refused
 *   key id   8 lower-case hexadecimal digits: which key of the secret signed
 *            it (secret.h), so a rotation keeps older tokens valid
 *   mac      HMAC-SHA256 with that key over everything before the last dot
 *            (32 bytes, unpadded)
 *
 * Tokens of the first format, v1.<kind>.<b64>.<expires>.<mac>, are still
 * accepted: they count as issued at 0 and are checked with the current key,
 * then the previous one.
 *
 * base64url is RFC 4648 section 5, without padding, so a token is safe in an
 * Authorization header, a URL or a shell argument. Verification compares the
 * MAC in constant time.
 */
#ifndef NUDGE_TOKEN_H
#define NUDGE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "auth/secret.h"

#define TOKEN_SUBJECT_MAX 255
/* Longest token: prefix + 4*ceil(255/3) + 2 * 19 digits + 8 + 43 mac + dots. */
#define TOKEN_MAX 512

/*
 * The per-user counter (a folder state, store.h STORE_INTERNAL) that holds
 * the time, in ms, at or before which the user's tokens were revoked.
 */
#define TOKEN_REVOKED_FOLDER "\x01tokens-revoked"

enum token_kind {
    TOKEN_USER = 'u',
    TOKEN_PUBLISHER = 'p',
    TOKEN_ADMIN = 'a',
};

enum token_status {
    TOKEN_OK = 0,
    TOKEN_MALFORMED = -1,     /* not of the format above */
    TOKEN_BAD_SIGNATURE = -2, /* format fine, MAC does not match */
    TOKEN_EXPIRED = -3,       /* signature fine, expires < now */
    TOKEN_REVOKED = -4,       /* a user token issued before its user's tokens were revoked */
};

/*
 * Writes a NUL-terminated token into out[outlen], signed with the current
 * key of s and issued now. 'subject' is 1..255 bytes without NUL. Returns
 * the token's length, or -EINVAL (bad kind or subject), or -ENOSPC (out too
 * small; TOKEN_MAX always fits).
 */
int token_sign(const struct secret *s, enum token_kind kind, const char *subject,
               int64_t expires, char *out, size_t outlen);

/* token_sign with an explicit issue time (Unix ms, >= 0). */
int token_sign_at(const struct secret *s, enum token_kind kind, const char *subject,
                  int64_t expires, int64_t issued_ms, char *out, size_t outlen);

/* Unix time in milliseconds (CLOCK_REALTIME): what a token's issue time is counted in. */
int64_t token_now_ms(void);

/*
 * Checks tok[0..len) at time 'now'. On TOKEN_OK sets *kind and copies the
 * subject NUL-terminated into subject[subjlen] (subjlen >= 256 always fits)
 * and *expires; otherwise leaves them unspecified. Never reads past len.
 */
enum token_status token_verify(const struct secret *s, const char *tok, size_t len, int64_t now,
                               enum token_kind *kind, char *subject, size_t subjlen,
                               int64_t *expires);

/* A token's fields as token_parse reads them, before anything is checked. */
#define TOKEN_MAC_BYTES 32
struct token_fields {
    int version;                         /* 1 or 2 */
    enum token_kind kind;
    char subject[TOKEN_SUBJECT_MAX + 1]; /* NUL-terminated: a subject holds no NUL */
    size_t subject_len;
    int64_t expires;
    int64_t issued_ms;                   /* 0 for v1 */
    uint32_t key_id;                     /* v2 only */
    size_t signed_len;                   /* the bytes the MAC covers */
    unsigned char mac[TOKEN_MAC_BYTES];
};

/*
 * token_verify in two steps, for a caller that acts on the fields before
 * the MAC is checked (a worker routing a request to the worker owning the
 * subject): token_parse splits tok[0..len) into f, TOKEN_OK or
 * TOKEN_MALFORMED; token_check then checks f's MAC and expiry against the
 * same tok. Nothing parsed grants access until token_check says TOKEN_OK.
 */
enum token_status token_parse(const char *tok, size_t len, struct token_fields *f);
enum token_status token_check(const struct secret *s, const char *tok,
                              const struct token_fields *f, int64_t now);

/*
 * Is a checked token revoked? 'revoked_ms' is its user's revocation time
 * (the state of TOKEN_REVOKED_FOLDER, 0: never). TOKEN_OK or TOKEN_REVOKED;
 * only user tokens are revoked this way.
 */
enum token_status token_revocation(const struct token_fields *f, uint64_t revoked_ms);

/* "ok", "malformed token", "bad signature", "token expired", "token revoked". */
const char *token_status_str(enum token_status st);

/*
 * Parses a duration such as "90", "90s", "15m", "12h", "30d", "1w" into
 * seconds. Returns 0, or -EINVAL (garbage, zero, or overflow).
 */
int token_parse_duration(const char *s, int64_t *seconds);

/*
 * The pieces every signed credential of auth/ shares (ticket.c): strict
 * base64url without padding (one valid spelling per byte string) and the
 * HMAC-SHA256 under one key of the secret, with the per-thread context.
 * token_b64_decode returns the decoded length, or -1 (bad character, bad
 * length, non-zero unused bits, more than outmax bytes). token_mac returns
 * 0, or -1 when OpenSSL failed.
 */
size_t token_b64_len(size_t n);
void token_b64_encode(const unsigned char *in, size_t n, char *out);

/*
 * A canonical decimal field of a token or ticket: digits only, no sign, no
 * leading zero but "0" itself, at most INT64_MAX (one spelling per value,
 * so a signed text has one meaning). 0, or -1.
 */
int token_parse_decimal(const char *p, size_t n, int64_t *out);
long token_b64_decode(const char *in, size_t n, unsigned char *out, size_t outmax);
int token_mac(const unsigned char *key, const char *data, size_t n,
              unsigned char mac[TOKEN_MAC_BYTES]);

#endif
