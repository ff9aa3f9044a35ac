"""Sessions: the per-user cap and its reaper, dead clients found by TCP
keepalive, the global connection limits (max_connections, max_per_ip), the
sessions admin API, `nudge sessions`, and device records across a restart.

Dead clients are made for real: nudged runs in a network namespace the test
creates (netns.py), and an nftables rule inside it drops everything the
client sends, so the client neither closes nor answers, exactly like a phone
whose network vanished. The kernel's keepalive and TCP_INFO then decide, as
they would in production. Those tests need root, `ip` and `nft`, and skip
with the reason otherwise.

Every wait polls (the admin API, the log) with generous bounds; nothing
asserts a tight timing.
"""
import re
import shlex
import socket
import time
import urllib.parse

import pytest

import harness
import netns
from conftest import finish
from harness import SLOW, WAIT, expect_error, log_events, wait_event

# Heartbeat of the pings the tests hold: far longer than any test runs.
HB = 600
SESSION_FIELDS = {"user", "device", "remote", "kind", "age", "last_activity", "heartbeat"}
TABLE_COLUMNS = ["USER", "DEVICE", "REMOTE", "KIND", "AGE", "LAST-ACTIVITY", "HEARTBEAT"]


def enc(s):
    """Percent-encodes one path segment or query value ('/' too)."""
    return urllib.parse.quote(s, safe="")


# ---------------------------------------------------------------------------
# Helpers: the admin API, the log, held pings

def list_sessions(srv, user=None, token=None):
    path = "/v1/admin/sessions" + (f"?user={enc(user)}" if user is not None else "")
    r = srv.request("GET", path, token=token or srv.admin_token())
    assert r.status == 200, f"GET {path} answered {r!r}"
    body = r.json()
    assert isinstance(body.get("sessions"), list) and body.get("count") == len(body["sessions"]), r
    return body["sessions"]


def devices_of(srv, user):
    """The devices holding a session of 'user', sorted."""
    return sorted(s["device"] for s in list_sessions(srv, user))


def wait_devices(srv, user, expected, timeout=WAIT):
    """Polls the admin API until exactly 'expected' devices of 'user' hold sessions."""
    expected = sorted(expected)
    deadline = time.monotonic() + timeout
    while True:
        got = devices_of(srv, user)
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions of {user!r}: {got}, expected {expected}\n{srv.log_tail()}")
        time.sleep(0.05)


def session_of(srv, user, device):
    found = [s for s in list_sessions(srv, user) if s["device"] == device]
    assert len(found) == 1, f"expected one session {user}/{device}: {found}"
    return found[0]


def hold(srv, token, device, heartbeat=HB, folders=None):
    """Sends a ping that will be held, on a connection of its own; returns the Conn."""
    c = srv.connect()
    harness.LIVE.append(c)
    c.send_request("POST", "/v1/ping",
                   harness.ping_body(device, folders or {"INBOX": "0"}, heartbeat), token)
    return c


def client_port(c):
    return c.sock.getsockname()[1]


def closed_for(user, device):
    return lambda e: e.get("user") == user and e.get("device") == device


# ---------------------------------------------------------------------------
# The per-user cap (module server, default settings: per_user_limit 32)

def test_cap_refuses_the_33rd_device_with_429_and_logs_every_holder(srv):
    user = srv.user("cap")
    devices = [f"d{i}" for i in range(32)]
    held = {d: user.ping_async(d, {"INBOX": "0"}, HB) for d in devices}
    wait_devices(srv, user.name, devices)

    # A space in the refused device's id: the log must quote it, not mix it up.
    refused = "new device"
    r = user.ping(refused, {"INBOX": "0"}, HB)
    assert r.status == 429, r
    assert r.json() == {"status": "session-limit", "limit": 32}, r
    retry_after = r.header("Retry-After")
    # The first of the held sessions ends with its heartbeat: that is when to come back.
    assert retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= HB, r

    ev = wait_event(srv, 1301, lambda e: e.get("user") == user.name, f"for {user.name}")
    assert ev["name"] == "session_limit" and ev["level"] == "warn", ev
    assert ev["device"] == refused, f"the refused device is {refused!r}, the log says {ev}"
    assert ev["limit"] == "32", ev
    holders = re.findall(r"(?:^|, )(\S+) age=\d+s idle=\d+s", ev["sessions"])
    assert sorted(holders) == sorted(devices), f"sessions field names {holders}: {ev}"

    # The refusal changed nothing for the 32.
    assert devices_of(srv, user.name) == sorted(devices)
    assert not any(p.done() for p in held.values())


