/*
 * wsmsg.c — the WebSocket wire of /v1/ws; see wsmsg.h.
 */
#include "stream/wsmsg.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/jsonw.h"
#include "common/xalloc.h"
#include "push/check.h"

/* RFC 6455 1.3: the GUID every accept key is made with. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#define ERR_URN "urn:ietf:params:jmap:error:"

int wsmsg_accept(const char *key, char out[29])
{
    unsigned char raw[64], md[EVP_MAX_MD_SIZE];
    char joined[64];
    unsigned mdlen = 0;
    size_t klen = strlen(key);
    int n;

    /* 16 bytes in base64: 24 characters, the last two "==". */
    if (klen != 24 || key[22] != '=' || key[23] != '=')
        return -1;
    n = EVP_DecodeBlock(raw, (const unsigned char *)key, 24);
    if (n != 18) /* DecodeBlock counts the padding as bytes */
        return -1;
    memcpy(joined, key, 24);
    memcpy(joined + 24, ws_guid, sizeof(ws_guid) - 1);
    if (EVP_Digest(joined, 24 + sizeof(ws_guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, md, 20);
    return 0;
}

int wsmsg_has_token(const char *list, const char *token)
{
    size_t tl = strlen(token);

    for (const char *p = list; p && *p;) {
        const char *end;
        size_t n;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        end = p;
        while (*end && *end != ',')
            end++;
        n = (size_t)(end - p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == tl && strncasecmp(p, token, tl) == 0)
            return 1;
        p = end;
    }
    return 0;
}

size_t wsmsg_frame_head(unsigned char out[10], unsigned opcode, uint64_t len)
{
    out[0] = (unsigned char)(0x80 | opcode); /* FIN: nudged never fragments */
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    return 10;
}

/* The length of the head of a frame whose second byte is b1. */
static unsigned head_len(unsigned b1)
{
    unsigned len7 = b1 & 0x7f;

    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

void wsmsg_scan(struct wsmsg_scan *s, const unsigned char *p, size_t n)
{
    while (n > 0 && !s->bad) {
        if (s->have < 2 || s->have < head_len(s->b1)) {
            unsigned char b = *p++;
            n--;
            if (s->have == 0) {
                s->b0 = b;
            } else if (s->have == 1) {
                s->b1 = b;
                s->left = (b & 0x7f) < 126 ? (b & 0x7f) : 0;
            } else if (s->have < head_len(s->b1) - (s->b1 & 0x80 ? 4 : 0)) {
                s->left = (s->left << 8) | b; /* the extended length, big-endian */
            }
            s->have++;
            if (s->have >= 2 && s->have == head_len(s->b1)) {
                unsigned op = s->b0 & 0x0f;
                if (op < 0x8) /* a data frame (continuation, text, binary) */
                    s->frag = !(s->b0 & 0x80);
                else if (!(s->b0 & 0x80))
                    s->bad = 1;
                else if ((s->b1 & 0x7f) > 125)
                    s->bad = 2;
                if (s->left == 0)
                    s->have = 0;
            }
            continue;
        }
        {
            size_t k = n < s->left ? n : (size_t)s->left;
            p += k;
            n -= k;
            s->left -= k;
            if (s->left == 0)
                s->have = 0;
        }
    }
}

const char *wsmsg_scan_bad(const struct wsmsg_scan *s)
{
    return s->bad == 1 ? "a control frame must not be fragmented (RFC 6455 5.5)"
                       : "a control frame carries at most 125 bytes (RFC 6455 5.5)";
}

static void fail(struct wsmsg *m, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct wsmsg *m, const char *type, const char *fmt, ...)
{
    va_list ap;

    m->type = WSMSG_ERROR;
    m->err_type = type;
    va_start(ap, fmt);
    vsnprintf(m->detail, sizeof(m->detail), fmt, ap);
    va_end(ap);
}

static void read_enable(struct wsmsg *m, json_t *o, size_t max_types)
{
    json_t *types = json_object_get(o, "dataTypes"), *ps = json_object_get(o, "pushState");
    size_t i;
    json_t *v;

    if (ps && !json_is_null(ps)) {
        if (!json_is_string(ps)) {
            fail(m, ERR_URN "notRequest", "pushState must be a string");
            return;
        }
        m->push_state = json_string_value(ps);
    }
    if (types == NULL || json_is_null(types)) {
        m->all = 1;
        m->type = WSMSG_PUSH_ENABLE;
        return;
    }
    if (!json_is_array(types)) {
        fail(m, ERR_URN "notRequest", "dataTypes must be null or an array of folder names");
        return;
    }
    if (json_array_size(types) > max_types) {
        fail(m, ERR_URN "limit", "dataTypes names more than [ping] max_folders (%zu) folders",
             max_types);
        return;
    }
    m->types = xcalloc(json_array_size(types) + 1, sizeof(*m->types));
    json_array_foreach(types, i, v) {
        const char *why;
        if (!json_is_string(v)) {
            fail(m, ERR_URN "notRequest", "dataTypes[%zu] is not a string", i);
            return;
        }
        why = check_folder_name(json_string_value(v), json_string_length(v));
        if (why) {
            fail(m, ERR_URN "notRequest", "dataTypes[%zu]: folder %.64s %s", i,
                 json_string_value(v), why);
            return;
        }
        m->types[m->ntypes++] = json_string_value(v);
    }
    if (m->ntypes == 0) {
        fail(m, ERR_URN "notRequest", "dataTypes names no folder: give folder names, or null for all");
        return;
    }
    m->type = WSMSG_PUSH_ENABLE;
}

void wsmsg_parse(const char *buf, size_t len, size_t max_types, struct wsmsg *m)
{
    json_error_t je;
    json_t *t;
    const char *type;

    memset(m, 0, sizeof(*m));
    m->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (m->root == NULL) {
        fail(m, ERR_URN "notJSON", "not JSON: %s (at byte %d)", je.text, je.position);
        return;
    }
    if (!json_is_object(m->root)) {
        fail(m, ERR_URN "notRequest", "a message is a JSON object with an @type");
        return;
    }
    t = json_object_get(m->root, "@type");
    if (!json_is_string(t)) {
        fail(m, ERR_URN "notRequest", "a message is a JSON object with an @type");
        return;
    }
    type = json_string_value(t);
    if (strcmp(type, "WebSocketPushEnable") == 0) {
        read_enable(m, m->root, max_types);
    } else if (strcmp(type, "WebSocketPushDisable") == 0) {
        m->type = WSMSG_PUSH_DISABLE;
    } else if (strcmp(type, "Request") == 0) {
        json_t *id = json_object_get(m->root, "id");
        if (json_is_string(id))
            m->request_id = json_string_value(id);
        fail(m, ERR_URN "unknownCapability",
             "nudge serves push only: send JMAP API requests to the JMAP server");
    } else {
        fail(m, ERR_URN "notRequest",
             "unknown @type %.64s: expected WebSocketPushEnable or WebSocketPushDisable", type);
    }
}

void wsmsg_free(struct wsmsg *m)
{
    free(m->types);
    json_decref(m->root);
    m->types = NULL;
    m->root = NULL;
}

void wsmsg_request_error(struct jsonw *w, const struct wsmsg *m)
{
    jw_obj_begin(w);
    jw_key(w, "@type");
    jw_str(w, "RequestError");
    if (m->request_id) {
        jw_key(w, "requestId");
        jw_str(w, m->request_id);
    }
    jw_key(w, "type");
    jw_str(w, m->err_type);
    jw_key(w, "status");
    jw_u64(w, 400);
    jw_key(w, "detail");
    jw_str(w, m->detail);
    jw_obj_end(w);
}
