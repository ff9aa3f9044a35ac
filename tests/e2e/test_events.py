"""POST /v1/events: publishing, batches (all or nothing) and validation."""
import pytest

from harness import expect_error


def test_single_event_answers_new_state(srv):
    alice = srv.user("alice")
    r = srv.publish_raw({"user": alice.name, "folder": "INBOX", "type": "new", "subject": "Hello"})
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    assert r.json() == {"states": [{"user": alice.name, "folder": "INBOX", "state": "1"}]}
    r = srv.publish_raw({"user": alice.name, "folder": "INBOX"})
    assert r.json() == {"states": [{"user": alice.name, "folder": "INBOX", "state": "2"}]}, r


def test_batch_answers_states_in_order(srv):
    a, b = srv.user("a"), srv.user("b")
    events = [
        {"user": a.name, "folder": "INBOX"},
        {"user": b.name, "folder": "INBOX", "type": "read"},
        {"user": a.name, "folder": "INBOX", "type": "expunge"},
        {"user": a.name, "folder": "Calendar", "type": "mailbox-create"},
    ]
    r = srv.publish_raw(events)
    assert r.status == 200, r
    assert r.json() == {"states": [
        {"user": a.name, "folder": "INBOX", "state": "1"},
        {"user": b.name, "folder": "INBOX", "state": "1"},
        {"user": a.name, "folder": "INBOX", "state": "2"},
        {"user": a.name, "folder": "Calendar", "state": "1"},
    ]}
    assert a.states() == {"INBOX": "2", "Calendar": "1"}


def test_batch_wakes_held_ping(srv):
    alice = srv.user("alice")
    p = alice.ping_async("phone1", {"INBOX": "0", "Calendar": "0", "Notes": "0"}, 300)
    srv.wait_held(1, watch=[p])
    r = srv.publish_raw([{"user": alice.name, "folder": "INBOX"}, {"user": alice.name, "folder": "INBOX"}])
    assert r.status == 200, r
    body = srv.check_ping(p.result(), "changed")
    # Woken by the first or after the second event: either way only INBOX.
    assert body["folders"] in ({"INBOX": "1"}, {"INBOX": "2"}), body


def test_bad_element_refuses_whole_batch(srv):
    alice = srv.user("alice")
    events = [
        {"user": alice.name, "folder": "INBOX"},
        {"user": alice.name, "folder": "Calendar"},
        {"user": alice.name, "folder": "Notes"},
        {"user": alice.name, "folder": ""},
    ]
    body = expect_error(srv.publish_raw(events), 400, "bad-request", has_error=True)
    assert "events[3]" in body["error"], body
    # Nothing of it was applied.
    assert alice.states(["INBOX", "Calendar", "Notes"]) == {"INBOX": "0", "Calendar": "0", "Notes": "0"}
    assert alice.states() == {}
    srv.wait_log(r"event=1400 name=publish_rejected")


def test_bad_first_element_is_named(srv):
    alice = srv.user("alice")
    body = expect_error(srv.publish_raw([{"folder": "INBOX"}, {"user": alice.name, "folder": "INBOX"}]),
                        400, "bad-request", has_error=True)
    assert "events[0]" in body["error"], body
    assert alice.states(["INBOX"]) == {"INBOX": "0"}


def test_refused_batch_does_not_wake_held_ping(srv):
    alice = srv.user("alice")
    p = alice.ping_async("phone1", {"INBOX": "0"}, 300)
    srv.wait_held(1, watch=[p])
    r = srv.publish_raw([{"user": alice.name, "folder": "INBOX"}, {"user": alice.name, "folder": "INBOX", "type": "NEW"}])
    expect_error(r, 400, "bad-request")
    srv.wait_held(1, watch=[p])
    alice.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})


def test_empty_array_is_refused(srv):
    expect_error(srv.publish_raw([]), 400, "bad-request", has_error=True)


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"42", b'"alice"', b"null", b"[1, 2]",
                                  b'{"user":"a","folder":"INBOX"} x'],
                         ids=["empty", "text", "brace", "number", "string", "null", "array-of-numbers",
                              "trailing"])
def test_non_json_or_wrong_shape_is_refused(srv, body):
    r = srv.request("POST", "/v1/events", body, token=srv.publisher_token())
    expect_error(r, 400, "bad-request", has_error=True)


@pytest.mark.parametrize("event", [
    {"folder": "INBOX"},
    {"user": "", "folder": "INBOX"},
    {"user": "u" * 256, "folder": "INBOX"},
    {"user": 5, "folder": "INBOX"},
    {"user": "alice"},
    {"user": "alice", "folder": ""},
    {"user": "alice", "folder": "F" * 256},
    {"user": "alice", "folder": "IN\x01BOX"},
    {"user": "alice", "folder": ["INBOX"]},
    {"user": "alice", "folder": "INBOX", "type": ""},
    {"user": "alice", "folder": "INBOX", "type": "NEW"},
    {"user": "alice", "folder": "INBOX", "type": "new mail"},
    {"user": "alice", "folder": "INBOX", "type": "t" * 33},
    {"user": "alice", "folder": "INBOX", "type": 1},
], ids=["no-user", "empty-user", "long-user", "number-user", "no-folder", "empty-folder", "long-folder",
        "control-folder", "array-folder", "empty-type", "upper-type", "space-type", "long-type", "number-type"])
def test_bad_event_is_refused(srv, event):
    r = srv.publish_raw(event)
    expect_error(r, 400, "bad-request", has_error=True)


def test_limits_are_inclusive(srv):
    user = srv.user("u")
    long_user = user.name + "u" * (255 - len(user.name))
    r = srv.publish_raw({"user": long_user, "folder": "F" * 255, "type": "t" * 32})
    assert r.status == 200, r
    assert r.json()["states"][0]["state"] == "1"


def test_type_alphabet(srv):
    alice = srv.user("alice")
    r = srv.publish_raw({"user": alice.name, "folder": "INBOX", "type": "a-z_0-9"})
    assert r.status == 200, r


def test_metadata_fields_are_accepted(srv):
    alice = srv.user("alice")
    ev = {"user": alice.name, "folder": "INBOX", "type": "new", "subject": "Hello \u00e9", "from": "bob@example.com",
          "unseen": 3, "uid": 12345, "flags": ["\\Seen"], "extra": {"nested": True}, "none": None}
    r = srv.publish_raw(ev)
    assert r.status == 200, r
    assert r.json() == {"states": [{"user": alice.name, "folder": "INBOX", "state": "1"}]}


def test_events_are_per_user_and_folder(srv):
    a, b = srv.user("a"), srv.user("b")
    a.publish("INBOX")
    a.publish("INBOX")
    b.publish("INBOX")
    a.publish("Other")
    assert a.states() == {"INBOX": "2", "Other": "1"}
    assert b.states() == {"INBOX": "1"}
