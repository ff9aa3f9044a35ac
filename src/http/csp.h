/*
 * csp.h — a Content-Security-Policy for a page whose CSS and JS are inline.
 *
 * A page embedded in the binary (admin/status.c) carries its style and its
 * script in the HTML itself, so that it needs nothing else; a policy of
 * 'self' alone would forbid both, and 'unsafe-inline' would allow any
 * script an injected string managed to put in the page. CSP Level 2 lets a
 * policy name the exact inline blocks by their SHA-256 instead: this module
 * finds them and writes that policy, once, at start-up.
 */
#ifndef NUDGE_HTTP_CSP_H
#define NUDGE_HTTP_CSP_H

#include <stddef.h>

/* The most inline <style> and <script> blocks hashed each. */
#define HTTP_CSP_BLOCKS 4
/* Room for a policy with HTTP_CSP_BLOCKS hashes of each kind (a hash is 53 bytes quoted). */
#define HTTP_CSP_MAX 1024

/*
 * Writes into out[outlen] the header line (with its "\r\n")
 *
 *   Content-Security-Policy: default-src 'none'; connect-src 'self';
 *   img-src 'self'; style-src 'sha256-...'; script-src 'sha256-...';
 *   base-uri 'none'; form-action 'none'; frame-ancestors 'none'
 *
 * for html[0..len): every block opened exactly by "<style>" or "<script>"
 * (lower case, no attributes: the page is ours, and a tag with attributes
 * is not looked for) up to its closing tag is hashed over the bytes between
 * the tags, as browsers hash them. Returns the line's length, or -1 when a
 * block is not closed, there are more than HTTP_CSP_BLOCKS of a kind, or
 * the line does not fit.
 */
int http_csp_inline(const char *html, size_t len, char *out, size_t outlen);

#endif
