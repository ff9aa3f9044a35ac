#!/usr/bin/env python3
"""
callgrind.py — the instructions nudged executes for a ramp of held pings and
one fan-out to them, counted by valgrind's callgrind in every process
(supervisor and workers): a ruler for code changes that does not move with
the machine's load, as the CPU rows of compare.py do (2-4x between runs
here). Run it for two builds and compare the totals.

    python3 bench/callgrind.py [--n 3000] [--workers 2] [--nudged PATH] [--out DIR]

N users each hold one ping (heartbeat 3000 s), then every user gets one
event (POST /v1/events in batches of 1000) and every answer is read; then
nudged is stopped. Prints each process's total and the sum; the callgrind
files stay in --out for callgrind_annotate. Startup (~14M instructions in
the supervisor, ~8M per worker) is included and is the same for every build.
"""
import argparse
import glob
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from benchlib import http, sign_token

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--n", type=int, default=3000, help="held pings, one user each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nudged", default=os.path.join(ROOT, "build/bin/nudged"))
    ap.add_argument("--out", default="/tmp/nudge-callgrind")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    for f in glob.glob(os.path.join(args.out, "cg.*")):
        os.unlink(f)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    var = os.path.join(args.out, "var")
    subprocess.run(["rm", "-rf", var], check=True)
    os.makedirs(var, mode=0o700)
    secret = os.urandom(32)
    with open(os.path.join(var, "secret"), "w") as f:
        f.write(secret.hex() + "\n")
    os.chmod(os.path.join(var, "secret"), 0o600)
    conf = os.path.join(args.out, "nudged.conf")
    with open(conf, "w") as f:
        f.write(f"[server]\nlisten = 127.0.0.1:{port}\ndata_dir = {var}\nworkers = {args.workers}\n"
                "log_level = warn\nheader_timeout = 600\n[heartbeat]\nmin = 1\nmax = 3540\n"
                "[store]\nbackend = memory\n[udp]\nlisten =\n")
    log = open(os.path.join(args.out, "nudged.log"), "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes",
                             f"--callgrind-out-file={args.out}/cg.%p", args.nudged, "-c", conf],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                if http(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            sys.exit("nudged did not start under valgrind; see " + log.name)
        admin = sign_token(secret, "a", "bench")
        pub = sign_token(secret, "p", "bench")

        def held():
            st, body = http(port, "GET", "/metrics", admin, timeout=120)
            for line in body.decode().splitlines():
                if line.startswith("nudge_pings_held "):
                    return int(line.split()[1])
            return -1

        socks = []
        body = json.dumps({"device": "d", "heartbeat": 3000, "folders": {"INBOX": "0"}}).encode()
        for i in range(args.n):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall((f"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                       f"{sign_token(secret, 'u', f'u{i}')}\r\nContent-Length: {len(body)}"
                       "\r\n\r\n").encode() + body)
            socks.append(c)
        while held() < args.n:
            time.sleep(0.5)
        sel = selectors.DefaultSelector()
        for c in socks:
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
        for k in range(0, args.n, 1000):
            events = [{"user": f"u{i}", "folder": "INBOX"} for i in range(k, min(args.n, k + 1000))]
            st, _ = http(port, "POST", "/v1/events", pub, json.dumps(events).encode(), timeout=120)
            if st != 200:
                sys.exit(f"publish answered {st}")
        got, deadline = 0, time.time() + 600
        while got < args.n and time.time() < deadline:
            for key, _ in sel.select(1):
                if b"changed" in key.fileobj.recv(4096):
                    got += 1
                    sel.unregister(key.fileobj)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    total = 0
    for f in sorted(glob.glob(os.path.join(args.out, "cg.*"))):
        with open(f) as cg:
            for line in cg:
                if line.startswith(("totals:", "summary:")):
                    n = int(line.split()[1])
                    total += n
                    print(f"{os.path.basename(f)}: {n:,}")
                    break
    print(f"answers {got} of {args.n}; instructions, all processes: {total:,}")
    return 0 if got == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
