"""Browsers' credentials (docs/auth.md "Browsers: cookie, ticket, CORS"), end
to end with the real nudged over real sockets:

  * POST /v1/login sets the login cookie (its attributes; Secure with
    [auth] cookie_secure = yes; none with cookie = no).
  * The cookie is taken on a browser route (GET /v1/stream), never on the
    others, and from a foreign Origin it is refused 403.
  * POST /v1/ticket mints a single-use ticket bound to a device: accepted
    once, then "ticket already used"; tampered, truncated, expired and
    revoked tickets are refused with their reason; a ticket counts only in
    the query of a browser route. With workers, a ticket minted through one
    worker and redeemed through others is still single-use.
  * Neither the ticket nor the token is ever written to the log.
  * CORS for [http] cors_origins only: the headers on every answer to an
    allowed origin (errors too), the preflight, nothing for other origins.

GET /v1/stream is being built on another branch: today it answers 501
"streams are being built" once the credential was accepted. accepted()
treats that 501 and the stream's future 200 alike, and reads only the
answer's head, so these tests hold when the stream lands.
"""
import base64
import json
import re
import socket
import time

import pytest

import harness
import sse
from conftest import finish
from dovecot import crypt_hash
from harness import WAIT, Conn, b64url, b64url_decode, expect_error, flip_mac_char

PASSWORD = "pw-browser"
ORIGIN = "https://mail.example.org"
OTHER_ORIGIN = "https://other.example"
FOREIGN = "https://evil.example"
TICKET_RE = r"t1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.\d+\.\d+\.[A-Za-z0-9_-]{22}\.[0-9a-f]{8}\.[A-Za-z0-9_-]{43}"
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
                "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Max-Age")


def write_passwd(path, users):
    path.write_text("".join(f"{u}:{{SHA512-CRYPT}}{crypt_hash(PASSWORD)}::::::\n" for u in users))


# Users the passwd-file knows: sign-ins need them before nudged starts.
SIGNIN_USERS = [f"web{i}" for i in range(4)]


def start(tmp_path_factory, settings):
    d = tmp_path_factory.mktemp("nudged")
    pf = d / "passwd"
    write_passwd(pf, SIGNIN_USERS)
    base = {"auth": {"passwords": f"passwd-file:{pf}"},
            # debug: every line nudged can write is in the log the secrecy test reads.
            "server": {"log_level": "debug"}}
    for section, kv in settings.items():
        base.setdefault(section, {}).update(kv)
    n = harness.Nudged(d, base)
    n.start()
    return n


@pytest.fixture(scope="module")
def web(request, tmp_path_factory):
    """One nudged with passwords and CORS for ORIGIN and OTHER_ORIGIN."""
    n = start(tmp_path_factory, {"http": {"cors_origins": f"{ORIGIN}, {OTHER_ORIGIN}"}})

    def teardown():
        problems = finish(n)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    return n


def basic(user, password=PASSWORD):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_from(n, source, method, path, body=None, token=None, headers=None, head=False):
    """One request on a connection of its own from address 'source' (127.0.0.x):
    with workers, the kernel steers each client address to one worker. With
    'head', the body is read only when the answer has a length: a stream's
    never ends."""
    c = Conn(None)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.settimeout(WAIT)
    try:
        c.sock.bind((source, 0))
        c.sock.connect(("127.0.0.1", n.port))
        c.send_request(method, path, body, token, headers)
        r = c.read_response(WAIT, head=head)
        if head and r.header("Content-Length") is not None:
            size = int(r.header("Content-Length"))
            c._need(size, time.monotonic() + WAIT)
            r.body = c.buf[:size]
        return r
    finally:
        c.close()


def stream(n, query="device=web", headers=None, token=None, source="127.0.0.1"):
    """GET /v1/stream, reading only the head of a stream."""
    return request_from(n, source, "GET", f"/v1/stream?{query}" if query else "/v1/stream",
                        token=token, headers=headers, head=True)


def accepted(r):
    """The stream took the credential: a 200 event stream."""
    return r.status == 200 and (r.header("Content-Type") or "") == "text/event-stream"


def assert_accepted(r):
    assert accepted(r), r


def assert_401(r, error):
    assert r.status == 401, r
    assert json.loads(r.body) == {"status": "unauthorized", "error": error}, r


def own(request, *servers):
    """Stops servers a test started itself, failing it on any problem."""
    def teardown():
        problems = [p for n in servers for p in finish(n)]
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
    request.addfinalizer(teardown)


