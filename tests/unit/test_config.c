/*
 * test_config.c — nudged's settings (src/common/config.c): defaults, the INI
 * file, flags, cross checks, --help and --print-config.
 *
 * Config files are written into a fresh mkdtemp directory per test group
 * and removed at the end. Error tests check the whole prefix "PATH:LINE:"
 * and the reason, since the point of those messages is to be exact.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/util.h"

static char tmpdir[64];
static int file_seq;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/nudge-test-config-XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Writes 'len' bytes to a new file in tmpdir; its path goes to out[PATH_MAX]. */
static void write_conf_len(char *out, const char *content, size_t len)
{
    FILE *f;

    snprintf(out, PATH_MAX, "%s/c%d.conf", tmpdir, ++file_seq);
    f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_conf(char *out, const char *content)
{
    write_conf_len(out, content, strlen(content));
}

/* Loads 'content' over the defaults; expects success. */
static void load_ok(struct config *c, const char *content)
{
    char path[PATH_MAX], err[512] = "";

    config_defaults(c);
    write_conf(path, content);
    if (config_load_file(c, path, err, sizeof(err)) != 0)
        fail_msg("load failed: %s\n--- file:\n%s", err, content);
}

/* Loads 'content' and expects a one-line error "PATH:LINE: ..." containing 'reason'. */
static void load_fails(const char *content, int line, const char *reason)
{
    char path[PATH_MAX], err[512] = "", prefix[PATH_MAX + 16];
    struct config c;

    config_defaults(&c);
    write_conf(path, content);
    if (config_load_file(&c, path, err, sizeof(err)) != -1)
        fail_msg("accepted:\n%s", content);
    snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, reason) == NULL ||
        strchr(err, '\n') != NULL)
        fail_msg("want '%s...%s', got '%s'\n--- file:\n%s", prefix, reason, err, content);
}

/* config_from_args over a NULL-terminated list; argv[0] is supplied. */
static int from_args(struct config *c, enum config_action *action, char *err, size_t errlen,
                     ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;

    argv[argc++] = "nudged";
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        assert_true(argc < 31);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return config_from_args(c, argc, argv, action, err, errlen);
}

/* ---- defaults ---------------------------------------------------------- */

static void test_defaults(void **state)
{
    struct config c;
    char err[256], path[PATH_MAX];

    (void)state;
    memset(&c, 0xa5, sizeof(c));
    config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_string_equal(c.data_dir, "./var");
    assert_string_equal(c.secret_file, "");
    assert_int_equal(c.max_header_bytes, 8192);
    assert_int_equal(c.max_body_bytes, 65536);
    assert_int_equal(c.header_timeout, 10);
    assert_int_equal(c.keepalive_timeout, 75);
    assert_int_equal(c.shutdown_retry_after, 5);
    assert_string_equal(c.log_level, "info");
    assert_int_equal(c.heartbeat_min, 60);
    assert_int_equal(c.heartbeat_max, 0); /* derived */
    assert_int_equal(c.heartbeat_increment, 60);
    assert_int_equal(c.heartbeat_sample_size, 3);
    assert_int_equal(c.heartbeat_grace, 30);
    assert_int_equal(c.heartbeat_ceiling_retry, 86400);
    assert_int_equal(c.heartbeat_alert_average, 540);
    assert_int_equal(c.heartbeat_alert_min_devices, 10);
    assert_int_equal(c.idle_timeout, 1800);
    assert_int_equal(c.ping_max_folders, 100);
    assert_int_equal(c.max_connections, 16000);
    assert_int_equal(c.max_per_ip, 0);
    assert_int_equal(c.sessions_per_user_limit, 32);
    assert_int_equal(c.keepalive_idle, 0);
    assert_int_equal(c.keepalive_interval, 0);
    assert_int_equal(c.keepalive_count, 0);
    assert_int_equal(c.user_timeout, 0);
    assert_int_equal(c.derived, 0);
    assert_string_equal(c.store_backend, "sqlite");
    assert_string_equal(c.store_sync, "full");
    assert_string_equal(c.store_path, "");
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    config_secret_path(&c, path, sizeof(path));
    assert_string_equal(path, "./var/secret");
    config_store_path(&c, path, sizeof(path));
    assert_string_equal(path, "./var/nudge.db");
}

static void test_defaults_from_empty_args_and_file(void **state)
{
    struct config a, b, d;
    enum config_action action = CONFIG_HELP;
    char err[256];

    (void)state;
    config_defaults(&d);
    assert_int_equal(from_args(&a, &action, err, sizeof(err), NULL), 0);
    assert_int_equal(action, CONFIG_RUN);
    /* The command line derives what is left at 0; the file loader alone does not. */
    config_derive(&d);
    assert_memory_equal(&a, &d, sizeof(d));
    config_defaults(&d);
    load_ok(&b, "");
    assert_memory_equal(&b, &d, sizeof(d));
    load_ok(&b, "; only comments\n# here\n\n   \n[server]\n");
    assert_memory_equal(&b, &d, sizeof(d));
}

