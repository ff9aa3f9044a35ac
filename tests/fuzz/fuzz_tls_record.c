/*
 * fuzz_tls_record.c — libFuzzer target for what nudged reads on a TLS
 * listener (src/tls/): the record framing, the handshake phase fed to a real
 * OpenSSL server context, and the record layer of an established connection
 * in each version and cipher, with incomplete records carried between calls.
 *
 * The first byte picks the mode: 0 handshake, 1..6 an established connection
 * (TLS 1.3 or 1.2 with AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) whose
 * keys are fixed (the same for both directions, so the seeds that
 * gen_tls_seeds.c seals open here). The rest is cut into reads after each
 * byte equal to the second byte, so that split records are exercised.
 * Invariants: no crash, no leak, the plaintext given back is readable, and
 * every error says why.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/record.h"
#include "tls/tls.h"

static struct tls_server *srv;

static int sink(void *arg, char *owned, size_t len)
{
    (void)arg;
    (void)len;
    free(owned);
    return 0;
}

/* A throwaway P-256 certificate for the handshake mode. */
static void make_server(void)
{
    char cert[] = "/tmp/nudge-fuzz-cert-XXXXXX", key[] = "/tmp/nudge-fuzz-key-XXXXXX", err[256];
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int cfd = mkstemp(cert), kfd = mkstemp(key);
    FILE *cf = fdopen(cfd, "w"), *kf = fdopen(kfd, "w");
    unsigned char seed[32] = {1};

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, pk, EVP_sha256());
    PEM_write_X509(cf, x);
    PEM_write_PrivateKey(kf, pk, NULL, NULL, 0, NULL, NULL);
    fclose(cf);
    fclose(kf);
    if (tls_server_new(&srv, cert, key, seed, sizeof(seed), err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_tls_record: %s\n", err);
        abort();
    }
    unlink(cert);
    unlink(key);
    X509_free(x);
    EVP_PKEY_free(pk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t secret[48] = {7, 7, 7};
    static const uint8_t master[48] = {9}, cr[32] = {1}, sr[32] = {2};
    struct tls_out out = {.send = sink, .arg = NULL};
    struct tls_conn *t;
    struct tls_rec rec;
    uint8_t mode, cut;
    size_t at = 2;

    if (size < 2)
        return 0;
    mode = data[0] % 7;
    cut = data[1];
    if (mode == 0) {
        if (srv == NULL)
            make_server();
        t = tls_conn_new(srv);
    } else {
        enum tls_cipher c = (enum tls_cipher)((mode - 1) % 3 + 1);
        if (mode <= 3 ? tls_rec_init13(&rec, c, secret, secret, 32) < 0
                      : tls_rec_init12(&rec, c, 0, master, sizeof(master), cr, sr) < 0)
            abort();
        t = tls_conn_established(&rec);
    }
    if (t == NULL)
        return 0;
    while (at < size) {
        /* One read: up to the next byte equal to 'cut' (inclusive), or the rest. */
        const uint8_t *end = memchr(data + at, cut, size - at);
        size_t n = end ? (size_t)(end - (data + at)) + 1 : size - at;
        char *buf = malloc(n), *plain;
        size_t plain_len;
        const char *why = NULL;
        long rc;

        memcpy(buf, data + at, n);
        rc = tls_conn_input(t, buf, n, &plain, &plain_len, &out, &why);
        if (plain_len > 0 && plain == NULL)
            abort();
        if (plain_len > 0)
            (void)memchr(plain, 0, plain_len); /* touch it all: ASan checks it is ours */
        free(buf);
        at += n;
        if (rc < 0) {
            if (rc == TLS_ERROR && why == NULL)
                abort(); /* every error says why */
            break;
        }
        tls_conn_done(t);
    }
    tls_conn_free(t);
    return 0;
}
