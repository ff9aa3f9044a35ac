#!/usr/bin/env python3
"""[server] workers: held pings per worker, memory per held ping, fan-out latency.

For workers = 1 and each --workers count (default: one per CPU), and for
each --count of held pings (default 10,000 and 50,000), a fresh nudged in
its own temporary directory (store: --store, sqlite by default):

1. Held pings. N connections each hold a ping for their own user and
   device (the worst case, as in held_memory.py: each also creates a user
   and a device record). They come from several client processes
   (--clients, else one per PER_PROCESS sockets) because one process may
   hold at most RLIMIT_NOFILE descriptors (20,000 here), and every socket is
   bound to a source address among 127.0.0.2 .. 127.0.0.(1 + SOURCES):
   nudged's listeners steer connections by source address (src_ip %
   workers), and one source/destination pair has only ~28k ephemeral
   ports. Each worker hands a ping to the worker owning its user, so
   "held per worker" follows the user hash (src/worker/owner.c), computed
   here beforehand: a configuration in which one process would have to
   hold more than its descriptor limit allows (RLIMIT_NOFILE less nudged's
   reserve of 64, less DESCRIPTOR_MARGIN) is not run and is reported as
   "n/a (descriptor limit)": workers = 1 cannot hold 50,000 (nor can 2
   workers, ~25,000 each).
2. Memory per held ping. VmRSS (/proc/PID/status) summed over nudged's
   processes (the supervisor and every worker; their pids from
   GET /v1/admin/workers) before the first ping and once all N are held,
   the difference divided by N. Forked workers share their libraries' and
   the supervisor's pages, and each one's RSS counts them again, but alike
   before and after, so the difference is the held pings' own memory.
3. Fan-out latency. One event for each of the first --fanout users
   (default N: every held ping), --batch events per POST /v1/events on
   --publishers keep-alive connections. A device's answer time is the
   kernel's receive timestamp of its answer (SO_TIMESTAMPNS on the TCP
   socket, CLOCK_REALTIME like time.time_ns()), so a client process that
   falls behind reading does not add its delay; the latency is that less
   the moment the first publish request was sent. Every answer must be
   200 "changed" with INBOX at "1", exactly one per published device, and
   the other held pings must stay held. nudged's CPU (utime+stime of all
   its processes) over the fan-out is reported next to the wall time.

Usage: bench/workers.py [--workers 2[,4...]] [--count 10000,50000] [--fanout U]
                        [--batch B] [--publishers P] [--spread-publishers] [--clients C]
                        [--store sqlite|memory]
                        [--nudged PATH]
Bounded in count and time (every phase at most PHASE_LIMIT_S), loopback only.
"""
import argparse
import errno
import json
import math
import multiprocessing
import os
import re
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import cpu_s, http, read_response, request, response_end, rss_kib, sign_token  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No phase may take longer than this; the whole script stays bounded.
PHASE_LIMIT_S = 120
# Source addresses 127.0.0.2 .. 127.0.0.(1 + SOURCES) for the client sockets.
SOURCES = 8
# Client sockets per client process, well under the descriptor limit.
PER_PROCESS = 12000
# Connects in progress at once in one client process.
CONNECTS_IN_FLIGHT = 256
# nudged keeps 64 descriptors back from its connection limit (src/conn/listen.c,
# FD_RESERVE); a configuration is run only if every process stays this far below that.
FD_RESERVE = 64
DESCRIPTOR_MARGIN = 500
# After its last expected answer a client keeps reading this long for duplicates.
DUPLICATE_GRACE_S = 0.5
HEARTBEAT = 3000
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def worker_owner(user, count):
    """The worker owning 'user' (src/worker/owner.c: FNV-1a 64, high bits folded in)."""
    if count <= 1:
        return 0
    h = 14695981039346656037
    for b in user.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 29)) % count


def user_name(i):
    return f"u{i}"


def metric(port, admin, name):
    status, text = http(port, "GET", "/metrics", admin)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def workers_info(port, admin):
    status, body = http(port, "GET", "/v1/admin/workers", admin)
    if status != 200:
        raise RuntimeError(f"/v1/admin/workers answered {status}")
    return json.loads(body)


