/*
 * cmd_sessions.c — `nudge sessions`: the operator's view of who holds a
 * session (GET /v1/admin/sessions) and the way to end one
 * (DELETE /v1/admin/sessions/{user}/{device}).
 *
 * The list is printed as an aligned table sorted by user and device, so two
 * runs compare line by line, then a count line. Cells go through log_q, the
 * quoting of nudged's log: an id with a space or a control byte is
 * double-quoted with escapes, so every row still splits on whitespace and
 * no id can forge a row or move the terminal's cursor.
 *
 * Naming one session on the command line: user and device ids may both hold
 * '/', so USER/DEVICE is split at its first '/' (user ids are mail
 * addresses far more often than device ids hold a '/'); --end-user and
 * --end-device name a session whose user id holds a '/'. Each part is
 * percent-encoded into the path, so '/', '@', '%' and spaces all arrive
 * intact.
 *
 * Cost: one request on one connection; the answer (bounded by
 * HTTPC_BODY_MAX, about 5,000 sessions) is held whole while it is printed.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "common/log.h"

enum {
    OPT_USER = CLI_OPT_FIRST_OWN,
    OPT_END,
    OPT_END_USER,
    OPT_END_DEVICE,
};

/* The admin API answers at once; 30 s covers a loaded server without hanging a script. */
#define SESSIONS_TIMEOUT_MS 30000
/* A token minted for one request only needs to outlive it; an hour forgives clock skew. */
#define SESSIONS_MINT_TTL 3600
/*
 * Ids are at most 255 bytes on the server (users; devices 128); one more
 * byte and the server could only answer 404, so refuse it here instead.
 */
#define ID_MAX 255
/* Percent-encoding takes up to three bytes per byte. */
#define ID_ESCAPED_MAX (3 * ID_MAX + 1)
/* A cell is an id quoted by log_q: escapes take up to 4 bytes per byte, plus quotes. */
#define CELL_MAX (4 * ID_MAX + 3)

enum col { COL_USER, COL_DEVICE, COL_REMOTE, COL_KIND, COL_AGE, COL_LAST, COL_HEARTBEAT, NCOLS };

static const char *const col_names[NCOLS] = {
    "USER", "DEVICE", "REMOTE", "KIND", "AGE", "LAST-ACTIVITY", "HEARTBEAT",
};

struct row {
    const char *user, *device; /* raw ids, for sorting: quotes must not decide the order */
    char *cell[NCOLS];
};

void cmd_sessions_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge sessions [--user ID] [SERVER OPTIONS]\n"
            "       nudge sessions --end USER/DEVICE [SERVER OPTIONS]\n"
            "       nudge sessions --end-user ID --end-device ID [SERVER OPTIONS]\n"
            "\n"
            "Lists the sessions nudged holds (GET /v1/admin/sessions), one per line, sorted\n"
            "by user and device, then how many:\n"
            "  USER   DEVICE  REMOTE          KIND  AGE    LAST-ACTIVITY  HEARTBEAT\n"
            "  alice  phone1  10.0.0.7:51234  ping  4m12s  4m12s          480s\n"
            "  1 session\n"
            "AGE is how long the session has been held, LAST-ACTIVITY how long ago the\n"
            "device last sent a request; ids with spaces or control characters are\n"
            "quoted as in nudged's log.\n"
            "\n"
            "--end closes a session's connection without an answer\n"
            "(DELETE /v1/admin/sessions/USER/DEVICE) and prints 'ended USER/DEVICE'; the\n"
            "device reconnects when it notices, and its slot under the per-user cap is\n"
            "free at once.\n"
            "\n"
            "  --user ID             list only this user's sessions\n"
            "  --end USER/DEVICE     end one session; USER ends at the first '/' (the\n"
            "                        device id may hold more)\n"
            "  --end-user ID         with --end-device: end a session naming user and\n"
            "  --end-device ID       device apart, for a user id that holds a '/'\n"
            "  -h, --help            show this help\n"
            "\n"
            "Server options:\n" CLI_SERVER_HELP
            "\n"
            "The endpoints need an admin token ('nudge token --admin'); -c or --secret-file\n"
            "mint a short-lived one from the server secret (handy on the server itself).\n"
            "\n"
            "Exit status: 0 listed, or ended; 1 no such session ('nudge sessions: no session\n"
            "USER/DEVICE'), the server refused ('nudge sessions: HTTP 403: ...') or could\n"
            "not be reached; 2 usage.\n");
}


/* "45s", "12m05s", "3h02m", "2d04h": two units are enough to read at a glance. */
static void format_duration(json_t *v, char *out, size_t outlen)
{
    unsigned long long s;

    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    s = (unsigned long long)json_integer_value(v);
    if (s < 60)
        snprintf(out, outlen, "%llus", s);
    else if (s < 3600)
        snprintf(out, outlen, "%llum%02llus", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, outlen, "%lluh%02llum", s / 3600, s % 3600 / 60);
    else
        snprintf(out, outlen, "%llud%02lluh", s / 86400, s % 86400 / 3600);
}