static void test_derivation(void **state)
{
    struct config c;
    enum config_action action;
    char err[256], line[512];

    (void)state;
    /* The defaults: Exchange's 28 minutes below a 30-minute firewall, keepalive at 5 min. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), NULL), 0);
    assert_int_equal(c.heartbeat_max, 1680);
    assert_int_equal(c.keepalive_idle, 300);
    assert_int_equal(c.keepalive_interval, 15);
    assert_int_equal(c.keepalive_count, 4);
    assert_int_equal(c.user_timeout, 360);
    assert_int_equal(c.derived, 0x3f);
    /* UDP follows the first TCP address when not set. */
    assert_string_equal(c.udp_listen, "127.0.0.1:8080");
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--listen",
                               "[::1]:9000 ,  0.0.0.0:9001", NULL), 0);
    assert_string_equal(c.udp_listen, "[::1]:9000");
    assert_int_equal(config_listen_count(&c), 2);
    assert_int_equal(config_listen_addr(&c, 1, line, sizeof(line)), 0);
    assert_string_equal(line, "0.0.0.0:9001");
    assert_int_equal(config_listen_addr(&c, 2, line, sizeof(line)), -1);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--listen", "127.0.0.1:1",
                               "--udp-listen", "", NULL), 0);
    assert_string_equal(c.udp_listen, "");
    assert_int_equal(c.derived & CONFIG_DERIVED_UDP_LISTEN, 0);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--listen",
                               "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,"
                               "127.0.0.1:6,127.0.0.1:7,127.0.0.1:8,127.0.0.1:9", NULL), -1);
    assert_non_null(strstr(err, "more than 8 addresses"));
    /* A 10-minute middlebox: the 10% margin, keepalive at half the timeout. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--idle-timeout", "600", NULL), 0);
    assert_int_equal(c.heartbeat_max, 540);
    assert_int_equal(c.keepalive_idle, 300);
    assert_int_equal(c.keepalive_interval, 5);
    assert_int_equal(c.user_timeout, 320);
    /* Far past an hour: the 3540 s ceiling holds. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--idle-timeout", "7200", NULL), 0);
    assert_int_equal(c.heartbeat_max, 3540);
    /* Second scale (the lab): still sane. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--idle-timeout", "10",
                               "--heartbeat-min", "1", NULL),
                     0);
    assert_int_equal(c.heartbeat_max, 9);
    assert_int_equal(c.keepalive_idle, 5);
    assert_int_equal(c.keepalive_interval, 1);
    /* What is set stays set, and is said to be. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--keepalive-idle", "42",
                               "--heartbeat-max", "900", NULL),
                     0);
    assert_int_equal(c.keepalive_idle, 42);
    assert_int_equal(c.heartbeat_max, 900);
    assert_int_equal(c.user_timeout, 42 + 15 * 4);
    config_describe_derived(&c, line, sizeof(line));
    assert_non_null(strstr(line, "heartbeat_max=900(set)"));
    assert_non_null(strstr(line, "keepalive_idle=42(set)"));
    assert_non_null(strstr(line, "keepalive_interval=15(derived)"));
    assert_non_null(strstr(line, "dead_peer_within=102"));
}

static void test_secret_path(void **state)
{
    struct config c;
    char path[PATH_MAX];

    (void)state;
    config_defaults(&c);
    strcpy(c.data_dir, "/srv/nudge/");
    config_secret_path(&c, path, sizeof(path));
    assert_string_equal(path, "/srv/nudge/secret");
    strcpy(c.secret_file, "/etc/nudge/secret");
    config_secret_path(&c, path, sizeof(path));
    assert_string_equal(path, "/etc/nudge/secret");
}

static void test_store_path(void **state)
{
    struct config c;
    char path[PATH_MAX];

    (void)state;
    config_defaults(&c);
    strcpy(c.data_dir, "/srv/nudge/");
    config_store_path(&c, path, sizeof(path));
    assert_string_equal(path, "/srv/nudge/nudge.db");
    strcpy(c.data_dir, "/srv/nudge");
    config_store_path(&c, path, sizeof(path));
    assert_string_equal(path, "/srv/nudge/nudge.db");
    strcpy(c.store_path, "/var/lib/nudge/states.db");
    config_store_path(&c, path, sizeof(path));
    assert_string_equal(path, "/var/lib/nudge/states.db");
}

/* ---- the file ---------------------------------------------------------- */

static void test_file_sets_every_option(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "[server]\n"
                "listen = [::1]:9000\n"
                "data_dir = /srv/nudge\n"
                "secret_file = /etc/nudge/secret\n"
                "max_header_bytes = 16384\n"
                "max_body_bytes = 0\n"
                "header_timeout = 20\n"
                "keepalive_timeout = 300\n"
                "shutdown_retry_after = 0\n"
                "log_level = debug\n"
                "\n"
                "[heartbeat]\n"
                "min = 30\n"
                "max = 3540\n"
                "[ping]\n"
                "max_folders = 10000\n"
                "[store]\n"
                "backend = memory\n"
                "sync = normal\n"
                "path = /srv/nudge/states.db\n");
    assert_string_equal(c.listen, "[::1]:9000");
    assert_string_equal(c.data_dir, "/srv/nudge");
    assert_string_equal(c.secret_file, "/etc/nudge/secret");
    assert_int_equal(c.max_header_bytes, 16384);
    assert_int_equal(c.max_body_bytes, 0);
    assert_int_equal(c.header_timeout, 20);
    assert_int_equal(c.keepalive_timeout, 300);
    assert_int_equal(c.shutdown_retry_after, 0);
    assert_string_equal(c.log_level, "debug");
    assert_int_equal(c.heartbeat_min, 30);
    assert_int_equal(c.heartbeat_max, 3540);
    assert_int_equal(c.ping_max_folders, 10000);
    assert_string_equal(c.store_backend, "memory");
    assert_string_equal(c.store_sync, "normal");
    assert_string_equal(c.store_path, "/srv/nudge/states.db");
    load_ok(&c, "[store]\nbackend = sqlite\nsync = full\n");
    assert_string_equal(c.store_backend, "sqlite");
    assert_string_equal(c.store_sync, "full");
}

