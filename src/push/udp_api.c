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
#include "push/udp_api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/principal.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "conn/conn.h"
#include "http/error.h"
#include "http/request.h"
#include "push/check.h"
#include "session/session.h"
#include "shard/shard.h"
#include "store/store.h"
#include "udp/udp.h"

/* A test nonce: long enough for 128 random bits in any text form, short for a datagram. */
#define NONCE_MAX 64

void udp_api_init(struct udp_api *a, const struct config *cfg, struct store *store,
                  struct shard *shard, struct sessions *sessions, struct udp *udp)
{
    a->cfg = cfg;
    a->store = store;
    a->shard = shard;
    a->sessions = sessions;
    a->udp = udp;
}

/* 501 when UDP is off. -1 with e set then. */
static int refuse_if_off(const struct udp_api *a, struct http_error *e)
{
    if (a->udp)
        return 0;
    return http_error_set(e, 501, "udp-disabled",
                          "UDP notifications are off on this server ([udp] listen is empty): hold "
                          "a ping or poll GET /v1/state instead");
}

/* Parses the body as a JSON object. NULL with e set. */
static json_t *parse_body(struct http_req *r, struct http_error *e)
{
    json_error_t je;
    json_t *root;

    if (r->body_len == 0) {
        http_error_bad(e, "the body must be a JSON object");
        return NULL;
    }
    root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        http_error_bad(e, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        http_error_bad(e, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/*
 * Where datagrams for this request go: the request's source address, or
 * "host" when [udp] allowed_hosts covers it, at "port". 0, or -1 with e set.
 */
static int target(const struct udp_api *a, struct conn *c, json_t *root,
                  struct sockaddr_storage *ss, struct http_error *e)
{
    json_t *port = json_object_get(root, "port"), *host = json_object_get(root, "host");
    char shown[64];

    if (port == NULL)
        return http_error_bad(e, "port is required: the UDP port the device receives on");
    if (!json_is_integer(port) || json_integer_value(port) < 1 ||
        json_integer_value(port) > 65535)
        return http_error_bad(e, "port must be a whole number from 1 to 65535");
    memset(ss, 0, sizeof(*ss));
    if (conn_peer_addr(c, ss) != 0)
        return http_error_set(e, 503, "unavailable", "the connection's address is unknown");
    if (host != NULL) {
        struct sockaddr_storage h;
        const char *text = json_string_value(host);
        memset(&h, 0, sizeof(h));
        if (!json_is_string(host) || json_string_length(host) >= INET6_ADDRSTRLEN)
            return http_error_bad(e, "host must be an IPv4 or IPv6 address as a string");
        if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&h)->sin_addr) == 1)
            h.ss_family = AF_INET;
        else if (inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&h)->sin6_addr) == 1)
            h.ss_family = AF_INET6;
        else
            return http_error_bad(e, "host must be an IPv4 or IPv6 address (names are not resolved)");
        /* The request's own address is always fine ('text' is one address: a list of one). */
        if (!util_prefix_list_match(a->cfg->udp_allowed_hosts, (struct sockaddr *)&h) &&
            !util_prefix_list_match(text, (struct sockaddr *)ss))
            return http_error_set(e, 403, "host-not-allowed",
                                  "datagrams go to the address that registers; %s is not within "
                                  "[udp] allowed_hosts",
                                  text);
        *ss = h;
    }
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)json_integer_value(port));
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)json_integer_value(port));
    if (udp_target(a->udp, ss) < 0)
        return http_error_bad(e, "this server's UDP socket (%s) cannot send to %s",
                              udp_bound_addr(a->udp, NULL),
                              util_format_addr((struct sockaddr *)ss, shown, sizeof(shown)));
    return 0;
}

/*
 * The folders: ["INBOX", ...] (the device holds their current states) or
 * {"INBOX": "17", ...}. Fills *out (names borrowed from root). 0, or -1
 * with e set.
 */
