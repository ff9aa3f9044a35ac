/*
 * csp.c — the Content-Security-Policy of a page with inline CSS and JS; see
 * csp.h. Runs once per page at start-up: a scan of the page for its tags
 * and one SHA-256 per block.
 */
#include "http/csp.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

/* The first occurrence of needle in h[0..n), or NULL. */
static const char *find(const char *h, size_t n, const char *needle)
{
    return memmem(h, n, needle, strlen(needle));
}

/*
 * Appends " 'sha256-<base64>'" for each block between 'open' and 'close' in
 * html[0..len) to out at *at. 0, or -1 (unclosed block, too many, no room).
 */
static int hashes(const char *html, size_t len, const char *open, const char *close, char *out,
                  size_t outlen, size_t *at)
{
    const char *p = html, *end = html + len;
    unsigned blocks = 0;

    while ((p = find(p, (size_t)(end - p), open)) != NULL) {
        const char *body = p + strlen(open), *stop;
        unsigned char md[32];
        /* base64 of 32 bytes: 44 characters and a NUL. */
        unsigned char b64[45];
        unsigned mdlen = 0;
        int n;

        stop = find(body, (size_t)(end - body), close);
        if (stop == NULL || ++blocks > HTTP_CSP_BLOCKS)
            return -1;
        if (EVP_Digest(body, (size_t)(stop - body), md, &mdlen, EVP_sha256(), NULL) != 1 ||
            mdlen != sizeof(md))
            return -1;
        EVP_EncodeBlock(b64, md, (int)sizeof(md));
        n = snprintf(out + *at, outlen - *at, " 'sha256-%s'", (const char *)b64);
        if (n < 0 || (size_t)n >= outlen - *at)
            return -1;
        *at += (size_t)n;
        p = stop + strlen(close);
    }
    if (blocks == 0) {
        /* No block of this kind: none is allowed. */
        int n = snprintf(out + *at, outlen - *at, " 'none'");
        if (n < 0 || (size_t)n >= outlen - *at)
            return -1;
        *at += (size_t)n;
    }
    return 0;
}

/* Appends s to out at *at; 0, or -1 when it does not fit. */
static int put(char *out, size_t outlen, size_t *at, const char *s)
{
    size_t n = strlen(s);

    if (*at + n >= outlen)
        return -1;
    memcpy(out + *at, s, n + 1);
    *at += n;
    return 0;
}

int http_csp_inline(const char *html, size_t len, char *out, size_t outlen)
{
    size_t at = 0;

    if (outlen == 0)
        return -1;
    /* connect-src 'self': the page's fetch and EventSource go to this server only. */
    if (put(out, outlen, &at,
            "Content-Security-Policy: default-src 'none'; connect-src 'self'; img-src 'self'; "
            "style-src") < 0 ||
        hashes(html, len, "<style>", "</style>", out, outlen, &at) < 0 ||
        put(out, outlen, &at, "; script-src") < 0 ||
        hashes(html, len, "<script>", "</script>", out, outlen, &at) < 0 ||
        put(out, outlen, &at, "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n") <
            0)
        return -1;
    return (int)at;
}
