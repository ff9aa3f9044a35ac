/*
 * httpc.h — the client's small blocking HTTP/1.1 client.
 *
 * One struct httpc is one server (parsed from "http://host[:port][/base]"
 * or "https://...") and at most one open connection to it. An https://
 * server is spoken to over TLS (tlsc.h): verified, and resumed on
 * reconnection. A request connects when no
 * connection is open, sends method, path, headers and body, and reads one
 * answer, parsed by llhttp. The connection stays open for the next request
 * when the answer allows keep-alive, so `nudge ping --loop` holds one TCP
 * connection for hours, as a phone would.
 *
 * Blocking sockets are right for a command-line tool doing one thing at a
 * time; every wait (connect, write, read) goes through poll() with a
 * deadline, so no call can hang past its timeout. Memory: the answer's body
 * is the only allocation, bounded at HTTPC_BODY_MAX.
 */
#ifndef NUDGE_CLI_HTTPC_H
#define NUDGE_CLI_HTTPC_H

#include <stddef.h>
#include <time.h>

struct ssl_st;

/* Answers are small JSON objects; a megabyte means something is wrong. */
#define HTTPC_BODY_MAX (1024 * 1024)
#define HTTPC_HOST_MAX 256
#define HTTPC_BASE_MAX 512
#define HTTPC_ETAG_MAX 256
/*
 * A server that does not accept within 5 s is down or unreachable for a CLI
 * user's purposes; 5 s still rides out one lost SYN (the first SYN
 * retransmission comes after 1 s).
 */
#define HTTPC_CONNECT_TIMEOUT_MS 5000

struct httpc {
    char host[HTTPC_HOST_MAX];     /* as in the URL, without brackets: "::1", "example.org" */
    char port[8];                  /* decimal, "80" ("443" for https) when the URL has none */
    char authority[HTTPC_HOST_MAX + 10]; /* "host:port" / "[::1]:port", for Host and errors */
    char base[HTTPC_BASE_MAX];     /* path prefix without a trailing '/', often "" */
    int tls;                       /* an https:// URL: every connection speaks TLS */
    int fd;                        /* -1 when no connection is open */
    struct ssl_st *ssl;            /* the open connection's TLS, NULL for http:// */
    int reused;                    /* the open connection has already carried an answer */
    unsigned read_timeout_ms;      /* whole answer must arrive within it after sending */
};

struct httpc_response {
    int status;                    /* HTTP status code */
    char etag[HTTPC_ETAG_MAX];     /* "" when absent */
    long retry_after;              /* seconds, -1 when absent or not a number */
    time_t date;                   /* the Date header, Unix seconds; -1 when absent or not
                                      an IMF-fixdate ("Wed, 02 Dec 2026 08:00:00 GMT") */
    char *body;                    /* malloc'd, NUL-terminated (never NULL after success) */
    size_t body_len;
};

/*
 * Parses 'url' into 'c' and sets it up with no connection open and a read
 * timeout of 'read_timeout_ms'. Accepts http:// or https://HOST[:PORT][/BASE]
 * with HOST an IPv4 literal, a [IPv6] literal or a name. Returns 0, or
 * -EINVAL with the reason in err. An https:// server uses the TLS settings
 * of tlsc_setup, or the system store when it has not run.
 */
int httpc_init(struct httpc *c, const char *url, unsigned read_timeout_ms, char *err,
               size_t errlen);

/*
 * Sends one request and reads its answer into 'resp'. 'path' starts with '/'
 * and may carry a query; the URL's base is put in front of it. 'token' adds
 * "Authorization: Bearer" when not NULL. 'body' (may be NULL with len 0)
 * is sent as application/json with Content-Length; a POST always carries
 * Content-Length, even 0.
 *
 * Connects when needed. If a kept-alive connection turns out to be closed
 * by the server before any byte of the answer arrived (the server's idle
 * timeout raced with us), it reconnects and sends once more: callers that
 * reuse a connection must be fine with a request arriving twice in that
 * case (a ping is; publish never reuses).
 *
 * Returns 0 when an answer arrived, whatever its status (the caller owns
 * resp->body: httpc_response_free), or a negative errno with one precise
 * line in err ("cannot connect to 127.0.0.1:8080: Connection refused"); the
 * connection is then closed and resp holds nothing to free. A refused
 * certificate is -TLSC_EVERIFY (EKEYREJECTED), never retried.
 */
int httpc_request(struct httpc *c, const char *method, const char *path, const char *token,
                  const char *body, size_t body_len, struct httpc_response *resp, char *err,
                  size_t errlen);

/*
 * The same with extra request headers: 'headers' is NULL or complete header
 * lines, each ending in "\r\n" ("If-None-Match: \"abc\"\r\n"), sent as given.
 */
int httpc_request_hdr(struct httpc *c, const char *method, const char *path, const char *token,
                      const char *headers, const char *body, size_t body_len,
                      struct httpc_response *resp, char *err, size_t errlen);

/*
 * Parses an HTTP date in the IMF-fixdate form every HTTP/1.1 server sends
 * (RFC 9110 5.6.7: "Wed, 02 Dec 2026 08:00:00 GMT"). The obsolete RFC 850
 * and asctime forms are not accepted. Returns Unix seconds, or -1.
 */
time_t httpc_parse_date(const char *s);

/* Closes the connection, if open. The struct may be used again (it reconnects). */
void httpc_close(struct httpc *c);

/* Frees the body of an answer; safe on a zeroed or already freed answer. */
void httpc_response_free(struct httpc_response *resp);

/*
 * Percent-encodes 's' for a query string value (everything but A-Z a-z 0-9
 * - . _ ~). Returns the length written, or -ENOSPC if out[outlen] is too small.
 */
long httpc_query_escape(const char *s, char *out, size_t outlen);

#endif