def test_cap_lets_a_held_device_reconnect_and_supersede_itself(srv):
    user = srv.user("cap")
    devices = [f"d{i}" for i in range(32)]
    held = {d: user.ping_async(d, {"INBOX": "0"}, HB) for d in devices}
    wait_devices(srv, user.name, devices)

    # d5 reconnects (a phone after a network change): its own session makes room.
    again = user.ping_async("d5", {"INBOX": "0"}, HB)
    srv.check_ping(held["d5"].result(), "superseded")
    deadline = time.monotonic() + WAIT
    while session_of(srv, user.name, "d5")["remote"] != f"127.0.0.1:{client_port(again.conn)}":
        assert time.monotonic() < deadline, f"d5 still on its old connection\n{srv.log_tail()}"
        time.sleep(0.05)
    assert devices_of(srv, user.name) == sorted(devices)
    assert not again.done(), f"the reconnected ping was answered: {again.result(0)!r}"
    assert not any(held[d].done() for d in devices if d != "d5")
    assert not [e for e in log_events(srv, 1301) if e.get("user") == user.name]


# ---------------------------------------------------------------------------
# The admin API

def test_admin_list_shows_each_session_with_its_fields(srv):
    alice = harness.User(srv, harness.unique("ops/team@example.org-"))
    bob = srv.user("bob")
    sent = time.monotonic()
    conns = {
        ("a", "dev/1@x y"): hold(srv, alice.token, "dev/1@x y", heartbeat=HB),
        ("a", "phone"): hold(srv, alice.token, "phone", heartbeat=HB + 1),
        ("b", "tab"): hold(srv, bob.token, "tab", heartbeat=HB + 2),
    }
    wait_devices(srv, alice.name, ["dev/1@x y", "phone"])
    wait_devices(srv, bob.name, ["tab"])

    listed = list_sessions(srv, alice.name)
    assert len(listed) == 2
    for s in listed:
        assert set(s) == SESSION_FIELDS, s
        assert s["user"] == alice.name and s["kind"] == "ping", s
        c = conns[("a", s["device"])]
        assert s["remote"] == f"127.0.0.1:{client_port(c)}", s
        assert s["heartbeat"] == (HB if s["device"] == "dev/1@x y" else HB + 1), s
        for k in ("age", "last_activity"):
            assert isinstance(s[k], int) and 0 <= s[k] <= time.monotonic() - sent + 1, s

    # Without ?user=, every user's sessions (other tests' may be there too).
    everyone = list_sessions(srv)
    ours = sorted((s["user"], s["device"]) for s in everyone if s["user"] in (alice.name, bob.name))
    assert ours == sorted([(alice.name, "dev/1@x y"), (alice.name, "phone"), (bob.name, "tab")]), everyone
    assert list_sessions(srv, harness.unique("nobody")) == []

    # Age counts from the ping; a new ping from a device starts it again.
    time.sleep(1.5)
    assert all(s["age"] >= 1 and s["last_activity"] >= 1 for s in list_sessions(srv, alice.name))
    renewed = time.monotonic()
    conns[("a", "phone")] = hold(srv, alice.token, "phone", heartbeat=HB + 1)
    deadline = time.monotonic() + WAIT
    while True:
        s = session_of(srv, alice.name, "phone")
        if s["remote"] == f"127.0.0.1:{client_port(conns[('a', 'phone')])}":
            break
        assert time.monotonic() < deadline, f"phone never moved to its new ping: {s}"
        time.sleep(0.05)
    assert s["age"] <= time.monotonic() - renewed + 1 and s["last_activity"] <= s["age"] + 1, s
    assert session_of(srv, alice.name, "dev/1@x y")["age"] >= 1


