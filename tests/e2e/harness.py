"""
harness.py — the end-to-end harness: runs the real nudged and nudge binaries and
speaks raw HTTP/1.1 to them over sockets.

Design:
  * Nudged owns one server process: it writes the INI config into its own
    directory, starts `$NUDGED -c conf` with stderr going to a log file, and
    reads the port back from the `event=1001 name=listening addr=...` line
    (the config asks for port 0, so the kernel picks a free one).
  * Conn is a small HTTP/1.1 client over one socket with its own parser, so a
    test can send arbitrary bytes, pipeline requests and see exactly when the
    server closes. http.client hides all three.
  * Pending is a request whose answer is awaited in a background thread: a
    held ping, while the test publishes on another connection.
  * Held-ness is proven by polling the `nudge_pings_held` gauge on /metrics,
    never by sleeping, so the tests stay correct on a loaded 2-core machine.

Only the Python standard library is used (the suite runs under Debian's
/usr/bin/python3 with python3-pytest).
"""
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAN = os.environ.get("NUDGE_SAN") == "1"
# Sanitizer builds run several times slower; every wait is stretched by this.
SLOW = 4 if SAN else 1
# How long a test waits for something that should happen "soon". Generous on
# purpose: a correct server answers in milliseconds, and a loaded CI machine
# must not turn a pass into a failure.
WAIT = 20 * SLOW

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# Objects (pending pings, background CLI processes) that must not outlive the
# test that made them; conftest closes them after every test.
LIVE = []

_counter = itertools.count(1)


def unique(prefix="u"):
    """A name no other test in this run uses (users, devices)."""
    return f"{prefix}{os.getpid()}x{next(_counter)}"


def nudged_path():
    return os.environ.get("NUDGED") or str(REPO / ("build-san" if SAN else "build") / "bin/nudged")


def nudge_path():
    return os.environ.get("NUDGE") or str(REPO / ("build-san" if SAN else "build") / "bin/nudge")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def sign_token(secret: bytes, kind: str, subject: str, expires: int = 0) -> str:
    """Signs a token the way docs/auth.md / src/auth/token.h describe:
    v1.<kind>.<b64url(subject)>.<expires>.<b64url(hmac-sha256(secret, rest))>."""
    msg = f"v1.{kind}.{b64url(subject.encode())}.{expires}"
    mac = hmac.new(secret, msg.encode(), hashlib.sha256).digest()
    return f"{msg}.{b64url(mac)}"


def v2_signed_by(secret: bytes, token: str) -> bool:
    """Is token a v2 token (docs/auth.md "Token format") whose key id and MAC
    are those of 'secret'?"""
    head, _, mac = token.rpartition(".")
    parts = head.split(".")
    if len(parts) != 6 or parts[0] != "v2":
        return False
    if parts[5] != hashlib.sha256(secret).hexdigest()[:8]:
        return False
    want = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return b64url(want) == mac


def flip_mac_char(token: str) -> str:
    """Changes one character in the middle of the MAC. Not the last one: with
    32 bytes in 43 base64 characters the last character carries 2 padding bits,
    and a lenient decoder could map a changed last character to the same MAC."""
    head, mac = token.rsplit(".", 1)
    i = len(mac) // 2
    c = "A" if mac[i] != "A" else "Q"
    return f"{head}.{mac[:i]}{c}{mac[i + 1:]}"


# ---------------------------------------------------------------------------
# HTTP


def worker_of(user: str, workers: int) -> int:
    """The worker owning 'user' (src/worker/owner.c: FNV-1a 64, high bits folded in)."""
    if workers <= 1:
        return 0
    h = 14695981039346656037
    for b in user.encode():
        h ^= b
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 29
    return h % workers


def udp_port_in(log_text):
    """The UDP port of the last udp_listening line (event 1600), or None."""
    found = re.findall(r"event=1600 name=udp_listening addr=\S*:(\d+)", log_text)
    return int(found[-1]) if found else None


def udp_ports_in(log_text):
    """Each worker's UDP port from its udp_listening lines (the last wins): {worker: port}."""
    ports = {}
    for m in re.finditer(r"event=1600 name=udp_listening addr=\S*:(\d+)[^\n]*?(?: worker=(\d+))?$",
                         log_text, re.M):
        ports[int(m.group(2) or 0)] = int(m.group(1))
    return ports