class Server:
    """One nudged in its own temporary directory."""

    def __init__(self, args, workers):
        self.tmp = tempfile.mkdtemp(prefix="nudge-bench-workers-")
        self.conf = os.path.join(self.tmp, "nudged.conf")
        # log_level info: the port is read from the listening line; held pings
        # and their answers log nothing at info.
        with open(self.conf, "w") as f:
            f.write(f"[server]\nlisten = 127.0.0.1:0\ndata_dir = {self.tmp}/var\nlog_level = info\n"
                    f"workers = {workers}\nmax_connections = 200000\nmax_body_bytes = 8388608\n"
                    "header_timeout = 60\nkeepalive_timeout = 600\n"
                    f"[heartbeat]\nmin = 1\nmax = {HEARTBEAT + 60}\n"
                    "[udp]\nlisten = 127.0.0.1:0\n"
                    f"[store]\nbackend = {args.store}\n")
        os.mkdir(os.path.join(self.tmp, "var"), 0o700)
        self.log = open(os.path.join(self.tmp, "nudged.log"), "w+")
        self.proc = subprocess.Popen([args.nudged, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stderr=self.log, stdout=self.log)
        self.port = None
        deadline = time.monotonic() + 20
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"event=1001 name=listening addr=127\.0\.0\.1:(\d+)", self.log_text())
            self.port = int(m.group(1)) if m else None
            time.sleep(0.05)
        if self.port is None:
            text = self.log_text()
            self.stop()
            sys.exit("nudged did not start:\n" + text)
        with open(os.path.join(self.tmp, "var", "secret")) as f:
            self.secret = bytes.fromhex(f.read().strip())
        self.admin = sign_token(self.secret, "a", "bench")
        self.publisher = sign_token(self.secret, "p", "bench")
        # Every worker up, so that the pid list is complete.
        deadline = time.monotonic() + 20
        while True:
            info = workers_info(self.port, self.admin)
            if len(info["workers"]) == max(1, workers) and all(w["up"] for w in info["workers"]):
                break
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"workers not all up: {info}")
            time.sleep(0.1)
        self.pids = sorted({self.proc.pid} | {w["pid"] for w in info["workers"]})

    def rss(self):
        return sum(rss_kib(p) for p in self.pids)

    def cpu(self):
        """{pid: utime + stime} of every nudged process."""
        return {p: cpu_s(p) for p in self.pids}

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM, wait; returns (exit code, log)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.log_text()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.proc.returncode, text


# ---------------------------------------------------------------------------
# A client process: holds the pings of users u<first> .. u<first+count-1>


