/*
 * gen_tls_seeds.c — writes the seeds of fuzz_tls_record for the established
 * modes: records sealed with the target's fixed keys (application data, a
 * padded record, close_notify, KeyUpdate, a record split in two), so that
 * the fuzzer starts past the AEAD check. Run by hand when the key setup of
 * the target changes: build/fuzz-seeds tests/fuzz/corpus/tls_record.
 */
#include <stdio.h>
#include <string.h>

#include "tls/record.h"

static void put(const char *dir, const char *name, int mode, const uint8_t *p, size_t n)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s-%d", dir, name, mode);
    f = fopen(path, "wb");
    fputc(mode, f);
    fputc(0xfe, f); /* the read cut: a byte seldom in the records */
    fwrite(p, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    static const uint8_t secret[48] = {7, 7, 7};
    static const uint8_t master[48] = {9}, cr[32] = {1}, sr[32] = {2};
    static const uint8_t req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    static const uint8_t alert[2] = {1, 0}, ku[5] = {24, 0, 0, 1, 1};

    if (argc != 2)
        return 2;
    for (int mode = 1; mode <= 6; mode++) {
        enum tls_cipher c = (enum tls_cipher)((mode - 1) % 3 + 1);
        struct tls_rec r;
        uint8_t out[4096];
        size_t n = 0;

        if (mode <= 3)
            tls_rec_init13(&r, c, secret, secret, 32);
        else
            tls_rec_init12(&r, c, 0, master, sizeof(master), cr, sr);
        n += tls_rec_seal(&r, TLS_CT_APPDATA, req, sizeof(req) - 1, out + n);
        n += tls_rec_seal(&r, TLS_CT_APPDATA, req, sizeof(req) - 1, out + n);
        put(argv[1], "two-requests", mode, out, n);
        n += tls_rec_seal(&r, TLS_CT_ALERT, alert, sizeof(alert), out + n);
        put(argv[1], "then-close-notify", mode, out, n);
        if (mode <= 3) {
            struct tls_rec k;
            tls_rec_init13(&k, c, secret, secret, 32);
            n = tls_rec_seal(&k, TLS_CT_HANDSHAKE, ku, sizeof(ku), out);
            put(argv[1], "key-update", mode, out, n);
        }
    }
    return 0;
}
