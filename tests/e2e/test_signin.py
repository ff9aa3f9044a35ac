"""Signing in with the mail account (docs/auth.md "Passwords"), end to end:
the real nudged asking a real Dovecot 2.3 over its auth-client socket, or
reading a Dovecot passwd-file itself.

  * POST /v1/login with HTTP Basic: the right password gives a user token
    that works; a wrong one and an unknown user get the same 401 with a
    Basic challenge; the answer's user is the name Dovecot answered.
  * Dovecot stopped: 503 with Retry-After; started again: sign-in works
    without restarting nudged. A slow answer (auth_failure_delay) holds
    only its own request.
  * The cache: N sign-ins cost one question to Dovecot (the metric and
    Dovecot's own debug log agree); a changed password is refused once the
    positive TTL has passed.
  * passwd-file: SHA512-CRYPT, BLF-CRYPT and yescrypt lines are checked,
    a plain-text line is refused (event 1207), the file is re-read when it
    changes.
  * [auth] basic = yes: HTTP Basic on /v1/state and /v1/ping; off, it is
    refused with a Bearer challenge.
  * Brute force: 100 wrong passwords from one address end in 429 with
    Retry-After; other addresses and other users go on; a password that
    was right before still works from a limited address.
  * Revocation (admin endpoint and nudge token --revoke) and key rotation,
    across a restart and with three workers.

Waits are for conditions (log lines, metrics, answers), never sleeps, except
where a TTL must pass (the cache test, 2 s).
"""
import base64
import json
import re
import socket
import time

import pytest

import harness
from dovecot import Dovecot, crypt_hash
from harness import SLOW, WAIT, Conn, build_request, ping_body


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def login(n, user, password, source=None, path="/v1/login", method="POST", body=b""):
    """One request with HTTP Basic on a connection of its own; 'source' binds
    the client's address (127.0.0.x: every one reaches 127.0.0.1)."""
    headers = {"Authorization": basic(user, password)}
    if source is None:
        return n.request(method, path, body, headers=headers)
    c = Conn(None)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.settimeout(WAIT)
    try:
        c.sock.bind((source, 0))
        c.sock.connect(("127.0.0.1", n.port))
        return c.request(method, path, body, headers=headers)
    finally:
        c.close()


def token_of(r):
    assert r.status == 200, r
    assert r.header("Cache-Control") == "no-store", r
    doc = r.json()
    assert set(doc) == {"token", "expires", "user"}, doc
    assert re.fullmatch(r"v2\.u\.[A-Za-z0-9_-]+\.\d+\.\d+\.[0-9a-f]{8}\.[A-Za-z0-9_-]{43}", doc["token"]), doc
    return doc


def assert_refused(r):
    assert r.status == 401, r
    assert r.header("WWW-Authenticate") == 'Basic realm="nudge", charset="UTF-8"', r
    assert r.json() == {"status": "unauthorized", "error": "wrong user or password"}, r


def log_line(n, pattern):
    """The first log line of n matching pattern, once there is one."""
    n.wait_log(pattern)
    return re.search(rf"(?m)^.*{pattern}.*$", n.log_text()).group(0)


def metric(n, name, **labels):
    return int(n.metric(name, 0, **labels))


@pytest.fixture(scope="module")
def dv(request, tmp_path_factory):
    """One Dovecot for the module: no failure delay (wrong passwords answer at once)."""
    d = Dovecot(tmp_path_factory.mktemp("dovecot-auth"), None,
                settings={"auth_failure_delay": "0", "auth_debug": "yes"})
    request.addfinalizer(d.close)
    d.start()
    d.wait_auth_socket()
    return d


def dovecot_nudged(make_nudged, d, **auth):
    return make_nudged({"auth": {"passwords": f"dovecot:{d.auth_socket}", **auth}})


def new_user(d, prefix="mail", password=None, scheme="SHA512-CRYPT"):
    name = harness.unique(prefix)
    d.add_user(name, password or f"pw-{name}", scheme=scheme)
    return name, password or f"pw-{name}"


# ---- Dovecot ------------------------------------------------------------


