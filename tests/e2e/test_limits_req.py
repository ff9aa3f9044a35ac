"""Request-level abuse limits (issue 20, "Abuse limits"): pings per device per
minute, auth failures per address, the log under a flood of refused
requests, probes, UDP registrations and datagrams. Each test fails when its
limit is taken away.

The per-minute counts are in fixed windows: a test that must see a limit
sends up to twice the limit and a little more, so that a window ending in
the middle of its loop cannot hide it."""
import json
import socket
import time

import pytest

import activesync as asx
import harness
from harness import UdpDevice, expect_error, wait_event
from sse import Stream, query
from ws import WebSocket

RATE = 4                       # [ping] max_per_minute in these tests
ENOUGH = 2 * RATE + 3          # requests that must meet the limit within one window


def limited_ping(user, device, folders):
    """Pings device in a tight loop, each answered at once; the first 429 or None."""
    for _ in range(ENOUGH):
        r = user.ping(device, folders, 60)
        if r.status == 429:
            return r
        assert r.status == 200 and r.json()["status"] == "changed", r
    return None


def test_a_tight_ping_loop_gets_429_with_retry_after(make_nudged):
    n = make_nudged({"ping": {"max_per_minute": RATE}})
    alice = n.user("alice")
    alice.publish("INBOX")
    # A client replaying a state older than the one it was told gets "changed" at once,
    # every time: the loop that costs the server most and tells the client nothing.
    r = limited_ping(alice, "loop", {"INBOX": "0"})
    assert r is not None, f"{ENOUGH} pings in a row were all answered"
    body = expect_error(r, 429, "ping-rate-limited", has_error=True)
    wait = int(r.header("Retry-After"))
    assert 1 <= wait <= 60 and body["retry_after"] == wait, r
    # One log line per offender however long it goes on.
    for _ in range(3):
        assert alice.ping("loop", {"INBOX": "0"}, 60).status == 429
    ev = wait_event(n, 1303, lambda e: e.get("device") == "loop", "ping_rate_limited")
    assert ev["what"] == "ping" and ev["user"] == alice.name and ev["max_per_minute"] == str(RATE)
    assert len([e for e in harness.log_events(n, 1303) if e.get("device") == "loop"]) == 1
    assert n.metric("nudge_pings_rate_limited_total") >= 4
    # The limit is per device: another device of the same user is served.
    r = alice.ping("other", {"INBOX": "0"}, 60)
    assert r.status == 200 and r.json()["status"] == "changed", r


def test_a_phone_re_pinging_after_each_change_never_meets_the_limit(make_nudged):
    n = make_nudged({"ping": {"max_per_minute": RATE}})
    bob = n.user("bob")
    state = bob.states(["INBOX"]).get("INBOX", "0")
    for i in range(3 * RATE):
        if i % 2:
            # Held, then woken by a publish: the re-ping it causes is the publisher's doing.
            p = bob.ping_async("phone", {"INBOX": state}, 60)
            n.wait_held(1, watch=[p])
            bob.publish("INBOX")
            r = p.result()
        else:
            # A change that came between two pings, answered at once: news, not a replay.
            bob.publish("INBOX")
            r = bob.ping("phone", {"INBOX": state}, 60)
        assert r.status == 200 and r.json()["status"] == "changed", (i, r)
        state = r.json()["folders"]["INBOX"]
    assert not [e for e in harness.log_events(n, 1303) if e.get("device") == "phone"]


def test_the_default_is_documented_and_zero_turns_it_off(make_nudged):
    n = make_nudged({"ping": {"max_per_minute": 0}})
    carol = n.user("carol")
    carol.publish("INBOX")
    for _ in range(ENOUGH):
        r = carol.ping("loop", {"INBOX": "0"}, 60)
        assert r.status == 200, r
    doc = (harness.REPO / "docs/config.md").read_text()
    assert "`max_per_minute` | `--ping-max-per-minute` | 60 |" in doc