static int parse_folders(const struct udp_api *a, json_t *root, const char *user,
                         struct store_folder **out, size_t *n, struct http_error *e)
{
    json_t *f = json_object_get(root, "folders"), *v;
    const char *name;
    size_t count, i = 0;
    char q[80];

    if (f == NULL)
        return http_error_bad(e, "folders is required: the folders to hear about");
    if (!json_is_array(f) && !json_is_object(f))
        return http_error_bad(e, "folders must be an array of names or an object of names and states");
    count = json_is_array(f) ? json_array_size(f) : json_object_size(f);
    if (count == 0)
        return http_error_bad(e, "folders must name at least one folder");
    if (count > a->cfg->ping_max_folders) {
        http_error_set(e, 400, "too-many-folders", NULL);
        http_error_num(e, "max", a->cfg->ping_max_folders);
        return -1;
    }
    *out = xcalloc(count, sizeof(**out));
    if (json_is_array(f)) {
        json_array_foreach(f, i, v) {
            const char *why;
            if (!json_is_string(v))
                return http_error_bad(e, "folders[%zu] must be a folder name (a string)", i);
            name = json_string_value(v);
            why = strlen(name) != json_string_length(v) ? "must not contain NUL"
                                                        : check_folder_name(name, strlen(name));
            if (why)
                return http_error_bad(e, "folders[%zu] %s", i, why);
            for (size_t j = 0; j < i; j++)
                if (strcmp((*out)[j].name, name) == 0)
                    return http_error_bad(e, "folders names %s twice", log_q(q, sizeof(q), name));
            (*out)[i].name = name;
            (*out)[i].state = store_get(a->store, user, name);
        }
    } else {
        json_object_foreach(f, name, v) {
            const char *why = check_folder_name(name, strlen(name));
            if (why)
                return http_error_bad(e, "folder name %s %s", log_q(q, sizeof(q), name), why);
            if (!json_is_string(v) || util_parse_u64(json_string_value(v), json_string_length(v),
                                                     &(*out)[i].state) < 0)
                return http_error_bad(e, "folders.%s: state must be a decimal string such as \"17\"",
                                      log_q(q, sizeof(q), name));
            (*out)[i++].name = name;
        }
    }
    *n = count;
    return 0;
}

/* The address clients send acks to: the bound one, or the one this request reached. */
static void ack_address(const struct udp_api *a, struct conn *c, char *out, size_t outlen)
{
    struct sockaddr_storage bound, local;

    udp_bound_addr(a->udp, &bound);
    if (bound.ss_family == AF_INET && ((struct sockaddr_in *)&bound)->sin_addr.s_addr == 0 &&
        conn_local_addr(c, &local) == 0 &&
        local.ss_family == AF_INET) {
        ((struct sockaddr_in *)&local)->sin_port = ((struct sockaddr_in *)&bound)->sin_port;
        util_format_addr((struct sockaddr *)&local, out, outlen);
        return;
    }
    if (bound.ss_family == AF_INET6 &&
        memcmp(&((struct sockaddr_in6 *)&bound)->sin6_addr, &in6addr_any, 16) == 0 &&
        conn_local_addr(c, &local) == 0) {
        if (local.ss_family == AF_INET)
            ((struct sockaddr_in *)&local)->sin_port = ((struct sockaddr_in6 *)&bound)->sin6_port;
        else
            ((struct sockaddr_in6 *)&local)->sin6_port = ((struct sockaddr_in6 *)&bound)->sin6_port;
        util_format_addr((struct sockaddr *)&local, out, outlen);
        return;
    }
    util_format_addr((struct sockaddr *)&bound, out, outlen);
}

