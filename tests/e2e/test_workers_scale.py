"""
test_workers_scale.py — [server] workers = 4 holding more pings than one
process can: N held pings for N distinct users (50,000; 25,000 when
CI=true; 5,000 under the sanitizer pass; NUDGE_SCALE_PINGS overrides), one
published event per user, every ping answered exactly once.

One process may hold at most 20,000 open files here (a hard limit), so one
nudged process stops near 20k connections, and so does each client
process. The pings are therefore held by several client processes (about
12,000 sockets at most each), each socket bound to a source address among
127.0.0.2..127.0.0.9: the listeners steer connections by source address
(src_ip % workers), so the connections arrive at every worker, and the
ephemeral ports (about 28k per source/destination pair) are not the limit.
Each worker hands a ping over to the worker owning its user, so the held
pings end up spread by the user hash, whatever worker accepted them.

What is checked: /metrics' per-worker gauges (nudge_worker_pings_held sum
to N, every worker holds some, the total is more than one process could
hold), /v1/admin/workers agrees, then one event per user is published and
each client process counts its answers: every ping must get exactly one
200 "changed" with INBOX at "1"; lost, wrong, early-closed and duplicate
answers are reported by user. Finally nudged stops with exit code 0 and its
log has no worker death, failed handoff or failed mesh call.

No timing is asserted: every wait is bounded but generous, and the phase
times are printed (pytest -s) so a slow run can be seen, not failed.
"""
import errno
import math
import multiprocessing
import os
import re
import selectors
import socket
import time

import harness
from harness import SAN, SLOW, sign_token

WORKERS = 4
# Source addresses of the client sockets: 127.0.0.2 .. 127.0.0.(1 + SOURCES).
# Eight consecutive addresses cover every residue mod 4 twice.
SOURCES = 8
# Client sockets per client process: well under the 20,000-descriptor limit.
PER_PROCESS = 12000
# Events per POST /v1/events (about 45 bytes each, so ~230 KB per body).
PUBLISH_BATCH = 5000
# Connects in progress at once in one client process; more would only fill
# the listen queues (4096 per worker) and cost SYN retransmits.
CONNECTS_IN_FLIGHT = 256
# After its last answer a client process keeps reading this long, so that a
# second answer on any connection is seen (and reported as a duplicate).
DUPLICATE_GRACE_S = 0.5
# Every phase (connecting, holding, answering) has this long at most.
PHASE_LIMIT_S = 180 * SLOW
HEARTBEAT = 900
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def scale():
    if os.environ.get("NUDGE_SCALE_PINGS"):
        return int(os.environ["NUDGE_SCALE_PINGS"])
    if SAN:
        return 5000
    if os.environ.get("CI") == "true":
        return 25000
    return 50000


SETTINGS = {
    "server": {"workers": WORKERS,  # not NUDGE_TEST_WORKERS: this test is about 4
               "max_connections": 200000, "max_body_bytes": 8388608,
               "header_timeout": 60, "keepalive_timeout": 600},
    "heartbeat": {"min": 1, "max": HEARTBEAT},
}


# ---------------------------------------------------------------------------
# A client process: holds pings for users prefix<first> .. prefix<first+count-1>


def _response_end(buf):
    """The length of the first complete response in buf, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", buf[:end], re.I)
    total = end + 4 + (int(m.group(1)) if m else 0)
    return total if len(buf) >= total else None


def _ping_request(secret, user):
    body = b'{"device":"d1","folders":{"INBOX":"0"},"heartbeat":%d}' % HEARTBEAT
    return (b"POST /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + sign_token(secret, "u", user).encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def client(ctl, *args):
    """A client process's body: _client, its failure reported on 'ctl'."""
    try:
        _client(ctl, *args)
    except BaseException:
        import traceback
        ctl.send(("error", traceback.format_exc()))


