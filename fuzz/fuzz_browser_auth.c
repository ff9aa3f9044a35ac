/*
 * fuzz_browser_auth.c — libFuzzer target for the browser credentials'
 * parsers, which read what any client sends before anything is checked:
 * the ticket of ?ticket= (auth/ticket.c) and the Cookie header that holds
 * the login cookie (http/cookie.c). The first input byte chooses which.
 *
 * Besides "no crash, no sanitizer report", it checks their contracts: a
 * parsed ticket has a NUL-terminated user and device of the lengths it
 * claims, within their bounds, and a ticket signed from those fields parses
 * back to them; a found cookie value lies inside the header.
 *
 *   make fuzz         builds build-fuzz/fuzz_browser_auth
 *   make fuzz-smoke   a short run (20000 inputs) from fuzz/corpus/browser_auth
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/ticket.h"
#include "http/cookie.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ticket_case(const char *t, size_t n)
{
    static struct secret key; /* all zero: the fuzzer cannot forge a MAC anyway */
    struct ticket_fields f, g;
    char again[TICKET_MAX + 1];
    int len;

    if (ticket_parse(t, n, &f) != TICKET_OK)
        return;
    if (f.user_len == 0 || f.user_len > TOKEN_SUBJECT_MAX || strlen(f.user) != f.user_len ||
        f.device_len == 0 || f.device_len > TICKET_DEVICE_MAX ||
        strlen(f.device) != f.device_len || f.expires <= 0 || f.signed_len >= n)
        abort();
    (void)ticket_check(&key, t, &f, 0, 0);
    len = ticket_sign(&key, f.user, f.device, f.expires, f.issued_ms, again, sizeof(again));
    if (len <= 0 || ticket_parse(again, (size_t)len, &g) != TICKET_OK ||
        strcmp(g.user, f.user) != 0 || strcmp(g.device, f.device) != 0 ||
        g.expires != f.expires || g.issued_ms != f.issued_ms ||
        ticket_check(&key, again, &g, 0, 0) != TICKET_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1) {
        ticket_case((const char *)data + 1, size - 1);
    } else {
        /* An exact copy, so that ASan sees any read past the header's length. */
        char *h = malloc(size - 1 ? size - 1 : 1);
        const char *v;
        size_t n;
        if (h == NULL)
            return 0;
        memcpy(h, data + 1, size - 1);
        if (http_cookie_find(h, size - 1, "nudge_token", &v, &n) == 0 &&
            (v < h || v + n > h + (size - 1)))
            abort();
        free(h);
    }
    return 0;
}