def test_a_tight_stream_reconnect_loop_is_told_to_come_back(make_nudged):
    n = make_nudged({"ping": {"max_per_minute": RATE}})
    dave = n.user("dave")
    dave.publish("INBOX")  # a served stream sends its state at once; a come-back ends instead
    retry = None
    for _ in range(ENOUGH):
        s = Stream(n, token=dave.token, query=query(device="tab"))
        assert s.status == 200, s.response
        first = s.next()
        assert first.retry is not None, first
        after = s.next()
        s.close()
        if after is None:
            retry = first.retry
            break
        assert after.type == "state", after
    assert retry is not None, f"{ENOUGH} stream connections in a row were all served"
    assert retry >= 1000, retry
    wait_event(n, 1303, lambda e: e.get("device") == "tab" and e.get("what") == "stream",
               "ping_rate_limited")


def test_a_tight_websocket_reconnect_loop_gets_429(make_nudged):
    n = make_nudged({"ping": {"max_per_minute": RATE}})
    erin = n.user("erin")
    refused = None
    for _ in range(ENOUGH):
        w = WebSocket(n, token=erin.token, query=query(device="desk"))
        if w.status != 101:
            refused = w.response
            w.close()
            break
        w.close()
    assert refused is not None, f"{ENOUGH} WebSocket handshakes in a row were all accepted"
    expect_error(refused, 429, "ping-rate-limited")
    assert int(refused.header("Retry-After")) >= 1
    wait_event(n, 1303, lambda e: e.get("device") == "desk" and e.get("what") == "ws",
               "ping_rate_limited")


@pytest.mark.skipif(not asx.tools_present(), reason="libwbxml2-utils (xml2wbxml) not installed")
def test_an_activesync_ping_loop_is_held_not_answered(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"fred": "pw-fred"})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}"}, "ping": {"max_per_minute": RATE},
                     "heartbeat": {"min": 60, "max": 900}})
    d = asx.Device(n, "fred", "pw-fred")
    prev = d.ping_async(heartbeat=300)
    n.wait_held(1, watch=[prev])
    held = None
    for _ in range(ENOUGH):
        # Each Ping supersedes the one before (answered Status 1) until the device is over.
        p = d.ping_async(heartbeat=300)
        deadline = time.monotonic() + harness.WAIT
        while not prev.done() and not [e for e in harness.log_events(n, 1303)
                                       if e.get("device") == d.device]:
            assert time.monotonic() < deadline, n.log_tail()
            time.sleep(0.02)
        if not prev.done():
            held = p
            break
        assert asx.Answer(prev.result()).status == 1
        prev.close()
        prev = p
        n.wait_held(1, watch=[prev])
    assert held is not None, f"{ENOUGH} Pings in a row were all taken"
    ev = wait_event(n, 1303, lambda e: e.get("device") == d.device, "ping_rate_limited")
    assert ev["what"] == "activesync"
    # ActiveSync has no 429: the Ping over the limit is held, and the one before keeps waiting
    # for changes: a publish answers it, not the held one.
    n.publish("fred", "INBOX")
    a = asx.Answer(prev.result())
    assert a.status == 2, a
    time.sleep(0.3)
    assert not held.done(), held.result(0)
    held.close()
    prev.close()
    assert n.healthy()


# ---------------------------------------------------------------------------
# Auth failures per address, and the log under a flood


def test_forged_tokens_from_one_address_get_429_and_valid_ones_still_pass(make_nudged):
    max_bad = 6
    n = make_nudged({"auth": {"max_bad_tokens_per_ip": max_bad}, "log": {"burst": 0}})
    gina = n.user("gina")
    forged = harness.flip_mac_char(gina.token)
    # Expired tokens were real once (a stale client, not a forger): never counted.
    expired = n.sign("u", gina.name, int(time.time()) - 60)
    for _ in range(2 * max_bad):
        expect_error(n.request("GET", "/v1/state", token=expired), 401, "unauthorized")
    answers = []
    for i in range(2 * max_bad + 2):  # twice the limit: a window ending in the loop hides nothing
        r = n.request("GET", "/v1/state", token=forged if i % 2 else "not-a-token")
        answers.append(r.status)
        if r.status == 429:
            break
    assert answers[-1] == 429, f"forged tokens were answered {answers}"
    assert answers.count(401) >= max_bad - 1, answers
    body = expect_error(r, 429, "too-many-failures", has_error=True)
    assert int(r.header("Retry-After")) == body["retry_after"] >= 1
    # A valid token from the same address is served: a NAT address hides honest clients.
    assert gina.state().status == 200
    # Past the limit a forger writes no line per request (burst = 0: nothing else bounds it).
    for _ in range(20):
        assert n.request("GET", "/v1/state", token=forged).status == 429
    failed = [e for e in harness.log_events(n, 1200) if "signature" in e.get("reason", "")
              or "malformed" in e.get("reason", "")]
    assert max_bad - 1 <= len(failed) <= 2 * (max_bad - 1), failed
    assert 1 <= len(harness.log_events(n, 1211)) <= 2
    assert n.metric("nudge_bad_tokens_limited_total") >= 21