def cookie_of(r):
    sc = r.header("Set-Cookie")
    assert sc, r
    m = re.fullmatch(r"nudge_token=([^;]+); (.*)", sc)
    assert m, sc
    return m.group(1), m.group(2)


def login(n, user):
    r = n.request("POST", "/v1/login", b"", headers={"Authorization": basic(user)})
    assert r.status == 200, r
    return r


def mint(n, token, device="web", source="127.0.0.1"):
    r = request_from(n, source, "POST", "/v1/ticket", {"device": device}, token=token)
    assert r.status == 200, r
    assert r.header("Cache-Control") == "no-store", r
    doc = r.json()
    assert set(doc) == {"ticket", "expires", "device"}, doc
    assert re.fullmatch(TICKET_RE, doc["ticket"]), doc
    assert doc["device"] == device, doc
    return doc


# ---- the cookie ---------------------------------------------------------


def test_login_sets_the_cookie_with_its_attributes(web):
    r = login(web, "web0")
    token = r.json()["token"]
    value, attrs = cookie_of(r)
    assert value == token
    # Max-Age is [auth] token_ttl (30 days); no Secure: the listener is plain TCP.
    assert attrs == "Path=/v1/; HttpOnly; SameSite=Strict; Max-Age=2592000", attrs
    assert r.json()["expires"] - time.time() == pytest.approx(2592000, abs=60)


def test_cookie_secure_yes_and_cookie_off(tmp_path_factory, request):
    on = start(tmp_path_factory, {"auth": {"cookie_secure": "yes", "token_ttl": "3600"}})
    off = start(tmp_path_factory, {"auth": {"cookie": "no"}})
    own(request, on, off)
    _, attrs = cookie_of(login(on, "web1"))
    assert attrs == "Path=/v1/; HttpOnly; SameSite=Strict; Max-Age=3600; Secure", attrs
    r = login(off, "web1")
    assert r.header("Set-Cookie") is None, r
    assert r.header("Cache-Control") == "no-store", r


def test_cookie_is_accepted_on_the_stream(web):
    token, _ = cookie_of(login(web, "web0"))
    assert_accepted(stream(web, headers={"Cookie": f"nudge_token={token}"}))
    # Among other cookies, and in a second Cookie header (joined with "; ").
    assert_accepted(stream(web, headers={"Cookie": f"a=1; nudge_token={token}; b=2"}))
    assert_accepted(stream(web, headers=[("Cookie", "a=1"), ("Cookie", f"nudge_token={token}")]))
    # From an allowed origin, and with no Origin at all (a same-origin GET).
    assert_accepted(stream(web, headers={"Cookie": f"nudge_token={token}", "Origin": ORIGIN}))


def test_cookie_from_a_foreign_origin_is_403(web):
    token, _ = cookie_of(login(web, "web0"))
    r = stream(web, headers={"Cookie": f"nudge_token={token}", "Origin": FOREIGN})
    assert r.status == 403, r
    r = request_from(web, "127.0.0.1", "GET", "/v1/stream?device=web",
                     headers={"Cookie": f"nudge_token={token}", "Origin": FOREIGN})
    body = expect_error(r, 403, "origin-not-allowed", has_error=True)
    assert "login cookie" in body["error"] and FOREIGN not in body["error"], body
    assert r.header("Access-Control-Allow-Origin") is None, r
    web.wait_log(r"event=1209 name=origin_refused .*path=/v1/stream origin=https://evil.example")


def test_cookie_is_refused_on_other_routes(web):
    token, _ = cookie_of(login(web, "web0"))
    cookie = {"Cookie": f"nudge_token={token}"}
    r = web.request("POST", "/v1/ping", harness.ping_body("web", {"INBOX": "0"}, 60), headers=cookie)
    assert_401(r, "missing bearer token")
    assert_401(web.request("GET", "/v1/state", headers=cookie), "missing bearer token")
    assert_401(web.request("POST", "/v1/ticket", {"device": "web"}, headers=cookie),
               "missing bearer token")


def test_bad_cookie_and_header_precedence(web):
    token, _ = cookie_of(login(web, "web0"))
    assert_401(stream(web, headers={"Cookie": f"nudge_token={flip_mac_char(token)}"}), "bad signature")
    assert_401(stream(web, headers={"Cookie": "nudge_token=nonsense"}), "malformed token")
    assert_401(stream(web, headers={"Cookie": "other=1"}), "missing bearer token")
    # An Authorization header wins over the cookie the browser adds by itself.
    assert_401(stream(web, token=flip_mac_char(token), headers={"Cookie": f"nudge_token={token}"}),
               "bad signature")
    assert_accepted(stream(web, token=token))


