/*
 * passwd.c — the backends chosen by name, and the cache and the coalescing
 * in front of them; see passwd.h.
 *
 * The cache key is SHA-256 over a random salt, the user and the password
 * (the salt is absorbed once into a context that each key copies: one
 * context copy and two short updates per check, ~1 us). Entries of each
 * kind (right and wrong passwords) live equally long, so each kind is one
 * FIFO whose head expires first, with a hash map beside it; each FIFO holds
 * at most [auth] cache_max entries, so wrong guesses can never push the
 * right passwords out.
 *
 * Memory is per signed-in user, so an entry is kept small: a 128-bit key (a
 * keyed hash, so collisions need the secret salt), expiry in seconds, a
 * 32-bit digest of the generation, and the user name only when the backend
 * named someone other than the login: 48 bytes of heap plus its map slot
 * (was 80; bench/activesync.py measures it).
 */
#include "auth/passwd.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/config.h"
#include "common/metrics.h"
#include "common/strmap.h"
#include "common/util.h"
#include "common/xalloc.h"

#define KEY_BYTES 16

/* A verified (or refused) password. */
struct entry {
    struct entry *next;         /* the next to expire in its FIFO */
    uint32_t expires;           /* s, monotonic */
    uint32_t gen;               /* generation() it was answered under */
    uint8_t dead;               /* replaced or dropped from the map; freed at its turn */
    uint8_t as_login;           /* right, and the user to act for is the login itself */
    unsigned char key[KEY_BYTES];
    char user[];                /* else the user to act for; "" for a refused password */
};

struct fifo {
    struct entry *head, *tail;
    uint32_t count;
    uint64_t ttl_ms;
};

/* A check waiting for the backend's answer to the same user and password. */
struct waiter {
    struct waiter *next;
    passwd_done_fn done;
    void *arg;
};

/* One question out at the backend, and everyone waiting for its answer. */
struct pending {
    struct passwords *p;
    int keyed;                  /* key is set: cache the answer (OpenSSL may have failed to hash) */
    uint32_t gen;               /* generation() when it was asked */
    unsigned char key[KEY_BYTES];
    char *login;                /* the user name asked for (keyed only) */
    struct waiter *waiters;
};

struct passwords {
    const struct passwd_backend *be;
    void *bs;                   /* the backend's state */
    struct metrics *metrics;
    EVP_MD_CTX *salted;         /* SHA-256 with the salt absorbed */
    EVP_MD_CTX *scratch;        /* a copy of it per key: the loop is one thread */
    struct strmap cache;        /* key -> struct entry */
    struct fifo ok, fail;
    uint32_t max;
    struct strmap pending;      /* key -> struct pending */
    uint64_t epoch;             /* reloads so far: an answer from before one is not used */
};

static const struct passwd_backend *const backends[] = {
    &passwd_dovecot_backend,
    &passwd_file_backend,
};

int passwd_open(struct passwords **out, const char *spec, uv_loop_t *loop, const struct config *cfg,
                struct metrics *metrics, char *err, size_t errlen)
{
    const struct passwd_backend *be = NULL;
    const char *colon = strchr(spec, ':');
    unsigned char salt[32];
    struct passwords *p;
    char why[512];

