/*
 * passwd_file.c — the "passwd-file" password backend: a file in Dovecot's
 * passwd-file format, one user a line,
 *
 *   user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra fields]
 *
 * (blank lines and lines starting with '#' are skipped), so that a nudge
 * beside no Dovecot, or beside one whose users are in such a file already,
 * needs no list of its own. Hashes are checked with libcrypt (Debian's
 * libxcrypt): yescrypt ($y$), scrypt ($7$), SHA512-CRYPT ($6$), SHA256-CRYPT
 * ($5$) and BLF-CRYPT ($2b$, $2y$, $2a$), with the schemes {CRYPT},
 * {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT}, or no scheme (as Dovecot's
 * default, CRYPT). Plain-text schemes (PLAIN, CLEAR, ...), unsalted digests
 * and the weak crypt(3) methods (DES, MD5) are refused: the line is skipped
 * with a log event naming its number and why, never its hash.
 *
 * A hash costs milliseconds to tens of milliseconds of CPU by design, so it
 * is checked on libuv's thread pool, never on the loop. A user the file does
 * not name is checked against the first usable hash of the file and refused
 * whatever comes out: the answer takes as long as for a wrong password, so
 * its timing does not tell who exists.
 *
 * The file is read at start and again when it changed (size, mtime or inode
 * differ), looked at no more than once a second, as a check arrives (cached
 * or not: a read that changed the file is a new generation, and the cache
 * drops what it learnt before), and on passwd_reload (SIGHUP). A file that
 * cannot be read keeps the users of the last good read.
 */
#include "auth/passwd.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/config.h"
#include "common/log.h"
#include "common/strmap.h"
#include "common/util.h"
#include "common/xalloc.h"

/* A file larger than this is refused: 1 million users at ~130 bytes a line. */
#define FILE_MAX (128u * 1024 * 1024)
/* How often a check may look whether the file changed. */
#define STAT_EVERY_MS 1000

struct user_hash {
    char *hash;                 /* the crypt(3) string, "$6$salt$..." */
    char name[];
};

struct pwfile {
    uv_loop_t *loop;
    char path[CONFIG_STR_MAX];
    struct strmap users;        /* name -> struct user_hash */
    char *dummy;                /* the hash a name the file lacks is checked against */
    struct stat st;             /* of the last read */
    uint64_t looked_ms;         /* the last stat */
    unsigned inflight;          /* checks on the thread pool */
    int stopped;
    int broken;                 /* the last read failed (logged once) */
    uint64_t gen;               /* reads that changed the users: the cache's generation */
};

/* A check on the thread pool: copies of what it needs, nothing shared with the loop. */
struct job {
    uv_work_t work;
    struct pwfile *f;
    passwd_done_fn done;
    void *arg;
    int known;                  /* the file names the user */
    int match;                  /* out: the password matches */
    char *hash;
    char *password;
    char user[];
};

static void free_users(struct strmap *m)
{
    uint32_t pos = 0;
    const char *key;
    void *val;

    while (strmap_next(m, &pos, &key, &val)) {
        struct user_hash *u = val;
        free(u->hash);
        free(u);
    }
    strmap_free(m);
}

/* The crypt(3) hash of a password field, or NULL with *why (the line is refused). */
static const char *usable_hash(char *field, const char **why)
{
    static const char *const crypt_prefixes[] = {"$y$", "$gy$", "$7$", "$6$", "$5$",
                                                 "$2b$", "$2y$", "$2a$"};
    static const struct {
        const char *scheme;
        const char *prefix; /* NULL: any prefix of crypt_prefixes */
    } schemes[] = {
        {"CRYPT", NULL},        {"SHA512-CRYPT", "$6$"}, {"SHA256-CRYPT", "$5$"},
        {"BLF-CRYPT", "$2"},
    };
    static const char *const plain[] = {"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"};
    const char *hash = field, *prefix = NULL;
    int known = 1;

    if (field[0] == '{') {
        char *close = strchr(field, '}');
        if (close == NULL) {
            *why = "the password field opens a {SCHEME} it does not close";
            return NULL;
        }
        *close = '\0';
        hash = close + 1;
        known = 0;
        for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
            if (strcasecmp(field + 1, plain[i]) == 0) {
                *why = "a plain-text password scheme: store a hash (doveadm pw -s SHA512-CRYPT)";
                return NULL;
            }
        for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
            if (strcasecmp(field + 1, schemes[i].scheme) == 0) {
                known = 1;
                prefix = schemes[i].prefix;
            }
        if (!known) {
            *why = "not a crypt(3) scheme nudge checks: use SHA512-CRYPT, BLF-CRYPT or CRYPT "
                   "(yescrypt)";
            return NULL;
        }
    }
    if (prefix && strncmp(hash, prefix, strlen(prefix)) != 0) {
        *why = "the hash does not match its scheme";
        return NULL;
    }
    for (size_t i = 0; i < sizeof(crypt_prefixes) / sizeof(crypt_prefixes[0]); i++)
        if (strncmp(hash, crypt_prefixes[i], strlen(crypt_prefixes[i])) == 0)
            return hash;
    *why = hash[0] == '\0' ? "no password" : "a weak or unknown crypt(3) method (DES, MD5, ...)";
    return NULL;
}