static void answer_registered(const struct udp_api *a, struct conn *c, const struct udp_reg *reg)
{
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
    ack_address(a, c, server, sizeof(server));
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
    jw_u64(&w, a->cfg->udp_ttl);
    jw_key(&w, "resend_interval");
    jw_u64(&w, a->cfg->udp_resend_interval);
    jw_key(&w, "folders");
    jw_obj_begin(&w);
    for (uint32_t i = 0; i < reg->nfolders; i++) {
        jw_key(&w, reg->folders[i].name);
        jw_u64_str(&w, store_get(a->store, reg->device->user->id, reg->folders[i].name));
    }
    jw_obj_end(&w);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
}

/* Do a and b name the same host (the port aside)? */
static int same_host(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

/*
 * [udp] max_per_user and max_per_address: may d (of user u) register for
 * datagrams to 'to'? Replacing d's own registration adds nothing. 0, or -1
 * with e set to 429 udp-limit (event 1608).
 */
static int within_limits(struct udp_api *a, struct user *u, struct device *d,
                         const struct sockaddr *to, struct http_error *e)
{
    const struct udp_reg *old = udp_reg_of(a->udp, d);
    unsigned at_addr = udp_addr_count(a->udp, to);
    const char *which = NULL;
    unsigned max = 0;
    char q1[300], shown[64];

    if (old && same_host(&old->addr.sa, to))
        at_addr--;
    if (old == NULL && udp_user_count(a->udp, u) >= a->cfg->udp_max_per_user) {
        which = "per_user";
        max = a->cfg->udp_max_per_user;
    } else if (at_addr >= a->cfg->udp_max_per_address) {
        which = "per_address";
        max = a->cfg->udp_max_per_address;
    }
    if (which == NULL)
        return 0;
    a->udp->metrics->udp_refused++;
    LOG(LOG_INFO, udp_limited, "user=%s limit=%s max=%u address=%s", log_q(q1, sizeof(q1), u->id),
        which, max, util_format_addr(to, shown, sizeof(shown)));
    http_error_set(e, 429, "udp-limit", "%s has %u registrations already ([udp] %s)",
                   strcmp(which, "per_user") == 0 ? "this user" : "this address", max,
                   strcmp(which, "per_user") == 0 ? "max_per_user" : "max_per_address");
    http_error_num(e, "max", max);
    return -1;
}

void udp_register_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct udp_api *a = arg;
    struct store_folder *folders = NULL;
    struct sockaddr_storage to;
    struct http_error e;
    struct udp_reg *reg;
    struct user *u;
    struct device *d;
    json_t *root = NULL, *dev;
    const char *why, *device;
    size_t n = 0;
    int created;

    if (refuse_if_off(a, &e) < 0 || (root = parse_body(r, &e)) == NULL)
        goto refuse;
    dev = json_object_get(root, "device");
    if (dev == NULL) {
        http_error_bad(&e, "device is required");
        goto refuse;
    }
    if (!json_is_string(dev) || strlen(json_string_value(dev)) != json_string_length(dev)) {
        http_error_bad(&e, "device must be a string");
        goto refuse;
    }
    device = json_string_value(dev);
    why = check_device_id(device, strlen(device));
    if (why) {
        http_error_bad(&e, "device %s", why);
        goto refuse;
    }
    if (target(a, c, root, &to, &e) < 0 || parse_folders(a, root, who->subject, &folders, &n, &e) < 0)
        goto refuse;
    u = shard_user(a->shard, who->subject, 1);
    d = shard_device(a->shard, u, device, 0);
    if (d && within_limits(a, u, d, (struct sockaddr *)&to, &e) < 0)
        goto refuse;
    created = d == NULL;
    if (created)
        d = shard_device(a->shard, u, device, 1);
    if ((created && within_limits(a, u, d, (struct sockaddr *)&to, &e) < 0) ||
        session_admit(a->sessions, u, d, &e) < 0) {
        if (created)
            shard_device_remove(a->shard, d);
        goto refuse;
    }
    reg = udp_register(a->udp, d, (struct sockaddr *)&to, folders, n);
    if (reg == NULL) {
        if (created)
            shard_device_remove(a->shard, d);
        http_error_set(&e, 503, "unavailable", "no random bytes for the registration key");
        goto refuse;
    }
    answer_registered(a, c, reg);
    goto done;
refuse:
    conn_respond_error(c, &e);
done:
    free(folders);
    json_decref(root);
}

