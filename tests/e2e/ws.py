"""
ws.py — a WebSocket client over a raw socket (RFC 6455), for the /v1/ws tests.

It sends what a browser sends (a masked frame per message, or the pieces a
test asks for: fragments, bad opcodes, unmasked frames) and hands every
frame it reads to the test, control frames included. Waits are for bytes,
never sleeps.
"""
import base64
import hashlib
import json
import os
import struct
import time

from harness import WAIT, Conn, ConnectionClosed

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0


def accept_of(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame: masked unless told otherwise."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


class Frame:
    def __init__(self, fin, opcode, payload):
        self.fin, self.opcode, self.payload = fin, opcode, payload

    def json(self):
        return json.loads(self.payload)

    @property
    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self):
        return self.payload[2:].decode("utf-8", "replace")

    def __repr__(self):
        return f"Frame(op={self.opcode}, fin={self.fin}, {self.payload[:200]!r})"


class WebSocket:
    """GET /v1/ws on its own connection. status/headers are the answer's; a
    refused handshake is read whole into .response."""

    def __init__(self, srv, token=None, query="", headers=None, protocol="jmap", path="/v1/ws",
                 key=None, version="13"):
        self.srv = srv
        self.conn = Conn(srv.port)
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": self.key}
        if version is not None:
            h["Sec-WebSocket-Version"] = version
        if protocol is not None:
            h["Sec-WebSocket-Protocol"] = protocol
        for k, v in (headers or {}).items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        self.conn.send_request("GET", path + (("?" + query) if query else ""), token=token,
                               headers=h)
        self.response = None
        self._read_head()

    def _read_head(self):
        c = self.conn
        deadline = time.monotonic() + WAIT
        while b"\r\n\r\n" not in c.buf:
            if not c._fill(deadline):
                raise ConnectionClosed(f"closed before the head; have {c.buf[:300]!r}")
        head, rest = c.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            self.response = c.read_response()
            return
        c.buf = rest

    def send(self, data: bytes):
        self.conn.send(data)

    def send_json(self, obj):
        self.send(frame(TEXT, json.dumps(obj)))

    def enable(self, types=None, push_state=None, **extra):
        msg = {"@type": "WebSocketPushEnable", "dataTypes": types, **extra}
        if push_state is not None:
            msg["pushState"] = push_state
        self.send_json(msg)

    def _need(self, n, deadline):
        c = self.conn
        while len(c.buf) < n:
            if not c._fill(deadline):
                raise ConnectionClosed(f"closed with {len(c.buf)} of {n} bytes")

    def next(self, timeout=WAIT):
        """The next frame the server sends (unmasked, as RFC 6455 requires)."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.conn.buf[0], self.conn.buf[1]
        assert not b1 & 0x80, "a server frame must not be masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.conn.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.conn.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload = self.conn.buf[off:off + n]
        self.conn.buf = self.conn.buf[off + n:]
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload)

    def next_of(self, opcode=TEXT, timeout=WAIT):
        """The next frame with this opcode, answering pings on the way."""
        while True:
            f = self.next(timeout)
            if f.opcode == opcode:
                return f
            if f.opcode == PING:
                self.send(frame(PONG, f.payload))
            elif f.opcode == CLOSE:
                raise AssertionError(f"closed while waiting: {f.close_code} {f.close_reason}")

    def message(self, timeout=WAIT):
        return self.next_of(TEXT, timeout).json()

    def closed(self, timeout=WAIT):
        """Reads to the server's close frame; returns it (then the TCP close follows)."""
        while True:
            f = self.next(timeout)
            if f.opcode == CLOSE:
                return f

    def wait_eof(self, timeout=WAIT):
        self.conn.wait_closed(timeout)

    def nothing_for(self, seconds):
        """True when no data frame comes for 'seconds' (pings are answered)."""
        try:
            f = self.next_of(TEXT, timeout=seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected {f}")

    def close(self):
        self.conn.close()
