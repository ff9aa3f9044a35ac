/*
 * config.c — nudged's settings: one table, three readers (defaults, INI file,
 * flags) and two writers (--help, --print-config). See config.h and
 * docs/config.md.
 *
 * The table below names every option exactly once: section and key in the
 * file, flag, type, field, bounds, default (as text, parsed by the same code
 * as user input, so a default cannot be out of its own bounds) and help. Every
 * value, whatever its source, goes through set_value(); the source only adds
 * its prefix to the error ("PATH:LINE: " or "--flag: ").
 *
 * The file is parsed by inih (ini_parse_stream) with our own line reader in
 * front of it. The reader exists because stock inih has three traps for a
 * server config:
 *   - a line that starts with whitespace continues the previous key's value
 *     (Python configparser style), so an indented "log_level = debug" after
 *     "data_dir = /srv" would silently make data_dir "log_level = debug". The
 *     reader strips leading whitespace, which turns continuation lines off.
 *   - lines longer than inih's buffer (INI_MAX_LINE, 200 bytes) are split and
 *     the rest parsed as a line of its own. The reader refuses them instead.
 *   - the handler is not told the line number (the library is built without
 *     INI_HANDLER_LINENO), and inih reports only the line of a syntax error,
 *     not what was wrong. The reader counts lines and checks each line's shape
 *     itself, so every error says where and why.
 * inih's inline comments (';' after whitespace) are kept: "key = v ; note"
 * sets "v". Values therefore cannot begin or end with whitespace or hold
 * " ;"; flags refuse such values too, so --print-config can always write the
 * settings in effect back as a file that loads to the same struct.
 *
 * Duplicate keys are allowed and the last one wins, as with flags: appending
 * "key = value" to a file is a safe way to override it.
 *
 * Cost: start-up only; a few hundred bytes of stack and one line buffer.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ini.h>

#include "common/log.h"
#include "common/util.h"

enum opt_type {
    OPT_STRING,  /* free text (paths) */
    OPT_UINT,    /* whole number within [min, max] */
    OPT_ADDR,    /* listen address, checked by util_parse_addr */
    OPT_ADDRS,   /* comma-separated listen addresses, 1..CONFIG_LISTEN_MAX */
    OPT_LEVEL,   /* log level, checked by log_level_parse */
    OPT_CHOICE,  /* one of a fixed list of names */
    OPT_PREFIXES, /* comma-separated address prefixes, checked by util_prefix_list_check */
    OPT_ORIGINS, /* comma-separated web origins, checked by config_cors_origins */
};