static void test_file_bounds_inclusive(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "[server]\nmax_header_bytes = 1024\nmax_body_bytes = 67108864\n"
                "header_timeout = 3600\nkeepalive_timeout = 86400\nshutdown_retry_after = 3600\n"
                "[heartbeat]\nmin = 1\nmax = 1\n[ping]\nmax_folders = 1\n");
    assert_int_equal(c.max_header_bytes, 1024);
    assert_int_equal(c.max_body_bytes, 67108864);
    assert_int_equal(c.heartbeat_min, 1);
    assert_int_equal(c.ping_max_folders, 1);
    load_ok(&c, "[server]\nmax_header_bytes = 1048576\n");
    assert_int_equal(c.max_header_bytes, 1048576);
}

static void test_file_syntax_variants(void **state)
{
    struct config c;

    (void)state;
    /* Inline comments after whitespace; ';' inside a value is kept. */
    load_ok(&c, "[server] ; the server\nlog_level = warn ; quieter\ndata_dir = /a;b\n"
                "listen=0.0.0.0:80\n");
    assert_string_equal(c.log_level, "warn");
    assert_string_equal(c.data_dir, "/a;b");
    assert_string_equal(c.listen, "0.0.0.0:80");
    /* Indented lines are ordinary lines, not continuations of the previous value. */
    load_ok(&c, "[server]\n  data_dir = /x\n\tlog_level = error\n");
    assert_string_equal(c.data_dir, "/x");
    assert_string_equal(c.log_level, "error");
    /* CRLF line endings, a byte order mark, a file without a final newline. */
    load_ok(&c, "\xEF\xBB\xBF[heartbeat]\r\nmin = 5\r\nmax = 7");
    assert_int_equal(c.heartbeat_min, 5);
    assert_int_equal(c.heartbeat_max, 7);
    /* Log levels are case-insensitive and stored in their canonical spelling. */
    load_ok(&c, "[server]\nlog_level = WARN\n");
    assert_string_equal(c.log_level, "warn");
    /* Leading zeros are digits too; an empty secret_file means the default. */
    load_ok(&c, "[heartbeat]\nmin = 0090\n[server]\nsecret_file =\n");
    assert_int_equal(c.heartbeat_min, 90);
    assert_string_equal(c.secret_file, "");
}

static void test_file_duplicates_last_wins(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "[heartbeat]\nmin = 10\n[server]\n[heartbeat]\nmin = 20\nmin = 30\n");
    assert_int_equal(c.heartbeat_min, 30);
}

static void test_file_bad_numbers(void **state)
{
    (void)state;
    load_fails("[heartbeat]\nmin = abc\n", 2,
               "[heartbeat] min: expected a whole number from 1 to 3540, got 'abc'");
    load_fails("[heartbeat]\nmin = 0\n", 2, "from 1 to 3540, got '0'");
    load_fails("[heartbeat]\nmin = 3541\n", 2, "from 1 to 3540, got '3541'");
    load_fails("[heartbeat]\nmin = -5\n", 2, "got '-5'");
    load_fails("[heartbeat]\nmin = +5\n", 2, "got '+5'");
    load_fails("[heartbeat]\nmin = 5s\n", 2, "got '5s'");
    load_fails("[heartbeat]\nmin = 5 5\n", 2, "got '5 5'");
    load_fails("[heartbeat]\nmin = 0x10\n", 2, "got '0x10'");
    load_fails("[heartbeat]\nmin =\n", 2, "got ''");
    load_fails("[heartbeat]\nmin = 99999999999999999999999999\n", 2,
               "got '99999999999999999999999999'");
    /* 2^64 + 60: must not wrap around to 60. */
    load_fails("[heartbeat]\nmin = 18446744073709551676\n", 2, "got '18446744073709551676'");
    load_fails("[server]\nmax_header_bytes = 1023\n", 2,
               "[server] max_header_bytes: expected a whole number from 1024 to 1048576");
    load_fails("[server]\nmax_body_bytes = 67108865\n", 2, "from 0 to 67108864");
    load_fails("[server]\nheader_timeout = 0\n", 2, "from 1 to 3600");
    load_fails("[server]\nkeepalive_timeout = 86401\n", 2, "from 1 to 86400");
    load_fails("[server]\nshutdown_retry_after = 3601\n", 2, "from 0 to 3600");
    load_fails("[ping]\nmax_folders = 10001\n", 2, "[ping] max_folders: expected a whole number");
    /* The right line among valid ones. */
    load_fails("; comment\n[server]\nlisten = 127.0.0.1:1\n\n[heartbeat]\nmax = 100\nmin = x\n", 7,
               "got 'x'");
}

