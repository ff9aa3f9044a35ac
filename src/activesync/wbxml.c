/*
 * wbxml.c — the Ping command's WBXML, by hand (see wbxml.h).
 *
 * WBXML 1.3 (WAP-192): a header (version, public id, charset, string table
 * length, each a multi-byte integer but the version), then tokens: a tag
 * byte (bit 0x40: it has content; bit 0x80: attributes, never in
 * ActiveSync), END (0x01), SWITCH_PAGE (0x00, page), inline strings
 * STR_I (0x03 ... 0x00) and OPAQUE (0xC3, length, bytes). Every other
 * global token (entities, literals, extensions, PIs, string table
 * references) is refused: ActiveSync clients never send them.
 *
 * The reader is a cursor over the caller's buffer with no allocation and
 * no recursion deeper than the Ping document's three levels, so a hostile
 * body costs its length in time and nothing in memory.
 */
#include "activesync/wbxml.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

#define T_SWITCH_PAGE 0x00
#define T_END 0x01
#define T_STR_I 0x03
#define T_OPAQUE 0xC3
#define TAG_CONTENT 0x40
#define TAG_ATTRS 0x80

/* UTF-8, IANA MIBenum 106: the only charset ActiveSync uses. */
#define CHARSET_UTF8 106
/* A Ping's string table is empty; anything longer than this is not a Ping. */
#define STRTBL_MAX 256

struct rd {
    const uint8_t *start, *p, *end;
    uint8_t page;
    char *err;
    size_t errlen;
};

static int fail(struct rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct rd *r, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(r->err, r->errlen, "WBXML at byte %zu: %s", (size_t)(r->p - r->start), msg);
    return -1;
}

/* A multi-byte unsigned integer (at most 5 bytes, 32 bits). */
static int mb_u32(struct rd *r, uint32_t *out, const char *what)
{
    uint64_t v = 0;

    for (int i = 0; i < 5; i++) {
        if (r->p >= r->end)
            return fail(r, "truncated %s", what);
        uint8_t b = *r->p++;
        v = (v << 7) | (b & 0x7F);
        if (!(b & 0x80)) {
            if (v > UINT32_MAX)
                return fail(r, "%s does not fit 32 bits", what);
            *out = (uint32_t)v;
            return 0;
        }
    }
    return fail(r, "%s longer than 5 bytes", what);
}

/* SWITCH_PAGE and its page byte. */
static int switch_page(struct rd *r)
{
    if (r->end - r->p < 2)
        return fail(r, "truncated SWITCH_PAGE");
    r->page = r->p[1];
    r->p += 2;
    return 0;
}

/*
 * The next tag or END, after any SWITCH_PAGE. *tag is the tag byte (its
 * flags included), or T_END. -1 on anything else.
 */
static int next_token(struct rd *r, unsigned *tag)
{
    for (;;) {
        if (r->p >= r->end)
            return fail(r, "truncated document (an element is not closed)");
        uint8_t b = *r->p;
        if (b == T_SWITCH_PAGE) {
            if (switch_page(r) < 0)
                return -1;
            continue;
        }
        if (b == T_END) {
            r->p++;
            *tag = T_END;
            return 0;
        }
        if (b == T_STR_I || b == T_OPAQUE)
            return fail(r, "text where an element was expected");
        if ((b & 0x3F) < 5)
            return fail(r, "global token 0x%02x is not used by ActiveSync", b);
        if (b & TAG_ATTRS)
            return fail(r, "attributes are not used by ActiveSync");
        r->p++;
        *tag = b;
        return 0;
    }
}