def test_admin_delete_ends_a_session_named_with_encoded_ids(srv):
    user = harness.User(srv, harness.unique("team/ops@example.org-"))
    device = "dev/1@x y"
    c = hold(srv, user.token, device)
    other = hold(srv, user.token, "other")
    wait_devices(srv, user.name, [device, "other"])

    r = srv.request("DELETE", f"/v1/admin/sessions/{enc(user.name)}/{enc(device)}",
                    token=srv.admin_token())
    assert r.status == 200, r
    assert r.json() == {"status": "ended", "user": user.name, "device": device}, r
    # The held connection is closed without an answer.
    assert c.wait_closed() == b""
    ev = wait_event(srv, 1302, closed_for(user.name, device), f"for {device!r}")
    assert ev["why"] == "ended by an admin", ev
    wait_devices(srv, user.name, ["other"])

    r = srv.request("DELETE", f"/v1/admin/sessions/{enc(user.name)}/{enc(device)}",
                    token=srv.admin_token())
    expect_error(r, 404, "no-session")
    r = srv.request("DELETE", f"/v1/admin/sessions/{enc(harness.unique('nobody'))}/x",
                    token=srv.admin_token())
    expect_error(r, 404, "no-session")
    # A '/' inside an id must be encoded: a raw one makes three parts.
    r = srv.request("DELETE", f"/v1/admin/sessions/{enc(user.name)}/other/x", token=srv.admin_token())
    expect_error(r, 400, "bad-request")
    r = srv.request("DELETE", f"/v1/admin/sessions/{enc(user.name)}", token=srv.admin_token())
    expect_error(r, 400, "bad-request")
    assert devices_of(srv, user.name) == ["other"] and other.poll_bytes(0.05) == b""


def test_admin_api_needs_an_admin_token(srv):
    user = srv.user("tok")
    c = hold(srv, user.token, "phone")
    wait_devices(srv, user.name, ["phone"])
    end = f"/v1/admin/sessions/{enc(user.name)}/phone"
    for token in (user.token, srv.publisher_token()):
        expect_error(srv.request("GET", "/v1/admin/sessions", token=token), 403, "forbidden")
        expect_error(srv.request("DELETE", end, token=token), 403, "forbidden")
    expect_error(srv.request("GET", "/v1/admin/sessions"), 401, "unauthorized")
    expect_error(srv.request("DELETE", end), 401, "unauthorized")
    assert devices_of(srv, user.name) == ["phone"] and c.poll_bytes(0.05) == b""


# ---------------------------------------------------------------------------
# nudge sessions

def table(stdout):
    """`nudge sessions` output -> (rows as lists of cells, count line). Checks the
    header and that every cell starts under its column's title."""
    lines = stdout.splitlines()
    assert lines and re.fullmatch(r"\d+ sessions?", lines[-1]), f"no count line: {stdout!r}"
    if lines[-1] == "0 sessions":
        assert len(lines) == 1, stdout
        return [], lines[-1]
    header = lines[0]
    assert header.split() == TABLE_COLUMNS, stdout
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    rows = []
    for line in lines[1:-1]:
        cells = list(re.finditer(r'"(?:[^"\\]|\\.)*"|\S+', line))
        assert [m.start() for m in cells] == starts, f"row not aligned with the header:\n{stdout}"
        assert line == line.rstrip(), f"trailing blanks: {line!r}"
        rows.append([shlex.split(m.group(0))[0] if m.group(0).startswith('"') else m.group(0)
                     for m in cells])
    assert lines[-1] == f"{len(rows)} session{'' if len(rows) == 1 else 's'}", stdout
    return rows, lines[-1]


def test_cli_sessions_lists_a_table(srv):
    user = srv.user("cli")
    phone = hold(srv, user.token, "phone1", heartbeat=HB)
    tab = hold(srv, user.token, "tab 2", heartbeat=HB + 1)
    wait_devices(srv, user.name, ["phone1", "tab 2"])

    p = srv.cli("sessions", "--url", srv.url, "-c", str(srv.conf), "--user", user.name)
    assert p.returncode == 0, p.stderr
    rows, count = table(p.stdout)
    assert count == "2 sessions"
    assert [r[:4] for r in rows] == [
        [user.name, "phone1", f"127.0.0.1:{client_port(phone)}", "ping"],
        [user.name, "tab 2", f"127.0.0.1:{client_port(tab)}", "ping"],
    ], p.stdout
    assert [r[6] for r in rows] == [f"{HB}s", f"{HB + 1}s"], p.stdout
    for r in rows:
        assert re.fullmatch(r"\d+s", r[4]) and re.fullmatch(r"\d+s", r[5]), p.stdout

    # Every user without --user; the token from --token or NUDGE_TOKEN/NUDGE_URL.
    for args, env in ((["--url", srv.url, "--token", srv.admin_token()], None),
                      ([], {"NUDGE_URL": srv.url, "NUDGE_TOKEN": srv.admin_token()})):
        p = srv.cli("sessions", *args, env=env)
        assert p.returncode == 0, p.stderr
        rows, _ = table(p.stdout)
        assert [r[1] for r in rows if r[0] == user.name] == ["phone1", "tab 2"], p.stdout

    p = srv.cli("sessions", "--url", srv.url, "-c", str(srv.conf), "--user", harness.unique("nobody"))
    assert p.returncode == 0 and p.stdout == "0 sessions\n", (p.stdout, p.stderr)