    for (size_t i = 0; colon && i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strlen(backends[i]->name) == (size_t)(colon - spec) &&
            memcmp(backends[i]->name, spec, (size_t)(colon - spec)) == 0)
            be = backends[i];
    if (be == NULL || colon[1] == '\0') {
        snprintf(err, errlen,
                 "[auth] passwords = %s: expected dovecot:/path/to/auth-client-socket or "
                 "passwd-file:/path/to/file",
                 spec);
        return -1;
    }
    p = xcalloc(1, sizeof(*p));
    p->be = be;
    p->metrics = metrics;
    p->ok.ttl_ms = (uint64_t)cfg->auth_cache_ttl * 1000;
    p->fail.ttl_ms = (uint64_t)cfg->auth_negative_ttl * 1000;
    p->max = cfg->auth_cache_max;
    strmap_init(&p->cache);
    strmap_init(&p->pending);
    p->salted = EVP_MD_CTX_new();
    p->scratch = EVP_MD_CTX_new();
    if (p->salted == NULL || p->scratch == NULL || RAND_bytes(salt, sizeof(salt)) != 1 ||
        EVP_DigestInit_ex(p->salted, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(p->salted, salt, sizeof(salt)) != 1) {
        snprintf(err, errlen, "[auth] passwords: OpenSSL could not set up the cache's hash");
        goto fail;
    }
    OPENSSL_cleanse(salt, sizeof(salt));
    if (be->open(&p->bs, colon + 1, loop, cfg, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "[auth] passwords (%s): %s", be->name, why);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    EVP_MD_CTX_free(p->salted);
    EVP_MD_CTX_free(p->scratch);
    free(p);
    return -1;
}

/* The cache key of (user, password). 0, or -1 when OpenSSL fails (then nothing is cached). */
static int key_of(struct passwords *p, const struct passwd_request *rq, unsigned char *key)
{
    EVP_MD_CTX *c = p->scratch;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int rc;

    /* The NUL between them: "ab"+"c" and "a"+"bc" must not share a key. */
    rc = EVP_MD_CTX_copy_ex(c, p->salted) == 1 &&
                 EVP_DigestUpdate(c, rq->user, strlen(rq->user) + 1) == 1 &&
                 EVP_DigestUpdate(c, rq->password, strlen(rq->password)) == 1 &&
                 EVP_DigestFinal_ex(c, md, &n) == 1 && n >= KEY_BYTES
             ? 0
             : -1;
    if (rc == 0)
        memcpy(key, md, KEY_BYTES);
    OPENSSL_cleanse(md, sizeof(md));
    return rc;
}

/* Drops the entries at the heads of f that expired, or that are beyond the bound. */
static void expire(struct passwords *p, struct fifo *f, uint64_t now)
{
    while (f->head && (f->head->expires <= now / 1000 || f->count > p->max)) {
        struct entry *e = f->head;
        f->head = e->next;
        if (f->head == NULL)
            f->tail = NULL;
        if (!e->dead)
            strmap_del(&p->cache, (const char *)e->key, KEY_BYTES);
        f->count--;
        free(e);
    }
}

/*
 * The reloads and the backend's generation now, folded into 32 bits: an
 * entry lives one TTL, in which neither moves by anything near the
 * multiplier, so two different moments never fold alike.
 */
static uint32_t generation(struct passwords *p)
{
    uint64_t g = p->be->generation ? p->be->generation(p->bs) : 0;

    return (uint32_t)(p->epoch * 1000003u + g);
}

/* user: whom the backend named (NULL: refused); login: who asked. */
static void remember(struct passwords *p, const unsigned char *key, uint32_t gen, const char *user,
                     const char *login)
{
    struct fifo *f = user ? &p->ok : &p->fail;
    int as_login = user && login && strcmp(user, login) == 0;
    size_t ulen = user && !as_login ? strlen(user) : 0;
    struct entry *e, *old;

    if (f->ttl_ms == 0 || p->max == 0)
        return;
    e = xcalloc(1, offsetof(struct entry, user) + ulen + 1);
    memcpy(e->key, key, KEY_BYTES);
    memcpy(e->user, user && !as_login ? user : "", ulen + 1);
    e->as_login = (uint8_t)as_login;
    /* Rounded up: a TTL of 1 s lasts 1 to 2 s, never a few ms. */
    e->expires = (uint32_t)((util_now_ms() + f->ttl_ms + 999) / 1000);
    e->gen = gen;
    old = strmap_put(&p->cache, (const char *)e->key, KEY_BYTES, e);
    if (old)
        old->dead = 1; /* its FIFO frees it in turn */
    if (f->tail)
        f->tail->next = e;
    else
        f->head = e;
    f->tail = e;
    f->count++;
    expire(p, f, 0);
}

/* The backend answered: remember it, then tell everyone who asked. */
static void on_answer(void *arg, enum passwd_status st, const char *user)
{
    struct pending *pd = arg;
    struct passwords *p = pd->p;
    struct waiter *w = pd->waiters, *next;

    if (pd->keyed)
        strmap_del(&p->pending, (const char *)pd->key, KEY_BYTES);
    if (st == PASSWD_OK && (user == NULL || user[0] == '\0' || strlen(user) > PASSWD_USER_MAX))
        st = PASSWD_FAIL; /* a backend that names nobody has not said who */
    if (pd->keyed && (st == PASSWD_OK || st == PASSWD_FAIL))
        remember(p, pd->key, pd->gen, st == PASSWD_OK ? user : NULL, pd->login);
    for (; w; w = next) {
        next = w->next;
        w->done(w->arg, st, st == PASSWD_OK ? user : NULL);
        free(w);
    }
    free(pd->login);
    free(pd);
}

/* The cache's answer for key: PASSWD_OK (user copied), PASSWD_FAIL, or PASSWD_PENDING (not known). */
static enum passwd_status lookup(struct passwords *p, const unsigned char *key, const char *login,
                                 char *user_out)
{
    const char *user;
    uint64_t now = util_now_ms();
    struct entry *e;

    expire(p, &p->ok, now);
    expire(p, &p->fail, now);
    e = strmap_get(&p->cache, (const char *)key, KEY_BYTES);
    /* Answered from a source that changed since: ask again (the answer replaces it). */
    if (e == NULL || e->gen != generation(p))
        return PASSWD_PENDING;
    p->metrics->password_cache_hits++;
    if (!e->as_login && e->user[0] == '\0')
        return PASSWD_FAIL;
    user = e->as_login ? login : e->user;
    memcpy(user_out, user, strlen(user) + 1);
    return PASSWD_OK;
}

int passwd_cached_ok(struct passwords *p, const struct passwd_request *rq, char *user_out)
{
    unsigned char key[KEY_BYTES];

    return key_of(p, rq, key) == 0 && lookup(p, key, rq->user, user_out) == PASSWD_OK;
}

enum passwd_status passwd_check(struct passwords *p, const struct passwd_request *rq, char *user_out,
                                passwd_done_fn done, void *arg)
{
    unsigned char key[KEY_BYTES];
    enum passwd_status st;
    struct waiter *w;
    struct pending *pd;

    if (key_of(p, rq, key) < 0) {
        /* Not cached, not coalesced: asked alone. */
        p->metrics->password_backend_requests++;
        pd = xcalloc(1, sizeof(*pd));
        pd->p = p;
        pd->waiters = xcalloc(1, sizeof(*pd->waiters));
        pd->waiters->done = done;
        pd->waiters->arg = arg;
        p->be->verify(p->bs, rq, on_answer, pd);
        return PASSWD_PENDING;
    }
    if ((st = lookup(p, key, rq->user, user_out)) != PASSWD_PENDING)
        return st;
    w = xcalloc(1, sizeof(*w));
    w->done = done;
    w->arg = arg;
    pd = strmap_get(&p->pending, (const char *)key, KEY_BYTES);
    if (pd) {
        w->next = pd->waiters;
        pd->waiters = w;
        return PASSWD_PENDING;
    }
    pd = xcalloc(1, sizeof(*pd));
    pd->p = p;
    pd->keyed = 1;
    pd->gen = generation(p);
    pd->login = xstrdup(rq->user);
    memcpy(pd->key, key, KEY_BYTES);
    pd->waiters = w;
    strmap_put(&p->pending, (const char *)pd->key, KEY_BYTES, pd);
    p->metrics->password_backend_requests++;
    p->be->verify(p->bs, rq, on_answer, pd);
    return PASSWD_PENDING;
}

void passwd_reload(struct passwords *p)
{
    if (p == NULL)
        return;
    /* An admin who changed a password and reloads expects it to count now, cache or not. */
    p->epoch++;
    if (p->be->reload)
        p->be->reload(p->bs);
}

void passwd_stop(struct passwords *p)
{
    if (p)
        p->be->stop(p->bs);
}

static void free_fifo(struct fifo *f)
{
    while (f->head) {
        struct entry *e = f->head;
        f->head = e->next;
        OPENSSL_cleanse(e->key, KEY_BYTES);
        free(e);
    }
}

void passwd_free(struct passwords *p)
{
    if (p == NULL)
        return;
    p->be->free(p->bs);
    free_fifo(&p->ok);
    free_fifo(&p->fail);
    strmap_free(&p->cache);
    strmap_free(&p->pending);
    EVP_MD_CTX_free(p->salted);
    EVP_MD_CTX_free(p->scratch);
    free(p);
}
