"""POST /v1/ping: held pings, changes, expiry, reuse of a device's parameters,
superseding, and isolation between devices and users (docs/api.md)."""
import pytest

from harness import WAIT, expect_error

# Long enough never to expire during a test; pings that must expire use 1-2 s.
HOLD = 300


def test_publish_answers_held_ping_with_only_the_changed_folder(srv):
    alice = srv.user("alice")
    p = alice.ping_async("phone1", {"INBOX": "0", "Calendar": "0"}, HOLD)
    srv.wait_held(1, watch=[p])
    assert srv.publish(alice.name, "INBOX") == "1"
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})
    srv.wait_held(0)


def test_stale_state_is_answered_at_once(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    alice.publish("INBOX")
    # Calendar is current ("0"), INBOX is behind: only INBOX comes back, and
    # without waiting for the (long) heartbeat.
    r = alice.ping("phone1", {"INBOX": "1", "Calendar": "0"}, HOLD, timeout=WAIT)
    srv.check_ping(r, "changed", {"INBOX": "2"})
    r = alice.ping("phone1", {"INBOX": "0"}, HOLD, timeout=WAIT)
    srv.check_ping(r, "changed", {"INBOX": "2"})


def test_current_state_is_held_not_answered(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    p = alice.ping_async("phone1", {"INBOX": "1"}, HOLD)
    srv.wait_held(1, watch=[p])
    alice.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "2"})


def test_heartbeat_expiry_answers_expired(srv):
    alice = srv.user("alice")
    r = alice.ping("phone1", {"INBOX": "0"}, 1, timeout=WAIT)
    body = srv.check_ping(r, "expired")
    assert "folders" not in body or not body["folders"], r


def test_publish_to_another_folder_does_not_wake(srv):
    alice = srv.user("alice")
    p = alice.ping_async("phone1", {"INBOX": "0"}, HOLD)
    srv.wait_held(1, watch=[p])
    alice.publish("Trash")
    srv.wait_held(1, watch=[p])
    alice.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})


def test_empty_body_reuses_folders_and_told_states(srv):
    alice = srv.user("alice")
    p = alice.ping_async("phone1", {"INBOX": "0", "Calendar": "0"}, HOLD)
    srv.wait_held(1, watch=[p])
    alice.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})
    # Empty body: INBOX is presented at its told state "1", Calendar as last
    # presented ("0"), so nothing differs and the ping is held.
    p = alice.empty_ping_async("phone1")
    srv.wait_held(1, watch=[p])
    alice.publish("Calendar")
    srv.check_ping(p.result(), "changed", {"Calendar": "1"})


def test_empty_body_reuses_heartbeat(srv):
    alice = srv.user("alice")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 2), "expired")
    # Reusing heartbeat 2 means this expires within seconds too; a server that
    # forgot it would refuse (missing-parameters) or hold it far longer.
    p = alice.empty_ping_async("phone1")
    srv.check_ping(p.result(WAIT), "expired")


def test_empty_body_for_unknown_device_is_missing_parameters(srv):
    alice = srv.user("alice")
    p = alice.empty_ping_async("never-seen")
    expect_error(p.result(), 400, "missing-parameters")


def test_empty_body_does_not_reuse_another_users_device(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 1), "expired")
    expect_error(bob.empty_ping_async("phone1").result(), 400, "missing-parameters")


def test_omitted_heartbeat_reuses_last(srv):
    alice = srv.user("alice")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 2), "expired")
    r = alice.ping("phone1", {"INBOX": "0"}, timeout=WAIT)
    srv.check_ping(r, "expired")


def test_omitted_folders_reuse_last(srv):
    alice = srv.user("alice")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 1), "expired")
    p = alice.ping_async("phone1", heartbeat=HOLD)
    srv.wait_held(1, watch=[p])
    alice.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})


@pytest.mark.parametrize("body", [{"folders": {"INBOX": "0"}}, {"heartbeat": 60}, {}],
                         ids=["no-heartbeat", "no-folders", "neither"])
def test_omitted_fields_for_new_device_are_missing_parameters(srv, body):
    alice = srv.user("alice")
    r = alice.ping("brand-new-device", **body)
    expect_error(r, 400, "missing-parameters")


