/*
 * xalloc.h — allocators that abort on failure.
 *
 * Used only where running out of memory leaves nothing sensible to do
 * (start-up, small bookkeeping objects). Paths that can refuse a request
 * instead (request bodies, per-connection buffers) call malloc directly and
 * answer 503.
 */
#ifndef NUDGE_XALLOC_H
#define NUDGE_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
