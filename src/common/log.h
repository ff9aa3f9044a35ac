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

/*
 * Returns 's' fit for a key=value log field: as is when it has no space,
 * quote, backslash, '=' or control byte, else double-quoted with escapes,
 * written into buf (cut to fit 'n'). A NULL 's' is logged as "-".
 */
const char *log_q(char *buf, size_t n, const char *s);

#endif
