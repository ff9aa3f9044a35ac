"""The adaptive heartbeat, judged from what the server sees (docs/networks.md):
an expiry answered and followed in time by the device's next ping raises
the hint; a late next ping, a new ping while one is held, or a held
connection that dies lowers it to the last proven heartbeat and remembers
the failed one as a ceiling. A held connection the path resets counts; one
the client closes itself (FIN) does not. The hint survives a restart (SQLite
store) and a network where enough devices learn short heartbeats is named in
event 1311.

Second-scale settings: heartbeat min 1, increment 1, sample_size 1, grace 2.
The real middlebox behaviour (answers eaten by a firewall) is in tests/netlab.
"""
import socket
import time

from harness import log_events, wait_event

SETTINGS = {
    "heartbeat": {"min": 1, "max": 20, "increment": 1, "sample_size": 1, "grace": 2,
                  "alert_average": 0},
}


def hint(resp):
    assert resp.status == 200, resp
    return resp.json()["heartbeat_hint"]


def expire(user, device, hb):
    """One ping that expires; returns its answer's hint."""
    r = user.ping(device, {"INBOX": "0"}, hb, timeout=hb + 30)
    assert r.json()["status"] == "expired", r
    return hint(r)


def test_hint_rises_while_expiries_are_followed_in_time(make_nudged):
    n = make_nudged(SETTINGS)
    alice = n.user("alice")
    # A new device is advised what it asked for.
    assert expire(alice, "phone", 1) == 1
    # Each expiry followed at once by the next ping proves it: +increment per sample.
    assert expire(alice, "phone", 1) == 2
    assert expire(alice, "phone", 2) == 3
    # Judged when the next ping arrives: the 2 s one (sent under hint 2) raises to 4.
    assert expire(alice, "phone", 1) == 4
    # That 1 s ping was sent under hint 3: it proves nothing more.
    assert expire(alice, "phone", 1) == 4


def test_late_ping_after_expiry_falls_back_to_the_proven_heartbeat(make_nudged):
    n = make_nudged(SETTINGS)
    bob = n.user("bob")
    for hb, want in ((1, 1), (1, 2), (2, 3), (3, 4)):
        assert expire(bob, "phone", hb) == want
    # The device took longer than grace to come back after the 4 s expiry:
    # as if a middlebox had eaten the answer and the device had timed out.
    assert expire(bob, "phone", 4) == 5
    time.sleep(3)  # > grace (2 s)
    r = bob.ping("phone", {"INBOX": "0"}, 1, timeout=30)
    # 4 failed; 3 was proven: back to 3, and 4 is the ceiling.
    assert hint(r) == 3
    # Further successes close in on the ceiling but never reach it.
    assert expire(bob, "phone", 3) == 3


def test_new_ping_while_held_counts_as_a_failure(make_nudged):
    n = make_nudged(SETTINGS)
    carol = n.user("carol")
    for hb, want in ((1, 1), (1, 2), (2, 3)):
        assert expire(carol, "phone", hb) == want
    held = carol.ping_async("phone", {"INBOX": "0"}, 10)
    n.wait_held(1, watch=[held])
    # The device comes back while its 10 s ping is held: the path ate something.
    again = carol.ping_async("phone", {"INBOX": "0"}, 1)
    old = held.result()
    assert old.json()["status"] == "superseded", old
    # 10 failed with 2 proven (the last expiry followed in time was 2 s).
    assert hint(old) == 2
    assert hint(again.result(timeout=30)) == 2


def test_a_held_connection_reset_on_the_path_lowers_the_hint(make_nudged):
    n = make_nudged(SETTINGS)
    dave = n.user("dave")
    for hb, want in ((1, 1), (1, 2), (2, 3)):
        assert expire(dave, "phone", hb) == want
    held = dave.ping_async("phone", {"INBOX": "0"}, 10)
    n.wait_held(1, watch=[held])
    held.reset()
    wait_event(n, 1302, lambda e: e.get("device") == "phone", "for the reset ping")
    r = dave.ping("phone", {"INBOX": "0"}, 1, timeout=30)
    assert hint(r) == 2


def test_a_stream_or_websocket_of_the_device_is_no_evidence(make_nudged):
    # A stream is not held for the device's heartbeat: a ping superseding it, or
    # the path resetting it, says nothing about the path's idle timeout.
    import sse
    import ws
    # A grace long enough for the stream and the WebSocket between two pings.
    n = make_nudged({"heartbeat": {**SETTINGS["heartbeat"], "grace": 15}})
    erin = n.user("erin")
    for hb, want in ((1, 1), (1, 2), (2, 3)):
        assert expire(erin, "phone", hb) == want
    s = sse.Stream(n, erin.token, "types=INBOX&device=phone")
    assert s.status == 200, s.response
    s.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    s.conn.sock.close()
    wait_event(n, 1302, lambda e: e.get("device") == "phone", "for the reset stream")
    w = ws.WebSocket(n, erin.token, "device=phone")
    assert w.status == 101, w.response
    # This ping supersedes the WebSocket while it is held; the 2 s expiry before
    # it still counts as followed in time, so the hint goes on rising.
    assert expire(erin, "phone", 3) == 4
    w.close()


