/*
 * error.h — an error answer as a value: the HTTP status, the stable word
 * clients and tests key on, a sentence for people, a few numbers the client
 * can act on (a limit, a bound) and header lines (Retry-After,
 * WWW-Authenticate).
 *
 * Validators fill one and return -1; the handler that called them answers it
 * once (conn_respond_error), so the choice of status and body is made in one
 * place per endpoint and never deep in the stack. The body is always
 *   {"status":"<word>"[,"error":"<sentence>"][,"<key>":<number>...]}
 * in that order.
 */
#ifndef NUDGE_HTTP_ERROR_H
#define NUDGE_HTTP_ERROR_H

#include <stddef.h>
#include <stdint.h>

/* Numbers an error may carry: "min" and "max" of a bound at most. */
#define HTTP_ERROR_NUMS 2

struct http_error {
    int status;                           /* 0: no error */
    const char *word;                     /* the "status" value: "bad-request", ... */
    char msg[512];                        /* the "error" value; "" for none */
    unsigned nnums;
    const char *num_key[HTTP_ERROR_NUMS];
    uint64_t num_val[HTTP_ERROR_NUMS];
    char extra[320];                      /* header lines, each ending in "\r\n"; "" for none */
};

/*
 * Sets e to status/word with the sentence printf(fmt, ...) (fmt NULL: no
 * sentence), clearing numbers and headers. 'word' must be a literal or
 * outlive e. Returns -1, so a validator can `return http_error_set(...)`.
 */
int http_error_set(struct http_error *e, int status, const char *word, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* http_error_set(e, 400, "bad-request", fmt, ...): the most common error. Returns -1. */
int http_error_bad(struct http_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Adds "key":val to the body ('key' a literal); beyond HTTP_ERROR_NUMS it is dropped. */
void http_error_num(struct http_error *e, const char *key, uint64_t val);

/* Appends one header line, printf(fmt, ...) followed by "\r\n". */
void http_error_header(struct http_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The JSON body of e, malloc'd (the caller frees it); *len gets its length. */
char *http_error_body(const struct http_error *e, size_t *len);

#endif