def test_cli_sessions_end(srv):
    user = srv.user("cli")
    slashed = harness.User(srv, harness.unique("a/b@example.org-"))
    phone = hold(srv, user.token, "phone1")
    deep = hold(srv, user.token, "dev/1")
    odd = hold(srv, slashed.token, "x/y z")
    wait_devices(srv, user.name, ["dev/1", "phone1"])
    wait_devices(srv, slashed.name, ["x/y z"])
    base = ["sessions", "--url", srv.url, "-c", str(srv.conf)]

    p = srv.cli(*base, "--end", f"{user.name}/phone1")
    assert (p.returncode, p.stdout, p.stderr) == (0, f"ended {user.name}/phone1\n", ""), p
    assert phone.wait_closed() == b""
    wait_devices(srv, user.name, ["dev/1"])

    p = srv.cli(*base, "--end", f"{user.name}/phone1")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr == f"nudge sessions: no session {user.name}/phone1\n", p

    # USER/DEVICE splits at the first '/': the device keeps the rest.
    p = srv.cli(*base, "--end", f"{user.name}/dev/1")
    assert (p.returncode, p.stdout) == (0, f"ended {user.name}/dev/1\n"), p
    assert deep.wait_closed() == b""
    # A user id holding '/' is named with --end-user and --end-device.
    p = srv.cli(*base, "--end-user", slashed.name, "--end-device", "x/y z")
    assert p.returncode == 0, p
    assert odd.wait_closed() == b""
    wait_devices(srv, slashed.name, [])
    ev = wait_event(srv, 1302, closed_for(slashed.name, "x/y z"), "for x/y z")
    assert ev["why"] == "ended by an admin", ev


def test_cli_sessions_errors(srv):
    user = srv.user("cli")
    p = srv.cli("sessions", "--url", srv.url, "--token", user.token)
    assert p.returncode == 1 and p.stdout == "", p
    assert re.fullmatch(r"nudge sessions: HTTP 403: .*admin.*\n", p.stderr), p.stderr

    usage = [
        ["--end", "no-slash"],
        ["--end", "/device"],
        ["--end", "user/"],
        ["--end", "u/d", "--end-user", "u", "--end-device", "d"],
        ["--end-user", "u"],
        ["--end-device", "d"],
        ["--user", "u", "--end", "u/d"],
        ["--bogus"],
        ["stray"],
    ]
    for args in usage:
        p = srv.cli("sessions", "--url", srv.url, "--token", "x", *args)
        assert p.returncode == 2 and p.stdout == "", (args, p)
        assert p.stderr.startswith("nudge sessions: ") and p.stderr.count("\n") == 1, (args, p.stderr)
        assert p.stderr.endswith("; see 'nudge sessions --help'\n"), (args, p.stderr)

    p = srv.cli("sessions", "--url", srv.url)
    assert p.returncode == 2 and "no credential" in p.stderr, p
    # Nothing listens on port 1 (it is privileged and unused).
    p = srv.cli("sessions", "--url", "http://127.0.0.1:1", "--token", "x")
    assert p.returncode == 1 and p.stderr.startswith("nudge sessions: cannot connect"), p

    for args in (["sessions", "--help"], ["help", "sessions"]):
        p = srv.cli(*args)
        assert p.returncode == 0 and p.stdout.startswith("Usage: nudge sessions"), p
        assert "--end USER/DEVICE" in p.stdout and "first '/'" in p.stdout, p.stdout
    p = srv.cli("--help")
    assert re.search(r"^  sessions ", p.stdout, re.M), p.stdout


# ---------------------------------------------------------------------------
# Global limits

