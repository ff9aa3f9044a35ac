/* jsonw.c — see jsonw.h. */
#include "common/jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/xalloc.h"

void jw_init(struct jsonw *w)
{
    w->cap = 256;
    w->buf = xmalloc(w->cap);
    w->len = 0;
    w->buf[0] = '\0';
    w->need_comma = 0;
}

void jw_free(struct jsonw *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

char *jw_take(struct jsonw *w, size_t *len)
{
    char *b = w->buf;
    if (len)
        *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return b;
}

static void put(struct jsonw *w, const char *s, size_t n)
{
    if (w->len + n + 1 > w->cap) {
        while (w->len + n + 1 > w->cap)
            w->cap *= 2;
        w->buf = xrealloc(w->buf, w->cap);
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void comma(struct jsonw *w)
{
    if (w->need_comma)
        put(w, ",", 1);
    w->need_comma = 1;
}

void jw_obj_begin(struct jsonw *w)
{
    comma(w);
    put(w, "{", 1);
    w->need_comma = 0;
}

void jw_obj_end(struct jsonw *w)
{
    put(w, "}", 1);
    w->need_comma = 1;
}

void jw_arr_begin(struct jsonw *w)
{
    comma(w);
    put(w, "[", 1);
    w->need_comma = 0;
}

void jw_arr_end(struct jsonw *w)
{
    put(w, "]", 1);
    w->need_comma = 1;
}

static void escaped(struct jsonw *w, const char *s, size_t n)
{
    size_t start = 0;

    put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        put(w, s + start, i - start);
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            put(w, esc, 2);
        } else {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            put(w, esc, 6);
        }
        start = i + 1;
    }
    put(w, s + start, n - start);
    put(w, "\"", 1);
}

void jw_key(struct jsonw *w, const char *k)
{
    comma(w);
    escaped(w, k, strlen(k));
    put(w, ":", 1);
    w->need_comma = 0;
}

void jw_str(struct jsonw *w, const char *s)
{
    jw_strn(w, s, strlen(s));
}

void jw_strn(struct jsonw *w, const char *s, size_t n)
{
    comma(w);
    escaped(w, s, n);
}

void jw_u64(struct jsonw *w, uint64_t v)
{
    char num[UTIL_U64_DIGITS];
    size_t n = util_u64_dec(num, v);
    comma(w);
    put(w, num, n);
}

void jw_bool(struct jsonw *w, int v)
{
    comma(w);
    if (v)
        put(w, "true", 4);
    else
        put(w, "false", 5);
}

void jw_u64_str(struct jsonw *w, uint64_t v)
{
    char num[UTIL_U64_DIGITS];
    size_t n = util_u64_dec(num, v);
    comma(w);
    escaped(w, num, n);
}

void jw_raw(struct jsonw *w, const char *s, size_t n)
{
    put(w, s, n);
    w->need_comma = 0;
}
