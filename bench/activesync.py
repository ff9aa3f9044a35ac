#!/usr/bin/env python3
"""Memory per held ActiveSync Ping and its fan-out, beside /v1/ping, at 10k and 100k (issue 19).

For each N of --count and each kind of --kinds, a fresh nudged (memory
store, a passwd-file of N users so every kind's server is configured alike)
holds N Pings, one per user and device (the worst case: every Ping also
creates a user and a device record):

  json        POST /v1/ping with a bearer token, JSON body, one folder
  json-basic  the same with HTTP Basic ([auth] basic = yes): the sign-in's
              own cost, so the ActiveSync row can be told apart from it
  activesync  POST /Microsoft-Server-ActiveSync?Cmd=Ping with HTTP Basic
              (SHA512-CRYPT, rounds=1000), WBXML body built once by
              xml2wbxml (libwbxml2-utils), one folder

Arrival. By default the Pings arrive in waves, as phones do over time: W
requests (--wave, default 500), then a wait until /metrics shows
nudge_pings_held at the number sent so far, then the next W. So at most W
password checks are pending at once, and the memory they hold while pending
(sign-in records, the check's job with its copies of password and hash)
does not raise the heap's high-water mark above what the held Pings need.
--storm sends all N at once (every check pending together), as this script
did before; the table's title says which. The bearer kind arrives the same
way, so the kinds are measured alike.

Processes. One process may hold 20,000 descriptors here (a hard limit), so
above PER_PROCESS (15,000) Pings nudged runs with [server] workers = W,
W = ceil(N / 15000) + 1 unless --workers (the user hash decides the owner,
src/worker/owner.c; the script checks that no worker would own more than its
descriptors allow), and the clients are split over ceil(N / 12500) forked
processes, device i in process i % P. Every client socket is bound to one of
127.0.0.2 .. 127.0.0.(1 + SOURCES) (i % SOURCES) before it connects: one
source/destination pair has only ~28k ephemeral ports, and nudged's
listeners steer connections by source address. The bench raises its
RLIMIT_NOFILE to the hard limit; nudged and the clients inherit it.

Memory. PSS (/proc/PID/smaps_rollup) summed over nudged and its workers,
before the first Ping and once all N are held (0.5 s later), the difference
divided by N; PSS for every N, so the 10k (one process) and 100k (several)
rows compare: each forked worker's shared pages are counted once. The RSS
sum is printed beside it for reference.

Fan-out. One event per user (batches of 1000, from 127.0.0.1), then the
time until every held Ping has answered (Status 2 / "changed"), read with
time.monotonic() in the client processes. Every device must get its answer:
the script exits non-zero if one is missing, closed or answered early.
The ratio columns are issue 19's target: within 10% of the JSON ping.

The passwd-file (SHA512-CRYPT, rounds=1000, libcrypt through ctypes) is
made on every core and cached in /var/cache/nudge-bench (or /tmp when that
is not writable) keyed by N; the hashes are random-salted, so a cached file
is as good as a new one.

Usage: bench/activesync.py [--count N[,N...]] [--kinds json,json-basic,activesync]
                           [--wave W | --storm] [--workers W] [--nudged PATH] [--nudge PATH]
Bounded in time (PHASE_LIMIT_S, more for large N), loopback only. Progress
goes to stderr, the tables to stdout.
"""
import argparse
import base64
import ctypes
import json
import math
import multiprocessing
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import (Nudged, http, metric, publish_each, pss_kib, raise_nofile, response_end,  # noqa: E402
                      rss_kib, wait_workers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("json", "json-basic", "activesync")
# Most connections one nudged process or client process is given: below the
# 20,000 descriptors a process may hold here, with room for its own files.
PER_PROCESS = 15000
PER_CLIENT = 12500
# nudged keeps 64 descriptors back from a process's limit; and a margin.
FD_RESERVE = 64 + 500
SOURCES = 16
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# A phase (holding all, the fan-out) may take this long at 10k; more with N
# (100k: 100,000 password checks of ~0.25 ms of CPU on 2 cores, and 100,000
# connects from Python).
PHASE_LIMIT_S = 120
# A wave that makes no progress for this long fails the run.
STALL_LIMIT_S = 60
PING_XML = ('<?xml version="1.0"?>\n<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" '
            '"http://www.microsoft.com/">\n<Ping xmlns="Ping:"><HeartbeatInterval>3000</HeartbeatInterval>'
            '<Folders><Folder><Id>INBOX</Id><Class>Email</Class></Folder></Folders></Ping>\n')
STATUS2 = b"\x47\x03\x32\x00\x01"  # <Status>2</Status> in code page 13


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def phase_limit(n):
    return PHASE_LIMIT_S + n // 400


def wbxml_ping():
    if not shutil.which("xml2wbxml"):
        sys.exit("xml2wbxml missing: apt-get install libwbxml2-utils")
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "p.xml"), os.path.join(d, "p.wbxml")
        with open(src, "w") as f:
            f.write(PING_XML)
        subprocess.run(["xml2wbxml", "-a", "-n", "-o", dst, src], check=True, capture_output=True)
        with open(dst, "rb") as f:
            data = f.read()
    assert data[:4] == b"\x03\x01\x6a\x00", data[:4].hex()
    return data


