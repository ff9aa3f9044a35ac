/*
 * server.c — the TLS server context and a connection's life: the handshake
 * by OpenSSL, then records by record.c (tls.h tells why).
 *
 * The handshake runs over two memory BIOs and is fed one whole record at a
 * time, so that when OpenSSL says the handshake is complete it has read
 * nothing beyond it: every later byte is ours to open. What OpenSSL wrote in
 * the call that completed the handshake is counted: in TLS 1.3 those are the
 * session tickets, already under the application keys, so their count is our
 * first write sequence number. The SSL object (about 47 KB during the
 * handshake, with SSL_MODE_RELEASE_BUFFERS less) is freed right then.
 */
#include "tls/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/record.h"

/* Ticket keys change this often; a ticket of the previous period is still taken. */
#define TICKET_PERIOD_S (24 * 3600)

struct tls_server {
    SSL_CTX *ctx;
    unsigned char ticket_seed[64];
    size_t seed_len;
    char subject[128];
    long long not_after;
};

/* What only a connection in its handshake needs. */
struct tls_hs {
    SSL *ssl;
    BIO *rbio, *wbio;
    uint8_t client_secret[48], server_secret[48];
    uint8_t have_secrets; /* bit 0: client's, bit 1: server's (TLS 1.3 key log lines) */
    size_t hash_len;
};

struct tls_conn {
    struct tls_hs *hs;    /* NULL once the handshake is done */
    uint8_t *partial;     /* an incomplete record (ciphertext), or NULL */
    uint32_t partial_len;
    uint8_t *scratch;     /* this call's joined input when a record was split, freed next call */
    struct tls_rec rec;
};

static int conn_index = -1;

/* ---- the context -------------------------------------------------------- */

static void openssl_reason(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char r[160] = "unknown reason";

    if (e)
        ERR_error_string_n(e, r, sizeof(r));
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, path, r);
}

/* TLS 1.3 key log lines carry the traffic secrets record.c needs. */
static void on_keylog(const SSL *ssl, const char *line)
{
    struct tls_conn *t = SSL_get_ex_data(ssl, conn_index);
    const char *sp1, *sp2;
    uint8_t *dst;
    int bit;
    size_t n;

    if (t == NULL || t->hs == NULL)
        return;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
        dst = t->hs->client_secret, bit = 1;
    else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
        dst = t->hs->server_secret, bit = 2;
    else
        return;
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp2 == NULL)
        return;
    n = strlen(sp2 + 1) / 2;
    if (n != 32 && n != 48)
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(sp2 + 1 + 2 * i, "%2x", &v) != 1)
            return;
        dst[i] = (uint8_t)v;
    }
    t->hs->hash_len = n;
    t->hs->have_secrets |= (uint8_t)bit;
}

/* ALPN: http/1.1 or nothing; a client offering only h2 is answered without ALPN. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/*
 * The ticket key material of one period into k: HMAC key (32), AES key (32),
 * name (16 of the 32 bytes at k + 64). Two HMACs of the seed, under distinct
 * messages, so that the name tells nothing of the keys.
 */
#define TICKET_KEYS_LEN 96
static void ticket_keys(const struct tls_server *s, unsigned long long period,
                        unsigned char k[TICKET_KEYS_LEN])
{
    unsigned char msg[32];
    unsigned int len = 0;
    int n = snprintf((char *)msg, sizeof(msg), "nudge tls ticket %llu", period);

    HMAC(EVP_sha512(), s->ticket_seed, (int)s->seed_len, msg, (size_t)n, k, &len);
    msg[0] = 'N';
    HMAC(EVP_sha256(), s->ticket_seed, (int)s->seed_len, msg, (size_t)n, k + 64, &len);
}

static struct tls_server *server_of_ctx(SSL_CTX *ctx);

/*
 * Session tickets (RFC 5077, and TLS 1.3's): keys derived from the server
 * secret and the day, so every worker and every restart shares them without
 * a message, and a stolen key opens at most two days of tickets.
 */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_server *s = server_of_ctx(SSL_get_SSL_CTX(ssl));
    unsigned long long now = (unsigned long long)time(NULL) / TICKET_PERIOD_S;
    unsigned char k[TICKET_KEYS_LEN];
    OSSL_PARAM params[2];
    int which = -1;

    if (s == NULL)
        return -1;
    if (enc) {
        ticket_keys(s, now, k);
        memcpy(name, k + 64, 16);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        which = 0;
    } else {
        for (int back = 0; back < 2 && which < 0; back++) {
            ticket_keys(s, now - (unsigned long long)back, k);
            if (memcmp(name, k + 64, 16) == 0)
                which = back;
        }
        if (which < 0)
            return 0; /* not ours or too old: a full handshake */
    }
    params[0] = OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
        EVP_MAC_init(hctx, k, 32, NULL) != 1 ||
        EVP_CipherInit_ex(ectx, EVP_aes_256_cbc(), NULL, k + 32, iv, enc) != 1) {
        OPENSSL_cleanse(k, sizeof(k));
        return -1;
    }
    OPENSSL_cleanse(k, sizeof(k));
    /* 2: decrypted with the previous period's key, so issue a fresh ticket. */
    return enc ? 1 : (which == 0 ? 1 : 2);
}