class ConnectionClosed(Exception):
    pass


class Response:
    def __init__(self, status, reason, headers, body, raw_head=b""):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), names as sent
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        """The first value of header 'name' (case-insensitive), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"body is not JSON ({e}): {self!r}") from None

    def __repr__(self):
        body = self.body[:600]
        return f"<HTTP {self.status} {self.reason} {self.headers} {body!r}>"


def encode_body(body):
    """None -> no body; dict/list -> JSON; str -> UTF-8; bytes as is."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def build_request(method, path, body=None, token=None, headers=None, host=True):
    """Bytes of one HTTP/1.1 request. Content-Length is set whenever a body
    (even an empty one) is given; 'headers' may override or add anything."""
    data = encode_body(body)
    lines = [f"{method} {path} HTTP/1.1"]
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in extra}
    if host and "host" not in names:
        lines.append("Host: 127.0.0.1")
    if token is not None and "authorization" not in names:
        lines.append(f"Authorization: Bearer {token}")
    if data is not None:
        if "content-type" not in names and data:
            lines.append("Content-Type: application/json")
        if "content-length" not in names and "transfer-encoding" not in names:
            lines.append(f"Content-Length: {len(data)}")
    for k, v in extra:
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (data or b"")


def peek_head(c, timeout=WAIT):
    """Reads c (a Conn) up to the end of an answer's head without consuming
    it: (status, headers with lower-case names, the bytes behind the head).
    For answers that are not read whole (a stream, a 101)."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in c.buf:
        if not c._fill(deadline):
            raise ConnectionClosed(f"closed before the head; have {c.buf[:300]!r}")
    head, rest = c.buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, rest


class Conn:
    """One client connection with its own response parser."""

    def __init__(self, port, timeout=WAIT):
        self.sock = None
        self.buf = b""
        self.eof = False
        if port is not None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def from_bytes(cls, data):
        """A Conn that parses responses out of bytes already read."""
        c = cls(None)
        c.buf = data
        c.eof = True
        return c

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_request(self, method, path, body=None, token=None, headers=None):
        self.send(build_request(method, path, body, token, headers))

    def request(self, method, path, body=None, token=None, headers=None, timeout=WAIT):
        self.send_request(method, path, body, token, headers)
        return self.read_response(timeout, head=(method == "HEAD"))

    def _fill(self, deadline):
        """Reads more into buf. False on EOF (or reset); TimeoutError at deadline."""
        if self.eof or self.sock is None:
            self.eof = True
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete answer in time; have {self.buf[:300]!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"no complete answer in time; have {self.buf[:300]!r}") from None
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except OSError:
            # The socket was shut down from another thread (test teardown).
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _need(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed mid-answer; have {self.buf[:300]!r}")

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed mid-answer; have {self.buf[:300]!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self, timeout=WAIT, head=False):
        """Parses the next response. Raises ConnectionClosed if the server
        closes before a complete one, TimeoutError if none comes in time."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed without a (complete) answer; have {self.buf[:300]!r}")
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status, reason = int(m.group(1)), m.group(2) or ""
        headers = []
        for line in lines[1:]:
            assert ":" in line, f"bad response header line {line!r}"
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
        resp = Response(status, reason, headers, b"", raw_head)
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in te:
            body = b""
            while True:
                size = int(self._line(deadline).split(b";")[0], 16)
                if size == 0:
                    while self._line(deadline) != b"":
                        pass
                    break
                self._need(size + 2, deadline)
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
        elif cl is not None:
            n = int(cl)
            self._need(n, deadline)
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
        resp.body = body
        return resp

    def read_all_responses(self):
        """Every complete response left in buf (for Conn.from_bytes)."""
        out = []
        while b"\r\n\r\n" in self.buf:
            out.append(self.read_response(timeout=1))
        return out

    def wait_closed(self, timeout=WAIT):
        """Reads until the server closes; returns the bytes read before the
        close. Raises TimeoutError if the connection is still open at the end."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def poll_bytes(self, wait=0.2):
        """Whatever arrives within 'wait' seconds (b"" if nothing), without
        treating silence as an error. Sets eof if the server closed."""
        if self.eof:
            return b""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return b""
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk
        return chunk

    def close(self):
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None


class Pending:
    """A request sent now whose answer a background thread waits for."""

    def __init__(self, port, method, path, body=None, token=None, headers=None, timeout=WAIT * 3):
        self.conn = Conn(port)
        self.request = build_request(method, path, body, token, headers)
        # Sent before returning, so the order of requests across connections is
        # the order of the calls in the test.
        self.conn.send(self.request)
        self._timeout = timeout
        self._response = None
        self._error = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        LIVE.append(self)

    def _run(self):
        try:
            self._response = self.conn.read_response(self._timeout)
        except BaseException as e:  # handed to the test by result()
            self._error = e
        finally:
            self._done.set()

    def done(self):
        return self._done.is_set()

    def result(self, timeout=WAIT):
        if not self._done.wait(timeout):
            raise AssertionError(f"no answer within {timeout}s to {self.request[:300]!r}")
        if self._error is not None:
            raise AssertionError(f"{self._error!r} for request {self.request[:300]!r}")
        return self._response

    def close(self):
        self.conn.close()
        self._thread.join(5)

    def reset(self):
        """Ends the connection with an RST, as a middlebox that drops an idle
        flow and tells both ends does (SO_LINGER 0, then close)."""
        s = self.conn.sock
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # SHUT_RD sends nothing and wakes the reader thread; the close then sends the RST.
        s.shutdown(socket.SHUT_RD)
        s.close()
        self.conn.sock = None
        self._thread.join(5)


def read_until(p, pattern, timeout=WAIT):
    """Reads the stdout of Popen 'p' (text mode) line by line until one
    matches 'pattern'; returns (the match, every line read). Fails with the
    output so far and stderr when the process ends or the time runs out."""
    import select
    lines = []
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            p.kill()
            _, err = p.communicate()
            raise AssertionError(f"no line matching {pattern!r} in {timeout}s: {lines}\nstderr: {err}")
        ready, _, _ = select.select([p.stdout], [], [], left)
        if not ready:
            continue
        line = p.stdout.readline()
        if line == "":
            _, err = p.communicate()
            raise AssertionError(f"nudge exited {p.returncode} before {pattern!r}: {lines}\nstderr: {err}")
        lines.append(line.rstrip("\n"))
        m = rx.search(line)
        if m:
            return m, lines


class CliProcess:
    """A nudge command running in the background (stdout/stderr piped,
    text mode); killed when the test ends if it still runs."""

    def __init__(self, argv, env):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        LIVE.append(self)

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.communicate()


def parse_metrics(text):
    """Prometheus text -> {key: value}; key is name or name{k="v",...} with
    labels sorted, so lookups do not depend on the server's label order."""
    out = {}
    sample = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\S+)?$')
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2), m.group(3)
        out[metric_key(name, _parse_labels(labels))] = float(value)
    return out


