/*
 * config.h — nudged's settings: defaults, the INI file, command-line flags.
 *
 * One table (config.c) describes every option once: its section and key in
 * the file, its flag on the command line, its type, bounds, default and help
 * line. File, flags, --help, --print-config and docs/config.md all follow it,
 * so an option cannot exist in one place and be missing in another.
 *
 * Precedence: defaults < file (-c FILE) < flags. Errors name the file and
 * line (or the flag) and the reason, and nudged refuses to start.
 */
#ifndef NUDGE_CONFIG_H
#define NUDGE_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>

#define CONFIG_STR_MAX 256

struct config {
    /* [server] */
    char listen[CONFIG_STR_MAX];      /* "127.0.0.1:8080, [::1]:8080": 1..CONFIG_LISTEN_MAX, port 0 = any free */
    char data_dir[PATH_MAX];          /* "./var" */
    char secret_file[PATH_MAX];       /* "" = <data_dir>/secret */
    unsigned max_header_bytes;        /* 8192: request line + headers */
    unsigned max_body_bytes;          /* 65536 */
    unsigned header_timeout;          /* s, 10: whole request must arrive within it */
    unsigned keepalive_timeout;       /* s, 75: idle keep-alive connection closed after it */
    unsigned shutdown_retry_after;    /* s, 5: Retry-After sent with 503 shutting-down */
    unsigned workers;                 /* 0: one per CPU; 1: no supervisor */
    unsigned max_connections;         /* 16000 */
    unsigned max_per_ip;              /* 0: no limit */
    char log_level[16];               /* "info" */
    char user[64];                    /* "": stay who started us; else switch to it after binding */
    /* [heartbeat] */
    unsigned heartbeat_min;           /* s, 60 */
    unsigned heartbeat_max;           /* s; 0: derived (1680 at idle_timeout 1800) */
    unsigned heartbeat_increment;     /* s, 60: adaptive hint step */
    unsigned heartbeat_sample_size;   /* 3: successes before a raise */
    unsigned heartbeat_grace;         /* s, 30: next ping within it proves the answer arrived */
    unsigned heartbeat_ceiling_retry; /* s, 86400: a failed heartbeat is retried after it */
    unsigned heartbeat_alert_average; /* s, 540: event 1311 at or below it; 0: off */
    unsigned heartbeat_alert_min_devices; /* 10: fewer devices with a ceiling never alert */
    /* [sessions] */
    unsigned sessions_per_user_limit; /* 32 */
    /* [network] */
    unsigned idle_timeout;            /* s, 1800: the paths' shortest middlebox idle timeout */
    unsigned keepalive_idle;          /* s; 0: derived, min(300, idle_timeout / 2) */
    unsigned keepalive_interval;      /* s; 0: derived, idle_timeout / 120 within 1..15 */
    unsigned keepalive_count;         /* 0: derived, 4 */
    unsigned user_timeout;            /* s; 0: idle + interval * count */
    /* [ping] */
    unsigned ping_max_folders;        /* 100 */
    unsigned auth_max_bad_tokens_ip;  /* 100: forged tokens per address per failure_window */
    unsigned ping_max_per_minute;
    unsigned probe_max_per_user;      /* 16 */
    unsigned probe_max_held;          /* 1000 per worker */     /* 60: requests per device per minute with no change between */
    /* [activesync] */
    unsigned as_max_folders;          /* 200: more in one Ping answer Status 6 */
    unsigned as_unknown_folder_ignore; /* s, 3600: Ids refused twice are ignored this long */
    unsigned as_guidance_interval;    /* s, 3600: at most one heartbeat Status 5 per device */
    /* [stream] */
    char stream_enabled[8];           /* yes|no: no answers /v1/stream 204 (stop for good) */
    unsigned stream_ping;             /* s; 0: derived, min(heartbeat_max, stream_ping_max) */
    unsigned stream_ping_min;         /* s, 10: a client's ping=N is raised to it */
    unsigned stream_ping_max;         /* s, 900: and lowered to it */
    unsigned stream_retry;            /* s, 5: retry: is 1 to 2 times it, jittered */
    unsigned stream_max_unsent;       /* bytes, 262144: a stream behind by more is closed */
    unsigned stream_soft_unsent;      /* bytes, 65536: ... or behind by this for soft_seconds */
    unsigned stream_soft_seconds;     /* s, 10 */
    unsigned stream_ws_max_message;   /* bytes, 16384: a WebSocket client's longest message */
    /* [udp] */
    char udp_listen[CONFIG_STR_MAX];  /* "auto": the first [server] listen's; "": UDP off */
    unsigned udp_resend_interval;     /* s, 60 */
    unsigned udp_max_resends;         /* 60 */
    unsigned udp_ttl;                 /* s, 3600 */
    unsigned udp_receive_buffer;      /* bytes, 4194304: room for acks arriving during a fan-out */
    unsigned udp_max_per_user;        /* 16 registrations */
    unsigned udp_max_per_address;     /* 256 registrations aimed at one address, per worker */
    char udp_allowed_hosts[CONFIG_STR_MAX]; /* prefixes a registration may name as host */
    /* [ingest] */
    char ingest_basic_user[CONFIG_STR_MAX];     /* Dovecot's OX driver's Basic user; "": off */
    char ingest_basic_password[CONFIG_STR_MAX];
    unsigned ingest_dedup_window;     /* s, 600: a retried delivery is recognised this long */
    unsigned ingest_dedup_max;        /* 100000 deliveries remembered at most */
    /* [auth] */
    char auth_passwords[CONFIG_STR_MAX]; /* "dovecot:PATH", "passwd-file:PATH"; "": tokens only */
    char auth_basic[4];               /* "yes" or "no": HTTP Basic on user endpoints */
    unsigned auth_cache_ttl;          /* s, 300: a verified password is cached this long */
    unsigned auth_negative_ttl;       /* s, 60: a refused one */
    unsigned auth_cache_max;          /* 100000 entries of each kind */
    unsigned auth_timeout;            /* s, 10: longest wait for the backend */
    unsigned auth_token_ttl;          /* s, 2592000: tokens of POST /v1/login */
    unsigned auth_max_failures_ip;    /* 20 wrong passwords per address per window */
    unsigned auth_max_failures_user;  /* 50 per user per window */
    unsigned auth_failure_window;     /* s, 300 */
    char auth_cookie[4];              /* "yes" or "no": POST /v1/login also sets the login cookie */
    char auth_cookie_secure[5];       /* "auto", "yes" or "no": the cookie's Secure attribute */
    unsigned auth_ticket_ttl;         /* s, 60 (1..300): tickets of POST /v1/ticket */
    unsigned auth_tickets_max;        /* 100000: used tickets a worker remembers at once */
    char http_cors_origins[CONFIG_STR_MAX]; /* "https://a.example, https://b.example"; "": no CORS */
    /* [log] */
    char log_target[16];              /* "stderr", "file", "syslog" or "journal" */
    char log_file[PATH_MAX];          /* target = file: the path, reopened on SIGHUP */
    unsigned log_burst;               /* lines of one event per 10 s before the rest are counted */
    /* [store] */
    char store_backend[32];           /* "sqlite" or "memory" */
    char store_sync[16];              /* "full" or "normal" (sqlite) */
    char store_path[PATH_MAX];        /* "" = <data_dir>/nudge.db (sqlite) */
    /* [tls] */
    char tls_cert[PATH_MAX];          /* PEM certificate chain of "tls" listeners */
    char tls_key[PATH_MAX];           /* PEM private key of tls_cert */
    /* Not an option: which of the above config_derive filled in (CONFIG_DERIVED_*). */
    unsigned derived;
};

