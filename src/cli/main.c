/*
 * main.c — nudge, the command-line client of nudged: subcommand dispatch,
 * the top-level --help / --version / `help CMD`, and what every subcommand
 * shares: its start-up (cli_parse_args: option table, --help, the server
 * options, usage errors for the rest), numbers, and error answers told in
 * one line.
 *
 * Each subcommand lives in its own cmd_<name>.c, owns the table of its own
 * options and what they mean, and hands argv shifted by one (so argv[0] is
 * its name) to cli_parse_args.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "cli/tlsc.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*usage)(FILE *out);
    const char *summary;
};

static const struct command commands[] = {
    {"token", cmd_token, cmd_token_usage, "mint bearer tokens from the server secret"},
    {"publish", cmd_publish, cmd_publish_usage, "report a folder change (POST /v1/events)"},
    {"ping", cmd_ping, cmd_ping_usage, "act as a device: long-poll POST /v1/ping"},
    {"sessions", cmd_sessions, cmd_sessions_usage, "list the held sessions, or end one (admin)"},
    {"probe", cmd_probe, cmd_probe_usage, "measure the network path's idle timeout (GET /v1/probe)"},
    {"listen", cmd_listen, cmd_listen_usage, "act as a device: UDP datagrams (POST /v1/udp), polling as fallback"},
    {"doctor", cmd_doctor, cmd_doctor_usage, "check server, token, clock, UDP and heartbeats from here"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out, "Usage: nudge COMMAND [OPTIONS]\n"
                 "\n"
                 "The command-line client of nudged, the push-notification server.\n"
                 "\n"
                 "Commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s%s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s%s\n", "help CMD", "show a command's options (same as nudge CMD --help)");
    fprintf(out, "\n"
                 "Options:\n"
                 "  -h, --help    show this help\n"
                 "  --version     show nudge's version\n"
                 "\n"
                 "Environment:\n"
                 "  NUDGE_URL     server URL (default " CLI_DEFAULT_URL "; https:// speaks TLS)\n"
                 "  NUDGE_CACERT  PEM file of the CA certificates to trust for https://\n"
                 "                (default: the system's, /etc/ssl/certs)\n"
                 "  NUDGE_TOKEN   bearer token for publish, ping, sessions, probe, listen\n"
                 "                and doctor\n"
                 "\n"
                 "Exit status: 0 success, 1 the server refused or the network failed,\n"
                 "2 the command line is wrong, 3 an https server's certificate was refused\n"
                 "(expired, unknown issuer, host name mismatch: the message says which).\n");
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Error bodies are one line from nudged; anything longer is cut here. */
#define ERROR_BODY_MAX 300

void cli_print_http_error(const char *cmd, const struct httpc_response *resp)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(root, "error"));
    char line[ERROR_BODY_MAX + 4];
    size_t n = 0;

    if (msg == NULL) {
        for (size_t i = 0; i < resp->body_len && n < ERROR_BODY_MAX; i++) {
            unsigned char ch = (unsigned char)resp->body[i];
            line[n++] = ch < ' ' || ch == 0x7f ? ' ' : (char)ch;
        }
        while (n > 0 && line[n - 1] == ' ')
            n--;
        if (resp->body_len > ERROR_BODY_MAX)
            line[n++] = '.', line[n++] = '.', line[n++] = '.';
        line[n] = '\0';
        msg = n ? line : "(no body)";
    }
    fprintf(stderr, "nudge %s: HTTP %d: %s\n", cmd, resp->status, msg);
    json_decref(root);
}

/*
 * The start of a report line is enough to recognise an answer (an HTML error
 * page, a proxy's text); the rest would drown the line.
 */
#define DESCRIBE_BODY_MAX 200

/*
 * Not built on cli_print_http_error, nor it on this: its line has no status
 * word, keeps 300 bytes of a body with NULs and trailing spaces dealt with,
 * marks a cut with "..." and says "(no body)". Users and scripts read both
 * lines as they are; a common core would change one of them.
 */
