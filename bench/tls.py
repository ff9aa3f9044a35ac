#!/usr/bin/env python3
"""nudged's TLS listener beside nginx's, in one run (bench/README.md, "TLS").

Part 1, memory per idle held connection: --count (10,000) connections held
at once, one server at a time, each measured as the PSS of all its
processes before and after, divided by the count:
  nudged, plain HTTP    a held POST /v1/ping per user (as held_memory.py);
  nudged, TLS           the same over TLS 1.3 (listener "127.0.0.1:0 tls"),
                        with one process and with workers = 3 (each
                        connection handed to its user's worker, keys and all);
  nginx, TLS keep-alive GET /ka answered 204, the connection left idle;
  nginx+nchan, TLS      a held nchan long-poll (GET /sub/u<k>), nginx's
                        closest thing to a held ping (bench/compare.py).
nginx runs bench/nginx-tls.conf. Every connection is checked: a held ping
or long-poll must be answered after one publish per user.

Part 2, handshakes per second per core: --clients processes open
connections as fast as they can for --seconds, each a TLS handshake and one
GET /healthz, with no session (full handshakes) and then with the previous
connection's session (resumed with a ticket); the server's CPU time
(utime+stime of every process) over the window divided into the count
gives handshakes per CPU-second. ECDSA P-256 and RSA-2048 certificates
(made here with the openssl CLI), TLS 1.3 and 1.2, nudged and nginx with
one process each.

A server that is not there is skipped with a line saying why (a nudged
built before native TLS: its TLS rows say "not available").

Usage: bench/tls.py [--count N] [--seconds S] [--clients C] [--skip-held]
                    [--skip-handshakes] [--servers nudge,nudge-tls,nudge-tls-w3,nginx,nchan]
                    [--nudged PATH] [--nudge PATH] [--nginx PATH]
Bounded in count and time, loopback only.
"""
import argparse
import json
import multiprocessing
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import copy

