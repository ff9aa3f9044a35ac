/*
 * cmd_token.c — `nudge token`: mints bearer tokens with nudged's secret, and
 * the minting helpers publish and ping use for local convenience.
 *
 * The secret is found the way nudged finds it (-c nudged.conf, or
 * --secret-file, else the default ./var/secret) and is only ever read: the
 * server owns its creation. Batch forms (--user-prefix/--count,
 * --users-from) exist for benchmarks that need 100k tokens: the secret is
 * loaded once, each token costs one HMAC-SHA256 and one buffered write, so
 * 100k tokens take a fraction of a second.
 *
 * Two forms act on a server's tokens instead: --revoke USER asks nudged
 * (DELETE /v1/admin/tokens/USER, an admin token minted from the same secret
 * unless --token gives one) to refuse every token of USER issued until now;
 * --rotate-secret writes a new signing key into the secret file, keeping the
 * current one as the previous key, so that tokens already handed out stay
 * valid (nudged signs with the new key once restarted).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/httpc.h"
#include "common/config.h"

enum {
    OPT_USER = CLI_OPT_FIRST_OWN,
    OPT_PUBLISHER,
    OPT_ADMIN,
    OPT_NAME,
    OPT_TTL,
    OPT_USER_PREFIX,
    OPT_COUNT,
    OPT_START,
    OPT_USERS_FROM,
    OPT_REVOKE,
    OPT_ROTATE,
    OPT_URL,
    OPT_TOKEN,
};

enum mode {
    MODE_NONE,
    MODE_USER,
    MODE_PUBLISHER,
    MODE_ADMIN,
    MODE_PREFIX,
    MODE_FROM,
    MODE_REVOKE,
    MODE_ROTATE,
};

/* How long --revoke waits for nudged's answer. */
#define REVOKE_TIMEOUT_MS 10000

/* Batch output goes through one large stdio buffer: a write(2) per 64 KiB, not per token. */
#define BATCH_BUF (64 * 1024)
/* --count is bounded so a typo cannot fill a disk: 100 million tokens is ~9 GB. */
#define COUNT_MAX 100000000ULL

void cmd_token_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge token --user ID [--ttl DURATION] [SECRET]\n"
            "       nudge token --publisher [--name NAME] [--ttl DURATION] [SECRET]\n"
            "       nudge token --admin [--name NAME] [--ttl DURATION] [SECRET]\n"
            "       nudge token --user-prefix PREFIX --count N [--start N] [--ttl DURATION] "
            "[SECRET]\n"
            "       nudge token --users-from FILE [--ttl DURATION] [SECRET]\n"
            "       nudge token --revoke USER [--url URL] [--token TOKEN] [SECRET]\n"
            "       nudge token --rotate-secret [SECRET]\n"
            "\n"
            "Prints bearer tokens signed with nudged's secret, one per line.\n"
            "\n"
            "  --user ID             a user token for user ID (1 to 255 bytes): ping, state\n"
            "  --publisher           a publisher token: POST /v1/events\n"
            "  --admin               an admin token: GET /metrics, the sessions admin API\n"
            "  --name NAME           label of a publisher or admin token (default: publisher,\n"
            "                        admin)\n"
            "  --ttl DURATION        lifetime: 3600, 90s, 15m, 12h, 30d, 1w, or never;\n"
            "                        default 30d for user tokens, never for publisher/admin\n"
            "  --user-prefix PREFIX  user tokens for PREFIX<start> .. PREFIX<start+count-1>\n"
            "  --count N             how many tokens --user-prefix prints\n"
            "  --start N             first number for --user-prefix (default 0)\n"
            "  --users-from FILE     a user token for each line of FILE, in order (one user\n"
            "                        id per line, '-' for standard input)\n"
            "  --revoke USER         make nudged refuse every token of USER issued until now\n"
            "                        (and end USER's sessions); tokens minted afterwards work\n"
            "  --url URL             with --revoke: the server (default $NUDGE_URL, else\n"
            "                        " CLI_DEFAULT_URL ")\n"
            "  --token TOKEN         with --revoke: an admin token (default: minted from SECRET)\n"
            "  --cacert FILE         with --revoke to an https:// URL: trust these PEM CA\n"
            "                        certificates (default $NUDGE_CACERT, else the system's)\n"
            "  --insecure            with --revoke: do not check the server's certificate\n"
            "  --rotate-secret       put a new signing key in the secret file; the current one\n"
            "                        stays as the previous key, so tokens out there stay valid;\n"
            "                        restart nudged to sign with the new key\n"
            "  -h, --help            show this help\n"
            "\n"
            "SECRET, where the signing secret is read from (it is never created here: start\n"
            "nudged once to create it):\n"
            "  -c, --config FILE     nudged's config file: its [server] secret_file, else\n"
            "                        <data_dir>/secret; relative paths in it are relative to\n"
            "                        the current directory, as they are for nudged\n"
            "  --secret-file PATH    the secret file itself (wins over -c)\n"
            "  default               ./var/secret, where nudged keeps it without a config\n");
}