static void test_file_bad_strings(void **state)
{
    char longline[600], longval[300];

    (void)state;
    load_fails("[server]\nlisten = localhost:80\n", 2, "[server] listen: 'localhost:80'");
    load_fails("[server]\nlisten = 127.0.0.1\n", 2, "expected HOST:PORT");
    load_fails("[server]\nlisten = 127.0.0.1:65536\n", 2, "port must be a number from 0 to 65535");
    load_fails("[server]\nlisten = [::1:80\n", 2, "[server] listen:");
    load_fails("[server]\nlog_level = loud\n", 2,
               "[server] log_level: expected one of debug, info, warn, error, got 'loud'");
    load_fails("[store]\nbackend = redis\n", 2,
               "[store] backend: expected one of: sqlite, memory, got 'redis'");
    load_fails("[store]\nsync = off\n", 2, "[store] sync: expected one of: full, normal, got 'off'");
    load_fails("[server]\ndata_dir =\n", 2, "[server] data_dir: must not be empty");
    /* data_dir may be as long as fits one line: "data_dir=" + 190 bytes is 199, value too long. */
    memset(longval, 'd', 190);
    longval[190] = '\0';
    snprintf(longline, sizeof(longline), "[server]\ndata_dir=%s\n", longval);
    load_fails(longline, 2, "[server] data_dir: 190 bytes long, the limit is 188");
    /* A line longer than inih's buffer is refused, not split. */
    memset(longval, 'd', 250);
    longval[250] = '\0';
    snprintf(longline, sizeof(longline), "[server]\n\ndata_dir = %s\n", longval);
    load_fails(longline, 3, "line is 261 bytes long, the limit is 199");
}

static void test_udp_options(void **state)
{
    struct config c;
    struct sockaddr_in a = {.sin_family = AF_INET};
    struct sockaddr_in6 b = {.sin6_family = AF_INET6};

    (void)state;
    load_ok(&c, "");
    assert_string_equal(c.udp_listen, "auto"); /* resolved by config_derive */
    assert_int_equal(c.udp_resend_interval, 60);
    assert_int_equal(c.udp_max_resends, 60);
    assert_int_equal(c.udp_ttl, 3600);
    assert_string_equal(c.udp_allowed_hosts, "");
    /* Empty turns UDP off; the HTTP listener may not be empty. */
    load_ok(&c, "[udp]\nlisten =\nallowed_hosts = 10.0.0.0/8, 192.0.2.7,fd00::/8\n");
    assert_string_equal(c.udp_listen, "");
    load_fails("[server]\nlisten =\n", 2, "[server] listen: must not be empty");
    load_fails("[udp]\nlisten = :99999\n", 2, "[udp] listen: ");
    load_fails("[udp]\nallowed_hosts = 10.0.0.0/33\n", 2,
               "[udp] allowed_hosts: '10.0.0.0/33': prefix length must be 0 to 32");
    load_fails("[udp]\nallowed_hosts = fd00::/129\n", 2, "prefix length must be 0 to 128");
    load_fails("[udp]\nallowed_hosts = mail.example.org\n", 2,
               "'mail.example.org': not an IPv4 or IPv6 address (names are not resolved)");
    load_fails("[udp]\nallowed_hosts = 10.0.0.1,\n", 2, "the list ends with a comma");
    load_fails("[udp]\nallowed_hosts = 10.0.0.1,,10.0.0.2\n", 2, "expected an address");
    load_fails("[udp]\nresend_interval = 0\n", 2, "[udp] resend_interval: expected a whole number from 1");
    /* Matching: prefixes by family; an IPv4-mapped IPv6 address counts as IPv4. */
    inet_pton(AF_INET, "10.200.3.4", &a.sin_addr);
    assert_int_equal(util_prefix_list_match("10.0.0.0/8", (struct sockaddr *)&a), 1);
    assert_int_equal(util_prefix_list_match("10.128.0.0/9", (struct sockaddr *)&a), 1);
    assert_int_equal(util_prefix_list_match("10.0.0.0/9", (struct sockaddr *)&a), 0);
    assert_int_equal(util_prefix_list_match("10.200.3.4", (struct sockaddr *)&a), 1);
    assert_int_equal(util_prefix_list_match("10.200.3.5", (struct sockaddr *)&a), 0);
    assert_int_equal(util_prefix_list_match("0.0.0.0/0", (struct sockaddr *)&a), 1);
    assert_int_equal(util_prefix_list_match("", (struct sockaddr *)&a), 0);
    assert_int_equal(util_prefix_list_match("::/0", (struct sockaddr *)&a), 0);
    inet_pton(AF_INET6, "::ffff:10.200.3.4", &b.sin6_addr);
    assert_int_equal(util_prefix_list_match("192.0.2.0/24, 10.200.0.0/16", (struct sockaddr *)&b), 1);
    inet_pton(AF_INET6, "fd00:1::5", &b.sin6_addr);
    assert_int_equal(util_prefix_list_match("fd00::/8", (struct sockaddr *)&b), 1);
    assert_int_equal(util_prefix_list_match("fd00::/32", (struct sockaddr *)&b), 0);
    assert_int_equal(util_prefix_list_match("fd00:1::/33", (struct sockaddr *)&b), 1);
}

