/*
 * login.c — POST /v1/login; see login.h. The answer:
 *
 *   {"token":"v2.u....","expires":1767225600,"user":"alice@example.org"}
 *
 * 'user' is the name the password backend answered, which the token is for
 * (Dovecot may answer another spelling than the login). The token lives
 * [auth] token_ttl and is refused once an admin revokes the user's tokens.
 *
 * With [auth] cookie = yes (the default) the answer also sets the token as
 * the cookie nudge_token, for the one thing a browser cannot do with the
 * token in hand: open an EventSource with an Authorization header. The
 * cookie is HttpOnly (no page script reads it), SameSite=Strict (no other
 * site's page makes the browser send it), Path=/v1/ and lives as long as
 * the token. The router takes it only on browser routes and only from an
 * allowed Origin (docs/auth.md "Browsers: cookie, ticket, CORS").
 */
#include "push/login.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/principal.h"
#include "auth/token.h"
#include "common/config.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/metrics.h"
#include "conn/conn.h"
#include "http/error.h"

void login_init(struct login *l, const struct config *cfg, const struct secret *secret,
                struct metrics *metrics)
{
    l->cfg = cfg;
    l->secret = secret;
    l->metrics = metrics;
}

/*
 * Did the request come over TLS? [auth] cookie_secure = auto asks it: yes on
 * a listener with the tls flag; behind a TLS proxy, set cookie_secure = yes.
 */
static int came_over_tls(const struct conn *c)
{
    return conn_is_tls(c);
}

/* The answer's header lines into out[outlen]: no-store, and the cookie when it is on. */
static void answer_headers(const struct login *l, const struct conn *c, const char *tok,
                           char *out, size_t outlen)
{
    const char *secure = l->cfg->auth_cookie_secure;
    int with_secure = strcmp(secure, "yes") == 0 ||
                      (strcmp(secure, "auto") == 0 && came_over_tls(c));

    if (strcmp(l->cfg->auth_cookie, "yes") != 0) {
        snprintf(out, outlen, "Cache-Control: no-store\r\n");
        return;
    }
    snprintf(out, outlen,
             "Cache-Control: no-store\r\n"
             "Set-Cookie: " LOGIN_COOKIE "=%s; Path=/v1/; HttpOnly; SameSite=Strict; "
             "Max-Age=%u%s\r\n",
             tok, l->cfg->auth_token_ttl, with_secure ? "; Secure" : "");
}

void login_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct login *l = arg;
    int64_t expires = (int64_t)time(NULL) + l->cfg->auth_token_ttl;
    char tok[TOKEN_MAX], q[300], peer[64];
    /* The cookie line's fixed text is under 128 bytes, the token under TOKEN_MAX. */
    char headers[TOKEN_MAX + 128];
    struct http_error e;
    struct jsonw w;
    size_t len;
    char *body;

    (void)r;
    if (token_sign(l->secret, TOKEN_USER, who->subject, expires, tok, sizeof(tok)) < 0) {
        http_error_set(&e, 503, "unavailable", "a token could not be signed");
        conn_respond_error(c, &e);
        return;
    }
    l->metrics->logins++;
    LOG(LOG_INFO, signed_in, "user=%s peer=%s", log_q(q, sizeof(q), who->subject),
        conn_peer(c, peer, sizeof(peer)));
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "token");
    jw_str(&w, tok);
    jw_key(&w, "expires");
    jw_u64(&w, (uint64_t)expires);
    jw_key(&w, "user");
    jw_str(&w, who->subject);
    jw_obj_end(&w);
    body = jw_take(&w, &len);
    /* A token is a credential: no cache may keep the answer. */
    answer_headers(l, c, tok, headers, sizeof(headers));
    conn_respond(c, 200, headers, body, len);
    free(body);
}
