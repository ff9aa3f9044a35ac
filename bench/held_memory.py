#!/usr/bin/env python3
"""Memory per held ping, and publish throughput per store backend.

Part 1, memory per held ping: starts bin/nudged on a free loopback port
(store: --store, nudged's default sqlite unless told otherwise), opens N
connections that each hold a ping for their own user and device (the worst
case: every held ping also creates a user and a device record), waits until
/metrics shows all N held, reads VmRSS from /proc, then publishes one event
per user and checks that every held ping is answered (so the run also proves
nothing was dropped) and how long the whole fan-out took.

Part 2, publish throughput: for the memory store, SQLite with sync=full and
SQLite with sync=normal, a fresh nudged each, C publisher processes (one
keep-alive connection each, so the Python client is not one GIL-bound
thread) publish single events, each for its own user out of many, until
--events are answered. Prints events/s and, for SQLite, how many publishes
shared one commit (group commit), from nudged's store_closed log line.

Usage: bench/held_memory.py [--count N] [--events N] [--publishers C]
                            [--store NAME] [--skip-held] [--nudged PATH] [--nudge PATH]
Bounded in count and time, loopback only.
"""
import argparse
import json
import multiprocessing
import os
import re
import selectors
import socket
import sys
import time

from benchlib import Nudged, metric, publish_each, rss_kib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No part of a run may take longer than this; the whole script stays bounded.
PHASE_LIMIT_S = 120


def held_memory(args):
    n = args.count
    srv = Nudged(args, {"store": {"backend": args.store}})
    try:
        tokens = srv.token("--user-prefix", "u", "--count", str(n))
        admin = srv.token("--admin")[0]
        publisher = srv.token("--publisher")[0]
        time.sleep(0.2)
        before = rss_kib(srv.proc.pid)

        sel = selectors.DefaultSelector()
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port))
            body = json.dumps({"device": f"d{i}", "heartbeat": 3000,
                               "folders": {"INBOX": "0"}}).encode()
            s.sendall((f"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens[i]}\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            socks.append(s)
        deadline = time.time() + 60
        while metric(srv.port, admin, "nudge_pings_held") < n:
            if time.time() > deadline:
                sys.exit("not all pings were held within 60 s")
            time.sleep(0.2)
        time.sleep(0.5)
        after = rss_kib(srv.proc.pid)

        # Fan-out: one event per user in batches of 1000; every ping must answer.
        t0 = time.time()
        publish_each(srv.port, publisher, n)
        answered = 0
        deadline = time.time() + 60
        while answered < n and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(4096)
                if b'"status":"changed"' in data:
                    answered += 1
                sel.unregister(key.fileobj)
        elapsed = time.time() - t0
        for s in socks:
            s.close()
    finally:
        srv.stop()

    per = (after - before) * 1024 / n
    print(f"Memory per held ping ({args.store} store):\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| held pings | {n} |")
    print(f"| nudged RSS before | {before} KiB |")
    print(f"| nudged RSS with all held | {after} KiB |")
    print(f"| user-space memory per held ping | {per:.0f} bytes |")
    print(f"| pings answered after one publish per user | {answered} of {n} |")
    print(f"| publish-all to last answer | {elapsed * 1000:.0f} ms |")
    print()
    if answered != n:
        sys.exit(f"lost {n - answered} answers")


def publisher(port, token, first, count, users, deadline, out):
    """One keep-alive connection publishing single events for users first,
    first+1, ... (mod users); puts (answered, error or None) on 'out'."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done = 0
    buf = b""
    try:
        for i in range(count):
            if time.time() > deadline:
                out.put((done, "time limit"))
                return
            body = b'{"user":"p%d","folder":"INBOX"}' % ((first + i) % users)
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + token + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    m = re.search(rb"\r\nContent-Length: (\d+)", buf[:head_end], re.I)
                    total = head_end + 4 + int(m.group(1))
                    if len(buf) >= total:
                        break
                chunk = s.recv(65536)
                if not chunk:
                    out.put((done, "connection closed"))
                    return
                buf += chunk
            if not buf.startswith(b"HTTP/1.1 200"):
                out.put((done, buf[:200].decode("latin-1")))
                return
            buf = buf[total:]
            done += 1
        out.put((done, None))
    finally:
        s.close()


def throughput(args, label, store):
    srv = Nudged(args, {"store": store})
    try:
        token = srv.token("--publisher")[0].encode()
        c, total = args.publishers, args.events
        per = total // c
        out = multiprocessing.Queue()
        deadline = time.time() + PHASE_LIMIT_S
        procs = [multiprocessing.Process(target=publisher,
                                         args=(srv.port, token, i * per, per, 10000, deadline, out))
                 for i in range(c)]
        t0 = time.time()
        for p in procs:
            p.start()
        results = [out.get(timeout=PHASE_LIMIT_S + 10) for _ in procs]
        elapsed = time.time() - t0
        for p in procs:
            p.join()
    finally:
        log = srv.stop()
    errors = [e for _, e in results if e]
    if errors:
        sys.exit(f"{label}: publishers failed: {errors[:3]}")
    answered = sum(d for d, _ in results)
    m = re.search(r"name=store_closed .*commits=(\d+) batches=(\d+)", log)
    shared = f"{int(m.group(2)) / max(1, int(m.group(1))):.1f}" if m else "-"
    print(f"| {label} | {c} | {answered} | {elapsed:.2f} s | {answered / elapsed:,.0f} | {shared} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=10000, help="held pings (part 1)")
    ap.add_argument("--store", default="sqlite", choices=["sqlite", "memory"],
                    help="store for part 1")
    ap.add_argument("--skip-held", action="store_true", help="run part 2 only")
    ap.add_argument("--events", type=int, default=20000, help="events published (part 2)")
    ap.add_argument("--publishers", type=int, default=8, help="concurrent connections (part 2)")
    ap.add_argument("--nudged", default=os.path.join(ROOT, "bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "bin/nudge"))
    args = ap.parse_args()

    if not args.skip_held:
        held_memory(args)
    print(f"Publish throughput, {args.publishers} keep-alive publishers, single events:\n")
    print("| store | publishers | events | time | events/s | publishes per commit |")
    print("|---|---|---|---|---|---|")
    throughput(args, "memory", {"backend": "memory"})
    throughput(args, "sqlite, sync=full", {"backend": "sqlite", "sync": "full"})
    throughput(args, "sqlite, sync=normal", {"backend": "sqlite", "sync": "normal"})


if __name__ == "__main__":
    main()