# ---------------------------------------------------------------- passwd-file

def passwd_lines(span):
    """The passwd-file lines of users span[0] .. span[1]-1 (in a pool worker)."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    out = []
    for i in range(*span):
        h = lib.crypt(f"pw{i}".encode(), lib.crypt_gensalt(b"$6$", 1000, None, 0)).decode()
        out.append(f"u{i}:{{SHA512-CRYPT}}{h}::::::\n")
    return "".join(out)


def cache_dir():
    for d in ("/var/cache/nudge-bench", os.path.join(tempfile.gettempdir(), "nudge-bench-cache")):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    sys.exit("no writable cache directory for the passwd-file")


def passwd_valid(path, n):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    return len(lines) == n and all(line.startswith(f"u{i}:{{SHA512-CRYPT}}$6$rounds=1000$")
                                   for i, line in enumerate(lines))


def passwd_file(n):
    """The path of a passwd-file of users u0 .. u{n-1} (password pw<i>), cached by N."""
    path = os.path.join(cache_dir(), f"passwd-sha512crypt-r1000-{n}")
    if passwd_valid(path, n):
        log(f"passwd-file of {n} users: cached {path}")
        return path
    t = time.time()
    step = 2000
    spans = [(b, min(n, b + step)) for b in range(0, n, step)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        text = "".join(pool.map(passwd_lines, spans))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)
    log(f"passwd-file of {n} users made in {time.time() - t:.1f} s on {os.cpu_count()} cores: {path}")
    return path


# ---------------------------------------------------------------- clients

def ping_request(kind, i, token, wbxml):
    if kind in ("json", "json-basic"):
        if kind == "json":
            auth = f"Bearer {token}"
        else:
            auth = "Basic " + base64.b64encode(f"u{i}:pw{i}".encode()).decode()
        body = json.dumps({"device": f"d{i}", "heartbeat": 3000, "folders": {"INBOX": "0"}}).encode()
        head = (f"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    else:
        body = wbxml
        cred = base64.b64encode(f"u{i}:pw{i}".encode()).decode()
        head = (f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=u{i}&DeviceId=d{i}&DeviceType=iPhone "
                f"HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\nMS-ASProtocolVersion: 14.1\r\n"
                f"Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def client(ctl, port, kind, first, step, n, tokens, wbxml, deadline):
    """Devices first, first+step, ... < n: connects and sends their Pings when
    told ("send", upto), reads their answers; after ("go", t0) reports once
    each has answered or closed, or at the fan-out's deadline ("done", ...)."""
    want = STATUS2 if kind == "activesync" else b'"status":"changed"'
    sources = [f"127.0.0.{2 + k}" for k in range(SOURCES)]
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, None)
    mine = list(range(first, n, step))
    socks, bufs, arrived = [], {}, {}
    nxt = 0
    bad, closed, connect_errors = [], 0, []
    t_go = fan_deadline = None

    def report():
        return {"sent": nxt, "bad_count": len(bad), "bad": bad[:3], "closed": closed,
                "connect_errors": len(connect_errors), "connect_error": connect_errors[:3]}

    while time.monotonic() < deadline:
        if t_go is not None and (len(arrived) + len(bad) + closed >= len(mine)
                                 or time.monotonic() > fan_deadline):
            break
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                msg = ctl.recv()
                if msg[0] == "send":
                    while nxt < len(mine) and mine[nxt] < msg[1]:
                        i = mine[nxt]
                        nxt += 1
                        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        try:
                            s.bind((sources[i % SOURCES], 0))
                            s.connect(("127.0.0.1", port))
                            s.sendall(ping_request(kind, i, tokens[i] if tokens else None, wbxml))
                        except OSError as e:
                            connect_errors.append(f"d{i}: {e}")
                            s.close()
                            continue
                        s.setblocking(False)
                        sel.register(s, selectors.EVENT_READ, i)
                        socks.append(s)
                    ctl.send(("sent", report()))
                elif msg[0] == "report":
                    ctl.send(("report", report()))
                elif msg[0] == "go":
                    t_go, fan_deadline = msg[1], msg[2]
                continue
            i = key.data
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            buf = bufs.get(i, b"") + data
            if want in buf:
                arrived[i] = time.monotonic()
                sel.unregister(key.fileobj)
                bufs.pop(i, None)
            elif not data:
                closed += 1
                sel.unregister(key.fileobj)
                bufs.pop(i, None)
            elif response_end(buf) is not None:
                bad.append(f"d{i}: {buf[:160]!r}")
                sel.unregister(key.fileobj)
                bufs.pop(i, None)
            else:
                bufs[i] = buf
    t0 = t_go if t_go is not None else float("inf")
    late = [t for t in arrived.values() if t >= t0]
    early = len(arrived) - len(late)
    ctl.send(("done", {"devices": len(mine), "answered": len(late), "early": early,
                       "last": max(late) if late else None, **report()}))
    for s in socks:
        s.close()


