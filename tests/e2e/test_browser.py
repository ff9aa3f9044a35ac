"""
test_browser.py — a real browser against the real nudged: Debian's Chromium
(/usr/bin/chromium) driven by npm's playwright-core (tests/browser/), so
what a web mail client relies on is checked by the browser's own EventSource,
fetch, cookies, CORS and WebSocket, not by our reading of the standards.

  * a ticket minted with fetch (a CORS request with its preflight) opens an
    EventSource whose `state` events carry the StateChange of a publish;
  * with the login cookie, the browser's own reconnect after a restart of
    nudged (SQLite, same data_dir and port) sends Last-Event-ID and gets
    exactly what it missed;
  * no credential, and a ticket used twice: the 401 ends the EventSource for
    good (readyState CLOSED);
  * GET /v1/ws (RFC 8887 push over a WebSocket, subprotocol jmap) with a
    ticket: the change missed since a pushState, then each change of its
    dataTypes only; with the login cookie: the client's reconnect after a
    restart (close 1001) with its last pushState gets what it missed.

Layout: pytest starts nudged (make_nudged) and serves tests/browser/www from
a Python http.server on another loopback port, so the page is cross-origin
and nudged's [http] cors_origins names that server's origin. It then runs
`node tests/browser/drive.mjs <page url>`: the page runs the scenario its
fragment names and reports each step, drive.mjs prints the reports as JSON
lines, and pytest waits on them (never on a clock) and acts in between.

Each test has its own nudged, page server and browser (its own profile in
/tmp), on ports the kernel picks, so xdist workers and
NUDGE_TEST_WORKERS = 1 or 3 run them side by side. A machine without
Chromium or tests/browser/node_modules fails these tests with what to run;
nothing is skipped.
"""
import functools
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import harness
from dovecot import crypt_hash
from harness import WAIT

