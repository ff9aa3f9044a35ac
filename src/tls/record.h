/*
 * record.h — the TLS record layer of an established connection: keys,
 * sequence numbers, and one AEAD seal or open per record (RFC 8446 5.2 for
 * TLS 1.3, RFC 5246 6.2.3.3 with RFC 5288 and RFC 7905 for TLS 1.2).
 *
 * No socket and no OpenSSL handshake object: a struct tls_rec is plain
 * bytes, so that a connection can move between processes by copying it. The
 * ciphers come from libcrypto (EVP), through one context per process that
 * is keyed again for each record: re-keying costs about as much as sealing a
 * 200-byte answer, and a context kept per connection would cost 1 KB of
 * memory per idle connection (bench/README.md, "TLS libraries").
 */
#ifndef NUDGE_TLS_RECORD_H
#define NUDGE_TLS_RECORD_H

#include <stddef.h>
#include <stdint.h>

enum tls_cipher { TLS_AES_128_GCM = 1, TLS_AES_256_GCM = 2, TLS_CHACHA20_POLY1305 = 3 };

#define TLS_REC_HEADER 5
#define TLS_REC_PLAIN_MAX 16384              /* 2^14, both versions */
#define TLS_REC_CIPHER_MAX (16384 + 2048)    /* TLS 1.2's bound; TLS 1.3's is 2^14 + 256 */
#define TLS_REC_OVERHEAD (TLS_REC_HEADER + 8 + 16 + 1) /* the most a record adds to its bytes */

/* Content types. */
#define TLS_CT_CCS 20
#define TLS_CT_ALERT 21
#define TLS_CT_HANDSHAKE 22
#define TLS_CT_APPDATA 23

struct tls_rec {
    uint8_t version;    /* 12 or 13 */
    uint8_t cipher;     /* enum tls_cipher */
    uint8_t hash_len;   /* TLS 1.3: of the traffic secrets (32 or 48) */
    uint8_t pad;
    uint8_t client_key[32], server_key[32];
    uint8_t client_iv[12], server_iv[12];   /* TLS 1.2 GCM: the first 4 bytes are the salt */
    uint8_t client_secret[48], server_secret[48]; /* TLS 1.3: for KeyUpdate */
    uint64_t read_seq, write_seq;
};

/*
 * Sets up TLS 1.3 keys from the two application traffic secrets
 * (hash_len bytes each; the hash is SHA-256 for 32, SHA-384 for 48).
 * 0, or -1 for an unknown cipher or a failed derivation.
 */
int tls_rec_init13(struct tls_rec *r, enum tls_cipher cipher, const uint8_t *client_secret,
                   const uint8_t *server_secret, size_t hash_len);

/*
 * Sets up TLS 1.2 keys from the master secret and the two randoms with the
 * PRF of hash 'prf_sha384' (0: SHA-256). Sequence numbers start at 1: each
 * side's Finished was record 0 under these keys.
 */
int tls_rec_init12(struct tls_rec *r, enum tls_cipher cipher, int prf_sha384,
                   const uint8_t *master, size_t master_len, const uint8_t client_random[32],
                   const uint8_t server_random[32]);

/*
 * Opens the complete record rec[0..len) (header included) in place. On
 * success *type is the content type and the plaintext is at
 * *plain[0..*plain_len), inside rec. -1 with *why for a record that is
 * malformed, too long or does not authenticate.
 */
int tls_rec_open(struct tls_rec *r, uint8_t *rec, size_t len, uint8_t *type, uint8_t **plain,
                 size_t *plain_len, const char **why);

/*
 * Seals p[0..n) (n <= TLS_REC_PLAIN_MAX) as one record of 'type' into out,
 * which has room for n + TLS_REC_OVERHEAD. The record's length, or 0 when
 * the cipher failed.
 */
size_t tls_rec_seal(struct tls_rec *r, uint8_t type, const uint8_t *p, size_t n, uint8_t *out);

/*
 * TLS 1.3 KeyUpdate: the next traffic secret of the client ('client' 1: what
 * we read) or ours, and the keys from it; its sequence number starts again.
 */
int tls_rec_update(struct tls_rec *r, int client);

/* The length of the record starting at p (header included), or 0 if p[0..have) has no header yet. */
size_t tls_rec_length(const uint8_t *p, size_t have);

#endif
