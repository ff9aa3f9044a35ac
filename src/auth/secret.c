/*
 * secret.c — loading and creating the server secret file (see secret.h).
 *
 * The file holds 64 lower-case hexadecimal characters and a newline, and
 * after a rotation a second such line with the previous key; upper case is
 * accepted on reading so a secret made by other tools works too.
 * Anything else is refused rather than guessed at: a secret that silently
 * changed would invalidate every token in circulation.
 *
 * Creation must never let a second process see a half-written file, nor
 * replace a secret that already exists. The key is therefore written to a
 * temporary file with a random name (open with O_CREAT|O_EXCL, mode 0600),
 * synced, and then hard-linked to the final name: link() fails with EEXIST
 * if another process got there first, in which case we read theirs. A crash
 * between the two steps leaves only a stray "<path>.tmp.<random>" file, never
 * an empty or partial secret. The random suffix (rather than the pid) keeps
 * two containers that are both pid 1 and share a data volume apart.
 *
 * Cost: a handful of system calls once at start-up (nudged) or per command
 * (nudge).
 */
#include "auth/secret.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/* 64 hexadecimal characters; one more byte for the optional newline. */
#define SECRET_HEX (2 * SECRET_BYTES)
/* The longest valid file: two keys, each with its newline. */
#define SECRET_FILE_MAX (2 * (SECRET_HEX + 1))

uint32_t secret_key_id(const unsigned char *key)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    /* SHA-256 cannot fail on 32 bytes short of a broken library: then every id is 0. */
    if (EVP_Digest(key, SECRET_BYTES, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 4)
        return 0;
    return (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
}

/* Decodes 64 checked hexadecimal characters into key. */
static void hex_decode(const char *hex, unsigned char *key)
{
    for (size_t i = 0; i < SECRET_BYTES; i++)
        key[i] = (unsigned char)(util_hex_value(hex[2 * i]) << 4 | util_hex_value(hex[2 * i + 1]));
}

/* The index of the first byte of hex[0..64) that is not a hexadecimal digit, or -1. */
static long bad_hex(const char *hex)
{
    for (size_t i = 0; i < SECRET_HEX; i++)
        if (util_hex_value(hex[i]) < 0)
            return (long)i;
    return -1;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

/* Writes all of buf, retrying short writes and EINTR. Returns 0, or -errno. */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Reads and checks the secret from an open fd. Reads at most a few bytes past
 * the valid length, so a huge file given by mistake costs nothing.
 */
static int read_secret(int fd, const char *path, struct secret *out, char *err, size_t errlen)
{
    char buf[SECRET_FILE_MAX + 1];
    size_t n = 0;
    struct stat st;
    long bad;
    int rc = -1, two;

    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "%s: mode %04o lets group or others read the secret; run: chmod 600 %s", path,
                 (unsigned)(st.st_mode & 07777), path);
        return -1;
    }
    while (n < sizeof(buf)) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n == 0) {
        snprintf(err, errlen,
                 "%s: empty file; expected 64 hexadecimal characters and an optional newline",
                 path);
        goto out;
    }
    /* One key and an optional newline, or two keys, the first with its newline. */
    two = (n == 2 * SECRET_HEX + 1 || (n == SECRET_FILE_MAX && buf[SECRET_FILE_MAX - 1] == '\n')) &&
          buf[SECRET_HEX] == '\n';
    if (!two && !(n == SECRET_HEX || (n == SECRET_HEX + 1 && buf[SECRET_HEX] == '\n'))) {
        if (n < SECRET_HEX)
            snprintf(err, errlen,
                     "%s: expected 64 hexadecimal characters and an optional newline, got %zu "
                     "byte%s",
                     path, n, n == 1 ? "" : "s");
        else
            snprintf(err, errlen,
                     "%s: expected 64 hexadecimal characters and an optional newline (after a "
                     "rotation, a second such line), got more than %d bytes",
                     path, SECRET_HEX + 1);
        goto out;
    }
    /* The offending byte is not echoed: the file is secret. */
    bad = bad_hex(buf);
    if (bad < 0 && two && (bad = bad_hex(buf + SECRET_HEX + 1)) >= 0)
        bad += SECRET_HEX + 1;
    if (bad >= 0) {
        snprintf(err, errlen,
                 "%s: byte %ld is not a hexadecimal digit; expected 64 hexadecimal "
                 "characters and an optional newline",
                 path, bad + 1);
        goto out;
    }
    memset(out, 0, sizeof(*out));
    hex_decode(buf, out->key);
    out->id = secret_key_id(out->key);
    if (two) {
        hex_decode(buf + SECRET_HEX + 1, out->previous);
        out->previous_id = secret_key_id(out->previous);
        out->has_previous = 1;
    }
    rc = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

/* Makes the link to a new file durable; best effort, see below. */
static void sync_parent_dir(const char *path)
{
    char copy[PATH_MAX];
    int dfd;

    if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy))
        return;
    dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    /*
     * Failing here does not undo anything: the secret exists and is in use.
     * At worst a power cut loses the new name and the next start makes
     * another secret, which the tokens minted in between did not survive
     * anyway. So this is not reported.
     */
    (void)fsync(dfd);
    close(dfd);
}

