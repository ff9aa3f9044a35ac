/*
 * cmd_ping.c — `nudge ping`: behaves as one device long-polling nudged with
 * POST /v1/ping, printing one line per outcome.
 *
 * The client holds a state per folder (from --folder NAME[=STATE], "0" by
 * default) and presents them; a `changed` answer moves the named folders to
 * the answered states, as a phone does after syncing them. With --loop it
 * pings again at once after changed/expired, stops when another instance
 * of the device supersedes it, waits out a 503's Retry-After, and retries
 * network failures with exponential backoff (1, 2, 4 .. 30 s).
 *
 * One keep-alive connection carries every ping of a loop (httpc reconnects
 * when it breaks). The read timeout is the heartbeat plus a margin, so a
 * dead connection is noticed even when nothing on the path resets it.
 * Output is line-buffered and flushed per line: tests and scripts read it
 * through a pipe while the process keeps running.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "cli/tlsc.h"
#include "common/log.h"
#include "common/util.h"

enum {
    OPT_DEVICE = CLI_OPT_FIRST_OWN,
    OPT_HEARTBEAT,
    OPT_FOLDER,
    OPT_LOOP,
    OPT_COUNT,
    OPT_EMPTY,
    OPT_ADAPTIVE,
    OPT_SLACK,
    OPT_USER,
};

/*
 * The server may hold a ping for the whole heartbeat; 30 s more covers its
 * answer's way back and a loaded server before the client calls it dead.
 */
#define PING_MARGIN_S 30
/* Without --heartbeat the server uses the device's last one, unknown here: an hour bounds it. */
#define PING_UNKNOWN_HEARTBEAT_S 3600
/* Far above any sane heartbeat, low enough that heartbeat + margin in ms fits 32 bits. */
#define PING_HEARTBEAT_MAX 1000000
/* Backoff after network errors doubles from 1 s up to this, like a phone's retry timer. */
#define PING_BACKOFF_MAX_S 30
/* A 503 without a usable Retry-After: wait nudged's default shutdown_retry_after. */
#define PING_RETRY_AFTER_DEFAULT_S 5
/* Retry-After beyond an hour is not worth obeying literally in a test tool. */
#define PING_RETRY_AFTER_MAX_S 3600
/* A decimal uint64 state has at most 20 digits. */
#define STATE_MAX 20

struct folder {
    const char *name;
    char state[STATE_MAX + 1];
};

struct ping {
    const char *device;
    long heartbeat;          /* -1: not sent, the server reuses the device's last */
    struct folder *folders;  /* from --folder, in order */
    size_t nfolders;
    int empty;               /* this ping goes with an empty body and ?device= */
    unsigned long count;     /* stop after this many outcome lines; 0 = no limit */
    unsigned long outcomes;  /* outcome lines printed so far */
    int adaptive;            /* follow the server's heartbeat_hint */
    long answered_hb;        /* the last heartbeat whose answer arrived (-1: none) */
    unsigned slack;          /* an answer may come this long after the heartbeat */
};

/* What an answer means for the loop. */
enum outcome {
    OUT_AGAIN,      /* changed or expired: ping again at once */
    OUT_SUPERSEDED, /* another instance of the device took over: stop, success */
    OUT_WAIT,       /* 503: wait Retry-After, then ping again */
    OUT_BACKOFF,    /* network error or other 5xx: back off, then ping again */
    OUT_FATAL,      /* a 4xx or an answer that makes no sense: stop, failure */
    OUT_LOST,       /* no answer within heartbeat + slack: the path ate it; ping again */
};

