"""JMAP push over a WebSocket, GET /v1/ws (RFC 6455, RFC 8887 4.3.5;
docs/streams.md "WebSocket"), against the real nudged:

  * the handshake: 101 with the accept key and the jmap subprotocol; every
    refusal is an HTTP answer with its reason (426, 400, 401, 403, 429);
  * WebSocketPushEnable / Disable, StateChange with a pushState, resuming
    from a pushState (across a restart too), dataTypes null;
  * bad messages: RequestError for JSON nudge cannot use, close 1007 / 1003
    / 1002 / 1009 for frames RFC 6455 forbids, bytes split anywhere;
  * a session of its device: supersede both ways, the admin list, ping
    frames, a stopping nudged closes with 1001.
"""
import json
import signal
import socket
import struct
import time

import pytest

import harness
import ws
from harness import WAIT
from ws import CLOSE, CONT, PING, PONG, TEXT, WebSocket, frame

SETTINGS = {"stream": {"ping_min": 1}, "sessions": {"per_user_limit": 3}}


@pytest.fixture
def srv(make_nudged):
    return make_nudged(SETTINGS)


def open_ws(srv, user, device="tab", **kw):
    w = WebSocket(srv, user.token, f"device={device}" if device else "", **kw)
    assert w.status == 101, w.response
    return w


def changed(msg, user):
    assert msg["@type"] == "StateChange", msg
    return msg["changed"][user.name]


# ---- the handshake -----------------------------------------------------------------


