/* record.c — sealing and opening TLS records of an established connection; see record.h. */
#include "tls/record.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#define TAG_LEN 16

/* The process's cipher context, keyed again for every record (record.h says why). */
static EVP_CIPHER_CTX *the_ctx;
static EVP_CIPHER *ciphers[4];
/*
 * The cipher the_ctx is set up for (0: none) and the direction: re-keying
 * with the cipher unchanged skips OpenSSL's cipher set-up, 85-210 ns of the
 * 480 ns a 200-byte seal costs (bench/README.md, "TLS libraries").
 */
static uint8_t ctx_cipher;
static int ctx_enc = -1;

static const EVP_CIPHER *cipher_of(uint8_t c)
{
    static const char *const names[4] = {NULL, "AES-128-GCM", "AES-256-GCM",
                                         "ChaCha20-Poly1305"};

    if (c < 1 || c > 3)
        return NULL;
    if (ciphers[c] == NULL)
        ciphers[c] = EVP_CIPHER_fetch(NULL, names[c], NULL);
    if (the_ctx == NULL)
        the_ctx = EVP_CIPHER_CTX_new();
    return the_ctx ? ciphers[c] : NULL;
}

static size_t key_len(uint8_t c)
{
    return c == TLS_AES_128_GCM ? 16 : 32;
}

/* HKDF-Expand-Label (RFC 8446 7.1) with an empty context. */
static int expand_label(const uint8_t *secret, size_t hash_len, const char *label, uint8_t *out,
                        size_t out_len)
{
    uint8_t info[2 + 1 + 6 + 32 + 1];
    size_t llen = strlen(label), n = 0;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, rc = -1;
    OSSL_PARAM params[5];

    if (kctx == NULL || llen > 32)
        goto done;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + llen);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, llen);
    n += llen;
    info[n++] = 0; /* context: empty */
    params[0] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                 hash_len == 48 ? "SHA384" : "SHA256", 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, hash_len);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
    params[4] = OSSL_PARAM_construct_end();
    rc = EVP_KDF_derive(kctx, out, out_len, params) == 1 ? 0 : -1;
done:
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return rc;
}

static int keys13(struct tls_rec *r, int client)
{
    const uint8_t *secret = client ? r->client_secret : r->server_secret;

    if (expand_label(secret, r->hash_len, "key", client ? r->client_key : r->server_key,
                     key_len(r->cipher)) < 0 ||
        expand_label(secret, r->hash_len, "iv", client ? r->client_iv : r->server_iv, 12) < 0)
        return -1;
    return 0;
}

int tls_rec_init13(struct tls_rec *r, enum tls_cipher cipher, const uint8_t *client_secret,
                   const uint8_t *server_secret, size_t hash_len)
{
    memset(r, 0, sizeof(*r));
    if (cipher_of((uint8_t)cipher) == NULL || (hash_len != 32 && hash_len != 48))
        return -1;
    r->version = 13;
    r->cipher = (uint8_t)cipher;
    r->hash_len = (uint8_t)hash_len;
    memcpy(r->client_secret, client_secret, hash_len);
    memcpy(r->server_secret, server_secret, hash_len);
    return keys13(r, 1) < 0 || keys13(r, 0) < 0 ? -1 : 0;
}

int tls_rec_update(struct tls_rec *r, int client)
{
    uint8_t *secret = client ? r->client_secret : r->server_secret;
    uint8_t next[48];

    if (r->version != 13 || expand_label(secret, r->hash_len, "traffic upd", next, r->hash_len) < 0)
        return -1;
    memcpy(secret, next, r->hash_len);
    if (client)
        r->read_seq = 0;
    else
        r->write_seq = 0;
    return keys13(r, client);
}

