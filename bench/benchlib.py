"""
benchlib.py — what every benchmark script here needs: tokens signed from
the server secret, HTTP/1.1 over plain sockets, and /proc readings.

The scripts import it as a sibling (python puts a script's own directory
first on sys.path), so each still runs as `python3 bench/NAME.py`.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(secret, kind, subject):
    """A token as docs/auth.md describes it: v1.<kind>.<b64url(subject)>.0.<mac>."""
    msg = f"v1.{kind}.{b64url(subject.encode())}.0"
    return f"{msg}.{b64url(hmac.new(secret, msg.encode(), hashlib.sha256).digest())}"


def rss_kib(pid):
    """VmRSS of one process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def response_end(buf):
    """The length of the first complete response (Content-Length) in buf, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", buf[:end], re.I)
    total = end + 4 + (int(m.group(1)) if m else 0)
    return total if len(buf) >= total else None


def read_response(sock, buf):
    """One response from a keep-alive socket: (status, body, rest of buf)."""
    while True:
        n = response_end(buf)
        if n is not None:
            end = buf.find(b"\r\n\r\n")
            return int(buf.split(None, 2)[1]), buf[end + 4:n], buf[n:]
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError(f"nudged closed the connection; have {buf[:200]!r}")
        buf += chunk


def request(method, path, token, body=b""):
    """The bytes of one keep-alive request with a bearer token and a JSON body."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def http(port, method, path, token=None, body=b"", timeout=30):
    """One request on its own connection (Connection: close): (status, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall((f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{auth}Content-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body)
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
    """One unlabelled counter or gauge from /metrics."""
    _, text = http(port, "GET", "/metrics", admin)
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", text, re.M)
    return int(m.group(1))


def publish_each(port, publisher, n, prefix="u", folder="INBOX"):
    """One event for each of the users prefix0..prefix{n-1}, in batches of 1000."""
    for b in range(0, n, 1000):
        events = [{"user": f"{prefix}{i}", "folder": folder} for i in range(b, min(n, b + 1000))]
        status, _ = http(port, "POST", "/v1/events", publisher, json.dumps(events).encode())
        assert status == 200, status

class Nudged:
    """One nudged in its own temporary directory on 127.0.0.1 (a port it
    picks), with the benchmarks' common [server] and [heartbeat] lines and
    the given sections over them: {"store": {"backend": "memory"}, ...}.
    args carries nudged and nudge (the binaries) and, optionally, workers."""

    def __init__(self, args, sections, prefix="nudge-bench-"):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.conf = os.path.join(self.tmp, "nudged.conf")
        conf = {"server": {"listen": "127.0.0.1:0", "workers": getattr(args, "workers", 1),
                           "data_dir": f"{self.tmp}/var", "log_level": "warn",
                           "header_timeout": 60},
                "heartbeat": {"min": 1, "max": 3540}}
        for name, lines in sections.items():
            conf.setdefault(name, {}).update(lines)
        with open(self.conf, "w") as f:
            for name, lines in conf.items():
                f.write(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))
        self.log = open(os.path.join(self.tmp, "nudged.log"), "w+")
        # log_level=warn hides the listening line; ask for info just for the port.
        self.proc = subprocess.Popen([args.nudged, "-c", self.conf, "--log-level", "info"],
                                     stderr=self.log, stdout=self.log)
        self.port = None
        deadline = time.time() + 15
        while self.port is None and time.time() < deadline:
            self.log.seek(0)
            m = re.search(r"name=listening addr=127\.0\.0\.1:(\d+)", self.log.read())
            self.port = int(m.group(1)) if m else None
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            sys.exit("nudged did not start:\n" + self.log_text())

    def token(self, *args):
        return subprocess.run([self.args.nudge, "token", "-c", self.conf, *args], check=True,
                              capture_output=True, text=True).stdout.split()

    def pids(self):
        """nudged and its workers."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout.split()
        return [self.proc.pid] + [int(p) for p in out]

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM, wait (kill after 30 s); returns the log (with the store_closed line)."""
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


def pss_kib(pids):
    """Pss summed over processes (/proc/PID/smaps_rollup), KiB: pages shared
    between them (forked workers, libraries) counted once in all."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def raise_nofile():
    """RLIMIT_NOFILE's soft limit up to the hard one (children inherit it); returns it."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def wait_workers(port, admin, timeout=20):
    """Until GET /v1/admin/workers lists every worker up (with workers > 1)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            st, body = http(port, "GET", "/v1/admin/workers", admin)
            if st == 200 and all(w.get("up") for w in json.loads(body)["workers"]):
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    return False
