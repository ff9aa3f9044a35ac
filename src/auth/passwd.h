/*
 * passwd.h — checking a user's mail password against the mail server's own
 * list, through a backend chosen by name ([auth] passwords = NAME:PATH),
 * like the store:
 *
 *   dovecot      Dovecot's authentication service over its client socket
 *                (passwd_dovecot.c): every passdb Dovecot has (passwd-file,
 *                LDAP, SQL, PAM) works unchanged;
 *   passwd-file  a file in Dovecot's passwd-file format, hashes checked with
 *                libcrypt (passwd_file.c), for a nudge without Dovecot.
 *
 * In front of the backend, a cache of verified passwords: a million phones
 * re-pinging with HTTP Basic must not ask the backend a million times. An
 * entry is keyed by a salted hash of user and password (the salt is random
 * per start, the password is never kept), holds the user name the backend
 * answered (Dovecot may rewrite it), and lives [auth] cache_ttl (a right
 * password) or negative_ttl (a wrong one), or until the backend's source
 * changed when it can tell (a passwd-file read again). Checks of the same user and
 * password that arrive while the first is with the backend wait for its
 * answer instead of asking again.
 *
 * Nothing here blocks the loop: backends answer later, through a callback.
 */
#ifndef NUDGE_PASSWD_H
#define NUDGE_PASSWD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct metrics;
struct passwords;

/* The longest user name a backend may answer (a user id's limit). */
#define PASSWD_USER_MAX 255

enum passwd_status {
    PASSWD_OK,           /* the password is right; the user is named */
    PASSWD_FAIL,         /* wrong password or no such user: the same answer for both */
    PASSWD_UNAVAILABLE,  /* the backend cannot say now (down, timed out): try again later */
    PASSWD_PENDING,      /* passwd_check only: the answer comes through the callback */
};

/* A check's answer: 'user' is the user name to act for (PASSWD_OK only, else NULL). */
typedef void (*passwd_done_fn)(void *arg, enum passwd_status st, const char *user);

/* What a check tells the backend besides the credential. */
struct passwd_request {
    const char *user;           /* as the client sent it, NUL-terminated */
    const char *password;       /* NUL-terminated */
    const char *peer;           /* the client's address as text, or NULL */
    int secured;                /* the password did not cross a network in clear */
};

/* A backend: a struct of function pointers, chosen by name (passwd_open). */
struct passwd_backend {
    const char *name;
    /* Opens the backend at 'path'. 0 with *out, or -1 with err set to one line. */
    int (*open)(void **out, const char *path, uv_loop_t *loop, const struct config *cfg,
                char *err, size_t errlen);
    /* Checks one password; done(arg, ...) runs later, exactly once, never from inside. */
    void (*verify)(void *be, const struct passwd_request *rq, passwd_done_fn done, void *arg);
    /* Looks at its source again (a changed file); NULL when there is nothing to reload. */
    void (*reload)(void *be);
    /*
     * A number that changes whenever the source changed (the file was read
     * again): answers cached under another are not used. NULL: the source
     * cannot say (Dovecot), and cached answers live their TTL.
     */
    uint64_t (*generation)(void *be);
    /* Stops: checks still pending are answered PASSWD_UNAVAILABLE; handles are closed. */
    void (*stop)(void *be);
    /* Frees it (after the loop ran its close callbacks). */
    void (*free)(void *be);
};

extern const struct passwd_backend passwd_dovecot_backend;
extern const struct passwd_backend passwd_file_backend;

/*
 * Opens the backend [auth] passwords names ("dovecot:/run/dovecot/auth-client",
 * "passwd-file:/etc/nudge/passwd") with cfg's cache settings, counting in
 * 'metrics'. 0 with *out, or -1 with err saying what is wrong and how to
 * write it.
 */
int passwd_open(struct passwords **out, const char *spec, uv_loop_t *loop, const struct config *cfg,
                struct metrics *metrics, char *err, size_t errlen);

/*
 * Checks rq. From the cache: PASSWD_OK with the user name copied into
 * user_out[PASSWD_USER_MAX + 1], or PASSWD_FAIL; done is not called.
 * Otherwise PASSWD_PENDING, and done(arg, ...) runs later, exactly once.
 */
enum passwd_status passwd_check(struct passwords *p, const struct passwd_request *rq, char *user_out,
                                passwd_done_fn done, void *arg);

/*
 * 1 when the cache holds rq as a right password (the user name copied as
 * passwd_check does), else 0; the backend is never asked. A client that
 * signed in before keeps working while its address or user is limited for
 * someone else's wrong guesses.
 */
int passwd_cached_ok(struct passwords *p, const struct passwd_request *rq, char *user_out);

/* SIGHUP: the backend looks at its source again, and no answer cached before is used. */
void passwd_reload(struct passwords *p);

/* Stops the backend: pending checks are answered PASSWD_UNAVAILABLE. */
void passwd_stop(struct passwords *p);

/* Frees p (after the loop ran its close callbacks); NULL is fine. */
void passwd_free(struct passwords *p);

#endif
