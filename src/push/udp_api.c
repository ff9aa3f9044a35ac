/*
 * udp_api.c — the HTTP side of UDP notifications: POST /v1/udp (register),
 * DELETE /v1/udp/{device} (end), POST /v1/udp/test (a reachability test).
 * The rules live in udp.c; this file parses, checks and answers.
 *
 * Where datagrams may go is the one security question here: nudged sends
 * them to the address the request came from, and to another host only when
 * [udp] allowed_hosts covers it. Otherwise any user could aim a stream of
 * resends (or test datagrams) at a third party. A datagram is never larger
 * than the request that caused it, so nothing here amplifies traffic.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "http/request.h"
#include "push/datagram.h"
#include "push/handlers.h"
#include "push/udp.h"
#include "server/conn.h"
#include "server/router.h"
#include "server/server.h"
#include "session/session.h"
#include "shard/shard.h"

/* A test nonce: long enough for 128 random bits in any text form, short for a datagram. */
#define NONCE_MAX 64

static void bad_request(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad_request(struct conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    conn_respond_error(c, 400, "bad-request", msg);
}

/* 501 when UDP is off. Returns 1 when it answered. */
static int refuse_if_off(struct conn *c)
{
    if (c->srv->udp)
        return 0;
    conn_respond_error(c, 501, "udp-disabled",
                       "UDP notifications are off on this server ([udp] listen is empty): hold "
                       "a ping or poll GET /v1/state instead");
    return 1;
}

/* Parses the body as a JSON object. NULL after answering. */
static json_t *parse_body(struct conn *c, struct http_req *r)
{
    json_error_t e;
    json_t *root;

    if (r->body_len == 0) {
        bad_request(c, "the body must be a JSON object");
        return NULL;
    }
    root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
    if (root == NULL) {
        bad_request(c, "malformed JSON at line %d column %d: %s", e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        bad_request(c, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/*
 * Where datagrams for this request go: the request's source address, or
 * "host" when [udp] allowed_hosts covers it, at "port". 0, or -1 after answering.
 */
static int target(struct conn *c, json_t *root, struct sockaddr_storage *ss)
{
    struct server *s = c->srv;
    json_t *port = json_object_get(root, "port"), *host = json_object_get(root, "host");
    int len = sizeof(*ss);
    char shown[64];

    if (port == NULL) {
        bad_request(c, "port is required: the UDP port the device receives on");
        return -1;
    }
    if (!json_is_integer(port) || json_integer_value(port) < 1 ||
        json_integer_value(port) > 65535) {
        bad_request(c, "port must be a whole number from 1 to 65535");
        return -1;
    }
    memset(ss, 0, sizeof(*ss));
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)ss, &len) != 0) {
        conn_respond_error(c, 503, "unavailable", "the connection's address is unknown");
        return -1;
    }
    if (host != NULL) {
        struct sockaddr_storage h;
        const char *text = json_string_value(host);
        memset(&h, 0, sizeof(h));
        if (!json_is_string(host) || json_string_length(host) >= INET6_ADDRSTRLEN) {
            bad_request(c, "host must be an IPv4 or IPv6 address as a string");
            return -1;
        }
        if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&h)->sin_addr) == 1) {
            h.ss_family = AF_INET;
        } else if (inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&h)->sin6_addr) == 1) {
            h.ss_family = AF_INET6;
        } else {
            bad_request(c, "host must be an IPv4 or IPv6 address (names are not resolved)");
            return -1;
        }
        /* The request's own address is always fine ('text' is one address: a list of one). */
        if (!util_prefix_list_match(s->cfg->udp_allowed_hosts, (struct sockaddr *)&h) &&
            !util_prefix_list_match(text, (struct sockaddr *)ss)) {
            char msg[200];
            snprintf(msg, sizeof(msg),
                     "datagrams go to the address that registers; %s is not within [udp] "
                     "allowed_hosts",
                     text);
            conn_respond_error(c, 403, "host-not-allowed", msg);
            return -1;
        }
        *ss = h;
    }
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)json_integer_value(port));
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)json_integer_value(port));
    if (udp_target(s, ss) < 0) {
        bad_request(c, "this server's UDP socket (%s) cannot send to %s", udp_bound_addr(s, NULL),
                    util_format_addr((struct sockaddr *)ss, shown, sizeof(shown)));
        return -1;
    }
    return 0;
}

/*
 * The folders: ["INBOX", ...] (the device holds their current states) or
 * {"INBOX": "17", ...}. Fills *out (names borrowed from root). 0, or -1
 * after answering.
 */