def test_right_password_gives_a_token_that_works(dv, make_nudged):
    n = dovecot_nudged(make_nudged, dv, token_ttl=3600)
    user, pw = new_user(dv)
    before = int(time.time())
    doc = token_of(login(n, user, pw))
    assert doc["user"] == user
    assert before + 3600 <= doc["expires"] <= int(time.time()) + 3600
    n.publish(user, "INBOX")
    r = n.get_state(doc["token"])
    assert r.status == 200, r
    assert list(r.json()["folders"]) == ["INBOX"]
    n.wait_log(rf"event=1202 name=signed_in user={re.escape(user)} ")
    assert metric(n, "nudge_logins_total") == 1


def test_wrong_password_and_unknown_user_answer_alike(dv, make_nudged):
    n = dovecot_nudged(make_nudged, dv)
    user, pw = new_user(dv)
    wrong = login(n, user, pw + "x")
    unknown = login(n, harness.unique("nobody"), pw)
    assert_refused(wrong)
    assert_refused(unknown)
    assert wrong.body == unknown.body
    assert sorted(k.lower() for k, _ in wrong.headers) == sorted(k.lower() for k, _ in unknown.headers)
    log = n.log_text()
    line = log_line(n, rf"event=1203 name=password_refused user={re.escape(user)} ")
    assert "peer=127.0.0.1" in line, line
    assert pw not in log, "a password reached the log"
    assert metric(n, "nudge_password_checks_total", result="refused") == 2


def test_login_takes_only_a_password(dv, make_nudged):
    n = dovecot_nudged(make_nudged, dv)
    user, pw = new_user(dv)
    r = n.request("POST", "/v1/login", b"")
    assert r.status == 401 and r.header("WWW-Authenticate").startswith("Basic "), r
    assert "send Authorization: Basic" in r.json()["error"], r
    r = n.request("POST", "/v1/login", b"", token=n.token(user))
    assert r.status == 401 and "expected Authorization: Basic" in r.json()["error"], r
    for bad, why in ((b"Basic !!!!", "base64"), (b"Basic " + base64.b64encode(b"nocolon"), "':'")):
        r = n.request("POST", "/v1/login", b"", headers={"Authorization": bad.decode()})
        assert r.status == 401, r
        assert why in r.json()["error"], r
    r = n.request("GET", "/v1/login", headers={"Authorization": basic(user, pw)})
    assert r.status == 405, r


def test_dovecot_stopped_then_started_again(make_nudged, tmp_path):
    d = Dovecot(tmp_path / "dovecot", None, settings={"auth_failure_delay": "0"})
    try:
        d.start()
        d.wait_auth_socket()
        n = dovecot_nudged(make_nudged, d)
        user, pw = new_user(d)
        token_of(login(n, user, pw))
        n.wait_log(r"event=1206 name=passwords_ready")
        d.stop()
        # A user the cache does not know: the question must go to Dovecot.
        other, opw = new_user(d)
        r = login(n, other, opw)
        assert r.status == 503, r
        assert r.header("Retry-After") == "5", r
        assert r.json()["status"] == "unavailable", r
        n.wait_log(r"event=1205 name=passwords_unavailable")
        assert n.healthy()
        d.start()
        deadline = time.monotonic() + WAIT
        while True:
            r = login(n, other, opw)
            if r.status == 200 or time.monotonic() > deadline:
                break
            assert r.status == 503, r
            time.sleep(0.2)
        token_of(r)
    finally:
        d.close()


def test_slow_answer_holds_only_its_own_request(make_nudged, tmp_path):
    # Dovecot delays every failure by auth_failure_delay; a right password is answered at once.
    d = Dovecot(tmp_path / "dovecot", None, settings={"auth_failure_delay": f"{6 * SLOW} secs"})
    try:
        d.start()
        d.wait_auth_socket()
        n = dovecot_nudged(make_nudged, d, timeout=30 * SLOW)
        user, pw = new_user(d)
        slow = n.pending("POST", "/v1/login", b"", headers={"Authorization": basic(user, "wrong")})
        n.wait_metric("nudge_password_backend_requests_total", lambda v: v >= 1)
        assert n.healthy()
        other, opw = new_user(d)
        token_of(login(n, other, opw))
        token_of(login(n, user, pw))
        assert not slow.done(), "the delayed failure came back before the quick answers"
        assert_refused(slow.result(timeout=40 * SLOW))
    finally:
        d.close()


