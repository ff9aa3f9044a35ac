#!/usr/bin/env python3
"""Sign-in costs: logins per second and HTTP Basic pings per second, warm
and cold cache, against both password backends, beside the bearer token.

Each row starts a fresh nudged (workers = 1 unless --workers) on a free
loopback port; the dovecot rows also start a real Dovecot 2.3 (the e2e
harness's, tests/e2e/dovecot.py) with a SHA512-CRYPT passwd-file passdb and
no failure delay, and the passwd-file rows give nudged the same kind of
file. wrk (Debian's package) drives the requests over --conns keep-alive
connections for --seconds after a one-second warm-up that fills the cache.

Rows:
  token ping        POST /v1/ping with a bearer token (the fast path)
  basic ping        POST /v1/ping with HTTP Basic, [auth] basic = yes, cache warm
  login             POST /v1/login with HTTP Basic, cache warm: signs a token each
  login, no cache   POST /v1/login with cache_ttl = 0: every login asks the backend
                    (--users users in turn, so Dovecot's own cache does not help)

Every ping is answered at once: its folder state is behind the server's, so
the answer is "changed" (a ping is held only when nothing changed). A row
whose answers are not all 200 fails the run. nudged's CPU seconds per
request come from /proc, so the rows compare whatever the machine's load.

Usage: /usr/bin/python3 bench/auth.py [--seconds S] [--conns C] [--threads T]
                                      [--workers W] [--users N] [--nudged P] [--nudge P]
Writes bench/auth-results.md.
"""
import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

from benchlib import Nudged, cpu_s, http, rss_kib  # noqa: E402
from dovecot import Dovecot, crypt_hash  # noqa: E402


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def server(args, auth):
    """A nudged on the memory store with the given [auth] lines."""
    return Nudged(args, {"store": {"backend": "memory"}, "auth": auth}, prefix="nudge-bench-auth-")


WRK_SCRIPT = r"""
local i = 0
local n = #creds
request = function()
  i = i + 1
  return wrk.format(method, path, {["Authorization"] = creds[(i %% n) + 1],
                                   ["Content-Type"] = "application/json"}, body)
end
"""


def wrk(args, port, path, creds, body, seconds):
    """wrk against one path with the credentials in turn; (requests/s, requests, non-2xx)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("creds = {" + ",".join(json.dumps(c) for c in creds) + "}\n")
        f.write(f"method = \"POST\"\npath = {json.dumps(path)}\nbody = {json.dumps(body)}\n")
        f.write(WRK_SCRIPT.replace("%%", "%"))
        script = f.name
    try:
        out = subprocess.run(["wrk", "-t", str(args.threads), "-c", str(args.conns), "-d", f"{seconds}s",
                              "-s", script, f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(script)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rate, total, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""


def measure(args, srv, name, path, creds, body, rows):
    wrk(args, srv.port, path, creds, body, 1)  # warm-up: fills the caches
    pids = srv.pids()
    cpu0 = sum(cpu_s(p) for p in pids)
    rate, total, bad, errors = wrk(args, srv.port, path, creds, body, args.seconds)
    cpu = sum(cpu_s(p) for p in pids) - cpu0
    rss = sum(rss_kib(p) for p in pids)
    if bad or errors:
        sys.exit(f"{name}: {bad} answers were not 2xx ({errors}):\n{srv.log_text()[-3000:]}")
    rows.append({"row": name, "per_s": round(rate), "requests": total,
                 "cpu_us_per_req": round(cpu / total * 1e6, 1), "rss_kib": rss})
    print(f"  {name:<36} {rate:>10,.0f}/s  {cpu / total * 1e6:7.1f} us CPU/req  rss {rss} KiB",
          flush=True)


PING = json.dumps({"device": "bench", "heartbeat": 600, "folders": {"INBOX": "0"}})


def rows_for(args, backend, auth, users, rows):
    """The four rows of one backend (or of tokens, backend None)."""
    srv = server(args, dict(auth, basic="yes") if backend else {})
    try:
        pub = srv.token("--publisher")[0]
        for u, _ in users:
            status, _ = http(srv.port, "POST", "/v1/events", pub,
                             json.dumps([{"user": u, "folder": "INBOX"}]).encode())
            assert status == 200, status
        if backend is None:
            toks = [srv.token("--user", u)[0] for u, _ in users[:1]]
            measure(args, srv, "token ping", "/v1/ping", [f"Bearer {t}" for t in toks], PING, rows)
            return
        one = [basic(*users[0])]
        measure(args, srv, f"{backend}: basic ping (warm)", "/v1/ping", one, PING, rows)
        measure(args, srv, f"{backend}: login (warm)", "/v1/login", one, "", rows)
    finally:
        srv.stop()
    srv = server(args, dict(auth, cache_ttl="0", negative_ttl="0"))
    try:
        measure(args, srv, f"{backend}: login, no cache", "/v1/login",
                [basic(u, p) for u, p in users], "", rows)
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--nudged", default=os.path.join(ROOT, "build/bin/nudged"))
    ap.add_argument("--nudge", default=os.path.join(ROOT, "build/bin/nudge"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/auth-results.md"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/auth.py needs wrk: apt-get install wrk (scripts/deps.sh bench installs it)")

    users = [(f"user{i}@example.org", f"pw-{i}") for i in range(args.users)]
    rows = []
    print(f"workers={args.workers} conns={args.conns} wrk threads={args.threads} {args.seconds} s a row")
    rows_for(args, None, {}, users, rows)

    tmp = tempfile.mkdtemp(prefix="nudge-bench-pw-")
    try:
        pwfile = os.path.join(tmp, "passwd")
        with open(pwfile, "w") as f:
            for u, p in users:
                f.write(f"{u}:{{SHA512-CRYPT}}{crypt_hash(p)}\n")
        rows_for(args, "passwd-file", {"passwords": f"passwd-file:{pwfile}"}, users, rows)

        d = Dovecot(os.path.join(tmp, "dovecot"), None, settings={"auth_failure_delay": "0"})
        try:
            for u, p in users:
                d.add_user(u, p, scheme="SHA512-CRYPT")
            d.start()
            d.wait_auth_socket()
            rows_for(args, "dovecot", {"passwords": f"dovecot:{d.auth_socket}"}, users, rows)
        finally:
            d.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    with open(args.out, "w") as f:
        f.write(f"# bench/auth.py: workers={args.workers}, {args.conns} connections, "
                f"{args.seconds} s a row, {time.strftime('%Y-%m-%d')}\n\n")
        f.write("| row | per second | nudged CPU µs per request | nudged RSS KiB |\n|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['row']} | {r['per_s']:,} | {r['cpu_us_per_req']} | {r['rss_kib']:,} |\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