void cmd_ping_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge ping --device ID [--heartbeat SECONDS] [--folder NAME[=STATE] ...]\n"
            "                  [--loop] [--count N] [--empty] [--adaptive] [--slack SECONDS]\n"
            "                  [SERVER OPTIONS]\n"
            "\n"
            "Acts as a device: long-polls nudged (POST /v1/ping) and prints one line per\n"
            "outcome, flushed at once:\n"
            "  changed INBOX=18 Calendar=4 heartbeat_hint=480\n"
            "  expired heartbeat_hint=480\n"
            "  superseded heartbeat_hint=480\n"
            "  error HTTP 400 heartbeat-out-of-range min=60 max=1680\n"
            "  error cannot connect to 127.0.0.1:8080: Connection refused\n"
            "\n"
            "  --device ID           the device's id (required)\n"
            "  --heartbeat SECONDS   how long the server may hold the ping; omitted: the\n"
            "                        server reuses the device's last heartbeat\n"
            "  --folder NAME[=STATE] a folder and the state the device holds (default 0);\n"
            "                        repeatable; a NAME containing '=' needs its =STATE.\n"
            "                        None: the server reuses the device's last folders\n"
            "  --empty               send an empty body with ?device=ID: the server reuses\n"
            "                        heartbeat and folders (ActiveSync style)\n"
            "  --loop                keep pinging: after changed (taking the answered states)\n"
            "                        and expired at once; stop after superseded; after a 503\n"
            "                        wait its Retry-After; after network errors back off 1, 2,\n"
            "                        4 .. %d s. Waits print 'waiting N s'\n"
            "  --count N             with --loop, stop after N outcome lines\n"
            "  --adaptive            with --loop, use each answer's heartbeat_hint as the next\n"
            "                        heartbeat, as a real device would; lines then show the\n"
            "                        heartbeat used: 'expired heartbeat=240 heartbeat_hint=300'.\n"
            "                        An answer that does not come within heartbeat + slack is\n"
            "                        reported 'lost heartbeat=N' and the ping sent again at once\n"
            "                        with the last heartbeat that was answered\n"
            "  --slack SECONDS       how long after the heartbeat an answer may still come\n"
            "                        (default %d)\n"
            "  --user ID             the user to mint a token for with -c or --secret-file\n"
            "  -h, --help            show this help\n"
            "\n"
            "Server options:\n" CLI_SERVER_HELP
            "\n"
            "Without --token, -c or --secret-file with --user mint a user token from the\n"
            "server secret (handy on the server's own machine).\n"
            "\n"
            "An answer must arrive within the heartbeat + slack (%d s without --heartbeat).\n"
            "Exit status: 0 the last outcome was a 200 answer (changed, expired,\n"
            "superseded); 1 an error; 2 usage.\n",
            PING_BACKOFF_MAX_S, PING_MARGIN_S, PING_UNKNOWN_HEARTBEAT_S + PING_MARGIN_S);
}

/* Prints one line and flushes it; outcome lines count towards --count. */
static void say(struct ping *p, int outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(struct ping *p, int outcome, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (outcome)
        p->outcomes++;
}

/* Parses --folder NAME[=STATE] into f. Returns 0 or CLI_EXIT_USAGE. */
static int folder_parse(const char *cmd, char *arg, struct folder *f)
{
    char *eq = strrchr(arg, '=');
    uint64_t v;

    if (eq != NULL) {
        size_t slen = strlen(eq + 1);
        if (util_parse_u64(eq + 1, slen, &v) < 0)
            return cli_usage_error(cmd, "--folder '%s': STATE must be a decimal number (a "
                                        "name with '=' needs NAME=STATE)",
                                   arg);
        memcpy(f->state, eq + 1, slen + 1);
        *eq = '\0';
    } else {
        strcpy(f->state, "0");
    }
    if (arg[0] == '\0')
        return cli_usage_error(cmd, "--folder: the name is empty");
    f->name = arg;
    return 0;
}

/* The request body, or NULL when the ping carries none. *bad is set on a UTF-8 problem. */
static char *ping_body(const struct ping *p, int *bad)
{
    json_t *o = json_object(), *folders = NULL, *v;
    char *body = NULL;

    *bad = 0;
    if (o == NULL)
        return NULL;
    if ((v = json_string(p->device)) == NULL || json_object_set_new(o, "device", v) < 0) {
        *bad = 1;
        goto done;
    }
    if (p->heartbeat >= 0 && json_object_set_new(o, "heartbeat", json_integer(p->heartbeat)) < 0)
        goto done;
    if (p->nfolders > 0) {
        folders = json_object();
        if (folders == NULL || json_object_set_new(o, "folders", folders) < 0)
            goto done;
        for (size_t i = 0; i < p->nfolders; i++) {
            if (json_object_set_new(folders, p->folders[i].name, json_string(p->folders[i].state)) <
                0) {
                *bad = 1;
                goto done;
            }
        }
    }
    body = json_dumps(o, JSON_COMPACT);
done:
    json_decref(o);
    return body;
}

/* Formats a JSON value for "key=value" output: numbers bare, strings quoted if needed. */
static void print_value(const json_t *v)
{
    char buf[512], *dump = NULL;

    if (json_is_integer(v)) {
        printf("%lld", (long long)json_integer_value(v));
    } else if (json_is_string(v)) {
        fputs(log_q(buf, sizeof(buf), json_string_value(v)), stdout);
    } else {
        dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fputs(log_q(buf, sizeof(buf), dump ? dump : "?"), stdout);
        free(dump);
    }
}

/* Prints the start of a body that is not the JSON expected, on one line. */
static void print_body_line(const struct httpc_response *resp)
{
    /* Enough to recognise a proxy's error page without flooding a log. */
    const size_t max = 200;

    for (size_t i = 0; i < resp->body_len && i < max; i++) {
        unsigned char ch = (unsigned char)resp->body[i];
        putchar(ch < ' ' || ch == 0x7f ? ' ' : ch);
    }
    if (resp->body_len > max)
        fputs("...", stdout);
}

/* "error HTTP 400 heartbeat-out-of-range min=60 max=1680", or the body on one line. */
static void print_http_error(struct ping *p, const struct httpc_response *resp)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);

    printf("error HTTP %d", resp->status);
    if (json_is_object(root)) {
        const char *key, *status = json_string_value(json_object_get(root, "status"));
        json_t *v;
        if (status != NULL)
            printf(" %s", status);
        json_object_foreach(root, key, v) {
            char kbuf[256];
            if (strcmp(key, "status") == 0 && status != NULL)
                continue;
            printf(" %s=", log_q(kbuf, sizeof(kbuf), key));
            print_value(v);
        }
    } else if (resp->body_len > 0) {
        putchar(' ');
        print_body_line(resp);
    }
    json_decref(root);
    say(p, 1, "%s", "");
}