struct option_def {
    const char *section;
    const char *key;
    const char *flag;            /* without the leading "--" */
    enum opt_type type;
    size_t offset, size;         /* the field in struct config */
    unsigned min, max;           /* OPT_UINT: bounds; strings: min is the least length */
    const char *def;             /* default, as text */
    const char *const *choices;  /* OPT_CHOICE: accepted names, NULL-terminated */
    const char *arg;             /* the value's name in --help */
    const char *help;
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

static const char *const store_backends[] = {"sqlite", "memory", NULL};
static const char *const store_syncs[] = {"full", "normal", NULL};
static const char *const yes_no[] = {"yes", "no", NULL};
static const char *const cookie_secure_modes[] = {"auto", "yes", "no", NULL};
static const char *const log_targets[] = {"stderr", "file", "syslog", "journal", NULL};

/* Indexed by enum log_level; the spelling config_print writes back. */
static const char *const level_names[] = {"debug", "info", "warn", "error"};

static const struct option_def options[] = {
    {"server", "listen", "listen", OPT_ADDRS, FIELD(listen), 1, 0, "127.0.0.1:8080", NULL, "ADDRS",
     "Addresses to listen on, comma separated (at most 8): IPv4:PORT, [IPv6]:PORT or :PORT "
     "(every IPv4 address), e.g. \"0.0.0.0:8080, [::]:8080\"; port 0: any free port. Flags "
     "may follow an address: tls (native TLS, [tls] cert and key), proxy (a PROXY protocol "
     "header first), e.g. \"0.0.0.0:443 tls, 127.0.0.1:8080\"."},
    {"server", "data_dir", "data-dir", OPT_STRING, FIELD(data_dir), 1, 0, "./var", NULL, "DIR",
     "Directory for nudged's files: the secret and the SQLite database, unless secret_file or "
     "[store] path say otherwise."},
    {"server", "secret_file", "secret-file", OPT_STRING, FIELD(secret_file), 0, 0, "", NULL,
     "PATH", "File holding the secret that signs tokens; empty means <data_dir>/secret."},
    {"server", "max_header_bytes", "max-header-bytes", OPT_UINT, FIELD(max_header_bytes), 1024,
     1048576, "8192", NULL, "BYTES", "Largest request line plus headers accepted."},
    {"server", "max_body_bytes", "max-body-bytes", OPT_UINT, FIELD(max_body_bytes), 0, 67108864,
     "65536", NULL, "BYTES", "Largest request body accepted."},
    {"server", "header_timeout", "header-timeout", OPT_UINT, FIELD(header_timeout), 1, 3600, "10",
     NULL, "SECONDS", "Time a client has to send a whole request."},
    {"server", "keepalive_timeout", "keepalive-timeout", OPT_UINT, FIELD(keepalive_timeout), 1,
     86400, "75", NULL, "SECONDS", "An idle keep-alive connection is closed after this."},
    {"server", "shutdown_retry_after", "shutdown-retry-after", OPT_UINT,
     FIELD(shutdown_retry_after), 0, 3600, "5", NULL, "SECONDS",
     "Retry-After sent with the 503 answers given while shutting down."},
    {"server", "workers", "workers", OPT_UINT, FIELD(workers), 0, 256, "0", NULL, "N",
     "Worker processes, each owning a share of the users (docs/architecture.md); 0: one per "
     "CPU; 1: a single process with no supervisor."},
    {"server", "max_connections", "max-connections", OPT_UINT, FIELD(max_connections), 1,
     10000000, "16000", NULL, "N",
     "Most client connections at once; at the limit nudged stops accepting until one ends "
     "(also capped by the descriptor limit, RLIMIT_NOFILE, less a reserve)."},
    {"server", "max_per_ip", "max-per-ip", OPT_UINT, FIELD(max_per_ip), 0, 10000000, "0", NULL,
     "N", "Most connections from one client address; 0: no limit (carrier NAT puts many "
     "devices behind one address)."},
    {"server", "log_level", "log-level", OPT_LEVEL, FIELD(log_level), 0, 0, "info", NULL, "LEVEL",
     "Least severe log lines written: debug, info, warn or error (SIGHUP applies a change)."},
    {"server", "user", "user", OPT_STRING, FIELD(user), 0, 0, "", NULL, "NAME",
     "Started as root: become this user (and its groups) once the sockets are bound; "
     "empty: stay who started nudged."},
    {"heartbeat", "min", "heartbeat-min", OPT_UINT, FIELD(heartbeat_min), 1, 3540, "60", NULL,
     "SECONDS", "Shortest heartbeat a client may ask for."},
    {"heartbeat", "max", "heartbeat-max", OPT_UINT, FIELD(heartbeat_max), 0, 3540, "0", NULL,
     "SECONDS", "Longest heartbeat a client may ask for (and the most the adaptive hint "
     "offers); 0: idle_timeout less a margin (120 s, or 10% when smaller)."},
    {"heartbeat", "increment", "heartbeat-increment", OPT_UINT, FIELD(heartbeat_increment), 1,
     3540, "60", NULL, "SECONDS", "Adaptive heartbeat: seconds added to a device's hint when "
     "its path has proven the current one."},
    {"heartbeat", "sample_size", "heartbeat-sample-size", OPT_UINT, FIELD(heartbeat_sample_size),
     1, 1000, "3", NULL, "N", "Adaptive heartbeat: expiries answered and followed in time by "
     "the device's next ping needed before its hint is raised."},
    {"heartbeat", "grace", "heartbeat-grace", OPT_UINT, FIELD(heartbeat_grace), 1, 3600, "30",
     NULL, "SECONDS", "Adaptive heartbeat: a device's next ping within this long of an expiry "
     "answer proves the answer arrived; later, that the path ate it."},
    {"heartbeat", "ceiling_retry", "heartbeat-ceiling-retry", OPT_UINT,
     FIELD(heartbeat_ceiling_retry), 1, 31536000, "86400", NULL, "SECONDS",
     "Adaptive heartbeat: a heartbeat that failed on a device's path is not offered again for "
     "this long (networks change)."},
    {"heartbeat", "alert_average", "heartbeat-alert-average", OPT_UINT,
     FIELD(heartbeat_alert_average), 0, 3540, "540", NULL, "SECONDS",
     "Log event 1311 when the learned heartbeats of a client network average this or less "
     "(a middlebox with a short idle timeout); 0: never."},
    {"heartbeat", "alert_min_devices", "heartbeat-alert-min-devices", OPT_UINT,
     FIELD(heartbeat_alert_min_devices), 1, 1000000, "10", NULL, "N",
     "Event 1311 names a client network only once this many of its devices have learned a "
     "ceiling: one or two devices say more about themselves than about the path."},
    {"sessions", "per_user_limit", "sessions-per-user-limit", OPT_UINT,
     FIELD(sessions_per_user_limit), 1, 100000, "32", NULL, "N",
     "Most sessions (held pings, later streams and UDP registrations) one user may have; "
     "dead ones are reaped before a new one is refused."},
    {"network", "idle_timeout", "idle-timeout", OPT_UINT, FIELD(idle_timeout), 2, 86400, "1800",
     NULL, "SECONDS", "The shortest idle timeout of any firewall, NAT or load balancer on the "
     "clients' paths; heartbeat max and keepalive are derived from it unless set."},
    {"network", "keepalive_idle", "keepalive-idle", OPT_UINT, FIELD(keepalive_idle), 0, 32767,
     "0", NULL, "SECONDS", "TCP keepalive: idle time before the first probe (TCP_KEEPIDLE); "
     "0: min(300, idle_timeout / 2)."},
    {"network", "keepalive_interval", "keepalive-interval", OPT_UINT, FIELD(keepalive_interval), 0,
     32767, "0", NULL, "SECONDS", "TCP keepalive: time between probes (TCP_KEEPINTVL); "
     "0: idle_timeout / 120, from 1 to 15."},
    {"network", "keepalive_count", "keepalive-count", OPT_UINT, FIELD(keepalive_count), 0, 127,
     "0", NULL, "N", "TCP keepalive: unanswered probes before the peer is declared dead "
     "(TCP_KEEPCNT); 0: 4."},
    {"network", "user_timeout", "user-timeout", OPT_UINT, FIELD(user_timeout), 0, 86400, "0",
     NULL, "SECONDS", "TCP_USER_TIMEOUT: unacknowledged data older than this closes the "
     "connection; 0: keepalive_idle + keepalive_interval * keepalive_count, so an answer "
     "written to a dead peer is given up as fast as keepalive finds it."},
    {"activesync", "max_folders", "activesync-max-folders", OPT_UINT, FIELD(as_max_folders), 1,
     10000, "200", NULL, "N", "Most folders one ActiveSync Ping may list; more are answered "
     "Status 6 with MaxFolders."},
    {"activesync", "unknown_folder_ignore", "activesync-unknown-folder-ignore", OPT_UINT,
     FIELD(as_unknown_folder_ignore), 0, 604800, "3600", NULL, "SECONDS",
     "After a device got Status 7 twice in a row for the same folder Ids, those Ids are ignored "
     "(left out of its Ping) this long (event 1800); 0: never ignored."},
    {"activesync", "guidance_interval", "activesync-guidance-interval", OPT_UINT,
     FIELD(as_guidance_interval), 0, 604800, "3600", NULL, "SECONDS",
     "At most one Status 5 per device this often telling it the heartbeat its path was "
     "proven to carry, when it asks for more; 0: never."},
    {"ping", "max_folders", "ping-max-folders", OPT_UINT, FIELD(ping_max_folders), 1, 10000, "100",
     NULL, "N", "Most folders one ping may list."},
    {"ping", "max_per_minute", "ping-max-per-minute", OPT_UINT, FIELD(ping_max_per_minute), 0,
     60000, "60", NULL, "N", "Most pings, ActiveSync Pings and stream or WebSocket connection "
     "attempts one device may make in a minute, not counting the one right after an answer "
     "that told a change; more are answered 429 with Retry-After (an ActiveSync Ping is held "
     "until the minute ends; event 1303); 0: no limit."},
    {"probe", "max_per_user", "probe-max-per-user", OPT_UINT, FIELD(probe_max_per_user), 1, 1000,
     "16", NULL, "N", "Most GET /v1/probe one user may have held at once (a probe ladder needs a "
     "handful); more are answered 429 too-many-probes (event 1304)."},
    {"probe", "max_held", "probe-max-held", OPT_UINT, FIELD(probe_max_held), 1, 10000000, "1000",
     NULL, "N", "Most probes held at once by each worker, over all users: a probe holds a "
     "connection with keepalive off for up to an hour; more are answered 429."},
    {"stream", "enabled", "stream-enabled", OPT_CHOICE, FIELD(stream_enabled), 0, 0, "yes",
     yes_no, "yes|no", "Serve GET /v1/stream; no: it answers 204, after which an EventSource "
     "stops reconnecting for good."},
    {"stream", "ping", "stream-ping", OPT_UINT, FIELD(stream_ping), 0, 3600, "0", NULL, "SECONDS",
     "The ping interval of a stream whose client gave none; 0: derived from [network] "
     "idle_timeout as the heartbeat max is, within ping_min and ping_max."},
    {"stream", "ping_min", "stream-ping-min", OPT_UINT, FIELD(stream_ping_min), 1, 30, "10", NULL,
     "SECONDS", "A client's ping=N below this is raised to it (RFC 8620: at most 30)."},
    {"stream", "ping_max", "stream-ping-max", OPT_UINT, FIELD(stream_ping_max), 300, 3600, "900",
     NULL, "SECONDS", "A client's ping=N above this is lowered to it (RFC 8620: at least 300)."},
    {"stream", "retry", "stream-retry", OPT_UINT, FIELD(stream_retry), 1, 3600, "5", NULL,
     "SECONDS", "The retry: a stream sends is between this and twice this, at random, so that "
     "clients come back spread out after a restart."},
    {"stream", "max_unsent", "stream-max-unsent", OPT_UINT, FIELD(stream_max_unsent), 4096,
     67108864, "262144", NULL, "BYTES", "A stream whose client has not taken this much of what "
     "was sent is closed (event 1900); it resumes with Last-Event-ID and loses nothing."},
    {"stream", "soft_unsent", "stream-soft-unsent", OPT_UINT, FIELD(stream_soft_unsent), 1024,
     67108864, "65536", NULL, "BYTES", "... or this much for soft_seconds in a row."},
    {"stream", "soft_seconds", "stream-soft-seconds", OPT_UINT, FIELD(stream_soft_seconds), 1,
     3600, "10", NULL, "SECONDS", "How long a stream may stay over soft_unsent."},
    {"stream", "ws_max_message", "stream-ws-max-message", OPT_UINT, FIELD(stream_ws_max_message),
     125, 1048576, "16384", NULL, "BYTES", "The longest message a WebSocket client may send "
     "(longer: close 1009). libwslay sets aside a frame's declared length when its head arrives, "
     "so this bounds what a client can make nudged hold; push messages are a few hundred bytes."},
    {"udp", "listen", "udp-listen", OPT_ADDR, FIELD(udp_listen), 0, 0, "auto", NULL,
     "ADDR", "UDP socket for new-mail datagrams and their acks: IPv4:PORT, [IPv6]:PORT or :PORT; "
     "auto: the host and port of the first [server] listen; port 0: any free port; empty: UDP "
     "notifications off."},
    {"udp", "resend_interval", "udp-resend-interval", OPT_UINT, FIELD(udp_resend_interval), 1,
     86400, "60", NULL, "SECONDS", "A change the device has not caught up with is sent again "
     "this often (Exchange's cadence: every minute)."},
    {"udp", "max_resends", "udp-max-resends", OPT_UINT, FIELD(udp_max_resends), 0, 100000, "60",
     NULL, "N", "Most resends of one change; then the device learns it from its next poll."},
    {"udp", "ttl", "udp-ttl", OPT_UINT, FIELD(udp_ttl), 1, 31536000, "3600", NULL, "SECONDS",
     "A registration ends this long after it was made or renewed (registering again, or any "
     "ping of the device, renews it)."},
    {"udp", "receive_buffer", "udp-receive-buffer", OPT_UINT, FIELD(udp_receive_buffer), 65536,
     268435456, "4194304", NULL, "BYTES", "Receive buffer of the UDP socket (SO_RCVBUF): acks "
     "that arrive while a large publish is being sent out wait here; the kernel counts about "
     "800 bytes per ack."},
    {"udp", "max_per_user", "udp-max-per-user", OPT_UINT, FIELD(udp_max_per_user), 1, 100000,
     "16", NULL, "N", "Most UDP registrations one user may have (each is also a session under "
     "[sessions] per_user_limit); more are answered 429 udp-limit (event 1608)."},
    {"udp", "max_per_address", "udp-max-per-address", OPT_UINT, FIELD(udp_max_per_address), 1,
     10000000, "256", NULL, "N", "Most UDP registrations, over all users, whose datagrams go to "
     "one address (any port), counted by each worker: however many users ask, one host is sent "
     "a bounded stream; more are answered 429 udp-limit."},
    {"udp", "allowed_hosts", "udp-allowed-hosts", OPT_PREFIXES, FIELD(udp_allowed_hosts), 0, 0,
     "", NULL, "PREFIXES", "Address prefixes (10.0.0.0/8,fd00::/8) a registration may name as "
     "its host; empty: datagrams go only to the address that registered."},
    {"ingest", "basic_user", "ingest-basic-user", OPT_STRING, FIELD(ingest_basic_user), 0, 0, "",
     NULL, "NAME", "HTTP Basic user that Dovecot's push_notification OX driver sends to PUT "
     "/v1/ingest/dovecot (the USER of its url=http://USER:PASS@...); empty, with an empty "
     "password: the endpoint is off."},
    {"ingest", "basic_password", "ingest-basic-password", OPT_STRING,
     FIELD(ingest_basic_password), 0, 0, "", NULL, "PASSWORD",
     "Its password (keep this file readable by nudged only)."},
    {"ingest", "dedup_window", "ingest-dedup-window", OPT_UINT, FIELD(ingest_dedup_window), 0,
     86400, "600", NULL, "SECONDS", "A delivery repeated within this long (same user, folder, "
     "IMAP uidvalidity and uid: Dovecot retrying after a timeout) is not counted twice; 0: "
     "every request counts."},
    {"ingest", "dedup_max", "ingest-dedup-max", OPT_UINT, FIELD(ingest_dedup_max), 1, 10000000,
     "100000", NULL, "N", "Most deliveries remembered for dedup_window; past it the oldest are "
     "forgotten first."},
    {"auth", "passwords", "auth-passwords", OPT_STRING, FIELD(auth_passwords), 0, 0, "", NULL,
     "BACKEND:PATH",
     "Where users' mail passwords are checked, for POST /v1/login and HTTP Basic: "
     "dovecot:/path/to/auth-client-socket (Dovecot's auth service) or "
     "passwd-file:/path/to/file (Dovecot's passwd-file format, crypt(3) hashes); empty: "
     "tokens only."},
    {"auth", "basic", "auth-basic", OPT_CHOICE, FIELD(auth_basic), 0, 0, "no", yes_no, "yes|no",
     "Accept HTTP Basic (the mail login and password) on every user endpoint besides tokens; "
     "needs passwords."},
    {"auth", "cache_ttl", "auth-cache-ttl", OPT_UINT, FIELD(auth_cache_ttl), 0, 86400, "300",
     NULL, "SECONDS", "A verified password is taken as right this long without asking the "
     "backend again (a changed password is refused once it passes); 0: no cache."},
    {"auth", "negative_ttl", "auth-negative-ttl", OPT_UINT, FIELD(auth_negative_ttl), 0, 86400,
     "60", NULL, "SECONDS", "A refused password is refused this long without asking again; 0: "
     "always ask."},
    {"auth", "cache_max", "auth-cache-max", OPT_UINT, FIELD(auth_cache_max), 0, 10000000,
     "100000", NULL, "N", "Most verified (and, apart, most refused) passwords cached; past it "
     "the oldest are forgotten first."},
    {"auth", "timeout", "auth-timeout", OPT_UINT, FIELD(auth_timeout), 1, 300, "10", NULL,
     "SECONDS", "Longest wait for the password backend's answer (longer than Dovecot's "
     "auth_failure_delay); then the client gets 503 and Retry-After."},
    {"auth", "token_ttl", "auth-token-ttl", OPT_UINT, FIELD(auth_token_ttl), 60, 315360000,
     "2592000", NULL, "SECONDS", "Lifetime of the user tokens POST /v1/login hands out (30 days)."},
    {"auth", "max_failures_per_ip", "auth-max-failures-per-ip", OPT_UINT,
     FIELD(auth_max_failures_ip), 0, 1000000, "20", NULL, "N",
     "Wrong passwords one client address may send in failure_window before its sign-ins are "
     "answered 429; 0: no limit."},
    {"auth", "max_failures_per_user", "auth-max-failures-per-user", OPT_UINT,
     FIELD(auth_max_failures_user), 0, 1000000, "50", NULL, "N",
     "Wrong passwords for one user, from anywhere, in failure_window before its sign-ins are "
     "answered 429; 0: no limit."},
    {"auth", "max_bad_tokens_per_ip", "auth-max-bad-tokens-per-ip", OPT_UINT,
     FIELD(auth_max_bad_tokens_ip), 0, 1000000, "100", NULL, "N",
     "Forged tokens and tickets (malformed, or a wrong signature; not expired or revoked ones) "
     "one client address may send in failure_window; beyond, its forged ones are answered 429 "
     "with Retry-After instead of 401 (event 1211), valid ones still pass; 0: no limit."},
    {"auth", "failure_window", "auth-failure-window", OPT_UINT, FIELD(auth_failure_window), 1,
     86400, "300", NULL, "SECONDS", "The window the failure limits count in."},
    {"auth", "cookie", "auth-cookie", OPT_CHOICE, FIELD(auth_cookie), 0, 0, "yes", yes_no,
     "yes|no", "POST /v1/login also sets the token as the cookie nudge_token (HttpOnly, "
     "SameSite=Strict), which GET /v1/stream accepts from a browser (docs/auth.md)."},
    {"auth", "cookie_secure", "auth-cookie-secure", OPT_CHOICE, FIELD(auth_cookie_secure), 0, 0,
     "auto", cookie_secure_modes, "auto|yes|no",
     "The login cookie's Secure attribute: auto when the request came over a tls listener, "
     "yes behind a TLS proxy, no never."},
    {"auth", "ticket_ttl", "auth-ticket-ttl", OPT_UINT, FIELD(auth_ticket_ttl), 1, 300, "60", NULL,
     "SECONDS", "Lifetime of the single-use tickets of POST /v1/ticket (at most 300)."},
    {"auth", "tickets_max", "auth-tickets-max", OPT_UINT, FIELD(auth_tickets_max), 1, 10000000,
     "100000", NULL, "N", "Used tickets each worker remembers until they expire (about 80 "
     "bytes each); past it a ticket is refused 503 until the oldest expires."},
    {"http", "cors_origins", "http-cors-origins", OPT_ORIGINS, FIELD(http_cors_origins), 0, 0, "",
     NULL, "ORIGINS", "Web origins a browser may call nudge from, comma separated, e.g. "
     "\"https://mail.example.org, https://other.example\": CORS headers for them, and the login "
     "cookie is accepted only from them (or with no Origin); empty: no CORS."},
    {"log", "target", "log-target", OPT_CHOICE, FIELD(log_target), 0, 0, "stderr", log_targets,
     "TARGET", "Where log lines go: stderr, file ([log] file, reopened on SIGHUP), syslog "
     "(daemon facility) or journal (systemd's, with the event id as NUDGE_EVENT)."},
    {"log", "file", "log-file", OPT_STRING, FIELD(log_file), 0, 0, "", NULL, "PATH",
     "With target = file: the file lines are appended to."},
    {"log", "burst", "log-burst", OPT_UINT, FIELD(log_burst), 0, 1000000, "100", NULL, "N",
     "Lines of one event written per 10 s; the rest are counted into one line (\"... and N "
     "more\"), so a flood cannot fill a disk; 0: no limit."},
    {"store", "backend", "store-backend", OPT_CHOICE, FIELD(store_backend), 0, 0, "sqlite",
     store_backends, "NAME",
     "Where folder states and device records are kept: sqlite (one database file, survives "
     "restarts and crashes) or memory (lost on restart; for tests and benchmarks)."},
    {"store", "sync", "store-sync", OPT_CHOICE, FIELD(store_sync), 0, 0, "full", store_syncs,
     "MODE", "sqlite: full waits for the disk (fsync) before a publish is answered; normal "
     "survives a crash of nudged but a power loss may take back the last answered publishes."},
    {"store", "path", "store-path", OPT_STRING, FIELD(store_path), 0, 0, "", NULL, "PATH",
     "sqlite: the database file; empty means <data_dir>/nudge.db."},
    {"tls", "cert", "tls-cert", OPT_STRING, FIELD(tls_cert), 0, 0, "", NULL, "PATH",
     "PEM certificate chain (the server's first) of the listeners with the tls flag; re-read "
     "on reload (SIGHUP) without dropping connections."},
    {"tls", "key", "tls-key", OPT_STRING, FIELD(tls_key), 0, 0, "", NULL, "PATH",
     "PEM private key of [tls] cert (ECDSA or RSA)."},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/*
 * The longest line the file reader hands to inih (inih's buffer minus the
 * NUL), after leading and trailing whitespace are stripped.
 */
#define LINE_MAX_CONTENT (INI_MAX_LINE - 1)

/* Values quoted in error messages are cut to this many bytes. */
#define SHOWN_MAX 60

static void *field_of(struct config *c, const struct option_def *o)
{
    return (char *)c + o->offset;
}

static const void *cfield_of(const struct config *c, const struct option_def *o)
{
    return (const char *)c + o->offset;
}

/*
 * The longest string value: what the field holds, and what fits on one file
 * line as "key = value", so that config_print's output always loads back.
 */
static size_t string_max(const struct option_def *o)
{
    size_t line = LINE_MAX_CONTENT - strlen(o->key) - 3;

    return o->size - 1 < line ? o->size - 1 : line;
}

/* Copies s into buf for an error message: cut to SHOWN_MAX, control bytes as '?'. */
static const char *shown(char *buf, size_t n, const char *s)
{
    size_t i = 0, len = strlen(s);

    for (; i < len && i < SHOWN_MAX && i + 4 < n; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (i < len && i + 4 <= n) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

/* Checks that a string value is within its length bounds and can be written to a file line. */
static int check_string(const struct option_def *o, const char *v, char *why, size_t whylen)
{
    size_t len = strlen(v);

    if (len < o->min) {
        snprintf(why, whylen, "must not be empty");
        return -1;
    }
    if (len > string_max(o)) {
        snprintf(why, whylen, "%zu bytes long, the limit is %zu", len, string_max(o));
        return -1;
    }
    if (len > 0 && (isspace((unsigned char)v[0]) || isspace((unsigned char)v[len - 1]))) {
        snprintf(why, whylen, "must not begin or end with whitespace");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
            snprintf(why, whylen, "must not contain control characters");
            return -1;
        }
        if (v[i] == ';' && i > 0 && isspace((unsigned char)v[i - 1])) {
            snprintf(why, whylen,
                     "must not contain ';' after whitespace (it starts a comment in the file)");
            return -1;
        }
    }
    return 0;
}

/* Parses a whole number: decimal digits only, within the option's bounds. */
static int parse_uint(const struct option_def *o, const char *v, unsigned *out, char *why,
                      size_t whylen)
{
    unsigned long long n = 0;
    size_t i = 0;
    char buf[SHOWN_MAX + 8];

    for (; v[i] >= '0' && v[i] <= '9'; i++) {
        n = n * 10 + (unsigned)(v[i] - '0');
        if (n > o->max)
            break; /* out of range already; stopping here also rules out overflow */
    }
    if (i == 0 || v[i] != '\0' || n < o->min || n > o->max) {
        snprintf(why, whylen, "expected a whole number from %u to %u, got '%s'", o->min, o->max,
                 shown(buf, sizeof(buf), v));
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

/* Writes a string into its field, clearing the rest so whole structs compare equal. */
static void store_string(struct config *c, const struct option_def *o, const char *v)
{
    char *f = field_of(c, o);

    memset(f, 0, o->size);
    memcpy(f, v, strlen(v));
}

/*
 * Entry i of a comma-separated list, without the blanks around it: its
 * start and length (0 for an empty entry). 0, or -1 past the last entry.
 */
static int list_entry(const char *list, unsigned i, const char **start, size_t *len)
{
    const char *p = list, *end;
    size_t n;

    for (unsigned k = 0; k < i; k++) {
        p = strchr(p, ',');
        if (p == NULL)
            return -1;
        p++;
    }
    end = strchr(p, ',');
    n = end ? (size_t)(end - p) : strlen(p);
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    *start = p;
    *len = n;
    return 0;
}

/*
 * One [server] listen entry is an address and then its flags, separated by
 * blanks: "0.0.0.0:443 tls proxy". Cuts 'entry' at the address (in place)
 * and adds the flags' bits to *flags (may be NULL). -1 with the reason for a
 * word that is not a flag.
 */
static int split_flags(char *entry, unsigned *flags, char *why, size_t whylen)
{
    char *p = entry + strcspn(entry, " \t");
    unsigned f = 0;

    if (*p != '\0')
        *p++ = '\0';
    while (*p != '\0') {
        size_t n;
        p += strspn(p, " \t");
        n = strcspn(p, " \t");
        if (n == 0)
            break;
        if (n == 3 && strncmp(p, "tls", 3) == 0)
            f |= CONFIG_LISTEN_TLS;
        else if (n == 5 && strncmp(p, "proxy", 5) == 0)
            f |= CONFIG_LISTEN_PROXY;
        else {
            snprintf(why, whylen, "%s: unknown listener flag '%.*s' (the flags are tls and proxy)",
                     entry, (int)n, p);
            return -1;
        }
        p += n;
    }
    if (flags)
        *flags |= f;
    return 0;
}

/*
 * Checks 'v' for option 'o' and, when 'c' is not NULL, stores it. Returns 0,
 * or -1 with the reason (without any source prefix) in 'why'. The field is
 * left untouched on error.
 */
static int set_value(struct config *c, const struct option_def *o, const char *v, char *why,
                     size_t whylen)
{
    char buf[SHOWN_MAX + 8];

    switch (o->type) {
    case OPT_UINT: {
        unsigned n;
        if (parse_uint(o, v, &n, why, whylen) != 0)
            return -1;
        if (c != NULL)
            memcpy(field_of(c, o), &n, sizeof(n));
        return 0;
    }
    case OPT_STRING:
        if (check_string(o, v, why, whylen) != 0)
            return -1;
        break;
    case OPT_ADDR: {
        struct sockaddr_storage ss;
        char e[160];
        if (check_string(o, v, why, whylen) != 0)
            return -1;
        if (v[0] == '\0' || strcmp(v, "auto") == 0) /* off (where min is 0), or derived */
            break;
        if (util_parse_addr(v, &ss, e, sizeof(e)) != 0) {
            snprintf(why, whylen, "%s", e);
            return -1;
        }
        break;
    }
    case OPT_ADDRS: {
        struct sockaddr_storage ss;
        char one[CONFIG_STR_MAX], e[160];
        const char *p;
        size_t len;
        unsigned i;
        if (check_string(o, v, why, whylen) != 0)
            return -1;
        for (i = 0; list_entry(v, i, &p, &len) == 0; i++) {
            if (len == 0) {
                snprintf(why, whylen, "address %u of the list is empty", i + 1);
                return -1;
            }
            if (i == CONFIG_LISTEN_MAX) {
                snprintf(why, whylen, "more than %d addresses", CONFIG_LISTEN_MAX);
                return -1;
            }
            memcpy(one, p, len);
            one[len] = '\0';
            if (split_flags(one, NULL, why, whylen) != 0)
                return -1;
            if (util_parse_addr(one, &ss, e, sizeof(e)) != 0) {
                snprintf(why, whylen, "%s", e);
                return -1;
            }
        }
        break;
    }
    case OPT_PREFIXES: {
        char e[160];
        if (check_string(o, v, why, whylen) != 0)
            return -1;
        if (util_prefix_list_check(v, e, sizeof(e)) != 0) {
            snprintf(why, whylen, "%s", e);
            return -1;
        }
        break;
    }
    case OPT_ORIGINS:
        if (check_string(o, v, why, whylen) != 0 ||
            config_cors_origins(v, NULL, 0, why, whylen) < 0)
            return -1;
        break;
    case OPT_LEVEL: {
        enum log_level lv;
        if (log_level_parse(v, &lv) != 0) {
            snprintf(why, whylen, "expected one of debug, info, warn, error, got '%s'",
                     shown(buf, sizeof(buf), v));
            return -1;
        }
        v = level_names[lv];
        break;
    }
    case OPT_CHOICE: {
        size_t i = 0, n = 0;
        char list[128];
        for (; o->choices[i] != NULL; i++)
            if (strcmp(v, o->choices[i]) == 0)
                break;
        if (o->choices[i] == NULL) {
            list[0] = '\0';
            for (i = 0; o->choices[i] != NULL && n < sizeof(list); i++)
                n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "",
                                      o->choices[i]);
            snprintf(why, whylen, "expected one of: %s, got '%s'", list,
                     shown(buf, sizeof(buf), v));
            return -1;
        }
        break;
    }
    }
    if (c != NULL)
        store_string(c, o, v);
    return 0;
}

static const struct option_def *find_option(const char *section, const char *key)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].section, section) == 0 && strcmp(options[i].key, key) == 0)
            return &options[i];
    return NULL;
}

