#!/usr/bin/env python3
"""nudge side by side with nginx+nchan: memory per held connection, fan-out
latency, publish throughput, idle cost, connection churn and lost messages,
for each N in --n (default 10,000 and 100,000).

For each N and each server in turn (never both at once), on loopback:

  1. Start the server with the same number of processes W for both
     (nudged [server] workers = W; nginx worker_processes W), W chosen so
     that no process holds more than ~15k descriptors (the hard limit here is
     20,000 per process).
  2. bench/loadgen (C, epoll, one process per ~15k connections) opens N held
     long-polls, one per user (nudge: POST /v1/ping with the user's token
     from `nudge token --user-prefix`; nchan: GET /sub/u<k>), and the time
     until the server reports all N held gives the accept rate (churn).
  3. Memory: the server's processes' PSS (RSS with shared pages divided
     among the processes sharing them, so nchan's shared memory and nudged's
     forked pages are counted once) before and after, divided by N; and the
     kernel's socket buffers (/proc/net/sockstat) and slab (/proc/meminfo),
     which both servers pay alike.
  4. Fan-out: one publish to each of the U users (POST /v1/events with one
     event; nchan: POST /pub/u<k>), over C keep-alive publishers; each
     device's latency is the time from the first publish request to its
     answer (CLOCK_MONOTONIC in loadgen). Every device re-polls after its
     answer, as a device would.
  5. One publish to a single user with D devices.
  6. Publish throughput: E single-event publishes over C keep-alive
     connections, to 10,000 users nobody holds, while the N stay held.
  7. Idle: CPU seconds (utime+stime of every server process) over a few
     seconds when nothing expires, then over --idle seconds (default 60)
     during which the heartbeats (nudge) and long-poll timeouts (nchan) of
     --hb seconds expire and are renewed.
  8. Lost: every device must receive every publish addressed to it; the
     loadgen counts what each device got (nudge: the folder state answered;
     nchan: the message numbers, where a skipped number is lost too).

Held event streams (--servers nudge-sse,nchan-sse, beside nudge and nchan in
the same run; make bench-streams): the same points with one held Server-Sent
Events stream per device instead of a long-poll (nudge: GET /v1/stream?
types=INBOX&ping=0&device=d<k>; nchan: GET /es/u<k>, its EventSource
subscriber). loadgen --answer sse-state / sse-message reads each stream's
head once, then every data: line as a delivery; nothing re-polls and
nothing expires (no renewals in the idle phase). A fifth table per N puts
held pings, held streams, nchan's long-polls and its EventSource side by
side, with SSE / ping and nudge SSE / nchan EventSource ratios.

Held WebSockets (--servers nudge-ws,nchan-ws): the same again with one held
WebSocket per device (nudge: GET /v1/ws?device=d<k> with
Sec-WebSocket-Protocol: jmap, then the client's WebSocketPushEnable for
INBOX, each StateChange a delivery; nchan: GET /ws/u<k>, its WebSocket
subscriber, each text frame a message). loadgen --answer ws-state /
ws-message checks the 101 and its Sec-WebSocket-Accept and answers pings
(counted as renewals). A sixth table per N puts SSE and WebSocket side by
side for both servers, with WS / SSE and nudge WS / nchan WS ratios.
--skip throughput,idle leaves those phases out.

Prints a markdown table per N, writes --out (bench/results.md) and a PNG
chart (gnuplot) of latency percentiles and bytes per connection versus N.
Every phase is bounded in time; loopback only. Run as root for the port
range and the descriptor limit (make bench does both).

Usage: bench/compare.py [--n 10000,100000] [--idle 60] [--hb 30] [--devices 5000]
                        [--publishers 8] [--events 50000]
                        [--servers floor,nudge,nchan,nudge-sse,nchan-sse,nudge-ws,nchan-ws]
                        [--skip throughput,idle]
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import benchlib  # noqa: E402
from benchlib import http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
# Connections one loadgen or server process is given at most: below the
# 20,000 descriptors a process may hold here, with room for its own files.
PER_PROCESS = 15000
# Source addresses 127.0.0.2 .. 127.0.0.65: 64 x ~64k ports, room for 4M connections.
SOURCES = 64

NUDGE_SUB = ('POST /v1/ping HTTP/1.1\\r\\nHost: bench\\r\\nAuthorization: Bearer {token}\\r\\n'
             'Content-Length: {len}\\r\\n\\r\\n'
             '{"device":"d{device}","heartbeat":{hb},"folders":{"INBOX":"{seq}"}}')
NUDGE_PUB = ('POST /v1/events HTTP/1.1\\r\\nHost: bench\\r\\nAuthorization: Bearer {ptoken}\\r\\n'
             'Content-Length: {len}\\r\\n\\r\\n[{items}]')
# One event of a nudge publish; {items} is BATCH of them, comma separated.
NUDGE_ITEM = '{"user":"{prefix}{target}","folder":"INBOX"}'

NCHAN_SUB = 'GET /sub/u{user} HTTP/1.1\\r\\nHost: bench\\r\\n{resume}\\r\\n'
# Held event streams (--servers nudge-sse,nchan-sse): one request, a body that never ends.
NUDGE_SSE_SUB = ('GET /v1/stream?types=INBOX&ping=0&device=d{device} HTTP/1.1\\r\\nHost: bench\\r\\n'
                 'Authorization: Bearer {token}\\r\\nAccept: text/event-stream\\r\\n\\r\\n')
NCHAN_SSE_SUB = ('GET /es/u{user} HTTP/1.1\\r\\nHost: bench\\r\\n'
                 'Accept: text/event-stream\\r\\n\\r\\n')
# Held WebSockets (--servers nudge-ws,nchan-ws): the upgrade, then frames; {wskey}
# is each connection's Sec-WebSocket-Key (loadgen checks the 101's accept).
NUDGE_WS_SUB = ('GET /v1/ws?device=d{device} HTTP/1.1\\r\\nHost: bench\\r\\n'
                'Authorization: Bearer {token}\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'
                'Sec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: {wskey}\\r\\n'
                'Sec-WebSocket-Protocol: jmap\\r\\n\\r\\n')
# The client's first message on /v1/ws (RFC 8887 4.3.5): push the INBOX's changes.
NUDGE_WS_ENABLE = '{"@type":"WebSocketPushEnable","dataTypes":["INBOX"]}'
NCHAN_WS_SUB = ('GET /ws/u{user} HTTP/1.1\\r\\nHost: bench\\r\\nUpgrade: websocket\\r\\n'
                'Connection: Upgrade\\r\\nSec-WebSocket-Version: 13\\r\\n'
                'Sec-WebSocket-Key: {wskey}\\r\\n\\r\\n')
NCHAN_PUB = ('POST /pub/{prefix}{target} HTTP/1.1\\r\\nHost: bench\\r\\n'
             'Content-Length: {len}\\r\\n\\r\\n{seq}')


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def pss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def rss_kib(pids):
    return sum(benchlib.rss_kib(pid) for pid in pids)


def cpu_by_pid(pids):
    """{pid: utime+stime in seconds} of the processes still alive."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def cpu_since(before, srv):
    """CPU seconds the server's processes used since 'before' (cpu_by_pid), and
    how many of those processes died meanwhile. A process that died takes its
    CPU since 'before' with it (an underestimate, flagged); one started since
    (a restarted worker) counts whole."""
    after = cpu_by_pid(srv.pids())
    used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return used, len(set(before) - set(after))


