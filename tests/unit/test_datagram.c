/*
 * test_datagram.c — the UDP datagram codec (src/udp/datagram.c) and its
 * documentation (docs/udp.md, "Datagram format").
 *
 * The codec is checked from the outside. forge() is an independent encoder,
 * written from the layout table rather than from datagram.c: dgram_encode
 * must produce the same bytes, and forge() builds the malformed datagrams
 * dgram_encode refuses to make, so that each parse rule is tested on its
 * own. Everything handed to dgram_parse and dgram_verify is an exact-size
 * heap copy (malloc of exactly len bytes, no slack, no terminator), so ASan
 * reports any read past 'len'. malloc(0) may return NULL or a pointer to
 * zero usable bytes; either way no byte may be read, which is the point.
 *
 * The garbage test feeds 300,000 pseudo-random buffers from a fixed-seed
 * xorshift64* generator (so a failure reproduces), a third of them raw, a
 * third behind a correct magic/version/type header, a third shaped to pass
 * every structural check so that dgram_verify is reached too.
 *
 * The docs test reads docs/udp.md from the repository root (make runs the
 * tests from there). It expects, for each heading "### Example: a notify"
 * and "### Example: its ack", two fenced blocks (lines starting with ```)
 * before the next heading:
 *
 *   1. the inputs, one "name: value" per line, each name exactly once:
 *        type:   notify | ack | test
 *        key:    64 hex digits, the 32 key bytes in order
 *        reg_id, seq, state: decimal, or hexadecimal with a 0x prefix
 *        folder: the rest of the line, leading blanks and trailing blanks
 *                removed (so a folder cannot begin or end with a space)
 *   2. the datagram as `xxd` prints it:
 *        "OFFSET: HEX HEX ...  ASCII"
 *      OFFSET is hexadecimal and must equal the number of bytes before it;
 *      HEX is a group of an even number of hex digits, groups separated by
 *      one space; two spaces end the hex part; the last k characters of the
 *      line, k being the line's byte count, are the ASCII column: each byte
 *      0x20..0x7e as itself, any other as '.'. It is checked too.
 *
 * The test encodes the inputs with dgram_encode and wants the very bytes of
 * the dump, then wants dgram_parse and dgram_verify to accept the dump.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "udp/datagram.h"

static uint8_t key_a[DGRAM_KEY_LEN], key_b[DGRAM_KEY_LEN];

static void init_keys(void)
{
    for (int i = 0; i < DGRAM_KEY_LEN; i++) {
        key_a[i] = (uint8_t)i;             /* the key of the documented example */
        key_b[i] = (uint8_t)(i * 13 + 5);
    }
}

/* ---- helpers ------------------------------------------------------------ */

/*
 * The independent encoder: writes the layout of docs/udp.md for any field
 * values, including those dgram_encode refuses (n may be 0; out must hold
 * 45 + n bytes). Returns the length.
 */
static size_t forge(uint8_t type, uint64_t id, uint64_t seq, uint64_t st, const void *folder,
                    size_t n, const uint8_t key[DGRAM_KEY_LEN], uint8_t *out)
{
    const uint64_t ints[3] = {id, seq, st};
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t o = 0;

    assert_true(n <= 255);
    out[o++] = 0x6e;
    out[o++] = 0x64;
    out[o++] = 1;
    out[o++] = type;
    for (int i = 0; i < 3; i++)
        for (int shift = 56; shift >= 0; shift -= 8)
            out[o++] = (uint8_t)(ints[i] >> shift);
    out[o++] = (uint8_t)n;
    if (n > 0)
        memcpy(out + o, folder, n);
    o += n;
    assert_non_null(HMAC(EVP_sha256(), key, DGRAM_KEY_LEN, out, o, mac, &maclen));
    assert_int_equal(maclen, 32);
    memcpy(out + o, mac, 16);
    return o + 16;
}

/* A heap copy of exactly len bytes; the caller frees it. */
static uint8_t *dup_exact(const uint8_t *buf, size_t len)
{
    uint8_t *p = malloc(len);

    if (len > 0) {
        assert_non_null(p);
        memcpy(p, buf, len);
    }
    return p;
}

struct outcome {
    int parsed;      /* dgram_parse's return value */
    int verified;    /* dgram_verify's, when parsed == 0; else -1 */
    char why[160];   /* the reason, when parsed != 0 */
};

/*
 * Parses (and, when that succeeds, verifies with 'key') an exact-size copy
 * of buf[0..len). Checks what holds for every answer: a rejection has a
 * non-empty reason; an acceptance describes exactly the bytes it was given.
 */
static struct outcome check_exact(const uint8_t *buf, size_t len, const uint8_t key[DGRAM_KEY_LEN])
{
    struct outcome r = {.parsed = 0, .verified = -1, .why = ""};
    uint8_t *copy = dup_exact(buf, len);
    char whybuf[128];
    const char *why = NULL;
    struct dgram d;

    r.parsed = dgram_parse(copy, len, &d, whybuf, sizeof(whybuf), &why);
    if (r.parsed != 0) {
        assert_int_equal(r.parsed, -1);
        assert_non_null(why);
        assert_true(why[0] != '\0');
        snprintf(r.why, sizeof(r.why), "%s", why);
    } else {
        assert_true(len >= DGRAM_MIN && len <= DGRAM_MAX);
        assert_int_equal(d.folder_len, len - DGRAM_HEADER_LEN - DGRAM_TAG_LEN);
        assert_ptr_equal(d.folder, (const char *)copy + DGRAM_HEADER_LEN);
        assert_int_equal(d.type, copy[3]);
        r.verified = dgram_verify(copy, len, key);
        assert_true(r.verified == 0 || r.verified == 1);
    }
    free(copy);
    return r;
}

