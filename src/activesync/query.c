/*
 * query.c — both forms of an ActiveSync query (see query.h).
 *
 * The base64 form is read with a bounded cursor over at most
 * AS_QUERY_MAX * 3 / 4 decoded bytes on the stack. Binary device ids (the
 * 12.1 clients send a 16-byte GUID) are kept in lower-case hex, so the
 * device id is always text, as the shard and the store want it.
 */
#include "activesync/query.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

/* MS-ASHTTP 2.2.1.1.1.1.2. */
static const char *const cmd_names[] = {
    [0] = "Sync", [1] = "SendMail", [2] = "SmartForward", [3] = "SmartReply",
    [4] = "GetAttachment", [9] = "FolderSync", [10] = "FolderCreate", [11] = "FolderDelete",
    [12] = "FolderUpdate", [13] = "MoveItems", [14] = "GetItemEstimate",
    [15] = "MeetingResponse", [16] = "Search", [17] = "Settings", [18] = "Ping",
    [19] = "ItemOperations", [20] = "Provision", [21] = "ResolveRecipients",
    [22] = "ValidateCert",
};

/* MS-ASHTTP 2.2.1.1.1.1.3: the command parameter tag carrying the user. */
#define PARAM_USER 8

const char *as_query_cmd_name(int code)
{
    if (code < 0 || code >= (int)(sizeof(cmd_names) / sizeof(cmd_names[0])))
        return NULL;
    return cmd_names[code];
}

int as_query_version_text(unsigned v, char *out, size_t outlen)
{
    /* The version byte is major * 10 + minor: 25 is 2.5, 121 is 12.1. */
    if (v < 20 || v > 255)
        return -1;
    snprintf(out, outlen, "%u.%u", v / 10, v % 10);
    return 0;
}

static int fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-' || c == ' ') /* an unescaped '+' arrives as a space */
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/*
 * Decodes base64 (standard or URL alphabet, '=' padding optional, the
 * query's %XX escapes undone first) into out. Returns the byte count or -1.
 */
