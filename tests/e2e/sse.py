"""
sse.py — a Server-Sent Events client over a raw socket, for the stream tests.

It reads events as the WHATWG HTML standard says an EventSource does (lines
ending in LF, CR LF or CR; "field: value" with one optional space; comment
lines starting with ':'; a blank line dispatches), but hands every event to
the test, pings and comments included, instead of only the ones a page
listens for. Waits are for bytes, never sleeps.
"""
import json
import time
from urllib.parse import quote

import harness
from harness import WAIT, Conn, ConnectionClosed


class Event:
    def __init__(self):
        self.type = "message"
        self.data = []
        self.id = None          # None: no id: line; "" an empty one
        self.retry = None
        self.comments = []

    @property
    def text(self):
        return "\n".join(self.data)

    def json(self):
        return json.loads(self.text)

    def __repr__(self):
        return f"Event({self.type!r}, id={self.id!r}, data={self.text!r}, retry={self.retry!r})"


class Stream:
    """GET /v1/stream on its own connection. status/headers are the answer's;
    a non-200 answer is read whole into .response."""

    def __init__(self, srv, token=None, query="", headers=None, path="/v1/stream"):
        self.srv = srv
        self.conn = Conn(srv.port)
        h = dict(headers or {})
        target = path + (("?" + query) if query else "")
        self.conn.send_request("GET", target, token=token, headers=h)
        self.response = None
        self.pending = b""
        self._read_head()

    def _read_head(self):
        c = self.conn
        self.status, self.headers, rest = harness.peek_head(c)
        if self.status != 200 or self.headers.get("content-type") != "text/event-stream":
            # An ordinary answer: parsed again whole, by its Content-Length.
            self.response = c.read_response()
            return
        c.buf = b""
        self.pending = rest

    def header(self, name):
        return self.headers.get(name.lower())

    def _more(self, deadline):
        """More body bytes; False at EOF."""
        c = self.conn
        if not c._fill(deadline):
            return False
        self.pending += c.buf
        c.buf = b""
        return True

    def _next_line(self, deadline):
        while True:
            i = min([p for p in (self.pending.find(b"\n"), self.pending.find(b"\r")) if p >= 0],
                    default=-1)
            # A CR at the end may be the first half of CR LF: wait for the next byte.
            if i >= 0 and not (self.pending[i:i + 1] == b"\r" and i == len(self.pending) - 1):
                line = self.pending[:i]
                skip = 2 if self.pending[i:i + 2] == b"\r\n" else 1
                self.pending = self.pending[i + skip:]
                return line.decode("utf-8")
            if not self._more(deadline):
                return None

    def next(self, timeout=WAIT):
        """The next dispatched event (pings and retry-only blocks included);
        None when the stream ended; TimeoutError when none came in time."""
        deadline = time.monotonic() + timeout
        ev = Event()
        seen = False
        while True:
            line = self._next_line(deadline)
            if line is None:
                return ev if seen else None
            if line == "":
                if seen:
                    return ev
                continue
            seen = True
            if line.startswith(":"):
                ev.comments.append(line[1:].lstrip(" "))
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                ev.type = value
            elif field == "data":
                ev.data.append(value)
            elif field == "id":
                ev.id = value
            elif field == "retry":
                ev.retry = int(value)

    def next_of(self, kind, timeout=WAIT):
        """The next event of type 'kind', skipping others (pings, comments)."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(0.01, deadline - time.monotonic()))
            if ev is None:
                raise ConnectionClosed(f"the stream ended before a {kind!r} event")
            if ev.type == kind:
                return ev

    def ended(self, timeout=WAIT):
        """Reads to the end; returns the events on the way."""
        out = []
        while True:
            ev = self.next(timeout)
            if ev is None:
                return out
            out.append(ev)

    def close(self):
        self.conn.close()


def query(**params):
    """A query string; values are sent as given (tests choose their encoding)."""
    return "&".join(f"{k}={v}" for k, v in params.items() if v is not None)


def enc(s):
    return quote(s, safe="")


def changed(ev, user):
    """The folder -> state map of a state event for user."""
    assert ev.type == "state", ev
    body = ev.json()
    assert body["@type"] == "StateChange", body
    assert list(body["changed"]) == [user], body
    return body["changed"][user]
