/*
 * secret.h — the server secret that signs every token.
 *
 * Stored in one file: 64 hexadecimal characters (32 random bytes from
 * OpenSSL's RAND_bytes) and a newline. nudged creates it on first start with
 * mode 0600 (created with O_EXCL so two starting processes cannot both write
 * one); the `nudge` client only reads it. A secret file that others can read
 * (mode & 077) is refused, like ssh refuses a readable private key.
 */
#ifndef NUDGE_SECRET_H
#define NUDGE_SECRET_H

#include <stddef.h>

#define SECRET_BYTES 32

struct secret {
    unsigned char key[SECRET_BYTES];
};

/*
 * Loads the secret from 'path'. If the file does not exist and 'create' is
 * non-zero, creates it (and no parent directories: callers create data_dir)
 * and sets *created = 1. Returns 0, or -1 with 'err' naming the path, the
 * problem and the fix ("... is readable by others: chmod 600 ...").
 */
int secret_load(const char *path, int create, int *created, struct secret *out, char *err,
                size_t errlen);

#endif