class Clients:
    """P forked client processes, device i in process i % P."""

    def __init__(self, port, kind, n, tokens, wbxml, deadline):
        self.n = n
        self.count = max(1, math.ceil(n / PER_CLIENT))
        ctx = multiprocessing.get_context("fork")
        self.procs = []
        for k in range(self.count):
            a, b = ctx.Pipe()
            p = ctx.Process(target=client, args=(b, port, kind, k, self.count, n, tokens, wbxml, deadline),
                            daemon=True)
            p.start()
            b.close()
            self.procs.append((p, a))

    def ask(self, msg, tag, timeout):
        for _, a in self.procs:
            a.send(msg)
        out = []
        for k, (_, a) in enumerate(self.procs):
            if not a.poll(timeout):
                raise RuntimeError(f"client process {k} did not answer {msg[0]} within {timeout} s")
            got, r = a.recv()
            if got != tag:
                raise RuntimeError(f"client process {k}: {got} for {msg[0]}")
            out.append(r)
        return out

    def go(self, t0, fan_deadline):
        for _, a in self.procs:
            a.send(("go", t0, fan_deadline))

    def done(self, timeout):
        out = []
        for k, (_, a) in enumerate(self.procs):
            if not a.poll(timeout):
                raise RuntimeError(f"client process {k} did not report the fan-out within {timeout} s")
            out.append(a.recv()[1])
        return out

    def stop(self):
        for p, a in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
            a.close()


def problems(reports):
    out = []
    for k, r in enumerate(reports):
        if r["bad_count"] or r["closed"] or r["connect_errors"]:
            out.append(f"client {k}: {r['bad_count']} answered early {r['bad']}, {r['closed']} closed, "
                       f"{r['connect_errors']} connect errors {r['connect_error']}")
    return out


# ---------------------------------------------------------------- one run

def worker_owner(user, count):
    """The worker owning 'user' (src/worker/owner.c: FNV-1a 64, high bits folded in)."""
    if count <= 1:
        return 0
    h = 14695981039346656037
    for b in user.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 29)) % count


def choose_workers(args, n, nofile):
    w = args.workers or (1 if n <= PER_PROCESS else math.ceil(n / PER_PROCESS) + 1)
    owned = [0] * w
    for i in range(n):
        owned[worker_owner(f"u{i}", w)] += 1
    if max(owned) > nofile - FD_RESERVE:
        sys.exit(f"N={n}: with workers = {w} one worker would own {max(owned)} connections, over its "
                 f"descriptor limit {nofile} less {FD_RESERVE}; use more --workers")
    return w, owned


