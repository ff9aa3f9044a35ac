#!/usr/bin/env python3
"""Memory per held ping: user-space RSS of nudged before and after N held pings.

Starts bin/nudged (memory store) on a free loopback port, opens N connections
that each hold a ping for their own user and device (the worst case: every
held ping also creates a user and a device record), waits until /metrics
shows all N held, reads VmRSS from /proc, then publishes one event per user
and checks that every held ping is answered (so the run also proves nothing
was dropped) and how long the whole fan-out took.

Usage: bench/held_memory.py [--count N] [--nudged PATH] [--nudge PATH]
Bounded in count and time, loopback only.
"""
import argparse
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def http(port, method, path, token, body=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    req = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    s.sendall(req)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def metric(port, admin, name):
    _, text = http(port, "GET", "/metrics", admin)
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", text, re.M)
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--nudged", default=os.path.join(ROOT, "bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "bin/nudge"))
    args = ap.parse_args()
    n = args.count

    tmp = tempfile.mkdtemp(prefix="nudge-bench-")
    conf = os.path.join(tmp, "nudged.conf")
    with open(conf, "w") as f:
        f.write(f"[server]\nlisten = 127.0.0.1:0\ndata_dir = {tmp}/var\nlog_level = warn\n"
                "header_timeout = 60\n[heartbeat]\nmin = 1\nmax = 3540\n")
    log = open(os.path.join(tmp, "nudged.log"), "w+")
    # log_level=warn hides the listening line; ask for info just for the port.
    proc = subprocess.Popen([args.nudged, "-c", conf, "--log-level", "info"],
                            stderr=log, stdout=log)
    port = None
    deadline = time.time() + 10
    while port is None and time.time() < deadline:
        log.seek(0)
        m = re.search(r"name=listening addr=127\.0\.0\.1:(\d+)", log.read())
        port = int(m.group(1)) if m else None
        time.sleep(0.05)
    if port is None:
        sys.exit("nudged did not start")
    try:
        tokens = subprocess.run([args.nudge, "token", "-c", conf, "--user-prefix", "u",
                                 "--count", str(n)], check=True, capture_output=True,
                                text=True).stdout.split()
        admin = subprocess.run([args.nudge, "token", "-c", conf, "--admin"], check=True,
                               capture_output=True, text=True).stdout.strip()
        publisher = subprocess.run([args.nudge, "token", "-c", conf, "--publisher"], check=True,
                                   capture_output=True, text=True).stdout.strip()
        time.sleep(0.2)
        before = rss_kib(proc.pid)

        sel = selectors.DefaultSelector()
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            body = json.dumps({"device": f"d{i}", "heartbeat": 3000,
                               "folders": {"INBOX": "0"}}).encode()
            s.sendall((f"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens[i]}\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            socks.append(s)
        deadline = time.time() + 60
        while metric(port, admin, "nudge_pings_held") < n:
            if time.time() > deadline:
                sys.exit("not all pings were held within 60 s")
            time.sleep(0.2)
        time.sleep(0.5)
        after = rss_kib(proc.pid)

        # Fan-out: one event per user in batches of 1000; every ping must answer.
        t0 = time.time()
        for b in range(0, n, 1000):
            events = [{"user": f"u{i}", "folder": "INBOX"} for i in range(b, min(n, b + 1000))]
            status, _ = http(port, "POST", "/v1/events", publisher, json.dumps(events).encode())
            assert status == 200, status
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

        per = (after - before) * 1024 / n
        print("| measure | value |")
        print("|---|---|")
        print(f"| held pings | {n} |")
        print(f"| nudged RSS before | {before} KiB |")
        print(f"| nudged RSS with all held | {after} KiB |")
        print(f"| user-space memory per held ping | {per:.0f} bytes |")
        print(f"| pings answered after one publish per user | {answered} of {n} |")
        print(f"| publish-all to last answer | {elapsed * 1000:.0f} ms |")
        if answered != n:
            sys.exit(f"lost {n - answered} answers")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