def test_cache_asks_dovecot_once_and_forgets_after_ttl(dv, make_nudged):
    n = dovecot_nudged(make_nudged, dv, cache_ttl=2)
    user, pw = new_user(dv)
    mark = dv.log_size()
    for _ in range(5):
        token_of(login(n, user, pw))
    assert metric(n, "nudge_password_backend_requests_total") == 1
    assert metric(n, "nudge_password_cache_hits_total") == 4
    # auth_debug: Dovecot logs each answer to its client, with the user.
    asked = re.findall(rf"client passdb out: OK\t\d+\tuser={re.escape(user)}\b", dv.log_text(mark))
    assert len(asked) == 1, dv.log_tail(since=mark)

    dv.add_user(user, pw + "-new", scheme="SHA512-CRYPT")
    # Until the TTL passes the old password may still work; then it must not.
    deadline = time.monotonic() + 2 + WAIT
    while True:
        r = login(n, user, pw)
        if r.status == 401 or time.monotonic() > deadline:
            break
        assert r.status == 200, r
        time.sleep(0.2)
    assert_refused(r)
    token_of(login(n, user, pw + "-new"))


def test_dovecot_rewrites_the_name(dv, make_nudged):
    """Dovecot answers user=<canonical name>; the token is for that name, on its owner."""
    n = dovecot_nudged(make_nudged, dv)
    user, pw = new_user(dv)
    # passwd-file lookups are case-sensitive; a lower-case passdb name with
    # auth_username_format = %Lu would fold, but the module's Dovecot keeps
    # the default, so ask for the name as stored and check Dovecot's spelling.
    doc = token_of(login(n, user, pw))
    assert doc["user"] == user


# ---- passwd-file --------------------------------------------------------


def write_passwd(path, users):
    """users: name -> stored password field ({SCHEME}hash)."""
    tmp = path.with_suffix(".new")
    tmp.write_text("# written by test_signin.py\n" + "".join(f"{u}:{h}::::::\n" for u, h in users.items()))
    tmp.replace(path)


def test_passwd_file_schemes_plain_refused_and_reload(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    users = {
        "sha": "{SHA512-CRYPT}" + crypt_hash("pw-sha", "SHA512-CRYPT"),
        "blf": "{BLF-CRYPT}" + crypt_hash("pw-blf", "BLF-CRYPT"),
        "yes": "{CRYPT}" + crypt_hash("pw-yes", "YESCRYPT"),
        "plain": "{PLAIN}pw-plain",
    }
    write_passwd(pf, users)
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}"}})
    for u in ("sha", "blf", "yes"):
        assert token_of(login(n, u, f"pw-{u}"))["user"] == u
        assert_refused(login(n, u, "wrong"))
    assert_refused(login(n, "plain", "pw-plain"))
    line = log_line(n, r"event=1207 name=passwd_line_refused ")
    assert "line=5" in line and "plain-text" in line, line
    assert "pw-plain" not in n.log_text()

    # The file changes: a new user, a new password. It is looked at once a
    # second at most, and what the cache learnt from the old file is dropped
    # (a refusal of "late" cached just before must not outlive the change).
    assert_refused(login(n, "late", "pw-late"))
    users["late"] = "{SHA512-CRYPT}" + crypt_hash("pw-late", "SHA512-CRYPT")
    users["sha"] = "{SHA512-CRYPT}" + crypt_hash("pw-sha-2", "SHA512-CRYPT")
    write_passwd(pf, users)
    deadline = time.monotonic() + WAIT
    while True:
        r = login(n, "late", "pw-late")
        if r.status == 200 or time.monotonic() > deadline:
            break
        assert_refused(r)
        time.sleep(0.2)
    token_of(r)
    assert_refused(login(n, "sha", "pw-sha"))
    token_of(login(n, "sha", "pw-sha-2"))


def test_passwd_file_missing_is_a_start_error(make_nudged, tmp_path):
    n = make_nudged({"auth": {"passwords": f"passwd-file:{tmp_path / 'none'}"}}, start=False)
    with pytest.raises(AssertionError):
        n.start(timeout=5 * SLOW)
    line = log_line(n, r"event=1006 name=startup_failed ")
    assert "[auth] passwords (passwd-file)" in line and "none: cannot open" in line, line