# ---- tickets ------------------------------------------------------------


def test_ticket_is_single_use(web):
    u = web.user("tk")
    doc = mint(web, web.token(u.name), device="tab1")
    assert 0 < doc["expires"] - time.time() <= 61, doc
    assert_accepted(stream(web, f"ticket={doc['ticket']}"))
    r = stream(web, f"ticket={doc['ticket']}")
    assert_401(r, "ticket already used")
    # The reason, never the ticket.
    assert doc["ticket"] not in r.raw_head.decode("latin-1")


def test_ticket_carries_its_user_and_device(web):
    """The binding: the device and user are signed into the ticket (the
    stream, once it lands, serves that device whatever the query says)."""
    u = web.user("tk")
    doc = mint(web, web.token(u.name), device="tab-2")
    fields = doc["ticket"].split(".")
    assert b64url_decode(fields[1]).decode() == u.name
    assert b64url_decode(fields[2]).decode() == "tab-2"
    assert int(fields[3]) == doc["expires"]
    # Redeemed with another device in the query: the stream is the ticket's device's.
    s = sse.Stream(web, None, f"types=INBOX&device=other&ticket={doc['ticket']}")
    assert s.status == 200, s.response
    s.next()
    r = web.request("GET", f"/v1/admin/sessions?user={u.name}", token=web.admin_token())
    assert [(x["device"], x["kind"]) for x in r.json()["sessions"]] == [("tab-2", "stream")], r.json()
    s.close()


def test_ticket_request_errors(web):
    token = web.token(web.user("tk").name)
    expect_error(web.request("POST", "/v1/ticket", b"", token=token), 400, "bad-request", True)
    expect_error(web.request("POST", "/v1/ticket", {"dev": "x"}, token=token), 400, "bad-request", True)
    expect_error(web.request("POST", "/v1/ticket", {"device": "a\tb"}, token=token), 400,
                 "bad-request", True)
    expect_error(web.request("POST", "/v1/ticket", {"device": "x" * 129}, token=token), 400,
                 "bad-request", True)
    assert_401(web.request("POST", "/v1/ticket", {"device": "x"}), "missing bearer token")
    r = web.request("POST", "/v1/ticket", {"device": "x"}, token=web.publisher_token())
    expect_error(r, 403, "forbidden")
    # HTTP Basic only where [auth] basic = yes (it is off here).
    assert_401(web.request("POST", "/v1/ticket", {"device": "x"}, headers={"Authorization": basic("web0")}),
               "expected Authorization: Bearer <token>")


def test_tampered_and_malformed_tickets(web):
    u, v = web.user("tk"), web.user("tk")
    t = mint(web, web.token(u.name))["ticket"]
    assert_401(stream(web, f"ticket={flip_mac_char(t)}"), "bad ticket signature")
    # Another user or device put in: the MAC no longer matches.
    f = t.split(".")
    assert_401(stream(web, "ticket=" + ".".join([f[0], b64url(v.name.encode())] + f[2:])),
               "bad ticket signature")
    assert_401(stream(web, "ticket=" + ".".join(f[:2] + [b64url(b"other")] + f[3:])),
               "bad ticket signature")
    assert_401(stream(web, "ticket=" + ".".join(f[:3] + [str(int(f[3]) + 100)] + f[4:])),
               "bad ticket signature")
    assert_401(stream(web, f"ticket={t[:-5]}"), "malformed ticket")
    assert_401(stream(web, "ticket="), "malformed ticket")
    assert_401(stream(web, "ticket=%zz"), "malformed ticket")
    assert_401(stream(web, "ticket=" + "A" * 700), "malformed ticket")
    # None of those used it up.
    assert_accepted(stream(web, f"ticket={t}"))


def test_ticket_only_in_the_query_of_a_browser_route(web):
    u = web.user("tk")
    t = mint(web, web.token(u.name))["ticket"]
    assert_401(web.request("GET", f"/v1/state?ticket={t}"), "missing bearer token")
    r = web.request("POST", f"/v1/ping?ticket={t}", harness.ping_body("web", {"INBOX": "0"}, 60))
    assert_401(r, "missing bearer token")
    # In a header it is no token.
    assert_401(stream(web, token=t), "malformed token")
    assert_401(stream(web, headers={"Cookie": f"nudge_token={t}"}), "malformed token")
    # Not spent by any of those.
    assert_accepted(stream(web, f"ticket={t}"))


