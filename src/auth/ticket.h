/*
 * ticket.h — single-use tickets: the credential a browser puts in the URL
 * of an EventSource or a WebSocket, which cannot set an Authorization
 * header (docs/auth.md "Browsers: cookie, ticket, CORS").
 *
 * Format:
 *
 *   t1.<b64(user)>.<b64(device)>.<expires>.<issued>.<nonce>.<key id>.<mac>
 *
 *   user     the user id it acts for, 1..255 bytes without NUL
 *   device   the device it was minted for, 1..128 bytes without NUL
 *   expires  Unix time in seconds, decimal, no leading zero; never 0
 *   issued   Unix time in ms, decimal: revocation and restarts (below)
 *   nonce    16 random bytes, base64url (22 characters): what "used" is
 *            remembered by
 *   key id   the signing key's id, 8 lower-case hexadecimal digits (secret.h)
 *   mac      HMAC-SHA256 under that key of everything before the last dot
 *
 * Every field is spelled exactly one way (base64url as in token.h), so a
 * ticket has one valid text. It is signed like a token but is no token:
 * the "t1." prefix keeps token_parse from taking it, and a token from
 * being taken as a ticket.
 *
 * Single use is the job of the worker that owns the user (the router
 * routes on the user read by ticket_parse before anything is checked):
 * ticket_spend remembers each redeemed nonce until its ticket expires, in
 * a set bounded by [auth] tickets_max. The set is in memory, so a ticket
 * issued before the set began (the worker restarted) is refused: nothing
 * remembers whether it was used.
 */
#ifndef NUDGE_TICKET_H
#define NUDGE_TICKET_H

#include <stddef.h>
#include <stdint.h>

#include "auth/secret.h"
#include "auth/token.h"

#define TICKET_DEVICE_MAX 128
#define TICKET_NONCE_BYTES 16
/*
 * The longest ticket: "t1." + 340 (user) + 171 (device) + 19 + 19 digits +
 * 22 (nonce) + 8 (key id) + 43 (mac) + 7 dots = 632; rounded up.
 */
#define TICKET_MAX 640
/* The longest [auth] ticket_ttl: a ticket is for the next request, not for later. */
#define TICKET_TTL_MAX 300

enum ticket_status {
    TICKET_OK = 0,
    TICKET_MALFORMED = -1,     /* not of the format above */
    TICKET_BAD_SIGNATURE = -2, /* format fine, MAC does not match */
    TICKET_EXPIRED = -3,       /* signature fine, expires < now */
    TICKET_REVOKED = -4,       /* issued at or before its user's tokens were revoked */
    TICKET_USED = -5,          /* redeemed before */
    TICKET_STALE = -6,         /* issued before this worker's set of used tickets began */
    TICKET_FULL = -7,          /* tickets_max tickets are in use: cannot remember one more */
};

struct ticket_fields {
    char user[TOKEN_SUBJECT_MAX + 1];    /* NUL-terminated */
    size_t user_len;
    char device[TICKET_DEVICE_MAX + 1];  /* NUL-terminated */
    size_t device_len;
    int64_t expires;
    int64_t issued_ms;
    unsigned char nonce[TICKET_NONCE_BYTES];
    uint32_t key_id;
    size_t signed_len;                   /* the bytes the MAC covers */
    unsigned char mac[TOKEN_MAC_BYTES];
};

/*
 * Writes a NUL-terminated ticket for (user, device) into out[outlen],
 * signed with the current key of s, issued at issued_ms, with a fresh
 * random nonce. Returns its length, or -EINVAL (user or device empty, too
 * long, expires <= 0, issued_ms < 0), -ENOSPC (TICKET_MAX + 1 always
 * fits), -EIO (no random bytes, or OpenSSL failed).
 */
int ticket_sign(const struct secret *s, const char *user, const char *device, int64_t expires,
                int64_t issued_ms, char *out, size_t outlen);

/*
 * Splits t[0..len) into f: TICKET_OK or TICKET_MALFORMED. Nothing in f is
 * to be trusted but for routing until ticket_check says TICKET_OK.
 */
enum ticket_status ticket_parse(const char *t, size_t len, struct ticket_fields *f);

/*
 * Checks the MAC (under the key the id names: current or previous), then
 * the expiry (valid up to and including the second 'expires'), then the
 * user's revocation time revoked_ms (0: never revoked). TICKET_OK,
 * TICKET_BAD_SIGNATURE, TICKET_EXPIRED or TICKET_REVOKED.
 */
enum ticket_status ticket_check(const struct secret *s, const char *t,
                                const struct ticket_fields *f, int64_t now, uint64_t revoked_ms);

/* "ok", "malformed ticket", "bad ticket signature", "ticket expired", ... */
const char *ticket_status_str(enum ticket_status st);

/* ---- the used tickets of one worker ------------------------------------ */

struct ticket_spent;

/*
 * A set of at most 'max' used tickets, which refuses tickets issued before
 * since_ms (the worker's start: what it cannot know about). Aborts when
 * out of memory (start-up).
 */
struct ticket_spent *ticket_spent_new(unsigned max, int64_t since_ms);
void ticket_spent_free(struct ticket_spent *sp);

/*
 * Redeems the checked ticket f at 'now' (Unix s): TICKET_OK (it is now
 * used), TICKET_USED, TICKET_STALE, or TICKET_FULL with *retry_after the
 * seconds until a place frees up. Tickets past their expiry are forgotten
 * on the way, oldest first.
 */
enum ticket_status ticket_spend(struct ticket_spent *sp, const struct ticket_fields *f,
                                int64_t now, unsigned *retry_after);

/* Used tickets remembered now. */
unsigned ticket_spent_count(const struct ticket_spent *sp);

#endif
