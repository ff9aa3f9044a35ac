/*
 * login.h — POST /v1/login: a user signs in with the mail login and
 * password (HTTP Basic, checked by the router against [auth] passwords)
 * and gets a user token, so a web or desktop client asks for the password
 * once and uses the token from then on.
 */
#ifndef NUDGE_LOGIN_H
#define NUDGE_LOGIN_H

/* The cookie POST /v1/login sets with the token ([auth] cookie), and browser routes read. */
#define LOGIN_COOKIE "nudge_token"

struct config;
struct conn;
struct http_req;
struct metrics;
struct principal;
struct secret;

struct login {
    const struct config *cfg;
    const struct secret *secret;
    struct metrics *metrics;
};

void login_init(struct login *l, const struct config *cfg, const struct secret *secret,
                struct metrics *metrics);

/* The route handler; 'who' is the user the password backend named. 'arg' is the struct login. */
void login_handle(void *arg, struct conn *c, struct http_req *r, const struct principal *who);

#endif
