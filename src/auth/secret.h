/*
 * secret.h — the server secret that signs every token.
 *
 * Stored in one file: 64 hexadecimal characters (32 random bytes from
 * OpenSSL's RAND_bytes) and a newline. After a rotation (secret_rotate) a
 * second such line holds the previous key: new tokens are signed with the
 * first, tokens signed with the second are still accepted until they
 * expire, so rotating logs nobody out. Each key has an id, the first 4
 * bytes of its SHA-256, which a token names (token.h) so that checking it
 * costs one MAC whichever key signed it. nudged creates it on first start with
 * mode 0600 (created with O_EXCL so two starting processes cannot both write
 * one); the `nudge` client only reads it. A secret file that others can read
 * (mode & 077) is refused, like ssh refuses a readable private key.
 */
#ifndef NUDGE_SECRET_H
#define NUDGE_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define SECRET_BYTES 32

struct secret {
    unsigned char key[SECRET_BYTES];      /* the current key: it signs new tokens */
    uint32_t id;                          /* its id */
    int has_previous;                     /* the file holds a previous key */
    unsigned char previous[SECRET_BYTES]; /* the key before the last rotation, still accepted */
    uint32_t previous_id;
};

/*
 * Loads the secret from 'path'. If the file does not exist and 'create' is
 * non-zero, creates it (and no parent directories: callers create data_dir)
 * and sets *created = 1. Returns 0, or -1 with 'err' naming the path, the
 * problem and the fix ("... is readable by others: chmod 600 ...").
 */
int secret_load(const char *path, int create, int *created, struct secret *out, char *err,
                size_t errlen);

/*
 * Rotates the secret at 'path': a new random key becomes the current one
 * and the current one the previous (the one before that is dropped). The
 * file is replaced whole (a new file renamed over it), mode 0600. nudged
 * signs with the new key once it has read the file again (a restart).
 * Returns 0 with *out the new secret, or -1 with err set.
 */
int secret_rotate(const char *path, struct secret *out, char *err, size_t errlen);

/* The id of key[SECRET_BYTES]: the first 4 bytes of its SHA-256, big-endian. */
uint32_t secret_key_id(const unsigned char *key);

#endif
