/*
 * ticket.c — signing, checking and spending single-use tickets (format in
 * ticket.h and docs/auth.md).
 *
 * Parsing is strict and allocates nothing, like token.c, whose base64url
 * and HMAC it uses, so both formats have one spelling and one MAC code.
 *
 * The used set: each redeemed ticket is one 40-byte entry (its nonce as
 * text, its expiry, a link) in a hash map by nonce and in a list in the
 * order of redemption. Every ticket lives [auth] ticket_ttl, so that order
 * is nearly the order of expiry: redeeming first drops the expired entries
 * at the head, which makes the set's work per redemption O(1) amortized
 * and its size at most the tickets redeemed within one ttl. A ticket
 * redeemed late in its life may sit behind a younger one and be kept up to
 * one ttl longer than needed; nothing is forgotten early. At tickets_max
 * entries, none expired, a redemption is refused (fail closed) rather than
 * forgetting a ticket that could then be used again.
 */
#include "auth/ticket.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/strmap.h"
#include "common/util.h"
#include "common/xalloc.h"

#define NONCE_B64_LEN 22 /* base64url of 16 bytes, unpadded */
#define MAC_B64_LEN 43
#define KEY_ID_LEN 8
#define DIGITS_MAX 19    /* INT64_MAX */
/* base64url of the longest user (255 bytes) and device (128 bytes). */
#define USER_B64_MAX 340
#define DEVICE_B64_MAX 171

_Static_assert(3 + USER_B64_MAX + DEVICE_B64_MAX + 2 * DIGITS_MAX + NONCE_B64_LEN + KEY_ID_LEN +
                       MAC_B64_LEN + 7 <= TICKET_MAX,
               "TICKET_MAX must hold the longest ticket");

/* Writes v >= 0 in decimal at out (no NUL); returns the length. */
static size_t put_decimal(char *out, int64_t v)
{
    char digits[DIGITS_MAX + 1];
    size_t n = 0, k = 0;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        out[k++] = digits[--n];
    return k;
}

int ticket_sign(const struct secret *s, const char *user, const char *device, int64_t expires,
                int64_t issued_ms, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char nonce[TICKET_NONCE_BYTES], mac[TOKEN_MAC_BYTES];
    char text[TICKET_MAX + 1];
    size_t ulen, dlen, n = 0;

    if (user == NULL || device == NULL || expires <= 0 || issued_ms < 0)
        return -EINVAL;
    ulen = strnlen(user, TOKEN_SUBJECT_MAX + 1);
    dlen = strnlen(device, TICKET_DEVICE_MAX + 1);
    if (ulen == 0 || ulen > TOKEN_SUBJECT_MAX || dlen == 0 || dlen > TICKET_DEVICE_MAX)
        return -EINVAL;
    if (RAND_bytes(nonce, sizeof(nonce)) != 1)
        return -EIO;
    /* Written into a buffer of the longest size, then copied: the length is known only then. */
    memcpy(text, "t1.", 3);
    n = 3;
    token_b64_encode((const unsigned char *)user, ulen, text + n);
    n += token_b64_len(ulen);
    text[n++] = '.';
    token_b64_encode((const unsigned char *)device, dlen, text + n);
    n += token_b64_len(dlen);
    text[n++] = '.';
    n += put_decimal(text + n, expires);
    text[n++] = '.';
    n += put_decimal(text + n, issued_ms);
    text[n++] = '.';
    token_b64_encode(nonce, sizeof(nonce), text + n);
    n += NONCE_B64_LEN;
    text[n++] = '.';
    for (int i = 0; i < KEY_ID_LEN; i++)
        text[n++] = hex[(s->id >> (28 - 4 * i)) & 15];
    if (token_mac(s->key, text, n, mac) != 0)
        return -EIO;
    text[n++] = '.';
    token_b64_encode(mac, sizeof(mac), text + n);
    n += MAC_B64_LEN;
    if (n + 1 > outlen)
        return -ENOSPC;
    memcpy(out, text, n);
    out[n] = '\0';
    return (int)n;
}

/* The next field of [*p, end) up to a dot, *p moved past the dot; its length or -1. */
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

/* A base64url field decoding to 1..max bytes without NUL, NUL-terminated into out[max + 1]. */
static int decode_name(const char *field, long n, long b64max, char *out, size_t max,
                       size_t *len)
{
    long got;

    if (n < 0 || n > b64max || field == NULL)
        return -1;
    got = token_b64_decode(field, (size_t)n, (unsigned char *)out, max);
    if (got < 1 || memchr(out, '\0', (size_t)got) != NULL)
        return -1;
    out[got] = '\0';
    *len = (size_t)got;
    return 0;
}

enum ticket_status ticket_parse(const char *t, size_t len, struct ticket_fields *f)
{
    const char *p, *end, *field = NULL;
    long n;