/* Takes the answered states of a changed answer and prints its line. */
static enum outcome on_changed(struct ping *p, json_t *root, const char *hint_s)
{
    json_t *folders = json_object_get(root, "folders"), *v;
    const char *name;
    char nbuf[512];

    if (folders != NULL && !json_is_object(folders)) {
        say(p, 1, "error changed answer without a folders object");
        return OUT_FATAL;
    }
    printf("changed");
    json_object_foreach(folders, name, v) {
        const char *state = json_string_value(v);
        printf(" %s=", log_q(nbuf, sizeof(nbuf), name));
        print_value(v);
        if (state == NULL || util_parse_u64(state, strlen(state), &(uint64_t){0}) < 0)
            continue; /* not a state we could present back; keep ours */
        for (size_t i = 0; i < p->nfolders; i++)
            if (strcmp(p->folders[i].name, name) == 0)
                memcpy(p->folders[i].state, state, strlen(state) + 1);
    }
    say(p, 1, "%s", hint_s);
    return OUT_AGAIN;
}

/* Interprets one answer: prints its line and says what the loop does next. */
static enum outcome on_answer(struct ping *p, const struct httpc_response *resp)
{
    json_t *root;
    const char *status;
    json_t *hint_v;
    long hint = -1;
    char hint_s[40] = "";
    enum outcome out;

    if (resp->status != 200) {
        print_http_error(p, resp);
        if (resp->status == 503)
            return OUT_WAIT;
        return resp->status >= 500 ? OUT_BACKOFF : OUT_FATAL;
    }
    root = json_loadb(resp->body, resp->body_len, 0, NULL);
    status = json_string_value(json_object_get(root, "status"));
    hint_v = json_object_get(root, "heartbeat_hint");
    if (json_is_integer(hint_v)) {
        hint = (long)json_integer_value(hint_v);
        if (p->adaptive)
            snprintf(hint_s, sizeof(hint_s), " heartbeat=%ld heartbeat_hint=%ld", p->heartbeat,
                     hint);
        else
            snprintf(hint_s, sizeof(hint_s), " heartbeat_hint=%ld", hint);
    }
    if (status != NULL && strcmp(status, "changed") == 0) {
        out = on_changed(p, root, hint_s);
    } else if (status != NULL && strcmp(status, "expired") == 0) {
        say(p, 1, "expired%s", hint_s);
        out = OUT_AGAIN;
    } else if (status != NULL && strcmp(status, "superseded") == 0) {
        say(p, 1, "superseded%s", hint_s);
        out = OUT_SUPERSEDED;
    } else {
        printf("error unexpected answer: ");
        print_body_line(resp);
        say(p, 1, "%s", "");
        out = OUT_FATAL;
    }
    /* A device that follows the hint pings next with it (the server keeps it in bounds). */
    if (p->heartbeat >= 0)
        p->answered_hb = p->heartbeat;
    if (p->adaptive && hint > 0)
        p->heartbeat = hint;
    json_decref(root);
    return out;
}