/* What the command line asked for besides settings. */
enum config_action {
    CONFIG_RUN = 0,
    CONFIG_HELP,          /* --help / -h */
    CONFIG_VERSION,       /* --version */
    CONFIG_PRINT,         /* --print-config */
};

/* Fills 'c' with the built-in defaults. */
void config_defaults(struct config *c);

/*
 * Applies the INI file at 'path' over 'c'. Returns 0, or -1 with 'err' set to
 * "PATH:LINE: reason" (unknown section/key, bad value, out of range, syntax,
 * unreadable file).
 */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen);

/*
 * Full command-line handling for nudged: defaults, then -c/--config FILE (the
 * file is loaded before any other flag so flags override it), then every
 * other flag in order. Flags are "--name VALUE" or "--name=VALUE".
 * Returns 0 with *action set, or -1 with 'err' set ("--flag: reason").
 * Also checks cross-option rules (config_check) before returning 0.
 */
int config_from_args(struct config *c, int argc, char **argv, enum config_action *action,
                     char *err, size_t errlen);

/* Bits of struct config 'derived'. */
#define CONFIG_DERIVED_HEARTBEAT_MAX (1u << 0)
#define CONFIG_DERIVED_KEEPALIVE_IDLE (1u << 1)
#define CONFIG_DERIVED_KEEPALIVE_INTERVAL (1u << 2)
#define CONFIG_DERIVED_KEEPALIVE_COUNT (1u << 3)
#define CONFIG_DERIVED_USER_TIMEOUT (1u << 4)
#define CONFIG_DERIVED_UDP_LISTEN (1u << 5)

