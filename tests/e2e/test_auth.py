"""Credentials: 401 for missing/invalid/expired tokens, 403 for the wrong kind,
and a user can only ever see its own folders (docs/api.md, src/auth/token.h)."""
import os
import time

import pytest

from harness import b64url, expect_error, flip_mac_char, sign_token

PING = {"device": "phone1", "heartbeat": 60, "folders": {"INBOX": "0"}}

# (method, path, body) of every endpoint that needs a credential.
ENDPOINTS = [
    ("POST", "/v1/ping", PING),
    ("GET", "/v1/state", None),
    ("POST", "/v1/events", {"user": "alice", "folder": "INBOX"}),
    ("GET", "/metrics", None),
]
IDS = ["ping", "state", "events", "metrics"]


def expect_401(r, error):
    body = expect_error(r, 401, "unauthorized")
    assert body.get("error") == error, r
    www = r.header("WWW-Authenticate")
    assert www is not None, f"401 without WWW-Authenticate: {r!r}"
    assert www.startswith("Bearer ") and 'realm="nudge"' in www, www
    return www


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=IDS)
def test_missing_token_is_401_without_error_param(srv, method, path, body):
    r = srv.request(method, path, body)
    www = expect_401(r, "missing bearer token")
    assert "error=" not in www, www


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=IDS)
def test_bad_signature_is_401(srv, method, path, body):
    kind = {"/v1/events": "p", "/metrics": "a"}.get(path, "u")
    tok = flip_mac_char(srv.sign(kind, "alice", 0))
    www = expect_401(srv.request(method, path, body, token=tok), "bad signature")
    assert 'error="invalid_token"' in www, www


def test_flipped_mac_of_cli_token_is_401(srv):
    tok = srv.token("alice")
    assert srv.request("GET", "/v1/state", token=tok).status == 200
    expect_401(srv.request("GET", "/v1/state", token=flip_mac_char(tok)), "bad signature")


def test_token_of_another_secret_is_401(srv):
    tok = sign_token(os.urandom(32), "u", "alice", 0)
    expect_401(srv.request("GET", "/v1/state", token=tok), "bad signature")


def test_changed_subject_is_401(srv):
    # Alice's signature glued to Bob's name must not make anyone Bob.
    v, kind, _, exp, mac = srv.sign("u", "alice", 0).split(".")
    forged = ".".join([v, kind, b64url(b"bob"), exp, mac])
    expect_401(srv.request("GET", "/v1/state", token=forged), "bad signature")


def test_changed_kind_is_401(srv):
    v, _, subj, exp, mac = srv.sign("u", "alice", 0).split(".")
    forged = ".".join([v, "p", subj, exp, mac])
    expect_401(srv.request("POST", "/v1/events", {"user": "alice", "folder": "INBOX"}, token=forged),
               "bad signature")


def test_changed_expiry_is_401(srv):
    v, kind, subj, _, mac = srv.sign("u", "alice", int(time.time()) - 100).split(".")
    forged = ".".join([v, kind, subj, "0", mac])
    expect_401(srv.request("GET", "/v1/state", token=forged), "bad signature")


def test_expired_token_is_401(srv):
    tok = srv.sign("u", "alice", int(time.time()) - 60)
    www = expect_401(srv.request("GET", "/v1/state", token=tok), "token expired")
    assert 'error="invalid_token"' in www, www


def test_token_with_future_expiry_is_accepted(srv):
    tok = srv.sign("u", "alice", int(time.time()) + 3600)
    r = srv.request("GET", "/v1/state", token=tok)
    assert r.status == 200, r