from benchlib import (Nudged, cpu_s, http, metric, pss_kib, publish_each, raise_nofile,  # noqa: E402
                      wait_workers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PHASE_LIMIT_S = 300


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                         capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def make_certs(tmp):
    """{"ECDSA P-256": (cert, key), "RSA-2048": (cert, key)}, self-signed for localhost."""
    certs = {}
    for name, stem, key in (("ECDSA P-256", "ec", ["-newkey", "ec", "-pkeyopt",
                                                   "ec_paramgen_curve:P-256"]),
                            ("RSA-2048", "rsa", ["-newkey", "rsa:2048"])):
        crt, k = os.path.join(tmp, stem + ".crt"), os.path.join(tmp, stem + ".key")
        subprocess.run(["openssl", "req", "-x509", *key, "-nodes", "-keyout", k, "-out", crt,
                        "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        certs[name] = (crt, k)
    return certs


def client_ctx(version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def speaks_tls(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with client_ctx().wrap_socket(s) as t:
                return t.version() is not None
    except (OSError, ssl.SSLError):
        return False


# ---------------------------------------------------------------- servers

class NudgedServer:
    """nudged (benchlib.Nudged) with a plain listener and, with tls, a TLS one."""

    def __init__(self, args, tls, cert=None, max_conns=None):
        listen = "127.0.0.1:0, 127.0.0.1:0 tls" if tls else "127.0.0.1:0"
        sections = {"server": {"listen": listen, "keepalive_timeout": 3600,
                               "max_connections": max_conns or args.count + 1000},
                    "store": {"backend": "memory"}, "udp": {"listen": ""}}
        if tls:
            sections["tls"] = {"cert": cert[0], "key": cert[1]}
        self.srv = Nudged(args, sections)
        m = re.search(r"name=listening addr=(\S+)", self.srv.log_text())
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", m.group(1))] if m else []
        self.plain = self.tls = None
        for p in ports:
            if tls and self.tls is None and speaks_tls(p):
                self.tls = p
            elif self.plain is None:
                self.plain = p
        self.admin = self.srv.token("--admin")[0]
        self.publisher = self.srv.token("--publisher")[0]
        if getattr(args, "workers", 1) > 1 and not wait_workers(self.plain, self.admin):
            self.srv.stop()
            sys.exit("nudged: its workers did not come up")

    def pids(self):
        return self.srv.pids()

    def stop(self):
        self.srv.stop()


class Nginx:
    """nginx with bench/nginx-tls.conf in a private prefix (one worker)."""

    def __init__(self, args, cert):
        self.tmp = tempfile.mkdtemp(prefix="nginx-tls-bench-")
        self.port, self.tls = free_port(), free_port()
        with open(os.path.join(BENCH, "nginx-tls.conf")) as f:
            conf = f.read()
        for k, v in {"@PREFIX@": self.tmp, "@PORT@": str(self.port), "@TLSPORT@": str(self.tls),
                     "@CERT@": cert[0], "@KEY@": cert[1]}.items():
            conf = conf.replace(k, v)
        self.conf = os.path.join(self.tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log_path = os.path.join(self.tmp, "error.log")
        self.proc = subprocess.Popen([args.nginx, "-p", self.tmp, "-c", self.conf,
                                      "-e", self.log_path, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if http(self.port, "GET", "/nchan_status")[0] == 200 and children(self.proc.pid):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        text = open(self.log_path, errors="replace").read() if os.path.exists(self.log_path) else ""
        self.stop()
        sys.exit("nginx did not start:\n" + text)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def subscribers(self):
        _, text = http(self.port, "GET", "/nchan_status")
        m = re.search(rb"^subscribers: (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- part 1: held memory

def open_held(port, tls, requests, expect_answer):
    """One connection per request, each handshaken (tls) and its request sent;
    with expect_answer, each answer read before the next (the idle keep-alive).
    Returns the sockets (blocking, TLS-wrapped where tls)."""
    ctx = client_ctx("1.3") if tls else None
    socks = []
    deadline = time.time() + PHASE_LIMIT_S
    for i, req in enumerate(requests):
        if time.time() > deadline:
            sys.exit(f"opening held connections took longer than {PHASE_LIMIT_S} s ({i})")
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if ctx:
            s = ctx.wrap_socket(s)
        s.sendall(req)
        if expect_answer:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"connection {i} closed before its answer")
                data += chunk
            if not data.startswith(b"HTTP/1.1 204"):
                sys.exit(f"unexpected answer: {data[:100]!r}")
        socks.append(s)
    return socks


def await_answers(socks, needle, limit=120):
    """How many of socks got an answer containing needle within limit seconds."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    answered = 0
    deadline = time.time() + limit
    while answered < len(socks) and time.time() < deadline and sel.get_map():
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            bufs[s] += chunk
            if needle in bufs[s] or not chunk:
                answered += needle in bufs[s]
                sel.unregister(s)
    return answered


def held_nudge(args, tls, cert, workers=1):
    n = args.count
    args = copy.copy(args)
    args.workers = workers
    srv = NudgedServer(args, tls, cert)
    try:
        if tls and srv.tls is None:
            return None, "not available: this nudged's tls listener does not speak TLS"
        port = srv.tls if tls else srv.plain
        tokens = srv.srv.token("--user-prefix", "u", "--count", str(n))
        time.sleep(0.3)
        before = pss_kib(srv.pids())
        reqs = []
        for i in range(n):
            body = json.dumps({"device": f"d{i}", "heartbeat": 3000,
                               "folders": {"INBOX": "0"}}).encode()
            reqs.append((f"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens[i]}"
                         f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        socks = open_held(port, tls, reqs, False)
        deadline = time.time() + 60
        while metric(srv.plain, srv.admin, "nudge_pings_held") < n:
            if time.time() > deadline:
                sys.exit("nudged: not all pings were held within 60 s")
            time.sleep(0.2)
        time.sleep(1)
        after = pss_kib(srv.pids())
        publish_each(srv.plain, srv.publisher, n)
        answered = await_answers(socks, b'"status":"changed"')
        for s in socks:
            s.close()
    finally:
        srv.stop()
    return ((after - before) * 1024 / n, answered), None


def held_nginx(args, cert, kind):
    n = args.count
    srv = Nginx(args, cert)
    try:
        time.sleep(0.3)
        before = pss_kib(srv.pids())
        if kind == "keepalive":
            reqs = [b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n"] * n
            socks = open_held(srv.tls, True, reqs, True)
        else:
            reqs = [f"GET /sub/u{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(n)]
            socks = open_held(srv.tls, True, reqs, False)
            deadline = time.time() + 60
            while srv.subscribers() < n:
                if time.time() > deadline:
                    sys.exit("nchan: not all long-polls were held within 60 s")
                time.sleep(0.2)
        time.sleep(1)
        after = pss_kib(srv.pids())
        if kind == "keepalive":
            # Each idle keep-alive must still be served: one more request each.
            for s in socks:
                s.sendall(b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n")
            answered = await_answers(socks, b"HTTP/1.1 204")
        else:
            for i in range(n):
                st, _ = http(srv.port, "POST", f"/pub/u{i}", body=b"1")
                assert st in (201, 202), st
            answered = await_answers(socks, b"\r\n\r\n1")
        for s in socks:
            s.close()
    finally:
        srv.stop()
    return ((after - before) * 1024 / n, answered), None


def part_held(args, certs):
    cert = certs["ECDSA P-256"]
    rows = [("nudge", "nudged, plain HTTP, held ping", lambda: held_nudge(args, False, cert)),
            ("nudge-tls", "nudged, TLS 1.3, held ping", lambda: held_nudge(args, True, cert)),
            # each connection handed to the worker that owns its user, its keys with it
            ("nudge-tls-w3", "nudged, TLS 1.3, held ping, workers = 3",
             lambda: held_nudge(args, True, cert, workers=3)),
            ("nginx", "nginx, TLS 1.3, idle keep-alive", lambda: held_nginx(args, cert, "keepalive")),
            ("nchan", "nginx+nchan, TLS 1.3, held long-poll", lambda: held_nginx(args, cert, "sub"))]
    print(f"\nMemory per idle held connection, N = {args.count}, ECDSA P-256, one process "
          "each (PSS of the server's processes, after minus before, over N):\n")
    print("| server | user-space memory per connection | answered after one publish / request each |")
    print("|---|---|---|")
    for key, label, fn in rows:
        if key not in args.servers:
            continue
        log(f"held: {label}")
        res, why = fn()
        if res is None:
            print(f"| {label} | {why} | - |")
        else:
            per, answered = res
            print(f"| {label} | {per:,.0f} B | {answered} of {args.count} |")
        sys.stdout.flush()


# ---------------------------------------------------------------- part 2: handshakes

def hs_client(port, version, resume, stop_at, out):
    ctx = client_ctx(version)
    session = None
    count = resumed = errors = 0
    while time.time() < stop_at:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                # Without it a resumed handshake's last flight waits out the
                # server's delayed ACK (40 ms) behind Nagle.
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, session=session if resume else None) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if not data.startswith(b"HTTP/1.1 200"):
                        errors += 1
                        continue
                    count += 1
                    resumed += s.session_reused
                    if resume:
                        session = s.session
        except (OSError, ssl.SSLError):
            errors += 1
    out.put((count, resumed, errors))


def handshakes(args, pids, port, version, resume):
    out = multiprocessing.Queue()
    start = time.time() + 0.5
    stop_at = start + args.seconds
    procs = [multiprocessing.Process(target=hs_client, args=(port, version, resume, stop_at, out))
             for _ in range(args.clients)]
    for p in procs:
        p.start()
    while time.time() < start:
        time.sleep(0.01)
    cpu0 = sum(cpu_s(p) for p in pids)
    results = [out.get(timeout=args.seconds + 60) for _ in procs]
    cpu1 = sum(cpu_s(p) for p in pids)
    for p in procs:
        p.join()
    count = sum(r[0] for r in results)
    return count, sum(r[1] for r in results), sum(r[2] for r in results), cpu1 - cpu0


def part_handshakes(args, certs):
    print(f"\nHandshakes per second per core ({args.clients} client processes, {args.seconds} s "
          "per row, one server process; a handshake and one GET /healthz per connection; "
          "count over the server's CPU time):\n")
    print("| server | certificate | TLS | full /s per core | resumed /s per core | resumed / full |")
    print("|---|---|---|---|---|---|")
    for cert_name, cert in certs.items():
        for key, label in (("nudge-tls", "nudged"), ("nginx", "nginx")):
            if key not in args.servers:
                continue
            log(f"handshakes: {label} {cert_name}")
            if key == "nginx":
                srv = Nginx(args, cert)
                port = srv.tls
            else:
                srv = NudgedServer(args, True, cert, max_conns=2000)
                port = srv.tls
            try:
                if port is None:
                    print(f"| {label} | {cert_name} | - | not available: no TLS listener | - | - |")
                    continue
                for version in ("1.3", "1.2"):
                    rates = []
                    for resume in (False, True):
                        count, resumed, errors, cpu = handshakes(args, srv.pids(), port, version,
                                                                 resume)
                        rate = count / cpu if cpu > 0 else 0
                        note = ""
                        # each client's first connection is a full handshake
                        if resume and resumed < count - args.clients:
                            note = f" ({resumed} of {count} resumed)"
                        if errors:
                            note += f" ({errors} errors)"
                        rates.append((rate, note))
                    ratio = rates[1][0] / rates[0][0] if rates[0][0] else 0
                    print(f"| {label} | {cert_name} | {version} | {rates[0][0]:,.0f}{rates[0][1]} "
                          f"| {rates[1][0]:,.0f}{rates[1][1]} | {ratio:.1f}x |")
                    sys.stdout.flush()
            finally:
                srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=10000, help="held connections (part 1)")
    ap.add_argument("--seconds", type=float, default=5, help="per handshake row (part 2)")
    ap.add_argument("--clients", type=int, default=2, help="handshaking processes (part 2)")
    ap.add_argument("--servers", default="nudge,nudge-tls,nudge-tls-w3,nginx,nchan")
    ap.add_argument("--skip-held", action="store_true")
    ap.add_argument("--skip-handshakes", action="store_true")
    ap.add_argument("--nudged", default=os.path.join(ROOT, "bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "bin/nudge"))
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    args = ap.parse_args()
    args.servers = args.servers.split(",")
    args.workers = 1
    if raise_nofile() < args.count + 200:
        sys.exit(f"the descriptor limit is below {args.count + 200}")
    tmp = tempfile.mkdtemp(prefix="nudge-tls-bench-")
    try:
        certs = make_certs(tmp)
        print(f"Machine: {os.cpu_count()} cores, {ssl.OPENSSL_VERSION} (client), "
              f"{subprocess.run([args.nginx, '-v'], capture_output=True, text=True).stderr.strip()}")
        if not args.skip_held:
            part_held(args, certs)
        if not args.skip_handshakes:
            part_handshakes(args, certs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