/* The first option with this key in any section, for "did you mean" hints. */
static const struct option_def *find_key_anywhere(const char *key)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].key, key) == 0)
            return &options[i];
    return NULL;
}

static int section_known(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].section) == len && memcmp(options[i].section, name, len) == 0)
            return 1;
    return 0;
}

/* "server, heartbeat, ping, store": the sections in table order. */
static void section_list(char *out, size_t outlen)
{
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = 0; i < NOPTIONS && n < outlen; i++) {
        if (i > 0 && strcmp(options[i].section, options[i - 1].section) == 0)
            continue;
        n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? ", " : "", options[i].section);
    }
}

void config_defaults(struct config *c)
{
    char why[256];

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (set_value(c, &options[i], options[i].def, why, sizeof(why)) != 0) {
            /* A broken table is a programming error, not a user's. */
            fprintf(stderr, "config: default of [%s] %s is invalid: %s\n", options[i].section,
                    options[i].key, why);
            abort();
        }
    }
}

/* ---- the file ---------------------------------------------------------- */

struct file_ctx {
    struct config *cfg;
    FILE *f;
    const char *path;
    char *buf;        /* getline's buffer */
    size_t cap;
    const char *text; /* the current line, stripped, inside buf */
    int lineno;       /* the line last handed to inih */
    int handled;      /* the last line inih passed to on_key */
    int is_key_line;  /* the current line must reach on_key */
    int failed;
    char *err;
    size_t errlen;
};