void cli_describe_answer(const struct httpc_response *resp, char *out, size_t outlen)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *status = json_string_value(json_object_get(root, "status"));
    const char *error = json_string_value(json_object_get(root, "error"));

    if (status != NULL)
        snprintf(out, outlen, "HTTP %d %s%s%s", resp->status, status, error ? ": " : "",
                 error ? error : "");
    else
        snprintf(out, outlen, "HTTP %d %.*s", resp->status,
                 (int)(resp->body_len < DESCRIBE_BODY_MAX ? resp->body_len : DESCRIBE_BODY_MAX),
                 resp->body);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            *c = ' ';
    json_decref(root);
}

int cli_check_mint_user(const struct cli_server *srv, const char *cmd, const char *user)
{
    int minting = srv->token_flag == NULL && (srv->config_file != NULL || srv->secret_file != NULL);

    if (minting && user == NULL)
        return cli_usage_error(cmd, "minting a token with -c or --secret-file needs --user ID");
    if (!minting && user != NULL)
        return cli_usage_error(cmd, "--user only names the user to mint a token for with -c or "
                                    "--secret-file; otherwise the token names the user");
    if (user != NULL && (user[0] == '\0' || strlen(user) > TOKEN_SUBJECT_MAX))
        return cli_usage_error(cmd, "--user: a user id is 1 to %d bytes", TOKEN_SUBJECT_MAX);
    return 0;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nudge%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; see 'nudge%s%s --help'\n", cmd ? " " : "", cmd ? cmd : "");
    return CLI_EXIT_USAGE;
}

int cli_getopt_error(const char *cmd, int opt, char **argv)
{
    const char *arg = argv[optind - 1];

    if (opt == ':') {
        if (optopt != 0 && optopt < 256 && strncmp(arg, "--", 2) != 0)
            return cli_usage_error(cmd, "option '-%c' needs a value", optopt);
        return cli_usage_error(cmd, "option '%s' needs a value", arg);
    }
    if (optopt != 0 && optopt < 256)
        return cli_usage_error(cmd, "unknown option '-%c'", optopt);
    return cli_usage_error(cmd, "unknown option '%s'", arg);
}

