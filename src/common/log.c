/*
 * log.c — the event log writer. Lines are assembled in a stack buffer and
 * written with one write(2), so lines from the processes of one server
 * sharing a file (O_APPEND) or stderr do not interleave.
 *
 * Targets: stderr or a FILE given by log_init, a file (reopened on SIGHUP
 * for logrotate), syslog, or journald's native protocol. To syslog and the
 * journal the line goes without its ts= field: both stamp lines themselves.
 *
 * Coalescing: each event id has a 10 s window; past [log] burst lines in
 * it the rest are only counted, and when the window ends one line
 * (event 1010) says how many were held back. A flood (a brute force, a
 * broken client in a loop) then costs a bounded amount of disk per event
 * and per process, and the first lines, which tell what happened, are kept.
 *
 * Recent lines: the lines of a few events the caller names are also kept,
 * the last LOG_RECENT_LINES of them, in a fixed ring (log.h); keeping one
 * costs a copy of at most LOG_RECENT_TEXT bytes.
 */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "common/util.h"

#define WINDOW_S 10
/* Event ids are 1000..2999 (events.h): one window each. */
#define ID_BASE 1000
#define ID_COUNT 2000

enum target { TARGET_STREAM, TARGET_FILE, TARGET_SYSLOG, TARGET_JOURNAL };

static FILE *log_out;
static enum target log_target = TARGET_STREAM;
static int log_fd = -1;               /* TARGET_FILE */
static char log_path[4096];
static unsigned log_burst;            /* 0: no coalescing */
enum log_level log_threshold = LOG_INFO;
static int log_worker = -1; /* appended as worker=N to every line of a worker process */

static struct window {
    time_t start;
    unsigned lines;      /* written in this window */
    unsigned held;       /* counted, not written */
    enum log_level level;
    const char *name;
} windows[ID_COUNT];
static time_t next_flush;  /* the earliest end of a window with lines held, 0: none */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static struct log_recent recent[LOG_RECENT_LINES];
static size_t recent_next;      /* the slot the next line goes to */
static size_t recent_count;     /* slots filled, up to LOG_RECENT_LINES */
static int recent_ids[LOG_RECENT_KINDS];
static size_t recent_nids;

_Static_assert(sizeof(recent) <= 8192, "the ring of recent lines is documented as 8 KiB at most");

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level]
                                                                          : "?";
}

void log_recent_keep(const int *ids, size_t n)
{
    if (n > LOG_RECENT_KINDS)
        n = LOG_RECENT_KINDS;
    if (n > 0)
        memcpy(recent_ids, ids, n * sizeof(*ids));
    recent_nids = n;
}

size_t log_recent_copy(struct log_recent *out, size_t max)
{
    size_t n = recent_count < max ? recent_count : max;
    /* The oldest of the n newest. */
    size_t first = (recent_next + LOG_RECENT_LINES - n) % LOG_RECENT_LINES;

    for (size_t i = 0; i < n; i++)
        out[i] = recent[(first + i) % LOG_RECENT_LINES];
    return n;
}