static void file_fail(struct file_ctx *x, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error as "PATH:LINE: reason" (LINE 0: "PATH: reason"). */
static void file_fail(struct file_ctx *x, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (x->failed)
        return;
    x->failed = 1;
    if (line > 0)
        n = snprintf(x->err, x->errlen, "%s:%d: ", x->path, line);
    else
        n = snprintf(x->err, x->errlen, "%s: ", x->path);
    if (n < 0 || (size_t)n >= x->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/*
 * A key line that never reached on_key is one inih could not split at '='
 * (for example "foo ; = bar", where the comment hides the '='). Called before
 * reading the next line and once at the end.
 */
static void check_line_done(struct file_ctx *x)
{
    char buf[SHOWN_MAX + 8];

    if (!x->failed && x->is_key_line && x->handled != x->lineno)
        file_fail(x, x->lineno, "expected '[section]' or 'key = value', got '%s'",
                  shown(buf, sizeof(buf), x->text));
}

/* Checks a "[section]" line: a known name, then nothing but a comment. */
static void check_section_line(struct file_ctx *x, const char *s)
{
    const char *close = strchr(s, ']'), *rest;
    char known[128], buf[SHOWN_MAX + 8];

    if (close == NULL) {
        file_fail(x, x->lineno, "section header has no closing ']'");
        return;
    }
    rest = close + 1;
    while (isspace((unsigned char)*rest))
        rest++;
    if (*rest != '\0' && !((*rest == ';' || *rest == '#') && rest > close + 1)) {
        file_fail(x, x->lineno, "unexpected text after ']': '%s'", shown(buf, sizeof(buf), rest));
        return;
    }
    if (!section_known(s + 1, (size_t)(close - s - 1))) {
        section_list(known, sizeof(known));
        file_fail(x, x->lineno, "unknown section [%.*s] (known sections: %s)",
                  (int)(close - s - 1 < SHOWN_MAX ? close - s - 1 : SHOWN_MAX), s + 1, known);
    }
}

/*
 * inih's line reader (fgets-like). Reads a whole line of any length, counts
 * it, strips it, checks its shape and hands it to inih. Returning NULL ends
 * the parse: at the end of the file, or after the first error.
 */
static char *read_line(char *str, int num, void *stream)
{
    struct file_ctx *x = stream;
    ssize_t got;
    char *s, *e;
    size_t len;

    check_line_done(x);
    if (x->failed)
        return NULL;
    x->is_key_line = 0;
    errno = 0;
    got = getline(&x->buf, &x->cap, x->f);
    if (got < 0) {
        if (ferror(x->f))
            file_fail(x, 0, "cannot read: %s", strerror(errno ? errno : EIO));
        return NULL;
    }
    x->lineno++;
    if (memchr(x->buf, '\0', (size_t)got) != NULL) {
        file_fail(x, x->lineno, "line contains a NUL byte");
        return NULL;
    }
    s = x->buf;
    if (x->lineno == 1 && got >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3; /* a UTF-8 byte order mark, as some editors write */
    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    len = (size_t)(e - s);
    x->text = s;
    if (len > (size_t)num - 1) {
        file_fail(x, x->lineno, "line is %zu bytes long, the limit is %d", len, num - 1);
        return NULL;
    }
    if (*s == '[') {
        check_section_line(x, s);
    } else if (*s != '\0' && *s != ';' && *s != '#') {
        /* inih also splits at ':'; one spelling is enough, and ':' belongs to addresses. */
        const char *sep = strpbrk(s, "=:");
        if (sep != NULL && *sep == ':') {
            char buf[SHOWN_MAX + 8];
            file_fail(x, x->lineno, "expected 'key = value', got '%s'",
                      shown(buf, sizeof(buf), s));
        }
        x->is_key_line = 1;
    }
    if (x->failed)
        return NULL;
    memcpy(str, s, len + 1);
    return str;
}

/* inih's handler: one call per "key = value" line. Returns 1, or 0 on error. */
static int on_key(void *user, const char *section, const char *key, const char *value)
{
    struct file_ctx *x = user;
    const struct option_def *o;
    char why[256], kbuf[SHOWN_MAX + 8];

    x->handled = x->lineno;
    if (x->failed)
        return 0;
    if (section[0] == '\0') {
        o = find_key_anywhere(key);
        if (o != NULL)
            file_fail(x, x->lineno, "'%s' comes before any section header; it belongs under [%s]",
                      key, o->section);
        else
            file_fail(x, x->lineno, "unknown key '%s' before any section header",
                      shown(kbuf, sizeof(kbuf), key));
        return 0;
    }
    o = find_option(section, key);
    if (o == NULL) {
        const struct option_def *other = find_key_anywhere(key);
        if (other != NULL)
            file_fail(x, x->lineno, "unknown key '%s' in [%s] (it belongs under [%s])", key,
                      section, other->section);
        else
            file_fail(x, x->lineno, "unknown key '%s' in [%s]", shown(kbuf, sizeof(kbuf), key),
                      section);
        return 0;
    }
    if (set_value(x->cfg, o, value, why, sizeof(why)) != 0) {
        file_fail(x, x->lineno, "[%s] %s: %s", o->section, o->key, why);
        return 0;
    }
    return 1;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    struct file_ctx x;
    int rc;

    memset(&x, 0, sizeof(x));
    x.cfg = c;
    x.path = path;
    x.err = err;
    x.errlen = errlen;
    x.f = fopen(path, "r");
    if (x.f == NULL) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    rc = ini_parse_stream(read_line, &x, on_key, &x);
    check_line_done(&x);
    if (!x.failed && rc == -2)
        file_fail(&x, 0, "out of memory");
    else if (!x.failed && rc != 0)
        file_fail(&x, rc, "syntax error"); /* inih saw what the reader did not: a bug */
    free(x.buf);
    fclose(x.f);
    return x.failed ? -1 : 0;
}

/* ---- the command line -------------------------------------------------- */

enum arg_kind { ARG_CONFIG, ARG_HELP, ARG_VERSION, ARG_PRINT, ARG_OPTION };

struct arg {
    enum arg_kind kind;
    const struct option_def *opt; /* ARG_OPTION */
    const char *name;             /* as written, without a "=VALUE" part */
    int namelen;
    const char *value;            /* ARG_CONFIG, ARG_OPTION */
};

/* Matches "--flag" or "--section.key" (name without "--", n bytes). */
static const struct option_def *find_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];
        size_t sl = strlen(o->section);
        if (strlen(o->flag) == n && memcmp(o->flag, name, n) == 0)
            return o;
        if (n == sl + 1 + strlen(o->key) && memcmp(name, o->section, sl) == 0 && name[sl] == '.' &&
            memcmp(name + sl + 1, o->key, n - sl - 1) == 0)
            return o;
    }
    return NULL;
}

/*
 * Decodes argv[*i] (and its value, advancing *i past it). A value is the part
 * after '=' or the next argument; a next argument that begins with "--" is
 * taken for a forgotten value rather than swallowed (write --flag=--x to mean
 * it). Returns 0, or -1 with err set.
 */
static int next_arg(int argc, char **argv, int *i, struct arg *a, char *err, size_t errlen)
{
    const char *s = argv[*i], *eq;
    int takes_value;

    memset(a, 0, sizeof(*a));
    a->name = s;
    a->namelen = (int)strlen(s);
    if (strcmp(s, "-h") == 0) {
        a->kind = ARG_HELP;
        return 0;
    }
    if (strcmp(s, "-c") == 0) {
        a->kind = ARG_CONFIG;
        takes_value = 1;
        eq = NULL;
    } else if (s[0] != '-') {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", s);
        return -1;
    } else if (s[1] != '-' || s[2] == '\0') {
        snprintf(err, errlen, "unknown option '%s' (see --help)", s);
        return -1;
    } else {
        const char *name = s + 2;
        size_t n;
        eq = strchr(name, '=');
        n = eq != NULL ? (size_t)(eq - name) : strlen(name);
        a->namelen = (int)(n + 2);
        takes_value = 1;
        if (n == 4 && memcmp(name, "help", 4) == 0) {
            a->kind = ARG_HELP;
            takes_value = 0;
        } else if (n == 7 && memcmp(name, "version", 7) == 0) {
            a->kind = ARG_VERSION;
            takes_value = 0;
        } else if (n == 12 && memcmp(name, "print-config", 12) == 0) {
            a->kind = ARG_PRINT;
            takes_value = 0;
        } else if (n == 6 && memcmp(name, "config", 6) == 0) {
            a->kind = ARG_CONFIG;
        } else if ((a->opt = find_flag(name, n)) != NULL) {
            a->kind = ARG_OPTION;
        } else {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)n, name);
            return -1;
        }
    }
    if (!takes_value) {
        if (eq != NULL) {
            snprintf(err, errlen, "%.*s: takes no value", a->namelen, s);
            return -1;
        }
        return 0;
    }
    if (eq != NULL) {
        a->value = eq + 1;
    } else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        a->value = argv[++*i];
    } else {
        snprintf(err, errlen, "%.*s: missing value", a->namelen, s);
        return -1;
    }
    return 0;
}