/* The display width of a cell: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    int c = strcmp(x->user, y->user);

    return c ? c : strcmp(x->device, y->device);
}

/* One line of the table; the last column is not padded, so no line ends in blanks. */
static void print_row(const char *const *cell, const size_t *w)
{
    for (int c = 0; c + 1 < NCOLS; c++)
        /* printf would pad by bytes; pad by display width instead. */
        printf("%s%*s  ", cell[c], (int)(w[c] - width(cell[c])), "");
    printf("%s\n", cell[NCOLS - 1]);
}

/* Fills r from one session object. Returns 0, or -ENOMEM. */
static int row_fill(struct row *r, json_t *s)
{
    static const char *const str_keys[] = {"user", "device", "remote", "kind"};
    char buf[CELL_MAX + 1];

    /* Owned by the parsed answer, which outlives the rows. */
    r->user = json_string_value(json_object_get(s, "user"));
    r->device = json_string_value(json_object_get(s, "device"));
    if (r->user == NULL)
        r->user = "";
    if (r->device == NULL)
        r->device = "";
    for (int i = 0; i < NCOLS; i++) {
        const char *cell = buf;

        if (i <= COL_KIND) {
            /* log_q returns the id itself when it needs no quotes. */
            cell = log_q(buf, sizeof(buf), json_string_value(json_object_get(s, str_keys[i])));
        } else if (i == COL_HEARTBEAT) {
            json_t *v = json_object_get(s, "heartbeat");
            if (json_is_integer(v))
                snprintf(buf, sizeof(buf), "%llds", (long long)json_integer_value(v));
            else
                snprintf(buf, sizeof(buf), "-");
        } else {
            format_duration(json_object_get(s, i == COL_AGE ? "age" : "last_activity"), buf,
                            sizeof(buf));
        }
        r->cell[i] = strdup(cell);
        if (r->cell[i] == NULL)
            return -ENOMEM;
    }
    return 0;
}

/* Prints the table and the count line. Returns an exit code. */
static int print_sessions(const struct httpc_response *resp)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    json_t *sessions = json_object_get(root, "sessions"), *s;
    size_t n = 0, i, w[NCOLS];
    struct row *rows = NULL;
    int rc = CLI_EXIT_FAIL;

    if (!json_is_array(sessions)) {
        fprintf(stderr, "nudge sessions: HTTP 200 without a \"sessions\" array: %.200s\n",
                resp->body);
        goto done;
    }
    n = json_array_size(sessions);
    rows = calloc(n ? n : 1, sizeof(*rows));
    if (rows == NULL)
        goto oom;
    json_array_foreach(sessions, i, s) {
        if (!json_is_object(s)) {
            fprintf(stderr, "nudge sessions: sessions[%zu] is not an object\n", i);
            goto done;
        }
        if (row_fill(&rows[i], s) < 0)
            goto oom;
    }
    if (n > 0) {
        qsort(rows, n, sizeof(*rows), row_cmp);
        for (int c = 0; c < NCOLS; c++) {
            w[c] = strlen(col_names[c]);
            for (i = 0; i < n; i++)
                if (width(rows[i].cell[c]) > w[c])
                    w[c] = width(rows[i].cell[c]);
        }
        print_row(col_names, w);
        for (i = 0; i < n; i++)
            print_row((const char *const *)rows[i].cell, w);
    }
    printf("%zu session%s\n", n, n == 1 ? "" : "s");
    rc = CLI_EXIT_OK;
    goto done;
oom:
    fprintf(stderr, "nudge sessions: out of memory\n");
done:
    if (rows != NULL) {
        for (i = 0; i < n; i++)
            for (int c = 0; c < NCOLS; c++)
                free(rows[i].cell[c]);
        free(rows);
    }
    json_decref(root);
    return rc;
}

/* Checks an id given on the command line. Returns 0 or CLI_EXIT_USAGE. */
static int check_id(const char *cmd, const char *what, const char *id)
{
    if (id[0] == '\0')
        return cli_usage_error(cmd, "%s is empty", what);
    if (strlen(id) > ID_MAX)
        return cli_usage_error(cmd, "%s is longer than %d bytes", what, ID_MAX);
    return 0;
}