size_t log_utf8_copy(char *out, size_t outlen, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, i = 0;

    if (outlen == 0)
        return 0;
    while (i < n) {
        size_t len = util_utf8_seq(p + i, n - i);
        if (len == 0) {
            if (o + 1 >= outlen)
                break;
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + len >= outlen)
            break;
        memcpy(out + o, p + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
    return o;
}

/* Keeps the line[0..n) (no ts=, no newline) when its event is one of the kept ones. */
static void keep_recent(enum log_level level, int id, const struct timeval *tv, const char *line,
                        size_t n)
{
    struct log_recent *r;
    size_t i;

    for (i = 0; i < recent_nids && recent_ids[i] != id; i++)
        ;
    if (i == recent_nids)
        return;
    r = &recent[recent_next];
    r->ts_ms = (int64_t)tv->tv_sec * 1000 + tv->tv_usec / 1000;
    r->event = (uint16_t)id;
    r->level = (uint8_t)level;
    log_utf8_copy(r->text, sizeof(r->text), line, n);
    recent_next = (recent_next + 1) % LOG_RECENT_LINES;
    if (recent_count < LOG_RECENT_LINES)
        recent_count++;
}

void log_set_worker(int index)
{
    log_worker = index;
}

void log_init(FILE *out, enum log_level min)
{
    log_out = out;
    log_threshold = min;
}

void log_set_level(enum log_level min)
{
    log_threshold = min;
}

static int open_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

    if (fd < 0)
        snprintf(err, errlen, "[log] file %s: cannot open: %s", path, strerror(errno));
    return fd;
}

int log_open(const char *target, const char *path, unsigned burst, char *err, size_t errlen)
{
    log_burst = burst;
    if (strcmp(target, "file") == 0) {
        int fd = open_file(path, err, errlen);
        if (fd < 0)
            return -1;
        snprintf(log_path, sizeof(log_path), "%s", path);
        if (log_fd >= 0)
            close(log_fd);
        log_fd = fd;
        log_target = TARGET_FILE;
    } else if (strcmp(target, "syslog") == 0) {
        openlog("nudged", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        log_target = TARGET_SYSLOG;
    } else if (strcmp(target, "journal") == 0) {
        log_target = TARGET_JOURNAL;
    } else {
        log_target = TARGET_STREAM;
    }
    return 0;
}

int log_reopen(char *err, size_t errlen)
{
    int fd;

    if (log_target != TARGET_FILE)
        return 0;
    fd = open_file(log_path, err, errlen);
    if (fd < 0)
        return -1;
    /* dup2: the descriptor number stays, so no line in flight is lost or misdirected. */
    dup2(fd, log_fd);
    close(fd);
    return 0;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

static void emit(enum log_level level, int id, const char *name, char *line, size_t n,
                 size_t ts_len)
{
    static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
    ssize_t w;

    switch (log_target) {
    case TARGET_SYSLOG:
        line[n - 1] = '\0';
        syslog(prio[level], "%s", line + ts_len);
        line[n - 1] = '\n';
        return;
    case TARGET_JOURNAL:
        line[n - 1] = '\0';
        sd_journal_send("MESSAGE=%s", line + ts_len, "PRIORITY=%d", prio[level],
                        "SYSLOG_IDENTIFIER=nudged", "NUDGE_EVENT=%d", id, "NUDGE_EVENT_NAME=%s",
                        name, "NUDGE_WORKER=%d", log_worker, NULL);
        line[n - 1] = '\n';
        return;
    case TARGET_FILE:
        do
            w = write(log_fd, line, n);
        while (w < 0 && errno == EINTR);
        return;
    case TARGET_STREAM:
        fwrite(line, 1, n, log_out ? log_out : stderr);
        fflush(log_out ? log_out : stderr);
        return;
    }
}

/* Assembles and writes one line (no coalescing). */
static void write_line(enum log_level level, int id, const char *name, const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n, ts_len;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ", (long)(tv.tv_usec / 1000));
    ts_len = n;
    n += (size_t)snprintf(line + n, sizeof(line) - n, "level=%s event=%d name=%s",
                          level_names[level], id, name);
    if (fmt != NULL && fmt[0] != '\0' && n < sizeof(line) - 2) {
        line[n++] = ' ';
        int w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (w > 0)
            n += (size_t)w;
    }
    if (log_worker >= 0 && n < sizeof(line) - 16)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " worker=%d", log_worker);
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2; /* an over-long line is cut, never dropped */
    keep_recent(level, id, &tv, line + ts_len, n - ts_len);
    line[n++] = '\n';
    emit(level, id, name, line, n, ts_len);
}

static void line_of(enum log_level level, int id, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void line_of(enum log_level level, int id, const char *name, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    write_line(level, id, name, fmt, ap);
    va_end(ap);
}

/* The count of window w, which has ended, and a fresh window. */
static void close_window(int id, struct window *w, time_t now)
{
    if (w->held > 0)
        line_of(w->level, EV_log_coalesced, "log_coalesced",
                "of=%d of_name=%s more=%u seconds=%ld note=\"... and %u more in the last %ld s\"",
                id, w->name, w->held, (long)(now - w->start), w->held, (long)(now - w->start));
    w->start = now;
    w->lines = 0;
    w->held = 0;
}

void log_flush(void)
{
    time_t now = time(NULL);

    if (next_flush == 0 || now < next_flush)
        return;
    next_flush = 0;
    for (int i = 0; i < ID_COUNT; i++) {
        struct window *w = &windows[i];
        if (w->held == 0)
            continue;
        if (now - w->start >= WINDOW_S)
            close_window(ID_BASE + i, w, now);
        else if (next_flush == 0 || w->start + WINDOW_S < next_flush)
            next_flush = w->start + WINDOW_S;
    }
}

void log_event(enum log_level level, int id, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (level < log_threshold)
        return;
    if (log_burst > 0 && id >= ID_BASE && id < ID_BASE + ID_COUNT) {
        struct window *w = &windows[id - ID_BASE];
        time_t now = time(NULL);
        if (now - w->start >= WINDOW_S)
            close_window(id, w, now);
        if (w->lines >= log_burst) {
            if (w->held++ == 0) {
                w->level = level;
                w->name = name;
                if (next_flush == 0 || w->start + WINDOW_S < next_flush)
                    next_flush = w->start + WINDOW_S;
            }
            if (level > w->level)
                w->level = level;
            return;
        }
        w->lines++;
        log_flush();
    }
    va_start(ap, fmt);
    write_line(level, id, name, fmt, ap);
    va_end(ap);
}

const char *log_q(char *buf, size_t n, const char *s)
{
    size_t o = 0;
    int plain = 1;

    if (s == NULL)
        return "-";
    if (s[0] == '\0')
        plain = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
        if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f)
            plain = 0;
    if (plain)
        return s;
    if (n < 3)
        return "\"\"";
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 5 < n; p++) {
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (*p < ' ' || *p == 0x7f) {
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", *p);
        } else {
            buf[o++] = (char)*p;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