static void test_browser_options(void **state)
{
    char list[CONFIG_CORS_MAX][CONFIG_STR_MAX], why[256];
    struct config c;

    (void)state;
    load_ok(&c, "");
    assert_string_equal(c.auth_cookie, "yes");
    assert_string_equal(c.auth_cookie_secure, "auto");
    assert_int_equal(c.auth_ticket_ttl, 60);
    assert_int_equal(c.auth_tickets_max, 100000);
    assert_string_equal(c.http_cors_origins, "");
    load_ok(&c, "[auth]\nticket_ttl = 1\ncookie = no\ncookie_secure = yes\n"
                "[http]\ncors_origins = https://mail.example.org, http://[::1]:8080,http://10.0.0.1:81\n");
    assert_int_equal(c.auth_ticket_ttl, 1);
    assert_int_equal(config_cors_origins(c.http_cors_origins, list, CONFIG_CORS_MAX, why,
                                         sizeof(why)), 3);
    assert_string_equal(list[0], "https://mail.example.org");
    assert_string_equal(list[1], "http://[::1]:8080");
    assert_string_equal(list[2], "http://10.0.0.1:81");
    assert_int_equal(config_cors_origins("", list, CONFIG_CORS_MAX, why, sizeof(why)), 0);
    load_fails("[auth]\nticket_ttl = 0\n", 2, "[auth] ticket_ttl: expected a whole number from 1");
    load_fails("[auth]\nticket_ttl = 301\n", 2, "to 300");
    load_fails("[auth]\ncookie_secure = maybe\n", 2, "expected one of: auto, yes, no");
    load_fails("[http]\ncors_origins = https://mail.example.org/\n", 2,
               "[http] cors_origins: 'https://mail.example.org/': an origin has no path");
    load_fails("[http]\ncors_origins = https://mail.example.org/inbox\n", 2, "has no path");
    load_fails("[http]\ncors_origins = mail.example.org\n", 2, "must begin with http://");
    load_fails("[http]\ncors_origins = https://Mail.example.org\n", 2, "lower case");
    load_fails("[http]\ncors_origins = https://a.example:\n", 2, "the port must be 1 to 5 digits");
    load_fails("[http]\ncors_origins = https://a.example:8x\n", 2, "the port must be digits");
    load_fails("[http]\ncors_origins = https://a.example,,https://b.example\n", 2, "an empty entry");
    load_fails("[http]\ncors_origins = https://a.example,\n", 2, "an empty entry");
    load_fails("[http]\ncors_origins = https://[::1\n", 2, "no ']'");
    load_fails("[http]\ncors_origins = https://\n", 2, "must begin with");
}

static void test_file_unknown_names(void **state)
{
    (void)state;
    load_fails("[server]\nlisten = 127.0.0.1:1\n[srever]\nlisten = 1\n", 3,
               "unknown section [srever] (known sections: server, heartbeat, sessions, network, activesync, ping, probe, stream, udp, ingest, auth, http, log, store, tls)");
    load_fails("[nothing]\n", 1, "unknown section [nothing]");
    load_fails("[server]\nfoo = 1\n", 2, "unknown key 'foo' in [server]");
    load_fails("[server]\nmin = 60\n", 2, "unknown key 'min' in [server] (it belongs under [heartbeat])");
    load_fails("[heartbeat]\nMin = 60\n", 2, "unknown key 'Min' in [heartbeat]");
    load_fails("listen = 127.0.0.1:80\n", 1,
               "'listen' comes before any section header; it belongs under [server]");
    load_fails("bogus = 1\n[server]\n", 1, "unknown key 'bogus' before any section header");
}

static void test_file_syntax_errors(void **state)
{
    char nul[] = "[server]\nlisten = 1.2.3.4:5\0junk\n";

    (void)state;
    load_fails("[server]\njunk\n", 2, "expected '[section]' or 'key = value', got 'junk'");
    load_fails("[server]\nlisten = 1.2.3.4:5\nlog_level\n", 3, "got 'log_level'");
    load_fails("[server]\nlog_level ; = warn\n", 2, "expected '[section]' or 'key = value'");
    load_fails("[server\nlisten = 1.2.3.4:5\n", 1, "section header has no closing ']'");
    load_fails("[server] listen = 1.2.3.4:5\n", 1, "unexpected text after ']'");
    load_fails("[]\n", 1, "unknown section []");
    load_fails("[ server ]\n", 1, "unknown section [ server ]");
    load_fails("[server]\nlisten: 1.2.3.4:5\n", 2, "expected 'key = value', got 'listen: 1.2.3.4:5'");
    /* The last line without a newline is still checked. */
    load_fails("[server]\nlisten = 1.2.3.4:5\nbroken", 3, "got 'broken'");
    {
        char path[PATH_MAX], err[512], want[PATH_MAX + 64];
        struct config c;
        config_defaults(&c);
        write_conf_len(path, nul, sizeof(nul) - 1);
        assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
        snprintf(want, sizeof(want), "%s:2: line contains a NUL byte", path);
        assert_string_equal(err, want);
    }
}

