"""
test_stream.py — GET /v1/stream: Server-Sent Events with JMAP push
semantics (RFC 8620 7.3; docs/streams.md), over raw sockets.

  * the head (text/event-stream, no-cache, X-Accel-Buffering), the first
    bytes at once (a comment and a jittered retry:), the full state first;
  * a publish is one state event whose data is a StateChange and whose id
    lists the states the client has; Last-Event-ID resumes with exactly the
    folders that moved, also across a restart of nudged on SQLite; an id
    nudge cannot read gets the full state;
  * closeafter=state, ping=N (its cadence, its clamp, ping=0), types
    decoded before split (%2C, %2A), * including folders made later, the
    @meta events of the stream's own user only;
  * 400 for bad parameters, 401 with a challenge, 429 at the session cap,
    204 when streams are off, a 200 with retry: when nudged stops;
  * supersede between streams and pings of one device, the sessions list;
  * a client that does not read is closed (event 1900) and resumes.

Waits are for events and log lines; the only fixed waits prove that no
event comes (a ping=0 stream, 2 s).
"""
import json
import re
import signal
import socket
import time

import pytest

import harness
import sse
from harness import WAIT
from sse import Stream, changed, enc, query


SETTINGS = {"stream": {"ping_min": 1, "retry": 2}, "sessions": {"per_user_limit": 3}}


@pytest.fixture
def srv(make_nudged):
    return make_nudged(SETTINGS)


def open_stream(srv, user, **params):
    headers = params.pop("headers", None)
    params.setdefault("device", harness.unique("tab"))
    s = Stream(srv, user.token, query(**params), headers=headers)
    assert s.status == 200, s.response
    return s


def first_state(s):
    """The opening bytes: a comment, a retry:, then the first state event."""
    ev = s.next()
    assert "nudge" in ev.comments and ev.retry is not None, ev
    return s.next_of("state")


# ---- the head and the first bytes ------------------------------------------------