/* DELETEs one session. Returns an exit code. */
static int end_session(struct httpc *http, const char *token, const char *user,
                       const char *device)
{
    char euser[ID_ESCAPED_MAX], edevice[ID_ESCAPED_MAX], err[512];
    char path[sizeof("/v1/admin/sessions//") + 2 * ID_ESCAPED_MAX];
    struct httpc_response resp;
    const char *status;
    json_t *root;
    int rc;

    /* check_id bounded both: the escapes fit. */
    httpc_query_escape(user, euser, sizeof(euser));
    httpc_query_escape(device, edevice, sizeof(edevice));
    snprintf(path, sizeof(path), "/v1/admin/sessions/%s/%s", euser, edevice);
    if (httpc_request(http, "DELETE", path, token, NULL, 0, &resp, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge sessions: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    status = json_string_value(json_object_get(root, "status"));
    if (resp.status == 200) {
        printf("ended %s/%s\n", user, device);
        rc = CLI_EXIT_OK;
    } else if (resp.status == 404 && status != NULL && strcmp(status, "no-session") == 0) {
        /* Only nudged's own 404: a proxy's or an old server's is an HTTP error. */
        fprintf(stderr, "nudge sessions: no session %s/%s\n", user, device);
        rc = CLI_EXIT_FAIL;
    } else {
        cli_print_http_error("sessions", &resp);
        rc = CLI_EXIT_FAIL;
    }
    json_decref(root);
    httpc_response_free(&resp);
    return rc;
}

/* GETs the list. Returns an exit code. */
static int list_sessions(struct httpc *http, const char *token, const char *user)
{
    char euser[ID_ESCAPED_MAX], err[512];
    char path[sizeof("/v1/admin/sessions?user=") + ID_ESCAPED_MAX];
    struct httpc_response resp;
    int rc;

    if (user != NULL) {
        httpc_query_escape(user, euser, sizeof(euser));
        snprintf(path, sizeof(path), "/v1/admin/sessions?user=%s", euser);
    } else {
        snprintf(path, sizeof(path), "/v1/admin/sessions");
    }
    if (httpc_request(http, "GET", path, token, NULL, 0, &resp, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge sessions: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    if (resp.status == 200) {
        rc = print_sessions(&resp);
    } else {
        cli_print_http_error("sessions", &resp);
        rc = CLI_EXIT_FAIL;
    }
    httpc_response_free(&resp);
    return rc;
}

/* The session to end, or the list's filter: filled by on_option. */
struct sessions_args {
    const char *user, *end, *end_user, *end_device;
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct sessions_args *a = arg;

    (void)cmd;
    switch (opt) {
    case OPT_USER:
        a->user = value;
        break;
    case OPT_END:
        a->end = value;
        break;
    case OPT_END_USER:
        a->end_user = value;
        break;
    case OPT_END_DEVICE:
        a->end_device = value;
        break;
    }
    return 0;
}

int cmd_sessions(int argc, char **argv)
{
    static const struct option options[] = {
        {"user", required_argument, NULL, OPT_USER},
        {"end", required_argument, NULL, OPT_END},
        {"end-user", required_argument, NULL, OPT_END_USER},
        {"end-device", required_argument, NULL, OPT_END_DEVICE},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "sessions";
    struct sessions_args a = {0};
    char end_buf[2 * ID_MAX + 2];
    struct cli_server srv;
    struct httpc http;
    char token[TOKEN_MAX], err[512];
    int rc;

    rc = cli_parse_args(cmd, argc, argv, options, &srv, cmd_sessions_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        return rc;
    if (a.end != NULL && (a.end_user != NULL || a.end_device != NULL))
        return cli_usage_error(cmd, "give either --end USER/DEVICE or --end-user with "
                                    "--end-device, not both");
    if ((a.end_user != NULL) != (a.end_device != NULL))
        return cli_usage_error(cmd, "--end-user and --end-device go together");
    if (a.user != NULL && (a.end != NULL || a.end_user != NULL))
        return cli_usage_error(cmd, "--user filters the list; name the session to end as "
                                    "--end USER/DEVICE");
    if (a.end != NULL) {
        const char *slash = strchr(a.end, '/');
        size_t ulen = slash ? (size_t)(slash - a.end) : 0;

        if (slash == NULL || ulen == 0 || slash[1] == '\0')
            return cli_usage_error(cmd, "--end '%s': expected USER/DEVICE (the user ends at "
                                        "the first '/'; a user id holding '/' needs "
                                        "--end-user and --end-device)",
                                   a.end);
        if (strlen(a.end) >= sizeof(end_buf))
            return cli_usage_error(cmd, "--end: longer than %zu bytes", sizeof(end_buf) - 1);
        memcpy(end_buf, a.end, strlen(a.end) + 1);
        end_buf[ulen] = '\0';
        a.end_user = end_buf;
        a.end_device = end_buf + ulen + 1;
    }
    if (a.end_user != NULL && ((rc = check_id(cmd, "the user id", a.end_user)) != 0 ||
                               (rc = check_id(cmd, "the device id", a.end_device)) != 0))
        return rc;
    if (a.user != NULL && (rc = check_id(cmd, "--user", a.user)) != 0)
        return rc;

    if (httpc_init(&http, srv.url, SESSIONS_TIMEOUT_MS, err, sizeof(err)) < 0)
        return cli_usage_error(cmd, "%s", err);
    rc = cli_server_token(&srv, cmd, TOKEN_ADMIN, "nudge sessions", SESSIONS_MINT_TTL, token);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (a.end_user != NULL)
        rc = end_session(&http, token, a.end_user, a.end_device);
    else
        rc = list_sessions(&http, token, a.user);
    httpc_close(&http);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "nudge sessions: writing the answer failed\n");
        rc = CLI_EXIT_FAIL;
    }
    return rc;
}