# ---- HTTP Basic on the JSON API ------------------------------------------


def test_basic_on_state_and_ping(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    write_passwd(pf, {"ann": "{SHA512-CRYPT}" + crypt_hash("pw-ann", "SHA512-CRYPT")})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}", "basic": "yes"}})
    n.publish("ann", "INBOX")
    r = login(n, "ann", "pw-ann", path="/v1/state", method="GET", body=None)
    assert r.status == 200, r
    assert list(r.json()["folders"]) == ["INBOX"]
    state = r.json()["folders"]["INBOX"]

    body = json.dumps(ping_body("phone", {"INBOX": state}, 60)).encode()
    p = n.pending("POST", "/v1/ping", body, headers={"Authorization": basic("ann", "pw-ann")})
    n.wait_held(1, watch=[p])
    n.publish("ann", "INBOX")
    r = p.result()
    assert r.status == 200 and r.json()["status"] == "changed", r

    r = login(n, "ann", "nope", path="/v1/state", method="GET", body=None)
    assert_refused(r)
    r = n.request("GET", "/v1/state")
    challenges = [v for k, v in r.headers if k.lower() == "www-authenticate"]
    assert r.status == 401 and len(challenges) == 2, r
    assert challenges[0].startswith("Bearer ") and challenges[1].startswith("Basic "), r


def test_basic_off_by_default(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    write_passwd(pf, {"ann": "{SHA512-CRYPT}" + crypt_hash("pw-ann", "SHA512-CRYPT")})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}"}})
    r = login(n, "ann", "pw-ann", path="/v1/state", method="GET", body=None)
    assert r.status == 401, r
    assert r.header("WWW-Authenticate").startswith("Bearer "), r
    assert metric(n, "nudge_password_backend_requests_total") == 0


def test_no_backend_login_is_501(srv):
    r = login(srv, "ann", "pw")
    assert r.status == 501, r
    assert r.json()["status"] == "signin-disabled" and "[auth] passwords" in r.json()["error"], r


# ---- brute force ----------------------------------------------------------


def test_brute_force_is_limited_per_address_and_user(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    names = ("victim", "bystander", "phone")
    write_passwd(pf, {u: "{SHA512-CRYPT}" + crypt_hash(f"pw-{u}", "SHA512-CRYPT") for u in names})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}"}})
    # The phone signed in before the attack, from the address the attacker shares (a NAT).
    token_of(login(n, "phone", "pw-phone", source="127.0.0.2"))
    answers = [login(n, "victim", f"guess-{i}", source="127.0.0.2").status for i in range(100)]
    per_ip = int(n.setting("auth", "max_failures_per_ip", 20))
    assert answers[:per_ip] == [401] * per_ip, answers
    assert answers[per_ip:] == [429] * (100 - per_ip), answers
    r = login(n, "victim", "pw-victim", source="127.0.0.2")
    assert r.status == 429, r
    assert 0 < int(r.header("Retry-After")) <= 300, r
    assert r.json()["status"] == "too-many-failures", r
    n.wait_log(r"event=1204 name=signin_limited key=address value=127.0.0.2 ")
    # Other users and addresses go on; the phone's known password still works from 127.0.0.2.
    token_of(login(n, "bystander", "pw-bystander", source="127.0.0.3"))
    token_of(login(n, "victim", "pw-victim", source="127.0.0.4"))
    token_of(login(n, "phone", "pw-phone", source="127.0.0.2"))
    assert_refused(login(n, "bystander", "wrong", source="127.0.0.3"))
    assert metric(n, "nudge_signins_limited_total") == 81


def test_per_user_limit_across_addresses(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    write_passwd(pf, {u: "{SHA512-CRYPT}" + crypt_hash(f"pw-{u}", "SHA512-CRYPT") for u in ("bob", "eve")})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}", "max_failures_per_user": 6,
                              "max_failures_per_ip": 100}})
    for i in range(6):
        assert_refused(login(n, "Bob" if i % 2 else "bob", "guess", source=f"127.0.1.{i + 1}"))
    r = login(n, "bob", "pw-bob", source="127.0.1.50")
    assert r.status == 429, r
    n.wait_log(r"event=1204 name=signin_limited key=user value=Bob ")
    token_of(login(n, "eve", "pw-eve", source="127.0.1.50"))


