#!/usr/bin/env python3
"""UDP registrations: memory, fan-out latency, ack throughput, idle cost.

For the memory store and the SQLite store (a fresh nudged each, in its own
temporary directory, [udp] listen = 127.0.0.1:0), with N registrations:

1. Memory per registration. nudged's VmRSS is read before and after N
   POST /v1/udp registrations, each for its own user and device (the worst
   case: each also creates a user and a device record), all pointing at ONE
   UDP socket of the benchmark; several registrations may share an
   address:port, which nudged allows. Registering is done by --registrars
   processes, each on one keep-alive connection, so the client is not one
   GIL-bound Python thread. The difference divided by N is the user-space
   memory of one registration (the kernel's is not in it: nothing is held
   open per registration).

2. Fan-out latency. One event per user is published in batches of --batch
   events per POST /v1/events on --publishers keep-alive connections (bodies
   built beforehand). Each datagram's arrival is the kernel's receive
   timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME like time.time_ns()), so a
   receiver that falls behind does not add its own delay; the latency of a
   datagram is that timestamp less the time the first publish request was
   sent. Datagrams are matched to their registration by id, and each is
   parsed and its tag verified with the registration's key. nudged's CPU
   time over the fan-out is reported too: next to the wall time it shows
   whether its one loop thread is the limit. A registration whose datagram
   has not arrived LOSS_WAIT_S after the last publish was answered counts
   as lost. The
   receiving socket gets a large buffer (SO_RCVBUFFORCE as root, else
   SO_RCVBUF, which rmem_max caps) and is read by a process of its own; its
   kernel drop count (the drops column of /proc/net/udp) is reported, so
   drops at the receiver are not blamed on nudged.

3. Ack throughput. Every notify is acked (type 2, tagged with the
   registration's key) from the receiving socket; the time runs until the
   first /metrics reading (polled every 20 ms) where nudge_udp_acks_total
   reads N. nudged's UDP socket has the kernel's default receive buffer
   (net.core.rmem_default), so the sender is paced by that socket's queue
   (the rx_queue column of /proc/net/udp), kept under half of it: what is
   measured is how fast nudged takes acks, not how fast the kernel can drop
   them. nudged's socket drops are reported, and so is what an unpaced
   burst of --burst acks (replays by then, rejected after the same parse,
   lookup and HMAC) does to that socket.

4. Idle CPU. With N registrations and nothing pending, nudged's utime+stime
   (/proc/PID/stat, all threads) and its context switches (a wake-up each)
   over --idle seconds: there is no per-registration timer work, so both
   should be about zero.

Usage: bench/udp_fanout.py [--count N] [--store memory|sqlite|both] [--batch N]
                           [--publishers C] [--registrars C] [--ack-on-arrival]
                           [--burst N] [--idle S] [--nudged PATH]
Bounded in count and time (every phase at most PHASE_LIMIT_S), loopback only.
"""
import argparse
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import cpu_s, http, read_response, request, rss_kib, sign_token  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No phase may take longer than this; the whole script stays bounded.
PHASE_LIMIT_S = 120
# A datagram not here this long after the last publish was answered is lost.
# nudged sends a user's datagrams before it answers the publish that caused
# them, so anything later than a few milliseconds is already a failure; the
# first resend would come only after [udp] resend_interval (60 s).
LOSS_WAIT_S = 10
# Linux's values (asm-generic, x86 and arm64 alike); Python's socket module
# does not name them.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# The receiving socket's buffer: loopback accounts each datagram at its
# buffer's true size (about 1 KiB for a 50-byte datagram), so 2 KiB per
# expected datagram leaves room; at least 16 MiB, at most 512 MiB.
RCVBUF_PER_DGRAM = 2048
ACK = 2
NOTIFY = 1
ACK_STEP = 32