def test_handshake_answers_101_with_accept_and_jmap(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    assert w.headers["upgrade"].lower() == "websocket", w.headers
    assert w.headers["connection"].lower() == "upgrade", w.headers
    assert w.headers["sec-websocket-accept"] == ws.accept_of(w.key), w.headers
    assert w.headers["sec-websocket-protocol"] == "jmap", w.headers
    w.close()


def test_jmap_among_several_protocols_and_headers(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice, protocol="chat, JMAP",
                headers={"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"})
    assert w.headers["sec-websocket-protocol"] == "jmap", w.headers
    w.close()


@pytest.mark.parametrize("kw, status, words", [
    ({"headers": {"Upgrade": None}}, 426, "Upgrade: websocket"),
    ({"headers": {"Connection": "keep-alive"}}, 426, "Upgrade: websocket"),
    ({"version": "8"}, 426, "Sec-WebSocket-Version must be 13"),
    ({"version": None}, 426, "Sec-WebSocket-Version must be 13"),
    ({"headers": {"Sec-WebSocket-Key": None}}, 400, "Sec-WebSocket-Key is missing"),
    ({"key": "c2hvcnQ="}, 400, "base64 of 16 bytes"),
    ({"key": "!!!!!!!!!!!!!!!!!!!!!!=="}, 400, "base64 of 16 bytes"),
    ({"protocol": None}, 400, "must offer jmap"),
    ({"protocol": "chat"}, 400, "must offer jmap"),
])
def test_a_bad_handshake_is_an_http_error_with_the_reason(srv, kw, status, words):
    alice = srv.user("alice")
    w = WebSocket(srv, alice.token, "device=tab", **kw)
    assert w.status == status, w.response
    assert words in w.response.json()["error"], w.response
    if status == 426 and "Version" in words:
        assert w.response.header("Sec-WebSocket-Version") == "13", w.response
    elif status == 426:
        assert w.response.header("Upgrade") == "websocket", w.response
    w.close()


def test_no_credential_is_401(srv):
    w = WebSocket(srv, None, "device=tab")
    assert w.status == 401, w.response
    assert w.response.header("WWW-Authenticate").startswith("Bearer"), w.response


def test_a_bad_device_is_400(srv):
    alice = srv.user("alice")
    w = WebSocket(srv, alice.token, "device=" + "x" * 300)
    assert w.status == 400, w.response


def test_streams_off_refuse_with_403(make_nudged):
    srv = make_nudged({"stream": {"enabled": "no"}})
    w = WebSocket(srv, srv.user("alice").token, "device=tab")
    assert w.status == 403 and "enabled = no" in w.response.json()["error"], w.response


def test_the_session_cap_answers_429(srv):
    alice = srv.user("alice")
    held = [open_ws(srv, alice, device=f"d{i}") for i in range(3)]
    w = WebSocket(srv, alice.token, "device=one-too-many")
    assert w.status == 429 and w.response.json()["status"] == "session-limit", w.response
    for h in held:
        h.close()


def test_a_ticket_opens_it_once(srv):
    alice = srv.user("alice")
    r = srv.request("POST", "/v1/ticket", {"device": "web"}, token=alice.token)
    assert r.status == 200, r
    t = r.json()["ticket"]
    w = WebSocket(srv, None, f"ticket={t}")
    assert w.status == 101, w.response
    w.enable(["INBOX"])
    state = alice.publish("INBOX")
    assert changed(w.message(), alice) == {"INBOX": state}
    again = WebSocket(srv, None, f"ticket={t}")
    assert again.status == 401 and "already used" in again.response.json()["error"], again.response
    w.close()


# ---- push ---------------------------------------------------------------------------


def test_enable_then_each_change_is_a_state_change_with_push_state(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.enable(["INBOX", "Sent"])
    s1 = alice.publish("INBOX")
    m = w.message()
    assert changed(m, alice) == {"INBOX": s1}, m
    assert m["pushState"].startswith("1:") and f"INBOX={s1}" in m["pushState"], m
    s2 = alice.publish("Sent")
    alice.publish("Other")  # not watched
    m = w.message()
    assert changed(m, alice) == {"Sent": s2}, m
    assert f"INBOX={s1}" in m["pushState"] and f"Sent={s2}" in m["pushState"], m
    assert w.nothing_for(0.5)
    w.close()


def test_enable_without_push_state_sends_nothing_until_a_change(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    w = open_ws(srv, alice)
    w.enable(["INBOX"])
    assert w.nothing_for(0.5)
    state = alice.publish("INBOX")
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()


def test_push_state_resumes_with_what_moved(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.enable(["INBOX", "Sent"])
    alice.publish("INBOX")
    last = w.message()["pushState"]
    w.close()
    s_inbox = alice.publish("INBOX")
    w = open_ws(srv, alice)
    w.enable(["INBOX", "Sent"], push_state=last)
    m = w.message()
    assert changed(m, alice) == {"INBOX": s_inbox}, m
    w.close()


@pytest.mark.parametrize("bad", ["garbage", "", "2:INBOX=1", "1:INBOX=x"])
def test_an_unreadable_push_state_gets_the_full_state(srv, bad):
    alice = srv.user("alice")
    state = alice.publish("INBOX")
    w = open_ws(srv, alice)
    w.enable(["INBOX"], push_state=bad)
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()


def test_resume_across_a_restart_loses_nothing(make_nudged, tmp_path):
    settings = {**SETTINGS, "server": {"data_dir": str(tmp_path / "data")}}
    srv = make_nudged(settings)
    alice = harness.User(srv, "alice-ws-restart")
    w = open_ws(srv, alice)
    w.enable(["INBOX"])
    alice.publish("INBOX")
    last = w.message()["pushState"]
    w.close()
    state = alice.publish("INBOX")
    assert srv.stop() == 0
    srv = make_nudged(settings)
    alice = harness.User(srv, "alice-ws-restart")
    w = open_ws(srv, alice)
    w.enable(["INBOX"], push_state=last)
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()


def test_data_types_null_watches_every_folder_new_ones_too(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    w = open_ws(srv, alice)
    w.enable(None)
    s = alice.publish("Later")
    assert changed(w.message(), alice) == {"Later": s}
    w.close()


def test_disable_stops_push_and_enable_starts_it_again(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.enable(["INBOX"])
    alice.publish("INBOX")
    last = w.message()["pushState"]
    w.send_json({"@type": "WebSocketPushDisable"})
    state = alice.publish("INBOX")
    assert w.nothing_for(0.5)
    w.enable(["INBOX"], push_state=last)
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()


def test_no_push_before_enable(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    alice.publish("INBOX")
    assert w.nothing_for(0.5)
    w.close()


# ---- the client's messages -------------------------------------------------------------


def request_error(w):
    m = w.message()
    assert m["@type"] == "RequestError" and m["status"] == 400, m
    return m


@pytest.mark.parametrize("text, urn, words", [
    ("nope", "notJSON", "not JSON"),
    ("[1,2]", "notRequest", "@type"),
    ('{"a":1}', "notRequest", "@type"),
    ('{"@type":"Bogus"}', "notRequest", "unknown @type Bogus"),
    ('{"@type":"WebSocketPushEnable","dataTypes":"INBOX"}', "notRequest", "array of folder names"),
    ('{"@type":"WebSocketPushEnable","dataTypes":[1]}', "notRequest", "dataTypes[0] is not a string"),
    ('{"@type":"WebSocketPushEnable","dataTypes":[]}', "notRequest", "names no folder"),
    ('{"@type":"WebSocketPushEnable","dataTypes":["' + "x" * 300 + '"]}', "notRequest",
     "at most 255 bytes"),
    ('{"@type":"WebSocketPushEnable","dataTypes":["INBOX"],"pushState":5}', "notRequest",
     "pushState must be a string"),
    ('{"@type":"WebSocketPushEnable","@type":"x"}', "notJSON", "duplicate"),
])
def test_a_message_nudge_cannot_use_gets_a_request_error(srv, text, urn, words):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.send(frame(TEXT, text))
    m = request_error(w)
    assert m["type"] == "urn:ietf:params:jmap:error:" + urn, m
    assert words in m["detail"], m
    # The connection goes on.
    w.enable(["INBOX"])
    state = alice.publish("INBOX")
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()


def test_too_many_data_types_is_a_limit_error(make_nudged):
    srv = make_nudged({"ping": {"max_folders": 4}})
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.enable([f"f{i}" for i in range(5)])
    m = request_error(w)
    assert m["type"] == "urn:ietf:params:jmap:error:limit" and "max_folders" in m["detail"], m
    w.close()


def test_a_jmap_request_is_answered_push_only_with_its_id(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.send_json({"@type": "Request", "id": "R1", "using": ["urn:ietf:params:jmap:core"],
                 "methodCalls": []})
    m = request_error(w)
    assert m["requestId"] == "R1" and m["type"].endswith("unknownCapability"), m
    assert "push only" in m["detail"], m
    assert int(srv.metric("nudge_ws_request_errors_total")) >= 1
    w.close()


FORBIDDEN = {
    "not-utf8": (lambda: frame(TEXT, b"\xff\xfe"), 1007),
    "surrogate": (lambda: frame(TEXT, b"\xed\xa0\x80"), 1007),
    "overlong": (lambda: frame(TEXT, b"\xc0\xaf"), 1007),
    "binary": (lambda: frame(2, b"\x00\x01"), 1003),
    "unmasked": (lambda: frame(TEXT, b"{}", mask=False), 1002),
    "reserved-bit": (lambda: frame(TEXT, b"{}", rsv=4), 1002),
    "reserved-opcode": (lambda: frame(3, b""), 1002),
    "control-over-125": (lambda: frame(PING, b"x" * 126), 1002),
    "fragmented-control": (lambda: frame(PING, b"", fin=False), 1002),
    "continuation-first": (lambda: frame(CONT, b"{}"), 1002),
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_a_frame_rfc_6455_forbids_closes_with_its_code(srv, name):
    make, code = FORBIDDEN[name]
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.send(make())
    f = w.closed()
    assert f.close_code == code, (f, f.close_reason)
    if name.startswith(("control", "fragmented")):
        assert "RFC 6455 5.5" in f.close_reason, f
    w.wait_eof()
    # The session is gone with it.
    harness.wait_event(srv, 1302, lambda e: e.get("device") == "tab", "session_closed")


def test_a_message_over_ws_max_message_closes_with_1009(make_nudged):
    srv = make_nudged({"stream": {"ws_max_message": 4096}})
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.send(frame(TEXT, json.dumps({"@type": "WebSocketPushDisable", "pad": "x" * 5000})))
    f = w.closed()
    assert f.close_code == 1009, (f, f.close_reason)


def test_fragments_pings_and_split_bytes_are_one_message(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    text = json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["INBOX"]}).encode()
    a, b, c = text[:10], text[10:20], text[20:]
    data = (frame(TEXT, a, fin=False) + frame(PING, b"p1") + frame(CONT, b, fin=False)
            + frame(CONT, c))
    # One byte per write: every split point of the frames' heads and bodies.
    for i in range(len(data)):
        w.send(data[i:i + 1])
        time.sleep(0.001)
    pong = w.next()
    assert pong.opcode == PONG and pong.payload == b"p1", pong
    state = alice.publish("INBOX")
    assert changed(w.message(), alice) == {"INBOX": state}
    # Two messages in one write, a big one (16-bit length) first.
    big = json.dumps({"@type": "WebSocketPushDisable", "pad": "y" * 300})
    w.send(frame(TEXT, big) + frame(TEXT, json.dumps(
        {"@type": "WebSocketPushEnable", "dataTypes": ["Sent"]})))
    state = alice.publish("Sent")
    assert changed(w.message(), alice) == {"Sent": state}
    w.close()


def test_a_client_close_is_answered_and_ends_the_session(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice, device="closer")
    w.send(frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    f = w.closed()
    assert f.close_code == 1000, f
    w.wait_eof()
    ev = harness.wait_event(srv, 1302, lambda e: e.get("device") == "closer", "session_closed")
    assert "websocket close 1000" in ev.get("why", ""), ev


def test_ping_frames_at_the_interval(make_nudged):
    srv = make_nudged({"stream": {"ping_min": 1, "ping": 1}})
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    for _ in range(2):
        f = w.next(timeout=WAIT)
        assert f.opcode == PING and f.payload == b"", f
        w.send(frame(PONG))
    w.close()


# ---- a session of its device ---------------------------------------------------------------


def test_a_newer_websocket_of_the_device_supersedes_the_older(srv):
    alice = srv.user("alice")
    old = open_ws(srv, alice, device="tab")
    new = open_ws(srv, alice, device="tab")
    f = old.closed()
    assert f.close_code == 1000 and "superseded" in f.close_reason, f
    old.wait_eof()
    new.enable(["INBOX"])
    state = alice.publish("INBOX")
    assert changed(new.message(), alice) == {"INBOX": state}
    new.close()


def test_websockets_and_pings_of_one_device_supersede_each_other(srv):
    alice = srv.user("alice")
    held = alice.ping_async(device="dev", folders={"INBOX": "0"}, heartbeat=600)
    srv.wait_held(1, watch=[held])
    w = open_ws(srv, alice, device="dev")
    r = held.result()
    assert r.status == 200 and r.json()["status"] == "superseded", r
    p = alice.ping_async(device="dev", folders={"INBOX": "0"}, heartbeat=600)
    f = w.closed()
    assert f.close_code == 1000 and "superseded" in f.close_reason, f
    srv.wait_held(1, watch=[p])
    p.close()


def test_listed_as_a_session_and_ended_by_an_admin(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice, device="laptop")
    r = srv.request("GET", f"/v1/admin/sessions?user={alice.name}", token=srv.admin_token())
    kinds = {x["device"]: x["kind"] for x in r.json()["sessions"]}
    assert kinds == {"laptop": "ws"}, r.json()
    assert int(srv.metric("nudge_ws_held")) >= 1
    r = srv.request("DELETE", f"/v1/admin/sessions/{alice.name}/laptop", token=srv.admin_token())
    assert r.status in (200, 204), r
    f = w.closed()
    assert f.close_code == 1008 and f.close_reason == "ended by an admin", f
    w.wait_eof()
    ev = harness.wait_event(srv, 1302, lambda e: e.get("device") == "laptop", "session_closed")
    assert ev.get("why") == "ended by an admin", ev


def test_without_device_it_gets_its_own_and_leaves_nothing(srv):
    alice = srv.user("alice")
    w = open_ws(srv, alice, device=None)
    r = srv.request("GET", f"/v1/admin/sessions?user={alice.name}", token=srv.admin_token())
    devices = [x["device"] for x in r.json()["sessions"]]
    assert len(devices) == 1 and devices[0].startswith("stream-"), devices
    w.close()
    deadline = time.monotonic() + WAIT
    while srv.request("GET", f"/v1/admin/sessions?user={alice.name}",
                      token=srv.admin_token()).json()["count"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_stopping_nudged_closes_with_1001(make_nudged):
    srv = make_nudged(SETTINGS)
    alice = srv.user("alice")
    w = open_ws(srv, alice)
    w.enable(["INBOX"])
    srv.send_signal(signal.SIGTERM)
    f = w.closed()
    assert f.close_code == 1001 and "pushState" in f.close_reason, f
    assert srv.wait() == 0


def test_clients_that_hang_up_anywhere_leave_nudged_whole(srv):
    alice = srv.user("alice")
    enable = frame(TEXT, json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["INBOX"]}))
    for cut in (0, 1, 2, 6, len(enable) - 1):
        w = open_ws(srv, alice, device=f"cut{cut}")
        w.send(enable[:cut])
        w.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.close()
    w = open_ws(srv, alice, device="after")
    w.enable(["INBOX"])
    state = alice.publish("INBOX")
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()
    assert srv.running()


def test_frames_sent_right_behind_the_handshake_are_read(srv):
    # Some clients do not wait for the 101; with workers the bytes travel with the request.
    alice = srv.user("alice")
    enable = frame(TEXT, json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["INBOX"]}))
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall(harness.build_request("GET", "/v1/ws?device=eager", token=alice.token, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Protocol": "jmap"}) + enable + frame(PING, b"q"))
    w = WebSocket.__new__(WebSocket)
    w.conn = harness.Conn(None)
    w.conn.sock = s
    w.key = key
    w._read_head()
    assert w.status == 101, w.response
    pong = w.next()
    assert pong.opcode == PONG and pong.payload == b"q", pong
    state = alice.publish("INBOX")
    assert changed(w.message(), alice) == {"INBOX": state}
    w.close()


def test_an_upgrade_header_on_another_route_is_plain_http(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    c = harness.Conn(None)
    c.sock = s
    assert c.read_response().status == 200
    assert c.read_response().status == 200
    s.close()
