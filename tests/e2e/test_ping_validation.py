"""POST /v1/ping refusals: heartbeat bounds, folder count, malformed bodies."""
import pytest

from harness import expect_error

# Bounds that are neither the defaults (60..1680, 100) nor each other, so an
# answer that names them proves they come from the config file.
NUDGED_SETTINGS = {"heartbeat": {"min": 2, "max": 600}, "ping": {"max_folders": 5}}


@pytest.mark.parametrize("heartbeat", [0, 1, 601, 100000])
def test_heartbeat_out_of_range_names_the_bounds(srv, heartbeat):
    alice = srv.user("alice")
    r = alice.ping("phone1", {"INBOX": "0"}, heartbeat)
    body = expect_error(r, 400, "heartbeat-out-of-range")
    assert body.get("min") == 2 and body.get("max") == 600, r


@pytest.mark.parametrize("heartbeat", [2, 600])
def test_heartbeat_bounds_are_inclusive(srv, heartbeat):
    alice = srv.user("alice")
    alice.publish("INBOX")  # stale state: answered at once, whatever the heartbeat
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, heartbeat), "changed", {"INBOX": "1"})


def test_too_many_folders_names_the_max(srv):
    alice = srv.user("alice")
    folders = {f"F{i}": "0" for i in range(6)}
    body = expect_error(alice.ping("phone1", folders, 60), 400, "too-many-folders")
    assert body.get("max") == 5, body


def test_max_folders_is_accepted(srv):
    alice = srv.user("alice")
    alice.publish("F4")
    folders = {f"F{i}": "0" for i in range(5)}
    srv.check_ping(alice.ping("phone1", folders, 60), "changed", {"F4": "1"})


def test_zero_folders_is_bad_request(srv):
    alice = srv.user("alice")
    expect_error(alice.ping("phone1", {}, 60), 400, "bad-request", has_error=True)


@pytest.mark.parametrize("state", ["abc", "-1", "01", "", " 1", "1.0", "18446744073709551616", 17, None, ["1"]],
                         ids=["abc", "minus1", "leading-zero", "empty", "space", "decimal", "overflow",
                              "number", "null", "array"])
def test_bad_state_is_bad_request(srv, state):
    alice = srv.user("alice")
    r = alice.ping("phone1", {"INBOX": state}, 60)
    expect_error(r, 400, "bad-request", has_error=True)


def test_largest_state_is_accepted(srv):
    alice = srv.user("alice")
    # The server is at "0", the client claims 2^64-1: they differ, so the
    # answer is immediate and carries the server's truth.
    r = alice.ping("phone1", {"INBOX": "18446744073709551615"}, 60)
    srv.check_ping(r, "changed", {"INBOX": "0"})


@pytest.mark.parametrize("body", [
    b"{", b"not json", b'{"device":"d","heartbeat":60,"folders":{"INBOX":"0"}', b"[]", b"42", b'"str"',
    b'{"device":"d","heartbeat":60,"folders":{"INBOX":"0"}} trailing',
], ids=["open-brace", "text", "unterminated", "array", "number", "string", "trailing-garbage"])
def test_malformed_json_is_bad_request(srv, body):
    alice = srv.user("alice")
    r = srv.request("POST", "/v1/ping", body, token=alice.token)
    expect_error(r, 400, "bad-request", has_error=True)


@pytest.mark.parametrize("fields", [
    {"heartbeat": 60, "folders": {"INBOX": "0"}},                       # no device
    {"device": "", "heartbeat": 60, "folders": {"INBOX": "0"}},         # empty device
    {"device": "d" * 129, "heartbeat": 60, "folders": {"INBOX": "0"}},  # device too long
    {"device": "ph\x01one", "heartbeat": 60, "folders": {"INBOX": "0"}},
    {"device": 7, "heartbeat": 60, "folders": {"INBOX": "0"}},
    {"device": "d", "heartbeat": "60", "folders": {"INBOX": "0"}},
    {"device": "d", "heartbeat": 60.5, "folders": {"INBOX": "0"}},
    {"device": "d", "heartbeat": -5, "folders": {"INBOX": "0"}},
    {"device": "d", "heartbeat": 60, "folders": ["INBOX"]},
    {"device": "d", "heartbeat": 60, "folders": "INBOX"},
    {"device": "d", "heartbeat": 60, "folders": {"": "0"}},
    {"device": "d", "heartbeat": 60, "folders": {"F" * 256: "0"}},
    {"device": "d", "heartbeat": 60, "folders": {"IN\nBOX": "0"}},
], ids=["no-device", "empty-device", "long-device", "control-device", "number-device",
        "string-heartbeat", "fractional-heartbeat", "negative-heartbeat", "folders-array",
        "folders-string", "empty-folder-name", "long-folder-name", "control-folder-name"])
def test_bad_field_is_bad_request(srv, fields):
    alice = srv.user("alice")
    r = srv.request("POST", "/v1/ping", fields, token=alice.token)
    # A negative heartbeat may reasonably be called out of range instead.
    if fields.get("heartbeat") == -5 and r.status == 400 and r.json().get("status") == "heartbeat-out-of-range":
        return
    expect_error(r, 400, "bad-request", has_error=True)


def test_longest_device_and_folder_names_are_accepted(srv):
    alice = srv.user("alice")
    folder = "F" * 255
    alice.publish(folder)
    r = alice.ping("d" * 128, {folder: "0"}, 60)
    srv.check_ping(r, "changed", {folder: "1"})


def test_refused_ping_is_not_remembered(srv):
    alice = srv.user("alice")
    expect_error(alice.ping("phone1", {"INBOX": "0"}, 9999), 400, "heartbeat-out-of-range")
    # Nothing valid was ever saved for phone1, so an empty body has nothing to reuse.
    expect_error(alice.empty_ping_async("phone1").result(), 400, "missing-parameters")
