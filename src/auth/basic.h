/*
 * basic.h — the HTTP Basic credential (RFC 7617): "Basic " and the base64
 * of "user:password", decoded strictly. The user may not hold ':' (the
 * first one ends it) nor any control character; the password may hold
 * anything but NUL. What a mail client sends with every ActiveSync request,
 * and what /v1/login takes.
 */
#ifndef NUDGE_BASIC_H
#define NUDGE_BASIC_H

#include <stddef.h>

/* Longest user and password accepted: a user id's limit, and a generous passphrase. */
#define BASIC_USER_MAX 255
#define BASIC_PASSWORD_MAX 1024

struct basic_credential {
    char user[BASIC_USER_MAX + 1];          /* NUL-terminated */
    size_t user_len;
    char password[BASIC_PASSWORD_MAX + 1];  /* NUL-terminated; wipe it after use */
    size_t password_len;
};

/* Is header (an Authorization value) of the Basic scheme? (case-insensitive, as RFC 7235 says) */
int basic_is(const char *header);

/*
 * Decodes header ("Basic <base64>") into c. 0, or -1 with why pointing at a
 * reason fit for a 401 message ("the credential is not valid base64").
 */
int basic_decode(const char *header, struct basic_credential *c, const char **why);

/* Wipes c's password (and user). */
void basic_wipe(struct basic_credential *c);

#endif