int tls_rec_init12(struct tls_rec *r, enum tls_cipher cipher, int prf_sha384,
                   const uint8_t *master, size_t master_len, const uint8_t client_random[32],
                   const uint8_t server_random[32])
{
    static const char label[] = "key expansion";
    uint8_t seed[sizeof(label) - 1 + 64], block[2 * 32 + 2 * 12];
    size_t klen = key_len((uint8_t)cipher);
    size_t ivlen = cipher == TLS_CHACHA20_POLY1305 ? 12 : 4; /* GCM: a 4-byte salt */
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[4];
    int rc = -1;

    memset(r, 0, sizeof(*r));
    if (kctx == NULL || cipher_of((uint8_t)cipher) == NULL)
        goto done;
    /* key_block = PRF(master, "key expansion", server_random + client_random). */
    memcpy(seed, label, sizeof(label) - 1);
    memcpy(seed + sizeof(label) - 1, server_random, 32);
    memcpy(seed + sizeof(label) - 1 + 32, client_random, 32);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                 prf_sha384 ? "SHA384" : "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)master,
                                                  master_len);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed));
    params[3] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, block, 2 * klen + 2 * ivlen, params) != 1)
        goto done;
    /* AEAD suites have no MAC keys: client key, server key, client IV, server IV. */
    memcpy(r->client_key, block, klen);
    memcpy(r->server_key, block + klen, klen);
    memcpy(r->client_iv, block + 2 * klen, ivlen);
    memcpy(r->server_iv, block + 2 * klen + ivlen, ivlen);
    r->version = 12;
    r->cipher = (uint8_t)cipher;
    r->read_seq = r->write_seq = 1;
    rc = 0;
done:
    OPENSSL_cleanse(block, sizeof(block));
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return rc;
}

size_t tls_rec_length(const uint8_t *p, size_t have)
{
    if (have < TLS_REC_HEADER)
        return 0;
    return TLS_REC_HEADER + ((size_t)p[3] << 8 | p[4]);
}

/* The record's nonce: the IV with the sequence number XORed into its last 8 bytes. */
static void nonce_xor(uint8_t nonce[12], const uint8_t iv[12], uint64_t seq)
{
    memcpy(nonce, iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(seq >> (8 * i));
}

static void put_seq(uint8_t *p, uint64_t seq)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* One AEAD operation; in and out may be the same. 0, or -1 (for a decryption: it did not authenticate). */
static int aead(const struct tls_rec *r, int enc, const uint8_t *key, const uint8_t nonce[12],
                const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n, uint8_t *out,
                uint8_t tag[TAG_LEN])
{
    const EVP_CIPHER *c = cipher_of(r->cipher);
    EVP_CIPHER_CTX *x = the_ctx;
    int len = 0;

    if (c == NULL)
        return -1;
    if (ctx_cipher != r->cipher || ctx_enc != enc) {
        ctx_cipher = 0; /* a failure below leaves it unknown */
        if (EVP_CipherInit_ex(x, c, NULL, NULL, NULL, enc) != 1)
            return -1;
        ctx_cipher = r->cipher;
        ctx_enc = enc;
    }
    if (EVP_CipherInit_ex(x, NULL, NULL, key, nonce, enc) != 1 ||
        EVP_CipherUpdate(x, NULL, &len, aad, (int)aad_len) != 1 ||
        (n > 0 && EVP_CipherUpdate(x, out, &len, in, (int)n) != 1))
        return -1;
    if (!enc && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1)
        return -1;
    if (EVP_CipherFinal_ex(x, out + len, &len) != 1)
        return -1;
    if (enc && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) != 1)
        return -1;
    return 0;
}