def _client(ctl, port, secret, prefix, first, count, sources, deadline):
    """Runs in a child process. Opens 'count' connections (source addresses
    taken in turn from 'sources'), sends one ping on each, reports ("sent",
    stats) on the pipe 'ctl', then reads answers until every connection
    has one (plus DUPLICATE_GRACE_S), the parent sends "stop" or the
    monotonic 'deadline' passes, and reports ("done", results)."""
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, None)
    socks = [None] * count
    bufs = [b""] * count
    answers = [0] * count        # complete responses read per connection
    closed = [False] * count     # the server closed the connection
    bad = []                     # (user, first bytes of a wrong answer)
    connect_errors = []          # (user, error)
    good = 0
    sent = 0
    in_flight = 0
    next_i = 0
    last_answer = None
    stop = False
    unsettled = count  # connections with neither an answer nor a close yet

    def finish_conn(i):
        try:
            sel.unregister(socks[i])
        except (KeyError, ValueError):
            pass
        socks[i].close()

    def on_event(i, mask):
        nonlocal good, sent, in_flight, last_answer, unsettled
        s = socks[i]
        if mask & selectors.EVENT_WRITE:
            in_flight -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                connect_errors.append((f"{prefix}{first + i}", os.strerror(err)))
                finish_conn(i)
                closed[i] = True
                unsettled -= 1
                return
            s.send(_ping_request(secret, f"{prefix}{first + i}"))  # ~300 bytes: fits at once
            sent += 1
            sel.modify(s, selectors.EVENT_READ, i)
            return
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            if not answers[i]:
                unsettled -= 1
            closed[i] = True
            finish_conn(i)
            return
        bufs[i] += chunk
        while True:
            n = _response_end(bufs[i])
            if n is None:
                break
            resp, bufs[i] = bufs[i][:n], bufs[i][n:]
            answers[i] += 1
            last_answer = time.monotonic()
            if answers[i] > 1:
                continue  # counted as a duplicate below
            unsettled -= 1
            if (resp.startswith(b"HTTP/1.1 200 ") and b'"status":"changed"' in resp
                    and b'"folders":{"INBOX":"1"}' in resp):
                good += 1
            else:
                bad.append((f"{prefix}{first + i}", resp[:400].decode("latin-1")))

    def poll(timeout):
        nonlocal stop
        for key, mask in sel.select(timeout):
            if key.data is None:
                msg = ctl.recv()
                if msg == "stop":
                    stop = True
            else:
                on_event(key.data, mask)

    # Phase 1: connect and send, a bounded number of connects in flight.
    while next_i < count and not stop and time.monotonic() < deadline:
        while next_i < count and in_flight < CONNECTS_IN_FLIGHT:
            i = next_i
            next_i += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.bind((sources[i % len(sources)], 0))
            s.setblocking(False)
            socks[i] = s
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                connect_errors.append((f"{prefix}{first + i}", os.strerror(rc)))
                s.close()
                closed[i] = True
                unsettled -= 1
                continue
            in_flight += 1
            sel.register(s, selectors.EVENT_WRITE, i)
        poll(0.05 if in_flight >= CONNECTS_IN_FLIGHT else 0)
    while in_flight and not stop and time.monotonic() < deadline:
        poll(0.05)
    ctl.send(("sent", {"sent": sent, "connect_errors": connect_errors[:20],
                       "connect_error_count": len(connect_errors), "answered_early": sum(answers)}))

    # Phase 2: read until every connection has its answer.
    while not stop and time.monotonic() < deadline:
        if unsettled == 0 and (last_answer is None or time.monotonic() - last_answer > DUPLICATE_GRACE_S):
            break
        poll(0.1)

    users = lambda pred: [f"{prefix}{first + i}" for i in range(count) if pred(i)]  # noqa: E731
    lost = users(lambda i: answers[i] == 0 and not closed[i] and socks[i] is not None)
    closed_unanswered = users(lambda i: answers[i] == 0 and closed[i])
    duplicates = users(lambda i: answers[i] > 1)
    ctl.send(("done", {"count": count, "sent": sent, "good": good, "bad": bad[:10], "bad_count": len(bad),
                       "lost": lost[:20], "lost_count": len(lost),
                       "closed_unanswered": closed_unanswered[:20],
                       "closed_unanswered_count": len(closed_unanswered),
                       "duplicates": duplicates[:20], "duplicate_count": len(duplicates),
                       "connect_error_count": len(connect_errors)}))
    for s in socks:
        if s is not None and s.fileno() >= 0:
            s.close()


# ---------------------------------------------------------------------------


