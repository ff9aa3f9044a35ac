"""UDP new-mail datagrams (docs/udp.md): registration, the datagram and its
tag, resends until the device catches up (poll, ping, ack), the ICMP error
that stops them, sessions and caps, persistence, bad input.

Each test registers a real UDP socket of its own on 127.0.0.1 with the real
nudged and reads what nudged really sends. Resends run every second here
([udp] resend_interval = 1). "No more resends" is asserted by waiting
several intervals for a datagram that must not come and by the server's own
count of datagrams sent to the registration (admin sessions list), never by
a timing bound.
"""
import base64
import socket
import time
import urllib.parse

import harness
from harness import (DGRAM_ACK, DGRAM_NOTIFY, DGRAM_TEST, DGRAM_TEST_KEY, SLOW, WAIT, UdpDevice,
                     dgram_decode, dgram_encode, expect_error, log_events, wait_event)

RESEND = 1
NUDGED_SETTINGS = {"udp": {"resend_interval": RESEND, "max_resends": 5},
                   "sessions": {"per_user_limit": 3}}
# Long enough that a resend due would have come more than twice. Resends are
# timer-driven, so a sanitizer build, slower at everything else, only gets a
# second more.
QUIET = 2.5 * RESEND + (1 if SLOW > 1 else 0)


def reg_info(srv, user, device):
    """The session entry of user/device from the admin API, or None."""
    path = "/v1/admin/sessions?user=" + urllib.parse.quote(user.name, safe="")
    r = srv.request("GET", path, token=srv.admin_token())
    assert r.status == 200, r
    for s in r.json()["sessions"]:
        if s["device"] == device:
            return s
    return None


def sent_to(srv, dev):
    """How many datagrams nudged says it sent to dev's registration."""
    s = reg_info(srv, dev.user, dev.device)
    assert s is not None and "udp" in s, f"no UDP session for {dev.device}: {s}"
    return s["udp"]["sent"]


