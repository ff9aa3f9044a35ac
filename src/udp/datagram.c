/*
 * datagram.c — the UDP datagram codec; see datagram.h for the layout.
 *
 * Cost: encoding is one HMAC-SHA256 over at most 284 bytes (OpenSSL's
 * one-shot HMAC(), a few microseconds) and no allocation; parsing reads the
 * fixed header and never looks past 'len'.
 */
#include "udp/datagram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

const uint8_t dgram_test_key[DGRAM_KEY_LEN] = {0};

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * The first DGRAM_TAG_LEN bytes of HMAC-SHA256(key, buf[0..len)) into out.
 * Returns 0, or -1 when OpenSSL fails (out of memory, a provider refusing
 * SHA-256): then 'mac' holds nothing, and copying it would hand out, or
 * compare against, uninitialised stack bytes.
 */
static int tag(const uint8_t *buf, size_t len, const uint8_t key[DGRAM_KEY_LEN],
               uint8_t out[DGRAM_TAG_LEN])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    if (HMAC(EVP_sha256(), key, DGRAM_KEY_LEN, buf, len, mac, &maclen) == NULL ||
        maclen < DGRAM_TAG_LEN)
        return -1;
    memcpy(out, mac, DGRAM_TAG_LEN);
    return 0;
}

size_t dgram_encode(const struct dgram *d, const uint8_t key[DGRAM_KEY_LEN],
                    uint8_t out[DGRAM_MAX])
{
    size_t n = d->folder_len;

    if (d->type < DGRAM_NOTIFY || d->type > DGRAM_TEST || n == 0 || n > DGRAM_FOLDER_MAX)
        return 0;
    if (d->type != DGRAM_TEST && (d->reg_id == 0 || d->seq == 0))
        return 0;
    /* Never build what dgram_parse would refuse. */
    if (d->type == DGRAM_TEST && d->reg_id != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)d->folder[i] < 0x20 || d->folder[i] == 0x7f)
            return 0;
    out[0] = 'n';
    out[1] = 'd';
    out[2] = DGRAM_VERSION;
    out[3] = d->type;
    put_u64(out + 4, d->reg_id);
    put_u64(out + 12, d->seq);
    put_u64(out + 20, d->state);
    out[28] = (uint8_t)n;
    memcpy(out + DGRAM_HEADER_LEN, d->folder, n);
    if (tag(out, DGRAM_HEADER_LEN + n, key, out + DGRAM_HEADER_LEN + n) != 0)
        return 0;
    return DGRAM_HEADER_LEN + n + DGRAM_TAG_LEN;
}

int dgram_parse(const uint8_t *buf, size_t len, struct dgram *d, char *whybuf, size_t whylen,
                const char **why)
{
    size_t n;

    if (len < DGRAM_MIN) {
        snprintf(whybuf, whylen, "too short: %zu bytes, at least %d", len, DGRAM_MIN);
        *why = whybuf;
        return -1;
    }
    if (buf[0] != 'n' || buf[1] != 'd') {
        *why = "bad magic (not a nudge datagram)";
        return -1;
    }
    if (buf[2] != DGRAM_VERSION) {
        snprintf(whybuf, whylen, "unsupported version %u (this side speaks %d)", buf[2],
                 DGRAM_VERSION);
        *why = whybuf;
        return -1;
    }
    if (buf[3] < DGRAM_NOTIFY || buf[3] > DGRAM_TEST) {
        snprintf(whybuf, whylen, "unknown type %u", buf[3]);
        *why = whybuf;
        return -1;
    }
    n = buf[28];
    if (n == 0) {
        *why = "empty folder name";
        return -1;
    }
    if (len != DGRAM_HEADER_LEN + n + DGRAM_TAG_LEN) {
        snprintf(whybuf, whylen, "length %zu does not match its folder length %zu (expected %zu)",
                 len, n, DGRAM_HEADER_LEN + n + DGRAM_TAG_LEN);
        *why = whybuf;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = buf[DGRAM_HEADER_LEN + i];
        if (ch < 0x20 || ch == 0x7f) {
            *why = "control byte in the folder name";
            return -1;
        }
    }
    d->type = buf[3];
    d->reg_id = get_u64(buf + 4);
    d->seq = get_u64(buf + 12);
    d->state = get_u64(buf + 20);
    d->folder = (const char *)buf + DGRAM_HEADER_LEN;
    d->folder_len = n;
    if (d->type == DGRAM_TEST && d->reg_id != 0) {
        *why = "a test datagram with a registration id";
        return -1;
    }
    if (d->type != DGRAM_TEST && d->reg_id == 0) {
        *why = "registration id 0";
        return -1;
    }
    if (d->type != DGRAM_TEST && d->seq == 0) {
        *why = "sequence number 0";
        return -1;
    }
    return 0;
}

int dgram_verify(const uint8_t *buf, size_t len, const uint8_t key[DGRAM_KEY_LEN])
{
    uint8_t want[DGRAM_TAG_LEN];

    if (len < DGRAM_MIN)
        return 0;
    if (tag(buf, len - DGRAM_TAG_LEN, key, want) != 0)
        return 0;
    return CRYPTO_memcmp(want, buf + len - DGRAM_TAG_LEN, DGRAM_TAG_LEN) == 0;
}

int dgram_replay_check(uint64_t *last, uint64_t seq)
{
    if (seq <= *last)
        return -1;
    *last = seq;
    return 0;
}

const char *dgram_type_name(unsigned type)
{
    switch (type) {
    case DGRAM_NOTIFY: return "notify";
    case DGRAM_ACK: return "ack";
    case DGRAM_TEST: return "test";
    }
    return "unknown";
}