static int parse_folders(struct conn *c, json_t *root, const char *user, struct store_folder **out,
                         size_t *n)
{
    struct server *s = c->srv;
    json_t *f = json_object_get(root, "folders"), *v;
    const char *name;
    size_t count, i = 0;
    char q[80];

    if (f == NULL) {
        bad_request(c, "folders is required: the folders to hear about");
        return -1;
    }
    if (!json_is_array(f) && !json_is_object(f)) {
        bad_request(c, "folders must be an array of names or an object of names and states");
        return -1;
    }
    count = json_is_array(f) ? json_array_size(f) : json_object_size(f);
    if (count == 0) {
        bad_request(c, "folders must name at least one folder");
        return -1;
    }
    if (count > s->cfg->ping_max_folders) {
        char body[96];
        int len = snprintf(body, sizeof(body), "{\"status\":\"too-many-folders\",\"max\":%u}",
                           s->cfg->ping_max_folders);
        conn_respond(c, 400, NULL, body, (size_t)len);
        return -1;
    }
    *out = xcalloc(count, sizeof(**out));
    if (json_is_array(f)) {
        json_array_foreach(f, i, v) {
            const char *why;
            if (!json_is_string(v)) {
                bad_request(c, "folders[%zu] must be a folder name (a string)", i);
                return -1;
            }
            name = json_string_value(v);
            why = strlen(name) != json_string_length(v) ? "must not contain NUL"
                                                        : check_folder_name(name, strlen(name));
            if (why) {
                bad_request(c, "folders[%zu] %s", i, why);
                return -1;
            }
            for (size_t j = 0; j < i; j++)
                if (strcmp((*out)[j].name, name) == 0) {
                    bad_request(c, "folders names %s twice", log_q(q, sizeof(q), name));
                    return -1;
                }
            (*out)[i].name = name;
            (*out)[i].state = store_get(s->store, user, name);
        }
    } else {
        json_object_foreach(f, name, v) {
            const char *why = check_folder_name(name, strlen(name));
            if (why) {
                bad_request(c, "folder name %s %s", log_q(q, sizeof(q), name), why);
                return -1;
            }
            if (!json_is_string(v) || util_parse_u64(json_string_value(v), json_string_length(v),
                                                     &(*out)[i].state) < 0) {
                bad_request(c, "folders.%s: state must be a decimal string such as \"17\"",
                            log_q(q, sizeof(q), name));
                return -1;
            }
            (*out)[i++].name = name;
        }
    }
    *n = count;
    return 0;
}

/* The address clients send acks to: the bound one, or the one this request reached. */
static void ack_address(struct conn *c, char *out, size_t outlen)
{
    struct sockaddr_storage bound, local;
    int len = sizeof(local);

    udp_bound_addr(c->srv, &bound);
    if (bound.ss_family == AF_INET && ((struct sockaddr_in *)&bound)->sin_addr.s_addr == 0 &&
        uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &len) == 0 &&
        local.ss_family == AF_INET) {
        ((struct sockaddr_in *)&local)->sin_port = ((struct sockaddr_in *)&bound)->sin_port;
        util_format_addr((struct sockaddr *)&local, out, outlen);
        return;
    }
    if (bound.ss_family == AF_INET6 &&
        memcmp(&((struct sockaddr_in6 *)&bound)->sin6_addr, &in6addr_any, 16) == 0 &&
        uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &len) == 0) {
        if (local.ss_family == AF_INET)
            ((struct sockaddr_in *)&local)->sin_port = ((struct sockaddr_in6 *)&bound)->sin6_port;
        else
            ((struct sockaddr_in6 *)&local)->sin6_port = ((struct sockaddr_in6 *)&bound)->sin6_port;
        util_format_addr((struct sockaddr *)&local, out, outlen);
        return;
    }
    util_format_addr((struct sockaddr *)&bound, out, outlen);
}

static void answer_registered(struct conn *c, const struct udp_reg *reg)
{
    struct server *s = c->srv;
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char key[48], addr[64], server[64];
    struct jsonw w;
    size_t len, k = 0;
    char *body;

    /* Standard base64 of the 32-byte key: 44 characters with one '='. */
    for (size_t i = 0; i < 32; i += 3) {
        uint32_t v = (uint32_t)reg->key[i] << 16;
        if (i + 1 < 32)
            v |= (uint32_t)reg->key[i + 1] << 8;
        if (i + 2 < 32)
            v |= reg->key[i + 2];
        key[k++] = b64[v >> 18 & 63];
        key[k++] = b64[v >> 12 & 63];
        key[k++] = i + 1 < 32 ? b64[v >> 6 & 63] : '=';
        key[k++] = i + 2 < 32 ? b64[v & 63] : '=';
    }
    key[k] = '\0';
    ack_address(c, server, sizeof(server));
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, "registered");
    jw_key(&w, "id");
    jw_u64_str(&w, reg->id);
    jw_key(&w, "key");
    jw_str(&w, key);
    jw_key(&w, "address");
    jw_str(&w, util_format_addr(&reg->addr.sa, addr, sizeof(addr)));
    jw_key(&w, "server");
    jw_str(&w, server);
    jw_key(&w, "ttl");
    jw_u64(&w, s->cfg->udp_ttl);
    jw_key(&w, "resend_interval");
    jw_u64(&w, s->cfg->udp_resend_interval);
    jw_key(&w, "folders");
    jw_obj_begin(&w);
    for (uint32_t i = 0; i < reg->nfolders; i++) {
        jw_key(&w, reg->folders[i].name);
        jw_u64_str(&w, store_get(s->store, reg->device->user->id, reg->folders[i].name));
    }
    jw_obj_end(&w);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

