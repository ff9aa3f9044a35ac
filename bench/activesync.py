#!/usr/bin/env python3
"""Memory per held ActiveSync Ping and its fan-out, beside /v1/ping, in one run (issue 19).

For each kind, a fresh nudged (one process, memory store, a passwd-file of N
users so both servers are configured alike) holds N Pings, one per user and
device (the worst case: every Ping also creates a user and a device record):

  json        POST /v1/ping with a bearer token, JSON body, one folder
  json-basic  the same with HTTP Basic ([auth] basic = yes): the sign-in's
              own cost, so the ActiveSync row can be told apart from it
  activesync  POST /Microsoft-Server-ActiveSync?Cmd=Ping with HTTP Basic
              (SHA512-CRYPT, rounds=1000), WBXML body built once by
              xml2wbxml (libwbxml2-utils), one folder

It waits until /metrics shows all N held, reads VmRSS, publishes one event
per user (batches of 1000) and waits until every held Ping has answered
(Status 2 / "changed"): the run proves nothing was dropped and times the
fan-out. The kinds run one after the other in the same invocation, so they
share the machine's state; the ratio row is the target of issue 19 (within
10% of the JSON ping).

Usage: bench/activesync.py [--count N] [--nudged PATH] [--nudge PATH]
One process holds N sockets, so N stays below the descriptor limit (20,000
here); bounded in time, loopback only.
"""
import argparse
import base64
import ctypes
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import Nudged, metric, publish_each, rss_kib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASE_LIMIT_S = 120
PING_XML = ('<?xml version="1.0"?>\n<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" '
            '"http://www.microsoft.com/">\n<Ping xmlns="Ping:"><HeartbeatInterval>3000</HeartbeatInterval>'
            '<Folders><Folder><Id>INBOX</Id><Class>Email</Class></Folder></Folders></Ping>\n')
STATUS2 = b"\x47\x03\x32\x00\x01"  # <Status>2</Status> in code page 13


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


def passwd_file(path, n):
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    with open(path, "w") as f:
        for i in range(n):
            h = lib.crypt(f"pw{i}".encode(), lib.crypt_gensalt(b"$6$", 1000, None, 0)).decode()
            f.write(f"u{i}:{{SHA512-CRYPT}}{h}::::::\n")


def run(args, kind, passwd, wbxml):
    n = args.count
    srv = Nudged(args, {"store": {"backend": "memory"},
                        "auth": {"passwords": f"passwd-file:{passwd}", "basic": "yes"}},
                 prefix="nudge-bench-as-")
    try:
        admin = srv.token("--admin")[0]
        publisher = srv.token("--publisher")[0]
        tokens = srv.token("--user-prefix", "u", "--count", str(n)) if kind == "json" else None
        time.sleep(0.2)
        before = rss_kib(srv.proc.pid)
        sel = selectors.DefaultSelector()
        socks = []
        t_hold = time.time()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port))
            if kind in ("json", "json-basic"):
                if kind == "json":
                    auth = f"Bearer {tokens[i]}"
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
            s.sendall(head.encode() + body)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            socks.append(s)
        deadline = time.time() + PHASE_LIMIT_S
        while (h := metric(srv.port, admin, "nudge_pings_held")) < n:
            if time.time() > deadline:
                sys.exit(f"{kind}: only {h} of {n} Pings held within {PHASE_LIMIT_S} s\n" + srv.log_text()[-2000:])
            time.sleep(0.2)
        hold_s = time.time() - t_hold
        time.sleep(0.5)
        after = rss_kib(srv.proc.pid)
        t0 = time.time()
        publish_each(srv.port, publisher, n)
        answered = 0
        want = STATUS2 if kind == "activesync" else b'"status":"changed"'
        deadline = time.time() + PHASE_LIMIT_S
        bufs = {}
        while answered < n and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(4096)
                bufs[key.data] = bufs.get(key.data, b"") + data
                if want in bufs[key.data]:
                    answered += 1
                    sel.unregister(key.fileobj)
                elif not data:
                    sel.unregister(key.fileobj)
        elapsed = time.time() - t0
        for s in socks:
            s.close()
    finally:
        srv.stop()
    return {"kind": kind, "n": n, "before": before, "after": after,
            "per": (after - before) * 1024 / n, "fanout_ms": elapsed * 1000,
            "answered": answered, "hold_s": hold_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--nudged", default=os.path.join(ROOT, "bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "bin/nudge"))
    args = ap.parse_args()
    wbxml = wbxml_ping()
    tmp = tempfile.mkdtemp(prefix="nudge-bench-passwd-")
    passwd = os.path.join(tmp, "passwd")
    t = time.time()
    passwd_file(passwd, args.count)
    print(f"(passwd-file of {args.count} users in {time.time() - t:.1f} s)\n", file=sys.stderr)
    try:
        res = [run(args, k, passwd, wbxml) for k in ("json", "json-basic", "activesync")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    j, jb, a = res
    print(f"Held Pings, one per user, one process, memory store, N = {args.count}:\n")
    print("| measure | /v1/ping, bearer token | /v1/ping, HTTP Basic | ActiveSync Ping (WBXML, Basic) "
          "| ActiveSync / bearer | ActiveSync / Basic |")
    print("|---|---|---|---|---|---|")
    print(f"| user-space memory per held Ping | {j['per']:.0f} B | {jb['per']:.0f} B | {a['per']:.0f} B "
          f"| {a['per'] / j['per']:.2f} | {a['per'] / jb['per']:.2f} |")
    print(f"| RSS before / with all held (KiB) | {j['before']} / {j['after']} | {jb['before']} / {jb['after']} "
          f"| {a['before']} / {a['after']} | | |")
    print(f"| fan-out: publish-all to last answer | {j['fanout_ms']:.0f} ms | {jb['fanout_ms']:.0f} ms "
          f"| {a['fanout_ms']:.0f} ms | {a['fanout_ms'] / j['fanout_ms']:.2f} | {a['fanout_ms'] / jb['fanout_ms']:.2f} |")
    print(f"| answered after one publish per user | {j['answered']} of {j['n']} | {jb['answered']} of {jb['n']} "
          f"| {a['answered']} of {a['n']} | | |")
    print(f"| time to hold all (connect, sign in, hold) | {j['hold_s']:.1f} s | {jb['hold_s']:.1f} s "
          f"| {a['hold_s']:.1f} s | | |")
    print()
    if any(r["answered"] != r["n"] for r in res):
        sys.exit("answers were lost")


if __name__ == "__main__":
    main()