def dgram_decode(data, key):
    """The fields of a version-1 datagram (docs/udp.md), or None when its
    layout or its tag is wrong."""
    if len(data) < 46 or data[:3] != b"nd\x01" or len(data) != 45 + data[28]:
        return None
    tag = hmac.new(key, data[:-16], hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(tag, data[-16:]):
        return None
    n = data[28]
    return {"type": data[3], "id": int.from_bytes(data[4:12], "big"),
            "seq": int.from_bytes(data[12:20], "big"), "state": int.from_bytes(data[20:28], "big"),
            "folder": data[29:29 + n]}


def dgram_ack(d, key):
    """The ack of notify d: the same fields, type 2, the registration's tag."""
    head = (b"nd\x01" + bytes([ACK]) + d["id"].to_bytes(8, "big") + d["seq"].to_bytes(8, "big")
            + d["state"].to_bytes(8, "big") + bytes([len(d["folder"])]) + d["folder"])
    return head + hmac.new(key, head, hashlib.sha256).digest()[:16]


def ctx_switches(pid):
    """Context switches of every thread of pid, voluntary and not."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def udp_queue(port):
    """(rx_queue bytes, drops) of the 127.0.0.1:port UDP socket from
    /proc/net/udp, or None when it is not there."""
    local = "0100007F:%04X" % port
    with open("/proc/net/udp") as f:
        for line in f:
            cols = line.split()
            if len(cols) > 12 and cols[1] == local:
                return int(cols[4].split(":")[1], 16), int(cols[12])
    return None


def metrics(port, admin):
    status, text = http(port, "GET", "/metrics", admin)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return {m.group(1).decode(): int(m.group(2))
            for m in re.finditer(rb"^([a-z_]+(?:\{[^}]*\})?) (\d+)$", text, re.M)}


def rejected_total(m):
    """Every nudge_udp_datagrams_rejected_total{reason} of metrics m, summed."""
    return sum(v for k, v in m.items() if k.startswith("nudge_udp_datagrams_rejected_total"))


def wait_metric(port, admin, name, want, limit=PHASE_LIMIT_S):
    """Polls /metrics until 'name' reads at least 'want'; returns the value
    (less than want if the limit passed first)."""
    deadline = time.monotonic() + limit
    while True:
        v = metrics(port, admin).get(name, 0)
        if v >= want or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


class Server:
    """One nudged in its own temporary directory with UDP on and the given store."""

    def __init__(self, args, backend):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="nudge-bench-udp-")
        self.conf = os.path.join(self.tmp, "nudged.conf")
        # One process (workers = 1): this measures one nudged; bench/workers.py
        # compares worker counts. log_level stays info: the ports are read from info lines (events
        # 1001 and 1600). Each registration logs a line; that costs nudged a
        # write per registration, not memory. Bodies up to 1 MiB let --batch
        # grow past the default 64 KiB.
        with open(self.conf, "w") as f:
            f.write(f"[server]\nlisten = 127.0.0.1:0\nworkers = 1\ndata_dir = {self.tmp}/var\nlog_level = info\n"
                    "header_timeout = 60\nmax_body_bytes = 1048576\n"
                    "[udp]\nlisten = 127.0.0.1:0\n"
                    f"[store]\nbackend = {backend}\n")
        os.mkdir(os.path.join(self.tmp, "var"), 0o700)
        self.log = open(os.path.join(self.tmp, "nudged.log"), "w+")
        self.proc = subprocess.Popen([args.nudged, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stderr=self.log, stdout=self.log)
        self.port = self.udp_port = None
        deadline = time.time() + 10
        while (self.port is None or self.udp_port is None) and time.time() < deadline:
            text = self.log_text()
            m = re.search(r"event=1001 name=listening addr=127\.0\.0\.1:(\d+)", text)
            u = re.search(r"event=1600 name=udp_listening addr=127\.0\.0\.1:(\d+)", text)
            self.port = int(m.group(1)) if m else None
            self.udp_port = int(u.group(1)) if u else None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.port is None or self.udp_port is None:
            self.stop()
            sys.exit("nudged did not start with UDP on:\n" + text)
        with open(os.path.join(self.tmp, "var", "secret")) as f:
            self.secret = bytes.fromhex(f.read().strip())
        self.admin = sign_token(self.secret, "a", "bench")
        self.publisher = sign_token(self.secret, "p", "bench")

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM, wait; returns the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.log_text()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return text


def registrar(port, secret, first, count, udp_port, deadline, out):
    """Registers users u<first>..u<first+count-1> (device d<i>, folder INBOX,
    datagrams to udp_port) on one keep-alive connection; puts
    (list of (i, id, key), error or None) on 'out'."""
    regs = []
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        want = f"127.0.0.1:{udp_port}"
        for i in range(first, first + count):
            if time.monotonic() > deadline:
                out.put((regs, "time limit"))
                return
            body = b'{"device":"d%d","port":%d,"folders":["INBOX"]}' % (i, udp_port)
            s.sendall(request("POST", "/v1/udp", sign_token(secret, "u", f"u{i}"), body))
            status, payload, buf = read_response(s, buf)
            if status != 200:
                out.put((regs, f"POST /v1/udp for u{i}: {status} {payload[:200]!r}"))
                return
            r = json.loads(payload)
            if r["address"] != want:
                out.put((regs, f"u{i} registered {r['address']}, not {want}"))
                return
            regs.append((i, int(r["id"]), base64.b64decode(r["key"])))
        s.close()
        out.put((regs, None))
    except Exception as e:  # handed to the parent, which fails the run
        out.put((regs, repr(e)))


def receiver(sock, n, stop, deadline, out, keys=None, ack_to=None):
    """Reads datagrams until n distinct registration ids arrived, 'stop' is
    set or the deadline passed; sends ({id bytes: (kernel ns, data)}, number
    of datagrams beyond the first per id) on 'out'. With 'keys' (id bytes ->
    (i, key)), acks each notify to 'ack_to' as soon as it is read."""
    got = {}
    extra = 0
    sock.settimeout(0.1)
    space = socket.CMSG_SPACE(16)
    while len(got) < n and not stop.is_set() and time.monotonic() < deadline:
        try:
            data, anc, _, _ = sock.recvmsg(512, space)
        except socket.timeout:
            continue
        t = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", cdata[:16])
                t = sec * 1_000_000_000 + nsec
        if t is None:
            t = time.time_ns()
        key = data[4:12]
        if key in got:
            extra += 1
        else:
            got[key] = (t, data)
        if keys and key in keys:
            d = dgram_decode(data, keys[key][1])
            if d and d["type"] == NOTIFY:
                sock.sendto(dgram_ack(d, keys[key][1]), ack_to)
    out.send((got, extra))
    out.close()


def publisher(port, token, bodies, deadline, result):
    """Sends each body as POST /v1/events on one keep-alive connection, one
    after the other; appends (first send ns, last answer ns, states, error)."""
    states = {}
    first = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for body in bodies:
            if time.monotonic() > deadline:
                raise TimeoutError("time limit")
            req = request("POST", "/v1/events", token, body)
            if first is None:
                first = time.time_ns()
            s.sendall(req)
            status, payload, buf = read_response(s, buf)
            if status != 200:
                raise RuntimeError(f"POST /v1/events: {status} {payload[:200]!r}")
            for st in json.loads(payload)["states"]:
                states[st["user"]] = int(st["state"])
        s.close()
        result.append((first, time.time_ns(), states, None))
    except Exception as e:  # reported by the caller
        result.append((first, time.time_ns(), states, repr(e)))


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def run(args, backend):
    n = args.count
    srv = Server(args, backend)
    rows = []
    failures = []
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx_port = rx.getsockname()[1]
        want_buf = max(16 << 20, min(512 << 20, n * RCVBUF_PER_DGRAM))
        try:
            rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, want_buf)
        except PermissionError:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want_buf)
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rcvbuf = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

        # 1. Memory per registration.
        metrics(srv.port, srv.admin)  # the HTTP path has run once before the first reading
        time.sleep(0.3)
        before = rss_kib(srv.proc.pid)
        out = multiprocessing.Queue()
        deadline = time.monotonic() + PHASE_LIMIT_S
        c = args.registrars
        shares = [(k * n // c, (k + 1) * n // c - k * n // c) for k in range(c)]
        procs = [multiprocessing.Process(target=registrar, args=(srv.port, srv.secret, first, count,
                                                                 rx_port, deadline, out))
                 for first, count in shares]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        results = [out.get(timeout=PHASE_LIMIT_S + 10) for _ in procs]
        reg_time = time.monotonic() - t0
        for p in procs:
            p.join()
        errors = [e for _, e in results if e]
        if errors:
            sys.exit(f"{backend}: registering failed: {errors[:3]}")
        keys = {}
        for regs, _ in results:
            for i, rid, key in regs:
                keys[rid.to_bytes(8, "big")] = (i, key)
        if len(keys) != n:
            sys.exit(f"{backend}: {n} registrations got only {len(keys)} distinct ids")
        if wait_metric(srv.port, srv.admin, "nudge_udp_registrations", n) != n:
            sys.exit(f"{backend}: nudge_udp_registrations never reached {n}")
        time.sleep(0.5)  # the SQLite writer has written the device records
        after = rss_kib(srv.proc.pid)
        rows += [("registrations", f"{n}"),
                 ("registering", f"{reg_time:.2f} s ({n / reg_time:,.0f}/s, {c} connections)"),
                 ("nudged RSS before", f"{before} KiB"),
                 ("nudged RSS with all registered", f"{after} KiB"),
                 ("user-space memory per registration", f"{(after - before) * 1024 / n:.0f} bytes")]

        # 2. Fan-out latency.
        bodies = [json.dumps([{"user": f"u{i}", "folder": "INBOX"}
                              for i in range(b, min(n, b + args.batch))]).encode()
                  for b in range(0, n, args.batch)]
        if max(len(b) for b in bodies) > 1048576:
            sys.exit("--batch makes bodies larger than max_body_bytes (1 MiB)")
        drops_before = udp_queue(rx_port)[1]
        sent_before = metrics(srv.port, srv.admin)
        stop = multiprocessing.Event()
        mine, theirs = multiprocessing.Pipe(duplex=False)
        srv_addr = ("127.0.0.1", srv.udp_port)
        _, srv_drops_before = udp_queue(srv.udp_port)
        recv_proc = multiprocessing.Process(
            target=receiver, args=(rx, n, stop, time.monotonic() + PHASE_LIMIT_S, theirs,
                                   keys if args.ack_on_arrival else None, srv_addr))
        recv_proc.start()
        theirs.close()
        time.sleep(0.2)  # the receiver is reading
        cpu0 = cpu_s(srv.proc.pid)
        deadline = time.monotonic() + PHASE_LIMIT_S
        pub_results = []
        threads = [threading.Thread(target=publisher,
                                    args=(srv.port, srv.publisher, bodies[k::args.publishers],
                                          deadline, pub_results))
                   for k in range(min(args.publishers, len(bodies)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PHASE_LIMIT_S + 10)
        errors = [e for *_, e in pub_results if e]
        if errors or len(pub_results) != len(threads):
            stop.set()
            sys.exit(f"{backend}: publishing failed: {errors[:3]}")
        pub_t0 = min(r[0] for r in pub_results)
        pub_t1 = max(r[1] for r in pub_results)
        expected = {}
        for r in pub_results:
            expected.update(r[2])
        if not mine.poll(LOSS_WAIT_S):
            stop.set()
        got, extra = mine.recv()
        fanout_cpu = cpu_s(srv.proc.pid) - cpu0
        recv_proc.join(10)
        drops = udp_queue(rx_port)[1] - drops_before
        m = metrics(srv.port, srv.admin)
        sent = {k: m.get(f'nudge_udp_datagrams_sent_total{{kind="{k}"}}', 0)
                - sent_before.get(f'nudge_udp_datagrams_sent_total{{kind="{k}"}}', 0)
                for k in ("notify", "resend")}
        send_errors = m.get("nudge_udp_send_errors_total", 0)

        latencies = []
        notifies = []
        bad = 0
        for rid, (t, data) in got.items():
            i, key = keys.get(rid, (None, None))
            d = dgram_decode(data, key) if key else None
            if (d is None or d["type"] != NOTIFY or d["folder"] != b"INBOX"
                    or d["state"] != expected.get(f"u{i}")):
                bad += 1
                continue
            latencies.append((t - pub_t0) / 1e6)
            notifies.append((d, key))
        latencies.sort()
        lost = n - len(latencies)
        rows += [("publishing", f"{len(bodies)} POST /v1/events of {args.batch} events, "
                                f"{len(threads)} connections"),
                 ("nudged datagrams sent (notify, resend)", f"{sent['notify']}, {sent['resend']}"),
                 ("datagrams received, verified", f"{len(latencies)} of {n}"),
                 ("lost (not here " f"{LOSS_WAIT_S} s after the last answer)", f"{lost}"),
                 ("wrong (tag, type, folder or state)", f"{bad}"),
                 ("duplicates", f"{extra}"),
                 ("receiver socket drops (kernel)", f"{drops} (SO_RCVBUF {rcvbuf >> 20} MiB)"),
                 ("nudged send errors", f"{send_errors}")]
        if latencies:
            rows += [("first datagram", f"{latencies[0]:.1f} ms"),
                     ("latency p50", f"{percentile(latencies, 0.50):.1f} ms"),
                     ("latency p99", f"{percentile(latencies, 0.99):.1f} ms"),
                     ("latency max = last datagram", f"{latencies[-1]:.1f} ms")]
        rows += [("last publish answered", f"{(pub_t1 - pub_t0) / 1e6:.1f} ms"),
                 ("nudged CPU for the fan-out", f"{fanout_cpu * 1000:.0f} ms "
                                                f"({fanout_cpu * 1e6 / n:.1f} us per datagram)")]
        if lost or bad:
            failures.append(f"{lost} datagrams lost, {bad} wrong")

        if args.ack_on_arrival:
            # The receiver acked each notify as it read it; what reached nudged?
            counted = wait_metric(srv.port, srv.admin, "nudge_udp_acks_total", n, LOSS_WAIT_S)
            rows.append(("acks sent on arrival: counted, dropped at nudged's socket",
                         f"{counted} of {n}, {udp_queue(srv.udp_port)[1] - srv_drops_before}"))

        # 3. Ack throughput, paced by nudged's socket queue. After acks on
        # arrival, the ones nudged took are replays now and only the dropped
        # ones count.
        acks = [dgram_ack(d, key) for d, key in notifies]
        with open("/proc/sys/net/core/rmem_default") as f:
            # nudged does not set SO_RCVBUF, so its socket has the default.
            limit = int(f.read()) // 2
        _, srv_drops_before = udp_queue(srv.udp_port)
        acks_before = metrics(srv.port, srv.admin).get("nudge_udp_acks_total", 0)
        pauses = 0
        deadline = time.monotonic() + PHASE_LIMIT_S
        t0 = time.monotonic()
        # The queue is looked at every ACK_STEP acks: 32 acks take 26 KiB of
        # queue (832 bytes each, their buffers' true size on loopback), well
        # inside the half left free, and a look costs one read of
        # /proc/net/udp. A full queue is waited out in 0.2 ms steps: nudged
        # reads a burst of 64 acks in about 0.4 ms.
        for k in range(0, len(acks), ACK_STEP):
            while udp_queue(srv.udp_port)[0] > limit:
                pauses += 1
                if time.monotonic() > deadline:
                    break
                time.sleep(0.0002)
            for a in acks[k:k + ACK_STEP]:
                rx.sendto(a, srv_addr)
        send_time = time.monotonic() - t0
        acked = wait_metric(srv.port, srv.admin, "nudge_udp_acks_total", n,
                            max(1, deadline - time.monotonic()))
        ack_time = time.monotonic() - t0
        srv_drops = udp_queue(srv.udp_port)[1] - srv_drops_before
        rejected = rejected_total(metrics(srv.port, srv.admin))
        rows += [("acks sent (paced by nudged's queue)",
                  f"{len(acks)} in {send_time * 1000:.0f} ms, {pauses} pauses"),
                 ("nudge_udp_acks_total", f"{acked} of {n}"),
                 ("acks: first sent to all counted",
                  f"{ack_time * 1000:.0f} ms ({(acked - acks_before) / ack_time:,.0f}/s)"),
                 ("acks rejected, dropped at nudged's socket", f"{rejected}, {srv_drops}")]
        if acked != n:
            failures.append(f"nudge_udp_acks_total reached {acked} of {n}")

        # An unpaced burst: acks again (now replays, rejected by nudged after
        # the same parse, lookup and HMAC) as fast as one Python loop sends.
        burst = acks[:args.burst]
        rej_before = rejected
        _, srv_drops_before = udp_queue(srv.udp_port)
        for a in burst:
            rx.sendto(a, srv_addr)
        time.sleep(0.5)
        srv_drops = udp_queue(srv.udp_port)[1] - srv_drops_before
        rejected = rejected_total(metrics(srv.port, srv.admin))
        rows.append((f"unpaced burst of {len(burst)} (replays): rejected, dropped at "
                     "nudged's socket", f"{rejected - rej_before}, {srv_drops}"))

        # 4. Idle CPU with every registration caught up.
        time.sleep(1)
        cpu0, cs0 = cpu_s(srv.proc.pid), ctx_switches(srv.proc.pid)
        time.sleep(args.idle)
        cpu1, cs1 = cpu_s(srv.proc.pid), ctx_switches(srv.proc.pid)
        rows.append((f"nudged CPU over {args.idle:g} s idle", f"{cpu1 - cpu0:.2f} s, "
                                                              f"{cs1 - cs0} context switches"))
    finally:
        rx.close()
        log = srv.stop()
    warns = len(re.findall(r" level=(?:warn|error) ", log))
    if warns:
        rows.append(("warn/error lines in nudged's log", f"{warns}"))

    print(f"UDP fan-out, {backend} store, N = {n}:\n")
    print("| measure | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(flush=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=10000, help="registrations (users, devices)")
    ap.add_argument("--store", default="both", choices=["both", "memory", "sqlite"])
    ap.add_argument("--batch", type=int, default=1000, help="events per POST /v1/events")
    ap.add_argument("--publishers", type=int, default=4, help="publishing connections")
    ap.add_argument("--registrars", type=int, default=4, help="registering processes")
    ap.add_argument("--ack-on-arrival", action="store_true",
                    help="the receiver acks each notify as it reads it, as devices would")
    ap.add_argument("--burst", type=int, default=2000, help="acks in the unpaced burst")
    ap.add_argument("--idle", type=float, default=10, help="seconds of the idle CPU reading")
    ap.add_argument("--nudged", default=os.path.join(ROOT, "bin/nudged"))
    args = ap.parse_args()
    if not 1 <= args.count <= 200000:
        sys.exit("--count must be 1..200000 (this bench stays bounded)")
    if not 1 <= args.idle <= PHASE_LIMIT_S:
        sys.exit(f"--idle must be 1..{PHASE_LIMIT_S}")

    failures = []
    for backend in (["memory", "sqlite"] if args.store == "both" else [args.store]):
        failures += [f"{backend}: {f}" for f in run(args, backend)]
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
