"""PUT /v1/ingest/dovecot (docs/dovecot.md): the body Dovecot's OX push
driver sends, with its HTTP Basic credentials, becomes a new-mail event.
These tests speak the driver's exact request themselves; test_dovecot.py
does the same with a real Dovecot delivering real mail.
"""
import base64
import time

from harness import WAIT, expect_error, log_events

USER, PASSWORD = "dovecot", "s3cret:with colon"
NUDGED_SETTINGS = {"ingest": {"basic_user": USER, "basic_password": PASSWORD}}


def basic(user=USER, password=PASSWORD):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ox_body(user, uid=1, uidvalidity=1795312227, folder="INBOX", **extra):
    body = {"user": user, "event": "messageNew", "folder": folder, "imap-uidvalidity": uidvalidity,
            "imap-uid": uid, "from": "=?UTF-8?Q?J=C3=B6rg?= <j@example.org>",
            "subject": "=?UTF-8?B?SGFsbG8gV2VsdA==?=", "snippet": "hi", "unseen": 1}
    body.update(extra)
    return body


def put(srv, body, auth=None, method="PUT"):
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if auth is not False:
        headers["Authorization"] = auth or basic()
    return srv.request(method, "/v1/ingest/dovecot", body, headers=headers)


def test_a_delivery_wakes_a_held_ping_with_the_new_state(srv):
    u = srv.user()
    held = srv.held()
    p = u.ping_async("phone", {"INBOX": "0"}, 600)
    srv.wait_held(held + 1, watch=[p])
    r = put(srv, ox_body(u.name, uid=1))
    assert r.status == 200, r
    assert r.json() == {"states": [{"user": u.name, "folder": "INBOX", "state": "1"}]}
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})


def test_a_retried_delivery_is_not_counted_twice(srv):
    u = srv.user()
    first = put(srv, ox_body(u.name, uid=7))
    again = put(srv, ox_body(u.name, uid=7))
    assert first.status == again.status == 200, (first, again)
    assert again.json() == {"states": [{"user": u.name, "folder": "INBOX", "state": "1"}],
                            "duplicate": True}
    assert u.states(["INBOX"]) == {"INBOX": "1"}
    # Another message (uid), another mailbox generation (uidvalidity), another folder count.
    assert put(srv, ox_body(u.name, uid=8)).json()["states"][0]["state"] == "2"
    assert put(srv, ox_body(u.name, uid=7, uidvalidity=5)).json()["states"][0]["state"] == "3"
    assert put(srv, ox_body(u.name, uid=7, folder="Other")).json()["states"][0]["state"] == "1"
    assert srv.metric("nudge_ingest_duplicates_total") >= 1


def test_without_uids_every_request_counts(srv):
    u = srv.user()
    body = {"user": u.name, "event": "messageNew", "folder": "INBOX"}
    assert put(srv, body).json()["states"][0]["state"] == "1"
    assert put(srv, body).json()["states"][0]["state"] == "2"


def test_post_works_too(srv):
    u = srv.user()
    r = put(srv, ox_body(u.name), method="POST")
    assert r.status == 200 and r.json()["states"][0]["state"] == "1", r


def test_wrong_or_missing_credentials_are_refused(srv):
    u = srv.user()
    for auth in (False, basic(password="nope"), basic(user="x"), "Basic !!!!", "Basic",
                 "Bearer " + u.token, basic(password=PASSWORD + "x")):
        r = put(srv, ox_body(u.name), auth=auth)
        expect_error(r, 401, "unauthorized", True)
        assert r.header("WWW-Authenticate") == 'Basic realm="nudge"', r
    assert u.states(["INBOX"]) == {"INBOX": "0"}
    assert any("ingest" in e.get("reason", "") for e in log_events(srv, 1200))


def test_bad_bodies_are_refused_with_the_reason(srv):
    u = srv.user()
    cases = [
        (b"", "body must be"),
        (b"{", "malformed JSON"),
        (b"[]", "must be a JSON object"),
        ({"event": "messageNew", "folder": "INBOX"}, "user: must be a string"),
        ({"user": "", "event": "messageNew", "folder": "INBOX"}, "user: must not be empty"),
        ({"user": u.name, "event": "messageNew"}, "folder: must be a string"),
        ({"user": u.name, "event": "messageNew", "folder": "a\u0007"}, "folder: must not contain control"),
        ({"user": u.name, "folder": "INBOX"}, "event: must be a string"),
        ({"user": u.name, "event": "messageRead", "folder": "INBOX"}, "not an event of the OX push driver"),
        (ox_body(u.name, uid="2"), "imap-uid: must be a whole number"),
        (ox_body(u.name, uid=0), "imap-uid: must be a whole number"),
        (ox_body(u.name, uidvalidity=-1), "imap-uidvalidity: must be a whole number"),
    ]
    for body, words in cases:
        b = expect_error(put(srv, body), 400, "bad-request", True)
        assert words in b["error"], f"{body!r}: {b['error']!r}"
    assert u.states(["INBOX"]) == {"INBOX": "0"}


def test_the_window_ends(make_nudged):
    n = make_nudged({"ingest": {"basic_user": USER, "basic_password": PASSWORD, "dedup_window": 1}})
    u = n.user()
    assert put(n, ox_body(u.name, uid=3)).json()["states"][0]["state"] == "1"
    time.sleep(1.5)
    assert put(n, ox_body(u.name, uid=3)).json()["states"][0]["state"] == "2"


def test_off_without_credentials(make_nudged):
    n = make_nudged()
    u = n.user()
    expect_error(put(n, ox_body(u.name)), 501, "ingest-disabled", True)


def test_half_configured_credentials_refuse_to_start(make_nudged):
    n = make_nudged({"ingest": {"basic_user": USER}}, start=False)
    try:
        n.start(timeout=WAIT)
    except AssertionError as e:
        assert "basic_user and basic_password go together" in str(e)
    else:
        raise AssertionError("nudged started with only [ingest] basic_user")