    if (t == NULL || len < 3 || len > TICKET_MAX || memcmp(t, "t1.", 3) != 0)
        return TICKET_MALFORMED;
    p = t + 3;
    end = t + len;
    n = next_field(&p, end, &field);
    if (decode_name(field, n, USER_B64_MAX, f->user, TOKEN_SUBJECT_MAX, &f->user_len) < 0)
        return TICKET_MALFORMED;
    n = next_field(&p, end, &field);
    if (decode_name(field, n, DEVICE_B64_MAX, f->device, TICKET_DEVICE_MAX, &f->device_len) < 0)
        return TICKET_MALFORMED;
    n = next_field(&p, end, &field);
    if (n < 0 || token_parse_decimal(field, (size_t)n, &f->expires) < 0 || f->expires == 0)
        return TICKET_MALFORMED;
    n = next_field(&p, end, &field);
    if (n < 0 || token_parse_decimal(field, (size_t)n, &f->issued_ms) < 0)
        return TICKET_MALFORMED;
    n = next_field(&p, end, &field);
    if (n != NONCE_B64_LEN ||
        token_b64_decode(field, NONCE_B64_LEN, f->nonce, sizeof(f->nonce)) != TICKET_NONCE_BYTES)
        return TICKET_MALFORMED;
    n = next_field(&p, end, &field);
    if (n != KEY_ID_LEN)
        return TICKET_MALFORMED;
    f->key_id = 0;
    for (long i = 0; i < n; i++) {
        int d = util_hex_lower(field[i]);
        if (d < 0)
            return TICKET_MALFORMED;
        f->key_id = f->key_id << 4 | (uint32_t)d;
    }
    /* The MAC: exactly 43 characters to the end, no further dot. */
    f->signed_len = (size_t)(p - 1 - t);
    if (end - p != MAC_B64_LEN ||
        token_b64_decode(p, MAC_B64_LEN, f->mac, sizeof(f->mac)) != TOKEN_MAC_BYTES)
        return TICKET_MALFORMED;
    return TICKET_OK;
}

/* Does key sign t's f? */
static int mac_matches(const unsigned char *key, const char *t, const struct ticket_fields *f)
{
    unsigned char want[TOKEN_MAC_BYTES];

    return token_mac(key, t, f->signed_len, want) == 0 &&
           CRYPTO_memcmp(f->mac, want, TOKEN_MAC_BYTES) == 0;
}

/* An OpenSSL failure is a bad signature: fail closed, as token_check does. */
enum ticket_status ticket_check(const struct secret *s, const char *t,
                                const struct ticket_fields *f, int64_t now, uint64_t revoked_ms)
{
    int ok = (f->key_id == s->id && mac_matches(s->key, t, f)) ||
             (s->has_previous && f->key_id == s->previous_id && f->key_id != s->id &&
              mac_matches(s->previous, t, f));

    if (!ok)
        return TICKET_BAD_SIGNATURE;
    if (f->expires < now)
        return TICKET_EXPIRED;
    if (revoked_ms != 0 && (uint64_t)f->issued_ms <= revoked_ms)
        return TICKET_REVOKED;
    return TICKET_OK;
}

const char *ticket_status_str(enum ticket_status st)
{
    switch (st) {
    case TICKET_OK: return "ok";
    case TICKET_MALFORMED: return "malformed ticket";
    case TICKET_BAD_SIGNATURE: return "bad ticket signature";
    case TICKET_EXPIRED: return "ticket expired";
    case TICKET_REVOKED: return "ticket revoked";
    case TICKET_USED: return "ticket already used";
    case TICKET_STALE: return "ticket issued before the server restarted: get a new one";
    case TICKET_FULL: return "too many tickets in use; try again shortly";
    }
    return "unknown ticket status";
}

/* ---- the used set ------------------------------------------------------ */

struct spent_entry {
    struct spent_entry *next;      /* the next one redeemed */
    int64_t expires;
    char key[NONCE_B64_LEN + 1];   /* the nonce as base64url: the map's key */
};

struct ticket_spent {
    struct strmap by_nonce;        /* key -> struct spent_entry */
    struct spent_entry *head, *tail;
    unsigned count, max;
    int64_t since_ms;
};

struct ticket_spent *ticket_spent_new(unsigned max, int64_t since_ms)
{
    struct ticket_spent *sp = xcalloc(1, sizeof(*sp));

    strmap_init(&sp->by_nonce);
    sp->max = max;
    sp->since_ms = since_ms;
    return sp;
}

void ticket_spent_free(struct ticket_spent *sp)
{
    struct spent_entry *e, *next;

    if (sp == NULL)
        return;
    for (e = sp->head; e != NULL; e = next) {
        next = e->next;
        free(e);
    }
    strmap_free(&sp->by_nonce);
    free(sp);
}

unsigned ticket_spent_count(const struct ticket_spent *sp)
{
    return sp->count;
}

enum ticket_status ticket_spend(struct ticket_spent *sp, const struct ticket_fields *f,
                                int64_t now, unsigned *retry_after)
{
    char key[NONCE_B64_LEN + 1];
    struct spent_entry *e;

    if (f->issued_ms < sp->since_ms)
        return TICKET_STALE;
    /* Expired tickets are refused before this, so their entries are of no more use. */
    while ((e = sp->head) != NULL && e->expires < now) {
        strmap_del(&sp->by_nonce, e->key, NONCE_B64_LEN);
        sp->head = e->next;
        if (sp->head == NULL)
            sp->tail = NULL;
        sp->count--;
        free(e);
    }
    token_b64_encode(f->nonce, TICKET_NONCE_BYTES, key);
    key[NONCE_B64_LEN] = '\0';
    if (strmap_get(&sp->by_nonce, key, NONCE_B64_LEN) != NULL)
        return TICKET_USED;
    if (sp->count >= sp->max) {
        /* The head goes first: when it expires (at most one ttl away), there is room. */
        int64_t wait = sp->head ? sp->head->expires - now + 1 : 1;
        *retry_after = wait < 1 ? 1 : (unsigned)wait;
        return TICKET_FULL;
    }
    e = xmalloc(sizeof(*e));
    e->next = NULL;
    e->expires = f->expires;
    memcpy(e->key, key, sizeof(e->key));
    strmap_put(&sp->by_nonce, e->key, NONCE_B64_LEN, e);
    if (sp->tail)
        sp->tail->next = e;
    else
        sp->head = e;
    sp->tail = e;
    sp->count++;
    return TICKET_OK;
}