def wait_for(pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Registration and the datagram

def test_register_answers_id_key_addresses_and_current_states(srv):
    u = srv.user()
    srv.publish(u.name, "INBOX")
    dev = UdpDevice(srv, u)
    reg = dev.register(["INBOX", "Calendar"])
    assert reg["status"] == "registered"
    assert int(reg["id"]) > 0 and reg["id"] == str(int(reg["id"]))
    assert reg["address"] == f"127.0.0.1:{dev.port}"
    assert reg["server"] == f"127.0.0.1:{srv.udp_port_of(u.name)}"
    assert reg["ttl"] == 3600 and reg["resend_interval"] == RESEND
    assert reg["folders"] == {"INBOX": "1", "Calendar": "0"}
    # Nothing is sent for states the device already holds.
    dev.quiet(0.5)
    e = wait_event(srv, 1601, lambda e: e.get("device") == dev.device, "udp_registered")
    assert e["user"] == u.name and e["id"] == reg["id"] and e["folders"] == "2"


def test_publish_sends_a_tagged_datagram_with_the_new_state(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    state = srv.publish(u.name, "INBOX")
    d = dev.recv()
    assert d == {"type": DGRAM_NOTIFY, "id": dev.reg_id, "seq": d["seq"], "state": int(state),
                 "folder": "INBOX"}
    assert d["seq"] >= 1
    # Another folder of the same user is none of this registration's business.
    srv.publish(u.name, "Other")
    acks = srv.metric("nudge_udp_acks_total")
    dev.ack(d)
    srv.wait_metric("nudge_udp_acks_total", lambda v: v >= acks + 1)
    dev.drain()
    dev.quiet(QUIET)


def test_a_registration_naming_states_gets_what_it_is_behind_on_at_once(srv):
    u = srv.user()
    for _ in range(3):
        srv.publish(u.name, "INBOX")
    dev = UdpDevice(srv, u)
    reg = dev.register({"INBOX": "1", "Sent": "0"})
    assert reg["folders"] == {"INBOX": "3", "Sent": "0"}
    d = dev.recv()
    assert (d["folder"], d["state"]) == ("INBOX", 3)


def test_a_batch_touching_a_folder_many_times_sends_one_datagram(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    r = srv.publish_raw([{"user": u.name, "folder": "INBOX"}] * 5)
    assert r.status == 200, r
    d = dev.recv()
    # The registration's first datagram carries the last state of the batch.
    assert (d["seq"], d["state"]) == (1, 5), d


# ---------------------------------------------------------------------------
# Resends and catching up

def test_resends_every_interval_until_a_poll_shows_the_new_state(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    state = int(srv.publish(u.name, "INBOX"))
    first = dev.recv()
    again = dev.recv(timeout=WAIT)
    assert again["state"] == state and again["seq"] > first["seq"], (first, again)
    # A poll by this device answers the new state: it has caught up.
    assert dev.poll(["INBOX"]) == {"INBOX": str(state)}
    wait_for(lambda: reg_info(srv, u, dev.device)["udp"]["resends"] >= 1, "a resend counted")
    dev.drain()  # a resend may have been on the wire while the poll was answered
    count = sent_to(srv, dev)
    dev.quiet(QUIET)
    assert sent_to(srv, dev) == count


def test_a_poll_without_the_device_parameter_does_not_stop_resends(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    srv.publish(u.name, "INBOX")
    dev.recv()
    assert u.states(["INBOX"]) == {"INBOX": "1"}
    dev.recv()  # resent: nudged cannot know which device polled


def test_resends_stop_after_an_ack(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    srv.publish(u.name, "INBOX")
    d = dev.recv()
    acks = srv.metric("nudge_udp_acks_total")
    dev.ack(d)
    srv.wait_metric("nudge_udp_acks_total", lambda v: v >= acks + 1)
    dev.drain()
    count = sent_to(srv, dev)
    dev.quiet(QUIET)
    assert sent_to(srv, dev) == count


def test_a_ping_presenting_the_state_stops_resends(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    state = srv.publish(u.name, "INBOX")
    dev.recv()
    # The same device pings with the state it was told: it holds that state,
    # so the ping is held, and the resends stop.
    held = srv.held()
    p = u.ping_async(dev.device, {"INBOX": state}, 60)
    srv.wait_held(held + 1, watch=[p])
    assert reg_info(srv, u, dev.device)["kind"] == "ping+udp"
    dev.drain()
    count = sent_to(srv, dev)
    dev.quiet(QUIET)
    assert sent_to(srv, dev) == count
    p.close()


def test_resends_are_bounded_by_max_resends(make_nudged):
    n = make_nudged({"udp": {"resend_interval": 1, "max_resends": 2}})
    u = n.user()
    dev = UdpDevice(n, u)
    dev.register(["INBOX"])
    n.publish(u.name, "INBOX")
    seqs = [dev.recv()["seq"] for _ in range(3)]  # the notify and two resends
    assert seqs == sorted(set(seqs)), seqs
    e = wait_event(n, 1605, lambda e: e.get("device") == dev.device, "udp_resends_exhausted")
    assert e["resends"] == "2"
    dev.quiet(QUIET)
    assert sent_to(n, dev) == 3
    # A new change starts over.
    n.publish(u.name, "INBOX")
    assert dev.recv()["state"] == 2


# ---------------------------------------------------------------------------
# A device that is gone: ICMP port unreachable

def test_icmp_port_unreachable_stops_the_resends_at_once(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    srv.publish(u.name, "INBOX")
    dev.recv()
    unreachable = srv.metric("nudge_udp_unreachable_total")
    dev.close()  # the next resend meets a closed port: the kernel answers ICMP port unreachable
    e = wait_event(srv, 1602, lambda e: e.get("device") == dev.device, "udp_suspended")
    assert e["reason"] == "ICMP port unreachable" and e["id"] == dev.reg["id"]
    assert srv.metric("nudge_udp_unreachable_total") >= unreachable + 1
    info = reg_info(srv, u, dev.device)
    assert info["udp"]["suspended"] is True
    count = info["udp"]["sent"]
    time.sleep(QUIET)
    assert sent_to(srv, dev) == count, "resends went on after the ICMP error"
    # Still a registration (until its TTL), just silent: a new change sends nothing.
    srv.publish(u.name, "INBOX")
    time.sleep(QUIET)
    assert sent_to(srv, dev) == count


def test_a_ping_revives_a_suspended_registration(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    port = dev.port
    srv.publish(u.name, "INBOX")
    dev.recv()
    dev.close()
    wait_event(srv, 1602, lambda e: e.get("device") == dev.device, "udp_suspended")
    # The device comes back on the same port (it rebooted) and pings with an old state.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    dev.sock = sock
    r = u.ping(dev.device, {"INBOX": "0"}, 60)
    srv.check_ping(r, "changed", {"INBOX": "1"})
    wait_event(srv, 1604, lambda e: e.get("device") == dev.device and e.get("why") == "ping",
               "udp_revived")
    assert reg_info(srv, u, dev.device)["udp"]["suspended"] is False
    srv.publish(u.name, "INBOX")
    assert dev.recv()["state"] == 2


# ---------------------------------------------------------------------------
# Acks that must be refused

def rejected(srv, reason):
    return srv.metric("nudge_udp_datagrams_rejected_total", reason=reason)


def test_forged_replayed_and_garbage_acks_are_refused_and_counted(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    srv.publish(u.name, "INBOX")
    d = dev.recv()
    before = {r: rejected(srv, r) for r in ("bad-tag", "unknown-registration", "replay", "malformed",
                                            "not-ack")}
    acks = srv.metric("nudge_udp_acks_total")
    dev.send_raw(dgram_encode(DGRAM_ACK, d["id"], d["seq"], d["state"], "INBOX", b"\x01" * 32))
    dev.send_raw(dgram_encode(DGRAM_ACK, d["id"] ^ 1, d["seq"], d["state"], "INBOX", dev.key))
    dev.send_raw(dgram_encode(DGRAM_ACK, d["id"], d["seq"] + 1000, d["state"], "INBOX", dev.key))
    dev.send_raw(b"hello, nudge")
    dev.send_raw(dgram_encode(DGRAM_NOTIFY, d["id"], d["seq"], d["state"], "INBOX", dev.key))
    for reason, extra in (("bad-tag", 1), ("unknown-registration", 1), ("replay", 1),
                          ("malformed", 1), ("not-ack", 1)):
        srv.wait_metric("nudge_udp_datagrams_rejected_total", lambda v, b=before[reason] + extra: v >= b,
                        reason=reason)
    # None of them stopped the resends; the real ack does, and its replay is refused.
    dev.recv()
    dev.ack(d)
    srv.wait_metric("nudge_udp_acks_total", lambda v: v >= acks + 1)
    dev.ack(d)
    srv.wait_metric("nudge_udp_datagrams_rejected_total", lambda v: v >= before["replay"] + 2,
                    reason="replay")
    assert srv.metric("nudge_udp_acks_total") == acks + 1
    e = wait_event(srv, 1606, lambda e: True, "udp_datagram_rejected")
    assert e["reason"] in before and e["from"].startswith("127.0.0.1:")
    assert srv.healthy()


def test_an_ack_cannot_claim_a_state_the_server_never_had(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    srv.publish(u.name, "INBOX")
    d = dev.recv()
    dev.ack(d, state=1000)
    dev.quiet(QUIET)
    # The claim was capped at the real state: the next change is still sent.
    srv.publish(u.name, "INBOX")
    assert dev.recv()["state"] == 2


# ---------------------------------------------------------------------------
# Sessions

def test_a_registration_is_a_session_and_counts_toward_the_cap(srv):
    u = srv.user()  # per_user_limit is 3 in this module
    devs = [UdpDevice(srv, u) for _ in range(2)]
    for d in devs:
        d.register(["INBOX"])
    held = srv.held()
    p = u.ping_async("phone", {"INBOX": "0"}, 600)
    srv.wait_held(held + 1, watch=[p])
    fourth = UdpDevice(srv, u)
    r = fourth.register_raw(["INBOX"])
    expect_error(r, 429, "session-limit")
    assert r.json()["limit"] == 3 and r.header("Retry-After")
    e = wait_event(srv, 1301, lambda e: e.get("device") == fourth.device, "session_limit")
    assert devs[0].device in e["sessions"] and "udp" in e["sessions"]
    # The same device holding a ping and a registration is one session.
    r = u.ping(devs[0].device, {"INBOX": "0"}, 1)
    srv.check_ping(r, "expired")
    assert reg_info(srv, u, devs[0].device)["kind"] == "udp"
    again = devs[0].register(["INBOX"])
    assert again["id"] != "0"
    p.close()


def test_a_suspended_registration_is_reaped_at_the_cap(srv):
    u = srv.user()
    devs = [UdpDevice(srv, u) for _ in range(3)]
    for d in devs:
        d.register(["INBOX"])
    srv.publish(u.name, "INBOX")
    for d in devs:
        d.recv()
    devs[1].close()
    wait_event(srv, 1602, lambda e: e.get("device") == devs[1].device, "udp_suspended")
    new = UdpDevice(srv, u)
    new.register(["INBOX"])
    e = wait_event(srv, 1603, lambda e: e.get("device") == devs[1].device, "udp_ended")
    assert e["why"].startswith("reaped")
    assert reg_info(srv, u, devs[1].device) is None


def test_reregistering_replaces_the_registration(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    old = dev.register(["INBOX"])
    old_key = dev.key
    new = dev.register(["INBOX"])
    assert new["id"] != old["id"] and new["key"] != old["key"]
    e = wait_event(srv, 1603, lambda e: e.get("id") == old["id"], "udp_ended")
    assert e["why"] == "replaced by a new registration"
    srv.publish(u.name, "INBOX")
    d = dev.recv()
    assert d["id"] == int(new["id"])
    # An ack for the old registration is refused as unknown.
    before = rejected(srv, "unknown-registration")
    dev.send_raw(dgram_encode(DGRAM_ACK, int(old["id"]), d["seq"], d["state"], "INBOX", old_key))
    srv.wait_metric("nudge_udp_datagrams_rejected_total", lambda v: v >= before + 1,
                    reason="unknown-registration")


def test_delete_ends_the_registration(srv):
    u = srv.user()
    dev = UdpDevice(srv, u, device="desk/1 ü")
    dev.register(["INBOX"])
    path = "/v1/udp/" + urllib.parse.quote(dev.device, safe="")
    r = srv.request("DELETE", path, token=u.token)
    assert r.status == 200 and r.json() == {"status": "ended", "device": dev.device}, r
    assert reg_info(srv, u, dev.device) is None
    srv.publish(u.name, "INBOX")
    dev.quiet(QUIET)
    expect_error(srv.request("DELETE", path, token=u.token), 404, "no-registration")


def test_an_admin_ends_a_udp_session(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    path = f"/v1/admin/sessions/{urllib.parse.quote(u.name, safe='')}/{dev.device}"
    r = srv.request("DELETE", path, token=srv.admin_token())
    assert r.status == 200, r
    assert reg_info(srv, u, dev.device) is None
    wait_event(srv, 1603, lambda e: e.get("device") == dev.device and e.get("why") == "ended by an admin",
               "udp_ended")


def test_registrations_are_the_users_own(srv):
    alice, bob = srv.user("alice"), srv.user("bob")
    a = UdpDevice(srv, alice, device="shared-name")
    a.register(["INBOX"])
    # Bob's change to his INBOX never reaches Alice's registration.
    srv.publish(bob.name, "INBOX")
    a.quiet(QUIET)
    # Bob cannot end Alice's registration, even naming her device id.
    r = srv.request("DELETE", "/v1/udp/shared-name", token=bob.token)
    expect_error(r, 404, "no-registration")
    assert reg_info(srv, alice, "shared-name") is not None
    # A publisher or admin token cannot register.
    r = srv.request("POST", "/v1/udp", {"device": "x", "port": 1, "folders": ["INBOX"]},
                    token=srv.publisher_token())
    expect_error(r, 403, "forbidden")


def test_a_registration_expires_at_its_ttl(make_nudged):
    n = make_nudged({"udp": {"ttl": 2}})
    u = n.user()
    dev = UdpDevice(n, u)
    dev.register(["INBOX"])
    e = wait_event(n, 1603, lambda e: e.get("device") == dev.device, "udp_ended")
    assert e["why"] == "expired"
    assert reg_info(n, u, dev.device) is None
    n.publish(u.name, "INBOX")
    dev.quiet(QUIET)


def test_a_registration_and_its_pending_change_survive_a_restart(make_nudged):
    # Resends far apart: after the restart only the start-up send can arrive in time.
    n = make_nudged({"udp": {"resend_interval": 3600}})
    u = n.user()
    dev = UdpDevice(n, u)
    reg = dev.register(["INBOX"])
    n.publish(u.name, "INBOX")
    d = dev.recv()
    assert d["state"] == 1
    assert n.stop() == 0
    n.start()
    # Not acked before the stop: sent again after the start, same registration, same key.
    again = dev.recv()
    assert again["id"] == int(reg["id"]) and again["state"] == 1
    dev.ack(again)
    n.wait_metric("nudge_udp_acks_total", lambda v: v >= 1)
    info = reg_info(n, u, dev.device)
    assert info["udp"]["id"] == reg["id"]
    # Acked now: another restart sends nothing.
    assert n.stop() == 0
    n.start()
    dev.quiet(QUIET)


# ---------------------------------------------------------------------------
# Test datagrams

def test_a_test_datagram_carries_the_nonce_with_the_zero_key(srv):
    u = srv.user()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        r = srv.request("POST", "/v1/udp/test", {"port": port, "nonce": "n0nce-42"}, token=u.token)
        assert r.status == 200, r
        assert r.json() == {"status": "sent", "to": f"127.0.0.1:{port}",
                            "from": f"127.0.0.1:{srv.udp_port_of(u.name)}"}
        sock.settimeout(WAIT)
        data, addr = sock.recvfrom(2048)
        assert addr == ("127.0.0.1", srv.udp_port_of(u.name))
        assert dgram_decode(data, DGRAM_TEST_KEY) == {"type": DGRAM_TEST, "id": 0, "seq": 0,
                                                      "state": 0, "folder": "n0nce-42"}
    finally:
        sock.close()
    for body in ({"port": port}, {"port": port, "nonce": ""}, {"port": port, "nonce": "x" * 65},
                 {"port": port, "nonce": "a\nb"}, {"nonce": "x"}):
        expect_error(srv.request("POST", "/v1/udp/test", body, token=u.token), 400, "bad-request", True)


# ---------------------------------------------------------------------------
# Bad input

def test_bad_registrations_are_refused_with_the_reason(srv):
    u = srv.user()
    port = 40001
    cases = [
        (b"", "body must be a JSON object"),
        (b"{", "malformed JSON"),
        (b"[1]", "body must be a JSON object"),
        ({"port": port, "folders": ["INBOX"]}, "device is required"),
        ({"device": 7, "port": port, "folders": ["INBOX"]}, "device must be a string"),
        ({"device": "", "port": port, "folders": ["INBOX"]}, "device must not be empty"),
        ({"device": "d", "folders": ["INBOX"]}, "port is required"),
        ({"device": "d", "port": 0, "folders": ["INBOX"]}, "port must be a whole number from 1 to 65535"),
        ({"device": "d", "port": 65536, "folders": ["INBOX"]}, "port must be"),
        ({"device": "d", "port": "40001", "folders": ["INBOX"]}, "port must be"),
        ({"device": "d", "port": port}, "folders is required"),
        ({"device": "d", "port": port, "folders": []}, "at least one folder"),
        ({"device": "d", "port": port, "folders": "INBOX"}, "folders must be an array"),
        ({"device": "d", "port": port, "folders": [1]}, "folders[0] must be a folder name"),
        ({"device": "d", "port": port, "folders": ["INBOX", "INBOX"]}, "twice"),
        ({"device": "d", "port": port, "folders": {"INBOX": 17}}, "state must be a decimal string"),
        ({"device": "d", "port": port, "folders": {"INBOX": "-1"}}, "state must be a decimal string"),
        ({"device": "d", "port": port, "folders": ["a\u0001b"]}, "control characters"),
        ({"device": "d", "port": port, "folders": ["INBOX"], "host": "mail.example.org"},
         "names are not resolved"),
        ({"device": "d", "port": port, "folders": ["INBOX"], "host": 5}, "host must be"),
    ]
    for body, words in cases:
        r = srv.request("POST", "/v1/udp", body, token=u.token)
        b = expect_error(r, 400, "bad-request", True)
        assert words in b["error"], f"{body!r}: expected {words!r} in {b['error']!r}"
    r = srv.request("POST", "/v1/udp", {"device": "d", "port": port,
                                        "folders": [f"f{i}" for i in range(101)]}, token=u.token)
    assert r.status == 400 and r.json() == {"status": "too-many-folders", "max": 100}, r
    assert reg_info(srv, u, "d") is None, "a refused registration left a session"


def test_another_host_needs_allowed_hosts(make_nudged):
    n = make_nudged({"udp": {"allowed_hosts": "127.0.0.2/32, 10.0.0.0/8"}})
    u = n.user()
    dev = UdpDevice(n, u)
    r = dev.register_raw(["INBOX"], host="192.0.2.1")
    b = expect_error(r, 403, "host-not-allowed", True)
    assert "192.0.2.1" in b["error"] and "allowed_hosts" in b["error"]
    # Its own address is always fine; an allowed one too.
    assert dev.register(["INBOX"], host="127.0.0.1")["address"] == f"127.0.0.1:{dev.port}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    try:
        r = n.request("POST", "/v1/udp", {"device": dev.device, "port": sock.getsockname()[1],
                                          "folders": ["INBOX"], "host": "127.0.0.2"}, token=u.token)
        assert r.status == 200 and r.json()["address"] == f"127.0.0.2:{sock.getsockname()[1]}", r
        n.publish(u.name, "INBOX")
        sock.settimeout(WAIT)
        data, _ = sock.recvfrom(2048)
        assert dgram_decode(data, base64.b64decode(r.json()["key"]))["state"] == 1
    finally:
        sock.close()


def test_udp_off_answers_501(make_nudged):
    n = make_nudged({"udp": {"listen": ""}})
    assert n.udp_port is None
    u = n.user()
    for method, path, body in (("POST", "/v1/udp", {"device": "d", "port": 1, "folders": ["INBOX"]}),
                               ("POST", "/v1/udp/test", {"port": 1, "nonce": "x"}),
                               ("DELETE", "/v1/udp/d", None)):
        b = expect_error(n.request(method, path, body, token=u.token), 501, "udp-disabled", True)
        assert "[udp] listen" in b["error"]
    assert not log_events(n, 1600)


def test_garbage_datagrams_do_not_hurt_the_server(srv):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        before = rejected(srv, "malformed")
        for payload in (b"", b"nd", b"nd\x01\x02" + b"\x00" * 200, b"\xff" * 1400,
                        b"nd\x07\x02" + b"\x00" * 41, b"nd\x01\x09" + b"\x00" * 41):
            s.sendto(payload, ("127.0.0.1", srv.udp_port))
        srv.wait_metric("nudge_udp_datagrams_rejected_total", lambda v: v >= before + 6,
                        reason="malformed")
        assert srv.healthy()
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Mail read elsewhere

def test_a_read_event_stops_the_resends_of_its_folder(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    srv.publish(u.name, "INBOX", type="new")
    d = dev.recv()
    assert d["state"] == 1
    # The user read the message on another device: nothing left to announce.
    srv.publish(u.name, "INBOX", type="read")
    dev.drain()
    count = sent_to(srv, dev)
    dev.quiet(QUIET)
    assert sent_to(srv, dev) == count


def test_mail_read_in_the_same_batch_is_not_announced(srv):
    u = srv.user()
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    r = srv.publish_raw([{"user": u.name, "folder": "INBOX", "type": "new"},
                         {"user": u.name, "folder": "INBOX", "type": "expunge"}])
    assert r.status == 200, r
    dev.quiet(QUIET)
    assert sent_to(srv, dev) == 0
    # New mail after the expunge is announced again.
    srv.publish(u.name, "INBOX", type="new")
    assert dev.recv()["state"] == 3