def test_head_first_bytes_and_full_state(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    s = open_stream(srv, alice, types="INBOX,Sent", ping=0)
    assert s.header("Content-Type") == "text/event-stream"
    assert s.header("Cache-Control") == "no-cache"
    assert s.header("X-Accel-Buffering") == "no"
    assert s.header("Content-Length") is None and s.header("Content-Encoding") is None
    first = s.next()
    assert first.comments == ["nudge"], first
    # [stream] retry = 2: between 2 and 4 s, jittered.
    assert 2000 <= first.retry <= 4000, first
    ev = s.next_of("state")
    assert changed(ev, alice.name) == {"INBOX": "1", "Sent": "0"}, ev
    assert ev.id == "1:INBOX=1,Sent=0", ev
    s.close()


def test_retry_is_jittered(srv):
    alice = srv.user("alice")
    retries = set()
    for _ in range(8):
        s = open_stream(srv, alice, types="INBOX", device="same")
        retries.add(s.next().retry)
        s.close()
    assert len(retries) > 1, retries


# ---- events and ids -------------------------------------------------------------


def test_a_publish_is_one_state_event_with_the_new_id(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX,Sent")
    first_state(s)
    state = alice.publish("Sent")
    ev = s.next_of("state")
    assert changed(ev, alice.name) == {"Sent": state}, ev
    assert ev.id == f"1:INBOX=0,Sent={state}", ev
    # Another folder, not watched: no event; the next watched one is.
    alice.publish("Trash")
    state = alice.publish("INBOX")
    ev = s.next_of("state")
    assert changed(ev, alice.name) == {"INBOX": state}, ev
    s.close()


def test_last_event_id_resumes_with_what_moved(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX,Sent,Drafts")
    last = first_state(s).id
    s.close()
    alice.publish("INBOX")
    inbox = alice.publish("INBOX")
    s = open_stream(srv, alice, types="INBOX,Sent,Drafts", headers={"Last-Event-ID": last})
    ev = first_state(s)
    assert changed(ev, alice.name) == {"INBOX": inbox}, ev
    s.close()
    # Nothing moved since: no state event at once, the next publish is the first.
    s = open_stream(srv, alice, types="INBOX,Sent,Drafts", headers={"Last-Event-ID": ev.id}, ping=1)
    ev0 = s.next()
    assert ev0.retry is not None, ev0
    assert s.next().type == "ping"  # a second with nothing to say
    drafts = alice.publish("Drafts")
    assert changed(s.next_of("state"), alice.name) == {"Drafts": drafts}
    s.close()


@pytest.mark.parametrize("bad", ["garbage", "1:", "1:INBOX", "1:INBOX=x", "2:INBOX=1", "1:=3",
                                 "1:%ZZ=1"])
def test_an_unreadable_id_gets_the_full_state(srv, bad):
    alice = srv.user("alice")
    state = alice.publish("INBOX")
    s = open_stream(srv, alice, types="INBOX,Sent", headers={"Last-Event-ID": bad})
    assert changed(first_state(s), alice.name) == {"INBOX": state, "Sent": "0"}
    s.close()


def test_a_folder_in_types_but_not_in_the_id_is_reported(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX")
    last = first_state(s).id
    s.close()
    s = open_stream(srv, alice, types="INBOX,Sent", headers={"Last-Event-ID": last})
    assert changed(first_state(s), alice.name) == {"Sent": "0"}
    s.close()


def test_resume_across_a_restart_loses_nothing(make_nudged, tmp_path):
    settings = {**SETTINGS, "server": {"data_dir": str(tmp_path / "data")}}
    srv = make_nudged(settings)
    alice = harness.User(srv, "alice-restart")
    s = open_stream(srv, alice, types="INBOX")
    last = first_state(s).id
    s.close()
    state = alice.publish("INBOX")
    assert srv.stop() == 0
    srv = make_nudged(settings)
    alice = harness.User(srv, "alice-restart")
    s = open_stream(srv, alice, types="INBOX", headers={"Last-Event-ID": last})
    assert changed(first_state(s), alice.name) == {"INBOX": state}
    s.close()


def test_names_with_separators_round_trip_in_the_id(srv):
    alice = srv.user("alice")
    # types= is decoded before it is split, so a folder with a comma is watched with *.
    folder = "a,b=c%d e+f"
    alice.publish(folder)
    s = open_stream(srv, alice, types="*")
    ev = first_state(s)
    assert changed(ev, alice.name) == {folder: "1"}
    assert ev.id == "1:a%2Cb%3Dc%25d%20e%2Bf=1", ev
    s.close()
    state = alice.publish(folder)
    s = open_stream(srv, alice, types="*", headers={"Last-Event-ID": ev.id})
    assert changed(first_state(s), alice.name) == {folder: state}
    s.close()


# ---- types, closeafter, ping ---------------------------------------------------------


def test_types_are_decoded_before_they_are_split(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX%2CSent")
    assert set(changed(first_state(s), alice.name)) == {"INBOX", "Sent"}
    s.close()
    alice.publish("Archive")
    s = open_stream(srv, alice, types="%2A")
    assert changed(first_state(s), alice.name) == {"Archive": "1"}
    s.close()


def test_all_folders_include_ones_made_later(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    s = open_stream(srv, alice, types="*")
    assert changed(first_state(s), alice.name) == {"INBOX": "1"}
    state = alice.publish("Brand new")
    ev = s.next_of("state")
    assert changed(ev, alice.name) == {"Brand new": state}, ev
    s.close()


def test_closeafter_state_ends_after_the_first_state_event(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX")
    last = first_state(s).id
    s.close()
    s = open_stream(srv, alice, types="INBOX", closeafter="state", headers={"Last-Event-ID": last})
    assert s.next().retry is not None
    state = alice.publish("INBOX")
    rest = s.ended()
    states = [e for e in rest if e.type == "state"]
    assert len(states) == 1 and changed(states[0], alice.name) == {"INBOX": state}, rest
    assert rest[-1].retry is not None, rest


def test_ping_cadence_data_and_no_id(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX", ping=1)
    first_state(s)
    pings = [s.next_of("ping", timeout=5) for _ in range(2)]
    for p in pings:
        assert p.json() == {"interval": 1}, p
        assert p.id is None, "a ping must carry no id: line (an empty one clears Last-Event-ID)"
    s.close()


def test_ping_is_clamped_to_the_minimum(make_nudged):
    srv = make_nudged({"stream": {"ping_min": 2}})
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX", ping=1)
    first_state(s)
    assert s.next_of("ping", timeout=6).json() == {"interval": 2}
    s.close()


def test_ping_zero_sends_none(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX", ping=0)
    first_state(s)
    with pytest.raises(TimeoutError):
        s.next(timeout=2)
    s.close()


def test_meta_events_are_the_streams_own_users_only(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    s = open_stream(srv, alice, types="INBOX,@meta")
    first_state(s)
    bob.publish("INBOX", subject="for bob")
    state = alice.publish("INBOX", type="new", subject="Hello", **{"from": "Carol <c@example.org>"})
    meta = s.next_of("meta")
    body = meta.json()
    assert body == {"folder": "INBOX", "state": state, "type": "new", "subject": "Hello",
                    "from": "Carol <c@example.org>"}, body
    assert meta.id is None, meta
    assert changed(s.next_of("state"), alice.name) == {"INBOX": state}
    s.close()
    # Without @meta, none.
    s = open_stream(srv, alice, types="INBOX")
    first_state(s)
    state = alice.publish("INBOX", subject="quiet")
    ev = s.next()
    assert ev.type == "state" and changed(ev, alice.name) == {"INBOX": state}, ev
    s.close()


# ---- answers a client can act on ---------------------------------------------------


@pytest.mark.parametrize("q, words", [
    ("types=INBOX&closeafter=maybe", "closeafter must be state or no"),
    ("types=INBOX&ping=soon", "ping must be a whole number"),
    ("types=INBOX&ping=-1", "ping must be a whole number"),
    ("types=%ZZ", "percent-encoded"),
    ("types=%2C%2C", "names no folder"),
    ("types=IN%01BOX", "types: folder"),
    ("types=INBOX&device=%00", "device"),
])
def test_bad_parameters_are_400_with_the_reason(srv, q, words):
    alice = srv.user("alice")
    s = Stream(srv, alice.token, q)
    assert s.status == 400 and s.response.status == 400, s.response
    assert words in s.response.json()["error"], s.response.json()


def test_no_credential_is_401_with_a_challenge(srv):
    s = Stream(srv, None, "types=INBOX")
    assert s.status == 401, s.response
    assert s.response.header("WWW-Authenticate").startswith("Bearer"), s.response


def test_the_session_cap_answers_429(srv):
    alice = srv.user("alice")
    streams = [open_stream(srv, alice, types="INBOX") for _ in range(3)]
    s = Stream(srv, alice.token, query(types="INBOX", device="one-too-many"))
    assert s.status == 429, s.response
    assert s.response.json()["status"] == "session-limit"
    for t in streams:
        t.close()


def test_streams_off_answer_204(make_nudged):
    srv = make_nudged({"stream": {"enabled": "no"}})
    alice = srv.user("alice")
    s = Stream(srv, alice.token, "types=INBOX")
    assert s.status == 204, s.response


def test_a_stopping_nudged_ends_streams_with_retry(make_nudged):
    srv = make_nudged(SETTINGS)
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX")
    first_state(s)
    srv.send_signal(signal.SIGTERM)
    rest = s.ended()
    assert rest and rest[-1].retry is not None and rest[-1].retry >= 5000, rest
    assert srv.wait() == 0


# ---- sessions ---------------------------------------------------------------------


def test_a_newer_stream_of_the_device_supersedes_the_older(srv):
    alice = srv.user("alice")
    old = open_stream(srv, alice, types="INBOX", device="tab")
    first_state(old)
    new = open_stream(srv, alice, types="INBOX", device="tab")
    first_state(new)
    rest = old.ended()
    assert rest and rest[-1].retry is not None, rest
    state = alice.publish("INBOX")
    assert changed(new.next_of("state"), alice.name) == {"INBOX": state}
    new.close()


def test_streams_and_pings_of_one_device_supersede_each_other(srv):
    alice = srv.user("alice")
    held = alice.ping_async(device="dev", folders={"INBOX": "0"}, heartbeat=600)
    srv.wait_held(1, watch=[held])
    s = open_stream(srv, alice, types="INBOX", device="dev")
    r = held.result()
    assert r.status == 200 and r.json()["status"] == "superseded", r
    first_state(s)
    # A ping of the device ends its stream, in the stream's words.
    p = alice.ping_async(device="dev", folders={"INBOX": "0"}, heartbeat=600)
    rest = s.ended()
    assert rest and rest[-1].retry is not None, rest
    srv.wait_held(1, watch=[p])
    p.close()


def test_a_stream_is_listed_as_a_session(srv):
    alice = srv.user("alice")
    s = open_stream(srv, alice, types="INBOX", device="laptop")
    first_state(s)
    r = srv.request("GET", f"/v1/admin/sessions?user={alice.name}", token=srv.admin_token())
    assert r.status == 200, r
    kinds = {x["device"]: x["kind"] for x in r.json()["sessions"]}
    assert kinds == {"laptop": "stream"}, r.json()
    assert int(srv.metric("nudge_streams_held")) >= 1
    p = srv.cli("sessions", "--url", srv.url, "-c", str(srv.conf), "--user", alice.name)
    assert p.returncode == 0 and "laptop" in p.stdout and "stream" in p.stdout, p
    # An admin ends it: the stream closes (its client would resume).
    p = srv.cli("sessions", "--url", srv.url, "-c", str(srv.conf), "--end", f"{alice.name}/laptop")
    assert p.returncode == 0, p
    assert s.ended() is not None
    s.close()


def test_a_stream_without_device_gets_its_own_and_leaves_nothing(srv):
    alice = srv.user("alice")
    a = open_stream(srv, alice, types="INBOX", device=None)
    b = open_stream(srv, alice, types="INBOX", device=None)
    first_state(a)
    first_state(b)
    r = srv.request("GET", f"/v1/admin/sessions?user={alice.name}", token=srv.admin_token())
    devices = [x["device"] for x in r.json()["sessions"]]
    assert len(devices) == 2 and all(d.startswith("stream-") for d in devices), devices
    a.close()
    b.close()
    deadline = time.monotonic() + WAIT
    while srv.request("GET", f"/v1/admin/sessions?user={alice.name}",
                      token=srv.admin_token()).json()["count"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# ---- a client that does not read ------------------------------------------------------


def test_a_client_that_does_not_read_is_closed_and_resumes(make_nudged):
    srv = make_nudged({"stream": {"max_unsent": 65536, "soft_unsent": 16384, "soft_seconds": 1}})
    alice = srv.user("alice")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    sock.sendall(harness.build_request("GET", "/v1/stream?types=INBOX,@meta&device=slow",
                                       token=alice.token))
    subject = "x" * 8000
    deadline = time.monotonic() + 60
    state = None
    while "event=1900" not in srv.log_text():
        assert time.monotonic() < deadline, srv.log_tail()
        state = alice.publish("INBOX", subject=subject)
    ev = harness.wait_event(srv, 1900, lambda e: e.get("device") == "slow", "stream_slow")
    assert ev["limit"] in ("max_unsent", "soft_unsent"), ev
    assert int(srv.metric("nudge_streams_slow_total")) == 1
    sock.close()
    # Resumed from the start (no id): the state it missed is there at once.
    s = open_stream(srv, alice, types="INBOX", device="slow")
    assert changed(first_state(s), alice.name) == {"INBOX": state}
    s.close()


def test_clients_that_hang_up_at_once_leave_nudged_whole(srv):
    """A write that fails (the client already gone) closes the stream in the
    middle of sending it: nothing may be touched after that (a crash once)."""
    alice = srv.user("alice")
    for i in range(30):
        c = harness.Conn(srv.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.send_request("GET", "/v1/stream?types=*&ping=1" + ("&device=d%d" % i if i % 2 else ""),
                       token=alice.token)
        c.close()
        alice.publish("INBOX")
    assert srv.running(), srv.log_tail()
    s = open_stream(srv, alice, types="INBOX")
    assert changed(first_state(s), alice.name) == {"INBOX": "30"}
    s.close()