/* The text content of an element whose tag said it has content, through its END. */
static int text(struct rd *r, char *out, size_t cap, const char *what)
{
    size_t n = 0;

    for (;;) {
        if (r->p >= r->end)
            return fail(r, "truncated %s", what);
        uint8_t b = *r->p;
        if (b == T_END) {
            r->p++;
            break;
        }
        if (b == T_SWITCH_PAGE) {
            if (switch_page(r) < 0)
                return -1;
            continue;
        }
        if (b == T_STR_I) {
            const uint8_t *s = ++r->p;
            const uint8_t *z = memchr(s, 0, (size_t)(r->end - s));
            if (z == NULL)
                return fail(r, "unterminated string in %s", what);
            if ((size_t)(z - s) >= cap - n)
                return fail(r, "%s longer than %zu bytes", what, cap - 1);
            memcpy(out + n, s, (size_t)(z - s));
            n += (size_t)(z - s);
            r->p = z + 1;
        } else if (b == T_OPAQUE) {
            uint32_t len;
            r->p++;
            if (mb_u32(r, &len, "OPAQUE length") < 0)
                return -1;
            if (len > (size_t)(r->end - r->p))
                return fail(r, "OPAQUE longer than the document");
            if (len >= cap - n)
                return fail(r, "%s longer than %zu bytes", what, cap - 1);
            if (memchr(r->p, 0, len))
                return fail(r, "NUL byte in %s", what);
            memcpy(out + n, r->p, len);
            n += len;
            r->p += len;
        } else {
            return fail(r, "%s must hold text only", what);
        }
    }
    out[n] = '\0';
    return 0;
}

/* Checks that tag t is code page 13's 'want' (any content flag). */
static int is_tag(const struct rd *r, unsigned t, unsigned want)
{
    return t != T_END && r->page == AS_PAGE_PING && (t & 0x3F) == want;
}

static int wrong_tag(struct rd *r, unsigned t, const char *where)
{
    r->p--; /* point at the tag */
    if (r->page != AS_PAGE_PING)
        return fail(r, "element 0x%02x of code page %u in %s (Ping is code page 13)", t & 0x3F,
                    r->page, where);
    return fail(r, "unexpected element 0x%02x in %s", t & 0x3F, where);
}

static int folder(struct rd *r, struct as_ping_req *q)
{
    struct as_folder scratch, *f = q->nfolders < q->cap ? &q->folders[q->nfolders] : &scratch;
    int have_id = 0, have_class = 0;
    unsigned t;

    memset(f, 0, sizeof(*f));
    for (;;) {
        if (next_token(r, &t) < 0)
            return -1;
        if (t == T_END)
            break;
        if (is_tag(r, t, AS_TAG_ID) && (t & TAG_CONTENT) && !have_id) {
            if (text(r, f->id, sizeof(f->id), "Folder/Id") < 0)
                return -1;
            have_id = 1;
        } else if (is_tag(r, t, AS_TAG_CLASS) && !have_class) {
            if ((t & TAG_CONTENT) && text(r, f->cls, sizeof(f->cls), "Folder/Class") < 0)
                return -1;
            have_class = 1;
        } else {
            return wrong_tag(r, t, "Folder (Id and Class, each once)");
        }
    }
    if (!have_id || f->id[0] == '\0')
        return fail(r, "a Folder without an Id");
    q->nfolders++;
    return 0;
}

static int folders(struct rd *r, struct as_ping_req *q)
{
    unsigned t;

    for (;;) {
        if (next_token(r, &t) < 0)
            return -1;
        if (t == T_END)
            break;
        if (!is_tag(r, t, AS_TAG_FOLDER) || !(t & TAG_CONTENT))
            return wrong_tag(r, t, "Folders (Folder elements only)");
        if (folder(r, q) < 0)
            return -1;
    }
    if (q->nfolders == 0)
        return fail(r, "Folders names no Folder");
    return 0;
}

