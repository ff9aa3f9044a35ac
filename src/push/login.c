/*
 * login.c — POST /v1/login; see login.h. The answer:
 *
 *   {"token":"v2.u....","expires":1767225600,"user":"alice@example.org"}
 *
 * 'user' is the name the password backend answered, which the token is for
 * (Dovecot may answer another spelling than the login). The token lives
 * [auth] token_ttl and is refused once an admin revokes the user's tokens.
 */
#include "push/login.h"

#include <stdlib.h>
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

void login_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who)
{
    struct login *l = arg;
    int64_t expires = (int64_t)time(NULL) + l->cfg->auth_token_ttl;
    char tok[TOKEN_MAX], q[300], peer[64];
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
    conn_respond(c, 200, "Cache-Control: no-store\r\n", body, len);
    free(body);
}
