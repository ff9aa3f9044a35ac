/*
 * cli.h — what nudge's subcommands share: their entry points and usage
 * texts (main.c dispatches to them), their start-up (cli_parse_args, with
 * the options of every command that talks to the server), usage errors,
 * and token minting (cmd_token.c) which publish and ping borrow for local
 * use.
 *
 * Exit codes are the same for every subcommand: CLI_EXIT_OK, CLI_EXIT_FAIL
 * (the server said no, or the network failed), CLI_EXIT_USAGE (the command
 * line is wrong: one line naming the problem and pointing to --help),
 * CLI_EXIT_TLS (an https:// server's certificate was refused: main() turns
 * a command's CLI_EXIT_FAIL into it when tlsc_refused()).
 */
#ifndef NUDGE_CLI_H
#define NUDGE_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "auth/secret.h"
#include "auth/token.h"
#include "common/version.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_TLS 3

#define CLI_DEFAULT_URL "http://127.0.0.1:8080"
/* User tokens expire so a leaked one stops working; a month spares re-minting. */
#define CLI_USER_TTL (30 * 86400)

/*
 * getopt_long values of the long-only options shared by several commands.
 * They start at 256 because smaller values are option characters: an
 * option whose value is one also has that short form (-c for --config).
 */
enum cli_opt {
    CLI_OPT_URL = 256,
    CLI_OPT_TOKEN,
    CLI_OPT_SECRET_FILE,
    CLI_OPT_CACERT,
    CLI_OPT_INSECURE,
    CLI_OPT_FIRST_OWN, /* each command numbers its own long-only options from here */
};

/* The --help lines describing the server options (--url, --token, -c, --secret-file, TLS). */
#define CLI_SERVER_HELP                                                                 \
    "  --url URL             server, http[s]://HOST[:PORT][/PATH] (default\n"          \
    "                        $NUDGE_URL, else " CLI_DEFAULT_URL ")\n"                  \
    "  --cacert FILE         https: trust the CA (or self-signed) certificates in\n"   \
    "                        this PEM file instead of the system's (default\n"         \
    "                        $NUDGE_CACERT, else /etc/ssl/certs)\n"                    \
    "  --insecure            https: do not check the server's certificate (tests\n"    \
    "                        only; prints a warning)\n"                                \
    "  --token TOKEN         bearer token (default $NUDGE_TOKEN)\n"                     \
    "  -c, --config FILE     nudged.conf whose secret mints a token when no --token\n" \
    "                        is given (local use; needs read access to the secret)\n"   \
    "  --secret-file PATH    the same, naming the secret file directly\n"             \
    "An https:// server's certificate that is refused (expired, unknown issuer,\n"    \
    "host name mismatch) ends the command with exit status 3.\n"

/* Where a server-talking command gets its server and credential. */
struct cli_server {
    const char *url;          /* --url, else $NUDGE_URL, else CLI_DEFAULT_URL */
    const char *token_flag;   /* --token */
    const char *token_env;    /* $NUDGE_TOKEN (NULL when unset or empty) */
    const char *config_file;  /* -c / --config: mint from its secret */
    const char *secret_file;  /* --secret-file: mint from this secret */
    const char *cacert;       /* --cacert, else $NUDGE_CACERT (NULL: the system store) */
    int insecure;             /* --insecure */
};

/*
 * What cli_parse_args returns when the command line is fine and the command
 * should run: negative, so never one of the exit codes.
 */
#define CLI_ARGS_PARSED (-1)

/*
 * The start-up of every subcommand (main.c): parses its command line
 * (argv[0] is the subcommand's name, 'cmd') with getopt_long.
 *
 * The options accepted are, in this order: 'own', the command's own
 * (ending with an all-zero entry; long-only ones valued from
 * CLI_OPT_FIRST_OWN, and one valued with a character is also that short
 * option); -h/--help; and, when 'srv' is not NULL, the server options
 * --url, --token, -c/--config, --secret-file, --cacert and --insecure (with
 * an https:// URL it then sets up TLS: tlsc_setup, a bad --cacert being a
 * usage error). Long options may be
 * abbreviated as getopt_long allows. 'srv' is filled from the environment
 * (NUDGE_URL, NUDGE_TOKEN), then from its options. Each of the command's own
 * options, in command-line order, goes to on_option(arg, cmd, opt, value)
 * ('opt' its getopt_long value, 'value' its argument in argv, which it may
 * cut up in place, or NULL), which returns 0 to go on, or the exit code to
 * stop with after printing why.
 *
 * Returns CLI_ARGS_PARSED when the command should run. Otherwise returns
 * the exit code to end with, having printed what to: CLI_EXIT_OK after the
 * first -h/--help printed usage(stdout); CLI_EXIT_USAGE after a usage error
 * for an unknown option, a missing value, or an argument that is not an
 * option (no subcommand takes operands); on_option's code when it stopped;
 * CLI_EXIT_FAIL when out of memory. The first -h/--help, bad option or stop
 * by on_option decides; an operand is reported only when the options are
 * fine. Holds nothing once it returns: the strings it leaves in 'srv'
 * point into argv or the environment.
 */
int cli_parse_args(const char *cmd, int argc, char **argv, const struct option *own,
                   struct cli_server *srv, void (*usage)(FILE *out),
                   int (*on_option)(void *arg, const char *cmd, int opt, char *value),
                   void *arg);

/*
 * Picks the credential (cmd_token.c): --token wins, then a token minted from -c /
 * --secret-file (kind and subject given by the caller, 'mint_subject' NULL
 * meaning the caller cannot mint), then $NUDGE_TOKEN. Writes the token
 * into out[TOKEN_MAX]. Returns CLI_EXIT_OK, or CLI_EXIT_USAGE / CLI_EXIT_FAIL
 * after printing "nudge CMD: ..." to stderr.
 */