def client(ctl, port, secret, first, count, sources, deadline):
    """Opens 'count' connections, sends one ping on each and reports
    ("sent", stats) on pipe 'ctl'. Then, told ("publish", U) (users below U
    were published), reads until each of its published users has an answer
    (plus DUPLICATE_GRACE_S), "stop" or the deadline; reports ("done",
    results) with the kernel receive time (ns) of every good answer."""
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, None)
    socks = [None] * count
    bufs = [b""] * count
    answers = [0] * count
    arrived = [0] * count          # kernel receive time of the first answer, ns
    closed = [False] * count
    bad = []
    connect_errors = []
    # remaining: published users with neither an answer nor a closed connection yet.
    state = {"sent": 0, "in_flight": 0, "stop": False, "published": None, "last": None, "remaining": None}
    space = socket.CMSG_SPACE(16)
    body = b'{"device":"d1","folders":{"INBOX":"0"},"heartbeat":%d}' % HEARTBEAT

    def settled(i):
        """Connection i got its first answer or closed unanswered."""
        if state["remaining"] is not None and first + i < state["published"]:
            state["remaining"] -= 1

    def drop(i):
        if not answers[i] and not closed[i]:
            settled(i)
        try:
            sel.unregister(socks[i])
        except (KeyError, ValueError):
            pass
        socks[i].close()
        closed[i] = True

    def on_event(i, mask):
        s = socks[i]
        if mask & selectors.EVENT_WRITE:
            state["in_flight"] -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                connect_errors.append((user_name(first + i), os.strerror(err)))
                drop(i)
                return
            s.send(b"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                   + sign_token(secret, "u", user_name(first + i)).encode()
                   + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            state["sent"] += 1
            sel.modify(s, selectors.EVENT_READ, i)
            return
        try:
            chunk, anc, _, _ = s.recvmsg(65536, space)
        except OSError:
            chunk, anc = b"", []
        if not chunk:
            drop(i)
            return
        t = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", cdata[:16])
                t = sec * 1_000_000_000 + nsec
        bufs[i] += chunk
        while True:
            n = response_end(bufs[i])
            if n is None:
                break
            resp, bufs[i] = bufs[i][:n], bufs[i][n:]
            answers[i] += 1
            state["last"] = time.monotonic()
            if answers[i] > 1:
                continue
            if not closed[i]:
                settled(i)
            if (resp.startswith(b"HTTP/1.1 200 ") and b'"status":"changed"' in resp
                    and b'"folders":{"INBOX":"1"}' in resp):
                arrived[i] = t or time.time_ns()
            else:
                bad.append((user_name(first + i), resp[:300].decode("latin-1")))

    def poll(timeout):
        for key, mask in sel.select(timeout):
            if key.data is None:
                msg = ctl.recv()
                if msg == "stop":
                    state["stop"] = True
                elif msg[0] == "publish":
                    state["published"] = msg[1]
                    state["remaining"] = sum(1 for i in range(count) if first + i < msg[1]
                                             and not answers[i] and not closed[i])
            else:
                on_event(key.data, mask)

    nxt = 0
    while (nxt < count or state["in_flight"]) and not state["stop"] and time.monotonic() < deadline:
        while nxt < count and state["in_flight"] < CONNECTS_IN_FLIGHT:
            i = nxt
            nxt += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((sources[i % len(sources)], 0))
            s.setblocking(False)
            socks[i] = s
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                connect_errors.append((user_name(first + i), os.strerror(rc)))
                s.close()
                closed[i] = True
                continue
            state["in_flight"] += 1
            sel.register(s, selectors.EVENT_WRITE, i)
        poll(0.05 if state["in_flight"] >= CONNECTS_IN_FLIGHT or nxt >= count else 0)
    ctl.send(("sent", {"sent": state["sent"], "connect_errors": connect_errors[:5],
                       "connect_error_count": len(connect_errors), "answered_early": sum(answers),
                       "early": bad[:5]}))

    def expected(i):
        return state["published"] is not None and first + i < state["published"]

    while not state["stop"] and time.monotonic() < deadline:
        if state["remaining"] == 0 and \
                (state["last"] is None or time.monotonic() - state["last"] > DUPLICATE_GRACE_S):
            break
        poll(0.1)
    published = [i for i in range(count) if expected(i)]
    ctl.send(("done", {
        "times": [(first + i, arrived[i]) for i in published if arrived[i]],
        "bad": bad[:5], "bad_count": len(bad),
        "lost": sum(1 for i in published if not answers[i] and not closed[i]),
        "closed": sum(1 for i in range(count) if closed[i] and not answers[i]),
        "duplicates": sum(1 for i in range(count) if answers[i] > 1),
        "unpublished_answered": sum(1 for i in range(count) if not expected(i) and answers[i]),
    }))
    for s in socks:
        if s is not None:
            s.close()


def publisher(port, token, bodies, deadline, result, source="127.0.0.1"):
    """Sends each body as POST /v1/events on one keep-alive connection (from
    address 'source'), one after the other; appends (last answer ns, error or
    None) to 'result'."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for body in bodies:
            if time.monotonic() > deadline:
                raise TimeoutError("time limit")
            s.sendall(request("POST", "/v1/events", token, body))
            status, payload, buf = read_response(s, buf)
            if status != 200:
                raise RuntimeError(f"POST /v1/events: {status} {payload[:200]!r}")
        s.close()
        result.append((time.time_ns(), None))
    except Exception as e:  # reported by the caller
        result.append((time.time_ns(), repr(e)))


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def descriptor_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(args, workers, n):
    """One configuration; returns {measure: text} or None when it cannot run."""
    w = max(1, workers)
    owned = [0] * w
    for i in range(n):
        owned[worker_owner(user_name(i), w)] += 1
    budget = descriptor_limit() - FD_RESERVE - DESCRIPTOR_MARGIN
    if max(owned) > budget:
        print(f"workers={workers} N={n}: a worker would hold {max(owned)} connections, over "
              f"{budget} (descriptor limit {descriptor_limit()}); not run", file=sys.stderr)
        return None
    fanout = min(n, args.fanout or n)
    srv = Server(args, workers)
    row = {}
    failures = []
    ctx = multiprocessing.get_context("fork")
    clients = []
    try:
        http(srv.port, "GET", "/metrics", srv.admin)  # the HTTP path has run once before reading
        time.sleep(0.3)
        before = srv.rss()
        procs_n = args.clients or max(1, math.ceil(n / PER_PROCESS))
        sources = [f"127.0.0.{2 + k}" for k in range(SOURCES)]
        deadline = time.monotonic() + 3 * PHASE_LIMIT_S
        t0 = time.monotonic()
        for k in range(procs_n):
            first = k * n // procs_n
            count = (k + 1) * n // procs_n - first
            a, b = ctx.Pipe()
            p = ctx.Process(target=client, args=(b, srv.port, srv.secret, first, count, sources, deadline),
                            daemon=True)
            p.start()
            b.close()
            clients.append((p, a))
        for k, (p, a) in enumerate(clients):
            if not a.poll(PHASE_LIMIT_S):
                raise RuntimeError(f"client {k} did not send its pings in {PHASE_LIMIT_S} s")
            tag, r = a.recv()
            if r["connect_error_count"] or r["answered_early"]:
                raise RuntimeError(f"client {k}: {r}")
        held_deadline = time.monotonic() + PHASE_LIMIT_S
        while True:
            held = metric(srv.port, srv.admin, "nudge_pings_held")
            if held == n:
                break
            if time.monotonic() > held_deadline:
                raise RuntimeError(f"only {held} of {n} pings held after {PHASE_LIMIT_S} s")
            time.sleep(0.2)
        hold_s = time.monotonic() - t0
        time.sleep(0.5)
        after = srv.rss()
        info = workers_info(srv.port, srv.admin)
        per = [x["pings_held"] for x in info["workers"]]
        worker_pids = [x["pid"] for x in info["workers"]]
        if workers > 1 and per != owned:
            failures.append(f"held per worker {per}, but the users' owners are {owned}")
        row["held pings (time to hold all)"] = f"{n} ({hold_s:.1f} s)"
        row["held per worker"] = " / ".join(str(x) for x in per)
        row["nudged processes"] = f"{len(srv.pids)}"
        row["RSS sum before / with all held"] = f"{before} / {after} KiB"
        row["user-space memory per held ping"] = f"{(after - before) * 1024 / n:.0f} bytes"

        # Fan-out: one event for each of the first 'fanout' users.
        bodies = [json.dumps([{"user": user_name(i), "folder": "INBOX"}
                              for i in range(b, min(fanout, b + args.batch))]).encode()
                  for b in range(0, fanout, args.batch)]
        shares = [bodies[k::args.publishers] for k in range(args.publishers)]
        for p, a in clients:
            a.send(("publish", fanout))
        result = []
        # From 127.0.0.1, all publishers reach one worker (as one mail server
        # would), which splits each batch among the owners; --spread-publishers
        # gives publisher k the source address 127.0.0.(2 + k), so that each
        # lands on another worker.
        threads = [threading.Thread(target=publisher, args=(
            srv.port, srv.publisher, share, time.monotonic() + PHASE_LIMIT_S, result,
            f"127.0.0.{2 + k}" if args.spread_publishers else "127.0.0.1"))
            for k, share in enumerate(shares) if share]
        cpu0 = srv.cpu()  # per pid
        t_pub = time.time_ns()
        for t in threads:
            t.start()
        for t in threads:
            t.join(PHASE_LIMIT_S + 10)
        errors = [e for _, e in result if e]
        if errors or len(result) != len(threads):
            failures.append(f"publishers failed: {errors[:3]}")
        last_pub = max((t for t, _ in result), default=t_pub)
        times, bad, lost, closed, dups, unpub = [], [], 0, 0, 0, 0
        for k, (p, a) in enumerate(clients):
            if not a.poll(PHASE_LIMIT_S):
                a.send("stop")
                if not a.poll(30):
                    failures.append(f"client {k} never reported")
                    continue
            tag, r = a.recv()
            times += r["times"]
            bad += r["bad"]
            lost += r["lost"]
            closed += r["closed"]
            dups += r["duplicates"]
            unpub += r["unpublished_answered"]
        cpu1 = srv.cpu()
        cpu_by = {p: cpu1[p] - cpu0[p] for p in cpu1}
        cpu = sum(cpu_by.values())
        lat = sorted((t - t_pub) / 1e6 for _, t in times)
        by_worker = [[] for _ in range(w)]
        for i, t in times:
            by_worker[worker_owner(user_name(i), w)].append((t - t_pub) / 1e6)
        row["devices published to / answered 200 changed"] = f"{fanout} / {len(lat)}"
        row["lost, wrong, closed, duplicates"] = f"{lost}, {len(bad)}, {closed}, {dups}"
        if lat:
            row["fan-out latency p50 / p99 / max"] = (f"{percentile(lat, 0.5):.1f} / {percentile(lat, 0.99):.1f}"
                                                      f" / {lat[-1]:.1f} ms")
        if workers > 1 and lat:
            row["latency p50 / max by owner worker"] = ", ".join(
                f"{percentile(sorted(x), 0.5):.0f} / {max(x):.0f}" for x in by_worker if x) + " ms"
        row["last publish answered"] = f"{(last_pub - t_pub) / 1e6:.1f} ms"
        row["nudged CPU for the fan-out"] = f"{cpu * 1000:.0f} ms ({cpu * 1e6 / max(1, fanout):.1f} us/answer)"
        if workers > 1:
            row["CPU by process (supervisor, workers)"] = ", ".join(
                f"{cpu_by.get(p, 0) * 1000:.0f}" for p in [srv.proc.pid] + worker_pids) + " ms"
        if len(lat) != fanout or bad or lost or closed or dups or unpub:
            failures.append(f"{fanout - len(lat)} of {fanout} answers missing or wrong: lost {lost}, "
                            f"bad {bad[:3]}, closed {closed}, duplicates {dups}, "
                            f"unpublished answered {unpub}")
    finally:
        for p, a in clients:
            try:
                a.send("stop")
            except OSError:
                pass
        for p, a in clients:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
            a.close()
        code, log = srv.stop()
    trouble = [line for line in log.splitlines() if re.search(r"level=error |level=warn event=(1702|1705) ", line)]
    if code != 0:
        failures.append(f"nudged exited {code}")
    if trouble:
        failures.append("nudged logged: " + " | ".join(trouble[:5]))
    row["failures"] = "; ".join(failures) if failures else "none"
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default=str(len(os.sched_getaffinity(0))),
                    help="worker counts to compare with workers=1, comma-separated (default: CPUs)")
    ap.add_argument("--count", default="10000,50000", help="held pings, comma-separated")
    ap.add_argument("--fanout", type=int, default=0, help="users published to (default: every held ping)")
    ap.add_argument("--batch", type=int, default=1000, help="events per POST /v1/events")
    ap.add_argument("--publishers", type=int, default=4, help="publishing keep-alive connections")
    ap.add_argument("--spread-publishers", action="store_true",
                    help="publisher k from 127.0.0.(2+k), so each lands on another worker "
                         "(default: all from 127.0.0.1, one worker)")
    ap.add_argument("--clients", type=int, default=0, help="client processes (default: N / 12000, rounded up)")
    ap.add_argument("--store", default="sqlite", choices=["sqlite", "memory"])
    default_nudged = os.path.join(ROOT, "build/bin/nudged")
    if not os.access(default_nudged, os.X_OK):
        default_nudged = os.path.join(ROOT, "bin/nudged")
    ap.add_argument("--nudged", default=default_nudged)
    args = ap.parse_args()
    counts = [int(c) for c in args.count.split(",")]
    worker_counts = [1] + [int(w) for w in args.workers.split(",") if int(w) != 1]
    if max(counts) > SOURCES * 25000 or max(counts) > PER_PROCESS * 64:
        sys.exit("--count too large for the client's source addresses")

    configs = [(w, n) for n in counts for w in worker_counts]
    columns = {}
    for w, n in configs:
        print(f"workers={w} N={n} ...", file=sys.stderr, flush=True)
        columns[(w, n)] = run(args, w, n)
    measures = []
    for col in columns.values():
        for k in (col or {}):
            if k not in measures:
                measures.append(k)
    measures = [k for k in measures if k != "failures"] + ["failures"]
    print(f"\n{args.store} store, nudged {args.nudged}, {len(os.sched_getaffinity(0))} CPUs, "
          f"RLIMIT_NOFILE {descriptor_limit()}, batches of {args.batch} on {args.publishers} connections "
          f"from {'127.0.0.2..' if args.spread_publishers else '127.0.0.1'}\n")
    print("| measure | " + " | ".join(f"workers = {w}, N = {n:,}" for w, n in configs) + " |")
    print("|---|" + "---|" * len(configs))
    for k in measures:
        cells = [(columns[c] or {}).get(k, "-") if columns[c] is not None else "n/a (descriptor limit)"
                 for c in configs]
        print(f"| {k} | " + " | ".join(cells) + " |")
    failed = [c for c, col in columns.items() if col and col["failures"] != "none"]
    if failed:
        sys.exit(f"failures in {failed}")


if __name__ == "__main__":
    main()