/* dgram_parse's reason for buf[0..len), which it must reject. */
static void assert_reason(const uint8_t *buf, size_t len, const char *want)
{
    struct outcome r = check_exact(buf, len, key_a);

    if (r.parsed == 0)
        fail_msg("accepted, expected \"%s\"", want);
    if (strcmp(r.why, want) != 0)
        fail_msg("reason \"%s\", expected \"%s\"", r.why, want);
}

static struct dgram make(uint8_t type, uint64_t id, uint64_t seq, uint64_t st,
                         const char *folder, size_t n)
{
    struct dgram d = {.type = type, .reg_id = id, .seq = seq, .state = st,
                      .folder = folder, .folder_len = n};
    return d;
}

/*
 * Encodes 'in', and checks all of it: the length is 45 + N, no byte past it
 * was written, the bytes are forge()'s, and an exact-size copy parses back
 * to every field and verifies with 'key' only.
 */
static void round_trip(const struct dgram *in, const uint8_t key[DGRAM_KEY_LEN])
{
    uint8_t out[DGRAM_MAX + 16], want[DGRAM_MAX];
    char whybuf[128];
    const char *why = NULL;
    struct dgram d;
    uint8_t *copy;
    size_t len;

    memset(out, 0xa5, sizeof(out));
    len = dgram_encode(in, key, out);
    assert_int_equal(len, 45 + in->folder_len);
    for (size_t i = len; i < sizeof(out); i++)
        if (out[i] != 0xa5)
            fail_msg("encode wrote byte %zu past its length %zu", i, len);
    assert_int_equal(forge(in->type, in->reg_id, in->seq, in->state, in->folder, in->folder_len,
                           key, want),
                     len);
    assert_memory_equal(out, want, len);

    copy = dup_exact(out, len);
    memset(&d, 0, sizeof(d));
    if (dgram_parse(copy, len, &d, whybuf, sizeof(whybuf), &why) != 0)
        fail_msg("own datagram refused: %s", why);
    assert_int_equal(d.type, in->type);
    assert_true(d.reg_id == in->reg_id);   /* assert_int_equal would print them as ints */
    assert_true(d.seq == in->seq);
    assert_true(d.state == in->state);
    assert_int_equal(d.folder_len, in->folder_len);
    assert_memory_equal(d.folder, in->folder, in->folder_len);
    assert_ptr_equal(d.folder, (const char *)copy + DGRAM_HEADER_LEN);
    assert_int_equal(dgram_verify(copy, len, key), 1);
    assert_int_equal(dgram_verify(copy, len, key == key_b ? key_a : key_b), 0);
    free(copy);
}

/* xorshift64* (Vigna): small, fast, and the same sequence on every machine. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static void rng_fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() >> 32);
}

/*
 * A folder name of n bytes, every byte allowed: 0x20..0xff minus 0x7f,
 * cycling from 'A' (not from ' ', so a codec that blanked a byte would show).
 */
static void legal_folder(char *out, size_t n)
{
    static const size_t span = 0x100 - 0x20 - 1;

    for (size_t i = 0; i < n; i++) {
        unsigned v = 0x20 + (unsigned)((i + 'A' - 0x20) % span);
        out[i] = (char)(v >= 0x7f ? v + 1 : v);
    }
}

/* ---- round trips ---------------------------------------------------------- */

static void test_round_trip_each_type(void **state)
{
    struct dgram d;

    (void)state;
    d = make(DGRAM_NOTIFY, 0x0123456789abcdefULL, 7, 42, "INBOX", 5);
    round_trip(&d, key_a);
    d = make(DGRAM_ACK, 0x0123456789abcdefULL, 7, 42, "INBOX", 5);
    round_trip(&d, key_a);
    d = make(DGRAM_TEST, 0, 0, 0, "nonce-1234", 10);
    round_trip(&d, dgram_test_key);
    round_trip(&d, key_b);
}

static void test_round_trip_folder_lengths_1_and_255(void **state)
{
    static const uint8_t types[] = {DGRAM_NOTIFY, DGRAM_ACK, DGRAM_TEST};
    static const size_t lengths[] = {1, 2, 254, 255};
    char folder[DGRAM_FOLDER_MAX];
    struct dgram d;

    (void)state;
    legal_folder(folder, sizeof(folder));
    for (size_t t = 0; t < 3; t++)
        for (size_t l = 0; l < 4; l++) {
            d = make(types[t], types[t] == DGRAM_TEST ? 0 : 99, 3, 4, folder, lengths[l]);
            round_trip(&d, key_a);
        }
    /* The longest datagram is DGRAM_MAX, the shortest DGRAM_MIN: 300 and 46. */
    assert_int_equal(DGRAM_MAX, 300);
    assert_int_equal(DGRAM_MIN, 46);
}

static void test_round_trip_extreme_integers(void **state)
{
    static const uint64_t ids[] = {1, 2, 0xff, 0x100, 0x8000000000000000ULL,
                                   UINT64_MAX - 1, UINT64_MAX};
    static const uint64_t states[] = {0, 1, 0x00ff00ff00ff00ffULL, UINT64_MAX};
    struct dgram d;

    (void)state;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        for (size_t j = 0; j < sizeof(ids) / sizeof(ids[0]); j++)
            for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
                d = make(DGRAM_NOTIFY, ids[i], ids[j], states[k], "A", 1);
                round_trip(&d, key_a);
                d.type = DGRAM_ACK;
                round_trip(&d, key_b);
            }
    /* A test datagram's sequence number and state may be anything, 0 included. */
    d = make(DGRAM_TEST, 0, UINT64_MAX, UINT64_MAX, "n", 1);
    round_trip(&d, dgram_test_key);
    d = make(DGRAM_TEST, 0, 0, UINT64_MAX, "n", 1);
    round_trip(&d, dgram_test_key);
}