def _parse_labels(s):
    if not s:
        return {}
    return dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', s[1:-1]))


def metric_key(name, labels):
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def ping_body(device=None, folders=None, heartbeat=None, **extra):
    body = {}
    if device is not None:
        body["device"] = device
    if heartbeat is not None:
        body["heartbeat"] = heartbeat
    if folders is not None:
        body["folders"] = folders
    body.update(extra)
    return body


def expect_error(resp, code, status, has_error=None):
    """Asserts an error answer: HTTP 'code', JSON object with status word
    'status' (and a non-empty 'error' sentence when has_error). Returns the body."""
    assert resp.status == code, f"expected {code} {status}, got {resp!r}"
    ctype = resp.header("Content-Type") or ""
    assert ctype.startswith("application/json"), f"Content-Type {ctype!r}: {resp!r}"
    body = resp.json()
    assert isinstance(body, dict) and body.get("status") == status, f"expected status {status!r}: {resp!r}"
    if has_error:
        assert isinstance(body.get("error"), str) and body["error"], f"no error sentence: {resp!r}"
    return body


# ---------------------------------------------------------------------------
# The server


class User:
    """A user of one server with its token (minted by `nudge token`)."""

    def __init__(self, srv, name):
        self.srv = srv
        self.name = name
        self.token = srv.token(name)

    def ping(self, device=None, folders=None, heartbeat=None, timeout=WAIT, **extra):
        body = ping_body(device, folders, heartbeat, **extra)
        return self.srv.request("POST", "/v1/ping", body, token=self.token, timeout=timeout)

    def ping_async(self, device=None, folders=None, heartbeat=None, **extra):
        body = ping_body(device, folders, heartbeat, **extra)
        return self.srv.pending("POST", "/v1/ping", body, token=self.token)

    def empty_ping_async(self, device):
        q = urllib.parse.quote(device, safe="")
        return self.srv.pending("POST", f"/v1/ping?device={q}", b"", token=self.token)

    def state(self, folders=None, headers=None):
        return self.srv.get_state(self.token, folders, headers)

    def states(self, folders=None):
        r = self.state(folders)
        assert r.status == 200, r
        return r.json()["folders"]

    def publish(self, folder, **fields):
        return self.srv.publish(self.name, folder, **fields)