def per_worker(metrics, name):
    return {int(re.search(r'worker="(\d+)"', k).group(1)): v
            for k, v in metrics.items() if k.startswith(name + "{")}


def receive(pipe, want, deadline):
    """The next message on 'pipe' whose tag is 'want', or None at the
    deadline or when the client process is gone; fails on its error."""
    while time.monotonic() < deadline:
        try:
            if not pipe.poll(0.2):
                continue
            tag, body = pipe.recv()
        except EOFError:
            return None
        assert tag != "error", f"a client process failed:\n{body}"
        if tag == want:
            return body
    return None


def test_four_workers_hold_and_answer_n_pings(make_nudged):
    srv = make_nudged(SETTINGS)
    assert "event=1700 name=workers_starting" in srv.log_text(), \
        f"nudged did not start workers (a binary without [server] workers?)\n{srv.log_tail()}"
    n = scale()
    assert n <= SOURCES * 25000, f"{n} pings need more than {SOURCES} source addresses"
    times = {}
    t_start = time.monotonic()
    secret = srv.secret()
    prefix = harness.unique("scale") + "u"
    procs_n = max(2, math.ceil(n / PER_PROCESS))
    sources = [f"127.0.0.{2 + k}" for k in range(SOURCES)]
    ctx = multiprocessing.get_context("fork")
    clients = []
    deadline = time.monotonic() + 3 * PHASE_LIMIT_S  # the client processes' own bound
    for k in range(procs_n):
        first = k * n // procs_n
        count = (k + 1) * n // procs_n - first
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=client, args=(child_end, srv.port, secret, prefix, first, count,
                                             sources, deadline), daemon=True)
        p.start()
        child_end.close()
        clients.append((p, parent_end, first, count))
    try:
        _run(srv, n, prefix, clients, times, t_start)
    finally:
        for p, pipe, _, _ in clients:
            try:
                pipe.send("stop")
            except (BrokenPipeError, OSError):
                pass
        for p, pipe, _, _ in clients:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
            pipe.close()

    # Every connection is closed by now: nothing is held, and nudged stops cleanly.
    deadline = time.monotonic() + harness.WAIT
    while srv.held() != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert srv.held() == 0, f"pings still held after every client closed\n{srv.log_tail()}"
    t = time.monotonic()
    code = srv.stop(timeout=60 * SLOW)
    times["stop"] = time.monotonic() - t
    assert code == 0, f"nudged exited {code}\n{srv.log_tail()}"
    trouble = [line for line in srv.log_text().splitlines()
               if re.search(r"level=error |level=warn event=(1702|1705) ", line)]
    assert not trouble, "nudged logged trouble:\n" + "\n".join(trouble[:40])
    times["total"] = time.monotonic() - t_start
    print(f"\n{n} pings, {WORKERS} workers, {len(clients)} client processes: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))


def _run(srv, n, prefix, clients, times, t_start):
    deadline = time.monotonic() + PHASE_LIMIT_S
    sent = {}
    for k, (p, pipe, _, _) in enumerate(clients):
        r = receive(pipe, "sent", deadline)
        assert r is not None, f"client process {k} did not send its pings within {PHASE_LIMIT_S} s " \
                              f"(alive: {p.is_alive()})\n{srv.log_tail()}"
        sent[k] = r
    times["connect+send"] = time.monotonic() - t_start
    errors = {k: r for k, r in sent.items() if r["connect_error_count"] or r["answered_early"]}
    assert not errors, f"clients could not connect, or were answered early: {errors}\n{srv.log_tail()}"
    assert sum(r["sent"] for r in sent.values()) == n, sent

    # Held: the total gauge reads n (polled, never slept on), then the per-worker ones sum to it.
    deadline = time.monotonic() + PHASE_LIMIT_S
    while True:
        for k, (p, pipe, _, _) in enumerate(clients):
            if pipe.poll(0):  # a client process done before the publish: its connections were closed
                try:
                    msg = pipe.recv()
                except EOFError:
                    msg = f"(exited {p.exitcode})"
                raise AssertionError(f"client process {k} finished before the publish: {msg}\n"
                                     f"{srv.log_tail()}")
        m = srv.metrics()
        if m.get("nudge_pings_held") == n:
            break
        assert time.monotonic() < deadline, \
            f"nudge_pings_held {m.get('nudge_pings_held')} (per worker " \
            f"{per_worker(m, 'nudge_worker_pings_held')}), expected {n}\n{srv.log_tail()}"
        time.sleep(0.5)
    times["all held"] = time.monotonic() - t_start
    deadline = time.monotonic() + harness.WAIT
    while True:
        held = per_worker(m, "nudge_worker_pings_held")
        if sum(held.values()) == n or time.monotonic() > deadline:
            break
        time.sleep(0.5)
        m = srv.metrics()
    assert sorted(held) == list(range(WORKERS)), f"nudge_worker_pings_held for workers {sorted(held)}: {held}"
    assert sum(held.values()) == n, f"nudge_worker_pings_held {held} sum to {sum(held.values())}, not {n}"
    assert m.get("nudge_pings_held") == n, f"nudge_pings_held {m.get('nudge_pings_held')}, not {n}"
    assert all(v > 0 for v in held.values()), f"a worker holds no ping: {held}"
    if n > 19000:
        assert sum(held.values()) > 19000, held  # more than one process could hold
    if hasattr(harness, "worker_of"):  # each ping is held by its user's owner
        want = {w: 0 for w in range(WORKERS)}
        for i in range(n):
            want[harness.worker_of(f"{prefix}{i}", WORKERS)] += 1
        assert held == want, f"pings held per worker {held}, users owned per worker {want}"
    up = per_worker(m, "nudge_worker_up")
    assert up == {w: 1 for w in range(WORKERS)}, up
    conns = per_worker(m, "nudge_worker_connections")
    assert sum(conns.values()) >= n, f"connections per worker {conns} < {n} held pings"
    users = per_worker(m, "nudge_worker_users")
    assert sum(users.values()) >= n, f"users per worker {users} < {n} pinging users"
    r = srv.request("GET", "/v1/admin/workers", token=srv.admin_token())
    assert r.status == 200, r
    info = r.json()
    assert [w["worker"] for w in info["workers"]] == list(range(WORKERS)), info
    assert all(w["up"] and w["pid"] > 0 for w in info["workers"]), info
    assert {w["worker"]: w["pings_held"] for w in info["workers"]} == held, (info, held)
    print(f"\nheld per worker: {held}; connections per worker: {conns}")

    # One event per user; each publish is answered once its states are durable.
    pub = srv.publisher_token()
    c = srv.connect(timeout=60 * SLOW)
    t = time.monotonic()
    try:
        for b in range(0, n, PUBLISH_BATCH):
            events = [{"user": f"{prefix}{i}", "folder": "INBOX"} for i in range(b, min(n, b + PUBLISH_BATCH))]
            resp = c.request("POST", "/v1/events", events, token=pub, timeout=60 * SLOW)
            assert resp.status == 200, f"publish of users {b}.. answered {resp!r}\n{srv.log_tail()}"
            states = resp.json()["states"]
            assert len(states) == len(events) and all(s["state"] == "1" for s in states), states[:5]
    finally:
        c.close()
    times["publish"] = time.monotonic() - t

    # Each client process counts its answers: exactly one 200 "changed" per ping.
    deadline = time.monotonic() + PHASE_LIMIT_S
    done = {}
    for k, (p, pipe, first, count) in enumerate(clients):
        r = receive(pipe, "done", deadline)
        if r is None:
            try:
                pipe.send("stop")
            except OSError:
                pass
            r = receive(pipe, "done", time.monotonic() + 30)
        assert r is not None, f"client process {k} (users {first}..) never reported (alive: {p.is_alive()})"
        done[k] = r
    times["answered"] = time.monotonic() - t_start
    good = sum(r["good"] for r in done.values())
    problems = {k: {f: r[f] for f in ("bad_count", "bad", "lost_count", "lost", "closed_unanswered_count",
                                      "closed_unanswered", "duplicate_count", "duplicates")}
                for k, r in done.items()
                if r["bad_count"] or r["lost_count"] or r["closed_unanswered_count"] or r["duplicate_count"]}
    assert good == n and not problems, \
        f"{good} of {n} pings answered 200 changed once; per client process: {problems}\n{srv.log_tail()}"