def run(args, kind, n, workers, passwd, wbxml):
    limit = phase_limit(n)
    wave = n if args.storm else args.wave
    srv_args = argparse.Namespace(**vars(args))
    srv_args.workers = workers
    srv = Nudged(srv_args, {"server": {"max_connections": max(16000, n + 1000)},
                            "store": {"backend": "memory"},
                            "auth": {"passwords": f"passwd-file:{passwd}", "basic": "yes"}},
                 prefix="nudge-bench-as-")
    clients = None
    try:
        admin = srv.token("--admin")[0]
        publisher = srv.token("--publisher")[0]
        if workers > 1 and not wait_workers(srv.port, admin):
            raise RuntimeError("the workers did not come up\n" + srv.log_text()[-2000:])
        tokens = srv.token("--user-prefix", "u", "--count", str(n)) if kind == "json" else None
        metric(srv.port, admin, "nudge_pings_held")  # the HTTP path has run once before reading
        time.sleep(0.3)
        pids = srv.pids()
        before = pss_kib(pids)
        rss_before = sum(rss_kib(p) for p in pids)
        deadline = time.monotonic() + 3 * limit
        clients = Clients(srv.port, kind, n, tokens, wbxml, deadline)
        log(f"{kind} N={n}: {len(pids)} nudged processes (workers = {workers}), {clients.count} client "
            f"processes, {'storm' if args.storm else f'waves of {wave}'}")
        t_hold = time.monotonic()
        hold_deadline = t_hold + limit
        sent = held = 0
        shown = t_hold
        while sent < n:
            upto = min(n, sent + wave)
            bad = problems(clients.ask(("send", upto), "sent", limit))
            if bad:
                raise RuntimeError(f"{kind}: while sending up to {upto}: " + "; ".join(bad))
            sent = upto
            progress, stall = held, time.monotonic() + STALL_LIMIT_S
            asked = time.monotonic()
            while (held := metric(srv.port, admin, "nudge_pings_held")) < sent:
                now = time.monotonic()
                if held > progress:
                    progress, stall = held, now + STALL_LIMIT_S
                if now > hold_deadline or now > stall:
                    bad = problems(clients.ask(("report",), "report", 30))
                    raise RuntimeError(f"{kind}: only {held} of {sent} sent Pings held after "
                                       f"{now - t_hold:.0f} s; " + "; ".join(bad) + "\n"
                                       + srv.log_text()[-2000:])
                if now - shown > 5:
                    log(f"{kind} N={n}: {held} of {sent} sent held ({now - t_hold:.0f} s)")
                    shown = now
                if now - asked > 1:  # an early answer (401, 429, 503) fails the run at once
                    asked = now
                    bad = problems(clients.ask(("report",), "report", 30))
                    if bad:
                        raise RuntimeError(f"{kind}: {held} of {sent} sent Pings held; " + "; ".join(bad))
                time.sleep(0.01)
            if time.monotonic() - shown > 5:
                shown = time.monotonic()
                log(f"{kind} N={n}: {held} held ({shown - t_hold:.0f} s)")
        hold_s = time.monotonic() - t_hold
        time.sleep(0.5)
        after = pss_kib(pids)
        rss_after = sum(rss_kib(p) for p in pids)
        per_worker = None
        if workers > 1:
            st, body = http(srv.port, "GET", "/v1/admin/workers", admin)
            if st == 200:
                per_worker = [w.get("pings_held") for w in json.loads(body)["workers"]]
        log(f"{kind} N={n}: all held in {hold_s:.1f} s; PSS {before} -> {after} KiB "
            f"({(after - before) * 1024 / n:.0f} B per Ping)"
            + (f"; held per worker {per_worker}" if per_worker else ""))
        t0 = time.monotonic()
        clients.go(t0, t0 + limit)
        publish_each(srv.port, publisher, n)
        reports = clients.done(limit + 30)
        answered = sum(r["answered"] for r in reports)
        lasts = [r["last"] for r in reports if r["last"] is not None]
        elapsed = (max(lasts) - t0) if lasts else float("nan")
        early = sum(r["early"] for r in reports)
        bad = problems(reports)
        log(f"{kind} N={n}: {answered} of {n} answered, last {elapsed * 1000:.0f} ms after the first publish"
            + (f"; {early} answered before it" if early else "") + ("; " + "; ".join(bad) if bad else ""))
    finally:
        if clients:
            clients.stop()
        srv.stop()
    return {"kind": kind, "n": n, "before": before, "after": after, "rss_before": rss_before,
            "rss_after": rss_after, "per": (after - before) * 1024 / n, "fanout_ms": elapsed * 1000,
            "answered": answered, "early": early, "bad": bad, "hold_s": hold_s, "procs": len(pids),
            "clients": clients.count, "per_worker": per_worker}


