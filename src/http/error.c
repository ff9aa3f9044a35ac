/* error.c — error answers as values; see error.h. */
#include "http/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/jsonw.h"

int http_error_set(struct http_error *e, int status, const char *word, const char *fmt, ...)
{
    va_list ap;

    e->status = status;
    e->word = word;
    e->msg[0] = '\0';
    e->nnums = 0;
    e->extra[0] = '\0';
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return -1;
}

int http_error_bad(struct http_error *e, const char *fmt, ...)
{
    va_list ap;

    http_error_set(e, 400, "bad-request", NULL);
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

void http_error_num(struct http_error *e, const char *key, uint64_t val)
{
    if (e->nnums >= HTTP_ERROR_NUMS)
        return;
    e->num_key[e->nnums] = key;
    e->num_val[e->nnums++] = val;
}

void http_error_header(struct http_error *e, const char *fmt, ...)
{
    size_t n = strlen(e->extra);
    va_list ap;
    int k;

    /* Room for the line and its CRLF, or nothing: a cut header would corrupt the head. */
    va_start(ap, fmt);
    k = vsnprintf(e->extra + n, sizeof(e->extra) - n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k + 2 >= sizeof(e->extra) - n) {
        e->extra[n] = '\0';
        return;
    }
    memcpy(e->extra + n + (size_t)k, "\r\n", 3);
}

char *http_error_body(const struct http_error *e, size_t *len)
{
    struct jsonw w;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, e->word);
    if (e->msg[0]) {
        jw_key(&w, "error");
        jw_str(&w, e->msg);
    }
    for (unsigned i = 0; i < e->nnums; i++) {
        jw_key(&w, e->num_key[i]);
        jw_u64(&w, e->num_val[i]);
    }
    jw_obj_end(&w);
    return jw_take(&w, len);
}