/*
 * Reads the file into 'users' (and the dummy hash). 0, or -1 with err set
 * (the file could not be read at all). Refused lines are logged, one event each.
 */
static int load(struct pwfile *f, struct strmap *users, char **dummy, struct stat *st, char *err,
                size_t errlen)
{
    FILE *in = fopen(f->path, "re");
    char *line = NULL, q[300], qp[300];
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0, loaded = 0, refused = 0;

    strmap_init(users);
    *dummy = NULL;
    if (in == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", f->path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(in), st) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", f->path, strerror(errno));
        fclose(in);
        return -1;
    }
    if (!S_ISREG(st->st_mode) || st->st_size > FILE_MAX) {
        snprintf(err, errlen, "%s: %s", f->path,
                 !S_ISREG(st->st_mode) ? "not a regular file" : "larger than 128 MiB");
        fclose(in);
        return -1;
    }
    while ((n = getline(&line, &cap, in)) >= 0) {
        char *colon, *end;
        const char *hash, *why = NULL;
        struct user_hash *u;
        size_t ulen;

        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        colon = strchr(line, ':');
        ulen = colon ? (size_t)(colon - line) : 0;
        if (colon == NULL || ulen == 0 || ulen > PASSWD_USER_MAX) {
            why = colon == NULL ? "no ':' after the user name" : "the user name is empty or too long";
        } else {
            end = strchr(colon + 1, ':');
            if (end)
                *end = '\0';
            *colon = '\0';
            hash = usable_hash(colon + 1, &why);
            if (hash && strmap_get(users, line, ulen))
                why = "the user is named again (the first line counts)";
            if (hash && why == NULL) {
                u = xcalloc(1, sizeof(*u) + ulen + 1);
                memcpy(u->name, line, ulen + 1);
                u->hash = xstrdup(hash);
                strmap_put(users, u->name, ulen, u);
                if (*dummy == NULL)
                    *dummy = xstrdup(hash);
                loaded++;
                continue;
            }
        }
        refused++;
        LOG(LOG_WARN, passwd_line_refused, "path=%s line=%u reason=%s",
            log_q(qp, sizeof(qp), f->path), lineno, log_q(q, sizeof(q), why));
    }
    if (line) {
        OPENSSL_cleanse(line, cap);
        free(line);
    }
    fclose(in);
    LOG(LOG_INFO, passwords_ready, "backend=passwd-file path=%s users=%u refused=%u",
        log_q(qp, sizeof(qp), f->path), loaded, refused);
    return 0;
}

/* Reads the file again when it changed since the last read (or 'force'). */
static void refresh(struct pwfile *f, int force)
{
    struct strmap users;
    struct stat st;
    char *dummy, err[400], q[420];
    uint64_t now = util_now_ms();

    if (!force && now - f->looked_ms < STAT_EVERY_MS)
        return;
    f->looked_ms = now;
    if (stat(f->path, &st) == 0 && st.st_size == f->st.st_size && st.st_ino == f->st.st_ino &&
        st.st_mtim.tv_sec == f->st.st_mtim.tv_sec && st.st_mtim.tv_nsec == f->st.st_mtim.tv_nsec)
        return;
    if (load(f, &users, &dummy, &st, err, sizeof(err)) < 0) {
        /* Keep the users of the last good read: a file half-replaced must not lock everyone out. */
        if (!f->broken)
            LOG(LOG_WARN, passwords_unavailable, "backend=passwd-file reason=%s",
                log_q(q, sizeof(q), err));
        f->broken = 1;
        return;
    }
    f->broken = 0;
    free_users(&f->users);
    free(f->dummy);
    f->users = users;
    f->dummy = dummy;
    f->st = st;
    f->gen++;
}