static void test_file_unreadable(void **state)
{
    char path[PATH_MAX], err[512], want[PATH_MAX + 64];
    struct config c;

    (void)state;
    config_defaults(&c);
    snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(ENOENT));
    assert_string_equal(err, want);
    /* A directory opens but does not read. */
    assert_int_equal(config_load_file(&c, tmpdir, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", tmpdir, strerror(EISDIR));
    assert_string_equal(err, want);
}

/* ---- flags ------------------------------------------------------------- */

static void test_flags_override_file_wherever_c_is(void **state)
{
    char path[PATH_MAX], err[512];
    struct config c;
    enum config_action action;

    (void)state;
    write_conf(path, "[heartbeat]\nmin = 90\nmax = 900\n[server]\nlog_level = error\n");
    /* -c last: flags before it still win. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--heartbeat-min", "30", "-c", path,
                               NULL),
                     0);
    assert_int_equal(c.heartbeat_min, 30);
    assert_int_equal(c.heartbeat_max, 900); /* from the file */
    assert_string_equal(c.log_level, "error");
    /* -c first, --config=FILE and --config FILE spellings. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-c", path, "--heartbeat-min=31",
                               NULL),
                     0);
    assert_int_equal(c.heartbeat_min, 31);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--log-level", "debug",
                               "--config", path, NULL),
                     0);
    assert_string_equal(c.log_level, "debug");
    assert_int_equal(c.heartbeat_min, 90);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--config=" , NULL), -1);
    {
        char arg[PATH_MAX + 16];
        snprintf(arg, sizeof(arg), "--config=%s", path);
        assert_int_equal(from_args(&c, &action, err, sizeof(err), arg, NULL), 0);
        assert_int_equal(c.heartbeat_min, 90);
        assert_int_equal(action, CONFIG_RUN);
    }
    /* Flags apply in order: the last one wins. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--heartbeat-min", "40",
                               "--heartbeat.min", "41", NULL),
                     0);
    assert_int_equal(c.heartbeat_min, 41);
}

static void test_flags_section_key_form(void **state)
{
    char err[512];
    struct config c;
    enum config_action action;

    (void)state;
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--heartbeat.max", "600",
                               "--server.listen=[::]:0", "--ping.max_folders", "7",
                               "--store.backend=memory", "--server.data_dir", "/d",
                               "--server.secret_file=", NULL),
                     0);
    assert_int_equal(c.heartbeat_max, 600);
    assert_string_equal(c.listen, "[::]:0");
    assert_int_equal(c.ping_max_folders, 7);
    assert_string_equal(c.data_dir, "/d");
    assert_string_equal(c.secret_file, "");
}

static void test_flags_every_option(void **state)
{
    char err[512];
    struct config c;
    enum config_action action;

    (void)state;
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--listen", ":8081", "--data-dir",
                               "/v", "--secret-file", "/s", "--max-header-bytes", "2048",
                               "--max-body-bytes", "1", "--header-timeout", "2",
                               "--keepalive-timeout", "3", "--shutdown-retry-after", "4",
                               "--log-level", "warn", "--heartbeat-min", "5", "--heartbeat-max",
                               "6", "--ping-max-folders", "8", "--store-backend", "memory",
                               "--store-sync", "normal", "--store-path", "/p.db", NULL),
                     0);
    assert_string_equal(c.listen, ":8081");
    assert_string_equal(c.data_dir, "/v");
    assert_string_equal(c.secret_file, "/s");
    assert_int_equal(c.max_header_bytes, 2048);
    assert_int_equal(c.max_body_bytes, 1);
    assert_int_equal(c.header_timeout, 2);
    assert_int_equal(c.keepalive_timeout, 3);
    assert_int_equal(c.shutdown_retry_after, 4);
    assert_string_equal(c.log_level, "warn");
    assert_int_equal(c.heartbeat_min, 5);
    assert_int_equal(c.heartbeat_max, 6);
    assert_int_equal(c.ping_max_folders, 8);
    assert_string_equal(c.store_backend, "memory");
    assert_string_equal(c.store_sync, "normal");
    assert_string_equal(c.store_path, "/p.db");
}

static void test_flag_errors(void **state)
{
    static const struct {
        const char *args[4];
        const char *err; /* the whole message */
    } cases[] = {
        {{"--heartbeat-min", "abc"},
         "--heartbeat-min: expected a whole number from 1 to 3540, got 'abc'"},
        {{"--heartbeat.min=abc"},
         "--heartbeat.min: expected a whole number from 1 to 3540, got 'abc'"},
        {{"--heartbeat-min", "-1"},
         "--heartbeat-min: expected a whole number from 1 to 3540, got '-1'"},
        {{"--foo"}, "unknown option '--foo' (see --help)"},
        {{"--foo=1"}, "unknown option '--foo' (see --help)"},
        {{"--heartbeat.foo", "1"}, "unknown option '--heartbeat.foo' (see --help)"},
        {{"-x"}, "unknown option '-x' (see --help)"},
        {{"--"}, "unknown option '--' (see --help)"},
        {{"serve"}, "unexpected argument 'serve' (see --help)"},
        {{"--listen"}, "--listen: missing value"},
        {{"-c"}, "-c: missing value"},
        {{"--data-dir", "--listen", "1.2.3.4:5"}, "--data-dir: missing value"},
        {{"--help=yes"}, "--help: takes no value"},
        {{"--print-config=1"}, "--print-config: takes no value"},
        {{"--log-level", "loud"}, "--log-level: expected one of debug, info, warn, error, got 'loud'"},
        {{"--store-backend", "redis"},
         "--store-backend: expected one of: sqlite, memory, got 'redis'"},
        {{"--store-sync", "fast"}, "--store-sync: expected one of: full, normal, got 'fast'"},
        {{"--data-dir="}, "--data-dir: must not be empty"},
        {{"--data-dir", " /x"}, "--data-dir: must not begin or end with whitespace"},
        {{"--data-dir", "/x "}, "--data-dir: must not begin or end with whitespace"},
        {{"--data-dir", "/x ;y"},
         "--data-dir: must not contain ';' after whitespace (it starts a comment in the file)"},
        {{"--data-dir", "/x\ny"}, "--data-dir: must not contain control characters"},
        {{"--listen", "nowhere"}, "--listen: 'nowhere': expected HOST:PORT"},
        {{"--heartbeat-min", "600", "--heartbeat-max", "300"},
         "[heartbeat] min (600) is greater than max (300)"},
    };
    char err[512];
    struct config c;
    enum config_action action;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const *a = cases[i].args;
        int rc = from_args(&c, &action, err, sizeof(err), a[0], a[1], a[2], a[3], NULL);
        if (rc != -1 || strcmp(err, cases[i].err) != 0)
            fail_msg("case %zu: rc %d, want '%s', got '%s'", i, rc, cases[i].err, err);
    }
}