/*
 * Creates the secret at 'path' as described in the file header. Returns 0
 * with out filled, -EEXIST when another process created 'path' first (the
 * caller then reads that one), or -1 with err set.
 */
static int create_secret(const char *path, struct secret *out, char *err, size_t errlen)
{
    unsigned char key[SECRET_BYTES], suffix[8];
    char hex[SECRET_HEX + 1], tmp[PATH_MAX], sfx[2 * sizeof(suffix) + 1];
    int fd = -1, rc = -1;

    if (RAND_bytes(key, sizeof(key)) != 1 || RAND_bytes(suffix, sizeof(suffix)) != 1) {
        snprintf(err, errlen, "%s: cannot create: OpenSSL's RAND_bytes failed", path);
        goto fail;
    }
    hex_encode(suffix, sizeof(suffix), sfx);
    sfx[2 * sizeof(suffix)] = '\0';
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%s", path, sfx) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "%s: cannot create: path too long", path);
        goto fail;
    }
    fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto fail;
    }
    hex_encode(key, sizeof(key), hex);
    hex[SECRET_HEX] = '\n';
    /* fchmod: a umask such as 0277 would otherwise leave the owner unable to read it. */
    if (fchmod(fd, 0600) != 0 || write_all(fd, hex, sizeof(hex)) != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: cannot write %s: %s", path, tmp, strerror(errno));
        goto fail_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "%s: cannot write %s: %s", path, tmp, strerror(errno));
        goto fail_unlink;
    }
    fd = -1;
    if (link(tmp, path) != 0) {
        if (errno == EEXIST)
            rc = -EEXIST;
        else
            snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto fail_unlink;
    }
    unlink(tmp);
    sync_parent_dir(path);
    memset(out, 0, sizeof(*out));
    memcpy(out->key, key, sizeof(key));
    out->id = secret_key_id(out->key);
    rc = 0;
    goto fail;

fail_unlink:
    unlink(tmp);
fail:
    if (fd >= 0)
        close(fd);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(hex, sizeof(hex));
    return rc;
}

int secret_load(const char *path, int create, int *created, struct secret *out, char *err,
                size_t errlen)
{
    if (created != NULL)
        *created = 0;
    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "secret file: empty path");
        return -1;
    }
    /* Two rounds: if we lose the creation race, the second open finds the winner's file. */
    for (int round = 0; round < 2; round++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

        if (fd >= 0) {
            rc = read_secret(fd, path, out, err, errlen);
            close(fd);
            return rc;
        }
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
            return -1;
        }
        if (!create) {
            snprintf(err, errlen,
                     "%s: no such file; nudged creates it on first start, or point to it with "
                     "--secret-file PATH or -c nudged.conf",
                     path);
            return -1;
        }
        rc = create_secret(path, out, err, errlen);
        if (rc == 0) {
            if (created != NULL)
                *created = 1;
            return 0;
        }
        if (rc != -EEXIST)
            return -1;
    }
    snprintf(err, errlen, "%s: cannot open: appeared and vanished while being created", path);
    return -1;
}

int secret_rotate(const char *path, struct secret *out, char *err, size_t errlen)
{
    struct secret cur;
    unsigned char suffix[8];
    char text[SECRET_FILE_MAX], tmp[PATH_MAX], sfx[2 * sizeof(suffix) + 1];
    int fd = -1, rc = -1;

    if (secret_load(path, 0, NULL, &cur, err, errlen) < 0)
        return -1;
    if (RAND_bytes(out->key, SECRET_BYTES) != 1 || RAND_bytes(suffix, sizeof(suffix)) != 1) {
        snprintf(err, errlen, "%s: cannot rotate: OpenSSL's RAND_bytes failed", path);
        goto done;
    }
    out->id = secret_key_id(out->key);
    memcpy(out->previous, cur.key, SECRET_BYTES);
    out->previous_id = cur.id;
    out->has_previous = 1;
    hex_encode(suffix, sizeof(suffix), sfx);
    sfx[2 * sizeof(suffix)] = '\0';
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%s", path, sfx) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "%s: cannot rotate: path too long", path);
        goto done;
    }
    hex_encode(out->key, SECRET_BYTES, text);
    text[SECRET_HEX] = '\n';
    hex_encode(out->previous, SECRET_BYTES, text + SECRET_HEX + 1);
    text[SECRET_FILE_MAX - 1] = '\n';
    fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot rotate: %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    /* Written whole, synced, then renamed over the old file: a reader sees the old or the new. */
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, sizeof(text)) != 0 || fsync(fd) != 0 ||
        close(fd) != 0) {
        snprintf(err, errlen, "%s: cannot rotate: writing %s: %s", path, tmp, strerror(errno));
        fd = -1;
        unlink(tmp);
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot rotate: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    sync_parent_dir(path);
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    OPENSSL_cleanse(&cur, sizeof(cur));
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}