def test_a_flood_of_slow_and_refused_connections_writes_a_bounded_log(make_nudged):
    burst = 20
    n = make_nudged({"server": {"header_timeout": 1}, "log": {"burst": burst},
                     "auth": {"max_bad_tokens_per_ip": 0}})
    workers = int(n.setting("server", "workers", "1"))
    flood = 200
    slow = []
    for _ in range(flood):
        c = n.connect()
        c.send(b"GET /heal")          # never finished: 408, event 1102
        slow.append(c)
    forged = harness.flip_mac_char(n.token("hank"))
    for _ in range(flood):            # refused 401, event 1200
        assert n.request("GET", "/v1/state", token=forged).status == 401
    for c in slow:
        c.wait_closed()
        c.close()
    timeouts = harness.log_events(n, 1102)
    failed = harness.log_events(n, 1200)
    lines = len(n.log_text().splitlines())
    print(f"refused={2 * flood} workers={workers} request_timeout={len(timeouts)} "
          f"auth_failed={len(failed)} lines={lines}")
    # Each process writes at most [log] burst lines of one event per 10 s; the rest are counted.
    assert 1 <= len(timeouts) <= burst * workers * 2, len(timeouts)
    assert 1 <= len(failed) <= burst * workers * 2, len(failed)
    assert lines < flood, f"{2 * flood} refused connections wrote {lines} lines"
    assert n.healthy()


# ---------------------------------------------------------------------------
# Probes


def same_worker_users(n, count, prefix):
    """'count' user names owned by one worker (the probe total is per worker)."""
    workers = int(n.setting("server", "workers", "1"))
    names, i = [], 0
    while len(names) < count:
        name = f"{prefix}{i}-{harness.unique('p')}"
        if harness.worker_of(name, workers) == 0:
            names.append(name)
        i += 1
    return names


def test_probes_are_limited_per_user_and_in_all(make_nudged):
    n = make_nudged({"probe": {"max_per_user": 2, "max_held": 3}})
    a, b, c = same_worker_users(n, 3, "prober")
    ta, tb, tc = n.token(a), n.token(b), n.token(c)
    held = [n.pending("GET", "/v1/probe?hold=120", token=ta) for _ in range(2)]
    n.wait_metric("nudge_probes_held", lambda v: v == 2)
    r = n.request("GET", "/v1/probe?hold=120", token=ta)
    body = expect_error(r, 429, "too-many-probes", has_error=True)
    assert body["max"] == 2 and int(r.header("Retry-After")) >= 1, r
    held.append(n.pending("GET", "/v1/probe?hold=120", token=tb))
    n.wait_metric("nudge_probes_held", lambda v: v == 3)
    # User c has none held, but the worker has max_held.
    r = n.request("GET", "/v1/probe?hold=120", token=tc)
    body = expect_error(r, 429, "too-many-probes")
    assert body["max"] == 3, r
    limits = {e["limit"] for e in harness.log_events(n, 1304)}
    assert limits == {"per_user", "held"}, limits
    assert n.metric("nudge_probes_refused_total") == 2
    # A probe that ends makes room again.
    held.pop().close()
    n.wait_metric("nudge_probes_held", lambda v: v == 2)
    p = n.pending("GET", "/v1/probe?hold=120", token=tc)
    n.wait_metric("nudge_probes_held", lambda v: v == 3)
    held.append(p)
    for p in held:
        p.close()