/* Most [server] listen addresses. */
#define CONFIG_LISTEN_MAX 8

/*
 * The i-th address of [server] listen into out (trimmed, without its flags),
 * or -1 past the last. The list was checked when it was read.
 */
int config_listen_addr(const struct config *c, unsigned i, char *out, size_t outlen);

/*
 * Devices reach the TCP address; datagrams come from the UDP one. When the
 * UDP socket is on loopback but a TCP listener is not, no device elsewhere
 * gets a datagram: returns 1 with that listener's address in out (event 1012,
 * nudge doctor's warning); else 0.
 */
int config_udp_loopback_only(const struct config *c, char *out, size_t outlen);

/* The flags that may follow a [server] listen address. */
#define CONFIG_LISTEN_TLS (1u << 0)   /* "tls": native TLS with [tls] cert and key */
#define CONFIG_LISTEN_PROXY (1u << 1) /* "proxy": a PROXY protocol v1/v2 header comes first */

/* config_listen_addr, and the entry's CONFIG_LISTEN_* flags into *flags. */
int config_listen_entry(const struct config *c, unsigned i, char *out, size_t outlen,
                        unsigned *flags);

/* The CONFIG_LISTEN_* flags of all [server] listen addresses together. */
unsigned config_listen_any(const struct config *c);

/* How many addresses [server] listen holds. */
unsigned config_listen_count(const struct config *c);

/*
 * The names of the options whose values differ between a and b, comma
 * separated ("server.listen,server.workers"), into out; 0 when none differ.
 * What a reload reports as needing a restart.
 */
size_t config_diff(const struct config *a, const struct config *b, char *out, size_t outlen);

/*
 * Fills the settings left at 0 from [network] idle_timeout: heartbeat max
 * = idle_timeout - margin (120 s, or 10% when smaller), at most 3540;
 * keepalive idle = min(300, idle_timeout / 2); interval = idle_timeout / 120
 * within 1..15; count 4; user_timeout = idle + interval * count. Marks each
 * in c->derived. config_from_args calls it; call it yourself otherwise.
 */
void config_derive(struct config *c);

/* One line "idle_timeout=1800 heartbeat_max=1680(derived) ..." for logs and --print-config. */
void config_describe_derived(const struct config *c, char *out, size_t outlen);

/* Cross-option checks (heartbeat.min <= heartbeat.max, ...). 0 or -1 + err. */
int config_check(const struct config *c, char *err, size_t errlen);

/* The secret file path in effect: secret_file, or <data_dir>/secret. */
void config_secret_path(const struct config *c, char *out, size_t outlen);

/* The SQLite database path in effect: store_path, or <data_dir>/nudge.db. */
void config_store_path(const struct config *c, char *out, size_t outlen);

/* Prints nudged's usage with every option, its default and its help. */
void config_usage(FILE *out, const char *argv0);

/* Prints the effective settings as an INI file that config_load_file accepts. */
void config_print(const struct config *c, FILE *out);

/* The most origins [http] cors_origins may list. */
#define CONFIG_CORS_MAX 16

/*
 * Splits an [http] cors_origins list (comma separated, spaces around commas
 * allowed) into out[0..max) (NULL: only check), each NUL-terminated. An
 * origin is written as a browser sends it in Origin: "http://" or
 * "https://", a lower-case host name, IPv4 address or [IPv6] address, an
 * optional ":port", no path and no trailing '/'. Returns how many there
 * are (0 for ""), or -1 with 'why' naming the bad one.
 */
int config_cors_origins(const char *list, char (*out)[CONFIG_STR_MAX], unsigned max, char *why,
                        size_t whylen);

#endif