int config_from_args(struct config *c, int argc, char **argv, enum config_action *action,
                     char *err, size_t errlen)
{
    const char *file = NULL;
    int help = 0, version = 0, print = 0;
    struct arg a;
    char why[256];

    config_defaults(c);
    *action = CONFIG_RUN;

    /* Pass 1: the shape of the whole command line, and where the file is. */
    for (int i = 1; i < argc; i++) {
        if (next_arg(argc, argv, &i, &a, err, errlen) != 0)
            return -1;
        if (a.kind == ARG_CONFIG) {
            if (file != NULL) {
                snprintf(err, errlen, "%.*s: a config file was already given ('%s')",
                         a.namelen, a.name, file);
                return -1;
            }
            file = a.value;
        }
        help |= a.kind == ARG_HELP;
        version |= a.kind == ARG_VERSION;
        print |= a.kind == ARG_PRINT;
    }
    /* --help and --version answer even when the settings would not load. */
    if (help) {
        *action = CONFIG_HELP;
        return 0;
    }
    if (version) {
        *action = CONFIG_VERSION;
        return 0;
    }
    if (file != NULL && config_load_file(c, file, err, errlen) != 0)
        return -1;

    /* Pass 2: the settings, in order, over the file. */
    for (int i = 1; i < argc; i++) {
        if (next_arg(argc, argv, &i, &a, err, errlen) != 0)
            return -1;
        if (a.kind != ARG_OPTION)
            continue;
        if (set_value(c, a.opt, a.value, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%.*s: %s", a.namelen, a.name, why);
            return -1;
        }
    }
    config_derive(c);
    if (config_check(c, err, errlen) != 0)
        return -1;
    if (print)
        *action = CONFIG_PRINT;
    return 0;
}

void config_derive(struct config *c)
{
    unsigned idle = c->idle_timeout;
    /* Exchange's advice: the firewall 2 minutes above the heartbeat; 10% on short timeouts. */
    unsigned margin = idle / 10 < 120 ? idle / 10 : 120;

    c->derived = 0;
    if (margin == 0)
        margin = 1;
    if (c->heartbeat_max == 0) {
        c->heartbeat_max = idle - margin > 3540 ? 3540 : idle - margin;
        c->derived |= CONFIG_DERIVED_HEARTBEAT_MAX;
    }
    if (c->keepalive_idle == 0) {
        /* 5 minutes (against the kernel's 2 hours), and always well inside the idle timeout. */
        c->keepalive_idle = idle / 2 < 300 ? idle / 2 : 300;
        c->derived |= CONFIG_DERIVED_KEEPALIVE_IDLE;
    }
    if (c->keepalive_interval == 0) {
        /* 4 probes 15 s apart: a dead peer is declared about a minute after the first probe. */
        unsigned iv = idle / 120;
        c->keepalive_interval = iv < 1 ? 1 : iv > 15 ? 15 : iv;
        c->derived |= CONFIG_DERIVED_KEEPALIVE_INTERVAL;
    }
    if (c->keepalive_count == 0) {
        c->keepalive_count = 4;
        c->derived |= CONFIG_DERIVED_KEEPALIVE_COUNT;
    }
    if (c->user_timeout == 0) {
        c->user_timeout = c->keepalive_idle + c->keepalive_interval * c->keepalive_count;
        c->derived |= CONFIG_DERIVED_USER_TIMEOUT;
    }
    if (strcmp(c->udp_listen, "auto") == 0) {
        /* The datagrams come from where the pings go: the first TCP address, its port. */
        config_listen_addr(c, 0, c->udp_listen, sizeof(c->udp_listen));
        c->derived |= CONFIG_DERIVED_UDP_LISTEN;
    }
}

int config_listen_addr(const struct config *c, unsigned i, char *out, size_t outlen)
{
    unsigned flags = 0;

    return config_listen_entry(c, i, out, outlen, &flags);
}

int config_listen_entry(const struct config *c, unsigned i, char *out, size_t outlen,
                        unsigned *flags)
{
    char why[160];
    const char *p;
    size_t len;

    *flags = 0;
    if (list_entry(c->listen, i, &p, &len) < 0)
        return -1;
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, p, len);
    out[len] = '\0';
    split_flags(out, flags, why, sizeof(why)); /* checked when the list was read */
    return 0;
}