BROWSER_DIR = harness.REPO / "tests/browser"
WWW = BROWSER_DIR / "www"
CHROMIUM = os.environ.get("NUDGE_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "pw-chromium"
# A browser's start is the slow part under load (and under ASan nudged is
# slower too): every wait on the page is this long at most.
PAGE_WAIT = WAIT * 3


def check_prerequisites():
    """What the browser tests need, or a failure saying how to get it."""
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing: scripts/deps.sh test installs Debian's chromium")
    if shutil.which("node") is None:
        problems.append("node is missing: scripts/deps.sh test installs nodejs and npm")
    if not (BROWSER_DIR / "node_modules/playwright-core/package.json").exists():
        problems.append(f"{BROWSER_DIR}/node_modules has no playwright-core: run "
                        "`make browser-deps` (npm ci in tests/browser)")
    if problems:
        pytest.fail("browser tests cannot run:\n  " + "\n  ".join(problems), pytrace=False)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        # The page must be the one on disk, never a copy the browser cached.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture
def page_origin():
    """tests/browser/www served on a free loopback port; its origin."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(WWW)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


class Browser:
    """One run of drive.mjs: Chromium on one page, its reports read as they come."""

    def __init__(self, tmp_path, url, script="drive.mjs", args=()):
        # Chromium's profile goes in a directory of its own under /tmp, not
        # under tmp_path: the profile holds a Unix socket, whose path must
        # fit in 108 bytes, and pytest's paths are long.
        self.dir = Path(tempfile.mkdtemp(prefix="nudge-chromium-"))
        self.stderr_path = tmp_path / f"drive{len(list(tmp_path.glob('drive*')))}.stderr"
        self.lines = []  # every report so far, in order
        self.chromium_pid = None
        self._queue = queue.Queue()
        env = dict(os.environ, TMPDIR=str(self.dir))
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                ["node", str(BROWSER_DIR / script), url, *args], cwd=str(BROWSER_DIR), env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        harness.LIVE.append(self)

    def _read(self):
        for line in self.proc.stdout:
            try:
                self._queue.put(json.loads(line))
            except ValueError:
                self._queue.put({"driver": "garbage", "text": line})
        self._queue.put(None)

    def _chromium_child(self):
        """The Chromium drive.mjs started: its child running /usr/bin/chromium."""
        pid = self.proc.pid
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    for child in f.read().split():
                        with open(f"/proc/{child}/cmdline", "rb") as c:
                            if b"chromium" in c.read():
                                return int(child)
        except OSError:
            pass
        return None

    def _explain(self):
        try:
            err = self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            err = ""
        return "reports: " + "\n  ".join(json.dumps(x) for x in self.lines) + f"\ndrive.mjs stderr: {err}"

    def wait(self, what, pred, timeout=PAGE_WAIT):
        """The first report (seen before or arriving within 'timeout') that
        satisfies pred. Fails at once when the page or the driver reports an
        exception, or the driver exits."""
        for x in self.lines:
            if pred(x):
                return x
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the page did not report {what} within {timeout}s\n{self._explain()}")
            try:
                x = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if x is None:
                raise AssertionError(f"drive.mjs exited {self.proc.wait()} before {what}\n{self._explain()}")
            self.lines.append(x)
            if x.get("driver") == "started":
                self.chromium_pid = self._chromium_child()
            if x.get("step") == "exception" or x.get("driver") in ("error", "garbage") or \
                    x.get("type") == "pageerror":
                raise AssertionError(f"the page failed before {what}\n{self._explain()}")
            if pred(x):
                return x

    def step(self, step, timeout=PAGE_WAIT, **fields):
        """The first report of 'step' whose fields include 'fields'."""
        return self.wait(f"{step} {fields}", lambda x: x.get("step") == step and
                         all(x.get(k) == v for k, v in fields.items()), timeout)

    def steps(self, step, **fields):
        return [x for x in self.lines if x.get("step") == step and
                all(x.get(k) == v for k, v in fields.items())]

    def close(self):
        """Ends drive.mjs (it closes the browser when its stdin ends) and
        makes sure the Chromium it started is gone."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(WAIT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._reader.join(5)
        if not self._reader.is_alive():
            self.proc.stdout.close()
        # Playwright starts Chromium as the leader of its own process group;
        # if drive.mjs died without closing it, that group is ours to end.
        pid, self.chromium_pid = self.chromium_pid, None
        if pid:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    ours = b"chromium" in f.read() and os.getpgid(pid) == pid
            except OSError:
                ours = False
            if ours:
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def browser(tmp_path):
    """Opens a page in Chromium: browser(origin, scenario, **inputs)."""
    check_prerequisites()
    made = []

    def open_page(origin, scenario, **inputs):
        frag = urllib.parse.quote(json.dumps({"scenario": scenario, **inputs}), safe="")
        b = Browser(tmp_path, f"{origin}/index.html#{frag}")
        made.append(b)
        b.wait("the browser's start", lambda x: x.get("driver") == "started")
        assert b.chromium_pid, f"no chromium process under drive.mjs\n{b._explain()}"
        return b

    yield open_page
    for b in made:
        b.close()


def settings_for(origin, tmp_path, users=()):
    """nudged for a page at 'origin': CORS for it, and the passwd-file users
    that sign in. retry 1 and shutdown_retry_after 0: a browser comes back
    within 1-2 s of a drop, so the restart test waits seconds, not tens."""
    pf = tmp_path / "passwd"
    pf.write_text("".join(f"{u}:{{SHA512-CRYPT}}{crypt_hash(PASSWORD)}::::::\n" for u in users))
    return {"http": {"cors_origins": origin},
            "auth": {"passwords": f"passwd-file:{pf}"},
            "stream": {"retry": 1},
            "server": {"shutdown_retry_after": 0, "data_dir": str(tmp_path / "data")}}


def changed(report, user):
    data = report["data"]
    assert data.get("@type") == "StateChange", report
    assert set(data["changed"]) == {user}, report
    return data["changed"][user]


# ---- EventSource -----------------------------------------------------------------


def test_a_ticket_opens_an_event_source_that_gets_the_publish(make_nudged, page_origin, browser, tmp_path):
    n = make_nudged(settings_for(page_origin, tmp_path))
    alice = n.user("alice")
    page = browser(page_origin, "ticket", api=f"http://127.0.0.1:{n.port}", token=alice.token,
                   device="tab1")
    assert page.step("ticket")["status"] == 200
    page.step("open", name="ticket")
    first = page.wait("the first state event", lambda x: x.get("step") == "state")
    assert changed(first, alice.name) == {"INBOX": "0"}, first
    state = alice.publish("INBOX")
    ev = page.wait(f"INBOX at {state}", lambda x: x.get("step") == "state" and
                   x["data"]["changed"].get(alice.name, {}).get("INBOX") == state)
    assert changed(ev, alice.name) == {"INBOX": state}, ev
    assert ev["id"] == f"1:INBOX={state}", ev
    assert not page.steps("error"), page.lines
    # The stream is the ticket's device's session.
    r = n.request("GET", f"/v1/admin/sessions?user={alice.name}", token=n.admin_token())
    assert [(s["device"], s["kind"]) for s in r.json()["sessions"]] == [("tab1", "stream")], r.json()


def test_the_browsers_reconnect_resumes_across_a_restart(make_nudged, page_origin, browser, tmp_path):
    """The login cookie, not a ticket: an EventSource reconnects with the URL
    it was made with, and a ticket in it is spent by the first connection,
    so a ticket-opened EventSource cannot come back by design (docs/auth.md)."""
    user = "carol"
    settings = settings_for(page_origin, tmp_path, users=[user])
    n = make_nudged(settings)
    port = n.port
    sent = n.publish(user, "Sent")
    page = browser(page_origin, "resume", api=f"http://127.0.0.1:{port}", user=user,
                   password=PASSWORD, device="tab-r")
    assert page.step("login")["status"] == 200
    first = page.wait("the first state event", lambda x: x.get("step") == "state")
    assert changed(first, user) == {"INBOX": "0", "Sent": sent}, first

    # nudged stops: the stream ends with a retry:, and the browser keeps
    # trying (connection refused is a network error: it retries, never gives up).
    assert n.stop() == 0
    page.step("error", readyState=0)
    # The change the browser misses: published by a nudged on the same data
    # on another port, which the browser never talks to.
    side = make_nudged({**settings, "server": {**settings["server"]}})
    state = side.publish(user, "INBOX")
    assert side.stop() == 0
    # Back on the browser's port, with the store's states.
    back = make_nudged({**settings, "server": {**settings["server"], "listen": f"127.0.0.1:{port}"}})
    assert back.port == port
    ev = page.wait(f"INBOX at {state}", lambda x: x.get("step") == "state" and
                   x["data"]["changed"].get(user, {}).get("INBOX") == state)
    # Only INBOX: the reconnect sent Last-Event-ID (without it, a first
    # connect's full state would name Sent too).
    assert changed(ev, user) == {"INBOX": state}, ev
    assert ev["id"] == f"1:INBOX={state},Sent={sent}", ev
    # The same EventSource came back: two opens, no CLOSED on the way.
    assert len(page.steps("open", name="cookie")) == 2, page.lines
    assert not page.steps("error", readyState=2), page.lines


def test_a_refused_event_source_is_closed_for_good(make_nudged, page_origin, browser, tmp_path):
    n = make_nudged(settings_for(page_origin, tmp_path))
    bob = n.user("bob")
    page = browser(page_origin, "noauth", api=f"http://127.0.0.1:{n.port}", token=bob.token,
                   device="tab-n")
    # The answer is a 401 the page can read (CORS headers on errors too).
    assert page.step("fetch")["status"] == 401
    page.step("error", name="none", readyState=2)
    page.step("open", name="first")
    # The ticket again: "ticket already used", the second EventSource stops.
    page.step("error", name="second", readyState=2)
    assert not page.steps("open", name="none") and not page.steps("open", name="second"), page.lines
    n.wait_log(r"reason=\"ticket already used\"")
    # The first stream is unharmed.
    state = bob.publish("INBOX")
    page.wait(f"INBOX at {state}", lambda x: x.get("step") == "state" and x.get("name") == "first" and
              x["data"]["changed"].get(bob.name, {}).get("INBOX") == state)


# ---- WebSocket (RFC 8887) ------------------------------------------------------


def test_a_websocket_gets_what_it_missed_then_each_change(make_nudged, page_origin, browser, tmp_path):
    """GET /v1/ws with a ticket, subprotocol jmap. The page enables push
    with the pushState of before a publish, so nudged's first message is the
    change it missed (which also proves the enable was read before the next
    publish: no race), then a live publish is the next message."""
    n = make_nudged(settings_for(page_origin, tmp_path))
    dave = n.user("dave")
    missed = dave.publish("INBOX")
    page = browser(page_origin, "ws", api=f"http://127.0.0.1:{n.port}", token=dave.token,
                   device="tab-ws", pushState="1:INBOX=0")
    assert page.step("ticket")["status"] == 200
    opened = page.wait("the WebSocket's open", lambda x: x.get("step") in ("open", "close"))
    assert opened["step"] == "open" and opened["protocol"] == "jmap", page.lines
    page.step("enabled")
    first = page.wait("the first message", lambda x: x.get("step") in ("message", "close"))
    assert first["step"] == "message", page.lines
    assert first["data"] == {"@type": "StateChange", "changed": {dave.name: {"INBOX": missed}},
                             "pushState": f"1:INBOX={missed}"}, first
    state = dave.publish("INBOX")
    ev = page.wait(f"INBOX at {state}", lambda x: x.get("step") in ("message", "close") and x is not first)
    assert ev["step"] == "message", page.lines
    assert ev["data"] == {"@type": "StateChange", "changed": {dave.name: {"INBOX": state}},
                          "pushState": f"1:INBOX={state}"}, ev
    # Another folder is not in dataTypes: nothing for it.
    dave.publish("Sent")
    last = dave.publish("INBOX")
    ev = page.wait(f"INBOX at {last}", lambda x: x.get("step") == "message" and
                   x["data"].get("changed", {}).get(dave.name, {}).get("INBOX") == last)
    assert all(set(m["data"]["changed"][dave.name]) == {"INBOX"} for m in page.steps("message")), page.lines
    assert not page.steps("close") and not page.steps("error"), page.lines


def test_a_websocket_with_the_cookie_resumes_across_a_restart(make_nudged, page_origin, browser, tmp_path):
    """The login cookie on GET /v1/ws (from an allowed origin), and the
    client's own reconnect with its last pushState after nudged restarts
    (close 1001): the change made meanwhile is its first message."""
    user = "erin"
    settings = settings_for(page_origin, tmp_path, users=[user])
    n = make_nudged(settings)
    port = n.port
    before = n.publish(user, "INBOX")
    page = browser(page_origin, "wsresume", api=f"http://127.0.0.1:{port}", user=user,
                   password=PASSWORD, device="tab-wr", pushState="1:INBOX=0")
    assert page.step("login")["status"] == 200
    opened = page.wait("the WebSocket's open", lambda x: x.get("step") in ("open", "close"))
    assert opened["step"] == "open" and opened["protocol"] == "jmap", page.lines
    first = page.wait("the first message", lambda x: x.get("step") == "message")
    assert first["data"]["pushState"] == f"1:INBOX={before}", first
    assert page.steps("enabled")[0]["pushState"] == "1:INBOX=0", page.lines

    assert n.stop() == 0
    assert page.step("close", opens=1)["code"] == 1001, page.lines
    side = make_nudged({**settings, "server": {**settings["server"]}})
    state = side.publish(user, "INBOX")
    assert side.stop() == 0
    back = make_nudged({**settings, "server": {**settings["server"], "listen": f"127.0.0.1:{port}"}})
    assert back.port == port
    ev = page.wait(f"INBOX at {state}", lambda x: x.get("step") == "message" and x.get("opens") == 2)
    assert ev["data"] == {"@type": "StateChange", "changed": {user: {"INBOX": state}},
                          "pushState": f"1:INBOX={state}"}, ev
    assert page.steps("enabled")[-1]["pushState"] == f"1:INBOX={before}", page.lines


# ---- the status page -------------------------------------------------------------------


def test_the_status_page_shows_live_numbers_and_a_test_notification_round_trips(
        make_nudged, tmp_path):
    # nudged's own page, same origin: no CORS. One held ping, one device with a
    # hint, so the numbers and the chart have something to show.
    check_prerequisites()
    n = make_nudged({"server": {"data_dir": str(tmp_path / "data")}})
    alice, watched = n.user("alice"), n.user("watched")
    held = alice.ping_async(device="phone", folders={"INBOX": "0"}, heartbeat=600)
    n.wait_held(1, watch=[held])
    shot = tmp_path / "status.png"
    b = Browser(tmp_path, n.url, script="status.mjs", args=(n.admin_token(), watched.name, str(shot)))
    try:
        loaded = b.step("loaded")
        assert loaded["status"] == 200 and "default-src 'none'" in loaded["csp"], loaded
        nums = b.step("numbers")
        totals = {r["key"]: r["cells"][-1] for r in nums["totals"]}
        assert totals["pings_held"] == "1", nums
        assert int(totals["devices"]) >= 1 and int(totals["users"]) >= 1, nums
        assert [int(r["key"]) for r in nums["workers"]] == list(range(n.workers)), nums
        assert all(r["cells"][1] == "up" for r in nums["workers"]), nums
        # The 600 s ping's device: one bar of the chart counts it, drawn full height.
        bars = {x["le"]: x for x in nums["bars"]}
        assert sum(x["count"] for x in nums["bars"]) == int(totals["devices"]), nums
        assert bars["600"]["count"] == 1 and bars["600"]["height"] == "100%", nums
        b.step("watching")
        arrived = b.step("arrived")
        state = next(e for e in arrived["events"] if e["type"] == "state")
        data = json.loads(state["text"].split(" state ", 1)[1])
        assert data["changed"] == {watched.name: {"INBOX": "1"}}, arrived
        assert arrived["sent"] == "sent: INBOX state 1", arrived
        assert any(e["type"] == "meta" and '"type":"test"' in e["text"] for e in arrived["events"]), arrived
        b.step("done")
        assert shot.stat().st_size > 10000, shot
        # The page's inline script and style ran under its CSP: nothing refused.
        refused = [x for x in b.lines if x.get("driver") == "console" and
                   "Content Security Policy" in x.get("text", "")]
        assert not refused, refused
    finally:
        b.close()
        held.close()
