/*
 * state_id.h — the states a stream's client has, as the text of an event
 * id (SSE's id:, a WebSocket's pushState): "1:" then name=state pairs,
 * comma separated, with % , = + and space in names written %XX. The client
 * sends it back (Last-Event-ID) and resumes from it; nothing else is kept.
 */
#ifndef NUDGE_STREAM_STATE_ID_H
#define NUDGE_STREAM_STATE_ID_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct jsonw;

/* The format's prefix (a later format can change it and still read this one). */
#define STATE_ID_PREFIX "1:"
/* A state the client does not have: a folder with it is reported. */
#define STATE_ID_UNKNOWN UINT64_MAX

/* Appends "name=state" (with a comma before it unless first) to the id in w. */
void state_id_entry(struct jsonw *w, const char *name, uint64_t state, int first);

/*
 * Reads id text h into the states of f[0..n); folders it does not name stay
 * as they are (STATE_ID_UNKNOWN). 0, or -1 when h cannot be read: then every
 * folder is STATE_ID_UNKNOWN (the client gets the full state, not an error).
 */
int state_id_read(const char *h, struct store_folder *f, size_t n);

#endif