unsigned config_listen_any(const struct config *c)
{
    char one[CONFIG_STR_MAX];
    unsigned f, all = 0;

    for (unsigned i = 0; config_listen_entry(c, i, one, sizeof(one), &f) == 0; i++)
        all |= f;
    return all;
}

int config_udp_loopback_only(const struct config *c, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    char e[160];

    if (c->udp_listen[0] == '\0' || util_parse_addr(c->udp_listen, &ss, e, sizeof(e)) < 0 ||
        !util_is_loopback(&ss))
        return 0;
    for (unsigned i = 0; config_listen_addr(c, i, out, outlen) == 0; i++)
        if (util_parse_addr(out, &ss, e, sizeof(e)) == 0 && !util_is_loopback(&ss))
            return 1;
    return 0;
}

unsigned config_listen_count(const struct config *c)
{
    unsigned n = 1;

    for (const char *p = c->listen; (p = strchr(p, ',')) != NULL; p++)
        n++;
    return n;
}

size_t config_diff(const struct config *a, const struct config *b, char *out, size_t outlen)
{
    size_t n = 0, count = 0;

    out[0] = '\0';
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (memcmp(cfield_of(a, o), cfield_of(b, o),
                   o->type == OPT_UINT ? sizeof(unsigned) : o->size) == 0)
            continue;
        if (o->type != OPT_UINT && strcmp(cfield_of(a, o), cfield_of(b, o)) == 0)
            continue;
        count++;
        if (n < outlen)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s.%s", n ? "," : "", o->section, o->key);
    }
    return count;
}