int cli_secret_load(const char *config_file, const char *secret_file, struct secret *out,
                    char *err, size_t errlen)
{
    struct config cfg;
    char path[PATH_MAX];
    struct stat st;
    int created = 0;

    config_defaults(&cfg);
    if (config_file != NULL && config_load_file(&cfg, config_file, err, errlen) < 0)
        return -1;
    if (secret_file != NULL)
        snprintf(path, sizeof(path), "%s", secret_file);
    else
        config_secret_path(&cfg, path, sizeof(path));
    if (stat(path, &st) < 0 && errno == ENOENT) {
        if (secret_file != NULL)
            snprintf(err, errlen, "secret file %s does not exist: start nudged once to create it",
                     path);
        else
            snprintf(err, errlen,
                     "secret file %s does not exist: start nudged once to create it, or pass "
                     "--secret-file PATH%s",
                     path, config_file ? "" : " or -c nudged.conf");
        return -1;
    }
    return secret_load(path, 0, &created, out, err, errlen);
}

/* A token goes into a header: anything but visible ASCII would break or inject into it. */
static int token_is_clean(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t <= ' ' || (unsigned char)*t >= 0x7f)
            return 0;
    return 1;
}

int cli_server_token(const struct cli_server *srv, const char *cmd, enum token_kind kind,
                     const char *mint_subject, int64_t mint_ttl, char *out)
{
    const char *given = srv->token_flag;
    char err[512 + PATH_MAX];
    struct secret secret;
    int n;

    if (given == NULL && (srv->config_file != NULL || srv->secret_file != NULL)) {
        if (mint_subject == NULL)
            return cli_usage_error(cmd, "cannot mint a token for this command; pass --token");
        if (cli_secret_load(srv->config_file, srv->secret_file, &secret, err, sizeof(err)) < 0) {
            fprintf(stderr, "nudge %s: %s\n", cmd, err);
            return CLI_EXIT_FAIL;
        }
        n = token_sign(&secret, kind, mint_subject, mint_ttl ? time(NULL) + mint_ttl : 0, out,
                       TOKEN_MAX);
        memset(&secret, 0, sizeof(secret));
        if (n < 0)
            return cli_usage_error(cmd, "cannot mint a token for '%s': %s", mint_subject,
                                   strerror(-n));
        return CLI_EXIT_OK;
    }
    if (given == NULL)
        given = srv->token_env;
    if (given == NULL)
        return cli_usage_error(cmd, "no credential: pass --token TOKEN, set NUDGE_TOKEN, or "
                                    "mint one with -c nudged.conf or --secret-file PATH");
    if (given[0] == '\0' || strlen(given) >= TOKEN_MAX || !token_is_clean(given))
        return cli_usage_error(cmd, "the token %s is not a nudge token (empty, too long, or "
                                    "holding spaces or control characters)",
                               given == srv->token_flag ? "given with --token" : "in NUDGE_TOKEN");
    memcpy(out, given, strlen(given) + 1);
    return CLI_EXIT_OK;
}