def test_max_connections_pauses_accepting_until_one_ends(make_nudged):
    n = make_nudged({"server": {"max_connections": 5}})
    five = []
    for _ in range(5):
        c = n.connect()
        harness.LIVE.append(c)
        assert c.request("GET", "/healthz").status == 200
        five.append(c)
    n.wait_log(r"event=1104 name=listen_paused reason=max_connections connections=5 limit=5")

    # Over the limit a client still connects (the kernel's backlog takes it)
    # but is not served.
    waiting = []
    for _ in range(2):
        c = n.connect()
        harness.LIVE.append(c)
        c.send_request("GET", "/healthz")
        waiting.append(c)
    # A served client would have its answer in milliseconds; give it a second.
    time.sleep(1.0)
    for c in waiting:
        assert c.poll_bytes(0.05) == b"" and not c.eof, f"served over max_connections: {c.buf!r}"
    # One pause, however many clients wait.
    assert len(log_events(n, 1104)) == 1, n.log_tail()
    assert log_events(n, 1105) == []
    # The five are still served.
    for c in five:
        assert c.request("GET", "/healthz").status == 200

    five.pop(0).close()
    r = waiting[0].read_response()
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    n.wait_log(r"event=1105 name=listen_resumed")
    assert waiting[1].poll_bytes(0.5) == b"", "served while five connections are open"
    five.pop(0).close()
    assert waiting[1].read_response().status == 200
    for c in five:
        assert c.request("GET", "/healthz").status == 200

    # Pauses and resumes alternate: each transition is logged once.
    kinds = re.findall(r" event=(1104|1105) ", n.log_text())
    assert kinds[0] == "1104" and all(a != b for a, b in zip(kinds, kinds[1:])), kinds


def connect_from(srv, source_ip):
    c = harness.Conn(None)
    c.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT,
                                      source_address=(source_ip, 0))
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    harness.LIVE.append(c)
    return c


def test_max_per_ip_refuses_the_fourth_connection_from_one_address(make_nudged):
    n = make_nudged({"server": {"max_per_ip": 3}})
    three = []
    for _ in range(3):
        c = connect_from(n, "127.0.0.1")
        assert c.request("GET", "/healthz").status == 200
        three.append(c)

    fourth = connect_from(n, "127.0.0.1")
    r = fourth.read_response()  # answered at once, before any request
    assert r.status == 429 and r.json() == {"status": "too-many-connections", "limit": 3}, r
    assert r.header("Retry-After") is not None, r
    fourth.wait_closed()
    fourth.close()  # until the client closes too, nudged lingers and still counts it
    ev = wait_event(n, 1106, lambda e: True, "conn_refused")
    assert ev["limit"] == "3" and ev["peer"].startswith("127.0.0.1:"), ev

    # Another address is not affected.
    other = connect_from(n, "127.0.0.2")
    assert other.request("GET", "/healthz").status == 200
    for c in three:
        assert c.request("GET", "/healthz").status == 200

    # Once one of the three closes, 127.0.0.1 is served again (nudged sees
    # the close asynchronously: retry while it still counts it).
    three.pop().close()
    deadline = time.monotonic() + WAIT
    while True:
        c = connect_from(n, "127.0.0.1")
        c.send_request("GET", "/healthz")
        r = c.read_response()
        c.close()
        if r.status == 200:
            break
        assert r.status == 429 and time.monotonic() < deadline, r
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Dead clients, in a network namespace

@pytest.fixture
def ns_nudged(request, tmp_path):
    """make(settings) starts a nudged inside a fresh network namespace;
    returns (namespace, make). Teardown stops the servers, then deletes the
    namespace, however the test ended."""
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    ns = netns.NetNS()
    made = []

    def make(settings):
        n = netns.NsNudged(ns, tmp_path / f"nudged{len(made)}", settings)
        made.append(n)
        n.start()
        return n

    def teardown():
        problems = []
        # Clients close first, so that nudged's stop does not linger on them.
        while harness.LIVE:
            harness.LIVE.pop().close()
        try:
            for n in made:
                problems += finish(n)
        finally:
            ns.delete()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    return ns, make


def vanish(ns, conn):
    """The client of 'conn' vanishes: everything it sends is dropped from now
    on (its socket stays open, so it sends no FIN either). On loopback both
    directions pass the input hook; matching the client's port as source
    drops only client -> server, so the server's probes still go out."""
    port = client_port(conn)
    ns.nft(f"add table inet vanish\n"
           f"add chain inet vanish input {{ type filter hook input priority 0; policy accept; }}\n"
           f"add rule inet vanish input tcp sport {port} drop\n")


