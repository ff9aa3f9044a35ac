/*
 * jsonw.h — a small JSON writer for nudge's answers.
 *
 * Answers are flat and few (a status, a folder map, a list of states), and
 * the ping answer is on the fan-out hot path, so they are written straight
 * into one growing buffer instead of building a jansson tree per answer.
 * Parsing stays with jansson. Strings are escaped per RFC 8259 section 7;
 * input is already valid UTF-8 (it came through jansson or was checked).
 */
#ifndef NUDGE_JSONW_H
#define NUDGE_JSONW_H

#include <stddef.h>
#include <stdint.h>

struct jsonw {
    char *buf;
    size_t len, cap;
    int need_comma;
};

void jw_init(struct jsonw *w);
void jw_free(struct jsonw *w);
/* Hands the NUL-terminated buffer to the caller (free() it); w is reset. */
char *jw_take(struct jsonw *w, size_t *len);

void jw_obj_begin(struct jsonw *w);          /* { */
void jw_obj_end(struct jsonw *w);            /* } */
void jw_arr_begin(struct jsonw *w);          /* [ */
void jw_arr_end(struct jsonw *w);            /* ] */
void jw_key(struct jsonw *w, const char *k); /* "k": */
void jw_str(struct jsonw *w, const char *s);
void jw_strn(struct jsonw *w, const char *s, size_t n);
void jw_u64(struct jsonw *w, uint64_t v);
void jw_bool(struct jsonw *w, int v);          /* true / false */
void jw_u64_str(struct jsonw *w, uint64_t v); /* a state: "18" */
/* Appends s[0..n) as it is (text around JSON: an event stream's fields); no comma follows. */
void jw_raw(struct jsonw *w, const char *s, size_t n);

#endif