static void test_flag_string_length(void **state)
{
    char err[512], dir[PATH_MAX];
    struct config c;
    enum config_action action;

    (void)state;
    memset(dir, 'd', 188);
    dir[188] = '\0';
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--data-dir", dir, NULL), 0);
    assert_string_equal(c.data_dir, dir);
    strcat(dir, "d");
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--data-dir", dir, NULL), -1);
    assert_string_equal(err, "--data-dir: 189 bytes long, the limit is 188");
}

static void test_flag_config_file_errors(void **state)
{
    char err[512], path[PATH_MAX], want[PATH_MAX + 64];
    struct config c;
    enum config_action action;

    (void)state;
    snprintf(path, sizeof(path), "%s/none.conf", tmpdir);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-c", path, NULL), -1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(ENOENT));
    assert_string_equal(err, want);
    write_conf(path, "[heartbeat]\nmin = 2000\n");
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-c", path, "-c", path, NULL), -1);
    assert_non_null(strstr(err, "-c: a config file was already given"));
    /* The file's min 2000 > default max 1680 fails the cross check, unless a flag fixes it. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-c", path, NULL), -1);
    assert_string_equal(err, "[heartbeat] min (2000) is greater than max (1680, derived from "
                             "[network] idle_timeout 1800): lower heartbeat.min or raise "
                             "idle_timeout");
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-c", path, "--heartbeat-max",
                               "2000", NULL),
                     0);
    write_conf(path, "[heartbeat]\nmin = x\n");
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--config", path, NULL), -1);
    snprintf(want, sizeof(want), "%s:2: [heartbeat] min: expected", path);
    assert_true(strncmp(err, want, strlen(want)) == 0);
}

static void test_actions(void **state)
{
    char err[512], path[PATH_MAX];
    struct config c;
    enum config_action action;

    (void)state;
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--help", NULL), 0);
    assert_int_equal(action, CONFIG_HELP);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-h", NULL), 0);
    assert_int_equal(action, CONFIG_HELP);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--version", NULL), 0);
    assert_int_equal(action, CONFIG_VERSION);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--print-config",
                               "--heartbeat-min", "9", NULL),
                     0);
    assert_int_equal(action, CONFIG_PRINT);
    assert_int_equal(c.heartbeat_min, 9);
    /* --help answers even when the settings would not load. */
    snprintf(path, sizeof(path), "%s/none.conf", tmpdir);
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "-c", path, "--heartbeat-min", "x",
                               "--help", NULL),
                     0);
    assert_int_equal(action, CONFIG_HELP);
    /* --print-config does not hide errors. */
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--print-config",
                               "--heartbeat-min", "x", NULL),
                     -1);
}

/* ---- checks, usage, print ---------------------------------------------- */

static void test_check(void **state)
{
    char err[512];
    struct config c;

    (void)state;
    config_defaults(&c);
    c.heartbeat_min = 500;
    c.heartbeat_max = 400;
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "[heartbeat] min (500) is greater than max (400)");
    c.heartbeat_max = 500;
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    /* Fields set by code are held to the same bounds. */
    c.max_header_bytes = 10;
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "[server] max_header_bytes: expected a whole number from 1024 to "
                             "1048576, got '10'");
    config_defaults(&c);
    strcpy(c.listen, "bad");
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[server] listen:"));
    /* [auth]: a password backend is named by kind and path; Basic needs one. */
    config_defaults(&c);
    assert_string_equal(c.auth_basic, "no");
    strcpy(c.auth_basic, "yes");
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[auth] basic = yes needs [auth] passwords"));
    strcpy(c.auth_passwords, "ldap:/x");
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[auth] passwords: expected dovecot:"));
    strcpy(c.auth_passwords, "dovecot:/run/dovecot/auth-client");
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    strcpy(c.auth_passwords, "passwd-file:/etc/nudge/passwd");
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    strcpy(c.auth_basic, "maybe");
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[auth] basic:"));
}

