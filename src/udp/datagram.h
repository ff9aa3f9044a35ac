/*
 * datagram.h — the UDP new-mail datagram: encoding, parsing, its tag and
 * the receiver's replay check. Shared by nudged (sends notifications, takes
 * acks) and nudge (listen, doctor). docs/udp.md documents it byte by byte.
 *
 * Layout, version 1 (integers big-endian, N = folder length):
 *
 *   offset  size  field
 *   0       2     magic "nd" (0x6e 0x64)
 *   2       1     version, 1
 *   3       1     type: 1 notify (server -> client), 2 ack (client -> server),
 *                 3 test (server -> client, POST /v1/udp/test)
 *   4       8     registration id (never 0; 0 in a test datagram)
 *   12      8     sequence number (per registration, grows by one per datagram
 *                 sent; in an ack, the sequence number of the notify it acks)
 *   20      8     folder state (notify: the folder's new state; ack: the state
 *                 the client now holds; test: 0)
 *   28      1     N, the folder name's length, 1..255 (test: the nonce's)
 *   29      N     folder name (test: the nonce the client asked for)
 *   29+N    16    tag: HMAC-SHA256(key, bytes 0 .. 28+N), first 16 bytes
 *
 * So a datagram is 45 + N bytes, at most 300 (328 on the wire over IPv4):
 * under the 512-byte payload long taken as safe for UDP (every IPv4 host
 * accepts 576-byte datagrams) and far under IPv6's 1280-byte minimum MTU,
 * so in practice it is never fragmented.
 *
 * The key is the registration's 32 random bytes, handed to the client once
 * in the answer to POST /v1/udp. A test datagram proves only that UDP gets
 * through; it is tagged with an all-zero key and must never be taken for a
 * notification.
 *
 * Replay: a receiver keeps the highest sequence number it accepted and
 * refuses any datagram that does not exceed it (dgram_replay_check). Resends
 * carry new sequence numbers, so a resend is never mistaken for a replay.
 */
#ifndef NUDGE_DATAGRAM_H
#define NUDGE_DATAGRAM_H

#include <stddef.h>
#include <stdint.h>

#define DGRAM_VERSION 1
#define DGRAM_KEY_LEN 32
#define DGRAM_TAG_LEN 16
#define DGRAM_HEADER_LEN 29
#define DGRAM_FOLDER_MAX 255
#define DGRAM_MIN (DGRAM_HEADER_LEN + 1 + DGRAM_TAG_LEN)
#define DGRAM_MAX (DGRAM_HEADER_LEN + DGRAM_FOLDER_MAX + DGRAM_TAG_LEN)

enum dgram_type {
    DGRAM_NOTIFY = 1,
    DGRAM_ACK = 2,
    DGRAM_TEST = 3,
};

struct dgram {
    uint8_t type;            /* enum dgram_type */
    uint64_t reg_id;
    uint64_t seq;
    uint64_t state;
    const char *folder;      /* folder[0..folder_len): not NUL-terminated */
    size_t folder_len;
};

/* The key test datagrams are tagged with. */
extern const uint8_t dgram_test_key[DGRAM_KEY_LEN];

/*
 * Encodes d, tagged with 'key', into out. Returns the datagram's length, or
 * 0 when d cannot be encoded (unknown type, folder empty or longer than 255
 * bytes or holding a control byte, a zero registration id or sequence number
 * outside a test, a non-zero id in a test: whatever dgram_parse refuses) or
 * when computing the tag failed.
 */
size_t dgram_encode(const struct dgram *d, const uint8_t key[DGRAM_KEY_LEN],
                    uint8_t out[DGRAM_MAX]);

/*
 * Parses buf[0..len) into d without checking the tag (the receiver needs the
 * registration id to find the key). d->folder points into buf. Returns 0, or
 * -1 with *why set to a short reason ("too short: 12 bytes, at least 46",
 * "bad magic", "unsupported version 7", ...; a static string or 'whybuf').
 * Checks: magic, version, type, length = 45 + N exactly, N >= 1, no control
 * bytes in the folder, a non-zero id and sequence number except in a test
 * (whose id must be 0).
 */
int dgram_parse(const uint8_t *buf, size_t len, struct dgram *d, char *whybuf, size_t whylen,
                const char **why);

/*
 * Does the tag of buf[0..len) (a datagram that dgram_parse accepted) match
 * 'key'? Compared in constant time. Returns 1 yes, 0 no (also when the tag
 * cannot be computed: a datagram is never taken on trust).
 */
int dgram_verify(const uint8_t *buf, size_t len, const uint8_t key[DGRAM_KEY_LEN]);

/*
 * The receiver's replay check: accepts seq (returns 0 and sets *last = seq)
 * only when it exceeds *last, the highest sequence number accepted so far
 * (0 before the first); returns -1 for a replayed or reordered datagram.
 */
int dgram_replay_check(uint64_t *last, uint64_t seq);

/* "notify", "ack", "test", or "unknown". */
const char *dgram_type_name(unsigned type);

#endif