def cpu_per(before, srv, count):
    """Server CPU since 'before' per one of 'count' things done, in us; None if a
    server process died meanwhile (its CPU went with it). CPU time moves less
    than latency and throughput when other work shares the cores."""
    used, died = cpu_since(before, srv)
    return None if died or count == 0 else used / count * 1e6


def busy_s():
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle, iowait
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(pids):
    """utime+stime of these processes and of the children they have reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                w = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in w[11:15])  # utime stime cutime cstime
        except FileNotFoundError:
            pass
    return total / tick


def listen_overflows():
    """TcpExtListenOverflows: connections dropped because an accept queue was full."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], values.split()[1:]))
            return int(d.get("ListenOverflows", 0))
    return 0


def sockstat_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()
                return int(w[w.index("mem") + 1])
    return 0


# Slab caches a held connection's sockets use, on each end: the TCP socket,
# its inode, its file, its dentry and the epoll item that watches it.
SOCKET_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq")


def slab_kib():
    """Bytes in SOCKET_CACHES (active objects x object size, /proc/slabinfo, root
    only), in KiB; else the whole Slab of /proc/meminfo, which other work on the
    machine moves too."""
    try:
        total = 0
        with open("/proc/slabinfo") as f:
            for line in f:
                w = line.split()
                if w and w[0] in SOCKET_CACHES:
                    total += int(w[1]) * int(w[3])
        return total // 1024
    except (OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Slab:"):
                    return int(line.split()[1])
    return 0


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


# What one held connection costs at most, to decide whether a point fits in
# memory before starting it: user space (nchan ~13 KB, nudge ~1 KB) plus the
# kernel's ~8 KB for the two sockets and loadgen's ~100 bytes, with a margin.
NEEDS_PER_CONN = {"floor": 100 + 8500, "nudge": 1200 + 8500, "nchan": 14000 + 8500,
                  "nudge-sse": 2000 + 8500, "nchan-sse": 14000 + 8500,
                  "nudge-ws": 2000 + 8500, "nchan-ws": 16000 + 8500}


def percentile(values, p):
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


# ---------------------------------------------------------------- servers

def keep_log(args, kind, text):
    """The server's log of the last run of 'kind' stays in --logdir for a post-mortem."""
    os.makedirs(args.logdir, exist_ok=True)
    with open(os.path.join(args.logdir, f"{kind}.log"), "w") as f:
        f.write(text)


class Nudge:
    name = "nudge"
    answer = "state"
    sub_tpl, pub_tpl, pub_item = NUDGE_SUB, NUDGE_PUB, NUDGE_ITEM
    batches = True

    def __init__(self, args, workers, n_users, hb):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="nudge-cmp-")
        self.port = free_port()
        self.conf = os.path.join(self.tmp, "nudged.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[server]
listen = 127.0.0.1:{self.port}
data_dir = {self.tmp}/var
workers = {workers}
max_connections = {args.max_conns}
log_level = warn
header_timeout = 60
keepalive_timeout = 600
[heartbeat]
min = 1
max = 3540
[sessions]
per_user_limit = {max(32, args.devices)}
[store]
backend = {args.store}
[udp]
listen =
""")
        self.config_text = open(self.conf).read()
        self.log = open(os.path.join(self.tmp, "nudged.log"), "w+", errors="replace")
        self.proc = subprocess.Popen([args.nudged, "-c", self.conf], stdout=self.log,
                                     stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if http(self.port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            sys.exit("nudged did not start:\n" + self.log_text())
        # One token per user, u0 .. u<n_users-1>, line k for user k (what loadgen's {token} reads).
        self.tokens = os.path.join(self.tmp, "tokens")
        with open(self.tokens, "w") as f:
            subprocess.run([args.nudge, "token", "-c", self.conf, "--user-prefix", "u",
                            "--count", str(n_users)], stdout=f, check=True)
        self.admin = self._token("--admin")
        self.ptoken = self._token("--publisher")
        # The workers are up once /v1/admin/workers lists them all.
        while time.time() < deadline:
            st, body = http(self.port, "GET", "/v1/admin/workers", self.admin)
            if st == 200 and all(w.get("up") for w in json.loads(body)["workers"]):
                break
            time.sleep(0.05)

    def _token(self, *a):
        return subprocess.run([self.args.nudge, "token", "-c", self.conf, *a], check=True,
                              capture_output=True, text=True).stdout.strip()

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def held(self):
        _, text = http(self.port, "GET", "/metrics", self.admin)
        m = re.search(rb"^nudge_pings_held (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self.log_text()
        self.log.close()
        keep_log(self.args, "nudge", text)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return text


class Nchan:
    name = "nchan"
    answer = "message"
    sub_tpl, pub_tpl, pub_item = NCHAN_SUB, NCHAN_PUB, None
    # A publisher location takes one channel id: one message per request.
    batches = False
    tokens = None
    ptoken = None

    def __init__(self, args, workers, n_users, hb):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="nchan-cmp-")
        self.port = free_port()
        # Channels and their messages live in nchan's shared memory: ~1 KB a
        # channel with its buffered messages, and the throughput phase's.
        shm_mb = max(256, (n_users * 4) // 1024 + 128)
        with open(os.path.join(BENCH, "nginx-nchan.conf")) as f:
            conf = f.read()
        for k, v in {"@PREFIX@": self.tmp, "@WORKERS@": str(workers), "@PORT@": str(self.port),
                     "@TIMEOUT@": str(hb), "@SHM@": f"{shm_mb}M"}.items():
            conf = conf.replace(k, v)
        self.conf = os.path.join(self.tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.config_text = conf
        self.log_path = os.path.join(self.tmp, "error.log")
        self.proc = subprocess.Popen([args.nginx, "-p", self.tmp, "-c", self.conf,
                                      "-e", self.log_path, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if http(self.port, "GET", "/nchan_status")[0] == 200 and \
                        len(children(self.proc.pid)) >= workers:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            self.stop()
            sys.exit("nginx did not start")
        if self.proc.poll() is not None:
            sys.exit("nginx exited:\n" + self.log_text())

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def held(self):
        try:
            _, text = http(self.port, "GET", "/nchan_status")
        except OSError:
            return -1  # a worker crashed while answering
        m = re.search(rb"^subscribers: (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self.log_text()
        keep_log(self.args, "nchan", text)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return text


class NudgeSSE(Nudge):
    """nudged with one held GET /v1/stream per device instead of a held ping."""
    name = "nudge-sse"
    answer = "sse-state"
    sub_tpl = NUDGE_SSE_SUB

    def held(self):
        _, text = http(self.port, "GET", "/metrics", self.admin)
        m = re.search(rb"^nudge_streams_held (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0


class NchanSSE(Nchan):
    """nginx+nchan with one EventSource subscriber (GET /es/<channel>) per device."""
    name = "nchan-sse"
    answer = "sse-message"
    sub_tpl = NCHAN_SSE_SUB


class NudgeWS(Nudge):
    """nudged with one held WebSocket (GET /v1/ws, JMAP push) per device."""
    name = "nudge-ws"
    answer = "ws-state"
    sub_tpl = NUDGE_WS_SUB
    ws_send = NUDGE_WS_ENABLE

    def held(self):
        """WebSockets open and told what to push: nudged counts one held from
        its 101 (nudge_ws_held), and pushes only after the client's
        WebSocketPushEnable, without a pushState only what changes after it;
        each client sends that one message, so the messages read so far
        (nudge_ws_messages_total) bound how many are ready."""
        _, text = http(self.port, "GET", "/metrics", self.admin)
        held = re.search(rb"^nudge_ws_held (\d+)$", text, re.M)
        told = re.search(rb"^nudge_ws_messages_total (\d+)$", text, re.M)
        return min(int(held.group(1)), int(told.group(1))) if held and told else 0


class NchanWS(Nchan):
    """nginx+nchan with one WebSocket subscriber (GET /ws/<channel>) per device."""
    name = "nchan-ws"
    answer = "ws-message"
    sub_tpl = NCHAN_WS_SUB


SERVERS = {"nudge": Nudge, "nchan": Nchan, "nudge-sse": NudgeSSE, "nchan-sse": NchanSSE,
           "nudge-ws": NudgeWS, "nchan-ws": NchanWS}


# ---------------------------------------------------------------- loadgen

class Loadgen:
    def __init__(self, args, srv, procs, hb):
        cmd = [args.loadgen, "--port", str(srv.port), "--procs", str(procs),
               "--sources", str(SOURCES), "--sub", srv.sub_tpl, "--pub", srv.pub_tpl,
               "--answer", srv.answer, "--hb", str(hb)]
        if srv.tokens:
            cmd += ["--tokens", srv.tokens]
        if srv.ptoken:
            cmd += ["--ptoken", srv.ptoken]
        if srv.pub_item:
            cmd += ["--pub-item", srv.pub_item]
        if getattr(srv, "ws_send", None):
            cmd += ["--ws-send", srv.ws_send]
        self.errlog = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errlog, text=True, bufsize=1)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            sys.exit("loadgen did not start: " + ready + self.stderr())

    def stderr(self):
        self.errlog.seek(0)
        return self.errlog.read()

    def cmd(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"loadgen: {line!r} -> {reply!r}\n{self.stderr()[-2000:]}")
        return {k: int(v) for k, v in (w.split("=", 1) for w in reply.split()[1:])}

    def close(self):
        try:
            self.cmd("quit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def read_latencies(path, procs, t0):
    """Every delivered connection's latency in ms (sorted), and the count of undelivered."""
    lat, missing = [], 0
    for i in range(procs):
        p = f"{path}.{i}"
        with open(p, "rb") as f:
            data = f.read()
        os.unlink(p)
        for (t,) in struct.iter_unpack("<Q", data):
            if t == 0:
                missing += 1
            else:
                lat.append((t - t0) / 1e6)
    lat.sort()
    return lat, missing


def wait_held(srv, want, limit, lg=None):
    """Until the server holds 'want'; with a WebSocket, also until loadgen has
    read every 101 (and so sent its first message, nudge's push enable): a
    server may count a WebSocket held from its 101, before it is told what
    to push. The time the server reached 'want'."""
    deadline = time.monotonic() + limit
    n = srv.held()
    while n < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{srv.name}: only {n} of {want} held after {limit} s")
        time.sleep(0.02)
        n = srv.held()
    t = time.monotonic()
    if lg is not None and srv.answer.startswith("ws-"):
        while (k := lg.cmd("stats")["streams"]) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{srv.name}: only {k} of {want} upgraded after {limit} s")
            time.sleep(0.02)
    return t


# ---------------------------------------------------------------- one point

def layout(args, n):
    """Server processes and loadgen processes for N held connections."""
    devices = min(args.devices, n)
    workers = args.workers or max(2, math.ceil((n / 0.9 + devices) / PER_PROCESS))
    procs = max(2, math.ceil((n + devices + args.publishers_high) / PER_PROCESS))
    return workers, procs


def run_floor(args, n):
    """The machine's own fan-out floor (bench/floor.c): N raw loopback TCP
    connections between as many processes as the servers and loadgen use,
    one fixed answer written to each with nothing else to do, with and
    without a re-poll after each answer. The median round of --floor-rounds
    by p99."""
    workers, procs = layout(args, n)
    r = {"n": n, "workers": workers, "procs": procs}
    for key, extra in (("repoll", []), ("plain", ["--no-repoll"])):
        cmd = [args.floor, "--conns", str(n), "--servers", str(workers), "--clients", str(procs),
               "--sources", str(SOURCES), "--rounds", str(args.floor_rounds),
               "--limit", str(args.limit * 1000)] + extra
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit * 4)
        rounds = [dict(kv.split("=") for kv in line.split()) for line in p.stdout.splitlines()
                  if line.startswith("round=")]
        if p.returncode != 0 or len(rounds) != args.floor_rounds:
            raise RuntimeError(f"floor failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        rounds.sort(key=lambda x: float(x["p99_ms"]))
        m = rounds[len(rounds) // 2]
        r[key] = tuple(float(m[k]) for k in ("p50_ms", "p99_ms", "max_ms",
                                              "server_cpu_us", "client_cpu_us"))
        r[key + "_p99s"] = [float(x["p99_ms"]) for x in rounds]
        log(f"floor ({key}): N={n}, {workers}+{procs} processes: p50 {r[key][0]:.1f} ms, "
            f"p99 {r[key][1]:.1f}, max {r[key][2]:.1f}; server CPU {r[key][3]:.1f} us per "
            f"connection")
    return r


def run_point(args, kind, n):
    users = n // args.devices_per_user
    devices = min(args.devices, n)
    workers, procs = layout(args, n)
    # The heartbeat must outlast the ramp and each fan-out, or pings expire
    # in the middle of one and renew, which adds their load to it and makes
    # it longer still: at 1M on 2 cores the ramp takes ~70 s and a fan-out
    # 1-2 minutes (a 100 s heartbeat made them 2-6). It stays below nudged's
    # keepalive_idle (300 s by default): 1M connections re-armed by one
    # fan-out send their keepalive probes in one burst, loopback's backlog
    # drops part of them, and TCP_USER_TIMEOUT closed ~2% of the connections
    # (bench/README.md, "The 1M point"). The idle window must see each ping
    # renew.
    hb = args.hb if n <= 100000 else max(args.hb, min(math.ceil(n / 2500), 280))
    idle = max(args.idle, hb + 20)
    tmp = tempfile.mkdtemp(prefix="cmp-lat-")
    r = {"n": n, "users": users, "workers": workers, "procs": procs, "devices": devices,
         "hb": hb, "idle": idle}
    log(f"{kind}: N={n}, {users} users, {workers} server processes, {procs} loadgen processes")
    busy0, self0 = busy_s(), sum(os.times()[:4])
    srv = SERVERS[kind](args, workers, users + 1, hb)
    lg = None
    try:
        r["config"] = srv.config_text
        time.sleep(0.5)
        pids_start = srv.pids()
        pss0, rss0 = pss_kib(srv.pids()), rss_kib(srv.pids())
        sock0, slab0 = sockstat_pages(), slab_kib()
        lg = Loadgen(args, srv, procs, hb)

        # Held connections, the rate they are taken at and the server's CPU for it.
        c_ramp = cpu_by_pid(srv.pids())
        ovf0 = listen_overflows()
        t0 = time.monotonic()
        lg.cmd(f"open 0 0 {users} {args.devices_per_user}")
        t1 = wait_held(srv, n, args.limit, lg)
        r["hold_s"] = t1 - t0
        r["churn"] = n / (t1 - t0)
        r["accept_cpu_us"] = cpu_since(c_ramp, srv)[0] / n * 1e6
        r["overflows"] = listen_overflows() - ovf0
        time.sleep(1.0)
        pids = srv.pids()
        r["pss_before"], r["pss_after"] = pss0, pss_kib(pids)
        r["rss_before"], r["rss_after"] = rss0, rss_kib(pids)
        r["mem_per_conn"] = (r["pss_after"] - pss0) * 1024 / n
        r["sock_per_conn"] = (sockstat_pages() - sock0) * 4096 / n
        r["slab_per_conn"] = (slab_kib() - slab0) * 1024 / n
        log(f"{kind}: {n} held in {r['hold_s']:.1f} s; {r['mem_per_conn']:.0f} B/conn user space")

        # Fan-out: one publish to each of the users, every device must answer.
        lost = 0
        # A ping re-armed by the last fan-out expires hb after that fan-out
        # began, at the earliest: the quiet window below must end before.
        t_fanout = time.monotonic()
        c0 = cpu_by_pid(srv.pids())
        pub = lg.cmd(f"pub u 0 {users} {users} 1 {args.publishers}")
        w = lg.cmd(f"wait 0 1 {args.limit * 1000} {tmp}/fan")
        r["fan_cpu_us"] = cpu_per(c0, srv, n)
        lat, _ = read_latencies(f"{tmp}/fan", procs, pub["min_t0"])
        r["fan"] = (percentile(lat, 50), percentile(lat, 99), lat[-1] if lat else float("nan"))
        r["fan_pub_s"] = (pub["max_t1"] - pub["min_t0"]) / 1e9
        r["fan_bad"] = pub["bad"]
        lost += w["lost"]
        log(f"{kind}: fan-out to {users} users: p50 {r['fan'][0]:.1f} ms, p99 {r['fan'][1]:.1f}, "
            f"max {r['fan'][2]:.1f}; lost {w['lost']}")
        rounds = 1
        if srv.batches:
            # The same fan-out with the events in batches (POST /v1/events takes an array).
            rounds = 2
            t_fanout = time.monotonic()
            c0 = cpu_by_pid(srv.pids())
            pub = lg.cmd(f"pub u 0 {users} {users} 2 {args.publishers} {args.batch}")
            w = lg.cmd(f"wait 0 2 {args.limit * 1000} {tmp}/fanb")
            r["fanb_cpu_us"] = cpu_per(c0, srv, n)
            lat, _ = read_latencies(f"{tmp}/fanb", procs, pub["min_t0"])
            r["fanb"] = (percentile(lat, 50), percentile(lat, 99),
                         lat[-1] if lat else float("nan"))
            lost += w["lost"]
            log(f"{kind}: fan-out in batches of {args.batch}: p50 {r['fanb'][0]:.1f} ms, "
                f"p99 {r['fanb'][1]:.1f}, max {r['fanb'][2]:.1f}; lost {w['lost']}")
        r["rounds"] = rounds

        # One user, D devices.
        lg.cmd(f"open 1 {users} 1 {devices}")
        wait_held(srv, n + devices, args.limit, lg)
        c0 = cpu_by_pid(srv.pids())
        pub = lg.cmd(f"pub u {users} 1 1 1 1")
        w = lg.cmd(f"wait 1 1 {args.limit * 1000} {tmp}/one")
        r["one_cpu_us"] = cpu_per(c0, srv, devices)
        lat, _ = read_latencies(f"{tmp}/one", procs, pub["min_t0"])
        r["one"] = (percentile(lat, 50), percentile(lat, 99), lat[-1] if lat else float("nan"))
        lost += w["lost"]
        log(f"{kind}: one user, {devices} devices: p99 {r['one'][1]:.1f} ms, "
            f"max {r['one'][2]:.1f}; lost {w['lost']}")

        # Publish throughput with everything held, at two concurrencies: one
        # publish in flight per connection, so few connections measure the
        # round trip (process hand-offs and wake-ups) and many the CPU.
        r["pub_rate"] = {}
        r["pub_cpu_us"] = {}
        r["pub_bad"] = 0
        for c in (args.publishers, args.publishers_high) if "throughput" not in args.skip else ():
            c0 = cpu_by_pid(srv.pids())
            pub = lg.cmd(f"pub p 0 10000 {args.events} 1 {c}")
            r["pub_rate"][c] = args.events / ((pub["max_t1"] - pub["min_t0"]) / 1e9)
            r["pub_cpu_us"][c] = cpu_per(c0, srv, args.events)
            r["pub_bad"] += pub["bad"]
            log(f"{kind}: {args.events} publishes on {c} connections: {r['pub_rate'][c]:,.0f}/s, "
                f"{pub['bad']} refused")

        # Idle, nothing expiring (the last fan-out re-armed every connection
        # after t_fanout, so none expires before t_fanout + hb).
        quiet = min(args.quiet, hb - (time.monotonic() - t_fanout) - 2)
        if quiet >= 1 and "idle" not in args.skip:
            c0 = cpu_by_pid(srv.pids())
            s0 = lg.cmd("stats")
            time.sleep(quiet)
            s1 = lg.cmd("stats")
            used, died = cpu_since(c0, srv)
            r["quiet"] = (quiet, used if not died else None, s1["answers"] - s0["answers"])
        else:
            r["quiet"] = None

        # Idle with heartbeats expiring and renewed.
        c0 = cpu_by_pid(srv.pids())
        s0 = lg.cmd("stats")
        if "idle" in args.skip:
            idle = r["idle"] = 0
        time.sleep(idle)
        s1 = lg.cmd("stats")
        used, died = cpu_since(c0, srv)
        r["idle_cpu"] = used if not died else None
        r["idle_died"] = died
        r["renewals"] = s1["renewals"] - s0["renewals"]

        log(f"{kind}: {idle} s idle: {used:.2f} CPU s, {r['renewals']} renewals, "
            f"{died} server processes died")

        # The rest of the ledger: deliveries to every device, at the end.
        st = lg.cmd("stats")
        r["lost"] = lost + st["gaps"]
        r["errors"] = st["errors"]
        r["reconnects"] = st["reconnects"]
        r["dead"] = st["dead"]
        r["dups"] = st["dups"]
        r["held_end"] = srv.held()
        r["died"] = len(set(pids_start) - set(srv.pids()))
        r["loadgen_stderr"] = lg.stderr()[-1000:]
        # The machine may be shared: CPU used meanwhile by processes other than
        # this server, loadgen and this script.
        ours = (own_cpu_s(srv.pids()) + own_cpu_s([lg.proc.pid] + children(lg.proc.pid)) +
                sum(os.times()[:4]) - self0)
        r["other_cpu"] = max(0.0, busy_s() - busy0 - ours)
        r["wall"] = time.monotonic() - t0
    finally:
        if lg is not None:
            lg.close()
        text = srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        r["server_log_tail"] = "\n".join(text.splitlines()[-5:])
    return r


# ---------------------------------------------------------------- report

def fmt_ms(v):
    return f"{v:.1f} ms" if v == v else "-"


def fmt_us(v):
    return f"{v:.1f} us"


def ratio(a, b):
    if a is None or b is None or b == 0 or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


def table(n, a, b, batch, pubs):
    """Markdown rows for one N; a is nudge, b nchan (either may be None)."""
    rows = []

    def row(label, key_fn, fmt, with_ratio=True):
        va = key_fn(a) if a else None
        vb = key_fn(b) if b else None
        rows.append(f"| {label} | {fmt(va) if va is not None else '-'} | "
                    f"{fmt(vb) if vb is not None else '-'} | "
                    f"{ratio(va, vb) if with_ratio else '-'} |")

    x = a or b
    rows.append(f"| measure (N = {n:,} held, {x['users']:,} users, {x['workers']} server "
                f"processes) | nudge | nchan | nudge / nchan |")
    rows.append("|---|---|---|---|")
    row("user-space memory per held connection (PSS)", lambda r: r["mem_per_conn"],
        lambda v: f"{v:,.0f} B")
    row("server PSS with all held (all processes)", lambda r: r["pss_after"],
        lambda v: f"{v / 1024:,.1f} MiB")
    row("kernel socket buffers per connection (sockstat; paid alike)",
        lambda r: r["sock_per_conn"], lambda v: f"{v:,.0f} B", False)
    row("kernel socket slab per connection, both ends (paid alike)",
        lambda r: r["slab_per_conn"], lambda v: f"{v:,.0f} B", False)
    for i, label in enumerate(("p50", "p99", "max")):
        row(f"fan-out to {x['users']:,} users, one publish request each, {label}",
            lambda r: r["fan"][i], fmt_ms)
    row("server CPU for that fan-out, per device (publish, answer, re-poll)",
        lambda r: r.get("fan_cpu_us"), fmt_us)
    for i, label in enumerate(("p50", "p99", "max")):
        row(f"fan-out to {x['users']:,} users, events in batches of {batch} (nudge only), {label}",
            lambda r: r["fanb"][i] if "fanb" in r else None, fmt_ms)
    row("server CPU for the batched fan-out, per device (nudge only)",
        lambda r: r.get("fanb_cpu_us"), fmt_us)
    row(f"one user with {x['devices']:,} devices, p50", lambda r: r["one"][0], fmt_ms)
    row(f"one user with {x['devices']:,} devices, p99", lambda r: r["one"][1], fmt_ms)
    row(f"one user with {x['devices']:,} devices, max", lambda r: r["one"][2], fmt_ms)
    row("server CPU for that publish, per device (answer, re-poll)",
        lambda r: r.get("one_cpu_us"), fmt_us)
    for c in pubs:
        row(f"publish throughput, single-event publishes, {c} connections",
            lambda r: r["pub_rate"].get(c, r["pub_rate"].get(str(c))), lambda v: f"{v:,.0f}/s")
        row(f"server CPU per publish, {c} connections",
            lambda r: r.get("pub_cpu_us", {}).get(c, r.get("pub_cpu_us", {}).get(str(c))),
            fmt_us)
    row("publishes refused", lambda r: r["pub_bad"], str, False)
    row("idle CPU, nothing expiring", lambda r: r["quiet"][1] / r["quiet"][0] * 60
        if r.get("quiet") and r["quiet"][1] is not None else None,
        lambda v: f"{v:.2f} s per 60 s")
    row(f"CPU over {x['idle']} s idle, heartbeats of {x['hb']} s renewing",
        lambda r: r["idle_cpu"],
        lambda v: f"{v:.2f} s")
    row("renewals in that window", lambda r: r["renewals"], lambda v: f"{v:,}", False)
    row("CPU per renewal", lambda r: r["idle_cpu"] / r["renewals"] * 1e6
        if r["renewals"] and r["idle_cpu"] is not None else None, lambda v: f"{v:.1f} us")
    row("churn: held connections accepted per second", lambda r: r["churn"],
        lambda v: f"{v:,.0f}/s")
    row("server CPU per new held connection (accept, request, hold)",
        lambda r: r.get("accept_cpu_us"), lambda v: f"{v:.1f} us")
    row("accept-queue overflows meanwhile (each costs a 1 s SYN retransmit)",
        lambda r: r.get("overflows"), lambda v: f"{v:,}", False)
    row("lost (publishes a device never got)", lambda r: r["lost"], lambda v: f"{v:,}")
    row("server processes that died during the run", lambda r: r["died"], str, False)
    row("CPU used by other processes meanwhile (of the run's wall time x cores)",
        lambda r: f"{r['other_cpu']:.0f} s of {r['wall'] * os.cpu_count():.0f} s"
        if "other_cpu" in r else None, str, False)
    row("unexpected answers / reconnects / connections given up",
        lambda r: f"{r['errors']:,} / {r['reconnects']:,} / {r['dead']:,}", str, False)
    return rows


# The streams tables' columns: nudge's two kinds, then nchan's two; the ratios
# are the second column over the first and over the fourth.
STREAM_COLS = (("nudge", "nudge ping"), ("nudge-sse", "nudge SSE"), ("nchan", "nchan long-poll"),
               ("nchan-sse", "nchan EventSource"))
STREAM_RATIOS = ("SSE / ping", "nudge SSE / nchan ES")
WS_COLS = (("nudge-sse", "nudge SSE"), ("nudge-ws", "nudge WebSocket"),
           ("nchan-sse", "nchan EventSource"), ("nchan-ws", "nchan WebSocket"))
WS_RATIOS = ("WS / SSE", "nudge WS / nchan WS")


def streams_table(n, res, batch, pubs, cols=STREAM_COLS, ratios=STREAM_RATIOS):
    """Markdown rows for one N: four kinds measured alike in one run (each may
    be missing): held pings, held SSE streams, nchan's long-polls and
    EventSource subscribers; or (WS_COLS) both servers' SSE and WebSockets."""
    a, s, b, e = (res.get(k) for k, _ in cols)
    x = s or a or e or b
    h = [label for _, label in cols]
    rows = [f"| measure (N = {n:,} held, {x['users']:,} users, {x['workers']} server processes) "
            f"| {h[0]} | {h[1]} | {ratios[0]} | {h[2]} | {h[3]} | {ratios[1]} |",
            "|---|---|---|---|---|---|---|"]

    def row(label, key_fn, fmt, with_ratio=True):
        v = [key_fn(r) if r else None for r in (a, s, b, e)]
        f = [fmt(x) if x is not None else "-" for x in v]
        rr = (ratio(v[1], v[0]), ratio(v[1], v[3])) if with_ratio else ("-", "-")
        rows.append(f"| {label} | {f[0]} | {f[1]} | {rr[0]} | {f[2]} | {f[3]} | {rr[1]} |")

    row("user-space memory per held connection (PSS)", lambda r: r["mem_per_conn"],
        lambda v: f"{v:,.0f} B")
    row("server PSS with all held (all processes)", lambda r: r["pss_after"],
        lambda v: f"{v / 1024:,.1f} MiB")
    row("kernel socket buffers per connection (sockstat)", lambda r: r["sock_per_conn"],
        lambda v: f"{v:,.0f} B")
    row("kernel socket slab per connection, both ends", lambda r: r["slab_per_conn"],
        lambda v: f"{v:,.0f} B")
    for i, label in enumerate(("p50", "p99", "max")):
        row(f"fan-out to {x['users']:,} users, one publish request each, {label}",
            lambda r: r["fan"][i], fmt_ms)
    row("server CPU for that fan-out, per device", lambda r: r.get("fan_cpu_us"), fmt_us)
    for i, label in enumerate(("p50", "p99", "max")):
        row(f"fan-out, events in batches of {batch} (nudge only), {label}",
            lambda r: r["fanb"][i] if "fanb" in r else None, fmt_ms)
    for i, label in enumerate(("p50", "p99", "max")):
        row(f"one user with {x['devices']:,} devices, {label}", lambda r: r["one"][i], fmt_ms)
    for c in pubs:
        row(f"publish throughput, single-event publishes, {c} connections",
            lambda r: r["pub_rate"].get(c, r["pub_rate"].get(str(c))), lambda v: f"{v:,.0f}/s")
    row("churn: held connections accepted per second", lambda r: r["churn"],
        lambda v: f"{v:,.0f}/s")
    row("server CPU per new held connection", lambda r: r.get("accept_cpu_us"),
        lambda v: f"{v:.1f} us")
    row("server CPU over the idle window", lambda r: r["idle_cpu"] if r.get("idle") else None,
        lambda v: f"{v:.2f} s")
    row("renewals in it (pings: expired and re-polled; WebSocket: pings answered)",
        lambda r: r["renewals"] if r.get("idle") else None, lambda v: f"{v:,}", False)
    row("lost (publishes a device never got)", lambda r: r["lost"], lambda v: f"{v:,}", False)
    row("duplicates", lambda r: r["dups"], lambda v: f"{v:,}", False)
    row("server processes that died during the run", lambda r: r["died"], str, False)
    row("CPU used by other processes meanwhile (of the point's wall time x cores)",
        lambda r: f"{r['other_cpu']:.0f} s of {r['wall'] * os.cpu_count():.0f} s"
        if "other_cpu" in r else None, str, False)
    row("unexpected answers / reconnects / connections given up",
        lambda r: f"{r['errors']:,} / {r['reconnects']:,} / {r['dead']:,}", str, False)
    return rows


def floor_table(n, f, a, batch):
    """Markdown rows: the machine's fan-out floor for one N beside nudge's
    batched fan-out (a), where the publish requests hardly count."""
    rows = [f"| fan-out floor (N = {n:,}, {f['workers']} + {f['procs']} processes, "
            "bench/floor.c) | p50 | p99 | max | CPU per device, sending side |",
            "|---|---|---|---|---|"]
    for key, label in (("plain", "raw TCP, one fixed answer each, no re-polls"),
                       ("repoll", "raw TCP, one fixed answer each, each re-polled at once")):
        v = f[key]
        rows.append(f"| {label} | {fmt_ms(v[0])} | {fmt_ms(v[1])} | {fmt_ms(v[2])} | "
                    f"{fmt_us(v[3])} |")
    if a and "fanb" in a:
        v = a["fanb"]
        rows.append(f"| nudge, events in batches of {batch}, re-polled at once | {fmt_ms(v[0])} | "
                    f"{fmt_ms(v[1])} | {fmt_ms(v[2])} | {fmt_us(a['fanb_cpu_us'])} |")
        rows.append(f"| nudge / floor with re-polls | {ratio(v[0], f['repoll'][0])} | "
                    f"{ratio(v[1], f['repoll'][1])} | {ratio(v[2], f['repoll'][2])} | "
                    f"{ratio(a['fanb_cpu_us'], f['repoll'][3])} |")
    return rows


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    try:
        deb = open("/etc/debian_version").read().strip()
    except OSError:
        deb = "?"
    # compare.py --servers nudge runs without nginx installed.
    nginx_v = (subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
               if shutil.which("nginx") else "no nginx")
    nchan_v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"],
                             capture_output=True, text=True).stdout.strip() or "none"
    return (f"Debian {deb}, Linux {platform.release()}, {os.cpu_count()} x {cpu}, "
            f"{mem:.1f} GiB RAM; {nginx_v.replace('nginx version: ', '')}, "
            f"libnginx-mod-nchan {nchan_v}; descriptor limit {os.sysconf('SC_OPEN_MAX')} "
            "per process")


def chart(results, path):
    """PNG: fan-out p50/p99/max and bytes per connection versus N, both servers."""
    if shutil.which("gnuplot") is None:
        log("gnuplot missing: no chart")
        return False
    dat = os.path.splitext(path)[0] + ".dat"
    with open(dat, "w") as f:
        f.write("# N nudge_p50 nudge_p99 nudge_max nudge_bytes nchan_p50 nchan_p99 nchan_max "
                "nchan_bytes nudge_batched_p50 nudge_batched_p99 nudge_batched_max "
                "floor_p50 floor_p99 floor_max\n")
        for n in sorted(results):
            cols = [str(n)]
            for kind in ("nudge", "nchan"):
                r = results[n].get(kind)
                if r:
                    cols += [f"{v:.3f}" for v in r["fan"]] + [f"{r['mem_per_conn']:.0f}"]
                else:
                    cols += ["NaN"] * 4
            r = results[n].get("nudge")
            cols += [f"{v:.3f}" for v in r["fanb"]] if r and "fanb" in r else ["NaN"] * 3
            r = results[n].get("floor")
            cols += [f"{v:.3f}" for v in r["repoll"][:3]] if r else ["NaN"] * 3
            f.write(" ".join(cols) + "\n")
    script = f"""
set terminal pngcairo size 1200,480 font ",10" noenhanced
set output '{path}'
set multiplot layout 1,2 title 'nudge vs nginx+nchan, one held long-poll per user (loopback, {os.cpu_count()} cores)'
set logscale x
set xlabel 'held connections N'
set grid
set key top left
set format x '%.0s%c'
set title 'fan-out: one publish per user, latency to each device'
set ylabel 'ms'
set logscale y
plot '{dat}' u 1:2 w lp lw 2 lc rgb '#1f77b4' pt 7 t 'nudge p50', \\
     '' u 1:3 w lp lw 2 lc rgb '#1f77b4' pt 5 dt 2 t 'nudge p99', \\
     '' u 1:4 w lp lw 1 lc rgb '#1f77b4' pt 9 dt 3 t 'nudge max', \\
     '' u 1:6 w lp lw 2 lc rgb '#d62728' pt 7 t 'nchan p50', \\
     '' u 1:7 w lp lw 2 lc rgb '#d62728' pt 5 dt 2 t 'nchan p99', \\
     '' u 1:8 w lp lw 1 lc rgb '#d62728' pt 9 dt 3 t 'nchan max', \\
     '' u 1:11 w lp lw 2 lc rgb '#2ca02c' pt 5 dt 2 t 'nudge p99, batches of 1000', \\
     '' u 1:14 w lp lw 2 lc rgb '#7f7f7f' pt 5 dt 2 t 'floor p99: raw TCP, no server'
set title 'user-space memory per held connection (PSS)'
set ylabel 'bytes'
unset logscale y
set yrange [0:*]
plot '{dat}' u 1:5 w lp lw 2 lc rgb '#1f77b4' pt 7 t 'nudge', \\
     '' u 1:9 w lp lw 2 lc rgb '#d62728' pt 7 t 'nchan'
unset multiplot
"""
    p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if p.returncode != 0:
        log("gnuplot failed: " + p.stderr)
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="10000,100000", help="held connections, comma separated")
    ap.add_argument("--devices-per-user", type=int, default=1,
                    help="devices of each user in the fan-out (U = N / this)")
    ap.add_argument("--devices", type=int, default=5000, help="D, devices of the single user")
    ap.add_argument("--publishers", type=int, default=8, help="C, keep-alive publishers")
    ap.add_argument("--publishers-high", type=int, default=32,
                    help="the second concurrency of the throughput phase")
    ap.add_argument("--events", type=int, default=50000, help="E, publishes for throughput")
    ap.add_argument("--batch", type=int, default=1000,
                    help="events per POST /v1/events in nudge's batched fan-out")
    ap.add_argument("--idle", type=int, default=60, help="idle window, seconds")
    ap.add_argument("--quiet", type=int, default=5, help="idle with nothing expiring, seconds")
    ap.add_argument("--hb", type=int, default=30,
                    help="heartbeat (nudge) and long-poll timeout (nchan), seconds")
    ap.add_argument("--workers", type=int, default=0,
                    help="server processes for both (0: enough for ~15k connections each)")
    ap.add_argument("--store", default="memory", choices=["memory", "sqlite"],
                    help="nudged's store (nchan keeps its channels in memory)")
    ap.add_argument("--servers", default="floor,nudge,nchan",
                    help="what to run, comma separated: floor (bench/floor.c), nudge, nchan, "
                         "nudge-sse (held GET /v1/stream), nchan-sse (EventSource), "
                         "nudge-ws (held GET /v1/ws), nchan-ws (nchan's WebSocket)")
    ap.add_argument("--skip", default="",
                    help="phases left out, comma separated: throughput, idle")
    ap.add_argument("--floor-rounds", type=int, default=3,
                    help="rounds of the floor's fan-out (the median by p99 is reported)")
    ap.add_argument("--limit", type=int, default=300, help="bound on each phase, seconds")
    ap.add_argument("--out", default=os.path.join(BENCH, "results.md"))
    ap.add_argument("--chart", default=os.path.join(BENCH, "results.png"))
    ap.add_argument("--nudged", default=os.path.join(ROOT, "build/bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "build/bin/nudge"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "build/bin/loadgen"))
    ap.add_argument("--floor", default=os.path.join(ROOT, "build/bin/floor"))
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "nudge-bench-logs"),
                    help="where the servers' logs of the last run are kept")
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    args.max_conns = max(ns) + args.devices + 1000
    servers = args.servers.split(",")
    for kind in servers:
        if kind not in NEEDS_PER_CONN:
            sys.exit(f"compare.py: --servers: '{kind}' is not one of "
                     f"{', '.join(NEEDS_PER_CONN)}")
    args.skip = [x for x in args.skip.split(",") if x]

    started = time.time()
    results = {}
    skipped = []
    for n in ns:
        results[n] = {}
        for kind in servers:
            need = n * NEEDS_PER_CONN[kind] // 1024
            # Leave a fifth of what is free to everything else on the machine.
            if need > mem_available_kib() * 0.8:
                why = (f"{kind} at N={n:,} skipped: it needs about {need / 1024 / 1024:.1f} GiB, "
                       f"more than 80% of the {mem_available_kib() / 1024 / 1024:.1f} GiB "
                       "available")
                log(why)
                skipped.append(why)
                continue
            results[n][kind] = run_floor(args, n) if kind == "floor" else run_point(args, kind, n)
    elapsed = time.time() - started

    out = [f"# nudge vs nginx+nchan — run of {datetime.date.today().isoformat()}", "",
           f"Machine: {machine()}.", "",
           f"Per N: one long-poll per user, heartbeat / long-poll timeout {args.hb} s "
           f"(above N = 100,000: max({args.hb} s, min(N / 2,500 s, 280 s))), "
           f"{args.publishers} keep-alive publishers ({args.publishers_high} for the second "
           f"throughput row), {args.events:,} publishes per throughput row, "
           f"idle window max({args.idle} s, heartbeat + 20 s); nudged store: {args.store}. "
           f"Whole run: {elapsed / 60:.1f} min.", ""]
    out += [f"{why}." for why in skipped] + ([""] if skipped else [])
    for n in ns:
        if not results[n]:
            continue
        if results[n].get("nudge") or results[n].get("nchan"):
            out += table(n, results[n].get("nudge"), results[n].get("nchan"), args.batch,
                         (args.publishers, args.publishers_high)) + [""]
        if results[n].get("nudge-sse") or results[n].get("nchan-sse"):
            out += streams_table(n, results[n], args.batch,
                                 (args.publishers, args.publishers_high)) + [""]
        if results[n].get("nudge-ws") or results[n].get("nchan-ws"):
            out += streams_table(n, results[n], args.batch,
                                 (args.publishers, args.publishers_high), WS_COLS,
                                 WS_RATIOS) + [""]
        if results[n].get("floor"):
            out += floor_table(n, results[n]["floor"], results[n].get("nudge"), args.batch) + [""]
        for kind in results[n]:
            r = results[n][kind]
            if r.get("loadgen_stderr"):
                out += [f"loadgen said, {kind} N={n}:", "", "```", r["loadgen_stderr"].strip(),
                        "```", ""]
    text = "\n".join(out)
    print(text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    if chart(results, args.chart):
        log(f"wrote {args.out} and {args.chart}")
    with open(args.out.replace(".md", ".json"), "w") as f:
        json.dump({str(n): {k: {kk: vv for kk, vv in r.items() if kk != "config"}
                            for k, r in v.items()} for n, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