def test_second_ping_supersedes_first(srv):
    alice = srv.user("alice")
    first = alice.ping_async("phone1", {"INBOX": "0"}, HOLD)
    srv.wait_held(1, watch=[first])
    second = alice.ping_async("phone1", {"INBOX": "0"}, HOLD)
    body = srv.check_ping(first.result(), "superseded")
    assert "folders" not in body or not body["folders"], body
    # The new ping goes on: still held, and a publish answers it.
    srv.wait_held(1, watch=[second])
    alice.publish("INBOX")
    srv.check_ping(second.result(), "changed", {"INBOX": "1"})
    srv.wait_log(r"event=1300 name=ping_superseded")


def test_devices_are_independent(srv):
    alice = srv.user("alice")
    phone = alice.ping_async("phone", {"INBOX": "0"}, HOLD)
    srv.wait_held(1, watch=[phone])
    tablet = alice.ping_async("tablet", {"INBOX": "0"}, HOLD)
    # A second device does not supersede the first: both are held.
    srv.wait_held(2, watch=[phone, tablet])
    alice.publish("INBOX")
    srv.check_ping(phone.result(), "changed", {"INBOX": "1"})
    srv.check_ping(tablet.result(), "changed", {"INBOX": "1"})


def test_same_device_name_of_two_users_is_two_devices(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    a = alice.ping_async("phone1", {"INBOX": "0"}, HOLD)
    srv.wait_held(1, watch=[a])
    b = bob.ping_async("phone1", {"INBOX": "0"}, HOLD)
    srv.wait_held(2, watch=[a, b])
    bob.publish("INBOX")
    srv.check_ping(b.result(), "changed", {"INBOX": "1"})
    srv.wait_held(1, watch=[a])
    alice.publish("INBOX")
    srv.check_ping(a.result(), "changed", {"INBOX": "1"})


def test_users_are_isolated(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    p = alice.ping_async("phone1", {"INBOX": "0"}, HOLD)
    srv.wait_held(1, watch=[p])
    bob.publish("INBOX")
    bob.publish("INBOX")
    # Bob's INBOX is not Alice's: she is still held ...
    srv.wait_held(1, watch=[p])
    assert not p.done()
    # ... and her own publish brings her own state, not Bob's "2".
    alice.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})


def test_user_with_spaces_and_dots_in_name(srv):
    u = srv.user("first.last name@example.com ")
    p = u.ping_async("phone1", {"INBOX": "0"}, HOLD)
    srv.wait_held(1, watch=[p])
    u.publish("INBOX")
    srv.check_ping(p.result(), "changed", {"INBOX": "1"})


def test_folder_names_are_opaque_bytes(srv):
    alice = srv.user("alice")
    folders = {"Sent Items": "0", "Archive/2024": "0", "Entw\u00fcrfe": "0", "a,b": "0"}
    p = alice.ping_async("phone1", folders, HOLD)
    srv.wait_held(1, watch=[p])
    alice.publish("Entw\u00fcrfe")
    srv.check_ping(p.result(), "changed", {"Entw\u00fcrfe": "1"})


def test_ping_without_any_body_reuses_like_an_empty_body(srv):
    # POST without Content-Length carries no body (RFC 9112 6.3): the same as
    # an empty body, so the device's saved parameters apply.
    alice = srv.user("alice")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 1), "expired")
    r = srv.request("POST", "/v1/ping?device=phone1", None, token=alice.token)
    srv.check_ping(r, "expired")


def test_device_in_query_is_url_decoded(srv):
    alice = srv.user("alice")
    srv.check_ping(alice.ping("my phone/1", {"INBOX": "0"}, 1), "expired")
    p = alice.empty_ping_async("my phone/1")  # sent as my%20phone%2F1
    srv.check_ping(p.result(), "expired")


def test_one_publish_wakes_many_held_pings(srv):
    alice = srv.user("alice")
    n = 32  # every session a user may hold at the default [sessions] per_user_limit
    pings = [alice.ping_async(f"device{i}", {"INBOX": "0", f"Own{i}": "0"}, HOLD) for i in range(n)]
    srv.wait_held(n, watch=pings)
    alice.publish("INBOX")
    for p in pings:
        srv.check_ping(p.result(), "changed", {"INBOX": "1"})
    srv.wait_held(0)