int cli_parse_number(const char *cmd, const char *name, const char *arg, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || *end != '\0' || errno != 0 || v < min || v > max)
        return cli_usage_error(cmd, "%s '%s': expected a whole number from %llu to %llu", name,
                               arg, (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

/* The server options, read into struct cli_server; CLI_SERVER_HELP describes them. */
static const struct option server_options[] = {
    {"url", required_argument, NULL, CLI_OPT_URL},
    {"token", required_argument, NULL, CLI_OPT_TOKEN},
    {"config", required_argument, NULL, 'c'},
    {"secret-file", required_argument, NULL, CLI_OPT_SECRET_FILE},
    {"cacert", required_argument, NULL, CLI_OPT_CACERT},
    {"insecure", no_argument, NULL, CLI_OPT_INSECURE},
};
#define NSERVER_OPTIONS (sizeof(server_options) / sizeof(server_options[0]))

static const struct option help_option = {"help", no_argument, NULL, 'h'};

static void server_init(struct cli_server *srv)
{
    const char *url = getenv("NUDGE_URL");
    const char *token = getenv("NUDGE_TOKEN");
    const char *cacert = getenv("NUDGE_CACERT");

    memset(srv, 0, sizeof(*srv));
    srv->url = url && url[0] ? url : CLI_DEFAULT_URL;
    srv->token_env = token && token[0] ? token : NULL;
    srv->cacert = cacert && cacert[0] ? cacert : NULL;
}

int cli_tls_setup(const char *cmd, const char *url, const char *cacert, int insecure)
{
    char err[512];

    if (strncasecmp(url, "https://", 8) != 0)
        return CLI_ARGS_PARSED;
    if (cacert != NULL && insecure)
        return cli_usage_error(cmd, "--cacert and --insecure contradict each other");
    if (tlsc_setup(cacert, insecure, err, sizeof(err)) < 0)
        return cli_usage_error(cmd, "%s", err);
    return CLI_ARGS_PARSED;
}

/* Applies 'opt' if it is one of server_options: 1 when it was, 0 when it is not. */
static int server_opt(struct cli_server *srv, int opt, const char *arg)
{
    switch (opt) {
    case CLI_OPT_URL:
        srv->url = arg;
        return 1;
    case CLI_OPT_TOKEN:
        srv->token_flag = arg;
        return 1;
    case 'c':
        srv->config_file = arg;
        return 1;
    case CLI_OPT_SECRET_FILE:
        srv->secret_file = arg;
        return 1;
    case CLI_OPT_CACERT:
        srv->cacert = arg;
        return 1;
    case CLI_OPT_INSECURE:
        srv->insecure = 1;
        return 1;
    default:
        return 0;
    }
}

/*
 * getopt_long's optstring for 'table' (n entries): each entry valued with a
 * character gives that short option, with its argument as in the table.
 * 'out' holds 3 * n + 2 bytes: the leading ':', at most "x::" per entry, NUL.
 */
static void short_options(const struct option *table, size_t n, char *out)
{
    /*
     * ':' first: a missing value comes back as ':' (not '?') and, with
     * opterr = 0, getopt prints nothing, so cli_getopt_error's messages
     * name the subcommand.
     */
    *out++ = ':';
    for (size_t i = 0; i < n; i++) {
        if (table[i].flag != NULL || table[i].val <= 0 || table[i].val >= 256)
            continue;
        *out++ = (char)table[i].val;
        if (table[i].has_arg != no_argument)
            *out++ = ':';
        if (table[i].has_arg == optional_argument)
            *out++ = ':';
    }
    *out = '\0';
}

int cli_parse_args(const char *cmd, int argc, char **argv, const struct option *own,
                   struct cli_server *srv, void (*usage)(FILE *out),
                   int (*on_option)(void *arg, const char *cmd, int opt, char *value),
                   void *arg)
{
    size_t nown = 0, n;
    struct option *table;
    char *shorts;
    int opt, rc = CLI_ARGS_PARSED;

    while (own[nown].name != NULL)
        nown++;
    n = nown + 1 + (srv != NULL ? NSERVER_OPTIONS : 0);
    /* One entry more than the options: getopt_long's all-zero end mark. */
    table = calloc(n + 1, sizeof(*table));
    shorts = malloc(3 * n + 2);
    if (table == NULL || shorts == NULL) {
        fprintf(stderr, "nudge %s: out of memory\n", cmd);
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    memcpy(table, own, nown * sizeof(*table));
    table[nown] = help_option;
    if (srv != NULL) {
        memcpy(table + nown + 1, server_options, sizeof(server_options));
        server_init(srv);
    }
    short_options(table, n, shorts);

    opterr = 0;
    optind = 1;
    while (rc == CLI_ARGS_PARSED && (opt = getopt_long(argc, argv, shorts, table, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            rc = CLI_EXIT_OK;
        } else if (opt == '?' || opt == ':') {
            rc = cli_getopt_error(cmd, opt, argv);
        } else if (srv == NULL || !server_opt(srv, opt, optarg)) {
            int stop = on_option(arg, cmd, opt, optarg);

            if (stop != 0)
                rc = stop;
        }
    }
    if (rc == CLI_ARGS_PARSED && optind < argc)
        rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (rc == CLI_ARGS_PARSED && srv != NULL)
        rc = cli_tls_setup(cmd, srv->url, srv->cacert, srv->insecure);
done:
    free(shorts);
    free(table);
    return rc;
}

int main(int argc, char **argv)
{
    const struct command *c;
    const char *name;
    int rc;

    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0) {
        printf("nudge %s\n", NUDGE_VERSION);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        if (argc == 2) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (argc > 3)
            return cli_usage_error(NULL, "help takes one command name");
        c = find_command(argv[2]);
        if (c == NULL)
            return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
        c->usage(stdout);
        return CLI_EXIT_OK;
    }
    c = find_command(name);
    if (c == NULL) {
        if (name[0] == '-')
            return cli_usage_error(NULL, "unknown option '%s'", name);
        return cli_usage_error(NULL, "unknown command '%s'", name);
    }
    rc = c->run(argc - 1, argv + 1);
    /* A refused certificate is its own exit status, whichever command met it. */
    return rc == CLI_EXIT_FAIL && tlsc_refused() ? CLI_EXIT_TLS : rc;
}