static int pf_open(void **out, const char *path, uv_loop_t *loop, const struct config *cfg,
                   char *err, size_t errlen)
{
    struct pwfile *f;
    char *dummy;

    (void)cfg;
    if (strlen(path) >= sizeof(f->path)) {
        snprintf(err, errlen, "%s: the path is too long", path);
        return -1;
    }
    f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    snprintf(f->path, sizeof(f->path), "%s", path);
    if (load(f, &f->users, &dummy, &f->st, err, errlen) < 0) {
        free(f);
        return -1;
    }
    f->dummy = dummy;
    f->looked_ms = util_now_ms();
    *out = f;
    return 0;
}

/* On a thread of the pool: the expensive part. */
static void on_work(uv_work_t *w)
{
    /* A crypt_data per thread (32 KiB), zeroed once: libxcrypt reuses it safely. */
    static __thread struct crypt_data cd;
    struct job *j = w->data;
    const char *out;

    if (j->hash == NULL) {
        j->match = 0;
        return;
    }
    out = crypt_rn(j->password, j->hash, &cd, (int)sizeof(cd));
    j->match = out != NULL && out[0] != '*' && strlen(out) == strlen(j->hash) &&
               CRYPTO_memcmp(out, j->hash, strlen(j->hash)) == 0;
    OPENSSL_cleanse(cd.output, sizeof(cd.output));
}

static void free_job(struct job *j)
{
    OPENSSL_cleanse(j->password, strlen(j->password));
    free(j->password);
    free(j->hash);
    free(j);
}

/* Back on the loop: the answer. */
static void after_work(uv_work_t *w, int status)
{
    struct job *j = w->data;
    int ok = status == 0 && j->known && j->match;

    j->f->inflight--;
    if (status == UV_ECANCELED)
        j->done(j->arg, PASSWD_UNAVAILABLE, NULL);
    else
        j->done(j->arg, ok ? PASSWD_OK : PASSWD_FAIL, ok ? j->user : NULL);
    free_job(j);
}

static void pf_verify(void *be, const struct passwd_request *rq, passwd_done_fn done, void *arg)
{
    struct pwfile *f = be;
    size_t ulen = strlen(rq->user);
    struct user_hash *u;
    struct job *j;

    refresh(f, 0);
    u = strmap_get(&f->users, rq->user, ulen);
    j = xcalloc(1, sizeof(*j) + ulen + 1);
    j->f = f;
    j->done = done;
    j->arg = arg;
    j->known = u != NULL;
    memcpy(j->user, rq->user, ulen + 1);
    j->password = xstrdup(rq->password);
    j->hash = u ? xstrdup(u->hash) : f->dummy ? xstrdup(f->dummy) : NULL;
    j->work.data = j;
    f->inflight++;
    if (f->stopped || uv_queue_work(f->loop, &j->work, on_work, after_work) < 0) {
        /* Answered through the pool's callback all the same: a work that does nothing. */
        free(j->hash);
        j->hash = NULL;
        j->known = 0;
        if (uv_queue_work(f->loop, &j->work, on_work, after_work) < 0) {
            f->inflight--;
            free_job(j); /* cannot happen on a live loop; the caller then waits for its timeout */
        }
    }
}

static void pf_reload(void *be)
{
    refresh(be, 1);
}

/* Looks whether the file changed (at most once a second): the cache asks before it answers. */
static uint64_t pf_generation(void *be)
{
    struct pwfile *f = be;

    refresh(f, 0);
    return f->gen;
}

static void pf_stop(void *be)
{
    /* Checks on the pool end by themselves (a crypt is short); their answers still come. */
    ((struct pwfile *)be)->stopped = 1;
}

static void pf_free(void *be)
{
    struct pwfile *f = be;

    if (f == NULL)
        return;
    free_users(&f->users);
    free(f->dummy);
    free(f);
}

const struct passwd_backend passwd_file_backend = {
    .name = "passwd-file",
    .open = pf_open,
    .verify = pf_verify,
    .reload = pf_reload,
    .generation = pf_generation,
    .stop = pf_stop,
    .free = pf_free,
};