HEAD = {"json": "/v1/ping, bearer token", "json-basic": "/v1/ping, HTTP Basic",
        "activesync": "ActiveSync Ping (WBXML, Basic)"}


def table(args, n, workers, res):
    r0 = next(iter(res.values()))
    arrival = "storm (all N sent at once)" if args.storm else f"waves of {args.wave}"
    print(f"Held Pings, one per user, N = {n:,}, memory store, arrival: {arrival}; nudged workers = "
          f"{workers} ({r0['procs']} process{'es' if r0['procs'] > 1 else ''}), {r0['clients']} client "
          f"process{'es' if r0['clients'] > 1 else ''}:\n")
    kinds = [k for k in KINDS if k in res]
    ratios = [(a, b) for a, b in (("activesync", "json"), ("activesync", "json-basic"))
              if a in res and b in res]
    rnames = {"json": "bearer", "json-basic": "Basic"}
    print("| measure | " + " | ".join(HEAD[k] for k in kinds)
          + "".join(f" | ActiveSync / {rnames[b]}" for _, b in ratios) + " |")
    print("|---" * (1 + len(kinds) + len(ratios)) + "|")

    def row(name, cell, ratio=None):
        cells = [cell(res[k]) for k in kinds]
        rs = [f"{ratio(res[a]) / ratio(res[b]):.2f}" if ratio else "" for a, b in ratios]
        print(f"| {name} | " + " | ".join(cells + rs) + " |")

    row("memory per held Ping (PSS, all nudged processes)", lambda r: f"{r['per']:.0f} B", lambda r: r["per"])
    row("PSS before / with all held (KiB)", lambda r: f"{r['before']} / {r['after']}")
    row("RSS sum before / with all held (KiB)", lambda r: f"{r['rss_before']} / {r['rss_after']}")
    row("fan-out: publish-all to last answer", lambda r: f"{r['fanout_ms']:.0f} ms", lambda r: r["fanout_ms"])
    row("answered after one publish per user", lambda r: f"{r['answered']} of {r['n']}")
    row("time to hold all (connect, sign in, hold)", lambda r: f"{r['hold_s']:.1f} s")
    if workers > 1:
        row("held per worker", lambda r: " / ".join(str(x) for x in r["per_worker"] or []))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", default="10000", help="held Pings, comma-separated (e.g. 10000,100000)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated among " + ",".join(KINDS))
    ap.add_argument("--wave", type=int, default=500, help="Pings sent per wave (default 500)")
    ap.add_argument("--storm", action="store_true", help="send all N at once instead of in waves")
    ap.add_argument("--workers", type=int, default=0,
                    help=f"nudged [server] workers (default: 1 up to {PER_PROCESS} Pings, "
                         f"else ceil(N/{PER_PROCESS})+1)")
    ap.add_argument("--nudged", default=os.path.join(ROOT, "bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "bin/nudge"))
    args = ap.parse_args()
    counts = [int(c) for c in args.count.split(",") if c]
    kinds = [k for k in args.kinds.split(",") if k]
    if not counts or any(c < 1 for c in counts):
        ap.error("--count: positive numbers")
    if not kinds or any(k not in KINDS for k in kinds):
        ap.error(f"--kinds: among {','.join(KINDS)}")
    if args.wave < 1:
        ap.error("--wave: at least 1")
    nofile = raise_nofile()
    log(f"RLIMIT_NOFILE {nofile}; counts {counts}; kinds {kinds}; "
        f"{'storm' if args.storm else f'waves of {args.wave}'}")
    wbxml = wbxml_ping()
    lost = False
    for n in counts:
        workers, owned = choose_workers(args, n, nofile)
        if workers > 1:
            log(f"N={n}: workers = {workers}, users owned per worker {owned}")
        passwd = passwd_file(n)
        t = time.monotonic()
        res = {}
        for k in kinds:
            res[k] = run(args, k, n, workers, passwd, wbxml)
        log(f"N={n}: {time.monotonic() - t:.0f} s for {len(kinds)} kinds")
        table(args, n, workers, res)
        sys.stdout.flush()
        if any(r["answered"] != r["n"] or r["early"] or r["bad"] for r in res.values()):
            lost = True
    if lost:
        sys.exit("answers were lost")


if __name__ == "__main__":
    main()