static void test_encode_layout_is_big_endian_at_fixed_offsets(void **state)
{
    static const uint8_t want[29] = {
        0x6e, 0x64, 0x01, 0x02,                         /* "nd", version 1, ack */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* registration id */
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* sequence number */
        0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, /* state */
        0x03,                                           /* N */
    };
    struct dgram d = make(DGRAM_ACK, 0x0102030405060708ULL, 0x1112131415161718ULL,
                          0xf1f2f3f4f5f6f7f8ULL, "a/b", 3);
    uint8_t out[DGRAM_MAX];

    (void)state;
    assert_int_equal(dgram_encode(&d, key_a, out), 48);
    assert_memory_equal(out, want, sizeof(want));
    assert_memory_equal(out + 29, "a/b", 3);
}

/* ---- what encode refuses ------------------------------------------------ */

static void test_encode_refuses_folder_length_0_and_256(void **state)
{
    char folder[DGRAM_FOLDER_MAX + 2];
    uint8_t out[DGRAM_MAX + 16];
    struct dgram d;

    (void)state;
    memset(folder, 'f', sizeof(folder));
    memset(out, 0xa5, sizeof(out));
    d = make(DGRAM_NOTIFY, 1, 1, 0, folder, 0);
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d.folder_len = 256;
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d.folder_len = 257;
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d.folder_len = (size_t)-1;
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d = make(DGRAM_TEST, 0, 0, 0, folder, 0);
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d.folder_len = 256;
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    /* 255 is the limit, and a refusal never wrote past DGRAM_MAX. */
    d.folder_len = 255;
    assert_int_equal(dgram_encode(&d, key_a, out), DGRAM_MAX);
    for (size_t i = DGRAM_MAX; i < sizeof(out); i++)
        assert_int_equal(out[i], 0xa5);
}

static void test_encode_refuses_unknown_type(void **state)
{
    static const uint8_t bad[] = {0, 4, 5, 0x7f, 0x80, 0xff};
    uint8_t out[DGRAM_MAX];
    struct dgram d;

    (void)state;
    for (size_t i = 0; i < sizeof(bad); i++) {
        d = make(bad[i], 1, 1, 0, "INBOX", 5);
        assert_int_equal(dgram_encode(&d, key_a, out), 0);
        d.reg_id = 0;  /* nor as a would-be test datagram */
        assert_int_equal(dgram_encode(&d, key_a, out), 0);
    }
}

static void test_encode_refuses_zero_id_or_seq_outside_test(void **state)
{
    static const uint8_t types[] = {DGRAM_NOTIFY, DGRAM_ACK};
    uint8_t out[DGRAM_MAX];
    struct dgram d;

    (void)state;
    for (size_t t = 0; t < 2; t++) {
        d = make(types[t], 0, 1, 5, "INBOX", 5);
        assert_int_equal(dgram_encode(&d, key_a, out), 0);
        d = make(types[t], 1, 0, 5, "INBOX", 5);
        assert_int_equal(dgram_encode(&d, key_a, out), 0);
        d = make(types[t], 0, 0, 5, "INBOX", 5);
        assert_int_equal(dgram_encode(&d, key_a, out), 0);
        d = make(types[t], 1, 1, 0, "INBOX", 5); /* state 0 is fine */
        assert_int_equal(dgram_encode(&d, key_a, out), 50);
    }
    d = make(DGRAM_TEST, 0, 0, 0, "INBOX", 5);
    assert_int_equal(dgram_encode(&d, key_a, out), 50);
}

/* What dgram_parse refuses is never built: a test with an id, a control byte in the folder. */
static void test_encode_refuses_what_parse_refuses(void **state)
{
    uint8_t out[DGRAM_MAX];
    struct dgram d;

    (void)state;
    d = make(DGRAM_TEST, 9, 0, 0, "nonce", 5);
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d = make(DGRAM_NOTIFY, 1, 1, 1, "IN\nBOX", 6);
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
    d = make(DGRAM_NOTIFY, 1, 1, 1, "IN\x7f", 3);
    assert_int_equal(dgram_encode(&d, key_a, out), 0);
}

/* ---- the tag -------------------------------------------------------------- */