int as_wbxml_decode_ping(const uint8_t *buf, size_t len, struct as_ping_req *q, char *err,
                         size_t errlen)
{
    struct rd r = {buf, buf, buf + len, 0, err, errlen};
    uint32_t pubid, charset, strtbl;
    int have_hb = 0;
    unsigned t;

    q->heartbeat = 0;
    q->has_folders = 0;
    q->nfolders = 0;
    if (len < 1)
        return fail(&r, "empty document");
    if (buf[0] > 0x03)
        return fail(&r, "WBXML version 0x%02x (1.3 is 0x03)", buf[0]);
    r.p++;
    if (mb_u32(&r, &pubid, "public id") < 0 || (pubid == 0 && mb_u32(&r, &pubid, "public id") < 0))
        return -1;
    if (mb_u32(&r, &charset, "charset") < 0)
        return -1;
    if (charset != CHARSET_UTF8)
        return fail(&r, "charset %u (ActiveSync is UTF-8, 106)", charset);
    if (mb_u32(&r, &strtbl, "string table length") < 0)
        return -1;
    if (strtbl > STRTBL_MAX || strtbl > (size_t)(r.end - r.p))
        return fail(&r, "string table of %u bytes", strtbl);
    r.p += strtbl;
    if (next_token(&r, &t) < 0)
        return -1;
    if (!is_tag(&r, t, AS_TAG_PING))
        return t == T_END ? fail(&r, "END where the Ping element was expected")
                          : wrong_tag(&r, t, "the document (its root must be Ping)");
    if (t & TAG_CONTENT) {
        for (;;) {
            if (next_token(&r, &t) < 0)
                return -1;
            if (t == T_END)
                break;
            if (is_tag(&r, t, AS_TAG_HEARTBEAT) && (t & TAG_CONTENT) && !have_hb) {
                char num[12];
                char *e;
                unsigned long v;
                if (text(&r, num, sizeof(num), "HeartbeatInterval") < 0)
                    return -1;
                v = strtoul(num, &e, 10);
                if (num[0] < '0' || num[0] > '9' || *e != '\0' || v > UINT32_MAX || v == 0)
                    return fail(&r, "HeartbeatInterval must be a positive whole number of seconds");
                q->heartbeat = (uint32_t)v;
                have_hb = 1;
            } else if (is_tag(&r, t, AS_TAG_FOLDERS) && (t & TAG_CONTENT) && !q->has_folders) {
                q->has_folders = 1;
                if (folders(&r, q) < 0)
                    return -1;
            } else {
                return wrong_tag(&r, t, "Ping (HeartbeatInterval and Folders, each once)");
            }
        }
    }
    if (r.p != r.end)
        return fail(&r, "%zu bytes after the Ping element", (size_t)(r.end - r.p));
    return 0;
}

/* ---- answers ------------------------------------------------------- */

struct wr {
    uint8_t *b;
    size_t n, cap;
};

static void put(struct wr *w, const void *p, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2;
        w->b = xrealloc(w->b, w->cap);
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void put_byte(struct wr *w, uint8_t b)
{
    put(w, &b, 1);
}

/* <tag>text</tag> as tag|content, STR_I text 00, END. */
static void put_text_elt(struct wr *w, uint8_t tag, const char *s)
{
    put_byte(w, tag | TAG_CONTENT);
    put_byte(w, T_STR_I);
    put(w, s, strlen(s) + 1);
    put_byte(w, T_END);
}

uint8_t *as_wbxml_encode_ping(const struct as_ping_answer *a, size_t *len)
{
    /* WBXML 1.3, public id 1 (unknown), UTF-8, no string table; SWITCH_PAGE 13. */
    static const uint8_t head[] = {0x03, 0x01, 0x6A, 0x00, T_SWITCH_PAGE, AS_PAGE_PING};
    struct wr w = {xmalloc(64), 0, 64};
    char num[16];

    put(&w, head, sizeof(head));
    put_byte(&w, AS_TAG_PING | TAG_CONTENT);
    snprintf(num, sizeof(num), "%u", a->status);
    put_text_elt(&w, AS_TAG_STATUS, num);
    if (a->nfolders > 0) {
        put_byte(&w, AS_TAG_FOLDERS | TAG_CONTENT);
        for (size_t i = 0; i < a->nfolders; i++)
            put_text_elt(&w, AS_TAG_FOLDER, a->folders[i]);
        put_byte(&w, T_END);
    }
    if (a->heartbeat) {
        snprintf(num, sizeof(num), "%u", a->heartbeat);
        put_text_elt(&w, AS_TAG_HEARTBEAT, num);
    }
    if (a->max_folders) {
        snprintf(num, sizeof(num), "%u", a->max_folders);
        put_text_elt(&w, AS_TAG_MAX_FOLDERS, num);
    }
    put_byte(&w, T_END);
    *len = w.n;
    return w.b;
}