static void wait_seconds(struct ping *p, unsigned s)
{
    struct timespec ts = {.tv_sec = s};

    say(p, 0, "waiting %u s", s);
    while (nanosleep(&ts, &ts) < 0)
        ;
}

/* The ping loop. Returns the exit code. */
static int run(struct ping *p, struct httpc *http, const char *token, int loop)
{
    char err[512], query[3 * 256 + 1], path[sizeof("/v1/ping?device=") + sizeof(query)];
    char *body = NULL;
    int bad = 0, last_ok = 0;
    unsigned backoff = 0;

    if (p->empty) {
        if (httpc_query_escape(p->device, query, sizeof(query)) < 0)
            return cli_usage_error("ping", "--device: too long for a query string");
        snprintf(path, sizeof(path), "/v1/ping?device=%s", query);
    } else {
        snprintf(path, sizeof(path), "/v1/ping");
    }

    for (;;) {
        struct httpc_response resp;
        enum outcome out;
        int rc;

        if (!p->empty) {
            body = ping_body(p, &bad);
            if (body == NULL) {
                if (bad)
                    return cli_usage_error("ping", "--device or --folder: not valid UTF-8, "
                                                   "which JSON requires");
                fprintf(stderr, "nudge ping: out of memory\n");
                return CLI_EXIT_FAIL;
            }
        }
        /* The answer may take the whole heartbeat: wait that long plus the slack. */
        http->read_timeout_ms =
            ((p->heartbeat >= 0 ? (unsigned)p->heartbeat : PING_UNKNOWN_HEARTBEAT_S) + p->slack) *
            1000u;
        rc = httpc_request(http, "POST", path, token, body, body ? strlen(body) : 0, &resp, err,
                           sizeof(err));
        free(body);
        body = NULL;
        if (rc == -ETIMEDOUT && strncmp(err, "no answer", 9) == 0 && p->adaptive) {
            /* What a phone behind a firewall that dropped the idle flow sees. */
            say(p, 1, "lost heartbeat=%ld: %s", p->heartbeat, err);
            out = OUT_LOST;
            /*
             * Its hint died with the answer: go back to the last heartbeat
             * that got through (or half), and learn the new hint from the
             * next answer, which the server judges a failure of this one.
             */
            p->heartbeat = p->answered_hb > 0 && p->answered_hb < p->heartbeat
                               ? p->answered_hb
                               : (p->heartbeat / 2 > 0 ? p->heartbeat / 2 : 1);
        } else if (rc < 0) {
            say(p, 1, "error %s", err);
            /* A refused certificate does not heal by retrying: stop, and say so (exit 3). */
            out = rc == -TLSC_EVERIFY ? OUT_FATAL : OUT_BACKOFF;
        } else {
            out = on_answer(p, &resp);
            if (out == OUT_WAIT) {
                long ra = resp.retry_after;
                backoff = ra < 0 ? PING_RETRY_AFTER_DEFAULT_S
                                 : ra > PING_RETRY_AFTER_MAX_S ? PING_RETRY_AFTER_MAX_S
                                                               : (unsigned)ra;
            }
            httpc_response_free(&resp);
        }
        last_ok = out == OUT_AGAIN || out == OUT_SUPERSEDED || out == OUT_LOST;
        if (!loop || out == OUT_SUPERSEDED || out == OUT_FATAL)
            break;
        if (p->count > 0 && p->outcomes >= p->count)
            break;
        if (!p->empty && p->nfolders == 0 && last_ok) {
            /*
             * Without folders of its own the device relies on the server's
             * memory; an empty body presents the states of the last answer,
             * where a body without folders would present the stale ones of
             * the last ping and be answered "changed" forever.
             */
            if (httpc_query_escape(p->device, query, sizeof(query)) >= 0) {
                snprintf(path, sizeof(path), "/v1/ping?device=%s", query);
                p->empty = 1;
            }
        }
        if (out == OUT_AGAIN || out == OUT_LOST) {
            backoff = 0;
        } else if (out == OUT_WAIT) {
            wait_seconds(p, backoff);
            backoff = 0; /* a reconnect refused after a shutdown starts backing off at 1 s */
        } else {
            backoff = backoff == 0 ? 1 : backoff * 2 > PING_BACKOFF_MAX_S ? PING_BACKOFF_MAX_S
                                                                          : backoff * 2;
            wait_seconds(p, backoff);
        }
    }
    return last_ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* What on_option fills: the ping itself, and what only start-up needs. */
struct ping_args {
    struct ping *p;
    const char *user;
    int loop;
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct ping_args *a = arg;
    struct ping *p = a->p;
    uint64_t v;

    switch (opt) {
    case OPT_DEVICE:
        p->device = value;
        break;
    case OPT_HEARTBEAT:
        if (cli_parse_number(cmd, "--heartbeat", value, 0, PING_HEARTBEAT_MAX, &v) != 0)
            return CLI_EXIT_USAGE;
        p->heartbeat = (long)v;
        break;
    case OPT_FOLDER:
        if (folder_parse(cmd, value, &p->folders[p->nfolders]) != 0)
            return CLI_EXIT_USAGE;
        p->nfolders++;
        break;
    case OPT_LOOP:
        a->loop = 1;
        break;
    case OPT_COUNT:
        if (cli_parse_number(cmd, "--count", value, 1, UINT32_MAX, &v) != 0)
            return CLI_EXIT_USAGE;
        p->count = (unsigned long)v;
        break;
    case OPT_EMPTY:
        p->empty = 1;
        break;
    case OPT_ADAPTIVE:
        p->adaptive = 1;
        break;
    case OPT_SLACK:
        if (cli_parse_number(cmd, "--slack", value, 1, 86400, &v) != 0)
            return CLI_EXIT_USAGE;
        p->slack = (unsigned)v;
        break;
    case OPT_USER:
        a->user = value;
        break;
    }
    return 0;
}

int cmd_ping(int argc, char **argv)
{
    static const struct option options[] = {
        {"device", required_argument, NULL, OPT_DEVICE},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"folder", required_argument, NULL, OPT_FOLDER},
        {"loop", no_argument, NULL, OPT_LOOP},
        {"count", required_argument, NULL, OPT_COUNT},
        {"empty", no_argument, NULL, OPT_EMPTY},
        {"adaptive", no_argument, NULL, OPT_ADAPTIVE},
        {"slack", required_argument, NULL, OPT_SLACK},
        {"user", required_argument, NULL, OPT_USER},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "ping";
    struct ping p = {.heartbeat = -1, .slack = PING_MARGIN_S, .answered_hb = -1};
    struct ping_args a = {.p = &p};
    struct cli_server srv;
    struct httpc http;
    char token[TOKEN_MAX], err[512];
    int rc;
    unsigned timeout_s;

    /* argc bounds the number of --folder options. */
    p.folders = calloc((size_t)argc, sizeof(*p.folders));
    if (p.folders == NULL) {
        fprintf(stderr, "nudge ping: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = cli_parse_args(cmd, argc, argv, options, &srv, cmd_ping_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        goto done;
    if (p.device == NULL) {
        rc = cli_usage_error(cmd, "--device is required");
        goto done;
    }
    if (p.adaptive && (!a.loop || p.heartbeat < 0 || p.empty)) {
        rc = cli_usage_error(cmd, "--adaptive needs --loop and a first --heartbeat (and a body)");
        goto done;
    }
    if (p.empty && (p.nfolders > 0 || p.heartbeat >= 0)) {
        rc = cli_usage_error(cmd, "--empty sends no body: it cannot carry --folder or --heartbeat");
        goto done;
    }
    if ((rc = cli_check_mint_user(&srv, cmd, a.user)) != 0)
        goto done;

    timeout_s = (p.heartbeat >= 0 ? (unsigned)p.heartbeat : PING_UNKNOWN_HEARTBEAT_S) +
                PING_MARGIN_S;
    if (httpc_init(&http, srv.url, timeout_s * 1000u, err, sizeof(err)) < 0) {
        rc = cli_usage_error(cmd, "%s", err);
        goto done;
    }
    rc = cli_server_token(&srv, cmd, TOKEN_USER, a.user, CLI_USER_TTL, token);
    if (rc != CLI_EXIT_OK)
        goto done;
    rc = run(&p, &http, token, a.loop);
    httpc_close(&http);
done:
    free(p.folders);
    return rc;
}
