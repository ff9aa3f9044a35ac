/*
 * evp.c: what nudge's own record layer would pay per idle TLS connection
 * and per record, with OpenSSL 3.0's EVP AEADs (bench/README.md, "TLS
 * libraries"). After the handshake nudge keeps only the traffic keys, IVs
 * and sequence numbers; this measures the two ways to seal with them:
 *   per-connection: one EVP_CIPHER_CTX per connection, keyed once (bytes
 *     per context, mallinfo2), each record only sets its nonce;
 *   per-loop: one context per event loop, re-keyed for every record with
 *     EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) (or with the cipher
 *     given again, the "full init" row), nothing kept per connection.
 * A record is a 200-byte TLS 1.3 inner plaintext (+1 content type byte),
 * 5-byte header as AAD, 16-byte tag; keys rotate over 1,000 connections so
 * the per-loop rows do not re-key with one hot key.
 * Usage: tls-evp [--n N] [--records R]
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEYS 1000

static double now(void)
{
    struct timespec ts;
    /* CPU time of this thread: a shared machine's preemptions do not count */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t live_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static int seal(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *full, const unsigned char *key,
                const unsigned char *nonce, const unsigned char *in, unsigned char *out)
{
    static const unsigned char aad[5] = { 23, 3, 3, 0, 217 };
    unsigned char tag[16];
    int len, fin;
    if (EVP_EncryptInit_ex(ctx, full, NULL, key, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &len, aad, sizeof aad) != 1 ||
        EVP_EncryptUpdate(ctx, out, &len, in, 201) != 1 ||
        EVP_EncryptFinal_ex(ctx, out + len, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
        return -1;
    return len + fin;
}

int main(int argc, char **argv)
{
    static const char *names[] = { "AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305" };
    int n = 10000;
    long records = 1000000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--records"))
            records = atol(argv[i + 1]);
    }
    static unsigned char keys[KEYS][32], in[256], out[256 + 32];
    unsigned char nonce[12] = { 0 };
    RAND_bytes(&keys[0][0], sizeof keys);
    RAND_bytes(in, sizeof in);
    for (size_t c = 0; c < sizeof names / sizeof *names; c++) {
        EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, names[c], NULL);
        EVP_CIPHER_CTX **ctxs = calloc(n, sizeof *ctxs);
        if (!cipher || !ctxs)
            return 1;
        /* warm-up: the provider's one-time state */
        EVP_CIPHER_CTX *w = EVP_CIPHER_CTX_new();
        seal(w, cipher, keys[0], nonce, in, out);
        EVP_CIPHER_CTX_free(w);

        size_t m0 = live_bytes();
        for (int i = 0; i < n; i++) {
            ctxs[i] = EVP_CIPHER_CTX_new();
            if (EVP_EncryptInit_ex(ctxs[i], cipher, NULL, keys[i % KEYS], nonce) != 1)
                return 1;
        }
        size_t m1 = live_bytes();

        /* per-connection contexts: only the nonce changes per record */
        double t = now();
        for (long r = 0; r < records; r++) {
            memcpy(nonce + 4, &r, sizeof r);
            if (seal(ctxs[r % KEYS], NULL, NULL, nonce, in, out) < 0)
                return 1;
        }
        double per_conn = (now() - t) * 1e9 / records;

        /* one context per loop, re-keyed per record */
        EVP_CIPHER_CTX *loop = EVP_CIPHER_CTX_new();
        EVP_EncryptInit_ex(loop, cipher, NULL, NULL, NULL);
        t = now();
        for (long r = 0; r < records; r++) {
            memcpy(nonce + 4, &r, sizeof r);
            if (seal(loop, NULL, keys[r % KEYS], nonce, in, out) < 0)
                return 1;
        }
        double rekey = (now() - t) * 1e9 / records;

        /* the same, giving the cipher again each time (a full init) */
        t = now();
        for (long r = 0; r < records; r++) {
            memcpy(nonce + 4, &r, sizeof r);
            if (seal(loop, cipher, keys[r % KEYS], nonce, in, out) < 0)
                return 1;
        }
        double full = (now() - t) * 1e9 / records;

        printf("cipher=%s ctx_bytes=%.0f seal_ns_per_conn_ctx=%.0f seal_ns_rekey=%.0f "
               "seal_ns_full_init=%.0f\n", names[c], (double)(m1 - m0) / n, per_conn, rekey, full);
        EVP_CIPHER_CTX_free(loop);
        for (int i = 0; i < n; i++)
            EVP_CIPHER_CTX_free(ctxs[i]);
        free(ctxs);
        EVP_CIPHER_free(cipher);
    }
    return 0;
}
