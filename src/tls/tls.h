/*
 * tls.h — native TLS for the listeners with the tls flag.
 *
 * The design, in one paragraph (docs/tls.md, docs/architecture.md "TLS"):
 * OpenSSL does the handshake, over memory BIOs fed one whole record at a
 * time. The moment the handshake completes, nudge takes the traffic keys
 * (the TLS 1.3 traffic secrets from the key log callback, or the TLS 1.2
 * key block from the master secret) and the record sequence numbers, frees
 * the SSL object and from then on seals and opens records itself with one
 * AEAD call each (record.c). This is what kernel TLS does, in user space:
 * an idle TLS connection keeps about 200 bytes instead of OpenSSL's 14 KB,
 * and since its whole state is a few keys and counters, a connection can
 * still be handed to the worker that owns its user (the keys travel with the
 * socket, as they would inside the kernel).
 *
 * Only AEAD suites are offered (AES-GCM, ChaCha20-Poly1305), TLS 1.2 with
 * ECDHE only, and no renegotiation: so the record layer has three ciphers and
 * two versions to know. A TLS 1.3 KeyUpdate from the client is followed.
 */
#ifndef NUDGE_TLS_H
#define NUDGE_TLS_H

#include <stddef.h>
#include <stdint.h>

struct tls_server;
struct tls_conn;

/*
 * Loads the certificate chain and key (PEM) into a new server context.
 * 'ticket_seed' (the server secret) derives the session ticket keys, so that
 * every worker, every reload and every restart accepts the others' tickets;
 * they change every day and the previous day's are still accepted.
 * 0 with *out, or -1 with err naming the file and OpenSSL's reason.
 */
int tls_server_new(struct tls_server **out, const char *cert, const char *key,
                   const unsigned char *ticket_seed, size_t seed_len, char *err, size_t errlen);

/*
 * Loads cert and key again into a fresh context that new handshakes use;
 * handshakes in progress finish on the old one, and established connections
 * have no context at all. On error the old context stays and -1 says why.
 */
int tls_server_reload(struct tls_server *s, const char *cert, const char *key, char *err,
                      size_t errlen);

/* Subject, not-after (s since the epoch) of the loaded certificate, for the log. */
void tls_server_describe(const struct tls_server *s, char *out, size_t outlen);

void tls_server_free(struct tls_server *s);

/* A server-side connection in its handshake, or NULL without memory. */
struct tls_conn *tls_conn_new(struct tls_server *s);

void tls_conn_free(struct tls_conn *t);

/* Where tls_conn_input puts what it produces. */
struct tls_out {
    /*
     * Bytes for the peer that the connection did not ask for (the
     * handshake's flights, a KeyUpdate answer): 'owned' is malloc'd and
     * becomes the callee's. Returns 0, or -1 when the connection is gone.
     */
    int (*send)(void *arg, char *owned, size_t len);
    void *arg;
};

/* What tls_conn_input returns besides a byte count. */
#define TLS_EOF (-1)   /* the peer sent close_notify */
#define TLS_ERROR (-2) /* a protocol error, a failed handshake, a bad record: *why says which */

/*
 * Takes 'len' bytes read from the socket at 'in' (a buffer the caller lets
 * this call overwrite) and opens every complete record. The application
 * bytes they carried are left contiguous at *plain (inside 'in' or inside a
 * buffer the connection owns until the next call); their count is returned.
 * An incomplete record at the end is kept. TLS_EOF or TLS_ERROR with *why
 * (static text) ends the connection; plaintext before them is still given.
 * A seal may not happen between this call and using its plaintext: *plain
 * may lie in a buffer that tls_conn_done or the next call frees.
 */
long tls_conn_input(struct tls_conn *t, char *in, size_t len, char **plain, size_t *plain_len,
                    const struct tls_out *out, const char **why);

/* The caller is done with the last call's plaintext: an idle connection keeps no buffer. */
void tls_conn_done(struct tls_conn *t);

/* Has the handshake completed (the connection may be sealed and moved)? */
int tls_conn_ready(const struct tls_conn *t);

/*
 * Seals buf[0..len) into records: *out (malloc'd, the caller's) of *out_len
 * bytes. 0, or -1 without memory or before the handshake completed.
 */
int tls_conn_seal(struct tls_conn *t, const char *buf, size_t len, char **out, size_t *out_len);

/* A close_notify alert record, as tls_conn_seal. */
int tls_conn_close_notify(struct tls_conn *t, char **out, size_t *out_len);

/*
 * A ready connection's whole state as bytes, to hand it to another process
 * with its socket: the number of bytes written to buf (at most
 * TLS_EXPORT_MAX), or 0 when it cannot move (handshake not done).
 */
#define TLS_EXPORT_MAX (512 + 16384 + 2048 + 5)
size_t tls_conn_export(const struct tls_conn *t, void *buf, size_t len);

/* The connection tls_conn_export wrote, or NULL (malformed, no memory). */
struct tls_conn *tls_conn_import(const void *buf, size_t len);

/* An established connection with the record state *rec (record.h): for tests and fuzzing. */
struct tls_rec;
struct tls_conn *tls_conn_established(const struct tls_rec *rec);

#endif
