"""
benchlib.py — what every benchmark script here needs: tokens signed from
the server secret, HTTP/1.1 over plain sockets, and /proc readings.

The scripts import it as a sibling (python puts a script's own directory
first on sys.path), so each still runs as `python3 bench/NAME.py`.
"""
import base64
import hashlib
import hmac
import os
import re
import socket


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