# ---------------------------------------------------------------------------
# UDP: registrations per user and per address, no amplification, no reflection


def test_udp_registrations_are_limited_per_user(make_nudged):
    n = make_nudged({"udp": {"max_per_user": 2}})
    ivy = n.user("ivy")
    devs = [UdpDevice(n, ivy) for _ in range(3)]
    devs[0].register()
    devs[1].register()
    r = devs[2].register_raw(["INBOX"])
    body = expect_error(r, 429, "udp-limit", has_error=True)
    assert body["max"] == 2 and "max_per_user" in body["error"], r
    # A device renewing its own registration adds none.
    devs[0].register(["INBOX", "Work"])
    ev = wait_event(n, 1608, lambda e: e.get("user") == ivy.name, "udp_limited")
    assert ev["limit"] == "per_user"
    assert n.metric("nudge_udp_refused_total") == 1
    # One ends: room for another.
    assert n.request("DELETE", f"/v1/udp/{devs[1].device}", token=ivy.token).status in (200, 204)
    devs[2].register()


def test_udp_registrations_aimed_at_one_address_are_limited(make_nudged):
    n = make_nudged({"udp": {"max_per_address": 3}})
    names = same_worker_users(n, 4, "aim")
    users = [harness.User(n, name) for name in names]
    devs = [UdpDevice(n, u) for u in users]
    for d in devs[:3]:
        d.register()
    r = devs[3].register_raw(["INBOX"])
    body = expect_error(r, 429, "udp-limit", has_error=True)
    assert body["max"] == 3 and "max_per_address" in body["error"], r
    ev = wait_event(n, 1608, lambda e: e.get("limit") == "per_address", "udp_limited")
    assert ev["address"].startswith("127.0.0.1"), ev
    devs[0].register(["INBOX", "Work"])  # the same device again, same address: still fine


def test_udp_datagrams_go_only_to_the_requester_unless_allowed(make_nudged):
    n = make_nudged({})
    jon = n.user("jon")
    dev = UdpDevice(n, jon)
    for host in ["192.0.2.1", "127.0.0.2", "::1"]:
        r = dev.register_raw(["INBOX"], host=host)
        assert r.status in (400, 403), (host, r)
        if r.status == 403:
            assert r.json()["status"] == "host-not-allowed", r
    r = n.request("POST", "/v1/udp/test", {"port": dev.port, "nonce": "x", "host": "192.0.2.1"},
                  token=jon.token)
    assert r.status in (400, 403), r
    n2 = make_nudged({"udp": {"allowed_hosts": "127.0.0.2/32"}})
    dev2 = UdpDevice(n2, n2.user("jon"))
    assert dev2.register(["INBOX"], host="127.0.0.2")["address"].startswith("127.0.0.2:")


def minimal_request(path, token, body):
    """The shortest request nudged serves: request line, the credential, the length, the body."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return (f"POST {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def send_raw(n, req):
    c = n.connect()
    try:
        c.send(req)
        return c.read_response()
    finally:
        c.close()


def test_no_datagram_is_larger_than_the_request_that_caused_it(make_nudged):
    n = make_nudged({})
    user = harness.User(n, "z")     # the shortest user id, so the shortest token
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.settimeout(harness.WAIT)
    try:
        # A notify carries the longest folder name there is, sent at once by a registration
        # that says it holds an older state; the request had to name the folder.
        folder = "f" * 255
        user.publish(folder)
        req = minimal_request("/v1/udp", user.token, {"device": "d", "port": port,
                                                      "folders": {folder: "0"}})
        assert send_raw(n, req).status == 200
        data, _ = sock.recvfrom(4096)
        print(f"notify={len(data)} request={len(req)}")
        assert len(data) < len(req), (len(data), len(req))
        # A test datagram carries the longest nonce there is.
        req = minimal_request("/v1/udp/test", user.token, {"port": port, "nonce": "n" * 64})
        assert send_raw(n, req).status in (200, 202)
        data, _ = sock.recvfrom(4096)
        print(f"test={len(data)} request={len(req)}")
        assert data[3] == harness.DGRAM_TEST and len(data) < len(req), (len(data), len(req))
    finally:
        sock.close()
