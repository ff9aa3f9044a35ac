/*
 * log.h — one line per noteworthy event:
 *
 *   ts=2026-11-22T02:45:00.123Z level=info event=1001 name=listening addr=127.0.0.1:8080
 *
 * Every line names a stable event id from events.h. Values that may hold
 * spaces, quotes or control characters (user ids, reasons) go through
 * log_q() so a line always splits cleanly on spaces.
 */
#ifndef NUDGE_LOG_H
#define NUDGE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/events.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sends log lines to 'out' (stderr when NULL), dropping those below 'min'. */
void log_init(FILE *out, enum log_level min);

/*
 * Sends log lines to a target: "stderr", "file" (appended to 'path' with
 * O_APPEND, so the processes of one server share it line by line),
 * "syslog" (the daemon facility, ident nudged) or "journal" (systemd's
 * native protocol, with NUDGE_EVENT, NUDGE_EVENT_NAME and NUDGE_WORKER
 * fields). 'burst': lines of one event per 10 s, the rest counted (0: all).
 * 0, or -1 with err set (the file cannot be opened).
 */
int log_open(const char *target, const char *path, unsigned burst, char *err, size_t errlen);

/* Opens the file again (after a rotation renamed it); other targets: nothing to do. 0 or -1. */
int log_reopen(char *err, size_t errlen);

/* Changes the least level written. */
void log_set_level(enum log_level min);

/*
 * Writes the count of lines held back for every event whose 10 s window
 * has ended. The log calls it itself on each line; a loop's timer calls it
 * so that the count of a flood that stopped is written too.
 */
void log_flush(void);
/* In a worker process: every line ends with worker=N (-1: none). */
void log_set_worker(int index);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

/* Writes one line; 'fmt' holds the event's own key=value pairs (may be ""). */
void log_event(enum log_level level, int id, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The least level written (log_init's 'min'); read by LOG before it builds anything. */
extern enum log_level log_threshold;

/*
 * Checks the level before the arguments are evaluated: a debug line's
 * fields (a peer address from getpeername, a quoted reason) cost a system
 * call and a format on every connection otherwise, even when nothing is
 * written.
 */
#define LOG(level, ev, ...)                                                                        \
    do {                                                                                           \
        if ((level) >= log_threshold)                                                              \
            log_event(level, EV_##ev, #ev, __VA_ARGS__);                                           \
    } while (0)

/* ---- the recent notable lines ------------------------------------------
 *
 * Each process keeps the last LOG_RECENT_LINES lines of a few events the
 * caller names (the status page shows them: session limits, dead peers,
 * network alerts, slow streams), in a fixed ring in memory: 48 slots of
 * 160 bytes, 7.5 KiB a process, nothing allocated, nothing freed. A line is
 * kept as it was written (below the level threshold or coalesced away it
 * is not written, so not kept either), without its ts= field, cut at a
 * character boundary to LOG_RECENT_TEXT - 1 bytes, bytes that are not
 * UTF-8 replaced by '?' so that it can go into JSON as it is.
 */
#define LOG_RECENT_LINES 48
#define LOG_RECENT_TEXT 144
#define LOG_RECENT_KINDS 8

struct log_recent {
    int64_t ts_ms;                 /* wall clock, ms since the epoch */
    uint16_t event;
    uint8_t level;                 /* enum log_level */
    char text[LOG_RECENT_TEXT];    /* "level=warn event=1301 name=... worker=1", NUL-terminated */
};

/* Keeps lines of the events ids[0..n) from now on (at most LOG_RECENT_KINDS; n 0: none). */
void log_recent_keep(const int *ids, size_t n);

/* Copies the kept lines, oldest first, into out[0..max); returns how many. */
size_t log_recent_copy(struct log_recent *out, size_t max);

/*
 * Copies s[0..n) into out[outlen] (NUL-terminated) as valid UTF-8: each byte
 * that does not start a well-formed sequence (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF) becomes '?', and a character that
 * does not fit whole is left out. Returns the length written.
 */
size_t log_utf8_copy(char *out, size_t outlen, const char *s, size_t n);

/* The name of a level ("debug", "info", "warn", "error"). */
const char *log_level_name(enum log_level level);

/*
 * Returns 's' fit for a key=value log field: as is when it has no space,
 * quote, backslash, '=' or control byte, else double-quoted with escapes,
 * written into buf (cut to fit 'n'). A NULL 's' is logged as "-".
 */
const char *log_q(char *buf, size_t n, const char *s);

#endif