def test_revoked_users_ticket_is_refused(web):
    u = web.user("tk")
    t = mint(web, web.token(u.name))["ticket"]
    r = web.request("DELETE", f"/v1/admin/tokens/{u.name}", token=web.admin_token())
    assert r.status == 200, r
    assert_401(stream(web, f"ticket={t}"), "ticket revoked")


def test_ticket_expires(tmp_path_factory, request):
    n = start(tmp_path_factory, {"auth": {"ticket_ttl": "1"}})
    own(request, n)
    token = n.token(harness.unique("tk"))
    doc = mint(n, token)
    assert doc["expires"] - time.time() <= 2, doc
    # Valid through its 'expires' second: wait (by polling the clock) until it has passed.
    # 0.2 s more: nudged reads time(2), the kernel's coarse clock, which runs up to a
    # tick (4-10 ms) behind the precise one Python reads.
    deadline = time.monotonic() + WAIT
    while time.time() < doc["expires"] + 1.2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert_401(stream(n, f"ticket={doc['ticket']}"), "ticket expired")


def test_ticket_across_workers(web):
    """Minted on one connection, redeemed and replayed on others from other
    client addresses, so that with workers they are accepted by different
    workers: the redemption is routed to the user's owner, which alone
    keeps the used tickets."""
    for i in range(6):
        u = web.user("tkw")
        doc = mint(web, web.token(u.name), source=f"127.0.0.{2 + i % 3}")
        assert_accepted(stream(web, f"ticket={doc['ticket']}", source=f"127.0.0.{2 + (i + 1) % 3}"))
        for src in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            assert_401(stream(web, f"ticket={doc['ticket']}", source=src), "ticket already used")
    if web.workers > 1:
        r = web.request("GET", "/v1/admin/workers", token=web.admin_token())
        assert r.json()["total"]["handoffs_sent"] > 0, r


def test_ticket_and_tokens_never_logged(web):
    u = web.user("tk")
    token = web.token(u.name)
    t = mint(web, token)["ticket"]
    assert_accepted(stream(web, f"ticket={t}"))
    assert_401(stream(web, f"ticket={t}"), "ticket already used")
    assert_401(stream(web, f"ticket={flip_mac_char(t)}"), "bad ticket signature")
    r = login(web, "web2")
    cookie, _ = cookie_of(r)
    assert_accepted(stream(web, headers={"Cookie": f"nudge_token={cookie}"}))
    assert stream(web, headers={"Cookie": f"nudge_token={cookie}", "Origin": FOREIGN}).status == 403
    # A malformed request line holding a ticket: the bad_request line names no URL.
    web.raw(f"GET /v1/stream?ticket={t} HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".encode())
    web.wait_log(r"event=1101 name=bad_request")
    web.wait_log(r"reason=\"ticket already used\"")
    text = web.log_text()
    for secret in (t, t.split(".")[-1], t.split(".")[5], cookie, cookie.split(".")[-1], token):
        assert secret not in text, f"{secret!r} is in the log"
    assert "ticket=" not in text


# ---- CORS ---------------------------------------------------------------


def test_cors_headers_for_allowed_origins_only(web):
    for origin in (ORIGIN, OTHER_ORIGIN):
        r = web.request("GET", "/healthz", headers={"Origin": origin})
        assert r.status == 200, r
        assert r.header("Access-Control-Allow-Origin") == origin, r
        assert r.header("Access-Control-Allow-Credentials") == "true", r
        assert r.header("Vary") == "Origin", r
    # Errors too: a 404, a 401 (with its challenge kept), a stream's answer.
    for r in (web.request("GET", "/nowhere", headers={"Origin": ORIGIN}),
              web.request("POST", "/v1/ticket", {"device": "x"}, headers={"Origin": ORIGIN}),
              stream(web, headers={"Origin": ORIGIN})):
        assert r.header("Access-Control-Allow-Origin") == ORIGIN, r
        assert r.header("Vary") == "Origin", r
    assert web.request("POST", "/v1/ticket", {"device": "x"}, headers={"Origin": ORIGIN}) \
        .header("WWW-Authenticate") is not None
    # A stream's head (a 200 that goes on) carries them as well.
    r = stream(web, "types=INBOX&device=cors", headers={"Origin": ORIGIN},
               token=web.token(web.user("cors").name))
    assert accepted(r) and r.header("Access-Control-Allow-Origin") == ORIGIN, r
    # The login answer keeps its own headers beside them.
    r = web.request("POST", "/v1/login", b"", headers={"Authorization": basic("web3"), "Origin": ORIGIN})
    assert r.status == 200 and r.header("Set-Cookie") and r.header("Cache-Control") == "no-store", r
    assert r.header("Access-Control-Allow-Origin") == ORIGIN, r
    # Other origins, a near miss and no Origin: no CORS header at all.
    for headers in ({"Origin": FOREIGN}, {"Origin": ORIGIN + "/"}, {"Origin": "null"},
                    {"Origin": "https://MAIL.example.org"}, {}):
        r = web.request("GET", "/healthz", headers=headers)
        assert r.status == 200, r
        for h in CORS_HEADERS + ("Vary",):
            assert r.header(h) is None, (headers, r)