static char *capture(void (*fn)(const struct config *, FILE *), const struct config *c,
                     const char *argv0)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    if (fn != NULL)
        fn(c, f);
    else
        config_usage(f, argv0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_usage_lists_every_option(void **state)
{
    static const char *const want[] = {
        "Usage: nudged ",
        "--config FILE", "--help", "--version", "--print-config",
        "--SECTION.KEY",
        "--listen ADDR", "[server] listen, default 127.0.0.1:8080",
        "--data-dir DIR", "[server] data_dir, default ./var",
        "--secret-file PATH", "[server] secret_file, default empty",
        "--max-header-bytes BYTES", "[server] max_header_bytes, default 8192, 1024..1048576",
        "--max-body-bytes BYTES", "[server] max_body_bytes, default 65536, 0..67108864",
        "--header-timeout SECONDS", "[server] header_timeout, default 10, 1..3600",
        "--keepalive-timeout SECONDS", "[server] keepalive_timeout, default 75, 1..86400",
        "--shutdown-retry-after SECONDS", "[server] shutdown_retry_after, default 5, 0..3600",
        "--log-level LEVEL", "[server] log_level, default info",
        "--heartbeat-min SECONDS", "[heartbeat] min, default 60, 1..3540",
        "--heartbeat-max SECONDS", "[heartbeat] max, default 0, 0..3540",
        "--idle-timeout SECONDS", "[network] idle_timeout, default 1800, 2..86400",
        "--heartbeat-grace SECONDS", "[heartbeat] grace, default 30, 1..3600",
        "--ping-max-folders N", "[ping] max_folders, default 100, 1..10000",
        "--store-backend NAME", "[store] backend, default sqlite",
        "--store-sync MODE", "[store] sync, default full",
        "--store-path PATH", "[store] path, default empty",
    };
    char *text = capture(NULL, NULL, "nudged");

    (void)state;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(text, want[i]) == NULL)
            fail_msg("usage lacks '%s':\n%s", want[i], text);
    free(text);
}

/* Prints c, loads the text over fresh defaults, and expects the identical struct. */
static void round_trip(const struct config *c)
{
    char path[PATH_MAX], err[512];
    char *text = capture(config_print, c, NULL);
    struct config back;

    write_conf(path, text);
    config_defaults(&back);
    if (config_load_file(&back, path, err, sizeof(err)) != 0)
        fail_msg("printed config does not load: %s\n%s", err, text);
    /* Derived values print as 0 ("derive it"): deriving again gives them back. */
    if (c->derived)
        config_derive(&back);
    assert_memory_equal(&back, c, sizeof(back));
    free(text);
}

static void test_print_round_trip(void **state)
{
    char err[512], dir[256], secret[256];
    struct config c;
    enum config_action action;

    (void)state;
    config_defaults(&c);
    round_trip(&c);

    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--listen", "[::1]:0",
                               "--data-dir", "/srv/a b;c=d #e ]x[", "--secret-file",
                               "/etc/nudge/s\xc3\xa9" "cret", "--max-header-bytes", "1048576",
                               "--max-body-bytes", "0", "--header-timeout", "1",
                               "--keepalive-timeout", "86400", "--shutdown-retry-after", "0",
                               "--log-level", "ERROR", "--heartbeat-min", "1",
                               "--heartbeat-max", "3540", "--ping-max-folders", "10000",
                               "--store-backend", "memory", "--store-sync", "normal",
                               "--store-path", "/var/lib/nudge/s t.db", NULL),
                     0);
    round_trip(&c);

    /* The longest values a flag accepts still fit on one line of the file. */
    memset(dir, 'd', 188);
    dir[188] = '\0';
    memset(secret, 's', 185);
    secret[185] = '\0';
    assert_int_equal(from_args(&c, &action, err, sizeof(err), "--data-dir", dir, "--secret-file",
                               secret, NULL),
                     0);
    round_trip(&c);
}

/* util_u64_dec against printf's %llu, at every length and both ends. */
static void test_u64_decimal(void **state)
{
    uint64_t v[] = {0, 1, 9, 10, 99, 100, 12345, 4294967295u, 4294967296u, 999999999999999999u,
                    10000000000000000000u, UINT64_MAX};
    char got[UTIL_U64_DIGITS + 1], want[32];

    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n = util_u64_dec(got, v[i]);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%llu", (unsigned long long)v[i]);
        assert_string_equal(got, want);
    }
    /* 10^k has k + 1 digits and 10^k - 1 has k, for every k a uint64_t holds. */
    for (uint64_t p = 10, k = 1; k < 20; k++, p *= 10) {
        assert_int_equal(util_u64_dec(got, p - 1), k);
        assert_int_equal(util_u64_dec(got, p), k + 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_from_empty_args_and_file),
        cmocka_unit_test(test_derivation),
        cmocka_unit_test(test_secret_path),
        cmocka_unit_test(test_store_path),
        cmocka_unit_test(test_file_sets_every_option),
        cmocka_unit_test(test_file_bounds_inclusive),
        cmocka_unit_test(test_file_syntax_variants),
        cmocka_unit_test(test_file_duplicates_last_wins),
        cmocka_unit_test(test_file_bad_numbers),
        cmocka_unit_test(test_file_bad_strings),
        cmocka_unit_test(test_udp_options),
        cmocka_unit_test(test_file_unknown_names),
        cmocka_unit_test(test_browser_options),
        cmocka_unit_test(test_file_syntax_errors),
        cmocka_unit_test(test_file_unreadable),
        cmocka_unit_test(test_flags_override_file_wherever_c_is),
        cmocka_unit_test(test_flags_section_key_form),
        cmocka_unit_test(test_flags_every_option),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_flag_string_length),
        cmocka_unit_test(test_flag_config_file_errors),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_usage_lists_every_option),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_u64_decimal),
    };

    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