def test_vanished_client_is_closed_by_keepalive_and_frees_its_slot(ns_nudged):
    ns, make = ns_nudged
    idle, interval, count = 1, 1, 2
    n = make({"sessions": {"per_user_limit": 1},
              "network": {"keepalive_idle": idle, "keepalive_interval": interval,
                          "keepalive_count": count}})
    user = n.user("gone")
    c = hold(n, user.token, "phone")
    wait_devices(n, user.name, ["phone"])

    vanish(ns, c)
    # The kernel gives up after idle + interval * count (3 s) without an
    # answer; the bound adds the harness's generous margin.
    wait_devices(n, user.name, [], timeout=idle + interval * count + WAIT)
    ev = wait_event(n, 1302, closed_for(user.name, "phone"), "for the vanished phone")
    assert ev["why"] == "connection timed out", ev

    # Its slot (the only one) is free: another device is held, not refused.
    other = hold(n, user.token, "tablet")
    wait_devices(n, user.name, ["tablet"])
    assert other.poll_bytes(0.05) == b""


def test_at_the_cap_a_dead_session_is_reaped_for_a_new_device(ns_nudged):
    ns, make = ns_nudged
    # Keepalive alone would take idle + 10 * 3 s: the reaper must act long before.
    n = make({"sessions": {"per_user_limit": 2},
              "network": {"keepalive_idle": 1, "keepalive_interval": 10, "keepalive_count": 3}})
    user = n.user("reap")
    live = hold(n, user.token, "live")
    dead = hold(n, user.token, "dead")
    wait_devices(n, user.name, ["dead", "live"])
    vanish(ns, dead)

    # The new device's ping runs the reaper; until the kernel shows the dead
    # session's probes unanswered (about keepalive_idle), it is refused.
    deadline = time.monotonic() + WAIT
    refusals = 0
    while True:
        c = hold(n, user.token, "new")
        accepted = False
        answer_by = time.monotonic() + 2 * SLOW
        while time.monotonic() < answer_by:
            if c.poll_bytes(0.05) and b"\r\n\r\n" in c.buf:
                r = c.read_response()
                assert r.status == 429 and r.json()["status"] == "session-limit", r
                refusals += 1
                break
            if "new" in devices_of(n, user.name):
                accepted = True
                break
        if accepted:
            break
        c.close()
        assert time.monotonic() < deadline, f"new device refused {refusals} times\n{n.log_tail()}"
        time.sleep(0.2)

    ev = wait_event(n, 1302, closed_for(user.name, "dead"), "for the dead session")
    assert ev["why"].startswith("reaped: ") or ev["why"] == "connection timed out", ev
    assert not [e for e in log_events(n, 1302) if e.get("device") == "live"], n.log_tail()
    assert live.poll_bytes(0.05) == b"" and not live.eof


# ---------------------------------------------------------------------------
# Restart

def test_device_records_survive_a_restart(make_nudged):
    n = make_nudged({"store": {"backend": "sqlite"}}, start=False)
    try:
        n.start()
    except AssertionError as e:
        if "unknown store backend" in str(e):
            pytest.skip("sqlite backend not built")
        raise
    user = n.user("restart")
    inbox = n.publish(user.name, "INBOX")
    r = user.ping("phone", {"INBOX": "0", "Sent": "0"}, 2)
    n.check_ping(r, "changed", {"INBOX": inbox})

    assert n.stop() == 0
    n.start()
    # The empty body reuses the saved folders at their told states, and the heartbeat.
    sent = n.publish(user.name, "Sent")
    p = user.empty_ping_async("phone")
    body = n.check_ping(p.result(), "changed", {"Sent": sent})
    assert body["heartbeat_hint"] == 2, body
    p = user.empty_ping_async("phone")
    body = n.check_ping(p.result(timeout=WAIT + 2), "expired")
    assert body["heartbeat_hint"] == 2, body


def test_a_refused_device_is_not_remembered(make_nudged):
    """A 429 leaves no device record behind: a client that invents a new device
    id on every retry at the cap must not grow the server's memory."""
    n = make_nudged({"sessions": {"per_user_limit": 1}})
    user = n.user("full")
    held = user.ping_async("d0", {"INBOX": "0"}, HB)
    wait_devices(n, user.name, ["d0"])
    r = user.ping("d1", {"INBOX": "0"}, HB)
    assert r.status == 429, r
    # Had d1 been remembered, its empty-body ping would reuse its parameters and
    # (at the cap) be refused 429 again; forgotten, it has nothing to reuse.
    r = user.empty_ping_async("d1").result()
    assert r.status == 400 and r.json() == {"status": "missing-parameters"}, r
    assert not held.done()