@pytest.mark.parametrize("path,methods", [("/v1/stream", "GET"), ("/v1/ticket", "POST"),
                                          ("/v1/login", "POST"), ("/v1/state", "GET, HEAD")])
def test_preflight(web, path, methods):
    r = web.request("OPTIONS", path, headers={"Origin": ORIGIN,
                                              "Access-Control-Request-Method": methods.split(",")[0],
                                              "Access-Control-Request-Headers": "authorization"})
    assert r.status == 204 and r.body == b"", r
    assert r.header("Content-Length") is None, r
    assert r.header("Access-Control-Allow-Origin") == ORIGIN, r
    assert r.header("Access-Control-Allow-Credentials") == "true", r
    assert r.header("Access-Control-Allow-Methods") == methods, r
    assert r.header("Access-Control-Allow-Headers") == "Authorization, Content-Type, Last-Event-ID", r
    assert r.header("Access-Control-Max-Age") == "600", r


def test_preflight_from_other_origins_and_plain_options(web):
    r = web.request("OPTIONS", "/v1/stream", headers={"Origin": FOREIGN,
                                                      "Access-Control-Request-Method": "GET"})
    expect_error(r, 403, "origin-not-allowed", True)
    for h in CORS_HEADERS:
        assert r.header(h) is None, r
    expect_error(web.request("OPTIONS", "/nowhere", headers={"Origin": ORIGIN}), 404, "not-found")
    # OPTIONS without an Origin is no preflight: ActiveSync's still answers as before.
    r = web.request("OPTIONS", "/Microsoft-Server-ActiveSync")
    assert r.status == 200 and r.header("MS-ASProtocolCommands"), r
    assert r.header("Access-Control-Allow-Origin") is None, r


def test_no_cors_by_default(tmp_path_factory, request):
    n = start(tmp_path_factory, {})
    own(request, n)
    r = n.request("GET", "/healthz", headers={"Origin": ORIGIN})
    for h in CORS_HEADERS + ("Vary",):
        assert r.header(h) is None, r
    r = n.request("OPTIONS", "/v1/stream", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    expect_error(r, 403, "origin-not-allowed", True)
    # Without a list, the cookie is taken only from requests without Origin.
    token, _ = cookie_of(login(n, "web0"))
    assert_accepted(stream(n, headers={"Cookie": f"nudge_token={token}"}))
    assert stream(n, headers={"Cookie": f"nudge_token={token}", "Origin": ORIGIN}).status == 403


def test_bad_cors_origins_stop_the_start(make_nudged):
    for bad, why in (("https://mail.example.org/", "no path"), ("mail.example.org", "http://"),
                     ("https://Mail.example.org", "lower case"), ("https://a.example,,https://b.example", "empty")):
        n = make_nudged({"http": {"cors_origins": bad}}, start=False)
        with pytest.raises(AssertionError):
            n.start(timeout=5 * harness.SLOW)
        # A config error is one line for the admin at the terminal, before any log is set up.
        line = re.search(r"(?m)^nudged: .*\[http\] cors_origins: .*$", n.log_text())
        assert line and why in line.group(0), (bad, n.log_text())


def test_the_websocket_takes_the_cookie_from_allowed_origins_only(web):
    import ws
    token, _ = cookie_of(login(web, "web0"))
    w = ws.WebSocket(web, None, "device=webws",
                     headers={"Cookie": f"nudge_token={token}", "Origin": ORIGIN})
    assert w.status == 101, w.response
    w.close()
    # A page of another site opening a WebSocket to nudge carries the cookie: refused.
    w = ws.WebSocket(web, None, "device=webws",
                     headers={"Cookie": f"nudge_token={token}", "Origin": FOREIGN})
    assert w.status == 403, w.response
    assert w.response.json()["status"] == "origin-not-allowed", w.response
    web.wait_log(r"event=1209 name=origin_refused .*path=/v1/ws origin=https://evil.example")
    w.close()
