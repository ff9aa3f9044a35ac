/*
 * principal.h — who sent a request, as the router established it from its
 * credential, handed to every route handler. A handler acting for a user
 * uses 'subject' as the user id, never a name from the request.
 */
#ifndef NUDGE_PRINCIPAL_H
#define NUDGE_PRINCIPAL_H

#include "auth/token.h"

/* The longest device id a credential can be bound to (push/check.h DEVICE_ID_MAX). */
#define PRINCIPAL_DEVICE_MAX 128

struct principal {
    enum token_kind kind;      /* 0 for routes that need no credential */
    char subject[TOKEN_SUBJECT_MAX + 1];
    /* The device a single-use ticket was minted for; "" for every other credential. */
    char device[PRINCIPAL_DEVICE_MAX + 1];
};

#endif