def test_python_signed_token_reaches_the_same_user_as_cli_token(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    mine = srv.sign("u", alice.name, 0)
    r = srv.request("GET", "/v1/state?folders=INBOX", token=mine)
    assert r.status == 200 and r.json() == {"folders": {"INBOX": "1"}}, r


@pytest.mark.parametrize("tok", [
    "garbage", "v1.u.YWxpY2U.0", "v2.u.YWxpY2U.0.AAAA", "v1.x.YWxpY2U.0.AAAA", "v1.u..0.AAAA",
    "v1.u.YWxpY2U.soon.AAAA", "v1.u.YWxpY2U.0.", "v1.u.YWxp*2U.0.AAAA", "",
], ids=["word", "no-mac", "version", "kind", "empty-subject", "expiry-text", "empty-mac", "bad-b64", "empty"])
def test_malformed_token_is_401(srv, tok):
    r = srv.request("GET", "/v1/state", token=tok)
    body = expect_error(r, 401, "unauthorized")
    # An empty bearer value may be treated as no token at all.
    allowed = {"malformed token", "missing bearer token"} if tok == "" else {"malformed token", "bad signature"}
    assert body.get("error") in allowed, r
    assert r.header("WWW-Authenticate"), r


def test_non_bearer_scheme_is_401(srv):
    tok = srv.token("alice")
    r = srv.request("GET", "/v1/state", headers={"Authorization": f"Basic {tok}"})
    expect_error(r, 401, "unauthorized")
    assert r.header("WWW-Authenticate"), r


def test_auth_failure_is_logged(srv):
    srv.request("GET", "/v1/state", token=flip_mac_char(srv.sign("u", "alice", 0)))
    srv.wait_log(r"event=1200 name=auth_failed")


@pytest.mark.parametrize("who,method,path,body", [
    ("user", "POST", "/v1/events", {"user": "alice", "folder": "INBOX"}),
    ("user", "GET", "/metrics", None),
    ("publisher", "POST", "/v1/ping", PING),
    ("publisher", "GET", "/v1/state", None),
    ("publisher", "GET", "/metrics", None),
], ids=["user-events", "user-metrics", "publisher-ping", "publisher-state", "publisher-metrics"])
def test_wrong_kind_is_403(srv, who, method, path, body):
    tok = srv.token("alice") if who == "user" else srv.publisher_token()
    r = srv.request(method, path, body, token=tok)
    expect_error(r, 403, "forbidden", has_error=True)


def test_wrong_kind_publish_applies_nothing(srv):
    alice = srv.user("alice")
    r = srv.request("POST", "/v1/events", {"user": alice.name, "folder": "INBOX"}, token=alice.token)
    assert r.status == 403, r
    assert alice.states(["INBOX"]) == {"INBOX": "0"}


def test_user_cannot_read_another_users_state(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    bob.publish("Secret")
    bob.publish("INBOX")
    # The user comes from the token: naming Bob in the query changes nothing.
    for path in ["/v1/state", f"/v1/state?user={bob.name}", f"/v1/state?user={bob.name}&folders=INBOX,Secret"]:
        r = srv.request("GET", path, token=alice.token)
        assert r.status in (200, 400), r
        if r.status == 200:
            folders = r.json()["folders"]
            assert "Secret" not in folders or folders["Secret"] == "0", r
            assert folders.get("INBOX", "0") == "0", r
    assert alice.states() == {}


def test_user_named_in_ping_body_has_no_effect(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    bob.publish("INBOX")
    # Bob's INBOX is at "1", Alice's at "0". A ping by Alice that names Bob is
    # about Alice's INBOX (or refused): never answered with Bob's state.
    body = {"device": "phone1", "heartbeat": 1, "folders": {"INBOX": "0"}}
    for path, extra in [("/v1/ping", {"user": bob.name}), (f"/v1/ping?user={bob.name}", {})]:
        r = srv.request("POST", path, {**body, **extra}, token=alice.token)
        assert r.status in (200, 400), r
        if r.status == 200:
            srv.check_ping(r, "expired")


def test_publisher_token_can_publish_for_any_user(srv):
    a, b = srv.user("a"), srv.user("b")
    r = srv.publish_raw([{"user": a.name, "folder": "INBOX"}, {"user": b.name, "folder": "INBOX"}])
    assert r.status == 200, r
    assert a.states(["INBOX"]) == {"INBOX": "1"} and b.states(["INBOX"]) == {"INBOX": "1"}


def test_nonzero_padding_bits_in_mac_are_refused(srv):
    # 32 bytes take 43 base64url characters; the last one carries 4 data bits
    # and 2 unused ones, which must be zero. Setting them would give a second
    # spelling of a valid token: refused as malformed (docs/auth.md).
    tok = srv.sign("u", "alice", 0)
    assert srv.request("GET", "/v1/state", token=tok).status == 200
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    head, last = tok[:-1], tok[-1]
    twin = head + alphabet[alphabet.index(last) | 1]
    assert twin != tok
    r = srv.request("GET", "/v1/state", token=twin)
    body = expect_error(r, 401, "unauthorized")
    assert body.get("error") == "malformed token", r


def test_longest_user_id_works_end_to_end(srv):
    name = srv.user("long").name
    name = name + "x" * (255 - len(name))
    tok = srv.sign("u", name, 0)
    srv.publish(name, "INBOX")
    r = srv.request("GET", "/v1/state?folders=INBOX", token=tok)
    assert r.status == 200 and r.json() == {"folders": {"INBOX": "1"}}, r


def test_oversized_token_is_401_not_a_crash(srv):
    r = srv.request("GET", "/v1/state", token="v1.u." + "A" * 2000 + ".0.AAAA")
    body = expect_error(r, 401, "unauthorized")
    assert body.get("error") == "malformed token", r
    assert srv.healthy()
