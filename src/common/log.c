/*
 * log.c — the event log writer. Lines are assembled in a stack buffer and
 * written with one fwrite so lines from several processes sharing a file do
 * not interleave (a later issue runs several workers).
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static FILE *log_out;
enum log_level log_threshold = LOG_INFO;
static int log_worker = -1; /* appended as worker=N to every line of a worker process */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_worker(int index)
{
    log_worker = index;
}

void log_init(FILE *out, enum log_level min)
{
    log_out = out;
    log_threshold = min;
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

void log_event(enum log_level level, int id, const char *name, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    if (level < log_threshold)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s event=%d name=%s",
                          (long)(tv.tv_usec / 1000), level_names[level], id, name);
    if (fmt != NULL && fmt[0] != '\0' && n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_start(ap, fmt);
        int w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (w > 0)
            n += (size_t)w;
    }
    if (log_worker >= 0 && n < sizeof(line) - 16)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " worker=%d", log_worker);
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2; /* an over-long line is cut, never dropped */
    line[n++] = '\n';
    fwrite(line, 1, n, log_out ? log_out : stderr);
    fflush(log_out ? log_out : stderr);
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