size_t tls_rec_seal(struct tls_rec *r, uint8_t type, const uint8_t *p, size_t n, uint8_t *out)
{
    uint8_t nonce[12], aad[13], *body;
    size_t len;

    if (n > TLS_REC_PLAIN_MAX)
        return 0;
    if (r->version == 13) {
        /* TLSInnerPlaintext: content, its type, no padding; the outer type is always 23. */
        len = n + 1 + TAG_LEN;
        out[0] = TLS_CT_APPDATA;
        out[1] = 3, out[2] = 3;
        out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
        body = out + TLS_REC_HEADER;
        memmove(body, p, n);
        body[n] = type;
        nonce_xor(nonce, r->server_iv, r->write_seq);
        if (aead(r, 1, r->server_key, nonce, out, TLS_REC_HEADER, body, n + 1, body,
                 body + n + 1) < 0)
            return 0;
        r->write_seq++;
        return TLS_REC_HEADER + len;
    }
    /* TLS 1.2: additional data is seq, type, version and the plaintext's length. */
    put_seq(aad, r->write_seq);
    aad[8] = type, aad[9] = 3, aad[10] = 3;
    aad[11] = (uint8_t)(n >> 8), aad[12] = (uint8_t)n;
    body = out + TLS_REC_HEADER;
    if (r->cipher == TLS_CHACHA20_POLY1305) {
        nonce_xor(nonce, r->server_iv, r->write_seq);
        len = n + TAG_LEN;
    } else {
        /* GCM: salt + an explicit 8-byte nonce sent in the record; the sequence number is unique. */
        memcpy(nonce, r->server_iv, 4);
        put_seq(nonce + 4, r->write_seq);
        memmove(body + 8, p, n);
        memcpy(body, nonce + 4, 8);
        body += 8;
        len = 8 + n + TAG_LEN;
    }
    if (r->cipher == TLS_CHACHA20_POLY1305)
        memmove(body, p, n);
    out[0] = type;
    out[1] = 3, out[2] = 3;
    out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
    if (aead(r, 1, r->server_key, nonce, aad, sizeof(aad), body, n, body, body + n) < 0)
        return 0;
    r->write_seq++;
    return TLS_REC_HEADER + len;
}

int tls_rec_open(struct tls_rec *r, uint8_t *rec, size_t len, uint8_t *type, uint8_t **plain,
                 size_t *plain_len, const char **why)
{
    uint8_t nonce[12], aad[13], *body = rec + TLS_REC_HEADER;
    size_t n = len - TLS_REC_HEADER;

    if (len < TLS_REC_HEADER || tls_rec_length(rec, len) != len) {
        *why = "truncated record";
        return -1;
    }
    if (rec[1] != 3 || rec[2] != 3) {
        *why = "record version is not TLS 1.2";
        return -1;
    }
    if (r->version == 13) {
        if (rec[0] != TLS_CT_APPDATA) {
            *why = "unencrypted record after the handshake";
            return -1;
        }
        if (n > 16384 + 256 || n < TAG_LEN + 1) {
            *why = n < TAG_LEN + 1 ? "record too short" : "record too long";
            return -1;
        }
        nonce_xor(nonce, r->client_iv, r->read_seq);
        n -= TAG_LEN;
        if (aead(r, 0, r->client_key, nonce, rec, TLS_REC_HEADER, body, n, body, body + n) < 0) {
            *why = "record does not authenticate";
            return -1;
        }
        r->read_seq++;
        /* The type is the last byte that is not padding. */
        while (n > 0 && body[n - 1] == 0)
            n--;
        if (n == 0) {
            *why = "record without a content type";
            return -1;
        }
        *type = body[--n];
        if (n > TLS_REC_PLAIN_MAX) {
            *why = "record plaintext too long";
            return -1;
        }
        *plain = body;
        *plain_len = n;
        return 0;
    }
    if (n > TLS_REC_CIPHER_MAX) {
        *why = "record too long";
        return -1;
    }
    if (r->cipher == TLS_CHACHA20_POLY1305) {
        if (n < TAG_LEN) {
            *why = "record too short";
            return -1;
        }
        nonce_xor(nonce, r->client_iv, r->read_seq);
        n -= TAG_LEN;
    } else {
        if (n < 8 + TAG_LEN) {
            *why = "record too short";
            return -1;
        }
        memcpy(nonce, r->client_iv, 4);
        memcpy(nonce + 4, body, 8);
        body += 8;
        n -= 8 + TAG_LEN;
    }
    if (n > TLS_REC_PLAIN_MAX) {
        *why = "record plaintext too long";
        return -1;
    }
    put_seq(aad, r->read_seq);
    aad[8] = rec[0], aad[9] = 3, aad[10] = 3;
    aad[11] = (uint8_t)(n >> 8), aad[12] = (uint8_t)n;
    if (aead(r, 0, r->client_key, nonce, aad, sizeof(aad), body, n, body, body + n) < 0) {
        *why = "record does not authenticate";
        return -1;
    }
    r->read_seq++;
    *type = rec[0];
    *plain = body;
    *plain_len = n;
    return 0;
}