void config_describe_derived(const struct config *c, char *out, size_t outlen)
{
    snprintf(out, outlen,
             "idle_timeout=%u heartbeat_max=%u%s keepalive_idle=%u%s keepalive_interval=%u%s "
             "keepalive_count=%u%s user_timeout=%u%s dead_peer_within=%u",
             c->idle_timeout, c->heartbeat_max,
             (c->derived & CONFIG_DERIVED_HEARTBEAT_MAX) ? "(derived)" : "(set)",
             c->keepalive_idle, (c->derived & CONFIG_DERIVED_KEEPALIVE_IDLE) ? "(derived)" : "(set)",
             c->keepalive_interval,
             (c->derived & CONFIG_DERIVED_KEEPALIVE_INTERVAL) ? "(derived)" : "(set)",
             c->keepalive_count, (c->derived & CONFIG_DERIVED_KEEPALIVE_COUNT) ? "(derived)" : "(set)",
             c->user_timeout, (c->derived & CONFIG_DERIVED_USER_TIMEOUT) ? "(derived)" : "(set)",
             c->keepalive_idle + c->keepalive_interval * c->keepalive_count);
}

/*
 * On top of config.h: every field is also checked against its own bounds, so
 * a struct filled in by code (tests, a future reload) gets the same scrutiny
 * as one read from a file.
 */
/* Is o[0..n) an origin as browsers serialize it (config.h)? NULL, or what is wrong. */
static const char *origin_problem(const char *o, size_t n)
{
    size_t i;

    if (n > 8 && memcmp(o, "https://", 8) == 0)
        i = 8;
    else if (n > 7 && memcmp(o, "http://", 7) == 0)
        i = 7;
    else
        return "must begin with http:// or https://";
    if (o[i] == '[') {
        for (i++; i < n && o[i] != ']'; i++)
            if (!isxdigit((unsigned char)o[i]) && o[i] != ':' && o[i] != '.')
                return "bad character in the [IPv6] address";
        if (i == n)
            return "no ']' after the IPv6 address";
        i++;
    } else {
        size_t start = i;
        for (; i < n && o[i] != ':'; i++) {
            if (o[i] == '/')
                return "an origin has no path (not even a trailing '/')";
            if (!(o[i] >= 'a' && o[i] <= 'z') && !(o[i] >= '0' && o[i] <= '9') && o[i] != '-' &&
                o[i] != '.')
                return "the host must be lower case letters, digits, '-' and '.', as browsers "
                       "send it";
        }
        if (i == start)
            return "no host";
    }
    if (i < n) {
        size_t digits = 0;
        if (o[i] != ':')
            return "an origin has no path (not even a trailing '/')";
        for (i++; i < n; i++, digits++)
            if (o[i] < '0' || o[i] > '9')
                return o[i] == '/' ? "an origin has no path (not even a trailing '/')"
                                   : "the port must be digits";
        if (digits == 0 || digits > 5)
            return "the port must be 1 to 5 digits";
    }
    return NULL;
}

int config_cors_origins(const char *list, char (*out)[CONFIG_STR_MAX], unsigned max, char *why,
                        size_t whylen)
{
    const char *p = list;
    unsigned count = 0;

    while (*p == ' ')
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        const char *problem;
        size_t n;

        while (end > p && end[-1] == ' ')
            end--;
        n = (size_t)(end - p);
        if (n == 0) {
            snprintf(why, whylen, "an empty entry (two commas, or one at an end)");
            return -1;
        }
        if ((problem = origin_problem(p, n)) != NULL) {
            snprintf(why, whylen, "'%.*s': %s", (int)(n > 100 ? 100 : n), p, problem);
            return -1;
        }
        if (count == CONFIG_CORS_MAX) {
            snprintf(why, whylen, "more than %d origins", CONFIG_CORS_MAX);
            return -1;
        }
        if (out != NULL && count < max) {
            memcpy(out[count], p, n);
            out[count][n] = '\0';
        }
        count++;
        if (comma == NULL)
            break;
        p = comma + 1;
        while (*p == ' ')
            p++;
    }
    return (int)count;
}