# ---- revocation and rotation ----------------------------------------------


def test_revocation_across_restart_with_workers(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    names = [f"r{i}" for i in range(6)]
    write_passwd(pf, {u: "{SHA512-CRYPT}" + crypt_hash(f"pw-{u}", "SHA512-CRYPT") for u in names})
    n = make_nudged({"server": {"workers": 3}, "auth": {"passwords": f"passwd-file:{pf}"}})
    tokens = {u: token_of(login(n, u, f"pw-{u}"))["token"] for u in names}
    minted = n.token("r0")  # an admin-minted token of the same user dies too
    victim, cli_victim = "r0", "r1"
    held = n.pending("POST", "/v1/ping", ping_body("p", {"INBOX": "0"}, 600), token=tokens[victim])
    n.wait_held(1, watch=[held])

    r = n.request("DELETE", f"/v1/admin/tokens/{victim}", token=n.admin_token())
    assert r.status == 200, r
    doc = r.json()
    assert doc["status"] == "revoked" and doc["user"] == victim and doc["sessions"] == 1, doc
    # Its held ping ends as an ended session does: closed without an answer.
    with pytest.raises(AssertionError, match="closed without"):
        held.result()
    n.wait_held(0)
    for tok in (tokens[victim], minted):
        r = n.get_state(tok)
        assert r.status == 401 and "revoked" in r.json()["error"], r
    n.wait_log(rf"event=1208 name=tokens_revoked user={victim} ")

    p = n.cli("token", "--revoke", cli_victim, "--url", n.url, "--token", n.admin_token())
    assert p.returncode == 0, p.stderr
    assert n.get_state(tokens[cli_victim]).status == 401

    # A new sign-in after the revocation works.
    fresh = token_of(login(n, victim, f"pw-{victim}"))["token"]
    n.stop()
    n.start()
    for u in names:
        r = n.get_state(tokens[u])
        assert r.status == (401 if u in (victim, cli_victim) else 200), (u, r)
    assert n.get_state(fresh).status == 200
    assert n.get_state(n.token("r2")).status == 200


def test_rotation_keeps_old_tokens_until_the_next(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    write_passwd(pf, {"kim": "{SHA512-CRYPT}" + crypt_hash("pw-kim", "SHA512-CRYPT")})
    n = make_nudged({"server": {"workers": 3}, "auth": {"passwords": f"passwd-file:{pf}"}})
    first = token_of(login(n, "kim", "pw-kim"))["token"]
    v1 = harness.sign_token(n.secret(), "u", "kim")  # a v1 token of the same key
    p = n.cli("token", "--rotate-secret", "-c", str(n.conf))
    assert p.returncode == 0, p.stderr
    lines = n.secret_path().read_text().splitlines()
    assert len(lines) == 2, lines
    n.stop()
    n.start()
    second = token_of(login(n, "kim", "pw-kim"))["token"]
    assert first.split(".")[5] != second.split(".")[5], (first, second)
    for tok in (first, v1, second):
        assert n.get_state(tok).status == 200, tok
    p = n.cli("token", "--rotate-secret", "-c", str(n.conf))
    assert p.returncode == 0, p.stderr
    n.stop()
    n.start()
    for tok in (first, v1):
        r = n.get_state(tok)
        assert r.status == 401, r
    assert n.get_state(second).status == 200


def test_token_cli_usage_errors(srv):
    for args, want in ((["--revoke"], "--revoke"), (["--revoke", "a", "--user", "b"], "--revoke"),
                       (["--rotate-secret", "--user", "b"], "--rotate-secret")):
        p = srv.cli("token", "-c", str(srv.conf), *args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert want in p.stderr, (args, p.stderr)
    p = srv.cli("token", "--revoke", "a", "--url", srv.url, "--token", srv.token("a"))
    assert p.returncode == 1 and "HTTP 403" in p.stderr, (p.returncode, p.stderr)