static long b64_decode(const char *q, size_t qlen, unsigned char *out, size_t cap)
{
    char text[AS_QUERY_MAX + 1];
    unsigned acc = 0;
    int bits = 0;
    size_t n = 0;
    long tlen;

    memcpy(text, q, qlen);
    text[qlen] = '\0';
    tlen = util_url_decode(text, qlen);
    if (tlen < 0)
        return -1;
    while (tlen > 0 && text[tlen - 1] == '=')
        tlen--;
    for (long i = 0; i < tlen; i++) {
        int v = b64_value((unsigned char)text[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    /* A lone sextet (length % 4 == 1) cannot end a base64 text. */
    if (bits >= 6)
        return -1;
    return (long)n;
}

/* Copies a length-prefixed field of the binary query, as text (hex when not printable). */
static int field(const unsigned char **p, const unsigned char *end, char *out, size_t cap,
                 int hex_if_binary)
{
    size_t len, printable = 1;

    if (*p >= end)
        return -1;
    len = *(*p)++;
    if (len > (size_t)(end - *p))
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((*p)[i] < 0x21 || (*p)[i] > 0x7E)
            printable = 0;
    if (!printable && hex_if_binary) {
        if (len * 2 >= cap)
            return -1;
        for (size_t i = 0; i < len; i++)
            snprintf(out + 2 * i, 3, "%02x", (*p)[i]);
        out[len * 2] = '\0';
    } else {
        if (!printable || len >= cap)
            return -1;
        memcpy(out, *p, len);
        out[len] = '\0';
    }
    *p += len;
    return 0;
}

static int parse_base64(const char *q, size_t qlen, struct as_query *out, char *err,
                        size_t errlen)
{
    unsigned char bin[AS_QUERY_MAX];
    const unsigned char *p = bin, *end;
    long n = b64_decode(q, qlen, bin, sizeof(bin));
    const char *name;

    if (n < 0)
        return fail(err, errlen, "the query is neither Cmd=...&User=... nor valid base64");
    end = bin + n;
    /* Version, command, locale (2 bytes), device id length: the least a query is. */
    if (n < 5)
        return fail(err, errlen, "the base64 query is shorter than its fixed fields");
    out->base64 = 1;
    out->version = p[0];
    out->cmd = p[1];
    p += 4; /* the locale (uint16 LE) is not used */
    name = as_query_cmd_name(out->cmd);
    snprintf(out->cmd_name, sizeof(out->cmd_name), "%s", name ? name : "?");
    if (name == NULL)
        out->cmd = -1;
    if (field(&p, end, out->device, sizeof(out->device), 1) < 0 || out->device[0] == '\0')
        return fail(err, errlen, "the base64 query's device id is missing, truncated or too long");
    if (p >= end)
        return fail(err, errlen, "the base64 query ends before its policy key length");
    if (*p == 4) {
        if (end - p < 5)
            return fail(err, errlen, "the base64 query's policy key is truncated");
        out->policy_key = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 |
                          (uint32_t)p[4] << 24;
        p += 5;
    } else if (*p == 0) {
        p++;
    } else {
        return fail(err, errlen, "the base64 query's policy key length must be 0 or 4");
    }
    if (field(&p, end, out->device_type, sizeof(out->device_type), 0) < 0)
        return fail(err, errlen, "the base64 query's device type is missing, truncated or not text");
    while (p < end) {
        unsigned tag = *p++;
        size_t len;
        if (p >= end)
            return fail(err, errlen, "a command parameter of the base64 query is truncated");
        len = *p++;
        if (len > (size_t)(end - p))
            return fail(err, errlen, "a command parameter of the base64 query is truncated");
        if (tag == PARAM_USER) {
            if (len >= sizeof(out->user) || memchr(p, 0, len))
                return fail(err, errlen, "the base64 query's User is too long or binary");
            memcpy(out->user, p, len);
            out->user[len] = '\0';
        }
        p += len;
    }
    return 0;
}

/* One parameter of the plain form; -ENOENT when absent. */
static int param(const char *q, size_t qlen, const char *name, char *out, size_t cap,
                 char *err, size_t errlen)
{
    long n = util_query_param(q, qlen, name, out, cap);

    if (n == -EINVAL) {
        snprintf(err, errlen, "query parameter %s is badly encoded or too long", name);
        return -1;
    }
    if (n < 0) {
        out[0] = '\0';
        return -ENOENT;
    }
    return 0;
}

int as_query_parse(const char *q, size_t qlen, struct as_query *out, char *err, size_t errlen)
{
    const char *cmdv;

    memset(out, 0, sizeof(*out));
    if (q == NULL || qlen == 0)
        return fail(err, errlen, "the query is empty: ?Cmd=Ping&User=...&DeviceId=...&DeviceType=...");
    if (qlen > AS_QUERY_MAX)
        return fail(err, errlen, "the query is longer than 1024 bytes");
    if (util_query_raw(q, qlen, "Cmd", &cmdv) < 0)
        return parse_base64(q, qlen, out, err, errlen);
    if (param(q, qlen, "Cmd", out->cmd_name, sizeof(out->cmd_name), err, errlen) == -1 ||
        param(q, qlen, "User", out->user, sizeof(out->user), err, errlen) == -1 ||
        param(q, qlen, "DeviceId", out->device, sizeof(out->device), err, errlen) == -1 ||
        param(q, qlen, "DeviceType", out->device_type, sizeof(out->device_type), err, errlen) == -1)
        return -1;
    out->cmd = -1;
    for (size_t i = 0; i < sizeof(cmd_names) / sizeof(cmd_names[0]); i++)
        if (cmd_names[i] && strcasecmp(cmd_names[i], out->cmd_name) == 0)
            out->cmd = (int)i;
    if (out->cmd == AS_CMD_PING && out->device[0] == '\0')
        return fail(err, errlen, "query parameter DeviceId is required");
    return 0;
}