static void test_tag_verifies_with_its_key_only(void **state)
{
    struct dgram d = make(DGRAM_NOTIFY, 77, 8, 9, "Sent", 4);
    uint8_t out[DGRAM_MAX], other[DGRAM_KEY_LEN];
    size_t len;

    (void)state;
    len = dgram_encode(&d, key_a, out);
    assert_int_equal(len, 49);
    assert_int_equal(check_exact(out, len, key_a).verified, 1);
    assert_int_equal(check_exact(out, len, key_b).verified, 0);
    assert_int_equal(check_exact(out, len, dgram_test_key).verified, 0);
    /* A key that differs in one bit of any byte fails. */
    for (size_t i = 0; i < DGRAM_KEY_LEN; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(other, key_a, sizeof(other));
            other[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(check_exact(out, len, other).verified, 0);
        }
    /* The test key is all zero bytes, and test datagrams verify under it. */
    memset(other, 0, sizeof(other));
    assert_memory_equal(dgram_test_key, other, DGRAM_KEY_LEN);
    d = make(DGRAM_TEST, 0, 0, 0, "abc", 3);
    len = dgram_encode(&d, dgram_test_key, out);
    assert_int_equal(check_exact(out, len, dgram_test_key).verified, 1);
    assert_int_equal(check_exact(out, len, key_a).verified, 0);
}

/*
 * dgram_verify is meant for datagrams dgram_parse accepted, but a buffer
 * shorter than the smallest datagram must still be a plain "no", not a read
 * before or past it (len - 16 would wrap around below 16 bytes).
 */
static void test_verify_refuses_buffers_shorter_than_a_datagram(void **state)
{
    uint8_t out[DGRAM_MAX];
    size_t len;
    struct dgram d = make(DGRAM_NOTIFY, 1, 1, 1, "I", 1);

    (void)state;
    len = dgram_encode(&d, key_a, out);
    assert_int_equal(len, DGRAM_MIN);
    for (size_t cut = 0; cut < DGRAM_MIN; cut++) {
        uint8_t *copy = dup_exact(out, cut);

        assert_int_equal(dgram_verify(copy, cut, key_a), 0);
        free(copy);
    }
}

/* Flipping any one bit anywhere is caught by dgram_parse or by dgram_verify. */
static void test_every_bit_flip_fails(void **state)
{
    static const size_t lengths[] = {1, 5, 255};
    static const uint8_t types[] = {DGRAM_NOTIFY, DGRAM_ACK, DGRAM_TEST};
    char folder[DGRAM_FOLDER_MAX];
    uint8_t out[DGRAM_MAX];
    size_t flips = 0, by_parse = 0, by_tag = 0;

    (void)state;
    legal_folder(folder, sizeof(folder));
    for (size_t t = 0; t < 3; t++)
        for (size_t l = 0; l < 3; l++) {
            int test = types[t] == DGRAM_TEST;
            struct dgram d = make(types[t], test ? 0 : 0x0123456789abcdefULL, test ? 0 : 7, 42,
                                  folder, lengths[l]);
            const uint8_t *key = test ? dgram_test_key : key_a;
            size_t len = dgram_encode(&d, key, out);

            assert_int_equal(len, 45 + lengths[l]);
            assert_int_equal(check_exact(out, len, key).verified, 1);
            for (size_t i = 0; i < len; i++)
                for (int bit = 0; bit < 8; bit++) {
                    struct outcome r;

                    out[i] ^= (uint8_t)(1u << bit);
                    r = check_exact(out, len, key);
                    out[i] ^= (uint8_t)(1u << bit);
                    if (r.parsed == 0 && r.verified != 0)
                        fail_msg("%s, N=%zu: flipping bit %d of byte %zu went unnoticed",
                                 dgram_type_name(types[t]), lengths[l], bit, i);
                    flips++;
                    if (r.parsed != 0)
                        by_parse++;
                    else
                        by_tag++;
                }
        }
    assert_int_equal(flips, 8 * 3 * (45 * 3 + 1 + 5 + 255));
    /* Both defences took part: structure for the header, the tag for the rest. */
    assert_true(by_parse > 0 && by_tag > 0);
}

/* ---- replay ---------------------------------------------------------------- */

static void test_replay_accepts_increasing(void **state)
{
    uint64_t last = 0;

    (void)state;
    assert_int_equal(dgram_replay_check(&last, 1), 0);
    assert_true(last == 1);
    assert_int_equal(dgram_replay_check(&last, 2), 0);
    assert_true(last == 2);
    assert_int_equal(dgram_replay_check(&last, 10), 0); /* gaps: lost datagrams */
    assert_true(last == 10);
    assert_int_equal(dgram_replay_check(&last, UINT64_MAX - 1), 0);
    assert_int_equal(dgram_replay_check(&last, UINT64_MAX), 0);
    assert_true(last == UINT64_MAX);
}

static void test_replay_refuses_equal_and_lower_and_keeps_last(void **state)
{
    uint64_t last = 0;

    (void)state;
    assert_int_equal(dgram_replay_check(&last, 0), -1); /* 0 never exceeds the start */
    assert_true(last == 0);
    assert_int_equal(dgram_replay_check(&last, 5), 0);
    assert_int_equal(dgram_replay_check(&last, 5), -1);
    assert_true(last == 5);
    assert_int_equal(dgram_replay_check(&last, 4), -1);
    assert_true(last == 5);
    assert_int_equal(dgram_replay_check(&last, 1), -1);
    assert_int_equal(dgram_replay_check(&last, 0), -1);
    assert_true(last == 5);
    assert_int_equal(dgram_replay_check(&last, 6), 0);
    assert_true(last == 6);
    last = UINT64_MAX;
    assert_int_equal(dgram_replay_check(&last, UINT64_MAX), -1);
    assert_int_equal(dgram_replay_check(&last, 1), -1);
    assert_true(last == UINT64_MAX);
}

/* ---- truncation and extra bytes ------------------------------------------ */

static void test_every_truncation_fails(void **state)
{
    static const size_t lengths[] = {1, 5, 255};
    char folder[DGRAM_FOLDER_MAX];
    uint8_t out[DGRAM_MAX];

    (void)state;
    legal_folder(folder, sizeof(folder));
    for (size_t l = 0; l < 3; l++) {
        struct dgram d = make(DGRAM_NOTIFY, 1, 1, 1, folder, lengths[l]);
        size_t len = dgram_encode(&d, key_a, out);

        assert_int_equal(len, 45 + lengths[l]);
        for (size_t cut = 0; cut < len; cut++) {
            struct outcome r = check_exact(out, cut, key_a);

            if (r.parsed == 0)
                fail_msg("N=%zu: the first %zu of %zu bytes were accepted", lengths[l], cut, len);
            /* Short of the minimum the length is the reason, beyond it the mismatch. */
            if (cut < DGRAM_MIN)
                assert_true(strncmp(r.why, "too short: ", 11) == 0);
            else
                assert_true(strncmp(r.why, "length ", 7) == 0);
        }
    }
}

static void test_extra_byte_fails(void **state)
{
    static const size_t lengths[] = {1, 5, 254, 255};
    static const uint8_t extra[] = {0x00, 'x', 0xff};
    char folder[DGRAM_FOLDER_MAX];
    uint8_t out[DGRAM_MAX + 1];

    (void)state;
    legal_folder(folder, sizeof(folder));
    for (size_t l = 0; l < 4; l++) {
        struct dgram d = make(DGRAM_ACK, 2, 3, 4, folder, lengths[l]);
        size_t len = dgram_encode(&d, key_a, out);

        assert_int_equal(len, 45 + lengths[l]);
        for (size_t e = 0; e < sizeof(extra); e++) {
            struct outcome r;

            out[len] = extra[e];
            r = check_exact(out, len + 1, key_a);
            assert_int_equal(r.parsed, -1);
            assert_true(strncmp(r.why, "length ", 7) == 0);
        }
    }
}

/* ---- garbage ---------------------------------------------------------------- */

static void test_garbage_never_accepted(void **state)
{
    enum { ROUNDS = 100000, MAXLEN = 400 };
    uint8_t buf[MAXLEN], key[DGRAM_KEY_LEN];
    size_t parsed = 0, deep = 0;

    (void)state;
    for (int i = 0; i < 3 * ROUNDS; i++) {
        int mode = i % 3;
        size_t len = (size_t)(rng() % (MAXLEN + 1));
        struct outcome r;

        rng_fill(buf, sizeof(buf));
        rng_fill(key, sizeof(key));
        if (mode >= 1 && len >= 4) {
            /* A correct header, so the parser gets past its first checks. */
            buf[0] = 'n';
            buf[1] = 'd';
            buf[2] = DGRAM_VERSION;
            buf[3] = (uint8_t)(DGRAM_NOTIFY + rng() % 3);
        }
        if (mode == 2) {
            /* Also a length that matches N (mostly) and a legal folder, so the
             * datagram reaches the id checks and dgram_verify. */
            size_t n = 1 + (size_t)(rng() % DGRAM_FOLDER_MAX);
            uint64_t dice = rng() % 16;

            len = 45 + n;
            if (dice == 0)
                len--;
            else if (dice == 1)
                len++;
            buf[28] = (uint8_t)n;
            for (size_t j = 0; j < n; j++)
                buf[29 + j] = (uint8_t)(0x20 + rng() % 0x5f); /* 0x20..0x7e */
            if (dice == 2)
                buf[29 + rng() % n] = (uint8_t)(rng() % 0x20);
            if (buf[3] == DGRAM_TEST && dice != 3)
                memset(buf + 4, 0, 8);
            if (dice == 4)
                memset(buf + 4, 0, 8);
            if (dice == 5)
                memset(buf + 12, 0, 8);
        }
        r = check_exact(buf, len, key);
        if (r.parsed == 0) {
            parsed++;
            if (r.verified != 0)
                fail_msg("garbage #%d (%zu bytes) verified with a random key", i, len);
        }
        if (mode == 2)
            deep++;
    }
    /* Most shaped buffers pass the structural checks: the tag had to stop them. */
    assert_int_equal(deep, ROUNDS);
    assert_true(parsed > ROUNDS / 2);
}

/* ---- parse reasons ---------------------------------------------------------- */

static void test_reason_too_short(void **state)
{
    uint8_t buf[DGRAM_MAX];
    size_t len;

    (void)state;
    forge(DGRAM_NOTIFY, 1, 1, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, 0, "too short: 0 bytes, at least 46");
    assert_reason(buf, 1, "too short: 1 bytes, at least 46");
    assert_reason(buf, 45, "too short: 45 bytes, at least 46");
    /* An empty folder makes a 45-byte datagram: too short, before anything else. */
    len = forge(DGRAM_NOTIFY, 1, 1, 1, "", 0, key_a, buf);
    assert_int_equal(len, 45);
    assert_reason(buf, len, "too short: 45 bytes, at least 46");
}

static void test_reason_bad_magic(void **state)
{
    uint8_t buf[DGRAM_MAX];
    size_t len = forge(DGRAM_NOTIFY, 1, 1, 1, "INBOX", 5, key_a, buf);

    (void)state;
    buf[0] = 'N';
    assert_reason(buf, len, "bad magic (not a nudge datagram)");
    buf[0] = 'n';
    buf[1] = 'D';
    assert_reason(buf, len, "bad magic (not a nudge datagram)");
    buf[0] = 'd';
    buf[1] = 'n';
    assert_reason(buf, len, "bad magic (not a nudge datagram)");
}

static void test_reason_unsupported_version(void **state)
{
    uint8_t buf[DGRAM_MAX];
    size_t len = forge(DGRAM_NOTIFY, 1, 1, 1, "INBOX", 5, key_a, buf);

    (void)state;
    buf[2] = 0;
    assert_reason(buf, len, "unsupported version 0 (this side speaks 1)");
    buf[2] = 2;
    assert_reason(buf, len, "unsupported version 2 (this side speaks 1)");
    buf[2] = 255;
    assert_reason(buf, len, "unsupported version 255 (this side speaks 1)");
}

static void test_reason_unknown_type(void **state)
{
    uint8_t buf[DGRAM_MAX];
    size_t len;

    (void)state;
    len = forge(0, 1, 1, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "unknown type 0");
    len = forge(4, 1, 1, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "unknown type 4");
    len = forge(255, 1, 1, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "unknown type 255");
}

static void test_reason_empty_folder_and_length_mismatch(void **state)
{
    uint8_t buf[DGRAM_MAX + 1];
    size_t len = forge(DGRAM_NOTIFY, 1, 1, 1, "INBOX", 5, key_a, buf);

    (void)state;
    assert_int_equal(len, 50);
    buf[50] = 0;
    assert_reason(buf, 51, "length 51 does not match its folder length 5 (expected 50)");
    assert_reason(buf, 49, "length 49 does not match its folder length 5 (expected 50)");
    assert_reason(buf, 46, "length 46 does not match its folder length 5 (expected 50)");
    buf[28] = 4;
    assert_reason(buf, 50, "length 50 does not match its folder length 4 (expected 49)");
    buf[28] = 255;
    assert_reason(buf, 50, "length 50 does not match its folder length 255 (expected 300)");
    buf[28] = 0;
    assert_reason(buf, 50, "empty folder name");
    assert_reason(buf, 46, "empty folder name");
}

static void test_reason_control_byte(void **state)
{
    static const uint8_t bad[] = {0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1b, 0x1f, 0x7f};
    static const uint8_t good[] = {0x20, 0x7e, 0x80, 0x9f, 0xc3, 0xff};
    char folder[5] = "INBOX";
    uint8_t buf[DGRAM_MAX];
    size_t len;

    (void)state;
    for (size_t i = 0; i < sizeof(bad); i++)
        for (size_t pos = 0; pos < 5; pos++) {
            memcpy(folder, "INBOX", 5);
            folder[pos] = (char)bad[i];
            len = forge(DGRAM_NOTIFY, 1, 1, 1, folder, 5, key_a, buf);
            assert_reason(buf, len, "control byte in the folder name");
        }
    /* Space, '~' and bytes from 0x80 up (UTF-8) are allowed. */
    for (size_t i = 0; i < sizeof(good); i++) {
        memcpy(folder, "INBOX", 5);
        folder[2] = (char)good[i];
        len = forge(DGRAM_NOTIFY, 1, 1, 1, folder, 5, key_a, buf);
        assert_int_equal(check_exact(buf, len, key_a).verified, 1);
    }
}

static void test_reason_zero_id_or_seq_and_test_with_id(void **state)
{
    uint8_t buf[DGRAM_MAX];
    size_t len;

    (void)state;
    len = forge(DGRAM_NOTIFY, 0, 1, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "registration id 0");
    len = forge(DGRAM_ACK, 0, 0, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "registration id 0");
    len = forge(DGRAM_NOTIFY, 1, 0, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "sequence number 0");
    len = forge(DGRAM_ACK, UINT64_MAX, 0, 1, "INBOX", 5, key_a, buf);
    assert_reason(buf, len, "sequence number 0");
    len = forge(DGRAM_TEST, 1, 0, 0, "nonce", 5, dgram_test_key, buf);
    assert_reason(buf, len, "a test datagram with a registration id");
    len = forge(DGRAM_TEST, 0x0100000000000000ULL, 1, 0, "nonce", 5, dgram_test_key, buf);
    assert_reason(buf, len, "a test datagram with a registration id");
    /* The same test datagram with id 0 and sequence number 0 is fine. */
    len = forge(DGRAM_TEST, 0, 0, 0, "nonce", 5, dgram_test_key, buf);
    assert_int_equal(check_exact(buf, len, dgram_test_key).verified, 1);
}

static void test_reason_fits_a_small_buffer(void **state)
{
    uint8_t buf[DGRAM_MAX];
    char whybuf[12];
    const char *why = NULL;
    struct dgram d;
    size_t len = forge(DGRAM_NOTIFY, 1, 1, 1, "INBOX", 5, key_a, buf);

    (void)state;
    /* A formatted reason is cut to the caller's buffer, never overrunning it. */
    memset(whybuf, 'x', sizeof(whybuf));
    assert_int_equal(dgram_parse(buf, 20, &d, whybuf, sizeof(whybuf), &why), -1);
    assert_string_equal(why, "too short: ");
    buf[2] = 9;
    assert_int_equal(dgram_parse(buf, len, &d, whybuf, sizeof(whybuf), &why), -1);
    assert_string_equal(why, "unsupported");
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(dgram_type_name(DGRAM_NOTIFY), "notify");
    assert_string_equal(dgram_type_name(DGRAM_ACK), "ack");
    assert_string_equal(dgram_type_name(DGRAM_TEST), "test");
    assert_string_equal(dgram_type_name(0), "unknown");
    assert_string_equal(dgram_type_name(4), "unknown");
    assert_string_equal(dgram_type_name(0x101), "unknown");
}

/* ---- docs/udp.md ---------------------------------------------------------- */

static char *read_doc(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long size;

    if (f == NULL)
        fail_msg("cannot open %s (run from the repository root): %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size > 0 && size < (1 << 22));
    rewind(f);
    buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    buf[size] = '\0';
    fclose(f);
    return buf;
}

/* The lines of a fenced block: [*start, *end) between its two fence lines. */
struct block {
    const char *start, *end;
};

/*
 * Finds the heading line 'heading' and the first 'count' fenced blocks after
 * it that come before the next heading. Fails the test with a message
 * saying what is missing.
 */
static void find_blocks(const char *doc, const char *heading, struct block *out, int count)
{
    char line[128];
    const char *p, *section_end;

    snprintf(line, sizeof(line), "\n%s\n", heading);
    p = strstr(doc, line);
    if (p == NULL)
        fail_msg("docs/udp.md has no heading \"%s\"", heading);
    p += strlen(line);
    section_end = strstr(p, "\n#");
    if (section_end == NULL)
        section_end = p + strlen(p);
    for (int i = 0; i < count; i++) {
        const char *open = strstr(p, "\n```"), *close;

        if (p[0] == '`' && p[1] == '`' && p[2] == '`')
            open = p - 1; /* a fence right under the heading */
        if (open == NULL || open >= section_end)
            fail_msg("\"%s\": fenced block %d of %d missing", heading, i + 1, count);
        out[i].start = strchr(open + 1, '\n');
        assert_non_null(out[i].start);
        out[i].start++;
        close = strstr(out[i].start - 1, "\n```");
        if (close == NULL || close >= section_end)
            fail_msg("\"%s\": fenced block %d not closed", heading, i + 1);
        out[i].end = close + 1;
        p = strchr(close + 1, '\n');
        if (p == NULL)
            p = close + strlen(close);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A whole-string unsigned 64-bit number, decimal or 0x-hexadecimal. */
static uint64_t parse_u64(const char *name, const char *s)
{
    int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    const char *digits = hex ? s + 2 : s;
    unsigned long long v;
    char *end;

    if (hexval(digits[0]) < 0 || (!hex && (digits[0] < '0' || digits[0] > '9')))
        fail_msg("%s: \"%s\" is not a number", name, s);
    errno = 0;
    v = strtoull(digits, &end, hex ? 16 : 10);
    if (errno != 0 || *end != '\0')
        fail_msg("%s: \"%s\" is not a 64-bit number", name, s);
    return (uint64_t)v;
}

struct example {
    struct dgram d;
    uint8_t key[DGRAM_KEY_LEN];
    char folder[DGRAM_FOLDER_MAX + 1];
    uint8_t bytes[DGRAM_MAX];
    size_t len;
};

static void parse_inputs(const char *what, struct block b, struct example *ex)
{
    static const char *const names[] = {"type", "key", "reg_id", "seq", "state", "folder"};
    int seen[6] = {0};
    const char *p = b.start;

    memset(&ex->d, 0, sizeof(ex->d));
    while (p < b.end) {
        const char *eol = memchr(p, '\n', (size_t)(b.end - p));
        char line[512], *colon, *v, *t;
        size_t n;
        int which = -1;

        assert_non_null(eol);
        n = (size_t)(eol - p);
        assert_true(n < sizeof(line));
        memcpy(line, p, n);
        line[n] = '\0';
        p = eol + 1;
        colon = strchr(line, ':');
        if (colon == NULL)
            fail_msg("%s inputs: \"%s\" is not \"name: value\"", what, line);
        *colon = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
        for (t = v + strlen(v); t > v && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r'); t--)
            ;
        *t = '\0';
        for (int i = 0; i < 6; i++)
            if (strcmp(line, names[i]) == 0)
                which = i;
        if (which < 0) {
            fail_msg("%s inputs: unknown name \"%s\"", what, line);
            return; /* fail_msg does not return, but the compiler cannot tell */
        }
        if (seen[which]++)
            fail_msg("%s inputs: \"%s\" given twice", what, line);
        switch (which) {
        case 0:
            if (strcmp(v, "notify") == 0)
                ex->d.type = DGRAM_NOTIFY;
            else if (strcmp(v, "ack") == 0)
                ex->d.type = DGRAM_ACK;
            else if (strcmp(v, "test") == 0)
                ex->d.type = DGRAM_TEST;
            else
                fail_msg("%s inputs: unknown type \"%s\"", what, v);
            break;
        case 1:
            if (strlen(v) != 2 * DGRAM_KEY_LEN)
                fail_msg("%s inputs: the key is not 64 hex digits", what);
            for (int i = 0; i < DGRAM_KEY_LEN; i++) {
                int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);
                if (hi < 0 || lo < 0)
                    fail_msg("%s inputs: the key is not 64 hex digits", what);
                ex->key[i] = (uint8_t)(hi << 4 | lo);
            }
            break;
        case 2: ex->d.reg_id = parse_u64("reg_id", v); break;
        case 3: ex->d.seq = parse_u64("seq", v); break;
        case 4: ex->d.state = parse_u64("state", v); break;
        case 5:
            n = strlen(v);
            if (n == 0 || n > DGRAM_FOLDER_MAX)
                fail_msg("%s inputs: folder of %zu bytes", what, n);
            memcpy(ex->folder, v, n + 1);
            ex->d.folder = ex->folder;
            ex->d.folder_len = n;
            break;
        }
    }
    for (int i = 0; i < 6; i++)
        if (!seen[i])
            fail_msg("%s inputs: \"%s\" missing", what, names[i]);
}

static void parse_dump(const char *what, struct block b, struct example *ex)
{
    const char *p = b.start;

    ex->len = 0;
    while (p < b.end) {
        const char *eol = memchr(p, '\n', (size_t)(b.end - p));
        const char *q = p, *hex_end, *ascii;
        size_t offset = 0, first = ex->len, count;

        assert_non_null(eol);
        if (eol > p && eol[-1] == '\r')
            eol--;
        /* The offset: hex digits and a colon, equal to the bytes so far. */
        if (hexval(*q) < 0)
            fail_msg("%s dump: a line without an offset", what);
        for (; q < eol && hexval(*q) >= 0; q++)
            offset = offset * 16 + (size_t)hexval(*q);
        if (q >= eol || *q != ':')
            fail_msg("%s dump: no colon after the offset", what);
        if (offset != ex->len)
            fail_msg("%s dump: offset %zx, but %zu bytes before it", what, offset, ex->len);
        q++;
        /* The hex part ends at two spaces. */
        hex_end = q;
        while (hex_end + 1 < eol && !(hex_end[0] == ' ' && hex_end[1] == ' '))
            hex_end++;
        if (hex_end + 1 >= eol)
            fail_msg("%s dump, offset %zx: no ASCII column", what, offset);
        while (q < hex_end) {
            if (*q != ' ')
                fail_msg("%s dump, offset %zx: groups must be separated by a space", what, offset);
            q++;
            if (q >= hex_end || hexval(q[0]) < 0)
                fail_msg("%s dump, offset %zx: an empty group", what, offset);
            while (q < hex_end && *q != ' ') {
                if (q + 1 >= hex_end || hexval(q[0]) < 0 || hexval(q[1]) < 0)
                    fail_msg("%s dump, offset %zx: a group of odd length or not hex", what,
                             offset);
                if (ex->len >= sizeof(ex->bytes))
                    fail_msg("%s dump: more than %d bytes", what, DGRAM_MAX);
                ex->bytes[ex->len++] = (uint8_t)(hexval(q[0]) << 4 | hexval(q[1]));
                q += 2;
            }
        }
        count = ex->len - first;
        if (count == 0)
            fail_msg("%s dump, offset %zx: no bytes", what, offset);
        /* The ASCII column: the last 'count' characters, after blanks only. */
        if ((size_t)(eol - hex_end) < count + 2)
            fail_msg("%s dump, offset %zx: ASCII column too short", what, offset);
        ascii = eol - count;
        for (q = hex_end; q < ascii; q++)
            if (*q != ' ')
                fail_msg("%s dump, offset %zx: ASCII column has %zu characters, not %zu", what,
                         offset, (size_t)(eol - hex_end) - 2, count);
        for (size_t i = 0; i < count; i++) {
            uint8_t c = ex->bytes[first + i];
            char want = c >= 0x20 && c <= 0x7e ? (char)c : '.';
            if (ascii[i] != want)
                fail_msg("%s dump, offset %zx: ASCII column says '%c' for byte %02x", what,
                         offset + i, ascii[i], c);
        }
        p = (eol < b.end && *eol == '\r' ? eol + 1 : eol) + 1;
    }
}

/* Checks one documented example against the codec and returns it in *ex. */
static void check_example(const char *doc, const char *heading, struct example *ex)
{
    struct block blocks[2];
    uint8_t out[DGRAM_MAX];
    struct dgram d;
    char whybuf[128];
    const char *why = NULL;
    uint8_t *copy;
    size_t len;

    find_blocks(doc, heading, blocks, 2);
    parse_inputs(heading, blocks[0], ex);
    parse_dump(heading, blocks[1], ex);

    len = dgram_encode(&ex->d, ex->key, out);
    if (len == 0)
        fail_msg("%s: dgram_encode refuses the documented inputs", heading);
    if (len != ex->len)
        fail_msg("%s: the dump has %zu bytes, the encoder makes %zu", heading, ex->len, len);
    for (size_t i = 0; i < len; i++)
        if (out[i] != ex->bytes[i])
            fail_msg("%s: byte %zu (0x%zx) is %02x in the dump, %02x from the encoder", heading,
                     i, i, ex->bytes[i], out[i]);

    copy = dup_exact(ex->bytes, ex->len);
    if (dgram_parse(copy, ex->len, &d, whybuf, sizeof(whybuf), &why) != 0)
        fail_msg("%s: the documented datagram does not parse: %s", heading, why);
    assert_int_equal(d.type, ex->d.type);
    assert_true(d.reg_id == ex->d.reg_id && d.seq == ex->d.seq && d.state == ex->d.state);
    assert_int_equal(d.folder_len, ex->d.folder_len);
    assert_memory_equal(d.folder, ex->folder, d.folder_len);
    if (dgram_verify(copy, ex->len, ex->key) != 1)
        fail_msg("%s: the documented datagram's tag does not verify", heading);
    free(copy);
}

static void test_doc_examples_match_the_encoder(void **state)
{
    char *doc = read_doc("docs/udp.md");
    struct example notify, ack;

    (void)state;
    check_example(doc, "### Example: a notify", &notify);
    check_example(doc, "### Example: its ack", &ack);
    assert_int_equal(notify.d.type, DGRAM_NOTIFY);
    assert_int_equal(ack.d.type, DGRAM_ACK);
    /* The ack answers the notify: same registration, sequence number, folder, key. */
    assert_true(ack.d.reg_id == notify.d.reg_id && ack.d.seq == notify.d.seq);
    assert_string_equal(ack.folder, notify.folder);
    assert_memory_equal(ack.key, notify.key, DGRAM_KEY_LEN);
    /* The doc says only the type byte and the tag differ. */
    assert_int_equal(ack.len, notify.len);
    for (size_t i = 0; i < notify.len - DGRAM_TAG_LEN; i++)
        if (i != 3)
            assert_int_equal(ack.bytes[i], notify.bytes[i]);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_each_type),
        cmocka_unit_test(test_round_trip_folder_lengths_1_and_255),
        cmocka_unit_test(test_round_trip_extreme_integers),
        cmocka_unit_test(test_encode_layout_is_big_endian_at_fixed_offsets),
        cmocka_unit_test(test_encode_refuses_folder_length_0_and_256),
        cmocka_unit_test(test_encode_refuses_unknown_type),
        cmocka_unit_test(test_encode_refuses_zero_id_or_seq_outside_test),
        cmocka_unit_test(test_encode_refuses_what_parse_refuses),
        cmocka_unit_test(test_tag_verifies_with_its_key_only),
        cmocka_unit_test(test_verify_refuses_buffers_shorter_than_a_datagram),
        cmocka_unit_test(test_every_bit_flip_fails),
        cmocka_unit_test(test_replay_accepts_increasing),
        cmocka_unit_test(test_replay_refuses_equal_and_lower_and_keeps_last),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_extra_byte_fails),
        cmocka_unit_test(test_garbage_never_accepted),
        cmocka_unit_test(test_reason_too_short),
        cmocka_unit_test(test_reason_bad_magic),
        cmocka_unit_test(test_reason_unsupported_version),
        cmocka_unit_test(test_reason_unknown_type),
        cmocka_unit_test(test_reason_empty_folder_and_length_mismatch),
        cmocka_unit_test(test_reason_control_byte),
        cmocka_unit_test(test_reason_zero_id_or_seq_and_test_with_id),
        cmocka_unit_test(test_reason_fits_a_small_buffer),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_doc_examples_match_the_encoder),
    };

    init_keys();
    return cmocka_run_group_tests_name("datagram", tests, NULL, NULL);
}