int config_check(const struct config *c, char *err, size_t errlen)
{
    char why[256], buf[32];

    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];
        const void *f = cfield_of(c, o);
        int bad;

        if (o->type == OPT_UINT) {
            unsigned v;
            memcpy(&v, f, sizeof(v));
            snprintf(buf, sizeof(buf), "%u", v);
            bad = set_value(NULL, o, buf, why, sizeof(why));
        } else if (memchr(f, '\0', o->size) == NULL) {
            snprintf(why, sizeof(why), "not NUL-terminated");
            bad = 1;
        } else {
            bad = set_value(NULL, o, f, why, sizeof(why));
        }
        if (bad) {
            snprintf(err, errlen, "[%s] %s: %s", o->section, o->key, why);
            return -1;
        }
    }
    if ((c->ingest_basic_user[0] == '\0') != (c->ingest_basic_password[0] == '\0')) {
        snprintf(err, errlen, "[ingest] basic_user and basic_password go together: set both "
                              "(the ingest is on) or neither (off)");
        return -1;
    }
    if (strchr(c->ingest_basic_user, ':') != NULL) {
        snprintf(err, errlen, "[ingest] basic_user: must not contain ':' (HTTP Basic "
                              "separates the user from the password with it)");
        return -1;
    }
    if (c->auth_passwords[0] != '\0' && strncmp(c->auth_passwords, "dovecot:", 8) != 0 &&
        strncmp(c->auth_passwords, "passwd-file:", 12) != 0) {
        snprintf(err, errlen, "[auth] passwords: expected dovecot:/path/to/auth-client-socket "
                              "or passwd-file:/path/to/file");
        return -1;
    }
    if (strcmp(c->auth_basic, "yes") == 0 && c->auth_passwords[0] == '\0') {
        snprintf(err, errlen, "[auth] basic = yes needs [auth] passwords: where should a "
                              "password be checked?");
        return -1;
    }
    if ((config_listen_any(c) & CONFIG_LISTEN_TLS) &&
        (c->tls_cert[0] == '\0' || c->tls_key[0] == '\0')) {
        snprintf(err, errlen, "a [server] listen address has the tls flag: set [tls] cert and "
                              "[tls] key (PEM files)");
        return -1;
    }
    if (strcmp(c->log_target, "file") == 0 && c->log_file[0] == '\0') {
        snprintf(err, errlen, "[log] target = file needs [log] file = PATH");
        return -1;
    }
    if (c->log_file[0] != '\0' && strcmp(c->log_target, "file") != 0) {
        snprintf(err, errlen, "[log] file is set but target is %s: set target = file too",
                 c->log_target);
        return -1;
    }
    if (c->heartbeat_max != 0 && c->heartbeat_min > c->heartbeat_max) {
        if (c->derived & CONFIG_DERIVED_HEARTBEAT_MAX)
            snprintf(err, errlen,
                     "[heartbeat] min (%u) is greater than max (%u, derived from [network] "
                     "idle_timeout %u): lower heartbeat.min or raise idle_timeout",
                     c->heartbeat_min, c->heartbeat_max, c->idle_timeout);
        else
            snprintf(err, errlen, "[heartbeat] min (%u) is greater than max (%u)",
                     c->heartbeat_min, c->heartbeat_max);
        return -1;
    }
    return 0;
}

void config_secret_path(const struct config *c, char *out, size_t outlen)
{
    size_t n = strlen(c->data_dir);

    if (c->secret_file[0] != '\0')
        snprintf(out, outlen, "%s", c->secret_file);
    else if (n > 0 && c->data_dir[n - 1] == '/')
        snprintf(out, outlen, "%ssecret", c->data_dir);
    else
        snprintf(out, outlen, "%s/secret", c->data_dir);
}

void config_store_path(const struct config *c, char *out, size_t outlen)
{
    size_t n = strlen(c->data_dir);

    if (c->store_path[0] != '\0')
        snprintf(out, outlen, "%s", c->store_path);
    else if (n > 0 && c->data_dir[n - 1] == '/')
        snprintf(out, outlen, "%snudge.db", c->data_dir);
    else
        snprintf(out, outlen, "%s/nudge.db", c->data_dir);
}

void config_usage(FILE *out, const char *argv0)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--OPTION VALUE]...\n"
            "\n"
            "  -c, --config FILE   read settings from FILE (INI) first; flags override it\n"
            "  -h, --help          print this help and exit\n"
            "      --version       print the version and exit\n"
            "      --print-config  print the settings in effect as a config file and exit\n"
            "\n"
            "Settings: flag, then file section and key, default and bounds.\n"
            "Each is also accepted as --SECTION.KEY VALUE (e.g. --heartbeat.min 60);\n"
            "--NAME=VALUE works too. Numbers are decimal digits only; times are in seconds.\n",
            argv0);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];
        fprintf(out, "\n  --%s %s\n      [%s] %s, default ", o->flag, o->arg, o->section, o->key);
        if (o->def[0] == '\0')
            fprintf(out, "empty");
        else
            fprintf(out, "%s", o->def);
        if (o->type == OPT_UINT)
            fprintf(out, ", %u..%u", o->min, o->max);
        fprintf(out, "\n      %s\n", o->help);
    }
}

/* Writes help text as "; " comment lines of at most 78 columns (the reader's line limit is 199). */
static void print_comment(FILE *out, const char *text)
{
    const char *p = text;

    while (*p) {
        size_t n = strlen(p);
        if (n > 76) {
            n = 76;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = 76;
        }
        fprintf(out, "; %.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
    }
}

/* Was this field filled in by config_derive (so it is printed as 0, "derive it")? */
static int was_derived(const struct config *c, const void *f)
{
    return ((c->derived & CONFIG_DERIVED_HEARTBEAT_MAX) && f == &c->heartbeat_max) ||
           ((c->derived & CONFIG_DERIVED_KEEPALIVE_IDLE) && f == &c->keepalive_idle) ||
           ((c->derived & CONFIG_DERIVED_KEEPALIVE_INTERVAL) && f == &c->keepalive_interval) ||
           ((c->derived & CONFIG_DERIVED_KEEPALIVE_COUNT) && f == &c->keepalive_count) ||
           ((c->derived & CONFIG_DERIVED_USER_TIMEOUT) && f == &c->user_timeout);
}

void config_print(const struct config *c, FILE *out)
{
    char line[512];

    fprintf(out, "; nudged settings in effect (nudged --print-config)\n");
    if (c->derived) {
        config_describe_derived(c, line, sizeof(line));
        fprintf(out, "; derived from [network] idle_timeout:\n");
        print_comment(out, line);
    }
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];
        const void *f = cfield_of(c, o);

        if (i == 0 || strcmp(o->section, options[i - 1].section) != 0)
            fprintf(out, "\n[%s]\n", o->section);
        print_comment(out, o->help);
        if (f == (const void *)c->udp_listen && (c->derived & CONFIG_DERIVED_UDP_LISTEN)) {
            fprintf(out, "; in effect: %s, from [server] listen\n%s = auto\n", c->udp_listen,
                    o->key);
        } else if (o->type == OPT_UINT && was_derived(c, f)) {
            unsigned v;
            memcpy(&v, f, sizeof(v));
            fprintf(out, "; in effect: %u, derived\n%s = 0\n", v, o->key);
        } else if (o->type == OPT_UINT) {
            unsigned v;
            memcpy(&v, f, sizeof(v));
            fprintf(out, "%s = %u\n", o->key, v);
        } else {
            const char *v = f;
            /* "key =" rather than "key = " for an empty value: no trailing space. */
            fprintf(out, "%s =%s%.*s\n", o->key, v[0] != '\0' ? " " : "", (int)o->size, v);
        }
    }
}