void udp_delete_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    static const char prefix[] = "/v1/udp/";
    struct udp_api *a = arg;
    char device[3 * DEVICE_ID_MAX + 1];
    size_t rawlen = r->path_len - (sizeof(prefix) - 1);
    struct http_error e;
    struct user *u;
    struct device *d;
    struct jsonw w;
    long dlen;
    size_t len;
    char *body;

    if (refuse_if_off(a, &e) < 0)
        goto refuse;
    if (rawlen >= sizeof(device) || memchr(r->path + sizeof(prefix) - 1, '/', rawlen) != NULL) {
        http_error_bad(&e, "expected DELETE /v1/udp/DEVICE (the device id URL-encoded)");
        goto refuse;
    }
    memcpy(device, r->path + sizeof(prefix) - 1, rawlen);
    device[rawlen] = '\0';
    dlen = util_url_decode(device, rawlen);
    if (dlen < 0 || check_device_id(device, (size_t)dlen) != NULL ||
        strlen(device) != (size_t)dlen) {
        http_error_bad(&e, "the device id in the path is badly encoded or not a valid device id");
        goto refuse;
    }
    u = shard_user(a->shard, who->subject, 0);
    d = u ? shard_device(a->shard, u, device, 0) : NULL;
    if (d == NULL || udp_reg_of(a->udp, d) == NULL) {
        http_error_set(&e, 404, "no-registration", "this device has no UDP registration");
        goto refuse;
    }
    udp_end(a->udp, d, "deleted by the device");
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
    return;
refuse:
    conn_respond_error(c, &e);
}

void udp_test_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct udp_api *a = arg;
    struct sockaddr_storage to;
    struct http_error e;
    json_t *root = NULL, *nonce;
    const char *text;
    char to_s[64], from[64], public_listen[CONFIG_STR_MAX];
    struct jsonw w;
    size_t len;
    char *body;

    (void)who;
    if (refuse_if_off(a, &e) < 0 || (root = parse_body(r, &e)) == NULL)
        goto refuse;
    nonce = json_object_get(root, "nonce");
    if (nonce == NULL || !json_is_string(nonce) || json_string_length(nonce) == 0 ||
        json_string_length(nonce) > NONCE_MAX) {
        http_error_bad(&e, "nonce is required: a string of 1 to %d printable bytes", NONCE_MAX);
        goto refuse;
    }
    text = json_string_value(nonce);
    for (size_t i = 0; i < json_string_length(nonce); i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            http_error_bad(&e, "nonce must not contain control characters");
            goto refuse;
        }
    if (target(a, c, root, &to, &e) < 0)
        goto refuse;
    if (udp_send_test(a->udp, (struct sockaddr *)&to, text, json_string_length(nonce)) < 0) {
        http_error_set(&e, 503, "unavailable", "the test datagram could not be sent");
        goto refuse;
    }
    ack_address(a, c, from, sizeof(from));
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "status");
    jw_str(&w, "sent");
    jw_key(&w, "to");
    jw_str(&w, util_format_addr((struct sockaddr *)&to, to_s, sizeof(to_s)));
    jw_key(&w, "from");
    jw_str(&w, from);
    /* Over loopback the test passes even when no other host could get a datagram. */
    if (config_udp_loopback_only(a->cfg, public_listen, sizeof(public_listen))) {
        jw_key(&w, "loopback_only");
        jw_str(&w, public_listen);
    }
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    conn_respond(c, 200, NULL, body, len);
    free(body);
    goto done;
refuse:
    conn_respond_error(c, &e);
done:
    json_decref(root);
}
