/*
 * wbxml.h — the WBXML of the ActiveSync Ping command (MS-ASCMD 2.2.1.13,
 * MS-ASWBXML code page 13), decoded and encoded by hand.
 *
 * Only one code page of one command is spoken, so the token stream is read
 * with a bounded cursor and no allocation: a Ping is a few dozen bytes, and
 * its sender is on the Internet. docs/activesync.md says why this is not
 * libwbxml2's converter (which the tests and the fuzz target use as the
 * referee for both directions).
 */
#ifndef NUDGE_AS_WBXML_H
#define NUDGE_AS_WBXML_H

#include <stddef.h>
#include <stdint.h>

/* Code page 13 (Ping) tags. */
enum {
    AS_TAG_PING = 0x05,
    AS_TAG_STATUS = 0x07,
    AS_TAG_HEARTBEAT = 0x08,
    AS_TAG_FOLDERS = 0x09,
    AS_TAG_FOLDER = 0x0A,
    AS_TAG_ID = 0x0B,
    AS_TAG_CLASS = 0x0C,
    AS_TAG_MAX_FOLDERS = 0x0D,
};
#define AS_PAGE_PING 13

/* An ActiveSync folder Id: the servers we front use short ids; 64 bytes is generous. */
#define AS_ID_MAX 64

struct as_folder {
    char id[AS_ID_MAX + 1];
    char cls[16];          /* "Email", "Calendar", "Contacts", "Tasks", "Notes"; may be "" */
};

/* A decoded Ping request. */
struct as_ping_req {
    uint32_t heartbeat;    /* seconds; 0: not given */
    int has_folders;       /* a Folders element was present */
    size_t nfolders;       /* Folder elements seen (may exceed cap: only cap are kept) */
    struct as_folder *folders;
    size_t cap;            /* capacity of folders, the caller's */
};

/*
 * Decodes a Ping document of len bytes into q (q->folders and q->cap set by
 * the caller; folders beyond cap are counted, not kept). 0, or -1 with a
 * sentence in err naming the offset and what was wrong (Status 4).
 */
int as_wbxml_decode_ping(const uint8_t *buf, size_t len, struct as_ping_req *q, char *err,
                         size_t errlen);

/* What an answer carries besides its status. */
struct as_ping_answer {
    unsigned status;       /* 1..8 */
    const char *const *folders; /* Status 2: the changed folder Ids */
    size_t nfolders;
    uint32_t heartbeat;    /* Status 5: the bound; 0: none */
    uint32_t max_folders;  /* Status 6; 0: none */
};

/*
 * Encodes a's <Ping><Status>..</Status>...</Ping>. Returns a malloc'd
 * buffer (the caller frees it) and its length in *len.
 */
uint8_t *as_wbxml_encode_ping(const struct as_ping_answer *a, size_t *len);

#endif