/* Signs one token and prints it on its own line. Returns 0, or -errno from token_sign. */
static int print_token(const struct secret *s, enum token_kind kind, const char *subject,
                       int64_t expires)
{
    char tok[TOKEN_MAX];
    int n = token_sign(s, kind, subject, expires, tok, sizeof(tok));

    if (n < 0)
        return n;
    tok[n] = '\n';
    fwrite(tok, 1, (size_t)n + 1, stdout);
    return 0;
}

/* --users-from: one token per line of 'path'. Returns an exit code. */
static int tokens_from_file(const struct secret *s, const char *path, int64_t expires)
{
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    const char *name = in == stdin ? "standard input" : path;
    char *line = NULL;
    size_t cap = 0;
    unsigned long lineno = 0;
    ssize_t len;
    int rc = CLI_EXIT_OK;

    if (in == NULL) {
        fprintf(stderr, "nudge token: cannot open %s: %s\n", path, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        /* Every line must give a token, so output line N stays input line N's token. */
        if (len == 0 || len > TOKEN_SUBJECT_MAX || memchr(line, '\0', (size_t)len) != NULL) {
            char what[64];
            if (len == 0)
                snprintf(what, sizeof(what), "empty line");
            else if (memchr(line, '\0', (size_t)len) != NULL)
                snprintf(what, sizeof(what), "the line holds a NUL byte");
            else
                snprintf(what, sizeof(what), "the line is %zd bytes long", len);
            fprintf(stderr, "nudge token: %s:%lu: %s: a user id is 1 to %d bytes without NUL\n",
                    name, lineno, what, TOKEN_SUBJECT_MAX);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (print_token(s, TOKEN_USER, line, expires) < 0) {
            fprintf(stderr, "nudge token: %s:%lu: cannot sign a token for this user id\n", name,
                    lineno);
            rc = CLI_EXIT_FAIL;
            break;
        }
    }
    if (rc == CLI_EXIT_OK && ferror(in)) {
        fprintf(stderr, "nudge token: reading %s: %s\n", name, strerror(errno));
        rc = CLI_EXIT_FAIL;
    }
    free(line);
    if (in != stdin)
        fclose(in);
    return rc;
}

/* The secret file's path as nudged finds it (cli_secret_load's rules). */
static void secret_path(const char *config_file, const char *secret_file, char *out, size_t len)
{
    static struct config c; /* large: not on the stack */

    if (secret_file != NULL) {
        snprintf(out, len, "%s", secret_file);
        return;
    }
    config_defaults(&c);
    if (config_file != NULL) {
        char err[512];
        if (config_load_file(&c, config_file, err, sizeof(err)) < 0) {
            out[0] = '\0';
            return;
        }
    }
    config_secret_path(&c, out, len);
}

struct token_args;
static int rotate(const struct token_args *a);
static int revoke(const struct token_args *a);

/* What the command line asks for, filled by on_option. */
struct token_args {
    enum mode mode;
    int nmodes; /* how many of --user, --publisher, --admin, ... were given: one is right */
    const char *user, *label, *ttl, *prefix, *from, *url, *token, *cacert;
    int insecure;
    uint64_t count, start;
    int have_count, have_start;
    const char *config_file, *secret_file;
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct token_args *a = arg;

    switch (opt) {
    case OPT_USER:
        a->user = value;
        a->mode = MODE_USER;
        a->nmodes++;
        break;
    case OPT_PUBLISHER:
        a->mode = MODE_PUBLISHER;
        a->nmodes++;
        break;
    case OPT_ADMIN:
        a->mode = MODE_ADMIN;
        a->nmodes++;
        break;
    case OPT_USER_PREFIX:
        a->prefix = value;
        a->mode = MODE_PREFIX;
        a->nmodes++;
        break;
    case OPT_USERS_FROM:
        a->from = value;
        a->mode = MODE_FROM;
        a->nmodes++;
        break;
    case OPT_REVOKE:
        a->user = value;
        a->mode = MODE_REVOKE;
        a->nmodes++;
        break;
    case OPT_ROTATE:
        a->mode = MODE_ROTATE;
        a->nmodes++;
        break;
    case OPT_URL:
        a->url = value;
        break;
    case OPT_TOKEN:
        a->token = value;
        break;
    case CLI_OPT_CACERT:
        a->cacert = value;
        break;
    case CLI_OPT_INSECURE:
        a->insecure = 1;
        break;
    case OPT_NAME:
        a->label = value;
        break;
    case OPT_TTL:
        a->ttl = value;
        break;
    case OPT_COUNT:
        if (cli_parse_number(cmd, "--count", value, 1, COUNT_MAX, &a->count) != 0)
            return CLI_EXIT_USAGE;
        a->have_count = 1;
        break;
    case OPT_START:
        if (cli_parse_number(cmd, "--start", value, 0, UINT64_MAX - COUNT_MAX, &a->start) != 0)
            return CLI_EXIT_USAGE;
        a->have_start = 1;
        break;
    case 'c':
        a->config_file = value;
        break;
    case CLI_OPT_SECRET_FILE:
        a->secret_file = value;
        break;
    }
    return 0;
}

int cmd_token(int argc, char **argv)
{
    /*
     * -c/--config and --secret-file are token's own, not the server options:
     * only --revoke talks to a server, so --url and --token are its own too.
     */
    static const struct option options[] = {
        {"user", required_argument, NULL, OPT_USER},
        {"publisher", no_argument, NULL, OPT_PUBLISHER},
        {"admin", no_argument, NULL, OPT_ADMIN},
        {"name", required_argument, NULL, OPT_NAME},
        {"ttl", required_argument, NULL, OPT_TTL},
        {"user-prefix", required_argument, NULL, OPT_USER_PREFIX},
        {"count", required_argument, NULL, OPT_COUNT},
        {"start", required_argument, NULL, OPT_START},
        {"users-from", required_argument, NULL, OPT_USERS_FROM},
        {"revoke", required_argument, NULL, OPT_REVOKE},
        {"rotate-secret", no_argument, NULL, OPT_ROTATE},
        {"url", required_argument, NULL, OPT_URL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"cacert", required_argument, NULL, CLI_OPT_CACERT},
        {"insecure", no_argument, NULL, CLI_OPT_INSECURE},
        {"config", required_argument, NULL, 'c'},
        {"secret-file", required_argument, NULL, CLI_OPT_SECRET_FILE},
        {NULL, 0, NULL, 0},
    };
    static char outbuf[BATCH_BUF];
    const char *cmd = "token";
    struct token_args a = {.mode = MODE_NONE};
    int rc;
    int64_t ttl_s = -1, expires;
    char err[512 + PATH_MAX];
    struct secret secret;

    rc = cli_parse_args(cmd, argc, argv, options, NULL, cmd_token_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        return rc;
    if (a.nmodes == 0)
        return cli_usage_error(cmd, "say which token: --user ID, --publisher, --admin, "
                                    "--user-prefix PREFIX --count N, or --users-from FILE");
    if (a.nmodes > 1)
        return cli_usage_error(cmd, "give only one of --user, --publisher, --admin, "
                                    "--user-prefix, --users-from, --revoke and --rotate-secret");
    if ((a.url != NULL || a.token != NULL || a.cacert != NULL || a.insecure) &&
        a.mode != MODE_REVOKE)
        return cli_usage_error(cmd, "--url, --token, --cacert and --insecure go with --revoke");
    if ((a.mode == MODE_REVOKE || a.mode == MODE_ROTATE) && a.ttl != NULL)
        return cli_usage_error(cmd, "--ttl goes with the tokens printed, not with --%s",
                               a.mode == MODE_REVOKE ? "revoke" : "rotate-secret");
    if (a.mode == MODE_REVOKE && (a.user[0] == '\0' || strlen(a.user) > TOKEN_SUBJECT_MAX))
        return cli_usage_error(cmd, "--revoke: a user id is 1 to %d bytes", TOKEN_SUBJECT_MAX);
    if (a.mode == MODE_ROTATE)
        return rotate(&a);
    if (a.mode == MODE_REVOKE)
        return revoke(&a);
    if (a.label != NULL && a.mode != MODE_PUBLISHER && a.mode != MODE_ADMIN)
        return cli_usage_error(cmd, "--name labels publisher and admin tokens; a user token "
                                    "names its user");
    if ((a.have_count || a.have_start) && a.mode != MODE_PREFIX)
        return cli_usage_error(cmd, "--count and --start go with --user-prefix");
    if (a.mode == MODE_PREFIX && !a.have_count)
        return cli_usage_error(cmd, "--user-prefix needs --count N");
    if (a.mode == MODE_USER && (a.user[0] == '\0' || strlen(a.user) > TOKEN_SUBJECT_MAX))
        return cli_usage_error(cmd, "--user: a user id is 1 to %d bytes", TOKEN_SUBJECT_MAX);
    if (a.label != NULL && (a.label[0] == '\0' || strlen(a.label) > TOKEN_SUBJECT_MAX))
        return cli_usage_error(cmd, "--name: a label is 1 to %d bytes", TOKEN_SUBJECT_MAX);
    /* The longest name is the prefix followed by the 20 digits of the largest uint64. */
    if (a.mode == MODE_PREFIX && strlen(a.prefix) + 20 > TOKEN_SUBJECT_MAX)
        return cli_usage_error(cmd, "--user-prefix: at most %d bytes", TOKEN_SUBJECT_MAX - 20);
    if (a.ttl != NULL) {
        if (strcmp(a.ttl, "never") == 0)
            ttl_s = 0;
        else if (token_parse_duration(a.ttl, &ttl_s) < 0 || ttl_s <= 0)
            return cli_usage_error(cmd, "--ttl '%s': expected a duration such as 3600, 90s, "
                                        "15m, 12h, 30d, 1w, or never",
                                   a.ttl);
    } else {
        ttl_s = a.mode == MODE_PUBLISHER || a.mode == MODE_ADMIN ? 0 : CLI_USER_TTL;
    }
    expires = ttl_s > 0 ? (int64_t)time(NULL) + ttl_s : 0;

    if (cli_secret_load(a.config_file, a.secret_file, &secret, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge token: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));

    rc = CLI_EXIT_OK;
    switch (a.mode) {
    case MODE_USER:
        if (print_token(&secret, TOKEN_USER, a.user, expires) < 0)
            rc = cli_usage_error(cmd, "--user: cannot sign a token for this user id");
        break;
    case MODE_PUBLISHER:
    case MODE_ADMIN:
        if (print_token(&secret, a.mode == MODE_ADMIN ? TOKEN_ADMIN : TOKEN_PUBLISHER,
                        a.label ? a.label : a.mode == MODE_ADMIN ? "admin" : "publisher",
                        expires) < 0)
            rc = cli_usage_error(cmd, "--name: cannot sign a token with this label");
        break;
    case MODE_PREFIX: {
        char subject[TOKEN_SUBJECT_MAX + 1];
        for (uint64_t i = a.start; i < a.start + a.count; i++) {
            snprintf(subject, sizeof(subject), "%s%llu", a.prefix, (unsigned long long)i);
            if (print_token(&secret, TOKEN_USER, subject, expires) < 0) {
                rc = cli_usage_error(cmd, "--user-prefix: cannot sign a token for '%s'",
                                     subject);
                break;
            }
        }
        break;
    }
    case MODE_FROM:
        rc = tokens_from_file(&secret, a.from, expires);
        break;
    case MODE_NONE:
    case MODE_REVOKE:
    case MODE_ROTATE:
        break; /* handled before */
    }
    memset(&secret, 0, sizeof(secret));

    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "nudge token: writing the tokens: %s\n", strerror(errno));
        return CLI_EXIT_FAIL;
    }
    return rc;
}

/* --rotate-secret: a new current key, the current one kept as the previous. */
static int rotate(const struct token_args *a)
{
    char path[PATH_MAX], err[512 + PATH_MAX];
    struct secret s;

    /* Loaded first, with cli_secret_load's own messages when it is missing or wrong. */
    if (cli_secret_load(a->config_file, a->secret_file, &s, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge token: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    secret_path(a->config_file, a->secret_file, path, sizeof(path));
    if (secret_rotate(path, &s, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge token: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    printf("rotated %s: new key %08x, previous key %08x; restart nudged to sign with the new "
           "key (tokens of the previous key stay valid until they expire or the next rotation)\n",
           path, s.id, s.previous_id);
    memset(&s, 0, sizeof(s));
    return CLI_EXIT_OK;
}

/* --revoke USER: DELETE /v1/admin/tokens/USER with an admin token. */
static int revoke(const struct token_args *a)
{
    const char *url = a->url ? a->url : getenv("NUDGE_URL"), *cacert;
    char token[TOKEN_MAX], err[512 + PATH_MAX], euser[3 * TOKEN_SUBJECT_MAX + 1];
    char path[sizeof("/v1/admin/tokens/") + sizeof(euser)];
    struct httpc http;
    struct httpc_response resp;
    json_t *root;
    int rc = CLI_EXIT_FAIL;

    if (url == NULL || url[0] == '\0')
        url = CLI_DEFAULT_URL;
    if (a->cacert == NULL && getenv("NUDGE_CACERT") != NULL && getenv("NUDGE_CACERT")[0])
        cacert = getenv("NUDGE_CACERT");
    else
        cacert = a->cacert;
    rc = cli_tls_setup("token", url, cacert, a->insecure);
    if (rc != CLI_ARGS_PARSED)
        return rc;
    rc = CLI_EXIT_FAIL;
    if (a->token != NULL) {
        snprintf(token, sizeof(token), "%s", a->token);
    } else {
        struct secret s;
        if (cli_secret_load(a->config_file, a->secret_file, &s, err, sizeof(err)) < 0) {
            fprintf(stderr, "nudge token: %s (or give an admin token with --token)\n", err);
            return CLI_EXIT_FAIL;
        }
        if (token_sign(&s, TOKEN_ADMIN, "revoke", time(NULL) + 300, token, sizeof(token)) < 0) {
            fprintf(stderr, "nudge token: cannot sign an admin token\n");
            return CLI_EXIT_FAIL;
        }
        memset(&s, 0, sizeof(s));
    }
    if (httpc_init(&http, url, REVOKE_TIMEOUT_MS, err, sizeof(err)) < 0)
        return cli_usage_error("token", "--url: %s", err);
    httpc_query_escape(a->user, euser, sizeof(euser));
    snprintf(path, sizeof(path), "/v1/admin/tokens/%s", euser);
    if (httpc_request(&http, "DELETE", path, token, NULL, 0, &resp, err, sizeof(err)) < 0) {
        fprintf(stderr, "nudge token: %s\n", err);
        httpc_close(&http);
        return CLI_EXIT_FAIL;
    }
    root = json_loadb(resp.body, resp.body_len, 0, NULL);
    if (resp.status == 200 && json_is_integer(json_object_get(root, "before"))) {
        printf("revoked the tokens of %s issued until %lld ms; %lld sessions ended\n", a->user,
               (long long)json_integer_value(json_object_get(root, "before")),
               (long long)json_integer_value(json_object_get(root, "sessions")));
        rc = CLI_EXIT_OK;
    } else {
        cli_print_http_error("token", &resp);
    }
    json_decref(root);
    httpc_response_free(&resp);
    httpc_close(&http);
    return rc;
}