static int ctx_index = -1;

static struct tls_server *server_of_ctx(SSL_CTX *ctx)
{
    return ctx ? SSL_CTX_get_ex_data(ctx, ctx_index) : NULL;
}

static SSL_CTX *ctx_new(struct tls_server *s, const char *cert, const char *key, char *err,
                        size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    X509 *x;

    if (ctx == NULL) {
        openssl_reason(err, errlen, "TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* AEAD only, ECDHE only (record.c knows these three ciphers). */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL") != 1 ||
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                      "TLS_CHACHA20_POLY1305_SHA256") != 1) {
        openssl_reason(err, errlen, "TLS ciphers", "");
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* No TLS 1.3 early data: a replayed request must not happen twice. */
    SSL_CTX_set_max_early_data(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 2);
    SSL_CTX_set_keylog_callback(ctx, on_keylog);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    SSL_CTX_set_ex_data(ctx, ctx_index, s);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        openssl_reason(err, errlen, "[tls] cert", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        openssl_reason(err, errlen, "[tls] key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(err, errlen, "[tls] key does not match [tls] cert", key);
        goto fail;
    }
    x = SSL_CTX_get0_certificate(ctx);
    if (x) {
        const ASN1_TIME *na = X509_get0_notAfter(x);
        struct tm tm;
        X509_NAME_oneline(X509_get_subject_name(x), s->subject, sizeof(s->subject));
        if (na && ASN1_TIME_to_tm(na, &tm) == 1)
            s->not_after = (long long)timegm(&tm);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_server_new(struct tls_server **out, const char *cert, const char *key,
                   const unsigned char *ticket_seed, size_t seed_len, char *err, size_t errlen)
{
    struct tls_server *s = calloc(1, sizeof(*s));

    if (conn_index < 0)
        conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (ctx_index < 0)
        ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (seed_len > sizeof(s->ticket_seed))
        seed_len = sizeof(s->ticket_seed);
    memcpy(s->ticket_seed, ticket_seed, seed_len);
    s->seed_len = seed_len;
    s->ctx = ctx_new(s, cert, key, err, errlen);
    if (s->ctx == NULL) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int tls_server_reload(struct tls_server *s, const char *cert, const char *key, char *err,
                      size_t errlen)
{
    struct tls_server fresh = *s;
    SSL_CTX *ctx = ctx_new(&fresh, cert, key, err, errlen);

    if (ctx == NULL)
        return -1;
    SSL_CTX_set_ex_data(ctx, ctx_index, s);
    /* Handshakes in progress hold a reference to the old context (SSL_new took one). */
    SSL_CTX_free(s->ctx);
    s->ctx = ctx;
    memcpy(s->subject, fresh.subject, sizeof(s->subject));
    s->not_after = fresh.not_after;
    return 0;
}

void tls_server_describe(const struct tls_server *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "subject=\"%s\" not_after=%lld", s->subject, s->not_after);
}

void tls_server_free(struct tls_server *s)
{
    if (s == NULL)
        return;
    SSL_CTX_free(s->ctx);
    OPENSSL_cleanse(s->ticket_seed, sizeof(s->ticket_seed));
    free(s);
}

/* ---- a connection --------------------------------------------------------- */

static void hs_free(struct tls_hs *hs)
{
    if (hs == NULL)
        return;
    SSL_free(hs->ssl); /* frees both BIOs */
    OPENSSL_cleanse(hs, sizeof(*hs));
    free(hs);
}

struct tls_conn *tls_conn_new(struct tls_server *s)
{
    struct tls_conn *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->hs = calloc(1, sizeof(*t->hs));
    if (t->hs == NULL)
        goto fail;
    t->hs->ssl = SSL_new(s->ctx);
    t->hs->rbio = BIO_new(BIO_s_mem());
    t->hs->wbio = BIO_new(BIO_s_mem());
    if (t->hs->ssl == NULL || t->hs->rbio == NULL || t->hs->wbio == NULL) {
        BIO_free(t->hs->rbio);
        BIO_free(t->hs->wbio);
        goto fail;
    }
    BIO_set_mem_eof_return(t->hs->rbio, -1);
    SSL_set_bio(t->hs->ssl, t->hs->rbio, t->hs->wbio);
    SSL_set_ex_data(t->hs->ssl, conn_index, t);
    SSL_set_accept_state(t->hs->ssl);
    return t;
fail:
    ERR_clear_error();
    tls_conn_free(t);
    return NULL;
}

void tls_conn_free(struct tls_conn *t)
{
    if (t == NULL)
        return;
    hs_free(t->hs);
    free(t->partial);
    free(t->scratch);
    OPENSSL_cleanse(&t->rec, sizeof(t->rec));
    free(t);
}

void tls_conn_done(struct tls_conn *t)
{
    free(t->scratch);
    t->scratch = NULL;
}

int tls_conn_ready(const struct tls_conn *t)
{
    return t->hs == NULL;
}

/* Counts the records in p[0..n) (OpenSSL writes whole records). */
static unsigned count_records(const uint8_t *p, size_t n)
{
    unsigned count = 0;

    for (size_t at = 0, len; (len = tls_rec_length(p + at, n - at)) != 0 && at + len <= n; at += len)
        count++;
    return count;
}

static enum tls_cipher cipher_of_ssl(const SSL *ssl)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);

    switch (c ? SSL_CIPHER_get_cipher_nid(c) : 0) {
    case NID_aes_128_gcm:
        return TLS_AES_128_GCM;
    case NID_aes_256_gcm:
        return TLS_AES_256_GCM;
    case NID_chacha20_poly1305:
        return TLS_CHACHA20_POLY1305;
    default:
        return 0;
    }
}

/* The handshake completed: its keys into t->rec; 'tickets' records were written under them. */
static int take_keys(struct tls_conn *t, unsigned tickets, const char **why)
{
    struct tls_hs *hs = t->hs;
    enum tls_cipher cipher = cipher_of_ssl(hs->ssl);
    int rc;

    if (cipher == 0) {
        *why = "negotiated a cipher nudge does not seal";
        return -1;
    }
    if (SSL_version(hs->ssl) == TLS1_3_VERSION) {
        if (hs->have_secrets != 3) {
            *why = "no traffic secrets from the handshake";
            return -1;
        }
        rc = tls_rec_init13(&t->rec, cipher, hs->client_secret, hs->server_secret, hs->hash_len);
        t->rec.write_seq = tickets;
    } else if (SSL_version(hs->ssl) == TLS1_2_VERSION) {
        uint8_t master[48], cr[32], sr[32];
        const SSL_CIPHER *c = SSL_get_current_cipher(hs->ssl);
        const EVP_MD *md = SSL_CIPHER_get_handshake_digest(c);
        size_t mlen = SSL_SESSION_get_master_key(SSL_get_session(hs->ssl), master, sizeof(master));
        SSL_get_client_random(hs->ssl, cr, sizeof(cr));
        SSL_get_server_random(hs->ssl, sr, sizeof(sr));
        rc = mlen == 0 ? -1
                       : tls_rec_init12(&t->rec, cipher, md && EVP_MD_get_size(md) == 48, master,
                                        mlen, cr, sr);
        OPENSSL_cleanse(master, sizeof(master));
    } else {
        rc = -1;
    }
    if (rc < 0) {
        *why = "could not derive the traffic keys";
        return -1;
    }
    hs_free(t->hs);
    t->hs = NULL;
    return 0;
}

/* Sends what OpenSSL wrote; its record count into *records. -1 when the connection is gone. */
static int flush_hs(struct tls_conn *t, const struct tls_out *out, unsigned *records)
{
    size_t n = BIO_ctrl_pending(t->hs->wbio);
    char *buf;

    if (records)
        *records = 0;
    if (n == 0)
        return 0;
    buf = malloc(n);
    if (buf == NULL || BIO_read(t->hs->wbio, buf, (int)n) != (int)n) {
        free(buf);
        return -1;
    }
    if (records)
        *records = count_records((const uint8_t *)buf, n);
    return out->send(out->arg, buf, n);
}

/* One whole handshake-phase record to OpenSSL. 0, 1 when the handshake completed, -1 error. */
static int hs_record(struct tls_conn *t, const uint8_t *rec, size_t len,
                     const struct tls_out *out, const char **why)
{
    unsigned written;
    int rc;

    if (BIO_write(t->hs->rbio, rec, (int)len) != (int)len) {
        *why = "out of memory";
        return -1;
    }
    rc = SSL_do_handshake(t->hs->ssl);
    if (rc != 1) {
        int e = SSL_get_error(t->hs->ssl, rc);
        if (e == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            return flush_hs(t, out, NULL) < 0 ? -1 : 0;
        }
        /* An alert OpenSSL wrote (protocol version, handshake failure) goes out first. */
        flush_hs(t, out, NULL);
        *why = ERR_peek_error() ? ERR_reason_error_string(ERR_peek_error()) : NULL;
        if (*why == NULL)
            *why = "handshake failed";
        ERR_clear_error();
        return -1;
    }
    if (flush_hs(t, out, &written) < 0) {
        *why = "could not send the handshake";
        return -1;
    }
    if (BIO_ctrl_pending(t->hs->rbio) != 0) {
        *why = "bytes within the handshake's last record";
        return -1;
    }
    return take_keys(t, SSL_version(t->hs->ssl) == TLS1_3_VERSION ? written : 0, why) < 0 ? -1
                                                                                          : 1;
}

/* A TLS 1.3 handshake message after the handshake: only KeyUpdate is expected. */
static int post_handshake(struct tls_conn *t, const uint8_t *p, size_t n,
                          const struct tls_out *out, const char **why)
{
    if (t->rec.version != 13) {
        *why = "renegotiation is not supported";
        return -1;
    }
    /* KeyUpdate: type 24, length 1, request_update 0 or 1; one per record is all we take. */
    if (n != 5 || p[0] != 24 || p[1] != 0 || p[2] != 0 || p[3] != 1 || p[4] > 1) {
        *why = "unexpected handshake message after the handshake";
        return -1;
    }
    if (tls_rec_update(&t->rec, 1) < 0) {
        *why = "could not update the client's key";
        return -1;
    }
    if (p[4] == 1) {
        static const uint8_t ku[5] = {24, 0, 0, 1, 0};
        char *rec = malloc(sizeof(ku) + TLS_REC_OVERHEAD);
        size_t len = rec ? tls_rec_seal(&t->rec, TLS_CT_HANDSHAKE, ku, sizeof(ku), (uint8_t *)rec)
                         : 0;
        if (len == 0 || tls_rec_update(&t->rec, 0) < 0) {
            free(rec);
            *why = "could not answer a key update";
            return -1;
        }
        if (out->send(out->arg, rec, len) < 0)
            return -1;
    }
    return 0;
}

/*
 * One complete record at rec[0..len) of an established connection; its
 * application bytes are appended at *w (inside the same buffer, before rec).
 * 0, TLS_EOF or TLS_ERROR.
 */
static long app_record(struct tls_conn *t, uint8_t *rec, size_t len, uint8_t **w,
                       const struct tls_out *out, const char **why)
{
    uint8_t type, *p;
    size_t n;

    if (tls_rec_open(&t->rec, rec, len, &type, &p, &n, why) < 0)
        return TLS_ERROR;
    switch (type) {
    case TLS_CT_APPDATA:
        memmove(*w, p, n);
        *w += n;
        return 0;
    case TLS_CT_ALERT:
        if (n == 2 && p[1] == 0) /* close_notify */
            return TLS_EOF;
        *why = n == 2 && p[0] == 1 ? "warning alert" : "the client sent an alert";
        return TLS_ERROR;
    case TLS_CT_HANDSHAKE:
        return post_handshake(t, p, n, out, why) < 0 ? TLS_ERROR : 0;
    default:
        *why = "unexpected record type after the handshake";
        return TLS_ERROR;
    }
}

long tls_conn_input(struct tls_conn *t, char *in, size_t len, char **plain, size_t *plain_len,
                    const struct tls_out *out, const char **why)
{
    uint8_t *buf = (uint8_t *)in, *w, *start;
    size_t at = 0;
    long rc = 0;

    free(t->scratch);
    t->scratch = NULL;
    /* A record split over reads: join it with what came, in a buffer of this call's own. */
    if (t->partial) {
        uint8_t *joined = malloc(t->partial_len + len);
        if (joined == NULL) {
            *why = "out of memory";
            return TLS_ERROR;
        }
        memcpy(joined, t->partial, t->partial_len);
        memcpy(joined + t->partial_len, in, len);
        len += t->partial_len;
        free(t->partial);
        t->partial = NULL;
        t->partial_len = 0;
        t->scratch = buf = joined;
    }
    start = w = buf;
    while (at < len) {
        size_t rlen = tls_rec_length(buf + at, len - at);
        if (rlen == 0 || at + rlen > len) {
            if (rlen > TLS_REC_HEADER + TLS_REC_CIPHER_MAX) {
                *why = "record too long";
                rc = TLS_ERROR;
                break;
            }
            t->partial = malloc(len - at);
            if (t->partial == NULL) {
                *why = "out of memory";
                rc = TLS_ERROR;
                break;
            }
            memcpy(t->partial, buf + at, len - at);
            t->partial_len = (uint32_t)(len - at);
            break;
        }
        if (t->hs) {
            int done;
            if (rlen > TLS_REC_HEADER + TLS_REC_CIPHER_MAX) {
                *why = "record too long";
                rc = TLS_ERROR;
                break;
            }
            done = hs_record(t, buf + at, rlen, out, why);
            if (done < 0) {
                rc = TLS_ERROR;
                break;
            }
        } else {
            rc = app_record(t, buf + at, rlen, &w, out, why);
            if (rc < 0)
                break;
        }
        at += rlen;
    }
    *plain = (char *)start;
    *plain_len = (size_t)(w - start);
    return rc < 0 ? rc : (long)*plain_len;
}

int tls_conn_seal(struct tls_conn *t, const char *buf, size_t len, char **out, size_t *out_len)
{
    size_t records = len / TLS_REC_PLAIN_MAX + 1, n = 0;
    uint8_t *o;

    if (t->hs)
        return -1;
    o = malloc(len + records * TLS_REC_OVERHEAD);
    if (o == NULL)
        return -1;
    for (size_t at = 0; at < len;) {
        size_t chunk = len - at > TLS_REC_PLAIN_MAX ? TLS_REC_PLAIN_MAX : len - at;
        size_t r = tls_rec_seal(&t->rec, TLS_CT_APPDATA, (const uint8_t *)buf + at, chunk, o + n);
        if (r == 0) {
            free(o);
            return -1;
        }
        n += r;
        at += chunk;
    }
    *out = (char *)o;
    *out_len = n;
    return 0;
}

int tls_conn_close_notify(struct tls_conn *t, char **out, size_t *out_len)
{
    static const uint8_t alert[2] = {1, 0}; /* warning, close_notify */
    uint8_t *o;
    size_t n;

    if (t->hs)
        return -1;
    o = malloc(sizeof(alert) + TLS_REC_OVERHEAD);
    n = o ? tls_rec_seal(&t->rec, TLS_CT_ALERT, alert, sizeof(alert), o) : 0;
    if (n == 0) {
        free(o);
        return -1;
    }
    *out = (char *)o;
    *out_len = n;
    return 0;
}

/* ---- moving between processes -------------------------------------------------- */

#define EXPORT_MAGIC 0x4e544c53u /* "NTLS" */

struct tls_export_head {
    uint32_t magic;
    uint32_t partial_len;
    struct tls_rec rec;
};

size_t tls_conn_export(const struct tls_conn *t, void *buf, size_t len)
{
    struct tls_export_head h = {.magic = EXPORT_MAGIC, .partial_len = t->partial_len};

    if (t->hs || sizeof(h) + t->partial_len > len)
        return 0;
    h.rec = t->rec;
    memcpy(buf, &h, sizeof(h));
    if (t->partial_len)
        memcpy((char *)buf + sizeof(h), t->partial, t->partial_len);
    OPENSSL_cleanse(&h, sizeof(h));
    return sizeof(h) + t->partial_len;
}

struct tls_conn *tls_conn_import(const void *buf, size_t len)
{
    struct tls_export_head h;
    struct tls_conn *t;

    if (len < sizeof(h))
        return NULL;
    memcpy(&h, buf, sizeof(h));
    if (h.magic != EXPORT_MAGIC || sizeof(h) + h.partial_len != len ||
        h.partial_len > TLS_REC_HEADER + TLS_REC_CIPHER_MAX ||
        (h.rec.version != 12 && h.rec.version != 13))
        return NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->rec = h.rec;
    t->partial_len = h.partial_len;
    OPENSSL_cleanse(&h, sizeof(h));
    if (t->partial_len) {
        t->partial = malloc(t->partial_len);
        if (t->partial == NULL) {
            tls_conn_free(t);
            return NULL;
        }
        memcpy(t->partial, (const char *)buf + sizeof(h), t->partial_len);
    }
    return t;
}

struct tls_conn *tls_conn_established(const struct tls_rec *rec)
{
    struct tls_conn *t = calloc(1, sizeof(*t));

    if (t)
        t->rec = *rec;
    return t;
}