class Nudged:
    # Test-friendly settings every server gets unless a test overrides them:
    # heartbeat min 1 s so expiry tests take a second, not a minute.
    DEFAULTS = {
        # NUDGE_TEST_WORKERS: the suite runs once with one process and once with workers.
        "server": {"listen": "127.0.0.1:0", "log_level": "info",
                   "workers": os.environ.get("NUDGE_TEST_WORKERS", "1")},
        "heartbeat": {"min": 1, "max": 900},
        "udp": {"listen": "127.0.0.1:0"},
    }

    def __init__(self, workdir: Path, settings=None, create_data_dir=True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "nudged.conf"
        self.log_path = self.dir / "nudged.log"
        self.settings = {s: dict(kv) for s, kv in self.DEFAULTS.items()}
        self.settings["server"]["data_dir"] = str(self.dir / "var")
        for section, kv in (settings or {}).items():
            self.settings.setdefault(section, {}).update(kv)
        self.data_dir = Path(self.settings["server"]["data_dir"])
        self.create_data_dir = create_data_dir
        self.extra_args = []  # command-line flags after "-c conf"
        self.command_prefix = []  # run nudged through this, e.g. ["ip", "netns", "exec", NS]
        self.proc = None
        self.port = None
        self.udp_port = None  # from the udp_listening line; None when UDP is off
        self.returncode = None
        self._log = None
        self._tokens = {}
        self.cli_reports = []  # sanitizer reports seen on nudge's stderr

    # -- settings ---------------------------------------------------------
    def setting(self, section, key, default=None):
        return self.settings.get(section, {}).get(key, default)

    @property
    def hb_min(self):
        return int(self.setting("heartbeat", "min", 60))

    @property
    def hb_max(self):
        return int(self.setting("heartbeat", "max", 1680))

    def write_config(self):
        lines = ["; written by tests/e2e/harness.py"]
        for section, kv in self.settings.items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {v}" for k, v in kv.items())
            lines.append("")
        # Whole or not at all, as an admin's editor saves: a worker still
        # reloading from the previous SIGHUP must not read half a file.
        tmp = self.conf.with_name(self.conf.name + ".tmp")
        tmp.write_text("\n".join(lines))
        os.replace(tmp, self.conf)

    # -- process ----------------------------------------------------------
    def start(self, timeout=WAIT):
        """Starts nudged and waits for its listening line; fails with the log."""
        self.write_config()
        if self.create_data_dir:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
        exe = nudged_path()
        assert os.access(exe, os.X_OK), f"nudged binary {exe} missing (set NUDGED)"
        self._log = open(self.log_path, "ab")
        offset = self.log_path.stat().st_size  # a restart appends; read only the new lines
        self.proc = subprocess.Popen([*self.command_prefix, exe, "-c", str(self.conf), *self.extra_args],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        pat = re.compile(r"event=1001 name=listening addr=127\.0\.0\.1:(\d+)")
        while True:
            text = self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            m = pat.search(text)
            if m:
                self.port = int(m.group(1))
                self.udp_port = udp_port_in(text)
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise AssertionError(f"nudged exited {self.returncode} before listening\n"
                                     f"--- {self.log_path} ---\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nudged did not log its listening line within {timeout}s\n"
                                     f"--- {self.log_path} ---\n{self.log_text()}")
            time.sleep(0.02)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def workers(self):
        return int(self.setting("server", "workers", 1))

    def udp_port_of(self, user):
        """The UDP port of the worker owning 'user' (each worker has its own)."""
        ports = udp_ports_in(self.log_text())
        return ports.get(worker_of(user, self.workers), self.udp_port)

    def pids(self):
        """nudged's process and, with workers, its worker processes."""
        pids = [self.proc.pid]
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def send_signal(self, sig):
        # Stopping or continuing "nudged" means every process of it, as with one.
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            for pid in self.pids()[1:]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        self.proc.send_signal(sig)

    def wait(self, timeout=WAIT):
        """Waits for exit; returns the exit code, or None if still running."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_log()
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=WAIT):
        """Sends 'sig' and waits for the exit; returns the exit code. A server
        that does not exit in time is killed and the call fails."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.wait(timeout)
        if code is None:
            self.kill()
            raise AssertionError(f"nudged did not exit within {timeout}s of {sig!r}\n{self.log_tail()}")
        return code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "--- tail of nudged log ---\n" + "\n".join(self.log_text().splitlines()[-n:])

    def sanitizer_reports(self):
        text = self.log_text()
        found = [m for m in SANITIZER_MARKERS if m in text]
        return found + self.cli_reports

    def wait_log(self, pattern, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log_text()):
                return
            time.sleep(0.05)
        raise AssertionError(f"log never matched {pattern!r}\n{self.log_tail()}")

    # -- credentials ------------------------------------------------------
    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def secret_path(self):
        return Path(self.setting("server", "secret_file") or self.data_dir / "secret")

    def secret(self) -> bytes:
        """The current key: the first line (a second one is the previous key, after a rotation)."""
        lines = self.secret_path().read_text().split("\n")
        assert re.fullmatch(r"[0-9a-fA-F]{64}", lines[0]), f"secret file holds {lines!r}"
        return bytes.fromhex(lines[0])

    def sign(self, kind, subject, expires=0):
        return sign_token(self.secret(), kind, subject, expires)

    def cli(self, *args, env=None, timeout=WAIT, input=None):
        """Runs nudge with 'args'; returns the CompletedProcess (text mode)."""
        full_env = dict(os.environ)
        full_env.pop("NUDGE_URL", None)
        full_env.pop("NUDGE_TOKEN", None)
        full_env.update(env or {})
        p = subprocess.run([nudge_path(), *args], capture_output=True, text=True, env=full_env,
                           timeout=timeout, input=input, cwd=str(self.dir))
        self._note_cli_stderr(p.stderr)
        return p

    def cli_bg(self, *args):
        """Starts nudge with 'args' in the background; returns its Popen."""
        env = dict(os.environ)
        env.pop("NUDGE_URL", None)
        env.pop("NUDGE_TOKEN", None)
        return CliProcess([nudge_path(), *args], env).p

    def _note_cli_stderr(self, stderr):
        if SAN:
            self.cli_reports.extend(f"nudge: {m}" for m in SANITIZER_MARKERS if m in (stderr or ""))

    def _mint(self, *args):
        key = args
        if key not in self._tokens:
            p = self.cli("token", *args, "-c", str(self.conf))
            assert p.returncode == 0, f"nudge token {args} exited {p.returncode}: {p.stderr}"
            lines = p.stdout.strip().splitlines()
            assert len(lines) == 1, f"nudge token printed {p.stdout!r}"
            self._tokens[key] = lines[0].strip()
        return self._tokens[key]

    def token(self, user):
        return self._mint("--user", user)

    def publisher_token(self):
        return self._mint("--publisher")

    def admin_token(self):
        return self._mint("--admin")

    def user(self, prefix="user"):
        return User(self, unique(prefix))

    # -- HTTP -------------------------------------------------------------
    def connect(self, timeout=WAIT):
        try:
            return Conn(self.port, timeout)
        except OSError as e:
            state = "running" if self.running() else f"exited {self.proc.poll()}"
            raise AssertionError(f"cannot connect to nudged ({state}): {e}\n{self.log_tail()}") from None

    def request(self, method, path, body=None, token=None, headers=None, timeout=WAIT):
        c = self.connect()
        try:
            return c.request(method, path, body, token, headers, timeout)
        finally:
            c.close()

    def pending(self, method, path, body=None, token=None, headers=None):
        try:
            return Pending(self.port, method, path, body, token, headers)
        except OSError as e:
            raise AssertionError(f"cannot connect to nudged: {e}\n{self.log_tail()}") from None

    def raw(self, data: bytes, timeout=WAIT):
        """Sends raw bytes on a new connection and reads until the server
        closes. Returns (bytes read, closed?)."""
        c = self.connect()
        try:
            try:
                c.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                return c.wait_closed(timeout), True
            except TimeoutError:
                return c.buf, False
        finally:
            c.close()

    def healthy(self):
        r = self.request("GET", "/healthz")
        return r.status == 200 and r.json() == {"status": "ok"}

    def publish_raw(self, events, token=None):
        return self.request("POST", "/v1/events", events,
                            token=self.publisher_token() if token is None else token)

    def publish(self, user, folder, **fields):
        """Publishes one event; asserts success; returns the new state (str)."""
        ev = {"user": user, "folder": folder, **fields}
        r = self.publish_raw(ev)
        assert r.status == 200, f"publish {ev} answered {r!r}"
        states = r.json()["states"]
        assert len(states) == 1 and states[0]["user"] == user and states[0]["folder"] == folder, r
        return states[0]["state"]

    def get_state(self, token, folders=None, headers=None):
        path = "/v1/state"
        if folders is not None:
            path += "?folders=" + ",".join(urllib.parse.quote(f, safe="") for f in folders)
        return self.request("GET", path, token=token, headers=headers)

    def metrics(self):
        r = self.request("GET", "/metrics", token=self.admin_token())
        assert r.status == 200, f"/metrics answered {r!r}"
        return parse_metrics(r.body.decode())

    def metric(self, name, default=None, **labels):
        v = self.metrics().get(metric_key(name, labels), default)
        assert v is not None, f"/metrics has no {metric_key(name, labels)}"
        return v

    def held(self):
        return int(self.metric("nudge_pings_held"))

    def wait_held(self, n, timeout=WAIT, watch=()):
        """Waits until the held-pings gauge reads n. 'watch' lists Pendings
        that must stay unanswered meanwhile: one answered early fails at once
        with its answer, which says more than a gauge that never moved."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for p in watch:
                if p.done():
                    try:
                        r = p.result(0)
                    except AssertionError as e:
                        r = e
                    raise AssertionError(f"ping answered instead of held: {r!r}")
            last = self.held()
            if last == n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nudge_pings_held stayed {last}, expected {n}\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_metric(self, name, pred, timeout=WAIT, **labels):
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, 0, **labels)
            if pred(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"{metric_key(name, labels)} = {v} never met the condition")
            time.sleep(0.05)

    # -- answers ------------------------------------------------------------
    def check_ping(self, resp, status, folders=None):
        """Asserts a 200 ping answer with 'status' (and exactly 'folders' when
        given) and a heartbeat_hint within the configured bounds."""
        assert resp.status == 200, f"expected 200 {status}, got {resp!r}"
        body = resp.json()
        assert body.get("status") == status, f"expected status {status!r}, got {resp!r}"
        hint = body.get("heartbeat_hint")
        assert isinstance(hint, int) and not isinstance(hint, bool), f"heartbeat_hint missing/not int: {resp!r}"
        assert self.hb_min <= hint <= self.hb_max, f"heartbeat_hint {hint} outside [{self.hb_min}, {self.hb_max}]"
        if folders is not None:
            assert body.get("folders") == folders, f"expected folders {folders}, got {resp!r}"
        return body


# ---------------------------------------------------------------------------
# nudged's log, read as events (docs/events.md)

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def _unquote(v):
    if not v.startswith('"'):
        return v
    return re.sub(r'\\(x[0-9a-f]{2}|.)',
                  lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3 else m.group(1),
                  v[1:-1])


def log_events(n, event):
    """Every event 'event' in n's log, as a dict of its fields (values unquoted)."""
    out = []
    for line in n.log_text().splitlines():
        if f" event={event} " in line:
            out.append({k: _unquote(v) for k, v in _FIELD.findall(line)})
    return out


def wait_event(n, event, pred, what, timeout=WAIT):
    """Polls n's log until an event 'event' satisfies pred; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in log_events(n, event) if pred(e)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no event {event} {what} within {timeout}s\n{n.log_tail()}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# UDP datagrams (docs/udp.md, src/udp/datagram.h), written independently of
# the C codec so that the tests check it rather than share its mistakes.

DGRAM_NOTIFY, DGRAM_ACK, DGRAM_TEST = 1, 2, 3
DGRAM_TEST_KEY = bytes(32)


def dgram_encode(kind, reg_id, seq, state, folder, key):
    """A datagram: magic "nd", version 1, type, id, seq, state, folder, 16-byte tag."""
    name = folder.encode() if isinstance(folder, str) else folder
    head = b"nd\x01" + bytes([kind]) + reg_id.to_bytes(8, "big") + seq.to_bytes(8, "big") \
        + state.to_bytes(8, "big") + bytes([len(name)]) + name
    return head + hmac.new(key, head, hashlib.sha256).digest()[:16]


def dgram_decode(data, key):
    """The fields of a datagram as a dict; asserts its layout and its tag."""
    assert len(data) >= 46 and data[:3] == b"nd\x01", f"not a version-1 nudge datagram: {data!r}"
    n = data[28]
    assert len(data) == 45 + n, f"length {len(data)} does not fit folder length {n}: {data!r}"
    tag = hmac.new(key, data[:-16], hashlib.sha256).digest()[:16]
    assert hmac.compare_digest(tag, data[-16:]), f"tag does not verify: {data!r}"
    return {"type": data[3], "id": int.from_bytes(data[4:12], "big"),
            "seq": int.from_bytes(data[12:20], "big"), "state": int.from_bytes(data[20:28], "big"),
            "folder": data[29:29 + n].decode()}


class UdpDevice:
    """A device that receives datagrams on its own UDP socket (127.0.0.1,
    any free port) and registers it with POST /v1/udp."""

    def __init__(self, srv, user, device=None):
        self.srv = srv
        self.user = user
        self.device = device or unique("udp")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reg = None
        self.key = None
        self.last_seq = 0
        LIVE.append(self)

    def register_raw(self, folders, **extra):
        body = {"device": self.device, "port": self.port, "folders": folders, **extra}
        return self.srv.request("POST", "/v1/udp", body, token=self.user.token)

    def register(self, folders=("INBOX",), **extra):
        """Registers; asserts success; returns the answer's JSON."""
        r = self.register_raw(list(folders) if isinstance(folders, tuple) else folders, **extra)
        assert r.status == 200, f"POST /v1/udp answered {r!r}"
        self.reg = r.json()
        self.key = base64.b64decode(self.reg["key"])
        assert len(self.key) == 32, self.reg
        self.last_seq = 0
        return self.reg

    @property
    def reg_id(self):
        return int(self.reg["id"])

    def server_addr(self):
        host, port = self.reg["server"].rsplit(":", 1)
        return host, int(port)

    def recv(self, timeout=WAIT):
        """The next datagram, decoded and verified with the registration's key
        (replays refused); AssertionError when none comes in time."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(2048)
        except socket.timeout:
            raise AssertionError(f"no datagram within {timeout}s\n{self.srv.log_tail()}") from None
        d = dgram_decode(data, self.key)
        assert d["type"] == DGRAM_NOTIFY and d["id"] == self.reg_id, d
        assert d["seq"] > self.last_seq, f"replayed sequence number {d} after {self.last_seq}"
        self.last_seq = d["seq"]
        return d

    def quiet(self, seconds):
        """Asserts that no datagram arrives for 'seconds'."""
        self.sock.settimeout(seconds)
        try:
            data, _ = self.sock.recvfrom(2048)
        except socket.timeout:
            return
        raise AssertionError(f"a datagram arrived when none should have: {data!r}")

    def ack(self, d, state=None):
        """Acks notify 'd' (the folder's state it carried unless given)."""
        self.send_raw(dgram_encode(DGRAM_ACK, d["id"], d["seq"], d["state"] if state is None else state,
                                   d["folder"], self.key))

    def send_raw(self, data):
        """Sends to nudged's UDP port as it is now (a restart may have moved it):
        with workers, the port of the worker owning the device's user."""
        self.sock.sendto(data, ("127.0.0.1", self.srv.udp_port_of(self.user.name)))

    def drain(self, wait=0.3):
        """Reads and drops what has arrived (resends sent before an ack landed)."""
        self.sock.settimeout(wait)
        try:
            while True:
                self.sock.recvfrom(2048)
        except socket.timeout:
            pass

    def poll(self, folders=None):
        path = f"/v1/state?device={urllib.parse.quote(self.device, safe='')}"
        if folders:
            path += "&folders=" + ",".join(urllib.parse.quote(f, safe="") for f in folders)
        r = self.srv.request("GET", path, token=self.user.token)
        assert r.status == 200, r
        return r.json()["folders"]

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
