#!/usr/bin/env python3
"""Dovecot IMAP IDLE: memory per idle connection, with and without hibernation.

Context for compare.py's memory row: what the common alternative to a push
server costs. A real Dovecot 2.3 (the test suite's harness,
tests/e2e/dovecot.py: its own config, ports and maildirs under /tmp) gets
--count users; each logs in over its own IMAP connection, selects INBOX and
issues IDLE. The PSS of all of Dovecot's processes (master, auth, login,
one imap process per connection, imap-hibernate) before and after, divided
by the count, is the cost of one idle connection. Run twice: without
hibernation (Dovecot's default) and with imap_hibernate_timeout = 1s,
which moves an idle connection out of its imap process into the shared
imap-hibernate process.

Usage: bench/imap_idle.py [--count 200]
Bounded (every wait at most 60 s), loopback only, root (Dovecot's harness).
"""
import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import dovecot  # noqa: E402

LIMIT_S = 60


class Dovecot(dovecot.Dovecot):
    """The harness's Dovecot, with room for many imap processes and,
    optionally, hibernation."""

    def __init__(self, artifacts, count, hibernate):
        super().__init__(artifacts, "ox")
        self.count = count
        self.hibernate = hibernate

    def write_config(self):
        super().write_config()
        extra = f"""
# bench/imap_idle.py: one imap process per connection, up to the count.
mail_max_userip_connections = 10
service imap {{
  process_limit = {self.count + 50}
  client_limit = 1
  unix_listener imap-master {{
    user = $default_internal_user
  }}
}}
service imap-login {{
  process_limit = {self.count // 100 + 4}
  client_limit = {self.count + 50}
  service_count = 0
}}
service anvil {{
  client_limit = {3 * self.count + 200}
}}
default_client_limit = {3 * self.count + 200}
"""
        if self.hibernate:
            extra += f"""
imap_hibernate_timeout = 1s
service imap-hibernate {{
  client_limit = {self.count + 50}
  unix_listener imap-hibernate {{
    mode = 0666
  }}
}}
"""
        with open(self.conf, "a") as f:
            f.write(extra)


def group_pids(pgid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                w = f.read().rsplit(")", 1)[1].split()
            if int(w[2]) == pgid:
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def names(pids):
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                n = f.read().strip()
        except OSError:
            continue
        out[n] = out.get(n, 0) + 1
    return out


def expect(sock, token, deadline):
    data = b""
    while token not in data:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {token!r} from Dovecot: {data[-300:]!r}")
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"Dovecot closed the connection: {data[-300:]!r}")
        data += chunk
    return data


def idle_connection(port, user, deadline):
    s = socket.create_connection(("127.0.0.1", port), timeout=LIMIT_S)
    expect(s, b"* OK", deadline)
    s.sendall(f"a LOGIN {user} secret\r\n".encode())
    expect(s, b"a OK", deadline)
    s.sendall(b"b SELECT INBOX\r\n")
    expect(s, b"b OK", deadline)
    s.sendall(b"c IDLE\r\n")
    expect(s, b"+ idling", deadline)
    return s


def measure(count, hibernate):
    with tempfile.TemporaryDirectory(prefix="imap-idle-") as artifacts:
        d = Dovecot(artifacts, count, hibernate)
        for i in range(count):
            d.add_user(f"idle{i}")
        d.start()
        socks = []
        try:
            pgid = d.proc.pid
            time.sleep(1.0)
            before_pids = group_pids(pgid)
            before = pss_kib(before_pids)
            deadline = time.monotonic() + LIMIT_S
            for i in range(count):
                socks.append(idle_connection(d.imap_port, f"idle{i}", deadline))
            # Hibernation moves each connection after imap_hibernate_timeout and
            # its imap process then exits: wait until none is left (or the limit).
            time.sleep(1.0)
            while hibernate and names(group_pids(pgid)).get("imap", 0) > 0 and \
                    time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.0)
            pids = group_pids(pgid)
            after = pss_kib(pids)
            return before, after, names(pids)
        finally:
            for s in socks:
                s.close()
            d.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200, help="idle IMAP connections")
    args = ap.parse_args()
    rows = []
    for hibernate in (False, True):
        before, after, procs = measure(args.count, hibernate)
        per = (after - before) * 1024 / args.count
        label = "imap_hibernate_timeout = 1s" if hibernate else "default (no hibernation)"
        rows.append((label, before, after, per, procs))
    print(f"Dovecot {dovecot_version()}, {args.count} IMAP connections in IDLE, PSS of all "
          "Dovecot processes:\n")
    print("| configuration | PSS before | PSS with all idle | per idle connection | processes |")
    print("|---|---|---|---|---|")
    for label, before, after, per, procs in rows:
        p = ", ".join(f"{k} {v}" for k, v in sorted(procs.items()))
        print(f"| {label} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | {per:,.0f} B | {p} |")


def dovecot_version():
    import subprocess
    return subprocess.run(["dovecot", "--version"], capture_output=True,
                          text=True).stdout.strip()


if __name__ == "__main__":
    main()