def test_a_client_closing_its_own_ping_is_no_evidence(make_nudged):
    # Even one device may alert here: only the FIN rule keeps event 1311 away.
    n = make_nudged(dict(SETTINGS, heartbeat=dict(SETTINGS["heartbeat"], alert_average=540,
                                                  alert_min_devices=1)))
    gina = n.user("gina")
    for hb, want in ((1, 1), (1, 2), (2, 3)):
        assert expire(gina, "phone", hb) == want
    held = gina.ping_async("phone", {"INBOX": "0"}, 10)
    n.wait_held(1, watch=[held])
    time.sleep(2)
    held.close()
    ev = wait_event(n, 1302, lambda e: e.get("device") == "phone", "for the closed ping")
    assert ev["why"] == "eof", ev
    # The held ping's arrival proved the 2 s expiry (hint 4); its close took
    # nothing away (a reset falls back to 2, as above).
    r = gina.ping("phone", {"INBOX": "0"}, 1, timeout=30)
    assert hint(r) == 4
    assert not log_events(n, 1311)


def test_learned_hint_survives_a_restart(make_nudged):
    n = make_nudged(dict(SETTINGS, store={"backend": "sqlite"}))
    erin = n.user("erin")
    for hb, want in ((1, 1), (1, 2), (2, 3), (3, 4)):
        assert expire(erin, "phone", hb) == want
    # A publish after the last save makes the device record durable (one queue, in order).
    erin.publish("Other")
    assert n.stop() == 0
    n.start()
    # Same user, same token: the secret survives the restart too.
    r = erin.ping("phone", {"INBOX": "0"}, 1, timeout=30)
    assert hint(r) == 4


def superseded(n, user, device):
    """A ping held, then a new one from the same device: a failure, so the
    device gets a ceiling and counts for its network. Returns once both are
    answered, with nothing held."""
    held = user.ping_async(device, {"INBOX": "0"}, 5)
    n.wait_held(1, watch=[held])
    again = user.ping_async(device, {"INBOX": "0"}, 1)
    assert held.result().json()["status"] == "superseded"
    assert again.result(timeout=30).json()["status"] == "expired"


def test_the_alert_waits_for_enough_devices(make_nudged):
    # One user, so that with workers every device is in the same process.
    n = make_nudged(dict(SETTINGS, heartbeat=dict(SETTINGS["heartbeat"], alert_average=10,
                                                  alert_min_devices=3)))
    hana = n.user("hana")
    for device in ("a", "b"):
        superseded(n, hana, device)
    # Each answer is written after its verdict was logged.
    assert not log_events(n, 1311)
    superseded(n, hana, "c")
    ev = wait_event(n, 1311, lambda e: True, "once three devices have a ceiling")
    assert ev["network"] == "127.0.0.0/24" and ev["devices"] == "3", ev


def test_a_network_of_short_heartbeats_is_named(make_nudged):
    n = make_nudged(dict(SETTINGS, heartbeat=dict(SETTINGS["heartbeat"], alert_average=10,
                                                  alert_min_devices=1)))
    frank = n.user("frank")
    assert not log_events(n, 1311)
    for hb, want in ((1, 1), (1, 2)):
        assert expire(frank, "phone", hb) == want
    # A failure gives the device a ceiling: it now counts for its network.
    held = frank.ping_async("phone", {"INBOX": "0"}, 5)
    n.wait_held(1, watch=[held])
    frank.ping_async("phone", {"INBOX": "0"}, 1)
    held.result()
    ev = wait_event(n, 1311, lambda e: True, "for 127.0.0.0/24")
    assert ev["network"] == "127.0.0.0/24", ev
    assert int(ev["average"]) <= 10 and ev["name"] == "heartbeat_alert", ev
    assert "middlebox idle timeout is short" in ev["advice"], ev


def test_nudge_ping_adaptive_follows_the_hint(make_nudged):
    import subprocess

    import harness

    n = make_nudged(SETTINGS)
    user = n.user("gina")
    out = subprocess.run(
        [harness.nudge_path(), "ping", "--url", n.url, "--token", user.token, "--device", "phone",
         "--heartbeat", "1", "--folder", "INBOX", "--loop", "--adaptive", "--slack", "5",
         "--count", "4"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    # Each ping uses the hint of the answer before it, and the hint climbs.
    assert lines == ["expired heartbeat=1 heartbeat_hint=1",
                     "expired heartbeat=1 heartbeat_hint=2",
                     "expired heartbeat=2 heartbeat_hint=3",
                     "expired heartbeat=3 heartbeat_hint=4"], out.stdout