int cli_server_token(const struct cli_server *srv, const char *cmd, enum token_kind kind,
                     const char *mint_subject, int64_t mint_ttl, char *out);

/*
 * Sets up TLS (tlsc_setup) when 'url' is https://, so a bad --cacert is told
 * before anything is sent: CLI_ARGS_PARSED, or CLI_EXIT_USAGE after saying
 * why. cli_parse_args does it for the server options; token --revoke, which
 * has its own, calls it itself.
 */
int cli_tls_setup(const char *cmd, const char *url, const char *cacert, int insecure);

struct httpc_response;

/*
 * For commands acting as a user (ping, probe): --user is needed exactly when
 * a token is minted from -c/--secret-file, and must be a valid user id.
 * 0, or CLI_EXIT_USAGE after saying why.
 */
int cli_check_mint_user(const struct cli_server *srv, const char *cmd, const char *user);

/*
 * Prints "nudge CMD: HTTP 403: <the answer's error field, else its body on
 * one line>" to stderr, for a command that stops at an error answer.
 */
void cli_print_http_error(const char *cmd, const struct httpc_response *resp);

/*
 * Describes an error answer in one line for a command that reports it and
 * goes on (listen, doctor): "HTTP 501 udp-disabled: UDP is off" from
 * nudged's JSON (status word and error sentence), else "HTTP 502 " and the
 * start of the body. Writes it into out[outlen], truncated if need be,
 * control characters turned into spaces.
 */
void cli_describe_answer(const struct httpc_response *resp, char *out, size_t outlen);

/*
 * Prints "nudge CMD: <message>; see 'nudge CMD --help'" to stderr (main.c).
 * Returns CLI_EXIT_USAGE so callers can `return cli_usage_error(...)`.
 */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Reports a getopt_long failure ('?' or ':') for argv[optind - 1] the way
 * cli_usage_error does. Commands use optstrings starting with ':' and
 * opterr = 0 so these messages name the subcommand.
 */
int cli_getopt_error(const char *cmd, int opt, char **argv);

/*
 * Parses a decimal number in [min, max] for option 'name'. Returns 0, or
 * CLI_EXIT_USAGE after printing the usage error.
 */
int cli_parse_number(const char *cmd, const char *name, const char *arg, uint64_t min,
                     uint64_t max, uint64_t *out);

/*
 * Loads the server secret the way nudged finds it (cmd_token.c): from
 * 'secret_file' if not NULL; else from the config file's secret path
 * (config_defaults + config_load_file, relative paths relative to the
 * current directory as for nudged); else from the default ./var/secret.
 * Never creates it. Returns 0, or -1 with err telling the fix.
 */
int cli_secret_load(const char *config_file, const char *secret_file, struct secret *out,
                    char *err, size_t errlen);

/*
 * The idle-timeout measurement of `nudge probe` (cmd_probe.c), which
 * `nudge doctor --probe` runs too. Holds are whole seconds.
 */
/* The longest hold the server accepts: the heartbeat ceiling (push/probe.c). */
#define CLI_PROBE_HOLD_CEILING 3540
/* The largest --max accepted: a day; nobody waits longer for a probe, holds stop at the ceiling. */
#define CLI_PROBE_MAX_MAX 86400

struct cli_probe_opts {
    unsigned min;      /* the shortest hold tried, >= 1 */
    unsigned max;      /* the longest asked (holds stop at CLI_PROBE_HOLD_CEILING) */
    double precision;  /* stop when (lost - survived) / lost <= this fraction */
};

struct cli_probe_result {
    int no_timeout;    /* the longest hold tried survived */
    unsigned alive;    /* the longest hold that survived, 0: none */
    unsigned lost;     /* the shortest lost hold above alive, 0: none */
    unsigned top;      /* the longest hold tried */
    unsigned probes;   /* probes made */
    uint64_t took_ms;
};

/* `nudge probe`'s defaults: --min 1, --max 3600, --precision 5%. */
void cli_probe_defaults(struct cli_probe_opts *opts);

/*
 * Parses a precision option 'name' ("5%", "5" or "2.5%") into a fraction.
 * Returns 0, or CLI_EXIT_USAGE after printing the usage error.
 */
int cli_probe_parse_precision(const char *cmd, const char *name, const char *arg, double *out);

struct httpc;

/*
 * Measures the idle timeout of the path to the server 'http' (parsed by
 * httpc_init; its connection is not used: every probe has its own) with the
 * user token 'token'. Result lines ("probe 20 s: survived") go to 'out',
 * or nowhere when it is NULL. Blocks for the whole run: about 3 times the
 * timeout found, or opts->max when there is none. Returns 0 with 'res'
 * filled, or -1 after printing "nudge CMD: <why>" to stderr.
 */
int cli_probe_measure(const char *cmd, const struct httpc *http, const char *token,
                      const struct cli_probe_opts *opts, FILE *out, struct cli_probe_result *res);

/* Subcommands: argv[0] is the subcommand's name. Each returns an exit code. */
int cmd_token(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_ping(int argc, char **argv);
int cmd_sessions(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_listen(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

/* Their --help texts, also printed by `nudge help CMD`. */
void cmd_token_usage(FILE *out);
void cmd_publish_usage(FILE *out);
void cmd_ping_usage(FILE *out);
void cmd_sessions_usage(FILE *out);
void cmd_probe_usage(FILE *out);
void cmd_listen_usage(FILE *out);
void cmd_doctor_usage(FILE *out);

#endif
