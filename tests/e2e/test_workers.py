"""
test_workers.py — [server] workers: users partitioned among worker
processes, connections handed to the owner, a killed worker restarted,
shard files re-laid out when the count changes, and the limits kept exact
across workers.

These tests set workers themselves (the rest of the suite runs with the
NUDGE_TEST_WORKERS the Makefile chooses).
"""
import os
import signal
import time

import pytest

import harness
from harness import WAIT, Conn, ConnectionClosed, ping_body


def workers_info(srv):
    r = srv.request("GET", "/v1/admin/workers", token=srv.admin_token())
    assert r.status == 200, r
    return r.json()


def per_worker(srv, name):
    m = srv.metrics()
    return {int(k.split('worker="')[1].split('"')[0]): v
            for k, v in m.items() if k.startswith(name + "{")}


def wait_for(pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def users_spread(srv, prefix, n, workers):
    """n users dealt over the workers in turn (user i owned by worker i % workers).

    Users drawn at random can all land on one worker (1 in 243 for six of
    three), and the tests below are about users that live apart.
    """
    free = {w: [] for w in range(workers)}
    users = []
    while len(users) < n:
        want = len(users) % workers
        if free[want]:
            users.append(free[want].pop())
            continue
        u = srv.user(prefix)
        free[harness.worker_of(u.name, workers)].append(u)
    return users


def hold(srv, users, state="0", heartbeat=600):
    return {u.name: u.ping_async(device="d1", folders={"INBOX": state}, heartbeat=heartbeat)
            for u in users}


def test_users_spread_and_every_ping_answered_once(make_nudged):
    srv = make_nudged({"server": {"workers": 3}})
    users = [srv.user("spread") for _ in range(300)]
    pend = hold(srv, users)
    wait_for(lambda: srv.held() == 300, "300 pings held")
    held = per_worker(srv, "nudge_worker_pings_held")
    assert sorted(held) == [0, 1, 2], held
    assert all(v > 0 for v in held.values()), f"a worker owns no user: {held}"
    assert sum(held.values()) == 300
    users_by_worker = per_worker(srv, "nudge_worker_users")
    assert sum(users_by_worker.values()) == 300, users_by_worker

    # One batch naming every user: split by owner, answered with every state in order.
    r = srv.publish_raw([{"user": u.name, "folder": "INBOX"} for u in users])
    assert r.status == 200, r
    states = r.json()["states"]
    assert [s["user"] for s in states] == [u.name for u in users]
    assert all(s["state"] == "1" for s in states), states[:5]
    for u in users:
        resp = pend[u.name].result()
        assert resp.status == 200 and resp.json()["status"] == "changed", resp
        assert resp.json()["folders"] == {"INBOX": "1"}
    # Exactly once: each ping had one answer and the connection holds nothing more.
    for p in pend.values():
        assert p.conn.poll_bytes(0.01) == b""
    assert srv.held() == 0
    assert int(srv.metric("nudge_events_published_total")) == 300

    # Sessions are listed from every worker.
    again = hold(srv, users[:30], state="1")
    wait_for(lambda: srv.held() == 30, "30 pings held")
    r = srv.request("GET", "/v1/admin/sessions", token=srv.admin_token())
    assert r.status == 200 and r.json()["count"] == 30, r
    assert sorted(s["user"] for s in r.json()["sessions"]) == sorted(u.name for u in users[:30])
    # One user's sessions and an admin's end reach the owner wherever they arrive.
    u = users[7]
    r = srv.request("GET", f"/v1/admin/sessions?user={u.name}", token=srv.admin_token())
    assert r.status == 200 and r.json()["count"] == 1, r
    r = srv.request("DELETE", f"/v1/admin/sessions/{u.name}/d1", token=srv.admin_token())
    assert r.status == 200, r
    with pytest.raises(AssertionError):
        again[u.name].result()  # closed by the admin, never answered
    wait_for(lambda: srv.held() == 29, "29 pings held")


def test_killed_worker_is_restarted_and_its_devices_catch_up(make_nudged):
    srv = make_nudged({"server": {"workers": 3}})
    users = [srv.user("kill") for _ in range(60)]
    pend = hold(srv, users)
    wait_for(lambda: srv.held() == 60, "60 pings held")
    info = workers_info(srv)
    victim = info["workers"][1]
    assert victim["up"] and victim["pings_held"] > 0, info
    os.kill(victim["pid"], signal.SIGKILL)

    # The victim's devices lose their connection; the others' pings stay held.
    lost = set()
    deadline = time.monotonic() + WAIT
    while len(lost) < victim["pings_held"] and time.monotonic() < deadline:
        for name, p in pend.items():
            if name not in lost and p.done():
                lost.add(name)
        time.sleep(0.05)
    assert len(lost) == victim["pings_held"], (len(lost), victim)
    for name in lost:
        with pytest.raises(AssertionError, match="ConnectionClosed|ConnectionReset|closed"):
            pend[name].result()

    # Changes made meanwhile: a publish to a restarting worker's user may be
    # refused (503, retried) but never lost.
    def publish_all():
        r = srv.publish_raw([{"user": u.name, "folder": "INBOX"} for u in users])
        return r if r.status == 200 else None
    r = wait_for(publish_all, "a publish to every user answered 200")
    assert len(r.json()["states"]) == 60
    srv.wait_log(r"event=1702 name=worker_exited worker=1 .*signal=9")
    srv.wait_log(r"event=1701 name=worker_started worker=1 pid=\d+ restarts=1")
    wait_for(lambda: workers_info(srv)["workers"][1]["up"], "worker 1 back up")

    # The other workers' pings were answered by that publish, once, as usual.
    for name, p in pend.items():
        if name in lost:
            continue
        resp = p.result()
        assert resp.status == 200 and resp.json()["status"] == "changed", resp
    # The victim's devices reconnect with the state they had and learn the change at once.
    for u in users:
        if u.name not in lost:
            continue
        resp = u.ping(device="d1", folders={"INBOX": "0"}, heartbeat=600)
        assert resp.status == 200 and resp.json()["status"] == "changed", resp
        want = [s["state"] for s in r.json()["states"] if s["user"] == u.name][0]
        assert resp.json()["folders"] == {"INBOX": want}


def test_changing_the_number_of_workers_keeps_every_state(make_nudged, tmp_path):
    settings = {"server": {"workers": 1, "data_dir": str(tmp_path / "data")}}
    srv = make_nudged(settings)
    users = [srv.user("shard") for _ in range(40)]
    want = {}
    for i, u in enumerate(users):
        for _ in range(i % 4 + 1):
            want[u.name] = srv.publish(u.name, "INBOX")
    # User records (an ActiveSync folder map) move with their user.
    mapped = users[:8]
    for u in mapped:
        r = srv.request("PUT", f"/v1/activesync/folders/{u.name}", {"folders": {"1": "INBOX"}},
                        token=srv.publisher_token())
        assert r.status == 200, r
    assert srv.stop() == 0
    data = tmp_path / "data"

    for count in (3, 2, 1):
        settings["server"]["workers"] = count
        srv = make_nudged(settings)
        for u in users:
            r = srv.get_state(srv.token(u.name), folders=["INBOX"])
            assert r.status == 200, r
            assert r.json()["folders"]["INBOX"] == want[u.name], (count, u.name, r.json())
        for u in mapped:
            r = srv.request("GET", f"/v1/activesync/folders/{u.name}", token=srv.publisher_token())
            assert r.status == 200 and r.json() == {"folders": {"1": "INBOX"}}, (count, u.name, r)
        shards = sorted(p.name for p in data.glob("nudge.db.shard*") if not p.name.endswith(("-wal", "-shm")))
        assert shards == [f"nudge.db.shard{i}" for i in range(1, count)], (count, shards)
        assert (data / "nudge.db.workers").read_text().strip() == str(count)
        # Each state moves on from where it was, whichever worker owns the user now.
        u = users[count]
        before = int(want[u.name])
        want[u.name] = srv.publish(u.name, "INBOX")
        assert int(want[u.name]) == before + 1
        assert srv.stop() == 0
        assert "event=1504 name=store_resharded" in srv.log_text()


def conn_from(srv, source):
    """A Conn from another loopback address (its own max_per_ip count)."""
    import socket
    c = Conn(None)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.settimeout(WAIT)
    c.sock.bind((source, 0))
    c.sock.connect(("127.0.0.1", srv.port))
    return c


def held_seen_from(srv, source):
    c = conn_from(srv, source)
    try:
        r = c.request("GET", "/metrics", token=srv.admin_token())
        assert r.status == 200, r
        return int(harness.parse_metrics(r.body.decode())["nudge_pings_held"])
    finally:
        c.close()


def test_max_per_ip_is_exact_across_workers(make_nudged):
    srv = make_nudged({"server": {"workers": 3, "max_per_ip": 6}})
    users = users_spread(srv, "perip", 6, 3)
    # Six users, two per worker: all six connections count for 127.0.0.1.
    pend = hold(srv, users)
    wait_for(lambda: held_seen_from(srv, "127.0.0.2") == 6, "6 pings held")
    c = Conn(srv.port)
    r = c.request("POST", "/v1/ping", ping_body(device="d1", folders={"INBOX": "0"}),
                  token=srv.token(srv.user("perip").name))
    assert r.status == 429 and r.json()["status"] == "too-many-connections", r
    c.close()
    # Another address has its own count.
    assert held_seen_from(srv, "127.0.0.3") == 6
    # One ends: a new client fits again, wherever its user lives.
    pend[users[0].name].close()
    wait_for(lambda: held_seen_from(srv, "127.0.0.2") == 5, "5 pings held")

    def one_more():
        c = Conn(srv.port)
        try:
            r = c.request("GET", "/v1/state", token=srv.token(users[0].name))
            return r.status == 200
        finally:
            c.close()
    wait_for(one_more, "a client accepted again after one left")


def test_max_connections_is_shared_by_the_workers(make_nudged):
    srv = make_nudged({"server": {"workers": 3, "max_connections": 6}})
    users = users_spread(srv, "maxc", 6, 3)
    pend = hold(srv, users[:5])
    wait_for(lambda: srv.held() == 5, "5 pings held")  # the sixth connection asks
    pend.update(hold(srv, users[5:]))
    time.sleep(1.0)  # the sixth is accepted and handed to its owner
    # A seventh client waits in the backlog: not accepted while six are open.
    late = harness.Pending(srv.port, "GET", "/v1/state", token=srv.token(users[0].name))
    time.sleep(1.5)
    assert not late.done(), "a seventh connection was served over max_connections = 6"
    pend[users[1].name].close()
    resp = late.result()
    assert resp.status == 200, resp
    srv.wait_log(r"event=1104 name=listen_paused reason=max_connections")
    late.close()
    wait_for(lambda: srv.held() == 5, "5 pings held")


def test_workers_default_to_one_per_cpu(make_nudged):
    srv = make_nudged({"server": {"workers": 0}})
    info = workers_info(srv)
    assert len(info["workers"]) == len(os.sched_getaffinity(0)), info
    assert all(w["up"] for w in info["workers"])


def test_bumps_of_one_loop_turn_travel_in_one_mesh_packet(make_nudged):
    # Publishes read in one loop turn send their bumps for another worker's
    # users together (worker/mesh.c, MESH_BATCH). Stopping the workers while
    # twelve publishers send makes the accepting worker find all twelve at
    # once when it continues; whichever worker that is, six of the users
    # belong to the other.
    srv = make_nudged({"server": {"workers": 2}})
    users = users_spread(srv, "batch", 12, 2)
    pend = hold(srv, users)
    wait_for(lambda: srv.held() == 12, "12 pings held")
    before = workers_info(srv)["workers"]
    token = srv.publisher_token()
    workers = srv.pids()[1:]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        conns = [Conn(srv.port) for _ in users]
        for c, u in zip(conns, users):
            c.send_request("POST", "/v1/events", {"user": u.name, "folder": "INBOX"}, token=token)
        time.sleep(0.3)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    for c in conns:
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["states"][0]["state"] == "1", r
        c.close()
    for u in users:
        r = pend[u.name].result()
        assert r.status == 200, r
        assert r.json()["folders"]["INBOX"] == "1", r
    after = workers_info(srv)["workers"]
    batches = sum(a["mesh_batches"] - b["mesh_batches"] for a, b in zip(after, before))
    batched = sum(a["mesh_batched_messages"] - b["mesh_batched_messages"]
                  for a, b in zip(after, before))
    assert batches >= 1, after
    assert batched >= 2 * batches, after


def test_a_request_goes_to_its_owner_before_its_token_is_checked(make_nudged):
    # The accepting worker reads the owner off the token's subject and hands
    # the request over unchecked (server/router.c, owned_elsewhere); the
    # owner checks the token. So a forged or expired user token is refused
    # exactly as with one process, wherever it arrives, and only user tokens
    # travel: a publisher token on /v1/ping and a malformed one are answered
    # where they arrive.
    srv = make_nudged({"server": {"workers": 2}})
    users = users_spread(srv, "route", 2, 2)

    def sent():
        return sum(w["handoffs_sent"] for w in workers_info(srv)["workers"])

    def refused(token, status, why):
        before = sent()
        r = srv.request("POST", "/v1/ping", ping_body("d1", {"INBOX": "0"}, 60), token=token)
        assert r.status == status, r
        assert why in r.json()["error"], r
        return sent() - before

    travelled = 0
    for u in users:
        good = srv.token(u.name)
        forged = good[:-2] + ("AA" if good[-2:] != "AA" else "AQ")
        travelled += refused(forged, 401, "bad signature")
        travelled += refused(srv.sign("u", u.name, expires=int(time.time()) - 10), 401,
                             "token expired")
        assert refused(srv.publisher_token(), 403, "needs a user token") == 0
        assert refused(good[:-1], 401, "malformed token") == 0
    # Connections from 127.0.0.1 all reach one worker: the other's user's
    # two refused tokens were handed over, the accepting worker's were not.
    assert travelled == 2, travelled
    # A good token is held by its owner, wherever it arrived.
    pend = hold(srv, users)
    wait_for(lambda: srv.held() == 2, "2 pings held")
    assert per_worker(srv, "nudge_worker_pings_held") == {0: 1, 1: 1}
    r = srv.publish_raw([{"user": u.name, "folder": "INBOX"} for u in users])
    assert r.status == 200, r
    for u in users:
        assert pend[u.name].result().json()["folders"] == {"INBOX": "1"}
