/*
 * basic.c — HTTP Basic credentials decoded; see basic.h.
 *
 * Base64 here is RFC 4648's standard alphabet with padding, as RFC 7617
 * asks; OpenSSL's EVP_DecodeBlock decodes it once the length is checked
 * (it counts padding as zero bytes, which are taken off again). Nothing is
 * allocated: the header is bounded by the request's header limit and the
 * result by BASIC_*_MAX.
 */
#include "auth/basic.h"

#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* The base64 of "user:password" at their longest, padded. */
#define B64_MAX (4 * ((BASIC_USER_MAX + 1 + BASIC_PASSWORD_MAX + 2) / 3))

int basic_is(const char *header)
{
    return header != NULL && strncasecmp(header, "Basic", 5) == 0 &&
           (header[5] == ' ' || header[5] == '\t');
}

int basic_decode(const char *header, struct basic_credential *c, const char **why)
{
    unsigned char dec[B64_MAX / 4 * 3 + 4];
    const char *b64, *colon;
    size_t len, pad;
    int n;

    memset(c, 0, sizeof(*c));
    if (!basic_is(header)) {
        *why = "expected Authorization: Basic <base64 of user:password>";
        return -1;
    }
    b64 = header + 6;
    while (*b64 == ' ' || *b64 == '\t')
        b64++;
    len = strlen(b64);
    while (len > 0 && (b64[len - 1] == ' ' || b64[len - 1] == '\t'))
        len--;
    if (len == 0 || len % 4 != 0 || len > B64_MAX) {
        *why = len > B64_MAX ? "the Basic credential is too long"
                             : "the Basic credential is not valid base64";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = b64[i];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '+' || ch == '/' || (ch == '=' && i >= len - 2);
        if (!ok || (i == len - 2 && ch == '=' && b64[len - 1] != '=')) {
            *why = "the Basic credential is not valid base64";
            return -1;
        }
    }
    n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)len);
    if (n < 0) {
        *why = "the Basic credential is not valid base64";
        return -1;
    }
    pad = (size_t)(b64[len - 1] == '=') + (size_t)(b64[len - 2] == '=');
    n -= (int)pad;
    colon = memchr(dec, ':', (size_t)n);
    if (colon == NULL) {
        *why = "the Basic credential has no ':' between user and password";
        goto fail;
    }
    c->user_len = (size_t)(colon - (const char *)dec);
    c->password_len = (size_t)n - c->user_len - 1;
    if (c->user_len == 0 || c->user_len > BASIC_USER_MAX) {
        *why = c->user_len == 0 ? "the Basic credential names no user"
                                : "the Basic credential's user is longer than 255 bytes";
        goto fail;
    }
    if (c->password_len > BASIC_PASSWORD_MAX) {
        *why = "the Basic credential's password is longer than 1024 bytes";
        goto fail;
    }
    for (size_t i = 0; i < c->user_len; i++)
        if (dec[i] < 0x20 || dec[i] == 0x7f) {
            *why = "the Basic credential's user holds a control character";
            goto fail;
        }
    if (memchr(colon + 1, '\0', c->password_len) != NULL) {
        *why = "the Basic credential's password holds a NUL byte";
        goto fail;
    }
    memcpy(c->user, dec, c->user_len);
    memcpy(c->password, colon + 1, c->password_len);
    OPENSSL_cleanse(dec, sizeof(dec));
    return 0;
fail:
    OPENSSL_cleanse(dec, sizeof(dec));
    basic_wipe(c);
    return -1;
}

void basic_wipe(struct basic_credential *c)
{
    OPENSSL_cleanse(c, sizeof(*c));
}