void udp_register_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct server *s = c->srv;
    struct store_folder *folders = NULL;
    struct sockaddr_storage to;
    struct udp_reg *reg;
    struct user *u;
    struct device *d;
    json_t *root, *dev;
    const char *why, *device;
    size_t n = 0;
    int created;

    if (refuse_if_off(c) || (root = parse_body(c, r)) == NULL)
        return;
    dev = json_object_get(root, "device");
    if (dev == NULL) {
        bad_request(c, "device is required");
        goto done;
    }
    if (!json_is_string(dev) || strlen(json_string_value(dev)) != json_string_length(dev)) {
        bad_request(c, "device must be a string");
        goto done;
    }
    device = json_string_value(dev);
    why = check_device_id(device, strlen(device));
    if (why) {
        bad_request(c, "device %s", why);
        goto done;
    }
    if (target(c, root, &to) < 0 || parse_folders(c, root, who->subject, &folders, &n) < 0)
        goto done;
    u = shard_user(&s->shard, who->subject, 1);
    d = user_device(u, device, 0);
    created = d == NULL;
    if (created)
        d = user_device(u, device, 1);
    if (session_admit(s, c, u, d) < 0) {
        if (created)
            user_device_remove(u, d);
        goto done;
    }
    reg = udp_register(s, d, (struct sockaddr *)&to, folders, n);
    if (reg == NULL) {
        if (created)
            user_device_remove(u, d);
        conn_respond_error(c, 503, "unavailable", "no random bytes for the registration key");
        goto done;
    }
    answer_registered(c, reg);
done:
    free(folders);
    json_decref(root);
}

void udp_delete_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    static const char prefix[] = "/v1/udp/";
    char device[3 * DEVICE_ID_MAX + 1];
    size_t rawlen = r->path_len - (sizeof(prefix) - 1);
    struct user *u;
    struct device *d;
    struct jsonw w;
    long dlen;
    size_t len;
    char *body;

    if (refuse_if_off(c))
        return;
    if (rawlen >= sizeof(device) || memchr(r->path + sizeof(prefix) - 1, '/', rawlen) != NULL) {
        bad_request(c, "expected DELETE /v1/udp/DEVICE (the device id URL-encoded)");
        return;
    }
    memcpy(device, r->path + sizeof(prefix) - 1, rawlen);
    device[rawlen] = '\0';
    dlen = util_url_decode(device, rawlen);
    if (dlen < 0 || check_device_id(device, (size_t)dlen) != NULL ||
        strlen(device) != (size_t)dlen) {
        bad_request(c, "the device id in the path is badly encoded or not a valid device id");
        return;
    }
    u = shard_user(&c->srv->shard, who->subject, 0);
    d = u ? user_device(u, device, 0) : NULL;
    if (d == NULL || d->udp == NULL) {
        conn_respond_error(c, 404, "no-registration", "this device has no UDP registration");
        return;
    }
    udp_end(c->srv, d, "deleted by the device");
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, "ended");
    jw_key(&w, "device");
    jw_str(&w, device);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

void udp_test_handle(struct conn *c, struct http_req *r, const struct principal *who)
{
    struct sockaddr_storage to;
    json_t *root, *nonce;
    const char *text;
    char to_s[64], from[64];
    struct jsonw w;
    size_t len;
    char *body;

    (void)who;
    if (refuse_if_off(c) || (root = parse_body(c, r)) == NULL)
        return;
    nonce = json_object_get(root, "nonce");
    if (nonce == NULL || !json_is_string(nonce) || json_string_length(nonce) == 0 ||
        json_string_length(nonce) > NONCE_MAX) {
        bad_request(c, "nonce is required: a string of 1 to %d printable bytes", NONCE_MAX);
        goto done;
    }
    text = json_string_value(nonce);
    for (size_t i = 0; i < json_string_length(nonce); i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            bad_request(c, "nonce must not contain control characters");
            goto done;
        }
    if (target(c, root, &to) < 0)
        goto done;
    if (udp_send_test(c->srv, (struct sockaddr *)&to, text, json_string_length(nonce)) < 0) {
        conn_respond_error(c, 503, "unavailable", "the test datagram could not be sent");
        goto done;
    }
    ack_address(c, from, sizeof(from));
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, "sent");
    jw_key(&w, "to");
    jw_str(&w, util_format_addr((struct sockaddr *)&to, to_s, sizeof(to_s)));
    jw_key(&w, "from");
    jw_str(&w, from);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
done:
    json_decref(root);
}
